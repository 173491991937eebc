//! Turns a meter's cumulative indexes into clock hours of consumption.
//!
//! Every detector of consumption works on whole clock hours `[h, h+1)`: the
//! consumption between two consecutive readings is spread evenly over the time
//! between them and summed per clock hour; an hour is emitted once a reading at or
//! after its end has arrived. Hourly readings on the hour (what meters send) give
//! exact hours; sub-hourly readings are summed; a gap spreads its consumption over the
//! hours it covers and says so in [`Hour::spread_h`], so a detector that needs hourly
//! resolution (a zero-flow hour, a night minimum) can skip what it cannot judge.
//!
//! A gap longer than the cap (`max_gap_h`) is spread over its latest `max_gap_h`
//! hours only, with the share of the consumption those hours cover; what lies before
//! is one unresolved gap ([`Step::Gap`]) that produces no hours, so a reading years
//! after the previous one costs at most the cap's work.
//!
//! Readings at or before the latest one (late, repeated) and readings whose index went
//! backwards do not produce hours: the former are stored elsewhere, the latter restart
//! the series from the new index (and are the integrity detector's business).

use chrono::{DurationRound, TimeDelta};
use leakwatch_core::Timestamp;
use serde::{Deserialize, Serialize};

/// One clock hour of a meter's consumption.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Hour {
    /// Start of the clock hour (UTC, on the hour).
    pub start: Timestamp,
    /// The same as Unix seconds.
    pub start_s: i64,
    /// End of the hour (`start` + 1 h): the event time a finding on it carries.
    pub end: Timestamp,
    /// Gas used in the hour, m³.
    pub m3: f64,
    /// 1 when the readings bracket this hour closely (at most an hour apart); `n` when
    /// the hour's consumption was spread from a gap of `n` hours between readings.
    pub spread_h: u32,
    /// Gas temperature reported with the reading that closed the hour, °C.
    pub temp: Option<f32>,
    /// Highest flow the meter reported for the interval, m³/h.
    pub flow_max: Option<f32>,
}

impl Hour {
    pub fn new(
        start: Timestamp,
        m3: f64,
        spread_h: u32,
        temp: Option<f32>,
        flow_max: Option<f32>,
    ) -> Hour {
        Hour {
            start,
            start_s: start.timestamp(),
            end: start + TimeDelta::hours(1),
            m3,
            spread_h,
            temp,
            flow_max,
        }
    }

    /// Whether the hour was measured (not spread from a longer gap).
    pub fn measured(&self) -> bool {
        self.spread_h <= 1
    }
}

/// What the series made of one reading.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Step {
    /// The first reading of the meter: nothing to compare with.
    First,
    /// At or before the latest reading: ignored.
    Late,
    /// The index went backwards by `by_m3`; the series restarts from this reading.
    Regression { by_m3: f64, previous: Timestamp },
    /// Accepted; zero or more hours were closed.
    Advanced,
    /// Accepted after a gap longer than the cap: the first `unresolved_h` hours of
    /// the gap produced no hours (one unresolved gap); the latest ones were closed.
    Gap { unresolved_h: u64 },
}

/// Per-meter state: the latest reading and the hour being filled. 40 bytes.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HourSeries {
    /// Latest reading: time (Unix seconds) and index (m³).
    last: Option<(i64, f64)>,
    /// Hour being filled: its start (Unix seconds), m³ so far, widest spread.
    open: Option<(i64, f64, u32)>,
}

const HOUR_S: i64 = 3600;

impl HourSeries {
    /// Time of the latest accepted reading.
    pub fn last_t(&self) -> Option<Timestamp> {
        self.last
            .and_then(|(t, _)| chrono::DateTime::from_timestamp(t, 0))
    }

    /// Time of the latest accepted reading, Unix seconds.
    pub fn last_s(&self) -> Option<i64> {
        self.last.map(|(t, _)| t)
    }

    /// Latest accepted index, m³.
    pub fn last_vol(&self) -> Option<f64> {
        self.last.map(|(_, v)| v)
    }

    /// Feeds one reading; closed hours are pushed to `out` in order. A gap from the
    /// previous reading longer than `max_gap_h` hours produces only its latest
    /// `max_gap_h` hours (at least one).
    pub fn push(
        &mut self,
        t: Timestamp,
        vol: f64,
        temp: Option<f64>,
        flow_max: Option<f64>,
        max_gap_h: u32,
        out: &mut Vec<Hour>,
    ) -> Step {
        let ts = t.timestamp();
        let Some((last_t, last_vol)) = self.last else {
            self.last = Some((ts, vol));
            self.open = Some((floor_hour(ts), 0.0, 1));
            return Step::First;
        };
        if ts <= last_t {
            return Step::Late;
        }
        if vol < last_vol {
            self.last = Some((ts, vol));
            self.open = Some((floor_hour(ts), 0.0, 1));
            return Step::Regression {
                by_m3: last_vol - vol,
                previous: chrono::DateTime::from_timestamp(last_t, 0).unwrap_or(t),
            };
        }
        let used = vol - last_vol;
        let span = (ts - last_t) as f64;
        let gap_h = ((ts - last_t + HOUR_S - 1) / HOUR_S).max(1);
        let spread = gap_h.min(i64::from(u32::MAX)) as u32;
        let (mut h_start, mut acc, mut widest) = self.open.unwrap_or((floor_hour(last_t), 0.0, 1));
        let mut cursor = last_t;
        let cap = i64::from(max_gap_h.max(1));
        let mut unresolved = None;
        if (floor_hour(ts) - h_start) / HOUR_S > cap {
            // Only the latest `cap` whole hours before the reading's hour are spread;
            // the open hour and everything before are dropped as one unresolved gap.
            let from = floor_hour(ts) - cap * HOUR_S;
            unresolved = Some(((from - h_start) / HOUR_S) as u64);
            h_start = from;
            acc = 0.0;
            widest = 1;
            cursor = from;
        }
        while cursor < ts {
            let h_end = h_start + HOUR_S;
            let piece_end = h_end.min(ts);
            acc += used * (piece_end - cursor) as f64 / span;
            widest = widest.max(spread);
            cursor = piece_end;
            if piece_end == h_end {
                let start = chrono::DateTime::from_timestamp(h_start, 0).unwrap_or(t);
                out.push(Hour {
                    start,
                    start_s: h_start,
                    end: start + TimeDelta::hours(1),
                    m3: acc,
                    spread_h: widest,
                    temp: temp.map(|x| x as f32),
                    flow_max: flow_max.map(|x| x as f32),
                });
                h_start = h_end;
                acc = 0.0;
                widest = 1;
            }
        }
        self.open = Some((h_start, acc, widest));
        self.last = Some((ts, vol));
        match unresolved {
            Some(unresolved_h) => Step::Gap { unresolved_h },
            None => Step::Advanced,
        }
    }
}

fn floor_hour(ts: i64) -> i64 {
    ts.div_euclid(HOUR_S) * HOUR_S
}

/// The clock hour a time falls in.
pub fn hour_of(t: Timestamp) -> Timestamp {
    t.duration_trunc(TimeDelta::hours(1)).unwrap_or(t)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeZone, Utc};

    fn t(h: i64, m: i64) -> Timestamp {
        Utc.with_ymd_and_hms(2026, 11, 1, 0, 0, 0).unwrap()
            + TimeDelta::hours(h)
            + TimeDelta::minutes(m)
    }

    fn feed(s: &mut HourSeries, pts: &[(i64, i64, f64)]) -> Vec<Hour> {
        let mut out = vec![];
        for (h, m, v) in pts {
            s.push(t(*h, *m), *v, None, None, 336, &mut out);
        }
        out
    }

    #[test]
    fn hourly_readings_give_exact_hours() {
        let mut s = HourSeries::default();
        let hours = feed(
            &mut s,
            &[(0, 0, 1.0), (1, 0, 1.2), (2, 0, 1.2), (3, 0, 1.5)],
        );
        assert_eq!(hours.len(), 3);
        assert_eq!(hours[0].start, t(0, 0));
        assert!((hours[0].m3 - 0.2).abs() < 1e-9);
        assert_eq!(hours[1].m3, 0.0);
        assert!((hours[2].m3 - 0.3).abs() < 1e-9);
        assert!(hours.iter().all(Hour::measured));
    }

    #[test]
    fn quarter_hours_are_summed_and_gaps_spread() {
        let mut s = HourSeries::default();
        let hours = feed(
            &mut s,
            &[
                (0, 0, 0.0),
                (0, 15, 0.1),
                (0, 30, 0.2),
                (0, 45, 0.3),
                (1, 0, 0.4),
                (4, 0, 1.0),
            ],
        );
        assert_eq!(hours.len(), 4);
        assert!((hours[0].m3 - 0.4).abs() < 1e-9);
        assert!(hours[0].measured());
        for h in &hours[1..] {
            assert!((h.m3 - 0.2).abs() < 1e-9);
            assert_eq!(h.spread_h, 3);
        }
    }

    #[test]
    fn late_readings_are_ignored_and_regressions_restart() {
        let mut s = HourSeries::default();
        let mut out = vec![];
        assert_eq!(s.push(t(0, 0), 5.0, None, None, 336, &mut out), Step::First);
        assert_eq!(
            s.push(t(1, 0), 5.1, None, None, 336, &mut out),
            Step::Advanced
        );
        assert_eq!(
            s.push(t(0, 30), 5.05, None, None, 336, &mut out),
            Step::Late
        );
        match s.push(t(2, 0), 4.0, None, None, 336, &mut out) {
            Step::Regression { by_m3, previous } => {
                assert!((by_m3 - 1.1).abs() < 1e-9);
                assert_eq!(previous, t(1, 0));
            }
            other => panic!("{other:?}"),
        }
        out.clear();
        s.push(t(3, 0), 4.1, None, None, 336, &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].start, t(2, 0));
    }

    #[test]
    fn a_gap_of_years_expands_to_the_cap_only() {
        let mut s = HourSeries::default();
        let mut out = vec![];
        let old = Utc.with_ymd_and_hms(1970, 1, 1, 0, 0, 0).unwrap();
        assert_eq!(s.push(old, 10.0, None, None, 100, &mut out), Step::First);
        let step = s.push(t(0, 0), 20.0, None, None, 100, &mut out);
        // Exactly the cap's hours, the latest ones before the reading, each with its
        // share of the consumption; the rest is one unresolved gap.
        assert_eq!(out.len(), 100);
        assert_eq!(out.last().unwrap().start, t(-1, 0));
        assert_eq!(out[0].start, t(-100, 0));
        let hours_since = (t(0, 0) - old).num_hours();
        assert_eq!(
            step,
            Step::Gap {
                unresolved_h: (hours_since - 100) as u64
            }
        );
        let share = 10.0 * 3600.0 / (t(0, 0) - old).num_seconds() as f64;
        assert!((out[0].m3 - share).abs() < 1e-12);
        assert!(out.iter().all(|h| !h.measured()));
        // The series goes on normally afterwards.
        out.clear();
        s.push(t(1, 0), 20.5, None, None, 100, &mut out);
        assert_eq!(out.len(), 1);
        assert!((out[0].m3 - 0.5).abs() < 1e-9);
    }

    #[test]
    fn off_hour_readings_split_across_hours() {
        let mut s = HourSeries::default();
        let hours = feed(&mut s, &[(0, 30, 0.0), (1, 30, 1.0)]);
        // Only [0:30, 1:00) of hour 0 is known: the hour closes with half the use.
        assert_eq!(hours.len(), 1);
        assert!((hours[0].m3 - 0.5).abs() < 1e-9);
    }
}
