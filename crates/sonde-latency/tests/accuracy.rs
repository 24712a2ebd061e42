//! Quantile accuracy: on a million samples from heavy-tailed distributions, every quantile
//! the sketch reports — alone, merged from per-minute pieces, or through the rollups — is
//! within 1% of the exact one (the sample of rank ⌊q·(n−1)⌋).

use proptest::prelude::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, LogNormal, Pareto, Weibull};
use sonde_latency::{
    Filter, GroupBy, Observation, RELATIVE_ACCURACY, RollupConfig, Rollups, Sketch,
};

const N: usize = 1_000_000;
const QS: [f64; 9] = [0.0, 0.01, 0.25, 0.5, 0.9, 0.95, 0.99, 0.999, 1.0];

#[derive(Debug, Clone, Copy)]
enum Tail {
    LogNormal(f64, f64),
    Pareto(f64, f64),
    Weibull(f64, f64),
    /// Mostly fast, sometimes a timeout-like second mode: the shape of real tails.
    Mixture(f64),
}

fn samples(tail: Tail, seed: u64) -> Vec<f64> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut out = Vec::with_capacity(N);
    match tail {
        Tail::LogNormal(mu, sigma) => {
            let d = LogNormal::new(mu, sigma).expect("valid");
            out.extend((0..N).map(|_| d.sample(&mut rng)));
        }
        Tail::Pareto(scale, shape) => {
            let d = Pareto::new(scale, shape).expect("valid");
            out.extend((0..N).map(|_| d.sample(&mut rng)));
        }
        Tail::Weibull(scale, shape) => {
            let d = Weibull::new(scale, shape).expect("valid");
            out.extend((0..N).map(|_| d.sample(&mut rng)));
        }
        Tail::Mixture(p_slow) => {
            let fast = LogNormal::new(3.0, 0.4).expect("valid");
            let slow = Pareto::new(250.0, 1.2).expect("valid");
            out.extend((0..N).map(|_| {
                if rng.random_bool(p_slow) {
                    slow.sample(&mut rng)
                } else {
                    fast.sample(&mut rng)
                }
            }));
        }
    }
    out
}

fn exact(sorted: &[f64], q: f64) -> f64 {
    sorted[(q * (sorted.len() - 1) as f64).floor() as usize]
}

fn check(label: &str, got: Option<f64>, want: f64) {
    let got = got.unwrap_or(f64::NAN);
    let rel = ((got - want) / want).abs();
    // The tolerance is the sketch's guarantee; 1e-12 covers the float rounding of ln/exp.
    assert!(
        rel <= RELATIVE_ACCURACY + 1e-12,
        "{label}: reported {got}, exact {want}, relative error {rel}"
    );
}

fn tail() -> impl Strategy<Value = Tail> {
    prop_oneof![
        (1.0f64..5.0, 0.5f64..2.5).prop_map(|(m, s)| Tail::LogNormal(m, s)),
        (0.5f64..20.0, 0.8f64..3.0).prop_map(|(x, a)| Tail::Pareto(x, a)),
        (5.0f64..100.0, 0.3f64..1.0).prop_map(|(l, k)| Tail::Weibull(l, k)),
        (0.001f64..0.05).prop_map(Tail::Mixture),
    ]
}

proptest! {
    // Each case is a million samples; eight cases cover every family twice on average.
    #![proptest_config(ProptestConfig::with_cases(8))]

    #[test]
    fn every_quantile_is_within_one_percent(tail in tail(), seed in any::<u64>()) {
        let values = samples(tail, seed);
        let mut whole = Sketch::new();
        // The same values cut into 60 minute-sized pieces and merged.
        let mut pieces: Vec<Sketch> = (0..60).map(|_| Sketch::new()).collect();
        for (i, v) in values.iter().enumerate() {
            whole.add(*v);
            pieces[i % 60].add(*v);
        }
        let mut merged = Sketch::new();
        for p in &pieces {
            // Through the persisted form, as rows come back after a restart.
            merged.merge(&Sketch::decode(&p.encode()).expect("decodes"));
        }
        let mut sorted = values;
        sorted.sort_by(f64::total_cmp);
        prop_assert_eq!(whole.count(), N as u64);
        prop_assert_eq!(merged.count(), N as u64);
        for q in QS {
            let want = exact(&sorted, q);
            check(&format!("{tail:?} q={q}"), whole.quantile(q), want);
            check(&format!("{tail:?} merged q={q}"), merged.quantile(q), want);
        }
    }
}

#[test]
fn rollup_series_quantiles_are_within_one_percent() {
    let values = samples(Tail::Mixture(0.02), 7);
    let start = 1_767_225_600_000i64;
    let mut rollups = Rollups::new(RollupConfig::default());
    let components: Vec<(compact_str::CompactString, f64)> = Vec::new();
    // One decision every 3.6 ms: a million decisions over one hour, in two variants.
    for (i, v) in values.iter().enumerate() {
        let o = Observation {
            time_ms: start + (i as i64 * 36) / 10,
            surface: "home_feed",
            model_version: "v1",
            experiment: "exp",
            variant: if i % 2 == 0 { "control" } else { "treatment" },
            total_ms: Some(*v),
            components: &components,
            fallback: false,
            request_id: "r",
            trace_id: None,
        };
        rollups.observe(&o, start + 3_600_000);
    }
    rollups.maintain(start + 3_600_000 + 600_000);
    let series = rollups
        .series(
            &Filter::default(),
            "total",
            start,
            start + 3_600_000,
            3_600_000,
            GroupBy::None,
            &QS,
        )
        .expect("valid query");
    assert_eq!(series.len(), 1);
    let point = &series[0].points[0];
    assert_eq!(point.count, N as u64);
    let mut sorted = values;
    sorted.sort_by(f64::total_cmp);
    for (q, got) in QS.iter().zip(&point.quantiles) {
        check(&format!("rollup q={q}"), *got, exact(&sorted, *q));
    }
}
