//! Latency measurement of a personalization engine: per-minute rollups of end-to-end and
//! per-component latency in DDSketches (1% relative accuracy), keyed by surface, model
//! version and experiment variant with capped cardinality; quantile time series; and
//! service-level objectives evaluated with the multi-window, multi-burn-rate alerts of the
//! Google SRE workbook.
//!
//! Pure data structures, no I/O: the store feeds decisions in and persists the rows this
//! crate hands out; the server asks for series and alert states. `docs/latency.md` describes
//! the model.

mod error;
mod rollup;
mod sketch;
mod slo;

pub use error::LatencyError;
pub use rollup::{
    BucketExemplar, DEFAULT_BOUNDS_MS, Exemplar, Filter, GroupBy, Histogram, Key, OTHER,
    Observation, Point, RollupConfig, RollupRow, Rollups, Series, SurfaceTotals, TOTAL,
    WindowCounts,
};
pub use sketch::{RELATIVE_ACCURACY, Sketch};
pub use slo::{
    AlertBook, AlertState, AlertStatus, BurnRule, Objective, RuleVerdict, SRE_RULES, Severity,
    SloEvaluation, SloSpec, Transition, WindowBurn, evaluate,
};
