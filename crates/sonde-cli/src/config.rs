//! Server configuration: command line and `SONDE_*` variables first, then the TOML file,
//! then defaults.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use serde::Deserialize;
use sonde_server::ServerConfig;

use crate::cli::ServeArgs;

/// The TOML config file: the same options as `sonde serve`, snake_case.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    data_dir: Option<PathBuf>,
    listen: Option<std::net::SocketAddr>,
    store_raw_ids: Option<bool>,
    flush_interval_secs: Option<u64>,
    flush_buffer_mb: Option<usize>,
    dedup_window_hours: Option<u32>,
    late_horizon_hours: Option<u32>,
    max_body_bytes: Option<usize>,
    max_events_per_batch: Option<usize>,
    max_event_bytes: Option<usize>,
    query_timeout_secs: Option<u64>,
    query_max_rows: Option<usize>,
    /// `[relevance]`: how outcomes grade the items they follow.
    relevance: Option<sonde_server::relevance::Gains>,
    /// `[[slo]]`: service-level objectives.
    #[serde(default)]
    slo: Vec<sonde_latency::SloSpec>,
    /// `[alerts]`: evaluation interval and webhook.
    alerts: Option<sonde_server::alerts::AlertConfig>,
}

/// Resolve the server configuration.
pub fn resolve(args: &ServeArgs) -> anyhow::Result<ServerConfig> {
    let file: FileConfig = match &args.config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading config file {}", path.display()))?;
            toml::from_str(&text)
                .with_context(|| format!("parsing config file {}", path.display()))?
        }
        None => FileConfig::default(),
    };
    let data_dir = args
        .data_dir
        .clone()
        .or(file.data_dir)
        .unwrap_or_else(|| PathBuf::from("./sonde-data"));
    let mut c = ServerConfig::new(data_dir);
    if let Some(l) = args.listen.or(file.listen) {
        c.listen = l;
    }
    c.store_raw_ids = args.store_raw_ids.or(file.store_raw_ids).unwrap_or(false);
    if let Some(s) = args.flush_interval_secs.or(file.flush_interval_secs) {
        anyhow::ensure!(s > 0, "flush_interval_secs must be at least 1");
        c.store.flush_interval = Duration::from_secs(s);
    }
    if let Some(mb) = args.flush_buffer_mb.or(file.flush_buffer_mb) {
        anyhow::ensure!(mb > 0, "flush_buffer_mb must be at least 1");
        c.store.flush_bytes = mb << 20;
        // Writers are refused (429) only well past the flush point.
        c.store.max_buffered_bytes = c.store.max_buffered_bytes.max(4 * c.store.flush_bytes);
    }
    if let Some(h) = args.dedup_window_hours.or(file.dedup_window_hours) {
        c.store.dedup_window_hours = h;
    }
    if let Some(h) = args.late_horizon_hours.or(file.late_horizon_hours) {
        c.time_policy.late_horizon_ms = i64::from(h) * 3_600_000;
    }
    if let Some(b) = args.max_body_bytes.or(file.max_body_bytes) {
        c.limits.max_body_bytes = b;
    }
    if let Some(n) = args.max_events_per_batch.or(file.max_events_per_batch) {
        c.limits.max_events_per_batch = n;
    }
    if let Some(b) = args.max_event_bytes.or(file.max_event_bytes) {
        c.limits.event.max_event_bytes = b;
    }
    if let Some(s) = args.query_timeout_secs.or(file.query_timeout_secs) {
        c.query_timeout = Duration::from_secs(s);
    }
    if let Some(n) = args.query_max_rows.or(file.query_max_rows) {
        c.query_max_rows = n;
    }
    if let Some(g) = file.relevance {
        anyhow::ensure!(
            g.window_minutes > 0 && g.long_dwell_secs >= 0.0,
            "[relevance] window_minutes must be positive and long_dwell_secs not negative"
        );
        c.gains = g;
    }
    for (i, s) in file.slo.iter().enumerate() {
        s.validate()?;
        anyhow::ensure!(
            !file.slo[..i].iter().any(|o| o.name == s.name),
            "two SLOs are named {:?}",
            s.name
        );
    }
    c.slos = file.slo;
    if let Some(a) = file.alerts {
        anyhow::ensure!(
            a.evaluate_every_secs > 0,
            "[alerts] evaluate_every_secs must be at least 1"
        );
        c.alerts = a;
    }
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_line_beats_file_beats_default() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("sonde.toml");
        std::fs::write(
            &path,
            "listen = \"127.0.0.1:9000\"\nflush_interval_secs = 3\nflush_buffer_mb = 64\nmax_events_per_batch = 50\n",
        )
        .expect("write");
        let args = ServeArgs {
            config: Some(path.clone()),
            max_events_per_batch: Some(7),
            ..ServeArgs::default()
        };
        let c = resolve(&args).expect("resolve");
        assert_eq!(c.listen.port(), 9000);
        assert_eq!(c.store.flush_interval, Duration::from_secs(3));
        assert_eq!(c.store.flush_bytes, 64 << 20);
        assert_eq!(c.store.max_buffered_bytes, 256 << 20);
        assert_eq!(c.limits.max_events_per_batch, 7);
        assert_eq!(c.limits.max_body_bytes, 10 * 1024 * 1024);
        assert!(!c.store_raw_ids);
        std::fs::write(&path, "[relevance]\npurchase = 5\nwindow_minutes = 60\n").expect("write");
        let c = resolve(&args).expect("resolve");
        assert_eq!(c.gains.purchase, 5);
        assert_eq!(c.gains.window_minutes, 60);
        assert_eq!(c.gains.click, 1, "unset gains keep their defaults");
        std::fs::write(
            &path,
            "[[slo]]\nname = \"feed\"\nsurface = \"home_feed\"\nkind = \"latency\"\nthreshold_ms = 150\ntarget = 0.999\n\n[[slo]]\nname = \"fallbacks\"\nkind = \"fallback\"\ntarget = 0.99\nperiod_days = 7\n\n[alerts]\nevaluate_every_secs = 5\n",
        )
        .expect("write");
        let c = resolve(&args).expect("resolve");
        assert_eq!(c.slos.len(), 2);
        assert_eq!(c.slos[0].threshold_ms, Some(150.0));
        assert_eq!(c.slos[0].period_days, 28, "default period");
        assert_eq!(c.slos[1].period_days, 7);
        assert_eq!(c.alerts.evaluate_every_secs, 5);
        std::fs::write(
            &path,
            "[[slo]]\nname = \"feed\"\nkind = \"latency\"\ntarget = 0.999\n",
        )
        .expect("write");
        let err = resolve(&args).expect_err("latency SLO without threshold");
        assert!(format!("{err:#}").contains("threshold_ms"), "{err:#}");
        std::fs::write(&path, "listen_port = 1\n").expect("write");
        let err = resolve(&args).expect_err("unknown key");
        assert!(format!("{err:#}").contains("listen_port"), "{err:#}");
    }
}
