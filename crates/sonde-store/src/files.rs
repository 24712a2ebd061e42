//! Table files: flushes write rows as Arrow IPC files partitioned by table and hour;
//! compaction merges the files of one partition into one Parquet file, dropping rows whose
//! event id repeats.
//!
//! Why two formats: a flush sits on the ingest path and writes every row, and encoding
//! Parquet (levels, plain-encoded values, pages) cost about as much CPU as compressing it.
//! An IPC file is the Arrow buffers themselves, LZ4-compressed; compaction, in the
//! background, then reads them without decoding and writes zstd Parquet with dictionaries
//! and statistics for files at rest. Both are readable by DataFusion, and the extension
//! says which a file is.

use std::collections::btree_map::Entry;
use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File};
use std::io::BufWriter;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use datafusion::arrow::array::{AsArray, BooleanArray, Int64Array, RecordBatch, new_null_array};
use datafusion::arrow::compute::filter_record_batch;
use datafusion::arrow::datatypes::Schema;
use datafusion::arrow::datatypes::TimestampMillisecondType;
use datafusion::arrow::ipc::CompressionType;
use datafusion::arrow::ipc::reader::FileReader;
use datafusion::arrow::ipc::writer::{FileWriter, IpcWriteOptions};
use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use datafusion::parquet::arrow::{ArrowSchemaConverter, ArrowWriter};
use datafusion::parquet::basic::{Compression, ZstdLevel};
use datafusion::parquet::file::properties::{EnabledStatistics, WriterProperties};

use crate::StoreError;
use crate::manifest::FileEntry;
use crate::tables::Table;

const HOUR_MS: i64 = 3_600_000;

/// Columns whose values are (nearly) unique per row: dictionary encoding and min/max
/// statistics only cost CPU there.
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

/// How compaction encodes the Parquet files it writes: dictionaries and zstd, for small
/// files at rest.
fn parquet_props(schema: &Schema) -> Result<WriterProperties, StoreError> {
    // Chunk-level statistics suffice for pruning by time and key ranges.
    let mut b = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(1).unwrap_or_default()))
        .set_dictionary_enabled(true)
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
    Ok(b.build())
}

/// The two formats of table files, told apart by extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileFormat {
    /// Arrow IPC file, LZ4 frames: what a flush writes.
    Ipc,
    /// Parquet, zstd: what compaction writes.
    Parquet,
}

impl FileFormat {
    /// The extension of files of this format, without the dot.
    pub fn extension(self) -> &'static str {
        match self {
            FileFormat::Ipc => "arrow",
            FileFormat::Parquet => "parquet",
        }
    }

    /// The format of the file at `path`, by its extension; `None` for other files.
    pub fn of(path: impl AsRef<Path>) -> Option<FileFormat> {
        match path.as_ref().extension()?.to_str()? {
            "arrow" => Some(FileFormat::Ipc),
            "parquet" => Some(FileFormat::Parquet),
            _ => None,
        }
    }
}

/// Whether `f` is a flushed (IPC) file.
pub(crate) fn is_ipc(f: &FileEntry) -> bool {
    FileFormat::of(&f.path) == Some(FileFormat::Ipc)
}

fn hour_dir(hour: i64) -> String {
    let dt = chrono::DateTime::from_timestamp_millis(hour * HOUR_MS).unwrap_or_default();
    dt.format("%Y-%m-%dT%H").to_string()
}

enum Writer {
    Ipc(FileWriter<BufWriter<File>>),
    Parquet(ArrowWriter<PacedFile>),
}

/// Bytes a Parquet file hands to the disk at a time.
const WRITEBACK_CHUNK: u64 = 1 << 20;

/// A file that writes its bytes back every [`WRITEBACK_CHUNK`] and waits for them, so a
/// merge never has more than that queued at the disk. Without it, the final fsync of a
/// 20-50 MB Parquet file sat in front of the WAL's fsyncs: each merge ended with WAL
/// commits of 20-50 ms (measured), and acks waiting on them. Parquet files and dedup runs
/// (written in the background) are written this way; flushes sit on the ingest path, and
/// writing their files the same way did not lower the ack tail.
pub(crate) struct PacedFile {
    file: File,
    written: u64,
    synced: u64,
}

impl PacedFile {
    pub(crate) fn new(file: File) -> PacedFile {
        PacedFile {
            file,
            written: 0,
            synced: 0,
        }
    }

    /// The file; the caller's fsync hands the last chunk to the disk.
    pub(crate) fn into_file(self) -> File {
        self.file
    }

    fn writeback(&mut self) -> std::io::Result<()> {
        #[cfg(target_os = "linux")]
        {
            use std::os::fd::AsRawFd;
            let flags = libc::SYNC_FILE_RANGE_WAIT_BEFORE
                | libc::SYNC_FILE_RANGE_WRITE
                | libc::SYNC_FILE_RANGE_WAIT_AFTER;
            // Writeback allocates blocks under a journal handle the WAL's fsync may wait
            // for: not something to do in the idle class, where it could be preempted.
            crate::priority::unstarved(|| {
                // SAFETY: a plain syscall on an open descriptor this struct owns; no memory
                // is passed. It only starts and waits for writeback of the range.
                let r = unsafe {
                    libc::sync_file_range(
                        self.file.as_raw_fd(),
                        self.synced as libc::off64_t,
                        (self.written - self.synced) as libc::off64_t,
                        flags,
                    )
                };
                // Read errno here: going back to the idle class makes syscalls of its own.
                if r != 0 {
                    Err(std::io::Error::last_os_error())
                } else {
                    Ok(())
                }
            })?;
        }
        self.synced = self.written;
        Ok(())
    }
}

impl std::io::Write for PacedFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.file.write(buf)?;
        self.written += n as u64;
        if self.written - self.synced >= WRITEBACK_CHUNK {
            self.writeback()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

/// An open file of one table and hour.
struct PartWriter {
    writer: Writer,
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
        format: FileFormat,
    ) -> Result<PartWriter, StoreError> {
        let rel = format!(
            "tables/{}/hour={}/part-{seq:012}.{}",
            table.name(),
            hour_dir(hour),
            format.extension()
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
        let writer = match format {
            FileFormat::Ipc => {
                // The IPC writer issues a write per buffer (several per column).
                let options = IpcWriteOptions::default()
                    .try_with_compression(Some(CompressionType::LZ4_FRAME))?;
                let out = BufWriter::with_capacity(1 << 20, file);
                Writer::Ipc(FileWriter::try_new_with_options(out, &schema, options)?)
            }
            FileFormat::Parquet => {
                let props = parquet_props(&schema)?;
                let out = PacedFile::new(file);
                Writer::Parquet(ArrowWriter::try_new(out, schema, Some(props))?)
            }
        };
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
        match &mut self.writer {
            Writer::Ipc(w) => w.write(batch)?,
            Writer::Parquet(w) => w.write(batch)?,
        }
        Ok(())
    }

    fn finish(self, table: Table) -> Result<FileEntry, StoreError> {
        let io = |e| StoreError::Io {
            path: self.path.clone(),
            source: e,
        };
        let file = match self.writer {
            Writer::Ipc(mut w) => {
                w.finish()?;
                w.into_inner()?
                    .into_inner()
                    .map_err(|e| io(e.into_error()))?
            }
            Writer::Parquet(w) => w.into_inner()?.into_file(),
        };
        crate::priority::unstarved(|| file.sync_all()).map_err(io)?;
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

fn open(path: &Path) -> Result<File, StoreError> {
    File::open(path).map_err(|e| StoreError::Io {
        path: path.to_path_buf(),
        source: e,
    })
}

/// Every batch of a table file, Parquet or IPC by its extension.
pub(crate) fn read_batches(
    path: &Path,
) -> Result<Box<dyn Iterator<Item = Result<RecordBatch, StoreError>>>, StoreError> {
    let file = open(path)?;
    Ok(match FileFormat::of(path) {
        Some(FileFormat::Ipc) => Box::new(FileReader::try_new(file, None)?.map(|b| Ok(b?))),
        _ => Box::new(
            ParquetRecordBatchReaderBuilder::try_new(file)?
                .build()?
                .map(|b| Ok(b?)),
        ),
    })
}

/// Whether the IPC file at `path` has `table`'s current columns.
pub(crate) fn has_current_schema(path: &Path, table: Table) -> Result<bool, StoreError> {
    Ok(FileReader::try_new(open(path)?, None)?.schema().fields() == table.schema().fields())
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
                    v.insert(PartWriter::create(
                        data_dir,
                        table,
                        hour,
                        seq,
                        FileFormat::Ipc,
                    )?)
                }
            };
            writer.write(&part)?;
        }
    }
    writers.into_values().map(|w| w.finish(table)).collect()
}

/// `batch` with `table`'s current schema: a file written before a nullable column was
/// added reads with that column null.
pub(crate) fn with_schema(batch: RecordBatch, table: Table) -> Result<RecordBatch, StoreError> {
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

/// Merge the files of one partition into one Parquet file, streaming, keeping the first row of each
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
    let mut out = PartWriter::create(data_dir, table, hour, seq, FileFormat::Parquet)?;
    for f in files {
        for batch in read_batches(&data_dir.join(&f.path))? {
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

    /// The compression of a Parquet file's first column and whether `channel` has a
    /// dictionary.
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
    fn flushes_write_ipc_and_compaction_zstd_parquet_with_dictionaries() {
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
            write_partitioned(
                dir.path(),
                Table::Touches,
                std::slice::from_ref(&batch),
                &seq,
            )
            .expect("second flush"),
        );
        assert_eq!(files.len(), 2);
        for f in &files {
            let path = dir.path().join(&f.path);
            assert_eq!(FileFormat::of(&path), Some(FileFormat::Ipc));
            let back: Vec<RecordBatch> = read_batches(&path)
                .expect("open")
                .collect::<Result<_, _>>()
                .expect("read");
            assert_eq!(back, vec![batch.clone()]);
        }
        let (merged, dropped) =
            compact_partition(dir.path(), Table::Touches, files[0].hour, &files, 99)
                .expect("compact");
        // The second flush repeated every event: compaction keeps one row per event_id.
        assert_eq!((merged.rows, dropped), (20, 20));
        assert_eq!(
            FileFormat::of(dir.path().join(&merged.path)),
            Some(FileFormat::Parquet)
        );
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
        let (merged, _) = compact_partition(dir.path(), Table::Decisions, files[0].hour, &files, 9)
            .expect("compact");
        let file = File::open(dir.path().join(&merged.path)).expect("open");
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

    #[test]
    fn a_paced_file_writes_every_byte_and_hands_them_back_in_chunks() {
        use std::io::Write;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("paced");
        let mut out = PacedFile::new(File::create(&path).expect("create"));
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        for chunk in data.chunks(8192) {
            out.write_all(chunk).expect("write");
        }
        assert_eq!(out.written, data.len() as u64);
        // Written back at the last chunk boundary crossed: 2 of the 3 MB (8 KB writes).
        assert!(out.synced >= 2 * WRITEBACK_CHUNK && out.synced < 3 * WRITEBACK_CHUNK);
        drop(out);
        assert_eq!(fs::read(&path).expect("read"), data);
    }
}
