use super::*;
use chrono::{TimeZone, Utc};

fn t(h: i64) -> Timestamp {
    Utc.with_ymd_and_hms(2026, 11, 1, 0, 0, 0).unwrap() + TimeDelta::hours(h)
}

fn info() -> MeterInfo {
    MeterInfo {
        kind: MeterKind::Customer,
        district: DistrictId::parse("D1").unwrap(),
        report_every_h: 24,
        max_flow_m3h: Some(6.0),
    }
}

fn reading(m: &MeterId, h: i64, vol: f64) -> Reading {
    Reading {
        meter: m.clone(),
        t: t(h),
        vol,
        temp: None,
        flow_max: None,
        pressure: None,
    }
}

/// A meter with a 50 L/h leak and quiet nights otherwise, plus a silent one.
fn stream(hours: std::ops::Range<i64>) -> Vec<Reading> {
    let a = MeterId::parse("A").unwrap();
    let b = MeterId::parse("B").unwrap();
    let mut out = vec![];
    let mut vol = 100.0;
    for h in hours {
        let home = if (0..7).contains(&(h % 24)) { 0.0 } else { 0.1 };
        // The leak starts on day 2.
        let leak = if h >= 48 { 0.05 } else { 0.0 };
        vol += home + leak;
        out.push(reading(&a, h, vol));
        if h < 30 {
            out.push(reading(&b, h, 5.0 + (h / 24) as f64));
        }
    }
    out
}

fn run(engine: &mut Engine, readings: &[Reading]) -> Vec<Finding> {
    let mut out = vec![];
    for r in readings {
        engine.observe(&info(), r, &mut out);
    }
    out
}

#[test]
fn a_restart_mid_stream_raises_the_same_findings() {
    let all = stream(0..24 * 6);
    let mut straight = Engine::new(DetectConfig::default());
    let expected = run(&mut straight, &all);
    assert!(expected.iter().any(|f| f.kind == AlertKind::ContinuousFlow));
    assert!(expected.iter().any(|f| f.kind == AlertKind::Silence));

    for cut in [1, 37, 100, all.len() - 3] {
        let mut first = Engine::new(DetectConfig::default());
        let mut found = run(&mut first, &all[..cut]);
        let saved = first.checkpoint_all();
        let mut second = Engine::new(DetectConfig::default());
        let stats = second.restore(saved, |_| Some(info()));
        assert_eq!(stats.skipped, 0);
        found.extend(run(&mut second, &all[cut..]));
        assert_eq!(found, expected, "restart after {cut} readings");
    }
}

#[test]
fn state_per_meter_stays_under_a_kibibyte() {
    let all = stream(0..24 * 30);
    let mut e = Engine::new(DetectConfig::default());
    run(&mut e, &all);
    let size = e.state_size(&MeterId::parse("A").unwrap()).unwrap();
    assert!(size < 1024, "{size} bytes");
}

#[test]
fn garbled_state_is_skipped_not_misread() {
    let mut e = Engine::new(DetectConfig::default());
    let stats = e.restore(
        [Saved::Meter(MeterId::parse("A").unwrap(), vec![99, 1, 2])],
        |_| Some(info()),
    );
    assert_eq!(stats.skipped, 1);
}

#[test]
fn members_keep_their_place_in_the_district_across_a_restart() {
    let ids: Vec<MeterId> = ["A", "B", "C", "D"]
        .iter()
        .map(|s| MeterId::parse(*s).unwrap())
        .collect();
    let mut first = Engine::new(DetectConfig::default());
    // First seen in the order the readings came: B, D, A, C.
    for i in [1, 3, 0, 2] {
        first.observe(&info(), &reading(&ids[i], 0, 1.0), &mut vec![]);
    }
    let saved = first.checkpoint_all();
    let place = |e: &Engine, id: &MeterId| e.slots[e.index[id]].member;
    // After the restart the registry registers them in id order, with two new
    // meters: one sorting among them, one after.
    let mut second = Engine::new(DetectConfig::default());
    let ab = MeterId::parse("AB").unwrap();
    let e = MeterId::parse("E").unwrap();
    for id in [&ids[0], &ab, &ids[1], &ids[2], &ids[3], &e] {
        second.register(id, &info());
    }
    second.restore(saved, |_| Some(info()));
    for id in &ids {
        assert_eq!(place(&second, id), place(&first, id), "{id}");
    }
    assert_eq!(place(&second, &ab), Some(4));
    assert_eq!(place(&second, &e), Some(5));
    let list = &second.members[&DistrictId::parse("D1").unwrap()];
    assert_eq!(list.len(), 6);
    for (m, &i) in list.iter().enumerate() {
        assert_eq!(second.slots[i].member, Some(m as u32));
        assert_eq!(second.slots[i].state.member, Some(m as u32));
    }
}

#[test]
fn a_closed_valve_teaches_nothing() {
    let m = MeterId::parse("A").unwrap();
    // Without the usage recogniser, which would take the days without gas for an
    // absence and mask them too.
    let mut e = Engine::new(DetectConfig {
        usage: UsageConfig {
            enabled: false,
            ..UsageConfig::default()
        },
        ..DetectConfig::default()
    });
    let mut out = vec![];
    let mut vol = 100.0;
    let mut feed = |e: &mut Engine, hours: std::ops::Range<i64>, litres: f64| {
        for h in hours {
            vol += litres / 1000.0;
            let mut r = reading(&m, h, vol);
            r.temp = Some(5.0);
            e.observe(&info(), &r, &mut out);
        }
    };
    let event = |h: i64, code: &str| MeterEvent {
        meter: m.clone(),
        t: t(h),
        code: leakwatch_core::EventCode::Named(code.into()),
    };
    let state = |e: &Engine| e.slots[e.index[&m]].state.clone();
    // Ten days heating through the night, then three days of a closed valve: no gas.
    feed(&mut e, 0..24 * 10, 50.0);
    feed(&mut e, 24 * 10..24 * 13, 0.0);
    let before = state(&e);
    assert_eq!(before.night.learned().len(), 13);
    assert!(before.night.learned()[..3].iter().all(|&(l, _)| l == 0));
    // The event arrives after the readings of its push: what they taught goes.
    e.observe_event(&info(), &event(24 * 10, "valve_closed"), &mut vec![]);
    let after = state(&e);
    assert_eq!(after.night.learned().len(), 10);
    assert!(after.night.learned().iter().all(|&(l, _)| l == 50));
    let cfg = DetectConfig::default();
    assert_eq!(
        after.continuous.history(&cfg.continuous_flow).1,
        0,
        "no zero day"
    );
    // Until the valve opens, nothing is learned; then learning resumes.
    feed(&mut e, 24 * 13..24 * 15, 0.0);
    assert_eq!(state(&e).night.learned().len(), 10);
    e.observe_event(&info(), &event(24 * 15, "valve_opened"), &mut vec![]);
    feed(&mut e, 24 * 15..24 * 17, 50.0);
    assert_eq!(state(&e).night.learned().len(), 12);
}

#[test]
fn state_of_an_older_version_is_skipped() {
    let mut e = Engine::new(DetectConfig::default());
    run(&mut e, &stream(0..48));
    let old: Vec<Saved> = e
        .checkpoint_all()
        .into_iter()
        .map(|s| match s {
            Saved::Meter(id, mut b) => {
                // Version 1 had no steady floor, day stamps or learning mask (and
                // version 2 no time of the latest event).
                b[0] = 1;
                Saved::Meter(id, b)
            }
            other => other,
        })
        .collect();
    let mut fresh = Engine::new(DetectConfig::default());
    let stats = fresh.restore(old, |_| Some(info()));
    assert_eq!((stats.meters, stats.skipped), (0, 2));
}

#[test]
fn a_replay_feeds_only_events_later_than_the_state_has_seen() {
    let event = |h: i64, code: &str| MeterEvent {
        meter: MeterId::parse("A").unwrap(),
        t: t(h),
        code: leakwatch_core::EventCode::Named(code.into()),
    };
    let mut e = Engine::new(DetectConfig::default());
    let mut out = vec![];
    e.observe_event(&info(), &event(24, "tamper"), &mut out);
    assert_eq!(out.len(), 1);
    // Restored from a checkpoint taken after that event.
    let mut restored = Engine::new(DetectConfig::default());
    restored.restore(e.checkpoint_all(), |_| Some(info()));
    let mut out = vec![];
    assert!(!restored.replay_event(&info(), &event(24, "tamper"), &mut out));
    assert!(!restored.replay_event(&info(), &event(12, "magnetic_field"), &mut out));
    assert!(out.is_empty(), "seen before the checkpoint: {out:?}");
    assert!(restored.replay_event(&info(), &event(30, "tamper"), &mut out));
    assert_eq!(out.len(), 1);
}

#[test]
fn a_meter_moved_to_another_district_joins_it_and_leaves_a_gap() {
    let a = MeterId::parse("A").unwrap();
    let b = MeterId::parse("B").unwrap();
    let d1 = DistrictId::parse("D1").unwrap();
    let d2 = DistrictId::parse("D2").unwrap();
    let mut e = Engine::new(DetectConfig::default());
    e.observe(&info(), &reading(&a, 0, 1.0), &mut vec![]);
    e.observe(&info(), &reading(&b, 0, 1.0), &mut vec![]);
    let moved = MeterInfo {
        district: d2.clone(),
        ..info()
    };
    e.observe(&moved, &reading(&a, 1, 1.1), &mut vec![]);
    let slot = &e.slots[e.index[&a]];
    assert_eq!(slot.info.district, d2);
    assert_eq!(slot.member, Some(0));
    assert_eq!(e.members[&d2], vec![e.index[&a]]);
    assert_eq!(e.districts[&d2].members(), 1);
    // D1 keeps B at its place; A's old place holds no meter.
    assert_eq!(e.members[&d1], vec![usize::MAX, e.index[&b]]);
    // The same entry again changes nothing.
    e.observe(&moved, &reading(&a, 2, 1.2), &mut vec![]);
    assert_eq!(e.members[&d2].len(), 1);
    // A restart keeps the move.
    let saved = e.checkpoint_all();
    let mut second = Engine::new(DetectConfig::default());
    second.register(&a, &moved);
    second.register(&b, &info());
    second.restore(saved, |_| None);
    assert_eq!(second.slots[second.index[&a]].member, Some(0));
    assert_eq!(second.members[&d2].len(), 1);
}

/// The scaled-out workers run districts in separate engines: a meter moved to a
/// district of another engine is adopted there with the state its old engine saved,
/// so what it learned (here: its last index, against which a regression shows)
/// goes with it.
#[test]
fn a_meter_adopted_from_another_engine_keeps_what_it_learned() {
    let a = MeterId::parse("A").unwrap();
    let d2 = DistrictId::parse("D2").unwrap();
    let mut old = Engine::new(DetectConfig::default());
    for h in 0..30 {
        old.observe(
            &info(),
            &reading(&a, h, 100.0 + 0.1 * h as f64),
            &mut vec![],
        );
    }
    let bytes = old
        .checkpoint_dirty()
        .into_iter()
        .find_map(|s| match s {
            Saved::Meter(id, b) if id == a => Some(b),
            _ => None,
        })
        .unwrap();
    let moved = MeterInfo {
        district: d2.clone(),
        ..info()
    };
    let regressed = reading(&a, 31, 90.0);
    // Without the state the regression is the meter's first reading: nothing found.
    let mut fresh = Engine::new(DetectConfig::default());
    let mut out = vec![];
    fresh.observe(&moved, &regressed, &mut out);
    assert!(out.iter().all(|f| f.kind != AlertKind::CounterRegression));
    let mut new = Engine::new(DetectConfig::default());
    new.register(&MeterId::parse("B").unwrap(), &moved);
    assert!(new.adopt(&a, &moved, &bytes));
    assert!(!new.adopt(&a, &moved, &bytes), "adopted once");
    assert!(!new.adopt(&MeterId::parse("C").unwrap(), &moved, b"garbage"));
    let slot = &new.slots[new.index[&a]];
    assert_eq!(
        (slot.info.district.clone(), slot.member),
        (d2.clone(), Some(1))
    );
    assert_eq!(slot.state.member, Some(1));
    assert_eq!(new.districts[&d2].members(), 2);
    let mut out = vec![];
    new.observe(&moved, &regressed, &mut out);
    assert!(
        out.iter().any(|f| f.kind == AlertKind::CounterRegression),
        "{out:?}"
    );
}

/// Hourly readings of one meter: `litres(day, local_hour)` an hour, gas at 5 °C.
fn feed_meter(
    e: &mut Engine,
    m: &MeterId,
    days: std::ops::Range<i64>,
    vol: &mut f64,
    litres: impl Fn(i64, i64) -> f64,
) -> Vec<Finding> {
    let mut out = vec![];
    for h in days.start * 24..days.end * 24 {
        // Local hour: UTC + 1.
        *vol += litres(h / 24, (h + 1).rem_euclid(24)) / 1000.0;
        let mut r = reading(m, h, *vol);
        r.temp = Some(5.0);
        e.observe(&info(), &r, &mut out);
    }
    out
}

#[test]
fn a_return_from_holiday_is_a_usage_change_not_a_leak() {
    let m = MeterId::parse("A").unwrap();
    let mut e = Engine::new(DetectConfig::default());
    let mut vol = 100.0;
    // A home heating through the night: 40 L/h at night, 150 L/h by day, with a
    // little variation from day to day.
    // The boiler's night burn varies from hour to hour (no steady floor).
    let home = |d: i64, l: i64| {
        let base = if (0..6).contains(&l) { 40.0 } else { 150.0 };
        base * (1.0 + 0.1 * ((d * 7 + l * 3) % 5) as f64)
    };
    let kinds = |f: &[Finding]| f.iter().map(|f| f.kind).collect::<Vec<_>>();
    let before = feed_meter(&mut e, &m, 0..30, &mut vol, home);
    assert!(
        before.iter().all(|f| !f.kind.is_leak()),
        "{:?}",
        kinds(&before)
    );
    // Two weeks away: nothing but a pilot-less frost guard (nothing at 5 °C).
    let away = feed_meter(&mut e, &m, 30..44, &mut vol, |_, _| 0.0);
    assert!(away.iter().all(|f| !f.kind.is_leak()), "{:?}", kinds(&away));
    assert!(e.slots[e.index[&m]].state.usage.absent());
    // Back: the same use as before.
    let back = feed_meter(&mut e, &m, 44..60, &mut vol, home);
    assert!(back.iter().all(|f| !f.kind.is_leak()), "{:?}", kinds(&back));
    let changes: Vec<_> = back
        .iter()
        .filter(|f| f.kind == AlertKind::UsageChange)
        .collect();
    assert_eq!(changes.len(), 1, "{:?}", kinds(&back));
    assert_eq!(changes[0].severity, Severity::Info);
    assert!(changes[0].evidence.explanation.contains("absence"));
}

#[test]
fn a_vacant_home_occupied_is_a_usage_change_and_a_leak_there_is_not() {
    let m = MeterId::parse("A").unwrap();
    let mut e = Engine::new(DetectConfig::default());
    let mut vol = 100.0;
    // Vacant for three weeks (nothing), then a household with quiet nights, its use
    // varying from hour to hour.
    feed_meter(&mut e, &m, 0..21, &mut vol, |_, _| 0.0);
    let household = |d: i64, l: i64| {
        if (0..7).contains(&l) {
            0.0
        } else {
            80.0 + ((d * 13 + l * 37) % 50) as f64
        }
    };
    let moved = feed_meter(&mut e, &m, 21..40, &mut vol, household);
    let kinds = |f: &[Finding]| f.iter().map(|f| f.kind).collect::<Vec<_>>();
    assert!(
        moved.iter().all(|f| !f.kind.is_leak()),
        "{:?}",
        kinds(&moved)
    );
    assert_eq!(
        moved
            .iter()
            .filter(|f| f.kind == AlertKind::UsageChange)
            .count(),
        1,
        "{:?}",
        kinds(&moved)
    );
    // A leak in another vacant home (a flow that never stops) is no move-in.
    let n = MeterId::parse("B").unwrap();
    let mut vol = 5.0;
    feed_meter(&mut e, &n, 0..21, &mut vol, |_, _| 0.0);
    let leak = feed_meter(&mut e, &n, 21..25, &mut vol, |_, _| 80.0);
    assert!(
        leak.iter().all(|f| f.kind != AlertKind::UsageChange),
        "{:?}",
        kinds(&leak)
    );
    assert!(leak.iter().any(|f| f.kind.is_leak()), "{:?}", kinds(&leak));
}

#[test]
fn silence_is_stamped_when_due_however_far_the_watermark_jumps() {
    let readings = stream(0..30);
    let silences = |steps: &[i64]| {
        let mut e = Engine::new(DetectConfig::default());
        let mut out = run(&mut e, &readings);
        for &h in steps {
            e.advance_to(t(h), &mut out);
        }
        out.retain(|f| f.kind == AlertKind::Silence);
        out.iter()
            .map(|f| (f.meter_id.clone().unwrap(), f.detected_at))
            .collect::<Vec<_>>()
    };
    let hourly: Vec<i64> = (30..=150).collect();
    let by_hour = silences(&hourly);
    let at_once = silences(&[150]);
    let in_two = silences(&[90, 150]);
    // B's last reading is at hour 29: silent past 29 + 24 + 24 = 77, then daily.
    let b = MeterId::parse("B").unwrap();
    let want: Vec<_> = [77, 101, 125, 149]
        .iter()
        .map(|&h| (b.clone(), t(h)))
        .collect();
    let of_b = |v: &Vec<(MeterId, Timestamp)>| {
        v.iter()
            .filter(|(m, _)| *m == b)
            .cloned()
            .collect::<Vec<_>>()
    };
    assert_eq!(of_b(&by_hour), want);
    assert_eq!(by_hour, at_once);
    assert_eq!(by_hour, in_two);
}

#[test]
fn a_new_meter_is_learning_until_it_has_its_days() {
    let a = MeterId::parse("A").unwrap();
    let mut e = Engine::new(DetectConfig::default());
    assert_eq!(e.learning(&a), None, "not seen yet");
    run(&mut e, &stream(0..24 * 3));
    let l = e.learning(&a).unwrap();
    assert_eq!(l.state(), "learning");
    assert!(l.learned_days < l.needed_days, "{l:?}");
    let mut e = Engine::new(DetectConfig::default());
    run(&mut e, &stream(0..24 * 12));
    assert_eq!(e.learning(&a).unwrap().state(), "learned");
    // B stopped reporting on its second day: still learning.
    let counts = e.learning_counts();
    assert_eq!((counts.learning, counts.learned), (1, 1));
}
