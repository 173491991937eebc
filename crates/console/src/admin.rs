//! The admins' page: accounts (add, disable / enable, reset a password) and API
//! tokens (create, with the secret shown once; revoke), and the audit of these
//! changes. The work is done by [`leakwatch_api::accounts`], as for the API routes
//! `/api/v1/accounts` and `/api/v1/tokens`, with the actor from the session.

use crate::{PageError, Viewer, check_csrf, local, page, require};
use axum::Router;
use axum::extract::{Form, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use leakwatch_api::AppState;
use leakwatch_api::accounts::{self, NewAccountBody, NewTokenBody};
use leakwatch_api::auth::{Principal, Role};
use maud::{Markup, html};
use serde::Deserialize;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/console/admin", get(admin_page))
        .route("/console/admin/accounts", post(add_account))
        .route("/console/admin/accounts/{name}/password", post(password))
        .route("/console/admin/accounts/{name}/disable", post(disable))
        .route("/console/admin/accounts/{name}/enable", post(enable))
        .route("/console/admin/tokens", post(create_token))
        .route("/console/admin/tokens/{name}/revoke", post(revoke))
}

/// Admins only ([`require`] lets admins through any list).
const ADMIN: &[Role] = &[];

#[derive(Debug, Default, Deserialize)]
struct AdminQuery {
    #[serde(default)]
    msg: String,
    #[serde(default)]
    error: String,
}

fn back(msg: &str) -> Response {
    Redirect::to(&format!("/console/admin?msg={}", crate::url_encode(msg))).into_response()
}

/// A refusal of the operation (bad input, a taken name, the last admin): shown on
/// the page, not as an error page, with the status kept.
fn refused(e: leakwatch_api::ApiError) -> Result<Response, PageError> {
    match e.status {
        StatusCode::UNPROCESSABLE_ENTITY | StatusCode::CONFLICT | StatusCode::NOT_FOUND => {
            Ok(Redirect::to(&format!(
                "/console/admin?error={}",
                crate::url_encode(&e.message)
            ))
            .into_response())
        }
        _ => Err(e.into()),
    }
}

async fn body(
    c: &crate::Console,
    p: &Principal,
    s: &AppState,
    q: &AdminQuery,
    secret: Option<(&str, &str)>,
) -> Result<Markup, PageError> {
    let accounts = accounts::list_accounts(&s.store).await?;
    let tokens = accounts::list_tokens(&s.store).await?;
    let audit = accounts::audit(&s.store, 30).await?;
    let crews = s.store.list_crews().await?;
    let csrf = p.csrf_token().unwrap_or_default().to_owned();
    let role_select = |name: &str| {
        html! { select name=(name) { @for r in Role::ALL { option value=(r.as_str()) selected[*r == Role::Engineer] { (r.as_str()) } } } }
    };
    let crew_select = html! { select name="crew" { option value="" { "none (not a crew member)" }
    @for r in &crews { option value=(r.crew.id) { (r.crew.id) " " (r.crew.name) } } } };
    Ok(html! {
        h1 { "Accounts and tokens" }
        @if !q.msg.is_empty() { p #flash class="flash" { (q.msg) } }
        @if !q.error.is_empty() { p #admin-error class="conflict" { (q.error) } }
        @if let Some((name, secret)) = secret {
            section class="secret" #new-token {
                h2 { "Token " (name) " created" }
                p { "Its secret is shown this once; it is not stored (only its hash). Give it to the integration or device now:" }
                p { code #token-secret { (secret) } }
                p class="hint" { "Use it as " code { "Authorization: Bearer <secret>" } ". " a href="/console/admin" { "Done" } }
            }
        }
        section {
            h2 { "Accounts (" (accounts.len()) ")" }
            table #accounts { thead { tr { th { "name" } th { "role" } th { "crew" } th { "state" } th { "changed" } th { "actions" } } }
                tbody { @for a in &accounts { tr id={"account-" (a.name)} class=[a.disabled.then_some("disabled")] {
                    td { (a.name) } td { (a.role.as_str()) }
                    td { (a.crew.as_ref().map(|c| c.to_string()).unwrap_or_else(|| "-".into())) }
                    td class="state" { @if a.disabled { "disabled" } @else { "enabled" } }
                    td { (local(c, a.updated_at)) }
                    td {
                        @if a.disabled {
                            form method="post" action={"/console/admin/accounts/" (crate::url_encode(&a.name)) "/enable"} class="inline" {
                                input type="hidden" name="_csrf" value=(csrf);
                                button type="submit" class="enable" { "Enable" }
                            }
                        } @else if a.name != p.name {
                            form method="post" action={"/console/admin/accounts/" (crate::url_encode(&a.name)) "/disable"} class="inline" {
                                input type="hidden" name="_csrf" value=(csrf);
                                button type="submit" class="disable" { "Disable" }
                            }
                        }
                        form method="post" action={"/console/admin/accounts/" (crate::url_encode(&a.name)) "/password"} class="inline reset" {
                            input type="hidden" name="_csrf" value=(csrf);
                            input type="password" name="password" required minlength="10" autocomplete="new-password" placeholder="new password" size="14";
                            button type="submit" { "Reset password" }
                        }
                    }
                } } }
            }
        }
        section class="two" {
            div {
                h2 { "Add an account" }
                form #add-account method="post" action="/console/admin/accounts" class="stack" {
                    input type="hidden" name="_csrf" value=(csrf);
                    label { "Name " input #new-name name="name" required pattern="[A-Za-z0-9._@-]{1,64}" autocomplete="off"; }
                    label { "Role " (role_select("role")) }
                    label { "Crew (crew members only) " (crew_select) }
                    label { "Password (10 characters or more) " input #new-password name="password" type="password" required minlength="10" autocomplete="new-password"; }
                    button #add-account-button type="submit" class="primary" { "Add account" }
                }
            }
            div {
                h2 { "Create an API token" }
                form #create-token method="post" action="/console/admin/tokens" class="stack" {
                    input type="hidden" name="_csrf" value=(csrf);
                    label { "Name (the integration or device) " input #token-name name="name" required pattern="[A-Za-z0-9._@-]{1,64}" autocomplete="off"; }
                    label { "Role " (role_select("role")) }
                    label { "Crew (crew devices only) " select name="crew" { option value="" { "none" }
                        @for r in &crews { option value=(r.crew.id) { (r.crew.id) } } } }
                    button #create-token-button type="submit" class="primary" { "Create token" }
                }
            }
        }
        section {
            h2 { "API tokens (" (tokens.len()) ")" }
            table #tokens { thead { tr { th { "name" } th { "role" } th { "crew" } th { "created" } th { "state" } th { "" } } }
                tbody { @for t in &tokens { tr id={"token-" (t.name)} {
                    td { (t.name) } td { (t.role.as_str()) }
                    td { (t.crew.as_ref().map(|c| c.to_string()).unwrap_or_else(|| "-".into())) }
                    td { (local(c, t.created_at)) }
                    td class="state" { @match t.revoked_at { Some(r) => { "revoked " (local(c, r)) } None => { "active" } } }
                    td { @if t.revoked_at.is_none() {
                        form method="post" action={"/console/admin/tokens/" (crate::url_encode(&t.name)) "/revoke"} class="inline" {
                            input type="hidden" name="_csrf" value=(csrf);
                            button type="submit" class="revoke" { "Revoke" }
                        }
                    } }
                } } }
            }
        }
        section {
            h2 { "Changes (latest 30)" }
            ul #auth-audit { @for r in &audit { li { (local(c, r.at)) " · " strong { (r.actor) } " · " (r.action) " · " (r.subject)
                @if let Some(d) = &r.detail { " (" (d) ")" } } } }
        }
    })
}

async fn admin_page(
    Viewer(p): Viewer,
    State(s): State<AppState>,
    axum::Extension(c): crate::Shared,
    Query(q): Query<AdminQuery>,
) -> Result<Markup, PageError> {
    require(&p, ADMIN, "manage accounts")?;
    Ok(page(
        &p,
        "Accounts",
        "accounts",
        body(&c, &p, &s, &q, None).await?,
    ))
}

#[derive(Debug, Deserialize)]
struct AccountForm {
    #[serde(default)]
    _csrf: String,
    name: String,
    role: Role,
    #[serde(default)]
    crew: String,
    password: String,
}

async fn add_account(
    Viewer(p): Viewer,
    State(s): State<AppState>,
    headers: HeaderMap,
    Form(f): Form<AccountForm>,
) -> Result<Response, PageError> {
    require(&p, ADMIN, "manage accounts")?;
    check_csrf(&p, &headers, Some(&f._csrf))?;
    let b = NewAccountBody {
        name: f.name.trim().to_owned(),
        role: f.role,
        crew: Some(f.crew),
        password: f.password,
    };
    match accounts::add_account(&s.store, b, &p).await {
        Ok(a) => Ok(back(&format!(
            "account {} created ({})",
            a.name,
            a.role.as_str()
        ))),
        Err(e) => refused(e),
    }
}

#[derive(Debug, Deserialize)]
struct PasswordForm {
    #[serde(default)]
    _csrf: String,
    password: String,
}

async fn password(
    Viewer(p): Viewer,
    State(s): State<AppState>,
    headers: HeaderMap,
    Path(name): Path<String>,
    Form(f): Form<PasswordForm>,
) -> Result<Response, PageError> {
    require(&p, ADMIN, "manage accounts")?;
    check_csrf(&p, &headers, Some(&f._csrf))?;
    match accounts::set_password(&s.store, &name, f.password, &p).await {
        Ok(()) => Ok(back(&format!(
            "password of {name} reset; its sessions ended"
        ))),
        Err(e) => refused(e),
    }
}

#[derive(Debug, Deserialize)]
struct CsrfForm {
    #[serde(default)]
    _csrf: String,
}

async fn disable(
    Viewer(p): Viewer,
    State(s): State<AppState>,
    headers: HeaderMap,
    Path(name): Path<String>,
    Form(f): Form<CsrfForm>,
) -> Result<Response, PageError> {
    require(&p, ADMIN, "manage accounts")?;
    check_csrf(&p, &headers, Some(&f._csrf))?;
    match accounts::set_disabled(&s.store, &name, true, &p).await {
        Ok(_) => Ok(back(&format!(
            "account {name} disabled; its sessions ended"
        ))),
        Err(e) => refused(e),
    }
}

async fn enable(
    Viewer(p): Viewer,
    State(s): State<AppState>,
    headers: HeaderMap,
    Path(name): Path<String>,
    Form(f): Form<CsrfForm>,
) -> Result<Response, PageError> {
    require(&p, ADMIN, "manage accounts")?;
    check_csrf(&p, &headers, Some(&f._csrf))?;
    match accounts::set_disabled(&s.store, &name, false, &p).await {
        Ok(_) => Ok(back(&format!("account {name} enabled"))),
        Err(e) => refused(e),
    }
}

#[derive(Debug, Deserialize)]
struct TokenForm {
    #[serde(default)]
    _csrf: String,
    name: String,
    role: Role,
    #[serde(default)]
    crew: String,
}

/// Creates the token and answers with the page showing its secret (not a redirect:
/// the secret must not go into a URL), not to be cached.
async fn create_token(
    Viewer(p): Viewer,
    State(s): State<AppState>,
    axum::Extension(c): crate::Shared,
    headers: HeaderMap,
    Form(f): Form<TokenForm>,
) -> Result<Response, PageError> {
    require(&p, ADMIN, "manage tokens")?;
    check_csrf(&p, &headers, Some(&f._csrf))?;
    let b = NewTokenBody {
        name: f.name.trim().to_owned(),
        role: f.role,
        crew: Some(f.crew),
    };
    match accounts::create_token(&s.store, b, &p).await {
        Ok(created) => {
            let q = AdminQuery::default();
            let markup = body(
                &c,
                &p,
                &s,
                &q,
                Some((created.token.name.as_str(), created.secret.as_str())),
            )
            .await?;
            Ok((
                StatusCode::CREATED,
                [(header::CACHE_CONTROL, "no-store")],
                page(&p, "Accounts", "accounts", markup),
            )
                .into_response())
        }
        Err(e) => refused(e),
    }
}

async fn revoke(
    Viewer(p): Viewer,
    State(s): State<AppState>,
    headers: HeaderMap,
    Path(name): Path<String>,
    Form(f): Form<CsrfForm>,
) -> Result<Response, PageError> {
    require(&p, ADMIN, "manage tokens")?;
    check_csrf(&p, &headers, Some(&f._csrf))?;
    match accounts::revoke_token(&s.store, &name, &p).await {
        Ok(_) => Ok(back(&format!("token {name} revoked"))),
        Err(e) => refused(e),
    }
}
