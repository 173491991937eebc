//! Consumption in time buckets from the hourly rollup, and bar/line charts of such
//! series as SVG drawn on the server (the meter and district pages). Pure functions.
//!
//! A meter that pushes every few hours leaves hours without a row: its index is
//! interpolated linearly between the readings the rollup keeps (each hour's first and
//! last), so the gas used between two pushes is spread over the hours between them
//! rather than lost, and buckets outside the meter's readings are unknown (`None`),
//! not zero.

use chrono::Duration;
use leakwatch_core::Timestamp;
use leakwatch_store::HourlyRow;
use std::fmt::Write;

/// The meter's index at `t`, interpolated between the known (time, index) points
/// (sorted by time); `None` outside them.
fn index_at(points: &[(Timestamp, f64)], t: Timestamp) -> Option<f64> {
    let first = points.first()?;
    let last = points.last()?;
    if t < first.0 || t > last.0 {
        return None;
    }
    let i = points.partition_point(|p| p.0 <= t);
    if i == 0 {
        return Some(first.1);
    }
    let a = points[i - 1];
    if a.0 == t || i == points.len() {
        return Some(a.1);
    }
    let b = points[i];
    let span = (b.0 - a.0).num_milliseconds() as f64;
    let frac = (t - a.0).num_milliseconds() as f64 / span.max(1.0);
    Some(a.1 + (b.1 - a.1) * frac)
}

/// The gas used (m³) in each bucket of `bucket` from `from` (inclusive) to `to`:
/// the interpolated index at the bucket's end minus at its start, both clipped to the
/// meter's readings; `None` for a bucket the readings do not reach. A counter that
/// went backwards (a meter replaced) counts as nothing used.
pub fn consumption(
    rows: &[HourlyRow],
    from: Timestamp,
    to: Timestamp,
    bucket: Duration,
) -> Vec<(Timestamp, Option<f64>)> {
    let mut points: Vec<(Timestamp, f64)> = Vec::with_capacity(rows.len() * 2);
    for r in rows {
        points.push((r.first_t, r.first_vol));
        if r.last_t > r.first_t {
            points.push((r.last_t, r.last_vol));
        }
    }
    points.sort_by_key(|p| p.0);
    let (lo, hi) = match (points.first(), points.last()) {
        (Some(a), Some(b)) => (a.0, b.0),
        _ => (to, from),
    };
    let mut out = Vec::new();
    let mut t = from;
    while t < to && bucket > Duration::zero() {
        let end = (t + bucket).min(to);
        let (a, b) = (t.max(lo), end.min(hi));
        let v = if a < b {
            match (index_at(&points, a), index_at(&points, b)) {
                (Some(x), Some(y)) => Some((y - x).max(0.0)),
                _ => None,
            }
        } else {
            None
        };
        out.push((t, v));
        t = end;
    }
    out
}

/// Adds series bucket by bucket; a bucket is known when every series knows it.
/// Returns the sums and, per bucket, how many series knew it.
pub fn sum(series: &[Vec<(Timestamp, Option<f64>)>]) -> Vec<(Timestamp, Option<f64>, usize)> {
    let Some(first) = series.first() else {
        return Vec::new();
    };
    first
        .iter()
        .enumerate()
        .map(|(i, (t, _))| {
            let known: Vec<f64> = series.iter().filter_map(|s| s.get(i)?.1).collect();
            let total = (known.len() == series.len()).then(|| known.iter().sum::<f64>());
            (*t, total, known.len())
        })
        .collect()
}

/// Groups hourly buckets into buckets of `hours` (e.g. 24 for days): a group is
/// known when all its hours are.
pub fn regroup(hourly: &[(Timestamp, Option<f64>)], hours: usize) -> Vec<(Timestamp, Option<f64>)> {
    hourly
        .chunks(hours.max(1))
        .map(|c| {
            let all: Option<Vec<f64>> = c.iter().map(|p| p.1).collect();
            (c[0].0, all.map(|v| v.iter().sum::<f64>()))
        })
        .collect()
}

/// Unaccounted-for gas in % of the inflow: `(inflow - customers) / inflow`, per
/// bucket where both are known and gas flowed in.
pub fn ufg_percent(
    inflow: &[(Timestamp, Option<f64>)],
    customers: &[(Timestamp, Option<f64>)],
) -> Vec<(Timestamp, Option<f64>)> {
    inflow
        .iter()
        .zip(customers)
        .map(|((t, i), (_, c))| {
            let v = match (i, c) {
                (Some(i), Some(c)) if *i > 0.0 => Some((i - c) / i * 100.0),
                _ => None,
            };
            (*t, v)
        })
        .collect()
}

/// How a series is drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    Bars,
    Line,
}

/// A series of buckets to draw.
#[derive(Debug, Clone)]
pub struct Series<'a> {
    pub name: &'a str,
    /// The CSS class of its marks (`bar`, `line-customers`...).
    pub class: &'a str,
    pub style: Style,
    pub points: &'a [(Timestamp, Option<f64>)],
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A chart of `series` over buckets of `bucket` as an SVG element with `id`; `label`
/// formats a bucket's start for the axis and the tooltips. Unknown buckets are gaps.
pub fn chart_svg(
    id: &str,
    series: &[Series<'_>],
    bucket: Duration,
    unit: &str,
    label: impl Fn(Timestamp) -> String,
) -> String {
    let (w, h, left, bottom, top, right) = (760.0, 240.0, 52.0, 28.0, 12.0, 12.0);
    let mut s = String::new();
    let _ = write!(
        s,
        "<svg class=\"chart\" id=\"{}\" viewBox=\"0 0 {w} {h}\" role=\"img\" aria-label=\"{}\" \
         xmlns=\"http://www.w3.org/2000/svg\">",
        esc(id),
        esc(&series.iter().map(|x| x.name).collect::<Vec<_>>().join(", "))
    );
    let all = || series.iter().flat_map(|x| x.points.iter());
    let known: Vec<f64> = all().filter_map(|p| p.1).collect();
    let (Some(t0), Some(tn)) = (
        all().map(|p| p.0).min(),
        all().map(|p| p.0).max().map(|t| t + bucket),
    ) else {
        let _ = write!(
            s,
            "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">No readings in this period</text></svg>",
            w / 2.0,
            h / 2.0
        );
        return s;
    };
    if known.is_empty() {
        let _ = write!(
            s,
            "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">No readings in this period</text></svg>",
            w / 2.0,
            h / 2.0
        );
        return s;
    }
    let ymax = known.iter().copied().fold(0.0_f64, f64::max);
    let ymin = known.iter().copied().fold(0.0_f64, f64::min);
    let (ymin, ymax) = if ymax - ymin < 1e-9 {
        (ymin, ymin + 1.0)
    } else {
        (ymin * 1.1, ymax * 1.1)
    };
    let pw = w - left - right;
    let ph = h - top - bottom;
    let span = (tn - t0).num_seconds().max(1) as f64;
    let x = |t: Timestamp| left + pw * ((t - t0).num_seconds() as f64 / span);
    let y = |v: f64| top + ph * (1.0 - (v - ymin) / (ymax - ymin));
    for i in 0..=4 {
        let v = ymin + (ymax - ymin) / 1.1 * f64::from(i) / 4.0;
        let _ = write!(
            s,
            "<text class=\"tick\" x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
            left - 4.0,
            y(v) + 4.0,
            tick(v)
        );
    }
    let _ = write!(
        s,
        "<line class=\"axis\" x1=\"{left}\" y1=\"{y0:.1}\" x2=\"{}\" y2=\"{y0:.1}\"/>",
        left + pw,
        y0 = y(0.0)
    );
    let bw_full = pw * bucket.num_seconds() as f64 / span;
    let bars: Vec<&Series> = series.iter().filter(|x| x.style == Style::Bars).collect();
    let bw = (bw_full / bars.len().max(1) as f64 - 1.0).max(0.5);
    for (k, b) in bars.iter().enumerate() {
        for (t, v) in b.points {
            if let Some(v) = v {
                let (ya, yb) = (y(v.max(0.0)), y(v.min(0.0)));
                let _ = write!(
                    s,
                    "<rect class=\"{}\" x=\"{:.1}\" y=\"{ya:.1}\" width=\"{bw:.1}\" height=\"{:.1}\"><title>{} {}: {v:.3} {}</title></rect>",
                    esc(b.class),
                    x(*t) + k as f64 * (bw + 1.0),
                    (yb - ya).max(0.0),
                    esc(b.name),
                    esc(&label(*t)),
                    esc(unit)
                );
            }
        }
    }
    for l in series.iter().filter(|x| x.style == Style::Line) {
        // One polyline per run of known buckets, through the buckets' middles.
        let mut run: Vec<String> = Vec::new();
        let flush = |run: &mut Vec<String>, s: &mut String| {
            if run.len() == 1 {
                let _ = write!(
                    s,
                    "<circle class=\"{}\" r=\"2\" cx=\"{}\"/>",
                    esc(l.class),
                    run[0].replace(',', "\" cy=\"")
                );
            } else if run.len() > 1 {
                let _ = write!(
                    s,
                    "<polyline class=\"{}\" fill=\"none\" points=\"{}\"><title>{}</title></polyline>",
                    esc(l.class),
                    run.join(" "),
                    esc(l.name)
                );
            }
            run.clear();
        };
        for (t, v) in l.points {
            match v {
                Some(v) => run.push(format!("{:.1},{:.1}", x(*t) + bw_full / 2.0, y(*v))),
                None => flush(&mut run, &mut s),
            }
        }
        flush(&mut run, &mut s);
    }
    let n = series.first().map(|x| x.points.len()).unwrap_or(0);
    let step = (n / 6).max(1);
    if let Some(first) = series.first() {
        for (t, _) in first.points.iter().step_by(step) {
            let _ = write!(
                s,
                "<text class=\"tick\" x=\"{:.1}\" y=\"{}\">{}</text>",
                x(*t),
                h - 8.0,
                esc(&label(*t))
            );
        }
    }
    s.push_str("</svg>");
    s
}

fn tick(v: f64) -> String {
    if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else if v.abs() >= 1.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use leakwatch_core::MeterId;

    fn at(h: i64) -> Timestamp {
        chrono::DateTime::from_timestamp(h * 3600, 0).unwrap()
    }

    /// A row holding one reading at hour `h` + `min` minutes.
    fn one(h: i64, min: i64, vol: f64) -> HourlyRow {
        let t = at(h) + Duration::minutes(min);
        HourlyRow {
            meter_id: MeterId::parse("M-1").unwrap(),
            hour: at(h),
            first_t: t,
            first_vol: vol,
            last_t: t,
            last_vol: vol,
            n: 1,
        }
    }

    #[test]
    fn gas_between_sparse_pushes_is_spread_over_the_hours_between() {
        // Pushes at 00:00 (100 m³) and 06:00 (106 m³): 1 m³ in each hour between.
        let rows = [one(0, 0, 100.0), one(6, 0, 106.0)];
        let c = consumption(&rows, at(0), at(8), Duration::hours(1));
        assert_eq!(c.len(), 8);
        let v: Vec<Option<f64>> = c
            .iter()
            .map(|p| p.1.map(|x| (x * 1e6).round() / 1e6))
            .collect();
        assert_eq!(
            v,
            vec![
                Some(1.0),
                Some(1.0),
                Some(1.0),
                Some(1.0),
                Some(1.0),
                Some(1.0),
                None,
                None
            ]
        );
        // Days: the whole day's 6 m³ in one bucket (the readings end at 06:00).
        let d = consumption(&rows, at(0), at(24), Duration::hours(24));
        assert_eq!(d.len(), 1);
        assert!((d[0].1.unwrap() - 6.0).abs() < 1e-9);
        // Before the first reading: unknown, not zero.
        let before = consumption(&rows, at(-3), at(0), Duration::hours(1));
        assert!(before.iter().all(|p| p.1.is_none()));
    }

    #[test]
    fn a_counter_going_back_counts_as_nothing_used() {
        let rows = [one(0, 0, 100.0), one(1, 0, 5.0)];
        let c = consumption(&rows, at(0), at(1), Duration::hours(1));
        assert_eq!(c[0].1, Some(0.0));
        assert!(
            consumption(&[], at(0), at(2), Duration::hours(1))
                .iter()
                .all(|p| p.1.is_none())
        );
    }

    #[test]
    fn sums_ufg_and_days() {
        let a = vec![(at(0), Some(1.0)), (at(1), Some(2.0)), (at(2), None)];
        let b = vec![(at(0), Some(0.5)), (at(1), None), (at(2), Some(1.0))];
        let s = sum(&[a.clone(), b]);
        assert_eq!(s[0], (at(0), Some(1.5), 2));
        assert_eq!(s[1], (at(1), None, 1));
        let inflow = vec![(at(0), Some(10.0)), (at(1), Some(0.0)), (at(2), Some(4.0))];
        let cust = vec![(at(0), Some(9.0)), (at(1), Some(0.0)), (at(2), None)];
        let u = ufg_percent(&inflow, &cust);
        assert!((u[0].1.unwrap() - 10.0).abs() < 1e-9);
        assert_eq!((u[1].1, u[2].1), (None, None));
        let days = regroup(&a, 2);
        assert_eq!(days, vec![(at(0), Some(3.0)), (at(2), None)]);
    }

    #[test]
    fn the_chart_draws_bars_lines_and_gaps() {
        let bars = vec![(at(0), Some(1.0)), (at(1), None), (at(2), Some(3.0))];
        let line = vec![(at(0), Some(0.5)), (at(1), Some(0.7)), (at(2), None)];
        let svg = chart_svg(
            "c",
            &[
                Series {
                    name: "inflow",
                    class: "bar",
                    style: Style::Bars,
                    points: &bars,
                },
                Series {
                    name: "customers",
                    class: "line-customers",
                    style: Style::Line,
                    points: &line,
                },
            ],
            Duration::hours(1),
            "m³",
            |t| t.format("%H:%M").to_string(),
        );
        assert_eq!(svg.matches("<rect class=\"bar\"").count(), 2);
        assert_eq!(svg.matches("<polyline class=\"line-customers\"").count(), 1);
        assert!(svg.contains("inflow 02:00: 3.000 m³"));
        let negative = vec![(at(0), Some(-5.0)), (at(1), Some(5.0))];
        let svg = chart_svg(
            "u",
            &[Series {
                name: "ufg",
                class: "bar",
                style: Style::Bars,
                points: &negative,
            }],
            Duration::hours(1),
            "%",
            |t| t.to_string(),
        );
        assert!(svg.contains("-5.000 %"));
        let empty = chart_svg("e", &[], Duration::hours(1), "m³", |t| t.to_string());
        assert!(empty.contains("No readings"));
    }
}
