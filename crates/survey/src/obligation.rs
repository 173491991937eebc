//! Survey obligations per pressure class: a maximum interval between two surveys of a
//! segment, a calendar-year rule ("at least once every N calendar years"), and/or a
//! minimum share of the class's length to survey each calendar year.

use chrono::{Datelike, Months, NaiveDate};
use serde::{Deserialize, Serialize};

/// What the regulator asks of one pressure class.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Obligation {
    /// The class id segments carry (`us_business`, `it_bp`, ...).
    pub class: String,
    pub label: String,
    /// Two surveys of a segment at most this many months apart.
    #[serde(default)]
    pub max_interval_months: Option<u32>,
    /// At least once every this many calendar years (1: each calendar year).
    #[serde(default)]
    pub every_calendar_years: Option<u32>,
    /// At least this share of the class's length surveyed each calendar year.
    #[serde(default)]
    pub min_share_per_year: Option<f64>,
    /// Where the rule comes from.
    pub source: String,
    /// `false` where the figures could not be confirmed from the source: the
    /// utility must check them against its own regulator's text.
    pub confirmed: bool,
}

impl Obligation {
    /// The last day on which a segment last surveyed (or added) on `since` must be
    /// surveyed again, if this class has a per-segment rule.
    pub fn deadline(&self, since: NaiveDate) -> Option<NaiveDate> {
        let by_interval = self.max_interval_months.map(|m| {
            since
                .checked_add_months(Months::new(m))
                .unwrap_or(NaiveDate::MAX)
        });
        let by_calendar = self.every_calendar_years.map(|n| {
            NaiveDate::from_ymd_opt(since.year() + n as i32, 12, 31).unwrap_or(NaiveDate::MAX)
        });
        match (by_interval, by_calendar) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

/// The obligations in force, one per class.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ObligationTable {
    pub preset: String,
    pub obligations: Vec<Obligation>,
}

impl ObligationTable {
    /// US federal minimums for distribution lines, 49 CFR 192.723(b).
    pub fn us() -> Self {
        let src = "49 CFR 192.723(b)";
        ObligationTable {
            preset: "us".into(),
            obligations: vec![
                Obligation {
                    class: "us_business".into(),
                    label: "business districts".into(),
                    max_interval_months: Some(15),
                    every_calendar_years: Some(1),
                    min_share_per_year: None,
                    source: format!(
                        "{src}(1): intervals not exceeding 15 months, at least once each calendar year"
                    ),
                    confirmed: true,
                },
                Obligation {
                    class: "us_unprotected".into(),
                    label: "cathodically unprotected lines, electrical survey impractical".into(),
                    max_interval_months: Some(39),
                    every_calendar_years: Some(3),
                    min_share_per_year: None,
                    source: format!(
                        "{src}(2): at least once every 3 calendar years at intervals not exceeding 39 months"
                    ),
                    confirmed: true,
                },
                Obligation {
                    class: "us_other".into(),
                    label: "outside business districts".into(),
                    max_interval_months: Some(63),
                    every_calendar_years: Some(5),
                    min_share_per_year: None,
                    source: format!(
                        "{src}(2): at least once every 5 calendar years at intervals not exceeding 63 months"
                    ),
                    confirmed: true,
                },
            ],
        }
    }

    /// Italian distribution networks by pressure: ARERA's gas distribution quality
    /// regulation sets yearly minimum shares of the network to inspect by pressure
    /// class. The figures here are NOT confirmed (see DOMAIN.md): check them against
    /// the regulation in force and set your own table.
    pub fn it() -> Self {
        let src = "ARERA, quality regulation of gas distribution (programmed leak search); figures unconfirmed";
        ObligationTable {
            preset: "it".into(),
            obligations: vec![
                Obligation {
                    class: "it_ap_mp".into(),
                    label: "high and medium pressure".into(),
                    max_interval_months: None,
                    every_calendar_years: None,
                    min_share_per_year: Some(0.30),
                    source: src.into(),
                    confirmed: false,
                },
                Obligation {
                    class: "it_bp".into(),
                    label: "low pressure".into(),
                    max_interval_months: None,
                    every_calendar_years: None,
                    min_share_per_year: Some(0.20),
                    source: src.into(),
                    confirmed: false,
                },
            ],
        }
    }

    /// `it` or `us`.
    pub fn preset(name: &str) -> Option<Self> {
        match name {
            "it" => Some(Self::it()),
            "us" => Some(Self::us()),
            _ => None,
        }
    }

    pub fn get(&self, class: &str) -> Option<&Obligation> {
        self.obligations.iter().find(|o| o.class == class)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(y: i32, m: u32, day: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, day).unwrap()
    }

    #[test]
    fn business_districts_take_the_earlier_of_15_months_and_the_next_calendar_year() {
        let t = ObligationTable::us();
        let b = t.get("us_business").unwrap();
        // Surveyed in March: 15 months is June of next year, before its end.
        assert_eq!(b.deadline(d(2025, 3, 10)), Some(d(2026, 6, 10)));
        // Surveyed in November: 15 months would be February of the year after next;
        // the calendar-year rule wants one next year.
        assert_eq!(b.deadline(d(2025, 11, 20)), Some(d(2026, 12, 31)));
    }

    #[test]
    fn outside_business_districts_five_calendar_years_or_63_months() {
        let o = ObligationTable::us().get("us_other").cloned().unwrap();
        // January 2020 + 63 months = April 2025, before the end of 2025.
        assert_eq!(o.deadline(d(2020, 1, 15)), Some(d(2025, 4, 15)));
        // December 2020: 63 months is March 2026, after the end of 2025.
        assert_eq!(o.deadline(d(2020, 12, 1)), Some(d(2025, 12, 31)));
        let u = ObligationTable::us()
            .get("us_unprotected")
            .cloned()
            .unwrap();
        assert_eq!(u.deadline(d(2024, 2, 29)), Some(d(2027, 5, 29)));
    }

    #[test]
    fn month_ends_clamp_and_share_only_classes_have_no_segment_deadline() {
        let o = Obligation {
            class: "x".into(),
            label: "x".into(),
            max_interval_months: Some(1),
            every_calendar_years: None,
            min_share_per_year: None,
            source: String::new(),
            confirmed: false,
        };
        assert_eq!(o.deadline(d(2025, 1, 31)), Some(d(2025, 2, 28)));
        let it = ObligationTable::it();
        assert_eq!(it.get("it_bp").unwrap().deadline(d(2025, 1, 1)), None);
        assert!(it.obligations.iter().all(|o| !o.confirmed));
        assert!(
            ObligationTable::us()
                .obligations
                .iter()
                .all(|o| o.confirmed)
        );
    }
}
