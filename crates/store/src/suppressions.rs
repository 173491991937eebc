//! Suppressions (migration 0015, issue 12 "dismissals that stick"): made with a
//! dismissal in the reviewer's transaction ([`UnitOfWork::add_suppression`]), listed
//! and revoked from the console and the API, and consulted when a finding would open
//! a new alert ([`Store::record_finding_judged`]: the verdict is the caller's pure
//! function, its effects one transaction).

use crate::db::{Arg, Exec, Row, args, sql};
use crate::{
    Result, Store, StoreError, UnitOfWork, alerts, parse_district_id, parse_meter_id, parse_text,
};
use leakwatch_core::{
    Alert, Finding, MeterId, NewSuppression, Suppression, SuppressionScope, Timestamp, Verdict,
};

/// What became of a finding ([`Store::record_finding_judged`]).
#[derive(Debug, Clone, PartialEq)]
pub struct FindingRecorded {
    /// The alert it opened or repeated; `None` when a suppression kept it quiet.
    pub alert: Option<Alert>,
    /// A new alert was opened.
    pub created: bool,
    /// The verdict on it when it would have opened a new alert under a suppression
    /// (`Raise` otherwise).
    pub verdict: Verdict,
}

/// The columns of `suppressions` that make a [`Suppression`].
macro_rules! cols {
    () => {
        "id, kind, scope, scope_id, alert_id, reason, created_by, created_at, until, \
         observed, unit, margin, suppressed, last_suppressed_at, ended_at, ended_by, \
         end_reason, broken_by_alert"
    };
}

fn from_row(r: &Row) -> Result<Suppression> {
    let scope_id = r.text("scope_id")?;
    let scope = match r.text("scope")?.as_str() {
        "meter" => SuppressionScope::Meter(parse_meter_id(scope_id)?),
        "district" => SuppressionScope::District(parse_district_id(scope_id)?),
        other => {
            return Err(StoreError::Corrupt(format!(
                "stored suppression scope {other:?}"
            )));
        }
    };
    Ok(Suppression {
        id: r.int("id")?,
        kind: parse_text(&r.text("kind")?, "alert kind")?,
        scope,
        alert_id: r.int("alert_id")?,
        reason: r.text("reason")?,
        created_by: r.text("created_by")?,
        created_at: r.time("created_at")?,
        until: r.opt_time("until")?,
        observed: r.float("observed")?,
        unit: r.text("unit")?,
        margin: r.float("margin")?,
        suppressed: r.int("suppressed")?,
        last_suppressed_at: r.opt_time("last_suppressed_at")?,
        ended_at: r.opt_time("ended_at")?,
        ended_by: r.opt_text("ended_by")?,
        end_reason: r.opt_text("end_reason")?,
        broken_by_alert: r.opt_int("broken_by_alert")?,
    })
}

fn from_rows(rows: Vec<Row>) -> Result<Vec<Suppression>> {
    rows.iter().map(from_row).collect()
}

/// The suppressions not ended that may cover `f` (its kind, on its meter or its
/// district), by id.
async fn covering(exec: Exec<'_>, f: &Finding) -> Result<Vec<Suppression>> {
    let rows = exec
        .fetch_all(
            sql!(
                "SELECT ",
                cols!(),
                " FROM suppressions
                 WHERE ended_at IS NULL AND kind = $1
                   AND ((scope = 'meter' AND scope_id = $2)
                        OR (scope = 'district' AND scope_id = $3))
                 ORDER BY id"
            ),
            args![
                f.kind.as_str(),
                f.meter_id.as_ref().map(|m| m.as_str()),
                f.district_id.as_ref().map(|d| d.as_str()),
            ],
        )
        .await?;
    from_rows(rows)
}

/// Whether an active alert (open, acknowledged, escalated) exists for `f`'s subject
/// and kind: then `f` repeats it, whatever the suppressions.
async fn has_active_alert(exec: Exec<'_>, f: &Finding) -> Result<bool> {
    let key = f.subject().key();
    let row = exec
        .fetch_optional(
            sql!(
                "SELECT id FROM alerts WHERE subject = $1 AND kind = $2
                   AND status IN ('open', 'acknowledged', 'escalated')"
            ),
            args![key.as_str(), f.kind.as_str()],
        )
        .await?;
    Ok(row.is_some())
}

impl Store {
    /// Records a finding as [`crate::AlertStore::record_finding`] does, unless it would
    /// open a new alert while suppressions cover it: then `judge` (pure) decides on
    /// the suppressions that cover it, and its verdict is applied in one transaction
    /// (the finding counted on the suppression; or the alert raised, the suppression
    /// ended and the alert's history saying why).
    ///
    /// Without any suppression covering the finding this is the plain atomic upsert.
    pub async fn record_finding_judged(
        &self,
        f: &Finding,
        judge: impl FnOnce(&[Suppression]) -> Verdict,
    ) -> Result<FindingRecorded> {
        if covering(self.exec(), f).await?.is_empty() {
            let (alert, created) = alerts::upsert_finding(self.exec(), f).await?;
            return Ok(FindingRecorded {
                alert: Some(alert),
                created,
                verdict: Verdict::Raise,
            });
        }
        let mut tx = self.begin().await?;
        if has_active_alert(tx.exec(), f).await? {
            let (alert, created) = alerts::upsert_finding(tx.exec(), f).await?;
            tx.commit().await?;
            return Ok(FindingRecorded {
                alert: Some(alert),
                created,
                verdict: Verdict::Raise,
            });
        }
        let active = covering(tx.exec(), f).await?;
        let verdict = judge(&active);
        let now = chrono::Utc::now();
        let out = match &verdict {
            Verdict::Raise => {
                let (alert, created) = alerts::upsert_finding(tx.exec(), f).await?;
                FindingRecorded {
                    alert: Some(alert),
                    created,
                    verdict: verdict.clone(),
                }
            }
            Verdict::Suppressed { id } => {
                tx.exec()
                    .execute(
                        sql!(
                            "UPDATE suppressions SET suppressed = suppressed + 1,
                                 last_suppressed_at = GREATEST(COALESCE(last_suppressed_at, $2), $2)
                             WHERE id = $1"
                        ),
                        args![*id, f.detected_at],
                    )
                    .await?;
                FindingRecorded {
                    alert: None,
                    created: false,
                    verdict: verdict.clone(),
                }
            }
            Verdict::BreaksThrough { id, reason } => {
                let (alert, created) = alerts::upsert_finding(tx.exec(), f).await?;
                tx.exec()
                    .execute(
                        sql!(
                            "UPDATE suppressions SET ended_at = $2, ended_by = 'detector',
                                 end_reason = $3, broken_by_alert = $4
                             WHERE id = $1 AND ended_at IS NULL"
                        ),
                        args![*id, now, reason.as_str(), alert.id],
                    )
                    .await?;
                crate::console::insert_history(
                    tx.exec(),
                    &crate::AlertHistoryEntry {
                        alert_id: alert.id,
                        at: now,
                        actor: "detector".into(),
                        action: "suppression_broken".into(),
                        note: Some(format!("suppression #{id} ended: {reason}")),
                    },
                )
                .await?;
                FindingRecorded {
                    alert: Some(alert),
                    created,
                    verdict: verdict.clone(),
                }
            }
        };
        tx.commit().await?;
        Ok(out)
    }

    /// Suppressions, newest first: the active ones only, or all (at most `limit`).
    pub async fn list_suppressions(
        &self,
        active_only: bool,
        limit: u32,
    ) -> Result<Vec<Suppression>> {
        let rows = self
            .exec()
            .fetch_all(
                sql!(
                    "SELECT ",
                    cols!(),
                    " FROM suppressions WHERE (NOT $1 OR ended_at IS NULL)
                     ORDER BY id DESC LIMIT $2"
                ),
                args![active_only, limit],
            )
            .await?;
        from_rows(rows)
    }

    /// The suppressions made on `meter` (meter scope), newest first.
    pub async fn suppressions_of_meter(&self, meter: &MeterId) -> Result<Vec<Suppression>> {
        let rows = self
            .exec()
            .fetch_all(
                sql!(
                    "SELECT ",
                    cols!(),
                    " FROM suppressions WHERE scope = 'meter' AND scope_id = $1
                     ORDER BY id DESC LIMIT 50"
                ),
                args![meter.as_str()],
            )
            .await?;
        from_rows(rows)
    }

    /// One suppression.
    pub async fn get_suppression(&self, id: i64) -> Result<Option<Suppression>> {
        let row = self
            .exec()
            .fetch_optional(
                sql!("SELECT ", cols!(), " FROM suppressions WHERE id = $1"),
                args![id],
            )
            .await?;
        row.as_ref().map(from_row).transpose()
    }

    /// Ends suppression `id` by hand: [`StoreError::NotFound`] without it,
    /// [`StoreError::Conflict`] when it has ended already.
    pub async fn revoke_suppression(
        &self,
        id: i64,
        actor: &str,
        at: Timestamp,
    ) -> Result<Suppression> {
        let row = self
            .exec()
            .fetch_optional(
                sql!(
                    "UPDATE suppressions SET ended_at = $2, ended_by = $3, end_reason = 'revoked'
                     WHERE id = $1 AND ended_at IS NULL RETURNING ",
                    cols!()
                ),
                args![id, at, actor],
            )
            .await?;
        match row {
            Some(r) => from_row(&r),
            None => match self.get_suppression(id).await? {
                Some(s) => Err(StoreError::Conflict(format!(
                    "suppression {id} has ended already ({})",
                    s.end_reason.unwrap_or_default()
                ))),
                None => Err(StoreError::NotFound(format!("suppression {id}"))),
            },
        }
    }
}

impl UnitOfWork {
    /// Stores a suppression made by `actor` with a dismissal, in the dismissal's
    /// transaction.
    pub async fn add_suppression(
        &mut self,
        s: &NewSuppression,
        actor: &str,
        at: Timestamp,
    ) -> Result<Suppression> {
        let row = self
            .exec()
            .fetch_one(
                sql!(
                    "INSERT INTO suppressions (kind, scope, scope_id, alert_id, reason, created_by,
                         created_at, until, observed, unit, margin)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) RETURNING ",
                    cols!()
                ),
                vec![
                    Arg::from(s.kind.as_str()),
                    Arg::from(s.scope.as_str()),
                    Arg::from(s.scope.id()),
                    Arg::from(s.alert_id),
                    Arg::from(s.reason.as_str()),
                    Arg::from(actor),
                    Arg::from(at),
                    Arg::from(s.until),
                    Arg::from(if s.observed.is_finite() {
                        s.observed
                    } else {
                        0.0
                    }),
                    Arg::from(s.unit.as_str()),
                    Arg::from(s.margin),
                ],
            )
            .await?;
        from_row(&row)
    }

    /// Records what someone did to an alert, in the transaction that did it.
    pub async fn add_alert_history(&mut self, e: &crate::AlertHistoryEntry) -> Result<()> {
        crate::console::insert_history(self.exec(), e).await
    }

    /// Marks alert `id` as folded into the open repair of a leak already found: its
    /// outcome is `confirmed_leak` (the leak is real) but it is not a finding made on
    /// site, and the detector's quality does not count it as confirmed.
    pub async fn mark_known_leak(&mut self, id: i64, at: Timestamp) -> Result<()> {
        self.exec()
            .execute(
                sql!(
                    "UPDATE alerts SET known_leak = true, outcome = 'confirmed_leak',
                         outcome_at = $2 WHERE id = $1"
                ),
                args![id, at],
            )
            .await?;
        Ok(())
    }
}
