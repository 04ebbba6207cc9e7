//! Tests of the fake API's export side: `data.json` for every data type against the fake's
//! ground truth, windows and parameters, the data's quirks and time model, each fault,
//! `userEvents`, and the export-job API end to end.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::{DateTime, NaiveDate, TimeDelta, Utc};
use futures::StreamExt;
use iterable_lake::fake::{CutOff, FakeConfig, FakeIterable, people};
use reqwest::StatusCode;
use reqwest::header::{CONTENT_LENGTH, CONTENT_TYPE, HeaderMap, RETRY_AFTER, TRANSFER_ENCODING};
use serde_json::{Value, json};

/// A running fake and a client.
struct Api {
    fake: FakeIterable,
    http: reqwest::Client,
}

/// A finished response.
struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&self.body)))
    }

    fn lines(&self) -> Vec<String> {
        body_lines(&self.body)
    }
}

impl Api {
    async fn start(cfg: FakeConfig) -> Api {
        Api {
            fake: FakeIterable::start(cfg).await.expect("the fake starts"),
            http: reqwest::Client::new(),
        }
    }

    async fn small(seed: u64) -> Api {
        Api::start(FakeConfig::small(seed)).await
    }

    /// The URL of `path` (relative to `/api/`) with `params` encoded.
    fn url(&self, path: &str, params: &[(&str, &str)]) -> String {
        let mut url = format!("{}{path}", self.fake.base_url());
        if !params.is_empty() {
            let query = url::form_urlencoded::Serializer::new(String::new())
                .extend_pairs(params)
                .finish();
            url = format!("{url}?{query}");
        }
        url
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> Reply {
        let response = request.send().await.expect("the request is answered");
        let status = response.status();
        let headers = response.headers().clone();
        let body = response.bytes().await.expect("the body arrives whole");
        Reply {
            status,
            headers,
            body,
        }
    }

    /// GETs an absolute URL with the key.
    async fn get_url(&self, url: &str) -> Reply {
        let key = &self.fake.config().api_key;
        self.send(self.http.get(url).header("Api-Key", key)).await
    }

    async fn get(&self, path: &str, params: &[(&str, &str)]) -> Reply {
        self.get_url(&self.url(path, params)).await
    }

    async fn export(&self, params: &[(&str, &str)]) -> Reply {
        self.get("export/data.json", params).await
    }

    /// `data.json` for a data type and window, which must answer 200.
    async fn window(&self, data_type: &str, start: DateTime<Utc>, end: DateTime<Utc>) -> Reply {
        let (start, end) = (spaced(start), spaced(end));
        let reply = self
            .export(&[
                ("dataTypeName", data_type),
                ("startDateTime", &start),
                ("endDateTime", &end),
            ])
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{data_type} {start} {end}");
        reply
    }

    async fn all(&self, data_type: &str) -> Reply {
        let reply = self
            .export(&[("dataTypeName", data_type), ("range", "All")])
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{data_type}");
        reply
    }

    async fn post_json(&self, path: &str, body: &Value) -> Reply {
        let request = self
            .http
            .post(self.url(path, &[]))
            .header("Api-Key", &self.fake.config().api_key)
            .header(CONTENT_TYPE, "application/json")
            .body(body.to_string());
        self.send(request).await
    }

    async fn delete(&self, path: &str) -> Reply {
        let key = &self.fake.config().api_key;
        self.send(self.http.delete(self.url(path, &[])).header("Api-Key", key))
            .await
    }

    fn truth_all(&self, data_type: &str) -> Vec<String> {
        self.fake.truth_lines(
            data_type,
            DateTime::<Utc>::MIN_UTC,
            DateTime::<Utc>::MAX_UTC,
        )
    }
}

fn data_types() -> Vec<String> {
    serde_json::from_str(include_str!("../data/export_data_types.json")).unwrap()
}

fn at(s: &str) -> DateTime<Utc> {
    chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S")
        .unwrap()
        .and_utc()
}

fn spaced(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S").to_string()
}

/// NDJSON lines, without a final empty one.
fn body_lines(body: &[u8]) -> Vec<String> {
    let text = std::str::from_utf8(body).expect("bodies are UTF-8");
    text.split('\n')
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

fn parse(line: &str) -> Value {
    let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
    assert!(v.is_object(), "{line}");
    v
}

/// A timestamp in any of the shapes the export writes: epoch milliseconds, or text (a
/// doubled fraction's second part is always `.000`).
fn stamp(v: &Value) -> DateTime<Utc> {
    if let Some(ms) = v.as_i64() {
        return DateTime::from_timestamp_millis(ms).unwrap();
    }
    let s = v.as_str().unwrap_or_else(|| panic!("not a timestamp: {v}"));
    let s = s.replace("000.000Z", "000Z");
    DateTime::parse_from_rfc3339(&s)
        .or_else(|_| DateTime::parse_from_str(&s, "%Y-%m-%d %H:%M:%S%.f %:z"))
        .or_else(|_| DateTime::parse_from_str(&s, "%Y-%m-%d %H:%M:%S%.f %z"))
        .unwrap_or_else(|e| panic!("{e}: {s}"))
        .to_utc()
}

fn cursor_field(data_type: &str) -> &'static str {
    if data_type == "user" {
        "profileUpdatedAt"
    } else {
        "createdAt"
    }
}

fn cursor(line: &Value, data_type: &str) -> DateTime<Utc> {
    let field = cursor_field(data_type);
    stamp(&line[field])
}

fn counts(lines: &[String], data_type: &str) -> BTreeMap<NaiveDate, u64> {
    let mut counts = BTreeMap::new();
    for line in lines {
        *counts
            .entry(cursor(&parse(line), data_type).date_naive())
            .or_default() += 1;
    }
    counts
}

fn sorted(mut lines: Vec<String>) -> Vec<String> {
    lines.sort();
    lines
}

const BAD_KEY: &str = r#"{"msg":"Invalid API key","code":"BadApiKey","params":null}"#;

#[tokio::test]
async fn fake_export_auth_needs_the_key_in_either_spelling() {
    let api = Api::small(1).await;
    let url = api.url("export/data.json", &[("dataTypeName", "emailSend")]);
    let key = api.fake.config().api_key.clone();

    let missing = api.send(api.http.get(&url)).await;
    assert_eq!(missing.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        missing.json(),
        serde_json::from_str::<Value>(BAD_KEY).unwrap()
    );
    let wrong = api.send(api.http.get(&url).header("Api-Key", "nope")).await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        wrong.json(),
        serde_json::from_str::<Value>(BAD_KEY).unwrap()
    );
    let jobs = api.send(api.http.get(api.url("export/jobs", &[]))).await;
    assert_eq!(jobs.status, StatusCode::UNAUTHORIZED);

    for name in ["Api-Key", "Api_Key", "api_key", "API-KEY"] {
        let ok = api.send(api.http.get(&url).header(name, &key)).await;
        assert_eq!(ok.status, StatusCode::OK, "{name}");
    }
    assert_eq!(api.fake.export_requests(), 6);
    assert_eq!(api.fake.requests("/api/export/"), 7);
    assert_eq!(api.fake.requests("/api/export/jobs"), 1);
}

#[tokio::test]
async fn fake_export_serves_every_data_type_as_its_truth() {
    let api = Api::small(2).await;
    let types = data_types();
    assert_eq!(types.len(), 51);
    let mut endings = BTreeSet::new();
    for data_type in &types {
        let reply = api.all(data_type).await;
        assert_eq!(reply.headers[CONTENT_TYPE], "application/x-json-stream");
        let all = (DateTime::<Utc>::MIN_UTC, DateTime::<Utc>::MAX_UTC);
        assert_eq!(
            reply.body,
            api.fake.truth_body(data_type, all.0, all.1),
            "{data_type}"
        );
        let lines = reply.lines();
        assert!(lines.len() >= 60, "{data_type}: {} lines", lines.len());
        assert_eq!(lines, api.fake.truth_lines(data_type, all.0, all.1));
        assert_eq!(
            counts(&lines, data_type),
            api.fake.truth_counts(data_type, all.0, all.1),
            "{data_type}"
        );
        endings.insert(reply.body.ends_with(b"\n"));
    }
    assert_eq!(
        endings,
        BTreeSet::from([false, true]),
        "some bodies end with a newline, some without"
    );
    let spec = api.all("emailUnSubscribe").await;
    let wild = api.all("emailUnsubscribe").await;
    assert_eq!(spec.body, wild.body);
}

#[tokio::test]
async fn fake_export_windows_are_start_inclusive_and_end_exclusive() {
    let api = Api::small(3).await;
    let (day0, day1, day2) = (
        at("2024-01-01 00:00:00"),
        at("2024-01-02 00:00:00"),
        at("2024-01-03 00:00:00"),
    );
    let midnight = |t: DateTime<Utc>| format!("{} +00:00", spaced(t));
    let lines = api.window("emailSend", day1, day2).await.lines();
    assert_eq!(lines, api.fake.truth_lines("emailSend", day1, day2));
    let created: Vec<String> = lines
        .iter()
        .filter_map(|l| parse(l)["createdAt"].as_str().map(str::to_string))
        .collect();
    assert!(
        created.contains(&midnight(day1)),
        "the event at the start is in"
    );
    assert!(
        !created.contains(&midnight(day2)),
        "the event at the end is out"
    );
    let next = api
        .window("emailSend", day2, day2 + TimeDelta::days(1))
        .await;
    assert!(
        next.lines()
            .iter()
            .any(|l| parse(l)["createdAt"] == midnight(day2))
    );
    for line in &lines {
        let t = cursor(&parse(line), "emailSend");
        assert!(day1 <= t && t < day2, "{t} outside the window");
    }

    let noon = |t: DateTime<Utc>| t + TimeDelta::hours(12);
    api.fake.set_now(noon(day1));
    for data_type in ["emailOpen", "user"] {
        let first = api.window(data_type, noon(day0), day1).await.lines();
        let second = api.window(data_type, day1, noon(day1)).await.lines();
        let union = api.window(data_type, noon(day0), noon(day1)).await.lines();
        assert!(!first.is_empty() && !second.is_empty(), "{data_type}");
        let joined: Vec<String> = first.into_iter().chain(second).collect();
        assert_eq!(sorted(joined), sorted(union), "{data_type}");
    }

    let reference = api.window("emailClick", day1, day2).await.body;
    for (start, end) in [
        ("2024-01-02 00:00:00 +00:00", "2024-01-03 00:00:00 +00:00"),
        ("2024-01-02 01:00:00 +01:00", "2024-01-02 19:00:00 -05:00"),
        ("2024-01-02 00:00:00 00:00", "2024-01-03 00:00:00Z"),
        ("2024-01-02 02:00:00 +0200", "2024-01-03 00:00:00"),
    ] {
        let reply = api
            .export(&[
                ("dataTypeName", "emailClick"),
                ("startDateTime", start),
                ("endDateTime", end),
            ])
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{start}");
        assert_eq!(reply.body, reference, "{start} .. {end}");
    }
    let unencoded_plus = format!(
        "{}export/data.json?dataTypeName=emailClick&startDateTime=2024-01-02+00:00:00+00:00&endDateTime=2024-01-03+00:00:00",
        api.fake.base_url()
    );
    assert_eq!(api.get_url(&unencoded_plus).await.body, reference);
    let shifted = api
        .export(&[
            ("dataTypeName", "emailClick"),
            ("startDateTime", "2024-01-02 00:00:00 +01:00"),
            ("endDateTime", "2024-01-03 00:00:00 +01:00"),
        ])
        .await;
    assert_eq!(
        shifted.lines(),
        api.fake.truth_lines(
            "emailClick",
            day1 - TimeDelta::hours(1),
            day2 - TimeDelta::hours(1)
        )
    );
}

#[tokio::test]
async fn fake_export_replays_bodies_from_its_cache_once_the_data_is_settled() {
    let api = Api::start(FakeConfig {
        cache_bodies: true,
        ..FakeConfig::small(11)
    })
    .await;
    let start = api.fake.config().start;
    let end = start + TimeDelta::days(i64::from(api.fake.config().days));
    api.fake.set_now(end - TimeDelta::hours(6));
    let unsettled = api.window("emailSend", start, end).await;
    assert_eq!(unsettled.body, api.fake.truth_body("emailSend", start, end));
    assert_eq!(api.fake.cached_bodies(), 0, "the body still changes");
    api.fake.set_now(end + TimeDelta::hours(20));
    api.window("emailSend", start, end).await;
    assert_eq!(api.fake.cached_bodies(), 0, "late data may still arrive");

    api.fake.set_now(end + TimeDelta::hours(21));
    let first = api.window("emailSend", start, end).await;
    let second = api.window("emailSend", start, end).await;
    assert_eq!(api.fake.cached_bodies(), 1);
    assert_eq!(first.body, api.fake.truth_body("emailSend", start, end));
    assert_eq!(second.body, first.body);
    assert!(first.body.len() > unsettled.body.len(), "the clock moved");
    let other = api.window("emailOpen", start, end).await;
    assert_eq!(other.body, api.fake.truth_body("emailOpen", start, end));
    assert_eq!(api.fake.cached_bodies(), 2);
}

#[tokio::test]
async fn fake_export_rejects_bad_parameters() {
    let api = Api::small(4).await;
    let cases: [(&[(&str, &str)], &str); 7] = [
        (&[("range", "All")], "dataTypeName is required"),
        (
            &[("dataTypeName", "emailSends"), ("range", "All")],
            "Invalid dataTypeName emailSends",
        ),
        (
            &[("dataTypeName", "emailSend"), ("range", "Tomorrow")],
            "Invalid range",
        ),
        (
            &[
                ("dataTypeName", "emailSend"),
                ("startDateTime", "2024-01-02"),
            ],
            "Invalid startDateTime",
        ),
        (
            &[
                ("dataTypeName", "emailSend"),
                ("endDateTime", "2024-01-02T00:00:00Z"),
            ],
            "Invalid endDateTime",
        ),
        (
            &[
                ("dataTypeName", "emailSend"),
                ("startDateTime", "2024-01-03 00:00:00"),
                ("endDateTime", "2024-01-02 00:00:00"),
            ],
            "startDateTime must not be after endDateTime",
        ),
        (
            &[("dataTypeName", "emailSend"), ("campaignId", "abc")],
            "Invalid campaignId",
        ),
    ];
    for (params, msg) in cases {
        let reply = api.export(params).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{params:?}");
        let body = reply.json();
        assert_eq!(body["code"], "BadParams");
        assert!(body["msg"].as_str().unwrap().starts_with(msg), "{body}");
        assert_eq!(body["params"], Value::Null);
    }
}

#[tokio::test]
async fn fake_export_ranges_follow_the_clock() {
    let api = Api::small(5).await;
    let now = at("2024-01-02 12:00:00");
    api.fake.set_now(now);
    let (day1, day2) = (at("2024-01-02 00:00:00"), at("2024-01-03 00:00:00"));
    let day0 = at("2024-01-01 00:00:00");
    let min = DateTime::<Utc>::MIN_UTC;
    let max = DateTime::<Utc>::MAX_UTC;
    for (range, start, end) in [
        ("Today", day1, day2),
        ("Yesterday", day0, day1),
        ("BeforeToday", min, day1),
        ("All", min, max),
    ] {
        let reply = api
            .export(&[("dataTypeName", "pushSend"), ("range", range)])
            .await;
        let truth = api.fake.truth_lines("pushSend", start, end);
        assert!(!truth.is_empty(), "{range}");
        assert_eq!(reply.lines(), truth, "{range}");
    }
    let default = api.export(&[("dataTypeName", "pushSend")]).await;
    assert_eq!(
        default.lines(),
        api.fake.truth_lines("pushSend", day1, day2)
    );
    for line in default.lines() {
        assert!(
            cursor(&parse(&line), "pushSend") <= now,
            "nothing from the future"
        );
    }
}

#[tokio::test]
async fn fake_export_shapes_lines_with_only_and_omit_fields() {
    let api = Api::small(6).await;
    let truth: Vec<Value> = api
        .truth_all("emailSend")
        .iter()
        .map(|l| parse(l))
        .collect();
    let keep = |line: &Value, keys: &dyn Fn(&str) -> bool| -> Value {
        let kept = line
            .as_object()
            .unwrap()
            .iter()
            .filter(|(k, _)| keys(k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        Value::Object(kept)
    };

    let only = api
        .export(&[
            ("dataTypeName", "emailSend"),
            ("range", "All"),
            ("onlyFields", "createdAt,email"),
            ("onlyFields", "campaignId"),
        ])
        .await;
    let wanted = ["createdAt", "email", "campaignId"];
    let shaped: Vec<Value> = only.lines().iter().map(|l| parse(l)).collect();
    let expected: Vec<Value> = truth
        .iter()
        .map(|l| keep(l, &|k| wanted.contains(&k)))
        .collect();
    assert_eq!(shaped, expected);
    assert!(shaped.iter().any(|l| l.get("campaignId").is_some()));

    let omit = api
        .export(&[
            ("dataTypeName", "emailSend"),
            ("range", "All"),
            ("omitFields", "itblInternal,transactionalData"),
        ])
        .await;
    let shaped: Vec<Value> = omit.lines().iter().map(|l| parse(l)).collect();
    let expected: Vec<Value> = truth
        .iter()
        .map(|l| keep(l, &|k| k != "itblInternal" && k != "transactionalData"))
        .collect();
    assert_eq!(shaped, expected);
    assert!(truth.iter().any(|l| l.get("transactionalData").is_some()));

    let users = api
        .export(&[
            ("dataTypeName", "user"),
            ("range", "All"),
            ("onlyFields", "email,itblInternal"),
        ])
        .await;
    let users: Vec<Value> = users.lines().iter().map(|l| parse(l)).collect();
    assert_eq!(users.len(), api.truth_all("user").len());
    for user in &users {
        for key in user.as_object().unwrap().keys() {
            assert!(key == "email" || key.starts_with("itblInternal."), "{key}");
        }
    }
    assert!(
        users
            .iter()
            .any(|u| u.get("itblInternal.emailDomain").is_some())
    );

    let campaign = truth
        .iter()
        .find_map(|l| l["campaignId"].as_i64())
        .expect("some event has a campaign");
    let reply = api
        .export(&[
            ("dataTypeName", "emailSend"),
            ("range", "All"),
            ("campaignId", &campaign.to_string()),
        ])
        .await;
    let expected: Vec<&Value> = truth
        .iter()
        .filter(|l| l["campaignId"].as_i64() == Some(campaign))
        .collect();
    let got: Vec<Value> = reply.lines().iter().map(|l| parse(l)).collect();
    assert!(!got.is_empty());
    assert_eq!(got.iter().collect::<Vec<_>>(), expected);
}

#[tokio::test]
async fn fake_export_streams_with_chunked_encoding() {
    let api = Api::small(7).await;
    let reply = api.all("emailSend").await;
    assert_eq!(reply.headers[TRANSFER_ENCODING], "chunked");
    assert!(reply.headers.get(CONTENT_LENGTH).is_none());
    assert_eq!(reply.headers[CONTENT_TYPE], "application/x-json-stream");
}

#[tokio::test]
async fn fake_export_is_deterministic_per_seed() {
    let a = Api::small(8).await;
    let b = Api::small(8).await;
    let other = Api::small(9).await;
    for data_type in ["emailSend", "user", "customEvent"] {
        let body = a.all(data_type).await.body;
        assert_eq!(body, b.all(data_type).await.body, "{data_type}");
        assert_ne!(body, other.all(data_type).await.body, "{data_type}");
    }
}

/// Every string in `v`, keys included.
fn strings(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::String(s) => out.push(s.clone()),
        Value::Array(items) => items.iter().for_each(|i| strings(i, out)),
        Value::Object(map) => {
            for (k, v) in map {
                out.push(k.clone());
                strings(v, out);
            }
        }
        _ => {}
    }
}

#[tokio::test]
async fn fake_export_data_has_every_quirk() {
    let api = Api::small(10).await;
    let mut raw: Vec<(String, String)> = Vec::new();
    for data_type in data_types() {
        for line in api.truth_all(&data_type) {
            raw.push((data_type.clone(), line));
        }
    }
    let parsed: Vec<(&str, Value)> = raw.iter().map(|(t, l)| (t.as_str(), parse(l))).collect();
    let of = |t: &'static str| parsed.iter().filter(move |(d, _)| *d == t).map(|(_, v)| v);

    let created: Vec<&str> = parsed
        .iter()
        .filter_map(|(_, v)| v["createdAt"].as_str())
        .collect();
    let shapes = [
        ("spaced", "%Y-%m-%d %H:%M:%S +00:00"),
        ("spaced with millis", "%Y-%m-%d %H:%M:%S%.3f +00:00"),
        ("T with offset", "%Y-%m-%dT%H:%M:%S+00:00"),
        ("T with Z", "%Y-%m-%dT%H:%M:%SZ"),
        ("T with millis and Z", "%Y-%m-%dT%H:%M:%S%.3fZ"),
    ];
    for (name, format) in shapes {
        let n = created
            .iter()
            .filter(|c| chrono::NaiveDateTime::parse_from_str(c, format).is_ok())
            .count();
        assert!(n > 0, "no createdAt is {name}");
    }
    let plain = created
        .iter()
        .filter(|c| c.len() == 26 && c.ends_with(" +00:00"))
        .count();
    assert!(plain * 10 > created.len() * 7, "most timestamps are plain");
    assert!(
        of("inboxSession").any(|v| v["sessionStartTime"].is_i64()),
        "epoch-millisecond session times"
    );

    let users: Vec<&Value> = of("user").collect();
    for key in [
        "itblInternal.emailDomain",
        "itblInternal.documentCreatedAt",
        "itblInternal.documentUpdatedAt",
        "shoppingCart.total",
        "profileUpdatedAt",
        "signupDate",
        "preferences.channels",
    ] {
        assert!(
            users.iter().any(|u| u.get(key).is_some()),
            "no user has {key}"
        );
    }
    assert!(users.iter().all(|u| u.get("itblInternal").is_none()));
    assert!(
        users
            .iter()
            .all(|u| u["profileUpdatedAt"].is_string() || u["profileUpdatedAt"].is_i64())
    );
    assert!(of("emailSend").all(|v| !v["itblInternal"].is_string()));

    let transactional: Vec<&str> = of("emailSend")
        .filter_map(|v| v["transactionalData"].as_str())
        .collect();
    assert!(!transactional.is_empty());
    for t in &transactional {
        assert!(serde_json::from_str::<Value>(t).unwrap().is_object());
    }

    let score_kinds: BTreeSet<&str> = users
        .iter()
        .filter_map(|u| u.get("customScore"))
        .map(|s| match s {
            Value::Number(n) if n.is_i64() => "int",
            Value::Number(_) => "float",
            Value::String(s) if s.parse::<f64>().is_ok() => "numeric string",
            Value::Null => "null",
            _ => "other",
        })
        .collect();
    assert_eq!(
        score_kinds,
        BTreeSet::from(["float", "int", "null", "numeric string"])
    );
    let big = raw.iter().any(|(_, line)| {
        line.split("\"bigCounter\":").nth(1).is_some_and(|rest| {
            let digits: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
            digits.len() >= 20 && digits.parse::<i64>().is_err()
        })
    });
    assert!(big, "an integer beyond i64");

    let mut all_strings = Vec::new();
    for (_, v) in &parsed {
        strings(v, &mut all_strings);
    }
    let has_char = |pred: &dyn Fn(char) -> bool| all_strings.iter().any(|s| s.chars().any(pred));
    assert!(has_char(&|c| ('\u{4E00}'..='\u{9FFF}').contains(&c)), "CJK");
    assert!(
        has_char(&|c| ('\u{3040}'..='\u{30FF}').contains(&c)),
        "kana"
    );
    assert!(
        has_char(&|c| ('\u{0600}'..='\u{06FF}').contains(&c)),
        "Arabic"
    );
    assert!(
        has_char(&|c| ('\u{0590}'..='\u{05FF}').contains(&c)),
        "Hebrew"
    );
    assert!(has_char(&|c| c >= '\u{1F300}'), "emoji");
    assert!(has_char(&|c| c == '\u{200D}'), "zero-width joiner");
    assert!(has_char(&|c| c == '\0'), "NUL");
    let raw_text = |needle: &str| raw.iter().any(|(_, l)| l.contains(needle));
    assert!(raw_text("\\u0000"), "escaped NUL");
    assert!(raw_text("\u{2028}"), "raw U+2028");
    assert!(raw_text("\\u2028"), "escaped U+2028");
    assert!(raw_text("\\ud83d\\ude00"), "escaped surrogate pair");
    assert!(raw_text("\\/"), "escaped slash");
    let longest = all_strings.iter().map(String::len).max().unwrap();
    assert!(longest >= 10_000, "a long string");
    assert!(raw.iter().all(|(_, l)| l.len() < 400_000));

    let campaigns: Vec<&Value> = of("emailSend").map(|v| &v["campaignId"]).collect();
    assert!(campaigns.iter().any(|c| c.is_null()), "explicit null");
    assert!(
        of("emailSend").any(|v| v.get("campaignId").is_none()),
        "absent"
    );
    assert!(campaigns.iter().any(|c| c.is_i64()), "present");
    let empty = |pred: &dyn Fn(&Value) -> bool| {
        parsed
            .iter()
            .any(|(_, v)| v.as_object().unwrap().values().any(pred))
    };
    assert!(empty(&|v| v.as_array().is_some_and(|a| a.is_empty())), "[]");
    assert!(
        empty(&|v| v.as_object().is_some_and(|o| o.is_empty())),
        "{{}}"
    );

    let mid = api.fake.midpoint();
    let mut after_mid = 0;
    for (data_type, v) in &parsed {
        let (field, t) = match *data_type {
            "user" => ("loyaltyTier", cursor(v, "user")),
            _ => ("frequencyCapped", cursor(v, data_type)),
        };
        if v.get(field).is_some() {
            assert!(t >= mid, "{field} before the middle: {v}");
            after_mid += 1;
        }
    }
    assert!(after_mid > 100);

    let unsorted = data_types().iter().any(|t| {
        let times: Vec<DateTime<Utc>> = of_type(&parsed, t).map(|v| cursor(v, t)).collect();
        times.windows(2).any(|w| w[0] > w[1])
    });
    assert!(unsorted, "lines are not sorted by their cursor");

    for day in ["2024-01-01", "2024-01-02", "2024-01-03"] {
        let midnight = format!("{day} 00:00:00 +00:00");
        assert!(of("emailSend").any(|v| v["createdAt"] == midnight), "{day}");
    }
    let late = of("emailOpen").any(|v| {
        let doc = &v["itblInternal"]["documentCreatedAt"];
        !doc.is_null() && stamp(doc) - cursor(v, "emailOpen") >= TimeDelta::hours(1)
    });
    assert!(late, "some events became visible hours late");
}

fn of_type<'a>(parsed: &'a [(&str, Value)], t: &'a str) -> impl Iterator<Item = &'a Value> {
    parsed.iter().filter(move |(d, _)| *d == t).map(|(_, v)| v)
}

#[tokio::test]
async fn fake_export_late_data_appears_when_the_clock_moves() {
    let api = Api::small(11).await;
    let (day0, day1) = (at("2024-01-01 00:00:00"), at("2024-01-02 00:00:00"));
    let event_types: Vec<String> = data_types().into_iter().filter(|t| t != "user").collect();
    let total = |api: &Api| -> u64 {
        event_types
            .iter()
            .map(|t| api.fake.truth_counts(t, day0, day1).values().sum::<u64>())
            .sum()
    };

    api.fake.set_now(day1 + TimeDelta::minutes(30));
    let early_total = total(&api);
    let mut early = BTreeMap::new();
    for t in &event_types {
        let lines = api.window(t, day0, day1).await.lines();
        assert_eq!(lines, api.fake.truth_lines(t, day0, day1), "{t}");
        early.insert(t.clone(), lines);
    }
    api.fake.set_now(day1 + TimeDelta::days(1));
    assert!(total(&api) > early_total, "late events became visible");
    let mut grown = 0;
    for t in &event_types {
        let later = api.window(t, day0, day1).await.lines();
        let before: BTreeSet<&String> = early[t].iter().collect();
        assert!(before.iter().all(|l| later.contains(l)), "{t} lost lines");
        for line in later.iter().filter(|l| !before.contains(l)) {
            let t0 = cursor(&parse(line), t);
            assert!(day0 <= t0 && t0 < day1);
            grown += 1;
        }
    }
    assert!(grown > 0);

    api.fake.set_now(at("2024-01-01 12:00:00"));
    let users_early: BTreeMap<String, DateTime<Utc>> = api
        .all("user")
        .await
        .lines()
        .iter()
        .map(|l| {
            let v = parse(l);
            (v["email"].as_str().unwrap().to_string(), cursor(&v, "user"))
        })
        .collect();
    assert!(
        users_early
            .values()
            .all(|t| *t <= at("2024-01-01 12:00:00"))
    );
    api.fake.set_now(at("2024-01-10 00:00:00"));
    let users_later: BTreeMap<String, DateTime<Utc>> = api
        .all("user")
        .await
        .lines()
        .iter()
        .map(|l| {
            let v = parse(l);
            (v["email"].as_str().unwrap().to_string(), cursor(&v, "user"))
        })
        .collect();
    assert_eq!(users_later.len(), api.fake.config().users as usize);
    assert!(users_early.len() < users_later.len(), "users sign up later");
    let updated = users_early
        .iter()
        .filter(|(email, t)| users_later[*email] > **t)
        .count();
    assert!(updated > 0, "profiles change over time");
    assert!(
        users_early
            .iter()
            .all(|(email, t)| users_later[email] >= *t)
    );
}

async fn statuses(api: &Api, n: usize) -> Vec<u16> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(api.get("export/jobs", &[]).await.status.as_u16());
    }
    out
}

#[tokio::test]
async fn fake_export_rate_limit_answers_429_until_the_window_passes() {
    for retry_after in [false, true] {
        let mut cfg = FakeConfig::small(12);
        cfg.faults.export_rate = Some((2, Duration::from_millis(1000)));
        cfg.faults.retry_after = retry_after;
        let api = Api::start(cfg).await;
        let params = [("dataTypeName", "smsSend"), ("range", "Today")];
        assert_eq!(api.export(&params).await.status, StatusCode::OK);
        assert_eq!(api.export(&params).await.status, StatusCode::OK);
        let limited = api.export(&params).await;
        assert_eq!(limited.status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(
            limited.json(),
            json!({
                "msg": "Exceeded rate limit for endpoint: /api/export/data.json, project: 1",
                "code": "RateLimitExceeded",
                "params": null,
            })
        );
        match limited.headers.get(RETRY_AFTER) {
            Some(v) => {
                assert!(retry_after);
                assert_eq!(v.to_str().unwrap(), "1");
            }
            None => assert!(!retry_after),
        }
        assert_eq!(api.fake.rate_limited(), 1);
        assert_eq!(
            api.get("export/jobs", &[]).await.status,
            StatusCode::OK,
            "other endpoints are not limited"
        );
        tokio::time::sleep(Duration::from_millis(1050)).await;
        assert_eq!(api.export(&params).await.status, StatusCode::OK);
        assert_eq!(api.fake.export_requests(), 4);
    }
}

/// Reads a body as a stream: the bytes that arrived and whether it ended in an error.
async fn read_stream(api: &Api, params: &[(&str, &str)]) -> (Vec<u8>, bool) {
    let url = api.url("export/data.json", params);
    let response = api
        .http
        .get(url)
        .header("Api-Key", &api.fake.config().api_key)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let mut stream = response.bytes_stream();
    let mut got = Vec::new();
    while let Some(chunk) = stream.next().await {
        match chunk {
            Ok(bytes) => got.extend_from_slice(&bytes),
            Err(_) => return (got, true),
        }
    }
    (got, false)
}

#[tokio::test]
async fn fake_export_cut_off_aborts_the_first_bodies_after_n_bytes() {
    let mut cfg = FakeConfig::small(13);
    cfg.faults.cut_off = Some(CutOff {
        data_type: Some("emailSend".to_string()),
        after_bytes: 100_000,
        first_requests: 2,
    });
    let api = Api::start(cfg).await;
    let all = (DateTime::<Utc>::MIN_UTC, DateTime::<Utc>::MAX_UTC);
    let truth = api.fake.truth_body("emailSend", all.0, all.1);
    assert!(truth.len() > 200_000);
    let params = [("dataTypeName", "emailSend"), ("range", "All")];
    let other = api.all("emailOpen").await;
    assert_eq!(other.body, api.fake.truth_body("emailOpen", all.0, all.1));
    for _ in 0..2 {
        let (got, failed) = read_stream(&api, &params).await;
        assert!(failed, "the body ends in an error, not a clean EOF");
        assert_eq!(got.len(), 100_000);
        assert_eq!(got, truth[..100_000]);
    }
    let (got, failed) = read_stream(&api, &params).await;
    assert!(!failed);
    assert_eq!(got, truth);

    let mut cfg = FakeConfig::small(13);
    cfg.faults.cut_off = Some(CutOff {
        data_type: None,
        after_bytes: 10,
        first_requests: 1,
    });
    let api = Api::start(cfg).await;
    let (got, failed) = read_stream(&api, &[("dataTypeName", "pushOpen"), ("range", "All")]).await;
    assert!(failed);
    assert_eq!(got.len(), 10);
    assert!(!read_stream(&api, &params).await.1);
}

#[tokio::test]
async fn fake_export_clean_cut_off_ends_the_first_bodies_properly_inside_a_line() {
    let all = (DateTime::<Utc>::MIN_UTC, DateTime::<Utc>::MAX_UTC);
    let params = [("dataTypeName", "emailSend"), ("range", "All")];
    let truth = Api::small(13)
        .await
        .fake
        .truth_body("emailSend", all.0, all.1);
    let first_line_end = truth.iter().position(|&c| c == b'\n').unwrap() + 1;
    for (after_bytes, sent) in [(5_000, 5_000), (first_line_end, first_line_end + 1)] {
        let mut cfg = FakeConfig::small(13);
        cfg.faults.clean_cut_off = Some(CutOff {
            data_type: Some("emailSend".to_string()),
            after_bytes,
            first_requests: 1,
        });
        let api = Api::start(cfg).await;
        let (got, failed) = read_stream(&api, &params).await;
        assert!(!failed, "the body ends properly");
        assert_eq!(got, truth[..sent]);
        assert_ne!(got.last(), Some(&b'\n'), "it ends inside a line");
        assert_eq!(read_stream(&api, &params).await, (truth.clone(), false));
    }
}

#[tokio::test]
async fn fake_export_byte_order_mark_starts_every_body() {
    let mut cfg = FakeConfig::small(13);
    cfg.faults.byte_order_mark = true;
    let api = Api::start(cfg).await;
    let all = (DateTime::<Utc>::MIN_UTC, DateTime::<Utc>::MAX_UTC);
    let truth = api.fake.truth_body("emailSend", all.0, all.1);
    let (got, _) = read_stream(&api, &[("dataTypeName", "emailSend"), ("range", "All")]).await;
    assert_eq!(got, [b"\xEF\xBB\xBF".as_slice(), &truth].concat());
}

#[tokio::test]
async fn fake_export_random_500s_are_seeded() {
    let faulty = |seed: u64| {
        let mut cfg = FakeConfig::small(14);
        cfg.faults.random_500 = 0.3;
        cfg.faults.random_500_seed = seed;
        cfg
    };
    let api = Api::start(faulty(42)).await;
    let first = statuses(&api, 200).await;
    let failures = first.iter().filter(|s| **s == 500).count();
    assert!((30..=90).contains(&failures), "{failures} of 200 failed");
    assert!(first.iter().all(|s| *s == 500 || *s == 200));
    let again = statuses(&Api::start(faulty(42)).await, 200).await;
    assert_eq!(first, again, "the same seed fails the same requests");
    let other = statuses(&Api::start(faulty(43)).await, 200).await;
    assert_ne!(first, other);

    let reply = loop {
        let reply = api.get("export/jobs", &[]).await;
        if reply.status == StatusCode::INTERNAL_SERVER_ERROR {
            break reply;
        }
    };
    assert_eq!(
        reply.json(),
        json!({
            "msg": "Something went wrong. Please try again later",
            "code": "GenericError",
            "params": null,
        })
    );
    assert_eq!(statuses(&Api::small(14).await, 50).await, vec![200; 50]);
}

#[tokio::test]
async fn fake_export_latency_delays_every_response() {
    let mut cfg = FakeConfig::small(15);
    cfg.faults.latency = Some(Duration::from_millis(300));
    let api = Api::start(cfg).await;
    let started = Instant::now();
    let reply = api.get("export/jobs", &[]).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert!(started.elapsed() >= Duration::from_millis(300));
    let started = Instant::now();
    let missing_key = api.send(api.http.get(api.url("export/jobs", &[]))).await;
    assert_eq!(missing_key.status, StatusCode::UNAUTHORIZED);
    assert!(started.elapsed() >= Duration::from_millis(300));

    let quick = Api::small(15).await;
    let started = Instant::now();
    quick.get("export/jobs", &[]).await;
    assert!(started.elapsed() < Duration::from_millis(300));
}

#[tokio::test]
async fn fake_export_rejected_spelling_gets_400() {
    let mut cfg = FakeConfig::small(16);
    cfg.faults.rejected_data_types = vec!["emailUnSubscribe".to_string()];
    let api = Api::start(cfg).await;
    let reply = api
        .export(&[("dataTypeName", "emailUnSubscribe"), ("range", "All")])
        .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        reply.json(),
        json!({"msg": "Invalid dataTypeName emailUnSubscribe", "code": "BadParams", "params": null})
    );
    let other = api.all("emailUnsubscribe").await;
    assert_eq!(other.lines(), api.truth_all("emailUnSubscribe"));
    assert!(!other.lines().is_empty());
}

#[tokio::test]
async fn fake_export_user_events_match_the_exports() {
    let api = Api::small(17).await;
    let seed = api.fake.config().seed;
    let users = api.fake.config().users;
    let (email, user_id) = (0..users)
        .filter(|i| people::email(seed, *i).contains('+'))
        .find_map(|i| {
            let email = people::email(seed, i);
            let events = api.fake.truth_user_events(&email, true);
            let custom = events
                .iter()
                .any(|l| l.contains(r#""_type":"customEvent""#));
            let id = people::user_id(seed, i)?;
            (custom && events.len() >= 5).then_some((email, id))
        })
        .expect("a user with a + in the email, a userId and custom events");

    let reply = api
        .get(
            "export/userEvents",
            &[("email", &email), ("includeCustomEvents", "true")],
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.headers[CONTENT_TYPE], "application/x-json-stream");
    let lines = reply.lines();
    assert_eq!(lines, api.fake.truth_user_events(&email, true));
    let by_id = api
        .get(
            "export/userEvents",
            &[("userId", &user_id), ("includeCustomEvents", "true")],
        )
        .await;
    assert_eq!(by_id.lines(), lines);

    let mut exports: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for line in &lines {
        let mut v = parse(line);
        let data_type = v["_type"].as_str().expect("a _type").to_string();
        assert_eq!(v["email"], email.as_str());
        v.as_object_mut().unwrap().remove("_type");
        let export = exports
            .entry(data_type.clone())
            .or_insert_with(|| api.truth_all(&data_type).iter().map(|l| parse(l)).collect());
        assert!(
            export.contains(&v),
            "{data_type} line not in data.json: {v}"
        );
    }
    assert!(exports.contains_key("customEvent"));
    assert!(exports.len() >= 3, "several event types");

    let without = api
        .get(
            "export/userEvents",
            &[("email", &email), ("includeCustomEvents", "false")],
        )
        .await
        .lines();
    assert_eq!(without, api.fake.truth_user_events(&email, false));
    assert!(
        without
            .iter()
            .all(|l| !l.contains(r#""_type":"customEvent""#))
    );
    let default = api.get("export/userEvents", &[("email", &email)]).await;
    assert_eq!(default.lines(), without);
    assert!(without.len() < lines.len());

    let neither = api.get("export/userEvents", &[]).await;
    assert_eq!(neither.status, StatusCode::BAD_REQUEST);
    assert_eq!(neither.json()["code"], "BadParams");
    let unknown = api
        .get("export/userEvents", &[("email", "nobody@example.com")])
        .await;
    assert_eq!(unknown.status, StatusCode::OK);
    assert!(unknown.body.is_empty());
}

async fn poll(api: &Api, job: i64, start_after: Option<&str>) -> Value {
    let path = format!("export/{job}/files");
    let params: Vec<(&str, &str)> = start_after.map(|s| ("startAfter", s)).into_iter().collect();
    let reply = api.get(&path, &params).await;
    assert_eq!(reply.status, StatusCode::OK);
    let body = reply.json();
    assert_eq!(body["jobId"], job);
    assert_eq!(body["exportTruncated"], false);
    body
}

fn file_names(status: &Value) -> Vec<String> {
    status["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["file"].as_str().unwrap().to_string())
        .collect()
}

async fn start_job(api: &Api, body: Value) -> i64 {
    let reply = api.post_json("export/start", &body).await;
    assert_eq!(
        reply.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    reply.json()["jobId"].as_i64().expect("a jobId")
}

#[tokio::test]
async fn fake_export_jobs_run_end_to_end() {
    let mut cfg = FakeConfig::small(18);
    cfg.job_file_bytes = 4 * 1024;
    cfg.jobs.queue_time = Duration::from_secs(600);
    cfg.jobs.run_time = Duration::from_secs(1200);
    let api = Api::start(cfg).await;
    let (day0, day2) = (at("2024-01-01 00:00:00"), at("2024-01-03 00:00:00"));
    let started_at = at("2024-01-02 12:00:00");
    api.fake.set_now(started_at);
    let truth = api.fake.truth_lines("emailSend", day0, day2);
    let job = start_job(
        &api,
        json!({
            "dataTypeName": "emailSend",
            "outputFormat": "application/x-json-stream",
            "startDateTime": "2024-01-01 00:00:00",
            "endDateTime": "2024-01-03 00:00:00",
        }),
    )
    .await;
    let later = started_at + TimeDelta::days(1);
    api.fake.set_now(later);
    assert!(api.fake.truth_lines("emailSend", day0, day2).len() > truth.len());

    let listed = api.get("export/jobs", &[]).await.json();
    let model = &listed["jobs"][0];
    assert_eq!(model["id"], job);
    assert_eq!(model["dataTypeName"], "emailSend");
    assert_eq!(model["jobState"], "Enqueued");
    assert_eq!(model["bytesExported"], 0);
    assert_eq!(model["scheduledStartTime"], "2024-01-02T12:00:00.000+00:00");
    assert!(model.get("endTime").is_none());

    let first = poll(&api, job, None).await;
    assert_eq!(first["jobState"], "Enqueued");
    assert!(file_names(&first).is_empty());
    api.fake.advance_job_clock(Duration::from_secs(1200));
    let running = poll(&api, job, None).await;
    assert_eq!(running["jobState"], "Running");
    let while_running = file_names(&running);
    assert!(!while_running.is_empty());

    api.fake.advance_job_clock(Duration::from_secs(600));
    let mut names: Vec<String> = Vec::new();
    let mut urls: Vec<String> = Vec::new();
    loop {
        let page = poll(&api, job, names.last().map(String::as_str)).await;
        assert_eq!(page["jobState"], "Completed");
        let files = page["files"].as_array().unwrap();
        assert!(files.len() <= 10);
        if files.is_empty() {
            break;
        }
        for f in files {
            names.push(f["file"].as_str().unwrap().to_string());
            urls.push(f["url"].as_str().unwrap().to_string());
        }
    }
    assert!(names.len() > 10, "{} files", names.len());
    assert!(names.windows(2).all(|w| w[0] < w[1]));
    assert_eq!(names[..while_running.len()], while_running[..]);
    assert!(while_running.len() < names.len());
    assert!(
        names
            .iter()
            .all(|n| n.starts_with("file-") && n.ends_with(".json"))
    );

    let mut lines = Vec::new();
    let mut bytes = 0;
    for url in &urls {
        assert!(url.starts_with(&format!("http://{}/", api.fake.addr())));
        let reply = api.send(api.http.get(url)).await;
        assert_eq!(reply.status, StatusCode::OK, "{url}");
        assert!(reply.body.ends_with(b"\n"));
        let file_lines = reply.lines();
        assert!(reply.body.len() <= 4 * 1024 || file_lines.len() == 1);
        bytes += reply.body.len();
        lines.extend(file_lines);
    }
    assert_eq!(lines, truth, "the files hold the window as of the start");

    let listed = api.get("export/jobs", &[]).await.json();
    let model = &listed["jobs"][0];
    assert_eq!(model["jobState"], "Completed");
    assert_eq!(model["bytesExported"], bytes as u64);
    assert!(model["endTime"].as_str().unwrap().ends_with("+00:00"));

    let tampered = urls[0].replace("signature=", "signature=0");
    assert_eq!(
        api.send(api.http.get(tampered)).await.status,
        StatusCode::FORBIDDEN
    );
    api.fake.advance_job_clock(Duration::from_secs(40 * 60));
    assert_eq!(
        api.send(api.http.get(&urls[0])).await.status,
        StatusCode::FORBIDDEN
    );

    let other = start_job(
        &api,
        json!({
            "dataTypeName": "user",
            "outputFormat": "application/x-json-stream",
            "onlyFields": "email,profileUpdatedAt",
        }),
    )
    .await;
    assert_ne!(other, job);
    assert_eq!(poll(&api, other, None).await["jobState"], "Enqueued");
    let cancelled = api.delete(&format!("export/{other}")).await;
    assert_eq!(cancelled.status, StatusCode::OK);
    assert_eq!(cancelled.json()["code"], "Success");
    let after = poll(&api, other, None).await;
    assert_eq!(after["jobState"], "Failed");
    assert!(file_names(&after).is_empty());
    let again = api.delete(&format!("export/{other}")).await;
    assert_eq!(again.status, StatusCode::BAD_REQUEST);
    let done = api.delete(&format!("export/{job}")).await;
    assert_eq!(done.status, StatusCode::BAD_REQUEST);

    let failed = api
        .get("export/jobs", &[("jobState", "Failed")])
        .await
        .json();
    let failed = failed["jobs"].as_array().unwrap();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0]["id"], other);
    assert_eq!(failed[0]["dataTypeName"], "user");
    assert!(failed[0]["endTime"].is_string());
    let all = api.get("export/jobs", &[]).await.json();
    assert_eq!(all["jobs"].as_array().unwrap().len(), 2);

    let unknown = api.get("export/999999/files", &[]).await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    assert_eq!(unknown.json()["code"], "NotFound");
    assert_eq!(
        api.delete("export/999999").await.status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn fake_export_jobs_reject_bad_requests() {
    let api = Api::small(19).await;
    let csv = api
        .post_json(
            "export/start",
            &json!({"dataTypeName": "emailSend", "outputFormat": "text/csv"}),
        )
        .await;
    assert_eq!(csv.status, StatusCode::BAD_REQUEST);
    assert_eq!(csv.json()["code"], "BadParams");
    let unknown_type = api
        .post_json(
            "export/start",
            &json!({"dataTypeName": "nope", "outputFormat": "application/x-json-stream"}),
        )
        .await;
    assert_eq!(unknown_type.json()["msg"], "Invalid dataTypeName nope");
    let missing = api
        .post_json("export/start", &json!({"dataTypeName": "emailSend"}))
        .await;
    assert_eq!(missing.status, StatusCode::BAD_REQUEST);
    assert_eq!(missing.json()["code"], "BadJsonBody");
    let bad_date = api
        .post_json(
            "export/start",
            &json!({
                "dataTypeName": "emailSend",
                "outputFormat": "application/x-json-stream",
                "startDateTime": "yesterday",
            }),
        )
        .await;
    assert_eq!(bad_date.json()["code"], "BadParams");
    assert_eq!(
        api.get("export/jobs", &[]).await.json(),
        json!({"jobs": []})
    );
}

#[tokio::test]
async fn fake_export_shuts_down() {
    let api = Api::small(20).await;
    let url = api.url("export/jobs", &[]);
    assert_eq!(api.get_url(&url).await.status, StatusCode::OK);
    let Api { fake, http } = api;
    fake.shutdown().await.expect("a clean shutdown");
    assert!(http.get(&url).send().await.is_err());
}

/// Generation speed, in release: `cargo test --release --test it fake_export_generation_speed
/// -- --ignored --nocapture`.
#[tokio::test]
#[ignore]
async fn fake_export_generation_speed() {
    let mut cfg = FakeConfig::small(21);
    cfg.events_per_day = 1_000_000;
    cfg.days = 1;
    cfg.users = 100_000;
    let api = Api::start(cfg).await;
    let (start, end) = (at("2024-01-01 00:00:00"), at("2024-01-02 00:00:00"));
    let expected = api.fake.truth_counts("emailSend", start, end)[&start.date_naive()];
    let started = Instant::now();
    let mut sink = std::io::sink();
    let bytes = api
        .fake
        .write_body("emailSend", start, end, &mut sink)
        .unwrap();
    let elapsed = started.elapsed().as_secs_f64();
    let rate = expected as f64 / elapsed;
    println!(
        "generated {expected} emailSend lines ({bytes} bytes) in {elapsed:.2} s: {rate:.0} lines/s, {:.0} MB/s",
        bytes as f64 / elapsed / 1e6
    );

    let url = api.url(
        "export/data.json",
        &[
            ("dataTypeName", "emailSend"),
            ("startDateTime", &spaced(start)),
            ("endDateTime", &spaced(end)),
        ],
    );
    let started = Instant::now();
    let response = api
        .http
        .get(url)
        .header("Api-Key", &api.fake.config().api_key)
        .send()
        .await
        .unwrap();
    let mut stream = response.bytes_stream();
    let (mut received, mut newlines) = (0usize, 0usize);
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.unwrap();
        received += chunk.len();
        newlines += chunk.iter().filter(|b| **b == b'\n').count();
    }
    let elapsed = started.elapsed().as_secs_f64();
    println!(
        "over HTTP: {received} bytes, {newlines} newlines in {elapsed:.2} s: {:.0} lines/s",
        newlines as f64 / elapsed
    );
    assert_eq!(received as u64, bytes);
    if !cfg!(debug_assertions) {
        assert!(rate >= 500_000.0, "{rate:.0} lines/s");
    }
}
