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
//! Rows without any key value cannot be deduplicated and are kept as they come, in bucket 0.
//!
//! [`merge`]: crate::sink::merge

use std::collections::{BTreeMap, BTreeSet, HashMap};

use arrow::array::{Array, ArrayRef, new_null_array};
use arrow::datatypes::SchemaRef;
use arrow::error::ArrowError;
use arrow::record_batch::RecordBatch;
use futures::TryStreamExt;
use object_store::ObjectStoreExt;
use parquet::arrow::async_reader::{ParquetRecordBatchStream, ParquetRecordBatchStreamBuilder};

use super::StreamCtx;
use crate::manifest::LiveFile;
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
    /// delete the staged files.
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
            for (partition, mut new) in by_bucket {
                new.sort_by(|x, y| x.path.cmp(&y.path));
                let mut inputs: Vec<WrittenFile> = live
                    .iter()
                    .filter(|f| f.file.partition == partition)
                    .map(|f| f.file.clone())
                    .collect();
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
                    HashMap::new(),
                );
                let lake = self.run.lake.clone();
                // Deduplicating a bucket is CPU work too.
                let files = spawn_encoding(move || rewrite(lake, inputs, merge, writer))
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

    /// Delete the staging folders other runs left (crashed ones: the run holds the lake's
    /// lease, so no other run is in progress).
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
        for o in objects
            .into_iter()
            .filter(|o| !lake.relative(&o.location).starts_with(&own))
        {
            let _ = lake.store.delete(&o.location).await;
        }
    }
}

/// Merge `inputs` (oldest first) into `writer` through `merge`, and finish it.
async fn rewrite(
    lake: LakeStore,
    inputs: Vec<WrittenFile>,
    mut merge: KeyedMerge,
    mut writer: PartitionedWriter,
) -> Result<Vec<WrittenFile>, String> {
    let result = async {
        let schema = merge.schema().clone();
        for f in &inputs {
            let mut batches = open(&lake, f).await?;
            while let Some(batch) = batches
                .try_next()
                .await
                .map_err(|e| format!("reading {}: {e}", f.path))?
            {
                let batch = conform(&batch, &schema).map_err(|e| format!("{}: {e}", f.path))?;
                if let Some(rows) = merge.push(&batch).map_err(|e| e.to_string())? {
                    writer.write(rows).await.map_err(|e| e.to_string())?;
                }
            }
        }
        for batch in merge.finish().map_err(|e| e.to_string())? {
            let batch = batch.map_err(|e| e.to_string())?;
            writer.write(batch).await.map_err(|e| e.to_string())?;
        }
        Ok::<_, String>(())
    }
    .await;
    match result {
        Ok(()) => writer.finish().await.map_err(|e| e.to_string()),
        Err(e) => {
            writer.abort().await;
            Err(e)
        }
    }
}

/// The batches of the lake's file `f`, read a row group at a time.
async fn open(
    lake: &LakeStore,
    f: &WrittenFile,
) -> Result<ParquetRecordBatchStream<LakeFileReader>, String> {
    ParquetRecordBatchStreamBuilder::new(lake.parquet_reader(&f.path, f.bytes))
        .await
        .and_then(|b| b.build())
        .map_err(|e| format!("reading {}: {e}", f.path))
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
