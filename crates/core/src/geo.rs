//! Positions on the Earth and straight-line distances.

use serde::{Deserialize, Serialize};

/// A WGS84 position in decimal degrees.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GeoPoint {
    pub lat: f64,
    pub lon: f64,
}

const EARTH_RADIUS_KM: f64 = 6371.0088;
/// Kilometres per degree of latitude on the mean sphere (about 111.2).
const KM_PER_DEG: f64 = EARTH_RADIUS_KM * std::f64::consts::PI / 180.0;

impl GeoPoint {
    /// Builds a point, refusing latitudes outside -90..90, longitudes outside
    /// -180..180 and non-finite values.
    pub fn new(lat: f64, lon: f64) -> Result<Self, String> {
        if !lat.is_finite() || !(-90.0..=90.0).contains(&lat) {
            return Err(format!("latitude {lat} is outside -90..90"));
        }
        if !lon.is_finite() || !(-180.0..=180.0).contains(&lon) {
            return Err(format!("longitude {lon} is outside -180..180"));
        }
        Ok(Self { lat, lon })
    }

    /// Great-circle (haversine) distance in kilometres.
    pub fn distance_km(&self, other: &GeoPoint) -> f64 {
        let (p1, p2) = (self.lat.to_radians(), other.lat.to_radians());
        let dp = p2 - p1;
        let dl = (other.lon - self.lon).to_radians();
        let a = (dp / 2.0).sin().powi(2) + p1.cos() * p2.cos() * (dl / 2.0).sin().powi(2);
        2.0 * EARTH_RADIUS_KM * a.sqrt().asin()
    }

    /// The point `north_km` north and `east_km` east of this one, on a flat
    /// tangent plane: exact enough at city scale (tens of kilometres), wrong near
    /// the poles.
    pub fn offset_km(&self, north_km: f64, east_km: f64) -> GeoPoint {
        GeoPoint {
            lat: self.lat + north_km / KM_PER_DEG,
            lon: self.lon + east_km / (KM_PER_DEG * self.lat.to_radians().cos()),
        }
    }

    /// How far `self` lies (north, east) of `origin`, in km on the same plane as
    /// [`GeoPoint::offset_km`], whose inverse it is.
    pub fn km_from(&self, origin: &GeoPoint) -> (f64, f64) {
        let north = (self.lat - origin.lat) * KM_PER_DEG;
        let east = (self.lon - origin.lon) * KM_PER_DEG * origin.lat.to_radians().cos();
        (north, east)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distance_between_known_cities() {
        // Milan to Rome is about 477 km in a straight line.
        let milan = GeoPoint::new(45.4642, 9.1900).unwrap();
        let rome = GeoPoint::new(41.9028, 12.4964).unwrap();
        let d = milan.distance_km(&rome);
        assert!((470.0..485.0).contains(&d), "{d}");
        assert_eq!(milan.distance_km(&milan), 0.0);
    }

    #[test]
    fn offsets_are_kilometres_and_invert() {
        let florence = GeoPoint::new(43.7696, 11.2558).unwrap();
        let p = florence.offset_km(3.0, -4.0);
        assert!((florence.distance_km(&p) - 5.0).abs() < 0.01, "{p:?}");
        let (n, e) = p.km_from(&florence);
        assert!((n - 3.0).abs() < 1e-9 && (e + 4.0).abs() < 1e-9, "{n} {e}");
    }

    #[test]
    fn refuses_impossible_coordinates() {
        assert!(GeoPoint::new(91.0, 0.0).is_err());
        assert!(GeoPoint::new(0.0, 181.0).is_err());
        assert!(GeoPoint::new(f64::NAN, 0.0).is_err());
    }
}
