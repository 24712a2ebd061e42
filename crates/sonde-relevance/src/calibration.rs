//! Calibration of predicted probabilities against binary outcomes.
//!
//! Bins follow scikit-learn's `calibration_curve`: equal-mass edges are numpy's linear
//! percentiles of the predictions, equal-width edges split [0, 1]; a prediction goes to the
//! bin whose inner edges are strictly below it; empty bins are dropped. ECE weighs each
//! bin's |observed − predicted| by its share of predictions; MCE is the largest. Log loss
//! clips predictions to [ε, 1 − ε] (ε = f64::EPSILON) as scikit-learn does, and so does the
//! logistic fit of outcome on logit(prediction) that gives calibration slope and intercept
//! (1 and 0 when calibrated).

use serde::Serialize;

use crate::MetricError;

/// How reliability bins are cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Binning {
    /// Equal numbers of predictions per bin (default).
    EqualMass,
    /// Equal widths over [0, 1].
    EqualWidth,
}

/// One bin of a reliability diagram.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct CalibrationBin {
    /// Lower edge.
    pub lower: f64,
    /// Upper edge.
    pub upper: f64,
    /// Predictions in the bin.
    pub count: u64,
    /// Mean prediction.
    pub predicted: f64,
    /// Observed outcome rate.
    pub observed: f64,
}

/// Calibration of a set of predictions.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CalibrationReport {
    /// Predictions.
    pub n: u64,
    /// Non-empty bins, lowest first.
    pub bins: Vec<CalibrationBin>,
    /// Expected calibration error.
    pub ece: f64,
    /// Maximum calibration error.
    pub mce: f64,
    /// Mean squared error of the predictions.
    pub brier: f64,
    /// Mean negative log-likelihood.
    pub log_loss: f64,
    /// Slope of the logistic fit of outcome on logit(prediction); `None` when it diverges
    /// (outcomes perfectly separated, or all equal).
    pub slope: Option<f64>,
    /// Intercept of that fit.
    pub intercept: Option<f64>,
}

/// numpy's linear-interpolation percentile of sorted data, with numpy's own `_lerp` (which
/// interpolates from the upper end past the midpoint) so edges match to the last bit.
pub(crate) fn percentile_sorted(sorted: &[f64], q: f64) -> f64 {
    let h = (sorted.len() - 1) as f64 * q;
    let lo = (h.floor() as usize).min(sorted.len() - 1);
    let hi = (lo + 1).min(sorted.len() - 1);
    let t = h - lo as f64;
    let (a, b) = (sorted[lo], sorted[hi]);
    let d = b - a;
    if t >= 0.5 {
        b - d * (1.0 - t)
    } else {
        a + d * t
    }
}

fn check_inputs(pred: &[f64], outcome: &[bool]) -> Result<(), MetricError> {
    if pred.len() != outcome.len() {
        return Err(MetricError::LengthMismatch {
            what: "predictions against outcomes",
            left: pred.len(),
            right: outcome.len(),
        });
    }
    if pred.is_empty() {
        return Err(MetricError::Empty {
            what: "calibration",
        });
    }
    if let Some(&p) = pred.iter().find(|p| !(0.0..=1.0).contains(*p)) {
        return Err(MetricError::OutOfRange {
            what: "prediction",
            value: p,
            min: 0.0,
            max: 1.0,
        });
    }
    Ok(())
}

/// Reliability diagram and scores of `pred` against `outcome`, with `bins` bins.
pub fn calibration(
    pred: &[f64],
    outcome: &[bool],
    bins: usize,
    binning: Binning,
) -> Result<CalibrationReport, MetricError> {
    check_inputs(pred, outcome)?;
    if bins == 0 {
        return Err(MetricError::Parameter("calibration needs at least one bin"));
    }
    let edges: Vec<f64> = match binning {
        Binning::EqualWidth => (0..=bins).map(|i| i as f64 / bins as f64).collect(),
        Binning::EqualMass => {
            let mut sorted = pred.to_vec();
            sorted.sort_by(f64::total_cmp);
            (0..=bins)
                .map(|i| percentile_sorted(&sorted, i as f64 / bins as f64))
                .collect()
        }
    };
    let inner = &edges[1..edges.len() - 1];
    let mut sum_pred = vec![0.0; bins];
    let mut sum_true = vec![0.0; bins];
    let mut count = vec![0u64; bins];
    let eps = f64::EPSILON;
    let (mut brier, mut log_loss) = (0.0, 0.0);
    for (&p, &y) in pred.iter().zip(outcome) {
        // numpy.searchsorted(inner, p, side="left"): edges strictly below p.
        let b = inner.partition_point(|e| *e < p);
        sum_pred[b] += p;
        count[b] += 1;
        let y = f64::from(u8::from(y));
        sum_true[b] += y;
        brier += (p - y) * (p - y);
        let pc = p.clamp(eps, 1.0 - eps);
        log_loss -= y * pc.ln() + (1.0 - y) * (1.0 - pc).ln();
    }
    let n = pred.len() as f64;
    let mut out = Vec::new();
    let (mut ece, mut mce) = (0.0f64, 0.0f64);
    for b in 0..bins {
        if count[b] == 0 {
            continue;
        }
        let c = count[b] as f64;
        let (predicted, observed) = (sum_pred[b] / c, sum_true[b] / c);
        let gap = (observed - predicted).abs();
        ece += c / n * gap;
        mce = mce.max(gap);
        out.push(CalibrationBin {
            lower: edges[b],
            upper: edges[b + 1],
            count: count[b],
            predicted,
            observed,
        });
    }
    let fit = logistic_fit(pred, outcome);
    Ok(CalibrationReport {
        n: pred.len() as u64,
        bins: out,
        ece,
        mce,
        brier: brier / n,
        log_loss: log_loss / n,
        slope: fit.map(|f| f.1),
        intercept: fit.map(|f| f.0),
    })
}

/// Maximum-likelihood logistic regression of `outcome` on logit(`pred`) by Newton's method:
/// `(intercept, slope)`, or `None` when the likelihood has no finite maximum.
pub fn logistic_fit(pred: &[f64], outcome: &[bool]) -> Option<(f64, f64)> {
    let eps = f64::EPSILON;
    let x: Vec<f64> = pred
        .iter()
        .map(|p| {
            let p = p.clamp(eps, 1.0 - eps);
            (p / (1.0 - p)).ln()
        })
        .collect();
    let (mut a, mut b) = (0.0f64, 0.0f64);
    for _ in 0..100 {
        // Gradient and Hessian of the log-likelihood.
        let (mut ga, mut gb, mut haa, mut hab, mut hbb) = (0.0, 0.0, 0.0, 0.0, 0.0);
        for (&xi, &yi) in x.iter().zip(outcome) {
            let mu = 1.0 / (1.0 + (-(a + b * xi)).exp());
            let r = f64::from(u8::from(yi)) - mu;
            let w = mu * (1.0 - mu);
            ga += r;
            gb += r * xi;
            haa += w;
            hab += w * xi;
            hbb += w * xi * xi;
        }
        let det = haa * hbb - hab * hab;
        if !(det.is_finite() && det > 0.0) {
            return None;
        }
        let da = (hbb * ga - hab * gb) / det;
        let db = (haa * gb - hab * ga) / det;
        a += da;
        b += db;
        if !(a.is_finite() && b.is_finite()) || a.abs() > 1e6 || b.abs() > 1e6 {
            return None;
        }
        if da.abs() < 1e-13 * (1.0 + a.abs()) && db.abs() < 1e-13 * (1.0 + b.abs()) {
            return Some((a, b));
        }
    }
    None
}
