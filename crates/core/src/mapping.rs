//! Which job an escalated alert becomes: a configurable table of rules from alert
//! kind and severity to work-order kind, priority and deadline.
//!
//! Rules are tried in order and the first that matches wins; the last rule of a
//! valid table matches everything, so every alert maps to some job. The default
//! table sends a crew within 60 minutes for anything critical (the Italian
//! regulator's emergency standard), investigates other leak alerts within 24 hours,
//! and checks the meter within 7 days for the rest.

use crate::{AlertKind, Priority, Severity, WorkOrderKind};
use serde::{Deserialize, Serialize};

/// One rule of the table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EscalationRule {
    /// Alert kinds this rule applies to; empty: any kind.
    #[serde(default)]
    pub alert_kinds: Vec<AlertKind>,
    /// `true`: only leak kinds ([`AlertKind::is_leak`]); `false`: only the others;
    /// absent: either.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leak: Option<bool>,
    /// The alert's severity must be at least this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_severity: Option<Severity>,
    pub order_kind: WorkOrderKind,
    pub priority: Priority,
    /// Minutes from escalation to the deadline (arrival on site for emergencies and
    /// investigations, completion for the rest); absent: no deadline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline_min: Option<u32>,
}

impl EscalationRule {
    fn matches(&self, kind: AlertKind, severity: Severity) -> bool {
        (self.alert_kinds.is_empty() || self.alert_kinds.contains(&kind))
            && self.leak.is_none_or(|l| l == kind.is_leak())
            && self.min_severity.is_none_or(|m| severity >= m)
    }

    fn matches_everything(&self) -> bool {
        self.alert_kinds.is_empty() && self.leak.is_none() && self.min_severity.is_none()
    }
}

/// What an escalated alert becomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct JobSpec {
    pub kind: WorkOrderKind,
    pub priority: Priority,
    pub deadline_min: Option<u32>,
}

/// The table: `dispatch.mapping` in the configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EscalationMapping {
    pub rules: Vec<EscalationRule>,
}

impl Default for EscalationMapping {
    fn default() -> Self {
        let rule = |leak, min_severity, order_kind, priority, deadline_min| EscalationRule {
            alert_kinds: Vec::new(),
            leak,
            min_severity,
            order_kind,
            priority,
            deadline_min,
        };
        Self {
            rules: vec![
                rule(
                    None,
                    Some(Severity::Critical),
                    WorkOrderKind::Emergency,
                    Priority::Emergency,
                    Some(60),
                ),
                rule(
                    Some(true),
                    None,
                    WorkOrderKind::LeakInvestigation,
                    Priority::High,
                    Some(24 * 60),
                ),
                rule(
                    None,
                    None,
                    WorkOrderKind::MeterCheck,
                    Priority::Normal,
                    Some(7 * 24 * 60),
                ),
            ],
        }
    }
}

impl EscalationMapping {
    /// The job for an alert: the first matching rule.
    pub fn job_for(&self, kind: AlertKind, severity: Severity) -> JobSpec {
        let rule = self
            .rules
            .iter()
            .find(|r| r.matches(kind, severity))
            .or(self.rules.last())
            .expect("a validated mapping has rules");
        JobSpec {
            kind: rule.order_kind,
            priority: rule.priority,
            deadline_min: rule.deadline_min,
        }
    }

    /// Checks a configured table: at least one rule, the last one matches every
    /// alert, and emergencies have a deadline.
    pub fn validate(&self) -> Result<(), String> {
        let Some(last) = self.rules.last() else {
            return Err("rules: at least one rule is needed".into());
        };
        if !last.matches_everything() {
            return Err(format!(
                "rules[{}]: the last rule must match every alert (no alert_kinds, leak or min_severity)",
                self.rules.len() - 1
            ));
        }
        for (i, r) in self.rules.iter().enumerate() {
            if r.order_kind == WorkOrderKind::Emergency && r.deadline_min.is_none() {
                return Err(format!(
                    "rules[{i}]: an emergency needs deadline_min (60 is the Italian standard)"
                ));
            }
            if r.deadline_min == Some(0) {
                return Err(format!("rules[{i}].deadline_min: must be more than 0"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_table_matches_the_documented_mapping() {
        let m = EscalationMapping::default();
        m.validate().unwrap();
        for kind in AlertKind::ALL {
            for sev in [Severity::Info, Severity::Warning, Severity::Critical] {
                let (k, p) = WorkOrderKind::for_alert(*kind, sev);
                let job = m.job_for(*kind, sev);
                assert_eq!((job.kind, job.priority), (k, p), "{kind} {sev:?}");
            }
        }
        assert_eq!(
            m.job_for(AlertKind::Burst, Severity::Critical).deadline_min,
            Some(60)
        );
    }

    #[test]
    fn first_matching_rule_wins() {
        let m: EscalationMapping = serde_json::from_str(
            r#"{"rules":[
                {"alert_kinds":["tamper"],"order_kind":"meter_check","priority":"high","deadline_min":120},
                {"alert_kinds":["tamper","burst"],"order_kind":"emergency","priority":"emergency","deadline_min":45},
                {"order_kind":"planned_inspection","priority":"low"}
            ]}"#,
        )
        .unwrap();
        m.validate().unwrap();
        assert_eq!(
            m.job_for(AlertKind::Tamper, Severity::Critical).kind,
            WorkOrderKind::MeterCheck
        );
        assert_eq!(
            m.job_for(AlertKind::Burst, Severity::Info).deadline_min,
            Some(45)
        );
        let other = m.job_for(AlertKind::Silence, Severity::Warning);
        assert_eq!(other.kind, WorkOrderKind::PlannedInspection);
        assert_eq!(other.deadline_min, None);
    }

    #[test]
    fn bad_tables_say_what_is_wrong() {
        let empty = EscalationMapping { rules: vec![] };
        assert!(empty.validate().unwrap_err().contains("at least one rule"));
        let mut m = EscalationMapping::default();
        m.rules.pop();
        assert!(m.validate().unwrap_err().contains("must match every alert"));
        let mut m = EscalationMapping::default();
        m.rules[0].deadline_min = None;
        assert!(m.validate().unwrap_err().starts_with("rules[0]"));
        assert!(
            serde_json::from_str::<EscalationMapping>(
                r#"{"rules":[{"order_kind":"repair","priority":"low","colour":1}]}"#
            )
            .is_err()
        );
    }
}
