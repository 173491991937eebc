//! `leakwatch backtest`: replays a recorded stream through the detectors with a given
//! configuration (the `[detect]` settings of `--config` and the environment), writes
//! the alerts, and scores them against labels. What an engineer uses to tune the
//! settings on the utility's own history before turning them on.
//!
//! Inputs:
//! - `--jsonl FILE`: v1 messages, one JSON object per line, in the order received,
//!   with `--registry FILE` (the CSV of `leakwatch meters import`) saying each
//!   meter's district and kind;
//! - `--csv FILE --mapping FILE`: a table of timestamped values, one column per
//!   measurement, and a mapping (`column,meter_id,district_id,kind,quantity`, where
//!   `quantity` is `flow_m3h` or `index_m3`) from columns to meters. Flows are
//!   integrated into an index (columns mapped to the same meter are added: a district
//!   fed by two pipes is one station); the meter reports its index every
//!   `--report-every-min` minutes.
//!
//! Times: RFC 3339, or `YYYY-MM-DD HH:MM[:SS]` read as UTC.
//!
//! Labels (`--labels FILE`): `subject,start,end,peak` (meter or district id; `end`,
//! `peak` may be empty). A label is found by the first new leak-kind alert on its
//! subject (the alert's meter or district) raised after its start while the leak is
//! young: within `--young-days` (7) of its start, or for a growing leak (a `peak`
//! after the start) until `--young-days` after its peak, and never after its end. An
//! alert finds at most one label (the earliest started); any other new leak-kind alert
//! is a false positive.

use anyhow::{Context, bail};
use chrono::{NaiveDateTime, TimeDelta};
use leakwatch_core::{DistrictId, Meter, MeterId, MeterKind, MeterStatus, Reading, Timestamp};
use leakwatch_detect::book::{Book, BookAlert};
use leakwatch_detect::{DetectConfig, Engine, MeterInfo};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

#[derive(Debug, clap::Args)]
pub struct BacktestArgs {
    /// v1 messages, one JSON object per line (needs --registry).
    #[arg(long, conflicts_with = "csv", requires = "registry")]
    jsonl: Option<PathBuf>,
    /// Meter registry CSV (`meter_id,district_id,kind,lat,lon,report_every_h`).
    #[arg(long)]
    pub registry: Option<PathBuf>,
    /// A CSV of timestamped values (needs --mapping).
    #[arg(long, requires = "mapping")]
    csv: Option<PathBuf>,
    /// Columns of --csv to meters: `column,meter_id,district_id,kind,quantity`.
    #[arg(long)]
    mapping: Option<PathBuf>,
    /// The time column of --csv (default: the first).
    #[arg(long)]
    time_column: Option<String>,
    /// Minutes between the readings made from --csv (default 60).
    #[arg(long, default_value_t = 60)]
    report_every_min: u32,
    /// Labels to score against: `subject,start,end,peak`.
    #[arg(long)]
    labels: Option<PathBuf>,
    /// Days a leak stays young (found only while young).
    #[arg(long, default_value_t = 7.0)]
    young_days: f64,
    /// Write the alerts (JSON array) here.
    #[arg(long)]
    alerts_out: Option<PathBuf>,
    /// Write the score (JSON) here.
    #[arg(long)]
    json: Option<PathBuf>,
}

/// Parses a time: RFC 3339, or `YYYY-MM-DD HH:MM[:SS]` as UTC.
pub fn parse_time(s: &str) -> anyhow::Result<Timestamp> {
    let s = s.trim();
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&chrono::Utc));
    }
    for f in [
        "%Y-%m-%d %H:%M:%S",
        "%Y-%m-%d %H:%M",
        "%Y-%m-%dT%H:%M:%S",
        "%Y-%m-%dT%H:%M",
    ] {
        if let Ok(t) = NaiveDateTime::parse_from_str(s, f) {
            return Ok(t.and_utc());
        }
    }
    bail!("{s:?} is not a time (RFC 3339 or YYYY-MM-DD HH:MM[:SS])")
}

/// One meter made from CSV columns.
struct Series {
    meter: Meter,
    /// Columns (indexes) and whether each is a flow (m³/h) or an index (m³).
    columns: Vec<(usize, bool)>,
    index_m3: f64,
}

/// Readings (in time order) and the registry from a CSV and its mapping.
fn from_csv(
    path: &PathBuf,
    mapping: &PathBuf,
    time_column: Option<&str>,
    every_min: u32,
) -> anyhow::Result<(Vec<Meter>, Vec<Reading>)> {
    let mut reader = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .from_path(path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    let headers = reader.headers()?.clone();
    let col = |name: &str| {
        headers
            .iter()
            .position(|h| h == name)
            .with_context(|| format!("{}: no column {name:?}", path.display()))
    };
    let time_col = match time_column {
        Some(c) => col(c)?,
        None => 0,
    };
    let mut series: Vec<Series> = Vec::new();
    let mut map = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .from_path(mapping)
        .with_context(|| format!("cannot read {}", mapping.display()))?;
    for (i, row) in map.records().enumerate() {
        let row = row?;
        let field = |k: usize| row.get(k).unwrap_or("").to_owned();
        let (column, meter, district, kind, quantity) =
            (field(0), field(1), field(2), field(3), field(4));
        let at = || format!("{} line {}", mapping.display(), i + 2);
        let flow = match quantity.as_str() {
            "flow_m3h" => true,
            "index_m3" => false,
            q => bail!("{}: quantity {q:?} (flow_m3h or index_m3)", at()),
        };
        let id = MeterId::parse(&meter).map_err(|e| anyhow::anyhow!("{}: {e}", at()))?;
        let district =
            DistrictId::parse(&district).map_err(|e| anyhow::anyhow!("{}: {e}", at()))?;
        let kind: MeterKind = kind.parse().map_err(|e| anyhow::anyhow!("{}: {e}", at()))?;
        let c = col(&column)?;
        match series.iter_mut().find(|s| s.meter.id == id) {
            Some(s) => s.columns.push((c, flow)),
            None => series.push(Series {
                meter: Meter {
                    id,
                    district,
                    kind,
                    location: leakwatch_core::GeoPoint::new(0.0, 0.0)
                        .map_err(|e| anyhow::anyhow!("{e}"))?,
                    report_every_h: every_min.div_ceil(60).max(1),
                    status: MeterStatus::Active,
                    installed_at: None,
                    max_flow_m3h: None,
                },
                columns: vec![(c, flow)],
                index_m3: 0.0,
            }),
        }
    }
    if series.is_empty() {
        bail!("{}: no column mapped to a meter", mapping.display());
    }
    let every = i64::from(every_min.max(1)) * 60;
    let mut readings = Vec::new();
    let mut last: Option<Timestamp> = None;
    for (i, row) in reader.records().enumerate() {
        let row = row?;
        let line = i + 2;
        let t = parse_time(row.get(time_col).unwrap_or(""))
            .with_context(|| format!("{} line {line}", path.display()))?;
        let dt_h = last.map_or(0.0, |l| (t - l).num_seconds() as f64 / 3600.0);
        if last.is_some_and(|l| t <= l) {
            bail!("{} line {line}: times must increase", path.display());
        }
        for s in &mut series {
            let mut flow = 0.0;
            let mut index = None;
            for &(c, is_flow) in &s.columns {
                let v: f64 = row
                    .get(c)
                    .unwrap_or("")
                    .parse()
                    .with_context(|| format!("{} line {line}: not a number", path.display()))?;
                if is_flow {
                    flow += v.max(0.0);
                } else {
                    *index.get_or_insert(0.0) += v;
                }
            }
            // The flow at a sample holds until the next (left Riemann sum from the
            // previous sample).
            s.index_m3 = match index {
                Some(ix) => ix,
                None => s.index_m3 + flow * dt_h,
            };
        }
        last = Some(t);
        if t.timestamp().rem_euclid(every) == 0 {
            for s in &series {
                readings.push(Reading {
                    meter: s.meter.id.clone(),
                    t,
                    vol: (s.index_m3 * 1000.0).round() / 1000.0,
                    temp: None,
                    flow_max: None,
                    pressure: None,
                });
            }
        }
    }
    Ok((series.into_iter().map(|s| s.meter).collect(), readings))
}

/// Replays readings (and their messages' events) through the engine and the book.
fn replay(
    detect: &DetectConfig,
    registry: &[Meter],
    messages: impl Iterator<Item = leakwatch_wire::Uplink>,
) -> Vec<BookAlert> {
    let mut engine = Engine::new(detect.clone());
    let infos: HashMap<MeterId, MeterInfo> = engine.register_registry(registry);
    let mut book = Book::new(TimeDelta::hours(i64::from(detect.resolve_after_h)));
    let mut findings = Vec::new();
    for mut up in messages {
        let Some(info) = infos.get(&up.meter) else {
            continue;
        };
        up.readings.sort_by_key(|r| r.t);
        for r in &up.readings {
            engine.observe(info, r, &mut findings);
        }
        for e in &up.events {
            engine.observe_event(info, e, &mut findings);
        }
        let ticks = engine.take_ticks();
        book.record_all(&mut findings, &ticks);
    }
    book.into_alerts()
}

/// One label.
#[derive(Debug, Clone, Serialize)]
pub struct Label {
    pub subject: String,
    pub start: Timestamp,
    pub end: Option<Timestamp>,
    pub peak: Option<Timestamp>,
}

fn read_labels(path: &PathBuf) -> anyhow::Result<Vec<Label>> {
    let mut reader = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .from_path(path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    let mut out = Vec::new();
    for (i, row) in reader.records().enumerate() {
        let row = row?;
        let at = || format!("{} line {}", path.display(), i + 2);
        let opt = |k: usize| -> anyhow::Result<Option<Timestamp>> {
            match row.get(k).map(str::trim).filter(|s| !s.is_empty()) {
                Some(s) => parse_time(s).map(Some).with_context(at),
                None => Ok(None),
            }
        };
        out.push(Label {
            subject: row.get(0).unwrap_or("").to_owned(),
            start: opt(1)?.with_context(|| format!("{}: no start", at()))?,
            end: opt(2)?,
            peak: opt(3)?,
        });
    }
    Ok(out)
}

/// How one label fared.
#[derive(Debug, Clone, Serialize)]
pub struct LabelScore {
    pub label: Label,
    pub found: bool,
    pub alert_id: Option<u64>,
    pub delay_h: Option<f64>,
}

/// The score of a backtest.
#[derive(Debug, Clone, Serialize)]
pub struct Score {
    pub labels: Vec<LabelScore>,
    pub found: usize,
    pub false_positives: usize,
    pub median_delay_h: Option<f64>,
    /// The false positives: alert id, kind, subject, detected_at.
    pub false_alerts: Vec<(u64, String, String, Timestamp)>,
}

/// Scores leak-kind alerts against labels (module doc).
pub fn score(alerts: &[BookAlert], labels: &[Label], young_days: f64) -> Score {
    let young = TimeDelta::seconds((young_days * 86_400.0) as i64);
    let mut order: Vec<usize> = (0..labels.len()).collect();
    order.sort_by_key(|&i| (labels[i].start, i));
    let mut found: Vec<Option<(u64, Timestamp)>> = vec![None; labels.len()];
    let mut false_alerts = Vec::new();
    let mut leak_alerts: Vec<&BookAlert> = alerts.iter().filter(|a| a.kind.is_leak()).collect();
    leak_alerts.sort_by_key(|a| (a.detected_at, a.id));
    for a in leak_alerts {
        let subjects = [
            a.meter_id.as_ref().map(|m| m.to_string()),
            a.district_id.as_ref().map(|d| d.to_string()),
        ];
        let hit = order.iter().copied().find(|&i| {
            let l = &labels[i];
            let until = l.peak.filter(|p| *p > l.start).unwrap_or(l.start) + young;
            let until = l.end.map_or(until, |e| until.min(e));
            found[i].is_none()
                && subjects.iter().flatten().any(|s| *s == l.subject)
                && a.detected_at >= l.start
                && a.detected_at <= until
        });
        match hit {
            Some(i) => found[i] = Some((a.id, a.detected_at)),
            None => false_alerts.push((
                a.id,
                a.kind.as_str().to_owned(),
                subjects
                    .iter()
                    .flatten()
                    .next()
                    .cloned()
                    .unwrap_or_default(),
                a.detected_at,
            )),
        }
    }
    let scores: Vec<LabelScore> = labels
        .iter()
        .zip(&found)
        .map(|(l, f)| LabelScore {
            label: l.clone(),
            found: f.is_some(),
            alert_id: f.map(|(id, _)| id),
            delay_h: f.map(|(_, t)| (t - l.start).num_seconds() as f64 / 3600.0),
        })
        .collect();
    let mut delays: Vec<f64> = scores.iter().filter_map(|s| s.delay_h).collect();
    delays.sort_by(f64::total_cmp);
    let median_delay_h = (!delays.is_empty()).then(|| {
        let n = delays.len();
        if n % 2 == 1 {
            delays[n / 2]
        } else {
            (delays[n / 2 - 1] + delays[n / 2]) / 2.0
        }
    });
    Score {
        found: scores.iter().filter(|s| s.found).count(),
        false_positives: false_alerts.len(),
        labels: scores,
        median_delay_h,
        false_alerts,
    }
}

pub fn command(
    args: BacktestArgs,
    detect: DetectConfig,
    registry: Vec<Meter>,
) -> anyhow::Result<()> {
    let alerts = if let (Some(csv), Some(mapping)) = (&args.csv, &args.mapping) {
        let (meters, readings) = from_csv(
            csv,
            mapping,
            args.time_column.as_deref(),
            args.report_every_min,
        )?;
        eprintln!(
            "{} readings of {} meters from {}",
            readings.len(),
            meters.len(),
            csv.display()
        );
        let district_of: HashMap<MeterId, DistrictId> = meters
            .iter()
            .map(|m| (m.id.clone(), m.district.clone()))
            .collect();
        // One message per reading, as a meter reporting each time would send.
        let messages = readings.into_iter().map(|r| leakwatch_wire::Uplink {
            district: district_of[&r.meter].clone(),
            meter: r.meter.clone(),
            readings: vec![r],
            events: vec![],
            battery: None,
            valve: None,
        });
        replay(&detect, &meters, messages)
    } else if let Some(path) = &args.jsonl {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let by_id: HashMap<&MeterId, &Meter> = registry.iter().map(|m| (&m.id, m)).collect();
        let mut messages = Vec::new();
        let (mut bad, mut unknown) = (0usize, 0usize);
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let meter = serde_json::from_str::<serde_json::Value>(line)
                .ok()
                .and_then(|v| v.get("meter").and_then(|m| m.as_str()).map(str::to_owned))
                .and_then(|m| MeterId::parse(&m).ok());
            let Some(meter) = meter else {
                bad += 1;
                continue;
            };
            let Some(m) = by_id.get(&meter) else {
                unknown += 1;
                continue;
            };
            let topic = leakwatch_wire::uplink_topic("gas", &m.district, &m.id);
            match leakwatch_wire::decode("gas", &topic, line.as_bytes()) {
                Ok(d) => messages.push(d.uplink),
                Err(_) => bad += 1,
            }
        }
        eprintln!(
            "{} messages from {} ({bad} not v1, {unknown} of meters not in the registry)",
            messages.len(),
            path.display()
        );
        replay(&detect, &registry, messages.into_iter())
    } else {
        bail!("give --csv with --mapping, or --jsonl with --registry");
    };
    let mut kinds: BTreeMap<&str, usize> = BTreeMap::new();
    for a in &alerts {
        *kinds.entry(a.kind.as_str()).or_default() += 1;
    }
    println!("{} alerts: {kinds:?}", alerts.len());
    if let Some(out) = &args.alerts_out {
        std::fs::write(out, serde_json::to_vec_pretty(&alerts)?)
            .with_context(|| format!("writing {}", out.display()))?;
    }
    if let Some(labels) = &args.labels {
        let labels = read_labels(labels)?;
        let s = score(&alerts, &labels, args.young_days);
        println!(
            "\n  {:<12} {:<17} {:<17} {:>6} {:>10}",
            "subject", "start", "peak", "found", "delay"
        );
        for l in &s.labels {
            println!(
                "  {:<12} {:<17} {:<17} {:>6} {:>10}",
                l.label.subject,
                l.label.start.format("%Y-%m-%d %H:%M"),
                l.label
                    .peak
                    .map_or_else(|| "-".into(), |p| p.format("%Y-%m-%d %H:%M").to_string()),
                if l.found { "yes" } else { "no" },
                l.delay_h
                    .map_or_else(|| "-".into(), |d| format!("{:.1} d", d / 24.0)),
            );
        }
        println!(
            "\nfound {} of {} while young; {} false positives; median delay {}",
            s.found,
            s.labels.len(),
            s.false_positives,
            s.median_delay_h
                .map_or_else(|| "-".into(), |d| format!("{:.1} d", d / 24.0))
        );
        for (id, kind, subject, at) in &s.false_alerts {
            println!("  false positive: alert {id} {kind} {subject} at {at}");
        }
        if let Some(p) = &args.json {
            std::fs::write(p, serde_json::to_vec_pretty(&s)?)
                .with_context(|| format!("writing {}", p.display()))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(name: &str, text: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("lw-backtest-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn flows_of_two_columns_make_one_station_index() {
        let mut csv = String::from("Timestamp,a,b,other\n");
        // 10 + 20 m³/h every 30 minutes for 3 hours.
        for i in 0..=6 {
            let t = chrono::DateTime::from_timestamp(1_514_764_800 + i * 1800, 0).unwrap();
            csv.push_str(&format!("{},10,20,99\n", t.format("%Y-%m-%d %H:%M:%S")));
        }
        let data = write("flows.csv", &csv);
        let mapping = write(
            "mapping.csv",
            "column,meter_id,district_id,kind,quantity\na,ST-1,D1,station,flow_m3h\nb,ST-1,D1,station,flow_m3h\n",
        );
        let (meters, readings) = from_csv(&data, &mapping, None, 60).unwrap();
        assert_eq!(meters.len(), 1);
        assert_eq!(meters[0].kind, MeterKind::Station);
        let vols: Vec<f64> = readings.iter().map(|r| r.vol).collect();
        assert_eq!(vols, vec![0.0, 30.0, 60.0, 90.0]);
    }

    fn alert(id: u64, district: &str, kind: leakwatch_core::AlertKind, at: &str) -> BookAlert {
        let t = parse_time(at).unwrap();
        BookAlert {
            id,
            kind,
            severity: leakwatch_core::Severity::Warning,
            meter_id: None,
            district_id: Some(DistrictId::parse(district).unwrap()),
            detected_at: t,
            last_seen: t,
            count: 1,
            resolved_at: None,
            evidence: leakwatch_core::Evidence {
                rule: "r".into(),
                observed: 0.0,
                expected: None,
                threshold: 0.0,
                unit: "".into(),
                window_start: t,
                window_end: t,
                explanation: "".into(),
                known: None,
            },
        }
    }

    #[test]
    fn a_label_is_found_only_while_young_and_once() {
        use leakwatch_core::AlertKind::{InflowNightFlow, Silence};
        let labels = vec![
            Label {
                subject: "D1".into(),
                start: parse_time("2018-01-01 00:00").unwrap(),
                end: None,
                peak: None,
            },
            Label {
                subject: "D1".into(),
                start: parse_time("2018-02-01 00:00").unwrap(),
                end: Some(parse_time("2018-02-03 00:00").unwrap()),
                peak: Some(parse_time("2018-03-01 00:00").unwrap()),
            },
        ];
        let alerts = vec![
            // Young: finds the first label, 2 days late.
            alert(1, "D1", InflowNightFlow, "2018-01-03 00:00"),
            // A second alert in the first label's youth: a false positive.
            alert(2, "D1", InflowNightFlow, "2018-01-04 00:00"),
            // Not a leak kind: ignored.
            alert(3, "D1", Silence, "2018-02-02 00:00"),
            // After the second label's end (its peak is later): too late.
            alert(4, "D1", InflowNightFlow, "2018-02-04 00:00"),
        ];
        let s = score(&alerts, &labels, 7.0);
        assert_eq!(s.found, 1);
        assert_eq!(s.labels[0].delay_h, Some(48.0));
        assert!(!s.labels[1].found);
        assert_eq!(s.false_positives, 2);
        assert_eq!(s.median_delay_h, Some(48.0));
    }
}
