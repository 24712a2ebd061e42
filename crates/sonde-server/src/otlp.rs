//! `POST /v1/traces`: the OTLP/HTTP trace receiver (OTLP specification 1.x, "OTLP/HTTP").
//!
//! Protobuf (`application/x-protobuf`) or JSON (`application/json`, OTLP's JSON mapping:
//! hex ids, camelCase), `Content-Encoding: gzip` or `deflate`; the answer uses the request's
//! content type. Invalid spans (ids of the wrong length or all zero) are counted in a
//! partial success and the rest stored; an undecodable body is 400, a body past 64 MiB 413,
//! and only retryable conditions (overload 429, storage 503) carry `Retry-After`. Errors
//! carry a `google.rpc.Status`. Spans are deduplicated on (trace id, span id), so a retried
//! export is stored once.

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::trace::v1::{Span, span::SpanKind, status::StatusCode as Code};
use prost::Message;
use serde_json::{Map, Value};
use sonde_model::Pseudonymizer;
use sonde_store::{Seen, SpanRecord, WriteBatch};

use crate::ingest::read_body;
use crate::{ApiError, AppState, Scope, authorize};

/// Largest body, compressed or decompressed (the OTLP receivers' customary 64 MiB).
pub const MAX_BODY_BYTES: usize = 64 << 20;

/// Span and resource attributes that name a person or a device: pseudonymized like the
/// events' user identifiers before anything is written.
const IDENTITY_ATTRIBUTES: [&str; 10] = [
    "enduser.id",
    "user.id",
    "user_id",
    "session.id",
    "session_id",
    "anonymous_id",
    "client.address",
    "net.peer.ip",
    "net.sock.peer.addr",
    "http.client_ip",
];

#[derive(Clone, Copy, PartialEq)]
enum Encoding {
    Proto,
    Json,
}

/// `google.rpc.Status`, the body of an OTLP error response.
#[derive(Clone, PartialEq, Message)]
struct RpcStatus {
    #[prost(int32, tag = "1")]
    code: i32,
    #[prost(string, tag = "2")]
    message: String,
}

fn respond(enc: Encoding, status: StatusCode, proto: Vec<u8>, json: Value) -> Response {
    let (ct, body) = match enc {
        Encoding::Proto => ("application/x-protobuf", proto),
        Encoding::Json => ("application/json", json.to_string().into_bytes()),
    };
    (status, [(header::CONTENT_TYPE, ct)], body).into_response()
}

/// An error as OTLP expects it: a `Status` body in the request's encoding.
fn error(enc: Encoding, e: ApiError) -> Response {
    let status = e.status();
    // gRPC codes: INVALID_ARGUMENT 3, RESOURCE_EXHAUSTED 8, INTERNAL 13, UNAVAILABLE 14,
    // UNAUTHENTICATED 16.
    let code = match status {
        StatusCode::UNAUTHORIZED => 16,
        StatusCode::TOO_MANY_REQUESTS => 8,
        StatusCode::SERVICE_UNAVAILABLE => 14,
        s if s.is_client_error() => 3,
        _ => 13,
    };
    let message = e.message().to_string();
    let proto = RpcStatus {
        code,
        message: message.clone(),
    }
    .encode_to_vec();
    let mut resp = respond(
        enc,
        status,
        proto,
        serde_json::json!({"code": code, "message": message}),
    );
    if let Some(s) = e.retry_after_secs() {
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(s));
    }
    resp
}

fn encoding_of(headers: &HeaderMap) -> Result<Encoding, ApiError> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    match ct.split(';').next().unwrap_or("").trim() {
        "application/x-protobuf" | "application/protobuf" => Ok(Encoding::Proto),
        "application/json" => Ok(Encoding::Json),
        _ => Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            format!(
                "Content-Type {ct:?} is not supported; OTLP/HTTP sends application/x-protobuf or application/json"
            ),
        )),
    }
}

/// The handler.
pub async fn post_traces(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    // Until the content type is known, errors are JSON.
    let enc = match encoding_of(&headers) {
        Ok(e) => e,
        Err(e) => return error(Encoding::Json, e),
    };
    match export(&state, &headers, enc, body).await {
        Ok(r) => r,
        Err(e) => error(enc, e),
    }
}

async fn export(
    state: &AppState,
    headers: &HeaderMap,
    enc: Encoding,
    body: Body,
) -> Result<Response, ApiError> {
    authorize(state, headers, Scope::Write)?;
    if let Err(e) = state.store.admit_within().await {
        let _ = axum::body::to_bytes(body, MAX_BODY_BYTES).await;
        return Err(e.into());
    }
    let bytes = read_body(headers, body, MAX_BODY_BYTES).await?;
    let request = match enc {
        Encoding::Proto => ExportTraceServiceRequest::decode(bytes.as_ref()).map_err(|e| {
            ApiError::bad_request(
                "invalid_body",
                format!("not an OTLP ExportTraceServiceRequest: {e}"),
            )
        })?,
        Encoding::Json => serde_json::from_slice(&bytes).map_err(|e| {
            ApiError::bad_request("invalid_body", format!("not OTLP/JSON traces: {e}"))
        })?,
    };
    let received_at = chrono::Utc::now().timestamp_millis();
    let (spans, rejected, first_error) =
        convert(&request, state.pseudonymizer.as_ref(), received_at);
    let outcome = state
        .store
        .write(WriteBatch {
            spans,
            ..WriteBatch::default()
        })
        .await?;
    let duplicates = outcome
        .span_seen
        .iter()
        .filter(|s| **s != Seen::New)
        .count();
    tracing::debug!(
        stored = outcome.span_seen.len() - duplicates,
        duplicates,
        rejected,
        "spans received"
    );
    let partial = (rejected > 0).then(|| ExportTracePartialSuccess {
        rejected_spans: rejected as i64,
        error_message: first_error.unwrap_or_default(),
    });
    let json = match &partial {
        Some(p) => serde_json::json!({"partialSuccess": {
            "rejectedSpans": p.rejected_spans, "errorMessage": p.error_message}}),
        None => serde_json::json!({}),
    };
    let proto = ExportTraceServiceResponse {
        partial_success: partial,
    }
    .encode_to_vec();
    Ok(respond(enc, StatusCode::OK, proto, json))
}

/// An attribute value as JSON; bytes as hex.
fn any_value(v: &AnyValue) -> Value {
    match &v.value {
        None => Value::Null,
        Some(any_value::Value::StringValue(s)) => Value::String(s.clone()),
        Some(any_value::Value::BoolValue(b)) => Value::Bool(*b),
        Some(any_value::Value::IntValue(i)) => Value::from(*i),
        Some(any_value::Value::DoubleValue(d)) => Value::from(*d),
        Some(any_value::Value::ArrayValue(a)) => {
            Value::Array(a.values.iter().map(any_value).collect())
        }
        Some(any_value::Value::KvlistValue(kv)) => attributes(&kv.values, None),
        Some(any_value::Value::BytesValue(b)) => Value::String(hex::encode(b)),
        // Newer oneof members (references into a string table) carry no value of their own.
        #[allow(unreachable_patterns)]
        Some(_) => Value::Null,
    }
}

/// Attributes as a JSON object, identity attributes pseudonymized when `pseudo` is given.
fn attributes(kvs: &[KeyValue], pseudo: Option<&dyn Pseudonymizer>) -> Value {
    let mut m = Map::new();
    for kv in kvs {
        let mut v = kv.value.as_ref().map_or(Value::Null, any_value);
        if let Some(p) = pseudo
            && IDENTITY_ATTRIBUTES.contains(&kv.key.as_str())
        {
            v = match v {
                Value::String(s) => Value::String(p.apply(&s)),
                Value::Null => Value::Null,
                other => Value::String(p.apply(&other.to_string())),
            };
        }
        m.insert(kv.key.clone(), v);
    }
    Value::Object(m)
}

fn string_attr(kvs: &[KeyValue], key: &str) -> Option<String> {
    kvs.iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|v| match &v.value {
            Some(any_value::Value::StringValue(s)) => Some(s.clone()),
            Some(any_value::Value::IntValue(i)) => Some(i.to_string()),
            _ => None,
        })
}

fn kind(k: i32) -> &'static str {
    match SpanKind::try_from(k) {
        Ok(SpanKind::Internal) => "internal",
        Ok(SpanKind::Server) => "server",
        Ok(SpanKind::Client) => "client",
        Ok(SpanKind::Producer) => "producer",
        Ok(SpanKind::Consumer) => "consumer",
        _ => "unspecified",
    }
}

/// Why a span cannot be stored, if it cannot.
fn invalid(span: &Span) -> Option<String> {
    let id_ok = |b: &[u8], n: usize| b.len() == n && b.iter().any(|x| *x != 0);
    if !id_ok(&span.trace_id, 16) {
        return Some(format!(
            "span {:?}: trace_id must be 16 bytes, not all zero",
            span.name
        ));
    }
    if !id_ok(&span.span_id, 8) {
        return Some(format!(
            "span {:?}: span_id must be 8 bytes, not all zero",
            span.name
        ));
    }
    if !span.parent_span_id.is_empty() && span.parent_span_id.len() != 8 {
        return Some(format!(
            "span {:?}: parent_span_id must be empty or 8 bytes",
            span.name
        ));
    }
    None
}

/// The request's spans as records; returns them, the number rejected and the first reason.
fn convert(
    req: &ExportTraceServiceRequest,
    pseudo: &dyn Pseudonymizer,
    received_at: i64,
) -> (Vec<SpanRecord>, usize, Option<String>) {
    let mut out = Vec::new();
    let mut rejected = 0;
    let mut first_error = None;
    for rs in &req.resource_spans {
        let resource = rs.resource.as_ref().map_or(&[][..], |r| &r.attributes[..]);
        let service_name = string_attr(resource, "service.name");
        let resource_attributes =
            (!resource.is_empty()).then(|| attributes(resource, Some(pseudo)).to_string());
        for ss in &rs.scope_spans {
            let scope_name = ss
                .scope
                .as_ref()
                .map(|s| s.name.clone())
                .filter(|n| !n.is_empty());
            for span in &ss.spans {
                if let Some(reason) = invalid(span) {
                    rejected += 1;
                    first_error.get_or_insert(reason);
                    continue;
                }
                let attr = |k: &str| string_attr(&span.attributes, k);
                let status = span.status.as_ref();
                out.push(SpanRecord {
                    trace_id: hex::encode(&span.trace_id),
                    span_id: hex::encode(&span.span_id),
                    parent_span_id: (!span.parent_span_id.is_empty())
                        .then(|| hex::encode(&span.parent_span_id)),
                    name: span.name.clone(),
                    kind: kind(span.kind).into(),
                    start_unix_nano: span.start_time_unix_nano,
                    end_unix_nano: span.end_time_unix_nano,
                    status_code: match status.map(|s| Code::try_from(s.code)) {
                        Some(Ok(Code::Ok)) => "ok",
                        Some(Ok(Code::Error)) => "error",
                        _ => "unset",
                    }
                    .into(),
                    status_message: status.map(|s| s.message.clone()).filter(|m| !m.is_empty()),
                    service_name: service_name.clone(),
                    scope_name: scope_name.clone(),
                    request_id: attr("sonde.request_id"),
                    component: attr("sonde.component"),
                    surface: attr("sonde.surface"),
                    model_version: attr("sonde.model_version"),
                    experiment: attr("sonde.experiment"),
                    variant: attr("sonde.variant"),
                    attributes: (!span.attributes.is_empty())
                        .then(|| attributes(&span.attributes, Some(pseudo)).to_string()),
                    resource_attributes: resource_attributes.clone(),
                    received_at,
                });
            }
        }
    }
    (out, rejected, first_error)
}
