//! Ground truth: the parameters a simulation was drawn from.

use serde::Serialize;

use crate::{COMPONENTS, SLATE, Variant, examination, latency_model};

/// Truth for one variant.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct VariantTruth {
    /// Decisions generated.
    pub decisions: u64,
    /// Expected clicks per impression (item shown), averaged over the generated slates.
    pub ctr: f64,
    /// Expected share of decisions followed by a purchase of one of their items.
    pub conversion_rate: f64,
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
}

#[derive(Debug, Default)]
pub(crate) struct Accumulator {
    // (decisions, sum of per-impression CTR, sum of purchase probability) per variant
    control: (u64, f64, f64),
    treatment: (u64, f64, f64),
}

impl Accumulator {
    pub(crate) fn record(&mut self, v: Variant, ctr: f64, p_purchase: f64) {
        let a = match v {
            Variant::Control => &mut self.control,
            Variant::Treatment => &mut self.treatment,
        };
        a.0 += 1;
        a.1 += ctr;
        a.2 += p_purchase;
    }

    pub(crate) fn finish(&self, seed: u64) -> GroundTruth {
        let vt = |a: &(u64, f64, f64)| {
            let n = a.0.max(1) as f64;
            VariantTruth {
                decisions: a.0,
                ctr: a.1 / n,
                conversion_rate: a.2 / n,
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
        }
    }
}
