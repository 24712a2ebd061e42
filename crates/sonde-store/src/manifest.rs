//! The manifest: the one list of table files that make up the store, and the WAL position
//! they cover. It is replaced atomically (write, fsync, rename, fsync directory), so a file
//! is part of the store exactly when the manifest names it.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::StoreError;

/// One file (Arrow IPC or Parquet, by extension) of one table and hour.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FileEntry {
    /// SQL table name.
    pub table: String,
    /// Hour partition (epoch hours of the table's time column).
    pub hour: i64,
    /// Path relative to the data directory.
    pub path: String,
    /// Row count.
    pub rows: u64,
    /// File size in bytes.
    pub bytes: u64,
}

/// The committed state of the file part of the store.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// Every WAL record with an LSN at or below this is in the files below.
    pub flushed_lsn: u64,
    /// Sequence number for the next file name.
    pub next_file_seq: u64,
    /// The files.
    pub files: Vec<FileEntry>,
}

const NAME: &str = "manifest.json";

impl Manifest {
    /// Load the manifest of `dir`, or an empty one if there is none yet.
    pub fn load(dir: &Path) -> Result<Manifest, StoreError> {
        let path = dir.join(NAME);
        match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| StoreError::Corrupt(format!("{}: {e}", path.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Manifest::default()),
            Err(e) => Err(StoreError::Io { path, source: e }),
        }
    }

    /// Atomically replace the manifest of `dir` with `self`.
    pub fn commit(&self, dir: &Path) -> Result<(), StoreError> {
        let path = dir.join(NAME);
        let tmp = dir.join("manifest.json.tmp");
        let io = |p: &PathBuf| {
            let p = p.clone();
            move |e| StoreError::Io { path: p, source: e }
        };
        let bytes = serde_json::to_vec_pretty(self)?;
        let mut f = File::create(&tmp).map_err(io(&tmp))?;
        f.write_all(&bytes).map_err(io(&tmp))?;
        f.sync_all().map_err(io(&tmp))?;
        fs::rename(&tmp, &path).map_err(io(&path))?;
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io(&dir.to_path_buf()))?;
        Ok(())
    }

    /// Total rows of `table` in files.
    pub fn rows(&self, table: &str) -> u64 {
        self.files
            .iter()
            .filter(|f| f.table == table)
            .map(|f| f.rows)
            .sum()
    }
}
