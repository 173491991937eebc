//! The fast path of [`crate::decode`] for the common case: a clean v1 message.
//!
//! [`decode`] reads the payload text straight into the output types, without building
//! a `serde_json::Value` tree (no map, key or string allocations per reading), and
//! reads the canonical `YYYY-MM-DDTHH:MM:SSZ` time by hand (building each date once
//! per message, [`Dates`]) instead of with chrono's RFC 3339 parser. It only ever
//! answers for a message that the reference decoder ([`crate::decode_reference`])
//! accepts **whole**, with no rejected item; for anything else (a message-level
//! problem, a bad item, a JSON syntax error, a field of an unexpected type, a
//! duplicate key, ...) it returns `None` and `decode` runs the reference decoder, so
//! every error and every rejected item is reported by one piece of code.
//!
//! # Why it agrees with the reference decoder
//!
//! - Every JSON value is read through `deserialize_any`, as `Value` does, so the
//!   parser runs the same code for it: the same syntax checks, the same number parsing
//!   (`float_roundtrip` included) and range errors, the same string escapes, the same
//!   recursion limit (every array and object is entered through `deserialize_any`,
//!   at the same depth). Unknown fields are walked by [`Skip`], which visits every
//!   value rather than skipping its text, because serde_json's `IgnoredAny` skips
//!   numbers without checking their range (`1e999`) and nests without a depth limit,
//!   which `Value` rejects.
//! - The visitors mirror what the reference decoder reads from a `Value`: a number is
//!   taken as `u64`/`i64`/`f64` exactly as `Value::Number::as_f64`/`as_i64`/`as_u64`
//!   convert it; `null` counts as absent where the reference says so.
//! - Objects are only accepted as objects (`visit_map`): a serde-derived struct would
//!   also accept an array, which the reference rejects as `not_object`.
//! - A key seen twice gives up (`Value` keeps the last one; the reference decoder
//!   then decides). So does any key starting with `$serde_json::private::`, which
//!   `Value` treats specially when serde_json's `raw_value` or `arbitrary_precision`
//!   feature is on (another crate of the workspace may turn them on).
//! - The payload's `meter` is compared with the topic's as a string: equal strings
//!   are exactly the case where the reference's `MeterId::parse` succeeds and equals
//!   the topic's meter (which is valid).
//!
//! The equivalence test (`equivalence_tests.rs`) checks all this against the
//! reference decoder on the corpus and on thousands of generated messages.

use crate::{MAX_UNIX_SECS, MIN_UNIX_SECS, Valve};
use chrono::{DateTime, NaiveDate, Utc};
use leakwatch_core::{EventCode, MeterEvent, MeterId, Reading, Timestamp};
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use std::cell::Cell;
use std::fmt;

/// The good content of a v1 message that the fast path read whole.
#[derive(Debug)]
pub(crate) struct V1 {
    pub readings: Vec<Reading>,
    pub events: Vec<MeterEvent>,
    pub battery: Option<u8>,
    pub valve: Option<Valve>,
}

/// Reads `text` as a clean v1 message for the topic's `meter`, or `None` when the
/// reference decoder has to decide (see the module documentation).
pub(crate) fn decode(meter: &MeterId, text: &str) -> Option<V1> {
    // Only objects are v1; anything else (a SenML array) goes to the reference.
    if text
        .trim_start_matches([' ', '\t', '\n', '\r'])
        .as_bytes()
        .first()
        != Some(&b'{')
    {
        return None;
    }
    let mut de = serde_json::Deserializer::from_str(text);
    let dates = Dates::default();
    let v1 = MessageSeed(Ctx {
        meter,
        dates: &dates,
    })
    .deserialize(&mut de)
    .ok()?;
    de.end().ok()?;
    Some(v1)
}

/// The error every visitor gives up with; its text is never shown.
fn give_up<E: de::Error>() -> E {
    E::custom("left to the reference decoder")
}

/// Keys that `serde_json::Value` may read specially (feature-dependent).
const PRIVATE_KEY_PREFIX: &str = "$serde_json::private::";

/// A map key, classified by a function giving the index of a known field (`None`
/// for another key).
#[derive(Clone, Copy)]
struct Key(fn(&str) -> Option<usize>);

impl<'de> DeserializeSeed<'de> for Key {
    type Value = Option<usize>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Option<usize>, D::Error> {
        d.deserialize_any(self)
    }
}

impl Visitor<'_> for Key {
    type Value = Option<usize>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a key")
    }
    fn visit_str<E: de::Error>(self, s: &str) -> Result<Option<usize>, E> {
        match (self.0)(s) {
            None if s.starts_with(PRIVATE_KEY_PREFIX) => Err(give_up()),
            known => Ok(known),
        }
    }
}

fn no_known_keys(_: &str) -> Option<usize> {
    None
}

/// Marks field `i` as seen; a key seen twice gives up.
fn first_time<E: de::Error>(seen: &mut u32, i: usize) -> Result<(), E> {
    let bit = 1u32 << i;
    if *seen & bit != 0 {
        return Err(give_up());
    }
    *seen |= bit;
    Ok(())
}

/// Any JSON value, visited in full (and dropped) the way `Value` would read it.
struct Skip;

impl<'de> de::Deserialize<'de> for Skip {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Skip, D::Error> {
        d.deserialize_any(Skip)
    }
}

impl<'de> Visitor<'de> for Skip {
    type Value = Skip;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Skip, E> {
        Ok(Skip)
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Skip, E> {
        Ok(Skip)
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Skip, E> {
        Ok(Skip)
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Skip, E> {
        Ok(Skip)
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<Skip, E> {
        Ok(Skip)
    }
    fn visit_unit<E: de::Error>(self) -> Result<Skip, E> {
        Ok(Skip)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Skip, A::Error> {
        while seq.next_element::<Skip>()?.is_some() {}
        Ok(Skip)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Skip, A::Error> {
        while map.next_key_seed(Key(no_known_keys))?.is_some() {
            map.next_value::<Skip>()?;
        }
        Ok(Skip)
    }
}

fn message_key(s: &str) -> Option<usize> {
    Some(match s {
        "v" => 0,
        "meter" => 1,
        "readings" => 2,
        "events" => 3,
        "battery" => 4,
        "valve" => 5,
        _ => return None,
    })
}

/// What the item seeds share: the topic's meter and the date cache.
#[derive(Clone, Copy)]
struct Ctx<'m> {
    meter: &'m MeterId,
    dates: &'m Dates,
}

struct MessageSeed<'m>(Ctx<'m>);

impl<'de> DeserializeSeed<'de> for MessageSeed<'_> {
    type Value = V1;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<V1, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for MessageSeed<'_> {
    type Value = V1;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a v1 message")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<V1, A::Error> {
        let mut seen = 0u32;
        let mut v1 = V1 {
            readings: Vec::new(),
            events: Vec::new(),
            battery: None,
            valve: None,
        };
        while let Some(key) = map.next_key_seed(Key(message_key))? {
            if let Some(i) = key {
                first_time(&mut seen, i)?;
            }
            match key {
                Some(0) => map.next_value_seed(Version)?,
                Some(1) => map.next_value_seed(SameMeter(self.0.meter))?,
                // A day of hourly readings fits without growing; events are few.
                Some(2) => v1.readings = map.next_value_seed(Items(ReadingSeed(self.0), 24))?,
                Some(3) => v1.events = map.next_value_seed(Items(EventSeed(self.0), 0))?,
                Some(4) => {
                    v1.battery = match map.next_value_seed(Number)? {
                        None => None,
                        Some(b) if (0.0..=100.0).contains(&b) => Some(b.round() as u8),
                        Some(_) => return Err(give_up()),
                    }
                }
                Some(5) => v1.valve = map.next_value_seed(ValveSeed)?,
                _ => {
                    map.next_value::<Skip>()?;
                }
            }
        }
        // `v` and `meter` are required.
        if seen & 0b11 != 0b11 {
            return Err(give_up());
        }
        Ok(v1)
    }
}

/// `v`: the number 1 (`Value::as_u64() == Some(1)`).
struct Version;

impl<'de> DeserializeSeed<'de> for Version {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl Visitor<'_> for Version {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("1")
    }
    fn visit_u64<E: de::Error>(self, n: u64) -> Result<(), E> {
        if n == 1 { Ok(()) } else { Err(give_up()) }
    }
    fn visit_i64<E: de::Error>(self, n: i64) -> Result<(), E> {
        if n == 1 { Ok(()) } else { Err(give_up()) }
    }
}

/// `meter`: a string equal to the topic's meter.
struct SameMeter<'m>(&'m MeterId);

impl<'de> DeserializeSeed<'de> for SameMeter<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl Visitor<'_> for SameMeter<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the topic's meter")
    }
    fn visit_str<E: de::Error>(self, s: &str) -> Result<(), E> {
        if s == self.0.as_str() {
            Ok(())
        } else {
            Err(give_up())
        }
    }
}

/// `valve`: `null`, `"open"` or `"closed"`.
struct ValveSeed;

impl<'de> DeserializeSeed<'de> for ValveSeed {
    type Value = Option<Valve>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Option<Valve>, D::Error> {
        d.deserialize_any(self)
    }
}

impl Visitor<'_> for ValveSeed {
    type Value = Option<Valve>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a valve state")
    }
    fn visit_unit<E: de::Error>(self) -> Result<Option<Valve>, E> {
        Ok(None)
    }
    fn visit_str<E: de::Error>(self, s: &str) -> Result<Option<Valve>, E> {
        match s {
            "open" => Ok(Some(Valve::Open)),
            "closed" => Ok(Some(Valve::Closed)),
            _ => Err(give_up()),
        }
    }
}

/// An optional number (`null` is `None`), converted to `f64` as `Value::as_f64` does.
struct Number;

impl<'de> DeserializeSeed<'de> for Number {
    type Value = Option<f64>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Option<f64>, D::Error> {
        d.deserialize_any(self)
    }
}

impl Visitor<'_> for Number {
    type Value = Option<f64>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a number or null")
    }
    fn visit_unit<E: de::Error>(self) -> Result<Option<f64>, E> {
        Ok(None)
    }
    fn visit_u64<E: de::Error>(self, n: u64) -> Result<Option<f64>, E> {
        Ok(Some(n as f64))
    }
    fn visit_i64<E: de::Error>(self, n: i64) -> Result<Option<f64>, E> {
        Ok(Some(n as f64))
    }
    fn visit_f64<E: de::Error>(self, x: f64) -> Result<Option<f64>, E> {
        // The parser never yields a non-finite number (it is a syntax error), but the
        // reference rejects one, so the fast path must not take it either.
        if x.is_finite() {
            Ok(Some(x))
        } else {
            Err(give_up())
        }
    }
}

/// The `readings` or `events` container: `null` or an array of items read by `S`
/// (with room for `.1` items to start with).
struct Items<S>(S, usize);

impl<'de, S: DeserializeSeed<'de> + Copy> DeserializeSeed<'de> for Items<S> {
    type Value = Vec<S::Value>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de, S: DeserializeSeed<'de> + Copy> Visitor<'de> for Items<S> {
    type Value = Vec<S::Value>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array or null")
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Vec::new())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut items = Vec::with_capacity(self.1);
        while let Some(item) = seq.next_element_seed(self.0)? {
            items.push(item);
        }
        Ok(items)
    }
}

fn reading_key(s: &str) -> Option<usize> {
    Some(match s {
        "t" => 0,
        "vol" => 1,
        "temp" => 2,
        "flow_max" => 3,
        "pressure" => 4,
        _ => return None,
    })
}

#[derive(Clone, Copy)]
struct ReadingSeed<'m>(Ctx<'m>);

impl<'de> DeserializeSeed<'de> for ReadingSeed<'_> {
    type Value = Reading;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Reading, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ReadingSeed<'_> {
    type Value = Reading;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a reading")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Reading, A::Error> {
        let mut seen = 0u32;
        let (mut t, mut vol, mut temp, mut flow_max, mut pressure) = (None, None, None, None, None);
        while let Some(key) = map.next_key_seed(Key(reading_key))? {
            if let Some(i) = key {
                first_time(&mut seen, i)?;
            }
            match key {
                Some(0) => t = Some(map.next_value_seed(Time(self.0.dates))?),
                Some(1) => vol = map.next_value_seed(Number)?,
                Some(2) => temp = map.next_value_seed(Number)?,
                Some(3) => flow_max = map.next_value_seed(Number)?,
                Some(4) => pressure = map.next_value_seed(Number)?,
                _ => {
                    map.next_value::<Skip>()?;
                }
            }
        }
        // Missing or null `t` or `vol`, a negative `vol` or `flow_max`: rejected items.
        let (Some(t), Some(vol)) = (t, vol) else {
            return Err(give_up());
        };
        if vol < 0.0 || flow_max.is_some_and(|f: f64| f < 0.0) {
            return Err(give_up());
        }
        Ok(Reading {
            meter: self.0.meter.clone(),
            t,
            vol,
            temp,
            flow_max,
            pressure,
        })
    }
}

fn event_key(s: &str) -> Option<usize> {
    Some(match s {
        "t" => 0,
        "code" => 1,
        _ => return None,
    })
}

#[derive(Clone, Copy)]
struct EventSeed<'m>(Ctx<'m>);

impl<'de> DeserializeSeed<'de> for EventSeed<'_> {
    type Value = MeterEvent;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<MeterEvent, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for EventSeed<'_> {
    type Value = MeterEvent;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an event")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<MeterEvent, A::Error> {
        let mut seen = 0u32;
        let (mut t, mut code) = (None, None);
        while let Some(key) = map.next_key_seed(Key(event_key))? {
            if let Some(i) = key {
                first_time(&mut seen, i)?;
            }
            match key {
                Some(0) => t = Some(map.next_value_seed(Time(self.0.dates))?),
                Some(1) => code = Some(map.next_value_seed(Code)?),
                _ => {
                    map.next_value::<Skip>()?;
                }
            }
        }
        let (Some(t), Some(code)) = (t, code) else {
            return Err(give_up());
        };
        Ok(MeterEvent {
            meter: self.0.meter.clone(),
            t,
            code,
        })
    }
}

/// An event `code`: a named code, or an integer in `0..=u32::MAX`.
struct Code;

impl<'de> DeserializeSeed<'de> for Code {
    type Value = EventCode;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<EventCode, D::Error> {
        d.deserialize_any(self)
    }
}

impl Visitor<'_> for Code {
    type Value = EventCode;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an event code")
    }
    fn visit_str<E: de::Error>(self, s: &str) -> Result<EventCode, E> {
        if EventCode::NAMED.contains(&s) {
            Ok(EventCode::Named(s.to_owned()))
        } else {
            Err(give_up())
        }
    }
    fn visit_u64<E: de::Error>(self, n: u64) -> Result<EventCode, E> {
        u32::try_from(n)
            .map(EventCode::Numeric)
            .map_err(|_| give_up())
    }
    fn visit_i64<E: de::Error>(self, n: i64) -> Result<EventCode, E> {
        // `Value` keeps a non-negative i64 as an unsigned number.
        u64::try_from(n)
            .map_err(|_| give_up())
            .and_then(|n| self.visit_u64(n))
    }
}

/// A measurement time `t`: RFC 3339 with an offset, or integer Unix seconds, in range.
struct Time<'m>(&'m Dates);

impl<'de> DeserializeSeed<'de> for Time<'_> {
    type Value = Timestamp;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Timestamp, D::Error> {
        d.deserialize_any(self)
    }
}

impl Visitor<'_> for Time<'_> {
    type Value = Timestamp;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a time")
    }
    fn visit_str<E: de::Error>(self, s: &str) -> Result<Timestamp, E> {
        let t = match self.0.canonical_utc(s) {
            Some(t) => t,
            None => DateTime::parse_from_rfc3339(s)
                .map_err(|_| give_up())?
                .with_timezone(&Utc),
        };
        in_range(t).ok_or_else(give_up)
    }
    fn visit_u64<E: de::Error>(self, n: u64) -> Result<Timestamp, E> {
        i64::try_from(n)
            .map_err(|_| give_up())
            .and_then(|n| self.visit_i64(n))
    }
    fn visit_i64<E: de::Error>(self, secs: i64) -> Result<Timestamp, E> {
        DateTime::from_timestamp(secs, 0)
            .and_then(in_range)
            .ok_or_else(give_up)
    }
}

fn in_range(t: Timestamp) -> Option<Timestamp> {
    (MIN_UNIX_SECS..=MAX_UNIX_SECS)
        .contains(&t.timestamp())
        .then_some(t)
}

/// The last date read in the canonical shape, so that a message's readings of one day
/// build their date once.
#[derive(Debug, Default)]
pub(crate) struct Dates(Cell<Option<([u8; 10], NaiveDate)>>);

impl Dates {
    /// Parses exactly `YYYY-MM-DDTHH:MM:SSZ` (a valid date, hours 00..=23, minutes and
    /// seconds 00..=59), giving what chrono's `parse_from_rfc3339` gives for it. `None`
    /// for any other text, which is left to chrono (offsets, fractions, lower-case `t`
    /// or `z`, leap seconds, invalid dates).
    pub(crate) fn canonical_utc(&self, s: &str) -> Option<Timestamp> {
        let b: &[u8; 20] = s.as_bytes().try_into().ok()?;
        if b[10] != b'T' || b[13] != b':' || b[16] != b':' || b[19] != b'Z' {
            return None;
        }
        let digit = |i: usize| -> Option<u32> {
            let d = b[i].wrapping_sub(b'0');
            (d < 10).then_some(u32::from(d))
        };
        let two = |i: usize| -> Option<u32> { Some(digit(i)? * 10 + digit(i + 1)?) };
        let key: [u8; 10] = b[..10].try_into().ok()?;
        let date = match self.0.get() {
            Some((k, date)) if k == key => date,
            _ => {
                if b[4] != b'-' || b[7] != b'-' {
                    return None;
                }
                let year = two(0)? * 100 + two(2)?;
                let date = NaiveDate::from_ymd_opt(year as i32, two(5)?, two(8)?)?;
                self.0.set(Some((key, date)));
                date
            }
        };
        let (hour, minute, second) = (two(11)?, two(14)?, two(17)?);
        if hour > 23 || minute > 59 || second > 59 {
            return None;
        }
        Some(date.and_hms_opt(hour, minute, second)?.and_utc())
    }
}
