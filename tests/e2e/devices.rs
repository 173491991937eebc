//! Device security on a real Mosquitto: credentials issued with `leakwatch devices`,
//! the broker's files written by `leakwatch broker-config`, and the broker enforcing
//! them: a meter publishes for itself only, a crew's phone reads its own jobs and moves
//! only itself, a revoked or rotated secret no longer connects.

use leakwatch::testkit::OwnMosquitto;
use rumqttc::{
    AsyncClient, ConnectReturnCode, ConnectionError, Event, EventLoop, MqttOptions, Packet, QoS,
};
use std::collections::HashMap;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// Runs the leakwatch binary on `db` and returns its stdout; panics with its stderr
/// when it fails.
fn leakwatch(db: &str, args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_leakwatch"))
        .args(args)
        .env("LEAKWATCH__DATABASE__URL", db)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run leakwatch");
    assert!(
        out.status.success(),
        "leakwatch {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// `username,secret` lines printed by `devices issue|rotate`.
fn secrets(out: &str) -> HashMap<String, String> {
    let mut lines = out.lines();
    assert_eq!(lines.next(), Some("username,secret"), "{out}");
    lines
        .map(|l| {
            let (u, s) = l.split_once(',').unwrap();
            (u.to_owned(), s.to_owned())
        })
        .collect()
}

struct Client {
    client: AsyncClient,
    events: EventLoop,
}

/// Connects as `user`; `Err` with the broker's refusal.
async fn connect(port: u16, user: &str, secret: &str) -> Result<Client, ConnectReturnCode> {
    let mut opts = MqttOptions::new(user, "127.0.0.1", port);
    opts.set_credentials(user, secret)
        .set_keep_alive(Duration::from_secs(5));
    let (client, mut events) = AsyncClient::new(opts, 100);
    loop {
        match tokio::time::timeout(Duration::from_secs(10), events.poll())
            .await
            .expect("the broker answers the connection")
        {
            Ok(Event::Incoming(Packet::ConnAck(_))) => return Ok(Client { client, events }),
            Ok(_) => {}
            Err(ConnectionError::ConnectionRefused(code)) => return Err(code),
            Err(e) => panic!("{user}: unexpected connection error {e}"),
        }
    }
}

impl Client {
    async fn subscribe(&mut self, topic: &str) {
        self.client
            .subscribe(topic, QoS::AtLeastOnce)
            .await
            .unwrap();
        loop {
            if let Event::Incoming(Packet::SubAck(_)) = self.events.poll().await.unwrap() {
                return;
            }
        }
    }

    async fn publish(&mut self, topic: &str, payload: &str) {
        self.client
            .publish(topic, QoS::AtLeastOnce, false, payload.as_bytes().to_vec())
            .await
            .unwrap();
        loop {
            if let Event::Incoming(Packet::PubAck(_)) = self.events.poll().await.unwrap() {
                return;
            }
        }
    }

    /// Publishes what the broker should refuse. Mosquitto 2.0 answers a denied publish
    /// from an MQTT 3.1.1 client with an MQTT 5 reason code (rc 135), which breaks the
    /// client's connection: either outcome is fine here, delivery is what is checked.
    async fn publish_refused(mut self, topic: &str, payload: &str) {
        self.client
            .publish(topic, QoS::AtLeastOnce, false, payload.as_bytes().to_vec())
            .await
            .unwrap();
        let _ = tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                match self.events.poll().await {
                    Ok(Event::Incoming(Packet::PubAck(_))) | Err(_) => return,
                    Ok(_) => {}
                }
            }
        })
        .await;
    }

    /// Drives the connection for a moment; the topics of what arrived meanwhile.
    async fn pump(&mut self, for_: Duration) -> Vec<String> {
        let mut got = Vec::new();
        let _ = tokio::time::timeout(for_, async {
            loop {
                if let Ok(Event::Incoming(Packet::Publish(p))) = self.events.poll().await {
                    got.push(p.topic);
                }
            }
        })
        .await;
        got
    }

    /// Every message received until one whose payload is `marker` arrives.
    async fn received_until(&mut self, marker: &str) -> Vec<(String, String)> {
        let mut got = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                if let Event::Incoming(Packet::Publish(p)) = self.events.poll().await.unwrap() {
                    let payload = String::from_utf8_lossy(&p.payload).into_owned();
                    let last = payload == marker;
                    got.push((p.topic, payload));
                    if last {
                        return;
                    }
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("marker {marker:?} never arrived; got {got:?}"));
        got
    }
}

fn write_registry(dir: &Path) -> (String, String) {
    let meters = dir.join("meters.csv");
    std::fs::write(
        &meters,
        "meter_id,district_id,kind,lat,lon,report_every_h\n\
         M1,D1,customer,45.0,9.0,24\nM2,D1,customer,45.001,9.001,24\n",
    )
    .unwrap();
    let crews = dir.join("crews.json");
    std::fs::write(
        &crews,
        r#"[{"id":"C1","name":"C1","skills":["leak"],"home":{"lat":45.0,"lon":9.0},"on_shift":true},
            {"id":"C2","name":"C2","skills":["leak"],"home":{"lat":45.0,"lon":9.0},"on_shift":true}]"#,
    )
    .unwrap();
    (
        meters.to_string_lossy().into_owned(),
        crews.to_string_lossy().into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_broker_lets_each_device_speak_only_for_itself() {
    let dir = tempdir();
    let db = format!("sqlite://{}/lw.db", dir.display());
    let (meters, crews) = write_registry(&dir);
    leakwatch(&db, &["meters", "import", &meters]);
    leakwatch(&db, &["crews", "import", &crews]);

    // Unknown ids get nothing.
    let refused = Command::new(env!("CARGO_BIN_EXE_leakwatch"))
        .args(["devices", "issue", "M1", "NOPE"])
        .env("LEAKWATCH__DATABASE__URL", &db)
        .output()
        .unwrap();
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("NOPE"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );

    let mut s = secrets(&leakwatch(&db, &["devices", "issue", "--all-meters"]));
    s.extend(secrets(&leakwatch(
        &db,
        &["devices", "issue", "--kind", "crew", "C1", "C2"],
    )));
    s.extend(secrets(&leakwatch(
        &db,
        &["devices", "issue", "--kind", "service", "leakwatch"],
    )));
    assert_eq!(s.len(), 5, "{s:?}");
    // The secrets are printed once and never stored.
    let listed = leakwatch(&db, &["devices", "list"]);
    for secret in s.values() {
        assert!(!listed.contains(secret.as_str()));
    }

    let conf = dir.join("broker");
    let conf_s = conf.to_string_lossy().into_owned();
    leakwatch(&db, &["broker-config", "--out", &conf_s]);
    let passwords = std::fs::read_to_string(conf.join("passwords")).unwrap();
    for secret in s.values() {
        assert!(
            !passwords.contains(secret.as_str()),
            "only hashes are written"
        );
    }
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(conf.join("passwords"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "the password file is private: {mode:o}");
    }

    let broker = OwnMosquitto::start_with(|_| {
        format!(
            "allow_anonymous false\npassword_file {}/passwords\nacl_file {}/acl\n",
            conf.display(),
            conf.display()
        )
    })
    .expect("mosquitto");
    let port = broker.port;

    // Anonymous and wrong secrets are refused.
    assert!(connect(port, "M1", "wrong").await.is_err());
    assert!(connect(port, "nobody", "x").await.is_err());

    let mut service = connect(port, "leakwatch", &s["leakwatch"]).await.unwrap();
    service.subscribe("gas/+/+/up").await;
    service.subscribe("crews/+/location").await;

    // A meter publishing for another meter is refused by the broker; its own gets through.
    let m1 = connect(port, "M1", &s["M1"]).await.unwrap();
    m1.publish_refused("gas/D1/M2/up", "forged by M1").await;
    let mut m1 = connect(port, "M1", &s["M1"]).await.unwrap();
    m1.publish("gas/D1/M1/up", "M1 own").await;
    let got = service.received_until("M1 own").await;
    assert_eq!(got, vec![("gas/D1/M1/up".to_owned(), "M1 own".to_owned())]);

    // A meter reads nothing, not even its own uplink.
    m1.subscribe("gas/D1/M1/up").await;
    m1.publish("gas/D1/M1/up", "M1 second").await;
    service.received_until("M1 second").await;
    assert_eq!(
        m1.pump(Duration::from_millis(500)).await,
        Vec::<String>::new()
    );

    // A crew's phone reads its own jobs only, and moves only itself.
    let mut c1 = connect(port, "C1", &s["C1"]).await.unwrap();
    c1.subscribe("crews/C2/jobs").await;
    c1.subscribe("crews/C1/jobs").await;
    service.publish("crews/C2/jobs", "job for C2").await;
    service.publish("crews/C1/jobs", "job for C1").await;
    let got = c1.received_until("job for C1").await;
    assert_eq!(
        got,
        vec![("crews/C1/jobs".to_owned(), "job for C1".to_owned())]
    );

    c1.publish_refused("crews/C2/location", "C1 moving C2")
        .await;
    let mut c1 = connect(port, "C1", &s["C1"]).await.unwrap();
    c1.publish("crews/C1/location", "C1 here").await;
    let got = service.received_until("C1 here").await;
    assert_eq!(
        got,
        vec![("crews/C1/location".to_owned(), "C1 here".to_owned())]
    );
    // Nor may a crew's phone publish readings.
    c1.publish_refused("gas/D1/M1/up", "crew as meter").await;
    m1.publish("gas/D1/M1/up", "M1 third").await;
    let got = service.received_until("M1 third").await;
    assert_eq!(
        got,
        vec![("gas/D1/M1/up".to_owned(), "M1 third".to_owned())]
    );

    // Revoked: M2 connects before, not after the broker reloads the new files.
    assert!(connect(port, "M2", &s["M2"]).await.is_ok());
    leakwatch(&db, &["devices", "revoke", "M2"]);
    // Rotated: M1's old secret stops working, the new one works.
    let rotated = secrets(&leakwatch(&db, &["devices", "rotate", "M1"]));
    leakwatch(&db, &["broker-config", "--out", &conf_s]);
    broker.reload();
    let mut refused = false;
    for _ in 0..50 {
        if connect(port, "M2", &s["M2"]).await.is_err() {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(refused, "a revoked meter still connects after the reload");
    assert!(connect(port, "M1", &s["M1"]).await.is_err());
    let mut m1 = connect(port, "M1", &rotated["M1"]).await.unwrap();
    m1.publish("gas/D1/M1/up", "M1 rotated").await;
    service.received_until("M1 rotated").await;
    let _ = std::fs::remove_dir_all(&dir);
}

fn tempdir() -> std::path::PathBuf {
    let d = std::env::temp_dir().join(crate::support::unique("lw-devices-"));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// The credential registry on PostgreSQL: issue, rotate and revoke as on SQLite, and
/// the broker's files follow.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_live_in_postgres_too() {
    let Some(admin) = crate::support::required_env("LEAKWATCH_TEST_PG") else {
        return;
    };
    let db = leakwatch_store::testing::fresh_pg_database(&admin)
        .await
        .unwrap();
    let dir = tempdir();
    let (meters, _) = write_registry(&dir);
    leakwatch(&db, &["meters", "import", &meters]);
    let first = secrets(&leakwatch(&db, &["devices", "issue", "M1", "M2"]));
    let rotated = secrets(&leakwatch(&db, &["devices", "rotate", "M2"]));
    assert_ne!(first["M2"], rotated["M2"]);
    leakwatch(&db, &["devices", "revoke", "M1"]);
    let listed = leakwatch(&db, &["devices", "list"]);
    let rows: Vec<Vec<&str>> = listed
        .lines()
        .skip(1)
        .map(|l| l.split(',').collect())
        .collect();
    assert_eq!(rows.len(), 2, "{listed}");
    assert_eq!((rows[0][0], rows[0][1]), ("M1", "meter"));
    assert!(!rows[0][4].is_empty(), "M1 is revoked: {listed}");
    assert!(rows[1][4].is_empty(), "M2 is active: {listed}");
    let conf = dir.join("broker");
    leakwatch(&db, &["broker-config", "--out", &conf.to_string_lossy()]);
    let passwords = std::fs::read_to_string(conf.join("passwords")).unwrap();
    assert!(
        passwords.starts_with("M2:$7$101$") && !passwords.contains("M1:"),
        "{passwords}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
