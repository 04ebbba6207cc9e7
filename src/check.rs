//! `check`: whether the API key works in the chosen data centre (one cheap request), whether
//! the key may use export jobs when the run would read through them (one request that lists
//! the project's jobs and starts none), then whether each selected export stream is readable
//! (one request over a one-minute window in the past, under the client's export rate limit).
//! The caller builds the client, with few retries so that a dead host fails fast, and prints
//! the results.

use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use futures::{Stream, StreamExt};
use serde::Serialize;

use crate::api::{ApiClient, ApiError, Family};
use crate::catalog::{Source, StreamDef};
use crate::convert::timestamp::format_for_query;
use crate::sync::ExportApi;

/// The request that tells whether the key works: small, and not rate-limited much.
pub const KEY_PROBE_PATH: &str = "channels";
/// The request that tells whether the key may use export jobs: `GET /api/export/jobs` lists
/// the project's recent jobs, starts nothing, and has no stated rate limit.
pub const JOBS_PROBE_PATH: &str = "export/jobs";
/// Probes in flight at once (the export rate limiter spaces them out anyway).
const PROBES_IN_FLIGHT: usize = 4;

/// Why the key is unusable.
#[derive(Debug, thiserror::Error)]
pub enum KeyProblem {
    #[error(
        "the API key was rejected by {host} (401{code}): check the key, and that --region \
         matches the project's data centre (us: api.iterable.com, eu: api.eu.iterable.com); \
         a key works only in its own"
    )]
    Rejected { host: String, code: String },
    #[error("cannot reach {host}: {cause} (check the network, --region or --base-url)")]
    Unreachable { host: String, cause: String },
    #[error(
        "{host} answered {status}{code}{msg} to GET {path} (check --base-url, and that the key \
         is a server-side key)"
    )]
    Refused {
        host: String,
        path: &'static str,
        status: u16,
        code: String,
        msg: String,
    },
    #[error(transparent)]
    Api(ApiError),
}

/// `host[:port]` of the client's base URL, for messages.
pub fn host_of(client: &ApiClient) -> String {
    let url = client.base_url();
    let host = url.host_str().unwrap_or("?");
    match url.port() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_string(),
    }
}

/// The innermost cause of an error: for a failed connection, the reason itself
/// ("Connection refused", "failed to lookup address information: …").
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}

fn prefixed(sep: &str, s: &str) -> String {
    if s.is_empty() {
        String::new()
    } else {
        format!("{sep}{s}")
    }
}

/// One cheap authenticated request.
pub async fn check_key(client: &ApiClient) -> Result<(), KeyProblem> {
    let host = host_of(client);
    match client.get(Family::Other, KEY_PROBE_PATH, &[]).await {
        Ok(_) => Ok(()),
        Err(ApiError::Unauthorized { code, .. }) => Err(KeyProblem::Rejected {
            host,
            code: prefixed(" ", &code),
        }),
        Err(ApiError::Transport { source, .. }) => Err(KeyProblem::Unreachable {
            host,
            cause: root_cause(&source),
        }),
        Err(ApiError::Status {
            status, code, msg, ..
        }) => Err(KeyProblem::Refused {
            host,
            path: KEY_PROBE_PATH,
            status,
            code: prefixed(" ", &code),
            msg: prefixed(": ", &msg),
        }),
        Err(e) => Err(KeyProblem::Api(e)),
    }
}

/// The probe window: the minute that ended an hour before `now`'s minute, so the data is
/// settled and small.
pub fn probe_window(now: DateTime<Utc>) -> (DateTime<Utc>, DateTime<Utc>) {
    let minute = now
        .duration_trunc(TimeDelta::minutes(1))
        .expect("a minute divides any instant");
    let end = minute - TimeDelta::hours(1);
    (end - TimeDelta::minutes(1), end)
}

/// Whether the export jobs API answers for the key.
#[derive(Debug, Clone, Serialize)]
pub struct JobsProbe {
    /// How the run would read export streams (`jobs` or `auto`).
    pub export_api: ExportApi,
    /// The run cannot do without export jobs (`--export-api jobs`): when they do not answer,
    /// `check` fails. `auto` still needs them for backfills, but its nightly tail does not.
    pub required: bool,
    pub answers: bool,
    /// The API refused the key on this route (401 or 403): the key may not use export jobs.
    pub denied: bool,
    pub error: Option<String>,
}

impl JobsProbe {
    /// Whether `check` fails for this probe.
    pub fn fails(&self) -> bool {
        self.required && !self.answers
    }

    /// One line for people.
    pub fn describe(&self) -> String {
        let path = JOBS_PROBE_PATH;
        let Some(error) = &self.error else {
            return format!("export jobs: the API answers (GET /api/{path})");
        };
        let problem = if self.denied {
            format!("refused ({error}) to GET /api/{path}: this key may not use export jobs")
        } else {
            format!("no answer ({error}) to GET /api/{path}")
        };
        match self.export_api {
            ExportApi::Jobs => format!(
                "export jobs: {problem}; --export-api jobs reads every export window through \
                 them, so a sync would fail: use a key allowed to use export jobs, or \
                 --export-api stream"
            ),
            _ => format!(
                "export jobs: {problem}; --export-api auto reads backfills (a first run, a \
                 reset, a lake far behind, a full refresh's older windows) through them: a \
                 sync refused them reads those through data.json instead, slower"
            ),
        }
    }
}

/// Whether a run of `streams` with `export_api` would read through export jobs, so that
/// `check` probes them: some stream is an export stream and `export_api` is not `stream`.
pub fn reads_through_jobs(export_api: ExportApi, streams: &[&'static StreamDef]) -> bool {
    export_api != ExportApi::Stream
        && streams
            .iter()
            .any(|s| matches!(s.source, Source::Export { .. }))
}

/// One request that lists the project's export jobs: it answers when the key may use them.
pub async fn probe_jobs(client: &ApiClient, export_api: ExportApi) -> JobsProbe {
    let result = client.get(Family::Other, JOBS_PROBE_PATH, &[]).await;
    let denied = matches!(
        &result,
        Err(ApiError::Unauthorized { .. } | ApiError::Status { status: 403, .. })
    );
    let error = result.err().map(|e| match e {
        ApiError::Unauthorized { code, .. } => format!("401{}", prefixed(" ", &code)),
        other => short(&other),
    });
    JobsProbe {
        export_api,
        required: export_api == ExportApi::Jobs,
        answers: error.is_none(),
        denied,
        error,
    }
}

/// Everything `check` found, as `check --json` prints it.
#[derive(Debug, Clone, Serialize)]
pub struct CheckReport {
    pub key: KeyCheck,
    /// `None` when the run would not read through export jobs.
    pub export_jobs: Option<JobsProbe>,
    pub streams: Vec<Probe>,
}

impl CheckReport {
    pub fn readable(&self) -> usize {
        self.streams.iter().filter(|p| p.readable).count()
    }

    /// The key works, every stream is readable, and export jobs answer if the run needs them.
    pub fn passed(&self) -> bool {
        self.key.accepted
            && self.readable() == self.streams.len()
            && !self.export_jobs.as_ref().is_some_and(JobsProbe::fails)
    }
}

/// Whether the key works.
#[derive(Debug, Clone, Serialize)]
pub struct KeyCheck {
    /// `host[:port]` of the API.
    pub host: String,
    /// The request that tells.
    pub probe: String,
    pub accepted: bool,
    pub error: Option<String>,
}

/// Whether one stream is readable.
#[derive(Debug, Clone, Serialize)]
pub struct Probe {
    pub stream: &'static str,
    pub data_type: &'static str,
    pub readable: bool,
    pub error: Option<String>,
}

/// An API error as a short table cell.
fn short(e: &ApiError) -> String {
    match e {
        ApiError::Unauthorized { code, .. } => format!("401{}: key rejected", prefixed(" ", code)),
        ApiError::Status {
            status, code, msg, ..
        } => format!("{status}{}{}", prefixed(" ", code), prefixed(": ", msg)),
        ApiError::Transport { source, .. } => root_cause(source),
        other => other.to_string(),
    }
}

async fn probe_stream(
    client: &ApiClient,
    stream: &'static StreamDef,
    window: (DateTime<Utc>, DateTime<Utc>),
) -> Probe {
    let (data_type, alt_data_type) = match stream.source {
        Source::Export {
            data_type,
            alt_data_type,
        } => (data_type, alt_data_type),
        other => return probe_list_style(client, stream, other).await,
    };
    let query = |dt: &str| {
        vec![
            ("dataTypeName", dt.to_string()),
            (
                "startDateTime",
                format_for_query(window.0.timestamp_micros()),
            ),
            ("endDateTime", format_for_query(window.1.timestamp_micros())),
        ]
    };
    let mut result = client
        .get(Family::Export, "export/data.json", &query(data_type))
        .await;
    if let (Err(ApiError::Status { status: 400, .. }), Some(alt)) = (&result, alt_data_type) {
        result = client
            .get(Family::Export, "export/data.json", &query(alt))
            .await;
    }
    // The body is not read: the status answers the question, and dropping the response
    // closes the connection however much data the minute held.
    let error = result.err().map(|e| short(&e));
    Probe {
        stream: stream.name,
        data_type,
        readable: error.is_none(),
        error,
    }
}

/// Probe a list-style stream with one cheap request to its endpoint (for list members and
/// metadata, their index: `lists` and `metadata`, whose own limits are generous; for
/// campaign metrics and per-user events, the index of campaigns and of lists).
async fn probe_list_style(client: &ApiClient, stream: &'static StreamDef, source: Source) -> Probe {
    let (path, query): (&str, Vec<(&str, String)>) = match source {
        Source::Json {
            path, paged: true, ..
        } => (path, vec![("page", "1".into()), ("pageSize", "1".into())]),
        Source::Json { path, .. } => (path, Vec::new()),
        Source::ListUsers | Source::UserEvents => ("lists", Vec::new()),
        Source::CampaignMetrics => (
            "campaigns",
            vec![("page", "1".into()), ("pageSize", "1".into())],
        ),
        Source::Metadata | Source::Export { .. } => ("metadata", Vec::new()),
    };
    let error = client
        .get(Family::Other, path, &query)
        .await
        .err()
        .map(|e| short(&e));
    Probe {
        stream: stream.name,
        data_type: stream.data_type(),
        readable: error.is_none(),
        error,
    }
}

/// Probe each stream, in the order given, a few at a time.
pub fn probe_streams<'a>(
    client: &'a ApiClient,
    streams: &'a [&'static StreamDef],
    now: DateTime<Utc>,
) -> impl Stream<Item = Probe> + 'a {
    let window = probe_window(now);
    futures::stream::iter(streams)
        .map(move |s| probe_stream(client, s, window))
        .buffered(PROBES_IN_FLIGHT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jobs_are_probed_when_an_export_stream_would_read_through_them() {
        let export = crate::catalog::find("email_send").unwrap();
        let lists = crate::catalog::find("lists").unwrap();
        assert!(reads_through_jobs(ExportApi::Jobs, &[lists, export]));
        assert!(reads_through_jobs(ExportApi::Auto, &[export]));
        assert!(!reads_through_jobs(ExportApi::Stream, &[export]));
        assert!(!reads_through_jobs(ExportApi::Jobs, &[lists]));
    }

    #[test]
    fn the_probe_window_is_one_settled_minute() {
        let now: DateTime<Utc> = "2024-05-06T07:08:09.5Z".parse().unwrap();
        let (start, end) = probe_window(now);
        assert_eq!(start.to_rfc3339(), "2024-05-06T06:07:00+00:00");
        assert_eq!(end.to_rfc3339(), "2024-05-06T06:08:00+00:00");
    }
}
