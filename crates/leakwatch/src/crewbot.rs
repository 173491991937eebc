//! The demo's crews: simulated phones that take every job the service sends on
//! `{crew_prefix}/{crew_id}/jobs`, walk it through its lifecycle with short pauses
//! (accept, set off, arrive at the job's place, complete), and report a finding from
//! the simulator's ground truth: a leak where one was injected, none elsewhere. A leak
//! is left for a follow-up repair, which the crews then do as well.
//!
//! Only `leakwatch demo` runs it; a real deployment's crews use their phones.

use leakwatch_core::{GasReading, MeterId, OrderAction, SiteFinding, WorkOrder, WorkOrderStatus};
use leakwatch_dispatch::Dispatcher;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Where the broker is and how the simulated crews behave.
#[derive(Debug, Clone)]
pub struct CrewBotConfig {
    pub host: String,
    pub port: u16,
    pub prefix: String,
    /// Leak rate (L/h) per meter with an injected leak.
    pub leaks: HashMap<MeterId, f64>,
    /// Pause between two steps of a job.
    pub pace: Duration,
}

/// What a simulated crew finds at a job: the ground truth, classed as A2 (repair
/// within 24 h) from 200 L/h and B below, never repaired on the spot.
pub fn finding_for(order: &WorkOrder, leaks: &HashMap<MeterId, f64>) -> SiteFinding {
    match order.meter_id.as_ref().and_then(|m| leaks.get(m)) {
        Some(&rate) => SiteFinding {
            leak_found: true,
            leak_class: Some(if rate >= 200.0 { "A2" } else { "B" }.into()),
            gas_readings: vec![GasReading {
                percent_lel: if rate >= 200.0 { 20.0 } else { 5.0 },
                place: "at the meter".into(),
            }],
            repaired: false,
            notes: format!("leak behind the meter, about {rate:.0} L/h (simulated crew)"),
        },
        None => SiteFinding {
            leak_found: false,
            leak_class: None,
            gas_readings: vec![GasReading {
                percent_lel: 0.0,
                place: "at the meter".into(),
            }],
            repaired: false,
            notes: "no gas found (simulated crew)".into(),
        },
    }
}

/// Runs the simulated crews until `shutdown`.
pub async fn run(
    cfg: CrewBotConfig,
    dispatcher: Dispatcher,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let mut opts = MqttOptions::new(
        format!("leakwatch-demo-crews-{}", std::process::id()),
        cfg.host.clone(),
        cfg.port,
    );
    opts.set_keep_alive(Duration::from_secs(10));
    let (client, mut events) = AsyncClient::new(opts, 64);
    let filter = format!("{}/+/jobs", cfg.prefix);
    let working: Arc<Mutex<HashSet<(i64, String)>>> = Arc::default();
    let cfg = Arc::new(cfg);
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            ev = events.poll() => match ev {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    let _ = client.try_subscribe(filter.clone(), QoS::AtLeastOnce);
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    let Ok(msg) = serde_json::from_slice::<crate::crews::JobMessage>(&p.payload) else {
                        continue;
                    };
                    if msg.change != "assigned" || msg.order.status != WorkOrderStatus::Assigned {
                        continue;
                    }
                    let key = (msg.order.id, msg.crew_id.to_string());
                    if !working.lock().expect("not poisoned").insert(key.clone()) {
                        continue;
                    }
                    let (d, cfg, working) = (dispatcher.clone(), cfg.clone(), working.clone());
                    tokio::spawn(async move {
                        walk(&d, &cfg, msg.order, &key.1).await;
                        working.lock().expect("not poisoned").remove(&key);
                    });
                }
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
            },
        }
    }
    let _ = client.try_disconnect();
}

/// One job, step by step; stops quietly when the job is taken away meanwhile.
async fn walk(d: &Dispatcher, cfg: &CrewBotConfig, order: WorkOrder, crew: &str) {
    let steps = [
        (1, OrderAction::Accept, None),
        (1, OrderAction::StartTravel, None),
        (2, OrderAction::Arrive, Some(order.location)),
        (
            2,
            OrderAction::Complete {
                notes: None,
                finding: order
                    .kind
                    .requires_finding()
                    .then(|| finding_for(&order, &cfg.leaks)),
            },
            Some(order.location),
        ),
    ];
    for (pauses, action, position) in steps {
        tokio::time::sleep(cfg.pace * pauses).await;
        let name = action.name();
        if let Err(e) = d.transition(order.id, action, crew, position).await {
            tracing::debug!(order_id = order.id, crew, step = name, error = %e, "simulated crew stops");
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use leakwatch_core::{GeoPoint, LeakClassTable, Priority, WorkOrderKind};

    #[test]
    fn findings_follow_the_ground_truth_and_pass_validation() {
        let t = chrono::Utc::now();
        let order = |meter: &str| WorkOrder {
            id: 1,
            kind: WorkOrderKind::LeakInvestigation,
            priority: Priority::High,
            status: WorkOrderStatus::OnSite,
            alert_id: None,
            meter_id: Some(MeterId::parse(meter).unwrap()),
            district_id: None,
            location: GeoPoint::new(43.0, 11.0).unwrap(),
            crew_id: None,
            summary: String::new(),
            created_at: t,
            updated_at: t,
            due_at: None,
            parent_id: None,
            assigned_at: None,
            reached_at: None,
            breached_at: None,
            finding: None,
        };
        let leaks: HashMap<MeterId, f64> = [
            (MeterId::parse("BIG").unwrap(), 300.0),
            (MeterId::parse("SMALL").unwrap(), 12.0),
        ]
        .into();
        let table = LeakClassTable::italian();
        let big = finding_for(&order("BIG"), &leaks);
        assert_eq!(
            (big.leak_found, big.leak_class.as_deref()),
            (true, Some("A2"))
        );
        assert!(big.needs_follow_up());
        let small = finding_for(&order("SMALL"), &leaks);
        assert_eq!(small.leak_class.as_deref(), Some("B"));
        let none = finding_for(&order("OTHER"), &leaks);
        assert!(!none.leak_found);
        for f in [big, small, none] {
            f.validate(&table).unwrap();
        }
    }
}
