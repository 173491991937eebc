//! The deadline report: per kind of work order, how many had a deadline, how many met
//! it, how many are late, and for arrival deadlines how long crews took to get there.
//! Pure: the caller hands in the orders.

use leakwatch_core::{Timestamp, WorkOrder, WorkOrderKind};
use serde::Serialize;
use std::collections::BTreeMap;

/// One kind of order in the report.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct KindReport {
    pub orders: u32,
    pub with_deadline: u32,
    /// Deadline met in time.
    pub met: u32,
    /// Met late, or past due and not met (open or ended).
    pub breached: u32,
    /// Not met yet, still in time.
    pub pending: u32,
    /// For arrival deadlines: minutes from creation to a crew on site.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mean_arrival_min: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub p95_arrival_min: Option<f64>,
}

/// A late order, for the dispatcher's list.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LateOrder {
    pub order_id: i64,
    pub kind: WorkOrderKind,
    pub due_at: Timestamp,
    /// Minutes past due (at `met_at`, or now when not met).
    pub late_by_min: i64,
    pub met_at: Option<Timestamp>,
}

/// The report over a set of orders at `now`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DeadlineReport {
    pub at: Timestamp,
    pub kinds: BTreeMap<&'static str, KindReport>,
    /// Breached orders, latest deadline first.
    pub late: Vec<LateOrder>,
}

/// Builds the report of `orders` at `now`.
pub fn deadline_report(orders: &[WorkOrder], now: Timestamp) -> DeadlineReport {
    let mut kinds: BTreeMap<&'static str, KindReport> = BTreeMap::new();
    let mut arrivals: BTreeMap<&'static str, Vec<f64>> = BTreeMap::new();
    let mut late = Vec::new();
    for o in orders {
        let k = kinds.entry(o.kind.as_str()).or_default();
        k.orders += 1;
        if o.kind.deadline_is_arrival()
            && let Some(r) = o.reached_at
        {
            arrivals
                .entry(o.kind.as_str())
                .or_default()
                .push((r - o.created_at).num_seconds() as f64 / 60.0);
        }
        let Some(d) = o.deadline(now) else {
            continue;
        };
        k.with_deadline += 1;
        if d.breached {
            k.breached += 1;
            late.push(LateOrder {
                order_id: o.id,
                kind: o.kind,
                due_at: d.due_at,
                late_by_min: -d.minutes_left,
                met_at: d.met_at,
            });
        } else if d.met_at.is_some() {
            k.met += 1;
        } else {
            k.pending += 1;
        }
    }
    for (kind, mut v) in arrivals {
        v.sort_by(f64::total_cmp);
        let k = kinds.get_mut(kind).expect("counted above");
        k.mean_arrival_min = Some(v.iter().sum::<f64>() / v.len() as f64);
        let i = ((v.len() as f64 * 0.95).ceil() as usize).clamp(1, v.len()) - 1;
        k.p95_arrival_min = Some(v[i]);
    }
    late.sort_by(|a, b| b.due_at.cmp(&a.due_at).then(a.order_id.cmp(&b.order_id)));
    DeadlineReport {
        at: now,
        kinds,
        late,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{Duration, TimeZone, Utc};
    use leakwatch_core::{GeoPoint, Priority, WorkOrderStatus};

    fn order(
        id: i64,
        kind: WorkOrderKind,
        status: WorkOrderStatus,
        reached_min: Option<i64>,
    ) -> WorkOrder {
        let t0 = Utc.with_ymd_and_hms(2026, 11, 26, 8, 0, 0).unwrap();
        WorkOrder {
            id,
            kind,
            priority: Priority::Emergency,
            status,
            alert_id: None,
            meter_id: None,
            district_id: None,
            location: GeoPoint::new(43.0, 11.0).unwrap(),
            crew_id: None,
            summary: String::new(),
            created_at: t0,
            updated_at: t0 + Duration::minutes(reached_min.unwrap_or(0)),
            due_at: Some(t0 + Duration::minutes(60)),
            parent_id: None,
            assigned_at: None,
            reached_at: reached_min.map(|m| t0 + Duration::minutes(m)),
            breached_at: None,
            finding: None,
        }
    }

    #[test]
    fn counts_met_late_and_pending_with_arrival_times() {
        use WorkOrderStatus as S;
        let t0 = Utc.with_ymd_and_hms(2026, 11, 26, 8, 0, 0).unwrap();
        let orders = [
            order(1, WorkOrderKind::Emergency, S::OnSite, Some(20)),
            order(2, WorkOrderKind::Emergency, S::Completed, Some(40)),
            order(3, WorkOrderKind::Emergency, S::OnSite, Some(75)),
            order(4, WorkOrderKind::Emergency, S::EnRoute, None),
            order(5, WorkOrderKind::Repair, S::Assigned, None),
        ];
        // 30 minutes in: order 4 still has time; order 5 (completion) too.
        let r = deadline_report(&orders, t0 + Duration::minutes(30));
        let e = &r.kinds["emergency"];
        assert_eq!((e.orders, e.met, e.breached, e.pending), (4, 2, 1, 1));
        assert_eq!(e.mean_arrival_min, Some(45.0));
        assert_eq!(e.p95_arrival_min, Some(75.0));
        assert_eq!(r.late.len(), 1);
        assert_eq!((r.late[0].order_id, r.late[0].late_by_min), (3, 15));
        // Two hours in, orders 4 and 5 are late as well.
        let r = deadline_report(&orders, t0 + Duration::minutes(120));
        assert_eq!(r.kinds["emergency"].breached, 2);
        assert_eq!(r.kinds["repair"].breached, 1);
        assert_eq!(r.late.len(), 3);
    }
}
