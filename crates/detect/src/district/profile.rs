//! A customer meter's profile: what the balance needs to impute the meter's
//! consumption for an hour it has not reported.
//!
//! The profile is an exponentially weighted mean of the meter's *share of the
//! district's inflow* in an hour, in 48 buckets: the 24 local hours of a weekday and of
//! a weekend day (homes that are away on weekdays have another day at weekends). A
//! share rather than a volume, so that the profile of a meter that stopped reporting
//! weeks ago is still comparable with the others' after the weather has doubled
//! everyone's use. The balance scales the shares of the missing meters by how the
//! reporters' use compares with their own shares (a ratio estimator, see
//! `DistrictState::close_hour`).
//!
//! Each mean is stored on a 16-bit logarithmic scale (0.025 % steps above a share of
//! 10⁻⁵, linear below), so the whole profile takes 97 bytes serialized.

use crate::hours::Hour;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Buckets: 24 weekday hours then 24 weekend hours.
pub(crate) const BUCKETS: usize = 48;

/// Scale of the logarithmic code: code = 1 + K ln(1 + v / V0); a share of 1 is code
/// 55,263.
const K: f64 = 4000.0;
/// Share below which the code is linear rather than logarithmic.
const V0: f64 = 1e-6;

/// Per customer meter: the EW mean of its share of the district's hourly inflow, per
/// bucket.
#[derive(Debug, Clone, PartialEq)]
pub struct CustomerProfile {
    /// 0: nothing learned for the bucket yet; otherwise the coded mean.
    codes: [u16; BUCKETS],
}

impl CustomerProfile {
    /// Nothing learned.
    pub const EMPTY: CustomerProfile = CustomerProfile {
        codes: [0; BUCKETS],
    };
}

impl Default for CustomerProfile {
    fn default() -> Self {
        Self {
            codes: [0; BUCKETS],
        }
    }
}

fn encode(v: f64) -> u16 {
    let v = if v.is_finite() { v.max(0.0) } else { 0.0 };
    let code = 1.0 + (K * (v / V0).ln_1p()).round();
    code.min(f64::from(u16::MAX)) as u16
}

fn decode(code: u16) -> Option<f64> {
    (code != 0).then(|| V0 * (f64::from(code - 1) / K).exp_m1())
}

/// The bucket of an hour starting at `start`, with the district's local offset.
#[cfg(test)]
pub(crate) fn bucket(start: crate::Timestamp, offset_h: i32) -> usize {
    bucket_s(start.timestamp(), offset_h)
}

/// [`bucket`] of an hour given in Unix seconds.
pub(crate) fn bucket_s(start_s: i64, offset_h: i32) -> usize {
    let local = start_s + i64::from(offset_h) * 3600;
    let weekend = crate::is_weekend_day(local.div_euclid(86_400));
    (local.rem_euclid(86_400) / 3600) as usize + if weekend { 24 } else { 0 }
}

impl CustomerProfile {
    /// Learns a measured hour, given the district's inflow in it, m³ (hours spread
    /// over a gap say nothing of the hour's shape and are skipped). `alpha` is the
    /// weight of the new hour.
    pub(crate) fn learn(&mut self, h: &Hour, inflow_m3: f64, offset_h: i32, alpha: f64) {
        if !h.measured()
            || !h.m3.is_finite()
            || h.m3 < 0.0
            || inflow_m3.is_nan()
            || inflow_m3 <= 0.0
        {
            return;
        }
        let share = (h.m3 / inflow_m3).min(1.0);
        let b = bucket_s(h.start_s, offset_h);
        let mean = match decode(self.codes[b]) {
            None => share,
            Some(m) => m + alpha.clamp(0.0, 1.0) * (share - m),
        };
        self.codes[b] = encode(mean);
    }

    /// The expected share in a bucket, once something has been learned for it.
    pub(crate) fn expect(&self, bucket: usize) -> Option<f64> {
        self.codes.get(bucket).copied().and_then(decode)
    }

    /// Whether anything has been learned.
    pub fn is_empty(&self) -> bool {
        self.codes.iter().all(|&c| c == 0)
    }
}

// serde implements arrays only up to 32 elements; the codes travel as 96 bytes.
impl Serialize for CustomerProfile {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut bytes = [0u8; BUCKETS * 2];
        for (chunk, code) in bytes.chunks_exact_mut(2).zip(self.codes) {
            chunk.copy_from_slice(&code.to_le_bytes());
        }
        s.serialize_bytes(&bytes)
    }
}

impl<'de> Deserialize<'de> for CustomerProfile {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = CustomerProfile;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "{} bytes", BUCKETS * 2)
            }

            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Self::Value, E> {
                if v.len() != BUCKETS * 2 {
                    return Err(E::invalid_length(v.len(), &self));
                }
                let mut p = CustomerProfile::default();
                for (code, chunk) in p.codes.iter_mut().zip(v.chunks_exact(2)) {
                    *code = u16::from_le_bytes([chunk[0], chunk[1]]);
                }
                Ok(p)
            }

            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Self::Value, A::Error> {
                let mut bytes = Vec::with_capacity(BUCKETS * 2);
                while let Some(b) = seq.next_element::<u8>()? {
                    bytes.push(b);
                }
                self.visit_bytes(&bytes)
            }
        }
        d.deserialize_bytes(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeZone, Utc};

    #[test]
    fn codes_keep_a_quarter_per_mille() {
        for v in [0.0, 1e-7, 1e-5, 0.001, 0.0123, 0.25, 1.0] {
            let back = decode(encode(v)).unwrap();
            assert!((back - v).abs() <= v * 3e-4 + 2e-10, "{v} -> {back}");
        }
        assert_eq!(decode(0), None);
    }

    #[test]
    fn learns_by_bucket_and_round_trips() {
        let mut p = CustomerProfile::default();
        assert!(p.is_empty());
        // Monday 2026-11-02 06:00 local = 05:00 UTC.
        let monday = Utc.with_ymd_and_hms(2026, 11, 2, 5, 0, 0).unwrap();
        let hour = |m3, spread_h| Hour::new(monday, m3, spread_h, None, None);
        p.learn(&hour(0.2, 1), 10.0, 1, 0.5);
        p.learn(&hour(0.4, 1), 10.0, 1, 0.5);
        p.learn(&hour(9.0, 3), 10.0, 1, 0.5); // spread: ignored
        p.learn(&hour(9.0, 1), 0.0, 1, 0.5); // no inflow: ignored
        let b = bucket(monday, 1);
        assert_eq!(b, 6);
        assert!((p.expect(b).unwrap() - 0.03).abs() < 1e-5);
        assert_eq!(p.expect(b + 24), None);
        let bytes = postcard::to_allocvec(&p).unwrap();
        assert!(bytes.len() <= 100, "{} bytes", bytes.len());
        let back: CustomerProfile = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(back, p);
        let json = serde_json::to_string(&p).unwrap();
        let back: CustomerProfile = serde_json::from_str(&json).unwrap();
        assert_eq!(back, p);
    }
}
