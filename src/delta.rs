//! Delta Lake tables: with `--table-format delta`, each stream's folder is also a Delta table
//! (`<stream>/_delta_log/`), so engines that read the table see one committed state at a time.
//!
//! The log is a projection of the manifest, written by hand against the Delta protocol
//! (reader 1 / writer 2, the lowest versions, which every engine reads): after each manifest
//! commit, and at the start of every run, a table is brought to the manifest's live files for
//! its stream in one commit of `add`s (with the row count and cursor range as statistics) and
//! `remove`s, a `txn` action (app id [`APP_ID`], version = the manifest version, so a replay
//! is recognised) and `commitInfo`. A crash between the manifest commit and the table's is
//! reconciled by the next run before it reads anything. Versions are written create-if-absent,
//! so two writers cannot both take one. Every [`CHECKPOINT_EVERY`] versions a checkpoint
//! (Parquet, with `_last_checkpoint`) keeps replay short; a table is read from its newest
//! checkpoint and the commits after it.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Fields, Schema, SchemaRef, TimeUnit};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use object_store::{ObjectStoreExt, PutPayload};
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use serde_json::{Value, json};

use crate::manifest::LiveFile;
use crate::sink::stats::instant_bound;
use crate::sink::{Created, LakeStore};

/// The folder of a table's log, inside the stream's folder.
pub const LOG_DIR: &str = "_delta_log";
/// The `txn` application id of this tool's commits.
pub const APP_ID: &str = "iterable-lake";
/// A checkpoint is written at every version divisible by this.
pub const CHECKPOINT_EVERY: u64 = 10;
/// Log entries are kept this long (for time travel), as Delta writers do by default.
pub const LOG_RETENTION: chrono::Duration = chrono::Duration::days(30);

#[derive(Debug, thiserror::Error)]
pub enum DeltaError {
    #[error("reading the Delta log of {table}: {source}")]
    Read {
        table: String,
        source: object_store::Error,
    },
    #[error("Delta log file {path} is not valid: {problem}")]
    Invalid { path: String, problem: String },
    #[error("writing version {version} of the Delta log of {table}: {source}")]
    Write {
        table: String,
        version: u64,
        source: object_store::Error,
    },
    #[error("version {version} of the Delta log of {table} was written by another writer")]
    Conflict { table: String, version: u64 },
    #[error("writing the checkpoint of {table} at version {version}: {problem}")]
    Checkpoint {
        table: String,
        version: u64,
        problem: String,
    },
}

/// How a lake's streams are laid out for readers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TableFormat {
    /// Each stream is also a Delta table (`_delta_log/`); replaced files stay for a
    /// retention period, for readers of older versions.
    #[default]
    Delta,
    /// Plain hive-style Parquet folders for glob readers; replaced files are deleted right
    /// after the commit that retires them.
    Parquet,
}

impl TableFormat {
    pub const ALL: [TableFormat; 2] = [TableFormat::Delta, TableFormat::Parquet];

    pub fn as_str(self) -> &'static str {
        match self {
            TableFormat::Delta => "delta",
            TableFormat::Parquet => "parquet",
        }
    }
}

impl std::fmt::Display for TableFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A table's state as its log tells it: enough to project the manifest onto it.
#[derive(Debug, Clone, Default)]
pub struct Table {
    /// The stream's folder, relative to the lake's root.
    dir: String,
    version: Option<u64>,
    /// The newest `txn` version of [`APP_ID`]: the manifest version last projected.
    txn: Option<u64>,
    protocol: Option<Value>,
    metadata: Option<Value>,
    /// The live `add` actions by path (relative to the table).
    files: BTreeMap<String, Value>,
}

/// What a table is brought to.
pub struct Projection<'a> {
    /// The schema of the stream's data files (without partition columns).
    pub schema: &'a Schema,
    pub description: &'a str,
    pub files: &'a [LiveFile],
    pub cursor_field: Option<&'a str>,
    pub manifest_version: u64,
    pub run_id: &'a str,
    pub operation: &'a str,
}

fn millis(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

fn version_name(version: u64) -> String {
    format!("{version:020}.json")
}

fn checkpoint_name(version: u64) -> String {
    format!("{version:020}.checkpoint.parquet")
}

impl Table {
    fn log_path(&self, lake: &LakeStore, name: &str) -> object_store::path::Path {
        lake.path(&format!("{}/{LOG_DIR}/{name}", self.dir))
    }

    /// The table's version, `None` before its first commit.
    pub fn version(&self) -> Option<u64> {
        self.version
    }

    /// The paths of the table's live files, relative to the lake's root (as the manifest names
    /// them).
    pub fn paths(&self) -> impl Iterator<Item = String> + '_ {
        self.files.keys().map(|p| format!("{}/{p}", self.dir))
    }

    /// Whether this tool wrote the table: its log holds a `txn` of [`APP_ID`].
    pub fn written_by_this_tool(&self) -> bool {
        self.txn.is_some()
    }

    /// Delete the table's log: `_last_checkpoint` first, so no reader is sent to a checkpoint
    /// already gone, then the newest entries first, so a reader meanwhile finds an older
    /// version whole. Best effort.
    pub async fn remove(&self, lake: &LakeStore) {
        let prefix = lake.path(&format!("{}/{LOG_DIR}", self.dir));
        let Ok(mut metas) = lake.store.list(Some(&prefix)).try_collect::<Vec<_>>().await else {
            return;
        };
        // `_` sorts after the digits of the numbered entries.
        metas.sort_by(|a, b| b.location.cmp(&a.location));
        for m in metas {
            let _ = lake.store.delete(&m.location).await;
        }
    }

    /// Read the table in `dir` (a stream's folder): its newest checkpoint, then the commits
    /// after it. A folder without a log is an empty table.
    pub async fn open(lake: &LakeStore, dir: &str) -> Result<Table, DeltaError> {
        let mut table = Table {
            dir: dir.to_string(),
            ..Table::default()
        };
        let read = |source| DeltaError::Read {
            table: dir.to_string(),
            source,
        };
        let metas: Vec<_> = lake
            .store
            .list(Some(&lake.path(&format!("{dir}/{LOG_DIR}"))))
            .try_collect()
            .await
            .map_err(read)?;
        let mut commits = Vec::new();
        let mut checkpoints = Vec::new();
        for m in &metas {
            let Some(name) = m.location.filename() else {
                continue;
            };
            let number = |suffix: &str| -> Option<u64> {
                let n = name.strip_suffix(suffix)?;
                (n.len() == 20).then(|| n.parse().ok())?
            };
            if let Some(v) = number(".json") {
                commits.push(v);
            } else if let Some(v) = number(".checkpoint.parquet") {
                checkpoints.push(v);
            }
        }
        commits.sort_unstable();
        let from = checkpoints.iter().max().copied();
        if let Some(v) = from {
            table.read_checkpoint(lake, v).await?;
            table.version = Some(v);
        }
        for v in commits.into_iter().filter(|v| from.is_none_or(|c| *v > c)) {
            let path = table.log_path(lake, &version_name(v));
            let bytes = lake
                .store
                .get(&path)
                .await
                .map_err(read)?
                .bytes()
                .await
                .map_err(read)?;
            for line in bytes.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
                let action: Value =
                    serde_json::from_slice(line).map_err(|e| DeltaError::Invalid {
                        path: path.to_string(),
                        problem: e.to_string(),
                    })?;
                table.apply(action);
            }
            table.version = Some(v);
        }
        Ok(table)
    }

    fn apply(&mut self, action: Value) {
        let Value::Object(map) = action else {
            return;
        };
        for (kind, body) in map {
            match kind.as_str() {
                "add" => {
                    if let Some(p) = body["path"].as_str() {
                        self.files.insert(p.to_string(), body);
                    }
                }
                "remove" => {
                    if let Some(p) = body["path"].as_str() {
                        self.files.remove(p);
                    }
                }
                "txn" if body["appId"] == APP_ID => {
                    self.txn = body["version"].as_u64().max(self.txn);
                }
                "metaData" => self.metadata = Some(body),
                "protocol" => self.protocol = Some(body),
                _ => {}
            }
        }
    }

    async fn read_checkpoint(&mut self, lake: &LakeStore, version: u64) -> Result<(), DeltaError> {
        let path = self.log_path(lake, &checkpoint_name(version));
        let bytes = lake
            .store
            .get(&path)
            .await
            .map_err(|source| DeltaError::Read {
                table: self.dir.clone(),
                source,
            })?
            .bytes()
            .await
            .map_err(|source| DeltaError::Read {
                table: self.dir.clone(),
                source,
            })?;
        let invalid = |problem: String| DeltaError::Invalid {
            path: path.to_string(),
            problem,
        };
        let reader = ParquetRecordBatchReaderBuilder::try_new(bytes)
            .and_then(|b| b.build())
            .map_err(|e| invalid(e.to_string()))?;
        for batch in reader {
            let batch = batch.map_err(|e| invalid(e.to_string()))?;
            let mut out = Vec::new();
            let mut writer = arrow::json::LineDelimitedWriter::new(&mut out);
            writer
                .write(&batch)
                .and_then(|()| writer.finish())
                .map_err(|e| invalid(e.to_string()))?;
            for line in out.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
                let action: Value =
                    serde_json::from_slice(line).map_err(|e| invalid(e.to_string()))?;
                self.apply(action);
            }
        }
        Ok(())
    }

    /// Bring the table to `p`'s files in one commit, if it differs; returns the version
    /// written. A table whose newest `txn` is at least the manifest version is up to date.
    pub async fn project(
        &mut self,
        lake: &LakeStore,
        p: &Projection<'_>,
    ) -> Result<Option<u64>, DeltaError> {
        if self.txn.is_some_and(|t| t >= p.manifest_version) {
            return Ok(None);
        }
        let now = Utc::now();
        let mut actions = Vec::new();
        if self.protocol.is_none() {
            actions.push(json!({"protocol": {"minReaderVersion": 1, "minWriterVersion": 2}}));
        }
        let want: BTreeMap<String, (&LiveFile, PartitionValues)> = p
            .files
            .iter()
            .filter_map(|f| {
                let rel = f.file.path.strip_prefix(&format!("{}/", self.dir))?;
                Some((rel.to_string(), (f, partition_values(rel))))
            })
            .collect();
        let mut partition_columns: Vec<String> = Vec::new();
        for (_, values) in want.values() {
            for (k, _) in values {
                if !partition_columns.contains(k) {
                    partition_columns.push(k.clone());
                }
            }
        }
        let metadata = self.metadata(p, &partition_columns, now);
        let changed = self.metadata.as_ref().is_none_or(|m| {
            m["schemaString"] != metadata["schemaString"]
                || m["partitionColumns"] != metadata["partitionColumns"]
        });
        if changed {
            actions.push(json!({ "metaData": metadata }));
        }
        let mut removed = 0;
        for (path, add) in &self.files {
            if !want.contains_key(path) {
                actions.push(json!({"remove": {
                    "path": path,
                    "deletionTimestamp": millis(now),
                    "dataChange": true,
                    "extendedFileMetadata": true,
                    "partitionValues": add["partitionValues"],
                    "size": add["size"],
                }}));
                removed += 1;
            }
        }
        let mut added = 0;
        for (path, (f, values)) in &want {
            if self.files.contains_key(path) {
                continue;
            }
            let partition_values: serde_json::Map<String, Value> = partition_columns
                .iter()
                .map(|c| {
                    let v = values
                        .iter()
                        .find(|(k, _)| k == c)
                        .and_then(|(_, v)| v.clone());
                    (c.clone(), v.map_or(Value::Null, Value::String))
                })
                .collect();
            actions.push(json!({"add": {
                "path": path,
                "partitionValues": partition_values,
                "size": f.file.bytes,
                "modificationTime": millis(now),
                "dataChange": true,
                "stats": stats(f, p.cursor_field),
            }}));
            added += 1;
        }
        if !changed && added == 0 && removed == 0 {
            return Ok(None);
        }
        actions.push(json!({"txn": {
            "appId": APP_ID,
            "version": p.manifest_version,
            "lastUpdated": millis(now),
        }}));
        actions.push(json!({"commitInfo": {
            "timestamp": millis(now),
            "operation": "WRITE",
            "operationParameters": {"mode": "Append", "partitionBy": serde_json::to_string(&partition_columns).expect("serializes")},
            "engineInfo": concat!("iterable-lake/", env!("CARGO_PKG_VERSION")),
            "isBlindAppend": removed == 0,
            "iterableLake": {"run": p.run_id, "operation": p.operation, "manifestVersion": p.manifest_version, "added": added, "removed": removed},
        }}));
        let version = self.version.map_or(0, |v| v + 1);
        let mut body = Vec::new();
        for a in &actions {
            serde_json::to_writer(&mut body, a).expect("an action serializes");
            body.push(b'\n');
        }
        let path = self.log_path(lake, &version_name(version));
        match lake.create(&path, Bytes::from(body)).await {
            Ok(Created::Written { .. }) => {}
            Ok(Created::Taken) => {
                return Err(DeltaError::Conflict {
                    table: self.dir.clone(),
                    version,
                });
            }
            Err(source) => {
                return Err(DeltaError::Write {
                    table: self.dir.clone(),
                    version,
                    source,
                });
            }
        }
        for a in actions {
            self.apply(a);
        }
        self.version = Some(version);
        if version > 0 && version.is_multiple_of(CHECKPOINT_EVERY) {
            self.write_checkpoint(lake, version).await?;
            self.clean_log(lake, Utc::now() - LOG_RETENTION).await;
        }
        Ok(Some(version))
    }

    /// The `metaData` action for `p`: the table's id and creation time are kept.
    fn metadata(
        &self,
        p: &Projection<'_>,
        partition_columns: &[String],
        now: DateTime<Utc>,
    ) -> Value {
        let mut fields: Vec<Value> = p.schema.fields().iter().map(|f| delta_field(f)).collect();
        for c in partition_columns {
            if p.schema.field_with_name(c).is_err() {
                fields.push(json!({
                    "name": c,
                    "type": partition_type(c),
                    "nullable": true,
                    "metadata": {},
                }));
            }
        }
        let schema = json!({"type": "struct", "fields": fields});
        let old = self.metadata.as_ref();
        json!({
            "id": old.and_then(|m| m["id"].as_str()).map_or_else(new_id, str::to_string),
            "name": self.dir.rsplit('/').next().unwrap_or(&self.dir),
            "description": p.description,
            "format": {"provider": "parquet", "options": {}},
            "schemaString": schema.to_string(),
            "partitionColumns": partition_columns,
            "configuration": {},
            "createdTime": old.and_then(|m| m["createdTime"].as_i64()).unwrap_or(millis(now)),
        })
    }

    /// Delete the log entries a reader no longer needs: those before the newest checkpoint
    /// written before `horizon`, which stays, so every version since it can still be read.
    /// Best effort: what is left is deleted at the next checkpoint.
    pub async fn clean_log(&self, lake: &LakeStore, horizon: DateTime<Utc>) {
        let Ok(metas) = lake
            .store
            .list(Some(&lake.path(&format!("{}/{LOG_DIR}", self.dir))))
            .try_collect::<Vec<_>>()
            .await
        else {
            return;
        };
        let entry = |m: &object_store::ObjectMeta| {
            let name = m.location.filename()?;
            let (number, rest) = name.split_at_checked(20)?;
            let version: u64 = number.parse().ok()?;
            let checkpoint = rest == ".checkpoint.parquet";
            (checkpoint || rest == ".json").then_some((version, checkpoint))
        };
        let Some(keep_from) = metas
            .iter()
            .filter(|m| m.last_modified < horizon)
            .filter_map(|m| entry(m).filter(|(_, checkpoint)| *checkpoint))
            .map(|(v, _)| v)
            .max()
        else {
            return;
        };
        for m in &metas {
            if entry(m).is_some_and(|(v, _)| v < keep_from) {
                let _ = lake.store.delete(&m.location).await;
            }
        }
    }

    /// Write the table's state at `version` as a checkpoint, and point `_last_checkpoint` at
    /// it.
    async fn write_checkpoint(&self, lake: &LakeStore, version: u64) -> Result<(), DeltaError> {
        let fail = |problem: String| DeltaError::Checkpoint {
            table: self.dir.clone(),
            version,
            problem,
        };
        let mut lines = Vec::new();
        let mut push = |kind: &str, body: &Value| {
            serde_json::to_writer(&mut lines, &json!({ kind: body })).expect("serializes");
            lines.push(b'\n');
        };
        if let Some(p) = &self.protocol {
            push("protocol", p);
        }
        if let Some(m) = &self.metadata {
            push("metaData", m);
        }
        if let Some(t) = self.txn {
            push("txn", &json!({"appId": APP_ID, "version": t}));
        }
        for add in self.files.values() {
            push("add", add);
        }
        let rows = lines.iter().filter(|b| **b == b'\n').count();
        let schema = checkpoint_schema();
        let mut decoder = arrow::json::ReaderBuilder::new(schema.clone())
            .build_decoder()
            .map_err(|e| fail(e.to_string()))?;
        let mut out = Vec::new();
        let mut writer = ArrowWriter::try_new(&mut out, schema.clone(), None)
            .map_err(|e| fail(e.to_string()))?;
        // The decoder stops at each full batch (1,024 rows): feed it the rest until every
        // action is in the checkpoint.
        let mut rest = &lines[..];
        let mut written = 0;
        loop {
            let used = decoder.decode(rest).map_err(|e| fail(e.to_string()))?;
            rest = &rest[used..];
            match decoder.flush().map_err(|e| fail(e.to_string()))? {
                Some(batch) => {
                    written += batch.num_rows();
                    writer.write(&batch).map_err(|e| fail(e.to_string()))?;
                }
                None if rest.is_empty() => break,
                None => return Err(fail("the decoder took no action".to_string())),
            }
        }
        if written != rows {
            return Err(fail(format!("{written} of {rows} actions decoded")));
        }
        writer.close().map_err(|e| fail(e.to_string()))?;
        let write = |source| DeltaError::Write {
            table: self.dir.clone(),
            version,
            source,
        };
        lake.store
            .put(
                &self.log_path(lake, &checkpoint_name(version)),
                PutPayload::from(out),
            )
            .await
            .map_err(write)?;
        let last = json!({"version": version, "size": rows});
        lake.store
            .put(
                &self.log_path(lake, "_last_checkpoint"),
                PutPayload::from(last.to_string()),
            )
            .await
            .map_err(write)?;
        Ok(())
    }
}

/// A new table id, a random UUID (version 4) in its usual text form.
fn new_id() -> String {
    let b: u128 = (rand::random::<u128>() & !(0xf000 << 64) & !(0xc000 << 48))
        | (0x4000 << 64)
        | (0x8000 << 48);
    let h = format!("{b:032x}");
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

/// A file's partition values: column and value (`None`: null), in folder order.
type PartitionValues = Vec<(String, Option<String>)>;

/// The `k=v` folders of a path relative to its table, in order; the Hive default partition
/// is null.
fn partition_values(rel: &str) -> PartitionValues {
    let mut dirs: Vec<&str> = rel.split('/').collect();
    dirs.pop();
    dirs.into_iter()
        .filter_map(|d| d.split_once('='))
        .map(|(k, v)| {
            let v = match v {
                "__HIVE_DEFAULT_PARTITION__" => None,
                v if partition_type(k) == "long" => {
                    Some(v.parse::<i64>().map_or(v.to_string(), |n| n.to_string()))
                }
                v => Some(v.to_string()),
            };
            (k.to_string(), v)
        })
        .collect()
}

/// The Delta type of a partition column, as hive readers infer it from the folder names.
fn partition_type(name: &str) -> &'static str {
    match name {
        "date" | "snapshot_date" => "date",
        "bucket" | "list_id" => "long",
        _ => "string",
    }
}

/// The file's statistics: its row count and the column statistics its writer took; for a
/// file written by an earlier run (when a table is built or repaired from the manifest), the
/// range of its cursor column.
fn stats(f: &LiveFile, cursor_field: Option<&str>) -> String {
    if let Some(Value::Object(columns)) = &f.file.column_stats {
        let mut s = columns.clone();
        s.insert("numRecords".to_string(), json!(f.file.rows));
        return Value::Object(s).to_string();
    }
    let mut s = json!({"numRecords": f.file.rows});
    if let (Some(c), Some(min), Some(max)) = (cursor_field, f.file.min_cursor, f.file.max_cursor)
        && let (Some(lo), Some(hi)) = (instant_bound(min, false), instant_bound(max, true))
    {
        s["minValues"] = json!({ c: lo });
        s["maxValues"] = json!({ c: hi });
    }
    s.to_string()
}

/// A field of the table's schema in Delta's JSON form, its description as the comment.
fn delta_field(f: &Field) -> Value {
    let metadata = match f.metadata().get("description") {
        Some(d) => json!({ "comment": d }),
        None => json!({}),
    };
    json!({
        "name": f.name(),
        "type": delta_type(f.data_type()),
        "nullable": f.is_nullable(),
        "metadata": metadata,
    })
}

fn delta_type(t: &DataType) -> Value {
    match t {
        DataType::Utf8 | DataType::LargeUtf8 => json!("string"),
        DataType::Int64 => json!("long"),
        DataType::Int32 => json!("integer"),
        DataType::Float64 => json!("double"),
        DataType::Boolean => json!("boolean"),
        DataType::Date32 => json!("date"),
        DataType::Timestamp(TimeUnit::Microsecond, Some(_)) => json!("timestamp"),
        DataType::List(item) => json!({
            "type": "array",
            "elementType": delta_type(item.data_type()),
            "containsNull": item.is_nullable(),
        }),
        DataType::Struct(fields) => json!({
            "type": "struct",
            "fields": fields.iter().map(|f| delta_field(f)).collect::<Vec<_>>(),
        }),
        other => unreachable!("schemas declare no {other} column"),
    }
}

/// The columns of a checkpoint that this tool writes (the protocol's, less `remove`).
fn checkpoint_schema() -> SchemaRef {
    let s = |n: &str| Field::new(n, DataType::Utf8, true);
    let l = |n: &str| Field::new(n, DataType::Int64, true);
    let i = |n: &str| Field::new(n, DataType::Int32, true);
    let b = |n: &str| Field::new(n, DataType::Boolean, true);
    let map = |n: &str| {
        Field::new_map(
            n,
            "key_value",
            Field::new("key", DataType::Utf8, false),
            Field::new("value", DataType::Utf8, true),
            false,
            true,
        )
    };
    let st = |n: &str, f: Vec<Field>| Field::new(n, DataType::Struct(Fields::from(f)), true);
    Arc::new(Schema::new(vec![
        st("txn", vec![s("appId"), l("version"), l("lastUpdated")]),
        st(
            "add",
            vec![
                s("path"),
                map("partitionValues"),
                l("size"),
                l("modificationTime"),
                b("dataChange"),
                s("stats"),
            ],
        ),
        st(
            "metaData",
            vec![
                s("id"),
                s("name"),
                s("description"),
                st("format", vec![s("provider"), map("options")]),
                s("schemaString"),
                Field::new_list(
                    "partitionColumns",
                    Field::new("element", DataType::Utf8, true),
                    true,
                ),
                map("configuration"),
                l("createdTime"),
            ],
        ),
        st(
            "protocol",
            vec![i("minReaderVersion"), i("minWriterVersion")],
        ),
    ]))
}
