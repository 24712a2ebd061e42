//! `sonde simulate`: simulated traffic to a file, or through the HTTP API with retries.

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use hyper::{Method, StatusCode};
use sonde_sim::{Delivery, Line, MessConfig, SimConfig, SimEvent, Simulator};

use crate::cli::SimulateArgs;
use crate::http::Client;

/// Events the simulator emits per decision on average (decision, clicks, carts, purchases,
/// touches): converts an event rate into the simulator's decision rate.
const EVENTS_PER_DECISION: f64 = 2.4;
/// Most events per request.
const BATCH: usize = 1000;
/// Attempts per batch before giving up on it.
const ATTEMPTS: u32 = 10;

/// Parse `90s`, `10m`, `2h` or plain seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| !c.is_ascii_digit() && c != '.') {
        Some(i) => (&s[..i], &s[i..]),
        None => (s, "s"),
    };
    let n: f64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration like 90s, 10m or 2h"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        "d" => n * 86_400.0,
        _ => {
            return Err(format!(
                "unknown unit {unit:?} in {s:?}; use ms, s, m, h or d"
            ));
        }
    };
    Ok(Duration::from_secs_f64(secs))
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

fn sim_config(args: &SimulateArgs, start_ms: i64, live_start_ms: i64) -> anyhow::Result<SimConfig> {
    let incidents = sonde_sim::scenario(&args.scenario, live_start_ms).with_context(|| {
        format!(
            "unknown scenario {:?}; choose one of {}",
            args.scenario,
            sonde_sim::SCENARIOS.join(", ")
        )
    })?;
    Ok(SimConfig {
        seed: args.seed,
        start_ms,
        decisions_per_sec: args.rate / EVENTS_PER_DECISION,
        incidents,
        swap_share: args.swap_share.clamp(0.0, 1.0),
        ..SimConfig::default()
    })
}

fn mess(args: &SimulateArgs) -> MessConfig {
    if args.clean {
        MessConfig::none()
    } else {
        MessConfig::default()
    }
}

/// Write `--decisions` decisions and their outcomes to `out` as NDJSON, in send order.
///
/// Three threads in a pipeline: this one simulates, `sonde-sim-json` schedules delivery and
/// serializes into 2 MB buffers, `sonde-sim-io` writes them (the kernel's copy into the page
/// cache is a third of the work). Batches pass in order, so the bytes depend on the seed alone.
/// Returns the events written and the seconds it took.
pub fn to_file(args: &SimulateArgs, out: &std::path::Path) -> anyhow::Result<(usize, f64)> {
    const BUF: usize = 2 << 20;
    let start = SimConfig::default().start_ms;
    let mut sim = Simulator::new(sim_config(args, start, start)?);
    let mut delivery = Delivery::new(args.seed, mess(args));
    let mut file =
        std::fs::File::create(out).with_context(|| format!("creating {}", out.display()))?;
    let started = Instant::now();
    // Simulated events, and the send time before which every line can be released.
    let (events_tx, events_rx) = std::sync::mpsc::sync_channel::<(Vec<SimEvent>, i64)>(4);
    let (full_tx, full_rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(2);
    let (free_tx, free_rx) = std::sync::mpsc::channel::<Vec<u8>>();
    // A fixed pool of buffers circulates between the two: fresh ones would cost page faults.
    for _ in 0..4 {
        free_tx.send(Vec::with_capacity(BUF + (64 << 10)))?;
    }
    let written = std::thread::scope(|s| -> anyhow::Result<usize> {
        let io = std::thread::Builder::new()
            .name("sonde-sim-io".into())
            .spawn_scoped(s, move || -> std::io::Result<()> {
                for mut buf in full_rx {
                    file.write_all(&buf)?;
                    buf.clear();
                    // The serializer may be done already; the buffer is then dropped.
                    let _ = free_tx.send(buf);
                }
                file.flush()
            })?;
        let delivery = &mut delivery;
        let json = std::thread::Builder::new()
            .name("sonde-sim-json".into())
            .spawn_scoped(s, move || {
                let Ok(mut buf) = free_rx.recv() else {
                    return 0;
                };
                let mut written = 0;
                let mut lines = Vec::new();
                for (events, release) in events_rx {
                    delivery.schedule(events);
                    delivery.due(release, &mut lines);
                    for line in lines.drain(..) {
                        line.write_json(&mut buf);
                        buf.push(b'\n');
                        written += 1;
                        // Hand over before the buffer would grow (a grown one is fresh
                        // memory, and page faults cost more than the copy).
                        if buf.len() >= BUF {
                            // A closed channel means the writer failed; it reports why.
                            if full_tx.send(buf).is_err() {
                                return written;
                            }
                            match free_rx.recv() {
                                Ok(next) => buf = next,
                                Err(_) => return written,
                            }
                        }
                    }
                }
                let _ = full_tx.send(buf);
                written
            })?;
        let mut events = Vec::new();
        for n in 0..args.decisions {
            sim.step(&mut events);
            // Release what nothing can overtake any more: new events are sent after the
            // clock (touches, the earliest, a minute before it).
            if n % 512 == 511 {
                let release = sim.clock_ms() - 120_000;
                // A closed channel means the writer failed; it reports why below.
                if events_tx
                    .send((std::mem::take(&mut events), release))
                    .is_err()
                {
                    break;
                }
            }
        }
        let _ = events_tx.send((events, i64::MAX));
        drop(events_tx);
        let written = json.join();
        match io.join() {
            Ok(r) => r.with_context(|| format!("writing {}", out.display()))?,
            Err(_) => anyhow::bail!("the writer thread panicked"),
        }
        written.map_err(|_| anyhow::anyhow!("the serializer thread panicked"))
    })?;
    let secs = started.elapsed().as_secs_f64();
    eprintln!(
        "wrote {written} events ({} decisions) to {} in {secs:.1} s: {:.0} events/s",
        args.decisions,
        out.display(),
        written as f64 / secs
    );
    if let Some(path) = &args.truth {
        write_truth(path, &sim, &delivery)?;
    }
    Ok((written, secs))
}

fn write_truth(path: &std::path::Path, sim: &Simulator, d: &Delivery) -> anyhow::Result<()> {
    let v = serde_json::json!({"truth": sim.truth(), "delivery": d.stats()});
    std::fs::write(path, serde_json::to_vec_pretty(&v)?)
        .with_context(|| format!("writing {}", path.display()))
}

/// Totals of what the server answered.
#[derive(Debug, Default)]
pub struct Tally {
    /// Events accepted.
    pub accepted: AtomicU64,
    /// Duplicates reported (the simulator's retries).
    pub duplicates: AtomicU64,
    /// Events rejected.
    pub rejected: AtomicU64,
    /// Requests retried (429, 503, network errors).
    pub retries: AtomicU64,
    /// Batches given up after every attempt failed.
    pub failed_batches: AtomicU64,
    /// Decisions generated.
    pub decisions: AtomicU64,
}

impl Tally {
    /// One line for humans.
    pub fn line(&self) -> String {
        format!(
            "accepted {} · duplicates {} · rejected {} · retried requests {} · failed batches {}",
            self.accepted.load(Ordering::Relaxed),
            self.duplicates.load(Ordering::Relaxed),
            self.rejected.load(Ordering::Relaxed),
            self.retries.load(Ordering::Relaxed),
            self.failed_batches.load(Ordering::Relaxed),
        )
    }
}

/// Where and how to send.
pub struct Target {
    /// Server URL.
    pub url: String,
    /// Write key.
    pub key: String,
}

/// Send one NDJSON batch of `events` events, retrying with the same bytes (so the same
/// event ids) until it is answered 200 or the attempts run out.
pub async fn send_batch(
    client: &Client,
    target: &Target,
    body: Bytes,
    events: usize,
    backfill: bool,
    tally: &Tally,
) {
    let url = format!(
        "{}/v1/events{}",
        target.url.trim_end_matches('/'),
        if backfill { "?backfill=true" } else { "" }
    );
    let mut wait = Duration::from_millis(200);
    for attempt in 1..=ATTEMPTS {
        let reply = client
            .send(
                Method::POST,
                &url,
                Some(&target.key),
                Some("application/x-ndjson"),
                body.clone(),
            )
            .await;
        match reply {
            Ok(r) if r.status == StatusCode::OK => {
                let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap_or_default();
                let get = |k: &str| v[k].as_u64().unwrap_or(0);
                tally.accepted.fetch_add(get("accepted"), Ordering::Relaxed);
                tally
                    .duplicates
                    .fetch_add(get("duplicates"), Ordering::Relaxed);
                tally.rejected.fetch_add(get("rejected"), Ordering::Relaxed);
                return;
            }
            Ok(r) if r.status.is_client_error() && r.status != StatusCode::TOO_MANY_REQUESTS => {
                tracing::error!(status = r.status.as_u16(), body = %r.text(), "batch refused; not retrying");
                tally.failed_batches.fetch_add(1, Ordering::Relaxed);
                return;
            }
            Ok(r) => tracing::debug!(
                status = r.status.as_u16(),
                attempt,
                "batch not taken; retrying"
            ),
            Err(e) => tracing::debug!(error = %e, attempt, "batch not delivered; retrying"),
        }
        tally.retries.fetch_add(1, Ordering::Relaxed);
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(Duration::from_secs(5));
    }
    tracing::error!(events, "batch failed after every attempt");
    tally.failed_batches.fetch_add(1, Ordering::Relaxed);
}

async fn send_all(
    client: &Client,
    target: &Target,
    lines: &mut Vec<Line>,
    backfill: bool,
    tally: &Tally,
) {
    for chunk in lines.chunks(BATCH) {
        let mut body = Vec::with_capacity(chunk.len() * 1024);
        sonde_sim::write_ndjson(chunk, &mut body);
        send_batch(client, target, body.into(), chunk.len(), backfill, tally).await;
    }
    lines.clear();
}

/// Backfill, then stream live traffic paced to the wall clock until `stop` or the duration.
/// `--backfill` days of history at `--backfill-rate`, then `--rate` for `--duration`.
pub async fn to_server(
    args: &SimulateArgs,
    target: Target,
    tally: Arc<Tally>,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<()> {
    let client = Client::new();
    let live_start = now_ms();
    let start = live_start - (args.backfill * 86_400_000.0) as i64;
    let mut config = sim_config(args, start, live_start)?;
    let live_rate = config.decisions_per_sec;
    let mut delivery = Delivery::new(args.seed, mess(args));
    let sim = if args.backfill > 0.0 {
        config.decisions_per_sec = args.backfill_rate / EVENTS_PER_DECISION;
        let mut sim = Simulator::new(config);
        let (mut events, mut lines) = (Vec::new(), Vec::new());
        let started = Instant::now();
        // History: everything whose send time is already past, at full speed.
        while sim.clock_ms() < live_start && !stop.load(Ordering::Relaxed) {
            sim.step(&mut events);
            tally.decisions.fetch_add(1, Ordering::Relaxed);
            delivery.schedule(std::mem::take(&mut events));
            delivery.due(sim.clock_ms().min(live_start), &mut lines);
            if lines.len() >= BATCH {
                send_all(&client, &target, &mut lines, true, &tally).await;
            }
        }
        send_all(&client, &target, &mut lines, true, &tally).await;
        tracing::info!(
            days = args.backfill,
            secs = started.elapsed().as_secs_f64(),
            "backfill done"
        );
        sim.set_rate(live_rate);
        sim
    } else {
        Simulator::new(config)
    };
    live(
        sim,
        delivery,
        &client,
        &target,
        args.duration,
        &tally,
        &stop,
    )
    .await
}

async fn live(
    mut sim: Simulator,
    mut delivery: Delivery,
    client: &Client,
    target: &Target,
    duration: Option<Duration>,
    tally: &Tally,
    stop: &AtomicBool,
) -> anyhow::Result<()> {
    let started = Instant::now();
    let mut events = Vec::new();
    let mut lines = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    loop {
        tick.tick().await;
        if stop.load(Ordering::Relaxed) || duration.is_some_and(|d| started.elapsed() >= d) {
            break;
        }
        let now = now_ms();
        // Catch the simulated clock up with the wall clock, then send what is due.
        while sim.clock_ms() < now {
            sim.step(&mut events);
            tally.decisions.fetch_add(1, Ordering::Relaxed);
            delivery.schedule(std::mem::take(&mut events));
        }
        delivery.due(now, &mut lines);
        send_all(client, target, &mut lines, false, tally).await;
    }
    Ok(())
}
