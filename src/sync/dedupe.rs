//! `incremental-deduped`: one row per primary key, the latest by cursor, in hash-bucketed
//! files `<stream>/bucket=NN/part-<run>-<n>.parquet` (N fixed per stream in the manifest).
//!
//! Each unit (the same whole-day windows as `incremental`, settling window included) is
//! fetched into staging files `_staging/<run>/<stream>/bucket=NN/…`, split by the bucket of
//! each row's key ([`bucket`](crate::sink::bucket)). Then every bucket the unit touched is
//! rewritten: its live files and the staged rows are read back (Parquet over `object_store`,
//! a row group at a time), the latest row of each key is kept (ties: the newer run's row,
//! then the later fetched) by a merge whose memory is `SyncOptions::dedupe_memory` whatever
//! the bucket's size (sorted runs beyond it go to temporary files, [`merge`]), and written
//! as the bucket's new file, in key order. The unit commits the new files and retires the
//! touched buckets' old ones in one manifest commit; untouched buckets keep their files. So
//! a run reads and writes what changed plus the buckets it falls in, never the whole table.
//! Rows without any key value cannot be merged by key: they are kept in bucket 0, each
//! once whatever reads it again (by every value but `_extracted_at`).
//!
//! A key can change: a user known by userId only (`userId:…`) who gains an email is keyed
//! `email:…` from then on, in another bucket. A staged row keyed by an email that carries a
//! userId therefore retires the `userId:…` row of that user if it is not later, in whatever
//! bucket it lies; such a bucket is rewritten too, found by its files' statistics (only rows
//! without an email can be keyed by userId) and then a read of its key columns. An email
//! that changes is not linked to the old one (the export does not say an email is gone), so
//! the old email's row stays.
//!
//! [`merge`]: crate::sink::merge

use std::collections::{BTreeMap, BTreeSet, HashMap};

use arrow::array::{Array, ArrayRef, AsArray, new_null_array};
use arrow::datatypes::{SchemaRef, TimestampMicrosecondType};
use arrow::error::ArrowError;
use arrow::record_batch::RecordBatch;
use futures::TryStreamExt;
use object_store::ObjectStoreExt;
use parquet::arrow::ProjectionMask;
use parquet::arrow::async_reader::{ParquetRecordBatchStream, ParquetRecordBatchStreamBuilder};
use parquet::errors::ParquetError;

use super::cursorless::{identities, not_held};
use super::{StreamCtx, own_file_name};
use crate::manifest::LiveFile;
use crate::sink::bucket::{bucket_of, bucket_partition, replaced_keys, row_keys};
use crate::sink::merge::KeyedMerge;
use crate::sink::store::LakeFileReader;
use crate::sink::{
    LakeStore, PartitionedWriter, Partitioning, WriterLimits, WrittenFile, spawn_encoding,
};

/// The folder under the lake's root where deduped runs stage fetched rows.
pub const STAGING_DIR: &str = "_staging";

/// How a deduped stream spreads its keys.
#[derive(Debug, Clone)]
pub(super) struct Bucketing {
    pub buckets: u32,
    /// The primary-key columns, in the catalog's order.
    pub key: Vec<usize>,
}

/// What merging a unit's staged rows produced.
pub(super) struct Merged {
    pub files: Vec<WrittenFile>,
    /// The `bucket=NN` partitions rewritten.
    pub touched: BTreeSet<String>,
}

impl StreamCtx<'_> {
    pub(super) fn bucketing(&self, buckets: u32) -> Bucketing {
        let key = self
            .stream
            .primary_key
            .iter()
            .map(|k| {
                self.schema
                    .position(k)
                    .expect("catalog tests check every schema declares its key")
            })
            .collect();
        Bucketing { buckets, key }
    }

    pub(super) fn staging_dir(&self) -> String {
        format!("{STAGING_DIR}/{}/{}", self.run.run_id, self.stream.name)
    }

    /// A writer of staged rows split by bucket. Every bucket may be open at once, so row
    /// groups are kept small: memory stays near
    /// `buckets × (1 MiB + (1 + part uploads) × part size)`.
    pub(super) fn staging_writer(&self, b: &Bucketing) -> PartitionedWriter {
        let limits = WriterLimits {
            max_open_files: b.buckets as usize,
            row_group_bytes: 1024 * 1024,
            part_bytes: 5 * 1024 * 1024,
            ..self.opts().limits
        };
        PartitionedWriter::new(
            self.run.lake.clone(),
            self.staging_dir(),
            self.schema.arrow.clone(),
            Partitioning::KeyBucket {
                key: b.key.clone(),
                buckets: b.buckets,
            },
            Some(self.cursor_column()),
            self.namer.clone(),
            limits,
        )
    }

    /// Rewrite each bucket `staged` touches from its `live` files and the staged rows, then
    /// delete the staged files. A bucket whose live files hold a key that a staged row
    /// replaces ([`replaced_keys`]) is rewritten too, without that key.
    pub(super) async fn merge_buckets(
        &self,
        b: &Bucketing,
        staged: Vec<WrittenFile>,
        live: &[LiveFile],
    ) -> Result<Merged, String> {
        let mut merged = Merged {
            files: Vec::new(),
            touched: BTreeSet::new(),
        };
        let result = async {
            let mut by_bucket: BTreeMap<String, Vec<&WrittenFile>> = BTreeMap::new();
            for f in &staged {
                by_bucket.entry(f.partition.clone()).or_default().push(f);
            }
            let mut retire = self.replaced(b, &staged).await?;
            for (partition, keys) in &retire {
                if by_bucket.contains_key(partition) {
                    continue;
                }
                for f in live.iter().filter(|f| &f.file.partition == partition) {
                    if self.holds_any(b, &f.file, keys).await? {
                        by_bucket.entry(partition.clone()).or_default();
                        break;
                    }
                }
            }
            for (partition, mut new) in by_bucket {
                new.sort_by(|x, y| x.path.cmp(&y.path));
                let mut inputs: Vec<WrittenFile> = live
                    .iter()
                    .filter(|f| f.file.partition == partition)
                    .map(|f| f.file.clone())
                    .collect();
                let live_inputs = inputs.len();
                inputs.extend(new.into_iter().cloned());
                let writer = self.writer(
                    self.stream.name,
                    Partitioning::Fixed(partition.clone()),
                    Some(self.cursor_column()),
                );
                let merge = KeyedMerge::new(
                    self.schema.arrow.clone(),
                    b.key.clone(),
                    self.cursor_column(),
                    self.opts().dedupe_memory,
                    retire.remove(&partition).unwrap_or_default(),
                );
                let lake = self.run.lake.clone();
                // Deduplicating a bucket is CPU work too.
                let files =
                    spawn_encoding(move || rewrite(lake, inputs, live_inputs, merge, writer))
                        .await
                        .map_err(|e| format!("a rewriting task stopped: {e}"))?
                        .map_err(|e| format!("rewriting {partition}: {e}"))?;
                merged.files.extend(files);
                merged.touched.insert(partition);
            }
            Ok(())
        }
        .await;
        self.run.delete_files(&staged).await;
        match result {
            Ok(()) => Ok(merged),
            Err(e) => {
                self.run.delete_files(&merged.files).await;
                Err(e)
            }
        }
    }

    /// The keys `staged` rows replace ([`replaced_keys`]), each with the latest cursor of
    /// the rows replacing it, by the bucket the key falls in.
    async fn replaced(
        &self,
        b: &Bucketing,
        staged: &[WrittenFile],
    ) -> Result<BTreeMap<String, HashMap<String, i64>>, String> {
        let mut out: BTreeMap<String, HashMap<String, i64>> = BTreeMap::new();
        if b.key.len() < 2 {
            return Ok(out);
        }
        let mut columns = self.key_names(b);
        columns.push(self.stream.cursor_field);
        for f in staged {
            let mut batches = open(&self.run.lake, f, Some(&columns)).await?;
            while let Some(batch) = batches
                .try_next()
                .await
                .map_err(|e| format!("reading {}: {e}", f.path))?
            {
                let key = positions(&batch, &columns[..columns.len() - 1]);
                let cursor = batch
                    .column_by_name(self.stream.cursor_field)
                    .map(|c| c.as_primitive::<TimestampMicrosecondType>().clone());
                for (row, keys) in replaced_keys(&batch, &key).into_iter().enumerate() {
                    let at = match &cursor {
                        Some(c) if c.is_valid(row) => c.value(row),
                        _ => i64::MIN,
                    };
                    for k in keys {
                        let bucket = bucket_of(Some(&k), b.buckets);
                        let until = out
                            .entry(bucket_partition(bucket, b.buckets))
                            .or_default()
                            .entry(k)
                            .or_insert(at);
                        *until = (*until).max(at);
                    }
                }
            }
        }
        Ok(out)
    }

    /// Whether the live file `f` may hold one of `keys`. Only rows whose first key column
    /// is null can be keyed by a later column, so a file whose statistics say it has none is
    /// not read.
    async fn holds_any(
        &self,
        b: &Bucketing,
        f: &WrittenFile,
        keys: &HashMap<String, i64>,
    ) -> Result<bool, String> {
        let columns = self.key_names(b);
        let reader = self.run.lake.parquet_reader(&f.path, f.bytes);
        let builder = ParquetRecordBatchStreamBuilder::new(reader)
            .await
            .map_err(|e| format!("reading {}: {e}", f.path))?;
        let first = columns[0];
        let no_nulls = builder.metadata().row_groups().iter().all(|rg| {
            rg.columns().iter().any(|c| {
                c.column_path().string() == first
                    && c.statistics().and_then(|s| s.null_count_opt()) == Some(0)
            })
        });
        if no_nulls {
            return Ok(false);
        }
        let mut batches =
            project(builder, &columns).map_err(|e| format!("reading {}: {e}", f.path))?;
        while let Some(batch) = batches
            .try_next()
            .await
            .map_err(|e| format!("reading {}: {e}", f.path))?
        {
            let key = positions(&batch, &columns);
            if row_keys(&batch, &key)
                .iter()
                .flatten()
                .any(|k| keys.contains_key(k))
            {
                return Ok(true);
            }
        }
        Ok(false)
    }

    fn key_names(&self, b: &Bucketing) -> Vec<&str> {
        b.key
            .iter()
            .map(|&c| self.schema.arrow.field(c).name().as_str())
            .collect()
    }

    /// Delete the staging files other runs left (crashed ones: the run holds the lake's
    /// lease, so no other run is in progress): only files of the tool's name pattern; any
    /// other object under `_staging/` is left alone.
    pub(super) async fn remove_stale_staging(&self) {
        let lake = &self.run.lake;
        let own = format!("{STAGING_DIR}/{}/", self.run.run_id);
        let Ok(objects) = lake
            .store
            .list(Some(&lake.path(STAGING_DIR)))
            .try_collect::<Vec<_>>()
            .await
        else {
            return;
        };
        for o in objects.into_iter().filter(|o| {
            !lake.relative(&o.location).starts_with(&own)
                && o.location.filename().is_some_and(own_file_name)
        }) {
            let _ = lake.store.delete(&o.location).await;
        }
    }
}

/// Merge `inputs` (oldest first; the first `live_inputs` of them the bucket's live files)
/// into `writer` through `merge`, and finish it. Rows without a key are not merged: the live
/// ones stay, and a read adds only the copies of a row (by every value but `_extracted_at`)
/// beyond those live, so a window read again does not add them twice.
async fn rewrite(
    lake: LakeStore,
    inputs: Vec<WrittenFile>,
    live_inputs: usize,
    mut merge: KeyedMerge,
    mut writer: PartitionedWriter,
) -> Result<Vec<WrittenFile>, String> {
    let result = async {
        let schema = merge.schema().clone();
        let mut held: HashMap<u128, u64> = HashMap::new();
        for (i, f) in inputs.iter().enumerate() {
            let mut batches = open(&lake, f, None).await?;
            while let Some(batch) = batches
                .try_next()
                .await
                .map_err(|e| format!("reading {}: {e}", f.path))?
            {
                let batch = conform(&batch, &schema).map_err(|e| format!("{}: {e}", f.path))?;
                let Some(rows) = merge.push(&batch).map_err(|e| e.to_string())? else {
                    continue;
                };
                let keyless = |e| format!("{}: {e}", f.path);
                let rows = if i < live_inputs {
                    for id in identities(&rows, None).map_err(keyless)? {
                        *held.entry(id).or_default() += 1;
                    }
                    rows
                } else {
                    not_held(&rows, None, &mut held).map_err(keyless)?
                };
                if rows.num_rows() > 0 {
                    writer.write(rows).await.map_err(|e| e.to_string())?;
                }
            }
        }
        let runs = merge.spilled_runs();
        if runs > 0 {
            let partition = inputs.first().map_or("", |f| f.partition.as_str());
            tracing::info!(
                partition,
                runs,
                "the bucket is larger than the merge's memory: merged through temporary files"
            );
        }
        for batch in merge.finish().map_err(|e| e.to_string())? {
            let batch = batch.map_err(|e| e.to_string())?;
            writer.write(batch).await.map_err(|e| e.to_string())?;
        }
        Ok::<_, String>(())
    }
    .await;
    finish_or_abort(writer, result).await
}

/// Finish `writer` after `result`, or on an error abort it (deleting what it wrote).
pub(super) async fn finish_or_abort(
    writer: PartitionedWriter,
    result: Result<(), String>,
) -> Result<Vec<WrittenFile>, String> {
    match result {
        Ok(()) => writer.finish().await.map_err(|e| e.to_string()),
        Err(e) => {
            writer.abort().await;
            Err(e)
        }
    }
}

/// The batches of the lake's file `f`, read a row group at a time, with only `columns`
/// when given.
pub(super) async fn open(
    lake: &LakeStore,
    f: &WrittenFile,
    columns: Option<&[&str]>,
) -> Result<ParquetRecordBatchStream<LakeFileReader>, String> {
    let builder = ParquetRecordBatchStreamBuilder::new(lake.parquet_reader(&f.path, f.bytes))
        .await
        .map_err(|e| format!("reading {}: {e}", f.path))?;
    let result = match columns {
        Some(columns) => project(builder, columns),
        None => builder.build(),
    };
    result.map_err(|e| format!("reading {}: {e}", f.path))
}

/// The builder's stream of only `columns` (those the file has), in the file's order.
fn project(
    builder: ParquetRecordBatchStreamBuilder<LakeFileReader>,
    columns: &[&str],
) -> Result<ParquetRecordBatchStream<LakeFileReader>, ParquetError> {
    let roots: Vec<usize> = builder
        .schema()
        .fields()
        .iter()
        .enumerate()
        .filter(|(_, f)| columns.contains(&f.name().as_str()))
        .map(|(i, _)| i)
        .collect();
    let mask = ProjectionMask::roots(builder.parquet_schema(), roots);
    builder.with_projection(mask).build()
}

/// The positions in `batch` of the `columns` it has, in their order.
fn positions(batch: &RecordBatch, columns: &[&str]) -> Vec<usize> {
    columns
        .iter()
        .filter_map(|c| batch.schema().index_of(c).ok())
        .collect()
}

/// `batch` with `schema`'s columns: files of an older schema version lack the custom
/// columns added since, which become nulls.
fn conform(batch: &RecordBatch, schema: &SchemaRef) -> Result<RecordBatch, ArrowError> {
    let columns: Vec<ArrayRef> = schema
        .fields()
        .iter()
        .map(|f| match batch.column_by_name(f.name()) {
            Some(c) if c.data_type() == f.data_type() => Ok(c.clone()),
            Some(c) => Err(ArrowError::SchemaError(format!(
                "column {} is {} in the file but {} in the stream's schema",
                f.name(),
                c.data_type(),
                f.data_type()
            ))),
            None => Ok(new_null_array(f.data_type(), batch.num_rows())),
        })
        .collect::<Result<_, _>>()?;
    RecordBatch::try_new(schema.clone(), columns)
}

/// Whether a live file belongs to the deduped layout.
pub(super) fn is_bucket_file(f: &LiveFile) -> bool {
    f.file.partition.starts_with("bucket=")
}
