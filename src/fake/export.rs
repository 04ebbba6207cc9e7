//! `GET /api/export/data.json` and `GET /api/export/userEvents`: their parameters, the export
//! rate limit, and NDJSON bodies streamed with chunked encoding from a blocking generator
//! thread (never the whole body in memory), with the cut-off faults.
//!
//! `data.json` parameters, as the fake reads them:
//! - `dataTypeName` (required): the 51 spec values, plus `emailUnsubscribe` for
//!   `emailUnSubscribe`, unless `Faults::rejected_data_types` names the spelling;
//! - `startDateTime` (inclusive) and `endDateTime` (exclusive): `yyyy-MM-dd HH:mm:ss` with an
//!   optional zone `+hh:mm`, `+hhmm` or `Z`; a zone whose `+` arrived decoded as a space
//!   (`2024-01-01 00:00:00 00:00`) counts as `+`. Given either, they win over `range`, and a
//!   missing one leaves that side open;
//! - `range`: `Today` (the default without dates), `Yesterday`, `BeforeToday`, `All`, as UTC
//!   days of the fake's clock;
//! - `onlyFields` (repeatable, each comma separated), `omitFields` (comma separated): top-level
//!   keys, a name also matching the dotted keys under it (`itblInternal`);
//! - `campaignId`: only events of that campaign (ignored for `user`).
//!
//! Unknown parameters are ignored. Bad values get 400 `BadParams`.

use std::io;
use std::ops::ControlFlow;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{RawQuery, State as Shared};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use chrono::NaiveDateTime;
use futures::stream::BoxStream;
use futures::{Stream, StreamExt};
use tokio::sync::mpsc;

use super::generate::{Generator, Query, Shape};
use super::params::Params;
use super::{Cut, State, api_error};

const DAY_MS: i64 = 86_400_000;

/// Bytes handed to the connection at a time.
const CHUNK: usize = 64 * 1024;

/// How long a cut-off response waits after its last bytes before aborting, so that the
/// connection flushes them first.
const CUT_OFF_GRACE: Duration = Duration::from_millis(50);

pub(super) const NDJSON: &str = "application/x-json-stream";

/// What `Faults::byte_order_mark` puts before a body.
const BYTE_ORDER_MARK: &[u8] = b"\xEF\xBB\xBF";

pub(super) fn routes() -> Router<Arc<State>> {
    Router::new()
        .route("/export/data.json", get(data_json))
        .route("/export/userEvents", get(user_events))
}

/// A bad request parameter: 400 `BadParams` with this message.
#[derive(Debug, thiserror::Error)]
pub(super) enum ParamError {
    #[error("dataTypeName is required")]
    MissingDataType,
    #[error("Invalid dataTypeName {0}")]
    DataType(String),
    #[error("Invalid {name}: {value} (expected yyyy-MM-dd HH:mm:ss [ZZ])")]
    DateTime { name: &'static str, value: String },
    #[error("Invalid range: {0} (expected Today, Yesterday, BeforeToday or All)")]
    Range(String),
    #[error("Invalid campaignId: {0}")]
    CampaignId(String),
    #[error("startDateTime must not be after endDateTime")]
    Window,
    #[error("Invalid includeCustomEvents: {0} (expected true or false)")]
    IncludeCustomEvents(String),
    #[error("Either email or userId is required")]
    MissingUser,
    #[error("Invalid jobId {0}")]
    JobId(String),
}

impl IntoResponse for ParamError {
    fn into_response(self) -> Response {
        api_error(StatusCode::BAD_REQUEST, "BadParams", self)
    }
}

/// The index of a requested data type, honouring `Faults::rejected_data_types`.
pub(super) fn resolve_data_type(state: &State, requested: &str) -> Result<usize, ParamError> {
    let rejected = state
        .cfg
        .faults
        .rejected_data_types
        .iter()
        .any(|r| r == requested);
    match Generator::type_index(requested) {
        Some(ty) if !rejected => Ok(ty),
        _ => Err(ParamError::DataType(requested.to_string())),
    }
}

/// Parses `yyyy-MM-dd HH:mm:ss [ZZ]` into epoch milliseconds.
pub(super) fn parse_datetime(name: &'static str, value: &str) -> Result<i64, ParamError> {
    let bad = || ParamError::DateTime {
        name,
        value: value.to_string(),
    };
    let trimmed = value.trim();
    if trimmed.len() < 19 || !trimmed.is_char_boundary(19) {
        return Err(bad());
    }
    let (local, zone) = trimmed.split_at(19);
    let local = NaiveDateTime::parse_from_str(local, "%Y-%m-%d %H:%M:%S").map_err(|_| bad())?;
    let offset_s = parse_zone(zone.trim()).ok_or_else(bad)?;
    Ok((local.and_utc().timestamp() - offset_s) * 1000)
}

/// A zone offset in seconds: empty, `Z`, `±hh:mm` or `±hhmm`; no sign means `+` (decoded as
/// a space from an unencoded query).
fn parse_zone(zone: &str) -> Option<i64> {
    if zone.is_empty() || zone == "Z" {
        return Some(0);
    }
    let (sign, digits) = match zone.strip_prefix('-') {
        Some(rest) => (-1, rest),
        None => (1, zone.strip_prefix('+').unwrap_or(zone)),
    };
    let (h, m) = match digits.len() {
        5 if digits.as_bytes()[2] == b':' => (digits.get(..2)?, digits.get(3..)?),
        4 => (digits.get(..2)?, digits.get(2..)?),
        _ => return None,
    };
    let all_digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if !all_digits(h) || !all_digits(m) {
        return None;
    }
    let (h, m): (i64, i64) = (h.parse().ok()?, m.parse().ok()?);
    (h <= 18 && m < 60).then_some(sign * (h * 3600 + m * 60))
}

/// Comma-separated field names, trimmed, without empties.
pub(super) fn split_fields<'a>(values: impl Iterator<Item = &'a str>) -> Vec<String> {
    values
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|f| !f.is_empty())
        .map(str::to_string)
        .collect()
}

/// A window `[start, end)` in epoch milliseconds from optional bounds; open sides stay open.
pub(super) fn window(start: Option<i64>, end: Option<i64>) -> Result<(i64, i64), ParamError> {
    let (start, end) = (start.unwrap_or(i64::MIN), end.unwrap_or(i64::MAX));
    if start > end {
        return Err(ParamError::Window);
    }
    Ok((start, end))
}

/// A `data.json` request, validated.
struct ExportRequest {
    requested: String,
    ty: usize,
    start_ms: i64,
    end_ms: i64,
    shape: Shape,
}

impl ExportRequest {
    fn parse(state: &State, params: &Params) -> Result<ExportRequest, ParamError> {
        let requested = params
            .one("dataTypeName")
            .ok_or(ParamError::MissingDataType)?;
        let ty = resolve_data_type(state, requested)?;
        let start = params
            .one("startDateTime")
            .map(|v| parse_datetime("startDateTime", v))
            .transpose()?;
        let end = params
            .one("endDateTime")
            .map(|v| parse_datetime("endDateTime", v))
            .transpose()?;
        let range = params.one("range");
        let (start_ms, end_ms) = if start.is_none() && end.is_none() {
            let today = state.now().timestamp_millis().div_euclid(DAY_MS) * DAY_MS;
            match range.unwrap_or("Today") {
                "Today" => (today, today + DAY_MS),
                "Yesterday" => (today - DAY_MS, today),
                "BeforeToday" => (i64::MIN, today),
                "All" => (i64::MIN, i64::MAX),
                other => return Err(ParamError::Range(other.to_string())),
            }
        } else {
            window(start, end)?
        };
        let campaign_id = params
            .one("campaignId")
            .map(|v| {
                v.trim()
                    .parse()
                    .map_err(|_| ParamError::CampaignId(v.to_string()))
            })
            .transpose()?;
        Ok(ExportRequest {
            requested: requested.to_string(),
            ty,
            start_ms,
            end_ms,
            shape: Shape {
                only: split_fields(params.all("onlyFields")),
                omit: split_fields(params.all("omitFields")),
                campaign_id,
            },
        })
    }
}

async fn data_json(Shared(state): Shared<Arc<State>>, RawQuery(raw): RawQuery) -> Response {
    if let Err(wait) = state.admit_export() {
        return too_many_requests(&state, "/api/export/data.json", wait);
    }
    let req = match ExportRequest::parse(&state, &Params::parse(raw.as_deref())) {
        Ok(req) => req,
        Err(e) => return e.into_response(),
    };
    let canonical = state.generator.data_type(req.ty);
    let cut_off = state.take_cut_off(&req.requested, canonical);
    let query = state.query(req.ty, req.start_ms, req.end_ms, req.shape);
    let bom = state.cfg.faults.byte_order_mark;
    let rate = state.cfg.faults.stream_bytes_per_second;
    if state.cfg.cache_bodies && state.generator.settled(query.now_ms) {
        let body = cached_body(state, query).await;
        let mark = bom.then(|| Bytes::from_static(BYTE_ORDER_MARK));
        let chunks = futures::stream::iter(mark.into_iter().chain(body.to_vec()));
        return ndjson_body(throttled(chunks, rate), cut_off);
    }
    let chunks = generated(move |out| {
        if bom {
            out(BYTE_ORDER_MARK)?;
        }
        state.generator.write_body(&query, out)
    });
    ndjson_body(throttled(chunks, rate), cut_off)
}

/// `chunks`, each held back until the body so far has taken `bytes_per_second` to send.
fn throttled(
    chunks: impl Stream<Item = Bytes> + Send + 'static,
    bytes_per_second: Option<u64>,
) -> BoxStream<'static, Bytes> {
    let Some(rate) = bytes_per_second else {
        return chunks.boxed();
    };
    let started = tokio::time::Instant::now();
    chunks
        .scan(0u64, move |sent, chunk| {
            *sent += chunk.len() as u64;
            let due = started + Duration::from_secs_f64(*sent as f64 / rate.max(1) as f64);
            async move {
                tokio::time::sleep_until(due).await;
                Some(chunk)
            }
        })
        .boxed()
}

/// The body of a settled query, generated the first time and replayed after.
async fn cached_body(state: Arc<State>, query: Query) -> Arc<[Bytes]> {
    let key = format!(
        "{} {} {} {:?}",
        query.ty, query.start_ms, query.end_ms, query.shape
    );
    if let Some(body) = state.bodies.lock().expect("lock").get(&key) {
        return body.clone();
    }
    let generator = state.clone();
    let body: Arc<[Bytes]> = tokio::task::spawn_blocking(move || {
        let mut chunks = Vec::new();
        chunked(
            |out| generator.generator.write_body(&query, out),
            |chunk| {
                chunks.push(chunk);
                ControlFlow::Continue(())
            },
        );
        chunks.into()
    })
    .await
    .expect("the generator does not panic");
    state.bodies.lock().expect("lock").insert(key, body.clone());
    body
}

/// 429 `RateLimitExceeded` for `endpoint`, with `Retry-After` under `Faults::retry_after`.
pub(super) fn too_many_requests(state: &State, endpoint: &str, wait: Duration) -> Response {
    let mut response = api_error(
        StatusCode::TOO_MANY_REQUESTS,
        "RateLimitExceeded",
        format!("Exceeded rate limit for endpoint: {endpoint}, project: 1"),
    );
    if state.cfg.faults.retry_after {
        let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(seconds.max(1)));
    }
    response
}

async fn user_events(Shared(state): Shared<Arc<State>>, RawQuery(raw): RawQuery) -> Response {
    let params = Params::parse(raw.as_deref());
    let include_custom = match params.one("includeCustomEvents") {
        None => false,
        Some(v) if v.eq_ignore_ascii_case("true") => true,
        Some(v) if v.eq_ignore_ascii_case("false") => false,
        Some(v) => return ParamError::IncludeCustomEvents(v.to_string()).into_response(),
    };
    let (email, user_id) = (params.one("email"), params.one("userId"));
    if email.is_none() && user_id.is_none() {
        return ParamError::MissingUser.into_response();
    }
    let user = state.generator.find_user(email, user_id);
    let now_ms = state.now().timestamp_millis();
    let bom = state.cfg.faults.byte_order_mark;
    ndjson_response(
        move |out| {
            if bom {
                out(BYTE_ORDER_MARK)?;
            }
            match user {
                Some(user) => state
                    .generator
                    .write_user_events(user, include_custom, now_ms, out),
                None => ControlFlow::Continue(()),
            }
        },
        None,
    )
}

/// A 200 NDJSON response whose body `produce` writes from a blocking thread, streamed in
/// chunks of about [`CHUNK`] bytes with chunked encoding. Its output answers `Break` once the
/// client has gone away, and `produce` should then stop. With `cut_off`, the body is cut
/// short as it says.
pub(super) fn ndjson_response<F>(produce: F, cut_off: Option<Cut>) -> Response
where
    F: FnOnce(&mut dyn FnMut(&[u8]) -> ControlFlow<()>) -> ControlFlow<()> + Send + 'static,
{
    ndjson_body(generated(produce), cut_off)
}

/// The chunks `produce` writes from a blocking thread (see [`ndjson_response`]).
fn generated<F>(produce: F) -> impl Stream<Item = Bytes> + Send + 'static
where
    F: FnOnce(&mut dyn FnMut(&[u8]) -> ControlFlow<()>) -> ControlFlow<()> + Send + 'static,
{
    let (tx, rx) = mpsc::channel::<Bytes>(4);
    tokio::task::spawn_blocking(move || {
        chunked(produce, |chunk| match tx.blocking_send(chunk) {
            Ok(()) => ControlFlow::Continue(()),
            Err(_) => ControlFlow::Break(()),
        })
    });
    futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|chunk| (chunk, rx))
    })
}

/// Run `produce`, handing what it writes to `send` in chunks of about [`CHUNK`] bytes.
fn chunked<F>(produce: F, mut send: impl FnMut(Bytes) -> ControlFlow<()>)
where
    F: FnOnce(&mut dyn FnMut(&[u8]) -> ControlFlow<()>) -> ControlFlow<()>,
{
    let mut buf = Vec::with_capacity(CHUNK + 4096);
    let _ = produce(&mut |bytes| {
        buf.extend_from_slice(bytes);
        if buf.len() >= CHUNK {
            send(Bytes::from(std::mem::replace(
                &mut buf,
                Vec::with_capacity(CHUNK + 4096),
            )))
        } else {
            ControlFlow::Continue(())
        }
    });
    // A producer may stop on purpose (a job file's last line): what it wrote is sent still.
    if !buf.is_empty() {
        let _ = send(Bytes::from(buf));
    }
}

/// A 200 NDJSON response of `chunks`, cut short as `cut_off` says if given.
fn ndjson_body(
    chunks: impl Stream<Item = Bytes> + Send + 'static,
    cut_off: Option<Cut>,
) -> Response {
    let body = match cut_off {
        None => Body::from_stream(chunks.map(Ok::<_, io::Error>)),
        Some(Cut::Abort(limit)) => Body::from_stream(cut_after(chunks, limit, false)),
        Some(Cut::AbortMidLine(limit)) => Body::from_stream(cut_after(chunks, limit, true)),
        Some(Cut::Clean(limit)) => Body::from_stream(end_mid_line(chunks, limit)),
    };
    ([(header::CONTENT_TYPE, NDJSON)], body).into_response()
}

/// Passes the first `limit` bytes of `chunks` (with `mid_line`, and more up to a byte that
/// is not a newline), then fails if anything was left, which makes hyper abort the
/// connection without the body's end.
fn cut_after(
    chunks: impl Stream<Item = Bytes> + Send + 'static,
    limit: usize,
    mid_line: bool,
) -> impl Stream<Item = io::Result<Bytes>> + Send {
    struct Cut {
        chunks: Pin<Box<dyn Stream<Item = Bytes> + Send>>,
        sent: usize,
        /// Whether what was sent so far ends a line (or is empty).
        at_line_start: bool,
        truncated: bool,
    }
    let start = Cut {
        chunks: Box::pin(chunks),
        sent: 0,
        at_line_start: true,
        truncated: false,
    };
    futures::stream::unfold(Some(start), move |cut| async move {
        let mut cut = cut?;
        if cut.truncated {
            tokio::time::sleep(CUT_OFF_GRACE).await;
            let err = io::Error::new(io::ErrorKind::ConnectionAborted, "fake cut-off");
            return Some((Err(err), None));
        }
        let mut chunk = cut.chunks.next().await?;
        let mut n = chunk.len().min(limit.saturating_sub(cut.sent));
        while n < chunk.len() {
            let line_start = if n == 0 {
                cut.at_line_start
            } else {
                chunk[n - 1] == b'\n'
            };
            if !(mid_line && line_start) {
                cut.truncated = true;
                break;
            }
            n += 1;
        }
        chunk.truncate(n);
        cut.sent += n;
        cut.at_line_start = chunk.last().map_or(cut.at_line_start, |b| *b == b'\n');
        Some((Ok(chunk), Some(cut)))
    })
}

/// Passes the first `limit` bytes of `chunks` and more up to a byte that is not a newline,
/// then ends: a body that ends properly, in the middle of a line (unless it is shorter).
fn end_mid_line(
    chunks: impl Stream<Item = Bytes> + Send + 'static,
    limit: usize,
) -> impl Stream<Item = io::Result<Bytes>> + Send {
    chunks.scan((limit, false), |(left, ended), mut chunk| {
        if *ended {
            return std::future::ready(None);
        }
        let mut n = chunk.len().min(*left);
        *left -= n;
        if *left == 0 {
            while n < chunk.len() && (n == 0 || chunk[n - 1] == b'\n') {
                n += 1;
            }
            match chunk[..n].last() {
                Some(b'\n') | None => *left = 1,
                Some(_) => *ended = true,
            }
        }
        chunk.truncate(n);
        std::future::ready(Some(Ok(chunk)))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datetimes_parse_with_every_zone_spelling() {
        let utc = 1_704_067_200_000;
        for v in [
            "2024-01-01 00:00:00",
            "2024-01-01 00:00:00 +00:00",
            "2024-01-01 00:00:00 00:00",
            "2024-01-01 00:00:00+00:00",
            "2024-01-01 00:00:00 Z",
            "2024-01-01 01:00:00 +0100",
            "2024-01-01 01:00:00  01:00",
            "2023-12-31 19:00:00 -05:00",
        ] {
            assert_eq!(parse_datetime("startDateTime", v).unwrap(), utc, "{v}");
        }
        for v in [
            "2024-01-01",
            "2024-01-01T00:00:00Z",
            "2024-01-01 00:00:00 +25:00",
            "2024-01-01 00:00:00 banana",
            "2024-01-01 00:00:00.000",
            "2024-13-01 00:00:00",
            "ünïcödé ünïcödé ünï",
        ] {
            assert!(parse_datetime("startDateTime", v).is_err(), "{v}");
        }
    }

    #[test]
    fn fields_split_on_commas_across_repeats() {
        let fields = split_fields(["a,b", " c ", ",,d"].into_iter());
        assert_eq!(fields, ["a", "b", "c", "d"]);
    }

    #[tokio::test]
    async fn data_json_streams_at_the_modelled_rate() {
        let mut cfg = crate::fake::FakeConfig::small(32);
        cfg.faults.stream_bytes_per_second = Some(100_000);
        let fake = crate::fake::FakeIterable::start(cfg)
            .await
            .expect("the fake starts");
        fake.set_now("2024-01-05T00:00:00Z".parse().expect("an instant"));
        let url = format!(
            "{}export/data.json?dataTypeName=emailSend&range=All",
            fake.base_url()
        );
        let started = std::time::Instant::now();
        let body = reqwest::Client::new()
            .get(url)
            .header("Api-Key", &fake.config().api_key)
            .send()
            .await
            .expect("an answer")
            .bytes()
            .await
            .expect("a whole body");
        let elapsed = started.elapsed().as_secs_f64();
        let modelled = body.len() as f64 / 100_000.0;
        assert!(modelled > 0.3, "{} bytes: too small to time", body.len());
        assert!(
            elapsed >= modelled * 0.95 && elapsed < modelled + 2.0,
            "{elapsed:.2} s for {modelled:.2} s"
        );
    }
}
