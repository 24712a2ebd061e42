//! The overview page: traffic, latency against the SLO, CTR and conversion per variant,
//! alerts firing and data freshness, with a one-line verdict per surface.

use std::fmt::Write;

use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::Response;
use maud::html;
use sonde_latency::{Filter, GroupBy, Objective, Severity, TOTAL};
use sonde_ui::{ChartSeries, LineChart, number};

use super::{PageFilters, Rendered, chart_block, choices, filter_form, now_ms, pct};
use crate::AppState;

/// The experiment a page compares the variants of: the filter's, else the first seen.
pub(super) fn experiment_of(state: &AppState, f: &PageFilters) -> Option<String> {
    super::nonempty(&f.experiment).or_else(|| {
        state.store.with_rollups(|r| {
            r.keys()
                .iter()
                .map(|k| k.experiment.clone())
                .find(|e| !e.is_empty())
        })
    })
}

/// `GET /overview`.
pub async fn get_overview(
    State(state): State<AppState>,
    Query(f): Query<PageFilters>,
    headers: HeaderMap,
) -> Response {
    super::cache::serve(&state, &headers, "/overview", &f, 5, render(&state, &f)).await
}

async fn render(state: &AppState, f: &PageFilters) -> Rendered {
    let (minutes, from, to, step) = f.window();
    let now = now_ms();
    let choices = choices(state).await;
    let base = f.rollups();
    let qs = [0.5, 0.95, 0.99];
    let slos = state.alerts.specs();
    let alerts = state.alerts.states();
    let tally = state.tally.snapshot();
    let (rows, series) = state.store.with_rollups(|r| {
        let rows: Vec<(String, sonde_latency::WindowCounts, sonde_latency::Sketch)> = choices
            .surfaces
            .iter()
            .filter(|s| base.surface.as_ref().is_none_or(|x| x == *s))
            .map(|s| {
                let filter = Filter {
                    surface: Some(s.clone()),
                    ..base.clone()
                };
                (
                    s.clone(),
                    r.window(&filter, from, to, None),
                    r.sketch(&filter, TOTAL, from, to),
                )
            })
            .collect();
        let series = r
            .series(&base, TOTAL, from, to, step, GroupBy::None, &qs)
            .unwrap_or_default();
        (rows, series)
    });
    let threshold_of = |s: &str| {
        slos.iter()
            .find(|x| x.kind == Objective::Latency && x.surface.as_deref().is_none_or(|y| y == s))
            .and_then(|x| x.threshold_ms.map(|t| (t, x.target)))
    };
    let firing: Vec<&sonde_latency::AlertState> = alerts.iter().filter(|a| a.firing).collect();
    let surface = f.surface();
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
                            .map(|p| (p.t_ms as f64, p.quantiles.get(i).copied().flatten()))
                            .collect()
                    })
                    .unwrap_or_default(),
            })
            .collect(),
        threshold: surface
            .as_deref()
            .and_then(threshold_of)
            .map(|(t, _)| (t, format!("SLO {} ms", number(Some(t), 0)))),
        x_range: Some((from as f64, to as f64)),
        ..LineChart::default()
    };
    let experiment = experiment_of(state, f);
    let variants = match &experiment {
        Some(e) => {
            let mut p = f.relevance(state, from, to, "variant");
            p.experiment = Some(e.clone());
            Some(
                crate::relevance::relevance_report(&state.store, &p, state.config.query_timeout)
                    .await,
            )
        }
        None => None,
    };
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
                caption.muted { "Last " (minutes) " minutes; latency quantiles within 1%."
                    @if f.segment().is_some() { " Latency is not split by segment: these rows cover every segment." } }
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
        (chart_block("latency", &chart, "/overview", f))
        h2 { "Click-through and conversion by variant" }
        @match (&experiment, &variants) {
            (Some(e), Some(Ok(groups))) if !groups.is_empty() => {
                div.table-wrap { table {
                    caption.muted { "Experiment " code { (e) } "; outcomes within " (state.config.gains.window_minutes)
                        " minutes of the decision. Conversion: a shown item bought." }
                    thead { tr {
                        th scope="col" { "Variant" } th.num scope="col" { "Decisions" }
                        th.num scope="col" { "CTR@10" } th.num scope="col" { "Conversion" }
                    } }
                    tbody { @for g in groups {
                        tr data-variant=(g.group) {
                            th scope="row" { (g.group) }
                            td.num data-field="lists" { (number(Some(g.summary.lists as f64), 0)) }
                            td.num data-field="ctr" { (pct(g.summary.ctr)) }
                            td.num data-field="conversion" { (pct(g.conversion_rate)) }
                        }
                    } }
                } }
            }
            (_, Some(Err(e))) => { p.error { (e.message()) } }
            (Some(_), _) => { p.muted { "No decisions with outcomes in this window." } }
            (None, _) => { p.muted { "No experiment seen yet." } }
        }
    };
    Rendered {
        title: "Overview",
        path: "/overview",
        filters: filter_form("/overview", f, &choices),
        body,
        charts: vec![("latency", chart)],
        live_every_secs: 5,
    }
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
