//! The scorer: judges alerts against the simulator's ground truth.
//!
//! Matching rules (documented in `docs/simulator.md`):
//! - a behind-the-meter leak is **detected** by the first leak-kind alert on its
//!   meter whose `detected_at` is at or after the leak's start; time to detect is the
//!   difference. Per alert kind, the same with only that kind's alerts.
//! - a network leak is detected by the first district alert (`district_balance`,
//!   `inflow_night_flow`) on its district at or after its start (the simulator has
//!   no pressure points, so a `pressure_drop` alert would count as a false alarm).
//! - a leak-kind alert that matches no leak (another meter, another district, or
//!   raised before the leak began) is a **false alarm**; false alarms are counted per
//!   1,000 customer meter-days of the run.
//! - device and integrity alerts (tamper, silence, ...) are matched to the injected
//!   fault of the same kind on the same meter, raised between the fault's start and
//!   [`FAULT_MATCH_AFTER_H`] after its end.
//! - precision of a kind = its alerts that match something true / its alerts.

use crate::truth::{FaultKind, Truth};
use chrono::TimeDelta;
use leakwatch_core::{AlertKind, DistrictId, MeterId, Timestamp};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::fmt::{self, Write as _};

/// Hours after a fault's end during which an alert of its kind still matches it.
pub const FAULT_MATCH_AFTER_H: i64 = 72;

/// What the scorer needs of an alert (what the API and a replay both write).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlertView {
    pub kind: AlertKind,
    #[serde(default)]
    pub meter_id: Option<MeterId>,
    #[serde(default)]
    pub district_id: Option<DistrictId>,
    pub detected_at: Timestamp,
}

/// Leak size classes of behind-the-meter leaks, litres per hour (final rate).
pub const LEAK_CLASSES: [(&str, f64, f64); 4] = [
    ("5-20 L/h", 0.0, 20.0),
    ("20-50 L/h", 20.0, 50.0),
    ("50-200 L/h", 50.0, 200.0),
    ("200-500 L/h", 200.0, f64::INFINITY),
];

/// Network leak classes, share of district inflow.
pub const NETWORK_CLASSES: [(&str, f64, f64); 3] = [
    ("0.5-1 %", 0.0, 0.01),
    ("1-2 %", 0.01, 0.02),
    ("2-5 %", 0.02, f64::INFINITY),
];

/// Recall and time to detect of one group of true leaks.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Detection {
    pub leaks: usize,
    pub detected: usize,
    /// Detected within 7 days of the start.
    pub detected_7d: usize,
    pub recall: f64,
    pub recall_7d: f64,
    /// Exact (Clopper-Pearson) 95 % confidence interval of `recall_7d`: with a few
    /// dozen leaks per class, one seed's recall is an estimate, not the truth.
    pub recall_7d_ci95: (f64, f64),
    /// Median time to detect, hours (of the detected ones).
    pub ttd_median_h: Option<f64>,
    /// 95th percentile time to detect, hours.
    pub ttd_p95_h: Option<f64>,
    /// Longest time to detect, hours (of the detected ones).
    #[serde(default)]
    pub ttd_max_h: Option<f64>,
}

/// One alert kind's figures.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct KindScore {
    pub alerts: usize,
    pub true_alerts: usize,
    /// False alarms after the warm-up.
    pub false_alarms: usize,
    /// False alarms raised during the warm-up (not in the rates).
    pub warmup_false_alarms: usize,
    /// False alarms after the warm-up, by the class of home of the meter (`district`
    /// for district kinds).
    pub false_by_class: BTreeMap<String, usize>,
    pub precision: Option<f64>,
    pub false_alarms_per_1000_meter_days: f64,
    /// For leak kinds: behind-the-meter (or network) leaks this kind found.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detection: Option<Detection>,
}

/// A target of issue 4, with whether it is met.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Target {
    pub name: String,
    pub value: Option<f64>,
    pub goal: String,
    pub met: bool,
}

/// The whole report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    pub seed: u64,
    pub customer_meters: u32,
    pub days: f64,
    /// Days at the start during which the detectors learn: false alarms raised then
    /// are reported apart and left out of the rates (no leak starts in them).
    pub warmup_days: f64,
    /// Customer meter-days after the warm-up: the denominator of the rates.
    pub meter_days: f64,
    /// Behind-the-meter leaks by size class, any leak kind.
    pub leaks_by_class: BTreeMap<String, Detection>,
    pub leaks_20_plus: Detection,
    /// Leaks of 100 L/h and more.
    pub leaks_100_plus: Detection,
    /// Leaks starting while an earlier one flows on the same meter.
    pub leaks_on_top: Detection,
    /// Incipient leaks (growing from 1-2 L/h).
    pub leaks_incipient: Detection,
    pub leaks_all: Detection,
    pub network_by_class: BTreeMap<String, Detection>,
    pub network_1pct_plus: Detection,
    /// Per alert kind (every kind that raised an alert or has something to find).
    pub kinds: BTreeMap<String, KindScore>,
    pub leak_false_alarms: usize,
    pub leak_false_alarms_per_1000_meter_days: f64,
    /// Leak-kind false alarms (after the warm-up) on meters whose usage changed
    /// before the alert, by kind of change.
    pub false_alarms_by_usage_change: BTreeMap<String, usize>,
    /// Share of leak-free customer meters with a leak-kind alert in their first 14
    /// days (the start of the run).
    pub leak_free_alerted_first_14d: f64,
    pub targets: Vec<Target>,
}

fn fault_alert_kind(k: FaultKind) -> Option<AlertKind> {
    Some(match k {
        FaultKind::Tamper => AlertKind::Tamper,
        FaultKind::MagneticField => AlertKind::MagneticField,
        FaultKind::ReverseFlow => AlertKind::ReverseFlow,
        FaultKind::BatteryLow => AlertKind::BatteryLow,
        FaultKind::BatteryCritical => AlertKind::BatteryCritical,
        FaultKind::CounterRegression => AlertKind::CounterRegression,
        FaultKind::ClockError => AlertKind::ClockError,
        FaultKind::Silent => AlertKind::Silence,
        // A valve closed by the customer or the utility is not a leak: no alert due.
        FaultKind::ValveClosed | FaultKind::Gap | FaultKind::Duplicate | FaultKind::Late => {
            return None;
        }
    })
}

fn quantile(sorted: &[f64], q: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    // Nearest rank.
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    Some(sorted[rank - 1])
}

fn detection(ttds: &[Option<f64>]) -> Detection {
    let mut found: Vec<f64> = ttds.iter().flatten().copied().collect();
    found.sort_by(f64::total_cmp);
    let leaks = ttds.len();
    let detected = found.len();
    let detected_7d = found.iter().filter(|h| **h <= 168.0).count();
    let ratio = |n: usize| {
        if leaks == 0 {
            0.0
        } else {
            n as f64 / leaks as f64
        }
    };
    Detection {
        leaks,
        detected,
        detected_7d,
        recall: ratio(detected),
        recall_7d: ratio(detected_7d),
        recall_7d_ci95: clopper_pearson(detected_7d, leaks),
        ttd_median_h: quantile(&found, 0.5),
        ttd_p95_h: quantile(&found, 0.95),
        ttd_max_h: found.last().copied(),
    }
}

/// Exact two-sided 95 % interval of a binomial proportion `k / n` (Clopper-Pearson,
/// from Beta quantiles).
pub fn clopper_pearson(k: usize, n: usize) -> (f64, f64) {
    use statrs::distribution::{Beta, ContinuousCDF};
    if n == 0 {
        return (0.0, 1.0);
    }
    let (k, n) = (k as f64, n as f64);
    let lower = if k == 0.0 {
        0.0
    } else {
        Beta::new(k, n - k + 1.0).map_or(0.0, |b| b.inverse_cdf(0.025))
    };
    let upper = if k == n {
        1.0
    } else {
        Beta::new(k + 1.0, n - k).map_or(1.0, |b| b.inverse_cdf(0.975))
    };
    (lower, upper)
}

fn hours(d: TimeDelta) -> f64 {
    d.num_seconds() as f64 / 3600.0
}

/// Scores `alerts` against `truth`. `end` is the end of the run (the truth's, or the
/// last alert's time when the truth has none).
pub fn score(truth: &Truth, alerts: &[AlertView], warmup_days: f64) -> Report {
    let end = truth
        .end
        .or_else(|| alerts.iter().map(|a| a.detected_at).max())
        .unwrap_or(truth.start);
    let days = hours(end - truth.start) / 24.0;
    let warmup_end = truth.start + TimeDelta::seconds((warmup_days * 86_400.0) as i64);
    let meter_days = f64::from(truth.customer_meters) * (days - warmup_days).max(0.0);
    let per_1000 = |n: usize| {
        if meter_days > 0.0 {
            n as f64 * 1000.0 / meter_days
        } else {
            0.0
        }
    };

    let mut leak_of: HashMap<&MeterId, Vec<usize>> = HashMap::new();
    for (i, l) in truth.leaks.iter().enumerate() {
        leak_of.entry(&l.meter).or_default().push(i);
    }
    let mut net_of: HashMap<&DistrictId, Vec<usize>> = HashMap::new();
    for (i, l) in truth.network_leaks.iter().enumerate() {
        net_of.entry(&l.district).or_default().push(i);
    }
    let usage_of: HashMap<&MeterId, &crate::truth::UsageChange> =
        truth.usage_changes.iter().map(|u| (&u.meter, u)).collect();
    let first_14d_end = truth.start + TimeDelta::days(14);
    let mut alerted_first_14d: std::collections::HashSet<&MeterId> = Default::default();
    let mut false_by_usage: BTreeMap<String, usize> = BTreeMap::new();
    let mut faults_of: HashMap<(&MeterId, AlertKind), Vec<(Timestamp, Timestamp)>> = HashMap::new();
    for f in &truth.faults {
        if let Some(k) = fault_alert_kind(f.kind) {
            faults_of
                .entry((&f.meter, k))
                .or_default()
                .push((f.start, f.end));
        }
    }

    // First matching alert time per leak: overall and per kind.
    let mut leak_first: Vec<Option<Timestamp>> = vec![None; truth.leaks.len()];
    let mut leak_first_by_kind: HashMap<AlertKind, Vec<Option<Timestamp>>> = HashMap::new();
    let mut net_first: Vec<Option<Timestamp>> = vec![None; truth.network_leaks.len()];
    let mut net_first_by_kind: HashMap<AlertKind, Vec<Option<Timestamp>>> = HashMap::new();
    let mut kinds: BTreeMap<String, KindScore> = BTreeMap::new();
    let mut faults_found: HashMap<AlertKind, std::collections::HashSet<(MeterId, Timestamp)>> =
        HashMap::new();
    let mut leak_false = 0usize;

    let earliest = |slot: &mut Option<Timestamp>, t: Timestamp| {
        if slot.is_none_or(|s| t < s) {
            *slot = Some(t);
        }
    };

    for a in alerts {
        let score = kinds.entry(a.kind.as_str().to_owned()).or_default();
        score.alerts += 1;
        let matched = if a.kind.is_district() {
            let mut hit = false;
            for &i in a
                .district_id
                .as_ref()
                .and_then(|d| net_of.get(d))
                .map_or(&[][..], |v| v)
            {
                if a.detected_at >= truth.network_leaks[i].start {
                    earliest(&mut net_first[i], a.detected_at);
                    let v = net_first_by_kind
                        .entry(a.kind)
                        .or_insert_with(|| vec![None; truth.network_leaks.len()]);
                    earliest(&mut v[i], a.detected_at);
                    hit = true;
                }
            }
            hit
        } else if a.kind.is_leak() {
            if let Some(m) = &a.meter_id
                && !leak_of.contains_key(m)
                && a.detected_at < first_14d_end
            {
                alerted_first_14d.insert(m);
            }
            let mut hit = false;
            for &i in a
                .meter_id
                .as_ref()
                .and_then(|m| leak_of.get(m))
                .map_or(&[][..], |v| v)
            {
                if a.detected_at >= truth.leaks[i].start {
                    earliest(&mut leak_first[i], a.detected_at);
                    let v = leak_first_by_kind
                        .entry(a.kind)
                        .or_insert_with(|| vec![None; truth.leaks.len()]);
                    earliest(&mut v[i], a.detected_at);
                    hit = true;
                }
            }
            hit
        } else {
            let window = TimeDelta::hours(FAULT_MATCH_AFTER_H);
            let hit = a.meter_id.as_ref().and_then(|m| {
                faults_of.get(&(m, a.kind)).and_then(|spans| {
                    spans
                        .iter()
                        .find(|(s, e)| a.detected_at >= *s && a.detected_at <= *e + window)
                        .map(|(s, _)| (m.clone(), *s))
                })
            });
            match hit {
                Some(key) => {
                    faults_found.entry(a.kind).or_default().insert(key);
                    true
                }
                None => false,
            }
        };
        if matched {
            score.true_alerts += 1;
        } else if a.detected_at < warmup_end {
            score.warmup_false_alarms += 1;
        } else {
            score.false_alarms += 1;
            let class = if a.kind.is_district() {
                "district".to_owned()
            } else {
                a.meter_id
                    .as_ref()
                    .and_then(|m| truth.classes.get(m))
                    .map_or_else(|| "unknown".to_owned(), |c| format!("{c:?}").to_lowercase())
            };
            *score.false_by_class.entry(class).or_default() += 1;
            if a.kind.is_leak() {
                leak_false += 1;
                if let Some(u) = a.meter_id.as_ref().and_then(|m| usage_of.get(m))
                    && u.start <= a.detected_at
                {
                    *false_by_usage
                        .entry(u.kind.as_str().to_owned())
                        .or_default() += 1;
                }
            }
        }
    }

    let ttd = |first: &[Option<Timestamp>], starts: &dyn Fn(usize) -> Timestamp| {
        first
            .iter()
            .enumerate()
            .map(|(i, f)| f.map(|t| hours(t - starts(i))))
            .collect::<Vec<_>>()
    };
    let leak_start = |i: usize| truth.leaks[i].start;
    let net_start = |i: usize| truth.network_leaks[i].start;
    let leak_ttd = ttd(&leak_first, &leak_start);
    let net_ttd = ttd(&net_first, &net_start);

    let pick = |ttds: &[Option<f64>], keep: &dyn Fn(usize) -> bool| {
        ttds.iter()
            .enumerate()
            .filter(|(i, _)| keep(*i))
            .map(|(_, t)| *t)
            .collect::<Vec<_>>()
    };
    let rate = |i: usize| truth.leaks[i].rate_l_per_h;
    let frac = |i: usize| truth.network_leaks[i].fraction;
    let leaks_by_class: BTreeMap<String, Detection> = LEAK_CLASSES
        .iter()
        .map(|(name, lo, hi)| {
            let d = detection(&pick(&leak_ttd, &|i| rate(i) >= *lo && rate(i) < *hi));
            ((*name).to_owned(), d)
        })
        .collect();
    let network_by_class: BTreeMap<String, Detection> = NETWORK_CLASSES
        .iter()
        .map(|(name, lo, hi)| {
            let d = detection(&pick(&net_ttd, &|i| frac(i) >= *lo && frac(i) < *hi));
            ((*name).to_owned(), d)
        })
        .collect();
    let leaks_20_plus = detection(&pick(&leak_ttd, &|i| rate(i) >= 20.0));
    let leaks_100_plus = detection(&pick(&leak_ttd, &|i| rate(i) >= 100.0));
    let leaks_on_top = detection(&pick(&leak_ttd, &|i| truth.leaks[i].on_top));
    let leaks_incipient = detection(&pick(&leak_ttd, &|i| {
        let l = &truth.leaks[i];
        l.growth == crate::truth::LeakGrowth::Growing && l.initial_rate_l_per_h <= 2.0
    }));
    let leak_free = truth.customer_meters as usize
        - truth
            .leaks
            .iter()
            .map(|l| &l.meter)
            .collect::<std::collections::HashSet<_>>()
            .len();
    let first_14d = if leak_free > 0 {
        alerted_first_14d.len() as f64 / leak_free as f64
    } else {
        0.0
    };
    let leaks_all = detection(&leak_ttd);
    let network_1pct_plus = detection(&pick(&net_ttd, &|i| frac(i) >= 0.01 - 1e-9));

    for (kind, first) in &leak_first_by_kind {
        let s = kinds.entry(kind.as_str().to_owned()).or_default();
        s.detection = Some(detection(&ttd(first, &leak_start)));
    }
    for (kind, first) in &net_first_by_kind {
        let s = kinds.entry(kind.as_str().to_owned()).or_default();
        s.detection = Some(detection(&ttd(first, &net_start)));
    }
    // Faults: recall per kind.
    let mut fault_totals: HashMap<AlertKind, std::collections::HashSet<(MeterId, Timestamp)>> =
        HashMap::new();
    for f in &truth.faults {
        if let Some(k) = fault_alert_kind(f.kind) {
            fault_totals
                .entry(k)
                .or_default()
                .insert((f.meter.clone(), f.start));
        }
    }
    for (kind, all) in &fault_totals {
        let found = faults_found.get(kind).map_or(0, |s| s.len());
        let s = kinds.entry(kind.as_str().to_owned()).or_default();
        s.detection = Some(Detection {
            leaks: all.len(),
            detected: found,
            detected_7d: found,
            recall: found as f64 / all.len().max(1) as f64,
            recall_7d: found as f64 / all.len().max(1) as f64,
            recall_7d_ci95: clopper_pearson(found, all.len()),
            ttd_median_h: None,
            ttd_p95_h: None,
            ttd_max_h: None,
        });
    }
    for s in kinds.values_mut() {
        s.precision = (s.alerts > 0).then(|| s.true_alerts as f64 / s.alerts as f64);
        s.false_alarms_per_1000_meter_days = per_1000(s.false_alarms);
    }

    let fa = per_1000(leak_false);
    let small: &Detection = &leaks_by_class["5-20 L/h"];
    let targets = vec![
        Target {
            name: "behind-the-meter leaks >= 20 L/h: recall".into(),
            value: Some(leaks_20_plus.recall),
            goal: ">= 0.97".into(),
            met: leaks_20_plus.leaks > 0 && leaks_20_plus.recall >= 0.97,
        },
        Target {
            name: "behind-the-meter leaks >= 20 L/h: median time to detect (h)".into(),
            value: leaks_20_plus.ttd_median_h,
            goal: "<= 24".into(),
            met: leaks_20_plus.ttd_median_h.is_some_and(|h| h <= 24.0),
        },
        Target {
            name: "leaks >= 100 L/h: median time to detect (h)".into(),
            value: leaks_100_plus.ttd_median_h,
            goal: "<= 12".into(),
            met: leaks_100_plus.ttd_median_h.is_some_and(|h| h <= 12.0),
        },
        Target {
            name: "leaks >= 100 L/h: all found, none later than 48 h (longest, h)".into(),
            value: leaks_100_plus.ttd_max_h,
            goal: "<= 48".into(),
            met: leaks_100_plus.detected == leaks_100_plus.leaks
                && leaks_100_plus.ttd_max_h.is_some_and(|h| h <= 48.0),
        },
        Target {
            name: "leaks 5-20 L/h: recall within 7 days".into(),
            value: Some(small.recall_7d),
            goal: ">= 0.85".into(),
            met: small.leaks > 0 && small.recall_7d >= 0.85,
        },
        Target {
            name: "network leaks >= 1 % of inflow: share detected within 7 days".into(),
            value: Some(network_1pct_plus.recall_7d),
            goal: "= 1.00".into(),
            met: network_1pct_plus.leaks > 0
                && network_1pct_plus.detected_7d == network_1pct_plus.leaks,
        },
        Target {
            name: "false alarms (leak kinds) per 1,000 meter-days".into(),
            value: Some(fa),
            goal: "<= 0.05".into(),
            met: fa <= 0.05,
        },
        Target {
            name: "leak-free meters with a leak-kind alert in their first 14 days".into(),
            value: Some(first_14d),
            goal: "<= 0.01".into(),
            met: first_14d <= 0.01,
        },
    ];

    Report {
        seed: truth.scenario.seed,
        customer_meters: truth.customer_meters,
        days,
        warmup_days,
        meter_days,
        leaks_by_class,
        leaks_20_plus,
        leaks_100_plus,
        leaks_on_top,
        leaks_incipient,
        leaks_all,
        network_by_class,
        network_1pct_plus,
        kinds,
        leak_false_alarms: leak_false,
        leak_false_alarms_per_1000_meter_days: fa,
        false_alarms_by_usage_change: false_by_usage,
        leak_free_alerted_first_14d: first_14d,
        targets,
    }
}

fn pct(x: f64) -> String {
    format!("{:.1} %", x * 100.0)
}

fn opt_h(x: Option<f64>) -> String {
    x.map_or_else(|| "-".into(), |h| format!("{h:.0} h"))
}

fn detection_row(out: &mut String, name: &str, d: &Detection) {
    let _ = writeln!(
        out,
        "  {name:<28} {:>5} {:>8} {:>9} {:>9} {:>13} {:>10} {:>8}",
        d.leaks,
        d.detected,
        pct(d.recall),
        pct(d.recall_7d),
        format!(
            "{:.0}-{:.0} %",
            d.recall_7d_ci95.0 * 100.0,
            d.recall_7d_ci95.1 * 100.0
        ),
        opt_h(d.ttd_median_h),
        opt_h(d.ttd_p95_h),
    );
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "seed {}: {} customer meters over {:.0} days; false-alarm rates over the {:.0} meter-days after a {:.0}-day warm-up",
            self.seed, self.customer_meters, self.days, self.meter_days, self.warmup_days
        );
        let _ = writeln!(out, "\nbehind-the-meter leaks (any leak kind)");
        let _ = writeln!(
            out,
            "  {:<28} {:>5} {:>8} {:>9} {:>9} {:>13} {:>10} {:>8}",
            "class", "leaks", "found", "recall", "recall7d", "7d 95% CI", "TTD p50", "TTD p95"
        );
        for (name, d) in &self.leaks_by_class {
            detection_row(&mut out, name, d);
        }
        detection_row(&mut out, ">= 20 L/h", &self.leaks_20_plus);
        detection_row(&mut out, ">= 100 L/h", &self.leaks_100_plus);
        detection_row(&mut out, "incipient (from 1-2 L/h)", &self.leaks_incipient);
        detection_row(&mut out, "on top of an earlier leak", &self.leaks_on_top);
        detection_row(&mut out, "all", &self.leaks_all);
        let _ = writeln!(
            out,
            "  longest time to detect of leaks >= 100 L/h: {}",
            opt_h(self.leaks_100_plus.ttd_max_h)
        );
        let _ = writeln!(out, "\nnetwork leaks (district kinds)");
        for (name, d) in &self.network_by_class {
            detection_row(&mut out, name, d);
        }
        detection_row(&mut out, ">= 1 %", &self.network_1pct_plus);
        let _ = writeln!(out, "\nper alert kind");
        let _ = writeln!(
            out,
            "  {:<20} {:>7} {:>6} {:>6} {:>9} {:>10} {:>7} {:>8} {:>9}",
            "kind",
            "alerts",
            "true",
            "false",
            "precision",
            "FA/1000md",
            "finds",
            "recall",
            "TTD p50"
        );
        for (kind, s) in &self.kinds {
            let (finds, recall, ttd) = match &s.detection {
                Some(d) => (
                    format!("{}/{}", d.detected, d.leaks),
                    pct(d.recall),
                    opt_h(d.ttd_median_h),
                ),
                None => ("-".into(), "-".into(), "-".into()),
            };
            let _ = writeln!(
                out,
                "  {kind:<20} {:>7} {:>6} {:>6} {:>9} {:>10.3} {:>7} {:>8} {:>9}",
                s.alerts,
                s.true_alerts,
                s.false_alarms,
                s.precision.map_or_else(|| "-".into(), pct),
                s.false_alarms_per_1000_meter_days,
                finds,
                recall,
                ttd,
            );
        }
        let _ = writeln!(
            out,
            "\nfalse alarms of leak kinds: {} ({:.3} per 1,000 meter-days); on meters after a usage change: {:?}",
            self.leak_false_alarms,
            self.leak_false_alarms_per_1000_meter_days,
            self.false_alarms_by_usage_change
        );
        let _ = writeln!(
            out,
            "leak-free meters with a leak-kind alert in their first 14 days: {}",
            pct(self.leak_free_alerted_first_14d)
        );
        for (kind, s) in &self.kinds {
            if s.false_alarms + s.warmup_false_alarms == 0 {
                continue;
            }
            let by: Vec<String> = s
                .false_by_class
                .iter()
                .map(|(c, n)| format!("{c} {n}"))
                .collect();
            let _ = writeln!(
                out,
                "  {kind:<20} after warm-up: {} ({}); during warm-up: {}",
                s.false_alarms,
                if by.is_empty() {
                    "-".into()
                } else {
                    by.join(", ")
                },
                s.warmup_false_alarms
            );
        }
        let _ = writeln!(out, "\ntargets");
        for t in &self.targets {
            let _ = writeln!(
                out,
                "  [{}] {}: {} (goal {})",
                if t.met { "met" } else { "MISSED" },
                t.name,
                t.value.map_or_else(|| "-".into(), |v| format!("{v:.3}")),
                t.goal
            );
        }
        f.write_str(&out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::truth::{FaultTruth, LeakGrowth, LeakTruth, NetworkLeakTruth};
    use crate::{Fleet, FleetConfig, HomeClass};

    fn day(d: i64) -> Timestamp {
        chrono::TimeZone::with_ymd_and_hms(&chrono::Utc, 2026, 10, 1, 0, 0, 0).unwrap()
            + TimeDelta::days(d)
    }

    fn mid(s: &str) -> MeterId {
        MeterId::parse(s).unwrap()
    }

    fn did(s: &str) -> DistrictId {
        DistrictId::parse(s).unwrap()
    }

    /// 100 customer meters over 100 days; two leaks, one network leak, one tamper.
    fn truth() -> Truth {
        let mut t = Fleet::generate(&FleetConfig {
            districts: 1,
            meters_per_district: 100,
            leaks: 0,
            start: day(0),
            hours: Some(100 * 24),
            ..FleetConfig::default()
        })
        .truth()
        .clone();
        let leak = |m: &str, start: Timestamp, rate: f64| LeakTruth {
            meter: mid(m),
            district: did("D01"),
            start,
            rate_l_per_h: rate,
            class_of_home: HomeClass::Setback,
            initial_rate_l_per_h: rate,
            growth: LeakGrowth::Abrupt,
            ramp_h: 0,
            on_top: false,
        };
        t.leaks = vec![leak("L1", day(20), 10.0), leak("L2", day(30), 100.0)];
        t.network_leaks = vec![NetworkLeakTruth {
            district: did("D01"),
            start: day(40),
            fraction: 0.015,
            repaired: None,
        }];
        t.faults = vec![FaultTruth {
            meter: mid("F1"),
            district: did("D01"),
            kind: FaultKind::Tamper,
            start: day(50),
            end: day(50),
            litres: None,
            offset_h: None,
            backlog: None,
            battery: None,
        }];
        t
    }

    fn alert(kind: AlertKind, subject: &str, at: Timestamp) -> AlertView {
        let district = kind.is_district();
        AlertView {
            kind,
            meter_id: (!district).then(|| mid(subject)),
            district_id: district.then(|| did(subject)),
            detected_at: at,
        }
    }

    #[test]
    fn alerts_are_matched_to_the_truth_as_documented() {
        let t = truth();
        let h = |d: i64, hours: i64| day(d) + TimeDelta::hours(hours);
        let alerts = vec![
            // L1 found by night flow after 10 days (outside 7 d), by continuous flow
            // never; L2 found after 30 h by continuous flow.
            alert(AlertKind::NightFlowRise, "L1", h(30, 0)),
            alert(AlertKind::ContinuousFlow, "L2", h(31, 6)),
            // Before L2 began: a false alarm.
            alert(AlertKind::ContinuousFlow, "L2", h(25, 0)),
            // Another meter, after the warm-up: false; during it: apart.
            alert(AlertKind::ContinuousFlow, "X1", h(60, 0)),
            alert(AlertKind::ContinuousFlow, "X2", h(3, 0)),
            // The network leak, after 2 days.
            alert(AlertKind::DistrictBalance, "D01", h(42, 0)),
            // The tamper fault, within 72 h of its end; and one on another meter.
            alert(AlertKind::Tamper, "F1", h(52, 0)),
            alert(AlertKind::Tamper, "F2", h(52, 0)),
        ];
        let r = score(&t, &alerts, 14.0);
        assert_eq!(r.days, 100.0);
        assert_eq!(r.meter_days, 100.0 * 86.0);
        let small = &r.leaks_by_class["5-20 L/h"];
        assert_eq!((small.leaks, small.detected, small.detected_7d), (1, 1, 0));
        assert_eq!(small.ttd_median_h, Some(240.0));
        let mid_class = &r.leaks_by_class["50-200 L/h"];
        assert_eq!(mid_class.ttd_median_h, Some(30.0));
        assert_eq!(r.leaks_20_plus.recall, 1.0);
        assert_eq!(r.network_1pct_plus.detected_7d, 1);
        assert_eq!(r.network_1pct_plus.ttd_median_h, Some(48.0));
        let cf = &r.kinds["continuous_flow"];
        assert_eq!((cf.alerts, cf.true_alerts, cf.false_alarms), (4, 1, 2));
        assert_eq!(cf.warmup_false_alarms, 1);
        assert_eq!(cf.precision, Some(0.25));
        assert_eq!(cf.detection.as_ref().unwrap().detected, 1);
        let tamper = &r.kinds["tamper"];
        assert_eq!((tamper.true_alerts, tamper.false_alarms), (1, 1));
        assert_eq!(tamper.detection.as_ref().unwrap().recall, 1.0);
        // Leak kinds only: two continuous-flow false alarms after the warm-up.
        assert_eq!(r.leak_false_alarms, 2);
        assert!((r.leak_false_alarms_per_1000_meter_days - 2.0 * 1000.0 / 8600.0).abs() < 1e-9);
        let text = r.to_string();
        assert!(text.contains("[MISSED] leaks 5-20 L/h"), "{text}");
        assert!(text.contains("[met] network leaks"), "{text}");
    }

    #[test]
    fn confidence_intervals_are_exact() {
        let (lo, hi) = clopper_pearson(18, 26);
        // R: binom.test(18, 26)$conf.int = 0.4821 0.8567
        assert!(
            (lo - 0.4821).abs() < 1e-3 && (hi - 0.8567).abs() < 1e-3,
            "{lo} {hi}"
        );
        assert_eq!(clopper_pearson(0, 0), (0.0, 1.0));
        assert_eq!(clopper_pearson(5, 5).1, 1.0);
        assert_eq!(clopper_pearson(0, 5).0, 0.0);
    }
}
