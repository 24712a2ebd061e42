//! The data-health page (freshness, rejections, duplicates, late and future events,
//! orphans) and the quarantine browser (raw event, error, replay).

use axum::Form;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use maud::{Markup, html};
use serde::Deserialize;
use sonde_ui::number;

use super::{NAV, PageFilters, RANGES, Rendered, html_page, pct, signed_in};
use crate::{AppState, Scope};

/// `GET /health`: the instrumentation-health report.
pub async fn get_health_page(
    State(state): State<AppState>,
    Query(f): Query<PageFilters>,
    headers: HeaderMap,
) -> Response {
    super::cache::serve(&state, &headers, "/health", &f, 5, render(&state, &f)).await
}

async fn render(state: &AppState, f: &PageFilters) -> Rendered {
    let (minutes, ..) = f.window();
    let surface = f.surface();
    let surfaces = super::choices(state).await.surfaces;
    let filters = range_form(minutes, surface.as_deref(), &surfaces);
    let report = match crate::health::report(state, minutes, 10).await {
        Ok(r) => r,
        Err(e) => {
            return Rendered {
                title: "Data health",
                path: "/health",
                filters,
                body: html! { p.error role="alert" { (e.message()) } },
                charts: Vec::new(),
                live_every_secs: 5,
            };
        }
    };
    let body = html! {
        h2 { "Sources" }
        div.table-wrap { table {
            caption.muted { "Last " (minutes) " minutes; duplicates since the server started."
                @if let Some(x) = &surface { " Decisions of " (x) " and the sources without a surface." } }
            thead { tr {
                th scope="col" { "Type" } th scope="col" { "Surface" }
                th.num scope="col" { "Events" } th.num scope="col" { "Per s (5 min)" }
                th.num scope="col" { "Last event" } th.num scope="col" { "Lag p50 ms" } th.num scope="col" { "Lag p99 ms" }
                th.num scope="col" { "Late" } th.num scope="col" { "Future" } th.num scope="col" { "Duplicates" }
            } }
            tbody { @for s in report.sources.iter().filter(|s| s.surface.is_empty() || surface.as_ref().is_none_or(|x| *x == s.surface)) {
                tr data-source=(format!("{}/{}", s.kind, s.surface)) {
                    th scope="row" { (s.kind) } td { (s.surface) }
                    td.num data-field="events" { (number(Some(s.events as f64), 0)) }
                    td.num { (number(Some(s.rate_per_sec_5m), 1)) }
                    td.num class=(if s.seconds_since_last.is_some_and(|x| x > 300.0) { "warn num" } else { "num" }) {
                        @if let Some(x) = s.seconds_since_last { (number(Some(x), 0)) " s ago" } @else { "–" }
                    }
                    td.num { (number(s.lag_p50_ms, 0)) }
                    td.num { (number(s.lag_p99_ms, 0)) }
                    td.num { (pct(s.late_rate)) }
                    td.num { (pct(s.future_rate)) }
                    td.num { (pct(s.duplicate_rate)) }
                }
            } }
        } }
        h2 { "Rejections" }
        p { "Rejected: " strong data-field="rejection_rate" { (pct(report.rejection_rate)) } " of the window's events." }
        ul { @for c in &report.rejections { li { code { (c.code) } ": " (c.count) } } }
        h2 { "Orphans and quarantine" }
        p { "Interactions without their decision after " (report.orphan_interactions.grace_minutes) " min: "
            strong data-field="orphans" { (report.orphan_interactions.orphans) } " of " (report.orphan_interactions.checked) "." }
        p { "Quarantine: " strong data-field="quarantine" { (report.quarantine.total) } " entries, "
            (report.quarantine.unresolved) " not replayed. " a href="/health/quarantine" { "Browse and replay them" } "." }
        h2 { "Distinct per hour" }
        div.table-wrap { table {
            thead { tr { th scope="col" { "Hour (UTC)" } th.num scope="col" { "Users" } th.num scope="col" { "Sessions" } th.num scope="col" { "Items" } } }
            tbody { @for h in report.cardinality.iter().rev() {
                tr {
                    th scope="row" { (chrono::DateTime::from_timestamp_millis(h.hour_ms).map(|d| d.format("%Y-%m-%d %H:00").to_string()).unwrap_or_default()) }
                    td.num { (number(Some(h.users as f64), 0)) } td.num { (number(Some(h.sessions as f64), 0)) } td.num { (number(Some(h.items as f64), 0)) }
                }
            } }
        } }
        p { a href=(format!("/v1/health/data?window_minutes={minutes}")) { "This page's data (JSON)" } }
    };
    Rendered {
        title: "Data health",
        path: "/health",
        filters: range_form(minutes, surface.as_deref(), &surfaces),
        body,
        charts: Vec::new(),
        live_every_secs: 5,
    }
}

/// The time range and surface: the health report is per source, not per model, variant or
/// segment.
fn range_form(minutes: i64, surface: Option<&str>, surfaces: &[String]) -> Markup {
    html! {
        form.filters method="get" action="/health" {
            label { "Time range"
                select name="minutes" {
                    @for (m, label) in RANGES {
                        option value=(m) selected[m == minutes] { (label) }
                    }
                }
            }
            label { "Surface"
                select name="surface" {
                    option value="" { "All" }
                    @for v in surfaces {
                        option value=(v) selected[surface == Some(v.as_str())] { (v) }
                    }
                }
            }
            button type="submit" { "Apply" }
        }
    }
}

/// Filters of the quarantine browser.
#[derive(Debug, Default, Deserialize)]
pub struct QuarantineFilters {
    /// Only this error code.
    code: Option<String>,
    /// Only entries not yet replayed successfully.
    pending: Option<String>,
}

/// `GET /health/quarantine`: the latest quarantined events, each with its error and raw
/// text (identifiers pseudonymized), and a replay button for admin sessions.
pub async fn get_quarantine_page(
    State(state): State<AppState>,
    Query(q): Query<QuarantineFilters>,
    headers: HeaderMap,
) -> Response {
    let scope = match signed_in(&state, &headers, "/health/quarantine") {
        Ok(s) => s,
        Err(r) => return r.into_response(),
    };
    quarantine_page(&state, &q, scope, None).await
}

async fn quarantine_page(
    state: &AppState,
    q: &QuarantineFilters,
    scope: Scope,
    result: Option<Markup>,
) -> Response {
    let code = q.code.clone().filter(|c| !c.is_empty());
    let pending = q.pending.as_deref() == Some("1");
    let items =
        match crate::quarantine::list_items(state, code.as_deref(), None, pending, 100).await {
            Ok(i) => i,
            Err(e) => return e.into_response(),
        };
    let admin = scope.allows(Scope::Admin);
    let filters = html! {
        form.filters method="get" action="/health/quarantine" {
            label { "Error code" input name="code" value=(code.as_deref().unwrap_or("")) placeholder="e.g. missing_field"; }
            label { "Only pending" select name="pending" {
                option value="" selected[!pending] { "No" }
                option value="1" selected[pending] { "Yes" }
            } }
            button type="submit" { "Apply" }
        }
    };
    let body = html! {
        @if let Some(r) = result { (r) }
        p.muted { "The newest 100 entries. Identifiers in the raw text are pseudonymized as they were on arrival. "
            @if !admin { "Replaying needs a session opened with the admin key." } }
        @if items.is_empty() { p.ok { "Nothing quarantined here." } }
        @for item in &items {
            article.card data-quarantine=(item.quarantine_id) style="margin-bottom:.75rem" {
                h2 style="margin-top:0" { code { (item.quarantine_id) } " · " code data-field="code" { (item.code) } }
                p { (item.message) @if !item.field.is_empty() { " (field " code { (item.field) } ")" } }
                p.muted { "Received " (item.received_at.as_str().unwrap_or("")) " · event " (item.event_id.as_deref().unwrap_or("–"))
                    " · last replay: " span data-field="replay" { (item.replay.as_deref().unwrap_or("never")) } }
                details { summary { "Raw event" } pre.raw { (item.raw) } }
                @if admin {
                    form method="post" action="/health/quarantine/replay" {
                        input type="hidden" name="id" value=(item.quarantine_id);
                        button type="submit" { "Replay" }
                    }
                }
            }
        }
    };
    html_page(sonde_ui::page(
        "Quarantine",
        &NAV,
        "/health",
        filters,
        body,
        0,
    ))
}

/// The replay form.
#[derive(Debug, Deserialize)]
pub struct ReplayForm {
    id: String,
}

/// `POST /health/quarantine/replay`: replay one entry (admin sessions only) and show the
/// outcome above the list.
pub async fn post_quarantine_replay(
    State(state): State<AppState>,
    headers: HeaderMap,
    Form(form): Form<ReplayForm>,
) -> Response {
    let scope = match signed_in(&state, &headers, "/health/quarantine") {
        Ok(s) => s,
        Err(r) => return r.into_response(),
    };
    if !scope.allows(Scope::Admin) {
        return (
            StatusCode::FORBIDDEN,
            "replaying needs a session opened with the admin key",
        )
            .into_response();
    }
    let req = crate::quarantine::ReplayBody {
        ids: Some(vec![form.id.clone()]),
        ..Default::default()
    };
    let result = match crate::quarantine::replay(&state, req).await {
        Ok(v) => {
            let r = &v["results"][0];
            let outcome = r["outcome"].as_str().unwrap_or("?");
            html! {
                p role="status" class=(if outcome == "rejected" { "bad" } else { "ok" }) data-field="replay-result" {
                    "Replayed " code { (form.id) } ": " strong { (outcome) }
                    @if let Some(m) = r["message"].as_str() { " — " (m) }
                }
            }
        }
        Err(e) => html! { p.error role="alert" { (e.message()) } },
    };
    quarantine_page(&state, &QuarantineFilters::default(), scope, Some(result)).await
}
