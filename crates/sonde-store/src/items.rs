//! `decision_items`, one row per item shown, read from `decisions`: each decision's item
//! list columns are unnested and the decision's keys repeated beside them (the columns
//! and their sources are [`DECISION_ITEMS`]).
//!
//! Ingest writes each decision once, with its items as lists, instead of once per item:
//! the flat table's repeated keys cost about 30% of ingest CPU. A query reads only the
//! lists and keys it names, and filters on decision columns (the time range above all)
//! still prune files and row groups of `decisions`.

use std::fmt;
use std::iter::repeat_n;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, ListArray, RecordBatch, RecordBatchOptions, StringArray, UInt32Array,
};
use datafusion::arrow::compute::take;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::Session;
use datafusion::common::internal_datafusion_err;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::datasource::{TableProvider, TableType};
use datafusion::error::Result as DfResult;
use datafusion::execution::TaskContext;
use datafusion::logical_expr::expr_rewriter::unnormalize_col;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown};
use datafusion::physical_expr::EquivalenceProperties;
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    ChildrenPropertiesMode, DisplayAs, DisplayFormatType, ExecutionPlan, PhysicalExpr,
    PlanProperties, ReplaceChildrenOptions, SendableRecordBatchStream,
};
use futures::StreamExt;
use sonde_model::merge_attributes;

use crate::tables::{DECISION_ITEMS, ItemColumn, Table, decision_items_schema};

/// The `decision_items` table over a `decisions` provider.
#[derive(Debug)]
pub(crate) struct ItemsTable {
    decisions: Arc<dyn TableProvider>,
}

impl ItemsTable {
    pub(crate) fn new(decisions: Arc<dyn TableProvider>) -> ItemsTable {
        ItemsTable { decisions }
    }
}

/// Whether `name` is a `decision_items` column repeated from its decision.
fn is_decision_column(name: &str) -> bool {
    DECISION_ITEMS
        .iter()
        .any(|&(n, source)| n == name && source == ItemColumn::Decision)
}

#[async_trait]
impl TableProvider for ItemsTable {
    fn schema(&self) -> SchemaRef {
        decision_items_schema()
    }

    fn table_type(&self) -> TableType {
        TableType::View
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> DfResult<Vec<TableProviderFilterPushDown>> {
        // Those on decision columns prune `decisions`; all are applied again above.
        Ok(vec![TableProviderFilterPushDown::Inexact; filters.len()])
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        _limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let schema = decision_items_schema();
        let wanted: Vec<usize> = match projection {
            Some(p) => p.clone(),
            None => (0..schema.fields().len()).collect(),
        };
        let decisions = Table::Decisions.schema();
        // The `decisions` columns to read, and where each output column comes from in them.
        let mut read: Vec<usize> = Vec::new();
        let mut input_of = |name: &str| -> DfResult<usize> {
            let i = decisions.index_of(name)?;
            Ok(read.iter().position(|&r| r == i).unwrap_or_else(|| {
                read.push(i);
                read.len() - 1
            }))
        };
        let mut sources = Vec::with_capacity(wanted.len());
        let mut counts = None;
        for &i in &wanted {
            let (name, source) = DECISION_ITEMS
                .get(i)
                .ok_or_else(|| internal_datafusion_err!("decision_items has no column {i}"))?;
            sources.push(match source {
                ItemColumn::Decision => Source::Repeat(input_of(name)?),
                ItemColumn::List(list, _) => {
                    let at = input_of(list)?;
                    counts.get_or_insert(at);
                    Source::Elements(at)
                }
                ItemColumn::Attributes => {
                    let category = input_of("item_categories")?;
                    counts.get_or_insert(category);
                    Source::Attributes {
                        category,
                        provider: input_of("item_providers")?,
                        rest: input_of("item_attributes")?,
                    }
                }
            });
        }
        // Without an item column in the query, the positions still give the row count.
        let counts = match counts {
            Some(c) => c,
            None => input_of("item_positions")?,
        };
        let pushed: Vec<Expr> = filters
            .iter()
            .filter(|f| f.column_refs().iter().all(|c| is_decision_column(&c.name)))
            .map(|f| unnormalize_col(f.clone()))
            .collect();
        let input = self
            .decisions
            .scan(state, Some(&read), &pushed, None)
            .await?;
        Ok(Arc::new(ItemsExec::new(
            input,
            Arc::new(schema.project(&wanted)?),
            sources,
            counts,
        )))
    }
}

/// Where an output column of [`ItemsExec`] comes from in its input.
#[derive(Debug, Clone, Copy)]
enum Source {
    /// A decision column, repeated once per item.
    Repeat(usize),
    /// The elements of a list column.
    Elements(usize),
    /// Whole attributes objects, merged from the elements of three list columns.
    Attributes {
        category: usize,
        provider: usize,
        rest: usize,
    },
}

/// Expands each decision row of its input into one row per item.
#[derive(Debug, Clone)]
struct ItemsExec {
    input: Arc<dyn ExecutionPlan>,
    schema: SchemaRef,
    sources: Vec<Source>,
    /// The input list column whose lengths are the item counts.
    counts: usize,
    properties: Arc<PlanProperties>,
}

impl ItemsExec {
    fn new(
        input: Arc<dyn ExecutionPlan>,
        schema: SchemaRef,
        sources: Vec<Source>,
        counts: usize,
    ) -> ItemsExec {
        let properties = Arc::new(PlanProperties::new(
            EquivalenceProperties::new(schema.clone()),
            input.properties().partitioning.clone(),
            EmissionType::Incremental,
            Boundedness::Bounded,
        ));
        ItemsExec {
            input,
            schema,
            sources,
            counts,
            properties,
        }
    }
}

impl DisplayAs for ItemsExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "DecisionItemsExec")
    }
}

impl ExecutionPlan for ItemsExec {
    fn name(&self) -> &'static str {
        "DecisionItemsExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> DfResult<TreeNodeRecursion>,
    ) -> DfResult<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn replace_children(
        self: Arc<Self>,
        mut children: Vec<Arc<dyn ExecutionPlan>>,
        options: ReplaceChildrenOptions,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        if children.len() != 1 {
            return Err(internal_datafusion_err!(
                "DecisionItemsExec takes one input, got {}",
                children.len()
            ));
        }
        let input = children.swap_remove(0);
        Ok(Arc::new(match options.children_properties {
            ChildrenPropertiesMode::Keep => ItemsExec {
                input,
                ..(*self).clone()
            },
            ChildrenPropertiesMode::Recompute => ItemsExec::new(
                input,
                self.schema.clone(),
                self.sources.clone(),
                self.counts,
            ),
        }))
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        self.replace_children(
            children,
            ReplaceChildrenOptions::new(ChildrenPropertiesMode::Recompute),
        )
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> DfResult<SendableRecordBatchStream> {
        let (schema, sources, counts) = (self.schema.clone(), self.sources.clone(), self.counts);
        let rows = self
            .input
            .execute(partition, context)?
            .map(move |batch| expand(&batch?, &schema, &sources, counts));
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            self.schema.clone(),
            rows,
        )))
    }
}

/// The values of `list` for the items whose list offsets are `offsets` (another item list
/// of the same rows), or `None` when `list` does not line up with them: every item list of
/// a decision has one element per item. Offsets compare relative to each list's first, so
/// lists whose values start at different indexes still line up.
pub fn item_values(list: &ListArray, offsets: &[i32]) -> Option<ArrayRef> {
    let base = offsets.first().copied().unwrap_or(0);
    let items = (offsets.last().copied().unwrap_or(0) - base) as usize;
    let own = list.value_offsets();
    let own_base = own.first().copied().unwrap_or(0);
    let lined_up = own.len() == offsets.len()
        && own
            .iter()
            .zip(offsets)
            .all(|(a, b)| a - own_base == b - base);
    lined_up.then(|| list.values().slice(own_base as usize, items))
}

/// The elements of list column `i` of `batch` for its items ([`item_values`]).
fn elements(batch: &RecordBatch, i: usize, offsets: &[i32]) -> DfResult<ArrayRef> {
    let list = batch
        .column(i)
        .as_list_opt::<i32>()
        .ok_or_else(|| internal_datafusion_err!("item column {i} is not a list"))?;
    item_values(list, offsets).ok_or_else(|| {
        internal_datafusion_err!(
            "item list {} does not line up with the decision's items",
            batch.schema().field(i).name()
        )
    })
}

/// One row per list element of `batch`'s decisions.
fn expand(
    batch: &RecordBatch,
    schema: &SchemaRef,
    sources: &[Source],
    counts: usize,
) -> DfResult<RecordBatch> {
    let offsets = batch
        .column(counts)
        .as_list_opt::<i32>()
        .ok_or_else(|| internal_datafusion_err!("item counts are not a list"))?
        .value_offsets();
    let base = offsets.first().copied().unwrap_or(0);
    let items = (offsets.last().copied().unwrap_or(0) - base) as usize;
    // The decision row of each item, built only when a decision column is asked for.
    let decision_rows = sources
        .iter()
        .any(|s| matches!(s, Source::Repeat(_)))
        .then(|| {
            offsets
                .windows(2)
                .enumerate()
                .flat_map(|(row, w)| repeat_n(row as u32, (w[1] - w[0]) as usize))
                .collect::<UInt32Array>()
        });
    let mut columns = Vec::with_capacity(sources.len());
    for source in sources {
        columns.push(match *source {
            Source::Repeat(i) => {
                let rows = decision_rows
                    .as_ref()
                    .ok_or_else(|| internal_datafusion_err!("no decision rows"))?;
                take(batch.column(i), rows, None)?
            }
            Source::Elements(i) => elements(batch, i, offsets)?,
            Source::Attributes {
                category,
                provider,
                rest,
            } => {
                let [category, provider, rest] = [category, provider, rest].map(|i| {
                    let values = elements(batch, i, offsets)?;
                    values.as_string_opt::<i32>().cloned().ok_or_else(|| {
                        internal_datafusion_err!("item column {i} does not hold text")
                    })
                });
                let (category, provider, rest) = (category?, provider?, rest?);
                fn text(a: &StringArray, row: usize) -> Option<&str> {
                    a.is_valid(row).then(|| a.value(row))
                }
                Arc::new(
                    (0..items)
                        .map(|row| {
                            merge_attributes(
                                text(&category, row),
                                text(&provider, row),
                                text(&rest, row),
                            )
                        })
                        .collect::<StringArray>(),
                )
            }
        });
    }
    Ok(RecordBatch::try_new_with_options(
        schema.clone(),
        columns,
        &RecordBatchOptions::new().with_row_count(Some(items)),
    )?)
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::util::pretty::pretty_format_batches;
    use sonde_model::{Limits, ParseCtx, RawIds, TimePolicy, parse_event};

    use super::*;
    use crate::query::{QueryLimits, Snapshot, run};
    use crate::tables::TableBuilders;

    #[test]
    fn every_decision_items_column_has_a_source_in_decisions() {
        assert_eq!(decision_items_schema().fields().len(), DECISION_ITEMS.len());
    }

    /// Three decisions with different item counts, nulls and experiments, the last two in a
    /// sliced batch (list offsets not starting at zero).
    fn snapshot() -> Snapshot {
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
                r#"{{"type":"decision","event_id":"d0","timestamp":{t0},"request_id":"r0","anonymous_id":"x0","surface":"home","model":{{"name":"m","version":"v1"}},"items":[{{"item_id":"z","position":1}}]}}"#
            ),
            format!(
                r#"{{"type":"decision","event_id":"d2","timestamp":{t0},"anonymous_id":"x2","request_id":"r2","surface":"search","model":{{"name":"m","version":"v2"}},"items":[{{"item_id":"c","position":1,"attributes":{{"category":"shoes","size":42}}}},{{"item_id":"d","position":2}},{{"item_id":"e","position":3,"score":0.1,"attributes":{{"provider":"p9"}}}}]}}"#
            ),
        ];
        let mut b = TableBuilders::default();
        for raw in &raws {
            b.push_event(&parse_event(raw.as_bytes(), &ctx).expect("valid decision"));
        }
        let batch = b.get_mut(Table::Decisions).finish().expect("batch");
        Snapshot {
            files: Table::ALL.iter().map(|&t| (t, Vec::new())).collect(),
            mem: vec![(Table::Decisions, vec![batch.slice(0, 1), batch.slice(2, 1)])],
        }
    }

    async fn table(sql: &str) -> String {
        let r = run(snapshot(), sql, QueryLimits::default())
            .await
            .expect("query");
        pretty_format_batches(&r.batches)
            .expect("format")
            .to_string()
    }

    #[tokio::test]
    async fn items_line_up_with_their_decisions() {
        let got = table(
            "SELECT event_id, request_id, surface, model_version, user_key, anonymous_key, \
             experiments['ab'] AS ab, position, item_id, score, category \
             FROM decision_items ORDER BY event_id, position",
        )
        .await;
        let want = "\
+----------+------------+---------+---------------+----------+---------------+----+----------+---------+-------+----------+
| event_id | request_id | surface | model_version | user_key | anonymous_key | ab | position | item_id | score | category |
+----------+------------+---------+---------------+----------+---------------+----+----------+---------+-------+----------+
| d1       | r1         | home    | v1            | u1       |               | b  | 1        | a       | 0.5   |          |
| d1       | r1         | home    | v1            | u1       |               | b  | 2        | b       |       |          |
| d2       | r2         | search  | v2            |          | x2            |    | 1        | c       |       | shoes    |
| d2       | r2         | search  | v2            |          | x2            |    | 2        | d       |       |          |
| d2       | r2         | search  | v2            |          | x2            |    | 3        | e       | 0.1   |          |
+----------+------------+---------+---------------+----------+---------------+----+----------+---------+-------+----------+";
        assert_eq!(got, want);
    }

    #[tokio::test]
    async fn attributes_are_stored_split_and_read_whole() {
        let got = table(
            "SELECT item_id, category, provider, attributes FROM decision_items \
             WHERE event_id = 'd2' ORDER BY position",
        )
        .await;
        let want = "\
+---------+----------+----------+--------------------------------+
| item_id | category | provider | attributes                     |
+---------+----------+----------+--------------------------------+
| c       | shoes    |          | {\"category\":\"shoes\",\"size\":42} |
| d       |          |          |                                |
| e       |          | p9       | {\"provider\":\"p9\"}              |
+---------+----------+----------+--------------------------------+";
        assert_eq!(got, want);
        // Stored: the string category and provider once, in their own lists.
        let got = table("SELECT item_attributes FROM decisions WHERE event_id = 'd2'").await;
        assert!(
            got.contains(r#"{"size":42}"#) && !got.contains("shoes") && !got.contains("p9"),
            "{got}"
        );
    }

    #[tokio::test]
    async fn counts_filters_and_item_only_queries() {
        // Decision columns only: the row count still comes from the items.
        let got =
            table("SELECT count(*) AS n, count(DISTINCT event_id) AS d FROM decision_items").await;
        assert!(got.contains("| 5 | 2 |"), "{got}");
        // A filter on a decision column (pushed to `decisions`) and one on an item column.
        let got = table(
            "SELECT item_id FROM decision_items WHERE surface = 'search' AND score IS NOT NULL",
        )
        .await;
        assert!(
            got.contains("| e       |") && got.lines().count() == 5,
            "{got}"
        );
        // Item columns only.
        let got = table("SELECT sum(position) AS s FROM decision_items").await;
        assert!(got.contains("| 9 |"), "{got}");
    }
}
