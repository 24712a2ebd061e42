//! Ranking metrics from the store's live relevance join (`sonde_relevance::LiveRelevance`):
//! loading it at start from what is stored, and answering `GET /v1/relevance` (and the
//! dashboard's ranking tables and charts) from its sums when it can answer exactly — the
//! default cutoff and outcome window, a window from minute (or, past a day, hour) edges.
//! Otherwise, or with `exact=true`, the SQL join runs.

use sonde_relevance::{
    Gains, ListFilter, ListKey, LiveConfig, LiveItem, LiveRelevance, Resolution, item_key,
};
use sonde_store::arrow::array::{Array, RecordBatch};
use sonde_store::{Snapshot, Store, StoreError};

use crate::columns::{Text, i64_array, i64s, list, utf8, utf8_array};
use crate::relevance::{GroupRanking, RelevanceParams, time_param, unpack};

const HOUR: i64 = 3_600_000;

/// An empty join for the project's gains, complete (once loaded) from the first hour it keeps.
pub fn empty(gains: &Gains, now: i64) -> LiveRelevance {
    let config = LiveConfig {
        window_ms: i64::from(gains.window_minutes) * 60_000,
        ..LiveConfig::default()
    };
    let from = (now - config.hour_retention_ms).div_euclid(HOUR) * HOUR;
    LiveRelevance::new(config, from)
}

fn opt(a: &Text, row: usize) -> Option<String> {
    a.is_valid(row).then(|| a.value(row).to_string())
}

/// The key of row `row` of a batch whose columns from `first` are surface, model name, model
/// version, device, region, experiment ids, variants.
fn key_of(batch: &RecordBatch, first: usize, row: usize) -> Result<ListKey, StoreError> {
    let s = |i| utf8(batch, first + i);
    let (surface, name, version, device, region) = (s(0)?, s(1)?, s(2)?, s(3)?, s(4)?);
    let ids = list(batch, first + 5)?;
    let variants = list(batch, first + 6)?;
    let (ids, variants) = (
        utf8_array(&ids.value(row))?,
        utf8_array(&variants.value(row))?,
    );
    let mut experiments: Vec<(String, String)> = (0..ids.len())
        .map(|j| (ids.value(j).to_string(), variants.value(j).to_string()))
        .collect();
    experiments.sort();
    Ok(ListKey {
        surface: surface.value(row).to_string(),
        model_name: name.value(row).to_string(),
        model_version: version.value(row).to_string(),
        device: opt(&device, row),
        region: opt(&region, row),
        experiments,
    })
}

/// The key columns over `decisions i` (or `decision_items i`), as [`key_of`] reads them.
const KEY_COLUMNS: [&str; 7] = [
    "i.surface",
    "i.model_name",
    "i.model_version",
    "i.device",
    "i.region",
    "map_keys(i.experiments)",
    "map_values(i.experiments)",
];

/// Load what `snapshot` holds into the join [`crate::load_live_sums`] started at `now`:
/// decisions whose window has closed go straight into the sums, the others become open
/// decisions with the outcomes stored so far. Until it is done, ranking queries use SQL.
pub async fn load(
    store: &Store,
    snapshot: Snapshot,
    now: i64,
    timeout: std::time::Duration,
) -> Result<(), StoreError> {
    let started = std::time::Instant::now();
    let Some((config, from, gains)) = store.with_live(|s| {
        (
            s.relevance.config().clone(),
            s.relevance.complete_from(),
            s.gains,
        )
    }) else {
        return Ok(());
    };
    let boundary = now - config.window_ms - config.grace_ms;
    let params = |from: i64, to: Option<i64>| RelevanceParams {
        from: Some(from.to_string()),
        to: to.map(|t| t.to_string()),
        gains,
        ..RelevanceParams::default()
    };
    let sql_err = |e: crate::ApiError| StoreError::Corrupt(format!("relevance load: {e:?}"));
    let mut columns = vec!["CAST(i.event_time AS BIGINT)".to_string()];
    columns.extend(KEY_COLUMNS.iter().map(|c| c.to_string()));
    let closed_sql = params(from, Some(boundary))
        .lists_sql(&columns)
        .map_err(sql_err)?;
    let mut closed_count = 0u64;
    Store::scan_snapshot(snapshot.clone(), &closed_sql, timeout, |batch| {
        let t = i64s(batch, 0)?;
        let items = list(batch, 8)?;
        let mut rows = Vec::with_capacity(batch.num_rows());
        for row in 0..batch.num_rows() {
            let packed = i64_array(&items.value(row))?;
            let items = packed.values().iter().map(|v| unpack(*v)).collect();
            rows.push((t.value(row), key_of(batch, 1, row)?, items));
        }
        closed_count += rows.len() as u64;
        store.with_live(|s| {
            for (t, key, items) in rows {
                s.relevance.add_closed(t, key, items);
            }
        });
        Ok(())
    })
    .await?;
    // Open decisions: one row per item, a decision's rows together.
    let open_sql = format!(
        "SELECT request_id, t, surface, model_name, model_version, device, region, exp_ids, \
           exp_variants, position, item_id, grade, clicked, purchased \
         FROM ({graded}) ORDER BY request_id",
        graded = params(boundary, None).graded_items_sql().map_err(sql_err)?,
    );
    let mut current: Option<(String, i64, ListKey, Vec<LiveItem>)> = None;
    let mut open_count = 0u64;
    let flush = |d: Option<(String, i64, ListKey, Vec<LiveItem>)>, count: &mut u64| {
        if let Some((id, t, key, items)) = d {
            *count += 1;
            store.with_live(|s| {
                s.relevance.decision(&id, t, key, items, crate::now_ms());
            });
        }
    };
    Store::scan_snapshot(snapshot, &open_sql, timeout, |batch| {
        let (ids, t) = (utf8(batch, 0)?, i64s(batch, 1)?);
        let (pos, item, grade) = (i64s(batch, 9)?, utf8(batch, 10)?, i64s(batch, 11)?);
        let (clicked, purchased) = (i64s(batch, 12)?, i64s(batch, 13)?);
        for row in 0..batch.num_rows() {
            let id = ids.value(row);
            if current.as_ref().is_none_or(|c| c.0 != id) {
                flush(current.take(), &mut open_count);
                current = Some((
                    id.to_string(),
                    t.value(row),
                    key_of(batch, 2, row)?,
                    Vec::new(),
                ));
            }
            if let Some(c) = current.as_mut() {
                c.3.push(LiveItem {
                    item: item_key(item.value(row)),
                    position: u32::try_from(pos.value(row)).unwrap_or(u32::MAX),
                    grade: grade.value(row),
                    clicked: clicked.value(row) > 0,
                    purchased: purchased.value(row) > 0,
                });
            }
        }
        Ok(())
    })
    .await?;
    flush(current.take(), &mut open_count);
    store.with_live(|s| s.relevance.set_ready());
    tracing::info!(
        closed = closed_count,
        open = open_count,
        secs = started.elapsed().as_secs_f64(),
        "live relevance loaded"
    );
    Ok(())
}

/// The group of a decision for one `group_by` dimension, as the SQL names it.
fn dimension(name: &str, experiment: Option<&str>, key: &ListKey, t: i64) -> String {
    let trunc = |unit: i64| {
        chrono::DateTime::from_timestamp_millis(t.div_euclid(unit) * unit)
            .unwrap_or_default()
            .format("%Y-%m-%dT%H:%M:%SZ")
            .to_string()
    };
    match name {
        "surface" => key.surface.clone(),
        "model" => format!("{}:{}", key.model_name, key.model_version),
        "variant" => experiment
            .and_then(|x| key.variant(x))
            .unwrap_or("(not in experiment)")
            .to_string(),
        "device" => key.device.clone().unwrap_or_else(|| "unknown".into()),
        "region" => key.region.clone().unwrap_or_else(|| "unknown".into()),
        "minute" => trunc(60_000),
        "hour" => trunc(HOUR),
        "day" => trunc(24 * HOUR),
        _ => "all".into(),
    }
}

/// Ranking metrics per group from the live sums, or `None` when they cannot answer `p`
/// exactly (the caller then runs SQL, which also reports bad parameters).
pub fn ranking(store: &Store, p: &RelevanceParams) -> Option<Vec<GroupRanking>> {
    if p.exact == Some(true) {
        return None;
    }
    let from = time_param("from", p.from.as_deref()?).ok()?;
    let to = time_param("to", p.to.as_deref()?).ok()?;
    // Parameters the SQL path would refuse (unknown grouping, a variant without its
    // experiment, bad times) go there for their error.
    p.group_expr().ok()?;
    p.where_clause().ok()?;
    let dims: Vec<&str> = p
        .group_by
        .as_deref()
        .unwrap_or("none")
        .split(',')
        .map(str::trim)
        .collect();
    let experiment = p.experiment.as_deref();
    let filter = ListFilter {
        surface: p.surface.as_deref(),
        model_version: p.model_version.as_deref(),
        device: p.device.as_deref(),
        region: p.region.as_deref(),
        variant: experiment.zip(p.variant.as_deref()),
    };
    let resolution = if dims.contains(&"minute") {
        Resolution::Minute
    } else {
        Resolution::Hour
    };
    let sums = store.with_live(|s| {
        // Close what expired since the last event: with no traffic nothing else would.
        s.relevance.maintain(crate::now_ms());
        let c = s.relevance.config();
        if p.k() != c.k || i64::from(p.window()) * 60_000 != c.window_ms {
            return None;
        }
        s.relevance.query(&filter, from, to, resolution, |key, t| {
            dims.iter()
                .map(|d| dimension(d, experiment, key, t))
                .collect::<Vec<_>>()
                .join(" | ")
        })
    })??;
    Some(crate::relevance::groups_of(sums))
}
