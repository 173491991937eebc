//! Crew shifts: a weekly calendar with exceptions, and deadline arithmetic in
//! working (on-shift) time.
//!
//! Times of day are minutes after local midnight, in a **fixed** offset from UTC
//! (`utc_offset_h`, like the detectors' `local_utc_offset_h`). Daylight saving time
//! is not followed: a crew on `+1` working 08:00–17:00 works 07:00–16:00 UTC all year,
//! also in summer (when Italian clocks read 09:00–18:00). A deployment that wants
//! summer hours changes the offset (or the calendar) itself.
//!
//! Intervals are half-open, `[start, end)`, with `0 <= start < end <= 1440`.
//! **Overnight shifts are split by the caller**: 22:00–06:00 from Friday to Saturday
//! is `(1320, 1440)` on Friday and `(0, 360)` on Saturday. Periods that touch (an end
//! at 1440 followed by a start at 0 the next day, or one interval ending where the
//! next begins) are joined into one shift, so the crew is on shift at midnight and
//! 00:00 is not a shift start. An exception replaces its whole local day, so an
//! overnight shift running into a day off loses its morning part unless the
//! exception repeats it.

use crate::Timestamp;
use chrono::{Datelike, Duration, NaiveDate, NaiveTime, Weekday};
use serde::{Deserialize, Serialize};
use std::collections::HashSet;

/// Minutes in a day: an interval may end there.
pub const DAY_MINUTES: u32 = 1440;

/// How far [`WeeklyShifts::next_shift_start`] looks ahead.
pub const NEXT_SHIFT_HORIZON_DAYS: i64 = 14;

/// How far [`WeeklyShifts::add_working_time`] looks ahead.
pub const WORKING_TIME_HORIZON_DAYS: i64 = 60;

/// One local day that does not follow the weekly calendar.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShiftException {
    /// The local date it replaces.
    pub date: NaiveDate,
    /// The day's shifts, `(start_minute, end_minute)`; empty = day off.
    #[serde(default)]
    pub intervals: Vec<(u32, u32)>,
}

/// A crew's working calendar.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WeeklyShifts {
    /// Fixed offset of local time from UTC, in hours (no DST).
    pub utc_offset_h: i32,
    /// Shifts per weekday, Monday first, as `(start_minute, end_minute)`.
    pub days: [Vec<(u32, u32)>; 7],
    /// Days that replace the weekly calendar (holidays, extra shifts).
    #[serde(default)]
    pub exceptions: Vec<ShiftException>,
}

impl WeeklyShifts {
    /// A calendar without any shift.
    pub fn new(utc_offset_h: i32) -> Self {
        WeeklyShifts {
            utc_offset_h,
            ..Default::default()
        }
    }

    /// Sets the shifts of each of `days` to `intervals`.
    pub fn with_shifts(mut self, days: &[Weekday], intervals: &[(u32, u32)]) -> Self {
        for d in days {
            self.days[d.num_days_from_monday() as usize] = intervals.to_vec();
        }
        self
    }

    /// Adds an exception replacing `date` (empty `intervals` = day off).
    pub fn with_exception(mut self, date: NaiveDate, intervals: &[(u32, u32)]) -> Self {
        self.exceptions.push(ShiftException {
            date,
            intervals: intervals.to_vec(),
        });
        self
    }

    /// Checks the calendar: offset within -12..=14 h, every interval with
    /// `start < end <= 1440`, no overlaps within a day, one exception per date.
    pub fn validate(&self) -> Result<(), String> {
        if !(-12..=14).contains(&self.utc_offset_h) {
            return Err(format!(
                "UTC offset {} h is outside -12..=14",
                self.utc_offset_h
            ));
        }
        const NAMES: [&str; 7] = [
            "Monday",
            "Tuesday",
            "Wednesday",
            "Thursday",
            "Friday",
            "Saturday",
            "Sunday",
        ];
        for (name, intervals) in NAMES.iter().zip(&self.days) {
            check_day(intervals).map_err(|e| format!("{name}: {e}"))?;
        }
        let mut dates = HashSet::new();
        for ex in &self.exceptions {
            if !dates.insert(ex.date) {
                return Err(format!("two exceptions for {}", ex.date));
            }
            check_day(&ex.intervals).map_err(|e| format!("{}: {e}", ex.date))?;
        }
        Ok(())
    }

    /// The shifts of a local date, sorted: its exception if it has one, else its
    /// weekday's. Invalid intervals (empty, or ending after 1440) are dropped.
    pub fn intervals_on(&self, date: NaiveDate) -> Vec<(u32, u32)> {
        let raw = match self.exceptions.iter().find(|e| e.date == date) {
            Some(ex) => &ex.intervals,
            None => &self.days[date.weekday().num_days_from_monday() as usize],
        };
        let mut v: Vec<_> = raw
            .iter()
            .copied()
            .filter(|&(s, e)| s < e && e <= DAY_MINUTES)
            .collect();
        v.sort_unstable();
        v
    }

    /// Whether `t` falls within a shift.
    pub fn on_shift(&self, t: Timestamp) -> bool {
        self.periods(t, t).iter().any(|&(s, e)| s <= t && t < e)
    }

    /// The next time a shift starts, at or after `t`, within 14 days. A shift
    /// already running at `t` (or a night shift's part after midnight) is not a
    /// start: use [`WeeklyShifts::on_shift`] for that.
    pub fn next_shift_start(&self, t: Timestamp) -> Option<Timestamp> {
        let horizon = t + Duration::days(NEXT_SHIFT_HORIZON_DAYS);
        self.periods(t, horizon)
            .into_iter()
            .map(|(s, _)| s)
            .find(|&s| s >= t && s <= horizon)
    }

    /// The time at which `minutes` of on-shift time have elapsed from `start`,
    /// skipping off-shift time (a start off shift waits for the next shift). Zero
    /// minutes give `start` itself; work that ends exactly at a shift's end gives
    /// that end. `None` if not reachable within 60 days of `start`.
    pub fn add_working_time(&self, start: Timestamp, minutes: u32) -> Option<Timestamp> {
        if minutes == 0 {
            return Some(start);
        }
        let limit = start + Duration::days(WORKING_TIME_HORIZON_DAYS);
        let mut remaining = Duration::minutes(i64::from(minutes));
        for (s, e) in self.periods(start, limit) {
            let s = s.max(start);
            let e = e.min(limit);
            if e <= s {
                continue;
            }
            if e - s >= remaining {
                return Some(s + remaining);
            }
            remaining -= e - s;
        }
        None
    }

    /// Time left to `due` from `now`: the on-shift minutes between them (whole
    /// minutes, rounded down) while the deadline is ahead; once it has passed, minus
    /// the wall-clock minutes since (rounded up, so any overdue gives at most -1).
    /// Exactly at the deadline: 0.
    pub fn minutes_left(&self, now: Timestamp, due: Timestamp) -> i64 {
        if due < now {
            let secs = (now - due).num_seconds();
            return -((secs + 59) / 60);
        }
        let on_shift: i64 = self
            .periods(now, due)
            .into_iter()
            .map(|(s, e)| (e.min(due) - s.max(now)).num_seconds().max(0))
            .sum();
        on_shift / 60
    }

    fn local_date(&self, t: Timestamp) -> NaiveDate {
        (t + Duration::hours(i64::from(self.utc_offset_h))).date_naive()
    }

    /// The UTC instant of `minute` after local midnight of `date`.
    fn at(&self, date: NaiveDate, minute: u32) -> Timestamp {
        (date.and_time(NaiveTime::MIN) + Duration::minutes(i64::from(minute))
            - Duration::hours(i64::from(self.utc_offset_h)))
        .and_utc()
    }

    /// The shifts, in UTC and with touching or overlapping ones joined, of the
    /// local days from the one before `from` to the one after `to`, keeping those
    /// that end after `from` and start no later than `to`.
    fn periods(&self, from: Timestamp, to: Timestamp) -> Vec<(Timestamp, Timestamp)> {
        let first = self.local_date(from) - Duration::days(1);
        let last = self.local_date(to) + Duration::days(1);
        let mut out: Vec<(Timestamp, Timestamp)> = Vec::new();
        let mut date = first;
        while date <= last {
            for (s, e) in self.intervals_on(date) {
                let (s, e) = (self.at(date, s), self.at(date, e));
                match out.last_mut() {
                    Some(prev) if s <= prev.1 => prev.1 = prev.1.max(e),
                    _ => out.push((s, e)),
                }
            }
            date += Duration::days(1);
        }
        out.retain(|&(s, e)| e > from && s <= to);
        out
    }
}

fn check_day(intervals: &[(u32, u32)]) -> Result<(), String> {
    let mut v = intervals.to_vec();
    v.sort_unstable();
    for &(s, e) in &v {
        if s >= e || e > DAY_MINUTES {
            return Err(format!(
                "interval ({s}, {e}) must have start < end <= {DAY_MINUTES}"
            ));
        }
    }
    for w in v.windows(2) {
        if w[1].0 < w[0].1 {
            return Err(format!("intervals {:?} and {:?} overlap", w[0], w[1]));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use Weekday::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn date(s: &str) -> NaiveDate {
        s.parse().unwrap()
    }

    /// Monday to Friday, 08:00-17:00 local at UTC+1 (07:00-16:00 UTC).
    fn office() -> WeeklyShifts {
        WeeklyShifts::new(1).with_shifts(&[Mon, Tue, Wed, Thu, Fri], &[(480, 1020)])
    }

    /// Friday 22:00 to Saturday 06:00 UTC, split at midnight.
    fn night() -> WeeklyShifts {
        WeeklyShifts::new(0)
            .with_shifts(&[Fri], &[(1320, 1440)])
            .with_shifts(&[Sat], &[(0, 360)])
    }

    #[test]
    fn test_dates_fall_on_the_expected_weekdays() {
        assert_eq!(date("2026-11-30").weekday(), Mon);
        assert_eq!(date("2026-12-04").weekday(), Fri);
        assert_eq!(date("2026-12-19").weekday(), Sat);
        assert_eq!(date("2026-12-25").weekday(), Fri);
    }

    #[test]
    fn on_shift_uses_the_local_offset_and_half_open_intervals() {
        let c = office();
        c.validate().unwrap();
        assert!(!c.on_shift(ts("2026-11-30T06:59:00Z")));
        assert!(c.on_shift(ts("2026-11-30T07:00:00Z")));
        assert!(c.on_shift(ts("2026-11-30T15:59:59Z")));
        assert!(!c.on_shift(ts("2026-11-30T16:00:00Z")));
        assert!(!c.on_shift(ts("2026-12-05T10:00:00Z")), "Saturday");
    }

    #[test]
    fn dst_is_not_followed() {
        let c = office();
        // July: Italian clocks read 08:30 at 06:30 UTC, but the calendar stays at +1.
        assert!(!c.on_shift(ts("2026-07-06T06:30:00Z")));
        assert!(c.on_shift(ts("2026-07-06T07:00:00Z")));
        assert!(!c.on_shift(ts("2026-07-06T16:30:00Z")));
        assert_eq!(
            c.add_working_time(ts("2026-07-06T05:00:00Z"), 60),
            Some(ts("2026-07-06T08:00:00Z"))
        );
    }

    #[test]
    fn working_time_within_a_shift_and_to_its_very_end() {
        let c = office();
        let start = ts("2026-11-30T09:00:00Z");
        assert_eq!(c.add_working_time(start, 0), Some(start));
        assert_eq!(
            c.add_working_time(start, 60),
            Some(ts("2026-11-30T10:00:00Z"))
        );
        // exactly the rest of the shift: its end, not the next morning
        assert_eq!(
            c.add_working_time(start, 7 * 60),
            Some(ts("2026-11-30T16:00:00Z"))
        );
    }

    #[test]
    fn working_time_carries_over_to_the_next_day() {
        let c = office();
        assert_eq!(
            c.add_working_time(ts("2026-11-30T15:00:00Z"), 120),
            Some(ts("2026-12-01T08:00:00Z"))
        );
        // a whole 9-hour day plus one hour
        assert_eq!(
            c.add_working_time(ts("2026-11-30T07:00:00Z"), 10 * 60),
            Some(ts("2026-12-01T08:00:00Z"))
        );
    }

    #[test]
    fn working_time_skips_the_weekend() {
        let c = office();
        assert_eq!(
            c.add_working_time(ts("2026-12-04T15:30:00Z"), 60),
            Some(ts("2026-12-07T07:30:00Z"))
        );
    }

    #[test]
    fn a_start_outside_any_shift_waits_for_the_next() {
        let c = office();
        assert_eq!(
            c.add_working_time(ts("2026-11-30T05:00:00Z"), 30),
            Some(ts("2026-11-30T07:30:00Z"))
        );
        assert_eq!(
            c.add_working_time(ts("2026-12-05T12:00:00Z"), 30),
            Some(ts("2026-12-07T07:30:00Z"))
        );
        assert_eq!(
            c.add_working_time(ts("2026-11-30T20:00:00Z"), 30),
            Some(ts("2026-12-01T07:30:00Z"))
        );
    }

    #[test]
    fn a_holiday_is_skipped() {
        // Christmas Friday off: Thursday's last hour, then Monday 28th.
        let c = office().with_exception(date("2026-12-25"), &[]);
        c.validate().unwrap();
        assert!(!c.on_shift(ts("2026-12-25T10:00:00Z")));
        assert_eq!(
            c.add_working_time(ts("2026-12-24T15:00:00Z"), 120),
            Some(ts("2026-12-28T08:00:00Z"))
        );
        assert_eq!(
            c.next_shift_start(ts("2026-12-24T16:00:00Z")),
            Some(ts("2026-12-28T07:00:00Z"))
        );
    }

    #[test]
    fn an_extra_saturday_shift_is_worked() {
        // Saturday 19th, 09:00-13:00 local.
        let c = office().with_exception(date("2026-12-19"), &[(540, 780)]);
        assert!(c.on_shift(ts("2026-12-19T08:00:00Z")));
        assert!(
            !c.on_shift(ts("2026-12-26T08:00:00Z")),
            "only that Saturday"
        );
        assert_eq!(
            c.add_working_time(ts("2026-12-18T15:00:00Z"), 120),
            Some(ts("2026-12-19T09:00:00Z"))
        );
        assert_eq!(
            c.add_working_time(ts("2026-12-18T15:00:00Z"), 6 * 60),
            Some(ts("2026-12-21T08:00:00Z"))
        );
        assert_eq!(
            c.next_shift_start(ts("2026-12-18T16:00:00Z")),
            Some(ts("2026-12-19T08:00:00Z"))
        );
    }

    #[test]
    fn a_night_shift_runs_across_midnight() {
        let c = night();
        c.validate().unwrap();
        assert!(c.on_shift(ts("2026-12-04T23:59:00Z")));
        assert!(c.on_shift(ts("2026-12-05T00:00:00Z")));
        assert!(!c.on_shift(ts("2026-12-05T06:00:00Z")));
        assert_eq!(
            c.add_working_time(ts("2026-12-04T23:00:00Z"), 120),
            Some(ts("2026-12-05T01:00:00Z"))
        );
        // midnight is not a shift start: the next start is next Friday evening
        assert_eq!(
            c.next_shift_start(ts("2026-12-04T23:30:00Z")),
            Some(ts("2026-12-11T22:00:00Z"))
        );
        assert_eq!(
            c.minutes_left(ts("2026-12-04T21:00:00Z"), ts("2026-12-05T02:00:00Z")),
            4 * 60
        );
    }

    #[test]
    fn midnight_in_local_time_is_not_midnight_utc() {
        // 22:00-24:00 and 00:00-02:00 local at +2: 20:00-24:00 UTC.
        let c = WeeklyShifts::new(2)
            .with_shifts(&[Mon], &[(1320, 1440)])
            .with_shifts(&[Tue], &[(0, 120)]);
        assert!(c.on_shift(ts("2026-11-30T23:30:00Z")));
        assert!(!c.on_shift(ts("2026-12-01T00:00:00Z")));
        assert_eq!(
            c.add_working_time(ts("2026-11-30T19:00:00Z"), 180),
            Some(ts("2026-11-30T23:00:00Z"))
        );
    }

    #[test]
    fn next_shift_start_looks_two_weeks_ahead() {
        let c = office();
        assert_eq!(
            c.next_shift_start(ts("2026-11-30T06:00:00Z")),
            Some(ts("2026-11-30T07:00:00Z"))
        );
        assert_eq!(
            c.next_shift_start(ts("2026-11-30T07:00:00Z")),
            Some(ts("2026-11-30T07:00:00Z"))
        );
        // on shift: the next one
        assert_eq!(
            c.next_shift_start(ts("2026-11-30T08:00:00Z")),
            Some(ts("2026-12-01T07:00:00Z"))
        );
        let far = WeeklyShifts::new(1).with_exception(date("2026-12-20"), &[(480, 600)]);
        assert_eq!(far.next_shift_start(ts("2026-11-30T08:00:00Z")), None);
        assert_eq!(
            far.next_shift_start(ts("2026-12-10T08:00:00Z")),
            Some(ts("2026-12-20T07:00:00Z"))
        );
    }

    #[test]
    fn unreachable_working_time_is_none() {
        let empty = WeeklyShifts::new(1);
        assert!(!empty.on_shift(ts("2026-11-30T08:00:00Z")));
        assert_eq!(empty.add_working_time(ts("2026-11-30T08:00:00Z"), 1), None);
        // one 2-hour day 30 days away: 2 hours reachable, 3 not
        let once = WeeklyShifts::new(0).with_exception(date("2026-12-30"), &[(480, 600)]);
        let start = ts("2026-11-30T08:00:00Z");
        assert_eq!(
            once.add_working_time(start, 120),
            Some(ts("2026-12-30T10:00:00Z"))
        );
        assert_eq!(once.add_working_time(start, 121), None);
        let beyond = WeeklyShifts::new(0).with_exception(date("2027-02-01"), &[(480, 600)]);
        assert_eq!(beyond.add_working_time(start, 10), None);
    }

    #[test]
    fn minutes_left_counts_working_time_and_overdue_wall_time() {
        let c = office();
        // 1 h left on Monday, 2 h on Tuesday morning
        assert_eq!(
            c.minutes_left(ts("2026-11-30T15:00:00Z"), ts("2026-12-01T09:00:00Z")),
            180
        );
        // over the weekend only Friday's and Monday's hours count
        assert_eq!(
            c.minutes_left(ts("2026-12-04T15:00:00Z"), ts("2026-12-07T08:00:00Z")),
            120
        );
        let due = ts("2026-12-01T09:00:00Z");
        assert_eq!(c.minutes_left(due, due), 0);
        assert_eq!(c.minutes_left(ts("2026-12-01T10:00:00Z"), due), -60);
        // overdue at night: wall minutes, not working minutes
        assert_eq!(c.minutes_left(ts("2026-12-02T09:00:00Z"), due), -24 * 60);
        assert_eq!(c.minutes_left(ts("2026-12-01T09:00:30Z"), due), -1);
        // off shift all the way to the deadline: nothing left, but not overdue
        assert_eq!(
            c.minutes_left(ts("2026-12-05T09:00:00Z"), ts("2026-12-06T09:00:00Z")),
            0
        );
    }

    #[test]
    fn minutes_left_undoes_add_working_time() {
        let c = office()
            .with_exception(date("2026-12-25"), &[])
            .with_exception(date("2026-12-19"), &[(540, 780)]);
        let starts = [
            "2026-11-30T05:00:00Z",
            "2026-12-04T15:30:00Z",
            "2026-12-18T12:00:00Z",
            "2026-12-24T10:00:00Z",
        ];
        for start in starts {
            let start = ts(start);
            for minutes in [1, 59, 60, 540, 541, 2000, 5000] {
                let due = c.add_working_time(start, minutes).unwrap();
                assert_eq!(
                    c.minutes_left(start, due),
                    i64::from(minutes),
                    "{start} {minutes}"
                );
            }
        }
    }

    #[test]
    fn validate_refuses_bad_calendars() {
        assert!(WeeklyShifts::new(15).validate().is_err());
        let bad = WeeklyShifts::new(1).with_shifts(&[Mon], &[(600, 600)]);
        assert!(bad.validate().unwrap_err().starts_with("Monday"));
        let bad = WeeklyShifts::new(1).with_shifts(&[Tue], &[(600, 1441)]);
        assert!(bad.validate().is_err());
        let bad = WeeklyShifts::new(1).with_shifts(&[Wed], &[(480, 720), (700, 900)]);
        assert!(bad.validate().unwrap_err().contains("overlap"));
        let bad = office()
            .with_exception(date("2026-12-25"), &[])
            .with_exception(date("2026-12-25"), &[(480, 600)]);
        assert!(bad.validate().unwrap_err().contains("two exceptions"));
        // touching intervals are fine, and join into one shift
        let split = WeeklyShifts::new(0).with_shifts(&[Mon], &[(480, 720), (720, 1020)]);
        split.validate().unwrap();
        assert_eq!(
            split.next_shift_start(ts("2026-11-30T09:00:00Z")),
            Some(ts("2026-12-07T08:00:00Z"))
        );
    }

    #[test]
    fn calendars_read_from_json() {
        let json = r#"{"utc_offset_h":1,
            "days":[[[480,1020]],[[480,1020]],[[480,1020]],[[480,1020]],[[480,1020]],[],[]],
            "exceptions":[{"date":"2026-12-25","intervals":[]},{"date":"2026-12-19","intervals":[[540,780]]}]}"#;
        let c: WeeklyShifts = serde_json::from_str(json).unwrap();
        c.validate().unwrap();
        let expected = office()
            .with_exception(date("2026-12-25"), &[])
            .with_exception(date("2026-12-19"), &[(540, 780)]);
        assert_eq!(c, expected);
        let back: WeeklyShifts = serde_json::from_str(&serde_json::to_string(&c).unwrap()).unwrap();
        assert_eq!(back, c);
    }
}
