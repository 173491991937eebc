//! The simulated fleet: districts, meters, crews, injected leaks and faults, and the
//! hourly clock that turns them into the stream of messages meters send.

use crate::config::{FleetConfig, OPEN_ENDED_FAULT_SPAN_H};
use crate::model::{self, HomeClass, HourContext, Household, Weather};
use crate::truth::{
    FaultKind, FaultTruth, LeakGrowth, LeakTruth, NetworkLeakTruth, Truth, UsageChange, UsageKind,
};
use chrono::{Duration, DurationRound};
use leakwatch_core::{
    Crew, CrewId, DistrictId, EventCode, GeoPoint, Meter, MeterEvent, MeterId, MeterKind,
    MeterStatus, Reading, Timestamp,
};
use leakwatch_wire::{Uplink, Valve};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::BTreeMap;
use std::f64::consts::TAU;
use std::fmt::Write as _;

/// Most readings in one message: a longer backlog (a silent meter resuming) is split
/// into several consecutive messages, each far below the wire contract's 64 KiB.
pub const MAX_READINGS_PER_MESSAGE: usize = 500;

/// Distance between neighbouring district centres on the grid, km.
const DISTRICT_SPACING_KM: f64 = 2.0;
/// Radius of a district's cluster of homes, km (a district spans about 1.5 km).
const DISTRICT_RADIUS_KM: f64 = 0.75;
/// Skills every simulated crew has.
const CREW_SKILLS: [&str; 3] = ["emergency", "repair", "meter"];
/// Time constant of a district's average consumption (network leak and loss), hours.
const DISTRICT_AVERAGE_H: f64 = 168.0;
/// Days of weather computed in advance for an open-ended run.
const OPEN_ENDED_WEATHER_DAYS: u32 = 400;

/// Independent random streams derived from the seed, so that e.g. turning faults on
/// does not change anyone's consumption.
const STREAM_LEAKS: u64 = 0x4C45_414B; // "LEAK"
const STREAM_FAULTS: u64 = 0x4641_554C; // "FAUL"
const STREAM_RUN: u64 = 0x0052_554E; // "RUN"
const STREAM_USAGE: u64 = 0x5553_4147; // "USAG"

fn hours(h: i64) -> Duration {
    Duration::hours(h)
}

fn stream(seed: u64, salt: u64) -> StdRng {
    StdRng::seed_from_u64(seed ^ salt.wrapping_mul(0x9E37_79B9_7F4A_7C15))
}

/// One simulated meter (customer or station) and its running state.
#[derive(Debug, Clone)]
struct SimMeter {
    meter: Meter,
    /// `None` for station meters.
    household: Option<Household>,
    /// What the register has counted, litres (the index is its floor).
    register_l: f64,
    /// Reported battery level, percent; `None` for (mains-powered) stations.
    battery: Option<u8>,
    /// Indexes of its leaks in the truth.
    leaks: Vec<usize>,
    /// Index of its usage change in the truth.
    usage: Option<usize>,
    /// The household moving in (a vacant home's usage change).
    occupant: Option<Household>,
    /// Indexes of its faults in the truth.
    faults: Vec<usize>,
    /// Pushes when `(hour + phase) % push_every_h == 0`.
    phase: u64,
    /// Minute of the hour at which its messages arrive (orders a step's messages).
    minute: u32,
    /// Its gas temperature sensor's offset (cellar, façade...), °C.
    temp_offset_c: f64,
    /// Device events it will report, by time; those before `next_event` are queued.
    events: Vec<MeterEvent>,
    next_event: usize,
    /// Readings and events not yet sent.
    pending: Vec<Reading>,
    pending_events: Vec<MeterEvent>,
}

impl SimMeter {
    fn index_l(&self) -> u64 {
        self.register_l.max(0.0).floor() as u64
    }

    fn reading(&self, t: Timestamp, temp: Option<f64>) -> Reading {
        Reading {
            meter: self.meter.id.clone(),
            t,
            vol: self.index_l() as f64 / 1000.0,
            temp,
            flow_max: None,
            pressure: None,
        }
    }
}

/// A district: where its meters sit in `Fleet::meters`, and its station's state.
#[derive(Debug, Clone)]
struct District {
    id: DistrictId,
    station: usize,
    customers: std::ops::Range<usize>,
    /// Exponential average of the customers' hourly consumption, without its start-up
    /// bias (`sum / weight`).
    average_sum: f64,
    average_weight: f64,
    /// The network loss drifts as a sinusoid of this period (hours) and phase.
    loss_period_h: f64,
    loss_phase: f64,
    /// Indexes of its network leaks in the truth.
    network_leaks: Vec<usize>,
}

/// A message held back (a late push) until the hour it arrives.
#[derive(Debug, Clone)]
struct Delayed {
    arrives: u64,
    minute: u32,
    uplink: Uplink,
}

/// A deterministic simulated fleet: the same [`FleetConfig`] always gives the same
/// registry, crews, truth and message stream.
///
/// Drive it with [`Fleet::step`] (one simulated hour, the messages that arrive in it)
/// and end with [`Fleet::finish`] (what is still held back). [`crate::publish`] sends
/// exactly this stream over MQTT, so a replay in process sees the same messages.
#[derive(Debug, Clone)]
pub struct Fleet {
    config: FleetConfig,
    now: Timestamp,
    /// Hours since `config.start`.
    hour: u64,
    /// Registry order: per district, the station then its customers.
    meters: Vec<SimMeter>,
    districts: Vec<District>,
    truth: Truth,
    crews: Vec<Crew>,
    weather: Weather,
    delayed: Vec<Delayed>,
    /// Drives consumption, noise and temperatures; advanced only by [`Fleet::step`].
    rng: StdRng,
}

/// A point uniformly scattered in the ring `r_min..r_max` km around `p`.
fn scatter(rng: &mut StdRng, p: GeoPoint, r_min: f64, r_max: f64) -> GeoPoint {
    let u: f64 = rng.random_range((r_min / r_max).powi(2)..=1.0);
    let r = r_max * u.sqrt();
    let a = rng.random_range(0.0..TAU);
    p.offset_km(r * a.sin(), r * a.cos())
}

fn id<T>(parsed: Result<T, leakwatch_core::IdError>) -> T {
    parsed.expect("generated ids use only [A-Za-z0-9-]")
}

/// A whole number in `lo..=hi`, or `lo` when the range is empty.
fn pick(rng: &mut StdRng, lo: i64, hi: i64) -> i64 {
    if hi <= lo {
        lo
    } else {
        rng.random_range(lo..=hi)
    }
}

/// Rounds to one decimal.
fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

/// A gas temperature reading: the weather's plus the meter's offset and ±0.2 °C noise,
/// to 0.1 °C.
fn gas_temp(rng: &mut StdRng, gas_c: f64, offset_c: f64) -> f64 {
    round1(gas_c + offset_c + rng.random_range(-0.2..0.2))
}

/// The centre of district `d` (0-based): districts are laid out on a grid
/// [`DISTRICT_SPACING_KM`] apart, centred on `config.center`, row by row.
pub fn district_center(config: &FleetConfig, d: usize) -> GeoPoint {
    let n = config.districts as usize;
    let cols = (n as f64).sqrt().ceil().max(1.0) as usize;
    let rows = n.div_ceil(cols);
    let (row, col) = (d / cols, d % cols);
    let east = (col as f64 - (cols as f64 - 1.0) / 2.0) * DISTRICT_SPACING_KM;
    let north = ((rows as f64 - 1.0) / 2.0 - row as f64) * DISTRICT_SPACING_KM;
    config.center.offset_km(north, east)
}

impl Fleet {
    /// Builds the fleet described by `config`, deterministically from its seed.
    ///
    /// Districts are laid out on a grid (2 km apart) centred on `config.center`; each
    /// has a station meter `ST-Dnn` at its edge and customer meters `PDR-Dnn-0001`, ...
    /// scattered within 0.75 km. `config.start` is truncated to the whole hour and
    /// `config.push_every_h` raised to at least 1.
    pub fn generate(config: &FleetConfig) -> Fleet {
        let mut config = config.clone();
        config.start = config
            .start
            .duration_trunc(hours(1))
            .unwrap_or(config.start);
        config.push_every_h = config.push_every_h.max(1);
        let every = u64::from(config.push_every_h);
        let mut rng = StdRng::seed_from_u64(config.seed);
        let weather_days = config
            .hours
            .map_or(OPEN_ENDED_WEATHER_DAYS, |h| h.div_ceil(24) + 1);
        let weather = Weather::new(config.seed, config.start, weather_days);
        let gas_c = weather.gas_temp_c(config.start);

        let n = config.districts as usize;
        let mut meters = Vec::with_capacity(n * (config.meters_per_district as usize + 1));
        let mut districts = Vec::with_capacity(n);
        let mut centers = Vec::with_capacity(n);

        for d in 0..n {
            let district = id(DistrictId::parse(format!("D{:02}", d + 1)));
            let center = district_center(&config, d);
            centers.push(center);

            let station = meters.len();
            meters.push(SimMeter {
                meter: Meter {
                    id: id(MeterId::parse(format!("ST-{district}"))),
                    district: district.clone(),
                    kind: MeterKind::Station,
                    location: scatter(&mut rng, center, 0.6, DISTRICT_RADIUS_KM),
                    report_every_h: 1,
                    status: MeterStatus::Active,
                    installed_at: None,
                    max_flow_m3h: None,
                },
                household: None,
                register_l: rng.random_range(50_000_000..500_000_000) as f64,
                battery: None,
                leaks: Vec::new(),
                usage: None,
                occupant: None,
                faults: Vec::new(),
                phase: 0,
                minute: rng.random_range(0..5),
                temp_offset_c: rng.random_range(-0.3..0.3),
                events: Vec::new(),
                next_event: 0,
                pending: Vec::new(),
                pending_events: Vec::new(),
            });
            for m in 0..config.meters_per_district {
                let class = config.households.draw(&mut rng);
                meters.push(SimMeter {
                    meter: Meter {
                        id: id(MeterId::parse(format!("PDR-{district}-{:04}", m + 1))),
                        district: district.clone(),
                        kind: MeterKind::Customer,
                        location: scatter(&mut rng, center, 0.0, DISTRICT_RADIUS_KM),
                        report_every_h: config.push_every_h,
                        status: MeterStatus::Active,
                        installed_at: None,
                        max_flow_m3h: None,
                    },
                    household: Some(Household::random(class, &mut rng)),
                    register_l: rng.random_range(100_000..5_000_000) as f64,
                    battery: Some(rng.random_range(60..=100)),
                    leaks: Vec::new(),
                    usage: None,
                    occupant: None,
                    faults: Vec::new(),
                    phase: rng.random_range(0..every),
                    minute: rng.random_range(0..60),
                    temp_offset_c: rng.random_range(-0.5..0.5),
                    events: Vec::new(),
                    next_event: 0,
                    pending: Vec::new(),
                    pending_events: Vec::new(),
                });
            }
            districts.push(District {
                id: district,
                station,
                customers: station + 1..meters.len(),
                average_sum: 0.0,
                average_weight: 0.0,
                loss_period_h: rng.random_range(20.0..40.0) * 24.0,
                loss_phase: rng.random_range(0.0..TAU),
                network_leaks: Vec::new(),
            });
        }
        // The baseline reading every meter's first message carries.
        for m in &mut meters {
            let temp = gas_temp(&mut rng, gas_c, m.temp_offset_c);
            let baseline = m.reading(config.start, Some(temp));
            m.pending.push(baseline);
        }

        // Crews: one per two districts, based near the first district of the pair.
        let crews = (0..n.div_ceil(2))
            .map(|c| {
                let home = scatter(&mut rng, centers[2 * c], 0.3, 1.0);
                Crew {
                    id: id(CrewId::parse(format!("CREW-{:02}", c + 1))),
                    name: format!("Crew {}", c + 1),
                    skills: CREW_SKILLS.iter().map(|s| s.to_string()).collect(),
                    home,
                    position: Some(home),
                    position_at: None,
                    last_job_place: None,
                    shifts: None,
                    on_shift: true,
                }
            })
            .collect();

        let customers: Vec<usize> = districts.iter().flat_map(|d| d.customers.clone()).collect();
        let leaks = place_leaks(&config, &mut meters, &customers);
        let network_leaks = place_network_leaks(&config, &mut districts);
        let faults = place_faults(&config, &mut meters, &customers);
        let usage_changes = place_usage_changes(&config, &mut meters, &customers);

        let mut meter_classes: BTreeMap<HomeClass, u32> =
            HomeClass::ALL.iter().map(|&c| (c, 0)).collect();
        let mut classes = BTreeMap::new();
        let mut never_stop_meters = Vec::new();
        for &i in &customers {
            let m = &meters[i];
            let class = m.household.as_ref().map_or(HomeClass::Setback, |h| h.class);
            *meter_classes.entry(class).or_default() += 1;
            classes.insert(m.meter.id.clone(), class);
            if class.never_stops() {
                never_stop_meters.push(m.meter.id.clone());
            }
        }
        let truth = Truth {
            start: config.start,
            end: config.hours.map(|h| config.start + hours(i64::from(h))),
            customer_meters: customers.len() as u32,
            station_meters: districts.len() as u32,
            meter_classes,
            classes,
            leaks,
            network_leaks,
            usage_changes,
            faults,
            never_stop_meters,
            scenario: config.clone(),
        };

        Fleet {
            now: config.start,
            hour: 0,
            config,
            meters,
            districts,
            truth,
            crews,
            weather,
            delayed: Vec::new(),
            rng: stream(0, STREAM_RUN ^ rng.random::<u64>()),
        }
    }

    /// The configuration the fleet was built from (with `start` on the whole hour).
    pub fn config(&self) -> &FleetConfig {
        &self.config
    }

    /// The fleet's clock: the time of the latest readings.
    pub fn now(&self) -> Timestamp {
        self.now
    }

    /// The districts, in order (`D01`, `D02`, ...).
    pub fn district_ids(&self) -> Vec<DistrictId> {
        self.districts.iter().map(|d| d.id.clone()).collect()
    }

    /// Number of meters (stations and customers).
    pub fn meter_count(&self) -> usize {
        self.meters.len()
    }

    /// The registry: per district, its station meter then its customer meters.
    /// Customer meters report every `push_every_h` hours, stations every hour.
    pub fn registry(&self) -> Vec<Meter> {
        self.meters.iter().map(|m| m.meter.clone()).collect()
    }

    /// Repairs network leak `index` (of [`Truth::network_leaks`]) from the whole hour
    /// `at`: it stops flowing then (a survey found it). An earlier repair stays.
    pub fn repair_network_leak(&mut self, index: usize, at: Timestamp) {
        if let Some(l) = self.truth.network_leaks.get_mut(index) {
            let at = at.duration_trunc(hours(1)).unwrap_or(at);
            if l.repaired.is_none_or(|r| r > at) {
                l.repaired = Some(at.max(l.start));
            }
        }
    }

    /// The ground truth: scenario, classes, leaks, network leaks and faults.
    pub fn truth(&self) -> &Truth {
        &self.truth
    }

    /// The weather the homes heat against.
    pub fn weather(&self) -> &Weather {
        &self.weather
    }

    /// The habits of a customer meter's home (`None` for stations and unknown ids).
    pub fn household(&self, meter: &MeterId) -> Option<&Household> {
        self.meters
            .iter()
            .find(|m| &m.meter.id == meter)
            .and_then(|m| m.household.as_ref())
    }

    /// The field crews: `CREW-01`, ... one per two districts, on shift, at home.
    pub fn crews(&self) -> Vec<Crew> {
        self.crews.clone()
    }

    /// Every meter's register (index) at the current clock, in registry order, as the
    /// meter counts it (counter regressions and magnetic tampering included; no
    /// transport fault, no gas temperature). At `start` this is the baseline.
    pub fn snapshot(&self) -> Vec<Reading> {
        self.meters
            .iter()
            .map(|m| m.reading(self.now, None))
            .collect()
    }

    /// Advances the clock by one hour and returns the messages that arrive in the hour
    /// that begins at the new clock, in arrival order.
    ///
    /// Every meter takes a reading at the new clock ([`Fleet::now`]). A customer
    /// meter pushes when its schedule says so (every `push_every_h` hours at its own
    /// phase) with the readings and events since its last push (its first message
    /// also carries the baseline reading at `start`); stations push every hour.
    /// Faults from the truth shape the stream: late pushes arrive days later,
    /// duplicates twice, gaps and silences leave readings out, clock errors shift `t`,
    /// device events and battery levels ride along. Pure: no I/O, no wall clock.
    pub fn step(&mut self) -> Vec<Uplink> {
        let hour_start = self.now;
        self.now = hour_start + hours(1);
        self.hour += 1;
        let ctx = HourContext::new(&self.weather, hour_start);
        let gas_c = self.weather.gas_temp_c(self.now);
        let every = u64::from(self.config.push_every_h);
        let mut out: Vec<(u32, Uplink)> = Vec::new();
        let Fleet {
            meters,
            districts,
            truth,
            rng,
            delayed,
            now,
            hour,
            config,
            ..
        } = self;
        let (now, hour) = (*now, *hour);

        for district in districts.iter_mut() {
            let mut flowed = 0.0;
            for i in district.customers.clone() {
                let m = &mut meters[i];
                flowed += tick_customer(m, truth, rng, &ctx, hour_start, now, gas_c);
                if (hour + m.phase).is_multiple_of(every) {
                    push(m, truth, now, hour, false, &mut out, delayed);
                }
            }
            let station = &mut meters[district.station];
            tick_station(
                station, district, truth, config, rng, hour_start, now, hour, gas_c, flowed,
            );
            push(station, truth, now, hour, false, &mut out, delayed);
        }
        let mut i = 0;
        while i < delayed.len() {
            if delayed[i].arrives <= hour {
                let d = delayed.remove(i);
                out.push((d.minute, d.uplink));
            } else {
                i += 1;
            }
        }
        out.sort_by_key(|(minute, _)| *minute);
        out.into_iter().map(|(_, up)| up).collect()
    }

    /// Everything still held back at the current clock, to end a run: each meter's
    /// unsent readings and events (except meters silent at this hour), then the late
    /// pushes that have not arrived yet, in the order they would arrive.
    pub fn finish(&mut self) -> Vec<Uplink> {
        let mut out: Vec<(u32, Uplink)> = Vec::new();
        let mut none = Vec::new();
        for m in &mut self.meters {
            push(
                m,
                &self.truth,
                self.now,
                self.hour,
                true,
                &mut out,
                &mut none,
            );
        }
        let mut late = std::mem::take(&mut self.delayed);
        late.sort_by_key(|d| (d.arrives, d.minute));
        out.into_iter()
            .map(|(_, up)| up)
            .chain(late.into_iter().map(|d| d.uplink))
            .collect()
    }

    /// The registry in the import format: `meter_id,district_id,kind,lat,lon,report_every_h`.
    pub fn to_csv(&self) -> String {
        let mut out = String::from("meter_id,district_id,kind,lat,lon,report_every_h\n");
        for m in &self.meters {
            let m = &m.meter;
            let _ = writeln!(
                out,
                "{},{},{},{:.6},{:.6},{}",
                m.id, m.district, m.kind, m.location.lat, m.location.lon, m.report_every_h
            );
        }
        out
    }
}

/// One customer meter's hour: consumption, leak, faults, its reading and events.
/// Returns the litres that flowed through it (what the station sees).
fn tick_customer(
    m: &mut SimMeter,
    truth: &Truth,
    rng: &mut StdRng,
    ctx: &HourContext,
    hour_start: Timestamp,
    now: Timestamp,
    gas_c: f64,
) -> f64 {
    let home = match (
        m.household.as_ref(),
        m.usage.map(|u| &truth.usage_changes[u]),
    ) {
        (None, _) => 0.0,
        (Some(h), None) => h.hour_litres(ctx, rng),
        (Some(h), Some(u)) => {
            let after = hour_start >= u.start;
            match u.kind {
                UsageKind::Away if after && u.end.is_none_or(|e| hour_start < e) => {
                    h.empty_litres(ctx, rng)
                }
                UsageKind::Vacated if after => h.empty_litres(ctx, rng),
                UsageKind::MoveIn if after => {
                    m.occupant.as_ref().unwrap_or(h).hour_litres(ctx, rng)
                }
                _ => h.hour_litres(ctx, rng),
            }
        }
    };
    let leak: f64 = m
        .leaks
        .iter()
        .map(|&l| truth.leaks[l].litres_in_hour(hour_start))
        .sum();
    let temp = gas_temp(rng, gas_c, m.temp_offset_c);
    let mut flowed = home + leak;
    let mut counts = true;
    let mut regression = None;
    let mut offset_h = 0;
    let mut record = true;
    for &f in &m.faults {
        let f = &truth.faults[f];
        match f.kind {
            FaultKind::ValveClosed if f.covers(hour_start) => flowed = 0.0,
            FaultKind::MagneticField if f.covers(hour_start) => counts = false,
            FaultKind::CounterRegression if f.start == now => regression = f.litres,
            FaultKind::ClockError if f.covers(now) => offset_h = f.offset_h.unwrap_or(0),
            FaultKind::Gap if f.covers(now) => record = false,
            FaultKind::Silent if f.backlog == Some(false) && f.covers(now) => record = false,
            _ => {}
        }
    }
    let before = m.register_l;
    if counts {
        m.register_l += flowed;
    }
    if let Some(litres) = regression {
        m.register_l = (before - litres as f64).max(0.0);
    }
    if record {
        let r = m.reading(now + hours(i64::from(offset_h)), Some(temp));
        m.pending.push(r);
    }
    while let Some(e) = m.events.get(m.next_event)
        && e.t <= now
    {
        m.pending_events.push(e.clone());
        m.next_event += 1;
    }
    flowed
}

/// One station's hour: the customers' consumption (`customers_l`), the network loss,
/// any network leak, and its measurement noise.
#[allow(clippy::too_many_arguments)]
fn tick_station(
    station: &mut SimMeter,
    district: &mut District,
    truth: &Truth,
    config: &FleetConfig,
    rng: &mut StdRng,
    hour_start: Timestamp,
    now: Timestamp,
    hour: u64,
    gas_c: f64,
    customers_l: f64,
) {
    let beta = 1.0 - 1.0 / DISTRICT_AVERAGE_H;
    district.average_sum = beta * district.average_sum + (1.0 - beta) * customers_l;
    district.average_weight = beta * district.average_weight + (1.0 - beta);
    let average = district.average_sum / district.average_weight;
    let drift = (TAU * hour as f64 / district.loss_period_h + district.loss_phase).sin();
    let loss = config.network_loss * (1.0 + 0.25 * drift) * (0.5 * customers_l + 0.5 * average);
    let leak: f64 = district
        .network_leaks
        .iter()
        .map(|&l| &truth.network_leaks[l])
        .filter(|l| l.flows(hour_start))
        .map(|l| l.fraction * average)
        .sum();
    let inflow = customers_l + loss + leak;
    let noise = 1.0 + config.station_noise * model::std_normal(rng);
    station.register_l += (inflow * noise).max(0.0);
    let temp = gas_temp(rng, gas_c, station.temp_offset_c);
    let r = station.reading(now, Some(temp));
    station.pending.push(r);
}

/// Sends a meter's pending readings and events, if any and if it is not silent:
/// into `out` (with its minute), or into `delayed` for a late push, twice for a
/// duplicate. `flushing`: the end of a run, where late and duplicate faults do not apply.
fn push(
    m: &mut SimMeter,
    truth: &Truth,
    now: Timestamp,
    hour: u64,
    flushing: bool,
    out: &mut Vec<(u32, Uplink)>,
    delayed: &mut Vec<Delayed>,
) {
    let mut duplicate = false;
    let mut arrives = None;
    let mut valve_closed = false;
    let mut battery = m.battery;
    for &f in &m.faults {
        let f = &truth.faults[f];
        match f.kind {
            FaultKind::Silent if f.covers(now) => return,
            FaultKind::Duplicate if f.start == now && !flushing => duplicate = true,
            FaultKind::Late if f.start == now && !flushing => {
                arrives = Some(hour + (f.end - f.start).num_hours() as u64);
            }
            FaultKind::ValveClosed if f.covers(now) => valve_closed = true,
            FaultKind::BatteryLow | FaultKind::BatteryCritical if f.start <= now => {
                battery = battery.min(f.battery).or(f.battery);
            }
            _ => {}
        }
    }
    if m.pending.is_empty() && m.pending_events.is_empty() {
        return;
    }
    let valve = match (m.meter.kind, valve_closed) {
        (MeterKind::Customer, true) => Some(Valve::Closed),
        (MeterKind::Customer, false) => Some(Valve::Open),
        _ => None,
    };
    let mut readings = std::mem::take(&mut m.pending);
    let mut events = std::mem::take(&mut m.pending_events);
    loop {
        let rest = if readings.len() > MAX_READINGS_PER_MESSAGE {
            readings.split_off(MAX_READINGS_PER_MESSAGE)
        } else {
            Vec::new()
        };
        let up = Uplink {
            district: m.meter.district.clone(),
            meter: m.meter.id.clone(),
            readings,
            events: std::mem::take(&mut events),
            battery,
            valve,
        };
        let copies = if duplicate { 2 } else { 1 };
        for _ in 0..copies {
            match arrives {
                Some(arrives) => delayed.push(Delayed {
                    arrives,
                    minute: m.minute,
                    uplink: up.clone(),
                }),
                None => out.push((m.minute, up.clone())),
            }
        }
        if rest.is_empty() {
            break;
        }
        readings = rest;
    }
}

/// The behind-the-meter leaks: distinct customer meters (partial Fisher-Yates), but
/// for `second_share` of them, placed on a meter that already leaks.
fn place_leaks(
    config: &FleetConfig,
    meters: &mut [SimMeter],
    customers: &[usize],
) -> Vec<LeakTruth> {
    let mut rng = stream(config.seed, STREAM_LEAKS);
    let lc = &config.leak;
    let (from, to) = (lc.from_h.min(lc.to_h), lc.from_h.max(lc.to_h));
    let (lo, hi) = (
        lc.min_rate_l_per_h.min(lc.max_rate_l_per_h).max(0.1),
        lc.min_rate_l_per_h.max(lc.max_rate_l_per_h).max(0.1),
    );
    let mut pool = customers.to_vec();
    let count = (config.leaks as usize).min(pool.len());
    let seconds =
        ((count as f64 * lc.second_share.clamp(0.0, 1.0)).round() as usize).min(count / 2);
    let firsts = count - seconds;
    let mut leaks = Vec::with_capacity(count);
    let draw = |rng: &mut StdRng,
                at: usize,
                start: Timestamp,
                on_top: bool,
                meters: &mut [SimMeter],
                leaks: &mut Vec<LeakTruth>| {
        let rate = round1(model::log_uniform(rng, lo, hi)).max(0.1);
        let (initial, ramp_h, growth) = if rng.random_bool(lc.incipient_share.clamp(0.0, 1.0)) {
            let (a, b) = lc.incipient_from_l_per_h;
            let initial = round1(rng.random_range(a.min(b)..=a.max(b)).min(rate));
            let ramp = pick(
                rng,
                i64::from(lc.incipient_min_ramp_h.max(1)),
                i64::from(lc.incipient_max_ramp_h.max(lc.incipient_min_ramp_h).max(1)),
            );
            (initial, ramp as u32, LeakGrowth::Growing)
        } else if rng.random_bool(lc.growing_share.clamp(0.0, 1.0)) {
            let ramp = pick(
                rng,
                i64::from(lc.min_ramp_h.max(1)),
                i64::from(lc.max_ramp_h.max(lc.min_ramp_h).max(1)),
            );
            let initial = round1(rate * lc.initial_share.clamp(0.0, 1.0));
            (initial, ramp as u32, LeakGrowth::Growing)
        } else {
            (rate, 0, LeakGrowth::Abrupt)
        };
        let meter = &mut meters[at];
        meter.leaks.push(leaks.len());
        leaks.push(LeakTruth {
            meter: meter.meter.id.clone(),
            district: meter.meter.district.clone(),
            start,
            rate_l_per_h: rate,
            class_of_home: meter
                .household
                .as_ref()
                .map_or(HomeClass::Setback, |h| h.class),
            initial_rate_l_per_h: initial,
            growth,
            ramp_h,
            on_top,
        });
    };
    for i in 0..firsts {
        let j = rng.random_range(i..pool.len());
        pool.swap(i, j);
        let at = pool[i];
        let start = config.start + hours(pick(&mut rng, i64::from(from), i64::from(to)));
        draw(&mut rng, at, start, false, meters, &mut leaks);
    }
    // Leaks on top of a first one: on the meters of the earliest first leaks (so the
    // second still starts within the run's window).
    let mut order: Vec<usize> = (0..firsts).collect();
    order.sort_by_key(|&i| (leaks[i].start, i));
    for &first in order.iter().take(seconds) {
        let at = meters
            .iter()
            .position(|m| m.meter.id == leaks[first].meter)
            .expect("the first leak's meter");
        let (a, b) = lc.second_after_h;
        let after = pick(&mut rng, i64::from(a.min(b)), i64::from(a.max(b)));
        let start = leaks[first].start + hours(after);
        draw(&mut rng, at, start, true, meters, &mut leaks);
    }
    leaks
}

/// The network leaks: in `districts` distinct districts (as many as leaks when 0),
/// a district's later leaks starting 5-20 days after its first; `repaired_share` of
/// them repaired 10-30 days after they start.
fn place_network_leaks(config: &FleetConfig, districts: &mut [District]) -> Vec<NetworkLeakTruth> {
    let mut rng = stream(config.seed, STREAM_LEAKS.rotate_left(32));
    let nc = &config.network_leaks;
    let (from, to) = (
        config.leak.from_h.min(config.leak.to_h),
        config.leak.from_h.max(config.leak.to_h),
    );
    let (lo, hi) = (
        nc.min_fraction.min(nc.max_fraction).max(1e-6),
        nc.min_fraction.max(nc.max_fraction).max(1e-6),
    );
    let mut pool: Vec<usize> = (0..districts.len()).collect();
    let count = nc.count as usize;
    let with = match nc.districts {
        0 => count,
        n => (n as usize).min(count),
    }
    .min(pool.len());
    let mut out = Vec::with_capacity(count);
    if with == 0 {
        return out;
    }
    let mut firsts: Vec<Timestamp> = Vec::with_capacity(with);
    for k in 0..count {
        let i = k % with;
        if k < with {
            let j = rng.random_range(i..pool.len());
            pool.swap(i, j);
        }
        let d = &mut districts[pool[i]];
        let start = if k < with {
            // A district with more leaks gets its first one early enough for the
            // others to start within the window too.
            let late = if count > with {
                to.saturating_sub(20 * 24).max(from)
            } else {
                to
            };
            let s = config.start + hours(pick(&mut rng, i64::from(from), i64::from(late)));
            firsts.push(s);
            s
        } else {
            firsts[i] + hours(pick(&mut rng, 5 * 24, 20 * 24))
        };
        let fraction = (model::log_uniform(&mut rng, lo, hi) * 10_000.0).round() / 10_000.0;
        let repaired = rng
            .random_bool(nc.repaired_share.clamp(0.0, 1.0))
            .then(|| start + hours(pick(&mut rng, 10 * 24, 30 * 24)));
        d.network_leaks.push(out.len());
        out.push(NetworkLeakTruth {
            district: d.id.clone(),
            start,
            fraction,
            repaired,
        });
    }
    out
}

/// The usage changes: absences on occupied homes, move-ins on vacant homes, homes
/// vacated; at most one per meter.
fn place_usage_changes(
    config: &FleetConfig,
    meters: &mut [SimMeter],
    customers: &[usize],
) -> Vec<UsageChange> {
    let mut rng = stream(config.seed, STREAM_USAGE);
    let uc = &config.usage;
    let n = customers.len() as f64;
    let (from, to) = (uc.from_h.min(uc.to_h), uc.from_h.max(uc.to_h));
    let mut out = Vec::new();
    let class_of = |m: &SimMeter| m.household.as_ref().map(|h| h.class);
    let mut vacant: Vec<usize> = customers
        .iter()
        .copied()
        .filter(|&i| class_of(&meters[i]) == Some(HomeClass::Vacant))
        .collect();
    let mut occupied: Vec<usize> = customers
        .iter()
        .copied()
        .filter(|&i| class_of(&meters[i]).is_some_and(|c| c != HomeClass::Vacant))
        .collect();
    let take = |rng: &mut StdRng, list: &mut Vec<usize>| -> Option<usize> {
        (!list.is_empty()).then(|| {
            let j = rng.random_range(0..list.len());
            list.swap_remove(j)
        })
    };
    let plan = [
        (UsageKind::MoveIn, uc.move_in),
        (UsageKind::Vacated, uc.vacated),
        (UsageKind::Away, uc.away),
    ];
    for (kind, share) in plan {
        let count = (share.max(0.0) * n).round() as usize;
        for _ in 0..count {
            let list = if kind == UsageKind::MoveIn {
                &mut vacant
            } else {
                &mut occupied
            };
            let Some(at) = take(&mut rng, list) else {
                break;
            };
            let start = config.start + hours(pick(&mut rng, i64::from(from), i64::from(to)));
            let end = (kind == UsageKind::Away).then(|| {
                let d = pick(
                    &mut rng,
                    i64::from(uc.away_min_days.max(1)),
                    i64::from(uc.away_max_days.max(uc.away_min_days).max(1)),
                );
                start + hours(d * 24)
            });
            let m = &mut meters[at];
            if kind == UsageKind::MoveIn {
                let class = if rng.random_bool(0.7) {
                    HomeClass::Setback
                } else {
                    HomeClass::NightHeating
                };
                m.occupant = Some(Household::random(class, &mut rng));
            }
            m.usage = Some(out.len());
            out.push(UsageChange {
                meter: m.meter.id.clone(),
                kind,
                start,
                end,
            });
        }
    }
    out
}

/// The faults, kind by kind, on customer meters taken in turn from a shuffled list (so
/// on distinct meters while there are enough), and the device events they cause.
fn place_faults(
    config: &FleetConfig,
    meters: &mut [SimMeter],
    customers: &[usize],
) -> Vec<FaultTruth> {
    let mut rng = stream(config.seed, STREAM_FAULTS);
    if customers.is_empty() {
        return Vec::new();
    }
    let span = i64::from(config.hours.unwrap_or(OPEN_ENDED_FAULT_SPAN_H).max(2));
    let every = i64::from(config.push_every_h.max(1));
    let start = config.start;
    let run_end = start + hours(span);
    let mut pool = customers.to_vec();
    for i in (1..pool.len()).rev() {
        pool.swap(i, rng.random_range(0..=i));
    }
    let mut next = 0usize;
    let mut faults = Vec::new();
    for kind in FaultKind::ALL {
        let count =
            (config.faults.rate(kind).max(0.0) * customers.len() as f64 / 1000.0).round() as usize;
        let mut of_kind = Vec::with_capacity(count);
        for _ in 0..count {
            let at = pool[next % pool.len()];
            next += 1;
            let meter = &meters[at];
            // The k-th push of this meter is at hour `first + k * every`.
            let first = every - meter.phase as i64;
            let push_at = |rng: &mut StdRng, latest: i64| {
                let k = pick(rng, 0, (latest - first).max(0) / every);
                first + k * every
            };
            let hour = |h: i64| start + hours(h);
            let mut f = FaultTruth {
                meter: meter.meter.id.clone(),
                district: meter.meter.district.clone(),
                kind,
                start,
                end: start,
                litres: None,
                offset_h: None,
                backlog: None,
                battery: None,
            };
            match kind {
                FaultKind::Tamper | FaultKind::ReverseFlow => {
                    f.start = hour(pick(&mut rng, 0, span - 1))
                        + Duration::minutes(rng.random_range(1..60));
                    f.end = f.start;
                }
                FaultKind::MagneticField | FaultKind::ValveClosed => {
                    let len = if kind == FaultKind::MagneticField {
                        pick(&mut rng, 6, 72)
                    } else {
                        pick(&mut rng, 24, 120)
                    };
                    let h = pick(&mut rng, 1, span - len);
                    (f.start, f.end) = (hour(h), hour(h + len));
                }
                FaultKind::BatteryLow | FaultKind::BatteryCritical => {
                    f.start = hour(pick(&mut rng, 1, span - 1));
                    f.end = run_end.max(f.start);
                    f.battery = Some(if kind == FaultKind::BatteryLow {
                        rng.random_range(5..=9)
                    } else {
                        rng.random_range(1..=3)
                    });
                }
                FaultKind::CounterRegression => {
                    f.start = hour(pick(&mut rng, 1, span));
                    f.end = f.start;
                    f.litres = Some(model::log_uniform(&mut rng, 10.0, 100_000.0).round() as u64);
                }
                FaultKind::ClockError => {
                    let h = pick(&mut rng, 1, span - 24);
                    (f.start, f.end) = (hour(h), hour(h + 24));
                    let size = rng.random_range(1..=12);
                    f.offset_h = Some(if rng.random_bool(0.5) { size } else { -size });
                }
                FaultKind::Silent => {
                    let len = pick(&mut rng, 48, 240);
                    let h = pick(&mut rng, 1, span - len);
                    (f.start, f.end) = (hour(h), hour(h + len));
                    f.backlog = Some(rng.random_bool(0.5));
                }
                FaultKind::Gap => {
                    let len = pick(&mut rng, 1, 6);
                    let h = pick(&mut rng, 1, span - len);
                    (f.start, f.end) = (hour(h), hour(h + len));
                }
                FaultKind::Duplicate => {
                    f.start = hour(push_at(&mut rng, span));
                    f.end = f.start;
                }
                FaultKind::Late => {
                    let delay = pick(&mut rng, 24, 72);
                    f.start = hour(push_at(&mut rng, span - delay));
                    f.end = f.start + hours(delay);
                }
            }
            of_kind.push((at, f));
        }
        of_kind.sort_by_key(|(_, f)| f.start);
        for (at, f) in of_kind {
            let meter = &mut meters[at];
            let event = |t: Timestamp, code: &str| MeterEvent {
                meter: meter.meter.id.clone(),
                t,
                code: EventCode::Named(code.to_owned()),
            };
            let mut new_events = Vec::new();
            match f.kind {
                FaultKind::ClockError => new_events.push(event(f.end, "clock_error")),
                FaultKind::ValveClosed => {
                    new_events.push(event(f.start, "valve_closed"));
                    new_events.push(event(f.end, "valve_opened"));
                }
                kind => {
                    if let Some(code) = kind.event_code() {
                        new_events.push(event(f.start, code));
                    }
                }
            }
            meter.events.extend(new_events);
            meter.faults.push(faults.len());
            faults.push(f);
        }
    }
    for m in meters.iter_mut() {
        m.events.sort_by_key(|e| e.t);
    }
    faults
}

#[cfg(test)]
mod tests;
