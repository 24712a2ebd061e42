//! Position bias: how likely an item is to be looked at, by position.
//!
//! The position-based click model: P(click | position k, item) = θ_k · γ(item), examination
//! times relevance. θ and γ are fitted by expectation–maximization over click counts (Wang
//! et al., "Position Bias Estimation for Unbiased Learning to Rank in Personal Search",
//! WSDM 2018), with γ a function of a relevance key the caller chooses; Sonde keys it by
//! (model version, score bin), the regression EM of that paper with a piecewise-constant
//! regressor on the logged score. Given its own score an item's relevance does not depend
//! on where a stochastic logging policy placed it, which makes θ identifiable. θ is known
//! up to a common factor: it is reported relative to position 1.

use serde::Serialize;

use crate::MetricError;

/// Impressions and clicks of one (position, relevance key) cell.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ClickCell {
    /// 1-based position.
    pub position: usize,
    /// Relevance key index (0-based, dense).
    pub key: usize,
    /// Impressions.
    pub impressions: f64,
    /// Clicks.
    pub clicks: f64,
}

/// The fitted position-based model.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PositionBias {
    /// Examination by position (index 0 = position 1), relative to position 1.
    pub examination: Vec<f64>,
    /// The fitted θ before normalization.
    pub theta: Vec<f64>,
    /// Relevance per key.
    pub gamma: Vec<f64>,
    /// EM iterations run.
    pub iterations: usize,
    /// Log-likelihood of the clicks at the fit.
    pub log_likelihood: f64,
}

/// Fit θ and γ by EM over `cells`, for positions 1..=`positions` and `keys` keys.
pub fn position_bias_em(
    cells: &[ClickCell],
    positions: usize,
    keys: usize,
    max_iterations: usize,
) -> Result<PositionBias, MetricError> {
    if positions == 0 || keys == 0 {
        return Err(MetricError::Parameter(
            "position bias needs positions and keys",
        ));
    }
    for c in cells {
        if c.position == 0 || c.position > positions || c.key >= keys {
            return Err(MetricError::Parameter(
                "a cell lies outside positions or keys",
            ));
        }
        if !(c.clicks >= 0.0 && c.clicks <= c.impressions) {
            return Err(MetricError::OutOfRange {
                what: "clicks of a cell",
                value: c.clicks,
                min: 0.0,
                max: c.impressions,
            });
        }
    }
    let mut shown_at = vec![0.0; positions];
    let mut shown_key = vec![0.0; keys];
    for c in cells {
        shown_at[c.position - 1] += c.impressions;
        shown_key[c.key] += c.impressions;
    }
    if shown_at[0] == 0.0 {
        return Err(MetricError::Empty {
            what: "impressions at position 1",
        });
    }
    let mut theta = vec![0.5f64; positions];
    let mut gamma = vec![0.5f64; keys];
    let mut iterations = 0;
    for _ in 0..max_iterations {
        iterations += 1;
        let mut t_num = vec![0.0; positions];
        let mut g_num = vec![0.0; keys];
        for c in cells {
            let (t, g): (f64, f64) = (theta[c.position - 1], gamma[c.key]);
            let no_click = c.impressions - c.clicks;
            let p_none = (1.0 - t * g).max(f64::MIN_POSITIVE);
            // Posterior of examined (resp. relevant) given no click.
            t_num[c.position - 1] += c.clicks + no_click * t * (1.0 - g) / p_none;
            g_num[c.key] += c.clicks + no_click * (1.0 - t) * g / p_none;
        }
        let mut change = 0.0f64;
        for (k, t) in theta.iter_mut().enumerate() {
            if shown_at[k] > 0.0 {
                let new = t_num[k] / shown_at[k];
                change = change.max((new - *t).abs());
                *t = new;
            }
        }
        for (j, g) in gamma.iter_mut().enumerate() {
            if shown_key[j] > 0.0 {
                let new = g_num[j] / shown_key[j];
                change = change.max((new - *g).abs());
                *g = new;
            }
        }
        if change < 1e-10 {
            break;
        }
    }
    let mut log_likelihood = 0.0;
    for c in cells {
        let p = (theta[c.position - 1] * gamma[c.key]).clamp(1e-300, 1.0 - 1e-16);
        log_likelihood += c.clicks * p.ln() + (c.impressions - c.clicks) * (1.0 - p).ln();
    }
    let first = theta[0];
    Ok(PositionBias {
        examination: theta.iter().map(|t| t / first).collect(),
        theta,
        gamma,
        iterations,
        log_likelihood,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Noise-free counts of a known model: EM recovers the examination curve.
    #[test]
    fn recovers_a_known_examination_curve() {
        let theta: Vec<f64> = (1..=10).map(|k| 0.9 / (k as f64).powf(0.7)).collect();
        let gamma = [0.05, 0.1, 0.2, 0.35, 0.5, 0.7];
        let mut cells = Vec::new();
        for (k, t) in theta.iter().enumerate() {
            for (j, g) in gamma.iter().enumerate() {
                // Unbalanced exposure: relevant keys more often on top.
                let n = 1000.0 * (1.0 + j as f64) / (1.0 + k as f64);
                cells.push(ClickCell {
                    position: k + 1,
                    key: j,
                    impressions: n,
                    clicks: n * t * g,
                });
            }
        }
        let fit = position_bias_em(&cells, 10, gamma.len(), 20_000).expect("fit");
        for (k, e) in fit.examination.iter().enumerate() {
            let want = theta[k] / theta[0];
            assert!((e - want).abs() < 1e-4, "position {}: {e} vs {want}", k + 1);
        }
        // Naive CTR by position is biased by the unbalanced exposure; EM is not.
        assert!(fit.examination[9] < 0.25);
    }

    #[test]
    fn rejects_bad_cells() {
        let c = ClickCell {
            position: 3,
            key: 0,
            impressions: 5.0,
            clicks: 6.0,
        };
        assert!(position_bias_em(&[c], 10, 1, 10).is_err());
        assert!(position_bias_em(&[], 0, 1, 10).is_err());
    }
}
