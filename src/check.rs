//! `check`: whether the API key works in the chosen data centre (one cheap request), then
//! whether each selected export stream is readable (one request over a one-minute window in
//! the past, under the client's export rate limit). The caller builds the client, with few
//! retries so that a dead host fails fast, and prints the results.

use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use futures::{Stream, StreamExt};
use serde::Serialize;

use crate::api::{ApiClient, ApiError, Family};
use crate::catalog::{Source, StreamDef};
use crate::convert::timestamp::format_for_query;

/// The request that tells whether the key works: small, and not rate-limited much.
pub const KEY_PROBE_PATH: &str = "channels";
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
    fn the_probe_window_is_one_settled_minute() {
        let now: DateTime<Utc> = "2024-05-06T07:08:09.5Z".parse().unwrap();
        let (start, end) = probe_window(now);
        assert_eq!(start.to_rfc3339(), "2024-05-06T06:07:00+00:00");
        assert_eq!(end.to_rfc3339(), "2024-05-06T06:08:00+00:00");
    }
}
