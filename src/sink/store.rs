//! The lake's storage: one `object_store` for local disk and S3 alike, built from `--dest`.

use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;
use futures::future::BoxFuture;
use futures::{FutureExt, TryFutureExt};
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};
use parquet::arrow::arrow_reader::ArrowReaderOptions;
use parquet::arrow::async_reader::AsyncFileReader;
use parquet::errors::ParquetError;
use parquet::file::metadata::{ParquetMetaData, ParquetMetaDataReader};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("destination {dest:?}: {problem}")]
    BadDestination { dest: String, problem: String },
    #[error("destination {dest:?}: cannot create the folder: {source}")]
    CreateDir {
        dest: String,
        source: std::io::Error,
    },
    #[error("destination {dest:?}: {source}")]
    Build {
        dest: String,
        source: object_store::Error,
    },
}

/// What a create-if-absent write found.
#[derive(Debug, PartialEq, Eq)]
pub enum Created {
    /// This write made the object; its ETag.
    Written { e_tag: Option<String> },
    /// The object existed already, with other content: another writer's.
    Taken,
}

/// Where the lake lives: a store and the prefix of the lake inside it.
#[derive(Clone)]
pub struct LakeStore {
    pub store: Arc<dyn ObjectStore>,
    pub root: Path,
    /// The destination as the user gave it, for messages (holds no secret).
    pub display: String,
}

impl std::fmt::Debug for LakeStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LakeStore")
            .field("dest", &self.display)
            .finish()
    }
}

impl LakeStore {
    /// Open `./path`, `/abs/path`, `file:///abs/path` or `s3://bucket/prefix`. S3 credentials,
    /// region and endpoint come from the standard `AWS_*` environment variables.
    pub fn open(dest: &str) -> Result<Self, StoreError> {
        let bad = |problem: &str| StoreError::BadDestination {
            dest: dest.to_string(),
            problem: problem.to_string(),
        };
        if let Some(rest) = dest.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(bad("an S3 destination needs a bucket: s3://bucket/prefix"));
            }
            let mut builder = AmazonS3Builder::from_env().with_bucket_name(bucket);
            if std::env::var("AWS_ALLOW_HTTP").is_ok_and(|v| v == "true" || v == "1") {
                builder = builder.with_allow_http(true);
            }
            let store = builder.build().map_err(|source| StoreError::Build {
                dest: dest.to_string(),
                source,
            })?;
            return Ok(LakeStore {
                store: Arc::new(store),
                root: Path::from(prefix.trim_matches('/')),
                display: dest.to_string(),
            });
        }
        if dest.contains("://") && !dest.starts_with("file://") {
            return Err(bad("use a local path, file:///path or s3://bucket/prefix"));
        }
        let local = dest.strip_prefix("file://").unwrap_or(dest);
        if local.is_empty() {
            return Err(bad("empty path"));
        }
        std::fs::create_dir_all(local).map_err(|source| StoreError::CreateDir {
            dest: dest.to_string(),
            source,
        })?;
        let abs = std::fs::canonicalize(local).map_err(|source| StoreError::CreateDir {
            dest: dest.to_string(),
            source,
        })?;
        let store = LocalFileSystem::new_with_prefix(&abs).map_err(|source| StoreError::Build {
            dest: dest.to_string(),
            source,
        })?;
        Ok(LakeStore {
            store: Arc::new(store),
            root: Path::default(),
            display: dest.to_string(),
        })
    }

    /// An in-memory lake, for unit tests.
    pub fn in_memory() -> Self {
        LakeStore {
            store: Arc::new(object_store::memory::InMemory::new()),
            root: Path::default(),
            display: "memory://".to_string(),
        }
    }

    /// The full object path of `relative` (a `/`-separated path inside the lake).
    pub fn path(&self, relative: &str) -> Path {
        let relative = Path::from(relative);
        Path::from_iter(self.root.parts().chain(relative.parts()))
    }

    /// The lake's folder when it is on local disk.
    pub fn local_dir(&self) -> Option<std::path::PathBuf> {
        if self.display.contains("://") && !self.display.starts_with("file://") {
            return None;
        }
        let local = self
            .display
            .strip_prefix("file://")
            .unwrap_or(&self.display);
        std::fs::canonicalize(local).ok()
    }

    /// Create `path` with `body` unless it exists (`PutMode::Create`), telling this write
    /// apart from another writer's: when the store answers an error or "exists" for a write
    /// that did land (a request retried after its response was lost, a 500 after the write),
    /// the object is read back, and it is this write's when it holds exactly `body`.
    pub async fn create(&self, path: &Path, body: Bytes) -> Result<Created, object_store::Error> {
        let opts = PutOptions {
            mode: PutMode::Create,
            ..PutOptions::default()
        };
        let error = match self
            .store
            .put_opts(path, PutPayload::from(body.clone()), opts)
            .await
        {
            Ok(r) => return Ok(Created::Written { e_tag: r.e_tag }),
            Err(e) => e,
        };
        let exists = matches!(
            error,
            object_store::Error::AlreadyExists { .. } | object_store::Error::Precondition { .. }
        );
        let found = match self.store.get(path).await {
            Ok(found) => found,
            Err(object_store::Error::NotFound { .. }) if !exists => return Err(error),
            Err(e) => return Err(if exists { e } else { error }),
        };
        let e_tag = found.meta.e_tag.clone();
        if found.bytes().await? == body {
            if !exists {
                tracing::warn!(path = %path, error = %error, "the store answered an error for a write that did land");
            }
            Ok(Created::Written { e_tag })
        } else if exists {
            Ok(Created::Taken)
        } else {
            Err(error)
        }
    }

    /// On local disk, flush the files at these lake-relative paths and their folders to the
    /// disk (fsync), so a commit that names them survives a power loss; nothing elsewhere.
    pub fn sync_local(&self, relative: &[&str]) -> std::io::Result<()> {
        let Some(root) = self.local_dir() else {
            return Ok(());
        };
        let mut dirs = std::collections::BTreeSet::new();
        for p in relative {
            let file = root.join(p);
            std::fs::File::open(&file)?.sync_all()?;
            if let Some(dir) = file.parent() {
                dirs.insert(dir.to_path_buf());
            }
        }
        for dir in dirs {
            std::fs::File::open(dir)?.sync_all()?;
        }
        Ok(())
    }

    /// A Parquet reader of the lake's file `relative`, `size` bytes long, that fetches the
    /// byte ranges it decodes (a row group's columns at a time), never the whole file.
    pub fn parquet_reader(&self, relative: &str, size: u64) -> LakeFileReader {
        LakeFileReader {
            store: self.store.clone(),
            path: self.path(relative),
            size,
        }
    }

    /// `path` relative to the lake's root.
    pub fn relative(&self, path: &Path) -> String {
        match path.prefix_match(&self.root) {
            Some(parts) => Path::from_iter(parts).to_string(),
            None => path.to_string(),
        }
    }
}

/// See [`LakeStore::parquet_reader`].
pub struct LakeFileReader {
    store: Arc<dyn ObjectStore>,
    path: Path,
    size: u64,
}

fn parquet_error(e: object_store::Error) -> ParquetError {
    ParquetError::External(Box::new(e))
}

impl AsyncFileReader for LakeFileReader {
    fn get_bytes(&mut self, range: Range<u64>) -> BoxFuture<'_, parquet::errors::Result<Bytes>> {
        self.store
            .get_range(&self.path, range)
            .map_err(parquet_error)
            .boxed()
    }

    fn get_byte_ranges(
        &mut self,
        ranges: Vec<Range<u64>>,
    ) -> BoxFuture<'_, parquet::errors::Result<Vec<Bytes>>> {
        async move {
            self.store
                .get_ranges(&self.path, &ranges)
                .await
                .map_err(parquet_error)
        }
        .boxed()
    }

    fn get_metadata<'a>(
        &'a mut self,
        options: Option<&'a ArrowReaderOptions>,
    ) -> BoxFuture<'a, parquet::errors::Result<Arc<ParquetMetaData>>> {
        async move {
            let size = self.size;
            let metadata = ParquetMetaDataReader::new()
                .with_arrow_reader_options(options)
                .load_and_finish(self, size)
                .await?;
            Ok(Arc::new(metadata))
        }
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use futures::stream::BoxStream;
    use object_store::memory::InMemory;
    use object_store::{
        CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta,
        PutMultipartOptions, PutResult, RenameOptions,
    };

    use super::*;
    use crate::lock::LakeLock;
    use crate::manifest::Manifest;

    /// How the next puts fail after landing.
    #[derive(Debug, Clone, Copy)]
    enum Fault {
        /// A 500 after the write (object_store gives up).
        ServerError,
        /// The request was retried after its response was lost: the retry finds the object.
        Exists,
    }

    /// An in-memory store whose next `faulty` create-if-absent puts land, then answer an
    /// error.
    #[derive(Debug)]
    struct LandsThenFails {
        inner: InMemory,
        faulty: AtomicU32,
        fault: Fault,
    }

    impl std::fmt::Display for LandsThenFails {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "LandsThenFails")
        }
    }

    #[async_trait::async_trait]
    impl ObjectStore for LandsThenFails {
        async fn put_opts(
            &self,
            location: &Path,
            payload: PutPayload,
            opts: PutOptions,
        ) -> object_store::Result<PutResult> {
            let create = matches!(opts.mode, PutMode::Create);
            let landed = self.inner.put_opts(location, payload, opts).await?;
            let fail = create
                && self
                    .faulty
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                    .is_ok();
            match (fail, self.fault) {
                (false, _) => Ok(landed),
                (true, Fault::ServerError) => Err(object_store::Error::Generic {
                    store: "test",
                    source: "500 Internal Server Error after the write".into(),
                }),
                (true, Fault::Exists) => Err(object_store::Error::AlreadyExists {
                    path: location.to_string(),
                    source: "the retried request found it".into(),
                }),
            }
        }
        async fn put_multipart_opts(
            &self,
            location: &Path,
            opts: PutMultipartOptions,
        ) -> object_store::Result<Box<dyn MultipartUpload>> {
            self.inner.put_multipart_opts(location, opts).await
        }
        async fn get_opts(
            &self,
            location: &Path,
            options: GetOptions,
        ) -> object_store::Result<GetResult> {
            self.inner.get_opts(location, options).await
        }
        fn delete_stream(
            &self,
            locations: BoxStream<'static, object_store::Result<Path>>,
        ) -> BoxStream<'static, object_store::Result<Path>> {
            self.inner.delete_stream(locations)
        }
        fn list(
            &self,
            prefix: Option<&Path>,
        ) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
            self.inner.list(prefix)
        }
        async fn list_with_delimiter(
            &self,
            prefix: Option<&Path>,
        ) -> object_store::Result<ListResult> {
            self.inner.list_with_delimiter(prefix).await
        }
        async fn copy_opts(
            &self,
            from: &Path,
            to: &Path,
            options: CopyOptions,
        ) -> object_store::Result<()> {
            self.inner.copy_opts(from, to, options).await
        }
        async fn rename_opts(
            &self,
            from: &Path,
            to: &Path,
            options: RenameOptions,
        ) -> object_store::Result<()> {
            self.inner.rename_opts(from, to, options).await
        }
    }

    fn faulty(fault: Fault, puts: u32) -> LakeStore {
        LakeStore {
            store: Arc::new(LandsThenFails {
                inner: InMemory::new(),
                faulty: AtomicU32::new(puts),
                fault,
            }),
            root: Path::default(),
            display: "memory://faulty".to_string(),
        }
    }

    #[tokio::test]
    async fn a_create_that_landed_is_this_writes_whatever_the_store_answered() {
        for fault in [Fault::ServerError, Fault::Exists] {
            let lake = faulty(fault, 1);
            let path = lake.path("x/v1.json");
            let created = lake.create(&path, Bytes::from_static(b"mine")).await;
            assert!(
                matches!(created, Ok(Created::Written { .. })),
                "{fault:?}: {created:?}"
            );
            let again = lake.create(&path, Bytes::from_static(b"theirs")).await;
            assert_eq!(again.unwrap(), Created::Taken, "{fault:?}");
        }
    }

    #[tokio::test]
    async fn a_lease_or_a_commit_whose_write_landed_is_not_lost_to_the_answer() {
        for fault in [Fault::ServerError, Fault::Exists] {
            // The lease's creation and the manifest's commit both land, then fail.
            let lake = faulty(fault, 2);
            let none = tokio_util::sync::CancellationToken::new;
            let lock = LakeLock::acquire(&lake, "r", 0, std::time::Duration::ZERO, &none(), none())
                .await
                .unwrap();
            assert_eq!(lock.fence().generation(), 1, "{fault:?}: its own lease");
            let mut m = Manifest::load(&lake).await.unwrap();
            m.commit(&lake, "r", &lock.fence()).await.unwrap();
            assert_eq!(m.version, 1);
            assert_eq!(Manifest::load(&lake).await.unwrap(), m);
            lock.release().await;
        }
    }
}
