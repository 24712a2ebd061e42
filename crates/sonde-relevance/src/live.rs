//! Live ranking metrics: decisions joined with their outcomes as events arrive, and summed
//! per minute once their outcome window has closed, so the ranking table and its charts read
//! sums instead of joining a week of rows per request.
//!
//! The join is the one `GET /v1/relevance` runs in SQL: an outcome counts for a shown item
//! when it has the decision's `request_id` and the item's id and its event time is within
//! `[decision, decision + window]`; an item's grade is the best such outcome. A decision stays
//! *open* (its items and grades in memory) until its window has passed by `grace` — in wall
//! time or, for history loaded faster than real time, in the decision times seen (after a
//! 10 s settle for the outcomes sent after it) — and
//! then *closes*: its list metrics at `k` go into the sums of its minute and key. Outcomes
//! that arrive before their decision wait (up to the same bounds). An outcome of a closed
//! decision is not counted here; [`LiveRelevance::late_outcomes`] says how many may have
//! been missed, and SQL remains the reference.
//!
//! Minutes stay at minute resolution for `minute_retention_ms`, then merge into hours, kept
//! for `hour_retention_ms`. A query answers only when every closed bucket it needs lies
//! wholly inside its window and within what is kept ([`LiveRelevance::query`] returns `None`
//! otherwise, and the caller runs SQL).

use std::collections::BTreeMap;

use hashbrown::HashMap;

use crate::ranking::{RankedItem, RankingSummary, list_metrics};

const MINUTE: i64 = 60_000;
const HOUR: i64 = 3_600_000;
/// Key id of decisions past the key cap.
const OVERFLOW: u32 = u32::MAX;

/// Settings of the live join.
#[derive(Debug, Clone)]
pub struct LiveConfig {
    /// Cutoff of the @k metrics summed.
    pub k: usize,
    /// Outcome window after a decision.
    pub window_ms: i64,
    /// How long past its window a decision stays open for outcomes still on their way.
    pub grace_ms: i64,
    /// History arriving faster than real time: how long a decision whose window the later
    /// decisions have passed still waits for the outcomes sent after it.
    pub settle_ms: i64,
    /// How long minutes keep minute resolution.
    pub minute_retention_ms: i64,
    /// How long hours are kept.
    pub hour_retention_ms: i64,
    /// Most distinct keys; decisions past it are summed under one overflow key, and queries
    /// over buckets holding it go to SQL.
    pub max_keys: usize,
    /// Most open decisions; past it the oldest close early (counted).
    pub max_open: usize,
}

impl Default for LiveConfig {
    fn default() -> Self {
        LiveConfig {
            k: 10,
            window_ms: 30 * MINUTE,
            grace_ms: 5 * MINUTE,
            settle_ms: 10_000,
            minute_retention_ms: 50 * HOUR,
            hour_retention_ms: 8 * 24 * HOUR,
            max_keys: 20_000,
            max_open: 1_000_000,
        }
    }
}

/// What a list's metrics are summed by: the decision's dimensions.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ListKey {
    /// Placement.
    pub surface: String,
    /// Model name.
    pub model_name: String,
    /// Model version.
    pub model_version: String,
    /// Device segment.
    pub device: Option<String>,
    /// Region segment.
    pub region: Option<String>,
    /// Experiments and variants, sorted by experiment.
    pub experiments: Vec<(String, String)>,
}

/// A [`ListKey`] borrowed from a decision, to look its id up without copying six strings
/// per decision. It hashes as the owned key does (same fields, in the same order, of types
/// that hash alike), which the map's look-up by [`hashbrown::Equivalent`] relies on.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ListKeyRef<'a> {
    /// Placement.
    pub surface: &'a str,
    /// Model name.
    pub model_name: &'a str,
    /// Model version.
    pub model_version: &'a str,
    /// Device segment.
    pub device: Option<&'a str>,
    /// Region segment.
    pub region: Option<&'a str>,
    /// Experiments and variants, sorted by experiment.
    pub experiments: Vec<(&'a str, &'a str)>,
}

impl ListKeyRef<'_> {
    fn to_key(&self) -> ListKey {
        ListKey {
            surface: self.surface.into(),
            model_name: self.model_name.into(),
            model_version: self.model_version.into(),
            device: self.device.map(Into::into),
            region: self.region.map(Into::into),
            experiments: self
                .experiments
                .iter()
                .map(|&(x, v)| (x.into(), v.into()))
                .collect(),
        }
    }
}

impl hashbrown::Equivalent<ListKey> for ListKeyRef<'_> {
    fn equivalent(&self, k: &ListKey) -> bool {
        self.surface == k.surface
            && self.model_name == k.model_name
            && self.model_version == k.model_version
            && self.device == k.device.as_deref()
            && self.region == k.region.as_deref()
            && self.experiments.len() == k.experiments.len()
            && self
                .experiments
                .iter()
                .zip(&k.experiments)
                .all(|(&(x, v), (kx, kv))| x == kx && v == kv)
    }
}

impl ListKey {
    /// This key, borrowed.
    pub fn borrowed(&self) -> ListKeyRef<'_> {
        ListKeyRef {
            surface: &self.surface,
            model_name: &self.model_name,
            model_version: &self.model_version,
            device: self.device.as_deref(),
            region: self.region.as_deref(),
            experiments: self
                .experiments
                .iter()
                .map(|(x, v)| (x.as_str(), v.as_str()))
                .collect(),
        }
    }

    /// The variant of `experiment`, if the decision was in it.
    pub fn variant(&self, experiment: &str) -> Option<&str> {
        self.experiments
            .iter()
            .find(|(x, _)| x == experiment)
            .map(|(_, v)| v.as_str())
    }
}

/// Sums of list metrics over many decisions.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ListSums {
    /// Metric sums ([`RankingSummary::finish`] turns them into means).
    pub summary: RankingSummary,
    /// Decisions with a shown item purchased within the window.
    pub converted: u64,
}

impl ListSums {
    /// Add another partial sum.
    pub fn merge(&mut self, o: &ListSums) {
        self.summary.merge(&o.summary);
        self.converted += o.converted;
    }

    /// Add one list's metrics at `k` (items in any order; ranked by position).
    pub fn add_list(&mut self, items: &[LiveItem], k: usize) {
        let mut ranked: Vec<&LiveItem> = items.iter().collect();
        ranked.sort_unstable_by_key(|i| i.position);
        let ranked: Vec<RankedItem<'_>> = ranked
            .iter()
            .map(|i| RankedItem {
                item_id: "",
                score: -f64::from(i.position),
                grade: i.grade.clamp(0, 511) as f64,
                clicked: i.clicked,
            })
            .collect();
        self.summary.add(&list_metrics(&ranked, k));
        self.converted += u64::from(items.iter().any(|i| i.purchased));
    }
}

/// The key an item is matched by in the live join: a 64-bit hash of its id. Outcomes are
/// matched within one decision's slate (tens of items), where a collision is out of reach,
/// and a hash costs no allocation: a million open decisions of 10 items held ~10 million
/// id strings before.
pub fn item_key(item_id: &str) -> u64 {
    xxhash_rust::xxh3::xxh3_64(item_id.as_bytes())
}

/// One item of a decision: id, position and what followed it so far.
#[derive(Debug, Clone, PartialEq)]
pub struct LiveItem {
    /// [`item_key`] of the item id.
    pub item: u64,
    /// 1-based position.
    pub position: u32,
    /// Best grade of its outcomes.
    pub grade: i64,
    /// Clicked within the window.
    pub clicked: bool,
    /// Purchased within the window.
    pub purchased: bool,
}

/// An outcome of a shown item: an interaction graded by the project's gains, or a purchase.
#[derive(Debug, Clone, Copy)]
pub struct Outcome<'a> {
    /// The decision it follows.
    pub request_id: &'a str,
    /// The item.
    pub item_id: &'a str,
    /// Its event time (epoch ms).
    pub time_ms: i64,
    /// Its grade.
    pub grade: i64,
    /// A click.
    pub click: bool,
    /// A purchase of the item.
    pub purchase: bool,
}

#[derive(Debug)]
struct Open {
    time_ms: i64,
    arrived_ms: i64,
    key: u32,
    items: Vec<LiveItem>,
}

#[derive(Debug, Clone)]
struct Early {
    item: u64,
    time_ms: i64,
    arrived_ms: i64,
    grade: i64,
    click: bool,
    purchase: bool,
}

impl Early {
    fn apply_to(&self, d: &mut Open, window_ms: i64) {
        if self.time_ms < d.time_ms || self.time_ms > d.time_ms + window_ms {
            return;
        }
        if let Some(it) = d.items.iter_mut().find(|it| it.item == self.item) {
            it.grade = it.grade.max(self.grade);
            it.clicked |= self.click;
            it.purchased |= self.purchase;
        }
    }
}

/// Filters of a live query (`None` = any).
#[derive(Debug, Clone, Copy, Default)]
pub struct ListFilter<'a> {
    /// Only this surface.
    pub surface: Option<&'a str>,
    /// Only this model version.
    pub model_version: Option<&'a str>,
    /// Only this device.
    pub device: Option<&'a str>,
    /// Only this region.
    pub region: Option<&'a str>,
    /// Only this variant of `(experiment, variant)`.
    pub variant: Option<(&'a str, &'a str)>,
}

impl ListFilter<'_> {
    fn matches(&self, k: &ListKey) -> bool {
        self.surface.is_none_or(|s| k.surface == s)
            && self.model_version.is_none_or(|m| k.model_version == m)
            && self.device.is_none_or(|d| k.device.as_deref() == Some(d))
            && self.region.is_none_or(|r| k.region.as_deref() == Some(r))
            && self.variant.is_none_or(|(x, v)| k.variant(x) == Some(v))
    }
}

/// The finest time bucket a query groups by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolution {
    /// No time grouping, or hours or days.
    Hour,
    /// Minutes.
    Minute,
}

/// The live join and its sums.
#[derive(Debug)]
pub struct LiveRelevance {
    config: LiveConfig,
    keys: Vec<ListKey>,
    key_ids: HashMap<ListKey, u32>,
    open: HashMap<Box<str>, Open>,
    /// Open decisions by (event time, arrival sequence), oldest first, for closing.
    queue: BTreeMap<(i64, u64), Box<str>>,
    seq: u64,
    early: HashMap<Box<str>, Vec<Early>>,
    early_queue: BTreeMap<(i64, u64), Box<str>>,
    minutes: BTreeMap<i64, HashMap<u32, ListSums>>,
    hours: BTreeMap<i64, HashMap<u32, ListSums>>,
    /// Decisions before this minute are summed per hour, from it on per minute.
    minute_floor: i64,
    /// Largest decision time seen that was not in the future. Decisions only: the engine
    /// logs them about in order, while a purchase may be reported with a time hours ahead
    /// of the history still arriving.
    watermark: i64,
    /// Sums are complete from here on (epoch ms): nothing before it was loaded.
    complete_from: i64,
    ready: bool,
    forced_closes: u64,
    late_outcomes: u64,
    next_tiering: i64,
}

impl LiveRelevance {
    /// An empty join whose sums are complete from `complete_from` (what loading covers).
    pub fn new(config: LiveConfig, complete_from: i64) -> LiveRelevance {
        LiveRelevance {
            config,
            keys: Vec::new(),
            key_ids: HashMap::new(),
            open: HashMap::new(),
            queue: BTreeMap::new(),
            seq: 0,
            early: HashMap::new(),
            early_queue: BTreeMap::new(),
            minutes: BTreeMap::new(),
            hours: BTreeMap::new(),
            minute_floor: i64::MIN,
            watermark: i64::MIN,
            complete_from,
            ready: false,
            forced_closes: 0,
            late_outcomes: 0,
            next_tiering: i64::MIN,
        }
    }

    /// Settings.
    pub fn config(&self) -> &LiveConfig {
        &self.config
    }

    /// Sums are complete from here on (epoch ms): what loading must cover.
    pub fn complete_from(&self) -> i64 {
        self.complete_from
    }

    /// Mark loading done: queries answer from now on.
    pub fn set_ready(&mut self) {
        self.ready = true;
    }

    /// Whether loading is done.
    pub fn is_ready(&self) -> bool {
        self.ready
    }

    /// Open decisions.
    pub fn open_decisions(&self) -> usize {
        self.open.len()
    }

    /// Decisions closed before their window passed because `max_open` was reached.
    pub fn forced_closes(&self) -> u64 {
        self.forced_closes
    }

    /// Outcomes that found no open decision and expired waiting for one: outcomes of closed
    /// decisions, or of decisions never received (orphans).
    pub fn late_outcomes(&self) -> u64 {
        self.late_outcomes
    }

    fn key_id(&mut self, key: &ListKeyRef<'_>) -> u32 {
        if let Some(&id) = self.key_ids.get(key) {
            return id;
        }
        if self.keys.len() >= self.config.max_keys {
            return OVERFLOW;
        }
        let id = self.keys.len() as u32;
        let key = key.to_key();
        self.keys.push(key.clone());
        self.key_ids.insert(key, id);
        id
    }

    fn see(&mut self, time_ms: i64, now_ms: i64) {
        if time_ms <= now_ms {
            self.watermark = self.watermark.max(time_ms);
        }
    }

    /// A decision and its items (grades as far as known: zero when it just arrived, the
    /// stored outcomes when loading). A repeated request id is ignored.
    pub fn decision(
        &mut self,
        request_id: &str,
        time_ms: i64,
        key: ListKey,
        items: Vec<LiveItem>,
        now_ms: i64,
    ) {
        self.decision_borrowed(request_id, time_ms, &key.borrowed(), items, now_ms);
    }

    /// [`LiveRelevance::decision`] with the key borrowed from the decision: copied only
    /// the first time it is seen.
    pub fn decision_borrowed(
        &mut self,
        request_id: &str,
        time_ms: i64,
        key: &ListKeyRef<'_>,
        items: Vec<LiveItem>,
        now_ms: i64,
    ) {
        self.see(time_ms, now_ms);
        if items.is_empty() || self.open.contains_key(request_id) {
            self.maintain(now_ms);
            return;
        }
        let key = self.key_id(key);
        let mut d = Open {
            time_ms,
            arrived_ms: now_ms,
            key,
            items,
        };
        if let Some(waiting) = self.early.remove(request_id) {
            for e in &waiting {
                e.apply_to(&mut d, self.config.window_ms);
            }
        }
        self.seq += 1;
        self.queue.insert((time_ms, self.seq), request_id.into());
        self.open.insert(request_id.into(), d);
        self.maintain(now_ms);
    }

    /// A decision whose window closed before the join started, with its final grades (item
    /// ids are not needed): straight into the sums.
    pub fn add_closed(&mut self, time_ms: i64, key: ListKey, items: Vec<LiveItem>) {
        if items.is_empty() {
            return;
        }
        let key = self.key_id(&key.borrowed());
        self.close(Open {
            time_ms,
            arrived_ms: time_ms,
            key,
            items,
        });
    }

    /// An outcome: grades its item if the decision is open, else waits for the decision.
    pub fn outcome(&mut self, o: &Outcome<'_>, now_ms: i64) {
        let early = Early {
            item: item_key(o.item_id),
            time_ms: o.time_ms,
            arrived_ms: now_ms,
            grade: o.grade,
            click: o.click,
            purchase: o.purchase,
        };
        if let Some(d) = self.open.get_mut(o.request_id) {
            early.apply_to(d, self.config.window_ms);
        } else if self.early.len() < self.config.max_open {
            self.seq += 1;
            self.early_queue
                .insert((o.time_ms, self.seq), o.request_id.into());
            self.early
                .entry(o.request_id.into())
                .or_default()
                .push(early);
        } else {
            self.late_outcomes += 1;
        }
        self.maintain(now_ms);
    }

    /// Whether something timed at `time_ms` that arrived at `arrived_ms` is past its window:
    /// by wall time, or — history arriving faster than real time — once later decisions
    /// passed its window and it had `settle_ms` for the outcomes sent after it.
    fn expired(&self, time_ms: i64, arrived_ms: i64, now_ms: i64) -> bool {
        let end = time_ms + self.config.window_ms + self.config.grace_ms;
        let waited = now_ms.saturating_sub(arrived_ms);
        now_ms > end
            && (waited > self.config.grace_ms
                || (self.watermark > end && waited > self.config.settle_ms))
    }

    /// Close what is past its window, expire waiting outcomes, and move old minutes into
    /// hours. Cheap when there is nothing to do; called on every event.
    pub fn maintain(&mut self, now_ms: i64) {
        while let Some(((time_ms, _), id)) = self.queue.first_key_value() {
            let force = self.open.len() > self.config.max_open;
            let arrived = self.open.get(id).map_or(i64::MIN, |d| d.arrived_ms);
            if !force && !self.expired(*time_ms, arrived, now_ms) {
                break;
            }
            if let Some((_, id)) = self.queue.pop_first()
                && let Some(d) = self.open.remove(&id)
            {
                self.forced_closes += u64::from(force);
                self.close(d);
            }
        }
        while let Some(((time_ms, _), id)) = self.early_queue.first_key_value() {
            let arrived = self
                .early
                .get(id)
                .and_then(|v| v.iter().map(|e| e.arrived_ms).max())
                .unwrap_or(i64::MIN);
            if !self.expired(*time_ms, arrived, now_ms) {
                break;
            }
            if let Some((_, id)) = self.early_queue.pop_first()
                && let Some(v) = self.early.remove(&id)
            {
                self.late_outcomes += v.len() as u64;
            }
        }
        if now_ms >= self.next_tiering {
            self.next_tiering = now_ms + MINUTE;
            self.tier(now_ms);
        }
    }

    fn close(&mut self, d: Open) {
        let minute = d.time_ms.div_euclid(MINUTE) * MINUTE;
        let bucket = if minute >= self.minute_floor {
            self.minutes.entry(minute)
        } else {
            self.hours.entry(d.time_ms.div_euclid(HOUR) * HOUR)
        };
        bucket
            .or_default()
            .entry(d.key)
            .or_default()
            .add_list(&d.items, self.config.k);
    }

    fn tier(&mut self, now_ms: i64) {
        self.minute_floor = self
            .minute_floor
            .max((now_ms - self.config.minute_retention_ms).div_euclid(MINUTE) * MINUTE);
        while let Some((&m, _)) = self.minutes.first_key_value() {
            if m >= self.minute_floor {
                break;
            }
            let Some((m, sums)) = self.minutes.pop_first() else {
                break;
            };
            let hour = self.hours.entry(m.div_euclid(HOUR) * HOUR).or_default();
            for (k, s) in sums {
                hour.entry(k).or_default().merge(&s);
            }
        }
        let hour_floor = now_ms - self.config.hour_retention_ms;
        while let Some((&h, _)) = self.hours.first_key_value() {
            if h >= hour_floor.div_euclid(HOUR) * HOUR {
                break;
            }
            self.hours.pop_first();
            self.complete_from = self.complete_from.max(h + HOUR);
        }
    }

    /// Sums per group over decisions in `[from, to)` that pass `filter`; `group` names a
    /// decision's group from its key and its time (a bucket start for closed decisions, at
    /// `resolution`). `None` when the sums cannot answer exactly: loading not done, the
    /// window reaching before what is kept, a closed bucket straddling a window edge, or
    /// overflowed keys in the window.
    pub fn query(
        &self,
        filter: &ListFilter<'_>,
        from: i64,
        to: i64,
        resolution: Resolution,
        group: impl Fn(&ListKey, i64) -> String,
    ) -> Option<BTreeMap<String, ListSums>> {
        if !self.ready || from < self.complete_from {
            return None;
        }
        // Hour buckets serve the part of the window before the minutes begin: it must start
        // and (unless the minutes take over) end on an hour.
        let split = self.minute_floor.clamp(from, to);
        if from < split
            && (resolution == Resolution::Minute
                || from.rem_euclid(HOUR) != 0
                || (split == to && to.rem_euclid(HOUR) != 0))
        {
            return None;
        }
        if split < to && (split.rem_euclid(MINUTE) != 0 || to.rem_euclid(MINUTE) != 0) {
            return None;
        }
        let mut out: BTreeMap<String, ListSums> = BTreeMap::new();
        let buckets = self
            .hours
            .range(from..split)
            .chain(self.minutes.range(split..to));
        for (&start, sums) in buckets {
            for (&k, s) in sums {
                if k == OVERFLOW {
                    return None;
                }
                let key = &self.keys[k as usize];
                if filter.matches(key) {
                    out.entry(group(key, start)).or_default().merge(s);
                }
            }
        }
        for d in self.open.values() {
            if d.time_ms < from || d.time_ms >= to {
                continue;
            }
            if d.key == OVERFLOW {
                return None;
            }
            let key = &self.keys[d.key as usize];
            if filter.matches(key) {
                out.entry(group(key, d.time_ms))
                    .or_default()
                    .add_list(&d.items, self.config.k);
            }
        }
        Some(out)
    }

    /// Approximate bytes held (keys, open decisions, sums).
    pub fn memory_bytes(&self) -> usize {
        let sums = (self.minutes.values().map(HashMap::len).sum::<usize>()
            + self.hours.values().map(HashMap::len).sum::<usize>())
            * (std::mem::size_of::<ListSums>() + 16);
        let open: usize = self
            .open
            .iter()
            .map(|(id, d)| {
                id.len()
                    + 80
                    + d.items
                        .iter()
                        .map(|_| std::mem::size_of::<LiveItem>())
                        .sum::<usize>()
            })
            .sum();
        sums + open + self.keys.len() * 128
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A key borrowed from a decision finds the id of the same key given owned (the two
    /// must hash alike), and a different key gets its own.
    #[test]
    fn borrowed_and_owned_keys_share_ids() {
        let mut l = LiveRelevance::new(LiveConfig::default(), 0);
        let owned = ListKey {
            experiments: vec![("a".into(), "x".into()), ("b".into(), "y".into())],
            ..key("home", "unused")
        };
        let id = l.key_id(&owned.borrowed());
        let borrowed = ListKeyRef {
            surface: "home",
            model_name: "m",
            model_version: "v1",
            device: Some("ios"),
            region: None,
            experiments: vec![("a", "x"), ("b", "y")],
        };
        assert_eq!(l.key_id(&borrowed), id);
        let other = ListKeyRef {
            region: Some("eu"),
            ..borrowed.clone()
        };
        assert_ne!(l.key_id(&other), id);
        assert_eq!(l.keys.len(), 2);
        assert_eq!(l.keys[id as usize], owned);
    }

    fn key(surface: &str, variant: &str) -> ListKey {
        ListKey {
            surface: surface.into(),
            model_name: "m".into(),
            model_version: "v1".into(),
            device: Some("ios".into()),
            region: None,
            experiments: vec![("exp".into(), variant.into())],
        }
    }

    fn items(n: u32) -> Vec<LiveItem> {
        (1..=n)
            .map(|p| LiveItem {
                item: item_key(&format!("i{p}")),
                position: p,
                grade: 0,
                clicked: false,
                purchased: false,
            })
            .collect()
    }

    fn click<'a>(request_id: &'a str, item_id: &'a str, time_ms: i64) -> Outcome<'a> {
        Outcome {
            request_id,
            item_id,
            time_ms,
            grade: 1,
            click: true,
            purchase: false,
        }
    }

    fn all(l: &LiveRelevance, from: i64, to: i64) -> Option<BTreeMap<String, ListSums>> {
        l.query(
            &ListFilter::default(),
            from,
            to,
            Resolution::Minute,
            |k, _| k.surface.clone(),
        )
    }

    #[test]
    fn open_and_closed_decisions_sum_to_the_same_metrics() {
        let t0 = 100 * HOUR;
        let mut l = LiveRelevance::new(LiveConfig::default(), 0);
        l.set_ready();
        l.decision("r1", t0, key("home", "a"), items(10), t0);
        // An outcome before its decision waits for it.
        l.outcome(&click("r2", "i1", t0 + 2 * MINUTE), t0 + 2 * MINUTE);
        l.decision(
            "r2",
            t0 + MINUTE,
            key("home", "b"),
            items(10),
            t0 + 2 * MINUTE,
        );
        l.outcome(&click("r1", "i2", t0 + 3 * MINUTE), t0 + 3 * MINUTE);
        // Outside the window: not counted.
        l.outcome(&click("r1", "i1", t0 + 31 * MINUTE), t0 + 31 * MINUTE);
        let open = all(&l, t0, t0 + 2 * MINUTE).expect("answers")["home"];
        assert_eq!(open.summary.lists, 2);
        // r1: rr 1/2, r2: rr 1.
        assert!((open.summary.mrr - 1.5).abs() < 1e-12);
        assert!((open.summary.ctr - 0.2).abs() < 1e-12);
        // 40 minutes later both windows closed: same sums, now from the minute buckets.
        let later = t0 + 40 * MINUTE;
        l.maintain(later);
        assert_eq!(l.open_decisions(), 0);
        let closed = all(&l, t0, t0 + 2 * MINUTE).expect("answers")["home"];
        assert_eq!(closed, open);
        // Filter by variant.
        let f = ListFilter {
            variant: Some(("exp", "b")),
            ..ListFilter::default()
        };
        let b = l
            .query(&f, t0, t0 + 2 * MINUTE, Resolution::Hour, |_, _| "b".into())
            .expect("answers");
        assert_eq!(b["b"].summary.lists, 1);
        assert!((b["b"].summary.mrr - 1.0).abs() < 1e-12);
        // A window edge inside a minute cannot be answered from minute sums.
        assert!(all(&l, t0 + 1, t0 + 2 * MINUTE).is_none());
    }

    #[test]
    fn history_loaded_fast_closes_by_event_time_seen() {
        let now = 1000 * HOUR;
        let mut l = LiveRelevance::new(LiveConfig::default(), 0);
        l.set_ready();
        let t0 = now - 60 * HOUR;
        l.decision("old", t0, key("home", "a"), items(3), now);
        // Its outcome arrives after it, in the same second of wall time: still counted.
        l.outcome(&click("old", "i3", t0 + MINUTE), now);
        assert_eq!(l.open_decisions(), 1);
        // History moves on past its window: it closes once it had 10 s for its outcomes.
        l.decision("next", t0 + 40 * MINUTE, key("home", "a"), items(3), now);
        assert_eq!(l.open_decisions(), 2);
        l.maintain(now + 11_000);
        assert_eq!(l.open_decisions(), 1);
        // 60 h ago is past minute retention once tiered: the hour answers at hour edges.
        l.maintain(now + 2 * MINUTE);
        let h = l
            .query(
                &ListFilter::default(),
                t0,
                t0 + HOUR,
                Resolution::Hour,
                |_, _| "all".into(),
            )
            .expect("answers");
        assert_eq!(h["all"].summary.lists, 2);
        assert!((h["all"].summary.mrr - (1.0 / 3.0)).abs() < 1e-12);
        assert!(
            l.query(
                &ListFilter::default(),
                t0,
                t0 + HOUR,
                Resolution::Minute,
                |_, _| { "all".into() }
            )
            .is_none()
        );
    }

    #[test]
    fn history_imported_while_live_traffic_flows_waits_for_its_outcomes() {
        let now = 1000 * HOUR;
        let mut l = LiveRelevance::new(LiveConfig::default(), 0);
        l.set_ready();
        // Live traffic has the watermark at now.
        l.decision("live", now, key("home", "a"), items(3), now);
        // A day-old decision imported now, its click in the next batch.
        let old = now - 24 * HOUR;
        l.decision("old", old, key("home", "a"), items(3), now);
        l.outcome(&click("old", "i1", old + MINUTE), now + 1_000);
        assert_eq!(l.open_decisions(), 2);
        // It closes once it had 10 s for its outcomes, with its click.
        l.maintain(now + 11_000);
        assert_eq!(l.open_decisions(), 1);
        let s = all(&l, old, old + MINUTE).expect("answers")["home"];
        assert!((s.summary.mrr - 1.0).abs() < 1e-12);
    }

    #[test]
    fn purchases_convert_and_outcomes_of_closed_decisions_are_counted_as_late() {
        let t0 = 100 * HOUR;
        let mut l = LiveRelevance::new(LiveConfig::default(), 0);
        l.set_ready();
        l.decision("r1", t0, key("home", "a"), items(5), t0);
        l.outcome(
            &Outcome {
                request_id: "r1",
                item_id: "i5",
                time_ms: t0 + 10 * MINUTE,
                grade: 3,
                click: false,
                purchase: true,
            },
            t0 + 10 * MINUTE,
        );
        l.maintain(t0 + HOUR);
        l.outcome(&click("r1", "i1", t0 + 20 * MINUTE), t0 + HOUR);
        l.maintain(t0 + 3 * HOUR);
        assert_eq!(l.late_outcomes(), 1);
        let s = all(&l, t0, t0 + MINUTE).expect("answers")["home"];
        assert_eq!(s.converted, 1);
        assert!((s.summary.mrr - 0.2).abs() < 1e-12);
    }

    #[test]
    fn overflowed_keys_and_loading_send_queries_to_sql() {
        let t0 = 100 * HOUR;
        let config = LiveConfig {
            max_keys: 1,
            ..LiveConfig::default()
        };
        let mut l = LiveRelevance::new(config, t0);
        l.decision("r1", t0, key("home", "a"), items(2), t0);
        assert!(all(&l, t0, t0 + MINUTE).is_none(), "not ready");
        l.set_ready();
        assert!(all(&l, t0, t0 + MINUTE).is_some());
        assert!(
            all(&l, t0 - MINUTE, t0 + MINUTE).is_none(),
            "before loading"
        );
        l.decision("r2", t0, key("shop", "a"), items(2), t0);
        assert!(all(&l, t0, t0 + MINUTE).is_none(), "overflow");
    }
}
