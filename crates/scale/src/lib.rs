//! The scaled-out shape of leakwatch (issue 14, `docs/scale-out.md`).
//!
//! * [`bridge`]: meters keep speaking MQTT; each bridge holds a persistent QoS 1
//!   session (`leakwatch_mqtt::Session`), appends every message to the log with a
//!   deduplication id (meter and first reading time) in its district's partition,
//!   waits for the log's acknowledgement, and only then acknowledges MQTT.
//! * [`worker`]: owns partitions by lease, reads each from its committed sequence,
//!   judges and stores readings, runs the detectors of its partitions and commits each
//!   batch in one fenced PostgreSQL transaction, acknowledging the log after it.

pub mod bridge;
pub mod status;
pub mod worker;

/// Sets the failpoints named in `FAIL_POINTS` (`name=actions;name=actions`) when built
/// with the `failpoints` feature; nothing otherwise.
pub fn failpoints_from_env() {
    #[cfg(feature = "failpoints")]
    if let Ok(spec) = std::env::var("FAIL_POINTS") {
        for part in spec.split(';').filter(|p| !p.trim().is_empty()) {
            if let Some((name, actions)) = part.split_once('=')
                && let Err(e) = fail::cfg(name.trim(), actions.trim())
            {
                tracing::warn!(error = %e, "bad failpoint {name}");
            }
        }
    }
}
