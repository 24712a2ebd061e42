//! The web dashboard: sign-in with a read key (an HttpOnly, SameSite=Strict session cookie),
//! and server-rendered pages (`sonde-ui`) over the same data as the JSON API.

use std::collections::HashMap;
use std::fmt::Write;

use axum::Form;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use maud::html;
use parking_lot::Mutex;
use rand::RngCore;
use serde::Deserialize;
use sonde_latency::{Filter, GroupBy, Objective, Severity, TOTAL};
use sonde_ui::{ChartSeries, LineChart, NavItem, number};

use crate::{AppState, Scope};

const COOKIE: &str = "sonde_session";
/// Sessions last 12 hours.
const TTL_MS: i64 = 12 * 3_600_000;
const MINUTE: i64 = 60_000;

/// The pages, in navigation order.
pub const NAV: [NavItem; 5] = [
    NavItem {
        path: "/overview",
        label: "Overview",
    },
    NavItem {
        path: "/latency",
        label: "Latency & SLOs",
    },
    NavItem {
        path: "/relevance",
        label: "Relevance",
    },
    NavItem {
        path: "/health",
        label: "Data health",
    },
    NavItem {
        path: "/summary",
        label: "Summary",
    },
];

/// Signed-in sessions: random tokens and their expiry (in memory: a restart signs out).
#[derive(Default)]
pub struct Sessions {
    tokens: Mutex<HashMap<String, i64>>,
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

impl Sessions {
    fn create(&self) -> String {
        let mut bytes = [0u8; 32];
        rand::rng().fill_bytes(&mut bytes);
        let token = hex::encode(bytes);
        let now = now_ms();
        let mut map = self.tokens.lock();
        map.retain(|_, exp| *exp > now);
        map.insert(token.clone(), now + TTL_MS);
        token
    }

    fn valid(&self, token: &str) -> bool {
        self.tokens
            .lock()
            .get(token)
            .is_some_and(|exp| *exp > now_ms())
    }

    fn remove(&self, token: &str) {
        self.tokens.lock().remove(token);
    }
}

fn session_token(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v.to_string())
}

/// Whether the request carries a live session; otherwise the redirect to the sign-in page.
fn signed_in(state: &AppState, headers: &HeaderMap, here: &str) -> Result<(), Redirect> {
    match session_token(headers) {
        Some(t) if state.sessions.valid(&t) => Ok(()),
        _ => Err(Redirect::to(&format!("/login?next={}", encode(here)))),
    }
}

/// Percent-encode a query value, keeping `/` readable in `next=` paths.
fn encode(s: &str) -> String {
    const SET: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'_')
        .remove(b'.')
        .remove(b'/');
    percent_encoding::utf8_percent_encode(s, SET).to_string()
}

/// Only local paths: an open redirect would let a link send a signed-in user anywhere.
fn local(next: &str) -> &str {
    if next.starts_with('/') && !next.starts_with("//") && !next.contains('\\') {
        next
    } else {
        "/overview"
    }
}

/// `?next=` of the sign-in page.
#[derive(Debug, Default, Deserialize)]
pub struct NextParam {
    next: Option<String>,
}

/// `GET /login`.
pub async fn get_login(Query(p): Query<NextParam>) -> Html<String> {
    Html(sonde_ui::login_page(None, local(p.next.as_deref().unwrap_or("/overview"))).into_string())
}

/// The sign-in form.
#[derive(Debug, Deserialize)]
pub struct LoginForm {
    key: String,
    #[serde(default)]
    next: String,
}

/// `POST /login`: a read (or admin) key opens a session.
pub async fn post_login(State(state): State<AppState>, Form(f): Form<LoginForm>) -> Response {
    let next = local(&f.next).to_string();
    match state.project.scope_of(f.key.trim()) {
        Some(s) if s.allows(Scope::Read) => {
            let token = state.sessions.create();
            let cookie = format!(
                "{COOKIE}={token}; HttpOnly; SameSite=Strict; Path=/; Max-Age={}",
                TTL_MS / 1000
            );
            let mut resp = Redirect::to(&next).into_response();
            if let Ok(v) = HeaderValue::from_str(&cookie) {
                resp.headers_mut().insert(header::SET_COOKIE, v);
            }
            resp
        }
        _ => (
            StatusCode::UNAUTHORIZED,
            Html(
                sonde_ui::login_page(Some("That is not a read key of this project."), &next)
                    .into_string(),
            ),
        )
            .into_response(),
    }
}

/// `POST /logout`.
pub async fn post_logout(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if let Some(t) = session_token(&headers) {
        state.sessions.remove(&t);
    }
    let mut resp = Redirect::to("/login").into_response();
    resp.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static("sonde_session=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0"),
    );
    resp
}

/// `GET /`.
pub async fn get_root() -> Redirect {
    Redirect::to("/overview")
}

/// Filters of the pages, carried in the URL so a view can be shared.
#[derive(Debug, Default, Deserialize)]
pub struct PageFilters {
    /// Minutes back from now (default 60).
    pub minutes: Option<i64>,
    /// Only this surface.
    pub surface: Option<String>,
    /// The experiment whose variants the relevance page compares.
    pub experiment: Option<String>,
}

/// `GET /overview`: traffic, latency against the SLO, fallbacks, freshness and alerts per
/// surface, with a one-line verdict each, and the quantiles over time.
pub async fn get_overview(
    State(state): State<AppState>,
    Query(f): Query<PageFilters>,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = signed_in(&state, &headers, "/overview") {
        return r.into_response();
    }
    let (minutes, from, to, step) = window(&f);
    let now = now_ms();
    let surface = f.surface.clone().filter(|s| !s.is_empty());
    let qs = [0.5, 0.95, 0.99];
    let slos = state.alerts.specs();
    let alerts = state.alerts.states();
    let tally = state.tally.snapshot();
    let (surfaces, rows, series) = state.store.with_rollups(|r| {
        let mut surfaces: Vec<String> = r.keys().iter().map(|k| k.surface.clone()).collect();
        surfaces.sort();
        surfaces.dedup();
        let rows: Vec<(String, sonde_latency::WindowCounts, sonde_latency::Sketch)> = surfaces
            .iter()
            .filter(|s| surface.as_ref().is_none_or(|x| x == *s))
            .map(|s| {
                let filter = Filter {
                    surface: Some(s.clone()),
                    ..Filter::default()
                };
                (
                    s.clone(),
                    r.window(&filter, from, to, None),
                    r.sketch(&filter, TOTAL, from, to),
                )
            })
            .collect();
        let filter = Filter {
            surface: surface.clone(),
            ..Filter::default()
        };
        let series = r
            .series(&filter, TOTAL, from, to, step, GroupBy::None, &qs)
            .unwrap_or_default();
        (surfaces, rows, series)
    });
    let threshold_of = |s: &str| {
        slos.iter()
            .find(|x| x.kind == Objective::Latency && x.surface.as_deref().is_none_or(|y| y == s))
            .and_then(|x| x.threshold_ms.map(|t| (t, x.target)))
    };
    let firing: Vec<&sonde_latency::AlertState> = alerts.iter().filter(|a| a.firing).collect();
    let chart = LineChart {
        title: format!(
            "End-to-end latency, {}",
            surface.as_deref().unwrap_or("all surfaces")
        ),
        unit: "ms".into(),
        series: ["p50", "p95", "p99"]
            .iter()
            .enumerate()
            .map(|(i, label)| ChartSeries {
                label: (*label).into(),
                points: series
                    .first()
                    .map(|s| {
                        s.points
                            .iter()
                            .map(|p| (p.t_ms, p.quantiles.get(i).copied().flatten()))
                            .collect()
                    })
                    .unwrap_or_default(),
            })
            .collect(),
        threshold: surface
            .as_deref()
            .and_then(threshold_of)
            .map(|(t, _)| (t, format!("SLO {} ms", number(Some(t), 0)))),
    };
    let filters = filter_form("/overview", minutes, surface.as_deref(), &surfaces);
    let body = html! {
        @if firing.is_empty() {
            p.ok { "No alert is firing." }
        } @else {
            section aria-labelledby="alerts" {
                h2 #alerts { "Alerts firing" }
                ul {
                    @for a in &firing {
                        li class=(if a.severity == Severity::Page { "bad" } else { "warn" }) {
                            strong { (a.severity.as_str()) } ": " (a.slo) " burning its error budget at "
                            (number(Some(a.burn_rate), 1)) "×"
                        }
                    }
                }
            }
        }
        h2 { "Surfaces" }
        div.table-wrap {
            table {
                caption.muted { "Last " (minutes) " minutes; latency quantiles within 1%." }
                thead { tr {
                    th scope="col" { "Surface" }
                    th.num scope="col" { "Decisions" }
                    th.num scope="col" { "p50 ms" }
                    th.num scope="col" { "p95 ms" }
                    th.num scope="col" { "p99 ms" }
                    th.num scope="col" { "Fallbacks" }
                    th.num scope="col" { "Last event" }
                    th scope="col" { "Verdict" }
                } }
                tbody {
                    @for (s, w, sk) in &rows {
                        @let p99 = sk.quantile(0.99);
                        @let last = tally.get(&("decision", s.clone())).map(|o| (now - o.last_received_ms) as f64 / 1000.0);
                        @let (class, verdict) = verdict(p99, w, threshold_of(s), &firing);
                        tr data-surface=(s) {
                            th scope="row" { (s) }
                            td.num data-field="decisions" { (number(Some(w.decisions as f64), 0)) }
                            td.num data-field="p50" { (number(sk.quantile(0.5), 1)) }
                            td.num data-field="p95" { (number(sk.quantile(0.95), 1)) }
                            td.num data-field="p99" { (number(p99, 1)) }
                            td.num { (number(Some(100.0 * w.fallbacks as f64 / (w.decisions.max(1)) as f64), 2)) "%" }
                            td.num { @if let Some(l) = last { (number(Some(l), 0)) " s ago" } @else { "–" } }
                            td class=(class) { (verdict) }
                        }
                    }
                }
            }
        }
        (chart.render())
        p { a href=(format!("/v1/latency?from={from}&to={to}&step={}m{}", step / MINUTE, surface.as_ref().map(|s| format!("&surface={}", encode(s))).unwrap_or_default())) { "This chart's data (JSON)" } }
    };
    Html(sonde_ui::page("Overview", &NAV, "/overview", filters, body).into_string()).into_response()
}

/// One line a person can act on.
fn verdict(
    p99: Option<f64>,
    w: &sonde_latency::WindowCounts,
    slo: Option<(f64, f64)>,
    firing: &[&sonde_latency::AlertState],
) -> (&'static str, String) {
    if w.decisions == 0 {
        return ("warn", "No decisions in this window.".into());
    }
    let mut text = String::new();
    let paging = firing.iter().any(|a| a.severity == Severity::Page);
    if let (Some((t, target)), Some(p)) = (slo, p99) {
        let _ = write!(
            text,
            "p99 {} ms against an SLO of {}% under {} ms",
            number(Some(p), 0),
            number(Some(target * 100.0), 1),
            number(Some(t), 0)
        );
    } else if let Some(p) = p99 {
        let _ = write!(
            text,
            "p99 {} ms, no latency SLO declared",
            number(Some(p), 0)
        );
    }
    let class = if paging && slo.is_some() {
        text.push_str(": an SLO alert is paging.");
        "bad"
    } else if let (Some((t, _)), Some(p)) = (slo, p99)
        && p > t
    {
        text.push_str(": the tail is over the threshold.");
        "warn"
    } else {
        text.push_str(": healthy.");
        "ok"
    };
    (class, text)
}

/// The range and surface filters of a page, as a GET form (so the URL carries them).
fn filter_form(
    action: &str,
    minutes: i64,
    surface: Option<&str>,
    surfaces: &[String],
) -> maud::Markup {
    html! {
        form.filters method="get" action=(action) {
            label { "Time range"
                select name="minutes" {
                    @for (m, label) in [(15, "15 min"), (60, "1 hour"), (360, "6 hours"), (1440, "24 hours"), (10080, "7 days")] {
                        option value=(m) selected[m == minutes] { (label) }
                    }
                }
            }
            label { "Surface"
                select name="surface" {
                    option value="" { "All" }
                    @for s in surfaces {
                        option value=(s) selected[surface == Some(s.as_str())] { (s) }
                    }
                }
            }
            button type="submit" { "Apply" }
        }
    }
}

/// The window of a page: `[from, to)` ending at the current minute, and a step giving at
/// most ~120 points.
fn window(f: &PageFilters) -> (i64, i64, i64, i64) {
    let minutes = f.minutes.unwrap_or(60).clamp(5, 7 * 24 * 60);
    let to = (now_ms() + MINUTE - 1).div_euclid(MINUTE) * MINUTE;
    (
        minutes,
        to - minutes * MINUTE,
        to,
        (minutes / 120).max(1) * MINUTE,
    )
}

fn surfaces_of(state: &AppState) -> Vec<String> {
    state.store.with_rollups(|r| {
        let mut v: Vec<String> = r.keys().iter().map(|k| k.surface.clone()).collect();
        v.sort();
        v.dedup();
        v
    })
}

fn pct(x: f64) -> String {
    format!("{}%", number(Some(x * 100.0), 2))
}

/// `GET /latency`: p99 per component and per variant over time, the SLOs with their budget
/// and burn rates, tail attribution, and the slowest requests.
pub async fn get_latency_page(
    State(state): State<AppState>,
    Query(f): Query<PageFilters>,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = signed_in(&state, &headers, "/latency") {
        return r.into_response();
    }
    let (minutes, from, to, step) = window(&f);
    let surface = f.surface.clone().filter(|s| !s.is_empty());
    let surfaces = surfaces_of(&state);
    let filter = Filter {
        surface: surface.clone(),
        ..Filter::default()
    };
    let (by_component, by_variant) = state.store.with_rollups(|r| {
        (
            r.series(&filter, TOTAL, from, to, step, GroupBy::Component, &[0.99])
                .unwrap_or_default(),
            r.series(&filter, TOTAL, from, to, step, GroupBy::Variant, &[0.99])
                .unwrap_or_default(),
        )
    });
    let chart = |title: &str, series: &[sonde_latency::Series]| LineChart {
        title: title.into(),
        unit: "ms".into(),
        series: series
            .iter()
            .map(|s| ChartSeries {
                label: s.group.clone(),
                points: s.points.iter().map(|p| (p.t_ms, p.quantiles[0])).collect(),
            })
            .collect(),
        threshold: None,
    };
    let exemplars: Vec<sonde_latency::Exemplar> = {
        let mut v: Vec<_> = by_variant
            .iter()
            .flat_map(|s| s.points.iter().flat_map(|p| p.exemplars.iter().cloned()))
            .collect();
        v.sort_by(|a, b| b.latency_ms.total_cmp(&a.latency_ms));
        v.truncate(10);
        v
    };
    let specs = state.alerts.specs().to_vec();
    let evals = crate::alerts::evaluate_all(&specs, &state.store, now_ms());
    let params = crate::latency::LatencyParams {
        surface: surface.clone(),
        from: Some(from.to_string()),
        to: Some(to.to_string()),
        ..Default::default()
    };
    let tail = crate::latency::tail(&state, &params).await.ok();
    let body = html! {
        h2 { "p99 by component" }
        (chart("p99 latency by component", &by_component).render())
        p { a href=(series_url(from, to, step, "component", surface.as_deref())) { "This chart's data (JSON)" } }
        h2 { "p99 by variant" }
        (chart("p99 end-to-end latency by variant", &by_variant).render())
        p { a href=(series_url(from, to, step, "variant", surface.as_deref())) { "This chart's data (JSON)" } }
        h2 { "Service-level objectives" }
        @if specs.is_empty() {
            p.muted { "No SLO declared: add " code { "[[slo]]" } " to the config file (docs/latency.md)." }
        } @else {
            div.table-wrap { table {
                thead { tr {
                    th scope="col" { "SLO" }
                    th.num scope="col" { "Attainment" }
                    th.num scope="col" { "Budget left" }
                    th.num scope="col" { "Burn 5 min" }
                    th.num scope="col" { "Burn 1 h" }
                    th.num scope="col" { "Burn 6 h" }
                    th.num scope="col" { "Burn 3 d" }
                    th scope="col" { "Alert" }
                } }
                tbody {
                    @for (spec, e) in specs.iter().zip(&evals) {
                        @let burn = |w: i64| e.windows.iter().find(|x| x.window_ms == w).map(|x| x.burn_rate);
                        tr data-slo=(spec.name) {
                            th scope="row" { (spec.name) br; span.muted { (crate::alerts::describe(spec)) } }
                            td.num { (e.attainment.map(pct).unwrap_or_else(|| "–".into())) }
                            td.num data-field="budget" { (pct(e.budget_remaining)) }
                            td.num { (number(burn(5 * MINUTE), 2)) }
                            td.num { (number(burn(60 * MINUTE), 2)) }
                            td.num { (number(burn(360 * MINUTE), 2)) }
                            td.num { (number(burn(3 * 1440 * MINUTE), 2)) }
                            td {
                                @if e.firing(Severity::Page) { span.bad { "page" } }
                                @else if e.firing(Severity::Ticket) { span.warn { "ticket" } }
                                @else { span.ok { "none" } }
                            }
                        }
                    }
                }
            } }
        }
        h2 { "Which component makes the tail" }
        @match &tail {
            Some(t) if t.tail_decisions > 0 => {
                p.muted { (t.tail_decisions) " decisions above the p99 of " (number(t.threshold_ms, 1)) " ms, of " (t.decisions) "." }
                div.table-wrap { table {
                    thead { tr {
                        th scope="col" { "Component" }
                        th.num scope="col" { "Share of tail time" }
                        th.num scope="col" { "Mean in tail ms" }
                        th.num scope="col" { "Mean otherwise ms" }
                    } }
                    tbody { @for c in &t.components {
                        tr data-component=(c.component) {
                            th scope="row" { (c.component) }
                            td.num data-field="tail_share" { (pct(c.tail_share)) }
                            td.num { (number(Some(c.tail_mean_ms), 1)) }
                            td.num { (number(Some(c.body_mean_ms), 1)) }
                        }
                    } }
                } }
            }
            _ => { p.muted { "No decisions with latency in this window." } }
        }
        h2 { "Slowest requests" }
        div.table-wrap { table {
            thead { tr { th scope="col" { "Request" } th scope="col" { "Trace" } th.num scope="col" { "Latency ms" } } }
            tbody { @for e in &exemplars {
                tr { td { code { (e.request_id) } } td { code { (e.trace_id.as_deref().unwrap_or("–")) } } td.num { (number(Some(e.latency_ms), 1)) } }
            } }
        } }
    };
    Html(
        sonde_ui::page(
            "Latency & SLOs",
            &NAV,
            "/latency",
            filter_form("/latency", minutes, surface.as_deref(), &surfaces),
            body,
        )
        .into_string(),
    )
    .into_response()
}

/// `GET /health`: the instrumentation-health report.
pub async fn get_health_page(
    State(state): State<AppState>,
    Query(f): Query<PageFilters>,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = signed_in(&state, &headers, "/health") {
        return r.into_response();
    }
    let (minutes, ..) = window(&f);
    let report = match crate::health::report(&state, minutes, 10).await {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    let body = html! {
        h2 { "Sources" }
        div.table-wrap { table {
            caption.muted { "Last " (minutes) " minutes; duplicates since the server started." }
            thead { tr {
                th scope="col" { "Type" } th scope="col" { "Surface" }
                th.num scope="col" { "Events" } th.num scope="col" { "Per s (5 min)" }
                th.num scope="col" { "Last event" } th.num scope="col" { "Lag p50 ms" } th.num scope="col" { "Lag p99 ms" }
                th.num scope="col" { "Late" } th.num scope="col" { "Future" } th.num scope="col" { "Duplicates" }
            } }
            tbody { @for s in &report.sources {
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
            (report.quarantine.unresolved) " not replayed (" code { "sonde quarantine list" } ")." }
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
    Html(
        sonde_ui::page(
            "Data health",
            &NAV,
            "/health",
            filter_form("/health", minutes, None, &[]),
            body,
        )
        .into_string(),
    )
    .into_response()
}

/// The `/v1/latency` query behind a p99 chart.
fn series_url(from: i64, to: i64, step: i64, group_by: &str, surface: Option<&str>) -> String {
    format!(
        "/v1/latency?from={from}&to={to}&step={}m&q=0.99&group_by={group_by}{}",
        step / MINUTE,
        surface
            .map(|s| format!("&surface={}", encode(s)))
            .unwrap_or_default()
    )
}

/// The first experiment the rollups have seen, if any.
fn first_experiment(state: &AppState) -> Option<String> {
    state.store.with_rollups(|r| {
        r.keys()
            .iter()
            .map(|k| k.experiment.clone())
            .find(|e| !e.is_empty())
    })
}

/// Relevance parameters grouping `[from, to)` by the variants of `experiment`.
fn by_variant(
    state: &AppState,
    experiment: Option<String>,
    surface: Option<String>,
    from: i64,
    to: i64,
) -> crate::relevance::RelevanceParams {
    crate::relevance::RelevanceParams {
        surface,
        group_by: Some(
            if experiment.is_some() {
                "variant"
            } else {
                "none"
            }
            .into(),
        ),
        experiment,
        from: Some(from.to_string()),
        to: Some(to.to_string()),
        gains: state.config.gains,
        ..Default::default()
    }
}

/// `GET /relevance`: ranking quality and calibration per variant of the first experiment
/// seen (or `?experiment=`), over the window.
pub async fn get_relevance_page(
    State(state): State<AppState>,
    Query(f): Query<PageFilters>,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = signed_in(&state, &headers, "/relevance") {
        return r.into_response();
    }
    let (minutes, from, to, _) = window(&f);
    let surface = f.surface.clone().filter(|s| !s.is_empty());
    let surfaces = surfaces_of(&state);
    let experiment = f
        .experiment
        .clone()
        .filter(|s| !s.is_empty())
        .or_else(|| first_experiment(&state));
    let params = by_variant(&state, experiment.clone(), surface.clone(), from, to);
    let timeout = state.config.query_timeout;
    let ranking = crate::relevance::relevance_report(&state.store, &params, timeout).await;
    let calibration = crate::relevance::calibration_report(&state.store, &params, timeout).await;
    let body = html! {
        p.muted {
            "Outcomes graded within " (state.config.gains.window_minutes) " minutes of the decision (click 1, long click or cart 2, purchase 3); "
            @if let Some(e) = &experiment { "variants of experiment " code { (e) } "." } @else { "no experiment seen." }
        }
        h2 { "Ranking quality at k = 10" }
        @match &ranking {
            Ok(groups) if !groups.is_empty() => {
                div.table-wrap { table {
                    thead { tr {
                        th scope="col" { "Variant" } th.num scope="col" { "Decisions" } th.num scope="col" { "CTR@10" }
                        th.num scope="col" { "NDCG@10" } th.num scope="col" { "MRR" } th.num scope="col" { "Hit rate@10" }
                    } }
                    tbody { @for g in groups {
                        tr data-group=(g.group) {
                            th scope="row" { (g.group) }
                            td.num data-field="lists" { (number(Some(g.summary.lists as f64), 0)) }
                            td.num data-field="ctr" { (number(Some(g.summary.ctr), 4)) }
                            td.num data-field="ndcg" { (number(Some(g.summary.ndcg), 4)) }
                            td.num { (number(Some(g.summary.mrr), 4)) }
                            td.num { (number(Some(g.summary.hit_rate), 4)) }
                        }
                    } }
                } }
            }
            Ok(_) => { p.muted { "No decisions in this window." } }
            Err(e) => { p.error { (e.message()) } }
        }
        h2 { "Calibration (reliability)" }
        @match &calibration {
            Ok(groups) if !groups.is_empty() => {
                @for g in groups {
                    h3 { (g.group) ": ECE " (number(Some(g.report.ece), 4)) ", Brier " (number(Some(g.report.brier), 4)) }
                    div.table-wrap { table {
                        caption.muted { "Predicted score against the observed click rate, per equal-mass bin." }
                        thead { tr { th.num scope="col" { "Scores" } th.num scope="col" { "Items" } th.num scope="col" { "Predicted" } th.num scope="col" { "Observed" } } }
                        tbody { @for b in &g.report.bins {
                            tr {
                                td.num { (number(Some(b.lower), 3)) "–" (number(Some(b.upper), 3)) }
                                td.num { (number(Some(b.count as f64), 0)) }
                                td.num { (number(Some(b.predicted), 4)) }
                                td.num { (number(Some(b.observed), 4)) }
                            }
                        } }
                    } }
                }
            }
            Ok(_) => { p.muted { "No scored items in this window." } }
            Err(e) => { p.error { (e.message()) } }
        }
        p { a href=(format!("/v1/relevance?from={from}&to={to}{}{}", experiment.as_ref().map(|e| format!("&experiment={}&group_by=variant", encode(e))).unwrap_or_default(), surface.as_ref().map(|s| format!("&surface={}", encode(s))).unwrap_or_default())) { "This page's data (JSON)" } }
    };
    Html(
        sonde_ui::page(
            "Relevance",
            &NAV,
            "/relevance",
            filter_form("/relevance", minutes, surface.as_deref(), &surfaces),
            body,
        )
        .into_string(),
    )
    .into_response()
}

/// "+12.3%" / "−4.0%" / "–" for the change from `before` to `now`.
fn change(now: f64, before: f64) -> String {
    if before > 0.0 && now.is_finite() {
        let c = (now / before - 1.0) * 100.0;
        format!(
            "{}{}%",
            if c >= 0.0 { "+" } else { "−" },
            number(Some(c.abs()), 1)
        )
    } else {
        "–".into()
    }
}

/// `GET /summary`: the headline numbers of the last 24 hours against the 24 before, in
/// plain words.
pub async fn get_summary_page(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if let Err(r) = signed_in(&state, &headers, "/summary") {
        return r.into_response();
    }
    const DAY: i64 = 1440 * MINUTE;
    let to = (now_ms() + MINUTE - 1).div_euclid(MINUTE) * MINUTE;
    let (w_now, w_before, p99_now, p99_before) = state.store.with_rollups(|r| {
        let all = Filter::default();
        (
            r.window(&all, to - DAY, to, None),
            r.window(&all, to - 2 * DAY, to - DAY, None),
            r.sketch(&all, TOTAL, to - DAY, to).quantile(0.99),
            r.sketch(&all, TOTAL, to - 2 * DAY, to - DAY).quantile(0.99),
        )
    });
    let experiment = first_experiment(&state);
    let params = by_variant(&state, experiment.clone(), None, to - DAY, to);
    let groups =
        crate::relevance::relevance_report(&state.store, &params, state.config.query_timeout)
            .await
            .unwrap_or_default();
    let specs = state.alerts.specs().to_vec();
    let evals = crate::alerts::evaluate_all(&specs, &state.store, now_ms());
    let firing: Vec<sonde_latency::AlertState> = state
        .alerts
        .states()
        .into_iter()
        .filter(|a| a.firing)
        .collect();
    let best = groups
        .iter()
        .max_by(|a, b| a.summary.ctr.total_cmp(&b.summary.ctr));
    let worst = groups
        .iter()
        .min_by(|a, b| a.summary.ctr.total_cmp(&b.summary.ctr));
    let body = html! {
        p.muted { "The last 24 hours, compared with the 24 hours before." }
        section.cards {
            div.card {
                div.muted { "Decisions served" }
                div.value data-field="decisions" { (number(Some(w_now.decisions as f64), 0)) }
                div { (change(w_now.decisions as f64, w_before.decisions as f64)) " on the day before" }
            }
            div.card {
                div.muted { "p99 latency" }
                div.value data-field="p99" { (number(p99_now, 0)) " ms" }
                div { "was " (number(p99_before, 0)) " ms" }
            }
            div.card {
                div.muted { "Fallbacks" }
                div.value { (number(Some(100.0 * w_now.fallbacks as f64 / w_now.decisions.max(1) as f64), 2)) "%" }
                div { "of decisions served degraded" }
            }
            div.card {
                div.muted { "Alerts firing" }
                div.value class=(if firing.is_empty() { "ok" } else { "bad" }) { (firing.len()) }
            }
        }
        h2 { "In words" }
        ul {
            li { "The engine served " (number(Some(w_now.decisions as f64), 0)) " decisions, "
                 (change(w_now.decisions as f64, w_before.decisions as f64)) " on the day before." }
            li { "The slowest 1% of decisions took over " (number(p99_now, 0)) " ms (the day before: "
                 (number(p99_before, 0)) " ms)." }
            @for (spec, e) in specs.iter().zip(&evals) {
                li { "Objective “" (crate::alerts::describe(spec)) "”: "
                     (pct(e.attainment.unwrap_or(1.0))) " met, " (pct(e.budget_remaining.max(-9.99))) " of the error budget left." }
            }
            @if let (Some(b), Some(w), Some(e)) = (best, worst, &experiment) {
                @if b.group != w.group {
                    li { "In experiment " code { (e) } ", variant " strong { (b.group) } " has the higher click-through at 10 ("
                         (pct(b.summary.ctr)) " against " (pct(w.summary.ctr)) " for " (w.group) ", "
                         (change(b.summary.ctr, w.summary.ctr)) "). The Relevance page has the detail; significance tests come with the experiments work." }
                }
            }
            @if firing.is_empty() { li.ok { "No alert is firing." } }
            @for a in &firing { li.bad { (a.slo) " is " (a.severity.as_str()) "-level: burning its budget at " (number(Some(a.burn_rate), 1)) "×." } }
        }
    };
    Html(sonde_ui::page("Summary", &NAV, "/summary", html! {}, body).into_string()).into_response()
}
