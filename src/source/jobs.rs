//! Iterable's asynchronous export jobs: one window of one export stream read through
//! `POST /api/export/start`, `GET /api/export/{jobId}/files` and the files it lists, fed as one
//! body into the same [pipeline](super::pipeline) as a `data.json` response.
//!
//! - A job is started for the whole window; its files, in the order listed (names increase,
//!   paged with `startAfter`), are downloaded while it runs, [`JobSettings::downloads`] at
//!   once, each streamed through a buffer of a few pieces and fed whole into the pipeline in
//!   the order listed: memory stays flat whatever the window's size.
//! - The window's body ends cleanly only when the job said `Completed`, not
//!   `exportTruncated`, a listing after that found no further file, and every file listed was
//!   read whole. Anything else ends it with an error, so the pipeline deletes what it wrote
//!   and the caller splits, retries or quarantines the window as for `data.json`.
//! - Faults: a job that goes back from `Running` to `Enqueued` is simply polled on. A job that
//!   fails before any of its bytes were fed is started again ([`JobSettings::restarts`]
//!   times); after that, or once bytes were fed, the window fails ([`JobError::Failed`],
//!   splittable); so does a file answering 404 because its job failed meanwhile.
//!   `exportTruncated` fails the window so that it is split. A file URL answering
//!   403 (expired) is listed again for a fresh one; a file whose fresh URLs keep expiring
//!   fails the window so that it is split (its halves get jobs and URLs of their own). A
//!   download cut off (connection reset, a body shorter than its `Content-Length`, a body
//!   ending inside a record) is requested again from the file's start, and the bytes
//!   already fed are skipped: a job's files do not change once listed, so no line is fed
//!   twice.
//! - A key Iterable refuses to start jobs for (401, 403 on `export/start`) fails the window
//!   with [`JobError::Refused`], which the caller may read through `data.json` instead.
//! - Once the run is stopped (Ctrl-C, SIGTERM, a lost lease), no job is started and a job
//!   being followed is left recorded for the next run ([`ApiError::Stopped`]).
//! - File URLs are pre-signed: their requests carry no `Api-Key` ([`ApiClient::download`]),
//!   and neither errors nor logs name a URL (its query string is the signature).
//! - Up to [`JobSettings::max_jobs`] jobs of the whole run are in flight at once (Iterable
//!   processes 4 per organization and queues the rest; the caller fetches several windows of a
//!   unit at once to use them); `start`, `files` and `DELETE` share the client's `ExportJobs`
//!   limiter (1 a second, Iterable's limit) and its 429 backoff. Polls back off from
//!   [`JobSettings::poll_min`] to [`JobSettings::poll_max`] while nothing new is listed, and a
//!   poll the client gave up on is tried again: the job goes on at Iterable meanwhile.
//! - Each job started is recorded in the lake's `_jobs/` folder ([`JobBook`]) until its window
//!   is done with it, so that the next run can resume or cancel what a killed run left.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::{Stream, StreamExt};
use serde::Deserialize;
use serde_json::json;
use tokio::sync::{Semaphore, mpsc};
use tokio_util::task::AbortOnDropHandle;
use url::Url;

use super::FetchError;
use super::export::{ExportFetcher, Window};
use super::pipeline::{self, Fetched};
use crate::api::{ApiClient, ApiError, Family};
use crate::convert::timestamp::format_for_query;
use crate::progress::ENGINE_TARGET;
use crate::sink::PartitionedWriter;

pub use book::{BookError, JOBS_DIR, JobBook, JobRecord, is_record_name};

mod book;

/// How export jobs are run; shared by every window of a run.
#[derive(Debug, Clone)]
pub struct JobSettings {
    /// Jobs in flight at once, over the whole run.
    pub max_jobs: usize,
    /// Times a job that failed before feeding anything is started again.
    pub restarts: u32,
    /// The first wait between two polls of a job, and the wait after one that found files.
    pub poll_min: Duration,
    /// The longest wait between two polls (it doubles while nothing new is listed).
    pub poll_max: Duration,
    /// Polls of a job given up by the client (429s, 5xx, connections) before the window
    /// fails.
    pub poll_failures: u32,
    /// Files of one job downloading at once, each streamed through a buffer of a few
    /// pieces while the pipeline reads the one before it: memory stays bounded, and the
    /// pipeline does not wait for each file's first bytes.
    pub downloads: usize,
    /// Attempts at one file (cut-off downloads, connection errors) before the window fails.
    pub download_attempts: u32,
    /// Fresh URLs asked for one file after 403s before the window fails.
    pub url_refreshes: u32,
    /// A job an earlier run recorded is followed when younger than this, else cancelled.
    pub resume_within: chrono::Duration,
}

impl Default for JobSettings {
    fn default() -> Self {
        JobSettings {
            max_jobs: 4,
            restarts: 3,
            poll_min: Duration::from_millis(250),
            poll_max: Duration::from_secs(5),
            poll_failures: 10,
            downloads: 3,
            download_attempts: 5,
            url_refreshes: 5,
            resume_within: chrono::Duration::hours(6),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error("export job {job} failed (the window's job was started {starts} time(s))")]
    Failed { job: i64, starts: u32 },
    #[error(
        "export job {job} was truncated at Iterable's size cap (exportTruncated): the window \
         is too large for one job"
    )]
    Truncated { job: i64 },
    #[error("file {file} of export job {job}: the download answered {status}")]
    Download { job: i64, file: String, status: u16 },
    #[error("file {file} of export job {job}: {attempts} downloads failed, the last: {last}")]
    DownloadFailed {
        job: i64,
        file: String,
        attempts: u32,
        last: String,
    },
    #[error("file {file} of export job {job}: its URL expired {refreshes} times over")]
    Expired {
        job: i64,
        file: String,
        refreshes: u32,
    },
    #[error(
        "Iterable refused to start an export job ({status}): this key may not use export \
         jobs; use a key that may, or --export-api stream (auto then reads through data.json)"
    )]
    Refused { status: u16 },
    #[error("export job {job}: {problem}")]
    Shape { job: i64, problem: String },
    #[error("recording export job {job} in the lake: {source}")]
    Book { job: i64, source: BookError },
}

impl JobError {
    /// Whether a smaller window may succeed where this one failed: its own job, with its
    /// own files and URLs.
    pub fn is_splittable(&self) -> bool {
        matches!(
            self,
            JobError::Failed { .. }
                | JobError::Truncated { .. }
                | JobError::DownloadFailed { .. }
                | JobError::Expired { .. }
        )
    }
}

/// Counters of the run's export jobs, for progress and the report.
#[derive(Debug, Default)]
pub struct JobStats {
    /// Jobs waiting for one of the run's slots.
    pub waiting: AtomicU64,
    /// Jobs Iterable last said were `Enqueued`.
    pub enqueued: AtomicU64,
    /// Jobs Iterable last said were `Running`.
    pub running: AtomicU64,
    pub started: AtomicU64,
    pub completed: AtomicU64,
    pub failed: AtomicU64,
    pub restarted: AtomicU64,
    pub cancelled: AtomicU64,
    pub files: AtomicU64,
    pub bytes: AtomicU64,
    /// Time from each job's start to its `Completed` (or end), summed over jobs.
    pub wait_ms: AtomicU64,
    /// The most jobs `Enqueued` or `Running` at once.
    pub most_in_flight: AtomicU64,
}

impl JobStats {
    fn add(&self, pick: fn(&JobStats) -> &AtomicU64, n: u64) {
        pick(self).fetch_add(n, Ordering::Relaxed);
    }

    fn sub(&self, pick: fn(&JobStats) -> &AtomicU64) {
        pick(self).fetch_sub(1, Ordering::Relaxed);
    }

    fn get(&self, pick: fn(&JobStats) -> &AtomicU64) -> u64 {
        pick(self).load(Ordering::Relaxed)
    }

    /// Count `n` jobs earlier runs left that this run cancelled.
    pub fn add_cancelled(&self, n: u64) {
        self.add(|s| &s.cancelled, n);
    }

    /// A plain copy, for the run report.
    pub fn report(&self) -> JobsReport {
        JobsReport {
            started: self.get(|s| &s.started),
            completed: self.get(|s| &s.completed),
            failed: self.get(|s| &s.failed),
            restarted: self.get(|s| &s.restarted),
            cancelled: self.get(|s| &s.cancelled),
            files: self.get(|s| &s.files),
            bytes: self.get(|s| &s.bytes),
            wait_seconds: self.get(|s| &s.wait_ms) as f64 / 1000.0,
            most_in_flight: self.get(|s| &s.most_in_flight),
        }
    }
}

/// What the run's export jobs did.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct JobsReport {
    pub started: u64,
    pub completed: u64,
    pub failed: u64,
    pub restarted: u64,
    /// Jobs cancelled: the run's own it gave up, and those earlier runs left.
    pub cancelled: u64,
    pub files: u64,
    pub bytes: u64,
    /// Seconds from each job's start to its completion, summed over jobs.
    pub wait_seconds: f64,
    /// The most jobs in flight (`Enqueued` or `Running`) at once.
    pub most_in_flight: u64,
}

/// The run's export jobs: their slots, settings, counters and where they are recorded.
#[derive(Debug)]
pub struct Jobs {
    slots: Arc<Semaphore>,
    pub settings: JobSettings,
    pub stats: JobStats,
    book: JobBook,
}

impl Jobs {
    pub fn new(settings: JobSettings, book: JobBook) -> Self {
        Jobs {
            slots: Arc::new(Semaphore::new(settings.max_jobs.max(1))),
            settings,
            stats: JobStats::default(),
            book,
        }
    }

    pub fn book(&self) -> &JobBook {
        &self.book
    }
}

/// What Iterable says of a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
enum JobState {
    Enqueued,
    Running,
    Completed,
    Failed,
}

/// `ExportJobStatusAndFiles`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct StatusAndFiles {
    job_state: JobState,
    #[serde(default)]
    export_truncated: bool,
    #[serde(default)]
    files: Vec<Listed>,
}

#[derive(Debug, Clone, Deserialize)]
struct Listed {
    file: String,
    url: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Started {
    job_id: i64,
}

/// How one start of a job ended, short of success.
enum JobEnd {
    /// Iterable said `Failed`.
    Failed,
    Error(FetchError),
}

impl From<FetchError> for JobEnd {
    fn from(e: FetchError) -> Self {
        JobEnd::Error(e)
    }
}

impl From<JobError> for JobEnd {
    fn from(e: JobError) -> Self {
        JobEnd::Error(e.into())
    }
}

impl From<ApiError> for JobEnd {
    fn from(e: ApiError) -> Self {
        JobEnd::Error(e.into())
    }
}

/// One window's job, as it runs.
struct Run {
    client: ApiClient,
    jobs: Arc<Jobs>,
    stream: &'static str,
    data_type: &'static str,
    /// The other spelling of the data type, while the first is not refused.
    alt_data_type: Option<&'static str>,
    /// Set when the server refused the first spelling (the fetcher's flag).
    use_alt_spelling: Arc<AtomicBool>,
    window: Window,
    body: mpsc::Sender<Bytes>,
    /// Whether any byte went to the pipeline.
    fed: bool,
}

impl ExportFetcher {
    /// Fetch `window` into `writer`'s files through an export job. On failure the files are
    /// deleted, like [`fetch`](Self::fetch).
    pub async fn fetch_by_job(
        &self,
        jobs: &Arc<Jobs>,
        window: Window,
        writer: PartitionedWriter,
    ) -> Result<Fetched, FetchError> {
        let (tx, rx) = mpsc::channel(4);
        let run = Run {
            client: self.client.clone(),
            jobs: jobs.clone(),
            stream: self.stream.name,
            data_type: self.data_type().0,
            alt_data_type: self.data_type().1,
            use_alt_spelling: self.alt_spelling_flag(),
            window,
            body: tx,
            fed: false,
        };
        let producer = AbortOnDropHandle::new(tokio::spawn(run.drive()));
        pipeline::run(body(rx, producer), self.decoder.clone(), None, writer).await
    }
}

/// The bytes `rx` receives, then the producer's error if it ended with one: a producer that
/// stopped early never looks like a body that ended cleanly.
fn body(
    rx: mpsc::Receiver<Bytes>,
    producer: AbortOnDropHandle<Result<(), FetchError>>,
) -> impl Stream<Item = Result<Bytes, FetchError>> + Unpin + Send + 'static {
    let data = futures::stream::unfold(
        rx,
        |mut rx| async move { rx.recv().await.map(|b| (Ok(b), rx)) },
    );
    let end = futures::stream::once(async move {
        match producer.await {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(Err(e)),
            Err(_) => Some(Err(FetchError::Task("export job".into()))),
        }
    })
    .filter_map(futures::future::ready);
    Box::pin(data.chain(end))
}

impl Run {
    async fn drive(mut self) -> Result<(), FetchError> {
        let mut starts = 0u32;
        let mut tried_resume = false;
        loop {
            let stats = &self.jobs.stats;
            stats.add(|s| &s.waiting, 1);
            let slot = self.jobs.slots.clone().acquire_owned().await;
            stats.sub(|s| &s.waiting);
            let slot = slot.map_err(|_| FetchError::Task("export job slots".into()))?;
            let taken = match tried_resume {
                false => self.jobs.book.take(self.stream, self.window),
                true => None,
            };
            tried_resume = true;
            let resumed = taken.is_some();
            let job = match taken {
                Some(job) => {
                    tracing::info!(stream = self.stream, window = %self.window, job, "following the export job an earlier run started");
                    job
                }
                None if self.client.is_stopped() => {
                    return Err(ApiError::Stopped {
                        url: "export/start".into(),
                    }
                    .into());
                }
                None => {
                    starts += 1;
                    self.start().await?
                }
            };
            let t0 = Instant::now();
            let ended = self.follow(job, slot).await;
            self.jobs
                .stats
                .add(|s| &s.wait_ms, t0.elapsed().as_millis() as u64);
            match ended {
                Ok(()) => {
                    self.jobs.book.forget(self.stream, job).await;
                    return Ok(());
                }
                Err(JobEnd::Failed) => {
                    self.jobs.stats.add(|s| &s.failed, 1);
                    self.jobs.book.forget(self.stream, job).await;
                    if self.fed || starts > self.jobs.settings.restarts {
                        return Err(JobError::Failed {
                            job,
                            starts: starts.max(1),
                        }
                        .into());
                    }
                    self.jobs.stats.add(|s| &s.restarted, 1);
                    tracing::warn!(stream = self.stream, window = %self.window, job, "export job failed; starting it again");
                }
                Err(JobEnd::Error(e @ FetchError::Api(ApiError::Stopped { .. }))) => {
                    tracing::info!(stream = self.stream, window = %self.window, job, "run stopped: the export job is left recorded for the next run to follow or cancel");
                    return Err(e);
                }
                Err(JobEnd::Error(e)) if resumed && !self.fed => {
                    tracing::warn!(stream = self.stream, window = %self.window, job, error = %e, "the export job an earlier run started cannot be followed; starting another");
                    self.cancel(job).await;
                }
                Err(JobEnd::Error(e)) => {
                    self.cancel(job).await;
                    return Err(e);
                }
            }
        }
    }

    /// Start the window's job and record it in the lake. A data type spelling the server
    /// refuses (400) is tried in its other spelling, as for `data.json`.
    async fn start(&mut self) -> Result<i64, FetchError> {
        let resp = match (self.post_start(self.data_type).await, self.alt_data_type) {
            (Err(ApiError::Status { status: 400, .. }), Some(alt)) => {
                tracing::info!(
                    stream = self.stream,
                    rejected = self.data_type,
                    trying = alt,
                    "data type spelling rejected"
                );
                let resp = self.post_start(alt).await.map_err(refused)?;
                self.use_alt_spelling.store(true, Ordering::Relaxed);
                (self.data_type, self.alt_data_type) = (alt, None);
                resp
            }
            (resp, _) => resp.map_err(refused)?,
        };
        let started: Started = read_json(resp, 0).await?;
        let job = started.job_id;
        self.jobs.stats.add(|s| &s.started, 1);
        self.progress(job, "export job started");
        let record = JobRecord::new(self.stream, job, self.window);
        if let Err(source) = self.jobs.book.record(&record).await {
            self.cancel(job).await;
            return Err(JobError::Book { job, source }.into());
        }
        Ok(job)
    }

    async fn post_start(&self, data_type: &str) -> Result<reqwest::Response, ApiError> {
        let request = json!({
            "dataTypeName": data_type,
            "outputFormat": "application/x-json-stream",
            "startDateTime": format_for_query(self.window.start),
            "endDateTime": format_for_query(self.window.end),
        });
        self.client
            .post_json(Family::ExportJobs, "export/start", &request)
            .await
    }

    /// Cancel `job` (it failed on our side, or is no longer wanted), and forget it.
    async fn cancel(&self, job: i64) {
        match book::cancel(&self.client, job).await {
            Ok(cancelled) => {
                if cancelled {
                    self.jobs.stats.add(|s| &s.cancelled, 1);
                    tracing::info!(stream = self.stream, job, "export job cancelled");
                }
                self.jobs.book.forget(self.stream, job).await;
            }
            Err(e) => {
                tracing::warn!(stream = self.stream, job, error = %e, "cancelling an export job failed; the next run cancels it");
            }
        }
    }

    fn lister(&self, job: i64) -> Lister {
        Lister {
            client: self.client.clone(),
            jobs: self.jobs.clone(),
            stream: self.stream,
            job,
        }
    }

    /// Poll `job` until it completes, downloading each file as it is listed. `slot` is
    /// given back once Iterable no longer processes the job.
    async fn follow(
        &mut self,
        job: i64,
        slot: tokio::sync::OwnedSemaphorePermit,
    ) -> Result<(), JobEnd> {
        let mut slot = Some(slot);
        let jobs = self.jobs.clone();
        let mut gauge = Gauge::new(&jobs.stats, JobState::Enqueued);
        let mut files: Vec<Listed> = Vec::new();
        let mut next: usize = 0;
        let mut delay = self.jobs.settings.poll_min;
        let lister = self.lister(job);
        loop {
            let page = lister.list(files.last().map(|f| f.file.as_str())).await?;
            gauge.set(page.job_state);
            if page.export_truncated {
                return Err(JobError::Truncated { job }.into());
            }
            let found = page.files.len();
            files.extend(page.files);
            match page.job_state {
                JobState::Failed => return Err(JobEnd::Failed),
                JobState::Completed => drop(slot.take()),
                JobState::Enqueued | JobState::Running => {}
            }
            let before = next.checked_sub(1).map(|p| &files[p]);
            self.download(job, &files[next..], before).await?;
            next = files.len();
            if page.job_state == JobState::Completed {
                if found == 0 {
                    self.jobs.stats.add(|s| &s.completed, 1);
                    self.progress(job, "export job read");
                    return Ok(());
                }
                continue;
            }
            if found > 0 {
                delay = self.jobs.settings.poll_min;
                continue;
            }
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = self.client.stopped() => {
                    return Err(FetchError::from(ApiError::Stopped {
                        url: format!("export job {job}"),
                    })
                    .into());
                }
            }
            delay = (delay * 2).min(self.jobs.settings.poll_max);
        }
    }

    /// Download `files` (listed after `before`) whole into the body, in order, up to
    /// [`JobSettings::downloads`] at once ([`Lister::download`]).
    async fn download(
        &mut self,
        job: i64,
        files: &[Listed],
        before: Option<&Listed>,
    ) -> Result<(), JobEnd> {
        let lister = self.lister(job);
        let mut after = before.map(|f| f.file.clone());
        let mut pending = std::collections::VecDeque::new();
        let mut queued = files.iter();
        loop {
            while pending.len() < self.jobs.settings.downloads.max(1) {
                let Some(file) = queued.next() else { break };
                let (tx, rx) = mpsc::channel(DOWNLOAD_PIECES);
                let task = lister.clone().download(file.clone(), after.clone(), tx);
                pending.push_back((rx, AbortOnDropHandle::new(tokio::spawn(task))));
                after = Some(file.file.clone());
            }
            let Some((mut rx, task)) = pending.pop_front() else {
                return Ok(());
            };
            while let Some(piece) = rx.recv().await {
                self.feed(piece).await?;
            }
            match task.await {
                Ok(Ok(())) => self.jobs.stats.add(|s| &s.files, 1),
                Ok(Err(end)) => return Err(end),
                Err(_) => return Err(FetchError::Task("export job download".into()).into()),
            }
        }
    }

    /// An event of the progress bars' (and the log's), with the run's job counters.
    fn progress(&self, job: i64, what: &'static str) {
        let s = &self.jobs.stats;
        tracing::info!(
            target: ENGINE_TARGET,
            stream = self.stream,
            window = %self.window,
            job,
            jobs_queued = s.get(|s| &s.waiting) + s.get(|s| &s.enqueued),
            jobs_running = s.get(|s| &s.running),
            jobs_done = s.get(|s| &s.completed),
            job_files = s.get(|s| &s.files),
            job_bytes = s.get(|s| &s.bytes),
            "{what}"
        );
    }

    async fn feed(&mut self, piece: Bytes) -> Result<(), FetchError> {
        self.jobs.stats.add(|s| &s.bytes, piece.len() as u64);
        self.fed = true;
        self.body
            .send(piece)
            .await
            .map_err(|_| FetchError::Task("pipeline".into()))
    }
}

/// Pieces of a file buffered ahead of the pipeline while it reads an earlier file.
const DOWNLOAD_PIECES: usize = 16;

/// What a job's polls and downloads need, apart from the window's body.
#[derive(Clone)]
struct Lister {
    client: ApiClient,
    jobs: Arc<Jobs>,
    stream: &'static str,
    job: i64,
}

impl Lister {
    /// One `files` call: the job's state and the files after `after`. The job goes on at
    /// Iterable whatever happens to a poll, so a poll the client gave up on for 429s (the
    /// organization's budget is shared), 5xx or a lost connection is tried again after
    /// [`JobSettings::poll_max`], up to [`JobSettings::poll_failures`] times.
    async fn list(&self, after: Option<&str>) -> Result<StatusAndFiles, FetchError> {
        let job = self.job;
        let query: Vec<(&str, String)> = after
            .map(|a| ("startAfter", a.to_string()))
            .into_iter()
            .collect();
        let mut failures = 0;
        loop {
            match self
                .client
                .get(Family::ExportJobs, &format!("export/{job}/files"), &query)
                .await
            {
                Ok(resp) => return read_json(resp, job).await,
                Err(
                    e @ (ApiError::Status {
                        status: 429 | 500..,
                        ..
                    }
                    | ApiError::Transport { .. }),
                ) if failures < self.jobs.settings.poll_failures => {
                    failures += 1;
                    tracing::warn!(stream = self.stream, job, error = %e, "polling the export job failed; polling again later");
                    tokio::time::sleep(self.jobs.settings.poll_max).await;
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Download `file` (listed after `after`) whole into `out`, ending it with a newline,
    /// listing the job again for a fresh URL when it expired, and requesting it again when
    /// cut off (skipping what was sent). Ends when the reader of `out` is gone.
    async fn download(
        self,
        mut file: Listed,
        after: Option<String>,
        out: mpsc::Sender<Bytes>,
    ) -> Result<(), JobEnd> {
        let (job, name) = (self.job, file.file.clone());
        let (mut sent, mut attempts, mut refreshes) = (0u64, 0u32, 0u32);
        let mut last_byte = b'\n';
        let send = |piece: Bytes| async {
            out.send(piece)
                .await
                .map_err(|_| JobEnd::from(FetchError::Task("pipeline".into())))
        };
        loop {
            let url = Url::parse(&file.url).map_err(|e| JobError::Shape {
                job,
                problem: format!("the URL of file {name} does not parse: {e}"),
            })?;
            let failure = match self.client.download(&url).await {
                Ok(resp) if resp.status().is_success() => {
                    let mut body = pipeline::checked(resp.bytes_stream());
                    let mut seen = 0u64;
                    let mut cut = None;
                    while let Some(piece) = body.next().await {
                        let mut piece = match piece {
                            Ok(piece) => piece,
                            Err(e) => {
                                cut = Some(e.to_string());
                                break;
                            }
                        };
                        let start = seen;
                        seen += piece.len() as u64;
                        if seen <= sent {
                            continue;
                        }
                        if start < sent {
                            piece = piece.slice((sent - start) as usize..);
                        }
                        sent = seen;
                        last_byte = *piece.last().expect("not empty");
                        send(piece).await?;
                    }
                    match cut {
                        None => break,
                        Some(cut) => cut,
                    }
                }
                Ok(resp) if resp.status() == reqwest::StatusCode::FORBIDDEN => {
                    refreshes += 1;
                    if refreshes > self.jobs.settings.url_refreshes {
                        return Err(JobError::Expired {
                            job,
                            file: name,
                            refreshes,
                        }
                        .into());
                    }
                    tracing::info!(stream = self.stream, job, file = %name, "file URL refused (expired); listing the job again");
                    let page = self.list(after.as_deref()).await?;
                    if let Some(fresh) = page.files.into_iter().find(|f| f.file == name) {
                        file = fresh;
                    }
                    continue;
                }
                Ok(resp) if resp.status() == reqwest::StatusCode::NOT_FOUND => {
                    // A job that failed takes its files with it.
                    if self.list(after.as_deref()).await?.job_state == JobState::Failed {
                        return Err(JobEnd::Failed);
                    }
                    return Err(JobError::Download {
                        job,
                        file: name,
                        status: 404,
                    }
                    .into());
                }
                Ok(resp) => {
                    return Err(JobError::Download {
                        job,
                        file: name,
                        status: resp.status().as_u16(),
                    }
                    .into());
                }
                Err(e) => e.to_string(),
            };
            attempts += 1;
            if attempts >= self.jobs.settings.download_attempts {
                return Err(JobError::DownloadFailed {
                    job,
                    file: name,
                    attempts,
                    last: failure,
                }
                .into());
            }
            tracing::warn!(stream = self.stream, job, file = %name, sent, error = %failure, "download cut off; requesting the file again");
            tokio::time::sleep(self.jobs.settings.poll_min).await;
        }
        if last_byte != b'\n' {
            send(Bytes::from_static(b"\n")).await?;
        }
        Ok(())
    }
}

/// Keeps the run's `enqueued`/`running` gauges in step with one job's last known state.
struct Gauge<'s> {
    stats: &'s JobStats,
    state: Option<JobState>,
}

impl<'s> Gauge<'s> {
    fn new(stats: &'s JobStats, state: JobState) -> Self {
        let mut gauge = Gauge { stats, state: None };
        gauge.set(state);
        gauge
    }

    fn slot(state: JobState) -> Option<fn(&JobStats) -> &AtomicU64> {
        match state {
            JobState::Enqueued => Some(|s| &s.enqueued),
            JobState::Running => Some(|s| &s.running),
            JobState::Completed | JobState::Failed => None,
        }
    }

    fn set(&mut self, state: JobState) {
        if self.state == Some(state) {
            return;
        }
        if let Some(pick) = self.state.and_then(Self::slot) {
            self.stats.sub(pick);
        }
        if let Some(pick) = Self::slot(state) {
            self.stats.add(pick, 1);
        }
        self.state = Some(state);
        let in_flight = self.stats.get(|s| &s.enqueued) + self.stats.get(|s| &s.running);
        self.stats
            .most_in_flight
            .fetch_max(in_flight, Ordering::Relaxed);
    }
}

impl Drop for Gauge<'_> {
    fn drop(&mut self) {
        if let Some(pick) = self.state.and_then(Self::slot) {
            self.stats.sub(pick);
        }
    }
}

/// A refusal of `export/start` for the key (401, 403) as [`JobError::Refused`]: the key
/// may read `data.json` but not start jobs.
fn refused(e: ApiError) -> FetchError {
    match e {
        ApiError::Unauthorized { .. } => JobError::Refused { status: 401 }.into(),
        ApiError::Status { status: 403, .. } => JobError::Refused { status: 403 }.into(),
        e => e.into(),
    }
}

/// A JSON answer of the jobs API.
async fn read_json<T: serde::de::DeserializeOwned>(
    resp: reqwest::Response,
    job: i64,
) -> Result<T, FetchError> {
    let bytes = resp.bytes().await?;
    serde_json::from_slice(&bytes).map_err(|e| {
        JobError::Shape {
            job,
            problem: format!("unexpected answer: {e}"),
        }
        .into()
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Mutex;

    use axum::extract::{Path, Query, State};
    use axum::http::{HeaderMap, StatusCode};
    use axum::response::{IntoResponse, Response};
    use axum::routing::{delete, get, post};

    use super::*;
    use crate::api::{ApiKey, ClientConfig};
    use crate::catalog;
    use crate::source::pipeline::tests::email_send_run;

    /// What one `files` poll of the scripted server answers: the state, whether truncated,
    /// and how many of the job's files are listed.
    #[derive(Clone, Copy)]
    struct Step(&'static str, bool, usize);

    /// A scripted jobs API: each job answers its polls from `steps` (the last one repeats),
    /// each started job takes the next script; file `k` of a job holds `LINES` lines.
    #[derive(Default)]
    struct Script {
        /// One script per start, in order.
        jobs: Vec<Vec<Step>>,
        polls: BTreeMap<i64, usize>,
        /// Files whose first URL answers 403 (expired), and those cut short once.
        expired: Vec<String>,
        /// Files whose every URL answers 403.
        always_expired: Vec<String>,
        cut: Vec<String>,
        /// Download requests: (file, carried the Api-Key header).
        downloads: Vec<(String, bool)>,
        /// The first file answers only once the second was requested.
        gated: bool,
        cancelled: Vec<i64>,
    }

    type Shared = Arc<Mutex<Script>>;

    const FILES: usize = 3;
    const LINES: usize = 4;

    fn file_name(k: usize) -> String {
        format!("file-{k:03}.json")
    }

    fn line(job_file: usize, n: usize) -> String {
        format!(
            "{{\"createdAt\":\"2024-01-01 00:00:0{n} +00:00\",\"email\":\"u{job_file}-{n}@x.io\"}}"
        )
    }

    async fn start(State(s): State<Shared>) -> Response {
        let mut s = s.lock().unwrap();
        let id = s.polls.len() as i64 + 1;
        s.polls.insert(id, 0);
        axum::Json(json!({ "jobId": id })).into_response()
    }

    async fn files(
        State(s): State<Shared>,
        Path(id): Path<i64>,
        Query(q): Query<BTreeMap<String, String>>,
        headers: HeaderMap,
    ) -> Response {
        let mut s = s.lock().unwrap();
        if !s.polls.contains_key(&id) {
            let body = json!({ "code": "NotFound", "msg": "no such job" });
            return (StatusCode::NOT_FOUND, axum::Json(body)).into_response();
        }
        let script = s.jobs[(id - 1) as usize].clone();
        let poll = s.polls.get_mut(&id).unwrap();
        let Step(state, truncated, listed) = script[(*poll).min(script.len() - 1)];
        *poll += 1;
        let after = q.get("startAfter").cloned().unwrap_or_default();
        let host = headers.get("host").unwrap().to_str().unwrap();
        // Pages of two files; a URL listed while its file is in `expired` is refused.
        let listed: Vec<_> = (0..listed)
            .map(file_name)
            .filter(|f| *f > after)
            .take(2)
            .map(|f| {
                let expired = s.expired.contains(&f) || s.always_expired.contains(&f);
                let sig = if expired { "old" } else { "ok" };
                json!({ "file": f, "url": format!("http://{host}/dl/{f}?signature={sig}") })
            })
            .collect();
        axum::Json(json!({ "jobId": id, "jobState": state, "exportTruncated": truncated, "files": listed }))
            .into_response()
    }

    async fn download(
        State(s): State<Shared>,
        Path(file): Path<String>,
        Query(q): Query<BTreeMap<String, String>>,
        headers: HeaderMap,
    ) -> Response {
        let gated = {
            let mut s = s.lock().unwrap();
            s.downloads
                .push((file.clone(), headers.get("Api-Key").is_some()));
            s.gated && file == file_name(0)
        };
        // The first file answers once the second (listed on the same page) was asked for.
        if gated {
            let mut waited = 0;
            while !s
                .lock()
                .unwrap()
                .downloads
                .iter()
                .any(|(f, _)| *f == file_name(1))
            {
                if waited == 200 {
                    return StatusCode::SERVICE_UNAVAILABLE.into_response();
                }
                waited += 1;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        let mut s = s.lock().unwrap();
        if q.get("signature").map(String::as_str) != Some("ok") {
            s.expired.retain(|e| *e != file);
            return (StatusCode::FORBIDDEN, "AccessDenied: Request has expired").into_response();
        }
        let k: usize = file[5..8].parse().unwrap();
        let body: String = (0..LINES).map(|n| line(k, n) + "\n").collect();
        if s.cut.contains(&file) {
            s.cut.retain(|c| *c != file);
            return body[..body.len() / 2 + 3].to_string().into_response();
        }
        body.into_response()
    }

    async fn cancel(State(s): State<Shared>, Path(id): Path<i64>) -> Response {
        s.lock().unwrap().cancelled.push(id);
        axum::Json(json!({ "code": "Success" })).into_response()
    }

    /// Serve `script`; fetch one window of `email_send` through it.
    async fn fetch(script: Script) -> (Result<Fetched, FetchError>, Shared, Arc<Jobs>) {
        fetch_with(script, JobBook::none()).await
    }

    /// [`fetch`] with `book` holding the records of earlier runs.
    async fn fetch_with(
        script: Script,
        book: JobBook,
    ) -> (Result<Fetched, FetchError>, Shared, Arc<Jobs>) {
        let shared: Shared = Arc::new(Mutex::new(script));
        let app = axum::Router::new()
            .route("/api/export/start", post(start))
            .route("/api/export/{id}/files", get(files))
            .route("/api/export/{id}", delete(cancel))
            .route("/dl/{file}", get(download))
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        let base = Url::parse(&format!("http://{addr}/api/")).unwrap();
        let mut cfg = ClientConfig::new(base, ApiKey::new("k-1").unwrap());
        cfg.export_job_requests_per_second = 1000;
        cfg.retry.max_retries = 0;
        let client = ApiClient::new(cfg).unwrap();
        let settings = JobSettings {
            poll_min: Duration::from_millis(5),
            poll_max: Duration::from_millis(20),
            ..JobSettings::default()
        };
        let jobs = Arc::new(Jobs::new(settings, book));
        let (decoder, writer) = email_send_run();
        let stream = catalog::find("email_send").unwrap();
        let fetcher = ExportFetcher::new(client, stream, decoder).unwrap();
        let window = Window { start: 0, end: 1 };
        let got = fetcher.fetch_by_job(&jobs, window, writer).await;
        (got, shared, jobs)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_restarted_job_expired_urls_and_cut_files_give_every_line_once_without_the_key() {
        let script = Script {
            jobs: vec![vec![
                Step("Enqueued", false, 0),
                Step("Running", false, 1),
                Step("Enqueued", false, 1),
                Step("Running", false, 2),
                Step("Completed", false, FILES),
            ]],
            expired: vec![file_name(0), file_name(2)],
            cut: vec![file_name(1)],
            ..Script::default()
        };
        let (got, shared, jobs) = fetch(script).await;
        let fetched = got.expect("the window is read");
        assert_eq!(fetched.rows, (FILES * LINES) as u64, "no line fed twice");
        assert_eq!(fetched.malformed, 0);
        let s = shared.lock().unwrap();
        assert!(
            s.downloads.iter().all(|(_, keyed)| !keyed),
            "{:?}",
            s.downloads
        );
        let tries = |f: usize| {
            s.downloads
                .iter()
                .filter(|(n, _)| *n == file_name(f))
                .count()
        };
        assert_eq!(
            (tries(0), tries(1), tries(2)),
            (2, 2, 2),
            "403 or cut once each"
        );
        assert!(s.cancelled.is_empty());
        let report = jobs.stats.report();
        assert_eq!((report.started, report.completed, report.files), (1, 1, 3));
        assert_eq!(
            jobs.stats.get(|s| &s.running) + jobs.stats.get(|s| &s.enqueued),
            0
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_job_s_files_download_at_once_each_fed_whole() {
        let script = Script {
            jobs: vec![vec![Step("Completed", false, FILES)]],
            gated: true,
            cut: vec![file_name(2)],
            ..Script::default()
        };
        let (got, shared, jobs) = fetch(script).await;
        let fetched = got.expect("the first file waits for the second to be asked for");
        assert_eq!(fetched.rows, (FILES * LINES) as u64);
        assert_eq!(
            fetched.malformed, 0,
            "no file's piece inside another's line"
        );
        assert_eq!(shared.lock().unwrap().downloads.len(), FILES + 1);
        assert_eq!(jobs.stats.report().files, FILES as u64);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failed_job_is_started_again_then_fails_the_window_splittably() {
        let failed = vec![Step("Enqueued", false, 0), Step("Failed", false, 0)];
        let done = vec![Step("Running", false, 1), Step("Completed", false, FILES)];
        let script = Script {
            jobs: vec![failed.clone(), failed.clone(), done],
            ..Script::default()
        };
        let (got, _, jobs) = fetch(script).await;
        assert_eq!(
            got.expect("the third start is read").rows,
            (FILES * LINES) as u64
        );
        assert_eq!(jobs.stats.report().restarted, 2);

        let script = Script {
            jobs: vec![failed; 4],
            ..Script::default()
        };
        let (got, _, jobs) = fetch(script).await;
        let err = got.unwrap_err();
        assert!(
            matches!(err, FetchError::Job(JobError::Failed { starts: 4, .. }))
                && err.is_splittable(),
            "{err:?}"
        );
        assert_eq!(jobs.stats.report().failed, 4);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_truncated_export_fails_the_window_so_that_it_is_split() {
        let script = Script {
            jobs: vec![vec![
                Step("Running", false, 1),
                Step("Completed", true, FILES),
            ]],
            ..Script::default()
        };
        let (got, shared, _) = fetch(script).await;
        let err = got.unwrap_err();
        assert!(
            matches!(err, FetchError::Job(JobError::Truncated { job: 1 })) && err.is_splittable(),
            "{err:?}"
        );
        assert!(err.to_string().contains("exportTruncated"), "{err}");
        assert!(shared.lock().unwrap().cancelled.len() <= 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_url_that_keeps_expiring_fails_the_window_so_that_it_is_split() {
        let script = Script {
            jobs: vec![vec![Step("Completed", false, FILES)]],
            always_expired: vec![file_name(1)],
            ..Script::default()
        };
        let (got, shared, jobs) = fetch(script).await;
        let err = got.unwrap_err();
        assert!(
            matches!(err, FetchError::Job(JobError::Expired { refreshes: 6, .. }))
                && err.is_splittable(),
            "{err:?}"
        );
        let tries = shared
            .lock()
            .unwrap()
            .downloads
            .iter()
            .filter(|(f, _)| *f == file_name(1))
            .count();
        assert_eq!(tries as u32, jobs.settings.url_refreshes + 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_recorded_job_iterable_no_longer_knows_is_forgotten_and_started_afresh() {
        let lake = crate::sink::LakeStore::in_memory();
        let window = Window { start: 0, end: 1 };
        let old = JobBook::open(lake.clone(), "r0", 1, chrono::Duration::hours(6))
            .await
            .unwrap();
        old.record(&JobRecord::new("email_send", 99, window))
            .await
            .unwrap();
        let book = JobBook::open(lake.clone(), "r1", 2, chrono::Duration::hours(6))
            .await
            .unwrap();
        let script = Script {
            jobs: vec![vec![
                Step("Running", false, 1),
                Step("Completed", false, FILES),
            ]],
            ..Script::default()
        };
        let (got, _, jobs) = fetch_with(script, book).await;
        assert_eq!(
            got.expect("read through a new job").rows,
            (FILES * LINES) as u64
        );
        assert_eq!(jobs.stats.report().started, 1);
        let left: Vec<_> = futures::TryStreamExt::try_collect::<Vec<_>>(
            lake.store.list(Some(&lake.path(JOBS_DIR))),
        )
        .await
        .unwrap();
        assert!(left.is_empty(), "{left:?}");
    }
}
