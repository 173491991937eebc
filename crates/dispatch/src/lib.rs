//! Work orders and crews: turning an escalated alert into a job, choosing the crew,
//! walking the job through its lifecycle, planning the day's work.
//!
//! The decisions are pure functions: the lifecycle and the escalation mapping in
//! `leakwatch_core`, crew choice in [`choose`], incident grouping in [`grouping`],
//! day plans in [`plan`], and the dispatcher's own rules in [`decide`]
//! (`decide(&Snapshot, Event, now) -> Vec<Command>`); travel times come from
//! [`travel`]. [`Dispatcher`] loads a snapshot in one dispatch transaction
//! (`leakwatch_store::UnitOfWork`), applies the decided commands in it, commits, and
//! then tells the crews' channel what changed ([`JobNotice`]). This crate does not
//! speak MQTT, nor HTTP except to an OSRM server: the API and the crews' channel
//! call it. [`simulate`] is a discrete-event simulation of emergency dispatch
//! (`leakwatch sim dispatch`).

pub mod choose;
pub mod decide;
pub mod grouping;
pub mod plan;
pub mod report;
#[cfg(feature = "service")]
mod service;
pub mod simulate;
pub mod travel;

pub use decide::JobChange;
#[cfg(feature = "service")]
pub use service::{
    Clock, Dispatcher, JobNotice, OnceOutcome, OutcomeRow, ReconcileReport, SurveyLeakOutcome,
    SurveyOutcome, TickReport,
};

use grouping::GroupingConfig;
use leakwatch_core::{EscalationMapping, LeakClassTable};
#[cfg(feature = "service")]
use leakwatch_store::StoreError;
use serde::{Deserialize, Serialize};

/// Sets the failpoints named in the `FAIL_POINTS` environment variable
/// (`name=actions;name=actions`, the `fail` crate's syntax) when this crate is built
/// with its `failpoints` feature (crash tests do); does nothing otherwise. The points
/// sit between the writes of a dispatch unit of work: `dispatch-after-set-alert`,
/// `dispatch-after-create-order`, `dispatch-after-step`, `dispatch-before-commit`;
/// their `return` action ends the process at once.
pub fn failpoints_from_env() {
    #[cfg(feature = "failpoints")]
    if let Ok(v) = std::env::var("FAIL_POINTS") {
        for item in v.split(';').filter(|i| !i.trim().is_empty()) {
            match item.split_once('=') {
                Some((name, actions)) => {
                    if let Err(e) = fail::cfg(name.trim(), actions.trim()) {
                        tracing::error!(item, error = %e, "FAIL_POINTS: bad failpoint");
                    }
                }
                None => tracing::error!(item, "FAIL_POINTS: expected name=actions"),
            }
        }
    }
}

/// Settings of the work-order service (`[dispatch]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DispatchConfig {
    /// Escalate new leak alerts to work orders without waiting for an engineer
    /// (off in production; the demo turns it on).
    pub auto_escalate: bool,
    /// ... except where a crew found no leak for an alert of the same kind on the same
    /// meter within this many days (an engineer decides then).
    pub auto_escalate_quiet_days: u32,
    /// ... and only alerts of this severity or above (`info`: all; the demo escalates
    /// `critical` ones itself and leaves the rest to the engineer's review).
    pub auto_escalate_min_severity: leakwatch_core::Severity,
    /// Assign new emergency and high-priority orders to the nearest crew at once
    /// (normal and low priority work waits for the day plan).
    pub auto_assign: bool,
    /// Seconds a crew has to accept an order before it goes to another crew.
    pub accept_within_s: u64,
    /// How often the supervisor looks for unaccepted, unassigned and late orders.
    pub check_every_s: u64,
    /// A crew's reported position older than this is not trusted (minutes).
    pub position_max_age_min: u32,
    /// Leak classes crews record: a preset (`it`, `us`) ...
    pub leak_classes: String,
    /// ... or a deployment's own table, which wins when present.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub leak_class_table: Option<LeakClassTable>,
    /// Alert kind and severity -> work-order kind, priority and deadline.
    pub mapping: EscalationMapping,
    /// Alerts close in place and time become one order.
    pub grouping: GroupingConfig,
    /// Pre-emption of crews on non-emergency work.
    pub choice: choose::ChoicePolicy,
    /// Where travel times come from.
    pub travel: travel::TravelConfig,
    /// Day plans: local shift used for crews without a calendar, solver bounds.
    pub plan: PlanSettings,
}

/// `[dispatch.plan]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PlanSettings {
    /// Shift of a crew without a calendar, minutes after local midnight.
    pub default_shift_start_min: u32,
    pub default_shift_end_min: u32,
    /// Local offset from UTC for those default shifts, hours.
    pub utc_offset_h: i32,
    /// Minutes on site per planned job when the order does not say.
    pub default_job_min: u32,
    /// Leak survey orders: metres of main a survey crew covers a minute (segments
    /// plus the way between them); a survey job lasts its route's length over this.
    pub survey_m_per_min: f64,
    pub max_generations: usize,
    pub max_time_s: u64,
}

impl Default for PlanSettings {
    fn default() -> Self {
        Self {
            default_shift_start_min: 8 * 60,
            default_shift_end_min: 17 * 60,
            utc_offset_h: 1,
            default_job_min: 45,
            survey_m_per_min: 40.0,
            max_generations: plan::DEFAULT_MAX_GENERATIONS,
            max_time_s: plan::DEFAULT_MAX_TIME_S,
        }
    }
}

impl Default for DispatchConfig {
    fn default() -> Self {
        Self {
            auto_escalate: false,
            auto_escalate_quiet_days: 14,
            auto_escalate_min_severity: leakwatch_core::Severity::Info,
            auto_assign: true,
            accept_within_s: 300,
            check_every_s: 15,
            position_max_age_min: 20,
            leak_classes: "it".into(),
            leak_class_table: None,
            mapping: EscalationMapping::default(),
            grouping: GroupingConfig::default(),
            choice: choose::ChoicePolicy::default(),
            travel: travel::TravelConfig::default(),
            plan: PlanSettings::default(),
        }
    }
}

impl DispatchConfig {
    /// The leak classes in force.
    pub fn leak_table(&self) -> Result<LeakClassTable, String> {
        match &self.leak_class_table {
            Some(t) => Ok(t.clone()),
            None => LeakClassTable::preset(&self.leak_classes),
        }
    }

    /// Checks what types alone cannot; the error starts with the key under
    /// `dispatch.`.
    pub fn validate(&self) -> Result<(), String> {
        let key = |k: &str, e: String| format!("dispatch.{k}: {e}");
        if self.accept_within_s == 0 {
            return Err(key("accept_within_s", "must be at least 1".into()));
        }
        if self.check_every_s == 0 {
            return Err(key("check_every_s", "must be at least 1".into()));
        }
        match &self.leak_class_table {
            Some(t) => t.validate().map_err(|e| key("leak_class_table", e))?,
            None => {
                LeakClassTable::preset(&self.leak_classes).map_err(|e| key("leak_classes", e))?;
            }
        }
        self.mapping.validate().map_err(|e| key("mapping", e))?;
        self.grouping.validate().map_err(|e| key("grouping", e))?;
        self.travel.validate().map_err(|e| key("travel", e))?;
        let p = &self.plan;
        if p.default_shift_start_min >= p.default_shift_end_min || p.default_shift_end_min > 1440 {
            return Err(key(
                "plan.default_shift_end_min",
                "the default shift must start before it ends, within the day".into(),
            ));
        }
        if p.default_job_min == 0 {
            return Err(key("plan.default_job_min", "must be at least 1".into()));
        }
        if !(p.survey_m_per_min.is_finite() && p.survey_m_per_min > 0.0) {
            return Err(key(
                "plan.survey_m_per_min",
                "must be a positive number of metres a minute".into(),
            ));
        }
        Ok(())
    }
}

/// Why a dispatch request failed.
#[derive(Debug, thiserror::Error)]
pub enum DispatchError {
    #[error("{0}")]
    NotFound(String),
    /// The request breaks a rule (illegal transition, unknown crew, ...).
    #[error("{0}")]
    Rejected(String),
    /// The request's content is not acceptable (a finding without its class...).
    #[error("{0}")]
    Invalid(String),
    /// Someone else changed the record first; the request may be retried.
    #[error("{0}")]
    Conflict(String),
    #[cfg(feature = "service")]
    #[error(transparent)]
    Store(StoreError),
}

#[cfg(feature = "service")]
impl From<StoreError> for DispatchError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(m) => DispatchError::NotFound(m),
            StoreError::Conflict(m) => DispatchError::Conflict(m),
            other => DispatchError::Store(other),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_bad_values_name_their_key() {
        DispatchConfig::default().validate().unwrap();
        let c = DispatchConfig {
            leak_classes: "fr".into(),
            ..Default::default()
        };
        assert!(
            c.validate()
                .unwrap_err()
                .starts_with("dispatch.leak_classes:")
        );
        let c = DispatchConfig {
            accept_within_s: 0,
            ..Default::default()
        };
        assert!(
            c.validate()
                .unwrap_err()
                .starts_with("dispatch.accept_within_s:")
        );
        let mut c = DispatchConfig::default();
        c.mapping.rules.clear();
        assert!(c.validate().unwrap_err().starts_with("dispatch.mapping:"));
    }
}
