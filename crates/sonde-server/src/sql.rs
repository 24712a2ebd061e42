//! `POST /v1/query` and the conversion of Arrow results to JSON rows and CSV.

use axum::extract::{Query, State};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};
use sonde_store::QueryLimits;
use sonde_store::arrow::array::{Array, AsArray, RecordBatch};
use sonde_store::arrow::datatypes::{
    DataType, Float32Type, Float64Type, Int8Type, Int16Type, Int32Type, Int64Type, TimeUnit,
    UInt8Type, UInt16Type, UInt32Type, UInt64Type,
};
use sonde_store::arrow::util::display::{ArrayFormatter, FormatOptions};

use crate::error::ApiError;
use crate::project::Scope;
use crate::{AppState, authorize};

/// Body of `POST /v1/query`.
#[derive(Debug, Deserialize)]
pub struct QueryBody {
    /// One read-only SQL statement.
    pub sql: String,
}

/// Query parameters of `POST /v1/query`.
#[derive(Debug, Default, Deserialize)]
pub struct QueryParams {
    /// `json` (default) or `csv`.
    pub format: Option<String>,
}

fn ms_to_rfc3339(ms: i64) -> Value {
    match chrono::DateTime::from_timestamp_millis(ms) {
        Some(t) => Value::String(t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)),
        None => Value::from(ms),
    }
}

fn f64_value(x: f64) -> Value {
    serde_json::Number::from_f64(x)
        .map(Value::Number)
        .unwrap_or(Value::Null)
}

/// `f(i)` for each non-null row, `null` elsewhere.
fn values(col: &dyn Array, f: impl Fn(usize) -> Value) -> Vec<Value> {
    (0..col.len())
        .map(|i| if col.is_null(i) { Value::Null } else { f(i) })
        .collect()
}

/// One column of a batch as JSON values: numbers, strings, booleans, RFC 3339 times and
/// nested values as their text.
pub fn column_values(col: &dyn Array) -> Vec<Value> {
    macro_rules! prim {
        ($t:ty, $conv:expr) => {{
            let a = col.as_primitive::<$t>();
            values(col, |i| $conv(a.value(i)))
        }};
    }
    match col.data_type() {
        DataType::Null => vec![Value::Null; col.len()],
        DataType::Boolean => {
            let a = col.as_boolean();
            values(col, |i| Value::Bool(a.value(i)))
        }
        DataType::Int8 => prim!(Int8Type, Value::from),
        DataType::Int16 => prim!(Int16Type, Value::from),
        DataType::Int32 => prim!(Int32Type, Value::from),
        DataType::Int64 => prim!(Int64Type, Value::from),
        DataType::UInt8 => prim!(UInt8Type, Value::from),
        DataType::UInt16 => prim!(UInt16Type, Value::from),
        DataType::UInt32 => prim!(UInt32Type, Value::from),
        DataType::UInt64 => prim!(UInt64Type, Value::from),
        DataType::Float32 => prim!(Float32Type, |x: f32| f64_value(x as f64)),
        DataType::Float64 => prim!(Float64Type, f64_value),
        DataType::Utf8 => {
            let a = col.as_string::<i32>();
            values(col, |i| Value::from(a.value(i)))
        }
        DataType::LargeUtf8 => {
            let a = col.as_string::<i64>();
            values(col, |i| Value::from(a.value(i)))
        }
        DataType::Utf8View => {
            let a = col.as_string_view();
            values(col, |i| Value::from(a.value(i)))
        }
        DataType::Timestamp(TimeUnit::Millisecond, _) => {
            let a = col.as_primitive::<sonde_store::arrow::datatypes::TimestampMillisecondType>();
            values(col, |i| ms_to_rfc3339(a.value(i)))
        }
        _ => match ArrayFormatter::try_new(col, &FormatOptions::default()) {
            Ok(f) => values(col, |i| Value::String(f.value(i).to_string())),
            Err(_) => vec![Value::Null; col.len()],
        },
    }
}

/// Rows of a result as JSON arrays.
pub fn rows(batches: &[RecordBatch]) -> Vec<Vec<Value>> {
    let mut out = Vec::new();
    for b in batches {
        let cols: Vec<Vec<Value>> = b
            .columns()
            .iter()
            .map(|c| column_values(c.as_ref()))
            .collect();
        for i in 0..b.num_rows() {
            out.push(cols.iter().map(|c| c[i].clone()).collect());
        }
    }
    out
}

/// One CSV cell: empty for null, quoted when it holds a comma, quote or line break.
pub fn csv_cell(v: &Value) -> String {
    let s = match v {
        Value::Null => return String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s
    }
}

/// CSV text with a header line.
pub fn to_csv(columns: &[String], rows: &[Vec<Value>]) -> String {
    let mut out = String::new();
    let header: Vec<String> = columns
        .iter()
        .map(|c| csv_cell(&Value::from(c.as_str())))
        .collect();
    out.push_str(&header.join(","));
    out.push('\n');
    for row in rows {
        let cells: Vec<String> = row.iter().map(csv_cell).collect();
        out.push_str(&cells.join(","));
        out.push('\n');
    }
    out
}

/// The handler.
pub async fn post_query(
    State(state): State<AppState>,
    Query(params): Query<QueryParams>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Result<Response, ApiError> {
    authorize(&state, &headers, Scope::Read)?;
    let bytes = crate::ingest::read_body(&headers, body, 1024 * 1024).await?;
    let q: QueryBody = serde_json::from_slice(&bytes).map_err(|e| {
        ApiError::bad_request(
            "invalid_body",
            format!("expected {{\"sql\": \"...\"}}: {e}"),
        )
    })?;
    let started = std::time::Instant::now();
    let limits = QueryLimits {
        timeout: state.config.query_timeout,
        max_rows: state.config.query_max_rows,
    };
    let result = state.store.query(&q.sql, limits).await?;
    let elapsed_ms = started.elapsed().as_secs_f64() * 1000.0;
    if params.format.as_deref() == Some("csv") {
        let columns: Vec<String> = result
            .schema
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect();
        let csv = to_csv(&columns, &rows(&result.batches));
        return Ok(([(header::CONTENT_TYPE, "text/csv; charset=utf-8")], csv).into_response());
    }
    let columns: Vec<&str> = result
        .schema
        .fields()
        .iter()
        .map(|f| f.name().as_str())
        .collect();
    let types: Vec<String> = result
        .schema
        .fields()
        .iter()
        .map(|f| f.data_type().to_string())
        .collect();
    Ok(axum::Json(json!({
        "columns": columns,
        "types": types,
        "rows": rows(&result.batches),
        "truncated": result.truncated,
        "elapsed_ms": elapsed_ms,
    }))
    .into_response())
}
