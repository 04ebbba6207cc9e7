//! `GET /api/campaigns/metrics`: lifetime metrics of every campaign, as an NDJSON body for the
//! [pipeline](super::pipeline).
//!
//! The campaign ids come from `GET /api/campaigns` (paged). They are asked for in as few
//! requests as a URL allows (the query kept under [`MAX_QUERY_BYTES`]: hundreds of ids per
//! request), each through the metrics family's own limiter (10 requests a minute).
//! `startDateTime` is the sync's `--start-date` when given, else [`EARLIEST`]; `endDateTime`
//! is the run's `now`.
//!
//! Each response is CSV with a header row and one row per campaign. `schemas/
//! campaigns_metrics.json` is the table from header to column ([`metric_column`]): each
//! column's description is the header Iterable sends, matched by its snake_case form
//! ([`column_name`]: `Revenue (USD)` → `revenue_usd`, `Clicks / Opens` → `clicks_opens`, `%`
//! → `pct`), so a header whose column keeps an earlier name (`Total Pushes Opened` →
//! `total_push_opens`) still lands typed, and a new header is one entry there. A header the
//! table lacks becomes its snake_case name and lands in `_extra`, as the decoder does for any
//! undeclared key. Each row becomes one JSON object with typed values (an integer when the
//! cell parses as i64, else a number when it parses as a finite float, else a string); empty
//! cells are left out, so they read as null. A header repeated in one CSV (older projects
//! send each twice) is one column: a second value equal to the first is dropped, a differing
//! one is kept under `<column>_<n>` (so in `_extra`). Rows are kept whichever campaigns they
//! name, also one that was not asked for.

use std::collections::HashMap;
use std::sync::OnceLock;

use bytes::Bytes;
use chrono::{DateTime, NaiveDate, Utc};

use super::FetchError;
use super::rest::{self, Body};
use crate::api::{ApiClient, Family, display_url};
use crate::catalog;

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

/// The column a CSV header fills: the one whose description (in
/// `schemas/campaigns_metrics.json`) is that header, compared in snake_case; else the
/// header's snake_case name (`column` for a header with no letter or digit).
pub fn metric_column(header: &str) -> String {
    static TABLE: OnceLock<HashMap<String, String>> = OnceLock::new();
    let table = TABLE.get_or_init(|| {
        let def = catalog::find("campaigns_metrics").expect("the catalog has campaigns_metrics");
        let schema: serde_json::Value =
            serde_json::from_str(def.schema).expect("catalog tests parse every schema");
        let columns = schema["properties"].as_object().expect("properties");
        columns
            .iter()
            .filter_map(|(name, prop)| {
                let header = prop["description"].as_str()?;
                Some((column_name(header), name.clone()))
            })
            .collect()
    });
    let name = column_name(header);
    match table.get(&name) {
        Some(column) => column.clone(),
        None if name.is_empty() => "column".to_string(),
        None => name,
    }
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

/// Whether two cells of one column say the same: equal text, or equal numbers.
fn same_cell(a: &str, b: &str) -> bool {
    a == b || matches!((a.parse::<f64>(), b.parse::<f64>()), (Ok(x), Ok(y)) if x == y)
}

/// A CSV body with a header row as NDJSON, one object per row.
fn csv_to_ndjson(body: &[u8]) -> Result<Vec<u8>, String> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(true)
        .from_reader(body);
    let headers = reader.headers().map_err(|e| format!("CSV header: {e}"))?;
    let columns: Vec<String> = headers.iter().map(metric_column).collect();
    // For each header, the name its differing value takes when its column came earlier.
    let mut seen: HashMap<&str, usize> = HashMap::new();
    let repeats: Vec<String> = columns
        .iter()
        .map(|c| {
            let n = seen.entry(c).or_insert(0);
            *n += 1;
            format!("{c}_{n}")
        })
        .collect();
    let mut out = Vec::with_capacity(body.len() * 2);
    // The column each cell of a row filled, by the cell's index.
    let mut filled: HashMap<&str, usize> = HashMap::new();
    for record in reader.records() {
        let record = record.map_err(|e| format!("CSV row: {e}"))?;
        if record.len() > columns.len() {
            return Err(format!(
                "a CSV row has {} cells for {} headers",
                record.len(),
                columns.len()
            ));
        }
        filled.clear();
        out.push(b'{');
        let mut first = true;
        for (at, ((column, repeat), cell)) in
            columns.iter().zip(&repeats).zip(record.iter()).enumerate()
        {
            let cell = cell.trim();
            if cell.is_empty() {
                continue;
            }
            let key = match filled.get(column.as_str()) {
                None => {
                    filled.insert(column, at);
                    column
                }
                Some(&earlier) if same_cell(record[earlier].trim(), cell) => continue,
                Some(_) => repeat,
            };
            if !first {
                out.push(b',');
            }
            first = false;
            serde_json::to_writer(&mut out, key).expect("writing to a Vec");
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
    }

    #[test]
    fn headers_find_their_column_in_the_schema_table() {
        for (header, column) in [
            ("Total Pushes Opened", "total_push_opens"),
            ("Unique Pushes Opened", "unique_push_opens"),
            ("Total Email Opens (filtered)", "total_email_opens_filtered"),
            (
                "Unique Email Opens Or Clicks",
                "unique_email_opens_or_clicks",
            ),
            ("Total WebPush Holdout", "total_webpush_holdout"),
            ("Purchases / M", "purchases_m"),
            ("Revenue / M (Push)", "revenue_m_push"),
            ("A Header Nobody Declared", "a_header_nobody_declared"),
            ("%", "pct"),
            ("", "column"),
        ] {
            assert_eq!(metric_column(header), column, "{header}");
        }
    }

    #[test]
    fn a_repeated_header_is_one_column_and_a_differing_value_is_kept_apart() {
        let csv = "id,Revenue,Revenue,Total Pushes Opened,Total Pushes Opened,id\n\
                   7,12.0,12,3,4,7\n\
                   8,,5.5,,,8\n";
        let out = String::from_utf8(csv_to_ndjson(csv.as_bytes()).unwrap()).unwrap();
        assert_eq!(
            out,
            "{\"id\":7,\"revenue\":12.0,\"total_push_opens\":3,\"total_push_opens_2\":4}\n\
             {\"id\":8,\"revenue\":5.5}\n"
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
