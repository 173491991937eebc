//! Configuration: the defaults compiled in from `config/default.toml`, then the file
//! given with `--config`, then `LEAKWATCH__SECTION__KEY` environment variables, in
//! that order. Unknown keys and bad values stop start-up with the key and the reason.

use figment::Figment;
use figment::providers::{Env, Format, Toml};
use leakwatch_detect::DetectConfig;
use leakwatch_dispatch::DispatchConfig;
use leakwatch_ingest::IngestConfig;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::Path;

/// The defaults, as shipped.
pub const DEFAULT_TOML: &str = include_str!("../../../config/default.toml");

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub database: DatabaseConfig,
    pub mqtt: MqttConfig,
    pub http: HttpConfig,
    pub ingest: IngestConfig,
    pub detect: DetectConfig,
    pub dispatch: DispatchConfig,
    pub log: LogConfig,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseConfig {
    pub url: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttConfig {
    pub url: String,
    pub embedded_listen: String,
    pub client_id: String,
    pub prefix: String,
    pub crew_prefix: String,
    pub keep_alive_s: u64,
    pub inflight: u16,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    pub listen: String,
    pub api_token: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    pub format: String,
    pub level: String,
}

/// A configuration that cannot be used, naming the key.
#[derive(Debug, thiserror::Error)]
#[error("configuration error: {0}")]
pub struct ConfigError(pub String);

/// Where an external broker is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerAddr {
    pub host: String,
    pub port: u16,
}

/// Parses `mqtt://host:port` (port 1883 when absent).
pub fn parse_mqtt_url(url: &str) -> Result<BrokerAddr, String> {
    if url.starts_with("mqtts://") {
        return Err("mqtts:// (TLS) is not supported by this build yet; use mqtt://".into());
    }
    let rest = url
        .strip_prefix("mqtt://")
        .or_else(|| url.strip_prefix("tcp://"))
        .ok_or_else(|| format!("{url:?} does not start with mqtt://"))?;
    let rest = rest.trim_end_matches('/');
    let (host, port) = match rest.rsplit_once(':') {
        Some((h, p)) => (
            h,
            p.parse::<u16>()
                .map_err(|_| format!("port {p:?} in {url:?} is not a number 1..65535"))?,
        ),
        None => (rest, 1883),
    };
    if host.is_empty() || host.contains('/') || host.contains('@') {
        return Err(format!("{url:?} has no usable host"));
    }
    Ok(BrokerAddr {
        host: host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned(),
        port,
    })
}

impl Config {
    /// Defaults, then `file`, then the environment; validated.
    pub fn load(file: Option<&Path>) -> Result<Config, ConfigError> {
        Self::load_with(file, Env::prefixed("LEAKWATCH__").split("__"))
    }

    fn load_with(file: Option<&Path>, env: Env) -> Result<Config, ConfigError> {
        let mut fig = Figment::from(Toml::string(DEFAULT_TOML));
        if let Some(path) = file {
            if !path.exists() {
                return Err(ConfigError(format!(
                    "config file {} does not exist",
                    path.display()
                )));
            }
            fig = fig.merge(Toml::file(path));
        }
        let cfg: Config = fig
            .merge(env)
            .extract()
            .map_err(|e| ConfigError(e.to_string()))?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks what types alone cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |key: &str, why: String| Err(ConfigError(format!("{key}: {why}")));
        let db = &self.database.url;
        if !(db.starts_with("postgres://")
            || db.starts_with("postgresql://")
            || db.starts_with("sqlite:"))
        {
            return bad(
                "database.url",
                format!("{db:?} must start with postgres:// or sqlite://"),
            );
        }
        if !self.mqtt.url.is_empty()
            && let Err(e) = parse_mqtt_url(&self.mqtt.url)
        {
            return bad("mqtt.url", e);
        }
        if self.mqtt.url.is_empty() && self.mqtt.embedded_listen.parse::<SocketAddr>().is_err() {
            return bad(
                "mqtt.embedded_listen",
                format!("{:?} is not host:port", self.mqtt.embedded_listen),
            );
        }
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
        if self.mqtt.inflight == 0 {
            return bad("mqtt.inflight", "must be at least 1".into());
        }
        if self.http.listen.parse::<SocketAddr>().is_err() {
            return bad(
                "http.listen",
                format!(
                    "{:?} is not host:port, e.g. 127.0.0.1:8080",
                    self.http.listen
                ),
            );
        }
        if self.ingest.batch_max_readings == 0 {
            return bad("ingest.batch_max_readings", "must be at least 1".into());
        }
        let cf = &self.detect.continuous_flow;
        if cf.window_h == 0 {
            return bad(
                "detect.continuous_flow.window_h",
                "must be at least 1".into(),
            );
        }
        if !(cf.zero_threshold_m3.is_finite() && cf.zero_threshold_m3 > 0.0) {
            return bad(
                "detect.continuous_flow.zero_threshold_m3",
                "must be a positive number".into(),
            );
        }
        self.dispatch.validate().map_err(ConfigError)?;
        if !matches!(self.log.format.as_str(), "text" | "json") {
            return bad(
                "log.format",
                format!("{:?} is not \"text\" or \"json\"", self.log.format),
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env_of(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        // Build the same provider from a fixed list instead of the process environment.
        let mut fig = Figment::from(Toml::string(DEFAULT_TOML));
        for (k, v) in vars {
            let key = k
                .strip_prefix("LEAKWATCH__")
                .unwrap()
                .to_lowercase()
                .replace("__", ".");
            fig = fig.merge(figment::providers::Serialized::default(&key, v));
        }
        let cfg: Config = fig.extract().map_err(|e| ConfigError(e.to_string()))?;
        cfg.validate()?;
        Ok(cfg)
    }

    #[test]
    fn defaults_load_and_validate() {
        let cfg = env_of(&[]).unwrap();
        assert_eq!(cfg.database.url, "sqlite://data/leakwatch.db");
        assert_eq!(cfg.http.listen, "127.0.0.1:8080");
        assert!(cfg.mqtt.url.is_empty());
        assert_eq!(cfg.detect.continuous_flow.window_h, 24);
    }

    #[test]
    fn environment_overrides_and_bad_values_name_the_key() {
        let cfg = env_of(&[("LEAKWATCH__DATABASE__URL", "postgres://x@h/db")]).unwrap();
        assert_eq!(cfg.database.url, "postgres://x@h/db");
        let e = env_of(&[("LEAKWATCH__HTTP__LISTEN", "nowhere")]).unwrap_err();
        assert!(e.to_string().contains("http.listen"), "{e}");
        let e = env_of(&[("LEAKWATCH__DATABASE__URL", "mysql://h")]).unwrap_err();
        assert!(e.to_string().contains("database.url"), "{e}");
        let e = env_of(&[("LEAKWATCH__MQTT__URL", "http://h")]).unwrap_err();
        assert!(e.to_string().contains("mqtt.url"), "{e}");
    }

    #[test]
    fn unknown_keys_are_refused() {
        let dir = std::env::temp_dir().join(format!("lw-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("bad.toml");
        std::fs::write(&file, "[http]\nlisen = \"127.0.0.1:1\"\n").unwrap();
        let e = Config::load_with(Some(&file), Env::prefixed("LEAKWATCH_TEST_NONE__")).unwrap_err();
        assert!(e.to_string().contains("lisen"), "{e}");
        std::fs::write(&file, "[ingest]\nunknown_meters = \"maybe\"\n").unwrap();
        let e = Config::load_with(Some(&file), Env::prefixed("LEAKWATCH_TEST_NONE__")).unwrap_err();
        assert!(e.to_string().contains("unknown_meters"), "{e}");
        let e =
            Config::load_with(Some(&dir.join("missing.toml")), Env::prefixed("X__")).unwrap_err();
        assert!(e.to_string().contains("does not exist"), "{e}");
    }

    #[test]
    fn the_example_file_is_valid() {
        let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/example.toml");
        let cfg =
            Config::load_with(Some(&example), Env::prefixed("LEAKWATCH_TEST_NONE__")).unwrap();
        assert!(cfg.database.url.starts_with("postgres://"));
        assert_eq!(cfg.mqtt.url, "mqtt://127.0.0.1:1883");
        // The example documents every detector setting with its default.
        assert_eq!(cfg.detect, DetectConfig::default());
        // ... and every dispatch setting, the escalation rules included.
        assert_eq!(cfg.dispatch, DispatchConfig::default());
        let defaults = Config::load_with(None, Env::prefixed("LEAKWATCH_TEST_NONE__")).unwrap();
        assert_eq!(defaults.dispatch, DispatchConfig::default());
    }

    #[test]
    fn bad_dispatch_settings_name_their_key() {
        let dir = std::env::temp_dir().join(format!("lw-cfg-dispatch-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("c.toml");
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
            std::fs::write(&file, toml).unwrap();
            let e =
                Config::load_with(Some(&file), Env::prefixed("LEAKWATCH_TEST_NONE__")).unwrap_err();
            assert!(e.to_string().contains(key), "{toml}: {e}");
        }
    }

    #[test]
    fn mqtt_urls() {
        assert_eq!(
            parse_mqtt_url("mqtt://127.0.0.1:1884").unwrap(),
            BrokerAddr {
                host: "127.0.0.1".into(),
                port: 1884
            }
        );
        assert_eq!(parse_mqtt_url("mqtt://broker").unwrap().port, 1883);
        assert!(parse_mqtt_url("mqtt://h:x").is_err());
        assert!(parse_mqtt_url("mqtts://h:8883").is_err());
        assert!(parse_mqtt_url("h:1883").is_err());
    }
}
