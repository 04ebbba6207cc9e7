//! The commands: what `main` runs once the command line is parsed. Returns the process
//! exit code; errors here are user-facing and name what to fix. Errors the user fixes in
//! the command line or a config file are [`UsageError`]s (exit 64).

use std::io::{IsTerminal, Write};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use arrow::array::AsArray;
use arrow::record_batch::RecordBatch;
use chrono::{Datelike, TimeZone, Utc};
use futures::StreamExt;
use indicatif::ProgressDrawTarget;
use tokio_util::sync::CancellationToken;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer as _};
use url::Url;

use crate::api::{ApiClient, ApiKey, ClientConfig, RetryPolicy};
use crate::catalog;
use crate::check::{self, CheckReport, KeyCheck, KeyProblem};
use crate::cli::{
    CheckArgs, Cli, Command, DemoArgs, FakeApiArgs, FakeDataArgs, FakeFaultArgs, FakeJobArgs,
    FakeTruthArgs, LogFormat, ResetArgs, SourceArgs, StateAction, StateArgs, StreamsArgs, SyncArgs,
};
use crate::config::{
    self, ApiSettings, ConfigError, Given, Layer, Origin, find_stream, parse_date, split_names,
};
use crate::convert::schema::EVENT_ID;
use crate::convert::{Decoder, StreamSchema};
use crate::fake::{CutOff, FakeConfig, FakeIterable, Faults, FirstJobs, JobConfig};
use crate::lock::{LakeLock, LockError};
use crate::manifest::Manifest;
use crate::progress::Progress;
use crate::sink::{LakeStore, StoreError};
use crate::state::{self, StateError};
use crate::streams;
use crate::sync::{self, RunReport, StreamStatus, SyncError};

/// Exit codes (documented in the README and under `--help`).
pub mod exit {
    pub const OK: u8 = 0;
    pub const FAILED: u8 = 1;
    pub const QUARANTINED: u8 = 2;
    pub const KEY_UNUSABLE: u8 = 3;
    pub const USAGE: u8 = 64;
    /// `sync`: another run holds the lake's lock. EX_TEMPFAIL of sysexits.h ("try again
    /// later"), so schedulers can tell a busy lake from a failed sync and retry.
    pub const LOCKED: u8 = 75;
    /// `sync`: stopped by Ctrl-C or SIGTERM (128 + SIGINT, the shell's convention).
    pub const INTERRUPTED: u8 = 130;
}

/// An error the user fixes in the command line or a config file: exit 64.
#[derive(Debug, thiserror::Error)]
pub enum UsageError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Destination(StoreError),
}

/// Where log lines and progress go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogMode {
    /// Progress bars and warnings, for a person at a terminal.
    Bars,
    Text,
    /// JSON lines, for cron and log shippers.
    Json,
}

/// `auto` means bars when stdout is a terminal, JSON lines otherwise (cron, pipes).
pub fn log_mode(format: LogFormat, stdout_is_terminal: bool) -> LogMode {
    match format {
        LogFormat::Auto if stdout_is_terminal => LogMode::Bars,
        LogFormat::Auto | LogFormat::Json => LogMode::Json,
        LogFormat::Text => LogMode::Text,
    }
}

/// Set up logging on stderr (`RUST_LOG` overrides the level: info, or warn under the bars);
/// returns the bars when there are any.
pub fn init_logging(format: LogFormat) -> Option<Progress> {
    let mode = log_mode(format, std::io::stdout().is_terminal());
    let default = if mode == LogMode::Bars {
        "warn"
    } else {
        "info"
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let ansi = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let registry = tracing_subscriber::registry();
    match mode {
        LogMode::Json => {
            let logs = tracing_subscriber::fmt::layer()
                .json()
                .with_writer(std::io::stderr);
            registry.with(logs.with_filter(filter)).init();
            None
        }
        LogMode::Text => {
            let logs = tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(ansi);
            registry.with(logs.with_filter(filter)).init();
            None
        }
        LogMode::Bars => {
            let progress = Progress::new(ProgressDrawTarget::stderr());
            let logs = tracing_subscriber::fmt::layer()
                .with_writer(progress.writer())
                .with_ansi(ansi);
            registry
                .with(logs.with_filter(filter))
                .with(progress.layer())
                .init();
            Some(progress)
        }
    }
}

/// An error and its causes on one line, each cause once (many messages here already
/// include their cause).
pub fn error_line(e: &anyhow::Error) -> String {
    let mut line = e.to_string();
    for cause in e.chain().skip(1) {
        let cause = cause.to_string();
        if !line.contains(&cause) {
            line = format!("{line}: {cause}");
        }
    }
    line.replace('\n', " ")
}

/// The exit code of an error that reached `main`.
pub fn error_code(e: &anyhow::Error) -> u8 {
    let lock = match e.downcast_ref::<SyncError>() {
        Some(SyncError::Lock(l)) => Some(l),
        _ => e.downcast_ref::<LockError>(),
    };
    match lock {
        Some(LockError::Busy { .. }) => return exit::LOCKED,
        Some(LockError::Interrupted { .. }) => return exit::INTERRUPTED,
        _ => {}
    }
    let not_a_lake = matches!(
        e.downcast_ref::<SyncError>(),
        Some(SyncError::NotALake { .. })
    );
    if not_a_lake || e.downcast_ref::<UsageError>().is_some() {
        exit::USAGE
    } else {
        exit::FAILED
    }
}

pub async fn run(cli: Cli, progress: Option<Progress>) -> Result<u8> {
    match cli.command {
        Command::Sync(args) => sync_command(args, progress).await,
        Command::Check(args) => check_command(args).await,
        Command::Streams(args) => streams_command(args),
        Command::State(args) => state_command(args).await,
        Command::Demo(args) => demo(args, progress).await,
        Command::FakeApi(args) => fake_api(args).await,
        Command::FakeTruth(args) => fake_truth(args).await,
    }
}

fn usage(e: impl Into<UsageError>) -> anyhow::Error {
    anyhow::Error::new(e.into())
}

/// A `--config` file's layer.
fn config_layer(path: &Path) -> Result<Layer> {
    let text = config::read_file("--config", path).map_err(usage)?;
    let dir = path.parent().unwrap_or(Path::new(""));
    config::parse_toml(&path.display().to_string(), dir, &text).map_err(usage)
}

/// Flags, then the environment, then `--config`, then `--airbyte-config`.
fn layers(source: &SourceArgs, flags: Layer) -> Result<Layer> {
    let mut layer = flags.over(Layer::from_env(std::env::var("ITERABLE_API_KEY").ok()));
    if let Some(path) = &source.config {
        layer = layer.over(config_layer(path)?);
    }
    if let Some(path) = &source.airbyte_config {
        let text = config::read_file("--airbyte-config", path).map_err(usage)?;
        let airbyte = config::parse_airbyte(&path.display().to_string(), &text).map_err(usage)?;
        if !airbyte.ignored.is_empty() {
            tracing::warn!(file = %path.display(), keys = ?airbyte.ignored, "Airbyte config keys this tool does not use were ignored");
        }
        layer = layer.over(airbyte.layer);
    }
    Ok(layer)
}

fn client(api: &ApiSettings, retry: Option<RetryPolicy>) -> Result<ApiClient> {
    let key = config::read_key(&api.key).map_err(usage)?;
    let mut cfg = ClientConfig::new(api.base_url.clone(), key);
    if let Some(n) = api.export_requests_per_minute {
        cfg.export_requests_per_minute = n;
    }
    if let Some(n) = api.list_users_requests_per_minute {
        cfg.list_users_requests_per_minute = n;
    }
    if let Some(n) = api.metrics_requests_per_minute {
        cfg.metrics_requests_per_minute = n;
    }
    if let Some(n) = api.export_job_requests_per_second {
        cfg.export_job_requests_per_second = n;
    }
    if let Some(retry) = retry {
        cfg.retry = retry;
        cfg.connect_timeout = Duration::from_secs(10);
        cfg.read_timeout = Duration::from_secs(60);
    }
    Ok(ApiClient::new(cfg)?)
}

fn open_lake(dest: &str) -> Result<LakeStore> {
    LakeStore::open(dest).map_err(|e| match e {
        StoreError::BadDestination { .. } => usage(UsageError::Destination(e)),
        other => other.into(),
    })
}

async fn sync_command(args: SyncArgs, progress: Option<Progress>) -> Result<u8> {
    let layer = layers(&args.source, args.layer())?;
    let mut cfg = layer.sync_config(Utc::now()).map_err(usage)?;
    if args.dry_run {
        return dry_run(&cfg).await;
    }
    let client = client(&cfg.api, None)?;
    let lake = open_lake(&cfg.dest)?;
    cfg.options.wait_for_lock = args.wait_for_lock.unwrap_or_default();
    let cancel = CancellationToken::new();
    cfg.options.cancel = cancel.clone();
    tokio::spawn(stop_on_signals(cancel));
    let report = sync::run(lake, client, cfg.options).await;
    if let Some(p) = &progress {
        p.clear();
    }
    let report = report?;
    print!("{}", summary(&report));
    Ok(exit_code(&report))
}

/// Cancel `cancel` on the first Ctrl-C or SIGTERM, so the run stops after the units in
/// flight (those that would wait for a rate limit or a retry are dropped); exit at once on
/// the second (files of the units in flight are then left for the next run to remove).
async fn stop_on_signals(cancel: CancellationToken) {
    for n in 0..2 {
        if let Err(e) = next_signal().await {
            tracing::warn!(error = %e, "cannot listen for Ctrl-C or SIGTERM");
            return;
        }
        if n == 0 {
            eprintln!(
                "interrupted: finishing and committing the units in flight that need no further wait, starting nothing new; a unit waiting for a rate limit or a retry is dropped and read by the next run (again to stop at once)"
            );
            cancel.cancel();
        }
    }
    eprintln!(
        "interrupted again: stopping at once; units in flight were not committed (the next run removes their files)"
    );
    std::process::exit(i32::from(exit::INTERRUPTED));
}

/// The next Ctrl-C (SIGINT) or SIGTERM.
async fn next_signal() -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        Ok(())
    }
    #[cfg(not(unix))]
    {
        tokio::signal::ctrl_c().await
    }
}

/// `sync --dry-run`: the plan from the lake's manifest; no request, no lock, nothing written
/// (a missing local lake is not created).
async fn dry_run(cfg: &config::SyncConfig) -> Result<u8> {
    let manifest = match state::open_lake(&cfg.dest) {
        Ok(lake) => Manifest::load(&lake).await?,
        Err(StateError::NoLake { .. }) => Manifest::default(),
        Err(StateError::Store(e @ StoreError::BadDestination { .. })) => {
            return Err(usage(UsageError::Destination(e)));
        }
        Err(e) => return Err(e.into()),
    };
    print!("{}", sync::plan::describe(&cfg.options, &manifest));
    Ok(exit::OK)
}

/// 130 when interrupted, 1 when a stream failed or the lease was lost, 2 when some windows
/// were quarantined, 0 when every stream succeeded.
pub fn exit_code(report: &RunReport) -> u8 {
    if report.lease_lost {
        exit::FAILED
    } else if report.interrupted {
        exit::INTERRUPTED
    } else if !report.failed().is_empty() {
        exit::FAILED
    } else if report.quarantined() {
        exit::QUARANTINED
    } else {
        exit::OK
    }
}

fn yes_no(b: bool) -> &'static str {
    if b { "yes" } else { "no" }
}

/// The run's summary: one line per stream (rows, files, bytes, seconds, windows retried,
/// cursor, whether it committed anything, status with quarantined windows), and the totals.
pub fn summary(report: &RunReport) -> String {
    let mut out = format!(
        "{:<28} {:>10} {:>6} {:>12} {:>8} {:>7} {:<26} {:<9} status\n",
        "stream", "rows", "files", "bytes", "secs", "retried", "cursor", "committed"
    );
    for s in &report.streams {
        let status = match &s.status {
            StreamStatus::Succeeded => "ok".to_string(),
            StreamStatus::UpToDate => "up to date".to_string(),
            StreamStatus::Quarantined => format!("{} window(s) quarantined", s.quarantined.len()),
            StreamStatus::Failed(e) => format!("FAILED: {e}"),
            StreamStatus::Interrupted => "interrupted".to_string(),
        };
        let cursor = s.cursor.map(|c| c.to_rfc3339()).unwrap_or_default();
        out += &format!(
            "{:<28} {:>10} {:>6} {:>12} {:>8.1} {:>7} {:<26} {:<9} {status}\n",
            s.stream,
            s.rows,
            s.files,
            s.bytes,
            s.seconds,
            s.window_retries,
            cursor,
            yes_no(s.commits > 0)
        );
    }
    let cursorless: Vec<String> = report
        .streams
        .iter()
        .filter(|s| s.rows_without_cursor > 0)
        .map(|s| {
            format!(
                "{} {} ({} new)",
                s.stream, s.rows_without_cursor, s.new_rows_without_cursor
            )
        })
        .collect();
    if !cursorless.is_empty() {
        out += &format!(
            "rows without a cursor (kept once each in date=__HIVE_DEFAULT_PARTITION__): {}\n",
            cursorless.join(", ")
        );
    }
    out += &format!(
        "run {}: {} requests, {} retries, {} rate-limited; report in {}/_runs/{}.json\n",
        report.run_id,
        report.requests,
        report.retries,
        report.rate_limited,
        report.dest.trim_end_matches('/'),
        report.run_id
    );
    let jobs = &report.export_jobs;
    if jobs.started + jobs.completed > 0 {
        out += &format!(
            "export jobs: {} started, {} read whole ({} restarted, {} failed, {} cancelled), at most {} at once, {} files, {} bytes, {:.1} s waiting on Iterable\n",
            jobs.started,
            jobs.completed,
            jobs.restarted,
            jobs.failed,
            jobs.cancelled,
            jobs.most_in_flight,
            jobs.files,
            jobs.bytes,
            jobs.wait_seconds
        );
    }
    let failed: Vec<String> = report
        .failed()
        .iter()
        .map(|s| {
            if s.commits > 0 {
                format!(
                    "{} (committed: yes, through its cursor; the next run resumes there)",
                    s.stream
                )
            } else {
                format!("{} (committed: no)", s.stream)
            }
        })
        .collect();
    if !failed.is_empty() {
        out += &format!("failed streams: {}\n", failed.join(", "));
    }
    if report.interrupted {
        out += "interrupted: the streams marked committed keep what they committed; the next run resumes from their cursors\n";
    }
    if report.lease_lost {
        out += "another run took over the lake's lock during this run: this run stopped early (run again)\n";
    }
    out
}

async fn check_command(args: CheckArgs) -> Result<u8> {
    let layer = layers(&args.source, args.source.layer())?;
    let cfg = layer.check_config().map_err(usage)?;
    let retry = RetryPolicy {
        max_retries: 2,
        base_delay: Duration::from_millis(500),
        max_delay: Duration::from_secs(5),
    };
    let client = client(&cfg.api, Some(retry))?;
    let mut report = CheckReport {
        key: KeyCheck {
            host: check::host_of(&client),
            probe: format!("GET /api/{}", check::KEY_PROBE_PATH),
            accepted: true,
            error: None,
        },
        export_jobs: None,
        streams: Vec::new(),
    };
    if let Err(problem) = check::check_key(&client).await {
        eprintln!("error: {problem}");
        report.key.accepted = false;
        report.key.error = Some(problem.to_string());
        if args.json {
            print_json(&report)?;
        }
        return Ok(match problem {
            KeyProblem::Api(_) => exit::FAILED,
            _ => exit::KEY_UNUSABLE,
        });
    }
    let human = !args.json;
    if human {
        println!(
            "API key: accepted by {} ({})",
            report.key.host, report.key.probe
        );
    }
    if check::reads_through_jobs(cfg.export_api, &cfg.streams) {
        let jobs = check::probe_jobs(&client, cfg.export_api).await;
        if human {
            println!("{}", jobs.describe());
        }
        report.export_jobs = Some(jobs);
    }
    let per_minute = cfg.api.export_requests_per_minute.unwrap_or(4).max(1) as usize;
    if human && cfg.streams.len() > per_minute {
        println!(
            "probing {} streams at {per_minute} export requests per minute: about {} minutes",
            cfg.streams.len(),
            cfg.streams.len().div_ceil(per_minute)
        );
    }
    if human {
        println!(
            "{:<28} {:<24} {:<9} error",
            "stream", "data type", "readable"
        );
    }
    let mut probes = std::pin::pin!(check::probe_streams(&client, &cfg.streams, Utc::now()));
    while let Some(p) = probes.next().await {
        if human {
            println!(
                "{:<28} {:<24} {:<9} {}",
                p.stream,
                p.data_type,
                yes_no(p.readable),
                p.error.as_deref().unwrap_or("")
            );
        }
        report.streams.push(p);
    }
    if human {
        println!(
            "{} of {} streams readable",
            report.readable(),
            report.streams.len()
        );
    } else {
        print_json(&report)?;
    }
    Ok(if report.passed() {
        exit::OK
    } else {
        exit::FAILED
    })
}

fn print_json(value: &impl serde::Serialize) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

fn streams_command(args: StreamsArgs) -> Result<u8> {
    match &args.schema {
        Some(name) => {
            let def = find_stream(name, &Origin::Flag("--schema")).map_err(usage)?;
            let columns = streams::schema(def)?;
            if args.json {
                print_json(&columns)?;
            } else {
                print!("{}", streams::render_schema(def.name, &columns));
            }
        }
        None if args.json => print_json(&streams::all())?,
        None => print!("{}", streams::render(&streams::all())),
    }
    Ok(exit::OK)
}

/// The streams a reset names, checked against the catalog before any I/O.
fn reset_names(args: &ResetArgs) -> Result<Vec<String>, ConfigError> {
    let origin = Origin::Flag("state reset");
    let mut names = Vec::new();
    for name in args.streams.iter().flat_map(|s| split_names(s)) {
        let def = find_stream(&name, &origin)?;
        if !names.iter().any(|n| n == def.name) {
            names.push(def.name.to_string());
        }
    }
    Ok(names)
}

async fn state_command(args: StateArgs) -> Result<u8> {
    let mut layer = args.layer();
    if let Some(path) = &args.config {
        layer = layer.over(config_layer(path)?);
    }
    let dest = layer.dest().map_err(usage)?;
    let names = match &args.action {
        Some(StateAction::Reset(reset)) => Some(reset_names(reset).map_err(usage)?),
        None => None,
    };
    let lake = match state::open_lake(&dest) {
        Ok(lake) => lake,
        Err(StateError::Store(e @ StoreError::BadDestination { .. })) => {
            return Err(usage(UsageError::Destination(e)));
        }
        Err(e) => return Err(e.into()),
    };
    let mut manifest = state::load(&lake).await?;
    match names {
        None => {
            let mut summary = state::summarize(&dest, &manifest);
            summary.last_run_report = state::last_report(&lake, &manifest).await;
            state::add_delta_versions(&lake, &mut summary).await;
            if args.json {
                print_json(&summary)?;
            } else {
                print!("{}", state::render(&summary));
            }
        }
        Some(mut names) => {
            if names.is_empty() {
                names = manifest.streams.keys().cloned().collect();
            }
            reset_streams(&lake, &mut manifest, &names).await?;
        }
    }
    Ok(exit::OK)
}

/// Commit a reset, holding the lake's lock (exit 75 when a sync holds it).
async fn reset_streams(lake: &LakeStore, manifest: &mut Manifest, names: &[String]) -> Result<()> {
    let done = state::reset(manifest, names);
    for r in &done {
        println!("{r}");
    }
    if !done.iter().any(state::Reset::changed) {
        println!("nothing to reset: no new manifest version");
        return Ok(());
    }
    let run = format!("reset-{}", sync::new_run_id(Utc::now()));
    let lock = LakeLock::acquire(
        lake,
        &run,
        manifest.lease_generation,
        Duration::ZERO,
        &CancellationToken::new(),
        CancellationToken::new(),
    )
    .await?;
    let committed = manifest.commit(lake, &run, &lock.fence()).await;
    lock.release().await;
    committed?;
    println!(
        "committed manifest version {}: the next sync extracts these streams again from --start-date",
        manifest.version
    );
    Ok(())
}

async fn demo(args: DemoArgs, progress: Option<Progress>) -> Result<u8> {
    let today = Utc::now().date_naive();
    let start = Utc
        .with_ymd_and_hms(today.year(), today.month(), today.day(), 0, 0, 0)
        .single()
        .context("today's midnight")?
        - chrono::Duration::days(3);
    let cfg = FakeConfig {
        start,
        days: 3,
        events_per_day: 100,
        users: 500,
        ..FakeConfig::small(42)
    };
    let key = ApiKey::new(cfg.api_key.clone()).context("the fake's key")?;
    let fake = FakeIterable::start(cfg)
        .await
        .context("starting the fake Iterable API")?;
    println!("fake Iterable API on {}", fake.base_url());
    let mut client_cfg = ClientConfig::new(Url::parse(&fake.base_url())?, key);
    client_cfg.export_requests_per_minute = 100_000;
    client_cfg.list_users_requests_per_minute = 100_000;
    client_cfg.metrics_requests_per_minute = 100_000;
    let client = ApiClient::new(client_cfg)?;
    let mut opts = sync::SyncOptions::new(catalog::default_streams().collect());
    opts.start = Some(start);
    opts.window.initial_days = 3;
    let lake = open_lake(&args.dest)?;
    let report = sync::run(lake, client, opts).await;
    if let Some(p) = &progress {
        p.clear();
    }
    let report = report?;
    print!("{}", summary(&report));
    println!(
        "\nQuery it with DuckDB (each stream is a Delta table):\n  duckdb -c \"INSTALL delta; LOAD delta; SELECT date, count(*) FROM delta_scan('{}/email_send') GROUP BY ALL ORDER BY 1\"",
        args.dest.trim_end_matches('/')
    );
    Ok(exit_code(&report))
}

/// The fake's configuration from its data flags (faults off but the data's own shape,
/// `--cursorless-every`).
fn fake_config(data: &FakeDataArgs) -> Result<FakeConfig> {
    let start = parse_date(&Given::flag("--start", data.start.clone())).map_err(usage)?;
    let mut cfg = FakeConfig {
        start,
        days: data.days,
        events_per_day: data.events_per_day,
        users: data.users,
        ..FakeConfig::small(data.seed)
    };
    cfg.faults.cursorless_every = data.cursorless_every;
    Ok(cfg)
}

fn fake_faults(args: &FakeFaultArgs) -> Faults {
    Faults {
        export_rate: args.export_rate.map(|n| (n, args.export_rate_window)),
        retry_after: args.retry_after,
        cut_off: args.cut_off_bytes.map(|after_bytes| CutOff {
            data_type: args.cut_off_data_type.clone(),
            after_bytes,
            first_requests: args.cut_off_requests.unwrap_or(u32::MAX),
        }),
        random_500: args.random_500.unwrap_or(0.0),
        random_500_seed: args.random_500_seed,
        latency: args.latency_ms.map(Duration::from_millis),
        failing_lists: args.failing_lists.clone(),
        clean_cut_off: args.cut_off_clean.map(|first_requests| CutOff {
            data_type: None,
            after_bytes: args.cut_off_clean_bytes,
            first_requests,
        }),
        job_rate: args.job_rate.map(|n| (n, Duration::from_secs(1))),
        job_restart: args.job_restarts.map(first_jobs),
        job_failure: args.job_failures.map(first_jobs),
        job_truncation: args.job_truncations.map(first_jobs),
        expired_urls: args.expired_urls,
        cut_downloads: args.cut_downloads.map(|first_requests| CutOff {
            data_type: None,
            after_bytes: args.cut_downloads_bytes,
            first_requests,
        }),
        stream_bytes_per_second: args.stream_bytes_per_second,
        ..Faults::default()
    }
}

/// The first `jobs` export jobs of every data type.
fn first_jobs(jobs: u32) -> FirstJobs {
    FirstJobs {
        data_type: None,
        jobs,
    }
}

fn fake_jobs(args: &FakeJobArgs) -> JobConfig {
    JobConfig {
        queue_time: Duration::from_millis(args.job_queue_ms),
        run_time: Duration::from_millis(args.job_run_ms),
        bytes_per_second: args.job_bytes_per_second,
        max_running: args.job_max_running,
        max_bytes: args.job_max_bytes,
        url_lifetime: args.job_url_lifetime,
    }
}

async fn fake_api(args: FakeApiArgs) -> Result<u8> {
    let data = fake_config(&args.data)?;
    let cfg = FakeConfig {
        api_key: args.api_key,
        cache_bodies: args.cache_bodies,
        job_file_bytes: args.jobs.job_file_bytes,
        jobs: fake_jobs(&args.jobs),
        faults: Faults {
            cursorless_every: data.faults.cursorless_every,
            ..fake_faults(&args.faults)
        },
        ..data
    };
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], args.port));
    let fake = FakeIterable::start_on(cfg, addr)
        .await
        .context("starting the fake Iterable API")?;
    println!("{}", fake.base_url());
    tokio::signal::ctrl_c().await?;
    drop(fake);
    tokio::time::sleep(Duration::from_millis(10)).await;
    Ok(exit::OK)
}

/// `fake-truth`: every record the fake serves over its data range, one line each, day by
/// day (so memory holds one day of one stream), sorted; a record without a readable cursor
/// has the date `null` (a lake files it in no day).
async fn fake_truth(args: FakeTruthArgs) -> Result<u8> {
    let cfg = fake_config(&args.data)?;
    let mut defs = Vec::new();
    for name in split_names(&args.streams) {
        let def = find_stream(&name, &Origin::Flag("--streams")).map_err(usage)?;
        if def.layout != catalog::Layout::Dated
            || !matches!(def.source, catalog::Source::Export { .. })
        {
            return Err(usage(ConfigError::Invalid {
                origin: Origin::Flag("--streams"),
                problem: format!("{name} is not a dated export stream"),
            }));
        }
        defs.push(def);
    }
    let (start, days) = (cfg.start, cfg.days);
    let fake = FakeIterable::start(cfg)
        .await
        .context("starting the fake Iterable API")?;
    let mut out = Vec::new();
    for def in defs {
        let schema = Arc::new(
            StreamSchema::parse(def.name, def.schema, def.is_event())
                .with_context(|| format!("the schema of {}", def.name))?,
        );
        let decoder = Decoder::new(schema, 0, def.data_type());
        for day in 0..i64::from(days) {
            let from = start + chrono::Duration::days(day);
            let to = from + chrono::Duration::days(1);
            let lines = fake.truth_lines(def.data_type(), from, to);
            if lines.is_empty() {
                continue;
            }
            let batch = decoder
                .decode(lines.join("\n").as_bytes())
                .with_context(|| format!("decoding the fake's {} of {from}", def.name))?
                .batch;
            let date = from.date_naive().to_string();
            let cursor = batch
                .column_by_name(def.cursor_field)
                .with_context(|| format!("{}: no column {}", def.name, def.cursor_field))?;
            for (row, identity) in identities(def, &batch)?.into_iter().enumerate() {
                let date = if cursor.is_null(row) { "null" } else { &date };
                out.push(format!("{}\t{date}\t{identity}", def.name));
            }
        }
    }
    drop(fake);
    out.sort_unstable();
    let mut stdout = std::io::BufWriter::new(std::io::stdout().lock());
    for line in out {
        writeln!(stdout, "{line}")?;
    }
    stdout.flush()?;
    Ok(exit::OK)
}

/// Each row's identity: `_event_id` for events, `email|userId` for keyed streams.
fn identities(def: &catalog::StreamDef, batch: &RecordBatch) -> Result<Vec<String>> {
    let column = |name: &str| {
        batch
            .column_by_name(name)
            .and_then(|c| c.as_string_opt::<i32>())
            .with_context(|| format!("{}: no text column {name}", def.name))
    };
    if def.is_event() {
        let ids = column(EVENT_ID)?;
        return Ok(ids
            .iter()
            .map(|v| v.unwrap_or_default().to_string())
            .collect());
    }
    let (email, user) = (column("email")?, column("userId")?);
    Ok(email
        .iter()
        .zip(user.iter())
        .map(|(e, u)| format!("{}|{}", e.unwrap_or_default(), u.unwrap_or_default()))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sync::StreamReport;
    use clap::Parser;

    #[test]
    fn auto_logs_are_bars_on_a_terminal_and_json_elsewhere() {
        assert_eq!(log_mode(LogFormat::Auto, true), LogMode::Bars);
        assert_eq!(log_mode(LogFormat::Auto, false), LogMode::Json);
        assert_eq!(log_mode(LogFormat::Json, true), LogMode::Json);
        assert_eq!(log_mode(LogFormat::Text, false), LogMode::Text);
    }

    fn fake_api_args(args: &[&str]) -> FakeApiArgs {
        let cli = Cli::try_parse_from(["iterable-lake", "fake-api"].iter().chain(args)).unwrap();
        match cli.command {
            Command::FakeApi(a) => a,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn fake_api_faults_are_off_unless_asked_for() {
        let f = fake_faults(&fake_api_args(&[]).faults);
        assert_eq!(f.export_rate, None);
        assert!(f.cut_off.is_none() && f.latency.is_none() && !f.retry_after);
        assert!(f.failing_lists.is_empty() && f.clean_cut_off.is_none());
        assert_eq!(f.random_500, 0.0);

        let f = fake_faults(
            &fake_api_args(&[
                "--random-500",
                "0.25",
                "--random-500-seed",
                "9",
                "--cut-off-bytes",
                "1000",
                "--cut-off-requests",
                "2",
                "--cut-off-data-type",
                "emailSend",
                "--latency-ms",
                "15",
                "--export-rate",
                "20",
                "--export-rate-window",
                "2s",
                "--retry-after",
                "--failing-lists",
                "3,14",
            ])
            .faults,
        );
        assert_eq!(f.failing_lists, [3, 14]);
        assert_eq!((f.random_500, f.random_500_seed), (0.25, 9));
        let cut = f.cut_off.unwrap();
        assert_eq!(
            (
                cut.after_bytes,
                cut.first_requests,
                cut.data_type.as_deref()
            ),
            (1000, 2, Some("emailSend"))
        );
        assert_eq!(f.latency, Some(Duration::from_millis(15)));
        assert_eq!(f.export_rate, Some((20, Duration::from_secs(2))));
        assert!(f.retry_after);
        assert_eq!(
            fake_faults(&fake_api_args(&["--cut-off-bytes", "5"]).faults)
                .cut_off
                .unwrap()
                .first_requests,
            u32::MAX
        );
        let clean = fake_faults(&fake_api_args(&["--cut-off-clean", "3"]).faults)
            .clean_cut_off
            .unwrap();
        assert_eq!((clean.first_requests, clean.after_bytes), (3, 4096));
        assert!(Cli::try_parse_from(["iterable-lake", "fake-api", "--random-500", "1.5"]).is_err());
        assert!(f.job_rate.is_none() && f.job_restart.is_none() && f.job_failure.is_none());
        assert!(f.job_truncation.is_none() && f.cut_downloads.is_none());
        assert!(f.expired_urls == 0 && f.stream_bytes_per_second.is_none());
        assert!(Cli::try_parse_from(["iterable-lake", "fake-api", "--retry-after"]).is_err());
    }

    #[test]
    fn fake_api_job_flags_reach_the_config() {
        let args = fake_api_args(&[
            "--job-queue-ms",
            "50",
            "--job-bytes-per-second",
            "1000",
            "--job-url-lifetime",
            "2m",
            "--job-rate",
            "1",
            "--job-restarts",
            "2",
            "--job-failures",
            "3",
            "--job-truncations",
            "4",
            "--expired-urls",
            "5",
            "--cut-downloads",
            "6",
            "--stream-bytes-per-second",
            "7000",
        ]);
        let jobs = fake_jobs(&args.jobs);
        assert_eq!(jobs.queue_time, Duration::from_millis(50));
        assert_eq!(jobs.run_time, Duration::from_millis(200));
        assert_eq!(jobs.bytes_per_second, Some(1000));
        assert_eq!((jobs.max_running, jobs.max_bytes), (4, 100 << 30));
        assert_eq!(jobs.url_lifetime, Duration::from_secs(120));
        assert_eq!(args.jobs.job_file_bytes, 10 * 1024 * 1024);
        let f = fake_faults(&args.faults);
        assert_eq!(f.job_rate, Some((1, Duration::from_secs(1))));
        let taken = |j: Option<FirstJobs>| j.map(|j| (j.jobs, j.data_type));
        assert_eq!(taken(f.job_restart), Some((2, None)));
        assert_eq!(taken(f.job_failure), Some((3, None)));
        assert_eq!(taken(f.job_truncation), Some((4, None)));
        assert_eq!(f.expired_urls, 5);
        let cut = f.cut_downloads.unwrap();
        assert_eq!((cut.first_requests, cut.after_bytes), (6, 4096));
        assert_eq!(f.stream_bytes_per_second, Some(7000));
    }

    #[test]
    fn error_lines_say_each_cause_once() {
        let io = std::io::Error::other("disk full");
        let e = anyhow::Error::new(io).context("writing the report");
        assert_eq!(error_line(&e), "writing the report: disk full");
        let inner = ConfigError::Read {
            flag: "--config",
            path: "x.toml".into(),
            source: std::io::Error::other("no such file"),
        };
        let e = usage(inner);
        assert_eq!(error_line(&e), "--config x.toml: no such file");
        assert_eq!(error_code(&e), exit::USAGE);
        assert_eq!(error_code(&anyhow::anyhow!("x")), exit::FAILED);
    }

    fn stream(name: &str, status: StreamStatus, commits: u64) -> StreamReport {
        StreamReport {
            stream: name.into(),
            mode: crate::catalog::SyncMode::Incremental,
            status,
            rows: 10,
            files: 1,
            bytes: 100,
            windows: 2,
            window_retries: 0,
            malformed_lines: 0,
            rows_without_cursor: 0,
            new_rows_without_cursor: 0,
            commits,
            cursor: None,
            behind_seconds: None,
            rate_limited: 0,
            rate_limit_wait_seconds: 0.0,
            quarantined: Vec::new(),
            seconds: 1.0,
        }
    }

    #[test]
    fn the_summary_says_whether_a_failed_stream_committed() {
        let t = Utc::now();
        let report = RunReport {
            run_id: "r".into(),
            dest: "/lake/".into(),
            started_at: t,
            finished_at: t,
            streams: vec![
                stream("email_send", StreamStatus::Succeeded, 2),
                stream("email_open", StreamStatus::Failed("boom".into()), 1),
                stream("users", StreamStatus::Failed("401".into()), 0),
            ],
            requests: 3,
            retries: 0,
            rate_limited: 0,
            backoff_seconds: 0.0,
            rate_limit_wait_seconds: 0.0,
            interrupted: false,
            lease_lost: false,
            export_jobs: crate::source::jobs::JobsReport {
                started: 3,
                completed: 2,
                files: 9,
                bytes: 4096,
                wait_seconds: 12.0,
                most_in_flight: 2,
                ..Default::default()
            },
        };
        let text = summary(&report);
        assert!(
            text.contains("export jobs: 3 started, 2 read whole (0 restarted, 0 failed, 0 cancelled), at most 2 at once, 9 files, 4096 bytes, 12.0 s waiting on Iterable"),
            "{text}"
        );
        let line = |name: &str| {
            text.lines()
                .find(|l| l.starts_with(name))
                .unwrap()
                .to_string()
        };
        assert!(line("email_send").contains(" yes       ok"), "{text}");
        assert!(
            line("email_open").contains(" yes       FAILED: boom"),
            "{text}"
        );
        assert!(line("users ").contains(" no        FAILED: 401"), "{text}");
        assert!(text.contains("report in /lake/_runs/r.json"), "{text}");
        assert!(
            text.ends_with("failed streams: email_open (committed: yes, through its cursor; the next run resumes there), users (committed: no)\n"),
            "{text}"
        );
        assert_eq!(exit_code(&report), exit::FAILED);
    }
}
