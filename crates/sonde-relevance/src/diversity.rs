//! Diversity, coverage and exposure: what a slate mixes, how much of the catalog is shown,
//! how unequally exposure is spread, and whether each provider group gets exposure in line
//! with the outcomes it earns.

use serde::Serialize;

/// Intra-list diversity over a categorical attribute: the share of item pairs in the slate
/// whose attribute differs (the mean pairwise distance with distance 0 for equal values, 1
/// otherwise). 0 for slates of fewer than two items.
pub fn intra_list_diversity<T: PartialEq>(attributes: &[T]) -> f64 {
    let n = attributes.len();
    if n < 2 {
        return 0.0;
    }
    let mut differ = 0usize;
    for i in 0..n {
        for j in i + 1..n {
            differ += usize::from(attributes[i] != attributes[j]);
        }
    }
    differ as f64 / (n * (n - 1) / 2) as f64
}

/// Gini coefficient of non-negative values (exposure per item):
/// Σᵢ (2i − n − 1)·xᵢ / (n·Σx) over x sorted ascending, i = 1..n. 0 when all are equal (or
/// all zero), approaching 1 when one item takes everything.
pub fn gini(values: &[f64]) -> f64 {
    let n = values.len();
    let total: f64 = values.iter().sum();
    if n == 0 || total <= 0.0 {
        return 0.0;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let weighted: f64 = v
        .iter()
        .enumerate()
        .map(|(i, x)| (2.0 * (i + 1) as f64 - n as f64 - 1.0) * x)
        .sum();
    weighted / (n as f64 * total)
}

/// Mean self-information, −log₂ of the share of impressions each shown item gets, over the
/// impressions: how unfamiliar what is shown is (Zhou et al. 2010). `impressions` holds the
/// impression count of every item shown.
pub fn novelty(impressions: &[f64]) -> f64 {
    let total: f64 = impressions.iter().sum();
    if total <= 0.0 {
        return 0.0;
    }
    impressions
        .iter()
        .filter(|n| **n > 0.0)
        .map(|n| n / total * -(n / total).log2())
        .sum()
}

/// Position-discounted exposure of a slot: 1 / log₂(1 + position).
pub fn exposure_weight(position: usize) -> f64 {
    1.0 / ((1 + position) as f64).log2()
}

/// One provider group's exposure against its merit.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GroupExposure {
    /// Group (provider).
    pub group: String,
    /// Its share of all position-discounted exposure.
    pub exposure_share: f64,
    /// Its share of all outcomes (the target exposure share).
    pub outcome_share: f64,
    /// exposure_share / outcome_share (None when it earned no outcome).
    pub disparity: Option<f64>,
    /// Whether the ratio lies in the fair band [0.8, 1.25].
    pub within_band: Option<bool>,
}

/// Exposure shares against outcome shares, per group: `(group, exposure, outcomes)`.
pub fn exposure_fairness(groups: &[(String, f64, f64)]) -> Vec<GroupExposure> {
    let exposure: f64 = groups.iter().map(|g| g.1).sum();
    let outcomes: f64 = groups.iter().map(|g| g.2).sum();
    groups
        .iter()
        .map(|(group, e, o)| {
            let exposure_share = if exposure > 0.0 { e / exposure } else { 0.0 };
            let outcome_share = if outcomes > 0.0 { o / outcomes } else { 0.0 };
            let disparity = (outcome_share > 0.0).then(|| exposure_share / outcome_share);
            GroupExposure {
                group: group.clone(),
                exposure_share,
                outcome_share,
                disparity,
                within_band: disparity.map(|d| (0.8..=1.25).contains(&d)),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ild_counts_differing_pairs() {
        assert_eq!(intra_list_diversity(&["a", "a", "a"]), 0.0);
        assert_eq!(intra_list_diversity(&["a", "b", "c"]), 1.0);
        // Pairs: (a,a) same, (a,b) ×2 differ: 2 of 3.
        assert!((intra_list_diversity(&["a", "a", "b"]) - 2.0 / 3.0).abs() < 1e-15);
        assert_eq!(intra_list_diversity(&["a"]), 0.0);
    }

    #[test]
    fn gini_of_known_distributions() {
        assert_eq!(gini(&[5.0, 5.0, 5.0, 5.0]), 0.0);
        // One of n takes all: (n − 1) / n.
        assert!((gini(&[0.0, 0.0, 0.0, 8.0]) - 0.75).abs() < 1e-15);
        // [1, 2, 3]: (−2·1 + 0·2 + 2·3) / (3·6) = 4/18.
        assert!((gini(&[3.0, 1.0, 2.0]) - 4.0 / 18.0).abs() < 1e-15);
    }

    #[test]
    fn novelty_is_the_entropy_of_impression_shares() {
        assert!((novelty(&[1.0, 1.0, 1.0, 1.0]) - 2.0).abs() < 1e-15);
        assert_eq!(novelty(&[7.0]), 0.0);
    }

    #[test]
    fn exposure_in_the_band_only_when_proportional() {
        let e1 = exposure_weight(1);
        let e2 = exposure_weight(2);
        assert_eq!(e1, 1.0);
        assert!((e2 - 1.0 / 3f64.log2()).abs() < 1e-15);
        let r = exposure_fairness(&[
            ("big".into(), 90.0, 50.0),
            ("small".into(), 10.0, 50.0),
            ("none".into(), 0.0, 0.0),
        ]);
        assert!((r[0].disparity.unwrap_or(0.0) - 1.8).abs() < 1e-12);
        assert_eq!(r[0].within_band, Some(false));
        assert!((r[1].disparity.unwrap_or(0.0) - 0.2).abs() < 1e-12);
        assert_eq!(r[2].disparity, None);
    }
}
