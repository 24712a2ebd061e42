//! The `sonde` binary's own commands: init, offline query, config errors, simulate (to a
//! file, and through the HTTP API of a real server).

use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn sonde(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_sonde"))
        .args(args)
        .env("SONDE_LOG", "warn")
        .output()
        .expect("run sonde")
}

#[test]
fn init_prints_keys_once_and_query_reads_offline() {
    let dir = tempfile::tempdir().expect("tmp");
    let data = dir.path().join("data");
    let data = data.to_str().expect("utf8");
    let out = sonde(&["init", "--data-dir", data]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).expect("utf8");
    assert_eq!(stdout.lines().count(), 1);
    let keys: serde_json::Value = serde_json::from_str(&stdout).expect("json line");
    for k in ["project", "write_key", "read_key", "admin_key"] {
        assert!(
            keys[k].as_str().is_some_and(|s| s.len() > 8),
            "{k} in {stdout}"
        );
    }
    let again = sonde(&["init", "--data-dir", data]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already holds a Sonde project"));

    // A project with no events yet: offline SQL still answers, from an empty store.
    std::fs::create_dir_all(dir.path().join("data/wal")).expect("wal dir");
    let out = sonde(&[
        "query",
        "--data-dir",
        data,
        "--format",
        "csv",
        "SELECT count(*) AS n FROM decisions",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "n\n0\n");

    let missing = sonde(&["query", "--data-dir", "/nonexistent/sonde", "SELECT 1"]);
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("holds no Sonde data"));
}

#[test]
fn bad_config_file_is_a_clear_error() {
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = dir.path().join("sonde.toml");
    std::fs::write(&cfg, "listen = \"not an address\"\n").expect("write");
    let out = sonde(&["serve", "--config", cfg.to_str().expect("utf8")]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("parsing config file") && err.contains("listen"),
        "{err}"
    );
}

#[test]
fn simulate_is_deterministic_and_writes_truth() {
    let dir = tempfile::tempdir().expect("tmp");
    let path = |n: &str| dir.path().join(n).to_string_lossy().into_owned();
    for name in ["a.ndjson", "b.ndjson"] {
        let out = sonde(&[
            "simulate",
            "--decisions",
            "500",
            "--seed",
            "9",
            "--out",
            &path(name),
            "--truth",
            &path("truth.json"),
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let a = std::fs::read(path("a.ndjson")).expect("a");
    assert_eq!(a, std::fs::read(path("b.ndjson")).expect("b"));
    assert!(a.split(|b| *b == b'\n').filter(|l| !l.is_empty()).count() > 500);
    let truth: serde_json::Value =
        serde_json::from_slice(&std::fs::read(path("truth.json")).expect("truth")).expect("json");
    let (t, delivery) = (&truth["truth"], &truth["delivery"]);
    assert_eq!(t["seed"], 9);
    assert_eq!(
        t["control"]["decisions"].as_u64().unwrap_or(0)
            + t["treatment"]["decisions"].as_u64().unwrap_or(0),
        500
    );
    // Every line written is a scheduled event, a retry copy or an invalid event.
    let lines = a.split(|b| *b == b'\n').filter(|l| !l.is_empty()).count() as u64;
    let scheduled = ["events", "duplicates", "invalid"]
        .iter()
        .map(|k| delivery[k].as_u64().unwrap_or(0))
        .sum::<u64>();
    assert_eq!(lines, scheduled);
}

fn scalar(url: &str, key: &str, sql: &str) -> u64 {
    let out = sonde(&["query", "--url", url, "--key", key, "--format", "csv", sql]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).expect("utf8");
    text.lines()
        .nth(1)
        .and_then(|l| l.trim().parse().ok())
        .unwrap_or_else(|| panic!("no number in {text:?}"))
}

/// The numbers of "accepted A · duplicates D · rejected R · retried requests X · failed batches F".
fn tally(line: &str) -> Vec<u64> {
    line.split('·')
        .map(|part| {
            part.split_whitespace()
                .last()
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("no number in {part:?} of {line:?}"))
        })
        .collect()
}

#[test]
fn simulated_traffic_is_stored_deduplicated_and_quarantined() {
    let dir = tempfile::tempdir().expect("tmp");
    let data = dir.path().join("data");
    let out = sonde(&["init", "--data-dir", data.to_str().expect("utf8")]);
    assert!(out.status.success());
    let keys: serde_json::Value = serde_json::from_slice(&out.stdout).expect("keys");
    let (wk, rk) = (
        keys["write_key"].as_str().expect("wk").to_string(),
        keys["read_key"].as_str().expect("rk").to_string(),
    );
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let url = format!("http://127.0.0.1:{port}");
    let mut server = Command::new(env!("CARGO_BIN_EXE_sonde"))
        .args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--data-dir",
        ])
        .arg(&data)
        .env("SONDE_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn server");
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "server did not start");
        std::thread::sleep(Duration::from_millis(50));
    }

    // Half an hour of history at 10 events/s, then 3 s live.
    let out = sonde(&[
        "simulate",
        "--url",
        &url,
        "--key",
        &wk,
        "--seed",
        "4",
        "--backfill",
        "0.02",
        "--backfill-rate",
        "10",
        "--rate",
        "200",
        "--duration",
        "3s",
        "--scenario",
        "incidents",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let t = tally(stdout.lines().last().expect("tally line"));
    let (accepted, duplicates, rejected, failed) = (t[0], t[1], t[2], t[4]);
    assert!(accepted > 10_000, "{stdout}");
    assert!(
        duplicates > 0 && rejected > 0,
        "the default mess sends retries and invalid events: {stdout}"
    );
    assert_eq!(failed, 0);

    let stored: u64 = [
        "decisions",
        "interactions",
        "conversions",
        "touches",
        "identities",
    ]
    .iter()
    .map(|t| scalar(&url, &rk, &format!("SELECT count(*) FROM {t}")))
    .sum();
    assert_eq!(stored, accepted);
    assert_eq!(
        scalar(&url, &rk, "SELECT count(*) FROM quarantine"),
        rejected
    );
    assert_eq!(
        scalar(
            &url,
            &rk,
            "SELECT count(*) - count(DISTINCT event_id) FROM decisions"
        ),
        0
    );
    let _ = server.kill();
    let _ = server.wait();
}
