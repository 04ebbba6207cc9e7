//! `GET /api/metadata`, `GET /api/metadata/{table}` and `GET /api/metadata/{table}/{key}`.
//!
//! Four tables: `products` (121 to 149 keys, so three pages of [`PAGE`] keys),
//! `StoreLocations` (mixed case: table names match case-insensitively and are answered in
//! their stored spelling), `featureFlags` (holding both `newCheckout` and `NewCheckout`: keys
//! are case-sensitive) and `promoCodes`. Values are nested JSON objects with unicode, nulls,
//! arrays and floats. Keys list in byte order; `nextMarker` is an opaque token (the hex of the
//! last key sent) present only when more keys follow. An entry is served once the clock
//! reaches its `lastModified`; one feature flag changes during the event window.
//!
//! An unknown table lists no keys (200, empty `results`); an unknown table or key on the
//! single-entry route is 404 `NotFound`; a marker that is not one of ours is 400.

use std::fmt::Write as _;
use std::sync::Arc;

use axum::extract::{self, Path, RawQuery};
use axum::response::{IntoResponse, Json, Response};
use chrono::TimeDelta;
use serde::Serialize;
use serde_json::{Value, json};

use super::{ApiError, Dice, Params, Timeline, now_ms};
use crate::fake::{FakeConfig, FakeIterable, State};

/// Keys per page of `GET /api/metadata/{table}`.
const PAGE: usize = 50;

const TABLES: &[&str] = &["featureFlags", "products", "promoCodes", "StoreLocations"];

const PRODUCTS: &[&str] = &[
    "Organic Cotton T-Shirt",
    "Wool Beanie",
    "Trail Running Shoes",
    "Café Crème Mug",
    "Lederrucksack „Berlin“",
    "抹茶セット",
    "Linen Napkins (set of 4)",
    "Bamboo Toothbrush",
    "Rain Jacket — Unisex",
    "Smart Water Bottle 750 ml",
];

const CITIES: &[(&str, &str, f64, f64)] = &[
    ("München", "DE", 48.137, 11.575),
    ("Paris", "FR", 48.857, 2.352),
    ("São Paulo", "BR", -23.55, -46.633),
    ("東京", "JP", 35.682, 139.759),
    ("New York", "US", 40.713, -74.006),
    ("Zürich", "CH", 47.377, 8.541),
    ("Kraków", "PL", 50.065, 19.945),
    ("Austin", "US", 30.267, -97.743),
];

/// One metadata entry as `GET /api/metadata/{table}/{key}` serves it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
struct Entry {
    key: String,
    table: &'static str,
    size: i64,
    last_modified: i64,
    value: Value,
}

/// A listing row: an entry without its value.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Properties<'a> {
    key: &'a str,
    table: &'a str,
    size: i64,
    last_modified: i64,
}

/// Every entry of `table` (one of `TABLES`), visible or not, in key byte order.
fn entries(cfg: &FakeConfig, table: &'static str) -> Vec<Entry> {
    let time = Timeline::new(cfg);
    let mut dice = Dice::new(cfg.seed, &format!("metadata {table}"));
    let modified = |d: &mut Dice| d.between(time.catalog_ready, time.start);
    let mut rows: Vec<(String, i64, Value)> = match table {
        "products" => {
            let count = 121 + dice.below(29);
            let mut sku = 1000 + dice.below(5000);
            (0..count)
                .map(|_| {
                    sku += 1 + dice.below(30);
                    let price = dice.between(199, 25_000) as f64 / 100.0;
                    let tags: Vec<&str> = ["new", "sale", "eco", "bestseller", "limited"]
                        .into_iter()
                        .filter(|_| dice.chance(0.3))
                        .collect();
                    let value = json!({
                        "name": dice.pick(PRODUCTS),
                        "price": price,
                        "currency": dice.pick(&["EUR", "USD", "JPY"]),
                        "inStock": dice.chance(0.8),
                        "stock": dice.between(0, 500),
                        "tags": tags,
                        "dimensions": {
                            "widthCm": dice.between(5, 80),
                            "heightCm": dice.between(5, 80),
                            "weightKg": dice.between(5, 5000) as f64 / 1000.0,
                        },
                        "discontinuedAt": null,
                    });
                    (format!("SKU{sku:06}"), modified(&mut dice), value)
                })
                .collect()
        }
        "StoreLocations" => {
            let count = 8 + dice.below(8);
            (0..count)
                .map(|k| {
                    let &(city, country, lat, lon) = dice.pick(CITIES);
                    let value = json!({
                        "city": city,
                        "countryCode": country,
                        "geo": {"lat": lat, "lon": lon},
                        "openingHours": {
                            "monFri": "09:00–19:00",
                            "sat": if dice.chance(0.7) { Value::from("10:00–18:00") } else { Value::Null },
                            "sun": null,
                        },
                        "manager": {"name": "Zoë Núñez", "phone": format!("+49 89 {:07}", dice.below(10_000_000))},
                    });
                    (format!("store{:02}", k + 1), modified(&mut dice), value)
                })
                .collect()
        }
        "featureFlags" => ["newCheckout", "NewCheckout", "darkMode", "betaSearch"]
            .into_iter()
            .enumerate()
            .map(|(k, key)| {
                let last_modified = if key == "betaSearch" {
                    time.start + (time.end - time.start) / 2
                } else {
                    modified(&mut dice)
                };
                let value = json!({
                    "enabled": k.is_multiple_of(2),
                    "rollout": (k as f64 + 1.0) * 0.25,
                    "owner": dice.pick(&["web", "mobile", "growth"]),
                    "variants": {"control": 0.5, "treatment": 0.5},
                });
                (key.to_string(), last_modified, value)
            })
            .collect(),
        _ => {
            let count = 30 + dice.below(20);
            (0..count)
                .map(|k| {
                    let code = format!("PROMO{k:02}{}", dice.below(10_000));
                    let valid_until = time.start
                        + dice.between(-30, 90) * TimeDelta::days(1).num_milliseconds();
                    let value = json!({
                        "discountPercent": dice.pick(&[5, 10, 15, 20, 25, 50]),
                        "validUntil": valid_until,
                        "singleUse": dice.chance(0.2),
                        "minimumOrder": if dice.chance(0.5) { Value::from(dice.between(10, 100)) } else { Value::Null },
                        "description": dice.pick(&["Bienvenue !", "10 % auf alles", "Free shipping", "春の特別セール"]),
                    });
                    (code, modified(&mut dice), value)
                })
                .collect()
        }
    };
    rows.sort_by(|a, b| a.0.cmp(&b.0));
    rows.dedup_by(|a, b| a.0 == b.0);
    rows.into_iter()
        .map(|(key, last_modified, value)| Entry {
            size: serde_json::to_vec(&value)
                .expect("a value serializes")
                .len() as i64,
            key,
            table,
            last_modified,
            value,
        })
        .collect()
}

/// The stored spelling of `name`, matched case-insensitively.
fn find_table(name: &str) -> Option<&'static str> {
    TABLES
        .iter()
        .copied()
        .find(|t| t.eq_ignore_ascii_case(name))
}

/// The entries of `table` served now.
fn visible_entries(state: &State, table: &'static str) -> Vec<Entry> {
    let now = now_ms(state);
    entries(&state.cfg, table)
        .into_iter()
        .filter(|e| e.last_modified <= now)
        .collect()
}

/// The tables that hold at least one entry now, in listing order.
fn visible_tables(state: &State) -> Vec<&'static str> {
    TABLES
        .iter()
        .copied()
        .filter(|t| !visible_entries(state, t).is_empty())
        .collect()
}

fn marker_for(key: &str) -> String {
    key.bytes().fold(String::new(), |mut s, b| {
        write!(s, "{b:02x}").expect("write to a string");
        s
    })
}

fn key_of_marker(marker: &str) -> Option<String> {
    if !marker.len().is_multiple_of(2) || marker.is_empty() {
        return None;
    }
    let bytes = (0..marker.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(marker.get(i..i + 2)?, 16).ok())
        .collect::<Option<Vec<u8>>>()?;
    String::from_utf8(bytes).ok()
}

#[derive(Serialize)]
struct TableName {
    name: &'static str,
}

#[derive(Serialize)]
struct TablesResponse {
    results: Vec<TableName>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct KeysResponse<'a> {
    results: Vec<Properties<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    next_marker: Option<String>,
}

pub(super) async fn get_tables(extract::State(state): extract::State<Arc<State>>) -> Response {
    let results = visible_tables(&state)
        .into_iter()
        .map(|name| TableName { name })
        .collect();
    Json(TablesResponse { results }).into_response()
}

pub(super) async fn get_keys(
    extract::State(state): extract::State<Arc<State>>,
    Path(table): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let params = Params::parse(query.as_deref());
    let after = params
        .one("nextMarker")
        .map(|m| {
            key_of_marker(m).ok_or_else(|| ApiError::bad_params(format!("Invalid nextMarker: {m}")))
        })
        .transpose()?;
    let entries = find_table(&table)
        .map(|t| visible_entries(&state, t))
        .unwrap_or_default();
    let rest: Vec<&Entry> = entries
        .iter()
        .filter(|e| after.as_ref().is_none_or(|a| e.key.as_str() > a.as_str()))
        .collect();
    let page = &rest[..rest.len().min(PAGE)];
    let next_marker = (rest.len() > PAGE).then(|| marker_for(&page[PAGE - 1].key));
    let results = page
        .iter()
        .map(|e| Properties {
            key: &e.key,
            table: e.table,
            size: e.size,
            last_modified: e.last_modified,
        })
        .collect();
    Ok(Json(KeysResponse {
        results,
        next_marker,
    })
    .into_response())
}

pub(super) async fn get_entry(
    extract::State(state): extract::State<Arc<State>>,
    Path((table, key)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    find_table(&table)
        .and_then(|t| {
            visible_entries(&state, t)
                .into_iter()
                .find(|e| e.key == key)
        })
        .map(|e| Json(e).into_response())
        .ok_or_else(|| {
            ApiError::not_found(format!("No metadata found in table {table} for key {key}"))
        })
}

impl FakeIterable {
    /// The table names `GET /api/metadata` lists now, in response order.
    pub fn truth_metadata_tables(&self) -> Vec<String> {
        visible_tables(&self.state)
            .into_iter()
            .map(str::to_string)
            .collect()
    }

    /// Every entry served now, as the `GET /api/metadata/{table}/{key}` body
    /// (`{key, table, size, lastModified, value}`), table by table in listing order, keys in
    /// listing order.
    pub fn truth_metadata(&self) -> Vec<Value> {
        visible_tables(&self.state)
            .into_iter()
            .flat_map(|t| visible_entries(&self.state, t))
            .map(|e| serde_json::to_value(e).expect("an entry serializes"))
            .collect()
    }
}
