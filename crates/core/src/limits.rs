//! Maximum lengths of the free text people and devices send: a work order's summary,
//! notes, reasons, names, the actor of an audit trail. Nothing anyone sends can grow
//! the store by megabytes, and a job always fits in the message that carries it to a
//! crew's phone. Lengths are counted in characters (at most 4 bytes each in UTF-8).

use crate::{AlertAction, Crew, OrderAction, SiteFinding};

/// A work order's summary.
pub const SUMMARY_MAX: usize = 1_000;
/// A crew's notes on completing a job, and the notes of a site finding.
pub const NOTES_MAX: usize = 4_000;
/// A reason: dismissing an alert, cancelling a job, being unable to complete it.
pub const REASON_MAX: usize = 500;
/// A name: a crew's name, a skill, where a gas reading was taken, a leak class code.
pub const NAME_MAX: usize = 200;
/// Who acted (`X-Actor`, the audit trail).
pub const ACTOR_MAX: usize = 100;
/// Most gas readings in one finding, and most skills of one crew.
pub const LIST_MAX: usize = 100;

/// A text longer than its field allows.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field} is {len} characters long; at most {max} are allowed")]
pub struct TooLong {
    /// The field, as the API names it (e.g. `summary`, `finding.notes`).
    pub field: String,
    pub len: usize,
    pub max: usize,
}

/// Checks one field.
pub fn check(field: &str, value: &str, max: usize) -> Result<(), TooLong> {
    // Bytes bound characters from above: most texts need no count.
    if value.len() <= max {
        return Ok(());
    }
    let len = value.chars().count();
    if len <= max {
        return Ok(());
    }
    Err(TooLong {
        field: field.to_owned(),
        len,
        max,
    })
}

fn check_list(field: &str, len: usize) -> Result<(), TooLong> {
    if len <= LIST_MAX {
        Ok(())
    } else {
        Err(TooLong {
            field: field.to_owned(),
            len,
            max: LIST_MAX,
        })
    }
}

/// Checks the free text of a site finding (fields named `finding.*`).
pub fn check_finding(f: &SiteFinding) -> Result<(), TooLong> {
    check("finding.notes", &f.notes, NOTES_MAX)?;
    if let Some(c) = &f.leak_class {
        check("finding.leak_class", c, NAME_MAX)?;
    }
    check_list("finding.gas_readings", f.gas_readings.len())?;
    for g in &f.gas_readings {
        check("finding.gas_readings.place", &g.place, NAME_MAX)?;
    }
    Ok(())
}

/// Checks the free text of a work-order action.
pub fn check_order_action(a: &OrderAction) -> Result<(), TooLong> {
    match a {
        OrderAction::Complete { notes, finding } => {
            if let Some(n) = notes {
                check("notes", n, NOTES_MAX)?;
            }
            if let Some(f) = finding {
                check_finding(f)?;
            }
            Ok(())
        }
        OrderAction::Cancel { reason } | OrderAction::UnableToComplete { reason } => {
            check("reason", reason, REASON_MAX)
        }
        _ => Ok(()),
    }
}

/// Checks the free text of an alert review.
pub fn check_alert_action(a: &AlertAction) -> Result<(), TooLong> {
    match a {
        AlertAction::Dismiss { reason } => check("reason", reason, REASON_MAX),
        _ => Ok(()),
    }
}

/// Checks a crew's name and skills.
pub fn check_crew(c: &Crew) -> Result<(), TooLong> {
    check("name", &c.name, NAME_MAX)?;
    check_list("skills", c.skills.len())?;
    for s in &c.skills {
        check("skills", s, NAME_MAX)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_are_characters_and_the_error_names_the_field_and_limit() {
        assert!(check("summary", &"x".repeat(SUMMARY_MAX), SUMMARY_MAX).is_ok());
        // 1,000 two-byte characters are 2,000 bytes and still fit.
        assert!(check("summary", &"é".repeat(SUMMARY_MAX), SUMMARY_MAX).is_ok());
        let e = check("summary", &"x".repeat(10_000), SUMMARY_MAX).unwrap_err();
        assert_eq!(
            e.to_string(),
            "summary is 10000 characters long; at most 1000 are allowed"
        );
    }

    #[test]
    fn actions_and_findings_are_checked_field_by_field() {
        let long = "x".repeat(REASON_MAX + 1);
        let e = check_order_action(&OrderAction::Cancel {
            reason: long.clone(),
        })
        .unwrap_err();
        assert_eq!((e.field.as_str(), e.max), ("reason", REASON_MAX));
        let e = check_alert_action(&AlertAction::Dismiss { reason: long }).unwrap_err();
        assert_eq!(e.field, "reason");
        let finding = SiteFinding {
            leak_found: false,
            leak_class: None,
            gas_readings: vec![],
            repaired: false,
            notes: "n".repeat(NOTES_MAX + 1),
        };
        let e = check_order_action(&OrderAction::Complete {
            notes: None,
            finding: Some(finding),
        })
        .unwrap_err();
        assert_eq!(e.field, "finding.notes");
        assert!(check_order_action(&OrderAction::Accept).is_ok());
    }
}
