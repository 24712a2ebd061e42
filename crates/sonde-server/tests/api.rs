//! The HTTP API through the real router and store: per-event statuses, whole-request
//! errors, skew correction, backfill, quarantine, read-only SQL, privacy.

use std::io::Write;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use sonde_server::{AppState, NewKeys, ServerConfig};
use tower::ServiceExt;

struct App {
    router: Router,
    state: AppState,
    keys: NewKeys,
    dir: tempfile::TempDir,
}

fn app_with(tune: impl FnOnce(&mut ServerConfig)) -> App {
    let dir = tempfile::tempdir().expect("tmp");
    let keys = sonde_server::ensure_project(dir.path())
        .expect("init")
        .expect("new keys");
    let mut config = ServerConfig::new(dir.path());
    config.store.flush_interval = std::time::Duration::from_secs(3600);
    tune(&mut config);
    let state = sonde_server::open(config).expect("open");
    App {
        router: sonde_server::router(state.clone()),
        state,
        keys,
        dir,
    }
}

fn app() -> App {
    app_with(|_| {})
}

async fn call(app: &App, req: Request<Body>) -> (StatusCode, axum::http::HeaderMap, Value) {
    let resp = app.router.clone().oneshot(req).await.expect("response");
    let status = resp.status();
    let headers = resp.headers().clone();
    let bytes = resp.into_body().collect().await.expect("body").to_bytes();
    let v = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()));
    (status, headers, v)
}

fn post(path: &str, key: &str, ct: &str, body: impl Into<Body>) -> Request<Body> {
    Request::post(path)
        .header("authorization", format!("Bearer {key}"))
        .header("content-type", ct)
        .body(body.into())
        .expect("request")
}

fn post_encoded(
    path: &str,
    key: &str,
    ct: &str,
    encoding: &str,
    body: impl Into<Body>,
) -> Request<Body> {
    Request::post(path)
        .header("authorization", format!("Bearer {key}"))
        .header("content-type", ct)
        .header("content-encoding", encoding)
        .body(body.into())
        .expect("request")
}

fn get(path: &str, key: &str) -> Request<Body> {
    Request::get(path)
        .header("authorization", format!("Bearer {key}"))
        .body(Body::empty())
        .expect("request")
}

async fn sql(app: &App, q: &str) -> Vec<Vec<Value>> {
    let req = post(
        "/v1/query",
        &app.keys.read_key,
        "application/json",
        json!({"sql": q}).to_string(),
    );
    let (s, _, v) = call(app, req).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    serde_json::from_value(v["rows"].clone()).expect("rows")
}

async fn count(app: &App, table: &str) -> i64 {
    sql(app, &format!("SELECT count(*) FROM {table}")).await[0][0]
        .as_i64()
        .expect("count")
}

fn now() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

fn decision(id: &str, user: &str) -> Value {
    json!({"type": "decision", "event_id": id, "timestamp": now(), "user_id": user,
           "request_id": format!("r-{id}"), "surface": "home_feed", "model": {"name": "m", "version": "1"},
           "items": [{"item_id": "a", "position": 1, "score": 0.5}, {"item_id": "b", "position": 2}]})
}

async fn send(app: &App, events: Value) -> (StatusCode, Value) {
    let req = post(
        "/v1/events",
        &app.keys.write_key,
        "application/json",
        events.to_string(),
    );
    let (s, _, v) = call(app, req).await;
    (s, v)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mixed_batch_gets_a_status_per_event() {
    let app = app();
    let mut bad_position = decision("e3", "carol@example.com");
    bad_position["items"][1]["position"] = json!(0);
    // The same event twice (decision() stamps the current time, so build it once).
    let e1 = decision("e1", "alice@example.com").to_string();
    let body = [
        e1.clone(),
        "{oops".to_string(),
        e1,
        bad_position.to_string(),
        String::new(),
        json!({"type": "interaction", "event_id": "i1", "timestamp": now(), "anonymous_id": "dev-1",
               "request_id": "r-e1", "item_id": "a", "action": "click"})
        .to_string(),
    ]
    .join("\n");
    let req = post(
        "/v1/events",
        &app.keys.write_key,
        "application/x-ndjson",
        body,
    );
    let (s, _, v) = call(&app, req).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(
        (
            v["accepted"].as_u64(),
            v["duplicates"].as_u64(),
            v["rejected"].as_u64()
        ),
        (Some(2), Some(1), Some(2))
    );
    let errors = v["errors"].as_array().expect("errors");
    let summary: Vec<(u64, &str, &str)> = errors
        .iter()
        .map(|e| {
            (
                e["index"].as_u64().unwrap_or(99),
                e["status"].as_str().unwrap_or(""),
                e["code"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            (1, "rejected", "invalid_json"),
            (2, "duplicate", "duplicate"),
            (3, "rejected", "invalid_position")
        ]
    );
    assert_eq!(errors[2]["field"], "items[1].position");
    assert_eq!(errors[2]["event_id"], "e3");
    assert_eq!(count(&app, "decisions").await, 1);
    assert_eq!(count(&app, "decision_items").await, 2);
    assert_eq!(count(&app, "interactions").await, 1);
    assert_eq!(count(&app, "quarantine").await, 2);

    // In a JSON array too, a malformed element is one rejected event, not a failed batch.
    let body = format!(
        "[{}, {{\"type\": \"decision\",, }}]",
        decision("e4", "dave@example.com")
    );
    let req = post("/v1/events", &app.keys.write_key, "application/json", body);
    let (s, _, v) = call(&app, req).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(
        (v["accepted"].as_u64(), v["rejected"].as_u64()),
        (Some(1), Some(1))
    );
    assert_eq!(
        (
            v["errors"][0]["index"].as_u64(),
            v["errors"][0]["code"].as_str()
        ),
        (Some(1), Some("invalid_json"))
    );
    assert_eq!(count(&app, "decisions").await, 2);

    // A retry with different content under the same id is a conflicting duplicate.
    let (_, v) = send(&app, json!([decision("e1", "someone-else")])).await;
    assert_eq!(v["conflicting_duplicates"], 1);
    assert_eq!(v["errors"][0]["code"], "conflicting_duplicate");

    // Nothing raw reaches disk: not in the WAL, Parquet, dedup runs or the quarantine.
    app.state.store().flush().expect("flush");
    for entry in walk(app.dir.path()) {
        let bytes = std::fs::read(&entry).expect("read");
        for raw in [
            "alice@example.com",
            "carol@example.com",
            "dev-1",
            "dave@example.com",
            "someone-else",
        ] {
            assert!(
                find(&bytes, raw.as_bytes()).is_none(),
                "{raw} found in {}",
                entry.display()
            );
        }
    }
    let rows = sql(
        &app,
        "SELECT raw FROM quarantine WHERE code = 'invalid_position'",
    )
    .await;
    let raw = rows[0][0].as_str().expect("raw");
    assert!(raw.contains("user_id") && !raw.contains("carol"), "{raw}");
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).expect("dir").flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).expect("gzip");
    e.finish().expect("gzip")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whole_request_errors_store_nothing() {
    let app = app_with(|c| {
        c.limits.max_body_bytes = 4096;
        c.limits.max_events_per_batch = 3;
    });
    let wk = app.keys.write_key.clone();
    let one = json!([decision("w1", "u")]).to_string();
    let four = json!([
        decision("a", "u"),
        decision("b", "u"),
        decision("c", "u"),
        decision("d", "u")
    ]);
    let no_key = Request::post("/v1/events")
        .header("content-type", "application/json")
        .body(Body::from(one.clone()))
        .expect("req");
    let json_ct = "application/json";
    let cases: Vec<(Request<Body>, StatusCode, &str)> = vec![
        (no_key, StatusCode::UNAUTHORIZED, "unauthorized"),
        (
            post("/v1/events", "sonde_w_nope", json_ct, one.clone()),
            StatusCode::UNAUTHORIZED,
            "unauthorized",
        ),
        (
            post("/v1/events", &app.keys.read_key, json_ct, one.clone()),
            StatusCode::UNAUTHORIZED,
            "unauthorized",
        ),
        (
            post("/v1/events", &wk, "text/plain", one.clone()),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
        ),
        (
            post_encoded("/v1/events", &wk, json_ct, "br", one.clone()),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_encoding",
        ),
        (
            post("/v1/events", &wk, json_ct, "x".repeat(5000)),
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
        ),
        (
            post_encoded(
                "/v1/events",
                &wk,
                "application/x-ndjson",
                "gzip",
                gzip(&vec![b' '; 100_000]),
            ),
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
        ),
        (
            post_encoded("/v1/events", &wk, json_ct, "gzip", "not gzip"),
            StatusCode::BAD_REQUEST,
            "invalid_encoding",
        ),
        (
            post("/v1/events", &wk, json_ct, four.to_string()),
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
        ),
        (
            post("/v1/events", &wk, json_ct, "[{\"type\": \"decision\","),
            StatusCode::BAD_REQUEST,
            "invalid_body",
        ),
        (
            post("/v1/events", &wk, json_ct, "42"),
            StatusCode::BAD_REQUEST,
            "invalid_body",
        ),
    ];
    for (req, status, code) in cases {
        let (s, _, v) = call(&app, req).await;
        assert_eq!(
            (s, v["error"]["code"].as_str().unwrap_or("")),
            (status, code),
            "{v}"
        );
        assert!(
            v["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty())
        );
    }
    assert_eq!(count(&app, "decisions").await, 0);
    assert_eq!(count(&app, "quarantine").await, 0);
    // gzip within the limits works.
    let (s, _, v) = call(
        &app,
        post_encoded("/v1/events", &wk, json_ct, "gzip", gzip(one.as_bytes())),
    )
    .await;
    assert_eq!(
        (s, v["accepted"].as_u64()),
        (StatusCode::OK, Some(1)),
        "{v}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overload_is_429_with_retry_after() {
    let app = app_with(|c| {
        c.store.flush_rows = 1_000_000;
        c.store.max_buffered_rows = 1;
    });
    let (s, _) = send(&app, json!([decision("o1", "u"), decision("o2", "u")])).await;
    assert_eq!(s, StatusCode::OK);
    let req = post(
        "/v1/events",
        &app.keys.write_key,
        "application/json",
        json!([decision("o3", "u")]).to_string(),
    );
    let (s, h, v) = call(&app, req).await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (StatusCode::TOO_MANY_REQUESTS, Some("overloaded"))
    );
    assert_eq!(
        h.get("retry-after").and_then(|v| v.to_str().ok()),
        Some("1")
    );
    assert_eq!(count(&app, "decisions").await, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storage_failure_is_503_and_stores_nothing() {
    // Rotate after every write; the segment after the first batch is /dev/full (ENOSPC).
    let app = app_with(|c| c.store.wal_segment_bytes = 1);
    let next_segment = app.dir.path().join("wal").join(format!("{:020}.wal", 3));
    std::os::unix::fs::symlink("/dev/full", &next_segment).expect("symlink");
    let (s, v) = send(&app, json!([decision("s1", "u"), decision("s2", "u")])).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let req = post(
        "/v1/events",
        &app.keys.write_key,
        "application/json",
        json!([decision("s3", "u"), "bad"]).to_string(),
    );
    let (s, h, v) = call(&app, req).await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, Some("storage_unavailable")),
        "{v}"
    );
    assert_eq!(
        h.get("retry-after").and_then(|v| v.to_str().ok()),
        Some("5")
    );
    assert_eq!(count(&app, "decisions").await, 2);
    assert_eq!(count(&app, "quarantine").await, 0);
    let (s, _, _) = call(
        &app,
        Request::get("/readyz").body(Body::empty()).expect("req"),
    )
    .await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skew_correction_and_backfill_flags() {
    let app = app();
    let t = now();
    let day = 86_400_000i64;
    // The client clock runs one hour fast: it stamps and sends in its own time.
    let skewed = json!({"type": "touch", "event_id": "t1", "timestamp": t + 3_600_000 - 2_000,
                        "sent_at": t + 3_600_000, "user_id": "u", "channel": "email"});
    let old = json!({"type": "touch", "event_id": "t2", "timestamp": t - 30 * day, "user_id": "u", "channel": "push"});
    let future = json!({"type": "touch", "event_id": "t3", "timestamp": t + 3 * day, "user_id": "u", "channel": "push"});
    let (s, _) = send(&app, json!([skewed, old, future])).await;
    assert_eq!(s, StatusCode::OK);
    let backfill = json!([{"type": "touch", "event_id": "t4", "timestamp": t - 30 * day, "sent_at": t,
                           "user_id": "u", "channel": "push"}]);
    let req = post(
        "/v1/events?backfill=true",
        &app.keys.write_key,
        "application/json",
        backfill.to_string(),
    );
    let (s, _, _) = call(&app, req).await;
    assert_eq!(s, StatusCode::OK);
    let rows = sql(
        &app,
        "SELECT event_id, \
                CAST(event_time AS BIGINT) - CAST(received_at AS BIGINT), \
                CAST(client_time AS BIGINT), is_late, is_future, is_backfill \
         FROM touches ORDER BY event_id",
    )
    .await;
    // t1: corrected to two seconds before receipt.
    assert_eq!(rows[0][1].as_i64(), Some(-2000), "{rows:?}");
    assert_eq!(rows[0][2].as_i64(), Some(t + 3_600_000 - 2_000));
    assert_eq!(
        (rows[1][3].as_bool(), rows[1][4].as_bool()),
        (Some(true), Some(false))
    );
    assert_eq!(
        (rows[2][3].as_bool(), rows[2][4].as_bool()),
        (Some(false), Some(true))
    );
    assert_eq!(
        (rows[3][3].as_bool(), rows[3][5].as_bool()),
        (Some(false), Some(true))
    );
    assert_eq!(rows[3][2].as_i64(), Some(t - 30 * day));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_api_is_read_only_and_speaks_csv() {
    let app = app();
    send(&app, json!([decision("q1", "u")])).await;
    let rk = app.keys.read_key.clone();
    let q = |k: &str, path: &str, sql: &str| {
        post(path, k, "application/json", json!({"sql": sql}).to_string())
    };
    let (s, _, v) = call(&app, q(&rk, "/v1/query", "DROP TABLE decisions")).await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("read_only")),
        "{v}"
    );
    let (s, _, v) = call(&app, q(&rk, "/v1/query", "SELEC 1")).await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_query")),
        "{v}"
    );
    let (s, _, _) = call(&app, q(&app.keys.write_key, "/v1/query", "SELECT 1")).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (s, _, v) = call(
        &app,
        q(
            &rk,
            "/v1/query?format=csv",
            "SELECT item_id, position, score FROM decision_items ORDER BY position",
        ),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v.as_str(), Some("item_id,position,score\na,1,0.5\nb,2,\n"));
    let (s, _, v) = call(
        &app,
        Request::get("/v1/schema").body(Body::empty()).expect("req"),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["title"], "Sonde event, model v1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quarantine_lists_and_replays_after_a_fix() {
    let app = app();
    let mut broken = decision("fixme", "dana@example.com");
    broken.as_object_mut().expect("obj").remove("surface");
    let (_, v) = send(&app, json!([broken])).await;
    assert_eq!(v["rejected"], 1);
    let (s, _, v) = call(
        &app,
        get("/v1/quarantine?code=missing_field", &app.keys.read_key),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let item = v["items"][0].clone();
    assert_eq!(item["field"], "surface");
    let qid = item["quarantine_id"].as_str().expect("id").to_string();
    let raw: Value = serde_json::from_str(item["raw"].as_str().expect("raw")).expect("json");
    assert_ne!(raw["user_id"], "dana@example.com");

    // Replaying unchanged fails again; replaying the fixed text is accepted.
    let ak = app.keys.admin_key.clone();
    let replay = |body: Value| {
        post(
            "/v1/quarantine/replay",
            &ak,
            "application/json",
            body.to_string(),
        )
    };
    let (s, _, v) = call(&app, replay(json!({"ids": [qid]}))).await;
    assert_eq!(
        (s, v["rejected"].as_u64()),
        (StatusCode::OK, Some(1)),
        "{v}"
    );
    let mut fixed = raw.clone();
    fixed["surface"] = json!("home_feed");
    let (_, _, v) = call(
        &app,
        replay(json!({"ids": [qid], "replace": {qid.clone(): fixed}})),
    )
    .await;
    assert_eq!(v["accepted"], 1, "{v}");
    let rows = sql(
        &app,
        "SELECT user_key FROM decisions WHERE event_id = 'fixme'",
    )
    .await;
    assert_eq!(
        rows[0][0], raw["user_id"],
        "ids are not pseudonymized twice"
    );
    let (_, _, v) = call(&app, get("/v1/quarantine?pending=true", &app.keys.read_key)).await;
    assert_eq!(v["items"].as_array().map(|a| a.len()), Some(0), "{v}");
    // Replay needs the admin key.
    let req = post(
        "/v1/quarantine/replay",
        &app.keys.write_key,
        "application/json",
        json!({"ids": [qid]}).to_string(),
    );
    let (s, _, _) = call(&app, req).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn metrics_are_prometheus_text_behind_a_read_key() {
    let app = app();
    let m1 = decision("m1", "u");
    let (status, _) = send(&app, json!([m1.clone(), decision("m2", "u")])).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = send(&app, json!([m1])).await;
    assert_eq!(status, StatusCode::OK);
    let resp = app
        .router
        .clone()
        .oneshot(get("/metrics", &app.keys.read_key))
        .await
        .expect("response");
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(
        resp.headers()["content-type"],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    let text = String::from_utf8_lossy(&body);
    assert!(text.contains("\nsonde_events_accepted_total 2\n"), "{text}");
    assert!(
        text.contains("\nsonde_events_duplicate_total 1\n"),
        "{text}"
    );
    assert!(text.contains("\nsonde_writable 1\n"), "{text}");
    // Every sample has its HELP and TYPE lines (a histogram's under the family name).
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let name = line.split([' ', '{']).next().unwrap_or_default();
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| {
                let base = name.strip_suffix(s)?;
                text.contains(&format!("# TYPE {base} histogram"))
                    .then_some(base)
            })
            .unwrap_or(name);
        assert!(text.contains(&format!("# TYPE {family} ")), "{name}");
        assert!(text.contains(&format!("# HELP {family} ")), "{name}");
    }
    assert!(
        text.contains("sonde_http_request_duration_seconds_count{route=\"/v1/events\",method=\"POST\",code=\"200\"} 2"),
        "{text}"
    );
    assert!(
        text.contains("sonde_wal_fsync_duration_seconds_bucket{le=\"+Inf\"}"),
        "{text}"
    );
    // Both stored batches went through every ingest stage.
    for stage in sonde_server::INGEST_STAGES {
        assert!(
            text.contains(&format!(
                "sonde_ingest_stage_duration_seconds_count{{stage=\"{stage}\"}} 2"
            )),
            "{stage}: {text}"
        );
    }
    let (status, _, _) = call(
        &app,
        Request::get("/metrics").body(Body::empty()).expect("req"),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}
