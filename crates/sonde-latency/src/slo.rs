//! Service-level objectives and multi-window, multi-burn-rate alerts (Google SRE workbook,
//! "Alerting on SLOs", recommendation 6).
//!
//! The burn rate of a window is its error rate divided by the error budget `1 − target`: at
//! a burn rate of 1 the budget lasts exactly the SLO period. A rule holds when both its long
//! and its short window burn faster than its factor; the long window makes it significant,
//! the short one makes it stop soon after the problem does.

use std::collections::{BTreeMap, VecDeque};

use serde::{Deserialize, Serialize};

use crate::LatencyError;

const MINUTE: i64 = 60_000;
const HOUR: i64 = 60 * MINUTE;
const DAY: i64 = 24 * HOUR;

/// What an SLO counts as a bad decision.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Objective {
    /// End-to-end latency above `threshold_ms`.
    Latency,
    /// A fallback (degraded path) served the decision.
    Fallback,
}

/// A declared SLO.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SloSpec {
    /// Name, unique in the project.
    pub name: String,
    /// Placement it covers (all when absent).
    #[serde(default)]
    pub surface: Option<String>,
    /// `latency` or `fallback`.
    pub kind: Objective,
    /// Latency threshold (latency SLOs).
    #[serde(default)]
    pub threshold_ms: Option<f64>,
    /// Share of decisions that must be good, e.g. 0.99.
    pub target: f64,
    /// Compliance period in days.
    #[serde(default = "default_period")]
    pub period_days: u32,
}

fn default_period() -> u32 {
    28
}

impl SloSpec {
    /// Check the declaration.
    pub fn validate(&self) -> Result<(), LatencyError> {
        let bad = |m: String| Err(LatencyError::Invalid(format!("SLO {:?}: {m}", self.name)));
        if self.name.trim().is_empty() {
            return Err(LatencyError::Invalid("an SLO has an empty name".into()));
        }
        if !(self.target > 0.0 && self.target < 1.0) {
            return bad(format!(
                "target {} is not strictly between 0 and 1",
                self.target
            ));
        }
        if self.period_days == 0 {
            return bad("period_days is 0".into());
        }
        match (self.kind, self.threshold_ms) {
            (Objective::Latency, None) => bad("a latency SLO needs threshold_ms".into()),
            (Objective::Latency, Some(t)) if !(t.is_finite() && t > 0.0) => {
                bad(format!("threshold_ms {t} is not a positive number"))
            }
            (Objective::Fallback, Some(_)) => bad("a fallback SLO takes no threshold_ms".into()),
            _ => Ok(()),
        }
    }

    /// The error budget: the share of decisions allowed to be bad.
    pub fn budget(&self) -> f64 {
        1.0 - self.target
    }

    /// The period in ms.
    pub fn period_ms(&self) -> i64 {
        i64::from(self.period_days) * DAY
    }
}

/// Page or ticket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// Wake someone up.
    Page,
    /// Look at it in working hours.
    Ticket,
}

impl Severity {
    /// Wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Page => "page",
            Severity::Ticket => "ticket",
        }
    }
}

/// One multi-window burn-rate rule.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct BurnRule {
    /// Severity of the alert it raises.
    pub severity: Severity,
    /// Burn-rate factor both windows must exceed.
    pub factor: f64,
    /// Long window (ms).
    pub long_ms: i64,
    /// Short window (ms).
    pub short_ms: i64,
}

/// The workbook's four rules: 2% of a 30-day budget in 1 h, 5% in 6 h (pages), 10% in 1 day
/// and 10% in 3 days (tickets).
pub const SRE_RULES: [BurnRule; 4] = [
    BurnRule {
        severity: Severity::Page,
        factor: 14.4,
        long_ms: HOUR,
        short_ms: 5 * MINUTE,
    },
    BurnRule {
        severity: Severity::Page,
        factor: 6.0,
        long_ms: 6 * HOUR,
        short_ms: 30 * MINUTE,
    },
    BurnRule {
        severity: Severity::Ticket,
        factor: 3.0,
        long_ms: DAY,
        short_ms: 2 * HOUR,
    },
    BurnRule {
        severity: Severity::Ticket,
        factor: 1.0,
        long_ms: 3 * DAY,
        short_ms: 6 * HOUR,
    },
];

/// Bad and total decisions of one window.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct WindowBurn {
    /// Window length (ms), ending at the evaluation time.
    pub window_ms: i64,
    /// Bad decisions.
    pub bad: u64,
    /// All decisions.
    pub total: u64,
    /// `bad / total` (0 without traffic).
    pub error_rate: f64,
    /// `error_rate / (1 − target)`.
    pub burn_rate: f64,
}

/// One rule's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct RuleVerdict {
    /// The rule.
    pub rule: BurnRule,
    /// Burn rate over the long window.
    pub long_burn: f64,
    /// Burn rate over the short window.
    pub short_burn: f64,
    /// Both exceed the factor.
    pub holds: bool,
}

/// An SLO evaluated at one instant.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SloEvaluation {
    /// Evaluation time (epoch ms).
    pub at_ms: i64,
    /// Decisions over the compliance period.
    pub period_total: u64,
    /// Bad decisions over the period.
    pub period_bad: u64,
    /// Good share over the period (`None` without traffic).
    pub attainment: Option<f64>,
    /// Share of the error budget left (negative once overspent).
    pub budget_remaining: f64,
    /// Every window the rules use.
    pub windows: Vec<WindowBurn>,
    /// Every rule's verdict.
    pub rules: Vec<RuleVerdict>,
}

impl SloEvaluation {
    /// Whether an alert of `severity` holds (any of its rules does).
    pub fn firing(&self, severity: Severity) -> bool {
        self.rules
            .iter()
            .any(|r| r.rule.severity == severity && r.holds)
    }
}

/// Evaluate `spec` at `now_ms` with `counts(from, to) -> (bad, total)`.
pub fn evaluate(
    spec: &SloSpec,
    now_ms: i64,
    mut counts: impl FnMut(i64, i64) -> (u64, u64),
) -> SloEvaluation {
    let budget = spec.budget();
    let mut lengths: Vec<i64> = SRE_RULES
        .iter()
        .flat_map(|r| [r.long_ms, r.short_ms])
        .collect();
    lengths.sort_unstable();
    lengths.dedup();
    let windows: Vec<WindowBurn> = lengths
        .iter()
        .map(|&w| {
            let (bad, total) = counts(now_ms - w, now_ms);
            let error_rate = if total == 0 {
                0.0
            } else {
                bad as f64 / total as f64
            };
            WindowBurn {
                window_ms: w,
                bad,
                total,
                error_rate,
                burn_rate: error_rate / budget,
            }
        })
        .collect();
    let burn = |w: i64| {
        windows
            .iter()
            .find(|x| x.window_ms == w)
            .map(|x| x.burn_rate)
            .unwrap_or(0.0)
    };
    let rules = SRE_RULES
        .iter()
        .map(|r| {
            let (long_burn, short_burn) = (burn(r.long_ms), burn(r.short_ms));
            RuleVerdict {
                rule: *r,
                long_burn,
                short_burn,
                holds: long_burn > r.factor && short_burn > r.factor,
            }
        })
        .collect();
    let (period_bad, period_total) = counts(now_ms - spec.period_ms(), now_ms);
    let attainment = (period_total > 0).then(|| 1.0 - period_bad as f64 / period_total as f64);
    let budget_remaining = match period_total {
        0 => 1.0,
        n => 1.0 - (period_bad as f64 / n as f64) / budget,
    };
    SloEvaluation {
        at_ms: now_ms,
        period_total,
        period_bad,
        attainment,
        budget_remaining,
        windows,
        rules,
    }
}

/// `firing` or `resolved`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertStatus {
    /// Holds now.
    Firing,
    /// Held, no longer does.
    Resolved,
}

/// Current state of one alert (an SLO at one severity).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AlertState {
    /// SLO name.
    pub slo: String,
    /// Severity.
    pub severity: Severity,
    /// Whether it holds now.
    pub firing: bool,
    /// When it last started firing (epoch ms).
    pub since_ms: Option<i64>,
    /// When it last stopped.
    pub resolved_ms: Option<i64>,
    /// Highest long-window burn rate among its holding rules at the last evaluation.
    pub burn_rate: f64,
}

/// A state change.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Transition {
    /// SLO name.
    pub slo: String,
    /// Severity.
    pub severity: Severity,
    /// New status.
    pub status: AlertStatus,
    /// When (epoch ms).
    pub at_ms: i64,
    /// When the alert started firing (for a resolution: the episode's start).
    pub started_ms: i64,
    /// Long-window burn rate of the strongest rule when it changed.
    pub burn_rate: f64,
}

/// Alert states and their history.
#[derive(Debug, Default)]
pub struct AlertBook {
    states: BTreeMap<(String, Severity), AlertState>,
    history: VecDeque<Transition>,
    capacity: usize,
}

impl AlertBook {
    /// A book keeping the last `capacity` transitions.
    pub fn new(capacity: usize) -> AlertBook {
        AlertBook {
            capacity,
            ..AlertBook::default()
        }
    }

    /// Apply an evaluation; returns the transitions it caused.
    pub fn update(&mut self, slo: &str, eval: &SloEvaluation) -> Vec<Transition> {
        let mut out = Vec::new();
        for severity in [Severity::Page, Severity::Ticket] {
            let firing = eval.firing(severity);
            let burn_rate = eval
                .rules
                .iter()
                .filter(|r| r.rule.severity == severity)
                .map(|r| r.long_burn)
                .fold(0.0, f64::max);
            let state = self
                .states
                .entry((slo.to_string(), severity))
                .or_insert_with(|| AlertState {
                    slo: slo.to_string(),
                    severity,
                    firing: false,
                    since_ms: None,
                    resolved_ms: None,
                    burn_rate: 0.0,
                });
            state.burn_rate = burn_rate;
            if firing == state.firing {
                continue;
            }
            state.firing = firing;
            let started_ms = if firing {
                state.since_ms = Some(eval.at_ms);
                eval.at_ms
            } else {
                state.resolved_ms = Some(eval.at_ms);
                state.since_ms.unwrap_or(eval.at_ms)
            };
            out.push(Transition {
                slo: slo.to_string(),
                severity,
                status: if firing {
                    AlertStatus::Firing
                } else {
                    AlertStatus::Resolved
                },
                at_ms: eval.at_ms,
                started_ms,
                burn_rate,
            });
        }
        for t in &out {
            if self.history.len() == self.capacity.max(1) {
                self.history.pop_front();
            }
            self.history.push_back(t.clone());
        }
        out
    }

    /// Current states.
    pub fn states(&self) -> impl Iterator<Item = &AlertState> {
        self.states.values()
    }

    /// Transitions, oldest first.
    pub fn history(&self) -> impl Iterator<Item = &Transition> {
        self.history.iter()
    }
}
