//! A fake Iterable API: a real HTTP server on `127.0.0.1`, started in-process by tests,
//! benchmarks and `iterable-lake demo`. From a seed and a size it generates deterministic data
//! with Iterable's quirks, serves every endpoint the extractor reads, injects the faults
//! Iterable shows in production, and tells tests exactly which records a window holds.
//!
//! Callers start it with [`FakeIterable::start`], point the extractor at
//! [`FakeIterable::base_url`] with [`FakeConfig::api_key`], and drop it (or call
//! [`FakeIterable::shutdown`]) when done.

pub mod people;
mod rest;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};

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
    pub faults: Faults,
}

/// Faults, each switchable per server instance.
#[derive(Debug, Clone)]
pub struct Faults {
    /// At most this many export requests (`/api/export/data.json`) per window; the rest get
    /// 429 `RateLimitExceeded`. Iterable's limit is 4 per minute. `None` turns it off.
    pub export_rate: Option<(u32, Duration)>,
    /// Lists whose `getUsers` always answers 500 `GenericError` ("… Please try again later").
    pub failing_lists: Vec<i64>,
    /// Cut responses off mid-body (connection closed without the final chunk).
    pub cut_off: Option<CutOff>,
    /// Answer this share of requests (0.0–1.0) with a 500, drawn from `random_500_seed`.
    pub random_500: f64,
    pub random_500_seed: u64,
    /// Added before every response.
    pub latency: Option<Duration>,
    /// Data type spellings the export answers with 400 `BadParams`, to exercise fallbacks
    /// (e.g. `emailUnSubscribe`).
    pub rejected_data_types: Vec<String>,
}

/// A response cut off after `after_bytes` body bytes, for the first `first_requests`
/// export requests of `data_type` (every data type when `None`).
#[derive(Debug, Clone)]
pub struct CutOff {
    pub data_type: Option<String>,
    pub after_bytes: usize,
    pub first_requests: u32,
}

impl Default for Faults {
    fn default() -> Self {
        Faults {
            export_rate: Some((4, Duration::from_secs(60))),
            failing_lists: Vec::new(),
            cut_off: None,
            random_500: 0.0,
            random_500_seed: 0,
            latency: None,
            rejected_data_types: Vec::new(),
        }
    }
}

impl FakeConfig {
    /// A small data set for tests: a few days, tens of events per type per day, no rate limit.
    pub fn small(seed: u64) -> Self {
        FakeConfig {
            seed,
            api_key: "fake-api-key-0123456789".to_string(),
            start: "2024-01-01T00:00:00Z".parse().expect("valid instant"),
            days: 3,
            events_per_day: 40,
            users: 200,
            faults: Faults {
                export_rate: None,
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
}

impl State {
    pub fn now(&self) -> DateTime<Utc> {
        self.clock
            .lock()
            .expect("clock lock")
            .unwrap_or_else(Utc::now)
    }
}

/// A running fake Iterable API.
pub struct FakeIterable {
    addr: SocketAddr,
    state: Arc<State>,
}

impl FakeIterable {
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
}
