use super::*;
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
    // Simulate a crash mid-write: half a frame at the end of the last segment.
    let segs = list_segments(dir.path()).expect("list");
    let last = segment_path(dir.path(), segs[segs.len() - 1]);
    let mut f = OpenOptions::new()
        .append(true)
        .open(&last)
        .expect("open seg");
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
    let n = data.len();
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

#[test]
fn rotation_and_trim() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = WalConfig::new(dir.path());
    cfg.segment_bytes = 100;
    let (wal, _) = Wal::open(cfg.clone(), 0).expect("open");
    for i in 0..10u8 {
        append_sync(&wal, vec![vec![i; 60]]).expect("ok");
    }
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
