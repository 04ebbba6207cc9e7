//! `state`: what the lake's manifest says per stream, and `state reset`: forget streams'
//! cursors and quarantined windows in a new manifest commit, so the next sync extracts them
//! again. A reset leaves the live files alone: the next run replaces the date partitions it
//! reads again, and partitions before its start date stay live.
//!
//! Summaries and resets are pure functions of the manifest; [`open_lake`] refuses to create
//! a missing local lake (a mistyped `--dest` must not become an empty lake).

use std::path::Path;

use chrono::{DateTime, Utc};
use object_store::ObjectStoreExt;
use serde::{Deserialize, Serialize};

use crate::catalog::SyncMode;
use crate::manifest::{Manifest, ManifestError};
use crate::sink::{LakeStore, StoreError, is_cursorless};

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("no lake at {dest}: the folder does not exist (check --dest)")]
    NoLake { dest: String },
    #[error("no manifest in {dest}: nothing was synced there yet (check --dest)")]
    NoManifest { dest: String },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Manifest(#[from] ManifestError),
}

/// Open an existing lake: a local folder must exist (S3 prefixes always "exist").
pub fn open_lake(dest: &str) -> Result<LakeStore, StateError> {
    if !dest.contains("://") || dest.starts_with("file://") {
        let local = dest.strip_prefix("file://").unwrap_or(dest);
        if !Path::new(local).is_dir() {
            return Err(StateError::NoLake {
                dest: dest.to_string(),
            });
        }
    }
    Ok(LakeStore::open(dest)?)
}

/// The lake's newest manifest; an error when there is none.
pub async fn load(lake: &LakeStore) -> Result<Manifest, StateError> {
    let manifest = Manifest::load(lake).await?;
    if manifest.version == 0 {
        return Err(StateError::NoManifest {
            dest: lake.display.clone(),
        });
    }
    Ok(manifest)
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct QuarantineSummary {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    pub error: String,
    pub attempts: u32,
    pub since_run: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StreamSummary {
    pub stream: String,
    pub mode: SyncMode,
    pub cursor_field: String,
    pub cursor: Option<DateTime<Utc>>,
    pub files: u64,
    pub rows: u64,
    /// Live rows without a readable cursor, in `date=__HIVE_DEFAULT_PARTITION__`.
    pub rows_without_cursor: u64,
    pub bytes: u64,
    pub quarantined: Vec<QuarantineSummary>,
    pub last_run: Option<String>,
    /// The version of the stream's Delta table, when it is one (`--table-format delta`).
    pub delta_version: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LakeSummary {
    pub dest: String,
    pub manifest_version: u64,
    pub committed_at: Option<DateTime<Utc>>,
    pub last_run: Option<String>,
    pub streams: Vec<StreamSummary>,
    /// The report of the run that made the latest commit, when it is in `_runs/`.
    pub last_run_report: Option<RunSummary>,
}

/// What `state` shows of a run's report (`_runs/<run-id>.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunSummary {
    pub run_id: String,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    #[serde(default)]
    pub interrupted: bool,
    pub rate_limited: u64,
    #[serde(default)]
    pub rate_limit_wait_seconds: f64,
    pub streams: Vec<RunStreamSummary>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunStreamSummary {
    pub stream: String,
    pub status: String,
    #[serde(default)]
    pub error: Option<String>,
    pub rows: u64,
    #[serde(default)]
    pub behind_seconds: Option<i64>,
    #[serde(default)]
    pub rate_limited: u64,
    #[serde(default)]
    pub rate_limit_wait_seconds: f64,
}

/// The report of the manifest's last run, if `_runs/` holds it (resets write none); a
/// report that cannot be read is skipped with a warning.
pub async fn last_report(lake: &LakeStore, manifest: &Manifest) -> Option<RunSummary> {
    let run = manifest.last_run.as_deref()?;
    let path = lake.path(&format!("_runs/{run}.json"));
    let bytes = lake.store.get(&path).await.ok()?.bytes().await.ok()?;
    serde_json::from_slice(&bytes)
        .inspect_err(|e| tracing::warn!(run, error = %e, "the last run's report is not readable"))
        .ok()
}

/// `1d 2h`, `3h 4m`, `5m 6s`: a duration for people.
fn age(secs: i64) -> String {
    let (d, h, m, s) = (secs / 86_400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{s}s"),
        (0, 0, _) => format!("{m}m {s}s"),
        (0, _, _) => format!("{h}h {m}m"),
        _ => format!("{d}d {h}h"),
    }
}

fn render_run(r: &RunSummary) -> String {
    let mut out = format!(
        "
last run {}: {} to {}{}; {} rate-limited answers, {:.1}s waited after them\n",
        r.run_id,
        r.started_at.to_rfc3339(),
        r.finished_at.to_rfc3339(),
        if r.interrupted { ", interrupted" } else { "" },
        r.rate_limited,
        r.rate_limit_wait_seconds
    );
    out += &format!(
        "{:<28} {:<12} {:>10} {:>14} {:>6} {:>9}\n",
        "stream", "status", "rows", "behind by", "429s", "waited"
    );
    for s in &r.streams {
        out += &format!(
            "{:<28} {:<12} {:>10} {:>14} {:>6} {:>8.1}s\n",
            s.stream,
            s.status,
            s.rows,
            s.behind_seconds.map_or_else(|| "-".to_string(), age),
            s.rate_limited,
            s.rate_limit_wait_seconds
        );
    }
    out
}

pub fn summarize(dest: &str, manifest: &Manifest) -> LakeSummary {
    LakeSummary {
        dest: dest.to_string(),
        manifest_version: manifest.version,
        committed_at: manifest.committed_at,
        last_run: manifest.last_run.clone(),
        last_run_report: None,
        streams: manifest
            .streams
            .iter()
            .map(|(name, s)| StreamSummary {
                stream: name.clone(),
                mode: s.mode,
                cursor_field: s.cursor_field.clone(),
                cursor: s.cursor,
                files: s.files.len() as u64,
                rows: s.rows(),
                rows_without_cursor: s
                    .files
                    .iter()
                    .filter(|f| is_cursorless(&f.file.partition))
                    .map(|f| f.file.rows)
                    .sum(),
                bytes: s.files.iter().map(|f| f.file.bytes).sum(),
                quarantined: s
                    .quarantine
                    .iter()
                    .map(|q| QuarantineSummary {
                        start: q.start,
                        end: q.end,
                        error: q.error.clone(),
                        attempts: q.attempts,
                        since_run: q.since_run.clone(),
                    })
                    .collect(),
                last_run: s.last_run.clone(),
                delta_version: None,
            })
            .collect(),
    }
}

/// Fill in the version of each stream's Delta table; a stream without a readable log has
/// none.
pub async fn add_delta_versions(lake: &LakeStore, summary: &mut LakeSummary) {
    for s in &mut summary.streams {
        s.delta_version = match crate::delta::Table::open(lake, &s.stream).await {
            Ok(table) => table.version(),
            Err(e) => {
                tracing::warn!(stream = %s.stream, error = %e, "could not read the stream's Delta table");
                None
            }
        };
    }
}

/// The summary as a table, then the quarantined windows with their errors.
pub fn render(summary: &LakeSummary) -> String {
    let mut out = format!(
        "lake {} (manifest version {}, committed {} by run {})\n",
        summary.dest,
        summary.manifest_version,
        summary
            .committed_at
            .map(|t| t.to_rfc3339())
            .unwrap_or_else(|| "-".into()),
        summary.last_run.as_deref().unwrap_or("-"),
    );
    out += &format!(
        "{:<28} {:<22} {:<25} {:>6} {:>10} {:>12} {:>11}  last run\n",
        "stream", "mode", "cursor", "files", "rows", "bytes", "quarantined"
    );
    for s in &summary.streams {
        out += &format!(
            "{:<28} {:<22} {:<25} {:>6} {:>10} {:>12} {:>11}  {}\n",
            s.stream,
            s.mode.as_str(),
            s.cursor
                .map(|c| c.to_rfc3339())
                .unwrap_or_else(|| "-".into()),
            s.files,
            s.rows,
            s.bytes,
            s.quarantined.len(),
            s.last_run.as_deref().unwrap_or("-"),
        );
    }
    let quarantined: Vec<_> = summary
        .streams
        .iter()
        .flat_map(|s| s.quarantined.iter().map(move |q| (s, q)))
        .collect();
    if !quarantined.is_empty() {
        out += "\nquarantined windows (retried on the next run):\n";
        for (s, q) in quarantined {
            out += &format!(
                "  {} [{}, {}) after {} attempts since run {}: {}\n",
                s.stream,
                q.start.to_rfc3339(),
                q.end.to_rfc3339(),
                q.attempts,
                q.since_run,
                q.error
            );
        }
    }
    let cursorless: Vec<String> = summary
        .streams
        .iter()
        .filter(|s| s.rows_without_cursor > 0)
        .map(|s| format!("{} {}", s.stream, s.rows_without_cursor))
        .collect();
    if !cursorless.is_empty() {
        out += &format!(
            "\nrows without a cursor (kept once each in date=__HIVE_DEFAULT_PARTITION__): {}\n",
            cursorless.join(", ")
        );
    }
    let tables: Vec<String> = summary
        .streams
        .iter()
        .filter_map(|s| Some(format!("{} v{}", s.stream, s.delta_version?)))
        .collect();
    if !tables.is_empty() {
        out += &format!("\nDelta tables (version): {}\n", tables.join(", "));
    }
    if let Some(r) = &summary.last_run_report {
        out += &render_run(r);
    }
    out
}

/// What resetting one stream did.
#[derive(Debug, Clone, PartialEq)]
pub enum Reset {
    /// The stream had state: its cursor and quarantined windows were forgotten.
    Forgotten {
        stream: String,
        cursor: Option<DateTime<Utc>>,
        quarantined: usize,
        files: usize,
        rows: u64,
    },
    /// The lake holds nothing for this stream.
    NeverSynced { stream: String },
}

impl Reset {
    pub fn changed(&self) -> bool {
        matches!(self, Reset::Forgotten { .. })
    }
}

impl std::fmt::Display for Reset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Reset::Forgotten {
                stream,
                cursor,
                quarantined,
                files,
                rows,
            } => write!(
                f,
                "{stream}: forgot cursor {} and {quarantined} quarantined window(s); its {files} \
                 live file(s) ({rows} rows) stay until the next sync replaces them",
                cursor.map(|c| c.to_rfc3339()).unwrap_or_else(|| "-".into())
            ),
            Reset::NeverSynced { stream } => {
                write!(
                    f,
                    "{stream}: nothing to forget (the lake holds no state for it)"
                )
            }
        }
    }
}

/// Forget the cursor and quarantined windows of each of `streams` in `manifest` (the
/// caller commits it).
pub fn reset(manifest: &mut Manifest, streams: &[String]) -> Vec<Reset> {
    streams
        .iter()
        .map(|name| match manifest.streams.get_mut(name) {
            Some(s) => {
                let done = Reset::Forgotten {
                    stream: name.clone(),
                    cursor: s.cursor.take(),
                    quarantined: s.quarantine.len(),
                    files: s.files.len(),
                    rows: s.rows(),
                };
                s.quarantine.clear();
                done
            }
            None => Reset::NeverSynced {
                stream: name.clone(),
            },
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::{LiveFile, Quarantined, StreamState};
    use crate::sink::WrittenFile;

    fn manifest() -> Manifest {
        let mut s = StreamState::new(SyncMode::Incremental, "createdAt", 1);
        s.cursor = Some("2024-01-04T00:00:00Z".parse().unwrap());
        s.files.push(LiveFile {
            file: WrittenFile {
                path: "email_send/date=2024-01-01/part-r-0.parquet".into(),
                partition: "date=2024-01-01".into(),
                rows: 7,
                bytes: 100,
                min_cursor: None,
                max_cursor: None,
                column_stats: None,
            },
            run: "r".into(),
        });
        s.quarantine.push(Quarantined {
            key: None,
            start: "2024-01-02T00:00:00Z".parse().unwrap(),
            end: "2024-01-03T00:00:00Z".parse().unwrap(),
            error: "response cut off".into(),
            attempts: 6,
            since_run: "r".into(),
        });
        s.last_run = Some("r".into());
        let mut m = Manifest {
            version: 3,
            ..Manifest::default()
        };
        m.streams.insert("email_send".into(), s);
        m
    }

    #[test]
    fn summaries_count_rows_bytes_and_quarantine() {
        let summary = summarize("/lake", &manifest());
        assert_eq!(summary.streams.len(), 1);
        let s = &summary.streams[0];
        assert_eq!((s.files, s.rows, s.bytes), (1, 7, 100));
        assert_eq!(s.quarantined.len(), 1);
        let text = render(&summary);
        assert!(text.contains("2024-01-04T00:00:00+00:00"), "{text}");
        assert!(
            text.contains("email_send [2024-01-02T00:00:00+00:00, 2024-01-03T00:00:00+00:00) after 6 attempts since run r: response cut off"),
            "{text}"
        );
    }

    #[test]
    fn the_last_run_report_shows_freshness_and_429s() {
        let report = serde_json::json!({
            "run_id": "r", "dest": "/lake", "started_at": "2024-01-04T00:00:00Z",
            "finished_at": "2024-01-04T00:10:00Z", "requests": 9, "retries": 2,
            "rate_limited": 2, "backoff_seconds": 3.0, "rate_limit_wait_seconds": 2.5,
            "interrupted": true, "lease_lost": false,
            "streams": [{"stream": "email_send", "mode": "incremental", "status": "succeeded",
                "rows": 7, "files": 1, "bytes": 100, "windows": 1, "window_retries": 0,
                "malformed_lines": 0, "commits": 1, "cursor": "2024-01-04T00:00:00Z",
                "behind_seconds": 93784, "rate_limited": 2, "rate_limit_wait_seconds": 2.5,
                "quarantined": [], "seconds": 1.0}]
        });
        let mut summary = summarize("/lake", &manifest());
        summary.last_run_report = Some(serde_json::from_value(report).unwrap());
        let text = render(&summary);
        assert!(text.contains("last run r: 2024-01-04T00:00:00+00:00 to 2024-01-04T00:10:00+00:00, interrupted; 2 rate-limited answers, 2.5s waited after them"), "{text}");
        let line = text.lines().rfind(|l| l.starts_with("email_send")).unwrap();
        assert!(
            line.contains("succeeded") && line.contains("1d 2h") && line.ends_with("2.5s"),
            "{line}"
        );
        assert_eq!(age(59), "59s");
        assert_eq!(age(3_661), "1h 1m");
    }

    #[test]
    fn reset_forgets_cursor_and_quarantine_but_keeps_files() {
        let mut m = manifest();
        let done = reset(&mut m, &["email_send".into(), "users".into()]);
        assert!(done[0].changed() && !done[1].changed());
        assert_eq!(
            done[1].to_string(),
            "users: nothing to forget (the lake holds no state for it)"
        );
        let s = &m.streams["email_send"];
        assert_eq!(s.cursor, None);
        assert!(s.quarantine.is_empty());
        assert_eq!(s.files.len(), 1);
    }
}
