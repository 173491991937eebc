//! What a crew records on site: leak or not, its class, gas readings, repair.

use crate::LeakClassTable;
use serde::{Deserialize, Serialize};

/// A stabilised combustible-gas reading, in % of the lower explosive limit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GasReading {
    pub percent_lel: f64,
    /// Where it was taken, e.g. `cellar, by the meter`.
    pub place: String,
}

/// The crew's finding at the end of a job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SiteFinding {
    pub leak_found: bool,
    /// The leak's class, a code of the deployment's [`LeakClassTable`]; present iff
    /// a leak was found.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leak_class: Option<String>,
    #[serde(default)]
    pub gas_readings: Vec<GasReading>,
    /// The leak was repaired during this visit (otherwise a follow-up order is due).
    #[serde(default)]
    pub repaired: bool,
    #[serde(default)]
    pub notes: String,
}

/// What the finding says about the alert(s) that led to the job.
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
pub enum AlertOutcome {
    ConfirmedLeak,
    FalsePositive,
}

impl std::str::FromStr for AlertOutcome {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        crate::names::parse("alert outcome", s)
    }
}

impl AlertOutcome {
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

impl SiteFinding {
    /// Checks the finding against the deployment's classes: a class is required iff
    /// a leak was found and must be in `table`; without a leak nothing can have been
    /// repaired; every reading has a finite %LEL in 0..=100 and a place. All
    /// problems are reported, separated by `; `.
    pub fn validate(&self, table: &LeakClassTable) -> Result<(), String> {
        let mut problems = Vec::new();
        match (self.leak_found, &self.leak_class) {
            (true, None) => problems.push("a leak was found: its class is required".to_string()),
            (true, Some(code)) => {
                if table.get(code).is_none() {
                    problems.push(table.unknown(code));
                }
            }
            (false, Some(code)) => {
                problems.push(format!("no leak was found, yet class {code:?} is given"))
            }
            (false, None) => {}
        }
        if !self.leak_found && self.repaired {
            problems.push("no leak was found, so nothing can have been repaired".into());
        }
        for (i, r) in self.gas_readings.iter().enumerate() {
            if !r.percent_lel.is_finite() || !(0.0..=100.0).contains(&r.percent_lel) {
                problems.push(format!(
                    "gas reading {} is {} %LEL, outside 0 to 100",
                    i + 1,
                    r.percent_lel
                ));
            }
            if r.place.trim().is_empty() {
                problems.push(format!("gas reading {} has no place", i + 1));
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems.join("; "))
        }
    }

    /// Confirmed leak when a leak was found, false positive otherwise.
    pub fn outcome(&self) -> AlertOutcome {
        if self.leak_found {
            AlertOutcome::ConfirmedLeak
        } else {
            AlertOutcome::FalsePositive
        }
    }

    /// A leak was found and not repaired: a follow-up repair order is needed.
    pub fn needs_follow_up(&self) -> bool {
        self.leak_found && !self.repaired
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reading(percent_lel: f64, place: &str) -> GasReading {
        GasReading {
            percent_lel,
            place: place.into(),
        }
    }

    fn leak(class: &str, repaired: bool) -> SiteFinding {
        SiteFinding {
            leak_found: true,
            leak_class: Some(class.into()),
            gas_readings: vec![reading(12.5, "kerb box")],
            repaired,
            notes: "corroded joint".into(),
        }
    }

    fn no_leak() -> SiteFinding {
        SiteFinding {
            leak_found: false,
            leak_class: None,
            gas_readings: vec![reading(0.0, "cellar")],
            repaired: false,
            notes: String::new(),
        }
    }

    #[test]
    fn good_findings_pass() {
        let it = LeakClassTable::italian();
        leak("A2", false).validate(&it).unwrap();
        leak("C", true).validate(&it).unwrap();
        no_leak().validate(&it).unwrap();
        let mut f = no_leak();
        f.gas_readings.clear();
        f.validate(&it).unwrap();
    }

    #[test]
    fn the_class_is_required_iff_a_leak_was_found_and_must_be_known() {
        let it = LeakClassTable::italian();
        let mut f = leak("A1", false);
        f.leak_class = None;
        assert!(f.validate(&it).unwrap_err().contains("class is required"));
        let err = leak("2", false).validate(&it).unwrap_err();
        assert!(err.contains("known: A1, A2, B, C"), "{err}");
        leak("2", false).validate(&LeakClassTable::us()).unwrap();
        let mut f = no_leak();
        f.leak_class = Some("B".into());
        assert!(f.validate(&it).is_err());
    }

    #[test]
    fn nothing_is_repaired_without_a_leak() {
        let mut f = no_leak();
        f.repaired = true;
        assert!(f.validate(&LeakClassTable::us()).is_err());
    }

    #[test]
    fn readings_must_be_plausible_and_placed() {
        let us = LeakClassTable::us();
        for bad in [-0.1, 100.1, f64::NAN, f64::INFINITY] {
            let mut f = leak("1", false);
            f.gas_readings.push(reading(bad, "door"));
            assert!(f.validate(&us).is_err(), "{bad}");
        }
        let mut f = leak("1", false);
        f.gas_readings.push(reading(100.0, " "));
        assert!(
            f.validate(&us)
                .unwrap_err()
                .contains("reading 2 has no place")
        );
        // all problems at once
        let f = SiteFinding {
            leak_found: true,
            leak_class: None,
            gas_readings: vec![reading(-1.0, "")],
            repaired: false,
            notes: String::new(),
        };
        assert_eq!(f.validate(&us).unwrap_err().matches("; ").count(), 2);
    }

    #[test]
    fn outcome_and_follow_up() {
        assert_eq!(leak("B", false).outcome(), AlertOutcome::ConfirmedLeak);
        assert_eq!(no_leak().outcome(), AlertOutcome::FalsePositive);
        assert!(leak("B", false).needs_follow_up());
        assert!(!leak("B", true).needs_follow_up());
        assert!(!no_leak().needs_follow_up());
    }

    #[test]
    fn findings_read_from_json() {
        let f: SiteFinding = serde_json::from_str(r#"{"leak_found":false}"#).unwrap();
        assert_eq!(f.outcome(), AlertOutcome::FalsePositive);
        assert!(f.gas_readings.is_empty());
        let f: SiteFinding = serde_json::from_str(
            r#"{"leak_found":true,"leak_class":"A1","gas_readings":[{"percent_lel":85,"place":"stairwell"}]}"#,
        )
        .unwrap();
        f.validate(&LeakClassTable::italian()).unwrap();
        assert_eq!(
            serde_json::to_string(&f.outcome()).unwrap(),
            "\"confirmed_leak\""
        );
        assert_eq!(AlertOutcome::FalsePositive.as_str(), "false_positive");
    }
}
