//! The demo's crews: simulated phones that take every job the service sends on
//! `{crew_prefix}/{crew_id}/jobs`, walk it through its lifecycle with short pauses
//! (accept, set off, arrive at the job's place, complete), and report a finding from
//! the simulator's ground truth: a leak where one was injected, none elsewhere. A leak
//! is left for a follow-up repair, which the crews then do as well.
//!
//! Only `leakwatch demo` runs it; a real deployment's crews use their phones.

use leakwatch_core::{GasReading, MeterId, OrderAction, SiteFinding, WorkOrderStatus};
use leakwatch_dispatch::Dispatcher;
use leakwatch_mqtt::{Session, SessionConfig, SessionHealth};
use leakwatch_wire::crew::{JobChange, JobMessage, JobOrder};
use std::collections::{HashMap, HashSet};
use std::future::Future;
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
    /// The login (and TLS) of the simulated phones' connection.
    pub security: leakwatch_mqtt::Security,
}

/// What a simulated crew finds at a job on `meter`: the ground truth, classed as A2
/// (repair within 24 h) from 200 L/h and B below, never repaired on the spot.
pub fn finding_for(meter: Option<&MeterId>, leaks: &HashMap<MeterId, f64>) -> SiteFinding {
    match meter.and_then(|m| leaks.get(m)) {
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

/// Runs the simulated crews until `shutdown`; the jobs they are walking stop with it.
pub async fn run(
    cfg: CrewBotConfig,
    dispatcher: Dispatcher,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let mut session = Session::new(
        SessionConfig {
            name: "demo-crews",
            host: cfg.host.clone(),
            port: cfg.port,
            client_id: format!("leakwatch-demo-crews-{}", std::process::id()),
            keep_alive: Duration::from_secs(10),
            persistent: false,
            manual_acks: false,
            inflight: 10,
            subscriptions: vec![format!("{}/+/jobs", cfg.prefix)],
            security: cfg.security.clone(),
        },
        SessionHealth::new("demo-crews"),
    );
    let working: Arc<Mutex<HashSet<(i64, String)>>> = Arc::default();
    let cfg = Arc::new(cfg);
    let mut walks = tokio::task::JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            Some(_) = walks.join_next(), if !walks.is_empty() => {}
            p = session.next() => {
                let Ok(msg) = serde_json::from_slice::<JobMessage>(&p.payload) else {
                    continue;
                };
                if msg.change != JobChange::Assigned || msg.order.status != WorkOrderStatus::Assigned {
                    continue;
                }
                let key = (msg.order.id, msg.crew_id.to_string());
                if !working.lock().expect("not poisoned").insert(key.clone()) {
                    continue;
                }
                let (d, cfg, working) = (dispatcher.clone(), cfg.clone(), working.clone());
                walks.spawn(async move {
                    walk(&d, &cfg, msg.order, &key.1).await;
                    working.lock().expect("not poisoned").remove(&key);
                });
            }
        }
    }
    walks.abort_all();
    session.close(Duration::from_millis(500)).await;
}

/// One job, step by step; stops quietly when the job is taken away meanwhile.
async fn walk(d: &Dispatcher, cfg: &CrewBotConfig, order: JobOrder, crew: &str) {
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
                    .then(|| finding_for(order.meter_id.as_ref(), &cfg.leaks)),
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
    use leakwatch_core::LeakClassTable;

    #[test]
    fn findings_follow_the_ground_truth_and_pass_validation() {
        let leaks: HashMap<MeterId, f64> = [
            (MeterId::parse("BIG").unwrap(), 300.0),
            (MeterId::parse("SMALL").unwrap(), 12.0),
        ]
        .into();
        let m = |id: &str| MeterId::parse(id).unwrap();
        let table = LeakClassTable::italian();
        let big = finding_for(Some(&m("BIG")), &leaks);
        assert_eq!(
            (big.leak_found, big.leak_class.as_deref()),
            (true, Some("A2"))
        );
        assert!(big.needs_follow_up());
        let small = finding_for(Some(&m("SMALL")), &leaks);
        assert_eq!(small.leak_class.as_deref(), Some("B"));
        let none = finding_for(Some(&m("OTHER")), &leaks);
        assert!(!none.leak_found);
        assert!(!finding_for(None, &leaks).leak_found);
        for f in [big, small, none] {
            f.validate(&table).unwrap();
        }
    }
}
