//! Ground truth: the parameters a simulation was drawn from.

use serde::Serialize;

use crate::{COMPONENTS, Incident, SLATE, Variant, examination, latency_model};

/// Truth for one variant.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct VariantTruth {
    /// Decisions generated.
    pub decisions: u64,
    /// Expected clicks per impression (item shown), averaged over the generated slates.
    pub ctr: f64,
    /// Expected share of decisions followed by a purchase of one of their items.
    pub conversion_rate: f64,
    /// Expected clicks per decision under the logging policy (what was served).
    pub logging_policy_value: f64,
    /// Expected clicks per decision had the target policy served instead: the same scores
    /// ranked greedily (deterministic top 10). What an off-policy estimate must recover.
    pub target_policy_value: f64,
}

/// Latency quantiles of one component and variant, from its distribution (ms).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct LatencyTruth {
    /// Component.
    pub component: String,
    /// Variant.
    pub variant: String,
    /// Median.
    pub p50: f64,
    /// 99th percentile.
    pub p99: f64,
}

/// What the simulator knows to be true.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct GroundTruth {
    /// Seed.
    pub seed: u64,
    /// Control variant.
    pub control: VariantTruth,
    /// Treatment variant.
    pub treatment: VariantTruth,
    /// Relative CTR lift, treatment over control.
    pub ctr_lift: f64,
    /// Latency quantiles per component and variant.
    pub latency: Vec<LatencyTruth>,
    /// Examination probability by position 1..=10.
    pub examination: Vec<f64>,
    /// Incidents played. The figures above cover decisions outside them.
    pub incidents: Vec<Incident>,
}

/// What one decision contributes to the truth.
pub(crate) struct Sample {
    pub variant: Variant,
    pub ctr: f64,
    pub p_purchase: f64,
    pub logging_value: f64,
    pub target_value: f64,
}

#[derive(Debug, Default)]
struct Sums {
    decisions: u64,
    ctr: f64,
    p_purchase: f64,
    logging_value: f64,
    target_value: f64,
}

#[derive(Debug, Default)]
pub(crate) struct Accumulator {
    control: Sums,
    treatment: Sums,
}

impl Accumulator {
    pub(crate) fn record(&mut self, s: Sample) {
        let a = match s.variant {
            Variant::Control => &mut self.control,
            Variant::Treatment => &mut self.treatment,
        };
        a.decisions += 1;
        a.ctr += s.ctr;
        a.p_purchase += s.p_purchase;
        a.logging_value += s.logging_value;
        a.target_value += s.target_value;
    }

    pub(crate) fn finish(&self, seed: u64, incidents: &[Incident]) -> GroundTruth {
        let vt = |a: &Sums| {
            let n = a.decisions.max(1) as f64;
            VariantTruth {
                decisions: a.decisions,
                ctr: a.ctr / n,
                conversion_rate: a.p_purchase / n,
                logging_policy_value: a.logging_value / n,
                target_policy_value: a.target_value / n,
            }
        };
        let (control, treatment) = (vt(&self.control), vt(&self.treatment));
        let latency = COMPONENTS
            .iter()
            .flat_map(|c| {
                [Variant::Control, Variant::Treatment].map(|v| {
                    let m = latency_model(c, v);
                    LatencyTruth {
                        component: c.to_string(),
                        variant: v.as_str().to_string(),
                        p50: m.quantile(0.5),
                        p99: m.quantile(0.99),
                    }
                })
            })
            .collect();
        GroundTruth {
            seed,
            ctr_lift: treatment.ctr / control.ctr - 1.0,
            control,
            treatment,
            latency,
            examination: (1..=SLATE).map(examination).collect(),
            incidents: incidents.to_vec(),
        }
    }
}
