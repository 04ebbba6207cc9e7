//! The lake's record of the export jobs runs started: one object per job,
//! `_jobs/<stream>/job-<jobId>.json`, created (create-if-absent) right after the job's start
//! and deleted once its window no longer needs it (read whole, failed, or cancelled).
//!
//! A run holds the lake's lease while it records jobs, so the records it finds at its start
//! are those of earlier runs that stopped before their windows were done (killed, crashed,
//! interrupted). It follows such a job instead of starting another when it fetches the same
//! window of the same stream while the job is young enough, and cancels (`DELETE`) the ones
//! it did not take up at its end. Only objects named like the tool's records are read,
//! cancelled or deleted: a job this tool did not record is never touched.

use std::sync::Mutex;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use object_store::ObjectStoreExt;
use serde::{Deserialize, Serialize};

use crate::api::{ApiClient, ApiError, Family};
use crate::sink::{Created, LakeStore};
use crate::source::export::Window;

/// The folder of the records.
pub const JOBS_DIR: &str = "_jobs";

/// One job a run started.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobRecord {
    pub stream: String,
    pub job: i64,
    /// The window, µs since the epoch, `[start, end)`.
    pub start: i64,
    pub end: i64,
    pub started_at: DateTime<Utc>,
    pub run_id: String,
    pub lease_generation: u64,
}

impl JobRecord {
    pub fn new(stream: &str, job: i64, window: Window) -> Self {
        JobRecord {
            stream: stream.to_string(),
            job,
            start: window.start,
            end: window.end,
            started_at: Utc::now(),
            run_id: String::new(),
            lease_generation: 0,
        }
    }

    fn window(&self) -> Window {
        Window {
            start: self.start,
            end: self.end,
        }
    }
}

/// The record's path inside the lake.
fn path_of(stream: &str, job: i64) -> String {
    format!("{JOBS_DIR}/{stream}/job-{job}.json")
}

/// The job id of a lake-relative path named like a record, `_jobs/<stream>/job-<id>.json`.
fn job_of(relative: &str) -> Option<(String, i64)> {
    let rest = relative.strip_prefix(JOBS_DIR)?.strip_prefix('/')?;
    let (stream, file) = rest.split_once('/')?;
    if stream.is_empty() {
        return None;
    }
    Some((stream.to_string(), job_id_of(file)?))
}

/// The job id of a file name of a record, `job-<id>.json`.
fn job_id_of(name: &str) -> Option<i64> {
    let id = name.strip_prefix("job-")?.strip_suffix(".json")?;
    match !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()) {
        true => id.parse().ok(),
        false => None,
    }
}

/// Whether `name` is the file name of a record, `job-<id>.json`.
pub fn is_record_name(name: &str) -> bool {
    job_id_of(name).is_some()
}

#[derive(Debug, thiserror::Error)]
pub enum BookError {
    #[error("{0}")]
    Store(#[from] object_store::Error),
    #[error("{path} exists already with other content")]
    Taken { path: String },
}

/// Where a run records its jobs, and the records earlier runs left.
#[derive(Debug)]
pub struct JobBook {
    /// `None`: nothing is recorded (unit tests of the fetcher alone).
    lake: Option<LakeStore>,
    run_id: String,
    lease_generation: u64,
    /// Records earlier runs left, not yet taken up.
    left: Mutex<Vec<JobRecord>>,
    /// A recorded job older than this is not followed but cancelled.
    max_age: chrono::Duration,
}

impl JobBook {
    /// A book that records nothing.
    pub fn none() -> Self {
        JobBook {
            lake: None,
            run_id: String::new(),
            lease_generation: 0,
            left: Mutex::default(),
            max_age: chrono::Duration::zero(),
        }
    }

    /// The lake's book, with the records earlier runs left (read now). The caller holds the
    /// lake's lease.
    pub async fn open(
        lake: LakeStore,
        run_id: &str,
        lease_generation: u64,
        max_age: chrono::Duration,
    ) -> Result<Self, object_store::Error> {
        let objects: Vec<_> = lake
            .store
            .list(Some(&lake.path(JOBS_DIR)))
            .try_collect()
            .await?;
        let mut left = Vec::new();
        for o in objects {
            let relative = lake.relative(&o.location);
            let Some((stream, job)) = job_of(&relative) else {
                continue;
            };
            let bytes = lake.store.get(&o.location).await?.bytes().await?;
            match serde_json::from_slice::<JobRecord>(&bytes) {
                Ok(r) if r.stream == stream && r.job == job => left.push(r),
                _ => {
                    tracing::warn!(path = %relative, "not a job record this tool wrote; left alone")
                }
            }
        }
        left.sort_by_key(|r| r.job);
        Ok(JobBook {
            lake: Some(lake),
            run_id: run_id.to_string(),
            lease_generation,
            left: Mutex::new(left),
            max_age,
        })
    }

    /// Record a job just started.
    pub async fn record(&self, record: &JobRecord) -> Result<(), BookError> {
        let Some(lake) = &self.lake else {
            return Ok(());
        };
        let record = JobRecord {
            run_id: self.run_id.clone(),
            lease_generation: self.lease_generation,
            ..record.clone()
        };
        let relative = path_of(&record.stream, record.job);
        let body = serde_json::to_vec_pretty(&record).expect("a record serializes");
        match lake
            .create(&lake.path(&relative), Bytes::from(body))
            .await?
        {
            Created::Written { .. } => Ok(()),
            Created::Taken => Err(BookError::Taken { path: relative }),
        }
    }

    /// Delete the record of `job`: its window no longer needs it.
    pub async fn forget(&self, stream: &str, job: i64) {
        let Some(lake) = &self.lake else {
            return;
        };
        let relative = path_of(stream, job);
        if let Err(e) = lake.store.delete(&lake.path(&relative)).await
            && !matches!(e, object_store::Error::NotFound { .. })
        {
            tracing::warn!(path = %relative, error = %e, "could not delete a job record; the next run cancels the job and deletes it");
        }
    }

    /// A job an earlier run started for `window` of `stream`, young enough to follow; the
    /// caller now owns it (and its record).
    pub fn take(&self, stream: &str, window: Window) -> Option<i64> {
        let mut left = self.left.lock().expect("job book lock");
        let now = Utc::now();
        let k = left.iter().position(|r| {
            r.stream == stream && r.window() == window && now - r.started_at < self.max_age
        })?;
        Some(left.remove(k).job)
    }

    /// Cancel the jobs earlier runs recorded that this run did not take up, and delete their
    /// records. A job that finished already answers 400 (nothing to cancel) or 404 (gone).
    pub async fn cancel_left(&self, client: &ApiClient) -> u64 {
        self.cancel_left_where(client, |_| true).await
    }

    /// Cancel at once the recorded jobs this run cannot take up: those of streams it does
    /// not sync (`wanted` says no) and those too old to follow, so that they do not hold
    /// Iterable's slots while the run goes on.
    pub async fn cancel_unusable(&self, client: &ApiClient, wanted: impl Fn(&str) -> bool) -> u64 {
        let now = Utc::now();
        let max_age = self.max_age;
        self.cancel_left_where(client, |r| {
            !wanted(&r.stream) || now - r.started_at >= max_age
        })
        .await
    }

    async fn cancel_left_where(
        &self,
        client: &ApiClient,
        pick: impl Fn(&JobRecord) -> bool,
    ) -> u64 {
        let picked: Vec<JobRecord> = {
            let mut left = self.left.lock().expect("job book lock");
            let (picked, kept) = std::mem::take(&mut *left)
                .into_iter()
                .partition(|r| pick(r));
            *left = kept;
            picked
        };
        let mut cancelled = 0;
        for r in picked {
            match cancel(client, r.job).await {
                Ok(true) => {
                    cancelled += 1;
                    tracing::info!(stream = %r.stream, job = r.job, "cancelled an export job an earlier run left");
                }
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(stream = %r.stream, job = r.job, error = %e, "could not cancel an export job an earlier run left; the next run tries again");
                    continue;
                }
            }
            self.forget(&r.stream, r.job).await;
        }
        cancelled
    }
}

/// `DELETE` `job`: `true` when it was cancelled, `false` when there was nothing to cancel
/// (400: it finished; 404: Iterable no longer knows it).
pub async fn cancel(client: &ApiClient, job: i64) -> Result<bool, ApiError> {
    match client
        .delete(Family::ExportJobs, &format!("export/{job}"))
        .await
    {
        Ok(_) => Ok(true),
        Err(ApiError::Status {
            status: 400 | 404, ..
        }) => Ok(false),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_tools_record_names_are_records() {
        assert_eq!(
            job_of("_jobs/email_send/job-1001.json"),
            Some(("email_send".to_string(), 1001))
        );
        assert_eq!(job_of(&path_of("users", 7)), Some(("users".to_string(), 7)));
        for other in [
            "_jobs/email_send/job-.json",
            "_jobs/email_send/job-12a.json",
            "_jobs/email_send/notes.txt",
            "_jobs/job-1.json",
            "_jobs//job-1.json",
            "_jobsx/s/job-1.json",
            "email_send/job-1.json",
        ] {
            assert_eq!(job_of(other), None, "{other}");
        }
    }
}
