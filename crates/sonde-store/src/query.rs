//! SQL over the store with DataFusion: each table is its committed Parquet files plus the
//! rows still in memory, read as one.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::catalog::Session;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{
    ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl,
};
use datafusion::datasource::{MemTable, TableProvider, TableType};
use datafusion::error::Result as DfResult;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown};
use datafusion::physical_plan::union::UnionExec;
use datafusion::physical_plan::{ExecutionPlan, SendableRecordBatchStream};
use datafusion::prelude::{SQLOptions, SessionConfig, SessionContext};
use futures::StreamExt;

use crate::StoreError;
use crate::manifest::Manifest;
use crate::tables::Table;

/// A consistent view of the store for one query: committed files and in-memory batches.
pub struct Snapshot {
    /// Absolute paths of each table's Parquet files.
    pub files: Vec<(Table, Vec<String>)>,
    /// Each table's rows not yet in committed files.
    pub mem: Vec<(Table, Vec<RecordBatch>)>,
}

impl Snapshot {
    /// Build the file part of a snapshot from a manifest.
    pub fn files_of(manifest: &Manifest, data_dir: &std::path::Path) -> Vec<(Table, Vec<String>)> {
        Table::ALL
            .iter()
            .map(|&t| {
                let paths = manifest
                    .files
                    .iter()
                    .filter(|f| f.table == t.name())
                    .map(|f| data_dir.join(&f.path).to_string_lossy().into_owned())
                    .collect();
                (t, paths)
            })
            .collect()
    }
}

/// One table as DataFusion sees it.
#[derive(Debug)]
struct StoreTable {
    schema: SchemaRef,
    files: Option<ListingTable>,
    mem: MemTable,
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
        // Parquet prunes with them; DataFusion still applies every filter above the scan.
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
        if let Some(files) = &self.files {
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

fn context(snapshot: Snapshot) -> Result<SessionContext, StoreError> {
    let config = SessionConfig::new()
        .with_information_schema(true)
        .with_default_catalog_and_schema("sonde", "public");
    let ctx = SessionContext::new_with_config(config);
    let mut mem = snapshot.mem;
    for (table, paths) in snapshot.files {
        let schema = table.schema();
        let batches = mem
            .iter_mut()
            .find(|(t, _)| *t == table)
            .map(|(_, b)| std::mem::take(b))
            .unwrap_or_default();
        let files = if paths.is_empty() {
            None
        } else {
            let urls = paths
                .iter()
                .map(ListingTableUrl::parse)
                .collect::<DfResult<Vec<_>>>()?;
            let options = ListingOptions::new(Arc::new(ParquetFormat::default()))
                .with_file_extension(".parquet");
            let config = ListingTableConfig::new_with_multi_paths(urls)
                .with_listing_options(options)
                .with_schema(schema.clone());
            Some(ListingTable::try_new(config)?)
        };
        let provider = StoreTable {
            mem: MemTable::try_new(schema.clone(), vec![batches])?,
            schema,
            files,
        };
        ctx.register_table(table.name(), Arc::new(provider))?;
    }
    Ok(ctx)
}

/// Plan read-only `sql` over `snapshot` and start it; DDL, DML and other statements are
/// refused. The context is returned to live as long as the stream.
async fn read_only(
    snapshot: Snapshot,
    sql: &str,
) -> Result<(SessionContext, SchemaRef, SendableRecordBatchStream), StoreError> {
    let ctx = context(snapshot)?;
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
        let (_ctx, _, mut stream) = read_only(snapshot, sql).await?;
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
        let (_ctx, schema, mut stream) = read_only(snapshot, sql).await?;
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
