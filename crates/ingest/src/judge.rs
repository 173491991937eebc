//! Rules the decoder cannot apply because they need the registry, the meter's latest
//! stored reading, or the time of receipt. Pure: the writer passes everything in.
//!
//! For each reading of a message, in time order:
//! - more than `max_future` after receipt: rejected, `t_in_future`;
//! - more than `before_installation` before the meter's installation: rejected,
//!   `t_before_installation`;
//! - for a meter without an installation date, more than `before_registration` before
//!   the registry first knew it: rejected, `t_before_registration` (a generous bound by
//!   default, so back-filled history is kept, while a reading from 1970 is not);
//! - older than the meter's latest reading: stored, flagged `late` (the detectors get
//!   it too; event-time detectors skip readings older than what they have seen);
//! - a lower index than the latest: stored, flagged `counter_regression`;
//! - more consumption than the meter's capacity allows for the interval: stored,
//!   flagged `jump`.
//!
//! Repeats of (meter, t) are the store's business (duplicate or conflict).

use chrono::Duration;
use leakwatch_core::{Meter, MeterKind, Reading, ReadingFlags, Timestamp};

/// A reading refused by a rule, with the stable reason code.
#[derive(Debug, Clone, PartialEq)]
pub struct Refusal {
    pub reason: &'static str,
    pub detail: String,
}

/// Settings for the rules.
#[derive(Debug, Clone, Copy)]
pub struct Rules {
    /// How far after receipt a measurement time may be (clock drift allowance).
    pub max_future: Duration,
    /// Capacity assumed for customer meters without a rated `max_flow_m3h`.
    pub default_customer_max_flow_m3h: f64,
    /// How far before the meter's installation a measurement time may be.
    pub before_installation: Duration,
    /// For meters without an installation date: how far before their registration.
    pub before_registration: Duration,
}

/// Judges one reading against the meter (with the time the registry first knew it,
/// when known) and its latest accepted reading `(t, vol)`, which it advances when the
/// reading is newer.
pub fn judge(
    rules: &Rules,
    meter: &Meter,
    registered_at: Option<Timestamp>,
    latest: &mut Option<(Timestamp, f64)>,
    r: &Reading,
    received_at: Timestamp,
) -> Result<ReadingFlags, Refusal> {
    if r.t > received_at + rules.max_future {
        return Err(Refusal {
            reason: "t_in_future",
            detail: format!(
                "t {} is more than {} min after receipt at {}",
                r.t.to_rfc3339(),
                rules.max_future.num_minutes(),
                received_at.to_rfc3339()
            ),
        });
    }
    match (meter.installed_at, registered_at) {
        (Some(installed), _) if r.t < installed - rules.before_installation => {
            return Err(Refusal {
                reason: "t_before_installation",
                detail: format!(
                    "t {} is more than {} days before the meter's installation at {}",
                    r.t.to_rfc3339(),
                    rules.before_installation.num_days(),
                    installed.to_rfc3339()
                ),
            });
        }
        (None, Some(registered)) if r.t < registered - rules.before_registration => {
            return Err(Refusal {
                reason: "t_before_registration",
                detail: format!(
                    "t {} is more than {} days before the meter's registration at {} \
                     (and the registry has no installation date)",
                    r.t.to_rfc3339(),
                    rules.before_registration.num_days(),
                    registered.to_rfc3339()
                ),
            });
        }
        _ => {}
    }
    let mut flags = 0u16;
    match *latest {
        None => *latest = Some((r.t, r.vol)),
        Some((lt, _)) if r.t < lt => flags |= ReadingFlags::LATE,
        Some((lt, _)) if r.t == lt => {}
        Some((lt, lv)) => {
            if r.vol < lv - 1e-9 {
                flags |= ReadingFlags::COUNTER_REGRESSION;
            } else if let Some(cap) = capacity(rules, meter) {
                let hours = (r.t - lt).num_milliseconds() as f64 / 3_600_000.0;
                // One litre of slack for the meter's resolution.
                if r.vol - lv > cap * hours + 0.001 {
                    flags |= ReadingFlags::JUMP;
                }
            }
            *latest = Some((r.t, r.vol));
        }
    }
    Ok(ReadingFlags(flags))
}

fn capacity(rules: &Rules, meter: &Meter) -> Option<f64> {
    meter.max_flow_m3h.or(match meter.kind {
        MeterKind::Customer => Some(rules.default_customer_max_flow_m3h),
        MeterKind::Station | MeterKind::Pressure => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeZone, Utc};
    use leakwatch_core::{DistrictId, GeoPoint, MeterId, MeterStatus};

    fn meter() -> Meter {
        Meter {
            id: MeterId::parse("M1").unwrap(),
            district: DistrictId::parse("D1").unwrap(),
            kind: MeterKind::Customer,
            location: GeoPoint { lat: 0.0, lon: 0.0 },
            report_every_h: 24,
            status: MeterStatus::Active,
            installed_at: Some(Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap()),
            max_flow_m3h: Some(6.0),
        }
    }

    fn at(h: u32) -> Timestamp {
        Utc.with_ymd_and_hms(2026, 11, 20, h, 0, 0).unwrap()
    }

    fn reading(h: u32, vol: f64) -> Reading {
        Reading {
            meter: MeterId::parse("M1").unwrap(),
            t: at(h),
            vol,
            temp: None,
            flow_max: None,
            pressure: None,
        }
    }

    const RULES: Rules = Rules {
        max_future: Duration::hours(1),
        default_customer_max_flow_m3h: 10.0,
        before_installation: Duration::zero(),
        before_registration: Duration::days(3650),
    };

    #[test]
    fn flags_and_refusals() {
        let m = meter();
        let now = at(20);
        let mut latest = None;
        assert_eq!(
            judge(&RULES, &m, None, &mut latest, &reading(10, 5.0), now),
            Ok(ReadingFlags(0))
        );
        assert_eq!(
            judge(&RULES, &m, None, &mut latest, &reading(11, 5.5), now),
            Ok(ReadingFlags(0))
        );
        // Late: older than the latest.
        assert_eq!(
            judge(&RULES, &m, None, &mut latest, &reading(9, 4.0), now),
            Ok(ReadingFlags(ReadingFlags::LATE))
        );
        // Going backwards.
        assert_eq!(
            judge(&RULES, &m, None, &mut latest, &reading(12, 5.0), now),
            Ok(ReadingFlags(ReadingFlags::COUNTER_REGRESSION))
        );
        // 20 m3 in one hour on a 6 m3/h meter.
        assert_eq!(
            judge(&RULES, &m, None, &mut latest, &reading(13, 25.0), now),
            Ok(ReadingFlags(ReadingFlags::JUMP))
        );
        // 6 m3 in one hour is within capacity.
        assert_eq!(
            judge(&RULES, &m, None, &mut latest, &reading(14, 31.0), now),
            Ok(ReadingFlags(0))
        );
        assert_eq!(latest, Some((at(14), 31.0)));
    }

    #[test]
    fn future_and_pre_installation_times_are_refused() {
        let m = meter();
        let mut latest = None;
        let now = at(10);
        let e = judge(&RULES, &m, None, &mut latest, &reading(12, 1.0), now).unwrap_err();
        assert_eq!(e.reason, "t_in_future");
        assert!(judge(&RULES, &m, None, &mut latest, &reading(11, 1.0), now).is_ok());
        let mut old = reading(1, 1.0);
        old.t = Utc.with_ymd_and_hms(2025, 6, 1, 0, 0, 0).unwrap();
        let e = judge(&RULES, &m, None, &mut latest, &old, now).unwrap_err();
        assert_eq!(e.reason, "t_before_installation");
    }

    #[test]
    fn a_1970_reading_is_refused_by_installation_or_registration() {
        let now = at(10);
        let mut r = reading(1, 1.0);
        r.t = chrono::DateTime::UNIX_EPOCH;
        // Installed this year: before installation.
        let e = judge(&RULES, &meter(), None, &mut None, &r, now).unwrap_err();
        assert_eq!(e.reason, "t_before_installation");
        // No installation date, registered this year: ten years back is the limit.
        let mut m = meter();
        m.installed_at = None;
        let registered = Some(Utc.with_ymd_and_hms(2026, 3, 1, 0, 0, 0).unwrap());
        let e = judge(&RULES, &m, registered, &mut None, &r, now).unwrap_err();
        assert_eq!(e.reason, "t_before_registration");
        assert!(e.detail.contains("3650 days"), "{}", e.detail);
        // Back-filled history of a few years is kept ...
        let mut old = reading(1, 1.0);
        old.t = Utc.with_ymd_and_hms(2019, 1, 1, 0, 0, 0).unwrap();
        assert!(judge(&RULES, &m, registered, &mut None, &old, now).is_ok());
        // ... and with neither date nothing bounds the past.
        assert!(judge(&RULES, &m, None, &mut None, &r, now).is_ok());
    }

    #[test]
    fn the_installation_horizon_is_configurable() {
        let rules = Rules {
            before_installation: Duration::days(30),
            ..RULES
        };
        let mut r = reading(1, 1.0);
        r.t = Utc.with_ymd_and_hms(2025, 12, 15, 0, 0, 0).unwrap();
        assert!(judge(&rules, &meter(), None, &mut None, &r, at(10)).is_ok());
        r.t = Utc.with_ymd_and_hms(2025, 11, 15, 0, 0, 0).unwrap();
        let e = judge(&rules, &meter(), None, &mut None, &r, at(10)).unwrap_err();
        assert_eq!(e.reason, "t_before_installation");
    }
}
