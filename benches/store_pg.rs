//! PostgreSQL ingest throughput: `Store::insert_batch` against the database's own limit,
//! a binary `COPY` of the same rows into the same (empty, indexed) `readings` table, in
//! the same run, so the ratio holds on a noisy shared machine.
//!
//! Every measurement gets a fresh database (made through `LEAKWATCH_TEST_PG`, dropped
//! after) with the store's migrations applied, and starts after a CHECKPOINT. Each
//! variant runs `STORE_PG_ROUNDS` times; the best round counts (the least disturbed by
//! other work on the machine), the median is shown next to it.
//!
//! Run:
//! `LEAKWATCH_TEST_PG=postgres://postgres@127.0.0.1:5432/postgres cargo bench -p leakwatch-store --bench store_pg`
//!
//! Sizes: `STORE_PG_METERS` (20000) x `STORE_PG_HOURS` (25) x `STORE_PG_PER_HOUR` (1)
//! readings, in batches of `STORE_PG_BATCH` (10000), meter by meter as daily pushes
//! arrive (`STORE_PG_ORDER=time` sorts them by time instead, every batch then holding
//! meters already stored). insert_batch writes `readings` only (the hourly rollup is
//! aggregated on read and archived at retention), so it makes the same writes as the
//! COPY yardstick, plus its duplicate/conflict handling.

use chrono::{Duration, TimeZone, Utc};
use leakwatch_core::{MeterId, Reading, Timestamp};
use leakwatch_store::testing::{PG_ENV, copy_readings, drop_pg_database, fresh_pg_database};
use leakwatch_store::{InsertOutcome, PgInsertPath, ReadingFlags, Store};
use std::time::Instant;

type Row = (Reading, ReadingFlags);

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn rows(meters: usize, hours: i64, per_hour: i64) -> Vec<Row> {
    let t0 = Utc.with_ymd_and_hms(2026, 11, 1, 0, 0, 0).unwrap();
    let mut out = Vec::with_capacity(meters * (hours * per_hour) as usize);
    for i in 0..meters {
        let id = MeterId::parse(format!("PDR{i:08}")).unwrap();
        let mut litres = 1_000_000 + (i as i64 * 7_919) % 5_000_000;
        for k in 0..hours * per_hour {
            let h = k / per_hour;
            litres += if h % 24 < 6 { 0 } else { 40 + (i as i64 % 90) };
            out.push((
                Reading {
                    meter: id.clone(),
                    t: t0 + Duration::seconds(k * 3_600 / per_hour),
                    vol: litres as f64 / 1000.0,
                    temp: Some(8.5 + (h % 24) as f64 * 0.25),
                    flow_max: Some(0.35),
                    pressure: None,
                },
                ReadingFlags::default(),
            ));
        }
    }
    out
}

#[derive(Clone, Copy, PartialEq)]
enum Variant {
    /// The yardstick: binary COPY, nothing else.
    Copy,
    /// `Store::insert_batch` along one path.
    Insert(PgInsertPath),
}

impl Variant {
    fn name(self) -> String {
        match self {
            Variant::Copy => "COPY readings (binary)".into(),
            Variant::Insert(p) if p == PgInsertPath::DEFAULT => {
                format!("insert_batch [{p:?}, default]")
            }
            Variant::Insert(p) => format!("insert_batch [{p:?}]"),
        }
    }
}

struct Run {
    secs: f64,
    /// Seconds of a second pass of the same batches (every row a duplicate); None for
    /// COPY, which cannot take duplicates.
    again_secs: Option<f64>,
}

async fn checkpoint(admin: &str) {
    let pool = sqlx::PgPool::connect(admin)
        .await
        .expect("admin connection");
    sqlx::query("CHECKPOINT")
        .execute(&pool)
        .await
        .expect("CHECKPOINT");
    pool.close().await;
}

async fn measure(admin: &str, variant: Variant, batches: &[&[Row]], total: usize) -> Run {
    let url = fresh_pg_database(admin).await.expect("create database");
    let store = Store::connect(&url).await.expect("connect");
    let Store::Postgres(pg) = &store else {
        unreachable!()
    };
    let pool = pg.pool().clone();
    checkpoint(admin).await;
    let now: Timestamp = Utc::now();

    let started = Instant::now();
    let mut sum = InsertOutcome::default();
    for batch in batches {
        match variant {
            Variant::Copy => {
                sum.inserted += copy_readings(&pool, batch).await.expect("COPY");
            }
            Variant::Insert(path) => {
                let o = store
                    .insert_batch_via(path, batch, now)
                    .await
                    .expect("insert_batch");
                sum.inserted += o.inserted;
                sum.duplicates += o.duplicates;
                sum.conflicts += o.conflicts;
            }
        }
    }
    let secs = started.elapsed().as_secs_f64();
    assert_eq!(sum.inserted as usize, total, "{}", variant.name());
    assert_eq!(store.count_readings().await.unwrap() as usize, total);

    let again_secs = match variant {
        Variant::Copy => None,
        Variant::Insert(path) => {
            let started = Instant::now();
            let mut dups = 0;
            for batch in batches {
                let o = store.insert_batch_via(path, batch, now).await.unwrap();
                assert_eq!((o.inserted, o.conflicts), (0, 0));
                dups += o.duplicates;
            }
            assert_eq!(dups as usize, total);
            Some(started.elapsed().as_secs_f64())
        }
    };
    store.close().await;
    drop_pg_database(admin, &url).await;
    Run { secs, again_secs }
}

fn main() {
    let Ok(admin) = std::env::var(PG_ENV) else {
        eprintln!("store_pg: set {PG_ENV} to an admin URL of a PostgreSQL server; skipped");
        return;
    };
    let meters = env_usize("STORE_PG_METERS", 20_000);
    let hours = env_usize("STORE_PG_HOURS", 25) as i64;
    let per_hour = env_usize("STORE_PG_PER_HOUR", 1).clamp(1, 3_600) as i64;
    let batch = env_usize("STORE_PG_BATCH", 10_000);
    let rounds = env_usize("STORE_PG_ROUNDS", 3).max(1);
    let mut all = rows(meters, hours, per_hour);
    let by_time = std::env::var("STORE_PG_ORDER").is_ok_and(|o| o == "time");
    if by_time {
        all.sort_by_key(|(r, _)| r.t);
    }
    let total = all.len();
    let batches: Vec<&[Row]> = all.chunks(batch).collect();

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut variants = vec![Variant::Copy];
    variants.extend(PgInsertPath::ALL.map(Variant::Insert));
    println!(
        "store_pg: {total} readings ({meters} meters x {hours} h x {per_hour}/h, {}), \
         batches of {batch}, best of {rounds} rounds, fresh database each",
        if by_time { "by time" } else { "by meter" }
    );
    let mut results: Vec<(Variant, Vec<Run>)> = variants.iter().map(|v| (*v, vec![])).collect();
    rt.block_on(async {
        // Rounds interleave the variants, so a slow spell of the machine hits them all.
        for _ in 0..rounds {
            for (variant, runs) in results.iter_mut() {
                runs.push(measure(&admin, *variant, &batches, total).await);
            }
        }
    });

    let rate = |secs: f64| total as f64 / secs;
    let best = |runs: &[Run]| runs.iter().map(|r| r.secs).fold(f64::INFINITY, f64::min);
    let median = |runs: &[Run]| {
        let mut v: Vec<f64> = runs.iter().map(|r| r.secs).collect();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let copy_best = best(&results[0].1);
    println!(
        "{:<34} {:>12} {:>14} {:>9} {:>22}",
        "variant", "best rows/s", "median rows/s", "vs COPY", "again (all dups) rows/s"
    );
    for (variant, runs) in &results {
        let again = runs
            .iter()
            .filter_map(|r| r.again_secs)
            .fold(f64::INFINITY, f64::min);
        println!(
            "{:<34} {:>12.0} {:>14.0} {:>9.2} {:>22}",
            variant.name(),
            rate(best(runs)),
            rate(median(runs)),
            copy_best / best(runs),
            if again.is_finite() {
                format!("{:.0}", rate(again))
            } else {
                "-".into()
            }
        );
    }
    let default = results
        .iter()
        .find(|(v, _)| *v == Variant::Insert(PgInsertPath::DEFAULT))
        .unwrap();
    println!(
        "ratio insert_batch/COPY of the same readings = {:.2} best, {:.2} median \
         (target >= 0.70)",
        copy_best / best(&default.1),
        median(&results[0].1) / median(&default.1)
    );
}
