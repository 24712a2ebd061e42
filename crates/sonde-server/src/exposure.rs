//! `GET /v1/stability`, `GET /v1/diversity` and `GET /v1/fairness`: how slates change from
//! one decision to the next for the same user and surface, what they mix and how much of the
//! catalog they show, and whether provider groups and user segments are treated in line with
//! the outcomes they earn. Formulas in `docs/relevance.md`.

use std::collections::BTreeMap;

use hashbrown::{HashMap, HashSet};

use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::Response;
use serde::Serialize;
use serde_json::json;
use sonde_relevance::{
    GroupExposure, exposure_fairness, gini, intra_list_diversity, jaccard_at_k, novelty, rbo_ext,
};

use crate::frame::ItemFrame;
use crate::relevance::{RelevanceParams, analysis};
use crate::{ApiError, AppState};

/// Persistence of rank-biased overlap.
const RBO_P: f64 = 0.9;

fn attribute(p: &RelevanceParams, default: &'static str) -> Result<&'static str, ApiError> {
    match p.attribute.as_deref().unwrap_or(default) {
        "category" => Ok("category"),
        "provider" => Ok("provider"),
        other => Err(ApiError::bad_request(
            "invalid_parameter",
            format!("attribute={other:?}: use category or provider"),
        )),
    }
}

/// The attribute diversity is measured over (`category` unless asked otherwise).
pub(crate) fn diversity_attribute(p: &RelevanceParams) -> Result<&'static str, ApiError> {
    attribute(p, "category")
}

/// Stability of one group: consecutive decisions for the same user and surface.
#[derive(Debug, Clone, Default, Serialize)]
pub struct GroupStability {
    /// Group of the later decision of each pair.
    pub group: String,
    /// Consecutive pairs compared.
    pub pairs: u64,
    /// Mean extrapolated RBO (p = 0.9).
    pub rbo: f64,
    /// Mean Jaccard of the top k.
    pub jaccard: f64,
    /// Pairs across a change of model version.
    pub model_change_pairs: u64,
    /// Mean top-k churn (1 − Jaccard@k) across a model change.
    pub model_change_churn: f64,
}

/// Stability per group of the frame: pairs of consecutive decisions (by time, then request
/// id) of the same user and surface.
pub(crate) fn stability_of(frame: &ItemFrame, k: usize) -> Vec<GroupStability> {
    // Item ids of each decision in position order.
    let mut lists: Vec<Vec<u32>> = vec![Vec::new(); frame.decisions.len()];
    for (d, items) in frame.lists() {
        lists[d] = items.iter().map(|i| i.item).collect();
    }
    let mut order: Vec<usize> = (0..frame.decisions.len())
        .filter(|d| frame.decisions[*d].who.is_some())
        .collect();
    // Consecutive decisions of a user on a surface: ordered by ids (any order of users
    // gives the same pairs), then time, then request id.
    order.sort_unstable_by(|a, b| {
        let (da, db) = (&frame.decisions[*a], &frame.decisions[*b]);
        (da.who, da.surface, da.t)
            .cmp(&(db.who, db.surface, db.t))
            .then_with(|| {
                frame
                    .requests
                    .name(*a as u32)
                    .cmp(frame.requests.name(*b as u32))
            })
    });
    let mut groups = vec![GroupStability::default(); frame.groups.len()];
    for pair in order.windows(2) {
        let (pr, cur) = (&frame.decisions[pair[0]], &frame.decisions[pair[1]]);
        if pr.who != cur.who || pr.surface != cur.surface {
            continue;
        }
        let (a, b) = (&lists[pair[0]], &lists[pair[1]]);
        let g = &mut groups[cur.group as usize];
        g.pairs += 1;
        g.rbo += rbo_ext(a, b, RBO_P);
        let j = jaccard_at_k(a, b, k);
        g.jaccard += j;
        if pr.model != cur.model {
            g.model_change_pairs += 1;
            g.model_change_churn += 1.0 - j;
        }
    }
    groups
        .into_iter()
        .enumerate()
        .filter(|(_, g)| g.pairs > 0)
        .map(|(group, mut g)| {
            let n = g.pairs as f64;
            g.rbo /= n;
            g.jaccard /= n;
            g.model_change_churn /= g.model_change_pairs.max(1) as f64;
            g.group = frame.group_name(group).to_string();
            g
        })
        .collect()
}

/// Diversity and coverage of one group.
#[derive(Debug, Clone, Serialize)]
pub struct GroupDiversity {
    /// Group value.
    pub group: String,
    /// Decisions.
    pub decisions: u64,
    /// Mean intra-list diversity of the attribute.
    pub intra_list_diversity: f64,
    /// Distinct items shown.
    pub distinct_items: u64,
    /// Distinct items shown over distinct items shown in all groups of the window.
    pub catalog_coverage: f64,
    /// Gini coefficient of impressions across the items shown.
    pub exposure_gini: f64,
    /// Mean self-information of the impressions (bits).
    pub novelty: f64,
}

/// Diversity per group of the frame, of attribute `attr` (`category` or `provider`).
pub(crate) fn diversity_of(frame: &ItemFrame, attr: &str) -> Vec<GroupDiversity> {
    // A missing attribute counts as the empty string.
    let missing = frame.strings.get("").unwrap_or(u32::MAX);
    let mut ild: Vec<(u64, f64)> = vec![(0, 0.0); frame.groups.len()];
    let mut attrs: Vec<u32> = Vec::new();
    for (d, items) in frame.lists() {
        attrs.clear();
        attrs.extend(items.iter().map(|i| i.attribute(attr).unwrap_or(missing)));
        let e = &mut ild[frame.decisions[d].group as usize];
        e.0 += 1;
        e.1 += intra_list_diversity(&attrs);
    }
    // Impressions per item of each group; coverage against the items of all groups.
    let mut impressions: HashMap<(usize, u32), f64> = HashMap::new();
    let mut all_items: HashSet<u32> = HashSet::new();
    for i in &frame.items {
        *impressions.entry((frame.group_of(i), i.item)).or_default() += 1.0;
        all_items.insert(i.item);
    }
    let mut by_group: Vec<Vec<f64>> = vec![Vec::new(); frame.groups.len()];
    for ((group, _), n) in impressions {
        by_group[group].push(n);
    }
    let all_items = all_items.len() as u64;
    ild.into_iter()
        .zip(by_group)
        .enumerate()
        .filter(|(_, ((decisions, _), _))| *decisions > 0)
        .map(|(group, ((decisions, ild_sum), imp))| GroupDiversity {
            decisions,
            intra_list_diversity: ild_sum / decisions.max(1) as f64,
            distinct_items: imp.len() as u64,
            catalog_coverage: imp.len() as f64 / all_items.max(1) as f64,
            exposure_gini: gini(&imp),
            novelty: novelty(&imp),
            group: frame.group_name(group).to_string(),
        })
        .collect()
}

/// Outcome rate of one user segment against the reference segment.
#[derive(Debug, Clone, Serialize)]
pub struct SegmentRate {
    /// Segment value.
    pub segment: String,
    /// Decisions.
    pub decisions: u64,
    /// Share of decisions with any outcome.
    pub outcome_rate: f64,
    /// outcome_rate over the reference segment's (disparate impact).
    pub ratio_to_reference: Option<f64>,
    /// Whether the ratio lies in [0.8, 1.25].
    pub within_band: Option<bool>,
}

/// Fairness of one group.
#[derive(Debug, Clone, Serialize)]
pub struct GroupFairness {
    /// Group value.
    pub group: String,
    /// Exposure against outcomes per attribute value (provider by default).
    pub exposure: Vec<GroupExposure>,
    /// Share of attribute values within the band (of those with outcomes).
    pub share_within_band: f64,
}

/// Exposure fairness per group, and (reference segment, outcome rates per segment) when a
/// segment was asked for.
pub(crate) type Fairness = (Vec<GroupFairness>, Option<(String, Vec<SegmentRate>)>);

/// What fairness is asked for: the item attribute and, optionally, the user segment.
#[derive(Debug, Clone)]
pub(crate) struct FairnessOptions {
    attr: &'static str,
    segment: Option<&'static str>,
    reference: Option<String>,
}

impl FairnessOptions {
    /// The options of `p`, checked.
    pub(crate) fn of(p: &RelevanceParams) -> Result<Self, ApiError> {
        let segment = match p.segment.as_deref() {
            None => None,
            Some("device") => Some("device"),
            Some("region") => Some("region"),
            Some(other) => {
                return Err(ApiError::bad_request(
                    "invalid_parameter",
                    format!("segment={other:?}: use device or region"),
                ));
            }
        };
        Ok(Self {
            attr: attribute(p, "provider")?,
            segment,
            reference: p.reference_segment.clone(),
        })
    }
}

/// Exposure fairness per group of the frame, and outcome rates per user segment when asked.
pub(crate) fn fairness_of(frame: &ItemFrame, o: &FairnessOptions) -> Result<Fairness, ApiError> {
    // Per group and attribute value: position-discounted exposure, items with an outcome.
    let mut cells: HashMap<(usize, Option<u32>), (f64, f64)> = HashMap::new();
    for i in &frame.items {
        let c = cells
            .entry((frame.group_of(i), i.attribute(o.attr)))
            .or_default();
        c.0 += 1.0 / (1.0 + f64::from(i.position)).log2();
        c.1 += f64::from(u8::from(i.grade >= 1));
    }
    // By name: a missing attribute and one named `(none)` are one value, as in SQL.
    let mut by_name: BTreeMap<&str, BTreeMap<&str, (f64, f64)>> = BTreeMap::new();
    for ((group, a), (e, n)) in cells {
        let a = a.map_or("(none)", |a| frame.strings.name(a));
        let c = by_name
            .entry(frame.group_name(group))
            .or_default()
            .entry(a)
            .or_default();
        c.0 += e;
        c.1 += n;
    }
    let groups = by_name.into_iter().map(|(group, values)| {
        let rows: Vec<(String, f64, f64)> = values
            .into_iter()
            .map(|(a, (e, n))| (a.to_string(), e, n))
            .collect();
        (group, rows)
    });
    let fairness = groups
        .into_iter()
        .map(|(group, rows)| {
            let exposure = exposure_fairness(&rows);
            let judged: Vec<bool> = exposure.iter().filter_map(|g| g.within_band).collect();
            GroupFairness {
                group: group.to_string(),
                share_within_band: judged.iter().filter(|b| **b).count() as f64
                    / judged.len().max(1) as f64,
                exposure,
            }
        })
        .collect();
    let Some(segment) = o.segment else {
        return Ok((fairness, None));
    };
    // Per segment: decisions, and those with any outcome.
    let mut per: HashMap<u32, (u64, u64)> = HashMap::new();
    for (d, items) in frame.lists() {
        let dec = &frame.decisions[d];
        let seg = if segment == "device" {
            dec.device
        } else {
            dec.region
        };
        let e = per.entry(seg).or_default();
        e.0 += 1;
        e.1 += u64::from(items.iter().any(|i| i.grade >= 1));
    }
    let mut rates: Vec<(String, u64, f64)> = per
        .into_iter()
        .map(|(seg, (n, hit))| {
            (
                frame.strings.name(seg).to_string(),
                n,
                hit as f64 / n as f64,
            )
        })
        .collect();
    rates.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    // The reference is the one asked for, else the largest segment.
    let reference = match &o.reference {
        Some(name) => Some(
            rates
                .iter()
                .find(|r| &r.0 == name)
                .map(|r| (r.0.clone(), r.2))
                .ok_or_else(|| {
                    ApiError::bad_request(
                        "invalid_parameter",
                        format!("reference_segment={name:?} has no decisions in the window"),
                    )
                })?,
        ),
        None => rates.first().map(|r| (r.0.clone(), r.2)),
    };
    let segments = rates
        .into_iter()
        .map(|(segment, decisions, outcome_rate)| {
            let ratio = reference
                .as_ref()
                .filter(|r| r.1 > 0.0)
                .map(|r| outcome_rate / r.1);
            SegmentRate {
                segment,
                decisions,
                outcome_rate,
                ratio_to_reference: ratio,
                within_band: ratio.map(|x| (0.8..=1.25).contains(&x)),
            }
        })
        .collect();
    Ok((fairness, reference.map(|r| (r.0, segments))))
}

/// `GET /v1/stability`.
pub async fn get_stability(
    State(state): State<AppState>,
    Query(p): Query<RelevanceParams>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    analysis(state, &headers, p, |state, p| async move {
        let frame = ItemFrame::fetch(&state.store, &p, state.config.query_timeout).await?;
        let groups = stability_of(&frame, p.k());
        Ok(json!({
            "k": p.k(),
            "rbo_p": RBO_P,
            "groups": groups,
        }))
    })
    .await
}

/// `GET /v1/diversity`.
pub async fn get_diversity(
    State(state): State<AppState>,
    Query(p): Query<RelevanceParams>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    analysis(state, &headers, p, |state, p| async move {
        let attr = diversity_attribute(&p)?;
        let frame = ItemFrame::fetch(&state.store, &p, state.config.query_timeout).await?;
        let groups = diversity_of(&frame, attr);
        Ok(json!({
            "attribute": attr,
            "groups": groups,
        }))
    })
    .await
}

/// `GET /v1/fairness`.
pub async fn get_fairness(
    State(state): State<AppState>,
    Query(p): Query<RelevanceParams>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    analysis(state, &headers, p, |state, p| async move {
        let o = FairnessOptions::of(&p)?;
        let frame = ItemFrame::fetch(&state.store, &p, state.config.query_timeout).await?;
        let (groups, segments) = fairness_of(&frame, &o)?;
        Ok(json!({
            "attribute": o.attr,
            "band": [0.8, 1.25],
            "groups": groups,
            "segments": segments.as_ref().map(|(reference, s)| json!({
                "by": p.segment, "reference": reference, "rates": s})),
            "window_minutes": p.window(),
        }))
    })
    .await
}
