//! The commands: what `main` runs once the command line is parsed. Returns the process
//! exit code; errors here are user-facing and name what to fix.

use std::io::IsTerminal;
use std::time::Duration;

use anyhow::{Context, Result};
use chrono::{Datelike, TimeZone, Utc};
use url::Url;

use crate::api::{ApiClient, ApiKey, ClientConfig};
use crate::catalog::STREAMS;
use crate::cli::{
    Cli, Command, DemoArgs, FakeApiArgs, LogFormat, SyncArgs, parse_date, sync_options,
};
use crate::fake::{FakeConfig, FakeIterable};
use crate::sink::LakeStore;
use crate::sync::{self, RunReport, StreamStatus};

/// Exit codes (documented in the README).
pub mod exit {
    pub const OK: u8 = 0;
    pub const FAILED: u8 = 1;
    pub const QUARANTINED: u8 = 2;
    pub const USAGE: u8 = 64;
}

/// Set up logging: text on stderr, or JSON lines.
pub fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).init(),
    }
}

pub async fn run(cli: Cli) -> Result<u8> {
    match cli.command {
        Command::Sync(args) => sync_command(args).await,
        Command::Demo(args) => demo(args).await,
        Command::Streams => {
            println!(
                "{:<28} {:<22} {:<18} default mode",
                "stream", "data type", "cursor"
            );
            for s in STREAMS {
                println!(
                    "{:<28} {:<22} {:<18} {}",
                    s.name,
                    s.data_type(),
                    s.cursor_field,
                    s.default_mode
                );
            }
            Ok(exit::OK)
        }
        Command::FakeApi(args) => fake_api(args).await,
    }
}

fn read_key(args: &SyncArgs) -> Result<ApiKey> {
    let raw = match &args.api_key_file {
        Some(path) => std::fs::read_to_string(path)
            .with_context(|| format!("reading the API key from {}", path.display()))?,
        None => std::env::var("ITERABLE_API_KEY").unwrap_or_default(),
    };
    ApiKey::new(raw).context("no API key: set ITERABLE_API_KEY or give --api-key-file")
}

async fn sync_command(args: SyncArgs) -> Result<u8> {
    let opts = match sync_options(&args, Utc::now()) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(exit::USAGE);
        }
    };
    let key = match read_key(&args) {
        Ok(k) => k,
        Err(e) => {
            eprintln!("error: {e:#}");
            return Ok(exit::USAGE);
        }
    };
    let base = args
        .base_url
        .clone()
        .unwrap_or_else(|| args.region.base_url().to_string());
    let base = match Url::parse(&base) {
        Ok(u) => u,
        Err(e) => {
            eprintln!("error: --base-url {base:?}: {e}");
            return Ok(exit::USAGE);
        }
    };
    let mut cfg = ClientConfig::new(base, key);
    cfg.export_requests_per_minute = args.export_requests_per_minute;
    let client = ApiClient::new(cfg)?;
    let lake = LakeStore::open(&args.dest)?;
    let report = sync::run(lake, client, opts).await?;
    print_summary(&report);
    Ok(exit_code(&report))
}

/// 0 when every stream succeeded, 2 when some windows were quarantined, 1 when a stream failed.
pub fn exit_code(report: &RunReport) -> u8 {
    if !report.failed().is_empty() {
        exit::FAILED
    } else if report.quarantined() {
        exit::QUARANTINED
    } else {
        exit::OK
    }
}

fn print_summary(report: &RunReport) {
    println!(
        "{:<28} {:>10} {:>6} {:>12} {:<26} status",
        "stream", "rows", "files", "bytes", "cursor"
    );
    for s in &report.streams {
        let status = match &s.status {
            StreamStatus::Succeeded => "ok".to_string(),
            StreamStatus::UpToDate => "up to date".to_string(),
            StreamStatus::Quarantined => format!("{} window(s) quarantined", s.quarantined.len()),
            StreamStatus::Failed(e) => format!("FAILED: {e}"),
        };
        let cursor = s.cursor.map(|c| c.to_rfc3339()).unwrap_or_default();
        println!(
            "{:<28} {:>10} {:>6} {:>12} {:<26} {status}",
            s.stream, s.rows, s.files, s.bytes, cursor
        );
    }
    let failed: Vec<&str> = report.failed().iter().map(|s| s.stream.as_str()).collect();
    println!(
        "run {}: {} requests, {} retries, {} rate-limited; report in {}/_runs/{}.json",
        report.run_id,
        report.requests,
        report.retries,
        report.rate_limited,
        report.dest,
        report.run_id
    );
    if !failed.is_empty() {
        println!("failed streams: {}", failed.join(", "));
    }
}

async fn demo(args: DemoArgs) -> Result<u8> {
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
    let client = ApiClient::new(client_cfg)?;
    let mut opts = sync::SyncOptions::new(STREAMS.iter().collect());
    opts.start = Some(start);
    opts.window.initial_days = 3;
    let lake = LakeStore::open(&args.dest)?;
    let report = sync::run(lake, client, opts).await?;
    print_summary(&report);
    println!(
        "\nQuery it with DuckDB:\n  duckdb -c \"SELECT date, count(*) FROM read_parquet('{}/email_send/**/*.parquet', hive_partitioning=true) GROUP BY ALL ORDER BY 1\"",
        args.dest.trim_end_matches('/')
    );
    Ok(exit_code(&report))
}

async fn fake_api(args: FakeApiArgs) -> Result<u8> {
    let start = parse_date("--start", &args.start)?;
    let cfg = FakeConfig {
        seed: args.seed,
        start,
        days: args.days,
        events_per_day: args.events_per_day,
        users: args.users,
        api_key: args.api_key,
        ..FakeConfig::small(args.seed)
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
