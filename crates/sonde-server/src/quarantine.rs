//! `GET /v1/quarantine` and `POST /v1/quarantine/replay`.

use std::collections::HashMap;

use axum::extract::{Query, State};
use axum::http::HeaderMap;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sonde_model::{AlreadyPseudonymized, ParseCtx, parse_event};
use sonde_store::{QueryLimits, ReplayEntry, Seen, WriteBatch};

use crate::error::ApiError;
use crate::project::Scope;
use crate::sql::rows;
use crate::{AppState, authorize};

/// Query parameters of `GET /v1/quarantine`.
#[derive(Debug, Default, Deserialize)]
pub struct ListParams {
    /// Only this error code.
    pub code: Option<String>,
    /// Only entries not yet replayed successfully.
    #[serde(default)]
    pub pending: bool,
    /// Most entries returned (default 100, at most 10,000).
    pub limit: Option<usize>,
}

/// One quarantined event.
#[derive(Debug, Serialize, Deserialize, Clone)]
pub struct QuarantineItem {
    /// Stable id (`q<lsn>`).
    pub quarantine_id: String,
    /// Receive time.
    pub received_at: Value,
    /// The event's id, if readable.
    pub event_id: Option<String>,
    /// Error code.
    pub code: String,
    /// Offending field.
    pub field: String,
    /// Reason.
    pub message: String,
    /// Event text, identifiers pseudonymized.
    pub raw: String,
    /// Key the identifiers were pseudonymized with.
    pub key_id: String,
    /// Latest replay outcome (`accepted`, `duplicate`, `rejected`), if replayed.
    pub replay: Option<String>,
}

fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

pub(crate) async fn list_items(
    state: &AppState,
    code: Option<&str>,
    ids: Option<&[String]>,
    pending: bool,
    limit: usize,
) -> Result<Vec<QuarantineItem>, ApiError> {
    let mut filters = Vec::new();
    if let Some(c) = code {
        filters.push(format!("q.code = {}", quote(c)));
    }
    if let Some(ids) = ids {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let list: Vec<String> = ids.iter().map(|i| quote(i)).collect();
        filters.push(format!("q.quarantine_id IN ({})", list.join(", ")));
    }
    if pending {
        filters.push("(r.outcome IS NULL OR r.outcome = 'rejected')".into());
    }
    let wher = if filters.is_empty() {
        String::new()
    } else {
        format!("WHERE {}", filters.join(" AND "))
    };
    let sql = format!(
        "SELECT q.quarantine_id, q.received_at, q.event_id, q.code, q.field, q.message, q.raw, q.key_id, r.outcome \
         FROM quarantine q LEFT JOIN ( \
           SELECT quarantine_id, last_value(outcome ORDER BY replayed_at) AS outcome \
           FROM quarantine_replays GROUP BY quarantine_id) r \
         ON q.quarantine_id = r.quarantine_id {wher} ORDER BY q.received_at DESC, q.quarantine_id LIMIT {limit}"
    );
    let result = state
        .store
        .query(
            &sql,
            QueryLimits {
                max_rows: limit,
                ..QueryLimits::default()
            },
        )
        .await?;
    let s = |v: &Value| v.as_str().map(str::to_string);
    Ok(rows(&result.batches)
        .into_iter()
        .map(|r| QuarantineItem {
            quarantine_id: s(&r[0]).unwrap_or_default(),
            received_at: r[1].clone(),
            event_id: s(&r[2]),
            code: s(&r[3]).unwrap_or_default(),
            field: s(&r[4]).unwrap_or_default(),
            message: s(&r[5]).unwrap_or_default(),
            raw: s(&r[6]).unwrap_or_default(),
            key_id: s(&r[7]).unwrap_or_default(),
            replay: s(&r[8]),
        })
        .collect())
}

/// `GET /v1/quarantine`.
pub async fn get_quarantine(
    State(state): State<AppState>,
    Query(p): Query<ListParams>,
    headers: HeaderMap,
) -> Result<axum::Json<Value>, ApiError> {
    authorize(&state, &headers, Scope::Read)?;
    let limit = p.limit.unwrap_or(100).clamp(1, 10_000);
    let items = list_items(&state, p.code.as_deref(), None, p.pending, limit).await?;
    Ok(axum::Json(serde_json::json!({ "items": items })))
}

/// Body of `POST /v1/quarantine/replay`.
#[derive(Debug, Default, Deserialize)]
pub struct ReplayBody {
    /// Quarantine ids to replay. Without ids, every pending entry (optionally of `code`).
    pub ids: Option<Vec<String>>,
    /// With no `ids`: only entries of this code.
    pub code: Option<String>,
    /// Corrected event text per quarantine id, used instead of the stored text. Identifiers
    /// in it are taken as already pseudonymized, as in the stored text.
    #[serde(default)]
    pub replace: HashMap<String, Value>,
}

/// Outcome of one replayed entry.
#[derive(Debug, Serialize)]
pub struct ReplayResult {
    /// The entry.
    pub quarantine_id: String,
    /// `accepted`, `duplicate` or `rejected`.
    pub outcome: &'static str,
    /// Error code when rejected again.
    pub code: Option<&'static str>,
    /// Reason when rejected again.
    pub message: Option<String>,
}

/// `POST /v1/quarantine/replay`: run quarantined events through validation again.
pub async fn post_replay(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Result<axum::Json<Value>, ApiError> {
    authorize(&state, &headers, Scope::Admin)?;
    let bytes =
        crate::ingest::read_body(&headers, body, state.config.limits.max_body_bytes).await?;
    let req: ReplayBody = serde_json::from_slice(&bytes).map_err(|e| {
        ApiError::bad_request("invalid_body", format!("expected {{\"ids\": [...]}}: {e}"))
    })?;
    Ok(axum::Json(replay(&state, req).await?))
}

/// Replay quarantined events (the caller has checked the admin scope): the summary and
/// each entry's outcome.
pub(crate) async fn replay(state: &AppState, req: ReplayBody) -> Result<Value, ApiError> {
    let max = state.config.limits.max_events_per_batch;
    let items = match &req.ids {
        Some(ids) => list_items(state, None, Some(ids), false, max).await?,
        None => list_items(state, req.code.as_deref(), None, true, max).await?,
    };
    if let Some(ids) = &req.ids
        && let Some(missing) = ids
            .iter()
            .find(|id| !items.iter().any(|i| &i.quarantine_id == *id))
    {
        return Err(ApiError::new(
            axum::http::StatusCode::NOT_FOUND,
            "not_found",
            format!("no quarantined event {missing}"),
        ));
    }
    let now = chrono::Utc::now().timestamp_millis();
    let mut results: Vec<ReplayResult> = Vec::new();
    let mut batch = WriteBatch::default();
    let mut accepted_ids = Vec::new();
    for item in &items {
        let text = match req.replace.get(&item.quarantine_id) {
            Some(v) => v.to_string(),
            None => item.raw.clone(),
        };
        let pseudo = AlreadyPseudonymized(item.key_id.clone());
        let received_at = item
            .received_at
            .as_str()
            .and_then(sonde_model::parse_time_str)
            .unwrap_or(now);
        let ctx = ParseCtx {
            policy: state.config.time_policy,
            pseudonymizer: &pseudo,
            received_at,
            backfill: false,
            limits: state.config.limits.event,
        };
        match parse_event(text.as_bytes(), &ctx) {
            Ok(e) => {
                accepted_ids.push(item.quarantine_id.clone());
                batch.events.push(e);
            }
            Err(r) => results.push(ReplayResult {
                quarantine_id: item.quarantine_id.clone(),
                outcome: "rejected",
                code: Some(r.error.code.as_str()),
                message: Some(r.error.message),
            }),
        }
    }
    let mut pending_replays: Vec<ReplayEntry> = results
        .iter()
        .map(|r| ReplayEntry {
            quarantine_id: r.quarantine_id.clone(),
            replayed_at: now,
            outcome: r.outcome.to_string(),
            code: r.code.map(str::to_string),
        })
        .collect();
    // Accepted-or-duplicate is only known after dedup, so the events go first and their
    // outcomes second; should the second write fail, a later replay reports "duplicate".
    let outcome = state
        .store
        .write(WriteBatch {
            events: batch.events,
            ..Default::default()
        })
        .await?;
    for (qid, seen) in accepted_ids.iter().zip(&outcome.seen) {
        let o = if *seen == Seen::New {
            "accepted"
        } else {
            "duplicate"
        };
        pending_replays.push(ReplayEntry {
            quarantine_id: qid.clone(),
            replayed_at: now,
            outcome: o.to_string(),
            code: None,
        });
        results.push(ReplayResult {
            quarantine_id: qid.clone(),
            outcome: o,
            code: None,
            message: None,
        });
    }
    state
        .store
        .write(WriteBatch {
            replays: pending_replays,
            ..Default::default()
        })
        .await?;
    let count = |o: &str| results.iter().filter(|r| r.outcome == o).count();
    Ok(serde_json::json!({
        "replayed": results.len(),
        "accepted": count("accepted"),
        "duplicates": count("duplicate"),
        "rejected": count("rejected"),
        "results": results,
    }))
}
