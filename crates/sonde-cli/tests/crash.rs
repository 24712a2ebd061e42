//! Crash safety of the real binary: several clients stream batches while the server is
//! SIGKILLed at random moments and restarted. Every acknowledged event must be stored
//! exactly once, and no event may be half-written (a decision without all its items).

use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const ROUNDS: usize = 20;
const CLIENTS: usize = 4;
const BATCH: usize = 50;

/// A minimal blocking HTTP/1.1 request, one connection per call.
fn http(
    port: u16,
    method: &str,
    path: &str,
    key: &str,
    body: &str,
) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(20)))?;
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {key}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes())?;
    let mut resp = String::new();
    s.read_to_string(&mut resp)?;
    let status = resp
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other("no status line"))?;
    let body = resp.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
    Ok((status, body))
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn batch_body(client: usize, seq: usize, items: usize) -> (String, Vec<String>) {
    let mut ids = Vec::with_capacity(BATCH);
    let events: Vec<String> = (0..BATCH)
        .map(|i| {
            let id = format!("c{client}-b{seq}-e{i}");
            let item_list: Vec<String> = (1..=items)
                .map(|p| format!(r#"{{"item_id":"it{p}","position":{p},"score":0.{p}}}"#))
                .collect();
            let ev = format!(
                r#"{{"type":"decision","event_id":"{id}","timestamp":1767225600000,"user_id":"user-{client}","request_id":"r-{id}","surface":"home_feed","model":{{"name":"m","version":"1"}},"items":[{}]}}"#,
                item_list.join(",")
            );
            ids.push(id);
            ev
        })
        .collect();
    (format!("[{}]", events.join(",")), ids)
}

fn start(dir: &std::path::Path, port: u16) -> (Child, Option<String>) {
    // Only the first start, on an empty directory, prints the keys.
    let fresh = !dir.join("project.json").exists();
    let mut child = Command::new(env!("CARGO_BIN_EXE_sonde"))
        .args([
            "serve",
            "--flush-interval-secs",
            "1",
            // The check reads every stored id of a client in one result.
            "--query-max-rows",
            "10000000",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--data-dir",
        ])
        .arg(dir)
        .env("SONDE_LOG", "warn")
        .stdout(if fresh { Stdio::piped() } else { Stdio::null() })
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn sonde");
    let mut line = None;
    if let Some(out) = child.stdout.take() {
        let mut l = String::new();
        std::io::BufRead::read_line(&mut std::io::BufReader::new(out), &mut l).expect("keys line");
        line = Some(l);
    }
    (child, line)
}

fn wait_ready(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Ok((200, _)) = http(port, "GET", "/readyz", "", "") {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("server did not become ready");
}

#[test]
fn acked_events_survive_sigkill_exactly_once() {
    let dir = tempfile::tempdir().expect("tmp");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port();
    let (mut server, line) = start(dir.path(), port);
    let keys: serde_json::Value =
        serde_json::from_str(&line.expect("keys line")).expect("keys json");
    let write_key = keys["write_key"].as_str().expect("write key").to_string();
    let read_key = keys["read_key"].as_str().expect("read key").to_string();
    wait_ready(port);

    let acked: Arc<Mutex<HashSet<String>>> = Arc::default();
    let attempted: Arc<Mutex<HashSet<String>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let (acked, attempted, stop, key) = (
                acked.clone(),
                attempted.clone(),
                stop.clone(),
                write_key.clone(),
            );
            std::thread::spawn(move || {
                let mut seq = 0;
                loop {
                    let (body, ids) = batch_body(c, seq, 1 + (seq % 10));
                    attempted.lock().expect("lock").extend(ids.iter().cloned());
                    // Retry the same batch (same event ids) until it is acknowledged.
                    loop {
                        match http(port, "POST", "/v1/events", &key, &body) {
                            Ok((200, resp)) => {
                                let v: serde_json::Value =
                                    serde_json::from_str(&resp).expect("json");
                                let stored = v["accepted"].as_u64().unwrap_or(0)
                                    + v["duplicates"].as_u64().unwrap_or(0);
                                assert_eq!(stored, BATCH as u64, "{resp}");
                                acked.lock().expect("lock").extend(ids.iter().cloned());
                                break;
                            }
                            _ => std::thread::sleep(Duration::from_millis(10)),
                        }
                    }
                    seq += 1;
                    if stop.load(Ordering::Acquire) {
                        return;
                    }
                }
            })
        })
        .collect();

    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(1)
        | 1;
    println!("kill schedule seed {seed}");
    let mut rng = Rng(seed);
    for round in 0..ROUNDS {
        std::thread::sleep(Duration::from_millis(150 + rng.next() % 900));
        let before = acked.lock().expect("lock").len();
        server.kill().expect("SIGKILL");
        server.wait().expect("wait");
        let (s, _) = start(dir.path(), port);
        server = s;
        wait_ready(port);
        println!("round {round}: {before} events acked before the kill");
    }
    stop.store(true, Ordering::Release);
    for c in clients {
        c.join().expect("client");
    }

    let query = |sql: &str| -> Vec<Vec<serde_json::Value>> {
        let body = serde_json::json!({"sql": sql}).to_string();
        let (status, resp) = http(port, "POST", "/v1/query", &read_key, &body).expect("query");
        assert_eq!(status, 200, "{resp}");
        let v: serde_json::Value = serde_json::from_str(&resp).expect("json");
        assert_eq!(v["truncated"], false, "result cut at the row limit: {sql}");
        serde_json::from_value(v["rows"].clone()).expect("rows")
    };
    let acked = acked.lock().expect("lock").clone();
    let attempted = attempted.lock().expect("lock").clone();
    assert!(
        acked.len() >= ROUNDS * BATCH,
        "too little traffic: {}",
        acked.len()
    );

    let dupes =
        query("SELECT event_id, count(*) FROM decisions GROUP BY event_id HAVING count(*) > 1");
    assert!(dupes.is_empty(), "stored more than once: {dupes:?}");
    let stored: HashSet<String> = (0..CLIENTS)
        .flat_map(|c| {
            query(&format!(
                "SELECT event_id FROM decisions WHERE event_id LIKE 'c{c}-%'"
            ))
        })
        .filter_map(|r| r[0].as_str().map(str::to_string))
        .collect();
    let total = query("SELECT count(*) FROM decisions")[0][0]
        .as_u64()
        .unwrap_or(0);
    assert_eq!(
        total as usize,
        stored.len(),
        "rows not attributable to a client"
    );
    let lost: Vec<&String> = acked
        .iter()
        .filter(|id| !stored.contains(*id))
        .take(5)
        .collect();
    assert!(
        lost.is_empty(),
        "acked but missing: {lost:?} (of {})",
        acked.len()
    );
    assert!(
        stored.iter().all(|id| attempted.contains(id)),
        "stored an id nobody sent"
    );
    let torn = query(
        "SELECT d.event_id FROM decisions d LEFT JOIN \
           (SELECT event_id, count(*) AS n, count(DISTINCT position) AS p FROM decision_items GROUP BY event_id) i \
         ON d.event_id = i.event_id WHERE i.n IS NULL OR i.n <> d.item_count OR i.p <> d.item_count",
    );
    assert!(torn.is_empty(), "half-written decisions: {torn:?}");
    // The latency rollups were committed with the WAL position of the decisions they count:
    // after 20 kills they still count every stored decision once.
    let rolled = query(
        "SELECT CAST(coalesce(sum(decisions), 0) AS BIGINT) FROM rollups_1m WHERE component = 'total'",
    )[0][0]
        .as_u64()
        .unwrap_or(0);
    assert_eq!(
        rolled, total,
        "rollups_1m counts {rolled} decisions, decisions holds {total}"
    );
    println!(
        "{} acked, {} stored, {} attempted; all acked present once",
        acked.len(),
        stored.len(),
        attempted.len()
    );
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(server.id().to_string())
        .status();
    let _ = server.wait();
}
