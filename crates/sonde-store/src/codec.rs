//! What a WAL record holds: an accepted event, a quarantined (rejected) event, or the
//! outcome of replaying a quarantined event.

use serde::{Deserialize, Serialize};
use sonde_model::{Event, EventData, Meta};

use crate::StoreError;

const KIND_EVENT: u8 = 1;
const KIND_QUARANTINE: u8 = 2;
const KIND_REPLAY: u8 = 3;
const KIND_SPAN: u8 = 4;

/// A rejected event kept for inspection and replay. Its raw text has identifiers
/// pseudonymized already.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QuarantineEntry {
    /// When the server received it (epoch ms).
    pub received_at: i64,
    /// Its `event_id`, if it had a readable one.
    pub event_id: Option<String>,
    /// Stable error code.
    pub code: String,
    /// Offending field path.
    pub field: String,
    /// Human-readable reason.
    pub message: String,
    /// The event text with identifiers pseudonymized.
    pub raw: String,
    /// Key id the identifiers in `raw` were pseudonymized with.
    pub key_id: String,
}

/// The outcome of replaying one quarantined event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReplayEntry {
    /// Which quarantined event (`q<lsn>`).
    pub quarantine_id: String,
    /// When it was replayed (epoch ms).
    pub replayed_at: i64,
    /// `accepted`, `duplicate` or `rejected`.
    pub outcome: String,
    /// Error code when rejected again.
    pub code: Option<String>,
}

/// One OpenTelemetry span, as stored in `spans`. Identity attributes are pseudonymized
/// before it gets here.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SpanRecord {
    /// Trace id, 32 lowercase hex digits.
    pub trace_id: String,
    /// Span id, 16 hex digits.
    pub span_id: String,
    /// Parent span id, if any.
    pub parent_span_id: Option<String>,
    /// Span name.
    pub name: String,
    /// `internal`, `server`, `client`, `producer`, `consumer` or `unspecified`.
    pub kind: String,
    /// Start (epoch ns).
    pub start_unix_nano: u64,
    /// End (epoch ns).
    pub end_unix_nano: u64,
    /// `unset`, `ok` or `error`.
    pub status_code: String,
    /// Status description, if any.
    pub status_message: Option<String>,
    /// Resource attribute `service.name`.
    pub service_name: Option<String>,
    /// Instrumentation scope name.
    pub scope_name: Option<String>,
    /// Attribute `sonde.request_id`: the decision this span belongs to.
    pub request_id: Option<String>,
    /// Attribute `sonde.component`: the latency component this span measures.
    pub component: Option<String>,
    /// Attributes `sonde.surface`, `sonde.model_version`, `sonde.experiment`,
    /// `sonde.variant`: the rollup key of a component span.
    pub surface: Option<String>,
    /// See `surface`.
    pub model_version: Option<String>,
    /// See `surface`.
    pub experiment: Option<String>,
    /// See `surface`.
    pub variant: Option<String>,
    /// All span attributes as a JSON object text.
    pub attributes: Option<String>,
    /// Resource attributes as a JSON object text.
    pub resource_attributes: Option<String>,
    /// When the server received it (epoch ms).
    pub received_at: i64,
}

impl SpanRecord {
    /// The dedup key: a span is identified by its trace and span ids.
    pub fn id(&self) -> String {
        format!("{}-{}", self.trace_id, self.span_id)
    }

    /// Start in epoch ms.
    pub fn start_ms(&self) -> i64 {
        (self.start_unix_nano / 1_000_000) as i64
    }

    /// Duration in ms (0 when the end precedes the start).
    pub fn duration_ms(&self) -> f64 {
        self.end_unix_nano.saturating_sub(self.start_unix_nano) as f64 / 1e6
    }
}

/// One decoded WAL record.
#[derive(Debug, Clone, PartialEq)]
pub enum WalEntry {
    /// An accepted event and the hash of its content (for conflicting-duplicate detection).
    Event(Box<Event>, u64),
    /// A rejected event.
    Quarantine(QuarantineEntry),
    /// A quarantine replay outcome.
    Replay(ReplayEntry),
    /// An accepted span and its content hash.
    Span(Box<SpanRecord>, u64),
}

/// Hash of an event's content, independent of delivery metadata such as `sent_at`.
pub fn content_hash(data: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64(data)
}

/// 128-bit hash of an event id: the dedup key.
pub fn id_hash(event_id: &str) -> u128 {
    xxhash_rust::xxh3::xxh3_128(event_id.as_bytes())
}

/// A postcard output appending to a `Vec` with `push`/`extend_from_slice`: postcard's own
/// `to_extend` goes through `Extend` byte by byte.
struct Append(Vec<u8>);

impl postcard::ser_flavors::Flavor for Append {
    type Output = Vec<u8>;

    #[inline(always)]
    fn try_push(&mut self, byte: u8) -> postcard::Result<()> {
        self.0.push(byte);
        Ok(())
    }

    #[inline(always)]
    fn try_extend(&mut self, bytes: &[u8]) -> postcard::Result<()> {
        self.0.extend_from_slice(bytes);
        Ok(())
    }

    fn finalize(self) -> postcard::Result<Vec<u8>> {
        Ok(self.0)
    }
}

/// Encode an accepted event: `[1][meta_len: u32][meta][data]`, meta and data in postcard
/// (a compact binary serde format, several times cheaper than JSON on the ingest path).
/// Returns the record and the content hash of its data.
pub fn encode_event(event: &Event) -> Result<(Vec<u8>, u64), StoreError> {
    // Decisions encode to about a kilobyte: reserve once instead of growing step by step.
    let mut out = Vec::with_capacity(2048);
    out.push(KIND_EVENT);
    out.extend_from_slice(&[0; 4]);
    let mut out = postcard::serialize_with_flavor(&event.meta, Append(out))?;
    let data_start = out.len();
    let meta_len = (data_start - 5) as u32;
    out[1..5].copy_from_slice(&meta_len.to_le_bytes());
    let out = postcard::serialize_with_flavor(&event.data, Append(out))?;
    let hash = content_hash(&out[data_start..]);
    Ok((out, hash))
}

/// Encode a quarantined event.
pub fn encode_quarantine(q: &QuarantineEntry) -> Result<Vec<u8>, StoreError> {
    let mut out = vec![KIND_QUARANTINE];
    serde_json::to_writer(&mut out, q)?;
    Ok(out)
}

/// Encode a replay outcome.
pub fn encode_replay(r: &ReplayEntry) -> Result<Vec<u8>, StoreError> {
    let mut out = vec![KIND_REPLAY];
    serde_json::to_writer(&mut out, r)?;
    Ok(out)
}

/// The dedup key of a span (its own namespace, apart from event ids).
pub fn span_hash(span: &SpanRecord) -> u128 {
    id_hash(&format!("span:{}", span.id()))
}

/// Encode an accepted span; returns the record and its content hash (without the receive
/// time, so a retried export is a duplicate, not a conflict).
pub fn encode_span(span: &SpanRecord) -> Result<(Vec<u8>, u64), StoreError> {
    let out = postcard::serialize_with_flavor(span, Append(vec![KIND_SPAN]))?;
    let mut content = span.clone();
    content.received_at = 0;
    let hash = content_hash(&postcard::to_stdvec(&content)?);
    Ok((out, hash))
}

/// Decode a WAL record.
pub fn decode(payload: &[u8]) -> Result<WalEntry, StoreError> {
    let bad = |m: &str| StoreError::Codec(m.to_string());
    let (&kind, rest) = payload.split_first().ok_or_else(|| bad("empty record"))?;
    match kind {
        KIND_EVENT => {
            if rest.len() < 4 {
                return Err(bad("short event record"));
            }
            let meta_len = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
            let body = &rest[4..];
            if body.len() < meta_len {
                return Err(bad("event record shorter than its meta"));
            }
            let meta: Meta = postcard::from_bytes(&body[..meta_len])?;
            let data_bytes = &body[meta_len..];
            let data: EventData = postcard::from_bytes(data_bytes)?;
            Ok(WalEntry::Event(
                Box::new(Event { meta, data }),
                content_hash(data_bytes),
            ))
        }
        KIND_QUARANTINE => Ok(WalEntry::Quarantine(serde_json::from_slice(rest)?)),
        KIND_REPLAY => Ok(WalEntry::Replay(serde_json::from_slice(rest)?)),
        KIND_SPAN => {
            let span: SpanRecord = postcard::from_bytes(rest)?;
            let mut content = span.clone();
            content.received_at = 0;
            let hash = content_hash(&postcard::to_stdvec(&content)?);
            Ok(WalEntry::Span(Box::new(span), hash))
        }
        k => Err(StoreError::Codec(format!("unknown record kind {k}"))),
    }
}

#[cfg(test)]
mod tests {
    use sonde_model::{Limits, ParseCtx, RawIds, TimePolicy, parse_event};

    use super::*;

    #[test]
    fn events_and_spans_decode_to_what_was_encoded() {
        let ctx = ParseCtx {
            policy: TimePolicy::default(),
            pseudonymizer: &RawIds,
            received_at: 1_790_000_000_000,
            backfill: false,
            limits: Limits::default(),
        };
        let raw = br#"{"type":"decision","event_id":"d1","timestamp":1790000000000,"sent_at":1790000000003,"user_id":"u1","request_id":"r1","surface":"home","model":{"name":"m","version":"v1"},"items":[{"item_id":"a","position":1,"score":0.5,"attributes":{"category":"shoes"}}]}"#;
        let event = parse_event(raw, &ctx).expect("valid");
        let (record, hash) = encode_event(&event).expect("encode");
        match decode(&record).expect("decode") {
            WalEntry::Event(e, h) => assert_eq!((*e, h), (event.clone(), hash)),
            other => panic!("decoded {other:?}"),
        }
        // The hash covers the content, not the delivery: a later receive time keeps it.
        let mut later = event;
        later.meta.received_at += 1_000;
        assert_eq!(encode_event(&later).expect("encode").1, hash);

        let span = SpanRecord {
            trace_id: "0af7651916cd43dd8448eb211c80319c".into(),
            span_id: "b7ad6b7169203331".into(),
            parent_span_id: None,
            name: "inference".into(),
            kind: "internal".into(),
            start_unix_nano: 1,
            end_unix_nano: 2_000_001,
            status_code: "ok".into(),
            status_message: None,
            service_name: Some("ranker".into()),
            scope_name: None,
            request_id: Some("r1".into()),
            component: Some("inference".into()),
            surface: None,
            model_version: None,
            experiment: None,
            variant: None,
            attributes: None,
            resource_attributes: None,
            received_at: 5,
        };
        let (record, hash) = encode_span(&span).expect("encode");
        match decode(&record).expect("decode") {
            WalEntry::Span(s, h) => assert_eq!((*s, h), (span, hash)),
            other => panic!("decoded {other:?}"),
        }
    }
}
