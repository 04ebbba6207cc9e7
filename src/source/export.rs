//! `GET /api/export/data.json`: one window of one data type, streamed as NDJSON into
//! date-partitioned Parquet.
//!
//! The body is read as bytes, cut into chunks of whole lines, decoded on rayon's threads (a
//! bounded number of chunks in flight) and written by a blocking task, joined by bounded
//! channels: memory stays flat whatever the response size. A fetch either finishes and
//! returns its files, which the caller commits, or fails and deletes what it wrote.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use tokio::sync::{mpsc, oneshot};

use crate::api::{ApiClient, ApiError, Family};
use crate::catalog::{Source, StreamDef};
use crate::convert::timestamp::format_for_query;
use crate::convert::{Decoded, Decoder};
use crate::sink::{PartitionedWriter, WriteError, WrittenFile};

/// Bytes of whole lines handed to one decode job.
const CHUNK_BYTES: usize = 1 << 20;

/// A time range `[start, end)` in µs since the epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub start: i64,
    pub end: i64,
}

impl std::fmt::Display for Window {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "[{}, {})",
            format_for_query(self.start),
            format_for_query(self.end)
        )
    }
}

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("request failed: {0}")]
    Api(#[from] ApiError),
    #[error("response cut off after {bytes} bytes: {source}")]
    CutOff { bytes: u64, source: reqwest::Error },
    #[error("decoding: {0}")]
    Decode(arrow::error::ArrowError),
    #[error(transparent)]
    Write(#[from] WriteError),
    #[error("a pipeline task stopped: {0}")]
    Task(String),
}

impl FetchError {
    /// Whether a smaller window may succeed where this one failed.
    pub fn is_splittable(&self) -> bool {
        match self {
            FetchError::CutOff { .. } => true,
            FetchError::Api(e) => e.is_timeout(),
            _ => false,
        }
    }

    /// Whether no request can succeed (the key is unusable).
    pub fn is_fatal(&self) -> bool {
        matches!(self, FetchError::Api(ApiError::Unauthorized { .. }))
    }
}

/// What one fetch produced.
#[derive(Debug, Default)]
pub struct Fetched {
    pub files: Vec<WrittenFile>,
    pub rows: u64,
    pub malformed: u64,
    pub body_bytes: u64,
}

/// Everything a fetch of one stream needs, shared by its windows.
pub struct ExportFetcher {
    pub client: ApiClient,
    pub stream: &'static StreamDef,
    pub decoder: Arc<Decoder>,
    /// Set once the server rejected the stream's first data type spelling.
    use_alt_spelling: AtomicBool,
}

impl ExportFetcher {
    pub fn new(client: ApiClient, stream: &'static StreamDef, decoder: Arc<Decoder>) -> Self {
        ExportFetcher {
            client,
            stream,
            decoder,
            use_alt_spelling: AtomicBool::new(false),
        }
    }

    fn data_type(&self) -> (&'static str, Option<&'static str>) {
        let Source::Export {
            data_type,
            alt_data_type,
        } = self.stream.source;
        if self.use_alt_spelling.load(Ordering::Relaxed) {
            (alt_data_type.unwrap_or(data_type), None)
        } else {
            (data_type, alt_data_type)
        }
    }

    async fn request(&self, window: Window) -> Result<reqwest::Response, ApiError> {
        let (data_type, alt) = self.data_type();
        let query = |dt: &str| {
            vec![
                ("dataTypeName", dt.to_string()),
                ("startDateTime", format_for_query(window.start)),
                ("endDateTime", format_for_query(window.end)),
            ]
        };
        match self
            .client
            .get(Family::Export, "export/data.json", &query(data_type))
            .await
        {
            Err(ApiError::Status { status: 400, .. }) if alt.is_some() => {
                let alt = alt.expect("checked");
                tracing::info!(
                    stream = self.stream.name,
                    rejected = data_type,
                    trying = alt,
                    "data type spelling rejected"
                );
                let resp = self
                    .client
                    .get(Family::Export, "export/data.json", &query(alt))
                    .await?;
                self.use_alt_spelling.store(true, Ordering::Relaxed);
                Ok(resp)
            }
            other => other,
        }
    }

    /// Fetch `window` into `writer`'s files. On failure the files are deleted.
    pub async fn fetch(
        &self,
        window: Window,
        writer: PartitionedWriter,
    ) -> Result<Fetched, FetchError> {
        let (batches, done) = spawn_writer(writer);
        match self.pump(window, &batches).await {
            Ok(mut fetched) => {
                batches
                    .send(Msg::Finish)
                    .await
                    .map_err(|_| FetchError::Task("writer".into()))?;
                let files = done
                    .await
                    .map_err(|_| FetchError::Task("writer".into()))??;
                fetched.files = files;
                Ok(fetched)
            }
            Err(e) => {
                let _ = batches.send(Msg::Abort).await;
                let _ = done.await;
                Err(e)
            }
        }
    }

    /// Read the response, decode chunks in parallel and send batches to the writer.
    async fn pump(&self, window: Window, out: &mpsc::Sender<Msg>) -> Result<Fetched, FetchError> {
        let resp = self.request(window).await?;
        let mut body = resp.bytes_stream();
        let mut fetched = Fetched::default();
        let mut buf = BytesMut::new();
        let mut inflight = FuturesUnordered::new();
        let max_inflight = rayon::current_num_threads() + 1;
        loop {
            let next = body.next().await;
            let last = next.is_none();
            let chunk = match next {
                Some(Ok(bytes)) => {
                    fetched.body_bytes += bytes.len() as u64;
                    buf.extend_from_slice(&bytes);
                    if buf.len() < CHUNK_BYTES {
                        continue;
                    }
                    match buf.iter().rposition(|&c| c == b'\n') {
                        Some(pos) => buf.split_to(pos + 1).freeze(),
                        None => continue,
                    }
                }
                Some(Err(source)) => {
                    return Err(FetchError::CutOff {
                        bytes: fetched.body_bytes,
                        source: source.without_url(),
                    });
                }
                None => std::mem::take(&mut buf).freeze(),
            };
            if !chunk.is_empty() {
                inflight.push(decode_on_rayon(self.decoder.clone(), chunk));
            }
            while inflight.len() >= max_inflight || (last && !inflight.is_empty()) {
                let decoded = inflight.next().await.expect("inflight is not empty")?;
                fetched.rows += decoded.batch.num_rows() as u64;
                fetched.malformed += decoded.malformed as u64;
                out.send(Msg::Batch(decoded.batch))
                    .await
                    .map_err(|_| FetchError::Task("writer".into()))?;
            }
            if last {
                return Ok(fetched);
            }
        }
    }
}

async fn decode_on_rayon(decoder: Arc<Decoder>, chunk: Bytes) -> Result<Decoded, FetchError> {
    let (tx, rx) = oneshot::channel();
    rayon::spawn(move || {
        let _ = tx.send(decoder.decode(&chunk));
    });
    rx.await
        .map_err(|_| FetchError::Task("decoder".into()))?
        .map_err(FetchError::Decode)
}

/// The writer task: the files it finished, once told to finish.
type WriterTask = tokio::task::JoinHandle<Result<Vec<WrittenFile>, FetchError>>;

enum Msg {
    Batch(arrow::record_batch::RecordBatch),
    Finish,
    Abort,
}

/// Run the Parquet writer on a blocking thread (encoding is CPU work), fed by a bounded
/// channel. It finishes on `Finish` and deletes its files on `Abort` or a dropped sender.
fn spawn_writer(mut writer: PartitionedWriter) -> (mpsc::Sender<Msg>, WriterTask) {
    let (tx, mut rx) = mpsc::channel::<Msg>(2);
    let handle = tokio::runtime::Handle::current();
    let task = tokio::task::spawn_blocking(move || {
        handle.block_on(async move {
            loop {
                match rx.recv().await {
                    Some(Msg::Batch(batch)) => {
                        if let Err(e) = writer.write(batch).await {
                            writer.abort().await;
                            return Err(FetchError::Write(e));
                        }
                    }
                    Some(Msg::Finish) => return Ok(writer.finish().await?),
                    Some(Msg::Abort) | None => {
                        writer.abort().await;
                        return Ok(Vec::new());
                    }
                }
            }
        })
    });
    (tx, task)
}
