//! Devices that log in to the MQTT broker and what each kind may do.
//!
//! Every broker login is one identity: a meter (its meter id), a crew's phone (its crew
//! id), a head-end that speaks for many meters, or leakwatch's own service user. The
//! topic rules for each kind are written once here, so the Mosquitto ACL leakwatch
//! generates and the documentation cannot disagree.

use crate::Timestamp;
use serde::{Deserialize, Serialize};

/// What a broker identity is.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    Serialize,
    Deserialize,
    strum::IntoStaticStr,
    strum::VariantArray,
    strum::Display,
)]
#[serde(rename_all = "lowercase")]
#[strum(serialize_all = "lowercase")]
pub enum DeviceKind {
    /// A meter: publishes its own uplink only.
    Meter,
    /// A crew's phone: reads its own jobs, writes its own position.
    Crew,
    /// A head-end system publishing on behalf of many meters (a widening of trust:
    /// it may publish any meter's uplink).
    Headend,
    /// leakwatch itself: reads every uplink and crews' positions, writes crews' jobs.
    Service,
}

impl DeviceKind {
    pub fn as_str(self) -> &'static str {
        self.into()
    }

    /// Parses `meter`, `crew`, `headend` or `service`.
    pub fn parse(s: &str) -> Option<DeviceKind> {
        crate::names::parse::<DeviceKind>("device kind", s).ok()
    }

    /// The topic rules of an identity of this kind named `username`, as
    /// (access, topic filter) pairs; `meter_prefix` and `crew_prefix` are the topic
    /// prefixes (`gas`, `crews` by default). Anything not listed is denied.
    pub fn topic_rules(
        self,
        username: &str,
        meter_prefix: &str,
        crew_prefix: &str,
    ) -> Vec<(Access, String)> {
        match self {
            DeviceKind::Meter => vec![(Access::Write, format!("{meter_prefix}/+/{username}/up"))],
            DeviceKind::Crew => vec![
                (Access::Read, format!("{crew_prefix}/{username}/jobs")),
                (Access::Write, format!("{crew_prefix}/{username}/location")),
            ],
            DeviceKind::Headend => vec![(Access::Write, format!("{meter_prefix}/+/+/up"))],
            DeviceKind::Service => vec![
                (Access::Read, format!("{meter_prefix}/+/+/up")),
                (Access::Read, format!("{crew_prefix}/+/location")),
                (Access::Write, format!("{crew_prefix}/+/jobs")),
            ],
        }
    }
}

/// Read (subscribe and receive) or write (publish).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Read,
    Write,
}

impl Access {
    /// Mosquitto's ACL word.
    pub fn as_str(self) -> &'static str {
        match self {
            Access::Read => "read",
            Access::Write => "write",
        }
    }
}

/// A stored broker credential: the secret itself is never kept, only its hash.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DeviceCredential {
    pub username: String,
    pub kind: DeviceKind,
    /// Mosquitto's password-file hash (`$7$iterations$salt$hash`, PBKDF2-SHA512).
    #[serde(skip)]
    pub secret_hash: String,
    pub created_at: Timestamp,
    pub rotated_at: Timestamp,
    pub revoked_at: Option<Timestamp>,
}

impl DeviceCredential {
    pub fn is_active(&self) -> bool {
        self.revoked_at.is_none()
    }
}

/// Whether `s` can be a broker username: 1..64 characters of `[A-Za-z0-9._-]`, the
/// same alphabet as meter and crew ids, so it is safe in a password file, an ACL line
/// and a topic level.
pub fn valid_username(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_meter_may_only_publish_its_own_uplink() {
        let rules = DeviceKind::Meter.topic_rules("PDR1", "gas", "crews");
        assert_eq!(rules, vec![(Access::Write, "gas/+/PDR1/up".to_owned())]);
    }

    #[test]
    fn a_crew_reads_its_jobs_and_writes_its_position_only() {
        let rules = DeviceKind::Crew.topic_rules("C7", "gas", "crews");
        assert_eq!(
            rules,
            vec![
                (Access::Read, "crews/C7/jobs".to_owned()),
                (Access::Write, "crews/C7/location".to_owned())
            ]
        );
    }

    #[test]
    fn kinds_round_trip_and_usernames_are_checked() {
        for &k in <DeviceKind as strum::VariantArray>::VARIANTS {
            assert_eq!(DeviceKind::parse(k.as_str()), Some(k));
        }
        assert_eq!(DeviceKind::parse("admin"), None);
        assert!(valid_username("PDR-00.1_a"));
        assert!(!valid_username(""));
        assert!(!valid_username("a b"));
        assert!(!valid_username("a/#"));
        assert!(!valid_username(&"x".repeat(65)));
    }
}
