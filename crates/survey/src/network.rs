//! The network's pipe segments and their survey records.

use chrono::NaiveDate;
use leakwatch_core::{DistrictId, GeoPoint};
use serde::{Deserialize, Serialize};

/// What a pipe is made of; older metallic pipes leak more.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    Serialize,
    Deserialize,
    strum::IntoStaticStr,
    strum::VariantArray,
    strum::Display,
)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum Material {
    CastIron,
    /// Steel without cathodic protection.
    UnprotectedSteel,
    /// Cathodically protected steel.
    Steel,
    Polyethylene,
    Other,
}

impl std::str::FromStr for Material {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        leakwatch_core::names::parse("material", s)
    }
}

impl Material {
    /// The word the database, the API and GeoJSON use (`cast_iron`, ...).
    pub fn as_str(self) -> &'static str {
        self.into()
    }

    /// Relative leak propensity (polyethylene = 1), a coarse prior used by the risk
    /// score; a utility's own leak history per material should replace it.
    pub fn propensity(self) -> f64 {
        match self {
            Material::CastIron => 4.0,
            Material::UnprotectedSteel => 3.0,
            Material::Steel => 1.5,
            Material::Polyethylene => 1.0,
            Material::Other => 2.0,
        }
    }
}

/// A pipe segment (usually a street's main between two junctions).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Segment {
    pub id: String,
    pub district: DistrictId,
    /// The line along the pipe, at least two points.
    pub geometry: Vec<GeoPoint>,
    /// A pressure class of the obligation table in use (e.g. `it_mp`, `us_business`).
    pub pressure_class: String,
    pub material: Material,
    pub diameter_mm: u32,
    pub year_laid: i32,
    /// When it entered the register (a segment added mid-year is first due one
    /// interval after this date).
    pub added_on: NaiveDate,
}

impl Segment {
    /// Length along the geometry, metres.
    pub fn length_m(&self) -> f64 {
        self.geometry
            .windows(2)
            .map(|w| w[0].distance_km(&w[1]) * 1000.0)
            .sum()
    }

    /// The middle of the geometry's extent (for distances between segments).
    pub fn midpoint(&self) -> GeoPoint {
        let n = self.geometry.len().max(1) as f64;
        let (lat, lon) = self
            .geometry
            .iter()
            .fold((0.0, 0.0), |(a, b), p| (a + p.lat, b + p.lon));
        GeoPoint {
            lat: lat / n,
            lon: lon / n,
        }
    }
}

/// A survey of (part of) a segment: the crew walked or drove `covered_m` metres of it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SurveyRecord {
    pub segment: String,
    pub date: NaiveDate,
    pub covered_m: f64,
}

/// Coverage of at least this share of a segment's length counts as surveying it
/// whole (surveyors' lengths and the register's rarely agree to the metre).
pub const FULL_COVERAGE: f64 = 0.95;
/// Partial surveys of one segment add up to a whole survey when they fall within
/// this many days of each other (a campaign).
pub const CAMPAIGN_DAYS: i64 = 31;

/// The date of the last whole survey of a segment of `length_m` metres, from its
/// records (any order): a record covering the segment, or partial records within
/// [`CAMPAIGN_DAYS`] whose coverage adds up to it.
pub fn last_full_survey(length_m: f64, records: &[&SurveyRecord]) -> Option<NaiveDate> {
    let mut recs: Vec<&SurveyRecord> = records.to_vec();
    recs.sort_by_key(|r| r.date);
    let need = length_m * FULL_COVERAGE;
    let mut last = None;
    for (i, r) in recs.iter().enumerate() {
        let window_start = r.date - chrono::Duration::days(CAMPAIGN_DAYS);
        let covered: f64 = recs[..=i]
            .iter()
            .filter(|p| p.date > window_start)
            .map(|p| p.covered_m.max(0.0))
            .sum();
        if covered >= need {
            last = Some(r.date);
        }
    }
    last
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(y: i32, m: u32, day: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, day).unwrap()
    }

    fn rec(date: NaiveDate, covered_m: f64) -> SurveyRecord {
        SurveyRecord {
            segment: "S".into(),
            date,
            covered_m,
        }
    }

    #[test]
    fn length_follows_the_geometry() {
        let s = Segment {
            id: "S".into(),
            district: DistrictId::parse("D").unwrap(),
            // Two legs of about 111 m each (0.001 degree of latitude).
            geometry: vec![
                GeoPoint::new(45.0, 9.0).unwrap(),
                GeoPoint::new(45.001, 9.0).unwrap(),
                GeoPoint::new(45.002, 9.0).unwrap(),
            ],
            pressure_class: "it_bp".into(),
            material: Material::Steel,
            diameter_mm: 100,
            year_laid: 1980,
            added_on: d(2020, 1, 1),
        };
        assert!((s.length_m() - 222.4).abs() < 1.0, "{}", s.length_m());
        assert!((s.midpoint().lat - 45.001).abs() < 1e-9);
    }

    #[test]
    fn partial_surveys_add_up_within_a_campaign_only() {
        let a = rec(d(2025, 3, 1), 60.0);
        let b = rec(d(2025, 3, 20), 40.0);
        assert_eq!(last_full_survey(100.0, &[&a]), None);
        assert_eq!(last_full_survey(100.0, &[&b, &a]), Some(d(2025, 3, 20)));
        // Too far apart: two halves a season apart are not a survey.
        let late = rec(d(2025, 6, 1), 40.0);
        assert_eq!(last_full_survey(100.0, &[&a, &late]), None);
        // A whole survey later wins.
        let whole = rec(d(2025, 9, 9), 97.0);
        assert_eq!(
            last_full_survey(100.0, &[&a, &b, &whole]),
            Some(d(2025, 9, 9))
        );
    }
}
