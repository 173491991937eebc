//! What the console keeps (migration 0012): the history of what people did to an
//! alert from the pages, and the crews' phone actions by client action id, so the
//! same action sent twice (a lost answer, an offline queue replayed) is applied once
//! and answered with its first answer.

use crate::db::{Arg, Exec, Row, args, sql};
use crate::{Result, Store, UnitOfWork};
use leakwatch_core::Timestamp;
use serde::Serialize;

/// One thing someone did to an alert.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AlertHistoryEntry {
    pub alert_id: i64,
    pub at: Timestamp,
    pub actor: String,
    /// `acknowledge`, `dismiss`, `escalate`, `resolve`, `note`.
    pub action: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// A crew's phone action recorded under its client action id.
#[derive(Debug, Clone, PartialEq)]
pub struct ClientAction {
    pub client_id: String,
    pub order_id: i64,
    pub actor: String,
    /// The action's name (`accept`, `start_travel`, ...).
    pub action: String,
    /// The answer the first request got.
    pub response: serde_json::Value,
    pub at: Timestamp,
}

fn history_entry(r: &Row) -> Result<AlertHistoryEntry> {
    Ok(AlertHistoryEntry {
        alert_id: r.int("alert_id")?,
        at: r.time("at")?,
        actor: r.text("actor")?,
        action: r.text("action")?,
        note: r.opt_text("note")?,
    })
}

/// Inserts one history entry; runs in the caller's transaction too.
pub(crate) async fn insert_history(exec: Exec<'_>, e: &AlertHistoryEntry) -> Result<()> {
    exec.execute(
        sql!(
            "INSERT INTO alert_history (alert_id, at, actor, action, note)
             VALUES ($1, $2, $3, $4, $5)"
        ),
        args![e.alert_id, e.at, &e.actor, &e.action, e.note.as_deref()],
    )
    .await?;
    Ok(())
}

impl Store {
    /// Records that `actor` did `action` to alert `alert_id` at `at`.
    pub async fn add_alert_history(&self, e: &AlertHistoryEntry) -> Result<()> {
        insert_history(self.exec(), e).await
    }

    /// What people did to alert `alert_id`, oldest first.
    pub async fn alert_history(&self, alert_id: i64) -> Result<Vec<AlertHistoryEntry>> {
        let rows = self
            .exec()
            .fetch_all(
                sql!(
                    "SELECT alert_id, at, actor, action, note FROM alert_history
                     WHERE alert_id = $1 ORDER BY id"
                ),
                args![alert_id],
            )
            .await?;
        rows.iter().map(history_entry).collect()
    }

    /// How many phone actions were recorded for `order_id` (tests, diagnostics).
    pub async fn client_actions_of_order(&self, order_id: i64) -> Result<Vec<ClientAction>> {
        let rows = self
            .exec()
            .fetch_all(
                sql!(
                    "SELECT client_id, order_id, actor, action, response, at FROM client_actions
                     WHERE order_id = $1 ORDER BY at, client_id"
                ),
                args![order_id],
            )
            .await?;
        rows.iter().map(client_action).collect()
    }
}

fn client_action(r: &Row) -> Result<ClientAction> {
    Ok(ClientAction {
        client_id: r.text("client_id")?,
        order_id: r.int("order_id")?,
        actor: r.text("actor")?,
        action: r.text("action")?,
        response: r.json("response")?,
        at: r.time("at")?,
    })
}

impl UnitOfWork {
    /// The phone action recorded under `client_id`, if any.
    pub async fn client_action(&mut self, client_id: &str) -> Result<Option<ClientAction>> {
        let row = self
            .exec()
            .fetch_optional(
                sql!(
                    "SELECT client_id, order_id, actor, action, response, at FROM client_actions
                     WHERE client_id = $1"
                ),
                args![client_id],
            )
            .await?;
        row.as_ref().map(client_action).transpose()
    }

    /// Records a phone action and the answer it got, in the transaction that applied it.
    pub async fn record_client_action(&mut self, a: &ClientAction) -> Result<()> {
        let response = Arg::json(Some(&a.response))?;
        self.exec()
            .execute(
                sql!(
                    "INSERT INTO client_actions (client_id, order_id, actor, action, response, at)
                     VALUES ($1, $2, $3, $4, $5, $6)"
                ),
                vec![
                    Arg::from(&a.client_id),
                    Arg::from(a.order_id),
                    Arg::from(&a.actor),
                    Arg::from(&a.action),
                    response,
                    Arg::from(a.at),
                ],
            )
            .await?;
        Ok(())
    }
}
