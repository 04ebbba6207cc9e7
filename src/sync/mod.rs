//! Orchestration of a sync run: which windows each stream reads, in what order, how failed
//! windows are split, retried and quarantined, and when results are committed.
//!
//! Incremental export streams work in *units* of whole UTC days (the last one ends at
//! `now - lag`). A unit is fetched as one or more windows (split when a response is cut off
//! or times out), then committed on its own: its files replace the live files of the date
//! partitions it covers, and the cursor moves to its end. So a crash loses at most the unit
//! in flight, and re-reading a period (the settling window) never duplicates it. A unit
//! that still fails is quarantined in the manifest, retried on the next run, and reported
//! (`dated`). Full refreshes and the list-style snapshot streams commit once, at the end of
//! the stream (`snapshot`). Per-user events commit after each batch of users (`events`);
//! `incremental-deduped` merges changed keys into hash buckets (`dedupe`). Streams run
//! concurrently and fail independently; their commits go through one in-process lock onto
//! the manifest.
//!
//! A run holds the lake's lease ([`crate::lock`]) from before it reads the manifest until
//! its report is written, and its first commit is a fence of its lease generation, so no
//! older run commits after it. Then it removes the files that are provably its own garbage:
//! of its own name pattern, named by no commit, last written before the previous holder's
//! lease expired. Anything else under `--dest` belongs to someone else and stays; and a
//! `--dest` with objects in a stream's folder but no manifest is refused before anything is
//! written. When `SyncOptions::cancel` fires (Ctrl-C, SIGTERM) or the lease is lost, no new
//! unit, list or stream starts; the unit in flight finishes and commits if the run still
//! holds the lease (a full refresh, which commits only at its end, deletes its files
//! instead), and the streams stopped early report `interrupted`.

mod cursorless;
mod custom_fields;
mod dated;
mod dedupe;
mod events;
pub mod plan;
mod snapshot;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Instant;

use chrono::{DateTime, Duration, Utc};
use futures::{StreamExt, TryStreamExt};
use object_store::ObjectStoreExt;
use serde::Serialize;
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;

use crate::api::ApiClient;
use crate::catalog::{Layout, Source, StreamDef, SyncMode};
use crate::convert::{Decoder, StreamSchema};
use crate::delta::{Projection, Table, TableFormat};
use crate::lock::{LakeLock, LeaseFence, LockError};
use crate::manifest::{LiveFile, Manifest, ManifestError, Retired, StreamState};
use crate::sink::{
    FileNamer, LakeStore, PartitionedWriter, Partitioning, WriterLimits, WrittenFile, day_of,
};
use crate::source::jobs::{JOBS_DIR, JobBook, JobSettings, Jobs, JobsReport, is_record_name};
pub use plan::ExportApi;

const MICROS_PER_DAY: i64 = 86_400_000_000;
/// The version of the schemas this build writes.
const SCHEMA_VERSION: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error(transparent)]
    Lock(#[from] LockError),
    #[error("stream {stream}: {source}")]
    Schema {
        stream: String,
        source: crate::convert::schema::SchemaError,
    },
    #[error(
        "{dest} holds objects in the streams' folders but no manifest (`_manifest/`), so they \
         are not a lake of this tool's, or its manifest was not copied: {}{}. Nothing was \
         written. Use an empty prefix for a new lake, or restore `_manifest/`",
        paths.join(", "),
        if *more > 0 { format!(" and {more} more") } else { String::new() }
    )]
    NotALake {
        dest: String,
        paths: Vec<String>,
        more: usize,
    },
    #[error("listing {dest}: {source}")]
    List {
        dest: String,
        source: object_store::Error,
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
    /// [`max_days`](Self::max_days) and [`target_rows`](Self::target_rows) of units read
    /// through export jobs: a job is one file listing however long, each job pays its own
    /// queue at Iterable, and a window too large for one job (`exportTruncated`, at 100 GB)
    /// is split, so these units are longer (after the same first unit of
    /// [`initial_days`](Self::initial_days), which tells the rows a day).
    pub job_max_days: i64,
    pub job_target_rows: u64,
    /// Fetch attempts per window (a split window's halves count their own) before the
    /// rest of its unit is quarantined.
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
            job_max_days: 366,
            job_target_rows: 30_000_000,
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
    /// A re-read holding under this share of the rows a date partition holds live is not
    /// committed (quarantined instead); 0 turns the guard off.
    pub min_replace_ratio: f64,
    /// Streams synced at once.
    pub concurrency: usize,
    pub window: WindowPolicy,
    pub limits: WriterLimits,
    pub now: DateTime<Utc>,
    /// Buckets of a stream's first `incremental-deduped` sync (then fixed in the manifest).
    pub dedupe_buckets: u32,
    /// The memory (bytes) a deduped bucket's merge holds rows in; beyond it, sorted runs
    /// go to temporary files.
    pub dedupe_memory: usize,
    /// `events`: users read between two commits (checkpoints).
    pub events_batch_users: usize,
    /// `events`: a run stops after about this many users (whole batches) and the next run
    /// continues the pass; `None`: no limit.
    pub events_max_users: Option<usize>,
    /// Fired to stop the run early (Ctrl-C, SIGTERM): no new unit starts.
    pub cancel: CancellationToken,
    /// How long to wait for another run's lease on the lake before failing.
    pub wait_for_lock: std::time::Duration,
    /// Plain Parquet folders, or Delta tables as well.
    pub table_format: TableFormat,
    /// How long files a commit retired stay for readers of older table versions.
    pub retain_removed: Duration,
    /// How export streams are read: `data.json`, export jobs, or jobs for backfills. The
    /// library defaults to `data.json`; the command line to `auto`.
    pub export_api: ExportApi,
    /// How export jobs run (slots, polling, retries).
    pub jobs: JobSettings,
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
            min_replace_ratio: 0.5,
            concurrency: 4,
            window: WindowPolicy::default(),
            limits: WriterLimits::default(),
            now: Utc::now(),
            dedupe_buckets: 32,
            dedupe_memory: 256 * 1024 * 1024,
            events_batch_users: 1000,
            events_max_users: None,
            cancel: CancellationToken::new(),
            wait_for_lock: std::time::Duration::ZERO,
            table_format: TableFormat::default(),
            retain_removed: Duration::days(7),
            export_api: ExportApi::Stream,
            jobs: JobSettings::default(),
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
    /// Stopped early by a signal or a lost lease; what it committed stays.
    Interrupted,
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
    /// Rows read without a readable cursor (filed in `date=__HIVE_DEFAULT_PARTITION__`),
    /// and how many of them the lake did not hold yet (the others were read again).
    pub rows_without_cursor: u64,
    pub new_rows_without_cursor: u64,
    pub commits: u64,
    pub cursor: Option<DateTime<Utc>>,
    /// How far behind the end of the run the data is: seconds from the cursor to then.
    pub behind_seconds: Option<i64>,
    /// This stream's requests answered 429, and the seconds waited after them.
    pub rate_limited: u64,
    pub rate_limit_wait_seconds: f64,
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
    pub rate_limit_wait_seconds: f64,
    /// Stopped early by Ctrl-C or SIGTERM.
    pub interrupted: bool,
    /// Another run took the lake's lease over during this one (see [`crate::lock`]).
    pub lease_lost: bool,
    /// The export jobs the run started or followed.
    pub export_jobs: JobsReport,
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
    /// Fired by `opts.cancel` or when the lease is lost: start nothing new.
    stop: CancellationToken,
    /// Every commit checks it and carries its lease generation.
    fence: LeaseFence,
    /// The declared schema of each selected stream (custom fields come from the manifest).
    declared: BTreeMap<&'static str, Arc<StreamSchema>>,
    /// With `--table-format delta`: each stream's Delta table as last read or written.
    tables: Mutex<BTreeMap<&'static str, Table>>,
    /// The run's export jobs, recorded in the lake.
    jobs: Arc<Jobs>,
    /// The selected streams read from export endpoints that have not finished yet: the
    /// streams the job slots are shared by ([`plan::jobs_per_unit`]).
    export_streams_left: AtomicUsize,
    /// Set when Iterable refused to start an export job for the key: under `auto`, the
    /// run's windows are then read through `data.json`.
    jobs_refused: AtomicBool,
}

impl Run {
    /// Apply `change` to the stream's state and commit. The files it returns are deleted
    /// after the commit, or with Delta tables kept as retired until the retention ends; the
    /// stream's table is then brought to the commit.
    async fn commit<F>(
        &self,
        stream: &'static StreamDef,
        change: F,
    ) -> Result<Option<DateTime<Utc>>, ManifestError>
    where
        F: FnOnce(&mut StreamState) -> Vec<String>,
    {
        let delta = self.opts.table_format == TableFormat::Delta;
        let (superseded, cursor, committed, version) = {
            let mut manifest = self.manifest.lock().await;
            let mut next = manifest.clone();
            let state = next
                .streams
                .entry(stream.name.to_string())
                .or_insert_with(|| {
                    StreamState::new(stream.default_mode, stream.cursor_field, SCHEMA_VERSION)
                });
            let mut superseded = change(state);
            if delta {
                let now = Utc::now();
                state
                    .retired
                    .extend(superseded.drain(..).map(|path| Retired {
                        path,
                        retired_at: now,
                    }));
            }
            state.last_run = Some(self.run_id.clone());
            let cursor = state.cursor;
            // The Delta projection needs the committed state; plain lakes skip the copy.
            let committed = delta.then(|| state.clone());
            next.commit(&self.lake, &self.run_id, &self.fence).await?;
            let version = next.version;
            *manifest = next;
            (superseded, cursor, committed, version)
        };
        for path in superseded {
            if let Err(e) = self.lake.store.delete(&self.lake.path(&path)).await {
                tracing::warn!(path, error = %e, "could not delete a superseded file; the next run removes it");
            }
        }
        if let Some(committed) = committed {
            self.project(stream, &committed, version, "commit").await;
        }
        Ok(cursor)
    }

    /// Bring `stream`'s Delta table to `state`, committed as manifest `version`. A failure
    /// is logged: the next run reconciles the table before it reads anything.
    async fn project(
        &self,
        stream: &'static StreamDef,
        state: &StreamState,
        version: u64,
        operation: &str,
    ) {
        let Some(declared) = self.declared.get(stream.name) else {
            return;
        };
        let schema = StreamSchema::from_columns(
            crate::convert::user_fields::extend(declared.columns.clone(), &state.custom_fields),
            declared.with_event_id,
        );
        let description = format!(
            "Iterable {} ({}), kept by iterable-lake in {} mode",
            stream.name,
            stream.data_type(),
            state.mode
        );
        let mut tables = self.tables.lock().await;
        if !tables.contains_key(stream.name) {
            match Table::open(&self.lake, stream.name).await {
                Ok(t) => {
                    tables.insert(stream.name, t);
                }
                Err(e) => {
                    tracing::warn!(stream = stream.name, error = %e, "could not read the stream's Delta table; the next run brings it up to date");
                    return;
                }
            }
        }
        let table = tables.get_mut(stream.name).expect("just inserted");
        let projection = Projection {
            schema: &schema.arrow,
            description: &description,
            files: &state.files,
            cursor_field: (!stream.cursor_field.is_empty()).then_some(stream.cursor_field),
            manifest_version: version,
            run_id: &self.run_id,
            operation,
        };
        match table.project(&self.lake, &projection).await {
            Ok(Some(v)) => {
                tracing::debug!(
                    stream = stream.name,
                    version = v,
                    manifest = version,
                    "Delta table committed"
                );
            }
            Ok(None) => {}
            Err(e) => {
                tables.remove(stream.name);
                tracing::warn!(stream = stream.name, error = %e, "could not commit the stream's Delta table; the next run brings it up to date");
            }
        }
    }

    /// Delete the retired files whose retention has ended (all of them for a plain Parquet
    /// lake, which has no reader of older versions), and commit their removal.
    async fn vacuum(&self) -> Result<(), ManifestError> {
        let horizon = match self.opts.table_format {
            TableFormat::Delta => Utc::now() - self.opts.retain_removed,
            TableFormat::Parquet => Utc::now(),
        };
        let mut manifest = self.manifest.lock().await;
        let expired: Vec<String> = manifest
            .streams
            .values()
            .flat_map(|s| s.retired.iter())
            .filter(|r| r.retired_at < horizon)
            .map(|r| r.path.clone())
            .collect();
        if expired.is_empty() {
            return Ok(());
        }
        let mut next = manifest.clone();
        for s in next.streams.values_mut() {
            s.retired.retain(|r| r.retired_at >= horizon);
        }
        next.commit(&self.lake, &self.run_id, &self.fence).await?;
        *manifest = next;
        drop(manifest);
        tracing::info!(
            files = expired.len(),
            "removing retired files past their retention"
        );
        for path in expired {
            if let Err(e) = self.lake.store.delete(&self.lake.path(&path)).await {
                tracing::warn!(path, error = %e, "could not delete a retired file");
            }
        }
        Ok(())
    }

    /// A lake synced as plain Parquet after Delta: remove the selected streams' Delta logs
    /// this tool wrote, which would go stale (and name files a plain lake deletes at once).
    async fn remove_tables(&self) {
        for stream in &self.opts.streams {
            let Ok(table) = Table::open(&self.lake, stream.name).await else {
                continue;
            };
            if !table.written_by_this_tool() {
                continue;
            }
            tracing::warn!(
                stream = stream.name,
                "removing the stream's Delta log: the lake is plain Parquet now (--table-format parquet)"
            );
            table.remove(&self.lake).await;
        }
    }

    /// Bring each selected stream's Delta table to the manifest, before anything is read:
    /// a crash between a manifest commit and its table's leaves the table behind.
    async fn reconcile_tables(&self) {
        let (states, version) = {
            let m = self.manifest.lock().await;
            (m.streams.clone(), m.version)
        };
        for stream in &self.opts.streams {
            if let Some(state) = states.get(stream.name) {
                self.project(stream, state, version, "reconcile").await;
            }
        }
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
    let run_id = new_run_id(started_at);
    refuse_foreign_dest(&lake, &opts.streams).await?;
    let floor = Manifest::load(&lake).await?.lease_generation;
    let stop = opts.cancel.child_token();
    let lock = LakeLock::acquire(
        &lake,
        &run_id,
        floor,
        opts.wait_for_lock,
        &opts.cancel,
        stop.clone(),
    )
    .await?;
    let result = run_locked(lake, client, opts, run_id, started_at, stop, &lock).await;
    let lease_lost = lock.lost();
    lock.release().await;
    let mut report = result?;
    report.lease_lost = lease_lost;
    Ok(report)
}

async fn run_locked(
    lake: LakeStore,
    client: ApiClient,
    opts: SyncOptions,
    run_id: String,
    started_at: DateTime<Utc>,
    stop: CancellationToken,
    lock: &LakeLock,
) -> Result<RunReport, SyncError> {
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
    // Interrupted or the lease lost: no request waits for its limiter or a retry.
    let client = client.stopping_on(stop.clone());
    let fence = lock.fence();
    let manifest = Manifest::fence(&lake, &run_id, &fence).await?;
    tracing::info!(run = %run_id, dest = %lake.display, streams = opts.streams.len(), version = manifest.version, lease = fence.generation(), "sync started");
    let recovered = manifest.recovered;
    if recovered {
        tracing::warn!(
            "deleting nothing this run: the manifest was recovered from an older version"
        );
    } else {
        remove_garbage(&lake, &manifest, &opts.streams, lock.cleanup_before()).await;
    }
    let book = JobBook::open(
        lake.clone(),
        &run_id,
        fence.generation(),
        opts.jobs.resume_within,
    )
    .await
    .map_err(|source| SyncError::List {
        dest: lake.display.clone(),
        source,
    })?;
    let unusable = book
        .cancel_unusable(&client, |s| opts.streams.iter().any(|d| d.name == s))
        .await;
    if unusable > 0 {
        tracing::info!(
            jobs = unusable,
            "cancelled export jobs earlier runs left for streams this run does not sync, or too old to follow"
        );
    }
    let jobs = Arc::new(Jobs::new(opts.jobs.clone(), book));
    jobs.stats.add_cancelled(unusable);
    let run = Arc::new(Run {
        jobs,
        export_streams_left: AtomicUsize::new(
            schemas.iter().filter(|(s, _)| reads_exports(s)).count(),
        ),
        jobs_refused: AtomicBool::new(false),
        extracted_at: started_at.timestamp_micros(),
        lake,
        client,
        manifest: Mutex::new(manifest),
        run_id,
        declared: schemas
            .iter()
            .map(|(s, schema)| (s.name, schema.clone()))
            .collect(),
        tables: Mutex::new(BTreeMap::new()),
        opts,
        stop,
        fence,
    });
    if !recovered {
        run.vacuum().await?;
    }
    match run.opts.table_format {
        TableFormat::Delta => run.reconcile_tables().await,
        TableFormat::Parquet if !recovered => run.remove_tables().await,
        TableFormat::Parquet => {}
    }
    let concurrency = run.opts.concurrency.max(1);
    let streams: Vec<StreamReport> = futures::stream::iter(schemas)
        .map(|(stream, schema)| {
            let run = run.clone();
            async move { run_stream(&run, stream, schema).await }
        })
        .buffered(concurrency)
        .collect()
        .await;
    let cancelled = run.jobs.book().cancel_left(&run.client).await;
    run.jobs.stats.add_cancelled(cancelled);
    if cancelled > 0 {
        tracing::info!(jobs = cancelled, "cancelled export jobs earlier runs left");
    }
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
        rate_limit_wait_seconds: load(&stats.rate_limit_wait_ms) as f64 / 1000.0,
        interrupted: run.opts.cancel.is_cancelled(),
        lease_lost: lock.lost(),
        export_jobs: run.jobs.stats.report(),
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

/// Refuse a `--dest` without a manifest whose streams' folders hold anything: its objects
/// are someone else's, or a lake whose manifest was not copied; either way not garbage.
async fn refuse_foreign_dest(
    lake: &LakeStore,
    streams: &[&'static StreamDef],
) -> Result<(), SyncError> {
    const SHOWN: usize = 5;
    let list_err = |source| SyncError::List {
        dest: lake.display.clone(),
        source,
    };
    let manifests = lake
        .store
        .list(Some(&lake.path(crate::manifest::MANIFEST_DIR)));
    if !manifests
        .try_collect::<Vec<_>>()
        .await
        .map_err(list_err)?
        .is_empty()
    {
        return Ok(());
    }
    let mut found = Vec::new();
    for s in streams {
        let objects: Vec<_> = lake
            .store
            .list(Some(&lake.path(s.name)))
            .try_collect()
            .await
            .map_err(list_err)?;
        found.extend(objects.iter().map(|o| lake.relative(&o.location)));
    }
    if found.is_empty() {
        return Ok(());
    }
    found.sort();
    let more = found.len().saturating_sub(SHOWN);
    found.truncate(SHOWN);
    Err(SyncError::NotALake {
        dest: lake.display.clone(),
        paths: found,
        more,
    })
}

/// Whether `name` is the name of a data file this tool writes, `part-<run id>-<n>.parquet`
/// (run id: `YYYYMMDDTHHMMSSZ-xxxxxx`, see [`new_run_id`]), or of a local upload of one in
/// progress (`…parquet#<n>`).
fn own_file_name(name: &str) -> bool {
    let name = match name.contains('#') {
        true => match upload_of(name) {
            Some(file) => file,
            None => return false,
        },
        false => name,
    };
    let Some(rest) = name
        .strip_prefix("part-")
        .and_then(|r| r.strip_suffix(".parquet"))
    else {
        return false;
    };
    let b = rest.as_bytes();
    let digits = |r: std::ops::Range<usize>| b[r].iter().all(u8::is_ascii_digit);
    b.len() > 25
        && digits(0..8)
        && b[8] == b'T'
        && digits(9..15)
        && b[15] == b'Z'
        && b[16] == b'-'
        && b[17..23].iter().all(|c| c.is_ascii_hexdigit())
        && b[23] == b'-'
        && digits(24..b.len())
}

/// The name of the file whose local upload in progress `name` is: `<file>#<digits>`.
fn upload_of(name: &str) -> Option<&str> {
    let (file, n) = name.rsplit_once('#')?;
    (!n.is_empty() && n.bytes().all(|b| b.is_ascii_digit())).then_some(file)
}

/// Delete the files under the streams' folders that are provably garbage of this tool's:
/// of its own name pattern, named by no commit, and last written before `before` (the
/// previous holder's lease expiry, or this run's acquisition, on the store's clock), so a
/// file of a run that still writes is never taken. Everything else stays; objects that are
/// not the tool's are logged once.
async fn remove_garbage(
    lake: &LakeStore,
    manifest: &Manifest,
    streams: &[&'static StreamDef],
    before: DateTime<Utc>,
) {
    let live: BTreeSet<&str> = manifest.named_paths().collect();
    remove_staging_files(lake, streams, before);
    let mut foreign = Vec::new();
    for s in streams {
        let prefix = lake.path(s.name);
        let Ok(objects) = lake.store.list(Some(&prefix)).try_collect::<Vec<_>>().await else {
            continue;
        };
        let delta_log = format!("{}/{}/", s.name, crate::delta::LOG_DIR);
        for o in objects {
            let relative = lake.relative(&o.location);
            if relative.starts_with(&delta_log) || live.contains(relative.as_str()) {
                continue;
            }
            if !o.location.filename().is_some_and(own_file_name) {
                foreign.push(relative);
            } else if o.last_modified < before {
                tracing::info!(path = %relative, "removing a file no commit names");
                let _ = lake.store.delete(&o.location).await;
            } else {
                tracing::info!(path = %relative, "leaving a file no commit names yet: written after the previous run's lease expired; a later run removes it");
            }
        }
    }
    if !foreign.is_empty() {
        tracing::warn!(
            count = foreign.len(),
            first = %foreign.iter().take(5).cloned().collect::<Vec<_>>().join(", "),
            "objects in the streams' folders that this tool did not write are left alone"
        );
    }
}

/// Delete the staging files of uploads a killed run left in a local lake, last written
/// before `before`: `part-…parquet#<digits>` in the streams' folders and under
/// `_staging/`, and `job-<id>.json#<digits>` under `_jobs/`. The object store does not list
/// them, so nothing else would.
fn remove_staging_files(lake: &LakeStore, streams: &[&'static StreamDef], before: DateTime<Utc>) {
    let Some(root) = lake.local_dir() else {
        return;
    };
    let mut dirs: Vec<std::path::PathBuf> = streams.iter().map(|s| root.join(s.name)).collect();
    dirs.extend([dedupe::STAGING_DIR, JOBS_DIR].map(|d| root.join(d)));
    while let Some(dir) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for path in entries.flatten().map(|e| e.path()) {
            let staging = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(upload_of)
                .is_some_and(|file| own_file_name(file) || is_record_name(file));
            let old = || {
                std::fs::metadata(&path)
                    .and_then(|m| m.modified())
                    .is_ok_and(|t| DateTime::<Utc>::from(t) < before)
            };
            if path.is_dir() {
                dirs.push(path);
            } else if staging && old() {
                tracing::info!(path = %path.display(), "removing an unfinished upload");
                let _ = std::fs::remove_file(&path);
            }
        }
    }
}

/// How a mode lays a dated stream's files out. Modes of one layout continue each other's
/// cursor; a change of layout starts the stream over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FileLayout {
    /// `date=` folders: `incremental` and `full-refresh-overwrite`.
    Dated,
    /// `bucket=` folders: `incremental-deduped`.
    Buckets,
    /// `snapshot_date=` folders: `full-refresh-append`.
    Snapshots,
}

fn layout_of(mode: SyncMode) -> FileLayout {
    match mode {
        SyncMode::Incremental | SyncMode::FullRefreshOverwrite => FileLayout::Dated,
        SyncMode::IncrementalDeduped => FileLayout::Buckets,
        SyncMode::FullRefreshAppend => FileLayout::Snapshots,
    }
}

/// Whether a stream last synced in `from` continues from its cursor in `to`.
fn same_layout(from: SyncMode, to: SyncMode) -> bool {
    layout_of(from) == layout_of(to)
}

fn file_layout(stream: &str, f: &LiveFile) -> Option<FileLayout> {
    let rest = f.file.path.strip_prefix(stream)?.strip_prefix('/')?;
    [
        ("date=", FileLayout::Dated),
        ("bucket=", FileLayout::Buckets),
        ("snapshot_date=", FileLayout::Snapshots),
    ]
    .into_iter()
    .find_map(|(prefix, layout)| rest.starts_with(prefix).then_some(layout))
}

/// Put `s` in `mode`. When that changes the layout, start the stream over: forget its cursor,
/// quarantined windows and pass checkpoint, and retire the files of every other layout
/// (returned, to delete after the commit). Called in the commit that first writes in `mode`,
/// so a switch happens whole or not at all.
fn switch_layout(s: &mut StreamState, stream: &str, mode: SyncMode) -> Vec<String> {
    let from = s.mode;
    s.mode = mode;
    if same_layout(from, mode) {
        return Vec::new();
    }
    tracing::info!(stream, from = %from, to = %mode, "the mode's layout changed: starting the stream over and retiring the other layout's files");
    s.cursor = None;
    s.quarantine.clear();
    s.checkpoint = None;
    let to = layout_of(mode);
    let (old, keep): (Vec<_>, Vec<_>) = std::mem::take(&mut s.files)
        .into_iter()
        .partition(|f| file_layout(stream, f) != Some(to));
    s.files = keep;
    old.into_iter().map(|f| f.file.path).collect()
}

fn floor_day(micros: i64) -> i64 {
    day_of(micros) * MICROS_PER_DAY
}

fn to_time(micros: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(micros).expect("in range")
}

struct Progress {
    report: StreamReport,
    /// The stream stopped early because the run is stopping.
    interrupted: bool,
}

/// Whether `stream` is read from an export endpoint (`data.json` or export jobs).
fn reads_exports(stream: &StreamDef) -> bool {
    stream.layout == Layout::Dated && stream.source != Source::UserEvents
}

async fn run_stream(
    run: &Run,
    stream: &'static StreamDef,
    schema: Arc<StreamSchema>,
) -> StreamReport {
    let t0 = Instant::now();
    let mode = run.opts.mode.unwrap_or(stream.default_mode);
    tracing::info!(stream = stream.name, %mode, "stream started");
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
            rows_without_cursor: 0,
            new_rows_without_cursor: 0,
            commits: 0,
            cursor: None,
            behind_seconds: None,
            rate_limited: 0,
            rate_limit_wait_seconds: 0.0,
            quarantined: Vec::new(),
            seconds: 0.0,
        },
        interrupted: false,
    };
    let schema = custom_fields::typed_schema(run, stream, schema).await;
    let decoder = Arc::new(Decoder::new(
        schema.clone(),
        run.extracted_at,
        stream.data_type(),
    ));
    let (client, api_stats) = run.client.scoped();
    let ctx = StreamCtx {
        run,
        client,
        stream,
        decoder,
        schema,
        namer: FileNamer::new(&run.run_id),
    };
    let result = match (stream.layout, mode) {
        _ if ctx.stopping(&mut p) => Ok(()),
        _ if stream.source == Source::UserEvents => ctx.user_events(mode, &mut p).await,
        (Layout::Dated, SyncMode::Incremental) => ctx.incremental(false, &mut p).await,
        (Layout::Dated, SyncMode::IncrementalDeduped) if !stream.primary_key.is_empty() => {
            ctx.incremental(true, &mut p).await
        }
        (Layout::Dated, SyncMode::IncrementalDeduped) => {
            tracing::info!(
                stream = stream.name,
                "an event stream has no key to deduplicate on; incremental keeps each event once"
            );
            p.report.mode = SyncMode::Incremental;
            ctx.incremental(false, &mut p).await
        }
        (Layout::Dated, _) => ctx.full_refresh(mode, &mut p).await,
        (_, SyncMode::Incremental | SyncMode::IncrementalDeduped) => {
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
    if reads_exports(stream) {
        run.export_streams_left.fetch_sub(1, Ordering::Relaxed);
    }
    if p.report.rows_without_cursor > 0 {
        tracing::warn!(
            stream = stream.name,
            rows = p.report.rows_without_cursor,
            new = p.report.new_rows_without_cursor,
            "rows without a readable cursor were kept in date=__HIVE_DEFAULT_PARTITION__ (rows read again are kept once)"
        );
    }
    if let Err(e) = result {
        if run.opts.cancel.is_cancelled() {
            tracing::warn!(stream = stream.name, error = %e, "stream stopped by the interruption; it commits nothing more");
            p.report.status = StreamStatus::Interrupted;
        } else {
            tracing::error!(stream = stream.name, error = %e, "stream failed");
            p.report.status = StreamStatus::Failed(e);
        }
    } else if p.interrupted {
        p.report.status = StreamStatus::Interrupted;
    } else if !p.report.quarantined.is_empty() {
        p.report.status = StreamStatus::Quarantined;
    }
    p.report.seconds = t0.elapsed().as_secs_f64();
    let cursor = match p.report.cursor {
        Some(c) => Some(c),
        None => ctx.state().await.and_then(|s| s.cursor),
    };
    p.report.behind_seconds = cursor.map(|c| (Utc::now() - c).num_seconds());
    p.report.rate_limited = api_stats.rate_limited.load(Ordering::Relaxed);
    p.report.rate_limit_wait_seconds =
        api_stats.rate_limit_wait_ms.load(Ordering::Relaxed) as f64 / 1000.0;
    tracing::info!(stream = stream.name, rows = p.report.rows, files = p.report.files, status = ?p.report.status, "stream done");
    p.report
}

struct StreamCtx<'r> {
    run: &'r Run,
    /// The run's client, counting this stream's share of requests and waits.
    client: ApiClient,
    stream: &'static StreamDef,
    decoder: Arc<Decoder>,
    schema: Arc<StreamSchema>,
    namer: Arc<FileNamer>,
}

impl StreamCtx<'_> {
    fn opts(&self) -> &SyncOptions {
        &self.run.opts
    }

    /// Whether to start nothing new (Ctrl-C, SIGTERM or a lost lease); marks the stream
    /// interrupted.
    fn stopping(&self, p: &mut Progress) -> bool {
        if self.run.stop.is_cancelled() {
            if !p.interrupted {
                tracing::warn!(
                    stream = self.stream.name,
                    "stopping early: the run was interrupted or lost its lease"
                );
            }
            p.interrupted = true;
        }
        p.interrupted
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

    /// The end of this run's reading: the earlier of `--end-date` and `now - lag`.
    fn end(&self) -> i64 {
        plan::read_end(self.opts())
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

    /// Commit a full refresh in `mode`: `files` replace the files the mode replaces, the
    /// cursor becomes `cursor` and nothing stays quarantined.
    async fn commit_refresh(
        &self,
        mode: SyncMode,
        files: Vec<WrittenFile>,
        cursor: DateTime<Utc>,
        p: &mut Progress,
    ) -> Result<(), String> {
        self.count(&files, p);
        let new_files = self.live(files);
        let committed = self
            .run
            .commit(self.stream, |s| {
                s.mode = mode;
                let (old, keep): (Vec<_>, Vec<_>) = std::mem::take(&mut s.files)
                    .into_iter()
                    .partition(|f| self.replaced_by(mode, f));
                s.files = keep;
                s.files.extend(new_files);
                s.cursor = Some(cursor);
                s.quarantine.clear();
                old.into_iter().map(|f| f.file.path).collect()
            })
            .await
            .map_err(|e| e.to_string())?;
        p.report.commits += 1;
        p.report.cursor = committed;
        Ok(())
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_file_names_are_part_run_id_number() {
        let id = new_run_id(Utc::now());
        for own in [
            format!("part-{id}-00000.parquet"),
            format!("part-{id}-12.parquet#3"),
            "part-20240101T000000Z-abcdef-00007.parquet".to_string(),
        ] {
            assert!(own_file_name(&own), "{own}");
        }
        for foreign in [
            "notes.txt",
            "data.json",
            "part-0.parquet",
            "part-00000-1f2e3d.snappy.parquet",
            "part-20240101T000000Z-abcdef-.parquet",
            "part-20240101T000000Z-abcdeg-1.parquet",
            "part-20240101T000000Z-abcdef-1.parquet#",
            "part-20240101T000000Z-abcdef-1.parquet.tmp",
            "notes.txt#1",
        ] {
            assert!(!own_file_name(foreign), "{foreign}");
        }
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
