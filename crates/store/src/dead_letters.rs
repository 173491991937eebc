//! The dead letters aggregate: messages that could not be processed, kept for a person
//! to look at.

use crate::db::{Row, args, sql};
use crate::{Result, Store};
use leakwatch_core::Timestamp;
use serde::{Serialize, Serializer};
use std::future::Future;

/// A message that could not be processed, to be kept for a person to look at.
#[derive(Debug, Clone, Serialize)]
pub struct NewDeadLetter {
    /// Where the message came from (MQTT topic, HTTP route).
    pub topic: String,
    /// Short machine-friendly reason, e.g. `bad_json`, `unknown_meter`.
    pub reason: String,
    /// Human-readable detail.
    pub detail: String,
    /// The message as received, byte for byte.
    #[serde(serialize_with = "lossy_utf8")]
    pub payload: Vec<u8>,
    pub received_at: Timestamp,
}

/// A stored dead letter. Serializes `payload` as a (lossy) UTF-8 string.
#[derive(Debug, Clone, Serialize)]
pub struct DeadLetter {
    pub id: i64,
    pub topic: String,
    pub reason: String,
    pub detail: String,
    #[serde(serialize_with = "lossy_utf8")]
    pub payload: Vec<u8>,
    pub received_at: Timestamp,
}

fn lossy_utf8<S: Serializer>(bytes: &[u8], s: S) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_str(&String::from_utf8_lossy(bytes))
}

/// Messages that could not be processed.
pub trait DeadLetterStore: Send + Sync {
    /// Keeps a message that could not be processed; returns its id.
    fn dead_letter(&self, dl: &NewDeadLetter) -> impl Future<Output = Result<i64>> + Send;

    /// The latest dead letters, newest (highest id) first.
    fn list_dead_letters(&self, limit: u32)
    -> impl Future<Output = Result<Vec<DeadLetter>>> + Send;

    /// How many dead letters are stored.
    fn count_dead_letters(&self) -> impl Future<Output = Result<i64>> + Send;
}

/// The dead letters part of a [`Store`] ([`Store::dead_letter_store`]).
#[derive(Clone, Debug)]
pub struct DeadLetters(pub(crate) Store);

fn dead_letter_from_row(row: &Row) -> Result<DeadLetter> {
    Ok(DeadLetter {
        id: row.int("id")?,
        topic: row.text("topic")?,
        reason: row.text("reason")?,
        detail: row.text("detail")?,
        payload: row.bytes("payload")?,
        received_at: row.time("received_at")?,
    })
}

impl DeadLetterStore for DeadLetters {
    async fn dead_letter(&self, dl: &NewDeadLetter) -> Result<i64> {
        let row = self
            .0
            .exec()
            .fetch_one(
                sql!(
                    "INSERT INTO dead_letters (topic, reason, detail, payload, received_at)
                     VALUES ($1, $2, $3, $4, $5) RETURNING id"
                ),
                args![
                    &dl.topic,
                    &dl.reason,
                    &dl.detail,
                    &dl.payload,
                    dl.received_at
                ],
            )
            .await?;
        row.int("id")
    }

    async fn list_dead_letters(&self, limit: u32) -> Result<Vec<DeadLetter>> {
        let rows = self
            .0
            .exec()
            .fetch_all(
                sql!(
                    "SELECT id, topic, reason, detail, payload, received_at FROM dead_letters
                     ORDER BY id DESC LIMIT $1"
                ),
                args![limit],
            )
            .await?;
        rows.iter().map(dead_letter_from_row).collect()
    }

    async fn count_dead_letters(&self) -> Result<i64> {
        let row = self
            .0
            .exec()
            .fetch_one(sql!("SELECT count(*) AS n FROM dead_letters"), args![])
            .await?;
        row.int("n")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dead_letters_serialize_payload_as_text() {
        let dl = DeadLetter {
            id: 1,
            topic: "t".into(),
            reason: "bad_json".into(),
            detail: "d".into(),
            payload: vec![b'{', 0xff, b'}'],
            received_at: chrono::DateTime::from_timestamp(0, 0).unwrap(),
        };
        let v = serde_json::to_value(&dl).unwrap();
        assert_eq!(v["payload"], "{\u{fffd}}");
    }
}
