//! Crew choice: which crew goes to a job, from where it is believed to be and how long it
//! needs to get there. Pure: travel times are computed by the caller (see
//! [`crate::travel`]) and passed in.
//!
//! Rules:
//! - **Where a crew is** is decided before ([`leakwatch_core::Crew::believed_position`]:
//!   a reported position at most `position_max_age_min` old, else the last job's place,
//!   else the home base) and given in [`CrewState::position`].
//! - **Who may go** ([`choose_nearest`]): crews on shift, with the skill, not excluded,
//!   with a finite travel time. A crew is free unless its current job occupies it
//!   ([`WorkOrderStatus::occupies_crew`]).
//! - **Free crews** compete on travel time.
//! - **Pre-emption**: for an `Emergency` job, when [`ChoicePolicy::preempt`] is on, crews
//!   busy on a *non-emergency* job compete too, at their travel time plus
//!   `preempt_penalty_s` (the cost of dropping and later resuming the job), and the
//!   choice names the job it pre-empts. A crew busy on an emergency is never taken.
//! - **Ties** go to the smaller crew id, so the choice is deterministic.
//! - [`choose_first_free`] is the naive baseline: the first qualified free crew on shift
//!   in the order given, whatever the distance.

use leakwatch_core::{CrewId, GeoPoint, Priority, WorkOrderStatus};
use serde::{Deserialize, Serialize};

/// The job a crew holds now.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CurrentJob {
    pub order_id: i64,
    pub priority: Priority,
    pub status: WorkOrderStatus,
}

/// A crew as the choice sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct CrewState {
    pub id: CrewId,
    pub skills: Vec<String>,
    pub on_shift: bool,
    /// Where it is believed to be (see [`leakwatch_core::Crew::believed_position`]).
    pub position: GeoPoint,
    pub current: Option<CurrentJob>,
}

impl CrewState {
    fn qualified(&self, skill: &str, exclude: &[CrewId]) -> bool {
        self.on_shift && self.skills.iter().any(|s| s == skill) && !exclude.contains(&self.id)
    }

    /// The job that occupies the crew, if any.
    fn busy_with(&self) -> Option<&CurrentJob> {
        self.current.as_ref().filter(|j| j.status.occupies_crew())
    }
}

/// How emergencies may take crews from other work.
///
/// Defaults: `preempt = true`, `preempt_penalty_s = 600`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ChoicePolicy {
    /// May an emergency take a crew busy on a non-emergency job?
    pub preempt: bool,
    /// Seconds added to a busy crew's travel time: a free crew up to this much farther
    /// is preferred to interrupting work.
    pub preempt_penalty_s: f64,
}

impl Default for ChoicePolicy {
    fn default() -> Self {
        Self {
            preempt: true,
            preempt_penalty_s: 600.0,
        }
    }
}

impl ChoicePolicy {
    /// The penalty must be a finite number of seconds, 0 or more.
    pub fn validate(&self) -> Result<(), String> {
        let v = self.preempt_penalty_s;
        if v.is_finite() && v >= 0.0 {
            Ok(())
        } else {
            Err(format!(
                "preempt_penalty_s: must be 0 or more seconds, got {v}"
            ))
        }
    }
}

/// The crew chosen for a job.
#[derive(Debug, Clone, PartialEq)]
pub struct Choice {
    pub crew_id: CrewId,
    /// Its travel time, seconds (without the pre-emption penalty).
    pub travel_s: f64,
    /// The order it leaves to take this job, when it is pre-empted.
    pub preempts: Option<i64>,
}

/// The crew that can reach the job soonest, by the rules in the module doc.
///
/// `travel_s[i]` is crew `i`'s travel time to the job, in seconds, one per crew (checked
/// in debug builds; otherwise crews past the end of a shorter slice are not considered).
pub fn choose_nearest(
    crews: &[CrewState],
    travel_s: &[f64],
    skill: &str,
    priority: Priority,
    policy: &ChoicePolicy,
    exclude: &[CrewId],
) -> Option<Choice> {
    debug_assert_eq!(crews.len(), travel_s.len(), "one travel time per crew");
    let may_preempt = priority == Priority::Emergency && policy.preempt;
    crews
        .iter()
        .zip(travel_s)
        .filter(|(c, t)| c.qualified(skill, exclude) && t.is_finite())
        .filter_map(|(c, &t)| match c.busy_with() {
            None => Some((t, t, c, None)),
            Some(j) if may_preempt && j.priority != Priority::Emergency => {
                Some((t + policy.preempt_penalty_s, t, c, Some(j.order_id)))
            }
            Some(_) => None,
        })
        .min_by(|(a, _, ca, _), (b, _, cb, _)| a.total_cmp(b).then_with(|| ca.id.cmp(&cb.id)))
        .map(|(_, travel_s, c, preempts)| Choice {
            crew_id: c.id.clone(),
            travel_s,
            preempts,
        })
}

/// The naive baseline: the first crew, in the order given, that is on shift, has the
/// skill, is not excluded and is free. Distance plays no part.
pub fn choose_first_free(crews: &[CrewState], skill: &str, exclude: &[CrewId]) -> Option<CrewId> {
    crews
        .iter()
        .find(|c| c.qualified(skill, exclude) && c.busy_with().is_none())
        .map(|c| c.id.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(lat: f64, lon: f64) -> GeoPoint {
        GeoPoint::new(lat, lon).unwrap()
    }

    fn id(s: &str) -> CrewId {
        CrewId::parse(s).unwrap()
    }

    fn free(name: &str) -> CrewState {
        CrewState {
            id: id(name),
            skills: vec!["emergency".into(), "repair".into()],
            on_shift: true,
            position: p(43.77, 11.25),
            current: None,
        }
    }

    fn busy(name: &str, order_id: i64, priority: Priority, status: WorkOrderStatus) -> CrewState {
        CrewState {
            current: Some(CurrentJob {
                order_id,
                priority,
                status,
            }),
            ..free(name)
        }
    }

    const E: Priority = Priority::Emergency;

    #[test]
    fn free_crews_compete_on_travel_time() {
        let crews = [free("A"), free("B"), free("C")];
        let c = choose_nearest(
            &crews,
            &[900.0, 300.0, 600.0],
            "emergency",
            E,
            &ChoicePolicy::default(),
            &[],
        )
        .unwrap();
        assert_eq!(
            c,
            Choice {
                crew_id: id("B"),
                travel_s: 300.0,
                preempts: None
            }
        );
    }

    #[test]
    fn off_shift_unqualified_excluded_and_unreachable_crews_are_skipped() {
        let mut off = free("A");
        off.on_shift = false;
        let mut meter = free("B");
        meter.skills = vec!["meter".into()];
        let crews = [off, meter, free("C"), free("D"), free("E")];
        let t = [10.0, 20.0, 30.0, f64::INFINITY, 50.0];
        let pol = ChoicePolicy::default();
        let c = choose_nearest(&crews, &t, "emergency", E, &pol, &[id("C")]).unwrap();
        assert_eq!(c.crew_id, id("E"));
        assert!(choose_nearest(&crews, &t, "welding", E, &pol, &[]).is_none());
        let nan = [f64::NAN; 5];
        assert!(choose_nearest(&crews, &nan, "emergency", E, &pol, &[]).is_none());
    }

    #[test]
    fn emergencies_preempt_non_emergency_work_at_a_penalty() {
        let crews = [
            busy("A", 7, Priority::Normal, WorkOrderStatus::OnSite),
            free("B"),
        ];
        let pol = ChoicePolicy::default();
        // the busy crew is 100 s away, the free one 650 s: 100 + 600 > 650
        let c = choose_nearest(&crews, &[100.0, 650.0], "emergency", E, &pol, &[]).unwrap();
        assert_eq!(c.crew_id, id("B"));
        // ... but 750 s is too far: pre-empt
        let c = choose_nearest(&crews, &[100.0, 750.0], "emergency", E, &pol, &[]).unwrap();
        assert_eq!(
            c,
            Choice {
                crew_id: id("A"),
                travel_s: 100.0,
                preempts: Some(7)
            }
        );
        // pre-emption off: the free crew, however far
        let off = ChoicePolicy {
            preempt: false,
            ..pol.clone()
        };
        let c = choose_nearest(&crews, &[100.0, 5000.0], "emergency", E, &off, &[]).unwrap();
        assert_eq!(c.crew_id, id("B"));
        assert!(choose_nearest(&crews[..1], &[100.0], "emergency", E, &off, &[]).is_none());
        // a non-emergency job never pre-empts
        let c = choose_nearest(
            &crews,
            &[100.0, 5000.0],
            "repair",
            Priority::High,
            &pol,
            &[],
        )
        .unwrap();
        assert_eq!(c.crew_id, id("B"));
        assert!(
            choose_nearest(&crews[..1], &[100.0], "repair", Priority::High, &pol, &[]).is_none()
        );
    }

    #[test]
    fn a_crew_on_an_emergency_is_never_taken() {
        let crews = [
            busy("A", 1, E, WorkOrderStatus::EnRoute),
            busy("B", 2, E, WorkOrderStatus::Assigned),
        ];
        let pol = ChoicePolicy {
            preempt: true,
            preempt_penalty_s: 0.0,
        };
        assert!(choose_nearest(&crews, &[1.0, 1.0], "emergency", E, &pol, &[]).is_none());
        assert!(choose_first_free(&crews, "emergency", &[]).is_none());
    }

    #[test]
    fn a_job_that_no_longer_occupies_the_crew_leaves_it_free() {
        let crews = [busy("A", 1, E, WorkOrderStatus::Completed)];
        let c = choose_nearest(
            &crews,
            &[50.0],
            "emergency",
            E,
            &ChoicePolicy::default(),
            &[],
        );
        assert_eq!(c.unwrap().preempts, None);
        assert_eq!(choose_first_free(&crews, "emergency", &[]), Some(id("A")));
    }

    #[test]
    fn ties_go_to_the_smaller_id() {
        let crews = [
            free("B"),
            free("A"),
            busy("0", 3, Priority::Low, WorkOrderStatus::OnSite),
        ];
        let pol = ChoicePolicy::default();
        let c = choose_nearest(&crews, &[60.0, 60.0, 0.0], "emergency", E, &pol, &[]).unwrap();
        assert_eq!(c.crew_id, id("A"), "0 + 600 s penalty loses");
        let pol0 = ChoicePolicy {
            preempt_penalty_s: 60.0,
            ..pol
        };
        let c = choose_nearest(&crews, &[60.0, 60.0, 0.0], "emergency", E, &pol0, &[]).unwrap();
        assert_eq!(c.crew_id, id("0"), "an equal cost goes to the smaller id");
        assert_eq!(c.preempts, Some(3));
    }

    #[test]
    fn first_free_ignores_distance() {
        let mut off = free("A");
        off.on_shift = false;
        let crews = [
            off,
            busy("B", 1, Priority::Normal, WorkOrderStatus::OnSite),
            free("D"),
            free("C"),
        ];
        assert_eq!(choose_first_free(&crews, "emergency", &[]), Some(id("D")));
        assert_eq!(
            choose_first_free(&crews, "emergency", &[id("D")]),
            Some(id("C"))
        );
        assert_eq!(choose_first_free(&crews, "welding", &[]), None);
    }

    #[test]
    fn policy_defaults_and_unknown_keys() {
        let p: ChoicePolicy = serde_json::from_str("{}").unwrap();
        assert_eq!(p, ChoicePolicy::default());
        assert!(p.preempt);
        assert_eq!(p.preempt_penalty_s, 600.0);
        assert!(serde_json::from_str::<ChoicePolicy>(r#"{"pre_empt":false}"#).is_err());
        p.validate().unwrap();
        let bad = ChoicePolicy {
            preempt_penalty_s: -1.0,
            ..p
        };
        assert!(
            bad.validate()
                .unwrap_err()
                .starts_with("preempt_penalty_s:")
        );
    }
}
