//! The detectors' "now": a watermark of event time that one meter cannot drag.
//!
//! The watermark is the latest clock hour that at least `quorum` readings have reached
//! (readings at or after that hour). A single meter with a clock running days ahead
//! therefore does not move it, while a fleet's normal pushes do, whatever their
//! order. It never goes backwards. Replaying history moves it exactly as living
//! through it did, which is what makes time-driven checks (silence, closing a
//! district's hour) reproducible.

use chrono::DateTime;
use leakwatch_core::Timestamp;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

const HOUR_S: i64 = 3600;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Watermark {
    /// Current watermark: start of a clock hour, Unix seconds.
    at: Option<i64>,
    /// Readings counted per clock hour beyond the watermark.
    ahead: BTreeMap<i64, u32>,
}

impl Watermark {
    pub fn get(&self) -> Option<Timestamp> {
        self.at.and_then(|s| DateTime::from_timestamp(s, 0))
    }

    /// Counts a reading at `t`; returns the new watermark when it moved.
    pub fn observe(&mut self, t: Timestamp, quorum: u32) -> Option<Timestamp> {
        let h = t.timestamp().div_euclid(HOUR_S) * HOUR_S;
        if self.at.is_some_and(|at| h <= at) {
            return None;
        }
        *self.ahead.entry(h).or_default() += 1;
        // Walk from the latest hour down: the first hour with `quorum` readings at or
        // after it is the new watermark.
        let mut seen = 0u32;
        let mut new_at = None;
        for (&hour, &n) in self.ahead.iter().rev() {
            seen += n;
            if seen >= quorum.max(1) {
                new_at = Some(hour);
                break;
            }
        }
        let new_at = new_at?;
        self.at = Some(new_at);
        self.ahead = self.ahead.split_off(&(new_at + 1));
        DateTime::from_timestamp(new_at, 0)
    }

    /// Moves the watermark to at least `t` (an explicit tick from outside).
    pub fn force(&mut self, t: Timestamp) -> bool {
        let h = t.timestamp().div_euclid(HOUR_S) * HOUR_S;
        if self.at.is_some_and(|at| h <= at) {
            return false;
        }
        self.at = Some(h);
        self.ahead = self.ahead.split_off(&(h + 1));
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeDelta, TimeZone, Utc};

    fn t(h: i64) -> Timestamp {
        Utc.with_ymd_and_hms(2026, 11, 1, 0, 0, 0).unwrap() + TimeDelta::hours(h)
    }

    #[test]
    fn one_meter_ahead_does_not_move_it() {
        let mut w = Watermark::default();
        for _ in 0..3 {
            w.observe(t(0), 3);
        }
        assert_eq!(w.get(), Some(t(0)));
        w.observe(t(100), 3);
        assert_eq!(w.get(), Some(t(0)));
        w.observe(t(5), 3);
        w.observe(t(5), 3);
        // Three readings at or after hour 5 (two at 5, one at 100).
        assert_eq!(w.get(), Some(t(5)));
        // Older readings never move it back.
        w.observe(t(1), 3);
        assert_eq!(w.get(), Some(t(5)));
    }
}
