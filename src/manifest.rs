//! The manifest: the lake's commit point. It records, per stream, the sync mode, the cursor,
//! the live files and the quarantined windows.
//!
//! Each commit writes the whole state as a new version `_manifest/v<20 digits>.json` with
//! create-if-absent (`PutMode::Create`), atomic on local disk and on S3, so two writers can
//! never silently overwrite each other: the loser gets [`ManifestError::Conflict`]. The newest
//! version is the one with the highest number; a few old versions are kept for inspection.
//! Data files are written before the commit that names them; files no version names are
//! garbage.
//!
//! Commits are fenced: each carries the generation of the lake's lease its run holds
//! ([`crate::lock`]), a run's first commit is its fence ([`Manifest::fence`]), and a commit is
//! refused once the run cannot prove it still holds the lease. So a run that lost the lake to
//! a newer one commits nothing more: the next version it would write already exists.
//!
//! On local disk every commit is durable before it returns: the data files it newly names,
//! the version file and the folder are fsynced. A latest version that does not parse (torn by
//! a power loss on a disk that lied about it) is skipped for the one before it, with a
//! warning, and the run that loaded it deletes nothing.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use object_store::ObjectStoreExt;
use serde::{Deserialize, Serialize};

use crate::catalog::SyncMode;
use crate::lock::LeaseFence;
use crate::sink::{Created, LakeStore, WrittenFile};

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
    #[error(
        "not committing to {dest}: this run no longer holds the lake's lease (another run took \
         it over, or it could not renew it in time); what it did since its last commit is not recorded"
    )]
    LeaseLost { dest: String },
    #[error(
        "not committing to {dest}: manifest version {version} was committed under lease \
         generation {found}, newer than this run's {ours}; another run holds the lake"
    )]
    Superseded {
        dest: String,
        version: u64,
        found: u64,
        ours: u64,
    },
    #[error("making manifest version {version} of {dest} durable: {source}")]
    Sync {
        dest: String,
        version: u64,
        source: std::io::Error,
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
    /// The generation of the lake's lease under which this version was committed.
    #[serde(default)]
    pub lease_generation: u64,
    /// Set on load when the latest version was unreadable and an older one was read instead:
    /// the run deletes nothing (files only the lost version named may be live).
    #[serde(skip)]
    pub recovered: bool,
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
    /// With `--table-format delta`: files commits retired, kept on disk for readers of
    /// older table versions until the retention ends; then a run deletes them (vacuum).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub retired: Vec<Retired>,
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

/// A file a commit retired, kept until the retention after `retired_at` ends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Retired {
    pub path: String,
    pub retired_at: DateTime<Utc>,
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
            retired: Vec::new(),
            last_run: None,
            checkpoint: None,
        }
    }

    pub fn rows(&self) -> u64 {
        self.files.iter().map(|f| f.file.rows).sum()
    }
}

fn version_path_relative(version: u64) -> String {
    format!("{MANIFEST_DIR}/v{version:020}.json")
}

fn version_path(lake: &LakeStore, version: u64) -> object_store::path::Path {
    lake.path(&version_path_relative(version))
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
    /// Read the newest version, or an empty manifest when the lake has none. A newest
    /// version that is not a manifest (torn, empty) is skipped for the one before it, with
    /// a warning and [`Manifest::recovered`] set; the next commit goes after the skipped one.
    pub async fn load(lake: &LakeStore) -> Result<Manifest, ManifestError> {
        let all = versions(lake).await?;
        let Some(&newest) = all.last() else {
            return Ok(Manifest {
                format: FORMAT_VERSION,
                ..Manifest::default()
            });
        };
        let mut first_error = None;
        for &version in all.iter().rev() {
            match Self::read(lake, version).await {
                Ok(manifest) => {
                    if let Some(e) = &first_error {
                        tracing::warn!(error = %e, read = version, "the newest manifest version is unreadable; using the one before it, and deleting nothing this run");
                    }
                    return Ok(Manifest {
                        version: newest,
                        recovered: first_error.is_some(),
                        ..manifest
                    });
                }
                Err(e @ ManifestError::Parse { .. }) if first_error.is_none() => {
                    first_error = Some(e);
                }
                Err(e) => return Err(first_error.unwrap_or(e)),
            }
        }
        Err(first_error.expect("at least one version was tried"))
    }

    async fn read(lake: &LakeStore, version: u64) -> Result<Manifest, ManifestError> {
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
        Ok(manifest)
    }

    /// A run's first commit: its lease generation, on the newest manifest, so no run of an
    /// older generation can commit after it. Returns the manifest it committed, with
    /// [`Manifest::recovered`] as loaded.
    pub async fn fence(
        lake: &LakeStore,
        run: &str,
        fence: &LeaseFence,
    ) -> Result<Manifest, ManifestError> {
        loop {
            let mut manifest = Self::load(lake).await?;
            let recovered = manifest.recovered;
            match manifest.commit(lake, run, fence).await {
                Err(ManifestError::Conflict { .. }) => continue,
                committed => {
                    committed?;
                    manifest.recovered = recovered;
                    return Ok(manifest);
                }
            }
        }
    }

    /// Commit this state as the next version, create-if-absent. On success `self.version`
    /// is the new version. Old versions beyond the kept few are deleted afterwards.
    /// Refused when `fence` no longer holds the lease, or this state was committed under a
    /// newer generation. On local disk the version is fsynced with its folder before this
    /// returns (the writer fsyncs data files as it closes them, before any commit names them).
    pub async fn commit(
        &mut self,
        lake: &LakeStore,
        run: &str,
        fence: &LeaseFence,
    ) -> Result<(), ManifestError> {
        let version = self.version + 1;
        if self.lease_generation > fence.generation() {
            return Err(ManifestError::Superseded {
                dest: lake.display.clone(),
                version: self.version,
                found: self.lease_generation,
                ours: fence.generation(),
            });
        }
        let sync_err = |source| ManifestError::Sync {
            dest: lake.display.clone(),
            version,
            source,
        };
        let mut next = self.clone();
        next.version = version;
        next.format = FORMAT_VERSION;
        next.last_run = Some(run.to_string());
        next.committed_at = Some(Utc::now());
        next.lease_generation = fence.generation();
        next.recovered = false;
        if !fence.holds() {
            return Err(ManifestError::LeaseLost {
                dest: lake.display.clone(),
            });
        }
        let body = serde_json::to_vec_pretty(&next).expect("the manifest serializes");
        match lake.create(&version_path(lake, version), body.into()).await {
            Ok(Created::Written { .. }) => {}
            Ok(Created::Taken) => {
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
        lake.sync_local(&[&version_path_relative(version)])
            .map_err(sync_err)?;
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

    /// Every file path the manifest names: live, or retired and kept for older readers.
    pub fn named_paths(&self) -> impl Iterator<Item = &str> {
        self.live_paths().chain(
            self.streams
                .values()
                .flat_map(|s| s.retired.iter().map(|r| r.path.as_str())),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lock::LakeLock;
    use tokio_util::sync::CancellationToken;

    /// The lake's lease for `run`, as a sync takes it.
    async fn lease(lake: &LakeStore, run: &str) -> LakeLock {
        let none = CancellationToken::new;
        let floor = Manifest::load(lake).await.unwrap().lease_generation;
        LakeLock::acquire(lake, run, floor, std::time::Duration::ZERO, &none(), none())
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn commits_are_versions_and_conflicts_are_typed() {
        let lake = LakeStore::in_memory();
        let lock = lease(&lake, "run-a").await;
        let mut a = Manifest::load(&lake).await.unwrap();
        assert_eq!(a.version, 0);
        let mut b = a.clone();
        a.streams.insert(
            "email_send".into(),
            StreamState::new(SyncMode::Incremental, "createdAt", 1),
        );
        a.commit(&lake, "run-a", &lock.fence()).await.unwrap();
        assert_eq!(a.version, 1);
        let err = b.commit(&lake, "run-b", &lock.fence()).await.unwrap_err();
        assert!(
            matches!(err, ManifestError::Conflict { version: 1, .. }),
            "{err}"
        );
        let read = Manifest::load(&lake).await.unwrap();
        assert_eq!(read, a);
        assert_eq!(read.last_run.as_deref(), Some("run-a"));
        assert_eq!(read.lease_generation, 1);
    }

    #[tokio::test]
    async fn keeps_only_recent_versions() {
        let lake = LakeStore::in_memory();
        let lock = lease(&lake, "r").await;
        let mut m = Manifest::load(&lake).await.unwrap();
        for _ in 0..(KEEP_VERSIONS + 5) {
            m.commit(&lake, "r", &lock.fence()).await.unwrap();
        }
        let v = versions(&lake).await.unwrap();
        assert_eq!(v.first(), Some(&5));
        assert_eq!(v.last(), Some(&(KEEP_VERSIONS + 5)));
        assert_eq!(
            Manifest::load(&lake).await.unwrap().version,
            KEEP_VERSIONS + 5
        );
    }

    #[tokio::test]
    async fn a_run_whose_lease_was_taken_over_commits_nothing_more() {
        let lake = LakeStore::in_memory();
        let old = lease(&lake, "old").await;
        let old_fence = old.fence();
        let mut old_view = Manifest::fence(&lake, "old", &old_fence).await.unwrap();
        // The old holder is frozen; its lease is judged expired and taken over (here: it
        // released, which a takeover amounts to for the lease objects).
        old.release().await;
        let new = lease(&lake, "new").await;
        let fenced = Manifest::fence(&lake, "new", &new.fence()).await.unwrap();
        assert_eq!(fenced.lease_generation, 2);
        // The old run wakes up and commits its unit in flight: refused, as its next version
        // exists.
        old_view.streams.insert(
            "email_send".into(),
            StreamState::new(SyncMode::Incremental, "createdAt", 1),
        );
        let err = old_view.commit(&lake, "old", &old_fence).await.unwrap_err();
        assert!(matches!(err, ManifestError::Conflict { .. }), "{err}");
        // Nor can it fence itself back in with a fresh read.
        let err = Manifest::fence(&lake, "old", &old_fence).await.unwrap_err();
        assert!(
            matches!(
                err,
                ManifestError::Superseded {
                    found: 2,
                    ours: 1,
                    ..
                }
            ),
            "{err}"
        );
        assert_eq!(Manifest::load(&lake).await.unwrap(), fenced);
    }

    #[tokio::test]
    async fn a_torn_newest_version_falls_back_to_the_one_before() {
        let dir = tempfile::tempdir().unwrap();
        let lake = LakeStore::open(dir.path().to_str().unwrap()).unwrap();
        let lock = lease(&lake, "r").await;
        let mut m = Manifest::fence(&lake, "r", &lock.fence()).await.unwrap();
        m.streams.insert(
            "users".into(),
            StreamState::new(SyncMode::Incremental, "profileUpdatedAt", 1),
        );
        m.commit(&lake, "r", &lock.fence()).await.unwrap();
        let good = m.clone();
        m.commit(&lake, "r", &lock.fence()).await.unwrap();
        let newest = dir.path().join(version_path_relative(3));
        let bytes = std::fs::read(&newest).unwrap();
        for torn in [&bytes[..bytes.len() / 2], &[][..]] {
            std::fs::write(&newest, torn).unwrap();
            let read = Manifest::load(&lake).await.unwrap();
            assert!(read.recovered);
            assert_eq!(read.version, 3, "the next commit goes after the torn one");
            assert_eq!(read.streams, good.streams);
        }
        let mut read = Manifest::load(&lake).await.unwrap();
        read.commit(&lake, "r", &lock.fence()).await.unwrap();
        let after = Manifest::load(&lake).await.unwrap();
        assert_eq!((after.version, after.recovered), (4, false));
        // Only a torn version is skipped: one of a newer format stops the run.
        let v4 = std::fs::read_to_string(dir.path().join(version_path_relative(4))).unwrap();
        let newer = v4.replace(&format!("\"format\": {FORMAT_VERSION}"), "\"format\": 99");
        assert_ne!(newer, v4);
        std::fs::write(dir.path().join(version_path_relative(5)), newer).unwrap();
        let err = Manifest::load(&lake).await.unwrap_err();
        assert!(
            matches!(err, ManifestError::Format { found: 99, .. }),
            "{err}"
        );
    }
}
