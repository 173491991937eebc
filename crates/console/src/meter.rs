//! The meter page: registry data, last reading, battery and valve (from the meter's
//! events), learning state, a consumption chart over a day, a week (hourly) or 90
//! days (daily) from the hourly rollup, the meter's alerts and work orders.
//!
//! The chart's range ends at the meter's latest reading (a simulated fleet's clock is
//! not the wall clock), else now.

use crate::plots::{self, Series, Style};
use crate::{PageError, Shared, Viewer, local, page, raw, require};
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::routing::get;
use chrono::{Duration, DurationRound, Utc};
use leakwatch_api::AppState;
use leakwatch_api::auth::Role;
use leakwatch_core::{MeterEvent, MeterId, Timestamp, WorkOrder};
use leakwatch_store::{AlertQuery, WorkOrderQuery};
use maud::{Markup, html};
use serde::Deserialize;

pub fn routes() -> Router<AppState> {
    Router::new().route("/console/meters/{id}", get(meter_page))
}

/// Engineers and dispatchers (and admins) see meters.
pub(crate) const VIEW: &[Role] = &[Role::Engineer, Role::Dispatcher];

/// The link to a meter's page.
pub fn href(id: &MeterId) -> String {
    format!("/console/meters/{}", crate::url_encode(id.as_str()))
}

/// The chart's range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Range {
    Day,
    Week,
    Days90,
}

impl Range {
    pub fn parse(s: &str) -> Range {
        match s {
            "week" => Range::Week,
            "90d" => Range::Days90,
            _ => Range::Day,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Range::Day => "day",
            Range::Week => "week",
            Range::Days90 => "90d",
        }
    }
    fn label(self) -> &'static str {
        match self {
            Range::Day => "day",
            Range::Week => "week",
            Range::Days90 => "90 days",
        }
    }
    /// (how far back, bucket size).
    pub fn span(self) -> (Duration, Duration) {
        match self {
            Range::Day => (Duration::hours(24), Duration::hours(1)),
            Range::Week => (Duration::days(7), Duration::hours(1)),
            Range::Days90 => (Duration::days(90), Duration::days(1)),
        }
    }
}

/// The battery as the meter's events tell it: the latest battery event.
pub fn battery(events: &[MeterEvent]) -> (&'static str, Option<Timestamp>) {
    latest_of(events, &["battery_low", "battery_critical"])
        .map(|e| match e.code.to_text().as_str() {
            "battery_critical" => ("critical", Some(e.t)),
            _ => ("low", Some(e.t)),
        })
        .unwrap_or(("no warning reported", None))
}

/// The valve as the meter's events tell it: the latest valve event.
pub fn valve(events: &[MeterEvent]) -> (&'static str, Option<Timestamp>) {
    latest_of(events, &["valve_closed", "valve_opened"])
        .map(|e| match e.code.to_text().as_str() {
            "valve_closed" => ("closed", Some(e.t)),
            _ => ("open", Some(e.t)),
        })
        .unwrap_or(("open (no valve event)", None))
}

fn latest_of<'a>(events: &'a [MeterEvent], codes: &[&str]) -> Option<&'a MeterEvent> {
    events
        .iter()
        .filter(|e| codes.contains(&e.code.to_text().as_str()))
        .max_by_key(|e| e.t)
}

#[derive(Debug, Default, Deserialize)]
struct MeterQuery {
    #[serde(default)]
    range: String,
}

/// The orders on a meter: the active ones and the latest 500 looked through.
pub(crate) async fn orders_of_meter(
    s: &AppState,
    id: &MeterId,
) -> Result<Vec<WorkOrder>, PageError> {
    let mut orders: Vec<WorkOrder> = s
        .store
        .active_work_orders()
        .await?
        .into_iter()
        .filter(|o| o.meter_id.as_ref() == Some(id))
        .collect();
    for o in s
        .store
        .list_work_orders(&WorkOrderQuery {
            limit: 500,
            ..WorkOrderQuery::default()
        })
        .await?
    {
        if o.meter_id.as_ref() == Some(id) && !orders.iter().any(|x| x.id == o.id) {
            orders.push(o);
        }
    }
    orders.sort_by_key(|o| std::cmp::Reverse(o.id));
    Ok(orders)
}

/// The learning state in words, from the running detectors.
pub(crate) async fn learning_words(s: &AppState, id: &MeterId) -> String {
    match s
        .detection
        .ask_learning(id.clone(), std::time::Duration::from_secs(2))
        .await
    {
        Ok(Some(v)) => {
            let state = v["state"].as_str().unwrap_or("unknown");
            match (v["learned_days"].as_u64(), v["needed_days"].as_u64()) {
                (Some(l), Some(n)) => format!("{state} ({l} of {n} days learned)"),
                _ => state.to_owned(),
            }
        }
        Ok(None) => "no readings seen by the detectors yet".into(),
        Err(why) => format!("unknown: {why}"),
    }
}

async fn meter_page(
    Viewer(p): Viewer,
    State(s): State<AppState>,
    axum::Extension(c): Shared,
    Path(raw_id): Path<String>,
    Query(q): Query<MeterQuery>,
) -> Result<Markup, PageError> {
    require(&p, VIEW, "see meters")?;
    let id = MeterId::parse(&raw_id)
        .map_err(|e| PageError::not_found(format!("no meter {raw_id:?}: {e}")))?;
    let m = s
        .store
        .get_meter(&id)
        .await?
        .ok_or_else(|| PageError::not_found(format!("meter {id} is not in the registry")))?;
    let range = Range::parse(&q.range);
    let latest = s
        .store
        .latest_readings(std::slice::from_ref(&id))
        .await?
        .get(&id)
        .copied();
    // The latest reading's other fields, when it is still stored raw.
    let last_detail = match latest {
        Some((t, _)) => s
            .store
            .readings(&id, Some(t), Some(t + Duration::seconds(1)), 1)
            .await?
            .into_iter()
            .next(),
        None => None,
    };
    let end = latest
        .map(|(t, _)| t)
        .unwrap_or_else(Utc::now)
        .duration_trunc(Duration::hours(1))
        .map(|t| t + Duration::hours(1))
        .unwrap_or_else(|_| Utc::now());
    let (back, bucket) = range.span();
    let from = end - back;
    let rows = s
        .store
        .hourly(&id, Some(from - Duration::hours(48)), Some(end))
        .await?;
    let series = plots::consumption(&rows, from, end, bucket);
    let total: f64 = series.iter().filter_map(|p| p.1).sum();
    let label = |t: Timestamp| {
        if bucket >= Duration::days(1) {
            t.with_timezone(&c.cfg.time_zone)
                .format("%d %b")
                .to_string()
        } else if range == Range::Week {
            t.with_timezone(&c.cfg.time_zone)
                .format("%a %H:%M")
                .to_string()
        } else {
            crate::clock(&c, t)
        }
    };
    let svg = plots::chart_svg(
        "meter-chart",
        &[Series {
            name: "consumption",
            class: "bar",
            style: Style::Bars,
            points: &series,
        }],
        bucket,
        "m³",
        label,
    );
    let events = s.store.meter_events(&id, 200).await?;
    let (battery, battery_at) = battery(&events);
    let (valve, valve_at) = valve(&events);
    let alerts = s
        .store
        .list_alerts(&AlertQuery {
            meter_id: Some(id.clone()),
            limit: 50,
            ..AlertQuery::default()
        })
        .await?;
    let orders = orders_of_meter(&s, &id).await?;
    let learning = if m.kind == leakwatch_core::MeterKind::Customer {
        Some(learning_words(&s, &id).await)
    } else {
        None
    };
    let now = Utc::now();
    let silent = latest
        .is_none_or(|(t, _)| now - t > Duration::hours(2 * i64::from(m.report_every_h.max(1))));
    let body = html! {
        p { a href={"/console/districts/" (crate::url_encode(m.district.as_str()))} { "← district " (m.district) } }
        h1 { "Meter " span #meter-id { (m.id) } }
        section class="two" {
            div {
                h2 { "Registry" }
                table class="facts" #registry { tbody {
                    tr { th { "kind" } td { (m.kind.as_str()) } }
                    tr { th { "district" } td { a href={"/console/districts/" (crate::url_encode(m.district.as_str()))} { (m.district) } } }
                    tr { th { "status" } td { (m.status.as_str()) } }
                    tr { th { "location" } td { (format!("{:.5}, {:.5}", m.location.lat, m.location.lon)) " · " a href={"/console/map?focus=" (crate::url_encode(m.id.as_str()))} { "on the map" } } }
                    tr { th { "pushes every" } td { (m.report_every_h) " h" } }
                    tr { th { "installed" } td { (m.installed_at.map(|t| local(&c, t)).unwrap_or_else(|| "unknown".into())) } }
                    tr { th { "rated capacity" } td { (m.max_flow_m3h.map(|f| format!("{f} m³/h")).unwrap_or_else(|| "unknown".into())) } }
                } }
            }
            div {
                h2 { "Now" }
                table class="facts" #state { tbody {
                    tr { th { "last reading" } td #last-reading {
                        @match latest {
                            Some((t, v)) => { (format!("{v:.3} m³")) " at " (local(&c, t))
                                @if silent { " " span class="badge warning" { "silent" } } }
                            None => { "none yet" }
                        }
                    } }
                    @if let Some(r) = &last_detail {
                        @if let Some(t) = r.temp { tr { th { "gas temperature" } td { (format!("{t:.1} °C")) } } }
                        @if let Some(f) = r.flow_max { tr { th { "highest flow" } td { (format!("{f:.3} m³/h")) } } }
                        @if let Some(pr) = r.pressure { tr { th { "pressure" } td { (format!("{pr:.1} kPa")) } } }
                    }
                    tr { th { "battery" } td #battery { (battery) @if let Some(t) = battery_at { " since " (local(&c, t)) } } }
                    tr { th { "valve" } td #valve { (valve) @if let Some(t) = valve_at { " since " (local(&c, t)) } } }
                    @if let Some(l) = &learning { tr { th { "pattern" } td #learning { (l) } } }
                } }
            }
        }
        section {
            h2 { "Consumption" }
            nav class="ranges" #ranges {
                @for r in [Range::Day, Range::Week, Range::Days90] {
                    a href={(href(&id)) "?range=" (r.as_str())} class=[(r == range).then_some("here")] id={"range-" (r.as_str())} { (r.label()) }
                }
            }
            (raw(svg))
            p class="legend" { "Gas used per " (if bucket >= Duration::days(1) { "day" } else { "hour" })
                " (m³), from the hourly rollup; between pushes the index is interpolated. "
                "Total " strong #range-total { (format!("{total:.3}")) " m³" } " up to " (local(&c, end)) "." }
        }
        section {
            h2 { "Alerts (" (alerts.len()) ")" }
            @if alerts.is_empty() { p { "No alert on this meter." } }
            @else {
                table #meter-alerts { thead { tr { th { "#" } th { "kind" } th { "severity" } th { "status" } th { "detected" } th { "evidence" } } }
                    tbody { @for a in &alerts { tr {
                        td { a href={"/console/alerts/" (a.id)} { (a.id) } }
                        td { (a.kind.as_str()) }
                        td { span class={"badge " (a.severity.as_str())} { (a.severity.as_str()) } }
                        td { (a.status.as_str()) @if let Some(r) = &a.status_reason { " · " i { (r) } } }
                        td { (local(&c, a.detected_at)) }
                        td class="evidence" { (a.evidence.explanation) }
                    } } } }
            }
        }
        section {
            h2 { "Work orders (" (orders.len()) ")" }
            @if orders.is_empty() { p { "No work order on this meter." } }
            @else {
                table #meter-orders { thead { tr { th { "#" } th { "kind" } th { "status" } th { "crew" } th { "created" } th { "summary" } } }
                    tbody { @for o in &orders { tr {
                        td { "#" (o.id) }
                        td { (o.kind.as_str()) }
                        td { (o.status.as_str()) }
                        td { (o.crew_id.as_ref().map(|c| c.to_string()).unwrap_or_else(|| "-".into())) }
                        td { (local(&c, o.created_at)) }
                        td { (o.summary) @if let Some(f) = &o.finding { " · found: " (if f.leak_found { "leak" } else { "no leak" }) } }
                    } } } }
            }
        }
        section {
            h2 { "Events" }
            @if events.is_empty() { p { "No event reported." } }
            @else {
                ul #meter-events { @for e in events.iter().take(20) { li { (local(&c, e.t)) " · " (e.code.to_text()) } } }
            }
        }
    };
    Ok(page(&p, &format!("Meter {}", m.id), "districts", body))
}

#[cfg(test)]
mod tests {
    use super::*;
    use leakwatch_core::EventCode;

    fn ev(h: i64, code: &str) -> MeterEvent {
        MeterEvent {
            meter: MeterId::parse("M-1").unwrap(),
            t: chrono::DateTime::from_timestamp(h * 3600, 0).unwrap(),
            code: EventCode::Named(code.into()),
        }
    }

    #[test]
    fn battery_and_valve_come_from_the_latest_event() {
        let events = vec![
            ev(5, "valve_opened"),
            ev(3, "valve_closed"),
            ev(2, "battery_low"),
            ev(4, "battery_critical"),
            ev(6, "tamper"),
        ];
        assert_eq!(battery(&events).0, "critical");
        assert_eq!(valve(&events).0, "open");
        assert_eq!(valve(&events[1..]).0, "closed");
        assert_eq!(battery(&[]).0, "no warning reported");
        assert!(valve(&[]).1.is_none());
    }

    #[test]
    fn ranges_read_from_the_query() {
        assert_eq!(Range::parse("week"), Range::Week);
        assert_eq!(Range::parse("90d").span().1, Duration::days(1));
        assert_eq!(Range::parse("anything"), Range::Day);
    }
}
