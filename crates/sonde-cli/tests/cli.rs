//! The `sonde` binary's own commands: init, offline query, config errors, simulate (to a
//! file, and through the HTTP API of a real server), import, and the simulator's ground
//! truth recovered by SQL.

mod common;

use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{
    free_port, http_get, scalar, sonde, sonde_ok, start_server, start_server_with, url_encode,
};

#[test]
fn init_prints_keys_once_and_query_reads_offline() {
    let dir = tempfile::tempdir().expect("tmp");
    let data = dir.path().join("data");
    let data = data.to_str().expect("utf8");
    let stdout = sonde_ok(&["init", "--data-dir", data]);
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
    let stdout = sonde_ok(&[
        "query",
        "--data-dir",
        data,
        "--format",
        "csv",
        "SELECT count(*) AS n FROM decisions",
    ]);
    assert_eq!(stdout, "n\n0\n");

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
        sonde_ok(&[
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
    let server = start_server();
    let (url, wk, rk) = (&server.url, &server.write_key, &server.read_key);
    // Half an hour of history at 10 events/s, then 3 s live.
    let stdout = sonde_ok(&[
        "simulate",
        "--url",
        url,
        "--key",
        wk,
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
    .map(|t| scalar(url, rk, &format!("SELECT count(*) FROM {t}")))
    .sum();
    assert_eq!(stored, accepted);
    assert_eq!(scalar(url, rk, "SELECT count(*) FROM quarantine"), rejected);
    assert_eq!(
        scalar(
            url,
            rk,
            "SELECT count(*) - count(DISTINCT event_id) FROM decisions"
        ),
        0
    );
    // The health report sees the same traffic: retries counted per source, rejections by
    // code, the quarantine.
    let status = sonde_ok(&["status", "--url", url, "--key", rk, "--json"]);
    let h: serde_json::Value = serde_json::from_str(&status).expect("json");
    let dupes: u64 = h["sources"]
        .as_array()
        .expect("sources")
        .iter()
        .map(|s| s["since_start"]["duplicates"].as_u64().unwrap_or(0))
        .sum();
    assert_eq!(dupes, duplicates);
    assert_eq!(h["quarantine"]["total"].as_u64(), Some(rejected));
    let text = sonde_ok(&["status", "--url", url, "--key", rk]);
    assert!(
        text.lines()
            .any(|l| l.starts_with("decision ") && l.contains("| home_feed ")),
        "{text}"
    );
    assert!(
        text.contains(&format!("Quarantine: {rejected} entries")),
        "{text}"
    );
}

/// Rows of a query's CSV answer, header dropped.
fn rows(url: &str, key: &str, sql: &str) -> Vec<Vec<String>> {
    let stdout = sonde_ok(&["query", "--url", url, "--key", key, "--format", "csv", sql]);
    stdout
        .lines()
        .skip(1)
        .map(|l| l.split(',').map(str::to_string).collect())
        .collect()
}

fn num(s: &str) -> f64 {
    s.trim()
        .parse()
        .unwrap_or_else(|_| panic!("not a number: {s:?}"))
}

/// The simulator's ground truth recovered by plain SQL: a million decisions (2.4 million
/// events with the default mess: retries, late and skewed events, invalid ones) imported
/// through the HTTP API. Tolerances: CTR and conversion rate within 4 binomial standard
/// errors of the expected rates the simulator reports; p99 latency per component within 2%
/// of the true log-normal quantile (sampling error at n = 500k is ~0.3%, and
/// `approx_percentile_cont` is a t-digest).
#[test]
fn sql_over_a_million_simulated_decisions_recovers_the_truth() {
    let dir = tempfile::tempdir().expect("tmp");
    let (events, truth) = (
        dir.path().join("events.ndjson"),
        dir.path().join("truth.json"),
    );
    sonde_ok(&[
        "simulate",
        "--out",
        events.to_str().expect("utf8"),
        "--truth",
        truth.to_str().expect("utf8"),
        "--decisions",
        "1000000",
        "--seed",
        "21",
    ]);
    let truth: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&truth).expect("truth")).expect("json");
    let (t, delivery) = (&truth["truth"], &truth["delivery"]);

    let server = start_server();
    let (url, rk) = (server.url.as_str(), server.read_key.as_str());
    let stdout = sonde_ok(&[
        "import",
        events.to_str().expect("utf8"),
        "--url",
        url,
        "--key",
        &server.write_key,
        "--backfill",
    ]);
    let tally = tally(stdout.lines().last().expect("tally line"));
    let count = |k: &str| delivery[k].as_u64().expect("count");
    assert_eq!(tally[0], count("events"), "{stdout}");
    assert_eq!(tally[1], count("duplicates"), "{stdout}");
    assert_eq!(tally[2], count("invalid"), "{stdout}");

    let ctr = rows(
        url,
        rk,
        "SELECT i.variant, count(*) AS shown, count(c.request_id) AS clicked \
         FROM (SELECT request_id, item_id, experiments['ranker_ab'] AS variant FROM decision_items) i \
         LEFT JOIN (SELECT DISTINCT request_id, item_id FROM interactions WHERE action = 'click') c \
         ON i.request_id = c.request_id AND i.item_id = c.item_id GROUP BY 1 ORDER BY 1",
    );
    let conversion = rows(
        url,
        rk,
        "SELECT d.variant, count(*) AS decisions, count(p.request_id) AS converted \
         FROM (SELECT request_id, experiments['ranker_ab'] AS variant FROM decisions) d \
         LEFT JOIN (SELECT DISTINCT request_id FROM conversions WHERE name = 'purchase') p \
         ON d.request_id = p.request_id GROUP BY 1 ORDER BY 1",
    );
    let components = ["feature_fetch", "retrieval", "inference", "rerank"];
    let p99 = rows(
        url,
        rk,
        &format!(
            "SELECT experiments['ranker_ab'] AS variant, {} FROM decisions GROUP BY 1 ORDER BY 1",
            components
                .iter()
                .map(|c| format!("approx_percentile_cont(latency_components['{c}'], 0.99)"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    );
    assert_eq!(ctr.len(), 2, "{ctr:?}");
    for (k, variant) in ["control", "treatment"].into_iter().enumerate() {
        let truth = &t[variant];
        assert_eq!(ctr[k][0], variant);
        let (shown, clicked) = (num(&ctr[k][1]), num(&ctr[k][2]));
        let want = truth["ctr"].as_f64().expect("ctr");
        let se = (want * (1.0 - want) / shown).sqrt();
        let got = clicked / shown;
        assert!(
            (got - want).abs() < 4.0 * se,
            "{variant} CTR {got:.5}, truth {want:.5}"
        );

        assert_eq!(conversion[k][0], variant);
        let (n, converted) = (num(&conversion[k][1]), num(&conversion[k][2]));
        assert_eq!(n as u64, truth["decisions"].as_u64().expect("decisions"));
        let want = truth["conversion_rate"].as_f64().expect("rate");
        let se = (want * (1.0 - want) / n).sqrt();
        let got = converted / n;
        assert!(
            (got - want).abs() < 4.0 * se,
            "{variant} conversion {got:.5}, truth {want:.5}"
        );

        assert_eq!(p99[k][0], variant);
        for (j, c) in components.iter().enumerate() {
            let want = t["latency"]
                .as_array()
                .expect("latency")
                .iter()
                .find(|l| l["component"] == *c && l["variant"] == variant)
                .and_then(|l| l["p99"].as_f64())
                .expect("truth p99");
            let got = num(&p99[k][j + 1]);
            assert!(
                (got / want - 1.0).abs() < 0.02,
                "{variant} {c} p99 {got:.2} ms, truth {want:.2} ms"
            );
        }
    }
}

/// `sonde report relevance` over imported simulated traffic: both variants, treatment
/// (the better ranker) ahead on NDCG, and the same numbers as JSON and as Markdown.
#[test]
fn report_relevance_ranks_the_better_variant_higher() {
    let dir = tempfile::tempdir().expect("tmp");
    let events = dir.path().join("events.ndjson");
    sonde_ok(&[
        "simulate",
        "--out",
        events.to_str().expect("utf8"),
        "--decisions",
        "20000",
        "--clean",
    ]);
    let server = start_server();
    let url = server.url.as_str();
    sonde_ok(&[
        "import",
        events.to_str().expect("utf8"),
        "--url",
        url,
        "--key",
        &server.write_key,
        "--backfill",
    ]);
    let report = |format: &str| {
        sonde_ok(&[
            "report",
            "relevance",
            "--url",
            url,
            "--key",
            &server.read_key,
            "--group-by",
            "variant",
            "--experiment",
            "ranker_ab",
            "--format",
            format,
        ])
    };
    let json: serde_json::Value = serde_json::from_str(&report("json")).expect("json");
    let groups = json["relevance"]["groups"].as_array().expect("groups");
    let ndcg = |v: &str| {
        groups
            .iter()
            .find(|g| g["group"] == v)
            .and_then(|g| g["ndcg"].as_f64())
            .unwrap_or_else(|| panic!("no {v}: {json}"))
    };
    assert!(ndcg("treatment") > ndcg("control"), "{json}");
    let decisions: u64 = groups.iter().filter_map(|g| g["lists"].as_u64()).sum();
    assert_eq!(decisions, 20_000);
    let md = report("markdown");
    let row = md
        .lines()
        .find(|l| l.starts_with("| treatment |"))
        .unwrap_or_else(|| panic!("no treatment row: {md}"));
    assert!(row.contains(&format!("{:.4}", ndcg("treatment"))), "{row}");
}

/// A real Prometheus (the Debian package, which `.ci/run` installs) scrapes Sonde's
/// `/metrics` with the read key; its HTTP API then answers a p99 latency query, inside the
/// histogram bucket that holds the exact p99 of the stored decisions.
#[test]
fn prometheus_scrapes_latency_histograms() {
    let prometheus = std::env::var("PROMETHEUS").unwrap_or_else(|_| "prometheus".into());
    let server = start_server();
    let (url, wk, rk) = (&server.url, &server.write_key, &server.read_key);
    sonde_ok(&[
        "simulate",
        "--url",
        url,
        "--key",
        wk,
        "--seed",
        "8",
        "--rate",
        "300",
        "--duration",
        "2s",
        "--clean",
    ]);
    let n = scalar(
        url,
        rk,
        "SELECT count(*) FROM decisions WHERE latency_total_ms IS NOT NULL",
    );
    assert!(n > 100, "{n} decisions");
    // The bucket Prometheus's estimate must fall in: the first whose cumulative count reaches
    // its rank 0.99·n (`histogram_quantile` ranks so; the exact sample of rank ⌊0.99·(n−1)⌋
    // can sit just below a bound whose count falls one short, and the estimate then rightly
    // lands in the next bucket).
    let bounds = sonde_latency::DEFAULT_BOUNDS_MS;
    let at_most = |b: f64| {
        scalar(
            url,
            rk,
            &format!(
                "SELECT count(*) FROM decisions WHERE latency_total_ms IS NOT NULL \
                 AND latency_total_ms <= {b:?}"
            ),
        )
    };
    let hi = bounds
        .iter()
        .copied()
        .find(|b| at_most(*b) as f64 >= 0.99 * n as f64)
        .expect("within 10 s");
    let lo = bounds.iter().copied().rfind(|b| *b < hi).unwrap_or(0.0);
    let p99_ms = format!("rank {:.1} of {n}", 0.99 * n as f64);

    let dir = tempfile::tempdir().expect("tmp");
    let port = free_port();
    let sonde_port = url.rsplit(':').next().unwrap_or_default();
    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: sonde\n    authorization:\n      credentials: {rk}\n    static_configs:\n      - targets: ['127.0.0.1:{sonde_port}']\n"
        ),
    )
    .expect("config");
    let child = Command::new(&prometheus)
        .arg(format!("--config.file={}", config.display()))
        .arg(format!("--storage.tsdb.path={}", dir.path().join("tsdb").display()))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("cannot run {prometheus}: {e}; install the Debian package `prometheus` (.ci/run does)")
        });
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _prometheus = Kill(child);
    let query =
        url_encode("histogram_quantile(0.99, sum by (le) (sonde_decision_latency_seconds_bucket))");
    let deadline = Instant::now() + Duration::from_secs(60);
    let value = loop {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            let body = http_get(port, &format!("/api/v1/query?query={query}"), None);
            let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
            if let Some(x) = v["data"]["result"][0]["value"][1]
                .as_str()
                .and_then(|s| s.parse::<f64>().ok())
            {
                break x;
            }
        }
        assert!(
            Instant::now() < deadline,
            "no answer from Prometheus; targets: {}",
            http_get(port, "/api/v1/targets", None)
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    assert!(
        value >= lo / 1000.0 && value <= hi / 1000.0,
        "Prometheus p99 {value} s, stored p99 ({p99_ms}) in bucket ({lo}, {hi}] ms"
    );
}

/// The official OpenTelemetry Python SDK with its OTLP/HTTP exporter, configured only by the
/// standard environment variables, sends a trace to `sonde serve`: its spans are stored,
/// their identity attribute pseudonymized, and they join their decision.
#[test]
fn python_sdk_spans_are_stored_and_joined() {
    let python = std::env::var("SONDE_OTEL_PYTHON").unwrap_or_else(|_| {
        format!(
            "{}/.cache/sonde-otel-venv/bin/python",
            std::env::var("HOME").unwrap_or_default()
        )
    });
    let server = start_server();
    let (url, wk, rk) = (&server.url, &server.write_key, &server.read_key);
    let dir = tempfile::tempdir().expect("tmp");
    let file = dir.path().join("decision.ndjson");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    std::fs::write(
        &file,
        format!(
            "{{\"type\":\"decision\",\"event_id\":\"d-otel\",\"timestamp\":{now},\"anonymous_id\":\"a\",\"request_id\":\"req-otel\",\"surface\":\"home_feed\",\"model\":{{\"name\":\"m\",\"version\":\"v1\"}},\"items\":[{{\"item_id\":\"i\",\"position\":1}}]}}\n"
        ),
    )
    .expect("write");
    sonde_ok(&[
        "import",
        file.to_str().expect("utf8"),
        "--url",
        url,
        "--key",
        wk,
    ]);

    // Relative to the package, where cargo runs its tests (see sonde-relevance's fixtures).
    let script = "../../scripts/otel/send_spans.py";
    let out = Command::new(&python)
        .arg(script)
        .arg("req-otel")
        .env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", format!("{url}/v1/traces"))
        .env("OTEL_EXPORTER_OTLP_TRACES_HEADERS", format!("Authorization=Bearer%20{wk}"))
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run {python}: {e}; .ci/run installs scripts/otel/requirements.txt into ~/.cache/sonde-otel-venv")
        });
    let stdout = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(
        out.status.success(),
        "export failed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(stdout.len(), 32, "trace id: {stdout}");

    assert_eq!(
        scalar(
            url,
            rk,
            &format!("SELECT count(*) FROM spans WHERE trace_id = '{stdout}'")
        ),
        3
    );
    assert_eq!(
        scalar(
            url,
            rk,
            "SELECT count(*) FROM spans s JOIN decisions d ON s.request_id = d.request_id \
             WHERE s.service_name = 'ranker' AND s.component IS NOT NULL"
        ),
        2
    );
    assert_eq!(
        scalar(
            url,
            rk,
            "SELECT count(*) FROM spans WHERE parent_span_id IS NULL AND attributes NOT LIKE '%alice%' AND attributes LIKE '%enduser.id%'"
        ),
        1
    );
}

/// An SLO declared in the config file burns (every decision a fallback): within seconds the
/// server's periodic evaluation pages, and the webhook receives Alertmanager's payload.
#[test]
fn a_burning_slo_pages_through_the_webhook() {
    use std::io::{BufRead, BufReader, Read, Write};
    let hook = std::net::TcpListener::bind("127.0.0.1:0").expect("listener");
    let hook_port = hook.local_addr().expect("addr").port();
    let dir = tempfile::tempdir().expect("tmp");
    let config = dir.path().join("sonde.toml");
    std::fs::write(
        &config,
        format!(
            "[[slo]]\nname = \"fallbacks\"\nsurface = \"home_feed\"\nkind = \"fallback\"\ntarget = 0.99\n\n[alerts]\nevaluate_every_secs = 1\nwebhook_url = \"http://127.0.0.1:{hook_port}/hook\"\n"
        ),
    )
    .expect("config");
    let server = start_server_with(&["--config", config.to_str().expect("utf8")]);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    let events: String = (0..50)
        .map(|i| {
            format!(
                "{{\"type\":\"decision\",\"event_id\":\"f{i}\",\"timestamp\":{now},\"anonymous_id\":\"a\",\"request_id\":\"r{i}\",\"surface\":\"home_feed\",\"model\":{{\"name\":\"m\",\"version\":\"v1\"}},\"items\":[{{\"item_id\":\"i\",\"position\":1}}],\"fallback\":true}}\n"
            )
        })
        .collect();
    let file = dir.path().join("events.ndjson");
    std::fs::write(&file, events).expect("events");
    sonde_ok(&[
        "import",
        file.to_str().expect("utf8"),
        "--url",
        &server.url,
        "--key",
        &server.write_key,
    ]);

    hook.set_nonblocking(false).expect("blocking");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        if let Ok((stream, _)) = hook.accept() {
            let mut reader = BufReader::new(stream);
            let mut length = 0usize;
            let mut line = String::new();
            while reader.read_line(&mut line).map(|n| n > 2).unwrap_or(false) {
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap_or(0);
                }
                line.clear();
            }
            let mut body = vec![0; length];
            let _ = reader.read_exact(&mut body);
            let _ = reader
                .get_mut()
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n");
            let _ = tx.send(body);
        }
    });
    let body = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("a webhook call within 30 s");
    let v: serde_json::Value = serde_json::from_slice(&body).expect("json body");
    assert_eq!(v["version"], "4");
    assert_eq!(v["status"], "firing");
    let page = v["alerts"]
        .as_array()
        .expect("alerts")
        .iter()
        .find(|a| a["labels"]["severity"] == "page")
        .unwrap_or_else(|| panic!("no page in {v}"))
        .clone();
    assert_eq!(page["labels"]["slo"], "fallbacks");
    assert_eq!(page["labels"]["surface"], "home_feed");
    assert_eq!(page["endsAt"], "0001-01-01T00:00:00Z");
    let port = server.port();
    let alerts = http_get(port, "/v1/alerts", Some(&server.read_key));
    assert!(alerts.contains("\"firing\":true"), "{alerts}");
}
