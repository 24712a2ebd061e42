//! Per-minute latency rollups: for every minute of event time and key (surface, model
//! version, experiment, variant), the decision and fallback counts, a sketch of end-to-end
//! latency and one per component, exact counts over the SLO thresholds, and the slowest
//! decisions (exemplars).
//!
//! Two tiers live in memory: minutes for `minute_retention`, hours for `hour_retention`; a
//! minute leaving its tier is merged into its hour. Buckets that stopped changing hold their
//! sketches packed (DDSketch binary encoding, about a byte per bin). Separately, `pending`
//! collects what was observed since the last [`Rollups::take_pending`], which the store
//! persists as `rollups_1m` rows in the same commit as the events they came from.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};

use compact_str::CompactString;
use hashbrown::HashMap;
use serde::{Deserialize, Serialize};

use crate::{LatencyError, Sketch};

/// Component name of end-to-end latency.
pub const TOTAL: &str = "total";
/// Stand-in for keys and components past the cardinality caps.
pub const OTHER: &str = "other";
const MINUTE: i64 = 60_000;
const HOUR: i64 = 3_600_000;

/// One decision, as the rollups see it.
#[derive(Debug, Clone, Copy)]
pub struct Observation<'a> {
    /// Event time (epoch ms).
    pub time_ms: i64,
    /// Placement.
    pub surface: &'a str,
    /// Model version.
    pub model_version: &'a str,
    /// First experiment of the decision (`""` when none).
    pub experiment: &'a str,
    /// Its variant (`""` when none).
    pub variant: &'a str,
    /// End-to-end latency.
    pub total_ms: Option<f64>,
    /// Per-component latency.
    pub components: &'a [(CompactString, f64)],
    /// Whether a degraded path served it.
    pub fallback: bool,
    /// Its request id (kept for the slowest decisions only).
    pub request_id: &'a str,
    /// Its W3C trace id, if any.
    pub trace_id: Option<&'a str>,
}

/// Settings.
#[derive(Debug, Clone)]
pub struct RollupConfig {
    /// Most distinct keys (surface × model version × experiment × variant); more go to `other`.
    pub max_keys: usize,
    /// Most distinct component names besides `total`; more go to `other`.
    pub max_components: usize,
    /// How long minutes stay at minute resolution.
    pub minute_retention_ms: i64,
    /// How long hours stay in memory (older history stays in `rollups_1m`).
    pub hour_retention_ms: i64,
    /// End-to-end thresholds counted exactly (SLO thresholds).
    pub thresholds_ms: Vec<f64>,
    /// Slowest decisions kept per minute and key.
    pub exemplars: usize,
    /// Buckets this much older than now are packed.
    pub pack_after_ms: i64,
    /// Memory budget: past it, the oldest minutes are merged into hours early.
    pub budget_bytes: usize,
    /// Upper bounds of the cumulative Prometheus histograms (ms); the thresholds are added.
    pub histogram_bounds_ms: Vec<f64>,
}

/// Default histogram bounds (ms): 5 ms to 10 s, Prometheus's default buckets.
pub const DEFAULT_BOUNDS_MS: [f64; 11] = [
    5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0,
];

/// A bucket's most recent notable observation, for OpenMetrics exemplars.
#[derive(Debug, Clone, PartialEq)]
pub struct BucketExemplar {
    /// The latency (ms).
    pub value_ms: f64,
    /// `trace_id` when the decision had one, else `request_id`.
    pub label: &'static str,
    /// Its value.
    pub id: String,
    /// Event time (epoch ms).
    pub time_ms: i64,
}

/// A cumulative latency histogram since the process started (Prometheus semantics).
#[derive(Debug, Clone, PartialEq)]
pub struct Histogram {
    /// Observations per bucket (not cumulative); the last is above every bound.
    pub counts: Vec<u64>,
    /// Sum of the observations (ms).
    pub sum_ms: f64,
    /// One exemplar per bucket, replaced once a minute.
    pub exemplars: Vec<Option<BucketExemplar>>,
}

impl Histogram {
    fn new(bounds: usize) -> Histogram {
        Histogram {
            counts: vec![0; bounds + 1],
            sum_ms: 0.0,
            exemplars: vec![None; bounds + 1],
        }
    }

    /// Observations.
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }
}

/// Cumulative counters of one surface since the process started.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SurfaceTotals {
    /// Decisions.
    pub decisions: u64,
    /// Fallbacks.
    pub fallbacks: u64,
    /// Histograms by component id (0 = total).
    hists: Vec<Option<Histogram>>,
}

impl Default for RollupConfig {
    fn default() -> Self {
        RollupConfig {
            max_keys: 256,
            max_components: 16,
            minute_retention_ms: 26 * HOUR,
            hour_retention_ms: 30 * 24 * HOUR,
            thresholds_ms: Vec::new(),
            exemplars: 3,
            pack_after_ms: 3 * MINUTE,
            budget_bytes: 128 << 20,
            histogram_bounds_ms: DEFAULT_BOUNDS_MS.to_vec(),
        }
    }
}

/// A rollup key.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Key {
    /// Placement.
    pub surface: String,
    /// Model version.
    pub model_version: String,
    /// Experiment (`""` when none).
    pub experiment: String,
    /// Variant (`""` when none).
    pub variant: String,
}

/// One of the slowest decisions of a minute.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Exemplar {
    /// End-to-end latency.
    pub latency_ms: f64,
    /// Request id.
    pub request_id: String,
    /// W3C trace id, if the decision had one.
    pub trace_id: Option<String>,
    /// Event time (epoch ms).
    pub time_ms: i64,
}

/// A sketch, dense while it changes and packed once it stops.
#[derive(Clone)]
enum Slot {
    Dense(Sketch),
    Packed(Box<[u8]>),
}

impl Slot {
    fn dense(&mut self) -> &mut Sketch {
        if let Slot::Packed(bytes) = self {
            // Packed bytes are our own encoding; a failure would be a bug, and an empty
            // sketch is the least harmful outcome.
            *self = Slot::Dense(Sketch::decode(bytes).unwrap_or_default());
        }
        match self {
            Slot::Dense(s) => s,
            Slot::Packed(_) => unreachable!("just unpacked"),
        }
    }

    fn view(&self) -> Cow<'_, Sketch> {
        match self {
            Slot::Dense(s) => Cow::Borrowed(s),
            Slot::Packed(b) => Cow::Owned(Sketch::decode(b).unwrap_or_default()),
        }
    }

    fn pack(&mut self) {
        if let Slot::Dense(s) = self {
            *self = Slot::Packed(s.encode().into_boxed_slice());
        }
    }

    fn bytes(&self) -> usize {
        match self {
            // A dense sketch holds 8 bytes per bin.
            Slot::Dense(s) => 96 + 8 * s.bins(),
            Slot::Packed(b) => 24 + b.len(),
        }
    }
}

#[derive(Clone, Default)]
struct Cell {
    decisions: u64,
    fallbacks: u64,
    /// By component id; 0 is `total`.
    slots: Vec<Option<Slot>>,
    /// Decisions whose end-to-end latency exceeds each configured threshold.
    over: Vec<u64>,
    exemplars: Vec<Exemplar>,
}

impl Cell {
    fn slot(&mut self, comp: usize) -> &mut Sketch {
        if self.slots.len() <= comp {
            self.slots.resize_with(comp + 1, || None);
        }
        self.slots[comp]
            .get_or_insert_with(|| Slot::Dense(Sketch::new()))
            .dense()
    }

    fn merge(&mut self, other: &Cell) {
        self.decisions += other.decisions;
        self.fallbacks += other.fallbacks;
        for (i, s) in other.slots.iter().enumerate() {
            if let Some(s) = s {
                self.slot(i).merge(&s.view());
            }
        }
        if self.over.len() < other.over.len() {
            self.over.resize(other.over.len(), 0);
        }
        for (a, b) in self.over.iter_mut().zip(&other.over) {
            *a += b;
        }
        // Both lists hold at most the configured number.
        let n = self.exemplars.len().max(other.exemplars.len());
        for e in &other.exemplars {
            keep_slowest(&mut self.exemplars, e.clone(), n);
        }
    }

    fn pack(&mut self) {
        self.slots.iter_mut().flatten().for_each(Slot::pack);
    }

    fn bytes(&self) -> usize {
        128 + self.slots.iter().flatten().map(Slot::bytes).sum::<usize>()
            + self.exemplars.len() * 96
    }
}

/// Insert `e` among the `n` slowest, keeping them sorted slowest first.
fn keep_slowest(list: &mut Vec<Exemplar>, e: Exemplar, n: usize) {
    if list.len() >= n && list.last().is_some_and(|l| l.latency_ms >= e.latency_ms) {
        return;
    }
    let at = list.partition_point(|x| x.latency_ms >= e.latency_ms);
    list.insert(at, e);
    list.truncate(n);
}

/// The cells of one minute (or hour), by key id.
#[derive(Clone, Default)]
struct Bucket {
    cells: Vec<Option<Box<Cell>>>,
}

impl Bucket {
    fn cell(&mut self, key: u32) -> &mut Cell {
        let k = key as usize;
        if self.cells.len() <= k {
            self.cells.resize_with(k + 1, || None);
        }
        self.cells[k].get_or_insert_with(Default::default)
    }

    fn merge(&mut self, other: &Bucket) {
        for (k, c) in other.cells.iter().enumerate() {
            if let Some(c) = c {
                self.cell(k as u32).merge(c);
            }
        }
    }
}

/// Buckets of one resolution.
struct Tier {
    res: i64,
    buckets: BTreeMap<i64, Bucket>,
    /// Buckets before this were packed.
    packed_before: i64,
    /// Packed buckets that took new values since.
    dirty: BTreeSet<i64>,
}

impl Tier {
    fn new(res: i64) -> Tier {
        Tier {
            res,
            buckets: BTreeMap::new(),
            packed_before: i64::MIN,
            dirty: BTreeSet::new(),
        }
    }

    fn bucket(&mut self, t: i64) -> &mut Bucket {
        let start = t.div_euclid(self.res) * self.res;
        if start < self.packed_before {
            self.dirty.insert(start);
        }
        self.buckets.entry(start).or_default()
    }

    fn pack(&mut self, before: i64) {
        let from = self.packed_before;
        let newly: Vec<i64> = self
            .buckets
            .range(from..before.max(from))
            .map(|(t, _)| *t)
            .collect();
        let dirty = std::mem::take(&mut self.dirty);
        for t in newly.into_iter().chain(dirty) {
            if t < before
                && let Some(b) = self.buckets.get_mut(&t)
            {
                b.cells.iter_mut().flatten().for_each(|c| c.pack());
            }
        }
        self.packed_before = self.packed_before.max(before);
    }
}

/// Which decisions a query covers; `None` matches all.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Filter {
    /// Placement.
    pub surface: Option<String>,
    /// Model version.
    pub model_version: Option<String>,
    /// Experiment.
    pub experiment: Option<String>,
    /// Variant.
    pub variant: Option<String>,
}

impl Filter {
    fn matches(&self, k: &Key) -> bool {
        let ok = |f: &Option<String>, v: &str| f.as_deref().is_none_or(|f| f == v);
        ok(&self.surface, &k.surface)
            && ok(&self.model_version, &k.model_version)
            && ok(&self.experiment, &k.experiment)
            && ok(&self.variant, &k.variant)
    }
}

/// How series are split.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum GroupBy {
    /// One series.
    #[default]
    None,
    /// One series per component (and `total`).
    Component,
    /// Per surface.
    Surface,
    /// Per model version.
    Model,
    /// Per experiment variant (`experiment:variant`).
    Variant,
}

impl GroupBy {
    /// Parse a query parameter value.
    pub fn parse(s: &str) -> Result<GroupBy, LatencyError> {
        Ok(match s {
            "" | "none" => GroupBy::None,
            "component" => GroupBy::Component,
            "surface" => GroupBy::Surface,
            "model" | "model_version" => GroupBy::Model,
            "variant" => GroupBy::Variant,
            other => {
                return Err(LatencyError::Invalid(format!(
                    "group_by {other:?} is not one of none, component, surface, model, variant"
                )));
            }
        })
    }

    fn label(self, k: &Key) -> String {
        match self {
            GroupBy::None | GroupBy::Component => "all".into(),
            GroupBy::Surface => k.surface.clone(),
            GroupBy::Model => k.model_version.clone(),
            GroupBy::Variant if k.experiment.is_empty() => "none".into(),
            GroupBy::Variant => format!("{}:{}", k.experiment, k.variant),
        }
    }
}

/// One point of a series: the window `[t_ms, t_ms + step)`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Point {
    /// Window start (epoch ms).
    pub t_ms: i64,
    /// Latency samples.
    pub count: u64,
    /// Decisions (for component series: decisions reporting the component).
    pub decisions: u64,
    /// Decisions served by a fallback path.
    pub fallbacks: u64,
    /// Mean latency (exact).
    pub mean_ms: Option<f64>,
    /// Quantiles in the order asked (1% relative accuracy).
    pub quantiles: Vec<Option<f64>>,
    /// Maximum (exact).
    pub max_ms: Option<f64>,
    /// The slowest decisions of the window.
    pub exemplars: Vec<Exemplar>,
}

/// A time series of one group.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Series {
    /// Group label (`all` when not grouped; the component name when grouped by component).
    pub group: String,
    /// One point per step, empty windows included.
    pub points: Vec<Point>,
}

/// Counts over a window, for SLOs.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct WindowCounts {
    /// Decisions.
    pub decisions: u64,
    /// Fallback decisions.
    pub fallbacks: u64,
    /// Decisions with an end-to-end latency.
    pub samples: u64,
    /// Of those, over the threshold asked.
    pub over: u64,
}

/// One persisted row: a key's minute for one component, as observed since the last take.
#[derive(Debug, Clone)]
pub struct RollupRow {
    /// Minute start (epoch ms).
    pub minute_ms: i64,
    /// Key.
    pub key: Key,
    /// `total` or a component name.
    pub component: String,
    /// Decisions (on `total` rows; `None` on component rows).
    pub decisions: Option<u64>,
    /// Fallbacks (on `total` rows).
    pub fallbacks: Option<u64>,
    /// The latency sketch.
    pub sketch: Sketch,
    /// (threshold, decisions over it) (on `total` rows).
    pub over: Vec<(f64, u64)>,
    /// Slowest decisions (on `total` rows).
    pub exemplars: Vec<Exemplar>,
}

/// In-memory rollups. Not synchronized: the store holds it under a lock.
pub struct Rollups {
    config: RollupConfig,
    keys: Vec<Key>,
    key_index: HashMap<String, u32>,
    comps: Vec<String>,
    comp_index: HashMap<String, u16>,
    scratch: String,
    comp_scratch: Vec<(usize, f64)>,
    minutes: Tier,
    hours: Tier,
    pending: BTreeMap<i64, Bucket>,
    /// Observations sent to `other` because a cap was reached.
    overflow: u64,
    bytes: usize,
    /// Histogram bounds: the configured ones and the thresholds, sorted.
    bounds: Vec<f64>,
    surfaces: Vec<String>,
    key_surface: Vec<u32>,
    totals: Vec<SurfaceTotals>,
}

impl Rollups {
    /// Empty rollups.
    pub fn new(config: RollupConfig) -> Rollups {
        let mut bounds: Vec<f64> = config
            .histogram_bounds_ms
            .iter()
            .chain(&config.thresholds_ms)
            .copied()
            .filter(|b| b.is_finite() && *b > 0.0)
            .collect();
        bounds.sort_by(f64::total_cmp);
        bounds.dedup();
        let mut r = Rollups {
            config,
            keys: Vec::new(),
            key_index: HashMap::new(),
            comps: Vec::new(),
            comp_index: HashMap::new(),
            scratch: String::new(),
            comp_scratch: Vec::new(),
            minutes: Tier::new(MINUTE),
            hours: Tier::new(HOUR),
            pending: BTreeMap::new(),
            overflow: 0,
            bytes: 0,
            bounds,
            surfaces: Vec::new(),
            key_surface: Vec::new(),
            totals: Vec::new(),
        };
        r.comp_id(TOTAL);
        r
    }

    /// Bounds of the Prometheus histograms (ms).
    pub fn histogram_bounds_ms(&self) -> &[f64] {
        &self.bounds
    }

    /// Component names by id (0 is `total`).
    pub fn components(&self) -> &[String] {
        &self.comps
    }

    /// Per surface, counters and histograms since start: (surface, totals, [(component,
    /// histogram)]).
    pub fn surface_totals(
        &self,
    ) -> impl Iterator<Item = (&str, &SurfaceTotals, Vec<(&str, &Histogram)>)> {
        self.surfaces.iter().zip(&self.totals).map(|(s, t)| {
            let hists = t
                .hists
                .iter()
                .enumerate()
                .filter_map(|(c, h)| Some((self.comps.get(c)?.as_str(), h.as_ref()?)))
                .collect();
            (s.as_str(), t, hists)
        })
    }

    fn record_totals(&mut self, key: u32, o: &Observation<'_>, comps: &[(usize, f64)]) {
        let Some(&s) = self.key_surface.get(key as usize) else {
            return;
        };
        let nb = self.bounds.len();
        let Some(t) = self.totals.get_mut(s as usize) else {
            return;
        };
        t.decisions += 1;
        t.fallbacks += u64::from(o.fallback);
        for &(c, ms) in comps {
            if t.hists.len() <= c {
                t.hists.resize_with(c + 1, || None);
            }
            let h = t.hists[c].get_or_insert_with(|| Histogram::new(nb));
            let b = self.bounds.partition_point(|x| *x < ms);
            h.counts[b] += 1;
            h.sum_ms += ms;
            if c == 0
                && h.exemplars[b]
                    .as_ref()
                    .is_none_or(|e| o.time_ms - e.time_ms >= MINUTE)
            {
                let (label, id) = match o.trace_id {
                    Some(t) => ("trace_id", t),
                    None => ("request_id", o.request_id),
                };
                h.exemplars[b] = Some(BucketExemplar {
                    value_ms: ms,
                    label,
                    id: id.into(),
                    time_ms: o.time_ms,
                });
            }
        }
    }

    /// The settings.
    pub fn config(&self) -> &RollupConfig {
        &self.config
    }

    /// Observations counted under `other` because a cardinality cap was reached.
    pub fn overflow(&self) -> u64 {
        self.overflow
    }

    /// Approximate memory of the buckets, as of the last [`Rollups::maintain`].
    pub fn memory_bytes(&self) -> usize {
        self.bytes
    }

    /// Distinct keys seen.
    pub fn keys(&self) -> &[Key] {
        &self.keys
    }

    fn key_id(&mut self, s: &str, m: &str, e: &str, v: &str) -> u32 {
        self.scratch.clear();
        for (i, part) in [s, m, e, v].into_iter().enumerate() {
            if i > 0 {
                self.scratch.push('\u{1f}');
            }
            self.scratch.push_str(part);
        }
        if let Some(&id) = self.key_index.get(self.scratch.as_str()) {
            return id;
        }
        // Past the cap every new key is `other` (created once, beyond the cap).
        let is_other = [s, m, e, v].iter().all(|x| *x == OTHER);
        if self.keys.len() >= self.config.max_keys && !is_other {
            self.overflow += 1;
            return self.key_id(OTHER, OTHER, OTHER, OTHER);
        }
        let id = self.keys.len() as u32;
        let surface = match self.surfaces.iter().position(|x| x == s) {
            Some(i) => i as u32,
            None => {
                self.surfaces.push(s.into());
                self.totals.push(SurfaceTotals::default());
                (self.surfaces.len() - 1) as u32
            }
        };
        self.key_surface.push(surface);
        self.keys.push(Key {
            surface: s.into(),
            model_version: m.into(),
            experiment: e.into(),
            variant: v.into(),
        });
        self.key_index.insert(self.scratch.clone(), id);
        id
    }

    fn comp_id(&mut self, name: &str) -> usize {
        if let Some(&id) = self.comp_index.get(name) {
            return id as usize;
        }
        if self.comps.len() > self.config.max_components && name != OTHER {
            self.overflow += 1;
            return self.comp_id(OTHER);
        }
        let id = self.comps.len();
        self.comps.push(name.into());
        self.comp_index.insert(name.into(), id as u16);
        id
    }

    fn minute_floor(&self, now_ms: i64) -> i64 {
        (now_ms - self.config.minute_retention_ms).div_euclid(MINUTE) * MINUTE
    }

    /// Record one decision.
    pub fn observe(&mut self, o: &Observation<'_>, now_ms: i64) {
        let key = self.key_id(o.surface, o.model_version, o.experiment, o.variant);
        let mut comps = std::mem::take(&mut self.comp_scratch);
        comps.clear();
        if let Some(t) = o.total_ms {
            comps.push((0, t));
        }
        for (name, ms) in o.components {
            comps.push((self.comp_id(name), *ms));
        }
        let minute = o.time_ms.div_euclid(MINUTE) * MINUTE;
        let cfg = &self.config;
        let tier = if minute >= self.minute_floor(now_ms) {
            &mut self.minutes
        } else {
            &mut self.hours
        };
        apply(tier.bucket(minute).cell(key), o, &comps, cfg);
        apply(
            self.pending.entry(minute).or_default().cell(key),
            o,
            &comps,
            cfg,
        );
        self.record_totals(key, o, &comps);
        self.comp_scratch = comps;
    }

    /// Record one component's latency without a decision (a span measuring a component):
    /// only that component's sketch and histogram change.
    pub fn observe_component(
        &mut self,
        key: &Key,
        component: &str,
        ms: f64,
        time_ms: i64,
        now_ms: i64,
    ) {
        let k = self.key_id(
            &key.surface,
            &key.model_version,
            &key.experiment,
            &key.variant,
        );
        let c = self.comp_id(component);
        let minute = time_ms.div_euclid(MINUTE) * MINUTE;
        let tier = if minute >= self.minute_floor(now_ms) {
            &mut self.minutes
        } else {
            &mut self.hours
        };
        tier.bucket(minute).cell(k).slot(c).add(ms);
        self.pending
            .entry(minute)
            .or_default()
            .cell(k)
            .slot(c)
            .add(ms);
        if let Some(&s) = self.key_surface.get(k as usize)
            && let Some(t) = self.totals.get_mut(s as usize)
        {
            if t.hists.len() <= c {
                t.hists.resize_with(c + 1, || None);
            }
            let nb = self.bounds.len();
            let h = t.hists[c].get_or_insert_with(|| Histogram::new(nb));
            h.counts[self.bounds.partition_point(|x| *x < ms)] += 1;
            h.sum_ms += ms;
        }
    }

    /// Everything observed since the last call, as rows to persist.
    pub fn take_pending(&mut self) -> Vec<RollupRow> {
        let rows = self.pending_rows();
        self.pending.clear();
        rows
    }

    /// What [`Rollups::take_pending`] would return, leaving it pending.
    pub fn pending_rows(&self) -> Vec<RollupRow> {
        let mut rows = Vec::new();
        for (minute, bucket) in &self.pending {
            for (k, cell) in bucket.cells.iter().enumerate() {
                if let Some(cell) = cell {
                    self.rows_of(*minute, k, cell, &mut rows);
                }
            }
        }
        rows
    }

    fn rows_of(&self, minute: i64, key: usize, cell: &Cell, out: &mut Vec<RollupRow>) {
        let Some(k) = self.keys.get(key) else { return };
        let total_row = RollupRow {
            minute_ms: minute,
            key: k.clone(),
            component: TOTAL.into(),
            decisions: Some(cell.decisions),
            fallbacks: Some(cell.fallbacks),
            sketch: cell
                .slots
                .first()
                .and_then(|s| s.as_ref())
                .map(|s| s.view().into_owned())
                .unwrap_or_default(),
            over: self
                .config
                .thresholds_ms
                .iter()
                .copied()
                .zip(cell.over.iter().copied())
                .collect(),
            exemplars: cell.exemplars.clone(),
        };
        out.push(total_row);
        for (c, slot) in cell.slots.iter().enumerate().skip(1) {
            if let (Some(slot), Some(name)) = (slot, self.comps.get(c)) {
                out.push(RollupRow {
                    minute_ms: minute,
                    key: k.clone(),
                    component: name.clone(),
                    decisions: None,
                    fallbacks: None,
                    sketch: slot.view().into_owned(),
                    over: Vec::new(),
                    exemplars: Vec::new(),
                });
            }
        }
    }

    /// Load persisted rows into the in-memory tiers (at start).
    pub fn load(&mut self, rows: &[RollupRow], now_ms: i64) {
        let floor = self.minute_floor(now_ms);
        let oldest = now_ms - self.config.hour_retention_ms;
        for r in rows {
            if r.minute_ms < oldest {
                continue;
            }
            let (key, cell) = self.row_cell(r);
            let tier = if r.minute_ms >= floor {
                &mut self.minutes
            } else {
                &mut self.hours
            };
            tier.bucket(r.minute_ms).cell(key).merge(&cell);
        }
    }

    /// A row as a cell of its key (interning key and component).
    fn row_cell(&mut self, r: &RollupRow) -> (u32, Cell) {
        let key = self.key_id(
            &r.key.surface,
            &r.key.model_version,
            &r.key.experiment,
            &r.key.variant,
        );
        let comp = self.comp_id(&r.component);
        let mut cell = Cell {
            decisions: r.decisions.unwrap_or(0),
            fallbacks: r.fallbacks.unwrap_or(0),
            ..Cell::default()
        };
        cell.slot(comp).merge(&r.sketch);
        if comp == 0 {
            // Exact counts for the thresholds the row has; the sketch's for the others.
            cell.over = self
                .config
                .thresholds_ms
                .iter()
                .map(|t| {
                    r.over
                        .iter()
                        .find(|(rt, _)| rt == t)
                        .map(|(_, n)| *n)
                        .unwrap_or_else(|| r.sketch.count() - r.sketch.count_le(*t))
                })
                .collect();
            cell.exemplars = r.exemplars.clone();
        }
        (key, cell)
    }

    /// Age the tiers: minutes past retention (or past the memory budget) merge into their
    /// hour, hours past retention are dropped, buckets that stopped changing are packed.
    pub fn maintain(&mut self, now_ms: i64) {
        let floor = self.minute_floor(now_ms);
        while let Some((&t, _)) = self.minutes.buckets.first_key_value() {
            if t >= floor {
                break;
            }
            self.retire_oldest_minute();
        }
        let oldest = now_ms - self.config.hour_retention_ms;
        while let Some((&t, _)) = self.hours.buckets.first_key_value() {
            if t + HOUR > oldest {
                break;
            }
            self.hours.buckets.remove(&t);
        }
        let hours_before = (now_ms - self.config.pack_after_ms).div_euclid(HOUR) * HOUR;
        self.minutes.pack(now_ms - self.config.pack_after_ms);
        self.hours.pack(hours_before);
        self.bytes = self.count_bytes();
        // Over budget: merge the oldest hour of minutes into its hour, repack, recount.
        while self.bytes > self.config.budget_bytes && !self.minutes.buckets.is_empty() {
            for _ in 0..60 {
                self.retire_oldest_minute();
            }
            self.hours.pack(hours_before);
            self.bytes = self.count_bytes();
        }
    }

    /// Merge the oldest minute into its hour.
    fn retire_oldest_minute(&mut self) {
        if let Some((t, bucket)) = self.minutes.buckets.pop_first() {
            self.minutes.dirty.remove(&t);
            self.hours.bucket(t).merge(&bucket);
        }
    }

    fn count_bytes(&self) -> usize {
        [&self.minutes, &self.hours]
            .iter()
            .flat_map(|t| t.buckets.values())
            .flat_map(|b| b.cells.iter().flatten())
            .map(|c| c.bytes())
            .sum()
    }

    /// Buckets starting in `[from, to)` of both tiers, oldest first.
    fn buckets(&self, from: i64, to: i64) -> impl Iterator<Item = (i64, &Bucket)> {
        let hours = self
            .hours
            .buckets
            .range(from.div_euclid(HOUR) * HOUR..to.max(from))
            .filter(move |(t, _)| **t + HOUR > from);
        let minutes = self.minutes.buckets.range(from..to.max(from));
        hours.chain(minutes).map(|(t, b)| (*t, b))
    }

    /// Counts over `[from, to)` for the keys `filter` matches; `over` counts end-to-end
    /// latencies above `threshold_ms` (exactly when it is a configured threshold).
    pub fn window(
        &self,
        filter: &Filter,
        from: i64,
        to: i64,
        threshold_ms: Option<f64>,
    ) -> WindowCounts {
        let mask: Vec<bool> = self.keys.iter().map(|k| filter.matches(k)).collect();
        let exact =
            threshold_ms.and_then(|t| self.config.thresholds_ms.iter().position(|x| *x == t));
        let mut w = WindowCounts::default();
        for (_, bucket) in self.buckets(from, to) {
            for (k, cell) in bucket.cells.iter().enumerate() {
                let Some(cell) = cell.as_ref().filter(|_| mask[k]) else {
                    continue;
                };
                w.decisions += cell.decisions;
                w.fallbacks += cell.fallbacks;
                let total = cell.slots.first().and_then(|s| s.as_ref());
                let samples = total.map(|s| s.view().count()).unwrap_or(0);
                w.samples += samples;
                w.over += match (exact, threshold_ms, total) {
                    (Some(i), _, _) => cell.over.get(i).copied().unwrap_or(0),
                    (None, Some(t), Some(s)) => {
                        let s = s.view();
                        s.count() - s.count_le(t)
                    }
                    _ => 0,
                };
            }
        }
        w
    }

    /// Quantile time series over `[from, to)` in steps of `step_ms` (a multiple of a minute;
    /// hours older than the minute retention land whole in the step holding their start).
    #[allow(clippy::too_many_arguments)]
    pub fn series(
        &self,
        filter: &Filter,
        component: &str,
        from: i64,
        to: i64,
        step_ms: i64,
        group_by: GroupBy,
        qs: &[f64],
    ) -> Result<Vec<Series>, LatencyError> {
        if step_ms < MINUTE || step_ms % MINUTE != 0 {
            return Err(LatencyError::Invalid(format!(
                "step of {step_ms} ms is not a whole number of minutes"
            )));
        }
        if to <= from {
            return Err(LatencyError::Invalid("`to` is not after `from`".into()));
        }
        let n = ((to - from) + step_ms - 1) / step_ms;
        if n > 100_000 {
            return Err(LatencyError::Invalid(format!(
                "{n} points asked; widen the step"
            )));
        }
        if let Some(q) = qs.iter().find(|q| !(0.0..=1.0).contains(*q)) {
            return Err(LatencyError::Invalid(format!(
                "quantile {q} is outside [0, 1]"
            )));
        }
        let comp = if group_by == GroupBy::Component {
            None
        } else {
            match self.comp_index.get(component) {
                Some(c) => Some(*c as usize),
                None if self.comps.is_empty() => Some(0),
                None => return Ok(Vec::new()),
            }
        };
        let labels: Vec<Option<String>> = self
            .keys
            .iter()
            .map(|k| filter.matches(k).then(|| group_by.label(k)))
            .collect();
        #[derive(Default)]
        struct Acc {
            sketch: Option<Sketch>,
            decisions: u64,
            fallbacks: u64,
            exemplars: Vec<Exemplar>,
        }
        let mut groups: BTreeMap<String, Vec<Acc>> = BTreeMap::new();
        let n = n as usize;
        let exemplars = self.config.exemplars;
        for (t, bucket) in self.buckets(from, to) {
            let i = ((t.max(from) - from) / step_ms) as usize;
            for (k, cell) in bucket.cells.iter().enumerate() {
                let (Some(cell), Some(Some(label))) = (cell, labels.get(k)) else {
                    continue;
                };
                let mut add = |label: &str, slot: &Slot, total: bool| {
                    let accs = groups
                        .entry(label.to_string())
                        .or_insert_with(|| (0..n).map(|_| Acc::default()).collect());
                    let acc = &mut accs[i];
                    let view = slot.view();
                    let samples = view.count();
                    match &mut acc.sketch {
                        Some(s) => s.merge(&view),
                        None => acc.sketch = Some(view.into_owned()),
                    }
                    if total {
                        acc.decisions += cell.decisions;
                        acc.fallbacks += cell.fallbacks;
                        for e in &cell.exemplars {
                            keep_slowest(&mut acc.exemplars, e.clone(), exemplars);
                        }
                    } else {
                        acc.decisions += samples;
                    }
                };
                match comp {
                    Some(c) => {
                        if let Some(Some(slot)) = cell.slots.get(c) {
                            add(label, slot, c == 0);
                        }
                    }
                    None => {
                        for (c, slot) in cell.slots.iter().enumerate() {
                            if let (Some(slot), Some(name)) = (slot, self.comps.get(c)) {
                                add(name, slot, c == 0);
                            }
                        }
                    }
                }
            }
        }
        Ok(groups
            .into_iter()
            .map(|(group, accs)| Series {
                group,
                points: accs
                    .into_iter()
                    .enumerate()
                    .map(|(i, a)| {
                        let s = a.sketch.unwrap_or_default();
                        Point {
                            t_ms: from + i as i64 * step_ms,
                            count: s.count(),
                            decisions: a.decisions,
                            fallbacks: a.fallbacks,
                            mean_ms: s.mean(),
                            quantiles: qs.iter().map(|q| s.quantile(*q)).collect(),
                            max_ms: s.max(),
                            exemplars: a.exemplars,
                        }
                    })
                    .collect(),
            })
            .collect())
    }

    /// The whole sketch of `component` over `[from, to)` for `filter` (for thresholds of
    /// tail attribution and for one-number summaries).
    pub fn sketch(&self, filter: &Filter, component: &str, from: i64, to: i64) -> Sketch {
        let mut out = Sketch::new();
        let Some(&c) = self.comp_index.get(component) else {
            return out;
        };
        let mask: Vec<bool> = self.keys.iter().map(|k| filter.matches(k)).collect();
        for (_, bucket) in self.buckets(from, to) {
            for (k, cell) in bucket.cells.iter().enumerate() {
                if let (Some(cell), true) = (cell, mask[k])
                    && let Some(Some(slot)) = cell.slots.get(c as usize)
                {
                    out.merge(&slot.view());
                }
            }
        }
        out
    }
}

fn apply(cell: &mut Cell, o: &Observation<'_>, comps: &[(usize, f64)], cfg: &RollupConfig) {
    cell.decisions += 1;
    cell.fallbacks += u64::from(o.fallback);
    for &(c, ms) in comps {
        cell.slot(c).add(ms);
    }
    if let Some(total) = o.total_ms {
        if cell.over.len() < cfg.thresholds_ms.len() {
            cell.over.resize(cfg.thresholds_ms.len(), 0);
        }
        for (n, t) in cell.over.iter_mut().zip(&cfg.thresholds_ms) {
            *n += u64::from(total > *t);
        }
        if cfg.exemplars > 0
            && (cell.exemplars.len() < cfg.exemplars
                || cell.exemplars.last().is_some_and(|e| e.latency_ms < total))
        {
            keep_slowest(
                &mut cell.exemplars,
                Exemplar {
                    latency_ms: total,
                    request_id: o.request_id.into(),
                    trace_id: o.trace_id.map(Into::into),
                    time_ms: o.time_ms,
                },
                cfg.exemplars,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: i64 = 1_767_225_600_000;

    fn obs<'a>(
        t: i64,
        surface: &'a str,
        total: f64,
        comps: &'a [(CompactString, f64)],
    ) -> Observation<'a> {
        Observation {
            time_ms: t,
            surface,
            model_version: "v1",
            experiment: "exp",
            variant: "a",
            total_ms: Some(total),
            components: comps,
            fallback: total > 100.0,
            request_id: "r",
            trace_id: None,
        }
    }

    #[test]
    fn caps_send_new_keys_and_components_to_other() {
        let mut r = Rollups::new(RollupConfig {
            max_keys: 2,
            max_components: 1,
            ..RollupConfig::default()
        });
        let comps = vec![("a".into(), 1.0), ("b".into(), 2.0)];
        for s in ["s1", "s2", "s3", "s4"] {
            r.observe(&obs(T, s, 10.0, &comps), T);
        }
        let surfaces: Vec<&str> = r.keys().iter().map(|k| k.surface.as_str()).collect();
        assert_eq!(surfaces, vec!["s1", "s2", OTHER]);
        assert_eq!(r.components(), &["total", "a", OTHER]);
        // Two keys and four `b` components past the caps.
        assert_eq!(r.overflow(), 2 + 4);
        let w = r.window(&Filter::default(), T, T + MINUTE, None);
        assert_eq!(w.decisions, 4);
    }

    #[test]
    fn persisted_rows_load_back_to_the_same_counts() {
        let cfg = RollupConfig {
            thresholds_ms: vec![50.0],
            ..RollupConfig::default()
        };
        let mut r = Rollups::new(cfg.clone());
        let comps = vec![("inference".into(), 5.0)];
        for i in 0..100 {
            r.observe(&obs(T + i * 1000, "home", i as f64 * 2.0, &comps), T);
        }
        let rows = r.take_pending();
        assert!(r.take_pending().is_empty(), "taken once");
        let mut back = Rollups::new(cfg);
        back.load(&rows, T);
        let f = Filter::default();
        let (a, b) = (
            r.window(&f, T, T + 2 * MINUTE, Some(50.0)),
            back.window(&f, T, T + 2 * MINUTE, Some(50.0)),
        );
        assert_eq!(a, b);
        assert_eq!(a.over, 74, "totals 52..198 are over 50 ms");
        assert_eq!(a.fallbacks, 49);
        // A threshold declared later is answered from the sketch, within its 1%.
        let w = back.window(&f, T, T + 2 * MINUTE, Some(100.0));
        assert!((w.over as i64 - 49).abs() <= 1, "{}", w.over);
    }

    #[test]
    fn old_minutes_merge_into_hours_and_old_hours_go() {
        let mut r = Rollups::new(RollupConfig::default());
        let comps = Vec::new();
        for m in 0..120 {
            r.observe(&obs(T + m * MINUTE, "home", 10.0, &comps), T + 120 * MINUTE);
        }
        let all = |r: &Rollups| {
            r.window(&Filter::default(), T - HOUR, T + 3 * HOUR, None)
                .decisions
        };
        assert_eq!(all(&r), 120);
        // 26 h later every minute has become part of an hour; counts are unchanged.
        r.maintain(T + 28 * HOUR);
        assert!(r.minutes.buckets.is_empty());
        assert_eq!(r.hours.buckets.len(), 2);
        assert_eq!(all(&r), 120);
        // 30 days later they are gone from memory.
        r.maintain(T + 31 * 24 * HOUR);
        assert_eq!(all(&r), 0);
    }
}
