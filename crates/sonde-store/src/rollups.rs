//! The store's side of the latency rollups: decisions become observations as they are
//! applied (after the WAL ack, and again on WAL replay), and `rollups_1m` rows are read back
//! at start.
//!
//! Exactly once: the rows observed since the last flush are taken under the same lock as
//! the flush's WAL position and committed with it in one manifest update. After a crash,
//! the WAL replays exactly the decisions whose rows were not committed.

use std::path::Path;

use datafusion::arrow::array::{Array, AsArray, RecordBatch};
use datafusion::arrow::datatypes::{Float64Type, TimestampMillisecondType, UInt64Type};
use sonde_latency::{Exemplar, Key, Observation, RollupRow, Sketch};

use crate::codec::SpanRecord;
use sonde_model::{Event, EventBody};

use crate::StoreError;
use crate::manifest::Manifest;
use crate::tables::Table;

/// The rollups' view of a decision; `None` for other events.
pub(crate) fn observation(e: &Event) -> Option<Observation<'_>> {
    let EventBody::Decision(d) = &e.data.body else {
        return None;
    };
    let (experiment, variant) = d
        .experiments
        .first()
        .map(|(x, v)| (x.as_str(), v.as_str()))
        .unwrap_or(("", ""));
    Some(Observation {
        time_ms: e.meta.event_time,
        surface: &d.surface,
        model_version: &d.model_version,
        experiment,
        variant,
        total_ms: d.latency_total_ms,
        components: &d.latency_components,
        fallback: d.fallback,
        request_id: &d.request_id,
        trace_id: d.trace_id.as_deref(),
    })
}

/// The rollup key a component span names with its `sonde.*` attributes.
pub(crate) fn span_key(sp: &SpanRecord, surface: &str) -> Key {
    Key {
        surface: surface.into(),
        model_version: sp.model_version.clone().unwrap_or_default(),
        experiment: sp.experiment.clone().unwrap_or_default(),
        variant: sp.variant.clone().unwrap_or_default(),
    }
}

fn corrupt(what: &str) -> StoreError {
    StoreError::Corrupt(format!("rollups_1m: {what}"))
}

/// Read `rollups_1m` rows back from a record batch.
pub(crate) fn rows_of(batch: &RecordBatch) -> Result<Vec<RollupRow>, StoreError> {
    let col = |name: &str| batch.column_by_name(name).ok_or_else(|| corrupt(name));
    let minute = col("minute")?
        .as_primitive_opt::<TimestampMillisecondType>()
        .ok_or_else(|| corrupt("minute"))?;
    let strs = [
        "surface",
        "model_version",
        "experiment",
        "variant",
        "component",
    ]
    .map(|n| col(n).map(|c| c.as_string_opt::<i32>().ok_or_else(|| corrupt(n))));
    let [surface, model, experiment, variant, component] = strs;
    let (surface, model, experiment, variant, component) =
        (surface??, model??, experiment??, variant??, component??);
    let decisions = col("decisions")?
        .as_primitive_opt::<UInt64Type>()
        .ok_or_else(|| corrupt("decisions"))?;
    let fallbacks = col("fallbacks")?
        .as_primitive_opt::<UInt64Type>()
        .ok_or_else(|| corrupt("fallbacks"))?;
    let over = col("over_ms")?
        .as_map_opt()
        .ok_or_else(|| corrupt("over_ms"))?;
    let exemplars = col("exemplars")?
        .as_string_opt::<i32>()
        .ok_or_else(|| corrupt("exemplars"))?;
    let sketch = col("sketch")?
        .as_binary_opt::<i32>()
        .ok_or_else(|| corrupt("sketch"))?;
    let mut rows = Vec::with_capacity(batch.num_rows());
    for i in 0..batch.num_rows() {
        let entries = over.value(i);
        let keys = entries.column(0).as_string::<i32>();
        let values = entries.column(1).as_primitive::<Float64Type>();
        let over = (0..entries.len())
            .filter_map(|j| {
                let t = keys.value(j).parse::<f64>().ok()?;
                Some((t, values.value(j) as u64))
            })
            .collect();
        let opt = |a: &datafusion::arrow::array::UInt64Array| (!a.is_null(i)).then(|| a.value(i));
        rows.push(RollupRow {
            minute_ms: minute.value(i),
            key: Key {
                surface: surface.value(i).into(),
                model_version: model.value(i).into(),
                experiment: experiment.value(i).into(),
                variant: variant.value(i).into(),
            },
            component: component.value(i).into(),
            decisions: opt(decisions),
            fallbacks: opt(fallbacks),
            sketch: Sketch::decode(sketch.value(i)).map_err(|e| corrupt(&e.to_string()))?,
            over,
            exemplars: if exemplars.is_null(i) {
                Vec::new()
            } else {
                serde_json::from_str::<Vec<Exemplar>>(exemplars.value(i))
                    .map_err(|e| corrupt(&format!("exemplars: {e}")))?
            },
        });
    }
    Ok(rows)
}

/// Every persisted row of minutes at or after `since_ms`.
pub(crate) fn load(
    data_dir: &Path,
    manifest: &Manifest,
    since_ms: i64,
) -> Result<Vec<RollupRow>, StoreError> {
    const HOUR_MS: i64 = 3_600_000;
    let mut rows = Vec::new();
    for f in manifest
        .files
        .iter()
        .filter(|f| f.table == Table::Rollups1m.name() && (f.hour + 1) * HOUR_MS > since_ms)
    {
        for batch in crate::files::read_batches(&data_dir.join(&f.path))? {
            rows.extend(rows_of(&batch?)?);
        }
    }
    Ok(rows)
}
