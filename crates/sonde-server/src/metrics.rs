//! `GET /metrics`: decision latency histograms (buckets at every SLO threshold), decision and
//! ingest counters, and the collector's own health (HTTP request latency, WAL fsync latency,
//! buffer), in the Prometheus text format 0.0.4, or OpenMetrics 1.0 with exemplars when the
//! scraper asks for it. Counts only, no identifiers but exemplar trace or request ids; it
//! needs a read key (Prometheus sends it with `authorization: {credentials: ...}`).

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderMap, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use parking_lot::Mutex;
use sonde_latency::BucketExemplar;

use crate::{ApiError, AppState, Scope, authorize};

/// Content type of the text format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";
/// Content type of OpenMetrics.
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Bounds (s) of the HTTP request latency histogram.
const HTTP_BOUNDS_SECS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

#[derive(Default)]
struct HttpHistogram {
    counts: Vec<u64>,
    sum_secs: f64,
}

/// Latency of the API's own requests, by route and status code.
#[derive(Default)]
pub struct HttpMetrics {
    by_route: Mutex<BTreeMap<(String, String, u16), HttpHistogram>>,
}

impl HttpMetrics {
    fn observe(&self, route: &str, method: &str, status: u16, elapsed: Duration) {
        let secs = elapsed.as_secs_f64();
        let mut map = self.by_route.lock();
        let h = map
            .entry((route.to_string(), method.to_string(), status))
            .or_insert_with(|| HttpHistogram {
                counts: vec![0; HTTP_BOUNDS_SECS.len() + 1],
                sum_secs: 0.0,
            });
        h.counts[HTTP_BOUNDS_SECS.partition_point(|b| *b < secs)] += 1;
        h.sum_secs += secs;
    }
}

/// Bounds (s) of the ingest stage histograms: fine around 20 ms, the ack-latency target.
const STAGE_BOUNDS_SECS: [f64; 13] = [
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.015, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

/// The stages of `POST /v1/events`, in order: reading the body; splitting, parsing and
/// validating it; encoding and dedup; waiting for the WAL group commit (write, fsync);
/// adding the rows to the buffer; and the handler being scheduled again.
pub const INGEST_STAGES: [&str; 6] = ["read", "parse", "prepare", "durable", "apply", "resume"];

/// Where stored batches spent their time, per stage of [`INGEST_STAGES`].
pub struct IngestStages {
    hist: Mutex<Vec<HttpHistogram>>,
}

impl Default for IngestStages {
    fn default() -> Self {
        let h = || HttpHistogram {
            counts: vec![0; STAGE_BOUNDS_SECS.len() + 1],
            sum_secs: 0.0,
        };
        IngestStages {
            hist: Mutex::new(INGEST_STAGES.iter().map(|_| h()).collect()),
        }
    }
}

impl IngestStages {
    /// Record one batch's stage times, in [`INGEST_STAGES`] order.
    pub fn observe(&self, times: [Duration; INGEST_STAGES.len()]) {
        let mut hist = self.hist.lock();
        for (h, t) in hist.iter_mut().zip(times) {
            let secs = t.as_secs_f64();
            h.counts[STAGE_BOUNDS_SECS.partition_point(|b| *b < secs)] += 1;
            h.sum_secs += secs;
        }
    }
}

/// Middleware timing every routed request.
pub(crate) async fn track(
    State(state): State<AppState>,
    matched: Option<MatchedPath>,
    req: Request,
    next: Next,
) -> Response {
    let route = matched.map_or_else(|| "unmatched".to_string(), |m| m.as_str().to_string());
    let method = req.method().as_str().to_string();
    let started = Instant::now();
    let resp = next.run(req).await;
    state
        .http
        .observe(&route, &method, resp.status().as_u16(), started.elapsed());
    resp
}

/// Escape a label value (backslash, double quote, newline).
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn labels(pairs: &[(&str, &str)]) -> String {
    if pairs.is_empty() {
        return String::new();
    }
    let inner: Vec<String> = pairs
        .iter()
        .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
        .collect();
    format!("{{{}}}", inner.join(","))
}

/// Writer of one exposition, in either format.
struct Exposition {
    out: String,
    open_metrics: bool,
}

/// One labelled histogram series: cumulative counts per bound, then +Inf.
struct HistSeries<'a> {
    labels: Vec<(&'a str, &'a str)>,
    bounds_secs: Vec<f64>,
    counts: Vec<u64>,
    sum_secs: f64,
    exemplars: Vec<Option<&'a BucketExemplar>>,
}

impl Exposition {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        // OpenMetrics names a counter family without its `_total` suffix.
        let family = if self.open_metrics && kind == "counter" {
            name.strip_suffix("_total").unwrap_or(name)
        } else {
            name
        };
        let _ = writeln!(self.out, "# HELP {family} {help}\n# TYPE {family} {kind}");
    }

    fn sample(&mut self, name: &str, l: &[(&str, &str)], value: f64) {
        let _ = writeln!(self.out, "{name}{} {value}", labels(l));
    }

    fn metric(&mut self, name: &str, kind: &str, help: &str, value: f64) {
        self.family(name, kind, help);
        self.sample(name, &[], value);
    }

    fn histogram(&mut self, name: &str, help: &str, series: &[HistSeries<'_>]) {
        if series.is_empty() {
            return;
        }
        self.family(name, "histogram", help);
        for s in series {
            let mut cumulative = 0u64;
            for (i, c) in s.counts.iter().enumerate() {
                cumulative += c;
                let le = s
                    .bounds_secs
                    .get(i)
                    .map_or_else(|| "+Inf".to_string(), |b| format!("{b}"));
                let mut l = s.labels.clone();
                l.push(("le", &le));
                let _ = write!(self.out, "{name}_bucket{} {cumulative}", labels(&l));
                if let (true, Some(Some(e))) = (self.open_metrics, s.exemplars.get(i))
                    && e.id.len() <= 100
                {
                    let _ = write!(
                        self.out,
                        " # {{{}=\"{}\"}} {} {:.3}",
                        e.label,
                        escape(&e.id),
                        e.value_ms / 1000.0,
                        e.time_ms as f64 / 1000.0
                    );
                }
                self.out.push('\n');
            }
            let _ = writeln!(self.out, "{name}_sum{} {}", labels(&s.labels), s.sum_secs);
            let _ = writeln!(self.out, "{name}_count{} {cumulative}", labels(&s.labels));
        }
    }
}

/// Whether the scraper prefers OpenMetrics.
fn wants_open_metrics(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("application/openmetrics-text"))
}

/// `GET /metrics`.
pub async fn get_metrics(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    authorize(&state, &headers, Scope::Read)?;
    let open_metrics = wants_open_metrics(&headers);
    let mut x = Exposition {
        out: String::new(),
        open_metrics,
    };
    decision_metrics(&state, &mut x);
    collector_metrics(&state, &mut x);
    if open_metrics {
        x.out.push_str("# EOF\n");
    }
    let ct = if open_metrics {
        OPENMETRICS_CONTENT_TYPE
    } else {
        CONTENT_TYPE
    };
    Ok(([(header::CONTENT_TYPE, ct)], x.out).into_response())
}

/// What the decisions say: latency histograms and counts per surface.
fn decision_metrics(state: &AppState, x: &mut Exposition) {
    state.store.with_rollups(|r| {
        let bounds: Vec<f64> = r.histogram_bounds_ms().iter().map(|b| b / 1000.0).collect();
        let mut total = Vec::new();
        let mut components = Vec::new();
        let mut decisions = Vec::new();
        let mut fallbacks = Vec::new();
        for (surface, t, hists) in r.surface_totals() {
            decisions.push((surface, t.decisions));
            fallbacks.push((surface, t.fallbacks));
            for (component, h) in hists {
                let series = HistSeries {
                    labels: if component == sonde_latency::TOTAL {
                        vec![("surface", surface)]
                    } else {
                        vec![("surface", surface), ("component", component)]
                    },
                    bounds_secs: bounds.clone(),
                    counts: h.counts.clone(),
                    sum_secs: h.sum_ms / 1000.0,
                    exemplars: h.exemplars.iter().map(Option::as_ref).collect(),
                };
                if component == sonde_latency::TOTAL {
                    total.push(series);
                } else {
                    components.push(series);
                }
            }
        }
        x.histogram(
            "sonde_decision_latency_seconds",
            "End-to-end latency the engine reported for its decisions, since this process started.",
            &total,
        );
        x.histogram(
            "sonde_component_latency_seconds",
            "Per-component latency the engine reported for its decisions.",
            &components,
        );
        for (name, help, values) in [
            (
                "sonde_decisions_total",
                "Decisions stored, by surface.",
                &decisions,
            ),
            (
                "sonde_decision_fallbacks_total",
                "Decisions served by a fallback path, by surface.",
                &fallbacks,
            ),
        ] {
            if values.is_empty() {
                continue;
            }
            x.family(name, "counter", help);
            for (surface, v) in values {
                x.sample(name, &[("surface", surface)], *v as f64);
            }
        }
        x.metric(
            "sonde_rollup_overflow_total",
            "counter",
            "Decisions counted under `other` because a rollup cardinality cap was reached.",
            r.overflow() as f64,
        );
        x.metric(
            "sonde_rollup_memory_bytes",
            "gauge",
            "Memory of the in-memory latency rollups.",
            r.memory_bytes() as f64,
        );
    });
    state.store.with_live(|s| {
        let l = &s.relevance;
        for (name, kind, help, v) in [
            (
                "sonde_live_relevance_ready",
                "gauge",
                "1 once the live ranking sums are loaded (ranking queries use SQL before).",
                f64::from(u8::from(l.is_ready())),
            ),
            (
                "sonde_live_relevance_open_decisions",
                "gauge",
                "Decisions whose outcome window is still open.",
                l.open_decisions() as f64,
            ),
            (
                "sonde_live_relevance_late_outcomes_total",
                "counter",
                "Outcomes that found no open decision (its window closed, or it never came).",
                l.late_outcomes() as f64,
            ),
            (
                "sonde_live_relevance_forced_closes_total",
                "counter",
                "Decisions closed early because the open-decision cap was reached.",
                l.forced_closes() as f64,
            ),
            (
                "sonde_live_relevance_memory_bytes",
                "gauge",
                "Approximate memory of the live ranking join and sums.",
                l.memory_bytes() as f64,
            ),
        ] {
            x.metric(name, kind, help, v);
        }
    });
}

/// The collector's own state.
fn collector_metrics(state: &AppState, x: &mut Exposition) {
    let c = state.store.counters();
    for (name, help, v) in [
        ("sonde_events_accepted_total", "Events stored.", &c.accepted),
        (
            "sonde_events_duplicate_total",
            "Retried events answered as duplicates (stored once).",
            &c.duplicates,
        ),
        (
            "sonde_events_conflict_total",
            "Reused event ids with different content.",
            &c.conflicts,
        ),
        (
            "sonde_events_quarantined_total",
            "Events rejected into the quarantine.",
            &c.quarantined,
        ),
        ("sonde_spans_total", "OpenTelemetry spans stored.", &c.spans),
        (
            "sonde_flushes_total",
            "Flushes of the buffer to table files.",
            &c.flushes,
        ),
        (
            "sonde_compactions_total",
            "Partition compactions.",
            &c.compactions,
        ),
        (
            "sonde_compaction_dropped_rows_total",
            "Duplicate rows removed by compaction.",
            &c.compaction_dropped,
        ),
    ] {
        x.metric(name, "counter", help, v.load(Ordering::Relaxed) as f64);
    }
    let tally = state.tally.snapshot();
    if !tally.is_empty() {
        let name = "sonde_source_events_total";
        x.family(
            name,
            "counter",
            "Events by type, surface (decisions) and ingest outcome, since this process started.",
        );
        for ((kind, surface), o) in &tally {
            for (outcome, v) in [
                ("accepted", o.accepted),
                ("duplicate", o.duplicates - o.conflicting_duplicates),
                ("conflicting_duplicate", o.conflicting_duplicates),
            ] {
                x.sample(
                    name,
                    &[("type", kind), ("surface", surface), ("outcome", outcome)],
                    v as f64,
                );
            }
        }
    }
    if !tally.is_empty() {
        let name = "sonde_source_last_received_timestamp_seconds";
        x.family(
            name,
            "gauge",
            "When the last event of each source was received (alert on time() minus this).",
        );
        for ((kind, surface), o) in &tally {
            x.sample(
                name,
                &[("type", kind), ("surface", surface)],
                o.last_received_ms as f64 / 1000.0,
            );
        }
    }
    let manifest = state.store.manifest();
    for (name, help, v) in [
        (
            "sonde_buffered_rows",
            "Rows buffered in memory, not yet in table files.",
            state.store.buffered_rows() as f64,
        ),
        (
            "sonde_buffered_bytes",
            "Memory of the buffered rows.",
            state.store.buffered_bytes() as f64,
        ),
        (
            "sonde_data_files",
            "Table files (Arrow IPC and Parquet) in the store.",
            manifest.files.len() as f64,
        ),
        (
            "sonde_writable",
            "1 when storage can write, 0 when it cannot (disk full, read-only).",
            f64::from(u8::from(state.store.is_writable())),
        ),
    ] {
        x.metric(name, "gauge", help, v);
    }
    if let Some(h) = state.store.fsync_histogram() {
        x.histogram(
            "sonde_wal_fsync_duration_seconds",
            "Time of each write-ahead log fsync (one per group commit).",
            &[HistSeries {
                labels: Vec::new(),
                bounds_secs: sonde_wal::FSYNC_BOUNDS_MICROS
                    .iter()
                    .map(|b| *b as f64 / 1e6)
                    .collect(),
                counts: h.counts,
                sum_secs: h.sum_micros as f64 / 1e6,
                exemplars: Vec::new(),
            }],
        );
    }
    let stages = state.ingest_stages.hist.lock();
    let series: Vec<HistSeries<'_>> = INGEST_STAGES
        .iter()
        .zip(stages.iter())
        .map(|(stage, h)| HistSeries {
            labels: vec![("stage", *stage)],
            bounds_secs: STAGE_BOUNDS_SECS.to_vec(),
            counts: h.counts.clone(),
            sum_secs: h.sum_secs,
            exemplars: Vec::new(),
        })
        .collect();
    x.histogram(
        "sonde_ingest_stage_duration_seconds",
        "Where stored event batches spent their time: read (body), parse (split, parse, validate), prepare (encode, dedup), durable (WAL group commit: queue, write, fsync), apply (into the buffer), resume (handler scheduled again).",
        &series,
    );
    drop(stages);
    let routes = state.http.by_route.lock();
    let codes: Vec<String> = routes.keys().map(|(_, _, c)| c.to_string()).collect();
    let series: Vec<HistSeries<'_>> = routes
        .iter()
        .zip(&codes)
        .map(|((key, h), code)| HistSeries {
            labels: vec![
                ("route", key.0.as_str()),
                ("method", key.1.as_str()),
                ("code", code.as_str()),
            ],
            bounds_secs: HTTP_BOUNDS_SECS.to_vec(),
            counts: h.counts.clone(),
            sum_secs: h.sum_secs,
            exemplars: Vec::new(),
        })
        .collect();
    x.histogram(
        "sonde_http_request_duration_seconds",
        "Time to answer API requests (to the response head), by route, method and status.",
        &series,
    );
}
