//! The console in a real headless Chromium (Debian's `chromium` and `chromium-driver`),
//! driven over WebDriver with fantoccini: issue 12's proof flow end to end.
//!
//! One chromedriver for the suite; one browser session per person. The crew's phone
//! (390x844) talks to the service through a TCP proxy that the test closes to take
//! the phone offline (connections cut and refused, not the browser's emulation).
//!
//! Screenshots of the main pages, desktop and phone, go to `$LEAKWATCH_SCREENSHOTS`
//! (default: `<temp dir>/leakwatch-screenshots`).
//!
//! Without chromedriver the test is skipped, except in CI (`CI=true`), where it fails.
//!
//! Everyone logs in through the login page (accounts with argon2 hashes, session
//! cookies, CSRF tokens: the API's authentication), as in production.

use axum::Router;
use fantoccini::{Client, ClientBuilder, Locator};
use leakwatch_api::AppState;
use leakwatch_api::auth::Role;
use leakwatch_core::{
    AlertKind, AlertStatus, Crew, CrewId, DistrictId, Evidence, Finding, GeoPoint, MeterId,
    MeterRecord, Reading, Severity, WorkOrderStatus,
};
use leakwatch_dispatch::{DispatchConfig, Dispatcher};
use leakwatch_store::{AccountStore, NewAccount, Store};
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tokio::net::{TcpListener, TcpStream};

const PASSWORD: &str = "correct horse battery staple";

/// Logs in through the login page; returns the page it lands on.
async fn login(c: &Client, base: &str, user: &str) -> String {
    c.goto(&format!("{base}/login")).await.unwrap();
    c.find(Locator::Css("#username"))
        .await
        .unwrap()
        .send_keys(user)
        .await
        .unwrap();
    c.find(Locator::Css("#password"))
        .await
        .unwrap()
        .send_keys(PASSWORD)
        .await
        .unwrap();
    click(c, "#login-button").await;
    // The click returns before the navigation ends: wait for it to leave the form.
    let started = Instant::now();
    let mut url = c.current_url().await.unwrap();
    while url.path() == "/login" && started.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(100)).await;
        url = c.current_url().await.unwrap();
    }
    url.path().to_owned()
}

/// The whole browser suite must stay within this on 2 cores.
const BUDGET: Duration = Duration::from_secs(600);

/// The browser tests run one at a time (2 cores: one Chromium at a time).
static BROWSERS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn chromedriver_binary() -> Option<PathBuf> {
    ["/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}

fn chromium_binary() -> Option<PathBuf> {
    ["/usr/bin/chromium", "/usr/lib/chromium/chromium"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}

/// A chromedriver of the test's own, killed when dropped.
struct Driver {
    child: Child,
    url: String,
    chromium: PathBuf,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Driver {
    /// `None` (skip) when chromium is not installed, outside CI.
    fn start() -> Option<Driver> {
        let (Some(driver), Some(chromium)) = (chromedriver_binary(), chromium_binary()) else {
            if std::env::var("CI").is_ok_and(|v| v == "true" || v == "1") {
                panic!(
                    "chromium and chromium-driver are not installed: the browser tests must run in CI (.ci/run installs them)"
                );
            }
            eprintln!(
                "SKIPPED: chromium / chromedriver not installed (apt-get install chromium chromium-driver)"
            );
            return None;
        };
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(driver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "chromedriver did not start"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Some(Driver {
            child,
            url: format!("http://127.0.0.1:{port}"),
            chromium,
        })
    }

    /// A new browser: a desktop window, or a 390x844 phone.
    async fn session(&self, phone: bool) -> Client {
        let mut args = vec![
            "--headless=new".to_owned(),
            "--no-sandbox".to_owned(),
            "--disable-dev-shm-usage".to_owned(),
            "--disable-gpu".to_owned(),
            "--no-first-run".to_owned(),
            "--disable-extensions".to_owned(),
        ];
        let mut opts = json!({ "binary": self.chromium, "args": [] });
        if phone {
            args.push("--window-size=390,844".into());
            opts["mobileEmulation"] = json!({
                "deviceMetrics": { "width": 390, "height": 844, "pixelRatio": 1.0, "touch": true }
            });
        } else {
            args.push("--window-size=1366,900".into());
        }
        opts["args"] = json!(args);
        let mut caps = serde_json::Map::new();
        caps.insert("goog:chromeOptions".into(), opts);
        ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps)
            .connect(&self.url)
            .await
            .expect("a browser session")
    }
}

/// A TCP proxy in front of the service that the test can cut (every connection
/// dropped, new ones closed at once) and restore.
struct Proxy {
    port: u16,
    online: Arc<AtomicBool>,
    cut: tokio::sync::watch::Sender<u64>,
}

impl Proxy {
    async fn start(target: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let online = Arc::new(AtomicBool::new(true));
        let (cut, _) = tokio::sync::watch::channel(0u64);
        let (on, cut_tx) = (online.clone(), cut.clone());
        tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    return;
                };
                if !on.load(Ordering::SeqCst) {
                    drop(inbound);
                    continue;
                }
                let mut rx = cut_tx.subscribe();
                tokio::spawn(async move {
                    let Ok(mut out) = TcpStream::connect(target).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut out) => {}
                        _ = rx.changed() => {}
                    }
                });
            }
        });
        Proxy { port, online, cut }
    }

    fn set_online(&self, on: bool) {
        self.online.store(on, Ordering::SeqCst);
        if !on {
            self.cut.send_modify(|g| *g += 1);
        }
    }
}

/// The service under test: store, dispatcher, the API with the console.
struct World {
    store: Store,
    dispatcher: Dispatcher,
    addr: SocketAddr,
    _db: tempdir::Guard,
}

mod tempdir {
    /// Removes the SQLite file at the end.
    pub struct Guard(pub std::path::PathBuf);
    impl Drop for Guard {
        fn drop(&mut self) {
            for ext in ["", "-wal", "-shm"] {
                let _ = std::fs::remove_file(format!("{}{ext}", self.0.display()));
            }
        }
    }
}

impl World {
    async fn start() -> World {
        let path = std::env::temp_dir().join(format!(
            "lw-console-browser-{}-{}.db",
            std::process::id(),
            chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default()
        ));
        let store = Store::connect(&format!("sqlite://{}", path.display()))
            .await
            .expect("store");
        let dispatcher = Dispatcher::new(store.clone(), DispatchConfig::default());
        let state = AppState {
            store: store.clone(),
            dispatcher: dispatcher.clone(),
            metrics: None,
            broker_up: Arc::new(|| true),
            crews_up: Arc::new(|| true),
            detection: Arc::new(Default::default()),
            auth: Arc::new(leakwatch_api::authn::Auth::new(
                leakwatch_api::authn::AuthSettings::default(),
            )),
            limits: Default::default(),
            survey: Arc::new(Default::default()),
        };
        let pages = leakwatch_console::routes(leakwatch_console::ConsoleConfig::default());
        let app: Router = leakwatch_api::router_with(state, pages);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        World {
            store,
            dispatcher,
            addr,
            _db: tempdir::Guard(path),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://localhost:{}{path}", self.addr.port())
    }

    async fn seed(&self) {
        let meters: Vec<_> = [
            ("M-1", 43.7700, 11.2500),
            ("M-2", 43.7710, 11.2530),
            ("M-3", 43.7400, 11.2000),
        ]
        .into_iter()
        .map(|(id, lat, lon)| {
            MeterRecord {
                meter_id: id.into(),
                district_id: "D1".into(),
                kind: "customer".into(),
                lat,
                lon,
                report_every_h: None,
                status: None,
                installed_at: None,
                max_flow_m3h: None,
            }
            .to_meter()
            .unwrap()
        })
        .collect();
        self.store.upsert_meters(&meters).await.unwrap();
        let crew = |id: &str, lat: f64, lon: f64| Crew {
            id: CrewId::parse(id).unwrap(),
            name: format!("crew {id}"),
            skills: vec!["emergency".into(), "repair".into(), "inspection".into()],
            home: GeoPoint::new(lat, lon).unwrap(),
            position: None,
            position_at: None,
            last_job_place: None,
            shifts: None,
            on_shift: true,
        };
        self.store
            .upsert_crews(&[crew("C-A", 43.771, 11.251), crew("C-B", 43.80, 11.30)])
            .await
            .unwrap();
        // One account per role (crew members linked to their crews).
        let hash = leakwatch_api::secret::hash_password(PASSWORD).unwrap();
        let (ca, cb) = (CrewId::parse("C-A").unwrap(), CrewId::parse("C-B").unwrap());
        let accounts = self.store.account_store();
        for (name, role, crew) in [
            ("eva", Role::Engineer, None),
            ("dora", Role::Dispatcher, None),
            ("bruno", Role::Crew, Some(&cb)),
            ("alba", Role::Crew, Some(&ca)),
        ] {
            accounts
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
        // Three days of hourly readings on M-1: a quiet meter that stops going to
        // zero at night a day and a half ago.
        let now = chrono::Utc::now();
        let start = now - chrono::Duration::hours(72);
        let mut vol = 1000.0;
        let mut readings = Vec::new();
        for h in 0..72 {
            let t = start + chrono::Duration::hours(h);
            let leak = h >= 36;
            let hour = t.format("%H").to_string().parse::<u32>().unwrap();
            let usage = if (1..6).contains(&hour) { 0.0 } else { 0.08 };
            vol += usage + if leak { 0.05 } else { 0.0 };
            readings.push(Reading {
                meter: MeterId::parse("M-1").unwrap(),
                t,
                vol,
                temp: None,
                flow_max: None,
                pressure: None,
            });
        }
        self.store.insert_readings(&readings).await.unwrap();
    }

    /// An alert as the detectors record it.
    async fn raise(&self, meter: &str, hours_ago: i64) -> i64 {
        let now = chrono::Utc::now();
        let detected = now - chrono::Duration::hours(hours_ago);
        let (a, _) = self
            .store
            .record_finding(&Finding {
                kind: AlertKind::ContinuousFlow,
                severity: Severity::Warning,
                meter_id: Some(MeterId::parse(meter).unwrap()),
                district_id: Some(DistrictId::parse("D1").unwrap()),
                detected_at: detected,
                evidence: Evidence {
                    rule: "no zero-flow hour in 24 h".into(),
                    observed: 0.05,
                    expected: Some(0.0),
                    threshold: 0.02,
                    unit: "m3/h".into(),
                    window_start: detected - chrono::Duration::hours(24),
                    window_end: detected,
                    explanation: "Gas flowed every hour for 24 h; the lowest hour was 0.05 m3"
                        .into(),
                    known: None,
                },
            })
            .await
            .unwrap();
        a.id
    }

    async fn order_status(&self, id: i64) -> WorkOrderStatus {
        self.store.get_work_order(id).await.unwrap().unwrap().status
    }

    async fn steps(&self, id: i64, action: &str) -> usize {
        self.store
            .work_order_history(id)
            .await
            .unwrap()
            .iter()
            .filter(|t| t.action == action)
            .count()
    }
}

struct Shots {
    dir: PathBuf,
}

impl Shots {
    fn new() -> Shots {
        let dir = std::env::var_os("LEAKWATCH_SCREENSHOTS")
            .map(PathBuf::from)
            .unwrap_or_else(|| std::env::temp_dir().join("leakwatch-screenshots"));
        std::fs::create_dir_all(&dir).unwrap();
        Shots { dir }
    }

    async fn take(&self, c: &Client, name: &str) {
        let png = c.screenshot().await.expect("screenshot");
        assert!(png.starts_with(b"\x89PNG"), "{name} is a PNG");
        std::fs::write(self.dir.join(format!("{name}.png")), png).unwrap();
    }

    /// The page as it is, then at 390x844.
    async fn both(&self, c: &Client, name: &str) {
        self.take(c, &format!("{name}-desktop")).await;
        c.set_window_size(390, 844).await.unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        self.take(c, &format!("{name}-phone")).await;
        c.set_window_size(1366, 900).await.unwrap();
    }
}

async fn wait_until<F, Fut>(what: &str, timeout: Duration, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = Instant::now();
    while !f().await {
        assert!(started.elapsed() < timeout, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
}

/// Waits until the element `css` holds `needle` (the page may still be the one
/// before the last click, or re-rendering).
async fn wait_text(c: &Client, css: &str, needle: &str) {
    let started = Instant::now();
    loop {
        let got = match c.find(Locator::Css(css)).await {
            Ok(e) => e.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        };
        if got.contains(needle) {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "{css} never showed {needle:?}; last: {got:?}"
        );
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
}

/// Types `keys` into the field `css`, again from empty when the page re-rendered the
/// field in between (the phone app re-renders on each refresh).
async fn type_into(c: &Client, css: &str, keys: &str) {
    let started = Instant::now();
    loop {
        let got = match c.find(Locator::Css(css)).await {
            Ok(e) => match e.clear().await {
                Ok(()) => e.send_keys(keys).await,
                Err(err) => Err(err),
            },
            Err(err) => Err(err),
        };
        match got {
            Ok(()) => return,
            Err(e) if started.elapsed() > Duration::from_secs(10) => panic!("type into {css}: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(150)).await,
        }
    }
}

/// The text of the element `css`, waiting for it; retried when the page re-rendered
/// it in between (the phone app re-renders on each refresh).
async fn text(c: &Client, css: &str) -> String {
    let started = Instant::now();
    loop {
        let got = match c
            .wait()
            .at_most(Duration::from_secs(10))
            .for_element(Locator::Css(css))
            .await
        {
            Ok(e) => e.text().await.map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        match got {
            Ok(t) => return t,
            Err(e) if started.elapsed() > Duration::from_secs(10) => panic!("{css}: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

async fn click(c: &Client, css: &str) {
    let started = Instant::now();
    loop {
        let got = match c
            .wait()
            .at_most(Duration::from_secs(10))
            .for_element(Locator::Css(css))
            .await
        {
            Ok(e) => e.click().await.map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        match got {
            Ok(()) => return,
            Err(e) if started.elapsed() > Duration::from_secs(10) => panic!("click {css}: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

async fn exec(c: &Client, js: &str, args: Vec<Value>) -> Value {
    c.execute(js, args).await.expect(js)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_proof_flow_in_a_real_browser() {
    let _one_at_a_time = BROWSERS.lock().await;
    let Some(driver) = Driver::start() else {
        return;
    };
    let started = Instant::now();
    let shots = Shots::new();
    let w = World::start().await;
    w.seed().await;
    let proxy = Proxy::start(w.addr).await;
    let phone_url = |p: &str| format!("http://localhost:{}{p}", proxy.port);

    // Everyone logs in; each lands on their own start page.
    let (eng, disp, crew_b, crew_a) = tokio::join!(
        driver.session(false),
        driver.session(false),
        driver.session(true),
        driver.session(true)
    );
    // A wrong password is refused.
    eng.goto(&w.url("/login")).await.unwrap();
    shots.take(&eng, "login-desktop").await;
    eng.find(Locator::Css("#username"))
        .await
        .unwrap()
        .send_keys("eva")
        .await
        .unwrap();
    eng.find(Locator::Css("#password"))
        .await
        .unwrap()
        .send_keys("wrong")
        .await
        .unwrap();
    click(&eng, "#login-button").await;
    assert!(
        text(&eng, "#login-error")
            .await
            .contains("Wrong user name or password")
    );
    let base = w.url("");
    let phone = phone_url("");
    assert_eq!(login(&eng, &base, "eva").await, "/console/alerts");
    assert_eq!(login(&disp, &base, "dora").await, "/console/board");
    assert_eq!(login(&crew_b, &phone, "bruno").await, "/crew");
    assert_eq!(login(&crew_a, &base, "alba").await, "/crew");

    // A crew member may not open the engineers' pages.
    crew_a.goto(&w.url("/console/alerts")).await.unwrap();
    assert!(text(&crew_a, "#error-message").await.contains("may not"));

    // The engineer's inbox: a new alert arrives without reloading.
    eng.goto(&w.url("/console/alerts")).await.unwrap();
    let live = text(&eng, "#live").await;
    assert!(!live.is_empty());
    exec(&eng, "window.__noReload = 42; return true;", vec![]).await;
    // Wait until the event stream is open before raising the alert.
    wait_until("the live stream", Duration::from_secs(10), || async {
        text(&eng, "#live").await == "live"
            && exec(
                &eng,
                "return document.getElementById('live').className",
                vec![],
            )
            .await
            .as_str()
            .is_some_and(|c| c.contains("on"))
    })
    .await;
    let alert = w.raise("M-1", 2).await;
    let row = format!("tr[data-alert-id=\"{alert}\"]");
    eng.wait()
        .at_most(Duration::from_secs(15))
        .for_element(Locator::Css(&row))
        .await
        .expect("the new alert arrives in the open inbox");
    assert_eq!(
        exec(&eng, "return window.__noReload;", vec![]).await,
        json!(42),
        "the page was not reloaded"
    );
    shots.both(&eng, "engineer-inbox").await;

    // Opens it: the chart with the detection marked, the evidence in words.
    click(&eng, &format!("{row} a")).await;
    let bars = exec(
        &eng,
        "return document.querySelectorAll('#consumption-chart rect.bar').length;",
        vec![],
    )
    .await;
    assert!(bars.as_u64().unwrap() >= 24, "hourly bars: {bars}");
    eng.find(Locator::Css("#detected-marker"))
        .await
        .expect("detection marked");
    eng.find(Locator::Css("#consumption-chart line.threshold"))
        .await
        .expect("threshold drawn");
    assert!(
        text(&eng, "#evidence-words")
            .await
            .contains("threshold of 0.020 m3/h")
    );
    shots.both(&eng, "engineer-alert-detail").await;

    // A note, then escalate.
    eng.find(Locator::Css("#note-text"))
        .await
        .unwrap()
        .send_keys("night flow since Monday, customer away")
        .await
        .unwrap();
    click(&eng, "#add-note").await;
    // Each action reloads the page: wait for the new one rather than read the old.
    wait_text(&eng, "#history", "eva · note: night flow since Monday").await;
    click(&eng, "#escalate").await;
    wait_text(&eng, "#alert-status", "escalated").await;
    wait_text(&eng, "#history", "eva · escalate").await;
    let a = w.store.get_alert(alert).await.unwrap().unwrap();
    assert_eq!(a.status, AlertStatus::Escalated);
    let order = a.work_order_id.expect("an order for the escalated alert");

    // The dispatcher sees the order on the board and gives it to crew C-B.
    disp.goto(&w.url("/console/board")).await.unwrap();
    let card = format!("#order-{order}");
    disp.wait()
        .at_most(Duration::from_secs(10))
        .for_element(Locator::Css(&card))
        .await
        .expect("the order on the board");
    assert!(
        text(&disp, &format!("{card} .deadline"))
            .await
            .contains("by")
    );
    let select = disp
        .find(Locator::Css(&format!("{card} form.assign select")))
        .await
        .unwrap();
    select.select_by_value("C-B").await.unwrap();
    click(&disp, &format!("{card} .assign-button")).await;
    assert!(text(&disp, "#flash").await.contains("to crew C-B"));
    assert_eq!(text(&disp, &format!("{card} .crew")).await, "C-B");
    assert_eq!(
        w.store
            .get_work_order(order)
            .await
            .unwrap()
            .unwrap()
            .crew_id,
        Some(CrewId::parse("C-B").unwrap())
    );
    shots.both(&disp, "dispatcher-board").await;

    // Crew C-B's phone: accepts online.
    crew_b.goto(&phone_url("/crew")).await.unwrap();
    let step = format!("#step-{order}");
    crew_b
        .wait()
        .at_most(Duration::from_secs(15))
        .for_element(Locator::Css(&format!("{step}[data-action=\"accept\"]")))
        .await
        .expect("the job with its accept button");
    let geo = crew_b
        .find(Locator::Css(&format!("#job-{order} a.geo")))
        .await
        .unwrap()
        .attr("href")
        .await
        .unwrap()
        .unwrap();
    assert!(geo.starts_with("geo:43.77"), "{geo}");
    assert!(
        text(&crew_b, &format!("#job-{order} .suspicion"))
            .await
            .contains("Suspected continuous flow")
    );
    shots.take(&crew_b, "crew-jobs-phone").await;
    click(&crew_b, &step).await;
    wait_until(
        "accepted on the server",
        Duration::from_secs(10),
        || async { w.order_status(order).await == WorkOrderStatus::Accepted },
    )
    .await;
    // Let the service worker install (it caches the app) before going offline.
    wait_until("the service worker", Duration::from_secs(10), || async {
        exec(
            &crew_b,
            "return !!(navigator.serviceWorker && navigator.serviceWorker.controller);",
            vec![],
        )
        .await
            == json!(true)
    })
    .await;

    // Offline: the proxy cuts the phone off. En route and on site are queued.
    proxy.set_online(false);
    crew_b
        .wait()
        .at_most(Duration::from_secs(10))
        .for_element(Locator::Css(&format!(
            "{step}[data-action=\"start_travel\"]"
        )))
        .await
        .unwrap();
    click(&crew_b, &step).await;
    crew_b
        .wait()
        .at_most(Duration::from_secs(10))
        .for_element(Locator::Css(&format!("{step}[data-action=\"arrive\"]")))
        .await
        .unwrap();
    click(&crew_b, &step).await;
    wait_until("both steps pending", Duration::from_secs(10), || async {
        crew_b
            .find(Locator::Css(&format!("#pending-{order}")))
            .await
            .ok()
            .is_some()
            && text(&crew_b, &format!("#pending-{order}"))
                .await
                .contains("en route, on site")
    })
    .await;
    assert_eq!(text(&crew_b, "#net").await, "offline");
    assert!(
        text(&crew_b, "#queue-status")
            .await
            .contains("2 step(s) waiting")
    );
    shots.take(&crew_b, "crew-offline-pending-phone").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        w.order_status(order).await,
        WorkOrderStatus::Accepted,
        "nothing reached the server while offline"
    );

    // Back online: the queued steps arrive, in order, once each.
    proxy.set_online(true);
    wait_until("the queue sent", Duration::from_secs(20), || async {
        w.order_status(order).await == WorkOrderStatus::OnSite
    })
    .await;
    wait_until("no step pending", Duration::from_secs(10), || async {
        crew_b
            .find(Locator::Css(&format!("#pending-{order}")))
            .await
            .is_err()
    })
    .await;
    assert_eq!(w.steps(order, "start_travel").await, 1);
    assert_eq!(w.steps(order, "arrive").await, 1);
    // Replaying the same queued action twice gives one transition.
    let recorded = w.store.client_actions_of_order(order).await.unwrap();
    let arrive = recorded
        .iter()
        .find(|a| a.action == "arrive")
        .expect("arrive recorded");
    for _ in 0..2 {
        let r = crew_b
            .execute_async(
                "const [id, job, done] = arguments; \
                 window.lwCrewSend({client_action_id: id, job_id: job, action: 'arrive'}).then(done, (e) => done({error: String(e)}));",
                vec![json!(arrive.client_id), json!(order)],
            )
            .await
            .unwrap();
        assert_eq!(r["status"], json!(200), "{r}");
        assert_eq!(r["body"]["repeated"], json!(true), "{r}");
        assert_eq!(r["body"]["order"]["status"], json!("on_site"), "{r}");
    }
    assert_eq!(
        w.steps(order, "arrive").await,
        1,
        "one transition for the replays"
    );

    // Completes with findings: leak found, its class (deadline shown), %LEL, repaired.
    crew_b
        .wait()
        .at_most(Duration::from_secs(10))
        .for_element(Locator::Css(&format!("#finding-{order}")))
        .await
        .expect("the findings form");
    click(&crew_b, &format!("#leak-found-{order}")).await;
    let code = exec(
        &crew_b,
        "const s = document.getElementById(arguments[0]); s.selectedIndex = 1; \
         s.dispatchEvent(new Event('change')); return s.value;",
        vec![json!(format!("leak-class-{order}"))],
    )
    .await;
    let code = code.as_str().unwrap().to_owned();
    assert!(
        text(&crew_b, &format!("#class-deadline-{order}"))
            .await
            .contains("repair")
    );
    type_into(&crew_b, &format!("#lel-{order}"), "12, 35").await;
    click(&crew_b, &format!("#repaired-{order}")).await;
    shots.take(&crew_b, "crew-findings-phone").await;
    click(&crew_b, &step).await;
    wait_until("completed", Duration::from_secs(10), || async {
        w.order_status(order).await == WorkOrderStatus::Completed
    })
    .await;
    let done = w.store.get_work_order(order).await.unwrap().unwrap();
    let finding = done.finding.expect("the finding");
    assert!(finding.leak_found && finding.repaired);
    assert_eq!(finding.leak_class.as_deref(), Some(code.as_str()));
    assert_eq!(finding.gas_readings.len(), 2);

    // The engineer sees the alert confirmed.
    eng.goto(&w.url(&format!("/console/alerts/{alert}")))
        .await
        .unwrap();
    assert_eq!(text(&eng, "#alert-outcome").await, "confirmed_leak");

    // A crew member opening another crew's job is refused; a job taken away
    // meanwhile is a conflict said in words.
    let hand = |summary: &str| leakwatch_store::NewWorkOrder {
        kind: leakwatch_core::WorkOrderKind::PlannedInspection,
        priority: leakwatch_core::Priority::Normal,
        alert_id: None,
        meter_id: None,
        district_id: None,
        location: GeoPoint::new(43.75, 11.22).unwrap(),
        summary: summary.into(),
        due_at: None,
        actor: "dora".into(),
        parent_id: None,
    };
    let assign = |id: i64, crew: &str| {
        let d = w.dispatcher.clone();
        let crew = CrewId::parse(crew).unwrap();
        async move {
            d.transition(
                id,
                leakwatch_core::OrderAction::Assign { crew_id: crew },
                "dora",
                None,
            )
            .await
            .unwrap();
        }
    };
    let other_order = w
        .dispatcher
        .create(&hand("inspect the cabinet"))
        .await
        .unwrap();
    assign(other_order.id, "C-A").await;
    let moved = w
        .dispatcher
        .create(&hand("check the regulator"))
        .await
        .unwrap();
    assign(moved.id, "C-B").await;
    assign(moved.id, "C-A").await;
    crew_b
        .goto(&phone_url(&format!("/crew/api/jobs/{}", other_order.id)))
        .await
        .unwrap();
    let body = crew_b.source().await.unwrap();
    assert!(body.contains("not one of crew C-B's jobs"), "{body}");
    crew_b.goto(&phone_url("/crew")).await.unwrap();
    let send = "const [job, done] = arguments; \
        window.lwCrewSend({client_action_id: 'x-' + job + '-' + Date.now(), job_id: job, action: 'accept'}).then(done, (e) => done({error: String(e)}));";
    let r = crew_b
        .execute_async(send, vec![json!(other_order.id)])
        .await
        .unwrap();
    assert_eq!(r["status"], json!(403), "{r}");
    assert_eq!(
        w.order_status(other_order.id).await,
        WorkOrderStatus::Assigned
    );
    let r = crew_b
        .execute_async(send, vec![json!(moved.id)])
        .await
        .unwrap();
    assert_eq!(r["status"], json!(409), "{r}");
    assert!(
        r["body"]["error"]
            .as_str()
            .unwrap()
            .contains("reassigned to crew C-A"),
        "{r}"
    );
    // Crew C-A sees its own job.
    crew_a.goto(&w.url("/crew")).await.unwrap();
    crew_a
        .wait()
        .at_most(Duration::from_secs(15))
        .for_element(Locator::Css(&format!("#job-{}", other_order.id)))
        .await
        .expect("crew C-A's own job");

    for c in [eng, disp, crew_b, crew_a] {
        let _ = c.close().await;
    }
    let took = started.elapsed();
    eprintln!(
        "browser proof flow: {took:?}; screenshots in {}",
        shots.dir.display()
    );
    assert!(
        took < BUDGET,
        "the browser suite took {took:?}, over {BUDGET:?}"
    );
}

/// The meter, district, map and admin pages in the browser: the engineer follows
/// the inbox's link to the meter, switches the chart to a week, opens the district
/// and the map; an admin adds an account (which then logs in) and creates a token
/// whose secret is shown once. Screenshots of each page, desktop and phone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn meters_districts_map_and_accounts_in_a_real_browser() {
    let _one_at_a_time = BROWSERS.lock().await;
    let Some(driver) = Driver::start() else {
        return;
    };
    let started = Instant::now();
    let shots = Shots::new();
    let w = World::start().await;
    w.seed().await;
    let alert = w.raise("M-1", 2).await;
    // D1's station: 1.1 times what M-1 (the only customer with readings) takes.
    let station = MeterRecord {
        meter_id: "S-1".into(),
        district_id: "D1".into(),
        kind: "station".into(),
        lat: 43.765,
        lon: 11.24,
        report_every_h: Some(1),
        status: None,
        installed_at: None,
        max_flow_m3h: None,
    }
    .to_meter()
    .unwrap();
    w.store.upsert_meters(&[station]).await.unwrap();
    let m1 = w
        .store
        .readings(&MeterId::parse("M-1").unwrap(), None, None, 1000)
        .await
        .unwrap();
    let inflow: Vec<Reading> = m1
        .iter()
        .map(|r| Reading {
            meter: MeterId::parse("S-1").unwrap(),
            vol: 2000.0 + 1.1 * (r.vol - m1[0].vol),
            ..r.clone()
        })
        .collect();
    w.store.insert_readings(&inflow).await.unwrap();
    let hash = leakwatch_api::secret::hash_password(PASSWORD).unwrap();
    w.store
        .account_store()
        .create_account(
            &NewAccount {
                name: "ada",
                role: Role::Admin,
                crew: None,
                password_hash: &hash,
            },
            "test",
            chrono::Utc::now(),
        )
        .await
        .unwrap();
    let base = w.url("");
    let (eng, adm) = tokio::join!(driver.session(false), driver.session(false));
    assert_eq!(login(&eng, &base, "eva").await, "/console/alerts");
    // From the inbox to the meter.
    click(
        &eng,
        &format!("tr[data-alert-id='{alert}'] a[href='/console/meters/M-1']"),
    )
    .await;
    assert_eq!(text(&eng, "#meter-id").await, "M-1");
    eng.wait()
        .at_most(Duration::from_secs(10))
        .for_element(Locator::Css("#meter-chart rect.bar"))
        .await
        .expect("the day's bars");
    click(&eng, "#range-week").await;
    wait_until("the week's chart", Duration::from_secs(10), || async {
        eng.current_url()
            .await
            .is_ok_and(|u| u.query() == Some("range=week"))
    })
    .await;
    let total: f64 = text(&eng, "#range-total")
        .await
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(total > 3.0, "a week of M-1's gas: {total}");
    assert!(
        text(&eng, "#meter-alerts")
            .await
            .contains("continuous_flow")
    );
    shots.both(&eng, "engineer-meter").await;
    // The meter's district.
    click(&eng, "#registry a[href='/console/districts/D1']").await;
    eng.wait()
        .at_most(Duration::from_secs(10))
        .for_element(Locator::Css("#balance-chart"))
        .await
        .expect("the district's balance");
    assert!(text(&eng, "#silent-meters").await.contains("M-2"));
    // 10 % more gas in than the customers took: 1 - 1/1.1 = 9.1 % unaccounted for.
    assert_eq!(text(&eng, "#ufg-total").await, "9.1 %");
    shots.both(&eng, "engineer-district").await;
    // The map: the alert's meter and both crews (at home).
    eng.goto(&w.url("/console/map")).await.unwrap();
    let counts = text(&eng, "#map-counts").await;
    assert!(counts.contains("1 places with open alerts"), "{counts}");
    assert!(counts.contains("2 crews"), "{counts}");
    shots.both(&eng, "map").await;

    // The admin adds an account and a token.
    assert_eq!(login(&adm, &base, "ada").await, "/console/alerts");
    adm.goto(&w.url("/console/admin")).await.unwrap();
    for (css, value) in [("#new-name", "nora"), ("#new-password", PASSWORD)] {
        adm.find(Locator::Css(css))
            .await
            .unwrap()
            .send_keys(value)
            .await
            .unwrap();
    }
    exec(
        &adm,
        "document.querySelector('#add-account select[name=role]').value = 'dispatcher'; return true;",
        vec![],
    )
    .await;
    click(&adm, "#add-account-button").await;
    assert!(
        text(&adm, "#flash")
            .await
            .contains("account nora created (dispatcher)")
    );
    assert!(text(&adm, "#account-nora").await.contains("dispatcher"));
    adm.find(Locator::Css("#token-name"))
        .await
        .unwrap()
        .send_keys("scada")
        .await
        .unwrap();
    click(&adm, "#create-token-button").await;
    let secret = text(&adm, "#token-secret").await;
    assert!(secret.starts_with("lw_"), "{secret}");
    shots.both(&adm, "admin-accounts").await;
    let nora = driver.session(true).await;
    assert_eq!(login(&nora, &base, "nora").await, "/console/board");
    for c in [eng, adm, nora] {
        let _ = c.close().await;
    }
    let took = started.elapsed();
    eprintln!("browser pages flow: {took:?}");
    assert!(took < Duration::from_secs(180), "took {took:?}");
}

/// A continuous-flow finding on `meter` as the detection service records it: judged
/// against the suppressions (the pure verdict of `leakwatch_detect::suppress`) in one
/// transaction. Returns the alert it opened or repeated, `None` when kept quiet.
async fn detect_flow(w: &World, meter: &str, observed: f64) -> Option<i64> {
    let detected = chrono::Utc::now() - chrono::Duration::minutes(5);
    let f = Finding {
        kind: AlertKind::ContinuousFlow,
        severity: Severity::Warning,
        meter_id: Some(MeterId::parse(meter).unwrap()),
        district_id: Some(DistrictId::parse("D1").unwrap()),
        detected_at: detected,
        evidence: Evidence {
            rule: "no zero-flow hour in 24 h".into(),
            observed,
            expected: Some(0.0),
            threshold: 0.02,
            unit: "m3/h".into(),
            window_start: detected - chrono::Duration::hours(24),
            window_end: detected,
            explanation: format!(
                "Gas flowed every hour for 24 h; the lowest hour was {observed} m3"
            ),
            known: None,
        },
    };
    w.store
        .record_finding_judged(&f, |active| leakwatch_detect::suppress::judge(active, &f))
        .await
        .unwrap()
        .alert
        .map(|a| a.id)
}

/// Issue 12: "A dismissal with a suppression keeps that meter quiet while another
/// meter's alert still arrives, and a change beyond the dismissed evidence reopens
/// it." Also: the new alert shows the earlier dismissal, the suppressions page lists
/// and revokes, the quality page answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dismissal_with_a_suppression_keeps_a_meter_quiet_until_it_changes() {
    let _one_at_a_time = BROWSERS.lock().await;
    let Some(driver) = Driver::start() else {
        return;
    };
    let started = Instant::now();
    let shots = Shots::new();
    let w = World::start().await;
    w.seed().await;
    let eng = driver.session(false).await;
    let base = w.url("");
    assert_eq!(login(&eng, &base, "eva").await, "/console/alerts");

    // An alert on M-1, dismissed with a suppression on this meter (25 % margin).
    let first = detect_flow(&w, "M-1", 0.05).await.expect("an alert");
    eng.goto(&w.url(&format!("/console/alerts/{first}")))
        .await
        .unwrap();
    eng.find(Locator::Css("#dismiss-reason"))
        .await
        .unwrap()
        .send_keys("pilot light of the boiler, known to the customer")
        .await
        .unwrap();
    click(&eng, "#suppress").await;
    shots
        .take(&eng, "engineer-dismiss-with-suppression-desktop")
        .await;
    click(&eng, "#dismiss").await;
    assert_eq!(text(&eng, "#alert-status").await, "dismissed");
    assert!(text(&eng, "#history").await.contains("eva · dismiss"));
    let sup = w.store.list_suppressions(true, 10).await.unwrap();
    assert_eq!(sup.len(), 1);
    let sup = sup[0].id;

    // The inbox, live: the same meter again (within the margin) stays quiet; another
    // meter's alert arrives without reloading.
    eng.goto(&w.url("/console/alerts")).await.unwrap();
    wait_until("the live stream", Duration::from_secs(10), || async {
        exec(
            &eng,
            "return document.getElementById('live').className",
            vec![],
        )
        .await
        .as_str()
        .is_some_and(|c| c.contains("on"))
    })
    .await;
    assert_eq!(detect_flow(&w, "M-1", 0.055).await, None, "kept quiet");
    let other = detect_flow(&w, "M-2", 0.05).await.expect("M-2 raises");
    eng.wait()
        .at_most(Duration::from_secs(15))
        .for_element(Locator::Css(&format!("tr[data-alert-id=\"{other}\"]")))
        .await
        .expect("the other meter's alert arrives");
    let rows = exec(
        &eng,
        "return Array.from(document.querySelectorAll('#inbox-body tr[data-alert-id]')).map(r => r.innerText);",
        vec![],
    )
    .await;
    assert!(
        !rows.to_string().contains("meter M-1"),
        "M-1 stays out of the inbox: {rows}"
    );
    assert_eq!(
        w.store
            .get_suppression(sup)
            .await
            .unwrap()
            .unwrap()
            .suppressed,
        1
    );

    // The suppressions page: holding, one finding kept quiet.
    eng.goto(&w.url("/console/suppressions")).await.unwrap();
    let row = format!("tr[data-suppression-id=\"{sup}\"]");
    assert!(
        text(&eng, &format!("{row} .state"))
            .await
            .contains("holding")
    );
    shots.both(&eng, "engineer-suppressions").await;

    // Beyond the dismissed evidence by more than the margin: M-1 reopens, live.
    eng.goto(&w.url("/console/alerts")).await.unwrap();
    wait_until("the live stream", Duration::from_secs(10), || async {
        exec(
            &eng,
            "return document.getElementById('live').className",
            vec![],
        )
        .await
        .as_str()
        .is_some_and(|c| c.contains("on"))
    })
    .await;
    let reopened = detect_flow(&w, "M-1", 0.09).await.expect("reopens");
    assert_ne!(reopened, first);
    eng.wait()
        .at_most(Duration::from_secs(15))
        .for_element(Locator::Css(&format!("tr[data-alert-id=\"{reopened}\"]")))
        .await
        .expect("the reopened alert arrives");
    // The new alert shows the earlier dismissal and why it came back.
    click(&eng, &format!("tr[data-alert-id=\"{reopened}\"] a")).await;
    let earlier = text(&eng, "#earlier-dismissals").await;
    assert!(earlier.contains(&format!("#{first}")), "{earlier}");
    assert!(earlier.contains("pilot light of the boiler"), "{earlier}");
    assert!(earlier.contains("by eva"), "{earlier}");
    assert!(
        text(&eng, "#history")
            .await
            .contains("exceeds the dismissed"),
        "the history says why it reopened"
    );
    shots.both(&eng, "engineer-alert-earlier-dismissals").await;
    let ended = w.store.get_suppression(sup).await.unwrap().unwrap();
    assert_eq!(ended.ended_by.as_deref(), Some("detector"));
    assert_eq!(ended.broken_by_alert, Some(reopened));

    // A suppression revoked from the list: the meter raises again.
    eng.goto(&w.url(&format!("/console/alerts/{other}")))
        .await
        .unwrap();
    eng.find(Locator::Css("#dismiss-reason"))
        .await
        .unwrap()
        .send_keys("meter test bench")
        .await
        .unwrap();
    click(&eng, "#suppress").await;
    click(&eng, "#dismiss").await;
    assert_eq!(text(&eng, "#alert-status").await, "dismissed");
    assert_eq!(detect_flow(&w, "M-2", 0.05).await, None);
    let second = w.store.list_suppressions(true, 10).await.unwrap()[0].id;
    eng.goto(&w.url("/console/suppressions")).await.unwrap();
    click(
        &eng,
        &format!("tr[data-suppression-id=\"{second}\"] button.revoke"),
    )
    .await;
    assert!(
        text(
            &eng,
            &format!("tr[data-suppression-id=\"{second}\"] .state")
        )
        .await
        .contains("revoked by eva")
    );
    assert!(detect_flow(&w, "M-2", 0.05).await.is_some());

    // The detector quality page answers per kind.
    eng.goto(&w.url("/console/quality")).await.unwrap();
    assert_eq!(
        text(&eng, "tr[data-kind=\"continuous_flow\"] .raised").await,
        "4"
    );
    shots.both(&eng, "engineer-quality").await;

    let _ = eng.close().await;
    let took = started.elapsed();
    eprintln!("browser suppression flow: {took:?}");
    assert!(took < BUDGET, "took {took:?}, over {BUDGET:?}");
}
