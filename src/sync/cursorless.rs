//! Rows without a readable cursor in the dated layout: no `createdAt` (`profileUpdatedAt`
//! for users), one that is no instant, or a line that is not JSON.
//!
//! They cannot be filed by day, so the writer files them in [`NO_CURSOR_PARTITION`]
//! whatever window read them, and no unit's commit replaces that partition (a unit replaces
//! the days it read, and nobody knows which day such a row belongs to). Instead a unit's
//! commit adds only the rows the partition does not hold yet, by identity (`_event_id`; for
//! `users`, which has none, every value but `_extracted_at`, so a profile that changed is a
//! new row as in the rest of the dated layout): of each identity, as many copies as the
//! read holds beyond the live ones. So any sequence of windows that reads a row again (the
//! settling window, units sized differently, a reset) keeps it once, and identical rows
//! (identical malformed lines share an `_event_id`) keep the most copies one read held.
//! The live rows are never rewritten: only their identities are read (and held as 128-bit
//! hashes), and a commit adds at most one small file. A full refresh replaces the partition
//! with the rest of the stream, and `incremental-deduped` files rows by key, not by day.

use std::collections::HashMap;

use arrow::array::{Array, ArrayRef, BooleanArray, RecordBatch};
use arrow::compute::filter_record_batch;
use arrow::error::ArrowError;
use arrow::row::{RowConverter, SortField};
use futures::TryStreamExt;
use xxhash_rust::xxh3::xxh3_128;

use super::StreamCtx;
use super::dedupe::{finish_or_abort, open};
use crate::convert::schema::{EVENT_ID, EXTRACTED_AT};
use crate::manifest::LiveFile;
use crate::sink::{NO_CURSOR_PARTITION, Partitioning, WrittenFile, is_cursorless};

/// Rows of a read filed in [`NO_CURSOR_PARTITION`]: all of them, and those new to the lake.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) struct CursorlessRows {
    pub read: u64,
    pub new: u64,
}

impl StreamCtx<'_> {
    /// The columns that tell rows without a cursor apart: `_event_id`, or none (all).
    fn identity(&self) -> Option<&'static str> {
        self.schema
            .arrow
            .field_with_name(EVENT_ID)
            .is_ok()
            .then_some(EVENT_ID)
    }

    /// `files` of a unit about to commit, with their rows in [`NO_CURSOR_PARTITION`] cut
    /// to those `live` does not hold (see the module's header): the files there are
    /// replaced by one file of the new rows, or none. Every file is deleted on an error.
    pub(super) async fn keep_new_cursorless(
        &self,
        files: Vec<WrittenFile>,
        live: &[LiveFile],
    ) -> Result<(Vec<WrittenFile>, CursorlessRows), String> {
        let (read, mut kept): (Vec<_>, Vec<_>) =
            files.into_iter().partition(|f| is_cursorless(&f.partition));
        let rows = CursorlessRows {
            read: read.iter().map(|f| f.rows).sum(),
            new: 0,
        };
        if read.is_empty() {
            return Ok((kept, rows));
        }
        let result = self.new_rows(&read, live).await;
        self.run.delete_files(&read).await;
        match result {
            Ok(new) => {
                let rows = CursorlessRows {
                    new: new.iter().map(|f| f.rows).sum(),
                    ..rows
                };
                kept.extend(new);
                Ok((kept, rows))
            }
            Err(e) => {
                self.run.delete_files(&kept).await;
                Err(e)
            }
        }
    }

    /// Writes the rows of `read` that `live` does not hold into a new file.
    async fn new_rows(
        &self,
        read: &[WrittenFile],
        live: &[LiveFile],
    ) -> Result<Vec<WrittenFile>, String> {
        let identity = self.identity();
        let mut held: HashMap<u128, u64> = HashMap::new();
        // The dated layout's own partition: a snapshot's (`full-refresh-append`, which the
        // first incremental commit retires) holds nothing this commit may count on.
        let folder = format!("{}/{NO_CURSOR_PARTITION}/", self.stream.name);
        for f in live.iter().filter(|f| f.file.path.starts_with(&folder)) {
            let columns = identity.map(|c| [c]);
            let mut batches =
                open(&self.run.lake, &f.file, columns.as_ref().map(|c| &c[..])).await?;
            while let Some(batch) = batches
                .try_next()
                .await
                .map_err(|e| format!("reading {}: {e}", f.file.path))?
            {
                let ids = identities(&batch, identity)
                    .map_err(|e| format!("reading {}: {e}", f.file.path))?;
                for id in ids {
                    *held.entry(id).or_default() += 1;
                }
            }
        }
        let column = self.cursor_column();
        let mut writer = self.writer(
            self.stream.name,
            Partitioning::Fixed(NO_CURSOR_PARTITION.to_string()),
            Some(column),
        );
        let result = async {
            for f in read {
                let mut batches = open(&self.run.lake, f, None).await?;
                while let Some(batch) = batches
                    .try_next()
                    .await
                    .map_err(|e| format!("reading {}: {e}", f.path))?
                {
                    let new = not_held(&batch, identity, &mut held)
                        .map_err(|e| format!("reading {}: {e}", f.path))?;
                    writer.write(new).await.map_err(|e| e.to_string())?;
                }
            }
            Ok::<_, String>(())
        }
        .await;
        finish_or_abort(writer, result).await
    }
}

/// The identity of each row of `batch`: its `column`, or (`None`) every non-null value but
/// `_extracted_at` with its column's name, in the order of the names (so a file written
/// before a column was added, which lacks it, agrees with one holding it null); values in
/// Arrow's row format, which orders and so tells apart every value of every type; hashed.
pub(super) fn identities(
    batch: &RecordBatch,
    column: Option<&str>,
) -> Result<Vec<u128>, ArrowError> {
    let schema = batch.schema();
    let mut columns: Vec<(&str, &ArrayRef)> = schema
        .fields()
        .iter()
        .zip(batch.columns())
        .filter(|(f, _)| match column {
            Some(column) => f.name() == column,
            None => f.name() != EXTRACTED_AT,
        })
        .map(|(f, c)| (f.name().as_str(), c))
        .collect();
    columns.sort_by_key(|(name, _)| *name);
    let mut ids = vec![Vec::new(); batch.num_rows()];
    for (name, c) in columns {
        let converter = RowConverter::new(vec![SortField::new(c.data_type().clone())])?;
        let rows = converter.convert_columns(std::slice::from_ref(c))?;
        for (row, id) in ids.iter_mut().enumerate() {
            if c.is_valid(row) {
                let value = rows.row(row);
                id.extend_from_slice(name.as_bytes());
                id.extend_from_slice(&(value.as_ref().len() as u64).to_le_bytes());
                id.extend_from_slice(value.as_ref());
            }
        }
    }
    Ok(ids.iter().map(|id| xxh3_128(id)).collect())
}

/// The rows of `batch` beyond the copies `held` counts of their identity, each taking one
/// copy off.
pub(super) fn not_held(
    batch: &RecordBatch,
    identity: Option<&str>,
    held: &mut HashMap<u128, u64>,
) -> Result<RecordBatch, ArrowError> {
    let keep: BooleanArray = identities(batch, identity)?
        .into_iter()
        .map(|id| {
            Some(match held.get_mut(&id) {
                Some(n) if *n > 0 => {
                    *n -= 1;
                    false
                }
                _ => true,
            })
        })
        .collect();
    filter_record_batch(batch, &keep)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{ArrayRef, AsArray, Int64Array, StringArray};

    use super::*;

    fn ids(values: &[&str]) -> RecordBatch {
        let ids = StringArray::from(values.to_vec());
        RecordBatch::try_from_iter([(EVENT_ID, Arc::new(ids) as ArrayRef)]).unwrap()
    }

    #[test]
    fn a_read_keeps_the_copies_of_each_id_beyond_the_live_ones() {
        let mut held: HashMap<u128, u64> = HashMap::new();
        for id in identities(&ids(&["a", "b"]), Some(EVENT_ID)).unwrap() {
            held.insert(id, 1);
        }
        let kept = not_held(&ids(&["a", "b", "b", "c", "a"]), Some(EVENT_ID), &mut held).unwrap();
        let kept: Vec<&str> = kept.column(0).as_string::<i32>().iter().flatten().collect();
        // One `a` and one `b` were live; the second `a` and `b` and the new `c` are added.
        assert_eq!(kept, ["b", "c", "a"]);
        assert!(is_cursorless(NO_CURSOR_PARTITION));
        assert!(is_cursorless(&format!(
            "snapshot_date=2024-01-02/{NO_CURSOR_PARTITION}"
        )));
        assert!(!is_cursorless("date=2024-01-02"));
    }

    #[test]
    fn without_an_event_id_rows_are_told_apart_by_every_value_but_extracted_at() {
        let row = |email: &str, at: i64, custom: Option<Option<i64>>| {
            let mut columns: Vec<(&str, ArrayRef)> = vec![
                ("email", Arc::new(StringArray::from(vec![email]))),
                (EXTRACTED_AT, Arc::new(Int64Array::from(vec![at]))),
            ];
            if let Some(custom) = custom {
                columns.push(("plan", Arc::new(Int64Array::from(vec![custom]))));
            }
            identities(&RecordBatch::try_from_iter(columns).unwrap(), None).unwrap()
        };
        // Read again later, and by a file written before the custom column was added.
        assert_eq!(row("a@x", 1, None), row("a@x", 2, Some(None)));
        assert_ne!(row("a@x", 1, None), row("a@x", 1, Some(Some(3))));
        assert_ne!(row("a@x", 1, None), row("b@x", 1, None));
    }
}
