//! Incident grouping: a new alert near an open work order, soon after it was created, is
//! most likely the same leak (neighbours calling in, a second meter in the building), so
//! it joins that order instead of sending a second crew. Pure.
//!
//! Rules ([`group`]):
//! - Candidates are orders that are not final ([`WorkOrderStatus::is_final`]), created
//!   at most `window_min` minutes before the alert and not after it, and at most
//!   `distance_m` metres (great-circle) from the alert.
//! - The nearest candidate wins; at equal distance the most recent, then the smaller id.
//! - If the alert is more urgent than the order (`Priority::Emergency` <
//!   `Priority::High` < ...), the decision asks to upgrade the order to the alert's
//!   priority.
//! - No candidate: a new order.

use leakwatch_core::{GeoPoint, Priority, Timestamp, WorkOrderStatus};
use serde::{Deserialize, Serialize};

/// How close in space and time an alert must be to join an open order.
///
/// Defaults: `distance_m = 250` (a block), `window_min = 180`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GroupingConfig {
    /// Metres between the alert and the order's location.
    pub distance_m: f64,
    /// Minutes from the order's creation to the alert.
    pub window_min: u32,
}

impl Default for GroupingConfig {
    fn default() -> Self {
        Self {
            distance_m: 250.0,
            window_min: 180,
        }
    }
}

impl GroupingConfig {
    /// Where this table sits in the configuration; messages name keys under it.
    pub const KEY: &'static str = "dispatch.grouping";

    /// A positive distance and a window of at least one minute.
    pub fn validate(&self) -> Result<(), String> {
        let key = Self::KEY;
        if !(self.distance_m.is_finite() && self.distance_m > 0.0) {
            return Err(format!(
                "{key}.distance_m: must be a positive number of metres, got {}",
                self.distance_m
            ));
        }
        if self.window_min == 0 {
            return Err(format!("{key}.window_min: must be at least 1"));
        }
        Ok(())
    }
}

/// An order an alert might join.
#[derive(Debug, Clone, PartialEq)]
pub struct OpenOrder {
    pub order_id: i64,
    pub location: GeoPoint,
    pub created_at: Timestamp,
    pub priority: Priority,
    pub status: WorkOrderStatus,
}

/// What to do with a new alert.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "decision", rename_all = "snake_case")]
pub enum GroupDecision {
    /// Attach the alert to this order, raising its priority when `upgrade_to` is set.
    Join {
        order_id: i64,
        upgrade_to: Option<Priority>,
    },
    /// Make a new order.
    New,
}

/// Decides whether an alert at `at`, raised at `t` with `priority`, joins one of `open`.
pub fn group(
    cfg: &GroupingConfig,
    at: GeoPoint,
    t: Timestamp,
    priority: Priority,
    open: &[OpenOrder],
) -> GroupDecision {
    let window = chrono::Duration::minutes(i64::from(cfg.window_min));
    open.iter()
        .filter(|o| !o.status.is_final() && o.created_at <= t && t - o.created_at <= window)
        .map(|o| (o.location.distance_km(&at) * 1000.0, o))
        .filter(|(m, _)| *m <= cfg.distance_m)
        .min_by(|(ma, a), (mb, b)| {
            ma.total_cmp(mb)
                .then_with(|| b.created_at.cmp(&a.created_at))
                .then_with(|| a.order_id.cmp(&b.order_id))
        })
        .map_or(GroupDecision::New, |(_, o)| GroupDecision::Join {
            order_id: o.order_id,
            upgrade_to: (priority < o.priority).then_some(priority),
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{Duration, TimeZone, Utc};

    fn t0() -> Timestamp {
        Utc.with_ymd_and_hms(2026, 3, 2, 10, 0, 0).unwrap()
    }

    /// A point `north_m` metres north of the reference.
    fn north(m: f64) -> GeoPoint {
        GeoPoint::new(43.77 + m / 111_195.0, 11.25).unwrap()
    }

    fn order(id: i64, north_m: f64, minutes_before: i64) -> OpenOrder {
        OpenOrder {
            order_id: id,
            location: north(north_m),
            created_at: t0() - Duration::minutes(minutes_before),
            priority: Priority::High,
            status: WorkOrderStatus::Assigned,
        }
    }

    fn join(order_id: i64, upgrade_to: Option<Priority>) -> GroupDecision {
        GroupDecision::Join {
            order_id,
            upgrade_to,
        }
    }

    const H: Priority = Priority::High;

    #[test]
    fn same_street_joins_far_away_does_not() {
        let cfg = GroupingConfig::default();
        assert_eq!(
            group(&cfg, north(0.0), t0(), H, &[order(1, 120.0, 30)]),
            join(1, None)
        );
        assert_eq!(
            group(&cfg, north(0.0), t0(), H, &[order(1, 249.0, 30)]),
            join(1, None)
        );
        assert_eq!(
            group(&cfg, north(0.0), t0(), H, &[order(1, 260.0, 30)]),
            GroupDecision::New
        );
        assert_eq!(group(&cfg, north(0.0), t0(), H, &[]), GroupDecision::New);
    }

    #[test]
    fn only_orders_created_within_the_window_before_the_alert() {
        let cfg = GroupingConfig::default();
        let at = north(0.0);
        assert_eq!(
            group(&cfg, at, t0(), H, &[order(1, 10.0, 180)]),
            join(1, None)
        );
        assert_eq!(
            group(&cfg, at, t0(), H, &[order(1, 10.0, 181)]),
            GroupDecision::New
        );
        // an order created after the alert (the alert is processed late) is not joined
        assert_eq!(
            group(&cfg, at, t0(), H, &[order(1, 10.0, -1)]),
            GroupDecision::New
        );
        assert_eq!(
            group(&cfg, at, t0(), H, &[order(1, 10.0, 0)]),
            join(1, None)
        );
    }

    #[test]
    fn final_orders_are_not_joined() {
        let cfg = GroupingConfig::default();
        for status in WorkOrderStatus::ALL {
            let o = OpenOrder {
                status: *status,
                ..order(1, 10.0, 30)
            };
            let d = group(&cfg, north(0.0), t0(), H, &[o]);
            assert_eq!(d == GroupDecision::New, status.is_final(), "{status}");
        }
    }

    #[test]
    fn the_nearest_wins_then_the_most_recent() {
        let cfg = GroupingConfig::default();
        let open = [order(1, 200.0, 10), order(2, 50.0, 100), order(3, 150.0, 5)];
        assert_eq!(group(&cfg, north(0.0), t0(), H, &open), join(2, None));
        let open = [order(5, 50.0, 100), order(4, 50.0, 20), order(6, 50.0, 20)];
        assert_eq!(group(&cfg, north(0.0), t0(), H, &open), join(4, None));
    }

    #[test]
    fn a_more_urgent_alert_upgrades_the_order() {
        let cfg = GroupingConfig::default();
        let open = [order(1, 10.0, 30)];
        assert_eq!(
            group(&cfg, north(0.0), t0(), Priority::Emergency, &open),
            join(1, Some(Priority::Emergency))
        );
        assert_eq!(
            group(&cfg, north(0.0), t0(), Priority::Low, &open),
            join(1, None)
        );
        assert_eq!(group(&cfg, north(0.0), t0(), H, &open), join(1, None));
    }

    #[test]
    fn config_defaults_and_validation() {
        let cfg: GroupingConfig = serde_json::from_str(r#"{"window_min":60}"#).unwrap();
        assert_eq!(cfg.distance_m, 250.0);
        cfg.validate().unwrap();
        assert!(serde_json::from_str::<GroupingConfig>(r#"{"radius_m":1}"#).is_err());
        let bad = GroupingConfig {
            distance_m: 0.0,
            ..cfg.clone()
        };
        assert!(
            bad.validate()
                .unwrap_err()
                .starts_with("dispatch.grouping.distance_m:")
        );
        let bad = GroupingConfig {
            window_min: 0,
            ..cfg
        };
        assert!(
            bad.validate()
                .unwrap_err()
                .starts_with("dispatch.grouping.window_min:")
        );
        let cfg = GroupingConfig {
            distance_m: 20.0,
            window_min: 10,
        };
        assert_eq!(
            group(&cfg, north(0.0), t0(), H, &[order(1, 30.0, 5)]),
            GroupDecision::New
        );
        assert_eq!(
            group(&cfg, north(0.0), t0(), H, &[order(1, 10.0, 11)]),
            GroupDecision::New
        );
    }
}
