//! The Sonde HTTP server: the collector (`POST /v1/events`), SQL (`POST /v1/query`),
//! relevance, calibration and drift (`GET /v1/relevance`, `/v1/calibration`, `/v1/drift`),
//! the quarantine,
//! the event schema and health endpoints, over the embedded store.

pub mod alerts;
mod audit;
mod columns;
mod drift;
mod error;
mod exposure;
mod frame;
pub mod health;
mod ingest;
pub(crate) mod latency;
mod live_relevance;
mod metrics;
mod otlp;
mod position;
pub mod project;
mod quarantine;
pub mod relevance;
mod sql;
mod ui;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use sonde_model::{KeyedPseudonymizer, Pseudonymizer, RawIds, TimePolicy};
use sonde_store::{Store, StoreConfig};

pub use error::{ApiError, ServerError};
pub use ingest::{EventStatus, IngestResponse};
pub use metrics::INGEST_STAGES;
pub use project::{NewKeys, Project, Scope};
pub use sql::{rows as result_rows, to_csv};

/// Request size limits.
#[derive(Debug, Clone, Copy)]
pub struct RequestLimits {
    /// Largest body, compressed or after decompression.
    pub max_body_bytes: usize,
    /// Most events in one batch.
    pub max_events_per_batch: usize,
    /// Per-event limits.
    pub event: sonde_model::Limits,
}

impl Default for RequestLimits {
    fn default() -> Self {
        RequestLimits {
            max_body_bytes: 10 * 1024 * 1024,
            max_events_per_batch: 10_000,
            event: sonde_model::Limits::default(),
        }
    }
}

/// Server settings.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Store settings (data directory, flush, dedup window).
    pub store: StoreConfig,
    /// Request limits.
    pub limits: RequestLimits,
    /// Skew correction and late/future thresholds.
    pub time_policy: TimePolicy,
    /// Keep raw user identifiers (operator opt-in; off by default).
    pub store_raw_ids: bool,
    /// Query time limit.
    pub query_timeout: Duration,
    /// Most rows a query returns.
    pub query_max_rows: usize,
    /// How outcomes grade items for the relevance endpoints.
    pub gains: relevance::Gains,
    /// Service-level objectives (`[[slo]]` in the config file).
    pub slos: Vec<sonde_latency::SloSpec>,
    /// Alert evaluation and webhook.
    pub alerts: alerts::AlertConfig,
}

impl ServerConfig {
    /// Defaults for `data_dir`.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        ServerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 7070)),
            store: StoreConfig::new(data_dir),
            limits: RequestLimits::default(),
            time_policy: TimePolicy::default(),
            store_raw_ids: false,
            query_timeout: Duration::from_secs(30),
            query_max_rows: 100_000,
            gains: relevance::Gains::default(),
            slos: Vec::new(),
            alerts: alerts::AlertConfig::default(),
        }
    }
}

/// Shared state of the handlers.
#[derive(Clone)]
pub struct AppState {
    config: Arc<ServerConfig>,
    project: Arc<Project>,
    store: Store,
    pseudonymizer: Arc<dyn Pseudonymizer>,
    alerts: Arc<alerts::AlertEngine>,
    http: Arc<metrics::HttpMetrics>,
    ingest_stages: Arc<metrics::IngestStages>,
    tally: Arc<health::IngestTally>,
    sessions: Arc<ui::Sessions>,
    segments: Arc<ui::SegmentCache>,
    pages: Arc<ui::PageCache>,
}

impl AppState {
    /// The store behind the server.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// A one-time sign-in link (a path) to the dashboard, good for 30 minutes.
    pub fn sign_in_link(&self) -> String {
        self.sessions.sign_in_link()
    }

    /// Evaluate every SLO at `now_ms` and record alert state changes (the server does this
    /// every `evaluate_every_secs`); returns the changes.
    pub fn evaluate_alerts(&self, now_ms: i64) -> Vec<sonde_latency::Transition> {
        self.alerts.tick(&self.store, now_ms)
    }
}

/// Check the bearer key against the project's keys and the scope the route needs.
pub(crate) fn authorize(
    state: &AppState,
    headers: &HeaderMap,
    needed: Scope,
) -> Result<(), ApiError> {
    let value = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| ApiError::unauthorized("missing Authorization: Bearer <key> header"))?;
    let key = value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))
        .ok_or_else(|| ApiError::unauthorized("Authorization must be \"Bearer <key>\""))?
        .trim();
    match state.project.scope_of(key) {
        None => Err(ApiError::unauthorized("unknown key")),
        Some(s) if s.allows(needed) => Ok(()),
        Some(s) => Err(ApiError::unauthorized(format!(
            "a {s:?} key cannot do this; it needs a {needed:?} or Admin key"
        ))),
    }
}

async fn schema() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/schema+json")],
        sonde_model::EVENT_SCHEMA_JSON,
    )
}

async fn healthz() -> &'static str {
    "ok"
}

async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    if state.store.is_writable() {
        (StatusCode::OK, "ready")
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: storage cannot write",
        )
    }
}

/// Build the router over an open store.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/v1/events", post(ingest::post_events))
        .route("/v1/traces", post(otlp::post_traces))
        .route("/v1/query", post(sql::post_query))
        .route("/v1/quarantine", get(quarantine::get_quarantine))
        .route("/v1/quarantine/replay", post(quarantine::post_replay))
        .route("/v1/relevance", get(relevance::get_relevance))
        .route("/v1/calibration", get(relevance::get_calibration))
        .route("/v1/drift", get(drift::get_drift))
        .route("/v1/position-bias", get(position::get_position_bias))
        .route("/v1/stability", get(exposure::get_stability))
        .route("/v1/diversity", get(exposure::get_diversity))
        .route("/v1/fairness", get(exposure::get_fairness))
        .route("/v1/feature-audit", get(audit::get_feature_audit))
        .route("/v1/engagement", get(audit::get_engagement))
        .route("/v1/latency", get(latency::get_latency))
        .route("/v1/latency/tail", get(latency::get_tail))
        .route("/v1/slo", get(alerts::get_slo))
        .route("/v1/alerts", get(alerts::get_alerts))
        .route("/v1/alerts/backtest", get(alerts::get_backtest))
        .route("/v1/health/data", get(health::get_health))
        .route("/v1/schema", get(schema))
        .route("/metrics", get(metrics::get_metrics))
        .route("/", get(ui::get_root))
        .route("/login", get(ui::get_login).post(ui::post_login))
        .route("/login/link", get(ui::get_login_link))
        .route("/live", get(ui::get_live))
        .route("/assets/live.js", get(ui::get_live_js))
        .route("/logout", post(ui::post_logout))
        .route("/overview", get(ui::get_overview))
        .route("/latency", get(ui::get_latency_page))
        .route("/relevance", get(ui::get_relevance_page))
        .route("/health", get(ui::get_health_page))
        .route("/health/quarantine", get(ui::get_quarantine_page))
        .route(
            "/health/quarantine/replay",
            post(ui::post_quarantine_replay),
        )
        .route("/summary", get(ui::get_summary_page))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            metrics::track,
        ))
        .layer(DefaultBodyLimit::disable())
        .with_state(state)
}

/// Initialize the project in `dir` if there is none. Returns the new keys when it did.
pub fn ensure_project(dir: &std::path::Path) -> Result<Option<NewKeys>, ServerError> {
    if Project::exists(dir) {
        Ok(None)
    } else {
        Project::init(dir).map(Some)
    }
}

/// A running server's state, for embedding (tests, demo).
pub fn open(config: ServerConfig) -> Result<AppState, ServerError> {
    let project = Project::load(&config.store.data_dir)?;
    let pseudonymizer: Arc<dyn Pseudonymizer> = if config.store_raw_ids {
        tracing::warn!("storing raw user identifiers (--store-raw-ids)");
        Arc::new(RawIds)
    } else {
        Arc::new(KeyedPseudonymizer::new(
            project.pseudonym_key_id.clone(),
            &project.secret,
        ))
    };
    for s in &config.slos {
        s.validate()
            .map_err(|e| ServerError::Config(e.to_string()))?;
    }
    let mut store_config = config.store.clone();
    // Latency SLO thresholds are counted exactly in every rollup minute.
    store_config.rollups.thresholds_ms =
        config.slos.iter().filter_map(|s| s.threshold_ms).collect();
    store_config.rollups.thresholds_ms.sort_by(f64::total_cmp);
    store_config.rollups.thresholds_ms.dedup();
    let store = Store::open(store_config)?;
    let alerts = Arc::new(alerts::AlertEngine::new(
        config.slos.clone(),
        config.alerts.clone(),
    ));
    Ok(AppState {
        config: Arc::new(config),
        project: Arc::new(project),
        store,
        pseudonymizer,
        alerts,
        http: Arc::default(),
        ingest_stages: Arc::default(),
        tally: Arc::default(),
        sessions: Arc::default(),
        segments: Arc::default(),
        pages: Arc::default(),
    })
}

/// Wall-clock now, epoch milliseconds.
pub(crate) fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Turn on the store's live sums — the relevance join and the per-minute receipts — and load
/// them from what is stored (ranking and health queries use SQL until each is done, or if it
/// fails). `serve` runs it in the background.
pub async fn load_live_sums(state: AppState) {
    // Loading reads the kept history once: it may take longer than a query.
    let timeout = state
        .config
        .query_timeout
        .max(std::time::Duration::from_secs(600));
    let started = std::time::Instant::now();
    let now = now_ms();
    let snapshot = state.store.start_live(sonde_store::LiveSums {
        relevance: live_relevance::empty(&state.config.gains, now),
        gains: state.config.gains,
        receipts: health::empty_receipts(now),
    });
    let snapshot = match snapshot {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "live sums not started; ranking and health use SQL");
            return;
        }
    };
    let (relevance, receipts) = tokio::join!(
        live_relevance::load(&state.store, snapshot.clone(), now, timeout),
        health::load_receipts(&state.store, snapshot, timeout),
    );
    if let Err(e) = relevance {
        tracing::warn!(error = %e, "live relevance not loaded; ranking queries use SQL");
    }
    match receipts {
        Ok(()) => tracing::info!(secs = started.elapsed().as_secs_f64(), "receipts loaded"),
        Err(e) => tracing::warn!(error = %e, "receipts not loaded; health counts use SQL"),
    }
}

/// Serve until `shutdown` resolves, then flush and close the store.
pub async fn serve(
    state: AppState,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    let store = state.store.clone();
    let evaluator = tokio::spawn(alerts::run(state.clone()));
    let loader = tokio::spawn(load_live_sums(state.clone()));
    let app = router(state);
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(ServerError::Serve)?;
    evaluator.abort();
    loader.abort();
    let s = store.clone();
    tokio::task::spawn_blocking(move || s.close())
        .await
        .map_err(|e| ServerError::Serve(std::io::Error::other(e)))??;
    tracing::info!("store flushed and closed");
    Ok(())
}
