//! Syncs of `campaigns_metrics` (CSV per batch of campaigns) and `events` (per-user events in
//! resumable passes) from the fake API over HTTP, exact against its ground truth.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use arrow::array::{Array, AsArray};
use arrow::datatypes::{DataType, Float64Type, Int64Type, TimestampMicrosecondType};
use chrono::{DateTime, Utc};
use iterable_lake::api::ApiClient;
use iterable_lake::catalog::{self, StreamDef};
use iterable_lake::config::select_streams;
use iterable_lake::convert::{Decoder, StreamSchema};
use iterable_lake::fake::{FakeConfig, FakeIterable};
use iterable_lake::manifest::Manifest;
use iterable_lake::sink::{LakeStore, day_of, partition_day};
use iterable_lake::source::metrics::metric_column;
use iterable_lake::sync::{self, RunReport, StreamStatus, SyncOptions};

use crate::lake::{fake_client, live_batches};
use crate::support;

const NOW: &str = "2024-01-04T00:00:00Z";
/// A seed of the fake's random 500s (2%) that first fails a request after the list members
/// are read and some batches of user events are committed: the requests are sequential, so
/// the draws are the same on every run.
const FAILING_SEED: u64 = 1;

fn stream(name: &str) -> &'static StreamDef {
    catalog::find(name).unwrap()
}

fn client(fake: &FakeIterable) -> ApiClient {
    client_with_retries(fake, 3)
}

fn client_with_retries(fake: &FakeIterable, retries: u32) -> ApiClient {
    fake_client(fake, retries)
}

fn options(name: &str) -> SyncOptions {
    let mut opts = SyncOptions::new(vec![stream(name)]);
    opts.now = NOW.parse::<DateTime<Utc>>().unwrap();
    opts
}

async fn sync(fake: &FakeIterable, lake: &LakeStore, opts: SyncOptions) -> RunReport {
    let report = sync::run(lake.clone(), client(fake), opts).await.unwrap();
    for s in &report.streams {
        assert_eq!(s.status, StreamStatus::Succeeded, "{}", s.stream);
    }
    report
}

// ---------------------------------------------------------------------------------------
// campaigns_metrics
// ---------------------------------------------------------------------------------------

/// A cell of the lake as the CSV would show it: integers as digits, floats as Rust prints
/// them, nulls as empty.
fn cell(col: &dyn Array, i: usize) -> String {
    if col.is_null(i) {
        return String::new();
    }
    match col.data_type() {
        DataType::Int64 => col.as_primitive::<Int64Type>().value(i).to_string(),
        DataType::Float64 => col.as_primitive::<Float64Type>().value(i).to_string(),
        other => panic!("unexpected column type {other}"),
    }
}

/// The truth's cell normalised the same way (floats printed `12.0` by the JVM read `12`).
fn truth_cell(text: &str, data_type: &DataType) -> String {
    match (text, data_type) {
        ("", _) => String::new(),
        (t, DataType::Int64) => t.parse::<i64>().unwrap().to_string(),
        (t, DataType::Float64) => t.parse::<f64>().unwrap().to_string(),
        (_, other) => panic!("unexpected column type {other}"),
    }
}

/// The lake's `campaigns_metrics` and the fake's truth for every campaign, as
/// `id → column → cell`, both sides normalised.
async fn metrics_vs_truth(
    fake: &FakeIterable,
    lake: &LakeStore,
) -> (
    BTreeMap<i64, BTreeMap<String, String>>,
    BTreeMap<i64, BTreeMap<String, String>>,
) {
    let ids: Vec<i64> = fake
        .truth_campaigns()
        .iter()
        .map(|c| c["id"].as_i64().unwrap())
        .collect();
    let (header, rows) = fake.truth_campaign_metrics(&ids);
    assert_eq!(header[0], "id");
    assert_eq!(rows.len(), ids.len(), "every campaign has a metrics row");
    let schema = StreamSchema::parse(
        "campaigns_metrics",
        stream("campaigns_metrics").schema,
        false,
    )
    .unwrap();
    let mut types = Vec::new();
    for h in &header {
        let name = metric_column(h);
        let at = schema
            .position(&name)
            .unwrap_or_else(|| panic!("{h} is declared as {name}"));
        assert_eq!(
            schema.columns[at].description.as_deref(),
            Some(h.as_str()),
            "{name} keeps its header"
        );
        types.push((name, schema.arrow.field(at).data_type().clone()));
    }
    let mut truth = BTreeMap::new();
    for row in &rows {
        // A column several headers fill (a repeated header, `Purchases / M` of any medium)
        // holds their one non-empty value.
        let mut cells = BTreeMap::new();
        for ((name, dt), text) in types.iter().zip(row) {
            let cell: &mut String = cells.entry(name.clone()).or_default();
            if cell.is_empty() {
                *cell = truth_cell(text, dt);
            }
        }
        truth.insert(row[0].parse::<i64>().unwrap(), cells);
    }
    let mut got = BTreeMap::new();
    for (_, batches) in live_batches(lake, "campaigns_metrics").await {
        for b in batches {
            let extra = b.column_by_name("_extra").unwrap();
            assert_eq!(
                extra.null_count(),
                b.num_rows(),
                "every header declared, every value typed: {:?}",
                extra.as_string::<i32>().iter().flatten().next()
            );
            for i in 0..b.num_rows() {
                let cells: BTreeMap<String, String> = types
                    .iter()
                    .map(|(name, _)| {
                        (
                            name.clone(),
                            cell(b.column_by_name(name).unwrap().as_ref(), i),
                        )
                    })
                    .collect();
                let id = cells["id"].parse::<i64>().unwrap();
                assert!(got.insert(id, cells).is_none(), "campaign {id} once");
            }
        }
    }
    (got, truth)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn campaign_metrics_land_typed_in_few_requests() {
    let fake = FakeIterable::start(FakeConfig::small(31)).await.unwrap();
    fake.set_now(NOW.parse().unwrap());
    let dir = tempfile::tempdir().unwrap();
    let lake = LakeStore::open(dir.path().to_str().unwrap()).unwrap();
    let report = sync(&fake, &lake, options("campaigns_metrics")).await;
    assert_eq!(report.streams[0].commits, 1);
    let (got, truth) = metrics_vs_truth(&fake, &lake).await;
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        truth.keys().collect::<Vec<_>>()
    );
    assert_eq!(got, truth);
    let filled = |col: &str| truth.values().filter(|r| !r[col].is_empty()).count();
    assert!(
        filled("total_email_sends") > 0,
        "an integer column has values"
    );
    assert!(filled("email_open_rate") > 0, "a float column has values");
    assert!(
        filled("total_email_sends") < truth.len(),
        "empty cells are there (and read as null)"
    );
    let requests = fake.requests("/api/campaigns/metrics");
    let ids = truth.len() as u64;
    assert!(
        requests <= ids.div_ceil(300) && requests >= ids / 420,
        "{requests} metrics requests for {ids} campaigns"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_header_lands_typed_also_from_an_older_project() {
    for old in [false, true] {
        let mut cfg = FakeConfig::small(31);
        cfg.faults.old_metrics_csv = old;
        let fake = FakeIterable::start(cfg).await.unwrap();
        fake.set_now(NOW.parse().unwrap());
        let dir = tempfile::tempdir().unwrap();
        let lake = LakeStore::open(dir.path().to_str().unwrap()).unwrap();
        sync(&fake, &lake, options("campaigns_metrics")).await;
        let (got, truth) = metrics_vs_truth(&fake, &lake).await;
        assert_eq!(got, truth);
        let filled = |col: &str| truth.values().filter(|r| !r[col].is_empty()).count();
        let columns = truth
            .values()
            .next()
            .unwrap()
            .keys()
            .cloned()
            .collect::<Vec<_>>();
        for col in &columns {
            assert!(filled(col) > 0, "{col} has values (old CSV: {old})");
        }
        if old {
            assert!(columns.contains(&"purchases_m".to_string()));
        } else {
            assert!(columns.contains(&"total_web_pushes_sent".to_string()));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn campaign_metrics_to_s3_read_by_duckdb() {
    let Some(s3) = support::require_s3() else {
        return;
    };
    let fake = FakeIterable::start(FakeConfig::small(32)).await.unwrap();
    fake.set_now(NOW.parse().unwrap());
    let bucket = s3.new_bucket().await;
    let lake = LakeStore::open(&bucket.s3_url("lake")).unwrap();
    sync(&fake, &lake, options("campaigns_metrics")).await;
    let (got, truth) = metrics_vs_truth(&fake, &lake).await;
    assert_eq!(got, truth);
    let sum: i64 = truth
        .values()
        .filter_map(|r| r["total_email_sends"].parse::<i64>().ok())
        .sum();
    let opens = truth
        .values()
        .filter(|r| !r["email_open_rate"].is_empty())
        .count();
    let sql = format!(
        "SELECT count(*) AS n, sum(total_email_sends)::BIGINT AS sends, count(email_open_rate) AS opens, \
         typeof(any_value(email_open_rate)) AS t FROM read_parquet('{}')",
        bucket.s3_url("lake/campaigns_metrics/*.parquet")
    );
    let Some(result) = support::duckdb(&sql) else {
        return;
    };
    let row = &result.rows[0];
    assert_eq!(row[0].as_u64().unwrap() as usize, truth.len());
    assert_eq!(row[1].as_i64().unwrap(), sum);
    assert_eq!(row[2].as_u64().unwrap() as usize, opens);
    assert_eq!(row[3], "DOUBLE");
}

// ---------------------------------------------------------------------------------------
// events
// ---------------------------------------------------------------------------------------

/// Every list member once, sorted: the order a pass reads them in.
fn members(fake: &FakeIterable) -> Vec<String> {
    let all: BTreeSet<String> = fake
        .truth_lists()
        .iter()
        .flat_map(|l| fake.truth_list_members(l["id"].as_i64().unwrap(), false))
        .collect();
    all.into_iter().collect()
}

/// The `_event_id`s of the events of `users`, sorted (repeats kept).
fn truth_event_ids(fake: &FakeIterable, users: &[String]) -> Vec<String> {
    let events = stream("events");
    let schema = Arc::new(StreamSchema::parse(events.name, events.schema, true).unwrap());
    let decoder = Decoder::new(schema, 0, events.data_type());
    let mut ids = Vec::new();
    for user in users {
        let lines = fake.truth_user_events(user, true);
        if lines.is_empty() {
            continue;
        }
        let batch = decoder.decode(lines.join("\n").as_bytes()).unwrap().batch;
        let col = batch
            .column_by_name("_event_id")
            .unwrap()
            .as_string::<i32>();
        ids.extend(col.iter().map(|v| v.unwrap().to_string()));
    }
    ids.sort();
    ids
}

/// The lake's live `_event_id`s, sorted (repeats kept), checking each row sits in the date
/// partition of its `createdAt` and carries `_type`.
async fn lake_event_ids(lake: &LakeStore) -> Vec<String> {
    let mut ids = Vec::new();
    for (f, batches) in live_batches(lake, "events").await {
        let day = partition_day(&f.file.partition).expect("a date partition");
        for b in batches {
            let created = b
                .column_by_name("createdAt")
                .unwrap()
                .as_primitive::<TimestampMicrosecondType>();
            let ty = b.column_by_name("_type").unwrap();
            assert_eq!(ty.null_count(), 0, "every event has its _type");
            for i in 0..b.num_rows() {
                assert_eq!(day_of(created.value(i)), day, "{}", f.file.path);
            }
            let col = b.column_by_name("_event_id").unwrap().as_string::<i32>();
            ids.extend(col.iter().map(|v| v.unwrap().to_string()));
        }
    }
    ids.sort();
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_resume_after_their_checkpoint_and_land_each_event_once() {
    let fake = FakeIterable::start(FakeConfig::small(33)).await.unwrap();
    fake.set_now(NOW.parse().unwrap());
    let dir = tempfile::tempdir().unwrap();
    let lake = LakeStore::open(dir.path().to_str().unwrap()).unwrap();
    let users = members(&fake);
    assert!(users.len() > 100, "{} members", users.len());
    let all = truth_event_ids(&fake, &users);
    assert!(!all.is_empty());

    // A run stopped after two batches commits two checkpoints and holds their users' events.
    let mut first = options("events");
    first.events_batch_users = 30;
    first.events_max_users = Some(50);
    let report = sync(&fake, &lake, first).await;
    assert_eq!(report.streams[0].commits, 2);
    let state = &Manifest::load(&lake).await.unwrap().streams["events"];
    assert_eq!(state.checkpoint.as_deref(), Some(users[59].as_str()));
    assert_eq!(state.cursor, None, "the pass is not complete");
    assert_eq!(
        lake_event_ids(&lake).await,
        truth_event_ids(&fake, &users[..60])
    );
    assert_eq!(fake.requests("/api/export/userEvents"), 60);

    // The next run continues after the checkpoint: every user once, every event once.
    let mut rest = options("events");
    rest.events_batch_users = 30;
    sync(&fake, &lake, rest).await;
    assert_eq!(
        fake.requests("/api/export/userEvents"),
        users.len() as u64,
        "no user is read twice in one pass"
    );
    let state = &Manifest::load(&lake).await.unwrap().streams["events"];
    assert_eq!(state.checkpoint, None);
    assert_eq!(state.cursor, Some(NOW.parse().unwrap()));
    assert_eq!(lake_event_ids(&lake).await, all);

    // A new pass replaces the previous one's files at its first commit.
    let report = sync(&fake, &lake, options("events")).await;
    assert_eq!(report.streams[0].commits, 1);
    let manifest = Manifest::load(&lake).await.unwrap();
    assert!(
        manifest.streams["events"]
            .files
            .iter()
            .all(|f| f.run == report.run_id)
    );
    assert_eq!(lake_event_ids(&lake).await, all);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pass_that_fails_midway_resumes_after_its_last_checkpoint() {
    let mut cfg = FakeConfig::small(34);
    let healthy = FakeIterable::start(cfg.clone()).await.unwrap();
    healthy.set_now(NOW.parse().unwrap());
    cfg.faults.random_500 = 0.02;
    cfg.faults.random_500_seed = FAILING_SEED;
    let broken = FakeIterable::start(cfg).await.unwrap();
    broken.set_now(NOW.parse().unwrap());
    let users = members(&healthy);
    let dir = tempfile::tempdir().unwrap();
    let lake = LakeStore::open(dir.path().to_str().unwrap()).unwrap();
    let opts = || {
        let mut o = options("events");
        o.events_batch_users = 20;
        o
    };

    // Without retries, a 500 on some user's events fails the stream after earlier batches.
    let report = sync::run(lake.clone(), client_with_retries(&broken, 0), opts())
        .await
        .unwrap();
    let s = &report.streams[0];
    assert!(
        matches!(s.status, StreamStatus::Failed(_)),
        "{:?}",
        s.status
    );
    assert!(s.quarantined.is_empty(), "every list was read");
    assert!(s.commits >= 1, "a batch was committed before the failure");
    let state = &Manifest::load(&lake).await.unwrap().streams["events"];
    let checkpoint = state.checkpoint.clone().expect("a pass in progress");
    let done = users.iter().position(|u| *u == checkpoint).unwrap() + 1;
    assert_eq!(done, 20 * s.commits as usize);
    assert_eq!(
        lake_event_ids(&lake).await,
        truth_event_ids(&healthy, &users[..done])
    );

    // The next run reads only the users after the checkpoint, and completes the pass.
    sync(&healthy, &lake, opts()).await;
    assert_eq!(
        healthy.requests("/api/export/userEvents"),
        (users.len() - done) as u64
    );
    assert_eq!(
        Manifest::load(&lake).await.unwrap().streams["events"].checkpoint,
        None
    );
    assert_eq!(
        lake_event_ids(&lake).await,
        truth_event_ids(&healthy, &users)
    );
}

/// The ids of the fake's lists.
fn list_ids(fake: &FakeIterable) -> Vec<i64> {
    fake.truth_lists()
        .iter()
        .map(|l| l["id"].as_i64().unwrap())
        .collect()
}

/// A fake with the same data as `healthy` whose `getUsers` fails for `lists`.
async fn failing(healthy: &FakeIterable, lists: Vec<i64>) -> FakeIterable {
    let mut cfg = healthy.config().clone();
    cfg.faults.failing_lists = lists;
    let fake = FakeIterable::start(cfg).await.unwrap();
    fake.set_now(NOW.parse().unwrap());
    fake
}

/// A run whose lists (some or all) fail: `events` is quarantined, reads no user and commits
/// nothing, so the manifest's `events` state is unchanged.
async fn sync_commits_nothing(fake: &FakeIterable, lake: &LakeStore, opts: SyncOptions) {
    let before = Manifest::load(lake).await.unwrap().streams["events"].clone();
    let report = sync::run(lake.clone(), client(fake), opts).await.unwrap();
    let s = &report.streams[0];
    assert_eq!(s.status, StreamStatus::Quarantined);
    assert_eq!(
        s.quarantined.len(),
        fake.config().faults.failing_lists.len()
    );
    assert!(
        s.quarantined[0].error.contains("nothing was committed"),
        "{s:?}"
    );
    assert_eq!(s.commits, 0);
    assert_eq!(fake.requests("/api/export/userEvents"), 0);
    assert_eq!(
        Manifest::load(lake).await.unwrap().streams["events"],
        before
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreadable_lists_neither_start_nor_complete_a_pass() {
    let healthy = FakeIterable::start(FakeConfig::small(35)).await.unwrap();
    healthy.set_now(NOW.parse().unwrap());
    let users = members(&healthy);
    let all = truth_event_ids(&healthy, &users);
    let lists = list_ids(&healthy);
    assert!(lists.len() > 1, "{lists:?}");
    let dir = tempfile::tempdir().unwrap();
    let lake = LakeStore::open(dir.path().to_str().unwrap()).unwrap();
    sync(&healthy, &lake, options("events")).await;
    assert_eq!(lake_event_ids(&lake).await, all);

    // Every list failing, or one: the previous pass stays live, whole.
    let outage = failing(&healthy, lists.clone()).await;
    sync_commits_nothing(&outage, &lake, options("events")).await;
    assert_eq!(lake_event_ids(&lake).await, all);
    let one = failing(&healthy, vec![lists[0]]).await;
    sync_commits_nothing(&one, &lake, options("events")).await;
    assert_eq!(lake_event_ids(&lake).await, all);

    // A pass in progress does not continue from a partial member set either, and continues
    // after its checkpoint once every list reads.
    let mut first = options("events");
    first.events_batch_users = 30;
    first.events_max_users = Some(30);
    let started = FakeIterable::start(healthy.config().clone()).await.unwrap();
    started.set_now(NOW.parse().unwrap());
    sync(&started, &lake, first).await;
    assert_eq!(
        lake_event_ids(&lake).await,
        truth_event_ids(&healthy, &users[..30])
    );
    let mut resumed = options("events");
    resumed.events_batch_users = 30;
    let one = failing(&healthy, vec![lists[1]]).await;
    sync_commits_nothing(&one, &lake, resumed.clone()).await;
    let rest = FakeIterable::start(healthy.config().clone()).await.unwrap();
    rest.set_now(NOW.parse().unwrap());
    sync(&rest, &lake, resumed).await;
    assert_eq!(
        rest.requests("/api/export/userEvents"),
        (users.len() - 30) as u64
    );
    assert_eq!(lake_event_ids(&lake).await, all);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_without_members_fail_events_and_commit_nothing() {
    let mut cfg = FakeConfig::small(36);
    cfg.users = 0;
    let empty = FakeIterable::start(cfg).await.unwrap();
    empty.set_now(NOW.parse().unwrap());
    assert!(members(&empty).is_empty());
    let dir = tempfile::tempdir().unwrap();
    let lake = LakeStore::open(dir.path().to_str().unwrap()).unwrap();
    let report = sync::run(lake.clone(), client(&empty), options("events"))
        .await
        .unwrap();
    let s = &report.streams[0];
    assert!(
        matches!(&s.status, StreamStatus::Failed(e) if e.contains("no list has any member")),
        "{:?}",
        s.status
    );
    assert_eq!(s.commits, 0);
    assert!(
        !Manifest::load(&lake)
            .await
            .unwrap()
            .streams
            .contains_key("events")
    );
}

#[test]
fn events_are_opt_in() {
    let names = |streams: Vec<&'static StreamDef>| -> Vec<&str> {
        streams.iter().map(|s| s.name).collect()
    };
    let all = names(select_streams(None, None).unwrap());
    assert!(all.contains(&"campaigns_metrics"));
    assert!(!all.contains(&"events"));
    let given = iterable_lake::config::Given::flag("--streams", vec!["all".to_string()]);
    assert!(!names(select_streams(Some(&given), None).unwrap()).contains(&"events"));
    let given = iterable_lake::config::Given::flag("--streams", vec!["events".to_string()]);
    assert_eq!(
        names(select_streams(Some(&given), None).unwrap()),
        ["events"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_land_on_s3_each_event_once() {
    let Some(s3) = support::require_s3() else {
        return;
    };
    let fake = FakeIterable::start(FakeConfig::small(35)).await.unwrap();
    fake.set_now(NOW.parse().unwrap());
    let bucket = s3.new_bucket().await;
    let lake = LakeStore::open(&bucket.s3_url("lake")).unwrap();
    let users = members(&fake);
    let mut opts = options("events");
    opts.events_batch_users = 100;
    sync(&fake, &lake, opts).await;
    assert_eq!(lake_event_ids(&lake).await, truth_event_ids(&fake, &users));
    let state = &Manifest::load(&lake).await.unwrap().streams["events"];
    assert_eq!(state.checkpoint, None, "the pass is complete");
}
