//! `GET /v1/stability`, `GET /v1/diversity` and `GET /v1/fairness`: how slates change from
//! one decision to the next for the same user and surface, what they mix and how much of the
//! catalog they show, and whether provider groups and user segments are treated in line with
//! the outcomes they earn. Formulas in `docs/relevance.md`.

use std::collections::{BTreeMap, HashSet};

use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::Response;
use serde::Serialize;
use serde_json::json;
use sonde_relevance::{
    GroupExposure, exposure_fairness, gini, intra_list_diversity, jaccard_at_k, novelty, rbo_ext,
};
use sonde_store::Store;
use sonde_store::StoreError;
use sonde_store::arrow::array::{Array, ArrayRef, RecordBatch};

use crate::columns::{f64s, i64s, list, utf8, utf8_array};
use crate::relevance::{RelevanceParams, analysis};
use crate::{ApiError, AppState};

/// Persistence of rank-biased overlap.
const RBO_P: f64 = 0.9;

fn attribute(p: &RelevanceParams, default: &'static str) -> Result<&'static str, ApiError> {
    match p.attribute.as_deref().unwrap_or(default) {
        "category" => Ok("category"),
        "provider" => Ok("provider"),
        other => Err(ApiError::bad_request(
            "invalid_parameter",
            format!("attribute={other:?}: use category or provider"),
        )),
    }
}

fn strings(list: &ArrayRef) -> Result<Vec<String>, StoreError> {
    let a = utf8_array(list)?;
    Ok((0..a.len())
        .map(|i| {
            if a.is_null(i) {
                String::new()
            } else {
                a.value(i).to_string()
            }
        })
        .collect())
}

/// Item ids of a list of `position item_id` strings, in position order: an unordered
/// aggregation sorted here costs a fraction of one ordered by the database.
fn by_position(list: &ArrayRef) -> Result<Vec<String>, StoreError> {
    let a = utf8_array(list)?;
    let mut items: Vec<(u64, &str)> = (0..a.len())
        .filter(|&i| a.is_valid(i))
        .map(|i| match a.value(i).split_once(' ') {
            Some((p, id)) => (p.parse().unwrap_or(u64::MAX), id),
            None => (u64::MAX, a.value(i)),
        })
        .collect();
    items.sort_by_key(|(p, _)| *p);
    Ok(items.into_iter().map(|(_, id)| id.to_string()).collect())
}

/// Stability of one group: consecutive decisions for the same user and surface.
#[derive(Debug, Clone, Default, Serialize)]
pub struct GroupStability {
    /// Group of the later decision of each pair.
    pub group: String,
    /// Consecutive pairs compared.
    pub pairs: u64,
    /// Mean extrapolated RBO (p = 0.9).
    pub rbo: f64,
    /// Mean Jaccard of the top k.
    pub jaccard: f64,
    /// Pairs across a change of model version.
    pub model_change_pairs: u64,
    /// Mean top-k churn (1 − Jaccard@k) across a model change.
    pub model_change_churn: f64,
}

/// Stability per group over the store.
pub async fn stability_report(
    store: &Store,
    p: &RelevanceParams,
    timeout: std::time::Duration,
) -> Result<Vec<GroupStability>, ApiError> {
    let k = p.k.unwrap_or(10).max(1);
    let sql = format!(
        "SELECT coalesce(i.user_key, i.anonymous_key) AS who, i.surface AS surface, \
                {group} AS grp, max(i.model_name || ':' || i.model_version) AS model, \
                array_agg(CAST(i.position AS VARCHAR) || ' ' || i.item_id) AS items, \
                min(i.event_time) AS t \
         FROM decision_items i WHERE {filter} AND coalesce(i.user_key, i.anonymous_key) IS NOT NULL \
         GROUP BY i.request_id, who, surface, grp ORDER BY who, surface, t, i.request_id",
        group = p.group_expr()?,
        filter = p.where_clause()?,
    );
    let mut groups: BTreeMap<String, GroupStability> = BTreeMap::new();
    let mut prev: Option<(String, String, String, Vec<String>)> = None;
    store
        .scan(&sql, timeout, |batch: &RecordBatch| {
            let who = utf8(batch, 0)?;
            let surface = utf8(batch, 1)?;
            let grp = utf8(batch, 2)?;
            let model = utf8(batch, 3)?;
            let items = list(batch, 4)?;
            for row in 0..batch.num_rows() {
                let cur = (
                    who.value(row).to_string(),
                    surface.value(row).to_string(),
                    model.value(row).to_string(),
                    by_position(&items.value(row))?,
                );
                if let Some(pr) = &prev
                    && pr.0 == cur.0
                    && pr.1 == cur.1
                {
                    let g = groups.entry(grp.value(row).to_string()).or_default();
                    g.pairs += 1;
                    g.rbo += rbo_ext(&pr.3, &cur.3, RBO_P);
                    let j = jaccard_at_k(&pr.3, &cur.3, k);
                    g.jaccard += j;
                    if pr.2 != cur.2 {
                        g.model_change_pairs += 1;
                        g.model_change_churn += 1.0 - j;
                    }
                }
                prev = Some(cur);
            }
            Ok(())
        })
        .await?;
    Ok(groups
        .into_iter()
        .map(|(group, mut g)| {
            let n = g.pairs.max(1) as f64;
            g.rbo /= n;
            g.jaccard /= n;
            g.model_change_churn /= g.model_change_pairs.max(1) as f64;
            g.group = group;
            g
        })
        .collect())
}

/// Diversity and coverage of one group.
#[derive(Debug, Clone, Serialize)]
pub struct GroupDiversity {
    /// Group value.
    pub group: String,
    /// Decisions.
    pub decisions: u64,
    /// Mean intra-list diversity of the attribute.
    pub intra_list_diversity: f64,
    /// Distinct items shown.
    pub distinct_items: u64,
    /// Distinct items shown over distinct items shown in all groups of the window.
    pub catalog_coverage: f64,
    /// Gini coefficient of impressions across the items shown.
    pub exposure_gini: f64,
    /// Mean self-information of the impressions (bits).
    pub novelty: f64,
}

/// Diversity per group over the store.
pub async fn diversity_report(
    store: &Store,
    p: &RelevanceParams,
    timeout: std::time::Duration,
) -> Result<Vec<GroupDiversity>, ApiError> {
    let attr = attribute(p, "category")?;
    let (group, filter) = (p.group_expr()?, p.where_clause()?);
    let mut ild: BTreeMap<String, (u64, f64)> = BTreeMap::new();
    let mut impressions: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    // Distinct items over all groups, for coverage: the union of the groups' items.
    let mut all_items: HashSet<String> = HashSet::new();
    // Unordered: the diversity of a slate does not depend on the order.
    let ild_sql = format!(
        "SELECT {group} AS grp, array_agg(coalesce(i.{attr}, '')) AS a \
         FROM decision_items i WHERE {filter} GROUP BY i.request_id, grp"
    );
    let items_sql = format!(
        "SELECT {group} AS grp, i.item_id, CAST(count(*) AS DOUBLE) AS n \
         FROM decision_items i WHERE {filter} GROUP BY grp, i.item_id"
    );
    let ild_scan = store.scan(&ild_sql, timeout, |batch: &RecordBatch| {
        let grp = utf8(batch, 0)?;
        let a = list(batch, 1)?;
        for row in 0..batch.num_rows() {
            let e = ild.entry(grp.value(row).to_string()).or_default();
            e.0 += 1;
            e.1 += intra_list_diversity(&strings(&a.value(row))?);
        }
        Ok(())
    });
    let items_scan = store.scan(&items_sql, timeout, |batch: &RecordBatch| {
        let grp = utf8(batch, 0)?;
        let item = utf8(batch, 1)?;
        let n = f64s(batch, 2)?;
        for row in 0..batch.num_rows() {
            impressions
                .entry(grp.value(row).to_string())
                .or_default()
                .push(n.value(row));
            if !all_items.contains(item.value(row)) {
                all_items.insert(item.value(row).to_string());
            }
        }
        Ok(())
    });
    let (a, b) = tokio::join!(ild_scan, items_scan);
    a?;
    b?;
    let all_items = all_items.len() as u64;
    Ok(ild
        .into_iter()
        .map(|(group, (decisions, ild_sum))| {
            let imp = impressions.remove(&group).unwrap_or_default();
            GroupDiversity {
                decisions,
                intra_list_diversity: ild_sum / decisions.max(1) as f64,
                distinct_items: imp.len() as u64,
                catalog_coverage: imp.len() as f64 / all_items.max(1) as f64,
                exposure_gini: gini(&imp),
                novelty: novelty(&imp),
                group,
            }
        })
        .collect())
}

/// Outcome rate of one user segment against the reference segment.
#[derive(Debug, Clone, Serialize)]
pub struct SegmentRate {
    /// Segment value.
    pub segment: String,
    /// Decisions.
    pub decisions: u64,
    /// Share of decisions with any outcome.
    pub outcome_rate: f64,
    /// outcome_rate over the reference segment's (disparate impact).
    pub ratio_to_reference: Option<f64>,
    /// Whether the ratio lies in [0.8, 1.25].
    pub within_band: Option<bool>,
}

/// Fairness of one group.
#[derive(Debug, Clone, Serialize)]
pub struct GroupFairness {
    /// Group value.
    pub group: String,
    /// Exposure against outcomes per attribute value (provider by default).
    pub exposure: Vec<GroupExposure>,
    /// Share of attribute values within the band (of those with outcomes).
    pub share_within_band: f64,
}

/// Exposure fairness per group, and outcome rates per user segment.
pub async fn fairness_report(
    store: &Store,
    p: &RelevanceParams,
    timeout: std::time::Duration,
) -> Result<(Vec<GroupFairness>, Option<(String, Vec<SegmentRate>)>), ApiError> {
    let attr = attribute(p, "provider")?;
    let graded = p.graded_items_sql()?;
    let mut groups: BTreeMap<String, Vec<(String, f64, f64)>> = BTreeMap::new();
    store
        .scan(
            &format!(
                "SELECT grp, coalesce({attr}, '(none)') AS a, \
                        sum(1.0 / log2(1.0 + CAST(position AS DOUBLE))) AS exposure, \
                        CAST(sum(CASE WHEN grade >= 1 THEN 1 ELSE 0 END) AS DOUBLE) AS outcomes \
                 FROM ({graded}) GROUP BY grp, a ORDER BY grp, a"
            ),
            timeout,
            |batch: &RecordBatch| {
                let grp = utf8(batch, 0)?;
                let a = utf8(batch, 1)?;
                let e = f64s(batch, 2)?;
                let o = f64s(batch, 3)?;
                for row in 0..batch.num_rows() {
                    groups.entry(grp.value(row).to_string()).or_default().push((
                        a.value(row).to_string(),
                        e.value(row),
                        o.value(row),
                    ));
                }
                Ok(())
            },
        )
        .await?;
    let fairness = groups
        .into_iter()
        .map(|(group, rows)| {
            let exposure = exposure_fairness(&rows);
            let judged: Vec<bool> = exposure.iter().filter_map(|g| g.within_band).collect();
            GroupFairness {
                group,
                share_within_band: judged.iter().filter(|b| **b).count() as f64
                    / judged.len().max(1) as f64,
                exposure,
            }
        })
        .collect();
    let Some(segment) = p.segment.as_deref() else {
        return Ok((fairness, None));
    };
    if !matches!(segment, "device" | "region") {
        return Err(ApiError::bad_request(
            "invalid_parameter",
            format!("segment={segment:?}: use device or region"),
        ));
    }
    let mut rates: Vec<(String, u64, f64)> = Vec::new();
    store
        .scan(
            &format!(
                "SELECT seg, count(*) AS n, avg(CASE WHEN best >= 1 THEN 1.0 ELSE 0.0 END) AS rate FROM \
                   (SELECT request_id, max(seg) AS seg, max(grade) AS best FROM \
                     (SELECT g.request_id, g.grade, coalesce(d.{segment}, 'unknown') AS seg \
                      FROM ({graded}) g JOIN decisions d ON d.request_id = g.request_id \
                      WHERE {bounds}) \
                    GROUP BY request_id) \
                 GROUP BY seg ORDER BY n DESC, seg",
                bounds = p.time_bounds("d.event_time", 0)?,
            ),
            timeout,
            |batch: &RecordBatch| {
                let s = utf8(batch, 0)?;
                let n = i64s(batch, 1)?;
                let r = f64s(batch, 2)?;
                for row in 0..batch.num_rows() {
                    rates.push((s.value(row).to_string(), n.value(row) as u64, r.value(row)));
                }
                Ok(())
            },
        )
        .await?;
    // The reference is the one asked for, else the largest segment.
    let reference = match &p.reference_segment {
        Some(name) => Some(
            rates
                .iter()
                .find(|r| &r.0 == name)
                .map(|r| (r.0.clone(), r.2))
                .ok_or_else(|| {
                    ApiError::bad_request(
                        "invalid_parameter",
                        format!("reference_segment={name:?} has no decisions in the window"),
                    )
                })?,
        ),
        None => rates.first().map(|r| (r.0.clone(), r.2)),
    };
    let segments = rates
        .into_iter()
        .map(|(segment, decisions, outcome_rate)| {
            let ratio = reference
                .as_ref()
                .filter(|r| r.1 > 0.0)
                .map(|r| outcome_rate / r.1);
            SegmentRate {
                segment,
                decisions,
                outcome_rate,
                ratio_to_reference: ratio,
                within_band: ratio.map(|x| (0.8..=1.25).contains(&x)),
            }
        })
        .collect();
    Ok((fairness, reference.map(|r| (r.0, segments))))
}

/// `GET /v1/stability`.
pub async fn get_stability(
    State(state): State<AppState>,
    Query(p): Query<RelevanceParams>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    analysis(state, &headers, p, |state, p| async move {
        let groups = stability_report(&state.store, &p, state.config.query_timeout).await?;
        Ok(json!({
            "k": p.k.unwrap_or(10).max(1),
            "rbo_p": RBO_P,
            "groups": groups,
        }))
    })
    .await
}

/// `GET /v1/diversity`.
pub async fn get_diversity(
    State(state): State<AppState>,
    Query(p): Query<RelevanceParams>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    analysis(state, &headers, p, |state, p| async move {
        let groups = diversity_report(&state.store, &p, state.config.query_timeout).await?;
        Ok(json!({
            "attribute": attribute(&p, "category")?,
            "groups": groups,
        }))
    })
    .await
}

/// `GET /v1/fairness`.
pub async fn get_fairness(
    State(state): State<AppState>,
    Query(p): Query<RelevanceParams>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    analysis(state, &headers, p, |state, p| async move {
        let (groups, segments) =
            fairness_report(&state.store, &p, state.config.query_timeout).await?;
        Ok(json!({
            "attribute": attribute(&p, "provider")?,
            "band": [0.8, 1.25],
            "groups": groups,
            "segments": segments.as_ref().map(|(reference, s)| json!({
                "by": p.segment, "reference": reference, "rates": s})),
            "window_minutes": p.window(),
        }))
    })
    .await
}
