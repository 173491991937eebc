//! The detector state aggregate: the detectors' checkpoint, one row per subject.

use crate::db::{args, sql};
use crate::{Result, Store, pg, sqlite};
use std::future::Future;

/// The detectors' checkpoint.
pub trait DetectorStateStore: Send + Sync {
    /// Saves detector state, one row per subject (`meter:<id>`, `district:<id>`,
    /// `engine`), replacing what was there, in one statement or transaction.
    fn save_detector_state(
        &self,
        rows: &[(String, Vec<u8>)],
    ) -> impl Future<Output = Result<()>> + Send;

    /// Every saved detector state, by subject.
    fn load_detector_state(&self) -> impl Future<Output = Result<Vec<(String, Vec<u8>)>>> + Send;
}

/// The detector state part of a [`Store`] ([`Store::detector_state_store`]).
#[derive(Clone, Debug)]
pub struct DetectorState(pub(crate) Store);

/// What saving a subject's state does when one is stored (`excluded` being the new row).
macro_rules! state_upsert {
    () => {
        "ON CONFLICT (subject) DO UPDATE SET state = excluded.state,
                                             updated_at = excluded.updated_at"
    };
}
pub(crate) use state_upsert;

impl DetectorStateStore for DetectorState {
    async fn save_detector_state(&self, rows: &[(String, Vec<u8>)]) -> Result<()> {
        if rows.is_empty() {
            return Ok(());
        }
        let now = chrono::Utc::now();
        match &self.0 {
            Store::Postgres(p) => pg::save_detector_state(&p.pool, rows, now).await,
            Store::Sqlite(p) => sqlite::save_detector_state(p, rows, now).await,
        }
    }

    async fn load_detector_state(&self) -> Result<Vec<(String, Vec<u8>)>> {
        let rows = self
            .0
            .exec()
            .fetch_all(
                sql!("SELECT subject, state FROM detector_state ORDER BY subject"),
                args![],
            )
            .await?;
        rows.iter()
            .map(|row| Ok((row.text("subject")?, row.bytes("state")?)))
            .collect()
    }
}
