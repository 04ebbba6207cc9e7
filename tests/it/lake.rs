//! Shared by the sync tests: a client of the fake, and reading a lake back (the live files
//! the manifest names, as record batches).

use std::collections::BTreeSet;
use std::time::Duration;

use arrow::record_batch::RecordBatch;
use futures::TryStreamExt;
use iterable_lake::api::{ApiClient, ApiKey, ClientConfig, RetryPolicy};
use iterable_lake::delta::{LOG_DIR, Table};
use iterable_lake::fake::FakeIterable;
use iterable_lake::manifest::{LiveFile, Manifest};
use iterable_lake::sink::LakeStore;
use object_store::ObjectStoreExt;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

/// Every live file of `stream` with its rows, checking each file's row count against the
/// manifest.
pub async fn live_batches(lake: &LakeStore, stream: &str) -> Vec<(LiveFile, Vec<RecordBatch>)> {
    let manifest = Manifest::load(lake).await.unwrap();
    let Some(state) = manifest.streams.get(stream) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for f in &state.files {
        let bytes = lake
            .store
            .get(&lake.path(&f.file.path))
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        let batches: Vec<RecordBatch> = ParquetRecordBatchReaderBuilder::try_new(bytes)
            .unwrap()
            .build()
            .unwrap()
            .map(Result::unwrap)
            .collect();
        let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
        assert_eq!(rows as u64, f.file.rows, "{}", f.file.path);
        out.push((f.clone(), batches));
    }
    out
}

/// A client of the fake with no practical rate limits and short backoffs, retrying
/// `retries` times.
pub fn fake_client(fake: &FakeIterable, retries: u32) -> ApiClient {
    fake_client_with(fake, retries, |_| {})
}

/// [`fake_client`] with `edit` applied to its configuration.
pub fn fake_client_with(
    fake: &FakeIterable,
    retries: u32,
    edit: impl FnOnce(&mut ClientConfig),
) -> ApiClient {
    let key = ApiKey::new(fake.config().api_key.clone()).unwrap();
    let mut cfg = ClientConfig::new(fake.base_url().parse().unwrap(), key);
    cfg.export_requests_per_minute = 60_000;
    cfg.list_users_requests_per_minute = 60_000;
    cfg.metrics_requests_per_minute = 60_000;
    cfg.export_job_requests_per_second = 1000;
    cfg.retry = RetryPolicy {
        max_retries: retries,
        base_delay: Duration::from_millis(10),
        max_delay: Duration::from_millis(100),
    };
    edit(&mut cfg);
    ApiClient::new(cfg).unwrap()
}

/// Every object in `stream`'s folder is a file the manifest names (live, or retired and kept
/// for readers of older Delta versions) or an entry of the stream's Delta log, and every live
/// file is there. With a log, the Delta table names exactly the live files; without one,
/// nothing retired is left (a plain lake deletes replaced files after its commit), so glob
/// readers see exactly the data.
pub async fn assert_only_named_files(lake: &LakeStore, manifest: &Manifest, stream: &str) {
    let state = manifest.streams.get(stream);
    let live: BTreeSet<String> = state
        .iter()
        .flat_map(|s| s.files.iter().map(|f| f.file.path.clone()))
        .collect();
    let retired: BTreeSet<String> = state
        .iter()
        .flat_map(|s| s.retired.iter().map(|r| r.path.clone()))
        .collect();
    let log_prefix = format!("{stream}/{LOG_DIR}/");
    let (log, data): (Vec<String>, Vec<String>) = lake
        .store
        .list(Some(&lake.path(stream)))
        .map_ok(|m| lake.relative(&m.location))
        .try_collect::<Vec<_>>()
        .await
        .unwrap()
        .into_iter()
        .partition(|p| p.starts_with(&log_prefix));
    let data: BTreeSet<String> = data.into_iter().collect();
    let named: BTreeSet<String> = live.union(&retired).cloned().collect();
    assert!(
        data.is_subset(&named),
        "{stream}: named by no manifest: {:?}",
        data.difference(&named).collect::<Vec<_>>()
    );
    assert!(
        live.is_subset(&data),
        "{stream}: live files missing: {:?}",
        live.difference(&data).collect::<Vec<_>>()
    );
    if log.is_empty() {
        assert!(
            retired.is_empty(),
            "{stream}: a plain lake kept {retired:?}"
        );
    } else {
        let table = Table::open(lake, stream).await.unwrap();
        let in_table: BTreeSet<String> = table.paths().collect();
        assert_eq!(
            in_table, live,
            "{stream}: the Delta table names the live files"
        );
    }
}
