//! Drift of a distribution between a reference and a current window.
//!
//! - KS: the two-sample Kolmogorov–Smirnov statistic (scipy's `ks_2samp`) with the
//!   asymptotic Kolmogorov p-value at √(n·m/(n+m))·D (scipy's `kstwobign.sf`).
//! - Wasserstein-1 between the empirical distributions (scipy's `wasserstein_distance`),
//!   and normalized by the reference's standard deviation (floored at 0.001) as Evidently does.
//! - PSI and Jensen–Shannon over shares of equal-width bins spanning both samples (numpy's
//!   `histogram_bin_edges` of the union, 10 bins by default), as Evidently bins them. PSI
//!   replaces empty shares by 0.0001 and sums (ref − cur)·ln(ref/cur); Jensen–Shannon is
//!   scipy's `jensenshannon` (natural log, the square root of the divergence).
//!
//! Default test per column type (Evidently's defaults for more than 1,000 rows): numeric
//! columns drift when the normalized Wasserstein distance is at least 0.1 (KS p < 0.05 for
//! 1,000 rows or fewer); categorical columns when Jensen–Shannon is at least 0.1.

use serde::Serialize;

use crate::MetricError;

fn finite(what: &'static str, xs: &[f64]) -> Result<(), MetricError> {
    if xs.is_empty() {
        return Err(MetricError::Empty { what });
    }
    if let Some(&x) = xs.iter().find(|x| !x.is_finite()) {
        return Err(MetricError::OutOfRange {
            what,
            value: x,
            min: f64::MIN,
            max: f64::MAX,
        });
    }
    Ok(())
}

fn sorted(xs: &[f64]) -> Vec<f64> {
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    v
}

/// Two-sample KS statistic and its asymptotic p-value.
pub fn ks_2samp(reference: &[f64], current: &[f64]) -> Result<(f64, f64), MetricError> {
    finite("reference sample", reference)?;
    finite("current sample", current)?;
    Ok(ks_of_sorted(&sorted(reference), &sorted(current)))
}

/// KS statistic and p-value of two sorted samples.
fn ks_of_sorted(a: &[f64], b: &[f64]) -> (f64, f64) {
    let (n1, n2) = (a.len() as f64, b.len() as f64);
    let mut d = 0.0f64;
    // The empirical CDFs only change at sample values: walk both samples in order.
    let (mut i, mut j) = (0, 0);
    while i < a.len() || j < b.len() {
        let v = match (a.get(i), b.get(j)) {
            (Some(x), Some(y)) => x.min(*y),
            (Some(x), None) => *x,
            (None, Some(y)) => *y,
            (None, None) => break,
        };
        while i < a.len() && a[i] <= v {
            i += 1;
        }
        while j < b.len() && b[j] <= v {
            j += 1;
        }
        d = d.max((i as f64 / n1 - j as f64 / n2).abs());
    }
    let (m, n) = if n1 >= n2 { (n1, n2) } else { (n2, n1) };
    let en = m * n / (m + n);
    (d, kolmogorov_sf(en.sqrt() * d))
}

/// Survival function of the Kolmogorov distribution, P(K > x).
pub fn kolmogorov_sf(x: f64) -> f64 {
    if x <= 0.0 {
        return 1.0;
    }
    if x < 1.0 {
        // Jacobi-theta form, fast for small x: P(K ≤ x) = √(2π)/x Σ exp(−(2k−1)²π²/(8x²)).
        let f = -std::f64::consts::PI.powi(2) / (8.0 * x * x);
        let mut cdf = 0.0;
        for k in 1..=20 {
            let t = (2 * k - 1) as f64;
            let term = (f * t * t).exp();
            cdf += term;
            if term < 1e-20 {
                break;
            }
        }
        1.0 - (2.0 * std::f64::consts::PI).sqrt() / x * cdf
    } else {
        // 2 Σ (−1)^(k−1) exp(−2k²x²).
        let mut sf = 0.0;
        for k in 1..=100 {
            let kf = k as f64;
            let term = (-2.0 * kf * kf * x * x).exp();
            sf += if k % 2 == 1 { term } else { -term };
            if term < 1e-20 {
                break;
            }
        }
        (2.0 * sf).clamp(0.0, 1.0)
    }
}

/// Wasserstein-1 distance between two empirical distributions.
pub fn wasserstein(reference: &[f64], current: &[f64]) -> Result<f64, MetricError> {
    finite("reference sample", reference)?;
    finite("current sample", current)?;
    Ok(wasserstein_of_sorted(&sorted(reference), &sorted(current)))
}

/// Wasserstein-1 of two sorted samples: Σ |U(x) − V(x)|·Δx over the merged sample values,
/// U and V the empirical CDFs (scipy's `_cdf_distance` with p = 1). Both CDFs only grow
/// along the merged values, so one walk counts them (no search per value).
fn wasserstein_of_sorted(u: &[f64], v: &[f64]) -> f64 {
    let mut all: Vec<f64> = Vec::with_capacity(u.len() + v.len());
    let (mut i, mut j) = (0, 0);
    while i < u.len() || j < v.len() {
        let take_u = match (u.get(i), v.get(j)) {
            (Some(x), Some(y)) => x.total_cmp(y).is_le(),
            (Some(_), None) => true,
            _ => false,
        };
        if take_u {
            all.push(u[i]);
            i += 1;
        } else {
            all.push(v[j]);
            j += 1;
        }
    }
    let (nu, nv) = (u.len() as f64, v.len() as f64);
    let (mut cu, mut cv) = (0, 0);
    let mut total = 0.0;
    for w in all.windows(2) {
        while cu < u.len() && u[cu] <= w[0] {
            cu += 1;
        }
        while cv < v.len() && v[cv] <= w[0] {
            cv += 1;
        }
        total += (cu as f64 / nu - cv as f64 / nv).abs() * (w[1] - w[0]);
    }
    total
}

/// Wasserstein-1 over the reference's population standard deviation (at least 0.001).
pub fn wasserstein_normed(reference: &[f64], current: &[f64]) -> Result<f64, MetricError> {
    Ok(normed(reference, wasserstein(reference, current)?))
}

/// `w` over the reference's population standard deviation (at least 0.001).
fn normed(reference: &[f64], w: f64) -> f64 {
    let n = reference.len() as f64;
    let mean = reference.iter().sum::<f64>() / n;
    let var = reference
        .iter()
        .map(|x| (x - mean) * (x - mean))
        .sum::<f64>()
        / n;
    w / var.sqrt().max(0.001)
}

/// numpy's `histogram_bin_edges(data, bins)` for equal-width bins over [min, max].
fn bin_edges(min: f64, max: f64, bins: usize) -> Vec<f64> {
    let (lo, hi) = if min == max {
        (min - 0.5, max + 0.5)
    } else {
        (min, max)
    };
    // numpy.linspace: lo + i * step, with the last edge exactly hi.
    let step = (hi - lo) / bins as f64;
    let mut e: Vec<f64> = (0..=bins).map(|i| lo + i as f64 * step).collect();
    e[bins] = hi;
    e
}

/// Counts per bin as numpy's `histogram` assigns them (last bin closed).
fn histogram(xs: &[f64], edges: &[f64]) -> Vec<f64> {
    let bins = edges.len() - 1;
    let (first, last) = (edges[0], edges[bins]);
    let norm = bins as f64 / (last - first);
    let mut counts = vec![0.0; bins];
    for &x in xs {
        if x < first || x > last {
            continue;
        }
        let mut i = (((x - first) * norm) as usize).min(bins - 1);
        // numpy's corrections for rounding at the edges.
        if x < edges[i] {
            i -= 1;
        } else if i + 1 < bins && x >= edges[i + 1] {
            i += 1;
        }
        counts[i] += 1.0;
    }
    counts
}

/// Shares of `reference` and `current` in equal-width bins over both samples.
fn binned_shares(
    reference: &[f64],
    current: &[f64],
    bins: usize,
) -> Result<(Vec<f64>, Vec<f64>), MetricError> {
    finite("reference sample", reference)?;
    finite("current sample", current)?;
    if bins == 0 {
        return Err(MetricError::Parameter(
            "drift binning needs at least one bin",
        ));
    }
    let (mut min, mut max) = (f64::INFINITY, f64::NEG_INFINITY);
    for &x in reference.iter().chain(current) {
        min = min.min(x);
        max = max.max(x);
    }
    let edges = bin_edges(min, max, bins);
    let share = |xs: &[f64]| {
        let n = xs.len() as f64;
        histogram(xs, &edges)
            .into_iter()
            .map(|c| c / n)
            .collect::<Vec<_>>()
    };
    Ok((share(reference), share(current)))
}

/// Population stability index over `bins` equal-width bins.
pub fn psi(reference: &[f64], current: &[f64], bins: usize) -> Result<f64, MetricError> {
    let (r, c) = binned_shares(reference, current, bins)?;
    Ok(psi_of_shares(&r, &c))
}

/// PSI of two share vectors (categorical columns give shares per category).
pub fn psi_of_shares(reference: &[f64], current: &[f64]) -> f64 {
    let fill = |x: f64| if x == 0.0 { 0.0001 } else { x };
    reference
        .iter()
        .zip(current)
        .map(|(&r, &c)| {
            let (r, c) = (fill(r), fill(c));
            (r - c) * (r / c).ln()
        })
        .sum()
}

/// Jensen–Shannon distance of the binned samples (natural log).
pub fn jensen_shannon(reference: &[f64], current: &[f64], bins: usize) -> Result<f64, MetricError> {
    let (r, c) = binned_shares(reference, current, bins)?;
    Ok(jensen_shannon_of_shares(&r, &c))
}

/// scipy's `jensenshannon(p, q)`: both normalized to sum 1, natural log.
pub fn jensen_shannon_of_shares(p: &[f64], q: &[f64]) -> f64 {
    let (sp, sq): (f64, f64) = (p.iter().sum(), q.iter().sum());
    let rel_entr = |x: f64, y: f64| if x > 0.0 { x * (x / y).ln() } else { 0.0 };
    let mut js = 0.0;
    for (&a, &b) in p.iter().zip(q) {
        let (a, b) = (a / sp, b / sq);
        let m = (a + b) / 2.0;
        js += rel_entr(a, m) + rel_entr(b, m);
    }
    (js / 2.0).max(0.0).sqrt()
}

/// Which test decided drift.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DriftTest {
    /// Normalized Wasserstein ≥ 0.1.
    WassersteinNormed,
    /// KS p-value < 0.05 (small samples).
    Ks,
}

/// Every drift statistic of a numeric column, and the default test's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct NumericDrift {
    /// KS statistic.
    pub ks: f64,
    /// KS asymptotic p-value.
    pub ks_p_value: f64,
    /// Wasserstein-1 distance.
    pub wasserstein: f64,
    /// Wasserstein over the reference's standard deviation.
    pub wasserstein_normed: f64,
    /// PSI over 10 bins.
    pub psi: f64,
    /// Jensen–Shannon distance over 10 bins.
    pub jensen_shannon: f64,
    /// The test that decides.
    pub test: DriftTest,
    /// Whether the column drifted.
    pub drifted: bool,
}

/// Drift statistics of a numeric column with the default test (see the module docs).
pub fn numeric_drift(reference: &[f64], current: &[f64]) -> Result<NumericDrift, MetricError> {
    finite("reference sample", reference)?;
    finite("current sample", current)?;
    // Both statistics walk the sorted samples: sort once.
    let (a, b) = (sorted(reference), sorted(current));
    let (ks, ks_p_value) = ks_of_sorted(&a, &b);
    let wasserstein_d = wasserstein_of_sorted(&a, &b);
    let normed = normed(reference, wasserstein_d);
    let small = reference.len() <= 1000 || current.len() <= 1000;
    let (test, drifted) = if small {
        (DriftTest::Ks, ks_p_value < 0.05)
    } else {
        (DriftTest::WassersteinNormed, normed >= 0.1)
    };
    Ok(NumericDrift {
        ks,
        ks_p_value,
        wasserstein: wasserstein_d,
        wasserstein_normed: normed,
        psi: psi(reference, current, 10)?,
        jensen_shannon: jensen_shannon(reference, current, 10)?,
        test,
        drifted,
    })
}
