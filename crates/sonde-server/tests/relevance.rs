//! `GET /v1/relevance` and `GET /v1/calibration` through the real router and store: hand-made
//! outcomes with hand-computed metrics, and simulated traffic whose calibration breaks.

mod common;

use axum::http::StatusCode;
use common::{App, app, app_with, get, ingest, lines, simulate_into};
use serde_json::{Value, json};

const T0: i64 = 1_767_225_600_000;
const MIN: i64 = 60_000;

fn decision(id: &str, variant: &str, t: i64) -> Value {
    json!({"type": "decision", "event_id": format!("e-{id}"), "timestamp": t,
        "anonymous_id": "a1", "request_id": id, "surface": "home_feed",
        "model": {"name": "ranker", "version": "v1"},
        "experiments": [{"id": "exp", "variant": variant}],
        "items": (1..=3).map(|p| json!({"item_id": format!("{id}-i{p}"), "position": p,
            "score": 0.5})).collect::<Vec<_>>()})
}

fn interaction(n: u32, req: &str, item: &str, action: &str, value: Option<f64>, t: i64) -> Value {
    let mut v = json!({"type": "interaction", "event_id": format!("x{n}"), "timestamp": t,
        "anonymous_id": "a1", "request_id": req, "item_id": item, "action": action});
    if let Some(x) = value {
        v["value"] = json!(x);
    }
    v
}

fn close(v: &Value, want: f64) {
    let got = v.as_f64().unwrap_or(f64::NAN);
    assert!((got - want).abs() < 1e-12, "got {v}, want {want}");
}

#[tokio::test]
async fn graded_outcomes_give_hand_computed_metrics() {
    let app = app();
    let events = vec![
        // A (control): cart at position 1 (grade 2), short click at position 2 (grade 1).
        decision("A", "control", T0),
        interaction(1, "A", "A-i1", "add_to_cart", None, T0 + MIN),
        interaction(2, "A", "A-i2", "click", Some(10.0), T0 + 2 * MIN),
        // B (control): nothing.
        decision("B", "control", T0),
        // C (treatment): a purchase of position 3 within the window (grade 3); a click on
        // position 1 after the 30-minute window does not count.
        decision("C", "treatment", T0),
        json!({"type": "conversion", "event_id": "buy1", "timestamp": T0 + 20 * MIN,
            "anonymous_id": "a1", "name": "purchase", "value": 10.0, "currency": "EUR",
            "items": ["C-i3"], "request_id": "C"}),
        interaction(3, "C", "C-i1", "click", Some(40.0), T0 + 40 * MIN),
    ];
    ingest(&app, lines(&events)).await;

    let (status, v) = get(&app, "/v1/relevance?group_by=variant&experiment=exp&k=2").await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let groups = v["groups"].as_array().expect("groups");
    assert_eq!(groups.len(), 2, "{v}");
    let (c, t) = (&groups[0], &groups[1]);
    assert_eq!(c["group"], "control");
    assert_eq!(c["lists"], 2);
    // A: P@2 1, hit 1, RR 1, AP 1, nDCG@2 1 (already ideal), CTR@2 1/2; B: all 0.
    close(&c["coverage"], 0.5);
    close(&c["precision"], 0.5);
    close(&c["hit_rate"], 0.5);
    close(&c["mrr"], 0.5);
    close(&c["map"], 0.5);
    close(&c["ndcg"], 0.5);
    close(&c["ndcg_exp"], 0.5);
    close(&c["ctr"], 0.25);
    // C: grades [0, 0, 3]; at k = 2 nothing relevant, RR and AP 1/3 over the whole list.
    assert_eq!(t["group"], "treatment");
    close(&t["coverage"], 1.0);
    close(&t["precision"], 0.0);
    close(&t["ndcg"], 0.0);
    close(&t["mrr"], 1.0 / 3.0);
    close(&t["map"], 1.0 / 3.0);
    close(&t["ctr"], 0.0);

    // A filter and a longer window: the late click now counts for C (grade 2: dwell 40 s).
    let (_, v) = get(
        &app,
        "/v1/relevance?variant=treatment&experiment=exp&k=2&window_minutes=60",
    )
    .await;
    let g = &v["groups"][0];
    assert_eq!(g["lists"], 1, "{v}");
    close(&g["precision"], 0.5);
    close(&g["ctr"], 0.5);

    // Two dimensions at once; calibration against purchases (only C's third item).
    let (_, v) = get(
        &app,
        "/v1/relevance?group_by=variant,surface&experiment=exp&k=2",
    )
    .await;
    assert_eq!(v["groups"][0]["group"], "control | home_feed", "{v}");
    let (status, v) = get(&app, "/v1/calibration?outcome=conversion&bins=1").await;
    assert_eq!(status, StatusCode::OK, "{v}");
    close(&v["groups"][0]["bins"][0]["observed"], 1.0 / 9.0);

    // Bad parameters are clear errors.
    let (status, v) = get(&app, "/v1/relevance?group_by=variant").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{v}");
    assert_eq!(v["error"]["code"], "missing_parameter", "{v}");
    let (status, _) = get(&app, "/v1/relevance?from=yesterday").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

/// A server holding 2 simulated minutes before `scenario`'s incident and 4 minutes into it;
/// returns the simulation start and the incident start (epoch ms).
async fn simulated(app: &App, scenario: &str) -> (i64, i64) {
    let start = sonde_sim::SimConfig::default().start_ms;
    let incidents = sonde_sim::scenario(scenario, start).expect("scenario");
    let at = incidents[0].start_ms;
    simulate_into(
        app,
        sonde_sim::SimConfig {
            seed: 3,
            decisions_per_sec: 20.0,
            incidents,
            ..Default::default()
        },
        7200,
    )
    .await;
    (start, at)
}

#[tokio::test]
async fn a_calibration_break_shows_in_ece() {
    let app = app();
    let (start, brk) = simulated(&app, "calibration-break").await;

    let ece = |v: &Value, variant: &str| {
        v["groups"]
            .as_array()
            .expect("groups")
            .iter()
            .find(|g| g["group"] == variant)
            .and_then(|g| g["ece"].as_f64())
            .unwrap_or_else(|| panic!("no {variant} in {v}"))
    };
    let path = |from: i64, to: i64| {
        format!("/v1/calibration?group_by=variant&experiment=ranker_ab&from={from}&to={to}")
    };
    let (status, before) = get(&app, &path(start, brk)).await;
    assert_eq!(status, StatusCode::OK, "{before}");
    let (_, during) = get(&app, &path(brk, brk + 4 * MIN)).await;
    let bins = during["groups"][0]["bins"].as_array().expect("bins");
    assert_eq!(bins.len(), 10, "{during}");
    // Treatment's scores are pushed up during the break; control's are untouched. (Neither
    // is calibrated for clicks before it: scores predict relevance, clicks also need
    // examination.)
    let (t0, t1) = (ece(&before, "treatment"), ece(&during, "treatment"));
    let (c0, c1) = (ece(&before, "control"), ece(&during, "control"));
    assert!(t1 > t0 + 0.1, "treatment ECE {t0:.3} -> {t1:.3}");
    assert!((c1 - c0).abs() < 0.05, "control ECE {c0:.3} -> {c1:.3}");
}

#[tokio::test]
async fn drift_is_raised_on_exactly_the_drifted_columns() {
    let app = app();
    let (start, at) = simulated(&app, "drift").await;
    let (status, v) = get(
        &app,
        &format!(
            "/v1/drift?reference_from={start}&reference_to={at}&from={at}&to={}",
            at + 4 * MIN
        ),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let columns = v["columns"].as_array().expect("columns");
    let drifted: Vec<&str> = columns
        .iter()
        .filter(|c| c["drifted"] == true)
        .filter_map(|c| c["column"].as_str())
        .collect();
    let all: Vec<&str> = columns
        .iter()
        .filter_map(|c| c["column"].as_str())
        .collect();
    assert_eq!(
        all,
        [
            "features.history_len",
            "features.recency_days",
            "score",
            "features.fresh"
        ],
        "{v}"
    );
    // The simulator's drift moves recency (x3) and the scores (+0.8 logit); nothing else.
    assert_eq!(drifted, ["features.recency_days", "score"], "{v}");
    close(&v["share_drifted"], 0.5);

    let (status, v) = get(&app, "/v1/drift?from=0").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{v}");
}

/// EM over simulated clicks recovers the simulator's examination curve (relative to
/// position 1) within 0.03 at every position, and closer than raw CTR by position does.
#[tokio::test]
async fn position_bias_em_recovers_the_simulated_examination() {
    let app = app();
    simulate_into(
        &app,
        sonde_sim::SimConfig {
            seed: 5,
            ..Default::default()
        },
        30_000,
    )
    .await;
    let (status, v) = get(&app, "/v1/position-bias").await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let positions = v["groups"][0]["positions"].as_array().expect("positions");
    assert_eq!(positions.len(), 10, "{v}");
    let truth: Vec<f64> = (1..=10)
        .map(|k| sonde_sim::examination(k) / sonde_sim::examination(1))
        .collect();
    let ctr1 = positions[0]["ctr"].as_f64().expect("ctr");
    let (mut naive_error, mut em_error) = (0.0f64, 0.0f64);
    for (k, p) in positions.iter().enumerate() {
        let e = p["examination"].as_f64().expect("examination");
        em_error = em_error.max((e - truth[k]).abs());
        assert!(
            (e - truth[k]).abs() < 0.03,
            "position {}: estimated {e:.3}, truth {:.3}\n{v}",
            k + 1,
            truth[k]
        );
        naive_error = naive_error.max((p["ctr"].as_f64().expect("ctr") / ctr1 - truth[k]).abs());
    }
    // Weighting clicks by 1/examination gives the CTR of an item looked at like position 1:
    // above the raw CTR over all positions, below position 1's own CTR (the ranker puts
    // the most relevant items there).
    let shown: f64 = positions
        .iter()
        .filter_map(|p| p["impressions"].as_f64())
        .sum();
    let clicks: f64 = positions.iter().filter_map(|p| p["clicks"].as_f64()).sum();
    let ipw = v["groups"][0]["ipw_ctr"].as_f64().expect("ipw ctr");
    assert!(
        clicks / shown < ipw && ipw < ctr1,
        "{} < {ipw} < {ctr1}",
        clicks / shown
    );
    let ndcg = v["groups"][0]["ipw_ndcg"].as_f64().expect("ipw ndcg");
    assert!(ndcg > 0.0 && ndcg <= 1.0);
    // The ranker puts relevant items on top, so raw CTR overstates the position effect.
    eprintln!("largest error: EM {em_error:.4}, CTR ratio {naive_error:.4}");
    assert!(
        em_error < naive_error / 2.0,
        "EM {em_error:.3}, CTR ratio {naive_error:.3}"
    );
}

fn slate(id: &str, who: &str, version: &str, items: &[&str], t: i64) -> Value {
    json!({"type": "decision", "event_id": format!("e-{id}"), "timestamp": t,
        "anonymous_id": who, "request_id": id, "surface": "home_feed",
        "model": {"name": "ranker", "version": version},
        "items": items.iter().enumerate().map(|(n, i)| json!({"item_id": i, "position": n + 1}))
            .collect::<Vec<_>>()})
}

#[tokio::test]
async fn stability_compares_consecutive_slates_of_a_user() {
    let app = app();
    let events = vec![
        slate("D1", "a1", "v1", &["x", "y", "z"], T0),
        slate("D2", "a1", "v1", &["y", "x", "q"], T0 + MIN),
        slate("D3", "a1", "v2", &["x", "y", "z"], T0 + 2 * MIN),
        // Another user's only decision pairs with nothing.
        slate("D4", "a2", "v1", &["x", "y", "z"], T0 + MIN),
    ];
    ingest(&app, lines(&events)).await;
    let (status, v) = get(&app, "/v1/stability?k=3").await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let g = &v["groups"][0];
    assert_eq!(g["pairs"], 2, "{v}");
    let (s1, s2) = (["x", "y", "z"], ["y", "x", "q"]);
    let rbo = sonde_relevance::rbo_ext(&s1, &s2, 0.9);
    close(&g["rbo"], rbo);
    close(&g["jaccard"], 0.5);
    assert_eq!(g["model_change_pairs"], 1);
    close(&g["model_change_churn"], 0.5);
}

#[tokio::test]
async fn diversity_and_fairness_over_simulated_traffic() {
    let app = app();
    simulate_into(
        &app,
        sonde_sim::SimConfig {
            seed: 8,
            ..Default::default()
        },
        6000,
    )
    .await;
    let (status, v) = get(&app, "/v1/diversity?group_by=variant&experiment=ranker_ab").await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let g = v["groups"].as_array().expect("groups");
    let field = |i: usize, k: &str| g[i][k].as_f64().unwrap_or(f64::NAN);
    // Treatment ranks closer to each user's favourite category: less mixed slates.
    assert!(
        field(1, "intra_list_diversity") < field(0, "intra_list_diversity") - 0.02,
        "{v}"
    );
    for i in 0..2 {
        assert!(field(i, "catalog_coverage") > 0.5 && field(i, "catalog_coverage") <= 1.0);
        assert!((0.0..1.0).contains(&field(i, "exposure_gini")), "{v}");
        assert!(field(i, "novelty") > 10.0, "{v}");
    }

    let (status, v) = get(
        &app,
        "/v1/fairness?group_by=variant&experiment=ranker_ab&segment=device",
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    for g in v["groups"].as_array().expect("groups") {
        let rows = g["exposure"].as_array().expect("exposure");
        assert_eq!(rows.len(), 40, "one row per provider");
        let sum = |k: &str| rows.iter().filter_map(|r| r[k].as_f64()).sum::<f64>();
        assert!((sum("exposure_share") - 1.0).abs() < 1e-9);
        assert!((sum("outcome_share") - 1.0).abs() < 1e-9);
    }
    let rates = v["segments"]["rates"].as_array().expect("rates");
    assert_eq!(rates.len(), 3, "{v}");
    assert_eq!(rates[0]["segment"], v["segments"]["reference"]);
    close(&rates[0]["ratio_to_reference"], 1.0);

    let (_, w) = get(&app, "/v1/fairness?segment=device&reference_segment=web").await;
    assert_eq!(w["segments"]["reference"], "web", "{w}");
    let web = w["segments"]["rates"]
        .as_array()
        .expect("rates")
        .iter()
        .find(|r| r["segment"] == "web")
        .cloned()
        .unwrap_or_default();
    close(&web["ratio_to_reference"], 1.0);
    let (status, _) = get(&app, "/v1/fairness?segment=device&reference_segment=fax").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = get(&app, "/v1/fairness?segment=planet").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn feature_audit_flags_a_shifting_feature_and_engagement_counts_returns() {
    let app = app();
    const DAY: i64 = 86_400_000;
    let mut events = Vec::new();
    let mut n_ev = 100;
    for day in 0..2 {
        for n in 0..20i64 {
            let id = format!("F{day}-{n}");
            let t = T0 + day * DAY + n * 1000;
            let mut d = decision(&id, "control", t);
            d["anonymous_id"] = json!(format!("u{n}"));
            // x separates clicked decisions perfectly on day 0 and not at all on day 1;
            // y is constant.
            d["features"] = json!({"x": n as f64, "y": 1.0, "kind": "a"});
            events.push(d);
            let clicked = if day == 0 { n >= 10 } else { n % 2 == 0 };
            if clicked {
                n_ev += 1;
                events.push(interaction(
                    n_ev,
                    &id,
                    &format!("{id}-i1"),
                    "click",
                    Some((n + 1) as f64),
                    t + MIN,
                ));
            }
        }
    }
    events.push(decision("solo", "control", T0));
    events.push(interaction(
        1,
        "solo",
        "solo-i1",
        "scroll",
        Some(0.5),
        T0 + MIN,
    ));
    events.push(interaction(
        2,
        "solo",
        "solo-i1",
        "scroll",
        Some(1.0),
        T0 + MIN,
    ));
    ingest(&app, lines(&events)).await;

    let (status, v) = get(&app, "/v1/feature-audit?bucket=day").await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let features = v["features"].as_array().expect("features");
    let f = |name: &str| {
        features
            .iter()
            .find(|f| f["feature"] == name)
            .unwrap_or_else(|| panic!("no {name}: {v}"))
    };
    close(&f("features.x")["buckets"][0]["auc"], 1.0);
    close(&f("features.x")["buckets"][1]["auc"], 0.45);
    assert_eq!(f("features.x")["flagged"], true);
    assert_eq!(f("features.y")["flagged"], false);
    assert_eq!(v["flagged"], 1);

    let (status, v) = get(&app, "/v1/engagement").await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let g = &v["groups"][0];
    // Dwell of the 20 clicks: 11..=20 on day 0 and 1, 3, ..., 19 on day 1.
    assert_eq!(g["dwell_secs"]["n"], 20, "{v}");
    close(&g["scroll_depth"]["p50"], 0.75);
    // u0..u19 come back the next day; "solo"'s anonymous id a1 does not.
    assert_eq!(g["users"], 21, "{v}");
    close(&g["repeat_visit_rate_7d"], 20.0 / 21.0);
}

#[tokio::test]
async fn project_gains_change_the_grades() {
    // A project that does not count short clicks as relevant.
    let app = app_with(|c| c.gains.click = 0);
    let events = vec![
        decision("A", "control", T0),
        interaction(1, "A", "A-i1", "add_to_cart", None, T0 + MIN),
        interaction(2, "A", "A-i2", "click", Some(10.0), T0 + 2 * MIN),
    ];
    ingest(&app, lines(&events)).await;
    let (status, v) = get(&app, "/v1/relevance?k=2").await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["gains"]["click"], 0, "{v}");
    // Grades [2, 0, 0] instead of [2, 1, 0]; the click still counts for CTR.
    close(&v["groups"][0]["precision"], 0.5);
    close(&v["groups"][0]["ctr"], 0.5);
}

/// Decisions flagged with swap interventions: the estimate comes from them, within 0.06 of
/// the simulator's examination at every position.
#[tokio::test]
async fn swap_interventions_estimate_examination() {
    let app = app();
    simulate_into(
        &app,
        sonde_sim::SimConfig {
            seed: 6,
            swap_share: 1.0,
            ..Default::default()
        },
        60_000,
    )
    .await;
    let (status, v) = get(&app, "/v1/position-bias").await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let positions = v["groups"][0]["positions"].as_array().expect("positions");
    for (k, p) in positions.iter().enumerate() {
        let truth = sonde_sim::examination(k + 1) / sonde_sim::examination(1);
        assert_eq!(p["source"], "swap", "{p}");
        assert!(p["swap_decisions"].as_u64().unwrap_or(0) > 4000, "{p}");
        let e = p["examination"].as_f64().expect("examination");
        assert!(
            (e - truth).abs() < 0.06,
            "position {}: swap {e:.3}, truth {truth:.3}",
            k + 1
        );
    }
}

#[tokio::test]
async fn live_sums_answer_as_the_sql_join_does() {
    const HOUR: i64 = 3_600_000;
    let app = app();
    let now = chrono::Utc::now().timestamp_millis();
    let start = (now - 3 * HOUR).div_euclid(MIN) * MIN;
    let sim = |seed: u64, start_ms: i64| sonde_sim::SimConfig {
        seed,
        start_ms,
        decisions_per_sec: 0.3,
        ..Default::default()
    };
    // Stored before the join starts, then loaded: decisions whose window has closed go into
    // the sums, the last 35 minutes become open decisions. Then fed live: older history
    // (imported while the loaded decisions hold the watermark at now) and the last minutes.
    simulate_into(&app, sim(11, start + 110 * MIN), 1080).await;
    sonde_server::load_live_sums(app.state.clone()).await;
    let loaded_open = app
        .state
        .store()
        .with_live(|s| s.relevance.open_decisions())
        .unwrap_or(0);
    assert!(loaded_open > 100, "{loaded_open} open decisions loaded");
    simulate_into(&app, sim(12, start), 1980).await;
    simulate_into(&app, sim(13, start + 170 * MIN), 180).await;

    let to = (now + 2 * MIN).div_euclid(MIN) * MIN;
    for group_by in [
        "none",
        "variant",
        "variant,minute",
        "surface,hour",
        "model",
        "device",
        "region,day",
    ] {
        for window in [(start, to), (start + 100 * MIN, to), (to - 20 * MIN, to)] {
            let q = format!(
                "/v1/relevance?experiment=ranker_ab&group_by={group_by}&from={}&to={}",
                window.0, window.1
            );
            let (status, live) = get(&app, &q).await;
            assert_eq!(status, StatusCode::OK, "{live}");
            assert_eq!(live["source"], "live", "{q}");
            let (_, sql) = get(&app, &format!("{q}&exact=true")).await;
            assert_eq!(sql["source"], "sql");
            let (a, b) = (live["groups"].as_array(), sql["groups"].as_array());
            let (a, b) = (a.expect("groups"), b.expect("groups"));
            assert!(!a.is_empty(), "{q}");
            assert_eq!(a.len(), b.len(), "{q}\n{live}\n{sql}");
            for (x, y) in a.iter().zip(b) {
                assert_eq!(x["group"], y["group"], "{q}");
                assert_eq!(x["lists"], y["lists"], "{q} {}", x["group"]);
                for m in ["ndcg", "ctr", "mrr", "map", "hit_rate", "conversion_rate"] {
                    let (u, v) = (x[m].as_f64(), y[m].as_f64());
                    let (u, v) = (u.expect("number"), v.expect("number"));
                    assert!((u - v).abs() < 1e-9, "{q} {} {m}: {u} vs {v}", x["group"]);
                }
            }
        }
    }
    // A filter: one variant on one device.
    let q = format!(
        "/v1/relevance?experiment=ranker_ab&variant=treatment&device=ios&from={start}&to={to}"
    );
    let (_, live) = get(&app, &q).await;
    let (_, sql) = get(&app, &format!("{q}&exact=true")).await;
    assert_eq!(live["source"], "live");
    assert_eq!(live["groups"][0]["lists"], sql["groups"][0]["lists"]);
    assert!(
        live["groups"][0]["lists"].as_u64().unwrap_or(0) > 0,
        "{live}"
    );
    // A window edge inside a minute, or another cutoff: SQL answers.
    let (_, v) = get(&app, &format!("/v1/relevance?from={}&to={to}", start + 1)).await;
    assert_eq!(v["source"], "sql");
    let (_, v) = get(&app, &format!("/v1/relevance?from={start}&to={to}&k=5")).await;
    assert_eq!(v["source"], "sql");
}
