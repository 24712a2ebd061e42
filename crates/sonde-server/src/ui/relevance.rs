//! The relevance page (ranking quality by variant and over time, reliability diagram, CTR by
//! position with examination, stability, diversity, exposure fairness, drift) and the
//! executive summary.

use std::collections::BTreeMap;

use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::Response;
use maud::html;
use sonde_latency::TOTAL;
use sonde_ui::{ChartSeries, LineChart, XAxis, number};

use super::overview::experiment_of;
use super::{PageFilters, Rendered, chart_block, choices, filter_form, now_ms, pct};
use crate::exposure::{
    Fairness, FairnessOptions, GroupDiversity, GroupStability, diversity_attribute, diversity_of,
    fairness_of, stability_of,
};
use crate::frame::ItemFrame;
use crate::position::{GroupPositionBias, PositionOptions, position_bias_of};
use crate::relevance::{CalibrationOptions, GroupCalibration, RelevanceParams, calibration_of};
use crate::{ApiError, AppState};

/// `YYYY-MM-DD HH:MM:SS` or `YYYY-MM-DDTHH:MM:SS` (how a truncated timestamp prints) as
/// epoch ms.
fn bucket_ms(s: &str) -> Option<f64> {
    let s = s.replace('T', " ");
    let head = s.get(..19)?;
    chrono::NaiveDateTime::parse_from_str(head, "%Y-%m-%d %H:%M:%S")
        .ok()
        .map(|t| t.and_utc().timestamp_millis() as f64)
}

/// One line per variant of `(variant | bucket, value)` rows.
fn over_time(
    groups: &[crate::relevance::GroupRanking],
    value: impl Fn(&crate::relevance::GroupRanking) -> f64,
) -> Vec<ChartSeries> {
    let mut lines: BTreeMap<String, Vec<(f64, Option<f64>)>> = BTreeMap::new();
    for g in groups {
        let (variant, bucket) = g
            .group
            .rsplit_once(" | ")
            .unwrap_or(("all", g.group.as_str()));
        if let Some(t) = bucket_ms(bucket) {
            lines
                .entry(variant.to_string())
                .or_default()
                .push((t, Some(value(g))));
        }
    }
    lines
        .into_iter()
        .map(|(label, mut points)| {
            points.sort_by(|a, b| a.0.total_cmp(&b.0));
            ChartSeries { label, points }
        })
        .collect()
}

/// The analyses of the relevance page computed from its item frame.
struct FrameAnalyses {
    calibration: Result<Vec<GroupCalibration>, ApiError>,
    position: Result<Vec<GroupPositionBias>, ApiError>,
    stability: Result<Vec<GroupStability>, ApiError>,
    diversity: Result<Vec<GroupDiversity>, ApiError>,
    fairness: Result<Fairness, ApiError>,
}

impl FrameAnalyses {
    /// All five, in two threads: position bias and calibration (the heavier) in one, the
    /// rest in the other.
    fn of(frame: &ItemFrame, p: &RelevanceParams) -> Self {
        std::thread::scope(|s| {
            let first = s.spawn(|| {
                (
                    PositionOptions::of(p).map(|o| position_bias_of(frame, o)),
                    CalibrationOptions::of(p).and_then(|o| calibration_of(frame, o)),
                )
            });
            let stability = Ok(stability_of(frame, p.k()));
            let diversity = diversity_attribute(p).map(|a| diversity_of(frame, a));
            let fairness = FairnessOptions::of(p).and_then(|o| fairness_of(frame, &o));
            let (position, calibration) = first.join().unwrap_or_else(|_| {
                let e = ApiError::internal("an analysis panicked");
                (Err(e.clone()), Err(e))
            });
            FrameAnalyses {
                calibration,
                position,
                stability,
                diversity,
                fairness,
            }
        })
    }

    /// The same error for each.
    fn failed(e: &ApiError) -> Self {
        FrameAnalyses {
            calibration: Err(e.clone()),
            position: Err(e.clone()),
            stability: Err(e.clone()),
            diversity: Err(e.clone()),
            fairness: Err(e.clone()),
        }
    }
}

/// `GET /relevance`.
pub async fn get_relevance_page(
    State(state): State<AppState>,
    Query(f): Query<PageFilters>,
    headers: HeaderMap,
) -> Response {
    super::cache::serve(
        &state,
        &headers,
        "/relevance",
        &f,
        60,
        render_relevance(&state, &f),
    )
    .await
}

async fn render_relevance(state: &AppState, f: &PageFilters) -> Rendered {
    let (minutes, from, to, _) = f.window();
    let choices = choices(state).await;
    let experiment = experiment_of(state, f);
    let by = if experiment.is_some() {
        "variant"
    } else {
        "none"
    };
    let bucket = if minutes <= 120 {
        "minute"
    } else if minutes <= 2 * 1440 {
        "hour"
    } else {
        "day"
    };
    let params = |group_by: &str| {
        let mut p = f.relevance(state, from, to, group_by);
        p.experiment = experiment.clone();
        p
    };
    let timeout = state.config.query_timeout;
    let store = &state.store;
    let (p_rank, p_time, p_drift) = (params(by), params(&format!("{by},{bucket}")), {
        let mut p = params("none");
        p.reference_from = Some((2 * from - to).to_string());
        p.reference_to = Some(from.to_string());
        p
    });
    // The ranking comes from the live sums; the other analyses share one read of the window.
    let (ranking, timeline, frame, drift) = tokio::join!(
        crate::relevance::relevance_report(store, &p_rank, timeout),
        crate::relevance::relevance_report(store, &p_time, timeout),
        ItemFrame::fetch(store, &p_rank, timeout),
        crate::drift::drift_report(store, &p_drift, timeout),
    );
    let FrameAnalyses {
        calibration,
        position,
        stability,
        diversity,
        fairness,
    } = match frame {
        Ok(frame) => {
            let p = p_rank.clone();
            // Pure computation, seconds over long windows: off the async workers, on both cores.
            tokio::task::spawn_blocking(move || FrameAnalyses::of(&frame, &p))
                .await
                .unwrap_or_else(|e| FrameAnalyses::failed(&ApiError::internal(e.to_string())))
        }
        Err(e) => FrameAnalyses::failed(&e),
    };
    let timeline = timeline.unwrap_or_default();
    let ndcg_chart = LineChart {
        title: format!("NDCG@10 by {by} and {bucket}"),
        unit: "NDCG@10".into(),
        series: over_time(&timeline, |g| g.summary.ndcg),
        x_range: Some((from as f64, to as f64)),
        ..LineChart::default()
    };
    let ctr_chart = LineChart {
        title: format!("CTR@10 by {by} and {bucket}"),
        unit: "CTR@10".into(),
        series: over_time(&timeline, |g| g.summary.ctr),
        x_range: Some((from as f64, to as f64)),
        ..LineChart::default()
    };
    let reliability = LineChart {
        title: "Reliability diagram".into(),
        unit: "observed click rate".into(),
        series: calibration
            .as_ref()
            .map(|groups| {
                groups
                    .iter()
                    .map(|g| ChartSeries {
                        label: g.group.clone(),
                        points: g
                            .report
                            .bins
                            .iter()
                            .map(|b| (b.predicted, Some(b.observed)))
                            .collect(),
                    })
                    .collect()
            })
            .unwrap_or_default(),
        x: XAxis::Number {
            name: "mean predicted score".into(),
        },
        markers: true,
        diagonal: true,
        ..LineChart::default()
    };
    let examination = LineChart {
        title: "CTR and estimated examination by position".into(),
        unit: "rate".into(),
        series: position
            .as_ref()
            .map(|groups| {
                groups
                    .iter()
                    .flat_map(|g| {
                        [
                            ChartSeries {
                                label: format!("{} CTR", g.group),
                                points: g
                                    .positions
                                    .iter()
                                    .map(|r| (r.position as f64, Some(r.ctr)))
                                    .collect(),
                            },
                            ChartSeries {
                                label: format!("{} examination", g.group),
                                points: g
                                    .positions
                                    .iter()
                                    .map(|r| (r.position as f64, r.examination))
                                    .collect(),
                            },
                        ]
                    })
                    .collect()
            })
            .unwrap_or_default(),
        x: XAxis::Number {
            name: "position".into(),
        },
        markers: true,
        ..LineChart::default()
    };
    let error = |e: &crate::error::ApiError| html! { p.error { (e.message()) } };
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
                        th.num scope="col" { "Conversion" }
                    } }
                    tbody { @for g in groups {
                        tr data-group=(g.group) {
                            th scope="row" { (g.group) }
                            td.num data-field="lists" { (number(Some(g.summary.lists as f64), 0)) }
                            td.num data-field="ctr" { (number(Some(g.summary.ctr), 4)) }
                            td.num data-field="ndcg" { (number(Some(g.summary.ndcg), 4)) }
                            td.num { (number(Some(g.summary.mrr), 4)) }
                            td.num { (number(Some(g.summary.hit_rate), 4)) }
                            td.num data-field="conversion" { (pct(g.conversion_rate)) }
                        }
                    } }
                } }
            }
            Ok(_) => { p.muted { "No decisions in this window." } }
            Err(e) => { (error(e)) }
        }
        h2 { "Over time" }
        (chart_block("ndcg", &ndcg_chart, "/relevance", f))
        (chart_block("ctr", &ctr_chart, "/relevance", f))
        h2 { "Calibration" }
        @match &calibration {
            Ok(groups) if !groups.is_empty() => {
                p { @for g in groups { span data-calibration=(g.group) { (g.group) ": ECE " (number(Some(g.report.ece), 4)) ", Brier " (number(Some(g.report.brier), 4)) ". " } } }
                (chart_block("reliability", &reliability, "/relevance", f))
            }
            Ok(_) => { p.muted { "No scored items in this window." } }
            Err(e) => { (error(e)) }
        }
        h2 { "Position bias" }
        @match &position {
            Ok(groups) if !groups.is_empty() => {
                p.muted { "Examination: the probability a user looks at a position, from swap interventions where decisions flag them, else estimated by EM. "
                    @for g in groups { (g.group) ": propensity-weighted CTR " (number(g.ipw_ctr, 4)) ". " } }
                (chart_block("position", &examination, "/relevance", f))
            }
            Ok(_) => { p.muted { "No impressions in this window." } }
            Err(e) => { (error(e)) }
        }
        h2 { "Stability and diversity" }
        div.table-wrap { table {
            thead { tr {
                th scope="col" { "Variant" } th.num scope="col" { "RBO" } th.num scope="col" { "Jaccard@10" }
                th.num scope="col" { "Intra-list diversity" } th.num scope="col" { "Catalog coverage" }
                th.num scope="col" { "Exposure Gini" } th.num scope="col" { "Novelty (bits)" }
            } }
            tbody {
                @let st = stability.as_ref().map(|v| v.as_slice()).unwrap_or(&[]);
                @for d in diversity.as_ref().map(|v| v.as_slice()).unwrap_or(&[]) {
                    @let s = st.iter().find(|s| s.group == d.group);
                    tr data-group=(d.group) {
                        th scope="row" { (d.group) }
                        td.num data-field="rbo" { (number(s.map(|s| s.rbo), 3)) }
                        td.num { (number(s.map(|s| s.jaccard), 3)) }
                        td.num data-field="ild" { (number(Some(d.intra_list_diversity), 3)) }
                        td.num { (pct(d.catalog_coverage)) }
                        td.num { (number(Some(d.exposure_gini), 3)) }
                        td.num { (number(Some(d.novelty), 2)) }
                    }
                }
            }
        } }
        @if let Err(e) = &stability { (error(e)) }
        @if let Err(e) = &diversity { (error(e)) }
        h2 { "Exposure fairness by provider" }
        @match &fairness {
            Ok((groups, _)) => {
                @for g in groups {
                    h3 { (g.group) ": " (pct(g.share_within_band)) " of providers within the 0.8–1.25 band" }
                    div.table-wrap { table {
                        thead { tr { th scope="col" { "Provider" } th.num scope="col" { "Exposure share" } th.num scope="col" { "Outcome share" } th.num scope="col" { "Disparity" } } }
                        tbody { @for x in &g.exposure {
                            tr {
                                th scope="row" { (x.group) }
                                td.num { (pct(x.exposure_share)) }
                                td.num { (pct(x.outcome_share)) }
                                td.num class=(if x.within_band == Some(false) { "num warn" } else { "num" }) { (number(x.disparity, 2)) }
                            }
                        } }
                    } }
                }
            }
            Err(e) => { (error(e)) }
        }
        h2 { "Drift against the previous " (minutes) " minutes" }
        @match &drift {
            Ok(cols) => {
                div.table-wrap { table {
                    thead { tr { th scope="col" { "Column" } th.num scope="col" { "Reference n" } th.num scope="col" { "Current n" }
                        th.num scope="col" { "KS / JS" } th.num scope="col" { "PSI" } th scope="col" { "Drifted" } } }
                    tbody { @for c in cols {
                        tr data-column=(c.column) {
                            th scope="row" { code { (c.column) } }
                            td.num { (number(Some(c.n_reference as f64), 0)) }
                            td.num { (number(Some(c.n_current as f64), 0)) }
                            td.num { (number(c.numeric.as_ref().map(|n| n.ks).or(c.jensen_shannon), 3)) }
                            td.num { (number(c.numeric.as_ref().map(|n| n.psi).or(c.psi), 3)) }
                            td class=(if c.drifted { "bad" } else { "ok" }) { (if c.drifted { "yes" } else { "no" }) @if let Some(n) = &c.note { " (" (n) ")" } }
                        }
                    } }
                } }
            }
            Err(e) => { (error(e)) }
        }
        p { a href=(format!("/v1/relevance?from={from}&to={to}{}", experiment.as_ref().map(|e| format!("&experiment={}&group_by=variant", super::encode(e))).unwrap_or_default())) { "The ranking table's data (JSON API)" } }
    };
    Rendered {
        title: "Relevance",
        path: "/relevance",
        filters: filter_form("/relevance", f, &choices),
        body,
        charts: vec![
            ("ndcg", ndcg_chart),
            ("ctr", ctr_chart),
            ("reliability", reliability),
            ("position", examination),
        ],
        live_every_secs: 60,
    }
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
pub async fn get_summary_page(
    State(state): State<AppState>,
    Query(mut f): Query<PageFilters>,
    headers: HeaderMap,
) -> Response {
    // A day against the day before, unless the filter says otherwise.
    f.minutes.get_or_insert(1440);
    super::cache::serve(
        &state,
        &headers,
        "/summary",
        &f,
        60,
        render_summary(&state, &f),
    )
    .await
}

async fn render_summary(state: &AppState, f: &PageFilters) -> Rendered {
    let (minutes, from, to, _) = f.window();
    let span = to - from;
    let choices = choices(state).await;
    let filter = f.rollups();
    let (w_now, w_before, p99_now, p99_before) = state.store.with_rollups(|r| {
        (
            r.window(&filter, from, to, None),
            r.window(&filter, from - span, from, None),
            r.sketch(&filter, TOTAL, from, to).quantile(0.99),
            r.sketch(&filter, TOTAL, from - span, from).quantile(0.99),
        )
    });
    let experiment = experiment_of(state, f);
    let params = |from: i64, to: i64| {
        let mut p = f.relevance(
            state,
            from,
            to,
            if experiment.is_some() {
                "variant"
            } else {
                "none"
            },
        );
        p.experiment = experiment.clone();
        p
    };
    let timeout = state.config.query_timeout;
    let (p_now, p_before) = (params(from, to), params(from - span, from));
    let (groups, groups_before) = tokio::join!(
        crate::relevance::relevance_report(&state.store, &p_now, timeout),
        crate::relevance::relevance_report(&state.store, &p_before, timeout),
    );
    let (groups, groups_before) = (
        groups.unwrap_or_default(),
        groups_before.unwrap_or_default(),
    );
    let period = period_words(minutes);
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
    let ctr_before = |g: &str| {
        groups_before
            .iter()
            .find(|b| b.group == g)
            .map(|b| b.summary.ctr)
    };
    let body = html! {
        p.muted { "The last " (period) ", compared with the " (period) " before"
            @if f.segment().is_some() { "; latency covers every segment" } "." }
        section.cards {
            div.card {
                div.muted { "Decisions served" }
                div.value data-field="decisions" { (number(Some(w_now.decisions as f64), 0)) }
                div { (change(w_now.decisions as f64, w_before.decisions as f64)) " on the " (period) " before" }
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
                 (change(w_now.decisions as f64, w_before.decisions as f64)) " on the " (period) " before." }
            li { "The slowest 1% of decisions took over " (number(p99_now, 0)) " ms (the " (period) " before: "
                 (number(p99_before, 0)) " ms)." }
            @for g in &groups {
                li data-variant=(g.group) { @if experiment.is_some() { "Variant " strong { (g.group) } ": " } @else { "All traffic: " }
                    "click-through at 10 " span data-field="ctr" { (pct(g.summary.ctr)) }
                    @if let Some(b) = ctr_before(&g.group) { " (" (change(g.summary.ctr, b)) " on the " (period) " before)" }
                    ", conversion " (pct(g.conversion_rate)) "." }
            }
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
    Rendered {
        title: "Summary",
        path: "/summary",
        filters: filter_form("/summary", f, &choices),
        body,
        charts: Vec::new(),
        live_every_secs: 60,
    }
}

/// "24 hours", "hour", "7 days": a window in words.
fn period_words(minutes: i64) -> String {
    match minutes {
        60 => "hour".into(),
        m if m % 1440 == 0 && m > 1440 => format!("{} days", m / 1440),
        m if m % 60 == 0 => format!("{} hours", m / 60),
        m => format!("{m} minutes"),
    }
}
