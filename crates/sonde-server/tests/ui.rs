//! The dashboard through the real router: sign-in and its cookie, no open redirect, the
//! pages' numbers equal to the JSON API's, chart downloads, live regions and the live
//! stream, one-time sign-in links, the quarantine browser, escaping of event values,
//! sign-out.

mod common;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use common::{App, app_with, call, get, ingest, lines};
use http_body_util::BodyExt;
use serde_json::json;
use sonde_latency::{Objective, SloSpec};
use tower::ServiceExt;

async fn fetch(app: &App, req: Request<Body>) -> (StatusCode, axum::http::HeaderMap, String) {
    let resp = app.router.clone().oneshot(req).await.expect("response");
    let (status, headers) = (resp.status(), resp.headers().clone());
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    (status, headers, String::from_utf8_lossy(&body).into_owned())
}

fn login(key: &str, next: &str) -> Request<Body> {
    Request::post("/login")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(Body::from(format!("key={key}&next={next}")))
        .expect("request")
}

fn page(path: &str, cookie: Option<&str>) -> Request<Body> {
    let mut r = Request::get(path);
    if let Some(c) = cookie {
        r = r.header("cookie", c);
    }
    r.body(Body::empty()).expect("request")
}

/// The text of the first `<td data-field="field">` in the row of `surface`.
fn cell(html: &str, surface: &str, field: &str) -> String {
    cell_of(html, "data-surface", surface, field)
}

/// The text of the first element `data-field="field"` after `attr="value"`, up to the
/// end of that row.
fn cell_of(html: &str, attr: &str, value: &str, field: &str) -> String {
    let row = html
        .split(&format!("{attr}=\"{value}\""))
        .nth(1)
        .unwrap_or_else(|| panic!("no {attr}={value}"));
    let row = row.split("</tr>").next().unwrap_or_default();
    row.split(&format!("data-field=\"{field}\">"))
        .nth(1)
        .and_then(|s| s.split('<').next())
        .unwrap_or_default()
        .to_string()
}

#[tokio::test]
async fn sign_in_then_the_overview_matches_the_api() {
    let app = app_with(|c| {
        c.slos = vec![SloSpec {
            name: "feed".into(),
            surface: Some("home_feed".into()),
            kind: Objective::Latency,
            threshold_ms: Some(150.0),
            target: 0.99,
            period_days: 28,
        }]
    });
    let now = chrono::Utc::now().timestamp_millis();
    let events: Vec<_> = (0..40)
        .map(|i| {
            let surface = if i % 4 == 0 { "<b>x</b>" } else { "home_feed" };
            json!({"type": "decision", "event_id": format!("e{i}"), "timestamp": now - 60_000 - i * 500,
                "anonymous_id": "a", "request_id": format!("r{i}"), "surface": surface,
                "model": {"name": "m", "version": "v1"},
                "experiments": [{"id": "exp", "variant": if i % 2 == 0 { "a" } else { "b" }}],
                "items": [{"item_id": "i", "position": 1, "score": 0.3}],
                "latency_ms": {"total": 20 + i * 7, "components": {"inference": 10 + i}}})
        })
        .collect();
    ingest(&app, lines(&events)).await;

    // Signed out: every page sends to the sign-in form, remembering where it was going.
    let (s, h, _) = fetch(&app, page("/overview", None)).await;
    assert_eq!(s, StatusCode::SEE_OTHER);
    assert_eq!(h["location"], "/login?next=/overview");
    let (s, _, body) = fetch(&app, page("/login?next=/overview", None)).await;
    assert_eq!(s, StatusCode::OK);
    assert!(body.contains("name=\"key\""), "{body}");
    // A view's filters come back after signing in.
    let (s, h, _) = fetch(&app, page("/relevance?minutes=1440&surface=home", None)).await;
    assert_eq!(s, StatusCode::SEE_OTHER);
    let next = "/relevance%3Fminutes%3D1440%26surface%3Dhome";
    assert_eq!(h["location"], format!("/login?next={next}"));
    // The form sends `next` back form-encoded, as a browser does.
    let (s, h, _) = fetch(&app, login(&app.keys.read_key, next)).await;
    assert_eq!(s, StatusCode::SEE_OTHER);
    assert_eq!(h["location"], "/relevance?minutes=1440&surface=home");

    // Wrong key, and a write key: refused.
    for key in ["nope", app.keys.write_key.as_str()] {
        let (s, h, body) = fetch(&app, login(key, "/overview")).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED, "{key}");
        assert!(h.get("set-cookie").is_none());
        assert!(body.contains("not a read key"));
    }
    // A read key opens a session; `next` may only be a local path.
    let (s, h, _) = fetch(&app, login(&app.keys.read_key, "//evil.example/")).await;
    assert_eq!(s, StatusCode::SEE_OTHER);
    assert_eq!(h["location"], "/overview");
    let cookie_header = h["set-cookie"].to_str().expect("cookie").to_string();
    for flag in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(cookie_header.contains(flag), "{cookie_header}");
    }
    let cookie = cookie_header.split(';').next().expect("pair").to_string();

    let (s, _, html) = fetch(&app, page("/overview", Some(&cookie))).await;
    assert_eq!(s, StatusCode::OK, "{html}");
    // Same window as the API's default (the last hour up to the current minute).
    let (_, v) = get(&app, "/v1/latency?surface=home_feed&step=60m&q=0.5,0.99").await;
    let point = &v["series"][0]["points"][0];
    assert_eq!(
        cell(&html, "home_feed", "decisions"),
        point["decisions"].to_string()
    );
    assert_eq!(cell(&html, "home_feed", "decisions"), "30");
    assert_eq!(
        cell(&html, "home_feed", "p99"),
        sonde_ui::number(point["quantiles"][1].as_f64(), 1)
    );
    assert_eq!(
        cell(&html, "home_feed", "p50"),
        sonde_ui::number(point["quantiles"][0].as_f64(), 1)
    );
    assert!(
        html.contains("against an SLO of 99.0% under 150 ms"),
        "{html}"
    );
    // Event values are text, never markup.
    assert!(html.contains("&lt;b&gt;x&lt;/b&gt;"));
    assert!(!html.contains("<b>x</b>"));
    assert!(html.contains("<svg"), "the latency chart");

    // Latency & SLOs: the SLO's budget as /v1/slo has it; tail shares as /v1/latency/tail.
    let (s, _, html) = fetch(&app, page("/latency?surface=home_feed", Some(&cookie))).await;
    assert_eq!(s, StatusCode::OK, "{html}");
    // Each chart links its data as CSV and JSON, with the page's filters; the JSON holds
    // the p99 series of /v1/latency by component.
    let link = |format: &str| {
        html.split("href=\"")
            .filter_map(|r| r.split('"').next())
            .find(|h| h.contains("download=by_component") && h.ends_with(format))
            .expect("a download link")
            .replace("&amp;", "&")
    };
    assert!(link("json").contains("surface=home_feed"));
    let (s, _, data) = fetch(&app, page(&link("json"), Some(&cookie))).await;
    assert_eq!(s, StatusCode::OK, "{data}");
    let data: serde_json::Value = serde_json::from_str(&data).expect("chart json");
    let (_, api) = get(
        &app,
        "/v1/latency?surface=home_feed&group_by=component&q=0.99&step=1m",
    )
    .await;
    let values = |series: &serde_json::Value,
                  pick: &dyn Fn(&serde_json::Value) -> serde_json::Value| {
        series
            .as_array()
            .expect("series")
            .iter()
            .map(|s| {
                s["points"]
                    .as_array()
                    .expect("points")
                    .iter()
                    .map(pick)
                    .collect::<Vec<_>>()
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(
        values(&data["series"], &|p| p[1].clone()),
        values(&api["series"], &|p| p["quantiles"][0].clone()),
    );
    // Another quantile, chosen on the page, is the API's for that quantile.
    let (_, _, median) = fetch(
        &app,
        page(
            "/latency?surface=home_feed&q=0.5&download=by_component&format=json",
            Some(&cookie),
        ),
    )
    .await;
    let median: serde_json::Value = serde_json::from_str(&median).expect("chart json");
    assert_eq!(median["title"], "p50 latency by component");
    let (_, api_median) = get(
        &app,
        "/v1/latency?surface=home_feed&group_by=component&q=0.5&step=1m",
    )
    .await;
    assert_eq!(
        values(&median["series"], &|p| p[1].clone()),
        values(&api_median["series"], &|p| p["quantiles"][0].clone()),
    );
    let (s, h, csv) = fetch(&app, page(&link("csv"), Some(&cookie))).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(h["content-type"], "text/csv; charset=utf-8");
    assert!(csv.starts_with("series,x,value\n"), "{csv}");
    let points: usize = api["series"]
        .as_array()
        .expect("series")
        .iter()
        .map(|s| s["points"].as_array().map_or(0, Vec::len))
        .sum();
    assert_eq!(csv.lines().count(), 1 + points);
    // Without a session, no data either.
    let (s, _, _) = fetch(&app, page(&link("csv"), None)).await;
    assert_eq!(s, StatusCode::SEE_OTHER);
    let (_, slo) = get(&app, "/v1/slo").await;
    let budget = slo["slos"][0]["evaluation"]["budget_remaining"].as_f64();
    let budget_cell = cell_of(&html, "data-slo", "feed", "budget");
    assert_eq!(
        budget_cell,
        format!("{}%", sonde_ui::number(budget.map(|b| b * 100.0), 2))
    );
    let (_, tail) = get(&app, "/v1/latency/tail?surface=home_feed").await;
    let top = tail["components"][0]["component"]
        .as_str()
        .expect("component");
    let share = cell_of(&html, "data-component", top, "tail_share");
    assert_eq!(
        share,
        format!(
            "{}%",
            sonde_ui::number(
                tail["components"][0]["tail_share"]
                    .as_f64()
                    .map(|x| x * 100.0),
                2
            )
        )
    );

    // Data health: the decision source's events as /v1/health/data counts them.
    let (s, _, html) = fetch(&app, page("/health", Some(&cookie))).await;
    assert_eq!(s, StatusCode::OK, "{html}");
    let (_, health) = get(&app, "/v1/health/data").await;
    let feed = health["sources"]
        .as_array()
        .expect("sources")
        .iter()
        .find(|x| x["surface"] == "home_feed")
        .expect("home_feed source")
        .clone();
    let events = cell_of(&html, "data-source", "decision/home_feed", "events");
    assert_eq!(events, feed["events"].to_string());

    // Relevance: the decisions per variant as /v1/relevance counts them.
    let (s, _, html) = fetch(&app, page("/relevance", Some(&cookie))).await;
    assert_eq!(s, StatusCode::OK, "{html}");
    let (_, rel) = get(&app, "/v1/relevance?experiment=exp&group_by=variant").await;
    let g = &rel["groups"][0];
    let variant = g["group"].as_str().unwrap_or("?");
    let lists = cell_of(&html, "data-group", variant, "lists");
    assert_eq!(lists, g["lists"].to_string(), "{html}");
    for section in [
        "Reliability diagram",
        "examination by position",
        "Drift against",
    ] {
        assert!(html.contains(section), "{section}");
    }

    // Overview: conversion per variant as /v1/relevance has it.
    let (_, _, html) = fetch(&app, page("/overview", Some(&cookie))).await;
    let conversion = cell_of(&html, "data-variant", variant, "conversion");
    assert_eq!(
        conversion,
        format!(
            "{}%",
            sonde_ui::number(g["conversion_rate"].as_f64().map(|c| c * 100.0), 2)
        )
    );

    // The live region alone, as the page script fetches it.
    let (s, h, part) = fetch(&app, page("/overview?partial=1", Some(&cookie))).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(h["x-sonde-partial"], "1");
    assert!(!part.contains("<html") && part.contains("data-surface=\"home_feed\""));
    assert!(
        h["content-security-policy"]
            .to_str()
            .unwrap_or_default()
            .contains("script-src 'self'")
    );

    // Summary: the day's decisions as the rollups count them.
    let (s, _, html) = fetch(&app, page("/summary", Some(&cookie))).await;
    assert_eq!(s, StatusCode::OK, "{html}");
    assert!(html.contains("data-field=\"decisions\">40<"), "{html}");
    assert!(html.contains("The engine served 40 decisions"), "{html}");

    // Signed out, the old cookie opens nothing.
    let out = Request::post("/logout")
        .header("cookie", &cookie)
        .body(Body::empty())
        .expect("request");
    let (s, h, _) = fetch(&app, out).await;
    assert_eq!(s, StatusCode::SEE_OTHER);
    assert!(
        h["set-cookie"]
            .to_str()
            .unwrap_or_default()
            .contains("Max-Age=0")
    );
    let (s, _, _) = fetch(&app, page("/overview", Some(&cookie))).await;
    assert_eq!(s, StatusCode::SEE_OTHER);
}

#[tokio::test]
async fn the_live_stream_needs_a_session_and_speaks_server_sent_events() {
    let app = app_with(|_| {});
    let (s, _, _) = fetch(&app, page("/live", None)).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    // A one-time link signs in once.
    let link = app.state.sign_in_link();
    let (s, h, _) = fetch(&app, page(&link, None)).await;
    assert_eq!(s, StatusCode::SEE_OTHER);
    assert_eq!(h["location"], "/overview");
    let cookie = h["set-cookie"]
        .to_str()
        .expect("cookie")
        .split(';')
        .next()
        .expect("pair")
        .to_string();
    let (s, _, body) = fetch(&app, page(&link, None)).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert!(body.contains("used already"));

    let resp = app
        .router
        .clone()
        .oneshot(page("/live?every=2", Some(&cookie)))
        .await
        .expect("response");
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    // New data: the next tick says so.
    let now = chrono::Utc::now().timestamp_millis();
    ingest(
        &app,
        lines(&[
            json!({"type": "decision", "event_id": "live1", "timestamp": now,
            "anonymous_id": "a", "request_id": "r1", "surface": "s", "model": {"name": "m", "version": "v1"},
            "items": [{"item_id": "i", "position": 1}], "latency_ms": {"total": 5}}),
        ]),
    )
    .await;
    let mut body = resp.into_body();
    let frame = tokio::time::timeout(std::time::Duration::from_secs(10), body.frame())
        .await
        .expect("an event within 10 s")
        .expect("a frame")
        .expect("data");
    let text = String::from_utf8_lossy(frame.data_ref().expect("bytes")).into_owned();
    assert!(text.starts_with("event: update\ndata: "), "{text}");
}

#[tokio::test]
async fn the_quarantine_browser_shows_the_raw_event_and_replays_for_admins() {
    let app = app_with(|_| {});
    let now = chrono::Utc::now().timestamp_millis();
    // No request_id: quarantined.
    let req = Request::post("/v1/events")
        .header("authorization", format!("Bearer {}", app.keys.write_key))
        .header("content-type", "application/x-ndjson")
        .body(Body::from(lines(&[
            json!({"type": "decision", "event_id": "bad1",
            "timestamp": now, "anonymous_id": "a", "surface": "s", "items": []}),
        ])))
        .expect("request");
    let (_, v) = call(&app, req).await;
    assert_eq!(v["rejected"], 1, "{v}");
    let cookie_of = |h: &axum::http::HeaderMap| {
        h["set-cookie"]
            .to_str()
            .expect("cookie")
            .split(';')
            .next()
            .expect("pair")
            .to_string()
    };
    let (_, h, _) = fetch(&app, login(&app.keys.read_key, "/health/quarantine")).await;
    let reader = cookie_of(&h);
    let (s, _, html) = fetch(&app, page("/health/quarantine", Some(&reader))).await;
    assert_eq!(s, StatusCode::OK, "{html}");
    let (_, api) = get(&app, "/v1/quarantine").await;
    let item = &api["items"][0];
    let id = item["quarantine_id"].as_str().expect("an entry");
    assert!(
        html.contains(&format!("data-quarantine=\"{id}\"")),
        "{html}"
    );
    assert!(html.contains(&format!(
        "data-field=\"code\">{}<",
        item["code"].as_str().unwrap_or("?")
    )));
    assert!(html.contains("bad1"), "the raw event");
    assert!(
        !html.contains("action=\"/health/quarantine/replay\""),
        "readers cannot replay"
    );
    let replay = |cookie: &str| {
        Request::post("/health/quarantine/replay")
            .header("cookie", cookie)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(Body::from(format!("id={id}")))
            .expect("request")
    };
    let (s, _, _) = fetch(&app, replay(&reader)).await;
    assert_eq!(s, StatusCode::FORBIDDEN);

    let (_, h, _) = fetch(&app, login(&app.keys.admin_key, "/health/quarantine")).await;
    let admin = cookie_of(&h);
    let (s, _, html) = fetch(&app, page("/health/quarantine", Some(&admin))).await;
    assert_eq!(s, StatusCode::OK);
    assert!(html.contains("action=\"/health/quarantine/replay\""));
    // Still invalid: rejected again, and the browser says so with the reason.
    let (s, _, html) = fetch(&app, replay(&admin)).await;
    assert_eq!(s, StatusCode::OK, "{html}");
    let result = html
        .split("data-field=\"replay-result\"")
        .nth(1)
        .expect("a replay result");
    assert!(result.contains("rejected"), "{result}");
    let (_, api) = get(&app, "/v1/quarantine").await;
    assert_eq!(api["items"][0]["replay"], "rejected");
}

#[tokio::test]
async fn a_page_is_rendered_once_per_interval_and_again_when_data_arrived() {
    let app = app_with(|_| {});
    let decision = |id: &str| {
        let now = chrono::Utc::now().timestamp_millis();
        json!({"type": "decision", "event_id": id, "timestamp": now, "anonymous_id": "a",
            "request_id": id, "surface": "s", "model": {"name": "m", "version": "v1"},
            "items": [{"item_id": "i", "position": 1}], "latency_ms": {"total": 5}})
    };
    ingest(&app, lines(&[decision("c1")])).await;
    let (_, h, _) = fetch(&app, login(&app.keys.read_key, "/overview")).await;
    let cookie = h["set-cookie"]
        .to_str()
        .expect("cookie")
        .split(';')
        .next()
        .expect("pair")
        .to_string();
    let decisions = |html: &str| cell(html, "s", "decisions");
    let (_, _, first) = fetch(&app, page("/overview", Some(&cookie))).await;
    assert_eq!(decisions(&first), "1");
    // New data within the overview's 5 s: the kept page answers.
    ingest(&app, lines(&[decision("c2")])).await;
    let (_, _, kept) = fetch(&app, page("/overview", Some(&cookie))).await;
    assert_eq!(decisions(&kept), "1");
    // Other filters are another page.
    let (_, _, other) = fetch(&app, page("/overview?surface=s", Some(&cookie))).await;
    assert_eq!(decisions(&other), "2");
    // Past the interval, with data arrived since: rendered again.
    tokio::time::sleep(std::time::Duration::from_millis(5_100)).await;
    let (_, _, fresh) = fetch(&app, page("/overview", Some(&cookie))).await;
    assert_eq!(decisions(&fresh), "2");
}
