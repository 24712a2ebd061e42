//! Helpers of the server's integration tests: an app over a fresh data directory, calls
//! through the router, ingestion of hand-made and simulated events.

#![allow(dead_code)]

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::Value;
use sonde_server::{AppState, NewKeys, ServerConfig};
use tower::ServiceExt;

pub struct App {
    pub router: Router,
    pub state: AppState,
    pub keys: NewKeys,
    _dir: tempfile::TempDir,
}

pub fn app() -> App {
    app_with(|_| {})
}

pub fn app_with(tune: impl FnOnce(&mut ServerConfig)) -> App {
    let dir = tempfile::tempdir().expect("tmp");
    let keys = sonde_server::ensure_project(dir.path())
        .expect("init")
        .expect("new keys");
    let mut config = ServerConfig::new(dir.path());
    tune(&mut config);
    let state = sonde_server::open(config).expect("open");
    App {
        router: sonde_server::router(state.clone()),
        state,
        keys,
        _dir: dir,
    }
}

pub async fn call(app: &App, req: Request<Body>) -> (StatusCode, Value) {
    let resp = app.router.clone().oneshot(req).await.expect("response");
    let status = resp.status();
    let bytes = resp.into_body().collect().await.expect("body").to_bytes();
    let v = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()));
    (status, v)
}

/// Store `ndjson` as a well-behaved client does: a 429 (the flusher is behind, as it can be
/// on a busy test machine) means nothing was stored, so the same batch is sent again.
pub async fn ingest(app: &App, ndjson: Vec<u8>) {
    let body = bytes::Bytes::from(ndjson);
    for _ in 0..600 {
        let req = Request::post("/v1/events?backfill=true")
            .header("authorization", format!("Bearer {}", app.keys.write_key))
            .header("content-type", "application/x-ndjson")
            .body(Body::from(body.clone()))
            .expect("request");
        let (status, v) = call(app, req).await;
        if status == StatusCode::TOO_MANY_REQUESTS {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            continue;
        }
        assert_eq!(status, StatusCode::OK, "{v}");
        assert_eq!(v["rejected"], 0, "{v}");
        return;
    }
    panic!("still answered 429 after 30 s of retries");
}

/// `decisions` simulated decisions and what follows them, ingested in batches under the
/// request limit.
pub async fn simulate_into(app: &App, config: sonde_sim::SimConfig, decisions: usize) {
    let mut sim = sonde_sim::Simulator::new(config);
    let mut events = Vec::new();
    for _ in 0..decisions {
        sim.step(&mut events);
    }
    for chunk in events.chunks(5000) {
        let mut body = Vec::new();
        for e in chunk {
            e.write_json(&mut body);
            body.push(b'\n');
        }
        ingest(app, body).await;
    }
}

pub async fn get(app: &App, path: &str) -> (StatusCode, Value) {
    let req = Request::get(path)
        .header("authorization", format!("Bearer {}", app.keys.read_key))
        .body(Body::empty())
        .expect("request");
    call(app, req).await
}

/// Events as NDJSON.
pub fn lines(events: &[Value]) -> Vec<u8> {
    events
        .iter()
        .flat_map(|e| {
            let mut l = serde_json::to_vec(e).expect("json");
            l.push(b'\n');
            l
        })
        .collect()
}
