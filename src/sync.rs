//! Orchestration of a sync run: which windows each stream reads, in what order, how failed
//! windows are split, retried and quarantined, and when results are committed.
//!
//! Incremental export streams work in *units* of whole UTC days (the last one ends at
//! `now - lag`). A unit is fetched as one or more windows (split when a response is cut off
//! or times out), then committed on its own: its files replace the live files of the date
//! partitions it covers, and the cursor moves to its end. So a crash loses at most the unit
//! in flight, and re-reading a period (the settling window) never duplicates it. A unit
//! that still fails is quarantined in the manifest, retried on the next run, and reported.
//! Full-refresh streams commit once, at the end of the stream.

use std::collections::{BTreeSet, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, Duration, Utc};
use futures::{StreamExt, TryStreamExt};
use object_store::ObjectStoreExt;
use serde::Serialize;
use tokio::sync::Mutex;

use crate::api::ApiClient;
use crate::catalog::{Layout, StreamDef, SyncMode};
use crate::convert::{Decoder, StreamSchema};
use crate::manifest::{LiveFile, Manifest, ManifestError, Quarantined, StreamState};
use crate::sink::{
    FileNamer, LakeStore, PartitionedWriter, Partitioning, WriterLimits, WrittenFile, day_of,
    partition_day,
};
use crate::source::export::{ExportFetcher, Window};
use crate::source::{FetchError, list_users, pipeline, rest};

const MICROS_PER_DAY: i64 = 86_400_000_000;
/// Unreferenced files younger than this may belong to a run in progress and are kept.
const GARBAGE_MIN_AGE: Duration = Duration::hours(1);
/// The version of the schemas this build writes.
const SCHEMA_VERSION: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error("stream {stream}: {source}")]
    Schema {
        stream: String,
        source: crate::convert::schema::SchemaError,
    },
}

/// How windows are sized and retried.
#[derive(Debug, Clone)]
pub struct WindowPolicy {
    /// Days in the first unit of a stream.
    pub initial_days: i64,
    pub max_days: i64,
    /// Units are sized to hold about this many records.
    pub target_rows: u64,
    /// Fetch attempts per unit (its windows' failures added up) before it is quarantined.
    pub max_attempts: u32,
    /// Windows are not split below this many seconds.
    pub min_window_secs: i64,
}

impl Default for WindowPolicy {
    fn default() -> Self {
        WindowPolicy {
            initial_days: 7,
            max_days: 90,
            target_rows: 2_000_000,
            max_attempts: 6,
            min_window_secs: 60,
        }
    }
}

#[derive(Debug, Clone)]
pub struct SyncOptions {
    pub streams: Vec<&'static StreamDef>,
    /// Overrides each stream's default mode.
    pub mode: Option<SyncMode>,
    /// Where a stream with no cursor starts (and where full refreshes start).
    pub start: Option<DateTime<Utc>>,
    /// The run reads nothing at or after this instant (and nothing after `now - lag`).
    pub end: Option<DateTime<Utc>>,
    pub lag: Duration,
    /// Days before the cursor's day that incremental runs read again (late events).
    pub lookback_days: i64,
    /// Streams synced at once.
    pub concurrency: usize,
    pub window: WindowPolicy,
    pub limits: WriterLimits,
    pub now: DateTime<Utc>,
}

impl SyncOptions {
    pub fn new(streams: Vec<&'static StreamDef>) -> Self {
        SyncOptions {
            streams,
            mode: None,
            start: None,
            end: None,
            lag: Duration::minutes(10),
            lookback_days: 1,
            concurrency: 4,
            window: WindowPolicy::default(),
            limits: WriterLimits::default(),
            now: Utc::now(),
        }
    }
}

/// How a stream's run ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "status", content = "error", rename_all = "snake_case")]
pub enum StreamStatus {
    Succeeded,
    UpToDate,
    /// Committed, with windows quarantined.
    Quarantined,
    Failed(String),
}

#[derive(Debug, Clone, Serialize)]
pub struct QuarantineReport {
    /// What failed when it is not a time window, e.g. `list_id=123`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    pub error: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct StreamReport {
    pub stream: String,
    pub mode: SyncMode,
    #[serde(flatten)]
    pub status: StreamStatus,
    pub rows: u64,
    pub files: u64,
    pub bytes: u64,
    pub windows: u64,
    pub window_retries: u64,
    pub malformed_lines: u64,
    pub commits: u64,
    pub cursor: Option<DateTime<Utc>>,
    pub quarantined: Vec<QuarantineReport>,
    pub seconds: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    pub run_id: String,
    pub dest: String,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    pub streams: Vec<StreamReport>,
    pub requests: u64,
    pub retries: u64,
    pub rate_limited: u64,
    pub backoff_seconds: f64,
}

impl RunReport {
    pub fn failed(&self) -> Vec<&StreamReport> {
        self.streams
            .iter()
            .filter(|s| matches!(s.status, StreamStatus::Failed(_)))
            .collect()
    }

    pub fn quarantined(&self) -> bool {
        self.streams
            .iter()
            .any(|s| s.status == StreamStatus::Quarantined)
    }
}

/// A new run id: sortable by time, unique across concurrent runs.
pub fn new_run_id(now: DateTime<Utc>) -> String {
    format!(
        "{}-{:06x}",
        now.format("%Y%m%dT%H%M%SZ"),
        rand::random::<u32>() & 0xff_ffff
    )
}

/// State shared by the streams of one run.
struct Run {
    lake: LakeStore,
    client: ApiClient,
    manifest: Mutex<Manifest>,
    run_id: String,
    opts: SyncOptions,
    extracted_at: i64,
}

impl Run {
    /// Apply `change` to the stream's state and commit; delete the files it returns after.
    async fn commit<F>(
        &self,
        stream: &StreamDef,
        change: F,
    ) -> Result<Option<DateTime<Utc>>, ManifestError>
    where
        F: FnOnce(&mut StreamState) -> Vec<String>,
    {
        let (superseded, cursor) = {
            let mut manifest = self.manifest.lock().await;
            let mut next = manifest.clone();
            let state = next
                .streams
                .entry(stream.name.to_string())
                .or_insert_with(|| {
                    StreamState::new(stream.default_mode, stream.cursor_field, SCHEMA_VERSION)
                });
            let superseded = change(state);
            state.last_run = Some(self.run_id.clone());
            let cursor = state.cursor;
            next.commit(&self.lake, &self.run_id).await?;
            *manifest = next;
            (superseded, cursor)
        };
        for path in superseded {
            if let Err(e) = self.lake.store.delete(&self.lake.path(&path)).await {
                tracing::warn!(path, error = %e, "could not delete a superseded file; the next run removes it");
            }
        }
        Ok(cursor)
    }

    async fn delete_files(&self, files: &[WrittenFile]) {
        for f in files {
            let _ = self.lake.store.delete(&self.lake.path(&f.path)).await;
        }
    }
}

/// Sync `opts.streams` from the API into the lake and return the run's report. Streams
/// fail independently: a failure is in the report, not an `Err`.
pub async fn run(
    lake: LakeStore,
    client: ApiClient,
    opts: SyncOptions,
) -> Result<RunReport, SyncError> {
    let started_at = Utc::now();
    let manifest = Manifest::load(&lake).await?;
    let run_id = new_run_id(started_at);
    tracing::info!(run = %run_id, dest = %lake.display, streams = opts.streams.len(), "sync started");
    let mut schemas = Vec::new();
    for s in &opts.streams {
        let schema = StreamSchema::parse(s.name, s.schema, s.is_event()).map_err(|source| {
            SyncError::Schema {
                stream: s.name.to_string(),
                source,
            }
        })?;
        schemas.push((*s, Arc::new(schema)));
    }
    remove_garbage(&lake, &manifest, &opts.streams).await;
    let run = Arc::new(Run {
        extracted_at: started_at.timestamp_micros(),
        lake,
        client,
        manifest: Mutex::new(manifest),
        run_id,
        opts,
    });
    let concurrency = run.opts.concurrency.max(1);
    let streams: Vec<StreamReport> = futures::stream::iter(schemas)
        .map(|(stream, schema)| {
            let run = run.clone();
            async move { run_stream(&run, stream, schema).await }
        })
        .buffered(concurrency)
        .collect()
        .await;
    let stats = &run.client.stats;
    let load = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
    let report = RunReport {
        run_id: run.run_id.clone(),
        dest: run.lake.display.clone(),
        started_at,
        finished_at: Utc::now(),
        streams,
        requests: load(&stats.requests),
        retries: load(&stats.retries),
        rate_limited: load(&stats.rate_limited),
        backoff_seconds: load(&stats.backoff_ms) as f64 / 1000.0,
    };
    write_report(&run.lake, &report).await;
    Ok(report)
}

/// Write the run's report to `_runs/<run-id>.json` for monitoring.
async fn write_report(lake: &LakeStore, report: &RunReport) {
    let body = serde_json::to_vec_pretty(report).expect("the report serializes");
    let path = lake.path(&format!("_runs/{}.json", report.run_id));
    if let Err(e) = lake.store.put(&path, body.into()).await {
        tracing::warn!(error = %e, "could not write the run report");
    }
}

/// Delete files under the streams' folders that no manifest names and that are old enough
/// not to belong to a run in progress (leftovers of crashed runs).
async fn remove_garbage(lake: &LakeStore, manifest: &Manifest, streams: &[&'static StreamDef]) {
    let live: BTreeSet<&str> = manifest.live_paths().collect();
    let cutoff = Utc::now() - GARBAGE_MIN_AGE;
    for s in streams {
        let prefix = lake.path(s.name);
        let Ok(objects) = lake.store.list(Some(&prefix)).try_collect::<Vec<_>>().await else {
            continue;
        };
        for o in objects {
            let relative = lake.relative(&o.location);
            if !live.contains(relative.as_str()) && o.last_modified < cutoff {
                tracing::info!(path = %relative, "removing a file no commit names");
                let _ = lake.store.delete(&o.location).await;
            }
        }
    }
}

fn floor_day(micros: i64) -> i64 {
    day_of(micros) * MICROS_PER_DAY
}

fn to_time(micros: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(micros).expect("in range")
}

struct Progress {
    report: StreamReport,
}

async fn run_stream(
    run: &Run,
    stream: &'static StreamDef,
    schema: Arc<StreamSchema>,
) -> StreamReport {
    let t0 = Instant::now();
    let mode = run.opts.mode.unwrap_or(stream.default_mode);
    let mut p = Progress {
        report: StreamReport {
            stream: stream.name.to_string(),
            mode,
            status: StreamStatus::Succeeded,
            rows: 0,
            files: 0,
            bytes: 0,
            windows: 0,
            window_retries: 0,
            malformed_lines: 0,
            commits: 0,
            cursor: None,
            quarantined: Vec::new(),
            seconds: 0.0,
        },
    };
    let decoder = Arc::new(Decoder::new(
        schema.clone(),
        run.extracted_at,
        stream.data_type(),
    ));
    let ctx = StreamCtx {
        run,
        stream,
        decoder,
        schema,
        namer: FileNamer::new(&run.run_id),
    };
    let result = match (stream.layout, mode) {
        (Layout::Dated, SyncMode::Incremental) => ctx.incremental(&mut p).await,
        (Layout::Dated, _) => ctx.full_refresh(mode, &mut p).await,
        (_, SyncMode::Incremental) => {
            tracing::info!(
                stream = stream.name,
                mode = %stream.default_mode,
                "a snapshot stream has no incremental mode; using its default"
            );
            p.report.mode = stream.default_mode;
            ctx.snapshot(stream.default_mode, &mut p).await
        }
        (_, mode) => ctx.snapshot(mode, &mut p).await,
    };
    if let Err(e) = result {
        tracing::error!(stream = stream.name, error = %e, "stream failed");
        p.report.status = StreamStatus::Failed(e);
    } else if !p.report.quarantined.is_empty() {
        p.report.status = StreamStatus::Quarantined;
    }
    p.report.seconds = t0.elapsed().as_secs_f64();
    tracing::info!(stream = stream.name, rows = p.report.rows, files = p.report.files, status = ?p.report.status, "stream done");
    p.report
}

struct StreamCtx<'r> {
    run: &'r Run,
    stream: &'static StreamDef,
    decoder: Arc<Decoder>,
    schema: Arc<StreamSchema>,
    namer: Arc<FileNamer>,
}

/// A unit that failed: the error, after how many attempts.
struct UnitFailure {
    error: FetchError,
    attempts: u32,
}

impl StreamCtx<'_> {
    fn opts(&self) -> &SyncOptions {
        &self.run.opts
    }

    fn cursor_column(&self) -> usize {
        self.schema
            .position(self.stream.cursor_field)
            .expect("catalog tests check every dated schema declares its cursor")
    }

    fn fetcher(&self) -> ExportFetcher {
        ExportFetcher::new(self.run.client.clone(), self.stream, self.decoder.clone())
    }

    fn writer(
        &self,
        dir: &str,
        partitioning: Partitioning,
        cursor_column: Option<usize>,
    ) -> PartitionedWriter {
        PartitionedWriter::new(
            self.run.lake.clone(),
            dir.to_string(),
            self.schema.arrow.clone(),
            partitioning,
            cursor_column,
            self.namer.clone(),
            self.opts().limits,
        )
    }

    /// The folder of this run's files: the stream's, or its snapshot-date folder in append mode.
    fn dir(&self, mode: SyncMode) -> String {
        match mode {
            SyncMode::FullRefreshAppend => format!(
                "{}/snapshot_date={}",
                self.stream.name,
                self.opts().now.date_naive()
            ),
            _ => self.stream.name.to_string(),
        }
    }

    /// Files of the stream that a full refresh in `mode` replaces: all of them; in append
    /// mode those of the same snapshot date, and those another mode wrote (outside any
    /// snapshot date), so a change of mode never leaves two layouts live.
    fn replaced_by(&self, mode: SyncMode, file: &LiveFile) -> bool {
        match mode {
            SyncMode::FullRefreshAppend => {
                let prefix = format!("{}/snapshot_date=", self.stream.name);
                file.file.path.starts_with(&format!("{}/", self.dir(mode)))
                    || !file.file.path.starts_with(&prefix)
            }
            _ => true,
        }
    }

    /// A snapshot stream: read everything, then replace the previous snapshot in one commit.
    async fn snapshot(&self, mode: SyncMode, p: &mut Progress) -> Result<(), String> {
        if self.stream.layout == Layout::PerList {
            return self.per_list(mode, p).await;
        }
        let dir = self.dir(mode);
        let writer = self.writer(&dir, Partitioning::Fixed(String::new()), None);
        let body = rest::body(self.run.client.clone(), self.stream.source);
        p.report.windows += 1;
        let fetched = pipeline::run(body, self.decoder.clone(), None, writer)
            .await
            .map_err(|e| format!("{e}; nothing was committed"))?;
        p.report.malformed_lines += fetched.malformed;
        self.count(&fetched.files, p);
        let new_files = self.live(fetched.files);
        let now = self.opts().now;
        let cursor = self
            .run
            .commit(self.stream, |s| {
                s.mode = mode;
                let (old, keep): (Vec<_>, Vec<_>) = std::mem::take(&mut s.files)
                    .into_iter()
                    .partition(|f| self.replaced_by(mode, f));
                s.files = keep;
                s.files.extend(new_files);
                s.cursor = Some(now);
                old.into_iter().map(|f| f.file.path).collect()
            })
            .await
            .map_err(|e| e.to_string())?;
        p.report.commits += 1;
        p.report.cursor = cursor;
        Ok(())
    }

    /// `list_users`: one `list_id=N` folder per list. A list that keeps failing is
    /// quarantined (its previous members stay live) while the others land.
    async fn per_list(&self, mode: SyncMode, p: &mut Progress) -> Result<(), String> {
        let dir = self.dir(mode);
        let client = &self.run.client;
        let ids = rest::list_ids(client).await.map_err(|e| e.to_string())?;
        let mut files = Vec::new();
        let mut done = BTreeSet::new();
        let mut failed = Vec::new();
        for id in &ids {
            let folder = format!("list_id={id}");
            let writer = self.writer(&dir, Partitioning::Fixed(folder.clone()), None);
            p.report.windows += 1;
            match list_users::fetch(client, *id, self.decoder.clone(), writer).await {
                Ok(f) => {
                    p.report.malformed_lines += f.malformed;
                    files.extend(f.files);
                    done.insert(folder);
                }
                Err(e) if e.is_fatal() => {
                    self.run.delete_files(&files).await;
                    return Err(e.to_string());
                }
                Err(e) => {
                    tracing::error!(stream = self.stream.name, list = id, error = %e, "list quarantined");
                    failed.push((folder, e.to_string()));
                }
            }
        }
        self.count(&files, p);
        let now = self.opts().now;
        for (folder, error) in &failed {
            p.report.quarantined.push(QuarantineReport {
                key: Some(folder.clone()),
                start: now,
                end: now,
                error: error.clone(),
            });
        }
        let listed: BTreeSet<String> = ids.iter().map(|id| format!("list_id={id}")).collect();
        let new_files = self.live(files);
        let run_id = self.run.run_id.clone();
        let cursor = self
            .run
            .commit(self.stream, |s| {
                s.mode = mode;
                let (old, keep): (Vec<_>, Vec<_>) =
                    std::mem::take(&mut s.files).into_iter().partition(|f| {
                        self.replaced_by(mode, f)
                            && (done.contains(&f.file.partition)
                                || !listed.contains(&f.file.partition))
                    });
                s.files = keep;
                s.files.extend(new_files);
                s.cursor = Some(now);
                s.quarantine = failed
                    .iter()
                    .map(|(folder, error)| Quarantined {
                        key: Some(folder.clone()),
                        start: now,
                        end: now,
                        error: error.clone(),
                        attempts: 1,
                        since_run: run_id.clone(),
                    })
                    .collect();
                old.into_iter().map(|f| f.file.path).collect()
            })
            .await
            .map_err(|e| e.to_string())?;
        p.report.commits += 1;
        p.report.cursor = cursor;
        Ok(())
    }

    /// The end of this run's reading: the earlier of `--end-date` and `now - lag`.
    fn end(&self) -> i64 {
        let cap = self.opts().now - self.opts().lag;
        self.opts()
            .end
            .map_or(cap, |e| e.min(cap))
            .timestamp_micros()
    }

    async fn state(&self) -> Option<StreamState> {
        self.run
            .manifest
            .lock()
            .await
            .streams
            .get(self.stream.name)
            .cloned()
    }

    /// Fetch one unit as windows, splitting windows that are cut off or time out.
    async fn fetch_unit(
        &self,
        fetcher: &ExportFetcher,
        unit: Window,
        dir: &str,
        p: &mut Progress,
    ) -> Result<Vec<WrittenFile>, UnitFailure> {
        let policy = &self.opts().window;
        let mut queue = VecDeque::from([unit]);
        let mut files = Vec::new();
        let mut attempts = 0;
        while let Some(w) = queue.pop_front() {
            let column = self.cursor_column();
            let writer = self.writer(
                dir,
                Partitioning::CursorDate {
                    column,
                    fallback_day: day_of(w.start),
                },
                Some(column),
            );
            p.report.windows += 1;
            let t0 = Instant::now();
            match fetcher.fetch(w, writer).await {
                Ok(f) => {
                    tracing::info!(stream = self.stream.name, window = %w, rows = f.rows, bytes = f.body_bytes, secs = t0.elapsed().as_secs_f64(), "window fetched");
                    if f.malformed > 0 {
                        tracing::warn!(stream = self.stream.name, window = %w, lines = f.malformed, "lines that are not JSON objects were kept in _extra._malformed_line");
                    }
                    p.report.malformed_lines += f.malformed;
                    files.extend(f.files);
                }
                Err(error) => {
                    attempts += 1;
                    let give_up = error.is_fatal()
                        || !error.is_splittable()
                        || attempts >= policy.max_attempts;
                    if give_up {
                        self.run.delete_files(&files).await;
                        return Err(UnitFailure { error, attempts });
                    }
                    p.report.window_retries += 1;
                    let span = w.end - w.start;
                    if span > policy.min_window_secs * 1_000_000 {
                        let mid = w.start + (span / 2_000_000) * 1_000_000;
                        tracing::warn!(stream = self.stream.name, window = %w, error = %error, "window failed; splitting it");
                        queue.push_front(Window {
                            start: mid,
                            end: w.end,
                        });
                        queue.push_front(Window {
                            start: w.start,
                            end: mid,
                        });
                    } else {
                        tracing::warn!(stream = self.stream.name, window = %w, error = %error, "window failed; retrying it");
                        queue.push_front(w);
                    }
                }
            }
        }
        Ok(files)
    }

    fn count(&self, files: &[WrittenFile], p: &mut Progress) -> u64 {
        let rows: u64 = files.iter().map(|f| f.rows).sum();
        p.report.rows += rows;
        p.report.files += files.len() as u64;
        p.report.bytes += files.iter().map(|f| f.bytes).sum::<u64>();
        rows
    }

    fn live(&self, files: Vec<WrittenFile>) -> Vec<LiveFile> {
        files
            .into_iter()
            .map(|file| LiveFile {
                file,
                run: self.run.run_id.clone(),
            })
            .collect()
    }

    async fn incremental(&self, p: &mut Progress) -> Result<(), String> {
        let fetcher = self.fetcher();
        let state = self.state().await;
        let cursor = state
            .as_ref()
            .and_then(|s| s.cursor)
            .map(|c| c.timestamp_micros());
        let end = self.end();
        let start = match (cursor, self.opts().start) {
            (Some(c), _) => floor_day(c) - self.opts().lookback_days * MICROS_PER_DAY,
            (None, Some(s)) => floor_day(s.timestamp_micros()),
            (None, None) => {
                return Err("no cursor yet: give --start-date for the first sync".to_string());
            }
        };
        p.report.cursor = cursor.map(to_time);
        let mut units: Vec<(Window, bool)> = state
            .iter()
            .flat_map(|s| s.quarantine.iter())
            .map(|q| Window {
                start: q.start.timestamp_micros(),
                end: q.end.timestamp_micros(),
            })
            .filter(|w| w.end <= start)
            .map(|w| (w, true))
            .collect();
        let up_to_date = cursor.is_some_and(|c| end <= c);
        if units.is_empty() && (up_to_date || end <= start) {
            p.report.status = StreamStatus::UpToDate;
            return Ok(());
        }
        for (w, _) in &units {
            tracing::info!(stream = self.stream.name, window = %w, "retrying a quarantined window");
        }
        let policy = self.opts().window.clone();
        let mut days = policy.initial_days.max(1);
        let mut next = start;
        let sweep = !up_to_date;
        let mut queued = units.drain(..).collect::<VecDeque<_>>();
        loop {
            let (unit, retry) = match queued.pop_front() {
                Some(u) => u,
                None if sweep && next < end => {
                    let unit_end = (next + days * MICROS_PER_DAY).min(end);
                    let w = Window {
                        start: next,
                        end: unit_end,
                    };
                    next = unit_end;
                    (w, false)
                }
                None => break,
            };
            match self.fetch_unit(&fetcher, unit, self.stream.name, p).await {
                Ok(files) => {
                    let rows = self.count(&files, p);
                    let first_day = day_of(unit.start);
                    let last_day = day_of(unit.end - 1);
                    let new_files = self.live(files);
                    let cursor = self
                        .run
                        .commit(self.stream, |s| {
                            s.mode = SyncMode::Incremental;
                            let (old, keep): (Vec<_>, Vec<_>) =
                                std::mem::take(&mut s.files).into_iter().partition(|f| {
                                    partition_day(&f.file.partition)
                                        .is_some_and(|d| d >= first_day && d <= last_day)
                                });
                            s.files = keep;
                            s.files.extend(new_files);
                            if !retry {
                                s.cursor = Some(to_time(
                                    s.cursor
                                        .map_or(unit.end, |c| c.timestamp_micros().max(unit.end)),
                                ));
                            }
                            s.quarantine = subtract(std::mem::take(&mut s.quarantine), unit);
                            old.into_iter().map(|f| f.file.path).collect()
                        })
                        .await
                        .map_err(|e| e.to_string())?;
                    p.report.commits += 1;
                    p.report.cursor = cursor;
                    let span_days =
                        ((unit.end - unit.start) as f64 / MICROS_PER_DAY as f64).max(1.0 / 24.0);
                    let per_day = rows as f64 / span_days;
                    days = if per_day < 1.0 {
                        (days * 4).min(policy.max_days)
                    } else {
                        ((policy.target_rows as f64 / per_day) as i64).clamp(1, policy.max_days)
                    };
                }
                Err(UnitFailure { error, attempts }) => {
                    if error.is_fatal() {
                        return Err(error.to_string());
                    }
                    tracing::error!(stream = self.stream.name, window = %unit, attempts, error = %error, "window quarantined");
                    let q = Quarantined {
                        key: None,
                        start: to_time(unit.start),
                        end: to_time(unit.end),
                        error: error.to_string(),
                        attempts,
                        since_run: self.run.run_id.clone(),
                    };
                    p.report.quarantined.push(QuarantineReport {
                        key: None,
                        start: q.start,
                        end: q.end,
                        error: q.error.clone(),
                    });
                    let cursor = self
                        .run
                        .commit(self.stream, |s| {
                            let mut kept = subtract(std::mem::take(&mut s.quarantine), unit);
                            kept.push(q);
                            kept.sort_by_key(|q| q.start);
                            s.quarantine = kept;
                            if !retry {
                                s.cursor = Some(to_time(
                                    s.cursor
                                        .map_or(unit.end, |c| c.timestamp_micros().max(unit.end)),
                                ));
                            }
                            Vec::new()
                        })
                        .await
                        .map_err(|e| e.to_string())?;
                    p.report.commits += 1;
                    p.report.cursor = cursor;
                }
            }
        }
        Ok(())
    }

    async fn full_refresh(&self, mode: SyncMode, p: &mut Progress) -> Result<(), String> {
        let Some(start) = self.opts().start else {
            return Err("a full refresh needs --start-date".to_string());
        };
        let fetcher = self.fetcher();
        let start = floor_day(start.timestamp_micros());
        let end = self.end();
        let dir = self.dir(mode);
        let mut all = Vec::new();
        let mut next = start;
        let days = self.opts().window.initial_days.max(1);
        while next < end {
            let unit = Window {
                start: next,
                end: (next + days * MICROS_PER_DAY).min(end),
            };
            next = unit.end;
            match self.fetch_unit(&fetcher, unit, &dir, p).await {
                Ok(files) => all.extend(files),
                Err(UnitFailure { error, .. }) => {
                    self.run.delete_files(&all).await;
                    return Err(format!("window {unit}: {error}; nothing was committed"));
                }
            }
        }
        self.count(&all, p);
        let new_files = self.live(all);
        let cursor = self
            .run
            .commit(self.stream, |s| {
                s.mode = mode;
                let (old, keep): (Vec<_>, Vec<_>) = std::mem::take(&mut s.files)
                    .into_iter()
                    .partition(|f| self.replaced_by(mode, f));
                s.files = keep;
                s.files.extend(new_files);
                s.cursor = Some(to_time(end));
                s.quarantine.clear();
                old.into_iter().map(|f| f.file.path).collect()
            })
            .await
            .map_err(|e| e.to_string())?;
        p.report.commits += 1;
        p.report.cursor = cursor;
        Ok(())
    }
}

/// Quarantined windows minus `done` (all windows are whole days but the last, so what
/// remains is too).
fn subtract(quarantine: Vec<Quarantined>, done: Window) -> Vec<Quarantined> {
    let mut out = Vec::new();
    for q in quarantine {
        let (s, e) = (q.start.timestamp_micros(), q.end.timestamp_micros());
        if e <= done.start || s >= done.end {
            out.push(q);
            continue;
        }
        if s < done.start {
            out.push(Quarantined {
                end: to_time(done.start),
                ..q.clone()
            });
        }
        if e > done.end {
            out.push(Quarantined {
                start: to_time(done.end),
                ..q
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(s: i64, e: i64) -> Quarantined {
        Quarantined {
            key: None,
            start: to_time(s),
            end: to_time(e),
            error: "x".into(),
            attempts: 1,
            since_run: "r".into(),
        }
    }

    #[test]
    fn subtracting_windows_from_quarantine() {
        let span = |v: Vec<Quarantined>| -> Vec<(i64, i64)> {
            v.iter()
                .map(|q| (q.start.timestamp_micros(), q.end.timestamp_micros()))
                .collect()
        };
        let w = Window { start: 10, end: 20 };
        assert_eq!(
            span(subtract(vec![q(0, 10), q(20, 30)], w)),
            [(0, 10), (20, 30)]
        );
        assert_eq!(span(subtract(vec![q(12, 18)], w)), Vec::<(i64, i64)>::new());
        assert_eq!(span(subtract(vec![q(5, 25)], w)), [(5, 10), (20, 25)]);
        assert_eq!(span(subtract(vec![q(15, 25)], w)), [(20, 25)]);
    }

    #[test]
    fn run_ids_sort_by_time_and_differ() {
        let t = DateTime::parse_from_rfc3339("2024-01-02T03:04:05Z")
            .unwrap()
            .to_utc();
        let a = new_run_id(t);
        assert!(a.starts_with("20240102T030405Z-"), "{a}");
        assert_ne!(a, new_run_id(t));
    }
}
