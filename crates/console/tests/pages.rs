//! The console's pages per role over real HTTP (no browser): who may see and do
//! what, CSRF on every state-changing form, login redirects.

use leakwatch_api::AppState;
use leakwatch_api::auth::Role;
use leakwatch_core::{CrewId, GeoPoint, OrderAction, Priority, WorkOrderKind};
use leakwatch_dispatch::{DispatchConfig, Dispatcher};
use leakwatch_store::{AccountStore, NewAccount, NewWorkOrder, Store};
use serde_json::{Value, json};
use std::sync::Arc;

const PASSWORD: &str = "a long enough test password";

async fn start() -> (String, Store, Dispatcher) {
    let store = Store::connect("sqlite::memory:").await.unwrap();
    let dispatcher = Dispatcher::new(store.clone(), DispatchConfig::default());
    let crew = leakwatch_core::Crew {
        id: CrewId::parse("C-1").unwrap(),
        name: "one".into(),
        skills: vec!["inspection".into()],
        home: GeoPoint::new(43.77, 11.25).unwrap(),
        position: None,
        position_at: None,
        last_job_place: None,
        shifts: None,
        on_shift: true,
    };
    store.upsert_crews(&[crew]).await.unwrap();
    let hash = leakwatch_api::secret::hash_password(PASSWORD).unwrap();
    let c1 = CrewId::parse("C-1").unwrap();
    for (name, role, crew) in [
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
    let app = leakwatch_api::router_with(
        state,
        leakwatch_console::routes(leakwatch_console::ConsoleConfig::default()),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (base, store, dispatcher)
}

/// A logged-in client (cookie jar, no redirects followed) and its CSRF token.
async fn login(base: &str, user: &str) -> (reqwest::Client, String) {
    let c = reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let r = c
        .post(format!("{base}/login"))
        .json(&json!({ "username": user, "password": PASSWORD }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "login {user}");
    let v: Value = r.json().await.unwrap();
    (c, v["csrf_token"].as_str().unwrap().to_owned())
}

#[tokio::test]
async fn each_role_sees_its_pages_and_forms_need_the_csrf_token() {
    let (base, _store, d) = start().await;
    // Nobody logged in: pages send to the login page with the way back.
    let anon = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let r = anon
        .get(format!("{base}/console/board"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()["location"], "/login?next=/console/board");
    let r = anon
        .get(format!("{base}/crew/api/jobs"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(
        anon.get(format!("{base}/login"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );

    let (eng, eng_csrf) = login(&base, "eng").await;
    let (disp, disp_csrf) = login(&base, "disp").await;
    let (crew, _) = login(&base, "crew1").await;
    let get = |c: &reqwest::Client, p: &str| {
        let (c, url) = (c.clone(), format!("{base}{p}"));
        async move { c.get(url).send().await.unwrap().status().as_u16() }
    };
    // Start pages by role.
    for (c, start) in [
        (&eng, "/console/alerts"),
        (&disp, "/console/board"),
        (&crew, "/crew"),
    ] {
        let r = c.get(format!("{base}/")).send().await.unwrap();
        assert_eq!(r.headers()["location"], start);
    }
    // Crew members see only their app.
    assert_eq!(get(&crew, "/console/alerts").await, 403);
    assert_eq!(get(&crew, "/console/board").await, 403);
    assert_eq!(get(&crew, "/crew").await, 200);
    assert_eq!(get(&crew, "/crew/api/jobs").await, 200);
    // Engineers and dispatchers do not use the crew app.
    assert_eq!(get(&eng, "/crew").await, 403);
    assert_eq!(get(&disp, "/crew/api/jobs").await, 403);
    assert_eq!(get(&eng, "/console/board").await, 200);
    assert_eq!(get(&disp, "/console/alerts").await, 200);

    let order = d
        .create(&NewWorkOrder {
            kind: WorkOrderKind::PlannedInspection,
            priority: Priority::Normal,
            alert_id: None,
            meter_id: None,
            district_id: None,
            location: GeoPoint::new(43.77, 11.25).unwrap(),
            summary: "look".into(),
            due_at: None,
            actor: "t".into(),
            parent_id: None,
        })
        .await
        .unwrap();
    let assign = |c: &reqwest::Client, csrf: Option<&str>| {
        let mut form = vec![("crew_id", "C-1".to_owned())];
        if let Some(t) = csrf {
            form.push(("_csrf", t.to_owned()));
        }
        let (c, url, origin) = (
            c.clone(),
            format!("{base}/console/orders/{}/assign", order.id),
            base.clone(),
        );
        async move {
            c.post(url)
                .header("origin", origin)
                .form(&form)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    // An engineer may not assign; a dispatcher without the token is refused; with it, done.
    assert_eq!(assign(&eng, Some(&eng_csrf)).await, 403);
    assert_eq!(assign(&disp, None).await, 403);
    assert_eq!(assign(&disp, Some("forged")).await, 403);
    assert_eq!(assign(&disp, Some(&disp_csrf)).await, 303);
    let o = d
        .transition(order.id, OrderAction::Unassign, "t", None)
        .await
        .unwrap();
    assert!(o.crew_id.is_none());
}

/// The leak survey page (issue 16): engineers and dispatchers see coverage per class,
/// the program and the CSV link; a crew member may not; nobody logged in goes to the
/// login page.
#[tokio::test]
async fn the_survey_page_shows_coverage_and_program_to_the_control_room_only() {
    use leakwatch_store::NetworkStore;
    let (base, store, _d) = start().await;
    let items: Vec<leakwatch_survey::geojson::Imported> = (0..4)
        .map(|i| leakwatch_survey::geojson::Imported {
            segment: leakwatch_survey::Segment {
                id: format!("D1-S{i}"),
                district: leakwatch_core::DistrictId::parse("D1").unwrap(),
                geometry: vec![
                    GeoPoint::new(43.77 + f64::from(i) * 0.001, 11.25).unwrap(),
                    GeoPoint::new(43.77 + f64::from(i) * 0.001, 11.252).unwrap(),
                ],
                pressure_class: "it_bp".into(),
                material: leakwatch_survey::Material::CastIron,
                diameter_mm: 100,
                year_laid: 1950,
                added_on: chrono::NaiveDate::from_ymd_opt(2000, 1, 1).unwrap(),
            },
            last_surveyed: None,
        })
        .collect();
    store
        .network_store()
        .import_network(&items, chrono::Utc::now())
        .await
        .unwrap();
    for user in ["eng", "disp"] {
        let (c, _) = login(&base, user).await;
        let r = c
            .get(format!("{base}/console/survey?on=2026-11-02&days=2"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{user}");
        let html = r.text().await.unwrap();
        assert!(html.contains("id=\"coverage\""), "{html}");
        assert!(html.contains("data-class=\"it_bp\""), "{html}");
        assert!(
            html.contains("/api/v1/survey/coverage.csv?on=2026-11-02"),
            "{html}"
        );
        assert!(html.contains("data-segment=\"D1-S0\""), "{html}");
        assert!(html.contains("unconfirmed"), "{html}");
    }
    let (crew, _) = login(&base, "crew1").await;
    let r = crew
        .get(format!("{base}/console/survey"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let anon = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let r = anon
        .get(format!("{base}/console/survey"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
}
