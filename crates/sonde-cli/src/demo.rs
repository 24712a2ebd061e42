//! `sonde demo`: a server on a fresh data directory, a week of simulated history, then live
//! traffic with incidents, and a terminal summary every few seconds.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context;
use serde_json::Value;
use sonde_server::Project;

use crate::cli::{DemoArgs, ServeArgs, SimulateArgs};
use crate::http::{Client, ok_json};
use crate::simulate::{Tally, Target};

/// Make `dir` a fresh, empty data directory. A directory left by an earlier demo (it holds
/// a Sonde project) is wiped; anything else that is not empty is left alone and refused.
fn fresh_dir(dir: &Path) -> anyhow::Result<()> {
    if dir.exists() {
        let empty = std::fs::read_dir(dir)?.next().is_none();
        if Project::exists(dir) {
            std::fs::remove_dir_all(dir)
                .with_context(|| format!("removing the old demo in {}", dir.display()))?;
        } else if !empty {
            anyhow::bail!(
                "{} exists and is not a Sonde data directory; pass --data-dir with a new path",
                dir.display()
            );
        }
    }
    Ok(())
}

/// Print a summary line; a reader that went away (`sonde demo | head`) must not end the demo,
/// as `println!` would by panicking.
fn say(line: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stdout().lock(), "{line}");
}

/// Run the demo until Ctrl-C.
pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    let dir: PathBuf = args.data_dir.clone();
    fresh_dir(&dir)?;
    let keys = sonde_server::ensure_project(&dir)?
        .context("the demo directory already holds a project")?;
    let config = crate::config::resolve(&ServeArgs {
        data_dir: Some(dir.clone()),
        listen: Some(args.listen),
        flush_interval_secs: Some(5),
        flush_buffer_mb: None,
        ..ServeArgs::default()
    })?;
    let state = tokio::task::spawn_blocking(move || sonde_server::open(config))
        .await
        .context("opening the store")??;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| {
            format!(
                "binding {} (is another Sonde running? pass --listen)",
                args.listen
            )
        })?;
    let url = format!("http://{}", listener.local_addr()?);
    println!("Sonde demo: {url}  (data in {})", dir.display());
    println!(
        "  dashboard: {url}{}  (a one-time sign-in link, good for 30 minutes; after that, {url}/login with the read key)",
        state.sign_in_link()
    );
    println!("  write key: {}", keys.write_key);
    println!("  read key:  {}", keys.read_key);
    println!("  admin key: {}", keys.admin_key);
    println!(
        "  try: sonde query --url {url} --key {} \"SELECT surface, count(*) FROM decisions GROUP BY 1\"",
        keys.read_key
    );
    println!(
        "Importing {} days of history, then streaming ~{} events/s with incidents (scenario {:?}). Ctrl-C stops.",
        args.backfill_days, args.rate, args.scenario
    );

    let (shutdown_tx, shutdown_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(sonde_server::serve(state, listener, async move {
        let _ = shutdown_rx.await;
    }));
    let stop = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Tally::default());
    let sim_args = SimulateArgs {
        out: None,
        url: Some(url.clone()),
        key: Some(keys.write_key.clone()),
        truth: None,
        decisions: 0,
        seed: args.seed,
        rate: args.rate,
        duration: None,
        scenario: args.scenario.clone(),
        backfill: args.backfill_days,
        backfill_rate: args.backfill_rate,
        clean: false,
        swap_share: 0.0,
    };
    let sim = {
        let (tally, stop) = (tally.clone(), stop.clone());
        let target = Target {
            url: url.clone(),
            key: keys.write_key.clone(),
        };
        tokio::spawn(
            async move { crate::simulate::to_server(&sim_args, target, tally, stop).await },
        )
    };

    let client = Client::new();
    let mut tick = tokio::time::interval(Duration::from_secs(args.every.max(1)));
    tick.tick().await;
    let ctrl_c = crate::commands::shutdown_signal();
    tokio::pin!(ctrl_c);
    loop {
        tokio::select! {
            _ = &mut ctrl_c => break,
            _ = tick.tick() => {
                match summary(&client, &url, &keys.read_key, &tally).await {
                    Ok(text) => say(&text),
                    Err(e) => say(&format!("(summary unavailable: {e:#})")),
                }
            }
        }
    }
    stop.store(true, Ordering::Relaxed);
    match sim.await {
        Ok(Err(e)) => eprintln!("simulator stopped with an error: {e:#}"),
        Err(e) => eprintln!("simulator task failed: {e}"),
        Ok(Ok(())) => {}
    }
    let _ = shutdown_tx.send(());
    server.await.context("server task")??;
    println!("Stopped. Final: {}", tally.line());
    println!(
        "Data kept in {}; `sonde serve --data-dir {}` serves it again.",
        dir.display(),
        dir.display()
    );
    Ok(())
}

async fn sql(client: &Client, url: &str, key: &str, q: &str) -> anyhow::Result<Vec<Vec<Value>>> {
    let reply = client
        .post_json(
            &format!("{url}/v1/query"),
            key,
            &serde_json::json!({ "sql": q }),
        )
        .await?;
    let v = ok_json(reply)?;
    Ok(serde_json::from_value(v["rows"].clone()).unwrap_or_default())
}

fn num(v: &Value) -> f64 {
    v.as_f64().unwrap_or(0.0)
}

const LATENCY_SQL: &str = "SELECT experiments['ranker_ab'] AS variant, count(*) AS n, \
    approx_percentile_cont(latency_total_ms, 0.5) AS p50, \
    approx_percentile_cont(latency_total_ms, 0.99) AS p99, \
    avg(CASE WHEN fallback THEN 1.0 ELSE 0.0 END) AS fallback_rate \
    FROM decisions WHERE event_time > now() - INTERVAL '5 minutes' GROUP BY 1 ORDER BY 1";

const CTR_SQL: &str = "SELECT i.variant, count(*) AS shown, count(c.request_id) AS clicked \
    FROM (SELECT request_id, item_id, experiments['ranker_ab'] AS variant FROM decision_items \
          WHERE event_time > now() - INTERVAL '1 hour') i \
    LEFT JOIN (SELECT DISTINCT request_id, item_id FROM interactions WHERE action = 'click') c \
    ON i.request_id = c.request_id AND i.item_id = c.item_id GROUP BY 1 ORDER BY 1";

const CONVERSION_SQL: &str = "SELECT d.variant, count(*) AS decisions, count(p.request_id) AS converted \
    FROM (SELECT request_id, experiments['ranker_ab'] AS variant FROM decisions \
          WHERE event_time < now() - INTERVAL '1 day') d \
    LEFT JOIN (SELECT DISTINCT request_id FROM conversions WHERE request_id IS NOT NULL) p \
    ON d.request_id = p.request_id GROUP BY 1 ORDER BY 1";

/// The terminal summary: traffic, latency, CTR and conversion by variant, data quality.
async fn summary(client: &Client, url: &str, key: &str, tally: &Tally) -> anyhow::Result<String> {
    let per_min = sql(
        client,
        url,
        key,
        "SELECT count(*) FROM decisions WHERE event_time > now() - INTERVAL '1 minute'",
    )
    .await?;
    let quarantined = sql(client, url, key, "SELECT count(*) FROM quarantine").await?;
    let latency = sql(client, url, key, LATENCY_SQL).await?;
    let ctr = sql(client, url, key, CTR_SQL).await?;
    let conv = sql(client, url, key, CONVERSION_SQL).await?;
    let cell =
        |rows: &[Vec<Value>], i: usize| rows.first().and_then(|r| r.get(i)).map(num).unwrap_or(0.0);
    let mut out = format!(
        "[{}] traffic {:.0} decisions/min · {} · quarantined {:.0}\n",
        chrono::Utc::now().format("%H:%M:%S"),
        cell(&per_min, 0),
        tally.line(),
        cell(&quarantined, 0),
    );
    out.push_str(
        "  variant     decisions(5m)  p50 ms  p99 ms  fallback  CTR(1h)  conversion(>1d old)\n",
    );
    for variant in ["control", "treatment"] {
        let find = |rows: &[Vec<Value>]| {
            rows.iter()
                .find(|r| r.first().and_then(Value::as_str) == Some(variant))
                .cloned()
        };
        let l = find(&latency).unwrap_or_default();
        let c = find(&ctr).unwrap_or_default();
        let v = find(&conv).unwrap_or_default();
        let ratio = |row: &[Value]| {
            let (a, b) = (
                row.get(2).map(num).unwrap_or(0.0),
                row.get(1).map(num).unwrap_or(0.0),
            );
            if b > 0.0 { 100.0 * a / b } else { 0.0 }
        };
        out.push_str(&format!(
            "  {variant:<10}  {:>13.0}  {:>6.1}  {:>6.1}  {:>7.1}%  {:>6.2}%  {:>8.3}%\n",
            l.get(1).map(num).unwrap_or(0.0),
            l.get(2).map(num).unwrap_or(0.0),
            l.get(3).map(num).unwrap_or(0.0),
            100.0 * l.get(4).map(num).unwrap_or(0.0),
            ratio(&c),
            ratio(&v),
        ));
    }
    Ok(out.trim_end().to_string())
}
