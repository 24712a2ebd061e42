//! What each command does.

use anyhow::Context;
use serde_json::{Value, json};
use sonde_server::{Project, ServerConfig};
use sonde_store::{QueryLimits, Store};
use tracing_subscriber::EnvFilter;

use crate::cli::{BenchWhich, Cli, Command, QuarantineAction, Remote, ReportWhich};
use crate::http::{Client, ok_json};
use crate::{bench, config, table};

/// Logs go to stderr; stdout is for command output.
pub fn init_logging(json: bool) {
    let filter = EnvFilter::try_from_env("SONDE_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        // Request workers: acknowledgements wait on them.
        .on_thread_start(sonde_store::latency_sensitive)
        .enable_all()
        .build()
        .context("starting the async runtime")
}

/// Run a parsed command line.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Init { data_dir } => {
            let keys = Project::init(&data_dir)?;
            println!("{}", serde_json::to_string(&keys)?);
            Ok(())
        }
        Command::Serve(args) => {
            let config = config::resolve(&args)?;
            no_transparent_huge_pages();
            runtime()?.block_on(serve(config))
        }
        Command::Query {
            url,
            key,
            data_dir,
            format,
            sql,
        } => runtime()?.block_on(query(url, key, data_dir, &format, &sql)),
        Command::Quarantine { action } => runtime()?.block_on(quarantine(action)),
        Command::Simulate(args) => simulate(args),
        Command::Status(args) => runtime()?.block_on(crate::status::run(args)),
        Command::Report { which } => match which {
            ReportWhich::Relevance(a) => runtime()?.block_on(crate::report::relevance(a)),
        },
        Command::Import(args) => {
            let tally = runtime()?.block_on(crate::import::run(&args))?;
            println!("{}", tally.line());
            let failed = tally
                .failed_batches
                .load(std::sync::atomic::Ordering::Relaxed);
            if failed > 0 {
                anyhow::bail!("{failed} batches could not be delivered");
            }
            Ok(())
        }
        Command::Demo(args) => runtime()?.block_on(crate::demo::run(args)),
        Command::Bench { which } => match which {
            BenchWhich::Ingest(a) => bench::ingest(a),
            BenchWhich::Query(a) => runtime()?.block_on(bench::query(a)),
            BenchWhich::Simulate(a) => bench::simulate(a),
            BenchWhich::Relevance(a) => bench::relevance(a),
            BenchWhich::Latency(a) => bench::latency(a),
            BenchWhich::Dashboard(a) => runtime()?.block_on(crate::bench_dashboard::run(a)),
        },
    }
}

pub async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let term = signal(SignalKind::terminate());
    let int = signal(SignalKind::interrupt());
    match (term, int) {
        (Ok(mut t), Ok(mut i)) => {
            tokio::select! {
                _ = t.recv() => {},
                _ = i.recv() => {},
            }
        }
        _ => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
    tracing::info!("shutdown requested; flushing");
}

/// Transparent huge pages off for the server process (and its children). The allocator asks
/// for them, and 2 MB pages held resident by a few live objects made peak RSS swing between
/// 427 and 519 MB in otherwise equal 60 s ingest runs; without them it was 403–425 MB in
/// four runs at the same throughput.
fn no_transparent_huge_pages() {
    #[cfg(target_os = "linux")]
    // SAFETY: prctl with integer arguments only; it sets a flag of this process.
    unsafe {
        if libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) != 0 {
            tracing::debug!("could not turn transparent huge pages off");
        }
    }
}

/// Start the server; on an empty data directory create the project first and print its keys.
pub async fn serve(config: ServerConfig) -> anyhow::Result<()> {
    if let Some(keys) = sonde_server::ensure_project(&config.store.data_dir)? {
        println!("{}", serde_json::to_string(&keys)?);
    }
    let listen = config.listen;
    let state = tokio::task::spawn_blocking(move || sonde_server::open(config))
        .await
        .context("opening the store")??;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding {listen}"))?;
    let addr = listener.local_addr()?;
    tracing::info!(%addr, "listening");
    sonde_server::serve(state, listener, shutdown_signal()).await?;
    Ok(())
}

fn print_result(format: &str, columns: Vec<String>, rows: Vec<Vec<Value>>) -> anyhow::Result<()> {
    match format {
        "json" => println!("{}", json!({"columns": columns, "rows": rows})),
        "csv" => print!("{}", sonde_server::to_csv(&columns, &rows)),
        _ => print!("{}", table::render(&columns, &rows)),
    }
    Ok(())
}

async fn query(
    url: Option<String>,
    key: Option<String>,
    data_dir: Option<std::path::PathBuf>,
    format: &str,
    sql: &str,
) -> anyhow::Result<()> {
    anyhow::ensure!(
        matches!(format, "table" | "json" | "csv"),
        "--format must be table, json or csv"
    );
    if let Some(dir) = data_dir {
        let store = Store::open_read_only(&dir)?;
        let r = store.query(sql, QueryLimits::default()).await?;
        let columns = r.schema.fields().iter().map(|f| f.name().clone()).collect();
        return print_result(format, columns, sonde_server::result_rows(&r.batches));
    }
    let url = url.context("give --url and --key for a server, or --data-dir for local data")?;
    let key = key.context("--key is required with --url")?;
    let reply = Client::new()
        .post_json(
            &format!("{}/v1/query", url.trim_end_matches('/')),
            &key,
            &json!({"sql": sql}),
        )
        .await?;
    let v = ok_json(reply)?;
    let columns = v["columns"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|c| c.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    let rows = v["rows"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|r| r.as_array().cloned().unwrap_or_default())
                .collect()
        })
        .unwrap_or_default();
    if v["truncated"].as_bool() == Some(true) {
        eprintln!("note: the result was cut at the server's row limit");
    }
    print_result(format, columns, rows)
}

async fn quarantine(action: QuarantineAction) -> anyhow::Result<()> {
    let client = Client::new();
    match action {
        QuarantineAction::List {
            server: Remote { url, key },
            code,
            pending,
            limit,
        } => {
            let mut u = format!("{}/v1/quarantine?limit={limit}", url.trim_end_matches('/'));
            if let Some(c) = code {
                u.push_str(&format!("&code={c}"));
            }
            if pending {
                u.push_str("&pending=true");
            }
            let v = ok_json(client.get(&u, Some(&key)).await?)?;
            let items = v["items"].as_array().cloned().unwrap_or_default();
            let columns: Vec<String> = [
                "quarantine_id",
                "received_at",
                "event_id",
                "code",
                "field",
                "message",
                "replay",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect();
            let rows = items
                .iter()
                .map(|i| columns.iter().map(|c| i[c.as_str()].clone()).collect())
                .collect::<Vec<_>>();
            print!("{}", table::render(&columns, &rows));
            Ok(())
        }
        QuarantineAction::Replay {
            server: Remote { url, key },
            code,
            ids,
        } => {
            let body = if ids.is_empty() {
                json!({"code": code})
            } else {
                json!({"ids": ids})
            };
            let v = ok_json(
                client
                    .post_json(
                        &format!("{}/v1/quarantine/replay", url.trim_end_matches('/')),
                        &key,
                        &body,
                    )
                    .await?,
            )?;
            println!(
                "replayed {}: {} accepted, {} duplicates, {} rejected again",
                v["replayed"], v["accepted"], v["duplicates"], v["rejected"]
            );
            for r in v["results"].as_array().into_iter().flatten() {
                if r["outcome"] == "rejected" {
                    let s = |k: &str| r[k].as_str().unwrap_or("").to_string();
                    println!(
                        "  {} rejected again: {} ({})",
                        s("quarantine_id"),
                        s("message"),
                        s("code")
                    );
                }
            }
            Ok(())
        }
    }
}

fn simulate(args: crate::cli::SimulateArgs) -> anyhow::Result<()> {
    use std::sync::Arc;
    use std::sync::atomic::AtomicBool;
    if let Some(out) = &args.out {
        return crate::simulate::to_file(&args, out).map(|_| ());
    }
    let (Some(url), Some(key)) = (args.url.clone(), args.key.clone()) else {
        anyhow::bail!("give --out FILE, or --url and --key to send to a server");
    };
    let target = crate::simulate::Target { url, key };
    let tally = Arc::new(crate::simulate::Tally::default());
    let stop = Arc::new(AtomicBool::new(false));
    runtime()?.block_on(async {
        let flag = stop.clone();
        tokio::spawn(async move {
            shutdown_signal().await;
            flag.store(true, std::sync::atomic::Ordering::Relaxed);
        });
        let progress = {
            let tally = tally.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(std::time::Duration::from_secs(5));
                tick.tick().await;
                loop {
                    tick.tick().await;
                    eprintln!("{}", tally.line());
                }
            })
        };
        let result = crate::simulate::to_server(&args, target, tally.clone(), stop).await;
        progress.abort();
        result
    })?;
    println!("{}", tally.line());
    Ok(())
}
