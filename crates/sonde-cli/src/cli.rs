//! Command-line arguments.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// Sonde: measure relevance, latency and conversion of a personalization engine.
#[derive(Debug, Parser)]
#[command(name = "sonde", version, about)]
pub struct Cli {
    /// Log as JSON lines (default: human-readable).
    #[arg(long, global = true, env = "SONDE_LOG_JSON")]
    pub log_json: bool,
    #[command(subcommand)]
    pub command: Command,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create a project (keys and pseudonymization secret) and print its keys as JSON.
    Init {
        /// Data directory.
        #[arg(long, env = "SONDE_DATA_DIR", default_value = "./sonde-data")]
        data_dir: PathBuf,
    },
    /// Run the collector and query server.
    Serve(ServeArgs),
    /// Run SQL against a server (--url, --key) or a data directory (--data-dir).
    Query {
        /// Server URL, e.g. http://127.0.0.1:7070.
        #[arg(long, env = "SONDE_URL", conflicts_with = "data_dir")]
        url: Option<String>,
        /// Read (or admin) key.
        #[arg(long, env = "SONDE_KEY")]
        key: Option<String>,
        /// Data directory to read directly, offline.
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Output format: table, json or csv.
        #[arg(long, default_value = "table")]
        format: String,
        /// The SQL statement.
        sql: String,
    },
    /// Inspect and replay rejected events.
    Quarantine {
        #[command(subcommand)]
        action: QuarantineAction,
    },
    /// Generate realistic traffic with known ground truth, to a server or a file.
    Simulate(SimulateArgs),
    /// Send an NDJSON file of events to a server, in batches with retries.
    Import(crate::import::ImportArgs),
    /// Instrumentation health of a running server: per source rates, lag, staleness,
    /// duplicates, rejections, orphans, quarantine, cardinality.
    Status(crate::status::StatusArgs),
    /// Reports over a running server.
    Report {
        #[command(subcommand)]
        which: ReportWhich,
    },
    /// Start a server on a fresh directory, import a week of simulated history, stream
    /// live traffic with incidents and print a summary every few seconds.
    Demo(DemoArgs),
    /// Benchmarks.
    Bench {
        #[command(subcommand)]
        which: BenchWhich,
    },
}

/// Quarantine actions.
#[derive(Debug, Subcommand)]
pub enum QuarantineAction {
    /// List quarantined events.
    List {
        #[command(flatten)]
        server: Remote,
        /// Only this error code.
        #[arg(long)]
        code: Option<String>,
        /// Only entries not replayed successfully.
        #[arg(long)]
        pending: bool,
        /// Most entries.
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Replay quarantined events (all pending ones, or the given ids).
    Replay {
        #[command(flatten)]
        server: Remote,
        /// With no ids: only entries of this code.
        #[arg(long)]
        code: Option<String>,
        /// Quarantine ids (q123 ...).
        ids: Vec<String>,
    },
}

/// `sonde simulate` options.
#[derive(Debug, Args)]
pub struct SimulateArgs {
    /// NDJSON file to write the events to (instead of sending them).
    #[arg(long, conflicts_with = "url", required_unless_present = "url")]
    pub out: Option<PathBuf>,
    /// Server to send to, e.g. http://127.0.0.1:7070.
    #[arg(long, env = "SONDE_URL", requires = "key")]
    pub url: Option<String>,
    /// Write key.
    #[arg(long, env = "SONDE_KEY")]
    pub key: Option<String>,
    /// JSON file to write the ground truth to (with --out).
    #[arg(long, requires = "out")]
    pub truth: Option<PathBuf>,
    /// Decisions to generate (with --out; each brings its interactions and outcomes).
    #[arg(long, default_value_t = 100_000)]
    pub decisions: usize,
    /// Seed; the same seed gives byte-identical output.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Events per second: sent per second of wall time, or simulated per second with --out.
    #[arg(long, default_value_t = 500.0)]
    pub rate: f64,
    /// Stream this long (e.g. 90s, 10m); default until Ctrl-C.
    #[arg(long, value_parser = crate::simulate::parse_duration)]
    pub duration: Option<std::time::Duration>,
    /// Incidents to play: steady, latency-spike, feature-store-outage, drift,
    /// calibration-break, incidents (all, a few minutes apart).
    #[arg(long, default_value = "steady")]
    pub scenario: String,
    /// Days of history to import first (with ?backfill=true), at --backfill-rate.
    #[arg(long, default_value_t = 0.0)]
    pub backfill: f64,
    /// Events per second of simulated history during the backfill.
    #[arg(long, default_value_t = 2.0)]
    pub backfill_rate: f64,
    /// No real-world mess: no late, duplicate, skewed or invalid events.
    #[arg(long)]
    pub clean: bool,
    /// Share of decisions in a swap intervention (ranks 1 and k exchanged, flagged
    /// `flags.swap = k`), for position-bias estimation from randomization.
    #[arg(long, default_value_t = 0.0)]
    pub swap_share: f64,
}

/// `sonde demo` options.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Data directory (an earlier demo's is wiped; any other non-empty one is refused).
    #[arg(long, default_value = "./sonde-demo")]
    pub data_dir: PathBuf,
    /// Listen address.
    #[arg(long, default_value = "127.0.0.1:7070")]
    pub listen: SocketAddr,
    /// Live events per second.
    #[arg(long, default_value_t = 300.0)]
    pub rate: f64,
    /// Days of history imported at start.
    #[arg(long, default_value_t = 7.0)]
    pub backfill_days: f64,
    /// Events per second of simulated history (1/s: about 600k events for a week).
    #[arg(long, default_value_t = 1.0)]
    pub backfill_rate: f64,
    /// Scenario of the live traffic.
    #[arg(long, default_value = "incidents")]
    pub scenario: String,
    /// Seed.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Seconds between summaries.
    #[arg(long, default_value_t = 5)]
    pub every: u64,
}

/// A running server and a key for it (read for listing, admin for replay).
#[derive(Debug, Args)]
pub struct Remote {
    /// Server URL, e.g. http://127.0.0.1:7070.
    #[arg(long, env = "SONDE_URL")]
    pub url: String,
    /// API key.
    #[arg(long, env = "SONDE_KEY")]
    pub key: String,
}

/// Reports.
#[derive(Debug, Subcommand)]
pub enum ReportWhich {
    /// Ranking quality (CTR@k, precision, hit rate, MRR, MAP, NDCG) and calibration per group.
    Relevance(crate::report::RelevanceArgs),
}

/// Benchmarks.
#[derive(Debug, Subcommand)]
pub enum BenchWhich {
    /// Parse-only vs end-to-end durable HTTP ingest throughput, ack latency, peak RSS.
    Ingest(crate::bench::IngestArgs),
    /// Group-by over 10 million decision_items rows.
    Query(crate::bench::QueryArgs),
    /// Simulator throughput writing NDJSON to a file (floor: 500k events/s).
    Simulate(crate::bench::SimulateBenchArgs),
    /// Ranking metrics over 1M lists (floor: 2 s), side by side with ranx.
    Relevance(crate::bench::RelevanceBenchArgs),
    /// Latency rollups: cost per decision (floor 1 µs), 24 h × 1 min series (floor 50 ms),
    /// memory.
    Latency(crate::bench::LatencyBenchArgs),
    /// Server-side render time of every dashboard page over 10 million stored decision
    /// items (floor: 200 ms).
    Dashboard(crate::bench_dashboard::DashboardBenchArgs),
}

/// `sonde serve` options. Unset options fall back to the config file, then defaults.
#[derive(Debug, Args, Default)]
pub struct ServeArgs {
    /// TOML config file.
    #[arg(long, env = "SONDE_CONFIG")]
    pub config: Option<PathBuf>,
    /// Data directory [default: ./sonde-data].
    #[arg(long, env = "SONDE_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Listen address [default: 127.0.0.1:7070].
    #[arg(long, env = "SONDE_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Store raw user identifiers instead of HMAC pseudonyms (opt-in).
    #[arg(long, env = "SONDE_STORE_RAW_IDS")]
    pub store_raw_ids: Option<bool>,
    /// Seconds between flushes of the buffer to files [default: 10].
    #[arg(long, env = "SONDE_FLUSH_INTERVAL_SECS")]
    pub flush_interval_secs: Option<u64>,
    /// Flush early once the in-memory buffer holds this many MiB [default: 32].
    /// Larger flushes write fewer, bigger files (less compaction) for more memory.
    #[arg(long, env = "SONDE_FLUSH_BUFFER_MB")]
    pub flush_buffer_mb: Option<usize>,
    /// Exact dedup window in hours [default: 24].
    #[arg(long, env = "SONDE_DEDUP_WINDOW_HOURS")]
    pub dedup_window_hours: Option<u32>,
    /// Events older than this many hours are flagged late [default: 168].
    #[arg(long, env = "SONDE_LATE_HORIZON_HOURS")]
    pub late_horizon_hours: Option<u32>,
    /// Largest request body in bytes, compressed or not [default: 10485760].
    #[arg(long, env = "SONDE_MAX_BODY_BYTES")]
    pub max_body_bytes: Option<usize>,
    /// Most events per batch [default: 10000].
    #[arg(long, env = "SONDE_MAX_EVENTS_PER_BATCH")]
    pub max_events_per_batch: Option<usize>,
    /// Largest event in bytes [default: 65536].
    #[arg(long, env = "SONDE_MAX_EVENT_BYTES")]
    pub max_event_bytes: Option<usize>,
    /// Query time limit in seconds [default: 30].
    #[arg(long, env = "SONDE_QUERY_TIMEOUT_SECS")]
    pub query_timeout_secs: Option<u64>,
    /// Most rows a query returns [default: 100000].
    #[arg(long, env = "SONDE_QUERY_MAX_ROWS")]
    pub query_max_rows: Option<usize>,
}
