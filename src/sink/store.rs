//! The lake's storage: one `object_store` for local disk and S3 alike, built from `--dest`.

use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;
use futures::future::BoxFuture;
use futures::{FutureExt, TryFutureExt};
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
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
