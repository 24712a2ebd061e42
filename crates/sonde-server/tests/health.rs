//! `GET /v1/health/data` over hand-made traffic with every kind of trouble.

mod common;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use common::{app, call, get};
use serde_json::{Value, json};

fn now() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

fn decision(id: &str, t: i64, user: &str) -> Value {
    json!({"type": "decision", "event_id": id, "timestamp": t, "user_id": user,
        "session_id": format!("s-{user}"), "request_id": format!("r-{id}"), "surface": "home_feed",
        "model": {"name": "m", "version": "v1"},
        "items": [{"item_id": format!("i-{id}"), "position": 1}, {"item_id": "shared", "position": 2}]})
}

async fn send(app: &common::App, events: &[Value]) -> Value {
    let body: String = events.iter().map(|e| format!("{e}\n")).collect();
    let req = Request::post("/v1/events")
        .header("authorization", format!("Bearer {}", app.keys.write_key))
        .header("content-type", "application/x-ndjson")
        .body(Body::from(body))
        .expect("request");
    let (s, v) = call(app, req).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    v
}

#[tokio::test]
async fn health_report_counts_every_kind_of_trouble() {
    let app = app();
    let t = now();
    let mut events: Vec<Value> = (0..4)
        .map(|i| decision(&format!("d{i}"), t - 2_000, &format!("u{i}")))
        .collect();
    // Late: 8 days old (the late horizon is 7 days).
    events.push(decision("late", t - 8 * 86_400_000, "u9"));
    // An interaction with its decision, one without, and one rejected event.
    events.push(
        json!({"type": "interaction", "event_id": "x1", "timestamp": t - 1_000,
        "anonymous_id": "a", "request_id": "r-d0", "item_id": "i-d0", "action": "click"}),
    );
    events.push(
        json!({"type": "interaction", "event_id": "x2", "timestamp": t - 1_000,
        "anonymous_id": "a", "request_id": "r-missing", "item_id": "z", "action": "click"}),
    );
    events.push(
        json!({"type": "decision", "event_id": "bad", "timestamp": t,
        "anonymous_id": "a", "request_id": "r-bad", "model": {"name": "m", "version": "v1"},
        "items": []}),
    );
    let v = send(&app, &events).await;
    assert_eq!(v["rejected"], 1, "{v}");
    // A retry, and a reused id with other content.
    let mut changed = decision("d1", t - 2_000, "u1");
    changed["request_id"] = json!("r-other");
    let v = send(&app, &[decision("d0", t - 2_000, "u0"), changed]).await;
    assert_eq!(v["duplicates"], 2, "{v}");

    let (s, h) = get(&app, "/v1/health/data?grace_minutes=0").await;
    assert_eq!(s, StatusCode::OK, "{h}");
    let source = |kind: &str| -> Value {
        h["sources"]
            .as_array()
            .expect("sources")
            .iter()
            .find(|s| s["type"] == kind)
            .cloned()
            .unwrap_or_else(|| panic!("no {kind} in {h}"))
    };
    let d = source("decision");
    assert_eq!(d["surface"], "home_feed");
    assert_eq!(d["events"], 5);
    assert_eq!(d["late_rate"], 0.2);
    assert_eq!(d["future_rate"], 0.0);
    assert_eq!(d["since_start"]["accepted"], 5);
    assert_eq!(d["since_start"]["duplicates"], 2);
    assert_eq!(d["since_start"]["conflicting_duplicates"], 1);
    assert!((d["duplicate_rate"].as_f64().unwrap_or(0.0) - 2.0 / 7.0).abs() < 1e-12);
    assert!(
        d["seconds_since_last"].as_f64().unwrap_or(99.0) < 60.0,
        "{d}"
    );
    // Lag: 2 s for the four live decisions, 8 days for the late one. Of five values the
    // p50 and the p99 (rank ⌊0.99·4⌋ = 3) are live ones: 2 s within the sketch's 1%, plus
    // the request's own time.
    for q in ["lag_p50_ms", "lag_p99_ms"] {
        let lag = d[q].as_f64().expect("lag");
        assert!((1_980.0..2_600.0).contains(&lag), "{q} {lag}");
    }
    let x = source("interaction");
    assert_eq!(x["events"], 2);
    assert_eq!(x["surface"], "");

    assert_eq!(h["rejections"][0]["code"], "missing_field", "{h}");
    assert_eq!(h["rejections"][0]["count"], 1);
    assert!((h["rejection_rate"].as_f64().unwrap_or(0.0) - 1.0 / 8.0).abs() < 1e-12);
    assert_eq!(h["orphan_interactions"]["checked"], 2);
    assert_eq!(h["orphan_interactions"]["orphans"], 1);
    assert_eq!(h["quarantine"]["total"], 1);
    assert_eq!(h["quarantine"]["unresolved"], 1);
    // The current hour: the four live users and sessions, five distinct items.
    let hour = h["cardinality"]
        .as_array()
        .and_then(|a| a.last())
        .expect("an hour")
        .clone();
    assert_eq!(hour["users"], 4, "{h}");
    assert_eq!(hour["sessions"], 4);
    assert_eq!(hour["items"], 5);

    let req = Request::get("/metrics")
        .header("authorization", format!("Bearer {}", app.keys.read_key))
        .body(Body::empty())
        .expect("request");
    let (_, m) = call(&app, req).await;
    let text = m.as_str().unwrap_or_default();
    assert!(
        text.contains("sonde_source_events_total{type=\"decision\",surface=\"home_feed\",outcome=\"conflicting_duplicate\"} 1\n"),
        "{text}"
    );

    let (s, v) = get(&app, "/v1/health/data?window_minutes=0").await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");

    // The same figures from the per-minute receipts, loaded from the store, then fed live.
    let figures = |h: &Value| -> Vec<Value> {
        let mut out: Vec<Value> = h["sources"]
            .as_array()
            .expect("sources")
            .iter()
            .map(|s| {
                json!([
                    s["type"],
                    s["surface"],
                    s["events"],
                    s["late_rate"],
                    s["future_rate"],
                    s["backfill_rate"],
                    s["lag_p50_ms"],
                    s["lag_p99_ms"]
                ])
            })
            .collect();
        out.push(h["rejections"].clone());
        out.push(h["rejection_rate"].clone());
        out
    };
    let by_sql = figures(&h);
    sonde_server::load_live_sums(app.state.clone()).await;
    let (_, loaded) = get(&app, "/v1/health/data?grace_minutes=0").await;
    assert_eq!(figures(&loaded), by_sql);
    send(&app, &[decision("d9", t - 2_000, "u9")]).await;
    let (_, fed) = get(&app, "/v1/health/data").await;
    let decisions = fed["sources"]
        .as_array()
        .and_then(|a| a.iter().find(|s| s["type"] == "decision"))
        .expect("decisions")
        .clone();
    assert_eq!(decisions["events"], 6, "{fed}");
}
