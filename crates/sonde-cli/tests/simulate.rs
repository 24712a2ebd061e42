//! `sonde simulate --url` against a real server: history then live traffic, every event
//! accounted for (accepted rows stored, duplicates dropped, invalid ones quarantined).

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
