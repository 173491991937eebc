//! Small helpers shared by the per-meter detectors: building a finding, the compact
//! encodings that keep each meter's state small, and exponential forgetting.

use crate::MeterCtx;
use leakwatch_core::{AlertKind, Evidence, Finding, Severity, Timestamp};

/// A finding about the meter of `ctx`.
pub(crate) fn finding(
    ctx: &MeterCtx<'_>,
    kind: AlertKind,
    severity: Severity,
    detected_at: Timestamp,
    evidence: Evidence,
) -> Finding {
    Finding {
        kind,
        severity,
        meter_id: Some(ctx.id.clone()),
        district_id: Some(ctx.district.clone()),
        detected_at,
        evidence,
    }
}

/// Rounds a value for evidence (micro-units: litres of m³ with 3 more digits).
pub(crate) fn round6(x: f64) -> f64 {
    (x * 1e6).round() / 1e6
}

/// Whether an hour's consumption counts as zero flow. Consumption comes from
/// differences of litre-resolution indexes in floating point, so one litre may come
/// out as 0.000999999...: a hair of tolerance keeps it from passing as zero.
pub(crate) fn is_zero_flow(m3: f64, threshold_m3: f64) -> bool {
    m3 < threshold_m3 - 1e-7
}

/// A temperature (°C) in half degrees, for compact rings; [`NO_TEMP_I8`] when unknown.
pub(crate) fn temp_to_i8(t: Option<f32>) -> i8 {
    match t {
        Some(t) if t.is_finite() => (t * 2.0).round().clamp(-127.0, 127.0) as i8,
        _ => NO_TEMP_I8,
    }
}

/// Unknown temperature in an `i8` ring.
pub(crate) const NO_TEMP_I8: i8 = i8::MIN;

pub(crate) fn temp_from_i8(v: i8) -> Option<f32> {
    (v != NO_TEMP_I8).then(|| f32::from(v) / 2.0)
}

/// Whether a day stamp (a local day modulo 256, as the rings keep it) is `day` or
/// later; rings span a few weeks, so half the modulus tells before from after.
pub(crate) fn day_on_or_after(stamp: u8, day: i64) -> bool {
    (i64::from(stamp) - day).rem_euclid(256) < 128
}

/// A running mean of a few values (the gas temperature over a night or a day).
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub(crate) struct Mean {
    sum: f32,
    n: u8,
}

impl Mean {
    pub(crate) fn add(&mut self, x: Option<f32>) {
        if let Some(x) = x.filter(|x| x.is_finite())
            && self.n < u8::MAX
        {
            self.sum += x;
            self.n += 1;
        }
    }

    pub(crate) fn get(&self) -> Option<f32> {
        (self.n > 0).then(|| self.sum / f32::from(self.n))
    }
}

/// Per-step factor of an exponential forgetting with the given half-life in steps
/// (1.0, no forgetting, for a half-life of 0 or less).
pub(crate) fn decay_per_step(half_life_steps: f64) -> f64 {
    if half_life_steps > 0.0 {
        0.5f64.powf(1.0 / half_life_steps)
    } else {
        1.0
    }
}

/// `Some(t)` as a formatted temperature, or "unknown".
pub(crate) fn fmt_temp(t: Option<f32>) -> String {
    t.map_or_else(|| "unknown".to_owned(), |t| format!("{t:.1} °C"))
}

#[cfg(test)]
pub(crate) mod testing {
    //! What the detectors' unit tests share: a meter, hours, and a state size check.

    use crate::MeterCtx;
    use crate::hours::Hour;
    use chrono::{TimeDelta, TimeZone, Utc};
    use leakwatch_core::{DistrictId, MeterId, MeterKind, Timestamp};

    /// Feeds local days of hourly use, `litres(day, local hour)` at a gas temperature
    /// per day, to a detector's `on_hour` (given as a closure); returns its findings.
    pub fn feed_days(
        days: std::ops::Range<i64>,
        litres: impl Fn(i64, i64) -> f64,
        temp: impl Fn(i64) -> Option<f32>,
        mut on_hour: impl FnMut(&MeterCtx<'_>, &Hour, &mut Vec<leakwatch_core::Finding>),
    ) -> Vec<leakwatch_core::Finding> {
        let mut out = vec![];
        for d in days {
            for l in 0..24 {
                on_hour(&ctx(), &hour(at(d, l), litres(d, l), temp(d)), &mut out);
            }
        }
        out
    }
    use std::sync::LazyLock;

    pub static ID: LazyLock<MeterId> = LazyLock::new(|| MeterId::parse("PDR-T-1").unwrap());
    pub static DISTRICT: LazyLock<DistrictId> = LazyLock::new(|| DistrictId::parse("D01").unwrap());

    pub fn ctx() -> MeterCtx<'static> {
        MeterCtx {
            id: &ID,
            district: &DISTRICT,
            kind: MeterKind::Customer,
            report_every_h: 24,
            max_flow_m3h: Some(6.0),
            local_utc_offset_h: 1,
        }
    }

    /// Start of UTC hour `h` from 2026-10-01T00:00Z (a Thursday); local time is UTC+1,
    /// so `h = 24 d + l - 1` is local hour `l` of day `d`.
    pub fn t(h: i64) -> Timestamp {
        Utc.with_ymd_and_hms(2026, 10, 1, 0, 0, 0).unwrap() + TimeDelta::hours(h)
    }

    /// The UTC hour index of local hour `l` of day `d`.
    pub fn at(d: i64, l: i64) -> i64 {
        24 * d + l - 1
    }

    /// A measured hour of `litres` at gas temperature `temp`.
    pub fn hour(h: i64, litres: f64, temp: Option<f32>) -> Hour {
        Hour::new(t(h), litres / 1000.0, 1, temp, None)
    }

    /// The postcard size of a state, bytes.
    pub fn size<T: serde::Serialize>(v: &T) -> usize {
        postcard::to_allocvec(v).unwrap().len()
    }

    /// Serialises and reads back, asserting the state survives unchanged.
    pub fn round_trip<T>(v: &T)
    where
        T: serde::Serialize + for<'de> serde::Deserialize<'de> + PartialEq + std::fmt::Debug,
    {
        let bytes = postcard::to_allocvec(v).unwrap();
        let back: T = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(&back, v);
    }
}
