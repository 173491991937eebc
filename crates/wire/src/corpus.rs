//! The shared wire test corpus: one case per file in `tests/corpus/<case>.json` at the
//! workspace root, the format described in `tests/corpus/README.md`.
//!
//! This module parses a case and builds the exact bytes to publish, so that every
//! harness (this crate's decoder test, the end-to-end ingest test, the fuzz seeds)
//! sends the same thing. It does no I/O: callers read the files.

use serde::Deserialize;
use serde_json::Value;

/// One corpus case, ready to send.
#[derive(Debug, Clone, PartialEq)]
pub struct Case {
    /// What the case checks, for people.
    pub description: String,
    /// The topic to publish on (also for `before`).
    pub topic: String,
    /// Earlier messages on the same topic, to be sent and stored first (serialized).
    pub before: Vec<Vec<u8>>,
    /// The payload under test, exactly as it must be sent.
    pub payload: Vec<u8>,
    /// What must happen.
    pub expect: Expect,
}

/// A case's expected outcome.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    /// `"ok"`, or the message-level reason ([`crate::DecodeError::reason`]).
    pub decode: String,
    /// The reasons of the rejected items, in order ([`crate::RejectedItem::reason`]).
    #[serde(default)]
    pub rejected_items: Vec<String>,
    /// How many readings of `payload` are stored after ingest.
    pub stored: usize,
    /// The reason recorded in the dead-letter store for `payload`, or `None`.
    pub dead_letter: Option<String>,
    /// A flag expected on a stored reading (`late`, `counter_regression`, `jump`).
    #[serde(default)]
    pub flag: Option<String>,
}

/// `payload_generate`: a synthetic v1 payload ([`generate_readings`]).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct Generate {
    readings: usize,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    description: String,
    topic: String,
    #[serde(default)]
    before: Vec<Value>,
    /// Kept even when it is JSON `null` (which is a payload too).
    #[serde(default, deserialize_with = "present")]
    payload: Option<Value>,
    payload_text: Option<String>,
    payload_hex: Option<String>,
    payload_generate: Option<Generate>,
    expect: Expect,
}

fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(d).map(Some)
}

impl Case {
    /// Parses the text of a corpus file. Exactly one of `payload`, `payload_text`,
    /// `payload_hex`, `payload_generate` must be present.
    pub fn from_json(text: &str) -> Result<Case, String> {
        let raw: Raw = serde_json::from_str(text).map_err(|e| e.to_string())?;
        let forms = [
            raw.payload.is_some(),
            raw.payload_text.is_some(),
            raw.payload_hex.is_some(),
            raw.payload_generate.is_some(),
        ];
        if forms.iter().filter(|p| **p).count() != 1 {
            return Err(
                "exactly one of payload, payload_text, payload_hex, payload_generate is needed"
                    .into(),
            );
        }
        let payload = if let Some(v) = raw.payload {
            serde_json::to_vec(&v).map_err(|e| e.to_string())?
        } else if let Some(text) = raw.payload_text {
            text.into_bytes()
        } else if let Some(hex) = raw.payload_hex {
            from_hex(&hex)?
        } else if let Some(g) = raw.payload_generate {
            let meter = raw
                .topic
                .split('/')
                .nth(2)
                .ok_or("payload_generate needs a topic naming a meter")?;
            generate_readings(meter, g.readings)
        } else {
            unreachable!("one form is present")
        };
        let before = raw
            .before
            .iter()
            .map(|v| serde_json::to_vec(v).map_err(|e| e.to_string()))
            .collect::<Result<_, _>>()?;
        Ok(Case {
            description: raw.description,
            topic: raw.topic,
            before,
            payload,
            expect: raw.expect,
        })
    }
}

/// The payload of `"payload_generate": {"readings": n}`: a compact v1 message for
/// `meter` with `n` readings, reading `i` at 2026-11-01T00:00:00Z plus `i` minutes
/// with `vol` = 1000 + i/1000 m³ (three decimals). 10,000 readings make about 440 KB,
/// far over [`crate::MAX_PAYLOAD_BYTES`].
pub fn generate_readings(meter: &str, n: usize) -> Vec<u8> {
    let start = chrono::DateTime::parse_from_rfc3339("2026-11-01T00:00:00Z")
        .expect("a valid constant")
        .to_utc();
    let mut out = String::with_capacity(64 + n * 48);
    out.push_str(r#"{"v":1,"meter":"#);
    out.push_str(&Value::String(meter.to_owned()).to_string());
    out.push_str(r#","readings":["#);
    for i in 0..n {
        if i > 0 {
            out.push(',');
        }
        let t = start + chrono::Duration::minutes(i as i64);
        out.push_str(&format!(
            r#"{{"t":"{}","vol":{}.{:03}}}"#,
            t.format("%Y-%m-%dT%H:%M:%SZ"),
            1000 + i / 1000,
            i % 1000
        ));
    }
    out.push_str("]}");
    out.into_bytes()
}

fn from_hex(hex: &str) -> Result<Vec<u8>, String> {
    let digits: Vec<u8> = hex.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    if !digits.len().is_multiple_of(2) {
        return Err("payload_hex has an odd number of digits".into());
    }
    digits
        .chunks(2)
        .map(|pair| {
            let s = std::str::from_utf8(pair).map_err(|e| e.to_string())?;
            u8::from_str_radix(s, 16).map_err(|_| format!("payload_hex: {s:?} is not hex"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_forms() {
        let case = |p: &str| {
            Case::from_json(&format!(
                r#"{{"description":"d","topic":"gas/D1/M1/up",{p},
                   "expect":{{"decode":"ok","stored":0,"dead_letter":null}}}}"#
            ))
        };
        assert_eq!(case(r#""payload":null"#).unwrap().payload, b"null");
        assert_eq!(case(r#""payload":{"v":1}"#).unwrap().payload, br#"{"v":1}"#);
        assert_eq!(case(r#""payload_text":"NaN""#).unwrap().payload, b"NaN");
        assert_eq!(
            case(r#""payload_hex":"7b ff""#).unwrap().payload,
            [0x7b, 0xff]
        );
        let g = case(r#""payload_generate":{"readings":2}"#)
            .unwrap()
            .payload;
        assert_eq!(
            String::from_utf8(g).unwrap(),
            r#"{"v":1,"meter":"M1","readings":[{"t":"2026-11-01T00:00:00Z","vol":1000.000},{"t":"2026-11-01T00:01:00Z","vol":1000.001}]}"#
        );
        assert!(case(r#""payload_hex":"7""#).is_err());
        assert!(case(r#""payload":1,"payload_text":"1""#).is_err());
        assert!(case(r#""nothing":1"#).is_err());
    }
}
