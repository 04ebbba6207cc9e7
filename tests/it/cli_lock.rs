//! End-to-end tests of running operations: two syncs of one lake (the lake's lock), a stale
//! lock and a killed run's leftovers, Ctrl-C mid-run, and `--dry-run`, each running the real
//! binary against the fake API.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use iterable_lake::catalog;
use iterable_lake::fake::{FakeConfig, FakeIterable, Faults};
use iterable_lake::manifest::Manifest;
use iterable_lake::sink::LakeStore;
use serde_json::Value;

use crate::bin::{BIN, run_report, text, unlimited};
use crate::lake::assert_only_named_files;

const START: &str = "2024-01-01T00:00:00Z";
const END: &str = "2024-01-04T00:00:00Z";

/// A fake with a few days of data, no rate limit, every response delayed by `latency_ms`.
async fn fake(seed: u64, latency_ms: u64) -> FakeIterable {
    let mut cfg = FakeConfig::small(seed);
    cfg.faults = Faults {
        export_rate: None,
        latency: Some(Duration::from_millis(latency_ms)),
        ..Faults::default()
    };
    let fake = FakeIterable::start(cfg).await.unwrap();
    fake.set_now(END.parse().unwrap());
    fake
}

/// `sync` of every stream into `dest` from `fake`, reading through `end`, then `extra`.
fn sync_args(fake: &FakeIterable, dest: &Path, end: &str, extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = unlimited(&[
        "sync",
        "--dest",
        dest.to_str().unwrap(),
        "--base-url",
        &fake.base_url(),
        "--start-date",
        "2024-01-01",
        "--end-date",
        end,
        "--lag",
        "0",
        "--log-format",
        "json",
    ])
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

fn command(fake: &FakeIterable, args: &[String]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .env_remove("RUST_LOG")
        .env("ITERABLE_API_KEY", &fake.config().api_key)
        .env("NO_COLOR", "1");
    cmd
}

/// Run to the end, off the async runtime so the in-process fake keeps serving.
async fn run(fake: &FakeIterable, args: Vec<String>) -> Output {
    let mut cmd = command(fake, &args);
    tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap()
}

fn spawn(fake: &FakeIterable, args: &[String]) -> Child {
    command(fake, args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

async fn wait_output(child: Child) -> Output {
    tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
        .await
        .unwrap()
}

fn files_in(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for p in entries.map(|e| e.unwrap().path()) {
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// The leases in the lake's `_lock` folder (one released between the listing and its read
/// is skipped).
fn leases(lake: &Path) -> Vec<Value> {
    files_in(&lake.join("_lock"))
        .iter()
        .filter_map(|p| std::fs::read(p).ok())
        .map(|b| serde_json::from_slice(&b).unwrap())
        .collect()
}

/// Poll `cond` every 20 ms for up to a minute, off the runtime.
async fn wait_until(cond: impl Fn() -> bool + Send + 'static) {
    tokio::task::spawn_blocking(move || {
        let t0 = Instant::now();
        while !cond() {
            assert!(t0.elapsed() < Duration::from_secs(60), "timed out");
            std::thread::sleep(Duration::from_millis(20));
        }
    })
    .await
    .unwrap();
}

/// Whether the newest manifest version's text contains `needle`.
fn newest_manifest_names(lake: &Path, needle: &str) -> bool {
    files_in(&lake.join("_manifest"))
        .last()
        .and_then(|p| std::fs::read_to_string(p).ok())
        .is_some_and(|m| m.contains(needle))
}

fn commits(lake: &Path) -> usize {
    files_in(&lake.join("_manifest")).len()
}

async fn manifest(lake: &Path) -> Manifest {
    Manifest::load(&LakeStore::open(lake.to_str().unwrap()).unwrap())
        .await
        .unwrap()
}

/// Every file under the lake's stream folders is one the manifest names or a Delta log entry,
/// and no stream folder is left that the manifest does not know.
async fn assert_only_live_files(lake: &Path, manifest: &Manifest) {
    let store = LakeStore::open(lake.to_str().unwrap()).unwrap();
    for p in files_in(lake) {
        let rel = p.strip_prefix(lake).unwrap().to_str().unwrap();
        let top = rel.split('/').next().unwrap();
        assert!(
            ["_manifest", "_runs"].contains(&top) || manifest.streams.contains_key(top),
            "{rel} is in no stream's folder"
        );
    }
    for stream in manifest.streams.keys() {
        assert_only_named_files(&store, manifest, stream).await;
    }
}

/// Each export stream's live rows equal what the fake holds before its cursor.
fn assert_exact(fake: &FakeIterable, manifest: &Manifest, all: bool) {
    let mut checked = 0;
    for s in catalog::export_streams() {
        let Some(state) = manifest.streams.get(s.name) else {
            assert!(!all, "{} was not synced", s.name);
            continue;
        };
        // A stream can be in the manifest before its first unit commits (users records its
        // custom fields first): then it holds no rows yet.
        let Some(cursor) = state.cursor else {
            assert!(!all, "{} was not synced", s.name);
            assert_eq!(state.rows(), 0, "{} has rows but no cursor", s.name);
            continue;
        };
        let want: u64 = fake
            .truth_counts(s.data_type(), START.parse().unwrap(), cursor)
            .values()
            .sum();
        assert_eq!(state.rows(), want, "{}", s.name);
        checked += 1;
    }
    assert!(checked > 0);
}

fn time(v: &Value) -> chrono::DateTime<chrono::Utc> {
    v.as_str().unwrap().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_sync_fails_at_once_naming_the_first_or_waits_for_it() {
    let fake = fake(31, 100).await;
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    let first = spawn(&fake, &sync_args(&fake, &lake, END, &[]));
    let l = lake.clone();
    wait_until(move || newest_manifest_names(&l, "\"email_send\"")).await;
    let held = leases(&lake);
    assert_eq!(held.len(), 1, "{held:?}");
    let holder = held[0]["run_id"].as_str().unwrap().to_string();
    assert_eq!(held[0]["pid"].as_u64(), Some(u64::from(first.id())));

    let t0 = Instant::now();
    let second = run(&fake, sync_args(&fake, &lake, END, &[])).await;
    assert_eq!(second.status.code(), Some(75), "{}", text(&second));
    let msg = text(&second);
    assert!(
        msg.contains(&format!("locked by run {holder} on host ")) && msg.contains("started 2"),
        "{msg}"
    );
    assert!(t0.elapsed() < Duration::from_secs(10), "it failed at once");
    let reset = run(
        &fake,
        [
            "state",
            "--dest",
            lake.to_str().unwrap(),
            "reset",
            "email_send",
        ]
        .map(String::from)
        .to_vec(),
    )
    .await;
    assert_eq!(reset.status.code(), Some(75), "{}", text(&reset));
    assert!(text(&reset).contains(&format!("locked by run {holder}")));

    let third = run(
        &fake,
        sync_args(&fake, &lake, END, &["--wait-for-lock", "2m"]),
    )
    .await;
    let first = wait_output(first).await;
    assert_eq!(first.status.code(), Some(0), "{}", text(&first));
    assert_eq!(third.status.code(), Some(0), "{}", text(&third));
    let first_done = time(&run_report(&lake, &first)["finished_at"]);
    let third_logs = String::from_utf8_lossy(&third.stderr).into_owned();
    assert!(
        third_logs.contains("another run holds the lake; waiting for it"),
        "{third_logs}"
    );
    let held_at = third_logs
        .lines()
        .filter(|l| l.contains("holding the lake's lease"))
        .map(|l| time(&serde_json::from_str::<Value>(l).unwrap()["timestamp"]))
        .next()
        .expect("the waiting run took the lease");
    assert!(
        held_at >= first_done,
        "the waiting run went on after the first finished"
    );
    let m = manifest(&lake).await;
    assert_exact(&fake, &m, true);
    assert_only_live_files(&lake, &m).await;
    assert!(leases(&lake).is_empty(), "the lock is released");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_lock_or_a_killed_run_does_not_block_the_lake_and_its_leftovers_go() {
    let fake = fake(32, 100).await;
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");

    // A lease of a run on another host that stopped renewing it long ago.
    std::fs::create_dir_all(lake.join("_lock")).unwrap();
    let stale = serde_json::json!({
        "run_id": "20200101T000000Z-abcdef", "host": "gone-host", "pid": 1,
        "started_at": "2020-01-01T00:00:00Z", "renewed_at": "2020-01-01T00:00:00Z",
        "expires_at": "2020-01-01T00:05:00Z"
    });
    let stale_lease = lake.join("_lock/lease-00000000000000000004.json");
    std::fs::write(&stale_lease, stale.to_string()).unwrap();
    // Leases are judged by when the store last saw them written, not by the holder's clock.
    std::fs::File::options()
        .write(true)
        .open(&stale_lease)
        .unwrap()
        .set_modified(std::time::SystemTime::now() - Duration::from_secs(3600))
        .unwrap();
    let mut killed = spawn(&fake, &sync_args(&fake, &lake, END, &[]));
    let l = lake.clone();
    wait_until(move || commits(&l) >= 3).await;
    assert_eq!(leases(&lake).len(), 1, "the stale lease was taken over");
    Command::new("kill")
        .args(["-9", &killed.id().to_string()])
        .status()
        .unwrap();
    tokio::task::spawn_blocking(move || killed.wait().unwrap())
        .await
        .unwrap();
    assert_eq!(leases(&lake).len(), 1, "a killed run leaves its lease");
    // A file of the killed run that no manifest names, written just now.
    let m = manifest(&lake).await;
    assert!(m.streams.len() < catalog::STREAMS.len(), "killed mid-run");
    let leftover =
        lake.join("email_send/date=2024-01-02/part-20240105T010203Z-0a1b2c-00000.parquet");
    std::fs::create_dir_all(leftover.parent().unwrap()).unwrap();
    std::fs::write(&leftover, b"PAR1 half a file").unwrap();
    let staging = lake.join("users/date=2024-01-02/part-20240105T010203Z-0a1b2c-00001.parquet#3");
    std::fs::create_dir_all(staging.parent().unwrap()).unwrap();
    std::fs::write(&staging, b"half an upload").unwrap();

    let again = run(&fake, sync_args(&fake, &lake, END, &[])).await;
    assert_eq!(again.status.code(), Some(0), "{}", text(&again));
    assert!(!leftover.exists() && !staging.exists());
    let m = manifest(&lake).await;
    assert_exact(&fake, &m, true);
    assert_only_live_files(&lake, &m).await;
    assert!(leases(&lake).is_empty(), "the lock is released");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_stops_after_the_units_in_flight_and_reports() {
    let fake = fake(33, 150).await;
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    let child = spawn(
        &fake,
        &sync_args(&fake, &lake, END, &["--concurrency", "2"]),
    );
    let l = lake.clone();
    wait_until(move || commits(&l) >= 2).await;
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let out = wait_output(child).await;
    assert_eq!(out.status.code(), Some(130), "{}", text(&out));
    assert!(
        text(&out).contains("interrupted: finishing"),
        "{}",
        text(&out)
    );
    let r = run_report(&lake, &out);
    assert_eq!(r["interrupted"], true);
    let statuses: Vec<&str> = r["streams"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["status"].as_str().unwrap())
        .collect();
    assert!(statuses.contains(&"interrupted"), "{statuses:?}");
    assert!(statuses.contains(&"succeeded"), "{statuses:?}");
    assert!(
        !statuses.iter().any(|s| s.starts_with("failed")),
        "{statuses:?}"
    );
    let m = manifest(&lake).await;
    assert!(m.streams.len() < catalog::STREAMS.len(), "stopped early");
    assert_exact(&fake, &m, false);
    assert_only_live_files(&lake, &m).await;
    assert!(leases(&lake).is_empty(), "the lock is released");
    for s in r["streams"].as_array().unwrap() {
        if s["status"] == "succeeded" && s["cursor"].is_string() {
            assert!(s["behind_seconds"].as_i64().unwrap() > 0, "{s}");
        }
    }
    let state = run(
        &fake,
        vec![
            "state".into(),
            "--dest".into(),
            lake.to_str().unwrap().into(),
        ],
    )
    .await;
    assert_eq!(state.status.code(), Some(0), "{}", text(&state));
    let shown = String::from_utf8_lossy(&state.stdout).into_owned();
    let run_id = r["run_id"].as_str().unwrap();
    assert!(
        shown.contains(&format!("last run {run_id}: ")) && shown.contains(", interrupted;"),
        "{shown}"
    );
    assert!(
        shown
            .lines()
            .any(|l| l.starts_with("email_send") && l.contains("succeeded") && l.contains('d')),
        "{shown}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_report_counts_each_streams_429s_and_waits() {
    let mut cfg = FakeConfig::small(35);
    cfg.faults = Faults {
        export_rate: Some((1, Duration::from_millis(500))),
        retry_after: true,
        ..Faults::default()
    };
    let fake = FakeIterable::start(cfg).await.unwrap();
    fake.set_now(END.parse().unwrap());
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    let out = run(
        &fake,
        sync_args(
            &fake,
            &lake,
            END,
            &[
                "--streams",
                "email_send,email_open,email_click",
                "--concurrency",
                "3",
            ],
        ),
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let r = run_report(&lake, &out);
    let streams = r["streams"].as_array().unwrap();
    let per_stream: u64 = streams
        .iter()
        .map(|s| s["rate_limited"].as_u64().unwrap())
        .sum();
    assert!(per_stream > 0, "{r}");
    assert_eq!(per_stream, r["rate_limited"].as_u64().unwrap());
    assert_eq!(per_stream, fake.rate_limited());
    let waited: f64 = streams
        .iter()
        .map(|s| s["rate_limit_wait_seconds"].as_f64().unwrap())
        .sum();
    assert!(waited > 0.0, "{r}");
    assert!((waited - r["rate_limit_wait_seconds"].as_f64().unwrap()).abs() < 0.01);
    assert_exact(&fake, &manifest(&lake).await, false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_run_prints_the_windows_and_touches_neither_the_api_nor_the_lake() {
    let fake = fake(34, 0).await;
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    let streams = ["--streams", "email_send,users,lists"];
    let dry = |end: &str| {
        let mut extra = streams.to_vec();
        extra.push("--dry-run");
        sync_args(&fake, &lake, end, &extra)
    };

    let fresh = run(&fake, dry(END)).await;
    assert_eq!(fresh.status.code(), Some(0), "{}", text(&fresh));
    let out = String::from_utf8_lossy(&fresh.stdout).into_owned();
    assert!(
        out.contains("email_send: incremental from 2024-01-01T00:00:00+00:00 (--start-date (no cursor yet)) to 2024-01-04T00:00:00+00:00"),
        "{out}"
    );
    assert!(
        out.contains("  first unit [2024-01-01 00:00:00, 2024-01-04 00:00:00) (3.00 day(s))"),
        "{out}"
    );
    assert!(out.contains("sized at run time"), "{out}");
    assert!(
        out.contains("lists: full-refresh-overwrite snapshot, one read of GET /api/lists"),
        "{out}"
    );
    assert!(fake.requests("/api") == 0, "no request");
    assert!(!lake.exists(), "a dry run does not create the lake");

    let real = run(
        &fake,
        sync_args(&fake, &lake, "2024-01-03T00:00:00Z", &streams),
    )
    .await;
    assert_eq!(real.status.code(), Some(0), "{}", text(&real));
    let requests = fake.requests("/api");
    assert!(fake.requests("/api/export/data.json") > 0);
    let before: Vec<(PathBuf, u64)> = files_in(&lake)
        .into_iter()
        .map(|p| {
            let len = p.metadata().unwrap().len();
            (p, len)
        })
        .collect();

    let with_cursor = run(&fake, dry(END)).await;
    assert_eq!(with_cursor.status.code(), Some(0), "{}", text(&with_cursor));
    let out = String::from_utf8_lossy(&with_cursor.stdout).into_owned();
    assert!(
        out.contains("email_send: incremental from 2024-01-02T00:00:00+00:00 (cursor 2024-01-03T00:00:00+00:00 minus 1 lookback day(s)) to 2024-01-04T00:00:00+00:00"),
        "{out}"
    );
    assert!(
        out.contains("  first unit [2024-01-02 00:00:00, 2024-01-04 00:00:00) (2.00 day(s))"),
        "{out}"
    );
    assert_eq!(fake.requests("/api"), requests, "no request");
    let after: Vec<(PathBuf, u64)> = files_in(&lake)
        .into_iter()
        .map(|p| {
            let len = p.metadata().unwrap().len();
            (p, len)
        })
        .collect();
    assert_eq!(before, after, "nothing written");

    let up_to_date = run(&fake, dry("2024-01-03T00:00:00Z")).await;
    let out = String::from_utf8_lossy(&up_to_date.stdout).into_owned();
    assert!(
        out.contains("email_send: incremental, up to date (cursor 2024-01-03T00:00:00+00:00)"),
        "{out}"
    );
    assert_eq!(fake.requests("/api"), requests, "no request");
}

/// A sync's command line under `unshare --pid --fork --mount-proc`: its own PID namespace,
/// as a second container on the same host would have.
fn in_new_pid_namespace(fake: &FakeIterable, args: &[String]) -> Command {
    let mut cmd = Command::new("unshare");
    cmd.args(["--pid", "--fork", "--mount-proc", BIN])
        .args(args)
        .env_remove("RUST_LOG")
        .env("ITERABLE_API_KEY", &fake.config().api_key)
        .env("NO_COLOR", "1");
    cmd
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sync_in_another_pid_namespace_does_not_take_a_live_lease() {
    let fake = fake(36, 100).await;
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    let first = spawn(&fake, &sync_args(&fake, &lake, END, &[]));
    let l = lake.clone();
    wait_until(move || commits(&l) >= 1).await;
    let holder = leases(&lake)[0]["run_id"].as_str().unwrap().to_string();
    // In its own namespace the first run's pid does not exist: that proves nothing.
    let mut cmd = in_new_pid_namespace(&fake, &sync_args(&fake, &lake, END, &[]));
    let second = tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap();
    assert_eq!(second.status.code(), Some(75), "{}", text(&second));
    assert!(
        text(&second).contains(&format!("locked by run {holder}")),
        "{}",
        text(&second)
    );
    let first = wait_output(first).await;
    assert_eq!(first.status.code(), Some(0), "{}", text(&first));
    let m = manifest(&lake).await;
    assert_exact(&fake, &m, true);
    assert_only_live_files(&lake, &m).await;
}

/// Every file the newest manifest names is in the lake.
fn assert_named_files_exist(lake: &Path, manifest: &Manifest) {
    for p in manifest.live_paths() {
        assert!(
            lake.join(p).is_file(),
            "the manifest names {p}, which is missing"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_holder_frozen_past_its_lease_commits_nothing_after_a_takeover() {
    let fake = fake(37, 60).await;
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    let ttl = [(iterable_lake::lock::LEASE_TTL_ENV, "2")];
    let mut first_cmd = command(
        &fake,
        &sync_args(&fake, &lake, END, &["--concurrency", "1"]),
    );
    first_cmd
        .envs(ttl)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let first = first_cmd.spawn().unwrap();
    let l = lake.clone();
    wait_until(move || commits(&l) >= 3).await;
    let pid = first.id().to_string();
    let signal = |sig: &str| {
        let ok = Command::new("kill").args([sig, &pid]).status().unwrap();
        assert!(ok.success(), "kill {sig}");
    };
    signal("-STOP");
    tokio::time::sleep(Duration::from_secs(3)).await;
    // The lease expired by the store's clock: a second run takes the lake over.
    let mut second_cmd = command(
        &fake,
        &sync_args(&fake, &lake, END, &["--concurrency", "1"]),
    );
    second_cmd
        .envs(ttl)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let second = second_cmd.spawn().unwrap();
    let second_pid = u64::from(second.id());
    let l = lake.clone();
    wait_until(move || {
        leases(&l)
            .iter()
            .any(|x| x["pid"].as_u64() == Some(second_pid))
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    signal("-CONT");
    let first = wait_output(first).await;
    let second = wait_output(second).await;
    assert_eq!(second.status.code(), Some(0), "{}", text(&second));
    assert_eq!(first.status.code(), Some(1), "{}", text(&first));
    assert!(
        text(&first).contains("no longer holds the lake's lease"),
        "{}",
        text(&first)
    );
    assert_eq!(run_report(&lake, &first)["lease_lost"], true);
    let m = manifest(&lake).await;
    assert_named_files_exist(&lake, &m);
    assert_exact(&fake, &m, true);
    // What the frozen run wrote after it woke is garbage the next run removes.
    let again = run(&fake, sync_args(&fake, &lake, END, &[])).await;
    assert_eq!(again.status.code(), Some(0), "{}", text(&again));
    let m = manifest(&lake).await;
    assert_exact(&fake, &m, true);
    assert_only_live_files(&lake, &m).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_the_tool_did_not_write_are_never_deleted() {
    let fake = fake(38, 0).await;
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    let put = |rel: &str, body: &[u8]| {
        let p = lake.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, body).unwrap();
        p
    };
    // A prefix that holds someone else's files, with no manifest: refused, nothing touched.
    let notes = put("users/notes.txt", b"mine");
    let data = put("email_send/2023/data.json", b"{}");
    let before = files_in(&lake);
    let out = run(&fake, sync_args(&fake, &lake, END, &[])).await;
    assert_eq!(out.status.code(), Some(64), "{}", text(&out));
    let msg = text(&out);
    assert!(
        msg.contains("email_send/2023/data.json") && msg.contains("users/notes.txt"),
        "{msg}"
    );
    assert!(msg.contains("empty prefix"), "{msg}");
    assert_eq!(files_in(&lake), before, "nothing written, nothing deleted");
    assert_eq!(fake.requests("/api"), 0);

    // Next to a lake of the tool's, foreign files stay; its own leftovers go.
    std::fs::remove_dir_all(&lake).unwrap();
    let first = run(&fake, sync_args(&fake, &lake, "2024-01-03T00:00:00Z", &[])).await;
    assert_eq!(first.status.code(), Some(0), "{}", text(&first));
    let foreign = [
        put("users/notes.txt", b"mine"),
        put("email_send/2023/data.json", b"{}"),
        put(
            "email_send/date=2024-01-02/part-00000-1f2e.snappy.parquet",
            b"PAR1",
        ),
        put("email_send/date=2024-01-02/notes.txt#1", b"x"),
    ];
    let own = [
        put(
            "email_send/date=2024-01-02/part-20240105T010203Z-0a1b2c-00000.parquet",
            b"PAR1",
        ),
        put(
            "users/date=2024-01-02/part-20240105T010203Z-0a1b2c-00001.parquet#3",
            b"x",
        ),
    ];
    let again = run(&fake, sync_args(&fake, &lake, END, &[])).await;
    assert_eq!(again.status.code(), Some(0), "{}", text(&again));
    for f in &foreign {
        assert!(f.is_file(), "{} was deleted", f.display());
    }
    for f in &own {
        assert!(!f.exists(), "{} was left", f.display());
    }
    let logs = text(&again);
    assert_eq!(
        logs.matches("that this tool did not write are left alone")
            .count(),
        1,
        "{logs}"
    );
    assert!(notes.is_file() && data.is_file());
    assert_exact(&fake, &manifest(&lake).await, true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_retries_stops_the_run_in_seconds_and_quarantines_nothing() {
    let healthy = fake(42, 0).await;
    let mut cfg = healthy.config().clone();
    // Every list's getUsers fails: the client retries each for minutes.
    cfg.faults.failing_lists = healthy
        .truth_lists()
        .iter()
        .map(|l| l["id"].as_i64().unwrap())
        .collect();
    let fake = FakeIterable::start(cfg).await.unwrap();
    fake.set_now(END.parse().unwrap());
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    let child = spawn(
        &fake,
        &sync_args(&fake, &lake, END, &["--streams", "events"]),
    );
    let t0 = Instant::now();
    while fake.requests("/api/lists/getUsers") < 2 {
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "no getUsers request"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let pid = child.id().to_string();
    let Ok(out) = tokio::time::timeout(Duration::from_secs(20), wait_output(child)).await else {
        let _ = Command::new("kill").args(["-KILL", &pid]).status();
        panic!("the run did not stop within 20 s of SIGTERM: it waited out its retries");
    };
    assert_eq!(out.status.code(), Some(130), "{}", text(&out));
    let r = run_report(&lake, &out);
    let events = &r["streams"][0];
    assert_eq!(events["status"], "interrupted", "{r}");
    assert_eq!(
        events["quarantined"].as_array().map(Vec::len),
        Some(0),
        "{r}"
    );
    let m = manifest(&lake).await;
    assert!(
        m.streams
            .get("events")
            .is_none_or(|s| s.quarantine.is_empty()),
        "{m:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_staging_and_jobs_only_the_tool_s_leftovers_are_deleted() {
    let fake = fake(41, 0).await;
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    let args = ["--streams", "users", "--mode", "incremental-deduped"];
    let first = run(
        &fake,
        sync_args(&fake, &lake, "2024-01-03T00:00:00Z", &args),
    )
    .await;
    assert_eq!(first.status.code(), Some(0), "{}", text(&first));
    let put = |rel: &str| {
        let p = lake.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, b"x").unwrap();
        p
    };
    let killed = "_staging/20240105T010203Z-0a1b2c/users/bucket=00";
    let foreign = [
        put("_staging/notes.txt"),
        put(&format!("{killed}/notes.parquet")),
        put("_jobs/users/notes.txt"),
        put("_jobs/users/job-7.json.old#1"),
    ];
    let own = [
        put(&format!(
            "{killed}/part-20240105T010203Z-0a1b2c-00000.parquet"
        )),
        put(&format!(
            "{killed}/part-20240105T010203Z-0a1b2c-00001.parquet#2"
        )),
        put("_jobs/users/job-7.json#3"),
    ];
    let again = run(&fake, sync_args(&fake, &lake, END, &args)).await;
    assert_eq!(again.status.code(), Some(0), "{}", text(&again));
    for f in &foreign {
        assert!(f.is_file(), "{} was deleted", f.display());
    }
    for f in &own {
        assert!(!f.exists(), "{} was left", f.display());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_torn_newest_manifest_falls_back_and_that_run_deletes_nothing() {
    let fake = fake(39, 0).await;
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    let streams = ["--streams", "email_send,users"];
    let first = run(
        &fake,
        sync_args(&fake, &lake, "2024-01-03T00:00:00Z", &streams),
    )
    .await;
    assert_eq!(first.status.code(), Some(0), "{}", text(&first));
    // A power loss tore the newest version; a killed run left a file behind.
    let newest = files_in(&lake.join("_manifest")).pop().unwrap();
    let bytes = std::fs::read(&newest).unwrap();
    std::fs::write(&newest, &bytes[..bytes.len() / 3]).unwrap();
    let leftover =
        lake.join("email_send/date=2024-01-02/part-20240105T010203Z-0a1b2c-00000.parquet");
    std::fs::write(&leftover, b"PAR1 half a file").unwrap();

    let second = run(&fake, sync_args(&fake, &lake, END, &streams)).await;
    assert_eq!(second.status.code(), Some(0), "{}", text(&second));
    let logs = text(&second);
    assert!(
        logs.contains("the newest manifest version is unreadable"),
        "{logs}"
    );
    assert!(logs.contains("deleting nothing this run"), "{logs}");
    assert!(leftover.is_file(), "a recovering run deletes nothing");
    let m = manifest(&lake).await;
    assert_named_files_exist(&lake, &m);
    assert_exact(&fake, &m, false);

    let third = run(&fake, sync_args(&fake, &lake, END, &streams)).await;
    assert_eq!(third.status.code(), Some(0), "{}", text(&third));
    assert!(!leftover.exists(), "the next run removes it");
    let m = manifest(&lake).await;
    assert_exact(&fake, &m, false);
    assert_only_live_files(&lake, &m).await;
}
