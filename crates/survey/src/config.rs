//! The `[survey]` configuration section: which obligation table is in force, the survey
//! crews' capacity, and the risk weights.

use crate::obligation::ObligationTable;
use crate::risk::RiskWeights;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SurveyConfig {
    /// `it` (ARERA shares by pressure class; figures unconfirmed) or `us` (49 CFR
    /// 192.723(b)); ignored when `obligation_table` is given.
    pub obligations: String,
    /// A utility's own table (replaces the preset).
    pub obligation_table: Option<ObligationTable>,
    /// Metres of main the survey crews cover in a working day, all crews together.
    pub capacity_m_per_day: f64,
    /// A survey order holds at most this many metres (one crew's day).
    pub order_max_m: f64,
    /// The risk-based program keeps pace with the calendar order (oldest survey
    /// first) from the start of each year: every segment surveyed at least as often,
    /// at most this many working days later (`Program::keep_pace`); absent: no pace,
    /// all the capacity left after the obligations goes by risk (the default: with a
    /// lag of 20 days the simulation found signalled leaks more slowly and the others
    /// no sooner, see docs/survey.md).
    pub pace_lag_days: Option<u32>,
    pub risk: RiskWeights,
}

impl Default for SurveyConfig {
    fn default() -> Self {
        SurveyConfig {
            obligations: "it".into(),
            obligation_table: None,
            capacity_m_per_day: 4000.0,
            order_max_m: 4000.0,
            pace_lag_days: None,
            risk: RiskWeights::default(),
        }
    }
}

impl SurveyConfig {
    /// The table in force.
    pub fn table(&self) -> Result<ObligationTable, String> {
        match &self.obligation_table {
            Some(t) => Ok(t.clone()),
            None => ObligationTable::preset(&self.obligations).ok_or_else(|| {
                format!(
                    "survey.obligations: unknown preset {:?}; expected it or us, or give survey.obligation_table",
                    self.obligations
                )
            }),
        }
    }

    pub fn validate(&self) -> Result<(), String> {
        self.table()?;
        if !(self.capacity_m_per_day.is_finite() && self.capacity_m_per_day > 0.0) {
            return Err("survey.capacity_m_per_day must be a positive number of metres".into());
        }
        if !(self.order_max_m.is_finite() && self.order_max_m > 0.0) {
            return Err("survey.order_max_m must be a positive number of metres".into());
        }
        Ok(())
    }
}
