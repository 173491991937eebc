//! The survey program: which segments to survey on which working day so that every
//! obligation is met by its deadline, the riskiest segments first, within the survey
//! crews' capacity (metres a day).
//!
//! Each day is decided in two steps. First what *must* be done today: with
//! earliest-deadline-first over the remaining days, the length whose deadlines would
//! otherwise be missed (for each deadline `T`, the length due by `T` minus the
//! capacity of the working days after today up to `T`; the largest shortfall must
//! go today). A class with a yearly minimum share adds, for each calendar year, the
//! length still missing by the year's end as one more deadline. Then the rest of the
//! day's capacity goes to the policy's choice: the highest risk ([`Policy::Risk`]) or
//! the longest since the last survey ([`Policy::Calendar`], a programme run by the
//! calendar alone, as a baseline). [`Program::day`] decides one day; the simulation
//! calls it day by day with the risk of that day.

use crate::network::{Segment, SurveyRecord, last_full_survey};
use crate::obligation::ObligationTable;
use chrono::{Datelike, NaiveDate};
use serde::Serialize;
use std::collections::HashMap;

/// How the capacity left after the obligations is used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Policy {
    /// Longest since the last survey first.
    Calendar,
    /// Highest risk first.
    Risk,
}

/// Why a segment is on the day's list.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case", tag = "reason")]
pub enum Reason {
    /// Its deadline has passed.
    Overdue {
        due: NaiveDate,
    },
    /// Needed today for a deadline to be met.
    Deadline {
        due: NaiveDate,
    },
    /// Needed today for its class's yearly share.
    Share {
        class: String,
        year: i32,
    },
    /// Chosen by the policy.
    Risk {
        score: f64,
    },
    Oldest {
        since: NaiveDate,
    },
    /// Keeps pace with the calendar order: it surveyed this segment (once more) by
    /// `due` minus the allowed lag ([`Program::keep_pace`]).
    Pace {
        due: NaiveDate,
    },
}

/// One segment to survey on one day.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Visit {
    pub date: NaiveDate,
    pub segment: String,
    pub length_m: f64,
    #[serde(flatten)]
    pub reason: Reason,
}

/// A segment's state in the program.
#[derive(Debug, Clone)]
struct Item {
    id: String,
    class: String,
    length_m: f64,
    /// Last whole survey, or when it entered the register.
    since: NaiveDate,
    surveyed: bool,
    deadline: Option<NaiveDate>,
}

/// Keeping pace with the calendar order ([`Program::keep_pace`]).
#[derive(Debug, Clone)]
struct Pace {
    /// The calendar order run alongside, from the anchor.
    shadow: Box<Program>,
    /// Working days a visit may come after the calendar order's.
    lag_days: usize,
    /// Visits of each segment (by index) since the anchor: the calendar order's and
    /// this program's.
    shadow_count: Vec<u32>,
    own_count: Vec<u32>,
    /// (segment, k, due): this program's k-th visit of the segment is due by then.
    pending: Vec<(usize, u32, NaiveDate)>,
}

/// The survey program over a network, with what has been surveyed so far.
#[derive(Debug, Clone)]
pub struct Program {
    items: Vec<Item>,
    obligations: ObligationTable,
    /// Metres of each class surveyed in each calendar year.
    done: HashMap<(String, i32), f64>,
    /// Total length of each class.
    class_len: HashMap<String, f64>,
    policy: Policy,
    /// A segment surveyed less than this many days ago is not chosen by the policy
    /// (only an obligation brings it back).
    pub min_revisit_days: i64,
    /// ... unless its risk is at least this (a district alert raised after its last
    /// survey makes it worth walking again).
    pub revisit_above: f64,
    pace: Option<Pace>,
}

impl Program {
    pub fn new(
        segments: &[Segment],
        records: &[SurveyRecord],
        obligations: &ObligationTable,
        policy: Policy,
    ) -> Program {
        let mut by_segment: HashMap<&str, Vec<&SurveyRecord>> = HashMap::new();
        for r in records {
            by_segment.entry(r.segment.as_str()).or_default().push(r);
        }
        let mut done: HashMap<(String, i32), f64> = HashMap::new();
        let mut class_len: HashMap<String, f64> = HashMap::new();
        let items = segments
            .iter()
            .map(|s| {
                let length_m = s.length_m();
                *class_len.entry(s.pressure_class.clone()).or_default() += length_m;
                let recs = by_segment.get(s.id.as_str()).cloned().unwrap_or_default();
                for r in &recs {
                    *done
                        .entry((s.pressure_class.clone(), r.date.year()))
                        .or_default() += r.covered_m.clamp(0.0, length_m);
                }
                let last = last_full_survey(length_m, &recs);
                let since = last.unwrap_or(s.added_on);
                Item {
                    id: s.id.clone(),
                    class: s.pressure_class.clone(),
                    length_m,
                    since,
                    surveyed: last.is_some(),
                    deadline: obligations
                        .get(&s.pressure_class)
                        .and_then(|o| o.deadline(since)),
                }
            })
            .collect();
        Program {
            items,
            obligations: obligations.clone(),
            done,
            class_len,
            policy,
            min_revisit_days: 180,
            revisit_above: f64::INFINITY,
            pace: None,
        }
    }

    /// Makes this program keep pace with the calendar order: `shadow` is the calendar
    /// order ([`Policy::Calendar`], over the same segments, in the same order) as it
    /// stood at an anchor date (the start of the year, of a simulation); it is run
    /// alongside, day by day, with the same capacity, and each time it surveys a
    /// segment for the k-th time since the anchor, this program must have surveyed
    /// that segment k times within `lag_days` working days. Those visits are
    /// obligations like the regulator's (earliest deadline first), so only the
    /// capacity left once they are safe goes by risk: every segment is surveyed at
    /// least as often as the calendar order would, never more than `lag_days` working
    /// days later, and what the risk order pulls forward is given back later (a
    /// segment surveyed early is not due again when the calendar order reaches it).
    pub fn keep_pace(&mut self, mut shadow: Program, lag_days: usize) {
        shadow.pace = None;
        let n = self.items.len();
        self.pace = Some(Pace {
            shadow: Box::new(shadow),
            lag_days,
            shadow_count: vec![0; n],
            own_count: vec![0; n],
            pending: Vec::new(),
        });
    }

    /// Runs the calendar order of [`Program::keep_pace`] over a past working day
    /// (`days[0]`, with the working days left in its plan), without planning this
    /// program: to bring the pace up to date from its anchor. Then record this
    /// program's own surveys since the anchor with [`Program::count_visit`].
    pub fn pace_past_day(&mut self, days: &[NaiveDate], capacity_m: f64) {
        self.step_shadow(days, capacity_m);
    }

    /// Counts a whole survey of `segment` done since the pace's anchor (history).
    pub fn count_visit(&mut self, segment: &str) {
        if let Some(i) = self.items.iter().position(|i| i.id == segment) {
            self.count_own(i);
        }
    }

    fn count_own(&mut self, i: usize) {
        if let Some(p) = &mut self.pace {
            p.own_count[i] += 1;
            let own = &p.own_count;
            p.pending.retain(|(j, k, _)| own[*j] < *k);
        }
    }

    /// Steps the calendar order one day and records what it makes due.
    fn step_shadow(&mut self, days: &[NaiveDate], capacity_m: f64) {
        let Some(p) = &mut self.pace else {
            return;
        };
        let Some(due) = days.get(p.lag_days).or(days.last()).copied() else {
            return;
        };
        for v in p.shadow.day(days, capacity_m, &HashMap::new()) {
            if let Some(i) = self.items.iter().position(|it| it.id == v.segment) {
                p.shadow_count[i] += 1;
                let k = p.shadow_count[i];
                if p.own_count[i] < k {
                    p.pending.push((i, k, due));
                }
            }
        }
    }

    /// Visits owed to the calendar order's pace: (segment, due), earliest first.
    pub fn pace_due(&self) -> Vec<(&str, NaiveDate)> {
        let mut out: Vec<(&str, NaiveDate)> = self
            .pace
            .iter()
            .flat_map(|p| p.pending.iter())
            .map(|(i, _, due)| (self.items[*i].id.as_str(), *due))
            .collect();
        out.sort_by_key(|x| x.1);
        out
    }

    /// Each segment's deadline under the obligations (none for share-only classes).
    pub fn deadlines(&self) -> impl Iterator<Item = (&str, Option<NaiveDate>)> {
        self.items.iter().map(|i| (i.id.as_str(), i.deadline))
    }

    /// Metres of `class` surveyed in calendar year `year`, and the class's length.
    pub fn coverage(&self, class: &str, year: i32) -> (f64, f64) {
        (
            self.done
                .get(&(class.to_owned(), year))
                .copied()
                .unwrap_or(0.0),
            self.class_len.get(class).copied().unwrap_or(0.0),
        )
    }

    /// Records a survey (as the crew reports it), moving the segment's deadline.
    pub fn record(&mut self, segment: &str, date: NaiveDate, covered_m: f64) {
        let Some(item) = self.items.iter_mut().find(|i| i.id == segment) else {
            return;
        };
        *self
            .done
            .entry((item.class.clone(), date.year()))
            .or_default() += covered_m.clamp(0.0, item.length_m);
        if covered_m >= item.length_m * crate::network::FULL_COVERAGE && date >= item.since {
            item.since = date;
            item.surveyed = true;
            item.deadline = self
                .obligations
                .get(&item.class)
                .and_then(|o| o.deadline(date));
            if let Some(i) = self.items.iter().position(|i| i.id == segment) {
                self.count_own(i);
            }
        }
    }

    /// Length still missing for each share-bound class in the calendar years the
    /// remaining days reach, as (class, year, metres, last working day of the year).
    fn share_demands(&self, days: &[NaiveDate]) -> Vec<(String, i32, f64, NaiveDate)> {
        let mut out = Vec::new();
        for o in &self.obligations.obligations {
            let Some(share) = o.min_share_per_year else {
                continue;
            };
            let total = self.class_len.get(&o.class).copied().unwrap_or(0.0);
            let mut years: Vec<i32> = days.iter().map(|d| d.year()).collect();
            years.dedup();
            for y in years {
                let last_day = *days.iter().rev().find(|d| d.year() == y).unwrap();
                let done = self.done.get(&(o.class.clone(), y)).copied().unwrap_or(0.0);
                let missing = share * total - done;
                if missing > 1e-6 {
                    out.push((o.class.clone(), y, missing, last_day));
                }
            }
        }
        out
    }

    /// What to survey on `days[0]`, given the working days left (`days`, ascending,
    /// today first), the crews' capacity and each segment's risk (`risk`, by id).
    /// The visits are recorded as done.
    pub fn day(
        &mut self,
        days: &[NaiveDate],
        capacity_m: f64,
        risk: &HashMap<String, f64>,
    ) -> Vec<Visit> {
        let Some(&today) = days.first() else {
            return Vec::new();
        };
        self.step_shadow(days, capacity_m);
        // Demands with a deadline: (deadline, metres, what).
        enum Demand {
            Segment(usize),
            Share(String, i32),
            Pace(usize),
        }
        let mut demands: Vec<(NaiveDate, f64, Demand)> = self
            .items
            .iter()
            .enumerate()
            .filter_map(|(i, it)| {
                it.deadline
                    .filter(|d| *d <= *days.last().unwrap() || *d < today)
                    .map(|d| (d, it.length_m, Demand::Segment(i)))
            })
            .collect();
        for (class, year, metres, by) in self.share_demands(days) {
            demands.push((by, metres, Demand::Share(class, year)));
        }
        if let Some(p) = &self.pace {
            let mut seen = vec![false; self.items.len()];
            for (i, _, due) in &p.pending {
                // One visit a day per segment: its earliest pending visit.
                if !seen[*i] {
                    seen[*i] = true;
                    let d = p
                        .pending
                        .iter()
                        .filter(|(j, ..)| j == i)
                        .map(|x| x.2)
                        .min()
                        .unwrap_or(*due);
                    demands.push((d, self.items[*i].length_m, Demand::Pace(*i)));
                }
            }
        }
        demands.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.total_cmp(&b.1)));

        // The length that must go today: max over deadlines T of (due by T) minus the
        // capacity of the working days after today up to T.
        let mut must = 0.0f64;
        let mut cum = 0.0;
        for (by, metres, _) in &demands {
            cum += metres;
            let later_days = days[1..].iter().filter(|d| *d <= by).count() as f64;
            must = must.max(cum - later_days * capacity_m);
        }
        // Keeping pace: the calendar order will make about a day's capacity due every
        // day from tomorrow, each `lag` days later, so what is owed now must never
        // exceed `lag` days of capacity (else tomorrow's would be late).
        let mut pace_due: Vec<(NaiveDate, usize)> = Vec::new();
        if let Some(p) = &self.pace {
            for (i, _, due) in &p.pending {
                match pace_due.iter_mut().find(|x| x.1 == *i) {
                    Some(x) => x.0 = x.0.min(*due),
                    None => pace_due.push((*due, *i)),
                }
            }
            pace_due.sort();
            let owed: f64 = pace_due.iter().map(|(_, i)| self.items[*i].length_m).sum();
            must = must.max(owed - p.lag_days as f64 * capacity_m);
        }

        let mut left = capacity_m;
        let mut visits: Vec<Visit> = Vec::new();
        let mut taken = vec![false; self.items.len()];
        let fits = |left: f64, len: f64, empty: bool| len <= left + 1e-6 || empty;

        // 1. Obligations, earliest deadline first, until what must go today is planned.
        let mut planned = 0.0;
        for (by, _, demand) in &demands {
            if planned >= must - 1e-6 || left <= 1e-6 {
                break;
            }
            match demand {
                Demand::Segment(i) => {
                    let it = &self.items[*i];
                    if taken[*i] || !fits(left, it.length_m, visits.is_empty()) {
                        continue;
                    }
                    taken[*i] = true;
                    left -= it.length_m;
                    planned += it.length_m;
                    let reason = if *by < today {
                        Reason::Overdue { due: *by }
                    } else {
                        Reason::Deadline { due: *by }
                    };
                    visits.push(self.visit(today, *i, reason));
                }
                Demand::Pace(i) => {
                    let it = &self.items[*i];
                    if taken[*i] || !fits(left, it.length_m, visits.is_empty()) {
                        continue;
                    }
                    taken[*i] = true;
                    left -= it.length_m;
                    planned += it.length_m;
                    visits.push(self.visit(today, *i, Reason::Pace { due: *by }));
                }
                Demand::Share(class, year) => {
                    for i in self.order(risk, today, false) {
                        if planned >= must - 1e-6 || left <= 1e-6 {
                            break;
                        }
                        let it = &self.items[i];
                        if taken[i]
                            || it.class != *class
                            || !fits(left, it.length_m, visits.is_empty())
                        {
                            continue;
                        }
                        taken[i] = true;
                        left -= it.length_m;
                        planned += it.length_m;
                        visits.push(self.visit(
                            today,
                            i,
                            Reason::Share {
                                class: class.clone(),
                                year: *year,
                            },
                        ));
                    }
                }
            }
        }

        // 2. The rest of the day by the policy. Keeping pace, what the slack is kept
        //    for: the segments a district's alert or a leak nearby calls for
        //    (`revisit_above`), then what the calendar order has made due, then risk.
        let mut fill = self.order(risk, today, true);
        if self.pace.is_some() && self.policy == Policy::Risk {
            let signal: Vec<usize> = fill
                .iter()
                .copied()
                .filter(|&i| {
                    risk.get(&self.items[i].id)
                        .is_some_and(|r| *r >= self.revisit_above)
                })
                .collect();
            let mut ordered = signal;
            ordered.extend(pace_due.iter().map(|x| x.1));
            ordered.extend(fill.iter().copied());
            fill = ordered;
        }
        for i in fill {
            if left <= 1e-6 {
                break;
            }
            let it = &self.items[i];
            if taken[i] || !fits(left, it.length_m, visits.is_empty()) {
                continue;
            }
            taken[i] = true;
            left -= it.length_m;
            let score = risk.get(&it.id).copied().unwrap_or(0.0);
            let owed = pace_due.iter().find(|x| x.1 == i).map(|x| x.0);
            let reason = match (self.policy, owed) {
                (Policy::Risk, Some(due)) if score < self.revisit_above => Reason::Pace { due },
                (Policy::Risk, _) => Reason::Risk { score },
                (Policy::Calendar, _) => Reason::Oldest { since: it.since },
            };
            visits.push(self.visit(today, i, reason));
        }
        for v in &visits {
            self.record(&v.segment.clone(), today, v.length_m);
        }
        visits
    }

    fn visit(&self, date: NaiveDate, i: usize, reason: Reason) -> Visit {
        Visit {
            date,
            segment: self.items[i].id.clone(),
            length_m: self.items[i].length_m,
            reason,
        }
    }

    /// Segment indexes in the policy's order; with `fresh_only`, leaving out those
    /// surveyed within `min_revisit_days`.
    fn order(&self, risk: &HashMap<String, f64>, today: NaiveDate, fresh_only: bool) -> Vec<usize> {
        let mut idx: Vec<usize> = (0..self.items.len())
            .filter(|&i| {
                let it = &self.items[i];
                !fresh_only
                    || !it.surveyed
                    || (today - it.since).num_days() >= self.min_revisit_days
                    || risk.get(&it.id).is_some_and(|r| *r >= self.revisit_above)
            })
            .collect();
        let r = |i: usize| risk.get(&self.items[i].id).copied().unwrap_or(0.0);
        match self.policy {
            Policy::Risk => idx.sort_by(|&a, &b| {
                r(b).total_cmp(&r(a))
                    .then(self.items[a].since.cmp(&self.items[b].since))
                    .then(self.items[a].id.cmp(&self.items[b].id))
            }),
            Policy::Calendar => idx.sort_by(|&a, &b| {
                self.items[a]
                    .since
                    .cmp(&self.items[b].since)
                    .then(self.items[a].id.cmp(&self.items[b].id))
            }),
        }
        idx
    }

    /// Plans every day of `days` with a fixed risk (a forecast; the field records
    /// what really happened). The program itself is left unchanged.
    pub fn plan(
        &self,
        days: &[NaiveDate],
        capacity_m: f64,
        risk: &HashMap<String, f64>,
    ) -> Vec<Visit> {
        let mut p = self.clone();
        (0..days.len())
            .flat_map(|i| p.day(&days[i..], capacity_m, risk))
            .collect()
    }

    /// When each segment was last surveyed whole (or entered the register).
    pub fn since(&self, segment: &str) -> Option<NaiveDate> {
        self.items.iter().find(|i| i.id == segment).map(|i| i.since)
    }

    /// The visits of the working days from `from` to `to`, planned as part of a plan
    /// running at least to the end of `to`'s year (so that a yearly share is spread over
    /// the weeks left, not demanded of the window's last day).
    pub fn plan_window(
        &self,
        from: NaiveDate,
        to: NaiveDate,
        capacity_m: f64,
        risk: &HashMap<String, f64>,
    ) -> Vec<Visit> {
        let year_end = NaiveDate::from_ymd_opt(to.year(), 12, 31).unwrap_or(to);
        let days = working_days(from, to.max(year_end));
        let mut p = self.clone();
        let mut out = Vec::new();
        for i in 0..days.len() {
            if days[i] > to {
                break;
            }
            out.extend(p.day(&days[i..], capacity_m, risk));
        }
        out
    }

    /// Segments whose deadline has passed by `on` without a survey.
    pub fn overdue(&self, on: NaiveDate) -> Vec<(&str, NaiveDate)> {
        self.items
            .iter()
            .filter_map(|i| i.deadline.filter(|d| *d < on).map(|d| (i.id.as_str(), d)))
            .collect()
    }
}

/// Monday to Friday from `from` to `to` inclusive.
pub fn working_days(from: NaiveDate, to: NaiveDate) -> Vec<NaiveDate> {
    from.iter_days()
        .take_while(|d| *d <= to)
        .filter(|d| d.weekday().number_from_monday() <= 5)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::network::Material;
    use crate::obligation::Obligation;
    use leakwatch_core::{DistrictId, GeoPoint};

    fn d(y: i32, m: u32, day: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, day).unwrap()
    }

    /// A straight segment of about `m` metres (north-south).
    fn seg(id: &str, class: &str, m: f64, added: NaiveDate) -> Segment {
        let lat = 45.0 + (id.bytes().map(u32::from).sum::<u32>() % 100) as f64 * 0.01;
        Segment {
            id: id.into(),
            district: DistrictId::parse("D").unwrap(),
            geometry: vec![
                GeoPoint::new(lat, 9.0).unwrap(),
                GeoPoint::new(lat + m / 111_195.0, 9.0).unwrap(),
            ],
            pressure_class: class.into(),
            material: Material::Steel,
            diameter_mm: 100,
            year_laid: 1990,
            added_on: added,
        }
    }

    fn rec(id: &str, date: NaiveDate, m: f64) -> SurveyRecord {
        SurveyRecord {
            segment: id.into(),
            date,
            covered_m: m,
        }
    }

    #[test]
    fn every_deadline_is_met_and_risk_comes_first_when_slack_allows() {
        // 20 business-district segments of 1 km, last surveyed a year ago, due within
        // the next three months; 2 km a day of capacity over 3 months is plenty.
        let segs: Vec<Segment> = (0..20)
            .map(|i| seg(&format!("S{i:02}"), "us_business", 1000.0, d(2020, 1, 1)))
            .collect();
        let recs: Vec<SurveyRecord> = (0..20)
            .map(|i| {
                rec(
                    &format!("S{i:02}"),
                    d(2025, 1, 2) + chrono::Duration::days(i * 3),
                    1000.0,
                )
            })
            .collect();
        let t = ObligationTable::us();
        let p = Program::new(&segs, &recs, &t, Policy::Risk);
        let days = working_days(d(2026, 1, 5), d(2026, 6, 30));
        let risk: HashMap<String, f64> = [("S19".to_owned(), 500.0)].into();
        let visits = p.plan(&days, 2000.0, &risk);
        // The riskiest goes on day one although its deadline is the latest.
        assert_eq!(visits[0].segment, "S19");
        assert!(matches!(visits[0].reason, Reason::Risk { .. }));
        // Every segment surveyed before its deadline.
        let mut p2 = p.clone();
        for v in &visits {
            p2.record(&v.segment, v.date, v.length_m);
        }
        for (id, due) in p.deadlines() {
            let first = visits.iter().find(|v| v.segment == id).map(|v| v.date);
            assert!(
                first.is_some_and(|f| f <= due.unwrap()),
                "{id} due {due:?}, first {first:?}"
            );
        }
    }

    #[test]
    fn a_tight_deadline_overrides_risk() {
        // Capacity for one segment a day; S1 is due today, S2 tomorrow, R is the risky
        // one with no deadline soon: R must wait.
        let segs = vec![
            seg("S1", "us_business", 1000.0, d(2020, 1, 1)),
            seg("S2", "us_business", 1000.0, d(2020, 1, 1)),
            seg("R", "us_other", 1000.0, d(2020, 1, 1)),
        ];
        let recs = vec![
            rec("S1", d(2025, 4, 7), 1000.0), // + 15 months = 2026-07-07
            rec("S2", d(2025, 4, 8), 1000.0),
            rec("R", d(2025, 1, 1), 1000.0),
        ];
        let p = Program::new(&segs, &recs, &ObligationTable::us(), Policy::Risk);
        let days = working_days(d(2026, 7, 7), d(2026, 7, 31));
        let risk: HashMap<String, f64> = [("R".to_owned(), 1e6)].into();
        let v = p.plan(&days, 1000.0, &risk);
        let order: Vec<&str> = v.iter().map(|v| v.segment.as_str()).collect();
        assert_eq!(&order[..3], &["S1", "S2", "R"], "{v:?}");
        assert!(matches!(v[0].reason, Reason::Deadline { .. }));
    }

    #[test]
    fn overdue_segments_go_first_and_are_reported() {
        let segs = vec![
            seg("late", "us_business", 500.0, d(2020, 1, 1)),
            seg("fine", "us_business", 500.0, d(2020, 1, 1)),
        ];
        let recs = vec![
            rec("late", d(2024, 1, 1), 500.0),
            rec("fine", d(2026, 1, 1), 500.0),
        ];
        let p = Program::new(&segs, &recs, &ObligationTable::us(), Policy::Risk);
        assert_eq!(p.overdue(d(2026, 3, 2)), vec![("late", d(2025, 4, 1))]);
        let risk: HashMap<String, f64> = [("fine".to_owned(), 100.0)].into();
        let v = p.plan(&working_days(d(2026, 3, 2), d(2026, 3, 2)), 500.0, &risk);
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].segment, "late");
        assert!(matches!(v[0].reason, Reason::Overdue { .. }));
    }

    #[test]
    fn a_yearly_share_is_met_by_the_year_end_and_partial_surveys_count() {
        // 100 low-pressure segments of 100 m (10 km); 20 % a year = 2 km. 500 m were
        // already walked this year in partial surveys. Capacity 100 m a day, and the
        // risky segments, enough to fill every day, are all of another class: the
        // share must still be met.
        let mut segs: Vec<Segment> = (0..100)
            .map(|i| seg(&format!("B{i:03}"), "it_bp", 100.0, d(2020, 1, 1)))
            .collect();
        segs.extend((0..100).map(|i| seg(&format!("H{i:03}"), "it_ap_mp", 100.0, d(2020, 1, 1))));
        let recs: Vec<SurveyRecord> = (0..10)
            .map(|i| rec(&format!("B{i:03}"), d(2026, 2, 1), 50.0))
            .collect();
        let p = Program::new(&segs, &recs, &ObligationTable::it(), Policy::Risk);
        assert!((p.coverage("it_bp", 2026).0 - 500.0).abs() < 1.0);
        let days = working_days(d(2026, 10, 1), d(2026, 12, 31));
        let risk: HashMap<String, f64> = (0..100).map(|i| (format!("H{i:03}"), 1000.0)).collect();
        let v = p.plan(&days, 100.0, &risk);
        let bp: f64 = v
            .iter()
            .filter(|v| v.segment.starts_with('B'))
            .map(|v| v.length_m)
            .sum();
        assert!(
            bp + 500.0 >= 0.2 * 10_000.0 - 1.0,
            "low pressure surveyed {bp} m"
        );
        // ... and no more than it needs: the rest went to the risky segments, first.
        assert!(
            bp + 500.0 <= 0.2 * 10_000.0 + 101.0,
            "low pressure surveyed {bp} m"
        );
        assert!(v[0].segment.starts_with('H'));
        assert!(v.iter().any(|v| matches!(v.reason, Reason::Share { .. })));
    }

    #[test]
    fn a_window_spreads_the_yearly_share_over_the_weeks_left() {
        // 100 low-pressure segments of 100 m, nothing surveyed this year: 2 km due by
        // the year's end. Planned alone, one November day would have to do it all;
        // as a window of a plan to the year's end it takes its part only.
        let segs: Vec<Segment> = (0..100)
            .map(|i| seg(&format!("B{i:03}"), "it_bp", 100.0, d(2020, 1, 1)))
            .collect();
        let recs: Vec<SurveyRecord> = (0..100)
            .map(|i| rec(&format!("B{i:03}"), d(2025, 3, 1), 100.0))
            .collect();
        let p = Program::new(&segs, &recs, &ObligationTable::it(), Policy::Risk);
        let day = d(2026, 11, 2);
        let alone = p.plan(&[day], 5000.0, &HashMap::new());
        assert!(
            alone
                .iter()
                .filter(|v| matches!(v.reason, Reason::Share { .. }))
                .count()
                >= 20
        );
        let window = p.plan_window(day, day, 5000.0, &HashMap::new());
        assert!(window.iter().all(|v| v.date == day));
        assert!(
            !window
                .iter()
                .any(|v| matches!(v.reason, Reason::Share { .. })),
            "{window:?}"
        );
    }

    #[test]
    fn keeping_pace_no_segment_is_later_than_the_calendar_order_by_more_than_the_lag() {
        // 60 low-pressure segments of 100 m, last surveyed on successive days a few
        // years ago; 300 m a day. The risk program is told each day that the ten
        // newest-surveyed (the calendar's last) are risky.
        let segs: Vec<Segment> = (0..60)
            .map(|i| seg(&format!("B{i:03}"), "it_bp", 100.0, d(2015, 1, 1)))
            .collect();
        let recs: Vec<SurveyRecord> = (0..60)
            .map(|i| {
                rec(
                    &format!("B{i:03}"),
                    d(2022, 1, 3) + chrono::Duration::days(i),
                    100.0,
                )
            })
            .collect();
        let t = ObligationTable::it();
        let days = working_days(d(2026, 1, 5), d(2026, 6, 30));
        let risk: HashMap<String, f64> = (50..60).map(|i| (format!("B{i:03}"), 1000.0)).collect();
        let lag = 3;
        let mut cal = Program::new(&segs, &recs, &t, Policy::Calendar);
        cal.min_revisit_days = 30;
        let mut paced = Program::new(&segs, &recs, &t, Policy::Risk);
        paced.min_revisit_days = 30;
        paced.revisit_above = 500.0;
        paced.keep_pace(cal.clone(), lag);
        let mut free = paced.clone();
        free.pace = None;
        let (mut cal_v, mut paced_v, mut free_v) = (Vec::new(), Vec::new(), Vec::new());
        for k in 0..days.len() {
            cal_v.extend(cal.day(&days[k..], 300.0, &HashMap::new()));
            paced_v.extend(paced.day(&days[k..], 300.0, &risk));
            free_v.extend(free.day(&days[k..], 300.0, &risk));
        }
        // The risky segments go first either way.
        assert!(paced_v[..3].iter().all(|v| risk.contains_key(&v.segment)));
        let nth = |vs: &[Visit], id: &str, k: usize| {
            vs.iter().filter(|v| v.segment == id).nth(k).map(|v| v.date)
        };
        let index = |day: NaiveDate| days.iter().position(|x| *x == day).unwrap();
        let mut worst_free = 0i64;
        for s in &segs {
            for k in 0.. {
                let Some(c) = nth(&cal_v, &s.id, k) else {
                    break;
                };
                if index(c) + lag >= days.len() {
                    // Due after the horizon.
                    break;
                }
                let p = nth(&paced_v, &s.id, k)
                    .unwrap_or_else(|| panic!("{} visit {k} (calendar {c}) missing", s.id));
                assert!(
                    index(p) <= index(c) + lag,
                    "{} visit {k}: calendar {c}, paced {p}",
                    s.id
                );
                if let Some(f) = nth(&free_v, &s.id, k) {
                    worst_free = worst_free.max(index(f) as i64 - index(c) as i64);
                } else {
                    worst_free = i64::MAX;
                }
            }
        }
        // Without the pace, some segment comes later than that (or not at all).
        assert!(worst_free > lag as i64, "{worst_free}");
        assert!(
            paced_v
                .iter()
                .any(|v| matches!(v.reason, Reason::Pace { .. }))
        );
    }

    #[test]
    fn a_segment_added_mid_year_is_due_one_interval_after_it_was_added() {
        let segs = vec![seg("NEW", "us_business", 100.0, d(2026, 5, 15))];
        let p = Program::new(&segs, &[], &ObligationTable::us(), Policy::Calendar);
        let due: Vec<_> = p.deadlines().collect();
        assert_eq!(due, vec![("NEW", Some(d(2027, 8, 15)))]);
        let custom = ObligationTable {
            preset: "custom".into(),
            obligations: vec![Obligation {
                class: "x".into(),
                label: "x".into(),
                max_interval_months: Some(12),
                every_calendar_years: None,
                min_share_per_year: None,
                source: "test".into(),
                confirmed: false,
            }],
        };
        let segs = vec![seg("X", "x", 100.0, d(2026, 5, 15))];
        let p = Program::new(
            &segs,
            &[rec("X", d(2026, 9, 1), 100.0)],
            &custom,
            Policy::Calendar,
        );
        assert_eq!(p.deadlines().next().unwrap().1, Some(d(2027, 9, 1)));
    }
}
