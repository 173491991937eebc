//! SenML packs (RFC 8428, JSON representation) on the uplink topic.
//!
//! A payload whose top-level JSON value is an array is read as a SenML pack. The
//! mapping onto leakwatch's readings (`docs/wire.md` has it with examples):
//!
//! - **Names.** Each record's resolved name is `bn + n` (base name carried forward as
//!   RFC 8428 says). It must read `[urn:dev:mid:]<meter_id>:<measurement>`: split at
//!   the *last* `:`, the part after is the measurement, the part before (with an
//!   optional `urn:dev:mid:` prefix, any case) is the meter id. Typically
//!   `"bn": "urn:dev:mid:PDR00012345678:"` (or `"PDR00012345678:"`) and `"n": "vol"`.
//!   Every record that resolves to a name must name the topic's meter
//!   (`meter_mismatch` otherwise, `bad_meter` if it is not a valid id,
//!   `missing_meter` if the name has no `:`), and at least one must (`missing_meter`).
//! - **Measurements.** `vol`: the volume index, in the sum field `s` (+ `bs`), unit
//!   `m3` when a unit (`u`, or `bu`) is given. `temp`: gas temperature in `v` (+ `bv`),
//!   unit `Cel`; it sets `temp` on the `vol` record(s) of exactly the same time.
//!   `battery`: percent in `v` (+ `bv`), unit `%EL`; the last valid one wins, its time
//!   is not used. Any other measurement name is ignored.
//! - **Times.** `bt + t` in seconds since the Unix epoch, fractions allowed. RFC 8428
//!   reads values below 2^28 as relative to "now"; a reading must carry its own time,
//!   so a relative time is `bad_t`, and a record with neither `bt` nor `t` is
//!   `missing_t`.
//! - **Versions and extensions.** `bver` other than 10 is `bad_version`; a label
//!   ending in `_` (RFC 8428 "must understand") rejects the pack with `bad_field`.
//!   Base fields of the wrong type (`bn`, `bt`, `bu`, `bv`, `bs`) reject the pack with
//!   `bad_field`, since they change the meaning of every later record. Other unknown
//!   labels are ignored.

use crate::{DecodeError, ItemError, RejectedItem, Uplink, in_range, kind_of, v1};
use chrono::{TimeZone, Utc};
use leakwatch_core::{DistrictId, MeterId, Reading, Timestamp};
use serde_json::{Map, Value, json};

/// The URN prefix of a meter's name (RFC 9039 `urn:dev:mid:`), optional on decode.
pub const URN_PREFIX: &str = "urn:dev:mid:";

/// The SenML version leakwatch reads (`bver`; absent means 10).
const SENML_VERSION: u64 = 10;

/// RFC 8428: times below 2^28 seconds are relative to the time of receipt.
const RELATIVE_TIME_LIMIT: f64 = 268_435_456.0;

/// Base fields in force at a record, borrowed from the pack (nothing is copied per
/// record, so a long base name cannot multiply memory use).
#[derive(Debug, Clone, Copy, Default)]
struct Base<'a> {
    name: &'a str,
    time: Option<f64>,
    unit: Option<&'a str>,
    value: Option<f64>,
    sum: Option<f64>,
}

/// The measurements leakwatch reads; records of any other name are ignored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Measurement {
    Vol,
    Temp,
    Battery,
}

impl Measurement {
    const ALL: [Measurement; 3] = [Measurement::Vol, Measurement::Temp, Measurement::Battery];

    fn name(self) -> &'static str {
        match self {
            Measurement::Vol => "vol",
            Measurement::Temp => "temp",
            Measurement::Battery => "battery",
        }
    }

    /// The measurement named by the concatenation `head + tail`, if leakwatch reads it.
    fn from_parts(head: &str, tail: &str) -> Option<Measurement> {
        Measurement::ALL.into_iter().find(|m| {
            let name = m.name();
            name.len() == head.len() + tail.len()
                && name.starts_with(head)
                && &name[head.len()..] == tail
        })
    }
}

/// Splits the resolved name `bn + n` at its last `:` without building it: the device
/// part (owned, short for every valid name) and the measurement, if one leakwatch
/// reads. `None` when the name has no `:`.
fn resolve(bn: &str, n: &str) -> Option<(String, Option<Measurement>)> {
    if let Some(i) = n.rfind(':') {
        Some((
            format!("{bn}{}", &n[..i]),
            Measurement::from_parts(&n[i + 1..], ""),
        ))
    } else {
        let j = bn.rfind(':')?;
        Some((bn[..j].to_owned(), Measurement::from_parts(&bn[j + 1..], n)))
    }
}

/// A record of a measurement leakwatch reads, named for the topic's meter.
struct Named<'a> {
    index: usize,
    measurement: Measurement,
    obj: &'a Map<String, Value>,
    base: Base<'a>,
}

/// Decodes the SenML pack `records` received on the topic of `district`/`meter`.
pub(crate) fn decode(
    district: DistrictId,
    meter: MeterId,
    records: &[Value],
) -> Result<(Uplink, Vec<RejectedItem>), DecodeError> {
    let mut rejected: Vec<(usize, RejectedItem)> = Vec::new();
    let reject = |rejected: &mut Vec<(usize, RejectedItem)>, index: usize, e: ItemError| {
        rejected.push((index, e.named(format!("records[{index}]"))));
    };

    // Pass 1: base fields, names, identity. Anything wrong here that is not confined
    // to one record rejects the pack.
    let mut base = Base::default();
    let mut named = Vec::new();
    let mut names_meter = false;
    for (index, record) in records.iter().enumerate() {
        let Some(obj) = record.as_object() else {
            reject(
                &mut rejected,
                index,
                ItemError::new(
                    "not_object",
                    format!(
                        "expected a SenML record (an object), found {}",
                        kind_of(record)
                    ),
                ),
            );
            continue;
        };
        read_base(index, obj, &mut base)?;
        let n = match obj.get("n") {
            None => "",
            Some(Value::String(s)) => s.as_str(),
            Some(other) => {
                reject(
                    &mut rejected,
                    index,
                    ItemError::new(
                        "bad_field",
                        format!("\"n\" must be a string, found {}", kind_of(other)),
                    ),
                );
                continue;
            }
        };
        if base.name.is_empty() && n.is_empty() {
            reject(
                &mut rejected,
                index,
                ItemError::new("bad_field", "the record has no name (neither bn nor n)"),
            );
            continue;
        }
        let Some((device, measurement)) = resolve(base.name, n) else {
            return Err(DecodeError::SenmlNoMeter(format!(
                "records[{index}] is named {:?}, expected [urn:dev:mid:]<meter>:<measurement>",
                cut(&format!("{}{n}", base.name))
            )));
        };
        let device = match device.get(..URN_PREFIX.len()) {
            Some(p) if p.eq_ignore_ascii_case(URN_PREFIX) => &device[URN_PREFIX.len()..],
            _ => device.as_str(),
        };
        if device != meter.as_str() {
            let named_meter = MeterId::parse(device).map_err(DecodeError::BadMeter)?;
            return Err(DecodeError::MeterMismatch {
                topic: meter.to_string(),
                payload: named_meter.to_string(),
            });
        }
        names_meter = true;
        if let Some(measurement) = measurement {
            named.push(Named {
                index,
                measurement,
                obj,
                base,
            });
        }
    }
    if !names_meter {
        return Err(DecodeError::SenmlNoMeter(if records.is_empty() {
            "the pack is empty".into()
        } else {
            "no record has a name".into()
        }));
    }

    // Pass 2: measurements, each record on its own.
    let mut readings: Vec<Reading> = Vec::new();
    let mut temps: Vec<(usize, Timestamp, f64)> = Vec::new();
    let mut battery = None;
    for rec in &named {
        let outcome = match rec.measurement {
            Measurement::Vol => vol(&meter, rec).map(|r| readings.push(r)),
            Measurement::Temp => temp(rec).map(|(t, v)| temps.push((rec.index, t, v))),
            Measurement::Battery => battery_level(rec).map(|b| battery = Some(b)),
        };
        if let Err(e) = outcome {
            reject(&mut rejected, rec.index, e);
        }
    }
    for (index, t, value) in temps {
        let mut matched = false;
        for r in readings.iter_mut().filter(|r| r.t == t) {
            r.temp = Some(value);
            matched = true;
        }
        if !matched {
            reject(
                &mut rejected,
                index,
                ItemError::new(
                    "bad_field",
                    format!(
                        "temp at {} has no vol record of the same time to attach to",
                        t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
                    ),
                ),
            );
        }
    }

    rejected.sort_by_key(|(index, _)| *index);
    let uplink = Uplink {
        district,
        meter,
        readings,
        events: Vec::new(),
        battery,
        valve: None,
    };
    Ok((uplink, rejected.into_iter().map(|(_, r)| r).collect()))
}

/// Applies the base fields of record `index` to `base`.
fn read_base<'a>(
    index: usize,
    obj: &'a Map<String, Value>,
    base: &mut Base<'a>,
) -> Result<(), DecodeError> {
    if let Some(label) = obj.keys().find(|k| k.ends_with('_')) {
        return Err(DecodeError::BadField {
            field: "senml",
            problem: format!(
                "records[{index}] has the must-understand field {:?}, which leakwatch does not understand",
                cut(label)
            ),
        });
    }
    if let Some(v) = obj.get("bver")
        && !(v.as_u64() == Some(SENML_VERSION) || v.as_f64() == Some(SENML_VERSION as f64))
    {
        return Err(DecodeError::BadVersion(format!(
            "records[{index}]: \"bver\" is {}, expected {SENML_VERSION} (or absent)",
            cut(&v.to_string())
        )));
    }
    let bad = |field: &'static str, v: &Value, want: &str| DecodeError::BadField {
        field,
        problem: format!("records[{index}]: expected {want}, found {}", kind_of(v)),
    };
    let number = |field: &'static str| -> Result<Option<f64>, DecodeError> {
        match obj.get(field) {
            None => Ok(None),
            Some(Value::Number(n)) => match n.as_f64() {
                Some(x) if x.is_finite() => Ok(Some(x)),
                _ => Err(DecodeError::BadField {
                    field,
                    problem: format!("records[{index}]: {n} is not a finite number"),
                }),
            },
            Some(other) => Err(bad(field, other, "a number")),
        }
    };
    let string = |field: &'static str| -> Result<Option<&'a str>, DecodeError> {
        match obj.get(field) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.as_str())),
            Some(other) => Err(bad(field, other, "a string")),
        }
    };
    if let Some(bn) = string("bn")? {
        base.name = bn;
    }
    if let Some(bt) = number("bt")? {
        base.time = Some(bt);
    }
    if let Some(bu) = string("bu")? {
        base.unit = Some(bu);
    }
    if let Some(bv) = number("bv")? {
        base.value = Some(bv);
    }
    if let Some(bs) = number("bs")? {
        base.sum = Some(bs);
    }
    Ok(())
}

/// A string cut to 80 bytes for details.
fn cut(s: &str) -> String {
    if s.len() <= 80 {
        return s.to_owned();
    }
    let mut end = 80;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &s[..end])
}

/// The record's resolved time: `bt + t`, absolute, in range.
fn time(rec: &Named<'_>) -> Result<Timestamp, ItemError> {
    let t = match rec.obj.get("t") {
        None => None,
        Some(Value::Number(n)) => n.as_f64(),
        Some(other) => {
            return Err(ItemError::new(
                "bad_t",
                format!(
                    "\"t\" must be a number of seconds, found {}",
                    kind_of(other)
                ),
            ));
        }
    };
    if t.is_none() && rec.base.time.is_none() {
        return Err(ItemError::new(
            "missing_t",
            "the record has neither \"t\" nor a base time \"bt\"",
        ));
    }
    let secs = rec.base.time.unwrap_or(0.0) + t.unwrap_or(0.0);
    if !secs.is_finite() || secs < RELATIVE_TIME_LIMIT {
        return Err(ItemError::new(
            "bad_t",
            format!(
                "time {secs} (bt + t) is relative to the time of receipt (below 2^28, RFC 8428); \
                 a reading must carry its absolute time in Unix seconds"
            ),
        ));
    }
    if secs > crate::MAX_UNIX_SECS as f64 {
        return Err(ItemError::new(
            "bad_t",
            format!("time {secs} (bt + t) is after 9999-12-31T23:59:59Z"),
        ));
    }
    let mut whole = secs.floor();
    let mut nanos = ((secs - whole) * 1e9).round();
    if nanos >= 1e9 {
        whole += 1.0;
        nanos = 0.0;
    }
    let t = Utc
        .timestamp_opt(whole as i64, nanos as u32)
        .single()
        .ok_or_else(|| ItemError::new("bad_t", format!("time {secs} is not representable")))?;
    in_range(t, &secs)
}

/// Checks the record's unit (`u`, else `bu`) against `want`, when one is given.
fn unit(rec: &Named<'_>, want: &str) -> Result<(), ItemError> {
    let unit = match rec.obj.get("u") {
        None => rec.base.unit,
        Some(Value::String(s)) => Some(s.as_str()),
        Some(other) => {
            return Err(ItemError::new(
                "bad_field",
                format!("\"u\" must be a string, found {}", kind_of(other)),
            ));
        }
    };
    match unit {
        Some(u) if u != want => Err(ItemError::new(
            "bad_field",
            format!(
                "{} is in {:?}; leakwatch reads it in {want:?}",
                rec.measurement.name(),
                cut(u)
            ),
        )),
        _ => Ok(()),
    }
}

/// The record's value `bv + v`, or the reason under `reason`.
fn value(rec: &Named<'_>, reason: &'static str) -> Result<f64, ItemError> {
    let v = match rec.obj.get("v") {
        None => {
            return Err(ItemError::new(
                reason,
                format!("{} has no value \"v\"", rec.measurement.name()),
            ));
        }
        Some(Value::Number(n)) => n.as_f64().unwrap_or(f64::NAN),
        Some(other) => {
            return Err(ItemError::new(
                reason,
                format!("\"v\" must be a number, found {}", kind_of(other)),
            ));
        }
    };
    let v = rec.base.value.unwrap_or(0.0) + v;
    if v.is_finite() {
        Ok(v)
    } else {
        Err(ItemError::new(
            reason,
            format!("{} (bv + v) is not a finite number", rec.measurement.name()),
        ))
    }
}

fn vol(meter: &MeterId, rec: &Named<'_>) -> Result<Reading, ItemError> {
    let t = time(rec)?;
    unit(rec, "m3")?;
    let s = match rec.obj.get("s") {
        None if rec.obj.contains_key("v") => {
            return Err(ItemError::new(
                "missing_vol",
                "the volume index must be a sum \"s\", found a value \"v\"",
            ));
        }
        None => {
            return Err(ItemError::new(
                "missing_vol",
                "the vol record has no sum \"s\"",
            ));
        }
        Some(Value::Number(n)) => n.as_f64().unwrap_or(f64::NAN),
        Some(other) => {
            return Err(ItemError::new(
                "bad_vol",
                format!("\"s\" must be a number, found {}", kind_of(other)),
            ));
        }
    };
    let vol = rec.base.sum.unwrap_or(0.0) + s;
    if !vol.is_finite() {
        return Err(ItemError::new(
            "bad_vol",
            "the volume index (bs + s) is not a finite number",
        ));
    }
    if vol < 0.0 {
        return Err(ItemError::new(
            "negative_vol",
            format!("the volume index (bs + s) {vol} is negative"),
        ));
    }
    Ok(Reading {
        meter: meter.clone(),
        t,
        vol,
        temp: None,
        flow_max: None,
        pressure: None,
    })
}

fn temp(rec: &Named<'_>) -> Result<(Timestamp, f64), ItemError> {
    let t = time(rec)?;
    unit(rec, "Cel")?;
    Ok((t, value(rec, "bad_field")?))
}

fn battery_level(rec: &Named<'_>) -> Result<u8, ItemError> {
    unit(rec, "%EL")?;
    let v = value(rec, "bad_battery")?;
    let level = v1::battery(Some(&json!(v)))?;
    Ok(level.expect("a number is never absent"))
}

/// A time as SenML seconds: an integer when whole, else a float.
fn seconds(t: &Timestamp) -> Value {
    if t.timestamp_subsec_nanos() == 0 {
        json!(t.timestamp())
    } else {
        json!(t.timestamp() as f64 + f64::from(t.timestamp_subsec_nanos()) / 1e9)
    }
}

/// Writes `up` as a SenML pack: the first record carries
/// `"bn": "urn:dev:mid:<meter>:"`, each reading is a `vol` record (`s`, `m3`, absolute
/// `t`) followed by its `temp` record (`Cel`) if any, then a `battery` record (`%EL`).
///
/// SenML carries less than v1: `flow_max`, `pressure`, events and the valve are not
/// written; times before 2^28 s (1978-07-04) cannot be absolute in SenML; fractional
/// times go through an `f64` (sub-microsecond precision is lost).
pub fn encode_senml(up: &Uplink) -> Vec<u8> {
    let mut records: Vec<Value> = Vec::new();
    for r in &up.readings {
        records.push(json!({"n": "vol", "u": "m3", "t": seconds(&r.t), "s": r.vol}));
        if let Some(temp) = r.temp {
            records.push(json!({"n": "temp", "u": "Cel", "t": seconds(&r.t), "v": temp}));
        }
    }
    if let Some(b) = up.battery {
        records.push(json!({"n": "battery", "u": "%EL", "v": b}));
    }
    if records.is_empty() {
        records.push(json!({}));
    }
    records[0]["bn"] = json!(format!("{URN_PREFIX}{}:", up.meter));
    serde_json::to_vec(&records).expect("a pack of plain values always serializes")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Decoded, Format, decode};

    const TOPIC: &str = "gas/D01/PDR00012345678/up";

    fn ok(payload: &str) -> Decoded {
        let d = decode("gas", TOPIC, payload.as_bytes()).unwrap();
        assert_eq!(d.format, Format::SenML);
        d
    }

    fn clean(payload: &str) -> Uplink {
        let d = ok(payload);
        assert!(d.rejected.is_empty(), "{:?}", d.rejected);
        d.uplink
    }

    fn reasons(payload: &str) -> Vec<&'static str> {
        ok(payload).rejected.iter().map(|r| r.reason).collect()
    }

    fn err(payload: &str) -> &'static str {
        decode("gas", TOPIC, payload.as_bytes())
            .unwrap_err()
            .reason()
    }

    fn at(rfc3339: &str) -> Timestamp {
        chrono::DateTime::parse_from_rfc3339(rfc3339)
            .unwrap()
            .with_timezone(&Utc)
    }

    /// RFC 8428 section 5.1.2 shape: a base name and base time, then relative offsets.
    #[test]
    fn base_name_base_time_and_offsets() {
        let up = clean(
            r#"[{"bn":"urn:dev:mid:PDR00012345678:","bt":1.794096e+09,"bu":"m3","bver":10,
                 "n":"vol","s":1234.567},
                {"n":"vol","t":3600,"s":1234.612},
                {"n":"vol","t":7200,"s":1234.7}]"#,
        );
        assert_eq!(up.meter.as_str(), "PDR00012345678");
        assert_eq!(up.district.as_str(), "D01");
        let got: Vec<_> = up.readings.iter().map(|r| (r.t, r.vol)).collect();
        assert_eq!(
            got,
            vec![
                (at("2026-11-08T00:00:00Z"), 1234.567),
                (at("2026-11-08T01:00:00Z"), 1234.612),
                (at("2026-11-08T02:00:00Z"), 1234.7),
            ]
        );
    }

    #[test]
    fn name_without_urn_and_full_names_per_record() {
        let up = clean(r#"[{"bn":"PDR00012345678:","n":"vol","t":1794096000,"s":1}]"#);
        assert_eq!(up.readings.len(), 1);
        let up = clean(
            r#"[{"n":"URN:DEV:MID:PDR00012345678:vol","t":1794096000,"s":1},
                {"n":"PDR00012345678:vol","t":1794114000,"s":2}]"#,
        );
        assert_eq!(up.readings.len(), 2);
    }

    #[test]
    fn temp_attaches_to_the_vol_of_the_same_time_and_battery_is_status() {
        let up = clean(
            r#"[{"bn":"urn:dev:mid:PDR00012345678:","bt":1794096000},
                {"n":"vol","u":"m3","s":10.5},
                {"n":"temp","u":"Cel","v":11.5},
                {"n":"vol","u":"m3","t":3600,"s":10.75},
                {"n":"battery","u":"%EL","v":87},
                {"n":"rssi","u":"dBW","v":-90}]"#,
        );
        assert_eq!(up.readings[0].temp, Some(11.5));
        assert_eq!(up.readings[1].temp, None);
        assert_eq!(up.battery, Some(87));
        assert!(up.events.is_empty());
    }

    #[test]
    fn fractional_times_and_base_sum() {
        let up =
            clean(r#"[{"bn":"PDR00012345678:","bt":1794096000.5,"bs":1000,"n":"vol","s":0.25}]"#);
        assert_eq!(up.readings[0].t, at("2026-11-08T00:00:00.5Z"));
        assert_eq!(up.readings[0].vol, 1000.25);
    }

    #[test]
    fn item_problems_reject_the_record_only() {
        let b = r#"{"bn":"urn:dev:mid:PDR00012345678:","bt":1794096000}"#;
        let cases: &[(&str, &str)] = &[
            (r#"{"n":"vol","u":"L","s":1}"#, "bad_field"),
            (r#"{"n":"vol","u":7,"s":1}"#, "bad_field"),
            (r#"{"n":"vol","s":-1}"#, "negative_vol"),
            (r#"{"n":"vol","s":"1"}"#, "bad_vol"),
            (r#"{"n":"vol","v":1}"#, "missing_vol"),
            (r#"{"n":"vol"}"#, "missing_vol"),
            (r#"{"n":"vol","t":"2026-11-08T00:00:00Z","s":1}"#, "bad_t"),
            (r#"{"n":"temp","t":60,"v":3}"#, "bad_field"),
            (r#"{"n":"temp","u":"K","v":3}"#, "bad_field"),
            (r#"{"n":"battery","v":101}"#, "bad_battery"),
            (r#"{"n":"battery","vs":"full"}"#, "bad_battery"),
            (r#"{"n":"battery","u":"%","v":50}"#, "bad_field"),
            (r#"{"n":4,"s":1}"#, "bad_field"),
            (r#"42"#, "not_object"),
        ];
        for (record, reason) in cases {
            let payload = format!(r#"[{b},{{"n":"vol","s":5}},{record}]"#);
            let d = ok(&payload);
            assert_eq!(d.uplink.readings.len(), 1, "{payload}");
            let got: Vec<_> = d
                .rejected
                .iter()
                .map(|r| (r.item.as_str(), r.reason))
                .collect();
            assert_eq!(got, vec![("records[2]", *reason)], "{payload}");
        }
    }

    #[test]
    fn relative_and_missing_times() {
        assert_eq!(
            reasons(r#"[{"bn":"PDR00012345678:","n":"vol","s":1}]"#),
            ["missing_t"]
        );
        assert_eq!(
            reasons(r#"[{"bn":"PDR00012345678:","n":"vol","t":-60,"s":1}]"#),
            ["bad_t"]
        );
        assert_eq!(
            reasons(r#"[{"bn":"PDR00012345678:","n":"vol","t":268435455,"s":1}]"#),
            ["bad_t"]
        );
        assert_eq!(
            reasons(r#"[{"bn":"PDR00012345678:","n":"vol","t":253402300800,"s":1}]"#),
            ["bad_t"]
        );
        assert!(reasons(r#"[{"bn":"PDR00012345678:","n":"vol","t":268435456,"s":1}]"#).is_empty());
    }

    #[test]
    fn pack_problems_reject_the_message() {
        let cases: &[(&str, &str)] = &[
            (r#"[]"#, "missing_meter"),
            (r#"[1, 2]"#, "missing_meter"),
            (r#"[{"n":"vol","t":1794096000,"s":1}]"#, "missing_meter"),
            (
                r#"[{"bn":"urn:dev:ow:10e2073a:","n":"vol","t":1794096000,"s":1}]"#,
                "bad_meter",
            ),
            (
                r#"[{"bn":"urn:dev:mid:OTHER:","n":"vol","t":1794096000,"s":1}]"#,
                "meter_mismatch",
            ),
            (
                r#"[{"bn":"PDR00012345678:","n":"vol","t":1794096000,"s":1},{"bn":"OTHER:","n":"vol"}]"#,
                "meter_mismatch",
            ),
            (
                r#"[{"bn":"PDR00012345678:","bver":11,"n":"vol","t":1794096000,"s":1}]"#,
                "bad_version",
            ),
            (
                r#"[{"bn":"PDR00012345678:","bver":"10","n":"vol","t":1794096000,"s":1}]"#,
                "bad_version",
            ),
            (
                r#"[{"bn":"PDR00012345678:","n":"vol","t":1794096000,"s":1,"crit_":1}]"#,
                "bad_field",
            ),
            (r#"[{"bn":5,"n":"vol","t":1794096000,"s":1}]"#, "bad_field"),
            (
                r#"[{"bn":"PDR00012345678:","bt":"now","n":"vol","s":1}]"#,
                "bad_field",
            ),
            (
                r#"[{"bn":"PDR00012345678:","bu":1,"n":"vol","t":1794096000,"s":1}]"#,
                "bad_field",
            ),
        ];
        for (payload, reason) in cases {
            assert_eq!(err(payload), *reason, "{payload}");
        }
    }

    #[test]
    fn unknown_names_and_labels_are_ignored() {
        let up = clean(
            r#"[{"bn":"PDR00012345678:","bt":1794096000,"n":"vol","s":1,"ut":3600,"x":{}},
                {"n":"flow_max","v":"anything"},{"n":"","v":1},{"n":"valve","vs":"open"}]"#,
        );
        assert_eq!(up.readings.len(), 1);
        assert_eq!(up.valve, None);
    }

    /// A long base name is borrowed, not copied per record: a pack that repeats it
    /// for thousands of records decodes without multiplying memory.
    #[test]
    fn long_base_names_are_not_copied_per_record() {
        let long = "x".repeat(50_000);
        let records = vec!["{}"; 5000].join(",");
        let payload = format!(r#"[{{"bn":"PDR00012345678:{long}"}},{records}]"#);
        assert!(payload.len() <= crate::MAX_PAYLOAD_BYTES);
        let d = ok(&payload);
        assert!(d.uplink.readings.is_empty() && d.rejected.is_empty());
        // A long meter part is rejected at the first record.
        let payload = format!(r#"[{{"bn":"{long}:"}},{records}]"#);
        assert_eq!(err(&payload), "bad_meter");
        // Split names: "urn:dev:" + "mid:PDR00012345678:vol".
        let up = clean(r#"[{"bn":"urn:dev:","n":"mid:PDR00012345678:vol","t":1794096000,"s":1}]"#);
        assert_eq!(up.readings.len(), 1);
        let up = clean(r#"[{"bn":"PDR00012345678:v","n":"ol","t":1794096000,"s":1}]"#);
        assert_eq!(up.readings.len(), 1);
    }

    #[test]
    fn encode_senml_round_trips() {
        let v1 = decode(
            "gas",
            TOPIC,
            br#"{"v":1,"meter":"PDR00012345678","battery":42,
                "readings":[{"t":"2026-11-26T00:00:00Z","vol":12.345,"temp":7.5},
                            {"t":"2026-11-26T01:00:00.25Z","vol":12.5}]}"#,
        )
        .unwrap();
        let bytes = encode_senml(&v1.uplink);
        let back = decode("gas", TOPIC, &bytes).unwrap();
        assert_eq!(back.format, Format::SenML);
        assert!(back.rejected.is_empty());
        assert_eq!(back.uplink, v1.uplink);

        let empty = Uplink {
            readings: Vec::new(),
            battery: None,
            ..v1.uplink
        };
        let back = decode("gas", TOPIC, &encode_senml(&empty)).unwrap();
        assert_eq!(back.uplink, empty);
    }
}
