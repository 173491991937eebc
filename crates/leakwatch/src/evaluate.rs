//! `leakwatch eval`: judges the detectors against the simulator's ground truth.
//!
//! Two ways in:
//! - replay: generate a scenario (`--scenario standard --seed N`), feed its message
//!   stream through the same detector engine and alert rules the service runs
//!   (in process, no broker, no store: the stream is identical to what `leakwatch
//!   sim` publishes), then score the alerts;
//! - files: score alerts exported from a running service (`--alerts FILE`, the JSON
//!   of `GET /api/v1/alerts` items or of a replay) against a truth file written by
//!   `leakwatch sim --truth-out` (`--truth FILE`).
//!
//! The detector settings are the service's: `[detect]` of `--config FILE` and
//! `LEAKWATCH__DETECT__...` variables over the defaults.

use anyhow::{Context, bail};
use leakwatch_core::Timestamp;
use leakwatch_detect::book::{Book, BookAlert};
use leakwatch_detect::{DetectConfig, Engine};
use leakwatch_sim::eval::{AlertView, Report, score};
use leakwatch_sim::{Fleet, FleetConfig, Truth};
use std::path::PathBuf;
use std::time::Instant;

/// How far after its arrival a reading's time may lie before the ingestor refuses it
/// (`ingest.max_future_min`, default 60): the replay applies the same rule.
const MAX_FUTURE_MIN: i64 = 60;

#[derive(Debug, clap::Args)]
pub struct EvalArgs {
    /// Scenario to replay: `standard` (5,000 meters, 10 districts, 120 days from
    /// 2026-10-01, with usage changes, incipient leaks, leaks on top of leaks and
    /// overlapping network leaks), `standard-v1` (the first standard scenario, kept
    /// for comparison), `small` (500 meters, 60 days; quick checks) or `clean` (the
    /// standard scenario without device and transport faults).
    #[arg(long, default_value = "standard")]
    scenario: String,
    /// Time of the scenario's first reading (RFC 3339), instead of its own: the same
    /// as `leakwatch sim --start`, to replay what was published through a service.
    #[arg(long, value_parser = parse_start)]
    start: Option<Timestamp>,
    /// Seeds to replay, comma-separated (each is its own fleet).
    #[arg(long, value_delimiter = ',', default_value = "1")]
    seeds: Vec<u64>,
    /// Score these alerts (JSON array) instead of replaying; needs --truth.
    #[arg(long, requires = "truth")]
    alerts: Option<PathBuf>,
    /// Ground truth written by `leakwatch sim --truth-out`; needs --alerts.
    #[arg(long, requires = "alerts")]
    truth: Option<PathBuf>,
    /// Days at the start of the run the detectors learn in: false alarms raised then
    /// are reported apart, not in the rates (the standard scenario's leaks start on
    /// day 14 at the earliest).
    #[arg(long, default_value_t = 14.0)]
    warmup_days: f64,
    /// Write the reports (one per seed) as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Write the replayed alerts of each seed to DIR/alerts-seed-N.json and its truth
    /// to DIR/truth-seed-N.json.
    #[arg(long)]
    out_dir: Option<PathBuf>,
}

/// What one replay produced.
#[derive(Debug)]
pub struct Replay {
    pub truth: Truth,
    pub alerts: Vec<BookAlert>,
    pub messages: u64,
    pub readings: u64,
    pub refused_future: u64,
    pub seconds: f64,
}

fn parse_start(s: &str) -> Result<Timestamp, String> {
    chrono::DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&chrono::Utc))
        .map_err(|e| format!("{s:?} is not an RFC 3339 time (e.g. 2025-10-01T00:00:00Z): {e}"))
}

/// A scenario by name.
pub fn scenario(name: &str, seed: u64) -> anyhow::Result<FleetConfig> {
    Ok(match name {
        "standard" => FleetConfig::standard(seed),
        "standard-v1" => FleetConfig::standard_v1(seed),
        "small" => {
            let mut c = FleetConfig::standard(seed);
            c.meters_per_district = 50;
            c.hours = Some(60 * 24);
            c.leaks = 40;
            c.leak.to_h = 45 * 24;
            c
        }
        "clean" => FleetConfig {
            faults: leakwatch_sim::FaultRates::default(),
            ..FleetConfig::standard(seed)
        },
        other => bail!("unknown scenario {other:?}; known: standard, standard-v1, small, clean"),
    })
}

/// Feeds messages to the engine as the service's ingest does (a reading further in
/// the future than the ingestor accepts is refused), counting what went in.
pub(crate) struct Feeder {
    infos: std::collections::HashMap<leakwatch_core::MeterId, leakwatch_detect::MeterInfo>,
    messages: u64,
    readings: u64,
    refused: u64,
}

impl Feeder {
    /// A feeder for the meters of `registry`, registered with `engine`.
    pub(crate) fn new(engine: &mut Engine, registry: &[leakwatch_core::Meter]) -> Self {
        Feeder {
            infos: engine.register_registry(registry),
            messages: 0,
            readings: 0,
            refused: 0,
        }
    }

    /// One message: its readings in time order, then its events.
    pub(crate) fn feed(
        &mut self,
        engine: &mut Engine,
        mut up: leakwatch_wire::Uplink,
        arrival: Timestamp,
        findings: &mut Vec<leakwatch_core::Finding>,
    ) {
        let limit =
            arrival + chrono::TimeDelta::hours(1) + chrono::TimeDelta::minutes(MAX_FUTURE_MIN);
        self.messages += 1;
        let Some(info) = self.infos.get(&up.meter) else {
            return;
        };
        up.readings.sort_by_key(|r| r.t);
        for r in &up.readings {
            if r.t > limit {
                self.refused += 1;
                continue;
            }
            self.readings += 1;
            engine.observe(info, r, findings);
        }
        for e in &up.events {
            engine.observe_event(info, e, findings);
        }
    }
}

/// Records what the engine found since the last call into the book, resolving quiet
/// alerts at each district's watermark moves among the findings.
fn settle(engine: &mut Engine, book: &mut Book, findings: &mut Vec<leakwatch_core::Finding>) {
    let ticks = engine.take_ticks();
    book.record_all(findings, &ticks);
}

/// Replays a scenario's whole stream through the detectors and the alert rules.
pub fn replay(fleet_cfg: &FleetConfig, detect: &DetectConfig) -> Replay {
    let started = Instant::now();
    let mut fleet = Fleet::generate(fleet_cfg);
    let mut engine = Engine::new(detect.clone());
    let registry = fleet.registry();
    let mut feeder = Feeder {
        infos: engine.register_registry(&registry),
        messages: 0,
        readings: 0,
        refused: 0,
    };
    let mut book = Book::new(chrono::TimeDelta::hours(i64::from(detect.resolve_after_h)));
    let hours = fleet_cfg.hours.unwrap_or(24 * 30);
    let mut findings = Vec::new();
    for _ in 0..hours {
        let ups = fleet.step();
        let arrival = fleet.now();
        for up in ups {
            feeder.feed(&mut engine, up, arrival, &mut findings);
        }
        settle(&mut engine, &mut book, &mut findings);
    }
    let ups = fleet.finish();
    let arrival = fleet.now();
    for up in ups {
        feeder.feed(&mut engine, up, arrival, &mut findings);
    }
    settle(&mut engine, &mut book, &mut findings);
    Replay {
        truth: fleet.truth().clone(),
        alerts: book.into_alerts(),
        messages: feeder.messages,
        readings: feeder.readings,
        refused_future: feeder.refused,
        seconds: started.elapsed().as_secs_f64(),
    }
}

fn views(alerts: &[BookAlert]) -> Vec<AlertView> {
    alerts
        .iter()
        .map(|a| AlertView {
            kind: a.kind,
            meter_id: a.meter_id.clone(),
            district_id: a.district_id.clone(),
            detected_at: a.detected_at,
        })
        .collect()
}

/// Reads alerts from JSON: an array of alerts, or an object with an `items` or
/// `alerts` array (an API page).
fn read_alerts(path: &PathBuf) -> anyhow::Result<Vec<AlertView>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let value: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("{} is not JSON", path.display()))?;
    let list = match value {
        serde_json::Value::Array(_) => value,
        serde_json::Value::Object(mut o) => o
            .remove("items")
            .or_else(|| o.remove("alerts"))
            .with_context(|| {
                format!(
                    "{}: expected an array, or an object with `items`",
                    path.display()
                )
            })?,
        _ => bail!("{}: expected an array of alerts", path.display()),
    };
    serde_json::from_value(list)
        .with_context(|| format!("{}: not a list of alerts", path.display()))
}

pub fn command(args: EvalArgs, detect: DetectConfig) -> anyhow::Result<()> {
    if let (Some(alerts), Some(truth)) = (&args.alerts, &args.truth) {
        let text = std::fs::read_to_string(truth)
            .with_context(|| format!("reading {}", truth.display()))?;
        let truth: Truth = serde_json::from_str(&text)
            .with_context(|| format!("{} is not a truth file", truth.display()))?;
        let report = score(&truth, &read_alerts(alerts)?, args.warmup_days);
        println!("{report}");
        write_json(&args.json, &[report])?;
        return Ok(());
    }
    if let Some(dir) = &args.out_dir {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let configs = args
        .seeds
        .iter()
        .map(|&s| {
            scenario(&args.scenario, s).map(|mut c| {
                if let Some(start) = args.start {
                    c.start = start;
                }
                c
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    eprintln!(
        "replaying scenario {:?} for seeds {:?} ({} customer meters, {} h each)",
        args.scenario,
        args.seeds,
        configs[0].districts * configs[0].meters_per_district,
        configs[0].hours.unwrap_or(0)
    );
    // Two seeds at a time: one per core on a small machine, and no more memory.
    let mut reports = Vec::new();
    for chunk in configs.chunks(2) {
        let replays: Vec<Replay> = std::thread::scope(|s| {
            let handles: Vec<_> = chunk
                .iter()
                .map(|c| s.spawn(|| replay(c, &detect)))
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("replay thread"))
                .collect()
        });
        for r in replays {
            let report = score(&r.truth, &views(&r.alerts), args.warmup_days);
            eprintln!(
                "seed {}: {} messages, {} readings ({} refused as from the future), {} alerts, replayed in {:.1} s ({:.2} M readings/s)",
                r.truth.scenario.seed,
                r.messages,
                r.readings,
                r.refused_future,
                r.alerts.len(),
                r.seconds,
                r.readings as f64 / r.seconds / 1e6
            );
            if let Some(dir) = &args.out_dir {
                let seed = r.truth.scenario.seed;
                std::fs::write(
                    dir.join(format!("alerts-seed-{seed}.json")),
                    serde_json::to_vec_pretty(&r.alerts)?,
                )?;
                std::fs::write(
                    dir.join(format!("truth-seed-{seed}.json")),
                    serde_json::to_vec_pretty(&r.truth)?,
                )?;
            }
            println!("{report}");
            reports.push(report);
        }
    }
    write_json(&args.json, &reports)?;
    Ok(())
}

fn write_json(path: &Option<PathBuf>, reports: &[Report]) -> anyhow::Result<()> {
    if let Some(p) = path {
        std::fs::write(p, serde_json::to_vec_pretty(reports)?)
            .with_context(|| format!("writing {}", p.display()))?;
        eprintln!("reports written to {}", p.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    //! Replay = live, whatever the batching: one recorded stream through the engine
    //! and the alert book, cut into batches at random, gives exactly the same alerts;
    //! and a district's alerts do not depend on which other districts share the
    //! engine.

    use super::*;
    use leakwatch_sim::{FaultRates, HomeClass, HouseholdMix, LeakConfig};
    use leakwatch_wire::Uplink;
    use rand::{Rng, SeedableRng};

    /// Eight days of a small fleet with leaks and faults, as the messages of each
    /// simulated hour with their arrival time.
    fn recorded() -> (Vec<leakwatch_core::Meter>, Vec<(Timestamp, Uplink)>) {
        let mut fleet = Fleet::generate(&FleetConfig {
            seed: 11,
            districts: 3,
            meters_per_district: 12,
            leaks: 6,
            push_every_h: 6,
            hours: Some(8 * 24),
            households: HouseholdMix::only(HomeClass::Setback),
            leak: LeakConfig {
                from_h: 40,
                to_h: 120,
                ..LeakConfig::default()
            },
            faults: FaultRates::all(200.0),
            ..FleetConfig::default()
        });
        let registry = fleet.registry();
        let mut out = Vec::new();
        for _ in 0..8 * 24 {
            let ups = fleet.step();
            let at = fleet.now();
            out.extend(ups.into_iter().map(|u| (at, u)));
        }
        let ups = fleet.finish();
        let at = fleet.now();
        out.extend(ups.into_iter().map(|u| (at, u)));
        (registry, out)
    }

    /// The alerts of the stream fed in batches ending at `cuts` (message indexes).
    fn run(
        registry: &[leakwatch_core::Meter],
        stream: &[(Timestamp, Uplink)],
        cuts: &[usize],
    ) -> Vec<BookAlert> {
        let detect = DetectConfig {
            // Small districts: a short resolution time makes many alerts resolve.
            resolve_after_h: 12,
            ..DetectConfig::default()
        };
        let mut engine = Engine::new(detect.clone());
        let mut feeder = Feeder {
            infos: engine.register_registry(registry),
            messages: 0,
            readings: 0,
            refused: 0,
        };
        let mut book = Book::new(chrono::TimeDelta::hours(12));
        let mut findings = Vec::new();
        let mut from = 0;
        for &to in cuts.iter().chain(std::iter::once(&stream.len())) {
            for (at, up) in &stream[from..to] {
                feeder.feed(&mut engine, up.clone(), *at, &mut findings);
            }
            settle(&mut engine, &mut book, &mut findings);
            from = to;
        }
        book.into_alerts()
    }

    #[test]
    fn the_same_stream_cut_into_random_batches_gives_the_same_alerts() {
        let (registry, stream) = recorded();
        let expected = run(&registry, &stream, &[]);
        let resolved = expected.iter().filter(|a| a.resolved_at.is_some()).count();
        assert!(
            resolved >= 3,
            "too few resolved alerts to judge: {expected:#?}"
        );
        assert!(expected.iter().any(|a| a.count > 1));
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for trial in 0..12 {
            let mut cuts: Vec<usize> = (0..rng.random_range(1..400))
                .map(|_| rng.random_range(0..stream.len()))
                .collect();
            if trial == 0 {
                // One message per batch.
                cuts = (1..stream.len()).collect();
            }
            cuts.sort_unstable();
            let got = run(&registry, &stream, &cuts);
            assert_eq!(got, expected, "trial {trial}, {} cuts", cuts.len());
        }
    }

    #[test]
    fn a_district_raises_the_same_alerts_alone_or_with_others() {
        let (registry, stream) = recorded();
        let district = registry[0].district.clone();
        let key = |a: &BookAlert| {
            (
                a.kind,
                a.meter_id.clone(),
                a.detected_at,
                a.last_seen,
                a.count,
                a.resolved_at,
            )
        };
        let all: Vec<_> = run(&registry, &stream, &[])
            .iter()
            .filter(|a| a.district_id.as_ref() == Some(&district))
            .map(key)
            .collect();
        assert!(!all.is_empty());
        let own: Vec<leakwatch_core::Meter> = registry
            .iter()
            .filter(|m| m.district == district)
            .cloned()
            .collect();
        let own_stream: Vec<(Timestamp, Uplink)> = stream
            .iter()
            .filter(|(_, u)| own.iter().any(|m| m.id == u.meter))
            .cloned()
            .collect();
        let alone: Vec<_> = run(&own, &own_stream, &[]).iter().map(key).collect();
        assert_eq!(alone, all);
    }
}
