//! The embedded MQTT broker (rumqttd), for a laptop or a small utility.
//!
//! With [`Logins`], it admits only the device registry's identities (and those the
//! process mints for its own sessions): a meter or a crew's phone logs in with client
//! id = username = its id and its secret. rumqttd 0.20 has no per-topic rules, so
//! unlike Mosquitto with the generated ACL it cannot confine a logged-in device to its
//! own topics (deploy/README.md says so).

use crate::devices::verify;
use anyhow::{Context, bail};
use leakwatch_core::device::{DeviceCredential, DeviceKind};
use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

/// Who may log in to the embedded broker: the registry's active credentials, reloaded
/// by [`Logins::set_registry`], and identities the process minted for itself.
#[derive(Clone, Default)]
pub struct Logins {
    inner: Arc<RwLock<LoginTable>>,
}

impl std::fmt::Debug for Logins {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let t = self.inner.read().unwrap_or_else(|e| e.into_inner());
        f.debug_struct("Logins")
            .field("registry", &t.registry.len())
            .field("own", &t.own.len())
            .finish()
    }
}

#[derive(Default)]
struct LoginTable {
    registry: HashMap<String, (DeviceKind, String)>,
    own: HashMap<String, (DeviceKind, String)>,
}

impl Logins {
    pub fn new() -> Logins {
        Logins::default()
    }

    /// Replaces the registry's part with the active credentials of `creds`.
    pub fn set_registry(&self, creds: &[DeviceCredential]) {
        let registry = creds
            .iter()
            .filter(|c| c.is_active())
            .map(|c| (c.username.clone(), (c.kind, c.secret_hash.clone())))
            .collect();
        self.inner
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .registry = registry;
    }

    /// A new identity of this process (its own sessions, the demo's simulated
    /// devices), valid until the process ends; returns its secret.
    pub fn mint(&self, username: &str, kind: DeviceKind) -> anyhow::Result<String> {
        let secret = crate::devices::new_secret()?;
        let hash = crate::devices::hash_secret(&secret)?;
        self.inner
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .own
            .insert(username.to_owned(), (kind, hash));
        Ok(secret)
    }

    /// Whether this login is admitted: a known, active identity with its secret; a
    /// meter or a crew's phone must also use its id as its client id (a head-end or
    /// leakwatch itself may open several connections).
    pub fn check(&self, client_id: &str, username: &str, password: &str) -> bool {
        let found = {
            let t = self.inner.read().unwrap_or_else(|e| e.into_inner());
            t.own
                .get(username)
                .or_else(|| t.registry.get(username))
                .cloned()
        };
        let Some((kind, hash)) = found else {
            return false;
        };
        if matches!(kind, DeviceKind::Meter | DeviceKind::Crew) && client_id != username {
            return false;
        }
        verify(password, &hash)
    }
}

/// Reloads the registry's credentials into `logins` every `every` until `stop`:
/// an issued credential works, a revoked one stops working, within that time.
pub async fn refresh_logins(
    store: leakwatch_store::Store,
    logins: Logins,
    every: Duration,
    stop: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(stop);
    loop {
        match store.device_credentials().await {
            Ok(creds) => logins.set_registry(&creds),
            Err(e) => {
                tracing::warn!(error = %e, "cannot reload the broker's logins; keeping the last ones")
            }
        }
        tokio::select! {
            _ = &mut stop => return,
            _ = tokio::time::sleep(every) => {}
        }
    }
}

/// Finds the address the embedded broker will listen on. When `wanted` is taken and
/// `or_any_free` is set, picks a free port on the same interface instead.
pub fn choose_listen(wanted: SocketAddr, or_any_free: bool) -> anyhow::Result<SocketAddr> {
    match TcpListener::bind(wanted) {
        Ok(l) => {
            let addr = l.local_addr()?;
            drop(l);
            Ok(addr)
        }
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && or_any_free => {
            let l = TcpListener::bind(SocketAddr::new(wanted.ip(), 0))?;
            let addr = l.local_addr()?;
            drop(l);
            Ok(addr)
        }
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => bail!(
            "mqtt.embedded_listen {wanted} is already in use (another MQTT broker such as \
             Mosquitto?). Either use that broker with LEAKWATCH__MQTT__URL=mqtt://{wanted}, or \
             move the embedded one with LEAKWATCH__MQTT__EMBEDDED_LISTEN=127.0.0.1:1884"
        ),
        Err(e) => Err(e).with_context(|| format!("cannot listen on mqtt.embedded_listen {wanted}")),
    }
}

/// Starts rumqttd on `listen` in its own threads and waits until it accepts
/// connections. The broker lives as long as the process.
pub fn start(listen: SocketAddr, max_payload: usize) -> anyhow::Result<()> {
    start_with_logins(listen, max_payload, None)
}

/// As [`start`]; with `logins`, only those identities may connect.
pub fn start_with_logins(
    listen: SocketAddr,
    max_payload: usize,
    logins: Option<Logins>,
) -> anyhow::Result<()> {
    let mut server = rumqttd::ServerSettings {
        name: "leakwatch-v4".into(),
        listen,
        tls: None,
        next_connection_delay_ms: 1,
        connections: rumqttd::ConnectionSettings {
            connection_timeout_ms: 10_000,
            max_payload_size: max_payload,
            max_inflight_count: 1000,
            auth: None,
            external_auth: None,
            dynamic_filters: true,
        },
    };
    if let Some(logins) = logins {
        server.set_auth_handler(move |client_id: String, user: String, pass: String| {
            let ok = logins.check(&client_id, &user, &pass);
            if !ok {
                tracing::info!(
                    client_id,
                    username = user,
                    "embedded broker refused a login"
                );
            }
            std::future::ready(ok)
        });
    }
    let config = rumqttd::Config {
        id: 0,
        router: rumqttd::RouterConfig {
            max_connections: 10_010,
            max_outgoing_packet_count: 1000,
            max_segment_size: 16 * 1024 * 1024,
            max_segment_count: 10,
            custom_segment: None,
            initialized_filters: None,
            shared_subscriptions_strategy: Default::default(),
        },
        v4: Some(HashMap::from([("v4".to_owned(), server)])),
        v5: None,
        ws: None,
        cluster: None,
        console: None,
        bridge: None,
        prometheus: None,
        metrics: None,
    };
    std::thread::Builder::new()
        .name("mqtt-broker".into())
        .spawn(move || {
            let mut broker = rumqttd::Broker::new(config);
            if let Err(e) = broker.start() {
                tracing::error!(error = %e, "embedded broker stopped");
            }
        })
        .context("cannot start the embedded broker thread")?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect_timeout(&listen, Duration::from_millis(200)).is_err() {
        if Instant::now() > deadline {
            bail!("the embedded broker did not start listening on {listen} within 10 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;
    use rumqttc::{AsyncClient, Event, MqttOptions, Packet};

    fn cred(name: &str, kind: DeviceKind, secret: &str) -> DeviceCredential {
        DeviceCredential {
            username: name.into(),
            kind,
            secret_hash: crate::devices::hash_secret(secret).unwrap(),
            created_at: Utc::now(),
            rotated_at: Utc::now(),
            revoked_at: None,
        }
    }

    /// Whether the broker admits this login.
    async fn admitted(port: u16, client_id: &str, login: Option<(&str, &str)>) -> bool {
        let mut opts = MqttOptions::new(client_id, "127.0.0.1", port);
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

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn only_registered_devices_log_in_as_themselves() {
        let logins = Logins::new();
        logins.set_registry(&[
            cred("M1", DeviceKind::Meter, "m1-secret"),
            cred("C1", DeviceKind::Crew, "c1-secret"),
            cred("HE", DeviceKind::Headend, "he-secret"),
        ]);
        let own = logins.mint("leakwatch", DeviceKind::Service).unwrap();
        let listen = choose_listen("127.0.0.1:0".parse().unwrap(), true).unwrap();
        start_with_logins(listen, 1 << 20, Some(logins.clone())).unwrap();
        let port = listen.port();

        assert!(admitted(port, "M1", Some(("M1", "m1-secret"))).await);
        assert!(admitted(port, "C1", Some(("C1", "c1-secret"))).await);
        // A head-end and leakwatch itself may use any client id.
        assert!(admitted(port, "he-conn-2", Some(("HE", "he-secret"))).await);
        assert!(admitted(port, "leakwatch-ingest", Some(("leakwatch", &own))).await);

        assert!(!admitted(port, "M1", None).await, "anonymous");
        assert!(
            !admitted(port, "M1", Some(("M1", "wrong"))).await,
            "wrong secret"
        );
        assert!(
            !admitted(port, "M2", Some(("M1", "m1-secret"))).await,
            "client id of another meter"
        );
        assert!(
            !admitted(port, "C1", Some(("C1", "m1-secret"))).await,
            "another device's secret"
        );
        assert!(
            !admitted(port, "X", Some(("X", "anything"))).await,
            "unknown"
        );

        // Revoked: the next reload leaves M1 out.
        logins.set_registry(&[cred("C1", DeviceKind::Crew, "c1-secret")]);
        assert!(
            !admitted(port, "M1", Some(("M1", "m1-secret"))).await,
            "revoked"
        );
        assert!(admitted(port, "leakwatch-crews", Some(("leakwatch", &own))).await);
    }
}
