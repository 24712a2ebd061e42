//! What a WAL record holds: an accepted event, a quarantined (rejected) event, or the
//! outcome of replaying a quarantined event.

use serde::{Deserialize, Serialize};
use sonde_model::{Event, EventData, Meta};

use crate::StoreError;

const KIND_EVENT: u8 = 1;
const KIND_QUARANTINE: u8 = 2;
const KIND_REPLAY: u8 = 3;

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

/// One decoded WAL record.
#[derive(Debug, Clone, PartialEq)]
pub enum WalEntry {
    /// An accepted event and the hash of its content (for conflicting-duplicate detection).
    Event(Box<Event>, u64),
    /// A rejected event.
    Quarantine(QuarantineEntry),
    /// A quarantine replay outcome.
    Replay(ReplayEntry),
}

/// Hash of an event's content, independent of delivery metadata such as `sent_at`.
pub fn content_hash(data: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64(data)
}

/// 128-bit hash of an event id: the dedup key.
pub fn id_hash(event_id: &str) -> u128 {
    xxhash_rust::xxh3::xxh3_128(event_id.as_bytes())
}

/// Encode an accepted event: `[1][meta_len: u32][meta][data]`, meta and data in postcard
/// (a compact binary serde format, several times cheaper than JSON on the ingest path).
/// Returns the record and the content hash of its data.
pub fn encode_event(event: &Event) -> Result<(Vec<u8>, u64), StoreError> {
    let meta = postcard::to_stdvec(&event.meta)?;
    // Decisions encode to about a kilobyte: reserve once instead of growing step by step.
    let mut out = Vec::with_capacity(meta.len() + 2048);
    out.push(KIND_EVENT);
    out.extend_from_slice(&(meta.len() as u32).to_le_bytes());
    out.extend_from_slice(&meta);
    let data_start = out.len();
    let out = postcard::to_extend(&event.data, out)?;
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
        k => Err(StoreError::Codec(format!("unknown record kind {k}"))),
    }
}
