//! Determinism, validity of every generated event, agreement with the ground truth, and
//! the incidents and mess showing up where they should.

use sonde_sim::{
    Body, Delivery, IncidentKind, MessConfig, SimConfig, SimEvent, Simulator, normal_quantile,
    scenario,
};

fn run(config: SimConfig, decisions: usize) -> (Vec<SimEvent>, Simulator) {
    let mut sim = Simulator::new(config);
    let mut out = Vec::new();
    for _ in 0..decisions {
        sim.step(&mut out);
    }
    (out, sim)
}

fn seeded(seed: u64) -> SimConfig {
    SimConfig {
        seed,
        ..SimConfig::default()
    }
}

/// NDJSON in send order, as `sonde simulate --out` writes it.
fn deliver(events: Vec<SimEvent>, seed: u64, mess: MessConfig) -> (Vec<u8>, Delivery) {
    let mut d = Delivery::new(seed, mess);
    d.schedule(events);
    let mut lines = Vec::new();
    d.drain(&mut lines);
    let mut b = Vec::new();
    sonde_sim::write_ndjson(&lines, &mut b);
    (b, d)
}

#[test]
fn same_seed_same_bytes_other_seed_other_bytes() {
    let bytes = |seed| deliver(run(seeded(seed), 2000).0, seed, MessConfig::default()).0;
    assert_eq!(bytes(7), bytes(7));
    assert_ne!(bytes(7), bytes(8));
}

fn ctx(p: &sonde_model::KeyedPseudonymizer) -> sonde_model::ParseCtx<'_> {
    sonde_model::ParseCtx {
        policy: sonde_model::TimePolicy::default(),
        pseudonymizer: p,
        received_at: 1_767_225_600_000,
        backfill: true,
        limits: sonde_model::Limits::default(),
    }
}

#[test]
fn every_valid_event_passes_and_every_invalid_one_is_caught() {
    let (events, _) = run(seeded(3), 3000);
    let (body, delivery) = deliver(events, 3, MessConfig::default());
    let stats = delivery.stats();
    let p = sonde_model::KeyedPseudonymizer::new("k1", b"s");
    let ctx = ctx(&p);
    let mut types = std::collections::BTreeMap::new();
    let mut rejected = 0;
    let mut ids = std::collections::HashMap::new();
    for line in body.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
        match sonde_model::parse_event(line, &ctx) {
            Ok(ev) => {
                *types.entry(ev.event_type().as_str()).or_insert(0) += 1;
                *ids.entry(ev.data.event_id.clone()).or_insert(0) += 1;
            }
            Err(r) => {
                rejected += 1;
                let text = String::from_utf8_lossy(line);
                assert!(text.contains("-bad-"), "{text}: {:?}", r.error);
            }
        }
    }
    for t in ["decision", "interaction", "conversion", "touch", "identify"] {
        assert!(
            types.get(t).copied().unwrap_or(0) > 0,
            "no {t} events: {types:?}"
        );
    }
    // Every decision arrives, some twice (the retries), and every invalid event is caught.
    assert_eq!(
        ids.iter().filter(|(k, _)| k.contains("-dec-")).count(),
        3000
    );
    let repeats: u64 = ids.values().map(|&n| n as u64 - 1).sum();
    assert_eq!(repeats, stats.duplicates);
    assert!(
        stats.duplicates > 0 && stats.invalid > 0 && stats.late > 0,
        "{stats:?}"
    );
    assert_eq!(rejected, stats.invalid);
}

fn variant_idx(v: &str) -> usize {
    usize::from(v == "treatment")
}

#[test]
fn realized_ctr_matches_truth_and_treatment_wins() {
    let (events, sim) = run(seeded(11), 40_000);
    let truth = sim.truth();
    let mut shown = [0u64; 2];
    let mut clicks = [0u64; 2];
    let mut variant_of = std::collections::HashMap::new();
    for e in &events {
        match &e.body {
            Body::Decision(d) => {
                let v = variant_idx(d.experiments[0].variant);
                shown[v] += d.items.len() as u64;
                variant_of.insert(d.request_id.clone(), v);
            }
            Body::Interaction(i) if i.action == "click" => clicks[variant_of[&i.request_id]] += 1,
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
        // Greedy ranking of the same scores beats sampling from them.
        assert!(t.target_policy_value > t.logging_policy_value, "{t:?}");
    }
    assert!(truth.treatment.ctr > truth.control.ctr * 1.05, "{truth:?}");
    assert!(truth.ctr_lift > 0.05);
    assert_eq!(sonde_sim::assign("user-1"), sonde_sim::assign("user-1"));
}

#[test]
fn incidents_show_in_the_traffic() {
    let start = SimConfig::default().start_ms;
    let mut config = seeded(5);
    config.incidents = scenario("incidents", start).expect("known scenario");
    config.decisions_per_sec = 20.0;
    // 20 decisions/s for 20 simulated minutes covers every incident.
    let (events, sim) = run(config.clone(), 24_000);
    let during = |kind: IncidentKind, t: i64| {
        config
            .incidents
            .iter()
            .any(|i| i.kind == kind && i.start_ms <= t && t < i.end_ms)
    };
    let (mut inf_in, mut inf_out) = (Vec::new(), Vec::new());
    let (mut fb_in, mut n_in, mut fb_out) = (0, 0, 0);
    let (mut score_in, mut score_out) = (Vec::new(), Vec::new());
    for e in &events {
        let Some(d) = e.decision() else { continue };
        let t = e.timestamp;
        if during(IncidentKind::LatencySpike, t) {
            inf_in.push(d.latency_ms.components.inference);
        } else if !during(IncidentKind::FeatureStoreOutage, t) {
            inf_out.push(d.latency_ms.components.inference);
        }
        if during(IncidentKind::FeatureStoreOutage, t) {
            n_in += 1;
            fb_in += usize::from(d.fallback);
        } else {
            fb_out += usize::from(d.fallback);
        }
        let mean = d.items.iter().map(|i| i.score).sum::<f64>() / d.items.len() as f64;
        if during(IncidentKind::Drift, t) {
            score_in.push(mean);
        } else {
            score_out.push(mean);
        }
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    assert!(median(&mut inf_in) > 8.0 * median(&mut inf_out));
    assert_eq!(fb_out, 0);
    let share = fb_in as f64 / n_in as f64;
    assert!((share - 0.4).abs() < 0.05, "fallback share {share}");
    assert!(median(&mut score_in) > median(&mut score_out) + 0.05);
    assert_eq!(sim.truth().incidents.len(), 4);
}

#[test]
fn fast_json_writer_gives_the_bytes_of_serde() {
    let start = SimConfig::default().start_ms;
    let mut config = seeded(9);
    config.incidents = scenario("incidents", start).expect("known scenario");
    config.decisions_per_sec = 20.0;
    config.swap_share = 0.3;
    let (events, _) = run(config, 24_000);
    assert!(
        events
            .iter()
            .any(|e| e.decision().is_some_and(|d| d.flags.is_some()))
    );
    let mut d = Delivery::new(9, MessConfig::default());
    d.schedule(events);
    let mut lines = Vec::new();
    d.drain(&mut lines);
    let mut kinds = std::collections::BTreeSet::new();
    for line in &lines {
        let sonde_sim::Line::Event(e) = line else {
            continue;
        };
        kinds.insert(e.kind);
        let mut fast = Vec::new();
        e.write_json(&mut fast);
        let serde = serde_json::to_vec(&**e).expect("serializable");
        assert_eq!(
            String::from_utf8_lossy(&fast),
            String::from_utf8_lossy(&serde)
        );
    }
    assert_eq!(kinds.len(), 5, "{kinds:?}");
    // Strings that need escapes still come out as valid JSON.
    let mut e = match &lines[0] {
        sonde_sim::Line::Event(e) => (**e).clone(),
        sonde_sim::Line::Malformed(_) => panic!("first line is an event"),
    };
    e.event_id = "a\"b\\c\n".into();
    let mut fast = Vec::new();
    e.write_json(&mut fast);
    assert_eq!(fast, serde_json::to_vec(&e).expect("serializable"));
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
