//! The MQTT wire contract (v1) that meters and head-ends are built against.
//!
//! This crate owns the topic layout (`{prefix}/{district}/{meter}/up`) and the JSON
//! payload: [`decode`] parses and validates a message into domain types, and
//! [`encode`] writes one (the simulator uses it). It is used by the ingestor, the
//! simulator and the fuzz target, and must not do I/O.
//!
//! Validation is all-or-nothing per message in v1: one bad reading rejects the whole
//! message with a reason naming the reading, so a device's batch is never half stored.

use chrono::{DateTime, TimeZone, Utc};
use leakwatch_core::{DistrictId, EventCode, IdError, MeterEvent, MeterId, Reading, Timestamp};
use serde::Serialize;
use serde_json::{Map, Value};

/// Largest payload accepted, in bytes (64 KiB).
pub const MAX_PAYLOAD_BYTES: usize = 64 * 1024;

/// Why a message was rejected. [`DecodeError::reason`] is the stable short code used
/// in the dead-letter store and in `/metrics`; `Display` is the detail for people.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DecodeError {
    #[error("topic {topic:?} is not {{prefix}}/{{district}}/{{meter}}/up: {problem}")]
    BadTopic { topic: String, problem: String },
    #[error("payload is empty")]
    Empty,
    #[error("payload is {size} bytes; at most {max} are accepted")]
    TooLarge { size: usize, max: usize },
    #[error("payload is not UTF-8 (invalid byte at offset {offset})")]
    NotUtf8 { offset: usize },
    #[error("payload is not JSON: {0}")]
    NotJson(String),
    #[error("payload is JSON but not an object")]
    NotObject,
    #[error("unsupported version: {0}")]
    BadVersion(String),
    #[error("payload has no \"meter\"")]
    MissingMeter,
    #[error("\"meter\" is invalid: {0}")]
    BadMeter(IdError),
    #[error("payload meter {payload:?} differs from topic meter {topic:?}")]
    MeterMismatch { topic: String, payload: String },
    #[error("readings[{index}]: {problem}")]
    BadReading { index: usize, problem: String },
    #[error("events[{index}]: {problem}")]
    BadEvent { index: usize, problem: String },
    #[error("{field}: {problem}")]
    BadField {
        field: &'static str,
        problem: String,
    },
}

impl DecodeError {
    /// A short, stable code for counting and filtering.
    pub fn reason(&self) -> &'static str {
        match self {
            DecodeError::BadTopic { .. } => "bad_topic",
            DecodeError::Empty => "empty",
            DecodeError::TooLarge { .. } => "too_large",
            DecodeError::NotUtf8 { .. } => "not_utf8",
            DecodeError::NotJson(_) => "not_json",
            DecodeError::NotObject => "not_object",
            DecodeError::BadVersion(_) => "bad_version",
            DecodeError::MissingMeter => "missing_meter",
            DecodeError::BadMeter(_) => "bad_meter",
            DecodeError::MeterMismatch { .. } => "meter_mismatch",
            DecodeError::BadReading { .. } => "bad_reading",
            DecodeError::BadEvent { .. } => "bad_event",
            DecodeError::BadField { .. } => "bad_field",
        }
    }
}

/// The district and meter a topic names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicParts {
    pub district: DistrictId,
    pub meter: MeterId,
}

/// The topic a meter publishes on.
pub fn uplink_topic(prefix: &str, district: &DistrictId, meter: &MeterId) -> String {
    format!("{prefix}/{district}/{meter}/up")
}

/// The subscription filter covering every meter under `prefix`.
pub fn uplink_filter(prefix: &str) -> String {
    format!("{prefix}/+/+/up")
}

/// Splits `{prefix}/{district}/{meter}/up`.
pub fn parse_topic(prefix: &str, topic: &str) -> Result<TopicParts, DecodeError> {
    let bad = |problem: String| DecodeError::BadTopic {
        topic: topic.chars().take(200).collect(),
        problem,
    };
    let rest = topic
        .strip_prefix(prefix)
        .and_then(|r| r.strip_prefix('/'))
        .ok_or_else(|| bad(format!("it does not start with {prefix:?}/")))?;
    let parts: Vec<&str> = rest.split('/').collect();
    let [district, meter, "up"] = parts.as_slice() else {
        return Err(bad(format!(
            "expected 3 levels after the prefix ending in \"up\", found {}",
            parts.len()
        )));
    };
    let district = DistrictId::parse(*district).map_err(|e| bad(e.to_string()))?;
    let meter = MeterId::parse(*meter).map_err(|e| bad(e.to_string()))?;
    Ok(TopicParts { district, meter })
}

/// Shut-off valve state reported by the meter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Valve {
    Open,
    Closed,
}

/// A validated uplink message.
#[derive(Debug, Clone, PartialEq)]
pub struct Uplink {
    pub district: DistrictId,
    pub meter: MeterId,
    pub readings: Vec<Reading>,
    pub events: Vec<MeterEvent>,
    /// Battery level in percent.
    pub battery: Option<u8>,
    pub valve: Option<Valve>,
}

/// Parses and validates one message received on `topic`.
///
/// Unknown fields are accepted and ignored, so the contract can grow without breaking
/// older ingestors.
pub fn decode(prefix: &str, topic: &str, payload: &[u8]) -> Result<Uplink, DecodeError> {
    let TopicParts { district, meter } = parse_topic(prefix, topic)?;
    if payload.is_empty() {
        return Err(DecodeError::Empty);
    }
    if payload.len() > MAX_PAYLOAD_BYTES {
        return Err(DecodeError::TooLarge {
            size: payload.len(),
            max: MAX_PAYLOAD_BYTES,
        });
    }
    let text = std::str::from_utf8(payload).map_err(|e| DecodeError::NotUtf8 {
        offset: e.valid_up_to(),
    })?;
    let value: Value =
        serde_json::from_str(text).map_err(|e| DecodeError::NotJson(e.to_string()))?;
    let Value::Object(obj) = value else {
        return Err(DecodeError::NotObject);
    };

    match obj.get("v") {
        Some(Value::Number(n)) if n.as_u64() == Some(1) => {}
        Some(other) => {
            return Err(DecodeError::BadVersion(format!(
                "\"v\" is {other}, expected 1"
            )));
        }
        None => {
            return Err(DecodeError::BadVersion(
                "\"v\" is missing, expected 1".into(),
            ));
        }
    }

    let payload_meter = match obj.get("meter") {
        None | Some(Value::Null) => return Err(DecodeError::MissingMeter),
        Some(Value::String(s)) => s,
        Some(other) => {
            return Err(DecodeError::BadField {
                field: "meter",
                problem: format!("expected a string, found {}", kind_of(other)),
            });
        }
    };
    let payload_meter = MeterId::parse(payload_meter.as_str()).map_err(DecodeError::BadMeter)?;
    if payload_meter != meter {
        return Err(DecodeError::MeterMismatch {
            topic: meter.to_string(),
            payload: payload_meter.to_string(),
        });
    }

    let readings = match obj.get("readings") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => items
            .iter()
            .enumerate()
            .map(|(index, item)| {
                reading(&meter, item).map_err(|problem| DecodeError::BadReading { index, problem })
            })
            .collect::<Result<Vec<_>, _>>()?,
        Some(other) => {
            return Err(DecodeError::BadField {
                field: "readings",
                problem: format!("expected an array, found {}", kind_of(other)),
            });
        }
    };

    let events = match obj.get("events") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => items
            .iter()
            .enumerate()
            .map(|(index, item)| {
                event(&meter, item).map_err(|problem| DecodeError::BadEvent { index, problem })
            })
            .collect::<Result<Vec<_>, _>>()?,
        Some(other) => {
            return Err(DecodeError::BadField {
                field: "events",
                problem: format!("expected an array, found {}", kind_of(other)),
            });
        }
    };

    let battery = match obj.get("battery") {
        None | Some(Value::Null) => None,
        Some(Value::Number(n)) => match n.as_f64() {
            Some(b) if (0.0..=100.0).contains(&b) => Some(b.round() as u8),
            _ => {
                return Err(DecodeError::BadField {
                    field: "battery",
                    problem: format!("{n} is outside 0..100"),
                });
            }
        },
        Some(other) => {
            return Err(DecodeError::BadField {
                field: "battery",
                problem: format!("expected a number, found {}", kind_of(other)),
            });
        }
    };

    let valve = match obj.get("valve") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s == "open" => Some(Valve::Open),
        Some(Value::String(s)) if s == "closed" => Some(Valve::Closed),
        Some(other) => {
            return Err(DecodeError::BadField {
                field: "valve",
                problem: format!("expected \"open\" or \"closed\", found {other}"),
            });
        }
    };

    Ok(Uplink {
        district,
        meter,
        readings,
        events,
        battery,
        valve,
    })
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn object(item: &Value) -> Result<&Map<String, Value>, String> {
    item.as_object()
        .ok_or_else(|| format!("expected an object, found {}", kind_of(item)))
}

/// Parses `t`: RFC 3339 with an offset, or integer Unix seconds.
fn time(obj: &Map<String, Value>) -> Result<Timestamp, String> {
    match obj.get("t") {
        None | Some(Value::Null) => Err("\"t\" is missing".into()),
        Some(Value::String(s)) => DateTime::parse_from_rfc3339(s)
            .map(|t| t.with_timezone(&Utc))
            .map_err(|e| format!("\"t\" {s:?} is not RFC 3339 with an offset: {e}")),
        Some(Value::Number(n)) => n
            .as_i64()
            .and_then(|secs| Utc.timestamp_opt(secs, 0).single())
            .ok_or_else(|| format!("\"t\" {n} is not an integer number of Unix seconds")),
        Some(other) => Err(format!(
            "\"t\" must be an RFC 3339 string or Unix seconds, found {}",
            kind_of(other)
        )),
    }
}

fn number(obj: &Map<String, Value>, key: &'static str) -> Result<Option<f64>, String> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => match n.as_f64() {
            Some(x) if x.is_finite() => Ok(Some(x)),
            _ => Err(format!("\"{key}\" {n} is not a finite number")),
        },
        Some(other) => Err(format!(
            "\"{key}\" must be a number, found {}",
            kind_of(other)
        )),
    }
}

fn reading(meter: &MeterId, item: &Value) -> Result<Reading, String> {
    let obj = object(item)?;
    let t = time(obj)?;
    let vol = number(obj, "vol")?.ok_or("\"vol\" is missing")?;
    if vol < 0.0 {
        return Err(format!("\"vol\" {vol} is negative"));
    }
    let flow_max = number(obj, "flow_max")?;
    if let Some(f) = flow_max
        && f < 0.0
    {
        return Err(format!("\"flow_max\" {f} is negative"));
    }
    Ok(Reading {
        meter: meter.clone(),
        t,
        vol,
        temp: number(obj, "temp")?,
        flow_max,
        pressure: number(obj, "pressure")?,
    })
}

fn event(meter: &MeterId, item: &Value) -> Result<MeterEvent, String> {
    let obj = object(item)?;
    let t = time(obj)?;
    let code = match obj.get("code") {
        None | Some(Value::Null) => return Err("\"code\" is missing".into()),
        Some(Value::String(s)) if EventCode::NAMED.contains(&s.as_str()) => {
            EventCode::Named(s.clone())
        }
        Some(Value::String(s)) => {
            return Err(format!(
                "\"code\" {s:?} is not a known event; use one of {} or a UNI/TS 11291 number",
                EventCode::NAMED.join(", ")
            ));
        }
        Some(Value::Number(n)) => match n.as_u64().and_then(|n| u32::try_from(n).ok()) {
            Some(n) => EventCode::Numeric(n),
            None => return Err(format!("\"code\" {n} is not a non-negative integer")),
        },
        Some(other) => {
            return Err(format!(
                "\"code\" must be a string or a number, found {}",
                kind_of(other)
            ));
        }
    };
    Ok(MeterEvent {
        meter: meter.clone(),
        t,
        code,
    })
}

#[derive(Serialize)]
struct WireReading {
    t: String,
    vol: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    temp: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    flow_max: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pressure: Option<f64>,
}

#[derive(Serialize)]
struct WireEvent {
    t: String,
    code: EventCode,
}

#[derive(Serialize)]
struct WirePayload<'a> {
    v: u8,
    meter: &'a str,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    readings: Vec<WireReading>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    events: Vec<WireEvent>,
    #[serde(skip_serializing_if = "Option::is_none")]
    battery: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    valve: Option<Valve>,
}

fn rfc3339(t: &Timestamp) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
}

/// Writes the v1 JSON payload of a message (the topic comes from [`uplink_topic`]).
pub fn encode(up: &Uplink) -> Vec<u8> {
    let payload = WirePayload {
        v: 1,
        meter: up.meter.as_str(),
        readings: up
            .readings
            .iter()
            .map(|r| WireReading {
                t: rfc3339(&r.t),
                vol: r.vol,
                temp: r.temp,
                flow_max: r.flow_max,
                pressure: r.pressure,
            })
            .collect(),
        events: up
            .events
            .iter()
            .map(|e| WireEvent {
                t: rfc3339(&e.t),
                code: e.code.clone(),
            })
            .collect(),
        battery: up.battery,
        valve: up.valve,
    };
    serde_json::to_vec(&payload).expect("a payload of plain values always serializes")
}

#[cfg(test)]
mod tests;
