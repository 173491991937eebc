//! What is reported: coverage per pressure class against its obligation (length
//! surveyed this year, length overdue, the forecast for the year if the program runs
//! as planned), and leaks found per km surveyed by class and material.

use crate::network::{Material, Segment, SurveyRecord};
use crate::obligation::ObligationTable;
use crate::program::{Policy, Program, working_days};
use crate::risk::LeakRecord;
use chrono::{Datelike, NaiveDate};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};

/// One pressure class in one calendar year.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClassCoverage {
    pub class: String,
    pub label: String,
    pub year: i32,
    pub segments: usize,
    pub length_m: f64,
    /// Metres surveyed in the year so far (partial surveys count for what they covered).
    pub surveyed_m: f64,
    /// The yearly minimum, if the class has a share rule.
    pub required_m: Option<f64>,
    /// Segments past their deadline on `today`, and their length.
    pub overdue_segments: usize,
    pub overdue_m: f64,
    /// Length whose deadline falls from `today` to the year's end.
    pub due_by_year_end_m: f64,
    /// Surveyed so far plus what the program plans for the year's remaining working
    /// days at the configured capacity.
    pub forecast_m: f64,
    /// Whether the year's obligation is met by the forecast (share reached, nothing
    /// overdue at the year's end).
    pub forecast_met: bool,
    pub source: String,
    pub confirmed: bool,
}

/// Coverage of every class of `table` in `today`'s year.
pub fn coverage(
    segments: &[Segment],
    records: &[SurveyRecord],
    table: &ObligationTable,
    today: NaiveDate,
    capacity_m_per_day: f64,
    risk: &HashMap<String, f64>,
) -> Vec<ClassCoverage> {
    let year = today.year();
    let program = Program::new(segments, records, table, Policy::Risk);
    let year_end = NaiveDate::from_ymd_opt(year, 12, 31).expect("valid date");
    let days = working_days(today, year_end);
    let planned = program.plan(&days, capacity_m_per_day, risk);
    let class_of: HashMap<&str, (&str, f64)> = segments
        .iter()
        .map(|s| (s.id.as_str(), (s.pressure_class.as_str(), s.length_m())))
        .collect();
    let mut planned_m: HashMap<&str, f64> = HashMap::new();
    for v in &planned {
        if let Some((c, _)) = class_of.get(v.segment.as_str()) {
            *planned_m.entry(c).or_default() += v.length_m;
        }
    }
    // Overdue at the year's end under the plan.
    let mut after = program.clone();
    for v in &planned {
        after.record(&v.segment, v.date, v.length_m);
    }
    let late_at_end: Vec<&str> = after
        .overdue(year_end)
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    let overdue_now: HashMap<&str, NaiveDate> = program.overdue(today).into_iter().collect();
    let deadlines: HashMap<&str, Option<NaiveDate>> = program.deadlines().collect();
    table
        .obligations
        .iter()
        .map(|o| {
            let mine: Vec<&Segment> = segments
                .iter()
                .filter(|s| s.pressure_class == o.class)
                .collect();
            let length_m: f64 = mine.iter().map(|s| s.length_m()).sum();
            let (surveyed_m, _) = program.coverage(&o.class, year);
            let overdue: Vec<&&Segment> = mine
                .iter()
                .filter(|s| overdue_now.contains_key(s.id.as_str()))
                .collect();
            let due_by_year_end_m = mine
                .iter()
                .filter(|s| {
                    deadlines
                        .get(s.id.as_str())
                        .copied()
                        .flatten()
                        .is_some_and(|d| d >= today && d <= year_end)
                })
                .map(|s| s.length_m())
                .sum();
            let required_m = o.min_share_per_year.map(|s| s * length_m);
            let forecast_m = surveyed_m + planned_m.get(o.class.as_str()).copied().unwrap_or(0.0);
            let late = mine.iter().any(|s| late_at_end.contains(&s.id.as_str()));
            ClassCoverage {
                class: o.class.clone(),
                label: o.label.clone(),
                year,
                segments: mine.len(),
                length_m,
                surveyed_m,
                required_m,
                overdue_segments: overdue.len(),
                overdue_m: overdue.iter().map(|s| s.length_m()).sum(),
                due_by_year_end_m,
                forecast_m,
                forecast_met: !late && required_m.is_none_or(|r| forecast_m + 1e-6 >= r),
                source: o.source.clone(),
                confirmed: o.confirmed,
            }
        })
        .collect()
}

/// Leaks found per km surveyed, for one class and material.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LeakRate {
    pub class: String,
    pub material: Material,
    pub surveyed_km: f64,
    pub leaks: usize,
    /// `None` when nothing was surveyed.
    pub per_km: Option<f64>,
}

/// Leaks found per km surveyed from `from` to `to` (inclusive), by class and material.
pub fn leak_rates(
    segments: &[Segment],
    records: &[SurveyRecord],
    leaks: &[LeakRecord],
    from: NaiveDate,
    to: NaiveDate,
) -> Vec<LeakRate> {
    let key: HashMap<&str, (&str, Material)> = segments
        .iter()
        .map(|s| (s.id.as_str(), (s.pressure_class.as_str(), s.material)))
        .collect();
    let mut acc: BTreeMap<(String, &'static str), (Material, f64, usize)> = BTreeMap::new();
    for r in records.iter().filter(|r| r.date >= from && r.date <= to) {
        if let Some((c, m)) = key.get(r.segment.as_str()) {
            acc.entry(((*c).to_owned(), m.as_str()))
                .or_insert((*m, 0.0, 0))
                .1 += r.covered_m.max(0.0);
        }
    }
    for l in leaks.iter().filter(|l| l.date >= from && l.date <= to) {
        if let Some((c, m)) = key.get(l.segment.as_str()) {
            acc.entry(((*c).to_owned(), m.as_str()))
                .or_insert((*m, 0.0, 0))
                .2 += 1;
        }
    }
    acc.into_iter()
        .map(|((class, _), (material, m, n))| LeakRate {
            class,
            material,
            surveyed_km: m / 1000.0,
            leaks: n,
            per_km: (m > 0.0).then(|| n as f64 / (m / 1000.0)),
        })
        .collect()
}

/// The coverage rows as CSV (header first), for the regulator's yearly report.
pub fn coverage_csv(rows: &[ClassCoverage]) -> String {
    let mut out = String::from(
        "year,class,label,segments,length_km,surveyed_km,required_km,overdue_segments,overdue_km,due_by_year_end_km,forecast_km,forecast_met,confirmed,source\n",
    );
    let km = |m: f64| format!("{:.3}", m / 1000.0);
    let quote = |s: &str| format!("\"{}\"", s.replace('"', "\"\""));
    for r in rows {
        out.push_str(&format!(
            "{},{},{},{},{},{},{},{},{},{},{},{},{},{}\n",
            r.year,
            quote(&r.class),
            quote(&r.label),
            r.segments,
            km(r.length_m),
            km(r.surveyed_m),
            r.required_m.map(km).unwrap_or_default(),
            r.overdue_segments,
            km(r.overdue_m),
            km(r.due_by_year_end_m),
            km(r.forecast_m),
            r.forecast_met,
            r.confirmed,
            quote(&r.source),
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use leakwatch_core::{DistrictId, GeoPoint};

    fn d(y: i32, m: u32, day: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, day).unwrap()
    }

    fn seg(id: &str, class: &str, material: Material, lat: f64) -> Segment {
        Segment {
            id: id.into(),
            district: DistrictId::parse("D").unwrap(),
            // 1 km north-south.
            geometry: vec![
                GeoPoint::new(lat, 9.0).unwrap(),
                GeoPoint::new(lat + 1000.0 / 111_195.0, 9.0).unwrap(),
            ],
            pressure_class: class.into(),
            material,
            diameter_mm: 100,
            year_laid: 1990,
            added_on: d(1990, 1, 1),
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
    fn coverage_counts_the_year_the_overdue_and_the_forecast() {
        // Ten 1 km low-pressure segments (20 % a year: 2 km) and two 1 km business
        // district segments under a custom table mixing both rules.
        let mut table = ObligationTable::it();
        table
            .obligations
            .push(ObligationTable::us().get("us_business").unwrap().clone());
        let mut segs: Vec<Segment> = (0..10)
            .map(|i| {
                seg(
                    &format!("B{i}"),
                    "it_bp",
                    Material::Steel,
                    45.0 + i as f64 * 0.02,
                )
            })
            .collect();
        segs.push(seg("U1", "us_business", Material::CastIron, 46.0));
        segs.push(seg("U2", "us_business", Material::CastIron, 46.1));
        let recs = vec![
            // 1.5 km of low pressure this year (a partial survey included), 1 km last year.
            rec("B0", d(2026, 2, 1), 1000.0),
            rec("B1", d(2026, 3, 1), 500.0),
            rec("B2", d(2025, 6, 1), 1000.0),
            // U1 overdue (last surveyed in 2024), U2 due in 2026.
            rec("U1", d(2024, 1, 10), 1000.0),
            rec("U2", d(2025, 6, 1), 1000.0),
        ];
        let today = d(2026, 6, 1);
        let rows = coverage(&segs, &recs, &table, today, 1000.0, &HashMap::new());
        let bp = rows.iter().find(|r| r.class == "it_bp").unwrap();
        assert_eq!(bp.segments, 10);
        assert!((bp.length_m - 10_000.0).abs() < 5.0);
        assert!((bp.surveyed_m - 1500.0).abs() < 1.0, "{}", bp.surveyed_m);
        assert!((bp.required_m.unwrap() - 2000.0).abs() < 1.0);
        assert!(bp.forecast_met && bp.forecast_m >= 2000.0 - 1.0);
        let us = rows.iter().find(|r| r.class == "us_business").unwrap();
        assert_eq!(us.overdue_segments, 1);
        assert!((us.overdue_m - 1000.0).abs() < 5.0);
        assert!(
            (us.due_by_year_end_m - 1000.0).abs() < 5.0,
            "{}",
            us.due_by_year_end_m
        );
        assert!(us.forecast_met, "with 1 km a day both are surveyed in time");
        // No capacity: the share is not reached and the overdue segment stays late.
        let none = coverage(&segs, &recs, &table, today, 1e-9, &HashMap::new());
        assert!(
            none.iter()
                .all(|r| r.class == "it_ap_mp" || !r.forecast_met)
        );
        let csv = coverage_csv(&rows);
        assert!(csv.starts_with("year,class,label,"));
        assert_eq!(csv.lines().count(), 1 + rows.len());
        assert!(csv.contains("2026,\"it_bp\",\"low pressure\",10,"), "{csv}");
    }

    #[test]
    fn leaks_per_km_by_class_and_material_in_the_window() {
        let segs = vec![
            seg("A", "it_bp", Material::CastIron, 45.0),
            seg("B", "it_bp", Material::Polyethylene, 45.1),
        ];
        let recs = vec![
            rec("A", d(2026, 2, 1), 1000.0),
            rec("A", d(2026, 8, 1), 1000.0),
            rec("B", d(2026, 2, 1), 1000.0),
            rec("B", d(2025, 2, 1), 1000.0), // outside the window
        ];
        let leaks = vec![
            LeakRecord {
                segment: "A".into(),
                date: d(2026, 2, 1),
            },
            LeakRecord {
                segment: "A".into(),
                date: d(2026, 8, 1),
            },
            LeakRecord {
                segment: "A".into(),
                date: d(2026, 8, 1),
            },
        ];
        let r = leak_rates(&segs, &recs, &leaks, d(2026, 1, 1), d(2026, 12, 31));
        assert_eq!(r.len(), 2);
        let iron = r.iter().find(|x| x.material == Material::CastIron).unwrap();
        assert!((iron.surveyed_km - 2.0).abs() < 1e-9);
        assert_eq!((iron.leaks, iron.per_km), (3, Some(1.5)));
        let pe = r
            .iter()
            .find(|x| x.material == Material::Polyethylene)
            .unwrap();
        assert_eq!((pe.leaks, pe.per_km), (0, Some(0.0)));
    }
}
