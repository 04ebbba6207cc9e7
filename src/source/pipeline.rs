//! The streaming pipeline every source feeds: a body of bytes is cut into chunks of whole
//! lines, each chunk optionally rewritten line by line (text and CSV sources turn their lines
//! into JSON objects), decoded on rayon's threads (a bounded number in flight) and written by
//! a blocking task, joined by bounded channels: memory stays flat whatever the body's size.
//! A run either finishes and returns its files, which the caller commits, or fails and
//! deletes what it wrote.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use futures::stream::FuturesUnordered;
use futures::{Stream, StreamExt};
use tokio::sync::{mpsc, oneshot};
use tokio_util::task::AbortOnDropHandle;

use super::FetchError;
use crate::convert::{Decoded, Decoder};
use crate::sink::{PartitionedWriter, WrittenFile, spawn_encoding};

/// Bytes of whole lines handed to one decode job. Larger chunks mean fewer, larger batches
/// for the writer: 4 MiB rather than 1 MiB took 8-15% off the CPU time of a 1-million-event
/// sync (interleaved runs of `scripts/bench-export.sh`'s sync), for about 45 MB more peak
/// memory.
const CHUNK_BYTES: usize = 4 << 20;

/// Capacity of the buffer a chunk is gathered in: a chunk and the body's next piece.
const BUF_BYTES: usize = CHUNK_BYTES + (512 << 10);

/// Rewrites one line of the body into one NDJSON line (without its newline), or drops it.
pub type LineMap = Arc<dyn Fn(&[u8], &mut Vec<u8>) -> bool + Send + Sync>;

/// What one pipeline run produced.
#[derive(Debug, Default)]
pub struct Fetched {
    pub files: Vec<WrittenFile>,
    pub rows: u64,
    pub malformed: u64,
    pub body_bytes: u64,
}

/// Stream `body` through decoding into `writer`'s files. On failure the files are deleted.
pub async fn run<S, E>(
    body: S,
    decoder: Arc<Decoder>,
    map: Option<LineMap>,
    writer: PartitionedWriter,
) -> Result<Fetched, FetchError>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin + Send + 'static,
    E: Into<FetchError> + Send + 'static,
{
    let (batches, done) = spawn_writer(writer);
    // Its own task rather than part of the caller's future: the body's connection task then
    // hands each piece over on the same worker thread instead of waking the caller's thread
    // (a quarter of the context switches). Aborted if the caller is dropped.
    let pumped = AbortOnDropHandle::new(tokio::spawn(pump(body, decoder, map, batches.clone())))
        .await
        .unwrap_or_else(|_| Err(FetchError::Task("pump".into())));
    match pumped {
        Ok(mut fetched) => {
            batches
                .send(Msg::Finish)
                .await
                .map_err(|_| FetchError::Task("writer".into()))?;
            fetched.files = done
                .await
                .map_err(|_| FetchError::Task("writer".into()))??;
            Ok(fetched)
        }
        Err(e) => {
            let _ = batches.send(Msg::Abort).await;
            let _ = done.await;
            Err(e)
        }
    }
}

async fn pump<S, E>(
    mut body: S,
    decoder: Arc<Decoder>,
    map: Option<LineMap>,
    out: mpsc::Sender<Msg>,
) -> Result<Fetched, FetchError>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: Into<FetchError>,
{
    let mut fetched = Fetched::default();
    let mut buf = BytesMut::with_capacity(BUF_BYTES);
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
                match memchr::memrchr(b'\n', &buf) {
                    Some(pos) => {
                        let chunk = buf.split_to(pos + 1).freeze();
                        // The chunk keeps the old allocation: start a full-sized one, so the
                        // next chunk's bytes are copied once rather than at every doubling.
                        buf.reserve(BUF_BYTES);
                        chunk
                    }
                    None => continue,
                }
            }
            Some(Err(e)) => {
                let mut err: FetchError = e.into();
                if let FetchError::CutOff { bytes, .. } = &mut err {
                    *bytes = fetched.body_bytes;
                }
                return Err(err);
            }
            None => std::mem::take(&mut buf).freeze(),
        };
        if !chunk.is_empty() {
            inflight.push(decode_on_rayon(decoder.clone(), map.clone(), chunk));
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

/// Rewrite every line of `chunk` with `map`.
fn map_lines(chunk: &[u8], map: &LineMap) -> Vec<u8> {
    let mut out = Vec::with_capacity(chunk.len() + chunk.len() / 4);
    for line in chunk.split(|&c| c == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let mark = out.len();
        if map(line, &mut out) {
            out.push(b'\n');
        } else {
            out.truncate(mark);
        }
    }
    out
}

async fn decode_on_rayon(
    decoder: Arc<Decoder>,
    map: Option<LineMap>,
    chunk: Bytes,
) -> Result<Decoded, FetchError> {
    let (tx, rx) = oneshot::channel();
    rayon::spawn(move || {
        let decoded = match &map {
            Some(map) => decoder.decode(&map_lines(&chunk, map)),
            None => decoder.decode(&chunk),
        };
        let _ = tx.send(decoded);
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
    let task = spawn_encoding(move || async move {
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
    });
    (tx, task)
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::task::Poll;
    use std::time::Duration;

    use super::*;
    use crate::catalog;
    use crate::convert::StreamSchema;
    use crate::sink::{FileNamer, LakeStore, Partitioning, WriterLimits};

    /// Sets its flag when dropped.
    struct DropFlag(Arc<AtomicBool>);

    impl Drop for DropFlag {
        fn drop(&mut self) {
            self.0.store(true, Ordering::SeqCst);
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_dropped_run_stops_reading_its_body() {
        let def = catalog::find("email_send").expect("stream");
        let schema = Arc::new(StreamSchema::parse(def.name, def.schema, true).expect("schema"));
        let decoder = Arc::new(Decoder::new(schema.clone(), 0, def.data_type()));
        let writer = PartitionedWriter::new(
            LakeStore::in_memory(),
            "s".into(),
            schema.arrow.clone(),
            Partitioning::Fixed(String::new()),
            None,
            FileNamer::new("r1"),
            WriterLimits::default(),
        );
        // One line, then a body that never ends, as a stalled server's would.
        let dropped = Arc::new(AtomicBool::new(false));
        let flag = DropFlag(dropped.clone());
        let mut sent = false;
        let body = futures::stream::poll_fn(move |_| {
            let _ = &flag;
            if std::mem::replace(&mut sent, true) {
                Poll::Pending
            } else {
                Poll::Ready(Some(Ok::<_, FetchError>(Bytes::from_static(
                    b"{\"createdAt\":\"2024-01-01 00:00:00 +00:00\"}\n",
                ))))
            }
        });
        let stalled = run(body, decoder, None, writer);
        assert!(
            tokio::time::timeout(Duration::from_millis(100), stalled)
                .await
                .is_err()
        );
        for _ in 0..100 {
            if dropped.load(Ordering::SeqCst) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(
            dropped.load(Ordering::SeqCst),
            "the pump still holds the body of a dropped run"
        );
    }
}
