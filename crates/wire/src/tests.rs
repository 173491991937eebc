use super::*;

const TOPIC: &str = "gas/D01/PDR00012345678/up";

fn ok(payload: &str) -> Uplink {
    decode("gas", TOPIC, payload.as_bytes()).unwrap()
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
        "readings":[{"t":1764115200,"vol":1.0},{"t":"2026-11-26T02:00:00+01:00","vol":1.5}],
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
fn rejects_with_reasons() {
    let cases: &[(&str, &str)] = &[
        ("", "empty"),
        ("not json", "not_json"),
        ("[1,2]", "not_object"),
        (r#"{"meter":"PDR00012345678"}"#, "bad_version"),
        (r#"{"v":2,"meter":"PDR00012345678"}"#, "bad_version"),
        (r#"{"v":1}"#, "missing_meter"),
        (r#"{"v":1,"meter":"A/B"}"#, "bad_meter"),
        (r#"{"v":1,"meter":12}"#, "bad_field"),
        (r#"{"v":1,"meter":"OTHER"}"#, "meter_mismatch"),
        (
            r#"{"v":1,"meter":"PDR00012345678","readings":{}}"#,
            "bad_field",
        ),
        (
            r#"{"v":1,"meter":"PDR00012345678","readings":[{"vol":1}]}"#,
            "bad_reading",
        ),
        (
            r#"{"v":1,"meter":"PDR00012345678","readings":[{"t":"yesterday","vol":1}]}"#,
            "bad_reading",
        ),
        (
            r#"{"v":1,"meter":"PDR00012345678","readings":[{"t":0}]}"#,
            "bad_reading",
        ),
        (
            r#"{"v":1,"meter":"PDR00012345678","readings":[{"t":0,"vol":-1}]}"#,
            "bad_reading",
        ),
        (
            r#"{"v":1,"meter":"PDR00012345678","readings":[{"t":0,"vol":"1"}]}"#,
            "bad_reading",
        ),
        (
            r#"{"v":1,"meter":"PDR00012345678","readings":[{"t":0,"vol":1e999}]}"#,
            "not_json",
        ),
        (
            r#"{"v":1,"meter":"PDR00012345678","readings":[{"t":0,"vol":NaN}]}"#,
            "not_json",
        ),
        (
            r#"{"v":1,"meter":"PDR00012345678","events":[{"t":0,"code":"boom"}]}"#,
            "bad_event",
        ),
        (
            r#"{"v":1,"meter":"PDR00012345678","events":[{"t":0,"code":-3}]}"#,
            "bad_event",
        ),
        (
            r#"{"v":1,"meter":"PDR00012345678","battery":101}"#,
            "bad_field",
        ),
        (
            r#"{"v":1,"meter":"PDR00012345678","battery":-1}"#,
            "bad_field",
        ),
        (
            r#"{"v":1,"meter":"PDR00012345678","valve":"ajar"}"#,
            "bad_field",
        ),
    ];
    for (payload, reason) in cases {
        assert_eq!(err(payload).reason(), *reason, "payload {payload}");
    }
}

#[test]
fn names_the_bad_reading() {
    let e =
        err(r#"{"v":1,"meter":"PDR00012345678","readings":[{"t":0,"vol":1},{"t":0,"vol":-2}]}"#);
    assert_eq!(e.to_string(), "readings[1]: \"vol\" -2 is negative");
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
}

#[test]
fn encode_then_decode_round_trips() {
    let up = ok(r#"{"v":1,"meter":"PDR00012345678",
        "readings":[{"t":"2026-11-26T00:00:00Z","vol":12.345,"temp":7.5}],
        "events":[{"t":"2026-11-26T00:13:00Z","code":80}],"battery":50,"valve":"closed"}"#);
    let bytes = encode(&up);
    let back = decode("gas", TOPIC, &bytes).unwrap();
    assert_eq!(back, up);
}
