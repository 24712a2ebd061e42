//! Event model v1 of Sonde: the wire format clients send, its validation into a normalized
//! [`Event`], clock-skew correction and keyed pseudonymization of user identifiers.
//!
//! Everything here is pure (no I/O) so it can be tested exhaustively and reused by any
//! collector or importer.

mod attrs;
mod batch;
mod error;
mod event;
mod pseudo;
mod time;
mod validate;

pub use attrs::merge_attributes;
pub use batch::{SplitError, split_json_array, split_ndjson};
/// The inline string type of the event model's short texts.
pub use compact_str::CompactString;
pub use error::{ErrorCode, EventError};
pub use event::{
    Context, Conversion, Decision, Event, EventBody, EventData, EventType, Exposure, Identify,
    Interaction, Item, Meta, Touch,
};
pub use pseudo::{AlreadyPseudonymized, KeyedPseudonymizer, Pseudonymizer, RAW_KEY_ID, RawIds};
pub use time::{TimePolicy, parse_time_str};
pub use validate::{
    Limits, ParseCtx, ParsedBatch, Rejected, parse_event, parse_json_array, peek_event_id,
    redact_raw,
};

/// The JSON Schema (draft 2020-12) of event model v1, as served at `GET /v1/schema`.
pub const EVENT_SCHEMA_JSON: &str = include_str!("../../../docs/event-schema.json");
