//! Programmed leak survey over HTTP (issue 16): the network's segments, the program
//! (what to survey when, and why), coverage per pressure class against the
//! obligation (JSON for the console, CSV for the regulator's report), and leaks found
//! per km by class and material.
//!
//! - `GET /api/v1/network/segments?district=`: segments with their last survey and
//!   deadline;
//! - `GET /api/v1/survey/program?from=YYYY-MM-DD&days=N`: the planned visits, risk
//!   first (open network-leak alerts raise their district's segments);
//! - `GET /api/v1/survey/coverage?on=YYYY-MM-DD` and `GET /api/v1/survey/coverage.csv`;
//! - `GET /api/v1/survey/leak-rates?from=&to=`.

use crate::extract::Params;
use crate::{ApiError, AppState};
use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use chrono::{Datelike, NaiveDate};
use leakwatch_core::{AlertStatus, DistrictId};
use leakwatch_store::{AlertQuery, NetworkStore, Store, SurveyEntry};
use leakwatch_survey::risk::{NETWORK_KINDS, priority, score};
use leakwatch_survey::{
    DistrictSignal, LeakRecord, Policy, Program, Segment, SurveyConfig, SurveyRecord, report,
    working_days,
};
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::HashMap;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/network/segments", get(segments))
        .route("/api/v1/survey/program", get(program))
        .route("/api/v1/survey/coverage", get(coverage))
        .route("/api/v1/survey/coverage.csv", get(coverage_csv))
        .route("/api/v1/survey/leak-rates", get(leak_rates))
}

/// Everything the survey's answers are computed from.
pub struct Snapshot {
    pub segments: Vec<Segment>,
    pub surveys: Vec<SurveyEntry>,
    pub leaks: Vec<LeakRecord>,
    pub signals: Vec<DistrictSignal>,
}

impl Snapshot {
    pub async fn load(store: &Store) -> Result<Snapshot, ApiError> {
        let net = store.network_store();
        let segments = net.segments(None).await?;
        let surveys = net.surveys(None).await?;
        let leaks = net
            .leaks(None)
            .await?
            .into_iter()
            .map(|(_, l)| LeakRecord {
                segment: l.segment,
                date: l.date,
            })
            .collect();
        // Network-leak alerts not yet dealt with: open or acknowledged.
        let mut signals = Vec::new();
        for status in [AlertStatus::Open, AlertStatus::Acknowledged] {
            for kind in NETWORK_KINDS {
                let alerts = store
                    .list_alerts(&AlertQuery {
                        status: Some(status),
                        kind: Some(kind),
                        limit: 1000,
                        ..AlertQuery::default()
                    })
                    .await?;
                signals.extend(alerts.into_iter().filter_map(|a| {
                    a.district_id.map(|d| DistrictSignal {
                        district: d,
                        kind: a.kind,
                        severity: a.severity,
                    })
                }));
            }
        }
        Ok(Snapshot {
            segments,
            surveys,
            leaks,
            signals,
        })
    }

    pub fn records(&self) -> Vec<SurveyRecord> {
        self.surveys.iter().map(SurveyEntry::record).collect()
    }

    /// Each segment's priority on `today` (see `leakwatch_survey::risk::priority`).
    pub fn priorities(&self, cfg: &SurveyConfig, today: NaiveDate) -> HashMap<String, f64> {
        let risk = score(&self.segments, &self.signals, &self.leaks, &cfg.risk, today);
        let mut last: HashMap<&str, NaiveDate> = HashMap::new();
        for s in &self.surveys {
            let e = last.entry(s.segment.as_str()).or_insert(s.date);
            *e = (*e).max(s.date);
        }
        self.segments
            .iter()
            .map(|s| {
                let since = last.get(s.id.as_str()).copied().unwrap_or(s.added_on);
                let r = risk.get(&s.id).copied().unwrap_or_default();
                (s.id.clone(), priority(&r, (today - since).num_days()))
            })
            .collect()
    }

    /// The risk-based program over the survey history.
    pub fn program(&self, cfg: &SurveyConfig) -> Result<Program, ApiError> {
        let table = cfg.table().map_err(ApiError::bad_request)?;
        let mut p = Program::new(&self.segments, &self.records(), &table, Policy::Risk);
        p.revisit_above = cfg.risk.district_alert;
        Ok(p)
    }
}

fn today() -> NaiveDate {
    chrono::Utc::now().date_naive()
}

fn date_param(v: &Option<String>, name: &str) -> Result<Option<NaiveDate>, ApiError> {
    v.as_deref()
        .map(|s| {
            NaiveDate::parse_from_str(s, "%Y-%m-%d")
                .map_err(|_| ApiError::bad_request(format!("{name}: {s:?} is not a date (YYYY-MM-DD)")))
        })
        .transpose()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SegmentList {
    district: Option<String>,
}

async fn segments(
    State(s): State<AppState>,
    Params(q): Params<SegmentList>,
) -> Result<Json<Value>, ApiError> {
    let district = q
        .district
        .map(DistrictId::parse)
        .transpose()
        .map_err(|e| ApiError::bad_request(format!("district: {e}")))?;
    let snap = Snapshot::load(&s.store).await?;
    let program = snap.program(&s.survey)?;
    let deadlines: HashMap<&str, Option<NaiveDate>> = program.deadlines().collect();
    let items: Vec<Value> = snap
        .segments
        .iter()
        .filter(|seg| district.as_ref().is_none_or(|d| &seg.district == d))
        .map(|seg| {
            json!({
                "id": seg.id,
                "district_id": seg.district,
                "pressure_class": seg.pressure_class,
                "material": seg.material,
                "diameter_mm": seg.diameter_mm,
                "year_laid": seg.year_laid,
                "length_m": seg.length_m(),
                "last_surveyed": program.since(&seg.id).filter(|d| *d != seg.added_on),
                "due": deadlines.get(seg.id.as_str()).copied().flatten(),
                "geometry": {"type": "LineString",
                             "coordinates": seg.geometry.iter().map(|p| [p.lon, p.lat]).collect::<Vec<_>>()},
            })
        })
        .collect();
    Ok(Json(json!({ "items": items })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ProgramQuery {
    from: Option<String>,
    days: Option<u32>,
}

async fn program(
    State(s): State<AppState>,
    Params(q): Params<ProgramQuery>,
) -> Result<Json<Value>, ApiError> {
    let from = date_param(&q.from, "from")?.unwrap_or_else(today);
    let n = q.days.unwrap_or(7).clamp(1, 400);
    let snap = Snapshot::load(&s.store).await?;
    let prio = snap.priorities(&s.survey, from);
    let program = snap.program(&s.survey)?;
    let days = working_days(from, from + chrono::Days::new(u64::from(n) - 1));
    let visits = program.plan(&days, s.survey.capacity_m_per_day, &prio);
    Ok(Json(json!({
        "from": from,
        "days": n,
        "capacity_m_per_day": s.survey.capacity_m_per_day,
        "visits": visits,
    })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CoverageQuery {
    on: Option<String>,
}

async fn coverage_rows(
    s: &AppState,
    q: &CoverageQuery,
) -> Result<Vec<report::ClassCoverage>, ApiError> {
    let on = date_param(&q.on, "on")?.unwrap_or_else(today);
    let snap = Snapshot::load(&s.store).await?;
    let table = s.survey.table().map_err(ApiError::bad_request)?;
    let prio = snap.priorities(&s.survey, on);
    Ok(report::coverage(
        &snap.segments,
        &snap.records(),
        &table,
        on,
        s.survey.capacity_m_per_day,
        &prio,
    ))
}

async fn coverage(
    State(s): State<AppState>,
    Params(q): Params<CoverageQuery>,
) -> Result<Json<Value>, ApiError> {
    let rows = coverage_rows(&s, &q).await?;
    let table = s.survey.table().map_err(ApiError::bad_request)?;
    Ok(Json(json!({ "preset": table.preset, "classes": rows })))
}

async fn coverage_csv(
    State(s): State<AppState>,
    Params(q): Params<CoverageQuery>,
) -> Result<impl IntoResponse, ApiError> {
    let rows = coverage_rows(&s, &q).await?;
    Ok((
        [(header::CONTENT_TYPE, "text/csv; charset=utf-8")],
        report::coverage_csv(&rows),
    ))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RateQuery {
    from: Option<String>,
    to: Option<String>,
}

async fn leak_rates(
    State(s): State<AppState>,
    Params(q): Params<RateQuery>,
) -> Result<Json<Value>, ApiError> {
    let to = date_param(&q.to, "to")?.unwrap_or_else(today);
    let from = date_param(&q.from, "from")?
        .unwrap_or_else(|| NaiveDate::from_ymd_opt(to.year(), 1, 1).unwrap_or(to));
    let snap = Snapshot::load(&s.store).await?;
    let rows = report::leak_rates(&snap.segments, &snap.records(), &snap.leaks, from, to);
    Ok(Json(json!({ "from": from, "to": to, "rates": rows })))
}
