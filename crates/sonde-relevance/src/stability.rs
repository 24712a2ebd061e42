//! Stability of what a user is shown: how much consecutive slates for the same user and
//! surface overlap, top-weighted (rank-biased overlap) and flat (Jaccard@k).

use std::collections::HashSet;
use std::hash::Hash;

/// Extrapolated rank-biased overlap of two rankings without duplicates (Webber, Moffat and
/// Zobel 2010, Eq. 32, which handles lists of different lengths), as the `rbo` package's
/// `rbo_ext` computes it. 1 for identical lists, 0 for disjoint ones; 1 when both are empty.
pub fn rbo_ext<T: Eq + Hash>(a: &[T], b: &[T], p: f64) -> f64 {
    if a.is_empty() && b.is_empty() {
        return 1.0;
    }
    if a.is_empty() || b.is_empty() {
        return 0.0;
    }
    let (short, long) = if a.len() > b.len() { (b, a) } else { (a, b) };
    let (s, l) = (short.len(), long.len());
    let mut seen_s: HashSet<&T> = HashSet::from([&short[0]]);
    let mut seen_l: HashSet<&T> = HashSet::from([&long[0]]);
    let mut x = vec![0.0f64; l];
    x[0] = if short[0] == long[0] { 1.0 } else { 0.0 };
    let mut rbo = (1.0 - p) * x[0];
    let mut disjoint = 0.0;
    let mut ext = x[0] * p;
    let mut pd = 1.0; // p^d
    for d in 1..l {
        pd *= p;
        if d < s {
            seen_s.insert(&short[d]);
            seen_l.insert(&long[d]);
            let incr = if short[d] == long[d] {
                1.0
            } else {
                f64::from(u8::from(seen_l.contains(&short[d])))
                    + f64::from(u8::from(seen_s.contains(&long[d])))
            };
            x[d] = x[d - 1] + incr;
            let agreement = 2.0 * x[d] / (seen_s.len() + seen_l.len()) as f64;
            rbo += (1.0 - p) * pd * agreement;
            ext = agreement * pd * p;
        } else {
            seen_l.insert(&long[d]);
            x[d] = x[d - 1] + f64::from(u8::from(seen_s.contains(&long[d])));
            let agreement = x[d] / (d + 1) as f64;
            rbo += (1.0 - p) * pd * agreement;
            let xs = x[s - 1];
            disjoint += (1.0 - p) * pd * (xs * (d + 1 - s) as f64 / (d + 1) as f64 / s as f64);
            ext = ((x[d] - xs) / (d + 1) as f64 + xs / s as f64) * pd * p;
        }
    }
    (rbo + disjoint + ext).clamp(0.0, 1.0)
}

/// |top-k of a ∩ top-k of b| / |top-k of a ∪ top-k of b|; 1 when both are empty.
pub fn jaccard_at_k<T: Eq + Hash>(a: &[T], b: &[T], k: usize) -> f64 {
    let sa: HashSet<&T> = a.iter().take(k).collect();
    let sb: HashSet<&T> = b.iter().take(k).collect();
    let union = sa.union(&sb).count();
    if union == 0 {
        return 1.0;
    }
    sa.intersection(&sb).count() as f64 / union as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jaccard_counts_the_top_k_only() {
        let a = ["x", "y", "z", "w"];
        let b = ["y", "x", "q", "z"];
        assert_eq!(jaccard_at_k(&a, &b, 2), 1.0);
        assert_eq!(jaccard_at_k(&a, &b, 3), 2.0 / 4.0);
        assert_eq!(jaccard_at_k::<&str>(&[], &[], 3), 1.0);
    }

    #[test]
    fn rbo_bounds() {
        let a = ["a", "b", "c"];
        assert!((rbo_ext(&a, &a, 0.9) - 1.0).abs() < 1e-12);
        assert_eq!(rbo_ext(&a, &["x", "y", "z"], 0.9), 0.0);
        assert_eq!(rbo_ext::<&str>(&[], &[], 0.9), 1.0);
        assert_eq!(rbo_ext(&a, &[], 0.9), 0.0);
    }
}
