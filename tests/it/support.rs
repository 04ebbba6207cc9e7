//! Shared helpers for every integration test: the S3 server (moto, started by
//! `scripts/test.sh`), object stores over it and over local temp dirs, and DuckDB read-back.
//!
//! Tests that need S3 begin with `let Some(s3) = support::require_s3() else { return };`,
//! and read back with `let Some(result) = support::duckdb(sql) else { return };`. Outside CI
//! a missing tool prints `skipped: …` and the test returns early; with `CI=true` it panics
//! instead, so CI can never pass by skipping.

#![allow(dead_code)] // each test module uses its own subset

use std::path::Path as FsPath;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use object_store::ObjectStore;
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use serde::Deserialize;
use serde_json::Value;

/// True when the tests run in CI (`CI` set to anything but empty, `0` or `false`).
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "0" && v != "false")
}

/// A test's tool is missing: fail in CI, otherwise say so and let the caller skip.
fn missing(what: &str) {
    let msg = format!("{what} is not available (run the tests with scripts/test.sh)");
    if in_ci() {
        panic!("CI=true but {msg}");
    }
    eprintln!("skipped: {msg}");
}

// ---------------------------------------------------------------------------------------
// S3 (moto)
// ---------------------------------------------------------------------------------------

/// Where the test S3 server is, read from the variables `scripts/test.sh` exports.
#[derive(Debug, Clone)]
pub struct S3Target {
    /// `http://127.0.0.1:PORT`
    pub endpoint: String,
    pub region: String,
    pub access_key_id: String,
    pub secret_access_key: String,
}

/// True when `scripts/test.sh` (or an equivalent) has provided an S3 server.
pub fn s3_available() -> bool {
    s3_target_from_env().is_some()
}

fn s3_target_from_env() -> Option<S3Target> {
    if std::env::var("ITERABLE_LAKE_TEST_S3").ok().as_deref() != Some("1") {
        return None;
    }
    let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    Some(S3Target {
        endpoint: var("AWS_ENDPOINT_URL")?,
        region: var("AWS_REGION")
            .or_else(|| var("AWS_DEFAULT_REGION"))
            .unwrap_or_else(|| "us-east-1".into()),
        access_key_id: var("AWS_ACCESS_KEY_ID")?,
        secret_access_key: var("AWS_SECRET_ACCESS_KEY")?,
    })
}

/// The test S3 server, or `None` (after printing `skipped: …`) when there is none.
/// Panics when `CI=true` and there is none: tests that need S3 must fail in CI, never skip.
pub fn require_s3() -> Option<S3Target> {
    let target = s3_target_from_env();
    if target.is_none() {
        missing("the test S3 server (ITERABLE_LAKE_TEST_S3=1, AWS_ENDPOINT_URL, AWS_* keys)");
    }
    target
}

/// A bucket made for one test on the test S3 server.
#[derive(Debug, Clone)]
pub struct S3Bucket {
    pub target: S3Target,
    pub name: String,
}

impl S3Target {
    /// Creates a bucket with a name no other test (in this or any other run) uses.
    pub async fn new_bucket(&self) -> S3Bucket {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock after 1970")
            .subsec_nanos();
        let name = format!(
            "it-{}-{}-{nanos}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        // moto accepts unsigned requests, so a plain PUT is enough to create a bucket.
        let url = format!("{}/{name}", self.endpoint.trim_end_matches('/'));
        let resp = reqwest::Client::new()
            .put(&url)
            .send()
            .await
            .unwrap_or_else(|e| panic!("create bucket: PUT {url}: {e}"));
        let status = resp.status();
        assert!(
            status.is_success(),
            "create bucket: PUT {url}: {status}: {}",
            resp.text().await.unwrap_or_default()
        );
        S3Bucket {
            target: self.clone(),
            name,
        }
    }

    /// An `AmazonS3Builder` for `bucket`, configured the way the tool itself is: from the
    /// `AWS_*` environment, plus this target's endpoint and keys.
    pub fn builder(&self, bucket: &str) -> AmazonS3Builder {
        AmazonS3Builder::from_env()
            .with_endpoint(&self.endpoint)
            .with_region(&self.region)
            .with_access_key_id(&self.access_key_id)
            .with_secret_access_key(&self.secret_access_key)
            .with_allow_http(true)
            .with_bucket_name(bucket)
    }
}

impl S3Bucket {
    /// `s3://<bucket>`
    pub fn url(&self) -> String {
        format!("s3://{}", self.name)
    }

    /// An object store rooted at this bucket.
    pub fn store(&self) -> Arc<dyn ObjectStore> {
        Arc::new(
            self.target
                .builder(&self.name)
                .build()
                .expect("build AmazonS3 store for the test bucket"),
        )
    }

    /// `s3://<bucket>/<path>`, for DuckDB (`read_parquet(..)`) and for `--dest`.
    pub fn s3_url(&self, path: &str) -> String {
        duckdb_s3_url(&self.name, path)
    }
}

/// `s3://<bucket>/<path>` (path without a leading `/`; may hold globs such as `**/*.parquet`).
pub fn duckdb_s3_url(bucket: &str, path: &str) -> String {
    format!("s3://{bucket}/{}", path.trim_start_matches('/'))
}

/// An object store rooted at a local directory (which must exist).
pub fn local_store(dir: &FsPath) -> Arc<dyn ObjectStore> {
    Arc::new(LocalFileSystem::new_with_prefix(dir).expect("LocalFileSystem over a temp dir"))
}

// ---------------------------------------------------------------------------------------
// DuckDB
// ---------------------------------------------------------------------------------------

/// What `scripts/duckdb_query.py` prints: DuckDB's column names and type names, and rows of
/// JSON values (timestamps as ISO-8601 strings, `…+00:00` for TIMESTAMP WITH TIME ZONE;
/// decimals as strings; see the script for the rest).
#[derive(Debug, Clone, Deserialize)]
pub struct QueryResult {
    pub columns: Vec<String>,
    pub types: Vec<String>,
    pub rows: Vec<Vec<Value>>,
}

impl QueryResult {
    /// The only value of a one-row, one-column result.
    pub fn scalar(&self) -> &Value {
        assert_eq!(
            (self.rows.len(), self.columns.len()),
            (1, 1),
            "expected one row of one column, got {self:?}"
        );
        &self.rows[0][0]
    }

    pub fn scalar_i64(&self) -> i64 {
        let v = self.scalar();
        v.as_i64()
            .unwrap_or_else(|| panic!("expected an integer, got {v}"))
    }

    pub fn scalar_str(&self) -> &str {
        let v = self.scalar();
        v.as_str()
            .unwrap_or_else(|| panic!("expected a string, got {v}"))
    }

    /// Index of column `name`; panics when it is not there.
    pub fn col(&self, name: &str) -> usize {
        self.columns
            .iter()
            .position(|c| c == name)
            .unwrap_or_else(|| panic!("no column {name:?} in {:?}", self.columns))
    }

    /// DuckDB's type name of column `name` (e.g. `BIGINT`, `TIMESTAMP WITH TIME ZONE`).
    pub fn type_of(&self, name: &str) -> &str {
        &self.types[self.col(name)]
    }

    /// All values of column `name`, in row order.
    pub fn column(&self, name: &str) -> Vec<&Value> {
        let i = self.col(name);
        self.rows.iter().map(|r| &r[i]).collect()
    }
}

/// The Python that runs `scripts/duckdb_query.py`, when the tests have one.
fn duckdb_python() -> Option<String> {
    std::env::var("ITERABLE_LAKE_PYTHON")
        .ok()
        .filter(|p| !p.is_empty())
}

/// True when DuckDB read-back is possible (`ITERABLE_LAKE_PYTHON` set by `scripts/test.sh`).
pub fn duckdb_available() -> bool {
    duckdb_python().is_some()
}

/// Runs `sql` in a fresh in-memory DuckDB (httpfs loaded and pointed at the test S3 server
/// when `scripts/test.sh` set it up). `None` (after `skipped: …`) when DuckDB is not
/// available outside CI; panics in CI when it is not, and whenever the query fails.
pub fn duckdb(sql: &str) -> Option<QueryResult> {
    try_duckdb(sql).map(|r| r.unwrap_or_else(|e| panic!("DuckDB query failed: {e}\nSQL: {sql}")))
}

/// Like [`duckdb`], but a failing query is `Some(Err(DuckDB's error text))`.
pub fn try_duckdb(sql: &str) -> Option<Result<QueryResult, String>> {
    let Some(python) = duckdb_python() else {
        missing("DuckDB (ITERABLE_LAKE_PYTHON)");
        return None;
    };
    let script = FsPath::new(env!("CARGO_MANIFEST_DIR")).join("scripts/duckdb_query.py");
    let out = Command::new(&python)
        .arg(&script)
        .arg(sql)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("run {python} {}: {e}", script.display()));
    if !out.status.success() {
        return Some(Err(String::from_utf8_lossy(&out.stderr).trim().to_owned()));
    }
    let parsed = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "duckdb_query.py printed no valid JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    });
    Some(Ok(parsed))
}

/// `s` as a SQL string literal (single quotes doubled), e.g. for a local path.
pub fn sql_str(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}
