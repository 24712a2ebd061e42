//! Every field rule of event model v1, each checked for its code and field path.

use serde_json::{Value, json};
use sonde_model::{
    ErrorCode, EventBody, KeyedPseudonymizer, Limits, ParseCtx, Pseudonymizer, TimePolicy,
    parse_event, parse_json_array, redact_raw, split_json_array,
};

const NOW: i64 = 1_767_225_600_000; // 2026-01-01T00:00:00Z

fn ctx(p: &KeyedPseudonymizer) -> ParseCtx<'_> {
    ParseCtx {
        policy: TimePolicy::default(),
        pseudonymizer: p,
        received_at: NOW,
        backfill: false,
        limits: Limits::default(),
    }
}

fn decision() -> Value {
    json!({
        "type": "decision", "event_id": "e1", "timestamp": "2025-12-31T23:59:59Z",
        "user_id": "alice", "session_id": "s1",
        "context": {"device": "ios", "region": "eu", "shoe_size": 42},
        "request_id": "r1", "trace_id": "4BF92F3577B34DA6A3CE929D0E0E4736", "surface": "home_feed",
        "model": {"name": "ranker", "version": "v7"},
        "experiments": [{"id": "exp1", "variant": "treatment"}],
        "flags": {"new_ui": true},
        "items": [
            {"item_id": "i1", "position": 1, "score": 0.9, "propensity": 0.5, "attributes": {"category": "shoes", "provider": "acme", "price": 10}},
            {"item_id": "i2", "position": 2, "score": -0.1}
        ],
        "slate_propensity": 0.25,
        "latency_ms": {"total": 42.5, "components": {"retrieval": 10, "inference": 30.5}},
        "fallback": false,
        "features": {"age_bucket": "25-34", "recency": 3}
    })
}

fn with(mut v: Value, path: &[&str], new: Option<Value>) -> Value {
    let mut cur = &mut v;
    for (i, key) in path.iter().enumerate() {
        let last = i + 1 == path.len();
        if let Ok(idx) = key.parse::<usize>() {
            if last {
                cur[idx] = new.clone().unwrap_or(Value::Null);
                return v;
            }
            cur = &mut cur[idx];
        } else if last {
            let obj = cur.as_object_mut().expect("object");
            match &new {
                Some(x) => {
                    obj.insert(key.to_string(), x.clone());
                }
                None => {
                    obj.remove(*key);
                }
            }
            return v;
        } else {
            cur = &mut cur[*key];
        }
    }
    v
}

fn reject(v: &Value) -> (ErrorCode, String) {
    let p = KeyedPseudonymizer::new("k1", b"secret");
    let raw = serde_json::to_vec(v).expect("json");
    match parse_event(&raw, &ctx(&p)) {
        Ok(e) => panic!("expected rejection of {v}, got {e:?}"),
        Err(r) => (r.error.code, r.error.field),
    }
}

#[test]
fn valid_decision_is_normalized() {
    let p = KeyedPseudonymizer::new("k1", b"secret");
    let raw = serde_json::to_vec(&decision()).expect("json");
    let e = parse_event(&raw, &ctx(&p)).expect("valid");
    assert_eq!(e.data.event_id, "e1");
    assert_eq!(e.data.timestamp, NOW - 1000);
    assert_eq!(e.meta.event_time, NOW - 1000);
    assert_eq!(e.meta.received_at, NOW);
    assert_eq!(e.data.user_key.as_deref(), Some(p.apply("alice").as_str()));
    assert_ne!(e.data.user_key.as_deref(), Some("alice"));
    assert_eq!(e.data.key_id, "k1");
    assert_eq!(e.data.context.device.as_deref(), Some("ios"));
    assert_eq!(e.data.context.extra.as_deref(), Some(r#"{"shoe_size":42}"#));
    // Escaped keys are still promoted; the other keys' text is canonical (sorted, compact)
    // whatever the client's formatting.
    let mut spaced = String::from_utf8(raw).expect("utf8");
    spaced = spaced.replace(
        r#""context":{"device":"ios","region":"eu","shoe_size":42}"#,
        r#""context": { "z": [1, 2], "dev\u0069ce": "ios", "a": {"b" : null} }"#,
    );
    let e = parse_event(spaced.as_bytes(), &ctx(&p)).expect("valid");
    assert_eq!(e.data.context.device.as_deref(), Some("ios"));
    assert_eq!(
        e.data.context.extra.as_deref(),
        Some(r#"{"a":{"b":null},"z":[1,2]}"#)
    );
    let EventBody::Decision(d) = &e.data.body else {
        panic!("decision expected")
    };
    assert_eq!(
        d.trace_id.as_deref(),
        Some("4bf92f3577b34da6a3ce929d0e0e4736")
    );
    assert_eq!(d.model_version, "v7");
    assert_eq!(d.experiments, vec![("exp1".into(), "treatment".into())]);
    assert_eq!(d.items.len(), 2);
    assert_eq!(d.items[0].category.as_deref(), Some("shoes"));
    assert_eq!(d.items[0].provider.as_deref(), Some("acme"));
    assert_eq!(d.items[1].score, Some(-0.1));
    // json! sorts keys; the parser keeps the order it reads.
    assert_eq!(
        d.latency_components,
        vec![("inference".into(), 30.5), ("retrieval".into(), 10.0)]
    );
    assert_eq!(d.flags.as_deref(), Some(r#"{"new_ui":true}"#));
}

#[test]
fn every_other_type_accepts_its_minimal_form() {
    let p = KeyedPseudonymizer::new("k1", b"secret");
    let cases = [
        json!({"type": "interaction", "event_id": "a", "timestamp": 1, "anonymous_id": "x", "request_id": "r", "item_id": "i", "action": "click"}),
        json!({"type": "conversion", "event_id": "b", "timestamp": 1, "user_id": "u", "name": "purchase", "value": 12.5, "currency": "EUR", "items": ["i1"]}),
        json!({"type": "touch", "event_id": "c", "timestamp": 1, "user_id": "u", "channel": "email"}),
        json!({"type": "identify", "event_id": "d", "timestamp": 1, "user_id": "u", "anonymous_id": "x"}),
        json!({"type": "exposure", "event_id": "e", "timestamp": 1, "user_id": "u", "experiment": "x", "variant": "b"}),
    ];
    for c in cases {
        let raw = serde_json::to_vec(&c).expect("json");
        let e = parse_event(&raw, &ctx(&p)).unwrap_or_else(|r| panic!("{c}: {r:?}"));
        assert_eq!(e.event_type().as_str(), c["type"].as_str().expect("type"));
    }
}

#[test]
fn field_rules() {
    use ErrorCode::*;
    let cases: Vec<(Value, ErrorCode, &str)> = vec![
        (with(decision(), &["type"], None), MissingField, "type"),
        (
            with(decision(), &["type"], Some(json!("click"))),
            UnknownType,
            "type",
        ),
        (
            with(decision(), &["type"], Some(json!(3))),
            InvalidType,
            "type",
        ),
        (
            with(decision(), &["event_id"], None),
            MissingField,
            "event_id",
        ),
        (
            with(decision(), &["event_id"], Some(json!(""))),
            InvalidValue,
            "event_id",
        ),
        (
            with(decision(), &["event_id"], Some(json!("x".repeat(129)))),
            InvalidValue,
            "event_id",
        ),
        (
            with(decision(), &["event_id"], Some(json!(7))),
            InvalidType,
            "event_id",
        ),
        (
            with(decision(), &["timestamp"], None),
            MissingField,
            "timestamp",
        ),
        (
            with(decision(), &["timestamp"], Some(json!("yesterday"))),
            InvalidTimestamp,
            "timestamp",
        ),
        (
            with(decision(), &["timestamp"], Some(json!(-5))),
            InvalidTimestamp,
            "timestamp",
        ),
        (
            with(decision(), &["timestamp"], Some(json!(1.5))),
            InvalidTimestamp,
            "timestamp",
        ),
        (
            with(decision(), &["timestamp"], Some(json!([1]))),
            InvalidTimestamp,
            "timestamp",
        ),
        (
            with(decision(), &["sent_at"], Some(json!("soon"))),
            InvalidTimestamp,
            "sent_at",
        ),
        (
            with(decision(), &["user_id"], None),
            MissingField,
            "user_id",
        ),
        (
            with(decision(), &["user_id"], Some(json!(5))),
            InvalidType,
            "user_id",
        ),
        (
            with(decision(), &["context"], Some(json!("ios"))),
            InvalidType,
            "context",
        ),
        (
            with(decision(), &["context", "device"], Some(json!(1))),
            InvalidType,
            "context.device",
        ),
        (
            with(decision(), &["request_id"], None),
            MissingField,
            "request_id",
        ),
        (
            with(decision(), &["trace_id"], Some(json!("abc"))),
            InvalidTraceId,
            "trace_id",
        ),
        (
            with(decision(), &["trace_id"], Some(json!("0".repeat(32)))),
            InvalidTraceId,
            "trace_id",
        ),
        (
            with(decision(), &["trace_id"], Some(json!("g".repeat(32)))),
            InvalidTraceId,
            "trace_id",
        ),
        (
            with(decision(), &["surface"], None),
            MissingField,
            "surface",
        ),
        (with(decision(), &["model"], None), MissingField, "model"),
        (
            with(decision(), &["model", "version"], None),
            MissingField,
            "model.version",
        ),
        (
            with(decision(), &["model", "name"], Some(json!(1))),
            InvalidType,
            "model.name",
        ),
        (
            with(decision(), &["experiments", "0", "variant"], None),
            MissingField,
            "experiments[0].variant",
        ),
        (
            with(decision(), &["flags"], Some(json!([1]))),
            InvalidType,
            "flags",
        ),
        (with(decision(), &["items"], None), MissingField, "items"),
        (
            with(decision(), &["items"], Some(json!({"a": 1}))),
            InvalidType,
            "items",
        ),
        (
            with(decision(), &["items"], Some(json!(["i1"]))),
            InvalidType,
            "items[0]",
        ),
        (
            with(decision(), &["items", "1"], Some(json!(7))),
            InvalidType,
            "items[1]",
        ),
        (
            with(decision(), &["items", "1", "item_id"], None),
            MissingField,
            "items[1].item_id",
        ),
        (
            with(decision(), &["items", "1", "position"], None),
            MissingField,
            "items[1].position",
        ),
        (
            with(decision(), &["items", "1", "position"], Some(json!(0))),
            InvalidPosition,
            "items[1].position",
        ),
        (
            with(decision(), &["items", "1", "position"], Some(json!(-1))),
            InvalidPosition,
            "items[1].position",
        ),
        (
            with(decision(), &["items", "1", "position"], Some(json!(1.5))),
            InvalidPosition,
            "items[1].position",
        ),
        (
            with(decision(), &["items", "1", "position"], Some(json!(1))),
            InvalidPosition,
            "items[1].position",
        ),
        (
            with(decision(), &["items", "1", "score"], Some(json!("high"))),
            InvalidType,
            "items[1].score",
        ),
        (
            with(decision(), &["items", "0", "propensity"], Some(json!(0))),
            OutOfRange,
            "items[0].propensity",
        ),
        (
            with(decision(), &["items", "0", "propensity"], Some(json!(1.2))),
            OutOfRange,
            "items[0].propensity",
        ),
        (
            with(
                decision(),
                &["items", "0", "attributes"],
                Some(json!("shoes")),
            ),
            InvalidType,
            "items[0].attributes",
        ),
        (
            with(decision(), &["slate_propensity"], Some(json!(2))),
            OutOfRange,
            "slate_propensity",
        ),
        (
            with(decision(), &["latency_ms", "total"], Some(json!(-1))),
            OutOfRange,
            "latency_ms.total",
        ),
        (
            with(
                decision(),
                &["latency_ms", "components", "inference"],
                Some(json!(-3)),
            ),
            OutOfRange,
            "latency_ms.components.inference",
        ),
        (
            with(
                decision(),
                &["latency_ms", "components"],
                Some(json!([1, 2])),
            ),
            InvalidType,
            "latency_ms.components",
        ),
        (
            with(decision(), &["fallback"], Some(json!("no"))),
            InvalidType,
            "fallback",
        ),
        (
            with(decision(), &["features"], Some(json!(3))),
            InvalidType,
            "features",
        ),
    ];
    for (v, code, field) in cases {
        let (got_code, got_field) = reject(&v);
        assert_eq!((got_code, got_field.as_str()), (code, field), "event {v}");
    }
}

#[test]
fn type_specific_rules() {
    use ErrorCode::*;
    let base = |t: &str| json!({"type": t, "event_id": "x", "timestamp": 1, "user_id": "u"});
    let cases: Vec<(Value, ErrorCode, &str)> = vec![
        (base("interaction"), MissingField, "request_id"),
        (
            with(
                with(base("interaction"), &["request_id"], Some(json!("r"))),
                &["item_id"],
                Some(json!("i")),
            ),
            MissingField,
            "action",
        ),
        (base("conversion"), MissingField, "name"),
        (
            with(
                with(base("conversion"), &["name"], Some(json!("p"))),
                &["currency"],
                Some(json!("eur")),
            ),
            InvalidValue,
            "currency",
        ),
        (
            with(
                with(base("conversion"), &["name"], Some(json!("p"))),
                &["items"],
                Some(json!([1])),
            ),
            InvalidType,
            "items[0]",
        ),
        (
            with(
                with(base("conversion"), &["name"], Some(json!("p"))),
                &["items"],
                Some(json!(["i1", {"item_id": "i2", "position": 1}])),
            ),
            InvalidType,
            "items[1]",
        ),
        (
            with(
                with(base("conversion"), &["name"], Some(json!("p"))),
                &["value"],
                Some(json!("ten")),
            ),
            InvalidType,
            "value",
        ),
        (base("touch"), MissingField, "channel"),
        (base("identify"), MissingField, "anonymous_id"),
        (base("exposure"), MissingField, "experiment"),
    ];
    for (v, code, field) in cases {
        let (got_code, got_field) = reject(&v);
        assert_eq!((got_code, got_field.as_str()), (code, field), "event {v}");
    }
}

#[test]
fn non_json_and_non_objects_and_oversize() {
    let p = KeyedPseudonymizer::new("k1", b"secret");
    for raw in [&b"{not json"[..], b"[1,2]", b"42", b"\"text\""] {
        let r = parse_event(raw, &ctx(&p)).expect_err("rejected");
        assert_eq!(
            r.error.code,
            ErrorCode::InvalidJson,
            "{}",
            String::from_utf8_lossy(raw)
        );
    }
    let mut big = decision();
    big["features"] = json!({"blob": "x".repeat(70_000)});
    let raw = serde_json::to_vec(&big).expect("json");
    let r = parse_event(&raw, &ctx(&p)).expect_err("too large");
    assert_eq!(r.error.code, ErrorCode::TooLarge);
    assert_eq!(r.event_id.as_deref(), Some("e1"));
    let items: Vec<Value> = (1..=1001)
        .map(|i| json!({"item_id": "i", "position": i}))
        .collect();
    let many = with(decision(), &["items"], Some(Value::Array(items)));
    assert_eq!(reject(&many), (ErrorCode::TooLarge, "items".to_string()));
}

#[test]
fn rejection_reports_event_id() {
    let p = KeyedPseudonymizer::new("k1", b"secret");
    let raw = serde_json::to_vec(&with(decision(), &["surface"], None)).expect("json");
    let r = parse_event(&raw, &ctx(&p)).expect_err("rejected");
    assert_eq!(r.event_id.as_deref(), Some("e1"));
    assert!(r.error.message.contains("surface"));
}

#[test]
fn redaction_removes_raw_ids() {
    let p = KeyedPseudonymizer::new("k1", b"secret");
    let v = json!({"type": "bogus", "user_id": "alice@example.com", "anonymous_id": "dev-9", "session_id": "s-1"});
    let red = redact_raw(&serde_json::to_vec(&v).expect("json"), &p);
    for raw in ["alice@example.com", "dev-9", "s-1"] {
        assert!(!red.contains(raw), "{red}");
    }
    assert!(red.contains(&p.apply("alice@example.com")));
    let broken = br#"{"user_id": "bob@example.com", "anonymous_id":"a\"b", "timestamp": "#;
    let red = redact_raw(broken, &p);
    assert!(!red.contains("bob@example.com"), "{red}");
    assert!(red.contains(&p.apply("bob@example.com")), "{red}");
    assert!(red.contains(&p.apply("a\\\"b")), "{red}");
}

/// The one-pass array parse gives each event the outcome split-then-parse gives it, or
/// declines (`None`) so the caller takes that path.
#[test]
fn one_pass_array_parse_matches_split_then_parse() {
    let p = KeyedPseudonymizer::new("k1", b"secret");
    let ctx = ctx(&p);
    let text = |v: &Value| serde_json::to_string(v).expect("json");
    let good = text(&decision());
    let second = text(&with(decision(), &["event_id"], Some(json!("e2"))));
    // Deserializes, then breaks a rule: the one-pass parse keeps it, with its error.
    let no_id = text(&with(decision(), &["event_id"], None));
    let bad_time = text(&with(decision(), &["timestamp"], Some(json!("yesterday"))));
    let bad_position = text(&with(
        decision(),
        &["items", "1", "position"],
        Some(json!(0)),
    ));
    let mut big = decision();
    big["features"] = json!({"blob": "x".repeat(70_000)});
    let big = text(&big);
    let accepted: Vec<String> = vec![
        "[]".into(),
        " \n[ ]\t".into(),
        format!("[{good}]"),
        format!("[ {good} ,\n {second} ]\n"),
        format!("[{no_id},{good},{bad_time},{bad_position},{big},{second}]"),
    ];
    for body in &accepted {
        let fast = parse_json_array(body.as_bytes(), &ctx, 10).expect("one pass");
        let slow: Vec<_> = split_json_array(body.as_bytes())
            .expect("split")
            .into_iter()
            .map(|raw| (raw, parse_event(raw, &ctx)))
            .collect();
        assert_eq!(fast, slow, "{}", &body[..body.len().min(200)]);
    }
    let codes: Vec<_> = parse_json_array(accepted[4].as_bytes(), &ctx, 10)
        .expect("one pass")
        .into_iter()
        .map(|(_, r)| r.err().map(|r| r.error.code))
        .collect();
    use ErrorCode::*;
    assert_eq!(
        codes,
        [
            Some(MissingField),
            None,
            Some(InvalidTimestamp),
            Some(InvalidPosition),
            Some(TooLarge),
            None
        ]
    );
    // Declined: an element that does not deserialize or is not an object, a broken array,
    // text after it, text that is not UTF-8, more elements than allowed.
    let wrong_type = text(&with(decision(), &["items"], Some(json!("many"))));
    let declined: Vec<Vec<u8>> = vec![
        format!("[{good},{wrong_type}]").into(),
        format!("[{good},[1,2]]").into(),
        format!("[{good},42]").into(),
        format!("[{good}{second}]").into(),
        format!("[{good},]").into(),
        format!("[{good}").into(),
        format!("[{good}] x").into(),
        good.clone().into(),
        [
            b"[".as_slice(),
            good.as_bytes(),
            b",{\"event_id\": \"\xff\"}]",
        ]
        .concat(),
    ];
    for body in &declined {
        assert!(
            parse_json_array(body, &ctx, 10).is_none(),
            "{}",
            String::from_utf8_lossy(&body[body.len().saturating_sub(120)..])
        );
    }
    let three = format!("[{good},{second},{good}]");
    assert!(parse_json_array(three.as_bytes(), &ctx, 2).is_none());
    assert_eq!(
        parse_json_array(three.as_bytes(), &ctx, 3).map(|v| v.len()),
        Some(3)
    );
}
