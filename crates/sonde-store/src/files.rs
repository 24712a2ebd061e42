//! Parquet files: writing flushed rows partitioned by table and hour, and compacting the
//! small files of one partition into one, dropping rows whose event id repeats.

use std::collections::btree_map::Entry;
use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use datafusion::arrow::array::{AsArray, BooleanArray, Int64Array, RecordBatch, new_null_array};
use datafusion::arrow::compute::filter_record_batch;
use datafusion::arrow::datatypes::Schema;
use datafusion::arrow::datatypes::TimestampMillisecondType;
use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use datafusion::parquet::arrow::{ArrowSchemaConverter, ArrowWriter};
use datafusion::parquet::basic::{Compression, ZstdLevel};
use datafusion::parquet::file::properties::{EnabledStatistics, WriterProperties};

use crate::StoreError;
use crate::manifest::FileEntry;
use crate::tables::Table;

const HOUR_MS: i64 = 3_600_000;

/// Columns whose values are (nearly) unique per row: dictionary encoding and min/max
/// statistics only cost CPU there (measured: 37% faster flushes without them).
const UNIQUE_COLUMNS: [&str; 8] = [
    "event_id",
    "request_id",
    "trace_id",
    "features",
    "flags",
    "context_extra",
    "raw",
    "quarantine_id",
];

/// Pseudonymous keys: too many distinct values for a dictionary to pay off; zstd still
/// compresses their repeats within a decision's rows.
const KEY_COLUMNS: [&str; 3] = ["user_key", "anonymous_key", "session_key"];

/// How a file is encoded. Flushes, on the ingest path, use LZ4 (several times cheaper to
/// encode than zstd) and no dictionaries (interning every value was ~9% of ingest CPU, and
/// compaction builds them anyway); compaction, which rewrites every flushed file in the
/// background, uses dictionaries and zstd for smaller files at rest.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Codec {
    Fast,
    Small,
}

fn props(codec: Codec, schema: &Schema) -> Result<WriterProperties, StoreError> {
    let compression = match codec {
        Codec::Fast => Compression::LZ4_RAW,
        Codec::Small => Compression::ZSTD(ZstdLevel::try_new(1).unwrap_or_default()),
    };
    // Chunk-level statistics suffice for pruning by time and key ranges.
    let mut b = WriterProperties::builder()
        .set_compression(compression)
        .set_dictionary_enabled(codec == Codec::Small)
        .set_max_row_group_row_count(Some(128 * 1024))
        .set_statistics_enabled(EnabledStatistics::Chunk);
    for c in UNIQUE_COLUMNS.iter().chain(&KEY_COLUMNS) {
        b = b
            .set_column_dictionary_enabled((*c).into(), false)
            .set_column_statistics_enabled((*c).into(), EnabledStatistics::None);
    }
    // Values inside lists and maps (item ids, scores, experiment arms...): queries cannot
    // prune row groups on them, and their min/max cost a comparison per element.
    for column in ArrowSchemaConverter::new().convert(schema)?.columns() {
        if column.path().parts().len() > 1 {
            b = b.set_column_statistics_enabled(column.path().clone(), EnabledStatistics::None);
        }
    }
    if codec == Codec::Fast {
        // Random hex by construction (HMACs, W3C trace ids): LZ4, which has no entropy
        // coding, measured 1.05x on them in flush files. Compaction's zstd still codes them.
        for c in KEY_COLUMNS.iter().chain(&["trace_id"]) {
            b = b.set_column_compression((*c).into(), Compression::UNCOMPRESSED);
        }
    }
    Ok(b.build())
}

fn hour_dir(hour: i64) -> String {
    let dt = chrono::DateTime::from_timestamp_millis(hour * HOUR_MS).unwrap_or_default();
    dt.format("%Y-%m-%dT%H").to_string()
}

/// An open Parquet file of one table and hour.
struct PartWriter {
    writer: ArrowWriter<File>,
    path: PathBuf,
    rel: String,
    hour: i64,
    rows: u64,
}

impl PartWriter {
    fn create(
        data_dir: &Path,
        table: Table,
        hour: i64,
        seq: u64,
        codec: Codec,
    ) -> Result<PartWriter, StoreError> {
        let rel = format!(
            "tables/{}/hour={}/part-{seq:012}.parquet",
            table.name(),
            hour_dir(hour)
        );
        let path = data_dir.join(&rel);
        let io = |e| StoreError::Io {
            path: path.clone(),
            source: e,
        };
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).map_err(io)?;
        }
        let file = File::create(&path).map_err(io)?;
        let schema = table.schema();
        let props = props(codec, &schema)?;
        let writer = ArrowWriter::try_new(file, schema, Some(props))?;
        Ok(PartWriter {
            writer,
            path,
            rel,
            hour,
            rows: 0,
        })
    }

    fn write(&mut self, batch: &RecordBatch) -> Result<(), StoreError> {
        self.rows += batch.num_rows() as u64;
        Ok(self.writer.write(batch)?)
    }

    fn finish(self, table: Table) -> Result<FileEntry, StoreError> {
        let file = self.writer.into_inner()?;
        let io = |e| StoreError::Io {
            path: self.path.clone(),
            source: e,
        };
        file.sync_all().map_err(io)?;
        let bytes = file.metadata().map_err(io)?.len();
        Ok(FileEntry {
            table: table.name().to_string(),
            hour: self.hour,
            path: self.rel,
            rows: self.rows,
            bytes,
        })
    }
}

fn hours_of(batch: &RecordBatch, table: Table) -> Result<Int64Array, StoreError> {
    let times = batch
        .column_by_name(table.time_column())
        .map(|c| c.as_primitive::<TimestampMillisecondType>().clone())
        .ok_or_else(|| StoreError::Corrupt(format!("{} has no time column", table.name())))?;
    Ok(times
        .iter()
        .map(|t| t.map(|t| t.div_euclid(HOUR_MS)))
        .collect())
}

/// Write `batches` of `table`, one file per hour of the table's time column, streaming:
/// no copy of the whole flush is made.
pub fn write_partitioned(
    data_dir: &Path,
    table: Table,
    batches: &[RecordBatch],
    next_seq: &AtomicU64,
) -> Result<Vec<FileEntry>, StoreError> {
    let mut writers: BTreeMap<i64, PartWriter> = BTreeMap::new();
    for batch in batches.iter().filter(|b| b.num_rows() > 0) {
        let hours = hours_of(batch, table)?;
        let distinct: BTreeSet<i64> = hours.iter().flatten().collect();
        for hour in distinct {
            let part = if hours.iter().all(|h| h == Some(hour)) {
                batch.clone()
            } else {
                let mask: BooleanArray = hours.iter().map(|h| Some(h == Some(hour))).collect();
                filter_record_batch(batch, &mask)?
            };
            let writer = match writers.entry(hour) {
                Entry::Occupied(o) => o.into_mut(),
                Entry::Vacant(v) => {
                    let seq = next_seq.fetch_add(1, Ordering::AcqRel);
                    v.insert(PartWriter::create(data_dir, table, hour, seq, Codec::Fast)?)
                }
            };
            writer.write(&part)?;
        }
    }
    writers.into_values().map(|w| w.finish(table)).collect()
}

/// `batch` with `table`'s current schema: a file written before a nullable column was
/// added reads with that column null.
fn with_schema(batch: RecordBatch, table: Table) -> Result<RecordBatch, StoreError> {
    let schema = table.schema();
    if batch.schema().fields() == schema.fields() {
        return Ok(batch);
    }
    let columns = schema
        .fields()
        .iter()
        .map(|f| match batch.column_by_name(f.name()) {
            Some(c) => Ok(c.clone()),
            None if f.is_nullable() => Ok(new_null_array(f.data_type(), batch.num_rows())),
            None => Err(StoreError::Corrupt(format!(
                "a {} file has no {} column",
                table.name(),
                f.name()
            ))),
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(RecordBatch::try_new(schema, columns)?)
}

/// Merge the files of one partition into one, streaming, keeping the first row of each
/// `event_id`. Returns the new file and the number of duplicate rows dropped. The caller
/// bounds the rows merged at once: the key set costs about 32 bytes per row.
pub fn compact_partition(
    data_dir: &Path,
    table: Table,
    hour: i64,
    files: &[FileEntry],
    seq: u64,
) -> Result<(FileEntry, u64), StoreError> {
    let dedup = !matches!(
        table,
        Table::Quarantine | Table::QuarantineReplays | Table::Rollups1m
    );
    // Sized up front: growing would briefly hold the old and the new table.
    let capacity = if dedup {
        files.iter().map(|f| f.rows).sum::<u64>()
    } else {
        0
    };
    let mut seen: hashbrown::HashSet<u128> = hashbrown::HashSet::with_capacity(capacity as usize);
    let mut dropped = 0u64;
    let mut out = PartWriter::create(data_dir, table, hour, seq, Codec::Small)?;
    for f in files {
        let path = data_dir.join(&f.path);
        let file = File::open(&path).map_err(|e| StoreError::Io {
            path: path.clone(),
            source: e,
        })?;
        for batch in ParquetRecordBatchReaderBuilder::try_new(file)?.build()? {
            let b = with_schema(batch?, table)?;
            if !dedup {
                out.write(&b)?;
                continue;
            }
            let ids = b
                .column_by_name("event_id")
                .map(|c| c.as_string::<i32>().clone())
                .ok_or_else(|| StoreError::Corrupt("no event_id column".into()))?;
            let before = dropped;
            let mask: BooleanArray = (0..b.num_rows())
                .map(|i| {
                    let fresh = seen.insert(xxhash_rust::xxh3::xxh3_128(ids.value(i).as_bytes()));
                    if !fresh {
                        dropped += 1;
                    }
                    Some(fresh)
                })
                .collect();
            // Duplicates are rare: copy the batch only when it holds one.
            if dropped == before {
                out.write(&b)?;
            } else {
                out.write(&filter_record_batch(&b, &mask)?)?;
            }
        }
    }
    Ok((out.finish(table)?, dropped))
}

#[cfg(test)]
mod tests {
    use datafusion::parquet::basic::Compression;
    use datafusion::parquet::file::reader::{FileReader, SerializedFileReader};
    use sonde_model::{Limits, ParseCtx, RawIds, TimePolicy, parse_event};

    use super::*;
    use crate::tables::TableBuilders;

    const T0: i64 = 1_790_000_000_000;

    fn ctx() -> ParseCtx<'static> {
        ParseCtx {
            policy: TimePolicy::default(),
            pseudonymizer: &RawIds,
            received_at: T0,
            backfill: false,
            limits: Limits::default(),
        }
    }

    fn touches(n: u32) -> RecordBatch {
        let ctx = ctx();
        let mut b = TableBuilders::default();
        for i in 0..n {
            let raw = format!(
                r#"{{"type":"touch","event_id":"t{i}","timestamp":{T0},"user_id":"u{i}","channel":"email"}}"#
            );
            let e = parse_event(raw.as_bytes(), &ctx).expect("valid touch");
            b.push_event(&e);
        }
        b.get_mut(Table::Touches).finish().expect("batch")
    }

    /// The compression of a file's first column and whether `channel` has a dictionary.
    fn encoding(dir: &Path, f: &FileEntry) -> (Compression, bool) {
        let file = File::open(dir.join(&f.path)).expect("open");
        let reader = SerializedFileReader::new(file).expect("parquet");
        let group = reader.metadata().row_group(0);
        let channel = group
            .columns()
            .iter()
            .find(|c| c.column_path().string() == "channel")
            .expect("channel column");
        (
            group.column(0).compression(),
            channel.dictionary_page_offset().is_some(),
        )
    }

    #[test]
    fn flushes_use_lz4_without_dictionaries_and_compaction_zstd_with_them() {
        let dir = tempfile::tempdir().expect("tmp");
        let seq = AtomicU64::new(1);
        let batch = touches(20);
        let mut files = write_partitioned(
            dir.path(),
            Table::Touches,
            std::slice::from_ref(&batch),
            &seq,
        )
        .expect("first flush");
        files.extend(
            write_partitioned(dir.path(), Table::Touches, &[batch], &seq).expect("second flush"),
        );
        assert_eq!(files.len(), 2);
        for f in &files {
            assert_eq!(encoding(dir.path(), f), (Compression::LZ4_RAW, false));
        }
        let (merged, dropped) =
            compact_partition(dir.path(), Table::Touches, files[0].hour, &files, 99)
                .expect("compact");
        // The second flush repeated every event: compaction keeps one row per event_id.
        assert_eq!((merged.rows, dropped), (20, 20));
        let (compression, dictionary) = encoding(dir.path(), &merged);
        assert!(matches!(compression, Compression::ZSTD(_)));
        assert!(dictionary, "compaction writes dictionaries");
    }

    #[test]
    fn nested_columns_carry_no_statistics() {
        let raw = format!(
            r#"{{"type":"decision","event_id":"d1","timestamp":{T0},"user_id":"u","request_id":"r",
            "surface":"home","model":{{"name":"m","version":"v1"}},"experiments":[{{"id":"x","variant":"a"}}],
            "items":[{{"item_id":"i1","position":1,"score":0.5}},{{"item_id":"i2","position":2,"score":0.25}}]}}"#
        );
        let e = parse_event(raw.as_bytes(), &ctx()).expect("valid decision");
        let mut b = TableBuilders::default();
        b.push_event(&e);
        let batch = b.get_mut(Table::Decisions).finish().expect("batch");
        let dir = tempfile::tempdir().expect("tmp");
        let files = write_partitioned(dir.path(), Table::Decisions, &[batch], &AtomicU64::new(1))
            .expect("flush");
        let file = File::open(dir.path().join(&files[0].path)).expect("open");
        let reader = SerializedFileReader::new(file).expect("parquet");
        let group = reader.metadata().row_group(0);
        let stats = |path: &str| {
            group
                .columns()
                .iter()
                .find(|c| c.column_path().string() == path)
                .unwrap_or_else(|| panic!("no column {path}"))
                .statistics()
                .is_some()
        };
        assert!(stats("event_time") && stats("surface") && stats("model_version"));
        for nested in [
            "item_ids.list.item",
            "item_scores.list.item",
            "experiments.entries.keys",
            "experiments.entries.values",
        ] {
            assert!(!stats(nested), "{nested} has statistics");
        }
    }
}
