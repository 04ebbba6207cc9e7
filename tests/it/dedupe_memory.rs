//! The memory a deduped bucket's merge takes, on a realistic bucket: 200,000 users in one
//! bucket, synced in two runs, the second merging the changed users into the whole bucket.
//! Slow in a debug build, so ignored by default; measure it with
//! `/usr/bin/time -v <the it binary> --ignored --exact dedupe_memory::a_big_bucket_merges_in_bounded_memory --nocapture`
//! (it prints its own peak RSS too). `DEDUPE_MEMORY_MIB` sets the merge's memory
//! (`SyncOptions::dedupe_memory`; default: the option's default).

use chrono::{DateTime, Duration, Utc};
use iterable_lake::catalog::{self, SyncMode};
use iterable_lake::fake::{FakeConfig, FakeIterable};
use iterable_lake::manifest::Manifest;
use iterable_lake::sink::LakeStore;
use iterable_lake::sync::{self, StreamStatus, SyncOptions};

use crate::lake::fake_client;

/// The process's peak resident memory so far, in MiB (Linux's `VmHWM`).
fn peak_rss_mib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb / 1024)
}

async fn sync_at(fake: &FakeIterable, lake: &LakeStore, now: DateTime<Utc>) {
    fake.set_now(now);
    let mut o = SyncOptions::new(vec![catalog::find("users").unwrap()]);
    o.start = Some("2023-09-01T00:00:00Z".parse().unwrap());
    o.now = now;
    o.lag = Duration::zero();
    o.lookback_days = 0;
    o.mode = Some(SyncMode::IncrementalDeduped);
    o.dedupe_buckets = 1;
    o.window.initial_days = 150;
    if let Some(mib) = std::env::var("DEDUPE_MEMORY_MIB")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
    {
        o.dedupe_memory = mib << 20;
    }
    let report = sync::run(lake.clone(), fake_client(fake, 8), o)
        .await
        .unwrap();
    let s = &report.streams[0];
    assert_eq!(s.status, StreamStatus::Succeeded, "{s:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a memory measurement: 200,000 users, about two minutes in a debug build"]
async fn a_big_bucket_merges_in_bounded_memory() {
    let fake = FakeIterable::start(FakeConfig {
        users: 200_000,
        events_per_day: 1,
        ..FakeConfig::small(31)
    })
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let lake = LakeStore::open(dir.path().to_str().unwrap()).unwrap();
    let start = fake.config().start;
    let (first, second) = (start + Duration::days(1), start + Duration::days(3));
    sync_at(&fake, &lake, first).await;
    sync_at(&fake, &lake, second).await;
    println!("peak RSS after both runs: {} MiB", peak_rss_mib());
    let manifest = Manifest::load(&lake).await.unwrap();
    let state = &manifest.streams["users"];
    let rows: u64 = state.files.iter().map(|f| f.file.rows).sum();
    let bytes: u64 = state.files.iter().map(|f| f.file.bytes).sum();
    println!("the bucket: {rows} rows, {} MiB of Parquet", bytes >> 20);
    let want: u64 = fake
        .truth_counts("user", "2023-01-01T00:00:00Z".parse().unwrap(), second)
        .values()
        .sum();
    assert_eq!(rows, want, "one row per user");
}
