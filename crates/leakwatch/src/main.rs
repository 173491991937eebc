//! `leakwatch`: the one binary. `run` is the production entry point; `demo` runs
//! everything with a simulated fleet; `sim` publishes a simulated fleet to a broker;
//! `meters import` and `crews import` load registries.

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};
use leakwatch::app::{self, StartOptions};
use leakwatch::config::{Config, parse_mqtt_url};
use leakwatch::telemetry;
use leakwatch_core::{Crew, MeterRecord};
use leakwatch_sim::{Fleet, FleetConfig, PublishConfig, Publisher};
use leakwatch_store::{AlertQuery, Store};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

#[derive(Parser)]
#[command(
    name = "leakwatch",
    version,
    about = "Leak detection and field dispatch for gas networks with electronic meters"
)]
struct Cli {
    /// Configuration file (TOML); LEAKWATCH__SECTION__KEY variables override it.
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the service: ingest, detection, dispatch and the HTTP API (no simulator).
    Run,
    /// Run everything on this machine with a simulated fleet publishing over MQTT.
    Demo(DemoArgs),
    /// Publish a simulated fleet to a broker in the v1 wire format.
    Sim(SimArgs),
    /// Score the detectors against the simulator's ground truth (replay a scenario, or
    /// score exported alerts against a truth file).
    Eval(leakwatch::evaluate::EvalArgs),
    /// Replay a recorded stream (v1 JSONL, or a CSV of flows or indexes with a mapping
    /// to meters) through the detectors, write the alerts, and score them against
    /// labels.
    Backtest(leakwatch::backtest::BacktestArgs),
    /// Meter registry.
    Meters {
        #[command(subcommand)]
        command: MetersCommand,
    },
    /// Crew registry.
    Crews {
        #[command(subcommand)]
        command: CrewsCommand,
    },
    /// Per-device broker credentials (meters, crews' phones, head-ends, leakwatch).
    Devices {
        #[command(subcommand)]
        command: leakwatch::devices::DevicesCommand,
    },
    /// People's accounts (the password is read from standard input).
    User {
        #[command(subcommand)]
        command: leakwatch::accounts::UserCommand,
    },
    /// API tokens of integrations and devices (the secret is printed once).
    Token {
        #[command(subcommand)]
        command: leakwatch::accounts::TokenCommand,
    },
    /// Write Mosquitto's password file and ACL from the device credentials.
    BrokerConfig(leakwatch::devices::BrokerConfigArgs),
    /// Pipe network for the programmed leak survey.
    Network {
        #[command(subcommand)]
        command: leakwatch::survey::NetworkCommand,
    },
    /// Print the effective configuration (defaults, file, environment) and exit.
    Config,
    /// Scaled-out shape: MQTT to the replicated log (NATS JetStream), acknowledging
    /// each message after the log stored it (docs/scale-out.md).
    Bridge(leakwatch::scaleout::BridgeArgs),
    /// Scaled-out shape: own partitions of the log by lease, store and analyse them in
    /// fenced PostgreSQL transactions (docs/scale-out.md).
    Worker(leakwatch::scaleout::WorkerArgs),
}

#[derive(Subcommand)]
enum MetersCommand {
    /// Load meters from CSV: meter_id,district_id,kind,lat,lon,report_every_h
    Import { file: PathBuf },
}

#[derive(Subcommand)]
enum CrewsCommand {
    /// Load crews from a JSON array (the body of POST /api/v1/crews).
    Import { file: PathBuf },
}

#[derive(Args, Clone)]
struct FleetArgs {
    /// Seed of the simulated fleet.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    #[arg(long, default_value_t = 10)]
    districts: u32,
    /// Customer meters per district (each district also has a station meter).
    #[arg(long, default_value_t = 100)]
    meters_per_district: u32,
    /// Meters with a leak behind them.
    #[arg(long, default_value_t = 5)]
    leaks: u32,
    /// Wall-clock milliseconds per simulated hour (0: as fast as possible).
    #[arg(long, default_value_t = 500)]
    sim_hour_ms: u64,
    /// Simulated hours to run (default: the scenario's length, else until stopped).
    #[arg(long)]
    hours: Option<u32>,
    /// Hours between a customer meter's pushes (each at its own phase; stations push
    /// every hour).
    #[arg(long, default_value_t = 6)]
    push_every_h: u32,
    /// The standard evaluation scenario with this seed: 5,000 meters in 10 districts,
    /// 120 days from 2026-10-01, daily pushes, 100 leaks, 5 network leaks, faults
    /// (see docs/simulator.md).
    #[arg(long, conflicts_with_all = ["districts", "meters_per_district", "leaks", "push_every_h"])]
    standard: bool,
    /// Time of the first reading (RFC 3339, on the hour), instead of the scenario's
    /// own (standard: 2026-10-01, otherwise 2026-11-01). The weather follows the
    /// calendar, so keep the season: e.g. `--standard --start 2025-10-01T00:00:00Z`
    /// to publish last autumn through a live service, whose ingest refuses readings
    /// dated after the time they arrive.
    #[arg(long, value_parser = parse_start)]
    start: Option<leakwatch_core::Timestamp>,
}

fn parse_start(s: &str) -> Result<leakwatch_core::Timestamp, String> {
    chrono::DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&chrono::Utc))
        .map_err(|e| format!("{s:?} is not an RFC 3339 time (e.g. 2025-10-01T00:00:00Z): {e}"))
}

#[derive(Args)]
struct DemoArgs {
    #[command(flatten)]
    fleet: FleetArgs,
    /// Leave the jobs to you (through the API) instead of simulated crews that take
    /// them, walk them and report what the ground truth says they find.
    #[arg(long)]
    manual_crews: bool,
}

#[derive(Subcommand)]
enum SimCommand {
    /// Simulate emergency dispatch on a district map (no broker, no database):
    /// crews on shifts from home, Poisson emergencies and planned work; compares
    /// nearest-crew dispatch with the naive first-free-crew baseline on the same
    /// draws (docs/dispatch.md).
    Dispatch(SimDispatchArgs),
    /// Programmed leak survey over a simulated year: calendar order against the
    /// risk-based program on the same network, leaks and capacity, the signals being
    /// what the district detectors raise on the simulated meters (docs/survey.md).
    Survey(leakwatch::survey_sim::SimSurveyArgs),
    /// Write the simulated districts' street network as GeoJSON (for `network import`).
    Network(leakwatch::survey::SimNetworkArgs),
}

#[derive(Args)]
struct SimDispatchArgs {
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Simulated days.
    #[arg(long, default_value_t = 30)]
    days: u32,
    /// Number of crews (split over three daily shifts).
    #[arg(long)]
    crews: Option<u32>,
    /// Mean emergencies per hour.
    #[arg(long)]
    emergencies_per_h: Option<f64>,
    /// Planned jobs released each day.
    #[arg(long)]
    planned_per_day: Option<u32>,
    /// Write the scenario and the reports as JSON.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
}

#[derive(Args)]
#[command(args_conflicts_with_subcommands = true)]
struct SimArgs {
    #[command(subcommand)]
    what: Option<SimCommand>,
    /// Broker to publish to.
    #[arg(long, default_value = "mqtt://127.0.0.1:1883")]
    mqtt: String,
    /// Topic prefix.
    #[arg(long, default_value = "gas")]
    prefix: String,
    /// Log in as this broker user (a head-end identity: `leakwatch devices issue
    /// --kind headend NAME`); its password is read from LEAKWATCH_SIM_PASSWORD, never
    /// from the command line.
    #[arg(long)]
    username: Option<String>,
    /// With an mqtts:// broker: the PEM file of the CA that signed its certificate.
    #[arg(long, value_name = "FILE")]
    ca_file: Option<PathBuf>,
    /// With an mqtts:// broker: a client certificate (PEM) and its key (--client-key).
    #[arg(long, value_name = "FILE", requires = "client_key")]
    client_cert: Option<PathBuf>,
    #[arg(long, value_name = "FILE", requires = "client_cert")]
    client_key: Option<PathBuf>,
    #[command(flatten)]
    fleet: FleetArgs,
    /// Write the fleet's registry as CSV (for `meters import`) and exit.
    #[arg(long, value_name = "FILE")]
    registry_out: Option<PathBuf>,
    /// Write the ground truth (scenario, classes, leaks, network leaks, faults) as JSON.
    #[arg(long, value_name = "FILE")]
    truth_out: Option<PathBuf>,
}

impl FleetArgs {
    fn fleet(&self) -> Fleet {
        if self.standard {
            let mut cfg = FleetConfig::standard(self.seed);
            if let Some(start) = self.start {
                cfg.start = start;
            }
            return Fleet::generate(&cfg);
        }
        let default_start = FleetConfig::default().start;
        Fleet::generate(&FleetConfig {
            start: self.start.unwrap_or(default_start),
            seed: self.seed,
            districts: self.districts,
            meters_per_district: self.meters_per_district,
            leaks: self.leaks,
            push_every_h: self.push_every_h.max(1),
            // Homes that rest at night: a demo's detectors have no history yet, and
            // meters that never stop (pilot flames, businesses) would alarm during the
            // learning days. `--standard` runs the realistic mix.
            households: leakwatch_sim::HouseholdMix::only(leakwatch_sim::HomeClass::Setback),
            ..FleetConfig::default()
        })
    }
    fn publish_config(&self, prefix: &str) -> PublishConfig {
        PublishConfig {
            prefix: prefix.to_owned(),
            hours: self.hours,
            sim_hour: Duration::from_millis(self.sim_hour_ms),
            duplicate_every: None,
        }
    }
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let cfg = match Config::load(cli.config.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("leakwatch: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    telemetry::init_logs(&cfg.log);
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("leakwatch: cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match rt.block_on(dispatch(cli.command, cfg, cli.config)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("leakwatch: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn dispatch(command: Command, cfg: Config, file: Option<PathBuf>) -> anyhow::Result<()> {
    match command {
        Command::Run => run(cfg).await,
        Command::Demo(args) => {
            let own_db = !Config::is_set(file.as_deref(), "database.url");
            demo(cfg, args, own_db).await
        }
        Command::Sim(SimArgs {
            what: Some(SimCommand::Survey(a)),
            ..
        }) => {
            let weights = cfg.survey.risk.clone();
            tokio::task::spawn_blocking(move || {
                leakwatch::survey_sim::command(a, cfg.detect, weights)
            })
            .await?
        }
        Command::Sim(args) => sim(args).await,
        Command::Eval(args) => {
            tokio::task::spawn_blocking(move || leakwatch::evaluate::command(args, cfg.detect))
                .await?
        }
        Command::Backtest(args) => {
            let registry = match &args.registry {
                Some(p) => read_meter_csv(p)?,
                None => Vec::new(),
            };
            tokio::task::spawn_blocking(move || {
                leakwatch::backtest::command(args, cfg.detect, registry)
            })
            .await?
        }
        Command::Meters {
            command: MetersCommand::Import { file },
        } => import_meters(&cfg, &file).await,
        Command::Crews {
            command: CrewsCommand::Import { file },
        } => import_crews(&cfg, &file).await,
        Command::Devices { command } => {
            leakwatch::devices::devices(cfg.database.url.expose(), command).await
        }
        Command::User { command } => {
            leakwatch::accounts::user(cfg.database.url.expose(), command).await
        }
        Command::Token { command } => {
            leakwatch::accounts::token(cfg.database.url.expose(), command).await
        }
        Command::BrokerConfig(args) => {
            leakwatch::devices::broker_config(
                cfg.database.url.expose(),
                &cfg.mqtt.prefix,
                &cfg.mqtt.crew_prefix,
                args,
            )
            .await
        }
        Command::Network { command } => {
            leakwatch::survey::network(cfg.database.url.expose(), &cfg.survey, command).await
        }
        Command::Bridge(args) => leakwatch::scaleout::bridge(cfg, args).await,
        Command::Worker(args) => leakwatch::scaleout::worker(cfg, args).await,
        Command::Config => {
            // Secrets print as *** (their types see to it).
            println!("{}", serde_json::to_string_pretty(&cfg)?);
            Ok(())
        }
    }
}

async fn ctrl_c() {
    let _ = tokio::signal::ctrl_c().await;
}

async fn terminate() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = match signal(SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => return ctrl_c().await,
        };
        tokio::select! {
            _ = ctrl_c() => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    ctrl_c().await
}

/// SIGTERM or SIGINT, handled from the moment this is called (not from the first
/// poll): a signal during start-up (waiting for the database, say) also ends the
/// process cleanly with status 0 instead of killing it.
fn termination() -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let (Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
            return Box::pin(async move {
                tokio::select! {
                    _ = term.recv() => {},
                    _ = int.recv() => {},
                }
            });
        }
    }
    Box::pin(ctrl_c())
}

async fn run(cfg: Config) -> anyhow::Result<()> {
    let mut stop = termination();
    let running = tokio::select! {
        r = app::start(&cfg, StartOptions::default()) => r?,
        _ = &mut stop => {
            tracing::info!("stopped during start-up");
            return Ok(());
        }
    };
    let scheme = if cfg.http.tls_enabled() {
        "https"
    } else {
        "http"
    };
    println!(
        "leakwatch is running: API {scheme}://{}/api/v1, console {scheme}://{}/, MQTT {}:{} ({})",
        running.http_addr,
        running.http_addr,
        running.mqtt_host,
        running.mqtt_port,
        if running.embedded_broker {
            "embedded broker"
        } else {
            "external broker"
        }
    );
    stop.await;
    tracing::info!("shutting down");
    running.shutdown().await;
    Ok(())
}

/// The demo's own store, recreated at each start, unless the operator configured a
/// database (in the file or `LEAKWATCH__DATABASE__URL`, even one equal to the
/// default): then the demo uses that one, as it is, and says so.
const DEMO_DB: &str = "data/demo.db";

/// What the demo escalates itself and what it leaves to the engineer, in words.
fn review_words(d: &leakwatch_dispatch::DispatchConfig, url: &str) -> String {
    use leakwatch_core::Severity;
    let inbox = format!("{url}/console/alerts");
    match (d.auto_escalate, d.auto_escalate_min_severity) {
        (false, _) => format!(
            "nothing is escalated automatically: every alert waits for the engineer at {inbox}"
        ),
        (true, Severity::Info) => format!(
            "every new leak alert is escalated to a crew automatically (dispatch.auto_escalate); \
             the engineer sees them at {inbox}"
        ),
        (true, min) => format!(
            "the demo escalates leak alerts of severity {min} and above itself (critical: \
             bursts, a valve closed on a leak; dispatch.auto_escalate with auto_escalate_min_severity = \
             \"{min}\"), because they cannot wait; the others (continuous flow, night flow, level \
             shift, the meter's own leak alarm...) wait for the engineer's review at {inbox}: escalate, acknowledge or \
             dismiss (optionally keeping that meter quiet)"
        ),
    }
}

async fn demo(mut cfg: Config, args: DemoArgs, own_db: bool) -> anyhow::Result<()> {
    // The review step is part of the demo: unless the configuration turned
    // auto-escalation on itself, the demo escalates only critical leak alerts (said
    // at start) and leaves the rest in the engineer's inbox.
    if !cfg.dispatch.auto_escalate {
        cfg.dispatch.auto_escalate = true;
        cfg.dispatch.auto_escalate_min_severity = leakwatch_core::Severity::Critical;
    }
    if own_db {
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{DEMO_DB}{suffix}"));
        }
        cfg.database.url = format!("sqlite://{DEMO_DB}")
            .parse()
            .map_err(anyhow::Error::msg)?;
    }
    let started = Instant::now();
    let mut stop = termination();
    let running = tokio::select! {
        r = app::start(&cfg, StartOptions { pick_free_ports: true }) => r?,
        _ = &mut stop => return Ok(()),
    };
    if cfg.http.listen.port() != running.http_addr.port() {
        println!(
            "  note: {} was taken, the console uses port {} instead (set LEAKWATCH__HTTP__LISTEN to choose)",
            cfg.http.listen,
            running.http_addr.port()
        );
    }
    if running.embedded_broker && cfg.mqtt.embedded_listen.port() != running.mqtt_port {
        println!(
            "  note: {} was taken (another MQTT broker?), the embedded broker uses port {} instead \
             (set LEAKWATCH__MQTT__EMBEDDED_LISTEN to choose, or LEAKWATCH__MQTT__URL to use the other broker)",
            cfg.mqtt.embedded_listen, running.mqtt_port
        );
    }
    let mut fleet = args.fleet.fleet();
    running.store.upsert_meters(&fleet.registry()).await?;
    running.store.upsert_crews(&fleet.crews()).await?;
    let demo_crew = fleet.crews().first().map(|c| c.id.clone());
    let logins = match &demo_crew {
        Some(c) => leakwatch::accounts::demo_accounts(&running.store, c).await?,
        None => Vec::new(),
    };
    let scheme = if cfg.http.tls_enabled() {
        "https"
    } else {
        "http"
    };
    let url = format!("{scheme}://{}", running.http_addr);
    println!();
    println!("  leakwatch demo is running");
    println!("  console:   {url}/   log in at {url}/login as (new passwords at each start):");
    for l in &logins {
        match &l.crew {
            Some(c) => println!(
                "             {:<10} password {}   (crew member of {c})",
                l.name, l.password
            ),
            None => println!("             {:<10} password {}", l.name, l.password),
        }
    }
    println!(
        "  API:       curl -H 'Content-Type: application/json' -d '{{\"username\":\"admin\",\"password\":\"...\"}}' {url}/login, \
         or a token from `leakwatch token create NAME --role admin`"
    );
    println!("  API:       {url}/api/v1/alerts   {url}/api/v1/work-orders   {url}/api/v1/crews");
    println!("  health:    {url}/healthz   {url}/readyz   {url}/metrics");
    println!(
        "  MQTT:      {}:{} ({} broker), topics {}/{{district}}/{{meter}}/up",
        running.mqtt_host,
        running.mqtt_port,
        if running.embedded_broker {
            "embedded"
        } else {
            "external"
        },
        cfg.mqtt.prefix
    );
    println!(
        "  store:     {}{}",
        cfg.database.url,
        if own_db {
            " (the demo's own, recreated at each start)"
        } else {
            " (yours, as configured: the demo adds its fleet to it)"
        }
    );
    println!(
        "  fleet:     {} meters in {} districts, {} leaks injected, {} ms per simulated hour",
        fleet.meter_count(),
        fleet.district_ids().len(),
        fleet.truth().leaks.len(),
        args.fleet.sim_hour_ms
    );
    println!("  review:    {}", review_words(&cfg.dispatch, &url));
    if args.manual_crews {
        println!("  crews:     yours to drive: POST /api/v1/work-orders/{{id}}/transition");
    } else {
        println!(
            "  crews:     simulated phones on {}/{{crew}}/jobs take each job, go there and report \
             what the ground truth says they find (--manual-crews to drive them yourself)",
            cfg.mqtt.crew_prefix
        );
    }
    println!("  Stop with Ctrl-C.");
    println!();
    let mut running = running;
    // The simulated devices log in like real ones: identities minted for this process
    // (the simulated fleet speaks for every meter, as a head-end does; the simulated
    // phones share one identity). With an external broker, leakwatch's own login.
    let device_security = |name: &str, kind| -> anyhow::Result<leakwatch_mqtt::Security> {
        Ok(match &running.logins {
            Some(l) => leakwatch_mqtt::Security {
                login: Some(leakwatch_mqtt::Login::new(name, l.mint(name, kind)?)),
                tls: None,
            },
            None => running.security.clone(),
        })
    };
    let sim_security = device_security(
        "leakwatch-demo-sim",
        leakwatch_core::device::DeviceKind::Headend,
    )?;
    let crews_security = device_security(
        "leakwatch-demo-crews",
        leakwatch_core::device::DeviceKind::Service,
    )?;
    if !args.manual_crews {
        let bot = leakwatch_crews::bot::CrewBotConfig {
            host: running.mqtt_host.clone(),
            port: running.mqtt_port,
            prefix: cfg.mqtt.crew_prefix.clone(),
            leaks: fleet
                .truth()
                .leaks
                .iter()
                .map(|l| (l.meter.clone(), l.rate_l_per_h))
                .collect(),
            pace: Duration::from_secs(2),
            security: crews_security,
        };
        let dispatcher = running.dispatcher.clone();
        running
            .spawn(move |stop| leakwatch_crews::bot::run(bot, dispatcher, stop.cancelled_owned()));
    }

    let publisher = Publisher::connect_with(
        &running.mqtt_host,
        running.mqtt_port,
        &format!("leakwatch-demo-sim-{}", std::process::id()),
        &sim_security,
    )
    .await
    .context("the simulator cannot reach the broker")?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let pcfg = args.fleet.publish_config(&cfg.mqtt.prefix);
    let sim = tokio::spawn(async move {
        let r = leakwatch_sim::publish(&mut fleet, &publisher, &pcfg, app::stopped(stop_rx)).await;
        let _ = publisher.disconnect().await;
        r
    });
    let store = running.store.clone();
    let progress = tokio::spawn(async move {
        let mut said_alert = false;
        let mut said_order = false;
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let Ok(alerts) = store
                .list_alerts(&AlertQuery {
                    limit: 1,
                    ..AlertQuery::default()
                })
                .await
            else {
                continue;
            };
            if let Some(a) = alerts.iter().min_by_key(|a| a.id)
                && !said_alert
            {
                said_alert = true;
                println!(
                    "  [{:>5.1}s] first alert #{}: {} on {} detected at {} (event time): {}",
                    started.elapsed().as_secs_f64(),
                    a.id,
                    a.kind,
                    a.meter_id
                        .as_ref()
                        .map(|m| m.to_string())
                        .unwrap_or_default(),
                    a.detected_at.to_rfc3339(),
                    a.evidence.explanation
                );
            }
            if said_alert
                && !said_order
                && let Ok(orders) = store.list_work_orders(&Default::default()).await
                && let Some(o) = orders.iter().find(|o| o.crew_id.is_some())
            {
                said_order = true;
                println!(
                    "  [{:>5.1}s] work order #{} ({}) assigned to crew {}: {url}/api/v1/work-orders/{}",
                    started.elapsed().as_secs_f64(),
                    o.id,
                    o.kind.as_str(),
                    o.crew_id
                        .as_ref()
                        .map(|c| c.to_string())
                        .unwrap_or_default(),
                    o.id
                );
            }
        }
    });

    let sim_ended = tokio::select! {
        _ = &mut stop => false,
        r = sim => {
            match r {
                Ok(Ok(stats)) => println!("  simulator finished: {} messages, {} readings; still serving, Ctrl-C to stop", stats.messages, stats.readings),
                Ok(Err(e)) => tracing::error!(error = %e, "simulator stopped"),
                Err(e) => tracing::error!(error = %e, "simulator task failed"),
            }
            true
        }
    };
    let _ = stop_tx.send(true);
    if sim_ended {
        // Keep serving after the simulator ends, until asked to stop.
        stop.await;
    }
    progress.abort();
    running.shutdown().await;
    Ok(())
}

fn sim_dispatch(args: &SimDispatchArgs) -> anyhow::Result<()> {
    use leakwatch_dispatch::choose::ChoicePolicy;
    use leakwatch_dispatch::simulate::{self, SimPolicy, SimScenario};
    let mut scenario = SimScenario::standard();
    scenario.seed = args.seed;
    scenario.days = args.days;
    if let Some(c) = args.crews {
        scenario.crews = c;
    }
    if let Some(e) = args.emergencies_per_h {
        scenario.emergencies_per_h = e;
    }
    if let Some(p) = args.planned_per_day {
        scenario.planned_per_day = p;
    }
    let policies = [
        SimPolicy::Nearest(ChoicePolicy::default()),
        SimPolicy::Nearest(ChoicePolicy {
            preempt: false,
            ..ChoicePolicy::default()
        }),
        SimPolicy::FirstFree,
    ];
    let started = std::time::Instant::now();
    let reports = simulate::compare(&scenario, &policies).map_err(|e| anyhow::anyhow!(e))?;
    println!(
        "dispatch simulation: seed {}, {} days, {} crews, {} emergencies/h, {} planned jobs/day ({:.1} s)",
        scenario.seed,
        scenario.days,
        scenario.crews,
        scenario.emergencies_per_h,
        scenario.planned_per_day,
        started.elapsed().as_secs_f64()
    );
    print!("{}", simulate::table(&reports));
    if let Some(path) = &args.json {
        let body = serde_json::json!({ "scenario": scenario, "reports": reports
            .iter()
            .map(|(name, r)| serde_json::json!({ "policy": name, "report": r }))
            .collect::<Vec<_>>() });
        std::fs::write(path, serde_json::to_vec_pretty(&body)?)
            .with_context(|| format!("cannot write {}", path.display()))?;
        println!("written to {}", path.display());
    }
    Ok(())
}

async fn sim(args: SimArgs) -> anyhow::Result<()> {
    match &args.what {
        Some(SimCommand::Dispatch(d)) => return sim_dispatch(d),
        Some(SimCommand::Survey(_)) => unreachable!("handled in dispatch"),
        Some(SimCommand::Network(n)) => return leakwatch::survey::sim_network(n),
        None => {}
    }
    let mut fleet = args.fleet.fleet();
    if let Some(path) = &args.registry_out {
        std::fs::write(path, fleet.to_csv())
            .with_context(|| format!("cannot write {}", path.display()))?;
        println!(
            "registry of {} meters written to {}",
            fleet.meter_count(),
            path.display()
        );
    }
    if let Some(path) = &args.truth_out {
        let truth = fleet.truth();
        std::fs::write(path, serde_json::to_vec_pretty(truth)?)
            .with_context(|| format!("cannot write {}", path.display()))?;
        println!(
            "ground truth ({} leaks, {} network leaks, {} faults) written to {}",
            truth.leaks.len(),
            truth.network_leaks.len(),
            truth.faults.len(),
            path.display()
        );
    }
    if args.registry_out.is_some() {
        return Ok(());
    }
    let addr = parse_mqtt_url(&args.mqtt).map_err(|e| anyhow::anyhow!("--mqtt: {e}"))?;
    let mut security = leakwatch_mqtt::Security::default();
    if let Some(user) = &args.username {
        let password = std::env::var("LEAKWATCH_SIM_PASSWORD")
            .context("--username needs the password in LEAKWATCH_SIM_PASSWORD")?;
        security.login = Some(leakwatch_mqtt::Login::new(user, password));
    }
    match (addr.tls, &args.ca_file) {
        (true, Some(ca)) => {
            let client = args.client_cert.as_deref().zip(args.client_key.as_deref());
            security.tls = Some(leakwatch_mqtt::Tls::from_files(ca, client)?);
        }
        (true, None) => bail!("--mqtt {}: mqtts:// needs --ca-file", args.mqtt),
        (false, Some(_)) => bail!("--ca-file is for an mqtts:// broker, not {}", args.mqtt),
        (false, None) if args.client_cert.is_some() => {
            bail!("--client-cert is for an mqtts:// broker, not {}", args.mqtt)
        }
        (false, None) => {}
    }
    // A broker that checks client id = username for devices gets the username.
    let client_id = args
        .username
        .clone()
        .unwrap_or_else(|| format!("leakwatch-sim-{}", std::process::id()));
    let publisher = Publisher::connect_with(&addr.host, addr.port, &client_id, &security).await?;
    let pcfg = args.fleet.publish_config(&args.prefix);
    println!(
        "publishing {} meters to {}:{} ({} ms per simulated hour); Ctrl-C to stop",
        fleet.meter_count(),
        addr.host,
        addr.port,
        args.fleet.sim_hour_ms
    );
    let stats = leakwatch_sim::publish(&mut fleet, &publisher, &pcfg, terminate()).await?;
    publisher.disconnect().await?;
    println!(
        "published {} messages with {} readings over {} simulated hours",
        stats.messages, stats.readings, stats.hours
    );
    Ok(())
}

/// Reads and validates a whole registry file; reports every bad line.
fn read_meter_csv(path: &Path) -> anyhow::Result<Vec<leakwatch_core::Meter>> {
    let mut reader = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .from_path(path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    let headers = reader.headers()?.clone();
    let expected = [
        "meter_id",
        "district_id",
        "kind",
        "lat",
        "lon",
        "report_every_h",
    ];
    if headers.iter().take(6).ne(expected.iter().copied()) {
        bail!(
            "{}: the header is {:?}; expected {}",
            path.display(),
            headers.iter().collect::<Vec<_>>(),
            expected.join(",")
        );
    }
    let mut meters = Vec::new();
    let mut errors = Vec::new();
    for (i, row) in reader.deserialize::<MeterRecord>().enumerate() {
        let line = i + 2;
        match row.map_err(|e| e.to_string()).and_then(|r| r.to_meter()) {
            Ok(m) => meters.push(m),
            Err(e) => errors.push(format!("line {line}: {e}")),
        }
    }
    if !errors.is_empty() {
        let n = errors.len();
        errors.truncate(20);
        bail!(
            "{}: {n} bad lines, nothing imported:\n  {}",
            path.display(),
            errors.join("\n  ")
        );
    }
    Ok(meters)
}

async fn import_meters(cfg: &Config, path: &Path) -> anyhow::Result<()> {
    let meters = read_meter_csv(path)?;
    let store = Store::connect(cfg.database.url.expose()).await?;
    let started = Instant::now();
    let total = meters.len();
    let mut done = 0;
    for chunk in meters.chunks(5000) {
        store.upsert_meters(chunk).await?;
        done += chunk.len();
        eprintln!("  {done}/{total} meters");
    }
    store.close().await;
    println!(
        "imported {total} meters from {} into {} in {:.1}s",
        path.display(),
        store.backend(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

async fn import_crews(cfg: &Config, path: &Path) -> anyhow::Result<()> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let crews: Vec<Crew> = serde_json::from_str(&text)
        .with_context(|| format!("{} is not a JSON array of crews", path.display()))?;
    for c in &crews {
        leakwatch_core::limits::check_crew(c)
            .map_err(|e| anyhow::anyhow!("{}: crew {}: {e}", path.display(), c.id))?;
    }
    let store = Store::connect(cfg.database.url.expose()).await?;
    let n = store.upsert_crews(&crews).await?;
    store.close().await;
    println!("imported {n} crews from {}", path.display());
    Ok(())
}
