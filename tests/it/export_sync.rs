//! End-to-end syncs of the export streams from the fake API over HTTP into real lakes (local
//! disk and S3), checked against the fake's ground truth: every record exactly once, in the
//! right date partition.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use arrow::array::{Array, AsArray};
use chrono::{DateTime, NaiveDate, Utc};
use iterable_lake::api::{ApiClient, ApiError, Family};
use iterable_lake::catalog::{self, StreamDef, SyncMode};
use iterable_lake::convert::{Decoder, StreamSchema};
use iterable_lake::fake::{CutOff, FakeConfig, FakeIterable, Faults};
use iterable_lake::manifest::Manifest;
use iterable_lake::sink::LakeStore;
use iterable_lake::sync::{self, RunReport, StreamStatus, SyncOptions};

use crate::lake::{assert_only_named_files, fake_client, live_batches};
use crate::support;

pub(crate) fn t(s: &str) -> DateTime<Utc> {
    s.parse().unwrap()
}

fn client(fake: &FakeIterable) -> ApiClient {
    fake_client(fake, 8)
}

pub(crate) fn options(
    streams: Vec<&'static StreamDef>,
    start: &str,
    now: DateTime<Utc>,
) -> SyncOptions {
    let mut o = SyncOptions::new(streams);
    o.start = Some(t(start));
    o.now = now;
    o.lag = chrono::Duration::zero();
    o
}

async fn sync(fake: &FakeIterable, lake: &LakeStore, opts: SyncOptions) -> RunReport {
    let report = sync::run(lake.clone(), client(fake), opts).await.unwrap();
    for s in &report.streams {
        assert!(
            matches!(s.status, StreamStatus::Succeeded | StreamStatus::UpToDate),
            "{}: {:?}",
            s.stream,
            s.status
        );
    }
    report
}

/// The identity of each record: `_event_id` for events, `email|userId` for users.
fn identities(stream: &StreamDef, batch: &arrow::record_batch::RecordBatch) -> Vec<String> {
    if stream.is_event() {
        let ids = batch
            .column_by_name("_event_id")
            .unwrap()
            .as_string::<i32>();
        return ids.iter().map(|v| v.unwrap().to_string()).collect();
    }
    let email = batch.column_by_name("email").unwrap().as_string::<i32>();
    let user = batch.column_by_name("userId").unwrap().as_string::<i32>();
    email
        .iter()
        .zip(user.iter())
        .map(|(e, u)| format!("{}|{}", e.unwrap_or_default(), u.unwrap_or_default()))
        .collect()
}

/// What the fake holds for `[start, end)`: identities (sorted) and counts per date.
fn truth(
    fake: &FakeIterable,
    stream: &StreamDef,
    start: &str,
    end: DateTime<Utc>,
) -> (Vec<String>, BTreeMap<NaiveDate, u64>) {
    let lines = fake.truth_lines(stream.data_type(), t(start), end);
    let schema =
        Arc::new(StreamSchema::parse(stream.name, stream.schema, stream.is_event()).unwrap());
    let decoder = Decoder::new(schema, 0, stream.data_type());
    let mut ids = if lines.is_empty() {
        Vec::new()
    } else {
        identities(
            stream,
            &decoder.decode(lines.join("\n").as_bytes()).unwrap().batch,
        )
    };
    ids.sort();
    let counts = fake.truth_counts(stream.data_type(), t(start), end);
    (ids, counts)
}

/// What the lake holds live for a stream: identities (sorted) and rows per date partition.
async fn lake_contents(
    lake: &LakeStore,
    stream: &StreamDef,
) -> (Vec<String>, BTreeMap<NaiveDate, u64>) {
    let mut ids = Vec::new();
    let mut counts = BTreeMap::new();
    for (f, batches) in live_batches(lake, stream.name).await {
        let date: NaiveDate = f
            .file
            .partition
            .rsplit("date=")
            .next()
            .unwrap()
            .parse()
            .unwrap();
        for batch in batches {
            *counts.entry(date).or_insert(0) += batch.num_rows() as u64;
            ids.extend(identities(stream, &batch));
        }
    }
    ids.sort();
    (ids, counts)
}

pub(crate) async fn assert_exact(
    fake: &FakeIterable,
    lake: &LakeStore,
    stream: &StreamDef,
    start: &str,
    end: DateTime<Utc>,
) {
    let (want_ids, want_counts) = truth(fake, stream, start, end);
    let (got_ids, got_counts) = lake_contents(lake, stream).await;
    assert_eq!(got_counts, want_counts, "{} rows per date", stream.name);
    assert_eq!(got_ids.len(), want_ids.len(), "{} records", stream.name);
    assert!(
        got_ids == want_ids,
        "{}: records differ from the fake's ground truth",
        stream.name
    );
    assert_only_named_files(lake, &Manifest::load(lake).await.unwrap(), stream.name).await;
}

pub(crate) const START: &str = "2024-01-01T00:00:00Z";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_export_stream_lands_exactly_once_on_local_disk() {
    let fake = FakeIterable::start(FakeConfig::small(1)).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let lake = LakeStore::open(dir.path().to_str().unwrap()).unwrap();
    let end = t("2024-01-04T00:00:00Z");
    fake.set_now(end);
    let report = sync(
        &fake,
        &lake,
        options(catalog::export_streams().collect(), START, end),
    )
    .await;
    assert_eq!(report.streams.len(), 51);
    assert!(report.streams.iter().map(|s| s.rows).sum::<u64>() > 1000);
    for s in catalog::export_streams() {
        assert_exact(&fake, &lake, s, START, end).await;
    }
    let manifest = Manifest::load(&lake).await.unwrap();
    assert_eq!(manifest.streams["email_send"].cursor, Some(end));
    let runs = std::fs::read_dir(dir.path().join("_runs")).unwrap().count();
    assert_eq!(runs, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_incremental_runs_with_new_and_late_data_leave_each_record_once() {
    let fake = FakeIterable::start(FakeConfig::small(2)).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let lake = LakeStore::open(dir.path().to_str().unwrap()).unwrap();
    let streams = vec![
        catalog::find("email_send").unwrap(),
        catalog::find("users").unwrap(),
        catalog::find("purchase").unwrap(),
    ];
    let t1 = t("2024-01-02T13:30:00Z");
    fake.set_now(t1);
    sync(&fake, &lake, options(streams.clone(), START, t1)).await;
    for s in &streams {
        assert_exact(&fake, &lake, s, START, t1).await;
    }
    let before = truth(&fake, streams[0], START, t1).0.len();
    let t2 = t("2024-01-03T20:00:00Z");
    fake.set_now(t2);
    let after_truth = truth(&fake, streams[0], START, t1).0.len();
    assert!(
        after_truth > before,
        "the fake holds late data for the first run's period"
    );
    let report = sync(&fake, &lake, options(streams.clone(), START, t2)).await;
    for s in &streams {
        assert_exact(&fake, &lake, s, START, t2).await;
    }
    assert!(report.streams.iter().all(|s| s.cursor == Some(t2)));
    let again = sync(&fake, &lake, options(streams.clone(), START, t2)).await;
    assert!(
        again
            .streams
            .iter()
            .all(|s| s.status == StreamStatus::UpToDate)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cut_off_responses_rate_limits_and_random_errors_still_give_exact_results() {
    let report = exact_sync_with(
        |f| {
            *f = Faults {
                export_rate: Some((5, Duration::from_millis(500))),
                cut_off: Some(CutOff {
                    data_type: Some("emailSend".into()),
                    after_bytes: 3000,
                    first_requests: 2,
                }),
                random_500: 0.2,
                random_500_seed: 9,
                ..Faults::default()
            }
        },
        &["email_send", "email_open", "users", "sms_send"],
    )
    .await;
    assert!(
        window_retries(&report, "email_send") >= 2,
        "cut-off windows were retried: {report:?}"
    );
    assert!(report.retries > 0 && report.rate_limited > 0, "{report:?}");
}

#[tokio::test]
async fn every_timestamp_shape_the_fake_sends_lands_on_its_instant() {
    let mut cfg = FakeConfig::small(6);
    cfg.events_per_day = 2_000;
    let fake = FakeIterable::start(cfg).await.unwrap();
    fake.set_now(t("2024-01-04T00:00:00Z"));
    let def = catalog::find("email_send").unwrap();
    let schema = Arc::new(StreamSchema::parse(def.name, def.schema, true).unwrap());
    let decoder = Decoder::new(schema, 0, def.data_type());
    let mut shapes = BTreeMap::new();
    let day = t("2024-01-02T00:00:00Z");
    for hour in 0..24 {
        let start = day + chrono::Duration::hours(hour);
        let end = start + chrono::Duration::hours(1);
        let lines = fake.truth_lines(def.data_type(), start, end);
        for line in &lines {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            let shape = match &v["createdAt"] {
                serde_json::Value::Number(_) => "epoch milliseconds".to_string(),
                serde_json::Value::String(s) => s
                    .chars()
                    .map(|c| if c.is_ascii_digit() { '9' } else { c })
                    .collect(),
                other => panic!("createdAt {other}"),
            };
            *shapes.entry(shape).or_insert(0) += 1;
        }
        let batch = decoder.decode(lines.join("\n").as_bytes()).unwrap().batch;
        let created = batch
            .column_by_name("createdAt")
            .unwrap()
            .as_primitive::<arrow::datatypes::TimestampMicrosecondType>();
        assert_eq!(created.null_count(), 0, "every createdAt is typed");
        for at in created.values() {
            let at = DateTime::from_timestamp_micros(*at).unwrap();
            assert!(at >= start && at < end, "{at} is not in [{start}, {end})");
        }
    }
    for shape in [
        "9999-99-99 99:99:99 +99:99",
        "9999-99-99 99:99:99.999 +99:99",
        "9999-99-99 99:99:99 +9999",
        "9999-99-99 99:99:99 -99:99",
        "9999-99-99T99:99:99+99:99",
        "9999-99-99T99:99:99Z",
        "9999-99-99T99:99:99.999Z",
        "9999-99-99T99:99:99.999999.999Z",
        "epoch milliseconds",
    ] {
        assert!(shapes.contains_key(shape), "no {shape} in {shapes:?}");
    }
}

/// How many of `stream`'s windows `report` says were retried.
fn window_retries(report: &RunReport, stream: &str) -> u64 {
    let s = report.streams.iter().find(|s| s.stream == stream);
    s.expect("the stream is in the report").window_retries
}

/// A sync of `streams` over `[START, 2024-01-04)` from a fake whose faults `faults` sets
/// into a new local lake, checked exact against the fake's truth; the report of the sync.
async fn exact_sync_with(faults: impl FnOnce(&mut Faults), streams: &[&str]) -> RunReport {
    let mut cfg = FakeConfig::small(3);
    faults(&mut cfg.faults);
    let fake = FakeIterable::start(cfg).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let lake = LakeStore::open(dir.path().to_str().unwrap()).unwrap();
    let end = t("2024-01-04T00:00:00Z");
    fake.set_now(end);
    let streams: Vec<_> = streams.iter().map(|n| catalog::find(n).unwrap()).collect();
    let report = sync(&fake, &lake, options(streams.clone(), START, end)).await;
    for s in &streams {
        assert_exact(&fake, &lake, s, START, end).await;
    }
    report
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_that_end_cleanly_inside_a_record_are_retried_not_committed() {
    let report = exact_sync_with(
        |f| {
            f.clean_cut_off = Some(CutOff {
                data_type: Some("emailSend".into()),
                after_bytes: 3000,
                first_requests: 3,
            })
        },
        &["email_send", "email_open"],
    )
    .await;
    assert!(
        window_retries(&report, "email_send") >= 3,
        "short windows were retried: {report:?}"
    );
    assert!(report.streams.iter().all(|s| s.malformed_lines == 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_byte_order_mark_before_a_body_is_dropped() {
    let report = exact_sync_with(|f| f.byte_order_mark = true, &["email_send", "users"]).await;
    assert!(
        report.streams.iter().all(|s| s.malformed_lines == 0),
        "{report:?}"
    );
}

/// The status and attempts of an export request that `client` gives up on.
async fn failed_export(client: &ApiClient) -> (u16, u32) {
    let query = [("dataTypeName", "emailSend".to_string())];
    match client.get(Family::Export, "export/data.json", &query).await {
        Err(ApiError::Status {
            status, attempts, ..
        }) => (status, attempts),
        other => panic!("{:?}", other.map(|r| r.status())),
    }
}

#[tokio::test]
async fn rate_limited_requests_get_four_times_the_retries_of_errors() {
    let mut cfg = FakeConfig::small(5);
    cfg.faults.export_rate = Some((1, Duration::from_secs(60)));
    let fake = FakeIterable::start(cfg).await.unwrap();
    let client = fake_client(&fake, 2);
    let query = [("dataTypeName", "emailSend".to_string())];
    let first = client.get(Family::Export, "export/data.json", &query).await;
    assert!(first.is_ok(), "the budget admits one request");
    assert_eq!(failed_export(&client).await, (429, 9));
    assert_eq!(fake.rate_limited(), 9);

    let mut cfg = FakeConfig::small(5);
    cfg.faults.random_500 = 1.0;
    let fake = FakeIterable::start(cfg).await.unwrap();
    assert_eq!(failed_export(&fake_client(&fake, 2)).await, (500, 3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_sync_to_s3_gives_the_same_rows_and_duckdb_reads_them() {
    let Some(s3) = support::require_s3() else {
        return;
    };
    let fake = FakeIterable::start(FakeConfig::small(4)).await.unwrap();
    let end = t("2024-01-04T00:00:00Z");
    fake.set_now(end);
    let bucket = s3.new_bucket().await;
    let s3_lake = LakeStore::open(&bucket.s3_url("lake")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let local = LakeStore::open(dir.path().to_str().unwrap()).unwrap();
    let streams: Vec<_> = catalog::export_streams().collect();
    sync(&fake, &s3_lake, options(streams.clone(), START, end)).await;
    sync(&fake, &local, options(streams.clone(), START, end)).await;
    for s in &streams {
        assert_exact(&fake, &s3_lake, s, START, end).await;
        assert_eq!(
            lake_contents(&s3_lake, s).await,
            lake_contents(&local, s).await,
            "{}",
            s.name
        );
    }
    let send = catalog::find("email_send").unwrap();
    let want = truth(&fake, send, START, end).1;
    let sql = format!(
        "SELECT CAST(date AS VARCHAR), count(*), typeof(any_value(createdAt)), typeof(any_value(campaignId)) \
         FROM read_parquet('{}', hive_partitioning=true) GROUP BY 1 ORDER BY 1",
        bucket.s3_url("lake/email_send/**/*.parquet")
    );
    let Some(result) = support::duckdb(&sql) else {
        return;
    };
    let got: BTreeMap<NaiveDate, u64> = result
        .rows
        .iter()
        .map(|r| {
            (
                r[0].as_str().unwrap().parse().unwrap(),
                r[1].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(got, want);
    assert!(
        result
            .rows
            .iter()
            .all(|r| r[2] == "TIMESTAMP WITH TIME ZONE" && r[3] == "BIGINT"),
        "{:?}",
        result.rows
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duckdb_reads_every_local_stream_with_hive_partitions_and_declared_types() {
    let fake = FakeIterable::start(FakeConfig::small(5)).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let lake = LakeStore::open(dir.path().to_str().unwrap()).unwrap();
    let end = t("2024-01-04T00:00:00Z");
    fake.set_now(end);
    sync(
        &fake,
        &lake,
        options(catalog::export_streams().collect(), START, end),
    )
    .await;
    let root = dir.path().to_str().unwrap();
    let union: Vec<String> = catalog::export_streams()
        .map(|s| {
            format!(
                "SELECT '{0}' AS stream, count(*) AS n, count(DISTINCT date) AS days, typeof(any_value({1})) AS ty \
                 FROM read_parquet('{root}/{0}/**/*.parquet', hive_partitioning=true, union_by_name=true)",
                s.name, s.cursor_field
            )
        })
        .collect();
    let Some(result) = support::duckdb(&(union.join(" UNION ALL ") + " ORDER BY 1")) else {
        return;
    };
    assert_eq!(result.rows.len(), catalog::export_streams().count());
    for row in &result.rows {
        let s = catalog::find(row[0].as_str().unwrap()).unwrap();
        let want: u64 = truth(&fake, s, START, end).1.values().sum();
        assert_eq!(row[1].as_u64().unwrap(), want, "{}", s.name);
        assert_eq!(row[3], "TIMESTAMP WITH TIME ZONE", "{}", s.name);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn email_unsubscribe_falls_back_to_the_spelling_the_server_accepts() {
    let mut cfg = FakeConfig::small(6);
    cfg.faults.rejected_data_types = vec!["emailUnSubscribe".into()];
    let fake = FakeIterable::start(cfg).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let lake = LakeStore::open(dir.path().to_str().unwrap()).unwrap();
    let end = t("2024-01-04T00:00:00Z");
    fake.set_now(end);
    let unsub = catalog::find("email_unsubscribe").unwrap();
    let mut opts = options(vec![unsub], START, end);
    opts.window.initial_days = 1;
    let report = sync(&fake, &lake, opts).await;
    let windows = report.streams[0].windows;
    assert!(windows >= 2, "{windows}");
    assert_exact(&fake, &lake, unsub, START, end).await;
    assert_eq!(
        fake.requests("/api/export/data.json"),
        windows + 1,
        "one rejected request, then the accepted spelling for every window"
    );
}

/// A fake like `cfg` whose first `data.json` bodies of `data_type` (all of them, in
/// practice) longer than `after_bytes` are cut off there.
async fn cutting_fake(mut cfg: FakeConfig, data_type: &str, after_bytes: usize) -> FakeIterable {
    cfg.faults.cut_off = Some(CutOff {
        data_type: Some(data_type.into()),
        after_bytes,
        first_requests: 100_000,
    });
    FakeIterable::start(cfg).await.unwrap()
}

/// The identities of the stream's live rows, sorted, whatever the layout.
async fn live_identities(lake: &LakeStore, stream: &StreamDef) -> Vec<String> {
    let mut ids: Vec<String> = live_batches(lake, stream.name)
        .await
        .iter()
        .flat_map(|(_, batches)| batches.iter().flat_map(|b| identities(stream, b)))
        .collect();
    ids.sort();
    ids
}

/// A sync of `stream` in `mode` over four days, one unit, whose first day heavier than the
/// days before it is cut off however often it is read (windows are not split below a day):
/// the days before it commit, only it and the rest are quarantined, and the next run reads
/// just that, in one request.
async fn a_failing_day_keeps_the_days_before_it(seed: u64, stream: &str, mode: SyncMode) {
    let send = catalog::find(stream).unwrap();
    let data_type = send.data_type();
    let mut cfg = FakeConfig::small(seed);
    cfg.days = 4;
    let end = t("2024-01-05T00:00:00Z");
    let healthy = FakeIterable::start(cfg.clone()).await.unwrap();
    healthy.set_now(end);
    let day = |i: i64| t(START) + chrono::Duration::days(i);
    let sizes: Vec<usize> = (0..4)
        .map(|i| healthy.truth_body(data_type, day(i), day(i + 1)).len())
        .collect();
    // Single days before the heavy one come back whole; it never does.
    let heavy = (1..4)
        .find(|&k| sizes[k] > *sizes[..k].iter().max().unwrap())
        .unwrap_or_else(|| panic!("no day is heavier than the ones before it: {sizes:?}"));
    let faulty = cutting_fake(cfg, data_type, *sizes[..heavy].iter().max().unwrap()).await;
    faulty.set_now(end);
    let dir = tempfile::tempdir().unwrap();
    let lake = LakeStore::open(dir.path().to_str().unwrap()).unwrap();
    let opts = || {
        let mut o = options(vec![send], START, end);
        o.mode = Some(mode);
        o.window.initial_days = 4;
        o.window.min_window_secs = 86_400;
        o.window.max_attempts = 2;
        o
    };
    let report = sync::run(lake.clone(), client(&faulty), opts())
        .await
        .unwrap();
    let s = &report.streams[0];
    assert_eq!(s.status, StreamStatus::Quarantined, "{s:?}");
    let from = day(heavy as i64);
    let q: Vec<_> = s.quarantined.iter().map(|q| (q.start, q.end)).collect();
    assert_eq!(q, [(from, end)], "only the rest is quarantined");
    assert_eq!(
        live_identities(&lake, send).await,
        truth(&healthy, send, START, from).0,
        "the days before the heavy one are committed"
    );
    let manifest = Manifest::load(&lake).await.unwrap();
    assert_eq!(manifest.streams[stream].quarantine.len(), 1);

    sync(&healthy, &lake, opts()).await;
    assert_eq!(healthy.requests("/api/export/data.json"), 1);
    assert_eq!(
        live_identities(&lake, send).await,
        truth(&healthy, send, START, end).0
    );
    let manifest = Manifest::load(&lake).await.unwrap();
    assert!(manifest.streams[stream].quarantine.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_heavy_day_that_needs_many_splits_lands_in_one_run() {
    let mut cfg = FakeConfig::small(7);
    cfg.events_per_day = 1000;
    let end = t("2024-01-04T00:00:00Z");
    let probe = FakeIterable::start(cfg.clone()).await.unwrap();
    let body = probe.truth_body("emailSend", t(START), end).len();
    let longest = probe
        .truth_lines("emailSend", t(START), end)
        .iter()
        .map(String::len)
        .max()
        .unwrap();
    // Only windows of about a sixteenth of the unit come back whole (and any window that
    // holds the longest line).
    let after_bytes = (body / 16).max(2 * longest);
    assert!(
        body / after_bytes >= 8,
        "{body} bytes, lines up to {longest}"
    );
    let fake = cutting_fake(cfg, "emailSend", after_bytes).await;
    fake.set_now(end);
    let dir = tempfile::tempdir().unwrap();
    let lake = LakeStore::open(dir.path().to_str().unwrap()).unwrap();
    let send = catalog::find("email_send").unwrap();
    let report = sync(&fake, &lake, options(vec![send], START, end)).await;
    let s = &report.streams[0];
    assert!(
        s.window_retries > u64::from(sync::WindowPolicy::default().max_attempts),
        "more cut-offs than one unit used to be allowed: {s:?}"
    );
    assert_eq!(s.commits, 1, "{s:?}");
    assert_exact(&fake, &lake, send, START, end).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_window_that_keeps_failing_commits_the_days_before_it_and_quarantines_only_the_rest() {
    a_failing_day_keeps_the_days_before_it(8, "email_send", SyncMode::Incremental).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deduped_unit_given_up_midway_merges_what_it_read() {
    a_failing_day_keeps_the_days_before_it(12, "users", SyncMode::IncrementalDeduped).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_reread_is_not_committed_and_is_read_again_next_run() {
    let cfg = FakeConfig::small(9);
    let good = FakeIterable::start(cfg.clone()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let lake = LakeStore::open(dir.path().to_str().unwrap()).unwrap();
    let send = catalog::find("email_send").unwrap();
    let t1 = t("2024-01-04T00:00:00Z");
    good.set_now(t1);
    sync(&good, &lake, options(vec![send], START, t1)).await;
    let before = lake_contents(&lake, send).await;
    assert_eq!(before, truth(&good, send, START, t1));

    // The settling window's re-read of 2024-01-03 comes back with about a quarter of its rows.
    let mut short_cfg = cfg.clone();
    short_cfg.events_per_day /= 4;
    let short = FakeIterable::start(short_cfg).await.unwrap();
    let t2 = t("2024-01-04T12:00:00Z");
    short.set_now(t2);
    let report = sync::run(lake.clone(), client(&short), options(vec![send], START, t2))
        .await
        .unwrap();
    let s = &report.streams[0];
    assert_eq!(s.status, StreamStatus::Quarantined, "{s:?}");
    assert_eq!(s.commits, 1, "the quarantine is committed");
    assert_eq!(s.quarantined.len(), 1);
    assert_eq!(s.quarantined[0].start, t("2024-01-03T00:00:00Z"));
    assert!(
        s.quarantined[0].error.contains("date=2024-01-03")
            && s.quarantined[0].error.contains("--min-replace-ratio"),
        "{}",
        s.quarantined[0].error
    );
    assert_eq!(
        lake_contents(&lake, send).await,
        before,
        "the live rows stay"
    );
    assert_only_named_files(&lake, &Manifest::load(&lake).await.unwrap(), send.name).await;
    let manifest = Manifest::load(&lake).await.unwrap();
    assert_eq!(manifest.streams["email_send"].quarantine.len(), 1);

    // A ratio of 0 turns the guard off: the short read replaces the day.
    let mut off = options(vec![send], START, t2);
    off.min_replace_ratio = 0.0;
    sync(&short, &lake, off).await;
    let (_, counts) = lake_contents(&lake, send).await;
    let day3 = NaiveDate::from_ymd_opt(2024, 1, 3).unwrap();
    assert_eq!(
        counts[&day3],
        truth(&short, send, "2024-01-03T00:00:00Z", t2).1[&day3]
    );

    // A full read of the same day replaces it again, and the lake is exact.
    let t3 = t("2024-01-05T00:00:00Z");
    good.set_now(t3);
    sync(&good, &lake, options(vec![send], START, t3)).await;
    assert_exact(&good, &lake, send, START, t3).await;
    let manifest = Manifest::load(&lake).await.unwrap();
    assert!(manifest.streams["email_send"].quarantine.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_who_moved_to_later_days_do_not_trip_the_replace_guard() {
    let fake = FakeIterable::start(FakeConfig::small(13)).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let lake = LakeStore::open(dir.path().to_str().unwrap()).unwrap();
    let users = catalog::find("users").unwrap();
    let t1 = t("2024-01-02T00:00:00Z");
    fake.set_now(t1);
    sync(&fake, &lake, options(vec![users], START, t1)).await;
    // Read again in one-day units, the first of which does not reach the run's end: the
    // users of 2024-01-01 who updated their profile since are read by the later units.
    let t2 = t("2024-01-04T00:00:00Z");
    fake.set_now(t2);
    let mut opts = options(vec![users], START, t2);
    opts.window.initial_days = 1;
    opts.window.target_rows = 1;
    sync(&fake, &lake, opts).await;
    assert_exact(&fake, &lake, users, START, t2).await;
}
