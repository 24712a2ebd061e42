//! Splitting a request body into the raw text of each event, without parsing the events:
//! each event is parsed on its own later, so a malformed event is rejected alone.

/// Why a body could not be split into events.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message} at byte {offset}")]
pub struct SplitError {
    /// Byte offset in the body where the structure broke.
    pub offset: usize,
    /// What is wrong.
    pub message: &'static str,
}

fn err(offset: usize, message: &'static str) -> SplitError {
    SplitError { offset, message }
}

fn skip_ws(body: &[u8], mut i: usize) -> usize {
    while i < body.len() && body[i].is_ascii_whitespace() {
        i += 1;
    }
    i
}

/// Bytes that end a run inside a string (`"` and `\`), and outside one (`"`, brackets,
/// braces and commas): the scans below step over everything else with one table look-up
/// per byte instead of a branch per byte kind or a `memchr` call per short string.
const IN_STRING: [bool; 256] = table(b"\"\\");
const OUTSIDE: [bool; 256] = table(b"\"{}[],");

const fn table(bytes: &[u8]) -> [bool; 256] {
    let mut t = [false; 256];
    let mut i = 0;
    while i < bytes.len() {
        t[bytes[i] as usize] = true;
        i += 1;
    }
    t
}

/// The first index from `i` whose byte is in `stops`, or `body.len()`.
#[inline(always)]
fn next_stop(body: &[u8], mut i: usize, stops: &[bool; 256]) -> usize {
    while i < body.len() && !stops[body[i] as usize] {
        i += 1;
    }
    i
}

/// End (exclusive) of the string whose opening quote is at `start`.
fn string_end(body: &[u8], start: usize) -> Result<usize, SplitError> {
    let mut i = start + 1;
    loop {
        i = next_stop(body, i, &IN_STRING);
        match body.get(i) {
            None => return Err(err(start, "unterminated string")),
            Some(b'"') => return Ok(i + 1),
            // A backslash escapes the next byte, whatever it is.
            Some(_) => i += 2,
        }
    }
}

/// End (exclusive) of the value starting at `start`: a balanced object or array, a string,
/// or a bare scalar up to the next `,` or `]` at this level. Only the structure is checked.
fn value_end(body: &[u8], start: usize) -> Result<usize, SplitError> {
    let mut depth = 0usize;
    let mut i = start;
    loop {
        i = next_stop(body, i, &OUTSIDE);
        let Some(&b) = body.get(i) else {
            return Err(err(start, "unterminated value"));
        };
        match b {
            b'"' => {
                i = string_end(body, i)?;
                if depth == 0 {
                    return Ok(i);
                }
                continue;
            }
            b'{' | b'[' => depth += 1,
            b'}' | b']' => {
                if depth == 0 {
                    return Ok(i);
                }
                depth -= 1;
                if depth == 0 {
                    return Ok(i + 1);
                }
            }
            b',' if depth == 0 => return Ok(i),
            _ => {}
        }
        i += 1;
    }
}

/// Split a JSON array of events into the raw text of each element. Elements are not
/// parsed: `[{"a":1}, {bad}]` splits into two, and the second is rejected on its own when
/// parsed. Only a broken array structure (no `[`, an unterminated string or bracket,
/// text after `]`) fails the whole body.
pub fn split_json_array(body: &[u8]) -> Result<Vec<&[u8]>, SplitError> {
    let mut i = skip_ws(body, 0);
    if body.get(i) != Some(&b'[') {
        return Err(err(i, "expected '[' (a JSON array of events)"));
    }
    i = skip_ws(body, i + 1);
    let mut out = Vec::new();
    if body.get(i) == Some(&b']') {
        return finish(body, i + 1, out);
    }
    loop {
        let start = i;
        let end = value_end(body, start)?;
        let raw = body[start..end].trim_ascii_end();
        if raw.is_empty() {
            return Err(err(start, "expected an event"));
        }
        out.push(raw);
        i = skip_ws(body, end);
        match body.get(i) {
            Some(b',') => i = skip_ws(body, i + 1),
            Some(b']') => return finish(body, i + 1, out),
            _ => return Err(err(i, "expected ',' or ']' after an event")),
        }
    }
}

fn finish<'a>(body: &[u8], i: usize, out: Vec<&'a [u8]>) -> Result<Vec<&'a [u8]>, SplitError> {
    if skip_ws(body, i) != body.len() {
        return Err(err(i, "text after the closing ']'"));
    }
    Ok(out)
}

/// Split NDJSON into its non-blank lines (a trailing `\r` is dropped).
pub fn split_ndjson(body: &[u8]) -> Vec<&[u8]> {
    body.split(|&b| b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
        .filter(|l| l.iter().any(|b| !b.is_ascii_whitespace()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(body: &str) -> Vec<String> {
        split_json_array(body.as_bytes())
            .expect("split")
            .into_iter()
            .map(|r| String::from_utf8(r.to_vec()).expect("utf8"))
            .collect()
    }

    #[test]
    fn splits_elements_verbatim() {
        assert_eq!(
            texts(r#" [ {"a":"x,]}\"y"} , {"b":[1,{"c":2}]},3 ,"s", null ] "#),
            vec![
                r#"{"a":"x,]}\"y"}"#,
                r#"{"b":[1,{"c":2}]}"#,
                "3",
                r#""s""#,
                "null"
            ]
        );
        assert_eq!(texts("[]"), Vec::<String>::new());
        assert_eq!(texts(r#"[{"k":"\\"}]"#), vec![r#"{"k":"\\"}"#]);
    }

    #[test]
    fn malformed_elements_split_alone() {
        // The bad element is left to the event parser, which rejects it alone.
        assert_eq!(
            texts(r#"[{"a":1,,}, {"b":2}]"#),
            vec![r#"{"a":1,,}"#, r#"{"b":2}"#]
        );
    }

    #[test]
    fn broken_structure_fails() {
        for body in [
            "",
            "{}",
            "[",
            r#"[{"a":"x}]"#,
            r#"[{"a":1}"#,
            r#"[{"a":1}] x"#,
            r#"[{"a":1} {"b":2}]"#,
            "[,]",
            r#"["\"#,
        ] {
            assert!(split_json_array(body.as_bytes()).is_err(), "{body:?}");
        }
    }

    #[test]
    fn agrees_with_serde_json_on_valid_arrays() {
        let v: Vec<serde_json::Value> = (0..50)
            .map(|i| serde_json::json!({"i": i, "s": format!("q\"{i}],"), "l": [i, {"x": null}]}))
            .collect();
        let body = serde_json::to_vec_pretty(&v).expect("json");
        let parts = split_json_array(&body).expect("split");
        assert_eq!(parts.len(), 50);
        for (p, want) in parts.iter().zip(&v) {
            let got: serde_json::Value = serde_json::from_slice(p).expect("element");
            assert_eq!(&got, want);
        }
    }

    #[test]
    fn ndjson_skips_blank_lines() {
        let lines = split_ndjson(b"{\"a\":1}\r\n\n  \n{\"b\":2}");
        assert_eq!(lines, vec![&b"{\"a\":1}"[..], &b"{\"b\":2}"[..]]);
    }
}
