//! Errors of the metric functions: inputs they cannot give a number for.

/// Why a metric could not be computed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum MetricError {
    /// No observations.
    #[error("{what} needs at least one observation")]
    Empty {
        /// Which input was empty.
        what: &'static str,
    },
    /// Inputs of different lengths.
    #[error("{what}: {left} values against {right}")]
    LengthMismatch {
        /// Which inputs.
        what: &'static str,
        /// Length of the first.
        left: usize,
        /// Length of the second.
        right: usize,
    },
    /// A value outside its domain (a probability outside [0, 1], a NaN).
    #[error("{what}: {value} is outside [{min}, {max}]")]
    OutOfRange {
        /// Which input.
        what: &'static str,
        /// The value.
        value: f64,
        /// Smallest allowed.
        min: f64,
        /// Largest allowed.
        max: f64,
    },
    /// A parameter that makes no sense (zero bins).
    #[error("{0}")]
    Parameter(&'static str),
}
