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
pub(crate) fn leakwatch(db: &str, args: &[&str]) -> String {
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
pub(crate) fn secrets(out: &str) -> HashMap<String, String> {
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

pub(crate) fn write_registry(dir: &Path) -> (String, String) {
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

pub(crate) fn tempdir() -> std::path::PathBuf {
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

/// Test certificates made with rcgen: one CA, a server certificate for 127.0.0.1 and
/// localhost, and client certificates whose CN is a broker identity; each certificate
/// gets the next serial number, so that [`Pki::crl`] can revoke it by name.
pub struct Pki {
    pub dir: std::path::PathBuf,
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
    serials: std::sync::Mutex<HashMap<String, u64>>,
}

impl Pki {
    pub fn new(dir: &Path) -> Pki {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "leakwatch test CA");
        let ca = params.self_signed(&key).unwrap();
        std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
        Pki {
            dir: dir.to_owned(),
            issuer: rcgen::Issuer::new(params, key),
            serials: std::sync::Mutex::new(HashMap::new()),
        }
    }

    pub fn ca(&self) -> std::path::PathBuf {
        self.dir.join("ca.pem")
    }

    /// A certificate for `cn` (also a DNS/IP name: the server's), as (cert, key) files.
    pub fn issue(&self, cn: &str, names: &[&str]) -> (std::path::PathBuf, std::path::PathBuf) {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params =
            rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
        let serial = {
            let mut serials = self.serials.lock().unwrap();
            let next = 1000 + serials.len() as u64;
            serials.insert(cn.to_owned(), next);
            next
        };
        params.serial_number = Some(serial.into());
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        let (c, k) = (
            self.dir.join(format!("{cn}.pem")),
            self.dir.join(format!("{cn}.key")),
        );
        std::fs::write(&c, cert.pem()).unwrap();
        std::fs::write(&k, key.serialize_pem()).unwrap();
        (c, k)
    }

    /// Writes the CA's certificate revocation list (PEM, `crl.pem`) revoking the
    /// certificates issued to `revoked`; returns its path.
    pub fn crl(&self, number: u64, revoked: &[&str]) -> std::path::PathBuf {
        let serials = self.serials.lock().unwrap();
        let params = rcgen::CertificateRevocationListParams {
            this_update: rcgen::date_time_ymd(2000, 1, 1),
            next_update: rcgen::date_time_ymd(2999, 1, 1),
            crl_number: number.into(),
            issuing_distribution_point: None,
            revoked_certs: revoked
                .iter()
                .map(|cn| rcgen::RevokedCertParams {
                    serial_number: serials[*cn].into(),
                    revocation_time: rcgen::date_time_ymd(2000, 1, 1),
                    reason_code: Some(rcgen::RevocationReason::KeyCompromise),
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: rcgen::KeyIdMethod::Sha256,
        };
        let crl = params.signed_by(&self.issuer).unwrap();
        let path = self.dir.join("crl.pem");
        std::fs::write(&path, crl.pem().unwrap()).unwrap();
        path
    }
}

/// Connects to a TLS broker with the client certificate `cert` (or none) as client id
/// `id`; `Err` with the reason the connection failed.
async fn connect_tls(
    port: u16,
    id: &str,
    ca: &Path,
    cert: Option<(&Path, &Path)>,
) -> Result<Client, String> {
    let mut opts = MqttOptions::new(id, "127.0.0.1", port);
    opts.set_keep_alive(Duration::from_secs(5));
    let security = leakwatch_mqtt::Security {
        login: None,
        tls: Some(leakwatch_mqtt::Tls::from_files(ca, cert).unwrap()),
    };
    security.apply(&mut opts);
    let (client, mut events) = AsyncClient::new(opts, 100);
    loop {
        match tokio::time::timeout(Duration::from_secs(10), events.poll())
            .await
            .expect("the broker answers the connection")
        {
            Ok(Event::Incoming(Packet::ConnAck(_))) => return Ok(Client { client, events }),
            Ok(_) => {}
            Err(e) => return Err(e.to_string()),
        }
    }
}

fn uplink(meter: &str, hour: u32, vol: f64) -> String {
    serde_json::json!({"v": 1, "meter": meter, "readings": [
        {"t": format!("2026-11-26T{hour:02}:00:00Z"), "vol": vol}
    ]})
    .to_string()
}

/// leakwatch ingests from a Mosquitto that takes only TLS with client certificates
/// (CN = username, `use_identity_as_username`) and the generated ACL: leakwatch logs in
/// with its own certificate, a meter's certificate publishes its own readings, is
/// refused on another meter's topic, and a payload for another meter on its own topic
/// is dead-lettered `meter_mismatch`. No certificate, or one from another CA: no
/// connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leakwatch_ingests_over_tls_with_a_client_certificate() {
    let dir = tempdir();
    let db = format!("sqlite://{}/lw.db", dir.display());
    let (meters, _) = write_registry(&dir);
    leakwatch(&db, &["meters", "import", &meters]);
    leakwatch(&db, &["devices", "issue", "--all-meters"]);
    leakwatch(&db, &["devices", "issue", "--kind", "service", "leakwatch"]);
    leakwatch(&db, &["devices", "issue", "--kind", "headend", "HE"]);
    let conf = dir.join("broker");
    leakwatch(&db, &["broker-config", "--out", &conf.to_string_lossy()]);

    let pki = Pki::new(&dir);
    let (server_cert, server_key) = pki.issue("broker", &["127.0.0.1", "localhost"]);
    let (lw_cert, lw_key) = pki.issue("leakwatch", &[]);
    let (m1_cert, m1_key) = pki.issue("M1", &[]);
    let broker = OwnMosquitto::start_with(|_| {
        format!(
            "cafile {}\ncertfile {}\nkeyfile {}\nrequire_certificate true\n\
             use_identity_as_username true\nallow_anonymous false\nacl_file {}/acl\n",
            pki.ca().display(),
            server_cert.display(),
            server_key.display(),
            conf.display()
        )
    })
    .expect("mosquitto");
    let port = broker.port;

    let (ca, lw_cert2, lw_key2) = (pki.ca(), lw_cert.clone(), lw_key.clone());
    let svc = crate::support::Service::start(crate::support::Backend::EmbeddedSqlite, |cfg| {
        cfg.database.url = db.parse().unwrap();
        cfg.mqtt.url = Some(format!("mqtts://127.0.0.1:{port}").parse().unwrap());
        cfg.mqtt.prefix = "gas".into();
        cfg.mqtt.crew_prefix = "crews".into();
        cfg.mqtt.ca_file = Some(ca);
        cfg.mqtt.client_cert = Some(lw_cert2);
        cfg.mqtt.client_key = Some(lw_key2);
    })
    .await
    .expect("the service starts");
    // Ready: both sessions are up over TLS with their subscriptions granted.

    let mut m1 = connect_tls(port, "M1", &pki.ca(), Some((&m1_cert, &m1_key)))
        .await
        .expect("M1 connects with its certificate");
    m1.publish("gas/D1/M1/up", &uplink("M1", 0, 1.0)).await;
    // M2's reading on M1's own topic: the broker lets it through, leakwatch does not.
    m1.publish("gas/D1/M1/up", &uplink("M2", 0, 5.0)).await;
    // On M2's topic: refused by the broker (Mosquitto closes the connection).
    m1.publish_refused("gas/D1/M2/up", &uplink("M2", 1, 6.0))
        .await;
    let mut m1 = connect_tls(port, "M1", &pki.ca(), Some((&m1_cert, &m1_key)))
        .await
        .unwrap();
    m1.publish("gas/D1/M1/up", &uplink("M1", 1, 2.0)).await;

    let store = svc.running().store.clone();
    crate::support::wait_for("M1's two readings", Duration::from_secs(20), || async {
        let n = store
            .readings(
                &leakwatch_core::MeterId::parse("M1").unwrap(),
                None,
                None,
                100,
            )
            .await
            .unwrap()
            .len();
        (n == 2).then_some(())
    })
    .await;
    let dead = crate::support::wait_for("the dead letter", Duration::from_secs(20), || async {
        let d = store.list_dead_letters(10).await.unwrap();
        (!d.is_empty()).then_some(d)
    })
    .await;
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(
        (dead[0].topic.as_str(), dead[0].reason.as_str()),
        ("gas/D1/M1/up", "meter_mismatch")
    );
    assert!(dead[0].detail.contains("M2"), "{}", dead[0].detail);
    assert_eq!(
        store.count_readings().await.unwrap(),
        2,
        "nothing stored for M2"
    );

    // No certificate, or a certificate from another CA: no connection.
    let e = connect_tls(port, "M1", &pki.ca(), None).await.err();
    assert!(e.is_some(), "connected without a certificate");
    let other_dir = dir.join("other");
    std::fs::create_dir_all(&other_dir).unwrap();
    let other = Pki::new(&other_dir);
    let (fake_cert, fake_key) = other.issue("M1", &[]);
    let e = connect_tls(port, "M1", &pki.ca(), Some((&fake_cert, &fake_key)))
        .await
        .err();
    assert!(e.is_some(), "connected with another CA's certificate");

    // `leakwatch sim` as the head-end HE, over TLS with its certificate: its fleet's
    // meters are not in this registry, so what it publishes arrives as dead letters.
    let (he_cert, he_key) = pki.issue("HE", &[]);
    let out = Command::new(env!("CARGO_BIN_EXE_leakwatch"))
        .args([
            "sim",
            "--mqtt",
            &format!("mqtts://127.0.0.1:{port}"),
            "--ca-file",
        ])
        .arg(pki.ca())
        .arg("--client-cert")
        .arg(&he_cert)
        .arg("--client-key")
        .arg(&he_key)
        .args([
            "--districts",
            "1",
            "--meters-per-district",
            "2",
            "--hours",
            "2",
        ])
        .args(["--sim-hour-ms", "0", "--push-every-h", "1"])
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "leakwatch sim over TLS: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    crate::support::wait_for(
        "the simulator's messages",
        Duration::from_secs(20),
        || async {
            let d = store.list_dead_letters(100).await.unwrap();
            d.iter().any(|d| d.reason == "unknown_meter").then_some(())
        },
    )
    .await;
    svc.stop().await;
    drop(broker);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Revoking a client-certificate identity on Mosquitto (TLS listener,
/// `use_identity_as_username`, the generated ACL, a `crlfile`): `devices revoke` plus
/// `broker-config` and a reload take the identity out of the ACL (its still valid
/// certificate connects but delivers nothing); the CA's revocation list (made here
/// with rcgen) and a reload refuse the connection itself, while other meters go on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_client_certificate_no_longer_connects() {
    let dir = tempdir();
    let db = format!("sqlite://{}/lw.db", dir.display());
    let (meters, _) = write_registry(&dir);
    leakwatch(&db, &["meters", "import", &meters]);
    leakwatch(&db, &["devices", "issue", "--all-meters"]);
    leakwatch(&db, &["devices", "issue", "--kind", "service", "leakwatch"]);
    let conf = dir.join("broker");
    let conf_s = conf.to_string_lossy().into_owned();
    leakwatch(&db, &["broker-config", "--out", &conf_s]);

    let pki = Pki::new(&dir);
    let (server_cert, server_key) = pki.issue("broker", &["127.0.0.1", "localhost"]);
    let (lw_cert, lw_key) = pki.issue("leakwatch", &[]);
    let (m1_cert, m1_key) = pki.issue("M1", &[]);
    let (m2_cert, m2_key) = pki.issue("M2", &[]);
    let crl = pki.crl(1, &[]);
    let broker = OwnMosquitto::start_with(|_| {
        format!(
            "cafile {}\ncertfile {}\nkeyfile {}\nrequire_certificate true\n\
             use_identity_as_username true\ncrlfile {}\nallow_anonymous false\nacl_file {}/acl\n",
            pki.ca().display(),
            server_cert.display(),
            server_key.display(),
            crl.display(),
            conf.display()
        )
    })
    .expect("mosquitto");
    let port = broker.port;
    let ca = pki.ca();
    let m1 = (m1_cert.as_path(), m1_key.as_path());
    let m2 = (m2_cert.as_path(), m2_key.as_path());

    let mut service = connect_tls(port, "lw", &ca, Some((&lw_cert, &lw_key)))
        .await
        .expect("leakwatch connects with its certificate");
    service.subscribe("gas/+/+/up").await;
    let mut c2 = connect_tls(port, "M2", &ca, Some(m2)).await.unwrap();
    c2.publish("gas/D1/M2/up", "M2 before").await;
    service.received_until("M2 before").await;

    // Revoked in the registry: out of the ACL at the reload. Its certificate is still
    // good, so it connects, but what it publishes reaches no one.
    leakwatch(&db, &["devices", "revoke", "M2"]);
    leakwatch(&db, &["broker-config", "--out", &conf_s]);
    broker.reload();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let c2 = connect_tls(port, "M2", &ca, Some(m2))
        .await
        .expect("a valid certificate still connects");
    c2.publish_refused("gas/D1/M2/up", "M2 out of the ACL")
        .await;
    let mut c1 = connect_tls(port, "M1", &ca, Some(m1)).await.unwrap();
    c1.publish("gas/D1/M1/up", "M1 marker").await;
    assert_eq!(
        service.received_until("M1 marker").await,
        vec![("gas/D1/M1/up".to_owned(), "M1 marker".to_owned())],
        "a meter revoked in the registry still delivers"
    );

    // Revoked by the CA: the connection itself is refused after the reload.
    pki.crl(2, &["M2"]);
    broker.reload();
    let mut refused = None;
    for _ in 0..50 {
        if let Err(e) = connect_tls(port, "M2", &ca, Some(m2)).await {
            refused = Some(e);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let refused = refused.expect("a revoked certificate still connects after the reload");
    // The broker says why (TLS alert certificate_revoked), not some other failure.
    assert!(refused.contains("CertificateRevoked"), "{refused}");
    // The others are not affected.
    let mut c1 = connect_tls(port, "M1", &ca, Some(m1))
        .await
        .expect("M1 still connects");
    c1.publish("gas/D1/M1/up", "M1 after").await;
    service.received_until("M1 after").await;
    drop(broker);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Whether the broker at `port` admits `user` with `secret` as client id `id`.
async fn admitted(port: u16, id: &str, login: Option<(&str, &str)>) -> bool {
    let mut opts = MqttOptions::new(id, "127.0.0.1", port);
    if let Some((u, p)) = login {
        opts.set_credentials(u, p);
    }
    let (_client, mut events) = AsyncClient::new(opts, 10);
    loop {
        match tokio::time::timeout(Duration::from_secs(10), events.poll())
            .await
            .expect("the broker answers")
        {
            Ok(Event::Incoming(Packet::ConnAck(_))) => return true,
            Ok(_) => {}
            Err(_) => return false,
        }
    }
}

/// The embedded broker of `leakwatch run` (the default `mqtt.embedded_auth =
/// registry`) admits the registry's devices, each as itself (client id = username),
/// picks up issued and revoked credentials while running, and leakwatch's own
/// sessions log in with the identity it minted. rumqttd has no per-topic rules: a meter
/// publishing on another meter's topic is not refused there; leakwatch dead-letters
/// it when the payload names the sender (and cannot tell when it does not: see
/// deploy/README.md).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_embedded_broker_admits_registered_devices_as_themselves() {
    use leakwatch_core::device::DeviceKind;
    let Some(svc) =
        crate::support::Service::start(crate::support::Backend::EmbeddedSqlite, |cfg| {
            cfg.mqtt.embedded_auth = leakwatch::config::EmbeddedAuth::Registry;
        })
        .await
    else {
        return;
    };
    // Ready means the ingestor and the crews' channel logged in.
    let r = svc.running();
    let port = r.mqtt_port;
    let store = r.store.clone();
    let meters = serde_json::json!([
        {"meter_id": "M1", "district_id": "D1", "kind": "customer", "lat": 43.77, "lon": 11.25},
        {"meter_id": "M2", "district_id": "D1", "kind": "customer", "lat": 43.78, "lon": 11.26}
    ]);
    assert_eq!(svc.post("/api/v1/meters", &meters).await.0, 200);
    let m1_secret = leakwatch::devices::new_secret().unwrap();
    let now = chrono::Utc::now();
    for (name, secret) in [
        ("M1", &m1_secret),
        ("M2", &leakwatch::devices::new_secret().unwrap()),
    ] {
        let hash = leakwatch::devices::hash_secret(secret).unwrap();
        store
            .put_device_credential(name, DeviceKind::Meter, &hash, now)
            .await
            .unwrap();
    }
    // Issued while running: admitted after the next reload.
    crate::support::wait_for(
        "M1 admitted",
        leakwatch::app::LOGINS_REFRESH * 3,
        || async {
            admitted(port, "M1", Some(("M1", &m1_secret)))
                .await
                .then_some(())
        },
    )
    .await;
    assert!(!admitted(port, "M1", None).await, "anonymous");
    assert!(
        !admitted(port, "M1", Some(("M1", "wrong"))).await,
        "wrong secret"
    );
    assert!(
        !admitted(port, "M2", Some(("M1", &m1_secret))).await,
        "M1's login with M2's client id"
    );
    assert!(!admitted(port, "X", Some(("X", "x"))).await, "unknown");

    let mut opts = MqttOptions::new("M1", "127.0.0.1", port);
    opts.set_credentials("M1", m1_secret.as_str());
    let (client, events) = AsyncClient::new(opts, 10);
    let mut m1 = Client { client, events };
    let up = |meter: &str| format!("{}/D1/{meter}/up", svc.prefix);
    m1.publish(&up("M1"), &uplink("M1", 0, 1.0)).await;
    // No topic rules on rumqttd: M1 gets onto M2's topic; the payload gives it away.
    m1.publish(&up("M2"), &uplink("M1", 1, 2.0)).await;
    let dead = crate::support::wait_for("the dead letter", Duration::from_secs(20), || async {
        let d = store.list_dead_letters(10).await.unwrap();
        (!d.is_empty()).then_some(d)
    })
    .await;
    assert_eq!(
        (dead[0].topic.as_str(), dead[0].reason.as_str()),
        (up("M2").as_str(), "meter_mismatch"),
    );
    let id = |m: &str| leakwatch_core::MeterId::parse(m).unwrap();
    assert_eq!(
        store
            .readings(&id("M1"), None, None, 10)
            .await
            .unwrap()
            .len(),
        1
    );
    assert!(
        store
            .readings(&id("M2"), None, None, 10)
            .await
            .unwrap()
            .is_empty()
    );

    // Revoked while running: no new connection after the next reload.
    store
        .revoke_device_credential("M1", chrono::Utc::now())
        .await
        .unwrap();
    crate::support::wait_for("M1 refused", leakwatch::app::LOGINS_REFRESH * 3, || async {
        (!admitted(port, "M1", Some(("M1", &m1_secret))).await).then_some(())
    })
    .await;
    svc.stop().await;
}

/// Crews' phones on the embedded broker (registry logins, the default): each logs in
/// as itself only; leakwatch uses a position only for a registered crew and a valid
/// fix (dead letters otherwise). What rumqttd cannot enforce is asserted too, so that
/// deploy/README.md's list of it stays true: a logged-in phone can read another
/// crew's jobs, push a job message to another phone, and move another crew.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_embedded_broker_admits_crews_as_themselves_and_what_it_cannot_stop() {
    use leakwatch_core::device::DeviceKind;
    let Some(svc) =
        crate::support::Service::start(crate::support::Backend::EmbeddedSqlite, |cfg| {
            cfg.mqtt.embedded_auth = leakwatch::config::EmbeddedAuth::Registry;
        })
        .await
    else {
        return;
    };
    let r = svc.running();
    let port = r.mqtt_port;
    let store = r.store.clone();
    let crew = |id: &str, lat: f64| {
        serde_json::json!({"id": id, "name": id, "skills": ["emergency"],
                           "home": {"lat": lat, "lon": 11.25}, "on_shift": true})
    };
    let (status, body) = svc
        .post(
            "/api/v1/crews",
            &serde_json::json!([crew("C1", 43.70), crew("C2", 43.80)]),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let now = chrono::Utc::now();
    let mut secret = HashMap::new();
    for name in ["C1", "C2"] {
        let s = leakwatch::devices::new_secret().unwrap();
        let hash = leakwatch::devices::hash_secret(&s).unwrap();
        store
            .put_device_credential(name, DeviceKind::Crew, &hash, now)
            .await
            .unwrap();
        secret.insert(name, s);
    }
    crate::support::wait_for(
        "C1 admitted",
        leakwatch::app::LOGINS_REFRESH * 3,
        || async {
            admitted(port, "C1", Some(("C1", &secret["C1"])))
                .await
                .then_some(())
        },
    )
    .await;
    assert!(!admitted(port, "C1", None).await, "anonymous");
    assert!(
        !admitted(port, "C2", Some(("C1", &secret["C1"]))).await,
        "C1's login as client id C2"
    );
    assert!(
        !admitted(port, "C2", Some(("C2", &secret["C1"]))).await,
        "C2 with C1's secret"
    );

    let phone = |id: &'static str| {
        let mut opts = MqttOptions::new(id, "127.0.0.1", port);
        opts.set_credentials(id, secret[id].as_str())
            .set_keep_alive(Duration::from_secs(5));
        let (client, events) = AsyncClient::new(opts, 10);
        Client { client, events }
    };
    // The crews' prefix of `Service::start` (support.rs).
    let cp = format!("{}-crews", svc.prefix);
    let mut c1 = phone("C1");
    let mut c2 = phone("C2");
    c1.subscribe(&format!("{cp}/C1/jobs")).await;
    c2.subscribe(&format!("{cp}/C2/jobs")).await;

    let position = |id: &'static str| {
        let svc = &svc;
        async move {
            let (_, crews) = svc.get("/api/v1/crews").await;
            crews["items"]
                .as_array()
                .unwrap()
                .iter()
                .find(|c| c["id"] == id)
                .and_then(|c| c["position"]["lat"].as_f64())
        }
    };
    // Its own position: used.
    c1.publish(&format!("{cp}/C1/location"), r#"{"lat":43.71,"lon":11.25}"#)
        .await;
    crate::support::wait_for("C1's position", Duration::from_secs(15), || async {
        (position("C1").await == Some(43.71)).then_some(())
    })
    .await;
    // A crew leakwatch does not know, and a fix that is not one: dead letters.
    c1.publish(&format!("{cp}/C9/location"), r#"{"lat":43.72,"lon":11.25}"#)
        .await;
    c1.publish(&format!("{cp}/C1/location"), r#"{"lat":"north"}"#)
        .await;
    let reasons = crate::support::wait_for(
        "the crews' dead letters",
        Duration::from_secs(15),
        || async {
            let d = store.list_dead_letters(10).await.unwrap();
            let mut reasons: Vec<(String, String)> =
                d.into_iter().map(|d| (d.topic, d.reason)).collect();
            reasons.sort();
            (reasons.len() >= 2).then_some(reasons)
        },
    )
    .await;
    assert_eq!(
        reasons,
        vec![
            (format!("{cp}/C1/location"), "bad_location".to_owned()),
            (format!("{cp}/C9/location"), "unknown_crew".to_owned()),
        ]
    );

    // NOT ENFORCED by rumqttd (no per-topic rules; deploy/README.md says so): C1 reads
    // C2's jobs, C2 pushes a message to C1's phone, and C1 moves C2.
    c1.subscribe(&format!("{cp}/C2/jobs")).await;
    c2.publish(&format!("{cp}/C1/jobs"), "not a job from leakwatch")
        .await;
    let got = c1.received_until("not a job from leakwatch").await;
    assert_eq!(got.len(), 1, "{got:?}");
    c2.publish(&format!("{cp}/C2/jobs"), "C2's topic").await;
    c1.received_until("C2's topic").await;
    c1.publish(&format!("{cp}/C2/location"), r#"{"lat":43.99,"lon":11.25}"#)
        .await;
    crate::support::wait_for("C2 moved by C1", Duration::from_secs(15), || async {
        (position("C2").await == Some(43.99)).then_some(())
    })
    .await;
    svc.stop().await;
}
