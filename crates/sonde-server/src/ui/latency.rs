//! The latency page: a quantile (p99 by default) per component and per variant over time, SLOs with their error
//! budget and burn rates, tail attribution by component, and the slowest requests.

use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::Response;
use maud::html;
use sonde_latency::{GroupBy, Severity, TOTAL};
use sonde_ui::{ChartSeries, LineChart, number};

use super::{MINUTE, PageFilters, Rendered, chart_block, choices, filter_form, now_ms, pct};
use crate::AppState;

/// `GET /latency`: a quantile per component and per variant over time, the SLOs with their budget
/// and burn rates, tail attribution, and the slowest requests.
pub async fn get_latency_page(
    State(state): State<AppState>,
    Query(f): Query<PageFilters>,
    headers: HeaderMap,
) -> Response {
    super::cache::serve(&state, &headers, "/latency", &f, 5, render(&state, &f)).await
}

async fn render(state: &AppState, f: &PageFilters) -> Rendered {
    let (_, from, to, step) = f.window();
    let surface = f.surface();
    let choices = choices(state).await;
    let filter = f.rollups();
    let q = f.quantile();
    let label = super::quantile_label(q);
    let (by_component, by_variant) = state.store.with_rollups(|r| {
        (
            r.series(&filter, TOTAL, from, to, step, GroupBy::Component, &[q])
                .unwrap_or_default(),
            r.series(&filter, TOTAL, from, to, step, GroupBy::Variant, &[q])
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
                points: s
                    .points
                    .iter()
                    .map(|p| (p.t_ms as f64, p.quantiles[0]))
                    .collect(),
            })
            .collect(),
        x_range: Some((from as f64, to as f64)),
        ..LineChart::default()
    };
    let component_chart = chart(&format!("{label} latency by component"), &by_component);
    let variant_chart = chart(
        &format!("{label} end-to-end latency by variant"),
        &by_variant,
    );
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
        surface,
        model_version: filter.model_version.clone(),
        experiment: filter.experiment.clone(),
        variant: filter.variant.clone(),
        from: Some(from.to_string()),
        to: Some(to.to_string()),
        ..Default::default()
    };
    let tail = crate::latency::tail(state, &params).await.ok();
    let body = html! {
        @if f.segment().is_some() { p.muted { "Latency is not split by segment: these figures cover every segment." } }
        h2 { (label) " by component" }
        (chart_block("by_component", &component_chart, "/latency", f))
        h2 { (label) " by variant" }
        (chart_block("by_variant", &variant_chart, "/latency", f))
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
    Rendered {
        title: "Latency & SLOs",
        path: "/latency",
        filters: filter_form("/latency", f, &choices),
        body,
        charts: vec![
            ("by_component", component_chart),
            ("by_variant", variant_chart),
        ],
        live_every_secs: 5,
    }
}
