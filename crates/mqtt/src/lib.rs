//! One MQTT session for every leakwatch edge (the ingestor, the crews' channel, the
//! demo's simulated crews): the connection and its reconnection with backoff, the
//! subscriptions renewed on every connection, the persistent session, manual
//! acknowledgements and publishes handed to the connection without ever blocking on
//! it, the packet-size limits, and the readiness `/readyz` reads.
//!
//! A [`Session`] owns no task: its owner calls [`Session::next`] in its own loop (it
//! is cancel-safe, so it can sit in a `select!`), and [`Session::close`] at the end.
//! It knows nothing of meters or crews; the payload contracts live in
//! `leakwatch-wire`.
//!
//! # Packet sizes
//!
//! MQTT 3.1.1 has no way for a client to refuse one message: a client that finds a
//! packet over its own limit can only drop the connection, and the broker then
//! redelivers the same message, forever. So every session accepts any packet the
//! protocol allows ([`MAX_INCOMING_PACKET`], 256 MiB) and lets its owner dead-letter
//! what breaks the payload contract; brokers are configured to refuse packets over
//! [`BROKER_MAX_PACKET`] (1 MiB) at the door (`deploy/mosquitto/mosquitto.conf`, the
//! embedded broker), which bounds what a session ever holds. Outgoing packets are
//! limited to [`MAX_OUTGOING_PACKET`]; [`Session::publish`] refuses a larger one
//! before it reaches the connection (where it would fail and be retried forever).
//!
//! # Logins and TLS
//!
//! [`Security`] says how a session proves who it is ([`Login`]: a username and a
//! password that never prints) and whether the link is encrypted ([`Tls`]: rustls with
//! the ring provider, the broker checked against a CA file, optionally a client
//! certificate for brokers that take the certificate's CN as the username).

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};
use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Packet, SubscribeReasonCode};
use secrecy::{ExposeSecret, SecretString};
use std::collections::VecDeque;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::time::Instant;

pub use rumqttc::{Publish, QoS};

/// The largest packet a session accepts from the broker: the largest MQTT allows
/// (remaining length 268,435,455 bytes), so no message a broker delivers makes the
/// session drop its connection.
pub const MAX_INCOMING_PACKET: usize = 268_435_455;

/// The largest packet leakwatch's brokers take (`max_packet_size` in
/// `deploy/mosquitto/mosquitto.conf`, the embedded broker's limit): 1 MiB, sixteen
/// times the 64 KiB payload contract.
pub const BROKER_MAX_PACKET: usize = 1024 * 1024;

/// The largest packet a session sends.
pub const MAX_OUTGOING_PACKET: usize = 64 * 1024;

/// Backoff between connection attempts: 100 ms doubling to 5 s, with jitter.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// Where the broker is and what the session is.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// The session's name in logs and metrics (`ingest`, `crews`, ...).
    pub name: &'static str,
    pub host: String,
    pub port: u16,
    pub client_id: String,
    pub keep_alive: Duration,
    /// Clean session off: the broker keeps the subscriptions and the QoS 1 messages
    /// while the client is away.
    pub persistent: bool,
    /// Messages are acknowledged only through [`Session::ack`].
    pub manual_acks: bool,
    /// Outgoing QoS 1 messages not yet acknowledged by the broker, at most.
    pub inflight: u16,
    /// Topic filters subscribed at QoS 1 on every connection.
    pub subscriptions: Vec<String>,
    /// The login and TLS of the connection (none by default).
    pub security: Security,
}

/// How a session logs in and whether its link is encrypted.
#[derive(Debug, Clone, Default)]
pub struct Security {
    pub login: Option<Login>,
    pub tls: Option<Tls>,
}

impl Security {
    /// Sets the login and the TLS transport on rumqttc options (for clients that do
    /// not use [`Session`], like the simulator's publisher).
    pub fn apply(&self, opts: &mut MqttOptions) {
        if let Some(login) = &self.login {
            opts.set_credentials(login.username.clone(), login.password.expose_secret());
        }
        if let Some(tls) = &self.tls {
            opts.set_transport(rumqttc::Transport::Tls(rumqttc::TlsConfiguration::Rustls(
                tls.0.clone(),
            )));
        }
    }
}

/// A broker login: the password never prints (`Debug` shows `***`).
#[derive(Clone)]
pub struct Login {
    pub username: String,
    pub password: SecretString,
}

impl Login {
    pub fn new(username: impl Into<String>, password: impl Into<String>) -> Login {
        Login {
            username: username.into(),
            password: SecretString::from(password.into()),
        }
    }
}

impl std::fmt::Debug for Login {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Login")
            .field("username", &self.username)
            .field("password", &"***")
            .finish()
    }
}

/// A TLS client configuration (rustls, ring provider) for `mqtts://`.
#[derive(Clone)]
pub struct Tls(Arc<tokio_rustls::rustls::ClientConfig>);

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Tls(..)")
    }
}

/// Why a TLS client configuration cannot be made; names the file.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read the CA certificates {path}: {reason}")]
    Ca { path: String, reason: String },
    #[error("cannot read the client certificate {path}: {reason}")]
    Cert { path: String, reason: String },
    #[error("cannot read the client key {path}: {reason}")]
    Key { path: String, reason: String },
    #[error("the client certificate and key do not go together: {0}")]
    Config(String),
}

impl Tls {
    /// Trusts the PEM certificates in `ca` (and only those: a private CA, as brokers of
    /// a gas network use); with `client`, presents that PEM certificate chain and key.
    pub fn from_files(ca: &Path, client: Option<(&Path, &Path)>) -> Result<Tls, TlsError> {
        use tokio_rustls::rustls::pki_types::pem::PemObject;
        use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
        use tokio_rustls::rustls::{ClientConfig, RootCertStore};
        let shown = |p: &Path| p.display().to_string();
        let certs = |p: &Path| {
            CertificateDer::pem_file_iter(p)
                .and_then(|it| it.collect::<Result<Vec<_>, _>>())
                .map_err(|e| e.to_string())
                .and_then(|c| {
                    if c.is_empty() {
                        Err("no CERTIFICATE block in it".to_owned())
                    } else {
                        Ok(c)
                    }
                })
        };
        let mut roots = RootCertStore::empty();
        for c in certs(ca).map_err(|reason| TlsError::Ca {
            path: shown(ca),
            reason,
        })? {
            roots.add(c).map_err(|e| TlsError::Ca {
                path: shown(ca),
                reason: e.to_string(),
            })?;
        }
        let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Config(e.to_string()))?
            .with_root_certificates(roots);
        let config = match client {
            None => builder.with_no_client_auth(),
            Some((cert, key)) => {
                let chain = certs(cert).map_err(|reason| TlsError::Cert {
                    path: shown(cert),
                    reason,
                })?;
                let k = PrivateKeyDer::from_pem_file(key).map_err(|e| TlsError::Key {
                    path: shown(key),
                    reason: e.to_string(),
                })?;
                builder
                    .with_client_auth_cert(chain, k)
                    .map_err(|e| TlsError::Config(e.to_string()))?
            }
        };
        Ok(Tls(Arc::new(config)))
    }
}

/// Whether a session is connected with all its subscriptions granted; `/readyz`
/// reads it. Also exported as `leakwatch_mqtt_session_up{session}`.
#[derive(Debug)]
pub struct SessionHealth {
    name: &'static str,
    up: AtomicBool,
    /// Called with every change, for an owner's own gauge.
    hook: Option<fn(bool)>,
}

impl SessionHealth {
    pub fn new(name: &'static str) -> Arc<Self> {
        Arc::new(SessionHealth {
            name,
            up: AtomicBool::new(false),
            hook: None,
        })
    }

    /// Like [`SessionHealth::new`], also calling `hook` with every change.
    pub fn with_hook(name: &'static str, hook: fn(bool)) -> Arc<Self> {
        Arc::new(SessionHealth {
            name,
            up: AtomicBool::new(false),
            hook: Some(hook),
        })
    }

    /// Connected, and every subscription granted.
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    fn set(&self, up: bool) {
        self.up.store(up, Ordering::Relaxed);
        let v = if up { 1.0 } else { 0.0 };
        metrics::gauge!("leakwatch_mqtt_session_up", "session" => self.name).set(v);
        if let Some(hook) = self.hook {
            hook(up);
        }
    }
}

/// A publish [`Session::publish`] refused.
#[derive(Debug, thiserror::Error)]
#[error("a packet of {size} bytes to {topic} is over the {max}-byte limit")]
pub struct TooLarge {
    pub topic: String,
    pub size: usize,
    pub max: usize,
}

/// An MQTT session kept up across connection losses.
pub struct Session {
    cfg: SessionConfig,
    client: AsyncClient,
    events: EventLoop,
    health: Arc<SessionHealth>,
    backoff: ExponentialBackoff,
    /// When the next connection attempt may start (after a failure).
    retry_at: Option<Instant>,
    /// Acknowledgements and publishes the connection has not taken yet.
    acks: VecDeque<Publish>,
    publishes: VecDeque<(String, Vec<u8>)>,
    /// Connected since the last failure (for the log's level).
    connected: bool,
}

fn backoff() -> ExponentialBackoff {
    ExponentialBuilder::default()
        .with_min_delay(BACKOFF_MIN)
        .with_max_delay(BACKOFF_MAX)
        .with_factor(2.0)
        .with_jitter()
        .without_max_times()
        .build()
}

impl Session {
    /// A session that connects on the first [`Session::next`].
    pub fn new(cfg: SessionConfig, health: Arc<SessionHealth>) -> Session {
        let mut opts = MqttOptions::new(cfg.client_id.clone(), cfg.host.clone(), cfg.port);
        let queue = usize::from(cfg.inflight) * 4 + 64;
        opts.set_clean_session(!cfg.persistent)
            .set_manual_acks(cfg.manual_acks)
            .set_keep_alive(cfg.keep_alive)
            .set_inflight(cfg.inflight.max(1))
            .set_max_packet_size(MAX_INCOMING_PACKET, MAX_OUTGOING_PACKET)
            .set_request_channel_capacity(queue);
        cfg.security.apply(&mut opts);
        let (client, events) = AsyncClient::new(opts, queue);
        health.set(false);
        Session {
            cfg,
            client,
            events,
            health,
            backoff: backoff(),
            retry_at: None,
            acks: VecDeque::new(),
            publishes: VecDeque::new(),
            connected: false,
        }
    }

    pub fn health(&self) -> Arc<SessionHealth> {
        self.health.clone()
    }

    /// The next message from the broker. Connects, reconnects after a failure (with
    /// backoff), subscribes on every connection, and passes on what was queued with
    /// [`Session::ack`] and [`Session::publish`]. Cancel-safe.
    pub async fn next(&mut self) -> Publish {
        loop {
            if let Some(at) = self.retry_at {
                tokio::time::sleep_until(at).await;
                self.retry_at = None;
            }
            self.flush();
            match self.events.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                    self.backoff = backoff();
                    self.connected = true;
                    tracing::info!(
                        session = self.cfg.name, host = %self.cfg.host, port = self.cfg.port,
                        tls = self.cfg.security.tls.is_some(),
                        username = self.cfg.security.login.as_ref().map(|l| l.username.as_str()),
                        session_present = ack.session_present, "connected to the MQTT broker"
                    );
                    // Subscribing again is harmless when the broker kept the session.
                    let filters = self
                        .cfg
                        .subscriptions
                        .iter()
                        .map(|f| rumqttc::SubscribeFilter::new(f.clone(), QoS::AtLeastOnce));
                    if !self.cfg.subscriptions.is_empty()
                        && let Err(e) = self.client.try_subscribe_many(filters)
                    {
                        tracing::error!(session = self.cfg.name, error = %e, "could not subscribe");
                    } else if self.cfg.subscriptions.is_empty() {
                        self.health.set(true);
                    }
                }
                // Ready once every subscription is granted: from then on the broker
                // keeps every message for a persistent session.
                Ok(Event::Incoming(Packet::SubAck(ack))) => {
                    let refused = ack
                        .return_codes
                        .iter()
                        .any(|c| matches!(c, SubscribeReasonCode::Failure));
                    if refused {
                        tracing::error!(
                            session = self.cfg.name, filters = ?self.cfg.subscriptions,
                            "the broker refused a subscription (check its ACL); not ready"
                        );
                    }
                    self.health.set(!refused);
                }
                Ok(Event::Incoming(Packet::Publish(p))) => return p,
                Ok(_) => {}
                Err(e) => {
                    if let rumqttc::ConnectionError::ConnectionRefused(code) = &e {
                        tracing::error!(
                            session = self.cfg.name, host = %self.cfg.host, port = self.cfg.port,
                            username = self.cfg.security.login.as_ref().map(|l| l.username.as_str()),
                            refused = ?code, "the MQTT broker refused the login; retrying"
                        );
                    } else if self.connected {
                        tracing::warn!(session = self.cfg.name, error = %e, "MQTT connection lost; reconnecting");
                    } else {
                        tracing::debug!(session = self.cfg.name, error = %e, "MQTT broker still unreachable");
                    }
                    self.connected = false;
                    self.health.set(false);
                    let wait = self.backoff.next().unwrap_or(BACKOFF_MAX);
                    self.retry_at = Some(Instant::now() + wait);
                }
            }
        }
    }

    /// Acknowledges `p` (manual acknowledgements), in the order of the calls.
    pub fn ack(&mut self, p: Publish) {
        self.acks.push_back(p);
        self.flush();
    }

    /// Publishes at QoS 1, in the order of the calls; the connection sends it (again
    /// after a reconnection) until the broker acknowledges it. Refuses a packet over
    /// [`MAX_OUTGOING_PACKET`].
    pub fn publish(&mut self, topic: String, payload: Vec<u8>) -> Result<(), TooLarge> {
        // Fixed header (5) + topic length (2) + topic + packet id (2) + payload.
        let size = 9 + topic.len() + payload.len();
        if size > MAX_OUTGOING_PACKET {
            return Err(TooLarge {
                topic,
                size,
                max: MAX_OUTGOING_PACKET,
            });
        }
        self.publishes.push_back((topic, payload));
        self.flush();
        Ok(())
    }

    /// Hands queued acknowledgements and publishes to the connection without ever
    /// waiting on it.
    fn flush(&mut self) {
        while let Some(p) = self.acks.front() {
            if self.client.try_ack(p).is_err() {
                break;
            }
            self.acks.pop_front();
        }
        while let Some((topic, body)) = self.publishes.front() {
            if self
                .client
                .try_publish(topic.clone(), QoS::AtLeastOnce, false, body.clone())
                .is_err()
            {
                break;
            }
            self.publishes.pop_front();
        }
    }

    /// Sends what is queued and waits for the broker to acknowledge our publishes,
    /// for at most `within`, then disconnects. What is left unacknowledged either way
    /// the broker redelivers (incoming) or [`Session`] never sent (outgoing).
    pub async fn close(mut self, within: Duration) {
        if self.connected {
            let _ = tokio::time::timeout(within, async {
                loop {
                    self.flush();
                    if self.acks.is_empty()
                        && self.publishes.is_empty()
                        && self.events.state.inflight() == 0
                        && self.events.pending.is_empty()
                    {
                        return;
                    }
                    if self.events.poll().await.is_err() {
                        return;
                    }
                }
            })
            .await;
        }
        let left = self.acks.len() + self.publishes.len();
        if left > 0 {
            tracing::warn!(
                session = self.cfg.name,
                left,
                "closing with acknowledgements or publishes not sent"
            );
        }
        let _ = self.client.try_disconnect();
        let _ = tokio::time::timeout(Duration::from_millis(500), async {
            while self.events.poll().await.is_ok() {}
        })
        .await;
        self.health.set(false);
        tracing::info!(session = self.cfg.name, "MQTT session closed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_to_its_ceiling_and_never_ends() {
        let waits: Vec<Duration> = backoff().take(20).collect();
        assert_eq!(waits.len(), 20);
        assert!(waits[0] >= BACKOFF_MIN && waits[0] <= BACKOFF_MIN * 2);
        // Jitter adds up to one delay on top of the ceiling.
        assert!(waits.iter().all(|w| *w <= BACKOFF_MAX * 2), "{waits:?}");
        assert!(waits[19] >= BACKOFF_MAX, "{waits:?}");
    }

    #[tokio::test]
    async fn an_oversized_publish_is_refused_before_the_connection() {
        let mut s = Session::new(
            SessionConfig {
                name: "test",
                host: "127.0.0.1".into(),
                port: 9,
                client_id: "t".into(),
                keep_alive: Duration::from_secs(5),
                persistent: false,
                manual_acks: false,
                inflight: 10,
                subscriptions: vec![],
                security: Security::default(),
            },
            SessionHealth::new("test"),
        );
        let e = s
            .publish("t/jobs".into(), vec![0; MAX_OUTGOING_PACKET])
            .unwrap_err();
        assert_eq!(e.max, MAX_OUTGOING_PACKET);
        s.publish("t/jobs".into(), vec![0; MAX_OUTGOING_PACKET - 64])
            .unwrap();
        assert!(!s.health().is_up());
    }

    /// A CA and a certificate for `name` signed by it, as PEM files in `dir`.
    fn pki(dir: &Path, name: &str) -> (std::path::PathBuf, std::path::PathBuf, std::path::PathBuf) {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let issuer = rcgen::Issuer::new(ca_params, ca_key);
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec![name.to_owned()])
            .unwrap()
            .signed_by(&key, &issuer)
            .unwrap();
        let paths = (dir.join("ca.pem"), dir.join("c.pem"), dir.join("k.pem"));
        std::fs::write(&paths.0, ca.pem()).unwrap();
        std::fs::write(&paths.1, cert.pem()).unwrap();
        std::fs::write(&paths.2, key.serialize_pem()).unwrap();
        paths
    }

    #[test]
    fn tls_files_load_and_bad_ones_are_named() {
        let dir = std::env::temp_dir().join(format!("lw-mqtt-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (ca, cert, key) = pki(&dir, "leakwatch");
        Tls::from_files(&ca, None).unwrap();
        Tls::from_files(&ca, Some((&cert, &key))).unwrap();
        let missing = dir.join("missing.pem");
        let e = Tls::from_files(&missing, None).unwrap_err();
        assert!(
            matches!(e, TlsError::Ca { .. }) && e.to_string().contains("missing.pem"),
            "{e}"
        );
        let e = Tls::from_files(&key, None).unwrap_err();
        assert!(e.to_string().contains("no CERTIFICATE"), "{e}");
        let e = Tls::from_files(&ca, Some((&key, &key))).unwrap_err();
        assert!(matches!(e, TlsError::Cert { .. }), "{e}");
        let e = Tls::from_files(&ca, Some((&cert, &cert))).unwrap_err();
        assert!(matches!(e, TlsError::Key { .. }), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_login_never_prints_its_password() {
        let s = Security {
            login: Some(Login::new("leakwatch", "pw-s3cret")),
            tls: None,
        };
        let shown = format!("{s:?}");
        assert!(
            shown.contains("leakwatch") && !shown.contains("s3cret"),
            "{shown}"
        );
    }
}
