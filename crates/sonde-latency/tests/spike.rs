//! Burn-rate alerts on the simulator's latency-spike scenario, in simulated time: a day of
//! steady traffic raises no alert; a 3-minute spike pages within 2 minutes of its start and
//! the page clears after it ends.

use sonde_latency::{
    AlertBook, Filter, Objective, Observation, RollupConfig, Rollups, Severity, SloSpec, evaluate,
};
use sonde_sim::{SimConfig, SimEvent, Simulator, scenario};

const MIN: i64 = 60_000;
const HOUR: i64 = 60 * MIN;

fn slo() -> SloSpec {
    SloSpec {
        name: "home_feed_latency".into(),
        surface: Some("home_feed".into()),
        kind: Objective::Latency,
        threshold_ms: Some(150.0),
        target: 0.999,
        period_days: 28,
    }
}

/// Feed every decision the simulator makes before `until` into `rollups`.
fn feed(sim: &mut Simulator, rollups: &mut Rollups, until: i64, now: i64) {
    let mut out: Vec<SimEvent> = Vec::new();
    let mut components = Vec::new();
    loop {
        out.clear();
        sim.step(&mut out);
        let Some(e) = out.first() else { continue };
        let Some(d) = e.decision() else { continue };
        let c = &d.latency_ms.components;
        components.clear();
        components.extend([
            ("feature_fetch".into(), c.feature_fetch),
            ("retrieval".into(), c.retrieval),
            ("inference".into(), c.inference),
            ("rerank".into(), c.rerank),
        ]);
        rollups.observe(
            &Observation {
                time_ms: e.timestamp,
                surface: d.surface,
                model_version: d.model.version,
                experiment: d.experiments[0].id,
                variant: d.experiments[0].variant,
                total_ms: Some(d.latency_ms.total),
                components: &components,
                fallback: d.fallback,
                request_id: &d.request_id,
                trace_id: None,
            },
            now,
        );
        if e.timestamp >= until {
            return;
        }
    }
}

/// Evaluate the SLO every `step` over `[from, to)`; returns the page and ticket states seen.
fn run_alerts(rollups: &Rollups, book: &mut AlertBook, from: i64, to: i64, step: i64) {
    let spec = slo();
    let filter = Filter {
        surface: spec.surface.clone(),
        ..Filter::default()
    };
    let mut t = from;
    while t < to {
        let eval = evaluate(&spec, t, |a, b| {
            let w = rollups.window(&filter, a, b, spec.threshold_ms);
            (w.over, w.samples)
        });
        book.update(&spec.name, &eval);
        t += step;
    }
}

#[test]
fn a_latency_spike_pages_within_two_minutes_and_clears_after_it_ends() {
    let start = SimConfig::default().start_ms;
    let spike_start = start + 26 * HOUR;
    let incidents = scenario("latency-spike", spike_start - 2 * MIN).expect("known scenario");
    assert_eq!(incidents[0].start_ms, spike_start);
    let spike_end = incidents[0].end_ms;
    let end = spike_end + HOUR;
    let mut sim = Simulator::new(SimConfig {
        seed: 11,
        start_ms: start,
        decisions_per_sec: 6.0,
        incidents,
        ..SimConfig::default()
    });
    let mut rollups = Rollups::new(RollupConfig {
        thresholds_ms: vec![150.0],
        ..RollupConfig::default()
    });
    feed(&mut sim, &mut rollups, end, end);
    rollups.maintain(end);

    // Steady: 24 hours evaluated every 5 minutes, from the second hour on (the long windows
    // need some history to mean anything), raise nothing.
    let mut steady = AlertBook::new(100);
    run_alerts(
        &rollups,
        &mut steady,
        start + 2 * HOUR,
        spike_start,
        5 * MIN,
    );
    assert_eq!(
        steady.history().count(),
        0,
        "{:?}",
        steady.history().collect::<Vec<_>>()
    );

    // Around the spike, every minute. (Evaluations fall on whole minutes: a window ending
    // mid-minute would see that minute's later decisions.)
    let mut book = AlertBook::new(100);
    run_alerts(&rollups, &mut book, spike_start - 30 * MIN, end, MIN);
    let pages: Vec<_> = book
        .history()
        .filter(|t| t.severity == Severity::Page)
        .collect();
    assert_eq!(pages.len(), 2, "one firing and one resolution: {pages:?}");
    let fired = pages[0].at_ms;
    assert!(
        fired > spike_start && fired <= spike_start + 2 * MIN,
        "paged {} s after the spike started",
        (fired - spike_start) / 1000
    );
    let cleared = pages[1].at_ms;
    eprintln!(
        "paged {} s after the start; cleared {} s after the end",
        (fired - spike_start) / 1000,
        (cleared - spike_end) / 1000
    );
    assert!(cleared > spike_end, "cleared before the spike ended");
    // The 30-minute short window of the 6× rule keeps the page until the spike leaves it.
    assert!(
        cleared <= spike_end + 31 * MIN,
        "cleared {} min after the end",
        (cleared - spike_end) / MIN
    );
    let page = book
        .states()
        .find(|s| s.severity == Severity::Page)
        .expect("page state");
    assert!(!page.firing);
}
