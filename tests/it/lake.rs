//! Shared by the sync tests: a client of the fake, and reading a lake back (the live files
//! the manifest names, as record batches).

use std::time::Duration;

use arrow::record_batch::RecordBatch;
use iterable_lake::api::{ApiClient, ApiKey, ClientConfig, RetryPolicy};
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
