//! `sonde status`: the instrumentation-health report of a running server, as tables.

use clap::Args;
use serde_json::Value;

use crate::http::{Client, ok_json};
use crate::table;

/// Options of `sonde status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub remote: crate::cli::Remote,
    /// Window of rates and lags, minutes.
    #[arg(long, default_value_t = 60)]
    pub window_minutes: i64,
    /// Print the JSON of `GET /v1/health/data` instead of tables.
    #[arg(long)]
    pub json: bool,
}

fn num(v: &Value, digits: usize) -> Value {
    match v.as_f64() {
        Some(x) if x.fract() == 0.0 && x.abs() < 1e15 => Value::String(format!("{x:.0}")),
        Some(x) => Value::String(format!("{x:.digits$}")),
        None => Value::String("-".into()),
    }
}

fn pct(v: &Value) -> Value {
    Value::String(
        v.as_f64()
            .map_or_else(|| "-".into(), |x| format!("{:.2}%", x * 100.0)),
    )
}

/// Run it.
pub async fn run(args: StatusArgs) -> anyhow::Result<()> {
    let url = format!(
        "{}/v1/health/data?window_minutes={}",
        args.remote.url.trim_end_matches('/'),
        args.window_minutes
    );
    let report = ok_json(Client::new().get(&url, Some(&args.remote.key)).await?)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    let cols: Vec<String> = [
        "type",
        "surface",
        "events",
        "per s (5 min)",
        "last (s ago)",
        "lag p50 ms",
        "lag p99 ms",
        "late",
        "future",
        "duplicates",
        "conflicts",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let rows: Vec<Vec<Value>> = report["sources"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|s| {
            vec![
                s["type"].clone(),
                s["surface"].clone(),
                s["events"].clone(),
                num(&s["rate_per_sec_5m"], 1),
                num(&s["seconds_since_last"], 0),
                num(&s["lag_p50_ms"], 0),
                num(&s["lag_p99_ms"], 0),
                pct(&s["late_rate"]),
                pct(&s["future_rate"]),
                pct(&s["duplicate_rate"]),
                pct(&s["conflict_rate"]),
            ]
        })
        .collect();
    println!(
        "Sources, last {} min (duplicates since the server started):",
        args.window_minutes
    );
    println!("{}", table::render(&cols, &rows));
    let o = &report["orphan_interactions"];
    let q = &report["quarantine"];
    println!(
        "Rejected: {} of events in the window{}",
        pct(&report["rejection_rate"]).as_str().unwrap_or("-"),
        report["rejections"]
            .as_array()
            .filter(|a| !a.is_empty())
            .map(|a| {
                let parts: Vec<String> = a
                    .iter()
                    .map(|c| format!("{} {}", c["code"].as_str().unwrap_or("?"), c["count"]))
                    .collect();
                format!(" ({})", parts.join(", "))
            })
            .unwrap_or_default()
    );
    println!(
        "Orphan interactions (no decision after {} min): {} of {} ({})",
        o["grace_minutes"],
        o["orphans"],
        o["checked"],
        pct(&o["rate"]).as_str().unwrap_or("-")
    );
    println!(
        "Quarantine: {} entries, {} not replayed",
        q["total"], q["unresolved"]
    );
    if let Some(last) = report["cardinality"].as_array().and_then(|a| a.last()) {
        println!(
            "Last hour: {} users, {} sessions, {} items (HyperLogLog estimates)",
            last["users"], last["sessions"], last["items"]
        );
    }
    Ok(())
}
