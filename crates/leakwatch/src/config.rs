//! Configuration: the defaults (the `Default` impls, the one place they are written),
//! then the file given with `--config`, then `LEAKWATCH__SECTION__KEY` environment
//! variables, in that order. Values are parsed once, here, into the types the service
//! uses (socket addresses, broker URLs, enums, secrets that never print); an unknown
//! key or a bad value stops start-up with the key, the value, where it came from and,
//! for a misspelt key, the nearest known one.

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use leakwatch_detect::DetectConfig;
use leakwatch_dispatch::DispatchConfig;
use leakwatch_ingest::IngestConfig;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// The environment variables' prefix; `__` separates sections and keys.
pub const ENV_PREFIX: &str = "LEAKWATCH__";

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub database: DatabaseConfig,
    pub mqtt: MqttConfig,
    pub http: HttpConfig,
    pub auth: AuthConfig,
    pub ingest: IngestConfig,
    pub detect: DetectConfig,
    pub dispatch: DispatchConfig,
    pub log: LogConfig,
    pub console: ConsoleSection,
    /// Programmed leak survey (issue 16).
    pub survey: leakwatch_survey::SurveyConfig,
}

/// The console's pages (`[console]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConsoleSection {
    /// The utility's time zone (IANA name): every time on the pages is shown in it.
    pub time_zone: String,
    /// When the day plan is made and applied each day, local time `HH:MM`; empty:
    /// only on demand from the board.
    pub plan_at: String,
    /// A map tile URL template (`https://.../{z}/{x}/{y}.png`); empty: no tiles.
    pub tile_url: String,
}

impl Default for ConsoleSection {
    fn default() -> Self {
        Self {
            time_zone: "Europe/Rome".into(),
            plan_at: "06:30".into(),
            tile_url: String::new(),
        }
    }
}

impl ConsoleSection {
    /// The console's settings, checked.
    pub fn to_console(&self) -> Result<leakwatch_console::ConsoleConfig, ConfigError> {
        let time_zone = self.time_zone.parse::<chrono_tz::Tz>().map_err(|_| {
            ConfigError(format!(
                "console.time_zone: {:?} is not an IANA time zone (e.g. Europe/Rome)",
                self.time_zone
            ))
        })?;
        let plan_at = if self.plan_at.trim().is_empty() {
            None
        } else {
            Some(
                chrono::NaiveTime::parse_from_str(self.plan_at.trim(), "%H:%M").map_err(|_| {
                    ConfigError(format!(
                        "console.plan_at: {:?} is not a time HH:MM",
                        self.plan_at
                    ))
                })?,
            )
        };
        Ok(leakwatch_console::ConsoleConfig {
            time_zone,
            plan_at,
            tile_url: Some(self.tile_url.trim().to_owned()).filter(|u| !u.is_empty()),
        })
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseConfig {
    /// `postgres://...` or `sqlite://PATH`.
    pub url: DatabaseUrl,
    /// How long start-up waits for the database to answer (retrying with backoff)
    /// before giving up, in seconds (0: fail at once).
    pub wait_s: u64,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self {
            url: "sqlite://data/leakwatch.db"
                .parse()
                .expect("a valid default"),
            wait_s: 300,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MqttConfig {
    /// An external broker; absent (or empty): the embedded broker.
    #[serde(with = "optional_mqtt_url")]
    pub url: Option<MqttUrl>,
    /// Where the embedded broker listens.
    #[serde(deserialize_with = "socket_addr")]
    pub embedded_listen: SocketAddr,
    /// Who may log in to the embedded broker: `registry` (the device registry's
    /// active credentials, client id = username for meters and crews) or `anonymous`
    /// (anyone who reaches the port, as anyone: only for a throwaway laptop or tests).
    pub embedded_auth: EmbeddedAuth,
    /// The ingestor's client id (persistent session: keep it stable per process).
    pub client_id: String,
    /// Meters publish on `{prefix}/{district_id}/{meter_id}/up`.
    pub prefix: String,
    /// Crews' devices use `{crew_prefix}/{crew_id}/jobs` and `.../location`.
    pub crew_prefix: String,
    pub keep_alive_s: u64,
    /// Messages the broker may send before we acknowledge (our receive window).
    pub inflight: u16,
    /// leakwatch's login on an external broker (the ingestor and the crews' channel
    /// both use it); empty: none. With the embedded broker leakwatch mints its own.
    pub username: String,
    /// The password of `username`; a secret that never prints.
    #[serde(with = "optional_secret")]
    pub password: Option<Secret>,
    /// PEM file of the CA(s) that signed an `mqtts://` broker's certificate (only
    /// these are trusted; a public CA's broker: the system bundle, e.g.
    /// /etc/ssl/certs/ca-certificates.crt).
    #[serde(with = "optional_path")]
    pub ca_file: Option<PathBuf>,
    /// A client certificate (PEM chain) for `mqtts://`, for brokers that take its CN
    /// as the username (Mosquitto's `use_identity_as_username`); with `client_key`.
    #[serde(with = "optional_path")]
    pub client_cert: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    #[serde(with = "optional_path")]
    pub client_key: Option<PathBuf>,
}

impl MqttConfig {
    /// The login and TLS for leakwatch's sessions on the external broker, the files
    /// read now; errors name the key. Nothing for the embedded broker.
    pub fn security(&self) -> Result<leakwatch_mqtt::Security, ConfigError> {
        let mut s = leakwatch_mqtt::Security::default();
        if !self.username.is_empty() {
            let password = self.password.as_ref().map(|p| p.expose()).unwrap_or("");
            s.login = Some(leakwatch_mqtt::Login::new(&self.username, password));
        }
        if self.url.as_ref().is_some_and(|u| u.tls) {
            let ca = self.ca_file.as_deref().ok_or_else(|| {
                ConfigError(
                    "mqtt.ca_file: mqtts:// needs the CA file that signed the broker's certificate"
                        .into(),
                )
            })?;
            let client = self.client_cert.as_deref().zip(self.client_key.as_deref());
            let tls = leakwatch_mqtt::Tls::from_files(ca, client).map_err(|e| {
                let key = match e {
                    leakwatch_mqtt::TlsError::Ca { .. } => "mqtt.ca_file",
                    leakwatch_mqtt::TlsError::Cert { .. } => "mqtt.client_cert",
                    leakwatch_mqtt::TlsError::Key { .. } | leakwatch_mqtt::TlsError::Config(_) => {
                        "mqtt.client_key"
                    }
                };
                ConfigError(format!("{key}: {e}"))
            })?;
            s.tls = Some(tls);
        }
        Ok(s)
    }
}

impl Default for MqttConfig {
    fn default() -> Self {
        Self {
            url: None,
            embedded_listen: SocketAddr::from(([127, 0, 0, 1], 1883)),
            embedded_auth: EmbeddedAuth::Registry,
            client_id: "leakwatch-ingest".into(),
            prefix: "gas".into(),
            crew_prefix: "crews".into(),
            keep_alive_s: 30,
            inflight: 100,
            username: String::new(),
            password: None,
            ca_file: None,
            client_cert: None,
            client_key: None,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Address of the REST API, health checks, /metrics and the console.
    #[serde(deserialize_with = "socket_addr")]
    pub listen: SocketAddr,
    /// Legacy shared token: acts as an admin API token named `api-token`
    /// (`Authorization: Bearer <token>`), so existing scripts keep working.
    #[serde(with = "optional_secret")]
    pub api_token: Option<Secret>,
    /// Connections served at once (more wait in the backlog).
    pub max_connections: usize,
    /// A connection with nothing read or written for this long is closed (this also
    /// bounds the wait for a request's headers and between keep-alive requests).
    pub idle_timeout_s: u64,
    /// A request not answered within this is cut off with 503.
    pub request_timeout_s: u64,
    /// HTTPS: with a certificate and its key, the listener serves TLS only.
    pub tls: HttpTlsConfig,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            api_token: None,
            max_connections: 1024,
            idle_timeout_s: 60,
            request_timeout_s: 30,
            tls: HttpTlsConfig::default(),
        }
    }
}

impl HttpConfig {
    /// The API's connection limits.
    pub fn limits(&self) -> leakwatch_api::limits::HttpLimits {
        leakwatch_api::limits::HttpLimits {
            max_connections: self.max_connections.max(1),
            idle: std::time::Duration::from_secs(self.idle_timeout_s.max(1)),
            request: std::time::Duration::from_secs(self.request_timeout_s.max(1)),
        }
    }
}

/// Accounts and sessions (issue 12). Accounts and API tokens themselves live in the
/// store (`leakwatch user ...`, `leakwatch token ...`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// A browser session ends this many hours after login.
    pub session_ttl_h: u64,
    /// A browser session unused for this many minutes ends.
    pub session_idle_min: u64,
    /// Mark the session cookie `Secure` (set it behind an HTTPS reverse proxy; the
    /// cookie is `Secure` anyway when leakwatch itself serves TLS).
    pub secure_cookies: bool,
    /// When set, `/metrics` requires `Authorization: Bearer <metrics_token>`.
    #[serde(with = "optional_secret")]
    pub metrics_token: Option<Secret>,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            session_ttl_h: 12,
            session_idle_min: 120,
            secure_cookies: false,
            metrics_token: None,
        }
    }
}

impl AuthConfig {
    /// The API's authentication settings, with the legacy `http.api_token`.
    pub fn settings(&self, http: &HttpConfig) -> leakwatch_api::authn::AuthSettings {
        leakwatch_api::authn::AuthSettings {
            api_token: http.api_token.as_ref().map(|t| t.expose().to_owned()),
            session_ttl: std::time::Duration::from_secs(self.session_ttl_h.max(1) * 3600),
            session_idle: std::time::Duration::from_secs(self.session_idle_min.max(1) * 60),
            // Secure whenever leakwatch itself serves HTTPS.
            secure_cookies: self.secure_cookies || http.tls_enabled(),
            metrics_token: self.metrics_token.as_ref().map(|t| t.expose().to_owned()),
        }
    }
}

impl HttpConfig {
    /// Whether the listener serves HTTPS (cookies are then `Secure`).
    pub fn tls_enabled(&self) -> bool {
        self.tls.cert.is_some()
    }
}

/// The HTTP listener's certificate: both files, or neither (plain HTTP).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpTlsConfig {
    /// PEM certificate chain, the server's certificate first.
    #[serde(with = "optional_path")]
    pub cert: Option<PathBuf>,
    /// Its PEM private key (PKCS#8, PKCS#1 or SEC1).
    #[serde(with = "optional_path")]
    pub key: Option<PathBuf>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    pub format: LogFormat,
    /// A tracing filter; `RUST_LOG` overrides it.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: LogFormat::Text,
            level: "info,rumqttd=warn".into(),
        }
    }
}

/// Who may log in to the embedded broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EmbeddedAuth {
    /// The device registry's credentials (and those leakwatch mints for itself).
    #[default]
    Registry,
    /// Anyone, without a login.
    Anonymous,
}

/// How logs are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// For people.
    #[default]
    Text,
    /// For log collectors.
    Json,
}

/// A secret (a token): `Debug`, `Display` and `Serialize` print `***`; only
/// [`Secret::expose`] gives the value.
#[derive(Clone)]
pub struct Secret(SecretString);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Secret(SecretString::from(s.into()))
    }
    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// A database URL, checked for its scheme; its password never prints (`Debug`,
/// `Display` and `Serialize` show it as `***`).
#[derive(Clone)]
pub struct DatabaseUrl(SecretString);

impl DatabaseUrl {
    /// The URL itself, password included, for connecting.
    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }
    /// Whether it names an SQLite database.
    pub fn is_sqlite(&self) -> bool {
        self.expose().starts_with("sqlite:")
    }
}

impl FromStr for DatabaseUrl {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s.starts_with("postgres://")
            || s.starts_with("postgresql://")
            || s.starts_with("sqlite:")
        {
            Ok(DatabaseUrl(SecretString::from(s.to_owned())))
        } else {
            Err(format!(
                "{:?} must start with postgres:// or sqlite://",
                redact(s)
            ))
        }
    }
}

impl fmt::Display for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&redact(self.expose()))
    }
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DatabaseUrl({self})")
    }
}

impl PartialEq for DatabaseUrl {
    fn eq(&self, other: &Self) -> bool {
        self.expose() == other.expose()
    }
}

impl Serialize for DatabaseUrl {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for DatabaseUrl {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// An external broker: `mqtt://host[:port]` (or `tcp://`), port 1883 when absent, or
/// `mqtts://host[:port]` (TLS), port 8883 when absent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MqttUrl {
    pub host: String,
    pub port: u16,
    /// `mqtts://`: the link is TLS.
    pub tls: bool,
}

/// The former name of [`MqttUrl`].
pub type BrokerAddr = MqttUrl;

impl FromStr for MqttUrl {
    type Err = String;
    fn from_str(url: &str) -> Result<Self, String> {
        parse_mqtt_url(url)
    }
}

impl fmt::Display for MqttUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.tls { "mqtts" } else { "mqtt" };
        if self.host.contains(':') {
            write!(f, "{scheme}://[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{scheme}://{}:{}", self.host, self.port)
        }
    }
}

/// Parses `mqtt://host:port` (port 1883 when absent) or `mqtts://host:port` (TLS, port
/// 8883 when absent).
pub fn parse_mqtt_url(url: &str) -> Result<MqttUrl, String> {
    let (tls, rest) = if let Some(rest) = url.strip_prefix("mqtts://") {
        (true, rest)
    } else {
        let rest = url
            .strip_prefix("mqtt://")
            .or_else(|| url.strip_prefix("tcp://"))
            .ok_or_else(|| format!("{url:?} does not start with mqtt:// or mqtts://"))?;
        (false, rest)
    };
    let default_port = if tls { 8883 } else { 1883 };
    let rest = rest.trim_end_matches('/');
    let (host, port) = match rest.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(':') => (
            h,
            p.parse::<u16>()
                .map_err(|_| format!("port {p:?} in {url:?} is not a number 1..65535"))?,
        ),
        _ => (rest, default_port),
    };
    if host.is_empty() || host.contains('/') || host.contains('@') {
        return Err(format!("{url:?} has no usable host"));
    }
    Ok(MqttUrl {
        host: host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned(),
        port,
        tls,
    })
}

fn socket_addr<'de, D: Deserializer<'de>>(d: D) -> Result<SocketAddr, D::Error> {
    let s = String::deserialize(d)?;
    s.parse().map_err(|_| {
        serde::de::Error::custom(format!("{s:?} is not host:port, e.g. 127.0.0.1:8080"))
    })
}

/// `""` or absent: `None`.
mod optional_mqtt_url {
    use super::MqttUrl;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &Option<MqttUrl>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(u) => s.collect_str(u),
            None => s.serialize_str(""),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<MqttUrl>, D::Error> {
        let s = String::deserialize(d)?;
        if s.trim().is_empty() {
            return Ok(None);
        }
        s.parse().map(Some).map_err(serde::de::Error::custom)
    }
}

/// A path; `""` or absent: `None`.
mod optional_path {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::path::PathBuf;

    pub fn serialize<S: Serializer>(v: &Option<PathBuf>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(p) => s.collect_str(&p.display()),
            None => s.serialize_str(""),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<PathBuf>, D::Error> {
        let s = String::deserialize(d)?;
        Ok((!s.trim().is_empty()).then(|| PathBuf::from(s)))
    }
}

/// `""` or absent: `None`; printed as `***` when set.
mod optional_secret {
    use super::Secret;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &Option<Secret>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(if v.is_some() { "***" } else { "" })
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Secret>, D::Error> {
        let s = String::deserialize(d)?;
        Ok((!s.is_empty()).then(|| Secret::new(s)))
    }
}

/// A configuration that cannot be used, naming the key.
#[derive(Debug, thiserror::Error)]
#[error("configuration error: {0}")]
pub struct ConfigError(pub String);

impl Config {
    /// Defaults, then `file`, then the environment; validated.
    pub fn load(file: Option<&Path>) -> Result<Config, ConfigError> {
        Self::load_with(file, Env::prefixed(ENV_PREFIX).split("__"))
    }

    /// Whether `key` (e.g. `database.url`) is set by `file` or the environment rather
    /// than left at its default.
    pub fn is_set(file: Option<&Path>, key: &str) -> bool {
        Self::figment(file, Env::prefixed(ENV_PREFIX).split("__"))
            .ok()
            .and_then(|f| f.find_metadata(key).map(|m| m.name != defaults_name()))
            .unwrap_or(false)
    }

    fn figment(file: Option<&Path>, env: Env) -> Result<Figment, ConfigError> {
        let mut fig = Figment::from(Serialized::defaults(Config::default()));
        if let Some(path) = file {
            if !path.exists() {
                return Err(ConfigError(format!(
                    "config file {} does not exist",
                    path.display()
                )));
            }
            fig = fig.merge(Toml::file(path));
        }
        Ok(fig.merge(env))
    }

    fn load_with(file: Option<&Path>, env: Env) -> Result<Config, ConfigError> {
        let cfg: Config = Self::figment(file, env)?.extract().map_err(describe)?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks what types alone cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |key: &str, why: String| Err(ConfigError(format!("{key}: {why}")));
        for (key, v) in [
            ("mqtt.prefix", &self.mqtt.prefix),
            ("mqtt.crew_prefix", &self.mqtt.crew_prefix),
        ] {
            if v.is_empty() || v.contains(['+', '#']) || v.starts_with('/') || v.ends_with('/') {
                return bad(
                    key,
                    format!("{v:?} must be a topic prefix without wildcards"),
                );
            }
        }
        if self.mqtt.client_id.is_empty() {
            return bad("mqtt.client_id", "must not be empty".into());
        }
        self.validate_links()?;
        if self.mqtt.inflight == 0 {
            return bad("mqtt.inflight", "0 must be at least 1".into());
        }
        if self.ingest.batch_max_readings == 0 {
            return bad("ingest.batch_max_readings", "0 must be at least 1".into());
        }
        let cf = &self.detect.continuous_flow;
        if cf.window_h == 0 {
            return bad(
                "detect.continuous_flow.window_h",
                "0 must be at least 1".into(),
            );
        }
        if !(cf.zero_threshold_m3.is_finite() && cf.zero_threshold_m3 > 0.0) {
            return bad(
                "detect.continuous_flow.zero_threshold_m3",
                format!("{} must be a positive number", cf.zero_threshold_m3),
            );
        }
        self.dispatch.validate().map_err(ConfigError)?;
        self.console.to_console()?;
        self.survey.validate().map_err(ConfigError)?;
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&self.log.level) {
            return bad(
                "log.level",
                format!("{:?} is not a filter: {e}", self.log.level),
            );
        }
        Ok(())
    }
}

impl Config {
    /// The logins and TLS settings: what goes together, and only where it is used.
    fn validate_links(&self) -> Result<(), ConfigError> {
        let bad = |key: &str, why: &str| Err(ConfigError(format!("{key}: {why}")));
        let m = &self.mqtt;
        let set = |p: &Option<PathBuf>| p.as_ref().map(|p| p.display().to_string());
        match &m.url {
            None => {
                for (key, on) in [
                    ("mqtt.username", !m.username.is_empty()),
                    ("mqtt.password", m.password.is_some()),
                    ("mqtt.ca_file", m.ca_file.is_some()),
                    ("mqtt.client_cert", m.client_cert.is_some()),
                    ("mqtt.client_key", m.client_key.is_some()),
                ] {
                    if on {
                        return bad(
                            key,
                            "is for an external broker (mqtt.url); the embedded broker's \
                             logins come from the device registry and leakwatch mints its own",
                        );
                    }
                }
            }
            Some(url) => {
                if m.password.is_some() && m.username.is_empty() {
                    return bad("mqtt.password", "is set but mqtt.username is not");
                }
                if !m.username.is_empty() && !leakwatch_core::device::valid_username(&m.username) {
                    return Err(ConfigError(format!(
                        "mqtt.username: {:?} is not 1-64 characters of A-Z a-z 0-9 . _ -",
                        m.username
                    )));
                }
                if !url.tls {
                    for (key, v) in [
                        ("mqtt.ca_file", set(&m.ca_file)),
                        ("mqtt.client_cert", set(&m.client_cert)),
                        ("mqtt.client_key", set(&m.client_key)),
                    ] {
                        if let Some(v) = v {
                            return Err(ConfigError(format!(
                                "{key}: {v:?} is for TLS, but mqtt.url {url} is not mqtts://"
                            )));
                        }
                    }
                } else if m.ca_file.is_none() {
                    return bad(
                        "mqtt.ca_file",
                        "mqtts:// needs the CA file that signed the broker's certificate",
                    );
                }
                match (&m.client_cert, &m.client_key) {
                    (Some(_), None) => {
                        return bad("mqtt.client_key", "mqtt.client_cert is set but not its key");
                    }
                    (None, Some(_)) => {
                        return bad(
                            "mqtt.client_cert",
                            "mqtt.client_key is set but not its certificate",
                        );
                    }
                    _ => {}
                }
            }
        }
        match (&self.http.tls.cert, &self.http.tls.key) {
            (Some(_), None) => bad("http.tls.key", "http.tls.cert is set but not its key"),
            (None, Some(_)) => bad(
                "http.tls.cert",
                "http.tls.key is set but not its certificate",
            ),
            _ => Ok(()),
        }
    }
}

/// The name figment gives the defaults' provider (its type).
fn defaults_name() -> &'static str {
    std::any::type_name::<Config>()
}

/// One line per error: the key, what is wrong with its value, where it came from, and
/// for an unknown key or value the nearest known one.
fn describe(e: figment::Error) -> ConfigError {
    use figment::error::Kind;
    let lines: Vec<String> = e
        .into_iter()
        .map(|e| {
            let key = e.path.join(".");
            let origin = match &e.metadata {
                Some(m) => match &m.source {
                    Some(figment::Source::File(p)) => format!(" (in {})", p.display()),
                    _ if m.name.contains("environment") => {
                        let var = e.path.join("__").to_ascii_uppercase();
                        format!(" (from {ENV_PREFIX}{var})")
                    }
                    _ => String::new(),
                },
                None => String::new(),
            };
            match &e.kind {
                Kind::UnknownField(field, known) => {
                    let full = if key.ends_with(field.as_str()) {
                        key.clone()
                    } else if key.is_empty() {
                        field.clone()
                    } else {
                        format!("{key}.{field}")
                    };
                    format!("unknown key `{full}`{origin}{}", hint(field, known))
                }
                Kind::UnknownVariant(value, known) => format!(
                    "{key}: {value:?} is not one of {}{origin}{}",
                    known.join(", "),
                    hint(value, known)
                ),
                Kind::InvalidType(actual, expected) | Kind::InvalidValue(actual, expected) => {
                    format!("{key}: {actual} is not {expected}{origin}")
                }
                Kind::Message(m) => format!("{key}: {m}{origin}"),
                other => format!("{key}: {other}{origin}"),
            }
        })
        .collect();
    ConfigError(lines.join("; "))
}

/// `; did you mean `x`?` for the known name nearest to `wrong`, if one is near.
fn hint(wrong: &str, known: &[&str]) -> String {
    let nearest = known
        .iter()
        .map(|k| (strsim::damerau_levenshtein(wrong, k), *k))
        .min();
    match nearest {
        Some((d, k)) if d <= (wrong.len() / 3).max(2) => format!("; did you mean `{k}`?"),
        _ if known.is_empty() => String::new(),
        _ => format!("; known: {}", known.join(", ")),
    }
}

/// A database URL without its password, for messages.
pub use leakwatch_store::redact;

#[cfg(test)]
mod tests {
    use super::*;

    fn env_of(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        // The same layering with a fixed list instead of the process environment.
        let mut fig = Figment::from(Serialized::defaults(Config::default()));
        for (k, v) in vars {
            let key = k
                .strip_prefix(ENV_PREFIX)
                .unwrap()
                .to_lowercase()
                .replace("__", ".");
            fig = fig.merge(Serialized::default(&key, v));
        }
        let cfg: Config = fig.extract().map_err(describe)?;
        cfg.validate()?;
        Ok(cfg)
    }

    fn file(name: &str, text: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("lw-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    fn no_env() -> Env {
        Env::prefixed("LEAKWATCH_TEST_NONE__")
    }

    #[test]
    fn defaults_load_and_validate() {
        let cfg = env_of(&[]).unwrap();
        assert_eq!(cfg.database.url.expose(), "sqlite://data/leakwatch.db");
        assert_eq!(cfg.http.listen, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(cfg.mqtt.url, None);
        assert_eq!(cfg.log.format, LogFormat::Text);
        assert_eq!(cfg.detect.continuous_flow.window_h, 24);
        // The defaults go through serialisation into figment unchanged.
        let loaded = Config::load_with(None, no_env()).unwrap();
        assert_eq!(
            serde_json::to_value(&loaded).unwrap(),
            serde_json::to_value(Config::default()).unwrap()
        );
    }

    #[test]
    fn values_are_parsed_once_into_types() {
        let cfg = env_of(&[
            ("LEAKWATCH__MQTT__URL", "mqtt://broker:1884"),
            ("LEAKWATCH__LOG__FORMAT", "json"),
            ("LEAKWATCH__HTTP__LISTEN", "0.0.0.0:9000"),
        ])
        .unwrap();
        assert_eq!(
            cfg.mqtt.url,
            Some(MqttUrl {
                host: "broker".into(),
                port: 1884,
                tls: false,
            })
        );
        assert_eq!(cfg.log.format, LogFormat::Json);
        assert_eq!(cfg.http.listen.port(), 9000);
        // An empty broker URL is the embedded broker.
        assert_eq!(
            env_of(&[("LEAKWATCH__MQTT__URL", "")]).unwrap().mqtt.url,
            None
        );
    }

    #[test]
    fn bad_values_name_the_key_and_the_value() {
        let cfg = env_of(&[("LEAKWATCH__DATABASE__URL", "postgres://x@h/db")]).unwrap();
        assert_eq!(cfg.database.url.expose(), "postgres://x@h/db");
        for (var, value, key) in [
            ("LEAKWATCH__HTTP__LISTEN", "nowhere", "http.listen"),
            ("LEAKWATCH__DATABASE__URL", "mysql://h", "database.url"),
            ("LEAKWATCH__MQTT__URL", "http://h", "mqtt.url"),
            ("LEAKWATCH__LOG__FORMAT", "xml", "log.format"),
            (
                "LEAKWATCH__INGEST__UNKNOWN_METERS",
                "maybe",
                "ingest.unknown_meters",
            ),
        ] {
            let e = env_of(&[(var, value)]).unwrap_err().to_string();
            assert!(e.contains(key), "{e}");
            assert!(e.contains(value), "{e}");
        }
        let e = env_of(&[("LEAKWATCH__LOG__FORMAT", "jsn")]).unwrap_err();
        assert!(e.to_string().contains("did you mean `json`?"), "{e}");
    }

    #[test]
    fn unknown_keys_are_refused_with_the_nearest_known_one() {
        let f = file("bad.toml", "[http]\nlisen = \"127.0.0.1:1\"\n");
        let e = Config::load_with(Some(&f), no_env())
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown key `http.lisen`"), "{e}");
        assert!(e.contains("did you mean `listen`?"), "{e}");
        assert!(e.contains("bad.toml"), "{e}");
        let f = file("bad2.toml", "[ingest]\nunknown_meters = \"maybe\"\n");
        let e = Config::load_with(Some(&f), no_env())
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown_meters"), "{e}");
        let f = file("bad3.toml", "[htp]\nlisten = \"127.0.0.1:1\"\n");
        let e = Config::load_with(Some(&f), no_env())
            .unwrap_err()
            .to_string();
        assert!(e.contains("did you mean `http`?"), "{e}");
        let e = Config::load_with(Some(&f.with_file_name("missing.toml")), no_env()).unwrap_err();
        assert!(e.to_string().contains("does not exist"), "{e}");
    }

    #[test]
    fn secrets_never_print() {
        let cfg = env_of(&[
            ("LEAKWATCH__DATABASE__URL", "postgres://u:hunter2@h/db"),
            ("LEAKWATCH__HTTP__API_TOKEN", "tok-s3cret"),
        ])
        .unwrap();
        assert_eq!(cfg.http.api_token.as_ref().unwrap().expose(), "tok-s3cret");
        assert_eq!(cfg.database.url.expose(), "postgres://u:hunter2@h/db");
        for shown in [
            format!("{cfg:?}"),
            serde_json::to_string(&cfg).unwrap(),
            cfg.database.url.to_string(),
        ] {
            assert!(!shown.contains("hunter2"), "{shown}");
            assert!(!shown.contains("s3cret"), "{shown}");
        }
    }

    #[test]
    fn the_example_file_is_valid_and_documents_the_defaults() {
        let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/example.toml");
        let cfg = Config::load_with(Some(&example), no_env()).unwrap();
        assert!(!cfg.database.url.is_sqlite());
        assert_eq!(
            cfg.mqtt.url.as_ref().unwrap().to_string(),
            "mqtt://127.0.0.1:1883"
        );
        // Every other setting is documented with its default.
        let d = Config::default();
        assert_eq!(cfg.database.wait_s, d.database.wait_s);
        assert_eq!(cfg.ingest, d.ingest);
        assert_eq!(cfg.detect, d.detect);
        assert_eq!(cfg.dispatch, d.dispatch);
        assert_eq!(cfg.survey, d.survey);
        assert_eq!(cfg.log.format, d.log.format);
        assert_eq!(cfg.log.level, d.log.level);
        assert_eq!(cfg.console, d.console);
        assert_eq!(cfg.http.listen, d.http.listen);
        let m = (&cfg.mqtt, &d.mqtt);
        assert_eq!(
            (&m.0.client_id, &m.0.prefix, &m.0.crew_prefix),
            (&m.1.client_id, &m.1.prefix, &m.1.crew_prefix)
        );
        assert_eq!(
            (m.0.keep_alive_s, m.0.inflight, m.0.embedded_listen),
            (m.1.keep_alive_s, m.1.inflight, m.1.embedded_listen)
        );
        // ... and every key the configuration has appears in it.
        let text = std::fs::read_to_string(&example).unwrap();
        let all = serde_json::to_value(Config::default()).unwrap();
        let mut missing = Vec::new();
        keys("", &all, &mut |k| {
            let leaf = k.rsplit('.').next().unwrap();
            let documented = text.contains(&format!("{leaf} ="))
                || text.contains(&format!("[[{k}]]"))
                || text.contains(&format!("[{k}]"));
            if !documented {
                missing.push(k.to_owned());
            }
        });
        assert!(
            missing.is_empty(),
            "not in config/example.toml: {missing:?}"
        );
    }

    /// Calls `f` with the dotted path of every leaf of `v` (tables, not arrays).
    fn keys(prefix: &str, v: &serde_json::Value, f: &mut impl FnMut(&str)) {
        match v {
            serde_json::Value::Object(map) => {
                for (k, v) in map {
                    let path = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    keys(&path, v, f);
                }
            }
            _ => f(prefix),
        }
    }

    #[test]
    fn only_keys_set_by_the_operator_count_as_set() {
        let f = file("db.toml", "[database]\nurl = \"sqlite://elsewhere.db\"\n");
        assert!(Config::is_set(Some(&f), "database.url"));
        let f = file("other.toml", "[http]\nlisten = \"127.0.0.1:1\"\n");
        assert!(
            !Config::is_set(Some(&f), "database.url")
                || std::env::var("LEAKWATCH__DATABASE__URL").is_ok()
        );
    }

    #[test]
    fn bad_dispatch_settings_name_their_key() {
        for (toml, key) in [
            (
                "[dispatch]\nleak_classes = \"fr\"\n",
                "dispatch.leak_classes",
            ),
            (
                "[dispatch.travel]\nprovider = \"osrm\"\n",
                "dispatch.travel",
            ),
            (
                "[[dispatch.mapping.rules]]\nalert_kinds = [\"burst\"]\norder_kind = \"repair\"\npriority = \"low\"\n",
                "dispatch.mapping",
            ),
        ] {
            let f = file("dispatch.toml", toml);
            let e = Config::load_with(Some(&f), no_env()).unwrap_err();
            assert!(e.to_string().contains(key), "{toml}: {e}");
        }
    }

    #[test]
    fn mqtt_urls() {
        assert_eq!(
            parse_mqtt_url("mqtt://127.0.0.1:1884").unwrap(),
            MqttUrl {
                host: "127.0.0.1".into(),
                port: 1884,
                tls: false,
            }
        );
        assert_eq!(parse_mqtt_url("mqtt://broker").unwrap().port, 1883);
        assert!(parse_mqtt_url("mqtt://h:x").is_err());
        let tls = parse_mqtt_url("mqtts://broker.example").unwrap();
        assert_eq!((tls.port, tls.tls), (8883, true));
        assert_eq!(
            parse_mqtt_url("mqtts://h:18883").unwrap().to_string(),
            "mqtts://h:18883"
        );
        assert!(parse_mqtt_url("ssl://h").is_err());
        assert!(parse_mqtt_url("h:1883").is_err());
        assert_eq!(
            parse_mqtt_url("mqtt://[::1]:1884").unwrap().to_string(),
            "mqtt://[::1]:1884"
        );
    }

    #[test]
    fn broker_logins_and_tls_settings_go_together() {
        // A login over TLS with a client certificate: accepted; files are read later.
        let cfg = env_of(&[
            ("LEAKWATCH__MQTT__URL", "mqtts://broker"),
            ("LEAKWATCH__MQTT__USERNAME", "leakwatch"),
            ("LEAKWATCH__MQTT__PASSWORD", "pw-s3cret"),
            ("LEAKWATCH__MQTT__CA_FILE", "/etc/leakwatch/ca.pem"),
            ("LEAKWATCH__MQTT__CLIENT_CERT", "/etc/leakwatch/lw.pem"),
            ("LEAKWATCH__MQTT__CLIENT_KEY", "/etc/leakwatch/lw.key"),
            ("LEAKWATCH__HTTP__TLS__CERT", "/etc/leakwatch/https.pem"),
            ("LEAKWATCH__HTTP__TLS__KEY", "/etc/leakwatch/https.key"),
        ])
        .unwrap();
        assert_eq!(cfg.mqtt.url.as_ref().unwrap().port, 8883);
        assert!(cfg.http.tls_enabled());
        for shown in [format!("{cfg:?}"), serde_json::to_string(&cfg).unwrap()] {
            assert!(!shown.contains("s3cret"), "{shown}");
        }
        // The file that cannot be read is named with its key.
        let e = cfg.mqtt.security().unwrap_err().to_string();
        assert!(
            e.contains("mqtt.ca_file") && e.contains("/etc/leakwatch/ca.pem"),
            "{e}"
        );
        assert!(!env_of(&[]).unwrap().http.tls_enabled());

        for (vars, key) in [
            (vec![("LEAKWATCH__MQTT__USERNAME", "lw")], "mqtt.username"),
            (
                vec![("LEAKWATCH__MQTT__CA_FILE", "/ca.pem")],
                "mqtt.ca_file",
            ),
            (
                vec![
                    ("LEAKWATCH__MQTT__URL", "mqtt://b"),
                    ("LEAKWATCH__MQTT__PASSWORD", "x"),
                ],
                "mqtt.password",
            ),
            (
                vec![
                    ("LEAKWATCH__MQTT__URL", "mqtt://b"),
                    ("LEAKWATCH__MQTT__USERNAME", "a/b"),
                ],
                "mqtt.username",
            ),
            (
                vec![
                    ("LEAKWATCH__MQTT__URL", "mqtt://b"),
                    ("LEAKWATCH__MQTT__CA_FILE", "/ca.pem"),
                ],
                "mqtt.ca_file",
            ),
            (vec![("LEAKWATCH__MQTT__URL", "mqtts://b")], "mqtt.ca_file"),
            (
                vec![
                    ("LEAKWATCH__MQTT__URL", "mqtts://b"),
                    ("LEAKWATCH__MQTT__CA_FILE", "/ca.pem"),
                    ("LEAKWATCH__MQTT__CLIENT_CERT", "/c.pem"),
                ],
                "mqtt.client_key",
            ),
            (
                vec![("LEAKWATCH__HTTP__TLS__CERT", "/c.pem")],
                "http.tls.key",
            ),
            (
                vec![("LEAKWATCH__HTTP__TLS__KEY", "/k.pem")],
                "http.tls.cert",
            ),
        ] {
            let e = env_of(&vars).unwrap_err().to_string();
            assert!(e.contains(key), "{vars:?}: {e}");
        }
    }

    #[test]
    fn passwords_never_print() {
        assert_eq!(redact("postgres://u:secret@h/db"), "postgres://u:***@h/db");
        assert_eq!(redact("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(redact("sqlite://data/x.db"), "sqlite://data/x.db");
    }
}
