//! Authorization: which roles may call each API route ([`RULES`], one row per method
//! and route template), enforced by [`authorize`] after authentication; the
//! object-level rules (a crew member sees and acts on their own crew's jobs only) are
//! in the handlers, through [`crew_may_see`].
//!
//! A route of the API without a row here is refused to everyone (403), and a test
//! checks that every route the router registers ([`crate::routes::API_ROUTES`]) has
//! exactly one row.

use crate::auth::{Principal, Role};
use crate::{ApiError, AppState};
use axum::extract::{MatchedPath, Request, State};
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use leakwatch_core::{CrewId, OrderAction};

use Role::{Admin, Crew, Dispatcher, Engineer};

const ALL: &[Role] = &[Admin, Engineer, Dispatcher, Crew];
/// The control room: everyone but crew members.
const STAFF: &[Role] = &[Admin, Engineer, Dispatcher];
const REVIEW: &[Role] = &[Admin, Engineer];
const DISPATCH: &[Role] = &[Admin, Dispatcher];
const ADMIN: &[Role] = &[Admin];

/// (method, route template, roles allowed).
pub const RULES: &[(&str, &str, &[Role])] = &[
    ("GET", "/api/v1/me", ALL),
    ("GET", "/api/v1/meters", STAFF),
    ("POST", "/api/v1/meters", ADMIN),
    ("GET", "/api/v1/meters/{id}", STAFF),
    ("GET", "/api/v1/meters/{id}/readings", STAFF),
    ("GET", "/api/v1/meters/{id}/learning", STAFF),
    ("GET", "/api/v1/alerts", STAFF),
    ("GET", "/api/v1/alerts/{id}", STAFF),
    ("POST", "/api/v1/alerts/{id}/acknowledge", REVIEW),
    ("POST", "/api/v1/alerts/{id}/dismiss", REVIEW),
    ("POST", "/api/v1/alerts/{id}/resolve", REVIEW),
    ("POST", "/api/v1/alerts/{id}/escalate", REVIEW),
    ("GET", "/api/v1/alerts/outcomes", STAFF),
    // Dismissals that stick: engineers (and admins) list and revoke suppressions.
    ("GET", "/api/v1/suppressions", REVIEW),
    ("POST", "/api/v1/suppressions/{id}/revoke", REVIEW),
    ("GET", "/api/v1/work-orders", STAFF),
    ("POST", "/api/v1/work-orders", DISPATCH),
    // Crew members: their own crew's orders only (404 otherwise), in the handler.
    ("GET", "/api/v1/work-orders/{id}", ALL),
    // Dispatchers: every action; crew members: the field steps of their own
    // crew's orders (in the handler).
    (
        "POST",
        "/api/v1/work-orders/{id}/transition",
        &[Admin, Dispatcher, Crew],
    ),
    ("GET", "/api/v1/crews", STAFF),
    ("POST", "/api/v1/crews", ADMIN),
    ("GET", "/api/v1/crews/{id}/jobs", ALL),
    (
        "POST",
        "/api/v1/crews/{id}/location",
        &[Admin, Dispatcher, Crew],
    ),
    ("POST", "/api/v1/plans", DISPATCH),
    ("GET", "/api/v1/deadlines", STAFF),
    ("GET", "/api/v1/leak-classes", ALL),
    ("GET", "/api/v1/dead-letters", &[Admin, Engineer]),
    ("GET", "/api/v1/detection", STAFF),
    ("GET", "/api/v1/openapi.json", ALL),
    // Programmed leak survey: the network and the program for the control room;
    // dispatchers plan survey orders and record what the crews report (a crew
    // member reporting directly needs an object-level rule on the order: not yet).
    ("GET", "/api/v1/network/segments", STAFF),
    ("GET", "/api/v1/survey/program", STAFF),
    ("GET", "/api/v1/survey/coverage", STAFF),
    ("GET", "/api/v1/survey/coverage.csv", STAFF),
    ("GET", "/api/v1/survey/leak-rates", STAFF),
    ("POST", "/api/v1/survey/orders", DISPATCH),
    ("GET", "/api/v1/survey/orders/{id}", STAFF),
    ("POST", "/api/v1/survey/orders/{id}/report", DISPATCH),
    // Accounts and API tokens, and their audit: admins only.
    ("GET", "/api/v1/accounts", ADMIN),
    ("POST", "/api/v1/accounts", ADMIN),
    ("POST", "/api/v1/accounts/{name}/password", ADMIN),
    ("POST", "/api/v1/accounts/{name}/disable", ADMIN),
    ("POST", "/api/v1/accounts/{name}/enable", ADMIN),
    ("GET", "/api/v1/tokens", ADMIN),
    ("POST", "/api/v1/tokens", ADMIN),
    ("POST", "/api/v1/tokens/{name}/revoke", ADMIN),
    ("GET", "/api/v1/auth-audit", ADMIN),
];

/// The roles allowed to call `method` on `route` (a template); `None` when there is
/// no rule (refused).
pub fn allowed(method: &Method, route: &str) -> Option<&'static [Role]> {
    let m = if *method == Method::HEAD {
        "GET"
    } else {
        method.as_str()
    };
    RULES
        .iter()
        .find(|(rm, rp, _)| *rm == m && *rp == route)
        .map(|(_, _, roles)| *roles)
}

/// The middleware: refuses (403) a principal whose role the route's rule does not
/// list. Only `/api/` routes are checked (pages check their own roles).
pub async fn authorize(State(_s): State<AppState>, req: Request, next: Next) -> Response {
    let Some(route) = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
    else {
        return next.run(req).await;
    };
    if !route.starts_with("/api/") {
        return next.run(req).await;
    }
    let Some(p) = req.extensions().get::<Principal>() else {
        return ApiError::new(StatusCode::UNAUTHORIZED, "not logged in").into_response();
    };
    match allowed(req.method(), &route) {
        None => ApiError::new(
            StatusCode::FORBIDDEN,
            format!("no authorization rule for {} {route}", req.method()),
        )
        .into_response(),
        Some(roles) if !roles.contains(&p.role) => ApiError::new(
            StatusCode::FORBIDDEN,
            format!("a {} may not {} {route}", p.role, req.method()),
        )
        .into_response(),
        Some(_) => next.run(req).await,
    }
}

/// Whether `p` may see objects of crew `crew` (an order assigned to it, its jobs,
/// its position): everyone but crew members; a crew member only their own crew's.
pub fn crew_may_see(p: &Principal, crew: Option<&CrewId>) -> bool {
    p.role != Role::Crew || (crew.is_some() && p.crew.as_ref() == crew)
}

/// Whether a crew member may take this step (the field steps only).
pub fn crew_step(a: &OrderAction) -> bool {
    matches!(
        a,
        OrderAction::Accept
            | OrderAction::StartTravel
            | OrderAction::Arrive
            | OrderAction::Complete { .. }
            | OrderAction::UnableToComplete { .. }
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routes::API_ROUTES;

    /// Every route the router registers has exactly one rule, and every rule a route:
    /// a new route without a rule fails here.
    #[test]
    fn every_api_route_has_one_rule_and_every_rule_a_route() {
        let mut registered = Vec::new();
        for (path, methods) in API_ROUTES {
            for m in *methods {
                let method = m.to_uppercase();
                let n = RULES
                    .iter()
                    .filter(|(rm, rp, _)| *rm == method && rp == path)
                    .count();
                assert_eq!(n, 1, "{method} {path}: {n} rules");
                registered.push((method, *path));
            }
        }
        for (m, p, roles) in RULES {
            assert!(
                registered.iter().any(|(rm, rp)| rm == m && rp == p),
                "rule for {m} {p} has no route"
            );
            assert!(roles.contains(&Admin), "{m} {p}: admins may do everything");
        }
    }

    #[test]
    fn crew_members_see_their_own_crew_only() {
        let c = |s: &str| CrewId::parse(s).unwrap();
        let member = Principal {
            name: "m".into(),
            role: Crew,
            crew: Some(c("C1")),
            credential: crate::auth::Credential::Token,
        };
        assert!(crew_may_see(&member, Some(&c("C1"))));
        assert!(!crew_may_see(&member, Some(&c("C2"))));
        assert!(!crew_may_see(&member, None));
        let d = Principal {
            role: Dispatcher,
            crew: None,
            ..member.clone()
        };
        assert!(crew_may_see(&d, Some(&c("C2"))) && crew_may_see(&d, None));
        assert!(crew_step(&OrderAction::Arrive));
        assert!(!crew_step(&OrderAction::Cancel { reason: "x".into() }));
        assert!(!crew_step(&OrderAction::Assign { crew_id: c("C2") }));
    }
}
