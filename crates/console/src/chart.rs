//! Charts as SVG drawn on the server: hourly consumption bars with the detector's
//! expectation and threshold as lines, the evidence window shaded and the moment
//! of detection marked. Pure functions of their input.

use leakwatch_core::Timestamp;
use leakwatch_store::HourlyRow;
use std::fmt::Write;

/// Hourly consumption (m³ per hour) from the hourly rollup: the index difference
/// between the last readings of consecutive hours (an hour's own first-to-last
/// difference when the hour before is missing). Consumption, not the raw index.
pub fn hourly_consumption(rows: &[HourlyRow]) -> Vec<(Timestamp, f64)> {
    let mut out = Vec::with_capacity(rows.len());
    let mut prev: Option<&HourlyRow> = None;
    for r in rows {
        let used = match prev {
            Some(p) if r.hour - p.hour == chrono::Duration::hours(1) => r.last_vol - p.last_vol,
            _ => r.last_vol - r.first_vol,
        };
        out.push((r.hour, used.max(0.0)));
        prev = Some(r);
    }
    out
}

/// What to draw over the bars.
#[derive(Debug, Clone, Default)]
pub struct Marks {
    /// What the detector expected, in m³/h (only when its unit is per hour).
    pub expected: Option<f64>,
    /// The threshold it judged against, in m³/h.
    pub threshold: Option<f64>,
    pub detected_at: Option<Timestamp>,
    pub window: Option<(Timestamp, Timestamp)>,
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// The chart as an SVG element; `label` formats an hour for the axis.
pub fn consumption_svg(
    series: &[(Timestamp, f64)],
    marks: &Marks,
    label: impl Fn(Timestamp) -> String,
) -> String {
    let (w, h, left, bottom, top, right) = (760.0, 260.0, 48.0, 28.0, 12.0, 12.0);
    let mut s = String::new();
    let _ = write!(
        s,
        "<svg class=\"chart\" id=\"consumption-chart\" viewBox=\"0 0 {w} {h}\" role=\"img\" \
         aria-label=\"hourly consumption\" xmlns=\"http://www.w3.org/2000/svg\">"
    );
    if series.is_empty() {
        let _ = write!(
            s,
            "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">No readings in this period</text></svg>",
            w / 2.0,
            h / 2.0
        );
        return s;
    }
    let t0 = series[0].0;
    let t1 = series[series.len() - 1].0 + chrono::Duration::hours(1);
    let span = (t1 - t0).num_seconds().max(3600) as f64;
    let ymax = series
        .iter()
        .map(|p| p.1)
        .chain(marks.expected)
        .chain(marks.threshold)
        .fold(0.0_f64, f64::max)
        .max(0.001)
        * 1.15;
    let pw = w - left - right;
    let ph = h - top - bottom;
    let x = |t: Timestamp| left + pw * ((t - t0).num_seconds() as f64 / span);
    let y = |v: f64| top + ph * (1.0 - v / ymax);
    // The evidence window.
    if let Some((a, b)) = marks.window {
        let (xa, xb) = (x(a.max(t0)), x(b.min(t1)));
        if xb > xa {
            let _ = write!(
                s,
                "<rect class=\"window\" x=\"{xa:.1}\" y=\"{top}\" width=\"{:.1}\" height=\"{ph}\"><title>evidence window</title></rect>",
                xb - xa
            );
        }
    }
    // Axes and y ticks.
    let _ = write!(
        s,
        "<line class=\"axis\" x1=\"{left}\" y1=\"{}\" x2=\"{}\" y2=\"{}\"/>",
        top + ph,
        left + pw,
        top + ph
    );
    for i in 0..=4 {
        let v = ymax / 1.15 * f64::from(i) / 4.0;
        let _ = write!(
            s,
            "<text class=\"tick\" x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{v:.2}</text>",
            left - 4.0,
            y(v) + 4.0
        );
    }
    // Bars.
    let bw = (pw * 3600.0 / span - 1.0).max(1.0);
    for (t, v) in series {
        let _ = write!(
            s,
            "<rect class=\"bar\" x=\"{:.1}\" y=\"{:.1}\" width=\"{bw:.1}\" height=\"{:.1}\"><title>{} {v:.3} m³</title></rect>",
            x(*t),
            y(*v),
            (top + ph - y(*v)).max(0.0),
            esc(&label(*t))
        );
    }
    // x labels: about six.
    let step = (series.len() / 6).max(1);
    for (t, _) in series.iter().step_by(step) {
        let _ = write!(
            s,
            "<text class=\"tick\" x=\"{:.1}\" y=\"{}\">{}</text>",
            x(*t),
            h - 8.0,
            esc(&label(*t))
        );
    }
    for (class, v, name) in [
        ("expected", marks.expected, "expected"),
        ("threshold", marks.threshold, "threshold"),
    ] {
        if let Some(v) = v {
            let _ = write!(
                s,
                "<line class=\"{class}\" x1=\"{left}\" y1=\"{yv:.1}\" x2=\"{}\" y2=\"{yv:.1}\"/>\
                 <text class=\"{class}-label\" x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{name} {v:.3} m³/h</text>",
                left + pw,
                left + pw - 2.0,
                y(v) - 3.0,
                yv = y(v)
            );
        }
    }
    if let Some(d) = marks.detected_at
        && d >= t0
        && d <= t1
    {
        let xd = x(d);
        let _ = write!(
            s,
            "<line class=\"detected\" id=\"detected-marker\" x1=\"{xd:.1}\" y1=\"{top}\" x2=\"{xd:.1}\" y2=\"{}\"/>\
             <text class=\"detected-label\" x=\"{:.1}\" y=\"{}\">detected {}</text>",
            top + ph,
            xd + 3.0,
            top + 10.0,
            esc(&label(d))
        );
    }
    s.push_str("</svg>");
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use leakwatch_core::MeterId;

    fn row(h: i64, first: f64, last: f64) -> HourlyRow {
        let hour = chrono::DateTime::from_timestamp(h * 3600, 0).unwrap();
        HourlyRow {
            meter_id: MeterId::parse("M-1").unwrap(),
            hour,
            first_t: hour,
            first_vol: first,
            last_t: hour,
            last_vol: last,
            n: 4,
        }
    }

    #[test]
    fn consumption_is_the_difference_of_the_index_between_hours() {
        let c = hourly_consumption(&[
            row(10, 100.0, 100.5),
            row(11, 100.7, 101.0),
            row(13, 102.0, 102.2),
        ]);
        let v: Vec<f64> = c.iter().map(|p| (p.1 * 1000.0).round() / 1000.0).collect();
        // hour 11 takes 100.5 -> 101.0; hour 13 has no hour before it: its own span.
        assert_eq!(v, vec![0.5, 0.5, 0.2]);
    }

    #[test]
    fn the_chart_marks_detection_and_lines() {
        let series = hourly_consumption(&[row(10, 0.0, 1.0), row(11, 1.0, 3.0), row(12, 3.0, 4.0)]);
        let svg = consumption_svg(
            &series,
            &Marks {
                expected: Some(0.2),
                threshold: Some(0.8),
                detected_at: Some(chrono::DateTime::from_timestamp(11 * 3600 + 1800, 0).unwrap()),
                window: None,
            },
            |t| t.format("%H:%M").to_string(),
        );
        assert_eq!(svg.matches("class=\"bar\"").count(), 3);
        assert!(svg.contains("id=\"detected-marker\""));
        assert!(svg.contains("threshold 0.800 m³/h"));
        assert!(svg.contains("expected 0.200 m³/h"));
        let empty = consumption_svg(&[], &Marks::default(), |t| t.to_string());
        assert!(empty.contains("No readings"));
    }
}
