//! The simulated fleet: districts, meters, crews, injected leaks and the clock.

use crate::model::{self, Household};
use chrono::{DurationRound, TimeZone, Utc};
use leakwatch_core::{
    Crew, CrewId, DistrictId, GeoPoint, Meter, MeterId, MeterKind, MeterStatus, Reading, Timestamp,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use std::f64::consts::TAU;
use std::fmt::Write as _;

/// Distance between neighbouring district centres on the grid, km.
const DISTRICT_SPACING_KM: f64 = 2.0;
/// Radius of a district's cluster of homes, km (a district spans about 1.5 km).
const DISTRICT_RADIUS_KM: f64 = 0.75;
/// Expected reporting interval written into the registry, hours.
const REPORT_EVERY_H: u32 = 24;
/// Skills every simulated crew has.
const CREW_SKILLS: [&str; 3] = ["emergency", "repair", "meter"];

/// What fleet to simulate. Everything random is drawn from `seed`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FleetConfig {
    /// Seed of every random choice: layout, homes, leaks, crews and consumption.
    pub seed: u64,
    /// Number of districts, named `D01`, `D02`, ...
    pub districts: u32,
    /// Customer meters per district (each district also has one station meter).
    pub meters_per_district: u32,
    /// Customer meters with a leak behind the meter (at most all of them).
    pub leaks: u32,
    /// Simulation epoch: the time of the first (baseline) reading. A whole hour;
    /// [`Fleet::generate`] truncates anything else to the hour.
    pub start: Timestamp,
    /// Centre of the grid of districts.
    pub center: GeoPoint,
}

impl Default for FleetConfig {
    /// 10 districts × 100 customer meters, 5 leaks, from 2026-11-01T00:00:00Z, around
    /// Florence.
    fn default() -> Self {
        FleetConfig {
            seed: 42,
            districts: 10,
            meters_per_district: 100,
            leaks: 5,
            start: Utc.with_ymd_and_hms(2026, 11, 1, 0, 0, 0).unwrap(),
            center: GeoPoint {
                lat: 43.7696,
                lon: 11.2558,
            },
        }
    }
}

/// Ground truth of one injected leak, for scoring the detectors.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LeakTruth {
    /// The customer meter the leak is behind.
    pub meter: MeterId,
    /// Its district (the station there sees the leak too).
    pub district: DistrictId,
    /// Whole hour from which the leak flows: every hour starting at or after it
    /// carries `rate_l_per_h` on top of the home's own consumption.
    pub start: Timestamp,
    /// Constant leak rate, litres per hour (a whole number in 20..=200).
    pub rate_l_per_h: f64,
}

/// One simulated meter and its running state.
#[derive(Debug, Clone)]
pub(crate) struct SimMeter {
    pub(crate) meter: Meter,
    /// `None` for station meters.
    household: Option<Household>,
    /// Cumulative index, litres.
    index_l: u64,
    /// Reported battery level, percent.
    pub(crate) battery: u8,
    /// Leak behind the meter: (start, litres per hour).
    leak: Option<(Timestamp, u64)>,
}

impl SimMeter {
    fn reading(&self, t: Timestamp) -> Reading {
        Reading {
            meter: self.meter.id.clone(),
            t,
            vol: self.index_l as f64 / 1000.0,
            temp: None,
            flow_max: None,
            pressure: None,
        }
    }
}

/// Where a district's meters sit in [`Fleet::meters`]: its station, then its customers.
#[derive(Debug, Clone)]
struct DistrictLayout {
    id: DistrictId,
    station: usize,
    customers: std::ops::Range<usize>,
}

/// A deterministic simulated fleet: the same [`FleetConfig`] always gives the same
/// registry, crews, leaks and readings.
#[derive(Debug, Clone)]
pub struct Fleet {
    config: FleetConfig,
    now: Timestamp,
    /// Registry order: per district, the station then its customers.
    meters: Vec<SimMeter>,
    districts: Vec<DistrictLayout>,
    truth: Vec<LeakTruth>,
    crews: Vec<Crew>,
    /// Drives consumption; advanced only by [`Fleet::advance_hour`].
    rng: StdRng,
}

/// Moves a point by the given kilometres east and north (flat-earth, fine at city scale).
fn offset_km(p: GeoPoint, east_km: f64, north_km: f64) -> GeoPoint {
    const KM_PER_DEG_LAT: f64 = 111.32;
    GeoPoint {
        lat: p.lat + north_km / KM_PER_DEG_LAT,
        lon: p.lon + east_km / (KM_PER_DEG_LAT * p.lat.to_radians().cos()),
    }
}

/// A point uniformly scattered in the ring `r_min..r_max` km around `p`.
fn scatter(rng: &mut StdRng, p: GeoPoint, r_min: f64, r_max: f64) -> GeoPoint {
    let u: f64 = rng.random_range((r_min / r_max).powi(2)..=1.0);
    let r = r_max * u.sqrt();
    let a = rng.random_range(0.0..TAU);
    offset_km(p, r * a.cos(), r * a.sin())
}

fn id<T>(parsed: Result<T, leakwatch_core::IdError>) -> T {
    parsed.expect("generated ids use only [A-Za-z0-9-]")
}

impl Fleet {
    /// Builds the fleet described by `config`, deterministically from its seed.
    ///
    /// Districts are laid out on a grid (2 km apart) centred on `config.center`; each
    /// has a station meter `ST-Dnn` at its edge and customer meters `PDR-Dnn-0001`, ...
    /// scattered within 0.75 km. `config.start` is truncated to the whole hour.
    pub fn generate(config: &FleetConfig) -> Fleet {
        let mut config = config.clone();
        config.start = config
            .start
            .duration_trunc(chrono::Duration::hours(1))
            .unwrap_or(config.start);
        let mut rng = StdRng::seed_from_u64(config.seed);

        let n = config.districts as usize;
        let cols = (n as f64).sqrt().ceil().max(1.0) as usize;
        let rows = n.div_ceil(cols);
        let mut meters = Vec::with_capacity(n * (config.meters_per_district as usize + 1));
        let mut districts = Vec::with_capacity(n);
        let mut centers = Vec::with_capacity(n);

        for d in 0..n {
            let district = id(DistrictId::parse(format!("D{:02}", d + 1)));
            let (row, col) = (d / cols, d % cols);
            let east = (col as f64 - (cols as f64 - 1.0) / 2.0) * DISTRICT_SPACING_KM;
            let north = ((rows as f64 - 1.0) / 2.0 - row as f64) * DISTRICT_SPACING_KM;
            let center = offset_km(config.center, east, north);
            centers.push(center);

            let station = meters.len();
            meters.push(SimMeter {
                meter: Meter {
                    id: id(MeterId::parse(format!("ST-{district}"))),
                    district: district.clone(),
                    kind: MeterKind::Station,
                    location: scatter(&mut rng, center, 0.6, DISTRICT_RADIUS_KM),
                    report_every_h: REPORT_EVERY_H,
                    status: MeterStatus::Active,
                    installed_at: None,
                    max_flow_m3h: None,
                },
                household: None,
                index_l: rng.random_range(50_000_000..500_000_000),
                battery: 100,
                leak: None,
            });
            for m in 0..config.meters_per_district {
                meters.push(SimMeter {
                    meter: Meter {
                        id: id(MeterId::parse(format!("PDR-{district}-{:04}", m + 1))),
                        district: district.clone(),
                        kind: MeterKind::Customer,
                        location: scatter(&mut rng, center, 0.0, DISTRICT_RADIUS_KM),
                        report_every_h: REPORT_EVERY_H,
                        status: MeterStatus::Active,
                        installed_at: None,
                        max_flow_m3h: None,
                    },
                    household: Some(Household::random(&mut rng)),
                    index_l: rng.random_range(100_000..5_000_000),
                    battery: rng.random_range(60..=100),
                    leak: None,
                });
            }
            districts.push(DistrictLayout {
                id: district,
                station,
                customers: station + 1..meters.len(),
            });
        }

        // Leaks: distinct customer meters (partial Fisher-Yates over their positions).
        let mut customers: Vec<usize> =
            districts.iter().flat_map(|d| d.customers.clone()).collect();
        let leaks = (config.leaks as usize).min(customers.len());
        let mut truth = Vec::with_capacity(leaks);
        for i in 0..leaks {
            let j = rng.random_range(i..customers.len());
            customers.swap(i, j);
            let at = customers[i];
            let offset_h: i64 = if i == 0 {
                rng.random_range(0..=12)
            } else {
                rng.random_range(0..72)
            };
            let start = config.start + chrono::Duration::hours(offset_h);
            let rate: u64 = rng.random_range(20..=200);
            let meter = &mut meters[at];
            meter.leak = Some((start, rate));
            truth.push(LeakTruth {
                meter: meter.meter.id.clone(),
                district: meter.meter.district.clone(),
                start,
                rate_l_per_h: rate as f64,
            });
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
                    on_shift: true,
                }
            })
            .collect();

        let run_seed: u64 = rng.random();
        Fleet {
            now: config.start,
            config,
            meters,
            districts,
            truth,
            crews,
            rng: StdRng::seed_from_u64(run_seed),
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
    pub fn registry(&self) -> Vec<Meter> {
        self.meters.iter().map(|m| m.meter.clone()).collect()
    }

    /// Ground truth: the injected leaks, the first one starting within 12 h of `start`.
    pub fn truth(&self) -> &[LeakTruth] {
        &self.truth
    }

    /// The field crews: `CREW-01`, ... one per two districts, on shift, at home.
    pub fn crews(&self) -> Vec<Crew> {
        self.crews.clone()
    }

    pub(crate) fn meters(&self) -> &[SimMeter] {
        &self.meters
    }

    /// Every meter's reading (index) at the current clock, without advancing it, in
    /// registry order. At `start` this is the baseline the first hour is measured from.
    pub fn snapshot(&self) -> Vec<Reading> {
        self.meters.iter().map(|m| m.reading(self.now)).collect()
    }

    /// Advances the clock by one hour and returns every meter's index at the end of
    /// that hour (the new clock), in registry order.
    pub fn advance_hour(&mut self) -> (Timestamp, Vec<Reading>) {
        let hour_start = self.now;
        self.now = hour_start + chrono::Duration::hours(1);
        for d in &self.districts {
            let mut sum = 0;
            for m in &mut self.meters[d.customers.clone()] {
                let home = m
                    .household
                    .as_ref()
                    .map_or(0.0, |h| h.hour_m3(hour_start, &mut self.rng));
                let leak = match m.leak {
                    Some((start, rate)) if hour_start >= start => rate,
                    _ => 0,
                };
                let used = model::litres(home) + leak;
                m.index_l += used;
                sum += used;
            }
            self.meters[d.station].index_l += model::station_litres(sum);
        }
        (self.now, self.snapshot())
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn small(seed: u64) -> FleetConfig {
        FleetConfig {
            seed,
            districts: 3,
            meters_per_district: 40,
            leaks: 5,
            ..FleetConfig::default()
        }
    }

    /// Per meter, the hourly consumptions (litres) over `hours` hours.
    fn consumption(fleet: &mut Fleet, hours: usize) -> HashMap<MeterId, Vec<(Timestamp, i64)>> {
        let mut last: HashMap<MeterId, f64> = fleet
            .snapshot()
            .into_iter()
            .map(|r| (r.meter, r.vol))
            .collect();
        let mut out: HashMap<MeterId, Vec<(Timestamp, i64)>> = HashMap::new();
        for _ in 0..hours {
            let (t, readings) = fleet.advance_hour();
            for r in readings {
                assert_eq!(r.t, t);
                let prev = last.insert(r.meter.clone(), r.vol).unwrap();
                let litres = ((r.vol - prev) * 1000.0).round() as i64;
                // Hour starting at t - 1h.
                out.entry(r.meter)
                    .or_default()
                    .push((t - chrono::Duration::hours(1), litres));
            }
        }
        out
    }

    #[test]
    fn same_seed_same_fleet_and_readings() {
        let mut a = Fleet::generate(&small(9));
        let mut b = Fleet::generate(&small(9));
        assert_eq!(a.registry(), b.registry());
        assert_eq!(a.truth(), b.truth());
        assert_eq!(a.crews(), b.crews());
        assert_eq!(a.to_csv(), b.to_csv());
        for _ in 0..48 {
            assert_eq!(a.advance_hour(), b.advance_hour());
        }
        let mut c = Fleet::generate(&small(10));
        assert_ne!(a.registry(), c.registry());
        assert_ne!(Fleet::generate(&small(9)).advance_hour(), c.advance_hour());
    }

    #[test]
    fn clock_starts_on_the_hour_and_advances_by_one() {
        let mut cfg = small(1);
        cfg.start = Utc.with_ymd_and_hms(2026, 11, 1, 0, 37, 12).unwrap();
        let mut fleet = Fleet::generate(&cfg);
        let start = Utc.with_ymd_and_hms(2026, 11, 1, 0, 0, 0).unwrap();
        assert_eq!(fleet.now(), start);
        assert!(fleet.snapshot().iter().all(|r| r.t == start));
        let (t, readings) = fleet.advance_hour();
        assert_eq!(t, start + chrono::Duration::hours(1));
        assert_eq!(fleet.now(), t);
        assert_eq!(readings.len(), fleet.meter_count());
        let ids: Vec<_> = readings.into_iter().map(|r| r.meter).collect();
        let registry: Vec<_> = fleet.registry().into_iter().map(|m| m.id).collect();
        assert_eq!(ids, registry);
    }

    #[test]
    fn leaks_follow_the_config() {
        for seed in 0..20 {
            let fleet = Fleet::generate(&small(seed));
            let start = fleet.config().start;
            let truth = fleet.truth();
            assert_eq!(truth.len(), 5);
            let first = &truth[0];
            assert!(first.start >= start && first.start <= start + chrono::Duration::hours(12));
            for leak in truth {
                assert!(leak.start >= start && leak.start < start + chrono::Duration::hours(72));
                assert_eq!(leak.start.timestamp() % 3600, 0);
                assert!((20.0..=200.0).contains(&leak.rate_l_per_h));
                assert!(
                    leak.meter
                        .as_str()
                        .starts_with(&format!("PDR-{}-", leak.district))
                );
            }
            let mut meters: Vec<_> = truth.iter().map(|l| l.meter.clone()).collect();
            meters.sort();
            meters.dedup();
            assert_eq!(meters.len(), 5, "leaks are on distinct meters");
        }
        let tiny = Fleet::generate(&FleetConfig {
            districts: 1,
            meters_per_district: 2,
            leaks: 5,
            ..FleetConfig::default()
        });
        assert_eq!(tiny.truth().len(), 2, "at most one leak per customer meter");
    }

    #[test]
    fn healthy_meters_rest_every_night_and_leaking_ones_never_do() {
        for seed in [1, 2, 3] {
            let mut fleet = Fleet::generate(&small(seed));
            let leaks: HashMap<MeterId, LeakTruth> = fleet
                .truth()
                .iter()
                .map(|l| (l.meter.clone(), l.clone()))
                .collect();
            let customers: Vec<MeterId> = fleet
                .registry()
                .into_iter()
                .filter(|m| m.kind == MeterKind::Customer)
                .map(|m| m.id)
                .collect();
            let hours = consumption(&mut fleet, 72);
            for id in &customers {
                let series = &hours[id];
                match leaks.get(id) {
                    None => {
                        // Every 24 consecutive hours contain a zero hour.
                        for window in series.windows(24) {
                            assert!(
                                window.iter().any(|&(_, l)| l == 0),
                                "{id} has no zero hour in 24 h from {}",
                                window[0].0
                            );
                        }
                    }
                    Some(leak) => {
                        for &(t, l) in series {
                            if t >= leak.start {
                                assert!(
                                    l >= leak.rate_l_per_h as i64,
                                    "{id} at {t}: {l} L < leak rate"
                                );
                            }
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn homes_consume_plausibly() {
        let mut fleet = Fleet::generate(&small(4));
        let leaking: Vec<MeterId> = fleet.truth().iter().map(|l| l.meter.clone()).collect();
        let hours = consumption(&mut fleet, 72);
        let daily: Vec<f64> = hours
            .iter()
            .filter(|(id, _)| id.as_str().starts_with("PDR-") && !leaking.contains(id))
            .map(|(_, s)| s.iter().map(|&(_, l)| l).sum::<i64>() as f64 / 3000.0)
            .collect();
        let mean = daily.iter().sum::<f64>() / daily.len() as f64;
        // Early November in Florence: a few m³ a day per home.
        assert!((0.5..8.0).contains(&mean), "mean daily use {mean} m³");
        assert!(daily.iter().all(|&d| d < 20.0));
    }

    #[test]
    fn indexes_never_decrease_and_are_whole_litres() {
        let mut fleet = Fleet::generate(&small(5));
        let mut last: HashMap<MeterId, f64> = HashMap::new();
        let mut readings = fleet.snapshot();
        for _ in 0..72 {
            for r in &readings {
                let litres = r.vol * 1000.0;
                assert!(
                    (litres - litres.round()).abs() < 1e-6,
                    "{} {}",
                    r.meter,
                    r.vol
                );
                assert!(r.vol >= 0.0);
                if let Some(prev) = last.insert(r.meter.clone(), r.vol) {
                    assert!(r.vol >= prev, "{} went from {prev} to {}", r.meter, r.vol);
                }
                // The JSON number prints with at most three decimals.
                let text = serde_json::to_string(&r.vol).unwrap();
                let decimals = text.split('.').nth(1).map_or(0, str::len);
                assert!(decimals <= 3, "{text}");
            }
            readings = fleet.advance_hour().1;
        }
        for m in fleet.registry() {
            if m.kind == MeterKind::Customer {
                let v = last[&m.id];
                assert!((100.0..5300.0).contains(&v), "{} starts at {v}", m.id);
            }
        }
    }

    #[test]
    fn station_is_district_sum_plus_one_percent() {
        let mut fleet = Fleet::generate(&small(6));
        let registry = fleet.registry();
        let hours = consumption(&mut fleet, 48);
        let mut total_station = 0;
        for district in fleet.district_ids() {
            let station = MeterId::parse(format!("ST-{district}")).unwrap();
            for (h, &(t, inflow)) in hours[&station].iter().enumerate() {
                let sum: i64 = registry
                    .iter()
                    .filter(|m| m.district == district && m.kind == MeterKind::Customer)
                    .map(|m| hours[&m.id][h].1)
                    .sum();
                let expected = (sum as f64 * 1.01).round() as i64;
                assert_eq!(inflow, expected, "{district} hour {t}");
                total_station += inflow;
            }
        }
        assert!(total_station > 0);
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
            assert_eq!(m.report_every_h, 24);
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
            assert_eq!(row[5], "24");
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
}
