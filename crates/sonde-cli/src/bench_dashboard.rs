//! `sonde bench dashboard`: server-side render time of every dashboard page over a store of
//! simulated history (default: a million decisions, ten million decision items, over a
//! week). Figures, not pass/fail; the floor is 200 ms per page.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use clap::Args;
use hyper::Method;

use crate::cli::{ServeArgs, SimulateArgs};
use crate::http::{Client, ok_json};
use crate::simulate::{Tally, Target};

/// Options of `sonde bench dashboard`.
#[derive(Debug, Args)]
pub struct DashboardBenchArgs {
    /// Decisions of history to store (the simulator shows ten items each).
    #[arg(long, default_value_t = 1_000_000)]
    pub decisions: u64,
    /// Days the history spans, ending now.
    #[arg(long, default_value_t = 7.0)]
    pub days: f64,
    /// Timed renders per page (after one warm-up).
    #[arg(long, default_value_t = 10)]
    pub repeat: usize,
    /// Data directory; a project already there is measured as it is, without loading.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
}

/// The pages and windows measured: each page's default view (the last hour), and the
/// longer windows a person picks.
const VIEWS: [&str; 12] = [
    "/overview",
    "/latency",
    "/relevance",
    "/health",
    "/summary",
    "/health/quarantine",
    "/overview?minutes=1440",
    "/latency?minutes=1440",
    "/relevance?minutes=1440",
    "/health?minutes=1440",
    "/overview?minutes=10080",
    "/relevance?minutes=10080",
];

/// Median and max milliseconds of `repeat` GETs of `page` (after one untimed).
async fn timings(
    client: &Client,
    page: &str,
    cookie: &str,
    cache_control: Option<&str>,
    repeat: usize,
) -> anyhow::Result<(f64, f64)> {
    let mut headers = vec![("cookie", cookie)];
    if let Some(c) = cache_control {
        headers.push(("cache-control", c));
    }
    let mut times = Vec::with_capacity(repeat);
    for i in 0..=repeat {
        let t = Instant::now();
        let r = client
            .send_with(Method::GET, page, &headers, Bytes::new())
            .await?;
        let ms = t.elapsed().as_secs_f64() * 1000.0;
        anyhow::ensure!(r.status.is_success(), "{page}: {}", r.status);
        anyhow::ensure!(r.text().contains("<main"), "{page}: not a page");
        if i > 0 {
            times.push(ms);
        }
    }
    times.sort_by(f64::total_cmp);
    Ok((times[times.len() / 2], times[times.len() - 1]))
}

/// Run the benchmark.
pub async fn run(args: DashboardBenchArgs) -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let dir = args
        .data_dir
        .clone()
        .unwrap_or_else(|| tmp.path().join("data"));
    let fresh = sonde_server::ensure_project(&dir)?;
    let config = crate::config::resolve(&ServeArgs {
        data_dir: Some(dir.clone()),
        listen: Some("127.0.0.1:0".parse()?),
        ..ServeArgs::default()
    })?;
    let state = tokio::task::spawn_blocking(move || sonde_server::open(config))
        .await
        .context("opening the store")??;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    let link = state.sign_in_link();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let probe = state.clone();
    let server = tokio::spawn(sonde_server::serve(state, listener, async move {
        let _ = stop_rx.await;
    }));
    let client = Client::new();

    if let Some(keys) = fresh {
        let events = args.decisions as f64 * 2.4;
        let started = Instant::now();
        let sim = SimulateArgs {
            out: None,
            url: Some(url.clone()),
            key: Some(keys.write_key.clone()),
            truth: None,
            decisions: 0,
            seed: 11,
            rate: 1.0,
            duration: Some(Duration::ZERO),
            scenario: "steady".into(),
            backfill: args.days,
            backfill_rate: events / (args.days * 86_400.0),
            clean: false,
            swap_share: 0.0,
        };
        let target = Target {
            url: url.clone(),
            key: keys.write_key.clone(),
        };
        let tally = Arc::new(Tally::default());
        crate::simulate::to_server(
            &sim,
            target,
            tally.clone(),
            Arc::new(AtomicBool::new(false)),
        )
        .await?;
        println!(
            "loaded {:.1} days of simulated history in {:.0} s: {}",
            args.days,
            started.elapsed().as_secs_f64(),
            tally.line()
        );
        // Let the last rows reach Parquet, as on a server that has been up a while.
        tokio::time::sleep(Duration::from_secs(12)).await;
        let counts = ok_json(
            client
                .post_json(
                    &format!("{url}/v1/query"),
                    &keys.read_key,
                    &serde_json::json!({"sql": "SELECT (SELECT count(*) FROM decisions) AS d, (SELECT count(*) FROM decision_items) AS i"}),
                )
                .await?,
        )?;
        println!(
            "stored: {} decisions, {} decision items",
            counts["rows"][0][0], counts["rows"][0][1]
        );
    } else {
        println!("measuring the project already in {}", dir.display());
    }
    // Pages are measured as a server that has been up a while serves them: with the live
    // sums loaded (a data directory opened afresh loads them in the background first).
    let loading = Instant::now();
    while !probe
        .store()
        .with_live(|s| s.relevance.is_ready())
        .unwrap_or(false)
    {
        anyhow::ensure!(
            loading.elapsed() < Duration::from_secs(600),
            "the live sums did not load within 10 minutes"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    println!(
        "live sums ready after {:.1} s",
        loading.elapsed().as_secs_f64()
    );

    // Sign in through the one-time link: the cookie it sets opens the pages.
    let reply = client
        .send_with(Method::GET, &format!("{url}{link}"), &[], Bytes::new())
        .await?;
    let cookie = reply
        .headers
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .context("the sign-in link set no cookie")?
        .to_string();

    println!(
        "{:<26} {:>12} {:>12} {:>12} {:>10}",
        "page", "computed ms", "(max)", "kept ms", "floor 200"
    );
    for view in VIEWS {
        let page = format!("{url}{view}");
        // Computed: `Cache-Control: no-cache` makes the server render it afresh, as for the
        // first viewer of a view. Kept: what the next viewers and live updates get.
        let computed = timings(&client, &page, &cookie, Some("no-cache"), args.repeat).await?;
        let kept = timings(&client, &page, &cookie, None, args.repeat).await?;
        println!(
            "{view:<26} {:>12.1} {:>12.1} {:>12.1} {:>10}",
            computed.0,
            computed.1,
            kept.0,
            if computed.0 < 200.0 { "met" } else { "MISSED" }
        );
    }
    let _ = stop_tx.send(());
    server.await.context("server task")??;
    Ok(())
}
