//! An item's `attributes`: `category` and `provider` promoted to their own fields, the rest
//! kept as JSON object text.
//!
//! A string `category` or `provider` is stored once, in its field, and left out of the
//! rest: attributes that hold just those two (the common case) store no text at all, which
//! saves ingest an allocation, WAL bytes, a column value and its Parquet encoding per item.
//! [`merge_attributes`] puts the whole object back together for readers (the
//! `decision_items.attributes` column). Promoted values that are not strings stay in the
//! rest as well, so their JSON type survives.

use std::fmt::Write;

use compact_str::CompactString;
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::error::{ErrorCode, EventError};

/// An item's attributes, split.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Split {
    pub category: Option<CompactString>,
    pub provider: Option<CompactString>,
    /// The other members as a JSON object text; `None` when promoting left none.
    pub rest: Option<String>,
}

#[derive(Deserialize)]
struct AttrPeek<'a> {
    #[serde(borrow)]
    category: Option<&'a RawValue>,
    #[serde(borrow)]
    provider: Option<&'a RawValue>,
}

/// Splits `text`, a JSON object the event's parse has read.
pub(crate) fn split(text: &str) -> Result<Split, EventError> {
    let Some(found) = scan(text) else {
        // Escaped or repeated keys: serde decides (and words the error); nothing is left out
        // of the rest.
        let (category, provider) = by_serde(text)?;
        return Ok(Split {
            category: category.and_then(scalar_text),
            provider: provider.and_then(scalar_text),
            rest: Some(text.to_string()),
        });
    };
    let is_string = |v: Option<&str>| v.is_some_and(|v| v.starts_with('"'));
    let (strip_category, strip_provider) = (is_string(found.category), is_string(found.provider));
    let kept = |v: Option<&str>, stripped: bool| usize::from(v.is_some() && !stripped);
    let remaining =
        found.others + kept(found.category, strip_category) + kept(found.provider, strip_provider);
    let rest = if !strip_category && !strip_provider {
        Some(text.to_string())
    } else if remaining == 0 {
        None
    } else {
        let mut rest = String::with_capacity(text.len());
        rest.push('{');
        // The same text `scan` just read whole: this pass cannot stop early.
        let _ = scan_members(text, |key, member, _| {
            let promoted =
                (key == "category" && strip_category) || (key == "provider" && strip_provider);
            if !promoted {
                if rest.len() > 1 {
                    rest.push(',');
                }
                rest.push_str(member);
            }
        });
        rest.push('}');
        Some(rest)
    };
    Ok(Split {
        category: found.category.and_then(scalar_text),
        provider: found.provider.and_then(scalar_text),
        rest,
    })
}

/// The whole attributes object of an item from its stored parts: `category` and
/// `provider` (when the rest does not hold them itself) and the rest's members. Key order
/// and escapes may differ from what the client sent; the JSON value is the same. Also
/// right for rows stored before the split, whose rest is the whole object.
pub fn merge_attributes(
    category: Option<&str>,
    provider: Option<&str>,
    rest: Option<&str>,
) -> Option<String> {
    let (in_rest_category, in_rest_provider) = match rest {
        None => (false, false),
        Some(r) => match scan(r) {
            Some(found) => (found.category.is_some(), found.provider.is_some()),
            // Not our own output: keep it as it is.
            None => (true, true),
        },
    };
    let category = category.filter(|_| !in_rest_category);
    let provider = provider.filter(|_| !in_rest_provider);
    if category.is_none() && provider.is_none() {
        return rest.map(str::to_string);
    }
    let inner = rest
        .map(str::trim)
        .and_then(|r| r.strip_prefix('{'))
        .and_then(|r| r.strip_suffix('}'))
        .map_or("", str::trim);
    let mut out = String::with_capacity(inner.len() + 48);
    out.push('{');
    for (key, value) in [("category", category), ("provider", provider)] {
        if let Some(v) = value {
            if out.len() > 1 {
                out.push(',');
            }
            out.push('"');
            out.push_str(key);
            out.push_str("\":");
            push_json_string(&mut out, v);
        }
    }
    if !inner.is_empty() {
        out.push(',');
        out.push_str(inner);
    }
    out.push('}');
    Some(out)
}

/// `s` as a JSON string literal.
fn push_json_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

fn by_serde(text: &str) -> Result<(Option<&str>, Option<&str>), EventError> {
    let peek: AttrPeek<'_> = serde_json::from_str(text).map_err(|e| {
        let msg = e.to_string();
        let msg = msg.rfind(" at line ").map_or(&msg[..], |i| &msg[..i]);
        EventError::new(ErrorCode::InvalidType, "attributes", msg)
    })?;
    Ok((
        peek.category.map(RawValue::get),
        peek.provider.map(RawValue::get),
    ))
}

/// A string attribute as is; any other JSON value as its text.
pub(crate) fn scalar_text(text: &str) -> Option<CompactString> {
    if text == "null" {
        return None;
    }
    if let Some(inner) = text.strip_prefix('"') {
        if let Some(plain) = inner.strip_suffix('"')
            && !plain.contains('\\')
        {
            return Some(CompactString::from(plain));
        }
        return serde_json::from_str::<CompactString>(text).ok();
    }
    Some(CompactString::from(text))
}

/// What [`scan`] found.
struct Found<'a> {
    category: Option<&'a str>,
    provider: Option<&'a str>,
    /// Members other than `category` and `provider`.
    others: usize,
}

/// The raw values of `category` and `provider` among the top-level members of `text`, a
/// JSON object already checked by the event's parse, and how many other members it has.
/// A scan instead of a second serde parse per item (which took ~18% of parsing a 10-item
/// decision). `None` hands anything unusual (escaped or repeated keys, unexpected bytes)
/// to serde, which decides and words the error.
fn scan(text: &str) -> Option<Found<'_>> {
    let mut found = Found {
        category: None,
        provider: None,
        others: 0,
    };
    let mut repeated = false;
    scan_members(text, |key, _, value| {
        let slot = match key {
            "category" => &mut found.category,
            "provider" => &mut found.provider,
            _ => {
                found.others += 1;
                return;
            }
        };
        repeated |= slot.is_some();
        *slot = Some(value);
    })?;
    (!repeated).then_some(found)
}

/// Calls `f` with the key, the whole text (key through value) and the value of each
/// top-level member of the JSON object `text`; `None` when the text is not a plain object
/// (escaped keys included), having called `f` for the members before the problem.
#[inline(always)]
fn scan_members<'a>(text: &'a str, mut f: impl FnMut(&'a str, &'a str, &'a str)) -> Option<()> {
    let b = text.as_bytes();
    let ws = |mut i: usize| {
        while i < b.len() && b[i].is_ascii_whitespace() {
            i += 1;
        }
        i
    };
    let mut i = ws(0);
    if b.get(i) != Some(&b'{') {
        return None;
    }
    i = ws(i + 1);
    if b.get(i) == Some(&b'}') {
        return (ws(i + 1) == b.len()).then_some(());
    }
    loop {
        if b.get(i) != Some(&b'"') {
            return None;
        }
        let member_start = i;
        let key_end = i + 1 + b[i + 1..].iter().position(|&c| c == b'"')?;
        let key = &b[i + 1..key_end];
        if key.contains(&b'\\') {
            return None;
        }
        i = ws(key_end + 1);
        if b.get(i) != Some(&b':') {
            return None;
        }
        let start = ws(i + 1);
        let end = skip_value(b, start)?;
        if end == start {
            return None;
        }
        f(
            text.get(member_start + 1..key_end)?,
            text.get(member_start..end)?,
            text.get(start..end)?,
        );
        i = ws(end);
        match b.get(i) {
            Some(b',') => i = ws(i + 1),
            Some(b'}') => return (ws(i + 1) == b.len()).then_some(()),
            _ => return None,
        }
    }
}

/// The end (exclusive) of the JSON value starting at `i`: the first `,`, `}`, `]` or
/// whitespace outside strings and nesting. For text already known to be JSON.
fn skip_value(b: &[u8], mut i: usize) -> Option<usize> {
    let mut depth = 0usize;
    loop {
        match *b.get(i)? {
            b'"' => {
                i += 1;
                loop {
                    match *b.get(i)? {
                        b'\\' => i += 2,
                        b'"' => break,
                        _ => i += 1,
                    }
                }
            }
            b'{' | b'[' => depth += 1,
            b'}' | b']' if depth > 0 => depth -= 1,
            b',' | b'}' | b']' if depth == 0 => return Some(i),
            c if depth == 0 && c.is_ascii_whitespace() => return Some(i),
            _ => {}
        }
        i += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The serde reading that `scan` replaces.
    fn serde_values(text: &str) -> Option<(Option<CompactString>, Option<CompactString>)> {
        let peek: AttrPeek<'_> = serde_json::from_str(text).ok()?;
        Some((
            peek.category.and_then(|r| scalar_text(r.get())),
            peek.provider.and_then(|r| scalar_text(r.get())),
        ))
    }

    fn scan_values(text: &str) -> Option<(Option<CompactString>, Option<CompactString>)> {
        let found = scan(text)?;
        Some((
            found.category.and_then(scalar_text),
            found.provider.and_then(scalar_text),
        ))
    }

    fn json(text: &str) -> serde_json::Value {
        serde_json::from_str(text).expect("json")
    }

    /// Split, then merged again: the same JSON value.
    fn round_trip(text: &str) -> Option<String> {
        let s = split(text).expect("split");
        merge_attributes(
            s.category.as_deref(),
            s.provider.as_deref(),
            s.rest.as_deref(),
        )
    }

    #[test]
    fn attribute_scan_reads_what_serde_reads() {
        for text in [
            r#"{"category":"books","provider":"p1"}"#,
            r#"{ "x" : [1, {"category": "no"}, "]}"], "category" : "a\"b\u00e9" , "provider" : 7 }"#,
            r#"{"provider":{"id":[1,2,{"k":"}"}]},"category":null}"#,
            r#"{"category":true,"other":-1.5e3}"#,
            "{\n  \"category\": \"x\",\n  \"provider\": \"y\"\n}",
            "{}",
        ] {
            assert!(scan(text).is_some(), "{text}");
            assert_eq!(scan_values(text), serde_values(text), "{text}");
        }
        assert_eq!(
            scan_values(r#"{"category":"a\"b\u00e9","provider":{"id":1}}"#),
            Some((Some("a\"b\u{e9}".into()), Some(r#"{"id":1}"#.into())))
        );
        // Escaped or repeated keys go to serde, which rejects the repeat.
        assert!(scan(r#"{"categ\u006fry":"x"}"#).is_none());
        assert!(scan(r#"{"category":"x","category":"y"}"#).is_none());
        assert_eq!(serde_values(r#"{"category":"x","category":"y"}"#), None);
        assert!(split(r#"{"category":"x","category":"y"}"#).is_err());
    }

    #[test]
    fn string_category_and_provider_are_stored_once() {
        let s = split(r#"{"category":"books","provider":"p1"}"#).expect("split");
        assert_eq!(
            (s.category.as_deref(), s.provider.as_deref(), s.rest),
            (Some("books"), Some("p1"), None)
        );
        let s =
            split(r#"{ "brand" : "acme", "category":"books", "price": [1, 2] }"#).expect("split");
        assert_eq!(
            s.rest.as_deref(),
            Some(r#"{"brand" : "acme","price": [1, 2]}"#)
        );
        // A number keeps its type in the rest; its text is the promoted value.
        let s = split(r#"{"category":5,"provider":"p"}"#).expect("split");
        assert_eq!(
            (s.category.as_deref(), s.rest.as_deref()),
            (Some("5"), Some(r#"{"category":5}"#))
        );
        let s = split(r#"{"category":"x","provider":5}"#).expect("split");
        assert_eq!(s.rest.as_deref(), Some(r#"{"provider":5}"#));
        assert_eq!(split("{}").expect("split").rest.as_deref(), Some("{}"));
        assert_eq!(
            round_trip(r#"{"category":"c","deep":{"a":{"b":[1]}}}"#).as_deref(),
            Some(r#"{"category":"c","deep":{"a":{"b":[1]}}}"#)
        );
        assert_eq!(
            round_trip(r#"{"brand":"acme","category":"b\"ooks\n","provider":"p1"}"#).as_deref(),
            Some(r#"{"category":"b\"ooks\n","provider":"p1","brand":"acme"}"#)
        );
    }

    #[test]
    fn rows_stored_whole_merge_to_themselves() {
        let whole = r#"{"category":"books","provider":"p1","x":1}"#;
        assert_eq!(
            merge_attributes(Some("books"), Some("p1"), Some(whole)).as_deref(),
            Some(whole)
        );
        assert_eq!(merge_attributes(None, None, None), None);
        assert_eq!(
            merge_attributes(Some("c"), None, None).as_deref(),
            Some(r#"{"category":"c"}"#)
        );
    }

    fn json_value() -> impl Strategy<Value = serde_json::Value> {
        let leaf = prop_oneof![
            Just(serde_json::Value::Null),
            any::<bool>().prop_map(serde_json::Value::from),
            any::<i64>().prop_map(serde_json::Value::from),
            (-1e9f64..1e9).prop_map(serde_json::Value::from),
            "[a-z\"\\\\{}\\[\\],: é\n\u{1}]{0,8}".prop_map(serde_json::Value::from),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::from),
                prop::collection::btree_map("[a-z]{1,3}|category|provider", inner, 0..4)
                    .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #[test]
        fn attribute_scan_agrees_with_serde_and_splits_losslessly(
            m in prop::collection::btree_map("[a-z]{1,6}|category|provider", json_value(), 0..6),
            pretty in any::<bool>(),
        ) {
            let v = serde_json::Value::Object(m.into_iter().collect());
            let text = if pretty {
                serde_json::to_string_pretty(&v).expect("json")
            } else {
                v.to_string()
            };
            prop_assert!(scan(&text).is_some());
            prop_assert_eq!(scan_values(&text), serde_values(&text));
            // Against the text read back, not `v`: serde_json's float reading is not exact,
            // and the merge keeps each value's text as it was.
            let merged = round_trip(&text).expect("attributes");
            prop_assert_eq!(json(&merged), json(&text));
        }
    }
}
