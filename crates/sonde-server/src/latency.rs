//! `GET /v1/latency` (quantile time series from the live rollups) and
//! `GET /v1/latency/tail` (which component makes the tail). See `docs/latency.md`.

use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use sonde_latency::{Exemplar, Filter, GroupBy, Series, TOTAL};
use sonde_store::arrow::array::{Array, RecordBatch};

use crate::columns::{f64_array, f64s, list, utf8_array};
use crate::relevance::{RelevanceParams, time_param};
use crate::{ApiError, AppState, Scope, authorize};

const MINUTE: i64 = 60_000;

/// Query parameters of the latency endpoints.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct LatencyParams {
    /// Only this surface.
    pub surface: Option<String>,
    /// Only this model version.
    pub model_version: Option<String>,
    /// Only decisions of this experiment (their first one).
    pub experiment: Option<String>,
    /// Only this variant of `experiment`.
    pub variant: Option<String>,
    /// Start (RFC 3339 or epoch ms; default one hour before `to`).
    pub from: Option<String>,
    /// End (default now).
    pub to: Option<String>,
    /// Step: `1m` (default), `5m`, `1h`, `1d`, or seconds.
    pub step: Option<String>,
    /// `none` (default), `component`, `surface`, `model`, `variant`.
    pub group_by: Option<String>,
    /// Quantiles, comma-separated (default `0.5,0.95,0.99,0.999`); for `/tail` the one
    /// quantile above which decisions are the tail (default 0.99).
    pub q: Option<String>,
    /// Component of the series (default `total`, end to end).
    pub component: Option<String>,
}

fn invalid(message: String) -> ApiError {
    ApiError::bad_request("invalid_parameter", message)
}

impl LatencyParams {
    fn filter(&self) -> Result<Filter, ApiError> {
        if self.variant.is_some() && self.experiment.is_none() {
            return Err(ApiError::bad_request(
                "missing_parameter",
                "variants belong to an experiment: add experiment=<id>",
            ));
        }
        Ok(Filter {
            surface: self.surface.clone(),
            model_version: self.model_version.clone(),
            experiment: self.experiment.clone(),
            variant: self.variant.clone(),
        })
    }

    /// `[from, to)` aligned to whole minutes.
    fn range(&self) -> Result<(i64, i64), ApiError> {
        let now = chrono::Utc::now().timestamp_millis();
        let to = match &self.to {
            Some(v) => time_param("to", v)?,
            None => now,
        };
        let to = (to + MINUTE - 1).div_euclid(MINUTE) * MINUTE;
        let from = match &self.from {
            Some(v) => time_param("from", v)?,
            None => to - 60 * MINUTE,
        };
        let from = from.div_euclid(MINUTE) * MINUTE;
        if from >= to {
            return Err(invalid(format!("from ({from}) is not before to ({to})")));
        }
        Ok((from, to))
    }

    fn step(&self) -> Result<i64, ApiError> {
        let Some(s) = self.step.as_deref().map(str::trim) else {
            return Ok(MINUTE);
        };
        let (num, unit) = match s.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
            Some((i, _)) => (&s[..i], &s[i..]),
            None => (s, "s"),
        };
        let n: i64 = num
            .parse()
            .map_err(|_| invalid(format!("step={s:?} is not like 1m, 5m, 1h, 1d or 60")))?;
        let ms = match unit {
            "s" => n * 1000,
            "m" => n * MINUTE,
            "h" => n * 60 * MINUTE,
            "d" => n * 24 * 60 * MINUTE,
            _ => return Err(invalid(format!("step={s:?}: unit is s, m, h or d"))),
        };
        if ms < MINUTE || ms % MINUTE != 0 {
            return Err(invalid(format!(
                "step={s:?}: rollups are per minute; use whole minutes"
            )));
        }
        Ok(ms)
    }

    fn quantiles(&self, default: &[f64]) -> Result<Vec<f64>, ApiError> {
        let Some(s) = &self.q else {
            return Ok(default.to_vec());
        };
        s.split(',')
            .map(|x| {
                x.trim()
                    .parse::<f64>()
                    .ok()
                    .filter(|q| (0.0..=1.0).contains(q))
                    .ok_or_else(|| invalid(format!("q={x:?} is not a number in [0, 1]")))
            })
            .collect()
    }
}

/// Response of `GET /v1/latency`.
#[derive(Debug, Serialize)]
pub struct LatencyResponse {
    /// Start (epoch ms).
    pub from: i64,
    /// End (epoch ms, exclusive).
    pub to: i64,
    /// Step (ms).
    pub step_ms: i64,
    /// Component of the series (or `by_component`).
    pub component: String,
    /// Quantiles of each point, in this order.
    pub quantiles: Vec<f64>,
    /// The slowest decisions of the whole range.
    pub exemplars: Vec<Exemplar>,
    /// One series per group.
    pub series: Vec<Series>,
}

/// `GET /v1/latency`.
pub async fn get_latency(
    State(state): State<AppState>,
    Query(params): Query<LatencyParams>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    authorize(&state, &headers, Scope::Read)?;
    let filter = params.filter()?;
    let (from, to) = params.range()?;
    let step = params.step()?;
    let qs = params.quantiles(&[0.5, 0.95, 0.99, 0.999])?;
    let group_by = GroupBy::parse(params.group_by.as_deref().unwrap_or("none"))
        .map_err(|e| invalid(e.to_string()))?;
    let component = params.component.clone().unwrap_or_else(|| TOTAL.into());
    let series = state
        .store
        .with_rollups(|r| r.series(&filter, &component, from, to, step, group_by, &qs))
        .map_err(|e| invalid(e.to_string()))?;
    let mut exemplars: Vec<Exemplar> = series
        .iter()
        .filter(|s| group_by != GroupBy::Component || s.group == TOTAL)
        .flat_map(|s| s.points.iter().flat_map(|p| p.exemplars.iter().cloned()))
        .collect();
    exemplars.sort_by(|a, b| b.latency_ms.total_cmp(&a.latency_ms));
    exemplars.truncate(10);
    Ok(axum::Json(LatencyResponse {
        from,
        to,
        step_ms: step,
        component: if group_by == GroupBy::Component {
            "by_component".into()
        } else {
            component
        },
        quantiles: qs,
        exemplars,
        series,
    })
    .into_response())
}

/// One component's part of the tail.
#[derive(Debug, Serialize)]
pub struct ComponentShare {
    /// Component name (`unattributed`: end-to-end time no component reports).
    pub component: String,
    /// Mean time in tail decisions.
    pub tail_mean_ms: f64,
    /// Share of the tail decisions' end-to-end time.
    pub tail_share: f64,
    /// Mean time in the other decisions.
    pub body_mean_ms: f64,
    /// Share of the other decisions' end-to-end time.
    pub body_share: f64,
    /// `tail_mean_ms − body_mean_ms`: how much slower this component is in the tail.
    pub excess_ms: f64,
}

/// Response of `GET /v1/latency/tail`.
#[derive(Debug, Serialize)]
pub struct TailResponse {
    /// Start (epoch ms).
    pub from: i64,
    /// End (epoch ms, exclusive).
    pub to: i64,
    /// Quantile that starts the tail.
    pub q: f64,
    /// End-to-end latency at that quantile (exact).
    pub threshold_ms: Option<f64>,
    /// Decisions with an end-to-end latency in the range.
    pub decisions: u64,
    /// Of those, above the threshold.
    pub tail_decisions: u64,
    /// Components, largest share of the tail first.
    pub components: Vec<ComponentShare>,
}

/// Decisions on one side of the tail's threshold, with their time per component (indexed
/// like [`Decisions::names`]).
#[derive(Default)]
struct Side {
    n: u64,
    total_ms: f64,
    by_component: Vec<f64>,
}

impl Side {
    fn mean(&self, c: usize) -> f64 {
        match self.n {
            0 => 0.0,
            n => self.by_component.get(c).copied().unwrap_or(0.0) / n as f64,
        }
    }

    fn share(&self, c: usize) -> f64 {
        if self.total_ms > 0.0 {
            self.by_component.get(c).copied().unwrap_or(0.0) / self.total_ms
        } else {
            0.0
        }
    }
}

/// The end-to-end latency and component times of the decisions in a range, read once.
#[derive(Default)]
struct Decisions {
    /// Component names; `unattributed` (time no component accounts for: network, queueing)
    /// is one of them as soon as a decision is read.
    names: Vec<String>,
    /// Per decision: total, and its range in `components`.
    totals: Vec<(f64, std::ops::Range<usize>)>,
    /// (component index, ms) of every decision, one after another.
    components: Vec<(usize, f64)>,
}

impl Decisions {
    fn index(&mut self, name: &str) -> usize {
        match self.names.iter().position(|n| n == name) {
            Some(i) => i,
            None => {
                self.names.push(name.to_string());
                self.names.len() - 1
            }
        }
    }

    /// Splits the decisions at `threshold` (above it: the tail), components summed per side.
    fn sides(&self, threshold: f64) -> (Side, Side) {
        let side = || Side {
            by_component: vec![0.0; self.names.len()],
            ..Side::default()
        };
        let (mut tail, mut body) = (side(), side());
        let unattributed = self.names.iter().position(|n| n == "unattributed");
        for (total, range) in &self.totals {
            let s = if *total > threshold {
                &mut tail
            } else {
                &mut body
            };
            s.n += 1;
            s.total_ms += total;
            let mut attributed = 0.0;
            for (c, ms) in &self.components[range.clone()] {
                s.by_component[*c] += ms;
                attributed += ms;
            }
            if let Some(u) = unattributed {
                s.by_component[u] += (total - attributed).max(0.0);
            }
        }
        (tail, body)
    }
}

/// `GET /v1/latency/tail`: for decisions above the q-quantile of end-to-end latency, the
/// share of their time each component accounts for, next to the same share in the rest.
pub async fn get_tail(
    State(state): State<AppState>,
    Query(params): Query<LatencyParams>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    authorize(&state, &headers, Scope::Read)?;
    Ok(axum::Json(tail(&state, &params).await?).into_response())
}

/// Tail attribution for `params` (shared by the API and the dashboard).
pub(crate) async fn tail(
    state: &AppState,
    params: &LatencyParams,
) -> Result<TailResponse, ApiError> {
    params.filter()?;
    let (from, to) = params.range()?;
    let q = match params.quantiles(&[0.99])?.as_slice() {
        [q] => *q,
        _ => {
            return Err(invalid(
                "tail attribution takes one quantile, e.g. q=0.99".into(),
            ));
        }
    };
    let where_clause = decision_filter(params, from, to)?;
    let decisions = read_decisions(state, &where_clause).await?;
    let threshold = exact_quantile(&decisions, q);
    let (tail, body) = match threshold {
        None => (Side::default(), Side::default()),
        Some(threshold) => decisions.sides(threshold),
    };
    let mut components: Vec<ComponentShare> = decisions
        .names
        .iter()
        .enumerate()
        .map(|(c, name)| ComponentShare {
            component: name.clone(),
            tail_mean_ms: tail.mean(c),
            tail_share: tail.share(c),
            body_mean_ms: body.mean(c),
            body_share: body.share(c),
            excess_ms: tail.mean(c) - body.mean(c),
        })
        .collect();
    // By name first, so components with equal tail shares keep a stable order.
    components.sort_by(|a, b| a.component.cmp(&b.component));
    components.sort_by(|a, b| b.tail_share.total_cmp(&a.tail_share));
    Ok(TailResponse {
        from,
        to,
        q,
        threshold_ms: threshold,
        decisions: tail.n + body.n,
        tail_decisions: tail.n,
        components,
    })
}

/// The WHERE clause over `decisions i` for the parameters' filters and range.
fn decision_filter(params: &LatencyParams, from: i64, to: i64) -> Result<String, ApiError> {
    let filters = RelevanceParams {
        surface: params.surface.clone(),
        model_version: params.model_version.clone(),
        experiment: params.experiment.clone(),
        variant: params.variant.clone(),
        from: Some(from.to_string()),
        to: Some(to.to_string()),
        ..RelevanceParams::default()
    };
    let mut where_clause = filters.where_clause()?;
    if let (Some(x), None) = (&params.experiment, &params.variant) {
        where_clause.push_str(&format!(
            " AND i.experiments[{}] IS NOT NULL",
            crate::relevance::lit(x)
        ));
    }
    where_clause.push_str(" AND i.latency_total_ms IS NOT NULL");
    Ok(where_clause)
}

/// The exact q-quantile of end-to-end latency (the sample of rank ⌊q·(n−1)⌋): the tail's
/// boundary must not move with the sketch's 1% where many decisions share a value.
fn exact_quantile(d: &Decisions, q: f64) -> Option<f64> {
    if d.totals.is_empty() {
        return None;
    }
    let mut totals: Vec<f64> = d.totals.iter().map(|(t, _)| *t).collect();
    let rank = (q * (totals.len() - 1) as f64).floor() as usize;
    let (_, v, _) = totals.select_nth_unstable_by(rank, f64::total_cmp);
    Some(*v)
}

/// The decisions of `where_clause`: totals and component times, in one scan.
async fn read_decisions(state: &AppState, where_clause: &str) -> Result<Decisions, ApiError> {
    let sql = format!(
        "SELECT i.latency_total_ms, map_keys(i.latency_components), \
         map_values(i.latency_components) FROM decisions i WHERE {where_clause}"
    );
    let mut d = Decisions::default();
    state
        .store
        .scan(&sql, state.config.query_timeout, |batch: &RecordBatch| {
            let totals = f64s(batch, 0)?;
            let (keys, values) = (list(batch, 1)?, list(batch, 2)?);
            // The lists' flat children, read once per batch (not one cast per row).
            let (names, ms) = (utf8_array(keys.values())?, f64_array(values.values())?);
            let (ko, vo) = (keys.value_offsets(), values.value_offsets());
            if batch.num_rows() > 0 {
                d.index("unattributed");
            }
            for row in 0..batch.num_rows() {
                let start = d.components.len();
                if keys.is_valid(row) && values.is_valid(row) {
                    let (k, v) = (ko[row] as usize..ko[row + 1] as usize, vo[row] as usize);
                    for (j, at) in k.enumerate() {
                        let c = d.index(names.value(at));
                        d.components.push((c, ms.value(v + j)));
                    }
                }
                d.totals
                    .push((totals.value(row), start..d.components.len()));
            }
            Ok(())
        })
        .await?;
    Ok(d)
}
