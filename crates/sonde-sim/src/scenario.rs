//! Scheduled incidents and the named scenarios that combine them.

use serde::Serialize;

/// What goes wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum IncidentKind {
    /// Inference latency of both variants × 10 (a saturated model server).
    LatencySpike,
    /// The feature store fails 40% of lookups: they time out (250 ms) and the decision is
    /// served by the fallback (popularity) path, which ranks worse.
    FeatureStoreOutage,
    /// The `recency_days` feature triples and every score shifts up by 0.8 logit.
    Drift,
    /// The treatment model's scores stop meaning click probabilities (logit × 2 + 1.5);
    /// the ranking, and so the true relevance served, is unchanged.
    CalibrationBreak,
}

impl IncidentKind {
    /// Wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            IncidentKind::LatencySpike => "latency_spike",
            IncidentKind::FeatureStoreOutage => "feature_store_outage",
            IncidentKind::Drift => "drift",
            IncidentKind::CalibrationBreak => "calibration_break",
        }
    }
}

/// An incident active over `[start_ms, end_ms)` of event time.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Incident {
    /// What goes wrong.
    pub kind: IncidentKind,
    /// Start (epoch ms).
    pub start_ms: i64,
    /// End (epoch ms, exclusive).
    pub end_ms: i64,
}

/// Scenario names accepted by `sonde simulate --scenario`.
pub const SCENARIOS: [&str; 6] = [
    "steady",
    "latency-spike",
    "feature-store-outage",
    "drift",
    "calibration-break",
    "incidents",
];

const MIN: i64 = 60_000;

/// The incidents of scenario `name`, with times relative to `start_ms` (where live traffic
/// starts). `None` for an unknown name.
pub fn scenario(name: &str, start_ms: i64) -> Option<Vec<Incident>> {
    let at = |kind, from_min: i64, minutes: i64| Incident {
        kind,
        start_ms: start_ms + from_min * MIN,
        end_ms: start_ms + (from_min + minutes) * MIN,
    };
    use IncidentKind::*;
    Some(match name {
        "steady" => vec![],
        "latency-spike" => vec![at(LatencySpike, 2, 3)],
        "feature-store-outage" => vec![at(FeatureStoreOutage, 2, 3)],
        "drift" => vec![at(Drift, 2, 24 * 60)],
        "calibration-break" => vec![at(CalibrationBreak, 2, 24 * 60)],
        // The demo: one after another, a few minutes apart.
        "incidents" => vec![
            at(LatencySpike, 2, 2),
            at(FeatureStoreOutage, 6, 2),
            at(Drift, 10, 24 * 60),
            at(CalibrationBreak, 14, 24 * 60),
        ],
        _ => return None,
    })
}

/// Whether an incident of `kind` is active at `t`.
pub(crate) fn active(incidents: &[Incident], kind: IncidentKind, t: i64) -> bool {
    incidents
        .iter()
        .any(|i| i.kind == kind && i.start_ms <= t && t < i.end_ms)
}
