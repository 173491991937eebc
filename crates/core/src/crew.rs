//! Field crews.

use crate::{CrewId, GeoPoint, Timestamp, WeeklyShifts};
use serde::{Deserialize, Serialize};

/// A crew as the registry knows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Crew {
    pub id: CrewId,
    pub name: String,
    /// e.g. `emergency`, `repair`, `meter`.
    #[serde(default)]
    pub skills: Vec<String>,
    /// Where the crew's shift starts (the crew starts from home).
    pub home: GeoPoint,
    /// Last known position, from the field app or MQTT `crews/{id}/location`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub position: Option<GeoPoint>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub position_at: Option<Timestamp>,
    /// Where the crew's last job was (set when it gets on site).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_job_place: Option<GeoPoint>,
    /// The crew's weekly calendar; when present it decides whether the crew is on
    /// shift, otherwise `on_shift` (set by hand) does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shifts: Option<WeeklyShifts>,
    #[serde(default)]
    pub on_shift: bool,
}

/// A crew's availability, derived from its shift and its active work orders.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CrewStatus {
    OffShift,
    Available,
    Busy,
}

impl CrewStatus {
    pub fn derive(on_shift: bool, active_orders: i64) -> CrewStatus {
        match (on_shift, active_orders) {
            (false, _) => CrewStatus::OffShift,
            (true, 0) => CrewStatus::Available,
            (true, _) => CrewStatus::Busy,
        }
    }
}

/// Where a crew's believed position comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PositionSource {
    /// A position reported less than the configured age ago.
    Reported,
    /// The place of the crew's last job (the reported position is too old or absent).
    LastJob,
    /// The home base, where the shift starts.
    Home,
}

/// How far ahead of the server a reported position may be stamped, minutes.
pub const MAX_FIX_AHEAD_MIN: i64 = 5;

/// A position a crew's device reports (field app or MQTT `crews/{id}/location`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PositionReport {
    pub lat: f64,
    pub lon: f64,
    /// When the fix was taken; the time of arrival when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub t: Option<Timestamp>,
}

/// Why a reported position cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PositionError {
    #[error("{0}")]
    BadPlace(String),
    #[error("t {0} is more than {MAX_FIX_AHEAD_MIN} minutes ahead of the server")]
    InFuture(Timestamp),
}

impl PositionError {
    /// The dead-letter reason.
    pub fn reason(&self) -> &'static str {
        match self {
            PositionError::BadPlace(_) => "bad_location",
            PositionError::InFuture(_) => "t_in_future",
        }
    }
}

impl PositionReport {
    /// The place and time of the fix, received at `now`.
    pub fn check(&self, now: Timestamp) -> Result<(GeoPoint, Timestamp), PositionError> {
        let at = GeoPoint::new(self.lat, self.lon).map_err(PositionError::BadPlace)?;
        let t = self.t.unwrap_or(now);
        if t > now + chrono::Duration::minutes(MAX_FIX_AHEAD_MIN) {
            return Err(PositionError::InFuture(t));
        }
        Ok((at, t))
    }
}

impl Crew {
    /// Whether the crew is on shift at `now`: its calendar when it has one, else the
    /// `on_shift` flag.
    pub fn on_shift_at(&self, now: Timestamp) -> bool {
        match &self.shifts {
            Some(s) => s.on_shift(now),
            None => self.on_shift,
        }
    }

    /// Where the crew is best believed to be at `now`: a reported position no older
    /// than `max_age`, else its last job's place, else its home base.
    pub fn believed_position(
        &self,
        now: Timestamp,
        max_age: chrono::Duration,
    ) -> (GeoPoint, PositionSource) {
        match (self.position, self.position_at) {
            (Some(p), Some(at)) if now - at <= max_age && at <= now + max_age => {
                (p, PositionSource::Reported)
            }
            _ => match self.last_job_place {
                Some(p) => (p, PositionSource::LastJob),
                None => (self.home, PositionSource::Home),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{Duration, TimeZone, Utc, Weekday};

    fn crew() -> Crew {
        Crew {
            id: CrewId::parse("C1").unwrap(),
            name: "C1".into(),
            skills: vec!["emergency".into()],
            home: GeoPoint::new(43.0, 11.0).unwrap(),
            position: None,
            position_at: None,
            last_job_place: None,
            shifts: None,
            on_shift: false,
        }
    }

    #[test]
    fn a_stale_position_falls_back_to_the_last_job_then_home() {
        let now = Utc.with_ymd_and_hms(2026, 11, 26, 10, 0, 0).unwrap();
        let max = Duration::minutes(15);
        let mut c = crew();
        assert_eq!(
            c.believed_position(now, max),
            (c.home, PositionSource::Home)
        );
        let p = GeoPoint::new(43.1, 11.1).unwrap();
        c.position = Some(p);
        c.position_at = Some(now - Duration::minutes(10));
        assert_eq!(c.believed_position(now, max), (p, PositionSource::Reported));
        c.position_at = Some(now - Duration::minutes(16));
        assert_eq!(
            c.believed_position(now, max),
            (c.home, PositionSource::Home)
        );
        let job = GeoPoint::new(43.2, 11.2).unwrap();
        c.last_job_place = Some(job);
        assert_eq!(
            c.believed_position(now, max),
            (job, PositionSource::LastJob)
        );
    }

    #[test]
    fn the_calendar_decides_when_there_is_one() {
        let mut c = crew();
        c.on_shift = true;
        // Thursday 2026-11-26, 08:00-16:00 local at +1.
        c.shifts = Some(WeeklyShifts::new(1).with_shifts(&[Weekday::Thu], &[(480, 960)]));
        let at = |h| Utc.with_ymd_and_hms(2026, 11, 26, h, 0, 0).unwrap();
        assert!(!c.on_shift_at(at(6)));
        assert!(c.on_shift_at(at(7)));
        assert!(!c.on_shift_at(at(15)));
        c.shifts = None;
        assert!(c.on_shift_at(at(6)));
    }
}
