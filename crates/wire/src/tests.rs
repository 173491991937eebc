use super::*;
use leakwatch_core::EventCode;

const TOPIC: &str = "gas/D01/PDR00012345678/up";

fn decoded(payload: &str) -> Decoded {
    decode("gas", TOPIC, payload.as_bytes()).unwrap()
}

/// Decodes a message expected to be entirely good.
fn ok(payload: &str) -> Uplink {
    let d = decoded(payload);
    assert_eq!(d.format, Format::V1);
    assert!(d.rejected.is_empty(), "{:?}", d.rejected);
    d.uplink
}

fn err(payload: &str) -> DecodeError {
    decode("gas", TOPIC, payload.as_bytes()).unwrap_err()
}

#[test]
fn decodes_the_design_example() {
    let up = ok(r#"{
      "v": 1,
      "meter": "PDR00012345678",
      "readings": [
        {"t": "2026-11-26T00:00:00Z", "vol": 1234.567},
        {"t": "2026-11-26T01:00:00Z", "vol": 1234.612, "temp": 11.5, "flow_max": 0.42}
      ],
      "events": [{"t": "2026-11-26T00:13:00Z", "code": "tamper"}],
      "battery": 87,
      "valve": "open"
    }"#);
    assert_eq!(up.district.as_str(), "D01");
    assert_eq!(up.meter.as_str(), "PDR00012345678");
    assert_eq!(up.readings.len(), 2);
    assert_eq!(up.readings[1].temp, Some(11.5));
    assert_eq!(up.readings[1].flow_max, Some(0.42));
    assert_eq!(up.events[0].code, EventCode::Named("tamper".into()));
    assert_eq!(up.battery, Some(87));
    assert_eq!(up.valve, Some(Valve::Open));
}

#[test]
fn accepts_unix_seconds_offsets_numeric_codes_and_unknown_fields() {
    let up = ok(r#"{"v":1,"meter":"PDR00012345678","firmware":"2.1",
        "readings":[{"t":1764115200,"vol":1.0,"extra":[1]},{"t":"2026-11-26T02:00:00+01:00","vol":1.5}],
        "events":[{"t":1764115200,"code":113}]}"#);
    assert_eq!(up.readings[0].t.to_rfc3339(), "2025-11-26T00:00:00+00:00");
    assert_eq!(up.readings[1].t.to_rfc3339(), "2026-11-26T01:00:00+00:00");
    assert_eq!(up.events[0].code, EventCode::Numeric(113));
}

#[test]
fn a_message_may_carry_only_events_or_only_status() {
    assert!(
        ok(r#"{"v":1,"meter":"PDR00012345678","events":[{"t":0,"code":"battery_low"}]}"#)
            .readings
            .is_empty()
    );
    assert_eq!(
        ok(r#"{"v":1,"meter":"PDR00012345678","battery":3}"#).battery,
        Some(3)
    );
}

#[test]
fn duplicate_times_are_kept() {
    let up = ok(r#"{"v":1,"meter":"PDR00012345678",
        "readings":[{"t":0,"vol":1},{"t":0,"vol":1},{"t":0,"vol":2}]}"#);
    assert_eq!(up.readings.len(), 3);
}

#[test]
fn message_problems_reject_the_message() {
    let cases: &[(&str, &str)] = &[
        ("", "empty"),
        ("not json", "not_json"),
        ("12", "not_object"),
        ("\"x\"", "not_object"),
        ("null", "not_object"),
        (r#"{"meter":"PDR00012345678"}"#, "bad_version"),
        (r#"{"v":2,"meter":"PDR00012345678"}"#, "bad_version"),
        (r#"{"v":"1","meter":"PDR00012345678"}"#, "bad_version"),
        (r#"{"v":1}"#, "missing_meter"),
        (r#"{"v":1,"meter":null}"#, "missing_meter"),
        (r#"{"v":1,"meter":"A/B"}"#, "bad_meter"),
        (r#"{"v":1,"meter":""}"#, "bad_meter"),
        (r#"{"v":1,"meter":12}"#, "bad_field"),
        (r#"{"v":1,"meter":"OTHER"}"#, "meter_mismatch"),
        (
            r#"{"v":1,"meter":"PDR00012345678","readings":{}}"#,
            "bad_field",
        ),
        (
            r#"{"v":1,"meter":"PDR00012345678","events":"tamper"}"#,
            "bad_field",
        ),
        (
            r#"{"v":1,"meter":"PDR00012345678","readings":[{"t":0,"vol":1e999}]}"#,
            "not_json",
        ),
        (
            r#"{"v":1,"meter":"PDR00012345678","readings":[{"t":0,"vol":NaN}]}"#,
            "not_json",
        ),
        (r#"{"v":1,"meter":"PDR00012345678"} {}"#, "not_json"),
    ];
    for (payload, reason) in cases {
        assert_eq!(err(payload).reason(), *reason, "payload {payload}");
        assert!(MESSAGE_REASONS.contains(reason));
    }
}

#[test]
fn item_problems_reject_the_item_only() {
    let cases: &[(&str, &str, &str)] = &[
        (r#""readings":[7]"#, "readings[1]", "not_object"),
        (r#""readings":[{"vol":1}]"#, "readings[1]", "missing_t"),
        (
            r#""readings":[{"t":null,"vol":1}]"#,
            "readings[1]",
            "missing_t",
        ),
        (
            r#""readings":[{"t":"yesterday","vol":1}]"#,
            "readings[1]",
            "bad_t",
        ),
        (
            r#""readings":[{"t":"2026-11-26T00:00:00","vol":1}]"#,
            "readings[1]",
            "bad_t",
        ),
        (r#""readings":[{"t":1.5,"vol":1}]"#, "readings[1]", "bad_t"),
        (r#""readings":[{"t":-1,"vol":1}]"#, "readings[1]", "bad_t"),
        (
            r#""readings":[{"t":253402300800,"vol":1}]"#,
            "readings[1]",
            "bad_t",
        ),
        (
            r#""readings":[{"t":"1969-12-31T23:59:59Z","vol":1}]"#,
            "readings[1]",
            "bad_t",
        ),
        (r#""readings":[{"t":true,"vol":1}]"#, "readings[1]", "bad_t"),
        (r#""readings":[{"t":0}]"#, "readings[1]", "missing_vol"),
        (
            r#""readings":[{"t":0,"vol":null}]"#,
            "readings[1]",
            "missing_vol",
        ),
        (
            r#""readings":[{"t":0,"vol":-1}]"#,
            "readings[1]",
            "negative_vol",
        ),
        (
            r#""readings":[{"t":0,"vol":"1"}]"#,
            "readings[1]",
            "bad_vol",
        ),
        (
            r#""readings":[{"t":0,"vol":"NaN"}]"#,
            "readings[1]",
            "bad_vol",
        ),
        (
            r#""readings":[{"t":0,"vol":[1]}]"#,
            "readings[1]",
            "bad_vol",
        ),
        (
            r#""readings":[{"t":0,"vol":1,"temp":"hot"}]"#,
            "readings[1]",
            "bad_field",
        ),
        (
            r#""readings":[{"t":0,"vol":1,"flow_max":-0.5}]"#,
            "readings[1]",
            "bad_field",
        ),
        (
            r#""readings":[{"t":0,"vol":1,"pressure":{}}]"#,
            "readings[1]",
            "bad_field",
        ),
        (r#""events":[{"code":"tamper"}]"#, "events[0]", "missing_t"),
        (r#""events":["tamper"]"#, "events[0]", "not_object"),
        (
            r#""events":[{"t":0,"code":"boom"}]"#,
            "events[0]",
            "unknown_event",
        ),
        (r#""events":[{"t":0,"code":-3}]"#, "events[0]", "bad_event"),
        (r#""events":[{"t":0,"code":1.5}]"#, "events[0]", "bad_event"),
        (
            r#""events":[{"t":0,"code":4294967296}]"#,
            "events[0]",
            "bad_event",
        ),
        (r#""events":[{"t":0}]"#, "events[0]", "bad_event"),
        (
            r#""events":[{"t":0,"code":true}]"#,
            "events[0]",
            "bad_event",
        ),
        (r#""battery":101"#, "battery", "bad_battery"),
        (r#""battery":-1"#, "battery", "bad_battery"),
        (r#""battery":"full""#, "battery", "bad_battery"),
        (r#""valve":"ajar""#, "valve", "bad_valve"),
        (r#""valve":1"#, "valve", "bad_valve"),
    ];
    for (field, item, reason) in cases {
        // One good reading always comes first (unless the case replaces "readings").
        let payload = if field.starts_with(r#""readings""#) {
            let items = field.trim_start_matches(r#""readings":["#);
            format!(r#"{{"v":1,"meter":"PDR00012345678","readings":[{{"t":0,"vol":1}},{items}}}"#)
        } else {
            format!(r#"{{"v":1,"meter":"PDR00012345678","readings":[{{"t":0,"vol":1}}],{field}}}"#)
        };
        let d = decoded(&payload);
        assert_eq!(d.uplink.readings.len(), 1, "{payload}");
        let got: Vec<_> = d
            .rejected
            .iter()
            .map(|r| (r.item.as_str(), r.reason))
            .collect();
        assert_eq!(got, vec![(*item, *reason)], "{payload}");
        assert!(ITEM_REASONS.contains(reason));
        assert_eq!(d.dead_letter_reason(), Some(*reason));
    }
}

#[test]
fn keeps_the_good_items_and_lists_the_bad_in_order() {
    let d = decoded(
        r#"{"v":1,"meter":"PDR00012345678",
        "readings":[{"t":0,"vol":1},{"t":0,"vol":-2},{"t":60,"vol":3},{"vol":4}],
        "events":[{"t":0,"code":"boom"},{"t":0,"code":"tamper"}],
        "battery":300,"valve":"closed"}"#,
    );
    assert_eq!(d.uplink.readings.len(), 2);
    assert_eq!(d.uplink.events.len(), 1);
    assert_eq!(d.uplink.battery, None);
    assert_eq!(d.uplink.valve, Some(Valve::Closed));
    let got: Vec<_> = d
        .rejected
        .iter()
        .map(|r| (r.item.as_str(), r.reason))
        .collect();
    assert_eq!(
        got,
        [
            ("readings[1]", "negative_vol"),
            ("readings[3]", "missing_t"),
            ("events[0]", "unknown_event"),
            ("battery", "bad_battery"),
        ]
    );
    assert_eq!(d.dead_letter_reason(), Some("negative_vol"));
    assert_eq!(
        d.rejected[0].to_string(),
        "readings[1]: \"vol\" -2 is negative (negative_vol)"
    );
    assert_eq!(d.rejected_detail().lines().count(), 4);
}

#[test]
fn rejected_detail_is_bounded() {
    let items = vec!["1"; 1000].join(",");
    let d = decoded(&format!(
        r#"{{"v":1,"meter":"PDR00012345678","readings":[{items}]}}"#
    ));
    assert_eq!(d.rejected.len(), 1000);
    let detail = d.rejected_detail();
    assert_eq!(detail.lines().count(), REJECTED_DETAIL_MAX_ITEMS + 1);
    assert!(
        detail.ends_with("... and 950 more rejected items"),
        "{detail}"
    );
}

#[test]
fn details_stay_short() {
    let long = "x".repeat(5000);
    let d = decoded(&format!(
        r#"{{"v":1,"meter":"PDR00012345678","readings":[{{"t":0,"vol":"{long}"}}],"valve":"{long}"}}"#
    ));
    for r in &d.rejected {
        assert!(r.detail.len() < 200, "{}", r.detail);
    }
}

#[test]
fn rejects_non_utf8_and_oversized_payloads() {
    let e = decode("gas", TOPIC, &[b'{', 0xff, 0xfe, b'}']).unwrap_err();
    assert_eq!(e, DecodeError::NotUtf8 { offset: 1 });
    let big = vec![b' '; MAX_PAYLOAD_BYTES + 1];
    assert_eq!(
        decode("gas", TOPIC, &big).unwrap_err().reason(),
        "too_large"
    );
    assert_eq!(dead_letter_payload(&big).len(), DEAD_LETTER_MAX_PAYLOAD);
    assert_eq!(dead_letter_payload(b"abc"), b"abc");
}

#[test]
fn topic_rules() {
    assert!(parse_topic("gas", "gas/D1/M1/up").is_ok());
    for bad in [
        "gas/D1/M1",
        "gas/D1/M1/down",
        "water/D1/M1/up",
        "gas/D1/M 1/up",
        "gas//M1/up",
        "gas/D1/M1/up/x",
        "gasD1/M1/up",
    ] {
        let e = parse_topic("gas", bad).unwrap_err();
        assert_eq!(e.reason(), "bad_topic", "{bad}");
    }
    assert_eq!(uplink_filter("gas"), "gas/+/+/up");
    // The topic is checked before anything else.
    assert_eq!(
        decode("gas", "gas/D1/M1", b"").unwrap_err().reason(),
        "bad_topic"
    );
}

#[test]
fn encode_then_decode_round_trips() {
    let up = ok(r#"{"v":1,"meter":"PDR00012345678",
        "readings":[{"t":"2026-11-26T00:00:00Z","vol":12.345,"temp":7.5},
                    {"t":"2026-11-26T00:00:00.123456789+02:00","vol":0,"flow_max":0,"pressure":2.5}],
        "events":[{"t":"2026-11-26T00:13:00Z","code":80}],"battery":50,"valve":"closed"}"#);
    let bytes = encode(&up);
    let back = decode("gas", TOPIC, &bytes).unwrap();
    assert_eq!(back.format, Format::V1);
    assert!(back.rejected.is_empty());
    assert_eq!(back.uplink, up);
}

/// Found by the fuzz target: without serde_json's `float_roundtrip` feature, parsing
/// the shortest representation of some f64 gives a neighbour 1 ulp away, so a
/// re-encoded index came back different (and would look like a conflict, not a
/// duplicate).
#[test]
fn volume_indexes_round_trip_exactly() {
    for vol in [
        100.21111111111111,
        100.21111111111112,
        0.1 + 0.2,
        1234.567,
        f64::MAX,
        f64::MIN_POSITIVE,
        5e-324,
    ] {
        let up = Uplink {
            district: DistrictId::parse("D01").unwrap(),
            meter: MeterId::parse("PDR00012345678").unwrap(),
            readings: vec![Reading {
                meter: MeterId::parse("PDR00012345678").unwrap(),
                t: chrono::DateTime::from_timestamp(1_795_132_800, 0).unwrap(),
                vol,
                temp: Some(vol),
                flow_max: None,
                pressure: None,
            }],
            events: Vec::new(),
            battery: None,
            valve: None,
        };
        for bytes in [encode(&up), encode_senml(&up)] {
            let back = decode("gas", TOPIC, &bytes).unwrap();
            assert_eq!(
                back.uplink.readings[0].vol.to_bits(),
                vol.to_bits(),
                "{vol}"
            );
            assert_eq!(back.uplink.readings[0].temp, Some(vol), "{vol}");
        }
    }
}
