//! Date-partitioned Parquet files through `object_store`.
//!
//! One [`PartitionedWriter`] writes one fetch (one request's records) of one stream: batches
//! are split by the UTC date of the cursor column, each date gets its own file under
//! `<dir>/date=YYYY-MM-DD/part-<run>-<n>.parquet`, files roll over at a size limit, and at
//! most a few files are open at once. The caller decides whether the files become live (it
//! commits them to the manifest) or are thrown away ([`PartitionedWriter::abort`]).
//!
//! Memory: each open file holds at most one row group in progress (flushed at
//! `row_group_bytes`) plus the `BufWriter`'s part buffer, so memory is bounded by
//! `max_open_files × (row_group_bytes + part_bytes)` whatever the export size.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arrow::array::{Array, AsArray, UInt32Array};
use arrow::compute::take_record_batch;
use arrow::datatypes::{SchemaRef, TimestampMicrosecondType};
use arrow::record_batch::RecordBatch;
use chrono::DateTime;
use object_store::ObjectStoreExt;
use object_store::buffered::BufWriter;
use object_store::path::Path;
use parquet::arrow::AsyncArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::errors::ParquetError;
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use serde::{Deserialize, Serialize};

use super::store::LakeStore;

const MICROS_PER_DAY: i64 = 86_400_000_000;

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
}

impl Default for WriterLimits {
    fn default() -> Self {
        WriterLimits {
            file_bytes: 256 * 1024 * 1024,
            row_group_bytes: 32 * 1024 * 1024,
            row_group_rows: 256 * 1024,
            max_open_files: 6,
            part_bytes: 10 * 1024 * 1024,
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
}

/// The `date=YYYY-MM-DD` partition of a UTC day number (days since the epoch).
pub fn date_partition(day: i64) -> String {
    let date = DateTime::from_timestamp(day * 86_400, 0)
        .map(|t| t.date_naive().to_string())
        .unwrap_or_else(|| "__HIVE_DEFAULT_PARTITION__".to_string());
    format!("date={date}")
}

/// The UTC day (days since the epoch) of an instant in µs.
pub fn day_of(micros: i64) -> i64 {
    micros.div_euclid(MICROS_PER_DAY)
}

struct OpenFile {
    day: i64,
    path: Path,
    writer: AsyncArrowWriter<BufWriter>,
    rows: u64,
    min: Option<i64>,
    max: Option<i64>,
    last_write: u64,
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
    cursor_column: usize,
    /// Rows without a cursor go to this day's partition.
    fallback_day: i64,
    namer: Arc<FileNamer>,
    limits: WriterLimits,
    props: WriterProperties,
    open: Vec<OpenFile>,
    done: Vec<WrittenFile>,
    writes: u64,
}

impl PartitionedWriter {
    pub fn new(
        lake: LakeStore,
        dir: String,
        schema: SchemaRef,
        cursor_column: usize,
        fallback_day: i64,
        namer: Arc<FileNamer>,
        limits: WriterLimits,
    ) -> Self {
        let props = WriterProperties::builder()
            .set_compression(Compression::ZSTD(
                ZstdLevel::try_new(1).expect("valid level"),
            ))
            .set_statistics_enabled(EnabledStatistics::Page)
            .set_max_row_group_row_count(Some(limits.row_group_rows))
            .set_created_by(format!("iterable-lake {}", env!("CARGO_PKG_VERSION")))
            .build();
        PartitionedWriter {
            lake,
            dir,
            schema,
            cursor_column,
            fallback_day,
            namer,
            limits,
            props,
            open: Vec::new(),
            done: Vec::new(),
            writes: 0,
        }
    }

    /// Write a batch, splitting it by the UTC date of its cursor.
    pub async fn write(&mut self, batch: RecordBatch) -> Result<(), WriteError> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        let cursor = batch
            .column(self.cursor_column)
            .as_primitive::<TimestampMicrosecondType>()
            .clone();
        let day_at = |i: usize| {
            if cursor.is_valid(i) {
                day_of(cursor.value(i))
            } else {
                self.fallback_day
            }
        };
        let first = day_at(0);
        if (1..batch.num_rows()).all(|i| day_at(i) == first) {
            return self.write_day(first, batch).await;
        }
        let mut by_day: BTreeMap<i64, Vec<u32>> = BTreeMap::new();
        for i in 0..batch.num_rows() {
            by_day.entry(day_at(i)).or_default().push(i as u32);
        }
        for (day, rows) in by_day {
            let part = take_record_batch(&batch, &UInt32Array::from(rows))?;
            self.write_day(day, part).await?;
        }
        Ok(())
    }

    async fn write_day(&mut self, day: i64, batch: RecordBatch) -> Result<(), WriteError> {
        self.writes += 1;
        let idx = match self.open.iter().position(|f| f.day == day) {
            Some(i) => i,
            None => {
                if self.open.len() >= self.limits.max_open_files {
                    let lru = (0..self.open.len())
                        .min_by_key(|&i| self.open[i].last_write)
                        .expect("open files exist");
                    let file = self.open.swap_remove(lru);
                    self.close(file).await?;
                }
                let file = self.create(day)?;
                self.open.push(file);
                self.open.len() - 1
            }
        };
        let (min, max) = cursor_range(&batch, self.cursor_column);
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
        Ok(())
    }

    fn create(&self, day: i64) -> Result<OpenFile, WriteError> {
        let relative = format!("{}/{}/{}", self.dir, date_partition(day), self.namer.name());
        let path = self.lake.path(&relative);
        let out = BufWriter::with_capacity(
            self.lake.store.clone(),
            path.clone(),
            self.limits.part_bytes,
        );
        let writer = AsyncArrowWriter::try_new(out, self.schema.clone(), Some(self.props.clone()))
            .map_err(|source| WriteError::Parquet {
                path: relative,
                source,
            })?;
        Ok(OpenFile {
            day,
            path,
            writer,
            rows: 0,
            min: None,
            max: None,
            last_write: self.writes,
        })
    }

    async fn close(&mut self, file: OpenFile) -> Result<(), WriteError> {
        let path = file.path.to_string();
        file.writer
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
        self.done.push(WrittenFile {
            partition: partition_of(&relative, &self.dir),
            path: relative,
            rows: file.rows,
            bytes: meta.size,
            min_cursor: file.min,
            max_cursor: file.max,
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

fn partition_of(relative: &str, dir: &str) -> String {
    let inside = relative.strip_prefix(dir).unwrap_or(relative);
    let inside = inside.trim_start_matches('/');
    match inside.rsplit_once('/') {
        Some((partition, _)) => partition.to_string(),
        None => String::new(),
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
        assert_eq!(
            partition_of("s/date=2024-01-02/part-1.parquet", "s"),
            "date=2024-01-02"
        );
    }
}
