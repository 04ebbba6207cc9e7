//! Syncs of the list-style streams (lists, list members, campaigns, channels, message types,
//! templates, metadata) from the fake API into real lakes, exact against its ground truth.

use std::collections::BTreeMap;

use arrow::array::{Array, AsArray};
use arrow::datatypes::Int64Type;
use chrono::{DateTime, Utc};
use iterable_lake::api::ApiClient;
use iterable_lake::catalog::{self, Layout, StreamDef, SyncMode};
use iterable_lake::delta::TableFormat;
use iterable_lake::fake::{FakeConfig, FakeIterable};
use iterable_lake::manifest::Manifest;
use iterable_lake::sink::LakeStore;
use iterable_lake::sync::{self, RunReport, StreamStatus, SyncOptions};
use serde_json::Value;

use crate::lake::{assert_only_named_files, fake_client, live_batches};
use crate::support;

const NOW: &str = "2024-01-04T00:00:00Z";

fn snapshot_streams() -> Vec<&'static StreamDef> {
    catalog::STREAMS
        .iter()
        .filter(|s| s.layout != Layout::Dated)
        .collect()
}

fn client(fake: &FakeIterable, retries: u32) -> ApiClient {
    fake_client(fake, retries)
}

async fn sync(fake: &FakeIterable, lake: &LakeStore, mode: Option<SyncMode>) -> RunReport {
    sync_as(fake, lake, mode, TableFormat::default()).await
}

async fn sync_as(
    fake: &FakeIterable,
    lake: &LakeStore,
    mode: Option<SyncMode>,
    format: TableFormat,
) -> RunReport {
    let now: DateTime<Utc> = NOW.parse().unwrap();
    let mut opts = SyncOptions::new(snapshot_streams());
    opts.now = now;
    opts.mode = mode;
    opts.table_format = format;
    sync::run(lake.clone(), client(fake, 3), opts)
        .await
        .unwrap()
}

/// The values of `column` (integers or strings, as text) over the stream's live files, sorted.
async fn column(lake: &LakeStore, stream: &str, name: &str) -> Vec<String> {
    let mut out = Vec::new();
    for (_, batches) in live_batches(lake, stream).await {
        for b in batches {
            let col = b.column_by_name(name).unwrap();
            for i in 0..col.len() {
                out.push(match col.data_type() {
                    arrow::datatypes::DataType::Int64 => {
                        col.as_primitive::<Int64Type>().value(i).to_string()
                    }
                    _ if col.is_null(i) => String::new(),
                    _ => col.as_string::<i32>().value(i).to_string(),
                });
            }
        }
    }
    out.sort();
    out
}

fn sorted(values: impl IntoIterator<Item = String>) -> Vec<String> {
    let mut v: Vec<String> = values.into_iter().collect();
    v.sort();
    v
}

fn field(values: &[Value], name: &str) -> Vec<String> {
    sorted(values.iter().map(|v| match &v[name] {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }))
}

/// Every key of every snapshot stream equals the fake's ground truth.
async fn assert_exact(fake: &FakeIterable, lake: &LakeStore) {
    let lists = fake.truth_lists();
    assert_eq!(column(lake, "lists", "id").await, field(&lists, "id"));
    assert_eq!(
        column(lake, "campaigns", "id").await,
        field(&fake.truth_campaigns(), "id")
    );
    assert_eq!(
        column(lake, "channels", "id").await,
        field(&fake.truth_channels(), "id")
    );
    assert_eq!(
        column(lake, "message_types", "id").await,
        field(&fake.truth_message_types(), "id")
    );
    let templates: Vec<Value> = ["Base", "Blast", "Triggered", "Workflow"]
        .iter()
        .flat_map(|t| {
            ["Email", "Push", "InApp", "SMS"]
                .iter()
                .flat_map(move |m| fake.truth_templates(Some(t), Some(m)))
        })
        .collect();
    assert!(!templates.is_empty());
    assert_eq!(
        column(lake, "templates", "templateId").await,
        field(&templates, "templateId")
    );
    let metadata = fake.truth_metadata();
    let want: Vec<String> = sorted(metadata.iter().map(|m| {
        format!(
            "{}/{}",
            m["table"].as_str().unwrap(),
            m["key"].as_str().unwrap()
        )
    }));
    let tables = column(lake, "metadata", "table").await;
    assert_eq!(tables.len(), want.len());
    let mut got = Vec::new();
    for (_, batches) in live_batches(lake, "metadata").await {
        for b in batches {
            let t = b.column_by_name("table").unwrap().as_string::<i32>();
            let k = b.column_by_name("key").unwrap().as_string::<i32>();
            let v = b.column_by_name("value").unwrap().as_string::<i32>();
            for i in 0..b.num_rows() {
                got.push(format!("{}/{}", t.value(i), k.value(i)));
                serde_json::from_str::<Value>(v.value(i)).expect("values are JSON text");
            }
        }
    }
    assert_eq!(sorted(got), want);
}

/// Members per list in the lake, as `list_id → sorted emails`.
async fn members(lake: &LakeStore) -> BTreeMap<i64, Vec<String>> {
    let mut out: BTreeMap<i64, Vec<String>> = BTreeMap::new();
    for (f, batches) in live_batches(lake, "list_users").await {
        let id: i64 = f
            .file
            .partition
            .strip_prefix("list_id=")
            .unwrap()
            .parse()
            .unwrap();
        for b in batches {
            let list = b
                .column_by_name("listId")
                .unwrap()
                .as_primitive::<Int64Type>();
            let email = b.column_by_name("email").unwrap().as_string::<i32>();
            for i in 0..b.num_rows() {
                assert_eq!(list.value(i), id, "rows sit in their list's folder");
                out.entry(id).or_default().push(email.value(i).to_string());
            }
        }
    }
    for v in out.values_mut() {
        v.sort();
    }
    out
}

fn truth_members(fake: &FakeIterable, skip: &[i64]) -> BTreeMap<i64, Vec<String>> {
    fake.truth_lists()
        .iter()
        .map(|l| l["id"].as_i64().unwrap())
        .filter(|id| !skip.contains(id))
        .map(|id| (id, sorted(fake.truth_list_members(id, false))))
        .filter(|(_, m)| !m.is_empty())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_list_style_stream_lands_exactly_and_a_rerun_replaces_it() {
    for format in TableFormat::ALL {
        let fake = FakeIterable::start(FakeConfig::small(21)).await.unwrap();
        fake.set_now(NOW.parse().unwrap());
        let dir = tempfile::tempdir().unwrap();
        let lake = LakeStore::open(dir.path().to_str().unwrap()).unwrap();
        let report = sync_as(&fake, &lake, None, format).await;
        for s in &report.streams {
            assert_eq!(s.status, StreamStatus::Succeeded, "{}", s.stream);
            assert_eq!(s.mode, SyncMode::FullRefreshOverwrite);
        }
        assert_exact(&fake, &lake).await;
        assert_eq!(members(&lake).await, truth_members(&fake, &[]));
        let first = Manifest::load(&lake).await.unwrap();
        sync_as(&fake, &lake, Some(SyncMode::Incremental), format).await;
        assert_exact(&fake, &lake).await;
        assert_eq!(members(&lake).await, truth_members(&fake, &[]));
        let manifest = Manifest::load(&lake).await.unwrap();
        let state = &manifest.streams["list_users"];
        for f in &first.streams["list_users"].files {
            assert!(
                !state.files.iter().any(|l| l.file.path == f.file.path),
                "{format:?}: {} was replaced",
                f.file.path
            );
        }
        // Replaced files are gone from a plain lake, and retired (kept for older Delta
        // versions, not in the table) in a Delta one.
        assert_only_named_files(&lake, &manifest, "list_users").await;
        assert_eq!(
            state.retired.len(),
            match format {
                TableFormat::Delta => first.streams["list_users"].files.len(),
                TableFormat::Parquet => 0,
            },
            "{format:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_list_that_keeps_failing_is_quarantined_while_the_others_land() {
    let mut cfg = FakeConfig::small(22);
    let healthy = FakeIterable::start(cfg.clone()).await.unwrap();
    healthy.set_now(NOW.parse().unwrap());
    let failing: i64 = healthy
        .truth_lists()
        .iter()
        .map(|l| l["id"].as_i64().unwrap())
        .find(|id| !healthy.truth_list_members(*id, false).is_empty())
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let lake = LakeStore::open(dir.path().to_str().unwrap()).unwrap();
    sync(&healthy, &lake, None).await;
    let before = members(&lake).await;

    cfg.faults.failing_lists = vec![failing];
    let broken = FakeIterable::start(cfg).await.unwrap();
    broken.set_now(NOW.parse().unwrap());
    let report = sync(&broken, &lake, None).await;
    let lu = report
        .streams
        .iter()
        .find(|s| s.stream == "list_users")
        .unwrap();
    assert_eq!(lu.status, StreamStatus::Quarantined);
    assert_eq!(lu.quarantined.len(), 1);
    assert_eq!(
        lu.quarantined[0].key.as_deref(),
        Some(format!("list_id={failing}").as_str())
    );
    assert!(
        lu.quarantined[0].error.contains("GenericError"),
        "{}",
        lu.quarantined[0].error
    );
    assert!(report.quarantined());
    assert_eq!(
        members(&lake).await,
        before,
        "the failing list keeps its last members"
    );
    let manifest = Manifest::load(&lake).await.unwrap();
    assert_eq!(manifest.streams["list_users"].quarantine.len(), 1);

    let report = sync(&healthy, &lake, None).await;
    assert!(!report.quarantined());
    assert!(
        Manifest::load(&lake).await.unwrap().streams["list_users"]
            .quarantine
            .is_empty()
    );
    assert_eq!(members(&lake).await, truth_members(&healthy, &[]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_snapshot_to_s3_and_a_daily_append_partition() {
    let Some(s3) = support::require_s3() else {
        return;
    };
    let fake = FakeIterable::start(FakeConfig::small(23)).await.unwrap();
    fake.set_now(NOW.parse().unwrap());
    let bucket = s3.new_bucket().await;
    let lake = LakeStore::open(&bucket.s3_url("lake")).unwrap();
    sync(&fake, &lake, None).await;
    assert_exact(&fake, &lake).await;
    assert_eq!(members(&lake).await, truth_members(&fake, &[]));
    let report = sync(&fake, &lake, Some(SyncMode::FullRefreshAppend)).await;
    assert!(
        report
            .streams
            .iter()
            .all(|s| s.status == StreamStatus::Succeeded)
    );
    let lists = live_batches(&lake, "lists").await;
    assert!(
        lists
            .iter()
            .all(|(f, _)| f.file.path.starts_with("lists/snapshot_date=2024-01-04/"))
    );
    assert_exact(&fake, &lake).await;
    let sql = format!(
        "SELECT count(*) AS n, any_value(snapshot_date)::VARCHAR AS d FROM delta_scan('{}')",
        bucket.s3_url("lake/channels")
    );
    let Some(result) = support::duckdb(&sql) else {
        return;
    };
    assert_eq!(
        result.rows[0][0].as_u64().unwrap() as usize,
        fake.truth_channels().len()
    );
    assert_eq!(result.rows[0][1], "2024-01-04");
}
