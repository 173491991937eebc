//! Pressure drop: a pressure point whose pressure stays below its usual level for the
//! time of day.
//!
//! Network pressure follows demand (it sags at the morning and evening peaks), so the
//! baseline is kept per 3-hour bucket of local time: an exponentially weighted mean
//! and variance of the readings' `pressure` (kPa). A bucket is judged once it has
//! `min_samples` readings. A reading is *low* when it is below the bucket's mean by
//! more than `max(k_sigma × σ, floor_kpa, floor_fraction × mean)`; low readings are not
//! learned (a leak's pressure is not the new normal). `consecutive` low readings in a
//! row raise a `PressureDrop` warning, repeated at most every `repeat_h` hours of event
//! time while the readings stay low.
//!
//! The finding's subject is the pressure point (`meter_id` set, `district_id` its
//! district): a district may have several points, and the one that dropped says where
//! to look.

use crate::{MeterCtx, local_hour};
use leakwatch_core::{AlertKind, Evidence, Finding, Reading, Severity};
use serde::{Deserialize, Serialize};

/// Buckets of local time (3 hours each).
const BUCKETS: usize = 8;

/// Settings of the pressure-drop detector.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PressureConfig {
    /// Weight of a new reading in its bucket's mean and variance (default 0.02: with
    /// hourly readings, about two weeks of memory).
    pub alpha: f64,
    /// Readings a bucket needs before it is judged (default 24: eight days of hourly
    /// readings, two of quarter-hourly ones).
    pub min_samples: u32,
    /// Drop, in the bucket's σ, beyond which a reading is low (default 4).
    pub k_sigma: f64,
    /// Smallest drop that counts, kPa (default 0.2 = 2 mbar, for low-pressure networks
    /// at about 2 kPa) ...
    pub floor_kpa: f64,
    /// ... and as a share of the usual pressure (default 0.05).
    pub floor_fraction: f64,
    /// Low readings in a row for an alert (default 3).
    pub consecutive: u32,
    /// While readings stay low, the finding is repeated this often, hours (default 6).
    pub repeat_h: u32,
}

impl Default for PressureConfig {
    fn default() -> Self {
        Self {
            alpha: 0.02,
            min_samples: 24,
            k_sigma: 4.0,
            floor_kpa: 0.2,
            floor_fraction: 0.05,
            consecutive: 3,
            repeat_h: 6,
        }
    }
}

/// Per pressure point: the baseline by time of day and the current run of low readings.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PressureDrop {
    mean: [f32; BUCKETS],
    var: [f32; BUCKETS],
    n: [u16; BUCKETS],
    /// Time of the latest reading judged (Unix seconds): older ones are ignored.
    last_t: Option<i64>,
    /// Low readings in a row, the first one's time and the lowest pressure.
    low: u16,
    low_since: Option<i64>,
    lowest: f32,
    /// When the finding was last emitted (Unix seconds).
    emitted: Option<i64>,
}

impl PressureDrop {
    pub fn on_reading(
        &mut self,
        cfg: &PressureConfig,
        ctx: &MeterCtx<'_>,
        r: &Reading,
        out: &mut Vec<Finding>,
    ) {
        let Some(p) = r.pressure.filter(|p| p.is_finite()) else {
            return;
        };
        let t = r.t.timestamp();
        if self.last_t.is_some_and(|last| t <= last) {
            return;
        }
        self.last_t = Some(t);
        let b = (local_hour(r.t, ctx.local_utc_offset_h) / 3) as usize % BUCKETS;
        if u32::from(self.n[b]) < cfg.min_samples.max(2) {
            self.learn(cfg, b, p);
            return;
        }
        let mean = f64::from(self.mean[b]);
        let sigma = f64::from(self.var[b]).max(0.0).sqrt();
        let margin = (cfg.k_sigma * sigma)
            .max(cfg.floor_kpa)
            .max(cfg.floor_fraction * mean.abs());
        let threshold = mean - margin;
        if p >= threshold {
            self.low = 0;
            self.low_since = None;
            self.learn(cfg, b, p);
            return;
        }
        self.low = self.low.saturating_add(1);
        let since = *self.low_since.get_or_insert(t);
        self.lowest = if self.low == 1 {
            p as f32
        } else {
            self.lowest.min(p as f32)
        };
        if u32::from(self.low) < cfg.consecutive.max(1)
            || self
                .emitted
                .is_some_and(|e| t - e < i64::from(cfg.repeat_h.max(1)) * 3600)
        {
            return;
        }
        self.emitted = Some(t);
        let round = |x: f64| (x * 1000.0).round() / 1000.0;
        out.push(Finding {
            kind: AlertKind::PressureDrop,
            severity: Severity::Warning,
            meter_id: Some(ctx.id.clone()),
            district_id: Some(ctx.district.clone()),
            detected_at: r.t,
            evidence: Evidence {
                rule: format!(
                    "{} readings in a row below the usual pressure for the time of day by \
                     more than max({} σ, {} kPa, {} %)",
                    cfg.consecutive,
                    cfg.k_sigma,
                    cfg.floor_kpa,
                    cfg.floor_fraction * 100.0
                ),
                observed: round(p),
                expected: Some(round(mean)),
                threshold: round(threshold),
                unit: "kPa".into(),
                window_start: crate::ts(since),
                window_end: r.t,
                explanation: format!(
                    "Pressure {p:.2} kPa ({} readings low in a row, lowest {:.2} kPa), \
                     against {mean:.2} kPa usual at this time of day (σ {sigma:.2} kPa): \
                     {:.2} kPa below, more than the {margin:.2} kPa allowed.",
                    self.low,
                    self.lowest,
                    mean - p
                ),
                known: None,
            },
        });
    }

    fn learn(&mut self, cfg: &PressureConfig, b: usize, p: f64) {
        self.n[b] = self.n[b].saturating_add(1);
        let a = (1.0 / f64::from(self.n[b])).max(cfg.alpha.clamp(0.0, 1.0));
        let mean = f64::from(self.mean[b]);
        let d = p - mean;
        self.mean[b] = (mean + a * d) as f32;
        self.var[b] = ((1.0 - a) * (f64::from(self.var[b]) + a * d * d)) as f32;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeDelta, TimeZone, Utc};
    use leakwatch_core::{DistrictId, MeterId, MeterKind};

    struct Noise(u64);

    impl Noise {
        /// Roughly normal (sum of four uniforms), σ 1.
        fn next(&mut self) -> f64 {
            let mut s = 0.0;
            for _ in 0..4 {
                self.0 = self
                    .0
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                s += (self.0 >> 11) as f64 / (1u64 << 53) as f64;
            }
            (s - 2.0) * 3f64.sqrt()
        }
    }

    /// Hourly readings of a 200 kPa point that sags 6 kPa at the demand peaks, with
    /// σ 0.6 kPa of noise; `drop(h)` is subtracted.
    fn run(hours: i64, drop: impl Fn(i64) -> f64) -> Vec<Finding> {
        let id = MeterId::parse("P-D1-01").unwrap();
        let district = DistrictId::parse("D1").unwrap();
        let ctx = MeterCtx {
            id: &id,
            district: &district,
            kind: MeterKind::Pressure,
            report_every_h: 1,
            max_flow_m3h: None,
            local_utc_offset_h: 1,
        };
        let cfg = PressureConfig::default();
        let mut d = PressureDrop::default();
        let mut noise = Noise(42);
        let mut out = vec![];
        let t0 = Utc.with_ymd_and_hms(2026, 11, 1, 0, 0, 0).unwrap();
        for h in 0..hours {
            let lh = (h + 1) % 24;
            let sag = if (6..9).contains(&lh) || (18..22).contains(&lh) {
                6.0
            } else {
                0.0
            };
            let r = Reading {
                meter: id.clone(),
                t: t0 + TimeDelta::hours(h),
                vol: 0.0,
                temp: None,
                flow_max: None,
                pressure: Some(200.0 - sag + 0.6 * noise.next() - drop(h)),
            };
            d.on_reading(&cfg, &ctx, &r, &mut out);
            // Late readings are ignored.
            d.on_reading(&cfg, &ctx, &r, &mut out);
        }
        let bytes = postcard::to_allocvec(&d).unwrap();
        println!("pressure state: {} bytes", bytes.len());
        assert!(bytes.len() < 200, "{} bytes", bytes.len());
        assert_eq!(postcard::from_bytes::<PressureDrop>(&bytes).unwrap(), d);
        out
    }

    #[test]
    fn normal_pressure_and_single_dips_raise_nothing() {
        // 60 days, plus a 15 kPa dip of two readings on day 20.
        let out = run(
            60 * 24,
            |h| if (480..482).contains(&h) { 15.0 } else { 0.0 },
        );
        assert!(out.is_empty(), "{out:#?}");
    }

    #[test]
    fn a_sustained_drop_is_found_and_repeated() {
        let start = 20 * 24 + 3;
        let out = run(24 * 24, |h| if h >= start { 15.0 } else { 0.0 });
        let first = out.first().expect("a finding");
        assert_eq!(first.kind, AlertKind::PressureDrop);
        assert_eq!(first.meter_id.as_ref().unwrap().as_str(), "P-D1-01");
        let t0 = Utc.with_ymd_and_hms(2026, 11, 1, 0, 0, 0).unwrap();
        // The third low reading.
        assert_eq!(first.detected_at, t0 + TimeDelta::hours(start + 2));
        assert_eq!(first.evidence.window_start, t0 + TimeDelta::hours(start));
        assert!(first.evidence.observed < first.evidence.threshold);
        assert_eq!(first.evidence.unit, "kPa");
        // Repeated every 6 h while it lasts: 4 days.
        assert!((14..=17).contains(&out.len()), "{}", out.len());
    }
}
