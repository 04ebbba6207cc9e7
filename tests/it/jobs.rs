//! Export streams read through Iterable's export jobs (`--export-api jobs`/`auto`) from the
//! fake over HTTP: exact against the fake's truth, the key never sent with a file, and jobs
//! recorded in the lake until their windows are done.

use std::collections::BTreeMap;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeDelta, Utc};
use futures::TryStreamExt;
use iterable_lake::api::ApiClient;
use iterable_lake::catalog::{self, SyncMode};
use iterable_lake::convert::timestamp::format_for_query;
use iterable_lake::fake::{CutOff, FakeConfig, FakeIterable, Faults, FirstJobs};
use iterable_lake::manifest::Manifest;
use iterable_lake::sink::LakeStore;
use iterable_lake::source::export::Window;
use iterable_lake::source::jobs::{JOBS_DIR, JobRecord};
use iterable_lake::sync::{self, ExportApi, RunReport, StreamStatus, SyncOptions};
use object_store::ObjectStoreExt;
use serde_json::Value;

use crate::bin::{BIN, text, unlimited};
use crate::export_sync::{START, assert_exact, options, t};
use crate::lake::{fake_client, fake_client_with, live_batches};
use crate::support;

/// Options reading through jobs, polling fast (the fake's jobs move one step per poll).
fn jobs_options(streams: &[&str], now: &str) -> SyncOptions {
    let streams = streams.iter().map(|s| catalog::find(s).unwrap()).collect();
    let mut o = options(streams, START, t(now));
    o.export_api = ExportApi::Jobs;
    o.jobs.poll_min = Duration::from_millis(20);
    o.jobs.poll_max = Duration::from_millis(100);
    o
}

/// A client of `fake` sending job requests past the fake's limit when it has one (as with
/// another client of the organization): 429s are met, and waited out.
fn past_job_rate(fake: &FakeIterable) -> ApiClient {
    let per_second = fake
        .config()
        .faults
        .job_rate
        .map_or(1000, |(n, _)| n * 3 / 2);
    fake_client_with(fake, 6, |c| c.export_job_requests_per_second = per_second)
}

/// Sync every export stream through jobs from a fake with `cfg` into `lake`, up to `END`, and
/// check each against the fake's truth; no data.json request, no file request with the key,
/// and no job record left.
async fn every_stream_through_jobs(cfg: FakeConfig, lake: &LakeStore) -> RunReport {
    let fake = FakeIterable::start(cfg).await.unwrap();
    fake.set_now(t(END));
    let names: Vec<&str> = catalog::export_streams().map(|s| s.name).collect();
    let report = run_ok(lake, past_job_rate(&fake), jobs_options(&names, END)).await;
    for s in catalog::export_streams() {
        assert_exact(&fake, lake, s, START, t(END)).await;
    }
    assert_eq!(fake.requests("/api/export/data.json"), 0);
    assert_jobs_done(&fake, lake).await;
    let jobs = &report.export_jobs;
    assert!(
        jobs.started >= 51 && jobs.files >= jobs.completed,
        "{jobs:?}"
    );
    report
}

/// Run `opts` with `client` into `lake`; every stream succeeds.
async fn run_ok(lake: &LakeStore, client: ApiClient, opts: SyncOptions) -> RunReport {
    let report = sync::run(lake.clone(), client, opts).await.unwrap();
    for s in &report.streams {
        assert_eq!(
            s.status,
            StreamStatus::Succeeded,
            "{}: {:?}",
            s.stream,
            s.quarantined
        );
    }
    report
}

/// After a run: no file request carried the key, every job the fake holds is finished
/// (`Completed` or `Failed`: none occupies a slot), and the lake holds no job record.
async fn assert_jobs_done(fake: &FakeIterable, lake: &LakeStore) {
    assert_eq!(
        fake.keyed_file_requests(),
        0,
        "a file request carried the key"
    );
    let states = fake_job_states(fake).await;
    assert!(
        states.iter().all(|s| s == "Completed" || s == "Failed"),
        "a job is still queued or running: {states:?}"
    );
    assert_no_record(lake).await;
}

/// The lake holds no job record.
async fn assert_no_record(lake: &LakeStore) {
    let records: Vec<_> = lake
        .store
        .list(Some(&lake.path(JOBS_DIR)))
        .try_collect()
        .await
        .unwrap();
    assert!(
        records.is_empty(),
        "every job record is deleted: {records:?}"
    );
}

const END: &str = "2024-01-04T00:00:00Z";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_export_stream_through_jobs_lands_exactly_once_on_local_disk() {
    let dir = tempfile::tempdir().unwrap();
    let lake = LakeStore::open(dir.path().to_str().unwrap()).unwrap();
    let cfg = FakeConfig {
        job_file_bytes: 4 << 10,
        ..FakeConfig::small(3)
    };
    let report = every_stream_through_jobs(cfg, &lake).await;
    let jobs = &report.export_jobs;
    assert_eq!(jobs.completed, jobs.started, "{jobs:?}");
    assert!(
        jobs.files > jobs.completed,
        "files split at 4 KiB: {jobs:?}"
    );
}

/// Every job fault the fake has, at once: 429s past 20 job requests a second, restarts
/// (Running -> Enqueued), failures, truncations, expired URLs and downloads cut mid-line.
fn faulty(seed: u64) -> FakeConfig {
    let mut cfg = FakeConfig {
        job_file_bytes: 4 << 10,
        ..FakeConfig::small(seed)
    };
    let first = |data_type: Option<&str>, jobs| {
        Some(FirstJobs {
            data_type: data_type.map(String::from),
            jobs,
        })
    };
    cfg.faults = Faults {
        export_rate: None,
        job_rate: Some((20, Duration::from_secs(1))),
        job_restart: first(None, 12),
        job_failure: first(Some("emailOpen"), 3),
        job_truncation: first(Some("emailSend"), 2),
        expired_urls: 5,
        cut_downloads: Some(CutOff {
            data_type: None,
            after_bytes: 1500,
            first_requests: 8,
        }),
        ..Faults::default()
    };
    cfg
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_job_fault_at_once_still_gives_exact_streams_locally_and_on_s3() {
    let dir = tempfile::tempdir().unwrap();
    let lake = LakeStore::open(dir.path().to_str().unwrap()).unwrap();
    let report = every_stream_through_jobs(faulty(8), &lake).await;
    let jobs = &report.export_jobs;
    // Failed jobs are started again or, once they fed lines, fail their window (which one
    // depends on timing; both are exact).
    assert!(jobs.failed >= 3, "{jobs:?}");
    let send = report.streams.iter().find(|s| s.stream == "email_send");
    let split = send.unwrap().window_retries;
    assert!(split >= 1, "a truncated window was split: {split}");
    assert!(report.rate_limited > 0, "{report:?}");
    let Some(s3) = support::require_s3() else {
        return;
    };
    let bucket = s3.new_bucket().await;
    let lake = LakeStore::open(&bucket.s3_url("lake")).unwrap();
    every_stream_through_jobs(faulty(9), &lake).await;
}

/// The streams the full-refresh tests read: the two whose jobs `faulty` fails and truncates,
/// and one it leaves alone.
const REFRESHED: [&str; 3] = ["email_send", "email_open", "email_click"];

/// A full refresh in `mode` of [`REFRESHED`] through jobs at `now`, every job fault on.
async fn refresh_through_jobs(
    fake: &FakeIterable,
    lake: &LakeStore,
    mode: SyncMode,
    now: &str,
) -> RunReport {
    fake.set_now(t(now));
    let mut opts = jobs_options(&REFRESHED, now);
    opts.mode = Some(mode);
    let report = run_ok(lake, past_job_rate(fake), opts).await;
    for s in &report.streams {
        assert_eq!(s.mode, mode, "{}", s.stream);
    }
    assert_eq!(fake.requests("/api/export/data.json"), 0, "jobs only");
    assert_jobs_done(fake, lake).await;
    report
}

/// Rows per snapshot date and date partition of `stream`'s live files.
async fn snapshot_counts(lake: &LakeStore, stream: &str) -> BTreeMap<(String, String), u64> {
    let mut counts = BTreeMap::new();
    for (f, _) in live_batches(lake, stream).await {
        let folder = |name: &str| {
            f.file
                .path
                .split('/')
                .find_map(|p| p.strip_prefix(name))
                .unwrap_or_else(|| panic!("{name} in {}", f.file.path))
                .to_string()
        };
        *counts
            .entry((folder("snapshot_date="), folder("date=")))
            .or_insert(0) += f.file.rows;
    }
    counts
}

/// Two nights of `full-refresh-overwrite` through jobs, with every job fault: each reads the
/// whole range through jobs (none left running) and the stream holds it exactly once.
async fn overwrite_through_jobs(seed: u64, lake: &LakeStore) {
    let fake = FakeIterable::start(faulty(seed)).await.unwrap();
    let mode = SyncMode::FullRefreshOverwrite;
    let report = refresh_through_jobs(&fake, lake, mode, END).await;
    assert!(report.export_jobs.failed >= 3, "{:?}", report.export_jobs);
    let starts = fake.requests("/api/export/start");
    assert!(starts >= REFRESHED.len() as u64, "{starts}");
    let next = "2024-01-05T00:00:00Z";
    refresh_through_jobs(&fake, lake, mode, next).await;
    assert!(fake.requests("/api/export/start") >= starts + REFRESHED.len() as u64);
    for name in REFRESHED {
        assert_exact(&fake, lake, catalog::find(name).unwrap(), START, t(next)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_refresh_overwrite_through_jobs_is_exact_locally_and_on_s3() {
    let dir = tempfile::tempdir().unwrap();
    overwrite_through_jobs(11, &LakeStore::open(dir.path().to_str().unwrap()).unwrap()).await;
    let Some(s3) = support::require_s3() else {
        return;
    };
    let bucket = s3.new_bucket().await;
    overwrite_through_jobs(12, &LakeStore::open(&bucket.s3_url("lake")).unwrap()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_refresh_append_through_jobs_adds_one_exact_snapshot_a_night() {
    let fake = FakeIterable::start(faulty(13)).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let lake = LakeStore::open(dir.path().to_str().unwrap()).unwrap();
    let mode = SyncMode::FullRefreshAppend;
    refresh_through_jobs(&fake, &lake, mode, END).await;
    for name in REFRESHED {
        assert_exact(&fake, &lake, catalog::find(name).unwrap(), START, t(END)).await;
    }
    let next = "2024-01-05T00:00:00Z";
    refresh_through_jobs(&fake, &lake, mode, next).await;
    for name in REFRESHED {
        let stream = catalog::find(name).unwrap();
        let mut want = BTreeMap::new();
        for (snapshot, end) in [("2024-01-04", END), ("2024-01-05", next)] {
            for (date, rows) in fake.truth_counts(stream.data_type(), t(START), t(end)) {
                want.insert((snapshot.to_string(), date.to_string()), rows);
            }
        }
        assert_eq!(snapshot_counts(&lake, name).await, want, "{name}");
    }
}

/// `auto` reads a full refresh's windows as the dry run says: through jobs those that end
/// before the settling window (the last `--lookback` whole days), and the run does exactly
/// what it planned, leaving no job behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_reads_a_full_refresh_s_windows_as_its_dry_run_says() {
    let fake = FakeIterable::start(FakeConfig::small(14)).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let lake = LakeStore::open(dir.path().to_str().unwrap()).unwrap();
    fake.set_now(t(END));
    let streams = ["email_send", "email_open"];
    let mut opts = jobs_options(&streams, END);
    opts.export_api = ExportApi::Auto;
    opts.mode = Some(SyncMode::FullRefreshOverwrite);
    opts.window.initial_days = 1;
    let dry = sync::plan::describe(&opts, &Manifest::load(&lake).await.unwrap());
    // A stream's days before the settling window (the last day) through jobs, that day
    // through data.json.
    let jobs_until = "2024-01-03 00:00:00) via export jobs";
    let streamed = dry.matches("via data.json").count() as u64;
    assert_eq!((dry.matches(jobs_until).count(), streamed), (2, 2), "{dry}");
    // Through jobs: a first unit of a day, then one up to the settling window.
    let by_job = 4;
    let report = run_ok(&lake, fake_client(&fake, 2), opts).await;
    for s in &report.streams {
        assert_exact(
            &fake,
            &lake,
            catalog::find(&s.stream).unwrap(),
            START,
            t(END),
        )
        .await;
    }
    assert_eq!(fake.requests("/api/export/start"), by_job, "{dry}");
    assert_eq!(fake.requests("/api/export/data.json"), streamed, "{dry}");
    assert_jobs_done(&fake, &lake).await;
}

/// Run the binary with `args` and the fake's key.
fn cli(args: &[String], key: &str) -> Output {
    Command::new(BIN)
        .args(args)
        .env("ITERABLE_API_KEY", key)
        .env("NO_COLOR", "1")
        .output()
        .unwrap()
}

/// `sync` of `streams` from the fake into `dest` up to `end`, with the rate limits lifted.
fn sync_args(dest: &str, base: &str, streams: &str, end: &str, extra: &[&str]) -> Vec<String> {
    let mut a = unlimited(&[
        "sync",
        "--dest",
        dest,
        "--base-url",
        base,
        "--streams",
        streams,
        "--start-date",
        "2024-01-01",
        "--end-date",
        end,
        "--lag",
        "0",
    ]);
    a.extend(extra);
    a.iter().map(|s| s.to_string()).collect()
}

/// The jobs the fake holds (`GET /api/export/jobs`), by id.
async fn fake_jobs(fake: &FakeIterable) -> BTreeMap<i64, Value> {
    let resp = reqwest::Client::new()
        .get(format!("{}export/jobs", fake.base_url()))
        .header("Api-Key", &fake.config().api_key)
        .send()
        .await
        .unwrap();
    let body: Value = serde_json::from_slice(&resp.bytes().await.unwrap()).unwrap();
    body["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| (j["id"].as_i64().unwrap(), j.clone()))
        .collect()
}

/// The states of the jobs the fake holds.
async fn fake_job_states(fake: &FakeIterable) -> Vec<String> {
    fake_jobs(fake).await.values().map(state_of).collect()
}

fn state_of(job: &Value) -> String {
    job["jobState"].as_str().unwrap().to_string()
}

/// An instant of the fake's job list (`scheduledStartTime`, `endTime`).
fn instant_of(job: &Value, field: &str) -> DateTime<Utc> {
    job[field]
        .as_str()
        .unwrap_or_else(|| panic!("no {field}: {job}"))
        .parse()
        .unwrap()
}

/// Start an export job of `data_type` over `window` directly on the fake, as a killed run
/// did, or another client of the project; returns its id.
async fn start_job(fake: &FakeIterable, data_type: &str, window: Window) -> i64 {
    let body = serde_json::json!({
        "dataTypeName": data_type,
        "outputFormat": "application/x-json-stream",
        "startDateTime": format_for_query(window.start),
        "endDateTime": format_for_query(window.end),
    });
    let resp = reqwest::Client::new()
        .post(format!("{}export/start", fake.base_url()))
        .header("Api-Key", &fake.config().api_key)
        .header("Content-Type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body: Value = serde_json::from_slice(&resp.bytes().await.unwrap()).unwrap();
    body["jobId"].as_i64().unwrap()
}

/// Record `job` in `lake` as a run did that was killed `age` after starting it.
async fn record_job(lake: &LakeStore, stream: &str, job: i64, window: Window, age: TimeDelta) {
    let mut record = JobRecord::new(stream, job, window);
    record.started_at -= age;
    record.run_id = "20240104T000000Z-killed".to_string();
    let path = lake.path(&format!("{JOBS_DIR}/{stream}/job-{job}.json"));
    let body = serde_json::to_vec(&record).unwrap();
    lake.store.put(&path, body.into()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_reads_the_tail_through_data_json_and_a_reset_stream_through_jobs() {
    let fake = FakeIterable::start(FakeConfig::small(5)).await.unwrap();
    let key = fake.config().api_key.clone();
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().to_str().unwrap().to_string();
    let base = fake.base_url();
    let first = "2024-01-03T00:00:00Z";
    fake.set_now(t(first));
    let streams = "email_send,email_open";
    let o = cli(
        &sync_args(&dest, &base, streams, first, &["--export-api", "auto"]),
        &key,
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let (starts, streamed) = (
        fake.requests("/api/export/start"),
        fake.requests("/api/export/data.json"),
    );
    assert!(
        starts >= 2 && streamed == 0,
        "a first run is a backfill: {starts} {streamed}"
    );

    let next = "2024-01-04T00:00:00Z";
    fake.set_now(t(next));
    let dry = cli(
        &sync_args(
            &dest,
            &base,
            streams,
            next,
            &["--dry-run", "--export-api", "auto"],
        ),
        &key,
    );
    let out = text(&dry);
    assert!(
        out.contains("via data.json") && !out.contains("via an export job,"),
        "{out}"
    );
    let o = cli(
        &sync_args(&dest, &base, streams, next, &["--export-api", "auto"]),
        &key,
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_eq!(
        fake.requests("/api/export/start"),
        starts,
        "the tail is no backfill"
    );
    let streamed = fake.requests("/api/export/data.json");
    assert!(streamed >= 2);

    let reset = cli(
        &["state", "--dest", &dest, "reset", "email_open"].map(String::from),
        &key,
    );
    assert_eq!(reset.status.code(), Some(0), "{}", text(&reset));
    let last = "2024-01-04T12:00:00Z";
    fake.set_now(t(last));
    let dry = cli(
        &sync_args(
            &dest,
            &base,
            streams,
            last,
            &["--dry-run", "--export-api", "auto"],
        ),
        &key,
    );
    let out = text(&dry);
    let open = out
        .lines()
        .skip_while(|l| !l.starts_with("email_open"))
        .nth(1)
        .unwrap();
    assert!(open.contains("via an export job"), "{out}");
    let o = cli(
        &sync_args(&dest, &base, streams, last, &["--export-api", "auto"]),
        &key,
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(
        fake.requests("/api/export/start") > starts,
        "the reset stream is a backfill"
    );
    assert_eq!(
        fake.requests("/api/export/data.json"),
        streamed + 1,
        "email_send's tail only"
    );
    let lake = LakeStore::open(&dest).unwrap();
    for s in ["email_send", "email_open"] {
        assert_exact(&fake, &lake, catalog::find(s).unwrap(), START, t(last)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jobs_backfill_killed_and_rerun_is_exact_and_leaves_no_job_running() {
    let fake = FakeIterable::start(FakeConfig::small(6)).await.unwrap();
    let key = fake.config().api_key.clone();
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().to_str().unwrap().to_string();
    let end = "2024-01-04T00:00:00Z";
    fake.set_now(t(end));
    let streams = "email_send,email_open,email_click,push_send,sms_send,users";
    let args = sync_args(
        &dest,
        &fake.base_url(),
        streams,
        end,
        &["--export-api", "jobs"],
    );
    let jobs_dir = dir.path().join("_jobs");
    let (first, key1) = (args.clone(), key.clone());
    let recorded = tokio::task::spawn_blocking(move || {
        let mut child = Command::new(BIN)
            .args(&first)
            .env("ITERABLE_API_KEY", &key1)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let t0 = Instant::now();
        let count = || -> usize {
            std::fs::read_dir(&jobs_dir)
                .map(|d| {
                    d.flat_map(|s| std::fs::read_dir(s.unwrap().path()).unwrap())
                        .count()
                })
                .unwrap_or(0)
        };
        while t0.elapsed() < Duration::from_secs(60) && count() < 2 {
            std::thread::sleep(Duration::from_millis(5));
        }
        // SIGKILL: nothing of the run's own cleanup happens.
        child.kill().unwrap();
        child.wait().unwrap();
        count()
    })
    .await
    .unwrap();
    assert!(recorded >= 2, "killed while jobs were recorded: {recorded}");
    let left = fake_job_states(&fake).await;
    assert!(
        left.iter().any(|s| s == "Enqueued" || s == "Running"),
        "{left:?}"
    );

    let o = tokio::task::spawn_blocking(move || cli(&args, &key))
        .await
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let states = fake_job_states(&fake).await;
    assert!(
        states.iter().all(|s| s == "Completed" || s == "Failed"),
        "a job the tool started is still running: {states:?}"
    );
    let lake = LakeStore::open(&dest).unwrap();
    for s in streams.split(',') {
        assert_exact(&fake, &lake, catalog::find(s).unwrap(), START, t(end)).await;
    }
    // Records only: a kill in the middle of a create may leave the local store's staging
    // file, which is not named like a record.
    let records: Vec<String> = std::fs::read_dir(dir.path().join("_jobs"))
        .map(|d| {
            d.flat_map(|s| std::fs::read_dir(s.unwrap().path()).unwrap())
                .map(|f| f.unwrap().file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with("job-") && n.ends_with(".json"))
                .collect()
        })
        .unwrap_or_default();
    assert!(records.is_empty(), "every record is gone: {records:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_falls_back_to_the_data_type_spelling_the_server_accepts() {
    let mut cfg = FakeConfig::small(6);
    cfg.faults.rejected_data_types = vec!["emailUnSubscribe".into()];
    let fake = FakeIterable::start(cfg).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let lake = LakeStore::open(dir.path().to_str().unwrap()).unwrap();
    fake.set_now(t(END));
    let mut opts = jobs_options(&["email_unsubscribe"], END);
    opts.window.initial_days = 1;
    let report = run_ok(&lake, fake_client(&fake, 2), opts).await;
    let s = &report.streams[0];
    assert!(s.windows >= 2, "{}", s.windows);
    let unsub = catalog::find("email_unsubscribe").unwrap();
    assert_exact(&fake, &lake, unsub, START, t(END)).await;
    assert_eq!(
        fake.requests("/api/export/start"),
        s.windows + 1,
        "one rejected start, then the accepted spelling for every window"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_stream_s_unit_is_read_by_several_jobs_at_once() {
    let fake = FakeIterable::start(FakeConfig::small(10)).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let lake = LakeStore::open(dir.path().to_str().unwrap()).unwrap();
    fake.set_now(t(END));
    let mut opts = jobs_options(&["email_send"], END);
    opts.jobs.max_jobs = 2;
    let report = run_ok(&lake, fake_client(&fake, 2), opts).await;
    let s = &report.streams[0];
    assert_eq!(s.windows, 2, "3 days cut into 2 windows of whole days");
    assert_eq!(
        report.export_jobs.most_in_flight, 2,
        "{:?}",
        report.export_jobs
    );
    let send = catalog::find("email_send").unwrap();
    assert_exact(&fake, &lake, send, START, t(END)).await;
}

/// A killed run left `_jobs/` records for `email_send` (one job for the window this run
/// reads first, one for a window it does not read, one too old to follow) and for
/// `email_open`, which this run does not sync; another client runs a job of `email_send`'s
/// data type over the very window this run reads first, unrecorded. A run of `email_send`
/// alone follows the young job of its window, cancels `email_open`'s and the old one before
/// it starts any job (they hold Iterable's slots), cancels or forgets the rest at its end,
/// never touches the unrecorded job, and leaves no record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_run_s_jobs_of_every_stream_are_followed_or_cancelled_and_no_other_job() {
    let dir = tempfile::tempdir().unwrap();
    killed_run_s_jobs(15, LakeStore::open(dir.path().to_str().unwrap()).unwrap()).await;
    let Some(s3) = support::require_s3() else {
        return;
    };
    let bucket = s3.new_bucket().await;
    killed_run_s_jobs(16, LakeStore::open(&bucket.s3_url("lake")).unwrap()).await;
}

async fn killed_run_s_jobs(seed: u64, lake: LakeStore) {
    let mut cfg = FakeConfig::small(seed);
    // Jobs that run long enough to be still running when the run starts.
    cfg.jobs.run_time = Duration::from_secs(4);
    // The data clock is the wall clock, so that the job list's instants order the run's
    // requests.
    let fake = FakeIterable::start(cfg).await.unwrap();
    let day = |d: i64| Window {
        start: t(START).timestamp_micros() + d * 86_400_000_000,
        end: t(START).timestamp_micros() + (d + 1) * 86_400_000_000,
    };
    let young = TimeDelta::minutes(5);
    let mut other_stream = Vec::new();
    for d in 0..2 {
        let job = start_job(&fake, "emailOpen", day(d)).await;
        record_job(&lake, "email_open", job, day(d), young).await;
        other_stream.push(job);
    }
    let unrecorded = start_job(&fake, "emailSend", day(0)).await;
    let old = start_job(&fake, "emailSend", day(0)).await;
    record_job(&lake, "email_send", old, day(0), TimeDelta::hours(7)).await;
    let followed = start_job(&fake, "emailSend", day(0)).await;
    record_job(&lake, "email_send", followed, day(0), young).await;
    let half = Window {
        end: day(0).start + 43_200_000_000,
        ..day(0)
    };
    let unread = start_job(&fake, "emailSend", half).await;
    record_job(&lake, "email_send", unread, half, young).await;
    let before = fake_jobs(&fake).await;
    assert!(
        before
            .values()
            .all(|j| ["Enqueued", "Running"].contains(&state_of(j).as_str())),
        "{before:?}"
    );
    let starts = fake.requests("/api/export/start");

    let mut opts = jobs_options(&["email_send"], END);
    opts.window.initial_days = 1;
    let report = run_ok(&lake, fake_client(&fake, 2), opts).await;
    let send = catalog::find("email_send").unwrap();
    assert_exact(&fake, &lake, send, START, t(END)).await;

    let after = fake_jobs(&fake).await;
    let started: Vec<&Value> = after.range(unread + 1..).map(|(_, j)| j).collect();
    assert_eq!(
        fake.requests("/api/export/start") - starts,
        report.export_jobs.started,
        "the run's own starts"
    );
    assert_eq!(started.len() as u64, report.export_jobs.started);
    let first_start = started
        .iter()
        .map(|j| instant_of(j, "scheduledStartTime"))
        .min()
        .expect("the run started jobs for its later windows");
    for job in other_stream.iter().chain([&old]) {
        let j = &after[job];
        assert_eq!(state_of(j), "Failed", "cancelled: {j}");
        assert!(
            instant_of(j, "endTime") <= first_start,
            "cancelled before the run started a job: {j}"
        );
    }
    assert!(
        report.export_jobs.cancelled >= 3,
        "the run reports the jobs it cancelled: {:?}",
        report.export_jobs
    );
    assert_eq!(state_of(&after[&followed]), "Completed");
    assert!(
        fake.requests(&format!("/api/export/{followed}/files")) > 0,
        "the young job of the run's first window is followed"
    );
    assert_eq!(
        fake.requests(&format!("/api/export/{unrecorded}")),
        0,
        "the unrecorded job is neither polled nor cancelled"
    );
    assert_ne!(state_of(&after[&unrecorded]), "Failed");
    assert!(
        !["Enqueued", "Running"].contains(&state_of(&after[&unread]).as_str()),
        "the job of a window the run did not read is cancelled at its end, if still running"
    );
    assert_no_record(&lake).await;
}

/// A key that may read data.json but not start export jobs (401 or 403 on `export/start`):
/// under `auto` the backfill reads through data.json, exact, locally and on moto S3; under
/// `jobs` the streams fail, saying why, and commit nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_refused_export_jobs_backfills_through_data_json_under_auto() {
    for (seed, status) in [(17, 401), (18, 403)] {
        let mut cfg = FakeConfig::small(seed);
        cfg.faults.jobs_denied = Some(status);
        let fake = FakeIterable::start(cfg).await.unwrap();
        let streams = ["email_send", "email_open"];

        let dir = tempfile::tempdir().unwrap();
        let mut lakes = vec![LakeStore::open(dir.path().to_str().unwrap()).unwrap()];
        let bucket = match support::require_s3() {
            Some(s3) => Some(s3.new_bucket().await),
            None => None,
        };
        lakes.extend(bucket.map(|b| LakeStore::open(&b.s3_url("lake")).unwrap()));
        for lake in &lakes {
            let (starts, streamed) = (
                fake.requests("/api/export/start"),
                fake.requests("/api/export/data.json"),
            );
            let mut opts = jobs_options(&streams, END);
            opts.export_api = ExportApi::Auto;
            let report = run_ok(lake, fake_client(&fake, 2), opts).await;
            for s in streams {
                assert_exact(&fake, lake, catalog::find(s).unwrap(), START, t(END)).await;
            }
            assert_eq!(report.export_jobs.started, 0);
            assert!(
                fake.requests("/api/export/start") > starts,
                "jobs were tried"
            );
            assert!(fake.requests("/api/export/data.json") >= streamed + 2);
        }

        let dir = tempfile::tempdir().unwrap();
        let lake = LakeStore::open(dir.path().to_str().unwrap()).unwrap();
        let report = sync::run(
            lake.clone(),
            fake_client(&fake, 2),
            jobs_options(&streams, END),
        )
        .await
        .unwrap();
        for s in &report.streams {
            assert!(
                matches!(&s.status, StreamStatus::Failed(e) if e.contains("may not use export jobs")),
                "{}: {:?}",
                s.stream,
                s.status
            );
            assert_eq!(s.commits, 0);
        }
    }
}
