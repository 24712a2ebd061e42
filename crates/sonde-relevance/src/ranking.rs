//! Ranking metrics of one served list, with trec_eval's conventions.
//!
//! - An item is relevant when its grade is at least 1 (trec_eval's default relevance level).
//! - Ties in score are broken by item id, descending, as trec_eval sorts; served slates are
//!   ranked by position and have no ties.
//! - Precision@k divides by k even when the list is shorter (trec_eval's `P_k`).
//! - A list without any relevant item scores 0 on every metric; summaries report coverage
//!   (the share of lists with one) so the zeros can be told apart from bad rankings.
//! - nDCG discounts by log2(rank + 1); the ideal ranking is the list's own grades sorted
//!   (an outcome can only follow an item that was shown, so every judged item is in the list).
//!   Linear gain is the grade; exponential gain is 2^grade − 1.

use std::cmp::Ordering;

use serde::Serialize;

/// One item of a ranked list.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RankedItem<'a> {
    /// Item id (breaks score ties).
    pub item_id: &'a str,
    /// Ranking score; higher ranks first. For a served slate, minus the position.
    pub score: f64,
    /// Graded relevance from the outcomes (0 = none).
    pub grade: f64,
    /// Whether the item was clicked (for CTR@k).
    pub clicked: bool,
}

/// Sort `items` as trec_eval ranks a run: score descending, then item id descending.
pub fn trec_order(items: &mut [RankedItem<'_>]) {
    items.sort_by(|a, b| {
        b.score
            .partial_cmp(&a.score)
            .unwrap_or(Ordering::Equal)
            .then_with(|| b.item_id.cmp(a.item_id))
    });
}

/// Gain of a grade in nDCG.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gain {
    /// The grade itself (trec_eval's `ndcg`).
    Linear,
    /// 2^grade − 1 (Burges et al.).
    Exponential,
}

impl Gain {
    fn of(self, grade: f64) -> f64 {
        match self {
            Gain::Linear => grade,
            Gain::Exponential => grade.exp2() - 1.0,
        }
    }
}

/// Metrics of one list at one cutoff k, plus the cutoff-free ones.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ListMetrics {
    /// Relevant items in the top k, over k.
    pub precision: f64,
    /// 1 if any of the top k is relevant.
    pub hit: f64,
    /// Clicked items in the top k, over the items shown in the top k.
    pub ctr: f64,
    /// Average precision truncated at k (trec_eval `map_cut_k`).
    pub ap_at_k: f64,
    /// nDCG@k, linear gain.
    pub ndcg: f64,
    /// nDCG@k, exponential gain.
    pub ndcg_exp: f64,
    /// Reciprocal rank of the first relevant item, whole list.
    pub rr: f64,
    /// Average precision, whole list.
    pub ap: f64,
    /// Whether the list has any relevant item.
    pub any_relevant: bool,
}

fn discount(rank: usize) -> f64 {
    // rank is 1-based.
    1.0 / ((rank + 1) as f64).log2()
}

fn dcg(grades: impl Iterator<Item = f64>, k: usize, gain: Gain) -> f64 {
    grades
        .take(k)
        .enumerate()
        .filter(|(_, g)| *g > 0.0)
        .map(|(i, g)| gain.of(g) * discount(i + 1))
        .sum()
}

/// Metrics at cutoff `k` of a list already in rank order (see [`trec_order`]).
pub fn list_metrics(ranked: &[RankedItem<'_>], k: usize) -> ListMetrics {
    let relevant = |it: &RankedItem<'_>| it.grade >= 1.0;
    let num_rel = ranked.iter().filter(|it| relevant(it)).count();
    let top = &ranked[..k.min(ranked.len())];

    let mut hits = 0usize;
    let mut sum_prec = 0.0;
    let mut sum_prec_k = 0.0;
    let mut rr = 0.0;
    for (i, it) in ranked.iter().enumerate() {
        if relevant(it) {
            hits += 1;
            let p = hits as f64 / (i + 1) as f64;
            sum_prec += p;
            if i < k {
                sum_prec_k += p;
            }
            if rr == 0.0 {
                rr = 1.0 / (i + 1) as f64;
            }
        }
    }
    let rel_in_top = top.iter().filter(|it| relevant(it)).count();
    let clicked = top.iter().filter(|it| it.clicked).count();

    let mut ideal: Vec<f64> = ranked.iter().map(|it| it.grade).collect();
    ideal.sort_by(|a, b| b.partial_cmp(a).unwrap_or(Ordering::Equal));
    let ndcg = |gain: Gain| {
        let idcg = dcg(ideal.iter().copied(), k, gain);
        if idcg > 0.0 {
            dcg(ranked.iter().map(|it| it.grade), k, gain) / idcg
        } else {
            0.0
        }
    };
    let per_rel = |s: f64| if num_rel > 0 { s / num_rel as f64 } else { 0.0 };
    ListMetrics {
        precision: rel_in_top as f64 / k.max(1) as f64,
        hit: if rel_in_top > 0 { 1.0 } else { 0.0 },
        ctr: if top.is_empty() {
            0.0
        } else {
            clicked as f64 / top.len() as f64
        },
        ap_at_k: per_rel(sum_prec_k),
        ndcg: ndcg(Gain::Linear),
        ndcg_exp: ndcg(Gain::Exponential),
        rr,
        ap: per_rel(sum_prec),
        any_relevant: num_rel > 0,
    }
}

/// Means of [`ListMetrics`] over many lists at one cutoff.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct RankingSummary {
    /// Lists.
    pub lists: u64,
    /// Share of lists with any relevant item.
    pub coverage: f64,
    /// Mean precision@k.
    pub precision: f64,
    /// Mean hit rate@k.
    pub hit_rate: f64,
    /// Mean CTR@k.
    pub ctr: f64,
    /// Mean reciprocal rank.
    pub mrr: f64,
    /// Mean average precision (whole list).
    pub map: f64,
    /// Mean average precision at k.
    pub map_at_k: f64,
    /// Mean nDCG@k, linear gain.
    pub ndcg: f64,
    /// Mean nDCG@k, exponential gain.
    pub ndcg_exp: f64,
}

impl RankingSummary {
    /// Add one list.
    pub fn add(&mut self, m: &ListMetrics) {
        // Running sums; `finish` divides.
        self.lists += 1;
        self.coverage += f64::from(u8::from(m.any_relevant));
        self.precision += m.precision;
        self.hit_rate += m.hit;
        self.ctr += m.ctr;
        self.mrr += m.rr;
        self.map += m.ap;
        self.map_at_k += m.ap_at_k;
        self.ndcg += m.ndcg;
        self.ndcg_exp += m.ndcg_exp;
    }

    /// Merge another partial summary (before `finish`).
    pub fn merge(&mut self, o: &RankingSummary) {
        self.lists += o.lists;
        self.coverage += o.coverage;
        self.precision += o.precision;
        self.hit_rate += o.hit_rate;
        self.ctr += o.ctr;
        self.mrr += o.mrr;
        self.map += o.map;
        self.map_at_k += o.map_at_k;
        self.ndcg += o.ndcg;
        self.ndcg_exp += o.ndcg_exp;
    }

    /// Turn the sums into means.
    pub fn finish(mut self) -> RankingSummary {
        let n = self.lists.max(1) as f64;
        for v in [
            &mut self.coverage,
            &mut self.precision,
            &mut self.hit_rate,
            &mut self.ctr,
            &mut self.mrr,
            &mut self.map,
            &mut self.map_at_k,
            &mut self.ndcg,
            &mut self.ndcg_exp,
        ] {
            *v /= n;
        }
        self
    }
}
