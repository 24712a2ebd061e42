//! The embedded event store of Sonde: exact dedup, a write-ahead log with group commit, an
//! in-memory Arrow buffer flushed to hourly partitions (Arrow IPC, compacted into Parquet)
//! under an atomic manifest,
//! compaction, and read-only SQL through Apache DataFusion.

pub mod codec;
mod compaction;
pub mod dedup;
mod files;
mod items;
mod live;
pub mod manifest;
mod priority;
pub use priority::latency_sensitive;
pub mod query;
pub mod receipts;
mod rollups;
mod store;
pub mod tables;

use std::path::PathBuf;
use std::time::Duration;

pub use codec::{QuarantineEntry, ReplayEntry, SpanRecord};
/// The Arrow version the store uses, for consumers of query results.
pub use datafusion::arrow;
pub use dedup::Seen;
pub use items::item_values;
pub use live::LiveSums;
pub use query::Snapshot;
pub use query::{QueryLimits, QueryResult};
pub use store::{Counters, Store, StoreConfig, WriteBatch, WriteOutcome, WriteTimings};
pub use tables::Table;

/// Store failures.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// File system error.
    #[error("I/O error on {path}: {source}")]
    Io {
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The write-ahead log failed.
    #[error(transparent)]
    Wal(#[from] sonde_wal::WalError),
    /// Data on disk is not what it should be.
    #[error("corrupt data: {0}")]
    Corrupt(String),
    /// A WAL record could not be decoded.
    #[error("bad WAL record: {0}")]
    Codec(String),
    /// JSON encoding or decoding failed.
    #[error("JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// Binary WAL record encoding or decoding failed.
    #[error("WAL record encoding: {0}")]
    Postcard(#[from] postcard::Error),
    /// Arrow failed.
    #[error("Arrow: {0}")]
    Arrow(#[from] datafusion::arrow::error::ArrowError),
    /// Parquet failed.
    #[error("Parquet: {0}")]
    Parquet(#[from] datafusion::parquet::errors::ParquetError),
    /// DataFusion failed while setting up a query.
    #[error("DataFusion: {0}")]
    DataFusion(#[from] datafusion::error::DataFusionError),
    /// The query was refused or failed: the message is meant for the user.
    #[error("{0}")]
    Query(String),
    /// The query ran past its time limit.
    #[error("query exceeded the time limit of {0:?}")]
    QueryTimeout(Duration),
    /// Too much is waiting to be written; retry later.
    #[error("the store is overloaded; retry later")]
    Overloaded,
    /// Storage cannot write (disk full, read-only file system, ...); retry later.
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    /// The store was opened read-only.
    #[error("the store is open read-only")]
    ReadOnly,
    /// The store is shutting down.
    #[error("the store is shutting down")]
    ShuttingDown,
    /// The directory holds no Sonde data.
    #[error("{0} holds no Sonde data (no manifest.json or wal/)")]
    NotAStore(PathBuf),
}

impl StoreError {
    fn from_query(e: datafusion::error::DataFusionError) -> StoreError {
        StoreError::Query(e.strip_backtrace())
    }
}
