//! The streaming pipeline every source feeds: a body of bytes is cut into chunks of whole
//! lines, each chunk optionally rewritten line by line (text and CSV sources turn their lines
//! into JSON objects), decoded on rayon's threads (a bounded number in flight) and written by
//! a blocking task, joined by bounded channels: memory stays flat whatever the body's size.
//! A run either finishes and returns its files, which the caller commits, or fails and
//! deletes what it wrote.
//!
//! An NDJSON response goes through [`checked`] first, so that a body the server ended in the
//! middle of a record fails like a broken connection instead of committing a short window.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes, BytesMut};
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

/// The UTF-8 byte-order mark, which some servers put before a body.
const BOM: &[u8] = b"\xEF\xBB\xBF";

/// One NDJSON response body, checked as it passes: a byte-order mark at its very start is
/// dropped, and a body whose last line is not a complete JSON object ends with
/// [`FetchError::Truncated`] (splittable, like a cut connection) instead of ending cleanly.
/// Iterable's complete bodies may end without a newline, but never inside a record; a
/// malformed line in the middle is left to the decoder, which keeps it.
pub fn checked<S, E>(body: S) -> Checked<S>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: Into<FetchError>,
{
    Checked {
        body,
        head: Some(BytesMut::new()),
        last_line: Vec::new(),
        bytes: 0,
        done: false,
    }
}

/// The stream [`checked`] returns.
pub struct Checked<S> {
    body: S,
    /// The body's first bytes while they may still be the start of a byte-order mark.
    head: Option<BytesMut>,
    /// The pieces of the body after its last newline so far.
    last_line: Vec<Bytes>,
    bytes: u64,
    done: bool,
}

impl<S> Checked<S> {
    fn note(&mut self, chunk: &Bytes) {
        self.bytes += chunk.len() as u64;
        match memchr::memrchr(b'\n', chunk) {
            Some(pos) => {
                self.last_line.clear();
                self.last_line.push(chunk.slice(pos + 1..));
            }
            None => self.last_line.push(chunk.clone()),
        }
    }

    /// The error for a body that ended now, if its last line is a record cut short.
    fn end(&mut self) -> Option<FetchError> {
        if let Some(head) = self.head.take() {
            self.note(&head.freeze());
        }
        let line = self.last_line.concat();
        (!is_complete_last_line(&line)).then(|| FetchError::Truncated {
            bytes: self.bytes,
            line_bytes: line.len(),
        })
    }
}

/// Whether `line`, the text after a body's last newline, ends the body properly: blank, or
/// one whole JSON object (a string in it need not be valid UTF-8: the decoder keeps such a
/// line as malformed, byte for byte).
fn is_complete_last_line(line: &[u8]) -> bool {
    let text = String::from_utf8_lossy(line);
    let text = text.trim_matches([' ', '\t', '\r', '\n']);
    text.is_empty()
        || (text.starts_with('{') && serde_json::from_str::<serde::de::IgnoredAny>(text).is_ok())
}

impl<S, E> Stream for Checked<S>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: Into<FetchError>,
{
    type Item = Result<Bytes, FetchError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        loop {
            if this.done {
                return Poll::Ready(None);
            }
            let chunk = match ready!(this.body.poll_next_unpin(cx)) {
                Some(Ok(chunk)) => chunk,
                Some(Err(e)) => {
                    this.done = true;
                    return Poll::Ready(Some(Err(e.into())));
                }
                None => {
                    this.done = true;
                    return Poll::Ready(this.end().map(Err));
                }
            };
            let chunk = match &mut this.head {
                None => chunk,
                Some(head) => {
                    head.extend_from_slice(&chunk);
                    if head.len() < BOM.len() && BOM.starts_with(head) {
                        continue;
                    }
                    let mut head = this.head.take().expect("matched").freeze();
                    if head.starts_with(BOM) {
                        head.advance(BOM.len());
                    }
                    head
                }
            };
            if chunk.is_empty() {
                continue;
            }
            this.note(&chunk);
            return Poll::Ready(Some(Ok(chunk)));
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
pub(super) mod tests {
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

    /// `body` through [`checked`] in pieces of `piece` bytes: what it passes, or its error.
    fn check(body: &[u8], piece: usize) -> Result<Vec<u8>, FetchError> {
        let chunks: Vec<Result<Bytes, FetchError>> = body
            .chunks(piece)
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        let mut out = Vec::new();
        futures::executor::block_on(async {
            let mut s = checked(futures::stream::iter(chunks));
            while let Some(chunk) = s.next().await {
                out.extend_from_slice(&chunk?);
            }
            Ok(out)
        })
    }

    #[test]
    fn a_body_must_end_in_a_whole_record_and_loses_its_byte_order_mark() {
        let whole: [&[u8]; 8] = [
            b"",
            b"{\"a\":1}\n{\"a\":2}",
            b"{\"a\":1}\n{\"a\":2}\r\n",
            b"{\"a\":1}\n{\"a\":2}\n \r\n\n",
            b"{\"a\":1}\nnot json\n{\"a\":2}",
            b"{\"a\":1}\n{\"a\":\"\xff\"}",
            b"{\"a\":\"}\\n{\"}",
            b"\xEF\xBB\xBF",
        ];
        let cut: [(&[u8], usize); 7] = [
            (b"{\"a\":1}\n{\"a\":", 5),
            (b"{\"a\":1}\n{\"a\":\"b}", 8),
            (b"{\"a\":1}\n{\"a\":2}\n{", 1),
            (b"{\"a\":1}\n[1,2]", 5),
            (b"{\"a\":\"\xc3", 7),
            (b"\xEF\xBB", 2),
            (b"not json", 8),
        ];
        for piece in [1, 2, 3, 7, 1 << 20] {
            for body in whole {
                let passed = check(body, piece).unwrap_or_else(|e| panic!("{body:?}: {e}"));
                let want = body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(body);
                assert_eq!(passed, want, "{piece}");
            }
            for (body, line) in cut {
                match check(body, piece) {
                    Err(FetchError::Truncated { bytes, line_bytes }) => {
                        assert_eq!((bytes, line_bytes), (body.len() as u64, line), "{body:?}");
                    }
                    other => panic!("{body:?} in pieces of {piece}: {other:?}"),
                }
            }
            let marked = check(b"\xEF\xBB\xBF{\"a\":1}\n", piece).unwrap();
            assert_eq!(marked, b"{\"a\":1}\n");
        }
        assert!(
            FetchError::Truncated {
                bytes: 1,
                line_bytes: 1
            }
            .is_splittable()
        );
    }

    /// A decoder and an in-memory writer of `email_send`.
    pub(in crate::source) fn email_send_run() -> (Arc<Decoder>, PartitionedWriter) {
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
        (decoder, writer)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_malformed_line_in_the_middle_is_kept_and_a_cut_last_line_fails_the_run() {
        let line = "{\"createdAt\":\"2024-01-01 00:00:00 +00:00\",\"email\":\"a@b.c\"}";
        let body = |tail: &str| {
            let text = format!("\u{feff}{line}\n{{\"createdAt\":\"2024-01\n{line}{tail}");
            checked(futures::stream::iter([Ok::<_, FetchError>(Bytes::from(
                text,
            ))]))
        };
        let (decoder, writer) = email_send_run();
        let fetched = run(body(""), decoder, None, writer).await.expect("runs");
        assert_eq!((fetched.rows, fetched.malformed), (3, 1));
        assert_eq!(fetched.files.len(), 1);

        let (decoder, writer) = email_send_run();
        let cut = run(body("\n{\"createdAt\":\"2024"), decoder, None, writer).await;
        assert!(
            matches!(cut, Err(FetchError::Truncated { line_bytes: 18, .. })),
            "{cut:?}"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_dropped_run_stops_reading_its_body() {
        let (decoder, writer) = email_send_run();
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
