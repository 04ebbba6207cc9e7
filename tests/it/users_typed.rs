//! The `users` stream with typed custom fields (from `users/getFields`) and in
//! `incremental-deduped` mode, from the fake API over HTTP into local and S3 lakes, checked
//! against the fake's ground truth.

use std::collections::{BTreeMap, BTreeSet};

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{DataType, Float64Type, TimestampMicrosecondType};
use chrono::{DateTime, Utc};
use iterable_lake::api::ApiClient;
use iterable_lake::catalog::{self, StreamDef, SyncMode};
use iterable_lake::convert::timestamp::parse_instant;
use iterable_lake::fake::{FakeConfig, FakeIterable};
use iterable_lake::manifest::Manifest;
use iterable_lake::sink::LakeStore;
use iterable_lake::sink::bucket::{bucket_of, bucket_partition};
use iterable_lake::sync::{self, RunReport, StreamStatus, SyncOptions};
use serde_json::Value;

use crate::lake::{fake_client, live_batches};
use crate::support;

const START: &str = "2024-01-01T00:00:00Z";

fn t(s: &str) -> DateTime<Utc> {
    s.parse().unwrap()
}

fn users() -> &'static StreamDef {
    catalog::find("users").unwrap()
}

fn client(fake: &FakeIterable) -> ApiClient {
    fake_client(fake, 8)
}

/// Sync `users` at the fake's clock `now`, expecting success.
async fn sync_users(
    fake: &FakeIterable,
    lake: &LakeStore,
    now: DateTime<Utc>,
    mode: Option<SyncMode>,
) -> RunReport {
    fake.set_now(now);
    let mut o = SyncOptions::new(vec![users()]);
    o.start = Some(t(START));
    o.now = now;
    o.lag = chrono::Duration::zero();
    o.lookback_days = 0;
    o.mode = mode;
    o.dedupe_buckets = BUCKETS;
    let report = sync::run(lake.clone(), client(fake), o).await.unwrap();
    let s = &report.streams[0];
    assert_eq!(s.status, StreamStatus::Succeeded, "{s:?}");
    report
}

const BUCKETS: u32 = 256;

/// The fake's current users updated in `[start, end)`, as JSON objects by email.
fn truth(fake: &FakeIterable, start: DateTime<Utc>, end: DateTime<Utc>) -> BTreeMap<String, Value> {
    fake.truth_lines("user", start, end)
        .iter()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            (v["email"].as_str().unwrap().to_string(), v)
        })
        .collect()
}

/// A timestamp as the fake writes it: text, or epoch milliseconds.
fn micros(v: &Value) -> i64 {
    match v.as_i64() {
        Some(ms) => ms * 1000,
        None => parse_instant(v.as_str().unwrap()).unwrap(),
    }
}

/// Every live row of `users`: email → (profileUpdatedAt, the row's batch and index).
async fn live_rows(lake: &LakeStore) -> Vec<(String, i64, RecordBatch, usize)> {
    let mut out = Vec::new();
    for (_, batches) in live_batches(lake, "users").await {
        for b in batches {
            let email = b["email"].as_string::<i32>().clone();
            let at = b["profileUpdatedAt"]
                .as_primitive::<TimestampMicrosecondType>()
                .clone();
            for i in 0..b.num_rows() {
                out.push((email.value(i).to_string(), at.value(i), b.clone(), i));
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn custom_fields_land_typed_and_a_new_field_is_a_new_column_in_new_files_only() {
    let fake = FakeIterable::start(FakeConfig::small(21)).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let lake = LakeStore::open(dir.path().to_str().unwrap()).unwrap();
    let t1 = fake.midpoint() - chrono::Duration::hours(6);
    let first = sync_users(&fake, &lake, t1, None).await;
    let m1 = Manifest::load(&lake).await.unwrap();
    let state1 = &m1.streams["users"];
    let custom: Vec<&str> = state1
        .custom_fields
        .iter()
        .map(|f| f.name.as_str())
        .collect();
    assert!(custom.contains(&"customScore") && custom.contains(&"shoppingCart.total"));
    assert!(!custom.contains(&"loyaltyTier"), "{custom:?}");
    assert!(
        !custom.iter().any(|c| c.starts_with("itblInternal")),
        "declared"
    );

    // Values land typed, checked against the fake's rows.
    let want = truth(&fake, t(START), t1);
    let rows = live_rows(&lake).await;
    assert_eq!(rows.len(), want.len());
    let (mut scores, mut big, mut totals) = (0, 0, 0);
    for (email, _, b, i) in &rows {
        let w = &want[email];
        let extra: Value = match b["_extra"].as_string::<i32>() {
            e if e.is_null(*i) => Value::Null,
            e => serde_json::from_str(e.value(*i)).unwrap(),
        };
        assert!(extra.get("customScore").is_none(), "{extra}");
        let score = b["customScore"].as_primitive::<Float64Type>();
        match &w["customScore"] {
            Value::Null => assert!(score.is_null(*i)),
            Value::String(s) => assert_eq!(score.value(*i), s.parse::<f64>().unwrap()),
            n => assert_eq!(score.value(*i), n.as_f64().unwrap()),
        }
        scores += usize::from(score.is_valid(*i));
        if let Some(raw) = w.get("bigCounter") {
            assert!(b["bigCounter"].is_null(*i));
            assert_eq!(extra["bigCounter"].to_string(), raw.to_string());
            big += 1;
        }
        let cart = b["shoppingCart"].as_struct();
        let total = cart
            .column_by_name("total")
            .unwrap()
            .as_primitive::<Float64Type>();
        match w.get("shoppingCart.total").and_then(Value::as_f64) {
            Some(v) => {
                assert_eq!(total.value(*i), v);
                totals += 1;
            }
            None => assert!(total.is_null(*i), "{:?}", w.get("shoppingCart.total")),
        }
    }
    assert!(
        scores > 0 && big > 0 && totals > 0,
        "{scores} {big} {totals}"
    );
    let schema = rows[0].2.schema();
    assert_eq!(
        schema.field_with_name("shoppingCart").unwrap().data_type(),
        &DataType::Struct(
            vec![
                arrow::datatypes::Field::new("itemCount", DataType::Int64, true),
                arrow::datatypes::Field::new("total", DataType::Float64, true),
            ]
            .into()
        )
    );
    assert!(schema.field_with_name("loyaltyTier").is_err());

    // The field appears past the midpoint: a new column in the second run's files only.
    let t2 = fake.midpoint() + chrono::Duration::hours(18);
    let second = sync_users(&fake, &lake, t2, None).await;
    let m2 = Manifest::load(&lake).await.unwrap();
    let state2 = &m2.streams["users"];
    assert_eq!(state2.schema_version, state1.schema_version + 1);
    assert_eq!(
        state2.custom_fields.last().map(|f| f.name.as_str()),
        Some("loyaltyTier")
    );
    assert_eq!(
        state2.custom_fields[..state1.custom_fields.len()],
        state1.custom_fields
    );
    let mut runs = BTreeSet::new();
    for (f, batches) in live_batches(&lake, "users").await {
        let has = batches[0].schema().field_with_name("loyaltyTier").is_ok();
        assert_eq!(has, f.run == second.run_id, "{}", f.file.path);
        runs.insert(f.run);
    }
    assert_eq!(
        runs,
        BTreeSet::from([first.run_id.clone(), second.run_id.clone()]),
        "files of both versions are live"
    );

    let sql = format!(
        "SELECT typeof(loyaltyTier), typeof(customScore), typeof(shoppingCart), \
         count(loyaltyTier), count(*) FROM delta_scan({}) \
         GROUP BY ALL",
        support::sql_str(&format!("{}/users", dir.path().display()))
    );
    let Some(result) = support::duckdb(&sql) else {
        return;
    };
    assert_eq!(result.rows.len(), 1, "{result:?}");
    let row = &result.rows[0];
    assert_eq!(row[0], "VARCHAR");
    assert_eq!(row[1], "DOUBLE");
    assert_eq!(row[2], "STRUCT(itemCount BIGINT, total DOUBLE)");
    assert!(row[3].as_u64().unwrap() > 0, "{row:?}");
    assert_eq!(
        row[4].as_u64().unwrap(),
        live_rows(&lake).await.len() as u64
    );
}

/// Three deduped runs with users updated in between: after each, one row per user equal to
/// the fake's latest, and the third run rewrites exactly the buckets of the users it read.
async fn deduped_runs_hold_the_latest_row_per_user(fake: &FakeIterable, lake: &LakeStore) {
    let times = [
        t("2024-01-02T00:00:00Z"),
        t("2024-01-02T12:00:00Z"),
        t("2024-01-02T20:00:00Z"),
    ];
    let mut before: BTreeMap<String, String> = BTreeMap::new();
    for (n, &now) in times.iter().enumerate() {
        let report = sync_users(fake, lake, now, Some(SyncMode::IncrementalDeduped)).await;
        assert_eq!(report.streams[0].mode, SyncMode::IncrementalDeduped);
        let want = truth(fake, t(START), now);
        let rows = live_rows(lake).await;
        let got: BTreeMap<String, i64> =
            rows.iter().map(|(e, at, _, _)| (e.clone(), *at)).collect();
        assert_eq!(got.len(), rows.len(), "run {n}: one row per user");
        let want_at: BTreeMap<String, i64> = want
            .iter()
            .map(|(e, v)| (e.clone(), micros(&v["profileUpdatedAt"])))
            .collect();
        assert_eq!(got, want_at, "run {n}: each user's latest profile");
        let manifest = Manifest::load(lake).await.unwrap();
        let state = &manifest.streams["users"];
        assert_eq!(state.buckets, Some(BUCKETS));
        assert!(
            state
                .files
                .iter()
                .all(|f| f.file.partition.starts_with("bucket="))
        );
        let after: BTreeMap<String, String> = state
            .files
            .iter()
            .map(|f| (f.file.partition.clone(), f.run.clone()))
            .collect();
        assert_eq!(after.len(), state.files.len(), "one file per bucket");
        if n > 0 {
            // With no lookback, a run reads from the start of the previous cursor's day.
            let from = times[n - 1]
                .date_naive()
                .and_hms_opt(0, 0, 0)
                .unwrap()
                .and_utc();
            let read = truth(fake, from, now);
            let expected: BTreeSet<String> = read
                .keys()
                .map(|e| bucket_partition(bucket_of(Some(&format!("email:{e}")), BUCKETS), BUCKETS))
                .collect();
            let rewritten: BTreeSet<String> = after
                .iter()
                .filter(|(_, run)| **run == report.run_id)
                .map(|(p, _)| p.clone())
                .collect();
            assert_eq!(
                rewritten, expected,
                "run {n} rewrote the buckets of the users it read"
            );
            assert!(
                !expected.is_empty() && expected.len() < after.len(),
                "run {n} touched some buckets and left others: {} of {}",
                expected.len(),
                after.len()
            );
            for (p, run) in &after {
                if !expected.contains(p) {
                    assert_eq!(
                        before.get(p),
                        Some(run),
                        "untouched bucket {p} kept its file"
                    );
                }
            }
        }
        before = after;
    }
}

fn files_under(path: &std::path::Path) -> usize {
    match std::fs::read_dir(path) {
        Ok(entries) => entries
            .map(|e| e.unwrap().path())
            .map(|p| if p.is_dir() { files_under(&p) } else { 1 })
            .sum(),
        Err(_) => 0,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deduped_users_on_local_disk() {
    let fake = FakeIterable::start(FakeConfig::small(22)).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let lake = LakeStore::open(dir.path().to_str().unwrap()).unwrap();
    deduped_runs_hold_the_latest_row_per_user(&fake, &lake).await;
    assert_eq!(
        files_under(&dir.path().join("_staging")),
        0,
        "staging is cleaned up"
    );
    let sql = format!(
        "SELECT count(*), count(DISTINCT email), count(DISTINCT bucket) \
         FROM delta_scan({})",
        support::sql_str(&format!("{}/users", dir.path().display()))
    );
    let Some(result) = support::duckdb(&sql) else {
        return;
    };
    let row = &result.rows[0];
    assert_eq!(row[0], row[1], "one row per email: {row:?}");
    assert_eq!(
        row[0].as_u64().unwrap(),
        live_rows(&lake).await.len() as u64
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deduped_users_on_s3() {
    let Some(s3) = support::require_s3() else {
        return;
    };
    let fake = FakeIterable::start(FakeConfig::small(23)).await.unwrap();
    let bucket = s3.new_bucket().await;
    let lake = LakeStore::open(&bucket.s3_url("lake")).unwrap();
    deduped_runs_hold_the_latest_row_per_user(&fake, &lake).await;
}

/// `users` holds exactly one row per user updated in `[START, end)`, each the latest.
async fn assert_one_latest_row_per_user(fake: &FakeIterable, lake: &LakeStore, end: DateTime<Utc>) {
    let want: BTreeMap<String, i64> = truth(fake, t(START), end)
        .iter()
        .map(|(e, v)| (e.clone(), micros(&v["profileUpdatedAt"])))
        .collect();
    let rows = live_rows(lake).await;
    let got: BTreeMap<String, i64> = rows.iter().map(|(e, at, _, _)| (e.clone(), *at)).collect();
    assert_eq!(got.len(), rows.len(), "one row per user");
    assert_eq!(got.len(), want.len(), "every user");
    assert_eq!(got, want);
}

/// Every live file of `users` lies in the layout of `prefix` (`date=`, `bucket=`).
async fn assert_layout(lake: &LakeStore, prefix: &str) {
    let m = Manifest::load(lake).await.unwrap();
    let files = &m.streams["users"].files;
    assert!(!files.is_empty());
    for f in files {
        let rest = f.file.path.strip_prefix("users/").unwrap();
        assert!(
            rest.starts_with(prefix),
            "{} is not in {prefix}",
            f.file.path
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_switch_of_mode_stopped_early_leaves_no_gap() {
    let fake = FakeIterable::start(FakeConfig::small(23)).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let lake = LakeStore::open(dir.path().to_str().unwrap()).unwrap();
    let (early, end) = (t("2024-01-02T00:00:00Z"), t("2024-01-04T00:00:00Z"));
    sync_users(&fake, &lake, end, Some(SyncMode::Incremental)).await;
    // The switch's first run stops early; the next one must still read from the start.
    sync_users(&fake, &lake, early, Some(SyncMode::IncrementalDeduped)).await;
    let m = Manifest::load(&lake).await.unwrap();
    assert_eq!(
        m.streams["users"].cursor,
        Some(early),
        "the switch reset the cursor"
    );
    assert_layout(&lake, "bucket=").await;
    let last = sync_users(&fake, &lake, end, Some(SyncMode::IncrementalDeduped)).await;
    assert_ne!(last.streams[0].status, StreamStatus::UpToDate);
    assert_one_latest_row_per_user(&fake, &lake, end).await;
    assert_layout(&lake, "bucket=").await;
    // And back, stopped early again. `incremental` keeps a user's older profile in the
    // partition of its older update: every user is there, with its latest profile among its
    // rows, and no row twice.
    sync_users(&fake, &lake, early, Some(SyncMode::Incremental)).await;
    assert_layout(&lake, "date=").await;
    sync_users(&fake, &lake, end, Some(SyncMode::Incremental)).await;
    let rows = live_rows(&lake).await;
    let distinct: BTreeSet<(String, i64)> =
        rows.iter().map(|(e, at, _, _)| (e.clone(), *at)).collect();
    assert_eq!(distinct.len(), rows.len(), "no row twice");
    let mut latest: BTreeMap<String, i64> = BTreeMap::new();
    for (e, at) in distinct {
        let l = latest.entry(e).or_insert(at);
        *l = (*l).max(at);
    }
    let want: BTreeMap<String, i64> = truth(&fake, t(START), end)
        .iter()
        .map(|(e, v)| (e.clone(), micros(&v["profileUpdatedAt"])))
        .collect();
    assert_eq!(latest, want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_refresh_append_then_incremental_retires_every_snapshot() {
    let fake = FakeIterable::start(FakeConfig::small(24)).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let lake = LakeStore::open(dir.path().to_str().unwrap()).unwrap();
    let end = t("2024-01-04T00:00:00Z");
    sync_users(&fake, &lake, end, Some(SyncMode::FullRefreshAppend)).await;
    assert_layout(&lake, "snapshot_date=").await;
    sync_users(&fake, &lake, end, Some(SyncMode::Incremental)).await;
    assert_layout(&lake, "date=").await;
    assert_one_latest_row_per_user(&fake, &lake, end).await;
    // full-refresh-append, then deduped: the snapshots go too.
    sync_users(&fake, &lake, end, Some(SyncMode::FullRefreshAppend)).await;
    sync_users(&fake, &lake, end, Some(SyncMode::IncrementalDeduped)).await;
    assert_layout(&lake, "bucket=").await;
    assert_one_latest_row_per_user(&fake, &lake, end).await;
}

/// A row's key as the deduped layout has it (`email:…`, or `userId:…` without an email),
/// with its userId and `profileUpdatedAt`.
type Keyed = BTreeMap<String, (Option<String>, i64)>;

/// The fake's current users updated in `[start, end)`, by key.
fn truth_by_key(fake: &FakeIterable, start: DateTime<Utc>, end: DateTime<Utc>) -> Keyed {
    let mut out = Keyed::new();
    for line in fake.truth_lines("user", start, end) {
        let v: Value = serde_json::from_str(&line).unwrap();
        let user_id = v["userId"].as_str().map(str::to_string);
        let key = match (v["email"].as_str(), &user_id) {
            (Some(e), _) => format!("email:{e}"),
            (None, Some(u)) => format!("userId:{u}"),
            (None, None) => panic!("a user without email and userId: {line}"),
        };
        let at = micros(&v["profileUpdatedAt"]);
        assert!(out.insert(key, (user_id, at)).is_none(), "{line}");
    }
    out
}

/// Every live row of `users` by key, checking there is one per key.
async fn live_by_key(lake: &LakeStore) -> Keyed {
    let mut out = Keyed::new();
    for (_, batches) in live_batches(lake, "users").await {
        for b in batches {
            let email = b["email"].as_string::<i32>();
            let user_id = b["userId"].as_string::<i32>();
            let at = b["profileUpdatedAt"].as_primitive::<TimestampMicrosecondType>();
            for i in 0..b.num_rows() {
                let uid = user_id.is_valid(i).then(|| user_id.value(i).to_string());
                let key = match (email.is_valid(i), &uid) {
                    (true, _) => format!("email:{}", email.value(i)),
                    (false, Some(u)) => format!("userId:{u}"),
                    (false, None) => panic!("a row without a key"),
                };
                assert!(out.insert(key, (uid, at.value(i))).is_none());
            }
        }
    }
    out
}

/// Identity changes over HTTP, in a deduped lake of many buckets: a userId-only user who
/// gains an email is one row afterwards (its `userId:…` row, in another bucket, is
/// retired); a user whose email changes keeps the old email's row beside the new one
/// (the export does not say that an email is gone, so the old row stays, with the same
/// userId).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deduped_users_whose_identity_changes() {
    let fake = FakeIterable::start(FakeConfig {
        identity_changes: true,
        ..FakeConfig::small(24)
    })
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let lake = LakeStore::open(dir.path().to_str().unwrap()).unwrap();
    let deduped = Some(SyncMode::IncrementalDeduped);
    let t1 = fake.midpoint() - chrono::Duration::hours(1);
    sync_users(&fake, &lake, t1, deduped).await;
    let first = live_by_key(&lake).await;
    assert_eq!(first, truth_by_key(&fake, t(START), t1));

    let end = fake.config().start + chrono::Duration::days(i64::from(fake.config().days) + 1);
    sync_users(&fake, &lake, end, deduped).await;
    let now = truth_by_key(&fake, t(START), end);
    let gained: Vec<&String> = first
        .keys()
        .filter(|k| k.starts_with("userId:") && !now.contains_key(*k))
        .collect();
    let changed: Keyed = first
        .iter()
        .filter(|(k, _)| k.starts_with("email:was.") && !now.contains_key(*k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    assert!(
        !gained.is_empty() && !changed.is_empty(),
        "the fake changes identities: {gained:?} {changed:?}"
    );
    let mut want = now.clone();
    want.extend(changed.clone());
    assert_eq!(live_by_key(&lake).await, want);
    for (key, (user_id, _)) in &changed {
        let user_id = user_id.as_deref().unwrap();
        let rows: Vec<&String> = want
            .iter()
            .filter(|(_, (u, _))| u.as_deref() == Some(user_id))
            .map(|(k, _)| k)
            .collect();
        assert_eq!(rows.len(), 2, "{key}: the old and the new email: {rows:?}");
    }
}
