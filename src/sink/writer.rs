//! Date-partitioned Parquet files through `object_store`.
//!
//! One [`PartitionedWriter`] writes one fetch (one request's records) of one stream: batches
//! are split by partition (for dated streams the UTC date of the cursor column), each
//! partition gets its own file under `<dir>/<partition>/part-<run>-<n>.parquet`, files roll
//! over at a size limit, at most a few files are open at once, and a file that gets no rows
//! for a while (its day has passed in an export in cursor order) is closed early. The caller
//! decides whether the files become live (it commits them to the manifest) or are thrown away
//! ([`PartitionedWriter::abort`]).
//!
//! Memory: each open file holds at most one row group in progress (flushed at
//! `row_group_bytes`), the `BufWriter`'s part buffer and at most `part_uploads` parts being
//! uploaded, so memory is bounded by
//! `max_open_files × (row_group_bytes + (1 + part_uploads) × part_bytes)` whatever the export
//! size.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arrow::array::{Array, AsArray, UInt32Array};
use arrow::compute::take_record_batch;
use arrow::datatypes::{DataType, Int64Type, SchemaRef, TimeUnit, TimestampMicrosecondType};
use arrow::record_batch::RecordBatch;
use chrono::DateTime;
use object_store::ObjectStoreExt;
use object_store::buffered::BufWriter;
use object_store::path::Path;
use parquet::arrow::AsyncArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::errors::ParquetError;
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;
use rustc_hash::FxHashSet;
use serde::{Deserialize, Serialize};
use xxhash_rust::xxh3::xxh3_64;

use super::bucket::{bucket_of, bucket_partition, row_keys};
use super::store::LakeStore;

const MICROS_PER_DAY: i64 = 86_400_000_000;

/// Writes (batches, or their parts in different partitions) after which a file that got none
/// of them is closed; ~100,000 rows of an export.
const IDLE_WRITES: u64 = 16;

#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("writing {path}: {source}")]
    Parquet { path: String, source: ParquetError },
    #[error("writing {path}: {source}")]
    Store {
        path: String,
        source: object_store::Error,
    },
    #[error("splitting a batch by date: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
    #[error("flushing {path} to disk: {source}")]
    Sync {
        path: String,
        source: std::io::Error,
    },
}

/// Size limits of the writer.
#[derive(Debug, Clone, Copy)]
pub struct WriterLimits {
    /// A file is closed and a new one started past this many bytes.
    pub file_bytes: u64,
    /// A row group is flushed past this many buffered bytes.
    pub row_group_bytes: usize,
    pub row_group_rows: usize,
    /// Open files beyond this are closed, least recently written first.
    pub max_open_files: usize,
    /// The upload part size of the object-store writer.
    pub part_bytes: usize,
    /// Parts of one file uploading at once (object_store's default is 8: 80 MB a file).
    pub part_uploads: usize,
}

impl Default for WriterLimits {
    fn default() -> Self {
        WriterLimits {
            file_bytes: 256 * 1024 * 1024,
            row_group_bytes: 32 * 1024 * 1024,
            row_group_rows: 256 * 1024,
            max_open_files: 6,
            part_bytes: 10 * 1024 * 1024,
            part_uploads: 2,
        }
    }
}

/// A Parquet file the writer finished.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WrittenFile {
    /// Path relative to the lake's root.
    pub path: String,
    /// The partition folder(s) between the stream folder and the file, e.g. `date=2024-01-02`.
    pub partition: String,
    pub rows: u64,
    pub bytes: u64,
    /// Smallest and largest cursor in the file, µs since the epoch.
    pub min_cursor: Option<i64>,
    pub max_cursor: Option<i64>,
    /// Per-column bounds and null counts from the writer's footer, for the Delta log
    /// ([`column_stats`](super::stats::column_stats)); held for the run that wrote the file,
    /// not recorded in the manifest.
    #[serde(skip)]
    pub column_stats: Option<serde_json::Value>,
}

/// The partition of rows whose cursor is null (absent or unreadable): the folder Hive,
/// Spark, DuckDB and Delta read as a null `date`.
pub const NO_CURSOR_PARTITION: &str = "date=__HIVE_DEFAULT_PARTITION__";

/// Whether a file's partition folder(s) end in [`NO_CURSOR_PARTITION`] (below a snapshot
/// date in `full-refresh-append`).
pub fn is_cursorless(partition: &str) -> bool {
    partition.rsplit('/').next() == Some(NO_CURSOR_PARTITION)
}

/// The `date=YYYY-MM-DD` partition of a UTC day number (days since the epoch).
pub fn date_partition(day: i64) -> String {
    DateTime::from_timestamp(day * 86_400, 0).map_or_else(
        || NO_CURSOR_PARTITION.to_string(),
        |t| format!("date={}", t.date_naive()),
    )
}

/// The partition of a row by the UTC day of its cursor: [`NO_CURSOR_PARTITION`] without one.
fn cursor_partition(day: Option<i64>) -> String {
    day.map_or_else(|| NO_CURSOR_PARTITION.to_string(), date_partition)
}

/// The UTC day (days since the epoch) of an instant in µs.
pub fn day_of(micros: i64) -> i64 {
    micros.div_euclid(MICROS_PER_DAY)
}

/// How a writer spreads rows over partition folders.
#[derive(Debug, Clone)]
pub enum Partitioning {
    /// `date=YYYY-MM-DD`: the UTC date of this timestamp column; rows without one go to
    /// [`NO_CURSOR_PARTITION`], whatever window read them, so a re-read from another start
    /// files them where the first read did.
    CursorDate { column: usize },
    /// Every row in one folder below the writer's; empty for the writer's folder itself.
    Fixed(String),
    /// `bucket=NN`: the hash bucket of the row's key, its first non-null `key` column
    /// ([`bucket`](super::bucket)).
    KeyBucket { key: Vec<usize>, buckets: u32 },
}

struct OpenFile {
    partition: String,
    path: Path,
    writer: AsyncArrowWriter<BufWriter>,
    rows: u64,
    min: Option<i64>,
    max: Option<i64>,
    last_write: u64,
    /// Whether the file stays open while idle: its partition's earlier file was closed as
    /// idle and got rows after all, so the export is not in cursor order there.
    keep_open: bool,
}

/// Names files uniquely within a run: `part-<run>-<n>.parquet`.
#[derive(Debug)]
pub struct FileNamer {
    run_id: String,
    next: AtomicU64,
}

impl FileNamer {
    pub fn new(run_id: &str) -> Arc<Self> {
        Arc::new(FileNamer {
            run_id: run_id.to_string(),
            next: AtomicU64::new(0),
        })
    }

    fn name(&self) -> String {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        format!("part-{}-{n:05}.parquet", self.run_id)
    }
}

/// Writes one fetch's batches into date-partitioned files.
pub struct PartitionedWriter {
    lake: LakeStore,
    /// The stream's folder (and snapshot partition, if any), relative to the lake's root.
    dir: String,
    schema: SchemaRef,
    partitioning: Partitioning,
    /// The timestamp column whose range each file records.
    cursor_column: Option<usize>,
    namer: Arc<FileNamer>,
    limits: WriterLimits,
    open: Vec<OpenFile>,
    done: Vec<WrittenFile>,
    writes: u64,
    /// Partitions whose file was closed for being idle.
    idle_closed: FxHashSet<String>,
}

impl PartitionedWriter {
    pub fn new(
        lake: LakeStore,
        dir: String,
        schema: SchemaRef,
        partitioning: Partitioning,
        cursor_column: Option<usize>,
        namer: Arc<FileNamer>,
        limits: WriterLimits,
    ) -> Self {
        PartitionedWriter {
            lake,
            dir,
            schema,
            partitioning,
            cursor_column,
            namer,
            limits,
            open: Vec::new(),
            done: Vec::new(),
            writes: 0,
            idle_closed: FxHashSet::default(),
        }
    }

    /// Write a batch, splitting it by partition.
    pub async fn write(&mut self, batch: RecordBatch) -> Result<(), WriteError> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        let column = match &self.partitioning {
            Partitioning::Fixed(folder) => {
                let folder = folder.clone();
                return self.write_part(folder, batch).await;
            }
            Partitioning::KeyBucket { key, buckets } => {
                let buckets = *buckets;
                let mut by_bucket: BTreeMap<u32, Vec<u32>> = BTreeMap::new();
                for (i, k) in row_keys(&batch, key).iter().enumerate() {
                    by_bucket
                        .entry(bucket_of(k.as_deref(), buckets))
                        .or_default()
                        .push(i as u32);
                }
                for (bucket, rows) in by_bucket {
                    let part = take_record_batch(&batch, &UInt32Array::from(rows))?;
                    self.write_part(bucket_partition(bucket, buckets), part)
                        .await?;
                }
                return Ok(());
            }
            Partitioning::CursorDate { column } => *column,
        };
        let cursor = batch
            .column(column)
            .as_primitive::<TimestampMicrosecondType>()
            .clone();
        let day_at = |i: usize| cursor.is_valid(i).then(|| day_of(cursor.value(i)));
        let first = day_at(0);
        if (1..batch.num_rows()).all(|i| day_at(i) == first) {
            return self.write_part(cursor_partition(first), batch).await;
        }
        let mut by_day: BTreeMap<Option<i64>, Vec<u32>> = BTreeMap::new();
        for i in 0..batch.num_rows() {
            by_day.entry(day_at(i)).or_default().push(i as u32);
        }
        for (day, rows) in by_day {
            let part = take_record_batch(&batch, &UInt32Array::from(rows))?;
            self.write_part(cursor_partition(day), part).await?;
        }
        Ok(())
    }

    async fn write_part(
        &mut self,
        partition: String,
        batch: RecordBatch,
    ) -> Result<(), WriteError> {
        self.writes += 1;
        let idx = match self.open.iter().position(|f| f.partition == partition) {
            Some(i) => i,
            None => {
                if self.open.len() >= self.limits.max_open_files {
                    let lru = (0..self.open.len())
                        .min_by_key(|&i| self.open[i].last_write)
                        .expect("open files exist");
                    let file = self.open.swap_remove(lru);
                    self.close(file).await?;
                }
                let file = self.create(partition, &batch)?;
                self.open.push(file);
                self.open.len() - 1
            }
        };
        let (min, max) = match self.cursor_column {
            Some(c) => cursor_range(&batch, c),
            None => (None, None),
        };
        let file = &mut self.open[idx];
        file.last_write = self.writes;
        file.rows += batch.num_rows() as u64;
        file.min = min_opt(file.min, min);
        file.max = max_opt(file.max, max);
        let path = file.path.to_string();
        file.writer
            .write(&batch)
            .await
            .map_err(|source| WriteError::Parquet {
                path: path.clone(),
                source,
            })?;
        if file.writer.in_progress_size() > self.limits.row_group_bytes {
            file.writer
                .flush()
                .await
                .map_err(|source| WriteError::Parquet {
                    path: path.clone(),
                    source,
                })?;
        }
        if file.writer.bytes_written() as u64 >= self.limits.file_bytes {
            let file = self.open.swap_remove(idx);
            self.close(file).await?;
        }
        self.close_idle().await
    }

    /// Close the files no write reached in the last [`IDLE_WRITES`]: an export comes in
    /// cursor order, so a day that has passed gets no more rows. Closing it then frees its
    /// row group while decoding goes on, rather than at the end when nothing else runs. A
    /// partition that gets rows after its file was closed keeps its next file open.
    async fn close_idle(&mut self) -> Result<(), WriteError> {
        while let Some(i) = self
            .open
            .iter()
            .position(|f| !f.keep_open && self.writes - f.last_write > IDLE_WRITES)
        {
            let file = self.open.swap_remove(i);
            self.idle_closed.insert(file.partition.clone());
            self.close(file).await?;
        }
        Ok(())
    }

    /// Open a file for `partition`, whose first batch is `first`.
    fn create(&self, partition: String, first: &RecordBatch) -> Result<OpenFile, WriteError> {
        let relative = [self.dir.as_str(), partition.as_str(), &self.namer.name()]
            .iter()
            .filter(|p| !p.is_empty())
            .copied()
            .collect::<Vec<_>>()
            .join("/");
        let path = self.lake.path(&relative);
        let out = BufWriter::with_capacity(
            self.lake.store.clone(),
            path.clone(),
            self.limits.part_bytes,
        )
        .with_max_concurrency(self.limits.part_uploads);
        let props = file_properties(&self.limits, first);
        let writer =
            AsyncArrowWriter::try_new(out, self.schema.clone(), Some(props)).map_err(|source| {
                WriteError::Parquet {
                    path: relative,
                    source,
                }
            })?;
        Ok(OpenFile {
            path,
            writer,
            rows: 0,
            min: None,
            max: None,
            last_write: self.writes,
            keep_open: self.idle_closed.contains(&partition),
            partition,
        })
    }

    async fn close(&mut self, file: OpenFile) -> Result<(), WriteError> {
        let path = file.path.to_string();
        let footer = file
            .writer
            .close()
            .await
            .map_err(|source| WriteError::Parquet {
                path: path.clone(),
                source,
            })?;
        let meta = self
            .lake
            .store
            .head(&file.path)
            .await
            .map_err(|source| WriteError::Store {
                path: path.clone(),
                source,
            })?;
        let relative = self.lake.relative(&file.path);
        self.lake
            .sync_local(&[&relative])
            .map_err(|source| WriteError::Sync {
                path: relative.clone(),
                source,
            })?;
        self.done.push(WrittenFile {
            partition: file.partition,
            path: relative,
            rows: file.rows,
            bytes: meta.size,
            min_cursor: file.min,
            max_cursor: file.max,
            column_stats: Some(super::stats::column_stats(&self.schema, &footer)),
        });
        Ok(())
    }

    /// Close every open file and return all files written.
    pub async fn finish(mut self) -> Result<Vec<WrittenFile>, WriteError> {
        while let Some(file) = self.open.pop() {
            self.close(file).await?;
        }
        Ok(self.done)
    }

    /// Throw away everything written: abort open uploads and delete finished files.
    pub async fn abort(self) {
        for file in self.open {
            let _ = file.writer.into_inner().abort().await;
            let _ = self.lake.store.delete(&file.path).await;
        }
        for file in self.done {
            let _ = self.lake.store.delete(&self.lake.path(&file.path)).await;
        }
    }
}

/// Run the future `work` makes (a writer's: encoding is CPU work, its uploads are async) on a
/// blocking thread, so the runtime's workers keep serving requests meanwhile.
pub fn spawn_encoding<W, F>(work: W) -> tokio::task::JoinHandle<F::Output>
where
    W: FnOnce() -> F + Send + 'static,
    F: std::future::Future,
    F::Output: Send + 'static,
{
    let handle = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || handle.block_on(work()))
}

/// How a file whose first batch is `first` is written: zstd, page statistics, row groups of
/// at most `limits.row_group_rows`, and no dictionary for [`distinct_columns`].
pub fn file_properties(limits: &WriterLimits, first: &RecordBatch) -> WriterProperties {
    let props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(
            ZstdLevel::try_new(1).expect("valid level"),
        ))
        .set_statistics_enabled(EnabledStatistics::Page)
        .set_max_row_group_row_count(Some(limits.row_group_rows))
        .set_created_by(format!("iterable-lake {}", env!("CARGO_PKG_VERSION")));
    distinct_columns(first)
        .into_iter()
        .fold(props, |props, column| {
            props.set_column_dictionary_enabled(column, false)
        })
        .build()
}

/// Rows of a file's first batch that [`distinct_columns`] looks at, and the fewest non-null
/// values it judges a column on.
const SAMPLE_ROWS: usize = 4096;
const SAMPLE_MIN_VALUES: usize = 256;

/// The text and number columns (struct fields included) whose values in `batch` are mostly
/// distinct: ids, instants, payloads. A dictionary only costs those time and space (Parquet
/// falls back from it once it is full), so a file whose first batch shows them so skips it:
/// a fifth faster to encode and smaller on `emailSend` (`benches/pipeline.rs`).
fn distinct_columns(batch: &RecordBatch) -> Vec<ColumnPath> {
    let mut out = Vec::new();
    let rows = batch.num_rows().min(SAMPLE_ROWS);
    for (field, column) in batch.schema().fields().iter().zip(batch.columns()) {
        collect_distinct(&[field.name().as_str()], column.as_ref(), rows, &mut out);
    }
    out
}

fn collect_distinct(path: &[&str], column: &dyn Array, rows: usize, out: &mut Vec<ColumnPath>) {
    let column = column.slice(0, rows);
    let hashes: Vec<u64> = match column.data_type() {
        DataType::Struct(fields) => {
            for (field, child) in fields.iter().zip(column.as_struct().columns()) {
                let mut child_path = path.to_vec();
                child_path.push(field.name());
                collect_distinct(&child_path, child.as_ref(), rows, out);
            }
            return;
        }
        DataType::Utf8 => column
            .as_string::<i32>()
            .iter()
            .flatten()
            .map(|v| xxh3_64(v.as_bytes()))
            .collect(),
        DataType::Int64 => column
            .as_primitive::<Int64Type>()
            .iter()
            .flatten()
            .map(|v| v as u64)
            .collect(),
        DataType::Timestamp(TimeUnit::Microsecond, _) => column
            .as_primitive::<TimestampMicrosecondType>()
            .iter()
            .flatten()
            .map(|v| v as u64)
            .collect(),
        _ => return,
    };
    if hashes.len() < SAMPLE_MIN_VALUES {
        return;
    }
    let distinct: FxHashSet<u64> = hashes.iter().copied().collect();
    if distinct.len() * 2 > hashes.len() {
        out.push(ColumnPath::new(
            path.iter().map(|p| p.to_string()).collect(),
        ));
    }
}

fn cursor_range(batch: &RecordBatch, column: usize) -> (Option<i64>, Option<i64>) {
    let c = batch
        .column(column)
        .as_primitive::<TimestampMicrosecondType>();
    (arrow::compute::min(c), arrow::compute::max(c))
}

fn min_opt(a: Option<i64>, b: Option<i64>) -> Option<i64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

fn max_opt(a: Option<i64>, b: Option<i64>) -> Option<i64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    }
}

/// The UTC day of a file's `date=YYYY-MM-DD` partition (the last such folder), if it has one.
pub fn partition_day(partition: &str) -> Option<i64> {
    let date = partition
        .rsplit('/')
        .find_map(|part| part.strip_prefix("date="))?;
    let d = chrono::NaiveDate::parse_from_str(date, "%Y-%m-%d").ok()?;
    Some(day_of(d.and_hms_opt(0, 0, 0)?.and_utc().timestamp_micros()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_name_utc_days() {
        let t = chrono::DateTime::parse_from_rfc3339("2024-01-02T23:59:59.999999Z")
            .unwrap()
            .timestamp_micros();
        let day = day_of(t);
        assert_eq!(date_partition(day), "date=2024-01-02");
        assert_eq!(day_of(t + 1), day + 1);
        assert_eq!(day_of(-1), -1);
        assert_eq!(
            partition_day("snapshot_date=2024-05-01/date=2024-01-02"),
            Some(day)
        );
        assert_eq!(partition_day("date=2024-01-02"), Some(day));
        assert_eq!(partition_day("snapshot_date=2024-05-01"), None);
    }

    fn batch(days: &[i64]) -> RecordBatch {
        let ts = arrow::array::TimestampMicrosecondArray::from(
            days.iter()
                .map(|d| d * MICROS_PER_DAY + 5)
                .collect::<Vec<_>>(),
        )
        .with_timezone("UTC");
        RecordBatch::try_from_iter([("t", Arc::new(ts) as arrow::array::ArrayRef)]).unwrap()
    }

    async fn write_all(partitioning: Partitioning, batches: &[RecordBatch]) -> Vec<WrittenFile> {
        let lake = LakeStore::in_memory();
        let limits = WriterLimits {
            max_open_files: 2,
            ..WriterLimits::default()
        };
        let mut w = PartitionedWriter::new(
            lake.clone(),
            "s".into(),
            batches[0].schema(),
            partitioning,
            Some(0),
            FileNamer::new("r1"),
            limits,
        );
        for b in batches {
            w.write(b.clone()).await.unwrap();
        }
        let mut files = w.finish().await.unwrap();
        for f in &files {
            let meta = lake.store.head(&lake.path(&f.path)).await.unwrap();
            assert_eq!(meta.size, f.bytes);
        }
        files.sort_by(|a, b| a.path.cmp(&b.path));
        files
    }

    #[tokio::test]
    async fn splits_by_date_and_closes_the_least_recent_file_past_the_limit() {
        let files = write_all(
            Partitioning::CursorDate { column: 0 },
            &[batch(&[1, 2, 1]), batch(&[3]), batch(&[1])],
        )
        .await;
        let got: Vec<(&str, &str, u64)> = files
            .iter()
            .map(|f| (f.path.as_str(), f.partition.as_str(), f.rows))
            .collect();
        assert_eq!(
            got,
            [
                (
                    "s/date=1970-01-02/part-r1-00000.parquet",
                    "date=1970-01-02",
                    2
                ),
                (
                    "s/date=1970-01-02/part-r1-00003.parquet",
                    "date=1970-01-02",
                    1
                ),
                (
                    "s/date=1970-01-03/part-r1-00001.parquet",
                    "date=1970-01-03",
                    1
                ),
                (
                    "s/date=1970-01-04/part-r1-00002.parquet",
                    "date=1970-01-04",
                    1
                ),
            ]
        );
        assert_eq!(files[0].min_cursor, Some(MICROS_PER_DAY + 5));
    }

    #[tokio::test]
    async fn rows_without_a_cursor_go_to_the_null_date_partition() {
        let ts = arrow::array::TimestampMicrosecondArray::from(vec![
            None,
            Some(MICROS_PER_DAY + 5),
            None,
        ])
        .with_timezone("UTC");
        let b =
            RecordBatch::try_from_iter([("t", Arc::new(ts) as arrow::array::ArrayRef)]).unwrap();
        let files = write_all(Partitioning::CursorDate { column: 0 }, &[b]).await;
        let got: Vec<(&str, u64, Option<i64>)> = files
            .iter()
            .map(|f| (f.partition.as_str(), f.rows, f.min_cursor))
            .collect();
        assert_eq!(
            got,
            [
                ("date=1970-01-02", 1, Some(MICROS_PER_DAY + 5)),
                (NO_CURSOR_PARTITION, 2, None),
            ]
        );
        assert_eq!(partition_day(NO_CURSOR_PARTITION), None);
    }

    #[tokio::test]
    async fn a_passed_day_is_closed_early_and_a_late_row_keeps_its_next_file_open() {
        let idle = IDLE_WRITES as usize + 1;
        let mut batches = vec![batch(&[1, 1])];
        batches.extend((0..idle).map(|_| batch(&[2])));
        batches.push(batch(&[1]));
        batches.extend((0..idle).map(|_| batch(&[2])));
        batches.push(batch(&[1]));
        let lake = LakeStore::in_memory();
        let mut w = PartitionedWriter::new(
            lake,
            "s".into(),
            batches[0].schema(),
            Partitioning::CursorDate { column: 0 },
            Some(0),
            FileNamer::new("r1"),
            WriterLimits::default(),
        );
        let mut closed_before_finish = Vec::new();
        for b in batches {
            w.write(b).await.unwrap();
            closed_before_finish.push(w.done.len());
        }
        // Day 1's first file closed once day 2 had IDLE_WRITES + 1 batches to itself; the
        // late rows of day 1 share one more file, kept open through day 2's second run.
        assert_eq!(closed_before_finish[idle], 1);
        assert_eq!(closed_before_finish.last(), Some(&1));
        let mut files: Vec<(String, u64)> = w
            .finish()
            .await
            .unwrap()
            .into_iter()
            .map(|f| (f.path, f.rows))
            .collect();
        files.sort();
        assert_eq!(
            files,
            [
                ("s/date=1970-01-02/part-r1-00000.parquet".to_string(), 2),
                ("s/date=1970-01-02/part-r1-00002.parquet".to_string(), 2),
                (
                    "s/date=1970-01-03/part-r1-00001.parquet".to_string(),
                    2 * idle as u64
                ),
            ]
        );
    }

    #[tokio::test]
    async fn columns_of_mostly_distinct_values_skip_the_dictionary() {
        use arrow::array::{ArrayRef, StringArray, StructArray};
        use arrow::datatypes::Field;
        use parquet::file::reader::{FileReader, SerializedFileReader};

        let rows = 1000;
        let unique = StringArray::from_iter_values((0..rows).map(|i| format!("id-{i}")));
        let repeated = StringArray::from_iter_values((0..rows).map(|i| format!("v{}", i % 7)));
        let nested = StructArray::from(vec![(
            Arc::new(Field::new("at", DataType::Int64, true)),
            Arc::new(arrow::array::Int64Array::from_iter_values(0..rows as i64)) as ArrayRef,
        )]);
        let few = StringArray::from_iter_values((0..10).map(|i| format!("x{i}")));
        let batch = RecordBatch::try_from_iter([
            ("unique", Arc::new(unique) as ArrayRef),
            ("repeated", Arc::new(repeated) as ArrayRef),
            ("nested", Arc::new(nested) as ArrayRef),
        ])
        .unwrap();
        let paths: Vec<String> = distinct_columns(&batch)
            .iter()
            .map(|p| p.string())
            .collect();
        assert_eq!(paths, ["unique", "nested.at"]);
        let small = RecordBatch::try_from_iter([("few", Arc::new(few) as ArrayRef)]).unwrap();
        assert!(
            distinct_columns(&small).is_empty(),
            "too few values to judge"
        );

        let lake = LakeStore::in_memory();
        let mut w = PartitionedWriter::new(
            lake.clone(),
            "s".into(),
            batch.schema(),
            Partitioning::Fixed(String::new()),
            None,
            FileNamer::new("r1"),
            WriterLimits::default(),
        );
        w.write(batch).await.unwrap();
        let files = w.finish().await.unwrap();
        let bytes = lake.store.get(&lake.path(&files[0].path)).await.unwrap();
        let reader = SerializedFileReader::new(bytes.bytes().await.unwrap()).unwrap();
        let group = reader.metadata().row_group(0);
        let dictionary: Vec<(String, bool)> = group
            .columns()
            .iter()
            .map(|c| {
                let dict = c.dictionary_page_offset().is_some();
                (c.column_path().string(), dict)
            })
            .collect();
        assert_eq!(
            dictionary,
            [
                ("unique".to_string(), false),
                ("repeated".to_string(), true),
                ("nested.at".to_string(), false)
            ]
        );
    }

    #[tokio::test]
    async fn a_fixed_partition_writes_one_folder() {
        let files = write_all(Partitioning::Fixed(String::new()), &[batch(&[1, 2])]).await;
        assert_eq!(files.len(), 1);
        assert_eq!(files[0].path, "s/part-r1-00000.parquet");
        assert_eq!((files[0].partition.as_str(), files[0].rows), ("", 2));
    }
}
