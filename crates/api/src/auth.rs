//! Who is asking: the [`Principal`] every handler can extract, and the [`Role`]s.
//!
//! The authentication middleware (today: the shared `http.api_token`, which acts as
//! an admin) puts a `Principal` into the request's extensions; handlers take it as an
//! extractor. The audit actor of every change is [`Principal::actor`], never a header.

use crate::ApiError;
use axum::extract::FromRequestParts;
use axum::http::StatusCode;
use axum::http::request::Parts;
use leakwatch_core::CrewId;

/// What a person or an integration may do (issue 12's four roles); defined in
/// `leakwatch-core` so the store can keep it.
pub use leakwatch_core::account::Role;

/// How the principal proved who it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credential {
    /// A browser session (cookie). State-changing requests need the CSRF token.
    Session { csrf_token: String },
    /// A bearer token (integrations, devices, `http.api_token`).
    Token,
    /// No authentication is configured (development only).
    Open,
}

/// The authenticated caller of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The account or token name, recorded as the actor of every change.
    pub name: String,
    pub role: Role,
    /// For [`Role::Crew`]: the crew the account belongs to.
    pub crew: Option<CrewId>,
    pub credential: Credential,
}

impl Principal {
    /// The name written into audit records.
    pub fn actor(&self) -> &str {
        &self.name
    }

    /// The CSRF token a page must send back (`X-CSRF-Token` header or `_csrf` form
    /// field) with state-changing requests; `None` for bearer tokens.
    pub fn csrf_token(&self) -> Option<&str> {
        match &self.credential {
            Credential::Session { csrf_token } => Some(csrf_token),
            _ => None,
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Principal {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        parts
            .extensions
            .get::<Principal>()
            .cloned()
            .ok_or_else(|| ApiError::new(StatusCode::UNAUTHORIZED, "not logged in"))
    }
}

impl<S: Send + Sync> axum::extract::OptionalFromRequestParts<S> for Principal {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        _state: &S,
    ) -> Result<Option<Self>, std::convert::Infallible> {
        Ok(parts.extensions.get::<Principal>().cloned())
    }
}
