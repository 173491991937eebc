//! The scaled-out shape under faults (issue 14): three nats-server nodes, a Mosquitto,
//! two `leakwatch bridge` and three `leakwatch worker` processes on a fresh
//! PostgreSQL database, and beside them one `leakwatch run` on another database
//! taking the same MQTT stream (the single-process reference). A simulated fleet of
//! 2,040 meters in 24 districts with seeded leaks publishes while the test, by PID:
//! SIGKILLs the stream leader and restarts it; SIGSTOPs a worker held just before
//! its commit past its lease TTL and SIGCONTs it (its commit must be refused);
//! SIGKILLs a worker mid-batch and one between commit and ack; SIGKILLs a bridge;
//! then SIGTERMs every process in turn. Then it counts.

use crate::support::{required_env, unique, wait_for};
use leakwatch::testkit::{OwnMosquitto, free_port};
use leakwatch_log::testkit::NatsCluster;
use leakwatch_log::{JetStreamLog, Log, LogConfig};
use leakwatch_sim::{Fleet, FleetConfig, HomeClass, HouseholdMix, LeakConfig, PublishConfig};
use leakwatch_store::Store;
use leakwatch_store::testing::{PG_ENV, drop_pg_database, fresh_pg_database, in_ci};
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const PARTITIONS: u32 = 12;
const LEASE_TTL_MS: u64 = 3000;
const STREAM: &str = "LWTEST";

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_leakwatch")
}

/// A leakwatch process of the test's, its stderr in a file.
struct Proc {
    name: String,
    args: Vec<String>,
    env: Vec<(String, String)>,
    child: Option<Child>,
    log: PathBuf,
}

impl Proc {
    fn start(
        name: &str,
        args: Vec<String>,
        env: Vec<(String, String)>,
        dir: &std::path::Path,
    ) -> Proc {
        let mut p = Proc {
            name: name.into(),
            args,
            env,
            child: None,
            log: dir.join(format!("{name}.log")),
        };
        p.spawn();
        p
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let mut c = Command::new(bin());
        c.args(&self.args)
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env("RUST_LOG", "info,async_nats=warn")
            .stdout(Stdio::null())
            .stderr(log);
        self.child = Some(c.spawn().expect("start leakwatch"));
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([&format!("-{sig}"), &self.pid().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -{sig} {}", self.name);
    }

    fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait for the exit (at most 30 s, then SIGKILL).
    fn terminate(&mut self) -> Duration {
        let started = Instant::now();
        self.signal("TERM");
        let mut c = self.child.take().unwrap();
        loop {
            if c.try_wait().unwrap().is_some() {
                return started.elapsed();
            }
            if started.elapsed() > Duration::from_secs(30) {
                let _ = c.kill();
                let _ = c.wait();
                panic!("{} did not stop within 30 s of SIGTERM", self.name);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits for a line containing `needle` in the process's log; returns it.
    async fn wait_line(&self, needle: &str, timeout: Duration) -> String {
        wait_for(&format!("{}: {needle}", self.name), timeout, || async {
            self.text()
                .lines()
                .find(|l| l.contains(needle))
                .map(str::to_owned)
        })
        .await
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill9();
    }
}

fn field(line: &str, key: &str) -> u32 {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(&format!("{key}=")))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {key}= in {line:?}"))
}

async fn pg(url: &str) -> sqlx::PgPool {
    sqlx::PgPool::connect(url).await.unwrap()
}

async fn owner_epoch(pool: &sqlx::PgPool, partition: u32) -> (String, i64) {
    sqlx::query_as("SELECT owner, epoch FROM lw_partitions WHERE partition = $1")
        .bind(partition as i32)
        .fetch_optional(pool)
        .await
        .unwrap()
        .unwrap_or_default()
}

/// Waits until `partition` has an epoch above `epoch` (a new owner claimed it);
/// returns how long that took from `since`.
async fn takeover(pool: &sqlx::PgPool, partition: u32, epoch: i64, since: Instant) -> Duration {
    wait_for("takeover", Duration::from_secs(60), || async {
        let (_, e) = owner_epoch(pool, partition).await;
        (e > epoch).then_some(())
    })
    .await;
    since.elapsed()
}

type AlertKey = (String, String, chrono::DateTime<chrono::Utc>);

async fn alerts(pool: &sqlx::PgPool) -> Vec<AlertKey> {
    sqlx::query_as("SELECT kind, subject, detected_at FROM alerts ORDER BY 1, 2, 3")
        .fetch_all(pool)
        .await
        .unwrap()
}

async fn reading_keys(pool: &sqlx::PgPool) -> BTreeSet<(String, i64)> {
    let rows: Vec<(String, i64)> =
        sqlx::query_as("SELECT meter_id, (extract(epoch FROM t) * 1000)::int8 FROM readings")
            .fetch_all(pool)
            .await
            .unwrap();
    rows.into_iter().collect()
}

async fn count(pool: &sqlx::PgPool, sql: &'static str) -> i64 {
    let (n,): (i64,) = sqlx::query_as(sql).fetch_one(pool).await.unwrap();
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scaled_out_under_faults_loses_nothing_and_counts_nothing_twice() {
    let Some(admin) = required_env(PG_ENV) else {
        return;
    };
    let mut cluster = match NatsCluster::start(3) {
        Ok(c) => c,
        Err(e) if in_ci() => panic!("{e}: in CI the scale-out test must run"),
        Err(e) => {
            println!("skipped: {e}");
            return;
        }
    };
    let started = Instant::now();
    let mosq = OwnMosquitto::start().expect("mosquitto");
    let dir = cluster.dir.join("procs");
    std::fs::create_dir_all(&dir).unwrap();
    let db = fresh_pg_database(&admin).await.unwrap();
    let db_single = fresh_pg_database(&admin).await.unwrap();

    let mut fleet = Fleet::generate(&FleetConfig {
        seed: 14,
        districts: 24,
        meters_per_district: 84,
        leaks: 12,
        push_every_h: 24,
        hours: Some(144),
        households: HouseholdMix::only(HomeClass::Setback),
        leak: LeakConfig {
            from_h: 54,
            to_h: 66,
            ..LeakConfig::default()
        },
        ..FleetConfig::default()
    });
    let registry = fleet.registry();
    assert!(registry.len() >= 2000);
    for url in [&db, &db_single] {
        let s = Store::connect(url).await.unwrap();
        s.upsert_meters(&registry).await.unwrap();
        s.close().await;
    }
    let prefix = unique("lwso");
    let common = |db: &str| -> Vec<(String, String)> {
        vec![
            ("LEAKWATCH__DATABASE__URL".into(), db.into()),
            ("LEAKWATCH__MQTT__URL".into(), mosq.url()),
            ("LEAKWATCH__MQTT__PREFIX".into(), prefix.clone()),
            ("LEAKWATCH_NATS_URL".into(), cluster.servers()),
            ("LEAKWATCH_NATS_STREAM".into(), STREAM.into()),
            ("LEAKWATCH_PARTITIONS".into(), PARTITIONS.to_string()),
        ]
    };

    // The single-process reference, on its own database and MQTT session.
    let http = free_port();
    let mut single_env = common(&db_single);
    single_env.push(("LEAKWATCH__MQTT__CLIENT_ID".into(), unique("lw-single-")));
    single_env.push((
        "LEAKWATCH__HTTP__LISTEN".into(),
        format!("127.0.0.1:{http}"),
    ));
    let mut single = Proc::start("single", vec!["run".into()], single_env, &dir);
    wait_for("single ready", Duration::from_secs(60), || async {
        let r = reqwest::get(format!("http://127.0.0.1:{http}/readyz"))
            .await
            .ok()?;
        (r.status() == 200).then_some(())
    })
    .await;

    // Each bridge's and worker's health and metrics listener.
    let bridge_http: Vec<u16> = (0..2).map(|_| free_port()).collect();
    let worker_http: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let bridge = |i: usize| {
        Proc::start(
            &format!("bridge{i}"),
            vec![
                "bridge".into(),
                "--id".into(),
                format!("{prefix}-bridge{i}"),
                "--shared-group".into(),
                prefix.clone(),
                "--http-listen".into(),
                format!("127.0.0.1:{}", bridge_http[i]),
            ],
            common(&db),
            &dir,
        )
    };
    let mut bridges = vec![bridge(0), bridge(1)];
    let worker = |i: usize, fail: Option<(&str, u32)>| {
        let mut env = common(&db);
        if let Some((points, after)) = fail {
            env.push(("FAIL_POINTS".into(), points.into()));
            env.push(("LEAKWATCH_FAIL_AFTER_BATCHES".into(), after.to_string()));
        }
        Proc::start(
            &format!("worker{i}"),
            vec![
                "worker".into(),
                "--id".into(),
                format!("w{i}"),
                "--lease-ttl-ms".into(),
                LEASE_TTL_MS.to_string(),
                "--http-listen".into(),
                format!("127.0.0.1:{}", worker_http[i]),
            ],
            env,
            &dir,
        )
    };
    // w2 is held 4 s before an early commit (then SIGSTOPped), w0 long before a later
    // one (SIGKILLed mid-batch), w1 long after a commit (SIGKILLed before its ack).
    let mut workers = vec![
        worker(0, Some(("worker-before-commit=1*return(120000)", 12))),
        worker(1, Some(("worker-after-commit=1*return(120000)", 24))),
        worker(2, Some(("worker-before-commit=1*return(4000)", 2))),
    ];
    for b in &bridges {
        b.wait_line("bridge running", Duration::from_secs(60)).await;
    }
    for w in &workers {
        w.wait_line("worker running", Duration::from_secs(60)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;

    let log = JetStreamLog::connect(
        LogConfig {
            servers: cluster.servers(),
            stream: STREAM.into(),
            partitions: PARTITIONS,
            ..LogConfig::default()
        },
        "test",
    )
    .await
    .unwrap();
    let pool = pg(&db).await;
    let pool_single = pg(&db_single).await;

    // The fleet publishes in the background: 144 simulated hours in about 70 s.
    let publisher = leakwatch_sim::Publisher::connect("127.0.0.1", mosq.port, &unique("lw-pub-"))
        .await
        .unwrap();
    let publish_cfg = PublishConfig {
        prefix: prefix.clone(),
        hours: Some(144),
        sim_hour: Duration::from_millis(480),
        duplicate_every: Some(50),
    };
    let publishing = tokio::spawn(async move {
        let stats =
            leakwatch_sim::publish(&mut fleet, &publisher, &publish_cfg, std::future::pending())
                .await
                .expect("publish");
        let acked = publisher.acked();
        (stats, acked)
    });

    let mut table: Vec<String> = Vec::new();
    let mut takeovers: Vec<(String, Duration)> = Vec::new();

    // 1. The worker held before its commit, SIGSTOPped past its lease TTL.
    let line = workers[2]
        .wait_line("FAILPOINT worker-before-commit", Duration::from_secs(90))
        .await;
    workers[2].signal("STOP");
    let stopped = Instant::now();
    let p = field(&line, "partition");
    let epoch = i64::from(field(&line, "epoch"));
    let t = takeover(&pool, p, epoch, stopped).await;
    takeovers.push(("worker SIGSTOP (lease expiry)".into(), t));
    workers[2].signal("CONT");
    wait_for(
        "a stale-epoch commit refused",
        Duration::from_secs(30),
        || async {
            (count(&pool, "SELECT count(*) FROM lw_partition_refusals").await >= 1).then_some(())
        },
    )
    .await;
    table.push(format!(
        "worker w2 held before commit, SIGSTOP until partition {p} was taken over \
         ({:.1}s, lease TTL {LEASE_TTL_MS} ms), SIGCONT: its commit refused",
        t.as_secs_f64()
    ));

    // 2. The stream leader, SIGKILLed and restarted.
    let mut stream = log.context().get_stream(STREAM).await.unwrap();
    let leader = stream
        .info()
        .await
        .unwrap()
        .cluster
        .as_ref()
        .and_then(|c| c.leader.clone())
        .expect("a stream leader");
    let li = cluster.index_of(&leader).expect("leader is ours");
    cluster.kill(li);
    let killed = Instant::now();
    let new_leader = wait_for("a new stream leader", Duration::from_secs(60), || async {
        let mut s = log.context().get_stream(STREAM).await.ok()?;
        let l = s.info().await.ok()?.cluster.as_ref()?.leader.clone()?;
        (l != leader).then_some(l)
    })
    .await;
    let t = killed.elapsed();
    takeovers.push(("stream leader SIGKILL (new leader)".into(), t));
    tokio::time::sleep(Duration::from_secs(2)).await;
    cluster.restart(li);
    table.push(format!(
        "stream leader {leader} SIGKILL: {new_leader} leads after {:.1}s; {leader} restarted",
        t.as_secs_f64()
    ));

    // 3. A worker SIGKILLed mid-batch (held before its commit).
    let line = workers[0]
        .wait_line("FAILPOINT worker-before-commit", Duration::from_secs(120))
        .await;
    let (p, epoch) = (field(&line, "partition"), i64::from(field(&line, "epoch")));
    workers[0].kill9();
    let killed = Instant::now();
    let t = takeover(&pool, p, epoch, killed).await;
    takeovers.push(("worker SIGKILL mid-batch".into(), t));
    table.push(format!(
        "worker w0 SIGKILL before commit: partition {p} taken over in {:.1}s",
        t.as_secs_f64()
    ));
    workers[0].env.retain(|(k, _)| k != "FAIL_POINTS");
    workers[0].spawn();

    // 4. A worker SIGKILLed between its commit and its ack.
    let line = workers[1]
        .wait_line("FAILPOINT worker-after-commit", Duration::from_secs(120))
        .await;
    let (p, epoch) = (field(&line, "partition"), i64::from(field(&line, "epoch")));
    workers[1].kill9();
    let killed = Instant::now();
    let t = takeover(&pool, p, epoch, killed).await;
    takeovers.push(("worker SIGKILL between commit and ack".into(), t));
    table.push(format!(
        "worker w1 SIGKILL after commit, before ack: partition {p} taken over in {:.1}s",
        t.as_secs_f64()
    ));
    workers[1].env.retain(|(k, _)| k != "FAIL_POINTS");
    workers[1].spawn();

    // 5. A bridge SIGKILLed while the fleet publishes, then started again.
    bridges[0].kill9();
    tokio::time::sleep(Duration::from_secs(2)).await;
    bridges[0].spawn();
    table.push("bridge0 SIGKILL while publishing; restarted after 2s".into());

    let (stats, acked) = publishing.await.unwrap();
    println!("published {stats:?}, acked by the broker: {acked}");
    assert!(stats.readings > 200_000, "{stats:?}");

    // 6. Rolling SIGTERM of every process (nats nodes, bridges, workers, the reference).
    for i in 0..3 {
        cluster.terminate(i);
        cluster.start_node(i);
        cluster.wait_up(i, Duration::from_secs(20));
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
    let mut stops = Vec::new();
    for b in bridges.iter_mut() {
        stops.push((b.name.clone(), b.terminate()));
        b.spawn();
    }
    for w in workers.iter_mut() {
        stops.push((w.name.clone(), w.terminate()));
        w.spawn();
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    stops.push(("single".into(), single.terminate()));
    single.spawn();
    table.push(format!(
        "rolling SIGTERM of 3 nats nodes, 2 bridges, 3 workers, the reference: stopped in {:?}",
        stops
            .iter()
            .map(|(n, d)| format!("{n} {:.1}s", d.as_secs_f64()))
            .collect::<Vec<_>>()
    ));

    // Quiet: every partition committed up to the stream's last sequence, and the
    // reference has stored as many readings.
    let expected = stats.readings as i64;
    let store = Store::connect(&db).await.unwrap();
    wait_for("the workers to drain", Duration::from_secs(180), || async {
        let stored = count(&pool, "SELECT count(*) FROM readings").await;
        if stored < expected {
            return None;
        }
        let cps = store.partition_checkpoints().await.ok()?;
        for p in 0..PARTITIONS {
            let last = log.last_seq(p).await.ok()?;
            let committed = cps
                .iter()
                .find(|c| c.partition == p)
                .map_or(0, |c| c.last_seq);
            if committed != last {
                return None;
            }
        }
        Some(())
    })
    .await;
    wait_for(
        "the reference to drain",
        Duration::from_secs(180),
        || async {
            (count(&pool_single, "SELECT count(*) FROM readings").await >= expected).then_some(())
        },
    )
    .await;
    // What the workers and bridges tell operators: every partition held once and
    // committed up to the stream.
    // (A partition may be changing hands after the rolling restart: wait until each is
    // held and claimed by exactly one worker.)
    let held = wait_for(
        "every partition held and claimed by one worker",
        Duration::from_secs(60),
        || async {
            let mut held = std::collections::BTreeMap::new();
            for port in &worker_http {
                let v: serde_json::Value = reqwest::get(format!("http://127.0.0.1:{port}/readyz"))
                    .await
                    .ok()?
                    .json()
                    .await
                    .ok()?;
                if v["ready"] != true {
                    return None;
                }
                for (p, view) in v["worker"]["partitions"].as_object()? {
                    if view["claimed"] != true {
                        return None;
                    }
                    let seq = view["committed_seq"].as_u64()?;
                    if held.insert(p.parse::<u32>().ok()?, seq).is_some() {
                        return None;
                    }
                }
            }
            (held.len() == PARTITIONS as usize).then_some(held)
        },
    )
    .await;
    for (p, seq) in held {
        assert_eq!(seq, log.last_seq(p).await.unwrap(), "partition {p}");
    }
    let mut all_metrics = String::new();
    for port in &worker_http {
        let m = reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        for name in ["leakwatch_worker_partitions", "leakwatch_worker_member"] {
            assert!(m.contains(name), "no {name} in {m}");
        }
        all_metrics.push_str(&m);
    }
    // Per partition, from the workers holding some (one may hold none yet).
    for name in [
        "leakwatch_worker_committed_seq{partition=",
        "leakwatch_worker_lease_epoch{partition=",
    ] {
        assert!(all_metrics.contains(name), "no {name} in {all_metrics}");
    }
    for port in &bridge_http {
        let r = reqwest::get(format!("http://127.0.0.1:{port}/readyz"))
            .await
            .unwrap();
        let v: serde_json::Value = r.json().await.unwrap();
        assert_eq!(v["ready"], true, "{v}");
        let m = reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(m.contains("leakwatch_bridge_in_flight"), "{m}");
    }
    // Detection of the last batch: give the reference a moment to record its alerts.
    tokio::time::sleep(Duration::from_secs(3)).await;

    // Counts.
    let scaled = reading_keys(&pool).await;
    let reference = reading_keys(&pool_single).await;
    let missing = reference.difference(&scaled).count();
    let extra = scaled.difference(&reference).count();
    let rows = count(&pool, "SELECT count(*) FROM readings").await;
    let duplicate_rows = rows - scaled.len() as i64;
    let duplicate_alerts = count(
        &pool,
        "SELECT count(*) FROM (SELECT 1 FROM alerts GROUP BY kind, subject, detected_at
                                HAVING count(*) > 1) d",
    )
    .await;
    let a_scaled = alerts(&pool).await;
    let a_single = alerts(&pool_single).await;
    let refused = store.partition_refusals().await.unwrap();
    let max_lag = store.partitions_max_lag_ms().await.unwrap();
    let cps = store.partition_checkpoints().await.unwrap();
    let mut seq_mismatch = 0;
    for p in 0..PARTITIONS {
        let last = log.last_seq(p).await.unwrap();
        let committed = cps
            .iter()
            .find(|c| c.partition == p)
            .map_or(0, |c| c.last_seq);
        if last != committed {
            seq_mismatch += 1;
        }
    }

    println!(
        "== scale-out fault test ({:.0}s) ==",
        started.elapsed().as_secs_f64()
    );
    for f in &table {
        println!("fault: {f}");
    }
    for (what, t) in &takeovers {
        println!("takeover: {what}: {:.2}s", t.as_secs_f64());
    }
    println!(
        "largest lag (bridge receipt to commit): {:.2}s",
        max_lag as f64 / 1000.0
    );
    println!(
        "readings published (acked by the broker) {expected}, stored {rows}, \
         missing vs reference {missing}, extra {extra}, duplicate rows {duplicate_rows}"
    );
    println!(
        "alerts: scaled {}, reference {}, duplicate alerts {duplicate_alerts}",
        a_scaled.len(),
        a_single.len()
    );
    println!(
        "stale-epoch commits refused: {refused}; partitions with committed seq != stream seq: {seq_mismatch}"
    );

    assert_eq!(rows, expected, "every acknowledged reading stored once");
    assert_eq!(missing, 0);
    assert_eq!(extra, 0);
    assert_eq!(duplicate_rows, 0);
    assert_eq!(duplicate_alerts, 0);
    assert!(!a_single.is_empty(), "the seeded leaks raise alerts");
    // KNOWN GAP (issue 14, open): the integrity detector's clock_error (a reading
    // more than clock_tolerance_h ahead of its district's watermark, judged as it
    // arrives) depends on the order a district's messages reach the detectors. The
    // workers feed each batch in the order received as the single process does, so
    // where a partition's stream is cut no longer matters (worker.rs test), but the
    // stream's order is not the broker's: two bridges of a shared subscription
    // interleave their halves, and at this test's pace (one simulated hour in 480
    // ms) a few seconds of skew are hours of event time. Every other kind must match
    // exactly; the clock_error differences are printed so the gap stays visible.
    let scaled_set: BTreeSet<&AlertKey> = a_scaled.iter().collect();
    let single_set: BTreeSet<&AlertKey> = a_single.iter().collect();
    let clock = |v: &BTreeSet<&AlertKey>| v.iter().filter(|a| a.0 == "clock_error").count();
    println!(
        "clock_error alerts: scaled {}, reference {}",
        clock(&scaled_set),
        clock(&single_set)
    );
    println!(
        "alerts only scaled out: {:?}\nalerts only in the reference: {:?}",
        scaled_set.difference(&single_set).collect::<Vec<_>>(),
        single_set.difference(&scaled_set).collect::<Vec<_>>()
    );
    let not_clock = |v: &[AlertKey]| {
        v.iter()
            .filter(|a| a.0 != "clock_error")
            .cloned()
            .collect::<Vec<_>>()
    };
    assert_eq!(
        not_clock(&a_scaled),
        not_clock(&a_single),
        "the same alerts as one process"
    );
    assert!(refused >= 1);
    assert_eq!(seq_mismatch, 0);

    drop(workers);
    drop(bridges);
    drop(single);
    pool.close().await;
    pool_single.close().await;
    store.close().await;
    drop_pg_database(&admin, &db).await;
    drop_pg_database(&admin, &db_single).await;
    drop(mosq);
    drop(cluster);
}
