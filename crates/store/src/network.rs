//! The network aggregate (programmed leak survey, migration 0014): pipe segments
//! (`pipe_segments`), each segment's survey history (`segment_surveys`) and leak history
//! (`segment_leaks`). Dates are ISO `YYYY-MM-DD` text on both backends; a segment's
//! geometry is its GeoJSON coordinates (`[[lon, lat], ...]`) as JSON.
//!
//! Repeats are no-ops: segments are upserted by id, and a survey or leak carrying a
//! `source_key` already stored is not stored again (a re-import, a resent field report).
//! The statements are also run inside the dispatcher's unit of work
//! ([`crate::UnitOfWork`]) so that a crew's report and its effects commit together.

use crate::db::{Arg, Exec, Row, args, sql};
use crate::{Result, Store, StoreError, is_foreign_key_violation, parse_district_id};
use chrono::NaiveDate;
use leakwatch_core::{DistrictId, GeoPoint, Timestamp};
use leakwatch_survey::Segment;
use leakwatch_survey::geojson::Imported;
use serde::{Deserialize, Serialize};
use std::future::Future;

/// A survey of (part of) a segment as recorded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SurveyEntry {
    pub segment: String,
    pub date: NaiveDate,
    pub crew: Option<String>,
    /// What was used (`walking_fid`, `vehicle_analyser`, ...): free text.
    pub instrument: Option<String>,
    pub covered_m: f64,
    /// The survey work order it was done under.
    pub work_order_id: Option<i64>,
    /// Makes a repeat a no-op (`import:<segment>:<date>`, `wo:<order>:<segment>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_key: Option<String>,
}

impl SurveyEntry {
    /// What the program needs of it.
    pub fn record(&self) -> leakwatch_survey::SurveyRecord {
        leakwatch_survey::SurveyRecord {
            segment: self.segment.clone(),
            date: self.date,
            covered_m: self.covered_m,
        }
    }
}

/// A leak found on a segment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LeakEntry {
    pub segment: String,
    pub date: NaiveDate,
    /// The class found on site (`A1`, `B`, `2`...), if classified.
    pub class: Option<String>,
    /// `survey` (found by a survey crew), `import` (history), `report` (any other).
    pub source: String,
    /// The survey order that found it.
    pub work_order_id: Option<i64>,
    /// The repair order it became.
    pub repair_order_id: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_key: Option<String>,
}

/// What an import changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct ImportOutcome {
    pub segments: u64,
    pub new_segments: u64,
    pub surveys_added: u64,
}

/// The network: segments, surveys, leaks.
pub trait NetworkStore: Send + Sync {
    /// Stores the segments (new ones inserted, known ids updated) and the survey dates
    /// the file carried (once each), in one transaction.
    fn import_network(
        &self,
        items: &[Imported],
        now: Timestamp,
    ) -> impl Future<Output = Result<ImportOutcome>> + Send;

    /// Every segment, or a district's, by id.
    fn segments(
        &self,
        district: Option<&DistrictId>,
    ) -> impl Future<Output = Result<Vec<Segment>>> + Send;

    fn get_segment(&self, id: &str) -> impl Future<Output = Result<Option<Segment>>> + Send;

    /// Stores surveys; those whose `source_key` is already stored are skipped. Returns
    /// how many were stored. An unknown segment is [`StoreError::NotFound`].
    fn record_surveys(
        &self,
        surveys: &[SurveyEntry],
        now: Timestamp,
    ) -> impl Future<Output = Result<u64>> + Send;

    /// Survey history, of one segment or all, by date.
    fn surveys(
        &self,
        segment: Option<&str>,
    ) -> impl Future<Output = Result<Vec<SurveyEntry>>> + Send;

    /// Stores a leak; a repeat of a `source_key` returns the stored one's id and `false`.
    fn record_leak(
        &self,
        leak: &LeakEntry,
        now: Timestamp,
    ) -> impl Future<Output = Result<(i64, bool)>> + Send;

    /// Leak history, of one segment or all, by date, with ids.
    fn leaks(
        &self,
        segment: Option<&str>,
    ) -> impl Future<Output = Result<Vec<(i64, LeakEntry)>>> + Send;

    /// The segments a survey work order covers (replacing any), in walking order.
    fn set_order_segments(
        &self,
        order_id: i64,
        segments: &[String],
    ) -> impl Future<Output = Result<()>> + Send;

    /// The segments of a survey work order, in walking order (empty: not a survey).
    fn order_segments(&self, order_id: i64) -> impl Future<Output = Result<Vec<String>>> + Send;

    /// Metres a survey order's crew covers: its segments, in walking order, plus the
    /// way between them with the best direction for each
    /// (`leakwatch_survey::route::orient`); 0 for an order without segments.
    fn order_route_m(&self, order_id: i64) -> impl Future<Output = Result<f64>> + Send;
}

/// The network part of a [`Store`] ([`Store::network_store`]).
#[derive(Clone, Debug)]
pub struct Network(pub(crate) Store);

fn geometry_json(points: &[GeoPoint]) -> serde_json::Value {
    serde_json::Value::Array(
        points
            .iter()
            .map(|p| serde_json::json!([p.lon, p.lat]))
            .collect(),
    )
}

fn date_of(s: &str, what: &str) -> Result<NaiveDate> {
    NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .map_err(|_| StoreError::Corrupt(format!("stored {what} {s:?}")))
}

fn segment_from_row(r: &Row) -> Result<Segment> {
    let coords: Vec<(f64, f64)> = r.json("geometry")?;
    let material = r.text("material")?;
    Ok(Segment {
        id: r.text("id")?,
        district: parse_district_id(r.text("district_id")?)?,
        geometry: coords
            .into_iter()
            .map(|(lon, lat)| GeoPoint { lat, lon })
            .collect(),
        pressure_class: r.text("pressure_class")?,
        material: material
            .parse()
            .map_err(|e: String| StoreError::Corrupt(format!("stored {e}")))?,
        diameter_mm: u32::try_from(r.int("diameter_mm")?)
            .map_err(|_| StoreError::Corrupt("stored diameter".into()))?,
        year_laid: i32::try_from(r.int("year_laid")?)
            .map_err(|_| StoreError::Corrupt("stored year_laid".into()))?,
        added_on: date_of(&r.text("added_on")?, "added_on")?,
    })
}

/// Upserts one segment; `true` if it was new.
pub(crate) async fn upsert_segment(mut ex: Exec<'_>, s: &Segment, now: Timestamp) -> Result<bool> {
    let existed = ex
        .reborrow()
        .fetch_optional(
            sql!("SELECT id FROM pipe_segments WHERE id = $1"),
            args![&s.id],
        )
        .await?
        .is_some();
    let added_on = s.added_on.to_string();
    ex.execute(
        sql!(
            "INSERT INTO pipe_segments (id, district_id, geometry, length_m, pressure_class,
                 material, diameter_mm, year_laid, added_on, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
             ON CONFLICT (id) DO UPDATE SET district_id = excluded.district_id,
                 geometry = excluded.geometry, length_m = excluded.length_m,
                 pressure_class = excluded.pressure_class, material = excluded.material,
                 diameter_mm = excluded.diameter_mm, year_laid = excluded.year_laid,
                 added_on = excluded.added_on, updated_at = excluded.updated_at"
        ),
        vec![
            Arg::from(&s.id),
            Arg::from(s.district.as_str()),
            Arg::Json(Some(geometry_json(&s.geometry))),
            Arg::from(s.length_m()),
            Arg::from(&s.pressure_class),
            Arg::from(s.material.as_str()),
            Arg::from(s.diameter_mm),
            Arg::from(i64::from(s.year_laid)),
            Arg::from(&added_on),
            Arg::from(now),
        ],
    )
    .await?;
    Ok(!existed)
}

/// Inserts a survey unless its `source_key` is stored; `true` if stored.
pub(crate) async fn insert_survey(ex: Exec<'_>, s: &SurveyEntry, now: Timestamp) -> Result<bool> {
    if !s.covered_m.is_finite() || s.covered_m < 0.0 {
        return Err(StoreError::Conflict(format!(
            "covered length {} m of segment {} is not a length",
            s.covered_m, s.segment
        )));
    }
    let date = s.date.to_string();
    let r = ex
        .try_fetch_optional(
            sql!(
                "INSERT INTO segment_surveys (segment_id, surveyed_on, crew_id, instrument,
                     covered_m, work_order_id, source_key, recorded_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
                 ON CONFLICT (source_key) DO NOTHING RETURNING id"
            ),
            args![
                &s.segment,
                &date,
                &s.crew,
                &s.instrument,
                s.covered_m,
                s.work_order_id,
                &s.source_key,
                now
            ],
        )
        .await;
    match r {
        Ok(row) => Ok(row.is_some()),
        Err(e) if is_foreign_key_violation(&e) => {
            Err(StoreError::NotFound(format!("segment {}", s.segment)))
        }
        Err(e) => Err(e.into()),
    }
}

/// Inserts a leak unless its `source_key` is stored: (id, stored now).
pub(crate) async fn insert_leak(
    mut ex: Exec<'_>,
    l: &LeakEntry,
    now: Timestamp,
) -> Result<(i64, bool)> {
    let date = l.date.to_string();
    let r = ex
        .reborrow()
        .try_fetch_optional(
            sql!(
                "INSERT INTO segment_leaks (segment_id, found_on, leak_class, source,
                     work_order_id, repair_order_id, source_key, recorded_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
                 ON CONFLICT (source_key) DO NOTHING RETURNING id"
            ),
            args![
                &l.segment,
                &date,
                &l.class,
                &l.source,
                l.work_order_id,
                l.repair_order_id,
                &l.source_key,
                now
            ],
        )
        .await;
    match r {
        Ok(Some(row)) => Ok((row.int("id")?, true)),
        Ok(None) => {
            let row = ex
                .fetch_one(
                    sql!("SELECT id FROM segment_leaks WHERE source_key = $1"),
                    args![&l.source_key],
                )
                .await?;
            Ok((row.int("id")?, false))
        }
        Err(e) if is_foreign_key_violation(&e) => {
            Err(StoreError::NotFound(format!("segment {}", l.segment)))
        }
        Err(e) => Err(e.into()),
    }
}

fn survey_from_row(r: &Row) -> Result<SurveyEntry> {
    Ok(SurveyEntry {
        segment: r.text("segment_id")?,
        date: date_of(&r.text("surveyed_on")?, "surveyed_on")?,
        crew: r.opt_text("crew_id")?,
        instrument: r.opt_text("instrument")?,
        covered_m: r.float("covered_m")?,
        work_order_id: r.opt_int("work_order_id")?,
        source_key: r.opt_text("source_key")?,
    })
}

fn leak_from_row(r: &Row) -> Result<(i64, LeakEntry)> {
    Ok((
        r.int("id")?,
        LeakEntry {
            segment: r.text("segment_id")?,
            date: date_of(&r.text("found_on")?, "found_on")?,
            class: r.opt_text("leak_class")?,
            source: r.text("source")?,
            work_order_id: r.opt_int("work_order_id")?,
            repair_order_id: r.opt_int("repair_order_id")?,
            source_key: r.opt_text("source_key")?,
        },
    ))
}

impl NetworkStore for Network {
    async fn import_network(&self, items: &[Imported], now: Timestamp) -> Result<ImportOutcome> {
        let mut tx = self.0.begin().await?;
        let mut out = ImportOutcome::default();
        for it in items {
            out.segments += 1;
            if upsert_segment(tx.exec(), &it.segment, now).await? {
                out.new_segments += 1;
            }
            if let Some(d) = it.last_surveyed {
                let s = SurveyEntry {
                    segment: it.segment.id.clone(),
                    date: d,
                    crew: None,
                    instrument: None,
                    covered_m: it.segment.length_m(),
                    work_order_id: None,
                    source_key: Some(format!("import:{}:{d}", it.segment.id)),
                };
                if insert_survey(tx.exec(), &s, now).await? {
                    out.surveys_added += 1;
                }
            }
        }
        tx.commit().await?;
        Ok(out)
    }

    async fn segments(&self, district: Option<&DistrictId>) -> Result<Vec<Segment>> {
        let d = district.map(|d| d.as_str());
        let rows = self
            .0
            .exec()
            .fetch_all(
                sql!(
                    "SELECT id, district_id, geometry, pressure_class, material, diameter_mm,
                         year_laid, added_on
                     FROM pipe_segments WHERE ($1::text IS NULL OR district_id = $1)
                     ORDER BY id"
                ),
                args![d],
            )
            .await?;
        rows.iter().map(segment_from_row).collect()
    }

    async fn get_segment(&self, id: &str) -> Result<Option<Segment>> {
        self.0
            .exec()
            .fetch_optional(
                sql!(
                    "SELECT id, district_id, geometry, pressure_class, material, diameter_mm,
                         year_laid, added_on
                     FROM pipe_segments WHERE id = $1"
                ),
                args![id],
            )
            .await?
            .as_ref()
            .map(segment_from_row)
            .transpose()
    }

    async fn record_surveys(&self, surveys: &[SurveyEntry], now: Timestamp) -> Result<u64> {
        let mut tx = self.0.begin().await?;
        let mut n = 0;
        for s in surveys {
            n += u64::from(insert_survey(tx.exec(), s, now).await?);
        }
        tx.commit().await?;
        Ok(n)
    }

    async fn surveys(&self, segment: Option<&str>) -> Result<Vec<SurveyEntry>> {
        let rows = self
            .0
            .exec()
            .fetch_all(
                sql!(
                    "SELECT segment_id, surveyed_on, crew_id, instrument, covered_m,
                         work_order_id, source_key
                     FROM segment_surveys WHERE ($1::text IS NULL OR segment_id = $1)
                     ORDER BY surveyed_on, segment_id, id"
                ),
                args![segment],
            )
            .await?;
        rows.iter().map(survey_from_row).collect()
    }

    async fn record_leak(&self, leak: &LeakEntry, now: Timestamp) -> Result<(i64, bool)> {
        let mut tx = self.0.begin().await?;
        let r = insert_leak(tx.exec(), leak, now).await?;
        tx.commit().await?;
        Ok(r)
    }

    async fn leaks(&self, segment: Option<&str>) -> Result<Vec<(i64, LeakEntry)>> {
        let rows = self
            .0
            .exec()
            .fetch_all(
                sql!(
                    "SELECT id, segment_id, found_on, leak_class, source, work_order_id,
                         repair_order_id, source_key
                     FROM segment_leaks WHERE ($1::text IS NULL OR segment_id = $1)
                     ORDER BY found_on, id"
                ),
                args![segment],
            )
            .await?;
        rows.iter().map(leak_from_row).collect()
    }

    async fn set_order_segments(&self, order_id: i64, segments: &[String]) -> Result<()> {
        let mut tx = self.0.begin().await?;
        set_segments(&mut tx, order_id, segments).await?;
        tx.commit().await
    }

    async fn order_route_m(&self, order_id: i64) -> Result<f64> {
        let mut segs = Vec::new();
        for id in self.order_segments(order_id).await? {
            if let Some(s) = self.get_segment(&id).await? {
                segs.push(s);
            }
        }
        let refs: Vec<&Segment> = segs.iter().collect();
        let order: Vec<usize> = (0..refs.len()).collect();
        let (_, deadhead) = leakwatch_survey::route::orient(&refs, &order, None);
        Ok(refs.iter().map(|s| s.length_m()).sum::<f64>() + deadhead)
    }

    async fn order_segments(&self, order_id: i64) -> Result<Vec<String>> {
        let rows = self
            .0
            .exec()
            .fetch_all(
                sql!(
                    "SELECT segment_id FROM survey_order_segments WHERE work_order_id = $1
                     ORDER BY seq"
                ),
                args![order_id],
            )
            .await?;
        rows.iter().map(|r| r.text("segment_id")).collect()
    }
}

/// Replaces the segments of a survey order.
async fn set_segments(tx: &mut crate::db::Tx, order_id: i64, segments: &[String]) -> Result<()> {
    tx.exec()
        .execute(
            sql!("DELETE FROM survey_order_segments WHERE work_order_id = $1"),
            args![order_id],
        )
        .await?;
    for (i, seg) in segments.iter().enumerate() {
        let r = tx
            .exec()
            .try_fetch_optional(
                sql!(
                    "INSERT INTO survey_order_segments (work_order_id, seq, segment_id)
                     VALUES ($1, $2, $3) RETURNING seq"
                ),
                args![order_id, i as i64, seg],
            )
            .await;
        match r {
            Ok(_) => {}
            Err(e) if is_foreign_key_violation(&e) => {
                return Err(StoreError::NotFound(format!(
                    "work order {order_id} or segment {seg}"
                )));
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// The survey statements in the dispatcher's unit of work: a crew's survey report
/// (coverage, leaks, the repair orders and the alerts they confirm) commits as one.
impl crate::UnitOfWork {
    /// As [`NetworkStore::set_order_segments`], in this transaction.
    pub async fn set_survey_segments(&mut self, order_id: i64, segments: &[String]) -> Result<()> {
        set_segments(self.tx_mut(), order_id, segments).await
    }

    /// As [`NetworkStore::record_surveys`], in this transaction.
    pub async fn record_surveys(&mut self, surveys: &[SurveyEntry], now: Timestamp) -> Result<u64> {
        let mut n = 0;
        for s in surveys {
            n += u64::from(insert_survey(self.exec(), s, now).await?);
        }
        Ok(n)
    }

    /// As [`NetworkStore::record_leak`], in this transaction.
    pub async fn record_leak(&mut self, leak: &LeakEntry, now: Timestamp) -> Result<(i64, bool)> {
        insert_leak(self.exec(), leak, now).await
    }

    /// The leak stored with `source_key`, if any.
    pub async fn leak_by_key(&mut self, source_key: &str) -> Result<Option<(i64, LeakEntry)>> {
        self.exec()
            .fetch_optional(
                sql!(
                    "SELECT id, segment_id, found_on, leak_class, source, work_order_id,
                         repair_order_id, source_key
                     FROM segment_leaks WHERE source_key = $1"
                ),
                args![source_key],
            )
            .await?
            .as_ref()
            .map(leak_from_row)
            .transpose()
    }

    /// The alerts of `kinds` in `district` still open or acknowledged, by id.
    pub async fn pending_district_alerts(
        &mut self,
        district: &DistrictId,
        kinds: &[leakwatch_core::AlertKind],
    ) -> Result<Vec<leakwatch_core::Alert>> {
        crate::alerts::pending_district_alerts(self.exec(), district, kinds).await
    }
}
