//! Proves the test harness with real parts: Parquet written through `object_store` to a local
//! directory and to the S3 server, read back by DuckDB with exact values and types; and the
//! object-store behaviours the lake's commit protocol relies on (conditional puts, multipart
//! uploads, list, delete) on both backends.
//!
//! Findings these tests pin down (they fail if a backend's behaviour changes):
//! - `PutMode::Create` is atomic on S3 (moto) and on `LocalFileSystem`: of concurrent
//!   creators exactly one wins, the others get `Error::AlreadyExists`.
//! - `PutMode::Update` (compare-and-swap on the ETag) works on S3 (moto) and fails with
//!   `Error::Precondition` on a stale or missing version; `LocalFileSystem` does not support it
//!   at all (`Error::NotImplemented`), so a commit protocol that must work on both backends
//!   can only use create-if-absent.

use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray,
};
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use bytes::Bytes;
use futures::TryStreamExt;
use object_store::buffered::BufWriter;
use object_store::path::Path;
use object_store::{
    Error, ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload, UpdateVersion,
};
use parquet::arrow::AsyncArrowWriter;
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;

use crate::support::{self, sql_str};

// ---------------------------------------------------------------------------------------
// Parquet written through object_store, read back by DuckDB
// ---------------------------------------------------------------------------------------

fn schema() -> Arc<Schema> {
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("name", DataType::Utf8, true),
        Field::new(
            "sent_at",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            true,
        ),
    ]))
}

/// 2024-01-02T03:04:05.123456Z in microseconds since the epoch.
const AT_US: i64 = 1_704_164_645_123_456;

/// Rows per hive partition: `k=v` gets three rows, `k=w` one.
fn batches() -> Vec<(&'static str, RecordBatch)> {
    let batch = |ids: Vec<i64>, names: Vec<Option<&str>>, ats: Vec<Option<i64>>| {
        let cols: Vec<ArrayRef> = vec![
            Arc::new(Int64Array::from(ids)),
            Arc::new(StringArray::from(names)),
            Arc::new(TimestampMicrosecondArray::from(ats).with_timezone("UTC")),
        ];
        RecordBatch::try_new(schema(), cols).unwrap()
    };
    vec![
        (
            "k=v/part-0.parquet",
            batch(
                vec![1, -2, i64::MAX],
                vec![Some("héllo wörld"), Some("日本語 🦆"), None],
                vec![Some(AT_US), None, Some(0)],
            ),
        ),
        (
            "k=w/part-0.parquet",
            batch(vec![4], vec![Some("")], vec![Some(-1)]),
        ),
    ]
}

/// What DuckDB must read back, ordered by id.
fn expected_rows() -> Vec<Vec<Value>> {
    vec![
        vec![json!(-2), json!("日本語 🦆"), Value::Null, json!("v")],
        vec![
            json!(1),
            json!("héllo wörld"),
            json!("2024-01-02T03:04:05.123456+00:00"),
            json!("v"),
        ],
        vec![
            json!(4),
            json!(""),
            json!("1969-12-31T23:59:59.999999+00:00"),
            json!("w"),
        ],
        vec![
            json!(i64::MAX),
            Value::Null,
            json!("1970-01-01T00:00:00+00:00"),
            json!("v"),
        ],
    ]
}

async fn write_parquet(store: &Arc<dyn ObjectStore>, path: &str, batch: &RecordBatch) {
    // BufWriter is tokio's AsyncWrite, which AsyncArrowWriter takes as it is (parquet 60
    // deprecates the ParquetObjectWriter wrapper in favour of this).
    let sink = BufWriter::new(Arc::clone(store), Path::from(path));
    let mut writer = AsyncArrowWriter::try_new(sink, batch.schema(), None).unwrap();
    writer.write(batch).await.unwrap();
    writer.close().await.unwrap();
}

async fn write_lake(store: &Arc<dyn ObjectStore>) {
    for (path, batch) in batches() {
        write_parquet(store, path, &batch).await;
    }
}

/// Reads the files written by `write_lake` under `root` (a local dir or an `s3://` URL).
fn assert_duckdb_reads_lake(root: &str) {
    let glob = format!("{}/**/*.parquet", root.trim_end_matches('/'));
    let sql = format!(
        "SELECT id, name, sent_at, k FROM read_parquet({}, hive_partitioning = true) ORDER BY id",
        sql_str(&glob)
    );
    let Some(result) = support::duckdb(&sql) else {
        return;
    };
    assert_eq!(result.columns, ["id", "name", "sent_at", "k"]);
    assert_eq!(
        result.types,
        ["BIGINT", "VARCHAR", "TIMESTAMP WITH TIME ZONE", "VARCHAR"]
    );
    assert_eq!(result.rows, expected_rows());

    // The Parquet schema itself, not just DuckDB's view of it.
    let sql = format!(
        "SELECT name, type, logical_type::VARCHAR AS logical FROM parquet_schema({}) \
         WHERE name = 'sent_at'",
        sql_str(&glob)
    );
    let schema = support::duckdb(&sql).unwrap();
    for row in &schema.rows {
        assert_eq!(row[1], json!("INT64"));
        let logical = row[2].as_str().unwrap();
        assert!(
            logical.contains("isAdjustedToUTC=1") && logical.contains("MICROS"),
            "timestamp logical type: {logical}"
        );
    }
    assert_eq!(schema.rows.len(), 2, "one `sent_at` column per file");
}

#[tokio::test]
async fn parquet_on_local_disk_reads_back_in_duckdb() {
    let dir = tempfile::tempdir().unwrap();
    let store = support::local_store(dir.path());
    write_lake(&store).await;
    assert!(dir.path().join("k=v/part-0.parquet").is_file());
    assert_duckdb_reads_lake(dir.path().to_str().unwrap());
}

#[tokio::test]
async fn parquet_on_s3_reads_back_in_duckdb() {
    let Some(s3) = support::require_s3() else {
        return;
    };
    let bucket = s3.new_bucket().await;
    let store = bucket.store();
    write_lake(&store).await;
    let listed: Vec<String> = store
        .list(None)
        .map_ok(|m| m.location.to_string())
        .try_collect()
        .await
        .unwrap();
    let mut listed = listed;
    listed.sort();
    assert_eq!(listed, ["k=v/part-0.parquet", "k=w/part-0.parquet"]);
    assert_duckdb_reads_lake(&bucket.url());
}

#[test]
fn duckdb_helper_reports_errors_and_scalars() {
    let Some(result) = support::duckdb("SELECT 40 + 2 AS answer") else {
        return;
    };
    assert_eq!(result.scalar_i64(), 42);
    assert_eq!(result.type_of("answer"), "INTEGER");
    let err = support::try_duckdb("SELECT * FROM no_such_table")
        .unwrap()
        .unwrap_err();
    assert!(err.contains("no_such_table"), "{err}");
    // No extension may be fetched from the internet, even when asked explicitly.
    let err = support::try_duckdb("INSTALL spatial").unwrap().unwrap_err();
    assert!(err.contains("spatial"), "{err}");
}

// ---------------------------------------------------------------------------------------
// Conditional puts
// ---------------------------------------------------------------------------------------

fn create() -> PutOptions {
    PutMode::Create.into()
}

async fn read(store: &Arc<dyn ObjectStore>, path: &Path) -> Bytes {
    store.get(path).await.unwrap().bytes().await.unwrap()
}

async fn assert_create_twice_conflicts(store: Arc<dyn ObjectStore>) {
    let path = Path::from("_manifest/00000001.json");
    store
        .put_opts(&path, PutPayload::from_static(b"first"), create())
        .await
        .unwrap();
    let err = store
        .put_opts(&path, PutPayload::from_static(b"second"), create())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::AlreadyExists { .. }), "{err:?}");
    assert_eq!(read(&store, &path).await, "first");
}

#[tokio::test]
async fn create_twice_conflicts_on_local_disk() {
    let dir = tempfile::tempdir().unwrap();
    assert_create_twice_conflicts(support::local_store(dir.path())).await;
}

#[tokio::test]
async fn create_twice_conflicts_on_s3() {
    let Some(s3) = support::require_s3() else {
        return;
    };
    assert_create_twice_conflicts(s3.new_bucket().await.store()).await;
}

/// `tasks` concurrent creators of each of `keys` keys: exactly one wins each key, the
/// rest get `AlreadyExists`, and the object holds the winner's bytes.
async fn assert_concurrent_create_has_one_winner(store: Arc<dyn ObjectStore>) {
    const KEYS: usize = 10;
    const TASKS: usize = 8;
    for key in 0..KEYS {
        let path = Path::from(format!("_manifest/{key:08}.json"));
        let barrier = Arc::new(tokio::sync::Barrier::new(TASKS));
        let handles: Vec<_> = (0..TASKS)
            .map(|task| {
                let (store, path, barrier) =
                    (Arc::clone(&store), path.clone(), Arc::clone(&barrier));
                tokio::spawn(async move {
                    barrier.wait().await;
                    let body = format!("writer {task}");
                    let res = store.put_opts(&path, body.into(), create()).await;
                    (task, res)
                })
            })
            .collect();
        let mut winners = Vec::new();
        for handle in handles {
            match handle.await.unwrap() {
                (task, Ok(_)) => winners.push(task),
                (_, Err(Error::AlreadyExists { .. })) => {}
                (_, Err(e)) => panic!("key {key}: unexpected error {e:?}"),
            }
        }
        assert_eq!(winners.len(), 1, "key {key}: winners {winners:?}");
        assert_eq!(read(&store, &path).await, format!("writer {}", winners[0]));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_create_has_one_winner_on_local_disk() {
    let dir = tempfile::tempdir().unwrap();
    assert_concurrent_create_has_one_winner(support::local_store(dir.path())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_create_has_one_winner_on_s3() {
    let Some(s3) = support::require_s3() else {
        return;
    };
    assert_concurrent_create_has_one_winner(s3.new_bucket().await.store()).await;
}

#[tokio::test]
async fn update_is_compare_and_swap_on_s3() {
    let Some(s3) = support::require_s3() else {
        return;
    };
    let store = s3.new_bucket().await.store();
    let path = Path::from("_manifest/current.json");

    let v1 = store
        .put_opts(&path, PutPayload::from_static(b"v1"), create())
        .await
        .unwrap();
    assert!(v1.e_tag.is_some(), "S3 returns an ETag: {v1:?}");
    let v1 = UpdateVersion::from(v1);

    let v2 = store
        .put_opts(
            &path,
            PutPayload::from_static(b"v2"),
            PutMode::Update(v1.clone()).into(),
        )
        .await
        .unwrap();
    assert_ne!(v2.e_tag.as_ref(), v1.e_tag.as_ref());
    assert_eq!(read(&store, &path).await, "v2");

    // A writer still holding v1 lost the race: it must be refused, and v2 kept.
    let err = store
        .put_opts(
            &path,
            PutPayload::from_static(b"stale"),
            PutMode::Update(v1).into(),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Precondition { .. }), "{err:?}");
    assert_eq!(read(&store, &path).await, "v2");

    // Updating an object that does not exist is a precondition failure too.
    let err = store
        .put_opts(
            &Path::from("_manifest/missing.json"),
            PutPayload::from_static(b"x"),
            PutMode::Update(v2.into()).into(),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Precondition { .. }), "{err:?}");
}

#[tokio::test]
async fn update_is_not_implemented_on_local_disk() {
    let dir = tempfile::tempdir().unwrap();
    let store = support::local_store(dir.path());
    let path = Path::from("_manifest/current.json");
    let v1 = store
        .put_opts(&path, PutPayload::from_static(b"v1"), create())
        .await
        .unwrap();
    let err = store
        .put_opts(
            &path,
            PutPayload::from_static(b"v2"),
            PutMode::Update(v1.into()).into(),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, Error::NotImplemented { .. }), "{err:?}");
    assert_eq!(read(&store, &path).await, "v1");
}

// ---------------------------------------------------------------------------------------
// Multipart, list, delete
// ---------------------------------------------------------------------------------------

/// Deterministic bytes that do not compress or repeat at part boundaries (xorshift).
fn pseudo_random(len: usize) -> Vec<u8> {
    let mut state = 0x9E37_79B9_7F4A_7C15_u64;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

/// Writes > 10 MiB through `BufWriter` (so it switches to a multipart upload) in uneven
/// chunks and reads it back; returns the object's ETag.
async fn assert_multipart_round_trips(store: Arc<dyn ObjectStore>) -> Option<String> {
    let data = pseudo_random(23 * 1024 * 1024 + 12_345);
    let path = Path::from("stream/date=2024-01-01/part-big.parquet");
    let mut writer = BufWriter::new(Arc::clone(&store), path.clone());
    for chunk in data.chunks(777_777) {
        writer.write_all(chunk).await.unwrap();
    }
    writer.shutdown().await.unwrap();

    let meta = store.head(&path).await.unwrap();
    assert_eq!(meta.size, data.len() as u64);
    let back = read(&store, &path).await;
    assert!(back == data.as_slice(), "multipart upload bytes differ");
    meta.e_tag
}

#[tokio::test]
async fn multipart_upload_round_trips_on_local_disk() {
    let dir = tempfile::tempdir().unwrap();
    assert_multipart_round_trips(support::local_store(dir.path())).await;
}

#[tokio::test]
async fn multipart_upload_round_trips_on_s3() {
    let Some(s3) = support::require_s3() else {
        return;
    };
    let e_tag = assert_multipart_round_trips(s3.new_bucket().await.store())
        .await
        .expect("S3 object has an ETag");
    // S3 gives a multipart object the ETag `"<md5 of part md5s>-<parts>"`: proof that
    // BufWriter really uploaded parts (10 MiB each, so 3 for 23 MiB).
    assert!(e_tag.trim_matches('"').ends_with("-3"), "ETag {e_tag}");
}

async fn assert_list_and_delete(store: Arc<dyn ObjectStore>) {
    let paths = [
        "email_send/date=2024-01-01/part-a.parquet",
        "email_send/date=2024-01-02/part-b.parquet",
        "email_open/date=2024-01-01/part-c.parquet",
        "_manifest/00000001.json",
    ];
    for p in paths {
        store
            .put(&Path::from(p), PutPayload::from(p.as_bytes().to_vec()))
            .await
            .unwrap();
    }
    let mut under_send: Vec<String> = store
        .list(Some(&Path::from("email_send")))
        .map_ok(|m| m.location.to_string())
        .try_collect()
        .await
        .unwrap();
    under_send.sort();
    assert_eq!(under_send, [paths[0], paths[1]]);

    let top = store.list_with_delimiter(None).await.unwrap();
    let mut dirs: Vec<String> = top.common_prefixes.iter().map(|p| p.to_string()).collect();
    dirs.sort();
    assert_eq!(dirs, ["_manifest", "email_open", "email_send"]);
    assert!(top.objects.is_empty());

    store.delete(&Path::from(paths[0])).await.unwrap();
    let left: Vec<_> = store
        .list(Some(&Path::from("email_send")))
        .map_ok(|m| m.location.to_string())
        .try_collect()
        .await
        .unwrap();
    assert_eq!(left, [paths[1]]);
    let err = store.get(&Path::from(paths[0])).await.unwrap_err();
    assert!(matches!(err, Error::NotFound { .. }), "{err:?}");
}

#[tokio::test]
async fn list_and_delete_on_local_disk() {
    let dir = tempfile::tempdir().unwrap();
    assert_list_and_delete(support::local_store(dir.path())).await;
}

#[tokio::test]
async fn list_and_delete_on_s3() {
    let Some(s3) = support::require_s3() else {
        return;
    };
    assert_list_and_delete(s3.new_bucket().await.store()).await;
}

/// The column under test has the type DESIGN.md requires for instants.
#[test]
fn written_timestamp_column_is_utc_micros() {
    let (_, batch) = &batches()[0];
    assert_eq!(
        batch.column(2).data_type(),
        &DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
    );
}
