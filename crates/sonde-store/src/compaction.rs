//! Which files of a partition compaction merges, and in which groups. Pure policy; the
//! merging itself is in `files`.
//!
//! While an hour is being written, its flushed (IPC) files are merged once
//! [`Policy::min_files`] of them are waiting, so each row is rewritten once while its hour
//! is open; when the hour closes, every file is merged (smallest first, up to [`MAX_ROWS`]
//! rows per file) and a lone IPC file is converted, so closed hours hold only Parquet.
//!
//! Tried: merging an open hour's flushes into final files of 400,000 rows, never merged
//! again, so a row is Parquet-encoded once at a sustained rate. Each merge then ran 2.5x
//! longer without checking whether flushes were falling behind, compaction took 2.4x the
//! CPU inside a 60 s ingest run, and the half-rate ack p99 was 21.9-33.0 ms against
//! 17.1 ms. Worth revisiting with merges that pause for the flusher.

use crate::files::is_ipc;
use crate::manifest::FileEntry;

/// Most rows merged into one file. It bounds the memory of the merge's key set: 17 bytes a
/// bucket, with buckets the next power of two above 8/7 of the rows, so up to 917,504 rows
/// take 2^20 buckets (17.8 MB); one million rows would take 2^21 (35.7 MB).
pub(crate) const MAX_ROWS: u64 = 900_000;

/// What makes a partition due.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Policy {
    /// An hour still being written merges its IPC files once it has this many.
    pub min_files: usize,
    /// The hour is closed (no more flushes expected), or every partition is to be merged.
    pub closed: bool,
}

/// The groups of `files` (one partition's) to merge, each into one Parquet file.
pub(crate) fn plan(files: &[FileEntry], policy: Policy) -> Vec<Vec<FileEntry>> {
    let mut candidates: Vec<FileEntry> = files
        .iter()
        .filter(|f| policy.closed || is_ipc(f))
        .cloned()
        .collect();
    candidates.sort_by_key(|f| f.rows);
    let mut groups = Vec::new();
    let mut group: Vec<FileEntry> = Vec::new();
    let mut total = 0;
    for f in candidates {
        if !group.is_empty() && total + f.rows > MAX_ROWS {
            groups.push(std::mem::take(&mut group));
            total = 0;
        }
        total += f.rows;
        group.push(f);
    }
    groups.push(group);
    groups.retain(|g| {
        g.len() >= policy.min_files || (policy.closed && (g.len() >= 2 || g.iter().any(is_ipc)))
    });
    groups
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(seq: u32, ext: &str, rows: u64) -> FileEntry {
        FileEntry {
            table: "decisions".into(),
            hour: 0,
            path: format!("tables/decisions/hour=x/part-{seq:012}.{ext}"),
            rows,
            bytes: rows * 500,
        }
    }

    fn seqs(groups: &[Vec<FileEntry>]) -> Vec<Vec<String>> {
        groups
            .iter()
            .map(|g| g.iter().map(|f| f.path[29..].to_string()).collect())
            .collect()
    }

    const OPEN: Policy = Policy {
        min_files: 8,
        closed: false,
    };
    const CLOSED: Policy = Policy {
        min_files: 8,
        closed: true,
    };

    #[test]
    fn an_open_hour_merges_its_flushed_files_once_enough_wait() {
        let mut files: Vec<_> = (0..7).map(|i| file(i, "arrow", 20_000)).collect();
        files.push(file(7, "parquet", 160_000));
        assert!(plan(&files, OPEN).is_empty());
        files.push(file(8, "arrow", 100));
        // Smallest first; the merged Parquet file stays out while the hour is open.
        let groups = seqs(&plan(&files, OPEN));
        assert_eq!(groups.len(), 1);
        assert_eq!(groups[0][0], "000000000008.arrow");
        assert_eq!(groups[0].len(), 8);
        assert!(groups[0].iter().all(|p| p.ends_with(".arrow")));
    }

    #[test]
    fn a_closed_hour_merges_everything_and_converts_a_lone_flush() {
        let files = vec![
            file(1, "parquet", 400_000),
            file(2, "parquet", 160_000),
            file(3, "arrow", 10_000),
        ];
        assert_eq!(
            seqs(&plan(&files, CLOSED)),
            vec![vec![
                "000000000003.arrow",
                "000000000002.parquet",
                "000000000001.parquet"
            ]]
        );
        assert_eq!(
            seqs(&plan(&[file(4, "arrow", 5)], CLOSED)),
            vec![vec!["000000000004.arrow"]]
        );
        assert!(plan(&[file(5, "parquet", 5)], CLOSED).is_empty());
    }

    #[test]
    fn a_closed_hour_splits_merges_at_the_row_cap() {
        // 30 IPC files of 50k rows: 1.5M rows in merges of at most 900k.
        let files: Vec<_> = (0..30).map(|i| file(i, "arrow", 50_000)).collect();
        let groups = plan(&files, CLOSED);
        let sizes: Vec<u64> = groups
            .iter()
            .map(|g| g.iter().map(|f| f.rows).sum())
            .collect();
        assert_eq!(sizes, vec![900_000, 600_000]);
        // Two Parquet files that do not fit in one merge stay as they are.
        assert!(
            plan(
                &[file(1, "parquet", 500_000), file(2, "parquet", 500_000)],
                CLOSED
            )
            .is_empty()
        );
    }
}
