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
//! - `GET /api/v1/survey/leak-rates?from=&to=`;
//! - `POST /api/v1/survey/orders` (`{"date"}`): plans the day's program into survey
//!   work orders (kind `leak_survey`, one district and at most
//!   `survey.order_max_m` each, the segments in walking order and direction from
//!   `leakwatch_survey::route`);
//!   `GET /api/v1/survey/orders/{id}`: an order's segments;
//! - `POST /api/v1/survey/orders/{id}/report`: the crew's coverage (segments, metres,
//!   instrument, day) and findings (a leak on a segment with its class): each leak
//!   becomes a repair order due by its class's deadline, and confirms the open
//!   network-leak alerts of its district (they are escalated to the repair order and
//!   their outcome is `confirmed_leak`, which counts in the detector's precision).

use crate::extract::Params;
use crate::{ApiError, AppState};
use axum::Json;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use chrono::{Datelike, NaiveDate};
use leakwatch_core::{AlertStatus, DistrictId};
use leakwatch_store::{AlertQuery, NetworkStore, Store, SurveyEntry};
use leakwatch_survey::risk::{NETWORK_KINDS, priority, score};
use leakwatch_survey::{
    DistrictSignal, LeakRecord, Policy, Program, Segment, SurveyConfig, SurveyRecord, report,
};
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::HashMap;

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

    /// The risk-based program over the survey history, on `today`: keeping pace
    /// with the calendar order from the start of `today`'s year when
    /// `survey.pace_lag_days` is set (the calendar order is replayed from the
    /// network's state on 1 January, and this year's surveys are counted against it).
    pub fn program(&self, cfg: &SurveyConfig, today: NaiveDate) -> Result<Program, ApiError> {
        let table = cfg.table().map_err(ApiError::bad_request)?;
        let records = self.records();
        let mut p = Program::new(&self.segments, &records, &table, Policy::Risk);
        p.revisit_above = cfg.risk.district_alert;
        if let Some(lag) = cfg.pace_lag_days {
            let anchor = NaiveDate::from_ymd_opt(today.year(), 1, 1).unwrap_or(today);
            let before: Vec<SurveyRecord> = records
                .iter()
                .filter(|r| r.date < anchor)
                .cloned()
                .collect();
            let mut shadow = Program::new(&self.segments, &before, &table, Policy::Calendar);
            shadow.min_revisit_days = p.min_revisit_days;
            p.keep_pace(shadow, lag as usize);
            let year_end = NaiveDate::from_ymd_opt(today.year(), 12, 31).unwrap_or(today);
            let days = leakwatch_survey::working_days(anchor, year_end);
            for k in 0..days.iter().take_while(|d| **d < today).count() {
                p.pace_past_day(&days[k..], cfg.capacity_m_per_day);
            }
            let lengths: HashMap<&str, f64> = self
                .segments
                .iter()
                .map(|s| (s.id.as_str(), s.length_m()))
                .collect();
            for r in records
                .iter()
                .filter(|r| r.date >= anchor && r.date < today)
            {
                if lengths
                    .get(r.segment.as_str())
                    .is_some_and(|l| r.covered_m >= l * leakwatch_survey::network::FULL_COVERAGE)
                {
                    p.count_visit(&r.segment);
                }
            }
        }
        Ok(p)
    }
}

fn today() -> NaiveDate {
    chrono::Utc::now().date_naive()
}

fn date_param(v: &Option<String>, name: &str) -> Result<Option<NaiveDate>, ApiError> {
    v.as_deref()
        .map(|s| {
            NaiveDate::parse_from_str(s, "%Y-%m-%d").map_err(|_| {
                ApiError::bad_request(format!("{name}: {s:?} is not a date (YYYY-MM-DD)"))
            })
        })
        .transpose()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SegmentList {
    district: Option<String>,
}

pub(crate) async fn segments(
    State(s): State<AppState>,
    Params(q): Params<SegmentList>,
) -> Result<Json<Value>, ApiError> {
    let district = q
        .district
        .map(DistrictId::parse)
        .transpose()
        .map_err(|e| ApiError::bad_request(format!("district: {e}")))?;
    let snap = Snapshot::load(&s.store).await?;
    let program = snap.program(&s.survey, today())?;
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
pub(crate) struct ProgramQuery {
    from: Option<String>,
    days: Option<u32>,
}

pub(crate) async fn program(
    State(s): State<AppState>,
    Params(q): Params<ProgramQuery>,
) -> Result<Json<Value>, ApiError> {
    let from = date_param(&q.from, "from")?.unwrap_or_else(today);
    let n = q.days.unwrap_or(7).clamp(1, 400);
    let snap = Snapshot::load(&s.store).await?;
    let prio = snap.priorities(&s.survey, from);
    let program = snap.program(&s.survey, from)?;
    let to = from + chrono::Days::new(u64::from(n) - 1);
    let visits = program.plan_window(from, to, s.survey.capacity_m_per_day, &prio);
    Ok(Json(json!({
        "from": from,
        "days": n,
        "capacity_m_per_day": s.survey.capacity_m_per_day,
        "visits": visits,
    })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CoverageQuery {
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

pub(crate) async fn coverage(
    State(s): State<AppState>,
    Params(q): Params<CoverageQuery>,
) -> Result<Json<Value>, ApiError> {
    let rows = coverage_rows(&s, &q).await?;
    let table = s.survey.table().map_err(ApiError::bad_request)?;
    Ok(Json(json!({ "preset": table.preset, "classes": rows })))
}

pub(crate) async fn coverage_csv(
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
pub(crate) struct RateQuery {
    from: Option<String>,
    to: Option<String>,
}

pub(crate) async fn leak_rates(
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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PlanOrders {
    date: Option<String>,
}

pub(crate) async fn plan_orders(
    State(s): State<AppState>,
    principal: Option<axum::Extension<crate::auth::Principal>>,
    crate::extract::Body(q): crate::extract::Body<PlanOrders>,
) -> Result<Json<Value>, ApiError> {
    let date = date_param(&q.date, "date")?.unwrap_or_else(today);
    let snap = Snapshot::load(&s.store).await?;
    let prio = snap.priorities(&s.survey, date);
    let program = snap.program(&s.survey, date)?;
    let visits = program.plan_window(date, date, s.survey.capacity_m_per_day, &prio);
    let segs: HashMap<&str, &Segment> = snap.segments.iter().map(|x| (x.id.as_str(), x)).collect();
    let actor = principal
        .map(|p| p.0.name.clone())
        .unwrap_or_else(|| "api".into());
    let end_of_day = date
        .and_hms_opt(23, 59, 59)
        .map(|t| t.and_utc())
        .ok_or_else(|| ApiError::bad_request("date out of range"))?;
    let mut orders = Vec::new();
    for plan in leakwatch_survey::route::cut_orders(&visits, &segs, s.survey.order_max_m) {
        let ids: Vec<String> = plan.route.legs.iter().map(|l| l.segment.clone()).collect();
        let Some(first_leg) = plan.route.legs.first() else {
            continue;
        };
        let first = segs[first_leg.segment.as_str()];
        let start = if first_leg.reversed {
            *first.geometry.last().unwrap_or(&first.geometry[0])
        } else {
            first.geometry[0]
        };
        let district = plan.district.clone();
        let why: Vec<Value> = visits
            .iter()
            .filter(|v| ids.contains(&v.segment))
            .map(|v| json!(v))
            .collect();
        let order = s
            .dispatcher
            .create_survey(&leakwatch_store::NewWorkOrder {
                kind: leakwatch_core::WorkOrderKind::LeakSurvey,
                priority: leakwatch_core::Priority::Normal,
                alert_id: None,
                meter_id: None,
                district_id: Some(district.clone()),
                location: start,
                summary: format!(
                    "leak survey {date}: {} segments, {:.0} m in {district} ({:.0} m between them)",
                    ids.len(),
                    plan.route.survey_m,
                    plan.route.deadhead_m
                ),
                due_at: Some(end_of_day),
                parent_id: None,
                actor: actor.clone(),
            }, ids.clone())
            .await?;
        orders.push(json!({
            "order": order,
            "segments": ids,
            "length_m": plan.route.survey_m,
            "route": plan.route,
            "visits": why,
        }));
    }
    Ok(Json(json!({ "date": date, "orders": orders })))
}

pub(crate) async fn order_segments(
    State(s): State<AppState>,
    crate::extract::PathOf(id): crate::extract::PathOf<i64>,
) -> Result<Json<Value>, ApiError> {
    let ids = s.store.network_store().order_segments(id).await?;
    if ids.is_empty() {
        return Err(ApiError::not_found(format!(
            "work order {id} is not a survey order"
        )));
    }
    Ok(Json(order_route_json(&s.store, id, ids).await?))
}

/// A survey order's segments in walking order, with the direction to walk each (the
/// best for that order, `leakwatch_survey::route::orient`) and the distance between
/// them.
pub async fn order_route_json(store: &Store, id: i64, ids: Vec<String>) -> Result<Value, ApiError> {
    let net = store.network_store();
    let mut segs = Vec::new();
    for sid in &ids {
        if let Some(seg) = net.get_segment(sid).await? {
            segs.push(seg);
        }
    }
    let refs: Vec<&Segment> = segs.iter().collect();
    let order: Vec<usize> = (0..refs.len()).collect();
    let (dirs, deadhead_m) = leakwatch_survey::route::orient(&refs, &order, None);
    let legs: Vec<Value> = refs
        .iter()
        .zip(&dirs)
        .map(|(seg, rev)| {
            let mut pts: Vec<[f64; 2]> = seg.geometry.iter().map(|p| [p.lon, p.lat]).collect();
            if *rev {
                pts.reverse();
            }
            json!({
                "segment": seg.id,
                "reversed": rev,
                "length_m": seg.length_m(),
                "pressure_class": seg.pressure_class,
                "material": seg.material,
                "from": pts.first(),
                "to": pts.last(),
            })
        })
        .collect();
    Ok(json!({
        "order_id": id,
        "segments": ids,
        "legs": legs,
        "survey_m": refs.iter().map(|s| s.length_m()).sum::<f64>(),
        "deadhead_m": deadhead_m,
    }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CoveredSegment {
    id: String,
    /// Metres covered; the whole segment when absent.
    covered_m: Option<f64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FoundLeak {
    segment: String,
    class: String,
    #[serde(default)]
    notes: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SurveyReport {
    date: String,
    crew_id: Option<String>,
    instrument: Option<String>,
    segments: Vec<CoveredSegment>,
    #[serde(default)]
    leaks: Vec<FoundLeak>,
}

pub(crate) async fn report_order(
    State(s): State<AppState>,
    crate::extract::PathOf(id): crate::extract::PathOf<i64>,
    crate::extract::Body(r): crate::extract::Body<SurveyReport>,
) -> Result<Json<Value>, ApiError> {
    let date = date_param(&Some(r.date.clone()), "date")?.expect("given");
    let net = s.store.network_store();
    let planned = net.order_segments(id).await?;
    if planned.is_empty() {
        return Err(ApiError::not_found(format!(
            "work order {id} is not a survey order"
        )));
    }
    // Check everything before writing anything; the writes are one transaction
    // (the dispatcher's unit of work).
    let table = s.dispatcher.leak_classes().clone();
    let mut covered = Vec::new();
    for c in &r.segments {
        let seg = net
            .get_segment(&c.id)
            .await?
            .ok_or_else(|| ApiError::bad_request(format!("segments: {} is not a segment", c.id)))?;
        let covered_m = c.covered_m.unwrap_or_else(|| seg.length_m());
        if !(covered_m.is_finite() && covered_m >= 0.0) {
            return Err(ApiError::bad_request(format!(
                "segments: {}: covered_m must be a length",
                c.id
            )));
        }
        covered.push(leakwatch_dispatch::decide::SurveyCovered {
            segment: c.id.clone(),
            date,
            crew: r.crew_id.clone(),
            instrument: r.instrument.clone(),
            covered_m,
        });
    }
    let mut leaks = Vec::new();
    for (i, l) in r.leaks.iter().enumerate() {
        let seg = net.get_segment(&l.segment).await?.ok_or_else(|| {
            ApiError::bad_request(format!("leaks: {} is not a segment", l.segment))
        })?;
        table.get(&l.class).ok_or_else(|| {
            ApiError::bad_request(format!("leaks: unknown leak class {:?}", l.class))
        })?;
        leaks.push(leakwatch_dispatch::decide::SurveyLeak {
            key: format!("wo:{id}:leak:{i}"),
            segment: l.segment.clone(),
            date,
            class: l.class.clone(),
            notes: l.notes.clone(),
            district: seg.district.clone(),
            location: seg.midpoint(),
        });
    }
    let out = s
        .dispatcher
        .survey_report(
            id,
            leakwatch_dispatch::decide::SurveyReport {
                actor: r.crew_id.clone().unwrap_or_else(|| "survey".into()),
                covered,
                leaks,
            },
            &NETWORK_KINDS,
        )
        .await?;
    Ok(Json(json!({
        "order_id": id,
        "surveys_recorded": out.surveys_recorded,
        "leaks": out.leaks,
        "confirmed_alerts": out.confirmed_alerts,
    })))
}
