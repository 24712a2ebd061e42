//! A hand-written reader of one event object into [`Wire`], for the text clients usually
//! send: strings without escapes, values of the expected JSON types, no repeated fields.
//!
//! It reads what serde_json would read into the same `Wire`, with less work: serde's
//! derived visitors match every key through a field enum and wrap every value in an
//! `Option` visitor; this matches keys once and writes fields directly (parse + validate
//! of the ingest bench's decision: 6.66 against 4.65 µs with it). Anything else —
//! an escape, a value of another type, a repeated field, a number serde would read
//! differently, malformed JSON — makes it return `None`, and the caller reads the event
//! with serde_json, which also names the error. So it never decides an outcome, only
//! saves work; `tests` check it against serde_json on generated events.

use compact_str::CompactString;

use super::{
    CONTEXT_FIELDS, ComponentsWrapper, Entries, Raw, Wire, WireContext, WireEntry, WireExperiment,
    WireItem, WireLatency, WireModel, WireTime,
};
use crate::time::parse_time_str;

/// Nesting deeper than this inside raw values goes to serde_json (whose limit is 128).
const MAX_DEPTH: u32 = 64;

/// Read the event object starting at byte `start` of `text` (at its `{`). Returns the wire
/// form and the offset just past the object, or `None` for serde_json to read it.
pub(super) fn read_wire(text: &str, start: usize) -> Option<(Wire<'_>, usize)> {
    let mut c = Cursor {
        text,
        bytes: text.as_bytes(),
        at: start,
    };
    let mut w = Wire::default();
    let mut seen = Seen(0);
    c.object(|c, key| {
        match key {
            "type" => c.field(&mut seen, 0, &mut w.ty, Cursor::compact),
            "event_id" => c.field(&mut seen, 1, &mut w.event_id, Cursor::compact),
            "timestamp" => c.field(&mut seen, 2, &mut w.timestamp, Cursor::time),
            "sent_at" => c.field(&mut seen, 3, &mut w.sent_at, Cursor::time),
            "user_id" => c.field(&mut seen, 4, &mut w.user_id, Cursor::compact),
            "anonymous_id" => c.field(&mut seen, 5, &mut w.anonymous_id, Cursor::compact),
            "session_id" => c.field(&mut seen, 6, &mut w.session_id, Cursor::compact),
            "context" => c.field(&mut seen, 7, &mut w.context, Cursor::context),
            "request_id" => c.field(&mut seen, 8, &mut w.request_id, Cursor::compact),
            "trace_id" => c.field(&mut seen, 9, &mut w.trace_id, Cursor::string),
            "surface" => c.field(&mut seen, 10, &mut w.surface, Cursor::compact),
            "model" => c.field(&mut seen, 11, &mut w.model, Cursor::model),
            "experiments" => c.field(&mut seen, 12, &mut w.experiments, Cursor::experiments),
            "flags" => c.field(&mut seen, 13, &mut w.flags, Cursor::raw),
            "items" => c.field(&mut seen, 14, &mut w.items, Cursor::entries),
            "slate_propensity" => c.field(&mut seen, 15, &mut w.slate_propensity, Cursor::f64),
            "latency_ms" => c.field(&mut seen, 16, &mut w.latency_ms, Cursor::latency),
            "fallback" => c.field(&mut seen, 17, &mut w.fallback, Cursor::bool),
            "features" => c.field(&mut seen, 18, &mut w.features, Cursor::raw),
            "item_id" => c.field(&mut seen, 19, &mut w.item_id, Cursor::compact),
            "action" => c.field(&mut seen, 20, &mut w.action, Cursor::compact),
            "value" => c.field(&mut seen, 21, &mut w.value, Cursor::f64),
            "name" => c.field(&mut seen, 22, &mut w.name, Cursor::compact),
            "currency" => c.field(&mut seen, 23, &mut w.currency, Cursor::string),
            "channel" => c.field(&mut seen, 24, &mut w.channel, Cursor::string),
            "campaign" => c.field(&mut seen, 25, &mut w.campaign, Cursor::string),
            "experiment" => c.field(&mut seen, 26, &mut w.experiment, Cursor::compact),
            "variant" => c.field(&mut seen, 27, &mut w.variant, Cursor::compact),
            // serde ignores fields it does not know, after checking they are JSON.
            _ => c.skip(0),
        }
    })?;
    Some((w, c.at))
}

/// The fields already read: serde's derived visitors reject a repeated field.
struct Seen(u32);

impl Seen {
    fn once(&mut self, bit: u32) -> Option<()> {
        let mask = 1 << bit;
        if self.0 & mask != 0 {
            return None;
        }
        self.0 |= mask;
        Some(())
    }
}

struct Cursor<'a> {
    text: &'a str,
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    /// Skip JSON whitespace (exactly the four characters JSON allows).
    #[inline]
    fn ws(&mut self) {
        while let Some(b' ' | b'\n' | b'\t' | b'\r') = self.bytes.get(self.at) {
            self.at += 1;
        }
    }

    #[inline]
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.at).copied()
    }

    /// `literal` at the cursor, consumed.
    fn literal(&mut self, literal: &[u8]) -> bool {
        let found = self.bytes[self.at..].starts_with(literal);
        if found {
            self.at += literal.len();
        }
        found
    }

    /// Field number `bit` of its object, which may appear once: `null`, or what `read`
    /// reads, into `slot`.
    fn field<T>(
        &mut self,
        seen: &mut Seen,
        bit: u32,
        slot: &mut Option<T>,
        read: impl FnOnce(&mut Self) -> Option<T>,
    ) -> Option<()> {
        seen.once(bit)?;
        *slot = self.opt(read)?;
        Some(())
    }

    /// `null`, or the value `read` reads.
    fn opt<T>(&mut self, read: impl FnOnce(&mut Self) -> Option<T>) -> Option<Option<T>> {
        if self.literal(b"null") {
            Some(None)
        } else {
            read(self).map(Some)
        }
    }

    /// A string with no escapes and no control characters (which JSON forbids unescaped),
    /// borrowed. The text is UTF-8 already, and both ends are ASCII quotes.
    #[inline]
    fn str(&mut self) -> Option<&'a str> {
        if self.peek()? != b'"' {
            return None;
        }
        let start = self.at + 1;
        let len = self.bytes[start..]
            .iter()
            .position(|&b| b == b'"' || b == b'\\' || b < 0x20)?;
        if self.bytes[start + len] != b'"' {
            return None;
        }
        self.at = start + len + 1;
        self.text.get(start..start + len)
    }

    fn compact(&mut self) -> Option<CompactString> {
        self.str().map(CompactString::from)
    }

    fn string(&mut self) -> Option<String> {
        self.str().map(str::to_string)
    }

    fn bool(&mut self) -> Option<bool> {
        if self.literal(b"true") {
            Some(true)
        } else if self.literal(b"false") {
            Some(false)
        } else {
            None
        }
    }

    /// A number's text, checked against JSON's grammar: `-? (0 | [1-9][0-9]*) (. [0-9]+)?
    /// ([eE] [+-]? [0-9]+)?`.
    fn number(&mut self) -> Option<&'a str> {
        let start = self.at;
        let digits = |c: &mut Self| {
            let from = c.at;
            while c.peek().is_some_and(|b| b.is_ascii_digit()) {
                c.at += 1;
            }
            c.at > from
        };
        if self.peek() == Some(b'-') {
            self.at += 1;
        }
        match self.peek()? {
            b'0' => self.at += 1,
            b'1'..=b'9' => {
                digits(self);
            }
            _ => return None,
        }
        if self.peek() == Some(b'.') {
            self.at += 1;
            if !digits(self) {
                return None;
            }
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.at += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.at += 1;
            }
            if !digits(self) {
                return None;
            }
        }
        self.text.get(start..self.at)
    }

    /// A number read as serde_json reads it into an `f64`: both round correctly (serde_json
    /// with `float_roundtrip`), so they agree to the bit. Out-of-range numbers (which serde
    /// rejects) and negative zero (which serde reads as the integer 0) go to serde.
    fn f64(&mut self) -> Option<f64> {
        let text = self.number()?;
        let v: f64 = text.parse().ok()?;
        (v.is_finite() && !(v == 0.0 && text.starts_with('-'))).then_some(v)
    }

    /// A non-negative integer of at most `max_digits` digits.
    fn unsigned(&mut self, max_digits: usize) -> Option<u64> {
        let text = self.number()?;
        if text.len() > max_digits || !text.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        text.parse().ok()
    }

    /// RFC 3339 text or integer epoch milliseconds (as [`WireTime`]'s visitor reads them;
    /// negative or fractional numbers, rare, go to serde for its message).
    fn time(&mut self) -> Option<WireTime> {
        if self.peek()? == b'"' {
            let v = self.str()?;
            return Some(WireTime(
                parse_time_str(v).ok_or_else(|| format!("{v:?} is not an RFC 3339 time")),
            ));
        }
        self.unsigned(18).map(|v| WireTime(Ok(v as i64)))
    }

    /// Any JSON value, checked and skipped; its text is `text[start..self.at]`.
    fn skip(&mut self, depth: u32) -> Option<()> {
        if depth > MAX_DEPTH {
            return None;
        }
        match self.peek()? {
            b'"' => self.str().map(drop),
            b'{' => self.object(|c, _| c.skip(depth + 1)),
            b'[' => self.array(|c| c.skip(depth + 1)),
            b't' => self.literal(b"true").then_some(()),
            b'f' => self.literal(b"false").then_some(()),
            b'n' => self.literal(b"null").then_some(()),
            _ => self.number().map(drop),
        }
    }

    fn raw(&mut self) -> Option<Raw<'a>> {
        let start = self.at;
        self.skip(0)?;
        Some(Raw(self.text.get(start..self.at)?))
    }

    /// An object, the cursor on its `{`: `member` reads each value, the cursor on it.
    fn object(&mut self, mut member: impl FnMut(&mut Self, &'a str) -> Option<()>) -> Option<()> {
        if self.peek()? != b'{' {
            return None;
        }
        self.at += 1;
        self.ws();
        if self.peek()? == b'}' {
            self.at += 1;
            return Some(());
        }
        loop {
            let key = self.str()?;
            self.ws();
            if self.peek()? != b':' {
                return None;
            }
            self.at += 1;
            self.ws();
            member(self, key)?;
            self.ws();
            match self.peek()? {
                b',' => {
                    self.at += 1;
                    self.ws();
                }
                b'}' => {
                    self.at += 1;
                    return Some(());
                }
                _ => return None,
            }
        }
    }

    /// An array, the cursor on its `[`: `element` reads each element, the cursor on it.
    fn array(&mut self, mut element: impl FnMut(&mut Self) -> Option<()>) -> Option<()> {
        if self.peek()? != b'[' {
            return None;
        }
        self.at += 1;
        self.ws();
        if self.peek()? == b']' {
            self.at += 1;
            return Some(());
        }
        loop {
            element(self)?;
            self.ws();
            match self.peek()? {
                b',' => {
                    self.at += 1;
                    self.ws();
                }
                b']' => {
                    self.at += 1;
                    return Some(());
                }
                _ => return None,
            }
        }
    }

    fn context(&mut self) -> Option<WireContext<'a>> {
        let mut out = WireContext::default();
        self.object(|c, key| {
            // As the serde visitor: a repeated promoted key keeps its last value.
            match CONTEXT_FIELDS
                .iter()
                .position(|f| f.strip_prefix("context.") == Some(key))
            {
                Some(i) => out.known[i] = c.opt(Cursor::compact)?,
                None => out.extra.push((key.to_string(), c.raw()?)),
            }
            Some(())
        })?;
        Some(out)
    }

    fn model(&mut self) -> Option<WireModel> {
        let mut out = WireModel::default();
        let mut seen = Seen(0);
        self.object(|c, key| match key {
            "name" => c.field(&mut seen, 0, &mut out.name, Cursor::compact),
            "version" => c.field(&mut seen, 1, &mut out.version, Cursor::compact),
            _ => c.skip(0),
        })?;
        Some(out)
    }

    fn experiments(&mut self) -> Option<Vec<WireExperiment>> {
        let mut out = Vec::new();
        self.array(|c| {
            let mut e = WireExperiment::default();
            let mut seen = Seen(0);
            c.object(|c, key| match key {
                "id" => c.field(&mut seen, 0, &mut e.id, Cursor::compact),
                "variant" => c.field(&mut seen, 1, &mut e.variant, Cursor::compact),
                _ => c.skip(0),
            })?;
            out.push(e);
            Some(())
        })?;
        Some(out)
    }

    fn entries(&mut self) -> Option<Entries<'a>> {
        let mut out = Vec::with_capacity(16);
        self.array(|c| {
            let entry = match c.peek()? {
                b'"' => WireEntry::Id(c.string()?),
                _ => WireEntry::Item(c.item()?),
            };
            out.push(entry);
            Some(())
        })?;
        Some(Entries(out))
    }

    fn item(&mut self) -> Option<WireItem<'a>> {
        let mut it = WireItem::default();
        let mut seen = Seen(0);
        self.object(|c, key| match key {
            "item_id" => c.field(&mut seen, 0, &mut it.item_id, Cursor::compact),
            // u32: nine digits always fit.
            "position" => c.field(&mut seen, 1, &mut it.position, |c| {
                c.unsigned(9).map(|v| v as u32)
            }),
            "score" => c.field(&mut seen, 2, &mut it.score, Cursor::f64),
            "propensity" => c.field(&mut seen, 3, &mut it.propensity, Cursor::f64),
            "attributes" => c.field(&mut seen, 4, &mut it.attributes, Cursor::raw),
            _ => c.skip(0),
        })?;
        Some(it)
    }

    fn latency(&mut self) -> Option<WireLatency> {
        let mut out = WireLatency::default();
        let mut seen = Seen(0);
        self.object(|c, key| match key {
            "total" => c.field(&mut seen, 0, &mut out.total, Cursor::f64),
            "components" => c.field(&mut seen, 1, &mut out.components, Cursor::components),
            _ => c.skip(0),
        })?;
        Some(out)
    }

    fn components(&mut self) -> Option<ComponentsWrapper> {
        let mut out = Vec::new();
        self.object(|c, key| {
            out.push((CompactString::from(key), c.f64()?));
            Some(())
        })?;
        Some(ComponentsWrapper(out))
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use proptest::strategy::ValueTree;

    use super::*;

    /// What serde_json reads from `text` at `start`, as `parse_json_array` reads it.
    fn serde_wire(text: &str, start: usize) -> Option<(Wire<'_>, usize)> {
        let mut stream = serde_json::Deserializer::from_str(&text[start..]).into_iter::<Wire>();
        let wire = stream.next()?.ok()?;
        Some((wire, start + stream.byte_offset()))
    }

    /// The reader read `text`, and read it as serde_json does.
    fn agrees(text: &str) {
        let start = text.len() - text.trim_start().len();
        let fast = read_wire(text, start);
        assert!(fast.is_some(), "the reader declined {text}");
        assert_eq!(fast, serde_wire(text, start), "{text}");
    }

    #[test]
    fn reads_each_event_type_as_serde_does() {
        agrees(
            r#"{"type":"decision","event_id":"bench-0000000000000001","timestamp":1790000000001,"sent_at":1790000000004,"user_id":"user-1","session_id":"sess-1-3","context":{"device":"mobile","os":"android","region":"eu-west","locale":"en-GB","app_version":"5.12.0","tier":{"a":[1,2.5e3,true,null]}},"request_id":"req-1000003","trace_id":"00000000000000000000000000000002","surface":"home","model":{"name":"ranker","version":"v8"},"experiments":[{"id":"ranker_ab","variant":"treatment"}],"items":[{"item_id":"item-104729","position":1,"score":0.123,"propensity":0.456,"attributes":{"category":"books","provider":"p9"}},{"item_id":"item-2","position":2,"score":-1,"propensity":1e-3,"attributes":null,"note":"ignored"}],"latency_ms":{"total":40.5,"components":{"feature_fetch":8.1,"retrieval":12,"inference":15.2,"rerank":5.2}},"fallback":false,"features":{"recency_days":3,"segment":"loyal"},"flags":{"x":[]}}"#,
        );
        agrees(
            r#" { "type" : "interaction" , "event_id":"i-1","timestamp":"2026-11-27T10:00:04Z","anonymous_id":"a","request_id":"r-1","item_id":"sku-1","action":"click","value":null } "#,
        );
        agrees(
            r#"{"type":"conversion","event_id":"c-1","timestamp":0,"user_id":"u","name":"purchase","value":19.99,"currency":"EUR","items":["sku-1","sku-2"],"request_id":"r-1"}"#,
        );
        agrees(
            r#"{"type":"touch","event_id":"t","timestamp":"yesterday","user_id":"u","channel":"email","campaign":"c"}"#,
        );
        agrees(
            r#"{"type":"exposure","event_id":"e","timestamp":1,"user_id":"u","experiment":"x","variant":"b","unknown":{"deep":[[[{}]]]}}"#,
        );
        // A repeated promoted context key keeps its last value, as the serde visitor does.
        agrees(r#"{"context":{"os":"a","os":"b","k":"v","k":2}}"#);
        agrees("{}");
    }

    #[test]
    fn leaves_to_serde_what_it_does_not_read_exactly() {
        for text in [
            r#"{"event_id":"a\"b"}"#,             // an escape
            r#"{"event_id":"a","event_id":"b"}"#, // a repeated field
            r#"{"timestamp":-5}"#,                // serde's own message
            r#"{"timestamp":1.5}"#,
            r#"{"timestamp":true}"#,
            r#"{"items":[{"position":-1}]}"#,
            r#"{"items":[{"position":4294967296}]}"#,
            r#"{"items":[{"score":1e400}]}"#, // out of range
            r#"{"items":[{"score":-0}]}"#,    // serde reads the integer 0
            r#"{"items":[{"score":01}]}"#,    // not JSON
            r#"{"items":[{"score":1.}]}"#,
            r#"{"items":[1]}"#,
            r#"{"model":["n","v"]}"#, // serde reads a struct from an array
            r#"{"user_id":5}"#,
            r#"{"fallback":"yes"}"#,
            r#"{"latency_ms":{"components":{"a":null}}}"#,
            "{\"event_id\":\"tab\there\"}", // a raw control character
            r#"{"event_id":"x",}"#,
            r#"{"event_id":"x""#,
            r#"{"a":nul}"#,
        ] {
            assert_eq!(read_wire(text, 0), None, "{text}");
        }
    }

    /// A JSON number's text in one of the shapes clients send.
    fn number() -> impl Strategy<Value = String> {
        prop_oneof![
            any::<f64>()
                .prop_filter("finite", |v| v.is_finite())
                .prop_map(|v| v.to_string()),
            any::<f32>()
                .prop_filter("finite", |v| v.is_finite())
                .prop_map(|v| format!("{v:e}")),
            any::<i64>().prop_map(|v| v.to_string()),
            (0u64..u64::MAX).prop_map(|v| v.to_string()),
            (0u32..100_000, 0u32..1_000_000_000).prop_map(|(a, b)| format!("{a}.{b:09}")),
            "-?(0|[1-9][0-9]{0,25})(\\.[0-9]{1,25})?([eE][+-]?[0-9]{1,3})?",
            "-?0[0-9]|[0-9]+\\.|\\.[0-9]+|[0-9]+[eE]|--1",
        ]
    }

    /// Any JSON-ish value, well-formed or not, of any type.
    fn value() -> impl Strategy<Value = String> {
        let leaf = prop_oneof![
            number(),
            "\"[a-z0-9 :.-]{0,12}\"",
            "\"[a-z\\\\\"\\t\u{e9}\u{1F600}]{0,6}\"",
            Just("null".to_string()),
            Just("true".to_string()),
            Just("false".to_string()),
            Just("\"2026-11-27T10:00:04.5+01:00\"".to_string()),
            Just("nul".to_string()),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4)
                    .prop_map(|v| format!("[{}]", v.join(","))),
                prop::collection::vec(("[a-z_]{1,12}", inner), 0..4).prop_map(|v| {
                    let members: Vec<String> =
                        v.iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
                    format!("{{{}}}", members.join(","))
                }),
            ]
        })
    }

    const KEYS: [&str; 34] = [
        "type",
        "event_id",
        "timestamp",
        "sent_at",
        "user_id",
        "anonymous_id",
        "session_id",
        "context",
        "request_id",
        "trace_id",
        "surface",
        "model",
        "experiments",
        "flags",
        "items",
        "slate_propensity",
        "latency_ms",
        "fallback",
        "features",
        "item_id",
        "action",
        "value",
        "name",
        "currency",
        "channel",
        "campaign",
        "experiment",
        "variant",
        "extra",
        "id",
        "version",
        "position",
        "score",
        "attributes",
    ];

    /// A value shaped for `key` most of the time, anything some of the time.
    fn member(key: &'static str) -> BoxedStrategy<String> {
        let item = (
            "[a-z0-9-]{1,10}",
            0u32..20,
            number(),
            number(),
            prop_oneof![Just("null".to_string()), value()],
        )
            .prop_map(|(id, pos, score, prop, attrs)| {
                format!(
                    r#"{{"item_id":"{id}","position":{pos},"score":{score},"propensity":{prop},"attributes":{attrs}}}"#
                )
            });
        let shaped: BoxedStrategy<String> = match key {
            "timestamp" | "sent_at" => prop_oneof![
                (0u64..4_000_000_000_000).prop_map(|v| v.to_string()),
                Just("\"2026-11-27T10:00:04Z\"".to_string()),
                number(),
            ]
            .boxed(),
            "items" => prop_oneof![
                prop::collection::vec(item, 0..4).prop_map(|v| format!("[{}]", v.join(","))),
                prop::collection::vec("\"[a-z0-9]{1,6}\"", 0..4)
                    .prop_map(|v| format!("[{}]", v.join(","))),
            ]
            .boxed(),
            "model" => ("[a-z]{1,6}", "v[0-9]")
                .prop_map(|(n, v)| format!(r#"{{"name":"{n}","version":"{v}"}}"#))
                .boxed(),
            "experiments" => ("[a-z]{1,6}", "[a-z]{1,6}")
                .prop_map(|(i, v)| format!(r#"[{{"id":"{i}","variant":"{v}"}}]"#))
                .boxed(),
            "latency_ms" => (
                number(),
                prop::collection::vec(("[a-z]{1,8}", number()), 0..4),
            )
                .prop_map(|(t, c)| {
                    let comps: Vec<String> =
                        c.iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
                    format!(r#"{{"total":{t},"components":{{{}}}}}"#, comps.join(","))
                })
                .boxed(),
            "context" => prop::collection::vec(
                (
                    prop::sample::select(vec!["os", "device", "region", "locale", "tier"]),
                    value(),
                ),
                0..4,
            )
            .prop_map(|v| {
                let members: Vec<String> = v.iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
                format!("{{{}}}", members.join(","))
            })
            .boxed(),
            "slate_propensity" | "value" | "score" | "propensity" => number().boxed(),
            "fallback" => Just("true".to_string()).boxed(),
            "flags" | "features" | "attributes" | "extra" => value().boxed(),
            _ => "\"[a-zA-Z0-9_ .:-]{0,20}\"".boxed(),
        };
        prop_oneof![4 => shaped, 1 => value()].boxed()
    }

    fn event() -> impl Strategy<Value = String> {
        prop::collection::vec(prop::sample::select(KEYS.to_vec()), 0..14)
            .prop_flat_map(|keys| {
                let members: Vec<BoxedStrategy<String>> = keys
                    .into_iter()
                    .map(|k| member(k).prop_map(move |v| format!("\"{k}\":{v}")).boxed())
                    .collect();
                (members, prop::sample::select(vec!["", " ", "\n\t"]))
            })
            .prop_map(|(members, ws)| {
                format!("{ws}{{{ws}{}}}{ws}", members.join(&format!("{ws},")))
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(3000))]

        /// Whatever the reader reads, serde_json reads the same way, to the same end.
        #[test]
        fn what_it_reads_serde_reads_alike(text in event()) {
            let start = text.len() - text.trim_start().len();
            if let Some(fast) = read_wire(&text, start) {
                prop_assert_eq!(Some(fast), serde_wire(&text, start), "{}", text);
            }
        }

        /// Numbers in every shape: both read the same `f64`, or the reader declines.
        #[test]
        fn numbers_read_as_serde_reads_them(n in number()) {
            let text = format!(r#"{{"value":{n},"items":[{{"score":{n}}}]}}"#);
            if let Some(fast) = read_wire(&text, 0) {
                prop_assert_eq!(Some(fast), serde_wire(&text, 0), "{}", text);
            }
        }
    }

    /// The property above holds vacuously if the reader declines everything: count how much
    /// of a clean sample it reads itself.
    #[test]
    fn it_reads_clean_events_itself() {
        let mut runner = proptest::test_runner::TestRunner::deterministic();
        let clean = prop::collection::vec(prop::sample::select(KEYS[..28].to_vec()), 1..10)
            .prop_flat_map(|keys| {
                let mut keys = keys;
                keys.sort();
                keys.dedup();
                keys.into_iter()
                    .map(|k| {
                        let shaped = match k {
                            "timestamp" | "sent_at" => (0u64..4_000_000_000_000)
                                .prop_map(|v| v.to_string())
                                .boxed(),
                            "slate_propensity" | "value" => {
                                (0u32..1000).prop_map(|v| format!("0.{v}")).boxed()
                            }
                            "fallback" => Just("false".to_string()).boxed(),
                            "flags" | "features" | "context" => {
                                Just(r#"{"a":[1,"b",null]}"#.to_string()).boxed()
                            }
                            "model" => Just(r#"{"name":"m","version":"v"}"#.to_string()).boxed(),
                            "experiments" => {
                                Just(r#"[{"id":"x","variant":"y"}]"#.to_string()).boxed()
                            }
                            "items" => {
                                Just(r#"[{"item_id":"a","position":1,"score":0.5}]"#.to_string())
                                    .boxed()
                            }
                            "latency_ms" => {
                                Just(r#"{"total":1.5,"components":{"a":1}}"#.to_string()).boxed()
                            }
                            _ => "\"[a-z0-9-]{1,12}\"".boxed(),
                        };
                        shaped.prop_map(move |v| format!("\"{k}\":{v}"))
                    })
                    .collect::<Vec<_>>()
            })
            .prop_map(|m| format!("{{{}}}", m.join(",")));
        for _ in 0..500 {
            let text = clean.new_tree(&mut runner).expect("tree").current();
            agrees(&text);
        }
    }
}
