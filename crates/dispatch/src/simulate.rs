//! A discrete-event simulation of emergency dispatch, to compare crew-choice policies on
//! the same month of emergencies. Pure and deterministic: everything random is drawn from
//! [`SimScenario::seed`] before the first event, so every policy in [`compare`] meets the
//! same emergencies and planned jobs.
//!
//! The model (time in minutes from a Monday 00:00; every day is a working day):
//! - **Area**: a `side_km` square centred on `center`. Travel times are
//!   [`BuiltinTravel::duration_s`]; the standard scenario has an urban core (the first
//!   speed area) of 4 km at 20 km/h, 45 km/h elsewhere, detour 1.3.
//! - **Crews** have homes drawn uniformly in the square. Crew `i` works shift
//!   `i % shifts.len()` every day; a shift whose end is before its start crosses midnight.
//!   A crew starts every shift at home. A crew still on a job when its shift ends
//!   finishes it (overtime) and then goes home.
//! - **Emergencies** arrive as a Poisson process (`emergencies_per_h`), a share
//!   `urban_share` uniformly in the urban core, the rest uniformly in the square. The
//!   policy picks a crew at once; the crew departs after `accept_delay_min`, drives, and
//!   stays `emergency_on_site_min` (uniform). With no crew to take it, the emergency
//!   waits in a first-come queue and is assigned as soon as one can; its arrival time
//!   always counts from its creation.
//! - **Planned jobs**: `planned_per_day` released at each midnight, uniformly in the
//!   square, `planned_on_site_min` each (uniform). An idle crew on shift with the
//!   `repair` skill takes the planned job it can reach soonest, if it can finish it
//!   before its shift ends (no accept delay). Unfinished jobs carry over. Planned work
//!   is the same under every policy; only the emergency choice differs.
//! - **Pre-emption** (policy [`SimPolicy::Nearest`] with `preempt`): an emergency may take
//!   a crew busy on a planned job ([`choose_nearest`]); the job goes back to the pool
//!   with the on-site work not yet done.
//! - **Moving crews**: a crew driving is placed by linear interpolation between origin
//!   and destination by the share of the drive done (close enough at 20 km); during its
//!   accept delay it is at its origin. An idle crew stays where its last job was.
//! - **Figures** ([`SimReport`]): arrival = on site − created, over the emergencies
//!   created within `days` (the run goes on until each is reached); utilisation = busy
//!   (accepting, driving, on site) ÷ on duty (shift plus overtime), both within `days`.

use crate::choose::{ChoicePolicy, CrewState, CurrentJob, choose_first_free, choose_nearest};
use crate::travel::{BuiltinTravel, SpeedArea};
use leakwatch_core::{CrewId, GeoPoint, Priority, WorkOrderStatus};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use std::cmp::Ordering;
use std::collections::{BinaryHeap, VecDeque};
use std::fmt::Write;

/// Minutes an emergency may take to be reached: the Italian regulator's standard.
pub const TARGET_MIN: f64 = 60.0;

/// Minutes in a day.
const DAY: f64 = 1440.0;

/// A uniform distribution of minutes, `min..=max`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Uniform {
    pub min: f64,
    pub max: f64,
}

impl Uniform {
    fn draw(&self, rng: &mut StdRng) -> f64 {
        self.min + (self.max - self.min) * rng.random::<f64>()
    }

    fn validate(&self, key: &str) -> Result<(), String> {
        if self.min.is_finite() && self.max.is_finite() && 0.0 < self.min && self.min <= self.max {
            Ok(())
        } else {
            Err(format!(
                "{key}: needs 0 < min <= max, got {}..{}",
                self.min, self.max
            ))
        }
    }
}

/// A daily shift, in minutes after midnight; `end_min < start_min` crosses midnight.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DailyShift {
    pub start_min: u32,
    pub end_min: u32,
}

impl DailyShift {
    fn len(&self) -> f64 {
        if self.end_min > self.start_min {
            f64::from(self.end_min - self.start_min)
        } else {
            f64::from(self.end_min) + DAY - f64::from(self.start_min)
        }
    }
}

/// What to simulate. Defaults: [`SimScenario::standard`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SimScenario {
    /// Seed of every random draw (homes, emergencies, planned jobs).
    pub seed: u64,
    /// Simulated days (30).
    pub days: u32,
    /// Centre of the service area (43.77, 11.25: Florence).
    pub center: GeoPoint,
    /// Side of the square service area, km (20).
    pub side_km: f64,
    /// Travel model; its first speed area is the urban core (4 km, 20 km/h; 45 km/h
    /// elsewhere; detour 1.3).
    pub travel: BuiltinTravel,
    /// Number of crews (10).
    pub crews: u32,
    /// Skills of every crew (`emergency`, `repair`).
    pub crew_skills: Vec<String>,
    /// The daily shifts; crew `i` works `shifts[i % len]` (06–14, 14–22, 22–06).
    pub shifts: Vec<DailyShift>,
    /// Mean emergencies per hour (0.6).
    pub emergencies_per_h: f64,
    /// Share of emergencies in the urban core (0.6).
    pub urban_share: f64,
    /// Minutes from assignment to departure (2).
    pub accept_delay_min: f64,
    /// Minutes on site for an emergency (30–90).
    pub emergency_on_site_min: Uniform,
    /// Planned jobs released each midnight (40).
    pub planned_per_day: u32,
    /// Minutes on site for a planned job (30–120).
    pub planned_on_site_min: Uniform,
}

impl Default for SimScenario {
    fn default() -> Self {
        Self::standard()
    }
}

impl SimScenario {
    /// The standard scenario: 30 days of a 20 km × 20 km area around Florence, 10 crews
    /// on three 8-hour shifts, 0.6 emergencies an hour, 40 planned jobs a day.
    pub fn standard() -> Self {
        let center = GeoPoint {
            lat: 43.77,
            lon: 11.25,
        };
        Self {
            seed: 1,
            days: 30,
            center,
            side_km: 20.0,
            travel: BuiltinTravel {
                detour_factor: 1.3,
                default_speed_kmh: 45.0,
                areas: vec![SpeedArea {
                    name: "urban core".into(),
                    center,
                    radius_km: 4.0,
                    speed_kmh: 20.0,
                }],
            },
            crews: 10,
            crew_skills: vec!["emergency".into(), "repair".into()],
            shifts: vec![
                DailyShift {
                    start_min: 360,
                    end_min: 840,
                },
                DailyShift {
                    start_min: 840,
                    end_min: 1320,
                },
                DailyShift {
                    start_min: 1320,
                    end_min: 360,
                },
            ],
            emergencies_per_h: 0.6,
            urban_share: 0.6,
            accept_delay_min: 2.0,
            emergency_on_site_min: Uniform {
                min: 30.0,
                max: 90.0,
            },
            planned_per_day: 40,
            planned_on_site_min: Uniform {
                min: 30.0,
                max: 120.0,
            },
        }
    }

    /// Checks the values; the message names the key.
    pub fn validate(&self) -> Result<(), String> {
        if self.days == 0 {
            return Err("days: must be at least 1".into());
        }
        if !(self.side_km.is_finite() && self.side_km > 0.0 && self.side_km <= 1000.0) {
            return Err(format!(
                "side_km: must be in (0, 1000], got {}",
                self.side_km
            ));
        }
        if GeoPoint::new(self.center.lat, self.center.lon).is_err() || self.center.lat.abs() > 80.0
        {
            return Err("center: latitude must be within ±80°".into());
        }
        self.travel.validate().map_err(|e| format!("travel.{e}"))?;
        if self.crews == 0 {
            return Err("crews: must be at least 1".into());
        }
        if !self.crew_skills.iter().any(|s| s == "emergency") {
            return Err("crew_skills: must include \"emergency\"".into());
        }
        if self.shifts.is_empty() {
            return Err("shifts: needs at least one shift".into());
        }
        for (i, s) in self.shifts.iter().enumerate() {
            if s.start_min >= 1440 || s.end_min > 1440 || s.start_min == s.end_min {
                return Err(format!(
                    "shifts[{i}]: needs start_min < 1440, end_min <= 1440 and start != end"
                ));
            }
        }
        if !(self.emergencies_per_h.is_finite() && self.emergencies_per_h >= 0.0) {
            return Err("emergencies_per_h: must be 0 or more".into());
        }
        if !(0.0..=1.0).contains(&self.urban_share) {
            return Err("urban_share: must be within 0..1".into());
        }
        if self.urban_share > 0.0 && self.travel.areas.is_empty() {
            return Err("urban_share: needs an urban core (travel.areas[0])".into());
        }
        if !(self.accept_delay_min.is_finite() && self.accept_delay_min >= 0.0) {
            return Err("accept_delay_min: must be 0 or more".into());
        }
        self.emergency_on_site_min
            .validate("emergency_on_site_min")?;
        self.planned_on_site_min.validate("planned_on_site_min")?;
        Ok(())
    }

    fn horizon(&self) -> f64 {
        f64::from(self.days) * DAY
    }
}

/// How emergencies are given to crews.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SimPolicy {
    /// [`choose_nearest`] on travel times from where each crew is now.
    Nearest(ChoicePolicy),
    /// [`choose_first_free`], crews in id order.
    FirstFree,
}

impl SimPolicy {
    /// A short name for tables.
    pub fn name(&self) -> String {
        match self {
            SimPolicy::Nearest(p) if !p.preempt => "nearest, no pre-emption".into(),
            SimPolicy::Nearest(p) if p.preempt_penalty_s == 600.0 => "nearest".into(),
            SimPolicy::Nearest(p) => format!("nearest, penalty {} s", p.preempt_penalty_s),
            SimPolicy::FirstFree => "first free".into(),
        }
    }
}

/// The figures of one run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SimReport {
    /// Emergencies created within the simulated days.
    pub emergencies: u32,
    /// Of those, reached within [`TARGET_MIN`] of their creation.
    pub within_60_min: u32,
    /// `within_60_min / emergencies` (0 without emergencies).
    pub within_60_share: f64,
    /// Minutes from creation to a crew on site.
    pub mean_arrival_min: f64,
    pub p95_arrival_min: f64,
    pub max_arrival_min: f64,
    /// Emergencies that found no crew at once and queued.
    pub queued: u32,
    /// Busy minutes ÷ on-duty minutes, all crews.
    pub utilisation: f64,
    pub planned_released: u32,
    /// Planned jobs finished within the simulated days.
    pub planned_done: u32,
    pub planned_left: u32,
    /// Planned jobs interrupted by an emergency.
    pub preemptions: u32,
}

/// Runs `scenario` under `policy`.
pub fn run(scenario: &SimScenario, policy: &SimPolicy) -> Result<SimReport, String> {
    scenario.validate()?;
    let world = World::draw(scenario);
    Ok(Sim::new(scenario, policy, &world).run().0)
}

/// Runs every policy on the same draw of `scenario`.
pub fn compare(
    scenario: &SimScenario,
    policies: &[SimPolicy],
) -> Result<Vec<(String, SimReport)>, String> {
    scenario.validate()?;
    let world = World::draw(scenario);
    Ok(policies
        .iter()
        .map(|p| (p.name(), Sim::new(scenario, p, &world).run().0))
        .collect())
}

/// The reports as a table for people.
pub fn table(reports: &[(String, SimReport)]) -> String {
    let mut s = format!(
        "{:<24} {:>6} {:>7} {:>7} {:>7} {:>7} {:>7} {:>6} {:>6} {:>17} {:>9}\n",
        "policy",
        "emerg.",
        "<=60min",
        "share",
        "mean",
        "p95",
        "max",
        "queued",
        "util.",
        "planned done/left",
        "pre-empt."
    );
    for (name, r) in reports {
        let _ = writeln!(
            s,
            "{:<24} {:>6} {:>7} {:>6.1}% {:>7.1} {:>7.1} {:>7.1} {:>6} {:>5.1}% {:>12}/{:<4} {:>9}",
            name,
            r.emergencies,
            r.within_60_min,
            100.0 * r.within_60_share,
            r.mean_arrival_min,
            r.p95_arrival_min,
            r.max_arrival_min,
            r.queued,
            100.0 * r.utilisation,
            r.planned_done,
            r.planned_left,
            r.preemptions
        );
    }
    s
}

// ---------------------------------------------------------------------------------------
// The random draw.

struct Emergency {
    created: f64,
    at: GeoPoint,
    on_site: f64,
}

struct Planned {
    released: f64,
    at: GeoPoint,
    on_site: f64,
}

/// Everything random, drawn before the run.
struct World {
    homes: Vec<GeoPoint>,
    emergencies: Vec<Emergency>,
    planned: Vec<Planned>,
}

/// An independent stream per kind of draw, so that e.g. more crews do not move the
/// emergencies.
fn stream(seed: u64, salt: u64) -> StdRng {
    StdRng::seed_from_u64(seed ^ salt.wrapping_mul(0x9E37_79B9_7F4A_7C15))
}

impl World {
    fn draw(s: &SimScenario) -> World {
        let half = s.side_km / 2.0;
        let in_square = |rng: &mut StdRng| {
            let n = rng.random_range(-half..=half);
            let e = rng.random_range(-half..=half);
            s.center.offset_km(n, e)
        };
        let mut rng = stream(s.seed, 1);
        let homes = (0..s.crews).map(|_| in_square(&mut rng)).collect();

        let mut rng = stream(s.seed, 2);
        let mut emergencies = Vec::new();
        let per_min = s.emergencies_per_h / 60.0;
        if per_min > 0.0 {
            let mut t = 0.0;
            loop {
                t += -(1.0 - rng.random::<f64>()).ln() / per_min;
                if t >= s.horizon() {
                    break;
                }
                let at = match s.travel.areas.first() {
                    Some(core) if rng.random::<f64>() < s.urban_share => {
                        let r = core.radius_km * rng.random::<f64>().sqrt();
                        let a = rng.random_range(0.0..std::f64::consts::TAU);
                        core.center.offset_km(r * a.sin(), r * a.cos())
                    }
                    _ => in_square(&mut rng),
                };
                let on_site = s.emergency_on_site_min.draw(&mut rng);
                emergencies.push(Emergency {
                    created: t,
                    at,
                    on_site,
                });
            }
        }

        let mut rng = stream(s.seed, 3);
        let planned = (0..s.days)
            .flat_map(|d| (0..s.planned_per_day).map(move |_| f64::from(d) * DAY))
            .map(|released| Planned {
                released,
                at: in_square(&mut rng),
                on_site: s.planned_on_site_min.draw(&mut rng),
            })
            .collect();
        World {
            homes,
            emergencies,
            planned,
        }
    }
}

// ---------------------------------------------------------------------------------------
// The run.

#[derive(Debug, Clone, Copy, PartialEq)]
enum Job {
    Emergency(usize),
    Planned(usize),
}

/// A crew's current job: accept (until `depart`), drive (until `arrive`), work.
#[derive(Debug, Clone, Copy)]
struct Task {
    job: Job,
    from: GeoPoint,
    to: GeoPoint,
    depart: f64,
    arrive: f64,
}

struct Crew {
    id: CrewId,
    home: GeoPoint,
    /// Within its scheduled shift: may take new work.
    on_shift: bool,
    /// End of the current (or last) shift.
    shift_end: f64,
    /// On shift, or finishing a job after it.
    on_duty: bool,
    duty_since: f64,
    busy_since: f64,
    /// Where it is when it has no task.
    place: GeoPoint,
    task: Option<Task>,
    /// Bumped on every new task, so a pre-empted task's `Done` is ignored.
    token: u64,
}

impl Crew {
    fn position(&self, t: f64) -> GeoPoint {
        let Some(k) = &self.task else {
            return self.place;
        };
        if t <= k.depart {
            k.from
        } else if t >= k.arrive {
            k.to
        } else {
            let f = (t - k.depart) / (k.arrive - k.depart);
            GeoPoint {
                lat: k.from.lat + f * (k.to.lat - k.from.lat),
                lon: k.from.lon + f * (k.to.lon - k.from.lon),
            }
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Ev {
    Emergency(usize),
    ShiftStart { crew: usize, end: f64 },
    ShiftEnd(usize),
    Release(usize),
    Done { crew: usize, token: u64 },
}

/// A scheduled event; the heap pops the earliest, then the first scheduled.
struct At {
    t: f64,
    seq: u64,
    ev: Ev,
}

impl PartialEq for At {
    fn eq(&self, o: &Self) -> bool {
        self.cmp(o) == Ordering::Equal
    }
}
impl Eq for At {}
impl PartialOrd for At {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for At {
    fn cmp(&self, o: &Self) -> Ordering {
        o.t.total_cmp(&self.t).then_with(|| o.seq.cmp(&self.seq))
    }
}

/// What happened to one emergency (`crew` and `from` are for the tests' checks).
#[derive(Debug, Clone, Copy)]
#[cfg_attr(not(test), allow(dead_code))]
struct Outcome {
    crew: usize,
    /// Where the crew was when assigned.
    from: GeoPoint,
    /// Minutes from creation to a crew on site.
    arrival_min: f64,
    queued: bool,
}

struct Sim<'a> {
    s: &'a SimScenario,
    policy: &'a SimPolicy,
    world: &'a World,
    horizon: f64,
    crews: Vec<Crew>,
    heap: BinaryHeap<At>,
    seq: u64,
    queue: VecDeque<usize>,
    /// Planned jobs waiting for a crew.
    pool: Vec<usize>,
    /// On-site minutes each planned job still needs.
    remaining: Vec<f64>,
    outcomes: Vec<Option<Outcome>>,
    planned_done: u32,
    preemptions: u32,
    busy_min: f64,
    duty_min: f64,
}

impl<'a> Sim<'a> {
    fn new(s: &'a SimScenario, policy: &'a SimPolicy, world: &'a World) -> Self {
        let crews = world
            .homes
            .iter()
            .enumerate()
            .map(|(i, &home)| Crew {
                id: CrewId::parse(format!("C{:04}", i + 1)).expect("a valid crew id"),
                home,
                on_shift: false,
                shift_end: 0.0,
                on_duty: false,
                duty_since: 0.0,
                busy_since: 0.0,
                place: home,
                task: None,
                token: 0,
            })
            .collect();
        let mut sim = Sim {
            s,
            policy,
            world,
            horizon: s.horizon(),
            crews,
            heap: BinaryHeap::new(),
            seq: 0,
            queue: VecDeque::new(),
            pool: Vec::new(),
            remaining: world.planned.iter().map(|p| p.on_site).collect(),
            outcomes: vec![None; world.emergencies.len()],
            planned_done: 0,
            preemptions: 0,
            busy_min: 0.0,
            duty_min: 0.0,
        };
        for c in 0..sim.crews.len() {
            let shift = s.shifts[c % s.shifts.len()];
            // from the shift that began the day before (it may still run at 0) to two
            // days past the end, for emergencies still queued then
            for d in -1..=i64::from(s.days) + 2 {
                let start = d as f64 * DAY + f64::from(shift.start_min);
                let end = start + shift.len();
                if end > 0.0 {
                    sim.push(start.max(0.0), Ev::ShiftStart { crew: c, end });
                    sim.push(end, Ev::ShiftEnd(c));
                }
            }
        }
        for e in 0..world.emergencies.len() {
            sim.push(world.emergencies[e].created, Ev::Emergency(e));
        }
        for d in 0..s.days as usize {
            sim.push(d as f64 * DAY, Ev::Release(d));
        }
        sim
    }

    fn push(&mut self, t: f64, ev: Ev) {
        self.seq += 1;
        self.heap.push(At {
            t,
            seq: self.seq,
            ev,
        });
    }

    /// Minutes of `[a, b]` within the simulated days.
    fn clipped(&self, a: f64, b: f64) -> f64 {
        (b.min(self.horizon) - a.min(self.horizon)).max(0.0)
    }

    fn travel_min(&self, a: &GeoPoint, b: &GeoPoint) -> f64 {
        self.s.travel.duration_s(a, b) / 60.0
    }

    fn run(mut self) -> (SimReport, Vec<Option<Outcome>>) {
        while let Some(At { t, ev, .. }) = self.heap.pop() {
            if t > self.horizon && self.queue.is_empty() {
                break;
            }
            match ev {
                Ev::Emergency(e) => self.queue.push_back(e),
                Ev::ShiftStart { crew, end } => self.shift_start(crew, t, end),
                Ev::ShiftEnd(crew) => self.shift_end(crew, t),
                Ev::Release(d) => {
                    let n = self.s.planned_per_day as usize;
                    self.pool.extend(d * n..(d + 1) * n);
                }
                Ev::Done { crew, token } => self.done(crew, token, t),
            }
            self.dispatch(t);
        }
        // close what is still open at the end of the simulated days
        for i in 0..self.crews.len() {
            let c = &self.crews[i];
            if c.task.is_some() {
                self.busy_min += self.clipped(c.busy_since, self.horizon);
            }
            if c.on_duty {
                self.duty_min += self.clipped(c.duty_since, self.horizon);
            }
        }
        (self.report(), self.outcomes)
    }

    fn shift_start(&mut self, i: usize, t: f64, end: f64) {
        let c = &mut self.crews[i];
        c.on_shift = true;
        c.shift_end = end;
        if !c.on_duty {
            c.on_duty = true;
            c.duty_since = t;
            c.place = c.home;
        }
    }

    fn shift_end(&mut self, i: usize, t: f64) {
        self.crews[i].on_shift = false;
        if self.crews[i].task.is_none() {
            self.off_duty(i, t);
        }
    }

    fn off_duty(&mut self, i: usize, t: f64) {
        let since = self.crews[i].duty_since;
        self.duty_min += self.clipped(since, t);
        let c = &mut self.crews[i];
        c.on_duty = false;
        c.place = c.home;
    }

    fn done(&mut self, i: usize, token: u64, t: f64) {
        let c = &self.crews[i];
        if c.token != token {
            return; // pre-empted
        }
        let Some(task) = c.task else { return };
        self.busy_min += self.clipped(c.busy_since, t);
        if matches!(task.job, Job::Planned(_)) && t <= self.horizon {
            self.planned_done += 1;
        }
        let c = &mut self.crews[i];
        c.task = None;
        c.place = task.to;
        if !c.on_shift {
            self.off_duty(i, t);
        }
    }

    /// Gives queued emergencies, then planned jobs, to the crews that can take them.
    fn dispatch(&mut self, t: f64) {
        while let Some(&e) = self.queue.front() {
            let Some((crew, preempts)) = self.pick(e, t) else {
                break; // no crew can take any emergency now
            };
            self.queue.pop_front();
            self.assign_emergency(crew, e, t, preempts);
        }
        if t >= self.horizon || self.pool.is_empty() {
            return;
        }
        let repairs = self.s.crew_skills.iter().any(|s| s == "repair");
        for i in 0..self.crews.len() {
            let c = &self.crews[i];
            if !(repairs && c.on_shift && c.task.is_none()) {
                continue;
            }
            let best = self
                .pool
                .iter()
                .enumerate()
                .map(|(k, &p)| (k, p, self.travel_min(&c.place, &self.world.planned[p].at)))
                .filter(|&(_, p, tr)| t + tr + self.remaining[p] <= c.shift_end)
                .min_by(|a, b| a.2.total_cmp(&b.2).then_with(|| a.1.cmp(&b.1)));
            if let Some((k, p, travel)) = best {
                self.pool.swap_remove(k);
                let c = &mut self.crews[i];
                let task = Task {
                    job: Job::Planned(p),
                    from: c.place,
                    to: self.world.planned[p].at,
                    depart: t,
                    arrive: t + travel,
                };
                c.busy_since = t;
                self.start(i, task, self.remaining[p]);
            }
        }
    }

    /// Starts `task` on crew `i`; it ends `on_site` minutes after arrival.
    fn start(&mut self, i: usize, task: Task, on_site: f64) {
        let c = &mut self.crews[i];
        c.task = Some(task);
        c.token += 1;
        let token = c.token;
        self.push(task.arrive + on_site, Ev::Done { crew: i, token });
    }

    /// The crews as [`choose_nearest`] sees them at `t`.
    fn states(&self, t: f64) -> Vec<CrewState> {
        self.crews
            .iter()
            .map(|c| CrewState {
                id: c.id.clone(),
                skills: self.s.crew_skills.clone(),
                on_shift: c.on_shift,
                position: c.position(t),
                current: c.task.map(|k| {
                    let (order_id, priority) = match k.job {
                        Job::Emergency(e) => (e as i64, Priority::Emergency),
                        Job::Planned(p) => (p as i64, Priority::Normal),
                    };
                    let status = if t < k.depart {
                        WorkOrderStatus::Accepted
                    } else if t < k.arrive {
                        WorkOrderStatus::EnRoute
                    } else {
                        WorkOrderStatus::OnSite
                    };
                    CurrentJob {
                        order_id,
                        priority,
                        status,
                    }
                }),
            })
            .collect()
    }

    /// The crew for emergency `e` at `t`, and whether it pre-empts a planned job.
    fn pick(&self, e: usize, t: f64) -> Option<(usize, bool)> {
        let states = self.states(t);
        let index = |id: &CrewId| states.iter().position(|c| &c.id == id);
        match self.policy {
            SimPolicy::Nearest(policy) => {
                let at = self.world.emergencies[e].at;
                let travel: Vec<f64> = states
                    .iter()
                    .map(|c| self.s.travel.duration_s(&c.position, &at))
                    .collect();
                let choice = choose_nearest(
                    &states,
                    &travel,
                    "emergency",
                    Priority::Emergency,
                    policy,
                    &[],
                )?;
                Some((index(&choice.crew_id)?, choice.preempts.is_some()))
            }
            SimPolicy::FirstFree => {
                let id = choose_first_free(&states, "emergency", &[])?;
                Some((index(&id)?, false))
            }
        }
    }

    fn assign_emergency(&mut self, i: usize, e: usize, t: f64, preempts: bool) {
        let from = self.crews[i].position(t);
        if let Some(old) = self.crews[i].task {
            let Job::Planned(p) = old.job else {
                unreachable!("emergencies are never pre-empted")
            };
            debug_assert!(preempts);
            self.preemptions += 1;
            self.remaining[p] -= (t - old.arrive).max(0.0);
            self.remaining[p] = self.remaining[p].max(0.0);
            self.pool.push(p);
        } else {
            self.crews[i].busy_since = t;
        }
        let em = &self.world.emergencies[e];
        let depart = t + self.s.accept_delay_min;
        let arrive = depart + self.travel_min(&from, &em.at);
        self.outcomes[e] = Some(Outcome {
            crew: i,
            from,
            arrival_min: arrive - em.created,
            queued: t > em.created,
        });
        let task = Task {
            job: Job::Emergency(e),
            from,
            to: em.at,
            depart,
            arrive,
        };
        self.start(i, task, em.on_site);
    }

    fn report(&self) -> SimReport {
        let mut arrivals: Vec<f64> = self
            .outcomes
            .iter()
            .map(|o| o.map_or(f64::INFINITY, |o| o.arrival_min))
            .collect();
        arrivals.sort_by(f64::total_cmp);
        let n = arrivals.len();
        let within = arrivals.iter().filter(|&&a| a <= TARGET_MIN).count();
        let share = |k: usize| if n == 0 { 0.0 } else { k as f64 / n as f64 };
        let released = self
            .world
            .planned
            .iter()
            .filter(|p| p.released < self.horizon)
            .count() as u32;
        SimReport {
            emergencies: n as u32,
            within_60_min: within as u32,
            within_60_share: share(within),
            mean_arrival_min: if n == 0 {
                0.0
            } else {
                arrivals.iter().sum::<f64>() / n as f64
            },
            p95_arrival_min: if n == 0 {
                0.0
            } else {
                arrivals[(0.95 * n as f64).ceil() as usize - 1]
            },
            max_arrival_min: arrivals.last().copied().unwrap_or(0.0),
            queued: self.outcomes.iter().flatten().filter(|o| o.queued).count() as u32,
            utilisation: if self.duty_min > 0.0 {
                self.busy_min / self.duty_min
            } else {
                0.0
            },
            planned_released: released,
            planned_done: self.planned_done,
            planned_left: released - self.planned_done,
            preemptions: self.preemptions,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    fn nearest() -> SimPolicy {
        SimPolicy::Nearest(ChoicePolicy::default())
    }

    fn detailed(s: &SimScenario, p: &SimPolicy) -> (SimReport, Vec<Option<Outcome>>, World) {
        s.validate().unwrap();
        let world = World::draw(s);
        let (r, o) = Sim::new(s, p, &world).run();
        (r, o, world)
    }

    #[test]
    fn the_same_seed_gives_the_same_report() {
        let s = SimScenario {
            days: 7,
            ..SimScenario::standard()
        };
        for p in [nearest(), SimPolicy::FirstFree] {
            assert_eq!(run(&s, &p).unwrap(), run(&s, &p).unwrap());
        }
        let other = SimScenario {
            seed: 2,
            ..s.clone()
        };
        assert_ne!(
            run(&s, &nearest()).unwrap(),
            run(&other, &nearest()).unwrap()
        );
    }

    #[test]
    fn one_crew_far_away_rarely_makes_it() {
        let s = SimScenario {
            days: 10,
            side_km: 200.0,
            urban_share: 0.0,
            crews: 1,
            shifts: vec![DailyShift {
                start_min: 0,
                end_min: 1440,
            }],
            emergencies_per_h: 0.1,
            ..SimScenario::standard()
        };
        let r = run(&s, &nearest()).unwrap();
        assert!(r.emergencies > 10, "{r:?}");
        assert!(r.within_60_share < 0.2, "{r:?}");
        assert!(r.mean_arrival_min > 120.0, "{r:?}");
    }

    #[test]
    fn nearest_beats_first_free_on_the_standard_scenario() {
        let s = SimScenario::standard();
        let started = Instant::now();
        let reports = compare(
            &s,
            &[
                nearest(),
                SimPolicy::Nearest(ChoicePolicy {
                    preempt: false,
                    ..ChoicePolicy::default()
                }),
                SimPolicy::FirstFree,
            ],
        )
        .unwrap();
        let took = started.elapsed();
        println!("{}", table(&reports));
        println!("{}", serde_json::to_string_pretty(&reports).unwrap());
        println!("3 runs of 30 days in {took:?}");
        let (near, first) = (&reports[0].1, &reports[2].1);
        assert_eq!(near.emergencies, first.emergencies, "the same emergencies");
        assert!(near.emergencies > 300, "0.6/h over 30 days: {near:?}");
        assert!(
            near.within_60_share > first.within_60_share,
            "{near:?} {first:?}"
        );
        assert!(
            near.mean_arrival_min < first.mean_arrival_min,
            "{near:?} {first:?}"
        );
        assert_eq!(first.preemptions, 0);
        assert!(took.as_secs_f64() < 10.0, "{took:?}");
    }

    #[test]
    fn arrival_is_never_faster_than_the_drive() {
        let s = SimScenario {
            days: 10,
            ..SimScenario::standard()
        };
        for p in [nearest(), SimPolicy::FirstFree] {
            let (r, outcomes, world) = detailed(&s, &p);
            assert_eq!(outcomes.len(), r.emergencies as usize);
            for (o, e) in outcomes.iter().zip(&world.emergencies) {
                let o = o.expect("every emergency is reached");
                let drive = s.travel.duration_s(&o.from, &e.at) / 60.0;
                assert!(o.arrival_min + 1e-9 >= drive + s.accept_delay_min, "{o:?}");
                assert!(o.crew < s.crews as usize);
            }
            assert!(r.p95_arrival_min <= r.max_arrival_min);
            assert!(r.mean_arrival_min <= r.max_arrival_min);
        }
    }

    #[test]
    fn utilisation_is_a_share() {
        for (crews, planned) in [(1, 0), (1, 40), (10, 40), (3, 200), (30, 0)] {
            let s = SimScenario {
                days: 5,
                crews,
                planned_per_day: planned,
                ..SimScenario::standard()
            };
            for p in [nearest(), SimPolicy::FirstFree] {
                let r = run(&s, &p).unwrap();
                assert!(
                    (0.0..=1.0).contains(&r.utilisation),
                    "{crews} {planned} {r:?}"
                );
                assert_eq!(r.planned_released, 5 * planned);
                assert_eq!(r.planned_done + r.planned_left, r.planned_released);
            }
        }
        // no work: nobody is busy
        let idle = SimScenario {
            days: 2,
            emergencies_per_h: 0.0,
            planned_per_day: 0,
            ..SimScenario::standard()
        };
        let r = run(&idle, &nearest()).unwrap();
        assert_eq!((r.emergencies, r.utilisation), (0, 0.0));
        assert_eq!(r.within_60_share, 0.0);
    }

    #[test]
    fn preemption_only_when_the_policy_allows_it() {
        let s = SimScenario {
            days: 10,
            ..SimScenario::standard()
        };
        let on = run(&s, &nearest()).unwrap();
        let off = run(
            &s,
            &SimPolicy::Nearest(ChoicePolicy {
                preempt: false,
                ..ChoicePolicy::default()
            }),
        )
        .unwrap();
        assert!(on.preemptions > 0, "{on:?}");
        assert_eq!(off.preemptions, 0);
    }

    #[test]
    fn draws_stay_in_the_area() {
        let s = SimScenario::standard();
        let w = World::draw(&s);
        let half = s.side_km / 2.0 * 1.0001;
        let core = &s.travel.areas[0];
        let in_core = w
            .emergencies
            .iter()
            .filter(|e| core.center.distance_km(&e.at) <= core.radius_km)
            .count() as f64;
        let share = in_core / w.emergencies.len() as f64;
        // 60 % drawn in the core, plus the uniform ones that fall in it (~12 % of 40 %)
        assert!((0.55..0.75).contains(&share), "{share}");
        for p in w.homes.iter().chain(w.planned.iter().map(|p| &p.at)) {
            let (north, east) = p.km_from(&s.center);
            assert!(north.abs() <= half && east.abs() <= half, "{p:?}");
        }
        // more crews do not move the emergencies
        let w2 = World::draw(&SimScenario { crews: 3, ..s });
        assert_eq!(w2.emergencies.len(), w.emergencies.len());
        assert_eq!(w2.emergencies[5].at, w.emergencies[5].at);
    }

    #[test]
    fn scenarios_read_from_json_and_are_validated() {
        let s: SimScenario = serde_json::from_str(r#"{"crews":4,"days":3}"#).unwrap();
        assert_eq!(
            s,
            SimScenario {
                crews: 4,
                days: 3,
                ..SimScenario::standard()
            }
        );
        assert!(serde_json::from_str::<SimScenario>(r#"{"teams":4}"#).is_err());
        let bad = SimScenario {
            crews: 0,
            ..SimScenario::standard()
        };
        assert!(run(&bad, &nearest()).unwrap_err().starts_with("crews:"));
        let bad = SimScenario {
            emergency_on_site_min: Uniform {
                min: 90.0,
                max: 30.0,
            },
            ..SimScenario::standard()
        };
        assert!(
            bad.validate()
                .unwrap_err()
                .starts_with("emergency_on_site_min:")
        );
        let mut bad = SimScenario::standard();
        bad.travel.default_speed_kmh = 0.0;
        assert!(
            bad.validate()
                .unwrap_err()
                .starts_with("travel.default_speed_kmh:")
        );
        let p: SimPolicy = serde_json::from_str(r#"{"nearest":{"preempt":false}}"#).unwrap();
        assert_eq!(p.name(), "nearest, no pre-emption");
        let p: SimPolicy = serde_json::from_str(r#""first_free""#).unwrap();
        assert_eq!(p, SimPolicy::FirstFree);
    }
}
