//! The programmed leak survey page (issue 16) for engineers and dispatchers: the
//! obligations in force with their sources, coverage per pressure class against the
//! obligation (surveyed, overdue, forecast for the year), leaks found per km by class
//! and material, the survey orders of the day, the program of the next days with the
//! reason of each visit, and the CSV export for the regulator's report.
//!
//! Read only: everything is computed as the API computes it
//! (`leakwatch_api::survey::Snapshot`), survey orders are planned and reported through
//! the API.

use crate::{PageError, Viewer, page, require};
use axum::Router;
use axum::extract::{Query, State};
use axum::routing::get;
use chrono::{Datelike, NaiveDate};
use leakwatch_api::AppState;
use leakwatch_api::auth::Role;
use leakwatch_api::survey::Snapshot;
use leakwatch_core::WorkOrderKind;
use leakwatch_survey::{Reason, report};
use maud::{Markup, html};
use serde::Deserialize;

pub fn routes() -> Router<AppState> {
    Router::new().route("/console/survey", get(survey_page))
}

const VIEW: &[Role] = &[Role::Engineer, Role::Dispatcher];

#[derive(Debug, Default, Deserialize)]
pub struct SurveyQuery {
    /// The day the page is about (default today).
    #[serde(default)]
    on: String,
    /// Days of program shown (default 5, at most 30).
    #[serde(default)]
    days: String,
}

fn km(m: f64) -> String {
    format!("{:.1}", m / 1000.0)
}

fn reason_words(r: &Reason) -> String {
    match r {
        Reason::Overdue { due } => format!("overdue since {due}"),
        Reason::Deadline { due } => format!("due by {due}"),
        Reason::Share { class, year } => format!("{class} share of {year}"),
        Reason::Risk { score } => format!("risk {score:.1}"),
        Reason::Oldest { since } => format!("oldest (since {since})"),
        Reason::Pace { due } => format!("keeps pace with the calendar order (due {due})"),
    }
}

async fn survey_page(
    Viewer(p): Viewer,
    State(s): State<AppState>,
    Query(q): Query<SurveyQuery>,
) -> Result<Markup, PageError> {
    require(&p, VIEW, "see the leak survey")?;
    let today = chrono::Utc::now().date_naive();
    let on = if q.on.is_empty() {
        today
    } else {
        NaiveDate::parse_from_str(&q.on, "%Y-%m-%d").map_err(|_| {
            PageError::new(
                axum::http::StatusCode::BAD_REQUEST,
                format!("on: {:?} is not a date (YYYY-MM-DD)", q.on),
            )
        })?
    };
    let days = q.days.parse::<u64>().unwrap_or(5).clamp(1, 30);
    let cfg = &s.survey;
    let table = cfg
        .table()
        .map_err(|e| PageError::new(axum::http::StatusCode::INTERNAL_SERVER_ERROR, e))?;
    let snap = Snapshot::load(&s.store).await?;
    let prio = snap.priorities(cfg, on);
    let coverage = report::coverage(
        &snap.segments,
        &snap.records(),
        &table,
        on,
        cfg.capacity_m_per_day,
        &prio,
    );
    let year_start = NaiveDate::from_ymd_opt(on.year(), 1, 1).unwrap_or(on);
    let rates = report::leak_rates(&snap.segments, &snap.records(), &snap.leaks, year_start, on);
    let program = snap.program(cfg, on)?;
    let to = on + chrono::Days::new(days - 1);
    let visits = program.plan_window(on, to, cfg.capacity_m_per_day, &prio);
    let lengths: std::collections::HashMap<&str, (&str, f64)> = snap
        .segments
        .iter()
        .map(|x| (x.id.as_str(), (x.district.as_str(), x.length_m())))
        .collect();
    let orders: Vec<_> = s
        .store
        .active_work_orders()
        .await?
        .into_iter()
        .filter(|o| o.kind == WorkOrderKind::LeakSurvey && !o.status.is_final())
        .collect();
    let network_km: f64 = snap.segments.iter().map(|x| x.length_m()).sum::<f64>() / 1000.0;
    let body = html! {
        h1 { "Leak survey" }
        p #survey-summary {
            "Network: " strong { (snap.segments.len()) } " segments, " strong { (format!("{network_km:.1}")) } " km · obligations "
            strong #preset { (table.preset) } " · capacity " (format!("{:.0}", cfg.capacity_m_per_day)) " m a working day · "
            (snap.signals.len()) " network-leak alerts open or acknowledged · "
            a #coverage-csv href={"/api/v1/survey/coverage.csv?on=" (on)} { "coverage as CSV" }
        }
        form method="get" action="/console/survey" class="filters" {
            label { "Day " input type="date" name="on" value=(on); }
            label { "Days of program " input type="number" name="days" min="1" max="30" value=(days); }
            button type="submit" { "Show" }
        }
        h2 { "Coverage " (on.year()) " against the obligation (on " (on) ")" }
        table #coverage class="survey" {
            thead { tr {
                th { "class" } th { "segments" } th { "km" } th { "surveyed km" } th { "required km" }
                th { "overdue" } th { "due by year end, km" } th { "forecast km" } th { "met" } th { "source" }
            } }
            tbody {
                @for c in &coverage {
                    tr data-class=(c.class) {
                        td { strong { (c.class) } br; small { (c.label) } }
                        td { (c.segments) }
                        td { (km(c.length_m)) }
                        td class="surveyed" { (km(c.surveyed_m)) }
                        td { (c.required_m.map(km).unwrap_or_else(|| "-".into())) }
                        td class={"overdue" @if c.overdue_segments > 0 { " late" }} { (c.overdue_segments) " (" (km(c.overdue_m)) " km)" }
                        td { (km(c.due_by_year_end_m)) }
                        td { (km(c.forecast_m)) }
                        td class="met" { @if c.forecast_met { "yes" } @else { strong class="late" { "no" } } }
                        td { small { (c.source) @if !c.confirmed { " " strong { "(unconfirmed: check the figures)" } } } }
                    }
                }
            }
        }
        h2 { "Leaks found per km surveyed, " (year_start) " to " (on) }
        table #leak-rates class="survey" {
            thead { tr { th { "class" } th { "material" } th { "km surveyed" } th { "leaks" } th { "per km" } } }
            tbody {
                @if rates.is_empty() { tr { td colspan="5" { "Nothing surveyed in this period." } } }
                @for r in &rates {
                    tr {
                        td { (r.class) } td { (r.material.as_str()) } td { (format!("{:.1}", r.surveyed_km)) }
                        td { (r.leaks) } td { (r.per_km.map(|x| format!("{x:.3}")).unwrap_or_else(|| "-".into())) }
                    }
                }
            }
        }
        h2 { "Survey orders not yet done" }
        table #survey-orders class="survey" {
            thead { tr { th { "#" } th { "district" } th { "status" } th { "crew" } th { "summary" } } }
            tbody {
                @if orders.is_empty() { tr { td colspan="5" { "No survey order waiting or under way." } } }
                @for o in &orders {
                    tr {
                        td { (o.id) } td { (o.district_id.as_ref().map(|d| d.to_string()).unwrap_or_default()) }
                        td { (o.status.as_str()) } td { (o.crew_id.as_ref().map(|c| c.to_string()).unwrap_or_else(|| "-".into())) }
                        td { (o.summary) }
                    }
                }
            }
        }
        h2 { "Program, " (on) " and the next working days (" (days) " days)" }
        table #program class="survey" {
            thead { tr { th { "day" } th { "segment" } th { "district" } th { "m" } th { "why" } } }
            tbody {
                @if visits.is_empty() { tr { td colspan="5" { "Nothing planned." } } }
                @for v in &visits {
                    tr data-segment=(v.segment) {
                        td { (v.date) } td { (v.segment) }
                        td { (lengths.get(v.segment.as_str()).map(|x| x.0).unwrap_or("-")) }
                        td { (format!("{:.0}", v.length_m)) }
                        td class="reason" { (reason_words(&v.reason)) }
                    }
                }
            }
        }
    };
    Ok(page(&p, "Leak survey", "survey", body))
}
