//! `GET /v1/position-bias`: CTR by position and the examination probability of each
//! position: from swap interventions where decisions flag them (`flags: {"swap": k}`),
//! otherwise by EM of the position-based model with relevance keyed by (model version,
//! score bin); see `sonde_relevance::position_bias_em` and `docs/relevance.md`.

use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::Response;
use serde::Serialize;
use serde_json::json;
use sonde_relevance::{ClickCell, RankedItem, list_metrics, position_bias_em};

use crate::frame::{ItemFrame, MAX_POSITION};
use crate::relevance::{RelevanceParams, analysis};
use crate::{ApiError, AppState};

/// One position of one group.
#[derive(Debug, Clone, Serialize)]
pub struct PositionRow {
    /// 1-based position.
    pub position: usize,
    /// Items shown there.
    pub impressions: u64,
    /// Of which clicked.
    pub clicks: u64,
    /// clicks / impressions.
    pub ctr: f64,
    /// Examination probability relative to position 1: from swap interventions where the
    /// decisions flag them, else from EM.
    pub examination: Option<f64>,
    /// Which estimate `examination` is: `swap` or `em`.
    pub source: &'static str,
    /// The EM estimate.
    pub examination_em: Option<f64>,
    /// The swap-intervention estimate.
    pub examination_swap: Option<f64>,
    /// Decisions whose flags swapped position 1 with this one.
    pub swap_decisions: u64,
}

/// Swap-intervention counts of one group (Joachims et al. 2017): decisions flagged
/// `{"swap": k}` showed the item ranked 1 at position k (k = 1: order kept).
#[derive(Debug, Default, Clone)]
struct SwapCounts {
    /// Per k (index k − 1): decisions, and clicks at position k.
    at: Vec<(u64, u64)>,
}

impl SwapCounts {
    /// θ_k / θ_1 = CTR of the top-ranked item shown at k / CTR of it shown at 1.
    fn estimate(&self, k: usize) -> Option<f64> {
        let (n1, c1) = *self.at.first()?;
        let (nk, ck) = *self.at.get(k - 1)?;
        (n1 > 0 && c1 > 0 && nk > 0).then(|| (ck as f64 / nk as f64) / (c1 as f64 / n1 as f64))
    }
}

/// Position bias of one group.
#[derive(Debug, Clone, Serialize)]
pub struct GroupPositionBias {
    /// Group value.
    pub group: String,
    /// Per position.
    pub positions: Vec<PositionRow>,
    /// EM iterations (None when the fit failed, e.g. no impressions at position 1).
    pub em_iterations: Option<usize>,
    /// Relevance keys used: (model, score bin) pairs.
    pub relevance_keys: usize,
    /// Clicks weighted by 1 / examination of their position, per impression: the CTR had
    /// every item been looked at like position 1.
    pub ipw_ctr: Option<f64>,
    /// Mean NDCG@k with each grade divided by its position's examination.
    pub ipw_ndcg: Option<f64>,
}

/// Propensity-weighted CTR and NDCG@k of `items` under `examination` (relative, by
/// position). Sorts `items` by decision and position.
fn propensity_weighted(
    items: &mut [Shown],
    examination: &[f64],
    k: usize,
) -> (Option<f64>, Option<f64>) {
    let weight = |pos: u32| {
        examination
            .get(pos as usize - 1)
            .copied()
            .filter(|e| *e > 0.0)
            .map(|e| 1.0 / e)
    };
    let (mut clicks, mut shown) = (0.0, 0usize);
    for s in items.iter().filter(|s| s.position >= 1) {
        if let Some(w) = weight(s.position) {
            shown += 1;
            if s.clicked {
                clicks += w;
            }
        }
    }
    items.sort_unstable_by_key(|s| (s.decision, s.position));
    let (mut sum, mut lists) = (0.0, 0usize);
    let mut ranked: Vec<RankedItem<'static>> = Vec::new();
    for list in items.chunk_by(|a, b| a.decision == b.decision) {
        ranked.clear();
        ranked.extend(list.iter().filter(|s| s.position >= 1).map(|s| RankedItem {
            item_id: "",
            score: -f64::from(s.position),
            grade: s.grade * weight(s.position).unwrap_or(0.0),
            clicked: s.clicked,
        }));
        sum += list_metrics(&ranked, k).ndcg;
        lists += 1;
    }
    (
        (shown > 0).then(|| clicks / shown as f64),
        (lists > 0).then(|| sum / lists as f64),
    )
}

/// One shown item, for the fit.
struct Shown {
    decision: u32,
    model: u32,
    position: u32,
    score: f64,
    clicked: bool,
    grade: f64,
}

/// Equal-mass bin of each item's score among the scores of its model (the rank of the
/// first equal score, times `bins`, over the model's scored items); items without a score
/// get their own key, `bins`. One sort per model instead of a binary search per item.
fn score_bins(items: &[Shown], models: usize, bins: usize) -> Vec<usize> {
    let mut bin = vec![bins; items.len()];
    let mut by_model: Vec<Vec<(f64, usize)>> = vec![Vec::new(); models];
    for (at, s) in items.iter().enumerate().filter(|(_, s)| !s.score.is_nan()) {
        by_model[s.model as usize].push((s.score, at));
    }
    for v in &mut by_model {
        v.sort_unstable_by(|a, b| a.0.total_cmp(&b.0));
        let n = v.len();
        let mut rank = 0;
        for j in 0..n {
            if j > 0 && v[j - 1].0 < v[j].0 {
                rank = j;
            }
            bin[v[j].1] = (rank * bins / n).min(bins - 1);
        }
    }
    bin
}

/// What a position-bias fit is asked for.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PositionOptions {
    /// Score bins per model keying relevance.
    bins: usize,
    /// Cutoff of the propensity-weighted NDCG.
    k: usize,
}

impl PositionOptions {
    /// The options of `p`, checked.
    pub(crate) fn of(p: &RelevanceParams) -> Result<Self, ApiError> {
        let bins = p.score_bins.unwrap_or(20);
        if !(1..=1000).contains(&bins) {
            return Err(ApiError::bad_request(
                "invalid_parameter",
                "score_bins must be between 1 and 1000",
            ));
        }
        Ok(Self { bins, k: p.k() })
    }
}

/// Swap-intervention counts per group of the frame.
fn swap_counts(frame: &ItemFrame) -> Vec<SwapCounts> {
    let mut out = vec![SwapCounts::default(); frame.groups.len()];
    for i in &frame.items {
        let d = i.decision as usize;
        let Some(k) = frame.decisions[d].swap else {
            continue;
        };
        if i.position as usize != k {
            continue;
        }
        let s = &mut out[frame.group_of(i)];
        if s.at.len() < k {
            s.at.resize(k, (0, 0));
        }
        s.at[k - 1].0 += 1;
        s.at[k - 1].1 += u64::from(i.clicked);
    }
    out
}

/// Position bias per group of the frame.
pub(crate) fn position_bias_of(frame: &ItemFrame, o: PositionOptions) -> Vec<GroupPositionBias> {
    let PositionOptions { bins, k } = o;
    let mut groups: Vec<Vec<Shown>> = (0..frame.groups.len()).map(|_| Vec::new()).collect();
    // Dense model indices: they index the per-model score lists.
    let mut models: hashbrown::HashMap<u32, u32> = hashbrown::HashMap::new();
    for i in &frame.items {
        let d = &frame.decisions[i.decision as usize];
        let next = models.len() as u32;
        let model = *models.entry(d.model).or_insert(next);
        groups[d.group as usize].push(Shown {
            decision: i.decision,
            grade: i.grade as f64,
            model,
            position: i.position,
            score: i.score,
            clicked: i.clicked,
        });
    }
    let swaps = swap_counts(frame);
    let models = models.len();
    let mut out = Vec::new();
    for (g, mut items) in groups.into_iter().enumerate() {
        if items.is_empty() {
            continue;
        }
        let bin = score_bins(&items, models, bins);
        let keys_per_model = bins + 1;
        let positions = items
            .iter()
            .map(|s| s.position as usize)
            .max()
            .unwrap_or(0)
            .min(MAX_POSITION);
        // Per (position, key): impressions, clicks.
        let keys = models * keys_per_model;
        let mut cells = vec![(0.0f64, 0.0f64); positions * keys];
        let mut by_position = vec![(0u64, 0u64); positions];
        for (s, bin) in items.iter().zip(&bin) {
            let pos = s.position as usize;
            if pos == 0 || pos > positions {
                continue;
            }
            let key = s.model as usize * keys_per_model + bin;
            let c = &mut cells[(pos - 1) * keys + key];
            c.0 += 1.0;
            c.1 += f64::from(u8::from(s.clicked));
            by_position[pos - 1].0 += 1;
            by_position[pos - 1].1 += u64::from(s.clicked);
        }
        // The cells shown, in (position, key) order, with dense key indices for the fit in
        // order of first appearance.
        let mut dense: Vec<Option<usize>> = vec![None; keys];
        let mut used = 0;
        let mut shown: Vec<ClickCell> = Vec::new();
        for (at, (impressions, clicks)) in cells.into_iter().enumerate() {
            if impressions == 0.0 {
                continue;
            }
            let (position, key) = (at / keys + 1, at % keys);
            let key = *dense[key].get_or_insert_with(|| {
                used += 1;
                used - 1
            });
            shown.push(ClickCell {
                position,
                key,
                impressions,
                clicks,
            });
        }
        let fit = position_bias_em(&shown, positions.max(1), used.max(1), 5000).ok();
        let swaps = swaps.get(g).filter(|s| !s.at.is_empty());
        let rows: Vec<PositionRow> = by_position
            .iter()
            .enumerate()
            .map(|(i, (n, c))| {
                let em = fit.as_ref().map(|f| f.examination[i]);
                let swap = swaps.and_then(|s| s.estimate(i + 1));
                PositionRow {
                    position: i + 1,
                    impressions: *n,
                    clicks: *c,
                    ctr: *c as f64 / (*n).max(1) as f64,
                    examination: swap.or(em),
                    source: if swap.is_some() { "swap" } else { "em" },
                    examination_em: em,
                    examination_swap: swap,
                    swap_decisions: swaps.and_then(|s| s.at.get(i)).map_or(0, |a| a.0),
                }
            })
            .collect();
        let chosen: Option<Vec<f64>> = rows.iter().map(|r| r.examination).collect();
        let (ipw_ctr, ipw_ndcg) = match &chosen {
            Some(e) => propensity_weighted(&mut items, e, k),
            None => (None, None),
        };
        out.push(GroupPositionBias {
            ipw_ctr,
            ipw_ndcg,
            positions: rows,
            em_iterations: fit.as_ref().map(|f| f.iterations),
            relevance_keys: used,
            group: frame.group_name(g).to_string(),
        });
    }
    out
}

/// `GET /v1/position-bias`.
pub async fn get_position_bias(
    State(state): State<AppState>,
    Query(p): Query<RelevanceParams>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    analysis(state, &headers, p, |state, p| async move {
        let o = PositionOptions::of(&p)?;
        let frame = ItemFrame::fetch(&state.store, &p, state.config.query_timeout).await?;
        let groups = position_bias_of(&frame, o);
        Ok(json!({
            "outcome": "click",
            "method": "swap interventions where decisions flag them (flags.swap = k), else EM of the position-based model with relevance keyed by (model version, score bin)",
            "score_bins": p.score_bins.unwrap_or(20),
            "window_minutes": p.window(),
            "groups": groups,
        }))
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each item's bin is the rank of the first equal score of its model (the count of
    /// smaller scores) times bins over the model's scored items; no score, key `bins`.
    #[test]
    fn score_bins_rank_ties_together_per_model() {
        let scores = [0.5, 0.1, 0.5, f64::NAN, 0.9, 0.3, 0.5, 0.7, 0.2, 0.3];
        let items: Vec<Shown> = scores
            .iter()
            .enumerate()
            .map(|(i, s)| Shown {
                decision: 0,
                model: (i % 2) as u32,
                position: 1,
                score: *s,
                clicked: false,
                grade: 0.0,
            })
            .collect();
        let bins = 4;
        let got = score_bins(&items, 2, bins);
        for (s, b) in items.iter().zip(&got) {
            if s.score.is_nan() {
                assert_eq!(*b, bins);
                continue;
            }
            let same: Vec<f64> = items
                .iter()
                .filter(|o| o.model == s.model && !o.score.is_nan())
                .map(|o| o.score)
                .collect();
            let smaller = same.iter().filter(|o| **o < s.score).count();
            assert_eq!(
                *b,
                (smaller * bins / same.len()).min(bins - 1),
                "{}",
                s.score
            );
        }
        // Model 0 holds 0.5, 0.5, 0.9, 0.5, 0.2: the three 0.5s share rank 1 → bin 0.
        assert_eq!(got[0], 0);
        assert_eq!(got[2], 0);
        assert_eq!(got[4], 3);
    }
}
