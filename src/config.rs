//! Run configuration in layers. Command-line flags come first, then environment variables
//! (`ITERABLE_API_KEY`; `ITERABLE_REGION` is read with the flags), then an optional
//! `--config` TOML file, then an optional `--airbyte-config` (Airbyte source-iterable's JSON):
//! the first layer that sets a value wins. Every value remembers where it came from, so a
//! message names the flag, variable, or file and key to fix.
//!
//! Parsing and validation are pure: the caller reads the files ([`read_file`], [`read_key`]
//! are the only I/O here) and builds the HTTP client and the object store from the result.
//! The API key is held as an [`ApiKey`], whose `Debug` never shows it, and no message here
//! quotes a value read from a key field.

use std::collections::HashSet;
use std::fmt;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Duration, Utc};
use clap::ValueEnum;
use url::Url;

use crate::api::{ApiKey, Region};
use crate::catalog::{self, StreamDef, SyncMode};
use crate::convert::timestamp::parse_instant;
use crate::delta::TableFormat;
use crate::sync::{ExportApi, SyncOptions};

/// Where a value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    Flag(&'static str),
    Env(&'static str),
    File { file: String, key: &'static str },
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Flag(flag) => f.write_str(flag),
            Origin::Env(var) => f.write_str(var),
            Origin::File { file, key } => write!(f, "{file}: {key}"),
        }
    }
}

/// A value and where it came from.
#[derive(Debug, Clone)]
pub struct Given<T> {
    pub value: T,
    pub origin: Origin,
}

impl<T> Given<T> {
    pub fn new(value: T, origin: Origin) -> Self {
        Given { value, origin }
    }

    pub fn flag(flag: &'static str, value: T) -> Self {
        Given::new(value, Origin::Flag(flag))
    }
}

/// Where the API key is.
#[derive(Debug, Clone)]
pub enum KeySpec {
    File(PathBuf),
    Inline(ApiKey),
}

/// Which API to talk to: a data centre, or an explicit base URL (which wins within a layer).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    Region(Region),
    Url(String),
}

/// The settings one layer gives; everything optional.
#[derive(Debug, Clone, Default)]
pub struct Layer {
    pub dest: Option<Given<String>>,
    pub streams: Option<Given<Vec<String>>>,
    pub exclude: Option<Given<Vec<String>>>,
    pub start_date: Option<Given<String>>,
    pub end_date: Option<Given<String>>,
    pub mode: Option<Given<SyncMode>>,
    pub endpoint: Option<Given<Endpoint>>,
    pub key: Option<Given<KeySpec>>,
    pub lag: Option<Given<i64>>,
    pub lookback: Option<Given<i64>>,
    pub concurrency: Option<Given<i64>>,
    pub export_requests_per_minute: Option<Given<i64>>,
    pub list_users_requests_per_minute: Option<Given<i64>>,
    pub metrics_requests_per_minute: Option<Given<i64>>,
    pub events_max_users: Option<Given<i64>>,
    pub table_format: Option<Given<TableFormat>>,
    pub retain_removed: Option<Given<i64>>,
    pub min_replace_ratio: Option<Given<f64>>,
    pub dedupe_memory_mib: Option<Given<i64>>,
    pub export_api: Option<Given<ExportApi>>,
    pub export_jobs: Option<Given<i64>>,
    pub export_job_requests_per_second: Option<Given<i64>>,
}

impl Layer {
    /// This layer's values, and `lower`'s where this one has none.
    pub fn over(self, lower: Layer) -> Layer {
        Layer {
            dest: self.dest.or(lower.dest),
            streams: self.streams.or(lower.streams),
            exclude: self.exclude.or(lower.exclude),
            start_date: self.start_date.or(lower.start_date),
            end_date: self.end_date.or(lower.end_date),
            mode: self.mode.or(lower.mode),
            endpoint: self.endpoint.or(lower.endpoint),
            key: self.key.or(lower.key),
            lag: self.lag.or(lower.lag),
            lookback: self.lookback.or(lower.lookback),
            concurrency: self.concurrency.or(lower.concurrency),
            export_requests_per_minute: self
                .export_requests_per_minute
                .or(lower.export_requests_per_minute),
            list_users_requests_per_minute: self
                .list_users_requests_per_minute
                .or(lower.list_users_requests_per_minute),
            metrics_requests_per_minute: self
                .metrics_requests_per_minute
                .or(lower.metrics_requests_per_minute),
            events_max_users: self.events_max_users.or(lower.events_max_users),
            table_format: self.table_format.or(lower.table_format),
            retain_removed: self.retain_removed.or(lower.retain_removed),
            min_replace_ratio: self.min_replace_ratio.or(lower.min_replace_ratio),
            dedupe_memory_mib: self.dedupe_memory_mib.or(lower.dedupe_memory_mib),
            export_api: self.export_api.or(lower.export_api),
            export_jobs: self.export_jobs.or(lower.export_jobs),
            export_job_requests_per_second: self
                .export_job_requests_per_second
                .or(lower.export_job_requests_per_second),
        }
    }

    /// The environment's layer: `ITERABLE_API_KEY` (empty counts as unset).
    pub fn from_env(api_key: Option<String>) -> Layer {
        Layer {
            key: api_key
                .and_then(ApiKey::new)
                .map(|k| Given::new(KeySpec::Inline(k), Origin::Env("ITERABLE_API_KEY"))),
            ..Layer::default()
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{flag} {path}: {source}")]
    Read {
        flag: &'static str,
        path: String,
        source: std::io::Error,
    },
    #[error("{file}: {message}")]
    Syntax { file: String, message: String },
    #[error("{file}: unknown key {key:?}{}", did_you_mean(suggestion))]
    UnknownKey {
        file: String,
        key: String,
        suggestion: Option<String>,
    },
    #[error("{file}: top level: expected an object of settings, found {found}")]
    NotATable { file: String, found: &'static str },
    #[error("{origin}: expected {expected}, found {found}")]
    Type {
        origin: Origin,
        expected: &'static str,
        found: &'static str,
    },
    #[error("{origin}: {problem}")]
    Invalid { origin: Origin, problem: String },
    #[error("{origin}: unknown stream {name:?}{}", did_you_mean(suggestion))]
    UnknownStream {
        origin: Origin,
        name: String,
        suggestion: Option<String>,
    },
    #[error("no stream selected")]
    NoStreams,
    #[error("{start_origin} {start} is not before {end_origin} {end}")]
    StartAfterEnd {
        start_origin: Origin,
        start: DateTime<Utc>,
        end_origin: Origin,
        end: DateTime<Utc>,
    },
    #[error("{file}: give api_key or api_key_file, not both")]
    TwoKeys { file: String },
    #[error(
        "no API key: set ITERABLE_API_KEY or give --api-key-file (or api_key_file in --config)"
    )]
    NoKey,
    #[error("{origin}: reading the API key from {path}: {source}")]
    ReadKey {
        origin: Origin,
        path: String,
        source: std::io::Error,
    },
    #[error("{origin}: the API key file {path} is empty")]
    EmptyKey { origin: Origin, path: String },
    #[error("no destination: give --dest (or dest in --config)")]
    NoDest,
}

fn did_you_mean(suggestion: &Option<String>) -> String {
    suggestion
        .as_ref()
        .map(|s| format!(" (did you mean {s:?}?)"))
        .unwrap_or_default()
}

/// The candidate closest to `name`, when it is close enough to be a likely typo.
pub fn closest<'a>(name: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<String> {
    candidates
        .into_iter()
        .map(|c| (strsim::jaro_winkler(name, c), c))
        .filter(|(score, _)| *score > 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c.to_string())
}

/// The stream called `name`, or an error naming the closest stream.
pub fn find_stream(name: &str, origin: &Origin) -> Result<&'static StreamDef, ConfigError> {
    catalog::find(name).ok_or_else(|| ConfigError::UnknownStream {
        origin: origin.clone(),
        name: name.to_string(),
        suggestion: closest(name, catalog::STREAMS.iter().map(|s| s.name)),
    })
}

/// The streams `streams` names (`all` for every stream but the opt-in ones such as `events`;
/// `all` when not given), less those
/// `exclude` names, in catalog order for `all` and as given otherwise, without repeats.
pub fn select_streams(
    streams: Option<&Given<Vec<String>>>,
    exclude: Option<&Given<Vec<String>>>,
) -> Result<Vec<&'static StreamDef>, ConfigError> {
    let mut out: Vec<&'static StreamDef> = Vec::new();
    match streams {
        None => out.extend(catalog::default_streams()),
        Some(given) => {
            for name in &given.value {
                if name == "all" {
                    out.extend(catalog::default_streams());
                } else {
                    out.push(find_stream(name, &given.origin)?);
                }
            }
        }
    }
    if let Some(given) = exclude {
        let mut left_out = HashSet::new();
        for name in &given.value {
            left_out.insert(find_stream(name, &given.origin)?.name);
        }
        out.retain(|s| !left_out.contains(s.name));
    }
    let mut seen = HashSet::new();
    out.retain(|s| seen.insert(s.name));
    if out.is_empty() {
        return Err(ConfigError::NoStreams);
    }
    Ok(out)
}

/// Split a comma-separated list of names.
pub fn split_names(spec: &str) -> Vec<String> {
    spec.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

/// Parse a start or end date: `2024-01-01` or an RFC 3339 instant, UTC.
pub fn parse_date(given: &Given<String>) -> Result<DateTime<Utc>, ConfigError> {
    parse_instant(&given.value)
        .and_then(DateTime::from_timestamp_micros)
        .ok_or_else(|| ConfigError::Invalid {
            origin: given.origin.clone(),
            problem: format!(
                "{:?} is not a date or instant (use 2024-01-01 or 2024-01-01T00:00:00Z)",
                given.value
            ),
        })
}

/// What every command that calls the API needs.
#[derive(Debug, Clone)]
pub struct ApiSettings {
    pub base_url: Url,
    pub key: Given<KeySpec>,
    /// `None`: the client's default (Iterable's limit).
    pub export_requests_per_minute: Option<u32>,
    /// `None`: the client's default (Iterable's limit).
    pub list_users_requests_per_minute: Option<u32>,
    /// `None`: the client's default (Iterable's limit).
    pub metrics_requests_per_minute: Option<u32>,
    /// `None`: the client's default (Iterable's limit).
    pub export_job_requests_per_second: Option<u32>,
}

/// A validated `sync`.
#[derive(Debug, Clone)]
pub struct SyncConfig {
    pub dest: String,
    pub api: ApiSettings,
    pub options: SyncOptions,
}

/// A validated `check`.
#[derive(Debug, Clone)]
pub struct CheckConfig {
    pub api: ApiSettings,
    pub streams: Vec<&'static StreamDef>,
    /// How a run would read export streams: whether `check` probes export jobs.
    pub export_api: ExportApi,
}

fn at_least(given: &Given<i64>, min: i64, what: &str) -> Result<i64, ConfigError> {
    if given.value < min {
        return Err(ConfigError::Invalid {
            origin: given.origin.clone(),
            problem: format!("must be {what}"),
        });
    }
    Ok(given.value)
}

impl Layer {
    fn api_settings(&self) -> Result<ApiSettings, ConfigError> {
        let base_url = match &self.endpoint {
            None => Url::parse(Region::Us.base_url()).expect("a valid URL"),
            Some(Given {
                value: Endpoint::Region(r),
                ..
            }) => Url::parse(r.base_url()).expect("a valid URL"),
            Some(Given {
                value: Endpoint::Url(u),
                origin,
            }) => {
                let url = Url::parse(u).map_err(|e| ConfigError::Invalid {
                    origin: origin.clone(),
                    problem: format!("{u:?} is not a URL: {e}"),
                })?;
                if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
                    return Err(ConfigError::Invalid {
                        origin: origin.clone(),
                        problem: format!(
                            "{u:?} is not an http(s) URL with a host, e.g. https://api.iterable.com/api/"
                        ),
                    });
                }
                url
            }
        };
        let key = self.key.clone().ok_or(ConfigError::NoKey)?;
        let per_minute = |g: &Option<Given<i64>>| {
            g.as_ref()
                .map(|g| at_least(g, 1, "at least 1").map(|v| u32::try_from(v).unwrap_or(u32::MAX)))
                .transpose()
        };
        Ok(ApiSettings {
            base_url,
            key,
            export_requests_per_minute: per_minute(&self.export_requests_per_minute)?,
            list_users_requests_per_minute: per_minute(&self.list_users_requests_per_minute)?,
            metrics_requests_per_minute: per_minute(&self.metrics_requests_per_minute)?,
            export_job_requests_per_second: per_minute(&self.export_job_requests_per_second)?,
        })
    }

    /// The lake's destination.
    pub fn dest(&self) -> Result<String, ConfigError> {
        let dest = self.dest.as_ref().ok_or(ConfigError::NoDest)?;
        if dest.value.trim().is_empty() {
            return Err(ConfigError::Invalid {
                origin: dest.origin.clone(),
                problem: "is empty".to_string(),
            });
        }
        Ok(dest.value.clone())
    }

    /// Validate the settings of `check`.
    pub fn check_config(&self) -> Result<CheckConfig, ConfigError> {
        let streams = select_streams(self.streams.as_ref(), self.exclude.as_ref())?;
        Ok(CheckConfig {
            api: self.api_settings()?,
            streams,
            export_api: self.export_api(),
        })
    }

    fn export_api(&self) -> ExportApi {
        self.export_api
            .as_ref()
            .map_or(ExportApi::Auto, |a| a.value)
    }

    /// Validate the settings of `sync`; `now` is the run's clock.
    pub fn sync_config(&self, now: DateTime<Utc>) -> Result<SyncConfig, ConfigError> {
        let streams = select_streams(self.streams.as_ref(), self.exclude.as_ref())?;
        let mut opts = SyncOptions::new(streams);
        opts.now = now;
        opts.start = self.start_date.as_ref().map(parse_date).transpose()?;
        opts.end = self.end_date.as_ref().map(parse_date).transpose()?;
        if let (Some(start), Some(end), Some(s), Some(e)) =
            (opts.start, opts.end, &self.start_date, &self.end_date)
            && start >= end
        {
            return Err(ConfigError::StartAfterEnd {
                start_origin: s.origin.clone(),
                start,
                end_origin: e.origin.clone(),
                end,
            });
        }
        opts.mode = self.mode.as_ref().map(|m| m.value);
        if let Some(lag) = &self.lag {
            opts.lag = Duration::minutes(at_least(lag, 0, "zero or more minutes")?);
        }
        if let Some(lookback) = &self.lookback {
            opts.lookback_days = at_least(lookback, 0, "zero or more days")?;
        }
        if let Some(c) = &self.concurrency {
            opts.concurrency = usize::try_from(at_least(c, 1, "at least 1")?).unwrap_or(1);
        }
        if let Some(n) = &self.events_max_users {
            opts.events_max_users =
                Some(usize::try_from(at_least(n, 1, "at least 1")?).unwrap_or(usize::MAX));
        }
        if let Some(f) = &self.table_format {
            opts.table_format = f.value;
        }
        opts.export_api = self.export_api();
        if let Some(n) = &self.export_jobs {
            opts.jobs.max_jobs = usize::try_from(at_least(n, 1, "at least 1")?).unwrap_or(1);
        }
        if let Some(d) = &self.retain_removed {
            opts.retain_removed = Duration::days(at_least(d, 0, "zero or more days")?);
        }
        if let Some(r) = &self.min_replace_ratio {
            if !(0.0..=1.0).contains(&r.value) {
                return Err(ConfigError::Invalid {
                    origin: r.origin.clone(),
                    problem: "must be from 0 (no guard) to 1".to_string(),
                });
            }
            opts.min_replace_ratio = r.value;
        }
        if let Some(n) = &self.dedupe_memory_mib {
            let mib = at_least(n, 1, "at least 1 (MiB)")?;
            opts.dedupe_memory = usize::try_from(mib)
                .ok()
                .and_then(|m| m.checked_mul(1 << 20))
                .unwrap_or(usize::MAX);
        }
        Ok(SyncConfig {
            dest: self.dest()?,
            api: self.api_settings()?,
            options: opts,
        })
    }
}

/// Read a settings file named by `flag` (I/O).
pub fn read_file(flag: &'static str, path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        flag,
        path: path.display().to_string(),
        source,
    })
}

/// The API key itself: read from its file, or as given (I/O).
pub fn read_key(key: &Given<KeySpec>) -> Result<ApiKey, ConfigError> {
    match &key.value {
        KeySpec::Inline(k) => Ok(k.clone()),
        KeySpec::File(path) => {
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::ReadKey {
                origin: key.origin.clone(),
                path: path.display().to_string(),
                source,
            })?;
            ApiKey::new(text).ok_or_else(|| ConfigError::EmptyKey {
                origin: key.origin.clone(),
                path: path.display().to_string(),
            })
        }
    }
}

/// `value` as a path relative to `dir` (the config file's folder), unless it is absolute or
/// a URL.
fn relative_to(dir: &Path, value: &str) -> String {
    if value.contains("://") || Path::new(value).is_absolute() || dir.as_os_str().is_empty() {
        value.to_string()
    } else {
        dir.join(value).display().to_string()
    }
}

/// The keys a `--config` file may hold.
pub const CONFIG_KEYS: &[&str] = &[
    "dest",
    "streams",
    "exclude",
    "start_date",
    "end_date",
    "mode",
    "region",
    "base_url",
    "lag",
    "lookback",
    "concurrency",
    "export_requests_per_minute",
    "list_users_requests_per_minute",
    "metrics_requests_per_minute",
    "events_max_users",
    "table_format",
    "export_api",
    "export_jobs",
    "export_job_requests_per_second",
    "retain_removed",
    "min_replace_ratio",
    "dedupe_memory_mib",
    "api_key_file",
    "api_key",
];

fn toml_string(v: &toml::Value, origin: &Origin) -> Result<String, ConfigError> {
    match v {
        toml::Value::String(s) => Ok(s.clone()),
        other => Err(ConfigError::Type {
            origin: origin.clone(),
            expected: "a string",
            found: other.type_str(),
        }),
    }
}

fn toml_date(v: &toml::Value, origin: &Origin) -> Result<String, ConfigError> {
    match v {
        toml::Value::Datetime(d) => Ok(d.to_string()),
        other => toml_string(other, origin),
    }
}

fn toml_integer(v: &toml::Value, origin: &Origin) -> Result<i64, ConfigError> {
    match v {
        toml::Value::Integer(i) => Ok(*i),
        other => Err(ConfigError::Type {
            origin: origin.clone(),
            expected: "an integer",
            found: other.type_str(),
        }),
    }
}

fn toml_number(v: &toml::Value, origin: &Origin) -> Result<f64, ConfigError> {
    match v {
        toml::Value::Float(f) => Ok(*f),
        toml::Value::Integer(i) => Ok(*i as f64),
        other => Err(ConfigError::Type {
            origin: origin.clone(),
            expected: "a number",
            found: other.type_str(),
        }),
    }
}

fn toml_names(v: &toml::Value, origin: &Origin) -> Result<Vec<String>, ConfigError> {
    let wrong = |found| ConfigError::Type {
        origin: origin.clone(),
        expected: "a list of stream names",
        found,
    };
    match v {
        toml::Value::String(s) => Ok(split_names(s)),
        toml::Value::Array(items) => items
            .iter()
            .map(|i| i.as_str().map(str::to_string).ok_or(wrong(i.type_str())))
            .collect(),
        other => Err(wrong(other.type_str())),
    }
}

fn parse_table_format(s: &str, origin: &Origin) -> Result<TableFormat, ConfigError> {
    TableFormat::ALL
        .into_iter()
        .find(|f| f.as_str() == s)
        .ok_or_else(|| ConfigError::Invalid {
            origin: origin.clone(),
            problem: format!(
                "{s:?} is not a table format (use {})",
                TableFormat::ALL.map(TableFormat::as_str).join(", ")
            ),
        })
}

fn parse_export_api(s: &str, origin: &Origin) -> Result<ExportApi, ConfigError> {
    ExportApi::from_str(s, false).map_err(|_| ConfigError::Invalid {
        origin: origin.clone(),
        problem: format!("{s:?} is not an export API (use stream, jobs or auto)"),
    })
}

fn parse_mode(s: &str, origin: &Origin) -> Result<SyncMode, ConfigError> {
    SyncMode::ALL
        .into_iter()
        .find(|m| m.as_str() == s)
        .ok_or_else(|| ConfigError::Invalid {
            origin: origin.clone(),
            problem: format!(
                "{s:?} is not a mode (use {})",
                SyncMode::ALL.map(SyncMode::as_str).join(", ")
            ),
        })
}

fn parse_region(s: &str, origin: &Origin) -> Result<Region, ConfigError> {
    match s.to_ascii_lowercase().as_str() {
        "us" => Ok(Region::Us),
        "eu" => Ok(Region::Eu),
        _ => Err(ConfigError::Invalid {
            origin: origin.clone(),
            problem: format!("{s:?} is not a region (use us or eu)"),
        }),
    }
}

/// One line for a TOML syntax error: where and what, never the offending text (it may be
/// the line holding the key).
fn toml_syntax(file: &str, text: &str, e: &toml::de::Error) -> ConfigError {
    let at = e.span().map(|s| s.start).unwrap_or(0).min(text.len());
    let before = &text[..at];
    let line = before.matches('\n').count() + 1;
    let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
    let what = e
        .message()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ");
    ConfigError::Syntax {
        file: file.to_string(),
        message: format!("line {line}, column {column}: {what}"),
    }
}

fn some<T>(value: T, origin: &Origin) -> Option<Given<T>> {
    Some(Given::new(value, origin.clone()))
}

/// Parse a `--config` TOML file called `file` (for messages) in folder `dir` (relative
/// `dest` and `api_key_file` are taken from there).
pub fn parse_toml(file: &str, dir: &Path, text: &str) -> Result<Layer, ConfigError> {
    let table: toml::Table = text.parse().map_err(|e| toml_syntax(file, text, &e))?;
    let mut layer = Layer::default();
    let mut key_file = None;
    let mut key_inline = None;
    let mut region = None;
    let mut base_url = None;
    for (name, v) in &table {
        let Some(&key) = CONFIG_KEYS.iter().find(|k| **k == name.as_str()) else {
            return Err(ConfigError::UnknownKey {
                file: file.to_string(),
                key: name.clone(),
                suggestion: closest(name, CONFIG_KEYS.iter().copied()),
            });
        };
        let origin = Origin::File {
            file: file.to_string(),
            key,
        };
        match key {
            "dest" => layer.dest = some(relative_to(dir, &toml_string(v, &origin)?), &origin),
            "streams" => layer.streams = some(toml_names(v, &origin)?, &origin),
            "exclude" => layer.exclude = some(toml_names(v, &origin)?, &origin),
            "start_date" => layer.start_date = some(toml_date(v, &origin)?, &origin),
            "end_date" => layer.end_date = some(toml_date(v, &origin)?, &origin),
            "mode" => {
                layer.mode = Some(Given::new(
                    parse_mode(&toml_string(v, &origin)?, &origin)?,
                    origin.clone(),
                ))
            }
            "export_api" => {
                layer.export_api = Some(Given::new(
                    parse_export_api(&toml_string(v, &origin)?, &origin)?,
                    origin.clone(),
                ))
            }
            "export_jobs" => layer.export_jobs = some(toml_integer(v, &origin)?, &origin),
            "export_job_requests_per_second" => {
                layer.export_job_requests_per_second = some(toml_integer(v, &origin)?, &origin)
            }
            "table_format" => {
                layer.table_format = Some(Given::new(
                    parse_table_format(&toml_string(v, &origin)?, &origin)?,
                    origin.clone(),
                ))
            }
            "region" => {
                region = Some(Given::new(
                    Endpoint::Region(parse_region(&toml_string(v, &origin)?, &origin)?),
                    origin.clone(),
                ))
            }
            "base_url" => base_url = some(Endpoint::Url(toml_string(v, &origin)?), &origin),
            "lag" => layer.lag = some(toml_integer(v, &origin)?, &origin),
            "lookback" => layer.lookback = some(toml_integer(v, &origin)?, &origin),
            "retain_removed" => layer.retain_removed = some(toml_integer(v, &origin)?, &origin),
            "concurrency" => layer.concurrency = some(toml_integer(v, &origin)?, &origin),
            "export_requests_per_minute" => {
                layer.export_requests_per_minute = some(toml_integer(v, &origin)?, &origin)
            }
            "list_users_requests_per_minute" => {
                layer.list_users_requests_per_minute = some(toml_integer(v, &origin)?, &origin)
            }
            "metrics_requests_per_minute" => {
                layer.metrics_requests_per_minute = some(toml_integer(v, &origin)?, &origin)
            }
            "events_max_users" => layer.events_max_users = some(toml_integer(v, &origin)?, &origin),
            "min_replace_ratio" => {
                layer.min_replace_ratio = some(toml_number(v, &origin)?, &origin)
            }
            "dedupe_memory_mib" => {
                layer.dedupe_memory_mib = some(toml_integer(v, &origin)?, &origin)
            }
            "api_key_file" => {
                let path = PathBuf::from(relative_to(dir, &toml_string(v, &origin)?));
                key_file = Some(Given::new(KeySpec::File(path), origin.clone()));
            }
            "api_key" => {
                let key = ApiKey::new(toml_string(v, &origin)?).ok_or(ConfigError::Invalid {
                    origin: origin.clone(),
                    problem: "is empty".to_string(),
                })?;
                key_inline = Some(Given::new(KeySpec::Inline(key), origin.clone()));
            }
            _ => unreachable!("every key of CONFIG_KEYS is handled"),
        }
    }
    if key_file.is_some() && key_inline.is_some() {
        return Err(ConfigError::TwoKeys {
            file: file.to_string(),
        });
    }
    layer.key = key_file.or(key_inline);
    layer.endpoint = base_url.or(region);
    Ok(layer)
}

/// The keys of Airbyte source-iterable's config this tool reads.
pub const AIRBYTE_KEYS: &[&str] = &["api_key", "start_date", "region", "lookback_window"];

/// What an Airbyte config gave, and the keys it holds that this tool does not use.
#[derive(Debug)]
pub struct AirbyteConfig {
    pub layer: Layer,
    pub ignored: Vec<String>,
}

/// The keys of Airbyte source-iterable's spec: `api_key`, `start_date`, `region` (`US` or
/// `EU`) and `lookback_window` (minutes behind now that reading stops: our `lag`). Airbyte
/// allows other keys; they are returned as ignored.
pub fn parse_airbyte(file: &str, text: &str) -> Result<AirbyteConfig, ConfigError> {
    let doc: serde_json::Value = serde_json::from_str(text).map_err(|e| ConfigError::Syntax {
        file: file.to_string(),
        message: format!("line {}, column {}: not valid JSON", e.line(), e.column()),
    })?;
    let serde_json::Value::Object(map) = doc else {
        return Err(ConfigError::NotATable {
            file: file.to_string(),
            found: json_type(&doc),
        });
    };
    let mut layer = Layer::default();
    let mut ignored = Vec::new();
    for (name, v) in &map {
        let Some(&key) = AIRBYTE_KEYS.iter().find(|k| **k == name.as_str()) else {
            ignored.push(name.clone());
            continue;
        };
        let origin = Origin::File {
            file: file.to_string(),
            key,
        };
        let string = || {
            v.as_str().map(str::to_string).ok_or(ConfigError::Type {
                origin: origin.clone(),
                expected: "a string",
                found: json_type(v),
            })
        };
        match key {
            "api_key" => {
                let k = ApiKey::new(string()?).ok_or(ConfigError::Invalid {
                    origin: origin.clone(),
                    problem: "is empty".to_string(),
                })?;
                layer.key = Some(Given::new(KeySpec::Inline(k), origin));
            }
            "start_date" => layer.start_date = Some(Given::new(string()?, origin)),
            "region" => {
                let r = parse_region(&string()?, &origin)?;
                layer.endpoint = Some(Given::new(Endpoint::Region(r), origin));
            }
            "lookback_window" => {
                let minutes = v.as_i64().ok_or(ConfigError::Type {
                    origin: origin.clone(),
                    expected: "an integer (minutes)",
                    found: json_type(v),
                })?;
                layer.lag = Some(Given::new(minutes, origin));
            }
            _ => unreachable!("every key of AIRBYTE_KEYS is handled"),
        }
    }
    Ok(AirbyteConfig { layer, ignored })
}

fn json_type(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flag(flag: &'static str, v: &str) -> Option<Given<String>> {
        Some(Given::flag(flag, v.to_string()))
    }

    fn names(flag: &'static str, v: &str) -> Option<Given<Vec<String>>> {
        Some(Given::flag(flag, split_names(v)))
    }

    fn keyed() -> Layer {
        Layer {
            dest: flag("--dest", "/lake"),
            key: Some(Given::flag("--api-key-file", KeySpec::File("/k".into()))),
            ..Layer::default()
        }
    }

    fn now() -> DateTime<Utc> {
        "2024-03-01T00:00:00Z".parse().unwrap()
    }

    #[test]
    fn streams_resolve_with_suggestions_and_exclusions() {
        let all = select_streams(None, None).unwrap();
        assert_eq!(all.len(), catalog::default_streams().count());
        assert!(all.iter().all(|s| s.name != "events"), "events is opt-in");
        let with_events = select_streams(names("--streams", "all,events").as_ref(), None).unwrap();
        assert_eq!(with_events.last().unwrap().name, "events");
        let two = select_streams(
            names("--streams", "email_send, users,email_send").as_ref(),
            None,
        )
        .unwrap();
        assert_eq!(
            two.iter().map(|s| s.name).collect::<Vec<_>>(),
            ["email_send", "users"]
        );
        let err = select_streams(names("--streams", "email_sned").as_ref(), None)
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            r#"--streams: unknown stream "email_sned" (did you mean "email_send"?)"#
        );
        assert!(matches!(
            select_streams(names("--streams", " , ").as_ref(), None),
            Err(ConfigError::NoStreams)
        ));
        let rest = select_streams(None, names("--exclude", "users,email_send").as_ref()).unwrap();
        assert_eq!(rest.len(), catalog::default_streams().count() - 2);
        assert!(
            rest.iter()
                .all(|s| s.name != "users" && s.name != "email_send")
        );
        let err = select_streams(None, names("--exclude", "userz").as_ref())
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            r#"--exclude: unknown stream "userz" (did you mean "users"?)"#
        );
        assert!(matches!(
            select_streams(
                names("--streams", "users").as_ref(),
                names("--exclude", "users").as_ref()
            ),
            Err(ConfigError::NoStreams)
        ));
    }

    #[test]
    fn dates_parse_or_say_why() {
        let d = parse_date(&Given::flag("--start-date", "2024-01-02".into())).unwrap();
        assert_eq!(d.to_rfc3339(), "2024-01-02T00:00:00+00:00");
        let err = parse_date(&Given::flag("--start-date", "2024-13-01".into()))
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with(r#"--start-date: "2024-13-01" is not a date"#),
            "{err}"
        );
    }

    #[test]
    fn flags_win_over_env_over_file_over_airbyte() {
        let flags = Layer {
            lag: Some(Given::flag("--lag", 1)),
            ..Layer::default()
        };
        let env = Layer::from_env(Some("env-key".into()));
        let file = parse_toml(
            "lake.toml",
            Path::new(""),
            "lag = 2\nlookback = 3\napi_key = \"file-key\"\ndest = \"/lake\"\n",
        )
        .unwrap();
        let airbyte = parse_airbyte(
            "source.json",
            r#"{"lookback_window": 4, "start_date": "2024-01-01T00:00:00Z", "api_key": "a"}"#,
        )
        .unwrap()
        .layer;
        let merged = flags.over(env).over(file).over(airbyte);
        assert_eq!(merged.lag.as_ref().unwrap().value, 1);
        assert_eq!(merged.lookback.as_ref().unwrap().value, 3);
        assert_eq!(
            merged.key.as_ref().unwrap().origin,
            Origin::Env("ITERABLE_API_KEY")
        );
        assert_eq!(
            merged.start_date.as_ref().unwrap().origin.to_string(),
            "source.json: start_date"
        );
        let cfg = merged.sync_config(now()).unwrap();
        assert_eq!(cfg.options.lag, Duration::minutes(1));
        assert_eq!(cfg.options.lookback_days, 3);
        assert_eq!(cfg.dest, "/lake");
    }

    #[test]
    fn a_config_file_gives_every_setting() {
        let text = r#"
            dest = "lake"
            streams = ["email_send", "users", "email_open"]
            exclude = "email_open"
            start_date = 2024-01-01
            end_date = "2024-02-01T00:00:00Z"
            mode = "full-refresh-append"
            region = "EU"
            lag = 0
            lookback = 2
            concurrency = 3
            export_requests_per_minute = 100
            metrics_requests_per_minute = 20
            events_max_users = 5000
            min_replace_ratio = 0.25
            dedupe_memory_mib = 64
            export_api = "jobs"
            export_jobs = 2
            export_job_requests_per_second = 3
            api_key_file = "secrets/key"
        "#;
        let layer = parse_toml("/etc/il/lake.toml", Path::new("/etc/il"), text).unwrap();
        let cfg = layer.sync_config(now()).unwrap();
        assert_eq!(cfg.dest, "/etc/il/lake");
        assert_eq!(
            cfg.options
                .streams
                .iter()
                .map(|s| s.name)
                .collect::<Vec<_>>(),
            ["email_send", "users"]
        );
        assert_eq!(
            cfg.options.start.unwrap().to_rfc3339(),
            "2024-01-01T00:00:00+00:00"
        );
        assert_eq!(
            cfg.options.end.unwrap().to_rfc3339(),
            "2024-02-01T00:00:00+00:00"
        );
        assert_eq!(cfg.options.mode, Some(SyncMode::FullRefreshAppend));
        assert_eq!(cfg.api.base_url.as_str(), Region::Eu.base_url());
        assert_eq!(cfg.options.lag, Duration::zero());
        assert_eq!(cfg.options.lookback_days, 2);
        assert_eq!(cfg.options.concurrency, 3);
        assert_eq!(cfg.api.export_requests_per_minute, Some(100));
        assert_eq!(cfg.api.metrics_requests_per_minute, Some(20));
        assert_eq!(cfg.options.events_max_users, Some(5000));
        assert_eq!(cfg.options.min_replace_ratio, 0.25);
        assert_eq!(cfg.options.dedupe_memory, 64 << 20);
        assert_eq!(cfg.options.export_api, ExportApi::Jobs);
        assert_eq!(layer.check_config().unwrap().export_api, ExportApi::Jobs);
        assert_eq!(cfg.options.jobs.max_jobs, 2);
        assert_eq!(cfg.api.export_job_requests_per_second, Some(3));
        let unset = keyed().sync_config(now()).unwrap();
        assert_eq!(
            unset.options.export_api,
            ExportApi::Auto,
            "the command line's default"
        );
        assert_eq!(keyed().check_config().unwrap().export_api, ExportApi::Auto);
        assert!(
            matches!(&cfg.api.key.value, KeySpec::File(p) if p == Path::new("/etc/il/secrets/key"))
        );
    }

    #[test]
    fn file_errors_name_the_file_and_key_and_never_the_key() {
        let err = |text: &str| {
            parse_toml("lake.toml", Path::new(""), text)
                .and_then(|l| l.sync_config(now()).map(|_| ()))
                .unwrap_err()
                .to_string()
        };
        assert_eq!(
            err("lagg = 3"),
            r#"lake.toml: unknown key "lagg" (did you mean "lag"?)"#
        );
        assert_eq!(
            err("lag = \"3\""),
            "lake.toml: lag: expected an integer, found string"
        );
        assert_eq!(
            err("dest = \"/l\"\napi_key = \"k\"\nlag = -1"),
            "lake.toml: lag: must be zero or more minutes"
        );
        assert_eq!(
            err("dest = \"/l\"\napi_key = \"k\"\nmin_replace_ratio = 1.5"),
            "lake.toml: min_replace_ratio: must be from 0 (no guard) to 1"
        );
        assert_eq!(
            err("min_replace_ratio = \"half\""),
            "lake.toml: min_replace_ratio: expected a number, found string"
        );
        assert_eq!(
            err("mode = \"sometimes\""),
            r#"lake.toml: mode: "sometimes" is not a mode (use incremental, full-refresh-overwrite, full-refresh-append, incremental-deduped)"#
        );
        assert_eq!(
            err("export_api = \"sometimes\""),
            r#"lake.toml: export_api: "sometimes" is not an export API (use stream, jobs or auto)"#
        );
        assert_eq!(
            err("dest = \"/l\"\napi_key = \"k\"\nexport_jobs = 0"),
            "lake.toml: export_jobs: must be at least 1"
        );
        assert_eq!(
            err("api_key = \"k\"\napi_key_file = \"f\""),
            "lake.toml: give api_key or api_key_file, not both"
        );
        assert_eq!(
            err("streams = [\"email_send\", 3]"),
            "lake.toml: streams: expected a list of stream names, found integer"
        );
        let syntax = err("dest = \"/l\"\napi_key = secret-key-value\n");
        assert!(syntax.starts_with("lake.toml: line 2, column "), "{syntax}");
        assert!(!syntax.contains("secret-key-value"), "{syntax}");
        assert!(!syntax.contains('\n'), "{syntax}");
        let wrong_type = err("api_key = [\"secret-key-value\"]");
        assert_eq!(
            wrong_type,
            "lake.toml: api_key: expected a string, found array"
        );
        assert_eq!(
            err("dest = \"/l\"\napi_key = \"k\"\nbase_url = \"ftp://x\""),
            r#"lake.toml: base_url: "ftp://x" is not an http(s) URL with a host, e.g. https://api.iterable.com/api/"#
        );
        assert_eq!(
            err("api_key = \"k\"\nstart_date = 2024-02-02\nend_date = 2024-01-01"),
            "lake.toml: start_date 2024-02-02 00:00:00 UTC is not before lake.toml: end_date 2024-01-01 00:00:00 UTC"
        );
    }

    #[test]
    fn airbyte_configs_map_to_our_settings() {
        let a = parse_airbyte(
            "source.json",
            r#"{"api_key": "k", "start_date": "2021-04-01T00:00:00Z", "region": "EU", "lookback_window": 15, "extra": 1}"#,
        )
        .unwrap();
        assert_eq!(a.ignored, ["extra"]);
        let cfg = Layer {
            dest: flag("--dest", "/lake"),
            ..Layer::default()
        }
        .over(a.layer)
        .sync_config(now())
        .unwrap();
        assert_eq!(cfg.api.base_url.as_str(), Region::Eu.base_url());
        assert_eq!(cfg.options.lag, Duration::minutes(15));
        assert_eq!(
            cfg.options.start.unwrap().to_rfc3339(),
            "2021-04-01T00:00:00+00:00"
        );
        let err = |text: &str| parse_airbyte("source.json", text).unwrap_err().to_string();
        assert_eq!(
            err(r#"{"region": "APAC"}"#),
            r#"source.json: region: "APAC" is not a region (use us or eu)"#
        );
        assert_eq!(
            err(r#"{"lookback_window": "5"}"#),
            "source.json: lookback_window: expected an integer (minutes), found a string"
        );
        assert_eq!(
            err(r#"{"api_key": 12345}"#),
            "source.json: api_key: expected a string, found a number"
        );
        assert_eq!(
            err("[1]"),
            "source.json: top level: expected an object of settings, found an array"
        );
        let syntax = err("{\"api_key\": \"secret-key-value");
        assert!(
            syntax.starts_with("source.json: line 1, column"),
            "{syntax}"
        );
        assert!(!syntax.contains("secret-key-value"), "{syntax}");
    }

    #[test]
    fn flags_layer_validation() {
        let err = |l: Layer| l.sync_config(now()).unwrap_err().to_string();
        assert_eq!(
            err(Layer {
                key: None,
                ..keyed()
            }),
            "no API key: set ITERABLE_API_KEY or give --api-key-file (or api_key_file in --config)"
        );
        assert_eq!(
            err(Layer {
                dest: None,
                ..keyed()
            }),
            "no destination: give --dest (or dest in --config)"
        );
        assert_eq!(
            err(Layer {
                concurrency: Some(Given::flag("--concurrency", 0)),
                ..keyed()
            }),
            "--concurrency: must be at least 1"
        );
        assert_eq!(
            err(Layer {
                export_requests_per_minute: Some(Given::flag("--export-requests-per-minute", 0)),
                ..keyed()
            }),
            "--export-requests-per-minute: must be at least 1"
        );
        let base = keyed().sync_config(now()).unwrap();
        assert_eq!(base.api.base_url.as_str(), Region::Us.base_url());
        assert_eq!(base.options.now, now());
        assert_eq!(base.api.export_requests_per_minute, None);
    }
}
