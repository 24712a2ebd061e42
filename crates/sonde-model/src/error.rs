use serde::Serialize;

/// Stable, documented error codes for a rejected event (see `docs/errors.md`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The line or element is not valid JSON, or not a JSON object.
    InvalidJson,
    /// A required field is absent (or null).
    MissingField,
    /// A field has the wrong JSON type.
    InvalidType,
    /// A field has the right type but a value outside its rules (length, format, enum).
    InvalidValue,
    /// `timestamp` or `sent_at` is neither RFC 3339 nor non-negative epoch milliseconds.
    InvalidTimestamp,
    /// The event is larger than the per-event limit.
    TooLarge,
    /// `type` is not one of the event types of model v1.
    UnknownType,
    /// An item position is not a 1-based integer, or repeats within a slate.
    InvalidPosition,
    /// A probability (propensity) is outside (0, 1], or a number is negative or not finite.
    OutOfRange,
    /// `trace_id` is not 32 lowercase or uppercase hex digits (and not all zero).
    InvalidTraceId,
}

impl ErrorCode {
    /// The code as it appears in API responses and the quarantine table.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidJson => "invalid_json",
            ErrorCode::MissingField => "missing_field",
            ErrorCode::InvalidType => "invalid_type",
            ErrorCode::InvalidValue => "invalid_value",
            ErrorCode::InvalidTimestamp => "invalid_timestamp",
            ErrorCode::TooLarge => "too_large",
            ErrorCode::UnknownType => "unknown_type",
            ErrorCode::InvalidPosition => "invalid_position",
            ErrorCode::OutOfRange => "out_of_range",
            ErrorCode::InvalidTraceId => "invalid_trace_id",
        }
    }

    /// Every code, for documentation and tests.
    pub const ALL: [ErrorCode; 10] = [
        ErrorCode::InvalidJson,
        ErrorCode::MissingField,
        ErrorCode::InvalidType,
        ErrorCode::InvalidValue,
        ErrorCode::InvalidTimestamp,
        ErrorCode::TooLarge,
        ErrorCode::UnknownType,
        ErrorCode::InvalidPosition,
        ErrorCode::OutOfRange,
        ErrorCode::InvalidTraceId,
    ];
}

/// Why one event was rejected: a stable code, the offending field (a JSON path such as
/// `items[2].position`) and a human-readable message.
#[derive(Debug, Clone, PartialEq, Serialize, thiserror::Error)]
#[error("{code:?} at {field}: {message}")]
pub struct EventError {
    /// Stable machine-readable code.
    pub code: ErrorCode,
    /// Path of the offending field; empty when the whole event is at fault.
    pub field: String,
    /// What is wrong and what was expected.
    pub message: String,
}

impl EventError {
    pub(crate) fn new(
        code: ErrorCode,
        field: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        EventError {
            code,
            field: field.into(),
            message: message.into(),
        }
    }
}
