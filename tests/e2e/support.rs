//! Starting a service per test: port 0, its own database, its own topic prefix.

use leakwatch::app::{self, Running, StartOptions};
use leakwatch::config::Config;
use serde_json::Value;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// Which broker and store a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// The embedded broker and a fresh SQLite file.
    EmbeddedSqlite,
    /// Mosquitto at LEAKWATCH_TEST_MQTT and a fresh PostgreSQL database.
    MosquittoPostgres,
}

/// An environment variable a suite needs; in CI its absence is a failure (the one rule
/// for service-backed tests, kept in the store's `testing`).
pub use leakwatch_store::testing::required_env;

pub fn unique(tag: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!(
        "{tag}{}x{}x{}",
        std::process::id(),
        nanos,
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// The admin bearer token every test service is started with (`http.api_token`,
/// which acts as an admin named `api-token`): with no account and no token the API
/// answers 503.
pub const TEST_TOKEN: &str = "e2e-admin-token-0123456789";

/// An HTTP client that sends `Authorization: Bearer TEST_TOKEN` with every request.
pub fn http_client() -> reqwest::Client {
    let mut h = reqwest::header::HeaderMap::new();
    h.insert(
        reqwest::header::AUTHORIZATION,
        reqwest::header::HeaderValue::from_str(&format!("Bearer {TEST_TOKEN}")).unwrap(),
    );
    reqwest::Client::builder()
        .default_headers(h)
        .build()
        .unwrap()
}

pub struct Service {
    pub running: Option<Running>,
    pub base: String,
    pub http: reqwest::Client,
    pub prefix: String,
    pub pg: Option<(String, String)>,
    pub sqlite_path: Option<std::path::PathBuf>,
    /// The configuration it runs with (a restart reuses it: same database, broker
    /// session and prefix).
    pub cfg: Config,
    /// Crews' phone tokens made by [`Service::crew_token`].
    pub tokens: std::sync::Mutex<std::collections::HashMap<String, String>>,
}

impl Service {
    /// Starts a service on `backend`; `None` when the backend's services are not
    /// configured outside CI.
    pub async fn start(backend: Backend, tweak: impl FnOnce(&mut Config)) -> Option<Service> {
        let mut cfg = Config::load(None).expect("defaults load");
        cfg.http.listen = "127.0.0.1:0".parse().unwrap();
        let prefix = unique("lwtest");
        cfg.mqtt.prefix = prefix.clone();
        cfg.mqtt.crew_prefix = format!("{prefix}-crews");
        cfg.mqtt.client_id = unique("lw-ingest-");
        cfg.http.api_token = Some(leakwatch::config::Secret::new(TEST_TOKEN));
        let mut pg = None;
        let mut sqlite_path = None;
        match backend {
            Backend::EmbeddedSqlite => {
                cfg.mqtt.url = None;
                cfg.mqtt.embedded_listen = "127.0.0.1:0".parse().unwrap();
                // These flows' publishers and phones connect anonymously; the logins
                // of the embedded broker are tested in `devices`.
                cfg.mqtt.embedded_auth = leakwatch::config::EmbeddedAuth::Anonymous;
                let path = std::env::temp_dir().join(format!("{}.db", unique("leakwatch-e2e-")));
                cfg.database.url = format!("sqlite://{}", path.display()).parse().unwrap();
                sqlite_path = Some(path);
            }
            Backend::MosquittoPostgres => {
                let mqtt = required_env("LEAKWATCH_TEST_MQTT")?;
                let admin = required_env("LEAKWATCH_TEST_PG")?;
                let url = leakwatch_store::testing::fresh_pg_database(&admin)
                    .await
                    .expect("create a fresh PostgreSQL database");
                cfg.mqtt.url = Some(mqtt.parse().unwrap());
                cfg.database.url = url.parse().unwrap();
                pg = Some((admin, url));
            }
        }
        tweak(&mut cfg);
        let running = app::start(&cfg, StartOptions::default())
            .await
            .expect("service starts");
        let base = format!("http://{}", running.http_addr);
        let svc = Service {
            running: Some(running),
            base,
            http: http_client(),
            prefix,
            pg,
            sqlite_path,
            cfg,
            tokens: Default::default(),
        };
        svc.wait_ready().await;
        Some(svc)
    }

    /// Shuts the service down gracefully and starts it again on the same database,
    /// broker session and prefix (the HTTP port changes).
    pub async fn restart(&mut self) {
        self.halt().await;
        self.resume().await;
    }

    /// Shuts the service down gracefully, keeping its database and broker session for
    /// [`Service::resume`].
    pub async fn halt(&mut self) {
        if let Some(r) = self.running.take() {
            r.shutdown().await;
        }
    }

    /// Starts a halted service again on the same database, broker session and prefix.
    pub async fn resume(&mut self) {
        let running = app::start(&self.cfg, StartOptions::default())
            .await
            .expect("service restarts");
        self.base = format!("http://{}", running.http_addr);
        self.running = Some(running);
        self.wait_ready().await;
    }

    pub fn running(&self) -> &Running {
        self.running.as_ref().unwrap()
    }

    async fn wait_ready(&self) {
        wait_for("service ready", Duration::from_secs(20), || async {
            let r = self.http.get(self.url("/readyz")).send().await.ok()?;
            (r.status() == 200).then_some(())
        })
        .await;
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        let r = self.http.get(self.url(path)).send().await.expect("GET");
        let status = r.status().as_u16();
        let text = r.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    /// The body of a GET as text (metrics, pages).
    pub async fn text(&self, path: &str) -> String {
        let r = self.http.get(self.url(path)).send().await.expect("GET");
        r.text().await.unwrap()
    }

    pub async fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        let r = self
            .http
            .post(self.url(path))
            .json(body)
            .send()
            .await
            .expect("POST");
        let status = r.status().as_u16();
        let text = r.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    /// The API token of crew `crew`'s phone (role crew, named after the crew: the
    /// actor of the steps it sends), made on first use.
    pub async fn crew_token(&self, crew: &str) -> String {
        use leakwatch_store::AccountStore;
        if let Some(t) = self.tokens.lock().unwrap().get(crew) {
            return t.clone();
        }
        let secret = leakwatch_api::secret::new_api_token().unwrap();
        let crew_id = leakwatch_core::CrewId::parse(crew).unwrap();
        self.running()
            .store
            .account_store()
            .create_api_token(
                &leakwatch_store::NewApiToken {
                    name: crew,
                    secret_hash: &leakwatch_api::secret::sha256_hex(&secret),
                    role: leakwatch_core::Role::Crew,
                    crew: Some(&crew_id),
                },
                "test",
                chrono::Utc::now(),
            )
            .await
            .unwrap();
        self.tokens
            .lock()
            .unwrap()
            .insert(crew.to_owned(), secret.clone());
        secret
    }

    pub async fn publisher(&self) -> leakwatch_sim::Publisher {
        let r = self.running();
        leakwatch_sim::Publisher::connect(&r.mqtt_host, r.mqtt_port, &unique("lw-pub-"))
            .await
            .expect("publisher connects")
    }

    pub async fn stop(mut self) {
        if let Some(r) = self.running.take() {
            r.shutdown().await;
        }
        if let Some((admin, url)) = self.pg.take() {
            leakwatch_store::testing::drop_pg_database(&admin, &url).await;
        }
        if let Some(p) = self.sqlite_path.take() {
            for suffix in ["", "-wal", "-shm"] {
                let _ = std::fs::remove_file(format!("{}{suffix}", p.display()));
            }
        }
    }
}

/// Polls `probe` until it returns `Some`, failing the test after `timeout`.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let started = Instant::now();
    loop {
        if let Some(v) = probe().await {
            return v;
        }
        assert!(
            started.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
