//! Authentication: who is asking, put into the request's extensions as a
//! [`Principal`], and the login, logout and `me` routes.
//!
//! A request is authenticated by, in this order:
//! * `Authorization: Bearer <secret>` (scheme case-insensitive): the legacy
//!   `http.api_token` (an admin named `api-token`) or an API token from the store;
//!   both compared as SHA-256 hashes in constant time. A bearer that matches nothing is
//!   401 on every path.
//! * the `lw_session` cookie: a session from the store, not expired, not idle longer
//!   than the idle timeout, of an enabled account.
//!
//! A session-authenticated POST/PUT/PATCH/DELETE must carry the session's CSRF token
//! (`X-CSRF-Token` header, or a `_csrf` field of a urlencoded form) and an `Origin` (or
//! `Referer`) whose host equals `Host`. `/api/v1/*` without a principal is 401, or 503
//! while no account and no `http.api_token` exist (saying how to create the first
//! admin); pages get no principal and decide themselves (redirect to `/login`).

use crate::auth::{Credential, Principal};
use crate::secret;
use crate::throttle::{Key, Throttle};
use crate::{ApiError, AppState};
use axum::Json;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::serve::IncomingStream;
use leakwatch_store::{AccountStore, Session};
use serde::Deserialize;
use serde_json::json;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// The session cookie's name.
pub const SESSION_COOKIE: &str = "lw_session";

/// The name the legacy `http.api_token` acts under.
pub const LEGACY_TOKEN_NAME: &str = "api-token";

/// How to create the first admin (the 503 of an unconfigured API says it).
pub const FIRST_ADMIN_HINT: &str = "no account exists yet: create the first admin with \
     `leakwatch user add NAME --role admin` (the password is read from standard input), \
     or start the service with LEAKWATCH_BOOTSTRAP_ADMIN=NAME and the password in \
     LEAKWATCH_BOOTSTRAP_ADMIN_PASSWORD_FILE (a mounted secret); \
     or set http.api_token (an admin bearer token)";

/// Authentication settings.
#[derive(Debug, Clone)]
pub struct AuthSettings {
    /// The legacy shared token (`http.api_token`): an admin named `api-token`.
    pub api_token: Option<String>,
    /// A session ends this long after login.
    pub session_ttl: Duration,
    /// A session unused this long ends.
    pub session_idle: Duration,
    /// Mark the cookie `Secure` (served over TLS, or behind an HTTPS proxy).
    pub secure_cookies: bool,
    /// When set, `/metrics` needs `Authorization: Bearer <metrics_token>`.
    pub metrics_token: Option<String>,
}

impl Default for AuthSettings {
    fn default() -> Self {
        AuthSettings {
            api_token: None,
            session_ttl: Duration::from_secs(12 * 3600),
            session_idle: Duration::from_secs(2 * 3600),
            secure_cookies: false,
            metrics_token: None,
        }
    }
}

/// Authentication settings and state (the failed-login throttle).
#[derive(Debug)]
pub struct Auth {
    pub settings: AuthSettings,
    api_token_hash: Option<String>,
    metrics_token_hash: Option<String>,
    throttle: Mutex<Throttle>,
    /// Some account or the legacy token exists (once true, stays true).
    configured: AtomicBool,
}

impl Default for Auth {
    fn default() -> Self {
        Auth::new(AuthSettings::default())
    }
}

impl Auth {
    pub fn new(settings: AuthSettings) -> Self {
        Auth::with_throttle(settings, Throttle::default())
    }

    pub fn with_throttle(settings: AuthSettings, throttle: Throttle) -> Self {
        let api_token_hash = settings.api_token.as_deref().map(secret::sha256_hex);
        let metrics_token_hash = settings.metrics_token.as_deref().map(secret::sha256_hex);
        Auth {
            configured: AtomicBool::new(api_token_hash.is_some()),
            api_token_hash,
            metrics_token_hash,
            throttle: Mutex::new(throttle),
            settings,
        }
    }

    /// Whether `/metrics` may be served to a request with these headers.
    pub fn metrics_allowed(&self, headers: &HeaderMap) -> bool {
        match &self.metrics_token_hash {
            None => true,
            Some(h) => bearer(headers)
                .ok()
                .flatten()
                .is_some_and(|s| secret::same(&secret::sha256_hex(s), h)),
        }
    }
}

/// The client's address, as the listener saw it (plain TCP or TLS): the key of the
/// per-address login throttle. Behind a reverse proxy this is the proxy's address.
#[derive(Debug, Clone, Copy)]
pub struct PeerAddr(pub SocketAddr);

impl axum::extract::connect_info::Connected<IncomingStream<'_, tokio::net::TcpListener>>
    for PeerAddr
{
    fn connect_info(stream: IncomingStream<'_, tokio::net::TcpListener>) -> Self {
        PeerAddr(*stream.remote_addr())
    }
}

impl axum::extract::connect_info::Connected<IncomingStream<'_, crate::tls::TlsListener>>
    for PeerAddr
{
    fn connect_info(stream: IncomingStream<'_, crate::tls::TlsListener>) -> Self {
        PeerAddr(*stream.remote_addr())
    }
}

/// The session's id hash, in the extensions of a session-authenticated request (for
/// logout).
#[derive(Debug, Clone)]
struct SessionIdHash(String);

fn now() -> chrono::DateTime<chrono::Utc> {
    chrono::Utc::now()
}

/// The secret of an `Authorization: Bearer` header: `Ok(None)` without the header,
/// `Err` for another scheme or an unreadable value.
fn bearer(headers: &HeaderMap) -> Result<Option<&str>, ApiError> {
    let Some(v) = headers.get(header::AUTHORIZATION) else {
        return Ok(None);
    };
    let unauthorized = || {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "Authorization must be `Bearer <token>`",
        )
    };
    let v = v.to_str().map_err(|_| unauthorized())?.trim();
    let (scheme, rest) = v.split_once(' ').ok_or_else(unauthorized)?;
    let secret = rest.trim();
    if !scheme.eq_ignore_ascii_case("bearer") || secret.is_empty() {
        return Err(unauthorized());
    }
    Ok(Some(secret))
}

/// The value of cookie `name`.
fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim())
}

fn is_safe(m: &Method) -> bool {
    matches!(
        *m,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE
    )
}

/// `host[:port]` of an origin or URL (`https://h:1/x` -> `h:1`).
fn authority(url: &str) -> Option<&str> {
    let rest = url.split_once("://")?.1;
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    Some(&rest[..end]).filter(|a| !a.is_empty())
}

/// Whether the request comes from a page of this site: its `Origin` (else `Referer`)
/// names the `Host` it was sent to.
fn same_origin(headers: &HeaderMap) -> Result<(), ApiError> {
    let refuse = |m: &str| ApiError::new(StatusCode::FORBIDDEN, m.to_owned());
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .ok_or_else(|| refuse("no Host header"))?;
    let from = headers
        .get(header::ORIGIN)
        .or_else(|| headers.get(header::REFERER))
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| {
            refuse("a state-changing request from a session must send Origin or Referer")
        })?;
    match authority(from) {
        Some(a) if a.eq_ignore_ascii_case(host) => Ok(()),
        _ => Err(refuse(
            "cross-origin request refused (Origin does not match Host)",
        )),
    }
}

/// Resolves the caller. `Err` is a response to send as it is (a bad bearer, a store
/// failure).
async fn resolve(
    s: &AppState,
    headers: &HeaderMap,
) -> Result<Option<(Principal, Option<String>)>, ApiError> {
    if let Some(secret) = bearer(headers)? {
        let hash = secret::sha256_hex(secret);
        if let Some(legacy) = &s.auth.api_token_hash
            && secret::same(&hash, legacy)
        {
            return Ok(Some((
                Principal {
                    name: LEGACY_TOKEN_NAME.to_owned(),
                    role: crate::auth::Role::Admin,
                    crew: None,
                    credential: Credential::Token,
                },
                None,
            )));
        }
        return match s.store.account_store().api_token_by_hash(&hash).await? {
            Some(t) if secret::same(&t.secret_hash, &hash) => Ok(Some((
                Principal {
                    name: t.name,
                    role: t.role,
                    crew: t.crew,
                    credential: Credential::Token,
                },
                None,
            ))),
            _ => Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unknown or revoked token",
            )),
        };
    }
    let Some(id) = cookie(headers, SESSION_COOKIE).filter(|v| !v.is_empty()) else {
        return Ok(None);
    };
    let hash = secret::sha256_hex(id);
    let store = s.store.account_store();
    let t = now();
    let Some((session, account)) = store.session(&hash, t).await? else {
        return Ok(None);
    };
    let idle =
        chrono::Duration::from_std(s.auth.settings.session_idle).unwrap_or(chrono::Duration::MAX);
    if t - session.last_seen_at > idle {
        store.delete_session(&hash).await?;
        return Ok(None);
    }
    // One write a minute at most per session.
    if t - session.last_seen_at > chrono::Duration::seconds(60) {
        store.touch_session(&hash, t).await?;
    }
    Ok(Some((
        Principal {
            name: account.name,
            role: account.role,
            crew: account.crew,
            credential: Credential::Session {
                csrf_token: session.csrf_token,
            },
        },
        Some(hash),
    )))
}

/// The largest form body read for its `_csrf` field.
const FORM_LIMIT: usize = 1 << 20;

/// The middleware: see the module documentation.
pub async fn authenticate(State(s): State<AppState>, req: Request, next: Next) -> Response {
    match authenticate_inner(&s, req, next).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

async fn authenticate_inner(s: &AppState, req: Request, next: Next) -> Result<Response, ApiError> {
    let is_api = req.uri().path().starts_with("/api/");
    let is_login = req.uri().path() == "/login";
    let resolved = resolve(s, req.headers()).await?;
    let mut req = req;
    match resolved {
        Some((principal, session)) => {
            if let (Some(token), false, false) =
                (principal.csrf_token(), is_safe(req.method()), is_login)
            {
                same_origin(req.headers())?;
                req = check_csrf(req, token).await?;
            }
            req.extensions_mut().insert(principal);
            if let Some(h) = session {
                req.extensions_mut().insert(SessionIdHash(h));
            }
        }
        None if is_api => {
            if !configured(s).await? {
                return Err(ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    FIRST_ADMIN_HINT,
                ));
            }
            return Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "not logged in: send Authorization: Bearer <token>, or log in at /login",
            ));
        }
        None => {}
    }
    Ok(next.run(req).await)
}

/// Whether an account or the legacy token exists (asked of the store until one does).
async fn configured(s: &AppState) -> Result<bool, ApiError> {
    if s.auth.configured.load(Ordering::Relaxed) {
        return Ok(true);
    }
    let yes = s.store.account_store().count_enabled_accounts().await? > 0;
    if yes {
        s.auth.configured.store(true, Ordering::Relaxed);
    }
    Ok(yes)
}

/// Checks the CSRF token of a session's state-changing request: the header, or the
/// `_csrf` field of a urlencoded form (the body is read and put back).
async fn check_csrf(req: Request, expected: &str) -> Result<Request, ApiError> {
    let refuse = || {
        ApiError::new(
            StatusCode::FORBIDDEN,
            "missing or wrong CSRF token: send the X-CSRF-Token header (or a _csrf form field) \
             with the csrf_token of GET /api/v1/me",
        )
    };
    if let Some(h) = req.headers().get("x-csrf-token") {
        return if h.to_str().is_ok_and(|v| secret::same(v, expected)) {
            Ok(req)
        } else {
            Err(refuse())
        };
    }
    let is_form = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    if !is_form {
        return Err(refuse());
    }
    let (parts, body) = req.into_parts();
    let bytes = axum::body::to_bytes(body, FORM_LIMIT)
        .await
        .map_err(|_| ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "form too large"))?;
    let fields: Vec<(String, String)> = serde_urlencoded::from_bytes(&bytes)
        .map_err(|e| ApiError::bad_request(format!("invalid form: {e}")))?;
    let ok = fields
        .iter()
        .any(|(k, v)| k == "_csrf" && secret::same(v, expected));
    if !ok {
        return Err(refuse());
    }
    Ok(Request::from_parts(parts, axum::body::Body::from(bytes)))
}

// ---- routes ----

pub fn routes() -> axum::Router<AppState> {
    use axum::routing::post;
    axum::Router::new()
        .route("/login", post(login))
        .route("/logout", post(logout))
}

/// The body of `POST /login` (form or JSON).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LoginBody {
    username: String,
    password: String,
    #[serde(default)]
    next: Option<String>,
    /// A login form may carry the (pre-session) CSRF field; it is not checked.
    #[serde(default, rename = "_csrf")]
    _csrf: Option<String>,
}

/// `next` when it is a path of this site, else `/`.
fn local_path(next: Option<&str>) -> &str {
    match next {
        Some(n)
            if n.starts_with('/')
                && !n.starts_with("//")
                && !n.starts_with("/\\")
                && !n.chars().any(|c| c.is_control()) =>
        {
            n
        }
        _ => "/",
    }
}

fn wants_json(headers: &HeaderMap) -> bool {
    let has = |h: header::HeaderName| {
        headers
            .get(h)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.contains("application/json"))
    };
    has(header::CONTENT_TYPE) || has(header::ACCEPT)
}

fn see_other(to: &str) -> Response {
    (
        StatusCode::SEE_OTHER,
        [(
            header::LOCATION,
            HeaderValue::from_str(to).unwrap_or(HeaderValue::from_static("/")),
        )],
    )
        .into_response()
}

fn session_cookie(value: &str, max_age: Option<Duration>, secure: bool) -> HeaderValue {
    let mut c = format!("{SESSION_COOKIE}={value}; HttpOnly; SameSite=Strict; Path=/");
    match max_age {
        Some(d) => c.push_str(&format!("; Max-Age={}", d.as_secs())),
        None => c.push_str("; Max-Age=0"),
    }
    if secure {
        c.push_str("; Secure");
    }
    HeaderValue::from_str(&c).unwrap_or(HeaderValue::from_static("lw_session=; Max-Age=0"))
}

fn me_json(p: &Principal) -> serde_json::Value {
    json!({
        "name": p.name,
        "role": p.role,
        "crew": p.crew,
        "csrf_token": p.csrf_token(),
    })
}

async fn login(
    State(s): State<AppState>,
    connect: Option<axum::Extension<ConnectInfo<PeerAddr>>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let json_reply = wants_json(&headers);
    match login_inner(&s, connect.map(|c| (c.0).0.0), &headers, &body, json_reply).await {
        Ok(r) => r,
        Err(LoginFailure::Api(e)) => e.into_response(),
        Err(LoginFailure::Wrong) if json_reply => {
            ApiError::new(StatusCode::UNAUTHORIZED, "wrong user name or password").into_response()
        }
        Err(LoginFailure::Wrong) => see_other("/login?error=1"),
        Err(LoginFailure::Throttled(wait)) if json_reply => {
            let secs = wait.as_secs().max(1);
            let mut r = ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                format!("too many failed logins: try again in {secs} s"),
            )
            .into_response();
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
            r
        }
        Err(LoginFailure::Throttled(_)) => see_other("/login?error=throttled"),
    }
}

enum LoginFailure {
    Api(ApiError),
    Wrong,
    Throttled(Duration),
}

impl From<ApiError> for LoginFailure {
    fn from(e: ApiError) -> Self {
        LoginFailure::Api(e)
    }
}

impl From<leakwatch_store::StoreError> for LoginFailure {
    fn from(e: leakwatch_store::StoreError) -> Self {
        LoginFailure::Api(e.into())
    }
}

async fn login_inner(
    s: &AppState,
    peer: Option<SocketAddr>,
    headers: &HeaderMap,
    body: &[u8],
    json_reply: bool,
) -> Result<Response, LoginFailure> {
    if headers.contains_key(header::ORIGIN) {
        same_origin(headers)?;
    }
    let is_json_body = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    let b: LoginBody = if is_json_body {
        serde_json::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("invalid request body: {e}")))?
    } else {
        serde_urlencoded::from_bytes(body)
            .map_err(|e| ApiError::bad_request(format!("invalid form: {e}")))?
    };
    let mut keys = vec![Key::Account(b.username.to_lowercase())];
    if let Some(p) = peer {
        keys.push(Key::Address(p.ip()));
    }
    let t = now();
    let t_ms = t.timestamp_millis();
    if let Err(wait) = s
        .auth
        .throttle
        .lock()
        .map_err(|_| poisoned())?
        .check(&keys, t_ms)
    {
        return Err(LoginFailure::Throttled(wait));
    }
    let account = s
        .store
        .account_store()
        .get_account(&b.username)
        .await?
        .filter(|a| !a.disabled);
    let hash = account
        .as_ref()
        .map(|a| a.password_hash.clone())
        .unwrap_or_else(|| secret::dummy_hash().to_owned());
    let password = b.password;
    let matches = tokio::task::spawn_blocking(move || secret::verify_password(&password, &hash))
        .await
        .unwrap_or(false);
    let Some(account) = account.filter(|_| matches) else {
        s.auth
            .throttle
            .lock()
            .map_err(|_| poisoned())?
            .failed(&keys, t_ms);
        tracing::info!(user = %b.username, "failed login");
        return Err(LoginFailure::Wrong);
    };
    s.auth
        .throttle
        .lock()
        .map_err(|_| poisoned())?
        .succeeded(&keys[0]);
    let id = secret::random_token().map_err(internal)?;
    let csrf = secret::random_token().map_err(internal)?;
    let ttl = s.auth.settings.session_ttl;
    s.store
        .account_store()
        .create_session(&Session {
            id_hash: secret::sha256_hex(&id),
            account: account.name.clone(),
            csrf_token: csrf.clone(),
            created_at: t,
            expires_at: t + chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::hours(12)),
            last_seen_at: t,
        })
        .await?;
    tracing::info!(user = %account.name, role = %account.role, "login");
    let cookie = session_cookie(&id, Some(ttl), s.auth.settings.secure_cookies);
    let principal = Principal {
        name: account.name,
        role: account.role,
        crew: account.crew,
        credential: Credential::Session { csrf_token: csrf },
    };
    let mut r = if json_reply {
        Json(me_json(&principal)).into_response()
    } else {
        see_other(local_path(b.next.as_deref()))
    };
    r.headers_mut().insert(header::SET_COOKIE, cookie);
    Ok(r)
}

fn poisoned() -> LoginFailure {
    LoginFailure::Api(ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal error",
    ))
}

fn internal(e: secret::SecretError) -> LoginFailure {
    tracing::error!(error = %e, "login");
    poisoned()
}

async fn logout(
    State(s): State<AppState>,
    headers: HeaderMap,
    session: Option<axum::Extension<SessionIdHash>>,
) -> Result<Response, ApiError> {
    if let Some(axum::Extension(SessionIdHash(h))) = session {
        s.store.account_store().delete_session(&h).await?;
    }
    let cookie = session_cookie("", None, s.auth.settings.secure_cookies);
    let mut r = if wants_json(&headers) {
        StatusCode::NO_CONTENT.into_response()
    } else {
        see_other("/login")
    };
    r.headers_mut().insert(header::SET_COOKIE, cookie);
    Ok(r)
}

/// Who is logged in, and the CSRF token a page sends back.
pub(crate) async fn me(p: Principal) -> Json<serde_json::Value> {
    Json(me_json(&p))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_scheme_is_case_insensitive() {
        let mut h = HeaderMap::new();
        assert_eq!(bearer(&h).unwrap(), None);
        for v in ["Bearer abc", "bearer abc", "BEARER  abc "] {
            h.insert(header::AUTHORIZATION, HeaderValue::from_str(v).unwrap());
            assert_eq!(bearer(&h).unwrap(), Some("abc"), "{v}");
        }
        for v in ["Basic abc", "Bearer", "Bearerabc"] {
            h.insert(header::AUTHORIZATION, HeaderValue::from_str(v).unwrap());
            assert!(bearer(&h).is_err(), "{v}");
        }
    }

    #[test]
    fn next_must_be_a_local_path() {
        assert_eq!(local_path(Some("/alerts?x=1")), "/alerts?x=1");
        for bad in [
            "https://evil.example/",
            "//evil.example",
            "/\\evil",
            "alerts",
            "",
        ] {
            assert_eq!(local_path(Some(bad)), "/", "{bad}");
        }
        assert_eq!(local_path(None), "/");
    }

    #[test]
    fn origins_are_compared_with_host() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("127.0.0.1:8080"));
        assert!(same_origin(&h).is_err());
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("http://127.0.0.1:8080"),
        );
        assert!(same_origin(&h).is_ok());
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("http://evil.example:8080"),
        );
        assert!(same_origin(&h).is_err());
        h.remove(header::ORIGIN);
        h.insert(
            header::REFERER,
            HeaderValue::from_static("http://127.0.0.1:8080/board"),
        );
        assert!(same_origin(&h).is_ok());
        h.insert(header::ORIGIN, HeaderValue::from_static("null"));
        assert!(same_origin(&h).is_err());
    }

    #[test]
    fn cookies_are_found_by_name() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; lw_session=xyz; b=2"),
        );
        assert_eq!(cookie(&h, SESSION_COOKIE), Some("xyz"));
        assert_eq!(cookie(&h, "c"), None);
    }
}
