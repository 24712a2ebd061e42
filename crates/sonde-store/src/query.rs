//! SQL over the store with DataFusion: each table is its committed files (Parquet, and
//! Arrow IPC from recent flushes) plus the rows still in memory, read as one.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::catalog::Session;
use datafusion::datasource::file_format::FileFormat as Reader;
use datafusion::datasource::file_format::arrow::ArrowFormat;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{
    ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl,
};
use datafusion::datasource::{MemTable, TableProvider, TableType};
use datafusion::error::Result as DfResult;
use datafusion::execution::runtime_env::RuntimeEnv;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown};
use datafusion::physical_plan::union::UnionExec;
use datafusion::physical_plan::{ExecutionPlan, SendableRecordBatchStream};
use datafusion::prelude::{SQLOptions, SessionConfig, SessionContext};
use futures::StreamExt;

use crate::StoreError;
use crate::files::FileFormat;
use crate::items::ItemsTable;
use crate::manifest::Manifest;
use crate::tables::Table;

/// A consistent view of the store for one query: committed files and in-memory batches.
#[derive(Clone)]
pub struct Snapshot {
    /// Each table's files: hour partition (epoch hours) and absolute path.
    pub files: Vec<(Table, Vec<(i64, String)>)>,
    /// Each table's rows not yet in committed files.
    pub mem: Vec<(Table, Vec<RecordBatch>)>,
}

impl Snapshot {
    /// Build the file part of a snapshot from a manifest.
    pub fn files_of(
        manifest: &Manifest,
        data_dir: &std::path::Path,
    ) -> Vec<(Table, Vec<(i64, String)>)> {
        Table::ALL
            .iter()
            .map(|&t| {
                let paths = manifest
                    .files
                    .iter()
                    .filter(|f| f.table == t.name())
                    .map(|f| {
                        (
                            f.hour,
                            data_dir.join(&f.path).to_string_lossy().into_owned(),
                        )
                    })
                    .collect();
                (t, paths)
            })
            .collect()
    }
}

/// One table as DataFusion sees it.
#[derive(Debug)]
struct StoreTable {
    table: Table,
    schema: SchemaRef,
    /// Hour partition and path of each committed file.
    files: Vec<(i64, String)>,
    mem: MemTable,
}

const HOUR_MS: i64 = 3_600_000;

impl StoreTable {
    /// The files whose hour can hold rows that pass `filters` on the table's time column,
    /// one listing per file format: a query over the last hour opens one hour of files, not
    /// the month.
    fn listings(&self, filters: &[Expr]) -> DfResult<Vec<ListingTable>> {
        let (lo, hi) = time_bounds(filters, self.table.time_column());
        let mut parquet = Vec::new();
        let mut ipc = Vec::new();
        for (_, path) in self.files.iter().filter(|(hour, _)| {
            lo.is_none_or(|lo| *hour >= lo.div_euclid(HOUR_MS))
                && hi.is_none_or(|hi| *hour <= hi.div_euclid(HOUR_MS))
        }) {
            match FileFormat::of(path) {
                Some(FileFormat::Ipc) => ipc.push(ListingTableUrl::parse(path)?),
                _ => parquet.push(ListingTableUrl::parse(path)?),
            }
        }
        [(FileFormat::Parquet, parquet), (FileFormat::Ipc, ipc)]
            .into_iter()
            .filter(|(_, urls)| !urls.is_empty())
            .map(|(format, urls)| {
                let reader: Arc<dyn Reader> = match format {
                    FileFormat::Parquet => Arc::new(ParquetFormat::default()),
                    FileFormat::Ipc => Arc::new(ArrowFormat),
                };
                let options = ListingOptions::new(reader)
                    .with_file_extension(format!(".{}", format.extension()));
                let config = ListingTableConfig::new_with_multi_paths(urls)
                    .with_listing_options(options)
                    .with_schema(self.schema.clone());
                ListingTable::try_new(config)
            })
            .collect()
    }
}

/// Epoch-ms bounds `[lo, hi]` on column `col` implied by `filters` (conjunctions of
/// comparisons of the column with timestamp literals, as they reach a scan after constant
/// folding). Conservative: a strict bound is taken as inclusive, anything else is ignored.
fn time_bounds(filters: &[Expr], col: &str) -> (Option<i64>, Option<i64>) {
    use datafusion::logical_expr::{BinaryExpr, Operator, utils::split_conjunction};
    let is_col = |e: &Expr| match e {
        Expr::Column(c) => c.name == col,
        Expr::Cast(c) => matches!(c.expr.as_ref(), Expr::Column(c) if c.name == col),
        Expr::TryCast(c) => matches!(c.expr.as_ref(), Expr::Column(c) if c.name == col),
        _ => false,
    };
    let (mut lo, mut hi): (Option<i64>, Option<i64>) = (None, None);
    let mut lower = |v: i64| lo = Some(lo.map_or(v, |l| l.max(v)));
    let mut upper = |v: i64| hi = Some(hi.map_or(v, |h| h.min(v)));
    for e in filters.iter().flat_map(|f| split_conjunction(f)) {
        match e {
            Expr::BinaryExpr(BinaryExpr { left, op, right }) => {
                let (op, v) = if is_col(left) {
                    (*op, literal_ms(right))
                } else if is_col(right) {
                    (op.swap().unwrap_or(*op), literal_ms(left))
                } else {
                    continue;
                };
                let Some(v) = v else { continue };
                match op {
                    Operator::Gt | Operator::GtEq => lower(v),
                    Operator::Lt | Operator::LtEq => upper(v),
                    Operator::Eq => {
                        lower(v);
                        upper(v);
                    }
                    _ => {}
                }
            }
            Expr::Between(b) if !b.negated && is_col(&b.expr) => {
                if let Some(v) = literal_ms(&b.low) {
                    lower(v);
                }
                if let Some(v) = literal_ms(&b.high) {
                    upper(v);
                }
            }
            _ => {}
        }
    }
    (lo, hi)
}

/// A timestamp literal as epoch milliseconds (rounded down).
fn literal_ms(e: &Expr) -> Option<i64> {
    use datafusion::common::ScalarValue as S;
    match e {
        Expr::Literal(v, _) => match v {
            S::TimestampSecond(Some(v), _) => v.checked_mul(1000),
            S::TimestampMillisecond(Some(v), _) => Some(*v),
            S::TimestampMicrosecond(Some(v), _) => Some(v.div_euclid(1000)),
            S::TimestampNanosecond(Some(v), _) => Some(v.div_euclid(1_000_000)),
            _ => None,
        },
        Expr::Cast(c) => literal_ms(&c.expr),
        _ => None,
    }
}

#[async_trait]
impl TableProvider for StoreTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> DfResult<Vec<TableProviderFilterPushDown>> {
        // Parquet prunes with them (IPC files are pruned by hour only); DataFusion still
        // applies every filter above the scan.
        Ok(vec![TableProviderFilterPushDown::Inexact; filters.len()])
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let mut inputs = vec![self.mem.scan(state, projection, &[], limit).await?];
        for files in self.listings(filters)? {
            inputs.push(files.scan(state, projection, filters, limit).await?);
        }
        UnionExec::try_new(inputs)
    }
}

/// Limits on one query.
#[derive(Debug, Clone, Copy)]
pub struct QueryLimits {
    /// Wall-clock limit.
    pub timeout: Duration,
    /// Most rows returned; more are cut and the result is marked truncated.
    pub max_rows: usize,
}

impl Default for QueryLimits {
    fn default() -> Self {
        QueryLimits {
            timeout: Duration::from_secs(30),
            max_rows: 100_000,
        }
    }
}

/// The result of a query.
#[derive(Debug)]
pub struct QueryResult {
    /// Output schema.
    pub schema: SchemaRef,
    /// Output rows.
    pub batches: Vec<RecordBatch>,
    /// Whether rows were cut at the row limit.
    pub truncated: bool,
}

/// One runtime for every query, so Parquet footers read once stay in its metadata cache
/// (files are immutable: a compaction writes new ones under new names).
fn runtime() -> Arc<RuntimeEnv> {
    static RUNTIME: OnceLock<Arc<RuntimeEnv>> = OnceLock::new();
    RUNTIME
        .get_or_init(|| Arc::new(RuntimeEnv::default()))
        .clone()
}

/// A context over `snapshot`; `one_partition` keeps each plan on one core (DataFusion's
/// default spreads it over all of them).
fn context(snapshot: Snapshot, one_partition: bool) -> Result<SessionContext, StoreError> {
    let mut config = SessionConfig::new()
        .with_information_schema(true)
        .with_default_catalog_and_schema("sonde", "public");
    if one_partition {
        config = config.with_target_partitions(1);
    }
    let ctx = SessionContext::new_with_config_rt(config, runtime());
    let mut mem = snapshot.mem;
    for (table, paths) in snapshot.files {
        let schema = table.schema();
        let batches = mem
            .iter_mut()
            .find(|(t, _)| *t == table)
            .map(|(_, b)| std::mem::take(b))
            .unwrap_or_default();
        let provider: Arc<dyn TableProvider> = Arc::new(StoreTable {
            table,
            mem: MemTable::try_new(schema.clone(), vec![batches])?,
            schema,
            files: paths,
        });
        if table == Table::Decisions {
            ctx.register_table(
                "decision_items",
                Arc::new(ItemsTable::new(provider.clone())),
            )?;
        }
        ctx.register_table(table.name(), provider)?;
    }
    Ok(ctx)
}

/// Plan read-only `sql` over `snapshot` and start it; DDL, DML and other statements are
/// refused. The context is returned to live as long as the stream.
async fn read_only(
    snapshot: Snapshot,
    sql: &str,
    one_partition: bool,
) -> Result<(SessionContext, SchemaRef, SendableRecordBatchStream), StoreError> {
    let ctx = context(snapshot, one_partition)?;
    let options = SQLOptions::new()
        .with_allow_ddl(false)
        .with_allow_dml(false)
        .with_allow_statements(false);
    let df = ctx
        .sql_with_options(sql, options)
        .await
        .map_err(StoreError::from_query)?;
    let schema: SchemaRef = Arc::new(df.schema().as_arrow().clone());
    let stream = df.execute_stream().await.map_err(StoreError::from_query)?;
    Ok((ctx, schema, stream))
}

/// Run read-only `sql` over `snapshot` and hand each output batch to `visit` as it is
/// produced, without a row limit: for analyses that reduce many rows (every decision of a
/// month) to a few numbers without holding them all.
pub async fn scan(
    snapshot: Snapshot,
    sql: &str,
    timeout: Duration,
    mut visit: impl FnMut(&RecordBatch) -> Result<(), StoreError> + Send,
) -> Result<(), StoreError> {
    let work = async {
        // Analyses run several at once (a dashboard page runs eight): splitting each over
        // the cores only adds repartitioning.
        let (_ctx, _, mut stream) = read_only(snapshot, sql, true).await?;
        while let Some(batch) = stream.next().await {
            visit(&batch.map_err(StoreError::from_query)?)?;
        }
        Ok(())
    };
    tokio::time::timeout(timeout, work)
        .await
        .map_err(|_| StoreError::QueryTimeout(timeout))?
}

/// Run read-only `sql` over `snapshot`, keeping at most `limits.max_rows` rows.
pub async fn run(
    snapshot: Snapshot,
    sql: &str,
    limits: QueryLimits,
) -> Result<QueryResult, StoreError> {
    let work = async {
        let (_ctx, schema, mut stream) = read_only(snapshot, sql, false).await?;
        let mut batches = Vec::new();
        let mut rows = 0usize;
        let mut truncated = false;
        while let Some(batch) = stream.next().await {
            let batch = batch.map_err(StoreError::from_query)?;
            let room = limits.max_rows - rows;
            if batch.num_rows() > room {
                batches.push(batch.slice(0, room));
                truncated = true;
                break;
            }
            rows += batch.num_rows();
            batches.push(batch);
        }
        Ok(QueryResult {
            schema,
            batches,
            truncated,
        })
    };
    tokio::time::timeout(limits.timeout, work)
        .await
        .map_err(|_| StoreError::QueryTimeout(limits.timeout))?
}

#[cfg(test)]
mod tests {
    use datafusion::common::ScalarValue;
    use datafusion::prelude::{cast, col, lit};

    use super::*;

    fn ts(ms: i64) -> Expr {
        lit(ScalarValue::TimestampMillisecond(
            Some(ms),
            Some("UTC".into()),
        ))
    }

    #[test]
    fn time_bounds_come_from_comparisons_with_literals_only() {
        let t = "event_time";
        // A window, one side written literal-first, the other in nanoseconds.
        let filters = [
            ts(7_200_000).lt_eq(col(t)),
            col(t).lt(lit(ScalarValue::TimestampNanosecond(
                Some(10_800_000_000_000),
                None,
            ))),
        ];
        assert_eq!(
            time_bounds(&filters, t),
            (Some(7_200_000), Some(10_800_000))
        );
        // Conjunctions split; the tighter bound wins; casts of the column are seen through.
        let f = cast(
            col(t),
            datafusion::arrow::datatypes::DataType::Timestamp(
                datafusion::arrow::datatypes::TimeUnit::Nanosecond,
                None,
            ),
        )
        .gt(ts(1_000))
        .and(col(t).gt_eq(ts(5_000)));
        assert_eq!(time_bounds(&[f], t), (Some(5_000), None));
        // BETWEEN and equality.
        assert_eq!(
            time_bounds(&[col(t).between(ts(1), ts(2))], t),
            (Some(1), Some(2))
        );
        assert_eq!(time_bounds(&[col(t).eq(ts(3))], t), (Some(3), Some(3)));
        // Another column, a column-to-column comparison, a disjunction: no bound.
        let none = [
            col("received_at").gt(ts(1)),
            col(t).gt(col("received_at")),
            col(t).gt(ts(1)).or(col(t).lt(ts(0))),
        ];
        assert_eq!(time_bounds(&none, t), (None, None));
    }
}
