//! `leakwatch sim survey`: the programmed leak survey over a simulated year, two
//! programs side by side on the same network, leaks and survey capacity: calendar
//! order (oldest survey first) and leakwatch's risk-based program.
//!
//! For each program the same fleet (same seed) runs hour by hour through the
//! detectors and the alert rules the service runs (`leakwatch_detect::Engine` and
//! `Book`, fed as `leakwatch eval` feeds them). At 08:00 of each working day the
//! program plans the day from what leakwatch knows then: the open network-leak alerts
//! (district balance, inflow night flow, pressure; raised within the last
//! [`SIGNAL_DAYS`], open or quiet since) the detectors raised on the
//! simulated meters' data, never the ground truth, and the leak history found so far.
//! A district's signal applies to its segments not surveyed since the alert was
//! raised, until a leak found in the district confirms the alert.
//! A survey of a segment finds the leaks on it that have started; a found network
//! leak is repaired the next day, so its gas stops reaching the district's station
//! meter and its alert goes quiet. Hence two runs: what each program finds changes
//! what the meters see afterwards.
//!
//! Leaks: the fleet's network leaks (0.2 %..4 % of the district's consumption, one
//! per district while there are districts), each placed on a segment of its district
//! with a probability proportional to the segment's length times its material's
//! leak propensity. A leak is *signalled* when, in the calendar run (where it flows
//! longest), a network alert of its district was raised after it started and before
//! it was found.

use crate::evaluate::Feeder;
use anyhow::bail;
use chrono::{NaiveDate, TimeDelta, TimeZone, Timelike, Utc};
use leakwatch_core::{DistrictId, Timestamp};
use leakwatch_detect::book::Book;
use leakwatch_detect::{DetectConfig, Engine};
use leakwatch_sim::network::NetworkConfig;
use leakwatch_sim::{Fleet, FleetConfig, NetworkLeakConfig};
use leakwatch_survey::geojson::Imported;
use leakwatch_survey::risk::{NETWORK_KINDS, priority, score};
use leakwatch_survey::{
    DistrictSignal, LeakRecord, ObligationTable, Policy, Program, RiskWeights, Segment,
    SurveyRecord, working_days,
};
use rand::{Rng, SeedableRng};
use serde::Serialize;
use std::collections::HashMap;
use std::path::PathBuf;

#[derive(Debug, Clone, clap::Args)]
pub struct SimSurveyArgs {
    /// Seeds (each its own network, fleet and leaks). 1-3 were used to tune; the
    /// default ones are held out.
    #[arg(long, value_delimiter = ',', default_value = "4,5,6,7,8")]
    pub seeds: Vec<u64>,
    #[arg(long, default_value_t = 12)]
    pub districts: u32,
    #[arg(long, default_value_t = 150)]
    pub meters_per_district: u32,
    /// Network leaks (one per district while there are districts).
    #[arg(long, default_value_t = 12)]
    pub leaks: u32,
    /// Metres of main surveyed per working day, the same for both programs.
    #[arg(long, default_value_t = 1200.0)]
    pub capacity_m: f64,
    /// Obligation table: `it` or `us`.
    #[arg(long, default_value = "it")]
    pub obligations: String,
    /// Simulated days from 2026-01-01.
    #[arg(long, default_value_t = 365)]
    pub days: u32,
    /// The risk-based program keeps pace with the calendar order: every segment
    /// surveyed at least as often, at most this many working days later
    /// (`Program::keep_pace`); without it (the default) all the capacity left after
    /// the obligations goes by risk.
    #[arg(long)]
    pub pace_lag_days: Option<usize>,
    /// Write the per-leak results as JSON.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// One leak's fate under one program.
#[derive(Debug, Clone, Serialize)]
pub struct LeakFate {
    pub district: DistrictId,
    pub segment: String,
    pub fraction: f64,
    pub start: Timestamp,
    /// First network alert of its district after it started (this run).
    pub first_alert: Option<Timestamp>,
    pub found: Option<NaiveDate>,
    /// Days from its start to its discovery, or to the end of the run if not found.
    pub days: f64,
}

/// One program's run.
#[derive(Debug, Clone, Serialize)]
pub struct RunResult {
    pub policy: Policy,
    pub leaks: Vec<LeakFate>,
    pub surveyed_km: f64,
    /// Per class with a yearly share: (class, surveyed m, required m).
    pub shares: Vec<(String, f64, f64)>,
    /// Segment-days past a deadline.
    pub overdue_segment_days: u64,
    pub obligations_met: bool,
    pub network_alerts: usize,
    /// Expected days to find a leak no detector signals: one placed as the simulated
    /// leaks are (segment by length x material propensity, start uniform over the leak
    /// window), found by this run's survey days, counted to the end of the run if not
    /// found. Exact over every segment (not a sample of 12 leaks): see
    /// [`hidden_leak_wait`].
    pub hidden_leak_days: f64,
    /// Metres surveyed for a district signal (visits whose priority carried a
    /// district alert), and the rest.
    pub signal_km: f64,
    /// Day routes of the survey orders (one district each, at most a day's capacity):
    /// metres walked between segments with the route of `leakwatch_survey::route`,
    /// and with the nearest-midpoint order planned before (directions as stored; best
    /// directions for that order).
    pub deadhead_km: f64,
    pub deadhead_midpoint_stored_km: f64,
    pub deadhead_midpoint_oriented_km: f64,
}

/// The expected days to find a leak placed on segment `i` with probability
/// `weight[i]` and starting uniformly in `[from_d, to_d]` (days from the run's start),
/// when segment `i` is surveyed at `visits[i]` (days from the start; a visit finds a
/// leak that started before it), counting to `end_d` for a leak not found.
pub fn hidden_leak_wait(
    visits: &[Vec<f64>],
    weight: &[f64],
    from_d: f64,
    to_d: f64,
    end_d: f64,
) -> f64 {
    let steps = 2000;
    let total_w: f64 = weight.iter().sum();
    if total_w <= 0.0 || to_d <= from_d {
        return f64::NAN;
    }
    let mut acc = 0.0;
    for (v, w) in visits.iter().zip(weight) {
        if *w <= 0.0 {
            continue;
        }
        let mut sorted = v.clone();
        sorted.sort_by(f64::total_cmp);
        let mut sum = 0.0;
        for k in 0..steps {
            let t = from_d + (to_d - from_d) * (k as f64 + 0.5) / steps as f64;
            let found = sorted.iter().find(|&&d| d >= t).copied().unwrap_or(end_d);
            sum += found.min(end_d) - t;
        }
        acc += w * sum / steps as f64;
    }
    acc / total_w
}

/// Both programs on one seed.
#[derive(Debug, Clone, Serialize)]
pub struct SeedResult {
    pub seed: u64,
    pub network_km: f64,
    /// Per leak: signalled (by the calendar run's definition).
    pub signalled: Vec<bool>,
    pub calendar: RunResult,
    pub risk: RunResult,
}

/// The scenario of a seed.
pub fn fleet_config(args: &SimSurveyArgs, seed: u64) -> FleetConfig {
    let mut c = FleetConfig::standard(seed);
    c.districts = args.districts;
    c.meters_per_district = args.meters_per_district;
    c.leaks = 0;
    c.start = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
    c.hours = Some(args.days * 24);
    // Leaks start after the detectors' learning weeks and early enough to be found.
    c.leak.from_h = 30 * 24;
    c.leak.to_h = args.days.saturating_sub(45).max(31) * 24;
    c.network_leaks = NetworkLeakConfig {
        count: args.leaks,
        districts: 0,
        repaired_share: 0.0,
        min_fraction: 0.002,
        max_fraction: 0.04,
    };
    c
}

/// Places each network leak on a segment of its district (length x propensity).
fn place_leaks(seed: u64, fleet: &Fleet, segments: &[Segment]) -> Vec<usize> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed ^ 0x6c65_616b_7365_6773);
    fleet
        .truth()
        .network_leaks
        .iter()
        .map(|l| {
            let cands: Vec<(usize, f64)> = segments
                .iter()
                .enumerate()
                .filter(|(_, s)| s.district == l.district)
                .map(|(i, s)| (i, s.length_m() * s.material.propensity()))
                .collect();
            let total: f64 = cands.iter().map(|c| c.1).sum();
            let mut x = rng.random_range(0.0..total);
            for (i, w) in &cands {
                if x < *w {
                    return *i;
                }
                x -= w;
            }
            cands.last().map(|c| c.0).expect("a district has segments")
        })
        .collect()
}

/// A network alert raised within this many days is a signal until its district has
/// been surveyed since (open, or resolved by itself when the detector stopped seeing
/// it: the leak is not explained until a survey has looked).
const SIGNAL_DAYS: i64 = 90;

#[allow(clippy::too_many_arguments)]
fn run(
    cfg: &FleetConfig,
    net: &[Imported],
    leak_segment: &[usize],
    table: &ObligationTable,
    policy: Policy,
    capacity_m: f64,
    pace_lag_days: Option<usize>,
    detect: &DetectConfig,
    weights: &RiskWeights,
) -> RunResult {
    let mut fleet = Fleet::generate(cfg);
    let mut engine = Engine::new(detect.clone());
    let registry = fleet.registry();
    let mut feeder = Feeder::new(&mut engine, &registry);
    let mut book = Book::new(TimeDelta::hours(i64::from(detect.resolve_after_h)));
    let segments: Vec<Segment> = net.iter().map(|i| i.segment.clone()).collect();
    let records: Vec<SurveyRecord> = net
        .iter()
        .filter_map(|i| {
            i.last_surveyed.map(|d| SurveyRecord {
                segment: i.segment.id.clone(),
                date: d,
                covered_m: i.segment.length_m(),
            })
        })
        .collect();
    let mut program = Program::new(&segments, &records, table, policy);
    program.min_revisit_days = 60;
    program.revisit_above = weights.district_alert;
    if let (Policy::Risk, Some(lag)) = (policy, pace_lag_days) {
        // The calendar order as the calendar run plays it, from the same start.
        let mut shadow = Program::new(&segments, &records, table, Policy::Calendar);
        shadow.min_revisit_days = 60;
        program.keep_pace(shadow, lag);
    }
    let start = cfg.start;
    let end = start + TimeDelta::hours(i64::from(cfg.hours.unwrap_or(0)));
    let days = working_days(start.date_naive(), (end - TimeDelta::days(1)).date_naive());
    let truth_leaks = fleet.truth().network_leaks.clone();
    let mut found: Vec<Option<NaiveDate>> = vec![None; truth_leaks.len()];
    let mut history: Vec<LeakRecord> = Vec::new();
    let mut confirmed: std::collections::HashSet<u64> = std::collections::HashSet::new();
    let mut surveyed_m = 0.0;
    let mut overdue = 0u64;
    let mut day_i = 0;
    let mut findings = Vec::new();
    let hours = cfg.hours.unwrap_or(0);
    let index: HashMap<&str, usize> = segments
        .iter()
        .enumerate()
        .map(|(i, s)| (s.id.as_str(), i))
        .collect();
    let seg_map: HashMap<&str, &Segment> = segments.iter().map(|s| (s.id.as_str(), s)).collect();
    let mut visit_days: Vec<Vec<f64>> = vec![Vec::new(); segments.len()];
    let mut signal_m = 0.0;
    let (mut dh_new, mut dh_old_stored, mut dh_old_oriented) = (0.0, 0.0, 0.0);
    for _ in 0..hours {
        let ups = fleet.step();
        let arrival = fleet.now();
        for up in ups {
            feeder.feed(&mut engine, up, arrival, &mut findings);
        }
        let ticks = engine.take_ticks();
        book.record_all(&mut findings, &ticks);
        let now = fleet.now();
        if now.hour() != 8 || day_i >= days.len() || days[day_i] != now.date_naive() {
            continue;
        }
        let today = days[day_i];
        // What leakwatch knows this morning: open network alerts, by district, and
        // when the earliest of each district's was raised.
        let mut signals = Vec::new();
        let mut raised: HashMap<DistrictId, Timestamp> = HashMap::new();
        for a in book.alerts().iter().filter(|a| {
            !confirmed.contains(&a.id)
                && NETWORK_KINDS.contains(&a.kind)
                && a.detected_at <= now
                && now - a.detected_at <= TimeDelta::days(SIGNAL_DAYS)
        }) {
            let Some(d) = &a.district_id else { continue };
            signals.push(DistrictSignal {
                district: d.clone(),
                kind: a.kind,
                severity: a.severity,
            });
            let e = raised.entry(d.clone()).or_insert(a.detected_at);
            *e = (*e).min(a.detected_at);
        }
        let risk = score(&segments, &signals, &history, weights, today);
        let prio: HashMap<String, f64> = segments
            .iter()
            .map(|s| {
                let mut r = risk[&s.id];
                let since = program.since(&s.id).unwrap_or(s.added_on);
                if let Some(at) = raised.get(&s.district)
                    && since >= at.date_naive()
                {
                    // Walked since the alert: whatever leaks there was found then.
                    r.district = 0.0;
                }
                (s.id.clone(), priority(&r, (today - since).num_days()))
            })
            .collect();
        let visits = program.day(&days[day_i..], capacity_m, &prio);
        let day_offset = (now - start).num_minutes() as f64 / 1440.0;
        for o in leakwatch_survey::route::cut_orders(&visits, &seg_map, capacity_m) {
            dh_new += o.route.deadhead_m;
        }
        let (a, b) =
            leakwatch_survey::route::midpoint_orders_deadhead(&visits, &seg_map, capacity_m);
        dh_old_stored += a;
        dh_old_oriented += b;
        for v in &visits {
            surveyed_m += v.length_m;
            if let Some(&i) = index.get(v.segment.as_str()) {
                visit_days[i].push(day_offset);
            }
            if prio
                .get(&v.segment)
                .is_some_and(|p| *p >= weights.district_alert)
            {
                signal_m += v.length_m;
            }
            for (li, &si) in leak_segment.iter().enumerate() {
                if found[li].is_none()
                    && segments[si].id == v.segment
                    && truth_leaks[li].start <= now
                {
                    found[li] = Some(today);
                    fleet.repair_network_leak(li, now + TimeDelta::days(1));
                    // The find confirms its district's network alerts: they no longer
                    // call for a search.
                    for a in book.alerts() {
                        if a.district_id.as_ref() == Some(&truth_leaks[li].district)
                            && NETWORK_KINDS.contains(&a.kind)
                            && a.detected_at <= now
                        {
                            confirmed.insert(a.id);
                        }
                    }
                    history.push(LeakRecord {
                        segment: v.segment.clone(),
                        date: today,
                    });
                }
            }
        }
        overdue += program.overdue(today).len() as u64;
        day_i += 1;
    }
    let ups = fleet.finish();
    let arrival = fleet.now();
    for up in ups {
        feeder.feed(&mut engine, up, arrival, &mut findings);
    }
    let ticks = engine.take_ticks();
    book.record_all(&mut findings, &ticks);

    let network_alerts: Vec<_> = book
        .alerts()
        .iter()
        .filter(|a| NETWORK_KINDS.contains(&a.kind))
        .collect();
    let leaks = truth_leaks
        .iter()
        .enumerate()
        .map(|(i, l)| {
            let found_at =
                found[i].map(|d| Utc.from_utc_datetime(&d.and_hms_opt(8, 0, 0).unwrap()));
            let first_alert = network_alerts
                .iter()
                .filter(|a| {
                    a.district_id.as_ref() == Some(&l.district)
                        && a.detected_at >= l.start
                        && found_at.is_none_or(|f| a.detected_at <= f)
                })
                .map(|a| a.detected_at)
                .min();
            let until = found_at.unwrap_or(end);
            LeakFate {
                district: l.district.clone(),
                segment: segments[leak_segment[i]].id.clone(),
                fraction: l.fraction,
                start: l.start,
                first_alert,
                found: found[i],
                days: (until - l.start).num_minutes() as f64 / 1440.0,
            }
        })
        .collect();
    let year = start
        .date_naive()
        .format("%Y")
        .to_string()
        .parse::<i32>()
        .unwrap_or(2026);
    let whole_year = cfg.hours.unwrap_or(0) >= 365 * 24;
    let shares: Vec<(String, f64, f64)> = table
        .obligations
        .iter()
        .filter_map(|o| {
            o.min_share_per_year.map(|s| {
                let (done, total) = program.coverage(&o.class, year);
                (o.class.clone(), done, s * total)
            })
        })
        .collect();
    let shares_met = !whole_year || shares.iter().all(|(_, done, need)| done + 1e-6 >= *need);
    let weight: Vec<f64> = segments
        .iter()
        .map(|s| s.length_m() * s.material.propensity())
        .collect();
    let hidden_leak_days = hidden_leak_wait(
        &visit_days,
        &weight,
        f64::from(cfg.leak.from_h) / 24.0,
        f64::from(cfg.leak.to_h) / 24.0,
        (end - start).num_minutes() as f64 / 1440.0,
    );
    RunResult {
        policy,
        leaks,
        surveyed_km: surveyed_m / 1000.0,
        shares,
        overdue_segment_days: overdue,
        obligations_met: shares_met && overdue == 0,
        network_alerts: network_alerts.len(),
        hidden_leak_days,
        signal_km: signal_m / 1000.0,
        deadhead_km: dh_new / 1000.0,
        deadhead_midpoint_stored_km: dh_old_stored / 1000.0,
        deadhead_midpoint_oriented_km: dh_old_oriented / 1000.0,
    }
}

/// Both programs on one seed (in two threads).
pub fn run_seed(
    args: &SimSurveyArgs,
    seed: u64,
    detect: &DetectConfig,
    weights: &RiskWeights,
) -> anyhow::Result<SeedResult> {
    let Some(table) = ObligationTable::preset(&args.obligations) else {
        bail!(
            "--obligations: unknown preset {:?}; expected it or us",
            args.obligations
        );
    };
    let cfg = fleet_config(args, seed);
    let net = leakwatch_sim::network::generate(&cfg, &NetworkConfig::default(), &table);
    let segments: Vec<Segment> = net.iter().map(|i| i.segment.clone()).collect();
    let leak_segment = place_leaks(seed, &Fleet::generate(&cfg), &segments);
    let (calendar, risk) = std::thread::scope(|s| {
        let c = s.spawn(|| {
            run(
                &cfg,
                &net,
                &leak_segment,
                &table,
                Policy::Calendar,
                args.capacity_m,
                None,
                detect,
                weights,
            )
        });
        let r = s.spawn(|| {
            run(
                &cfg,
                &net,
                &leak_segment,
                &table,
                Policy::Risk,
                args.capacity_m,
                args.pace_lag_days,
                detect,
                weights,
            )
        });
        (c.join().expect("calendar run"), r.join().expect("risk run"))
    });
    let signalled = calendar
        .leaks
        .iter()
        .map(|l| l.first_alert.is_some())
        .collect();
    Ok(SeedResult {
        seed,
        network_km: segments.iter().map(|s| s.length_m()).sum::<f64>() / 1000.0,
        signalled,
        calendar,
        risk,
    })
}

fn mean(xs: &[f64]) -> f64 {
    if xs.is_empty() {
        f64::NAN
    } else {
        xs.iter().sum::<f64>() / xs.len() as f64
    }
}

fn median(xs: &[f64]) -> f64 {
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// Days to find, of the signalled (`true`) or the other leaks of a run.
fn days_of(r: &RunResult, signalled: &[bool], which: bool) -> Vec<f64> {
    r.leaks
        .iter()
        .zip(signalled)
        .filter(|(_, s)| **s == which)
        .map(|(l, _)| l.days)
        .collect()
}

/// The summary over seeds, as the table printed.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub signalled: usize,
    pub others: usize,
    pub calendar_signalled_mean: f64,
    pub risk_signalled_mean: f64,
    pub calendar_others_mean: f64,
    pub risk_others_mean: f64,
    pub speedup_signalled: f64,
    pub all_obligations_met: bool,
    pub calendar_hidden_mean: f64,
    pub risk_hidden_mean: f64,
    /// Over both programs' days: deadhead km with the route, with the midpoint order
    /// as stored and with its best directions.
    pub deadhead_km: [f64; 3],
    pub survey_km: f64,
}

pub fn summarise(results: &[SeedResult]) -> Summary {
    let pool =
        |f: &dyn Fn(&SeedResult) -> Vec<f64>| -> Vec<f64> { results.iter().flat_map(f).collect() };
    let cs = pool(&|r| days_of(&r.calendar, &r.signalled, true));
    let rs = pool(&|r| days_of(&r.risk, &r.signalled, true));
    let co = pool(&|r| days_of(&r.calendar, &r.signalled, false));
    let ro = pool(&|r| days_of(&r.risk, &r.signalled, false));
    Summary {
        signalled: cs.len(),
        others: co.len(),
        calendar_signalled_mean: mean(&cs),
        risk_signalled_mean: mean(&rs),
        calendar_others_mean: mean(&co),
        risk_others_mean: mean(&ro),
        speedup_signalled: mean(&cs) / mean(&rs),
        all_obligations_met: results
            .iter()
            .all(|r| r.calendar.obligations_met && r.risk.obligations_met),
        calendar_hidden_mean: mean(&pool(&|r| vec![r.calendar.hidden_leak_days])),
        risk_hidden_mean: mean(&pool(&|r| vec![r.risk.hidden_leak_days])),
        deadhead_km: [
            pool(&|r| vec![r.calendar.deadhead_km, r.risk.deadhead_km])
                .iter()
                .sum(),
            pool(&|r| {
                vec![
                    r.calendar.deadhead_midpoint_stored_km,
                    r.risk.deadhead_midpoint_stored_km,
                ]
            })
            .iter()
            .sum(),
            pool(&|r| {
                vec![
                    r.calendar.deadhead_midpoint_oriented_km,
                    r.risk.deadhead_midpoint_oriented_km,
                ]
            })
            .iter()
            .sum(),
        ],
        survey_km: pool(&|r| vec![r.calendar.surveyed_km, r.risk.surveyed_km])
            .iter()
            .sum(),
    }
}

fn row(r: &RunResult, signalled: &[bool]) -> String {
    let s = days_of(r, signalled, true);
    let o = days_of(r, signalled, false);
    let found = r.leaks.iter().filter(|l| l.found.is_some()).count();
    let per_km = found as f64 / r.surveyed_km.max(1e-9);
    let shares: Vec<String> = r
        .shares
        .iter()
        .map(|(c, done, need)| format!("{c} {:.0}/{:.0} km", done / 1000.0, need / 1000.0))
        .collect();
    format!(
        "| {:<8} | {:>2}/{:<2} | {:>6.1} | {:>6.1} | {:>2}/{:<2} | {:>6.1} | {:>6.1} | {:>6.1} | {:>6.1} | {:>6.1} | {:>6.4} | {} ({}; overdue segment-days {}) |",
        match r.policy {
            Policy::Calendar => "calendar",
            Policy::Risk => "risk",
        },
        r.leaks
            .iter()
            .zip(signalled)
            .filter(|(l, s)| **s && l.found.is_some())
            .count(),
        s.len(),
        mean(&s),
        median(&s),
        r.leaks
            .iter()
            .zip(signalled)
            .filter(|(l, s)| !**s && l.found.is_some())
            .count(),
        o.len(),
        mean(&o),
        median(&o),
        r.hidden_leak_days,
        r.surveyed_km,
        r.signal_km,
        per_km,
        if r.obligations_met { "met" } else { "NOT met" },
        shares.join(", "),
        r.overdue_segment_days
    )
}

pub fn command(
    args: SimSurveyArgs,
    detect: DetectConfig,
    weights: RiskWeights,
) -> anyhow::Result<()> {
    eprintln!(
        "leak survey: seeds {:?}, {} districts x {} meters, {} network leaks, {} days from 2026-01-01, {} m/day, obligations {:?}, pace {}",
        args.seeds,
        args.districts,
        args.meters_per_district,
        args.leaks,
        args.days,
        args.capacity_m,
        args.obligations,
        match args.pace_lag_days {
            None => "off".to_owned(),
            Some(d) => format!("{d} working days"),
        }
    );
    let mut results = Vec::new();
    println!(
        "| seed | program | signalled found | mean days | median | others found | mean days | median | hidden leak, expected days | km surveyed | of which for a signal | leaks/km | obligations |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for &seed in &args.seeds {
        let started = std::time::Instant::now();
        let r = run_seed(&args, seed, &detect, &weights)?;
        for run in [&r.calendar, &r.risk] {
            println!("| {seed} {}", row(run, &r.signalled));
        }
        eprintln!(
            "seed {seed}: network {:.0} km, {} network alerts (calendar run), {:.0} s",
            r.network_km,
            r.calendar.network_alerts,
            started.elapsed().as_secs_f64()
        );
        results.push(r);
    }
    let s = summarise(&results);
    println!(
        "\nover seeds {:?}: signalled leaks {} — mean days to find: calendar {:.1}, risk {:.1} ({:.2}x faster); others {} — calendar {:.1}, risk {:.1}; every obligation met: {}",
        args.seeds,
        s.signalled,
        s.calendar_signalled_mean,
        s.risk_signalled_mean,
        s.speedup_signalled,
        s.others,
        s.calendar_others_mean,
        s.risk_others_mean,
        s.all_obligations_met
    );
    println!(
        "hidden leak (exact expectation over every segment): calendar {:.1} days, risk {:.1} days",
        s.calendar_hidden_mean, s.risk_hidden_mean
    );
    println!(
        "survey routes over {:.0} km of segments: walked between segments {:.1} km (route), {:.1} km (nearest midpoint, as stored), {:.1} km (nearest midpoint, best directions)",
        s.survey_km, s.deadhead_km[0], s.deadhead_km[1], s.deadhead_km[2]
    );
    if let Some(p) = &args.json {
        std::fs::write(
            p,
            serde_json::to_vec_pretty(&serde_json::json!({"summary": s, "seeds": results}))?,
        )?;
        eprintln!("written to {}", p.display());
    }
    Ok(())
}
