//! Exact event-id dedup over a time window with bounded memory.
//!
//! Ids are 128-bit hashes of `event_id`, each with a 64-bit content hash (to tell a retry
//! from a conflicting reuse of the id) and the hour it was received. Ids not yet covered by
//! a flush live in an in-memory table (the WAL replays them after a crash). At each
//! flush they are spilled to an immutable sorted *run* file; the index keeps only a blocked
//! Bloom filter of each run in memory (~2 bytes per id) and binary-searches the file on a
//! filter hit. The newest runs merge four at a time once they are of about one size
//! (size-tiered), so an id is rewritten O(log n) times and a lookup probes O(log n)
//! filters; merging drops ids older than the window.
//!
//! Memory: about 37–73 bytes per unflushed id (hash table) and 2 bytes per spilled id, so
//! one million ids inside the window cost about 2 MB once flushed. Disk: 28 bytes per id.
//! Spills and merges stream records to and from disk: a merge holds two read blocks and the
//! new run's filter, not the runs (a 3-million-id merge used to hold ~190 MB).

use std::fs::{self, File};
use std::io::{BufWriter, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use hashbrown::HashMap;
use parking_lot::{Mutex, RwLock};

use crate::StoreError;
use crate::files::PacedFile;

const MAGIC: &[u8; 4] = b"SDR1";
const HEADER: usize = 4 + 8 + 4 + 4 + 8;
const REC: usize = 28;
const BLOCK_BITS: u64 = 512;
const BITS_PER_KEY: u64 = 16;
/// Runs merged at once. Each merge rewrites its records, so an id is written about
/// log_FAN_IN(spills) times: pairwise merging (2) rewrote each id twice as often, and took
/// 5% of a full-speed ingest's CPU; a lookup probes up to FAN_IN - 1 filters per tier.
const FAN_IN: usize = 4;

/// How an incoming id relates to what the index has seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// Not seen within the window.
    New,
    /// Seen with the same content: a retry.
    Duplicate,
    /// Seen with different content under the same id.
    Conflict,
}

/// Blocked Bloom filter: all probes of a key fall in one 64-byte block (one cache miss).
struct Bloom {
    blocks: Vec<[u64; 8]>,
}

impl Bloom {
    fn with_keys(n: u64) -> Bloom {
        let nblocks = (n * BITS_PER_KEY).div_ceil(BLOCK_BITS).max(1);
        Bloom {
            blocks: vec![[0u64; 8]; nblocks as usize],
        }
    }

    fn probes(&self, key: u128) -> (usize, [u16; 7]) {
        let lo = key as u64;
        let hi = (key >> 64) as u64;
        let block = (lo % self.blocks.len() as u64) as usize;
        let mut bits = [0u16; 7];
        for (i, b) in bits.iter_mut().enumerate() {
            *b = ((hi >> (i * 9)) & 511) as u16;
        }
        (block, bits)
    }

    fn insert(&mut self, key: u128) {
        let (block, bits) = self.probes(key);
        for b in bits {
            self.blocks[block][(b / 64) as usize] |= 1 << (b % 64);
        }
    }

    fn may_contain(&self, key: u128) -> bool {
        let (block, bits) = self.probes(key);
        bits.iter()
            .all(|b| self.blocks[block][(b / 64) as usize] & (1 << (b % 64)) != 0)
    }
}

/// One immutable sorted run of (id, content hash, hour) records on disk.
struct Run {
    path: PathBuf,
    file: File,
    count: u64,
    max_hour: u32,
    bloom: Bloom,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |e| StoreError::Io {
        path: path.to_path_buf(),
        source: e,
    }
}

impl Run {
    /// Write sorted, unique records to `path` (via a temporary file and rename).
    fn write(path: PathBuf, recs: &[(u128, u64, u32)]) -> Result<Run, StoreError> {
        Run::write_stream(path, recs.len() as u64, recs.iter().map(|&r| Ok(r)))
    }

    /// Write sorted, unique records, at most `at_most` of them, streamed, so writing a run
    /// never holds more than its Bloom filter and an I/O buffer. One pass: the filter is
    /// sized for `at_most` (a merge that drops expired records leaves it roomier, not
    /// fuller), and the header, with the count and hour span, is written last.
    fn write_stream(
        path: PathBuf,
        at_most: u64,
        recs: impl Iterator<Item = Result<(u128, u64, u32), StoreError>>,
    ) -> Result<Run, StoreError> {
        let tmp = path.with_extension("tmp");
        let mut bloom = Bloom::with_keys(at_most);
        let mut count = 0u64;
        let (mut min_hour, mut max_hour) = (u32::MAX, 0u32);
        {
            let f = File::create(&tmp).map_err(io(&tmp))?;
            // Written back a megabyte at a time: a merge's run reaches hundreds of MB, and
            // its fsync would otherwise queue in front of the WAL's.
            let mut w = BufWriter::with_capacity(1 << 20, PacedFile::new(f));
            w.write_all(&[0u8; HEADER]).map_err(io(&tmp))?;
            for rec in recs {
                let (id, content, hour) = rec?;
                if count == at_most {
                    return Err(StoreError::Corrupt(format!(
                        "{}: more than the {at_most} records expected",
                        tmp.display()
                    )));
                }
                bloom.insert(id);
                w.write_all(&id.to_le_bytes()).map_err(io(&tmp))?;
                w.write_all(&content.to_le_bytes()).map_err(io(&tmp))?;
                w.write_all(&hour.to_le_bytes()).map_err(io(&tmp))?;
                count += 1;
                min_hour = min_hour.min(hour);
                max_hour = max_hour.max(hour);
            }
            for block in &bloom.blocks {
                for word in block {
                    w.write_all(&word.to_le_bytes()).map_err(io(&tmp))?;
                }
            }
            let f = w
                .into_inner()
                .map_err(|e| io(&tmp)(e.into_error()))?
                .into_file();
            let mut head = Vec::with_capacity(HEADER);
            head.extend_from_slice(MAGIC);
            head.extend_from_slice(&count.to_le_bytes());
            head.extend_from_slice(&min_hour.min(max_hour).to_le_bytes());
            head.extend_from_slice(&max_hour.to_le_bytes());
            head.extend_from_slice(&(bloom.blocks.len() as u64).to_le_bytes());
            f.write_all_at(&head, 0).map_err(io(&tmp))?;
            crate::priority::unstarved(|| f.sync_all()).map_err(io(&tmp))?;
        }
        fs::rename(&tmp, &path).map_err(io(&path))?;
        let file = File::open(&path).map_err(io(&path))?;
        Ok(Run {
            path,
            file,
            count,
            max_hour,
            bloom,
        })
    }

    fn open(path: PathBuf) -> Result<Run, StoreError> {
        let mut file = File::open(&path).map_err(io(&path))?;
        let mut head = [0u8; HEADER];
        file.read_exact(&mut head).map_err(io(&path))?;
        if &head[..4] != MAGIC {
            return Err(StoreError::Corrupt(format!(
                "{}: not a dedup run",
                path.display()
            )));
        }
        let u64_at = |o: usize| u64::from_le_bytes(head[o..o + 8].try_into().unwrap_or([0; 8]));
        let u32_at = |o: usize| u32::from_le_bytes(head[o..o + 4].try_into().unwrap_or([0; 4]));
        let count = u64_at(4);
        let max_hour = u32_at(16);
        let nblocks = u64_at(20);
        let expected = HEADER as u64 + count * REC as u64 + nblocks * 64;
        let actual = file.metadata().map_err(io(&path))?.len();
        if actual != expected || nblocks == 0 {
            return Err(StoreError::Corrupt(format!(
                "{}: {actual} bytes where {expected} were expected",
                path.display()
            )));
        }
        let mut raw = vec![0u8; (nblocks * 64) as usize];
        file.read_exact_at(&mut raw, HEADER as u64 + count * REC as u64)
            .map_err(io(&path))?;
        let blocks = raw
            .chunks_exact(64)
            .map(|c| {
                let mut b = [0u64; 8];
                for (i, w) in c.chunks_exact(8).enumerate() {
                    b[i] = u64::from_le_bytes(w.try_into().unwrap_or([0; 8]));
                }
                b
            })
            .collect();
        Ok(Run {
            path,
            file,
            count,
            max_hour,
            bloom: Bloom { blocks },
        })
    }

    fn record(&self, i: u64) -> Result<(u128, u64, u32), StoreError> {
        let mut b = [0u8; REC];
        self.file
            .read_exact_at(&mut b, HEADER as u64 + i * REC as u64)
            .map_err(io(&self.path))?;
        Ok(decode_rec(&b))
    }

    fn get(&self, id: u128) -> Result<Option<u64>, StoreError> {
        if !self.bloom.may_contain(id) {
            return Ok(None);
        }
        let (mut lo, mut hi) = (0u64, self.count);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            let (k, content, _) = self.record(mid)?;
            match k.cmp(&id) {
                std::cmp::Ordering::Equal => return Ok(Some(content)),
                std::cmp::Ordering::Less => lo = mid + 1,
                std::cmp::Ordering::Greater => hi = mid,
            }
        }
        Ok(None)
    }

    /// The records in order, read sequentially a block at a time.
    fn records(&self) -> RunReader<'_> {
        RunReader {
            run: self,
            next: 0,
            buf: Vec::new(),
            at: 0,
        }
    }
}

/// Records read per block by [`RunReader`]: 112 KiB.
const READ_RECS: u64 = 4096;

/// A sequential reader of a run's records.
struct RunReader<'a> {
    run: &'a Run,
    /// Index of the first record not yet read from the file.
    next: u64,
    buf: Vec<u8>,
    /// Offset of the next unread record in `buf`.
    at: usize,
}

impl Iterator for RunReader<'_> {
    type Item = Result<(u128, u64, u32), StoreError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.at >= self.buf.len() {
            let n = READ_RECS.min(self.run.count - self.next);
            if n == 0 {
                return None;
            }
            self.buf.resize(n as usize * REC, 0);
            let read = self
                .run
                .file
                .read_exact_at(&mut self.buf, HEADER as u64 + self.next * REC as u64)
                .map_err(io(&self.run.path));
            if let Err(e) = read {
                self.next = self.run.count;
                self.buf.clear();
                return Some(Err(e));
            }
            self.next += n;
            self.at = 0;
        }
        let rec = decode_rec(&self.buf[self.at..self.at + REC]);
        self.at += REC;
        Some(Ok(rec))
    }
}

/// Merge sorted runs, given oldest first; for an id in several, the newest run's record
/// wins. Records received before hour `cutoff` are dropped.
fn merged(
    runs: &[Arc<Run>],
    cutoff: u32,
) -> impl Iterator<Item = Result<(u128, u64, u32), StoreError>> + '_ {
    let mut heads: Vec<_> = runs.iter().map(|r| r.records().peekable()).collect();
    std::iter::from_fn(move || {
        loop {
            // The smallest next id, the newest run's on a tie; a read error is passed on first.
            let mut best: Option<(usize, u128)> = None;
            for (i, head) in heads.iter_mut().enumerate() {
                match head.peek() {
                    Some(Err(_)) => return head.next(),
                    Some(Ok(r)) if best.is_none_or(|(_, id)| r.0 <= id) => best = Some((i, r.0)),
                    _ => {}
                }
            }
            let (newest, id) = best?;
            for head in &mut heads[..newest] {
                if matches!(head.peek(), Some(Ok(r)) if r.0 == id) {
                    head.next();
                }
            }
            match heads[newest].next()? {
                Ok(r) if r.2 < cutoff => continue,
                other => return Some(other),
            }
        }
    })
}

fn decode_rec(b: &[u8]) -> (u128, u64, u32) {
    let id = u128::from_le_bytes(b[0..16].try_into().unwrap_or([0; 16]));
    let content = u64::from_le_bytes(b[16..24].try_into().unwrap_or([0; 8]));
    let hour = u32::from_le_bytes(b[24..28].try_into().unwrap_or([0; 4]));
    (id, content, hour)
}

/// The dedup index. Lookups and inserts take `&self`; spills and merges run on one thread.
pub struct DedupIndex {
    dir: PathBuf,
    window_hours: u32,
    /// id → (content hash, hour, durable). An id is durable once its WAL record is: only
    /// durable ids may be spilled, or a crash could leave a run that remembers an event the
    /// WAL lost, and its retry would be answered "duplicate" and never stored.
    mem: Mutex<HashMap<u128, (u64, u32, bool)>>,
    runs: RwLock<Vec<Arc<Run>>>,
    next_seq: AtomicU64,
}

impl DedupIndex {
    /// Open the index in `dir`, loading the runs still inside the window at `now_hour`.
    pub fn open(dir: &Path, window_hours: u32, now_hour: u32) -> Result<DedupIndex, StoreError> {
        fs::create_dir_all(dir).map_err(io(dir))?;
        let mut found = Vec::new();
        for entry in fs::read_dir(dir).map_err(io(dir))? {
            let entry = entry.map_err(io(dir))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.ends_with(".tmp") {
                let _ = fs::remove_file(entry.path());
            } else if let Some(seq) = name
                .strip_prefix("run-")
                .and_then(|s| s.strip_suffix(".dd"))
                .and_then(|s| s.parse::<u64>().ok())
            {
                found.push((seq, entry.path()));
            }
        }
        found.sort();
        let next_seq = found.last().map(|(s, _)| s + 1).unwrap_or(1);
        let mut runs = Vec::new();
        for (_, path) in found {
            let run = Run::open(path)?;
            if run.max_hour + window_hours < now_hour {
                fs::remove_file(&run.path).map_err(io(&run.path))?;
            } else {
                runs.push(Arc::new(run));
            }
        }
        Ok(DedupIndex {
            dir: dir.to_path_buf(),
            window_hours,
            mem: Mutex::new(HashMap::new()),
            runs: RwLock::new(runs),
            next_seq: AtomicU64::new(next_seq),
        })
    }

    fn lookup(&self, id: u128) -> Result<Option<u64>, StoreError> {
        if let Some(&(content, _, _)) = self.mem.lock().get(&id) {
            return Ok(Some(content));
        }
        for run in self.runs.read().iter().rev() {
            if let Some(c) = run.get(id)? {
                return Ok(Some(c));
            }
        }
        Ok(None)
    }

    /// Check `id` and, if new, record it as pending until [`DedupIndex::confirm`]. The caller
    /// serializes check-and-insert per batch.
    pub fn check_and_insert(&self, id: u128, content: u64, hour: u32) -> Result<Seen, StoreError> {
        Ok(match self.lookup(id)? {
            None => {
                self.mem.lock().insert(id, (content, hour, false));
                Seen::New
            }
            Some(c) if c == content => Seen::Duplicate,
            Some(_) => Seen::Conflict,
        })
    }

    /// Record an id unconditionally, as durable (WAL replay).
    pub fn insert(&self, id: u128, content: u64, hour: u32) {
        self.mem.lock().insert(id, (content, hour, true));
    }

    /// Mark ids durable: their WAL records are on disk, so a spill may write them.
    pub fn confirm(&self, ids: &[u128]) {
        let mut mem = self.mem.lock();
        for id in ids {
            if let Some(e) = mem.get_mut(id) {
                e.2 = true;
            }
        }
    }

    /// Forget ids whose append failed, so a retry is not mistaken for a duplicate.
    pub fn remove(&self, ids: &[u128]) {
        let mut mem = self.mem.lock();
        for id in ids {
            mem.remove(id);
        }
    }

    /// Ids held in memory (not yet spilled).
    pub fn mem_len(&self) -> usize {
        self.mem.lock().len()
    }

    /// Ids in spilled runs (counting an id once per run that holds it).
    pub fn spilled_len(&self) -> u64 {
        self.runs.read().iter().map(|r| r.count).sum()
    }

    /// Number of run files.
    pub fn run_count(&self) -> usize {
        self.runs.read().len()
    }

    /// Spill the durable in-memory ids to a new run. Pending ids stay in memory. Call from
    /// one thread at a time (the flusher); [`DedupIndex::merge_runs`] may run alongside.
    pub fn spill(&self) -> Result<(), StoreError> {
        let mut recs: Vec<(u128, u64, u32)> = {
            let mem = self.mem.lock();
            mem.iter()
                .filter(|(_, e)| e.2)
                .map(|(&id, &(c, h, _))| (id, c, h))
                .collect()
        };
        if !recs.is_empty() {
            recs.sort_unstable_by_key(|r| r.0);
            let run = Arc::new(Run::write(self.next_path(), &recs)?);
            // Publish the run before forgetting the ids so no lookup misses them.
            self.runs.write().push(run);
            let mut mem = self.mem.lock();
            for (id, c, _) in &recs {
                if mem.get(id).map(|v| v.0) == Some(*c) {
                    mem.remove(id);
                }
            }
        }
        Ok(())
    }

    /// Drop runs older than the window and merge runs while [`FAN_IN`] of about one size
    /// are the newest. Runs on one thread at a time (the compactor, in the background: a
    /// merge of every id so far, which every 4^k-th spill brings, took seconds on the
    /// flusher, which could not flush meanwhile). It takes the runs' lock only to swap
    /// runs, at normal priority ([`crate::priority::unstarved`]): every lookup reads it.
    ///
    /// `before_each` gets the number of runs before each merge (the caller sets its
    /// thread's priority by it).
    pub fn merge_runs(
        &self,
        now_hour: u32,
        before_each: impl FnMut(usize),
    ) -> Result<(), StoreError> {
        self.expire(now_hour)?;
        self.merge(now_hour, before_each)
    }

    fn next_path(&self) -> PathBuf {
        let seq = self.next_seq.fetch_add(1, Ordering::Relaxed);
        self.dir.join(format!("run-{seq:012}.dd"))
    }

    fn expire(&self, now_hour: u32) -> Result<(), StoreError> {
        let drop = crate::priority::unstarved(|| {
            let mut runs = self.runs.write();
            let (keep, drop): (Vec<_>, Vec<_>) = runs
                .drain(..)
                .partition(|r| r.max_hour + self.window_hours >= now_hour);
            *runs = keep;
            drop
        });
        drop_runs(drop)
    }

    /// Merge the [`FAN_IN`] newest runs while the oldest of them is at most twice the
    /// newest's size (size-tiered, like an LSM tree's levels).
    fn merge(&self, now_hour: u32, mut before_each: impl FnMut(usize)) -> Result<(), StoreError> {
        loop {
            let group: Vec<Arc<Run>> = {
                let runs = self.runs.read();
                let n = runs.len();
                if n < FAN_IN || runs[n - FAN_IN].count > 2 * runs[n - 1].count {
                    return Ok(());
                }
                before_each(n);
                runs[n - FAN_IN..].to_vec()
            };
            let cutoff = now_hour.saturating_sub(self.window_hours);
            // The merged run replaces the group's newest under its name: runs are ordered
            // by name on open, and a run spilled while this merge runs has a later one. (A
            // new name could sort after such a run, which is newer.) A crash before the
            // older members are deleted leaves their ids twice, which lookups allow.
            // Streamed: merging never holds the runs in memory, however large the window grows.
            let run = Arc::new(Run::write_stream(
                group[FAN_IN - 1].path.clone(),
                group.iter().map(|r| r.count).sum(),
                merged(&group, cutoff),
            )?);
            // The group is still contiguous: spills only append newer runs meanwhile.
            crate::priority::unstarved(|| {
                let mut runs = self.runs.write();
                if let Some(p) = runs.iter().position(|r| Arc::ptr_eq(r, &group[0])) {
                    runs.retain(|r| !group.iter().any(|g| Arc::ptr_eq(r, g)));
                    runs.insert(p, run);
                }
            });
            let mut older = group;
            older.pop();
            drop_runs(older)?;
        }
    }
}

fn drop_runs(runs: Vec<Arc<Run>>) -> Result<(), StoreError> {
    for r in runs {
        match fs::remove_file(&r.path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io(&r.path)(e)),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_duplicate_conflict_across_spills_and_restarts() {
        let dir = tempfile::tempdir().expect("tmp");
        let idx = DedupIndex::open(dir.path(), 24, 100).expect("open");
        assert_eq!(idx.check_and_insert(1, 10, 100).expect("ok"), Seen::New);
        assert_eq!(
            idx.check_and_insert(1, 10, 100).expect("ok"),
            Seen::Duplicate
        );
        assert_eq!(
            idx.check_and_insert(1, 11, 100).expect("ok"),
            Seen::Conflict
        );
        idx.confirm(&[1]);
        idx.spill().expect("spill");
        assert_eq!(idx.mem_len(), 0);
        assert_eq!(
            idx.check_and_insert(1, 10, 100).expect("ok"),
            Seen::Duplicate
        );
        for id in 2..5000u128 {
            assert_eq!(
                idx.check_and_insert(id * 7919, 1, 100).expect("ok"),
                Seen::New
            );
            idx.confirm(&[id * 7919]);
            if id % 500 == 0 {
                idx.spill().expect("spill");
                idx.merge_runs(100, |_| {}).expect("merge");
            }
        }
        idx.spill().expect("spill");
        idx.merge_runs(100, |_| {}).expect("merge");
        assert!(idx.run_count() <= 6, "runs {}", idx.run_count());
        drop(idx);
        let idx = DedupIndex::open(dir.path(), 24, 101).expect("reopen");
        assert_eq!(
            idx.check_and_insert(1, 10, 101).expect("ok"),
            Seen::Duplicate
        );
        for id in 2..5000u128 {
            assert_eq!(
                idx.check_and_insert(id * 7919, 1, 101).expect("ok"),
                Seen::Duplicate
            );
        }
        assert_eq!(idx.check_and_insert(3, 1, 101).expect("ok"), Seen::New);
    }

    /// An id whose WAL record is not yet durable stays out of spilled runs: after a crash
    /// its retry is new, not a duplicate of an event that was never stored.
    #[test]
    fn pending_ids_are_not_spilled() {
        let dir = tempfile::tempdir().expect("tmp");
        let idx = DedupIndex::open(dir.path(), 24, 100).expect("open");
        idx.check_and_insert(7, 1, 100).expect("ok");
        idx.check_and_insert(8, 1, 100).expect("ok");
        idx.confirm(&[8]);
        idx.spill().expect("spill");
        // Still known while the process lives.
        assert_eq!(
            idx.check_and_insert(7, 1, 100).expect("ok"),
            Seen::Duplicate
        );
        drop(idx);
        let idx = DedupIndex::open(dir.path(), 24, 100).expect("reopen");
        assert_eq!(idx.check_and_insert(7, 1, 100).expect("ok"), Seen::New);
        assert_eq!(
            idx.check_and_insert(8, 1, 100).expect("ok"),
            Seen::Duplicate
        );
    }

    #[test]
    fn ids_past_the_window_are_forgotten() {
        let dir = tempfile::tempdir().expect("tmp");
        let idx = DedupIndex::open(dir.path(), 24, 100).expect("open");
        idx.check_and_insert(42, 1, 100).expect("ok");
        idx.confirm(&[42]);
        idx.spill().expect("spill");
        idx.check_and_insert(43, 1, 125).expect("ok");
        idx.confirm(&[43]);
        idx.spill().expect("spill");
        // Spilling keeps every run; the background merge drops those past the window.
        assert_eq!(
            idx.check_and_insert(42, 1, 125).expect("ok"),
            Seen::Duplicate
        );
        idx.merge_runs(125, |_| {}).expect("merge");
        assert_eq!(idx.check_and_insert(42, 1, 125).expect("ok"), Seen::New);
        assert_eq!(
            idx.check_and_insert(43, 1, 125).expect("ok"),
            Seen::Duplicate
        );
    }

    /// A merge streams its four runs block by block (10,000 records each, over two read
    /// blocks): the newest record of an id wins and ids received before the window go.
    #[test]
    fn merging_runs_keeps_newest_records_inside_the_window() {
        let dir = tempfile::tempdir().expect("tmp");
        let idx = DedupIndex::open(dir.path(), 24, 12).expect("open");
        let id = |i: u128| i.wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5d39_6a1d);
        for i in 0..10_000u128 {
            idx.insert(id(i), 1, if i < 5_000 { 10 } else { 12 });
        }
        idx.spill().expect("spill");
        // Overlapping runs: ids 5,000.. in content 2, 12,000.. in 3, 20,000.. in 4.
        for (content, from) in [(2, 5_000u128), (3, 12_000), (4, 20_000)] {
            for i in from..from + 10_000 {
                idx.insert(id(i), content, 12);
            }
            // At hour 35 the window starts at hour 11: the first 5,000 ids expire in the
            // merge after the fourth spill.
            idx.spill().expect("spill");
            idx.merge_runs(if content == 4 { 35 } else { 12 }, |_| {})
                .expect("merge");
            assert_eq!(
                idx.run_count(),
                if content == 4 { 1 } else { content as usize }
            );
        }
        assert_eq!(idx.spilled_len(), 25_000);
        // The merged run took the name of the group's newest (the fourth spill), so a run
        // spilled during a merge still sorts after it on open.
        let names: Vec<String> = fs::read_dir(dir.path())
            .expect("list")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, vec!["run-000000000004.dd".to_string()]);
        let reopened = DedupIndex::open(dir.path(), 24, 35).expect("reopen");
        for ix in [&idx, &reopened] {
            for (i, newest) in [
                (7_000, 2),
                (12_500, 3),
                (14_999, 3),
                (21_000, 4),
                (29_999, 4),
            ] {
                assert_eq!(
                    ix.check_and_insert(id(i), newest, 35).expect("ok"),
                    Seen::Duplicate,
                    "id {i}"
                );
                assert_eq!(
                    ix.check_and_insert(id(i), newest - 1, 35).expect("ok"),
                    Seen::Conflict,
                    "id {i}"
                );
            }
            assert_eq!(ix.check_and_insert(id(100), 1, 35).expect("ok"), Seen::New);
        }
    }

    #[test]
    fn remove_forgets_failed_appends_and_corrupt_runs_are_reported() {
        let dir = tempfile::tempdir().expect("tmp");
        let idx = DedupIndex::open(dir.path(), 24, 1).expect("open");
        idx.check_and_insert(5, 1, 1).expect("ok");
        idx.remove(&[5]);
        assert_eq!(idx.check_and_insert(5, 1, 1).expect("ok"), Seen::New);
        idx.confirm(&[5]);
        idx.spill().expect("spill");
        let run = idx.runs.read()[0].path.clone();
        drop(idx);
        let mut f = fs::OpenOptions::new()
            .append(true)
            .open(&run)
            .expect("open run");
        f.write_all(b"junk").expect("append");
        drop(f);
        assert!(matches!(
            DedupIndex::open(dir.path(), 24, 1),
            Err(StoreError::Corrupt(_))
        ));
    }
}
