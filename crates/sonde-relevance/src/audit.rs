//! Feature audit: how strongly each logged feature separates decisions with an outcome from
//! those without, per time bucket, so a feature whose association shifts stands out.

/// Area under the ROC curve of `scores` for the positive `labels`: the probability that a
/// random positive scores above a random negative, ties counting one half (Mann–Whitney U
/// with average ranks, as scikit-learn's `roc_auc_score`). `None` without both classes.
pub fn auc(scores: &[f64], labels: &[bool]) -> Option<f64> {
    if scores.len() != labels.len() {
        return None;
    }
    let pos = labels.iter().filter(|l| **l).count();
    let neg = labels.len() - pos;
    if pos == 0 || neg == 0 {
        return None;
    }
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    // Sum of the positives' ranks, tied values sharing their average rank.
    let mut rank_sum = 0.0;
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j + 1 < order.len() && scores[order[j + 1]] == scores[order[i]] {
            j += 1;
        }
        let avg_rank = (i + j) as f64 / 2.0 + 1.0;
        rank_sum += avg_rank * order[i..=j].iter().filter(|&&k| labels[k]).count() as f64;
        i = j + 1;
    }
    let (p, n) = (pos as f64, neg as f64);
    Some((rank_sum - p * (p + 1.0) / 2.0) / (p * n))
}

/// Sample quantile with numpy's default linear interpolation; `None` for no values.
pub fn quantile(values: &[f64], q: f64) -> Option<f64> {
    quantiles(values, &[q]).map(|v| v[0])
}

/// Several quantiles of `values` (one sort); `None` for no values.
pub fn quantiles(values: &[f64], qs: &[f64]) -> Option<Vec<f64>> {
    if values.is_empty() {
        return None;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    Some(
        qs.iter()
            .map(|q| crate::calibration::percentile_sorted(&v, q.clamp(0.0, 1.0)))
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auc_of_known_orders() {
        assert_eq!(
            auc(&[1.0, 2.0, 3.0, 4.0], &[false, false, true, true]),
            Some(1.0)
        );
        assert_eq!(
            auc(&[1.0, 2.0, 3.0, 4.0], &[true, true, false, false]),
            Some(0.0)
        );
        // All tied: one half.
        assert_eq!(auc(&[1.0, 1.0, 1.0], &[true, false, false]), Some(0.5));
        assert_eq!(auc(&[1.0, 2.0], &[true, true]), None);
    }

    #[test]
    fn quantiles_interpolate() {
        assert_eq!(quantile(&[4.0, 1.0, 3.0, 2.0], 0.5), Some(2.5));
        assert_eq!(quantile(&[7.0], 0.9), Some(7.0));
        assert_eq!(quantile(&[], 0.5), None);
    }
}
