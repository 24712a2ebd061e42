//! A write-ahead log with group commit.
//!
//! Records are framed as `[len: u32][crc32: u32][lsn: u64][payload]` (little endian; the
//! CRC covers the LSN and payload) in segment files named by their first LSN. One writer
//! thread takes every queued append, writes them together, calls `fdatasync` once, and only
//! then runs each append's completion, in LSN order. A crash can tear only the tail of the
//! last segment; [`Wal::open`] truncates it with a warning and replays the rest.
//!
//! Segments are recycled: a trimmed segment is renamed to a spare and later renamed into
//! the next segment and overwritten in place. Writing within a file's existing blocks does
//! not change its size or allocation, so `fdatasync` writes the data and flushes the disk
//! cache without a file system journal commit; a growing file needs one per sync, and on
//! ext4 (`data=ordered`) that commit first waits for every other file's dirty data — each
//! flush of table files held WAL commits up for 9-24 ms (measured). Each write ends with
//! an all-zero header (not counted in the segment's length, overwritten by the next
//! write), so replay tells the end of the log from a recycled segment's old records.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read};
use std::ops::RangeInclusive;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;

use parking_lot::Mutex;

const HEADER: usize = 16;
/// Written after every group: where replay stops without calling it a tear.
const END_MARK: [u8; HEADER] = [0; HEADER];
/// Trimmed segments kept for reuse; more are deleted.
const MAX_SPARES: usize = 2;
/// Largest record accepted; bigger frames on disk are treated as corruption.
pub const MAX_RECORD: usize = 256 * 1024 * 1024;

/// WAL failures.
#[derive(Debug, thiserror::Error)]
pub enum WalError {
    /// An I/O call failed (disk full, read-only file system, ...).
    #[error("WAL I/O error on {path}: {source}")]
    Io {
        /// File or directory involved.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// A record in a segment other than the last failed its checksum: not a torn write.
    #[error("WAL corruption in {path} at offset {offset}: {reason}")]
    Corrupt {
        /// Segment file.
        path: PathBuf,
        /// Byte offset of the bad record.
        offset: u64,
        /// What was wrong.
        reason: String,
    },
    /// An earlier write failed and could not be rolled back; the WAL refuses writes.
    #[error("WAL is unavailable after an unrecoverable write error")]
    Poisoned,
    /// The WAL has been closed.
    #[error("WAL is closed")]
    Closed,
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> WalError + '_ {
    move |source| WalError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// One record read back during replay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Log sequence number, increasing by one per record from 1.
    pub lsn: u64,
    /// The bytes that were appended.
    pub payload: Vec<u8>,
}

/// WAL settings.
#[derive(Debug, Clone)]
pub struct WalConfig {
    /// Directory holding the segment files.
    pub dir: PathBuf,
    /// A segment is closed and a new one started once it exceeds this size.
    pub segment_bytes: u64,
    /// Call `fdatasync` before completing appends. Only tests and benchmarks of the
    /// non-durable path turn this off.
    pub fsync: bool,
    /// Run first on the writer and completion threads (the store gives them a short time
    /// slice: acknowledgements wait on both).
    pub thread_start: fn(),
}

impl WalConfig {
    /// Defaults: 64 MiB segments, fsync on.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        WalConfig {
            dir: dir.into(),
            segment_bytes: 64 * 1024 * 1024,
            fsync: true,
            thread_start: || {},
        }
    }
}

/// Called on the writer thread, in LSN order, once an append is durable (or failed).
pub type Completion = Box<dyn FnOnce(Result<RangeInclusive<u64>, WalError>) + Send>;

struct Request {
    records: Vec<Vec<u8>>,
    bytes: u64,
    done: Completion,
}

struct Shared {
    pending_bytes: AtomicU64,
    poisoned: AtomicBool,
    /// First LSN of every segment on disk, oldest first.
    segments: Mutex<Vec<u64>>,
    /// Trimmed segment files waiting to be reused by the next rotation.
    spares: Mutex<Vec<PathBuf>>,
    dir: PathBuf,
    fsync_micros_total: AtomicU64,
    fsyncs: AtomicU64,
    /// fsyncs per [`FSYNC_BOUNDS_MICROS`] bucket (the last is above every bound).
    fsync_buckets: [AtomicU64; FSYNC_BOUNDS_MICROS.len() + 1],
}

/// Upper bounds (µs) of the fsync latency histogram: 100 µs to 1 s.
pub const FSYNC_BOUNDS_MICROS: [u64; 12] = [
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 1_000_000,
];

/// fsync latencies since open.
#[derive(Debug, Clone, PartialEq)]
pub struct FsyncHistogram {
    /// fsyncs per bucket of [`FSYNC_BOUNDS_MICROS`] (not cumulative; one more for above).
    pub counts: Vec<u64>,
    /// Total fsync time (µs).
    pub sum_micros: u64,
}

/// Handle to an open WAL. Cheap to share behind an `Arc`.
pub struct Wal {
    tx: Mutex<Option<mpsc::Sender<Request>>>,
    shared: Arc<Shared>,
    writer: Mutex<Option<JoinHandle<()>>>,
}

fn segment_path(dir: &Path, first_lsn: u64) -> PathBuf {
    dir.join(format!("{first_lsn:020}.wal"))
}

/// A trimmed segment's name while it waits for reuse (its first LSN keeps it unique).
fn spare_path(dir: &Path, first_lsn: u64) -> PathBuf {
    dir.join(format!("{first_lsn:020}.spare"))
}

/// First LSNs of the segments (sorted) and the spare files in `dir`.
fn list_files(dir: &Path) -> Result<(Vec<u64>, Vec<PathBuf>), WalError> {
    let mut segments = Vec::new();
    let mut spares = Vec::new();
    for entry in fs::read_dir(dir).map_err(io_err(dir))? {
        let entry = entry.map_err(io_err(dir))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if let Some(stem) = name.strip_suffix(".wal")
            && let Ok(lsn) = stem.parse::<u64>()
        {
            segments.push(lsn);
        } else if name.ends_with(".spare") {
            spares.push(entry.path());
        }
    }
    segments.sort_unstable();
    spares.sort_unstable();
    Ok((segments, spares))
}

fn list_segments(dir: &Path) -> Result<Vec<u64>, WalError> {
    Ok(list_files(dir)?.0)
}

/// Open a segment for positional writes, creating it if needed and keeping what it holds
/// (a reused file's old bytes are overwritten, not truncated).
fn open_segment(path: &Path) -> Result<File, WalError> {
    OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(false)
        .open(path)
        .map_err(io_err(path))
}

fn sync_dir(dir: &Path) -> Result<(), WalError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir))
}

/// Outcome of reading one segment.
struct Scan {
    records: Vec<Record>,
    /// Length of the valid prefix.
    valid_len: u64,
    /// Why the scan stopped early, if it did.
    torn: Option<String>,
}

/// Read the records of the segment starting at `first_lsn`. The log ends at the end of the
/// file, at an end mark, or at a well-formed record older than the one expected (what a
/// recycled segment held before); anything else is a tear.
fn scan_segment(path: &Path, first_lsn: u64, skip_upto: u64) -> Result<Scan, WalError> {
    let mut data = Vec::new();
    File::open(path)
        .and_then(|mut f| f.read_to_end(&mut data))
        .map_err(io_err(path))?;
    let mut records = Vec::new();
    let mut off = 0usize;
    let mut torn = None;
    let mut expected_lsn = first_lsn;
    while off < data.len() {
        if data[off..].starts_with(&END_MARK) {
            break;
        }
        if data.len() - off < HEADER {
            torn = Some(format!(
                "{} trailing bytes shorter than a header",
                data.len() - off
            ));
            break;
        }
        let len =
            u32::from_le_bytes([data[off], data[off + 1], data[off + 2], data[off + 3]]) as usize;
        let crc = u32::from_le_bytes([data[off + 4], data[off + 5], data[off + 6], data[off + 7]]);
        if len > MAX_RECORD || data.len() - off - HEADER < len {
            torn = Some(format!(
                "record of {len} bytes runs past the end of the file"
            ));
            break;
        }
        let body = &data[off + 8..off + HEADER + len];
        if crc32fast::hash(body) != crc {
            torn = Some("checksum mismatch".to_string());
            break;
        }
        let mut lsn_bytes = [0u8; 8];
        lsn_bytes.copy_from_slice(&body[..8]);
        let lsn = u64::from_le_bytes(lsn_bytes);
        if lsn < expected_lsn {
            // Left over from the segment's previous use.
            break;
        }
        if lsn > expected_lsn {
            torn = Some(format!("LSN {lsn} where {expected_lsn} was expected"));
            break;
        }
        expected_lsn = lsn + 1;
        if lsn > skip_upto {
            records.push(Record {
                lsn,
                payload: body[8..].to_vec(),
            });
        }
        off += HEADER + len;
    }
    Ok(Scan {
        records,
        valid_len: off as u64,
        torn,
    })
}

/// Read the records above `skip_upto` without opening the WAL for writing: for offline
/// readers of a stopped (or running) server's data. A torn tail is skipped, not repaired.
pub fn read_records(dir: &Path, skip_upto: u64) -> Result<Vec<Record>, WalError> {
    if !dir.exists() {
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    for first in list_segments(dir)? {
        out.extend(scan_segment(&segment_path(dir, first), first, skip_upto)?.records);
    }
    Ok(out)
}

impl Wal {
    /// Open (or create) the WAL in `config.dir`, returning it and every record with an LSN
    /// above `skip_upto` (records at or below it are already persisted elsewhere).
    pub fn open(config: WalConfig, skip_upto: u64) -> Result<(Wal, Vec<Record>), WalError> {
        fs::create_dir_all(&config.dir).map_err(io_err(&config.dir))?;
        let (mut segments, mut spares) = list_files(&config.dir)?;
        for extra in spares.split_off(spares.len().min(MAX_SPARES)) {
            fs::remove_file(&extra).map_err(io_err(&extra))?;
        }
        let mut records = Vec::new();
        let mut next_lsn = skip_upto + 1;
        for (i, &first) in segments.iter().enumerate() {
            let path = segment_path(&config.dir, first);
            let scan = scan_segment(&path, first, skip_upto)?;
            let last = i + 1 == segments.len();
            if let Some(reason) = scan.torn {
                if !last {
                    return Err(WalError::Corrupt {
                        path,
                        offset: scan.valid_len,
                        reason,
                    });
                }
                tracing::warn!(
                    segment = %path.display(),
                    offset = scan.valid_len,
                    reason = %reason,
                    "truncating torn WAL tail"
                );
            }
            if last {
                // Whatever follows the log (a tear, old records of a recycled file) goes,
                // so a new segment of the same name starts empty.
                let f = OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .map_err(io_err(&path))?;
                if f.metadata().map_err(io_err(&path))?.len() > scan.valid_len {
                    f.set_len(scan.valid_len).map_err(io_err(&path))?;
                    f.sync_all().map_err(io_err(&path))?;
                }
            }
            if let Some(r) = scan.records.last() {
                next_lsn = next_lsn.max(r.lsn + 1);
            } else if scan.valid_len > 0 {
                // Every record was at or below skip_upto; LSNs continue after the segment's.
                let s = scan_segment(&path, first, 0)?;
                if let Some(r) = s.records.last() {
                    next_lsn = next_lsn.max(r.lsn + 1);
                }
            }
            records.extend(scan.records);
        }
        // Always start a fresh segment: the tail of an old one may hold a repaired tear.
        let first = next_lsn;
        let path = segment_path(&config.dir, first);
        let file = open_segment(&path)?;
        let start_len = file.metadata().map_err(io_err(&path))?.len();
        if !segments.contains(&first) {
            segments.push(first);
        }
        sync_dir(&config.dir)?;

        let shared = Arc::new(Shared {
            pending_bytes: AtomicU64::new(0),
            poisoned: AtomicBool::new(false),
            segments: Mutex::new(segments),
            spares: Mutex::new(spares),
            dir: config.dir.clone(),
            fsync_micros_total: AtomicU64::new(0),
            fsyncs: AtomicU64::new(0),
            fsync_buckets: Default::default(),
        });
        let (tx, rx) = mpsc::channel::<Request>();
        let mut writer = Writer {
            config,
            shared: shared.clone(),
            file,
            path,
            len: start_len,
            next_lsn,
            buf: Vec::with_capacity(1 << 20),
        };
        let handle = std::thread::Builder::new()
            .name("sonde-wal".into())
            .spawn(move || writer.run(rx))
            .map_err(io_err(Path::new("<thread>")))?;
        Ok((
            Wal {
                tx: Mutex::new(Some(tx)),
                shared,
                writer: Mutex::new(Some(handle)),
            },
            records,
        ))
    }

    /// Queue `records` for a durable append. `done` runs on the writer thread once they are
    /// fsync'd (with their LSN range) or have failed (and nothing of them was kept).
    pub fn append(&self, records: Vec<Vec<u8>>, done: Completion) {
        if self.shared.poisoned.load(Ordering::Acquire) {
            done(Err(WalError::Poisoned));
            return;
        }
        let bytes: u64 = records.iter().map(|r| (r.len() + HEADER) as u64).sum();
        self.shared.pending_bytes.fetch_add(bytes, Ordering::AcqRel);
        let req = Request {
            records,
            bytes,
            done,
        };
        let sent = match self.tx.lock().as_ref() {
            Some(tx) => tx.send(req).map_err(|e| e.0),
            None => Err(req),
        };
        if let Err(req) = sent {
            self.shared
                .pending_bytes
                .fetch_sub(req.bytes, Ordering::AcqRel);
            (req.done)(Err(WalError::Closed));
        }
    }

    /// Bytes queued but not yet durable: the backpressure signal.
    pub fn pending_bytes(&self) -> u64 {
        self.shared.pending_bytes.load(Ordering::Acquire)
    }

    /// Whether an unrecoverable write error has disabled the WAL.
    pub fn is_poisoned(&self) -> bool {
        self.shared.poisoned.load(Ordering::Acquire)
    }

    /// (fsync count, total fsync time in µs) since open.
    pub fn fsync_stats(&self) -> (u64, u64) {
        (
            self.shared.fsyncs.load(Ordering::Relaxed),
            self.shared.fsync_micros_total.load(Ordering::Relaxed),
        )
    }

    /// fsync latency histogram since open.
    pub fn fsync_histogram(&self) -> FsyncHistogram {
        FsyncHistogram {
            counts: self
                .shared
                .fsync_buckets
                .iter()
                .map(|c| c.load(Ordering::Relaxed))
                .collect(),
            sum_micros: self.shared.fsync_micros_total.load(Ordering::Relaxed),
        }
    }

    /// Retire every closed segment whose records all have LSN ≤ `upto`: kept as a spare
    /// for reuse while fewer than [`MAX_SPARES`] wait, deleted otherwise.
    pub fn trim(&self, upto: u64) -> Result<usize, WalError> {
        // Segment i holds LSNs [segs[i], segs[i+1]); the last one is active and kept.
        // Renamed or unlinked after the lock is released: the writer takes it to rotate.
        let doomed: Vec<u64> = {
            let mut segs = self.shared.segments.lock();
            let n = segs
                .iter()
                .skip(1)
                .take_while(|&&next| next <= upto + 1)
                .count();
            segs.drain(..n).collect()
        };
        for (i, first) in doomed.iter().enumerate() {
            let path = segment_path(&self.shared.dir, *first);
            // No directory fsync: a rename lost in a crash leaves a segment whose records
            // are all at or below `upto`, which replay skips.
            let retired = if self.shared.spares.lock().len() < MAX_SPARES {
                let spare = spare_path(&self.shared.dir, *first);
                fs::rename(&path, &spare).map(|()| self.shared.spares.lock().push(spare))
            } else {
                fs::remove_file(&path)
            };
            match retired {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => {
                    // Keep the segments not deleted, so a later trim tries again.
                    let mut segs = self.shared.segments.lock();
                    for (j, lsn) in doomed[i..].iter().enumerate() {
                        segs.insert(j, *lsn);
                    }
                    return Err(io_err(&path)(e));
                }
            }
        }
        Ok(doomed.len())
    }

    /// Number of segment files on disk.
    pub fn segment_count(&self) -> usize {
        self.shared.segments.lock().len()
    }

    /// Finish queued appends and stop the writer thread.
    pub fn close(&self) {
        self.tx.lock().take();
        if let Some(h) = self.writer.lock().take() {
            let _ = h.join();
        }
    }
}

impl Drop for Wal {
    fn drop(&mut self) {
        self.close();
    }
}

struct Writer {
    config: WalConfig,
    shared: Arc<Shared>,
    file: File,
    path: PathBuf,
    len: u64,
    next_lsn: u64,
    buf: Vec<u8>,
}

/// A completion with the outcome it is called with.
type Done = (Completion, Result<RangeInclusive<u64>, WalError>);

/// Runs completions in order.
fn complete(done: Vec<Done>) {
    for (done, result) in done {
        done(result);
    }
}

/// Upper bound on one group: keeps a single write and the memory it needs bounded.
const GROUP_BYTES: u64 = 16 * 1024 * 1024;

impl Writer {
    fn run(&mut self, rx: mpsc::Receiver<Request>) {
        (self.config.thread_start)();
        // Completions (the caller's apply and ack) run on their own thread, in commit order,
        // so the next group's write and fsync overlap them instead of waiting behind them.
        let (done_tx, done_rx) = mpsc::channel::<Vec<Done>>();
        let thread_start = self.config.thread_start;
        let completer = std::thread::Builder::new()
            .name("sonde-wal-done".into())
            .spawn(move || {
                thread_start();
                while let Ok(batch) = done_rx.recv() {
                    complete(batch);
                }
            });
        let completer = match completer {
            Ok(handle) => Some((done_tx, handle)),
            Err(e) => {
                tracing::warn!(error = %e, "no WAL completion thread; completing inline");
                None
            }
        };
        while let Ok(first) = rx.recv() {
            let mut group = vec![first];
            let mut bytes = group[0].bytes;
            while bytes < GROUP_BYTES {
                match rx.try_recv() {
                    Ok(r) => {
                        bytes += r.bytes;
                        group.push(r);
                    }
                    Err(_) => break,
                }
            }
            let done = self.commit(group, bytes);
            match &completer {
                Some((tx, _)) => {
                    if let Err(mpsc::SendError(done)) = tx.send(done) {
                        complete(done);
                    }
                }
                None => complete(done),
            }
        }
        let _ = self.file.sync_data();
        if let Some((tx, handle)) = completer {
            drop(tx);
            let _ = handle.join();
        }
    }

    /// Writes and fsyncs `group`; returns each request's completion with its outcome.
    fn commit(&mut self, group: Vec<Request>, bytes: u64) -> Vec<Done> {
        let start_lsn = self.next_lsn;
        let outcome = if self.shared.poisoned.load(Ordering::Acquire) {
            Err(WalError::Poisoned)
        } else {
            self.write_group(&group)
        };
        self.shared.pending_bytes.fetch_sub(bytes, Ordering::AcqRel);
        let mut done = Vec::with_capacity(group.len());
        match outcome {
            Ok(()) => {
                let mut lsn = start_lsn;
                for req in group {
                    let n = req.records.len() as u64;
                    // An empty append gets an empty range just below the next LSN.
                    let range = lsn..=(lsn + n).saturating_sub(1);
                    lsn += n;
                    done.push((req.done, Ok(range)));
                }
                self.next_lsn = lsn;
                if self.len >= self.config.segment_bytes
                    && let Err(e) = self.rotate()
                {
                    tracing::error!(error = %e, "WAL segment rotation failed; continuing in the current segment");
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "WAL append failed");
                let msg = e.to_string();
                let mut first = Some(e);
                for req in group {
                    let err = first.take().unwrap_or_else(|| WalError::Io {
                        path: self.path.clone(),
                        source: io::Error::other(msg.clone()),
                    });
                    done.push((req.done, Err(err)));
                }
            }
        }
        done
    }

    fn write_group(&mut self, group: &[Request]) -> Result<(), WalError> {
        self.buf.clear();
        let mut lsn = self.next_lsn;
        for req in group {
            for rec in &req.records {
                let len = rec.len() as u32;
                let mut h = crc32fast::Hasher::new();
                h.update(&lsn.to_le_bytes());
                h.update(rec);
                self.buf.extend_from_slice(&len.to_le_bytes());
                self.buf.extend_from_slice(&h.finalize().to_le_bytes());
                self.buf.extend_from_slice(&lsn.to_le_bytes());
                self.buf.extend_from_slice(rec);
                lsn += 1;
            }
        }
        let records_len = self.buf.len() as u64;
        self.buf.extend_from_slice(&END_MARK);
        let before = self.len;
        let written = self.file.write_all_at(&self.buf, before).and_then(|_| {
            if self.config.fsync {
                let t = std::time::Instant::now();
                let r = self.file.sync_data();
                let micros = t.elapsed().as_micros() as u64;
                self.shared
                    .fsync_micros_total
                    .fetch_add(micros, Ordering::Relaxed);
                self.shared.fsyncs.fetch_add(1, Ordering::Relaxed);
                let b = FSYNC_BOUNDS_MICROS.partition_point(|x| *x < micros);
                self.shared.fsync_buckets[b].fetch_add(1, Ordering::Relaxed);
                r
            } else {
                Ok(())
            }
        });
        match written {
            Ok(()) => {
                self.len += records_len;
                Ok(())
            }
            Err(source) => {
                // Roll the file back so a later successful write does not follow garbage.
                let rolled_back = self
                    .file
                    .set_len(before)
                    .and_then(|_| self.file.sync_data());
                if rolled_back.is_err() {
                    self.shared.poisoned.store(true, Ordering::Release);
                }
                Err(WalError::Io {
                    path: self.path.clone(),
                    source,
                })
            }
        }
    }

    /// Start the next segment in a spare when there is one, else in a new file.
    fn rotate(&mut self) -> Result<(), WalError> {
        let path = segment_path(&self.config.dir, self.next_lsn);
        let spare = self.shared.spares.lock().pop();
        if let Some(spare) = spare
            && let Err(e) = fs::rename(&spare, &path)
        {
            tracing::warn!(error = %e, spare = %spare.display(), "reusing a WAL spare failed; starting a new file");
        }
        let file = open_segment(&path)?;
        // Before any record goes in: replay must find the segment under its new name.
        sync_dir(&self.config.dir)?;
        self.shared.segments.lock().push(self.next_lsn);
        self.file = file;
        self.path = path;
        self.len = 0;
        Ok(())
    }
}

#[cfg(test)]
mod tests;
