//! The latest row per key with bounded memory: the merge behind a deduplicated bucket.
//!
//! Rows are pushed oldest input first. Keyed rows collect in a chunk; when the chunk holds
//! `memory / 2` bytes it is sorted by key (latest first), cut to one row per key and spilled
//! as a sorted run to an anonymous temporary file (unlinked at once, so a killed run leaves
//! nothing behind). At the end the runs, and the last chunk still in memory, are merged in key
//! order, keeping the first row of each key; when there are more runs than `memory` can read
//! at once, groups of them are merged into longer runs first. A bucket that fits in `memory`
//! is never spilled. Memory stays near `memory` plus one output batch whatever the bucket's
//! size; temporary disk is about the bucket's size.
//!
//! "Latest" is the largest cursor, then the later pushed row (a later input, a later row of
//! it); a row without a cursor is older than any with one. Rows without a key are not merged:
//! [`KeyedMerge::push`] hands them back to be written as they come.
//!
//! A caller may also give keys to retire: a key whose latest row is not later than its
//! retirement (a cursor instant) is left out. `incremental-deduped` uses it for a user whose
//! key changed from `userId:…` to `email:…` ([`bucket`](super::bucket)).

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap};
use std::fs::File;
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, Int64Array, RecordBatch, StringArray, UInt32Array, UInt64Array,
};
use arrow::compute::{interleave_record_batch, take_record_batch};
use arrow::datatypes::{
    DataType, Field, Int64Type, Schema, SchemaRef, TimestampMicrosecondType, UInt64Type,
};
use arrow::error::ArrowError;
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::{ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder};
use parquet::errors::ParquetError;
use parquet::file::properties::WriterProperties;

use super::bucket::row_keys;

/// Rows of an output batch.
const OUT_ROWS: usize = 4096;
/// Bytes each column of a run holds while it is read (its current page), and the page size
/// runs are written with.
const PAGE_BYTES: usize = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum MergeError {
    #[error("a temporary file of the merge: {0}")]
    TempFile(#[from] std::io::Error),
    #[error("a sorted run of the merge: {0}")]
    Run(#[from] ParquetError),
    #[error("merging rows: {0}")]
    Arrow(#[from] ArrowError),
}

/// When a row was current: its cursor (µs, `i64::MIN` when null), then its push order.
type Stamp = (i64, u64);

/// One deduplication of rows by key, spilling sorted runs past `memory` bytes.
pub struct KeyedMerge {
    schema: SchemaRef,
    /// `schema` with the key, stamp and sequence columns added.
    run_schema: SchemaRef,
    key: Vec<usize>,
    cursor: usize,
    memory: usize,
    retire: HashMap<String, i64>,
    chunk: Vec<RecordBatch>,
    chunk_bytes: usize,
    runs: Vec<File>,
    next_seq: u64,
    rows: u64,
    bytes: u64,
}

impl KeyedMerge {
    /// `key`: the key columns (a row's key is its first non-null one); `cursor`: a
    /// microsecond timestamp column; `retire`: keys retired as of a cursor instant.
    pub fn new(
        schema: SchemaRef,
        key: Vec<usize>,
        cursor: usize,
        memory: usize,
        retire: HashMap<String, i64>,
    ) -> Self {
        let mut fields: Vec<Arc<Field>> = schema.fields().iter().cloned().collect();
        fields.push(Arc::new(Field::new("__key", DataType::Utf8, false)));
        fields.push(Arc::new(Field::new("__at", DataType::Int64, false)));
        fields.push(Arc::new(Field::new("__seq", DataType::UInt64, false)));
        KeyedMerge {
            run_schema: Arc::new(Schema::new(fields)),
            schema,
            key,
            cursor,
            memory: memory.max(64 * 1024),
            retire,
            chunk: Vec::new(),
            chunk_bytes: 0,
            runs: Vec::new(),
            next_seq: 0,
            rows: 0,
            bytes: 0,
        }
    }

    /// The schema of the rows pushed and returned.
    pub fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    /// How many sorted runs were spilled so far.
    pub fn spilled_runs(&self) -> usize {
        self.runs.len()
    }

    /// Add `batch` (with the merge's schema), later than every batch pushed before. Returns
    /// its rows without a key, which the caller writes as they are.
    pub fn push(&mut self, batch: &RecordBatch) -> Result<Option<RecordBatch>, MergeError> {
        let keys = row_keys(batch, &self.key);
        let (mut keyed, mut keyless) = (Vec::new(), Vec::new());
        for (row, k) in keys.iter().enumerate() {
            match k {
                Some(_) => keyed.push(row as u32),
                None => keyless.push(row as u32),
            }
        }
        let keyless = match keyless.len() {
            0 => None,
            n if n == batch.num_rows() => Some(batch.clone()),
            _ => Some(take_record_batch(batch, &UInt32Array::from(keyless))?),
        };
        if keyed.is_empty() {
            return Ok(keyless);
        }
        let cursor = batch
            .column(self.cursor)
            .as_primitive::<TimestampMicrosecondType>();
        let at: Int64Array = keyed
            .iter()
            .map(|&r| {
                let r = r as usize;
                Some(if cursor.is_valid(r) {
                    cursor.value(r)
                } else {
                    i64::MIN
                })
            })
            .collect();
        let key: StringArray = keyed.iter().map(|&r| keys[r as usize].as_deref()).collect();
        let seq: UInt64Array = (self.next_seq..self.next_seq + keyed.len() as u64)
            .map(Some)
            .collect();
        self.next_seq += keyed.len() as u64;
        let rows = match keyed.len() == batch.num_rows() {
            true => batch.clone(),
            false => take_record_batch(batch, &UInt32Array::from(keyed))?,
        };
        let mut columns = rows.columns().to_vec();
        columns.extend([Arc::new(key) as ArrayRef, Arc::new(at), Arc::new(seq)]);
        let rows = RecordBatch::try_new(self.run_schema.clone(), columns)?;
        let size = rows.get_array_memory_size();
        self.rows += rows.num_rows() as u64;
        self.bytes += size as u64;
        self.chunk_bytes += size;
        self.chunk.push(rows);
        if self.chunk_bytes >= self.memory / 2 {
            self.spill()?;
        }
        Ok(keyless)
    }

    /// Sort the chunk into a run on disk.
    fn spill(&mut self) -> Result<(), MergeError> {
        let chunk = std::mem::take(&mut self.chunk);
        self.chunk_bytes = 0;
        let sorted = SortedChunk::new(chunk);
        let run = self.write_run(sorted)?;
        self.runs.push(run);
        Ok(())
    }

    fn write_run(
        &self,
        batches: impl Iterator<Item = Result<RecordBatch, MergeError>>,
    ) -> Result<File, MergeError> {
        let props = WriterProperties::builder()
            .set_dictionary_enabled(false)
            .set_data_page_size_limit(PAGE_BYTES)
            .set_compression(parquet::basic::Compression::SNAPPY)
            .build();
        let mut writer =
            ArrowWriter::try_new(tempfile::tempfile()?, self.run_schema.clone(), Some(props))?;
        for batch in batches {
            writer.write(&batch?)?;
            if writer.in_progress_size() > self.memory / 8 {
                writer.flush()?;
            }
        }
        Ok(writer.into_inner()?)
    }

    /// The rows that remain, one per key (without the retired), in key order, in batches.
    pub fn finish(mut self) -> Result<MergedRows, MergeError> {
        let last = SortedChunk::new(std::mem::take(&mut self.chunk));
        let row_bytes = (self.bytes / self.rows.max(1)).max(1) as usize;
        // The run readers share the half of `memory` the last chunk leaves: each holds a
        // page of every column and a batch of rows, a half of its share each.
        let pages = self.run_schema.fields().len() * PAGE_BYTES;
        let fan_in = (self.memory / 2 / (2 * pages)).max(2);
        while self.runs.len() + 1 > fan_in {
            let group: Vec<File> = self.runs.drain(..fan_in.min(self.runs.len())).collect();
            let sources = group
                .into_iter()
                .map(|f| self.read_run(f, fan_in, row_bytes))
                .collect::<Result<Vec<_>, _>>()?;
            let merged = Merging::new(sources, HashMap::new());
            let run = self.write_run(merged)?;
            self.runs.push(run);
        }
        let mut sources: Vec<Source> = std::mem::take(&mut self.runs)
            .into_iter()
            .map(|f| self.read_run(f, fan_in, row_bytes))
            .collect::<Result<_, _>>()?;
        sources.push(Box::new(last));
        Ok(MergedRows {
            inner: Merging::new(sources, self.retire),
            columns: self.schema.fields().len(),
            schema: self.schema,
        })
    }

    fn read_run(&self, file: File, sources: usize, row_bytes: usize) -> Result<Source, MergeError> {
        let rows = (self.memory / 4 / sources / row_bytes).clamp(16, OUT_ROWS);
        let reader: ParquetRecordBatchReader = ParquetRecordBatchReaderBuilder::try_new(file)?
            .with_batch_size(rows)
            .build()?;
        Ok(Box::new(reader.map(|b| b.map_err(MergeError::from))))
    }
}

type Source = Box<dyn Iterator<Item = Result<RecordBatch, MergeError>> + Send>;

/// A chunk's rows sorted by key (latest first), one per key, in batches.
struct SortedChunk {
    batches: Vec<RecordBatch>,
    order: Vec<(usize, usize)>,
    pos: usize,
}

impl SortedChunk {
    fn new(batches: Vec<RecordBatch>) -> Self {
        let mut order: Vec<(usize, usize)> = Vec::new();
        for (b, batch) in batches.iter().enumerate() {
            order.extend((0..batch.num_rows()).map(|r| (b, r)));
        }
        let cols: Vec<(&StringArray, &Int64Array, &UInt64Array)> =
            batches.iter().map(internal_columns).collect();
        let key = |&(b, r): &(usize, usize)| cols[b].0.value(r);
        let stamp = |&(b, r): &(usize, usize)| (cols[b].1.value(r), cols[b].2.value(r));
        order.sort_unstable_by(|x, y| key(x).cmp(key(y)).then_with(|| stamp(y).cmp(&stamp(x))));
        order.dedup_by(|later, first| key(later) == key(first));
        SortedChunk {
            batches,
            order,
            pos: 0,
        }
    }
}

impl Iterator for SortedChunk {
    type Item = Result<RecordBatch, MergeError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.pos >= self.order.len() {
            return None;
        }
        let end = (self.pos + OUT_ROWS).min(self.order.len());
        let refs: Vec<&RecordBatch> = self.batches.iter().collect();
        let out = interleave_record_batch(&refs, &self.order[self.pos..end]);
        self.pos = end;
        Some(out.map_err(MergeError::from))
    }
}

fn internal_columns(batch: &RecordBatch) -> (&StringArray, &Int64Array, &UInt64Array) {
    let n = batch.num_columns();
    (
        batch.column(n - 3).as_string::<i32>(),
        batch.column(n - 2).as_primitive::<Int64Type>(),
        batch.column(n - 1).as_primitive::<UInt64Type>(),
    )
}

/// The head of a source in the merge's heap: the smallest key first, then the latest.
struct Head {
    key: String,
    stamp: Stamp,
    source: usize,
}

impl PartialEq for Head {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Head {}

impl PartialOrd for Head {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Head {
    fn cmp(&self, other: &Self) -> Ordering {
        other
            .key
            .cmp(&self.key)
            .then_with(|| self.stamp.cmp(&other.stamp))
            .then_with(|| other.source.cmp(&self.source))
    }
}

/// A k-way merge of sorted runs (each with one row per key) into one sorted run, the first
/// row of each key kept, in batches with the run schema.
struct Merging {
    sources: Vec<Source>,
    /// Each source's current batch (an index into `pool`) and row.
    current: Vec<Option<(usize, usize)>>,
    pool: Vec<RecordBatch>,
    heap: BinaryHeap<Head>,
    last_key: Option<String>,
    retire: HashMap<String, i64>,
    started: bool,
}

impl Merging {
    fn new(sources: Vec<Source>, retire: HashMap<String, i64>) -> Self {
        Merging {
            current: vec![None; sources.len()],
            sources,
            pool: Vec::new(),
            heap: BinaryHeap::new(),
            last_key: None,
            retire,
            started: false,
        }
    }

    /// Move source `s` to its next row (loading its next batch when needed), and put its
    /// head in the heap.
    fn advance(&mut self, s: usize) -> Result<(), MergeError> {
        let next = match self.current[s] {
            Some((slot, row)) if row + 1 < self.pool[slot].num_rows() => Some((slot, row + 1)),
            _ => loop {
                match self.sources[s].next().transpose()? {
                    Some(b) if b.num_rows() == 0 => continue,
                    Some(b) => {
                        self.pool.push(b);
                        break Some((self.pool.len() - 1, 0));
                    }
                    None => break None,
                }
            },
        };
        self.current[s] = next;
        if let Some((slot, row)) = next {
            let (key, at, seq) = internal_columns(&self.pool[slot]);
            self.heap.push(Head {
                key: key.value(row).to_string(),
                stamp: (at.value(row), seq.value(row)),
                source: s,
            });
        }
        Ok(())
    }

    fn next_batch(&mut self) -> Result<Option<RecordBatch>, MergeError> {
        if !self.started {
            self.started = true;
            for s in 0..self.sources.len() {
                self.advance(s)?;
            }
        }
        let mut picked: Vec<(usize, usize)> = Vec::new();
        while picked.len() < OUT_ROWS {
            let Some(head) = self.heap.pop() else { break };
            let (slot, row) = self.current[head.source].expect("a source in the heap has a row");
            let newest = self.last_key.as_deref() != Some(head.key.as_str());
            let retired = self
                .retire
                .get(&head.key)
                .is_some_and(|&until| head.stamp.0 <= until);
            if newest && !retired {
                picked.push((slot, row));
            }
            if newest {
                self.last_key = Some(head.key);
            }
            self.advance(head.source)?;
        }
        if picked.is_empty() {
            return Ok(None);
        }
        let refs: Vec<&RecordBatch> = self.pool.iter().collect();
        let out = interleave_record_batch(&refs, &picked)?;
        self.compact();
        Ok(Some(out))
    }

    /// Drop the batches no source reads any more.
    fn compact(&mut self) {
        let pool = std::mem::take(&mut self.pool);
        for cur in self.current.iter_mut().flatten() {
            self.pool.push(pool[cur.0].clone());
            cur.0 = self.pool.len() - 1;
        }
    }
}

impl Iterator for Merging {
    type Item = Result<RecordBatch, MergeError>;

    fn next(&mut self) -> Option<Self::Item> {
        match self.next_batch() {
            Ok(b) => b.map(Ok),
            Err(e) => Some(Err(e)),
        }
    }
}

/// The merge's result: batches with the merge's schema, in key order.
pub struct MergedRows {
    inner: Merging,
    schema: SchemaRef,
    columns: usize,
}

impl Iterator for MergedRows {
    type Item = Result<RecordBatch, MergeError>;

    fn next(&mut self) -> Option<Self::Item> {
        let batch = match self.inner.next()? {
            Ok(b) => b,
            Err(e) => return Some(Err(e)),
        };
        let columns = batch.columns()[..self.columns].to_vec();
        Some(RecordBatch::try_new(self.schema.clone(), columns).map_err(MergeError::from))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::TimestampMicrosecondArray;
    use std::collections::BTreeMap;

    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("email", DataType::Utf8, true),
            Field::new("userId", DataType::Utf8, true),
            Field::new(
                "at",
                DataType::Timestamp(arrow::datatypes::TimeUnit::Microsecond, Some("UTC".into())),
                true,
            ),
            Field::new("payload", DataType::Utf8, true),
        ]))
    }

    type Row = (Option<String>, Option<String>, Option<i64>, String);

    fn batch(rows: &[Row]) -> RecordBatch {
        let email: StringArray = rows.iter().map(|r| r.0.as_deref()).collect();
        let user: StringArray = rows.iter().map(|r| r.1.as_deref()).collect();
        let at = TimestampMicrosecondArray::from(rows.iter().map(|r| r.2).collect::<Vec<_>>())
            .with_timezone("UTC");
        let payload: StringArray = rows.iter().map(|r| Some(r.3.as_str())).collect();
        RecordBatch::try_new(
            schema(),
            vec![
                Arc::new(email),
                Arc::new(user),
                Arc::new(at),
                Arc::new(payload),
            ],
        )
        .unwrap()
    }

    fn rows_of(b: &RecordBatch) -> Vec<Row> {
        let s = |c: usize, i: usize| {
            let a = b.column(c).as_string::<i32>();
            a.is_valid(i).then(|| a.value(i).to_string())
        };
        let at = b.column(2).as_primitive::<TimestampMicrosecondType>();
        (0..b.num_rows())
            .map(|i| {
                (
                    s(0, i),
                    s(1, i),
                    at.is_valid(i).then(|| at.value(i)),
                    s(3, i).unwrap(),
                )
            })
            .collect()
    }

    /// Pseudo-random rows: 3,000 keys over 20,000 rows, some keyed by userId only, some
    /// without a key, some without a cursor, many cursor ties.
    fn inputs() -> Vec<Vec<Row>> {
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = move |n: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % n
        };
        (0..10)
            .map(|input| {
                (0..2000)
                    .map(|i| {
                        let k = next(3000);
                        let (email, user) = match k % 10 {
                            0 => (None, Some(format!("u{k}"))),
                            1 if next(50) == 0 => (None, None),
                            _ => (Some(format!("e{k}@x")), Some(format!("u{k}"))),
                        };
                        let at = (next(20) != 0).then(|| next(40) as i64);
                        (email, user, at, format!("{input}/{i}"))
                    })
                    .collect()
            })
            .collect()
    }

    /// The latest row per key the simple way, and the keyless rows in order.
    fn expected(
        inputs: &[Vec<Row>],
        retire: &HashMap<String, i64>,
    ) -> (BTreeMap<String, Row>, Vec<Row>) {
        let mut best: BTreeMap<String, ((i64, u64), Row)> = BTreeMap::new();
        let mut keyless = Vec::new();
        let mut seq = 0;
        for row in inputs.iter().flatten() {
            let key = match (&row.0, &row.1) {
                (Some(e), _) => format!("email:{e}"),
                (None, Some(u)) => format!("userId:{u}"),
                (None, None) => {
                    keyless.push(row.clone());
                    continue;
                }
            };
            let stamp = (row.2.unwrap_or(i64::MIN), seq);
            seq += 1;
            let slot = best.entry(key).or_insert((stamp, row.clone()));
            if stamp > slot.0 {
                *slot = (stamp, row.clone());
            }
        }
        let kept = best
            .into_iter()
            .filter(|(k, (stamp, _))| retire.get(k).is_none_or(|&until| stamp.0 > until))
            .map(|(k, (_, row))| (k, row))
            .collect();
        (kept, keyless)
    }

    fn merge(
        inputs: &[Vec<Row>],
        memory: usize,
        retire: HashMap<String, i64>,
    ) -> (Vec<Row>, Vec<Row>, usize) {
        let mut m = KeyedMerge::new(schema(), vec![0, 1], 2, memory, retire);
        let mut keyless = Vec::new();
        for rows in inputs {
            for part in rows.chunks(700) {
                if let Some(b) = m.push(&batch(part)).unwrap() {
                    keyless.extend(rows_of(&b));
                }
            }
        }
        let runs = m.spilled_runs();
        let mut out = Vec::new();
        for b in m.finish().unwrap() {
            out.extend(rows_of(&b.unwrap()));
        }
        (out, keyless, runs)
    }

    #[test]
    fn the_latest_row_per_key_in_memory_and_through_spilled_runs() {
        let inputs = inputs();
        let retire = HashMap::from([
            ("userId:u10".to_string(), 39),
            ("userId:u20".to_string(), -1),
            ("email:e11@x".to_string(), i64::MAX),
        ]);
        let (want, want_keyless) = expected(&inputs, &retire);
        assert!(want.len() > 2000 && !want_keyless.is_empty());
        assert!(!want.contains_key("userId:u10") && !want.contains_key("email:e11@x"));
        assert!(
            want.contains_key("userId:u20"),
            "a later row outlives its retirement"
        );
        for memory in [1 << 30, 64 * 1024] {
            let (out, keyless, runs) = merge(&inputs, memory, retire.clone());
            assert_eq!(keyless, want_keyless, "memory {memory}");
            let keys: Vec<String> = out
                .iter()
                .map(|r| match (&r.0, &r.1) {
                    (Some(e), _) => format!("email:{e}"),
                    (_, u) => format!("userId:{}", u.as_deref().unwrap()),
                })
                .collect();
            let mut sorted = keys.clone();
            sorted.sort();
            assert_eq!(keys, sorted, "memory {memory}: in key order");
            let got: BTreeMap<String, Row> = keys.into_iter().zip(out).collect();
            assert_eq!(got, want, "memory {memory}");
            if memory < 1 << 20 {
                assert!(runs > 4, "{runs} runs: spilled, merged in several passes");
            } else {
                assert_eq!(runs, 0);
            }
        }
    }
}
