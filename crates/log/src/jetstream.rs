//! [`Log`] on NATS JetStream (nats-server 2.9 or later).

use crate::{Append, Appended, Entry, Log, LogError, PartitionReader};
use crate::{RECEIVED_AT_HEADER, TOPIC_HEADER};
use async_nats::HeaderMap;
use async_nats::jetstream::{self, consumer, stream};
use futures_util::StreamExt;
use std::time::Duration;

/// The stream and how it is cut.
#[derive(Debug, Clone)]
pub struct LogConfig {
    /// Comma-separated server URLs (`nats://127.0.0.1:4222,nats://...`).
    pub servers: String,
    pub stream: String,
    /// Subjects are `{subject_prefix}.{partition}.{district}`.
    pub subject_prefix: String,
    /// Fixed for the life of the stream.
    pub partitions: u32,
    pub replicas: usize,
    /// Window in which a repeated `Nats-Msg-Id` is stored once.
    pub dedupe_window: Duration,
    /// How long messages are kept for replay.
    pub max_age: Duration,
    /// How long the stream's acknowledgement of a publish may take before the publish
    /// counts as failed (and is retried with the same id).
    pub ack_timeout: Duration,
    /// TLS to the servers (`tls://` URLs, a CA file, a client certificate).
    pub tls: NatsTls,
}

/// TLS to the NATS servers (rustls, ring). With a CA file the connection must be TLS
/// and trusts only that CA's certificates; `tls://` URLs require TLS too (trusting the
/// system's roots when no CA file is given). A client certificate is presented when
/// the server asks for one (`tls { verify: true }`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NatsTls {
    pub ca_file: Option<std::path::PathBuf>,
    pub client_cert: Option<std::path::PathBuf>,
    pub client_key: Option<std::path::PathBuf>,
}

impl NatsTls {
    /// Refuses a certificate without its key (or a key without its certificate).
    pub fn check(&self) -> Result<(), LogError> {
        match (&self.client_cert, &self.client_key) {
            (Some(_), None) => Err(LogError("a NATS client certificate needs its key".into())),
            (None, Some(_)) => Err(LogError("a NATS client key needs its certificate".into())),
            _ => Ok(()),
        }
    }

    /// Whether the connection must be TLS.
    pub fn required(&self, servers: &str) -> bool {
        self.ca_file.is_some()
            || self.client_cert.is_some()
            || servers
                .split(',')
                .any(|s| s.trim().to_ascii_lowercase().starts_with("tls://"))
    }

    fn apply(
        &self,
        mut opts: async_nats::ConnectOptions,
        servers: &str,
    ) -> async_nats::ConnectOptions {
        if let Some(ca) = &self.ca_file {
            opts = opts.add_root_certificates(ca.clone());
        }
        if let (Some(cert), Some(key)) = (&self.client_cert, &self.client_key) {
            opts = opts.add_client_certificate(cert.clone(), key.clone());
        }
        opts.require_tls(self.required(servers))
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            servers: "nats://127.0.0.1:4222".into(),
            stream: "LEAKWATCH".into(),
            subject_prefix: "lw.up".into(),
            partitions: 64,
            replicas: 3,
            dedupe_window: Duration::from_secs(10 * 60),
            max_age: Duration::from_secs(7 * 24 * 3600),
            ack_timeout: Duration::from_secs(5),
            tls: NatsTls::default(),
        }
    }
}

/// The log on one JetStream stream.
#[derive(Clone)]
pub struct JetStreamLog {
    cfg: LogConfig,
    js: jetstream::Context,
    client: async_nats::Client,
}

impl std::fmt::Debug for JetStreamLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JetStreamLog")
            .field("cfg", &self.cfg)
            .finish()
    }
}

impl JetStreamLog {
    /// Connects (retrying until a server answers) and creates the stream if missing.
    pub async fn connect(cfg: LogConfig, name: &str) -> Result<JetStreamLog, LogError> {
        let client = connect_with(&cfg.servers, name, &cfg.tls).await?;
        let mut js = jetstream::new(client.clone());
        js.set_timeout(cfg.ack_timeout);
        let log = JetStreamLog { cfg, js, client };
        log.ensure_stream().await?;
        Ok(log)
    }

    pub fn config(&self) -> &LogConfig {
        &self.cfg
    }

    /// The JetStream context (for the leases' bucket).
    pub fn context(&self) -> &jetstream::Context {
        &self.js
    }

    /// Whether the connection to the NATS servers is up (for `/readyz`).
    pub fn is_connected(&self) -> bool {
        self.client.connection_state() == async_nats::connection::State::Connected
    }

    pub fn client(&self) -> &async_nats::Client {
        &self.client
    }

    fn stream_config(&self) -> stream::Config {
        stream::Config {
            name: self.cfg.stream.clone(),
            subjects: vec![format!("{}.>", self.cfg.subject_prefix)],
            storage: stream::StorageType::File,
            num_replicas: self.cfg.replicas,
            duplicate_window: self.cfg.dedupe_window,
            max_age: self.cfg.max_age,
            retention: stream::RetentionPolicy::Limits,
            discard: stream::DiscardPolicy::Old,
            ..Default::default()
        }
    }

    /// Creates the stream if it is not there (retrying while the cluster elects its
    /// meta leader).
    pub async fn ensure_stream(&self) -> Result<(), LogError> {
        retry("create the stream", 60, || async {
            self.js
                .get_or_create_stream(self.stream_config())
                .await
                .map(|_| ())
                .map_err(LogError::new)
        })
        .await
    }

    async fn stream(&self) -> Result<stream::Stream, LogError> {
        self.js
            .get_stream(&self.cfg.stream)
            .await
            .map_err(LogError::new)
    }

    fn subject(&self, partition: u32, key: &str) -> String {
        format!(
            "{}.{partition}.{}",
            self.cfg.subject_prefix,
            subject_token(key)
        )
    }
}

/// Connects to a comma-separated list of servers, retrying the first connection.
pub async fn connect(servers: &str, name: &str) -> Result<async_nats::Client, LogError> {
    connect_with(servers, name, &NatsTls::default()).await
}

/// [`connect`] with TLS settings.
pub async fn connect_with(
    servers: &str,
    name: &str,
    tls: &NatsTls,
) -> Result<async_nats::Client, LogError> {
    tls.check()?;
    let addrs: Vec<&str> = servers.split(',').map(str::trim).collect();
    tls.apply(async_nats::ConnectOptions::new(), servers)
        .name(name)
        .retry_on_initial_connect()
        .connection_timeout(Duration::from_secs(2))
        .connect(addrs)
        .await
        .map_err(LogError::new)
}

/// Retries `f` every 500 ms for up to `tries` times.
pub(crate) async fn retry<T, F, Fut>(what: &str, tries: u32, mut f: F) -> Result<T, LogError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, LogError>>,
{
    let mut n = 0;
    loop {
        match f().await {
            Ok(v) => return Ok(v),
            Err(e) if n + 1 < tries => {
                n += 1;
                tracing::debug!(error = %e, "cannot {what} yet; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => return Err(LogError(format!("cannot {what}: {e}"))),
        }
    }
}

/// A subject token from a key: NATS tokens cannot hold `.`, `*`, `>` or white space.
fn subject_token(key: &str) -> String {
    let t: String = key
        .chars()
        .map(|c| match c {
            '.' | '*' | '>' | ' ' | '\t' | '\r' | '\n' => '_',
            c => c,
        })
        .collect();
    if t.is_empty() { "_".into() } else { t }
}

impl Log for JetStreamLog {
    type Reader = JetStreamReader;
    type Pending = std::pin::Pin<Box<dyn Future<Output = Result<Appended, LogError>> + Send>>;

    async fn append(&self, m: Append) -> Result<Appended, LogError> {
        self.send(m).await?.await
    }

    async fn send(&self, m: Append) -> Result<Self::Pending, LogError> {
        let mut headers = HeaderMap::new();
        headers.insert("Nats-Msg-Id", m.dedupe_id.as_str());
        headers.insert(TOPIC_HEADER, m.topic.as_str());
        headers.insert(RECEIVED_AT_HEADER, m.received_at_ms.to_string().as_str());
        let ack = self
            .js
            .publish_with_headers(self.subject(m.partition, &m.key), headers, m.payload)
            .await
            .map_err(LogError::new)?;
        Ok(Box::pin(async move {
            let ack = ack.await.map_err(LogError::new)?;
            Ok(Appended {
                seq: ack.sequence,
                duplicate: ack.duplicate,
            })
        }))
    }

    async fn open(&self, partition: u32, from_seq: u64) -> Result<JetStreamReader, LogError> {
        let name = format!("p{partition}");
        let stream = self.stream().await?;
        // The committed sequence is the truth, not the consumer's position: a new
        // owner starts a fresh consumer right after what the partition committed.
        let _ = stream.delete_consumer(&name).await;
        let deliver_policy = if from_seq <= 1 {
            consumer::DeliverPolicy::All
        } else {
            consumer::DeliverPolicy::ByStartSequence {
                start_sequence: from_seq,
            }
        };
        let consumer = stream
            .create_consumer(consumer::pull::Config {
                durable_name: Some(name),
                filter_subject: format!("{}.{partition}.>", self.cfg.subject_prefix),
                deliver_policy,
                ack_policy: consumer::AckPolicy::All,
                ack_wait: Duration::from_secs(60),
                max_ack_pending: 1_000_000,
                ..Default::default()
            })
            .await
            .map_err(LogError::new)?;
        Ok(JetStreamReader {
            consumer,
            last: None,
        })
    }

    async fn last_seq(&self, partition: u32) -> Result<u64, LogError> {
        let stream = self.stream().await?;
        let filter = format!("{}.{partition}.>", self.cfg.subject_prefix);
        let mut subjects = stream
            .info_with_subjects(filter)
            .await
            .map_err(LogError::new)?;
        let mut names = Vec::new();
        while let Some(s) = subjects.next().await {
            names.push(s.map_err(LogError::new)?.0);
        }
        let mut last = 0;
        for s in names {
            let m = stream
                .get_last_raw_message_by_subject(&s)
                .await
                .map_err(LogError::new)?;
            last = last.max(m.sequence);
        }
        Ok(last)
    }
}

/// One partition's durable pull consumer (ack policy "all": acknowledging a message
/// acknowledges every one before it).
pub struct JetStreamReader {
    consumer: consumer::PullConsumer,
    /// The latest fetched message, kept to acknowledge up to it.
    last: Option<jetstream::Message>,
}

impl PartitionReader for JetStreamReader {
    async fn fetch(&mut self, max: usize, wait: Duration) -> Result<Vec<Entry>, LogError> {
        let mut batch = self
            .consumer
            .fetch()
            .max_messages(max)
            .expires(wait)
            .messages()
            .await
            .map_err(LogError::new)?;
        let mut out = Vec::new();
        while let Some(m) = batch.next().await {
            let m = m.map_err(LogError::new)?;
            let info = m.info().map_err(LogError::new)?;
            let (seq, pending) = (info.stream_sequence, info.pending);
            let header = |name: &str| {
                m.headers
                    .as_ref()
                    .and_then(|h| h.get(name))
                    .map(|v| v.as_str().to_owned())
            };
            out.push(Entry {
                seq,
                topic: header(TOPIC_HEADER).unwrap_or_default(),
                received_at_ms: header(RECEIVED_AT_HEADER)
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0),
                payload: m.payload.clone(),
                pending: Some(pending),
            });
            self.last = Some(m);
        }
        Ok(out)
    }

    async fn ack_upto(&mut self, seq: u64) -> Result<(), LogError> {
        let Some(m) = self.last.as_ref() else {
            return Ok(());
        };
        let last_seq = m.info().map_err(LogError::new)?.stream_sequence;
        if last_seq <= seq {
            m.ack().await.map_err(LogError::new)?;
            self.last = None;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_subject_safe() {
        assert_eq!(subject_token("D01"), "D01");
        assert_eq!(subject_token("a.b*c>d e"), "a_b_c_d_e");
        assert_eq!(subject_token(""), "_");
    }

    #[test]
    fn tls_is_required_by_a_tls_url_or_a_ca_and_a_certificate_needs_its_key() {
        let none = NatsTls::default();
        assert!(none.check().is_ok());
        assert!(!none.required("nats://a:4222,nats://b:4222"));
        assert!(none.required("nats://a:4222, TLS://b:4222"));
        let ca = NatsTls {
            ca_file: Some("/ca.pem".into()),
            ..NatsTls::default()
        };
        assert!(ca.required("nats://a:4222"));
        let cert_only = NatsTls {
            client_cert: Some("/c.pem".into()),
            ..NatsTls::default()
        };
        assert!(cert_only.check().is_err());
        let key_only = NatsTls {
            client_key: Some("/c.key".into()),
            ..NatsTls::default()
        };
        assert!(key_only.check().is_err());
    }
}
