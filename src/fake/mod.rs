//! A fake Iterable API: a real HTTP server on `127.0.0.1`, started in-process by tests,
//! benchmarks and `iterable-lake demo`. From a seed and a size it generates deterministic data
//! with Iterable's quirks, serves every endpoint the extractor reads, injects the faults
//! Iterable shows in production, and tells tests exactly which records a window holds.
//!
//! Callers start it with [`FakeIterable::start`] inside a tokio runtime, point the extractor
//! at [`FakeIterable::base_url`] with [`FakeConfig::api_key`], and drop it (or await
//! [`FakeIterable::shutdown`]) when done.
//!
//! This module owns the configuration, the server and the faults every endpoint shares.
//! Every route lives under `/api` (the routers of `export`, `jobs` and `rest` give paths
//! relative to it), behind the `Api-Key` check and the random 500s; the export-job file
//! downloads live under `/fake-files` and need no key, like pre-signed links. Every request,
//! rejected or not, is counted and delayed by `Faults::latency`.

mod export;
mod generate;
mod jobs;
mod params;
pub mod people;
mod rest;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt::Display;
use std::io;
use std::net::SocketAddr;
use std::ops::ControlFlow;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Request, State as Shared};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, NaiveDate, Utc};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use generate::{Generator, Query, Rng, Shape};

/// What the fake serves: its data set (seed and size), its key and its faults.
#[derive(Debug, Clone)]
pub struct FakeConfig {
    /// Every generated value derives from this seed: same seed and size, same data.
    pub seed: u64,
    /// The only key the server accepts in the `Api-Key` header.
    pub api_key: String,
    /// Midnight UTC of the first day that holds events.
    pub start: DateTime<Utc>,
    /// How many days hold events, from `start`.
    pub days: u32,
    /// Mean number of events per day for each event data type (the size knob).
    pub events_per_day: u32,
    /// How many user profiles exist.
    pub users: u32,
    /// The largest export-job file, in bytes (Iterable: 10 MB). A file holds whole lines, so
    /// a single longer line makes a file of its own.
    pub job_file_bytes: usize,
    /// How export jobs move through their states (see the `jobs` module).
    pub jobs: JobConfig,
    /// Keep every export body generated once the data is settled (see
    /// [`Generator::settled`]) and replay it for the same request, so that a benchmark's
    /// client, not the fake's generator, uses the CPU. Bodies are held whole in memory.
    pub cache_bodies: bool,
    /// Users who change identity at the data range's middle, as the user export shows
    /// them (the other endpoints know them by their current identity): every tenth user
    /// with a userId (`i % 10 == 3`) had no email before it (a userId-only profile that
    /// gains one), and another tenth (`i % 10 == 7`) had the email `was.<email>`.
    pub identity_changes: bool,
    pub faults: Faults,
}

/// How the fake's export jobs run, on the job clock (wall-clock time since the server
/// started, plus [`FakeIterable::advance_job_clock`]). Iterable documents the 10 MB files,
/// the 100 GB cap, the 30-minute URLs and the 4 jobs processing at once; the queue and run
/// times and the production rate are assumptions of the speed model, settable here.
#[derive(Debug, Clone)]
pub struct JobConfig {
    /// How long a started (or restarted) job waits `Enqueued` before it may take a slot.
    pub queue_time: Duration,
    /// The shortest time a job runs `Running`, however little it exports.
    pub run_time: Duration,
    /// How fast one running job writes its files, in bytes per second (each running job at
    /// this rate). A job runs for its bytes at this rate, or `run_time` if longer. `None`:
    /// every job runs `run_time`.
    pub bytes_per_second: Option<u64>,
    /// Jobs processing at once (Iterable: 4 per organization); later ones wait `Enqueued`.
    pub max_running: usize,
    /// An export's cap in bytes (Iterable: 100 GB): the files past it are not written and
    /// the job says `exportTruncated`.
    pub max_bytes: u64,
    /// How long a file URL stays valid after the `files` call that listed it (Iterable: 30
    /// minutes), on the job clock.
    pub url_lifetime: Duration,
}

/// Faults, each switchable per server instance.
#[derive(Debug, Clone)]
pub struct Faults {
    /// At most this many export requests (`/api/export/data.json`) per sliding window of
    /// wall-clock time; the rest get 429 `RateLimitExceeded` (and do not use up the budget).
    /// Iterable's limit is 4 per minute. `None` turns it off.
    pub export_rate: Option<(u32, Duration)>,
    /// Add `Retry-After: <seconds until the window admits another request>` to those 429s.
    pub retry_after: bool,
    /// Lists whose `getUsers` always answers 500 `GenericError` ("… Please try again later").
    pub failing_lists: Vec<i64>,
    /// Cut export responses off mid-body (connection closed without the final chunk).
    pub cut_off: Option<CutOff>,
    /// End export responses early but cleanly (a proper end of the chunked body), in the
    /// middle of a line: one byte past `after_bytes` when that falls at a line's end. Counted
    /// apart from `cut_off`; a request `cut_off` takes is not also cut here.
    pub clean_cut_off: Option<CutOff>,
    /// Start every `data.json` and `userEvents` body with a UTF-8 byte-order mark.
    pub byte_order_mark: bool,
    /// Answer `campaigns/metrics` as older projects do: every header (and cell) twice in a
    /// row, and `Purchases / M` and `Revenue / M` without the medium.
    pub old_metrics_csv: bool,
    /// Answer this share of `/api` requests (0.0–1.0) with 500 `GenericError`, after the key
    /// check, drawing one number per request from a sequence seeded by `random_500_seed`.
    pub random_500: f64,
    pub random_500_seed: u64,
    /// Added before every response.
    pub latency: Option<Duration>,
    /// Data type spellings the export answers with 400 `BadParams`, to exercise fallbacks
    /// (e.g. `emailUnSubscribe`).
    pub rejected_data_types: Vec<String>,
    /// Send about one export record in this many without a cursor the client can read, as
    /// real exports sometimes do: alternately with no `createdAt` (`profileUpdatedAt` for
    /// users) and with one that is no instant (`"unknown"`). The fake still files the record
    /// under its real instant, so the windows that serve it do not change.
    pub cursorless_every: Option<u32>,
    /// With `cursorless_every`: the `users` records sent without a readable cursor also have
    /// no `email` and no `userId`, so nothing keys them (as a line that is not JSON).
    pub keyless_users: bool,
    /// `campaigns/metrics` answers the request that asks for the lowest campaign id with one
    /// more row: the metrics of that campaign under this id, which no `GET /api/campaigns`
    /// lists and nobody asked for (a response may name such a campaign).
    pub unasked_metrics_campaign: Option<i64>,
    /// At most this many requests per window of wall-clock time to each of `export/start`,
    /// `export/{jobId}/files` and `DELETE export/{jobId}`, each its own budget; the rest get
    /// 429 `RateLimitExceeded` (with `Retry-After` under `retry_after`). Iterable: 1 a second.
    pub job_rate: Option<(u32, Duration)>,
    /// These jobs go back from `Running` to `Enqueued` once, halfway through, keeping the
    /// files they wrote, and then queue and run again for the rest.
    pub job_restart: Option<FirstJobs>,
    /// These jobs turn `Failed` halfway through: their files are no longer listed and their
    /// URLs answer 404.
    pub job_failure: Option<FirstJobs>,
    /// These jobs complete with `exportTruncated`, holding only the first half of their
    /// files (rounded down).
    pub job_truncation: Option<FirstJobs>,
    /// The first this many file downloads with a valid URL answer 403 "Request has expired".
    pub expired_urls: u32,
    /// Cut file downloads off mid-line: the full `Content-Length` is announced, about
    /// `after_bytes` are sent, then the connection closes.
    pub cut_downloads: Option<CutOff>,
    /// Stream each `data.json` response at most this fast, in bytes per second (the speed
    /// model's assumption of Iterable's per-request streaming rate).
    pub stream_bytes_per_second: Option<u64>,
    /// Answer every export-job route (`start`, `files`, `jobs`, `DELETE`) with this status,
    /// 401 `Unauthorized` or 403 `Forbidden`, after the key check: a key the project does not
    /// allow to use export jobs. (Iterable documents neither the status nor the body for
    /// such a key; these are the two its error codes allow.)
    pub jobs_denied: Option<u16>,
}

/// The first `jobs` export jobs started of `data_type` (either spelling; every data type
/// when `None`).
#[derive(Debug, Clone)]
pub struct FirstJobs {
    pub data_type: Option<String>,
    pub jobs: u32,
}

/// A response cut off after `after_bytes` body bytes, for the first `first_requests`
/// successful `data.json` requests of `data_type` (either spelling; every data type when
/// `None`). A body no longer than `after_bytes` is sent whole (and still counts).
#[derive(Debug, Clone)]
pub struct CutOff {
    pub data_type: Option<String>,
    pub after_bytes: usize,
    pub first_requests: u32,
}

/// How one response is cut short, after how many bytes.
#[derive(Debug, Clone, Copy)]
enum Cut {
    /// The connection is aborted without the final chunk.
    Abort(usize),
    /// The body ends properly, in the middle of a line.
    Clean(usize),
    /// The connection is aborted in the middle of a line (a byte or more past the count
    /// when that falls at a line's end).
    AbortMidLine(usize),
}

impl Default for Faults {
    fn default() -> Self {
        Faults {
            export_rate: Some((4, Duration::from_secs(60))),
            retry_after: false,
            failing_lists: Vec::new(),
            cut_off: None,
            clean_cut_off: None,
            byte_order_mark: false,
            old_metrics_csv: false,
            random_500: 0.0,
            random_500_seed: 0,
            latency: None,
            rejected_data_types: Vec::new(),
            cursorless_every: None,
            keyless_users: false,
            unasked_metrics_campaign: None,
            job_rate: Some((1, Duration::from_secs(1))),
            job_restart: None,
            job_failure: None,
            job_truncation: None,
            expired_urls: 0,
            cut_downloads: None,
            stream_bytes_per_second: None,
            jobs_denied: None,
        }
    }
}

impl FakeConfig {
    /// A small data set for tests: a few days, tens of events per type per day, no rate
    /// limits, export jobs that queue 100 ms and run 200 ms.
    pub fn small(seed: u64) -> Self {
        FakeConfig {
            seed,
            api_key: "fake-api-key-0123456789".to_string(),
            start: "2024-01-01T00:00:00Z".parse().expect("valid instant"),
            days: 3,
            events_per_day: 40,
            users: 200,
            job_file_bytes: 10 * 1024 * 1024,
            jobs: JobConfig {
                queue_time: Duration::from_millis(100),
                run_time: Duration::from_millis(200),
                bytes_per_second: None,
                max_running: 4,
                max_bytes: 100 << 30,
                url_lifetime: Duration::from_secs(30 * 60),
            },
            cache_bodies: false,
            identity_changes: false,
            faults: Faults {
                export_rate: None,
                job_rate: None,
                ..Faults::default()
            },
        }
    }
}

/// Shared state of a running fake.
#[derive(Debug)]
pub(crate) struct State {
    pub cfg: FakeConfig,
    /// The fake's clock: only data visible at this instant is served. `None`: wall clock.
    pub clock: Mutex<Option<DateTime<Utc>>>,
    /// Where the server listens; export-job file URLs point here.
    pub addr: SocketAddr,
    pub(crate) generator: Generator,
    /// Requests per path, counted before any check.
    requests: Mutex<BTreeMap<String, u64>>,
    rate_limited: AtomicU64,
    /// When the export requests admitted in the current rate-limit window arrived.
    export_window: RateWindow,
    /// The same for `export/start`, `export/{jobId}/files` and `DELETE export/{jobId}`.
    job_windows: [RateWindow; 3],
    /// Export-job requests answered 429.
    job_rate_limited: AtomicU64,
    /// File downloads that carried an API key (header or query).
    keyed_file_requests: AtomicU64,
    /// When the server started: the job clock's zero.
    started: Instant,
    /// How far [`FakeIterable::advance_job_clock`] moved the job clock.
    job_clock_skew: Mutex<Duration>,
    dice_500: Mutex<Rng>,
    /// Successful `data.json` requests the cut-off faults have seen, each.
    cut_off_seen: AtomicU64,
    clean_cut_off_seen: AtomicU64,
    jobs: Mutex<jobs::Jobs>,
    /// Export bodies by request, when `cfg.cache_bodies`.
    pub(crate) bodies: Mutex<HashMap<String, Arc<[axum::body::Bytes]>>>,
}

impl State {
    fn new(cfg: FakeConfig, addr: SocketAddr) -> State {
        State {
            generator: Generator::new(&cfg),
            dice_500: Mutex::new(Rng::new(cfg.faults.random_500_seed)),
            cfg,
            clock: Mutex::new(None),
            addr,
            requests: Mutex::new(BTreeMap::new()),
            rate_limited: AtomicU64::new(0),
            export_window: RateWindow::default(),
            job_windows: Default::default(),
            job_rate_limited: AtomicU64::new(0),
            keyed_file_requests: AtomicU64::new(0),
            started: Instant::now(),
            job_clock_skew: Mutex::new(Duration::ZERO),
            cut_off_seen: AtomicU64::new(0),
            clean_cut_off_seen: AtomicU64::new(0),
            jobs: Mutex::new(jobs::Jobs::default()),
            bodies: Mutex::new(HashMap::new()),
        }
    }

    /// The fake's clock: the instant of the last `FakeIterable::set_now`, else the wall clock.
    pub fn now(&self) -> DateTime<Utc> {
        self.clock
            .lock()
            .expect("clock lock")
            .unwrap_or_else(Utc::now)
    }

    /// Whether this request gets the random 500: one draw from the seeded sequence per call,
    /// so the same request order gives the same failures. The `/api` middleware calls it for
    /// every authenticated request; handlers need not.
    pub(crate) fn draw_random_500(&self) -> bool {
        let p = self.cfg.faults.random_500;
        p > 0.0 && self.dice_500.lock().expect("dice lock").unit() < p
    }

    fn count_request(&self, path: &str) {
        *self
            .requests
            .lock()
            .expect("counter lock")
            .entry(path.to_string())
            .or_default() += 1;
    }

    /// Admits one `data.json` request under `Faults::export_rate`, or tells how long until
    /// the window admits another.
    fn admit_export(&self) -> Result<(), Duration> {
        self.export_window
            .admit(self.cfg.faults.export_rate)
            .inspect_err(|_| {
                self.rate_limited.fetch_add(1, Ordering::Relaxed);
            })
    }

    /// Admits one export-job request to `endpoint` under `Faults::job_rate`, or tells how
    /// long until its window admits another.
    fn admit_job_request(&self, endpoint: JobEndpoint) -> Result<(), Duration> {
        self.job_windows[endpoint as usize]
            .admit(self.cfg.faults.job_rate)
            .inspect_err(|_| {
                self.job_rate_limited.fetch_add(1, Ordering::Relaxed);
            })
    }

    /// The job clock: wall-clock time since the server started, plus the skew tests add.
    fn job_clock(&self) -> Duration {
        self.started.elapsed() + *self.job_clock_skew.lock().expect("skew lock")
    }

    /// How to cut this `data.json` response short, if `Faults::cut_off` or
    /// `Faults::clean_cut_off` applies to it.
    fn take_cut_off(&self, requested: &str, canonical: &str) -> Option<Cut> {
        let faults = &self.cfg.faults;
        let take = |cut: Option<&CutOff>, seen: &AtomicU64| {
            let cut = cut?;
            if cut
                .data_type
                .as_deref()
                .is_some_and(|t| t != requested && t != canonical)
            {
                return None;
            }
            let seen = seen.fetch_add(1, Ordering::Relaxed);
            (seen < cut.first_requests as u64).then_some(cut.after_bytes)
        };
        take(faults.cut_off.as_ref(), &self.cut_off_seen)
            .map(Cut::Abort)
            .or_else(|| {
                take(faults.clean_cut_off.as_ref(), &self.clean_cut_off_seen).map(Cut::Clean)
            })
    }

    /// A query of data type `ty` over `[start_ms, end_ms)` as the clock sees it now.
    fn query(&self, ty: usize, start_ms: i64, end_ms: i64, shape: Shape) -> Query {
        Query {
            ty,
            start_ms,
            end_ms,
            now_ms: self.now().timestamp_millis(),
            user: None,
            shape,
        }
    }
}

/// The export-job endpoints that have a rate limit each.
#[derive(Debug, Clone, Copy)]
enum JobEndpoint {
    Start,
    Files,
    Cancel,
}

/// The requests admitted in a sliding window of wall-clock time.
#[derive(Debug, Default)]
struct RateWindow(Mutex<VecDeque<Instant>>);

impl RateWindow {
    /// Admits one request under `limit` (requests per window; `None`: no limit), or tells
    /// how long until the window admits another.
    fn admit(&self, limit: Option<(u32, Duration)>) -> Result<(), Duration> {
        let Some((limit, window)) = limit else {
            return Ok(());
        };
        let now = Instant::now();
        let mut admitted = self.0.lock().expect("rate lock");
        while admitted
            .front()
            .is_some_and(|t| now.duration_since(*t) >= window)
        {
            admitted.pop_front();
        }
        match admitted.front() {
            Some(oldest) if admitted.len() >= limit as usize => {
                Err(window - now.duration_since(*oldest))
            }
            _ => {
                admitted.push_back(now);
                Ok(())
            }
        }
    }
}

/// An error in Iterable's envelope: `{"msg": …, "code": …, "params": null}`.
pub(crate) fn api_error(status: StatusCode, code: &str, msg: impl Display) -> Response {
    let body = serde_json::json!({ "msg": msg.to_string(), "code": code, "params": null });
    (status, axum::Json(body)).into_response()
}

fn router(state: Arc<State>) -> Router {
    let api = export::routes()
        .merge(
            jobs::routes().route_layer(middleware::from_fn_with_state(state.clone(), jobs::deny)),
        )
        .merge(rest::routes())
        .layer(middleware::from_fn_with_state(state.clone(), guard_api));
    Router::new()
        .nest("/api", api)
        .merge(jobs::file_routes())
        .layer(middleware::from_fn_with_state(
            state.clone(),
            count_and_delay,
        ))
        .with_state(state)
}

async fn count_and_delay(Shared(state): Shared<Arc<State>>, req: Request, next: Next) -> Response {
    state.count_request(req.uri().path());
    if let Some(latency) = state.cfg.faults.latency {
        tokio::time::sleep(latency).await;
    }
    next.run(req).await
}

/// The key check (`Api-Key`, or `Api_Key`, header names being case-insensitive), then the
/// random 500s.
async fn guard_api(Shared(state): Shared<Arc<State>>, req: Request, next: Next) -> Response {
    if !has_key(req.headers(), &state.cfg.api_key) {
        return api_error(StatusCode::UNAUTHORIZED, "BadApiKey", "Invalid API key");
    }
    if state.draw_random_500() {
        return api_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "GenericError",
            "Something went wrong. Please try again later",
        );
    }
    next.run(req).await
}

fn has_key(headers: &HeaderMap, key: &str) -> bool {
    ["api-key", "api_key"]
        .iter()
        .filter_map(|name| headers.get(*name))
        .any(|v| v.as_bytes() == key.as_bytes())
}

/// A running fake Iterable API. Dropping it stops the server (without waiting).
pub struct FakeIterable {
    addr: SocketAddr,
    state: Arc<State>,
    stop: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<io::Result<()>>>,
}

impl FakeIterable {
    /// Starts a fake on an ephemeral port of `127.0.0.1`, served by the current tokio runtime.
    pub async fn start(cfg: FakeConfig) -> io::Result<FakeIterable> {
        FakeIterable::start_on(cfg, SocketAddr::from(([127, 0, 0, 1], 0))).await
    }

    /// Starts a fake on `addr`, served by the current tokio runtime.
    pub async fn start_on(cfg: FakeConfig, addr: SocketAddr) -> io::Result<FakeIterable> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(State::new(cfg, addr));
        let app = router(state.clone());
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await
        });
        Ok(FakeIterable {
            addr,
            state,
            stop: Some(stop),
            server: Some(server),
        })
    }

    /// Stops accepting connections and waits for the responses in flight to finish.
    pub async fn shutdown(mut self) -> io::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match self.server.take() {
            Some(server) => server.await.map_err(io::Error::other)?,
            None => Ok(()),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The base URL to hand the extractor, ending in `/api/`.
    pub fn base_url(&self) -> String {
        format!("http://{}/api/", self.addr)
    }

    pub fn config(&self) -> &FakeConfig {
        &self.state.cfg
    }

    /// Set the fake's clock: data created or updated later, or not yet visible, is not served.
    pub fn set_now(&self, now: DateTime<Utc>) {
        *self.state.clock.lock().expect("clock lock") = Some(now);
    }

    /// The fake's clock.
    pub fn now(&self) -> DateTime<Utc> {
        self.state.now()
    }

    /// How many export bodies [`FakeConfig::cache_bodies`] holds.
    pub fn cached_bodies(&self) -> usize {
        self.state.bodies.lock().expect("lock").len()
    }

    /// The middle of the data range: events created (users updated) at or after it may carry
    /// the field that appears mid-range (`frequencyCapped` on events, `loyaltyTier` on users);
    /// earlier ones never do.
    pub fn midpoint(&self) -> DateTime<Utc> {
        DateTime::from_timestamp_millis(self.state.generator.mid_ms()).expect("in range")
    }

    /// The lines `GET /api/export/data.json?dataTypeName=<data_type>` serves now for the
    /// window `[start, end)`, without `onlyFields`/`omitFields`, in response order and without
    /// their newlines. Either spelling of `emailUnSubscribe` is accepted.
    ///
    /// # Panics
    /// If `data_type` is not an export data type.
    pub fn truth_lines(
        &self,
        data_type: &str,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
    ) -> Vec<String> {
        let q = self.truth_query(data_type, start, end);
        let mut lines = Vec::new();
        let _ = self
            .state
            .generator
            .lines(&q, Default::default(), &mut |_, line| {
                lines.push(String::from_utf8(line.to_vec()).expect("lines are UTF-8"));
                ControlFlow::Continue(())
            });
        lines
    }

    /// The exact body `data.json` serves now for `[start, end)`: [`FakeIterable::truth_lines`]
    /// joined by `\n`, ending in `\n` or not as the trailing-newline rule decides (about one
    /// non-empty body in four ends without one, decided by a hash of its last line).
    ///
    /// # Panics
    /// If `data_type` is not an export data type.
    pub fn truth_body(&self, data_type: &str, start: DateTime<Utc>, end: DateTime<Utc>) -> Vec<u8> {
        let mut body = Vec::new();
        self.write_body(data_type, start, end, &mut body)
            .expect("writing to memory cannot fail");
        body
    }

    /// Streams [`FakeIterable::truth_body`] into `out` without holding it, for benchmarks
    /// that want the exact bytes without HTTP. Returns the number of bytes written.
    ///
    /// # Panics
    /// If `data_type` is not an export data type.
    pub fn write_body(
        &self,
        data_type: &str,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
        out: &mut dyn io::Write,
    ) -> io::Result<u64> {
        let q = self.truth_query(data_type, start, end);
        let mut written = 0u64;
        let mut failure = None;
        let _ = self
            .state
            .generator
            .write_body(&q, &mut |bytes| match out.write_all(bytes) {
                Ok(()) => {
                    written += bytes.len() as u64;
                    ControlFlow::Continue(())
                }
                Err(e) => {
                    failure = Some(e);
                    ControlFlow::Break(())
                }
            });
        failure.map_or(Ok(written), Err)
    }

    /// How many records `data.json` serves now for `[start, end)`, per cursor date: the UTC
    /// date of the record's cursor instant (`createdAt`, or `profileUpdatedAt` for `user`).
    ///
    /// # Panics
    /// If `data_type` is not an export data type.
    pub fn truth_counts(
        &self,
        data_type: &str,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
    ) -> BTreeMap<NaiveDate, u64> {
        let q = self.truth_query(data_type, start, end);
        let mut counts = BTreeMap::new();
        self.state.generator.cursors(&q, &mut |ms| {
            let date = DateTime::from_timestamp_millis(ms)
                .expect("cursor in range")
                .date_naive();
            *counts.entry(date).or_default() += 1;
        });
        counts
    }

    /// The lines `GET /api/export/userEvents` serves now for the user with this email or
    /// userId (empty for an unknown user), each starting with `"_type"`.
    pub fn truth_user_events(&self, email_or_user_id: &str, include_custom: bool) -> Vec<String> {
        let generator = &self.state.generator;
        let Some(user) = generator.find_user(Some(email_or_user_id), Some(email_or_user_id)) else {
            return Vec::new();
        };
        let mut body = Vec::new();
        let now_ms = self.state.now().timestamp_millis();
        let _ = generator.write_user_events(user, include_custom, now_ms, &mut |bytes| {
            body.extend_from_slice(bytes);
            ControlFlow::Continue(())
        });
        String::from_utf8(body)
            .expect("lines are UTF-8")
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// Requests to `/api/export/data.json` so far, whatever their answer (401, 429, 500 …).
    pub fn export_requests(&self) -> u64 {
        self.requests("/api/export/data.json")
    }

    /// Requests so far whose path starts with `path_prefix`, whatever their answer.
    pub fn requests(&self, path_prefix: &str) -> u64 {
        let requests = self.state.requests.lock().expect("counter lock");
        requests
            .iter()
            .filter(|(path, _)| path.starts_with(path_prefix))
            .map(|(_, n)| n)
            .sum()
    }

    /// `data.json` requests answered 429 so far.
    pub fn rate_limited(&self) -> u64 {
        self.state.rate_limited.load(Ordering::Relaxed)
    }

    /// Export-job requests (`start`, `files`, `DELETE`) answered 429 so far.
    pub fn job_rate_limited(&self) -> u64 {
        self.state.job_rate_limited.load(Ordering::Relaxed)
    }

    /// Export-job file downloads so far that carried an API key: an `Api-Key` (or `Api_Key`)
    /// header of any value, or the key anywhere in the query string. File URLs are
    /// pre-signed; a client should send them no key.
    pub fn keyed_file_requests(&self) -> u64 {
        self.state.keyed_file_requests.load(Ordering::Relaxed)
    }

    /// Moves the job clock forward: export jobs progress and file URLs age as if `by` had
    /// passed (the data clock of [`FakeIterable::set_now`] stays).
    pub fn advance_job_clock(&self, by: Duration) {
        *self.state.job_clock_skew.lock().expect("skew lock") += by;
    }

    fn truth_query(&self, data_type: &str, start: DateTime<Utc>, end: DateTime<Utc>) -> Query {
        let ty = Generator::type_index(data_type)
            .unwrap_or_else(|| panic!("{data_type} is not an export data type"));
        self.state.query(
            ty,
            start.timestamp_millis(),
            end.timestamp_millis(),
            Shape::default(),
        )
    }
}

impl Drop for FakeIterable {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}
