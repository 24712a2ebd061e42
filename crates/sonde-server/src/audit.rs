//! `GET /v1/feature-audit` and `GET /v1/engagement`.
//!
//! Feature audit: per numeric `features` field and time bucket, the AUC of the field for
//! telling decisions with a click (within the window) from those without; a field is flagged
//! when its AUC moves by at least 0.1 between buckets. Engagement: dwell and scroll-depth
//! distributions of the interactions that follow decisions, and the share of users who come
//! back within 7 days. Formulas in `docs/relevance.md`.

use std::collections::BTreeMap;

use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::Response;
use serde::Serialize;
use serde_json::json;
use sonde_relevance::{auc, quantiles};
use sonde_store::Store;
use sonde_store::arrow::array::RecordBatch;

use crate::columns::{f64s, i64s, utf8};
use crate::relevance::{RelevanceParams, analysis};
use crate::{ApiError, AppState};

/// AUC movement between buckets that flags a feature.
const AUC_SHIFT: f64 = 0.1;
/// A return counts as a new visit when at least this long after the first decision.
const NEW_VISIT_MINUTES: u32 = 30;

/// One bucket of one feature.
#[derive(Debug, Clone, Serialize)]
pub struct AuditBucket {
    /// Bucket start.
    pub bucket: String,
    /// Decisions with the feature.
    pub n: usize,
    /// AUC for clicked vs not clicked (None without both).
    pub auc: Option<f64>,
}

/// The audit of one feature.
#[derive(Debug, Clone, Serialize)]
pub struct FeatureAudit {
    /// `features.<name>`.
    pub feature: String,
    /// Per time bucket, oldest first.
    pub buckets: Vec<AuditBucket>,
    /// Largest AUC difference between two buckets.
    pub auc_shift: Option<f64>,
    /// Whether the shift reaches the threshold.
    pub flagged: bool,
}

fn bucket(p: &RelevanceParams) -> Result<&'static str, ApiError> {
    match p.bucket.as_deref().unwrap_or("day") {
        "hour" => Ok("hour"),
        "day" => Ok("day"),
        other => Err(ApiError::bad_request(
            "invalid_parameter",
            format!("bucket={other:?}: use hour or day"),
        )),
    }
}

/// Feature audit over the store.
pub async fn feature_audit(
    store: &Store,
    p: &RelevanceParams,
    timeout: std::time::Duration,
) -> Result<Vec<FeatureAudit>, ApiError> {
    let b = bucket(p)?;
    let sql = format!(
        "SELECT CAST(date_trunc('{b}', d.event_time) AS VARCHAR) AS b, d.features, o.c \
         FROM decisions d JOIN \
           (SELECT request_id, max(clicked) AS c FROM ({graded}) GROUP BY request_id) o \
         ON d.request_id = o.request_id WHERE d.features IS NOT NULL",
        graded = p.graded_items_sql()?
    );
    // feature → bucket → (values, clicked)
    type Samples = BTreeMap<String, BTreeMap<String, (Vec<f64>, Vec<bool>)>>;
    let mut samples: Samples = BTreeMap::new();
    store
        .scan(&sql, timeout, |batch: &RecordBatch| {
            let bk = utf8(batch, 0)?;
            let features = utf8(batch, 1)?;
            let clicked = i64s(batch, 2)?;
            for row in 0..batch.num_rows() {
                let Ok(serde_json::Value::Object(m)) = serde_json::from_str(features.value(row))
                else {
                    continue;
                };
                for (k, v) in m {
                    let Some(x) = v.as_f64() else { continue };
                    let (xs, ys) = samples
                        .entry(format!("features.{k}"))
                        .or_default()
                        .entry(bk.value(row).to_string())
                        .or_default();
                    xs.push(x);
                    ys.push(clicked.value(row) > 0);
                }
            }
            Ok(())
        })
        .await?;
    Ok(samples
        .into_iter()
        .map(|(feature, buckets)| {
            let buckets: Vec<AuditBucket> = buckets
                .into_iter()
                .map(|(bucket, (x, y))| AuditBucket {
                    n: x.len(),
                    auc: auc(&x, &y),
                    bucket,
                })
                .collect();
            let aucs: Vec<f64> = buckets.iter().filter_map(|b| b.auc).collect();
            let shift = (aucs.len() >= 2).then(|| {
                let max = aucs.iter().copied().fold(f64::MIN, f64::max);
                let min = aucs.iter().copied().fold(f64::MAX, f64::min);
                max - min
            });
            FeatureAudit {
                feature,
                flagged: shift.is_some_and(|s| s >= AUC_SHIFT),
                auc_shift: shift,
                buckets,
            }
        })
        .collect())
}

/// A distribution summary.
#[derive(Debug, Clone, Serialize)]
pub struct Distribution {
    /// Values.
    pub n: usize,
    /// Mean.
    pub mean: Option<f64>,
    /// Quantiles p25, p50, p75, p90, p99.
    pub p25: Option<f64>,
    /// Median.
    pub p50: Option<f64>,
    /// 75th percentile.
    pub p75: Option<f64>,
    /// 90th percentile.
    pub p90: Option<f64>,
    /// 99th percentile.
    pub p99: Option<f64>,
}

fn distribution(v: &[f64]) -> Distribution {
    let q = quantiles(v, &[0.25, 0.5, 0.75, 0.9, 0.99]);
    let at = |i: usize| q.as_ref().map(|q| q[i]);
    Distribution {
        n: v.len(),
        mean: (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64),
        p25: at(0),
        p50: at(1),
        p75: at(2),
        p90: at(3),
        p99: at(4),
    }
}

/// Engagement of one group.
#[derive(Debug, Clone, Serialize)]
pub struct GroupEngagement {
    /// Group value.
    pub group: String,
    /// Dwell seconds of clicks (and `dwell` interactions).
    pub dwell_secs: Distribution,
    /// Scroll depth of `scroll` interactions.
    pub scroll_depth: Distribution,
    /// Users with a decision in the window.
    pub users: u64,
    /// Share of them with another decision 30 min to 7 days after their first.
    pub repeat_visit_rate_7d: f64,
}

/// Engagement per group over the store.
pub async fn engagement(
    store: &Store,
    p: &RelevanceParams,
    timeout: std::time::Duration,
) -> Result<Vec<GroupEngagement>, ApiError> {
    let (group, filter) = (p.group_expr()?, p.where_clause()?);
    let mut values: BTreeMap<String, (Vec<f64>, Vec<f64>)> = BTreeMap::new();
    store
        .scan(
            &format!(
                "SELECT {group} AS grp, x.action, x.value FROM interactions x \
                 JOIN decisions i ON x.request_id = i.request_id \
                 WHERE {filter} AND x.value IS NOT NULL AND x.action IN ('click', 'dwell', 'scroll')"
            ),
            timeout,
            |batch: &RecordBatch| {
                let grp = utf8(batch, 0)?;
                let action = utf8(batch, 1)?;
                let value = f64s(batch, 2)?;
                for row in 0..batch.num_rows() {
                    let e = values.entry(grp.value(row).to_string()).or_default();
                    if action.value(row) == "scroll" {
                        e.1.push(value.value(row));
                    } else {
                        e.0.push(value.value(row));
                    }
                }
                Ok(())
            },
        )
        .await?;
    let who = "coalesce(i.user_key, i.anonymous_key)";
    let mut repeat: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    store
        .scan(
            &format!(
                "WITH firsts AS (SELECT {who} AS who, min(i.event_time) AS t0, \
                   min({group}) AS grp FROM decisions i WHERE {filter} AND {who} IS NOT NULL \
                   GROUP BY {who}), \
                 returned AS (SELECT DISTINCT f.who FROM firsts f JOIN decisions d \
                   ON coalesce(d.user_key, d.anonymous_key) = f.who \
                   WHERE d.event_time >= f.t0 + INTERVAL '{NEW_VISIT_MINUTES} minutes' \
                     AND d.event_time <= f.t0 + INTERVAL '7 days') \
                 SELECT f.grp, count(*) AS users, count(r.who) AS returned \
                 FROM firsts f LEFT JOIN returned r ON f.who = r.who GROUP BY f.grp"
            ),
            timeout,
            |batch: &RecordBatch| {
                let grp = utf8(batch, 0)?;
                let users = i64s(batch, 1)?;
                let back = i64s(batch, 2)?;
                for row in 0..batch.num_rows() {
                    if grp.is_null(row) {
                        continue;
                    }
                    repeat.insert(
                        grp.value(row).to_string(),
                        (users.value(row) as u64, back.value(row) as u64),
                    );
                }
                Ok(())
            },
        )
        .await?;
    let groups: std::collections::BTreeSet<String> =
        values.keys().chain(repeat.keys()).cloned().collect();
    Ok(groups
        .into_iter()
        .map(|g| {
            let (dwell, scroll) = values.remove(&g).unwrap_or_default();
            let (users, back) = repeat.get(&g).copied().unwrap_or_default();
            GroupEngagement {
                dwell_secs: distribution(&dwell),
                scroll_depth: distribution(&scroll),
                users,
                repeat_visit_rate_7d: back as f64 / users.max(1) as f64,
                group: g,
            }
        })
        .collect())
}

/// `GET /v1/feature-audit`.
pub async fn get_feature_audit(
    State(state): State<AppState>,
    Query(p): Query<RelevanceParams>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    analysis(state, &headers, p, |state, p| async move {
        let features = feature_audit(&state.store, &p, state.config.query_timeout).await?;
        Ok(json!({
            "outcome": "click",
            "bucket": bucket(&p)?,
            "auc_shift_threshold": AUC_SHIFT,
            "features": features,
            "flagged": features.iter().filter(|f| f.flagged).count(),
        }))
    })
    .await
}

/// `GET /v1/engagement`.
pub async fn get_engagement(
    State(state): State<AppState>,
    Query(p): Query<RelevanceParams>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    analysis(state, &headers, p, |state, p| async move {
        let groups = engagement(&state.store, &p, state.config.query_timeout).await?;
        Ok(json!({
            "groups": groups,
            "new_visit_after_minutes": NEW_VISIT_MINUTES,
        }))
    })
    .await
}
