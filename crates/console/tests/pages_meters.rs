//! The meter, district, map and admin pages over real HTTP (no browser): what they
//! show from the store, who may see them, and the admin's account and token forms
//! (CSRF, the actor in the audit, the secret shown once).

use leakwatch_api::AppState;
use leakwatch_api::auth::Role;
use leakwatch_core::{
    AlertKind, Crew, CrewId, DistrictId, EventCode, Evidence, Finding, GeoPoint, MeterEvent,
    MeterId, MeterRecord, Priority, Reading, Severity, WorkOrderKind,
};
use leakwatch_dispatch::{DispatchConfig, Dispatcher};
use leakwatch_store::{AccountStore, NewAccount, NewWorkOrder, Store};
use serde_json::{Value, json};
use std::sync::Arc;

const PASSWORD: &str = "a long enough test password";

struct World {
    base: String,
    store: Store,
    dispatcher: Dispatcher,
}

async fn start(cfg: leakwatch_console::ConsoleConfig) -> World {
    let store = Store::connect("sqlite::memory:").await.unwrap();
    let dispatcher = Dispatcher::new(store.clone(), DispatchConfig::default());
    let crew = |id: &str, position: Option<GeoPoint>| Crew {
        id: CrewId::parse(id).unwrap(),
        name: format!("crew {id}"),
        skills: vec!["inspection".into(), "emergency".into()],
        home: GeoPoint::new(43.77, 11.25).unwrap(),
        position,
        position_at: position.map(|_| chrono::Utc::now()),
        last_job_place: None,
        shifts: None,
        on_shift: true,
    };
    store
        .upsert_crews(&[
            crew("C-1", None),
            crew("C-2", Some(GeoPoint::new(43.78, 11.26).unwrap())),
        ])
        .await
        .unwrap();
    let hash = leakwatch_api::secret::hash_password(PASSWORD).unwrap();
    let c1 = CrewId::parse("C-1").unwrap();
    for (name, role, crew) in [
        ("adm", Role::Admin, None),
        ("eng", Role::Engineer, None),
        ("disp", Role::Dispatcher, None),
        ("crew1", Role::Crew, Some(&c1)),
    ] {
        store
            .account_store()
            .create_account(
                &NewAccount {
                    name,
                    role,
                    crew,
                    password_hash: &hash,
                },
                "test",
                chrono::Utc::now(),
            )
            .await
            .unwrap();
    }
    let state = AppState {
        store: store.clone(),
        dispatcher: dispatcher.clone(),
        metrics: None,
        broker_up: Arc::new(|| true),
        crews_up: Arc::new(|| true),
        detection: Arc::new(Default::default()),
        auth: Arc::new(leakwatch_api::authn::Auth::new(Default::default())),
        limits: Default::default(),
        survey: Arc::new(Default::default()),
    };
    let app = leakwatch_api::router_with(state, leakwatch_console::routes(cfg));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    World {
        base,
        store,
        dispatcher,
    }
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// A logged-in client and its CSRF token; `None` when the login is refused.
async fn try_login(base: &str, user: &str, password: &str) -> Option<(reqwest::Client, String)> {
    let c = client();
    let r = c
        .post(format!("{base}/login"))
        .json(&json!({ "username": user, "password": password }))
        .send()
        .await
        .unwrap();
    if r.status() != 200 {
        return None;
    }
    let v: Value = r.json().await.unwrap();
    Some((c, v["csrf_token"].as_str().unwrap().to_owned()))
}

async fn login(base: &str, user: &str) -> (reqwest::Client, String) {
    try_login(base, user, PASSWORD)
        .await
        .unwrap_or_else(|| panic!("login {user}"))
}

async fn get(c: &reqwest::Client, url: String) -> (u16, String) {
    let r = c.get(url).send().await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

/// A district D1: a station and two customers (M-2 never read), a pressure point;
/// the station takes 1 m³ each hour, M-1 (pushing every 6 h) 0.9 m³ an hour: 10 %
/// unaccounted for. M-1 has a low battery, a closed valve, an alert and an order.
async fn seed(w: &World) -> (i64, i64) {
    let now = chrono::Utc::now();
    let meters: Vec<_> = [
        ("S-1", "station", 43.760, 11.240),
        ("M-1", "customer", 43.770, 11.250),
        ("M-2", "customer", 43.771, 11.253),
        ("P-1", "pressure", 43.765, 11.245),
        ("M-9", "customer", 45.0, 9.0),
    ]
    .into_iter()
    .map(|(id, kind, lat, lon)| {
        MeterRecord {
            meter_id: id.into(),
            district_id: if id == "M-9" { "D9" } else { "D1" }.into(),
            kind: kind.into(),
            lat,
            lon,
            report_every_h: Some(if kind == "station" { 1 } else { 6 }),
            status: None,
            installed_at: None,
            max_flow_m3h: None,
        }
        .to_meter()
        .unwrap()
    })
    .collect();
    w.store.upsert_meters(&meters).await.unwrap();
    let start = now - chrono::Duration::hours(72);
    let mut readings = Vec::new();
    for h in 0..=72 {
        let t = start + chrono::Duration::hours(h);
        let r = |m: &str, vol: f64| Reading {
            meter: MeterId::parse(m).unwrap(),
            t,
            vol,
            temp: Some(11.5),
            flow_max: None,
            pressure: None,
        };
        readings.push(r("S-1", 5000.0 + h as f64));
        if h % 6 == 0 {
            readings.push(r("M-1", 100.0 + 0.9 * h as f64));
        }
    }
    w.store.insert_readings(&readings).await.unwrap();
    let m1 = MeterId::parse("M-1").unwrap();
    w.store
        .insert_events(&[
            MeterEvent {
                meter: m1.clone(),
                t: now - chrono::Duration::hours(30),
                code: EventCode::Named("battery_low".into()),
            },
            MeterEvent {
                meter: m1.clone(),
                t: now - chrono::Duration::hours(20),
                code: EventCode::Named("valve_closed".into()),
            },
        ])
        .await
        .unwrap();
    let (alert, _) = w
        .store
        .record_finding(&Finding {
            kind: AlertKind::ContinuousFlow,
            severity: Severity::Warning,
            meter_id: Some(m1.clone()),
            district_id: Some(DistrictId::parse("D1").unwrap()),
            detected_at: now - chrono::Duration::hours(2),
            evidence: Evidence {
                rule: "no zero-flow hour in 24 h".into(),
                observed: 0.9,
                expected: Some(0.0),
                threshold: 0.02,
                unit: "m3/h".into(),
                window_start: now - chrono::Duration::hours(26),
                window_end: now - chrono::Duration::hours(2),
                explanation: "Gas flowed every hour for 24 h".into(),
                known: None,
            },
        })
        .await
        .unwrap();
    let order = w
        .dispatcher
        .create(&NewWorkOrder {
            kind: WorkOrderKind::MeterCheck,
            priority: Priority::Normal,
            alert_id: None,
            meter_id: Some(m1),
            district_id: Some(DistrictId::parse("D1").unwrap()),
            location: GeoPoint::new(43.770, 11.250).unwrap(),
            summary: "replace the battery".into(),
            due_at: None,
            actor: "t".into(),
            parent_id: None,
        })
        .await
        .unwrap();
    (alert.id, order.id)
}

#[tokio::test]
async fn the_meter_page_shows_registry_state_chart_alerts_and_orders() {
    let w = start(Default::default()).await;
    let (alert, order) = seed(&w).await;
    let (eng, _) = login(&w.base, "eng").await;
    let (st, page) = get(&eng, format!("{}/console/meters/M-1", w.base)).await;
    assert_eq!(st, 200, "{page}");
    let wants: Vec<String> = vec![
        "id=\"meter-id\">M-1<".into(),
        "href=\"/console/districts/D1\"".into(),
        "id=\"battery\">low since".into(),
        "id=\"valve\">closed since".into(),
        format!("href=\"/console/alerts/{alert}\""),
        format!("#{order}"),
        "replace the battery".into(),
        "battery_low".into(),
        "11.5 °C".into(),
        "id=\"meter-chart\"".into(),
    ];
    for want in &wants {
        assert!(page.contains(want.as_str()), "{want} missing");
    }
    // The day: 24 hourly bars of 0.9 m³ (interpolated between 6-hourly pushes).
    let day = page.matches("<rect class=\"bar\"").count();
    assert!((23..=25).contains(&day), "{day} bars");
    let total = |p: &str| -> f64 {
        let i = p.find("id=\"range-total\">").unwrap() + "id=\"range-total\">".len();
        p[i..].split(' ').next().unwrap().parse().unwrap()
    };
    assert!((total(&page) - 0.9 * 24.0).abs() < 1.0, "{}", total(&page));
    // The week and 90 days reach back to the first reading: 72 h of 0.9 m³.
    for (range, bars) in [("week", 72..=73), ("90d", 3..=5)] {
        let (st, p) = get(&eng, format!("{}/console/meters/M-1?range={range}", w.base)).await;
        assert_eq!(st, 200);
        assert!(
            (total(&p) - 0.9 * 72.0).abs() < 0.2,
            "{range}: {}",
            total(&p)
        );
        let n = p.matches("<rect class=\"bar\"").count();
        assert!(bars.contains(&n), "{range}: {n} bars");
        assert!(
            p.contains(&format!("id=\"range-{range}\" class=\"here\""))
                || p.contains(&format!("class=\"here\" id=\"range-{range}\"")),
            "{range} marked"
        );
    }
    // A meter never read: no chart data, said so.
    let (_, p) = get(&eng, format!("{}/console/meters/M-2", w.base)).await;
    assert!(p.contains("none yet") && p.contains("No readings in this period"));
    assert_eq!(
        get(&eng, format!("{}/console/meters/NOPE", w.base)).await.0,
        404
    );
    // Linked from the inbox and the alert detail.
    let (_, inbox) = get(&eng, format!("{}/console/alerts", w.base)).await;
    assert!(inbox.contains("href=\"/console/meters/M-1\""));
    let (_, detail) = get(&eng, format!("{}/console/alerts/{alert}", w.base)).await;
    assert!(detail.contains("id=\"meter-link\" href=\"/console/meters/M-1\""));
    // Who may see it.
    let (disp, _) = login(&w.base, "disp").await;
    let (crew, _) = login(&w.base, "crew1").await;
    assert_eq!(
        get(&disp, format!("{}/console/meters/M-1", w.base)).await.0,
        200
    );
    assert_eq!(
        get(&crew, format!("{}/console/meters/M-1", w.base)).await.0,
        403
    );
    let r = client()
        .get(format!("{}/console/meters/M-1", w.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
}

#[tokio::test]
async fn the_district_page_balances_inflow_against_customers() {
    let w = start(Default::default()).await;
    seed(&w).await;
    let (eng, _) = login(&w.base, "eng").await;
    let (st, list) = get(&eng, format!("{}/console/districts", w.base)).await;
    assert_eq!(st, 200);
    assert!(list.contains("href=\"/console/districts/D1\"") && list.contains("D9"));
    let (st, p) = get(&eng, format!("{}/console/districts/D1", w.base)).await;
    assert_eq!(st, 200, "{p}");
    assert!(p.contains("id=\"balance-chart\"") && p.contains("id=\"ufg-chart\""));
    // 1 m³ in, 0.9 m³ at customers each hour: 10 % unaccounted for.
    assert!(p.contains("id=\"ufg-total\">10.0 %<"), "ufg");
    assert!(p.contains("class=\"line-customers\""));
    // M-2 has never pushed: silent. The others are fresh.
    let silent = &p[p.find("id=\"silent-meters\"").expect("silent list")..];
    let silent = &silent[..silent.find("</ul>").unwrap()];
    assert!(silent.contains("M-2") && !silent.contains("M-1") && !silent.contains("S-1"));
    // Without running detectors, the page says so instead of guessing.
    assert!(p.contains("detection is not running"));
    for d in [7, 30] {
        assert_eq!(
            get(&eng, format!("{}/console/districts/D1?days={d}", w.base))
                .await
                .0,
            200
        );
    }
    assert_eq!(
        get(&eng, format!("{}/console/districts/D77", w.base))
            .await
            .0,
        404
    );
    let (crew, _) = login(&w.base, "crew1").await;
    assert_eq!(
        get(&crew, format!("{}/console/districts/D1", w.base))
            .await
            .0,
        403
    );
    assert_eq!(
        get(&crew, format!("{}/console/districts", w.base)).await.0,
        403
    );
}

#[tokio::test]
async fn the_map_shows_alerts_orders_and_crews_with_or_without_tiles() {
    let w = start(Default::default()).await;
    let (_, order) = seed(&w).await;
    let (disp, _) = login(&w.base, "disp").await;
    let r = disp
        .get(format!("{}/console/map", w.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let csp = r.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(csp.contains("img-src 'self' data:;"), "{csp}");
    let p = r.text().await.unwrap();
    assert!(p.contains("<a class=\"pt-alert\" href=\"/console/meters/M-1\""));
    assert!(p.contains(&format!("href=\"/console/board#order-{order}\"")));
    assert!(p.contains("<a class=\"pt-crew\" href=\"/console/board?crew=C-2\""));
    assert!(p.contains("<a class=\"pt-crew home\" href=\"/console/board?crew=C-1\""));
    assert!(p.contains("id=\"map-scale\"") && !p.contains("<image"));
    assert!(!p.contains("<script>"), "no inline script");
    // Another district's map leaves D1's alert and order out, but not the crews.
    let (_, p) = get(&disp, format!("{}/console/map?district=D9", w.base)).await;
    assert!(!p.contains("pt-alert\" href") && !p.contains("#order-") && p.contains("pt-crew"));
    let (crew, _) = login(&w.base, "crew1").await;
    assert_eq!(get(&crew, format!("{}/console/map", w.base)).await.0, 403);

    // With a tile server: tiles from it, and the CSP lets its images in (only).
    let w2 = start(leakwatch_console::ConsoleConfig {
        tile_url: Some("https://tiles.example.org/{z}/{x}/{y}.png".into()),
        ..Default::default()
    })
    .await;
    seed(&w2).await;
    let (eng, _) = login(&w2.base, "eng").await;
    let r = eng
        .get(format!("{}/console/map", w2.base))
        .send()
        .await
        .unwrap();
    let csp = r.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        csp.contains("img-src 'self' data: https://tiles.example.org;"),
        "{csp}"
    );
    assert!(csp.contains("script-src 'self';"));
    let p = r.text().await.unwrap();
    assert!(p.contains("<image class=\"tile\" href=\"https://tiles.example.org/"));
}

#[tokio::test]
async fn admins_manage_accounts_and_tokens_from_the_console() {
    let w = start(Default::default()).await;
    let (adm, csrf_owned) = login(&w.base, "adm").await;
    let csrf = csrf_owned.as_str();
    let (eng, eng_csrf) = login(&w.base, "eng").await;
    let post = |c: &reqwest::Client, path: &str, form: Vec<(&str, &str)>| {
        let (c, url, origin) = (c.clone(), format!("{}{path}", w.base), w.base.clone());
        let form: Vec<(String, String)> = form
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        async move {
            let r = c
                .post(url)
                .header("origin", origin)
                .form(&form)
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            let location = r
                .headers()
                .get("location")
                .map(|l| l.to_str().unwrap().to_owned())
                .unwrap_or_default();
            (status, location, r.text().await.unwrap())
        }
    };
    assert_eq!(get(&adm, format!("{}/console/admin", w.base)).await.0, 200);
    for c in [&eng] {
        assert_eq!(get(c, format!("{}/console/admin", w.base)).await.0, 403);
    }
    let new = vec![
        ("_csrf", csrf),
        ("name", "nina"),
        ("role", "dispatcher"),
        ("crew", ""),
        ("password", "nina's long password"),
    ];
    // Engineers may not; without the CSRF token nobody may.
    let mut as_eng = new.clone();
    as_eng[0].1 = eng_csrf.as_str();
    assert_eq!(post(&eng, "/console/admin/accounts", as_eng).await.0, 403);
    assert_eq!(
        post(&adm, "/console/admin/accounts", new[1..].to_vec())
            .await
            .0,
        403
    );
    let (st, loc, _) = post(&adm, "/console/admin/accounts", new.clone()).await;
    assert_eq!(
        (
            st,
            loc.starts_with("/console/admin?msg=account%20nina%20created")
        ),
        (303, true),
        "{loc}"
    );
    let (nina, _) = try_login(&w.base, "nina", "nina's long password")
        .await
        .expect("the new account logs in");
    // A taken name and a short password are refused on the page.
    let (_, loc, _) = post(&adm, "/console/admin/accounts", new.clone()).await;
    assert!(loc.contains("error=") && loc.contains("exists"), "{loc}");
    let mut short = new.clone();
    short[1].1 = "otto";
    short[4].1 = "short";
    let (_, loc, _) = post(&adm, "/console/admin/accounts", short).await;
    assert!(
        loc.contains("error=") && loc.contains("10%20characters"),
        "{loc}"
    );
    // A crew member needs a crew.
    let crewless = vec![
        ("_csrf", csrf),
        ("name", "carl"),
        ("role", "crew"),
        ("crew", ""),
        ("password", "carl's long password"),
    ];
    let (_, loc, _) = post(&adm, "/console/admin/accounts", crewless).await;
    assert!(loc.contains("needs%20a%20crew"), "{loc}");

    // Reset the password: nina's session ends, the new password works.
    let (st, _, _) = post(
        &adm,
        "/console/admin/accounts/nina/password",
        vec![("_csrf", csrf), ("password", "nina's new password")],
    )
    .await;
    assert_eq!(st, 303);
    assert_eq!(get(&nina, format!("{}/api/v1/me", w.base)).await.0, 401);
    assert!(
        try_login(&w.base, "nina", "nina's long password")
            .await
            .is_none()
    );
    assert!(
        try_login(&w.base, "nina", "nina's new password")
            .await
            .is_some()
    );
    // Disable: no login; enable: login again. Not oneself.
    assert_eq!(
        post(
            &adm,
            "/console/admin/accounts/nina/disable",
            vec![("_csrf", csrf)]
        )
        .await
        .0,
        303
    );
    assert!(
        try_login(&w.base, "nina", "nina's new password")
            .await
            .is_none()
    );
    assert_eq!(
        post(
            &adm,
            "/console/admin/accounts/nina/enable",
            vec![("_csrf", csrf)]
        )
        .await
        .0,
        303
    );
    assert!(
        try_login(&w.base, "nina", "nina's new password")
            .await
            .is_some()
    );
    let (_, loc, _) = post(
        &adm,
        "/console/admin/accounts/adm/disable",
        vec![("_csrf", csrf)],
    )
    .await;
    assert!(loc.contains("your%20own%20account"), "{loc}");

    // A token: the secret on the answer page (not in a URL), uncached; it works
    // as a bearer with its role; revoked, it does not.
    let r = adm
        .post(format!("{}/console/admin/tokens", w.base))
        .header("origin", &w.base)
        .form(&[
            ("_csrf", csrf),
            ("name", "scada"),
            ("role", "engineer"),
            ("crew", ""),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    assert_eq!(r.headers()["cache-control"], "no-store");
    let page = r.text().await.unwrap();
    let i =
        page.find("id=\"token-secret\">").expect("the secret shown") + "id=\"token-secret\">".len();
    let secret = page[i..].split('<').next().unwrap().to_owned();
    assert!(secret.starts_with("lw_"));
    let me = client()
        .get(format!("{}/api/v1/me", w.base))
        .bearer_auth(&secret)
        .send()
        .await
        .unwrap();
    let me: Value = me.json().await.unwrap();
    assert_eq!(
        (me["name"].as_str(), me["role"].as_str()),
        (Some("scada"), Some("engineer"))
    );
    let (_, again) = get(&adm, format!("{}/console/admin", w.base)).await;
    assert!(!again.contains(&secret), "the secret is shown once");
    assert_eq!(
        post(
            &adm,
            "/console/admin/tokens/scada/revoke",
            vec![("_csrf", csrf)]
        )
        .await
        .0,
        303
    );
    let r = client()
        .get(format!("{}/api/v1/me", w.base))
        .bearer_auth(&secret)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    // The audit names the admin, from the session.
    let audit = w.store.account_store().auth_audit(50).await.unwrap();
    for action in [
        "account_created",
        "password_changed",
        "account_disabled",
        "account_enabled",
        "token_created",
        "token_revoked",
    ] {
        assert!(
            audit.iter().any(|r| r.action == action && r.actor == "adm"),
            "{action} by adm"
        );
    }
    let (_, p) = get(&adm, format!("{}/console/admin", w.base)).await;
    assert!(p.contains("id=\"account-nina\"") && p.contains("id=\"token-scada\""));
    assert!(p.contains("revoked "));
}
