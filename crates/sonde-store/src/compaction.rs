//! Which files of a partition compaction merges, and in which groups. Pure policy; the
//! merging itself is in `files`.
//!
//! Each row should be rewritten as few times as possible: flushes write Arrow IPC files,
//! and while an hour is being written its IPC files are merged into Parquet files of about
//! [`FINAL_ROWS`] rows (fewer at low rates: [`Policy::min_files`] small files are enough),
//! which are final. When the hour closes, what is left (IPC files, small Parquet files) is
//! merged once more. At a sustained rate most rows are therefore encoded to Parquet once.

use crate::files::is_ipc;
use crate::manifest::FileEntry;

/// A Parquet file this large is final: merging it again would rewrite its rows for
/// little gain. Sized so a merge of about this many rows (plus the one file that crosses
/// it) keeps its key set at 2^19 buckets of 17 bytes (8.9 MB).
pub(crate) const FINAL_ROWS: u64 = 400_000;

/// Most rows merged into one file when an hour closes. It bounds the memory of the merge's
/// key set: 17 bytes a bucket, with buckets the next power of two above 8/7 of the rows, so
/// up to 917,504 rows take 2^20 buckets (17.8 MB); one million rows would take 2^21
/// (35.7 MB).
pub(crate) const MAX_ROWS: u64 = 900_000;

/// What makes a partition due.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Policy {
    /// An hour still being written merges its IPC files once it has this many, even if
    /// they hold fewer than [`FINAL_ROWS`] rows.
    pub min_files: usize,
    /// The hour is closed (no more flushes expected), or every partition is to be merged.
    pub closed: bool,
}

/// The groups of `files` (one partition's) to merge, each into one Parquet file.
pub(crate) fn plan(files: &[FileEntry], policy: Policy) -> Vec<Vec<FileEntry>> {
    let mut groups = Vec::new();
    if policy.closed {
        // Everything but final files, smallest first, up to MAX_ROWS per merge; a lone
        // IPC file is converted too, so closed hours hold Parquet only.
        let mut rest: Vec<FileEntry> = files
            .iter()
            .filter(|f| is_ipc(f) || f.rows < FINAL_ROWS)
            .cloned()
            .collect();
        rest.sort_by_key(|f| f.rows);
        let mut group: Vec<FileEntry> = Vec::new();
        let mut total = 0;
        for f in rest {
            if !group.is_empty() && total + f.rows > MAX_ROWS {
                groups.push(std::mem::take(&mut group));
                total = 0;
            }
            total += f.rows;
            group.push(f);
        }
        groups.push(group);
        groups.retain(|g| g.len() >= 2 || g.iter().any(is_ipc));
    } else {
        // IPC files in flush order, in groups that reach FINAL_ROWS; a last group that
        // does not is merged only once it has min_files files.
        let mut group: Vec<FileEntry> = Vec::new();
        let mut total = 0;
        for f in files.iter().filter(|f| is_ipc(f)) {
            total += f.rows;
            group.push(f.clone());
            if total >= FINAL_ROWS {
                groups.push(std::mem::take(&mut group));
                total = 0;
            }
        }
        if group.len() >= policy.min_files {
            groups.push(group);
        }
        groups.retain(|g| g.len() >= 2);
    }
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
    fn an_open_hour_merges_flushed_files_into_final_sized_groups() {
        // 25 flushes of 20k rows: one group of 20 (400k rows); the 5 left wait.
        let files: Vec<_> = (0..25).map(|i| file(i, "arrow", 20_000)).collect();
        let groups = plan(&files, OPEN);
        assert_eq!(groups.len(), 1);
        assert_eq!(groups[0].len(), 20);
        assert_eq!(groups[0].iter().map(|f| f.rows).sum::<u64>(), FINAL_ROWS);
        // Parquet files of an open hour are left alone, however small.
        let mut files: Vec<_> = (0..7).map(|i| file(i, "arrow", 100)).collect();
        files.push(file(7, "parquet", 800));
        assert!(plan(&files, OPEN).is_empty());
        // Eight small flushes are enough.
        files.push(file(8, "arrow", 100));
        assert_eq!(
            seqs(&plan(&files, OPEN)),
            vec![
                (0..7)
                    .chain([8])
                    .map(|i| format!("{i:012}.arrow"))
                    .collect::<Vec<_>>()
            ]
        );
    }

    #[test]
    fn a_closed_hour_merges_all_but_final_files_and_converts_a_lone_flush() {
        let files = vec![
            file(1, "parquet", FINAL_ROWS),
            file(2, "parquet", 160_000),
            file(3, "arrow", 10_000),
        ];
        assert_eq!(
            seqs(&plan(&files, CLOSED)),
            vec![vec!["000000000003.arrow", "000000000002.parquet"]]
        );
        assert_eq!(
            seqs(&plan(&[file(4, "arrow", 5)], CLOSED)),
            vec![vec!["000000000004.arrow"]]
        );
        assert!(plan(&[file(5, "parquet", 5)], CLOSED).is_empty());
        assert!(
            plan(
                &[
                    file(1, "parquet", FINAL_ROWS),
                    file(6, "parquet", FINAL_ROWS)
                ],
                CLOSED
            )
            .is_empty()
        );
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
    }
}
