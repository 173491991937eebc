//! `leakwatch run` and `leakwatch demo` as an operator runs them: the binary, HTTPS
//! from `http.tls.*`, and SIGTERM (what a container runtime sends) ending the
//! process cleanly with everything acknowledged stored.

use crate::devices::{Pki, tempdir, write_registry};
use crate::support::{unique, wait_for};
use leakwatch::testkit::{OwnMosquitto, free_port};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls::{ClientConfig, RootCertStore};

/// A GET over HTTPS trusting only `ca`; the status code, or `None` when no HTTPS
/// answer came.
async fn https_status(port: u16, ca: &Path, path: &str) -> Option<u16> {
    let mut roots = RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .ok()?;
    let name = ServerName::try_from("localhost").unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .ok()?;
    let req = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    tls.write_all(req.as_bytes()).await.ok()?;
    let mut out = String::new();
    let _ = tls.read_to_string(&mut out).await;
    out.strip_prefix("HTTP/1.1 ")?.get(..3)?.parse().ok()
}

/// Sends SIGTERM and waits for the process to end, at most `deadline`.
fn terminate(child: &mut Child, deadline: Duration) -> ExitStatus {
    let ok = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill -TERM");
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if started.elapsed() > deadline {
            let _ = child.kill();
            panic!("still running {deadline:?} after SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Kills the process when the test ends, however it ends.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn_run(
    db: &str,
    broker: &str,
    client_id: &str,
    http: u16,
    tls: Option<(&Path, &Path)>,
) -> Proc {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_leakwatch"));
    cmd.arg("run")
        .env("LEAKWATCH__DATABASE__URL", db)
        .env("LEAKWATCH__MQTT__URL", broker)
        .env("LEAKWATCH__MQTT__CLIENT_ID", client_id)
        .env("LEAKWATCH__HTTP__LISTEN", format!("127.0.0.1:{http}"))
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(if std::env::var("LEAKWATCH_TEST_LOG").is_ok() {
            Stdio::inherit()
        } else {
            Stdio::null()
        });
    if let Some((cert, key)) = tls {
        cmd.env("LEAKWATCH__HTTP__TLS__CERT", cert)
            .env("LEAKWATCH__HTTP__TLS__KEY", key);
    }
    Proc(cmd.spawn().expect("start leakwatch run"))
}

async fn stored(db: &str) -> i64 {
    let store = leakwatch_store::Store::connect(db).await.unwrap();
    let n = store.count_readings().await.unwrap();
    store.close().await;
    n
}

/// `leakwatch run` with `http.tls.cert`/`key` answers HTTPS only; SIGTERM in the
/// middle of an ingest burst ends it with status 0 within the shutdown deadline,
/// and nothing it acknowledged is lost: restarted on the same broker session, it
/// ends up with every reading exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_serves_https_and_stops_on_sigterm_losing_nothing() {
    const MESSAGES: u32 = 5000;
    let dir = tempdir();
    let db = format!("sqlite://{}/lw.db", dir.display());
    let (meters, _) = write_registry(&dir);
    let out = Command::new(env!("CARGO_BIN_EXE_leakwatch"))
        .args(["meters", "import", &meters])
        .env("LEAKWATCH__DATABASE__URL", &db)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let broker = OwnMosquitto::start().expect("mosquitto");
    let pki = Pki::new(&dir);
    let (cert, key) = pki.issue("localhost", &["localhost", "127.0.0.1"]);
    let client_id = unique("lw-term-");

    let http = free_port();
    let mut run = spawn_run(&db, &broker.url(), &client_id, http, Some((&cert, &key)));
    wait_for("ready over HTTPS", Duration::from_secs(30), || async {
        (https_status(http, &pki.ca(), "/readyz").await == Some(200)).then_some(())
    })
    .await;
    assert_eq!(https_status(http, &pki.ca(), "/healthz").await, Some(200));
    // Plain HTTP on the port gets no HTTP answer.
    let plain = reqwest::get(format!("http://127.0.0.1:{http}/healthz")).await;
    assert!(
        plain.map(|r| r.status() != 200).unwrap_or(true),
        "plain HTTP answered"
    );

    let p = leakwatch_sim::Publisher::connect("127.0.0.1", broker.port, &unique("lw-pub-"))
        .await
        .unwrap();
    let start: chrono::DateTime<chrono::Utc> = "2025-01-01T00:00:00Z".parse().unwrap();
    for i in 0..MESSAGES {
        let t = start + chrono::Duration::hours(i64::from(i));
        let body = serde_json::json!({"v": 1, "meter": "M1", "readings": [
            {"t": t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true), "vol": f64::from(i) * 0.25}
        ]});
        p.publish_raw("gas/D1/M1/up", body.to_string().as_bytes())
            .await
            .unwrap();
    }
    p.flush(Duration::from_secs(30)).await.unwrap();
    // Mid-burst, if the machine is not too fast.
    let status = terminate(&mut run.0, Duration::from_secs(25));
    assert!(status.success(), "leakwatch run exited with {status}");
    let at_stop = stored(&db).await;
    assert!(at_stop <= i64::from(MESSAGES));

    let http = free_port();
    let mut again = spawn_run(&db, &broker.url(), &client_id, http, None);
    wait_for("ready again", Duration::from_secs(30), || async {
        let r = reqwest::get(format!("http://127.0.0.1:{http}/readyz"))
            .await
            .ok()?;
        (r.status() == 200).then_some(())
    })
    .await;
    wait_for("every reading stored", Duration::from_secs(60), || async {
        (stored(&db).await >= i64::from(MESSAGES)).then_some(())
    })
    .await;
    let status = terminate(&mut again.0, Duration::from_secs(25));
    assert!(status.success(), "leakwatch run exited with {status}");
    assert_eq!(stored(&db).await, i64::from(MESSAGES), "each reading once");
    eprintln!("stored at the first SIGTERM: {at_stop} of {MESSAGES}");
    drop(p);
    let _ = std::fs::remove_dir_all(&dir);
}

/// `leakwatch demo` on the embedded broker with registry logins (the default): the
/// simulated fleet and crews log in with identities minted for them, leakwatch's own
/// sessions with its own, readings arrive; SIGTERM ends it with status 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_devices_log_in_and_sigterm_stops_it() {
    let dir = tempdir();
    let http = free_port();
    let child = Command::new(env!("CARGO_BIN_EXE_leakwatch"))
        .args([
            "demo",
            "--districts",
            "1",
            "--meters-per-district",
            "5",
            "--leaks",
            "0",
            "--sim-hour-ms",
            "20",
            "--hours",
            "48",
        ])
        .current_dir(&dir)
        .env_remove("LEAKWATCH__DATABASE__URL")
        .env_remove("LEAKWATCH__MQTT__URL")
        .env("LEAKWATCH__HTTP__LISTEN", format!("127.0.0.1:{http}"))
        .env(
            "LEAKWATCH__MQTT__EMBEDDED_LISTEN",
            format!("127.0.0.1:{}", free_port()),
        )
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start leakwatch demo");
    let mut demo = Proc(child);
    let base = format!("http://127.0.0.1:{http}");
    wait_for("the demo's readings", Duration::from_secs(60), || async {
        let ready = reqwest::get(format!("{base}/readyz")).await.ok()?;
        if ready.status() != 200 {
            return None;
        }
        let metrics = reqwest::get(format!("{base}/metrics"))
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        metrics
            .lines()
            .find(|l| l.starts_with("leakwatch_ingest_readings_total{outcome=\"inserted\"}"))
            .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .filter(|n| *n > 0.0)
    })
    .await;
    let status = terminate(&mut demo.0, Duration::from_secs(25));
    assert!(status.success(), "leakwatch demo exited with {status}");
    let _ = std::fs::remove_dir_all(&dir);
}
