use super::*;
use crate::config::{FaultRates, LeakConfig, NetworkLeakConfig};
use crate::model::HouseholdMix;
use crate::truth::LeakGrowth;
use chrono::{TimeZone, Utc};
use std::collections::{HashMap, HashSet};

fn small(seed: u64) -> FleetConfig {
    FleetConfig {
        seed,
        districts: 3,
        meters_per_district: 40,
        leaks: 5,
        ..FleetConfig::default()
    }
}

fn at(y: i32, m: u32, d: u32) -> Timestamp {
    Utc.with_ymd_and_hms(y, m, d, 0, 0, 0).unwrap()
}

/// A run of the fleet: the messages with the step they arrived in (`hours + 1` for
/// those of [`Fleet::finish`]), and every meter's register after each hour.
struct Run {
    start: Timestamp,
    hours: u64,
    messages: Vec<(u64, Uplink)>,
    registers: HashMap<MeterId, Vec<u64>>,
}

impl Run {
    fn new(fleet: &mut Fleet, hours: u64) -> Run {
        let start = fleet.now();
        let mut registers: HashMap<MeterId, Vec<u64>> = HashMap::new();
        let mut record = |fleet: &Fleet| {
            for r in fleet.snapshot() {
                registers
                    .entry(r.meter)
                    .or_default()
                    .push((r.vol * 1000.0).round() as u64);
            }
        };
        record(fleet);
        let mut messages = Vec::new();
        for h in 1..=hours {
            messages.extend(fleet.step().into_iter().map(|m| (h, m)));
            record(fleet);
        }
        messages.extend(fleet.finish().into_iter().map(|m| (hours + 1, m)));
        Run {
            start,
            hours,
            messages,
            registers,
        }
    }

    fn time(&self, hour: u64) -> Timestamp {
        self.start + Duration::hours(hour as i64)
    }

    fn hour_of(&self, t: Timestamp) -> usize {
        (t - self.start).num_hours() as usize
    }

    /// The register at `t` (a whole hour of the run).
    fn register(&self, meter: &MeterId, t: Timestamp) -> u64 {
        self.registers[meter][self.hour_of(t)]
    }

    /// Per meter, the litres that went through the register in each hour (by the
    /// hour's start), from the registers.
    fn consumption(&self) -> HashMap<MeterId, Vec<(Timestamp, i64)>> {
        self.registers
            .iter()
            .map(|(id, series)| {
                let hours = series
                    .windows(2)
                    .enumerate()
                    .map(|(h, w)| (self.time(h as u64), w[1] as i64 - w[0] as i64))
                    .collect();
                (id.clone(), hours)
            })
            .collect()
    }

    /// One meter's messages with their arrival step, in arrival order.
    fn of(&self, meter: &MeterId) -> Vec<(u64, &Uplink)> {
        self.messages
            .iter()
            .filter(|(_, m)| &m.meter == meter)
            .map(|(h, m)| (*h, m))
            .collect()
    }

    /// One meter's readings in the order they arrived.
    fn readings(&self, meter: &MeterId) -> Vec<&Reading> {
        self.of(meter)
            .into_iter()
            .flat_map(|(_, m)| m.readings.iter())
            .collect()
    }
}

fn customers(fleet: &Fleet) -> Vec<MeterId> {
    fleet
        .registry()
        .into_iter()
        .filter(|m| m.kind == MeterKind::Customer)
        .map(|m| m.id)
        .collect()
}

fn encoded(messages: &[Uplink]) -> Vec<Vec<u8>> {
    messages.iter().map(leakwatch_wire::encode).collect()
}

#[test]
fn same_seed_same_fleet_truth_and_stream() {
    let cfg = FleetConfig {
        faults: FaultRates::all(50.0),
        network_leaks: NetworkLeakConfig {
            count: 2,
            ..NetworkLeakConfig::default()
        },
        hours: Some(96),
        ..small(9)
    };
    let mut a = Fleet::generate(&cfg);
    let mut b = Fleet::generate(&cfg);
    assert_eq!(a.registry(), b.registry());
    assert_eq!(a.truth(), b.truth());
    assert_eq!(a.crews(), b.crews());
    assert_eq!(a.to_csv(), b.to_csv());
    for _ in 0..96 {
        assert_eq!(encoded(&a.step()), encoded(&b.step()));
    }
    assert_eq!(encoded(&a.finish()), encoded(&b.finish()));

    let c = Fleet::generate(&FleetConfig {
        seed: 10,
        ..cfg.clone()
    });
    assert_ne!(a.registry(), c.registry());
    assert_ne!(a.truth().leaks, c.truth().leaks);
    let (mut a, mut c) = (Fleet::generate(&cfg), c);
    assert_ne!(encoded(&a.step()), encoded(&c.step()));

    // Faults and leaks draw from streams of their own: turning faults off changes
    // nobody's consumption.
    let quiet = FleetConfig {
        faults: FaultRates::default(),
        ..cfg.clone()
    };
    let mut with = Fleet::generate(&cfg);
    let mut without = Fleet::generate(&quiet);
    assert_eq!(with.truth().leaks, without.truth().leaks);
    let faulty: HashSet<MeterId> = with
        .truth()
        .faults
        .iter()
        .map(|f| f.meter.clone())
        .collect();
    for _ in 0..24 {
        with.step();
        without.step();
    }
    for (x, y) in with.snapshot().into_iter().zip(without.snapshot()) {
        if !faulty.contains(&x.meter) && !x.meter.as_str().starts_with("ST-") {
            assert_eq!(x, y);
        }
    }
}

#[test]
fn clock_starts_on_the_hour_and_advances_by_one() {
    let mut cfg = small(1);
    cfg.start = Utc.with_ymd_and_hms(2026, 11, 1, 0, 37, 12).unwrap();
    let mut fleet = Fleet::generate(&cfg);
    let start = at(2026, 11, 1);
    assert_eq!(fleet.now(), start);
    assert_eq!(fleet.truth().start, start);
    assert!(fleet.snapshot().iter().all(|r| r.t == start));
    fleet.step();
    assert_eq!(fleet.now(), start + Duration::hours(1));
    let readings = fleet.snapshot();
    assert_eq!(readings.len(), fleet.meter_count());
    let ids: Vec<_> = readings.into_iter().map(|r| r.meter).collect();
    let registry: Vec<_> = fleet.registry().into_iter().map(|m| m.id).collect();
    assert_eq!(ids, registry);
}

#[test]
fn default_leaks_start_early_and_are_abrupt() {
    for seed in 0..20 {
        let fleet = Fleet::generate(&small(seed));
        let start = fleet.config().start;
        let truth = fleet.truth();
        assert_eq!(truth.leaks.len(), 5);
        for leak in &truth.leaks {
            assert!(leak.start >= start && leak.start <= start + Duration::hours(12));
            assert_eq!(leak.start.timestamp() % 3600, 0);
            assert!((20.0..=200.0).contains(&leak.rate_l_per_h));
            assert_eq!(leak.growth, LeakGrowth::Abrupt);
            assert_eq!(leak.initial_rate_l_per_h, leak.rate_l_per_h);
            assert_eq!(leak.ramp_h, 0);
            assert_eq!(truth.classes[&leak.meter], leak.class_of_home);
            assert!(
                leak.meter
                    .as_str()
                    .starts_with(&format!("PDR-{}-", leak.district))
            );
        }
        let meters: HashSet<_> = truth.leaks.iter().map(|l| l.meter.clone()).collect();
        assert_eq!(meters.len(), 5, "leaks are on distinct meters");
    }
    let tiny = Fleet::generate(&FleetConfig {
        districts: 1,
        meters_per_district: 2,
        leaks: 5,
        ..FleetConfig::default()
    });
    assert_eq!(
        tiny.truth().leaks.len(),
        2,
        "at most one leak per customer meter"
    );
}

#[test]
fn the_standard_scenario_has_usage_changes_and_harder_leaks() {
    let mut fleet = Fleet::generate(&FleetConfig::standard(1));
    let truth = fleet.truth().clone();
    let start = at(2026, 10, 1);
    let count = |k: UsageKind| truth.usage_changes.iter().filter(|u| u.kind == k).count();
    assert_eq!(count(UsageKind::Away), 250);
    assert_eq!(count(UsageKind::MoveIn), 100);
    assert_eq!(count(UsageKind::Vacated), 50);
    for u in &truth.usage_changes {
        let class = truth.classes[&u.meter];
        assert_eq!(
            class == HomeClass::Vacant,
            u.kind == UsageKind::MoveIn,
            "{u:?}"
        );
        if let Some(end) = u.end {
            let days = (end - u.start).num_days();
            assert!((7..=21).contains(&days), "{u:?}");
        }
    }
    let on_meter: HashSet<_> = truth.usage_changes.iter().map(|u| &u.meter).collect();
    assert_eq!(
        on_meter.len(),
        truth.usage_changes.len(),
        "one change per meter"
    );
    let share = |c: HomeClass| f64::from(truth.meter_classes[&c]) / 5000.0;
    assert!((share(HomeClass::Commercial) - 0.05).abs() < 0.015);
    assert!((share(HomeClass::NightHeating) - 0.15).abs() < 0.02);

    assert_eq!(truth.leaks.len(), 100);
    let on_top: Vec<_> = truth.leaks.iter().filter(|l| l.on_top).collect();
    assert_eq!(on_top.len(), 10);
    for l in &on_top {
        let first = truth
            .leaks
            .iter()
            .find(|f| !f.on_top && f.meter == l.meter)
            .expect("a first leak on the meter");
        let after = (l.start - first.start).num_hours();
        assert!((72..=480).contains(&after), "{l:?}");
    }
    let incipient = truth
        .leaks
        .iter()
        .filter(|l| {
            l.growth == LeakGrowth::Growing
                && (1.0..=2.0).contains(&l.initial_rate_l_per_h)
                && (168..=504).contains(&l.ramp_h)
        })
        .count();
    assert!(
        (18..=42).contains(&incipient),
        "{incipient} incipient leaks"
    );

    assert_eq!(truth.network_leaks.len(), 9);
    let districts: HashSet<_> = truth.network_leaks.iter().map(|l| &l.district).collect();
    assert_eq!(districts.len(), 4);
    assert!(truth.network_leaks.iter().any(|l| l.repaired.is_some()));

    // An absent home uses less than before it left; a vacant home moved into, more.
    let away = truth
        .usage_changes
        .iter()
        .find(|u| u.kind == UsageKind::Away && u.start > start + Duration::days(30))
        .unwrap()
        .clone();
    let moved = truth
        .usage_changes
        .iter()
        .find(|u| u.kind == UsageKind::MoveIn && u.start > start + Duration::days(30))
        .unwrap()
        .clone();
    let mut index: Vec<(Timestamp, MeterId, f64)> = Vec::new();
    while fleet.now() < away.end.unwrap().max(moved.start) + Duration::days(7) {
        for up in fleet.step() {
            if up.meter == away.meter || up.meter == moved.meter {
                index.extend(up.readings.iter().map(|r| (r.t, r.meter.clone(), r.vol)));
            }
        }
    }
    let used = |m: &MeterId, from: Timestamp, to: Timestamp| {
        let at = |t: Timestamp| {
            index
                .iter()
                .rev()
                .find(|(rt, rm, _)| rm == m && *rt <= t)
                .map(|(_, _, v)| *v)
                .unwrap()
        };
        at(to) - at(from)
    };
    let week = Duration::days(7);
    let before = used(&away.meter, away.start - week, away.start);
    let during = used(&away.meter, away.start, away.start + week);
    assert!(during < 0.5 * before, "away: {during} vs {before}");
    let before = used(&moved.meter, moved.start - week, moved.start);
    let after = used(&moved.meter, moved.start, moved.start + week);
    assert!(after > 2.0 * before + 1.0, "move-in: {after} vs {before}");
}

#[test]
fn the_first_standard_scenario_is_as_documented() {
    let fleet = Fleet::generate(&FleetConfig::standard_v1(1));
    let truth = fleet.truth();
    let start = at(2026, 10, 1);
    assert_eq!(truth.start, start);
    assert_eq!(truth.end, Some(start + Duration::days(120)));
    assert_eq!(truth.customer_meters, 5000);
    assert_eq!(truth.station_meters, 10);
    assert_eq!(fleet.meter_count(), 5010);
    assert_eq!(truth.meter_classes.values().sum::<u32>(), 5000);
    assert_eq!(truth.classes.len(), 5000);
    let mix = HouseholdMix::default();
    for (class, &n) in &truth.meter_classes {
        let share = f64::from(n) / 5000.0;
        assert!((share - mix.share(*class)).abs() < 0.02, "{class}: {share}");
    }
    let never =
        truth.meter_classes[&HomeClass::Pilot] + truth.meter_classes[&HomeClass::Commercial];
    assert_eq!(truth.never_stop_meters.len() as u32, never);

    // Leaks: 100, in the window, 5-500 L/h with ~30 % small, half growing.
    assert_eq!(truth.leaks.len(), 100);
    let meters: HashSet<_> = truth.leaks.iter().map(|l| &l.meter).collect();
    assert_eq!(meters.len(), 100);
    let (from, to) = (start + Duration::days(14), start + Duration::days(105));
    let mut small_ones = 0;
    let mut growing = 0;
    for l in &truth.leaks {
        assert!(l.start >= from && l.start <= to, "{l:?}");
        assert!((5.0..=500.0).contains(&l.rate_l_per_h), "{l:?}");
        if l.rate_l_per_h < 20.0 {
            small_ones += 1;
        }
        match l.growth {
            LeakGrowth::Growing => {
                growing += 1;
                assert!((48..=336).contains(&l.ramp_h), "{l:?}");
                assert!(
                    (l.initial_rate_l_per_h - 0.2 * l.rate_l_per_h).abs() <= 0.051,
                    "{l:?}"
                );
            }
            LeakGrowth::Abrupt => assert_eq!(l.ramp_h, 0),
        }
    }
    assert!((20..=40).contains(&small_ones), "{small_ones} small leaks");
    assert!((35..=65).contains(&growing), "{growing} growing leaks");

    // Network leaks: 5 distinct districts, 0.5-5 %, in the window.
    assert_eq!(truth.network_leaks.len(), 5);
    let districts: HashSet<_> = truth.network_leaks.iter().map(|l| &l.district).collect();
    assert_eq!(districts.len(), 5);
    for l in &truth.network_leaks {
        assert!((0.005..=0.05).contains(&l.fraction), "{l:?}");
        assert!(l.start >= from && l.start <= to);
    }

    // Faults at the documented rates (per 1000 meters: × 5), inside the run.
    let rates = FaultRates::standard();
    for kind in FaultKind::ALL {
        let n = truth.faults.iter().filter(|f| f.kind == kind).count();
        assert_eq!(n as f64, rates.rate(kind) * 5.0, "{kind}");
    }
    let faulty: HashSet<_> = truth.faults.iter().map(|f| &f.meter).collect();
    assert_eq!(faulty.len(), truth.faults.len(), "one fault per meter");
    let end = truth.end.unwrap();
    for f in &truth.faults {
        assert!(
            f.start >= start && f.start <= f.end && f.end <= end,
            "{f:?}"
        );
    }

    for m in fleet.registry() {
        let every = if m.kind == MeterKind::Station { 1 } else { 24 };
        assert_eq!(m.report_every_h, every, "{}", m.id);
    }
}

#[test]
fn default_config_has_no_faults_and_a_clean_stream() {
    let mut fleet = Fleet::generate(&small(3));
    assert!(fleet.truth().faults.is_empty());
    assert!(fleet.truth().network_leaks.is_empty());
    assert_eq!(fleet.truth().end, None);
    let every = u64::from(fleet.config().push_every_h);
    assert_eq!(every, 6);
    let run = Run::new(&mut fleet, 72);
    for meter in fleet.registry() {
        let msgs = run.of(&meter.id);
        let station = meter.kind == MeterKind::Station;
        let mut times = Vec::new();
        let mut last_step = 0;
        for (i, (step, m)) in msgs.iter().enumerate() {
            assert!(m.events.is_empty());
            assert_eq!(m.district, meter.district);
            assert_eq!(m.battery.is_some(), !station);
            assert_eq!(m.valve, if station { None } else { Some(Valve::Open) });
            if *step <= run.hours {
                // The readings since the previous push, up to now.
                assert_eq!(m.readings.last().unwrap().t, run.time(*step));
                if i > 0 {
                    assert_eq!(step - last_step, if station { 1 } else { every });
                }
            }
            last_step = *step;
            times.extend(m.readings.iter().map(|r| r.t));
        }
        // Every hour once, in order, from the baseline; the temperature is there.
        let expected: Vec<_> = (0..=run.hours).map(|h| run.time(h)).collect();
        assert!(times == expected, "{}", meter.id);
        for r in run.readings(&meter.id) {
            let temp = r.temp.unwrap();
            assert!((-10.0..25.0).contains(&temp), "{temp}");
            assert_eq!(round1(temp), temp);
        }
        // Stations push every hour; customers every 6 h, at their own phase.
        if station {
            assert_eq!(msgs.len(), 72);
        } else {
            // 12 pushes, and the rest at the end unless the last push was at 72 h.
            assert!(msgs.len() == 12 || msgs.len() == 13, "{}", meter.id);
        }
    }
    let first_pushes: HashSet<u64> = customers(&fleet).iter().map(|id| run.of(id)[0].0).collect();
    assert!(first_pushes.len() >= 4, "phases differ: {first_pushes:?}");
}

#[test]
fn indexes_are_whole_litres_and_never_decrease_without_faults() {
    let mut fleet = Fleet::generate(&small(5));
    let run = Run::new(&mut fleet, 72);
    for meter in fleet.registry() {
        let mut last = 0.0;
        for r in run.readings(&meter.id) {
            let litres = r.vol * 1000.0;
            assert!(
                (litres - litres.round()).abs() < 1e-6,
                "{} {}",
                r.meter,
                r.vol
            );
            assert!(r.vol >= last, "{} went from {last} to {}", r.meter, r.vol);
            last = r.vol;
            // The JSON number prints with at most three decimals.
            let text = serde_json::to_string(&r.vol).unwrap();
            let decimals = text.split('.').nth(1).map_or(0, str::len);
            assert!(decimals <= 3, "{text}");
        }
        if meter.kind == MeterKind::Customer {
            assert!((100.0..5300.0).contains(&last), "{} at {last}", meter.id);
        }
    }
}

#[test]
fn setback_homes_rest_on_mild_nights() {
    let cfg = FleetConfig {
        districts: 2,
        meters_per_district: 50,
        leaks: 0,
        start: at(2026, 10, 1),
        households: HouseholdMix::only(HomeClass::Setback),
        ..small(11)
    };
    let mut fleet = Fleet::generate(&cfg);
    let run = Run::new(&mut fleet, 30 * 24);
    let hours = run.consumption();
    let weather = fleet.weather().clone();
    let mut mild_nights = 0;
    for day in 0..30 {
        // Local 00:00-05:00 is 23:00-04:00 UTC.
        let night: Vec<Timestamp> = (0..5)
            .map(|h| run.start + Duration::hours(day * 24 + 23 + h))
            .filter(|&t| t < run.time(run.hours))
            .collect();
        let mild = night
            .iter()
            .all(|&t| weather.outdoor_temp_c(t + Duration::minutes(30)) >= 2.0);
        if night.len() < 5 || !mild {
            continue;
        }
        mild_nights += 1;
        for id in customers(&fleet) {
            for &t in &night {
                let (_, l) = hours[&id][run.hour_of(t)];
                assert_eq!(l, 0, "{id} burnt {l} L at {t}");
            }
        }
    }
    assert!(mild_nights >= 20, "{mild_nights} mild nights in October");
}

#[test]
fn night_heating_follows_the_cold() {
    let cfg = FleetConfig {
        districts: 1,
        meters_per_district: 40,
        leaks: 0,
        start: at(2026, 11, 1),
        households: HouseholdMix::only(HomeClass::NightHeating),
        ..small(12)
    };
    let mut fleet = Fleet::generate(&cfg);
    let run = Run::new(&mut fleet, 60 * 24);
    let hours = run.consumption();
    let weather = fleet.weather().clone();
    let (mut cold, mut mild) = (0, 0);
    for id in customers(&fleet) {
        let home = fleet.household(&id).unwrap().clone();
        let below = home.night_heat_below_c.unwrap();
        for day in 0..59 {
            let night: Vec<Timestamp> = (0..5)
                .map(|h| run.start + Duration::hours(day * 24 + 23 + h))
                .collect();
            let temps: Vec<f64> = night
                .iter()
                .map(|&t| weather.outdoor_temp_c(t + Duration::minutes(30)))
                .collect();
            let used: Vec<i64> = night
                .iter()
                .map(|&t| hours[&id][run.hour_of(t)].1)
                .collect();
            if temps.iter().all(|&x| x < below) {
                cold += 1;
                assert!(
                    used.iter().all(|&l| l > 0),
                    "{id} rested on a cold night: {used:?}"
                );
            } else if temps.iter().all(|&x| x >= below) {
                mild += 1;
                assert!(
                    used.iter().all(|&l| l == 0),
                    "{id} heated a mild night: {used:?}"
                );
            }
        }
    }
    assert!(
        cold > 100 && mild > 100,
        "{cold} cold and {mild} mild nights"
    );
}

#[test]
fn pilot_and_commercial_meters_never_have_a_zero_hour() {
    let cfg = FleetConfig {
        districts: 2,
        meters_per_district: 30,
        leaks: 0,
        start: at(2026, 10, 1),
        households: HouseholdMix {
            pilot: 1.0,
            commercial: 1.0,
            ..HouseholdMix::only(HomeClass::Pilot)
        },
        ..small(13)
    };
    let mut fleet = Fleet::generate(&cfg);
    let ids = customers(&fleet);
    let never: HashSet<_> = fleet.truth().never_stop_meters.iter().cloned().collect();
    assert_eq!(never, ids.iter().cloned().collect());
    assert!(fleet.truth().meter_classes[&HomeClass::Commercial] > 10);
    let run = Run::new(&mut fleet, 20 * 24);
    let hours = run.consumption();
    for id in &ids {
        for &(t, l) in &hours[id] {
            assert!(l > 0, "{id} at {t}: {l} L");
        }
    }
}

#[test]
fn homes_consume_plausibly_and_more_in_winter() {
    let mean_daily = |start: Timestamp| {
        let mut fleet = Fleet::generate(&FleetConfig {
            leaks: 0,
            start,
            ..small(4)
        });
        let run = Run::new(&mut fleet, 72);
        let daily: Vec<f64> = run
            .consumption()
            .iter()
            .filter(|(id, _)| {
                fleet
                    .truth()
                    .classes
                    .get(*id)
                    .is_some_and(|c| *c != HomeClass::Commercial)
            })
            .map(|(_, s)| s.iter().map(|&(_, l)| l).sum::<i64>() as f64 / 3000.0)
            .collect();
        assert!(daily.iter().all(|&d| d < 25.0), "{daily:?}");
        daily.iter().sum::<f64>() / daily.len() as f64
    };
    let november = mean_daily(at(2026, 11, 1));
    // Early November in Florence: a few m³ a day per home.
    assert!(
        (0.5..8.0).contains(&november),
        "mean daily use {november} m³"
    );
    let january = mean_daily(at(2027, 1, 15));
    let october = mean_daily(at(2026, 10, 1));
    assert!(
        january > 1.5 * october,
        "January {january} m³, October {october} m³"
    );
}

#[test]
fn growing_leaks_ramp_up_and_abrupt_ones_do_not() {
    for growing in [true, false] {
        let cfg = FleetConfig {
            districts: 1,
            meters_per_district: 20,
            leaks: 20,
            start: at(2026, 10, 1),
            households: HouseholdMix::only(HomeClass::Vacant),
            leak: LeakConfig {
                from_h: 24,
                to_h: 48,
                min_rate_l_per_h: 50.0,
                max_rate_l_per_h: 200.0,
                growing_share: if growing { 1.0 } else { 0.0 },
                min_ramp_h: 48,
                max_ramp_h: 96,
                ..LeakConfig::default()
            },
            ..small(14)
        };
        let mut fleet = Fleet::generate(&cfg);
        let run = Run::new(&mut fleet, 8 * 24);
        let hours = run.consumption();
        for leak in &fleet.truth().leaks {
            let expected_growth = if growing {
                LeakGrowth::Growing
            } else {
                LeakGrowth::Abrupt
            };
            assert_eq!(leak.growth, expected_growth);
            if growing {
                assert!((48..=96).contains(&leak.ramp_h));
                assert!(leak.initial_rate_l_per_h < 0.25 * leak.rate_l_per_h);
            }
            // A vacant home in October: the meter shows the leak, to the litre (and
            // the odd visit).
            let mut off = 0;
            for &(t, l) in &hours[&leak.meter] {
                let expected = leak.litres_in_hour(t);
                if (l as f64 - expected).abs() > 1.0 {
                    off += 1;
                    assert!(
                        l as f64 > expected,
                        "{} at {t}: {l} L, leak {expected}",
                        leak.meter
                    );
                }
            }
            assert!(off <= 3, "{}: {off} hours off the leak", leak.meter);
            let first = leak.litres_in_hour(leak.start);
            let later = leak.litres_in_hour(leak.start + Duration::hours(i64::from(leak.ramp_h)));
            assert_eq!(later, leak.rate_l_per_h);
            assert_eq!(first, leak.initial_rate_l_per_h);
            if growing {
                let mid =
                    leak.litres_in_hour(leak.start + Duration::hours(i64::from(leak.ramp_h / 2)));
                assert!(first < mid && mid < later);
            }
            assert_eq!(leak.litres_in_hour(leak.start - Duration::hours(1)), 0.0);
        }
    }
}

#[test]
fn stations_count_customers_loss_and_network_leaks() {
    let cfg = FleetConfig {
        districts: 2,
        meters_per_district: 60,
        leaks: 3,
        network_leaks: NetworkLeakConfig {
            count: 1,
            min_fraction: 0.03,
            max_fraction: 0.03,
            ..NetworkLeakConfig::default()
        },
        ..small(6)
    };
    let mut fleet = Fleet::generate(&cfg);
    let leak = fleet.truth().network_leaks[0].clone();
    assert_eq!(leak.fraction, 0.03);
    let run = Run::new(&mut fleet, 14 * 24);
    let registry = fleet.registry();
    for district in fleet.district_ids() {
        let station = MeterId::parse(format!("ST-{district}")).unwrap();
        let metered = |from: usize, to: usize| {
            registry
                .iter()
                .filter(|m| m.district == district && m.kind == MeterKind::Customer)
                .map(|m| (run.registers[&m.id][to] - run.registers[&m.id][from]) as f64)
                .sum::<f64>()
        };
        let leaking = leak.district == district;
        let first_day = run.hour_of(leak.start).div_ceil(24) + 1;
        for day in first_day..14 {
            let (from, to) = (day * 24, day * 24 + 24);
            let inflow = (run.registers[&station][to] - run.registers[&station][from]) as f64;
            let ratio = inflow / metered(from, to);
            // The leak and part of the loss follow the week's average, not the day's.
            let (lo, hi) = if leaking {
                (1.015, 1.12)
            } else {
                (1.003, 1.03)
            };
            assert!((lo..hi).contains(&ratio), "{district} day {day}: {ratio}");
        }
        let (from, to) = (first_day * 24, 14 * 24);
        let total = (run.registers[&station][to] - run.registers[&station][from]) as f64
            / metered(from, to);
        let (lo, hi) = if leaking {
            (1.03, 1.05)
        } else {
            (1.005, 1.015)
        };
        assert!((lo..hi).contains(&total), "{district}: {total}");
    }
}

#[test]
fn faults_appear_in_the_stream_as_the_truth_says() {
    let cfg = FleetConfig {
        districts: 2,
        meters_per_district: 60,
        leaks: 5,
        push_every_h: 24,
        hours: Some(20 * 24),
        faults: FaultRates::all(25.0), // 3 of each kind
        ..small(15)
    };
    let mut fleet = Fleet::generate(&cfg);
    let truth = fleet.truth().clone();
    assert_eq!(truth.faults.len(), 12 * 3);
    let run = Run::new(&mut fleet, 20 * 24);
    let step_of = |t: Timestamp| run.hour_of(t) as u64;
    let faulty: HashSet<_> = truth.faults.iter().map(|f| f.meter.clone()).collect();
    assert_eq!(faulty.len(), truth.faults.len());
    let all_hours: Vec<Timestamp> = (0..=run.hours).map(|h| run.time(h)).collect();
    let has_event = |meter: &MeterId, code: &str, t: Timestamp| {
        run.of(meter).iter().any(|(_, m)| {
            m.events
                .iter()
                .any(|e| e.t == t && e.code == EventCode::Named(code.into()))
        })
    };

    for f in &truth.faults {
        let msgs = run.of(&f.meter);
        let readings = run.readings(&f.meter);
        let times: Vec<Timestamp> = readings.iter().map(|r| r.t).collect();
        if let Some(code) = f.kind.event_code() {
            let t = if f.kind == FaultKind::ClockError {
                f.end
            } else {
                f.start
            };
            assert!(has_event(&f.meter, code, t), "{f:?}");
        }
        // Every event the meter sends is one of its fault's.
        let events: usize = msgs.iter().map(|(_, m)| m.events.len()).sum();
        let expected_events = match f.kind {
            FaultKind::ValveClosed => 2,
            k if k.event_code().is_some() => 1,
            _ => 0,
        };
        assert_eq!(events, expected_events, "{f:?}");
        match f.kind {
            FaultKind::Tamper | FaultKind::ReverseFlow => assert_eq!(f.start, f.end),
            FaultKind::BatteryLow | FaultKind::BatteryCritical => {
                let level = f.battery.unwrap();
                assert!(if f.kind == FaultKind::BatteryLow {
                    (5..=9).contains(&level)
                } else {
                    (1..=3).contains(&level)
                });
                for (step, m) in &msgs {
                    if run.time(*step) >= f.start {
                        assert_eq!(m.battery, Some(level), "{f:?}");
                    } else {
                        assert!(m.battery.unwrap() >= 60);
                    }
                }
            }
            FaultKind::MagneticField | FaultKind::ValveClosed => {
                let at_start = run.register(&f.meter, f.start);
                let mut t = f.start;
                while t <= f.end {
                    assert_eq!(run.register(&f.meter, t), at_start, "{f:?} at {t}");
                    t += Duration::hours(1);
                }
                if f.kind == FaultKind::ValveClosed {
                    assert!(has_event(&f.meter, "valve_opened", f.end));
                    for (step, m) in &msgs {
                        let closed = f.covers(run.time(*step));
                        let want = if closed { Valve::Closed } else { Valve::Open };
                        assert_eq!(m.valve, Some(want), "{f:?} step {step}");
                    }
                }
                assert!(times == all_hours, "{f:?}");
            }
            FaultKind::CounterRegression => {
                let litres = f.litres.unwrap();
                let before = run.register(&f.meter, f.start - Duration::hours(1));
                let after = run.register(&f.meter, f.start);
                assert_eq!(before - after, litres, "{f:?}");
                let r = readings.iter().find(|r| r.t == f.start).unwrap();
                assert_eq!((r.vol * 1000.0).round() as u64, after);
                assert!(times == all_hours, "{f:?}");
            }
            FaultKind::ClockError => {
                let offset = Duration::hours(i64::from(f.offset_h.unwrap()));
                assert!(f.offset_h.unwrap() != 0 && f.offset_h.unwrap().abs() <= 12);
                assert_eq!(f.end - f.start, Duration::hours(24));
                // The readings come in true order; those of the day are stamped off.
                assert_eq!(readings.len(), all_hours.len());
                for (r, &t) in readings.iter().zip(&all_hours) {
                    let stamped = if f.covers(t) { t + offset } else { t };
                    assert_eq!(r.t, stamped, "{f:?}");
                    assert_eq!((r.vol * 1000.0).round() as u64, run.register(&f.meter, t));
                }
            }
            FaultKind::Silent => {
                let len = (f.end - f.start).num_hours();
                assert!((48..=240).contains(&len));
                for (step, _) in &msgs {
                    assert!(
                        !f.covers(run.time(*step)),
                        "{f:?}: a message at step {step}"
                    );
                }
                let resumed = msgs
                    .iter()
                    .find(|(step, _)| run.time(*step) >= f.end)
                    .unwrap();
                assert!(resumed.0 < step_of(f.end) + 24);
                if f.backlog.unwrap() {
                    assert!(times == all_hours, "{f:?}");
                    assert!(resumed.1.readings.len() as i64 > len);
                } else {
                    let kept: Vec<_> = all_hours
                        .iter()
                        .copied()
                        .filter(|&t| !f.covers(t))
                        .collect();
                    assert!(times == kept, "{f:?}");
                }
            }
            FaultKind::Gap => {
                assert!((1..=6).contains(&(f.end - f.start).num_hours()));
                let kept: Vec<_> = all_hours
                    .iter()
                    .copied()
                    .filter(|&t| !f.covers(t))
                    .collect();
                assert!(times == kept, "{f:?}");
            }
            FaultKind::Duplicate => {
                assert_eq!(f.start, f.end);
                let at_push: Vec<_> = msgs
                    .iter()
                    .filter(|(s, _)| *s == step_of(f.start))
                    .collect();
                assert_eq!(at_push.len(), 2, "{f:?}");
                assert_eq!(at_push[0].1, at_push[1].1);
                assert_eq!(at_push[0].1.readings.last().unwrap().t, f.start);
                // Without the second copy, every hour once, in order.
                let mut once: Vec<&Uplink> = msgs.iter().map(|(_, m)| *m).collect();
                once.dedup();
                assert_eq!(once.len(), msgs.len() - 1);
                let times: Vec<_> = once
                    .iter()
                    .flat_map(|m| m.readings.iter().map(|r| r.t))
                    .collect();
                assert!(times == all_hours, "{f:?}");
            }
            FaultKind::Late => {
                let delay = (f.end - f.start).num_hours();
                assert!((24..=72).contains(&delay));
                let (step, late) = msgs
                    .iter()
                    .find(|(_, m)| m.readings.last().map(|r| r.t) == Some(f.start))
                    .unwrap();
                assert_eq!(*step, step_of(f.end), "{f:?}");
                // A later push arrived before it.
                let position = msgs
                    .iter()
                    .position(|(_, m)| std::ptr::eq(*m, *late))
                    .unwrap();
                assert!(
                    msgs[..position]
                        .iter()
                        .any(|(_, m)| m.readings.first().is_some_and(|r| r.t > f.start)),
                    "{f:?}"
                );
                let mut sorted = times.clone();
                assert!(sorted != all_hours, "out of order");
                sorted.sort();
                assert!(sorted == all_hours, "{f:?}");
            }
        }
    }

    // Meters without faults: every hour once, in order, and no event.
    for id in customers(&fleet) {
        if !faulty.contains(&id) {
            let times: Vec<_> = run.readings(&id).iter().map(|r| r.t).collect();
            assert!(times == all_hours, "{id}");
            assert!(run.of(&id).iter().all(|(_, m)| m.events.is_empty()));
        }
    }
}

#[test]
fn long_backlogs_are_split_into_messages_within_the_contract() {
    let cfg = FleetConfig {
        districts: 1,
        meters_per_district: 3,
        leaks: 0,
        push_every_h: 2000,
        ..small(16)
    };
    let mut fleet = Fleet::generate(&cfg);
    let run = Run::new(&mut fleet, 1200);
    let mut split = false;
    for id in customers(&fleet) {
        let msgs = run.of(&id);
        for (_, m) in &msgs {
            assert!(m.readings.len() <= MAX_READINGS_PER_MESSAGE);
            assert!(leakwatch_wire::encode(m).len() < leakwatch_wire::MAX_PAYLOAD_BYTES);
        }
        split |= msgs.len() > 1 && msgs.iter().all(|(s, _)| *s == run.hours + 1);
        let times: Vec<_> = run.readings(&id).iter().map(|r| r.t).collect();
        assert_eq!(times.len() as u64, run.hours + 1);
    }
    assert!(
        split,
        "a backlog of 1201 readings went out in several messages"
    );
}

#[test]
fn the_truth_round_trips_through_json() {
    let fleet = Fleet::generate(&FleetConfig {
        faults: FaultRates::all(50.0),
        network_leaks: NetworkLeakConfig {
            count: 2,
            ..NetworkLeakConfig::default()
        },
        leak: LeakConfig::standard(),
        hours: Some(120 * 24),
        ..small(17)
    });
    let truth = fleet.truth();
    let json = serde_json::to_string_pretty(truth).unwrap();
    let back: Truth = serde_json::from_str(&json).unwrap();
    assert_eq!(&back, truth);
    let value: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert!(value["meter_classes"]["setback"].as_u64().unwrap() > 0);
    assert_eq!(value["scenario"]["seed"], 17);
    assert!(value["leaks"][0]["rate_l_per_h"].is_number());
    assert!(
        value["faults"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["kind"] == "late")
    );
    // A scenario file may leave out what it does not change.
    let partial: FleetConfig = serde_json::from_str(r#"{"seed": 5, "districts": 2}"#).unwrap();
    assert_eq!(
        partial,
        FleetConfig {
            seed: 5,
            districts: 2,
            ..FleetConfig::default()
        }
    );
}

#[test]
fn registry_has_stations_and_customers_in_districts() {
    let fleet = Fleet::generate(&FleetConfig::default());
    let registry = fleet.registry();
    assert_eq!(registry.len(), 10 * 101);
    assert_eq!(fleet.meter_count(), registry.len());
    let ids: Vec<String> = fleet.district_ids().iter().map(|d| d.to_string()).collect();
    assert_eq!(ids.first().map(String::as_str), Some("D01"));
    assert_eq!(ids.last().map(String::as_str), Some("D10"));
    assert_eq!(registry[0].id.as_str(), "ST-D01");
    assert_eq!(registry[0].kind, MeterKind::Station);
    assert_eq!(registry[1].id.as_str(), "PDR-D01-0001");
    assert_eq!(registry[100].id.as_str(), "PDR-D01-0100");
    assert_eq!(registry[101].id.as_str(), "ST-D02");
    let center = fleet.config().center;
    for m in &registry {
        let every = if m.kind == MeterKind::Station { 1 } else { 6 };
        assert_eq!(m.report_every_h, every);
        assert_eq!(m.status, MeterStatus::Active);
        let station = registry
            .iter()
            .find(|s| s.kind == MeterKind::Station && s.district == m.district)
            .unwrap();
        // Within a district's ~1.5 km, and the fleet within a few km of the centre.
        assert!(m.location.distance_km(&station.location) < 1.6);
        assert!(m.location.distance_km(&center) < 6.0);
    }
    let stations = registry
        .iter()
        .filter(|m| m.kind == MeterKind::Station)
        .count();
    assert_eq!(stations, 10);
}

#[test]
fn csv_matches_the_import_format() {
    let fleet = Fleet::generate(&small(2));
    let csv = fleet.to_csv();
    let mut lines = csv.lines();
    assert_eq!(
        lines.next(),
        Some("meter_id,district_id,kind,lat,lon,report_every_h")
    );
    let rows: Vec<Vec<&str>> = lines.map(|l| l.split(',').collect()).collect();
    assert_eq!(rows.len(), fleet.meter_count());
    for (row, meter) in rows.iter().zip(fleet.registry()) {
        assert_eq!(row.len(), 6);
        assert_eq!(row[0], meter.id.as_str());
        assert_eq!(row[1], meter.district.as_str());
        assert_eq!(row[2].parse::<MeterKind>().unwrap(), meter.kind);
        let lat: f64 = row[3].parse().unwrap();
        let lon: f64 = row[4].parse().unwrap();
        assert!((lat - meter.location.lat).abs() < 1e-6);
        assert!((lon - meter.location.lon).abs() < 1e-6);
        assert_eq!(row[5], meter.report_every_h.to_string());
    }
}

#[test]
fn one_crew_per_two_districts() {
    let fleet = Fleet::generate(&FleetConfig::default());
    let crews = fleet.crews();
    assert_eq!(crews.len(), 5);
    assert_eq!(crews[0].id.as_str(), "CREW-01");
    assert_eq!(crews[0].name, "Crew 1");
    assert_eq!(crews[4].id.as_str(), "CREW-05");
    for c in &crews {
        assert!(c.on_shift);
        assert_eq!(c.position, Some(c.home));
        assert_eq!(c.skills, ["emergency", "repair", "meter"]);
        assert!(c.home.distance_km(&fleet.config().center) < 8.0);
    }
    let odd = Fleet::generate(&FleetConfig {
        districts: 3,
        ..FleetConfig::default()
    });
    assert_eq!(odd.crews().len(), 2);
}

/// Generates the standard scenario's whole stream in process and reports the time.
/// `cargo test --release -p leakwatch-sim -- --ignored --nocapture standard_stream`
#[test]
#[ignore = "slow in debug builds; run in release"]
fn standard_stream_generation_time() {
    let began = std::time::Instant::now();
    let mut fleet = Fleet::generate(&FleetConfig::standard(1));
    let generated = began.elapsed();
    let hours = fleet.config().hours.unwrap();
    let (mut messages, mut readings, mut events) = (0usize, 0usize, 0usize);
    let mut count = |ups: Vec<Uplink>| {
        for up in ups {
            messages += 1;
            readings += up.readings.len();
            events += up.events.len();
        }
    };
    for _ in 0..hours {
        count(fleet.step());
    }
    count(fleet.finish());
    let elapsed = began.elapsed();
    println!(
        "standard scenario: {} meters, {hours} h: {messages} messages, {readings} readings, \
         {events} events in {elapsed:.2?} (generation {generated:.2?})",
        fleet.meter_count()
    );
    // 5,010 meters × 2,881 readings, less the gaps and silences.
    assert!(readings > 14_300_000, "{readings}");
    assert!(elapsed < std::time::Duration::from_secs(60), "{elapsed:?}");
}
