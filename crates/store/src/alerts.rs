//! The alerts aggregate: detectors' findings as alerts, their review status and what
//! the crews found.

use crate::db::{Arg, Exec, Row, args, sql};
use crate::{
    Result, Store, StoreError, is_unique_violation, parse_district_id, parse_meter_id, parse_text,
};
use leakwatch_core::{
    Alert, AlertKind, AlertOutcome, AlertStatus, DistrictId, Finding, MeterId, Timestamp,
};
use serde::Serialize;
use std::future::Future;

/// Filters for [`AlertStore::list_alerts`]. Every filter set must hold; results come
/// newest (highest id) first, and `cursor` asks for ids below it (pass the last id of a
/// page).
#[derive(Debug, Clone, Serialize)]
pub struct AlertQuery {
    pub status: Option<AlertStatus>,
    pub kind: Option<AlertKind>,
    /// Only alerts with `detected_at >= since`.
    pub since: Option<Timestamp>,
    pub meter_id: Option<MeterId>,
    pub limit: u32,
    pub cursor: Option<i64>,
}

impl Default for AlertQuery {
    fn default() -> Self {
        Self {
            status: None,
            kind: None,
            since: None,
            meter_id: None,
            limit: 100,
            cursor: None,
        }
    }
}

/// How the alerts of one kind turned out: raised, escalated, and what crews found on
/// site.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct OutcomeStat {
    pub kind: AlertKind,
    /// Alerts of this kind raised (any status).
    pub raised: i64,
    /// Alerts of this kind that have a work order.
    pub escalated: i64,
    /// Of those, the ones a crew's finding on site marked `confirmed_leak` (alerts
    /// folded into the open repair of a leak already found are not counted: nobody
    /// went out for them).
    pub confirmed: i64,
    /// Of those, the ones a crew's finding marked `false_positive`.
    pub false_positive: i64,
    /// Alerts folded into the open repair of a leak already known.
    pub known: i64,
    /// Escalated, no finding yet (and not folded into a known leak).
    pub pending: i64,
}

/// Alerts: one active alert per subject and kind, compare-and-set status changes.
pub trait AlertStore: Send + Sync {
    /// Records a detector's finding; returns the alert and whether it was newly created.
    ///
    /// There is at most one active alert (open, acknowledged or escalated) per
    /// (`f.subject().key()`, kind). If one exists it is updated: `count += 1`,
    /// `last_seen = max(last_seen, f.detected_at)`, evidence replaced, severity raised to
    /// the higher of the two. Otherwise a new `open` alert is stored with count 1 and
    /// `detected_at = last_seen = f.detected_at`. This is a single atomic upsert on the
    /// partial unique index, so concurrent calls cannot create two active alerts.
    fn record_finding(&self, f: &Finding) -> impl Future<Output = Result<(Alert, bool)>> + Send;

    /// One alert, if it exists.
    fn get_alert(&self, id: i64) -> impl Future<Output = Result<Option<Alert>>> + Send;

    /// Alerts matching `q`, highest id first.
    fn list_alerts(&self, q: &AlertQuery) -> impl Future<Output = Result<Vec<Alert>>> + Send;

    /// Compare-and-set of an alert's status: moves it from `from` to `to` only if it is
    /// `from` now ([`StoreError::Conflict`] `"alert N is <status>"` otherwise,
    /// [`StoreError::NotFound`] if there is no such alert). `reason` and
    /// `work_order_id`, when given, replace the stored ones; `None` leaves them as they
    /// are. Moving an alert back to an active status while another active alert exists
    /// for the same subject and kind is also a conflict.
    fn set_alert_status(
        &self,
        id: i64,
        from: AlertStatus,
        to: AlertStatus,
        reason: Option<&str>,
        work_order_id: Option<i64>,
    ) -> impl Future<Output = Result<Alert>> + Send;

    /// The number of alerts in each status, for every status in [`AlertStatus::ALL`]
    /// order (zero counts included).
    fn count_alerts_by_status(
        &self,
    ) -> impl Future<Output = Result<Vec<(AlertStatus, i64)>>> + Send;

    /// Records what the crew found for every alert whose `work_order_id` is `order_id`:
    /// `outcome` and `outcome_at = at`, replacing any outcome stored before. Returns the
    /// number of alerts changed (0 for an order without alerts, or no such order).
    fn set_outcome_for_order(
        &self,
        order_id: i64,
        outcome: AlertOutcome,
        at: Timestamp,
    ) -> impl Future<Output = Result<u64>> + Send;

    /// Per alert kind: how many were raised, how many have a work order
    /// (`work_order_id` set), and of those how many a crew's finding on site
    /// confirmed or found false, how many were folded into a known leak's repair, and
    /// how many wait for a finding. Sorted by the kind's text; kinds never raised are
    /// absent.
    fn outcome_stats(&self) -> impl Future<Output = Result<Vec<OutcomeStat>>> + Send;

    /// The alerts whose `work_order_id` is `order_id`, by id.
    fn alerts_of_order(&self, order_id: i64) -> impl Future<Output = Result<Vec<Alert>>> + Send;

    /// Resolves the open and acknowledged alerts whose condition was last seen before
    /// `seen_before` (event time): the detector has stopped reporting it. Escalated
    /// alerts are left to their work order. Returns the alerts resolved.
    fn resolve_quiet_alerts(
        &self,
        seen_before: Timestamp,
        reason: &str,
    ) -> impl Future<Output = Result<Vec<Alert>>> + Send;

    /// [`AlertStore::resolve_quiet_alerts`] for the alerts of one district, judged by
    /// that district's own event time.
    fn resolve_quiet_alerts_in(
        &self,
        district: &DistrictId,
        seen_before: Timestamp,
        reason: &str,
    ) -> impl Future<Output = Result<Vec<Alert>>> + Send;
}

/// The alerts part of a [`Store`] ([`Store::alert_store`]).
#[derive(Clone, Debug)]
pub struct Alerts(pub(crate) Store);

/// The columns of `alerts` that make an [`Alert`].
macro_rules! alert_cols {
    () => {
        "id, kind, severity, status, meter_id, district_id, detected_at, last_seen, count, \
         evidence, work_order_id, status_reason, outcome, created_at, \
         acknowledged_by, acknowledged_at, dismissed_by, dismissed_at, resolved_by, resolved_at"
    };
}

/// The higher of the stored and the incoming severity, in an alerts upsert.
macro_rules! severity_max {
    () => {
        "CASE WHEN (CASE excluded.severity WHEN 'critical' THEN 2 WHEN 'warning' THEN 1 ELSE 0 END) \
              > (CASE alerts.severity WHEN 'critical' THEN 2 WHEN 'warning' THEN 1 ELSE 0 END) \
         THEN excluded.severity ELSE alerts.severity END"
    };
}

fn alert_from_row(row: &Row) -> Result<Alert> {
    Ok(Alert {
        id: row.int("id")?,
        kind: parse_text(&row.text("kind")?, "alert kind")?,
        severity: parse_text(&row.text("severity")?, "severity")?,
        status: parse_text(&row.text("status")?, "alert status")?,
        meter_id: row.opt_text("meter_id")?.map(parse_meter_id).transpose()?,
        district_id: row
            .opt_text("district_id")?
            .map(parse_district_id)
            .transpose()?,
        detected_at: row.time("detected_at")?,
        last_seen: row.time("last_seen")?,
        count: row.int("count")?,
        evidence: row.json("evidence")?,
        work_order_id: row.opt_int("work_order_id")?,
        status_reason: row.opt_text("status_reason")?,
        outcome: row
            .opt_text("outcome")?
            .map(|o| parse_text(&o, "alert outcome"))
            .transpose()?,
        created_at: row.time("created_at")?,
        acknowledged_by: row.opt_text("acknowledged_by")?,
        acknowledged_at: row.opt_time("acknowledged_at")?,
        dismissed_by: row.opt_text("dismissed_by")?,
        dismissed_at: row.opt_time("dismissed_at")?,
        resolved_by: row.opt_text("resolved_by")?,
        resolved_at: row.opt_time("resolved_at")?,
    })
}

fn alerts_from_rows(rows: Vec<Row>) -> Result<Vec<Alert>> {
    rows.iter().map(alert_from_row).collect()
}

// ---- statements that also run inside a caller's transaction ----

/// One alert, if it exists.
pub(crate) async fn get_alert(exec: Exec<'_>, id: i64) -> Result<Option<Alert>> {
    let row = exec
        .fetch_optional(
            sql!("SELECT ", alert_cols!(), " FROM alerts WHERE id = $1"),
            args![id],
        )
        .await?;
    row.as_ref().map(alert_from_row).transpose()
}

/// See [`AlertStore::alerts_of_order`].
pub(crate) async fn alerts_of_order(exec: Exec<'_>, order_id: i64) -> Result<Vec<Alert>> {
    let rows = exec
        .fetch_all(
            sql!(
                "SELECT ",
                alert_cols!(),
                " FROM alerts WHERE work_order_id = $1 ORDER BY id"
            ),
            args![order_id],
        )
        .await?;
    alerts_from_rows(rows)
}

/// The alerts of `kinds` in `district` not yet dealt with (open or acknowledged), by id.
pub(crate) async fn pending_district_alerts(
    exec: Exec<'_>,
    district: &DistrictId,
    kinds: &[AlertKind],
) -> Result<Vec<Alert>> {
    let kinds: Vec<String> = kinds.iter().map(|k| k.as_str().to_owned()).collect();
    let rows = exec
        .fetch_all(
            sql!(
                "SELECT ",
                alert_cols!(),
                " FROM alerts WHERE district_id = $1 AND kind = ANY($2)
                   AND status IN ('open', 'acknowledged') ORDER BY id"
            ),
            args![district.as_str(), kinds],
        )
        .await?;
    alerts_from_rows(rows)
}

/// Alerts of `kind` on `meter` created since `since` whose crew found no leak, by id.
pub(crate) async fn false_positives(
    exec: Exec<'_>,
    kind: AlertKind,
    meter: &MeterId,
    since: Timestamp,
) -> Result<Vec<Alert>> {
    let rows = exec
        .fetch_all(
            sql!(
                "SELECT ",
                alert_cols!(),
                " FROM alerts WHERE kind = $1 AND meter_id = $2 AND outcome = 'false_positive'
                   AND created_at >= $3 ORDER BY id"
            ),
            args![kind.as_str(), meter.as_str(), since],
        )
        .await?;
    alerts_from_rows(rows)
}

/// Records who moved the alert to `status` (acknowledged, dismissed or resolved) and
/// when; other statuses record nothing. Runs in the caller's transaction.
pub(crate) async fn record_review(
    exec: Exec<'_>,
    id: i64,
    status: AlertStatus,
    actor: &str,
    at: Timestamp,
) -> Result<Option<Alert>> {
    if !matches!(
        status,
        AlertStatus::Acknowledged | AlertStatus::Dismissed | AlertStatus::Resolved
    ) {
        return Ok(None);
    }
    let row = exec
        .fetch_optional(
            sql!(
                "UPDATE alerts SET
                     acknowledged_by = CASE WHEN $2 = 'acknowledged' THEN $3::text ELSE acknowledged_by END,
                     acknowledged_at = CASE WHEN $2 = 'acknowledged' THEN $4::timestamptz ELSE acknowledged_at END,
                     dismissed_by = CASE WHEN $2 = 'dismissed' THEN $3::text ELSE dismissed_by END,
                     dismissed_at = CASE WHEN $2 = 'dismissed' THEN $4::timestamptz ELSE dismissed_at END,
                     resolved_by = CASE WHEN $2 = 'resolved' THEN $3::text ELSE resolved_by END,
                     resolved_at = CASE WHEN $2 = 'resolved' THEN $4::timestamptz ELSE resolved_at END
                 WHERE id = $1 RETURNING ",
                alert_cols!()
            ),
            args![id, status.as_str(), actor, at],
        )
        .await?;
    row.as_ref().map(alert_from_row).transpose()
}

/// See [`AlertStore::set_alert_status`].
pub(crate) async fn set_alert_status(
    mut exec: Exec<'_>,
    id: i64,
    from: AlertStatus,
    to: AlertStatus,
    reason: Option<&str>,
    work_order_id: Option<i64>,
) -> Result<Alert> {
    let updated = exec
        .reborrow()
        .try_fetch_optional(
            sql!(
                "UPDATE alerts SET status = $3,
                                   status_reason = COALESCE($4::text, status_reason),
                                   work_order_id = COALESCE($5::int8, work_order_id)
                 WHERE id = $1 AND status = $2 RETURNING ",
                alert_cols!()
            ),
            args![id, from.as_str(), to.as_str(), reason, work_order_id],
        )
        .await;
    match updated {
        Ok(Some(row)) => alert_from_row(&row),
        Ok(None) => {
            let status = exec
                .fetch_optional(sql!("SELECT status FROM alerts WHERE id = $1"), args![id])
                .await?;
            Err(match status {
                Some(row) => StoreError::Conflict(format!("alert {id} is {}", row.text("status")?)),
                None => StoreError::NotFound(format!("alert {id}")),
            })
        }
        Err(e) if is_unique_violation(&e) => Err(StoreError::Conflict(format!(
            "alert {id} cannot become {}: another active alert exists for its subject and kind",
            to.as_str()
        ))),
        Err(e) => Err(e.into()),
    }
}

/// See [`AlertStore::set_outcome_for_order`].
pub(crate) async fn set_outcome_for_order(
    exec: Exec<'_>,
    order_id: i64,
    outcome: AlertOutcome,
    at: Timestamp,
) -> Result<u64> {
    exec.execute(
        sql!("UPDATE alerts SET outcome = $2, outcome_at = $3 WHERE work_order_id = $1"),
        args![order_id, outcome.as_str(), at],
    )
    .await
}

/// See [`AlertStore::record_finding`]; runs in the caller's transaction too.
pub(crate) async fn upsert_finding(exec: Exec<'_>, f: &Finding) -> Result<(Alert, bool)> {
    let subject = f.subject().key();
    let row = exec
        .fetch_one(
            sql!(
                "INSERT INTO alerts (subject, kind, severity, status, meter_id, district_id,
                                     detected_at, last_seen, count, evidence, created_at)
                 VALUES ($1, $2, $3, 'open', $4, $5, $6, $6, 1, $7, $8)
                 ON CONFLICT (subject, kind)
                     WHERE status IN ('open', 'acknowledged', 'escalated')
                 DO UPDATE SET count = alerts.count + 1,
                               last_seen = GREATEST(alerts.last_seen, excluded.last_seen),
                               evidence = excluded.evidence,
                               severity = ",
                severity_max!(),
                " RETURNING ",
                alert_cols!()
            ),
            vec![
                Arg::from(subject.as_str()),
                Arg::from(f.kind.as_str()),
                Arg::from(f.severity.as_str()),
                Arg::from(f.meter_id.as_ref().map(|m| m.as_str())),
                Arg::from(f.district_id.as_ref().map(|d| d.as_str())),
                Arg::from(f.detected_at),
                Arg::json(Some(&f.evidence))?,
                Arg::from(chrono::Utc::now()),
            ],
        )
        .await?;
    let alert = alert_from_row(&row)?;
    let created = alert.count == 1;
    Ok((alert, created))
}

impl AlertStore for Alerts {
    async fn record_finding(&self, f: &Finding) -> Result<(Alert, bool)> {
        upsert_finding(self.0.exec(), f).await
    }

    async fn get_alert(&self, id: i64) -> Result<Option<Alert>> {
        get_alert(self.0.exec(), id).await
    }

    async fn list_alerts(&self, q: &AlertQuery) -> Result<Vec<Alert>> {
        let rows = self
            .0
            .exec()
            .fetch_all(
                sql!(
                    "SELECT ",
                    alert_cols!(),
                    " FROM alerts
                     WHERE ($1::text IS NULL OR status = $1)
                       AND ($2::text IS NULL OR kind = $2)
                       AND ($3::timestamptz IS NULL OR detected_at >= $3)
                       AND ($4::text IS NULL OR meter_id = $4)
                       AND ($5::int8 IS NULL OR id < $5)
                     ORDER BY id DESC LIMIT $6"
                ),
                args![
                    q.status.map(|s| s.as_str()),
                    q.kind.map(|k| k.as_str()),
                    q.since,
                    q.meter_id.as_ref().map(|m| m.as_str()),
                    q.cursor,
                    q.limit,
                ],
            )
            .await?;
        alerts_from_rows(rows)
    }

    async fn set_alert_status(
        &self,
        id: i64,
        from: AlertStatus,
        to: AlertStatus,
        reason: Option<&str>,
        work_order_id: Option<i64>,
    ) -> Result<Alert> {
        set_alert_status(self.0.exec(), id, from, to, reason, work_order_id).await
    }

    async fn count_alerts_by_status(&self) -> Result<Vec<(AlertStatus, i64)>> {
        let rows = self
            .0
            .exec()
            .fetch_all(
                sql!("SELECT status, count(*) AS n FROM alerts GROUP BY status"),
                args![],
            )
            .await?;
        let mut out: Vec<(AlertStatus, i64)> = AlertStatus::ALL.iter().map(|s| (*s, 0)).collect();
        for row in rows {
            let status: AlertStatus = parse_text(&row.text("status")?, "alert status")?;
            if let Some(slot) = out.iter_mut().find(|(s, _)| *s == status) {
                slot.1 = row.int("n")?;
            }
        }
        Ok(out)
    }

    async fn set_outcome_for_order(
        &self,
        order_id: i64,
        outcome: AlertOutcome,
        at: Timestamp,
    ) -> Result<u64> {
        set_outcome_for_order(self.0.exec(), order_id, outcome, at).await
    }

    async fn outcome_stats(&self) -> Result<Vec<OutcomeStat>> {
        let rows = self
            .0
            .exec()
            .fetch_all(
                sql!(
                    "SELECT kind, count(*) AS raised,
                            count(*) FILTER (WHERE work_order_id IS NOT NULL) AS escalated,
                            count(*) FILTER (WHERE work_order_id IS NOT NULL AND NOT known_leak
                                             AND outcome = 'confirmed_leak') AS confirmed,
                            count(*) FILTER (WHERE work_order_id IS NOT NULL AND NOT known_leak
                                             AND outcome = 'false_positive') AS false_positive,
                            count(*) FILTER (WHERE work_order_id IS NOT NULL AND known_leak) AS known,
                            count(*) FILTER (WHERE work_order_id IS NOT NULL AND NOT known_leak
                                             AND outcome IS NULL) AS pending
                     FROM alerts GROUP BY kind"
                ),
                args![],
            )
            .await?;
        let mut out = rows
            .iter()
            .map(|row| {
                Ok(OutcomeStat {
                    kind: parse_text(&row.text("kind")?, "alert kind")?,
                    raised: row.int("raised")?,
                    escalated: row.int("escalated")?,
                    confirmed: row.int("confirmed")?,
                    false_positive: row.int("false_positive")?,
                    known: row.int("known")?,
                    pending: row.int("pending")?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        out.sort_by(|a, b| a.kind.as_str().cmp(b.kind.as_str()));
        Ok(out)
    }

    async fn alerts_of_order(&self, order_id: i64) -> Result<Vec<Alert>> {
        alerts_of_order(self.0.exec(), order_id).await
    }

    async fn resolve_quiet_alerts(
        &self,
        seen_before: Timestamp,
        reason: &str,
    ) -> Result<Vec<Alert>> {
        let rows = self
            .0
            .exec()
            .fetch_all(
                sql!(
                    "UPDATE alerts SET status = 'resolved', status_reason = $2
                     WHERE status IN ('open', 'acknowledged') AND last_seen < $1
                     RETURNING ",
                    alert_cols!()
                ),
                args![seen_before, reason],
            )
            .await?;
        alerts_from_rows(rows)
    }

    async fn resolve_quiet_alerts_in(
        &self,
        district: &DistrictId,
        seen_before: Timestamp,
        reason: &str,
    ) -> Result<Vec<Alert>> {
        let rows = self
            .0
            .exec()
            .fetch_all(
                sql!(
                    "UPDATE alerts SET status = 'resolved', status_reason = $2
                     WHERE status IN ('open', 'acknowledged') AND last_seen < $1
                       AND district_id = $3
                     RETURNING ",
                    alert_cols!()
                ),
                args![seen_before, reason, district.as_str()],
            )
            .await?;
        alerts_from_rows(rows)
    }
}
