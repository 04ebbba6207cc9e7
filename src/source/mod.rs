//! Endpoint families: each builds its requests and hands response bodies to the pipeline.

pub mod export;
pub mod jobs;
pub mod list_users;
pub mod metrics;
pub mod pipeline;
pub mod rest;
pub mod user_events;

use crate::api::ApiError;
use crate::sink::WriteError;
use jobs::JobError;

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("request failed: {0}")]
    Api(#[from] ApiError),
    #[error("response cut off after {bytes} bytes: {source}")]
    CutOff { bytes: u64, source: reqwest::Error },
    /// The body ended cleanly, but inside a record: its last `line_bytes` bytes are not a
    /// complete JSON object.
    #[error(
        "response ended after {bytes} bytes in the middle of a line (its last {line_bytes} \
         bytes are not a complete JSON object)"
    )]
    Truncated { bytes: u64, line_bytes: usize },
    #[error("decoding: {0}")]
    Decode(arrow::error::ArrowError),
    #[error(transparent)]
    Write(#[from] WriteError),
    #[error("a pipeline task stopped: {0}")]
    Task(String),
    #[error("unexpected response from {url}: {problem}")]
    Shape { url: String, problem: String },
    #[error(transparent)]
    Job(#[from] JobError),
}

impl From<reqwest::Error> for FetchError {
    /// An error while reading a response body: the connection was cut off.
    fn from(source: reqwest::Error) -> Self {
        FetchError::CutOff {
            bytes: 0,
            source: source.without_url(),
        }
    }
}

impl From<std::convert::Infallible> for FetchError {
    fn from(e: std::convert::Infallible) -> Self {
        match e {}
    }
}

impl FetchError {
    /// Whether a smaller window may succeed where this one failed.
    pub fn is_splittable(&self) -> bool {
        match self {
            FetchError::CutOff { .. } | FetchError::Truncated { .. } => true,
            FetchError::Api(e) => e.is_timeout(),
            FetchError::Job(e) => e.is_splittable(),
            _ => false,
        }
    }

    /// Whether no further request can succeed: the key is unusable (for export jobs, when
    /// it may not start them), or the run was stopped.
    pub fn is_fatal(&self) -> bool {
        matches!(
            self,
            FetchError::Api(ApiError::Unauthorized { .. } | ApiError::Stopped { .. })
                | FetchError::Job(JobError::Refused { .. })
        )
    }

    /// Whether export jobs were refused for the key ([`JobError::Refused`]).
    pub fn is_jobs_refused(&self) -> bool {
        matches!(self, FetchError::Job(JobError::Refused { .. }))
    }
}
