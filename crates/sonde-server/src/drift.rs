//! `GET /v1/drift`: every logged `features` field of decisions, and item scores, in the
//! current window (`from`, `to`) against a reference window (`reference_from`,
//! `reference_to`), with the same filters as `/v1/relevance`.
//!
//! Numeric columns get KS, Wasserstein (raw and normed), PSI and Jensen–Shannon, and drift
//! when the default test says so (normed Wasserstein ≥ 0.1, or KS p < 0.05 for 1,000 rows or
//! fewer); string and boolean columns get PSI and Jensen–Shannon over category shares and
//! drift when Jensen–Shannon ≥ 0.1.

use std::collections::{BTreeMap, BTreeSet};

use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::Response;
use serde::Serialize;
use serde_json::json;
use sonde_relevance::{NumericDrift, jensen_shannon_of_shares, numeric_drift, psi_of_shares};
use sonde_store::Store;
use sonde_store::arrow::array::RecordBatch;

use crate::columns::{f64s, utf8};
use crate::relevance::{RelevanceParams, analysis};
use crate::{ApiError, AppState};

/// Jensen–Shannon distance at which a categorical column drifts.
const CATEGORICAL_THRESHOLD: f64 = 0.1;

/// Values of each column in one window.
#[derive(Default)]
struct Sample {
    numeric: BTreeMap<String, Vec<f64>>,
    categorical: BTreeMap<String, BTreeMap<String, u64>>,
}

/// Drift of one column.
#[derive(Debug, Clone, Serialize)]
pub struct ColumnDrift {
    /// `score`, or `features.<name>`.
    pub column: String,
    /// `numeric` or `categorical`.
    pub kind: &'static str,
    /// Values in the reference window.
    pub n_reference: usize,
    /// Values in the current window.
    pub n_current: usize,
    /// Statistics of a numeric column.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub numeric: Option<NumericDrift>,
    /// PSI of category shares.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub psi: Option<f64>,
    /// Jensen–Shannon distance of category shares.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jensen_shannon: Option<f64>,
    /// Whether the column drifted.
    pub drifted: bool,
    /// Why not computed (a window without values).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

async fn sample(
    store: &Store,
    p: &RelevanceParams,
    timeout: std::time::Duration,
) -> Result<Sample, ApiError> {
    let filter = p.where_clause()?;
    let mut s = Sample::default();
    store
        .scan(
            &format!("SELECT features FROM decisions i WHERE {filter} AND features IS NOT NULL"),
            timeout,
            |batch: &RecordBatch| {
                let col = utf8(batch, 0)?;
                for row in (0..batch.num_rows()).filter(|r| col.is_valid(*r)) {
                    // Not an object (or not JSON): no features from this decision.
                    let mut de = serde_json::Deserializer::from_str(col.value(row));
                    let _ = serde::de::DeserializeSeed::deserialize(Features(&mut s), &mut de);
                }
                Ok(())
            },
        )
        .await?;
    let scores = s.numeric.entry("score".into()).or_default();
    store
        .scan(
            &format!("SELECT score FROM decision_items i WHERE {filter} AND score IS NOT NULL"),
            timeout,
            |batch: &RecordBatch| {
                let col = f64s(batch, 0)?;
                scores.extend(col.values().iter().copied());
                Ok(())
            },
        )
        .await?;
    Ok(s)
}

/// Reads a `features` object into a sample without building a JSON tree: numbers go to the
/// numeric columns, strings and booleans to the categorical ones, anything else is skipped.
struct Features<'s>(&'s mut Sample);

/// One feature value.
enum Feature<'de> {
    Number(f64),
    Category(std::borrow::Cow<'de, str>),
    Other,
}

impl<'de> serde::Deserialize<'de> for Feature<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Feature<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a feature value")
            }
            fn visit_f64<E>(self, v: f64) -> Result<Feature<'de>, E> {
                Ok(Feature::Number(v))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Feature<'de>, E> {
                Ok(Feature::Number(v as f64))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Feature<'de>, E> {
                Ok(Feature::Number(v as f64))
            }
            fn visit_bool<E>(self, v: bool) -> Result<Feature<'de>, E> {
                Ok(Feature::Category(if v { "true" } else { "false" }.into()))
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Feature<'de>, E> {
                Ok(Feature::Category(v.into()))
            }
            fn visit_str<E>(self, v: &str) -> Result<Feature<'de>, E> {
                Ok(Feature::Category(v.to_string().into()))
            }
            fn visit_unit<E>(self) -> Result<Feature<'de>, E> {
                Ok(Feature::Other)
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut a: A,
            ) -> Result<Feature<'de>, A::Error> {
                while a.next_element::<serde::de::IgnoredAny>()?.is_some() {}
                Ok(Feature::Other)
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut a: A,
            ) -> Result<Feature<'de>, A::Error> {
                while a
                    .next_entry::<serde::de::IgnoredAny, serde::de::IgnoredAny>()?
                    .is_some()
                {}
                Ok(Feature::Other)
            }
        }
        d.deserialize_any(V)
    }
}

impl<'de> serde::de::DeserializeSeed<'de> for Features<'_> {
    type Value = ();
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> serde::de::Visitor<'de> for Features<'_> {
    type Value = ();
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a features object")
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut m: A) -> Result<(), A::Error> {
        let s = self.0;
        // The column name, built in one buffer: allocated only for a column seen first.
        let mut name = String::from("features.");
        while let Some(k) = m.next_key::<std::borrow::Cow<'de, str>>()? {
            name.truncate("features.".len());
            name.push_str(&k);
            match m.next_value::<Feature<'de>>()? {
                Feature::Number(x) => match s.numeric.get_mut(&name) {
                    Some(v) => v.push(x),
                    None => {
                        s.numeric.insert(name.clone(), vec![x]);
                    }
                },
                Feature::Category(c) => {
                    if !s.categorical.contains_key(&name) {
                        s.categorical.insert(name.clone(), BTreeMap::new());
                    }
                    let Some(counts) = s.categorical.get_mut(&name) else {
                        continue;
                    };
                    match counts.get_mut(c.as_ref()) {
                        Some(n) => *n += 1,
                        None => {
                            counts.insert(c.into_owned(), 1);
                        }
                    }
                }
                Feature::Other => {}
            }
        }
        Ok(())
    }
}

fn shares(counts: &BTreeMap<String, u64>, keys: &BTreeSet<&String>) -> Vec<f64> {
    let total: u64 = counts.values().sum();
    keys.iter()
        .map(|k| counts.get(*k).copied().unwrap_or(0) as f64 / total.max(1) as f64)
        .collect()
}

/// Drift of every column between the reference and current windows of `p`.
pub async fn drift_report(
    store: &Store,
    p: &RelevanceParams,
    timeout: std::time::Duration,
) -> Result<Vec<ColumnDrift>, ApiError> {
    if p.reference_from.is_none() || p.reference_to.is_none() {
        return Err(ApiError::bad_request(
            "missing_parameter",
            "drift compares two windows: give reference_from and reference_to (and from, to)",
        ));
    }
    let reference = RelevanceParams {
        from: p.reference_from.clone(),
        to: p.reference_to.clone(),
        ..p.clone()
    };
    let (r, c) = tokio::join!(
        sample(store, &reference, timeout),
        sample(store, p, timeout)
    );
    let (r, c) = (r?, c?);
    let mut out = Vec::new();
    let names: BTreeSet<&String> = r.numeric.keys().chain(c.numeric.keys()).collect();
    let empty = Vec::new();
    for name in names {
        let (a, b) = (
            r.numeric.get(name).unwrap_or(&empty),
            c.numeric.get(name).unwrap_or(&empty),
        );
        let numeric = numeric_drift(a, b).ok();
        out.push(ColumnDrift {
            column: name.clone(),
            kind: "numeric",
            n_reference: a.len(),
            n_current: b.len(),
            drifted: numeric.is_some_and(|d| d.drifted),
            note: numeric
                .is_none()
                .then(|| "no values in one of the windows".to_string()),
            numeric,
            psi: None,
            jensen_shannon: None,
        });
    }
    let names: BTreeSet<&String> = r.categorical.keys().chain(c.categorical.keys()).collect();
    let none = BTreeMap::new();
    for name in names {
        let (a, b) = (
            r.categorical.get(name).unwrap_or(&none),
            c.categorical.get(name).unwrap_or(&none),
        );
        let (na, nb) = (a.values().sum::<u64>(), b.values().sum::<u64>());
        let keys: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
        let (sa, sb) = (shares(a, &keys), shares(b, &keys));
        let computed = na > 0 && nb > 0;
        let js = computed.then(|| jensen_shannon_of_shares(&sa, &sb));
        out.push(ColumnDrift {
            column: name.clone(),
            kind: "categorical",
            n_reference: na as usize,
            n_current: nb as usize,
            numeric: None,
            psi: computed.then(|| psi_of_shares(&sa, &sb)),
            jensen_shannon: js,
            drifted: js.is_some_and(|d| d >= CATEGORICAL_THRESHOLD),
            note: (!computed).then(|| "no values in one of the windows".to_string()),
        });
    }
    Ok(out)
}

/// `GET /v1/drift`.
pub async fn get_drift(
    State(state): State<AppState>,
    Query(p): Query<RelevanceParams>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    analysis(state, &headers, p, |state, p| async move {
        let columns = drift_report(&state.store, &p, state.config.query_timeout).await?;
        let drifted = columns.iter().filter(|c| c.drifted).count();
        Ok(json!({
            "columns": columns,
            "drifted": drifted,
            "share_drifted": drifted as f64 / columns.len().max(1) as f64,
        }))
    })
    .await
}
