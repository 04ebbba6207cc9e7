//! Command-line definitions (clap), and the flags' layer of the run configuration
//! ([`crate::config`] merges it with the environment and the files, and validates).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::api::Region;
use crate::catalog::SyncMode;
use crate::config::{Endpoint, Given, KeySpec, Layer, split_names};
use crate::delta::TableFormat;
use crate::sync::ExportApi;

/// The exit codes, shown under every command's `--help` (and in the README).
pub const EXIT_CODES: &str = "\
Exit codes:
  0   success
  1   sync: a stream failed (the summary says whether it committed anything);
      check: a stream is not readable, or --export-api jobs and the key may
      not use export jobs; state: no lake or manifest at --dest
  2   sync: completed, with windows quarantined (retried on the next run)
  3   check: the API key is unusable (rejected, wrong data centre, API unreachable)
  64  bad usage: unknown flag, stream or config key, or a bad value
  75  sync, state reset: another run holds the lake's lock (try again later,
      or sync --wait-for-lock)
  130 sync: interrupted (Ctrl-C or SIGTERM); committed units stay, the next run resumes";

#[derive(Debug, Parser)]
#[command(
    name = "iterable-lake",
    version,
    about = "Copy everything an Iterable project holds into a partitioned Parquet lake, on local disk or S3.",
    after_help = EXIT_CODES
)]
pub struct Cli {
    /// Log format: auto (progress bars and warnings when stdout is a terminal, JSON lines
    /// otherwise), text (log lines for people), or json (one object per line, for cron).
    #[arg(long, value_enum, global = true, default_value_t = LogFormat::Auto)]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Auto,
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Sync streams from Iterable into the lake (the API key comes from ITERABLE_API_KEY,
    /// --api-key-file or --config).
    #[command(after_help = EXIT_CODES)]
    Sync(SyncArgs),
    /// Check the API key and data centre, then probe each selected export stream with a
    /// one-minute window and print which are readable.
    #[command(after_help = EXIT_CODES)]
    Check(CheckArgs),
    /// List the streams (or print one stream's Arrow schema with --schema).
    #[command(after_help = EXIT_CODES)]
    Streams(StreamsArgs),
    /// Show the lake's state per stream: mode, cursor, live files, rows, quarantined windows.
    #[command(after_help = EXIT_CODES)]
    State(StateArgs),
    /// Start the built-in fake Iterable API with a few days of data and sync every stream
    /// from it: no key, no network.
    #[command(after_help = EXIT_CODES)]
    Demo(DemoArgs),
    /// Serve the built-in fake Iterable API until interrupted (for benchmarks and trying the tool).
    #[command(hide = true)]
    FakeApi(FakeApiArgs),
    /// Print what `fake-api` with the same data flags serves over its whole data range, one
    /// record a line: `stream<TAB>partition date<TAB>identity` (`_event_id` for events,
    /// `email|userId` for users), sorted; the torture suite compares lakes with it.
    #[command(hide = true)]
    FakeTruth(FakeTruthArgs),
}

/// Where the API is, how to authenticate, and which streams: shared by `sync` and `check`.
#[derive(Debug, Args)]
pub struct SourceArgs {
    /// Read settings from this TOML file (keys: dest, streams, exclude, start_date, end_date,
    /// mode, region, base_url, lag, lookback, concurrency, export_requests_per_minute,
    /// list_users_requests_per_minute, metrics_requests_per_minute, export_api, export_jobs,
    /// export_job_requests_per_second, events_max_users,
    /// min_replace_ratio, table_format, retain_removed, dedupe_memory_mib, api_key_file,
    /// api_key). Flags and environment variables win over it.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Read settings from an Airbyte source-iterable config (JSON keys api_key, start_date,
    /// region, lookback_window). Flags, environment variables and --config win over it.
    #[arg(long, value_name = "FILE")]
    pub airbyte_config: Option<PathBuf>,
    /// Comma-separated stream names, or `all`: every stream but the opt-in `events` [default: all].
    #[arg(long, value_name = "NAMES")]
    pub streams: Option<String>,
    /// Comma-separated stream names to leave out of --streams.
    #[arg(long, value_name = "NAMES")]
    pub exclude: Option<String>,
    /// Iterable data centre of the project (a key works only in its own) [default: us].
    #[arg(long, value_enum, env = "ITERABLE_REGION")]
    pub region: Option<Region>,
    /// Override the API base URL (tests, proxies), e.g. http://127.0.0.1:8080/api/; wins over --region.
    #[arg(long, value_name = "URL")]
    pub base_url: Option<String>,
    /// Read the API key from this file instead of ITERABLE_API_KEY.
    #[arg(long, value_name = "FILE")]
    pub api_key_file: Option<PathBuf>,
    /// Export requests per minute, shared by all streams (Iterable allows 4) [default: 4].
    #[arg(long, value_name = "N")]
    pub export_requests_per_minute: Option<u32>,
    /// List-member requests (lists/getUsers) per minute (Iterable allows 5) [default: 5].
    #[arg(long, value_name = "N")]
    pub list_users_requests_per_minute: Option<u32>,
    /// Campaign-metrics requests (campaigns/metrics) per minute (Iterable allows 10) [default: 10].
    #[arg(long, value_name = "N")]
    pub metrics_requests_per_minute: Option<u32>,
    /// Export-job requests (start, files, cancel) per second, shared by all streams
    /// (Iterable allows 1 per organization) [default: 1].
    #[arg(long, value_name = "N")]
    pub export_job_requests_per_second: Option<u32>,
    /// How export streams are read: `stream` (data.json), `jobs` (an export job per window),
    /// or `auto`: jobs for a backfill's windows, data.json for the recent tail; the last one
    /// given wins. `check` probes the export jobs API unless it is `stream` [default: auto].
    #[arg(long, value_enum, overrides_with = "export_api")]
    pub export_api: Option<ExportApi>,
}

impl SourceArgs {
    /// The flags' layer of the configuration.
    pub fn layer(&self) -> Layer {
        let endpoint = match (&self.base_url, self.region) {
            (Some(url), _) => Some(Given::flag("--base-url", Endpoint::Url(url.clone()))),
            (None, Some(r)) => Some(Given::flag("--region", Endpoint::Region(r))),
            (None, None) => None,
        };
        Layer {
            streams: self
                .streams
                .as_deref()
                .map(|s| Given::flag("--streams", split_names(s))),
            exclude: self
                .exclude
                .as_deref()
                .map(|s| Given::flag("--exclude", split_names(s))),
            endpoint,
            key: self
                .api_key_file
                .clone()
                .map(|p| Given::flag("--api-key-file", KeySpec::File(p))),
            export_requests_per_minute: self
                .export_requests_per_minute
                .map(|n| Given::flag("--export-requests-per-minute", i64::from(n))),
            list_users_requests_per_minute: self
                .list_users_requests_per_minute
                .map(|n| Given::flag("--list-users-requests-per-minute", i64::from(n))),
            metrics_requests_per_minute: self
                .metrics_requests_per_minute
                .map(|n| Given::flag("--metrics-requests-per-minute", i64::from(n))),
            export_job_requests_per_second: self
                .export_job_requests_per_second
                .map(|n| Given::flag("--export-job-requests-per-second", i64::from(n))),
            export_api: self.export_api.map(|a| Given::flag("--export-api", a)),
            ..Layer::default()
        }
    }
}

#[derive(Debug, Args)]
pub struct SyncArgs {
    /// The lake: a local path, file:///path or s3://bucket/prefix (S3 settings from AWS_* variables).
    #[arg(long, value_name = "URL")]
    pub dest: Option<String>,
    #[command(flatten)]
    pub source: SourceArgs,
    /// Where streams with no cursor start, e.g. 2024-01-01 or 2024-01-01T00:00:00Z (UTC).
    #[arg(long, value_name = "DATE")]
    pub start_date: Option<String>,
    /// Read nothing at or after this instant [default: now minus --lag].
    #[arg(long, value_name = "DATE")]
    pub end_date: Option<String>,
    /// Sync mode for every selected stream [default: each stream's own].
    #[arg(long, value_enum)]
    pub mode: Option<ModeArg>,
    /// Minutes behind now that reading stops, since recent events may not be exportable yet
    /// [default: 10].
    #[arg(long, value_name = "MINUTES", allow_negative_numbers = true)]
    pub lag: Option<i64>,
    /// Days before the cursor's day that incremental runs read again, for late events
    /// [default: 1].
    #[arg(long, value_name = "DAYS", allow_negative_numbers = true)]
    pub lookback: Option<i64>,
    /// Streams synced at once [default: 4].
    #[arg(long, value_name = "N")]
    pub concurrency: Option<u32>,
    /// `events`: stop after about this many users (whole batches of 1000); the next run
    /// continues the pass from its checkpoint [default: no limit].
    #[arg(long, value_name = "N")]
    pub events_max_users: Option<u64>,
    /// An incremental re-read of a date partition holding under this share of the rows it
    /// holds live is not committed: it is quarantined and read again by the next run
    /// (exit 2). 0 turns this guard off, e.g. for one run after data was really deleted
    /// [default: 0.5].
    #[arg(long, value_name = "RATIO")]
    pub min_replace_ratio: Option<f64>,
    /// `incremental-deduped`: the memory (MiB) a bucket's merge holds rows in; a larger
    /// bucket is merged in sorted runs through temporary files [default: 256].
    #[arg(long, value_name = "MIB")]
    pub dedupe_memory_mib: Option<u64>,
    /// When another run holds the lake's lock, wait this long for it (e.g. 90s, 30m, 2h)
    /// before giving up with exit 75 [default: 0, give up at once].
    #[arg(long, value_name = "DURATION", value_parser = parse_wait)]
    pub wait_for_lock: Option<std::time::Duration>,
    /// Print, per stream, the windows and requests the sync would make, from the lake's
    /// manifest, then exit: no API request, nothing written.
    #[arg(long)]
    pub dry_run: bool,
    /// Each stream a Delta table, or plain Parquet folders for glob readers [default: delta].
    #[arg(long, value_enum)]
    pub table_format: Option<TableFormatArg>,
    /// Days that files a Delta commit replaced stay for readers of older versions [default: 7].
    #[arg(long, value_name = "DAYS")]
    pub retain_removed: Option<u32>,
    /// Export jobs in flight at once, over all streams (Iterable processes 4 per
    /// organization) [default: 4].
    #[arg(long, value_name = "N")]
    pub export_jobs: Option<u32>,
}

/// A duration: seconds, or a number with `s`, `m` or `h`.
pub fn parse_wait(text: &str) -> Result<std::time::Duration, String> {
    let t = text.trim();
    let (number, unit) = match t.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => t.split_at(i),
        None => (t, "s"),
    };
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration like 90s, 30m or 2h"))?;
    let secs = match unit {
        "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        _ => return Err(format!("{text:?} is not a duration like 90s, 30m or 2h")),
    };
    Ok(std::time::Duration::from_secs(secs))
}

impl SyncArgs {
    /// The flags' layer of the configuration.
    pub fn layer(&self) -> Layer {
        Layer {
            dest: self.dest.clone().map(|d| Given::flag("--dest", d)),
            start_date: self
                .start_date
                .clone()
                .map(|d| Given::flag("--start-date", d)),
            end_date: self.end_date.clone().map(|d| Given::flag("--end-date", d)),
            mode: self.mode.map(|m| Given::flag("--mode", SyncMode::from(m))),
            lag: self.lag.map(|v| Given::flag("--lag", v)),
            lookback: self.lookback.map(|v| Given::flag("--lookback", v)),
            concurrency: self
                .concurrency
                .map(|v| Given::flag("--concurrency", i64::from(v))),
            events_max_users: self
                .events_max_users
                .map(|v| Given::flag("--events-max-users", i64::try_from(v).unwrap_or(i64::MAX))),
            table_format: self
                .table_format
                .map(|f| Given::flag("--table-format", TableFormat::from(f))),
            retain_removed: self
                .retain_removed
                .map(|d| Given::flag("--retain-removed", i64::from(d))),
            export_jobs: self
                .export_jobs
                .map(|n| Given::flag("--export-jobs", i64::from(n))),
            min_replace_ratio: self
                .min_replace_ratio
                .map(|v| Given::flag("--min-replace-ratio", v)),
            dedupe_memory_mib: self
                .dedupe_memory_mib
                .map(|v| Given::flag("--dedupe-memory-mib", i64::try_from(v).unwrap_or(i64::MAX))),
            ..self.source.layer()
        }
    }
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    #[command(flatten)]
    pub source: SourceArgs,
    /// Print the results as one JSON object (key, export jobs, streams) for scripts.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum TableFormatArg {
    Delta,
    Parquet,
}

impl From<TableFormatArg> for TableFormat {
    fn from(f: TableFormatArg) -> Self {
        match f {
            TableFormatArg::Delta => TableFormat::Delta,
            TableFormatArg::Parquet => TableFormat::Parquet,
        }
    }
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ModeArg {
    Incremental,
    FullRefreshOverwrite,
    FullRefreshAppend,
    IncrementalDeduped,
}

impl From<ModeArg> for SyncMode {
    fn from(m: ModeArg) -> Self {
        match m {
            ModeArg::Incremental => SyncMode::Incremental,
            ModeArg::FullRefreshOverwrite => SyncMode::FullRefreshOverwrite,
            ModeArg::FullRefreshAppend => SyncMode::FullRefreshAppend,
            ModeArg::IncrementalDeduped => SyncMode::IncrementalDeduped,
        }
    }
}

#[derive(Debug, Args)]
pub struct StreamsArgs {
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Print this stream's Arrow schema (the columns of its Parquet files).
    #[arg(long, value_name = "STREAM")]
    pub schema: Option<String>,
}

#[derive(Debug, Args)]
pub struct StateArgs {
    /// The lake: a local path, file:///path or s3://bucket/prefix.
    #[arg(long, global = true, value_name = "URL")]
    pub dest: Option<String>,
    /// Read `dest` from this TOML file (the file `sync --config` reads); --dest wins.
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    #[command(subcommand)]
    pub action: Option<StateAction>,
}

impl StateArgs {
    /// The flags' layer of the configuration.
    pub fn layer(&self) -> Layer {
        Layer {
            dest: self.dest.clone().map(|d| Given::flag("--dest", d)),
            ..Layer::default()
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum StateAction {
    /// Forget the cursors and quarantined windows of streams, in a new manifest commit, so
    /// the next sync extracts them again from --start-date. Their live files stay until
    /// that run replaces the date partitions it reads again.
    #[command(after_help = EXIT_CODES)]
    Reset(ResetArgs),
}

#[derive(Debug, Args)]
pub struct ResetArgs {
    /// The streams to reset (names, or comma-separated lists).
    #[arg(value_name = "STREAM", required_unless_present = "all")]
    pub streams: Vec<String>,
    /// Reset every stream the lake holds.
    #[arg(long, conflicts_with = "streams")]
    pub all: bool,
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Where to write the demo lake.
    #[arg(long, default_value = "./demo-lake")]
    pub dest: String,
}

/// The fake's data set: the same values give the same data, in `fake-api` and `fake-truth`.
#[derive(Debug, Args)]
pub struct FakeDataArgs {
    /// Seed of the generated data.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// First day of data (UTC).
    #[arg(long, default_value = "2024-01-01")]
    pub start: String,
    /// Days of data.
    #[arg(long, default_value_t = 3)]
    pub days: u32,
    /// Mean events per day for each event type.
    #[arg(long, default_value_t = 1000)]
    pub events_per_day: u32,
    /// User profiles.
    #[arg(long, default_value_t = 1000)]
    pub users: u32,
    /// Send about one export record in N without a readable cursor (no `createdAt`, or one
    /// that is no instant), as real exports sometimes do [default: none].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub cursorless_every: Option<u32>,
}

#[derive(Debug, Args)]
pub struct FakeApiArgs {
    /// Port on 127.0.0.1 (0: any free port; the base URL is printed).
    #[arg(long, default_value_t = 0)]
    pub port: u16,
    #[command(flatten)]
    pub data: FakeDataArgs,
    /// The key the fake accepts.
    #[arg(long, default_value = "fake-key")]
    pub api_key: String,
    /// Keep each export body in memory once generated and replay it for the same request
    /// (benchmarks: the client then measures itself, not the fake's generator). Only once the
    /// clock is past the data's last day plus 20 hours, when bodies no longer change.
    #[arg(long)]
    pub cache_bodies: bool,
    #[command(flatten)]
    pub jobs: FakeJobArgs,
    #[command(flatten)]
    pub faults: FakeFaultArgs,
}

/// How the fake's export jobs run. Iterable documents the file size, the cap, the URL life
/// and the 4 jobs at once; the queue and run times and the rate are the speed model's
/// assumptions.
#[derive(Debug, Args)]
pub struct FakeJobArgs {
    /// How long a started (or restarted) job waits Enqueued before it may take a slot.
    #[arg(long, value_name = "MS", default_value_t = 100)]
    pub job_queue_ms: u64,
    /// The shortest time a job runs.
    #[arg(long, value_name = "MS", default_value_t = 200)]
    pub job_run_ms: u64,
    /// How fast each running job writes its files [default: every job runs --job-run-ms].
    #[arg(long, value_name = "BYTES")]
    pub job_bytes_per_second: Option<u64>,
    /// Jobs processing at once; later ones wait Enqueued (Iterable: 4 per organization).
    #[arg(long, value_name = "N", default_value_t = 4)]
    pub job_max_running: usize,
    /// The largest job file (Iterable: 10 MB).
    #[arg(long, value_name = "BYTES", default_value_t = 10 * 1024 * 1024)]
    pub job_file_bytes: usize,
    /// An export's cap: files past it are not written and the job says exportTruncated
    /// (Iterable: 100 GB).
    #[arg(long, value_name = "BYTES", default_value_t = 100 << 30)]
    pub job_max_bytes: u64,
    /// How long a file URL stays valid (Iterable: 30m).
    #[arg(long, value_name = "DURATION", value_parser = parse_wait, default_value = "30m")]
    pub job_url_lifetime: std::time::Duration,
}

/// The faults `fake-api` injects (all off by default), for the torture suite and for trying
/// the tool's retries by hand.
#[derive(Debug, Args)]
pub struct FakeFaultArgs {
    /// Answer this share (0.0 to 1.0) of API requests with 500 GenericError [default: 0].
    #[arg(long, value_name = "SHARE", value_parser = parse_share)]
    pub random_500: Option<f64>,
    /// Seed of the sequence that decides which requests get --random-500.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub random_500_seed: u64,
    /// Cut export responses off after this many body bytes (the connection closes without
    /// the body's end).
    #[arg(long, value_name = "BYTES")]
    pub cut_off_bytes: Option<usize>,
    /// How many export responses --cut-off-bytes cuts, the first ones [default: all].
    #[arg(long, value_name = "N", requires = "cut_off_bytes")]
    pub cut_off_requests: Option<u32>,
    /// Cut only this data type's exports (e.g. emailSend) [default: every data type].
    #[arg(long, value_name = "DATA_TYPE", requires = "cut_off_bytes")]
    pub cut_off_data_type: Option<String>,
    /// Delay every response by this many milliseconds.
    #[arg(long, value_name = "MS")]
    pub latency_ms: Option<u64>,
    /// Admit at most this many export requests per --export-rate-window and answer the rest
    /// 429 RateLimitExceeded (Iterable: 4 a minute) [default: no limit].
    #[arg(long, value_name = "N")]
    pub export_rate: Option<u32>,
    /// The sliding window of --export-rate (90s, 2m, or plain seconds).
    #[arg(long, value_name = "DURATION", value_parser = parse_wait, default_value = "60", requires = "export_rate")]
    pub export_rate_window: std::time::Duration,
    /// Send `Retry-After` with the 429s of --export-rate.
    #[arg(long, requires = "export_rate")]
    pub retry_after: bool,
    /// Lists (comma-separated ids) whose getUsers always answers 500 GenericError.
    #[arg(long, value_name = "IDS", value_delimiter = ',')]
    pub failing_lists: Vec<i64>,
    /// End the first N export bodies early but properly, in the middle of a line (a server
    /// that thinks it is done): a sync must retry those windows, not commit them.
    #[arg(long, value_name = "N")]
    pub cut_off_clean: Option<u32>,
    /// How many body bytes an export body ended by --cut-off-clean holds, about.
    #[arg(
        long,
        value_name = "BYTES",
        default_value_t = 4096,
        requires = "cut_off_clean"
    )]
    pub cut_off_clean_bytes: usize,
    /// Admit at most N requests a second to each of export/start, export/{jobId}/files and
    /// DELETE export/{jobId}, and answer the rest 429 (Iterable: 1) [default: no limit].
    #[arg(long, value_name = "N")]
    pub job_rate: Option<u32>,
    /// The first N export jobs go back from Running to Enqueued once, halfway through.
    #[arg(long, value_name = "N")]
    pub job_restarts: Option<u32>,
    /// The first N export jobs turn Failed halfway through.
    #[arg(long, value_name = "N")]
    pub job_failures: Option<u32>,
    /// The first N export jobs complete with exportTruncated and half their files.
    #[arg(long, value_name = "N")]
    pub job_truncations: Option<u32>,
    /// The first N job file downloads answer 403 "Request has expired".
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub expired_urls: u32,
    /// Cut the first N job file downloads off mid-line, short of their Content-Length.
    #[arg(long, value_name = "N")]
    pub cut_downloads: Option<u32>,
    /// How many body bytes a download cut by --cut-downloads holds, about.
    #[arg(
        long,
        value_name = "BYTES",
        default_value_t = 4096,
        requires = "cut_downloads"
    )]
    pub cut_downloads_bytes: usize,
    /// Stream each data.json response at most this fast (the speed model's assumption of
    /// Iterable's streaming rate per request) [default: as fast as generated].
    #[arg(long, value_name = "BYTES")]
    pub stream_bytes_per_second: Option<u64>,
}

/// A share between 0 and 1.
fn parse_share(text: &str) -> Result<f64, String> {
    match text.trim().parse::<f64>() {
        Ok(p) if (0.0..=1.0).contains(&p) => Ok(p),
        _ => Err(format!(
            "{text:?} is not a share between 0 and 1, e.g. 0.05"
        )),
    }
}

#[derive(Debug, Args)]
pub struct FakeTruthArgs {
    #[command(flatten)]
    pub data: FakeDataArgs,
    /// Comma-separated dated export streams (e.g. email_send,users).
    #[arg(long, value_name = "NAMES")]
    pub streams: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent_and_every_flag_has_help() {
        Cli::command().debug_assert();
        fn walk(cmd: &clap::Command) {
            for arg in cmd.get_arguments() {
                let id = arg.get_id().as_str();
                if id == "help" || id == "version" {
                    continue;
                }
                assert!(
                    arg.get_help().is_some(),
                    "{} --{id} has no help",
                    cmd.get_name()
                );
            }
            for sub in cmd.get_subcommands() {
                if sub.get_name() != "help" {
                    assert!(sub.get_about().is_some(), "{} has no help", sub.get_name());
                    walk(sub);
                }
            }
        }
        walk(&Cli::command());
    }

    #[test]
    fn flags_become_a_layer() {
        let cli = Cli::try_parse_from([
            "iterable-lake",
            "sync",
            "--dest",
            "/l",
            "--streams",
            "email_send,users",
            "--exclude",
            "users",
            "--region",
            "eu",
            "--lag",
            "0",
            "--concurrency",
            "2",
            "--min-replace-ratio",
            "0.25",
            "--export-api",
            "jobs",
            "--export-api",
            "stream",
            "--export-jobs",
            "3",
            "--export-job-requests-per-second",
            "2",
        ])
        .unwrap();
        let Command::Sync(args) = cli.command else {
            panic!("sync")
        };
        let layer = args.layer();
        assert_eq!(layer.dest.unwrap().value, "/l");
        assert_eq!(layer.streams.unwrap().value, ["email_send", "users"]);
        assert_eq!(layer.exclude.unwrap().value, ["users"]);
        assert_eq!(layer.endpoint.unwrap().value, Endpoint::Region(Region::Eu));
        assert_eq!(layer.lag.unwrap().value, 0);
        assert_eq!(layer.concurrency.unwrap().value, 2);
        let ratio = layer.min_replace_ratio.unwrap();
        assert_eq!(
            (ratio.value, ratio.origin),
            (0.25, crate::config::Origin::Flag("--min-replace-ratio"))
        );
        assert!(layer.key.is_none() && layer.lookback.is_none());
        assert_eq!(layer.export_api.unwrap().value, ExportApi::Stream);
        assert_eq!(layer.export_jobs.unwrap().value, 3);
        assert_eq!(layer.export_job_requests_per_second.unwrap().value, 2);
    }

    #[test]
    fn waits_are_durations() {
        let secs = |t| parse_wait(t).map(|d| d.as_secs());
        assert_eq!(secs("90"), Ok(90));
        assert_eq!(secs("90s"), Ok(90));
        assert_eq!(secs("30m"), Ok(1800));
        assert_eq!(secs("2h"), Ok(7200));
        assert!(secs("2d").unwrap_err().contains("not a duration"));
        assert!(secs("m").is_err());
    }
}
