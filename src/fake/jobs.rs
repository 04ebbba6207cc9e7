//! The asynchronous export-job API: `POST /api/export/start`, `GET /api/export/{jobId}/files`,
//! `GET /api/export/jobs`, `DELETE /api/export/{jobId}`, and the file downloads their URLs
//! point to (`/fake-files/…`, no `Api-Key`, like pre-signed links).
//!
//! How the fake behaves where the spec leaves room:
//! - A job's data is what `data.json` would serve for its window at the instant it started
//!   (the fake's clock then), whatever the clock does later. Its lines are split into files of
//!   at most `FakeConfig::job_file_bytes` bytes, every line ending in `\n` (a line longer than
//!   the limit makes a file of its own). The split is planned when the job starts, by
//!   generating the data once; files are generated again when downloaded.
//! - Each `files` poll moves the job one step: the first answers `Enqueued` with no files, the
//!   second `Running` with the first half of the files (rounded up), later ones `Completed`
//!   with all of them. Files are named `file-<13 digits>.json`, increasing, so `startAfter`
//!   compares names; a response lists at most [`FILES_PAGE`] files.
//! - File URLs expire 30 minutes (of the fake's clock) after the poll that listed them, and
//!   carry a signature: an expired or altered URL gets 403.
//! - `DELETE` cancels an `Enqueued` or `Running` job: it answers 200 `Success`, and the job is
//!   `Failed` from then on, with no files (their URLs get 404). Cancelling a finished job is
//!   400 `BadParams`. An unknown job id is 404 `NotFound`.
//! - `outputFormat` `text/csv` is 400 `BadParams`: the fake only writes
//!   `application/x-json-stream`. There is no 4-concurrent-jobs queue and no rate limit.

use std::collections::BTreeMap;
use std::ops::ControlFlow;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State as Shared};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Json, Response};
use axum::routing::{delete, get, post};
use chrono::DateTime;
use serde::Deserialize;
use serde_json::json;
use xxhash_rust::xxh3::xxh3_64_with_seed;

use super::export::{self, NDJSON, ParamError};
use super::generate::{Generator, Pos, Query, Shape};
use super::{State, api_error};

/// The most files one `files` response lists.
pub(super) const FILES_PAGE: usize = 10;

/// How long a file URL stays valid.
const URL_LIFETIME_S: i64 = 30 * 60;

/// The first job id.
const FIRST_JOB_ID: i64 = 1001;

pub(super) fn routes() -> Router<Arc<State>> {
    Router::new()
        .route("/export/start", post(start))
        .route("/export/jobs", get(list))
        .route("/export/{job_id}/files", get(files))
        .route("/export/{job_id}", delete(cancel))
}

pub(super) fn file_routes() -> Router<Arc<State>> {
    Router::new().route("/fake-files/{job_id}/{file}", get(download))
}

/// Every job started on this fake.
#[derive(Debug, Default)]
pub(super) struct Jobs(BTreeMap<i64, Job>);

#[derive(Debug)]
struct Job {
    /// The `dataTypeName` as requested.
    data_type: String,
    query: Query,
    files: Vec<FileSpan>,
    polls: u32,
    cancelled: bool,
    scheduled_ms: i64,
    end_ms: Option<i64>,
}

/// One file: `lines` lines from position `from`.
#[derive(Debug, Clone)]
struct FileSpan {
    name: String,
    from: Pos,
    lines: u64,
    bytes: u64,
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
        match (self.cancelled, self.polls) {
            (true, _) => JobState::Failed,
            (false, 0 | 1) => JobState::Enqueued,
            (false, 2) => JobState::Running,
            (false, _) => JobState::Completed,
        }
    }

    /// The files listed in the job's current state.
    fn available(&self) -> &[FileSpan] {
        match self.state() {
            JobState::Enqueued | JobState::Failed => &[],
            JobState::Running => &self.files[..self.files.len().div_ceil(2)],
            JobState::Completed => &self.files,
        }
    }
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
    let scheduled_ms = query.now_ms;
    let files = spans
        .into_iter()
        .enumerate()
        .map(|(k, (from, lines, bytes))| FileSpan {
            name: format!("file-{:013}.json", scheduled_ms.max(0) + k as i64),
            from,
            lines,
            bytes,
        })
        .collect();
    let mut jobs = state.jobs.lock().expect("jobs lock");
    let id = FIRST_JOB_ID + jobs.0.len() as i64;
    jobs.0.insert(
        id,
        Job {
            data_type: req.data_type_name,
            query,
            files,
            polls: 0,
            cancelled: false,
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
fn signature(state: &State, job_id: i64, file: &str, expires: i64) -> String {
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

async fn files(
    Shared(state): Shared<Arc<State>>,
    Path(job_id): Path<String>,
    RawQuery(raw): RawQuery,
) -> Response {
    let id = match parse_job_id(&job_id) {
        Ok(id) => id,
        Err(e) => return e.into_response(),
    };
    let start_after = url::form_urlencoded::parse(raw.unwrap_or_default().as_bytes())
        .find(|(k, _)| k == "startAfter")
        .map(|(_, v)| v.into_owned());
    let now_ms = state.now().timestamp_millis();
    let mut jobs = state.jobs.lock().expect("jobs lock");
    let Some(job) = jobs.0.get_mut(&id) else {
        return job_not_found(id);
    };
    job.polls = job.polls.saturating_add(1);
    if job.state() == JobState::Completed && job.end_ms.is_none() {
        job.end_ms = Some(now_ms);
    }
    let expires = now_ms.div_euclid(1000) + URL_LIFETIME_S;
    let files: Vec<_> = job
        .available()
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
    Json(json!({
        "jobId": id,
        "jobState": job.state().as_str(),
        "exportTruncated": false,
        "files": files,
    }))
    .into_response()
}

async fn list(Shared(state): Shared<Arc<State>>, RawQuery(raw): RawQuery) -> Response {
    let wanted = url::form_urlencoded::parse(raw.unwrap_or_default().as_bytes())
        .find(|(k, _)| k == "jobState")
        .map(|(_, v)| v.into_owned());
    let jobs = state.jobs.lock().expect("jobs lock");
    let models: Vec<_> = jobs
        .0
        .iter()
        .rev()
        .filter(|(_, job)| wanted.as_deref().is_none_or(|w| w == job.state().as_str()))
        .map(|(id, job)| {
            let mut model = json!({
                "id": id,
                "dataTypeName": job.data_type,
                "jobState": job.state().as_str(),
                "bytesExported": job.available().iter().map(|f| f.bytes).sum::<u64>(),
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
    let id = match parse_job_id(&job_id) {
        Ok(id) => id,
        Err(e) => return e.into_response(),
    };
    let now_ms = state.now().timestamp_millis();
    let mut jobs = state.jobs.lock().expect("jobs lock");
    let Some(job) = jobs.0.get_mut(&id) else {
        return job_not_found(id);
    };
    match job.state() {
        finished @ (JobState::Completed | JobState::Failed) => api_error(
            StatusCode::BAD_REQUEST,
            "BadParams",
            format!("Export job {id} is already {}", finished.as_str()),
        ),
        JobState::Enqueued | JobState::Running => {
            job.cancelled = true;
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

async fn download(
    Shared(state): Shared<Arc<State>>,
    Path((job_id, file)): Path<(String, String)>,
    RawQuery(raw): RawQuery,
) -> Response {
    let denied =
        |msg: &str| (StatusCode::FORBIDDEN, format!("AccessDenied: {msg}")).into_response();
    let params: BTreeMap<String, String> =
        url::form_urlencoded::parse(raw.unwrap_or_default().as_bytes())
            .into_owned()
            .collect();
    let (Ok(id), Some(Ok(expires)), Some(sig)) = (
        job_id.parse::<i64>(),
        params.get("expires").map(|e| e.parse::<i64>()),
        params.get("signature"),
    ) else {
        return denied("Query-string authentication requires expires and signature");
    };
    if *sig != signature(&state, id, &file, expires) {
        return denied("The request signature does not match");
    }
    if state.now().timestamp_millis().div_euclid(1000) > expires {
        return denied("Request has expired");
    }
    let found = {
        let jobs = state.jobs.lock().expect("jobs lock");
        jobs.0.get(&id).and_then(|job| {
            let span = job.available().iter().find(|f| f.name == file)?;
            Some((job.query.clone(), span.clone()))
        })
    };
    let Some((query, span)) = found else {
        return (
            StatusCode::NOT_FOUND,
            "NoSuchKey: The specified key does not exist.",
        )
            .into_response();
    };
    export::ndjson_response(
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
        None,
    )
}
