//! Latency series, tail attribution, SLOs and burn-rate alerts through the real router and
//! store.

mod common;

use axum::http::StatusCode;
use common::{app, app_with, get, ingest, lines, simulate_into};
use serde_json::{Value, json};
use sonde_latency::{Objective, SloSpec};

const MIN: i64 = 60_000;

/// A whole hour two to three hours ago: recent enough for the rollups' minute tier.
fn t0() -> i64 {
    let now = chrono::Utc::now().timestamp_millis();
    (now - 2 * 3_600_000).div_euclid(3_600_000) * 3_600_000
}

fn decision(id: &str, variant: &str, t: i64, total: f64, comps: Value) -> Value {
    json!({"type": "decision", "event_id": format!("e-{id}"), "timestamp": t,
        "anonymous_id": "a1", "request_id": id, "surface": "home_feed",
        "model": {"name": "ranker", "version": "v1"},
        "experiments": [{"id": "exp", "variant": variant}],
        "items": [{"item_id": "i1", "position": 1}],
        "latency_ms": {"total": total, "components": comps}})
}

#[tokio::test]
async fn latency_series_have_exact_counts_extremes_and_exemplars() {
    let app = app();
    let t0 = t0();
    let mut events = Vec::new();
    for (i, total) in [10.0, 20.0, 30.0, 400.0].into_iter().enumerate() {
        let variant = if i % 2 == 0 { "control" } else { "treatment" };
        events.push(decision(
            &format!("a{i}"),
            variant,
            t0 + i as i64 * 1000,
            total,
            json!({"inference": total / 2.0, "retrieval": 1.0}),
        ));
    }
    events.push(decision(
        "b0",
        "control",
        t0 + MIN + 5,
        50.0,
        json!({"inference": 5.0}),
    ));
    events.push(decision(
        "b1",
        "control",
        t0 + MIN + 6,
        70.0,
        json!({"inference": 7.0}),
    ));
    ingest(&app, lines(&events)).await;

    let range = format!("from={t0}&to={}", t0 + 2 * MIN);
    let (s, v) = get(&app, &format!("/v1/latency?{range}&q=0,0.5,1")).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let points = v["series"][0]["points"].as_array().expect("points").clone();
    assert_eq!(v["series"][0]["group"], "all");
    assert_eq!(points.len(), 2);
    assert_eq!(points[0]["count"], 4);
    assert_eq!(points[0]["decisions"], 4);
    assert_eq!(points[1]["count"], 2);
    // q=0 and q=1 are the exact extremes; the mean is exact.
    assert_eq!(points[0]["quantiles"][0], 10.0);
    assert_eq!(points[0]["quantiles"][2], 400.0);
    assert_eq!(points[0]["mean_ms"], 115.0);
    let median = points[0]["quantiles"][1].as_f64().expect("median");
    assert!((median - 20.0).abs() <= 0.2, "median {median}");
    assert_eq!(points[0]["exemplars"][0]["request_id"], "a3");
    assert_eq!(v["exemplars"][0]["latency_ms"], 400.0);

    let (_, v) = get(
        &app,
        &format!("/v1/latency?{range}&group_by=variant&step=2m"),
    )
    .await;
    let groups: Vec<(String, u64)> = v["series"]
        .as_array()
        .expect("series")
        .iter()
        .map(|s| {
            (
                s["group"].as_str().unwrap_or_default().to_string(),
                s["points"][0]["count"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    assert_eq!(
        groups,
        vec![("exp:control".into(), 4), ("exp:treatment".into(), 2)]
    );

    let (_, v) = get(&app, &format!("/v1/latency?{range}&group_by=component&q=1")).await;
    let names: Vec<&str> = v["series"]
        .as_array()
        .expect("series")
        .iter()
        .filter_map(|s| s["group"].as_str())
        .collect();
    assert_eq!(names, vec!["inference", "retrieval", "total"]);
    assert_eq!(v["series"][0]["points"][0]["quantiles"][0], 200.0);
    assert_eq!(
        v["series"][1]["points"][1]["count"], 0,
        "retrieval missing in minute 2"
    );

    let (_, v) = get(
        &app,
        &format!("/v1/latency?{range}&experiment=exp&variant=treatment&component=inference&q=1"),
    )
    .await;
    assert_eq!(v["series"][0]["points"][0]["quantiles"][0], 200.0);
    assert_eq!(v["series"][0]["points"][0]["count"], 2);

    for (query, code) in [
        ("step=30s", "invalid_parameter"),
        ("variant=control", "missing_parameter"),
        ("q=1.5", "invalid_parameter"),
        ("group_by=color", "invalid_parameter"),
    ] {
        let (s, v) = get(&app, &format!("/v1/latency?{range}&{query}")).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{query}: {v}");
        assert_eq!(v["error"]["code"], code, "{query}: {v}");
    }
    let (s, v) = get(&app, "/v1/latency?from=yesterday").await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    assert_eq!(v["error"]["code"], "invalid_parameter");
}

#[tokio::test]
async fn tail_attribution_names_the_component_that_makes_the_tail() {
    let app = app();
    let t0 = t0();
    let mut events = Vec::new();
    for i in 0..100 {
        let retrieval = 8.0 + (i % 5) as f64;
        events.push(decision(
            &format!("fast{i}"),
            "control",
            t0 + i * 100,
            retrieval + 10.0,
            json!({"inference": 10.0, "retrieval": retrieval}),
        ));
    }
    for i in 0..2 {
        events.push(decision(
            &format!("slow{i}"),
            "control",
            t0 + 20_000 + i,
            520.0,
            json!({"inference": 500.0, "retrieval": 10.0}),
        ));
    }
    ingest(&app, lines(&events)).await;
    let (s, v) = get(
        &app,
        &format!("/v1/latency/tail?from={t0}&to={}&q=0.98", t0 + MIN),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["decisions"], 102);
    assert_eq!(v["tail_decisions"], 2, "{v}");
    let top = &v["components"][0];
    assert_eq!(top["component"], "inference");
    let share = top["tail_share"].as_f64().expect("share");
    assert!((share - 1000.0 / 1040.0).abs() < 1e-12, "{share}");
    assert_eq!(top["tail_mean_ms"], 500.0);
    assert_eq!(top["body_mean_ms"], 10.0);
    assert_eq!(top["excess_ms"], 490.0);
    let unattributed = v["components"]
        .as_array()
        .expect("components")
        .iter()
        .find(|c| c["component"] == "unattributed")
        .expect("unattributed");
    assert!((unattributed["tail_mean_ms"].as_f64().unwrap_or(1.0) - 10.0).abs() < 1e-12);
}

fn feed_slo() -> SloSpec {
    SloSpec {
        name: "home_feed_latency".into(),
        surface: Some("home_feed".into()),
        kind: Objective::Latency,
        threshold_ms: Some(150.0),
        target: 0.999,
        period_days: 28,
    }
}

/// Three hours of simulated traffic ending now, the last minutes in a latency spike;
/// returns the spike's start.
async fn spike_ending_now(app: &common::App) -> i64 {
    let now = chrono::Utc::now().timestamp_millis();
    let start = now - 3 * 3_600_000;
    // The scenario starts its 3-minute spike 2 minutes after the given time: it runs over
    // the 3 whole minutes before the current one (evaluations fall on whole minutes, so an
    // unaligned start would add up to a minute to the time to page).
    let base = now.div_euclid(MIN) * MIN;
    let incidents = sonde_sim::scenario("latency-spike", base - 5 * MIN).expect("known scenario");
    let spike = incidents[0].start_ms;
    simulate_into(
        app,
        sonde_sim::SimConfig {
            seed: 5,
            start_ms: start,
            decisions_per_sec: 3.0,
            incidents,
            ..Default::default()
        },
        // Up to about 30 s before now.
        (3.0 * (3.0 * 3600.0 - 30.0)) as usize,
    )
    .await;
    spike
}

#[tokio::test]
async fn a_latency_spike_pages_and_the_backtest_shows_when() {
    let app = app_with(|c| c.slos = vec![feed_slo()]);
    let spike = spike_ending_now(&app).await;
    let now = chrono::Utc::now().timestamp_millis();

    // Live: the spike is on now, so the page fires; 40 minutes on (no new traffic) it clears.
    // (Three hours of history make the ticket rules fire too: their one-day window holds
    // only those three hours. Pages are what this test is about.)
    let changes = app.state.evaluate_alerts(now);
    assert!(
        changes.iter().any(|t| t.severity.as_str() == "page"),
        "{changes:?}"
    );
    let (s, v) = get(&app, "/v1/alerts").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let page = v["alerts"]
        .as_array()
        .expect("alerts")
        .iter()
        .find(|a| a["severity"] == "page")
        .expect("page alert")
        .clone();
    assert_eq!(page["firing"], true, "{v}");
    assert!(page["burn_rate"].as_f64().unwrap_or(0.0) > 14.4, "{page}");
    let changes = app.state.evaluate_alerts(now + 40 * MIN);
    assert!(
        changes
            .iter()
            .any(|t| t.severity.as_str() == "page" && format!("{:?}", t.status) == "Resolved"),
        "{changes:?}"
    );

    // The SLO itself: budget spent by the spike, windows and rules evaluated.
    let (s, v) = get(&app, "/v1/slo").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let slo = &v["slos"][0];
    assert_eq!(slo["name"], "home_feed_latency");
    assert_eq!(
        slo["evaluation"]["windows"].as_array().map(Vec::len),
        Some(7)
    );
    let remaining = slo["evaluation"]["budget_remaining"]
        .as_f64()
        .expect("budget");
    assert!(remaining < 1.0, "{slo}");

    // Backtest over the stored history, every minute: the first page comes within 2
    // minutes of the spike's start, and nothing fires before it.
    let (s, v) = get(
        &app,
        &format!(
            "/v1/alerts/backtest?from={}&to={now}&step_secs=60",
            spike - 2 * 3_600_000
        ),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let first = v["transitions"]
        .as_array()
        .expect("transitions")
        .iter()
        .find(|t| t["severity"] == "page")
        .expect("a page")
        .clone();
    assert_eq!(first["status"], "firing");
    let before = v["transitions"]
        .as_array()
        .expect("transitions")
        .iter()
        .filter(|t| t["at_ms"].as_i64().unwrap_or(0) <= spike)
        .count();
    assert_eq!(before, 0, "{v}");
    let at = first["at_ms"].as_i64().expect("at");
    assert!(
        at > spike && at <= spike + 2 * MIN,
        "paged {} s after the spike started",
        (at - spike) / 1000
    );
}

#[test]
fn the_webhook_body_is_alertmanagers() {
    let t = sonde_latency::Transition {
        slo: "home_feed_latency".into(),
        severity: sonde_latency::Severity::Page,
        status: sonde_latency::AlertStatus::Resolved,
        at_ms: 1_767_225_600_000 + 10 * MIN,
        started_ms: 1_767_225_600_000,
        burn_rate: 20.0,
    };
    let body = sonde_server::alerts::webhook_body(&[feed_slo()], &[t], "http://sonde:7070");
    assert_eq!(body["version"], "4");
    assert_eq!(body["status"], "resolved");
    let a = &body["alerts"][0];
    assert_eq!(a["labels"]["alertname"], "SloBurnRate");
    assert_eq!(a["labels"]["severity"], "page");
    assert_eq!(a["labels"]["surface"], "home_feed");
    assert_eq!(a["startsAt"], "2026-01-01T00:00:00.000Z");
    assert_eq!(a["endsAt"], "2026-01-01T00:10:00.000Z");
    assert_eq!(
        a["annotations"]["description"],
        "99.9% of home_feed decisions under 150 ms over 28 days"
    );
}

async fn metrics(app: &common::App, accept: &str) -> (String, String) {
    use http_body_util::BodyExt;
    use tower::ServiceExt;
    let req = axum::http::Request::get("/metrics")
        .header("authorization", format!("Bearer {}", app.keys.read_key))
        .header("accept", accept)
        .body(axum::body::Body::empty())
        .expect("request");
    let resp = app.router.clone().oneshot(req).await.expect("response");
    let ct = resp.headers()["content-type"]
        .to_str()
        .unwrap_or_default()
        .to_string();
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    (ct, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test]
async fn metrics_have_latency_histograms_with_slo_buckets_and_exemplars() {
    let app = app_with(|c| c.slos = vec![feed_slo()]);
    let t0 = t0();
    let events: Vec<Value> = [10.0, 20.0, 400.0]
        .iter()
        .enumerate()
        .map(|(i, total)| {
            decision(
                &format!("m{i}"),
                "control",
                t0 + i as i64,
                *total,
                json!({"inference": total / 2.0}),
            )
        })
        .collect();
    ingest(&app, lines(&events)).await;

    let (ct, text) = metrics(&app, "text/plain").await;
    assert_eq!(ct, "text/plain; version=0.0.4; charset=utf-8");
    for want in [
        // The SLO's 150 ms threshold is a bucket bound.
        "sonde_decision_latency_seconds_bucket{surface=\"home_feed\",le=\"0.15\"} 2\n",
        "sonde_decision_latency_seconds_bucket{surface=\"home_feed\",le=\"+Inf\"} 3\n",
        "sonde_decision_latency_seconds_sum{surface=\"home_feed\"} 0.43\n",
        "sonde_decision_latency_seconds_count{surface=\"home_feed\"} 3\n",
        "sonde_component_latency_seconds_bucket{surface=\"home_feed\",component=\"inference\",le=\"0.01\"} 2\n",
        "# TYPE sonde_decisions_total counter\nsonde_decisions_total{surface=\"home_feed\"} 3\n",
    ] {
        assert!(text.contains(want), "{want} missing from\n{text}");
    }
    assert!(!text.contains(" # {"), "no exemplars in the text format");

    let (ct, om) = metrics(
        &app,
        "application/openmetrics-text;version=1.0.0;q=0.5,text/plain;version=0.0.4;q=0.3",
    )
    .await;
    assert_eq!(
        ct,
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );
    assert!(om.ends_with("# EOF\n"));
    assert!(om.contains("# TYPE sonde_decisions counter\n"), "{om}");
    assert!(
        om.contains("sonde_decision_latency_seconds_bucket{surface=\"home_feed\",le=\"0.5\"} 3 # {request_id=\"m2\"} 0.4 "),
        "{om}"
    );
}
