//! `sonde bench ingest` and `sonde bench query`: figures, not pass/fail.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use clap::Args;
use hyper::Method;
use parking_lot::Mutex;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

use crate::bench_steal::{self, Steal};
use crate::http::Client;

/// Options of `sonde bench ingest`.
#[derive(Debug, Args)]
pub struct IngestArgs {
    /// Seconds of full-speed ingest.
    #[arg(long, default_value_t = 60)]
    pub duration: u64,
    /// Seconds of paced ingest (ack latency).
    #[arg(long, default_value_t = 20)]
    pub paced_duration: u64,
    /// Events per second of the paced phase (default: half the 100,000 events/s
    /// throughput target, the rate the ack latency target is set at).
    #[arg(long, conflicts_with = "half_of_measured")]
    pub paced_rate: Option<f64>,
    /// Pace at half of this run's own full-speed rate instead: a stricter test once full
    /// speed is above the target.
    #[arg(long)]
    pub half_of_measured: bool,
    /// Concurrent connections.
    #[arg(long, default_value_t = 8)]
    pub connections: usize,
    /// Events per request at full speed.
    #[arg(long, default_value_t = 1000)]
    pub batch: usize,
    /// Events per request in the paced phase (a typical SDK flush size).
    #[arg(long, default_value_t = 100)]
    pub paced_batch: usize,
    /// Data directory for the server (default: a fresh temporary directory).
    #[arg(long)]
    pub data_dir: Option<std::path::PathBuf>,
}

/// Options of `sonde bench query`.
#[derive(Debug, Args)]
pub struct QueryArgs {
    /// decision_items rows to generate (10 per decision).
    #[arg(long, default_value_t = 10_000_000)]
    pub rows: usize,
    /// Query repetitions.
    #[arg(long, default_value_t = 5)]
    pub repeat: usize,
}

/// Options of `sonde bench simulate`.
#[derive(Debug, Args)]
pub struct SimulateBenchArgs {
    /// Decisions per run (each brings ~1.4 more events).
    #[arg(long, default_value_t = 400_000)]
    pub decisions: usize,
    /// Runs; the median is reported.
    #[arg(long, default_value_t = 5)]
    pub runs: usize,
    /// Directory for the output file (default: a fresh temporary directory).
    #[arg(long)]
    pub dir: Option<std::path::PathBuf>,
}

/// Options of `sonde bench relevance`.
#[derive(Debug, Args)]
pub struct RelevanceBenchArgs {
    /// Lists (decisions) of 10 items.
    #[arg(long, default_value_t = 1_000_000)]
    pub lists: usize,
    /// A Python with ranx installed, to time ranx's NDCG@10 on the same lists
    /// (`scripts/reference/ranx_bench.py`). Without it only Sonde's figures are printed.
    #[arg(long)]
    pub python: Option<std::path::PathBuf>,
}

/// `sonde bench relevance`: every ranking metric at k = 10 over `--lists` lists of 10
/// graded items (grades drawn like the simulator's outcomes), and NDCG@10 alone; then,
/// with `--python`, ranx's NDCG@10 over the same lists in the same run.
pub fn relevance(args: RelevanceBenchArgs) -> anyhow::Result<()> {
    use sonde_relevance::{RankedItem, RankingSummary, list_metrics};
    const LEN: usize = 10;
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    // About a fifth of the lists have an outcome, as in the simulator at a 7% CTR.
    let grades: Vec<u8> = (0..args.lists * LEN)
        .map(|i| {
            let pos = (i % LEN) as f64 + 1.0;
            let r: f64 = rng.random();
            let p = 0.06 / pos.powf(0.5);
            if r < p * 0.3 {
                3
            } else if r < p * 0.6 {
                2
            } else if r < p {
                1
            } else {
                0
            }
        })
        .collect();
    let lists = |f: &mut dyn FnMut(&[RankedItem<'_>])| {
        let mut items = Vec::with_capacity(LEN);
        for chunk in grades.chunks(LEN) {
            items.clear();
            items.extend(chunk.iter().enumerate().map(|(n, g)| RankedItem {
                item_id: "",
                score: -(n as f64),
                grade: f64::from(*g),
                clicked: *g > 0,
            }));
            f(&items);
        }
    };
    let started = Instant::now();
    let mut all = RankingSummary::default();
    lists(&mut |items| all.add(&list_metrics(items, 10)));
    let all_secs = started.elapsed().as_secs_f64();
    let all = all.finish();
    let started = Instant::now();
    let mut ndcg = 0.0;
    lists(&mut |items| ndcg += list_metrics(items, 10).ndcg);
    let ndcg_secs = started.elapsed().as_secs_f64();
    println!(
        "sonde: {} lists, {} items: every ranking metric at k=10 in {all_secs:.3} s \
         (floor 2 s: {}); NDCG@10 in {ndcg_secs:.3} s; mean NDCG@10 {:.6}, coverage {:.4}",
        args.lists,
        args.lists * LEN,
        if all_secs < 2.0 { "met" } else { "MISSED" },
        all.ndcg,
        all.coverage,
    );
    let Some(python) = args.python else {
        println!("ranx: skipped (give --python with ranx installed)");
        return Ok(());
    };
    let tmp = tempfile::tempdir()?;
    let path = tmp.path().join("lists.bin");
    std::fs::write(&path, &grades)?;
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../scripts/reference/ranx_bench.py"
    );
    let out = Command::new(&python)
        .arg(script)
        .arg(&path)
        .arg(LEN.to_string())
        .output()
        .with_context(|| format!("running {}", python.display()))?;
    if !out.status.success() {
        bail!("ranx failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let v: Value = serde_json::from_slice(&out.stdout).context("ranx output")?;
    let warm = v["warm_secs"].as_f64().unwrap_or(f64::NAN);
    println!(
        "ranx: NDCG@10 in {warm:.3} s warm ({:.3} s first, with numba compilation); mean NDCG@10 \
         {:.6}; sonde is {:.1}x faster (warm)",
        v["first_secs"].as_f64().unwrap_or(f64::NAN),
        v["ndcg10_mean_all"].as_f64().unwrap_or(f64::NAN),
        warm / ndcg_secs,
    );
    Ok(())
}

/// Floor of `sonde bench simulate` (events/s to a file).
const SIMULATE_FLOOR: f64 = 500_000.0;

/// `sonde bench simulate`: `sonde simulate --out` as a user runs it (default scenario and
/// mess), several times, reporting events/s per run and the median; then once to /dev/null
/// to separate generation from the kernel's file writing.
pub fn simulate(args: SimulateBenchArgs) -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let dir = args.dir.clone().unwrap_or_else(|| tmp.path().to_path_buf());
    let path = dir.join("bench-simulate.ndjson");
    let sim_args = |out: &std::path::Path| crate::cli::SimulateArgs {
        out: Some(out.to_path_buf()),
        url: None,
        key: None,
        truth: None,
        decisions: args.decisions,
        seed: 1,
        rate: 500.0,
        duration: None,
        scenario: "steady".into(),
        backfill: 0.0,
        backfill_rate: 2.0,
        clean: false,
        swap_share: 0.0,
    };
    let mut rates = Vec::new();
    for run in 1..=args.runs.max(1) {
        let _ = std::fs::remove_file(&path);
        let (events, secs) = crate::simulate::to_file(&sim_args(&path), &path)?;
        let bytes = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        println!(
            "run {run}: {events} events, {:.0} MB in {secs:.2} s: {:.0} events/s",
            bytes as f64 / 1e6,
            events as f64 / secs
        );
        rates.push(events as f64 / secs);
        // Untimed: flush this run's gigabyte and let the file system settle, so one run's
        // writeback and discards do not land in the next run's time.
        std::fs::File::open(&path)?.sync_all()?;
        std::fs::remove_file(&path)?;
        std::thread::sleep(Duration::from_secs(2));
    }
    let _ = std::fs::remove_file(&path);
    rates.sort_by(f64::total_cmp);
    let median = rates[rates.len() / 2];
    let (events, secs) = crate::simulate::to_file(
        &sim_args(std::path::Path::new("/dev/null")),
        std::path::Path::new("/dev/null"),
    )?;
    println!(
        "to a file: median {median:.0} events/s over {} runs (floor {SIMULATE_FLOOR:.0}: {}); \
         to /dev/null: {:.0} events/s",
        rates.len(),
        if median >= SIMULATE_FLOOR {
            "met"
        } else {
            "MISSED"
        },
        events as f64 / secs
    );
    Ok(())
}

const SURFACES: [&str; 3] = ["home_feed", "search", "product_recs"];
const CATEGORIES: [&str; 8] = [
    "shoes", "books", "games", "garden", "music", "toys", "tools", "food",
];
/// Width of the event-id counter patched into pre-built payloads.
const ID_DIGITS: usize = 16;

/// One realistic decision event with 10 items. Its `event_id` ends in `ID_DIGITS` zeros
/// that the sender overwrites with a unique counter.
pub fn decision_event(rng: &mut impl Rng, now_ms: i64) -> Value {
    let surface = SURFACES[rng.random_range(0..SURFACES.len())];
    let treatment = rng.random_bool(0.5);
    let user = rng.random_range(0..100_000u32);
    let items: Vec<Value> = (1..=10)
        .map(|pos| {
            let item = rng.random_range(0..50_000u32);
            json!({
                "item_id": format!("item-{item}"),
                "position": pos,
                "score": (rng.random::<f64>() * 1000.0).round() / 1000.0,
                "propensity": (rng.random_range(0.01..1.0f64) * 1000.0).round() / 1000.0,
                "attributes": {"category": CATEGORIES[(item % 8) as usize], "provider": format!("p{}", item % 40)}
            })
        })
        .collect();
    json!({
        "type": "decision",
        "event_id": format!("bench-{}", "0".repeat(ID_DIGITS)),
        "timestamp": now_ms,
        "sent_at": now_ms + 3,
        "user_id": format!("user-{user}"),
        "session_id": format!("sess-{user}-{}", rng.random_range(0..20u32)),
        "context": {"device": if rng.random_bool(0.6) { "mobile" } else { "desktop" }, "os": "android", "region": "eu-west", "locale": "en-GB", "app_version": "5.12.0"},
        "request_id": format!("req-{}", rng.random::<u64>()),
        "trace_id": format!("{:032x}", rng.random::<u128>() | 1),
        "surface": surface,
        "model": {"name": "ranker", "version": if treatment { "v8" } else { "v7" }},
        "experiments": [{"id": "ranker_ab", "variant": if treatment { "treatment" } else { "control" }}],
        "items": items,
        "latency_ms": {"total": 40.5, "components": {"feature_fetch": 8.1, "retrieval": 12.0, "inference": 15.2, "rerank": 5.2}},
        "fallback": false,
        "features": {"recency_days": 3, "segment": "loyal"}
    })
}

/// A batch body (JSON array) and the byte offsets of each event id's counter.
struct Template {
    body: Vec<u8>,
    id_offsets: Vec<usize>,
}

fn template(rng: &mut impl Rng, batch: usize) -> anyhow::Result<Template> {
    let now = chrono::Utc::now().timestamp_millis();
    let events: Vec<Value> = (0..batch).map(|_| decision_event(rng, now)).collect();
    let body = serde_json::to_vec(&events)?;
    let needle = format!("\"bench-{}\"", "0".repeat(ID_DIGITS));
    let mut id_offsets = Vec::with_capacity(batch);
    let mut from = 0;
    while let Some(i) = find(&body[from..], needle.as_bytes()) {
        id_offsets.push(from + i + 7);
        from += i + needle.len();
    }
    anyhow::ensure!(id_offsets.len() == batch, "template ids not found");
    Ok(Template { body, id_offsets })
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// One connection's request bodies, one per template it sends, rewritten in place: only
/// the ids change between requests. The client shares the server's two cores, so copying
/// the 1.9 MB template (and formatting 1,000 ids) for every request would take CPU the
/// measurement then charges to the server's throughput.
struct Bodies {
    kept: Vec<Option<Vec<u8>>>,
}

impl Bodies {
    fn new(templates: usize) -> Self {
        Bodies {
            kept: vec![None; templates],
        }
    }

    /// Template `t`'s body with fresh, unique ids.
    fn stamp(&mut self, templates: &[Template], t: usize, counter: &AtomicU64) -> Bytes {
        let template = &templates[t];
        let mut body = self.kept[t].take().unwrap_or_else(|| template.body.clone());
        let first = counter.fetch_add(template.id_offsets.len() as u64, Ordering::Relaxed);
        for (i, &off) in template.id_offsets.iter().enumerate() {
            write_hex(&mut body[off..off + ID_DIGITS], first + i as u64);
        }
        Bytes::from(body)
    }

    /// Take a sent body back for reuse, once the HTTP client has let go of it.
    fn give_back(&mut self, t: usize, sent: Bytes) {
        if let Ok(body) = sent.try_into_mut() {
            self.kept[t] = Some(body.into());
        }
    }
}

/// `v` as lower-case hex filling `dst` (zero-padded on the left).
fn write_hex(dst: &mut [u8], mut v: u64) {
    for b in dst.iter_mut().rev() {
        *b = b"0123456789abcdef"[(v & 15) as usize];
        v >>= 4;
    }
}

fn percentile(sorted: &[u64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[i] as f64 / 1000.0
}

/// CPU seconds (user + system) a process has used, from `/proc/PID/stat`.
fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_cpu_ticks(&stat).map(|ticks| ticks as f64 / clock_ticks_per_second())
}

/// utime + stime from a `/proc/PID/stat` line: fields 14 and 15, counted after the
/// parenthesized command name (which may itself hold spaces).
fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

fn clock_ticks_per_second() -> f64 {
    #[cfg(target_os = "linux")]
    // SAFETY: sysconf reads a constant; no memory is passed.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    #[cfg(not(target_os = "linux"))]
    let ticks = 100;
    if ticks > 0 { ticks as f64 } else { 100.0 }
}

/// A memory figure of `/proc/PID/status` (`VmHWM:` peak RSS, `VmRSS:` RSS now), in MB.
fn status_mb(pid: u32, field: &str) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

fn peak_rss_mb(pid: u32) -> Option<f64> {
    status_mb(pid, "VmHWM:")
}

struct Server {
    child: Child,
    url: String,
    write_key: String,
    read_key: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
    }
}

fn start_server(data_dir: &std::path::Path) -> anyhow::Result<Server> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let exe = std::env::current_exe()?;
    let mut child = Command::new(exe)
        .args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--data-dir",
        ])
        .arg(data_dir)
        .env("SONDE_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("starting the server")?;
    let stdout = child.stdout.take().context("server stdout")?;
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line)?;
    let keys: Value = serde_json::from_str(&line).context("reading the server's keys")?;
    let write_key = keys["write_key"].as_str().context("write_key")?.to_string();
    let read_key = keys["read_key"].as_str().context("read_key")?.to_string();
    Ok(Server {
        child,
        url: format!("http://127.0.0.1:{port}"),
        write_key,
        read_key,
    })
}

async fn wait_ready(client: &Client, url: &str) -> anyhow::Result<()> {
    for _ in 0..200 {
        if let Ok(r) = client.get(&format!("{url}/readyz"), None).await
            && r.status.is_success()
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!("server did not become ready")
}

/// Paced-phase requests sent in this first stretch are not timed.
const PACED_WARMUP: Duration = Duration::from_secs(1);

/// Cumulative bucket counts of one Prometheus histogram series, by upper bound (seconds).
type Buckets = Vec<(f64, u64)>;

/// The buckets of the first series of `name` whose labels contain `labels`.
fn histogram(text: &str, name: &str, labels: &str) -> Buckets {
    let prefix = format!("{name}_bucket{{");
    text.lines()
        .filter(|l| l.starts_with(&prefix) && l.contains(labels))
        .filter_map(|l| {
            let le = l.split("le=\"").nth(1)?.split('"').next()?;
            let bound = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            let count = l.rsplit(' ').next()?.parse().ok()?;
            Some((bound, count))
        })
        .collect()
}

/// The value of an unlabelled gauge in a metrics exposition.
fn gauge(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// The server's resident memory now (MB), from /proc.
fn rss_now_mb(pid: u32) -> Option<f64> {
    status_mb(pid, "VmRSS:")
}

/// Once a second until `stop`: the server's RSS and buffered bytes; keeps the sample with
/// the highest RSS, to tell what the peak was made of.
async fn sample_memory(
    server: &Server,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> Option<MemorySample> {
    let client = Client::new();
    let mut peak: Option<MemorySample> = None;
    while !stop.load(Ordering::Relaxed) {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let Some(rss) = rss_now_mb(server.child.id()) else {
            continue;
        };
        if peak.as_ref().is_some_and(|p| p.rss >= rss) {
            continue;
        }
        let Ok(reply) = client
            .get(&format!("{}/metrics", server.url), Some(&server.read_key))
            .await
        else {
            continue;
        };
        let text = reply.text();
        let mb = |name| gauge(&text, name).unwrap_or(f64::NAN) / 1_048_576.0;
        peak = Some(MemorySample {
            rss,
            buffered: mb("sonde_buffered_bytes"),
            live: mb("sonde_live_relevance_memory_bytes"),
            open: gauge(&text, "sonde_live_relevance_open_decisions").unwrap_or(f64::NAN),
            rollups: mb("sonde_rollup_memory_bytes"),
        });
    }
    peak
}

/// The server's memory at one moment (MB, but `open`: decisions).
struct MemorySample {
    rss: f64,
    buffered: f64,
    live: f64,
    open: f64,
    rollups: f64,
}

/// The server's own view of a phase: WAL fsync times and `/v1/events` handling times.
struct ServerTimes {
    fsync: Buckets,
    ingest: Buckets,
    /// Per stage of `sonde_server::INGEST_STAGES`.
    stages: Vec<Buckets>,
}

async fn server_times(client: &Client, server: &Server) -> anyhow::Result<ServerTimes> {
    let reply = client
        .get(&format!("{}/metrics", server.url), Some(&server.read_key))
        .await?;
    let text = reply.text();
    Ok(ServerTimes {
        fsync: histogram(&text, "sonde_wal_fsync_duration_seconds", ""),
        ingest: histogram(
            &text,
            "sonde_http_request_duration_seconds",
            "route=\"/v1/events\",method=\"POST\",code=\"200\"",
        ),
        stages: sonde_server::INGEST_STAGES
            .iter()
            .map(|stage| {
                histogram(
                    &text,
                    "sonde_ingest_stage_duration_seconds",
                    &format!("stage=\"{stage}\""),
                )
            })
            .collect(),
    })
}

/// The end-to-end throughput target on the reference 2-core machine, events/s.
const TARGET_RATE: u64 = 100_000;

/// The ack latency target of the paced phase, at half [`TARGET_RATE`].
const ACK_TARGET_MS: f64 = 20.0;

/// The peak RSS target of the server over the run, MB.
const RSS_TARGET_MB: f64 = 512.0;

/// The paced phase's rate: as given, half of the full-speed rate `measured`, or by default
/// half the target, where the latency target is set.
fn paced_target(args: &IngestArgs, measured: f64) -> f64 {
    match args.paced_rate {
        Some(rate) => rate,
        None if args.half_of_measured => measured / 2.0,
        None => TARGET_RATE as f64 / 2.0,
    }
}

/// One line per target: what was measured against it and whether it holds. The latency
/// target counts only if the paced phase kept up with half the target rate (99% of it).
fn verdicts(e2e: f64, paced_rate: f64, paced_p99_ms: f64, rss_mb: Option<f64>) -> Vec<String> {
    let met = |ok: bool| if ok { "met" } else { "missed" };
    let half = TARGET_RATE as f64 / 2.0;
    let latency = if paced_rate < 0.99 * half {
        format!("not measured (paced phase at {paced_rate:.0} events/s, below {half:.0})")
    } else {
        format!(
            "{} (p99 {paced_p99_ms:.1} ms at {paced_rate:.0} events/s)",
            met(paced_p99_ms <= ACK_TARGET_MS)
        )
    };
    vec![
        format!(
            "(b) ≥ {TARGET_RATE} events/s: {} ({e2e:.0})",
            met(e2e >= TARGET_RATE as f64)
        ),
        format!("p99 ack ≤ {ACK_TARGET_MS} ms at {half:.0} events/s: {latency}"),
        match rss_mb {
            Some(mb) => format!(
                "server peak RSS ≤ {RSS_TARGET_MB} MB: {} ({mb:.0} MB)",
                met(mb <= RSS_TARGET_MB)
            ),
            None => format!("server peak RSS ≤ {RSS_TARGET_MB} MB: not measured"),
        },
    ]
}

/// "n, p50 ≤ a ms, p99 ≤ b ms, k over c ms" for the observations between two snapshots of a
/// histogram, c being its first bound at or above [`ACK_TARGET_MS`].
fn bucket_summary(before: &Buckets, after: &Buckets) -> String {
    let diff: Vec<(f64, u64)> = after
        .iter()
        .map(|(b, n)| {
            let was = before.iter().find(|(x, _)| x == b).map_or(0, |(_, m)| *m);
            (*b, n.saturating_sub(was))
        })
        .collect();
    let total = diff.last().map_or(0, |(_, n)| *n);
    if total == 0 {
        return "none".to_string();
    }
    let at = |q: f64| {
        let want = (q * total as f64).ceil() as u64;
        let b = diff
            .iter()
            .find(|(_, n)| *n >= want)
            .map_or(f64::INFINITY, |(b, _)| *b);
        if b.is_finite() {
            format!("≤ {} ms", b * 1000.0)
        } else {
            "above every bucket".to_string()
        }
    };
    let slow = diff
        .iter()
        .find(|(b, _)| b.is_finite() && *b * 1000.0 >= ACK_TARGET_MS)
        .map(|(b, n)| format!(", {} over {} ms", total - n, b * 1000.0))
        .unwrap_or_default();
    format!("{total}, p50 {}, p99 {}{slow}", at(0.5), at(0.99))
}

struct RunStats {
    events: u64,
    /// Requests answered 429 (retried after 50 ms).
    throttled: u64,
    seconds: f64,
    /// When each timed request was sent and how long its answer took.
    acks: Vec<(Instant, Duration)>,
}

impl RunStats {
    /// The timed requests' latencies in µs, sorted (for [`percentile`]).
    fn sorted_us(&self) -> Vec<u64> {
        let mut us: Vec<u64> = self
            .acks
            .iter()
            .map(|(_, d)| d.as_micros() as u64)
            .collect();
        us.sort_unstable();
        us
    }
}

/// Send batches over `connections` connections for `duration`; with `rate`, pace to that
/// many events per second in total. Latencies of requests sent in the first `warmup` are
/// not recorded.
async fn drive(
    server: &Server,
    templates: Arc<Vec<Template>>,
    counter: Arc<AtomicU64>,
    connections: usize,
    duration: Duration,
    rate: Option<f64>,
    warmup: Duration,
) -> anyhow::Result<RunStats> {
    let client = Client::new();
    let acks = Arc::new(Mutex::new(Vec::new()));
    let acked = Arc::new(AtomicU64::new(0));
    let throttled = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..connections {
        let (client, templates, counter) = (client.clone(), templates.clone(), counter.clone());
        let (acks, acked, throttled) = (acks.clone(), acked.clone(), throttled.clone());
        let url = format!("{}/v1/events", server.url);
        let key = server.write_key.clone();
        tasks.push(tokio::spawn(async move {
            let batch = templates[0].id_offsets.len() as f64;
            let interval = rate.map(|r| Duration::from_secs_f64(batch * connections as f64 / r));
            let mut next = Instant::now() + Duration::from_millis((c * 7) as u64);
            let mut i = c;
            let mut bodies = Bodies::new(templates.len());
            while start.elapsed() < duration {
                if let Some(iv) = interval {
                    tokio::time::sleep_until(next.into()).await;
                    next += iv;
                }
                let which = i % templates.len();
                let body = bodies.stamp(&templates, which, &counter);
                i += connections;
                let t = Instant::now();
                let reply = client
                    .send(
                        Method::POST,
                        &url,
                        Some(&key),
                        Some("application/json"),
                        body.clone(),
                    )
                    .await?;
                let took = t.elapsed();
                bodies.give_back(which, body);
                if reply.status.as_u16() == 429 {
                    throttled.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
                if !reply.status.is_success() {
                    bail!("server answered {}: {}", reply.status, reply.text());
                }
                let v: Value = serde_json::from_slice(&reply.body)?;
                acked.fetch_add(v["accepted"].as_u64().unwrap_or(0), Ordering::Relaxed);
                if t.duration_since(start) >= warmup {
                    acks.lock().push((t, took));
                }
            }
            Ok::<(), anyhow::Error>(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    let seconds = start.elapsed().as_secs_f64();
    let acks = std::mem::take(&mut *acks.lock());
    Ok(RunStats {
        events: acked.load(Ordering::Relaxed),
        throttled: throttled.load(Ordering::Relaxed),
        seconds,
        acks,
    })
}

/// Parse-only throughput of the same payloads with serde_json (one core), events/s.
fn parse_only(templates: &[Template]) -> anyhow::Result<(f64, f64)> {
    let mut n = 0usize;
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(3) {
        for t in templates {
            let v: Vec<Value> = serde_json::from_slice(&t.body)?;
            n += v.len();
        }
    }
    let value_rate = n as f64 / start.elapsed().as_secs_f64();
    // Sonde's own parse + validate + pseudonymize, for comparison.
    let p = sonde_model::KeyedPseudonymizer::new("k1", b"bench-secret");
    let ctx = sonde_model::ParseCtx {
        policy: sonde_model::TimePolicy::default(),
        pseudonymizer: &p,
        received_at: chrono::Utc::now().timestamp_millis(),
        backfill: false,
        limits: sonde_model::Limits::default(),
    };
    let mut m = 0usize;
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(3) {
        for t in templates {
            let raws: Vec<&serde_json::value::RawValue> = serde_json::from_slice(&t.body)?;
            for r in raws {
                if sonde_model::parse_event(r.get().as_bytes(), &ctx).is_ok() {
                    m += 1;
                }
            }
        }
    }
    Ok((value_rate, m as f64 / start.elapsed().as_secs_f64()))
}

/// `sonde bench ingest`.
pub fn ingest(args: IngestArgs) -> anyhow::Result<()> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(42);
    let templates: Vec<Template> = (0..16)
        .map(|_| template(&mut rng, args.batch))
        .collect::<anyhow::Result<_>>()?;
    let bytes_per_event = templates[0].body.len() as f64 / args.batch as f64;
    println!(
        "payload: decision events with 10 items, {bytes_per_event:.0} bytes each, {} per request, {} connections",
        args.batch, args.connections
    );
    let (parse_rate, validate_rate) = parse_only(&templates)?;
    println!("(a) serde_json parse-only (serde_json::Value, 1 core): {parse_rate:>12.0} events/s");
    println!(
        "    sonde parse+validate+pseudonymize (1 core):       {validate_rate:>12.0} events/s"
    );

    let tmp = tempfile::tempdir()?;
    let dir = args
        .data_dir
        .clone()
        .unwrap_or_else(|| tmp.path().join("data"));
    let server = start_server(&dir)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        // Told apart from the server's `tokio-rt-worker`s in `perf sched` and `top -H`.
        .thread_name("bench-client")
        .enable_all()
        .build()?;
    let templates = Arc::new(templates);
    let paced_templates: Arc<Vec<Template>> = Arc::new(
        (0..16)
            .map(|_| template(&mut rng, args.paced_batch))
            .collect::<anyhow::Result<_>>()?,
    );
    let counter = Arc::new(AtomicU64::new(1));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (full, paced, before, after, cpu, steal, memory) = rt.block_on(async {
        wait_ready(&Client::new(), &server.url).await?;
        let sampler = sample_memory(&server, stop.clone());
        let phases = async {
            // CPU seconds of the server and of this client.
            let cpu_now = || {
                (
                    cpu_seconds(server.child.id()),
                    cpu_seconds(std::process::id()),
                )
            };
            let cpu_before = cpu_now();
            let steal_before = bench_steal::machine_ticks();
            let full = drive(
                &server,
                templates.clone(),
                counter.clone(),
                args.connections,
                Duration::from_secs(args.duration),
                None,
                Duration::ZERO,
            )
            .await?;
            let cpu = match (cpu_before, cpu_now()) {
                ((Some(s0), Some(c0)), (Some(s1), Some(c1))) => Some((s1 - s0, c1 - c0)),
                _ => None,
            };
            let full_steal = bench_steal::steal_percent(steal_before, bench_steal::machine_ticks());
            // The paced phase's latency is a steady-state figure: let the server finish the
            // full-speed backlog (WAL groups, buffer, flushes) first, and skip the first second.
            tokio::time::sleep(Duration::from_secs(3)).await;
            let half = paced_target(&args, full.events as f64 / full.seconds);
            let watch = bench_steal::StallWatch::start(clock_ticks_per_second())?;
            // The server's own figures are taken over the same stretch as the client's.
            let (paced, before) = tokio::join!(
                drive(
                    &server,
                    paced_templates.clone(),
                    counter.clone(),
                    args.connections,
                    Duration::from_secs(args.paced_duration),
                    Some(half),
                    PACED_WARMUP,
                ),
                async {
                    tokio::time::sleep(PACED_WARMUP).await;
                    let steal = bench_steal::machine_ticks();
                    server_times(&Client::new(), &server)
                        .await
                        .map(|t| (t, steal))
                }
            );
            let stalls = watch.finish();
            let (paced, (before, steal_before)) = (paced?, before?);
            let after = server_times(&Client::new(), &server).await?;
            let steal = Steal {
                full: full_steal,
                paced: bench_steal::steal_percent(steal_before, bench_steal::machine_ticks()),
                stalls,
            };
            Ok::<_, anyhow::Error>((full, paced, before, after, cpu, steal))
        };
        // The sampler stops when the phases end, whether they succeed or fail.
        let phases = async {
            let r = phases.await;
            stop.store(true, Ordering::Relaxed);
            r
        };
        let (phases, memory) = tokio::join!(phases, sampler);
        let (full, paced, before, after, cpu, steal) = phases?;
        Ok::<_, anyhow::Error>((full, paced, before, after, cpu, steal, memory))
    })?;
    let rss = peak_rss_mb(server.child.id());
    let e2e = full.events as f64 / full.seconds;
    println!(
        "(b) end-to-end HTTP ingest, fsync'd acks:            {e2e:>12.0} events/s over {:.0} s ({} events)",
        full.seconds, full.events
    );
    println!("    ratio b/a: {:.3}", e2e / parse_rate);
    // CPU per event is steadier than events/s on a shared machine, and says how many cores
    // a rate needs.
    if let Some((server_s, client_s)) = cpu {
        let us = server_s * 1e6 / full.events.max(1) as f64;
        println!(
            "    server CPU: {:.2} cores busy, {us:.1} µs per event, so {:.2} cores for {TARGET_RATE} events/s (client: {:.2} cores)",
            server_s / full.seconds,
            us * TARGET_RATE as f64 / 1e6,
            client_s / full.seconds,
        );
    }
    let (full_us, paced_us) = (full.sorted_us(), paced.sorted_us());
    println!(
        "    ack latency at full speed: p50 {:.1} ms, p99 {:.1} ms ({} batches, {} answered 429)",
        percentile(&full_us, 0.5),
        percentile(&full_us, 0.99),
        full_us.len(),
        full.throttled
    );
    let paced_rate = paced.events as f64 / paced.seconds;
    let slow = Duration::from_secs_f64(ACK_TARGET_MS / 1000.0);
    let slow_acks = paced.acks.iter().filter(|(_, took)| *took > slow).count();
    println!(
        "    ack latency {} ({paced_rate:.0} events/s, {} events per request): p50 {:.1} ms, p99 {:.1} ms ({} batches after a {} s warm-up, {} over {ACK_TARGET_MS} ms)",
        if args.paced_rate.is_some() {
            "at the given rate"
        } else if args.half_of_measured {
            "at half of (b)"
        } else {
            "at half the target"
        },
        args.paced_batch,
        percentile(&paced_us, 0.5),
        percentile(&paced_us, 0.99),
        paced_us.len(),
        PACED_WARMUP.as_secs(),
        slow_acks
    );
    println!(
        "      server side over that phase: /v1/events handling {}; WAL fsyncs {}",
        bucket_summary(&before.ingest, &after.ingest),
        bucket_summary(&before.fsync, &after.fsync)
    );
    for ((stage, b), a) in sonde_server::INGEST_STAGES
        .iter()
        .zip(&before.stages)
        .zip(&after.stages)
    {
        println!("        stage {stage:<8} {}", bucket_summary(b, a));
    }
    if paced.throttled > 0 {
        println!("    ({} paced requests answered 429)", paced.throttled);
    }
    println!(
        "    machine CPU time stolen by the hypervisor: {} at full speed, {} over the paced phase",
        steal.full, steal.paced
    );
    println!(
        "      vCPU stalls (≥ {} ms stolen at once) over the paced phase: {}; acks over {ACK_TARGET_MS} ms in flight during one: {} of {}",
        bench_steal::STALL_MS,
        bench_steal::summary(&steal.stalls),
        bench_steal::slow_during_stalls(&paced.acks, &steal.stalls, slow),
        slow_acks,
    );
    match rss {
        Some(mb) => println!("    server peak RSS: {mb:.0} MB"),
        None => println!("    server peak RSS: unavailable"),
    }
    if let Some(m) = memory {
        println!(
            "      at the highest RSS sampled (once a second): {:.0} MB, of which rows buffered for flushing {:.0} MB, live relevance join {:.0} MB ({:.0} open decisions), latency rollups {:.0} MB",
            m.rss, m.buffered, m.live, m.open, m.rollups
        );
    }
    println!("targets on the reference 2-core machine:");
    for line in verdicts(e2e, paced_rate, percentile(&paced_us, 0.99), rss) {
        println!("    {line}");
    }
    drop(server);
    Ok(())
}

/// `sonde bench query`.
pub async fn query(args: QueryArgs) -> anyhow::Result<()> {
    use sonde_store::{QueryLimits, Store, StoreConfig, WriteBatch};
    let tmp = tempfile::tempdir()?;
    let mut config = StoreConfig::new(tmp.path());
    config.fsync = false;
    config.flush_interval = Duration::from_secs(3600);
    config.flush_rows = 2_000_000;
    let store = Store::open(config)?;
    let p = sonde_model::KeyedPseudonymizer::new("k1", b"bench-secret");
    let now = chrono::Utc::now().timestamp_millis();
    let ctx = sonde_model::ParseCtx {
        policy: sonde_model::TimePolicy::default(),
        pseudonymizer: &p,
        received_at: now,
        backfill: true,
        limits: sonde_model::Limits::default(),
    };
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let decisions = args.rows / 10;
    let started = Instant::now();
    let mut id = 0u64;
    while (id as usize) < decisions {
        let mut batch = WriteBatch::default();
        for _ in 0..5000.min(decisions - id as usize) {
            let mut v = decision_event(&mut rng, now);
            v["event_id"] = json!(format!("q{id}"));
            id += 1;
            let raw = serde_json::to_vec(&v)?;
            batch.events.push(
                sonde_model::parse_event(&raw, &ctx)
                    .map_err(|r| anyhow::anyhow!("{:?}", r.error))?,
            );
        }
        store.write(batch).await?;
        if store.buffered_rows() >= 1_000_000 {
            store.flush()?;
        }
    }
    store.flush()?;
    println!(
        "loaded {} decisions ({} decision_items rows) in {:.1} s",
        decisions,
        decisions * 10,
        started.elapsed().as_secs_f64(),
    );
    let sql =
        "SELECT surface, model_version, count(*), avg(score) FROM decision_items GROUP BY 1, 2";
    println!("query: {sql}");
    // As flushed (Arrow IPC files, as an hour still being written is read), then compacted
    // (Parquet, as every older hour is).
    for compacted in [false, true] {
        if compacted {
            store.compact()?;
        }
        let mut times = Vec::new();
        for _ in 0..args.repeat {
            let t = Instant::now();
            let r = store.query(sql, QueryLimits::default()).await?;
            times.push(t.elapsed().as_secs_f64() * 1000.0);
            let total: usize = r.batches.iter().map(|b| b.num_rows()).sum();
            anyhow::ensure!(total == 6, "expected 6 groups, got {total}");
        }
        times.sort_by(f64::total_cmp);
        println!(
            "  over {} {} files, {} runs: min {:.0} ms, median {:.0} ms, max {:.0} ms",
            store.manifest().files.len(),
            if compacted {
                "compacted (Parquet)"
            } else {
                "flushed (Arrow IPC)"
            },
            times.len(),
            times[0],
            times[times.len() / 2],
            times[times.len() - 1]
        );
    }
    store.close()?;
    Ok(())
}

/// Options of `sonde bench latency`.
#[derive(Debug, Args)]
pub struct LatencyBenchArgs {
    /// Simulated decisions, spread over one day.
    #[arg(long, default_value_t = 1_000_000)]
    pub decisions: usize,
}

/// Resident memory of this process (MB), from /proc.
fn rss_mb() -> Option<f64> {
    rss_now_mb(std::process::id())
}

/// `sonde bench latency`: the cost of rollup maintenance per decision (every component,
/// exemplars, SLO threshold counts, Prometheus histograms), the time to answer a 24 h ×
/// 1 min quantile series, and the rollups' memory, over simulated decisions; then the
/// memory budget under the cardinality caps.
pub fn latency(args: LatencyBenchArgs) -> anyhow::Result<()> {
    use sonde_latency::{Filter, GroupBy, Observation, RollupConfig, Rollups};
    const DAY: i64 = 86_400_000;
    let start = sonde_sim::SimConfig::default().start_ms;
    let mut sim = sonde_sim::Simulator::new(sonde_sim::SimConfig {
        seed: 3,
        start_ms: start,
        decisions_per_sec: args.decisions as f64 / 86_400.0,
        ..Default::default()
    });
    struct Obs {
        time: i64,
        surface: &'static str,
        version: &'static str,
        variant: &'static str,
        total: f64,
        comps: Vec<(sonde_model::CompactString, f64)>,
        fallback: bool,
        request: String,
    }
    let mut obs = Vec::with_capacity(args.decisions);
    let mut out = Vec::new();
    while obs.len() < args.decisions {
        out.clear();
        sim.step(&mut out);
        let Some(e) = out.first() else { continue };
        let Some(d) = e.decision() else { continue };
        let c = &d.latency_ms.components;
        obs.push(Obs {
            time: e.timestamp,
            surface: d.surface,
            version: d.model.version,
            variant: d.experiments[0].variant,
            total: d.latency_ms.total,
            comps: vec![
                ("feature_fetch".into(), c.feature_fetch),
                ("retrieval".into(), c.retrieval),
                ("inference".into(), c.inference),
                ("rerank".into(), c.rerank),
            ],
            fallback: d.fallback,
            request: d.request_id.to_string(),
        });
    }
    let now = obs.last().map_or(start, |o| o.time) + 60_000;
    let rss_before = rss_mb();
    let mut rollups = Rollups::new(RollupConfig {
        thresholds_ms: vec![150.0],
        ..RollupConfig::default()
    });
    let started = Instant::now();
    for o in &obs {
        rollups.observe(
            &Observation {
                time_ms: o.time,
                surface: o.surface,
                model_version: o.version,
                experiment: sonde_sim::EXPERIMENT,
                variant: o.variant,
                total_ms: Some(o.total),
                components: &o.comps,
                fallback: o.fallback,
                request_id: &o.request,
                trace_id: None,
            },
            now,
        );
    }
    let observe = started.elapsed();
    let per = observe.as_nanos() as f64 / obs.len() as f64;
    let started = Instant::now();
    rollups.maintain(now);
    let maintain = started.elapsed();
    let pending = rollups.take_pending().len();
    let rss_after = rss_mb();
    println!(
        "rollups: {} decisions ({} keys, 4 components + total) in {:.3} s: {per:.0} ns per decision (floor 1000 ns: {}); maintain (pack) {:.0} ms; {pending} rows to persist",
        obs.len(),
        rollups.keys().len(),
        observe.as_secs_f64(),
        if per <= 1000.0 { "met" } else { "MISSED" },
        maintain.as_secs_f64() * 1000.0,
    );
    println!(
        "memory: {:.1} MB for 24 h of minutes, packed; RSS grew {:.0} MB while the whole day was dense and pending at once (the server persists pending rows and packs every flush, 10 s)",
        rollups.memory_bytes() as f64 / 1e6,
        rss_after.zip(rss_before).map_or(f64::NAN, |(a, b)| a - b),
    );
    let qs = [0.5, 0.95, 0.99, 0.999];
    for (label, group_by, filter) in [
        ("all decisions", GroupBy::None, Filter::default()),
        ("by variant", GroupBy::Variant, Filter::default()),
        (
            "home_feed by component",
            GroupBy::Component,
            Filter {
                surface: Some("home_feed".into()),
                ..Filter::default()
            },
        ),
    ] {
        let mut times = Vec::new();
        let mut points = 0;
        for _ in 0..11 {
            let t = Instant::now();
            let s = rollups.series(&filter, "total", start, start + DAY, 60_000, group_by, &qs)?;
            times.push(t.elapsed().as_secs_f64() * 1000.0);
            points = s.iter().map(|x| x.points.len()).sum::<usize>();
        }
        times.sort_by(f64::total_cmp);
        println!(
            "series 24 h × 1 min, {label}: {points} points, median {:.1} ms, max {:.1} ms (floor 50 ms: {})",
            times[5],
            times[10],
            if times[5] < 50.0 { "met" } else { "MISSED" }
        );
    }

    // The caps: 256 keys with 16 components each, one decision per key per minute for 26 h.
    let mut capped = Rollups::new(RollupConfig::default());
    let comps: Vec<(sonde_model::CompactString, f64)> = (0..16)
        .map(|c| (format!("c{c}").into(), 5.0 + c as f64))
        .collect();
    let names: Vec<String> = (0..256).map(|k| format!("s{k}")).collect();
    let now = start + 26 * 3_600_000;
    let mut rng = rand::rngs::StdRng::seed_from_u64(1);
    for m in 0..26 * 60 {
        for name in &names {
            capped.observe(
                &Observation {
                    time_ms: start + m * 60_000,
                    surface: name,
                    model_version: "v1",
                    experiment: "",
                    variant: "",
                    total_ms: Some(rng.random_range(20.0..400.0)),
                    components: &comps,
                    fallback: false,
                    request_id: "r",
                    trace_id: None,
                },
                now,
            );
        }
        if m % 10 == 0 {
            capped.take_pending();
            capped.maintain(start + m * 60_000);
        }
    }
    capped.take_pending();
    capped.maintain(now);
    let minutes_kept = capped
        .series(
            &Filter::default(),
            "total",
            start,
            now,
            60_000,
            GroupBy::None,
            &[],
        )?
        .first()
        .map_or(0, |s| s.points.iter().filter(|p| p.count == 256).count());
    println!(
        "caps (256 keys × 17 sketches, one decision each a minute for 26 h): {:.1} MB (budget {} MB); {minutes_kept} of 1560 minutes still at minute resolution, older ones merged into hours",
        capped.memory_bytes() as f64 / 1e6,
        capped.config().budget_bytes >> 20
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reused_bodies_get_fresh_ids_and_keep_the_rest() {
        use rand::SeedableRng;
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let templates = vec![template(&mut rng, 3).expect("template")];
        let counter = AtomicU64::new(0x1f);
        let mut bodies = Bodies::new(1);
        let ids = |b: &Bytes| -> Vec<String> {
            let v: Vec<Value> = serde_json::from_slice(b).expect("json array");
            v.iter()
                .map(|e| e["event_id"].as_str().expect("id").to_string())
                .collect()
        };
        let first = bodies.stamp(&templates, 0, &counter);
        assert_eq!(
            ids(&first),
            [
                "bench-000000000000001f",
                "bench-0000000000000020",
                "bench-0000000000000021"
            ]
        );
        bodies.give_back(0, first);
        assert!(bodies.kept[0].is_some(), "a body nobody else holds is kept");
        let second = bodies.stamp(&templates, 0, &counter);
        assert_eq!(
            ids(&second),
            [
                "bench-0000000000000022",
                "bench-0000000000000023",
                "bench-0000000000000024"
            ]
        );
        // Apart from the ids, the body is the template's.
        let strip = |b: &[u8]| -> Vec<Value> {
            let mut v: Vec<Value> = serde_json::from_slice(b).expect("json");
            for e in &mut v {
                e["event_id"] = Value::Null;
            }
            v
        };
        assert_eq!(strip(&second), strip(&templates[0].body));
        // A body still held elsewhere is not reused.
        let held = second.clone();
        bodies.give_back(0, second);
        assert!(bodies.kept[0].is_none());
        drop(held);
    }

    #[test]
    fn verdicts_compare_each_figure_with_its_target() {
        let v = verdicts(104_000.0, 49_990.0, 20.0, Some(512.4));
        assert_eq!(v[0], "(b) ≥ 100000 events/s: met (104000)");
        assert_eq!(
            v[1],
            "p99 ack ≤ 20 ms at 50000 events/s: met (p99 20.0 ms at 49990 events/s)"
        );
        assert_eq!(v[2], "server peak RSS ≤ 512 MB: missed (512 MB)");
        let v = verdicts(99_999.0, 60_000.0, 20.1, None);
        assert!(v[0].contains("missed (99999)"), "{}", v[0]);
        assert!(v[1].contains("missed (p99 20.1 ms"), "{}", v[1]);
        assert_eq!(v[2], "server peak RSS ≤ 512 MB: not measured");
        // A phase that fell short of half the target says nothing about it.
        let v = verdicts(120_000.0, 49_000.0, 5.0, Some(400.0));
        assert!(
            v[1].contains("not measured (paced phase at 49000"),
            "{}",
            v[1]
        );
    }

    #[test]
    fn the_paced_phase_runs_at_half_the_target_unless_told_otherwise() {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            args: IngestArgs,
        }
        let rate = |argv: &[&str]| {
            let cli = Cli::try_parse_from(std::iter::once("bench").chain(argv.iter().copied()));
            cli.map(|c| paced_target(&c.args, 130_000.0))
        };
        assert_eq!(rate(&[]).ok(), Some(50_000.0));
        assert_eq!(rate(&["--half-of-measured"]).ok(), Some(65_000.0));
        assert_eq!(rate(&["--paced-rate", "60000"]).ok(), Some(60_000.0));
        assert!(rate(&["--paced-rate", "60000", "--half-of-measured"]).is_err());
    }

    #[test]
    fn cpu_ticks_are_read_after_the_command_name() {
        let stat =
            "4242 (sonde serve (x)) S 1 4242 4242 0 -1 4194560 100 0 0 0 1234 567 0 0 20 0 9 0";
        assert_eq!(parse_cpu_ticks(stat), Some(1234 + 567));
        assert_eq!(parse_cpu_ticks("4242 (short) S 1"), None);
    }

    #[test]
    fn bucket_summary_reports_quantiles_and_the_count_over_the_target() {
        let before = vec![(0.01, 10), (0.025, 10), (0.1, 10), (f64::INFINITY, 10)];
        let after = vec![(0.01, 108), (0.025, 109), (0.1, 110), (f64::INFINITY, 110)];
        assert_eq!(
            bucket_summary(&before, &after),
            "100, p50 ≤ 10 ms, p99 ≤ 25 ms, 1 over 25 ms"
        );
        assert_eq!(bucket_summary(&after, &after), "none");
    }
}
