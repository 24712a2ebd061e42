//! `sonde report relevance`: ranking quality and calibration per group, from the server's
//! `/v1/relevance` and `/v1/calibration`, as a text table, Markdown or JSON.

use clap::{Args, ValueEnum};
use serde_json::Value;

use crate::http::{Client, ok_json};

/// Output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Aligned columns.
    Text,
    /// A Markdown table.
    Markdown,
    /// The API's JSON.
    Json,
}

/// `sonde report relevance` options.
#[derive(Debug, Args)]
pub struct RelevanceArgs {
    /// Server URL.
    #[arg(long, env = "SONDE_URL")]
    pub url: String,
    /// Read key.
    #[arg(long, env = "SONDE_KEY")]
    pub key: String,
    /// Only this surface.
    #[arg(long)]
    pub surface: Option<String>,
    /// Decisions from (RFC 3339 or epoch ms).
    #[arg(long)]
    pub from: Option<String>,
    /// Decisions until (RFC 3339 or epoch ms).
    #[arg(long)]
    pub to: Option<String>,
    /// none, surface, model, variant, device, region, hour or day.
    #[arg(long, default_value = "model")]
    pub group_by: String,
    /// Experiment, for --group-by variant.
    #[arg(long)]
    pub experiment: Option<String>,
    /// Cutoff of the @k metrics.
    #[arg(long, default_value_t = 10)]
    pub k: usize,
    /// Output format.
    #[arg(long, value_enum, default_value = "text")]
    pub format: Format,
}

fn query_string(a: &RelevanceArgs) -> String {
    let mut q = vec![
        format!("group_by={}", enc(&a.group_by)),
        format!("k={}", a.k),
    ];
    for (name, v) in [
        ("surface", &a.surface),
        ("from", &a.from),
        ("to", &a.to),
        ("experiment", &a.experiment),
    ] {
        if let Some(v) = v {
            q.push(format!("{name}={}", enc(v)));
        }
    }
    q.join("&")
}

/// Percent-encode a query value (everything but unreserved characters).
fn enc(s: &str) -> String {
    const UNRESERVED: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'_')
        .remove(b'.')
        .remove(b'~');
    percent_encoding::utf8_percent_encode(s, UNRESERVED).to_string()
}

/// Fetch and print the report.
pub async fn relevance(a: RelevanceArgs) -> anyhow::Result<()> {
    let client = Client::new();
    let base = a.url.trim_end_matches('/');
    let q = query_string(&a);
    let rel = ok_json(
        client
            .get(&format!("{base}/v1/relevance?{q}"), Some(&a.key))
            .await?,
    )?;
    let cal = ok_json(
        client
            .get(&format!("{base}/v1/calibration?{q}"), Some(&a.key))
            .await?,
    )?;
    if a.format == Format::Json {
        println!(
            "{}",
            serde_json::to_string_pretty(
                &serde_json::json!({"relevance": rel, "calibration": cal})
            )?
        );
        return Ok(());
    }
    let k = a.k;
    let columns: Vec<String> = [
        "group".to_string(),
        "decisions".into(),
        "coverage".into(),
        format!("CTR@{k}"),
        format!("P@{k}"),
        format!("HitRate@{k}"),
        "MRR".into(),
        "MAP".into(),
        format!("NDCG@{k}"),
        format!("NDCG@{k} exp"),
        "ECE".into(),
        "Brier".into(),
        "slope".into(),
    ]
    .into();
    let calibration_of = |group: &Value| {
        cal["groups"]
            .as_array()
            .and_then(|gs| gs.iter().find(|g| g["group"] == *group))
            .cloned()
            .unwrap_or(Value::Null)
    };
    let f = |v: &Value| v.as_f64().map_or("–".to_string(), |x| format!("{x:.4}"));
    let rows: Vec<Vec<Value>> = rel["groups"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|g| {
            let c = calibration_of(&g["group"]);
            let mut row = vec![g["group"].clone(), g["lists"].clone()];
            for key in [
                "coverage",
                "ctr",
                "precision",
                "hit_rate",
                "mrr",
                "map",
                "ndcg",
                "ndcg_exp",
            ] {
                row.push(Value::String(f(&g[key])));
            }
            for key in ["ece", "brier", "slope"] {
                row.push(Value::String(f(&c[key])));
            }
            row
        })
        .collect();
    match a.format {
        Format::Markdown => {
            println!("| {} |", columns.join(" | "));
            println!("|{}", "---|".repeat(columns.len()));
            for r in &rows {
                let cells: Vec<String> = r
                    .iter()
                    .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_string))
                    .collect();
                println!("| {} |", cells.join(" | "));
            }
        }
        _ => print!("{}", crate::table::render(&columns, &rows)),
    }
    println!(
        "outcomes within {} min of the decision; graded click 1, click with 30 s dwell 2, cart 2, purchase 3",
        rel["window_minutes"]
    );
    Ok(())
}
