//! Detector throughput: readings per second through `detect::Engine` (every detector
//! family: hours, continuous flow, night flow, level shift, burst, integrity,
//! district balance, silence), single-threaded, against a
//! baseline measured in the same run on the same data (a loop that only computes each
//! meter's hourly consumption), so the ratio holds on a noisy shared machine.
//!
//! Run: `cargo bench -p leakwatch-detect --bench detect`

use chrono::{Duration, TimeZone, Utc};
use leakwatch_core::{DistrictId, MeterId, MeterKind, Reading};
use leakwatch_detect::{DetectConfig, Engine, MeterInfo};
use std::hint::black_box;
use std::time::Instant;

const METERS: usize = 5_000;
const HOURS: i64 = 24 * 20;

fn main() {
    let t0 = Utc.with_ymd_and_hms(2026, 11, 1, 0, 0, 0).unwrap();
    let info = MeterInfo {
        kind: MeterKind::Customer,
        district: DistrictId::parse("D01").unwrap(),
        report_every_h: 24,
        max_flow_m3h: Some(6.0),
    };
    let ids: Vec<MeterId> = (0..METERS)
        .map(|i| MeterId::parse(format!("PDR{i:08}")).unwrap())
        .collect();
    // Hour-major order, as a fleet's pushes arrive; every 50th meter leaks.
    let mut readings = Vec::with_capacity(METERS * HOURS as usize);
    let mut vol = vec![100.0f64; METERS];
    for h in 0..HOURS {
        for (i, id) in ids.iter().enumerate() {
            let local = h % 24;
            let home = if (1..6).contains(&local) {
                0.0
            } else {
                0.05 + (i % 7) as f64 * 0.01
            };
            let leak = if i % 50 == 0 { 0.02 } else { 0.0 };
            vol[i] += home + leak;
            readings.push(Reading {
                meter: id.clone(),
                t: t0 + Duration::hours(h),
                vol: (vol[i] * 1000.0).round() / 1000.0,
                temp: None,
                flow_max: None,
                pressure: None,
            });
        }
    }
    let n = readings.len() as f64;

    // Baseline: per-meter hourly consumption in a hash map, nothing else.
    let baseline = {
        let started = Instant::now();
        let mut last: std::collections::HashMap<&MeterId, f64> = std::collections::HashMap::new();
        let mut total = 0.0;
        for r in &readings {
            let prev = last.insert(&r.meter, r.vol).unwrap_or(r.vol);
            total += r.vol - prev;
        }
        black_box(total);
        started.elapsed().as_secs_f64()
    };

    // Three passes, each with a fresh engine; the median pass counts (the machine is
    // shared: one pass can be slowed by a neighbour).
    let mut passes = Vec::new();
    let mut engine = Engine::new(DetectConfig::default());
    let mut findings = 0;
    for _ in 0..3 {
        engine = Engine::new(DetectConfig::default());
        let mut out = Vec::new();
        let started = Instant::now();
        for r in &readings {
            engine.observe(&info, r, &mut out);
        }
        passes.push(started.elapsed().as_secs_f64());
        findings = out.len();
        black_box(out);
    }
    passes.sort_by(f64::total_cmp);
    let detect = passes[1];
    println!(
        "  passes (s): {:.3} {:.3} {:.3}",
        passes[0], passes[1], passes[2]
    );

    println!("detector benchmark: {METERS} meters x {HOURS} hourly readings = {n:.0} readings");
    println!(
        "  baseline (hourly diff per meter): {:>12.0} readings/s",
        n / baseline
    );
    println!(
        "  detect::Engine (every detector):  {:>12.0} readings/s (median of 3 passes, one core)",
        n / detect
    );
    println!(
        "  ratio detector/baseline:          {:>12.2}",
        baseline / detect
    );
    let sizes: Vec<usize> = ids.iter().filter_map(|id| engine.state_size(id)).collect();
    println!(
        "  findings: {findings}; checkpointed state per meter: max {} bytes, mean {:.0} bytes (budget 1024)",
        sizes.iter().max().copied().unwrap_or(0),
        sizes.iter().sum::<usize>() as f64 / sizes.len().max(1) as f64
    );
}
