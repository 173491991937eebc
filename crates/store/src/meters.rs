//! The meters aggregate: the registry of meters.

use crate::db::{Row, args, sql};
use crate::{
    Result, Store, last_by_key, parse_district_id, parse_meter_id, parse_text, pg, report_every_h,
    sqlite,
};
use leakwatch_core::{GeoPoint, Meter, MeterId};
use std::future::Future;

/// The registry of meters.
pub trait MeterStore: Send + Sync {
    /// Inserts or updates meters by id, in one transaction. If the same id appears
    /// twice, the last one wins. Returns the number of distinct meters written.
    fn upsert_meters(&self, meters: &[Meter]) -> impl Future<Output = Result<u64>> + Send;

    /// One meter, if known.
    fn get_meter(&self, id: &MeterId) -> impl Future<Output = Result<Option<Meter>>> + Send;

    /// Up to `limit` meters ordered by id, starting after `after` (keyset pagination:
    /// pass the last id of the previous page).
    fn list_meters(
        &self,
        after: Option<&MeterId>,
        limit: u32,
    ) -> impl Future<Output = Result<Vec<Meter>>> + Send;

    /// Every meter, ordered by id.
    fn all_meters(&self) -> impl Future<Output = Result<Vec<Meter>>> + Send;
}

/// The meters part of a [`Store`] ([`Store::meter_store`]).
#[derive(Clone, Debug)]
pub struct Meters(pub(crate) Store);

/// The columns of `meters` that make a [`Meter`].
macro_rules! meter_cols {
    () => {
        "id, district_id, kind, lat, lon, report_every_h, status, installed_at, max_flow_m3h"
    };
}
pub(crate) use meter_cols;

/// What an upsert of `meters` sets on a known id (`excluded` being the new row); the
/// same on both backends, which differ in how the rows come in.
macro_rules! meter_upsert {
    () => {
        "ON CONFLICT (id) DO UPDATE SET
             district_id = excluded.district_id, kind = excluded.kind, lat = excluded.lat,
             lon = excluded.lon, report_every_h = excluded.report_every_h,
             status = excluded.status, installed_at = excluded.installed_at,
             max_flow_m3h = excluded.max_flow_m3h, updated_at = excluded.updated_at"
    };
}
pub(crate) use meter_upsert;

pub(crate) fn meter_from_row(row: &Row) -> Result<Meter> {
    Ok(Meter {
        id: parse_meter_id(row.text("id")?)?,
        district: parse_district_id(row.text("district_id")?)?,
        kind: parse_text(&row.text("kind")?, "meter kind")?,
        location: GeoPoint {
            lat: row.float("lat")?,
            lon: row.float("lon")?,
        },
        report_every_h: report_every_h(row.int("report_every_h")?)?,
        status: parse_text(&row.text("status")?, "meter status")?,
        installed_at: row.opt_time("installed_at")?,
        max_flow_m3h: row.opt_float("max_flow_m3h")?,
    })
}

impl MeterStore for Meters {
    async fn upsert_meters(&self, meters: &[Meter]) -> Result<u64> {
        let meters = last_by_key(meters, |m| m.id.as_str());
        if meters.is_empty() {
            return Ok(0);
        }
        match &self.0 {
            Store::Postgres(p) => pg::upsert_meters(&p.pool, &meters).await,
            Store::Sqlite(p) => sqlite::upsert_meters(p, &meters).await,
        }
    }

    async fn get_meter(&self, id: &MeterId) -> Result<Option<Meter>> {
        let row = self
            .0
            .exec()
            .fetch_optional(
                sql!("SELECT ", meter_cols!(), " FROM meters WHERE id = $1"),
                args![id.as_str()],
            )
            .await?;
        row.as_ref().map(meter_from_row).transpose()
    }

    async fn list_meters(&self, after: Option<&MeterId>, limit: u32) -> Result<Vec<Meter>> {
        let rows = self
            .0
            .exec()
            .fetch_all(
                sql!(
                    "SELECT ",
                    meter_cols!(),
                    " FROM meters WHERE ($1::text IS NULL OR id > $1) ORDER BY id LIMIT $2"
                ),
                args![after.map(|m| m.as_str()), limit],
            )
            .await?;
        rows.iter().map(meter_from_row).collect()
    }

    async fn all_meters(&self) -> Result<Vec<Meter>> {
        let rows = self
            .0
            .exec()
            .fetch_all(
                sql!("SELECT ", meter_cols!(), " FROM meters ORDER BY id"),
                args![],
            )
            .await?;
        rows.iter().map(meter_from_row).collect()
    }
}
