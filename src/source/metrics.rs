//! `GET /api/campaigns/metrics`: lifetime metrics of every campaign, as an NDJSON body for the
//! [pipeline](super::pipeline).
//!
//! The campaign ids come from `GET /api/campaigns` (paged). They are asked for in as few
//! requests as a URL allows (the query kept under [`MAX_QUERY_BYTES`]: hundreds of ids per
//! request), each through the metrics family's own limiter (10 requests a minute).
//! `startDateTime` is the sync's `--start-date` when given, else [`EARLIEST`]; `endDateTime`
//! is the run's `now`.
//!
//! Each response is CSV with a header row and one row per campaign. Headers become stable
//! snake_case column names ([`column_name`]: `Revenue (USD)` → `revenue_usd`,
//! `Clicks / Opens` → `clicks_opens`, `%` → `pct`); `schemas/campaigns_metrics.json` keeps each
//! original header as its column's description. Each row becomes one JSON object with typed
//! values (an integer when the cell parses as i64, else a number when it parses as a finite
//! float, else a string); empty cells are left out, so they read as null. A header the schema
//! does not declare lands in `_extra`, as the decoder does for any undeclared key.

use std::collections::HashSet;

use bytes::Bytes;
use chrono::{DateTime, NaiveDate, Utc};

use super::FetchError;
use super::rest::{self, Body};
use crate::api::{ApiClient, Family, display_url};

/// The longest query string sent (ids and dates): well under common URL limits (8 KB).
pub const MAX_QUERY_BYTES: usize = 7_000;

/// `startDateTime` when the sync has no `--start-date`: before any Iterable project existed.
pub const EARLIEST: NaiveDate = NaiveDate::from_ymd_opt(2010, 1, 1).expect("a valid date");

/// The NDJSON body of `campaigns_metrics`: one line per campaign with metrics.
pub fn body(client: ApiClient, start: Option<DateTime<Utc>>, end: DateTime<Utc>) -> Body {
    let start = start.unwrap_or_else(|| EARLIEST.and_time(chrono::NaiveTime::MIN).and_utc());
    rest::produced(move |tx| async move {
        let ids = rest::record_ids(&client, "campaigns", "campaigns", true).await?;
        let dates = [("startDateTime", iso(start)), ("endDateTime", iso(end))];
        let fixed: usize = dates.iter().map(|(k, v)| k.len() + v.len() + 2).sum();
        for batch in batches(&ids, MAX_QUERY_BYTES.saturating_sub(fixed)) {
            let mut query: Vec<(&str, String)> = batch
                .iter()
                .map(|id| ("campaignId", id.to_string()))
                .collect();
            query.extend(dates.iter().cloned());
            let resp = client
                .get(Family::Metrics, "campaigns/metrics", &query)
                .await?;
            let url = display_url(resp.url());
            let csv = resp.bytes().await?;
            let lines = csv_to_ndjson(&csv).map_err(|problem| FetchError::Shape {
                url: url.clone(),
                problem,
            })?;
            if tx.send(Ok(Bytes::from(lines))).await.is_err() {
                return Ok(());
            }
        }
        Ok(())
    })
}

fn iso(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// `ids` cut into runs whose `campaignId=<id>&` parameters fit in `budget` bytes (at least
/// one id per run).
fn batches(ids: &[i64], budget: usize) -> Vec<&[i64]> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut used = 0;
    for (i, id) in ids.iter().enumerate() {
        let cost = "campaignId=&".len() + id.to_string().len();
        if i > start && used + cost > budget {
            out.push(&ids[start..i]);
            start = i;
            used = 0;
        }
        used += cost;
    }
    if start < ids.len() {
        out.push(&ids[start..]);
    }
    out
}

/// A CSV header as a column name: lowercase ASCII letters and digits, runs of anything else
/// as one `_` (none at the ends), `%` as `pct`.
pub fn column_name(header: &str) -> String {
    let mut out = String::with_capacity(header.len());
    let mut gap = false;
    for part in header.replace('%', " pct ").chars() {
        if part.is_ascii_alphanumeric() {
            if gap && !out.is_empty() {
                out.push('_');
            }
            gap = false;
            out.push(part.to_ascii_lowercase());
        } else {
            gap = true;
        }
    }
    out
}

/// The column names of a header row; a name that repeats gets `_2`, `_3` … so no row has a
/// key twice.
fn column_names<'a>(headers: impl Iterator<Item = &'a str>) -> Vec<String> {
    let mut seen = HashSet::new();
    headers
        .map(|h| {
            let base = column_name(h);
            let base = if base.is_empty() {
                "column".to_string()
            } else {
                base
            };
            let mut name = base.clone();
            let mut n = 1;
            while !seen.insert(name.clone()) {
                n += 1;
                name = format!("{base}_{n}");
            }
            name
        })
        .collect()
}

/// A cell as a JSON value: integer, else finite number, else string.
fn write_cell(cell: &str, out: &mut Vec<u8>) {
    if let Ok(i) = cell.parse::<i64>() {
        out.extend_from_slice(i.to_string().as_bytes());
    } else if let Some(f) = cell.parse::<f64>().ok().filter(|f| f.is_finite()) {
        serde_json::to_writer(&mut *out, &f).expect("writing to a Vec");
    } else {
        serde_json::to_writer(&mut *out, cell).expect("writing to a Vec");
    }
}

/// A CSV body with a header row as NDJSON, one object per row.
fn csv_to_ndjson(body: &[u8]) -> Result<Vec<u8>, String> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(true)
        .from_reader(body);
    let names = column_names(
        reader
            .headers()
            .map_err(|e| format!("CSV header: {e}"))?
            .iter(),
    );
    let mut out = Vec::with_capacity(body.len() * 2);
    for record in reader.records() {
        let record = record.map_err(|e| format!("CSV row: {e}"))?;
        if record.len() > names.len() {
            return Err(format!(
                "a CSV row has {} cells for {} headers",
                record.len(),
                names.len()
            ));
        }
        out.push(b'{');
        let mut first = true;
        for (name, cell) in names.iter().zip(record.iter()) {
            let cell = cell.trim();
            if cell.is_empty() {
                continue;
            }
            if !first {
                out.push(b',');
            }
            first = false;
            serde_json::to_writer(&mut out, name).expect("writing to a Vec");
            out.push(b':');
            write_cell(cell, &mut out);
        }
        out.extend_from_slice(b"}\n");
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_become_stable_column_names() {
        assert_eq!(column_name("Total Email Sends"), "total_email_sends");
        assert_eq!(column_name("Revenue (USD)"), "revenue_usd");
        assert_eq!(column_name("Clicks / Opens"), "clicks_opens");
        assert_eq!(column_name("Conversion Rate (%)"), "conversion_rate_pct");
        assert_eq!(column_name("Total In-App Sends"), "total_in_app_sends");
        assert_eq!(column_name("Purchases / M (Email)"), "purchases_m_email");
        assert_eq!(column_name("id"), "id");
        assert_eq!(
            column_names(["A b", "a-b", "", "%"].into_iter()),
            ["a_b", "a_b_2", "column", "pct"]
        );
    }

    #[test]
    fn rows_become_typed_json_objects() {
        let csv = "id,Total Sends,Open Rate,Note,Revenue\n\
                   7,120,0.25,\"a, b\",12.0\n\
                   8,,,NaN,\n";
        let out = String::from_utf8(csv_to_ndjson(csv.as_bytes()).unwrap()).unwrap();
        assert_eq!(
            out,
            "{\"id\":7,\"total_sends\":120,\"open_rate\":0.25,\"note\":\"a, b\",\"revenue\":12.0}\n\
             {\"id\":8,\"note\":\"NaN\"}\n"
        );
        assert!(csv_to_ndjson(b"id\n1,2\n").is_err());
    }

    #[test]
    fn ids_are_batched_by_query_length() {
        let ids: Vec<i64> = (100_000..101_000).collect();
        let runs = batches(&ids, MAX_QUERY_BYTES);
        assert_eq!(runs.concat(), ids);
        for run in &runs {
            let len: usize = run.iter().map(|id| 12 + id.to_string().len()).sum();
            assert!(len <= MAX_QUERY_BYTES);
        }
        assert_eq!(runs.len(), 1000 * 18 / MAX_QUERY_BYTES + 1);
        assert_eq!(batches(&[1, 2], 1), vec![&[1][..], &[2][..]]);
        assert!(batches(&[], 10).is_empty());
    }
}
