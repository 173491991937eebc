//! The scaled-out shape's processes as an operator runs them (issue 15): `leakwatch
//! bridge` and `leakwatch worker` connect to a nats-server of the test's own that takes
//! TLS only and verifies client certificates (as `deploy/nats/nats-server.conf`
//! configures the cluster), the bridge logs in to a Mosquitto holding the generated
//! password file and ACL as leakwatch's service identity, and SIGTERM ends each with
//! status 0 within a deadline
//! without losing a reading the broker acknowledged: restarted, they end with every
//! reading stored exactly once. One node (replicas 1): the three-node cluster under
//! faults is `scaleout.rs`.

use crate::devices::{Pki, tempdir};
use crate::support::{required_env, unique, wait_for};
use leakwatch::testkit::{OwnMosquitto, free_port};
use leakwatch_store::testing::{PG_ENV, drop_pg_database, fresh_pg_database, in_ci};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// A process of the test's, killed when dropped; stderr in `log`.
struct Proc {
    name: &'static str,
    child: Option<Child>,
    log: PathBuf,
}

impl Proc {
    fn spawn(name: &'static str, cmd: &mut Command, dir: &Path) -> Proc {
        let log = dir.join(format!("{name}.log"));
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        let child = cmd
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| panic!("start {name}: {e}"));
        Proc {
            name,
            child: Some(child),
            log,
        }
    }

    fn text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    async fn wait_line(&self, needle: &str, n: usize) {
        wait_for(
            &format!("{}: {needle} (x{n})", self.name),
            Duration::from_secs(60),
            || async { (self.text().matches(needle).count() >= n).then_some(()) },
        )
        .await;
    }

    /// SIGTERM; the exit status and how long the exit took (panics past `deadline`).
    fn terminate(&mut self, deadline: Duration) -> (ExitStatus, Duration) {
        let mut child = self.child.take().expect("running");
        let started = Instant::now();
        let ok = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -TERM {}", self.name);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return (status, started.elapsed());
            }
            if started.elapsed() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "{} still running {deadline:?} after SIGTERM:\n{}",
                    self.name,
                    self.text()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

async fn stored(pool: &sqlx::PgPool) -> (i64, i64) {
    sqlx::query_as("SELECT count(*), count(DISTINCT (meter_id, t)) FROM readings")
        .fetch_one(pool)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bridge_and_worker_use_nats_over_tls_and_stop_on_sigterm_losing_nothing() {
    const MESSAGES: u32 = 3000;
    const DEADLINE: Duration = Duration::from_secs(30);
    let Some(admin) = required_env(PG_ENV) else {
        return;
    };
    let Some(nats_bin) = leakwatch_log::testkit::nats_server_binary() else {
        assert!(
            !in_ci(),
            "nats-server is not installed (.ci/run installs it)"
        );
        println!("skipped: nats-server is not installed");
        return;
    };
    let dir = tempdir();
    let pki = Pki::new(&dir);
    let (server_cert, server_key) = pki.issue("nats", &["127.0.0.1", "localhost"]);
    let (client_cert, client_key) = pki.issue("leakwatch", &[]);
    let nats_port = free_port();
    let conf = dir.join("nats.conf");
    std::fs::write(
        &conf,
        format!(
            "listen: 127.0.0.1:{nats_port}\njetstream {{ store_dir: \"{}\" }}\n\
             tls {{\n cert_file: \"{}\"\n key_file: \"{}\"\n ca_file: \"{}\"\n verify: true\n timeout: 5\n}}\n",
            dir.join("js").display(),
            server_cert.display(),
            server_key.display(),
            pki.ca().display()
        ),
    )
    .unwrap();
    let _nats = Proc::spawn("nats", Command::new(nats_bin).arg("-c").arg(&conf), &dir);
    let url = format!("tls://127.0.0.1:{nats_port}");
    wait_for("nats-server up", Duration::from_secs(20), || async {
        std::net::TcpStream::connect(("127.0.0.1", nats_port))
            .ok()
            .map(|_| ())
    })
    .await;

    // The server is the control: no TLS, or TLS without a client certificate, is
    // refused; our settings (CA file and client certificate) get in.
    let plain = async_nats::ConnectOptions::new()
        .connection_timeout(Duration::from_secs(3))
        .connect(format!("nats://127.0.0.1:{nats_port}"))
        .await;
    assert!(plain.is_err(), "plain NATS admitted");
    let no_cert = async_nats::ConnectOptions::new()
        .add_root_certificates(pki.ca())
        .require_tls(true)
        .connection_timeout(Duration::from_secs(3))
        .connect(url.as_str())
        .await;
    assert!(
        no_cert.is_err(),
        "TLS without a client certificate admitted"
    );
    let tls = leakwatch_log::NatsTls {
        ca_file: Some(pki.ca()),
        client_cert: Some(client_cert.clone()),
        client_key: Some(client_key.clone()),
    };
    let client = leakwatch_log::jetstream::connect_with(&url, "test", &tls)
        .await
        .unwrap();
    client.flush().await.expect("connected over TLS");
    assert!(client.server_info().tls_required, "the server requires TLS");
    drop(client);

    // Mosquitto with the files `broker-config` writes: the bridge logs in as
    // leakwatch's service identity, the fleet as a head-end, under the generated ACL.
    let db = fresh_pg_database(&admin).await.unwrap();
    let pool = sqlx::PgPool::connect(&db).await.unwrap();
    let prefix = unique("lwtls");
    let (meters, _) = crate::devices::write_registry(&dir);
    crate::devices::leakwatch(&db, &["meters", "import", &meters]);
    let mut s = crate::devices::secrets(&crate::devices::leakwatch(
        &db,
        &["devices", "issue", "--kind", "service", "leakwatch"],
    ));
    s.extend(crate::devices::secrets(&crate::devices::leakwatch(
        &db,
        &["devices", "issue", "--kind", "headend", "HE"],
    )));
    let auth = dir.join("broker");
    let out = Command::new(env!("CARGO_BIN_EXE_leakwatch"))
        .args(["broker-config", "--out"])
        .arg(&auth)
        .env("LEAKWATCH__DATABASE__URL", &db)
        .env("LEAKWATCH__MQTT__PREFIX", &prefix)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mosq = OwnMosquitto::start_with(|_| {
        format!(
            "allow_anonymous false\npassword_file {}/passwords\nacl_file {}/acl\n",
            auth.display(),
            auth.display()
        )
    })
    .expect("mosquitto");
    let bridge_id = unique("lw-bridge-");
    let env: Vec<(&str, String)> = vec![
        ("LEAKWATCH__DATABASE__URL", db.clone()),
        ("LEAKWATCH__MQTT__URL", mosq.url()),
        ("LEAKWATCH__MQTT__PREFIX", prefix.clone()),
        ("LEAKWATCH__MQTT__USERNAME", "leakwatch".into()),
        ("LEAKWATCH__MQTT__PASSWORD", s["leakwatch"].clone()),
        ("LEAKWATCH_NATS_URL", url.clone()),
        ("LEAKWATCH_NATS_CA_FILE", pki.ca().to_string_lossy().into()),
        (
            "LEAKWATCH_NATS_CLIENT_CERT",
            client_cert.to_string_lossy().into(),
        ),
        (
            "LEAKWATCH_NATS_CLIENT_KEY",
            client_key.to_string_lossy().into(),
        ),
        ("LEAKWATCH_NATS_STREAM", "LWTLS".into()),
        ("LEAKWATCH_NATS_REPLICAS", "1".into()),
        ("LEAKWATCH_PARTITIONS", "4".into()),
        ("LEAKWATCH_BRIDGE_ID", bridge_id),
        ("LEAKWATCH_WORKER_ID", "w0".into()),
        ("RUST_LOG", "info,async_nats=warn".into()),
    ];
    let start = |what: &'static str| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_leakwatch"));
        cmd.arg(what)
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())));
        if what == "worker" {
            cmd.args(["--lease-ttl-ms", "3000"]);
        }
        Proc::spawn(what, &mut cmd, &dir)
    };
    let mut bridge = start("bridge");
    let mut worker = start("worker");
    bridge.wait_line("bridge running", 1).await;
    worker.wait_line("worker running", 1).await;

    let p = leakwatch_sim::Publisher::connect_with(
        "127.0.0.1",
        mosq.port,
        &unique("lw-pub-"),
        &leakwatch_mqtt::Security {
            login: Some(leakwatch_mqtt::Login::new("HE", s["HE"].clone())),
            tls: None,
        },
    )
    .await
    .unwrap();
    // One reading through the whole path first: the bridge's subscription is in place
    // (its persistent session keeps what comes while it is away from then on).
    p.publish_raw(
        &format!("{prefix}/D1/M1/up"),
        br#"{"v":1,"meter":"M1","readings":[{"t":"2024-12-31T00:00:00Z","vol":0}]}"#,
    )
    .await
    .unwrap();
    wait_for(
        "the first reading stored",
        Duration::from_secs(60),
        || async { (stored(&pool).await.0 == 1).then_some(()) },
    )
    .await;
    let t0: chrono::DateTime<chrono::Utc> = "2025-01-01T00:00:00Z".parse().unwrap();
    for i in 0..MESSAGES {
        let (meter, h) = (if i % 2 == 0 { "M1" } else { "M2" }, i64::from(i / 2));
        let t = t0 + chrono::Duration::hours(h);
        let body = serde_json::json!({"v": 1, "meter": meter, "readings": [
            {"t": t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true), "vol": h as f64 * 0.25}
        ]});
        p.publish_raw(
            &format!("{prefix}/D1/{meter}/up"),
            body.to_string().as_bytes(),
        )
        .await
        .unwrap();
    }
    p.flush(Duration::from_secs(30)).await.unwrap();
    let expected = i64::from(MESSAGES) + 1;
    assert_eq!(p.acked() as i64, expected, "the broker acknowledged all");

    // SIGTERM while the stream is still moving (if the machine is not too fast).
    let (bridge_status, bridge_took) = bridge.terminate(DEADLINE);
    let (worker_status, worker_took) = worker.terminate(DEADLINE);
    let (at_stop, _) = stored(&pool).await;
    assert!(
        bridge_status.success(),
        "bridge exited with {bridge_status}:\n{}",
        bridge.text()
    );
    assert!(
        worker_status.success(),
        "worker exited with {worker_status}:\n{}",
        worker.text()
    );
    assert!(
        worker.text().contains("worker stopped"),
        "{}",
        worker.text()
    );
    assert!(
        bridge.text().contains("bridge stopped"),
        "{}",
        bridge.text()
    );

    // Restarted on the same MQTT session and stream: everything, once.
    let mut bridge = start("bridge");
    let mut worker = start("worker");
    bridge.wait_line("bridge running", 2).await;
    worker.wait_line("worker running", 2).await;
    wait_for("every reading stored", Duration::from_secs(90), || async {
        (stored(&pool).await.0 >= expected).then_some(())
    })
    .await;
    let (s1, _) = bridge.terminate(DEADLINE);
    let (s2, _) = worker.terminate(DEADLINE);
    assert!(s1.success() && s2.success(), "second stop: {s1}, {s2}");
    let (rows, distinct) = stored(&pool).await;
    println!(
        "scaled-out SIGTERM over NATS TLS: stored at the first SIGTERM {at_stop} of {expected}; \
         bridge exited in {:.2}s, worker in {:.2}s; after the restart {rows} rows, {distinct} distinct",
        bridge_took.as_secs_f64(),
        worker_took.as_secs_f64()
    );
    assert_eq!(rows, expected, "every acknowledged reading once");
    assert_eq!(distinct, rows);
    pool.close().await;
    drop_pg_database(&admin, &db).await;
    drop(mosq);
    let _ = std::fs::remove_dir_all(&dir);
}

/// SIGTERM while the log cannot be reached (start-up: the bridge and the worker retry
/// NATS until it answers) ends both with status 0 at once; before, the signal killed
/// them (status 143), since its handler was installed only once they ran.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_while_the_log_is_unreachable_ends_bridge_and_worker_cleanly() {
    let Some(admin) = required_env(PG_ENV) else {
        return;
    };
    let dir = tempdir();
    let db = fresh_pg_database(&admin).await.unwrap();
    // Nothing listens there.
    let nats = format!("nats://127.0.0.1:{}", free_port());
    for what in ["bridge", "worker"] {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_leakwatch"));
        cmd.arg(what)
            .env("LEAKWATCH__DATABASE__URL", &db)
            .env("LEAKWATCH__MQTT__URL", "mqtt://127.0.0.1:1")
            .env("LEAKWATCH_NATS_URL", &nats)
            .env("LEAKWATCH_WORKER_ID", "w-unreachable")
            .env("RUST_LOG", "info,async_nats=warn");
        let mut p = Proc::spawn(what, &mut cmd, &dir);
        p.wait_line("starting: connecting to", 1).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let (status, took) = p.terminate(Duration::from_secs(10));
        assert!(
            status.success(),
            "{what} exited with {status}:\n{}",
            p.text()
        );
        assert!(
            !p.text().contains("running"),
            "{what} reached the log?\n{}",
            p.text()
        );
        println!(
            "{what}: SIGTERM in start-up, exit 0 after {:.2}s",
            took.as_secs_f64()
        );
    }
    drop_pg_database(&admin, &db).await;
    let _ = std::fs::remove_dir_all(&dir);
}
