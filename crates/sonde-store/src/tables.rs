//! The queryable tables: their Arrow schemas and how events become rows.
//! Every column is documented in `docs/tables.md`.

use std::sync::{Arc, LazyLock};

use datafusion::arrow::array::{
    ArrayBuilder, ArrayRef, BinaryBuilder, BooleanBuilder, Float64Builder, ListBuilder, MapBuilder,
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
    pub const ALL: [Table; 10] = [
        Table::Decisions,
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
    ListU32,
    ListF64,
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

/// A list as Arrow's `ListBuilder` makes it (element field "item", nullable).
fn list_of(value: DataType) -> DataType {
    DataType::List(Arc::new(Field::new("item", value, true)))
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
        Kind::ListStr => list_of(DataType::Utf8),
        Kind::ListU32 => list_of(DataType::UInt32),
        Kind::ListF64 => list_of(DataType::Float64),
    }
}

use Kind::*;

/// Columns every event table starts with, in order (see `RowBuilder::common`).
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

/// Where a column of `decision_items` comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ItemColumn {
    /// The decision's column of the same name, repeated on each of its item rows.
    Decision,
    /// The elements of this list column of `decisions`, one per item row; the flag says
    /// whether the column is nullable.
    List(&'static str, bool),
    /// The whole attributes object, merged from `item_categories`, `item_providers` and
    /// `item_attributes` (which leaves out string categories and providers).
    Attributes,
}

/// The columns of `decision_items`, in order. The table is not stored: it is read from
/// `decisions`, whose item list columns it unnests (see `crate::items`), so ingest builds
/// and writes each decision's keys once instead of once per item. Keys for joins and
/// segments are repeated, not the full context, to keep the widest table lean.
pub const DECISION_ITEMS: &[(&str, ItemColumn)] = &[
    ("event_id", ItemColumn::Decision),
    ("event_time", ItemColumn::Decision),
    ("received_at", ItemColumn::Decision),
    ("user_key", ItemColumn::Decision),
    ("anonymous_key", ItemColumn::Decision),
    ("session_key", ItemColumn::Decision),
    ("device", ItemColumn::Decision),
    ("region", ItemColumn::Decision),
    ("request_id", ItemColumn::Decision),
    ("surface", ItemColumn::Decision),
    ("model_name", ItemColumn::Decision),
    ("model_version", ItemColumn::Decision),
    ("experiments", ItemColumn::Decision),
    ("fallback", ItemColumn::Decision),
    ("position", ItemColumn::List("item_positions", false)),
    ("item_id", ItemColumn::List("item_ids", false)),
    ("score", ItemColumn::List("item_scores", true)),
    ("propensity", ItemColumn::List("item_propensities", true)),
    ("category", ItemColumn::List("item_categories", true)),
    ("provider", ItemColumn::List("item_providers", true)),
    ("attributes", ItemColumn::Attributes),
];

/// The Arrow schema of `decision_items`.
pub fn decision_items_schema() -> SchemaRef {
    static SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
        let decisions = Table::Decisions.schema();
        let fields: Vec<Field> = DECISION_ITEMS
            .iter()
            .filter_map(|&(name, source)| match source {
                ItemColumn::Decision => decisions.field_with_name(name).ok().cloned(),
                ItemColumn::List(list, nullable) => {
                    match decisions.field_with_name(list).ok()?.data_type() {
                        DataType::List(item) => {
                            Some(Field::new(name, item.data_type().clone(), nullable))
                        }
                        _ => None,
                    }
                }
                ItemColumn::Attributes => Some(Field::new(name, DataType::Utf8, true)),
            })
            .collect();
        Arc::new(Schema::new(fields))
    });
    SCHEMA.clone()
}

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
            // One element per item, in slate order: `decision_items` unnests them.
            // Nullable only so that files written before they existed still read.
            ("item_positions", ListU32, true),
            ("item_ids", ListStr, true),
            ("item_scores", ListF64, true),
            ("item_propensities", ListF64, true),
            ("item_categories", ListStr, true),
            ("item_providers", ListStr, true),
            ("item_attributes", ListStr, true),
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
    ListU32(ListBuilder<UInt32Builder>),
    ListF64(ListBuilder<Float64Builder>),
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
    /// A builder for `rows` rows, `size.0` list elements (list columns) and `size.1` bytes
    /// of text (text, binary and text list columns).
    fn sized(k: Kind, rows: usize, size: (usize, usize)) -> Col {
        let (elements, bytes) = size;
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
            ListStr => Col::ListStr(ListBuilder::with_capacity(
                StringBuilder::with_capacity(elements, bytes),
                rows,
            )),
            ListU32 => Col::ListU32(ListBuilder::with_capacity(
                UInt32Builder::with_capacity(elements),
                rows,
            )),
            ListF64 => Col::ListF64(ListBuilder::with_capacity(
                Float64Builder::with_capacity(elements),
                rows,
            )),
        }
    }

    /// List elements and bytes of text held, as [`Col::sized`] takes them.
    fn size(&self) -> (usize, usize) {
        match self {
            Col::Str(b) => (0, b.values_slice().len()),
            Col::Bin(b) => (0, b.values_slice().len()),
            Col::ListStr(b) => (b.values_ref().len(), b.values_ref().values_slice().len()),
            Col::ListU32(b) => (b.values_ref().len(), 0),
            Col::ListF64(b) => (b.values_ref().len(), 0),
            _ => (0, 0),
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
            Col::ListU32(b) => Arc::new(b.finish()),
            Col::ListF64(b) => Arc::new(b.finish()),
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

/// A push of one value (or null) into the next column.
macro_rules! push_fn {
    ($name:ident, $variant:ident, $t:ty) => {
        fn $name(&mut self, v: Option<$t>) {
            if let Some(Col::$variant(b)) = self.cols.get_mut(self.at) {
                b.append_option(v);
            }
            self.at += 1;
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
                .map(|(_, k, _)| {
                    Col::sized(k, DEFAULT_CAPACITY, (DEFAULT_CAPACITY, DEFAULT_CAPACITY))
                })
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

    push_fn!(f64, F64, f64);
    push_fn!(bool, Bool, bool);
    push_fn!(ts, Ts, i64);
    push_fn!(u32, U32, u32);
    push_fn!(u64, U64, u64);
    push_fn!(bin, Bin, &[u8]);
    push_fn!(str, Str, &str);

    fn map_str<'a>(&mut self, pairs: impl Iterator<Item = (&'a str, &'a str)>) {
        if let Some(Col::MapStr(b)) = self.cols.get_mut(self.at) {
            for (k, v) in pairs {
                b.keys().append_value(k);
                b.values().append_value(v);
            }
            let _ = b.append(true);
        }
        self.at += 1;
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

    /// One list value (a row) of a text list column.
    fn list_str<'v>(&mut self, values: impl Iterator<Item = Option<&'v str>>) {
        if let Some(Col::ListStr(b)) = self.cols.get_mut(self.at) {
            for v in values {
                b.values().append_option(v);
            }
            b.append(true);
        }
        self.at += 1;
    }

    /// One list value (a row) of a `UInt32` list column.
    fn list_u32(&mut self, values: impl Iterator<Item = u32>) {
        if let Some(Col::ListU32(b)) = self.cols.get_mut(self.at) {
            b.values().extend(values.map(Some));
            b.append(true);
        }
        self.at += 1;
    }

    /// One list value (a row) of a `Float64` list column.
    fn list_f64(&mut self, values: impl Iterator<Item = Option<f64>>) {
        if let Some(Col::ListF64(b)) = self.cols.get_mut(self.at) {
            b.values().extend(values);
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
        debug_assert_eq!(
            self.at,
            self.cols.len(),
            "row of {:?} incomplete",
            self.table
        );
        self.at = 0;
        self.rows += 1;
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
                let size = col.size();
                let array = col.finish();
                *col = Col::sized(kind, rows, size);
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

    /// Append an accepted event as a row of its table.
    pub fn push_event(&mut self, e: &Event) {
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
                let items = &x.items;
                b.list_u32(items.iter().map(|it| it.position));
                b.list_str(items.iter().map(|it| Some(it.item_id.as_str())));
                b.list_f64(items.iter().map(|it| it.score));
                b.list_f64(items.iter().map(|it| it.propensity));
                b.list_str(items.iter().map(|it| it.category.as_deref()));
                b.list_str(items.iter().map(|it| it.provider.as_deref()));
                b.list_str(items.iter().map(|it| it.attributes.as_deref()));
                b.end_row();
            }
            EventBody::Interaction(x) => {
                let b = self.get_mut(Table::Interactions);
                b.common(m, d);
                b.str(Some(&x.request_id));
                b.str(Some(&x.item_id));
                b.str(Some(&x.action));
                b.f64(x.value);
                b.end_row();
            }
            EventBody::Conversion(x) => {
                let b = self.get_mut(Table::Conversions);
                b.common(m, d);
                b.str(Some(&x.name));
                b.f64(x.value);
                b.str(x.currency.as_deref());
                b.list_str(x.items.iter().map(|s| Some(s.as_str())));
                b.str(x.request_id.as_deref());
                b.end_row();
            }
            EventBody::Touch(x) => {
                let b = self.get_mut(Table::Touches);
                b.common(m, d);
                b.str(Some(&x.channel));
                b.str(x.campaign.as_deref());
                b.end_row();
            }
            EventBody::Identify(_) => {
                let b = self.get_mut(Table::Identities);
                b.common(m, d);
                b.end_row();
            }
            EventBody::Exposure(x) => {
                let b = self.get_mut(Table::Exposures);
                b.common(m, d);
                b.str(Some(&x.experiment));
                b.str(Some(&x.variant));
                b.end_row();
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
