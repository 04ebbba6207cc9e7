//! `GET /api/export/data.json`: one window of one data type, streamed as NDJSON through the
//! [pipeline](super::pipeline) into date-partitioned Parquet.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use super::FetchError;
use super::pipeline::{self, Fetched};
use crate::api::{ApiClient, ApiError, Family};
use crate::catalog::{Source, StreamDef};
use crate::convert::Decoder;
use crate::convert::timestamp::format_for_query;
use crate::sink::PartitionedWriter;

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

/// Everything a fetch of one stream needs, shared by its windows.
pub struct ExportFetcher {
    pub client: ApiClient,
    pub stream: &'static StreamDef,
    pub decoder: Arc<Decoder>,
    data_type: &'static str,
    alt_data_type: Option<&'static str>,
    /// Set once the server rejected the stream's first data type spelling (shared with the
    /// export jobs of its windows, which may find it out too).
    use_alt_spelling: Arc<AtomicBool>,
}

impl ExportFetcher {
    /// The fetcher of an export stream; `None` for other streams.
    pub fn new(
        client: ApiClient,
        stream: &'static StreamDef,
        decoder: Arc<Decoder>,
    ) -> Option<Self> {
        let Source::Export {
            data_type,
            alt_data_type,
        } = stream.source
        else {
            return None;
        };
        Some(ExportFetcher {
            client,
            stream,
            decoder,
            data_type,
            alt_data_type,
            use_alt_spelling: Arc::default(),
        })
    }

    /// The flag set once the first data type spelling was refused.
    pub(super) fn alt_spelling_flag(&self) -> Arc<AtomicBool> {
        self.use_alt_spelling.clone()
    }

    /// The data type spelling in use, and the other one while the first is not refused.
    pub(super) fn data_type(&self) -> (&'static str, Option<&'static str>) {
        if self.use_alt_spelling.load(Ordering::Relaxed) {
            (self.alt_data_type.unwrap_or(self.data_type), None)
        } else {
            (self.data_type, self.alt_data_type)
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

    /// Fetch `window` into `writer`'s files. On failure (also a body that ends inside a
    /// record) the files are deleted.
    pub async fn fetch(
        &self,
        window: Window,
        writer: PartitionedWriter,
    ) -> Result<Fetched, FetchError> {
        let resp = self.request(window).await?;
        let body = pipeline::checked(resp.bytes_stream());
        pipeline::run(body, self.decoder.clone(), None, writer).await
    }
}
