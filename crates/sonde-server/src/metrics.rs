//! `GET /metrics`: the collector's own counters and buffer state in the Prometheus text
//! exposition format (version 0.0.4). Counts only, no identifiers; it still needs a read key
//! (Prometheus sends it with `authorization: {credentials: ...}` in its scrape config).

use std::fmt::Write;
use std::sync::atomic::Ordering;

use axum::extract::State;
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};

use crate::{ApiError, AppState, Scope, authorize};

/// Content type of the text format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

fn metric(out: &mut String, name: &str, kind: &str, help: &str, value: f64) {
    // Writing to a String cannot fail.
    let _ = writeln!(
        out,
        "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
    );
}

/// `GET /metrics`.
pub async fn get_metrics(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    authorize(&state, &headers, Scope::Read)?;
    let c = state.store.counters();
    let mut out = String::new();
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
        (
            "sonde_flushes_total",
            "Flushes of the buffer to Parquet.",
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
        metric(
            &mut out,
            name,
            "counter",
            help,
            v.load(Ordering::Relaxed) as f64,
        );
    }
    let manifest = state.store.manifest();
    for (name, help, v) in [
        (
            "sonde_buffered_rows",
            "Rows buffered in memory, not yet in Parquet files.",
            state.store.buffered_rows() as f64,
        ),
        (
            "sonde_buffered_bytes",
            "Memory of the buffered rows.",
            state.store.buffered_bytes() as f64,
        ),
        (
            "sonde_data_files",
            "Parquet files in the store.",
            manifest.files.len() as f64,
        ),
        (
            "sonde_writable",
            "1 when storage can write, 0 when it cannot (disk full, read-only).",
            f64::from(u8::from(state.store.is_writable())),
        ),
    ] {
        metric(&mut out, name, "gauge", help, v);
    }
    Ok(([(header::CONTENT_TYPE, CONTENT_TYPE)], out).into_response())
}
