//! `GET /v1/relevance` (ranking quality) and `GET /v1/calibration` (do scores mean what they
//! claim): outcomes graded by SQL over the store, metrics by `sonde-relevance`.
//!
//! An item's grade is the best outcome that followed it within the window (default 30 min)
//! with the same `request_id` and `item_id`: click 1, click with dwell ≥ 30 s 2, add to cart
//! 2, purchase of the item 3. Filters and the grouping are query parameters; see
//! `docs/relevance.md`.

use std::collections::BTreeMap;
use std::time::Instant;

use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sonde_relevance::{Binning, ListSums, LiveItem, RankingSummary, calibration};
use sonde_store::Store;
use sonde_store::arrow::array::RecordBatch;

use crate::columns::{i64_array, list, utf8};
use crate::frame::ItemFrame;
use crate::{ApiError, AppState, Scope, authorize};

/// Filters, grouping and options of the relevance endpoints.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct RelevanceParams {
    /// Only this surface.
    pub surface: Option<String>,
    /// Only this model version.
    pub model_version: Option<String>,
    /// Experiment whose variants `group_by=variant` and `variant=` refer to.
    pub experiment: Option<String>,
    /// Only this variant of `experiment`.
    pub variant: Option<String>,
    /// Only this device segment.
    pub device: Option<String>,
    /// Only this region segment.
    pub region: Option<String>,
    /// Decisions at or after (RFC 3339 or epoch ms).
    pub from: Option<String>,
    /// Decisions before (RFC 3339 or epoch ms).
    pub to: Option<String>,
    /// `none` (default), `surface`, `model`, `variant`, `device`, `region`, `minute`, `hour`, `day`,
    /// or several joined by commas (`variant,day`): groups are then named `a | b`.
    pub group_by: Option<String>,
    /// Cutoff of the @k metrics (default 10).
    pub k: Option<usize>,
    /// Minutes after a decision in which outcomes count (default 30).
    pub window_minutes: Option<u32>,
    /// Calibration bins (default 10).
    pub bins: Option<usize>,
    /// `equal_mass` (default) or `equal_width`.
    pub binning: Option<String>,
    /// Calibration: the outcome scores are held against, `click` (default) or `conversion`
    /// (a purchase of the item within the window).
    pub outcome: Option<String>,
    /// Diversity and fairness: the item attribute, `category` or `provider` (default
    /// `category` for diversity, `provider` for fairness).
    pub attribute: Option<String>,
    /// Fairness: device or region, for outcome rates per user segment.
    pub segment: Option<String>,
    /// Fairness: the segment the others are compared with (default: the largest).
    pub reference_segment: Option<String>,
    /// Feature audit: time bucket, `hour` or `day` (default).
    pub bucket: Option<String>,
    /// Position bias: score bins per model that key relevance in the EM (default 20).
    pub score_bins: Option<usize>,
    /// The project's gains (from the server configuration, not the query string).
    #[serde(skip)]
    pub gains: Gains,
    /// Drift: start of the reference window (RFC 3339 or epoch ms).
    pub reference_from: Option<String>,
    /// Drift: end of the reference window.
    pub reference_to: Option<String>,
    /// Ranking: `true` runs the SQL join even where the live sums could answer.
    pub exact: Option<bool>,
}

pub use sonde_relevance::Gains;

/// A string literal for SQL.
pub(crate) fn lit(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// A time parameter (RFC 3339 or epoch milliseconds) in epoch milliseconds.
pub(crate) fn time_param(name: &str, v: &str) -> Result<i64, ApiError> {
    v.trim()
        .parse::<i64>()
        .ok()
        .or_else(|| sonde_model::parse_time_str(v.trim()))
        .filter(|t| chrono::DateTime::from_timestamp_millis(*t).is_some())
        .ok_or_else(|| {
            ApiError::bad_request(
                "invalid_parameter",
                format!("{name}={v:?} is neither RFC 3339 nor epoch milliseconds"),
            )
        })
}

/// A timestamp parameter as a SQL literal.
fn time_lit(name: &str, v: &str) -> Result<String, ApiError> {
    Ok(ts_lit(time_param(name, v)?))
}

/// Epoch milliseconds as a SQL timestamp literal.
pub(crate) fn ts_lit(ms: i64) -> String {
    let t = chrono::DateTime::from_timestamp_millis(ms).unwrap_or_default();
    format!(
        "CAST({} AS TIMESTAMP)",
        lit(&t.format("%Y-%m-%dT%H:%M:%S%.3f").to_string())
    )
}

impl RelevanceParams {
    fn experiment(&self) -> Result<&str, ApiError> {
        self.experiment.as_deref().ok_or_else(|| {
            ApiError::bad_request(
                "missing_parameter",
                "variants belong to an experiment: add experiment=<id>",
            )
        })
    }

    /// The WHERE clause over `decision_items` (or `decisions`) aliased `i`.
    pub(crate) fn where_clause(&self) -> Result<String, ApiError> {
        let mut conds = vec!["TRUE".to_string()];
        for (col, v) in [
            ("i.surface", &self.surface),
            ("i.model_version", &self.model_version),
            ("i.device", &self.device),
            ("i.region", &self.region),
        ] {
            if let Some(v) = v {
                conds.push(format!("{col} = {}", lit(v)));
            }
        }
        if let Some(v) = &self.variant {
            conds.push(format!(
                "i.experiments[{}] = {}",
                lit(self.experiment()?),
                lit(v)
            ));
        }
        if let Some(v) = &self.from {
            conds.push(format!("i.event_time >= {}", time_lit("from", v)?));
        }
        if let Some(v) = &self.to {
            conds.push(format!("i.event_time < {}", time_lit("to", v)?));
        }
        Ok(conds.join(" AND "))
    }

    /// `col` within the window, its end moved `after_minutes` later (outcomes follow their
    /// decision): lets the outcome and decision scans skip files outside the window.
    pub(crate) fn time_bounds(&self, col: &str, after_minutes: u32) -> Result<String, ApiError> {
        let mut conds = vec!["TRUE".to_string()];
        if let Some(v) = &self.from {
            conds.push(format!("{col} >= {}", time_lit("from", v)?));
        }
        if let Some(v) = &self.to {
            conds.push(format!(
                "{col} < {} + INTERVAL '{after_minutes} minutes'",
                time_lit("to", v)?
            ));
        }
        Ok(conds.join(" AND "))
    }

    /// The group expression over `decision_items` aliased `i`.
    pub(crate) fn group_expr(&self) -> Result<String, ApiError> {
        let dims = self
            .group_by
            .as_deref()
            .unwrap_or("none")
            .split(',')
            .map(|d| self.dimension(d.trim()))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(if dims.len() == 1 {
            dims.concat()
        } else {
            format!("concat_ws(' | ', {})", dims.join(", "))
        })
    }

    /// One grouping dimension as SQL.
    fn dimension(&self, name: &str) -> Result<String, ApiError> {
        Ok(match name {
            "none" => "'all'".into(),
            "surface" => "i.surface".into(),
            "model" => "i.model_name || ':' || i.model_version".into(),
            "variant" => format!(
                "coalesce(i.experiments[{}], '(not in experiment)')",
                lit(self.experiment()?)
            ),
            "device" => "coalesce(i.device, 'unknown')".into(),
            "region" => "coalesce(i.region, 'unknown')".into(),
            "minute" => "CAST(date_trunc('minute', i.event_time) AS VARCHAR)".into(),
            "hour" => "CAST(date_trunc('hour', i.event_time) AS VARCHAR)".into(),
            "day" => "CAST(date_trunc('day', i.event_time) AS VARCHAR)".into(),
            other => {
                return Err(ApiError::bad_request(
                    "invalid_parameter",
                    format!(
                        "group_by={other:?}: use none, surface, model, variant, device, region, \
                         minute, hour or day, or several joined by commas"
                    ),
                ));
            }
        })
    }

    pub(crate) fn window(&self) -> u32 {
        self.window_minutes.unwrap_or(self.gains.window_minutes)
    }

    /// Cutoff of the @k metrics (default 10, at least 1).
    pub(crate) fn k(&self) -> usize {
        self.k.unwrap_or(10).max(1)
    }

    /// Per shown item: its group, decision, position, score, model, attributes, grade, and
    /// whether it was clicked and purchased.
    pub(crate) fn graded_items_sql(&self) -> Result<String, ApiError> {
        let g = &self.gains;
        Ok(format!(
            "WITH outcomes AS (\
               SELECT request_id, item_id, event_time, \
                 CASE WHEN action = 'click' AND value >= {dwell:?} THEN {long} \
                      WHEN action = 'click' THEN {click} \
                      WHEN action = 'add_to_cart' THEN {cart} ELSE 0 END AS gain, \
                 CASE WHEN action = 'click' THEN 1 ELSE 0 END AS click, 0 AS purchase \
               FROM interactions WHERE {outcome_window} \
               UNION ALL \
               SELECT request_id, unnest(items) AS item_id, event_time, {buy} AS gain, 0 AS click, \
                 1 AS purchase \
               FROM conversions WHERE name = 'purchase' AND request_id IS NOT NULL \
                 AND {outcome_window}), \
             graded AS (\
               SELECT o.request_id, o.item_id, max(o.gain) AS gain, max(o.click) AS click, \
                 max(o.purchase) AS purchase \
               FROM outcomes o JOIN decisions d ON d.request_id = o.request_id \
               WHERE o.event_time >= d.event_time \
                 AND o.event_time <= d.event_time + INTERVAL '{w} minutes' \
                 AND {decision_window} \
               GROUP BY o.request_id, o.item_id) \
             SELECT i.request_id AS request_id, {group} AS grp, i.position AS position, \
               i.item_id AS item_id, CAST(i.event_time AS BIGINT) AS t, i.surface AS surface, \
               i.model_name AS model_name, i.model_version AS model_version, \
               i.device AS device, i.region AS region, map_keys(i.experiments) AS exp_ids, \
               map_values(i.experiments) AS exp_variants, \
               i.score AS score, i.model_name || ':' || i.model_version AS model, \
               i.category AS category, i.provider AS provider, \
               CAST(coalesce(g.gain, 0) AS BIGINT) AS grade, \
               CAST(coalesce(g.click, 0) AS BIGINT) AS clicked, \
               CAST(coalesce(g.purchase, 0) AS BIGINT) AS purchased \
             FROM decision_items i LEFT JOIN graded g \
               ON g.request_id = i.request_id AND g.item_id = i.item_id \
             WHERE {filter}",
            group = self.group_expr()?,
            w = self.window(),
            filter = self.where_clause()?,
            outcome_window = self.time_bounds("event_time", self.window() + 1)?,
            decision_window = self.time_bounds("d.event_time", 0)?,
            dwell = g.long_dwell_secs,
            long = g.long_dwell,
            click = g.click,
            cart = g.add_to_cart,
            buy = g.purchase,
        ))
    }
}

/// What every analysis endpoint shares: a read key, the project's gains, and the JSON that
/// `report` builds, answered with the time it took as `elapsed_ms`.
pub(crate) async fn analysis<Fut>(
    state: AppState,
    headers: &HeaderMap,
    mut p: RelevanceParams,
    report: impl FnOnce(AppState, RelevanceParams) -> Fut,
) -> Result<Response, ApiError>
where
    Fut: std::future::Future<Output = Result<serde_json::Value, ApiError>>,
{
    authorize(&state, headers, Scope::Read)?;
    p.gains = state.config.gains;
    let started = Instant::now();
    let mut v = report(state, p).await?;
    if let Some(o) = v.as_object_mut() {
        o.insert(
            "elapsed_ms".into(),
            json!(started.elapsed().as_secs_f64() * 1000.0),
        );
    }
    Ok(axum::Json(v).into_response())
}

/// Ranking metrics of one group.
#[derive(Debug, Clone, Serialize)]
pub struct GroupRanking {
    /// Group value (`all` without grouping).
    pub group: String,
    /// Means over the group's decisions.
    #[serde(flatten)]
    pub summary: RankingSummary,
    /// Share of the decisions with a shown item purchased within the window (any position).
    pub conversion_rate: f64,
}

/// A shown item as one integer: position·2048 + purchased·1024 + grade·2 + clicked. An
/// unordered `array_agg` of these is several times cheaper than one of rows ordered by
/// position, and ten items sort in no time after.
const PACKED_ITEM: &str = "CAST(position AS BIGINT) * 2048 + purchased * 1024 \
     + least(greatest(grade, 0), 511) * 2 + clicked";

/// An item packed by [`PACKED_ITEM`] (its id is not needed for its list's metrics).
pub(crate) fn unpack(v: i64) -> LiveItem {
    LiveItem {
        item: 0,
        position: u32::try_from(v >> 11).unwrap_or(u32::MAX),
        grade: (v >> 1) & 511,
        clicked: v & 1 == 1,
        purchased: v & 1024 != 0,
    }
}

impl RelevanceParams {
    /// One row per decision of the window: `columns` (expressions over `decisions i`), then
    /// its items packed by [`PACKED_ITEM`]. The columns are evaluated once per decision, not
    /// per item: on 10 M items that halves the time.
    pub(crate) fn lists_sql(&self, columns: &[String]) -> Result<String, ApiError> {
        let inner: Vec<String> = columns
            .iter()
            .enumerate()
            .map(|(n, c)| format!("{c} AS c{n}"))
            .collect();
        let outer: Vec<String> = (0..columns.len()).map(|n| format!("d.c{n}")).collect();
        Ok(format!(
            "SELECT {outer}, l.items FROM \
               (SELECT request_id, array_agg({PACKED_ITEM}) AS items \
                FROM ({graded}) GROUP BY request_id) l \
             JOIN (SELECT request_id, {inner} FROM decisions i WHERE {filter}) d \
               ON l.request_id = d.request_id",
            outer = outer.join(", "),
            inner = inner.join(", "),
            graded = self.graded_items_sql()?,
            filter = self.where_clause()?,
        ))
    }
}

/// Means and conversion rates of per-group sums.
pub(crate) fn groups_of(sums: BTreeMap<String, ListSums>) -> Vec<GroupRanking> {
    sums.into_iter()
        .map(|(group, s)| {
            let summary = s.summary.finish();
            GroupRanking {
                group,
                conversion_rate: s.converted as f64 / summary.lists.max(1) as f64,
                summary,
            }
        })
        .collect()
}

/// Ranking metrics per group, and where they came from: the live sums when they can answer
/// exactly, else the SQL join over the stored rows.
pub async fn ranking(
    store: &Store,
    p: &RelevanceParams,
    timeout: std::time::Duration,
) -> Result<(Vec<GroupRanking>, &'static str), ApiError> {
    if let Some(groups) = crate::live_relevance::ranking(store, p) {
        return Ok((groups, "live"));
    }
    let k = p.k();
    let sql = p.lists_sql(&[p.group_expr()?])?;
    let mut groups: BTreeMap<String, ListSums> = BTreeMap::new();
    let mut items: Vec<LiveItem> = Vec::new();
    store
        .scan(&sql, timeout, |batch: &RecordBatch| {
            let grp = utf8(batch, 0)?;
            let lists = list(batch, 1)?;
            for row in 0..batch.num_rows() {
                items.clear();
                items.extend(
                    i64_array(&lists.value(row))?
                        .values()
                        .iter()
                        .map(|v| unpack(*v)),
                );
                groups
                    .entry(grp.value(row).to_string())
                    .or_default()
                    .add_list(&items, k);
            }
            Ok(())
        })
        .await?;
    Ok((groups_of(groups), "sql"))
}

/// Ranking metrics per group (see [`ranking`]).
pub async fn relevance_report(
    store: &Store,
    p: &RelevanceParams,
    timeout: std::time::Duration,
) -> Result<Vec<GroupRanking>, ApiError> {
    Ok(ranking(store, p, timeout).await?.0)
}

/// `GET /v1/relevance`.
pub async fn get_relevance(
    State(state): State<AppState>,
    Query(p): Query<RelevanceParams>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    analysis(state, &headers, p, |state, p| async move {
        let (groups, source) = ranking(&state.store, &p, state.config.query_timeout).await?;
        Ok(json!({
            "source": source,
            "k": p.k(),
            "window_minutes": p.window(),
            "group_by": p.group_by.as_deref().unwrap_or("none"),
            "gains": p.gains,
            "groups": groups,
        }))
    })
    .await
}

/// Calibration of one group.
#[derive(Debug, Clone, Serialize)]
pub struct GroupCalibration {
    /// Group value.
    pub group: String,
    /// The report.
    #[serde(flatten)]
    pub report: sonde_relevance::CalibrationReport,
}

/// What a calibration is asked for: bins, binning and the outcome.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CalibrationOptions {
    bins: usize,
    binning: Binning,
    /// Purchases instead of clicks.
    conversion: bool,
}

impl CalibrationOptions {
    /// The options of `p`, checked.
    pub(crate) fn of(p: &RelevanceParams) -> Result<Self, ApiError> {
        let binning = match p.binning.as_deref().unwrap_or("equal_mass") {
            "equal_mass" => Binning::EqualMass,
            "equal_width" => Binning::EqualWidth,
            other => {
                return Err(ApiError::bad_request(
                    "invalid_parameter",
                    format!("binning={other:?}: use equal_mass or equal_width"),
                ));
            }
        };
        let bins = p.bins.unwrap_or(10);
        if !(1..=1000).contains(&bins) {
            return Err(ApiError::bad_request(
                "invalid_parameter",
                "bins must be between 1 and 1000",
            ));
        }
        let conversion = match p.outcome.as_deref().unwrap_or("click") {
            "click" => false,
            "conversion" => true,
            other => {
                return Err(ApiError::bad_request(
                    "invalid_parameter",
                    format!("outcome={other:?}: use click or conversion"),
                ));
            }
        };
        Ok(Self {
            bins,
            binning,
            conversion,
        })
    }
}

/// Calibration of item scores against clicks (or purchases), per group of the frame.
pub(crate) fn calibration_of(
    frame: &ItemFrame,
    o: CalibrationOptions,
) -> Result<Vec<GroupCalibration>, ApiError> {
    let mut groups: Vec<(Vec<f64>, Vec<bool>)> = vec![Default::default(); frame.groups.len()];
    for i in frame.items.iter().filter(|i| !i.score.is_nan()) {
        let (s, c) = &mut groups[frame.group_of(i)];
        s.push(i.score);
        c.push(if o.conversion { i.purchased } else { i.clicked });
    }
    groups
        .into_iter()
        .enumerate()
        .filter(|(_, (s, _))| !s.is_empty())
        .map(|(g, (s, c))| {
            let group = frame.group_name(g);
            let report = calibration(&s, &c, o.bins, o.binning).map_err(|e| {
                ApiError::bad_request("invalid_data", format!("group {group}: {e}"))
            })?;
            Ok(GroupCalibration {
                group: group.to_string(),
                report,
            })
        })
        .collect()
}

/// `GET /v1/calibration`.
pub async fn get_calibration(
    State(state): State<AppState>,
    Query(p): Query<RelevanceParams>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    analysis(state, &headers, p, |state, p| async move {
        let o = CalibrationOptions::of(&p)?;
        let frame = ItemFrame::fetch(&state.store, &p, state.config.query_timeout).await?;
        let groups = calibration_of(&frame, o)?;
        Ok(json!({
            "outcome": p.outcome.as_deref().unwrap_or("click"),
            "window_minutes": p.window(),
            "group_by": p.group_by.as_deref().unwrap_or("none"),
            "groups": groups,
        }))
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_become_escaped_sql() {
        let p = RelevanceParams {
            surface: Some("home'; DROP TABLE x; --".into()),
            from: Some("2026-01-01T00:00:00Z".into()),
            to: Some("1767312000000".into()),
            ..Default::default()
        };
        let w = p.where_clause().expect("valid");
        assert!(w.contains("i.surface = 'home''; DROP TABLE x; --'"), "{w}");
        assert!(
            w.contains("i.event_time >= CAST('2026-01-01T00:00:00.000' AS TIMESTAMP)"),
            "{w}"
        );
        assert!(
            w.contains("i.event_time < CAST('2026-01-02T00:00:00.000' AS TIMESTAMP)"),
            "{w}"
        );
        let bad = RelevanceParams {
            from: Some("yesterday".into()),
            ..Default::default()
        };
        assert!(bad.where_clause().is_err());
        let no_exp = RelevanceParams {
            group_by: Some("variant".into()),
            ..Default::default()
        };
        assert!(no_exp.group_expr().is_err());
        let unknown = RelevanceParams {
            group_by: Some("planet".into()),
            ..Default::default()
        };
        assert!(unknown.group_expr().is_err());
        let two = RelevanceParams {
            group_by: Some("surface, day".into()),
            ..Default::default()
        };
        assert_eq!(
            two.group_expr().expect("valid"),
            "concat_ws(' | ', i.surface, CAST(date_trunc('day', i.event_time) AS VARCHAR))"
        );
    }
}
