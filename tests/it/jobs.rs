//! Export streams read through Iterable's export jobs (`--export-api jobs`/`auto`) from the
//! fake over HTTP: exact against the fake's truth, the key never sent with a file, and jobs
//! recorded in the lake until their windows are done.

use std::time::Duration;

use iterable_lake::catalog;
use iterable_lake::fake::{FakeConfig, FakeIterable};
use iterable_lake::sink::LakeStore;
use iterable_lake::sync::{self, ExportApi, StreamStatus, SyncOptions};

use crate::export_sync::{START, assert_exact, options, t};
use crate::lake::fake_client;

/// Options reading through jobs, polling fast (the fake's jobs move one step per poll).
fn jobs_options(streams: &[&str], now: &str) -> SyncOptions {
    let streams = streams.iter().map(|s| catalog::find(s).unwrap()).collect();
    let mut o = options(streams, START, t(now));
    o.export_api = ExportApi::Jobs;
    o.jobs.poll_min = Duration::from_millis(20);
    o.jobs.poll_max = Duration::from_millis(100);
    o
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_export_stream_through_jobs_lands_exactly_once_on_local_disk() {
    let fake = FakeIterable::start(FakeConfig {
        job_file_bytes: 4 << 10,
        ..FakeConfig::small(3)
    })
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let lake = LakeStore::open(dir.path().to_str().unwrap()).unwrap();
    let end = "2024-01-04T00:00:00Z";
    fake.set_now(t(end));
    let names: Vec<&str> = catalog::export_streams().map(|s| s.name).collect();
    let report = sync::run(
        lake.clone(),
        fake_client(&fake, 4),
        jobs_options(&names, end),
    )
    .await
    .unwrap();
    for s in &report.streams {
        assert_eq!(s.status, StreamStatus::Succeeded, "{}", s.stream);
    }
    for s in catalog::export_streams() {
        assert_exact(&fake, &lake, s, START, t(end)).await;
    }
    assert_eq!(fake.requests("/api/export/data.json"), 0);
    let jobs = &report.export_jobs;
    assert!(
        jobs.started >= 51 && jobs.completed == jobs.started,
        "{jobs:?}"
    );
    assert!(
        jobs.files > jobs.completed,
        "files split at 4 KiB: {jobs:?}"
    );
    assert!(
        !dir.path().join("_jobs").exists()
            || std::fs::read_dir(dir.path().join("_jobs"))
                .unwrap()
                .all(|d| std::fs::read_dir(d.unwrap().path()).unwrap().count() == 0),
        "every job record is deleted once its window is read"
    );
}
