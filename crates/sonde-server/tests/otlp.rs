//! `POST /v1/traces` through the real router and store: protobuf and JSON, gzip and deflate,
//! partial success, dedup of retried exports, errors in OTLP's form, pseudonymized identity
//! attributes, component spans in the latency rollups.

mod common;

use std::io::Write;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use common::{App, app, get, ingest};
use http_body_util::BodyExt;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message;
use serde_json::{Value, json};
use tower::ServiceExt;

fn kv(k: &str, v: &str) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(v.into())),
        }),
        ..Default::default()
    }
}

fn now_ns() -> u64 {
    chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0) as u64
}

fn span(trace: u8, id: u8, name: &str, ms: u64, attrs: Vec<KeyValue>) -> Span {
    let start = now_ns() - 60_000_000_000;
    Span {
        trace_id: vec![trace; 16],
        span_id: vec![id; 8],
        name: name.into(),
        kind: 2,
        start_time_unix_nano: start,
        end_time_unix_nano: start + ms * 1_000_000,
        attributes: attrs,
        ..Default::default()
    }
}

fn request(spans: Vec<Span>) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![kv("service.name", "ranker")],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

async fn post(
    app: &App,
    ct: &str,
    encoding: Option<&str>,
    key: &str,
    body: Vec<u8>,
) -> (StatusCode, String, Option<String>, Vec<u8>) {
    let mut req = Request::post("/v1/traces")
        .header("authorization", format!("Bearer {key}"))
        .header("content-type", ct);
    if let Some(e) = encoding {
        req = req.header("content-encoding", e);
    }
    let resp = app
        .router
        .clone()
        .oneshot(req.body(Body::from(body)).expect("request"))
        .await
        .expect("response");
    let status = resp.status();
    let ct = resp.headers()["content-type"]
        .to_str()
        .unwrap_or_default()
        .to_string();
    let retry = resp
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let body = resp
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes()
        .to_vec();
    (status, ct, retry, body)
}

/// POST the concatenated `parts` gzipped, as protobuf.
async fn post_gzip(
    app: &App,
    key: &str,
    parts: &[&[u8]],
) -> (StatusCode, String, Option<String>, Vec<u8>) {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    for p in parts {
        gz.write_all(p).expect("gzip");
    }
    post(
        app,
        "application/x-protobuf",
        Some("gzip"),
        key,
        gz.finish().expect("gzip"),
    )
    .await
}

async fn sql(app: &App, q: &str) -> Vec<Vec<Value>> {
    let req = Request::post("/v1/query")
        .header("authorization", format!("Bearer {}", app.keys.read_key))
        .header("content-type", "application/json")
        .body(Body::from(json!({"sql": q}).to_string()))
        .expect("request");
    let resp = app.router.clone().oneshot(req).await.expect("response");
    let bytes = resp.into_body().collect().await.expect("body").to_bytes();
    let v: Value = serde_json::from_slice(&bytes).expect("json");
    serde_json::from_value(v["rows"].clone()).unwrap_or_else(|_| panic!("{v}"))
}

#[tokio::test]
async fn protobuf_export_is_stored_once_with_partial_success() {
    let app = app();
    let wk = app.keys.write_key.clone();
    let mut bad = span(9, 9, "bad", 1, vec![]);
    bad.trace_id = vec![0; 16];
    let req = request(vec![
        span(
            1,
            1,
            "rank",
            30,
            vec![kv("sonde.request_id", "req-1"), kv("enduser.id", "alice")],
        ),
        span(1, 2, "inference", 21, vec![kv("sonde.request_id", "req-1")]),
        bad,
    ]);
    let (s, ct, _, body) = post(
        &app,
        "application/x-protobuf",
        None,
        &wk,
        req.encode_to_vec(),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(ct, "application/x-protobuf");
    let resp = ExportTraceServiceResponse::decode(body.as_slice()).expect("response proto");
    let partial = resp.partial_success.expect("partial success");
    assert_eq!(partial.rejected_spans, 1);
    assert!(
        partial.error_message.contains("trace_id"),
        "{}",
        partial.error_message
    );

    // A retried export (gzip this time) is stored once.
    let (s, _, _, _) = post_gzip(&app, &wk, &[&req.encode_to_vec()]).await;
    assert_eq!(s, StatusCode::OK);
    let rows = sql(&app, "SELECT name, trace_id, span_id, duration_ms, service_name, request_id, kind FROM spans ORDER BY name").await;
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert_eq!(rows[0][0], "inference");
    assert_eq!(rows[0][1], "01".repeat(16));
    assert_eq!(rows[0][2], "02".repeat(8));
    assert_eq!(rows[0][3], 21.0);
    assert_eq!(rows[0][4], "ranker");
    assert_eq!(rows[0][5], "req-1");
    assert_eq!(rows[0][6], "server");

    // The raw identity never reaches storage.
    let attrs = sql(&app, "SELECT attributes FROM spans WHERE name = 'rank'").await;
    let text = attrs[0][0].as_str().expect("attributes");
    assert!(!text.contains("alice"), "{text}");
    let stored: Value = serde_json::from_str(text).expect("json");
    assert_eq!(stored["enduser.id"].as_str().map(str::len), Some(32));

    // Spans join their decision by the request id.
    ingest(&app, format!(
        "{}\n",
        json!({"type": "decision", "event_id": "d1", "timestamp": chrono::Utc::now().timestamp_millis(),
            "anonymous_id": "a", "request_id": "req-1", "surface": "home_feed",
            "model": {"name": "m", "version": "v1"}, "items": [{"item_id": "i", "position": 1}],
            "latency_ms": {"total": 30}})
    ).into_bytes()).await;
    let joined = sql(
        &app,
        "SELECT count(*) FROM spans s JOIN decisions d ON s.request_id = d.request_id",
    )
    .await;
    assert_eq!(joined[0][0], 2);
}

#[tokio::test]
async fn json_export_with_deflate_and_component_spans_in_the_rollups() {
    let app = app();
    let start = now_ns() - 120_000_000_000;
    let body = json!({"resourceSpans": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "ranker"}}]},
        "scopeSpans": [{"scope": {"name": "manual"}, "spans": [{
            "traceId": "5b8efff798038103d269b633813fc60c",
            "spanId": "eee19b7ec3c1b174",
            "parentSpanId": "eee19b7ec3c1b173",
            "name": "model.inference",
            "kind": 3,
            "startTimeUnixNano": start.to_string(),
            "endTimeUnixNano": (start + 42_000_000).to_string(),
            "attributes": [
                {"key": "sonde.component", "value": {"stringValue": "inference"}},
                {"key": "sonde.surface", "value": {"stringValue": "home_feed"}},
                {"key": "retries", "value": {"intValue": "2"}}
            ],
            "status": {"code": 2, "message": "slow"}
        }]}]
    }]});
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    z.write_all(body.to_string().as_bytes()).expect("deflate");
    let (s, ct, _, resp) = post(
        &app,
        "application/json",
        Some("deflate"),
        &app.keys.write_key,
        z.finish().expect("deflate"),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{}", String::from_utf8_lossy(&resp));
    assert_eq!(ct, "application/json");
    assert_eq!(
        serde_json::from_slice::<Value>(&resp).expect("json"),
        json!({})
    );
    let rows = sql(&app, "SELECT trace_id, parent_span_id, kind, status_code, status_message, duration_ms, scope_name, attributes FROM spans").await;
    assert_eq!(rows[0][0], "5b8efff798038103d269b633813fc60c");
    assert_eq!(rows[0][1], "eee19b7ec3c1b173");
    assert_eq!(rows[0][2], "client");
    assert_eq!(rows[0][3], "error");
    assert_eq!(rows[0][4], "slow");
    assert_eq!(rows[0][5], 42.0);
    assert_eq!(rows[0][6], "manual");
    let attrs: Value = serde_json::from_str(rows[0][7].as_str().expect("attrs")).expect("json");
    assert_eq!(attrs["retries"], 2);

    // The span's duration feeds the inference component of home_feed.
    let (s, v) = get(
        &app,
        "/v1/latency?surface=home_feed&component=inference&q=1&from=0",
    )
    .await;
    assert_eq!(
        s,
        StatusCode::BAD_REQUEST,
        "a range over 100,000 minutes is refused: {v}"
    );
    let from = (start / 1_000_000) as i64 - 60_000;
    let (s, v) = get(
        &app,
        &format!("/v1/latency?surface=home_feed&component=inference&q=1&from={from}&step=1h"),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["series"][0]["points"][0]["count"], 1, "{v}");
    assert_eq!(v["series"][0]["points"][0]["quantiles"][0], 42.0);
}

#[tokio::test]
async fn errors_take_otlp_form() {
    let app = app();
    let wk = app.keys.write_key.clone();
    #[derive(Clone, PartialEq, prost::Message)]
    struct RpcStatus {
        #[prost(int32, tag = "1")]
        code: i32,
        #[prost(string, tag = "2")]
        message: String,
    }
    let (s, ct, retry, body) = post(
        &app,
        "application/x-protobuf",
        None,
        &wk,
        b"\xff\xff\xff not protobuf".to_vec(),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(ct, "application/x-protobuf");
    assert_eq!(retry, None, "not retryable");
    let status = RpcStatus::decode(body.as_slice()).expect("google.rpc.Status");
    assert_eq!(status.code, 3);
    assert!(
        status.message.contains("ExportTraceServiceRequest"),
        "{}",
        status.message
    );

    let (s, _, _, body) = post(
        &app,
        "application/json",
        None,
        &wk,
        b"{\"resourceSpans\": 7}".to_vec(),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let v: Value = serde_json::from_slice(&body).expect("json status");
    assert_eq!(v["code"], 3);

    let (s, _, _, _) = post(&app, "text/plain", None, &wk, b"x".to_vec()).await;
    assert_eq!(s, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let (s, _, _, body) = post(
        &app,
        "application/x-protobuf",
        None,
        &app.keys.read_key,
        vec![],
    )
    .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert_eq!(RpcStatus::decode(body.as_slice()).expect("status").code, 16);

    // 65 MiB of zeros, gzipped to a few kilobytes: 413 once decompressed past 64 MiB.
    let zeros = vec![0u8; 1 << 20];
    let (s, _, _, _) = post_gzip(&app, &wk, &vec![zeros.as_slice(); 65]).await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE);
    let rows = sql(&app, "SELECT count(*) FROM spans").await;
    assert_eq!(rows[0][0], 0, "nothing stored by a failed request");
}
