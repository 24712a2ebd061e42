//! Errors of the latency core.

/// What went wrong.
#[derive(Debug, thiserror::Error)]
pub enum LatencyError {
    /// A persisted sketch could not be decoded.
    #[error("invalid sketch encoding: {0}")]
    Sketch(String),
    /// A parameter is out of its range.
    #[error("{0}")]
    Invalid(String),
}
