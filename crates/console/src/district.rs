//! The district pages: the list of districts, and one district's balance: the
//! station's inflow against the sum of its customers per hour, the unaccounted-for
//! gas (UFG) per day, and its meters that are silent or still learning their pattern.
//!
//! Hours are counted only where the station and every customer with readings in the
//! range are known (interpolated between pushes, see [`crate::plots`]); the range ends
//! at the district's latest reading (a simulated fleet's clock is not the wall clock).

use crate::meter::VIEW;
use crate::plots::{self, Series, Style};
use crate::{PageError, Shared, Viewer, local, page, raw, require};
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::routing::get;
use chrono::{Duration, DurationRound, Utc};
use leakwatch_api::AppState;
use leakwatch_core::{AlertStatus, DistrictId, Meter, MeterId, MeterKind, Timestamp};
use leakwatch_store::AlertQuery;
use maud::{Markup, html};
use serde::Deserialize;
use std::collections::{BTreeMap, HashMap};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/console/districts", get(list))
        .route("/console/districts/{id}", get(district_page))
}

/// A meter is silent when its latest reading is older than twice its push interval
/// at `now` (or it has none).
pub fn is_silent(m: &Meter, latest: Option<Timestamp>, now: Timestamp) -> bool {
    latest.is_none_or(|t| now - t > Duration::hours(2 * i64::from(m.report_every_h.max(1))))
}

/// How long to ask the detectors about single meters, in all, per page.
const LEARNING_BUDGET: std::time::Duration = std::time::Duration::from_secs(3);

async fn list(
    Viewer(p): Viewer,
    State(s): State<AppState>,
    axum::Extension(c): Shared,
) -> Result<Markup, PageError> {
    require(&p, VIEW, "see districts")?;
    let meters = s.store.all_meters().await?;
    let ids: Vec<MeterId> = meters.iter().map(|m| m.id.clone()).collect();
    let latest = s.store.latest_readings(&ids).await?;
    let newest = latest.values().map(|v| v.0).max().unwrap_or_else(Utc::now);
    let open = open_alerts_by_district(&s).await?;
    let mut by: BTreeMap<&str, (usize, usize, usize)> = BTreeMap::new();
    for m in &meters {
        let e = by.entry(m.district.as_str()).or_default();
        match m.kind {
            MeterKind::Station => e.0 += 1,
            _ => e.1 += 1,
        }
        if is_silent(m, latest.get(&m.id).map(|v| v.0), newest) {
            e.2 += 1;
        }
    }
    let body = html! {
        h1 { "Districts" }
        p class="meta" { "Silent: no reading for twice the meter's push interval, counted at the newest reading (" (local(&c, newest)) ")." }
        table #districts { thead { tr { th { "district" } th { "stations" } th { "customer meters" } th { "silent" } th { "open alerts" } } }
            tbody { @for (d, (st, cu, si)) in &by { tr {
                td { a href={"/console/districts/" (crate::url_encode(d))} { (d) } }
                td { (st) } td { (cu) } td { (si) }
                td { (open.get(*d).copied().unwrap_or(0)) }
            } } } }
    };
    Ok(page(&p, "Districts", "districts", body))
}

async fn open_alerts_by_district(s: &AppState) -> Result<HashMap<String, usize>, PageError> {
    let mut out = HashMap::new();
    for st in [AlertStatus::Open, AlertStatus::Acknowledged] {
        for a in s
            .store
            .list_alerts(&AlertQuery {
                status: Some(st),
                limit: 1000,
                ..AlertQuery::default()
            })
            .await?
        {
            if let Some(d) = a.district_id {
                *out.entry(d.to_string()).or_insert(0) += 1;
            }
        }
    }
    Ok(out)
}

#[derive(Debug, Default, Deserialize)]
struct DistrictQuery {
    /// 2, 7 or 30 days back.
    #[serde(default)]
    days: Option<i64>,
}

async fn district_page(
    Viewer(p): Viewer,
    State(s): State<AppState>,
    axum::Extension(c): Shared,
    Path(raw_id): Path<String>,
    Query(q): Query<DistrictQuery>,
) -> Result<Markup, PageError> {
    require(&p, VIEW, "see districts")?;
    let id = DistrictId::parse(&raw_id)
        .map_err(|e| PageError::not_found(format!("no district {raw_id:?}: {e}")))?;
    let meters: Vec<Meter> = s
        .store
        .all_meters()
        .await?
        .into_iter()
        .filter(|m| m.district == id)
        .collect();
    if meters.is_empty() {
        return Err(PageError::not_found(format!(
            "district {id} has no meter in the registry"
        )));
    }
    let days = match q.days.unwrap_or(2) {
        d if d <= 2 => 2,
        d if d <= 7 => 7,
        _ => 30,
    };
    let ids: Vec<MeterId> = meters.iter().map(|m| m.id.clone()).collect();
    let latest = s.store.latest_readings(&ids).await?;
    let newest = latest.values().map(|v| v.0).max();
    let end = newest
        .unwrap_or_else(Utc::now)
        .duration_trunc(Duration::hours(1))
        .unwrap_or_else(|_| Utc::now());
    let from = end - Duration::days(days);
    let hour = Duration::hours(1);
    let mut inflow: Vec<Vec<(Timestamp, Option<f64>)>> = Vec::new();
    let mut customers: Vec<Vec<(Timestamp, Option<f64>)>> = Vec::new();
    for m in &meters {
        let rows = s
            .store
            .hourly(&m.id, Some(from - Duration::hours(48)), Some(end + hour))
            .await?;
        if rows.is_empty() {
            continue;
        }
        let series = plots::consumption(&rows, from, end, hour);
        match m.kind {
            MeterKind::Station => inflow.push(series),
            MeterKind::Customer => customers.push(series),
            MeterKind::Pressure => {}
        }
    }
    let inflow_sum: Vec<(Timestamp, Option<f64>)> = plots::sum(&inflow)
        .into_iter()
        .map(|(t, v, _)| (t, v))
        .collect();
    let cust_sum: Vec<(Timestamp, Option<f64>)> = plots::sum(&customers)
        .into_iter()
        .map(|(t, v, _)| (t, v))
        .collect();
    let hourly_label = |t: Timestamp| {
        t.with_timezone(&c.cfg.time_zone)
            .format("%a %H:%M")
            .to_string()
    };
    let balance_svg = plots::chart_svg(
        "balance-chart",
        &[
            Series {
                name: "station inflow",
                class: "bar",
                style: Style::Bars,
                points: &inflow_sum,
            },
            Series {
                name: "sum of customers",
                class: "line-customers",
                style: Style::Line,
                points: &cust_sum,
            },
        ],
        hour,
        "m³",
        hourly_label,
    );
    // UFG per day (days starting at the range's start hour).
    let day_in = plots::regroup(&inflow_sum, 24);
    let day_cu = plots::regroup(&cust_sum, 24);
    let ufg = plots::ufg_percent(&day_in, &day_cu);
    let ufg_svg = plots::chart_svg(
        "ufg-chart",
        &[Series {
            name: "unaccounted-for gas",
            class: "bar ufg",
            style: Style::Bars,
            points: &ufg,
        }],
        Duration::days(1),
        "%",
        |t| {
            t.with_timezone(&c.cfg.time_zone)
                .format("%d %b %H:%M")
                .to_string()
        },
    );
    let total_in: f64 = inflow_sum.iter().filter_map(|p| p.1).sum();
    let both: Vec<(f64, f64)> = inflow_sum
        .iter()
        .zip(&cust_sum)
        .filter_map(|(a, b)| a.1.zip(b.1))
        .collect();
    let (bi, bc) = both
        .iter()
        .fold((0.0, 0.0), |(x, y), (a, b)| (x + a, y + b));
    let known_hours = both.len();
    let ufg_total = (bi > 0.0).then(|| (bi - bc) / bi * 100.0);

    // Silent and learning meters.
    let at = newest.unwrap_or_else(Utc::now);
    let silent: Vec<&Meter> = meters
        .iter()
        .filter(|m| is_silent(m, latest.get(&m.id).map(|v| v.0), at))
        .collect();
    let mut learning: Vec<(&Meter, String)> = Vec::new();
    let mut states: BTreeMap<String, usize> = BTreeMap::new();
    let mut unanswered: Option<String> = None;
    let started = std::time::Instant::now();
    for m in meters.iter().filter(|m| m.kind == MeterKind::Customer) {
        if started.elapsed() > LEARNING_BUDGET {
            if unanswered.is_none() {
                unanswered = Some("detection is busy; not every meter was asked".into());
            }
            break;
        }
        match s
            .detection
            .ask_learning(m.id.clone(), std::time::Duration::from_millis(500))
            .await
        {
            Ok(Some(v)) => {
                let state = v["state"].as_str().unwrap_or("unknown").to_owned();
                *states.entry(state.clone()).or_insert(0) += 1;
                if state != "learned" {
                    let words = match (v["learned_days"].as_u64(), v["needed_days"].as_u64()) {
                        (Some(l), Some(n)) => format!("{state}: {l} of {n} days"),
                        _ => state,
                    };
                    learning.push((m, words));
                }
            }
            Ok(None) => *states.entry("no readings".into()).or_insert(0) += 1,
            Err(why) => {
                unanswered = Some(why.to_owned());
                break;
            }
        }
    }
    let overall = s.detection.to_json();
    let stations = meters
        .iter()
        .filter(|m| m.kind == MeterKind::Station)
        .count();
    let body = html! {
        p { a href="/console/districts" { "← districts" } }
        h1 { "District " span #district-id { (id) } }
        p class="meta" { (stations) " station(s), " (meters.len() - stations) " other meters · "
            a href={"/console/map?district=" (crate::url_encode(id.as_str()))} { "on the map" } " · "
            a href={"/console/alerts?district=" (crate::url_encode(id.as_str()))} { "its alerts" } }
        nav class="ranges" #ranges {
            @for d in [2, 7, 30] {
                a href={"/console/districts/" (crate::url_encode(id.as_str())) "?days=" (d)} id={"days-" (d)} class=[(d == days).then_some("here")] { (d) " days" }
            }
        }
        section {
            h2 { "Station inflow against the customers, per hour" }
            (raw(balance_svg))
            p class="legend" { span class="key bar" {} " station inflow (m³/h) " span class="key customers" {} " sum of the customers' meters" }
            p #balance-words {
                @if inflow.is_empty() { "No station of this district has readings in this range: no balance." }
                @else {
                    "Over the " (known_hours) " hours where the station and all " (customers.len()) " customer meters with readings are known: "
                    (format!("{bi:.1}")) " m³ in, " (format!("{bc:.1}")) " m³ measured at customers"
                    @if let Some(u) = ufg_total { ", unaccounted-for " strong #ufg-total { (format!("{u:.1} %")) } }
                    ". All the station's hours: " (format!("{total_in:.1}")) " m³. Up to " (local(&c, end)) "."
                }
            }
        }
        section {
            h2 { "Unaccounted-for gas per day (% of inflow)" }
            (raw(ufg_svg))
        }
        section class="two" {
            div {
                h2 { "Silent meters (" (silent.len()) ")" }
                p class="hint" { "No reading for twice the push interval before " (local(&c, at)) "." }
                @if silent.is_empty() { p { "None." } }
                @else { ul #silent-meters { @for m in silent.iter().take(200) { li {
                    a href=(crate::meter::href(&m.id)) { (m.id) } " · "
                    @match latest.get(&m.id) { Some((t, _)) => { "last " (local(&c, *t)) } None => { "never read" } }
                } } } }
            }
            div {
                h2 { "Still learning (" (learning.len()) ")" }
                p #learning-counts class="hint" {
                    @for (st, n) in &states { (st) " " (n) " · " }
                    "all districts: " (overall["meters_learning"]) " learning, " (overall["meters_learned"]) " learned"
                    @if let Some(u) = &unanswered { " · " (u) }
                }
                @if !learning.is_empty() { ul #learning-meters { @for (m, w) in learning.iter().take(200) { li {
                    a href=(crate::meter::href(&m.id)) { (m.id) } " · " (w)
                } } } }
            }
        }
    };
    Ok(page(&p, &format!("District {id}"), "districts", body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn silence_is_twice_the_push_interval() {
        let m = Meter {
            id: MeterId::parse("M-1").unwrap(),
            district: DistrictId::parse("D1").unwrap(),
            kind: MeterKind::Customer,
            location: leakwatch_core::GeoPoint::new(45.0, 9.0).unwrap(),
            report_every_h: 6,
            status: leakwatch_core::MeterStatus::Active,
            installed_at: None,
            max_flow_m3h: None,
        };
        let now = Utc::now();
        assert!(!is_silent(&m, Some(now - Duration::hours(12)), now));
        assert!(is_silent(&m, Some(now - Duration::hours(13)), now));
        assert!(is_silent(&m, None, now));
    }
}
