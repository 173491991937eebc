//! The balance's daily judgement: a one-sided tabular CUSUM on how far each day's
//! unaccounted-for gas (UFG) is above what the district's own recent days predict.
//!
//! **The model.** UFG in an hour is `a + b × inflow`: `b` is what scales with the flow
//! (meter errors, losses that follow throughput), `a` what does not (background
//! leakage; a new leak adds to `a`). Both are fitted by weighted least squares
//! (weights `1 / inflow`, as the noise of an hour grows with its flow) on every closed
//! hour of the last `window` accepted days; the low-flow night hours are what pins `a`
//! down. A day's *excess* is its UFG fraction minus the model's prediction for the
//! day's own inflow: `x = (U − a·hours − b·I) / I`. A cold snap that doubles inflow
//! changes neither, whichever kind of loss the district has, while a leak of `L` m³/h
//! shows as `L / mean hourly inflow`.
//!
//! **The CUSUM.** `z = (x − centre) / σ`, with the centre and σ of the accepted days'
//! excesses taken robustly (median, 1.4826 × MAD; days beyond `clip` σ are also left
//! out of the fit) and σ at least a long-run σ (EW over about two months: UFG wanders for weeks, e.g. while a
//! meter is silent with an old profile, which a quiet fortnight's σ does not show) and
//! a floor; `|z|` is clipped at `clip` (one wild day, a big consumer imputed on an
//! unusual day, cannot raise an alarm alone); `S = max(0, S + z − k)` with the
//! allowance `k` at least half the smallest leak to find (`k_floor / σ`); `S > h` is an
//! alarm. A day that is partly imputed is less certain: its σ grows, in quadrature,
//! by `imputed_error` × its imputed share of inflow (a meter silent for weeks is
//! imputed from a share that no longer follows the weather). Nothing is judged until
//! `window` days are accepted.
//!
//! **Flagged days stay out.** A day joins the baseline only once the run of `S > 0` it
//! belongs to has ended without an alarm; the days of a run that reaches the alarm are
//! dropped, so a leak that starts is not learned as normal. A run that stays above zero
//! longer than the window without an alarm hands its oldest days to the baseline, so a
//! slow sub-threshold drift is followed rather than flagged forever. Days beyond
//! `clip` σ are not learned either (unless the whole window's worth in a row are: the
//! level really moved). While alarmed, `S` is capped at `1.5 h`, so once the cause is
//! gone the alarm clears within a few days.

use serde::{Deserialize, Serialize};
use std::collections::VecDeque;

/// The CUSUM's settings, in σ units.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CusumParams {
    pub window: usize,
    /// Accepted days before the first judgement (at most `window`): the window fills
    /// up while judging.
    pub min_window: usize,
    pub k: f64,
    pub h: f64,
    pub sigma_floor: f64,
    pub clip: f64,
    /// Least allowance, as a fraction of inflow: half the smallest leak to find, so
    /// that a bias of a tenth of a point (a baseline learned in a quiet fortnight)
    /// does not add up over weeks into an alarm.
    pub k_floor: f64,
    /// Relative error assumed of imputed use: a day's σ grows by this times its
    /// imputed share of inflow (in quadrature).
    pub imputed_error: f64,
}

/// Memory of the long-run variance, days.
const LONG_DAYS: f64 = 60.0;

/// One day's closed hours, summed: plain totals and the weighted sums of the fit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct DaySums {
    pub hours: u8,
    /// Inflow and UFG, m³.
    pub inflow: f64,
    pub ufg: f64,
    /// Σw, Σw·I, Σw·I², Σw·U, Σw·I·U with w = 1 / I (I, U per hour).
    w: f64,
    wi: f64,
    wii: f64,
    wu: f64,
    wiu: f64,
}

impl DaySums {
    pub fn add(&mut self, inflow: f64, ufg: f64) {
        self.hours = self.hours.saturating_add(1);
        self.inflow += inflow;
        self.ufg += ufg;
        if inflow > 1e-9 {
            let w = 1.0 / inflow;
            self.w += w;
            self.wi += w * inflow;
            self.wii += w * inflow * inflow;
            self.wu += w * ufg;
            self.wiu += w * inflow * ufg;
        }
    }

    /// Changes the UFG of an hour already added (a late customer hour replacing its
    /// imputed part).
    pub fn adjust(&mut self, inflow: f64, ufg_delta: f64) {
        self.ufg += ufg_delta;
        if inflow > 1e-9 {
            let w = 1.0 / inflow;
            self.wu += w * ufg_delta;
            self.wiu += ufg_delta;
        }
    }

    fn merge(&mut self, o: &DaySums) {
        self.hours = self.hours.saturating_add(o.hours);
        self.inflow += o.inflow;
        self.ufg += o.ufg;
        self.w += o.w;
        self.wi += o.wi;
        self.wii += o.wii;
        self.wu += o.wu;
        self.wiu += o.wiu;
    }

    /// UFG as a fraction of inflow.
    pub fn fraction(&self) -> f64 {
        self.ufg / self.inflow
    }
}

/// UFG per hour = `a + b × inflow`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Model {
    /// m³/h.
    pub a: f64,
    /// Fraction of inflow.
    pub b: f64,
}

impl Model {
    fn fit(s: &DaySums) -> Model {
        let det = s.w * s.wii - s.wi * s.wi;
        if det > 1e-9 * s.w * s.wii && s.w > 0.0 {
            let b = (s.w * s.wiu - s.wi * s.wu) / det;
            Model {
                a: (s.wu - b * s.wi) / s.w,
                b,
            }
        } else {
            // No spread of inflow to tell the two apart: all proportional.
            Model {
                a: 0.0,
                b: if s.inflow > 0.0 {
                    s.ufg / s.inflow
                } else {
                    0.0
                },
            }
        }
    }

    /// The UFG fraction predicted for a day.
    pub fn predict(&self, d: &DaySums) -> f64 {
        (self.a * f64::from(d.hours) + self.b * d.inflow) / d.inflow
    }

    fn excess(&self, d: &DaySums) -> f64 {
        d.fraction() - self.predict(d)
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct Cusum {
    /// Accepted days, oldest first (at most the window).
    base: VecDeque<DaySums>,
    /// Days of the current run (`S > 0`) waiting to be accepted or dropped.
    pending: VecDeque<DaySums>,
    /// The CUSUM statistic, σ units.
    s: f32,
    /// First day (local day number) of the current run, while `S > 0`.
    run_start: Option<i64>,
    /// Sum of the run's UFG fractions and days, for the evidence.
    run_sum: f32,
    run_n: u16,
    /// Long-run variance of accepted days' excess.
    var_long: f32,
    /// Outlying days left out of the baseline in a row.
    outliers: u16,
}

fn median(mut xs: Vec<f64>) -> f64 {
    if xs.is_empty() {
        return 0.0;
    }
    xs.sort_by(f64::total_cmp);
    let n = xs.len();
    if n % 2 == 1 {
        xs[n / 2]
    } else {
        (xs[n / 2 - 1] + xs[n / 2]) / 2.0
    }
}

/// What one day did.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Judged {
    pub model: Model,
    /// UFG fraction expected of the day (the model's prediction plus the baseline's
    /// mean excess), its σ, the allowance (fraction), the CUSUM after the day.
    pub expected: f64,
    pub sigma: f64,
    pub allowance: f64,
    pub excess: f64,
    pub s: f64,
    pub alarm: bool,
    /// First day of the run and the mean UFG fraction of its days.
    pub run_start: i64,
    pub run_mean: f64,
}

impl Cusum {
    /// The model fitted on the baseline, and the centre and σ of the baseline's
    /// excesses (σ before the long-run and floor). Robust: the centre is the median,
    /// σ is 1.4826 × the median absolute deviation, and days further than `clip` σ
    /// from the centre are left out of the fit (a start-up day with immature
    /// profiles, a day a big consumer was imputed badly).
    pub fn baseline(&self, clip: f64) -> (Model, f64, f64) {
        let fit = |keep: &dyn Fn(usize) -> bool| {
            let mut all = DaySums::default();
            for (i, d) in self.base.iter().enumerate() {
                if keep(i) {
                    all.merge(d);
                }
            }
            Model::fit(&all)
        };
        let spread = |model: &Model| {
            let xs: Vec<f64> = self.base.iter().map(|d| model.excess(d)).collect();
            let centre = median(xs.clone());
            let mad = median(xs.iter().map(|x| (x - centre).abs()).collect());
            (xs, centre, 1.4826 * mad)
        };
        let first = fit(&|_| true);
        let (xs, centre, sigma) = spread(&first);
        let limit = clip.max(1.0) * sigma;
        if sigma > 0.0 && xs.iter().any(|x| (x - centre).abs() > limit) {
            let model = fit(&|i| (xs[i] - centre).abs() <= limit);
            let (_, centre, sigma) = spread(&model);
            return (model, centre, sigma);
        }
        (first, centre, sigma)
    }

    fn accept(&mut self, d: DaySums, p: &CusumParams) {
        let window = p.window.max(2);
        if !self.learning(p) {
            let (model, centre, sigma) = self.baseline(p.clip);
            let cap = p.clip * sigma.max(f64::from(self.var_long).sqrt());
            let d2 = (model.excess(&d) - centre).abs().min(cap).powi(2);
            let v = f64::from(self.var_long);
            self.var_long = (v + (d2 - v) / LONG_DAYS) as f32;
        }
        self.base.push_back(d);
        while self.base.len() > window {
            self.base.pop_front();
        }
    }

    /// Whether the baseline is still being learned.
    pub fn learning(&self, p: &CusumParams) -> bool {
        self.base.len() < p.min_window.clamp(2, p.window.max(2))
    }

    /// Judges `day`, of which `imputed` (a fraction of inflow) was imputed; `None`
    /// while learning.
    pub fn push(&mut self, p: &CusumParams, d: DaySums, imputed: f64, day: i64) -> Option<Judged> {
        if d.inflow.is_nan() || d.inflow <= 0.0 || !d.fraction().is_finite() {
            return None;
        }
        let window = p.window.max(2);
        if self.learning(p) {
            self.accept(d, p);
            if !self.learning(p) {
                self.var_long = self.baseline(p.clip).2.powi(2) as f32;
            }
            return None;
        }
        let (model, mean, sd) = self.baseline(p.clip);
        let base_sigma = sd.max(f64::from(self.var_long).sqrt()).max(p.sigma_floor);
        let extra = p.imputed_error * imputed.max(0.0);
        let sigma = (base_sigma.powi(2) + extra.powi(2))
            .sqrt()
            .max(f64::MIN_POSITIVE);
        let excess = model.excess(&d);
        let k = p.k.max(p.k_floor / sigma);
        // A day adds at most `clip - k` to S whatever the allowance.
        let clip = k + (p.clip - p.k).max(0.5);
        let raw_z = (excess - mean) / sigma;
        let z = raw_z.clamp(-clip, clip);
        // Outlying days are not learned, unless a window's worth in a row are.
        let learnable = raw_z.abs() <= clip || usize::from(self.outliers) >= window;
        self.outliers = if raw_z.abs() <= clip {
            0
        } else {
            self.outliers.saturating_add(1)
        };
        let s = (f64::from(self.s) + z - k).max(0.0);
        let alarm = s > p.h;
        let expected = model.predict(&d) + mean;
        let mut judged = Judged {
            model,
            expected,
            sigma,
            allowance: k * sigma,
            excess: excess - mean,
            s,
            alarm,
            run_start: day,
            run_mean: d.fraction(),
        };
        if s <= 0.0 {
            // The run ended without an alarm: it was normal after all.
            while let Some(v) = self.pending.pop_front() {
                self.accept(v, p);
            }
            if learnable {
                self.accept(d, p);
            }
            self.s = 0.0;
            self.run_start = None;
            self.run_sum = 0.0;
            self.run_n = 0;
            return Some(judged);
        }
        judged.run_start = *self.run_start.get_or_insert(day);
        self.run_sum += d.fraction() as f32;
        self.run_n = self.run_n.saturating_add(1);
        judged.run_mean = f64::from(self.run_sum) / f64::from(self.run_n.max(1));
        if alarm {
            // Flagged: the run's days stay out of the baseline.
            self.pending.clear();
            self.s = s.min(1.5 * p.h) as f32;
        } else {
            self.s = s as f32;
            if learnable {
                self.pending.push_back(d);
            }
            if self.pending.len() > window
                && let Some(v) = self.pending.pop_front()
            {
                self.accept(v, p);
            }
        }
        Some(judged)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: CusumParams = CusumParams {
        window: 14,
        min_window: 14,
        k: 0.75,
        h: 5.0,
        sigma_floor: 0.001,
        clip: 3.0,
        k_floor: 0.0025,
        imputed_error: 0.2,
    };

    /// A repeatable wiggle in [-1, 1].
    fn wiggle(i: i64) -> f64 {
        (i * 7919 % 13) as f64 / 6.0 - 1.0
    }

    /// A day of 24 hours with a daily shape scaled by `level`, UFG = `a` m³/h +
    /// `b` × inflow (+ a wiggle of 0.1 % of inflow) + `leak` m³/h.
    fn day(i: i64, level: f64, a: f64, b: f64, leak: f64) -> DaySums {
        let mut d = DaySums::default();
        for h in 0..24 {
            let inflow = level
                * (20.0
                    + 80.0
                        * ((h as f64 - 4.0) / 24.0 * std::f64::consts::TAU)
                            .sin()
                            .abs());
            let ufg = a + b * inflow + leak + 0.001 * inflow * wiggle(i * 24 + h);
            d.add(inflow, ufg);
        }
        d
    }

    #[test]
    fn fits_both_kinds_of_loss() {
        let mut all = DaySums::default();
        for i in 0..14 {
            all.merge(&day(i, 1.0 + (i % 5) as f64 * 0.3, 0.5, 0.008, 0.0));
        }
        let m = Model::fit(&all);
        assert!((m.a - 0.5).abs() < 0.05, "{m:?}");
        assert!((m.b - 0.008).abs() < 0.001, "{m:?}");
    }

    #[test]
    fn learns_then_alarms_on_a_leak_not_on_the_weather() {
        let mut c = Cusum::default();
        // Background leakage of 0.5 m³/h and 0.8 % of inflow; the weather moves inflow
        // between 1× and 3× (a fixed fraction would move with it).
        let level = |i: i64| 1.0 + 2.0 * ((i % 9) as f64 / 8.0);
        for i in 0..14 {
            assert_eq!(c.push(&P, day(i, level(i), 0.5, 0.008, 0.0), 0.0, i), None);
        }
        for i in 14..40 {
            let j = c
                .push(&P, day(i, level(i), 0.5, 0.008, 0.0), 0.0, i)
                .unwrap();
            assert!(!j.alarm, "day {i}: {j:?}");
        }
        // A leak of 1 m³/h: about 1 % of the mean inflow at level 1.5.
        let mut first = None;
        for i in 40..60 {
            let j = c
                .push(&P, day(i, level(i), 0.5, 0.008, 1.0), 0.0, i)
                .unwrap();
            if j.alarm && first.is_none() {
                first = Some(i);
                assert_eq!(j.run_start, 40);
                assert!(j.run_mean > j.expected);
            }
            if i > 45 {
                assert!(j.alarm, "still alarmed on day {i}");
            }
        }
        assert!(first.unwrap() <= 42, "{first:?}");
        // The leak never entered the baseline.
        let (m, _, _) = c.baseline(P.clip);
        assert!((m.a - 0.5).abs() < 0.1, "{m:?}");
        // Repaired: the alarm clears within a few days.
        let cleared = (60..80)
            .find(|&i| {
                !c.push(&P, day(i, level(i), 0.5, 0.008, 0.0), 0.0, i)
                    .unwrap()
                    .alarm
            })
            .unwrap();
        assert!(cleared <= 66, "{cleared}");
    }

    #[test]
    fn judges_from_min_window_while_the_window_fills() {
        let p = CusumParams {
            min_window: 10,
            ..P
        };
        let mut c = Cusum::default();
        let level = |i: i64| 1.0 + 2.0 * ((i % 9) as f64 / 8.0);
        for i in 0..10 {
            assert_eq!(c.push(&p, day(i, level(i), 0.5, 0.008, 0.0), 0.0, i), None);
        }
        for i in 10..30 {
            let j = c.push(&p, day(i, level(i), 0.5, 0.008, 0.0), 0.0, i);
            assert!(!j.unwrap().alarm, "day {i}");
            assert_eq!(c.base.len(), (i as usize + 1).min(14), "day {i}");
        }
        let found = (30..40).find(|&i| {
            c.push(&p, day(i, level(i), 0.5, 0.008, 1.0), 0.0, i)
                .unwrap()
                .alarm
        });
        assert!(found.is_some_and(|i| i <= 32), "{found:?}");
    }
}
