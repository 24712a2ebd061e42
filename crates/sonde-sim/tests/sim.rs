//! Determinism, validity of every generated event, and agreement with the ground truth.

use serde_json::Value;
use sonde_sim::{SimConfig, Simulator, normal_quantile};

fn run(seed: u64, decisions: usize) -> (Vec<Value>, Simulator) {
    let mut sim = Simulator::new(SimConfig {
        seed,
        ..SimConfig::default()
    });
    let mut out = Vec::new();
    for _ in 0..decisions {
        sim.step(&mut out);
    }
    (out, sim)
}

fn ndjson(events: &[Value]) -> Vec<u8> {
    let mut b = Vec::new();
    for e in events {
        b.extend_from_slice(e.to_string().as_bytes());
        b.push(b'\n');
    }
    b
}

#[test]
fn same_seed_same_bytes_other_seed_other_bytes() {
    let (a, _) = run(7, 2000);
    let (b, _) = run(7, 2000);
    let (c, _) = run(8, 2000);
    assert_eq!(ndjson(&a), ndjson(&b));
    assert_ne!(ndjson(&a), ndjson(&c));
}

#[test]
fn every_event_passes_validation() {
    let (events, _) = run(3, 3000);
    let p = sonde_model::KeyedPseudonymizer::new("k1", b"s");
    let ctx = sonde_model::ParseCtx {
        policy: sonde_model::TimePolicy::default(),
        pseudonymizer: &p,
        received_at: 1_767_225_600_000,
        backfill: true,
        limits: sonde_model::Limits::default(),
    };
    let mut types = std::collections::BTreeMap::new();
    for e in &events {
        let raw = e.to_string();
        let ev = sonde_model::parse_event(raw.as_bytes(), &ctx)
            .unwrap_or_else(|r| panic!("{raw}: {:?}", r.error));
        *types.entry(ev.event_type().as_str()).or_insert(0) += 1;
    }
    for t in ["decision", "interaction", "conversion", "touch"] {
        assert!(
            types.get(t).copied().unwrap_or(0) > 0,
            "no {t} events: {types:?}"
        );
    }
    assert_eq!(types["decision"], 3000);
}

#[test]
fn realized_ctr_matches_truth_and_treatment_wins() {
    let (events, sim) = run(11, 40_000);
    let truth = sim.truth();
    let mut shown = [0u64; 2];
    let mut clicks = [0u64; 2];
    let mut variant_of = std::collections::HashMap::new();
    for e in &events {
        let idx = |v: &str| if v == "treatment" { 1 } else { 0 };
        match e["type"].as_str() {
            Some("decision") => {
                let v = idx(e["experiments"][0]["variant"].as_str().unwrap_or(""));
                shown[v] += e["items"].as_array().map(|a| a.len() as u64).unwrap_or(0);
                variant_of.insert(e["request_id"].as_str().unwrap_or("").to_string(), v);
            }
            Some("interaction") if e["action"] == "click" => {
                clicks[variant_of[e["request_id"].as_str().unwrap_or("")]] += 1;
            }
            _ => {}
        }
    }
    for (v, t) in [(0, &truth.control), (1, &truth.treatment)] {
        let ctr = clicks[v] as f64 / shown[v] as f64;
        // Binomial standard error over ~200k impressions is ~0.0007; allow 5 of them.
        let se = (t.ctr * (1.0 - t.ctr) / shown[v] as f64).sqrt();
        assert!(
            (ctr - t.ctr).abs() < 5.0 * se,
            "variant {v}: realized {ctr:.4}, truth {:.4}",
            t.ctr
        );
    }
    assert!(truth.treatment.ctr > truth.control.ctr * 1.05, "{truth:?}");
    assert!(truth.ctr_lift > 0.05);
    assert_eq!(sonde_sim::assign("user-1"), sonde_sim::assign("user-1"));
}

#[test]
fn normal_quantile_matches_known_values() {
    // scipy.stats.norm.ppf values.
    for (p, z) in [
        (0.5, 0.0),
        (0.975, 1.959963984540054),
        (0.99, 2.3263478740408408),
        (0.001, -3.090232306167813),
    ] {
        assert!((normal_quantile(p) - z).abs() < 1e-8, "p={p}");
    }
}
