//! The store end to end: write, query buffer and files, restart, dedup, compaction.

use datafusion::arrow::array::{AsArray, RecordBatch};
use datafusion::arrow::datatypes::Int64Type;
use serde_json::json;
use sonde_model::{KeyedPseudonymizer, Limits, ParseCtx, TimePolicy, parse_event};
use sonde_store::{QuarantineEntry, QueryLimits, Seen, Store, StoreConfig, StoreError, WriteBatch};

fn decision(id: &str, request: &str, variant: &str, hour_offset: i64) -> sonde_model::Event {
    let p = KeyedPseudonymizer::new("k1", b"secret");
    let now = chrono::Utc::now().timestamp_millis();
    let v = json!({
        "type": "decision", "event_id": id, "timestamp": now - hour_offset * 3_600_000,
        "user_id": "u1", "request_id": request, "surface": "home_feed",
        "model": {"name": "ranker", "version": "v1"},
        "experiments": [{"id": "ab", "variant": variant}],
        "items": [
            {"item_id": "a", "position": 1, "score": 0.5},
            {"item_id": "b", "position": 2, "score": 0.25}
        ],
        "latency_ms": {"total": 20, "components": {"inference": 12}}
    });
    let ctx = ParseCtx {
        policy: TimePolicy::default(),
        pseudonymizer: &p,
        received_at: now,
        backfill: true,
        limits: Limits::default(),
    };
    parse_event(&serde_json::to_vec(&v).expect("json"), &ctx).expect("valid")
}

fn count(batches: &[RecordBatch]) -> i64 {
    batches[0].column(0).as_primitive::<Int64Type>().value(0)
}

async fn scalar(store: &Store, sql: &str) -> i64 {
    let r = store
        .query(sql, QueryLimits::default())
        .await
        .expect("query");
    count(&r.batches)
}

/// Decisions counted by the live rollups, and by the `rollups_1m` table.
async fn rollup_decisions(store: &Store) -> (u64, i64) {
    let now = chrono::Utc::now().timestamp_millis();
    let live = store.with_rollups(|r| {
        r.window(
            &sonde_latency::Filter::default(),
            now - 5 * 3_600_000,
            now + 60_000,
            None,
        )
        .decisions
    });
    let sql = scalar(
        store,
        "SELECT CAST(coalesce(sum(decisions), 0) AS BIGINT) FROM rollups_1m WHERE component = 'total'",
    )
    .await;
    (live, sql)
}

fn config(dir: &std::path::Path) -> StoreConfig {
    let mut c = StoreConfig::new(dir);
    c.flush_interval = std::time::Duration::from_secs(3600);
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_query_restart_dedup_compact() {
    let dir = tempfile::tempdir().expect("tmp");
    let store = Store::open(config(dir.path())).expect("open");
    // decision() stamps the current time: build each re-sent event once.
    let e1 = decision("e1", "r1", "control", 0);
    let e3 = decision("e3", "r3", "control", 0);
    let out = store
        .write(WriteBatch {
            events: vec![e1.clone(), decision("e2", "r2", "treatment", 3)],
            quarantine: vec![QuarantineEntry {
                received_at: 0,
                event_id: Some("bad".into()),
                code: "missing_field".into(),
                field: "surface".into(),
                message: "surface is required".into(),
                raw: "{}".into(),
                key_id: "k1".into(),
            }],
            replays: vec![],
            spans: vec![],
        })
        .await
        .expect("write");
    assert_eq!(out.seen, vec![Seen::New, Seen::New]);
    assert_eq!(out.quarantine_ids.len(), 1);
    // Visible straight from the buffer.
    assert_eq!(
        scalar(&store, "SELECT count(*) FROM decision_items").await,
        4
    );
    assert_eq!(rollup_decisions(&store).await, (2, 2));
    assert_eq!(
        scalar(
            &store,
            "SELECT count(*) FROM decisions WHERE experiments['ab'] = 'treatment'"
        )
        .await,
        1
    );
    assert_eq!(
        scalar(
            &store,
            "SELECT CAST(sum(latency_components['inference']) AS BIGINT) FROM decisions"
        )
        .await,
        24
    );
    store.flush().expect("flush");
    assert_eq!(store.buffered_rows(), 0);
    assert_eq!(rollup_decisions(&store).await, (2, 2));
    assert_eq!(
        store
            .manifest()
            .files
            .iter()
            .filter(|f| f.table == "decisions")
            .count(),
        2
    );
    assert_eq!(
        scalar(&store, "SELECT count(*) FROM decision_items").await,
        4
    );
    assert_eq!(scalar(&store, "SELECT count(*) FROM quarantine").await, 1);

    // A retry after the flush is a duplicate; a changed event under the same id conflicts.
    let out = store
        .write(WriteBatch {
            events: vec![e1.clone(), decision("e2", "r2-changed", "treatment", 3)],
            ..Default::default()
        })
        .await
        .expect("write");
    assert_eq!(out.seen[0], Seen::Duplicate);
    assert_eq!(out.seen[1], Seen::Conflict);
    store
        .write(WriteBatch {
            events: vec![e3.clone()],
            ..Default::default()
        })
        .await
        .expect("write");
    store.close().expect("close");
    drop(store);

    // After a restart: the unflushed e3 comes back from the WAL; dedup state survives; the
    // rollups hold the flushed decisions from their rows and e3 from the WAL, once each.
    let store = Store::open(config(dir.path())).expect("reopen");
    assert_eq!(scalar(&store, "SELECT count(*) FROM decisions").await, 3);
    assert_eq!(rollup_decisions(&store).await, (3, 3));
    let out = store
        .write(WriteBatch {
            events: vec![e3],
            ..Default::default()
        })
        .await
        .expect("write");
    assert_eq!(out.seen[0], Seen::Duplicate);
    store.flush().expect("flush");
    store.compact().expect("compact");
    assert_eq!(scalar(&store, "SELECT count(*) FROM decisions").await, 3);
    let parts = store
        .manifest()
        .files
        .iter()
        .filter(|f| f.table == "decisions")
        .count();
    assert_eq!(parts, 2, "one file per hour partition after compaction");
    assert_eq!(rollup_decisions(&store).await, (3, 3));
    assert_eq!(
        scalar(
            &store,
            "SELECT CAST(sum(samples) AS BIGINT) FROM rollups_1m WHERE component = 'inference'"
        )
        .await,
        3
    );
    store.close().expect("close");

    // Offline, read-only.
    let ro = Store::open_read_only(dir.path()).expect("read-only");
    assert_eq!(scalar(&ro, "SELECT count(*) FROM decision_items").await, 6);
    assert_eq!(rollup_decisions(&ro).await, (3, 3));
}

#[tokio::test]
async fn sql_is_read_only_and_limited() {
    let dir = tempfile::tempdir().expect("tmp");
    let store = Store::open(config(dir.path())).expect("open");
    for sql in [
        "CREATE TABLE x AS SELECT 1",
        "INSERT INTO decisions SELECT * FROM decisions",
        "DROP TABLE decisions",
        "SET datafusion.execution.batch_size = 1",
        "COPY decisions TO '/tmp/x.parquet'",
    ] {
        let err = store
            .query(sql, QueryLimits::default())
            .await
            .expect_err(sql);
        assert!(matches!(err, StoreError::Query(_)), "{sql}: {err:?}");
    }
    let limits = QueryLimits {
        max_rows: 10,
        ..QueryLimits::default()
    };
    let r = store
        .query("SELECT * FROM generate_series(1, 1000)", limits)
        .await
        .expect("query");
    assert!(r.truncated);
    assert_eq!(r.batches.iter().map(|b| b.num_rows()).sum::<usize>(), 10);
    let limits = QueryLimits {
        timeout: std::time::Duration::from_millis(50),
        ..QueryLimits::default()
    };
    let err = store
        .query(
            "SELECT count(*) FROM generate_series(1, 2000000000) a",
            limits,
        )
        .await
        .expect_err("timeout");
    assert!(matches!(err, StoreError::QueryTimeout(_)), "{err:?}");
}

/// Flushes from several threads at once (the two flush threads, shutdown, `Store::flush`)
/// each write a row once: a second concurrent flush must not write the batches the first
/// is writing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_flushes_write_each_row_once() {
    let dir = tempfile::tempdir().expect("tmp");
    let store = std::sync::Arc::new(Store::open(config(dir.path())).expect("open"));
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flushers: Vec<_> = (0..2)
        .map(|_| {
            let (store, done) = (store.clone(), done.clone());
            std::thread::spawn(move || {
                let mut n = 0;
                while !done.load(std::sync::atomic::Ordering::Acquire) {
                    store.flush().expect("flush");
                    n += 1;
                }
                n
            })
        })
        .collect();
    let mut written = 0;
    for i in 0..300 {
        let events: Vec<_> = (0..4)
            .map(|j| decision(&format!("c{i}-{j}"), &format!("r{i}-{j}"), "control", 0))
            .collect();
        written += events.len() as i64;
        store
            .write(WriteBatch {
                events,
                quarantine: vec![],
                replays: vec![],
                spans: vec![],
            })
            .await
            .expect("write");
    }
    done.store(true, std::sync::atomic::Ordering::Release);
    let flushes: usize = flushers.into_iter().map(|h| h.join().expect("join")).sum();
    assert!(flushes > 2, "the flush threads ran {flushes} times");
    store.flush().expect("flush");
    assert_eq!(
        scalar(&store, "SELECT count(*) FROM decisions").await,
        written
    );
    assert_eq!(
        scalar(&store, "SELECT count(*) FROM decision_items").await,
        2 * written
    );
    let in_files: u64 = store
        .manifest()
        .files
        .iter()
        .filter(|f| f.table == "decisions")
        .map(|f| f.rows)
        .sum();
    assert_eq!(in_files, written as u64);
}

/// How many files with `extension` the plan of `SELECT count(*) {from}` scans.
async fn scanned(store: &Store, from: &str, extension: &str) -> usize {
    let plan = store
        .query(
            &format!("EXPLAIN SELECT count(*) {from}"),
            QueryLimits::default(),
        )
        .await
        .expect("explain");
    let text: String = plan
        .batches
        .iter()
        .flat_map(|b| {
            b.column(1)
                .as_string::<i32>()
                .iter()
                .flatten()
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .collect();
    text.matches(extension).count()
}

/// `decision_items` reads `decisions`: a time filter on it must still skip the files of
/// other hours, as it does on `decisions` itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decision_items_time_filters_prune_decisions_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(config(dir.path())).expect("open");
    store
        .write(WriteBatch {
            events: vec![
                decision("now", "r0", "a", 0),
                decision("then", "r3", "a", 3),
            ],
            ..WriteBatch::default()
        })
        .await
        .expect("write");
    store.flush().expect("flush");
    let files = |t: &str| {
        store
            .manifest()
            .files
            .iter()
            .filter(|f| f.table == t)
            .count()
    };
    assert_eq!(files("decisions"), 2);
    let since =
        chrono::DateTime::from_timestamp_millis(chrono::Utc::now().timestamp_millis() - 3_600_000)
            .expect("time")
            .to_rfc3339();
    let filter = format!("FROM decision_items WHERE event_time >= '{since}'");
    assert_eq!(
        scalar(&store, &format!("SELECT count(*) {filter}")).await,
        2
    );
    // Flushed files are Arrow IPC; compaction rewrites each hour's lone file as Parquet.
    assert_eq!(scanned(&store, &filter, ".arrow").await, 1);
    store.compact().expect("compact");
    assert_eq!(files("decisions"), 2);
    assert_eq!(scanned(&store, &filter, ".parquet").await, 1);
    assert_eq!(scanned(&store, &filter, ".arrow").await, 0);
    assert_eq!(
        scalar(&store, &format!("SELECT count(*) {filter}")).await,
        2
    );
    // Unfiltered, both hours are read.
    assert_eq!(
        scalar(&store, "SELECT count(*) FROM decision_items").await,
        4
    );
}

/// A store whose buffer is full (two rows over a cap of one), nothing flushing on its own.
async fn full_store(dir: &std::path::Path, wait: std::time::Duration) -> Store {
    let mut c = config(dir);
    c.max_buffered_rows = 1;
    c.admit_wait = wait;
    let store = Store::open(c).expect("open");
    let batch = WriteBatch {
        events: vec![decision("w1", "r1", "a", 0), decision("w2", "r2", "a", 0)],
        ..WriteBatch::default()
    };
    store.write(batch).await.expect("first write");
    assert!(matches!(store.admit(), Err(StoreError::Overloaded)));
    store
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_buffer_holds_writes_until_a_flush_makes_room() {
    let dir = tempfile::tempdir().expect("tmp");
    let store = full_store(dir.path(), std::time::Duration::from_millis(50)).await;
    // Nothing makes room: the wait runs out and the write is refused.
    assert!(matches!(
        store.admit_within().await,
        Err(StoreError::Overloaded)
    ));

    let dir = tempfile::tempdir().expect("tmp");
    let store =
        std::sync::Arc::new(full_store(dir.path(), std::time::Duration::from_secs(30)).await);
    let waiting = tokio::spawn({
        let store = store.clone();
        async move { store.admit_within().await }
    });
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    assert!(
        !waiting.is_finished(),
        "the write waits while the buffer is full"
    );
    store.flush().expect("flush");
    let admitted = tokio::time::timeout(std::time::Duration::from_secs(10), waiting)
        .await
        .expect("woken by the flush, well before its 30 s wait ends")
        .expect("task");
    assert!(admitted.is_ok(), "{admitted:?}");
}

/// Rewrite the flushed IPC file of `decisions` without its last column, as a flush of an
/// older version (before that column was added) would have written it. Returns its name.
fn drop_last_column_of_flush_file(dir: &std::path::Path) -> String {
    use datafusion::arrow::ipc::reader::FileReader;
    use datafusion::arrow::ipc::writer::FileWriter;
    let manifest = sonde_store::manifest::Manifest::load(dir).expect("manifest");
    let f = manifest
        .files
        .iter()
        .find(|f| f.table == "decisions")
        .expect("a decisions file");
    assert!(f.path.ends_with(".arrow"), "{}", f.path);
    let path = dir.join(&f.path);
    let reader = FileReader::try_new(std::fs::File::open(&path).expect("open"), None).expect("ipc");
    let schema = reader.schema();
    let last = schema.fields().len() - 1;
    assert!(schema.field(last).is_nullable());
    let keep: Vec<usize> = (0..last).collect();
    let old = std::sync::Arc::new(schema.project(&keep).expect("project"));
    let batches: Vec<RecordBatch> = reader
        .map(|b| b.expect("batch").project(&keep).expect("project"))
        .collect();
    let mut w =
        FileWriter::try_new(std::fs::File::create(&path).expect("create"), &old).expect("writer");
    for b in &batches {
        w.write(b).expect("write");
    }
    w.finish().expect("finish");
    schema.field(last).name().clone()
}

/// A flush file of an older schema reads with the new column null: in memory when the
/// store is opened read-only, rewritten as Parquet when it is opened for writing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flush_files_of_an_older_schema_read_with_new_columns_null() {
    let dir = tempfile::tempdir().expect("tmp");
    let store = Store::open(config(dir.path())).expect("open");
    store
        .write(WriteBatch {
            events: vec![decision("d1", "r1", "a", 0)],
            ..WriteBatch::default()
        })
        .await
        .expect("write");
    store.close().expect("close");
    drop(store);
    let column = drop_last_column_of_flush_file(dir.path());
    let nulls = format!("SELECT count(*) FROM decisions WHERE {column} IS NULL");

    let read_only = Store::open_read_only(dir.path()).expect("open read-only");
    assert_eq!(scalar(&read_only, &nulls).await, 1);
    assert_eq!(
        scalar(&read_only, "SELECT count(*) FROM decision_items").await,
        2
    );
    drop(read_only);

    let store = Store::open(config(dir.path())).expect("reopen");
    let paths: Vec<String> = store
        .manifest()
        .files
        .iter()
        .filter(|f| f.table == "decisions")
        .map(|f| f.path.clone())
        .collect();
    assert_eq!(paths.len(), 1);
    assert!(paths[0].ends_with(".parquet"), "{paths:?}");
    assert_eq!(scalar(&store, &nulls).await, 1);
    assert_eq!(
        scalar(&store, "SELECT count(*) FROM decision_items").await,
        2
    );
}

/// Each flush spills its ids to a dedup run; the background merger folds them four at a
/// time, and every id stays a duplicate across the merges.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dedup_runs_merge_in_the_background() {
    let dir = tempfile::tempdir().expect("tmp");
    let store = Store::open(config(dir.path())).expect("open");
    let events: Vec<_> = (0..8)
        .map(|i| decision(&format!("m{i}"), &format!("r{i}"), "control", 0))
        .collect();
    for e in &events {
        let batch = WriteBatch {
            events: vec![e.clone()],
            ..WriteBatch::default()
        };
        assert_eq!(
            store.write(batch).await.expect("write").seen,
            vec![Seen::New]
        );
        store.flush().expect("flush");
    }
    // Eight runs of one id: [1, 1, 1, 1] merge into 4, then the next four into another 4.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while store.dedup_runs() > 2 && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(store.dedup_runs(), 2);
    let out = store
        .write(WriteBatch {
            events: events.clone(),
            ..WriteBatch::default()
        })
        .await
        .expect("write");
    assert_eq!(out.seen, vec![Seen::Duplicate; 8]);
    store.close().expect("close");
}
