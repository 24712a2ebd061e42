//! The queryable tables: their Arrow schemas and how events become rows.
//! Every column is documented in `docs/tables.md`.

use std::iter::repeat_n;
use std::sync::{Arc, LazyLock};

use datafusion::arrow::array::{
    ArrayRef, BinaryBuilder, BooleanBuilder, Float64Builder, ListBuilder, MapBuilder,
    MapFieldNames, StringBuilder, TimestampMillisecondBuilder, UInt32Builder, UInt64Builder,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::arrow::record_batch::RecordBatch;
use sonde_latency::RollupRow;
use sonde_model::{Event, EventBody, EventData, Meta};

use crate::StoreError;
use crate::codec::{QuarantineEntry, ReplayEntry, SpanRecord};

/// The tables of the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Table {
    Decisions,
    DecisionItems,
    Interactions,
    Conversions,
    Touches,
    Identities,
    Exposures,
    Quarantine,
    QuarantineReplays,
    Rollups1m,
    Spans,
}

impl Table {
    /// Every table, in a fixed order.
    pub const ALL: [Table; 11] = [
        Table::Decisions,
        Table::DecisionItems,
        Table::Interactions,
        Table::Conversions,
        Table::Touches,
        Table::Identities,
        Table::Exposures,
        Table::Quarantine,
        Table::QuarantineReplays,
        Table::Rollups1m,
        Table::Spans,
    ];

    /// SQL name of the table.
    pub fn name(self) -> &'static str {
        match self {
            Table::Decisions => "decisions",
            Table::DecisionItems => "decision_items",
            Table::Interactions => "interactions",
            Table::Conversions => "conversions",
            Table::Touches => "touches",
            Table::Identities => "identities",
            Table::Exposures => "exposures",
            Table::Quarantine => "quarantine",
            Table::QuarantineReplays => "quarantine_replays",
            Table::Rollups1m => "rollups_1m",
            Table::Spans => "spans",
        }
    }

    /// Look a table up by SQL name.
    pub fn from_name(s: &str) -> Option<Table> {
        Table::ALL.into_iter().find(|t| t.name() == s)
    }

    /// Arrow schema of the table.
    pub fn schema(self) -> SchemaRef {
        SCHEMAS[self as usize].clone()
    }

    /// Name of the event-time column used for hourly partitioning.
    pub fn time_column(self) -> &'static str {
        match self {
            Table::Quarantine => "received_at",
            Table::QuarantineReplays => "replayed_at",
            Table::Rollups1m => "minute",
            _ => "event_time",
        }
    }
}

#[derive(Clone, Copy)]
enum Kind {
    Str,
    F64,
    Bool,
    Ts,
    U32,
    U64,
    Bin,
    MapStr,
    MapF64,
    ListStr,
}

fn ts() -> DataType {
    DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()))
}

fn map_type(value: DataType) -> DataType {
    let entries = Field::new(
        "entries",
        DataType::Struct(
            vec![
                Field::new("keys", DataType::Utf8, false),
                Field::new("values", value, true),
            ]
            .into(),
        ),
        false,
    );
    DataType::Map(Arc::new(entries), false)
}

fn data_type(k: Kind) -> DataType {
    match k {
        Kind::Str => DataType::Utf8,
        Kind::F64 => DataType::Float64,
        Kind::Bool => DataType::Boolean,
        Kind::Ts => ts(),
        Kind::U32 => DataType::UInt32,
        Kind::U64 => DataType::UInt64,
        Kind::Bin => DataType::Binary,
        Kind::MapStr => map_type(DataType::Utf8),
        Kind::MapF64 => map_type(DataType::Float64),
        Kind::ListStr => DataType::List(Arc::new(Field::new("item", DataType::Utf8, true))),
    }
}

use Kind::*;

/// Columns every event table but `decision_items` starts with, in order (see `RowBuilder::common`).
const COMMON: &[(&str, Kind, bool)] = &[
    ("event_id", Str, false),
    ("event_time", Ts, false),
    ("client_time", Ts, false),
    ("sent_at", Ts, true),
    ("received_at", Ts, false),
    ("is_future", Bool, false),
    ("is_late", Bool, false),
    ("is_backfill", Bool, false),
    ("user_key", Str, true),
    ("anonymous_key", Str, true),
    ("session_key", Str, true),
    ("key_id", Str, false),
    ("device", Str, true),
    ("os", Str, true),
    ("region", Str, true),
    ("locale", Str, true),
    ("app_version", Str, true),
    ("context_channel", Str, true),
    ("context_extra", Str, true),
];

/// The subset of [`COMMON`] repeated on every `decision_items` row (see `RowBuilder::item_common`):
/// keys for joins and segments, not the full context, to keep the widest table lean.
const ITEM_COMMON: &[(&str, Kind, bool)] = &[
    ("event_id", Str, false),
    ("event_time", Ts, false),
    ("received_at", Ts, false),
    ("user_key", Str, true),
    ("anonymous_key", Str, true),
    ("session_key", Str, true),
    ("device", Str, true),
    ("region", Str, true),
];

fn own_columns(t: Table) -> &'static [(&'static str, Kind, bool)] {
    match t {
        Table::Decisions => &[
            ("request_id", Str, false),
            ("trace_id", Str, true),
            ("surface", Str, false),
            ("model_name", Str, false),
            ("model_version", Str, false),
            ("experiments", MapStr, false),
            ("flags", Str, true),
            ("item_count", U32, false),
            ("slate_propensity", F64, true),
            ("latency_total_ms", F64, true),
            ("latency_components", MapF64, false),
            ("fallback", Bool, false),
            ("features", Str, true),
        ],
        Table::DecisionItems => &[
            ("request_id", Str, false),
            ("surface", Str, false),
            ("model_name", Str, false),
            ("model_version", Str, false),
            ("experiments", MapStr, false),
            ("fallback", Bool, false),
            ("position", U32, false),
            ("item_id", Str, false),
            ("score", F64, true),
            ("propensity", F64, true),
            ("category", Str, true),
            ("provider", Str, true),
            ("attributes", Str, true),
        ],
        Table::Interactions => &[
            ("request_id", Str, false),
            ("item_id", Str, false),
            ("action", Str, false),
            ("value", F64, true),
        ],
        Table::Conversions => &[
            ("name", Str, false),
            ("value", F64, true),
            ("currency", Str, true),
            ("items", ListStr, false),
            ("request_id", Str, true),
        ],
        Table::Touches => &[("channel", Str, false), ("campaign", Str, true)],
        Table::Identities => &[],
        Table::Exposures => &[("experiment", Str, false), ("variant", Str, false)],
        Table::Quarantine | Table::QuarantineReplays | Table::Rollups1m | Table::Spans => &[],
    }
}

const QUARANTINE: &[(&str, Kind, bool)] = &[
    ("quarantine_id", Str, false),
    ("received_at", Ts, false),
    ("event_id", Str, true),
    ("code", Str, false),
    ("field", Str, false),
    ("message", Str, false),
    ("raw", Str, false),
    ("key_id", Str, false),
];

const REPLAYS: &[(&str, Kind, bool)] = &[
    ("quarantine_id", Str, false),
    ("replayed_at", Ts, false),
    ("outcome", Str, false),
    ("code", Str, true),
];

/// `rollups_1m`: one row per minute, key and component, as observed between two flushes
/// (a minute can have several rows; sum counts, merge sketches).
const ROLLUPS: &[(&str, Kind, bool)] = &[
    ("minute", Ts, false),
    ("surface", Str, false),
    ("model_version", Str, false),
    ("experiment", Str, false),
    ("variant", Str, false),
    ("component", Str, false),
    ("decisions", U64, true),
    ("fallbacks", U64, true),
    ("samples", U64, false),
    ("sum_ms", F64, false),
    ("min_ms", F64, true),
    ("max_ms", F64, true),
    ("p50_ms", F64, true),
    ("p99_ms", F64, true),
    ("over_ms", MapF64, false),
    ("exemplars", Str, true),
    ("sketch", Bin, false),
];

/// `spans`: OpenTelemetry spans received at `POST /v1/traces`.
const SPANS: &[(&str, Kind, bool)] = &[
    ("event_id", Str, false),
    ("event_time", Ts, false),
    ("received_at", Ts, false),
    ("trace_id", Str, false),
    ("span_id", Str, false),
    ("parent_span_id", Str, true),
    ("name", Str, false),
    ("kind", Str, false),
    ("start_time", Ts, false),
    ("end_time", Ts, false),
    ("duration_ms", F64, false),
    ("status_code", Str, false),
    ("status_message", Str, true),
    ("service_name", Str, true),
    ("scope_name", Str, true),
    ("request_id", Str, true),
    ("component", Str, true),
    ("surface", Str, true),
    ("model_version", Str, true),
    ("experiment", Str, true),
    ("variant", Str, true),
    ("attributes", Str, true),
    ("resource_attributes", Str, true),
];

fn columns(t: Table) -> Vec<(&'static str, Kind, bool)> {
    match t {
        Table::Spans => SPANS.to_vec(),
        Table::Rollups1m => ROLLUPS.to_vec(),
        Table::Quarantine => QUARANTINE.to_vec(),
        Table::QuarantineReplays => REPLAYS.to_vec(),
        Table::DecisionItems => ITEM_COMMON.iter().chain(own_columns(t)).copied().collect(),
        _ => COMMON.iter().chain(own_columns(t)).copied().collect(),
    }
}

static SCHEMAS: LazyLock<Vec<SchemaRef>> = LazyLock::new(|| {
    Table::ALL
        .iter()
        .map(|&t| {
            let fields: Vec<Field> = columns(t)
                .into_iter()
                .map(|(n, k, nullable)| Field::new(n, data_type(k), nullable))
                .collect();
            Arc::new(Schema::new(fields))
        })
        .collect()
});

enum Col {
    Str(StringBuilder),
    F64(Float64Builder),
    Bool(BooleanBuilder),
    Ts(TimestampMillisecondBuilder),
    U32(UInt32Builder),
    U64(UInt64Builder),
    Bin(BinaryBuilder),
    MapStr(MapBuilder<StringBuilder, StringBuilder>),
    MapF64(MapBuilder<StringBuilder, Float64Builder>),
    ListStr(ListBuilder<StringBuilder>),
}

fn map_names() -> MapFieldNames {
    MapFieldNames {
        entry: "entries".into(),
        key: "keys".into(),
        value: "values".into(),
    }
}

/// Arrow's own default builder capacity (items, and bytes of text).
const DEFAULT_CAPACITY: usize = 1024;

impl Col {
    /// A builder for `rows` rows and, for text and binary columns, `bytes` of values.
    fn sized(k: Kind, rows: usize, bytes: usize) -> Col {
        match k {
            Str => Col::Str(StringBuilder::with_capacity(rows, bytes)),
            F64 => Col::F64(Float64Builder::with_capacity(rows)),
            Bool => Col::Bool(BooleanBuilder::with_capacity(rows)),
            Ts => Col::Ts(TimestampMillisecondBuilder::with_capacity(rows).with_timezone("UTC")),
            U32 => Col::U32(UInt32Builder::with_capacity(rows)),
            U64 => Col::U64(UInt64Builder::with_capacity(rows)),
            Bin => Col::Bin(BinaryBuilder::with_capacity(rows, bytes)),
            MapStr => Col::MapStr(MapBuilder::new(
                Some(map_names()),
                StringBuilder::new(),
                StringBuilder::new(),
            )),
            MapF64 => Col::MapF64(MapBuilder::new(
                Some(map_names()),
                StringBuilder::new(),
                Float64Builder::new(),
            )),
            ListStr => Col::ListStr(ListBuilder::new(StringBuilder::new())),
        }
    }

    /// Bytes of values held by a text or binary column (0 for the others).
    fn value_bytes(&self) -> usize {
        match self {
            Col::Str(b) => b.values_slice().len(),
            Col::Bin(b) => b.values_slice().len(),
            _ => 0,
        }
    }

    fn finish(&mut self) -> ArrayRef {
        match self {
            Col::Str(b) => Arc::new(b.finish()),
            Col::F64(b) => Arc::new(b.finish()),
            Col::Bool(b) => Arc::new(b.finish()),
            Col::Ts(b) => Arc::new(b.finish()),
            Col::U32(b) => Arc::new(b.finish()),
            Col::U64(b) => Arc::new(b.finish()),
            Col::Bin(b) => Arc::new(b.finish()),
            Col::MapStr(b) => Arc::new(b.finish()),
            Col::MapF64(b) => Arc::new(b.finish()),
            Col::ListStr(b) => Arc::new(b.finish()),
        }
    }
}

/// Row-by-row builder of one table's record batches. Values are pushed in column order;
/// a mismatch between a push and its column's type is a programming error caught by
/// `finish` (the schema check of `RecordBatch::try_new`).
pub struct RowBuilder {
    table: Table,
    cols: Vec<Col>,
    at: usize,
    rows: usize,
}

/// `$each` appends one value per row to the next column (a decision's item rows are filled
/// a column at a time: one type dispatch per column instead of one per value); `$one`
/// appends a single value through it.
macro_rules! push_fns {
    ($one:ident, $each:ident, $variant:ident, $t:ty) => {
        fn $each(&mut self, values: impl Iterator<Item = Option<$t>>) {
            if let Some(Col::$variant(b)) = self.cols.get_mut(self.at) {
                for v in values {
                    b.append_option(v);
                }
            }
            self.at += 1;
        }

        fn $one(&mut self, v: Option<$t>) {
            self.$each(std::iter::once(v));
        }
    };
    // Borrowed values (`str`, `[u8]`): the iterator's items need a named lifetime.
    ($one:ident, $each:ident, $variant:ident, ref $t:ty) => {
        fn $each<'v>(&mut self, values: impl Iterator<Item = Option<&'v $t>>) {
            if let Some(Col::$variant(b)) = self.cols.get_mut(self.at) {
                for v in values {
                    b.append_option(v);
                }
            }
            self.at += 1;
        }

        fn $one(&mut self, v: Option<&$t>) {
            self.$each(std::iter::once(v));
        }
    };
}

impl RowBuilder {
    /// An empty builder for `table`.
    pub fn new(table: Table) -> RowBuilder {
        RowBuilder {
            table,
            cols: columns(table)
                .into_iter()
                .map(|(_, k, _)| Col::sized(k, DEFAULT_CAPACITY, DEFAULT_CAPACITY))
                .collect(),
            at: 0,
            rows: 0,
        }
    }

    /// Rows pushed since the last `finish`.
    pub fn len(&self) -> usize {
        self.rows
    }

    /// Whether no rows are pending.
    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }

    push_fns!(f64, f64_each, F64, f64);
    push_fns!(bool, bool_each, Bool, bool);
    push_fns!(ts, ts_each, Ts, i64);
    push_fns!(u32, u32_each, U32, u32);
    push_fns!(u64, u64_each, U64, u64);
    push_fns!(bin, bin_each, Bin, ref [u8]);
    push_fns!(str, str_each, Str, ref str);

    /// The same map on `n` rows.
    fn map_str_n<'a>(&mut self, n: usize, pairs: impl Iterator<Item = (&'a str, &'a str)> + Clone) {
        if let Some(Col::MapStr(b)) = self.cols.get_mut(self.at) {
            for _ in 0..n {
                for (k, v) in pairs.clone() {
                    b.keys().append_value(k);
                    b.values().append_value(v);
                }
                let _ = b.append(true);
            }
        }
        self.at += 1;
    }

    fn map_str<'a>(&mut self, pairs: impl Iterator<Item = (&'a str, &'a str)> + Clone) {
        self.map_str_n(1, pairs);
    }

    fn map_f64<'a>(&mut self, pairs: impl Iterator<Item = (&'a str, f64)>) {
        if let Some(Col::MapF64(b)) = self.cols.get_mut(self.at) {
            for (k, v) in pairs {
                b.keys().append_value(k);
                b.values().append_value(v);
            }
            let _ = b.append(true);
        }
        self.at += 1;
    }

    fn list_str(&mut self, items: &[String]) {
        if let Some(Col::ListStr(b)) = self.cols.get_mut(self.at) {
            for s in items {
                b.values().append_value(s);
            }
            b.append(true);
        }
        self.at += 1;
    }

    /// Append a `rollups_1m` row.
    pub fn push_rollup(&mut self, r: &RollupRow) {
        let b = self;
        debug_assert_eq!(b.table, Table::Rollups1m);
        b.ts(Some(r.minute_ms));
        for v in [
            &r.key.surface,
            &r.key.model_version,
            &r.key.experiment,
            &r.key.variant,
            &r.component,
        ] {
            b.str(Some(v));
        }
        b.u64(r.decisions);
        b.u64(r.fallbacks);
        let s = &r.sketch;
        b.u64(Some(s.count()));
        b.f64(Some(s.sum()));
        b.f64(s.min());
        b.f64(s.max());
        b.f64(s.quantile(0.5));
        b.f64(s.quantile(0.99));
        let over: Vec<(String, f64)> = r
            .over
            .iter()
            .map(|(t, n)| (t.to_string(), *n as f64))
            .collect();
        b.map_f64(over.iter().map(|(t, n)| (t.as_str(), *n)));
        let exemplars = (!r.exemplars.is_empty())
            .then(|| serde_json::to_string(&r.exemplars).ok())
            .flatten();
        b.str(exemplars.as_deref());
        b.bin(Some(&s.encode()));
        b.end_row();
    }

    fn end_row(&mut self) {
        self.end_rows(1);
    }

    /// Close `n` rows whose columns were filled a column at a time.
    fn end_rows(&mut self, n: usize) {
        debug_assert_eq!(
            self.at,
            self.cols.len(),
            "row of {:?} incomplete",
            self.table
        );
        self.at = 0;
        self.rows += n;
    }

    fn common(&mut self, m: &Meta, d: &EventData) {
        self.str(Some(&d.event_id));
        self.ts(Some(m.event_time));
        self.ts(Some(d.timestamp));
        self.ts(m.sent_at);
        self.ts(Some(m.received_at));
        self.bool(Some(m.is_future));
        self.bool(Some(m.is_late));
        self.bool(Some(m.is_backfill));
        self.str(d.user_key.as_deref());
        self.str(d.anonymous_key.as_deref());
        self.str(d.session_key.as_deref());
        self.str(Some(&d.key_id));
        let c = &d.context;
        self.str(c.device.as_deref());
        self.str(c.os.as_deref());
        self.str(c.region.as_deref());
        self.str(c.locale.as_deref());
        self.str(c.app_version.as_deref());
        self.str(c.channel.as_deref());
        self.str(c.extra.as_deref());
    }

    /// The [`ITEM_COMMON`] columns of `n` item rows of one decision.
    fn item_common(&mut self, m: &Meta, d: &EventData, n: usize) {
        self.str_each(repeat_n(Some(d.event_id.as_str()), n));
        self.ts_each(repeat_n(Some(m.event_time), n));
        self.ts_each(repeat_n(Some(m.received_at), n));
        self.str_each(repeat_n(d.user_key.as_deref(), n));
        self.str_each(repeat_n(d.anonymous_key.as_deref(), n));
        self.str_each(repeat_n(d.session_key.as_deref(), n));
        self.str_each(repeat_n(d.context.device.as_deref(), n));
        self.str_each(repeat_n(d.context.region.as_deref(), n));
    }

    /// Build the record batch of the rows pushed so far and start over.
    /// Each column's builder starts over with the capacity this batch needed, so the next
    /// batch fills memory once instead of regrowing (and copying) from empty.
    pub fn finish(&mut self) -> Result<RecordBatch, StoreError> {
        let rows = self.rows;
        let arrays: Vec<ArrayRef> = self
            .cols
            .iter_mut()
            .zip(columns(self.table))
            .map(|(col, (_, kind, _))| {
                let bytes = col.value_bytes();
                let array = col.finish();
                *col = Col::sized(kind, rows, bytes);
                array
            })
            .collect();
        self.rows = 0;
        self.at = 0;
        Ok(RecordBatch::try_new(self.table.schema(), arrays)?)
    }
}

/// Builders for every table: where accepted events and quarantine records become rows.
pub struct TableBuilders {
    builders: Vec<RowBuilder>,
}

impl Default for TableBuilders {
    fn default() -> Self {
        TableBuilders {
            builders: Table::ALL.iter().map(|&t| RowBuilder::new(t)).collect(),
        }
    }
}

impl TableBuilders {
    /// The builder of `t`.
    pub fn get_mut(&mut self, t: Table) -> &mut RowBuilder {
        &mut self.builders[t as usize]
    }

    /// Append an accepted event to its table(s); a decision also adds one
    /// `decision_items` row per item. Returns the number of rows added.
    pub fn push_event(&mut self, e: &Event) -> usize {
        let (m, d) = (&e.meta, &e.data);
        match &d.body {
            EventBody::Decision(x) => {
                let b = self.get_mut(Table::Decisions);
                b.common(m, d);
                b.str(Some(&x.request_id));
                b.str(x.trace_id.as_deref());
                b.str(Some(&x.surface));
                b.str(Some(&x.model_name));
                b.str(Some(&x.model_version));
                b.map_str(x.experiments.iter().map(|(k, v)| (k.as_str(), v.as_str())));
                b.str(x.flags.as_deref());
                b.u32(Some(x.items.len() as u32));
                b.f64(x.slate_propensity);
                b.f64(x.latency_total_ms);
                b.map_f64(x.latency_components.iter().map(|(k, v)| (k.as_str(), *v)));
                b.bool(Some(x.fallback));
                b.str(x.features.as_deref());
                b.end_row();
                let b = self.get_mut(Table::DecisionItems);
                let (items, n) = (&x.items, x.items.len());
                b.item_common(m, d, n);
                b.str_each(repeat_n(Some(x.request_id.as_str()), n));
                b.str_each(repeat_n(Some(x.surface.as_str()), n));
                b.str_each(repeat_n(Some(x.model_name.as_str()), n));
                b.str_each(repeat_n(Some(x.model_version.as_str()), n));
                b.map_str_n(
                    n,
                    x.experiments.iter().map(|(k, v)| (k.as_str(), v.as_str())),
                );
                b.bool_each(repeat_n(Some(x.fallback), n));
                b.u32_each(items.iter().map(|it| Some(it.position)));
                b.str_each(items.iter().map(|it| Some(it.item_id.as_str())));
                b.f64_each(items.iter().map(|it| it.score));
                b.f64_each(items.iter().map(|it| it.propensity));
                b.str_each(items.iter().map(|it| it.category.as_deref()));
                b.str_each(items.iter().map(|it| it.provider.as_deref()));
                b.str_each(items.iter().map(|it| it.attributes.as_deref()));
                b.end_rows(n);
                1 + n
            }
            EventBody::Interaction(x) => {
                let b = self.get_mut(Table::Interactions);
                b.common(m, d);
                b.str(Some(&x.request_id));
                b.str(Some(&x.item_id));
                b.str(Some(&x.action));
                b.f64(x.value);
                b.end_row();
                1
            }
            EventBody::Conversion(x) => {
                let b = self.get_mut(Table::Conversions);
                b.common(m, d);
                b.str(Some(&x.name));
                b.f64(x.value);
                b.str(x.currency.as_deref());
                b.list_str(&x.items);
                b.str(x.request_id.as_deref());
                b.end_row();
                1
            }
            EventBody::Touch(x) => {
                let b = self.get_mut(Table::Touches);
                b.common(m, d);
                b.str(Some(&x.channel));
                b.str(x.campaign.as_deref());
                b.end_row();
                1
            }
            EventBody::Identify(_) => {
                let b = self.get_mut(Table::Identities);
                b.common(m, d);
                b.end_row();
                1
            }
            EventBody::Exposure(x) => {
                let b = self.get_mut(Table::Exposures);
                b.common(m, d);
                b.str(Some(&x.experiment));
                b.str(Some(&x.variant));
                b.end_row();
                1
            }
        }
    }

    /// Append a quarantined event.
    pub fn push_quarantine(&mut self, quarantine_id: &str, q: &QuarantineEntry) {
        let b = self.get_mut(Table::Quarantine);
        b.str(Some(quarantine_id));
        b.ts(Some(q.received_at));
        b.str(q.event_id.as_deref());
        b.str(Some(&q.code));
        b.str(Some(&q.field));
        b.str(Some(&q.message));
        b.str(Some(&q.raw));
        b.str(Some(&q.key_id));
        b.end_row();
    }

    /// Append a span.
    pub fn push_span(&mut self, sp: &SpanRecord) {
        let b = self.get_mut(Table::Spans);
        b.str(Some(&sp.id()));
        b.ts(Some(sp.start_ms()));
        b.ts(Some(sp.received_at));
        b.str(Some(&sp.trace_id));
        b.str(Some(&sp.span_id));
        b.str(sp.parent_span_id.as_deref());
        b.str(Some(&sp.name));
        b.str(Some(&sp.kind));
        b.ts(Some(sp.start_ms()));
        b.ts(Some((sp.end_unix_nano / 1_000_000) as i64));
        b.f64(Some(sp.duration_ms()));
        b.str(Some(&sp.status_code));
        for v in [
            &sp.status_message,
            &sp.service_name,
            &sp.scope_name,
            &sp.request_id,
            &sp.component,
            &sp.surface,
            &sp.model_version,
            &sp.experiment,
            &sp.variant,
            &sp.attributes,
            &sp.resource_attributes,
        ] {
            b.str(v.as_deref());
        }
        b.end_row();
    }

    /// Append a replay outcome.
    pub fn push_replay(&mut self, r: &ReplayEntry) {
        let b = self.get_mut(Table::QuarantineReplays);
        b.str(Some(&r.quarantine_id));
        b.ts(Some(r.replayed_at));
        b.str(Some(&r.outcome));
        b.str(r.code.as_deref());
        b.end_row();
    }
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::{AsArray, MapArray};
    use datafusion::arrow::datatypes::{Float64Type, UInt32Type};
    use sonde_model::{Limits, ParseCtx, RawIds, TimePolicy, parse_event};

    use super::*;

    fn column<'a>(b: &'a RecordBatch, name: &str) -> &'a ArrayRef {
        b.column_by_name(name).expect("column")
    }

    /// Item rows are filled a column at a time: every column must stay aligned with its
    /// decision, across decisions with different item counts, nulls and experiments.
    #[test]
    fn decision_items_rows_line_up_with_their_decisions() {
        let t0 = 1_790_000_000_000i64;
        let ctx = ParseCtx {
            policy: TimePolicy::default(),
            pseudonymizer: &RawIds,
            received_at: t0,
            backfill: false,
            limits: Limits::default(),
        };
        let raws = [
            format!(
                r#"{{"type":"decision","event_id":"d1","timestamp":{t0},"user_id":"u1","request_id":"r1","surface":"home","model":{{"name":"m","version":"v1"}},"experiments":[{{"id":"ab","variant":"b"}}],"items":[{{"item_id":"a","position":1,"score":0.5}},{{"item_id":"b","position":2}}]}}"#
            ),
            format!(
                r#"{{"type":"decision","event_id":"d2","timestamp":{t0},"anonymous_id":"x2","request_id":"r2","surface":"search","model":{{"name":"m","version":"v2"}},"items":[{{"item_id":"c","position":1,"attributes":{{"category":"shoes"}}}},{{"item_id":"d","position":2}},{{"item_id":"e","position":3,"score":0.1}}]}}"#
            ),
        ];
        let mut b = TableBuilders::default();
        for (raw, rows) in raws.iter().zip([3, 4]) {
            let e = parse_event(raw.as_bytes(), &ctx).expect("valid decision");
            assert_eq!(b.push_event(&e), rows);
        }
        let items = b.get_mut(Table::DecisionItems).finish().expect("batch");
        assert_eq!(items.num_rows(), 5);
        let strs = |name| -> Vec<Option<String>> {
            column(&items, name)
                .as_string::<i32>()
                .iter()
                .map(|v| v.map(str::to_string))
                .collect()
        };
        let s = |v: &[Option<&str>]| -> Vec<Option<String>> {
            v.iter().map(|x| x.map(str::to_string)).collect()
        };
        let (d1, d2) = (Some("d1"), Some("d2"));
        assert_eq!(strs("event_id"), s(&[d1, d1, d2, d2, d2]));
        assert_eq!(
            strs("request_id"),
            s(&[Some("r1"), Some("r1"), Some("r2"), Some("r2"), Some("r2")])
        );
        assert_eq!(
            strs("surface"),
            s(&[
                Some("home"),
                Some("home"),
                Some("search"),
                Some("search"),
                Some("search")
            ])
        );
        assert_eq!(
            strs("model_version"),
            s(&[Some("v1"), Some("v1"), Some("v2"), Some("v2"), Some("v2")])
        );
        assert_eq!(
            strs("user_key"),
            s(&[Some("u1"), Some("u1"), None, None, None])
        );
        assert_eq!(
            strs("anonymous_key"),
            s(&[None, None, Some("x2"), Some("x2"), Some("x2")])
        );
        assert_eq!(
            strs("item_id"),
            s(&[Some("a"), Some("b"), Some("c"), Some("d"), Some("e")])
        );
        assert_eq!(
            strs("category"),
            s(&[None, None, Some("shoes"), None, None])
        );
        let positions: Vec<u32> = column(&items, "position")
            .as_primitive::<UInt32Type>()
            .values()
            .to_vec();
        assert_eq!(positions, [1, 2, 1, 2, 3]);
        let scores: Vec<Option<f64>> = column(&items, "score")
            .as_primitive::<Float64Type>()
            .iter()
            .collect();
        assert_eq!(scores, [Some(0.5), None, None, None, Some(0.1)]);
        let experiments = column(&items, "experiments")
            .as_any()
            .downcast_ref::<MapArray>()
            .expect("map");
        let entries: Vec<usize> = (0..5)
            .map(|i| experiments.value_length(i) as usize)
            .collect();
        assert_eq!(entries, [1, 1, 0, 0, 0]);
    }
}
