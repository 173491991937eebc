//! The embedded MQTT broker (rumqttd), for a laptop or a small utility.

use anyhow::{Context, bail};
use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

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
    let server = rumqttd::ServerSettings {
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
