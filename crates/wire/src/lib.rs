//! The MQTT wire contract (v1) that meters and head-ends are built against.
//!
//! This crate owns the topic layout (`{prefix}/{district}/{meter}/up`) and the payload
//! formats accepted on it: [`decode`] parses and validates a message into domain types,
//! [`encode`] writes one (the simulator uses it). It is used by the ingestor, the
//! simulator and the fuzz target, and must not do I/O.
//!
//! Two payload formats share the topic, told apart by the payload's first JSON value:
//! - a JSON **object** is the v1 format of `DESIGN.md` ([`Format::V1`]);
//! - a JSON **array** is a SenML pack, RFC 8428 JSON ([`Format::SenML`]), see
//!   [`encode_senml`] and `docs/wire.md` for the naming rule.
//!
//! # Partial acceptance
//!
//! Problems with the message as a whole (its topic, size, encoding, JSON syntax,
//! version, meter) reject the whole message with a [`DecodeError`]. A problem with one
//! *item* (a reading, an event, the battery or valve status, a SenML record) rejects
//! only that item: the good items are returned in [`Decoded::uplink`] and the bad ones
//! are listed in [`Decoded::rejected`], each with a stable reason code, so the ingest
//! can store what is good and dead-letter the message naming what was not.
//!
//! Reason codes are stable: they are counted in `/metrics`, stored in the dead-letter
//! store and documented in `docs/wire.md`. [`MESSAGE_REASONS`] and [`ITEM_REASONS`]
//! list them all.

use leakwatch_core::{DistrictId, IdError, MeterEvent, MeterId, Reading};
use serde::Serialize;
use serde_json::Value;
use std::fmt;

pub mod corpus;
pub mod crew;
mod fast;
mod senml;
mod v1;

pub use senml::encode_senml;
pub use v1::encode;

/// Largest payload accepted, in bytes (64 KiB). Larger messages are rejected whole
/// with `too_large`, whatever they contain.
pub const MAX_PAYLOAD_BYTES: usize = 64 * 1024;

/// How much of a rejected payload the dead-letter store keeps, in bytes (64 KiB).
///
/// Every payload the decoder accepts for parsing is at most [`MAX_PAYLOAD_BYTES`], so
/// all of them are kept in full; only `too_large` payloads are cut, to their first
/// 64 KiB ([`dead_letter_payload`]).
pub const DEAD_LETTER_MAX_PAYLOAD: usize = 64 * 1024;

/// How many rejected items [`Decoded::rejected_detail`] lists one by one.
pub const REJECTED_DETAIL_MAX_ITEMS: usize = 50;

/// Earliest measurement time accepted: 1970-01-01T00:00:00Z, in Unix seconds.
pub const MIN_UNIX_SECS: i64 = 0;

/// Latest measurement time accepted: 9999-12-31T23:59:59Z, in Unix seconds. Later
/// times are `bad_t` (whether they are merely in the future is the ingest's call).
pub const MAX_UNIX_SECS: i64 = 253_402_300_799;

/// The part of `payload` kept in the dead-letter store: all of it up to
/// [`DEAD_LETTER_MAX_PAYLOAD`] bytes, else its first [`DEAD_LETTER_MAX_PAYLOAD`] bytes.
pub fn dead_letter_payload(payload: &[u8]) -> &[u8] {
    &payload[..payload.len().min(DEAD_LETTER_MAX_PAYLOAD)]
}

/// Every reason code a [`DecodeError`] can carry ([`DecodeError::reason`]).
pub const MESSAGE_REASONS: &[&str] = &[
    "bad_topic",
    "empty",
    "too_large",
    "not_utf8",
    "not_json",
    "not_object",
    "bad_version",
    "missing_meter",
    "bad_meter",
    "meter_mismatch",
    "bad_field",
];

/// Every reason code a [`RejectedItem`] can carry.
pub const ITEM_REASONS: &[&str] = &[
    "not_object",
    "missing_t",
    "bad_t",
    "missing_vol",
    "bad_vol",
    "negative_vol",
    "bad_field",
    "unknown_event",
    "bad_event",
    "bad_battery",
    "bad_valve",
];

/// Why a whole message was rejected. [`DecodeError::reason`] is the stable short code
/// used in the dead-letter store and in `/metrics`; `Display` is the detail for people.
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
    #[error("payload is JSON but neither an object (v1) nor an array (SenML)")]
    NotObject,
    #[error("unsupported version: {0}")]
    BadVersion(String),
    #[error("payload has no \"meter\"")]
    MissingMeter,
    /// A SenML pack that does not name its meter (see `docs/wire.md`).
    #[error("SenML pack does not name a meter: {0}")]
    SenmlNoMeter(String),
    #[error("\"meter\" is invalid: {0}")]
    BadMeter(IdError),
    #[error("payload meter {payload:?} differs from topic meter {topic:?}")]
    MeterMismatch { topic: String, payload: String },
    /// A message-level field of the wrong type: `meter`, the `readings` or `events`
    /// containers (v1), a SenML base field or must-understand field.
    #[error("{field}: {problem}")]
    BadField {
        field: &'static str,
        problem: String,
    },
}

impl DecodeError {
    /// A short, stable code for counting and filtering; one of [`MESSAGE_REASONS`].
    pub fn reason(&self) -> &'static str {
        match self {
            DecodeError::BadTopic { .. } => "bad_topic",
            DecodeError::Empty => "empty",
            DecodeError::TooLarge { .. } => "too_large",
            DecodeError::NotUtf8 { .. } => "not_utf8",
            DecodeError::NotJson(_) => "not_json",
            DecodeError::NotObject => "not_object",
            DecodeError::BadVersion(_) => "bad_version",
            DecodeError::MissingMeter | DecodeError::SenmlNoMeter(_) => "missing_meter",
            DecodeError::BadMeter(_) => "bad_meter",
            DecodeError::MeterMismatch { .. } => "meter_mismatch",
            DecodeError::BadField { .. } => "bad_field",
        }
    }
}

/// One item of a message that was left out of the [`Uplink`], and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RejectedItem {
    /// Which item: `readings[3]`, `events[0]`, `battery`, `valve` (v1), or
    /// `records[2]` (the index of a record in a SenML pack).
    pub item: String,
    /// A stable snake_case code, one of [`ITEM_REASONS`].
    pub reason: &'static str,
    /// What exactly is wrong, for people.
    pub detail: String,
}

impl fmt::Display for RejectedItem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {} ({})", self.item, self.detail, self.reason)
    }
}

/// The payload format a message was written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    /// The v1 JSON object of `DESIGN.md`.
    V1,
    /// A SenML pack (RFC 8428, JSON).
    SenML,
}

impl Format {
    /// A short label for logs and metrics: `v1` or `senml`.
    pub fn as_str(self) -> &'static str {
        match self {
            Format::V1 => "v1",
            Format::SenML => "senml",
        }
    }
}

/// A message that passed the message-level checks: its good items, and the items that
/// were left out.
#[derive(Debug, Clone, PartialEq)]
pub struct Decoded {
    /// The good items only.
    pub uplink: Uplink,
    /// The items left out, in payload order (v1: readings, events, battery, valve;
    /// SenML: record order). Empty for a clean message.
    pub rejected: Vec<RejectedItem>,
    /// The format the payload was written in.
    pub format: Format,
}

impl Decoded {
    /// The reason a message with rejected items is dead-lettered under: that of its
    /// first rejected item. `None` for a clean message.
    pub fn dead_letter_reason(&self) -> Option<&'static str> {
        self.rejected.first().map(|r| r.reason)
    }

    /// The rejected items, one per line (`item: detail (reason)`), for the dead-letter
    /// detail: the first [`REJECTED_DETAIL_MAX_ITEMS`], then a line counting the rest,
    /// so a 64 KiB message of bad items cannot make a multi-megabyte detail.
    pub fn rejected_detail(&self) -> String {
        let mut lines: Vec<String> = self
            .rejected
            .iter()
            .take(REJECTED_DETAIL_MAX_ITEMS)
            .map(ToString::to_string)
            .collect();
        if self.rejected.len() > REJECTED_DETAIL_MAX_ITEMS {
            lines.push(format!(
                "... and {} more rejected items",
                self.rejected.len() - REJECTED_DETAIL_MAX_ITEMS
            ));
        }
        lines.join("\n")
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

/// The good content of an uplink message.
#[derive(Debug, Clone, PartialEq)]
pub struct Uplink {
    pub district: DistrictId,
    pub meter: MeterId,
    /// In payload order; repeats of the same `t` are kept (the store tells duplicates
    /// from conflicts).
    pub readings: Vec<Reading>,
    pub events: Vec<MeterEvent>,
    /// Battery level in percent.
    pub battery: Option<u8>,
    pub valve: Option<Valve>,
}

/// Parses and validates one message received on `topic`.
///
/// Returns `Err` when the message as a whole is unusable, else the good items and the
/// list of rejected ones (see the crate documentation). Unknown fields are accepted
/// and ignored, so the contract can grow without breaking older ingestors.
///
/// A clean v1 message is read by a fast path that skips the `serde_json::Value` tree;
/// anything else (SenML, any message- or item-level problem) is decoded by
/// [`decode_reference`], so the result is always exactly that of [`decode_reference`].
pub fn decode(prefix: &str, topic: &str, payload: &[u8]) -> Result<Decoded, DecodeError> {
    let (TopicParts { district, meter }, text) = check_payload(prefix, topic, payload)?;
    if let Some(v1) = fast::decode(&meter, text) {
        return Ok(Decoded {
            uplink: Uplink {
                district,
                meter,
                readings: v1.readings,
                events: v1.events,
                battery: v1.battery,
                valve: v1.valve,
            },
            rejected: Vec::new(),
            format: Format::V1,
        });
    }
    decode_value(district, meter, text)
}

/// The reference decoder: parses the payload into a `serde_json::Value`, then checks
/// it. [`decode`] must give exactly its result for every input (its fast path only
/// answers for clean v1 messages). Public for the equivalence test, the `wire_decode`
/// benchmark and differential fuzzing, not for production use: it is slower.
#[doc(hidden)]
pub fn decode_reference(prefix: &str, topic: &str, payload: &[u8]) -> Result<Decoded, DecodeError> {
    let (TopicParts { district, meter }, text) = check_payload(prefix, topic, payload)?;
    decode_value(district, meter, text)
}

/// The checks before JSON parsing: topic, size, UTF-8.
fn check_payload<'p>(
    prefix: &str,
    topic: &str,
    payload: &'p [u8],
) -> Result<(TopicParts, &'p str), DecodeError> {
    let parts = parse_topic(prefix, topic)?;
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
    Ok((parts, text))
}

/// Parses `text` into a `Value` and decodes it as v1 or SenML.
fn decode_value(district: DistrictId, meter: MeterId, text: &str) -> Result<Decoded, DecodeError> {
    let value: Value =
        serde_json::from_str(text).map_err(|e| DecodeError::NotJson(e.to_string()))?;
    let (format, (uplink, rejected)) = match value {
        Value::Object(obj) => (Format::V1, v1::decode(district, meter, &obj)?),
        Value::Array(records) => (Format::SenML, senml::decode(district, meter, &records)?),
        _ => return Err(DecodeError::NotObject),
    };
    Ok(Decoded {
        uplink,
        rejected,
        format,
    })
}

/// Why one item was rejected, before it is named.
#[derive(Debug)]
struct ItemError {
    reason: &'static str,
    detail: String,
}

impl ItemError {
    fn new(reason: &'static str, detail: impl Into<String>) -> Self {
        ItemError {
            reason,
            detail: detail.into(),
        }
    }

    fn named(self, item: String) -> RejectedItem {
        RejectedItem {
            item,
            reason: self.reason,
            detail: self.detail,
        }
    }
}

/// How a JSON value is described in details.
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

/// Checks that a measurement time lies within [`MIN_UNIX_SECS`]..=[`MAX_UNIX_SECS`].
fn in_range(
    t: leakwatch_core::Timestamp,
    shown: &dyn fmt::Display,
) -> Result<leakwatch_core::Timestamp, ItemError> {
    let secs = t.timestamp();
    if (MIN_UNIX_SECS..=MAX_UNIX_SECS).contains(&secs) {
        Ok(t)
    } else {
        Err(ItemError::new(
            "bad_t",
            format!("\"t\" {shown} is outside 1970-01-01T00:00:00Z..=9999-12-31T23:59:59Z"),
        ))
    }
}

#[cfg(test)]
mod corpus_tests;
#[cfg(test)]
mod equivalence_tests;
#[cfg(test)]
mod tests;
