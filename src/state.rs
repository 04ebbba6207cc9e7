//! `state`: what the lake's manifest says per stream, and `state reset`: forget streams'
//! cursors and quarantined windows in a new manifest commit, so the next sync extracts them
//! again. A reset leaves the live files alone: the next run replaces the date partitions it
//! reads again, and partitions before its start date stay live.
//!
//! Summaries and resets are pure functions of the manifest; [`open_lake`] refuses to create
//! a missing local lake (a mistyped `--dest` must not become an empty lake).

use std::path::Path;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::catalog::SyncMode;
use crate::manifest::{Manifest, ManifestError};
use crate::sink::{LakeStore, StoreError};

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
    pub bytes: u64,
    pub quarantined: Vec<QuarantineSummary>,
    pub last_run: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LakeSummary {
    pub dest: String,
    pub manifest_version: u64,
    pub committed_at: Option<DateTime<Utc>>,
    pub last_run: Option<String>,
    pub streams: Vec<StreamSummary>,
}

pub fn summarize(dest: &str, manifest: &Manifest) -> LakeSummary {
    LakeSummary {
        dest: dest.to_string(),
        manifest_version: manifest.version,
        committed_at: manifest.committed_at,
        last_run: manifest.last_run.clone(),
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
            })
            .collect(),
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
