//! Helpers shared by the CLI's test binaries: running `sonde`, a `sonde serve` on a fresh
//! project, plain HTTP on loopback.
#![allow(dead_code)] // each test binary uses its own subset

use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

pub fn sonde(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_sonde"))
        .args(args)
        .env("SONDE_LOG", "warn")
        .output()
        .expect("run sonde")
}

/// Run `sonde`, require success, and return what it printed.
pub fn sonde_ok(args: &[&str]) -> String {
    let out = sonde(args);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "sonde {args:?}: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// A `sonde serve` on a fresh project: kills the server when dropped.
pub struct Server {
    pub child: std::process::Child,
    pub url: String,
    pub write_key: String,
    pub read_key: String,
    pub _dir: tempfile::TempDir,
}

impl Server {
    /// The port the server listens on.
    pub fn port(&self) -> u16 {
        self.url
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .expect("port")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn start_server() -> Server {
    start_server_with(&[])
}

/// A `sonde serve` on a fresh project with extra arguments (`--config`, ...).
pub fn start_server_with(extra: &[&str]) -> Server {
    let dir = tempfile::tempdir().expect("tmp");
    let data = dir.path().join("data");
    let keys: serde_json::Value = serde_json::from_str(&sonde_ok(&[
        "init",
        "--data-dir",
        data.to_str().expect("utf8"),
    ]))
    .expect("keys");
    let port = free_port();
    let child = Command::new(env!("CARGO_BIN_EXE_sonde"))
        .args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--data-dir",
        ])
        .arg(&data)
        .args(extra)
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
    Server {
        child,
        url: format!("http://127.0.0.1:{port}"),
        write_key: keys["write_key"].as_str().expect("wk").to_string(),
        read_key: keys["read_key"].as_str().expect("rk").to_string(),
        _dir: dir,
    }
}

/// A plain HTTP/1.0 GET on loopback, with a bearer key if given; returns the body.
pub fn http_get(port: u16, path: &str, key: Option<&str>) -> String {
    use std::io::{Read, Write};
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    let auth = key.map_or_else(String::new, |k| format!("Authorization: Bearer {k}\r\n"));
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n{auth}\r\n").expect("request");
    let mut text = String::new();
    s.read_to_string(&mut text).expect("response");
    text.split_once("\r\n\r\n")
        .map(|(_, body)| body.to_string())
        .unwrap_or_default()
}

pub fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

/// The single number a SQL query answers, through `sonde query`.
pub fn scalar(url: &str, key: &str, sql: &str) -> u64 {
    let stdout = sonde_ok(&["query", "--url", url, "--key", key, "--format", "csv", sql]);
    stdout
        .lines()
        .nth(1)
        .and_then(|l| l.trim().parse().ok())
        .unwrap_or_else(|| panic!("no number in {stdout:?}"))
}
