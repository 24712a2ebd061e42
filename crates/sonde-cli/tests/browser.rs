//! The dashboard in a real browser: headless Chromium (Debian's `chromium` and
//! `chromium-driver`, which `.ci/run` installs) driven over WebDriver. A `sonde serve` fed by
//! the simulator; sign in, open every page, check the numbers shown against the JSON API,
//! apply a filter, watch a live update arrive without a reload, look at it on a phone, and
//! save a screenshot of every page. Then `sonde demo`'s one-time sign-in link.
//!
//! Screenshots go to the test's temporary directory; with `SONDE_UPDATE_SCREENSHOTS=1` they
//! replace those in `docs/screenshots/` that the README shows.

mod common;

use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{free_port, http_get, scalar, start_server_with, url_encode};
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};
use sonde_ui::number;

/// A child process killed when dropped.
struct Kill(Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn wait_for_port(port: u16, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "{what} did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// chromedriver on a free port.
fn start_chromedriver() -> (Kill, u16) {
    let port = free_port();
    let child = Command::new("chromedriver")
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "chromedriver not found ({e}): run .ci/run, or apt-get install chromium chromium-driver"
            )
        });
    wait_for_port(port, "chromedriver");
    (Kill(child), port)
}

/// A headless Chromium session (a fresh profile, so no cookies).
async fn browser(driver_port: u16, dark: bool) -> Client {
    let mut args = vec![
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1280,1000",
        "--lang=en-US",
    ];
    if dark {
        // The system setting pages follow: `prefers-color-scheme: dark`.
        args.push("--force-dark-mode");
    }
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": "/usr/bin/chromium",
            // Root in a container: no sandbox; a small /dev/shm: no shared memory.
            "args": args
        }),
    );
    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{driver_port}"))
        .await
        .expect("a Chromium session")
}

fn screenshot_dir() -> PathBuf {
    if std::env::var("SONDE_UPDATE_SCREENSHOTS").is_ok_and(|v| v == "1") {
        PathBuf::from("../../docs/screenshots")
    } else {
        PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("screenshots")
    }
}

async fn screenshot(c: &Client, name: &str) {
    let png = c.screenshot().await.expect("screenshot");
    assert!(png.starts_with(b"\x89PNG"), "{name}: not a PNG");
    let dir = screenshot_dir();
    std::fs::create_dir_all(&dir).expect("screenshot dir");
    std::fs::write(dir.join(format!("{name}.png")), png).expect("write screenshot");
}

async fn text(c: &Client, css: &str) -> String {
    c.find(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{css}: {e}"))
        .text()
        .await
        .expect("text")
}

/// Open the overview signed out: the sign-in form comes; the read key, typed in, opens the
/// overview.
async fn sign_in(c: &Client, base: &str, key: &str) {
    c.goto(&format!("{base}/overview")).await.expect("goto");
    let url = c.current_url().await.expect("url");
    assert_eq!(url.path(), "/login", "{url}");
    c.find(Locator::Css("input[name=key]"))
        .await
        .expect("key input")
        .send_keys(key)
        .await
        .expect("type the key");
    c.find(Locator::Css("form[action='/login'] button"))
        .await
        .expect("sign-in button")
        .click()
        .await
        .expect("sign in");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let url = c.current_url().await.expect("url");
        if url.path() == "/overview" {
            break;
        }
        assert!(Instant::now() < deadline, "signing in led to {url}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Choose `value` in the filter form's `name` select, apply, and wait for the page it
/// submits to (its URL carries the filter).
async fn apply_filter(c: &Client, name: &str, value: &str) {
    c.find(Locator::Css(&format!("select[name={name}]")))
        .await
        .expect("filter")
        .select_by_value(value)
        .await
        .expect("choose");
    c.find(Locator::Css("form.filters button"))
        .await
        .expect("apply")
        .click()
        .await
        .expect("apply filters");
    wait_for_query(c, &format!("{name}={}", url_encode(value))).await;
}

/// Wait (up to 30 s) until the page the form submitted to has `needle` in its query.
async fn wait_for_query(c: &Client, needle: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let url = c.current_url().await.expect("url");
        if url.query().unwrap_or("").contains(needle) {
            return;
        }
        assert!(Instant::now() < deadline, "{url} never got {needle}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn api(port: u16, path: &str, key: &str) -> Value {
    let body = http_get(port, path, Some(key));
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: {e}: {body}"))
}

fn pct(x: Option<f64>) -> String {
    format!("{}%", number(x.map(|v| v * 100.0), 2))
}

/// Simulated traffic sent to the server for `secs` seconds after `backfill_days` of history,
/// without the deliberate mess (late or skewed events would fall outside a page's window
/// and not the API's).
fn simulate(url: &str, key: &str, secs: u64, seed: u64, backfill_days: f64) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sonde"));
    cmd.args([
        "simulate",
        "--url",
        url,
        "--key",
        key,
        "--rate",
        "400",
        "--duration",
        &format!("{secs}s"),
        "--seed",
        &seed.to_string(),
        "--backfill",
        &backfill_days.to_string(),
        "--backfill-rate",
        "4",
        "--clean",
    ])
    .env("SONDE_LOG", "warn")
    .stdout(Stdio::null())
    .stderr(Stdio::null());
    cmd
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_in_headless_chromium() {
    let dir = tempfile::tempdir().expect("tmp");
    let config = dir.path().join("sonde.toml");
    std::fs::write(
        &config,
        "[[slo]]\nname = \"feed-latency\"\nsurface = \"home_feed\"\nkind = \"latency\"\nthreshold_ms = 150\ntarget = 0.99\n",
    )
    .expect("config");
    let server = start_server_with(&[
        "--config",
        config.to_str().expect("utf8"),
        "--flush-interval-secs",
        "1",
    ]);
    let port = server.port();
    // 50 minutes of history (all inside the pages' default hour), then 15 s live.
    let status = simulate(&server.url, &server.write_key, 15, 7, 50.0 / 1440.0)
        .status()
        .expect("simulate");
    assert!(status.success());
    // One malformed event for the quarantine browser.
    let bad = http_post_events(
        port,
        &server.write_key,
        r#"{"type":"decision","event_id":"broken-1","anonymous_id":"a","surface":"home_feed","items":[]}"#,
    );
    assert!(bad.contains("\"rejected\":1"), "{bad}");
    // Let the last batch flush, so page and API read the same store.
    tokio::time::sleep(Duration::from_secs(3)).await;

    let (_driver, driver_port) = start_chromedriver();
    let c = browser(driver_port, false).await;
    let key = server.read_key.clone();

    // Signed out, a page sends to the sign-in form; a read key opens the overview.
    sign_in(&c, &server.url, &key).await;

    // Overview: decisions and p99 per surface as /v1/latency has them over the same hour;
    // CTR and conversion per variant as /v1/relevance has them.
    let surfaces = c
        .find_all(Locator::Css("tr[data-surface]"))
        .await
        .expect("rows");
    assert!(surfaces.len() >= 2, "the simulator serves several surfaces");
    for row in &surfaces {
        let s = row
            .attr("data-surface")
            .await
            .expect("attr")
            .expect("surface");
        let v = api(
            port,
            &format!("/v1/latency?surface={}&step=60m&q=0.99", url_encode(&s)),
            &key,
        );
        let decisions: u64 = v["series"][0]["points"]
            .as_array()
            .expect("points")
            .iter()
            .map(|p| p["decisions"].as_u64().unwrap_or(0))
            .sum();
        let cell = text(
            &c,
            &format!("tr[data-surface='{s}'] td[data-field=decisions]"),
        )
        .await;
        assert_eq!(cell, number(Some(decisions as f64), 0), "{s}");
        assert!(decisions > 0, "{s}");
    }
    let experiment = text(&c, "table caption code").await;
    let rel = api(
        port,
        &format!(
            "/v1/relevance?experiment={}&group_by=variant",
            url_encode(&experiment)
        ),
        &key,
    );
    let groups = rel["groups"].as_array().expect("groups");
    assert!(groups.len() >= 2, "{rel}");
    for g in groups {
        let variant = g["group"].as_str().expect("group");
        let ctr = text(
            &c,
            &format!("tr[data-variant='{variant}'] td[data-field=ctr]"),
        )
        .await;
        assert_eq!(ctr, pct(g["ctr"].as_f64()), "{variant}");
        let conv = text(
            &c,
            &format!("tr[data-variant='{variant}'] td[data-field=conversion]"),
        )
        .await;
        assert_eq!(conv, pct(g["conversion_rate"].as_f64()), "{variant}");
    }
    screenshot(&c, "overview").await;

    // Latency & SLOs: the SLO's error budget as /v1/slo has it.
    c.goto(&format!("{}/latency?surface=home_feed", server.url))
        .await
        .expect("goto");
    let slo = api(port, "/v1/slo", &key);
    let budget = text(&c, "tr[data-slo='feed-latency'] td[data-field=budget]").await;
    assert_eq!(
        budget,
        pct(slo["slos"][0]["evaluation"]["budget_remaining"].as_f64())
    );
    assert!(
        c.find_all(Locator::Css("svg.chart"))
            .await
            .expect("charts")
            .len()
            >= 2
    );
    screenshot(&c, "latency").await;

    // Relevance: decisions and NDCG@10 per variant as /v1/relevance has them.
    c.goto(&format!("{}/relevance", server.url))
        .await
        .expect("goto");
    for g in groups {
        let variant = g["group"].as_str().expect("group");
        let lists = text(
            &c,
            &format!("tr[data-group='{variant}'] td[data-field=lists]"),
        )
        .await;
        assert_eq!(lists, number(g["lists"].as_f64(), 0), "{variant}");
        let ndcg = text(
            &c,
            &format!("tr[data-group='{variant}'] td[data-field=ndcg]"),
        )
        .await;
        assert_eq!(ndcg, number(g["ndcg"].as_f64(), 4), "{variant}");
    }
    let reliability = c
        .find(Locator::Css("svg.chart[aria-label^='Reliability diagram']"))
        .await
        .expect("a reliability diagram");
    assert!(
        !reliability
            .find_all(Locator::Css("circle"))
            .await
            .expect("dots")
            .is_empty()
    );
    screenshot(&c, "relevance").await;
    // The segment filter, chosen in the form, narrows the figures as the API's `device`
    // filter does.
    apply_filter(&c, "segment", "device:ios").await;
    let ios = api(
        port,
        &format!(
            "/v1/relevance?experiment={}&group_by=variant&device=ios",
            url_encode(&experiment)
        ),
        &key,
    );
    for g in ios["groups"].as_array().expect("groups") {
        let variant = g["group"].as_str().expect("group");
        let lists = text(
            &c,
            &format!("tr[data-group='{variant}'] td[data-field=lists]"),
        )
        .await;
        assert_eq!(lists, number(g["lists"].as_f64(), 0), "iOS {variant}");
        assert!(
            g["lists"].as_u64()
                < groups
                    .iter()
                    .find(|x| x["group"] == g["group"])
                    .and_then(|x| x["lists"].as_u64())
        );
    }

    // Data health: events of the home feed's decisions as /v1/health/data counts them.
    c.goto(&format!("{}/health", server.url))
        .await
        .expect("goto");
    let health = api(port, "/v1/health/data", &key);
    let feed = health["sources"]
        .as_array()
        .expect("sources")
        .iter()
        .find(|s| s["type"] == "decision" && s["surface"] == "home_feed")
        .expect("home feed decisions")
        .clone();
    let events = text(
        &c,
        "tr[data-source='decision/home_feed'] td[data-field=events]",
    )
    .await;
    assert_eq!(events, number(feed["events"].as_f64(), 0));
    screenshot(&c, "health").await;
    // The quarantine browser shows the malformed event, its error and its raw text.
    c.find(Locator::Css("a[href='/health/quarantine']"))
        .await
        .expect("link to the quarantine")
        .click()
        .await
        .expect("open the quarantine");
    let q = api(port, "/v1/quarantine", &key);
    let id = q["items"][0]["quarantine_id"].as_str().expect("an entry");
    let code = text(
        &c,
        &format!("article[data-quarantine='{id}'] [data-field=code]"),
    )
    .await;
    assert_eq!(code, q["items"][0]["code"].as_str().expect("code"));
    c.find(Locator::Css(&format!(
        "article[data-quarantine='{id}'] summary"
    )))
    .await
    .expect("raw toggle")
    .click()
    .await
    .expect("open raw");
    let raw = text(&c, &format!("article[data-quarantine='{id}'] pre.raw")).await;
    assert!(raw.contains("broken-1"), "{raw}");
    screenshot(&c, "quarantine").await;

    // Summary: the day's decisions as SQL counts them.
    c.goto(&format!("{}/summary", server.url))
        .await
        .expect("goto");
    let count = scalar(&server.url, &key, "SELECT count(*) FROM decisions");
    let decisions = text(&c, "[data-field=decisions]").await;
    assert_eq!(decisions, number(Some(count as f64), 0));
    screenshot(&c, "summary").await;

    // A filter: the surface select, applied, narrows the overview to that surface and the
    // URL carries it.
    c.goto(&format!("{}/overview", server.url))
        .await
        .expect("goto");
    apply_filter(&c, "surface", "home_feed").await;
    let rows = c
        .find_all(Locator::Css("tr[data-surface]"))
        .await
        .expect("rows");
    assert_eq!(rows.len(), 1);

    // Live: more traffic arrives; the page's live region updates in place (the marker set
    // on this document survives, so there was no reload) with the new count.
    let before = text(&c, "tr[data-surface='home_feed'] td[data-field=decisions]").await;
    c.execute("window.sondeMarker = 42; return true;", vec![])
        .await
        .expect("mark the document");
    let mut more = Kill(
        simulate(&server.url, &server.write_key, 8, 8, 0.0)
            .spawn()
            .expect("simulate more"),
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let state = c
            .execute(
                "const cell = document.querySelector(\"tr[data-surface='home_feed'] td[data-field=decisions]\");
                 return [window.sondeMarker || null, document.body.dataset.liveUpdates || null, cell && cell.textContent];",
                vec![],
            )
            .await
            .expect("read the page");
        let updates = state[1].as_str().and_then(|u| u.parse::<u32>().ok());
        if updates.is_some_and(|u| u >= 1) && state[2].as_str() != Some(before.as_str()) {
            assert_eq!(state[0], json!(42), "the page was reloaded, not updated");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no live update within 60 s: {state}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let _ = more.0.wait();
    let status = text(&c, "#live-status").await;
    assert!(status.starts_with("Live"), "{status}");

    // Keyboard: the first Tab reaches the skip link.
    c.execute(
        "document.activeElement && document.activeElement.blur(); return true;",
        vec![],
    )
    .await
    .expect("blur");
    c.find(Locator::Css("body"))
        .await
        .expect("body")
        .send_keys("\u{e004}")
        .await
        .expect("tab");
    let focused = c
        .execute("return document.activeElement.className;", vec![])
        .await
        .expect("focus");
    assert_eq!(focused, json!("skip"));

    // A phone: nothing wider than the screen but the scrollable tables.
    c.set_window_size(390, 844).await.expect("resize");
    c.goto(&format!("{}/overview", server.url))
        .await
        .expect("goto");
    let overflow = c
        .execute(
            "return document.documentElement.scrollWidth - document.documentElement.clientWidth;",
            vec![],
        )
        .await
        .expect("measure");
    assert!(overflow.as_i64().is_some_and(|o| o <= 0), "{overflow}");
    screenshot(&c, "overview-phone").await;
    c.close().await.expect("close");

    // The dark theme, when the system asks for it.
    let c = browser(driver_port, true).await;
    sign_in(&c, &server.url, &key).await;
    let background = c
        .execute(
            "return getComputedStyle(document.body).backgroundColor;",
            vec![],
        )
        .await
        .expect("style");
    assert_eq!(background, json!("rgb(13, 17, 23)"));
    screenshot(&c, "overview-dark").await;
    c.close().await.expect("close");

    demo_sign_in_link(driver_port).await;
}

/// `sonde demo` prints a one-time link that opens the dashboard signed in.
async fn demo_sign_in_link(driver_port: u16) {
    let dir = tempfile::tempdir().expect("tmp");
    let port = free_port();
    let mut demo = Kill(
        Command::new(env!("CARGO_BIN_EXE_sonde"))
            .args([
                "demo",
                "--data-dir",
                dir.path().join("demo").to_str().expect("utf8"),
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--backfill-days",
                "0",
                "--rate",
                "50",
                "--every",
                "60",
            ])
            .env("SONDE_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn demo"),
    );
    // Keep reading the demo's output, as a terminal would.
    let stdout = demo.0.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for l in BufReader::new(stdout).lines().map_while(Result::ok) {
            if l.contains("dashboard:") {
                let _ = tx.send(l);
            }
        }
    });
    let line = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("a dashboard line");
    let link = line
        .split_whitespace()
        .find(|w| w.contains("/login/link?code="))
        .unwrap_or_else(|| panic!("no sign-in link in {line:?}"))
        .to_string();
    assert!(
        link.starts_with(&format!("http://127.0.0.1:{port}/")),
        "{link}"
    );
    let c = browser(driver_port, false).await;
    c.goto(&link).await.expect("open the link");
    let url = c.current_url().await.expect("url");
    assert_eq!(url.path(), "/overview", "{url}");
    assert_eq!(text(&c, "h1").await, "Overview");
    // Used once: a second visit asks for a key.
    c.goto(&link).await.expect("open again");
    assert!(text(&c, "main").await.contains("used already"));
    c.close().await.expect("close");
}

/// POST NDJSON to `/v1/events`; returns the body.
fn http_post_events(port: u16, key: &str, ndjson: &str) -> String {
    http_post(port, "/v1/events", key, "application/x-ndjson", ndjson)
}

fn http_post(port: u16, path: &str, key: &str, content_type: &str, body: &str) -> String {
    use std::io::{Read, Write};
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    write!(
        s,
        "POST {path} HTTP/1.0\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {key}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .expect("request");
    let mut text = String::new();
    s.read_to_string(&mut text).expect("response");
    text.split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default()
}
