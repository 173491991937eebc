//! The crews' MQTT contract, beside the meters': the job message leakwatch publishes
//! on `{crew_prefix}/{crew_id}/jobs` and the position a device publishes on
//! `{crew_prefix}/{crew_id}/location` (`docs/dispatch.md`, "The crews' MQTT channel").
//!
//! A job message is bounded by construction: every free-text field is cut to a fixed
//! JSON-encoded length ([`Text`]) and lists to a fixed count, so the encoded message is
//! never over [`JOB_MESSAGE_MAX_BYTES`] (8 KiB), within the 10 KiB that common MQTT
//! clients accept by default; `truncated` tells the phone to read the whole order from
//! the API.

use crate::DEAD_LETTER_MAX_PAYLOAD;
use chrono::{DateTime, Utc};
use leakwatch_core::{
    CrewId, DeadlineView, DistrictId, GeoPoint, MeterId, PositionReport, Priority, SiteFinding,
    WorkOrder, WorkOrderKind, WorkOrderStatus,
};
use serde::{Deserialize, Deserializer, Serialize};

type Timestamp = DateTime<Utc>;

/// The most bytes a job message takes, encoded.
pub const JOB_MESSAGE_MAX_BYTES: usize = 8 * 1024;
/// The most bytes (JSON-encoded, quotes included) of a job's summary.
pub const JOB_SUMMARY_MAX_BYTES: usize = 2 * 1024;
/// The most bytes of the finding's notes.
pub const JOB_NOTES_MAX_BYTES: usize = 1024;
/// The most bytes of a short text (a leak class, where a gas reading was taken).
pub const JOB_SHORT_TEXT_MAX_BYTES: usize = 64;
/// The most gas readings a job message carries.
pub const JOB_GAS_READINGS_MAX: usize = 8;
/// The most bytes of a location message: a position is a few dozen bytes.
pub const LOCATION_MAX_BYTES: usize = 1024;

/// Text whose JSON encoding (quotes and escapes included) takes at most `N` bytes:
/// longer text is cut at a character boundary on construction and on decoding.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
#[serde(transparent)]
pub struct Text<const N: usize>(String);

impl<const N: usize> Text<N> {
    /// The text, cut to fit; `true` when it was cut.
    pub fn new(s: &str) -> (Self, bool) {
        let mut used = 2; // the quotes
        for (i, c) in s.char_indices() {
            used += json_len(c);
            if used > N {
                return (Text(s[..i].to_owned()), true);
            }
        }
        (Text(s.to_owned()), false)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl<'de, const N: usize> Deserialize<'de> for Text<N> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Ok(Self::new(&s).0)
    }
}

/// Bytes `c` takes in a JSON string as serde_json writes it.
fn json_len(c: char) -> usize {
    match c {
        '"' | '\\' | '\n' | '\r' | '\t' | '\u{8}' | '\u{c}' => 2,
        c if (c as u32) < 0x20 => 6,
        c => c.len_utf8(),
    }
}

/// What happened to the job, from the crew's point of view.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobChange {
    /// The job is now the crew's.
    Assigned,
    /// The job changed (status, priority, deadline).
    Updated,
    /// The job is no longer the crew's (reassigned, pre-empted, cancelled).
    Withdrawn,
}

/// The message on `{crew_prefix}/{crew_id}/jobs`. Build it with [`JobMessage::new`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobMessage {
    /// Message format version.
    pub v: u8,
    pub crew_id: CrewId,
    pub change: JobChange,
    pub sent_at: Timestamp,
    pub order: JobOrder,
    /// Where the order stands against its deadline when sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline: Option<JobDeadline>,
}

/// The work order as `GET /api/v1/work-orders/{id}` shows it (without its history),
/// its texts bounded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobOrder {
    pub id: i64,
    pub kind: WorkOrderKind,
    pub priority: Priority,
    pub status: WorkOrderStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alert_id: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub meter_id: Option<MeterId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub district_id: Option<DistrictId>,
    pub location: GeoPoint,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crew_id: Option<CrewId>,
    pub summary: Text<JOB_SUMMARY_MAX_BYTES>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub due_at: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_id: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assigned_at: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reached_at: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub breached_at: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finding: Option<JobFinding>,
    /// Some text or list was cut to fit: the API has the whole order.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub truncated: bool,
}

/// What the crew found, bounded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobFinding {
    pub leak_found: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leak_class: Option<Text<JOB_SHORT_TEXT_MAX_BYTES>>,
    #[serde(default)]
    pub gas_readings: Vec<JobGasReading>,
    #[serde(default)]
    pub repaired: bool,
    #[serde(default)]
    pub notes: Text<JOB_NOTES_MAX_BYTES>,
}

/// One gas reading of a finding.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobGasReading {
    pub percent_lel: f64,
    pub place: Text<JOB_SHORT_TEXT_MAX_BYTES>,
}

/// [`DeadlineView`] as the job message carries it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobDeadline {
    pub due_at: Timestamp,
    /// `arrival` (on site) or `completion`.
    pub measures: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub met_at: Option<Timestamp>,
    pub minutes_left: i64,
    pub breached: bool,
}

impl From<DeadlineView> for JobDeadline {
    fn from(d: DeadlineView) -> Self {
        JobDeadline {
            due_at: d.due_at,
            measures: d.measures.to_owned(),
            met_at: d.met_at,
            minutes_left: d.minutes_left,
            breached: d.breached,
        }
    }
}

impl JobOrder {
    /// The order with its texts cut to fit.
    pub fn new(o: &WorkOrder) -> Self {
        let mut truncated = false;
        let summary = cut(&o.summary, &mut truncated);
        let finding = o.finding.as_ref().map(|f: &SiteFinding| JobFinding {
            leak_found: f.leak_found,
            leak_class: f.leak_class.as_deref().map(|c| cut(c, &mut truncated)),
            gas_readings: f
                .gas_readings
                .iter()
                .take(JOB_GAS_READINGS_MAX)
                .map(|g| JobGasReading {
                    percent_lel: g.percent_lel,
                    place: cut(&g.place, &mut truncated),
                })
                .collect(),
            repaired: f.repaired,
            notes: cut(&f.notes, &mut truncated),
        });
        if o.finding
            .as_ref()
            .is_some_and(|f| f.gas_readings.len() > JOB_GAS_READINGS_MAX)
        {
            truncated = true;
        }
        JobOrder {
            id: o.id,
            kind: o.kind,
            priority: o.priority,
            status: o.status,
            alert_id: o.alert_id,
            meter_id: o.meter_id.clone(),
            district_id: o.district_id.clone(),
            location: o.location,
            crew_id: o.crew_id.clone(),
            summary,
            created_at: o.created_at,
            updated_at: o.updated_at,
            due_at: o.due_at,
            parent_id: o.parent_id,
            assigned_at: o.assigned_at,
            reached_at: o.reached_at,
            breached_at: o.breached_at,
            finding,
            truncated,
        }
    }
}

fn cut<const N: usize>(s: &str, truncated: &mut bool) -> Text<N> {
    let (t, was_cut) = Text::new(s);
    *truncated |= was_cut;
    t
}

impl JobMessage {
    /// The message telling `crew` of `change` to `order`, sent at `now`.
    pub fn new(crew: &CrewId, change: JobChange, order: &WorkOrder, now: Timestamp) -> Self {
        JobMessage {
            v: 1,
            crew_id: crew.clone(),
            change,
            sent_at: now,
            order: JobOrder::new(order),
            deadline: order.deadline(now).map(JobDeadline::from),
        }
    }

    /// The JSON payload: at most [`JOB_MESSAGE_MAX_BYTES`].
    pub fn encode(&self) -> Vec<u8> {
        let body = serde_json::to_vec(self).expect("a job message always serializes");
        debug_assert!(body.len() <= JOB_MESSAGE_MAX_BYTES, "{} bytes", body.len());
        body
    }
}

/// A location message that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    pub reason: &'static str,
    pub detail: String,
}

/// The topic crews' devices publish their position on.
pub fn location_filter(crew_prefix: &str) -> String {
    format!("{crew_prefix}/+/location")
}

/// The topic a crew's jobs go to.
pub fn jobs_topic(crew_prefix: &str, crew: &CrewId) -> String {
    format!("{crew_prefix}/{crew}/jobs")
}

/// Reads a location publish: the crew from the topic, the fix from the payload. A
/// payload over [`LOCATION_MAX_BYTES`] is `too_large`.
pub fn parse_location(
    prefix: &str,
    topic: &str,
    payload: &[u8],
    now: Timestamp,
) -> Result<(CrewId, GeoPoint, Timestamp), Rejected> {
    let reject = |reason, detail: String| Rejected { reason, detail };
    let crew = topic
        .strip_prefix(prefix)
        .and_then(|r| r.strip_prefix('/'))
        .and_then(|r| r.strip_suffix("/location"))
        .ok_or_else(|| {
            reject(
                "bad_topic",
                format!("{topic:?} is not {prefix}/{{crew_id}}/location"),
            )
        })?;
    let crew = CrewId::parse(crew).map_err(|e| reject("bad_crew", e.to_string()))?;
    if payload.len() > LOCATION_MAX_BYTES {
        return Err(reject(
            "too_large",
            format!(
                "location of {} bytes; at most {LOCATION_MAX_BYTES} are allowed (the first {} are kept)",
                payload.len(),
                payload.len().min(DEAD_LETTER_MAX_PAYLOAD)
            ),
        ));
    }
    let msg: PositionReport = serde_json::from_slice(payload)
        .map_err(|e| reject("bad_location", format!("not a location message: {e}")))?;
    let (at, t) = msg
        .check(now)
        .map_err(|e| reject(e.reason(), e.to_string()))?;
    Ok((crew, at, t))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use leakwatch_core::GasReading;

    fn now() -> Timestamp {
        Utc.with_ymd_and_hms(2026, 11, 26, 10, 0, 0).unwrap()
    }

    fn order(summary: &str) -> WorkOrder {
        let t = now();
        WorkOrder {
            id: 7,
            kind: WorkOrderKind::Emergency,
            priority: Priority::Emergency,
            status: WorkOrderStatus::Assigned,
            alert_id: Some(3),
            meter_id: Some(MeterId::parse("M-1").unwrap()),
            district_id: Some(DistrictId::parse("D1").unwrap()),
            location: GeoPoint::new(43.77, 11.25).unwrap(),
            crew_id: Some(CrewId::parse("C-7").unwrap()),
            summary: summary.into(),
            created_at: t,
            updated_at: t,
            due_at: Some(t + chrono::Duration::minutes(60)),
            parent_id: None,
            assigned_at: Some(t),
            reached_at: None,
            breached_at: None,
            finding: None,
        }
    }

    #[test]
    fn text_is_cut_to_its_encoded_length_at_a_char_boundary() {
        let (t, cut) = Text::<10>::new("abcdefgh");
        assert_eq!((t.as_str(), cut), ("abcdefgh", false));
        let (t, cut) = Text::<10>::new("abcdefghi");
        assert_eq!((t.as_str(), cut), ("abcdefgh", true));
        // Two bytes each: four fit in 8 + 2 quotes.
        let (t, _) = Text::<10>::new("ééééé");
        assert_eq!(t.as_str(), "éééé");
        // Escapes count as written: \u0001 is six bytes.
        let (t, _) = Text::<10>::new("\u{1}\u{1}");
        assert_eq!(t.as_str(), "\u{1}");
        for s in ["ééééé", "\u{1}\u{1}\u{1}", "\"\"\"\"\"\"", "a\nb\\c\td"] {
            let (t, _) = Text::<10>::new(s);
            assert!(serde_json::to_string(&t).unwrap().len() <= 10, "{s:?}");
        }
        // Decoding cuts too.
        let t: Text<5> = serde_json::from_str(r#""abcdef""#).unwrap();
        assert_eq!(t.as_str(), "abc");
    }

    #[test]
    fn a_job_message_round_trips_and_keeps_short_texts_whole() {
        let o = order("gas smell reported by phone");
        let crew = CrewId::parse("C-7").unwrap();
        let m = JobMessage::new(&crew, JobChange::Assigned, &o, now());
        let v: serde_json::Value = serde_json::from_slice(&m.encode()).unwrap();
        assert_eq!(v["change"], "assigned");
        assert_eq!(v["order"]["summary"], "gas smell reported by phone");
        assert_eq!(v["order"]["status"], "assigned");
        assert_eq!(v["deadline"]["measures"], "arrival");
        assert_eq!(v["deadline"]["minutes_left"], 60);
        assert!(v["order"].get("truncated").is_none());
        let back: JobMessage = serde_json::from_slice(&m.encode()).unwrap();
        assert_eq!(back, m);
    }

    /// The worst case: every text and list far over its bound, every id at 64
    /// characters, every optional field set.
    #[test]
    fn the_largest_possible_job_message_fits() {
        let id64 = "x".repeat(64);
        let mut o = order(&"\u{1}".repeat(1 << 20));
        o.meter_id = Some(MeterId::parse(&id64).unwrap());
        o.district_id = Some(DistrictId::parse(&id64).unwrap());
        o.crew_id = Some(CrewId::parse(&id64).unwrap());
        o.id = i64::MIN;
        o.alert_id = Some(i64::MIN);
        o.parent_id = Some(i64::MIN);
        o.reached_at = Some(now());
        o.breached_at = Some(now());
        o.location = GeoPoint::new(-89.123_456_789_012_34, -179.123_456_789_012_3).unwrap();
        o.finding = Some(SiteFinding {
            leak_found: true,
            leak_class: Some("\"".repeat(10_000)),
            gas_readings: (0..1000)
                .map(|_| GasReading {
                    percent_lel: -1.234_567_890_123_456_7e-300,
                    place: "\u{1f}".repeat(10_000),
                })
                .collect(),
            repaired: true,
            notes: "\\".repeat(1 << 20),
        });
        let crew = CrewId::parse(&id64).unwrap();
        let m = JobMessage::new(&crew, JobChange::Withdrawn, &o, now());
        let body = m.encode();
        assert!(body.len() <= JOB_MESSAGE_MAX_BYTES, "{} bytes", body.len());
        assert!(m.order.truncated);
        assert_eq!(
            m.order.finding.unwrap().gas_readings.len(),
            JOB_GAS_READINGS_MAX
        );
    }

    #[test]
    fn locations_are_read_or_rejected_with_a_reason() {
        let now = now();
        let (crew, at, t) = parse_location(
            "crews",
            "crews/C-7/location",
            br#"{"lat":43.77,"lon":11.25,"t":"2026-11-26T09:59:00Z"}"#,
            now,
        )
        .unwrap();
        assert_eq!(crew.as_str(), "C-7");
        assert_eq!((at.lat, at.lon), (43.77, 11.25));
        assert_eq!(t, now - chrono::Duration::minutes(1));
        let (_, _, t) =
            parse_location("crews", "crews/C-7/location", br#"{"lat":1,"lon":2}"#, now).unwrap();
        assert_eq!(t, now);
        let reason = |topic: &str, body: &[u8]| {
            parse_location("crews", topic, body, now)
                .unwrap_err()
                .reason
        };
        assert_eq!(reason("crews/C-7/jobs", b"{}"), "bad_topic");
        assert_eq!(reason("crews/C-7/location", b"nope"), "bad_location");
        assert_eq!(
            reason("crews/C-7/location", br#"{"lat":91,"lon":2}"#),
            "bad_location"
        );
        assert_eq!(
            reason("crews/C-7/location", br#"{"lat":1,"lon":2,"alt":3}"#),
            "bad_location"
        );
        assert_eq!(
            reason(
                "crews/C-7/location",
                br#"{"lat":1,"lon":2,"t":"2026-11-26T11:00:00Z"}"#
            ),
            "t_in_future"
        );
        let mut big = br#"{"lat":1,"lon":2}"#.to_vec();
        big.resize(LOCATION_MAX_BYTES + 1, b' ');
        assert_eq!(reason("crews/C-7/location", &big), "too_large");
        big.truncate(LOCATION_MAX_BYTES);
        assert!(parse_location("crews", "crews/C-7/location", &big, now).is_ok());
    }
}
