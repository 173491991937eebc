//! A plausible gas network for the simulated districts: in each district a grid of
//! streets (about 200 m blocks, junctions jittered), one pipe segment per block, laid
//! out around the district's centre where the fleet's meters are. Older districts
//! have an old core (cast iron and unprotected steel from 1930-1970) inside steel of
//! 1960-1995 and polyethylene suburbs; newer districts are steel and polyethylene
//! only. The two main streets each way carry medium pressure, the others low
//! pressure (the Italian classes), or, with the US table, the core is a business
//! district and unprotected steel its own class.
//!
//! The survey history before the simulation starts is drawn so that every segment is
//! within its obligation: its last survey is spread uniformly over the interval the
//! table allows (a yearly share `s` means a cycle of `1 / s` years).

use crate::FleetConfig;
use crate::fleet::district_center;
use chrono::{Datelike, Duration, NaiveDate};
use leakwatch_core::{DistrictId, GeoPoint};
use leakwatch_survey::geojson::Imported;
use leakwatch_survey::{Material, ObligationTable, Segment};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

/// The network to generate over a fleet's districts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NetworkConfig {
    /// Streets each way in a district (a grid of `streets` x `streets`).
    pub streets: u32,
    /// Distance between two parallel streets, metres.
    pub block_m: f64,
    /// Share of districts with an old core (cast iron, unprotected steel).
    pub old_share: f64,
}

impl Default for NetworkConfig {
    /// 8 x 8 streets 200 m apart: 112 segments, about 22 km of main per district.
    fn default() -> Self {
        NetworkConfig {
            streets: 8,
            block_m: 200.0,
            old_share: 0.6,
        }
    }
}

/// The pressure class a segment gets under `table`'s preset.
fn class_of(table: &ObligationTable, main: bool, core: bool, material: Material) -> String {
    let has = |c: &str| table.get(c).is_some();
    if has("us_business") {
        if core {
            "us_business".into()
        } else if material == Material::UnprotectedSteel && has("us_unprotected") {
            "us_unprotected".into()
        } else {
            "us_other".into()
        }
    } else if main && has("it_ap_mp") {
        "it_ap_mp".into()
    } else if has("it_bp") {
        "it_bp".into()
    } else {
        table
            .obligations
            .first()
            .map(|o| o.class.clone())
            .unwrap_or_else(|| "other".into())
    }
}

/// How far back a segment of `class` may have been surveyed last, in days.
fn cycle_days(table: &ObligationTable, class: &str) -> i64 {
    let Some(o) = table.get(class) else {
        return 365;
    };
    let by_interval = o.max_interval_months.map(|m| i64::from(m) * 30);
    let by_calendar = o.every_calendar_years.map(|y| i64::from(y) * 365);
    let by_share = o
        .min_share_per_year
        .filter(|s| *s > 0.0)
        .map(|s| (365.0 / s) as i64);
    // Within the tightest rule, with a margin (the program must still find work to do).
    [by_interval, by_calendar, by_share]
        .into_iter()
        .flatten()
        .min()
        .map_or(365, |d| d * 9 / 10)
}

/// The network of `fleet`'s districts, deterministic from the fleet's seed, with the
/// last survey of each segment before `fleet.start`.
#[allow(clippy::needless_range_loop)] // a grid: both indexes name the street and block
pub fn generate(
    fleet: &FleetConfig,
    cfg: &NetworkConfig,
    table: &ObligationTable,
) -> Vec<Imported> {
    let mut rng = StdRng::seed_from_u64(fleet.seed ^ 0x6e65_7477_6f72_6b00);
    let start = fleet.start.date_naive();
    let n = cfg.streets.max(2) as usize;
    let span = cfg.block_m * (n - 1) as f64 / 1000.0;
    let mut out = Vec::new();
    for d in 0..fleet.districts as usize {
        let district =
            DistrictId::parse(format!("D{:02}", d + 1)).expect("generated ids are valid");
        let center = district_center(fleet, d);
        let old = rng.random_bool(cfg.old_share.clamp(0.0, 1.0));
        // Junctions: grid positions with ±10 % of a block of jitter (km, north/east of
        // the district's south-west corner).
        let jitter = cfg.block_m / 1000.0 * 0.1;
        let nodes: Vec<Vec<(f64, f64)>> = (0..n)
            .map(|i| {
                (0..n)
                    .map(|j| {
                        (
                            i as f64 * cfg.block_m / 1000.0 + rng.random_range(-jitter..=jitter),
                            j as f64 * cfg.block_m / 1000.0 + rng.random_range(-jitter..=jitter),
                        )
                    })
                    .collect()
            })
            .collect();
        let point =
            |(north, east): (f64, f64)| center.offset_km(north - span / 2.0, east - span / 2.0);
        let mains = [0, n / 2];
        // East-west streets (row i, block j..j+1), then north-south (column j).
        let mut blocks = Vec::new();
        for i in 0..n {
            for j in 0..n - 1 {
                blocks.push((
                    format!("{district}-E{i:02}-{j:02}"),
                    nodes[i][j],
                    nodes[i][j + 1],
                    mains.contains(&i),
                ));
            }
        }
        for j in 0..n {
            for i in 0..n - 1 {
                blocks.push((
                    format!("{district}-N{j:02}-{i:02}"),
                    nodes[i][j],
                    nodes[i + 1][j],
                    mains.contains(&j),
                ));
            }
        }
        for (id, a, b, main) in blocks {
            let mid = ((a.0 + b.0) / 2.0, (a.1 + b.1) / 2.0);
            // Distance from the centre, 0 at the centre, 1 at the corners.
            let r = ((mid.0 - span / 2.0).powi(2) + (mid.1 - span / 2.0).powi(2)).sqrt()
                / (span / std::f64::consts::SQRT_2);
            let core = old && r < 0.45;
            let (material, year) = if core {
                let m = match rng.random_range(0..4) {
                    0 | 1 => Material::CastIron,
                    2 => Material::UnprotectedSteel,
                    _ => Material::Steel,
                };
                (m, rng.random_range(1930..=1970))
            } else if r < 0.75 && (old || rng.random_bool(0.5)) {
                let m = if rng.random_bool(0.6) {
                    Material::Steel
                } else {
                    Material::Polyethylene
                };
                (m, rng.random_range(1960..=1995))
            } else {
                let m = if rng.random_bool(0.85) {
                    Material::Polyethylene
                } else {
                    Material::Steel
                };
                (m, rng.random_range(1985..=2022))
            };
            let pressure_class = class_of(table, main, core, material);
            let diameter_mm = if main {
                *[150u32, 200, 250]
                    .get(rng.random_range(0..3))
                    .unwrap_or(&200)
            } else {
                *[63u32, 90, 110, 125]
                    .get(rng.random_range(0..4))
                    .unwrap_or(&110)
            };
            let segment = Segment {
                id,
                district: district.clone(),
                geometry: vec![point(a), point(b)],
                pressure_class,
                material,
                diameter_mm,
                year_laid: year,
                added_on: NaiveDate::from_ymd_opt(year, 1, 1).expect("valid year"),
            };
            let cycle = cycle_days(table, &segment.pressure_class);
            let last = start - Duration::days(rng.random_range(1..=cycle.max(2)));
            let last_surveyed = (last.year() > year).then_some(last);
            out.push(Imported {
                segment,
                last_surveyed,
            });
        }
    }
    out
}

/// The network as GeoJSON (see `leakwatch_survey::geojson`).
pub fn to_geojson(items: &[Imported]) -> serde_json::Value {
    let segs: Vec<Segment> = items.iter().map(|i| i.segment.clone()).collect();
    let last: std::collections::HashMap<&str, NaiveDate> = items
        .iter()
        .filter_map(|i| i.last_surveyed.map(|d| (i.segment.id.as_str(), d)))
        .collect();
    leakwatch_survey::geojson::to_geojson(&segs, |id| last.get(id).copied())
}

/// The midpoint of a segment, for tests and placing things on it.
pub fn midpoint(s: &Segment) -> GeoPoint {
    s.midpoint()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streets_per_district_around_the_meters_and_within_their_obligations() {
        let fleet = FleetConfig {
            districts: 4,
            ..FleetConfig::default()
        };
        let table = ObligationTable::it();
        let net = generate(&fleet, &NetworkConfig::default(), &table);
        assert_eq!(net.len(), 4 * 2 * 8 * 7);
        let km: f64 = net.iter().map(|i| i.segment.length_m()).sum::<f64>() / 1000.0;
        assert!((80.0..100.0).contains(&km), "{km} km");
        // Each district's network is around its centre, where its meters are.
        for d in 0..4 {
            let c = district_center(&fleet, d);
            let id = format!("D{:02}", d + 1);
            for i in net.iter().filter(|i| i.segment.district.as_str() == id) {
                assert!(i.segment.midpoint().distance_km(&c) < 1.1);
            }
        }
        // Both classes, several materials, mains of medium pressure.
        let classes: std::collections::HashSet<&str> = net
            .iter()
            .map(|i| i.segment.pressure_class.as_str())
            .collect();
        assert_eq!(classes.len(), 2);
        let mats: std::collections::HashSet<Material> =
            net.iter().map(|i| i.segment.material).collect();
        assert!(mats.len() >= 3, "{mats:?}");
        // Every surveyed segment's last survey is before the start and after it was laid.
        let start = fleet.start.date_naive();
        assert!(net.iter().all(|i| {
            i.last_surveyed
                .is_none_or(|d| d < start && d.year() >= i.segment.year_laid)
        }));
        // Deterministic, and GeoJSON that the importer reads back.
        assert_eq!(generate(&fleet, &NetworkConfig::default(), &table), net);
        let text = to_geojson(&net).to_string();
        let back = leakwatch_survey::geojson::parse(&text, Some(&["it_bp", "it_ap_mp"])).unwrap();
        assert_eq!(back.len(), net.len());
        assert!((back[5].segment.length_m() - net[5].segment.length_m()).abs() < 0.01);
        // The US table: a business core where a district is old.
        let us = generate(&fleet, &NetworkConfig::default(), &ObligationTable::us());
        assert!(
            us.iter()
                .all(|i| i.segment.pressure_class.starts_with("us_"))
        );
    }
}
