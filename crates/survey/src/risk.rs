//! How likely a segment is to be leaking now, from what leakwatch knows: open
//! network-leak alerts in its district (the meters say gas is being lost there), its
//! own leak history and its neighbours', its material and its age.

use crate::network::{Material, Segment};
use chrono::{Datelike, NaiveDate};
use leakwatch_core::{AlertKind, DistrictId, Severity};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// The alert kinds that say a district's network (not a customer's installation) is
/// losing gas.
pub const NETWORK_KINDS: [AlertKind; 3] = [
    AlertKind::DistrictBalance,
    AlertKind::InflowNightFlow,
    AlertKind::PressureDrop,
];

/// Weights of the risk score; the defaults make a district's open network alert
/// outweigh anything a segment's material or age can add.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RiskWeights {
    /// Per open network alert in the district (times 1 for info, 2 warning, 3 critical).
    pub district_alert: f64,
    /// Per leak found on the segment, halving every `history_half_life_years`.
    pub own_leak: f64,
    /// Per leak found on a segment within `neighbour_m` metres.
    pub neighbour_leak: f64,
    pub neighbour_m: f64,
    pub history_half_life_years: f64,
    /// Times the material's propensity (polyethylene 1, cast iron 4).
    pub material: f64,
    /// Per decade of age.
    pub age_per_decade: f64,
}

impl Default for RiskWeights {
    fn default() -> Self {
        RiskWeights {
            district_alert: 100.0,
            own_leak: 10.0,
            neighbour_leak: 3.0,
            neighbour_m: 200.0,
            history_half_life_years: 3.0,
            material: 1.0,
            age_per_decade: 0.5,
        }
    }
}

/// An open alert on a district's network.
#[derive(Debug, Clone, PartialEq)]
pub struct DistrictSignal {
    pub district: DistrictId,
    pub kind: AlertKind,
    pub severity: Severity,
}

/// A leak found on a segment (by survey or otherwise).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LeakRecord {
    pub segment: String,
    pub date: NaiveDate,
}

/// The parts of a segment's score, for the program's explanation.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize)]
pub struct Risk {
    pub district: f64,
    pub own: f64,
    pub neighbours: f64,
    pub material: f64,
    pub age: f64,
}

impl Risk {
    pub fn total(&self) -> f64 {
        self.district + self.own + self.neighbours + self.material + self.age
    }
}

fn severity_weight(s: Severity) -> f64 {
    match s {
        Severity::Info => 1.0,
        Severity::Warning => 2.0,
        Severity::Critical => 3.0,
    }
}

/// The program's priority of a segment: the district's alerts count at once; the
/// segment's own propensity to leak (history, material, age) is a rate `λ`, and it
/// counts as `sqrt(λ)` times the years since the last survey. Surveying a segment
/// when `sqrt(λ) t` reaches a common level gives intervals proportional to
/// `1 / sqrt(λ)`, which is what minimises the mean time a leak waits to be found for a
/// given length surveyed (waiting `λ L T / 2` summed over segments, with `Σ L / T`
/// fixed): a segment four times as leak-prone is surveyed twice as often, not four
/// times, and none is left for ever.
pub fn priority(r: &Risk, days_since_survey: i64) -> f64 {
    let years = days_since_survey.max(0) as f64 / 365.25;
    let rate = (r.own + r.neighbours + r.material + r.age).max(0.0);
    r.district + rate.sqrt() * years
}

/// Scores every segment on `today`.
pub fn score(
    segments: &[Segment],
    signals: &[DistrictSignal],
    leaks: &[LeakRecord],
    w: &RiskWeights,
    today: NaiveDate,
) -> HashMap<String, Risk> {
    let mut by_district: HashMap<&DistrictId, f64> = HashMap::new();
    for s in signals.iter().filter(|s| NETWORK_KINDS.contains(&s.kind)) {
        *by_district.entry(&s.district).or_default() += severity_weight(s.severity);
    }
    let decay = |date: NaiveDate| {
        let years = (today - date).num_days().max(0) as f64 / 365.25;
        0.5f64.powf(years / w.history_half_life_years.max(0.1))
    };
    let index: HashMap<&str, &Segment> = segments.iter().map(|s| (s.id.as_str(), s)).collect();
    let mut own: HashMap<&str, f64> = HashMap::new();
    for l in leaks.iter().filter(|l| l.date <= today) {
        *own.entry(l.segment.as_str()).or_default() += decay(l.date);
    }
    let leak_points: Vec<(&str, leakwatch_core::GeoPoint, f64)> = own
        .iter()
        .filter_map(|(id, v)| index.get(id).map(|s| (*id, s.midpoint(), *v)))
        .collect();
    segments
        .iter()
        .map(|s| {
            let mid = s.midpoint();
            let neighbours: f64 = leak_points
                .iter()
                .filter(|(id, p, _)| *id != s.id && p.distance_km(&mid) * 1000.0 <= w.neighbour_m)
                .map(|(_, _, v)| v)
                .sum();
            let age_decades = (today.year() - s.year_laid).max(0) as f64 / 10.0;
            let r = Risk {
                district: w.district_alert * by_district.get(&s.district).copied().unwrap_or(0.0),
                own: w.own_leak * own.get(s.id.as_str()).copied().unwrap_or(0.0),
                neighbours: w.neighbour_leak * neighbours,
                material: w.material * Material::propensity(s.material),
                age: w.age_per_decade * age_decades,
            };
            (s.id.clone(), r)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use leakwatch_core::GeoPoint;

    fn seg(id: &str, district: &str, lat: f64, material: Material, year: i32) -> Segment {
        Segment {
            id: id.into(),
            district: DistrictId::parse(district).unwrap(),
            geometry: vec![
                GeoPoint::new(lat, 9.0).unwrap(),
                GeoPoint::new(lat, 9.001).unwrap(),
            ],
            pressure_class: "it_bp".into(),
            material,
            diameter_mm: 100,
            year_laid: year,
            added_on: NaiveDate::from_ymd_opt(2000, 1, 1).unwrap(),
        }
    }

    #[test]
    fn a_district_losing_gas_comes_before_old_cast_iron_elsewhere() {
        let today = NaiveDate::from_ymd_opt(2026, 6, 1).unwrap();
        let segs = vec![
            seg(
                "new-pe-in-alerted",
                "D1",
                45.0,
                Material::Polyethylene,
                2020,
            ),
            seg("old-iron-quiet", "D2", 45.1, Material::CastIron, 1930),
            seg("pe-quiet", "D2", 45.2, Material::Polyethylene, 2020),
        ];
        let signals = vec![DistrictSignal {
            district: DistrictId::parse("D1").unwrap(),
            kind: AlertKind::DistrictBalance,
            severity: Severity::Warning,
        }];
        let r = score(&segs, &signals, &[], &RiskWeights::default(), today);
        let t = |id: &str| r[id].total();
        assert!(t("new-pe-in-alerted") > t("old-iron-quiet"));
        assert!(t("old-iron-quiet") > t("pe-quiet"));
        // A customer-side alert kind says nothing about the network.
        let customer = vec![DistrictSignal {
            district: DistrictId::parse("D2").unwrap(),
            kind: AlertKind::ContinuousFlow,
            severity: Severity::Critical,
        }];
        let r2 = score(&segs, &customer, &[], &RiskWeights::default(), today);
        assert_eq!(r2["pe-quiet"].district, 0.0);
    }

    #[test]
    fn priority_grows_with_time_since_the_survey_and_an_alert_counts_at_once() {
        let iron = Risk {
            material: 4.0,
            age: 4.0,
            ..Risk::default()
        };
        let pe = Risk {
            material: 1.0,
            age: 0.5,
            ..Risk::default()
        };
        // Cast iron surveyed last year before polyethylene surveyed a year ago...
        assert!(priority(&iron, 365) > priority(&pe, 365));
        // ... but not before polyethylene left alone for three years (intervals go
        // as one over the square root of the rate: sqrt(8 / 1.5) = 2.3).
        assert!(priority(&pe, 3 * 365) > priority(&iron, 365));
        assert!(priority(&pe, 2 * 365) < priority(&iron, 365));
        // Just surveyed: nothing left but the district's alert.
        let alerted = Risk {
            district: 200.0,
            ..pe
        };
        assert_eq!(priority(&alerted, 0), 200.0);
        assert!(priority(&alerted, 0) > priority(&iron, 20 * 365));
    }

    #[test]
    fn leak_history_counts_for_the_segment_and_its_neighbours_and_fades() {
        let today = NaiveDate::from_ymd_opt(2026, 6, 1).unwrap();
        let segs = vec![
            seg("leaky", "D", 45.0, Material::Steel, 1990),
            // About 111 m away: a neighbour.
            seg("next-door", "D", 45.001, Material::Steel, 1990),
            seg("far", "D", 45.05, Material::Steel, 1990),
        ];
        let recent = vec![LeakRecord {
            segment: "leaky".into(),
            date: NaiveDate::from_ymd_opt(2026, 1, 1).unwrap(),
        }];
        let r = score(&segs, &[], &recent, &RiskWeights::default(), today);
        assert!(r["leaky"].own > 0.0);
        assert!(r["next-door"].neighbours > 0.0);
        assert_eq!(r["far"].neighbours, 0.0);
        let old = vec![LeakRecord {
            segment: "leaky".into(),
            date: NaiveDate::from_ymd_opt(2014, 1, 1).unwrap(),
        }];
        let r_old = score(&segs, &[], &old, &RiskWeights::default(), today);
        assert!(
            r_old["leaky"].own < r["leaky"].own / 8.0,
            "12 years is four half-lives"
        );
    }
}
