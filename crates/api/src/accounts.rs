//! Accounts and API tokens over HTTP, for admins: list, add, disable / enable, reset a
//! password; list, create (the secret shown once), revoke tokens; the audit of these
//! changes. The same operations as `leakwatch user|token` on the command line, with
//! the actor taken from the caller's credential.
//!
//! The operations ([`add_account`], [`set_password`], ...) are shared by the API
//! routes here and the console's admin page, so both check the same things: names
//! and passwords as the CLI does, a crew for a crew member's account only, and no
//! admin locking the deployment out (disabling their own account or the last admin).
//! Password hashes and token secret hashes never leave the store.

use crate::auth::{Principal, Role};
use crate::extract::{Body, Params, PathOf};
use crate::{ApiError, AppState, secret};
use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use leakwatch_core::{CrewId, Timestamp};
use leakwatch_store::{
    Account, AccountStore, ApiToken, AuthAuditRecord, NewAccount, NewApiToken, Store,
};
use serde::{Deserialize, Serialize};

/// An account as the API shows it (never its password hash).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct AccountView {
    pub name: String,
    pub role: Role,
    pub crew: Option<CrewId>,
    pub disabled: bool,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

impl From<&Account> for AccountView {
    fn from(a: &Account) -> Self {
        AccountView {
            name: a.name.clone(),
            role: a.role,
            crew: a.crew.clone(),
            disabled: a.disabled,
            created_at: a.created_at,
            updated_at: a.updated_at,
        }
    }
}

/// A token as the API shows it (never its secret or the secret's hash).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct TokenView {
    pub name: String,
    pub role: Role,
    pub crew: Option<CrewId>,
    pub created_at: Timestamp,
    pub revoked_at: Option<Timestamp>,
}

impl From<&ApiToken> for TokenView {
    fn from(t: &ApiToken) -> Self {
        TokenView {
            name: t.name.clone(),
            role: t.role,
            crew: t.crew.clone(),
            created_at: t.created_at,
            revoked_at: t.revoked_at,
        }
    }
}

/// `POST /api/v1/accounts`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewAccountBody {
    pub name: String,
    pub role: Role,
    /// The crew of a crew member (required with role `crew`, refused otherwise).
    #[serde(default)]
    pub crew: Option<String>,
    /// 10 to 1024 characters.
    pub password: String,
}

/// `POST /api/v1/accounts/{name}/password`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PasswordBody {
    pub password: String,
}

/// `POST /api/v1/tokens`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewTokenBody {
    pub name: String,
    pub role: Role,
    /// The crew of a crew device (required with role `crew`, refused otherwise).
    #[serde(default)]
    pub crew: Option<String>,
}

/// A created token and its secret, shown this once.
#[derive(Debug, Clone, Serialize)]
pub struct CreatedToken {
    pub token: TokenView,
    pub secret: String,
}

fn unprocessable(m: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, m)
}

fn crew_of(role: Role, crew: Option<&str>) -> Result<Option<CrewId>, ApiError> {
    let crew = crew.map(str::trim).filter(|c| !c.is_empty());
    match (role.needs_crew(), crew) {
        (true, None) => Err(unprocessable(
            "a crew member's account or token needs a crew",
        )),
        (false, Some(_)) => Err(unprocessable(format!(
            "a {role} account or token has no crew; leave crew out"
        ))),
        (_, c) => c
            .map(|c| CrewId::parse(c).map_err(|e| unprocessable(format!("crew: {e}"))))
            .transpose(),
    }
}

async fn hash(password: String) -> Result<String, ApiError> {
    secret::check_password(&password).map_err(unprocessable)?;
    tokio::task::spawn_blocking(move || secret::hash_password(&password))
        .await
        .map_err(|_| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal error"))?
        .map_err(|e| {
            tracing::error!(error = %e, "hashing a password");
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal error")
        })
}

/// Every account, by name.
pub async fn list_accounts(store: &Store) -> Result<Vec<AccountView>, ApiError> {
    Ok(store
        .account_store()
        .list_accounts()
        .await?
        .iter()
        .map(AccountView::from)
        .collect())
}

/// Every token, revoked ones too, by name.
pub async fn list_tokens(store: &Store) -> Result<Vec<TokenView>, ApiError> {
    Ok(store
        .account_store()
        .list_api_tokens()
        .await?
        .iter()
        .map(TokenView::from)
        .collect())
}

/// Creates an account; a taken name is 409, a crew that does not exist 404, a bad
/// name, password or crew 422.
pub async fn add_account(
    store: &Store,
    b: NewAccountBody,
    actor: &Principal,
) -> Result<AccountView, ApiError> {
    leakwatch_core::account::check_name(&b.name).map_err(unprocessable)?;
    let crew = crew_of(b.role, b.crew.as_deref())?;
    let h = hash(b.password).await?;
    let a = store
        .account_store()
        .create_account(
            &NewAccount {
                name: &b.name,
                role: b.role,
                crew: crew.as_ref(),
                password_hash: &h,
            },
            actor.actor(),
            chrono::Utc::now(),
        )
        .await?;
    Ok(AccountView::from(&a))
}

/// Sets a new password; the account's sessions end.
pub async fn set_password(
    store: &Store,
    name: &str,
    password: String,
    actor: &Principal,
) -> Result<(), ApiError> {
    let h = hash(password).await?;
    store
        .account_store()
        .set_password(name, &h, actor.actor(), chrono::Utc::now())
        .await?;
    Ok(())
}

/// Disables (its sessions end) or enables an account. An admin may not disable
/// their own account, nor the last enabled admin (409): someone must be left to
/// manage the others.
pub async fn set_disabled(
    store: &Store,
    name: &str,
    disabled: bool,
    actor: &Principal,
) -> Result<AccountView, ApiError> {
    let accounts = store.account_store();
    let all = accounts.list_accounts().await?;
    let target = all
        .iter()
        .find(|a| a.name == name)
        .ok_or_else(|| ApiError::not_found(format!("account {name} does not exist")))?;
    if disabled && !target.disabled {
        refuse_lockout(&all, target, actor)?;
    }
    accounts
        .set_disabled(name, disabled, actor.actor(), chrono::Utc::now())
        .await?;
    let a = accounts
        .get_account(name)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("account {name} does not exist")))?;
    Ok(AccountView::from(&a))
}

/// Whether disabling `target` would lock the admins out.
fn refuse_lockout(all: &[Account], target: &Account, actor: &Principal) -> Result<(), ApiError> {
    if target.name == actor.name {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "you may not disable your own account; ask another admin",
        ));
    }
    let enabled_admins = all
        .iter()
        .filter(|a| a.role == Role::Admin && !a.disabled)
        .count();
    if target.role == Role::Admin && enabled_admins <= 1 {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!("{} is the last enabled admin", target.name),
        ));
    }
    Ok(())
}

/// Creates a token; its secret is in the answer and nowhere else.
pub async fn create_token(
    store: &Store,
    b: NewTokenBody,
    actor: &Principal,
) -> Result<CreatedToken, ApiError> {
    leakwatch_core::account::check_name(&b.name).map_err(unprocessable)?;
    let crew = crew_of(b.role, b.crew.as_deref())?;
    let secret = secret::new_api_token().map_err(|e| {
        tracing::error!(error = %e, "making a token secret");
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal error")
    })?;
    let t = store
        .account_store()
        .create_api_token(
            &NewApiToken {
                name: &b.name,
                secret_hash: &secret::sha256_hex(&secret),
                role: b.role,
                crew: crew.as_ref(),
            },
            actor.actor(),
            chrono::Utc::now(),
        )
        .await?;
    Ok(CreatedToken {
        token: TokenView::from(&t),
        secret,
    })
}

/// Revokes a token; 404 when there is no active token of that name.
pub async fn revoke_token(
    store: &Store,
    name: &str,
    actor: &Principal,
) -> Result<TokenView, ApiError> {
    let accounts = store.account_store();
    if !accounts
        .revoke_api_token(name, actor.actor(), chrono::Utc::now())
        .await?
    {
        return Err(ApiError::not_found(format!("no active token named {name}")));
    }
    accounts
        .list_api_tokens()
        .await?
        .iter()
        .find(|t| t.name == name)
        .map(TokenView::from)
        .ok_or_else(|| ApiError::not_found(format!("no token named {name}")))
}

/// The latest changes to accounts and tokens, newest first.
pub async fn audit(store: &Store, limit: u32) -> Result<Vec<AuthAuditRecord>, ApiError> {
    Ok(store.account_store().auth_audit(limit).await?)
}

// ---- the routes ----

#[derive(Serialize)]
struct Items<T> {
    items: Vec<T>,
    next_cursor: Option<String>,
}

pub(crate) async fn get_accounts(State(s): State<AppState>) -> Result<impl IntoResponse, ApiError> {
    Ok(Json(Items {
        items: list_accounts(&s.store).await?,
        next_cursor: None,
    }))
}

pub(crate) async fn post_account(
    State(s): State<AppState>,
    who: Principal,
    Body(b): Body<NewAccountBody>,
) -> Result<impl IntoResponse, ApiError> {
    Ok((
        StatusCode::CREATED,
        Json(add_account(&s.store, b, &who).await?),
    ))
}

pub(crate) async fn post_password(
    State(s): State<AppState>,
    who: Principal,
    PathOf(name): PathOf<String>,
    Body(b): Body<PasswordBody>,
) -> Result<StatusCode, ApiError> {
    set_password(&s.store, &name, b.password, &who).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub(crate) async fn post_disable(
    State(s): State<AppState>,
    who: Principal,
    PathOf(name): PathOf<String>,
) -> Result<Json<AccountView>, ApiError> {
    Ok(Json(set_disabled(&s.store, &name, true, &who).await?))
}

pub(crate) async fn post_enable(
    State(s): State<AppState>,
    who: Principal,
    PathOf(name): PathOf<String>,
) -> Result<Json<AccountView>, ApiError> {
    Ok(Json(set_disabled(&s.store, &name, false, &who).await?))
}

pub(crate) async fn get_tokens(State(s): State<AppState>) -> Result<impl IntoResponse, ApiError> {
    Ok(Json(Items {
        items: list_tokens(&s.store).await?,
        next_cursor: None,
    }))
}

pub(crate) async fn post_token(
    State(s): State<AppState>,
    who: Principal,
    Body(b): Body<NewTokenBody>,
) -> Result<impl IntoResponse, ApiError> {
    let created = create_token(&s.store, b, &who).await?;
    Ok((
        StatusCode::CREATED,
        [(header::CACHE_CONTROL, "no-store")],
        Json(created),
    ))
}

pub(crate) async fn post_revoke(
    State(s): State<AppState>,
    who: Principal,
    PathOf(name): PathOf<String>,
) -> Result<Json<TokenView>, ApiError> {
    Ok(Json(revoke_token(&s.store, &name, &who).await?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AuditQuery {
    limit: Option<u32>,
}

pub(crate) async fn get_audit(
    State(s): State<AppState>,
    Params(q): Params<AuditQuery>,
) -> Result<impl IntoResponse, ApiError> {
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    Ok(Json(Items {
        items: audit(&s.store, limit).await?,
        next_cursor: None,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn account(name: &str, role: Role, disabled: bool) -> Account {
        Account {
            name: name.into(),
            role,
            crew: None,
            password_hash: String::new(),
            disabled,
            created_at: chrono::Utc::now(),
            updated_at: chrono::Utc::now(),
        }
    }

    fn admin(name: &str) -> Principal {
        Principal {
            name: name.into(),
            role: Role::Admin,
            crew: None,
            credential: crate::auth::Credential::Token,
        }
    }

    #[test]
    fn admins_cannot_lock_everyone_out() {
        let all = vec![
            account("ann", Role::Admin, false),
            account("bob", Role::Admin, true),
            account("eva", Role::Engineer, false),
        ];
        // Not oneself.
        let e = refuse_lockout(&all, &all[2], &admin("eva")).unwrap_err();
        assert_eq!(e.status, StatusCode::CONFLICT);
        // Not the last enabled admin (bob is disabled already).
        let e = refuse_lockout(&all, &all[0], &admin("api_token")).unwrap_err();
        assert!(e.message.contains("last enabled admin"), "{}", e.message);
        // Anyone else.
        assert!(refuse_lockout(&all, &all[2], &admin("ann")).is_ok());
        let mut two = all.clone();
        two[1].disabled = false;
        assert!(refuse_lockout(&two, &two[0], &admin("bob")).is_ok());
    }

    #[test]
    fn a_crew_goes_with_the_crew_role_only() {
        assert!(crew_of(Role::Crew, None).is_err());
        assert!(crew_of(Role::Crew, Some("  ")).is_err());
        assert_eq!(
            crew_of(Role::Crew, Some("C-1")).unwrap().unwrap().as_str(),
            "C-1"
        );
        assert!(crew_of(Role::Engineer, Some("C-1")).is_err());
        // An empty crew field of a form is no crew.
        assert!(crew_of(Role::Engineer, Some("")).unwrap().is_none());
    }

    #[test]
    fn bodies_refuse_unknown_fields() {
        assert!(
            serde_json::from_str::<NewAccountBody>(
                r#"{"name":"a","role":"admin","password":"x","admin":true}"#
            )
            .is_err()
        );
        assert!(
            serde_json::from_str::<NewTokenBody>(r#"{"name":"a","role":"crew","crew":"C-1"}"#)
                .is_ok()
        );
        assert!(serde_json::from_str::<PasswordBody>(r#"{"password":"x","old":"y"}"#).is_err());
    }
}
