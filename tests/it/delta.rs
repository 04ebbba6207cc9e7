//! `--table-format delta`: every stream's folder is a Delta table that three independent
//! readers (DuckDB's `delta_scan`, delta-rs and Polars) read as the manifest's live files,
//! row for row, across runs that replace partitions, with time travel to an older version,
//! checkpoints, and retired files kept for the retention, then vacuumed.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Stdio};

use chrono::{DateTime, Duration, Utc};
use iterable_lake::catalog::{self, StreamDef};
use iterable_lake::convert::StreamSchema;
use iterable_lake::delta::{CHECKPOINT_EVERY, LOG_DIR, Projection, Table, TableFormat};
use iterable_lake::fake::{FakeConfig, FakeIterable};
use iterable_lake::manifest::{LiveFile, Manifest};
use iterable_lake::sink::{LakeStore, WrittenFile, date_partition};
use iterable_lake::state;
use iterable_lake::sync::{self, RunReport, StreamStatus, SyncOptions};
use object_store::ObjectStoreExt;
use serde_json::Value;

use crate::lake::fake_client;
use crate::support::{self, sql_str};

const START: &str = "2024-01-01T00:00:00Z";
const END: &str = "2024-01-04T00:00:00Z";

fn t(s: &str) -> DateTime<Utc> {
    s.parse().unwrap()
}

/// One stream of each kind: events, users (no event id), a snapshot, list members.
const STREAMS: [(&str, &str); 5] = [
    ("email_send", "_event_id"),
    ("email_open", "_event_id"),
    ("users", "email"),
    ("lists", "id"),
    ("list_users", "email"),
];

fn defs() -> Vec<&'static StreamDef> {
    STREAMS
        .iter()
        .map(|(s, _)| catalog::find(s).unwrap())
        .collect()
}

async fn sync_at(
    fake: &FakeIterable,
    lake: &LakeStore,
    now: DateTime<Utc>,
    retain: Duration,
) -> RunReport {
    fake.set_now(now);
    let mut o = SyncOptions::new(defs());
    o.start = Some(t(START));
    o.now = now;
    o.lag = Duration::zero();
    o.window.initial_days = 1;
    o.table_format = TableFormat::Delta;
    o.retain_removed = retain;
    let report = sync::run(lake.clone(), fake_client(fake, 8), o)
        .await
        .unwrap();
    for s in &report.streams {
        assert!(
            matches!(s.status, StreamStatus::Succeeded | StreamStatus::UpToDate),
            "{s:?}"
        );
    }
    report
}

/// What delta-rs and Polars read of the table at `uri` (`None` outside CI without the
/// test tooling).
fn python_readers(uri: &str, version: Option<u64>, id: &str) -> Option<Value> {
    let python = std::env::var("ITERABLE_LAKE_PYTHON")
        .ok()
        .filter(|p| !p.is_empty());
    let Some(python) = python else {
        assert!(!support::in_ci(), "ITERABLE_LAKE_PYTHON is not set in CI");
        eprintln!("skipped: delta-rs and Polars (ITERABLE_LAKE_PYTHON)");
        return None;
    };
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/delta_read.py");
    let version = version.map_or("latest".to_string(), |v| v.to_string());
    let out = Command::new(python)
        .arg(&script)
        .args([uri, &version, id])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "delta_read.py {uri}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(serde_json::from_slice(&out.stdout).unwrap())
}

/// The version of `stream`'s table (it has one).
async fn newest_version(lake: &LakeStore, stream: &str) -> u64 {
    Table::open(lake, stream).await.unwrap().version().unwrap()
}

/// Rows and the digest of the sorted `id` values, by DuckDB over `from`.
fn duckdb_digest(from: &str, id: &str) -> Option<(u64, String)> {
    let q = support::duckdb(&format!(
        "SELECT count(*), sha256(coalesce(string_agg(coalesce(CAST({id} AS VARCHAR), ''), chr(10) ORDER BY coalesce(CAST({id} AS VARCHAR), '')), '')) FROM {from}"
    ))?;
    let row = &q.rows[0];
    Some((
        row[0].as_u64().unwrap(),
        row[1].as_str().unwrap().to_string(),
    ))
}

/// Every reader of each table agrees with the manifest's live files of its stream; `root` is
/// the lake's folder or `s3://bucket/prefix`.
async fn assert_readers_agree(lake: &LakeStore, root: &str) {
    let manifest = Manifest::load(lake).await.unwrap();
    for (stream, id) in STREAMS {
        let state = &manifest.streams[stream];
        let files: Vec<String> = state
            .files
            .iter()
            .map(|f| sql_str(&format!("{root}/{}", f.file.path)))
            .collect();
        let table = format!("{root}/{stream}");
        let Some((rows, digest)) = duckdb_digest(
            &format!("read_parquet([{}], union_by_name=true)", files.join(", ")),
            id,
        ) else {
            return;
        };
        assert_eq!(rows, state.rows(), "{stream}: the manifest's files");
        let scanned = duckdb_digest(&format!("delta_scan({})", sql_str(&table)), id).unwrap();
        assert_eq!(
            scanned,
            (rows, digest.clone()),
            "{stream}: DuckDB delta_scan"
        );
        let read = python_readers(&table, None, id).unwrap();
        for reader in ["deltalake", "polars"] {
            assert_eq!(read[reader]["rows"], rows, "{stream}: {reader}");
            assert_eq!(read[reader]["ids"], digest.as_str(), "{stream}: {reader}");
        }
    }
}

/// A fake, the temporary folder (kept while the test runs), the lake's folder in it and the
/// lake, when the readers are at hand.
type Setup = (
    FakeIterable,
    tempfile::TempDir,
    std::path::PathBuf,
    LakeStore,
);

async fn setup(seed: u64) -> Option<Setup> {
    if !support::duckdb_available() && !support::in_ci() {
        eprintln!("skipped: Delta readers need scripts/test.sh");
        return None;
    }
    let fake = FakeIterable::start(FakeConfig::small(seed)).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("lake");
    let lake = LakeStore::open(root.to_str().unwrap()).unwrap();
    Some((fake, dir, root, lake))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_stream_is_a_delta_table_its_readers_agree_on() {
    let Some((fake, _dir, root, lake)) = setup(51).await else {
        return;
    };
    let first = fake.midpoint();
    sync_at(&fake, &lake, first, Duration::days(7)).await;
    assert_readers_agree(&lake, root.to_str().unwrap()).await;
    let v1 = newest_version(&lake, "email_send").await;
    let rows1 = Manifest::load(&lake).await.unwrap().streams["email_send"].rows();
    let table = root.join("email_send");
    let table_sql = sql_str(table.to_str().unwrap());
    let night1 = duckdb_digest(&format!("delta_scan({table_sql})"), "_event_id").unwrap();
    assert_eq!(night1.0, rows1);
    // `state` names each table's version.
    let mut summary = state::summarize("lake", &Manifest::load(&lake).await.unwrap());
    state::add_delta_versions(&lake, &mut summary).await;
    let send = summary
        .streams
        .iter()
        .find(|s| s.stream == "email_send")
        .unwrap();
    assert_eq!(send.delta_version, Some(v1));
    assert!(
        state::render(&summary).contains(&format!("email_send v{v1}")),
        "{}",
        state::render(&summary)
    );

    // The second night re-reads the settling window and replaces its partitions.
    sync_at(&fake, &lake, t(END), Duration::days(7)).await;
    assert_readers_agree(&lake, root.to_str().unwrap()).await;
    let manifest = Manifest::load(&lake).await.unwrap();
    let send = &manifest.streams["email_send"];
    assert!(!send.retired.is_empty(), "replaced files are retired");
    for r in &send.retired {
        assert!(
            root.join(&r.path).is_file(),
            "{} is kept for older readers",
            r.path
        );
    }
    // Files carry the writer's column statistics, and readers that skip files by them
    // still count every row of a filtered query.
    let log = root.join("email_send").join(LOG_DIR);
    let newest = newest_version(&lake, "email_send").await;
    let commit = std::fs::read_to_string(log.join(format!("{newest:020}.json"))).unwrap();
    let add: Value = commit
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .find(|a| a.get("add").is_some())
        .expect("the night's commit adds files");
    let stats: Value = serde_json::from_str(add["add"]["stats"].as_str().unwrap()).unwrap();
    assert!(stats["minValues"]["createdAt"].is_string(), "{stats}");
    assert!(stats["nullCount"]["_event_id"].is_number(), "{stats}");
    let files: Vec<String> = send
        .files
        .iter()
        .map(|f| sql_str(root.join(&f.file.path).to_str().unwrap()))
        .collect();
    for at in [
        "2024-01-01 12:00:00",
        "2024-01-02 06:30:00",
        "2024-01-03 00:00:00",
    ] {
        let count = |from: &str| {
            support::duckdb(&format!(
                "SELECT count(*) FROM {from} WHERE createdAt >= TIMESTAMPTZ '{at}+00'"
            ))
            .unwrap()
            .scalar_i64()
        };
        assert_eq!(
            count(&format!("delta_scan({table_sql})")),
            count(&format!("read_parquet([{}])", files.join(", "))),
            "createdAt >= {at}"
        );
    }
    // Time travel: the first night's version still reads as the first night's data, event
    // for event, with every reader; the latest version differs from it.
    assert_ne!(
        duckdb_digest(&format!("delta_scan({table_sql})"), "_event_id").unwrap(),
        night1
    );
    assert_eq!(
        duckdb_digest(
            &format!("delta_scan({table_sql}, version => {v1})"),
            "_event_id"
        )
        .unwrap(),
        night1,
        "DuckDB delta_scan(version => {v1})"
    );
    let old = python_readers(table.to_str().unwrap(), Some(v1), "_event_id").unwrap();
    assert_eq!(old["deltalake"]["version"], v1);
    for reader in ["deltalake", "polars"] {
        assert_eq!(old[reader]["rows"], rows1, "{reader}");
        assert_eq!(old[reader]["ids"], night1.1.as_str(), "{reader}");
    }

    // A run with no retention vacuums the retired files; readers still agree.
    sync_at(&fake, &lake, t(END), Duration::zero()).await;
    let manifest = Manifest::load(&lake).await.unwrap();
    let still: Vec<_> = manifest.streams.values().flat_map(|s| &s.retired).collect();
    assert!(
        send.retired.iter().all(|r| !still.contains(&r)),
        "the files retired before are vacuumed; only this run's remain retired"
    );
    for r in &send.retired {
        assert!(!root.join(&r.path).exists(), "{} was vacuumed", r.path);
    }
    assert_readers_agree(&lake, root.to_str().unwrap()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_behind_its_manifest_is_reconciled_by_the_next_run() {
    let Some((fake, _dir, root, lake)) = setup(52).await else {
        return;
    };
    sync_at(&fake, &lake, t(END), Duration::days(7)).await;
    // A crash between the manifest commit and the table's: the table's newest version is
    // gone (as if never written), and an older plain lake has no log at all.
    let log = root.join("email_send").join(LOG_DIR);
    let newest = newest_version(&lake, "email_send").await;
    std::fs::remove_file(log.join(format!("{newest:020}.json"))).unwrap();
    std::fs::remove_dir_all(root.join("users").join(LOG_DIR)).unwrap();
    sync_at(&fake, &lake, t(END), Duration::days(7)).await;
    assert_readers_agree(&lake, root.to_str().unwrap()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readers_start_from_the_checkpoint_every_tenth_version_writes() {
    let Some((fake, _dir, root, lake)) = setup(53).await else {
        return;
    };
    // Runs every few hours, each re-reading its day: a version or more each.
    let mut version = 0;
    for k in 1..=16 {
        sync_at(
            &fake,
            &lake,
            t(START) + Duration::hours(4 * k),
            Duration::days(7),
        )
        .await;
        version = newest_version(&lake, "email_send").await;
    }
    assert!(version > CHECKPOINT_EVERY, "{version} versions");
    let log = root.join("email_send").join(LOG_DIR);
    let last: Value =
        serde_json::from_slice(&std::fs::read(log.join("_last_checkpoint")).unwrap()).unwrap();
    let checkpoint = last["version"].as_u64().unwrap();
    assert!(checkpoint >= CHECKPOINT_EVERY && checkpoint.is_multiple_of(CHECKPOINT_EVERY));
    // Past the log's retention, the entries before the checkpoint go; every reader (and
    // this tool) still reads the table whole, from the checkpoint.
    let table = Table::open(&lake, "email_send").await.unwrap();
    table.clean_log(&lake, Utc::now() + Duration::days(1)).await;
    for v in 0..checkpoint {
        assert!(
            !log.join(format!("{v:020}.json")).exists(),
            "version {v} was cleaned"
        );
    }
    assert!(
        log.join(format!("{checkpoint:020}.checkpoint.parquet"))
            .is_file()
    );
    assert!(log.join(format!("{version:020}.json")).is_file());
    assert_eq!(
        Table::open(&lake, "email_send").await.unwrap().version(),
        Some(version)
    );
    assert_readers_agree(&lake, root.to_str().unwrap()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delta_tables_on_s3_read_alike_with_every_reader() {
    let Some(s3) = support::require_s3() else {
        return;
    };
    if !support::duckdb_available() && !support::in_ci() {
        eprintln!("skipped: Delta readers need scripts/test.sh");
        return;
    }
    let fake = FakeIterable::start(FakeConfig::small(54)).await.unwrap();
    let bucket = s3.new_bucket().await;
    let root = bucket.s3_url("lake");
    let lake = LakeStore::open(&root).unwrap();
    sync_at(&fake, &lake, fake.midpoint(), Duration::days(7)).await;
    sync_at(&fake, &lake, t(END), Duration::days(7)).await;
    assert_readers_agree(&lake, &root).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_during_a_sync_sees_only_committed_versions() {
    let Some((_, _dir, root, lake)) = setup(55).await else {
        return;
    };
    // A slow API, so the second night's replacing commits come while the reader reads.
    let mut cfg = FakeConfig::small(55);
    cfg.faults = iterable_lake::fake::Faults {
        export_rate: None,
        latency: Some(std::time::Duration::from_millis(150)),
        ..iterable_lake::fake::Faults::default()
    };
    let fake = FakeIterable::start(cfg).await.unwrap();
    sync_at(&fake, &lake, fake.midpoint(), Duration::days(7)).await;
    let table = sql_str(root.join("email_send").to_str().unwrap());
    let users = sql_str(root.join("users").to_str().unwrap());
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let done = done.clone();
        std::thread::spawn(move || {
            let mut reads = 0;
            let mut last = 0;
            while !done.load(std::sync::atomic::Ordering::SeqCst) {
                let q = support::try_duckdb(&format!(
                    "SELECT (SELECT count(*) FROM delta_scan({table})), \
                            (SELECT count(DISTINCT _event_id) FROM delta_scan({table})), \
                            (SELECT count(*) FROM delta_scan({users}))"
                ))
                .unwrap();
                let row = &q.expect("a read during the sync never fails").rows[0];
                let (rows, ids) = (row[0].as_u64().unwrap(), row[1].as_u64().unwrap());
                assert_eq!(rows, ids, "no event twice");
                assert!(rows >= last, "never fewer rows than a version read before");
                last = rows;
                reads += 1;
            }
            reads
        })
    };
    sync_at(&fake, &lake, t(END), Duration::days(7)).await;
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    let reads = reader
        .join()
        .expect("the reader saw only committed versions");
    assert!(
        reads >= 3,
        "the reader read while the sync ran ({reads} reads)"
    );
    assert_readers_agree(&lake, root.to_str().unwrap()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_lake_becomes_delta_and_back_keeping_every_row() {
    let Some((fake, _dir, root, lake)) = setup(56).await else {
        return;
    };
    let night = |now: DateTime<Utc>, format: TableFormat| {
        let (fake, lake) = (&fake, lake.clone());
        async move {
            fake.set_now(now);
            let mut o = SyncOptions::new(defs());
            o.start = Some(t(START));
            o.now = now;
            o.lag = Duration::zero();
            o.table_format = format;
            sync::run(lake, fake_client(fake, 8), o).await.unwrap()
        }
    };
    night(fake.midpoint(), TableFormat::Parquet).await;
    assert!(!root.join("email_send").join(LOG_DIR).exists());
    // The next night as Delta: the log is built from the manifest's live files.
    night(fake.midpoint() + Duration::hours(12), TableFormat::Delta).await;
    assert_readers_agree(&lake, root.to_str().unwrap()).await;
    let retired = Manifest::load(&lake).await.unwrap().streams["email_send"]
        .retired
        .clone();
    assert!(!retired.is_empty());
    // And back: no stale log, no retired file left for glob readers, every row.
    night(t(END), TableFormat::Parquet).await;
    let manifest = Manifest::load(&lake).await.unwrap();
    for (stream, _) in STREAMS {
        let log = std::fs::read_dir(root.join(stream).join(LOG_DIR));
        assert!(log.map_or(true, |d| d.count() == 0), "{stream}'s log");
        assert!(manifest.streams[stream].retired.is_empty());
    }
    for r in &retired {
        assert!(!root.join(&r.path).exists(), "{} is deleted", r.path);
    }
    let glob = sql_str(root.join("email_send/**/*.parquet").to_str().unwrap());
    let Some((rows, _)) = duckdb_digest(&format!("read_parquet({glob})"), "_event_id") else {
        return;
    };
    assert_eq!(rows, manifest.streams["email_send"].rows());
    let want: u64 = fake
        .truth_counts("emailSend", t(START), t(END))
        .values()
        .sum();
    assert_eq!(rows, want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_custom_field_is_a_metadata_commit_and_older_files_read_as_nulls() {
    let Some((fake, _dir, root, lake)) = setup(57).await else {
        return;
    };
    // The fake's users gain the custom field `loyaltyTier` after its midpoint.
    sync_at(
        &fake,
        &lake,
        fake.midpoint() - Duration::hours(6),
        Duration::days(7),
    )
    .await;
    let schema_of = |lake: LakeStore| async move {
        let log = log_actions(&lake, "users").await;
        log.iter()
            .rev()
            .find_map(|a| a.get("metaData"))
            .map(|m| m["schemaString"].as_str().unwrap().to_string())
            .unwrap()
    };
    assert!(!schema_of(lake.clone()).await.contains("loyaltyTier"));
    sync_at(
        &fake,
        &lake,
        fake.midpoint() + Duration::hours(18),
        Duration::days(7),
    )
    .await;
    let schema = schema_of(lake.clone()).await;
    assert!(schema.contains("\"loyaltyTier\""), "{schema}");
    let manifest = Manifest::load(&lake).await.unwrap();
    let files: Vec<String> = manifest.streams["users"]
        .files
        .iter()
        .map(|f| sql_str(root.join(&f.file.path).to_str().unwrap()))
        .collect();
    let table = sql_str(root.join("users").to_str().unwrap());
    let Some(q) = support::duckdb(&format!(
        "SELECT (SELECT count(loyaltyTier) FROM delta_scan({table})), \
                (SELECT count(loyaltyTier) FROM read_parquet([{}], union_by_name=true)), \
                (SELECT count(*) FROM delta_scan({table}))",
        files.join(", ")
    )) else {
        return;
    };
    let row = &q.rows[0];
    assert!(row[0].as_u64().unwrap() > 0);
    assert_eq!(row[0], row[1], "the new column's values");
    assert_eq!(row[2].as_u64().unwrap(), manifest.streams["users"].rows());
    assert_readers_agree(&lake, root.to_str().unwrap()).await;
}

/// Every action of a table's log, oldest first (JSON commits only).
async fn log_actions(lake: &LakeStore, stream: &str) -> Vec<Value> {
    let version = Table::open(lake, stream).await.unwrap().version().unwrap();
    let mut out = Vec::new();
    for v in 0..=version {
        let path = lake.path(&format!("{stream}/{LOG_DIR}/{v:020}.json"));
        let bytes = lake.store.get(&path).await.unwrap().bytes().await.unwrap();
        for line in String::from_utf8(bytes.to_vec()).unwrap().lines() {
            out.push(serde_json::from_str(line).unwrap());
        }
    }
    out
}

/// A table of more live files than one batch of the checkpoint's JSON decoder (1,024): the
/// checkpoint holds every one of them, so a reader that starts from it misses none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkpoint_of_a_table_with_thousands_of_files_holds_them_all() {
    let dir = tempfile::tempdir().unwrap();
    let lake = LakeStore::open(dir.path().to_str().unwrap()).unwrap();
    let def = catalog::find("email_send").unwrap();
    let schema = StreamSchema::parse(def.name, def.schema, def.is_event()).unwrap();
    // 2,500 files, and each version adds one more.
    let live = |version: u64| -> Vec<LiveFile> {
        (0..2_500 + version as i64)
            .map(|i| {
                let partition = date_partition(19_000 + i);
                LiveFile {
                    file: WrittenFile {
                        path: format!("email_send/{partition}/part-{i}.parquet"),
                        partition,
                        rows: 10,
                        bytes: 1_000,
                        min_cursor: None,
                        max_cursor: None,
                        column_stats: None,
                    },
                    run: format!("run-{version}"),
                }
            })
            .collect()
    };
    let mut table = Table::open(&lake, "email_send").await.unwrap();
    for version in 0..=CHECKPOINT_EVERY {
        let files = live(version);
        let p = Projection {
            schema: &schema.arrow,
            description: "email_send",
            files: &files,
            cursor_field: Some("createdAt"),
            manifest_version: version + 1,
            run_id: "test",
            operation: "commit",
        };
        assert_eq!(table.project(&lake, &p).await.unwrap(), Some(version));
    }
    let log = dir.path().join("email_send").join(LOG_DIR);
    assert!(
        log.join(format!("{CHECKPOINT_EVERY:020}.checkpoint.parquet"))
            .is_file()
    );
    // Only the checkpoint is left to read the table from.
    for v in 0..=CHECKPOINT_EVERY {
        std::fs::remove_file(log.join(format!("{v:020}.json"))).unwrap();
    }
    let want: BTreeSet<String> = live(CHECKPOINT_EVERY)
        .into_iter()
        .map(|f| f.file.path)
        .collect();
    let read = Table::open(&lake, "email_send").await.unwrap();
    assert_eq!(read.version(), Some(CHECKPOINT_EVERY));
    let got: BTreeSet<String> = read.paths().collect();
    assert_eq!(got.len(), want.len(), "files the checkpoint holds");
    assert_eq!(got, want);
}
