//! The asynchronous export-job API: `POST /api/export/start`, `GET /api/export/{jobId}/files`,
//! `GET /api/export/jobs`, `DELETE /api/export/{jobId}`, and the file downloads their URLs
//! point to (`/fake-files/…`, no `Api-Key`, like pre-signed links).
//!
//! Iterable documents, and the fake does: files are added to the list while a job runs, each
//! at most 10 MB (`FakeConfig::job_file_bytes`), an export is capped at 100 GB
//! (`JobConfig::max_bytes`, then `exportTruncated`), URLs expire after 30 minutes
//! (`JobConfig::url_lifetime`), a job may go back from `Running` to `Enqueued` when it restarts
//! and keeps its progress (`Faults::job_restart`), up to 4 exports process at once and further
//! ones are queued (a 5th `start` is accepted and its job waits `Enqueued` for a slot: the
//! Swagger says "Additional requests are queued", not 429), and `start` and `files` allow 1
//! request a second per organization (`Faults::job_rate`, 429 `RateLimitExceeded` past it;
//! `DELETE` too, per project: the fake has one project).
//!
//! How the fake behaves where Iterable leaves room:
//! - States follow the job clock (see `JobConfig`), never the polls: a job waits `Enqueued`
//!   for `queue_time`, then for a free slot (jobs take slots in the order they were started),
//!   then runs `Running` for its bytes at `bytes_per_second` (or `run_time`, if longer),
//!   listing each file once the bytes up to its end are written, then is `Completed`.
//!   Transitions are worked out, in time order, whenever a request looks at the jobs.
//! - A job's data is what `data.json` would serve for its window at the instant it started
//!   (the fake's data clock then), whatever that clock does later. Its lines are split into
//!   files of at most `job_file_bytes` bytes, every line ending in `\n` (a line longer than
//!   the limit makes a file of its own). The split is planned when the job starts, by
//!   generating the data once; files are generated again when downloaded.
//! - Files are named `file-<13 digits>.json`, increasing, so `startAfter` compares names; a
//!   response lists at most [`FILES_PAGE`] files.
//! - File URLs carry their expiry (on the job clock) and a signature: an altered URL gets 403,
//!   and so does an expired one, with S3's "Request has expired". Downloads answer with the
//!   file's `Content-Length`; any that carries the API key is counted
//!   (`FakeIterable::keyed_file_requests`), and answered all the same.
//! - `DELETE` cancels an `Enqueued` or `Running` job: it answers 200 `Success`, and the job is
//!   `Failed` from then on, with no files (their URLs get 404). A job that fails
//!   (`Faults::job_failure`) is the same. Cancelling a finished job is 400 `BadParams`. An
//!   unknown job id is 404 `NotFound`.
//! - `outputFormat` `text/csv` is 400 `BadParams`: the fake only writes
//!   `application/x-json-stream`.

use std::collections::BTreeMap;
use std::ops::ControlFlow;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, Request, State as Shared};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Json, Response};
use axum::routing::{delete, get, post};
use chrono::DateTime;
use serde::Deserialize;
use serde_json::json;
use xxhash_rust::xxh3::xxh3_64_with_seed;

use super::export::{self, NDJSON, ParamError};
use super::generate::{Generator, Pos, Query, Shape};
use super::{Cut, FirstJobs, JobConfig, JobEndpoint, State, api_error};

/// The most files one `files` response lists.
pub(super) const FILES_PAGE: usize = 10;

/// The first job id.
const FIRST_JOB_ID: i64 = 1001;

pub(super) fn routes() -> Router<Arc<State>> {
    Router::new()
        .route("/export/start", post(start))
        .route("/export/jobs", get(list))
        .route("/export/{job_id}/files", get(files))
        .route("/export/{job_id}", delete(cancel))
}

/// `Faults::jobs_denied`: the export-job routes refuse the key (which the API's guard has
/// accepted) as Iterable would a key without the permission.
pub(super) async fn deny(Shared(state): Shared<Arc<State>>, req: Request, next: Next) -> Response {
    match state.cfg.faults.jobs_denied {
        None => next.run(req).await,
        Some(401) => api_error(
            StatusCode::UNAUTHORIZED,
            "Unauthorized",
            "This API key is not authorized to use export jobs",
        ),
        Some(status) => api_error(
            StatusCode::from_u16(status).unwrap_or(StatusCode::FORBIDDEN),
            "Forbidden",
            "This API key does not have permission to use export jobs",
        ),
    }
}

pub(super) fn file_routes() -> Router<Arc<State>> {
    Router::new().route("/fake-files/{job_id}/{file}", get(download))
}

/// Every job started on this fake, and how far the job clock has been applied to them.
#[derive(Debug, Default)]
pub(super) struct Jobs {
    jobs: BTreeMap<i64, Job>,
    /// The job clock up to which transitions have been applied.
    applied: Duration,
    /// Jobs each fault has taken so far: restart, failure, truncation.
    restarts: u32,
    failures: u32,
    truncations: u32,
    /// File downloads `Faults::expired_urls` and `Faults::cut_downloads` have seen.
    expired_seen: u64,
    cut_seen: u64,
}

#[derive(Debug)]
struct Job {
    /// The `dataTypeName` as requested.
    data_type: String,
    query: Query,
    /// The files the whole job writes, in order.
    files: Vec<FileSpan>,
    truncated: bool,
    /// The running time the whole job needs.
    work: Duration,
    /// The running time done before the current phase began.
    worked: Duration,
    phase: Phase,
    /// Faults still to happen halfway through.
    restart: bool,
    fail: bool,
    scheduled_ms: i64,
    end_ms: Option<i64>,
}

/// A job's state since an instant of the job clock.
#[derive(Debug, Clone, Copy)]
enum Phase {
    Enqueued(Duration),
    Running(Duration),
    Completed,
    Failed,
}

/// One file: `lines` lines from position `from`, `bytes` long, ending `end` bytes into the job.
#[derive(Debug, Clone)]
struct FileSpan {
    name: String,
    from: Pos,
    lines: u64,
    bytes: u64,
    end: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum JobState {
    Enqueued,
    Running,
    Completed,
    Failed,
}

impl JobState {
    fn as_str(self) -> &'static str {
        match self {
            JobState::Enqueued => "Enqueued",
            JobState::Running => "Running",
            JobState::Completed => "Completed",
            JobState::Failed => "Failed",
        }
    }
}

impl Job {
    fn state(&self) -> JobState {
        match self.phase {
            Phase::Enqueued(_) => JobState::Enqueued,
            Phase::Running(_) => JobState::Running,
            Phase::Completed => JobState::Completed,
            Phase::Failed => JobState::Failed,
        }
    }

    /// Running time from the start of the current run to the job's next transition.
    fn until_next(&self) -> Duration {
        let half = self.work / 2;
        if (self.restart || self.fail) && self.worked <= half {
            half - self.worked
        } else {
            self.work.saturating_sub(self.worked)
        }
    }

    /// The files listed at job-clock instant `now`: those written whole by then.
    fn available(&self, now: Duration) -> &[FileSpan] {
        let worked = match self.phase {
            Phase::Failed => return &[],
            Phase::Completed => return &self.files,
            Phase::Enqueued(_) => self.worked,
            Phase::Running(since) => self.worked + now.saturating_sub(since),
        };
        let total = self.files.last().map_or(0, |f| f.end);
        let written = if self.work.is_zero() || worked >= self.work {
            total
        } else {
            (total as f64 * worked.as_secs_f64() / self.work.as_secs_f64()) as u64
        };
        let n = self.files.partition_point(|f| f.end <= written);
        &self.files[..n]
    }
}

impl Jobs {
    /// Applies every transition due by job-clock instant `now`, in time order; `now_ms` (the
    /// data clock) dates the jobs that end.
    fn advance(&mut self, cfg: &JobConfig, now: Duration, now_ms: i64) {
        loop {
            let running = self
                .jobs
                .values()
                .filter(|j| matches!(j.phase, Phase::Running(_)))
                .count();
            let mut next: Option<(Duration, i64)> = None;
            for (id, job) in &self.jobs {
                let at = match job.phase {
                    Phase::Running(since) => since + job.until_next(),
                    Phase::Enqueued(since) if running < cfg.max_running => {
                        (since + cfg.queue_time).max(self.applied)
                    }
                    _ => continue,
                };
                if next.is_none_or(|(first, _)| at < first) {
                    next = Some((at, *id));
                }
            }
            let Some((at, id)) = next.filter(|(at, _)| *at <= now) else {
                break;
            };
            self.applied = self.applied.max(at);
            let job = self.jobs.get_mut(&id).expect("a job just seen");
            match job.phase {
                Phase::Enqueued(_) => job.phase = Phase::Running(at),
                Phase::Running(since) => {
                    job.worked += at - since;
                    if job.restart && job.worked <= job.work / 2 {
                        job.restart = false;
                        job.phase = Phase::Enqueued(at);
                    } else if job.fail && job.worked <= job.work / 2 {
                        job.phase = Phase::Failed;
                        job.end_ms = Some(now_ms);
                    } else {
                        job.phase = Phase::Completed;
                        job.end_ms = Some(now_ms);
                    }
                }
                Phase::Completed | Phase::Failed => unreachable!("finished jobs have no next"),
            }
        }
        self.applied = self.applied.max(now);
    }
}

/// Whether a fault that takes the first jobs of a data type takes this one, counting it.
fn take_job(fault: Option<&FirstJobs>, taken: &mut u32, requested: &str, canonical: &str) -> bool {
    let Some(fault) = fault else {
        return false;
    };
    if fault
        .data_type
        .as_deref()
        .is_some_and(|t| t != requested && t != canonical)
        || *taken >= fault.jobs
    {
        return false;
    }
    *taken += 1;
    true
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct StartRequest {
    data_type_name: String,
    output_format: String,
    start_date_time: Option<String>,
    end_date_time: Option<String>,
    only_fields: Option<String>,
    omit_fields: Option<String>,
    campaign_id: Option<i64>,
}

async fn start(Shared(state): Shared<Arc<State>>, body: Bytes) -> Response {
    if let Err(wait) = state.admit_job_request(JobEndpoint::Start) {
        return export::too_many_requests(&state, "/api/export/start", wait);
    }
    let req: StartRequest = match serde_json::from_slice(&body) {
        Ok(req) => req,
        Err(e) => {
            return api_error(
                StatusCode::BAD_REQUEST,
                "BadJsonBody",
                format!("Invalid JSON body: {e}"),
            );
        }
    };
    let query = match start_query(&state, &req) {
        Ok(query) => query,
        Err(e) => return e.into_response(),
    };
    if req.output_format != NDJSON {
        let msg = match req.output_format.as_str() {
            "text/csv" => "outputFormat text/csv is not supported by the fake".to_string(),
            other => format!("Invalid outputFormat {other}"),
        };
        return api_error(StatusCode::BAD_REQUEST, "BadParams", msg);
    }
    let max_bytes = state.cfg.job_file_bytes as u64;
    let planned = {
        let (state, query) = (state.clone(), query.clone());
        tokio::task::spawn_blocking(move || plan_files(&state.generator, &query, max_bytes)).await
    };
    let Ok(spans) = planned else {
        return api_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "GenericError",
            "The export could not be planned",
        );
    };
    let cfg = &state.cfg.jobs;
    let faults = &state.cfg.faults;
    let scheduled_ms = query.now_ms;
    let mut end = 0;
    let mut files: Vec<FileSpan> = spans
        .into_iter()
        .enumerate()
        .map(|(k, (from, lines, bytes))| {
            end += bytes;
            FileSpan {
                name: format!("file-{:013}.json", scheduled_ms.max(0) + k as i64),
                from,
                lines,
                bytes,
                end,
            }
        })
        .collect();
    let kept = files.partition_point(|f| f.end <= cfg.max_bytes);
    let mut truncated = kept < files.len();
    files.truncate(kept);
    let canonical = state.generator.data_type(query.ty);
    let now = state.job_clock();
    let mut jobs = state.jobs.lock().expect("jobs lock");
    let requested = req.data_type_name.as_str();
    if take_job(
        faults.job_truncation.as_ref(),
        &mut jobs.truncations,
        requested,
        canonical,
    ) {
        files.truncate(files.len() / 2);
        truncated = true;
    }
    let restart = take_job(
        faults.job_restart.as_ref(),
        &mut jobs.restarts,
        requested,
        canonical,
    );
    let fail = take_job(
        faults.job_failure.as_ref(),
        &mut jobs.failures,
        requested,
        canonical,
    );
    let total = files.last().map_or(0, |f| f.end);
    let work = cfg
        .bytes_per_second
        .map_or(Duration::ZERO, |rate| {
            Duration::from_secs_f64(total as f64 / rate.max(1) as f64)
        })
        .max(cfg.run_time);
    let id = FIRST_JOB_ID + jobs.jobs.len() as i64;
    jobs.jobs.insert(
        id,
        Job {
            data_type: req.data_type_name,
            query,
            files,
            truncated,
            work,
            worked: Duration::ZERO,
            phase: Phase::Enqueued(now),
            restart,
            fail,
            scheduled_ms,
            end_ms: None,
        },
    );
    Json(json!({ "jobId": id })).into_response()
}

fn start_query(state: &State, req: &StartRequest) -> Result<Query, ParamError> {
    let ty = export::resolve_data_type(state, &req.data_type_name)?;
    let start = req
        .start_date_time
        .as_deref()
        .map(|v| export::parse_datetime("startDateTime", v))
        .transpose()?;
    let end = req
        .end_date_time
        .as_deref()
        .map(|v| export::parse_datetime("endDateTime", v))
        .transpose()?;
    let (start_ms, end_ms) = export::window(start, end)?;
    let shape = Shape {
        only: export::split_fields(req.only_fields.as_deref().into_iter()),
        omit: export::split_fields(req.omit_fields.as_deref().into_iter()),
        campaign_id: req.campaign_id,
    };
    Ok(state.query(ty, start_ms, end_ms, shape))
}

/// Splits the job's lines into files of at most `max_bytes`: (first position, lines, bytes).
fn plan_files(generator: &Generator, q: &Query, max_bytes: u64) -> Vec<(Pos, u64, u64)> {
    let mut files = Vec::new();
    let mut current: Option<(Pos, u64, u64)> = None;
    let _ = generator.lines(q, Pos::default(), &mut |pos, line| {
        let len = line.len() as u64 + 1;
        match &mut current {
            Some((_, lines, bytes)) if *bytes + len <= max_bytes => {
                *lines += 1;
                *bytes += len;
            }
            _ => {
                files.extend(current.take());
                current = Some((pos, 1, len));
            }
        }
        ControlFlow::Continue(())
    });
    files.extend(current);
    files
}

fn parse_job_id(raw: &str) -> Result<i64, ParamError> {
    raw.parse().map_err(|_| ParamError::JobId(raw.to_string()))
}

fn job_not_found(id: i64) -> Response {
    api_error(
        StatusCode::NOT_FOUND,
        "NotFound",
        format!("Export job {id} not found"),
    )
}

/// The signature of a file URL.
fn signature(state: &State, job_id: i64, file: &str, expires: u64) -> String {
    let text = format!("{job_id}/{file}/{expires}");
    format!(
        "{:016x}",
        xxh3_64_with_seed(text.as_bytes(), state.cfg.seed)
    )
}

fn iso_millis(ms: i64) -> String {
    DateTime::from_timestamp_millis(ms)
        .expect("clock in range")
        .format("%Y-%m-%dT%H:%M:%S%.3f+00:00")
        .to_string()
}

/// The jobs, with every transition due now applied, and the job clock's now.
fn current(state: &State) -> (std::sync::MutexGuard<'_, Jobs>, Duration) {
    let now_ms = state.now().timestamp_millis();
    let now = state.job_clock();
    let mut jobs = state.jobs.lock().expect("jobs lock");
    jobs.advance(&state.cfg.jobs, now, now_ms);
    (jobs, now)
}

async fn files(
    Shared(state): Shared<Arc<State>>,
    Path(job_id): Path<String>,
    RawQuery(raw): RawQuery,
) -> Response {
    if let Err(wait) = state.admit_job_request(JobEndpoint::Files) {
        return export::too_many_requests(&state, "/api/export/{jobId}/files", wait);
    }
    let id = match parse_job_id(&job_id) {
        Ok(id) => id,
        Err(e) => return e.into_response(),
    };
    let start_after = url::form_urlencoded::parse(raw.unwrap_or_default().as_bytes())
        .find(|(k, _)| k == "startAfter")
        .map(|(_, v)| v.into_owned());
    let (jobs, now) = current(&state);
    let Some(job) = jobs.jobs.get(&id) else {
        return job_not_found(id);
    };
    let expires = (now + state.cfg.jobs.url_lifetime).as_millis() as u64;
    let files: Vec<_> = job
        .available(now)
        .iter()
        .filter(|f| {
            start_after
                .as_deref()
                .is_none_or(|after| f.name.as_str() > after)
        })
        .take(FILES_PAGE)
        .map(|f| {
            let sig = signature(&state, id, &f.name, expires);
            json!({
                "file": f.name,
                "url": format!(
                    "http://{}/fake-files/{id}/{}?expires={expires}&signature={sig}",
                    state.addr, f.name
                ),
            })
        })
        .collect();
    let state_now = job.state();
    Json(json!({
        "jobId": id,
        "jobState": state_now.as_str(),
        "exportTruncated": job.truncated && state_now == JobState::Completed,
        "files": files,
    }))
    .into_response()
}

async fn list(Shared(state): Shared<Arc<State>>, RawQuery(raw): RawQuery) -> Response {
    let wanted = url::form_urlencoded::parse(raw.unwrap_or_default().as_bytes())
        .find(|(k, _)| k == "jobState")
        .map(|(_, v)| v.into_owned());
    let (jobs, now) = current(&state);
    let models: Vec<_> = jobs
        .jobs
        .iter()
        .rev()
        .filter(|(_, job)| wanted.as_deref().is_none_or(|w| w == job.state().as_str()))
        .map(|(id, job)| {
            let mut model = json!({
                "id": id,
                "dataTypeName": job.data_type,
                "jobState": job.state().as_str(),
                "bytesExported": job.available(now).iter().map(|f| f.bytes).sum::<u64>(),
                "scheduledStartTime": iso_millis(job.scheduled_ms),
            });
            if let Some(end_ms) = job.end_ms {
                model["endTime"] = json!(iso_millis(end_ms));
            }
            model
        })
        .collect();
    Json(json!({ "jobs": models })).into_response()
}

async fn cancel(Shared(state): Shared<Arc<State>>, Path(job_id): Path<String>) -> Response {
    if let Err(wait) = state.admit_job_request(JobEndpoint::Cancel) {
        return export::too_many_requests(&state, "/api/export/{jobId}", wait);
    }
    let id = match parse_job_id(&job_id) {
        Ok(id) => id,
        Err(e) => return e.into_response(),
    };
    let now_ms = state.now().timestamp_millis();
    let (mut jobs, _) = current(&state);
    let Some(job) = jobs.jobs.get_mut(&id) else {
        return job_not_found(id);
    };
    match job.state() {
        finished @ (JobState::Completed | JobState::Failed) => api_error(
            StatusCode::BAD_REQUEST,
            "BadParams",
            format!("Export job {id} is already {}", finished.as_str()),
        ),
        JobState::Enqueued | JobState::Running => {
            job.phase = Phase::Failed;
            job.end_ms = Some(now_ms);
            Json(json!({
                "msg": format!("Export job {id} cancelled"),
                "code": "Success",
                "params": null,
            }))
            .into_response()
        }
    }
}

/// Whether a file download carries the API key: a key header of any value, or the key in
/// the query string.
fn carries_key(headers: &HeaderMap, raw_query: &str, key: &str) -> bool {
    let header = ["api-key", "api_key"]
        .iter()
        .any(|name| headers.contains_key(*name));
    header || (!key.is_empty() && raw_query.contains(key))
}

/// S3's answer to a refused pre-signed URL.
fn denied(msg: &str) -> Response {
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>AccessDenied</Code><Message>{msg}</Message></Error>"
    );
    (
        StatusCode::FORBIDDEN,
        [(header::CONTENT_TYPE, "application/xml")],
        body,
    )
        .into_response()
}

async fn download(
    Shared(state): Shared<Arc<State>>,
    Path((job_id, file)): Path<(String, String)>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Response {
    let raw = raw.unwrap_or_default();
    if carries_key(&headers, &raw, &state.cfg.api_key) {
        state.keyed_file_requests.fetch_add(1, Ordering::Relaxed);
    }
    let params: BTreeMap<String, String> = url::form_urlencoded::parse(raw.as_bytes())
        .into_owned()
        .collect();
    let (Ok(id), Some(Ok(expires)), Some(sig)) = (
        job_id.parse::<i64>(),
        params.get("expires").map(|e| e.parse::<u64>()),
        params.get("signature"),
    ) else {
        return denied("Query-string authentication requires expires and signature");
    };
    if *sig != signature(&state, id, &file, expires) {
        return denied(
            "The request signature we calculated does not match the signature you provided",
        );
    }
    let (mut jobs, now) = current(&state);
    if now.as_millis() as u64 > expires {
        return denied("Request has expired");
    }
    if jobs.expired_seen < u64::from(state.cfg.faults.expired_urls) {
        jobs.expired_seen += 1;
        return denied("Request has expired");
    }
    let found = jobs.jobs.get(&id).and_then(|job| {
        let span = job.available(now).iter().find(|f| f.name == file)?;
        Some((job.data_type.clone(), job.query.clone(), span.clone()))
    });
    let Some((requested, query, span)) = found else {
        return (
            StatusCode::NOT_FOUND,
            [(header::CONTENT_TYPE, "application/xml")],
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>NoSuchKey</Code><Message>The specified key does not exist.</Message></Error>",
        )
            .into_response();
    };
    let cut = state.cfg.faults.cut_downloads.as_ref().and_then(|cut| {
        let canonical = state.generator.data_type(query.ty);
        if cut
            .data_type
            .as_deref()
            .is_some_and(|t| t != requested && t != canonical)
            || jobs.cut_seen >= u64::from(cut.first_requests)
        {
            return None;
        }
        jobs.cut_seen += 1;
        Some(Cut::AbortMidLine(cut.after_bytes))
    });
    drop(jobs);
    let mut response = export::ndjson_response(
        move |out| {
            let mut left = span.lines;
            state.generator.lines(&query, span.from, &mut |_, line| {
                out(line)?;
                out(b"\n")?;
                left -= 1;
                if left == 0 {
                    ControlFlow::Break(())
                } else {
                    ControlFlow::Continue(())
                }
            })
        },
        cut,
    );
    response
        .headers_mut()
        .insert(header::CONTENT_LENGTH, HeaderValue::from(span.bytes));
    response
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use chrono::{DateTime, Utc};
    use reqwest::StatusCode;
    use serde_json::{Value, json};

    use crate::fake::{CutOff, FakeConfig, FakeIterable, FirstJobs};

    const MINUTE: Duration = Duration::from_secs(60);

    /// A fake whose jobs queue 10 minutes and run 20 on the job clock (which tests move by
    /// hand), in small files, with its data clock past the data.
    async fn fake(adjust: impl FnOnce(&mut FakeConfig)) -> FakeIterable {
        let mut cfg = FakeConfig::small(31);
        cfg.job_file_bytes = 2 * 1024;
        cfg.jobs.queue_time = 10 * MINUTE;
        cfg.jobs.run_time = 20 * MINUTE;
        adjust(&mut cfg);
        let fake = FakeIterable::start(cfg).await.expect("the fake starts");
        fake.set_now(instant("2024-01-05T00:00:00Z"));
        fake
    }

    fn instant(text: &str) -> DateTime<Utc> {
        text.parse().expect("an instant")
    }

    async fn call(fake: &FakeIterable, request: reqwest::RequestBuilder) -> (StatusCode, Value) {
        let response = request
            .header("Api-Key", &fake.config().api_key)
            .send()
            .await
            .expect("an answer");
        let status = response.status();
        let body = response.bytes().await.expect("a body");
        let body = serde_json::from_slice(&body).expect("a JSON body");
        (status, body)
    }

    /// Starts an emailSend job over the fake's data range and returns its id.
    async fn start(fake: &FakeIterable) -> i64 {
        let (status, body) = try_start(fake).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body["jobId"].as_i64().expect("a jobId")
    }

    async fn try_start(fake: &FakeIterable) -> (StatusCode, Value) {
        let body = json!({
            "dataTypeName": "emailSend",
            "outputFormat": "application/x-json-stream",
            "startDateTime": "2024-01-01 00:00:00",
            "endDateTime": "2024-01-04 00:00:00",
        });
        let url = format!("{}export/start", fake.base_url());
        let request = reqwest::Client::new()
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.to_string());
        call(fake, request).await
    }

    /// Every file listed now, following `startAfter`: (state, truncated, names and URLs).
    async fn poll(fake: &FakeIterable, job: i64) -> (String, bool, Vec<(String, String)>) {
        let mut files: Vec<(String, String)> = Vec::new();
        loop {
            let mut url = format!("{}export/{job}/files", fake.base_url());
            if let Some((last, _)) = files.last() {
                url = format!("{url}?startAfter={last}");
            }
            let (status, body) = call(fake, reqwest::Client::new().get(url)).await;
            assert_eq!(status, StatusCode::OK, "{body}");
            let page = body["files"].as_array().expect("files");
            if page.is_empty() {
                let state = body["jobState"].as_str().expect("a state").to_string();
                let truncated = body["exportTruncated"].as_bool().expect("a bool");
                return (state, truncated, files);
            }
            for f in page {
                let (name, url) = (f["file"].as_str(), f["url"].as_str());
                files.push((name.unwrap().to_string(), url.unwrap().to_string()));
            }
        }
    }

    /// The lines of every file, downloaded without a key.
    async fn download_all(files: &[(String, String)]) -> Vec<String> {
        let mut lines = Vec::new();
        for (_, url) in files {
            let response = reqwest::get(url).await.expect("an answer");
            assert_eq!(response.status(), StatusCode::OK, "{url}");
            let body = response.text().await.expect("a whole body");
            assert!(body.ends_with('\n'));
            lines.extend(body.lines().map(str::to_string));
        }
        lines
    }

    fn truth(fake: &FakeIterable) -> Vec<String> {
        let (start, end) = (
            instant("2024-01-01T00:00:00Z"),
            instant("2024-01-04T00:00:00Z"),
        );
        fake.truth_lines("emailSend", start, end)
    }

    #[tokio::test]
    async fn jobs_follow_the_clock_not_the_polls() {
        let fake = fake(|_| ()).await;
        let job = start(&fake).await;
        for _ in 0..5 {
            assert_eq!(poll(&fake, job).await.0, "Enqueued");
        }
        fake.advance_job_clock(10 * MINUTE);
        let (state, _, files) = poll(&fake, job).await;
        assert_eq!((state.as_str(), files.len()), ("Running", 0));
        fake.advance_job_clock(10 * MINUTE);
        let (state, _, half) = poll(&fake, job).await;
        assert_eq!(state, "Running");
        fake.advance_job_clock(10 * MINUTE);
        let (state, truncated, all) = poll(&fake, job).await;
        assert_eq!((state.as_str(), truncated), ("Completed", false));
        assert!(!half.is_empty() && half.len() < all.len(), "{half:?}");
        let names =
            |files: &[(String, String)]| files.iter().map(|f| f.0.clone()).collect::<Vec<_>>();
        assert_eq!(names(&all[..half.len()]), names(&half));
        assert_eq!(download_all(&all).await, truth(&fake));
        assert_eq!(fake.keyed_file_requests(), 0);
    }

    #[tokio::test]
    async fn a_fifth_job_waits_enqueued_for_a_slot() {
        let fake = fake(|_| ()).await;
        let mut jobs = Vec::new();
        for _ in 0..5 {
            jobs.push(start(&fake).await);
        }
        fake.advance_job_clock(10 * MINUTE);
        let mut states = Vec::new();
        for job in &jobs {
            states.push(poll(&fake, *job).await.0);
        }
        assert_eq!(
            states,
            ["Running", "Running", "Running", "Running", "Enqueued"]
        );
        fake.advance_job_clock(20 * MINUTE);
        assert_eq!(poll(&fake, jobs[0]).await.0, "Completed");
        assert_eq!(poll(&fake, jobs[4]).await.0, "Running");
        fake.advance_job_clock(20 * MINUTE);
        let (state, _, files) = poll(&fake, jobs[4]).await;
        assert_eq!(state, "Completed");
        assert_eq!(download_all(&files).await, truth(&fake));
    }

    #[tokio::test]
    async fn start_files_and_cancel_are_rate_limited_each() {
        let fake = fake(|cfg| cfg.faults.job_rate = Some((1, Duration::from_secs(3600)))).await;
        let job = start(&fake).await;
        let (status, body) = try_start(&fake).await;
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(body["code"], "RateLimitExceeded");
        let files = format!("{}export/{job}/files", fake.base_url());
        let client = reqwest::Client::new();
        assert_eq!(call(&fake, client.get(&files)).await.0, StatusCode::OK);
        assert_eq!(
            call(&fake, client.get(&files)).await.0,
            StatusCode::TOO_MANY_REQUESTS
        );
        let cancel = format!("{}export/{job}", fake.base_url());
        assert_eq!(call(&fake, client.delete(&cancel)).await.0, StatusCode::OK);
        assert_eq!(
            call(&fake, client.delete(&cancel)).await.0,
            StatusCode::TOO_MANY_REQUESTS
        );
        let jobs = format!("{}export/jobs", fake.base_url());
        assert_eq!(call(&fake, client.get(&jobs)).await.0, StatusCode::OK);
        assert_eq!(fake.job_rate_limited(), 3);
    }

    fn first(jobs: u32) -> Option<FirstJobs> {
        Some(FirstJobs {
            data_type: Some("emailSend".to_string()),
            jobs,
        })
    }

    #[tokio::test]
    async fn a_restarted_job_keeps_its_files_and_queues_again() {
        let fake = fake(|cfg| cfg.faults.job_restart = first(1)).await;
        let job = start(&fake).await;
        fake.advance_job_clock(20 * MINUTE);
        let (state, _, kept) = poll(&fake, job).await;
        assert_eq!(state, "Enqueued");
        assert!(!kept.is_empty());
        fake.advance_job_clock(10 * MINUTE);
        let (state, _, running) = poll(&fake, job).await;
        assert_eq!(state, "Running");
        assert!(running.len() >= kept.len());
        fake.advance_job_clock(10 * MINUTE);
        let (state, _, all) = poll(&fake, job).await;
        assert_eq!(state, "Completed");
        assert_eq!(all[0].0, kept[0].0);
        assert_eq!(download_all(&all).await, truth(&fake));
        let again = start(&fake).await;
        fake.advance_job_clock(30 * MINUTE);
        assert_eq!(poll(&fake, again).await.0, "Completed", "one restart only");
    }

    #[tokio::test]
    async fn a_failed_job_lists_no_files_and_its_urls_are_gone() {
        let fake = fake(|cfg| cfg.faults.job_failure = first(1)).await;
        let job = start(&fake).await;
        fake.advance_job_clock(15 * MINUTE);
        let (state, _, listed) = poll(&fake, job).await;
        assert_eq!(state, "Running");
        assert!(!listed.is_empty());
        fake.advance_job_clock(5 * MINUTE);
        let (state, _, files) = poll(&fake, job).await;
        assert_eq!((state.as_str(), files.len()), ("Failed", 0));
        let gone = reqwest::get(&listed[0].1).await.expect("an answer");
        assert_eq!(gone.status(), StatusCode::NOT_FOUND);
        let jobs = format!("{}export/jobs?jobState=Failed", fake.base_url());
        let (_, body) = call(&fake, reqwest::Client::new().get(jobs)).await;
        assert_eq!(body["jobs"][0]["id"], job);
    }

    #[tokio::test]
    async fn truncated_jobs_hold_a_prefix_and_say_so() {
        let fake = fake(|cfg| cfg.faults.job_truncation = first(1)).await;
        let job = start(&fake).await;
        let whole = start(&fake).await;
        fake.advance_job_clock(30 * MINUTE);
        let (state, truncated, files) = poll(&fake, job).await;
        assert_eq!((state.as_str(), truncated), ("Completed", true));
        let (_, whole_truncated, all) = poll(&fake, whole).await;
        assert!(!whole_truncated);
        assert_eq!(files.len(), all.len() / 2);
        let lines = download_all(&files).await;
        assert_eq!(lines[..], truth(&fake)[..lines.len()]);

        let capped = self::fake(|cfg| cfg.jobs.max_bytes = 5 * 1024).await;
        let job = start(&capped).await;
        capped.advance_job_clock(30 * MINUTE);
        let (_, truncated, files) = poll(&capped, job).await;
        assert!(truncated);
        let lines = download_all(&files).await;
        let bytes: usize = lines.iter().map(|l| l.len() + 1).sum();
        assert!(bytes <= 5 * 1024 && bytes > 3 * 1024, "{bytes} bytes");
        assert_eq!(lines[..], truth(&capped)[..lines.len()]);
    }

    #[tokio::test]
    async fn urls_expire_by_the_clock_and_by_the_fault() {
        let fake = fake(|cfg| cfg.faults.expired_urls = 1).await;
        let job = start(&fake).await;
        fake.advance_job_clock(30 * MINUTE);
        let (_, _, files) = poll(&fake, job).await;
        let expired = reqwest::get(&files[0].1).await.expect("an answer");
        assert_eq!(expired.status(), StatusCode::FORBIDDEN);
        let text = expired.text().await.expect("a body");
        assert!(
            text.contains("<Message>Request has expired</Message>"),
            "{text}"
        );
        assert_eq!(
            reqwest::get(&files[0].1).await.unwrap().status(),
            StatusCode::OK
        );
        fake.advance_job_clock(31 * MINUTE);
        let late = reqwest::get(&files[0].1).await.expect("an answer");
        assert_eq!(late.status(), StatusCode::FORBIDDEN);
        assert!(late.text().await.unwrap().contains("Request has expired"));
        let (_, _, fresh) = poll(&fake, job).await;
        assert_eq!(download_all(&fresh).await, truth(&fake));
        let tampered = fresh[0].1.replace("signature=", "signature=0");
        assert_eq!(
            reqwest::get(tampered).await.unwrap().status(),
            StatusCode::FORBIDDEN
        );
    }

    #[tokio::test]
    async fn cut_downloads_end_mid_line_short_of_their_length() {
        let fake = fake(|cfg| {
            cfg.faults.cut_downloads = Some(CutOff {
                data_type: None,
                after_bytes: 700,
                first_requests: 1,
            })
        })
        .await;
        let job = start(&fake).await;
        fake.advance_job_clock(30 * MINUTE);
        let (_, _, files) = poll(&fake, job).await;
        let mut cut = reqwest::get(&files[0].1).await.expect("an answer");
        assert_eq!(cut.status(), StatusCode::OK);
        let length = cut.content_length().expect("a Content-Length");
        let mut received = Vec::new();
        let ended = loop {
            match cut.chunk().await {
                Ok(Some(chunk)) => received.extend_from_slice(&chunk),
                Ok(None) => break Ok(()),
                Err(e) => break Err(e),
            }
        };
        assert!(ended.is_err(), "the connection closes early");
        assert!(received.len() >= 700 && (received.len() as u64) < length);
        assert_ne!(received.last(), Some(&b'\n'));
        let whole = reqwest::get(&files[0].1).await.expect("an answer");
        assert_eq!(whole.content_length(), Some(length));
        assert_eq!(whole.bytes().await.unwrap().len() as u64, length);
    }

    #[tokio::test]
    async fn downloads_with_the_key_are_counted() {
        let fake = fake(|_| ()).await;
        let job = start(&fake).await;
        fake.advance_job_clock(30 * MINUTE);
        let (_, _, files) = poll(&fake, job).await;
        let url = &files[0].1;
        let client = reqwest::Client::new();
        client.get(url).send().await.unwrap();
        assert_eq!(fake.keyed_file_requests(), 0);
        client.get(url).header("Api-Key", "x").send().await.unwrap();
        let key = &fake.config().api_key;
        client
            .get(format!("{url}&api_key={key}"))
            .send()
            .await
            .unwrap();
        assert_eq!(fake.keyed_file_requests(), 2);
    }

    #[tokio::test]
    async fn a_key_denied_export_jobs_is_refused_on_every_job_route_only() {
        for (denied, status, code) in [
            (401, StatusCode::UNAUTHORIZED, "Unauthorized"),
            (403, StatusCode::FORBIDDEN, "Forbidden"),
        ] {
            let fake = fake(|c| c.faults.jobs_denied = Some(denied)).await;
            let (got, body) = try_start(&fake).await;
            assert_eq!((got, body["code"].as_str()), (status, Some(code)), "{body}");
            let base = fake.base_url();
            let client = reqwest::Client::new();
            for request in [
                client.get(format!("{base}export/jobs")),
                client.get(format!("{base}export/1001/files")),
                client.delete(format!("{base}export/1001")),
            ] {
                let (got, body) = call(&fake, request).await;
                assert_eq!((got, body["code"].as_str()), (status, Some(code)), "{body}");
            }
            let (got, _) = call(&fake, client.get(format!("{base}channels"))).await;
            assert_eq!(got, StatusCode::OK, "other routes answer");
            let wrong = client
                .get(format!("{base}export/jobs"))
                .header("Api-Key", "not-the-key")
                .send()
                .await
                .unwrap();
            let body: Value = serde_json::from_slice(&wrong.bytes().await.unwrap()).unwrap();
            assert_eq!(body["code"], "BadApiKey", "the key is checked first");
        }
    }
}
