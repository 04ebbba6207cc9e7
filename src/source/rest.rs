//! List-style JSON endpoints (lists, campaigns, channels, message types, templates) and the
//! metadata store, turned into NDJSON bodies for the [pipeline](super::pipeline).
//!
//! Each body is produced by a task that walks the endpoint's pages and sends one chunk of
//! lines per page through a bounded channel, so at most a page or two are in memory. Records
//! are passed on verbatim (as raw JSON text); only fields the request itself implies (the
//! `templateType` and `messageMedium` a template was listed under) are added.

use std::collections::HashMap;
use std::pin::Pin;

use bytes::Bytes;
use futures::Stream;
use serde_json::value::RawValue;
use tokio::sync::mpsc;

use super::FetchError;
use crate::api::{ApiClient, Family, display_url};
use crate::catalog::Source;

/// A response body as a stream of NDJSON chunks.
pub type Body = Pin<Box<dyn Stream<Item = Result<Bytes, FetchError>> + Send>>;

/// The page size sent to paged endpoints (Iterable's maximum).
const PAGE_SIZE: u32 = 1000;
const TEMPLATE_TYPES: [&str; 4] = ["Base", "Blast", "Triggered", "Workflow"];
const MESSAGE_MEDIUMS: [&str; 4] = ["Email", "Push", "InApp", "SMS"];

type Sink = mpsc::Sender<Result<Bytes, FetchError>>;

/// A body fed by `produce`, running as its own task; its error ends the body.
pub(super) fn produced<F, Fut>(produce: F) -> Body
where
    F: FnOnce(Sink) -> Fut,
    Fut: Future<Output = Result<(), FetchError>> + Send + 'static,
{
    let (tx, mut rx) = mpsc::channel(2);
    let work = produce(tx.clone());
    tokio::spawn(async move {
        if let Err(e) = work.await {
            let _ = tx.send(Err(e)).await;
        }
    });
    Box::pin(futures::stream::poll_fn(move |cx| rx.poll_recv(cx)))
}

/// The NDJSON body of a JSON list-style stream or of the metadata store.
pub fn body(client: ApiClient, source: Source) -> Body {
    match source {
        Source::Json {
            path,
            records,
            paged,
            per_template_kind: false,
        } => {
            produced(move |tx| async move { pages(&client, path, records, paged, &[], &tx).await })
        }
        Source::Json {
            path,
            records,
            paged,
            per_template_kind: true,
        } => produced(move |tx| async move {
            for template_type in TEMPLATE_TYPES {
                for medium in MESSAGE_MEDIUMS {
                    let query = [
                        ("templateType", template_type.to_string()),
                        ("messageMedium", medium.to_string()),
                    ];
                    pages(&client, path, records, paged, &query, &tx).await?;
                }
            }
            Ok(())
        }),
        Source::Metadata => produced(move |tx| async move { metadata(&client, &tx).await }),
        Source::Export { .. }
        | Source::ListUsers
        | Source::CampaignMetrics
        | Source::UserEvents => {
            unreachable!(
                "export, list-member, metrics and user-event streams have their own sources"
            )
        }
    }
}

/// A JSON object's fields, values kept as raw JSON.
fn fields<'a>(url: &str, text: &'a str) -> Result<HashMap<String, &'a RawValue>, FetchError> {
    serde_json::from_str(text).map_err(|e| FetchError::Shape {
        url: url.to_string(),
        problem: format!("not a JSON object: {e}"),
    })
}

async fn get_json(
    client: &ApiClient,
    segments: &[&str],
    query: &[(&str, String)],
) -> Result<(String, Bytes), FetchError> {
    let resp = client.get_segments(Family::Other, segments, query).await?;
    let url = display_url(resp.url());
    let body = resp.bytes().await?;
    Ok((url, body))
}

fn text<'a>(url: &str, body: &'a [u8]) -> Result<&'a str, FetchError> {
    std::str::from_utf8(body).map_err(|e| FetchError::Shape {
        url: url.to_string(),
        problem: format!("not UTF-8: {e}"),
    })
}

/// The array `key` of a response, as raw records.
fn records<'a>(
    url: &str,
    doc: &HashMap<String, &'a RawValue>,
    key: &str,
) -> Result<Vec<&'a RawValue>, FetchError> {
    let raw = doc.get(key).ok_or_else(|| FetchError::Shape {
        url: url.to_string(),
        problem: format!("no {key:?} array"),
    })?;
    serde_json::from_str(raw.get()).map_err(|e| FetchError::Shape {
        url: url.to_string(),
        problem: format!("{key:?} is not an array: {e}"),
    })
}

/// `record` with the fields of `query` added in front (`{"a":"x",…}`).
fn with_fields(record: &RawValue, query: &[(&str, String)], out: &mut Vec<u8>) {
    let inner = record.get().trim();
    if query.is_empty() || !inner.starts_with('{') {
        out.extend_from_slice(inner.as_bytes());
        return;
    }
    out.push(b'{');
    for (i, (k, v)) in query.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        serde_json::to_writer(&mut *out, k).expect("writing to a Vec");
        out.push(b':');
        serde_json::to_writer(&mut *out, v).expect("writing to a Vec");
    }
    let rest = inner[1..].trim_start();
    if !rest.starts_with('}') {
        out.push(b',');
    }
    out.extend_from_slice(rest.as_bytes());
}

/// Walk a (possibly paged) endpoint, sending one chunk of lines per page.
async fn pages(
    client: &ApiClient,
    path: &str,
    key: &str,
    paged: bool,
    query: &[(&str, String)],
    tx: &Sink,
) -> Result<(), FetchError> {
    let segments: Vec<&str> = path.split('/').collect();
    let mut page = 1u32;
    loop {
        let mut q = query.to_vec();
        if paged {
            q.push(("page", page.to_string()));
            q.push(("pageSize", PAGE_SIZE.to_string()));
        }
        let (url, body) = get_json(client, &segments, &q).await?;
        let doc = fields(&url, text(&url, &body)?)?;
        let mut out = Vec::with_capacity(body.len() + 64);
        for record in records(&url, &doc, key)? {
            with_fields(record, query, &mut out);
            out.push(b'\n');
        }
        if tx.send(Ok(Bytes::from(out))).await.is_err() {
            return Ok(());
        }
        let more = doc.get("nextPageUrl").is_some_and(|v| v.get() != "null");
        if !paged || !more {
            return Ok(());
        }
        page += 1;
    }
}

/// Every table, every key (paged by `nextMarker`), every value: one line per key.
async fn metadata(client: &ApiClient, tx: &Sink) -> Result<(), FetchError> {
    let (url, body) = get_json(client, &["metadata"], &[]).await?;
    let doc = fields(&url, text(&url, &body)?)?;
    let tables: Vec<String> = records(&url, &doc, "results")?
        .iter()
        .filter_map(|r| {
            serde_json::from_str::<HashMap<String, serde_json::Value>>(r.get())
                .ok()
                .and_then(|m| m.get("name").and_then(|n| n.as_str()).map(str::to_string))
        })
        .collect();
    for table in tables {
        let mut marker: Option<String> = None;
        loop {
            let query: Vec<(&str, String)> =
                marker.iter().map(|m| ("nextMarker", m.clone())).collect();
            let (url, body) = get_json(client, &["metadata", &table], &query).await?;
            let doc = fields(&url, text(&url, &body)?)?;
            let mut out = Vec::new();
            for entry in records(&url, &doc, "results")? {
                let entry: HashMap<String, serde_json::Value> = serde_json::from_str(entry.get())
                    .map_err(|e| FetchError::Shape {
                    url: url.clone(),
                    problem: format!("a key entry is not an object: {e}"),
                })?;
                let Some(key) = entry.get("key").and_then(|k| k.as_str()) else {
                    continue;
                };
                let (url, value) = get_json(client, &["metadata", &table, key], &[]).await?;
                let value = text(&url, &value)?;
                fields(&url, value)?;
                out.extend_from_slice(value.trim().as_bytes());
                out.push(b'\n');
            }
            if tx.send(Ok(Bytes::from(out))).await.is_err() {
                return Ok(());
            }
            marker = doc
                .get("nextMarker")
                .and_then(|m| {
                    serde_json::from_str::<Option<String>>(m.get())
                        .ok()
                        .flatten()
                })
                .filter(|m| !m.is_empty());
            if marker.is_none() {
                break;
            }
        }
    }
    Ok(())
}

/// The ids of every list (`GET /api/lists`).
pub async fn list_ids(client: &ApiClient) -> Result<Vec<i64>, FetchError> {
    record_ids(client, "lists", "lists", false).await
}

/// The `id` of every record in the array `key` of `path`, following pages when `paged`.
pub async fn record_ids(
    client: &ApiClient,
    path: &str,
    key: &str,
    paged: bool,
) -> Result<Vec<i64>, FetchError> {
    #[derive(serde::Deserialize)]
    struct Id {
        id: i64,
    }
    let segments: Vec<&str> = path.split('/').collect();
    let mut ids = Vec::new();
    let mut page = 1u32;
    loop {
        let query = if paged {
            vec![
                ("page", page.to_string()),
                ("pageSize", PAGE_SIZE.to_string()),
            ]
        } else {
            Vec::new()
        };
        let (url, body) = get_json(client, &segments, &query).await?;
        let doc = fields(&url, text(&url, &body)?)?;
        for r in records(&url, &doc, key)? {
            let id = serde_json::from_str::<Id>(r.get()).map_err(|e| FetchError::Shape {
                url: url.clone(),
                problem: format!("a record of {key:?} without an integer id: {e}"),
            })?;
            ids.push(id.id);
        }
        let more = doc.get("nextPageUrl").is_some_and(|v| v.get() != "null");
        if !paged || !more {
            return Ok(ids);
        }
        page += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn added(record: &str, query: &[(&str, String)]) -> String {
        let raw: Box<RawValue> = serde_json::from_str(record).unwrap();
        let mut out = Vec::new();
        with_fields(&raw, query, &mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn fields_implied_by_the_request_are_added_in_front() {
        let q = [
            ("templateType", "Blast".to_string()),
            ("messageMedium", "Email".to_string()),
        ];
        assert_eq!(
            added(r#"{"templateId":1}"#, &q),
            r#"{"templateType":"Blast","messageMedium":"Email","templateId":1}"#
        );
        assert_eq!(
            added("{ }", &q),
            r#"{"templateType":"Blast","messageMedium":"Email"}"#
        );
        assert_eq!(added(r#"{"a":1}"#, &[]), r#"{"a":1}"#);
    }
}
