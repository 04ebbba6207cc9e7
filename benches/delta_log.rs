//! Delta log replay after years of nightly runs: an `email_send` table of 1,000 commits (a
//! checkpoint every 10), each a night that adds the new day's file and replaces the day
//! before's (the settling window), every add carrying column statistics for every column as
//! the writer's footer gives them. Measured: reading the table as every run does at its start
//! (`Table::open`: `_last_checkpoint`, the checkpoint, the commits after it), from a checkpoint
//! and from 9 commits past one, and writing one more nightly commit.
//!
//! A table of 1,000 versions is left in `target/delta-log-bench/email_send` for other readers
//! (`scripts/bench-delta-log.sh` times DuckDB, delta-rs and Polars on it).

use std::path::PathBuf;

use criterion::{Criterion, criterion_group, criterion_main};
use iterable_lake::catalog;
use iterable_lake::convert::StreamSchema;
use iterable_lake::delta::{Projection, Table};
use iterable_lake::manifest::LiveFile;
use iterable_lake::sink::{LakeStore, WrittenFile, date_partition};
use serde_json::{Map, json};

const NIGHTS: u64 = 1_000;
const FIRST_DAY: i64 = 19_000;

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/delta-log-bench")
}

/// The file night `n` writes for `day`, with statistics for every column.
fn file(schema: &arrow::datatypes::Schema, night: u64, day: i64) -> LiveFile {
    let mut min = Map::new();
    let mut max = Map::new();
    let mut nulls = Map::new();
    for f in schema.fields() {
        let (lo, hi) = if f.data_type().is_numeric() {
            (json!(0), json!(1_000_000))
        } else {
            (
                json!("2022-01-01T00:00:00.000Z"),
                json!("zz-some-longer-value"),
            )
        };
        min.insert(f.name().clone(), lo);
        max.insert(f.name().clone(), hi);
        nulls.insert(f.name().clone(), json!(night % 7));
    }
    let partition = date_partition(day);
    LiveFile {
        file: WrittenFile {
            path: format!("email_send/{partition}/part-{night:05}-{day}.parquet"),
            partition,
            rows: 20_000,
            bytes: 1 << 20,
            min_cursor: Some(day * 86_400_000_000),
            max_cursor: Some((day + 1) * 86_400_000_000 - 1),
            column_stats: Some(json!({"minValues": min, "maxValues": max, "nullCount": nulls})),
        },
        run: format!("night-{night}"),
    }
}

struct Fixture {
    rt: tokio::runtime::Runtime,
    lake: LakeStore,
    schema: StreamSchema,
    files: Vec<LiveFile>,
}

impl Fixture {
    /// Commit night `n` on top of `files` (adding day n, replacing day n-1).
    fn night(&mut self, table: &mut Table, n: u64) {
        let day = FIRST_DAY + n as i64;
        self.files.pop();
        let schema = &self.schema.arrow;
        self.files.push(file(schema, n, day - 1));
        self.files.push(file(schema, n, day));
        let p = Projection {
            schema,
            description: "Iterable email_send, benchmark",
            files: &self.files,
            cursor_field: Some("createdAt"),
            manifest_version: n + 1,
            run_id: "bench",
            operation: "commit",
        };
        self.rt
            .block_on(table.project(&self.lake, &p))
            .expect("commits");
    }
}

fn fixture() -> (Fixture, Table) {
    let _ = std::fs::remove_dir_all(dir());
    std::fs::create_dir_all(dir()).expect("bench folder");
    let def = catalog::find("email_send").expect("stream");
    let mut fx = Fixture {
        rt: tokio::runtime::Runtime::new().expect("runtime"),
        lake: LakeStore::open(dir().to_str().expect("utf-8")).expect("lake"),
        schema: StreamSchema::parse(def.name, def.schema, def.is_event()).expect("schema"),
        files: vec![],
    };
    let mut table = fx
        .rt
        .block_on(Table::open(&fx.lake, "email_send"))
        .expect("an empty table");
    for n in 0..NIGHTS {
        fx.night(&mut table, n);
    }
    (fx, table)
}

fn replay(c: &mut Criterion) {
    let (mut fx, mut table) = fixture();
    let mut g = c.benchmark_group("delta_log");
    g.sample_size(20);
    assert_eq!(table.version(), Some(NIGHTS - 1));
    let open = |fx: &Fixture| {
        fx.rt
            .block_on(Table::open(&fx.lake, "email_send"))
            .expect("opens")
    };
    // Version 999: the checkpoint of 990 and 9 commits after it, the most a run reads.
    g.bench_function("open_1000_commits_9_past_checkpoint", |b| {
        b.iter(|| open(&fx).version())
    });
    fx.night(&mut table, NIGHTS);
    assert_eq!(open(&fx).version(), Some(NIGHTS));
    g.bench_function("open_1001_commits_at_checkpoint", |b| {
        b.iter(|| open(&fx).version())
    });
    // More nights on the 1,001-version table: each iteration writes a new version, and
    // every tenth a checkpoint too.
    let mut n = NIGHTS + 1;
    g.bench_function("nightly_commit", |b| {
        b.iter(|| {
            fx.night(&mut table, n);
            n += 1;
        })
    });
    g.finish();
    // Leave a table of exactly 1,000 versions for the other readers.
    let (fx, table) = fixture();
    let files = open(&fx).paths().count();
    println!(
        "table: {} versions, {files} live files, in {}",
        table.version().map_or(0, |v| v + 1),
        dir().join("email_send").display()
    );
}

criterion_group!(benches, replay);
criterion_main!(benches);
