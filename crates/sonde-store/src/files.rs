//! Parquet files: writing flushed rows partitioned by table and hour, and compacting the
//! small files of one partition into one, dropping rows whose event id repeats.

use std::collections::HashSet;
use std::fs::{self, File};
use std::path::Path;

use datafusion::arrow::array::{AsArray, BooleanArray, Int64Array, RecordBatch};
use datafusion::arrow::compute::{concat_batches, filter_record_batch, sort_to_indices, take};
use datafusion::arrow::datatypes::{TimestampMillisecondType, UInt32Type};
use datafusion::parquet::arrow::ArrowWriter;
use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use datafusion::parquet::basic::{Compression, ZstdLevel};
use datafusion::parquet::file::properties::WriterProperties;

use crate::StoreError;
use crate::manifest::FileEntry;
use crate::tables::Table;

const HOUR_MS: i64 = 3_600_000;

fn props() -> WriterProperties {
    WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(1).unwrap_or_default()))
        .set_max_row_group_row_count(Some(1 << 20))
        .build()
}

fn hour_dir(hour: i64) -> String {
    let dt = chrono::DateTime::from_timestamp_millis(hour * HOUR_MS).unwrap_or_default();
    dt.format("%Y-%m-%dT%H").to_string()
}

/// Write `batch` as one Parquet file of `table`'s partition `hour`.
fn write_file(
    data_dir: &Path,
    table: Table,
    hour: i64,
    seq: u64,
    batch: &RecordBatch,
) -> Result<FileEntry, StoreError> {
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
    let mut w = ArrowWriter::try_new(file, table.schema(), Some(props()))?;
    w.write(batch)?;
    let file = w.into_inner()?;
    file.sync_all().map_err(io)?;
    let bytes = file.metadata().map_err(io)?.len();
    Ok(FileEntry {
        table: table.name().to_string(),
        hour,
        path: rel,
        rows: batch.num_rows() as u64,
        bytes,
    })
}

/// Write `batches` of `table`, one file per hour of the table's time column.
pub fn write_partitioned(
    data_dir: &Path,
    table: Table,
    batches: &[RecordBatch],
    next_seq: &mut u64,
) -> Result<Vec<FileEntry>, StoreError> {
    let batch = concat_batches(&table.schema(), batches)?;
    if batch.num_rows() == 0 {
        return Ok(Vec::new());
    }
    let times = batch
        .column_by_name(table.time_column())
        .map(|c| c.as_primitive::<TimestampMillisecondType>().clone())
        .ok_or_else(|| StoreError::Corrupt(format!("{} has no time column", table.name())))?;
    let hours: Int64Array = times
        .iter()
        .map(|t| t.map(|t| t.div_euclid(HOUR_MS)))
        .collect();
    let first = hours.value(0);
    let mut out = Vec::new();
    if hours.iter().all(|h| h == Some(first)) {
        out.push(write_file(data_dir, table, first, *next_seq, &batch)?);
        *next_seq += 1;
        return Ok(out);
    }
    let order = sort_to_indices(&hours, None, None)?;
    let columns = batch
        .columns()
        .iter()
        .map(|c| take(c, &order, None))
        .collect::<Result<Vec<_>, _>>()?;
    let sorted = RecordBatch::try_new(batch.schema(), columns)?;
    let sorted_hours = take(&hours, &order, None)?;
    let sorted_hours = sorted_hours.as_primitive::<datafusion::arrow::datatypes::Int64Type>();
    let mut start = 0;
    for i in 1..=sorted.num_rows() {
        if i == sorted.num_rows() || sorted_hours.value(i) != sorted_hours.value(start) {
            let part = sorted.slice(start, i - start);
            out.push(write_file(
                data_dir,
                table,
                sorted_hours.value(start),
                *next_seq,
                &part,
            )?);
            *next_seq += 1;
            start = i;
        }
    }
    Ok(out)
}

/// Read every row of a Parquet file.
pub fn read_file(path: &Path) -> Result<Vec<RecordBatch>, StoreError> {
    let file = File::open(path).map_err(|e| StoreError::Io {
        path: path.to_path_buf(),
        source: e,
    })?;
    let reader = ParquetRecordBatchReaderBuilder::try_new(file)?.build()?;
    Ok(reader.collect::<Result<Vec<_>, _>>()?)
}

/// Merge the files of one partition into one, keeping the first row of each key
/// (`event_id`, plus `position` for `decision_items`). Returns the new file and the number
/// of duplicate rows dropped.
pub fn compact_partition(
    data_dir: &Path,
    table: Table,
    hour: i64,
    files: &[FileEntry],
    seq: u64,
) -> Result<(FileEntry, u64), StoreError> {
    let mut batches = Vec::new();
    for f in files {
        batches.extend(read_file(&data_dir.join(&f.path))?);
    }
    let dedup = !matches!(table, Table::Quarantine | Table::QuarantineReplays);
    let mut seen: HashSet<(String, u32)> = HashSet::new();
    let mut kept = Vec::with_capacity(batches.len());
    let mut dropped = 0u64;
    for b in batches {
        if !dedup {
            kept.push(b);
            continue;
        }
        let ids = b
            .column_by_name("event_id")
            .map(|c| c.as_string::<i32>().clone())
            .ok_or_else(|| StoreError::Corrupt("no event_id column".into()))?;
        let positions = b
            .column_by_name("position")
            .map(|c| c.as_primitive::<UInt32Type>().clone());
        let mask: BooleanArray = (0..b.num_rows())
            .map(|i| {
                let pos = positions.as_ref().map(|p| p.value(i)).unwrap_or(0);
                let fresh = seen.insert((ids.value(i).to_string(), pos));
                if !fresh {
                    dropped += 1;
                }
                Some(fresh)
            })
            .collect();
        kept.push(filter_record_batch(&b, &mask)?);
    }
    let merged = concat_batches(&table.schema(), &kept)?;
    let entry = write_file(data_dir, table, hour, seq, &merged)?;
    Ok((entry, dropped))
}
