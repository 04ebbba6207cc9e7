//! The one HTTP driver for Iterable: base URL per data centre, `Api-Key` auth, the shared
//! export rate limiter, retries with exponential backoff and jitter (honouring
//! `Retry-After`), and typed errors that name the URL but never the key. Endpoint families
//! only build requests and parse responses.
//!
//! The key goes only where the base URL points: redirects are not followed (a redirect is an
//! error naming where it led), and the header is marked sensitive. URLs in errors and logs go
//! through [`display_url`], which keeps personal data (a user's email or userId in a query or
//! a path) out of messages, logs and run reports.

use std::fmt;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use rand::Rng;
use reqwest::header::{HeaderValue, LOCATION};
use reqwest::{Method, StatusCode};
use serde::Deserialize;
use tokio_util::sync::CancellationToken;
use url::Url;

/// An Iterable API key. Its `Debug` and `Display` never show it.
#[derive(Clone)]
pub struct ApiKey(String);

impl ApiKey {
    pub fn new(key: impl Into<String>) -> Option<Self> {
        let key = key.into().trim().to_string();
        (!key.is_empty()).then_some(ApiKey(key))
    }

    /// The key itself, for the request header only.
    fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey(redacted)")
    }
}

/// Iterable's data centres. A key works only in the centre its project lives in.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Region {
    Us,
    Eu,
}

impl Region {
    pub fn base_url(self) -> &'static str {
        match self {
            Region::Us => "https://api.iterable.com/api/",
            Region::Eu => "https://api.eu.iterable.com/api/",
        }
    }
}

/// Endpoint families that share a rate limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// `export/data.json` and `export/data.csv`: 4 requests per minute per project.
    Export,
    /// `lists/getUsers`: 5 requests per minute per project.
    ListUsers,
    /// `campaigns/metrics`: 10 requests per minute per project.
    Metrics,
    /// The export jobs' `start`, `files` and cancel: 1 request per second per organization.
    ExportJobs,
    /// Generous endpoints with no shared limiter.
    Other,
}

/// 429s get this many times `max_retries`: they only say to wait, and another client of the
/// same project may keep the budget busy for a while.
const RATE_LIMITED_RETRIES_FACTOR: u32 = 4;

#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Retries after the first attempt on errors (5xx, connection errors); 429s get
    /// `RATE_LIMITED_RETRIES_FACTOR` times as many.
    pub max_retries: u32,
    pub base_delay: Duration,
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_retries: 8,
            base_delay: Duration::from_secs(2),
            max_delay: Duration::from_secs(300),
        }
    }
}

#[derive(Debug, Clone)]
pub struct ClientConfig {
    pub base_url: Url,
    pub key: ApiKey,
    pub export_requests_per_minute: u32,
    pub list_users_requests_per_minute: u32,
    pub metrics_requests_per_minute: u32,
    pub export_job_requests_per_second: u32,
    pub retry: RetryPolicy,
    pub connect_timeout: Duration,
    /// The longest wait for the next bytes of a response.
    pub read_timeout: Duration,
}

impl ClientConfig {
    pub fn new(base_url: Url, key: ApiKey) -> Self {
        ClientConfig {
            base_url,
            key,
            export_requests_per_minute: 4,
            list_users_requests_per_minute: 5,
            metrics_requests_per_minute: 10,
            export_job_requests_per_second: 1,
            retry: RetryPolicy::default(),
            connect_timeout: Duration::from_secs(30),
            read_timeout: Duration::from_secs(300),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error(
        "the API key was rejected by {url} (401 {code}): check the key, and that --region \
         matches the project's data centre (a key works only in its own)"
    )]
    Unauthorized { url: String, code: String },
    #[error("{url} answered {status} {code}: {msg} (after {attempts} attempts)")]
    Status {
        url: String,
        status: u16,
        code: String,
        msg: String,
        attempts: u32,
    },
    #[error("{url}: {source} (after {attempts} attempts)")]
    Transport {
        url: String,
        source: reqwest::Error,
        attempts: u32,
    },
    #[error(
        "{url} answered {status}, a redirect to {to}: redirects are not followed, so that the \
         API key goes nowhere else; check --region or the base URL"
    )]
    Redirected {
        url: String,
        status: u16,
        to: String,
    },
    #[error("building the HTTP client: {0}")]
    Client(reqwest::Error),
    #[error("the API key holds characters an HTTP header cannot carry")]
    KeyNotAHeader,
    #[error("cannot add {path:?} to the base URL {base}")]
    Url { base: String, path: String },
    #[error("{url}: not asked again, the run was stopped")]
    Stopped { url: String },
}

impl ApiError {
    /// Whether the error is a timeout or a dropped connection, which a smaller window may avoid.
    pub fn is_timeout(&self) -> bool {
        matches!(self, ApiError::Transport { source, .. } if source.is_timeout())
    }
}

/// Counters of one client, for the run report.
#[derive(Debug, Default)]
pub struct ApiStats {
    pub requests: AtomicU64,
    pub retries: AtomicU64,
    pub rate_limited: AtomicU64,
    pub backoff_ms: AtomicU64,
    /// The part of `backoff_ms` spent waiting after 429 answers.
    pub rate_limit_wait_ms: AtomicU64,
}

/// Iterable's error body.
#[derive(Debug, Default, Deserialize)]
struct ErrorBody {
    #[serde(default)]
    code: String,
    #[serde(default)]
    msg: String,
}

/// The shared HTTP driver. Cheap to clone.
#[derive(Clone)]
pub struct ApiClient {
    http: reqwest::Client,
    base: Url,
    /// The `Api-Key` header's value, marked sensitive.
    key: HeaderValue,
    export_limiter: Arc<DefaultDirectRateLimiter>,
    list_users_limiter: Arc<DefaultDirectRateLimiter>,
    metrics_limiter: Arc<DefaultDirectRateLimiter>,
    export_jobs_limiter: Arc<DefaultDirectRateLimiter>,
    retry: RetryPolicy,
    pub stats: Arc<ApiStats>,
    /// Counters of one part of the run (a stream), kept besides `stats`.
    scope: Option<Arc<ApiStats>>,
    /// Once fired, no request waits for its rate limiter or is tried again
    /// ([`ApiError::Stopped`]): a stopped run does not wait out limiters and backoffs.
    stop: CancellationToken,
}

/// A limiter of `per_minute` requests, one at a time (no bursts).
fn per_minute(per_minute: u32) -> Arc<DefaultDirectRateLimiter> {
    let n = NonZeroU32::new(per_minute.max(1)).expect("max(1)");
    Arc::new(RateLimiter::direct(
        Quota::per_minute(n).allow_burst(NonZeroU32::MIN),
    ))
}

/// A limiter of `per_second` requests, one at a time (no bursts).
fn per_second(per_second: u32) -> Arc<DefaultDirectRateLimiter> {
    let n = NonZeroU32::new(per_second.max(1)).expect("max(1)");
    Arc::new(RateLimiter::direct(
        Quota::per_second(n).allow_burst(NonZeroU32::MIN),
    ))
}

impl fmt::Debug for ApiClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiClient")
            .field("base", &self.base.as_str())
            .finish_non_exhaustive()
    }
}

impl ApiClient {
    pub fn new(cfg: ClientConfig) -> Result<Self, ApiError> {
        let http = reqwest::Client::builder()
            .connect_timeout(cfg.connect_timeout)
            .read_timeout(cfg.read_timeout)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("iterable-lake/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(ApiError::Client)?;
        let mut key =
            HeaderValue::from_str(cfg.key.expose()).map_err(|_| ApiError::KeyNotAHeader)?;
        key.set_sensitive(true);
        let mut base = cfg.base_url;
        if !base.path().ends_with('/') {
            base.set_path(&format!("{}/", base.path()));
        }
        Ok(ApiClient {
            http,
            base,
            key,
            export_limiter: per_minute(cfg.export_requests_per_minute),
            list_users_limiter: per_minute(cfg.list_users_requests_per_minute),
            metrics_limiter: per_minute(cfg.metrics_requests_per_minute),
            export_jobs_limiter: per_second(cfg.export_job_requests_per_second),
            retry: cfg.retry,
            stats: Arc::default(),
            scope: None,
            stop: CancellationToken::new(),
        })
    }

    /// A client of the same limits and counters whose waits end once `stop` fires: a
    /// request waiting for its rate limiter or a retry's backoff ends at once with
    /// [`ApiError::Stopped`] (one that needs no wait is still sent).
    pub fn stopping_on(&self, stop: CancellationToken) -> ApiClient {
        ApiClient {
            stop,
            ..self.clone()
        }
    }

    /// Fired when the client was stopped ([`stopping_on`](Self::stopping_on)).
    pub async fn stopped(&self) {
        self.stop.cancelled().await
    }

    /// Whether the client was stopped.
    pub fn is_stopped(&self) -> bool {
        self.stop.is_cancelled()
    }

    /// A client sharing this one's connections, limits and counters that also counts its
    /// own requests, 429s and waits in the returned stats (a stream's share of the run).
    pub fn scoped(&self) -> (ApiClient, Arc<ApiStats>) {
        let scope = Arc::new(ApiStats::default());
        let client = ApiClient {
            scope: Some(scope.clone()),
            ..self.clone()
        };
        (client, scope)
    }

    /// Add `n` to the counter `pick` chooses, in the run's stats and the scope's.
    fn count(&self, pick: fn(&ApiStats) -> &AtomicU64, n: u64) {
        pick(&self.stats).fetch_add(n, Ordering::Relaxed);
        if let Some(scope) = &self.scope {
            pick(scope).fetch_add(n, Ordering::Relaxed);
        }
    }

    pub fn base_url(&self) -> &Url {
        &self.base
    }

    fn url(&self, segments: &[&str], query: &[(&str, String)]) -> Result<Url, ApiError> {
        let mut url = self.base.clone();
        url.path_segments_mut()
            .map_err(|()| ApiError::Url {
                base: self.base.to_string(),
                path: segments.join("/"),
            })?
            .pop_if_empty()
            .extend(segments);
        if !query.is_empty() {
            url.query_pairs_mut()
                .extend_pairs(query.iter().map(|(k, v)| (k, v.as_str())));
        }
        Ok(url)
    }

    /// GET `path` (relative to the base URL) and return the response once its status is a
    /// success, retrying 429, 5xx and connection failures. The body is left to the caller to
    /// stream.
    pub async fn get(
        &self,
        family: Family,
        path: &str,
        query: &[(&str, String)],
    ) -> Result<reqwest::Response, ApiError> {
        let segments: Vec<&str> = path.split('/').collect();
        self.get_segments(family, &segments, query).await
    }

    /// Like [`get`](Self::get), with the path given as segments, each percent-encoded (for
    /// user-provided names such as metadata keys).
    pub async fn get_segments(
        &self,
        family: Family,
        segments: &[&str],
        query: &[(&str, String)],
    ) -> Result<reqwest::Response, ApiError> {
        self.send(Method::GET, family, segments, query, None).await
    }

    /// POST `body` as JSON to `path`, like [`get`](Self::get) otherwise.
    pub async fn post_json(
        &self,
        family: Family,
        path: &str,
        body: &serde_json::Value,
    ) -> Result<reqwest::Response, ApiError> {
        let segments: Vec<&str> = path.split('/').collect();
        self.send(Method::POST, family, &segments, &[], Some(body))
            .await
    }

    /// DELETE `path`, like [`get`](Self::get) otherwise.
    pub async fn delete(&self, family: Family, path: &str) -> Result<reqwest::Response, ApiError> {
        let segments: Vec<&str> = path.split('/').collect();
        self.send(Method::DELETE, family, &segments, &[], None)
            .await
    }

    /// GET a pre-signed download link (an export job's file): without the `Api-Key` header,
    /// without retries (the caller knows what a failure means for the file). The link's
    /// query string is its signature: errors carry no URL.
    pub async fn download(&self, url: &Url) -> Result<reqwest::Response, reqwest::Error> {
        self.count(|s| &s.requests, 1);
        self.http
            .get(url.clone())
            .send()
            .await
            .map_err(reqwest::Error::without_url)
    }

    async fn send(
        &self,
        method: Method,
        family: Family,
        segments: &[&str],
        query: &[(&str, String)],
        body: Option<&serde_json::Value>,
    ) -> Result<reqwest::Response, ApiError> {
        let url = self.url(segments, query)?;
        let shown = display_url(&url);
        let mut attempt = 0u32;
        // Failed attempts so far: errors, and answers of 429.
        let (mut errors, mut rate_limited) = (0u32, 0u32);
        loop {
            attempt += 1;
            let limiter = match family {
                Family::Export => Some(&self.export_limiter),
                Family::ListUsers => Some(&self.list_users_limiter),
                Family::Metrics => Some(&self.metrics_limiter),
                Family::ExportJobs => Some(&self.export_jobs_limiter),
                Family::Other => None,
            };
            if let Some(limiter) = limiter {
                tokio::select! {
                    _ = limiter.until_ready() => {}
                    _ = self.stop.cancelled() => {
                        return Err(ApiError::Stopped { url: shown });
                    }
                }
            }
            self.count(|s| &s.requests, 1);
            let mut limited = false;
            let mut request = self
                .http
                .request(method.clone(), url.clone())
                .header("Api-Key", self.key.clone());
            if let Some(body) = body {
                request = request
                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                    .body(body.to_string());
            }
            let sent = request.send().await;
            let retry_after = match sent {
                Ok(resp) if resp.status().is_success() => return Ok(resp),
                Ok(resp) if resp.status().is_redirection() => {
                    return Err(ApiError::Redirected {
                        url: shown,
                        status: resp.status().as_u16(),
                        to: redirect_target(&resp),
                    });
                }
                Ok(resp) => {
                    let status = resp.status();
                    let retry_after = retry_after(&resp);
                    let mut body: ErrorBody = resp
                        .bytes()
                        .await
                        .ok()
                        .and_then(|b| serde_json::from_slice(&b).ok())
                        .unwrap_or_default();
                    body.msg = without_emails(&body.msg);
                    if status == StatusCode::UNAUTHORIZED {
                        return Err(ApiError::Unauthorized {
                            url: shown,
                            code: body.code,
                        });
                    }
                    limited = status == StatusCode::TOO_MANY_REQUESTS;
                    let (failures, allowed) = if limited {
                        rate_limited += 1;
                        let allowed = self.retry.max_retries * RATE_LIMITED_RETRIES_FACTOR;
                        (rate_limited, allowed)
                    } else {
                        errors += 1;
                        (errors, self.retry.max_retries)
                    };
                    let retryable = limited || status.is_server_error();
                    if !retryable || failures > allowed {
                        return Err(ApiError::Status {
                            url: shown,
                            status: status.as_u16(),
                            code: body.code,
                            msg: body.msg,
                            attempts: attempt,
                        });
                    }
                    if limited {
                        self.count(|s| &s.rate_limited, 1);
                    }
                    tracing::debug!(url = %shown, status = status.as_u16(), code = %body.code, attempt, "retrying");
                    retry_after
                }
                Err(source) => {
                    errors += 1;
                    if errors > self.retry.max_retries {
                        return Err(ApiError::Transport {
                            url: shown,
                            source: source.without_url(),
                            attempts: attempt,
                        });
                    }
                    tracing::debug!(url = %shown, error = %source.without_url(), attempt, "retrying");
                    None
                }
            };
            let failures = if limited { rate_limited } else { errors };
            let delay = retry_after.unwrap_or_else(|| self.backoff(failures));
            let ms = delay.as_millis() as u64;
            self.count(|s| &s.retries, 1);
            self.count(|s| &s.backoff_ms, ms);
            if limited {
                self.count(|s| &s.rate_limit_wait_ms, ms);
            }
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = self.stop.cancelled() => return Err(ApiError::Stopped { url: shown }),
            }
        }
    }

    /// Exponential backoff with full jitter in [delay/2, delay].
    fn backoff(&self, attempt: u32) -> Duration {
        let exp = self
            .retry
            .base_delay
            .saturating_mul(1u32 << attempt.min(16).saturating_sub(1))
            .min(self.retry.max_delay);
        let jitter = rand::rng().random_range(0.5..=1.0);
        exp.mul_f64(jitter)
    }
}

/// Query parameters whose values say what was asked, never who: shown in messages.
const SHOWN_QUERY: [&str; 10] = [
    "dataTypeName",
    "startDateTime",
    "endDateTime",
    "campaignId",
    "listId",
    "templateType",
    "messageMedium",
    "page",
    "pageSize",
    "includeCustomEvents",
];

/// What stands for a value [`display_url`] leaves out.
const REDACTED: &str = "redacted";

/// The URL for messages, logs and run reports: without user info, with the value of every
/// query parameter but those in [`SHOWN_QUERY`] and every path segment holding an `@`
/// (an email) replaced by `redacted`. The key is never in a URL.
pub fn display_url(url: &Url) -> String {
    let mut u = url.clone();
    let _ = u.set_username("");
    let _ = u.set_password(None);
    if let Some(segments) = url.path_segments() {
        let shown: Vec<&str> = segments
            .map(
                |s| match s.contains('@') || s.to_ascii_lowercase().contains("%40") {
                    true => REDACTED,
                    false => s,
                },
            )
            .collect();
        u.set_path(&format!("/{}", shown.join("/")));
    }
    if url.query().is_some() {
        let pairs: Vec<(String, String)> = url
            .query_pairs()
            .map(|(k, v)| {
                let shown = SHOWN_QUERY.contains(&k.as_ref()) && !v.contains('@');
                let v = if shown {
                    v.into_owned()
                } else {
                    REDACTED.into()
                };
                (k.into_owned(), v)
            })
            .collect();
        u.query_pairs_mut().clear().extend_pairs(pairs);
    }
    u.to_string()
}

/// `text` with every word holding an `@` (an email, as a server may echo one back) replaced
/// by `redacted`.
fn without_emails(text: &str) -> String {
    let apart = |c: char| c.is_whitespace() || "\"'`<>()[]{},;".contains(c);
    let mut out = String::with_capacity(text.len());
    for piece in text.split_inclusive(apart) {
        let word = piece.trim_end_matches(apart);
        match word.contains('@') {
            true => {
                out.push_str(REDACTED);
                out.push_str(&piece[word.len()..]);
            }
            false => out.push_str(piece),
        }
    }
    out
}

/// Where a redirect leads, for its error: the scheme, host and port only.
fn redirect_target(resp: &reqwest::Response) -> String {
    let location = resp.headers().get(LOCATION).and_then(|l| l.to_str().ok());
    match location.map(|l| resp.url().join(l)) {
        Some(Ok(to)) => to.origin().ascii_serialization(),
        Some(Err(_)) => "an unreadable Location".to_string(),
        None => "nowhere (no Location)".to_string(),
    }
}

fn retry_after(resp: &reqwest::Response) -> Option<Duration> {
    let secs: u64 = resp
        .headers()
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    Some(Duration::from_secs(secs.min(900)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_never_shows_in_debug() {
        let key = ApiKey::new("secret-key-123").unwrap();
        let cfg = ClientConfig::new(Url::parse("http://127.0.0.1:1/api").unwrap(), key);
        let text = format!("{cfg:?}");
        assert!(!text.contains("secret-key-123"), "{text}");
        let client = ApiClient::new(cfg).unwrap();
        assert!(!format!("{client:?}").contains("secret"));
        assert_eq!(client.base_url().as_str(), "http://127.0.0.1:1/api/");
        let url = client
            .url(&["metadata", "a/b c", "k"], &[("nextMarker", "x y".into())])
            .unwrap();
        assert_eq!(
            url.as_str(),
            "http://127.0.0.1:1/api/metadata/a%2Fb%20c/k?nextMarker=x+y"
        );
        assert!(ApiKey::new("  ").is_none());
    }

    /// Serve `app` on an ephemeral port of 127.0.0.1 for the rest of the test.
    async fn serve(app: axum::Router) -> std::net::SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        addr
    }

    fn client_of(base: &str) -> ApiClient {
        let mut cfg = ClientConfig::new(Url::parse(base).unwrap(), ApiKey::new("k-123").unwrap());
        cfg.retry.max_retries = 0;
        ApiClient::new(cfg).unwrap()
    }

    #[tokio::test]
    async fn redirects_are_refused_and_the_key_goes_nowhere_else() {
        use axum::http::{HeaderMap, StatusCode, header};
        use std::sync::Mutex;

        // Paths requested, each with whether it carried the key.
        type Seen = Arc<Mutex<Vec<(String, bool)>>>;
        let record = |seen: Seen| {
            move |uri: axum::http::Uri, headers: HeaderMap| async move {
                let keyed = headers.get("Api-Key").is_some();
                seen.lock().unwrap().push((uri.path().to_string(), keyed));
                StatusCode::OK
            }
        };
        let elsewhere: Seen = Arc::default();
        let other = serve(axum::Router::new().fallback(record(elsewhere.clone()))).await;
        let here: Seen = Arc::default();
        let app = axum::Router::new()
            .route(
                "/api/away",
                axum::routing::get(move || async move {
                    let to = format!("http://{other}/stolen");
                    (StatusCode::FOUND, [(header::LOCATION, to)])
                }),
            )
            .route(
                "/api/near",
                axum::routing::get(|| async {
                    (
                        StatusCode::TEMPORARY_REDIRECT,
                        [(header::LOCATION, "/api/ok")],
                    )
                }),
            )
            .fallback(record(here.clone()));
        let addr = serve(app).await;
        let client = client_of(&format!("http://{addr}/api/"));

        client.get(Family::Other, "ok", &[]).await.unwrap();
        match client.get(Family::Other, "away", &[]).await {
            Err(ApiError::Redirected {
                status: 302, to, ..
            }) => {
                assert_eq!(to, format!("http://{other}"));
            }
            other => panic!("{:?}", other.map(|r| r.status())),
        }
        let near = client.get(Family::Other, "near", &[]).await;
        assert!(
            matches!(near, Err(ApiError::Redirected { status: 307, .. })),
            "{:?}",
            near.map(|r| r.status())
        );
        assert!(
            elsewhere.lock().unwrap().is_empty(),
            "the other host was reached"
        );
        assert_eq!(*here.lock().unwrap(), [("/api/ok".to_string(), true)]);
        assert!(client.key.is_sensitive());
    }

    #[tokio::test]
    async fn errors_name_no_user() {
        let app = axum::Router::new().fallback(|| async {
            let body = serde_json::json!({
                "code": "BadParams",
                "msg": "No user found for email jane.doe@example.com (userId 'u-9')",
            });
            (axum::http::StatusCode::BAD_REQUEST, axum::Json(body))
        });
        let addr = serve(app).await;
        let client = client_of(&format!("http://{addr}/api/"));
        let query = [
            ("email", "jane.doe@example.com".to_string()),
            ("includeCustomEvents", "true".to_string()),
        ];
        let err = client
            .get(Family::Other, "export/userEvents", &query)
            .await
            .unwrap_err()
            .to_string();
        assert!(
            !err.contains("jane") && !err.contains("example.com"),
            "{err}"
        );
        assert!(
            err.contains("export/userEvents?email=redacted&includeCustomEvents=true")
                && err.contains("No user found for email redacted (userId"),
            "{err}"
        );
        let gone = client_of("http://127.0.0.1:1/api/");
        let query = [("userId", "u-9".to_string())];
        let err = gone
            .get_segments(Family::Other, &["users", "jane@example.com"], &query)
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("/api/users/redacted?userId=redacted"), "{err}");
        assert!(!err.contains("jane") && !err.contains("u-9"), "{err}");
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let key = ApiKey::new("k").unwrap();
        let mut cfg = ClientConfig::new(Url::parse("http://127.0.0.1:1/api/").unwrap(), key);
        cfg.retry = RetryPolicy {
            max_retries: 3,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_millis(1000),
        };
        let c = ApiClient::new(cfg).unwrap();
        let d1 = c.backoff(1);
        assert!(d1 >= Duration::from_millis(50) && d1 <= Duration::from_millis(100));
        let d3 = c.backoff(3);
        assert!(d3 >= Duration::from_millis(200) && d3 <= Duration::from_millis(400));
        assert!(c.backoff(30) <= Duration::from_millis(1000));
    }
}
