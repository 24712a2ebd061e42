//! `sonde import`: send an NDJSON file of events (exported logs, `sonde simulate --out`)
//! through the HTTP API, in batches over several connections, retrying failed batches with
//! the same bytes so a retry is stored once.

use std::io::BufRead;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use clap::Args;
use tokio::sync::Semaphore;

use crate::http::Client;
use crate::simulate::{Tally, Target, send_batch};

/// `sonde import` options.
#[derive(Debug, Args)]
pub struct ImportArgs {
    /// NDJSON file, one event per line.
    pub file: std::path::PathBuf,
    /// Server to send to, e.g. http://127.0.0.1:7070.
    #[arg(long, env = "SONDE_URL")]
    pub url: String,
    /// Write key.
    #[arg(long, env = "SONDE_KEY")]
    pub key: String,
    /// Import as history (`?backfill=true`): no skew correction, no late flags.
    #[arg(long)]
    pub backfill: bool,
    /// Events per request.
    #[arg(long, default_value_t = 5000)]
    pub batch: usize,
    /// Requests in flight.
    #[arg(long, default_value_t = 4)]
    pub connections: usize,
}

/// Send the file; returns what the server answered.
pub async fn run(args: &ImportArgs) -> anyhow::Result<Arc<Tally>> {
    let file = std::fs::File::open(&args.file)
        .with_context(|| format!("opening {}", args.file.display()))?;
    let mut reader = std::io::BufReader::with_capacity(1 << 20, file);
    let client = Client::new();
    let target = Arc::new(Target {
        url: args.url.clone(),
        key: args.key.clone(),
    });
    let tally = Arc::new(Tally::default());
    let slots = Arc::new(Semaphore::new(args.connections.max(1)));
    let batch = args.batch.clamp(1, 10_000);
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    let mut sent = 0usize;
    loop {
        let mut body = Vec::with_capacity(batch * 1024);
        let mut events = 0;
        while events < batch {
            let before = body.len();
            if reader.read_until(b'\n', &mut body)? == 0 {
                break;
            }
            if body[before..].iter().all(u8::is_ascii_whitespace) {
                body.truncate(before);
                continue;
            }
            if body.last() != Some(&b'\n') {
                body.push(b'\n');
            }
            events += 1;
        }
        if events == 0 {
            break;
        }
        sent += events;
        let permit = slots.clone().acquire_owned().await?;
        let (client, target, tally) = (client.clone(), target.clone(), tally.clone());
        let backfill = args.backfill;
        tasks.spawn(async move {
            send_batch(&client, &target, body.into(), events, backfill, &tally).await;
            drop(permit);
        });
        // Reap finished tasks as we go so the set stays small.
        while tasks.try_join_next().is_some() {}
    }
    while tasks.join_next().await.is_some() {}
    tracing::info!(
        events = sent,
        secs = started.elapsed().as_secs_f64(),
        "import done"
    );
    Ok(tally)
}
