//! `decode` (fast path, else the reference decoder) must give exactly what
//! `decode_reference` (the `serde_json::Value` decoder) gives, for every input: the
//! corpus, and thousands of generated messages, valid and mutated.

use crate::corpus::Case;
use crate::{TopicParts, check_payload, decode, decode_reference, encode, encode_senml, fast};
use crate::{Uplink, Valve};
use chrono::{DateTime, Utc};
use leakwatch_core::{DistrictId, EventCode, MeterEvent, MeterId, Reading};
use std::path::Path;

/// SplitMix64: deterministic, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn range(&mut self, lo: i64, hi: i64) -> i64 {
        lo + (self.next() % (hi - lo + 1) as u64) as i64
    }
    /// True with probability `p` percent.
    fn pct(&mut self, p: usize) -> bool {
        self.below(100) < p
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

/// Outcome counts, to show the generator reaches both paths.
#[derive(Debug, Default)]
struct Tally {
    total: usize,
    fast: usize,
    ok_with_rejects: usize,
    errors: usize,
}

/// Decodes `payload` both ways and requires the same result, down to the `Debug`
/// text (which tells `-0.0` from `0.0` and every f64 bit pattern apart).
fn same(tally: &mut Tally, topic: &str, payload: &[u8]) {
    let got = decode("gas", topic, payload);
    let want = decode_reference("gas", topic, payload);
    let shown = || {
        String::from_utf8_lossy(payload)
            .chars()
            .take(2000)
            .collect::<String>()
    };
    assert_eq!(
        format!("{got:?}"),
        format!("{want:?}"),
        "topic {topic}, payload {}",
        shown()
    );
    assert_eq!(got, want, "topic {topic}, payload {}", shown());
    tally.total += 1;
    match &want {
        Ok(d) if d.rejected.is_empty() => {}
        Ok(_) => tally.ok_with_rejects += 1,
        Err(_) => tally.errors += 1,
    }
    if let Ok((TopicParts { meter, .. }, text)) = check_payload("gas", topic, payload)
        && fast::decode(&meter, text).is_some()
    {
        assert!(
            matches!(&want, Ok(d) if d.rejected.is_empty()),
            "the fast path took a message the reference does not accept whole: {}",
            shown()
        );
        tally.fast += 1;
    }
}

#[test]
fn corpus_decodes_the_same_both_ways() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/corpus");
    let mut tally = Tally::default();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "json") {
            continue;
        }
        let case = Case::from_json(&std::fs::read_to_string(&path).unwrap()).unwrap();
        for before in &case.before {
            same(&mut tally, &case.topic, before);
        }
        same(&mut tally, &case.topic, &case.payload);
        // The corpus payloads under other meters' topics and in other shapes.
        same(&mut tally, "gas/D1/M2/up", &case.payload);
        if let Ok(text) = std::str::from_utf8(&case.payload)
            && let Ok(value) = serde_json::from_str::<serde_json::Value>(text)
        {
            same(
                &mut tally,
                &case.topic,
                serde_json::to_string_pretty(&value).unwrap().as_bytes(),
            );
        }
    }
    assert!(tally.fast >= 10, "{tally:?}");
    assert!(
        tally.errors >= 10 && tally.ok_with_rejects >= 10,
        "{tally:?}"
    );
}

const TOPIC: &str = "gas/D1/M1/up";

fn time_text(rng: &mut Rng) -> String {
    let canonical = |rng: &mut Rng| {
        let year = *rng.pick(&[1969, 1970, 2000, 2024, 2025, 2026, 2027, 2100, 9999]);
        format!(
            "{year:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
            rng.range(1, 12),
            rng.range(1, 28),
            rng.range(0, 23),
            rng.range(0, 59),
            rng.range(0, 59)
        )
    };
    match rng.below(20) {
        0..=7 => format!("\"{}Z\"", canonical(rng)),
        8 => {
            // Any digits in the canonical shape: invalid dates, hours 24, seconds 60...
            let mut d = || rng.below(10);
            format!(
                "\"{}{}{}{}-{}{}-{}{}T{}{}:{}{}:{}{}Z\"",
                *[1, 2, 9, 0].get(d() % 4).unwrap(),
                d(),
                d(),
                d(),
                d() % 2,
                d(),
                d() % 4,
                d(),
                d() % 3,
                d(),
                d() % 7,
                d(),
                d() % 7,
                d()
            )
        }
        9 => {
            let offset = rng.pick(&[
                "+01:00", "-05:30", "+00:00", "-00:00", "+14:00", "z", "+2:00",
            ]);
            format!("\"{}{offset}\"", canonical(rng))
        }
        10 => {
            let frac = rng.pick(&[".5", ".123456789", ".0", ".1234567891", "."]);
            format!("\"{}{frac}Z\"", canonical(rng))
        }
        11 => {
            let separator = *rng.pick(&["t", " ", "_"]);
            format!("\"{}\"", canonical(rng).replace('T', separator))
        }
        12 => format!("\"{}\\u005a\"", canonical(rng)),
        13 => rng
            .pick(&[
                "\"1970-01-01T00:00:00Z\"",
                "\"1969-12-31T23:59:59Z\"",
                "\"9999-12-31T23:59:59Z\"",
                "\"9999-12-31T23:59:59-01:00\"",
                "\"1970-01-01T00:00:00+01:00\"",
                "\"2024-02-29T12:00:00Z\"",
                "\"2025-02-29T12:00:00Z\"",
                "\"2000-02-29T00:00:00Z\"",
                "\"1900-02-29T00:00:00Z\"",
                "\"2026-04-31T00:00:00Z\"",
                "\"2026-12-31T23:59:60Z\"",
                "\"2026-06-30T23:59:60Z\"",
                "\"2026-11-26T24:00:00Z\"",
                "\"0000-01-01T00:00:00Z\"",
                "\"2026-11-26T00:00:00\"",
                "\"2026-11-26\"",
                "\"yesterday\"",
                "\"\"",
                "\" 2026-11-26T00:00:00Z\"",
                "\"2026-11-26T00:00:00Z \"",
                "\"+2026-11-26T00:00:00Z\"",
                "\"2026-1-26T00:00:00Z\"",
            ])
            .to_string(),
        14..=16 => rng.range(0, 2_000_000_000).to_string(),
        _ => rng
            .pick(&[
                "0",
                "-0",
                "-1",
                "1.5",
                "1e3",
                "1E3",
                "1764115200.0",
                "253402300799",
                "253402300800",
                "9223372036854775807",
                "9223372036854775808",
                "18446744073709551615",
                "18446744073709551616",
                "-9223372036854775808",
                "null",
                "true",
                "[]",
                "{}",
                "[\"2026-11-26T00:00:00Z\"]",
            ])
            .to_string(),
    }
}

fn number_text(rng: &mut Rng) -> String {
    match rng.below(12) {
        0..=4 => format!("{}.{:03}", rng.range(0, 99_999), rng.range(0, 999)),
        5 => format!("{:?}", (rng.next() as f64) / (rng.next() as f64 + 1.0)),
        6 => format!("{:e}", (rng.next() >> 11) as f64 * 1e-3),
        7 => rng.range(0, 100_000).to_string(),
        _ => rng
            .pick(&[
                "0",
                "-0",
                "0.0",
                "-0.0",
                "-1",
                "-0.001",
                "1e308",
                "1.7976931348623157e308",
                "5e-324",
                "1e-400",
                "123456789012345678901234567890",
                "18446744073709551615",
                "18446744073709551616",
                "-9223372036854775808",
                "-9223372036854775809",
                "100.21111111111111",
                "100.21111111111112",
                "0.30000000000000004",
                "1E2",
                "1e+2",
                "2.5E-3",
                "100",
                "100.4",
                "100.5",
                "-0.4",
                "99.5",
                "\"NaN\"",
                "\"1\"",
                "\"12.5\"",
                "null",
                "true",
                "[1]",
                "{}",
                "1e999",
                "NaN",
                "Infinity",
                "01",
                "1.",
                "+1",
            ])
            .to_string(),
    }
}

fn string_text(rng: &mut Rng) -> String {
    rng.pick(&[
        "\"\"",
        "\"x\"",
        "\"caf\u{e9}\"",
        "\"\\u00e9\\n\\t\\\"\"",
        "\"\\ud83d\\ude00\"",
        "\"\\ud800\"",
        "\"\\x\"",
        "\"a\u{1}b\"",
        "\"\\u0000\"",
    ])
    .to_string()
}

/// Any JSON value (sometimes not quite JSON), for unknown fields.
fn any_text(rng: &mut Rng, depth: usize) -> String {
    match rng.below(if depth > 3 { 4 } else { 7 }) {
        0 => number_text(rng),
        1 => string_text(rng),
        2 => rng
            .pick(&["null", "true", "false", "1e999", "-0"])
            .to_string(),
        3 => time_text(rng),
        4 => {
            let n = rng.below(4);
            let items: Vec<String> = (0..n).map(|_| any_text(rng, depth + 1)).collect();
            format!("[{}]", items.join(","))
        }
        5 => {
            let n = rng.below(4);
            let items: Vec<String> = (0..n)
                .map(|_| format!("{}:{}", key_text(rng), any_text(rng, depth + 1)))
                .collect();
            format!("{{{}}}", items.join(","))
        }
        _ => {
            // Deep nesting around serde_json's recursion limit (128).
            let levels = rng.range(120, 130) as usize;
            let open = if rng.pct(50) { "[" } else { "{\"a\":" };
            let close = if open == "[" { "]" } else { "}" };
            format!("{}1{}", open.repeat(levels), close.repeat(levels))
        }
    }
}

fn key_text(rng: &mut Rng) -> String {
    rng.pick(&[
        "\"x\"",
        "\"firmware\"",
        "\"\"",
        "\"T\"",
        "\"vol \"",
        "\"$serde_json::private::RawValue\"",
        "\"$serde_json::private::Number\"",
        "\"\\u0074\"",
        "\"r\\u00e9\"",
    ])
    .to_string()
}

/// An object from `(key, value)` texts, in random order, with random whitespace,
/// sometimes with an unknown field or a repeated key.
fn object_text(rng: &mut Rng, mut fields: Vec<(String, String)>, mess: usize) -> String {
    if rng.pct(mess) {
        let extra = (key_text(rng), any_text(rng, 0));
        let at = rng.below(fields.len() + 1);
        fields.insert(at, extra);
    }
    if !fields.is_empty() && rng.pct(mess / 3) {
        let copy = fields[rng.below(fields.len())].clone();
        let at = rng.below(fields.len() + 1);
        fields.insert(at, copy);
    }
    if rng.pct(mess) {
        for i in (1..fields.len()).rev() {
            fields.swap(i, rng.below(i + 1));
        }
    }
    let ws = |rng: &mut Rng| *rng.pick(&["", "", "", " ", "\n  ", "\t", "\r\n"]);
    let mut out = String::from("{");
    for (i, (k, v)) in fields.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(ws(rng));
        out.push_str(k);
        out.push_str(ws(rng));
        out.push(':');
        out.push_str(ws(rng));
        out.push_str(v);
    }
    out.push_str(ws(rng));
    out.push('}');
    out
}

fn field(key: &str, value: String) -> (String, String) {
    (format!("\"{key}\""), value)
}

/// A reading; `bad` percent of the time something about it is off.
fn reading_text(rng: &mut Rng, bad: usize) -> String {
    if rng.pct(bad / 4) {
        return rng
            .pick(&[
                "7",
                "null",
                "\"r\"",
                "[]",
                "[\"2026-11-26T00:00:00Z\",1.5]",
                "{}",
            ])
            .to_string();
    }
    let good_time = |rng: &mut Rng| {
        if rng.pct(70) {
            format!(
                "\"2026-11-{:02}T{:02}:00:00Z\"",
                rng.range(1, 30),
                rng.range(0, 23)
            )
        } else {
            rng.range(0, 1_800_000_000).to_string()
        }
    };
    let good_number = |rng: &mut Rng| format!("{}.{:03}", rng.range(0, 9999), rng.range(0, 999));
    let mut fields = Vec::new();
    if !rng.pct(bad / 8) {
        let t = if rng.pct(bad) {
            time_text(rng)
        } else {
            good_time(rng)
        };
        fields.push(field("t", t));
    }
    if !rng.pct(bad / 8) {
        let vol = if rng.pct(bad) {
            number_text(rng)
        } else {
            good_number(rng)
        };
        fields.push(field("vol", vol));
    }
    for key in ["temp", "flow_max", "pressure"] {
        if rng.pct(40) {
            let v = if rng.pct(bad) {
                number_text(rng)
            } else if rng.pct(10) {
                "null".into()
            } else {
                good_number(rng)
            };
            fields.push(field(key, v));
        }
    }
    object_text(rng, fields, bad)
}

fn event_text(rng: &mut Rng, bad: usize) -> String {
    if rng.pct(bad / 4) {
        return rng.pick(&["\"tamper\"", "1", "null", "[]"]).to_string();
    }
    let mut fields = Vec::new();
    if !rng.pct(bad / 8) {
        let t = if rng.pct(bad) {
            time_text(rng)
        } else {
            "\"2026-11-26T00:13:00Z\"".into()
        };
        fields.push(field("t", t));
    }
    if !rng.pct(bad / 8) {
        let code = if rng.pct(bad) {
            rng.pick(&[
                "\"boom\"",
                "\"TAMPER\"",
                "\"tam\\u0070er\"",
                "-3",
                "-0",
                "1.5",
                "1e2",
                "4294967295",
                "4294967296",
                "18446744073709551616",
                "true",
                "null",
                "{}",
            ])
            .to_string()
        } else if rng.pct(50) {
            format!("\"{}\"", rng.pick(EventCode::NAMED))
        } else {
            rng.range(0, 300).to_string()
        };
        fields.push(field("code", code));
    }
    object_text(rng, fields, bad)
}

/// A v1 message: `bad` percent of the time each part of it is off.
fn message_text(rng: &mut Rng, bad: usize) -> String {
    let mut fields = Vec::new();
    if !rng.pct(bad / 10) {
        let v = if rng.pct(bad / 3) {
            rng.pick(&["2", "1.0", "\"1\"", "1e0", "-1", "null", "01", "true"])
                .to_string()
        } else {
            "1".into()
        };
        fields.push(field("v", v));
    }
    if !rng.pct(bad / 10) {
        let m = if rng.pct(bad / 3) {
            rng.pick(&[
                "\"M2\"",
                "\"M\\u0031\"",
                "\"m1\"",
                "\"M1 \"",
                "\"A/B\"",
                "\"\"",
                "null",
                "12",
                "[\"M1\"]",
            ])
            .to_string()
        } else {
            "\"M1\"".into()
        };
        fields.push(field("meter", m));
    }
    if !rng.pct(10) {
        let r = if rng.pct(bad / 5) {
            rng.pick(&["null", "{}", "\"x\"", "1", "[]"]).to_string()
        } else {
            let n = rng.below(30);
            let items: Vec<String> = (0..n).map(|_| reading_text(rng, bad)).collect();
            format!("[{}]", items.join(","))
        };
        fields.push(field("readings", r));
    }
    if rng.pct(40) {
        let e = if rng.pct(bad / 5) {
            rng.pick(&["null", "{}", "\"tamper\"", "[]"]).to_string()
        } else {
            let n = rng.below(4);
            let items: Vec<String> = (0..n).map(|_| event_text(rng, bad)).collect();
            format!("[{}]", items.join(","))
        };
        fields.push(field("events", e));
    }
    if rng.pct(50) {
        let b = if rng.pct(bad) {
            number_text(rng)
        } else {
            rng.range(0, 100).to_string()
        };
        fields.push(field("battery", b));
    }
    if rng.pct(50) {
        let v = if rng.pct(bad) {
            rng.pick(&[
                "\"ajar\"",
                "\"OPEN\"",
                "\"op\\u0065n\"",
                "1",
                "null",
                "true",
                "[\"open\"]",
            ])
            .to_string()
        } else {
            rng.pick(&["\"open\"", "\"closed\""]).to_string()
        };
        fields.push(field("valve", v));
    }
    object_text(rng, fields, bad)
}

/// A byte-level mutation of `text`.
fn mutate(rng: &mut Rng, text: &str) -> Vec<u8> {
    let mut bytes = text.as_bytes().to_vec();
    if bytes.is_empty() {
        return bytes;
    }
    let at = rng.below(bytes.len());
    match rng.below(6) {
        0 => bytes.truncate(at),
        1 => {
            bytes.remove(at);
        }
        2 => {
            let b = *rng.pick(b"{}[],:\"0123456789-+eE. ntfu\\");
            bytes.insert(at, b);
        }
        3 => {
            let b = *rng.pick(b"{}[],:\"0123456789-eE.x");
            bytes[at] = b;
        }
        4 => {
            let end = (at + rng.below(40)).min(bytes.len());
            let piece = bytes[at..end].to_vec();
            let to = rng.below(bytes.len());
            bytes.splice(to..to, piece);
        }
        _ => bytes.insert(at, 0xff),
    }
    bytes
}

fn uplink(rng: &mut Rng) -> Uplink {
    let meter = MeterId::parse("M1").unwrap();
    let start = rng.range(0, 2_000_000_000);
    let mut vol = rng.range(0, 100_000) as f64 / 7.0;
    let readings = (0..rng.below(30))
        .map(|i| {
            vol += rng.below(1000) as f64 / 1000.0;
            let nanos = if rng.pct(10) {
                rng.below(1_000_000_000) as u32
            } else {
                0
            };
            Reading {
                meter: meter.clone(),
                t: DateTime::<Utc>::from_timestamp(start + 3600 * i as i64, nanos).unwrap(),
                vol,
                temp: rng.pct(30).then(|| rng.range(-200, 400) as f64 / 10.0),
                flow_max: rng.pct(30).then(|| rng.below(1000) as f64 / 1e3),
                pressure: rng.pct(30).then(|| 2.0 + rng.below(100) as f64 / 7.0),
            }
        })
        .collect();
    let events = (0..rng.below(3))
        .map(|_| MeterEvent {
            meter: meter.clone(),
            t: DateTime::<Utc>::from_timestamp(start + rng.range(0, 86_400), 0).unwrap(),
            code: if rng.pct(50) {
                EventCode::Named(rng.pick(EventCode::NAMED).to_string())
            } else {
                EventCode::Numeric(rng.next() as u32)
            },
        })
        .collect();
    Uplink {
        district: DistrictId::parse("D1").unwrap(),
        meter,
        readings,
        events,
        battery: rng.pct(50).then(|| rng.below(101) as u8),
        valve: match rng.below(3) {
            0 => Some(Valve::Open),
            1 => Some(Valve::Closed),
            _ => None,
        },
    }
}

fn senml_text(rng: &mut Rng) -> String {
    let head = rng.pick(&[
        r#"{"bn":"urn:dev:mid:M1:","bt":1794096000}"#,
        r#"{"bn":"M1:","bver":10}"#,
        r#"{"bn":"urn:dev:mid:M2:"}"#,
        r#"{"bn":"M1:","bver":11}"#,
        r#"{"bn":"M1:","crit_":1}"#,
        r#"{"bn":5}"#,
        r#"{"n":"vol","t":1794096000,"s":1}"#,
        r#"{}"#,
        r#"7"#,
    ]);
    let n = rng.below(6);
    let records: Vec<String> = (0..n)
        .map(|_| {
            rng.pick(&[
                r#"{"n":"vol","s":5}"#,
                r#"{"n":"vol","t":3600,"s":6.5}"#,
                r#"{"n":"vol","t":"now","s":1}"#,
                r#"{"n":"vol","v":1}"#,
                r#"{"n":"vol","s":-1}"#,
                r#"{"n":"temp","u":"Cel","v":11.5}"#,
                r#"{"n":"battery","u":"%EL","v":87}"#,
                r#"{"n":"M1:vol","t":1794099600,"s":7}"#,
                r#"{"n":"rssi","v":-90}"#,
                r#"{"n":4}"#,
                r#"[]"#,
            ])
            .to_string()
        })
        .collect();
    let mut all = vec![head.to_string()];
    all.extend(records);
    format!("[{}]", all.join(","))
}

#[test]
fn generated_messages_decode_the_same_both_ways() {
    let mut rng = Rng(0x1eaf_3a7c);
    let mut tally = Tally::default();
    let mut clean = Tally::default();
    // Clean-ish messages (mostly the fast path), then ever more broken ones.
    for round in 0..4000 {
        let bad = [0, 3, 10, 30, 60][round % 5];
        let text = message_text(&mut rng, bad);
        same(
            if bad == 0 { &mut clean } else { &mut tally },
            TOPIC,
            text.as_bytes(),
        );
        if round % 4 == 0 {
            same(&mut tally, TOPIC, &mutate(&mut rng, &text));
        }
        if round % 50 == 0 {
            same(&mut tally, "gas/D1/M2/up", text.as_bytes());
        }
    }
    // Messages as `encode` and `encode_senml` write them, and broken copies.
    for _ in 0..1500 {
        let up = uplink(&mut rng);
        for bytes in [encode(&up), encode_senml(&up)] {
            same(&mut clean, TOPIC, &bytes);
            let text = String::from_utf8(bytes).unwrap();
            same(&mut tally, TOPIC, &mutate(&mut rng, &text));
        }
    }
    // SenML packs.
    for _ in 0..1000 {
        let text = senml_text(&mut rng);
        same(&mut tally, TOPIC, text.as_bytes());
        same(&mut tally, TOPIC, &mutate(&mut rng, &text));
    }
    // Payloads that are not a v1 object at all.
    for text in [
        "",
        " ",
        "null",
        "1",
        "\"x\"",
        "[]",
        " {}",
        "{}",
        "{",
        "{} {}",
        "\u{feff}{}",
    ] {
        same(&mut tally, TOPIC, text.as_bytes());
    }
    println!("clean: {clean:?}\nother: {tally:?}");
    assert!(clean.fast >= 2000, "{clean:?}");
    assert!(tally.fast >= 500, "{tally:?}");
    assert!(
        tally.errors >= 1000 && tally.ok_with_rejects >= 1000,
        "{tally:?}"
    );
}

/// Inputs where a typed serde reading would accept what the reference rejects, or
/// read it differently.
#[test]
fn tricky_inputs_decode_the_same_both_ways() {
    let deep = |n: usize| format!("{}1{}", "[".repeat(n), "]".repeat(n));
    let r = r#"{"t":"2026-11-26T00:00:00Z","vol":1.5}"#;
    let cases = [
        // Numbers out of f64 range and deep nesting in an unknown field (serde's
        // IgnoredAny would skip both without complaint).
        format!(r#"{{"v":1,"meter":"M1","x":1e999,"readings":[{r}]}}"#),
        r#"{"v":1,"meter":"M1","readings":[{"t":0,"vol":1,"x":[-1e400]}]}"#.to_string(),
        format!(r#"{{"v":1,"meter":"M1","x":{}}}"#, deep(126)),
        format!(r#"{{"v":1,"meter":"M1","x":{}}}"#, deep(127)),
        format!(r#"{{"v":1,"meter":"M1","x":{}}}"#, deep(128)),
        format!(r#"{{"v":1,"meter":"M1","readings":[{{"t":0,"vol":1,"x":{}}}]}}"#, deep(124)),
        format!(r#"{{"v":1,"meter":"M1","readings":[{{"t":0,"vol":1,"x":{}}}]}}"#, deep(125)),
        // Strings the parser must check even where they are ignored.
        r#"{"v":1,"meter":"M1","x":"\ud800"}"#.to_string(),
        r#"{"v":1,"meter":"M1","x":"\ud800\u0041"}"#.to_string(),
        r#"{"v":1,"meter":"M1","x":"\q"}"#.to_string(),
        "{\"v\":1,\"meter\":\"M1\",\"x\":\"a\u{1}\"}".to_string(),
        // A reading or the message as an array (a derived struct takes a sequence).
        r#"{"v":1,"meter":"M1","readings":[["2026-11-26T00:00:00Z",1.5]]}"#.to_string(),
        r#"[1,"M1"]"#.to_string(),
        // Repeated keys: `Value` keeps the last.
        format!(r#"{{"v":1,"meter":"M1","readings":[{r}],"readings":[]}}"#),
        format!(r#"{{"v":2,"v":1,"meter":"M1","readings":[{r}]}}"#),
        format!(r#"{{"v":1,"meter":"M2","meter":"M1","readings":[{r}]}}"#),
        r#"{"v":1,"meter":"M1","readings":[{"t":0,"vol":-1,"vol":1}]}"#.to_string(),
        r#"{"v":1,"meter":"M1","readings":[{"t":"x","t":0,"vol":1}]}"#.to_string(),
        r#"{"v":1,"meter":"M1","battery":500,"battery":5}"#.to_string(),
        r#"{"v":1,"meter":"M1","x":1,"x":2}"#.to_string(),
        // Keys serde_json's `Value` reads specially with some features.
        r#"{"$serde_json::private::RawValue":"{\"v\":1,\"meter\":\"M1\"}"}"#.to_string(),
        r#"{"v":1,"meter":"M1","x":{"$serde_json::private::RawValue":"[1"}}"#.to_string(),
        r#"{"v":1,"meter":"M1","x":{"$serde_json::private::Number":"1e999"}}"#.to_string(),
        // Escaped keys and values.
        r#"{"\u0076":1,"m\u0065ter":"M\u0031","readings":[{"\u0074":"2026-11-26T00:00:00\u005a","vol":1}],"valve":"op\u0065n"}"#.to_string(),
        // Numbers of every shape where a number is wanted.
        r#"{"v":1,"meter":"M1","readings":[{"t":0,"vol":-0},{"t":0,"vol":-0.0},{"t":-0,"vol":1}]}"#.to_string(),
        r#"{"v":1,"meter":"M1","readings":[{"t":0,"vol":18446744073709551616,"temp":-9223372036854775809}]}"#.to_string(),
        r#"{"v":1,"meter":"M1","events":[{"t":0,"code":-0},{"t":0,"code":0},{"t":0,"code":4294967295}]}"#.to_string(),
        r#"{"v":1,"meter":"M1","battery":-0.0}"#.to_string(),
        r#"{"v":1,"meter":"M1","battery":100.49999999999999}"#.to_string(),
        r#"{"v":1,"meter":"M1","battery":-0.4}"#.to_string(),
        r#"{"v":1,"meter":"M1","readings":[{"t":253402300799,"vol":1},{"t":"9999-12-31T23:59:59Z","vol":1}]}"#.to_string(),
        r#"{"v":1,"meter":"M1","readings":[{"t":"9999-12-31T23:59:59-00:01","vol":1}]}"#.to_string(),
        r#"{"v":1,"meter":"M1","readings":[{"t":"2026-12-31T23:59:60Z","vol":1}]}"#.to_string(),
        r#"{"v":1,"meter":"M1","readings":[{"t":"1970-01-01T00:59:59+01:00","vol":1}]}"#.to_string(),
        // Whitespace and trailing data.
        format!(" \n\t{{\"v\":1,\"meter\":\"M1\",\"readings\":[{r}]}}\r\n "),
        format!(r#"{{"v":1,"meter":"M1","readings":[{r}]}}x"#),
        format!(r#"{{"v":1,"meter":"M1","readings":[{r},]}}"#),
        format!(r#"{{"v":1,"meter":"M1","readings":[{r}],}}"#),
    ];
    let mut tally = Tally::default();
    for case in &cases {
        same(&mut tally, TOPIC, case.as_bytes());
    }
    println!("{tally:?}");
}

/// The canonical-time parser gives what chrono gives, or leaves the text to chrono.
#[test]
fn canonical_times_parse_as_chrono_does() {
    // One cache for all (as in a message), and a fresh one per text.
    let dates = fast::Dates::default();
    let check = |s: &str| {
        let chrono = DateTime::parse_from_rfc3339(s).map(|t| t.with_timezone(&Utc));
        assert_eq!(
            dates.canonical_utc(s),
            fast::Dates::default().canonical_utc(s),
            "{s}"
        );
        match dates.canonical_utc(s) {
            Some(t) => assert_eq!(chrono, Ok(t), "{s}"),
            // In the canonical shape, only leap seconds and invalid dates.
            None => {
                let b = s.as_bytes();
                let shape = b.len() == 20 && s.is_ascii() && b[10] == b'T' && b[19] == b'Z';
                assert!(!shape || chrono.is_err() || &s[17..19] == "60", "{s}");
            }
        }
    };
    // Every day of years 1600..=2500, at a varying time of day.
    let mut day = DateTime::parse_from_rfc3339("1600-01-01T00:00:00Z")
        .unwrap()
        .to_utc();
    let mut n = 0u64;
    while day.format("%Y").to_string() != "2501" {
        let t = day + chrono::Duration::seconds((n * 7919 % 86_400) as i64);
        check(&t.format("%Y-%m-%dT%H:%M:%SZ").to_string());
        day += chrono::Duration::days(1);
        n += 1;
    }
    // Random digits in the canonical shape, mostly near-valid.
    let mut rng = Rng(7);
    for _ in 0..200_000 {
        let s = format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
            rng.below(10_000),
            rng.below(14),
            rng.below(33),
            rng.below(26),
            rng.below(62),
            rng.below(62)
        );
        check(&s);
        // The same date at another time (a cache hit).
        let again = format!(
            "{}T{:02}:{:02}:{:02}Z",
            &s[..10],
            rng.below(26),
            rng.below(62),
            rng.below(62)
        );
        check(&again);
    }
    for s in [
        "0000-01-01T00:00:00Z",
        "9999-12-31T23:59:59Z",
        "1970-01-01T00:00:00Z",
        "2026-11-26T00:00:00z",
        "2026-11-26t00:00:00Z",
        "2026-11-26 00:00:00Z",
        "2026-11-26T00:00:00+00:00",
        "2026-11-26T00:00:00.0Z",
        "2026-11-26T00:00:0aZ",
        "２026-11-26T00:00:00Z",
    ] {
        check(s);
    }
}
