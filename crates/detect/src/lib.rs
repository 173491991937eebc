//! Leak detectors as pure state machines on event time.
//!
//! A detector takes readings, events or a watermark tick and returns zero or more
//! [`Finding`]s; it never does I/O and never reads the clock: its "now" is the
//! [`watermark::Watermark`] of the readings it has seen, so replaying history at full
//! speed raises the same findings, at the same `detected_at`, as living through it.
//! This crate owns detection rules and their per-meter state; storing alerts and
//! deciding what to do with them belongs to others.
//!
//! How a reading travels through the [`Engine`]: the meter's [`hours::HourSeries`]
//! turns cumulative indexes into clock hours of consumption; each closed hour of a
//! customer meter goes to its per-meter detectors ([`continuous`], [`night`],
//! [`level`], [`burst`]) and to its district's balance ([`district`]); a station's
//! hours go to the district (balance, inflow night flow); a pressure point's readings
//! go to [`pressure`]. Events and counter regressions go to [`integrity`]. Each
//! watermark hour, the engine checks silence and lets districts close their hours.
//!
//! State is checkpointed per subject ([`Engine::checkpoint_dirty`]) and restored
//! ([`Engine::restore`]), so a restart goes on where it stopped.

pub mod book;
pub mod burst;
mod common;
pub mod continuous;
pub mod district;
pub mod excess;
pub mod hours;
pub mod integrity;
pub mod level;
pub mod night;
pub mod pressure;
pub mod quiet;
pub mod suppress;
pub mod usage;
pub mod watermark;

use chrono::{DateTime, TimeDelta};
use hours::{Hour, HourSeries, Step};
use leakwatch_core::{
    AlertKind, DistrictId, Evidence, Finding, MeterEvent, MeterId, MeterKind, Reading, Severity,
    Timestamp,
};
use rustc_hash::FxHashMap as HashMap;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

pub use burst::{Burst, BurstConfig};
pub use continuous::{ContinuousFlow, ContinuousFlowConfig};
pub use district::{BalanceConfig, CustomerProfile, DistrictState, InflowNightConfig};
pub use excess::{NightExcess, NightExcessConfig};
pub use integrity::{Integrity, IntegrityConfig};
pub use level::{LevelShift, LevelShiftConfig};
pub use night::{NightFlow, NightFlowConfig};
pub use pressure::{PressureConfig, PressureDrop};
pub use quiet::{QuietHours, QuietHoursConfig};
pub use usage::{Usage, UsageConfig};
pub use watermark::Watermark;

/// Settings of every detector, with documented defaults.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct DetectConfig {
    /// Hours added to UTC to get the meters' local time, for night windows and days
    /// (default 1, Central European Time; daylight saving is not followed).
    pub local_utc_offset_h: i32,
    /// Readings needed at or beyond an hour before the watermark moves to it; the
    /// engine uses at most a quarter of the meters it knows, so a small fleet's
    /// watermark still moves (default 50).
    pub watermark_quorum: u32,
    /// An alert resolves itself once its condition has not been seen for this long,
    /// in event time of its district (default 72 h).
    pub resolve_after_h: u32,
    /// A gap between two readings of a meter is spread over at most this many hours
    /// (the latest ones); the hours before are one unresolved gap that no detector
    /// sees (default 336, two weeks): a reading years after the previous one costs
    /// at most this many hours of work.
    pub max_gap_h: u32,
    /// The service saves changed detector state this often, seconds (default 30), and
    /// at shutdown.
    pub checkpoint_every_s: u32,
    /// After a restart, readings from this many hours before the saved watermark are
    /// fed again, so what was stored after the last checkpoint is not missed; readings
    /// already seen are skipped (default 48).
    pub replay_h: u32,
    pub silence: SilenceConfig,
    pub continuous_flow: ContinuousFlowConfig,
    pub night_flow: NightFlowConfig,
    pub level_shift: LevelShiftConfig,
    pub burst: BurstConfig,
    pub integrity: IntegrityConfig,
    pub balance: BalanceConfig,
    pub inflow_night: InflowNightConfig,
    pub pressure: PressureConfig,
    pub usage: UsageConfig,
    pub quiet_hours: QuietHoursConfig,
    pub night_excess: NightExcessConfig,
}

impl Default for DetectConfig {
    fn default() -> Self {
        Self {
            local_utc_offset_h: 1,
            watermark_quorum: 50,
            resolve_after_h: 72,
            max_gap_h: 336,
            checkpoint_every_s: 30,
            replay_h: 48,
            silence: SilenceConfig::default(),
            continuous_flow: ContinuousFlowConfig::default(),
            night_flow: NightFlowConfig::default(),
            level_shift: LevelShiftConfig::default(),
            burst: BurstConfig::default(),
            integrity: IntegrityConfig::default(),
            balance: BalanceConfig::default(),
            inflow_night: InflowNightConfig::default(),
            pressure: PressureConfig::default(),
            usage: UsageConfig::default(),
            quiet_hours: QuietHoursConfig::default(),
            night_excess: NightExcessConfig::default(),
        }
    }
}

/// Silence: a meter whose latest reading is older than its reporting interval plus
/// a grace, judged against the watermark.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct SilenceConfig {
    /// Hours beyond the meter's `report_every_h` before it counts as silent (default 24).
    pub grace_h: u32,
    /// While a meter stays silent, the finding is repeated this often (default 24 h).
    pub repeat_h: u32,
}

impl Default for SilenceConfig {
    fn default() -> Self {
        Self {
            grace_h: 24,
            repeat_h: 24,
        }
    }
}

/// What the engine needs to know about a meter (from the registry).
#[derive(Debug, Clone, PartialEq)]
pub struct MeterInfo {
    pub kind: MeterKind,
    pub district: DistrictId,
    /// Expected reporting interval, hours.
    pub report_every_h: u32,
    /// Rated capacity, m³/h, when the registry knows it.
    pub max_flow_m3h: Option<f64>,
}

impl MeterInfo {
    pub fn of(meter: &leakwatch_core::Meter) -> Self {
        Self {
            kind: meter.kind,
            district: meter.district.clone(),
            report_every_h: meter.report_every_h,
            max_flow_m3h: meter.max_flow_m3h,
        }
    }
}

/// What a per-meter detector knows about the meter it judges.
#[derive(Debug, Clone, Copy)]
pub struct MeterCtx<'a> {
    pub id: &'a MeterId,
    pub district: &'a DistrictId,
    pub kind: MeterKind,
    pub report_every_h: u32,
    pub max_flow_m3h: Option<f64>,
    /// Hours added to UTC for local time.
    pub local_utc_offset_h: i32,
}

/// Every detector's state for one meter; what is checkpointed per meter.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MeterState {
    pub series: HourSeries,
    pub continuous: ContinuousFlow,
    pub night: NightFlow,
    pub level: LevelShift,
    pub burst: Burst,
    pub integrity: Integrity,
    pub profile: CustomerProfile,
    pub pressure: PressureDrop,
    /// Usage changes (absences, move-ins): masks the hours of an absence and
    /// restarts learning after a move-in.
    pub usage: Usage,
    /// The hours this meter is reliably quiet in (big leaks within hours).
    pub quiet: QuietHours,
    /// Night hours against the meter's floor and heating line (big leaks in a night).
    pub excess: NightExcess,
    /// When silence was last reported (Unix seconds), while the meter is silent.
    pub silence_reported: Option<i64>,
    /// The meter's index among its district's customers: saved so a restart gives it
    /// the same place in the district's open hours whatever the registration order.
    pub member: Option<u32>,
}

#[derive(Debug)]
struct Slot {
    id: MeterId,
    info: MeterInfo,
    /// Index of the meter among its district's customers (balance).
    member: Option<u32>,
    state: MeterState,
}

impl<'a> MeterCtx<'a> {
    /// What a meter's detectors know of it.
    fn new(id: &'a MeterId, info: &'a MeterInfo, local_utc_offset_h: i32) -> Self {
        MeterCtx {
            id,
            district: &info.district,
            kind: info.kind,
            report_every_h: info.report_every_h,
            max_flow_m3h: info.max_flow_m3h,
            local_utc_offset_h,
        }
    }
}

/// Where a customer meter is in learning its own pattern: with fewer than
/// `continuous.min_history_days` learned days it raises no leak-kind alert unless
/// the evidence is strong on its own (a steady floor above a pilot flame).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Learning {
    /// Days learned so far (at most `continuous.history_days`).
    pub learned_days: u32,
    /// Days needed before the meter's own pattern is used.
    pub needed_days: u32,
}

impl Learning {
    /// `learning` or `learned`.
    pub fn state(&self) -> &'static str {
        if self.learned_days >= self.needed_days {
            "learned"
        } else {
            "learning"
        }
    }
}

/// Customer meters seen by the engine, by learning state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct LearningCounts {
    pub learning: u64,
    pub learned: u64,
}

/// Silence reports one watermark move may emit for one meter; beyond them (a
/// watermark jumping weeks at once) the reports in between are skipped.
const MAX_SILENCE_REPORTS: u32 = 64;

/// State saved for one subject.
#[derive(Debug, Clone, PartialEq)]
pub enum Saved {
    Meter(MeterId, Vec<u8>),
    District(DistrictId, Vec<u8>),
    /// The engine's own state (the watermark).
    Engine(Vec<u8>),
}

/// One district's event time.
#[derive(Debug, Default)]
struct Clock {
    watermark: Watermark,
    /// Slots of the district's meters, every kind.
    slots: Vec<usize>,
}

/// A district's watermark moved: the time-driven rules on alerts (auto-resolution)
/// apply here, between the findings pushed before it and those after.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tick {
    /// How many findings the output held when the watermark moved (an index into
    /// the `out` vector the findings were pushed to).
    pub at: usize,
    pub district: DistrictId,
    pub watermark: Timestamp,
}

/// Runs every detector over readings, keeping one state per meter and per district.
///
/// Event time is kept per district: a reading moves its district's watermark only.
/// Findings are pushed to the caller's `out` and every watermark move is recorded
/// as a [`Tick`] ([`Engine::take_ticks`]) at its place among them, so a caller that
/// applies auto-resolution at each tick gets the same alerts however the stream was
/// cut into calls.
#[derive(Debug, Default)]
pub struct Engine {
    cfg: DetectConfig,
    slots: Vec<Slot>,
    index: HashMap<MeterId, usize>,
    districts: HashMap<DistrictId, DistrictState>,
    /// District members: slot indexes of each district's customers, by member index.
    members: HashMap<DistrictId, Vec<usize>>,
    /// Event time per district: each district's own watermark and every meter of it
    /// (any kind), so what a district raises does not depend on which other
    /// districts share the process.
    clocks: BTreeMap<DistrictId, Clock>,
    /// Watermark moves since the last [`Engine::take_ticks`], in order, each with the
    /// number of findings pushed before it.
    ticks: Vec<Tick>,
    /// Meters changed since the last checkpoint: a flag per slot and their list.
    dirty_flag: Vec<bool>,
    dirty: Vec<usize>,
    /// A district changed (an hour reached one, or the watermark closed hours)
    /// since the last checkpoint: every district is saved then. Districts are few;
    /// tracking each per reading would cost more than saving them all.
    districts_changed: bool,
    hours: Vec<Hour>,
}

impl Engine {
    pub fn new(cfg: DetectConfig) -> Self {
        Self {
            cfg,
            ..Self::default()
        }
    }

    pub fn config(&self) -> &DetectConfig {
        &self.cfg
    }

    /// How many meters have detector state.
    pub fn meters(&self) -> usize {
        self.slots.len()
    }

    /// The earliest of the districts' watermarks (the detectors' "now" that every
    /// district has reached), `None` while no district has one.
    pub fn watermark(&self) -> Option<Timestamp> {
        self.clocks.values().filter_map(|c| c.watermark.get()).min()
    }

    /// The latest of the districts' watermarks.
    pub fn latest_watermark(&self) -> Option<Timestamp> {
        self.clocks.values().filter_map(|c| c.watermark.get()).max()
    }

    /// Each district's watermark.
    pub fn district_watermarks(&self) -> impl Iterator<Item = (&DistrictId, Option<Timestamp>)> {
        self.clocks.iter().map(|(d, c)| (d, c.watermark.get()))
    }

    /// The watermark moves since the last call, in order; `Tick::at` indexes the
    /// findings pushed to `out` since the caller last drained it (callers drain
    /// findings and ticks together).
    pub fn take_ticks(&mut self) -> Vec<Tick> {
        std::mem::take(&mut self.ticks)
    }

    /// Makes every meter of a registry known; returns what the engine needs of each,
    /// by id, for the readings to come.
    pub fn register_registry(
        &mut self,
        registry: &[leakwatch_core::Meter],
    ) -> std::collections::HashMap<MeterId, MeterInfo> {
        registry
            .iter()
            .map(|m| {
                let info = MeterInfo::of(m);
                self.register(&m.id, &info);
                (m.id.clone(), info)
            })
            .collect()
    }

    /// Makes a meter known (from the registry at start-up, or on its first reading).
    /// Knowing every meter lets the district balance count who has not reported.
    /// A known meter given another registry entry (the ingestor follows registry
    /// changes while running) takes it: see [`Engine::update_info`].
    pub fn register(&mut self, id: &MeterId, info: &MeterInfo) -> usize {
        if let Some(&i) = self.index.get(id) {
            if self.slots[i].info != *info {
                self.update_info(i, info);
            }
            return i;
        }
        let i = self.slots.len();
        let member = (info.kind == MeterKind::Customer).then(|| {
            let list = self.members.entry(info.district.clone()).or_default();
            list.push(i);
            self.districts
                .entry(info.district.clone())
                .or_default()
                .add_member();
            (list.len() - 1) as u32
        });
        if info.kind == MeterKind::Station {
            self.districts.entry(info.district.clone()).or_default();
        }
        self.clocks
            .entry(info.district.clone())
            .or_default()
            .slots
            .push(i);
        self.dirty_flag.push(false);
        self.slots.push(Slot {
            id: id.clone(),
            info: info.clone(),
            member,
            state: MeterState {
                member,
                ..MeterState::default()
            },
        });
        self.index.insert(id.clone(), i);
        i
    }

    /// Whether the engine has a place for `id` (registered, restored or seen).
    pub fn knows(&self, id: &MeterId) -> bool {
        self.index.contains_key(id)
    }

    /// Takes in a meter this engine does not know yet with the state another engine
    /// saved for it ([`Saved::Meter`] bytes): a meter moved into a district this engine
    /// runs from one another engine runs (the scaled-out workers' partitions). It gets
    /// a new place in `info`'s district, as [`Engine::update_info`] gives a moved
    /// meter, and keeps what its detectors learned. `false` (nothing changed) when
    /// the engine knows the meter already or the state cannot be read.
    pub fn adopt(&mut self, id: &MeterId, info: &MeterInfo, bytes: &[u8]) -> bool {
        if self.knows(id) {
            return false;
        }
        let Some(mut state) = decode::<MeterState>(bytes) else {
            return false;
        };
        let i = self.register(id, info);
        state.member = self.slots[i].member;
        self.slots[i].state = state;
        self.mark(i);
        true
    }

    /// A meter's registry entry changed. Its detectors keep what they learned; a
    /// customer moved to another district (or a meter of another kind) leaves its old
    /// district's members (its place becomes a gap, imputed as nothing known, like a
    /// meter gone from the registry) and joins the new district's.
    fn update_info(&mut self, i: usize, info: &MeterInfo) {
        let old = std::mem::replace(&mut self.slots[i].info, info.clone());
        self.mark(i);
        if old.district == info.district && old.kind == info.kind {
            return;
        }
        if let Some(m) = self.slots[i].member.take()
            && let Some(place) = self
                .members
                .get_mut(&old.district)
                .and_then(|list| list.get_mut(m as usize))
        {
            *place = usize::MAX;
        }
        self.slots[i].state.member = None;
        match info.kind {
            MeterKind::Customer => {
                let list = self.members.entry(info.district.clone()).or_default();
                list.push(i);
                let m = (list.len() - 1) as u32;
                self.districts
                    .entry(info.district.clone())
                    .or_default()
                    .add_member();
                self.slots[i].member = Some(m);
                self.slots[i].state.member = Some(m);
            }
            MeterKind::Station => {
                self.districts.entry(info.district.clone()).or_default();
            }
            MeterKind::Pressure => {}
        }
        self.districts_changed = true;
    }

    /// Feeds one stored reading; findings are pushed to `out`.
    pub fn observe(&mut self, info: &MeterInfo, reading: &Reading, out: &mut Vec<Finding>) {
        let i = self.register(&reading.meter, info);
        self.mark(i);
        let district = self.slots[i].info.district.clone();
        let clock = self.clocks.entry(district.clone()).or_default();
        let share = (clock.slots.len() / 4).max(1) as u32;
        let quorum = self.cfg.watermark_quorum.clamp(1, share);
        let mut hours = std::mem::take(&mut self.hours);
        hours.clear();
        let cfg = &self.cfg;
        let slot = &mut self.slots[i];
        let ctx = MeterCtx::new(&slot.id, &slot.info, cfg.local_utc_offset_h);
        let st = &mut slot.state;
        if let Some(wm) = clock.watermark.get() {
            st.integrity
                .on_reading_time(&cfg.integrity, &ctx, reading.t, wm, out);
        }
        let step = st.series.push(
            reading.t,
            reading.vol,
            reading.temp,
            reading.flow_max,
            cfg.max_gap_h,
            &mut hours,
        );
        // Only readings new to their meter count toward the watermark: a reading
        // replayed after a restart (already seen before the checkpoint) is late for
        // its meter and leaves the watermark as it was.
        let moved = if step == Step::Late {
            None
        } else {
            st.silence_reported = None;
            clock.watermark.observe(reading.t, quorum)
        };
        if let Step::Regression { by_m3, previous } = step {
            st.integrity
                .on_regression(&cfg.integrity, &ctx, reading.t, by_m3, previous, out);
            st.continuous.reset();
        }
        match slot.info.kind {
            MeterKind::Customer => {
                for h in &hours {
                    // After a magnetic field or a closed valve, the hours are not
                    // learned: the register or the gas may have stopped. Nor while the
                    // home is away: an absence is not the new normal.
                    let masked;
                    let learn = if st.integrity.masks(h.start_s) || st.usage.absent() {
                        masked = Hour {
                            spread_h: h.spread_h.max(2),
                            ..*h
                        };
                        &masked
                    } else {
                        h
                    };
                    st.continuous
                        .on_hour(&cfg.continuous_flow, &ctx, learn, out);
                    st.night.on_hour(&cfg.night_flow, &ctx, learn, out);
                    st.level.on_hour(&cfg.level_shift, &ctx, learn, out);
                    st.quiet.on_hour(&cfg.quiet_hours, &ctx, learn, out);
                    st.excess.on_hour(&cfg.night_excess, &ctx, learn, out);
                    st.burst.on_hour(&cfg.burst, &ctx, h, out);
                    match st.usage.on_hour(&cfg.usage, &ctx, h, out) {
                        usage::Change::Relearn => {
                            st.continuous = ContinuousFlow::default();
                            st.night = NightFlow::default();
                            st.level = LevelShift::default();
                            st.quiet = QuietHours::default();
                            st.excess = NightExcess::default();
                        }
                        usage::Change::Absent { day } => {
                            // The absence's first day was learned before it was
                            // known: its empty night is no baseline for the cold
                            // nights after the return.
                            st.continuous.forget_since(i64::from(day));
                            st.night
                                .forget_since(i64::from(day), cfg.local_utc_offset_h);
                        }
                        usage::Change::None => {}
                    }
                }
                if let (Some(member), Some(d)) =
                    (slot.member, self.districts.get_mut(&slot.info.district))
                {
                    for h in &hours {
                        d.on_customer_hour(&cfg.balance, member, &mut st.profile, h);
                    }
                    self.districts_changed |= !hours.is_empty();
                }
            }
            MeterKind::Station => {
                let d = self
                    .districts
                    .entry(slot.info.district.clone())
                    .or_default();
                for h in &hours {
                    d.on_station_hour(&cfg.balance, &cfg.inflow_night, &ctx, h, out);
                }
                self.districts_changed |= !hours.is_empty();
            }
            MeterKind::Pressure => {
                st.pressure.on_reading(&cfg.pressure, &ctx, reading, out);
            }
        }
        self.hours = hours;
        if let Some(wm) = moved {
            self.on_watermark(&district, wm, out);
        }
    }

    /// Feeds one device event.
    pub fn observe_event(&mut self, info: &MeterInfo, event: &MeterEvent, out: &mut Vec<Finding>) {
        let i = self.register(&event.meter, info);
        self.mark(i);
        let slot = &mut self.slots[i];
        let ctx = MeterCtx::new(&slot.id, &slot.info, self.cfg.local_utc_offset_h);
        let st = &mut slot.state;
        st.integrity.on_event(&self.cfg.integrity, &ctx, event, out);
        if let Some(since) = st.integrity.on_mask_event(&self.cfg.integrity, event) {
            // The event comes with the push that carried the readings after it: forget
            // what those taught.
            let offset = self.cfg.local_utc_offset_h;
            let day = local_day(ts(since), offset);
            st.continuous.forget_since(day);
            st.night.forget_since(day, offset);
        }
    }

    /// Feeds a stored event again after a restart: only one later than every event
    /// the meter's restored state has seen (the others were judged before the
    /// checkpoint). Returns whether it was fed.
    pub fn replay_event(
        &mut self,
        info: &MeterInfo,
        event: &MeterEvent,
        out: &mut Vec<Finding>,
    ) -> bool {
        let fresh = match self.index.get(&event.meter) {
            Some(&i) => self.slots[i].state.integrity.is_new_event(event.t),
            None => true,
        };
        if fresh {
            self.observe_event(info, event, out);
        }
        fresh
    }

    /// Moves every district's watermark to at least `t` (e.g. when a replay ends) and
    /// runs the time-driven checks, district by district in id order.
    pub fn advance_to(&mut self, t: Timestamp, out: &mut Vec<Finding>) {
        let moved: Vec<(DistrictId, Timestamp)> = self
            .clocks
            .iter_mut()
            .filter_map(|(d, c)| {
                (c.watermark.force(t))
                    .then(|| c.watermark.get().map(|wm| (d.clone(), wm)))
                    .flatten()
            })
            .collect();
        for (d, wm) in moved {
            self.on_watermark(&d, wm, out);
        }
    }

    fn on_watermark(&mut self, district: &DistrictId, wm: Timestamp, out: &mut Vec<Finding>) {
        // Silence.
        let grace = i64::from(self.cfg.silence.grace_h);
        let repeat = i64::from(self.cfg.silence.repeat_h.max(1)) * 3600;
        let now = wm.timestamp();
        let own = self
            .clocks
            .get(district)
            .map(|c| c.slots.as_slice())
            .unwrap_or(&[]);
        // In order of due time (then of the district's meters), as a watermark moving
        // hour by hour would have found them.
        let mut silent = Vec::new();
        for &i in own {
            let slot = &mut self.slots[i];
            // Integer seconds: this runs for every meter every watermark hour.
            let Some(last_s) = slot.state.series.last_s() else {
                continue;
            };
            let limit_h = i64::from(slot.info.report_every_h) + grace;
            // The meter fell silent at `due` (its last reading plus the limit) and is
            // reported then and every `repeat` after, each report stamped with its own
            // due time, not the watermark: how far one watermark move jumps depends on
            // how the stream was cut, the due times do not.
            let due = last_s + limit_h * 3600;
            let mut at = match slot.state.silence_reported {
                Some(r) if r >= due => r + repeat,
                _ => due,
            };
            if at >= now {
                continue;
            }
            let last = ts(last_s);
            let limit = TimeDelta::hours(limit_h);
            let mut reports = 0;
            while at < now && reports < MAX_SILENCE_REPORTS {
                let when = ts(at);
                let silent_h = (when - last).num_hours();
                silent.push(Finding {
                    kind: AlertKind::Silence,
                    severity: Severity::Info,
                    meter_id: Some(slot.id.clone()),
                    district_id: Some(slot.info.district.clone()),
                    detected_at: when,
                    evidence: Evidence {
                        rule: format!("no reading for more than report_every_h + {grace} h"),
                        observed: silent_h as f64,
                        expected: Some(f64::from(slot.info.report_every_h)),
                        threshold: (limit.num_hours()) as f64,
                        unit: "h".into(),
                        window_start: last,
                        window_end: when,
                        explanation: format!(
                            "No reading for {silent_h} h; the meter should report every {} h.",
                            slot.info.report_every_h
                        ),
                        known: None,
                    },
                });
                slot.state.silence_reported = Some(at);
                reports += 1;
                at += repeat;
            }
            if at < now {
                // A watermark that jumped further than the cap allows: the reports
                // in between are skipped, the latest one due stands for them.
                slot.state.silence_reported = Some(now - (now - at) % repeat);
            }
            if !self.dirty_flag[i] {
                self.dirty_flag[i] = true;
                self.dirty.push(i);
            }
        }
        silent.sort_by_key(|f| f.detected_at);
        out.append(&mut silent);
        // The district closes its hours.
        let cfg = &self.cfg;
        if let Some(d) = self.districts.get_mut(district) {
            let members = self.members.get(district).map(Vec::as_slice).unwrap_or(&[]);
            let profiles: Vec<&CustomerProfile> = members
                .iter()
                .map(|&i| self.slots.get(i).map_or(&NO_PROFILE, |s| &s.state.profile))
                .collect();
            d.on_watermark(&cfg.balance, district, wm, &profiles, out);
        }
        self.districts_changed = true;
        self.ticks.push(Tick {
            at: out.len(),
            district: district.clone(),
            watermark: wm,
        });
    }

    fn mark(&mut self, i: usize) {
        if !self.dirty_flag[i] {
            self.dirty_flag[i] = true;
            self.dirty.push(i);
        }
    }

    /// The learning state of a customer meter the engine has seen readings of.
    pub fn learning(&self, id: &MeterId) -> Option<Learning> {
        let slot = &self.slots[*self.index.get(id)?];
        (slot.info.kind == MeterKind::Customer && slot.state.series.last_s().is_some()).then(|| {
            Learning {
                learned_days: slot
                    .state
                    .continuous
                    .learned_days(&self.cfg.continuous_flow),
                needed_days: self.cfg.continuous_flow.min_history_days,
            }
        })
    }

    /// How many customer meters with readings are learning and how many have learned
    /// (one pass over the meters: call it now and then, not per reading).
    pub fn learning_counts(&self) -> LearningCounts {
        let needed = self.cfg.continuous_flow.min_history_days;
        let mut counts = LearningCounts::default();
        for slot in &self.slots {
            if slot.info.kind != MeterKind::Customer || slot.state.series.last_s().is_none() {
                continue;
            }
            if slot
                .state
                .continuous
                .learned_days(&self.cfg.continuous_flow)
                >= needed
            {
                counts.learned += 1;
            } else {
                counts.learning += 1;
            }
        }
        counts
    }

    /// Serialises the state of every subject changed since the last call.
    ///
    /// Meters are saved when they changed; districts all together when any of them
    /// changed. [`Engine::checkpoint_all`] saves every district whatever.
    pub fn checkpoint_dirty(&mut self) -> Vec<Saved> {
        self.checkpoint(false)
    }

    /// [`Engine::checkpoint_dirty`] plus every district: nothing since the last
    /// checkpoint is left out.
    pub fn checkpoint_all(&mut self) -> Vec<Saved> {
        self.checkpoint(true)
    }

    fn checkpoint(&mut self, all_districts: bool) -> Vec<Saved> {
        let districts = all_districts || std::mem::take(&mut self.districts_changed);
        let mut saved = Vec::with_capacity(self.dirty.len() + self.districts.len() + 1);
        for i in std::mem::take(&mut self.dirty) {
            self.dirty_flag[i] = false;
            let slot = &self.slots[i];
            saved.push(Saved::Meter(slot.id.clone(), encode(&slot.state)));
        }
        if districts {
            for (id, d) in &self.districts {
                saved.push(Saved::District(id.clone(), encode(d)));
            }
        }
        let watermarks: BTreeMap<&DistrictId, &Watermark> =
            self.clocks.iter().map(|(d, c)| (d, &c.watermark)).collect();
        let mut engine = vec![ENGINE_VERSION];
        engine.extend(postcard::to_allocvec(&watermarks).unwrap_or_default());
        saved.push(Saved::Engine(engine));
        saved
    }

    /// Serialised size of one meter's state, bytes (the 1 KiB budget).
    pub fn state_size(&self, id: &MeterId) -> Option<usize> {
        self.index
            .get(id)
            .map(|&i| encode(&self.slots[i].state).len())
    }

    /// Restores saved state. Meters must be registered first (or are registered with
    /// `info_of`); state that cannot be read is skipped and counted in the result.
    pub fn restore(
        &mut self,
        saved: impl IntoIterator<Item = Saved>,
        info_of: impl Fn(&MeterId) -> Option<MeterInfo>,
    ) -> RestoreStats {
        let mut stats = RestoreStats::default();
        // Only restored meters have a saved place in their district; the others
        // (registered since the checkpoint) take free places afterwards.
        for slot in &mut self.slots {
            slot.state.member = None;
        }
        for s in saved {
            match s {
                Saved::Meter(id, bytes) => {
                    let Some(info) = self
                        .index
                        .get(&id)
                        .map(|&i| self.slots[i].info.clone())
                        .or_else(|| info_of(&id))
                    else {
                        stats.skipped += 1;
                        continue;
                    };
                    match decode::<MeterState>(&bytes) {
                        Some(state) => {
                            let i = self.register(&id, &info);
                            self.slots[i].state = state;
                            stats.meters += 1;
                        }
                        None => stats.skipped += 1,
                    }
                }
                Saved::District(id, bytes) => match decode::<DistrictState>(&bytes) {
                    Some(mut state) => {
                        let members = self.members.get(&id).map_or(0, Vec::len);
                        state.set_members(members);
                        self.districts.insert(id, state);
                        stats.districts += 1;
                    }
                    None => stats.skipped += 1,
                },
                Saved::Engine(bytes) => match bytes.split_first() {
                    Some((&ENGINE_VERSION, rest)) => {
                        match postcard::from_bytes::<BTreeMap<DistrictId, Watermark>>(rest) {
                            Ok(map) => {
                                for (d, w) in map {
                                    self.clocks.entry(d).or_default().watermark = w;
                                }
                            }
                            Err(_) => stats.skipped += 1,
                        }
                    }
                    // One watermark for the whole process (before event time was
                    // kept per district): every district starts from it.
                    Some((&ENGINE_VERSION_ONE_WATERMARK, rest)) => {
                        match postcard::from_bytes::<Watermark>(rest) {
                            Ok(w) => {
                                for c in self.clocks.values_mut() {
                                    c.watermark = w.clone();
                                }
                            }
                            Err(_) => stats.skipped += 1,
                        }
                    }
                    _ => stats.skipped += 1,
                },
            }
        }
        self.rebuild_members();
        stats
    }

    /// Puts every customer back at the member index its saved state had, so the
    /// districts' open hours still point at the right meters; meters without one
    /// (new since the checkpoint) fill the gaps, then go at the end. A gap left (a
    /// meter gone from the registry) holds no meter.
    fn rebuild_members(&mut self) {
        // Per district: (saved member index, slot) and slots without one.
        type Places = (Vec<(u32, usize)>, Vec<usize>);
        let mut by_district: HashMap<DistrictId, Places> = HashMap::default();
        for (i, slot) in self.slots.iter().enumerate() {
            if slot.info.kind != MeterKind::Customer {
                continue;
            }
            let entry = by_district.entry(slot.info.district.clone()).or_default();
            match slot.state.member {
                Some(m) => entry.0.push((m, i)),
                None => entry.1.push(i),
            }
        }
        for (district, (mut saved, mut fresh)) in by_district {
            saved.sort_unstable();
            let size = saved.last().map_or(0, |(m, _)| *m as usize + 1);
            let mut list: Vec<Option<usize>> = vec![None; size];
            for (m, i) in saved {
                match &mut list[m as usize] {
                    place @ None => *place = Some(i),
                    // Two meters claim one place (should not happen): the second is new.
                    Some(_) => fresh.push(i),
                }
            }
            fresh.reverse();
            for place in list.iter_mut().filter(|p| p.is_none()) {
                match fresh.pop() {
                    Some(i) => *place = Some(i),
                    None => break,
                }
            }
            fresh.reverse();
            list.extend(fresh.into_iter().map(Some));
            let list: Vec<usize> = list.into_iter().map(|p| p.unwrap_or(usize::MAX)).collect();
            for (m, &i) in list.iter().enumerate() {
                if let Some(slot) = self.slots.get_mut(i) {
                    slot.member = Some(m as u32);
                    slot.state.member = Some(m as u32);
                }
            }
            if let Some(d) = self.districts.get_mut(&district) {
                d.set_members(list.len());
            }
            self.members.insert(district, list);
        }
    }
}

/// The profile of a member no longer registered (imputed as nothing known).
static NO_PROFILE: CustomerProfile = CustomerProfile::EMPTY;

/// What [`Engine::restore`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RestoreStats {
    pub meters: usize,
    pub districts: usize,
    pub skipped: usize,
}

/// State format version: bump when a state struct changes shape; older state is then
/// skipped (the detectors relearn) rather than misread.
const STATE_VERSION: u8 = 6;

/// Format of the engine's own state (watermarks per district); the format before
/// (version byte 3, one watermark) is still read.
const ENGINE_VERSION: u8 = 5;
const ENGINE_VERSION_ONE_WATERMARK: u8 = 3;

fn encode<T: Serialize>(v: &T) -> Vec<u8> {
    let mut out = vec![STATE_VERSION];
    // Serialising plain structs into a Vec cannot fail.
    out.extend(postcard::to_allocvec(v).unwrap_or_default());
    out
}

fn decode<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Option<T> {
    match bytes.split_first() {
        Some((&STATE_VERSION, rest)) => postcard::from_bytes(rest).ok(),
        _ => None,
    }
}

/// Local hour of day (0..24) of a UTC time.
pub fn local_hour(t: Timestamp, offset_h: i32) -> u32 {
    // Integer arithmetic: this runs for every hour of every meter.
    ((t.timestamp() + i64::from(offset_h) * 3600).rem_euclid(86_400) / 3600) as u32
}

/// Whether a local day (days since the Unix epoch, as [`local_day`]) is a Saturday
/// or a Sunday (1970-01-01 was a Thursday).
pub fn is_weekend_day(day: i64) -> bool {
    (day + 3).rem_euclid(7) >= 5
}

/// Local calendar day (days since the Unix epoch) of a UTC time.
pub fn local_day(t: Timestamp, offset_h: i32) -> i64 {
    (t.timestamp() + i64::from(offset_h) * 3600).div_euclid(86_400)
}

/// Unix seconds to a timestamp (saturating to the epoch on nonsense).
pub fn ts(secs: i64) -> Timestamp {
    DateTime::from_timestamp(secs, 0).unwrap_or_default()
}

#[cfg(test)]
mod tests;
