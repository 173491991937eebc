//! Accounts, sessions, CSRF, throttling, API tokens and the CLI (issue 12), over real
//! HTTP against the whole service.

use crate::support::{Backend, Service, TEST_TOKEN, unique};
use leakwatch::config::Secret;
use leakwatch_api::secret;
use leakwatch_core::{CrewId, Role};
use leakwatch_store::{AccountStore, NewAccount, NewApiToken, Session, Store};
use reqwest::header;
use serde_json::{Value, json};

const PASSWORD: &str = "a long enough password";

/// A client that follows no redirect and sends no credential by itself.
fn bare() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

async fn add_account(store: &Store, name: &str, role: Role, crew: Option<&CrewId>) {
    let h = secret::hash_password(PASSWORD).unwrap();
    store
        .account_store()
        .create_account(
            &NewAccount {
                name,
                role,
                crew,
                password_hash: &h,
            },
            "test",
            chrono::Utc::now(),
        )
        .await
        .unwrap();
}

/// Logs in with a form; returns the response.
async fn form_login(svc: &Service, user: &str, password: &str, next: &str) -> reqwest::Response {
    bare()
        .post(svc.url("/login"))
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(
            serde_urlencoded::to_string([
                ("username", user),
                ("password", password),
                ("next", next),
            ])
            .unwrap(),
        )
        .send()
        .await
        .unwrap()
}

/// The `lw_session=...` pair of a login's Set-Cookie, and the whole header.
fn session_cookie(r: &reqwest::Response) -> (String, String) {
    let set = r
        .headers()
        .get(header::SET_COOKIE)
        .expect("a Set-Cookie")
        .to_str()
        .unwrap()
        .to_owned();
    let pair = set.split(';').next().unwrap().trim().to_owned();
    (pair, set)
}

/// Logs in with JSON; returns (cookie pair, csrf token).
pub async fn json_login(svc: &Service, user: &str) -> (String, String) {
    let r = bare()
        .post(svc.url("/login"))
        .json(&json!({"username": user, "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let (cookie, _) = session_cookie(&r);
    let me: Value = r.json().await.unwrap();
    (cookie, me["csrf_token"].as_str().unwrap().to_owned())
}

async fn status_of(r: reqwest::RequestBuilder) -> (u16, Value) {
    let r = r.send().await.unwrap();
    let s = r.status().as_u16();
    let t = r.text().await.unwrap();
    (s, serde_json::from_str(&t).unwrap_or(Value::String(t)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_no_account_the_api_says_how_to_create_the_first_admin() {
    let svc = Service::start(Backend::EmbeddedSqlite, |c| c.http.api_token = None)
        .await
        .unwrap();
    let (s, b) = status_of(bare().get(svc.url("/api/v1/alerts"))).await;
    assert_eq!(s, 503, "{b}");
    assert!(
        b["error"].as_str().unwrap().contains("leakwatch user add"),
        "{b}"
    );
    for path in ["/healthz", "/readyz", "/metrics"] {
        let (s, _) = status_of(bare().get(svc.url(path))).await;
        assert_eq!(s, 200, "{path}");
    }
    // The first admin: from then on the API asks for a login.
    add_account(&svc.running().store, "root", Role::Admin, None).await;
    let (s, _) = status_of(bare().get(svc.url("/api/v1/alerts"))).await;
    assert_eq!(s, 401);
    let (cookie, _) = json_login(&svc, "root").await;
    let (s, b) = status_of(
        bare()
            .get(svc.url("/api/v1/alerts"))
            .header(header::COOKIE, &cookie),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    svc.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_session_csrf_and_logout() {
    let svc = Service::start(Backend::EmbeddedSqlite, |_| {})
        .await
        .unwrap();
    add_account(&svc.running().store, "eva", Role::Engineer, None).await;
    let host = svc.base.trim_start_matches("http://").to_owned();
    let origin = svc.base.clone();

    // Wrong password: back to the login page with an error.
    let r = form_login(&svc, "eva", "wrong password!", "/alerts").await;
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()[header::LOCATION], "/login?error=1");
    assert!(r.headers().get(header::SET_COOKIE).is_none());
    // An unknown user looks the same.
    let r = form_login(&svc, "nobody", PASSWORD, "/alerts").await;
    assert_eq!(r.headers()[header::LOCATION], "/login?error=1");

    // Right: to `next`, with a strict, HTTP-only cookie (not Secure over plain HTTP).
    let r = form_login(&svc, "eva", PASSWORD, "/alerts?status=open").await;
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()[header::LOCATION], "/alerts?status=open");
    let (cookie, set) = session_cookie(&r);
    assert!(
        cookie.starts_with("lw_session=") && cookie.len() > 40,
        "{set}"
    );
    for attr in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(set.contains(attr), "{set}");
    }
    assert!(!set.contains("Secure"), "{set}");
    // `next` elsewhere is not followed.
    let r = form_login(&svc, "eva", PASSWORD, "https://evil.example/").await;
    assert_eq!(r.headers()[header::LOCATION], "/");
    let r = form_login(&svc, "eva", PASSWORD, "//evil.example/").await;
    assert_eq!(r.headers()[header::LOCATION], "/");

    let (s, me) = status_of(
        bare()
            .get(svc.url("/api/v1/me"))
            .header(header::COOKIE, &cookie),
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(
        (me["name"].as_str(), me["role"].as_str()),
        (Some("eva"), Some("engineer"))
    );
    assert!(me["crew"].is_null());
    let csrf = me["csrf_token"].as_str().unwrap().to_owned();

    // A state-changing request from the session: CSRF token and Origin both needed.
    let ack = || {
        bare()
            .post(svc.url("/api/v1/alerts/999999/acknowledge"))
            .header(header::COOKIE, &cookie)
    };
    let (s, b) = status_of(ack().header(header::ORIGIN, &origin)).await;
    assert_eq!(s, 403, "no token: {b}");
    let (s, _) = status_of(
        ack()
            .header("x-csrf-token", "forged")
            .header(header::ORIGIN, &origin),
    )
    .await;
    assert_eq!(s, 403, "wrong token");
    let (s, _) = status_of(ack().header("x-csrf-token", &csrf)).await;
    assert_eq!(s, 403, "no Origin nor Referer");
    let (s, _) = status_of(
        ack()
            .header("x-csrf-token", &csrf)
            .header(header::ORIGIN, "http://evil.example"),
    )
    .await;
    assert_eq!(s, 403, "foreign Origin");
    let (s, b) = status_of(
        ack()
            .header("x-csrf-token", &csrf)
            .header(header::ORIGIN, &origin),
    )
    .await;
    assert_eq!(s, 404, "through to the handler: {b}");
    let (s, _) = status_of(
        ack()
            .header("x-csrf-token", &csrf)
            .header(header::REFERER, format!("http://{host}/alerts/1")),
    )
    .await;
    assert_eq!(s, 404, "Referer will do when Origin is absent");
    // Reads need no token.
    let (s, _) = status_of(
        bare()
            .get(svc.url("/api/v1/alerts"))
            .header(header::COOKIE, &cookie),
    )
    .await;
    assert_eq!(s, 200);

    // Log out with a form carrying `_csrf`: the session ends, the cookie is cleared.
    let r = bare()
        .post(svc.url("/logout"))
        .header(header::COOKIE, &cookie)
        .header(header::ORIGIN, &origin)
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(format!("_csrf={csrf}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()[header::LOCATION], "/login");
    assert!(
        r.headers()[header::SET_COOKIE]
            .to_str()
            .unwrap()
            .contains("Max-Age=0")
    );
    let (s, _) = status_of(
        bare()
            .get(svc.url("/api/v1/me"))
            .header(header::COOKIE, &cookie),
    )
    .await;
    assert_eq!(s, 401, "the session is gone");

    // JSON login answers JSON.
    let r = bare()
        .post(svc.url("/login"))
        .json(&json!({"username": "eva", "password": "nope nope nope"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let (_, csrf2) = json_login(&svc, "eva").await;
    assert_ne!(csrf2, csrf);
    svc.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_expire_and_idle_out() {
    let svc = Service::start(Backend::EmbeddedSqlite, |_| {})
        .await
        .unwrap();
    let store = svc.running().store.clone();
    add_account(&store, "dora", Role::Dispatcher, None).await;
    let now = chrono::Utc::now();
    let h = chrono::Duration::hours(1);
    for (id, created, expires, last_seen, ok) in [
        ("fresh-session-id", now, now + h, now, true),
        (
            "expired-session-id",
            now - h * 13,
            now - h,
            now - h * 2,
            false,
        ),
        // Idle past `auth.session_idle_min` (120 by default).
        ("idle-session-id", now - h * 4, now + h, now - h * 3, false),
    ] {
        store
            .account_store()
            .create_session(&Session {
                id_hash: secret::sha256_hex(id),
                account: "dora".into(),
                csrf_token: "c".into(),
                created_at: created,
                expires_at: expires,
                last_seen_at: last_seen,
            })
            .await
            .unwrap();
        let (s, _) = status_of(
            bare()
                .get(svc.url("/api/v1/me"))
                .header(header::COOKIE, format!("lw_session={id}")),
        )
        .await;
        assert_eq!(s, if ok { 200 } else { 401 }, "{id}");
    }
    // Disabling the account ends its sessions.
    store
        .account_store()
        .set_disabled("dora", true, "test", now)
        .await
        .unwrap();
    let (s, _) = status_of(
        bare()
            .get(svc.url("/api/v1/me"))
            .header(header::COOKIE, "lw_session=fresh-session-id"),
    )
    .await;
    assert_eq!(s, 401);
    svc.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_logins_are_throttled_per_account() {
    let svc = Service::start(Backend::EmbeddedSqlite, |_| {})
        .await
        .unwrap();
    add_account(&svc.running().store, "tina", Role::Engineer, None).await;
    add_account(&svc.running().store, "ugo", Role::Engineer, None).await;
    let login = |user: &'static str, password: &'static str| {
        bare()
            .post(svc.url("/login"))
            .json(&json!({"username": user, "password": password}))
            .send()
    };
    for _ in 0..6 {
        assert_eq!(
            login("tina", "guess guess guess").await.unwrap().status(),
            401
        );
    }
    // Locked now, even with the right password; the answer says for how long.
    let r = login("tina", PASSWORD).await.unwrap();
    assert_eq!(r.status(), 429);
    let wait: u64 = r.headers()[header::RETRY_AFTER]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=30).contains(&wait), "{wait}");
    // A form gets the login page with the reason.
    let r = form_login(&svc, "tina", PASSWORD, "/").await;
    assert_eq!(r.headers()[header::LOCATION], "/login?error=throttled");
    // Another account from the same address is not locked (6 < 20 failures).
    assert_eq!(login("ugo", PASSWORD).await.unwrap().status(), 200);
    svc.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bearer_tokens_legacy_and_stored_no_token_in_urls() {
    let svc = Service::start(Backend::EmbeddedSqlite, |c| {
        c.auth.metrics_token = Some(Secret::new("metrics-secret-123"));
    })
    .await
    .unwrap();
    let store = svc.running().store.clone();
    let me = |auth: String| {
        bare()
            .get(svc.url("/api/v1/me"))
            .header(header::AUTHORIZATION, auth)
    };
    // The legacy http.api_token: an admin named api-token, scheme in any case.
    for scheme in ["Bearer", "bearer", "BEARER"] {
        let (s, b) = status_of(me(format!("{scheme} {TEST_TOKEN}"))).await;
        assert_eq!(s, 200, "{scheme}");
        assert_eq!(
            (b["name"].as_str(), b["role"].as_str()),
            (Some("api-token"), Some("admin"))
        );
        assert!(b["csrf_token"].is_null());
    }
    for bad in [
        format!("Basic {TEST_TOKEN}"),
        "Bearer wrong".into(),
        "Bearer".into(),
    ] {
        let (s, _) = status_of(me(bad.clone())).await;
        assert_eq!(s, 401, "{bad}");
    }
    // No tokens in URLs.
    let (s, _) =
        status_of(bare().get(svc.url(&format!("/api/v1/alerts?token={TEST_TOKEN}")))).await;
    assert_eq!(s, 401);

    // A stored token for a crew's phone, until revoked. Bearer requests need no CSRF.
    store
        .upsert_crews(&[leakwatch_core::Crew {
            id: CrewId::parse("C-7").unwrap(),
            name: "Seven".into(),
            skills: vec![],
            home: leakwatch_core::GeoPoint::new(45.0, 9.0).unwrap(),
            position: None,
            position_at: None,
            last_job_place: None,
            shifts: None,
            on_shift: true,
        }])
        .await
        .unwrap();
    let phone = secret::new_api_token().unwrap();
    let c7 = CrewId::parse("C-7").unwrap();
    store
        .account_store()
        .create_api_token(
            &NewApiToken {
                name: "phone-7",
                secret_hash: &secret::sha256_hex(&phone),
                role: Role::Crew,
                crew: Some(&c7),
            },
            "test",
            chrono::Utc::now(),
        )
        .await
        .unwrap();
    let (s, b) = status_of(me(format!("Bearer {phone}"))).await;
    assert_eq!(s, 200);
    assert_eq!(
        (b["name"].as_str(), b["role"].as_str(), b["crew"].as_str()),
        (Some("phone-7"), Some("crew"), Some("C-7"))
    );
    store
        .account_store()
        .revoke_api_token("phone-7", "test", chrono::Utc::now())
        .await
        .unwrap();
    let (s, _) = status_of(me(format!("Bearer {phone}"))).await;
    assert_eq!(s, 401);

    // /metrics behind its own token; health never.
    let (s, _) = status_of(bare().get(svc.url("/metrics"))).await;
    assert_eq!(s, 401);
    let (s, _) = status_of(
        bare()
            .get(svc.url("/metrics"))
            .bearer_auth("metrics-secret-123"),
    )
    .await;
    assert_eq!(s, 200);
    let (s, _) = status_of(bare().get(svc.url("/healthz"))).await;
    assert_eq!(s, 200);
    svc.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secure_cookies_when_configured() {
    let svc = Service::start(Backend::EmbeddedSqlite, |c| c.auth.secure_cookies = true)
        .await
        .unwrap();
    add_account(&svc.running().store, "sara", Role::Admin, None).await;
    let r = form_login(&svc, "sara", PASSWORD, "/").await;
    let (_, set) = session_cookie(&r);
    assert!(set.contains("; Secure"), "{set}");
    svc.stop().await;
}

/// `leakwatch user` and `leakwatch token`, as an operator runs them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_creates_users_and_tokens_with_secrets_off_the_command_line() {
    use std::io::Write;
    let path = std::env::temp_dir().join(format!("{}.db", unique("leakwatch-cli-")));
    let url = format!("sqlite://{}", path.display());
    let run = |args: &[&str], stdin: &str| {
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_leakwatch"))
            .args(args)
            .env("LEAKWATCH__DATABASE__URL", &url)
            .env("RUST_LOG", "error")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(stdin.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    };
    let out = run(
        &["user", "add", "anna", "--role", "admin"],
        &format!("{PASSWORD}\n"),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let short = run(&["user", "add", "bob", "--role", "engineer"], "short\n");
    assert!(!short.status.success());
    let crewless = run(
        &["user", "add", "carl", "--role", "crew"],
        &format!("{PASSWORD}\n"),
    );
    assert!(!crewless.status.success());
    let out = run(&["token", "create", "scada", "--role", "engineer"], "");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    assert!(token.starts_with("lw_"), "{token}");
    let list = run(&["token", "list"], "");
    let listed = String::from_utf8(list.stdout).unwrap();
    assert!(
        listed.contains("scada") && !listed.contains(&token),
        "{listed}"
    );

    let store = Store::connect(&url).await.unwrap();
    let a = store.account_store();
    let anna = a.get_account("anna").await.unwrap().unwrap();
    assert_eq!(anna.role, Role::Admin);
    assert!(anna.password_hash.starts_with("$argon2id$"));
    assert!(secret::verify_password(PASSWORD, &anna.password_hash));
    assert!(a.get_account("bob").await.unwrap().is_none());
    let t = a
        .api_token_by_hash(&secret::sha256_hex(&token))
        .await
        .unwrap()
        .unwrap();
    assert_eq!((t.name.as_str(), t.role), ("scada", Role::Engineer));

    let out = run(&["user", "disable", "anna"], "");
    assert!(out.status.success());
    let out = run(&["token", "revoke", "scada"], "");
    assert!(out.status.success());
    assert!(a.get_account("anna").await.unwrap().unwrap().disabled);
    assert!(
        a.api_token_by_hash(&secret::sha256_hex(&token))
            .await
            .unwrap()
            .is_none()
    );
    let actions: Vec<String> = a
        .auth_audit(10)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.action)
        .collect();
    assert_eq!(
        actions,
        [
            "token_revoked",
            "account_disabled",
            "token_created",
            "account_created"
        ]
    );
    store.close().await;
    let _ = std::fs::remove_file(&path);
}

/// A bearer token of `role` (crew members of `crew`).
async fn role_token(store: &Store, name: &str, role: Role, crew: Option<&CrewId>) -> String {
    let secret = secret::new_api_token().unwrap();
    store
        .account_store()
        .create_api_token(
            &NewApiToken {
                name,
                secret_hash: &secret::sha256_hex(&secret),
                role,
                crew,
            },
            "test",
            chrono::Utc::now(),
        )
        .await
        .unwrap();
    secret
}

fn crew_of(id: &str) -> leakwatch_core::Crew {
    leakwatch_core::Crew {
        id: CrewId::parse(id).unwrap(),
        name: format!("Crew {id}"),
        skills: vec!["emergency".into(), "repair".into()],
        home: leakwatch_core::GeoPoint::new(45.0, 9.0).unwrap(),
        position: None,
        position_at: None,
        last_job_place: None,
        shifts: None,
        on_shift: true,
    }
}

/// Every route the router registers, called by every role: refused (403) exactly
/// when the rule table says so. The routes come from the router's own list, so a new
/// route is tested (and refused to all until it has a rule).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_for_every_role() {
    let svc = Service::start(Backend::EmbeddedSqlite, |_| {})
        .await
        .unwrap();
    let store = svc.running().store.clone();
    store
        .upsert_crews(&[crew_of("C-A"), crew_of("C-B")])
        .await
        .unwrap();
    let ca = CrewId::parse("C-A").unwrap();
    let mut tokens = Vec::new();
    for role in Role::ALL {
        let crew = role.needs_crew().then_some(&ca);
        tokens.push((
            *role,
            role_token(&store, &format!("t-{role}"), *role, crew).await,
        ));
    }
    let mut checked = 0;
    for (template, methods) in leakwatch_api::API_ROUTES {
        // Concrete paths: ids that parse; a crew member's own crew.
        let path = template
            .replace("/crews/{id}", "/crews/C-A")
            .replace("/meters/{id}", "/meters/M-1")
            .replace("{id}", "999999")
            .replace("{name}", "nobody");
        for method in *methods {
            let rule = leakwatch_api::authz::allowed(
                &reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).unwrap(),
                template,
            )
            .unwrap_or_else(|| panic!("{method} {template} has no rule"));
            for (role, token) in &tokens {
                let req = match *method {
                    "get" => bare().get(svc.url(&path)),
                    "post" => bare().post(svc.url(&path)).json(&json!({})),
                    other => panic!("untested method {other}"),
                };
                let (s, b) = status_of(req.bearer_auth(token)).await;
                if rule.contains(role) {
                    assert!(s != 403 && s != 401, "{role} {method} {path}: {s} {b}");
                } else {
                    assert_eq!(s, 403, "{role} {method} {path}: {b}");
                }
                checked += 1;
            }
        }
    }
    assert!(checked >= 4 * 25, "{checked}");
    svc.stop().await;
}

/// The object-level rules: a crew member sees and moves their own crew's orders
/// only (another crew's are 404), and takes only the field steps.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crew_members_see_and_act_on_their_own_crew_only() {
    let svc = Service::start(Backend::EmbeddedSqlite, |_| {})
        .await
        .unwrap();
    let store = svc.running().store.clone();
    store
        .upsert_crews(&[crew_of("C-A"), crew_of("C-B")])
        .await
        .unwrap();
    let (ca, cb) = (CrewId::parse("C-A").unwrap(), CrewId::parse("C-B").unwrap());
    let a = role_token(&store, "phone-a", Role::Crew, Some(&ca)).await;
    let b = role_token(&store, "phone-b", Role::Crew, Some(&cb)).await;
    let dispatcher = role_token(&store, "dina", Role::Dispatcher, None).await;
    // A dispatcher creates an order and assigns it to crew A.
    let (s, o) = status_of(
        bare()
            .post(svc.url("/api/v1/work-orders"))
            .bearer_auth(&dispatcher)
            .json(&json!({"kind": "planned_inspection", "priority": "normal",
                          "location": {"lat": 45.0, "lon": 9.0}, "summary": "check"})),
    )
    .await;
    assert_eq!(s, 201, "{o}");
    let oid = o["id"].as_i64().unwrap();
    assert_eq!(o["history"], Value::Null);
    let (s, o) = status_of(
        bare()
            .post(svc.url(&format!("/api/v1/work-orders/{oid}/transition")))
            .bearer_auth(&dispatcher)
            .json(&json!({"action": "assign", "crew_id": "C-A"})),
    )
    .await;
    assert_eq!(s, 200, "{o}");
    let get = |t: &String, p: &str| bare().get(svc.url(p)).bearer_auth(t.clone());
    let order = format!("/api/v1/work-orders/{oid}");
    assert_eq!(status_of(get(&a, &order)).await.0, 200);
    assert_eq!(
        status_of(get(&b, &order)).await.0,
        404,
        "another crew's order does not exist"
    );
    let (s, jobs) = status_of(get(&a, "/api/v1/crews/C-A/jobs")).await;
    assert_eq!(s, 200);
    assert_eq!(jobs["items"].as_array().map(Vec::len), Some(1), "{jobs}");
    assert_eq!(status_of(get(&b, "/api/v1/crews/C-A/jobs")).await.0, 404);
    let step = |t: &String, body: Value| {
        bare()
            .post(svc.url(&format!("/api/v1/work-orders/{oid}/transition")))
            .bearer_auth(t.clone())
            .json(&body)
    };
    let (s, _) = status_of(step(&b, json!({"action": "accept"}))).await;
    assert_eq!(s, 404, "crew B cannot touch crew A's order");
    let (s, _) = status_of(step(&a, json!({"action": "cancel", "reason": "no"}))).await;
    assert_eq!(s, 403, "cancelling is the dispatcher's");
    let (s, _) = status_of(step(&a, json!({"action": "assign", "crew_id": "C-B"}))).await;
    assert_eq!(s, 403);
    let (s, o) = status_of(step(&a, json!({"action": "accept"}))).await;
    assert_eq!(s, 200, "{o}");
    // The actor is the token's name.
    let (_, o) = status_of(get(&dispatcher, &order)).await;
    let last = o["history"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["actor"], "phone-a", "{o}");
    // Positions: own crew only.
    let pos = json!({"lat": 45.01, "lon": 9.01});
    let (s, _) = status_of(
        bare()
            .post(svc.url("/api/v1/crews/C-B/location"))
            .bearer_auth(&a)
            .json(&pos),
    )
    .await;
    assert_eq!(s, 404);
    let (s, b2) = status_of(
        bare()
            .post(svc.url("/api/v1/crews/C-A/location"))
            .bearer_auth(&a)
            .json(&pos),
    )
    .await;
    assert_ne!(s, 404, "{b2}");
    svc.stop().await;
}

/// Acknowledge, dismiss and resolve record who and when; escalate's order records
/// who created it: all from the credential, never from a header.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reviews_record_who_and_when_from_the_credential() {
    let svc = Service::start(Backend::EmbeddedSqlite, |_| {})
        .await
        .unwrap();
    let store = svc.running().store.clone();
    add_account(&store, "eng", Role::Engineer, None).await;
    let (cookie, csrf) = json_login(&svc, "eng").await;
    let mut ids = Vec::new();
    for (i, meter) in ["M-R1", "M-R2"].iter().enumerate() {
        let f = leakwatch_core::Finding {
            meter_id: Some(leakwatch_core::MeterId::parse(*meter).unwrap()),
            district_id: Some(leakwatch_core::DistrictId::parse("D-1").unwrap()),
            kind: leakwatch_core::AlertKind::Tamper,
            severity: leakwatch_core::Severity::Warning,
            detected_at: chrono::Utc::now() - chrono::Duration::minutes(10 + i as i64),
            evidence: serde_json::from_value(
                json!({"rule": "r", "observed": 1.0, "threshold": 0.5,
                "unit": "event", "window_start": "2026-01-01T00:00:00Z",
                "window_end": "2026-01-01T01:00:00Z", "explanation": "x"}),
            )
            .unwrap(),
        };
        ids.push(store.record_finding(&f).await.unwrap().0.id);
    }
    let act = |id: i64, what: &str, body: Option<Value>| {
        let mut r = bare()
            .post(svc.url(&format!("/api/v1/alerts/{id}/{what}")))
            .header(header::COOKIE, &cookie)
            .header(header::ORIGIN, &svc.base)
            .header("x-csrf-token", &csrf)
            .header("x-actor", "forged");
        if let Some(b) = body {
            r = r.json(&b);
        }
        r
    };
    let before = chrono::Utc::now() - chrono::Duration::seconds(1);
    let (s, a) = status_of(act(ids[0], "acknowledge", None)).await;
    assert_eq!(s, 200, "{a}");
    assert_eq!(a["acknowledged_by"], "eng");
    let (s, a) = status_of(act(ids[0], "resolve", None)).await;
    assert_eq!(s, 200, "{a}");
    assert_eq!(
        (a["acknowledged_by"].as_str(), a["resolved_by"].as_str()),
        (Some("eng"), Some("eng"))
    );
    let (s, a) = status_of(act(
        ids[1],
        "dismiss",
        Some(json!({"reason": "known cause"})),
    ))
    .await;
    assert_eq!(s, 200, "{a}");
    assert_eq!(a["dismissed_by"], "eng");
    let stored = store.get_alert(ids[1]).await.unwrap().unwrap();
    assert_eq!(stored.dismissed_by.as_deref(), Some("eng"));
    assert!(stored.dismissed_at.unwrap() >= before);
    svc.stop().await;
}

/// Unknown fields in a body are refused; every response carries the security headers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_fields_refused_and_security_headers_set() {
    let svc = Service::start(Backend::EmbeddedSqlite, |_| {})
        .await
        .unwrap();
    let mut c = json!(crew_of("C-U"));
    c["colour"] = json!("red");
    let (s, b) = svc.post("/api/v1/crews", &json!([c])).await;
    assert!(s == 400 || s == 422, "{s} {b}");
    let (s, b) = svc
        .post(
            "/api/v1/work-orders/1/transition",
            &json!({"action": "arrive", "actor": "x"}),
        )
        .await;
    assert!(s == 400 || s == 422, "{s} {b}");
    assert!(b["error"].as_str().unwrap().contains("actor"), "{b}");
    let (s, b) = svc
        .post(
            "/api/v1/plans",
            &json!({"date": "2026-12-01", "apply": false, "x": 1}),
        )
        .await;
    assert!(s == 400 || s == 422, "{s} {b}");
    for path in ["/healthz", "/api/v1/me", "/nowhere"] {
        let r = svc.http.get(svc.url(path)).send().await.unwrap();
        let h = r.headers();
        let csp = h[header::CONTENT_SECURITY_POLICY].to_str().unwrap();
        assert!(
            csp.contains("frame-ancestors 'none'") && csp.contains("script-src 'self'"),
            "{csp}"
        );
        assert!(
            !csp.contains("unsafe-inline';") || !csp.contains("script-src 'self' 'unsafe-inline'")
        );
        assert_eq!(h[header::X_CONTENT_TYPE_OPTIONS], "nosniff", "{path}");
        assert_eq!(h[header::REFERRER_POLICY], "same-origin", "{path}");
    }
    svc.stop().await;
}

/// Accounts and tokens over the API, for admins: add, log in, reset the password
/// (sessions end), disable / enable, tokens created with the secret once and
/// revoked; the audit's actor is the caller's credential (never `X-Actor`); the
/// admins cannot lock themselves out. Other roles: 403 on every one of these routes
/// (`every_route_for_every_role` covers them too).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accounts_and_tokens_over_http_for_admins() {
    let svc = Service::start(Backend::EmbeddedSqlite, |_| {})
        .await
        .unwrap();
    let store = svc.running().store.clone();
    store.upsert_crews(&[crew_of("C-A")]).await.unwrap();
    let admin_secret = role_token(&store, "root-token", Role::Admin, None).await;
    let engineer_secret = role_token(&store, "eng-token", Role::Engineer, None).await;
    let (admin, engineer) = (admin_secret.as_str(), engineer_secret.as_str());
    let call = |method: &str, path: &str, token: &str, body: Option<Value>| {
        let r = match method {
            "get" => bare().get(svc.url(path)),
            _ => bare().post(svc.url(path)).json(&body.unwrap_or(json!({}))),
        };
        r.bearer_auth(token).header("x-actor", "mallory")
    };
    let new = json!({"name": "olga", "role": "engineer", "password": PASSWORD});
    // Not for engineers.
    for (m, p) in [
        ("get", "/api/v1/accounts"),
        ("post", "/api/v1/accounts"),
        ("get", "/api/v1/tokens"),
        ("get", "/api/v1/auth-audit"),
        ("post", "/api/v1/accounts/olga/disable"),
    ] {
        let (s, _) = status_of(call(m, p, engineer, Some(new.clone()))).await;
        assert_eq!(s, 403, "{m} {p}");
    }
    let (s, b) = status_of(call("post", "/api/v1/accounts", admin, Some(new.clone()))).await;
    assert_eq!(s, 201, "{b}");
    assert_eq!(
        (b["name"].as_str(), b["role"].as_str()),
        (Some("olga"), Some("engineer"))
    );
    assert!(b.get("password_hash").is_none() && b["disabled"] == json!(false));
    // Refusals: taken name (409), unknown field, short password, a crew on an
    // engineer, an unknown crew.
    for (body, want) in [
        (new.clone(), 409),
        (
            json!({"name": "x1", "role": "engineer", "password": PASSWORD, "admin": true}),
            422,
        ),
        (
            json!({"name": "x2", "role": "engineer", "password": "short"}),
            422,
        ),
        (
            json!({"name": "x3", "role": "engineer", "crew": "C-A", "password": PASSWORD}),
            422,
        ),
        (
            json!({"name": "x4", "role": "crew", "crew": "C-NOPE", "password": PASSWORD}),
            404,
        ),
        (
            json!({"name": "bad name", "role": "engineer", "password": PASSWORD}),
            422,
        ),
    ] {
        let (s, b) = status_of(call("post", "/api/v1/accounts", admin, Some(body.clone()))).await;
        assert_eq!(s, want, "{body}: {b}");
    }
    let (s, b) = status_of(call("get", "/api/v1/accounts", admin, None)).await;
    assert_eq!(s, 200);
    assert!(
        b["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["name"] == "olga")
    );
    assert!(b["next_cursor"].is_null());
    // Olga logs in; a password reset ends her session.
    let (cookie, _) = json_login(&svc, "olga").await;
    let me = || {
        bare()
            .get(svc.url("/api/v1/me"))
            .header(header::COOKIE, cookie.clone())
    };
    assert_eq!(status_of(me()).await.0, 200);
    let (s, _) = status_of(call(
        "post",
        "/api/v1/accounts/olga/password",
        admin,
        Some(json!({"password": "olga's second password"})),
    ))
    .await;
    assert_eq!(s, 204);
    assert_eq!(status_of(me()).await.0, 401);
    let (s, _) = status_of(call(
        "post",
        "/api/v1/accounts/nobody/password",
        admin,
        Some(json!({"password": "olga's second password"})),
    ))
    .await;
    assert_eq!(s, 404);
    // Disable / enable.
    let (s, b) = status_of(call("post", "/api/v1/accounts/olga/disable", admin, None)).await;
    assert_eq!((s, b["disabled"].clone()), (200, json!(true)));
    let (s, b) = status_of(call("post", "/api/v1/accounts/olga/enable", admin, None)).await;
    assert_eq!((s, b["disabled"].clone()), (200, json!(false)));
    // The last enabled admin stays.
    add_account(&store, "boss", Role::Admin, None).await;
    let (s, _) = status_of(call("post", "/api/v1/accounts/boss/disable", admin, None)).await;
    assert_eq!(s, 409, "boss is the last enabled admin account");
    // Tokens: the secret once, no-store; a crew device's token names its crew.
    let r = call(
        "post",
        "/api/v1/tokens",
        admin,
        Some(json!({"name": "phone-a", "role": "crew", "crew": "C-A"})),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(r.status(), 201);
    assert_eq!(r.headers()[header::CACHE_CONTROL], "no-store");
    let created: Value = r.json().await.unwrap();
    let secret = created["secret"].as_str().unwrap().to_owned();
    assert_eq!(created["token"]["crew"], "C-A");
    let (s, b) = status_of(bare().get(svc.url("/api/v1/me")).bearer_auth(&secret)).await;
    assert_eq!((s, b["crew"].as_str()), (200, Some("C-A")));
    let (_, list) = status_of(call("get", "/api/v1/tokens", admin, None)).await;
    assert!(!list.to_string().contains(&secret), "no secret in the list");
    assert!(list.to_string().contains("phone-a"));
    let (s, b) = status_of(call("post", "/api/v1/tokens/phone-a/revoke", admin, None)).await;
    assert_eq!(s, 200);
    assert!(b["revoked_at"].is_string());
    assert_eq!(
        status_of(bare().get(svc.url("/api/v1/me")).bearer_auth(&secret))
            .await
            .0,
        401
    );
    let (s, _) = status_of(call("post", "/api/v1/tokens/phone-a/revoke", admin, None)).await;
    assert_eq!(s, 404, "revoked already");
    // The audit: every change by the admin's token, none by the header's name.
    let (s, audit) = status_of(call("get", "/api/v1/auth-audit?limit=50", admin, None)).await;
    assert_eq!(s, 200);
    let items = audit["items"].as_array().unwrap();
    for action in [
        "account_created",
        "password_changed",
        "account_disabled",
        "account_enabled",
        "token_created",
        "token_revoked",
    ] {
        assert!(
            items
                .iter()
                .any(|r| r["action"] == action && r["actor"] == "root-token"),
            "{action}: {audit}"
        );
    }
    assert!(!audit.to_string().contains("mallory"));
    svc.stop().await;
}
