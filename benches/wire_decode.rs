//! Decoder throughput: messages and readings per second through
//! `leakwatch_wire::decode` on realistic v1 messages (a day of 24 hourly readings as
//! `encode` writes them, some with `temp`/`flow_max`/`pressure`, events, battery and
//! valve), single-threaded, against two baselines measured in the same run on the
//! same payloads, so the ratios hold on a noisy shared machine:
//!
//! - `decode_reference`: the `serde_json::Value` decoder `decode` must agree with
//!   (what `decode` was before the fast path);
//! - `serde_json::from_slice::<Value>` alone: just the JSON tree, no checks.
//!
//! Each figure is the median of five passes. Run:
//! `cargo bench -p leakwatch-wire --bench wire_decode`

use chrono::{Duration, TimeZone, Utc};
use leakwatch_core::{DistrictId, EventCode, MeterEvent, MeterId, Reading};
use leakwatch_wire::{Uplink, Valve, decode, decode_reference, encode, uplink_topic};
use std::hint::black_box;
use std::time::Instant;

const MESSAGES: usize = 20_000;
const METERS: usize = 1_000;
const READINGS: usize = 24;
const PASSES: usize = 5;

fn messages() -> Vec<(String, Vec<u8>)> {
    let district = DistrictId::parse("D01").unwrap();
    let day0 = Utc.with_ymd_and_hms(2026, 11, 1, 0, 0, 0).unwrap();
    (0..MESSAGES)
        .map(|m| {
            let meter = MeterId::parse(format!("PDR{:011}", m % METERS)).unwrap();
            let day = day0 + Duration::days((m / METERS) as i64);
            let mut vol = 1000.0 + (m % METERS) as f64 * 3.7 + (m / METERS) as f64 * 1.2;
            let readings = (0..READINGS)
                .map(|h| {
                    vol += if (1..6).contains(&h) {
                        0.0
                    } else {
                        0.05 + (m % 7) as f64 * 0.01
                    };
                    Reading {
                        meter: meter.clone(),
                        t: day + Duration::hours(h as i64),
                        vol: (vol * 1000.0).round() / 1000.0,
                        // Some meters send temperature, flow and pressure on each reading.
                        temp: (m % 4 == 0).then_some(8.0 + (h % 10) as f64 * 0.5),
                        flow_max: (m % 4 == 0).then(|| ((h * 37 % 100) as f64) / 100.0),
                        pressure: (m % 8 == 0).then_some(2.1),
                    }
                })
                .collect();
            let events = if m % 10 == 0 {
                vec![MeterEvent {
                    meter: meter.clone(),
                    t: day + Duration::minutes(13),
                    code: EventCode::Named("tamper".into()),
                }]
            } else {
                Vec::new()
            };
            let up = Uplink {
                district: district.clone(),
                meter: meter.clone(),
                readings,
                events,
                battery: Some(87 - (m % 50) as u8),
                valve: (m % 2 == 0).then_some(Valve::Open),
            };
            (uplink_topic("gas", &district, &meter), encode(&up))
        })
        .collect()
}

/// Seconds for one pass of `f` over every message (median of [`PASSES`]).
fn time(msgs: &[(String, Vec<u8>)], f: impl Fn(&str, &[u8]) -> usize) -> f64 {
    let mut secs: Vec<f64> = (0..PASSES)
        .map(|_| {
            let started = Instant::now();
            let mut n = 0;
            for (topic, payload) in msgs {
                n += f(black_box(topic), black_box(payload));
            }
            black_box(n);
            started.elapsed().as_secs_f64()
        })
        .collect();
    secs.sort_by(f64::total_cmp);
    secs[PASSES / 2]
}

fn main() {
    let msgs = messages();
    let bytes: usize = msgs.iter().map(|(_, p)| p.len()).sum();
    // The figures are only worth having if both decoders agree on these payloads.
    for (topic, payload) in &msgs {
        let d = decode("gas", topic, payload).unwrap();
        assert!(d.rejected.is_empty());
        assert_eq!(d.uplink.readings.len(), READINGS);
        assert_eq!(Ok(d), decode_reference("gas", topic, payload));
    }
    println!(
        "{MESSAGES} v1 messages x {READINGS} readings, {:.0} bytes/message on average, \
         median of {PASSES} passes",
        bytes as f64 / MESSAGES as f64
    );

    let fast = time(&msgs, |topic, payload| {
        decode("gas", topic, payload).unwrap().uplink.readings.len()
    });
    let reference = time(&msgs, |topic, payload| {
        decode_reference("gas", topic, payload)
            .unwrap()
            .uplink
            .readings
            .len()
    });
    let value = time(&msgs, |_, payload| {
        match serde_json::from_slice::<serde_json::Value>(payload).unwrap() {
            serde_json::Value::Object(obj) => obj.len(),
            _ => 0,
        }
    });

    let n = MESSAGES as f64;
    let r = (MESSAGES * READINGS) as f64;
    let row = |name: &str, secs: f64| {
        println!(
            "{name:<40} {:>10.0} messages/s {:>12.0} readings/s {:>8.2} us/message {:>7.1} MB/s",
            n / secs,
            r / secs,
            secs / n * 1e6,
            bytes as f64 / secs / 1e6
        );
    };
    row("decode (fast path)", fast);
    row("decode_reference (Value decoder)", reference);
    row("serde_json::from_slice::<Value> only", value);
    println!(
        "decode is {:.2}x decode_reference and {:.2}x parsing to Value alone",
        reference / fast,
        value / fast
    );
}
