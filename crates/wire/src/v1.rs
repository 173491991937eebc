//! The v1 payload: one JSON object per message (`DESIGN.md`, "Wire contract").
//!
//! Message-level checks (`v`, `meter`, the types of the `readings` and `events`
//! containers) reject the whole message; every reading, every event, `battery` and
//! `valve` is checked on its own and only rejected by itself.

use crate::{DecodeError, ItemError, RejectedItem, Uplink, Valve, in_range, kind_of};
use chrono::{DateTime, TimeZone, Utc};
use leakwatch_core::{DistrictId, EventCode, MeterEvent, MeterId, Reading, Timestamp};
use serde::Serialize;
use serde_json::{Map, Value};

/// Decodes the v1 object `obj` received on the topic of `district`/`meter`.
pub(crate) fn decode(
    district: DistrictId,
    meter: MeterId,
    obj: &Map<String, Value>,
) -> Result<(Uplink, Vec<RejectedItem>), DecodeError> {
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

    let reading_items = container(obj, "readings")?;
    let event_items = container(obj, "events")?;
    let mut rejected = Vec::new();

    let mut readings = Vec::with_capacity(reading_items.len());
    for (index, item) in reading_items.iter().enumerate() {
        match reading(&meter, item) {
            Ok(r) => readings.push(r),
            Err(e) => rejected.push(e.named(format!("readings[{index}]"))),
        }
    }

    let mut events = Vec::with_capacity(event_items.len());
    for (index, item) in event_items.iter().enumerate() {
        match event(&meter, item) {
            Ok(e) => events.push(e),
            Err(e) => rejected.push(e.named(format!("events[{index}]"))),
        }
    }

    let battery = match battery(obj.get("battery")) {
        Ok(b) => b,
        Err(e) => {
            rejected.push(e.named("battery".into()));
            None
        }
    };

    let valve = match obj.get("valve") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s == "open" => Some(Valve::Open),
        Some(Value::String(s)) if s == "closed" => Some(Valve::Closed),
        Some(other) => {
            rejected.push(
                ItemError::new(
                    "bad_valve",
                    format!("expected \"open\" or \"closed\", found {}", shorten(other)),
                )
                .named("valve".into()),
            );
            None
        }
    };

    let uplink = Uplink {
        district,
        meter,
        readings,
        events,
        battery,
        valve,
    };
    Ok((uplink, rejected))
}

/// The items of the optional array `key`; another type rejects the message.
fn container<'a>(
    obj: &'a Map<String, Value>,
    key: &'static str,
) -> Result<&'a [Value], DecodeError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(&[]),
        Some(Value::Array(items)) => Ok(items),
        Some(other) => Err(DecodeError::BadField {
            field: key,
            problem: format!("expected an array, found {}", kind_of(other)),
        }),
    }
}

/// A JSON value as shown in a detail, cut to a reasonable length.
fn shorten(v: &Value) -> String {
    let s = v.to_string();
    if s.len() <= 80 {
        s
    } else {
        let mut end = 80;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}...", &s[..end])
    }
}

fn object(item: &Value) -> Result<&Map<String, Value>, ItemError> {
    item.as_object().ok_or_else(|| {
        ItemError::new(
            "not_object",
            format!("expected an object, found {}", kind_of(item)),
        )
    })
}

/// Parses `t`: RFC 3339 with an offset, or integer Unix seconds, within
/// [`crate::MIN_UNIX_SECS`]..=[`crate::MAX_UNIX_SECS`].
fn time(obj: &Map<String, Value>) -> Result<Timestamp, ItemError> {
    match obj.get("t") {
        None | Some(Value::Null) => Err(ItemError::new("missing_t", "\"t\" is missing")),
        Some(Value::String(s)) => {
            let t = DateTime::parse_from_rfc3339(s)
                .map(|t| t.with_timezone(&Utc))
                .map_err(|e| {
                    ItemError::new(
                        "bad_t",
                        format!(
                            "\"t\" {} is not RFC 3339 with an offset: {e}",
                            shorten(&Value::String(s.clone()))
                        ),
                    )
                })?;
            in_range(t, &format_args!("{s:?}"))
        }
        Some(Value::Number(n)) => {
            let secs = n.as_i64().ok_or_else(|| {
                ItemError::new(
                    "bad_t",
                    format!("\"t\" {n} is not an integer number of Unix seconds"),
                )
            })?;
            let t = Utc.timestamp_opt(secs, 0).single().ok_or_else(|| {
                ItemError::new("bad_t", format!("\"t\" {n} is not a representable time"))
            })?;
            in_range(t, n)
        }
        Some(other) => Err(ItemError::new(
            "bad_t",
            format!(
                "\"t\" must be an RFC 3339 string or Unix seconds, found {}",
                kind_of(other)
            ),
        )),
    }
}

/// An optional finite number; anything else is `bad_field`.
fn optional_number(obj: &Map<String, Value>, key: &'static str) -> Result<Option<f64>, ItemError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => match n.as_f64() {
            Some(x) if x.is_finite() => Ok(Some(x)),
            _ => Err(ItemError::new(
                "bad_field",
                format!("\"{key}\" {n} is not a finite number"),
            )),
        },
        Some(other) => Err(ItemError::new(
            "bad_field",
            format!("\"{key}\" must be a number, found {}", shorten(other)),
        )),
    }
}

fn reading(meter: &MeterId, item: &Value) -> Result<Reading, ItemError> {
    let obj = object(item)?;
    let t = time(obj)?;
    let vol = match obj.get("vol") {
        None | Some(Value::Null) => {
            return Err(ItemError::new("missing_vol", "\"vol\" is missing"));
        }
        Some(Value::Number(n)) => match n.as_f64() {
            Some(x) if x.is_finite() => x,
            _ => {
                return Err(ItemError::new(
                    "bad_vol",
                    format!("\"vol\" {n} is not a finite number"),
                ));
            }
        },
        Some(other) => {
            return Err(ItemError::new(
                "bad_vol",
                format!("\"vol\" must be a number, found {}", shorten(other)),
            ));
        }
    };
    if vol < 0.0 {
        return Err(ItemError::new(
            "negative_vol",
            format!("\"vol\" {vol} is negative"),
        ));
    }
    let temp = optional_number(obj, "temp")?;
    let flow_max = optional_number(obj, "flow_max")?;
    if let Some(f) = flow_max
        && f < 0.0
    {
        return Err(ItemError::new(
            "bad_field",
            format!("\"flow_max\" {f} is negative"),
        ));
    }
    let pressure = optional_number(obj, "pressure")?;
    Ok(Reading {
        meter: meter.clone(),
        t,
        vol,
        temp,
        flow_max,
        pressure,
    })
}

fn event(meter: &MeterId, item: &Value) -> Result<MeterEvent, ItemError> {
    let obj = object(item)?;
    let t = time(obj)?;
    let code = match obj.get("code") {
        None | Some(Value::Null) => return Err(ItemError::new("bad_event", "\"code\" is missing")),
        Some(Value::String(s)) if EventCode::NAMED.contains(&s.as_str()) => {
            EventCode::Named(s.clone())
        }
        Some(Value::String(s)) => {
            return Err(ItemError::new(
                "unknown_event",
                format!(
                    "\"code\" {} is not a known event; use one of {} or a UNI/TS 11291 number",
                    shorten(&Value::String(s.clone())),
                    EventCode::NAMED.join(", ")
                ),
            ));
        }
        Some(Value::Number(n)) => match n.as_u64().and_then(|n| u32::try_from(n).ok()) {
            Some(n) => EventCode::Numeric(n),
            None => {
                return Err(ItemError::new(
                    "bad_event",
                    format!("\"code\" {n} is not an integer in 0..=4294967295"),
                ));
            }
        },
        Some(other) => {
            return Err(ItemError::new(
                "bad_event",
                format!(
                    "\"code\" must be a string or a number, found {}",
                    kind_of(other)
                ),
            ));
        }
    };
    Ok(MeterEvent {
        meter: meter.clone(),
        t,
        code,
    })
}

/// `battery`: a number in 0..=100, rounded to a whole percent.
pub(crate) fn battery(value: Option<&Value>) -> Result<Option<u8>, ItemError> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => match n.as_f64() {
            Some(b) if (0.0..=100.0).contains(&b) => Ok(Some(b.round() as u8)),
            _ => Err(ItemError::new(
                "bad_battery",
                format!("battery {n} is outside 0..=100"),
            )),
        },
        Some(other) => Err(ItemError::new(
            "bad_battery",
            format!("battery must be a number, found {}", shorten(other)),
        )),
    }
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

/// Writes the v1 JSON payload of a message (the topic comes from
/// [`crate::uplink_topic`]). Decoding the result gives `up` back.
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
