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
                float(out, v);
            }
        }
        Body::Conversion(c) => {
            out.extend_from_slice(b",\"name\":");
            string(out, c.name);
            out.extend_from_slice(b",\"value\":");
            float(out, c.value);
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
    out.extend_from_slice(b"],\"items\":[");
    for (k, it) in d.items.iter().enumerate() {
        if k > 0 {
            out.push(b',');
        }
        out.extend_from_slice(b"{\"item_id\":");
        string(out, &it.item_id);
        out.extend_from_slice(b",\"position\":");
        int(out, it.position);
        out.extend_from_slice(b",\"score\":");
        float(out, it.score);
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
    float(out, d.latency_ms.total);
    let c = &d.latency_ms.components;
    out.extend_from_slice(b",\"components\":{\"feature_fetch\":");
    float(out, c.feature_fetch);
    out.extend_from_slice(b",\"retrieval\":");
    float(out, c.retrieval);
    out.extend_from_slice(b",\"inference\":");
    float(out, c.inference);
    out.extend_from_slice(b",\"rerank\":");
    float(out, c.rerank);
    out.extend_from_slice(b"}},\"fallback\":");
    boolean(out, d.fallback);
    out.extend_from_slice(b",\"features\":{\"recency_days\":");
    float(out, d.features.recency_days);
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

fn boolean(out: &mut Vec<u8>, b: bool) {
    out.extend_from_slice(if b { b"true" } else { b"false" });
}
