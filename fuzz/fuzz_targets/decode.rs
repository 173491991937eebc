//! Fuzz target: `leakwatch_wire::decode` on arbitrary bytes.
//!
//! Input layout: the first byte picks the topic (`% 4`: 0 = `gas/D1/M1/up`,
//! 1 = `gas/D1/M2/up`, 2 = `gas/D1/M9/up`, 3 = the following bytes up to the first
//! `\n`, lossily decoded, as the topic); the rest is the payload.
//!
//! Checks: decoding never panics; the fast path and the reference decoder agree
//! exactly (result and error, compared by their `Debug` text, which tells -0.0
//! from 0.0); every reason code is a documented one; an accepted
//! message re-encoded with `encode` (v1) decodes cleanly to the same uplink, and
//! re-encoded with `encode_senml` decodes cleanly to the same volume indexes (SenML
//! cannot carry times before 2^28 s, and carries times as f64 seconds).
#![no_main]

use leakwatch_wire::{
    Format, ITEM_REASONS, MAX_PAYLOAD_BYTES, MESSAGE_REASONS, decode, decode_reference, encode,
    encode_senml,
};
use libfuzzer_sys::fuzz_target;

const PREFIX: &str = "gas";

fn split(data: &[u8]) -> Option<(String, &[u8])> {
    let (selector, rest) = data.split_first()?;
    Some(match selector % 4 {
        0 => ("gas/D1/M1/up".to_owned(), rest),
        1 => ("gas/D1/M2/up".to_owned(), rest),
        2 => ("gas/D1/M9/up".to_owned(), rest),
        _ => {
            let end = rest.iter().position(|b| *b == b'\n').unwrap_or(rest.len());
            let topic = String::from_utf8_lossy(&rest[..end]).into_owned();
            (topic, rest.get(end + 1..).unwrap_or(&[]))
        }
    })
}

/// Seconds since the epoch as f64, leap seconds included.
fn secs(t: &leakwatch_core::Timestamp) -> f64 {
    t.timestamp() as f64 + f64::from(t.timestamp_subsec_nanos()) / 1e9
}

fuzz_target!(|data: &[u8]| {
    let Some((topic, payload)) = split(data) else {
        return;
    };
    let fast = decode(PREFIX, &topic, payload);
    let reference = decode_reference(PREFIX, &topic, payload);
    assert_eq!(format!("{fast:?}"), format!("{reference:?}"));
    let decoded = match fast {
        Ok(d) => d,
        Err(e) => {
            assert!(MESSAGE_REASONS.contains(&e.reason()), "{e:?}");
            return;
        }
    };
    for r in &decoded.rejected {
        assert!(ITEM_REASONS.contains(&r.reason), "{r:?}");
    }
    let up = &decoded.uplink;

    // v1 round trip: exactly the same uplink.
    let bytes = encode(up);
    if bytes.len() <= MAX_PAYLOAD_BYTES {
        let back = decode(PREFIX, &topic, &bytes).unwrap_or_else(|e| {
            panic!(
                "encode output rejected: {e}: {}",
                String::from_utf8_lossy(&bytes)
            )
        });
        assert_eq!(back.format, Format::V1);
        assert!(back.rejected.is_empty(), "{:?}", back.rejected);
        assert_eq!(&back.uplink, up);
    }

    // SenML round trip: same indexes at the same times (to f64 precision).
    let bytes = encode_senml(up);
    if bytes.len() <= MAX_PAYLOAD_BYTES {
        let back = decode(PREFIX, &topic, &bytes).unwrap_or_else(|e| {
            panic!(
                "encode_senml output rejected: {e}: {}",
                String::from_utf8_lossy(&bytes)
            )
        });
        assert_eq!(back.format, Format::SenML);
        let representable: Vec<_> = up
            .readings
            .iter()
            .filter(|r| secs(&r.t) >= 268_435_456.0)
            .collect();
        assert_eq!(
            back.uplink.readings.len(),
            representable.len(),
            "{:?}",
            back.rejected
        );
        for (a, b) in representable.iter().zip(&back.uplink.readings) {
            assert_eq!(a.vol, b.vol);
            assert!((secs(&a.t) - secs(&b.t)).abs() < 1e-3, "{} vs {}", a.t, b.t);
        }
        assert_eq!(back.uplink.battery, up.battery);
    }
});
