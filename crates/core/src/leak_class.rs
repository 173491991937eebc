//! Leak classes found on site, and the repair deadline each implies.
//!
//! A crew that finds a leak classifies it; the class sets how soon it must be
//! repaired. The table is data, not code: two presets are shipped (the Italian
//! classes of CIG Guideline no. 7 and the US GPTC grades) and a deployment can
//! configure its own table (it (de)serialises with serde; check it with
//! [`LeakClassTable::validate`]).
//!
//! Every class names the rule its deadline comes from in `source`. A deadline that
//! could not be confirmed from a public rule carries [`DEFAULT_TO_BE_CHECKED`] at
//! the start of its source: it is a placeholder an operator must confirm.

use crate::Timestamp;
use serde::{Deserialize, Serialize};
use std::collections::HashSet;

/// The start of a class's `source` when its deadline is a default nobody has
/// confirmed against the public rule yet.
pub const DEFAULT_TO_BE_CHECKED: &str = "default to be checked";

/// One class (or grade) of leak.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeakClass {
    /// What the crew records, e.g. `A1` or `2`. Matched exactly.
    pub code: String,
    pub name: String,
    pub description: String,
    /// Hours from discovery within which the leak must be repaired; `Some(0)` means
    /// at once (made safe and repaired, or watched continuously until safe); `None`
    /// means no repair deadline: the leak is monitored and re-evaluated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repair_within_h: Option<u32>,
    /// The public rule the deadline comes from, or a text starting with
    /// [`DEFAULT_TO_BE_CHECKED`].
    pub source: String,
}

impl LeakClass {
    /// Whether the deadline is an unconfirmed default.
    pub fn is_default_to_be_checked(&self) -> bool {
        self.source.starts_with(DEFAULT_TO_BE_CHECKED)
    }
}

/// The classes a deployment uses, with the preset they come from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeakClassTable {
    /// `it`, `us`, or a deployment's own name.
    pub preset: String,
    pub classes: Vec<LeakClass>,
}

const CIG_7: &str = "CIG Guideline no. 7 \"Classificazione delle dispersioni\" (2011, rev. 2017)";

fn class(code: &str, name: &str, description: &str, hours: Option<u32>, source: &str) -> LeakClass {
    LeakClass {
        code: code.into(),
        name: name.into(),
        description: description.into(),
        repair_within_h: hours,
        source: source.into(),
    }
}

impl LeakClassTable {
    /// The names [`LeakClassTable::preset`] knows.
    pub const PRESETS: &'static [&'static str] = &["it", "us"];

    /// The Italian classes A1, A2, B, C of CIG Guideline no. 7. The classes come
    /// from the guideline; its deadlines per class are not confirmed here, so every
    /// deadline is a default to be checked (the 2017 revision shortened class C's),
    /// and the one-line descriptions are summaries to be checked against the
    /// guideline's own wording as well.
    pub fn italian() -> Self {
        let unconfirmed =
            format!("{DEFAULT_TO_BE_CHECKED} (class from {CIG_7}; deadline not confirmed)");
        LeakClassTable {
            preset: "it".into(),
            classes: vec![
                class(
                    "A1",
                    "Class A1",
                    "Dangerous leak: immediate intervention to make the place safe and repair.",
                    Some(0),
                    &unconfirmed,
                ),
                class(
                    "A2",
                    "Class A2",
                    "Leak that may become dangerous: repair within a short time.",
                    Some(24),
                    &unconfirmed,
                ),
                class(
                    "B",
                    "Class B",
                    "Leak not dangerous now: repair scheduled.",
                    Some(30 * 24),
                    &unconfirmed,
                ),
                class(
                    "C",
                    "Class C",
                    "Minor leak: repair planned and kept under watch meanwhile.",
                    Some(180 * 24),
                    &unconfirmed,
                ),
            ],
        }
    }

    /// The US grades 1, 2, 3 of the GPTC Guide. Grade 2's deadline follows the
    /// Massachusetts rule (12 months, taken as 365 days); other states differ.
    pub fn us() -> Self {
        LeakClassTable {
            preset: "us".into(),
            classes: vec![
                class(
                    "1",
                    "Grade 1",
                    "A hazard now (e.g. gas in or under a building, >= 80 % LEL in a confined \
                     space): repaired immediately or watched continuously until safe.",
                    Some(0),
                    "GPTC Guide: Grade 1 repaired immediately or watched continuously until safe",
                ),
                class(
                    "2",
                    "Grade 2",
                    "Not hazardous now, scheduled for repair; re-checked every 6 months \
                     until repaired.",
                    Some(365 * 24),
                    "Massachusetts rule for Grade 2 (within 12 months, re-checked every 6); \
                     state rules vary",
                ),
                class(
                    "3",
                    "Grade 3",
                    "Not hazardous, expected to stay so: re-evaluated periodically, no \
                     repair deadline.",
                    None,
                    "GPTC Guide: Grade 3 re-evaluated periodically",
                ),
            ],
        }
    }

    /// A shipped preset by name (`it` or `us`).
    pub fn preset(name: &str) -> Result<Self, String> {
        match name {
            "it" => Ok(Self::italian()),
            "us" => Ok(Self::us()),
            other => Err(format!(
                "unknown leak-class preset {other:?}; known: {}",
                Self::PRESETS.join(", ")
            )),
        }
    }

    /// The class with this code (exact match).
    pub fn get(&self, code: &str) -> Option<&LeakClass> {
        self.classes.iter().find(|c| c.code == code)
    }

    /// When a leak of class `code` found at `found_at` must be repaired by
    /// (wall-clock time: the deadlines are in calendar hours, not working time);
    /// `Ok(None)` for a class without a deadline; an error for an unknown code.
    pub fn repair_due(&self, code: &str, found_at: Timestamp) -> Result<Option<Timestamp>, String> {
        let class = self.get(code).ok_or_else(|| self.unknown(code))?;
        Ok(class
            .repair_within_h
            .map(|h| found_at + chrono::Duration::hours(i64::from(h))))
    }

    /// The error for a code the table does not have, listing the codes it has.
    pub(crate) fn unknown(&self, code: &str) -> String {
        let known: Vec<_> = self.classes.iter().map(|c| c.code.as_str()).collect();
        format!(
            "unknown leak class {code:?} in table {:?}; known: {}",
            self.preset,
            known.join(", ")
        )
    }

    /// Checks a (configured) table: at least one class, codes non-blank and
    /// unique, names and sources non-blank.
    pub fn validate(&self) -> Result<(), String> {
        if self.classes.is_empty() {
            return Err(format!("leak-class table {:?} has no classes", self.preset));
        }
        let mut seen = HashSet::new();
        for c in &self.classes {
            if c.code.trim().is_empty() {
                return Err("a leak class has an empty code".into());
            }
            if !seen.insert(c.code.as_str()) {
                return Err(format!("leak class {:?} appears twice", c.code));
            }
            if c.name.trim().is_empty() {
                return Err(format!("leak class {:?} has an empty name", c.code));
            }
            if c.source.trim().is_empty() {
                return Err(format!(
                    "leak class {:?} has no source (write {DEFAULT_TO_BE_CHECKED:?} if unconfirmed)",
                    c.code
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn presets_are_valid_and_named() {
        for name in LeakClassTable::PRESETS {
            let t = LeakClassTable::preset(name).unwrap();
            assert_eq!(t.preset, *name);
            t.validate().unwrap();
        }
        let err = LeakClassTable::preset("fr").unwrap_err();
        assert!(err.contains("it, us"), "{err}");
    }

    #[test]
    fn italian_classes_are_all_defaults_to_be_checked() {
        let t = LeakClassTable::italian();
        let codes: Vec<_> = t.classes.iter().map(|c| c.code.as_str()).collect();
        assert_eq!(codes, ["A1", "A2", "B", "C"]);
        assert!(t.classes.iter().all(|c| c.is_default_to_be_checked()));
        assert!(
            t.classes
                .iter()
                .all(|c| c.source.contains("CIG Guideline no. 7"))
        );
        // deadlines grow with the class
        let hours: Vec<_> = t
            .classes
            .iter()
            .map(|c| c.repair_within_h.unwrap())
            .collect();
        assert!(hours.windows(2).all(|w| w[0] < w[1]), "{hours:?}");
    }

    #[test]
    fn us_grades_follow_gptc() {
        let t = LeakClassTable::us();
        assert_eq!(t.get("1").unwrap().repair_within_h, Some(0));
        assert_eq!(t.get("2").unwrap().repair_within_h, Some(8760));
        assert_eq!(t.get("3").unwrap().repair_within_h, None);
        assert!(t.classes.iter().all(|c| !c.is_default_to_be_checked()));
        assert!(t.get("4").is_none());
    }

    #[test]
    fn repair_due_adds_calendar_hours() {
        let it = LeakClassTable::italian();
        let found = ts("2026-11-26T10:00:00Z");
        assert_eq!(it.repair_due("A1", found).unwrap(), Some(found));
        assert_eq!(
            it.repair_due("A2", found).unwrap(),
            Some(ts("2026-11-27T10:00:00Z"))
        );
        assert_eq!(
            it.repair_due("B", found).unwrap(),
            Some(ts("2026-12-26T10:00:00Z"))
        );
        let us = LeakClassTable::us();
        assert_eq!(us.repair_due("3", found).unwrap(), None);
        let err = us.repair_due("A1", found).unwrap_err();
        assert!(err.contains("known: 1, 2, 3"), "{err}");
    }

    #[test]
    fn validate_refuses_bad_tables() {
        let mut t = LeakClassTable::us();
        t.classes[1].code = "1".into();
        assert!(t.validate().unwrap_err().contains("twice"));
        let mut t = LeakClassTable::us();
        t.classes[0].code = " ".into();
        assert!(t.validate().is_err());
        let mut t = LeakClassTable::us();
        t.classes[0].source = String::new();
        assert!(t.validate().is_err());
        let t = LeakClassTable {
            preset: "mine".into(),
            classes: vec![],
        };
        assert!(t.validate().is_err());
    }

    #[test]
    fn a_deployment_configures_its_own_table() {
        let json = r#"{"preset":"mine","classes":[
            {"code":"X","name":"Urgent","description":"","repair_within_h":4,"source":"company rule 12"},
            {"code":"Y","name":"Watch","description":"","source":"default to be checked"}]}"#;
        let t: LeakClassTable = serde_json::from_str(json).unwrap();
        t.validate().unwrap();
        assert_eq!(t.get("Y").unwrap().repair_within_h, None);
        assert!(t.get("Y").unwrap().is_default_to_be_checked());
        let back: LeakClassTable =
            serde_json::from_str(&serde_json::to_string(&LeakClassTable::italian()).unwrap())
                .unwrap();
        assert_eq!(back, LeakClassTable::italian());
    }
}
