//! SLOs and burn-rate alerts: `GET /v1/slo`, `GET /v1/alerts`, `GET /v1/alerts/backtest`,
//! the periodic evaluation and the Alertmanager-compatible webhook. Semantics in
//! `docs/latency.md`.

use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sonde_latency::{
    AlertBook, AlertState, AlertStatus, Filter, Objective, Rollups, SloEvaluation, SloSpec,
    Transition, evaluate,
};
use sonde_store::Store;

use crate::relevance::time_param;
use crate::{ApiError, AppState, Scope, authorize};

/// Alerting settings (`[alerts]` in the config file).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AlertConfig {
    /// Evaluate every SLO this often (seconds).
    pub evaluate_every_secs: u64,
    /// POST state changes here, in Alertmanager's webhook format.
    pub webhook_url: Option<String>,
    /// Link put in each alert's `generatorURL`.
    pub external_url: String,
}

impl Default for AlertConfig {
    fn default() -> Self {
        AlertConfig {
            evaluate_every_secs: 15,
            webhook_url: None,
            external_url: "http://127.0.0.1:7070".into(),
        }
    }
}

/// Bad and total decisions of `spec` over `[from, to)`.
pub(crate) fn slo_counts(spec: &SloSpec, r: &Rollups, from: i64, to: i64) -> (u64, u64) {
    let filter = Filter {
        surface: spec.surface.clone(),
        ..Filter::default()
    };
    match spec.kind {
        Objective::Latency => {
            let w = r.window(&filter, from, to, spec.threshold_ms);
            (w.over, w.samples)
        }
        Objective::Fallback => {
            let w = r.window(&filter, from, to, None);
            (w.fallbacks, w.decisions)
        }
    }
}

/// Evaluate every SLO at `now`.
pub(crate) fn evaluate_all(specs: &[SloSpec], store: &Store, now: i64) -> Vec<SloEvaluation> {
    store.with_rollups(|r| {
        specs
            .iter()
            .map(|s| evaluate(s, now, |a, b| slo_counts(s, r, a, b)))
            .collect()
    })
}

/// The alert states of the running server.
pub struct AlertEngine {
    specs: Vec<SloSpec>,
    config: AlertConfig,
    book: Mutex<AlertBook>,
}

impl AlertEngine {
    /// An engine for `specs`.
    pub fn new(specs: Vec<SloSpec>, config: AlertConfig) -> AlertEngine {
        AlertEngine {
            specs,
            config,
            book: Mutex::new(AlertBook::new(1000)),
        }
    }

    /// The declared SLOs.
    pub fn specs(&self) -> &[SloSpec] {
        &self.specs
    }

    /// Current alert states.
    pub fn states(&self) -> Vec<AlertState> {
        self.book.lock().states().cloned().collect()
    }

    /// Evaluate now and record state changes; returns them.
    pub fn tick(&self, store: &Store, now: i64) -> Vec<Transition> {
        let evals = evaluate_all(&self.specs, store, now);
        let mut book = self.book.lock();
        self.specs
            .iter()
            .zip(&evals)
            .flat_map(|(s, e)| book.update(&s.name, e))
            .collect()
    }
}

/// Evaluate periodically until the process ends; send state changes to the webhook.
pub(crate) async fn run(state: AppState) {
    let engine = state.alerts.clone();
    if engine.specs.is_empty() {
        return;
    }
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let mut every = tokio::time::interval(Duration::from_secs(
        engine.config.evaluate_every_secs.max(1),
    ));
    loop {
        every.tick().await;
        let now = chrono::Utc::now().timestamp_millis();
        let store = state.store.clone();
        let e = engine.clone();
        let Ok(transitions) = tokio::task::spawn_blocking(move || e.tick(&store, now)).await else {
            continue;
        };
        for t in &transitions {
            tracing::warn!(
                slo = %t.slo,
                severity = t.severity.as_str(),
                status = ?t.status,
                burn_rate = t.burn_rate,
                "SLO alert changed state"
            );
        }
        if let (Some(url), false) = (&engine.config.webhook_url, transitions.is_empty()) {
            let body = webhook_body(&engine.specs, &transitions, &engine.config.external_url);
            send_webhook(&client, url, body).await;
        }
    }
}

async fn send_webhook(
    client: &Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>,
    url: &str,
    body: Value,
) {
    let request = hyper::Request::post(url)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())));
    let Ok(request) = request else {
        tracing::error!("alert webhook URL is not a valid URI");
        return;
    };
    match tokio::time::timeout(Duration::from_secs(10), client.request(request)).await {
        Ok(Ok(r)) if r.status().is_success() => {}
        // The URL may carry a token: log the outcome, not the URL.
        Ok(Ok(r)) => tracing::error!(status = r.status().as_u16(), "alert webhook refused"),
        Ok(Err(e)) => tracing::error!(error = %e, "alert webhook failed"),
        Err(_) => tracing::error!("alert webhook timed out"),
    }
}

fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// Alertmanager's webhook payload (version 4) for `transitions`.
pub fn webhook_body(specs: &[SloSpec], transitions: &[Transition], external_url: &str) -> Value {
    let alerts: Vec<Value> = transitions
        .iter()
        .map(|t| {
            let spec = specs.iter().find(|s| s.name == t.slo);
            let firing = t.status == AlertStatus::Firing;
            json!({
                "status": if firing { "firing" } else { "resolved" },
                "labels": {
                    "alertname": "SloBurnRate",
                    "slo": t.slo,
                    "severity": t.severity.as_str(),
                    "surface": spec.and_then(|s| s.surface.clone()).unwrap_or_default(),
                },
                "annotations": {
                    "summary": format!("{} is burning its error budget at {:.1}×", t.slo, t.burn_rate),
                    "description": spec.map(describe).unwrap_or_default(),
                },
                "startsAt": rfc3339(t.started_ms),
                "endsAt": if firing { "0001-01-01T00:00:00Z".to_string() } else { rfc3339(t.at_ms) },
                "generatorURL": format!("{external_url}/v1/alerts"),
                "fingerprint": format!("{:016x}", fnv1a(&format!("{}/{}", t.slo, t.severity.as_str()))),
            })
        })
        .collect();
    let status = if alerts.iter().any(|a| a["status"] == "firing") {
        "firing"
    } else {
        "resolved"
    };
    json!({
        "version": "4",
        "groupKey": "{}:{alertname=\"SloBurnRate\"}",
        "truncatedAlerts": 0,
        "status": status,
        "receiver": "sonde",
        "groupLabels": {"alertname": "SloBurnRate"},
        "commonLabels": {"alertname": "SloBurnRate"},
        "commonAnnotations": {},
        "externalURL": external_url,
        "alerts": alerts,
    })
}

fn fnv1a(s: &str) -> u64 {
    // FNV-1a: a stable fingerprint without another dependency.
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// An SLO in words.
pub(crate) fn describe(s: &SloSpec) -> String {
    let scope = s.surface.as_deref().unwrap_or("all surfaces");
    match (s.kind, s.threshold_ms) {
        (Objective::Latency, Some(t)) => format!(
            "{}% of {scope} decisions under {t} ms over {} days",
            s.target * 100.0,
            s.period_days
        ),
        _ => format!(
            "{}% of {scope} decisions served without fallback over {} days",
            s.target * 100.0,
            s.period_days
        ),
    }
}

/// One SLO with its current evaluation.
#[derive(Debug, Serialize)]
pub struct SloStatus {
    /// The declaration.
    #[serde(flatten)]
    pub spec: SloSpec,
    /// In words.
    pub description: String,
    /// Evaluated now.
    pub evaluation: SloEvaluation,
}

/// `GET /v1/slo`.
pub async fn get_slo(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    authorize(&state, &headers, Scope::Read)?;
    let now = chrono::Utc::now().timestamp_millis();
    let specs = &state.alerts.specs;
    let evals = evaluate_all(specs, &state.store, now);
    let slos: Vec<SloStatus> = specs
        .iter()
        .zip(evals)
        .map(|(s, e)| SloStatus {
            spec: s.clone(),
            description: describe(s),
            evaluation: e,
        })
        .collect();
    Ok(axum::Json(json!({ "slos": slos })).into_response())
}

/// Response of `GET /v1/alerts`.
#[derive(Debug, Serialize)]
pub struct AlertsResponse {
    /// Every alert (SLO × severity) evaluated so far.
    pub alerts: Vec<AlertState>,
    /// State changes, oldest first (the last 1000).
    pub history: Vec<Transition>,
}

/// `GET /v1/alerts`.
pub async fn get_alerts(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    authorize(&state, &headers, Scope::Read)?;
    let book = state.alerts.book.lock();
    Ok(axum::Json(AlertsResponse {
        alerts: book.states().cloned().collect(),
        history: book.history().cloned().collect(),
    })
    .into_response())
}

/// Query of `GET /v1/alerts/backtest`.
#[derive(Debug, Deserialize)]
pub struct BacktestParams {
    /// Start (RFC 3339 or epoch ms).
    pub from: String,
    /// End.
    pub to: String,
    /// Seconds between evaluations: whole minutes (default 60).
    pub step_secs: Option<u64>,
}

/// `GET /v1/alerts/backtest`: replay the alert evaluation over the history in memory, as if
/// the SLOs had been evaluated every `step_secs` from `from` to `to`; returns the state
/// changes. Tells whether an SLO would have caught an incident, and how fast. Evaluations
/// fall on whole minutes, so no window sees a minute that had not ended yet.
pub async fn get_backtest(
    State(state): State<AppState>,
    Query(p): Query<BacktestParams>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    authorize(&state, &headers, Scope::Read)?;
    const MINUTE: i64 = 60_000;
    let (from, to) = (time_param("from", &p.from)?, time_param("to", &p.to)?);
    let from = (from + MINUTE - 1).div_euclid(MINUTE) * MINUTE;
    let step = i64::try_from(p.step_secs.unwrap_or(60))
        .unwrap_or(i64::MAX)
        .saturating_mul(1000);
    if step < MINUTE || step % MINUTE != 0 || to <= from || (to - from) / step > 100_000 {
        return Err(ApiError::bad_request(
            "invalid_parameter",
            "need from < to, step_secs a whole number of minutes, at most 100,000 evaluations",
        ));
    }
    let specs = state.alerts.specs.clone();
    let store = state.store.clone();
    let transitions = tokio::task::spawn_blocking(move || {
        let mut book = AlertBook::new(100_000);
        let mut out = Vec::new();
        let mut t = from;
        while t <= to {
            let now = t;
            let evals = evaluate_all(&specs, &store, now);
            for (s, e) in specs.iter().zip(&evals) {
                out.extend(book.update(&s.name, e));
            }
            t += step;
        }
        out
    })
    .await
    .map_err(|e| ApiError::internal(format!("backtest failed: {e}")))?;
    Ok(axum::Json(json!({
        "from": from,
        "to": to,
        "step_ms": step,
        "evaluations": (to - from) / step + 1,
        "transitions": transitions,
    }))
    .into_response())
}
