//! The alert rules applied to a stream of findings, in memory: one open alert per
//! (subject, kind), repeats update its count and last-seen time, and an alert
//! resolves itself once its condition has not been seen for `resolve_after` (event
//! time, judged by its district's watermark at each of the engine's ticks: see
//! [`Book::record_all`], which makes the outcome independent of how the stream was
//! cut into calls).
//!
//! The service keeps the same rules in the store (`record_finding`,
//! `resolve_quiet_alerts`); replays and the scorer use this book, so both agree.

use chrono::TimeDelta;
use leakwatch_core::{
    AlertKind, DistrictId, Evidence, Finding, MeterId, Severity, Subject, Timestamp,
};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// An alert as the book keeps it (and as a replay writes it out).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BookAlert {
    pub id: u64,
    pub kind: AlertKind,
    pub severity: Severity,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub meter_id: Option<MeterId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub district_id: Option<DistrictId>,
    pub detected_at: Timestamp,
    pub last_seen: Timestamp,
    pub count: u64,
    /// Event time the alert resolved itself, if it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolved_at: Option<Timestamp>,
    pub evidence: Evidence,
}

#[derive(Debug, Default)]
pub struct Book {
    resolve_after: TimeDelta,
    alerts: Vec<BookAlert>,
    open: HashMap<(Subject, AlertKind), usize>,
}

/// What a finding did to the book.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recorded {
    New(u64),
    Repeat(u64),
}

impl Book {
    pub fn new(resolve_after: TimeDelta) -> Self {
        Self {
            resolve_after,
            ..Self::default()
        }
    }

    pub fn record(&mut self, f: &Finding) -> Recorded {
        let key = (f.subject(), f.kind);
        if let Some(&i) = self.open.get(&key) {
            let a = &mut self.alerts[i];
            a.count += 1;
            if f.detected_at > a.last_seen {
                a.last_seen = f.detected_at;
            }
            if f.severity > a.severity {
                a.severity = f.severity;
            }
            return Recorded::Repeat(a.id);
        }
        let id = self.alerts.len() as u64 + 1;
        self.open.insert(key, self.alerts.len());
        self.alerts.push(BookAlert {
            id,
            kind: f.kind,
            severity: f.severity,
            meter_id: f.meter_id.clone(),
            district_id: f.district_id.clone(),
            detected_at: f.detected_at,
            last_seen: f.detected_at,
            count: 1,
            resolved_at: None,
            evidence: f.evidence.clone(),
        });
        Recorded::New(id)
    }

    /// Records findings in order, resolving quiet alerts of a district at each of its
    /// watermark ticks, at the tick's place among the findings (what the engine
    /// pushed to `findings` since the last drain, with [`crate::Engine::take_ticks`]).
    /// Drains `findings`.
    pub fn record_all(&mut self, findings: &mut Vec<Finding>, ticks: &[crate::Tick]) {
        let mut ticks = ticks.iter().peekable();
        for (i, f) in findings.drain(..).enumerate() {
            while let Some(t) = ticks.next_if(|t| t.at <= i) {
                self.resolve_quiet_in(&t.district, t.watermark);
            }
            self.record(&f);
        }
        for t in ticks {
            self.resolve_quiet_in(&t.district, t.watermark);
        }
    }

    /// Resolves the open alerts of `district` not seen for `resolve_after` before
    /// `watermark` (that district's); returns how many.
    pub fn resolve_quiet_in(&mut self, district: &DistrictId, watermark: Timestamp) -> usize {
        let limit = watermark - self.resolve_after;
        let alerts = &mut self.alerts;
        let before = self.open.len();
        self.open.retain(|_, &mut i| {
            let a = &mut alerts[i];
            if a.district_id.as_ref() == Some(district) && a.last_seen < limit {
                a.resolved_at = Some(watermark);
                false
            } else {
                true
            }
        });
        before - self.open.len()
    }

    /// Resolves the open alerts (of any district) not seen for `resolve_after` before
    /// `watermark`; returns how many.
    pub fn resolve_quiet(&mut self, watermark: Timestamp) -> usize {
        let limit = watermark - self.resolve_after;
        let alerts = &mut self.alerts;
        let before = self.open.len();
        self.open.retain(|_, &mut i| {
            let a = &mut alerts[i];
            if a.last_seen < limit {
                a.resolved_at = Some(watermark);
                false
            } else {
                true
            }
        });
        before - self.open.len()
    }

    pub fn alerts(&self) -> &[BookAlert] {
        &self.alerts
    }

    pub fn into_alerts(self) -> Vec<BookAlert> {
        self.alerts
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeZone, Utc};

    fn finding(h: i64) -> Finding {
        let t = Utc.with_ymd_and_hms(2026, 11, 1, 0, 0, 0).unwrap() + TimeDelta::hours(h);
        Finding {
            kind: AlertKind::Tamper,
            severity: Severity::Warning,
            meter_id: Some(MeterId::parse("M1").unwrap()),
            district_id: None,
            detected_at: t,
            evidence: Evidence {
                rule: "r".into(),
                observed: 1.0,
                expected: None,
                threshold: 1.0,
                unit: "".into(),
                window_start: t,
                window_end: t,
                explanation: "x".into(),
                known: None,
            },
        }
    }

    #[test]
    fn repeats_merge_and_quiet_alerts_resolve() {
        let mut b = Book::new(TimeDelta::hours(72));
        assert_eq!(b.record(&finding(0)), Recorded::New(1));
        assert_eq!(b.record(&finding(10)), Recorded::Repeat(1));
        assert_eq!(b.resolve_quiet(finding(50).detected_at), 0);
        assert_eq!(b.resolve_quiet(finding(83).detected_at), 1);
        assert_eq!(b.alerts()[0].count, 2);
        assert_eq!(b.alerts()[0].resolved_at, Some(finding(83).detected_at));
        // The condition again: a new alert.
        assert_eq!(b.record(&finding(90)), Recorded::New(2));
    }
}
