//! Command-line definitions (clap) and their translation into validated run options.
//! Parsing and validation are pure; clients are built by the caller.

use std::path::PathBuf;

use chrono::{DateTime, Duration, Utc};
use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::api::Region;
use crate::catalog::{self, StreamDef, SyncMode};
use crate::convert::timestamp::parse_instant;

#[derive(Debug, Parser)]
#[command(
    name = "iterable-lake",
    version,
    about = "Copy everything an Iterable project holds into a partitioned Parquet lake, on local disk or S3."
)]
pub struct Cli {
    /// Log format: text for people, json (one object per line) for cron and log shippers.
    #[arg(long, value_enum, global = true, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Sync streams from Iterable into the lake (the API key comes from ITERABLE_API_KEY or --api-key-file).
    Sync(SyncArgs),
    /// Start the built-in fake Iterable API with a few days of data and sync every stream from it: no key, no network.
    Demo(DemoArgs),
    /// List the streams.
    Streams,
    /// Serve the built-in fake Iterable API until interrupted (for benchmarks and trying the tool).
    #[command(hide = true)]
    FakeApi(FakeApiArgs),
}

#[derive(Debug, Args)]
pub struct SyncArgs {
    /// The lake: a local path, file:///path or s3://bucket/prefix (S3 settings from AWS_* variables).
    #[arg(long)]
    pub dest: String,
    /// Comma-separated stream names, or `all`.
    #[arg(long, default_value = "all")]
    pub streams: String,
    /// Where streams with no cursor start, e.g. 2024-01-01 or 2024-01-01T00:00:00Z (UTC).
    #[arg(long)]
    pub start_date: Option<String>,
    /// Read nothing at or after this instant (default: now minus --lag).
    #[arg(long)]
    pub end_date: Option<String>,
    /// Sync mode for every selected stream (default: each stream's own).
    #[arg(long, value_enum)]
    pub mode: Option<ModeArg>,
    /// Iterable data centre of the project.
    #[arg(long, value_enum, env = "ITERABLE_REGION", default_value = "us")]
    pub region: Region,
    /// Override the API base URL (tests, proxies), e.g. http://127.0.0.1:8080/api/.
    #[arg(long)]
    pub base_url: Option<String>,
    /// Read the API key from this file instead of ITERABLE_API_KEY.
    #[arg(long)]
    pub api_key_file: Option<PathBuf>,
    /// Export requests per minute, shared by all streams (Iterable allows 4).
    #[arg(long, default_value_t = 4)]
    pub export_requests_per_minute: u32,
    /// Minutes behind now that reading stops, since recent events may not be exportable yet.
    #[arg(long, default_value_t = 10)]
    pub lag: i64,
    /// Days before the cursor's day that incremental runs read again, for late events.
    #[arg(long, default_value_t = 1)]
    pub lookback: i64,
    /// Streams synced at once.
    #[arg(long, default_value_t = 4)]
    pub concurrency: usize,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ModeArg {
    Incremental,
    FullRefreshOverwrite,
    FullRefreshAppend,
}

impl From<ModeArg> for SyncMode {
    fn from(m: ModeArg) -> Self {
        match m {
            ModeArg::Incremental => SyncMode::Incremental,
            ModeArg::FullRefreshOverwrite => SyncMode::FullRefreshOverwrite,
            ModeArg::FullRefreshAppend => SyncMode::FullRefreshAppend,
        }
    }
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Where to write the demo lake.
    #[arg(long, default_value = "./demo-lake")]
    pub dest: String,
}

#[derive(Debug, Args)]
pub struct FakeApiArgs {
    #[arg(long, default_value_t = 0)]
    pub port: u16,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// First day of data (UTC).
    #[arg(long, default_value = "2024-01-01")]
    pub start: String,
    #[arg(long, default_value_t = 3)]
    pub days: u32,
    #[arg(long, default_value_t = 1000)]
    pub events_per_day: u32,
    #[arg(long, default_value_t = 1000)]
    pub users: u32,
    /// The key the fake accepts.
    #[arg(long, default_value = "fake-key")]
    pub api_key: String,
}

/// A usage error: bad input the user can fix.
#[derive(Debug, thiserror::Error)]
pub enum UsageError {
    #[error("unknown stream {name:?}{}", suggestion.as_ref().map(|s| format!(" (did you mean {s:?}?)")).unwrap_or_default())]
    UnknownStream {
        name: String,
        suggestion: Option<String>,
    },
    #[error("no stream selected")]
    NoStreams,
    #[error("{flag}: {value:?} is not a date or instant (use 2024-01-01 or 2024-01-01T00:00:00Z)")]
    BadDate { flag: &'static str, value: String },
    #[error("--start-date {start} is not before --end-date {end}")]
    StartAfterEnd {
        start: DateTime<Utc>,
        end: DateTime<Utc>,
    },
    #[error("{flag} must be {what}")]
    Bad {
        flag: &'static str,
        what: &'static str,
    },
}

/// Resolve `--streams`.
pub fn select_streams(spec: &str) -> Result<Vec<&'static StreamDef>, UsageError> {
    let mut out: Vec<&'static StreamDef> = Vec::new();
    for name in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        if name == "all" {
            out.extend(catalog::STREAMS.iter());
            continue;
        }
        match catalog::find(name) {
            Some(s) => out.push(s),
            None => {
                let suggestion = catalog::STREAMS
                    .iter()
                    .map(|s| (strsim::jaro_winkler(name, s.name), s.name))
                    .filter(|(score, _)| *score > 0.8)
                    .max_by(|a, b| a.0.total_cmp(&b.0))
                    .map(|(_, n)| n.to_string());
                return Err(UsageError::UnknownStream {
                    name: name.to_string(),
                    suggestion,
                });
            }
        }
    }
    let mut seen = std::collections::HashSet::new();
    out.retain(|s| seen.insert(s.name));
    if out.is_empty() {
        return Err(UsageError::NoStreams);
    }
    Ok(out)
}

/// Parse a `--start-date`/`--end-date` value.
pub fn parse_date(flag: &'static str, value: &str) -> Result<DateTime<Utc>, UsageError> {
    parse_instant(value)
        .and_then(DateTime::from_timestamp_micros)
        .ok_or_else(|| UsageError::BadDate {
            flag,
            value: value.to_string(),
        })
}

/// The validated options of `sync` (no I/O).
pub fn sync_options(
    args: &SyncArgs,
    now: DateTime<Utc>,
) -> Result<crate::sync::SyncOptions, UsageError> {
    let mut opts = crate::sync::SyncOptions::new(select_streams(&args.streams)?);
    opts.now = now;
    opts.start = args
        .start_date
        .as_deref()
        .map(|v| parse_date("--start-date", v))
        .transpose()?;
    opts.end = args
        .end_date
        .as_deref()
        .map(|v| parse_date("--end-date", v))
        .transpose()?;
    if let (Some(start), Some(end)) = (opts.start, opts.end)
        && start >= end
    {
        return Err(UsageError::StartAfterEnd { start, end });
    }
    opts.mode = args.mode.map(SyncMode::from);
    if args.lag < 0 {
        return Err(UsageError::Bad {
            flag: "--lag",
            what: "zero or more minutes",
        });
    }
    if args.lookback < 0 {
        return Err(UsageError::Bad {
            flag: "--lookback",
            what: "zero or more days",
        });
    }
    if args.concurrency == 0 {
        return Err(UsageError::Bad {
            flag: "--concurrency",
            what: "at least 1",
        });
    }
    if args.export_requests_per_minute == 0 {
        return Err(UsageError::Bad {
            flag: "--export-requests-per-minute",
            what: "at least 1",
        });
    }
    opts.lag = Duration::minutes(args.lag);
    opts.lookback_days = args.lookback;
    opts.concurrency = args.concurrency;
    Ok(opts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_resolve_with_suggestions() {
        assert_eq!(select_streams("all").unwrap().len(), catalog::STREAMS.len());
        let two = select_streams("email_send, users,email_send").unwrap();
        assert_eq!(
            two.iter().map(|s| s.name).collect::<Vec<_>>(),
            ["email_send", "users"]
        );
        let err = select_streams("email_sned").unwrap_err().to_string();
        assert_eq!(
            err,
            r#"unknown stream "email_sned" (did you mean "email_send"?)"#
        );
        assert!(matches!(select_streams(" , "), Err(UsageError::NoStreams)));
    }

    #[test]
    fn dates_parse_or_say_why() {
        let d = parse_date("--start-date", "2024-01-02").unwrap();
        assert_eq!(d.to_rfc3339(), "2024-01-02T00:00:00+00:00");
        let err = parse_date("--start-date", "2024-13-01")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("--start-date") && err.contains("2024-13-01"),
            "{err}"
        );
    }
}
