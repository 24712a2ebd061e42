//! The item frame: a window's shown items with their grades, read in one scan and shared by
//! the analyses of the relevance page (calibration, position bias, stability, diversity,
//! fairness). Each of them used to run its own join of items with outcomes; a page now
//! reads the window once and the analyses are pure computations over the frame. The API
//! endpoints go through the same frame, so page and API answer alike.

use sonde_store::arrow::array::{Array, ListArray, RecordBatch};
use sonde_store::{Store, item_values};

use crate::ApiError;
use crate::columns::{f64_array, f64s, i64s, list, text, u32_array, utf8};
use crate::relevance::RelevanceParams;

/// Positions beyond this are ignored by position bias, swap interventions included (slates
/// are rarely longer).
pub(crate) const MAX_POSITION: usize = 50;

/// Strings as dense ids: a frame holds each distinct string once, in one text arena, so
/// interning allocates nothing per string.
#[derive(Default)]
pub(crate) struct Interner {
    /// Ids, found by the hash of their string.
    table: hashbrown::HashTable<u32>,
    hasher: hashbrown::DefaultHashBuilder,
    /// All strings, one after another.
    text: String,
    /// Where string `id` ends in `text` (it starts where `id − 1` ends).
    ends: Vec<usize>,
}

impl std::fmt::Debug for Interner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Interner")
            .field("strings", &self.ends.len())
            .finish()
    }
}

impl Interner {
    fn hash(&self, s: &str) -> u64 {
        std::hash::BuildHasher::hash_one(&self.hasher, s)
    }

    /// The id of `s`, adding it when new.
    pub(crate) fn id(&mut self, s: &str) -> u32 {
        let hash = self.hash(s);
        let Self {
            table,
            hasher,
            text,
            ends,
        } = self;
        let name = |id: u32| slice(text, ends, id);
        if let Some(id) = table.find(hash, |id| name(*id) == s) {
            return *id;
        }
        let id = ends.len() as u32;
        text.push_str(s);
        ends.push(text.len());
        table.insert_unique(hash, id, |id| {
            std::hash::BuildHasher::hash_one(&*hasher, slice(text, ends, *id))
        });
        id
    }

    /// The id of `s`, if seen.
    pub(crate) fn get(&self, s: &str) -> Option<u32> {
        self.table
            .find(self.hash(s), |id| self.name(*id) == s)
            .copied()
    }

    /// The string of `id`.
    pub(crate) fn name(&self, id: u32) -> &str {
        slice(&self.text, &self.ends, id)
    }

    /// Distinct strings.
    pub(crate) fn len(&self) -> usize {
        self.ends.len()
    }
}

/// String `id` of an arena.
fn slice<'a>(text: &'a str, ends: &[usize], id: u32) -> &'a str {
    let id = id as usize;
    let start = id.checked_sub(1).and_then(|i| ends.get(i)).copied();
    match ends.get(id) {
        Some(end) => text.get(start.unwrap_or(0)..*end).unwrap_or(""),
        None => "",
    }
}

/// One decision of the window. String fields are ids in [`ItemFrame::strings`].
#[derive(Debug, Clone)]
pub(crate) struct FrameDecision {
    /// The group expression's value: an index into [`ItemFrame::groups`].
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

impl FrameItem {
    /// The item attribute `name`: `provider`, else `category`.
    pub(crate) fn attribute(&self, name: &str) -> Option<u32> {
        match name {
            "provider" => self.provider,
            _ => self.category,
        }
    }
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
    /// Group names (ids in `strings`) in name order: analyses index their sums by group.
    pub groups: Vec<u32>,
    /// Every other string.
    pub strings: Interner,
}

/// An outcome read for the frame, before it is matched with its shown item.
struct Outcome {
    request: Box<str>,
    item: Box<str>,
    /// Epoch ms.
    t: i64,
    grade: i64,
    click: bool,
    purchase: bool,
}

impl ItemFrame {
    /// Reads the window of `p` (its filters and grouping): its shown items, the outcomes that
    /// may follow them and the flags of its flagged decisions, in concurrent plain scans,
    /// then grades each item here as `RelevanceParams::graded_items_sql` does in SQL (the
    /// best outcome with the same request and item within the window after the decision).
    /// Matching in memory spares the database a hash join and an aggregation per read.
    pub(crate) async fn fetch(
        store: &Store,
        p: &RelevanceParams,
        timeout: std::time::Duration,
    ) -> Result<ItemFrame, ApiError> {
        let filter = p.where_clause()?;
        // Decisions with their item lists, expanded here: the `decision_items` view would
        // copy each decision column once per item first.
        let items_sql = format!(
            "SELECT request_id, {group} AS grp, CAST(event_time AS BIGINT) AS t, \
                    model_name || ':' || model_version AS model, \
                    coalesce(user_key, anonymous_key) AS who, surface, \
                    coalesce(device, 'unknown') AS device, coalesce(region, 'unknown') AS region, \
                    flags, item_positions, item_ids, item_scores, item_categories, item_providers \
             FROM decisions i WHERE {filter}",
            group = p.group_expr()?,
        );
        let outcome_window = p.time_bounds("event_time", p.window() + 1)?;
        // Only actions that grade or count as clicks: the rest leave an item at grade 0.
        let interactions_sql = format!(
            "SELECT request_id, item_id, CAST(event_time AS BIGINT) AS t, action, value \
             FROM interactions WHERE {outcome_window} AND request_id IS NOT NULL \
               AND action IN ('click', 'add_to_cart')"
        );
        let purchases_sql = format!(
            "SELECT request_id, unnest(items) AS item_id, CAST(event_time AS BIGINT) AS t \
             FROM conversions \
             WHERE name = 'purchase' AND request_id IS NOT NULL AND {outcome_window}"
        );
        let mut f = ItemFrame::default();
        let items = store.scan(&items_sql, timeout, |batch: &RecordBatch| f.add(batch));
        let gains = p.gains;
        let mut outcomes: Vec<Outcome> = Vec::new();
        let mut purchases: Vec<Outcome> = Vec::new();
        let interactions = store.scan(&interactions_sql, timeout, |batch: &RecordBatch| {
            let (request, item, t) = (utf8(batch, 0)?, utf8(batch, 1)?, i64s(batch, 2)?);
            let (action, value) = (utf8(batch, 3)?, f64s(batch, 4)?);
            for row in 0..batch.num_rows() {
                let value = value.is_valid(row).then(|| value.value(row));
                let (grade, click) = gains.of_interaction(action.value(row), value);
                outcomes.push(Outcome {
                    request: request.value(row).into(),
                    item: item.value(row).into(),
                    t: t.value(row),
                    grade,
                    click,
                    purchase: false,
                });
            }
            Ok(())
        });
        let bought = store.scan(&purchases_sql, timeout, |batch: &RecordBatch| {
            let (request, item, t) = (utf8(batch, 0)?, utf8(batch, 1)?, i64s(batch, 2)?);
            for row in (0..batch.num_rows()).filter(|r| item.is_valid(*r)) {
                purchases.push(Outcome {
                    request: request.value(row).into(),
                    item: item.value(row).into(),
                    t: t.value(row),
                    grade: gains.purchase,
                    click: false,
                    purchase: true,
                });
            }
            Ok(())
        });
        let (a, b, c) = tokio::join!(items, interactions, bought);
        a?;
        b?;
        c?;
        f.items
            .sort_unstable_by_key(|i| (i.decision, i.position, i.item));
        f.grade(outcomes.iter().chain(&purchases), p.window());
        f.index_groups();
        Ok(f)
    }

    /// Turns each decision's group (a string id) into its rank among the group names.
    fn index_groups(&mut self) {
        let mut names: Vec<u32> = self.decisions.iter().map(|d| d.group).collect();
        names.sort_unstable();
        names.dedup();
        names.sort_by(|a, b| self.strings.name(*a).cmp(self.strings.name(*b)));
        let mut rank = hashbrown::HashMap::with_capacity(names.len());
        for (i, id) in names.iter().enumerate() {
            rank.insert(*id, i as u32);
        }
        for d in &mut self.decisions {
            d.group = rank.get(&d.group).copied().unwrap_or(0);
        }
        self.groups = names;
    }

    /// Grades the items from `outcomes`: an outcome counts for the items of its request with
    /// its item id when it comes at most `window_minutes` after the decision (not before).
    fn grade<'a>(&mut self, outcomes: impl Iterator<Item = &'a Outcome>, window_minutes: u32) {
        let window_ms = i64::from(window_minutes) * 60_000;
        // Where each decision's items start (items are sorted by decision).
        let mut starts = vec![0usize; self.decisions.len() + 1];
        for i in &self.items {
            starts[i.decision as usize + 1] += 1;
        }
        for d in 0..self.decisions.len() {
            starts[d + 1] += starts[d];
        }
        for o in outcomes {
            let (Some(d), Some(item)) = (self.requests.get(&o.request), self.strings.get(&o.item))
            else {
                continue;
            };
            let d = d as usize;
            let t = self.decisions[d].t;
            if o.t < t || o.t > t + window_ms {
                continue;
            }
            for i in &mut self.items[starts[d]..starts[d + 1]] {
                if i.item == item {
                    i.grade = i.grade.max(o.grade);
                    i.clicked |= o.click;
                    i.purchased |= o.purchase;
                }
            }
        }
    }

    /// Adds a batch of decisions with their item lists (columns as in `fetch`'s query).
    fn add(&mut self, batch: &RecordBatch) -> Result<(), sonde_store::StoreError> {
        let request = utf8(batch, 0)?;
        let grp = utf8(batch, 1)?;
        let t = i64s(batch, 2)?;
        let model = utf8(batch, 3)?;
        let who = utf8(batch, 4)?;
        let surface = utf8(batch, 5)?;
        let device = utf8(batch, 6)?;
        let region = utf8(batch, 7)?;
        let flags = utf8(batch, 8)?;
        let positions = list(batch, 9)?;
        let ids = list(batch, 10)?;
        let scores = list(batch, 11)?;
        let categories = list(batch, 12)?;
        let providers = list(batch, 13)?;
        // A row's lists line up (the store checks so on write), so one set of offsets,
        // taken relative to its first, indexes all five lists' values.
        let offsets = positions.value_offsets();
        let base = offsets.first().copied().unwrap_or(0);
        let values = |l: &ListArray| {
            item_values(l, offsets).ok_or_else(|| {
                sonde_store::StoreError::Query(
                    "internal: a decision's item lists differ in length".into(),
                )
            })
        };
        let position = u32_array(&values(&positions)?)?;
        let item = text(&values(&ids)?)?;
        let score = f64_array(&values(&scores)?)?;
        let category = text(&values(&categories)?)?;
        let provider = text(&values(&providers)?)?;
        for row in 0..batch.num_rows() {
            let known = self.requests.len();
            let decision = self.requests.id(request.value(row));
            let s = &mut self.strings;
            if decision as usize == known {
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
            if flags.is_valid(row)
                && let Some(k) = swap_of(flags.value(row))
            {
                self.decisions[decision as usize].swap = Some(k);
            }
            if positions.is_null(row) {
                continue;
            }
            for i in (offsets[row] - base) as usize..(offsets[row + 1] - base) as usize {
                self.items.push(FrameItem {
                    decision,
                    position: position.value(i),
                    item: s.id(item.value(i)),
                    category: category.is_valid(i).then(|| s.id(category.value(i))),
                    provider: provider.is_valid(i).then(|| s.id(provider.value(i))),
                    score: if score.is_valid(i) {
                        score.value(i)
                    } else {
                        f64::NAN
                    },
                    grade: 0,
                    clicked: false,
                    purchased: false,
                });
            }
        }
        Ok(())
    }

    /// The items of each decision, in position order, with the decision's index.
    pub(crate) fn lists(&self) -> impl Iterator<Item = (usize, &[FrameItem])> {
        self.items
            .chunk_by(|a, b| a.decision == b.decision)
            .map(|l| (l[0].decision as usize, l))
    }

    /// The name of group `g`.
    pub(crate) fn group_name(&self, g: usize) -> &str {
        self.groups.get(g).map_or("", |id| self.strings.name(*id))
    }

    /// The group index of an item's decision.
    pub(crate) fn group_of(&self, item: &FrameItem) -> usize {
        self.decisions
            .get(item.decision as usize)
            .map_or(0, |d| d.group as usize)
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

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use tower::ServiceExt;

    use super::*;

    const MIN: i64 = 60_000;

    /// Request, item, position.
    type Key = (String, String, u32);
    /// Group, grade, clicked, purchased.
    type Graded = (String, i64, bool, bool);

    /// The frame grades items in memory as `graded_items_sql` does in SQL: same items, same
    /// grade, click and purchase, whatever the window's edges cut.
    #[tokio::test]
    async fn grades_in_memory_as_the_sql_join_does() {
        let dir = tempfile::tempdir().expect("tmp");
        let keys = crate::ensure_project(dir.path())
            .expect("init")
            .expect("new keys");
        let state = crate::open(crate::ServerConfig::new(dir.path())).expect("open");
        let router = crate::router(state.clone());
        let start = (chrono::Utc::now().timestamp_millis() - 3 * 60 * MIN).div_euclid(MIN) * MIN;
        let mut sim = sonde_sim::Simulator::new(sonde_sim::SimConfig {
            seed: 5,
            start_ms: start,
            decisions_per_sec: 0.5,
            ..Default::default()
        });
        let mut events = Vec::new();
        for _ in 0..3000 {
            sim.step(&mut events);
        }
        for chunk in events.chunks(5000) {
            let mut body = Vec::new();
            for e in chunk {
                e.write_json(&mut body);
                body.push(b'\n');
            }
            let req = Request::post("/v1/events?backfill=true")
                .header("authorization", format!("Bearer {}", keys.write_key))
                .header("content-type", "application/x-ndjson")
                .body(Body::from(body))
                .expect("request");
            let resp = router.clone().oneshot(req).await.expect("response");
            assert_eq!(resp.status(), StatusCode::OK);
        }
        let timeout = std::time::Duration::from_secs(60);
        let mut checked_outcomes = 0;
        for (from, to, window) in [
            (start, start + 100 * MIN, None),
            (start + 37 * MIN, start + 61 * MIN, Some(5)),
        ] {
            let p = RelevanceParams {
                from: Some(from.to_string()),
                to: Some(to.to_string()),
                group_by: Some("variant,device".into()),
                experiment: Some("ranker_ab".into()),
                window_minutes: window,
                ..Default::default()
            };
            let frame = ItemFrame::fetch(state.store(), &p, timeout)
                .await
                .expect("frame");
            let mut sql: BTreeMap<Key, Graded> = BTreeMap::new();
            let q = format!(
                "SELECT request_id, item_id, position, grp, grade, clicked, purchased FROM ({})",
                p.graded_items_sql().expect("sql")
            );
            state
                .store()
                .scan(&q, timeout, |b: &RecordBatch| {
                    let (r, i, pos, g) = (
                        utf8(b, 0)?,
                        utf8(b, 1)?,
                        u32_array(b.column(2))?,
                        utf8(b, 3)?,
                    );
                    let (grade, c, pu) = (i64s(b, 4)?, i64s(b, 5)?, i64s(b, 6)?);
                    for row in 0..b.num_rows() {
                        sql.insert(
                            (r.value(row).into(), i.value(row).into(), pos.value(row)),
                            (
                                g.value(row).into(),
                                grade.value(row),
                                c.value(row) > 0,
                                pu.value(row) > 0,
                            ),
                        );
                    }
                    Ok(())
                })
                .await
                .expect("scan");
            let mut mem = BTreeMap::new();
            for i in &frame.items {
                let d = i.decision as usize;
                mem.insert(
                    (
                        frame.requests.name(d as u32).to_string(),
                        frame.strings.name(i.item).to_string(),
                        i.position,
                    ),
                    (
                        frame
                            .group_name(frame.decisions[d].group as usize)
                            .to_string(),
                        i.grade,
                        i.clicked,
                        i.purchased,
                    ),
                );
            }
            assert!(sql.len() > 1000, "{} items", sql.len());
            assert_eq!(mem.len(), sql.len());
            for (k, v) in &sql {
                assert_eq!(mem.get(k), Some(v), "{k:?}");
            }
            checked_outcomes += sql.values().filter(|v| v.1 > 0).count();
            assert!(sql.values().any(|v| v.3), "some purchase graded");
            assert!(
                sql.values().any(|v| v.1 >= 2 && !v.3),
                "some long click or cart"
            );
        }
        assert!(checked_outcomes > 200, "{checked_outcomes} graded items");
    }
}
