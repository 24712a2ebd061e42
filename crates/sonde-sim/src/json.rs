//! JSON text of a [`SimEvent`], written field by field.
//!
//! The derived `Serialize` gives the same bytes (a test holds them equal) but spends most of
//! its time scanning the ~100 keys of a decision for characters to escape; here keys are
//! literals and only values are checked. File generation must keep up with 500k events/s.

use crate::event::{Body, DecisionBody, SimEvent};

/// Append the event's JSON text (no newline).
pub(crate) fn write_event(e: &SimEvent, out: &mut Vec<u8>) {
    out.extend_from_slice(b"{\"type\":");
    string(out, e.kind);
    out.extend_from_slice(b",\"event_id\":");
    string(out, &e.event_id);
    out.extend_from_slice(b",\"timestamp\":");
    int(out, e.timestamp);
    if let Some(t) = e.sent_at {
        out.extend_from_slice(b",\"sent_at\":");
        int(out, t);
    }
    for (key, v) in [
        (&b",\"user_id\":"[..], &e.user_id),
        (b",\"anonymous_id\":", &e.anonymous_id),
        (b",\"session_id\":", &e.session_id),
    ] {
        if let Some(v) = v {
            out.extend_from_slice(key);
            string(out, v);
        }
    }
    if let Some(c) = &e.context {
        out.extend_from_slice(b",\"context\":{\"device\":");
        string(out, c.device);
        out.extend_from_slice(b",\"region\":");
        string(out, c.region);
        out.push(b'}');
    }
    match &e.body {
        Body::Decision(d) => decision(out, d),
        Body::Interaction(i) => {
            out.extend_from_slice(b",\"request_id\":");
            string(out, &i.request_id);
            out.extend_from_slice(b",\"item_id\":");
            string(out, &i.item_id);
            out.extend_from_slice(b",\"action\":");
            string(out, i.action);
            if let Some(v) = i.value {
                out.extend_from_slice(b",\"value\":");
                fixed(out, v, 0);
            }
        }
        Body::Conversion(c) => {
            out.extend_from_slice(b",\"name\":");
            string(out, c.name);
            out.extend_from_slice(b",\"value\":");
            fixed(out, c.value, 2);
            out.extend_from_slice(b",\"currency\":");
            string(out, c.currency);
            out.extend_from_slice(b",\"items\":[");
            for (k, item) in c.items.iter().enumerate() {
                if k > 0 {
                    out.push(b',');
                }
                string(out, item);
            }
            out.extend_from_slice(b"],\"request_id\":");
            string(out, &c.request_id);
        }
        Body::Touch(t) => {
            out.extend_from_slice(b",\"channel\":");
            string(out, t.channel);
            out.extend_from_slice(b",\"campaign\":");
            string(out, t.campaign);
        }
        Body::Identify(_) => {}
    }
    out.push(b'}');
}

fn decision(out: &mut Vec<u8>, d: &DecisionBody) {
    out.extend_from_slice(b",\"request_id\":");
    string(out, &d.request_id);
    out.extend_from_slice(b",\"surface\":");
    string(out, d.surface);
    out.extend_from_slice(b",\"model\":{\"name\":");
    string(out, d.model.name);
    out.extend_from_slice(b",\"version\":");
    string(out, d.model.version);
    out.extend_from_slice(b"},\"experiments\":[");
    for (k, a) in d.experiments.iter().enumerate() {
        if k > 0 {
            out.push(b',');
        }
        out.extend_from_slice(b"{\"id\":");
        string(out, a.id);
        out.extend_from_slice(b",\"variant\":");
        string(out, a.variant);
        out.push(b'}');
    }
    out.push(b']');
    if let Some(f) = &d.flags {
        out.extend_from_slice(b",\"flags\":{\"swap\":");
        int(out, f.swap);
        out.push(b'}');
    }
    out.extend_from_slice(b",\"items\":[");
    for (k, it) in d.items.iter().enumerate() {
        if k > 0 {
            out.push(b',');
        }
        out.extend_from_slice(b"{\"item_id\":");
        string(out, &it.item_id);
        out.extend_from_slice(b",\"position\":");
        int(out, it.position);
        out.extend_from_slice(b",\"score\":");
        fixed(out, it.score, 4);
        out.extend_from_slice(b",\"propensity\":");
        float(out, it.propensity);
        out.extend_from_slice(b",\"attributes\":{\"category\":");
        string(out, it.attributes.category);
        out.extend_from_slice(b",\"provider\":");
        string(out, &it.attributes.provider);
        out.extend_from_slice(b"}}");
    }
    out.extend_from_slice(b"],\"slate_propensity\":");
    float(out, d.slate_propensity);
    out.extend_from_slice(b",\"latency_ms\":{\"total\":");
    fixed(out, d.latency_ms.total, 2);
    let c = &d.latency_ms.components;
    out.extend_from_slice(b",\"components\":{\"feature_fetch\":");
    fixed(out, c.feature_fetch, 2);
    out.extend_from_slice(b",\"retrieval\":");
    fixed(out, c.retrieval, 2);
    out.extend_from_slice(b",\"inference\":");
    fixed(out, c.inference, 2);
    out.extend_from_slice(b",\"rerank\":");
    fixed(out, c.rerank, 2);
    out.extend_from_slice(b"}},\"fallback\":");
    boolean(out, d.fallback);
    out.extend_from_slice(b",\"features\":{\"recency_days\":");
    fixed(out, d.features.recency_days, 2);
    out.extend_from_slice(b",\"history_len\":");
    int(out, d.features.history_len);
    out.extend_from_slice(b",\"fresh\":");
    boolean(out, d.features.fresh);
    out.push(b'}');
}

/// A JSON string; the simulator's own strings need no escapes, others go through serde_json.
fn string(out: &mut Vec<u8>, s: &str) {
    if s.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
    } else {
        // Writing a string to a Vec cannot fail.
        serde_json::to_writer(&mut *out, s).unwrap_or_default();
    }
}

fn int(out: &mut Vec<u8>, n: impl itoa::Integer) {
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

/// As serde_json writes an f64: shortest round-trip text, `null` when not finite.
fn float(out: &mut Vec<u8>, x: f64) {
    if x.is_finite() {
        out.extend_from_slice(zmij::Buffer::new().format_finite(x).as_bytes());
    } else {
        out.extend_from_slice(b"null");
    }
}

/// As [`float`], for a value the simulator rounded to `decimals` places (scores to 4,
/// milliseconds to 2): integer formatting gives the same shortest text without the search
/// for it. Anything else goes to [`float`].
fn fixed(out: &mut Vec<u8>, x: f64, decimals: usize) {
    const SCALE: [f64; 5] = [1.0, 10.0, 100.0, 1e3, 1e4];
    const POW: [u64; 5] = [1, 10, 100, 1_000, 10_000];
    let Some(&scale) = SCALE.get(decimals) else {
        return float(out, x);
    };
    let scaled = (x * scale).round();
    // In this range shortest texts have no exponent and the scaled value is exact.
    if !(1e-3..1e9).contains(&x.abs()) || scaled / scale != x {
        return float(out, x);
    }
    if x < 0.0 {
        out.push(b'-');
    }
    let n = scaled.abs() as u64;
    let p = POW[decimals];
    out.extend_from_slice(itoa::Buffer::new().format(n / p).as_bytes());
    out.push(b'.');
    let mut frac = n % p;
    if frac == 0 {
        out.push(b'0');
        return;
    }
    let mut digits = decimals;
    while frac.is_multiple_of(10) {
        frac /= 10;
        digits -= 1;
    }
    let text = itoa::Buffer::new().format(frac).len();
    out.extend(std::iter::repeat_n(b'0', digits - text));
    out.extend_from_slice(itoa::Buffer::new().format(frac).as_bytes());
}

fn boolean(out: &mut Vec<u8>, b: bool) {
    out.extend_from_slice(if b { b"true" } else { b"false" });
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    fn zmij_text(x: f64) -> String {
        let mut out = Vec::new();
        super::float(&mut out, x);
        String::from_utf8_lossy(&out).into_owned()
    }

    proptest! {
        #[test]
        fn fixed_matches_shortest_text(n in -2_000_000_000i64..2_000_000_000, d in 0usize..5) {
            let x = n as f64 / [1.0, 10.0, 100.0, 1e3, 1e4][d];
            let mut out = Vec::new();
            super::fixed(&mut out, x, d);
            prop_assert_eq!(String::from_utf8_lossy(&out).into_owned(), zmij_text(x));
        }

        #[test]
        fn fixed_falls_back_for_other_values(x in -1e12f64..1e12, d in 0usize..6) {
            let mut out = Vec::new();
            super::fixed(&mut out, x, d);
            prop_assert_eq!(String::from_utf8_lossy(&out).into_owned(), zmij_text(x));
        }
    }
}
