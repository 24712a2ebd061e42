use super::*;
use std::io::{Seek, SeekFrom, Write};
use std::sync::mpsc::channel;

fn append_sync(wal: &Wal, recs: Vec<Vec<u8>>) -> Result<RangeInclusive<u64>, WalError> {
    let (tx, rx) = channel();
    wal.append(
        recs,
        Box::new(move |r| {
            let _ = tx.send(r);
        }),
    );
    rx.recv().unwrap_or(Err(WalError::Closed))
}

fn payloads(records: &[Record]) -> Vec<Vec<u8>> {
    records.iter().map(|r| r.payload.clone()).collect()
}

#[test]
fn append_then_replay_in_order() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (wal, replay) = Wal::open(WalConfig::new(dir.path()), 0).expect("open");
    assert!(replay.is_empty());
    assert_eq!(
        append_sync(&wal, vec![b"a".to_vec(), b"bb".to_vec()]).expect("ok"),
        1..=2
    );
    assert_eq!(append_sync(&wal, vec![b"ccc".to_vec()]).expect("ok"), 3..=3);
    wal.close();
    drop(wal);
    let (wal, replay) = Wal::open(WalConfig::new(dir.path()), 0).expect("reopen");
    assert_eq!(
        payloads(&replay),
        vec![b"a".to_vec(), b"bb".to_vec(), b"ccc".to_vec()]
    );
    assert_eq!(
        replay.iter().map(|r| r.lsn).collect::<Vec<_>>(),
        vec![1, 2, 3]
    );
    // LSNs continue after a restart.
    assert_eq!(append_sync(&wal, vec![b"d".to_vec()]).expect("ok"), 4..=4);
    drop(wal);
    // Records at or below skip_upto are not replayed, but numbering still continues.
    let (wal, replay) = Wal::open(WalConfig::new(dir.path()), 3).expect("reopen");
    assert_eq!(payloads(&replay), vec![b"d".to_vec()]);
    assert_eq!(append_sync(&wal, vec![b"e".to_vec()]).expect("ok"), 5..=5);
}

#[test]
fn torn_tail_is_truncated_and_later_writes_survive() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let (wal, _) = Wal::open(WalConfig::new(dir.path()), 0).expect("open");
        append_sync(&wal, vec![b"one".to_vec(), b"two".to_vec()]).expect("ok");
    }
    // Simulate a crash mid-write: half a frame where the next write would have gone, over
    // the end mark.
    let segs = list_segments(dir.path()).expect("list");
    let last = segment_path(dir.path(), segs[segs.len() - 1]);
    let mut f = OpenOptions::new()
        .write(true)
        .open(&last)
        .expect("open seg");
    f.seek(SeekFrom::End(-(HEADER as i64))).expect("seek");
    f.write_all(&[40, 0, 0, 0, 1, 2, 3]).expect("write");
    drop(f);
    {
        let (wal, replay) = Wal::open(WalConfig::new(dir.path()), 0).expect("open torn");
        assert_eq!(payloads(&replay), vec![b"one".to_vec(), b"two".to_vec()]);
        append_sync(&wal, vec![b"three".to_vec()]).expect("ok");
    }
    let (_wal, replay) = Wal::open(WalConfig::new(dir.path()), 0).expect("open again");
    assert_eq!(
        payloads(&replay),
        vec![b"one".to_vec(), b"two".to_vec(), b"three".to_vec()]
    );
}

#[test]
fn corrupt_record_in_tail_is_cut_and_in_older_segment_is_an_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let (wal, _) = Wal::open(WalConfig::new(dir.path()), 0).expect("open");
        append_sync(&wal, vec![b"keep".to_vec(), b"flip".to_vec()]).expect("ok");
    }
    // A restart starts a new segment, so the first is no longer the tail.
    drop(Wal::open(WalConfig::new(dir.path()), 0).expect("reopen"));
    let segs = list_segments(dir.path()).expect("list");
    let first = segment_path(dir.path(), segs[0]);
    let mut data = fs::read(&first).expect("read");
    // The last byte of the last record, before the end mark.
    let n = data.len() - HEADER;
    data[n - 1] ^= 0xff;
    fs::write(&first, &data).expect("write");
    assert!(matches!(
        Wal::open(WalConfig::new(dir.path()), 0),
        Err(WalError::Corrupt { .. })
    ));
    // Remove the newer empty segment: now the bad record is in the tail and is cut.
    for s in &segs[1..] {
        fs::remove_file(segment_path(dir.path(), *s)).expect("rm");
    }
    let (_wal, replay) = Wal::open(WalConfig::new(dir.path()), 0).expect("open");
    assert_eq!(payloads(&replay), vec![b"keep".to_vec()]);
}

/// A WAL rotating past 100 bytes, holding `n` records of 60 bytes (76-byte frames: two
/// per segment): LSN i + 1 holds 60 bytes of value i.
fn small_segments(dir: &Path, n: u8) -> (WalConfig, Wal) {
    let mut cfg = WalConfig::new(dir);
    cfg.segment_bytes = 100;
    let (wal, _) = Wal::open(cfg.clone(), 0).expect("open");
    for i in 0..n {
        append_sync(&wal, vec![vec![i; 60]]).expect("ok");
    }
    (cfg, wal)
}

#[test]
fn rotation_and_trim() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (cfg, wal) = small_segments(dir.path(), 10);
    assert!(wal.segment_count() >= 5, "{}", wal.segment_count());
    let removed = wal.trim(6).expect("trim");
    assert!(removed >= 3);
    drop(wal);
    let (_wal, replay) = Wal::open(cfg, 6).expect("reopen");
    assert_eq!(
        replay.iter().map(|r| r.lsn).collect::<Vec<_>>(),
        vec![7, 8, 9, 10]
    );
}

#[test]
fn concurrent_appends_complete_in_lsn_order() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (wal, _) = Wal::open(WalConfig::new(dir.path()), 0).expect("open");
    let wal = Arc::new(wal);
    let order = Arc::new(Mutex::new(Vec::new()));
    let (tx, rx) = channel();
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let wal = wal.clone();
            let order = order.clone();
            let tx = tx.clone();
            std::thread::spawn(move || {
                for i in 0..50u32 {
                    let order = order.clone();
                    let tx = tx.clone();
                    wal.append(
                        vec![format!("{t}-{i}").into_bytes(); 3],
                        Box::new(move |r| {
                            if let Ok(range) = r {
                                order.lock().push(*range.start());
                            }
                            let _ = tx.send(());
                        }),
                    );
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("join");
    }
    for _ in 0..200 {
        rx.recv().expect("completion");
    }
    let got = order.lock().clone();
    let expected: Vec<u64> = (0..200).map(|i| 1 + 3 * i).collect();
    assert_eq!(got, expected);
    assert_eq!(wal.pending_bytes(), 0);
}

fn spares(dir: &Path) -> usize {
    list_files(dir).expect("list").1.len()
}

#[test]
fn trimmed_segments_are_reused_and_their_old_records_never_replayed() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Two 76-byte frames per segment: segments 1, 3, 5 and the active 7.
    let (cfg, wal) = small_segments(dir.path(), 6);
    assert_eq!(wal.trim(6).expect("trim"), 3);
    assert_eq!(
        spares(dir.path()),
        MAX_SPARES,
        "kept for reuse, the rest deleted"
    );
    // One 106-byte frame per segment now: the next two rotations take the spares, the
    // third makes a new file.
    for i in 6..9u8 {
        append_sync(&wal, vec![vec![i; 90]]).expect("ok");
    }
    assert_eq!(spares(dir.path()), 0);
    assert_eq!(list_segments(dir.path()).expect("list"), vec![7, 8, 9, 10]);
    let reused = fs::metadata(segment_path(dir.path(), 8))
        .expect("stat")
        .len();
    assert_eq!(
        reused, 168,
        "a reused file keeps its size: old bytes follow the new record"
    );
    wal.close();
    drop(wal);
    let (wal, replay) = Wal::open(cfg.clone(), 6).expect("reopen");
    assert_eq!(
        replay
            .iter()
            .map(|r| (r.lsn, r.payload.clone()))
            .collect::<Vec<_>>(),
        vec![(7, vec![6u8; 90]), (8, vec![7u8; 90]), (9, vec![8u8; 90])]
    );
    assert_eq!(append_sync(&wal, vec![b"x".to_vec()]).expect("ok"), 10..=10);
}

#[test]
fn a_spare_renamed_into_place_before_its_first_write_replays_as_empty() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (cfg, wal) = small_segments(dir.path(), 4);
    wal.trim(2).expect("trim");
    wal.close();
    drop(wal);
    // A crash right after a rotation: the spare (records 1.., well formed) is the last
    // segment, named for LSN 5, and nothing of LSN 5 was written.
    let (_, spare_files) = list_files(dir.path()).expect("list");
    let seg5 = segment_path(dir.path(), 5);
    let _ = fs::remove_file(&seg5);
    fs::rename(&spare_files[0], &seg5).expect("rename");
    let (wal, replay) = Wal::open(cfg.clone(), 2).expect("reopen");
    assert_eq!(replay.iter().map(|r| r.lsn).collect::<Vec<_>>(), vec![3, 4]);
    // The segment is emptied and written from its start.
    assert_eq!(append_sync(&wal, vec![b"y".to_vec()]).expect("ok"), 5..=5);
    wal.close();
    drop(wal);
    let (_wal, replay) = Wal::open(cfg, 2).expect("reopen again");
    assert_eq!(
        replay
            .iter()
            .map(|r| (r.lsn, r.payload.clone()))
            .collect::<Vec<_>>(),
        vec![(3, vec![2u8; 60]), (4, vec![3u8; 60]), (5, b"y".to_vec())]
    );
}

static STARTED: Mutex<Vec<String>> = Mutex::new(Vec::new());

#[test]
fn thread_start_runs_on_the_writer_and_the_completion_thread() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = WalConfig::new(dir.path());
    cfg.thread_start = || {
        let name = std::thread::current().name().unwrap_or("").to_string();
        STARTED.lock().push(name);
    };
    let (wal, _) = Wal::open(cfg, 0).expect("open");
    append_sync(&wal, vec![b"a".to_vec()]).expect("ok");
    wal.close();
    let mut names = STARTED.lock().clone();
    names.sort();
    assert_eq!(names, vec!["sonde-wal", "sonde-wal-done"]);
}
