//! The item frame: a window's shown items with their grades, read in one scan and shared by
//! the analyses of the relevance page (calibration, position bias, stability, diversity,
//! fairness). Each of them used to run its own join of items with outcomes; a page now
//! reads the window once and the analyses are pure computations over the frame. The API
//! endpoints go through the same frame, so page and API answer alike.

use std::collections::HashMap;

use sonde_store::Store;
use sonde_store::arrow::array::{Array, RecordBatch};

use crate::ApiError;
use crate::columns::{f64s, i64s, u32s, utf8};
use crate::relevance::RelevanceParams;

/// Positions beyond this are ignored by position bias, swap interventions included (slates
/// are rarely longer).
pub(crate) const MAX_POSITION: usize = 50;

/// Strings as dense ids: a frame holds each distinct string once.
#[derive(Debug, Default)]
pub(crate) struct Interner {
    ids: HashMap<Box<str>, u32>,
    names: Vec<Box<str>>,
}

impl Interner {
    /// The id of `s`, adding it when new.
    pub(crate) fn id(&mut self, s: &str) -> u32 {
        if let Some(id) = self.ids.get(s) {
            return *id;
        }
        let id = self.names.len() as u32;
        self.ids.insert(s.into(), id);
        self.names.push(s.into());
        id
    }

    /// The id of `s`, if seen.
    pub(crate) fn get(&self, s: &str) -> Option<u32> {
        self.ids.get(s).copied()
    }

    /// The string of `id`.
    pub(crate) fn name(&self, id: u32) -> &str {
        self.names.get(id as usize).map_or("", |s| s)
    }

    /// Distinct strings.
    pub(crate) fn len(&self) -> usize {
        self.names.len()
    }
}

/// One decision of the window. String fields are ids in [`ItemFrame::strings`].
#[derive(Debug, Clone)]
pub(crate) struct FrameDecision {
    /// The group expression's value.
    pub group: u32,
    /// `coalesce(user_key, anonymous_key)`.
    pub who: Option<u32>,
    /// Surface.
    pub surface: u32,
    /// `model_name:model_version`.
    pub model: u32,
    /// Device segment (`unknown` when absent).
    pub device: u32,
    /// Region segment (`unknown` when absent).
    pub region: u32,
    /// Decision time, epoch ms.
    pub t: i64,
    /// Swap intervention (`flags.swap = k`), if flagged.
    pub swap: Option<usize>,
}

/// One shown item. String fields are ids in [`ItemFrame::strings`].
#[derive(Debug, Clone)]
pub(crate) struct FrameItem {
    /// Index of its decision in [`ItemFrame::decisions`].
    pub decision: u32,
    /// 1-based position.
    pub position: u32,
    /// Item id.
    pub item: u32,
    /// Category attribute.
    pub category: Option<u32>,
    /// Provider attribute.
    pub provider: Option<u32>,
    /// Predicted score (NaN when the decision logged none).
    pub score: f64,
    /// Best outcome within the window (0 none).
    pub grade: i64,
    /// Clicked within the window.
    pub clicked: bool,
    /// Purchased within the window.
    pub purchased: bool,
}

/// A window's decisions and shown items, items sorted by decision and position.
#[derive(Debug, Default)]
pub(crate) struct ItemFrame {
    /// Decisions, indexed like `requests`.
    pub decisions: Vec<FrameDecision>,
    /// Request ids: a decision's index is its request id's.
    pub requests: Interner,
    /// Items, sorted by (decision, position).
    pub items: Vec<FrameItem>,
    /// Every other string.
    pub strings: Interner,
}

impl ItemFrame {
    /// Reads the window of `p` (its filters and grouping): the graded items and, for swap
    /// interventions, the flags of the window's flagged decisions, in two concurrent scans.
    pub(crate) async fn fetch(
        store: &Store,
        p: &RelevanceParams,
        timeout: std::time::Duration,
    ) -> Result<ItemFrame, ApiError> {
        let items_sql = format!(
            "SELECT request_id, grp, position, item_id, t, score, model, category, provider, \
                    grade, clicked, purchased, who, surface, \
                    coalesce(device, 'unknown'), coalesce(region, 'unknown') \
             FROM ({})",
            p.graded_items_sql()?
        );
        let flags_sql = format!(
            "SELECT request_id, flags FROM decisions i WHERE {} AND flags IS NOT NULL",
            p.where_clause()?
        );
        let mut f = ItemFrame::default();
        let items = store.scan(&items_sql, timeout, |batch: &RecordBatch| {
            f.add(batch)?;
            Ok(())
        });
        let mut swaps: Vec<(String, usize)> = Vec::new();
        let flags = store.scan(&flags_sql, timeout, |batch: &RecordBatch| {
            let request = utf8(batch, 0)?;
            let flags = utf8(batch, 1)?;
            for row in 0..batch.num_rows() {
                if let Some(k) = swap_of(flags.value(row)) {
                    swaps.push((request.value(row).to_string(), k));
                }
            }
            Ok(())
        });
        let (a, b) = tokio::join!(items, flags);
        a?;
        b?;
        for (request, k) in swaps {
            if let Some(d) = f.requests.get(&request) {
                f.decisions[d as usize].swap = Some(k);
            }
        }
        f.items
            .sort_unstable_by_key(|i| (i.decision, i.position, i.item));
        Ok(f)
    }

    fn add(&mut self, batch: &RecordBatch) -> Result<(), sonde_store::StoreError> {
        let request = utf8(batch, 0)?;
        let grp = utf8(batch, 1)?;
        let position = u32s(batch, 2)?;
        let item = utf8(batch, 3)?;
        let t = i64s(batch, 4)?;
        let score = f64s(batch, 5)?;
        let model = utf8(batch, 6)?;
        let category = utf8(batch, 7)?;
        let provider = utf8(batch, 8)?;
        let grade = i64s(batch, 9)?;
        let clicked = i64s(batch, 10)?;
        let purchased = i64s(batch, 11)?;
        let who = utf8(batch, 12)?;
        let surface = utf8(batch, 13)?;
        let device = utf8(batch, 14)?;
        let region = utf8(batch, 15)?;
        for row in 0..batch.num_rows() {
            let known = self.requests.len();
            let decision = self.requests.id(request.value(row));
            if decision as usize == known {
                // A decision's fields are the same on each of its items: read them once.
                let s = &mut self.strings;
                self.decisions.push(FrameDecision {
                    group: s.id(grp.value(row)),
                    who: who.is_valid(row).then(|| s.id(who.value(row))),
                    surface: s.id(surface.value(row)),
                    model: s.id(model.value(row)),
                    device: s.id(device.value(row)),
                    region: s.id(region.value(row)),
                    t: t.value(row),
                    swap: None,
                });
            }
            let s = &mut self.strings;
            self.items.push(FrameItem {
                decision,
                position: position.value(row),
                item: s.id(item.value(row)),
                category: category.is_valid(row).then(|| s.id(category.value(row))),
                provider: provider.is_valid(row).then(|| s.id(provider.value(row))),
                score: if score.is_valid(row) {
                    score.value(row)
                } else {
                    f64::NAN
                },
                grade: grade.value(row),
                clicked: clicked.value(row) > 0,
                purchased: purchased.value(row) > 0,
            });
        }
        Ok(())
    }

    /// The items of each decision, in position order, with the decision's index.
    pub(crate) fn lists(&self) -> impl Iterator<Item = (usize, &[FrameItem])> {
        self.items
            .chunk_by(|a, b| a.decision == b.decision)
            .map(|l| (l[0].decision as usize, l))
    }

    /// The group name of a decision.
    pub(crate) fn group_of(&self, decision: usize) -> &str {
        self.decisions
            .get(decision)
            .map_or("", |d| self.strings.name(d.group))
    }
}

/// The swap position of a decision's flags text, if it has one.
pub(crate) fn swap_of(flags: &str) -> Option<usize> {
    let v: serde_json::Value = serde_json::from_str(flags).ok()?;
    let k = match &v["swap"] {
        serde_json::Value::Number(n) => n.as_u64()?,
        serde_json::Value::String(s) => s.parse().ok()?,
        _ => return None,
    };
    (1..=MAX_POSITION as u64).contains(&k).then_some(k as usize)
}
