//! The manifest: the lake's commit point. It records, per stream, the sync mode, the cursor,
//! the live files and the quarantined windows.
//!
//! Each commit writes the whole state as a new version `_manifest/v<20 digits>.json` with
//! create-if-absent (`PutMode::Create`), atomic on local disk and on S3, so two writers can
//! never silently overwrite each other: the loser gets [`ManifestError::Conflict`]. The newest
//! version is the one with the highest number; a few old versions are kept for inspection.
//! Data files are written before the commit that names them; files no version names are
//! garbage.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use object_store::{ObjectStoreExt, PutMode, PutOptions, PutPayload};
use serde::{Deserialize, Serialize};

use crate::catalog::SyncMode;
use crate::sink::{LakeStore, WrittenFile};

/// The folder of the manifest's versions, relative to the lake's root.
pub const MANIFEST_DIR: &str = "_manifest";
/// How many versions to keep behind the newest.
const KEEP_VERSIONS: u64 = 20;
/// The format of the manifest documents this build writes.
pub const FORMAT_VERSION: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("reading the manifest of {dest}: {source}")]
    Read {
        dest: String,
        source: object_store::Error,
    },
    #[error("manifest {path} in {dest} is not valid: {source}")]
    Parse {
        dest: String,
        path: String,
        source: serde_json::Error,
    },
    #[error(
        "manifest {path} in {dest} has format {found}; this build reads format {FORMAT_VERSION}"
    )]
    Format {
        dest: String,
        path: String,
        found: u32,
    },
    #[error(
        "another run committed version {version} of the manifest of {dest} first; \
         this run's work since its last commit was not recorded (run again)"
    )]
    Conflict { dest: String, version: u64 },
    #[error("writing manifest version {version} to {dest}: {source}")]
    Write {
        dest: String,
        version: u64,
        source: object_store::Error,
    },
}

/// The whole state of the lake.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: u32,
    /// The version this state was read from or committed as (0: nothing committed yet).
    pub version: u64,
    pub streams: BTreeMap<String, StreamState>,
    /// The run that made the latest commit.
    pub last_run: Option<String>,
    pub committed_at: Option<DateTime<Utc>>,
}

/// One stream's state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StreamState {
    pub mode: SyncMode,
    pub cursor_field: String,
    /// The instant through which the stream's data is complete.
    pub cursor: Option<DateTime<Utc>>,
    pub schema_version: u32,
    /// Custom fields added to the stream's declared schema (users: from `users/getFields`),
    /// in the order they were first seen; with the declared schema they reproduce the
    /// schema of `schema_version`. Only ever grows, and a field's type never changes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub custom_fields: Vec<CustomField>,
    /// In `incremental-deduped` mode: the number of `bucket=NN` folders, fixed at the
    /// stream's first deduped sync.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub buckets: Option<u32>,
    pub files: Vec<LiveFile>,
    /// Windows that failed after every retry; retried on the next run.
    pub quarantine: Vec<Quarantined>,
    pub last_run: Option<String>,
    /// For per-user streams (`events`): the last user of the pass in progress whose rows are
    /// committed; the next run continues after it. `None` when no pass is in progress.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint: Option<String>,
}

/// A custom field as `users/getFields` reported it: dotted path and type name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct CustomField {
    pub name: String,
    #[serde(rename = "type")]
    pub type_name: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LiveFile {
    #[serde(flatten)]
    pub file: WrittenFile,
    pub run: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Quarantined {
    /// What failed within the stream when it is not a time window, e.g. `list_id=123`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    pub error: String,
    pub attempts: u32,
    pub since_run: String,
}

impl StreamState {
    pub fn new(mode: SyncMode, cursor_field: &str, schema_version: u32) -> Self {
        StreamState {
            mode,
            cursor_field: cursor_field.to_string(),
            cursor: None,
            schema_version,
            custom_fields: Vec::new(),
            buckets: None,
            files: Vec::new(),
            quarantine: Vec::new(),
            last_run: None,
            checkpoint: None,
        }
    }

    pub fn rows(&self) -> u64 {
        self.files.iter().map(|f| f.file.rows).sum()
    }
}

fn version_path(lake: &LakeStore, version: u64) -> object_store::path::Path {
    lake.path(&format!("{MANIFEST_DIR}/v{version:020}.json"))
}

fn version_of(name: &str) -> Option<u64> {
    name.strip_prefix('v')?.strip_suffix(".json")?.parse().ok()
}

/// All manifest versions in the lake, ascending.
async fn versions(lake: &LakeStore) -> Result<Vec<u64>, ManifestError> {
    let prefix = lake.path(MANIFEST_DIR);
    let metas: Vec<_> = lake
        .store
        .list(Some(&prefix))
        .try_collect()
        .await
        .map_err(|source| ManifestError::Read {
            dest: lake.display.clone(),
            source,
        })?;
    let mut v: Vec<u64> = metas
        .iter()
        .filter_map(|m| m.location.filename().and_then(version_of))
        .collect();
    v.sort_unstable();
    Ok(v)
}

impl Manifest {
    /// Read the newest version, or an empty manifest when the lake has none.
    pub async fn load(lake: &LakeStore) -> Result<Manifest, ManifestError> {
        let Some(&version) = versions(lake).await?.last() else {
            return Ok(Manifest {
                format: FORMAT_VERSION,
                ..Manifest::default()
            });
        };
        let path = version_path(lake, version);
        let read_err = |source| ManifestError::Read {
            dest: lake.display.clone(),
            source,
        };
        let bytes = lake
            .store
            .get(&path)
            .await
            .map_err(read_err)?
            .bytes()
            .await
            .map_err(read_err)?;
        let manifest: Manifest =
            serde_json::from_slice(&bytes).map_err(|source| ManifestError::Parse {
                dest: lake.display.clone(),
                path: path.to_string(),
                source,
            })?;
        if manifest.format != FORMAT_VERSION {
            return Err(ManifestError::Format {
                dest: lake.display.clone(),
                path: path.to_string(),
                found: manifest.format,
            });
        }
        Ok(Manifest {
            version,
            ..manifest
        })
    }

    /// Commit this state as the next version, create-if-absent. On success `self.version`
    /// is the new version. Old versions beyond the kept few are deleted afterwards.
    pub async fn commit(&mut self, lake: &LakeStore, run: &str) -> Result<(), ManifestError> {
        let version = self.version + 1;
        let mut next = self.clone();
        next.version = version;
        next.format = FORMAT_VERSION;
        next.last_run = Some(run.to_string());
        next.committed_at = Some(Utc::now());
        let body = serde_json::to_vec_pretty(&next).expect("the manifest serializes");
        let opts = PutOptions {
            mode: PutMode::Create,
            ..PutOptions::default()
        };
        match lake
            .store
            .put_opts(&version_path(lake, version), PutPayload::from(body), opts)
            .await
        {
            Ok(_) => {}
            Err(object_store::Error::AlreadyExists { .. })
            | Err(object_store::Error::Precondition { .. }) => {
                return Err(ManifestError::Conflict {
                    dest: lake.display.clone(),
                    version,
                });
            }
            Err(source) => {
                return Err(ManifestError::Write {
                    dest: lake.display.clone(),
                    version,
                    source,
                });
            }
        }
        *self = next;
        if version > KEEP_VERSIONS {
            for old in versions(lake).await.unwrap_or_default() {
                if old + KEEP_VERSIONS < version {
                    let _ = lake.store.delete(&version_path(lake, old)).await;
                }
            }
        }
        Ok(())
    }

    /// Every file path any stream holds live.
    pub fn live_paths(&self) -> impl Iterator<Item = &str> {
        self.streams
            .values()
            .flat_map(|s| s.files.iter().map(|f| f.file.path.as_str()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn commits_are_versions_and_conflicts_are_typed() {
        let lake = LakeStore::in_memory();
        let mut a = Manifest::load(&lake).await.unwrap();
        assert_eq!(a.version, 0);
        let mut b = a.clone();
        a.streams.insert(
            "email_send".into(),
            StreamState::new(SyncMode::Incremental, "createdAt", 1),
        );
        a.commit(&lake, "run-a").await.unwrap();
        assert_eq!(a.version, 1);
        let err = b.commit(&lake, "run-b").await.unwrap_err();
        assert!(
            matches!(err, ManifestError::Conflict { version: 1, .. }),
            "{err}"
        );
        let read = Manifest::load(&lake).await.unwrap();
        assert_eq!(read, a);
        assert_eq!(read.last_run.as_deref(), Some("run-a"));
    }

    #[tokio::test]
    async fn keeps_only_recent_versions() {
        let lake = LakeStore::in_memory();
        let mut m = Manifest::load(&lake).await.unwrap();
        for _ in 0..(KEEP_VERSIONS + 5) {
            m.commit(&lake, "r").await.unwrap();
        }
        let v = versions(&lake).await.unwrap();
        assert_eq!(v.first(), Some(&5));
        assert_eq!(v.last(), Some(&(KEEP_VERSIONS + 5)));
        assert_eq!(
            Manifest::load(&lake).await.unwrap().version,
            KEEP_VERSIONS + 5
        );
    }
}
