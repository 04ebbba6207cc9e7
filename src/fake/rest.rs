//! The fake's list-style endpoints: lists, list members, campaigns, campaign metrics,
//! channels, message types, metadata, templates and user fields.
//!
//! Every response is generated on each request from the server's seed and size, with no
//! cache: the same seed gives the same bytes. An entity is served only once the fake's clock
//! has reached its last change (`updatedAt`; `createdAt` for lists; `lastModified` for
//! metadata), so a test that moves the clock sees the project grow. The `truth_*` methods
//! each submodule adds to [`FakeIterable`](super::FakeIterable) return what these endpoints
//! serve at the clock's current instant, built by the same generators.
//!
//! Errors use Iterable's envelope `{"msg","code","params"}`: 400 `BadParams` for a missing,
//! malformed or unknown parameter value, 404 `NotFound` for a missing metadata key, 500
//! `GenericError` for the lists named in `Faults::failing_lists`. Unknown parameter names are
//! ignored, as Iterable does (Singer's `templateTypes` typo goes unnoticed).

mod campaigns;
mod catalog;
mod fields;
mod lists;
mod metadata;
mod templates;

use std::cmp::Reverse;
use std::str::FromStr;
use std::sync::Arc;

use axum::Router;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use chrono::{DateTime, NaiveDate, NaiveDateTime, TimeDelta, Utc};
use xxhash_rust::xxh3::xxh3_64_with_seed;

use super::params::Params;
use super::{FakeConfig, State, api_error};

pub(super) fn routes() -> Router<Arc<State>> {
    Router::new()
        .route("/lists", get(lists::get_lists))
        .route("/lists/getUsers", get(lists::get_users))
        .route("/campaigns", get(campaigns::get_campaigns))
        .route("/campaigns/metrics", get(campaigns::get_metrics))
        .route("/channels", get(catalog::get_channels))
        .route("/messageTypes", get(catalog::get_message_types))
        .route("/metadata", get(metadata::get_tables))
        .route("/metadata/{table}", get(metadata::get_keys))
        .route("/metadata/{table}/{key}", get(metadata::get_entry))
        .route("/templates", get(templates::get_templates))
        .route("/users/getFields", get(fields::get_fields))
}

/// An error in Iterable's envelope, with its HTTP status.
#[derive(Debug)]
struct ApiError {
    status: StatusCode,
    code: &'static str,
    msg: String,
}

impl ApiError {
    fn bad_params(msg: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            code: "BadParams",
            msg: msg.into(),
        }
    }

    fn not_found(msg: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::NOT_FOUND,
            code: "NotFound",
            msg: msg.into(),
        }
    }

    /// The body `lists/getUsers` answers with when it fails on Iterable's side.
    fn generic() -> ApiError {
        ApiError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            code: "GenericError",
            msg: "An error occurred. Please try again later".to_string(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        api_error(self.status, self.code, self.msg)
    }
}

impl Params {
    /// The first value of `name` parsed as `T`; 400 when it does not parse.
    fn parsed<T: FromStr>(&self, name: &str) -> Result<Option<T>, ApiError> {
        self.one(name)
            .map(|v| {
                v.trim()
                    .parse()
                    .map_err(|_| ApiError::bad_params(format!("Invalid value for {name}: {v}")))
            })
            .transpose()
    }

    /// Every pair except those named in `skip`, in request order.
    fn without<'a>(&'a self, skip: &'a [&str]) -> impl Iterator<Item = (&'a str, &'a str)> + 'a {
        self.0
            .iter()
            .filter(move |(k, _)| !skip.contains(&k.as_str()))
            .map(|(k, v)| (k.as_str(), v.as_str()))
    }
}

/// The `page`/`pageSize` pair of the paginated campaigns and templates endpoints.
#[derive(Debug, Clone, Copy)]
struct Page {
    /// From 1.
    number: usize,
    size: usize,
}

impl Page {
    const DEFAULT_SIZE: usize = 20;
    const MAX_SIZE: usize = 1000;

    /// `None` without `page` and `pageSize`: the deprecated unpaginated mode.
    fn from_params(params: &Params) -> Result<Option<Page>, ApiError> {
        let number: Option<i64> = params.parsed("page")?;
        let size: Option<i64> = params.parsed("pageSize")?;
        if number.is_none() && size.is_none() {
            return Ok(None);
        }
        let number = number.unwrap_or(1);
        let size = size.unwrap_or(Page::DEFAULT_SIZE as i64);
        if number < 1 {
            return Err(ApiError::bad_params(format!(
                "page must be at least 1, got {number}"
            )));
        }
        if !(1..=Page::MAX_SIZE as i64).contains(&size) {
            return Err(ApiError::bad_params(format!(
                "pageSize must be between 1 and {}, got {size}",
                Page::MAX_SIZE
            )));
        }
        Ok(Some(Page {
            number: number as usize,
            size: size as usize,
        }))
    }

    /// This page's slice of `items`.
    fn slice<'a, T>(&self, items: &'a [T]) -> &'a [T] {
        let from = (self.number - 1).saturating_mul(self.size).min(items.len());
        let to = from.saturating_add(self.size).min(items.len());
        &items[from..to]
    }

    /// Absolute `nextPageUrl` (absent on the last page) and `previousPageUrl` (absent on the
    /// first), built from the request's `Host` and path, keeping its other parameters.
    fn links(
        &self,
        headers: &HeaderMap,
        path: &str,
        params: &Params,
        total: usize,
    ) -> (Option<String>, Option<String>) {
        let host = headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or("localhost");
        let url = |number: usize| {
            let mut query = url::form_urlencoded::Serializer::new(String::new());
            query.append_pair("page", &number.to_string());
            query.append_pair("pageSize", &self.size.to_string());
            for (k, v) in params.without(&["page", "pageSize"]) {
                query.append_pair(k, v);
            }
            format!("http://{host}{path}?{}", query.finish())
        };
        let next = (self.number.saturating_mul(self.size) < total).then(|| url(self.number + 1));
        let previous = (self.number > 1).then(|| url(self.number - 1));
        (next, previous)
    }
}

/// A `sort` parameter: a field name with an optional `-` (descending) or `+` prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Sort<'a> {
    field: &'a str,
    descending: bool,
}

impl<'a> Sort<'a> {
    /// The default is ascending `id`. A `+` sent unencoded arrives as a space, so leading
    /// spaces count as `+`.
    fn from_params(params: &'a Params, allowed: &[&str]) -> Result<Sort<'a>, ApiError> {
        let raw = params.one("sort").unwrap_or("id");
        let trimmed = raw.trim_start();
        let (field, descending) = match trimmed.strip_prefix('-') {
            Some(field) => (field, true),
            None => (trimmed.strip_prefix('+').unwrap_or(trimmed), false),
        };
        if !allowed.contains(&field) {
            return Err(ApiError::bad_params(format!(
                "Invalid sort field: {raw}; expected one of {}",
                allowed.join(", ")
            )));
        }
        Ok(Sort { field, descending })
    }

    /// Sorts by `key` in this direction; equal keys stay in their (ascending id) order.
    fn apply<T, K: Ord>(&self, items: &mut [T], key: impl Fn(&T) -> K) {
        if self.descending {
            items.sort_by_key(|a| Reverse(key(a)));
        } else {
            items.sort_by_key(&key);
        }
    }
}

/// A deterministic source of draws: a splitmix64 sequence keyed by seed, topic and index, so
/// that any entity can be generated on its own (`Dice::new(seed, "list").at(3)`).
#[derive(Debug, Clone, Copy)]
struct Dice(u64);

impl Dice {
    fn new(seed: u64, topic: &str) -> Dice {
        Dice(xxh3_64_with_seed(topic.as_bytes(), seed))
    }

    /// An independent sequence for item `i` of this topic.
    fn at(self, i: u64) -> Dice {
        let mut d = Dice(self.0 ^ i.wrapping_mul(0xA24B_AED4_963E_E407));
        d.next();
        Dice(d.next())
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n`; 0 when `n` is 0.
    fn below(&mut self, n: u64) -> u64 {
        ((self.next() as u128 * n as u128) >> 64) as u64
    }

    /// Uniform in `lo..hi`; `lo` when the range is empty.
    fn between(&mut self, lo: i64, hi: i64) -> i64 {
        if hi <= lo {
            lo
        } else {
            lo + self.below((hi - lo) as u64) as i64
        }
    }

    /// Uniform in `[0, 1)`.
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }

    /// One of `items`, with probability proportional to its weight.
    fn weighted<'a, T>(&mut self, items: &'a [(T, u32)]) -> &'a T {
        let total: u64 = items.iter().map(|(_, w)| *w as u64).sum();
        let mut roll = self.below(total);
        for (item, weight) in items {
            if roll < *weight as u64 {
                return item;
            }
            roll -= *weight as u64;
        }
        &items[items.len() - 1].0
    }
}

/// The time frame every generated entity falls in.
#[derive(Debug, Clone, Copy)]
struct Timeline {
    /// Two years before `start`: channels, message types and lists appear first.
    history_start: i64,
    /// Thirty days after `history_start`: campaigns and templates appear from here on.
    catalog_ready: i64,
    /// `cfg.start`: most entities already exist then.
    start: i64,
    /// `cfg.start + cfg.days`: the last instant anything changes, exclusive.
    end: i64,
}

impl Timeline {
    fn new(cfg: &FakeConfig) -> Timeline {
        let start = cfg.start.timestamp_millis();
        let history_start = start - TimeDelta::days(730).num_milliseconds();
        Timeline {
            history_start,
            catalog_ready: history_start + TimeDelta::days(30).num_milliseconds(),
            start,
            end: start + TimeDelta::days(cfg.days.max(1) as i64).num_milliseconds(),
        }
    }
}

/// The fake's clock, in epoch milliseconds.
fn now_ms(state: &State) -> i64 {
    state.now().timestamp_millis()
}

/// Parses `yyyy-MM-dd HH:mm:ss [ZZ]` (zone `+hh:mm`, `+hhmm` or `Z`; UTC without one), the
/// format of the templates and export windows.
fn parse_spaced_datetime(value: &str) -> Option<DateTime<Utc>> {
    let value = value.trim();
    if let Ok(t) = DateTime::parse_from_str(value, "%Y-%m-%d %H:%M:%S %:z")
        .or_else(|_| DateTime::parse_from_str(value, "%Y-%m-%d %H:%M:%S %z"))
    {
        return Some(t.with_timezone(&Utc));
    }
    let naive = value.strip_suffix(" Z").unwrap_or(value);
    NaiveDateTime::parse_from_str(naive, "%Y-%m-%d %H:%M:%S")
        .ok()
        .map(|t| t.and_utc())
}

/// Parses `YYYY-MM-DD` or an ISO 8601 instant (with `T` or a space, with or without a zone),
/// the formats `campaigns/metrics` accepts.
fn parse_iso_datetime(value: &str) -> Option<DateTime<Utc>> {
    let value = value.trim();
    if let Ok(date) = NaiveDate::parse_from_str(value, "%Y-%m-%d") {
        return date.and_hms_opt(0, 0, 0).map(|t| t.and_utc());
    }
    if let Ok(t) = DateTime::parse_from_rfc3339(value) {
        return Some(t.with_timezone(&Utc));
    }
    NaiveDateTime::parse_from_str(value, "%Y-%m-%dT%H:%M:%S%.f")
        .ok()
        .map(|t| t.and_utc())
        .or_else(|| parse_spaced_datetime(value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spaced_datetimes_parse_with_and_without_zone() {
        let utc: DateTime<Utc> = "2024-01-31T00:00:00Z".parse().unwrap();
        assert_eq!(parse_spaced_datetime("2024-01-31 00:00:00"), Some(utc));
        assert_eq!(
            parse_spaced_datetime("2024-01-31 00:00:00 +00:00"),
            Some(utc)
        );
        assert_eq!(
            parse_spaced_datetime("2024-01-31 01:00:00 +0100"),
            Some(utc)
        );
        assert_eq!(parse_spaced_datetime("2024-01-31T00:00:00Z"), None);
        assert_eq!(parse_spaced_datetime("yesterday"), None);
    }

    #[test]
    fn iso_datetimes_parse_as_dates_and_instants() {
        let utc: DateTime<Utc> = "2018-06-25T00:00:00Z".parse().unwrap();
        assert_eq!(parse_iso_datetime("2018-06-25"), Some(utc));
        assert_eq!(parse_iso_datetime("2018-06-25T00:00:00Z"), Some(utc));
        assert_eq!(parse_iso_datetime("2018-06-25T02:00:00+02:00"), Some(utc));
        assert_eq!(parse_iso_datetime("2018-06-25T00:00:00"), Some(utc));
        assert_eq!(parse_iso_datetime("25/06/2018"), None);
    }

    #[test]
    fn sort_accepts_prefixes_and_rejects_unknown_fields() {
        let params = Params::parse(Some("sort=-createdAt"));
        let sort = Sort::from_params(&params, &["id", "createdAt"]).unwrap();
        assert_eq!(
            sort,
            Sort {
                field: "createdAt",
                descending: true
            }
        );
        let params = Params::parse(Some("sort=+name"));
        let sort = Sort::from_params(&params, &["id", "name"]).unwrap();
        assert_eq!(
            sort,
            Sort {
                field: "name",
                descending: false
            }
        );
        let params = Params::parse(Some("sort=colour"));
        assert!(Sort::from_params(&params, &["id"]).is_err());
    }

    #[test]
    fn dice_is_deterministic_and_spread() {
        let a: Vec<u64> = (0..100)
            .map(|i| Dice::new(7, "t").at(i).below(10))
            .collect();
        let b: Vec<u64> = (0..100)
            .map(|i| Dice::new(7, "t").at(i).below(10))
            .collect();
        let c: Vec<u64> = (0..100)
            .map(|i| Dice::new(8, "t").at(i).below(10))
            .collect();
        assert_eq!(a, b);
        assert_ne!(a, c);
        for v in 0..10 {
            assert!(a.contains(&v), "{v} never drawn");
        }
    }
}
