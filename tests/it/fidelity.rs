//! Real data's shapes the fake sends on request, end to end: export rows without a readable
//! cursor (no `createdAt`, or one that is no instant) are kept exactly once whatever windows
//! read them again, in every sync mode and table format, read back by DuckDB; a metrics row
//! of a campaign nobody asked for is kept.

use std::collections::BTreeMap;

use arrow::array::Array;
use arrow::datatypes::{DataType, Int64Type, TimeUnit};
use chrono::{DateTime, Duration, Utc};
use iterable_lake::catalog::{self, SyncMode};
use iterable_lake::delta::TableFormat;
use iterable_lake::fake::{FakeConfig, FakeIterable};
use iterable_lake::manifest::Manifest;
use iterable_lake::sink::LakeStore;
use iterable_lake::state;
use iterable_lake::sync::{self, RunReport, StreamStatus, SyncOptions};

use crate::lake::{fake_client, live_batches};
use crate::support::{self, sql_str};

const START: &str = "2024-01-01T00:00:00Z";

fn t(s: &str) -> DateTime<Utc> {
    s.parse().unwrap()
}

/// A fake whose exports send one record in ten without a readable cursor.
async fn cursorless_fake() -> FakeIterable {
    let mut cfg = FakeConfig::small(14);
    cfg.faults.cursorless_every = Some(10);
    FakeIterable::start(cfg).await.unwrap()
}

async fn sync_at(
    fake: &FakeIterable,
    lake: &LakeStore,
    streams: &[&str],
    now: &str,
    mode: Option<SyncMode>,
    format: TableFormat,
) -> RunReport {
    fake.set_now(t(now));
    let mut o = SyncOptions::new(streams.iter().map(|s| catalog::find(s).unwrap()).collect());
    o.start = Some(t(START));
    o.now = t(now);
    o.lag = Duration::zero();
    o.mode = mode;
    o.table_format = format;
    let report = sync::run(lake.clone(), fake_client(fake, 8), o)
        .await
        .unwrap();
    for s in &report.streams {
        assert_eq!(s.status, StreamStatus::Succeeded, "{s:?}");
    }
    report
}

/// The `_event_id`s of the stream's live rows without a cursor, with their copies.
async fn cursorless_ids(lake: &LakeStore, stream: &str) -> BTreeMap<String, u64> {
    let mut ids = BTreeMap::new();
    for (f, batches) in live_batches(lake, stream).await {
        if !f
            .file
            .partition
            .ends_with("date=__HIVE_DEFAULT_PARTITION__")
        {
            continue;
        }
        for b in batches {
            let column = b.column_by_name("_event_id").unwrap();
            let column = arrow::array::AsArray::as_string::<i32>(column);
            for id in column.iter().flatten() {
                *ids.entry(id.to_string()).or_default() += 1;
            }
        }
    }
    ids
}

/// DuckDB over the lake's `stream`: rows, distinct `_event_id`s, rows whose `date` is null.
fn duckdb_counts(root: &str, stream: &str, format: TableFormat) -> Option<(i64, i64, i64)> {
    let from = match format {
        TableFormat::Delta => format!("delta_scan({})", sql_str(&format!("{root}/{stream}"))),
        TableFormat::Parquet => format!(
            "read_parquet({}, hive_partitioning = true)",
            sql_str(&format!("{root}/{stream}/**/*.parquet"))
        ),
    };
    let q = support::duckdb(&format!(
        "SELECT count(*), count(DISTINCT _event_id), count(*) FILTER (WHERE date IS NULL) \
         FROM {from}"
    ))?;
    let row = &q.rows[0];
    Some((
        row[0].as_i64().unwrap(),
        row[1].as_i64().unwrap(),
        row[2].as_i64().unwrap(),
    ))
}

/// Two incremental runs whose windows start on different days (the second re-reads from
/// the day before the first one's cursor) keep each row without a cursor once: the same
/// rows as one full refresh of the whole range.
/// `root` is a local folder or `s3://bucket/prefix`.
async fn overlapping_runs_keep_cursorless_rows_once(root: &str, format: TableFormat) {
    let fake = cursorless_fake().await;
    let lake = LakeStore::open(root).unwrap();
    let streams = ["email_send", "users"];
    let first = sync_at(&fake, &lake, &streams, "2024-01-03T12:00:00Z", None, format).await;
    let second = sync_at(&fake, &lake, &streams, "2024-01-05T00:00:00Z", None, format).await;
    let email_send = |r: &RunReport| {
        r.streams
            .iter()
            .find(|s| s.stream == "email_send")
            .cloned()
            .unwrap()
    };
    let (r1, r2) = (email_send(&first), email_send(&second));
    assert!(r1.rows_without_cursor > 0, "{r1:?}");
    assert_eq!(r1.new_rows_without_cursor, r1.rows_without_cursor);
    assert!(
        r2.new_rows_without_cursor < r2.rows_without_cursor,
        "the second run read rows of the first again: {r2:?}"
    );

    let reference_dir = tempfile::tempdir().unwrap();
    let reference = LakeStore::open(reference_dir.path().to_str().unwrap()).unwrap();
    let refresh = sync_at(
        &fake,
        &reference,
        &streams[..1],
        "2024-01-05T00:00:00Z",
        Some(SyncMode::FullRefreshOverwrite),
        format,
    )
    .await;
    let ids = cursorless_ids(&lake, "email_send").await;
    assert!(ids.values().all(|&n| n == 1), "{ids:?}");
    assert_eq!(ids, cursorless_ids(&reference, "email_send").await);
    assert_eq!(
        refresh.streams[0].rows_without_cursor,
        ids.len() as u64,
        "{:?}",
        refresh.streams[0]
    );

    let manifest = Manifest::load(&lake).await.unwrap();
    let truth: u64 = fake
        .truth_counts("emailSend", t(START), t("2024-01-05T00:00:00Z"))
        .values()
        .sum();
    assert_eq!(manifest.streams["email_send"].rows(), truth);
    let summary = state::summarize(root, &manifest);
    let email_send = summary
        .streams
        .iter()
        .find(|s| s.stream == "email_send")
        .unwrap();
    assert_eq!(email_send.rows_without_cursor, ids.len() as u64);
    assert!(
        state::render(&summary).contains(&format!(
            "rows without a cursor (kept once each in date=__HIVE_DEFAULT_PARTITION__): email_send {}",
            ids.len()
        )),
        "{}",
        state::render(&summary)
    );
    let json = serde_json::to_value(&summary).unwrap();
    let stream = json["streams"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["stream"] == "email_send")
        .unwrap();
    assert_eq!(stream["rows_without_cursor"], ids.len() as u64);

    // Users without a readable `profileUpdatedAt`: each version of a profile once.
    let users = support::duckdb(&format!(
        "SELECT count(*), (SELECT count(*) FROM (SELECT DISTINCT * EXCLUDE (_extracted_at) \
         FROM read_parquet({glob}))) FROM read_parquet({glob})",
        glob = sql_str(&format!(
            "{root}/users/date=__HIVE_DEFAULT_PARTITION__/*.parquet"
        ))
    ));
    if let Some(users) = users {
        let (rows, distinct) = (&users.rows[0][0], &users.rows[0][1]);
        assert!(rows.as_i64().unwrap() > 0);
        assert_eq!(rows, distinct);
    }

    let Some((rows, distinct, null_date)) = duckdb_counts(root, "email_send", format) else {
        return;
    };
    assert_eq!(
        (rows, distinct, null_date),
        (truth as i64, truth as i64, ids.len() as i64)
    );
}

#[tokio::test]
async fn overlapping_incremental_runs_keep_each_row_without_a_cursor_once() {
    let dir = tempfile::tempdir().unwrap();
    overlapping_runs_keep_cursorless_rows_once(dir.path().to_str().unwrap(), TableFormat::Parquet)
        .await;
}

#[tokio::test]
async fn a_delta_table_keeps_each_row_without_a_cursor_once() {
    let dir = tempfile::tempdir().unwrap();
    overlapping_runs_keep_cursorless_rows_once(dir.path().to_str().unwrap(), TableFormat::Delta)
        .await;
}

#[tokio::test]
async fn on_s3_each_row_without_a_cursor_is_kept_once() {
    let Some(s3) = support::require_s3() else {
        return;
    };
    let bucket = s3.new_bucket().await;
    overlapping_runs_keep_cursorless_rows_once(&bucket.s3_url("lake"), TableFormat::Delta).await;
}

/// Full refreshes read every row once and replace the rows without a cursor with the rest:
/// in overwrite mode the stream holds them once, in append mode each snapshot does.
#[tokio::test]
async fn full_refreshes_keep_each_row_without_a_cursor_once() {
    let fake = cursorless_fake().await;
    for mode in [SyncMode::FullRefreshOverwrite, SyncMode::FullRefreshAppend] {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_str().unwrap().to_string();
        let lake = LakeStore::open(&root).unwrap();
        let mut read = 0;
        for now in ["2024-01-05T00:00:00Z", "2024-01-06T00:00:00Z"] {
            let report = sync_at(
                &fake,
                &lake,
                &["email_send"],
                now,
                Some(mode),
                TableFormat::Parquet,
            )
            .await;
            read = report.streams[0].rows_without_cursor;
            assert!(read > 0, "{mode}: {:?}", report.streams[0]);
        }
        let ids = cursorless_ids(&lake, "email_send").await;
        let snapshots = match mode {
            SyncMode::FullRefreshAppend => 2,
            _ => 1,
        };
        assert_eq!(ids.len() as u64, read, "{mode}");
        assert!(ids.values().all(|&n| n == snapshots), "{mode}: {ids:?}");
        let Some((rows, distinct, null_date)) =
            duckdb_counts(&root, "email_send", TableFormat::Parquet)
        else {
            continue;
        };
        assert_eq!(rows, distinct * snapshots as i64, "{mode}");
        assert_eq!(null_date, read as i64 * snapshots as i64, "{mode}");
    }
    // An incremental run after the snapshots retires them and keeps every row once.
    let dir = tempfile::tempdir().unwrap();
    let lake = LakeStore::open(dir.path().to_str().unwrap()).unwrap();
    let append = Some(SyncMode::FullRefreshAppend);
    let format = TableFormat::Parquet;
    let refresh = sync_at(
        &fake,
        &lake,
        &["email_send"],
        "2024-01-05T00:00:00Z",
        append,
        format,
    );
    let read = refresh.await.streams[0].rows_without_cursor;
    sync_at(
        &fake,
        &lake,
        &["email_send"],
        "2024-01-06T00:00:00Z",
        None,
        format,
    )
    .await;
    let ids = cursorless_ids(&lake, "email_send").await;
    assert_eq!(ids.len() as u64, read);
    assert!(ids.values().all(|&n| n == 1), "{ids:?}");
}

/// `incremental-deduped` users: rows that nothing keys (no email, no userId, no cursor) are
/// kept in bucket 0 once each, though the second run reads the day before the first one's
/// cursor again. (Both runs come after the fake's last profile update: a keyless row that a
/// later update of its user replaces in the export stays in the lake, as nothing links the
/// two.)
#[tokio::test]
async fn deduped_users_keep_each_row_without_a_key_once() {
    let dir = tempfile::tempdir().unwrap();
    deduped_users_keep_keyless_rows_once(dir.path().to_str().unwrap()).await;
}

#[tokio::test]
async fn on_s3_deduped_users_keep_each_row_without_a_key_once() {
    let Some(s3) = support::require_s3() else {
        return;
    };
    let bucket = s3.new_bucket().await;
    deduped_users_keep_keyless_rows_once(&bucket.s3_url("lake")).await;
}

/// `root` is a local folder or `s3://bucket/prefix`.
async fn deduped_users_keep_keyless_rows_once(root: &str) {
    let mut cfg = FakeConfig::small(15);
    cfg.faults.cursorless_every = Some(10);
    cfg.faults.keyless_users = true;
    let fake = FakeIterable::start(cfg).await.unwrap();
    let lake = LakeStore::open(root).unwrap();
    let keyless_live = |lake: LakeStore| async move {
        let mut rows = 0;
        for (_, batches) in live_batches(&lake, "users").await {
            for b in batches {
                let email = b.column_by_name("email").unwrap();
                let user_id = b.column_by_name("userId").unwrap();
                rows += (0..b.num_rows())
                    .filter(|&i| email.is_null(i) && user_id.is_null(i))
                    .count();
            }
        }
        rows
    };
    let keyless_truth = |end: &str| {
        fake.truth_lines("user", t(START), t(end))
            .iter()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .filter(|v| v["email"].is_null() && v["userId"].is_null())
            .count()
    };
    for (n, now) in ["2024-02-01T00:00:00Z", "2024-02-02T00:00:00Z"]
        .iter()
        .enumerate()
    {
        fake.set_now(t(now));
        let mut o = SyncOptions::new(vec![catalog::find("users").unwrap()]);
        o.start = Some(t(START));
        o.now = t(now);
        o.lag = Duration::zero();
        o.mode = Some(SyncMode::IncrementalDeduped);
        // The second run reads the whole range again, from START (a month before the
        // first run's cursor).
        o.lookback_days = 31;
        let report = sync::run(lake.clone(), fake_client(&fake, 8), o)
            .await
            .unwrap();
        assert_eq!(report.streams[0].status, StreamStatus::Succeeded);
        assert!(report.streams[0].rows > 0, "run {n} read the users");
        let want = keyless_truth(now);
        assert!(want > 0, "the fake sent rows without a key");
        assert_eq!(keyless_live(lake.clone()).await, want, "run {n}");
    }
}

/// A `campaigns/metrics` answer naming a campaign the request did not ask for (and that
/// `GET /api/campaigns` does not list): its row is kept, typed, with the others.
#[tokio::test]
async fn a_metrics_row_of_a_campaign_not_asked_for_is_kept() {
    const UNASKED: i64 = 987_654_321;
    let mut cfg = FakeConfig::small(14);
    cfg.faults.unasked_metrics_campaign = Some(UNASKED);
    let fake = FakeIterable::start(cfg).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let lake = LakeStore::open(dir.path().to_str().unwrap()).unwrap();
    sync_at(
        &fake,
        &lake,
        &["campaigns_metrics"],
        "2024-01-04T00:00:00Z",
        None,
        TableFormat::Parquet,
    )
    .await;
    let listed: Vec<i64> = fake
        .truth_campaigns()
        .iter()
        .map(|c| c["id"].as_i64().unwrap())
        .collect();
    assert!(!listed.contains(&UNASKED));
    let mut want = listed.clone();
    want.push(UNASKED);
    want.sort_unstable();
    let mut got = Vec::new();
    let mut sends_of = BTreeMap::new();
    for (_, batches) in live_batches(&lake, "campaigns_metrics").await {
        for b in batches {
            let ids = b.column_by_name("id").unwrap();
            let ids = arrow::array::AsArray::as_primitive::<Int64Type>(ids);
            let sends = b.column_by_name("total_email_sends").unwrap();
            let sends = arrow::array::AsArray::as_primitive::<Int64Type>(sends);
            assert_eq!(
                b.column_by_name("_extra").unwrap().null_count(),
                b.num_rows()
            );
            for i in 0..b.num_rows() {
                got.push(ids.value(i));
                sends_of.insert(ids.value(i), sends.is_valid(i).then(|| sends.value(i)));
            }
        }
    }
    got.sort_unstable();
    assert_eq!(got, want);
    // The fake answers with the first campaign's metrics under the id nobody asked for.
    assert_eq!(sends_of[&UNASKED], sends_of[&listed[0]]);
}

/// Fields other connectors' schemas list (see the README's schema paragraph), sent by the
/// fake, land in typed columns and never in `_extra`.
#[tokio::test]
async fn fields_other_connectors_list_land_typed() {
    let ts = DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
    let fields: [(&str, &str, DataType); 14] = [
        ("email_unsubscribe", "channelId", DataType::Int64),
        ("email_bounce", "eventName", DataType::Utf8),
        ("email_click", "isBot", DataType::Boolean),
        ("email_send", "espName", DataType::Utf8),
        ("sms_send", "smsSendCount", DataType::Int64),
        ("sms_send_skip", "transactionalData", DataType::Utf8),
        ("push_open", "sentAt", ts.clone()),
        ("in_app_send", "priorityLevel", DataType::Float64),
        ("in_app_click", "sentAt", ts.clone()),
        ("in_app_open", "expiresAt", ts.clone()),
        ("whatsapp_received", "receivedAt", ts),
        ("whatsapp_received", "sanitized", DataType::Utf8),
        ("users", "itblUserId", DataType::Utf8),
        (
            "users",
            "userListIds",
            DataType::new_list(DataType::Int64, true),
        ),
    ];
    let fake = FakeIterable::start(FakeConfig::small(5)).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let lake = LakeStore::open(dir.path().to_str().unwrap()).unwrap();
    let mut streams: Vec<&str> = fields.iter().map(|(s, _, _)| *s).collect();
    streams.dedup();
    sync_at(
        &fake,
        &lake,
        &streams,
        "2024-01-04T00:00:00Z",
        None,
        TableFormat::Parquet,
    )
    .await;
    for (stream, field, data_type) in fields {
        let mut typed = 0;
        for (_, batches) in live_batches(&lake, stream).await {
            for b in batches {
                let column = b
                    .column_by_name(field)
                    .unwrap_or_else(|| panic!("{stream}.{field} is a column"));
                assert_eq!(column.data_type(), &data_type, "{stream}.{field}");
                typed += column.len() - column.null_count();
                let extra = b.column_by_name("_extra").unwrap();
                let extra = arrow::array::AsArray::as_string::<i32>(extra);
                for e in extra.iter().flatten() {
                    let e: serde_json::Value = serde_json::from_str(e).unwrap();
                    assert!(e.get(field).is_none(), "{stream}.{field} in _extra: {e}");
                }
            }
        }
        assert!(typed > 0, "{stream}.{field} holds values");
    }
}
