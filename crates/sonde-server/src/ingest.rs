//! `POST /v1/events`: decode, validate, pseudonymize, dedup, store durably, answer per event.

use std::io::Read;

use axum::body::{Body, Bytes};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use sonde_model::{
    ParseCtx, ParsedBatch, Pseudonymizer, parse_event, parse_json_array, peek_event_id, redact_raw,
    split_json_array, split_ndjson,
};
use sonde_store::{QuarantineEntry, Seen, WriteBatch};

use crate::error::ApiError;
use crate::project::Scope;
use crate::{AppState, authorize, now_ms};

/// Query parameters of `POST /v1/events`.
#[derive(Debug, Default, Deserialize)]
pub struct IngestParams {
    /// Historical import: no skew correction, no late flag.
    #[serde(default)]
    pub backfill: bool,
}

/// Why one event was not stored.
#[derive(Debug, Serialize)]
pub struct EventStatus {
    /// Position in the batch (0-based; the line number minus one in NDJSON, blank lines skipped).
    pub index: usize,
    /// The event's id, when readable.
    pub event_id: Option<String>,
    /// `duplicate` or `rejected`.
    pub status: &'static str,
    /// Stable code (`docs/errors.md`).
    pub code: &'static str,
    /// Offending field.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// What is wrong.
    pub message: String,
}

/// Response of `POST /v1/events`.
#[derive(Debug, Serialize)]
pub struct IngestResponse {
    /// Events stored by this request.
    pub accepted: usize,
    /// Events already stored (retries and conflicting reuses of an id).
    pub duplicates: usize,
    /// Of the duplicates, those whose content differs from the stored event.
    pub conflicting_duplicates: usize,
    /// Events rejected and quarantined.
    pub rejected: usize,
    /// One entry per event not accepted.
    pub errors: Vec<EventStatus>,
}

#[derive(PartialEq)]
enum Format {
    Json,
    Ndjson,
}

fn content_type(headers: &HeaderMap) -> Result<Format, ApiError> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let mime = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    match mime.as_str() {
        "application/json" => Ok(Format::Json),
        "application/x-ndjson" | "application/ndjson" | "application/jsonl" => Ok(Format::Ndjson),
        _ => Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            format!(
                "Content-Type {ct:?} is not supported; send application/json (an array of events) or application/x-ndjson (one event per line)"
            ),
        )),
    }
}

/// Read the body under `limit` bytes, then undo `Content-Encoding: gzip` or `deflate` under
/// the same limit.
pub(crate) async fn read_body(
    headers: &HeaderMap,
    body: Body,
    limit: usize,
) -> Result<Bytes, ApiError> {
    if let Some(len) = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
        && len > limit
    {
        return Err(ApiError::too_large(format!(
            "body of {len} bytes is over the limit of {limit} bytes; split the batch"
        )));
    }
    let raw = axum::body::to_bytes(body, limit).await.map_err(|_| {
        ApiError::too_large(format!(
            "body is over the limit of {limit} bytes; split the batch"
        ))
    })?;
    let encoding = headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .map(|s| s.trim().to_ascii_lowercase());
    match encoding.as_deref() {
        None | Some("identity") => Ok(raw),
        Some("gzip") | Some("x-gzip") => {
            let mut out = Vec::with_capacity(raw.len() * 4);
            let mut dec = flate2::read::MultiGzDecoder::new(&raw[..]).take(limit as u64 + 1);
            dec.read_to_end(&mut out).map_err(|e| {
                ApiError::bad_request("invalid_encoding", format!("body is not valid gzip: {e}"))
            })?;
            if out.len() > limit {
                return Err(ApiError::too_large(format!(
                    "decompressed body is over the limit of {limit} bytes; split the batch"
                )));
            }
            Ok(Bytes::from(out))
        }
        Some("deflate") => {
            // HTTP's deflate is zlib-wrapped; some clients send raw deflate: accept both.
            let inflate = |zlib: bool| {
                let mut out = Vec::with_capacity(raw.len() * 4);
                let r = if zlib {
                    flate2::read::ZlibDecoder::new(&raw[..])
                        .take(limit as u64 + 1)
                        .read_to_end(&mut out)
                } else {
                    flate2::read::DeflateDecoder::new(&raw[..])
                        .take(limit as u64 + 1)
                        .read_to_end(&mut out)
                };
                r.map(|_| out)
            };
            let out = inflate(true).or_else(|_| inflate(false)).map_err(|e| {
                ApiError::bad_request(
                    "invalid_encoding",
                    format!("body is not valid deflate: {e}"),
                )
            })?;
            if out.len() > limit {
                return Err(ApiError::too_large(format!(
                    "decompressed body is over the limit of {limit} bytes; split the batch"
                )));
            }
            Ok(Bytes::from(out))
        }
        Some(other) => Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_encoding",
            format!("Content-Encoding {other:?} is not supported; use gzip, deflate or none"),
        )),
    }
}

/// Split a body into the raw text of each event.
fn split(body: &[u8], format: Format) -> Result<Vec<&[u8]>, ApiError> {
    match format {
        Format::Ndjson => Ok(split_ndjson(body)),
        Format::Json => {
            let first = body.iter().find(|b| !b.is_ascii_whitespace());
            if first == Some(&b'{') {
                return Ok(vec![body]);
            }
            split_json_array(body).map_err(|e| {
                ApiError::bad_request(
                    "invalid_body",
                    format!("body is not a JSON array of events: {e}"),
                )
            })
        }
    }
}

/// Parse every event of a body: a JSON array in one pass when it is well formed, otherwise
/// (and for NDJSON or a single object) split first so each event is parsed alone.
fn parse<'a>(
    body: &'a [u8],
    format: Format,
    ctx: &ParseCtx<'_>,
    max_events: usize,
) -> Result<ParsedBatch<'a>, ApiError> {
    if format == Format::Json
        && let Some(parsed) = parse_json_array(body, ctx, max_events)
    {
        return Ok(parsed);
    }
    let raws = split(body, format)?;
    if raws.len() > max_events {
        return Err(ApiError::too_large(format!(
            "batch holds {} events, over the limit of {max_events}; split it",
            raws.len(),
        )));
    }
    Ok(raws
        .into_iter()
        .map(|raw| (raw, parse_event(raw, ctx)))
        .collect())
}

/// The handler.
pub async fn post_events(
    State(state): State<AppState>,
    Query(params): Query<IngestParams>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let started = std::time::Instant::now();
    authorize(&state, &headers, Scope::Write)?;
    let format = content_type(&headers)?;
    let limits = &state.config.limits;
    if let Err(e) = state.store.admit_within().await {
        // Refuse before parsing, but drain the body so the client reads the answer on a
        // connection that stays usable rather than a reset.
        let _ = axum::body::to_bytes(body, limits.max_body_bytes).await;
        return Err(e.into());
    }
    let body = read_body(&headers, body, limits.max_body_bytes).await?;
    let read_at = std::time::Instant::now();
    let received_at = now_ms();
    let pseudo: &dyn Pseudonymizer = state.pseudonymizer.as_ref();
    let ctx = ParseCtx {
        policy: state.config.time_policy,
        pseudonymizer: pseudo,
        received_at,
        backfill: params.backfill,
        limits: limits.event,
    };
    let parsed = parse(&body, format, &ctx, limits.max_events_per_batch)?;
    let mut batch = WriteBatch {
        events: Vec::with_capacity(parsed.len()),
        ..WriteBatch::default()
    };
    let mut accepted_index = Vec::with_capacity(parsed.len());
    // The batch's distinct (type, surface) sources, and each accepted event's index into
    // them, for the per-source ingest tally: one string per source, not per event.
    let mut sources: Vec<(&'static str, String)> = Vec::new();
    let mut source_of: Vec<usize> = Vec::with_capacity(parsed.len());
    let mut errors = Vec::new();
    let mut raws = Vec::with_capacity(parsed.len());
    for (index, (raw, result)) in parsed.into_iter().enumerate() {
        raws.push(raw);
        match result {
            Ok(e) => {
                accepted_index.push(index);
                let kind = e.event_type().as_str();
                let surface = match &e.data.body {
                    sonde_model::EventBody::Decision(d) => d.surface.as_str(),
                    _ => "",
                };
                let at = match sources.iter().position(|(k, s)| *k == kind && s == surface) {
                    Some(i) => i,
                    None => {
                        sources.push((kind, surface.to_string()));
                        sources.len() - 1
                    }
                };
                source_of.push(at);
                batch.events.push(e);
            }
            Err(r) => {
                batch.quarantine.push(QuarantineEntry {
                    received_at,
                    event_id: r.event_id.clone(),
                    code: r.error.code.as_str().to_string(),
                    field: r.error.field.clone(),
                    message: r.error.message.clone(),
                    raw: redact_raw(raw, pseudo),
                    key_id: pseudo.key_id().to_string(),
                });
                errors.push(EventStatus {
                    index,
                    event_id: r.event_id,
                    status: "rejected",
                    code: r.error.code.as_str(),
                    field: (!r.error.field.is_empty()).then_some(r.error.field),
                    message: r.error.message,
                });
            }
        }
    }
    let rejected = errors.len();
    let parsed_at = std::time::Instant::now();
    let outcome = state.store.write(batch).await?;
    let t = outcome.timings;
    state.ingest_stages.observe([
        read_at.duration_since(started),
        parsed_at.duration_since(read_at),
        t.prepare,
        t.durable,
        t.apply,
        t.resume,
    ]);
    state
        .tally
        .add(&outcome.seen, &source_of, &sources, received_at);
    let mut duplicates = 0;
    let mut conflicting = 0;
    for (seen, index) in outcome.seen.iter().zip(accepted_index) {
        let (code, message) = match seen {
            Seen::New => continue,
            Seen::Duplicate => (
                "duplicate",
                "an event with this event_id was already stored; this copy was dropped",
            ),
            Seen::Conflict => {
                conflicting += 1;
                (
                    "conflicting_duplicate",
                    "an event with this event_id but different content was already stored; this copy was dropped",
                )
            }
        };
        duplicates += 1;
        errors.push(EventStatus {
            index,
            // Duplicates are rare: read their id again rather than copy every id up front.
            event_id: peek_event_id(raws[index]),
            status: "duplicate",
            code,
            field: None,
            message: message.to_string(),
        });
    }
    errors.sort_by_key(|e| e.index);
    let accepted = outcome.seen.len() - duplicates;
    tracing::debug!(
        accepted,
        duplicates,
        rejected,
        backfill = params.backfill,
        "batch stored"
    );
    Ok(axum::Json(IngestResponse {
        accepted,
        duplicates,
        conflicting_duplicates: conflicting,
        rejected,
        errors,
    })
    .into_response())
}
