//! Parsing and validation of one wire event into a normalized [`Event`].
//!
//! An event is read into a flat, typed wire struct in one pass — by a hand-written reader
//! ([`fast`]) for the text clients usually send, by serde_json for the rest — and then
//! validated. Only when deserializing fails is the input parsed again with path tracking,
//! to name the offending field.

use compact_str::CompactString;
use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};
use serde_json::value::RawValue;

use crate::attrs;
use crate::error::{ErrorCode, EventError};
use crate::event::{
    Context, Conversion, Decision, Event, EventBody, EventData, EventType, Exposure, Identify,
    Interaction, Item, Touch,
};
use crate::pseudo::Pseudonymizer;
use crate::time::{TimePolicy, parse_time_str};

mod fast;

/// Size and count limits applied to each event.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    /// Largest accepted event, in bytes of JSON text.
    pub max_event_bytes: usize,
    /// Most items in one decision slate.
    pub max_items: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_event_bytes: 64 * 1024,
            max_items: 1000,
        }
    }
}

const MAX_ID: usize = 128;
const MAX_NAME: usize = 256;

/// Wire form of a time: RFC 3339 text or integer epoch milliseconds.
#[cfg_attr(test, derive(Debug, PartialEq))]
struct WireTime(Result<i64, String>);

/// A JSON value's text as sent, borrowed from the input (serde_json's `RawValue`, which the
/// hand-written reader cannot make).
#[derive(Clone, Copy)]
#[cfg_attr(test, derive(Debug, PartialEq))]
struct Raw<'a>(&'a str);

impl<'de: 'a, 'a> Deserialize<'de> for Raw<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        <&'de RawValue>::deserialize(d).map(|r| Raw(r.get()))
    }
}

impl<'de> Deserialize<'de> for WireTime {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = WireTime;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an RFC 3339 string or integer epoch milliseconds")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<WireTime, E> {
                Ok(WireTime(if v >= 0 {
                    Ok(v)
                } else {
                    Err(format!("negative epoch milliseconds {v}"))
                }))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<WireTime, E> {
                Ok(WireTime(i64::try_from(v).map_err(|_| {
                    format!("epoch milliseconds {v} out of range")
                })))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<WireTime, E> {
                Ok(WireTime(Err(format!(
                    "epoch milliseconds must be an integer, got {v}"
                ))))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<WireTime, E> {
                Ok(WireTime(
                    parse_time_str(v).ok_or_else(|| format!("{v:?} is not an RFC 3339 time")),
                ))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<WireTime, E> {
                Ok(WireTime(Err(format!("expected a time, got boolean {v}"))))
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Deserialize, Default)]
#[cfg_attr(test, derive(Debug, PartialEq))]
struct Wire<'a> {
    #[serde(rename = "type")]
    ty: Option<CompactString>,
    event_id: Option<CompactString>,
    timestamp: Option<WireTime>,
    sent_at: Option<WireTime>,
    user_id: Option<CompactString>,
    anonymous_id: Option<CompactString>,
    session_id: Option<CompactString>,
    #[serde(borrow)]
    context: Option<WireContext<'a>>,
    request_id: Option<CompactString>,
    trace_id: Option<String>,
    surface: Option<CompactString>,
    model: Option<WireModel>,
    experiments: Option<Vec<WireExperiment>>,
    #[serde(borrow)]
    flags: Option<Raw<'a>>,
    #[serde(borrow)]
    items: Option<Entries<'a>>,
    slate_propensity: Option<f64>,
    latency_ms: Option<WireLatency>,
    fallback: Option<bool>,
    #[serde(borrow)]
    features: Option<Raw<'a>>,
    item_id: Option<CompactString>,
    action: Option<CompactString>,
    value: Option<f64>,
    name: Option<CompactString>,
    currency: Option<String>,
    channel: Option<String>,
    campaign: Option<String>,
    experiment: Option<CompactString>,
    variant: Option<CompactString>,
}

#[derive(Deserialize, Default)]
#[cfg_attr(test, derive(Debug, PartialEq))]
struct WireModel {
    name: Option<CompactString>,
    version: Option<CompactString>,
}

#[derive(Deserialize, Default)]
#[cfg_attr(test, derive(Debug, PartialEq))]
struct WireExperiment {
    id: Option<CompactString>,
    variant: Option<CompactString>,
}

#[derive(Deserialize, Default)]
#[cfg_attr(test, derive(Debug, PartialEq))]
struct WireLatency {
    total: Option<f64>,
    components: Option<ComponentsWrapper>,
}

#[derive(Deserialize, Default)]
#[cfg_attr(test, derive(Debug, PartialEq))]
struct WireItem<'a> {
    item_id: Option<CompactString>,
    position: Option<u32>,
    score: Option<f64>,
    propensity: Option<f64>,
    #[serde(borrow)]
    attributes: Option<Raw<'a>>,
}

/// An element of `items`: an item object in a decision's slate, an item id in a
/// conversion. Read in the event's single pass; `build` checks the kind fits the type.
#[cfg_attr(test, derive(Debug, PartialEq))]
enum WireEntry<'a> {
    Item(WireItem<'a>),
    Id(String),
}

impl<'de: 'a, 'a> Deserialize<'de> for WireEntry<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = WireEntry<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an item object (decision) or an item id string (conversion)")
            }
            fn visit_map<A: de::MapAccess<'de>>(self, m: A) -> Result<WireEntry<'a>, A::Error> {
                WireItem::deserialize(de::value::MapAccessDeserializer::new(m)).map(WireEntry::Item)
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<WireEntry<'a>, E> {
                Ok(WireEntry::Id(v.to_string()))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<WireEntry<'a>, E> {
                Ok(WireEntry::Id(v))
            }
        }
        d.deserialize_any(V(std::marker::PhantomData))
    }
}

/// The `items` array. Read into a Vec sized for a typical slate up front: serde's own Vec
/// (JSON gives no length) grows it 4, 8, 16, moving each item of 80 bytes along.
#[cfg_attr(test, derive(Debug, PartialEq))]
struct Entries<'a>(Vec<WireEntry<'a>>);

impl<'de: 'a, 'a> Deserialize<'de> for Entries<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = Entries<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an array of items")
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Entries<'a>, A::Error> {
                let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(16).min(1024));
                while let Some(e) = seq.next_element()? {
                    out.push(e);
                }
                Ok(Entries(out))
            }
        }
        d.deserialize_seq(V(std::marker::PhantomData))
    }
}

/// A map key, borrowed from the input unless it holds escapes (serde's own `Cow` impl
/// always copies).
struct Key<'a>(std::borrow::Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for Key<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = Key<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a key")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Key<'a>, E> {
                Ok(Key(std::borrow::Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Key<'a>, E> {
                Ok(Key(std::borrow::Cow::Owned(v.to_string())))
            }
        }
        d.deserialize_str(V(std::marker::PhantomData))
    }
}

/// The promoted context keys as field paths, in [`Context`] order.
const CONTEXT_FIELDS: [&str; 6] = [
    "context.device",
    "context.os",
    "context.region",
    "context.locale",
    "context.app_version",
    "context.channel",
];

/// `context` read in the event's single pass: promoted keys as strings, the rest kept as
/// raw JSON for `Context::extra`.
#[derive(Default)]
#[cfg_attr(test, derive(Debug, PartialEq))]
struct WireContext<'a> {
    known: [Option<CompactString>; 6],
    extra: Vec<(String, Raw<'a>)>,
}

impl<'de: 'a, 'a> Deserialize<'de> for WireContext<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = WireContext<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a context object")
            }
            fn visit_map<A: de::MapAccess<'de>>(
                self,
                mut m: A,
            ) -> Result<WireContext<'a>, A::Error> {
                let mut out = WireContext::default();
                while let Some(Key(key)) = m.next_key()? {
                    match CONTEXT_FIELDS
                        .iter()
                        .position(|f| f.strip_prefix("context.") == Some(&*key))
                    {
                        Some(i) => out.known[i] = m.next_value::<Option<CompactString>>()?,
                        None => out.extra.push((key.into_owned(), m.next_value()?)),
                    }
                }
                Ok(out)
            }
        }
        d.deserialize_map(V(std::marker::PhantomData))
    }
}

/// Components arrive as a JSON object; serde reads a map into a Vec of pairs through this.
impl<'de> Deserialize<'de> for ComponentsWrapper {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = ComponentsWrapper;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an object of component name to milliseconds")
            }
            fn visit_map<A: de::MapAccess<'de>>(
                self,
                mut m: A,
            ) -> Result<ComponentsWrapper, A::Error> {
                let mut out = Vec::new();
                while let Some((k, v)) = m.next_entry::<CompactString, f64>()? {
                    out.push((k, v));
                }
                Ok(ComponentsWrapper(out))
            }
        }
        d.deserialize_map(V)
    }
}

#[cfg_attr(test, derive(Debug, PartialEq))]
struct ComponentsWrapper(Vec<(CompactString, f64)>);

/// Everything that shapes how one event is turned into a stored row.
pub struct ParseCtx<'p> {
    /// Time correction and flag thresholds.
    pub policy: TimePolicy,
    /// Applied to `user_id`, `anonymous_id`, `session_id`.
    pub pseudonymizer: &'p dyn Pseudonymizer,
    /// Server receive time (epoch ms).
    pub received_at: i64,
    /// Historical import: no skew correction, no late flag.
    pub backfill: bool,
    /// Per-event limits.
    pub limits: Limits,
}

/// A rejected event: why, and its `event_id` if one could be read.
#[derive(Debug, Clone, PartialEq)]
pub struct Rejected {
    /// The first rule the event broke.
    pub error: EventError,
    /// The event's id, when it had a readable one.
    pub event_id: Option<String>,
}

/// An event over the size limit, rejected before (or regardless of) parsing.
fn too_large(raw: &[u8], ctx: &ParseCtx<'_>) -> Option<Rejected> {
    (raw.len() > ctx.limits.max_event_bytes).then(|| Rejected {
        error: EventError::new(
            ErrorCode::TooLarge,
            "",
            format!(
                "event is {} bytes, over the limit of {} bytes",
                raw.len(),
                ctx.limits.max_event_bytes
            ),
        ),
        event_id: peek_event_id(raw),
    })
}

/// Turn a deserialized event into a stored one, or say which rule it broke.
fn finish(wire: Wire<'_>, ctx: &ParseCtx<'_>) -> Result<Event, Rejected> {
    let event_id = wire.event_id.clone();
    build(wire, ctx).map_err(|error| Rejected {
        error,
        event_id: event_id.map(Into::into),
    })
}

/// Each event of a JSON array body: its raw text and what parsing it gave.
pub type ParsedBatch<'a> = Vec<(&'a [u8], Result<Event, Rejected>)>;

/// Parse a JSON array of events in one pass over the body, with the same outcome per event
/// as [`split_json_array`](crate::split_json_array) followed by [`parse_event`] on each.
///
/// Returns `None` — and the caller takes the split-then-parse path, which isolates each bad
/// event and names its error — when the body is not UTF-8, when an element is not an object
/// or does not deserialize, when the array is malformed, or when it holds more than
/// `max_events` elements. The well-formed batch, nearly every one, is read once instead of
/// scanned for element boundaries first.
pub fn parse_json_array<'a>(
    body: &'a [u8],
    ctx: &ParseCtx<'_>,
    max_events: usize,
) -> Option<ParsedBatch<'a>> {
    let text = std::str::from_utf8(body).ok()?;
    let bytes = text.as_bytes();
    let skip_ws = |mut i: usize| {
        while bytes.get(i).is_some_and(|b| b.is_ascii_whitespace()) {
            i += 1;
        }
        i
    };
    let mut i = skip_ws(0);
    if bytes.get(i) != Some(&b'[') {
        return None;
    }
    i = skip_ws(i + 1);
    let mut out = Vec::new();
    if bytes.get(i) == Some(&b']') {
        return (skip_ws(i + 1) == bytes.len()).then_some(out);
    }
    loop {
        if bytes.get(i) != Some(&b'{') || out.len() == max_events {
            return None;
        }
        let (wire, end) = match fast::read_wire(text, i) {
            Some(read) => read,
            None => {
                let mut stream =
                    serde_json::Deserializer::from_str(text.get(i..)?).into_iter::<Wire<'a>>();
                let wire = stream.next()?.ok()?;
                (wire, i + stream.byte_offset())
            }
        };
        let raw = &bytes[i..end];
        let parsed = match too_large(raw, ctx) {
            Some(rejected) => Err(rejected),
            None => finish(wire, ctx),
        };
        out.push((raw, parsed));
        i = skip_ws(end);
        match bytes.get(i) {
            Some(b',') => i = skip_ws(i + 1),
            Some(b']') => return (skip_ws(i + 1) == bytes.len()).then_some(out),
            _ => return None,
        }
    }
}

/// Parse and validate one event's JSON text.
pub fn parse_event(raw: &[u8], ctx: &ParseCtx<'_>) -> Result<Event, Rejected> {
    if let Some(rejected) = too_large(raw, ctx) {
        return Err(rejected);
    }
    if raw.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(Rejected {
            error: EventError::new(ErrorCode::InvalidJson, "", "an event must be a JSON object"),
            event_id: None,
        });
    }
    // One UTF-8 check of the whole event (std's word-at-a-time ASCII path) lets serde_json
    // read it as a `str` and skip checking each string it borrows; text that is not UTF-8
    // goes through the byte reader, which names the broken string.
    let parsed = match std::str::from_utf8(raw) {
        Ok(text) => match read_whole(text) {
            Some(wire) => Ok(wire),
            None => serde_json::from_str::<Wire<'_>>(text),
        },
        Err(_) => serde_json::from_slice::<Wire<'_>>(raw),
    };
    let wire = match parsed {
        Ok(w) => w,
        Err(_) => {
            return Err(Rejected {
                error: diagnose::<Wire<'_>>(raw, ""),
                event_id: peek_event_id(raw),
            });
        }
    };
    finish(wire, ctx)
}

/// The whole of `text` as one event object, by the hand-written reader.
fn read_whole(text: &str) -> Option<Wire<'_>> {
    let start = text.len() - text.trim_start_matches(JSON_WS).len();
    let (wire, end) = fast::read_wire(text, start)?;
    text[end..]
        .trim_start_matches(JSON_WS)
        .is_empty()
        .then_some(wire)
}

const JSON_WS: [char; 4] = [' ', '\n', '\t', '\r'];

/// Read `event_id` from an event's text, if it has a string one (for events that failed
/// validation, or whose parsed form is gone).
pub fn peek_event_id(raw: &[u8]) -> Option<String> {
    #[derive(Deserialize)]
    struct Peek {
        event_id: Option<serde_json::Value>,
    }
    match serde_json::from_slice::<Peek>(raw).ok()?.event_id? {
        serde_json::Value::String(s) => Some(s),
        _ => None,
    }
}

/// Re-parse with path tracking to name the field that broke deserialization.
fn diagnose<'de, T: Deserialize<'de>>(raw: &'de [u8], prefix: &str) -> EventError {
    let mut de = serde_json::Deserializer::from_slice(raw);
    let err = match serde_path_to_error::deserialize::<_, T>(&mut de) {
        Ok(_) => {
            return EventError::new(ErrorCode::InvalidJson, prefix, "trailing characters");
        }
        Err(e) => e,
    };
    let path = err.path().to_string();
    let inner = err.into_inner();
    let msg = inner.to_string();
    let field = join_path(prefix, if path == "." { "" } else { &path });
    if inner.is_syntax() || inner.is_eof() || inner.is_io() {
        return EventError::new(ErrorCode::InvalidJson, "", format!("not valid JSON: {msg}"));
    }
    if field.is_empty() {
        return EventError::new(
            ErrorCode::InvalidJson,
            "",
            format!("an event must be a JSON object: {msg}"),
        );
    }
    let leaf = field.rsplit(['.', '[']).next().unwrap_or("");
    let code = match leaf {
        "timestamp" | "sent_at" => ErrorCode::InvalidTimestamp,
        "position" => ErrorCode::InvalidPosition,
        _ if msg.starts_with("invalid value") => ErrorCode::InvalidValue,
        _ => ErrorCode::InvalidType,
    };
    EventError::new(code, field, strip_location(&msg))
}

fn join_path(prefix: &str, path: &str) -> String {
    match (prefix.is_empty(), path.is_empty()) {
        (true, _) => path.to_string(),
        (false, true) => prefix.to_string(),
        (false, false) if path.starts_with('[') => format!("{prefix}{path}"),
        (false, false) => format!("{prefix}.{path}"),
    }
}

/// serde_json appends " at line L column C"; the field path says more to a client.
fn strip_location(msg: &str) -> String {
    match msg.rfind(" at line ") {
        Some(i) => msg[..i].to_string(),
        None => msg.to_string(),
    }
}

fn missing(field: &str) -> EventError {
    EventError::new(
        ErrorCode::MissingField,
        field,
        format!("{field} is required"),
    )
}

fn required_str<S: AsRef<str>>(v: Option<S>, field: &str, max: usize) -> Result<S, EventError> {
    let s = v.ok_or_else(|| missing(field))?;
    check_len(s.as_ref(), field, max)?;
    Ok(s)
}

fn optional_str<S: AsRef<str>>(
    v: Option<S>,
    field: &str,
    max: usize,
) -> Result<Option<S>, EventError> {
    if let Some(s) = &v {
        check_len(s.as_ref(), field, max)?;
    }
    Ok(v)
}

fn check_len(s: &str, field: &str, max: usize) -> Result<(), EventError> {
    if s.is_empty() || s.len() > max {
        return Err(EventError::new(
            ErrorCode::InvalidValue,
            field,
            format!("{field} must be 1 to {max} bytes long, got {}", s.len()),
        ));
    }
    Ok(())
}

fn finite(v: Option<f64>, field: &str, non_negative: bool) -> Result<Option<f64>, EventError> {
    if let Some(x) = v
        && (!x.is_finite() || (non_negative && x < 0.0))
    {
        let what = if non_negative {
            "a finite number ≥ 0"
        } else {
            "a finite number"
        };
        return Err(EventError::new(
            ErrorCode::OutOfRange,
            field,
            format!("{field} must be {what}, got {x}"),
        ));
    }
    Ok(v)
}

fn probability(v: Option<f64>, field: &str) -> Result<Option<f64>, EventError> {
    if let Some(p) = v
        && !(p > 0.0 && p <= 1.0)
    {
        return Err(EventError::new(
            ErrorCode::OutOfRange,
            field,
            format!("{field} must be a probability in (0, 1], got {p}"),
        ));
    }
    Ok(v)
}

fn time(v: Option<WireTime>, field: &str) -> Result<Option<i64>, EventError> {
    match v {
        None => Ok(None),
        Some(WireTime(Ok(t))) => Ok(Some(t)),
        Some(WireTime(Err(m))) => Err(EventError::new(ErrorCode::InvalidTimestamp, field, m)),
    }
}

/// A JSON object's text, or an `invalid_type` error naming `field`.
fn object_text(v: Option<Raw<'_>>, field: &str) -> Result<Option<String>, EventError> {
    Ok(object_raw(v, field)?.map(str::to_string))
}

/// A JSON object's text, borrowed, or an `invalid_type` error naming `field`.
fn object_raw<'a>(v: Option<Raw<'a>>, field: &str) -> Result<Option<&'a str>, EventError> {
    match v {
        None => Ok(None),
        Some(Raw("null")) => Ok(None),
        Some(Raw(r)) if r.starts_with('{') => Ok(Some(r)),
        Some(_) => Err(EventError::new(
            ErrorCode::InvalidType,
            field,
            format!("{field} must be a JSON object"),
        )),
    }
}

fn build(w: Wire<'_>, ctx: &ParseCtx<'_>) -> Result<Event, EventError> {
    let ty_name = w.ty.ok_or_else(|| missing("type"))?;
    let ty = EventType::from_name(&ty_name).ok_or_else(|| {
        EventError::new(
            ErrorCode::UnknownType,
            "type",
            format!(
                "unknown event type {ty_name:?}; expected decision, interaction, conversion, touch, identify or exposure"
            ),
        )
    })?;
    let event_id = required_str(w.event_id, "event_id", MAX_ID)?;
    let timestamp = time(w.timestamp, "timestamp")?.ok_or_else(|| missing("timestamp"))?;
    let sent_at = time(w.sent_at, "sent_at")?;
    let user_id = optional_str(w.user_id, "user_id", MAX_NAME)?;
    let anonymous_id = optional_str(w.anonymous_id, "anonymous_id", MAX_NAME)?;
    let session_id = optional_str(w.session_id, "session_id", MAX_NAME)?;
    if ty == EventType::Identify {
        if user_id.is_none() {
            return Err(missing("user_id"));
        }
        if anonymous_id.is_none() {
            return Err(missing("anonymous_id"));
        }
    } else if user_id.is_none() && anonymous_id.is_none() {
        return Err(EventError::new(
            ErrorCode::MissingField,
            "user_id",
            "at least one of user_id and anonymous_id is required",
        ));
    }
    let context = parse_context(w.context)?;

    let body = match ty {
        EventType::Decision => {
            let request_id = required_str(w.request_id, "request_id", MAX_ID)?;
            let trace_id = match w.trace_id {
                Some(t) => Some(check_trace_id(t)?),
                None => None,
            };
            let surface = required_str(w.surface, "surface", MAX_NAME)?;
            let model = w.model.ok_or_else(|| missing("model"))?;
            let model_name = required_str(model.name, "model.name", MAX_NAME)?;
            let model_version = required_str(model.version, "model.version", MAX_NAME)?;
            let mut experiments = Vec::new();
            for (i, e) in w.experiments.unwrap_or_default().into_iter().enumerate() {
                let pair = required_str(e.id, "id", MAX_NAME)
                    .and_then(|id| Ok((id, required_str(e.variant, "variant", MAX_NAME)?)))
                    .map_err(|mut err| {
                        err.field = format!("experiments[{i}].{}", err.field);
                        err
                    })?;
                experiments.push(pair);
            }
            let items = parse_items(w.items.ok_or_else(|| missing("items"))?.0, ctx.limits)?;
            let (latency_total_ms, latency_components) = match w.latency_ms {
                None => (None, Vec::new()),
                Some(l) => {
                    let total = finite(l.total, "latency_ms.total", true)?;
                    let comps = l.components.map(|c| c.0).unwrap_or_default();
                    // The field path is built only for a bad value: this runs per decision.
                    if let Some((name, ms)) =
                        comps.iter().find(|(_, ms)| !(*ms >= 0.0 && ms.is_finite()))
                    {
                        finite(Some(*ms), &format!("latency_ms.components.{name}"), true)?;
                    }
                    (total, comps)
                }
            };
            EventBody::Decision(Decision {
                request_id,
                trace_id,
                surface,
                model_name,
                model_version,
                experiments,
                flags: object_text(w.flags, "flags")?,
                items,
                slate_propensity: probability(w.slate_propensity, "slate_propensity")?,
                latency_total_ms,
                latency_components,
                fallback: w.fallback.unwrap_or(false),
                features: object_text(w.features, "features")?,
            })
        }
        EventType::Interaction => EventBody::Interaction(Interaction {
            request_id: required_str(w.request_id, "request_id", MAX_ID)?,
            item_id: required_str(w.item_id, "item_id", MAX_NAME)?,
            action: required_str(w.action, "action", 64)?,
            value: finite(w.value, "value", false)?,
        }),
        EventType::Conversion => {
            let currency = optional_str(w.currency, "currency", 3)?;
            if let Some(c) = &currency
                && !(c.len() == 3 && c.bytes().all(|b| b.is_ascii_uppercase()))
            {
                return Err(EventError::new(
                    ErrorCode::InvalidValue,
                    "currency",
                    format!("currency must be an ISO 4217 code such as \"EUR\", got {c:?}"),
                ));
            }
            let mut items = Vec::new();
            for (i, entry) in w
                .items
                .map(|e| e.0)
                .unwrap_or_default()
                .into_iter()
                .enumerate()
            {
                match entry {
                    WireEntry::Id(id) => items.push(id),
                    WireEntry::Item(_) => {
                        return Err(EventError::new(
                            ErrorCode::InvalidType,
                            format!("items[{i}]"),
                            "a conversion's items are item id strings",
                        ));
                    }
                }
            }
            EventBody::Conversion(Conversion {
                name: required_str(w.name, "name", MAX_NAME)?.into(),
                value: finite(w.value, "value", false)?,
                currency,
                items,
                request_id: optional_str(w.request_id, "request_id", MAX_ID)?.map(Into::into),
            })
        }
        EventType::Touch => EventBody::Touch(Touch {
            channel: required_str(w.channel, "channel", MAX_NAME)?,
            campaign: optional_str(w.campaign, "campaign", MAX_NAME)?,
        }),
        EventType::Identify => EventBody::Identify(Identify {}),
        EventType::Exposure => EventBody::Exposure(Exposure {
            experiment: required_str(w.experiment, "experiment", MAX_NAME)?.into(),
            variant: required_str(w.variant, "variant", MAX_NAME)?.into(),
        }),
    };

    let p = ctx.pseudonymizer;
    Ok(Event {
        meta: ctx
            .policy
            .meta(timestamp, sent_at, ctx.received_at, ctx.backfill),
        data: EventData {
            event_id,
            timestamp,
            user_key: user_id.map(|s| p.apply(&s)),
            anonymous_key: anonymous_id.map(|s| p.apply(&s)),
            session_key: session_id.map(|s| p.apply(&s)),
            key_id: p.key_id().into(),
            context,
            body,
        },
    })
}

fn check_trace_id(mut t: String) -> Result<String, EventError> {
    let ok =
        t.len() == 32 && t.bytes().all(|b| b.is_ascii_hexdigit()) && t.bytes().any(|b| b != b'0');
    if !ok {
        return Err(EventError::new(
            ErrorCode::InvalidTraceId,
            "trace_id",
            format!("trace_id must be 32 hex digits, not all zero (W3C trace context), got {t:?}"),
        ));
    }
    t.make_ascii_lowercase();
    Ok(t)
}

fn parse_items(wire: Vec<WireEntry<'_>>, limits: Limits) -> Result<Vec<Item>, EventError> {
    if wire.len() > limits.max_items {
        return Err(EventError::new(
            ErrorCode::TooLarge,
            "items",
            format!(
                "a decision may hold at most {} items, got {}",
                limits.max_items,
                wire.len()
            ),
        ));
    }
    let mut seen: Vec<u32> = Vec::with_capacity(wire.len());
    let mut items = Vec::with_capacity(wire.len());
    for (i, entry) in wire.into_iter().enumerate() {
        let WireEntry::Item(it) = entry else {
            return Err(EventError::new(
                ErrorCode::InvalidType,
                format!("items[{i}]"),
                "a decision's items are objects with item_id and position",
            ));
        };
        // Paths are built only on error: this runs for every item of every decision.
        let item = parse_item(it, &seen).map_err(|mut e| {
            e.field = format!("items[{i}].{}", e.field);
            e
        })?;
        seen.push(item.position);
        items.push(item);
    }
    Ok(items)
}

fn parse_item(it: WireItem<'_>, seen: &[u32]) -> Result<Item, EventError> {
    let item_id = it.item_id.ok_or_else(|| missing("item_id"))?;
    check_len(&item_id, "item_id", MAX_NAME)?;
    let position = it.position.ok_or_else(|| missing("position"))?;
    if position == 0 {
        return Err(EventError::new(
            ErrorCode::InvalidPosition,
            "position",
            "positions are 1-based; got 0",
        ));
    }
    if seen.contains(&position) {
        return Err(EventError::new(
            ErrorCode::InvalidPosition,
            "position",
            format!("position {position} appears twice in the slate"),
        ));
    }
    let score = finite(it.score, "score", false)?;
    let propensity = probability(it.propensity, "propensity")?;
    let attrs::Split {
        category,
        provider,
        rest: attributes,
    } = match object_raw(it.attributes, "attributes")? {
        None => attrs::Split::default(),
        Some(text) => attrs::split(text)?,
    };
    Ok(Item {
        item_id,
        position,
        score,
        propensity,
        category,
        provider,
        attributes,
    })
}

fn parse_context(wire: Option<WireContext<'_>>) -> Result<Context, EventError> {
    let Some(WireContext { known, extra }) = wire else {
        return Ok(Context::default());
    };
    let mut known = known.into_iter().zip(CONTEXT_FIELDS);
    let mut next = || match known.next() {
        Some((v, field)) => optional_str(v, field, MAX_NAME),
        None => Ok(None),
    };
    // Rare: re-read the other keys into a map, so their text is canonical (sorted keys,
    // compact) whatever the client's formatting.
    let extra = if extra.is_empty() {
        None
    } else {
        let mut map = serde_json::Map::new();
        for (k, raw) in extra {
            let v: serde_json::Value = serde_json::from_str(raw.0).map_err(|e| {
                EventError::new(
                    ErrorCode::InvalidType,
                    format!("context.{k}"),
                    strip_location(&e.to_string()),
                )
            })?;
            map.insert(k, v);
        }
        Some(serde_json::Value::Object(map).to_string())
    };
    // In CONTEXT_FIELDS order.
    Ok(Context {
        device: next()?,
        os: next()?,
        region: next()?,
        locale: next()?,
        app_version: next()?,
        channel: next()?,
        extra,
    })
}

/// The raw text of a rejected event with `user_id`, `anonymous_id` and `session_id`
/// pseudonymized, so the quarantine never holds raw identifiers.
///
/// Valid JSON objects are rewritten exactly. Text that is not JSON is scrubbed textually:
/// any quoted value following one of those keys is replaced.
pub fn redact_raw(raw: &[u8], p: &dyn Pseudonymizer) -> String {
    const KEYS: [&str; 3] = ["user_id", "anonymous_id", "session_id"];
    if let Ok(serde_json::Value::Object(mut map)) = serde_json::from_slice::<serde_json::Value>(raw)
    {
        for k in KEYS {
            if let Some(v) = map.get_mut(k) {
                let text = match &*v {
                    serde_json::Value::String(s) => s.clone(),
                    serde_json::Value::Null => continue,
                    other => other.to_string(),
                };
                *v = serde_json::Value::String(p.apply(&text));
            }
        }
        return serde_json::Value::Object(map).to_string();
    }
    let mut text = String::from_utf8_lossy(raw).into_owned();
    for k in KEYS {
        text = scrub_key(&text, k, p);
    }
    text
}

/// Replace the quoted value after every `"key"` followed by `:` in possibly broken JSON.
fn scrub_key(text: &str, key: &str, p: &dyn Pseudonymizer) -> String {
    let needle = format!("\"{key}\"");
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find(&needle) {
        let after_key = i + needle.len();
        out.push_str(&rest[..after_key]);
        rest = &rest[after_key..];
        let trimmed = rest.trim_start();
        if let Some(after_colon) = trimmed.strip_prefix(':') {
            let value = after_colon.trim_start();
            let skipped = rest.len() - value.len();
            if let Some(body) = value.strip_prefix('"') {
                // The value ends at the next unescaped quote, or at the end of the text.
                let mut end = body.len();
                let mut escaped = false;
                for (j, c) in body.char_indices() {
                    match c {
                        '\\' if !escaped => escaped = true,
                        '"' if !escaped => {
                            end = j;
                            break;
                        }
                        _ => escaped = false,
                    }
                }
                out.push_str(&rest[..skipped]);
                out.push('"');
                out.push_str(&p.apply(&body[..end]));
                out.push('"');
                rest = body.get(end + 1..).unwrap_or("");
            }
        }
    }
    out.push_str(rest);
    out
}
