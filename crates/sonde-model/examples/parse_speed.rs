//! Parse + validate + pseudonymize throughput on one core, for the bench's decision payload.
use std::time::{Duration, Instant};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let mut events = Vec::new();
    for n in 0..4000u64 {
        let items: Vec<serde_json::Value> = (1..=10u64)
            .map(|pos| {
                let item = (n * 7919 + pos * 104729) % 50_000;
                serde_json::json!({"item_id": format!("item-{item}"), "position": pos,
                  "score": 0.123, "propensity": 0.456,
                  "attributes": {"category": "books", "provider": format!("p{}", item % 40)}})
            })
            .collect();
        events.push(serde_json::json!({
            "type": "decision", "event_id": format!("bench-{n:016x}"), "timestamp": 1_790_000_000_000i64 + n as i64,
            "sent_at": 1_790_000_000_003i64 + n as i64, "user_id": format!("user-{}", n % 1000),
            "session_id": format!("sess-{}-3", n % 1000),
            "context": {"device": "mobile", "os": "android", "region": "eu-west", "locale": "en-GB", "app_version": "5.12.0"},
            "request_id": format!("req-{}", n * 1_000_003), "trace_id": format!("{:032x}", n + 1),
            "surface": "home", "model": {"name": "ranker", "version": "v8"},
            "experiments": [{"id": "ranker_ab", "variant": "treatment"}], "items": items,
            "latency_ms": {"total": 40.5, "components": {"feature_fetch": 8.1, "retrieval": 12.0, "inference": 15.2, "rerank": 5.2}},
            "fallback": false, "features": {"recency_days": 3, "segment": "loyal"}
        }));
    }
    let raws: Vec<Vec<u8>> = events
        .iter()
        .map(|e| serde_json::to_vec(e).unwrap())
        .collect();
    let bytes: usize = raws.iter().map(|r| r.len()).sum();
    let p = sonde_model::KeyedPseudonymizer::new("k1", b"bench-secret");
    let ctx = sonde_model::ParseCtx {
        policy: sonde_model::TimePolicy::default(),
        pseudonymizer: &p,
        received_at: 1_790_000_000_010,
        backfill: false,
        limits: sonde_model::Limits::default(),
    };
    if std::env::args().nth(1).as_deref() == Some("fixed") {
        // The best of 15 passes: on a shared machine the minimum is the steadiest figure.
        let mut best = f64::MAX;
        for _ in 0..15 {
            let start = Instant::now();
            for r in &raws {
                std::hint::black_box(sonde_model::parse_event(r, &ctx).unwrap());
            }
            best = best.min(start.elapsed().as_secs_f64() * 1e6 / raws.len() as f64);
        }
        println!("best pass: {best:.2} us/event");
        return;
    }
    for _ in 0..3 {
        let mut n = 0usize;
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(2) {
            for r in &raws {
                let e = sonde_model::parse_event(r, &ctx).unwrap();
                std::hint::black_box(&e);
                n += 1;
            }
        }
        let s = start.elapsed().as_secs_f64();
        println!(
            "{:.0} events/s, {:.2} us/event, {:.0} MB/s",
            n as f64 / s,
            s * 1e6 / n as f64,
            (bytes / raws.len() * n) as f64 / s / 1e6
        );
    }
}
