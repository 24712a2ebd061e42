//! The store: dedup, WAL, in-memory Arrow buffer, flush to files, compaction and SQL.

use std::collections::{BTreeMap, HashSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use datafusion::arrow::record_batch::RecordBatch;
use parking_lot::{Condvar, Mutex, RwLock};
use sonde_latency::{RollupConfig, Rollups};
use sonde_model::Event;
use sonde_wal::{Wal, WalConfig};

use crate::StoreError;
use crate::codec::{self, QuarantineEntry, ReplayEntry, SpanRecord, WalEntry};
use crate::compaction;
use crate::dedup::{DedupIndex, Seen};
use crate::files;
use crate::live::LiveSums;
use crate::manifest::{FileEntry, Manifest};
use crate::priority;
use crate::query::{self, QueryLimits, QueryResult, Snapshot};
use crate::rollups;
use crate::tables::{Table, TableBuilders};

const HOUR_MS: i64 = 3_600_000;
/// Rows per sealed in-memory batch: 8,192, but 2,048 decisions, whose rows carry their
/// items (~4 KB each in Arrow). The builder being filled is not counted in the buffer's
/// bytes and keeps its last batch's capacity, so its size is memory on top of the budget.
fn seal_rows(t: Table) -> usize {
    match t {
        Table::Decisions => 2048,
        _ => 8192,
    }
}
/// Flushed files waiting for compaction past which the compactor leaves the idle class: on
/// saturated cores it would get no CPU, and they would pile up without bound (a full-speed
/// ingest bench flushes about two a second; a query over 68 of them took 1.2-1.3× as long).
const STARVED_FLUSH_FILES: usize = 256;
/// Dedup runs past which they merge at nice 10 rather than in the idle class: a steady
/// state holds up to three per size tier, about a dozen.
const STARVED_DEDUP_RUNS: usize = 16;
/// How long replaced files stay on disk for queries that still read them.
const DELETE_GRACE: Duration = Duration::from_secs(60);

/// Store settings.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// Root of the data directory.
    pub data_dir: PathBuf,
    /// Exact dedup window, in hours of receive time.
    pub dedup_window_hours: u32,
    /// Flush the buffer to files at least this often.
    pub flush_interval: Duration,
    /// Flush early once this many rows are buffered.
    pub flush_rows: usize,
    /// Flush early once sealed in-memory batches take this many bytes.
    pub flush_bytes: usize,
    /// fsync the WAL before acknowledging (only benchmarks of the non-durable path turn it off).
    pub fsync: bool,
    /// Refuse writes (429) while this many bytes wait for the WAL.
    pub max_pending_bytes: u64,
    /// Refuse writes (429) while this many rows are buffered (the flusher is behind).
    pub max_buffered_rows: usize,
    /// Refuse writes (429) while buffered batches take this many bytes.
    pub max_buffered_bytes: usize,
    /// How long [`Store::admit_within`] holds a write while the buffer or the WAL queue is
    /// full, waiting for a flush to make room, before the caller answers 429.
    pub admit_wait: Duration,
    /// An hour still being written merges its flushed files once it has this many (closed
    /// hours merge at 2, and convert a lone flushed file).
    pub compact_min_files: usize,
    /// WAL segment size.
    pub wal_segment_bytes: u64,
    /// Latency rollups (caps, retention, SLO thresholds counted exactly).
    pub rollups: RollupConfig,
}

impl StoreConfig {
    /// Defaults for a data directory.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        StoreConfig {
            data_dir: data_dir.into(),
            dedup_window_hours: 24,
            flush_interval: Duration::from_secs(10),
            flush_rows: 1_000_000,
            flush_bytes: 32 * 1024 * 1024,
            fsync: true,
            max_pending_bytes: 64 * 1024 * 1024,
            max_buffered_rows: 4_000_000,
            // Three flushes' worth. At 128 MB, a full buffer while compaction ran (which
            // adds ~100 MB) took the ingest bench's peak RSS to 502-535 MB.
            max_buffered_bytes: 96 * 1024 * 1024,
            // A flush of 32 MB takes about a second on a busy 2-core machine: waiting a
            // fraction of that lets most writes through instead of turning them away.
            admit_wait: Duration::from_millis(250),
            compact_min_files: 8,
            wal_segment_bytes: 64 * 1024 * 1024,
            rollups: RollupConfig::default(),
        }
    }
}

/// What a write did with each event.
#[derive(Debug, Clone, PartialEq)]
pub struct WriteOutcome {
    /// Per accepted-by-validation event, in order: new, duplicate or conflicting duplicate.
    pub seen: Vec<Seen>,
    /// Ids given to the quarantined events, in order.
    pub quarantine_ids: Vec<String>,
    /// Per span, in order: new or duplicate.
    pub span_seen: Vec<Seen>,
    /// Where the write's time went.
    pub timings: WriteTimings,
}

/// The stages of one durable write, for the collector's own latency metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct WriteTimings {
    /// Encoding the records and checking their ids.
    pub prepare: Duration,
    /// From queueing to the WAL until its group was written and fsync'd and its completion
    /// began (group-commit wait, write, fsync, and earlier groups' completions).
    pub durable: Duration,
    /// Adding the rows to the in-memory buffer (and the live sums and rollups).
    pub apply: Duration,
    /// From the completion until the writing task ran again (scheduling delay).
    pub resume: Duration,
}

/// A write: validated events, rejected events for the quarantine, replay outcomes.
#[derive(Debug, Default)]
pub struct WriteBatch {
    /// Validated events.
    pub events: Vec<Event>,
    /// Rejected events.
    pub quarantine: Vec<QuarantineEntry>,
    /// Quarantine replay outcomes.
    pub replays: Vec<ReplayEntry>,
    /// OpenTelemetry spans.
    pub spans: Vec<SpanRecord>,
}

/// Counters since start.
#[derive(Debug, Default)]
pub struct Counters {
    /// Events stored.
    pub accepted: AtomicU64,
    /// Retries of stored events.
    pub duplicates: AtomicU64,
    /// Reused ids with different content.
    pub conflicts: AtomicU64,
    /// Events quarantined.
    pub quarantined: AtomicU64,
    /// Spans stored.
    pub spans: AtomicU64,
    /// Flushes of the buffer to files.
    pub flushes: AtomicU64,
    /// Partition compactions.
    pub compactions: AtomicU64,
    /// Duplicate rows removed by compaction.
    pub compaction_dropped: AtomicU64,
}

struct Mem {
    builders: TableBuilders,
    sealed: Vec<Vec<RecordBatch>>,
    flushing: Vec<Vec<RecordBatch>>,
    rows: usize,
    /// Memory of sealed and flushing batches.
    bytes: usize,
    /// Of `rows` and `bytes`, those of the flush under way.
    flushing_rows: usize,
    flushing_bytes: usize,
    applied_lsn: u64,
}

impl Mem {
    fn new() -> Mem {
        Mem {
            builders: TableBuilders::default(),
            sealed: vec![Vec::new(); Table::ALL.len()],
            flushing: vec![Vec::new(); Table::ALL.len()],
            rows: 0,
            bytes: 0,
            flushing_rows: 0,
            flushing_bytes: 0,
            applied_lsn: 0,
        }
    }

    /// Whether rows not yet being flushed call for a flush. Rows of the flush under way
    /// do not count: they woke the flusher again while it wrote them, and it ran a second,
    /// small flush right after each (measured: one of 3,000-7,000 rows after every one of
    /// ~27,000, at 50,000 events/s).
    fn flush_due(&self, config: &StoreConfig) -> bool {
        self.rows.saturating_sub(self.flushing_rows) >= config.flush_rows
            || self.bytes.saturating_sub(self.flushing_bytes) >= config.flush_bytes
    }

    fn seal(&mut self, force: bool) -> Result<(), StoreError> {
        for t in Table::ALL {
            let b = self.builders.get_mut(t);
            if (force && !b.is_empty()) || b.len() >= seal_rows(t) {
                let batch = b.finish()?;
                self.bytes += batch.get_array_memory_size();
                self.sealed[t as usize].push(batch);
            }
        }
        Ok(())
    }

    /// Buffer an entry's rows; a decision also goes into the latency rollups, and events go
    /// into the live sums when they are on.
    fn apply(
        &mut self,
        lsn: u64,
        entry: &WalEntry,
        rollups: &mut Rollups,
        live: Option<&mut LiveSums>,
        now: i64,
    ) {
        if let Some(live) = live {
            live.feed(entry, now);
        }
        self.rows += match entry {
            WalEntry::Event(e, _) => {
                if let Some(o) = rollups::observation(e) {
                    rollups.observe(&o, now);
                }
                self.builders.push_event(e);
                1
            }
            WalEntry::Quarantine(q) => {
                self.builders.push_quarantine(&format!("q{lsn}"), q);
                1
            }
            WalEntry::Replay(r) => {
                self.builders.push_replay(r);
                1
            }
            WalEntry::Span(sp, _) => {
                if let (Some(component), Some(surface)) = (&sp.component, &sp.surface) {
                    rollups.observe_component(
                        &rollups::span_key(sp, surface),
                        component,
                        sp.duration_ms(),
                        sp.start_ms(),
                        now,
                    );
                }
                self.builders.push_span(sp);
                1
            }
        };
        self.applied_lsn = self.applied_lsn.max(lsn);
    }
}

struct Inner {
    config: StoreConfig,
    wal: Option<Wal>,
    dedup: Option<DedupIndex>,
    ingest_lock: Mutex<()>,
    mem: RwLock<Mem>,
    /// Locked inside `mem` where both are held.
    rollups: Mutex<Rollups>,
    /// The live sums, once started; locked inside `mem` where both are held.
    live: Mutex<Option<LiveSums>>,
    manifest: RwLock<Arc<Manifest>>,
    counters: Counters,
    wake: (Mutex<bool>, Condvar),
    compact_wake: (Mutex<bool>, Condvar),
    /// Wakes the dedup merger (after a spill, or to stop).
    dedup_wake: (Mutex<bool>, Condvar),
    /// Serializes manifest read-modify-write between the flusher and the compactor.
    commit_lock: Mutex<()>,
    /// One compaction at a time (the background compactor, or `Store::compact`).
    compact_lock: Mutex<()>,
    /// One flush at a time: a second one would write the batches the first is writing.
    flush_lock: Mutex<()>,
    /// Next table file sequence number, shared by flushes and compactions.
    next_seq: AtomicU64,
    stopping: AtomicBool,
    doomed: Mutex<Vec<(Instant, PathBuf)>>,
    /// Woken when a flush frees buffer space, for writes waiting in `admit_within`.
    room: tokio::sync::Notify,
}

/// Rollups of the persisted minutes still kept in memory.
fn open_rollups(config: &StoreConfig, manifest: &Manifest) -> Result<Rollups, StoreError> {
    let now = now_ms();
    let mut r = Rollups::new(config.rollups.clone());
    let rows = rollups::load(
        &config.data_dir,
        manifest,
        now - config.rollups.hour_retention_ms,
    )?;
    r.load(&rows, now);
    r.maintain(now);
    Ok(r)
}

/// `rollups_1m` rows as a record batch (`None` when there are none).
fn rollup_batch(rows: &[sonde_latency::RollupRow]) -> Result<Option<RecordBatch>, StoreError> {
    if rows.is_empty() {
        return Ok(None);
    }
    let mut b = crate::tables::RowBuilder::new(Table::Rollups1m);
    for r in rows {
        b.push_rollup(r);
    }
    b.finish().map(Some)
}

/// The embedded event store. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
    /// The flusher and compactor threads.
    workers: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

fn hour_of(ms: i64) -> u32 {
    ms.div_euclid(HOUR_MS).max(0) as u32
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Flush (IPC) files written under an older schema of their table. An IPC scan takes a
/// file's columns by position, so before queries read these they are rewritten with the
/// current schema (new columns null): to Parquet by a writable store, into memory by a
/// read-only one.
fn stale_ipc(dir: &Path, manifest: &Manifest) -> Result<Vec<(Table, FileEntry)>, StoreError> {
    let mut stale = Vec::new();
    for f in manifest.files.iter().filter(|f| files::is_ipc(f)) {
        let Some(t) = Table::from_name(&f.table) else {
            continue;
        };
        if !files::has_current_schema(&dir.join(&f.path), t)? {
            stale.push((t, f.clone()));
        }
    }
    Ok(stale)
}

/// Delete table files under `tables/` that the manifest does not name: leftovers of a
/// flush or compaction that crashed before its manifest commit.
fn remove_orphans(data_dir: &Path, manifest: &Manifest) -> Result<usize, StoreError> {
    let named: std::collections::HashSet<PathBuf> = manifest
        .files
        .iter()
        .map(|f| data_dir.join(&f.path))
        .collect();
    let mut removed = 0;
    let mut stack = vec![data_dir.join("tables")];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if files::FileFormat::of(&path).is_some() && !named.contains(&path) {
                fs::remove_file(&path).map_err(|e| StoreError::Io {
                    path: path.clone(),
                    source: e,
                })?;
                removed += 1;
            }
        }
    }
    Ok(removed)
}

impl Store {
    /// Open the store for reading and writing, replaying the WAL, and start the flusher and
    /// the compactor (a thread of its own, so a long merge never holds up flushes).
    pub fn open(config: StoreConfig) -> Result<Store, StoreError> {
        let dir = config.data_dir.clone();
        fs::create_dir_all(&dir).map_err(|e| StoreError::Io {
            path: dir.clone(),
            source: e,
        })?;
        let manifest = Manifest::load(&dir)?;
        let orphans = remove_orphans(&dir, &manifest)?;
        if orphans > 0 {
            tracing::warn!(
                files = orphans,
                "removed table files left by an interrupted flush or compaction"
            );
        }
        let now_hour = hour_of(now_ms());
        let dedup = DedupIndex::open(&dir.join("dedup"), config.dedup_window_hours, now_hour)?;
        let mut wal_config = WalConfig::new(dir.join("wal"));
        wal_config.thread_start = priority::latency_sensitive;
        wal_config.fsync = config.fsync;
        wal_config.segment_bytes = config.wal_segment_bytes;
        let (wal, records) = Wal::open(wal_config, manifest.flushed_lsn)?;
        let mut rollups = open_rollups(&config, &manifest)?;
        let mut mem = Mem::new();
        mem.applied_lsn = manifest.flushed_lsn;
        let replayed = records.len();
        let now = now_ms();
        for r in records {
            let entry = codec::decode(&r.payload)?;
            match &entry {
                WalEntry::Event(e, content) => dedup.insert(
                    codec::id_hash(&e.data.event_id),
                    *content,
                    hour_of(e.meta.received_at),
                ),
                WalEntry::Span(sp, content) => {
                    dedup.insert(codec::span_hash(sp), *content, hour_of(sp.received_at))
                }
                _ => {}
            }
            mem.apply(r.lsn, &entry, &mut rollups, None, now);
        }
        mem.seal(false)?;
        tracing::info!(
            data_dir = %dir.display(),
            replayed,
            files = manifest.files.len(),
            flushed_lsn = manifest.flushed_lsn,
            "store opened"
        );
        let stale = stale_ipc(&dir, &manifest)?;
        let inner = Arc::new(Inner::new(
            config,
            Some(wal),
            Some(dedup),
            mem,
            rollups,
            manifest,
        ));
        if !stale.is_empty() {
            tracing::info!(
                files = stale.len(),
                "rewriting flush files of an older schema"
            );
            inner.merge(
                stale
                    .into_iter()
                    .map(|(t, f)| (t, f.hour, vec![f]))
                    .collect(),
            )?;
        }
        let mut workers = Vec::new();
        for (name, run) in [
            ("sonde-flush", Inner::flush_loop as fn(Arc<Inner>)),
            ("sonde-compact", Inner::compact_loop),
            ("sonde-dedup", Inner::dedup_loop),
        ] {
            let worker = inner.clone();
            let handle = std::thread::Builder::new()
                .name(name.into())
                .spawn(move || {
                    // Spawned by whatever thread opens the store, maybe a request worker.
                    priority::bulk();
                    run(worker)
                })
                .map_err(|e| StoreError::Io {
                    path: dir.clone(),
                    source: e,
                })?;
            workers.push(handle);
        }
        Ok(Store {
            inner,
            workers: Arc::new(Mutex::new(workers)),
        })
    }

    /// Open a data directory for queries only: committed files plus the WAL's unflushed
    /// records, without taking the WAL over. Works on a stopped server's data.
    pub fn open_read_only(data_dir: impl Into<PathBuf>) -> Result<Store, StoreError> {
        let config = StoreConfig::new(data_dir);
        let dir = config.data_dir.clone();
        if !dir.join("manifest.json").exists() && !dir.join("wal").exists() {
            return Err(StoreError::NotAStore(dir));
        }
        let mut manifest = Manifest::load(&dir)?;
        // Rollup rows are read by column name, stale files or not.
        let mut rollups = open_rollups(&config, &manifest)?;
        let mut mem = Mem::new();
        let stale = stale_ipc(&dir, &manifest)?;
        for (t, f) in &stale {
            for batch in files::read_batches(&dir.join(&f.path))? {
                let batch = files::with_schema(batch?, *t)?;
                mem.rows += batch.num_rows();
                mem.bytes += batch.get_array_memory_size();
                mem.sealed[*t as usize].push(batch);
            }
        }
        manifest
            .files
            .retain(|f| !stale.iter().any(|(_, s)| s.path == f.path));
        let now = now_ms();
        for r in sonde_wal::read_records(&dir.join("wal"), manifest.flushed_lsn)? {
            mem.apply(r.lsn, &codec::decode(&r.payload)?, &mut rollups, None, now);
        }
        mem.seal(true)?;
        Ok(Store {
            inner: Arc::new(Inner::new(config, None, None, mem, rollups, manifest)),
            workers: Arc::new(Mutex::new(Vec::new())),
        })
    }

    /// Whether a write would be taken now: callers check this before reading and parsing a
    /// request, so an overloaded server answers 429 without spending CPU on the body.
    pub fn admit(&self) -> Result<(), StoreError> {
        let inner = &self.inner;
        let Some(wal) = &inner.wal else {
            return Err(StoreError::ReadOnly);
        };
        if inner.stopping.load(Ordering::Acquire) {
            return Err(StoreError::ShuttingDown);
        }
        if wal.is_poisoned() {
            return Err(StoreError::Unavailable("the write-ahead log failed".into()));
        }
        let mem = inner.mem.read();
        if wal.pending_bytes() > inner.config.max_pending_bytes
            || mem.rows > inner.config.max_buffered_rows
            || mem.bytes > inner.config.max_buffered_bytes
        {
            return Err(StoreError::Overloaded);
        }
        Ok(())
    }

    /// [`Store::admit`], but while the store is only overloaded, wait up to
    /// `admit_wait` for room (each flush that frees buffer space wakes the waiters) before
    /// giving up. A waiting request has not been read yet, so it holds no memory beyond its
    /// connection; a client that backs off after a 429 would instead leave the cores idle
    /// until it retries.
    pub async fn admit_within(&self) -> Result<(), StoreError> {
        let deadline = tokio::time::Instant::now() + self.inner.config.admit_wait;
        loop {
            // Registered before the check, so a flush finishing in between still wakes us.
            let room = self.inner.room.notified();
            match self.admit() {
                Err(StoreError::Overloaded) if tokio::time::Instant::now() < deadline => {
                    // The WAL queue drains without a flush: look again every 10 ms too.
                    let recheck = tokio::time::Instant::now() + Duration::from_millis(10);
                    let _ = tokio::time::timeout_at(deadline.min(recheck), room).await;
                }
                other => return other,
            }
        }
    }

    /// Durably store a batch. Resolves once every record is fsync'd and visible to SQL.
    /// Nothing of the batch is stored when this fails.
    pub async fn write(&self, batch: WriteBatch) -> Result<WriteOutcome, StoreError> {
        self.admit()?;
        let started = Instant::now();
        let inner = &self.inner;
        let (Some(wal), Some(dedup)) = (&inner.wal, &inner.dedup) else {
            return Err(StoreError::ReadOnly);
        };
        let mut records = Vec::with_capacity(batch.events.len() + batch.quarantine.len());
        let mut encoded = Vec::with_capacity(batch.events.len());
        for e in &batch.events {
            encoded.push(codec::encode_event(e)?);
        }
        let (tx, rx) = tokio::sync::oneshot::channel();
        let mut seen = Vec::with_capacity(batch.events.len());
        let mut span_seen = Vec::with_capacity(batch.spans.len());
        {
            // Check-and-insert and enqueue under one lock: two deliveries of an id in flight
            // at once cannot both be taken as new.
            let _guard = inner.ingest_lock.lock();
            let mut fresh_ids = Vec::with_capacity(batch.events.len());
            let mut events = Vec::with_capacity(
                batch.events.len()
                    + batch.spans.len()
                    + batch.quarantine.len()
                    + batch.replays.len(),
            );
            for (e, (bytes, content)) in batch.events.into_iter().zip(encoded) {
                let id = codec::id_hash(&e.data.event_id);
                let s = dedup.check_and_insert(id, content, hour_of(e.meta.received_at))?;
                if s == Seen::New {
                    fresh_ids.push(id);
                    records.push(bytes);
                    events.push(WalEntry::Event(Box::new(e), content));
                }
                seen.push(s);
            }
            let mut spans = Vec::new();
            for sp in batch.spans {
                let (bytes, content) = codec::encode_span(&sp)?;
                let id = codec::span_hash(&sp);
                let s = dedup.check_and_insert(id, content, hour_of(sp.received_at))?;
                if s == Seen::New {
                    fresh_ids.push(id);
                    records.push(bytes);
                    spans.push(WalEntry::Span(Box::new(sp), content));
                }
                span_seen.push(s);
            }
            for q in &batch.quarantine {
                records.push(codec::encode_quarantine(q)?);
            }
            for r in &batch.replays {
                records.push(codec::encode_replay(r)?);
            }
            let n_events = (events.len() + spans.len()) as u64;
            let n_quarantine = batch.quarantine.len() as u64;
            let mut entries = events;
            entries.extend(spans);
            entries.extend(batch.quarantine.into_iter().map(WalEntry::Quarantine));
            entries.extend(batch.replays.into_iter().map(WalEntry::Replay));
            let worker = inner.clone();
            let queued = Instant::now();
            wal.append(
                records,
                Box::new(move |res| {
                    let durable_at = Instant::now();
                    let out = match res {
                        Ok(range) => {
                            if let Some(d) = &worker.dedup {
                                d.confirm(&fresh_ids);
                            }
                            let first = *range.start();
                            let qids = {
                                let mut mem = worker.mem.write();
                                let mut rollups = worker.rollups.lock();
                                let mut live = worker.live.lock();
                                let now = now_ms();
                                for (i, entry) in entries.iter().enumerate() {
                                    mem.apply(
                                        first + i as u64,
                                        entry,
                                        &mut rollups,
                                        live.as_mut(),
                                        now,
                                    );
                                }
                                drop(live);
                                drop(rollups);
                                if let Err(e) = mem.seal(false) {
                                    tracing::error!(error = %e, "sealing in-memory batch failed");
                                }
                                if mem.flush_due(&worker.config) {
                                    worker.wake_flusher();
                                }
                                (0..n_quarantine)
                                    .map(|j| format!("q{}", first + n_events + j))
                                    .collect::<Vec<_>>()
                            };
                            Ok(qids)
                        }
                        Err(e) => {
                            if let Some(d) = &worker.dedup {
                                d.remove(&fresh_ids);
                            }
                            Err(StoreError::Unavailable(e.to_string()))
                        }
                    };
                    // The entries go back to the request's task to be freed there: off the
                    // serial completion thread, and by the thread that allocated them
                    // (mimalloc's local free path).
                    let _ = tx.send((out, queued, durable_at, Instant::now(), entries));
                }),
            );
        }
        let (out, queued, durable_at, applied_at, entries) = rx
            .await
            .map_err(|_| StoreError::Unavailable("the write-ahead log stopped".into()))?;
        drop(entries);
        let timings = WriteTimings {
            prepare: queued.duration_since(started),
            durable: durable_at.duration_since(queued),
            apply: applied_at.duration_since(durable_at),
            resume: applied_at.elapsed(),
        };
        let quarantine_ids = out?;
        let c = &inner.counters;
        for s in &seen {
            match s {
                Seen::New => c.accepted.fetch_add(1, Ordering::Relaxed),
                Seen::Duplicate => c.duplicates.fetch_add(1, Ordering::Relaxed),
                Seen::Conflict => c.conflicts.fetch_add(1, Ordering::Relaxed),
            };
        }
        c.quarantined
            .fetch_add(quarantine_ids.len() as u64, Ordering::Relaxed);
        let new_spans = span_seen.iter().filter(|s| **s == Seen::New).count();
        c.spans.fetch_add(new_spans as u64, Ordering::Relaxed);
        Ok(WriteOutcome {
            seen,
            quarantine_ids,
            span_seen,
            timings,
        })
    }

    /// A consistent snapshot of files and buffered rows.
    pub fn snapshot(&self) -> Result<Snapshot, StoreError> {
        self.snapshot_of(&mut self.inner.mem.write())
    }

    fn snapshot_of(&self, mem: &mut Mem) -> Result<Snapshot, StoreError> {
        mem.seal(true)?;
        let pending = rollup_batch(&self.inner.rollups.lock().pending_rows())?;
        let manifest = self.inner.manifest.read().clone();
        let files = Snapshot::files_of(&manifest, &self.inner.config.data_dir);
        let batches = Table::ALL
            .iter()
            .map(|&t| {
                let i = t as usize;
                let mut v = mem.flushing[i].clone();
                v.extend(mem.sealed[i].iter().cloned());
                if t == Table::Rollups1m {
                    v.extend(pending.clone());
                }
                (t, v)
            })
            .collect();
        Ok(Snapshot {
            files,
            mem: batches,
        })
    }

    /// Run read-only SQL.
    pub async fn query(&self, sql: &str, limits: QueryLimits) -> Result<QueryResult, StoreError> {
        query::run(self.snapshot()?, sql, limits).await
    }

    /// Run read-only `sql` and hand every output batch to `visit`, with no row limit.
    pub async fn scan(
        &self,
        sql: &str,
        timeout: std::time::Duration,
        visit: impl FnMut(&datafusion::arrow::record_batch::RecordBatch) -> Result<(), StoreError>
        + Send,
    ) -> Result<(), StoreError> {
        query::scan(self.snapshot()?, sql, timeout, visit).await
    }

    /// WAL fsync latencies since open (`None` read-only).
    pub fn fsync_histogram(&self) -> Option<sonde_wal::FsyncHistogram> {
        self.inner.wal.as_ref().map(|w| w.fsync_histogram())
    }

    /// Turn the live sums on and return a snapshot of everything stored before: entries
    /// applied from now on are fed to them, the snapshot holds the rest, so loading the
    /// snapshot into them counts every event once.
    pub fn start_live(&self, sums: LiveSums) -> Result<Snapshot, StoreError> {
        let mut mem = self.inner.mem.write();
        *self.inner.live.lock() = Some(sums);
        self.snapshot_of(&mut mem)
    }

    /// Work on the live sums (`None` until started).
    pub fn with_live<R>(&self, f: impl FnOnce(&mut LiveSums) -> R) -> Option<R> {
        self.inner.live.lock().as_mut().map(f)
    }

    /// Run read-only `sql` over a snapshot taken earlier, like [`Store::scan`].
    pub async fn scan_snapshot(
        snapshot: Snapshot,
        sql: &str,
        timeout: std::time::Duration,
        visit: impl FnMut(&datafusion::arrow::record_batch::RecordBatch) -> Result<(), StoreError>
        + Send,
    ) -> Result<(), StoreError> {
        query::scan(snapshot, sql, timeout, visit).await
    }

    /// Read the live latency rollups.
    pub fn with_rollups<R>(&self, f: impl FnOnce(&Rollups) -> R) -> R {
        f(&self.inner.rollups.lock())
    }

    /// Counters since start.
    pub fn counters(&self) -> &Counters {
        &self.inner.counters
    }

    /// The committed manifest.
    pub fn manifest(&self) -> Arc<Manifest> {
        self.inner.manifest.read().clone()
    }

    /// Rows buffered in memory (not yet in committed files).
    pub fn buffered_rows(&self) -> usize {
        self.inner.mem.read().rows
    }

    /// Bytes of sealed in-memory batches.
    pub fn buffered_bytes(&self) -> usize {
        self.inner.mem.read().bytes
    }

    /// Bytes waiting for the WAL.
    pub fn wal_pending_bytes(&self) -> u64 {
        self.inner
            .wal
            .as_ref()
            .map(|w| w.pending_bytes())
            .unwrap_or(0)
    }

    /// Whether the store can take writes right now.
    pub fn is_writable(&self) -> bool {
        self.inner.wal.as_ref().is_some_and(|w| !w.is_poisoned())
            && !self.inner.stopping.load(Ordering::Acquire)
    }

    /// Flush buffered rows to files now (tests, shutdown).
    pub fn flush(&self) -> Result<(), StoreError> {
        self.inner.flush()
    }

    /// Dedup run files on disk; the `sonde-dedup` thread merges them after spills.
    pub fn dedup_runs(&self) -> usize {
        self.inner.dedup.as_ref().map_or(0, |d| d.run_count())
    }

    /// Compact partitions now (tests).
    pub fn compact(&self) -> Result<(), StoreError> {
        self.inner.compact(true, false)
    }

    /// Stop taking writes, flush everything, close the WAL. Idempotent.
    pub fn close(&self) -> Result<(), StoreError> {
        let inner = &self.inner;
        inner.stopping.store(true, Ordering::Release);
        inner.wake_flusher();
        wake(&inner.compact_wake);
        wake(&inner.dedup_wake);
        for h in self.workers.lock().drain(..) {
            let _ = h.join();
        }
        if let Some(wal) = &inner.wal {
            // Let queued appends finish before the last flush.
            wal.close();
            inner.flush()?;
        }
        Ok(())
    }
}

impl Inner {
    /// Without a WAL the store is read-only and starts in the stopped state.
    fn new(
        config: StoreConfig,
        wal: Option<Wal>,
        dedup: Option<DedupIndex>,
        mem: Mem,
        rollups: Rollups,
        manifest: Manifest,
    ) -> Inner {
        let stopping = AtomicBool::new(wal.is_none());
        let next_seq = AtomicU64::new(manifest.next_file_seq);
        Inner {
            config,
            wal,
            dedup,
            ingest_lock: Mutex::new(()),
            mem: RwLock::new(mem),
            rollups: Mutex::new(rollups),
            live: Mutex::new(None),
            manifest: RwLock::new(Arc::new(manifest)),
            counters: Counters::default(),
            wake: (Mutex::new(false), Condvar::new()),
            compact_wake: (Mutex::new(false), Condvar::new()),
            dedup_wake: (Mutex::new(false), Condvar::new()),
            commit_lock: Mutex::new(()),
            compact_lock: Mutex::new(()),
            flush_lock: Mutex::new(()),
            next_seq,
            stopping,
            doomed: Mutex::new(Vec::new()),
            room: tokio::sync::Notify::new(),
        }
    }

    fn wake_flusher(&self) {
        wake(&self.wake);
    }

    fn flush_loop(self: Arc<Self>) {
        loop {
            wait(&self.wake, self.config.flush_interval);
            if self.stopping.load(Ordering::Acquire) {
                return;
            }
            if let Err(e) = self.flush() {
                tracing::error!(error = %e, "flush failed; rows stay buffered and in the WAL");
            }
            self.rollups.lock().maintain(now_ms());
        }
    }

    /// Merges dedup runs after spills, off the flusher: a merge of every id so far (each
    /// 4^k-th spill brings one) took seconds there, and nothing was flushed meanwhile. In
    /// the idle class like compaction; but each run costs every lookup a filter probe, so
    /// past [`STARVED_DEDUP_RUNS`] it merges at nice 10 even on saturated cores (chosen
    /// before each merge).
    fn dedup_loop(self: Arc<Self>) {
        let Some(d) = &self.dedup else { return };
        loop {
            wait(&self.dedup_wake, self.config.flush_interval);
            if self.stopping.load(Ordering::Acquire) {
                return;
            }
            // A merge holds no lock others wait for; it swaps runs at nice 10 itself.
            let class_by_runs = |runs: usize| {
                priority::set(if runs > STARVED_DEDUP_RUNS {
                    priority::Background::Low
                } else {
                    priority::Background::Idle
                })
            };
            if let Err(e) = d.merge_runs(hour_of(now_ms()), class_by_runs) {
                tracing::error!(error = %e, "dedup run merge failed");
            }
        }
    }

    fn compact_loop(self: Arc<Self>) {
        loop {
            // Between merges the compactor takes locks the flusher and the ingest path
            // share (the buffer's, the manifest's): never in the idle class, where it could
            // be preempted holding one while the cores are busy.
            priority::set(priority::Background::Low);
            self.delete_doomed(false);
            wait(&self.compact_wake, self.config.flush_interval);
            if self.stopping.load(Ordering::Acquire) {
                return;
            }
            // Flushing comes first: while the flusher is behind, merging would only take
            // CPU and memory from it.
            if self.flush_backlog() {
                continue;
            }
            if let Err(e) = self.compact(false, true) {
                tracing::error!(error = %e, "compaction failed");
            }
        }
    }

    /// Whether more than one flush worth of rows waits in memory.
    fn flush_backlog(&self) -> bool {
        let mem = self.mem.read();
        mem.rows > self.config.flush_rows || mem.bytes > self.config.flush_bytes
    }

    /// Apply a change to the manifest: commit it to disk, then publish it together with
    /// `on_publish`'s change to the buffer, so a query sees rows either buffered or in
    /// files, never both or neither.
    fn commit_manifest(
        &self,
        add: &[FileEntry],
        remove: &[FileEntry],
        flushed_lsn: Option<u64>,
        on_publish: impl FnOnce(&mut Mem),
    ) -> Result<(), StoreError> {
        let _serial = self.commit_lock.lock();
        let mut next = (**self.manifest.read()).clone();
        if !remove.is_empty() {
            let gone: HashSet<&str> = remove.iter().map(|f| f.path.as_str()).collect();
            next.files.retain(|f| !gone.contains(f.path.as_str()));
        }
        next.files.extend_from_slice(add);
        if let Some(lsn) = flushed_lsn {
            next.flushed_lsn = next.flushed_lsn.max(lsn);
        }
        next.next_file_seq = self.next_seq.load(Ordering::Acquire);
        next.commit(&self.config.data_dir)?;
        let mut mem = self.mem.write();
        *self.manifest.write() = Arc::new(next);
        on_publish(&mut mem);
        Ok(())
    }

    fn flush(&self) -> Result<(), StoreError> {
        let _one = self.flush_lock.lock();
        let (batches, upto, rows, bytes) = {
            let mut mem = self.mem.write();
            mem.seal(true)?;
            for i in 0..Table::ALL.len() {
                let sealed = std::mem::take(&mut mem.sealed[i]);
                mem.flushing[i].extend(sealed);
            }
            // Taken under the lock that orders `apply`: these rows are exactly the
            // decisions up to `applied_lsn`, committed with it below.
            let rows = self.rollups.lock().take_pending();
            if let Some(batch) = rollup_batch(&rows)? {
                mem.rows += batch.num_rows();
                mem.bytes += batch.get_array_memory_size();
                mem.flushing[Table::Rollups1m as usize].push(batch);
            }
            let flushing = mem.flushing.iter().flatten();
            let (rows, bytes) = flushing.fold((0, 0), |(r, b), x| {
                (r + x.num_rows(), b + x.get_array_memory_size())
            });
            (mem.flushing_rows, mem.flushing_bytes) = (rows, bytes);
            (mem.flushing.clone(), mem.applied_lsn, rows, bytes)
        };
        let manifest = self.manifest.read().clone();
        if batches.iter().all(|b| b.is_empty()) && upto <= manifest.flushed_lsn {
            return Ok(());
        }
        let started = Instant::now();
        let mut written = Vec::new();
        let result = (|| {
            for t in Table::ALL {
                let b = &batches[t as usize];
                if b.is_empty() {
                    continue;
                }
                let entries =
                    files::write_partitioned(&self.config.data_dir, t, b, &self.next_seq)?;
                written.extend(entries);
            }
            // Dedup state must be durable before the WAL that also holds it is trimmed.
            if let Some(d) = &self.dedup {
                d.spill()?;
                wake(&self.dedup_wake);
            }
            self.commit_manifest(&written, &[], Some(upto), |mem| {
                for v in mem.flushing.iter_mut() {
                    v.clear();
                }
                mem.rows = mem.rows.saturating_sub(rows);
                mem.bytes = mem.bytes.saturating_sub(bytes);
                mem.flushing_rows = 0;
                mem.flushing_bytes = 0;
            })
        })();
        if let Err(e) = result {
            for f in &written {
                let _ = fs::remove_file(self.config.data_dir.join(&f.path));
            }
            return Err(e);
        }
        self.room.notify_waiters();
        if let Some(wal) = &self.wal {
            wal.trim(upto)?;
        }
        self.counters.flushes.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(
            rows,
            files = written.len(),
            upto,
            ms = started.elapsed().as_millis() as u64,
            "flushed"
        );
        Ok(())
    }

    /// Compact partitions with many files; with `all`, every partition with 2+ files.
    /// With `background`, the calling thread merges in the idle scheduling class unless
    /// flushed files are piling up.
    fn compact(&self, all: bool, background: bool) -> Result<(), StoreError> {
        let _one = self.compact_lock.lock();
        let manifest = self.manifest.read().clone();
        let waiting = manifest.files.iter().filter(|f| files::is_ipc(f)).count();
        let current_hour = now_ms().div_euclid(HOUR_MS);
        let mut parts: BTreeMap<(&str, i64), Vec<FileEntry>> = BTreeMap::new();
        for f in &manifest.files {
            parts.entry((&f.table, f.hour)).or_default().push(f.clone());
        }
        let mut groups = Vec::new();
        for ((table, hour), files) in parts {
            let Some(t) = Table::from_name(table) else {
                continue;
            };
            let policy = compaction::Policy {
                min_files: self.config.compact_min_files,
                closed: all || hour < current_hour - 1,
            };
            for group in compaction::plan(&files, policy) {
                groups.push((t, hour, group));
            }
        }
        if background && waiting <= STARVED_FLUSH_FILES && !groups.is_empty() {
            priority::set(priority::Background::Idle);
        }
        self.merge(groups)
    }

    /// Merge each group of files of one partition into one Parquet file, commit the swap
    /// and leave the old files to be deleted after the grace period.
    fn merge(&self, groups: Vec<(Table, i64, Vec<FileEntry>)>) -> Result<(), StoreError> {
        let mut added = Vec::new();
        let mut replaced = Vec::new();
        for (t, hour, group) in groups {
            let seq = self.next_seq.fetch_add(1, Ordering::AcqRel);
            let (entry, dropped) =
                files::compact_partition(&self.config.data_dir, t, hour, &group, seq)?;
            self.counters
                .compaction_dropped
                .fetch_add(dropped, Ordering::Relaxed);
            self.counters.compactions.fetch_add(1, Ordering::Relaxed);
            added.push(entry);
            replaced.extend(group);
        }
        if replaced.is_empty() {
            return Ok(());
        }
        let committed =
            priority::unstarved(|| self.commit_manifest(&added, &replaced, None, |_| {}));
        if let Err(e) = committed {
            for f in &added {
                let _ = fs::remove_file(self.config.data_dir.join(&f.path));
            }
            return Err(e);
        }
        let when = Instant::now();
        self.doomed.lock().extend(
            replaced
                .into_iter()
                .map(|f| (when, self.config.data_dir.join(f.path))),
        );
        Ok(())
    }

    fn delete_doomed(&self, all: bool) {
        let mut doomed = self.doomed.lock();
        doomed.retain(|(when, path)| {
            if all || when.elapsed() >= DELETE_GRACE {
                if let Err(e) = fs::remove_file(path)
                    && e.kind() != std::io::ErrorKind::NotFound
                {
                    tracing::warn!(path = %path.display(), error = %e, "could not delete compacted file");
                    return true;
                }
                false
            } else {
                true
            }
        });
    }
}

fn wake(signal: &(Mutex<bool>, Condvar)) {
    let (lock, cv) = signal;
    *lock.lock() = true;
    cv.notify_one();
}

/// Sleep until woken or `timeout` passes.
fn wait(signal: &(Mutex<bool>, Condvar), timeout: Duration) {
    let (lock, cv) = signal;
    let mut woken = lock.lock();
    if !*woken {
        cv.wait_for(&mut woken, timeout);
    }
    *woken = false;
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.delete_doomed(true);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_being_flushed_do_not_call_for_another_flush() {
        let mut config = StoreConfig::new("unused");
        config.flush_rows = 100;
        config.flush_bytes = 1_000;
        let mut mem = Mem::new();
        (mem.rows, mem.bytes) = (150, 500);
        assert!(mem.flush_due(&config));
        // A flush takes them all; 60 more rows arrive while it writes.
        (mem.flushing_rows, mem.flushing_bytes) = (150, 500);
        mem.rows += 60;
        assert!(!mem.flush_due(&config));
        mem.rows += 40;
        assert!(
            mem.flush_due(&config),
            "100 rows beside the flush are a flush"
        );
        (mem.rows, mem.flushing_rows) = (60, 0);
        mem.bytes += 1_000;
        assert!(mem.flush_due(&config), "so are 1,000 bytes");
    }
}
