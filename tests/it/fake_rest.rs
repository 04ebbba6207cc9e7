//! Tests of the fake API's list-style endpoints: each response against the fake's ground
//! truth and the spec's shapes, pagination, the quirks (text bodies, exclusive template
//! start, CSV metrics), the failing-list fault and determinism.

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use chrono::{DateTime, TimeDelta, Utc};
use iterable_lake::fake::{FakeConfig, FakeIterable};
use reqwest::StatusCode;
use reqwest::header::{CONTENT_TYPE, HeaderMap};
use serde_json::Value;

/// A running fake and a client that sends its key.
struct Api {
    fake: FakeIterable,
    http: reqwest::Client,
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

    /// GETs `path_and_query` (relative to `/api/`, or an absolute URL from a response).
    async fn get(&self, path_and_query: &str) -> (StatusCode, HeaderMap, Bytes) {
        let url = if path_and_query.starts_with("http") {
            path_and_query.to_string()
        } else {
            format!("{}{path_and_query}", self.fake.base_url())
        };
        let response = self
            .http
            .get(&url)
            .header("Api-Key", &self.fake.config().api_key)
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {url}: {e}"));
        let status = response.status();
        let headers = response.headers().clone();
        let body = response.bytes().await.expect("the body arrives whole");
        (status, headers, body)
    }

    /// GETs a body with this server's address (in page URLs) replaced by `HOST`, so that two
    /// servers' bodies compare.
    async fn get_anywhere(&self, path_and_query: &str) -> (StatusCode, Bytes) {
        let (status, _, body) = self.get(path_and_query).await;
        let addr = self.fake.addr().to_string();
        let body = String::from_utf8(body.to_vec()).expect("UTF-8");
        (status, Bytes::from(body.replace(&addr, "HOST")))
    }

    /// GETs a JSON body that must come with 200.
    async fn json(&self, path_and_query: &str) -> Value {
        let (status, headers, body) = self.get(path_and_query).await;
        assert_eq!(
            status,
            StatusCode::OK,
            "{path_and_query}: {}",
            String::from_utf8_lossy(&body)
        );
        let kind = headers[CONTENT_TYPE].to_str().unwrap();
        assert!(kind.starts_with("application/json"), "{kind}");
        serde_json::from_slice(&body).expect("a JSON body")
    }

    /// GETs an error: its status and its Iterable `code`, checking the envelope.
    async fn error(&self, path_and_query: &str) -> (StatusCode, String) {
        let (status, _, body) = self.get(path_and_query).await;
        let v: Value = serde_json::from_slice(&body)
            .unwrap_or_else(|_| panic!("{path_and_query}: not JSON: {body:?}"));
        assert!(v["msg"].is_string(), "{v}");
        assert!(v.get("params").is_some(), "{v}");
        (status, v["code"].as_str().unwrap_or_default().to_string())
    }

    async fn text(&self, path_and_query: &str) -> String {
        let (status, headers, body) = self.get(path_and_query).await;
        assert_eq!(status, StatusCode::OK, "{path_and_query}");
        assert!(
            headers[CONTENT_TYPE]
                .to_str()
                .unwrap()
                .starts_with("text/plain")
        );
        String::from_utf8(body.to_vec()).expect("UTF-8 text")
    }
}

fn ids(values: &[Value], field: &str) -> Vec<i64> {
    values.iter().map(|v| v[field].as_i64().unwrap()).collect()
}

fn array(v: &Value, field: &str) -> Vec<Value> {
    v[field]
        .as_array()
        .unwrap_or_else(|| panic!("no array {field} in {v}"))
        .clone()
}

#[tokio::test]
async fn lists_match_truth_and_the_spec_shape() {
    let api = Api::small(11).await;
    let lists = array(&api.json("lists").await, "lists");
    assert_eq!(lists, api.fake.truth_lists());
    assert!((6..=10).contains(&lists.len()), "{}", lists.len());
    let mut types = BTreeSet::new();
    for list in &lists {
        assert!(list["id"].is_i64() && list["name"].is_string(), "{list}");
        assert!(
            list["createdAt"].as_i64().unwrap() > 1_500_000_000_000,
            "{list}"
        );
        let kind = list["listType"].as_str().unwrap();
        assert!(
            ["Standard", "Dynamic", "Suppression", "Internal"].contains(&kind),
            "{kind}"
        );
        types.insert(kind);
        assert_eq!(
            list.get("isGlobalSuppressionEnabled").is_some(),
            kind == "Suppression",
            "{list}"
        );
    }
    assert_eq!(types.len(), 4, "every listType appears");
    assert!(
        lists
            .iter()
            .any(|l| !l["name"].as_str().unwrap().is_ascii())
    );
    assert!(lists.iter().any(|l| l.get("description").is_none()));
    let mut unique = ids(&lists, "id");
    unique.dedup();
    assert_eq!(unique.len(), lists.len());
}

#[tokio::test]
async fn list_members_come_as_text_lines_with_blank_lines_and_a_missing_final_newline() {
    let api = Api::small(12).await;
    let users = api.fake.config().users as usize;
    let mut bodies = Vec::new();
    for list in api.fake.truth_lists() {
        let id = list["id"].as_i64().unwrap();
        let body = api.text(&format!("lists/getUsers?listId={id}")).await;
        let members: Vec<String> = body
            .lines()
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect();
        assert_eq!(members, api.fake.truth_list_members(id, false), "list {id}");
        assert!(members.iter().all(|m| m.contains('@')), "list {id}: emails");
        bodies.push((id, body, members));
    }
    let sizes: Vec<usize> = bodies.iter().map(|(_, _, m)| m.len()).collect();
    assert!(
        sizes.contains(&users),
        "one list holds every user: {sizes:?}"
    );
    assert!(sizes.contains(&0), "one list is empty: {sizes:?}");
    let (_, empty, _) = bodies.iter().find(|(_, _, m)| m.is_empty()).unwrap();
    assert_eq!(empty, "");
    assert!(
        bodies.iter().any(|(_, b, _)| b.contains("\n\n")),
        "a blank line"
    );
    assert!(
        bodies
            .iter()
            .any(|(_, b, _)| !b.is_empty() && !b.ends_with('\n')),
        "a body without a final newline"
    );
    assert!(
        bodies.iter().any(|(_, b, _)| b.ends_with('\n')),
        "a body with one"
    );
    let membership: Vec<BTreeSet<&String>> = bodies
        .iter()
        .filter(|(_, _, m)| m.len() < users)
        .map(|(_, _, m)| m.iter().collect())
        .collect();
    let shared = membership
        .iter()
        .enumerate()
        .any(|(i, a)| membership[i + 1..].iter().any(|b| !a.is_disjoint(b)));
    assert!(shared, "a user is in several of the smaller lists");
    assert!(
        bodies
            .iter()
            .any(|(_, _, m)| m.iter().any(|e| !e.is_ascii())),
        "unicode emails"
    );
}

#[tokio::test]
async fn list_members_prefer_user_ids_when_asked_and_stream_in_chunks() {
    let api = Api::small(13).await;
    let all = api
        .fake
        .truth_lists()
        .into_iter()
        .find(|l| l["name"] == "All Subscribers")
        .unwrap();
    let id = all["id"].as_i64().unwrap();
    let (status, headers, body) = api
        .get(&format!("lists/getUsers?listId={id}&preferUserId=true"))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        headers.get("content-length").is_none(),
        "the body is streamed, not sized up front"
    );
    let body = String::from_utf8(body.to_vec()).unwrap();
    let members: Vec<&str> = body.lines().filter(|l| !l.is_empty()).collect();
    assert_eq!(members, api.fake.truth_list_members(id, true));
    assert!(members.iter().any(|m| m.starts_with("uid-")), "userIds");
    assert!(
        members.iter().any(|m| m.contains('@')),
        "emails of users without one"
    );
    let emails = api.fake.truth_list_members(id, false);
    assert_eq!(members.len(), emails.len());
    assert_ne!(members, emails);
    let explicit_false = api
        .text(&format!("lists/getUsers?listId={id}&preferUserId=false"))
        .await;
    let members: Vec<&str> = explicit_false.lines().filter(|l| !l.is_empty()).collect();
    assert_eq!(members, emails);
}

#[tokio::test]
async fn big_lists_stream_in_many_chunks() {
    let mut cfg = FakeConfig::small(14);
    cfg.users = 60_000;
    let api = Api::start(cfg).await;
    let all = &api.fake.truth_lists()[0];
    assert_eq!(all["name"], "All Subscribers");
    let url = format!("{}lists/getUsers?listId={}", api.fake.base_url(), all["id"]);
    let mut response = api
        .http
        .get(&url)
        .header("Api-Key", &api.fake.config().api_key)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let (mut chunks, mut lines) = (0, 0);
    while let Some(chunk) = response.chunk().await.unwrap() {
        chunks += 1;
        lines += chunk.iter().filter(|&&b| b == b'\n').count();
    }
    assert!(chunks > 5, "{chunks} chunks");
    assert!(lines >= 60_000 - 1, "{lines} newlines");
}

#[tokio::test]
async fn get_users_rejects_bad_parameters() {
    let api = Api::small(15).await;
    let unknown = api
        .fake
        .truth_lists()
        .iter()
        .map(|l| l["id"].as_i64().unwrap())
        .max()
        .unwrap()
        + 1;
    for path in [
        format!("lists/getUsers?listId={unknown}"),
        "lists/getUsers".to_string(),
        "lists/getUsers?listId=abc".to_string(),
        format!(
            "lists/getUsers?listId={}&preferUserId=maybe",
            api.fake.truth_lists()[0]["id"]
        ),
    ] {
        assert_eq!(
            api.error(&path).await,
            (StatusCode::BAD_REQUEST, "BadParams".to_string()),
            "{path}"
        );
    }
}

#[tokio::test]
async fn a_failing_list_answers_500_every_time_while_the_others_answer() {
    let probe = Api::small(16).await;
    let lists = ids(&probe.fake.truth_lists(), "id");
    let failing = lists[1];
    let mut cfg = FakeConfig::small(16);
    cfg.faults.failing_lists = vec![failing];
    let api = Api::start(cfg).await;
    for _ in 0..3 {
        let (status, _, body) = api.get(&format!("lists/getUsers?listId={failing}")).await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        let body: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            body,
            serde_json::json!({
                "msg": "An error occurred. Please try again later",
                "code": "GenericError",
                "params": null
            })
        );
    }
    for &id in lists.iter().filter(|&&id| id != failing) {
        let body = api.text(&format!("lists/getUsers?listId={id}")).await;
        assert_eq!(
            body.lines().filter(|l| !l.is_empty()).count(),
            api.fake.truth_list_members(id, false).len()
        );
    }
}

/// Follows `nextPageUrl` from `first`; returns the pages.
async fn walk_pages(api: &Api, first: &str) -> Vec<Value> {
    let mut pages = vec![api.json(first).await];
    while let Some(next) = pages.last().unwrap()["nextPageUrl"].as_str() {
        let next = next.to_string();
        pages.push(api.json(&next).await);
        assert!(pages.len() < 100, "pagination ends");
    }
    pages
}

#[tokio::test]
async fn campaign_pages_concatenate_to_the_truth() {
    let api = Api::small(21).await;
    let truth = api.fake.truth_campaigns();
    assert!((2001..=3000).contains(&truth.len()), "{}", truth.len());
    let pages = walk_pages(&api, "campaigns?page=1&pageSize=1000").await;
    assert_eq!(pages.len(), 3);
    let all: Vec<Value> = pages.iter().flat_map(|p| array(p, "campaigns")).collect();
    assert_eq!(all, truth);
    let base = api.fake.base_url();
    for (k, page) in pages.iter().enumerate() {
        assert_eq!(page["totalCampaignsCount"], truth.len());
        match page.get("nextPageUrl") {
            Some(next) => assert_eq!(
                next,
                &Value::from(format!("{base}campaigns?page={}&pageSize=1000", k + 2))
            ),
            None => assert_eq!(k, 2, "only the last page has no nextPageUrl"),
        }
        assert_eq!(page.get("previousPageUrl").is_some(), k > 0);
    }
    let small = walk_pages(&api, "campaigns?pageSize=500&sort=-id").await;
    let all: Vec<Value> = small.iter().flat_map(|p| array(p, "campaigns")).collect();
    let mut reversed = truth.clone();
    reversed.reverse();
    assert_eq!(all, reversed);
    assert!(
        small[1]["nextPageUrl"]
            .as_str()
            .unwrap()
            .ends_with("page=3&pageSize=500&sort=-id")
    );
    let default = api.json("campaigns?page=2").await;
    assert_eq!(array(&default, "campaigns"), truth[20..40].to_vec());
    let beyond = api.json("campaigns?page=99&pageSize=1000").await;
    assert!(array(&beyond, "campaigns").is_empty());
    assert!(beyond.get("nextPageUrl").is_none());
}

#[tokio::test]
async fn campaigns_without_paging_come_all_at_once_in_the_spec_shape() {
    let api = Api::small(22).await;
    let body = api.json("campaigns").await;
    assert!(body.get("totalCampaignsCount").is_none());
    assert!(body.get("nextPageUrl").is_none());
    let campaigns = array(&body, "campaigns");
    assert_eq!(campaigns, api.fake.truth_campaigns());
    let required = [
        "id",
        "name",
        "campaignState",
        "type",
        "messageMedium",
        "createdAt",
        "updatedAt",
        "createdByUserId",
        "listIds",
        "suppressionListIds",
        "labels",
        "labelIds",
    ];
    for c in &campaigns {
        for field in required {
            assert!(c.get(field).is_some(), "{field} missing in {c}");
        }
        assert!(c["createdAt"].is_i64() && c["updatedAt"].is_i64(), "{c}");
        assert!(c["createdAt"].as_i64() <= c["updatedAt"].as_i64(), "{c}");
        assert!(["Blast", "Triggered"].contains(&c["type"].as_str().unwrap()));
        assert_eq!(array(c, "labels").len(), array(c, "labelIds").len());
    }
    let has = |f: &str| campaigns.iter().filter(|c| c.get(f).is_some()).count();
    for optional in [
        "startAt",
        "endedAt",
        "templateId",
        "updatedByUserId",
        "sendSize",
        "recurringCampaignId",
        "workflowId",
    ] {
        let n = has(optional);
        assert!(n > 0 && n < campaigns.len(), "{optional} in {n} campaigns");
    }
    let empty = |f: &str| campaigns.iter().filter(|c| array(c, f).is_empty()).count();
    for list in ["listIds", "suppressionListIds", "labelIds"] {
        let n = empty(list);
        assert!(
            n > 0 && n < campaigns.len(),
            "{list} empty in {n} campaigns"
        );
    }
    let states: BTreeSet<&str> = campaigns
        .iter()
        .map(|c| c["campaignState"].as_str().unwrap())
        .collect();
    assert!(states.len() >= 7, "{states:?}");
    let list_ids: BTreeSet<i64> = ids(&api.fake.truth_lists(), "id").into_iter().collect();
    assert!(
        campaigns
            .iter()
            .flat_map(|c| array(c, "listIds"))
            .all(|id| list_ids.contains(&id.as_i64().unwrap())),
        "listIds name existing lists"
    );
}

#[tokio::test]
async fn campaigns_filter_sort_and_reject_bad_paging() {
    let api = Api::small(23).await;
    let truth = api.fake.truth_campaigns();
    let running = walk_pages(
        &api,
        "campaigns?pageSize=1000&campaignState=Running&campaignState=Scheduled",
    )
    .await;
    let running: Vec<Value> = running.iter().flat_map(|p| array(p, "campaigns")).collect();
    let expected: Vec<Value> = truth
        .iter()
        .filter(|c| ["Running", "Scheduled"].contains(&c["campaignState"].as_str().unwrap()))
        .cloned()
        .collect();
    assert!(!expected.is_empty());
    assert_eq!(running, expected);
    let by_update = array(&api.json("campaigns?sort=-updatedAt").await, "campaigns");
    let updated = ids(&by_update, "updatedAt");
    assert!(updated.windows(2).all(|w| w[0] >= w[1]));
    assert_eq!(by_update.len(), truth.len());
    for path in [
        "campaigns?page=0",
        "campaigns?pageSize=0",
        "campaigns?pageSize=1001",
        "campaigns?page=two",
        "campaigns?page=1&pageSize=-5",
        "campaigns?sort=colour",
        "campaigns?campaignState=Sleeping",
    ] {
        assert_eq!(
            api.error(path).await,
            (StatusCode::BAD_REQUEST, "BadParams".to_string()),
            "{path}"
        );
    }
}

#[tokio::test]
async fn campaign_metrics_are_csv_with_one_row_per_known_campaign() {
    let api = Api::small(24).await;
    let campaigns = api.fake.truth_campaigns();
    let mut wanted: Vec<i64> = campaigns
        .iter()
        .step_by(7)
        .take(300)
        .map(|c| c["id"].as_i64().unwrap())
        .collect();
    assert_eq!(wanted.len(), 300);
    let draft = campaigns
        .iter()
        .find(|c| c["campaignState"] == "Draft" && !wanted.contains(&c["id"].as_i64().unwrap()))
        .unwrap();
    wanted.push(draft["id"].as_i64().unwrap());
    let unknown = [1, 2];
    let query: Vec<String> = wanted
        .iter()
        .chain(&unknown)
        .map(|id| format!("campaignId={id}"))
        .collect();
    let path = format!(
        "campaigns/metrics?{}&startDateTime=2023-01-01&endDateTime=2024-01-04T00:00:00Z",
        query.join("&")
    );
    let (status, headers, body) = api.get(&path).await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    assert!(
        headers[CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/csv")
    );
    let mut reader = csv::Reader::from_reader(body.as_ref());
    let header: Vec<String> = reader
        .headers()
        .unwrap()
        .iter()
        .map(str::to_string)
        .collect();
    let rows: Vec<Vec<String>> = reader
        .records()
        .map(|r| r.unwrap().iter().map(str::to_string).collect())
        .collect();
    let (truth_header, truth_rows) = api.fake.truth_campaign_metrics(&wanted);
    assert_eq!(header, truth_header);
    assert_eq!(rows, truth_rows);
    assert_eq!(rows.len(), wanted.len(), "no row for unknown ids");
    let row_ids: Vec<i64> = rows.iter().map(|r| r[0].parse().unwrap()).collect();
    assert_eq!(row_ids, wanted);
    assert_eq!(header[0], "id");
    assert!(header.len() > 30, "{header:?}");
    for name in [
        "Revenue",
        "Total Email Sends",
        "Unique Email Opens",
        "Average Order Value",
    ] {
        assert!(header.iter().any(|h| h == name), "{name}");
    }
    assert!(header.iter().any(|h| h.contains('/')));
    assert!(header.iter().any(|h| h.contains('(')));
    let cells: Vec<&String> = rows.iter().flat_map(|r| &r[1..]).collect();
    assert!(cells.iter().any(|c| c.is_empty()), "empty cells");
    assert!(cells.iter().any(|c| c.parse::<i64>().is_ok()), "integers");
    assert!(
        cells
            .iter()
            .any(|c| c.contains('.') && c.parse::<f64>().is_ok()),
        "floats"
    );
    let draft_row = rows.last().unwrap();
    assert!(
        draft_row[1..].iter().all(String::is_empty),
        "a draft never sent"
    );
    let per_medium: BTreeMap<&str, usize> = campaigns
        .iter()
        .filter(|c| wanted.contains(&c["id"].as_i64().unwrap()))
        .fold(BTreeMap::new(), |mut m, c| {
            *m.entry(c["messageMedium"].as_str().unwrap()).or_default() += 1;
            m
        });
    assert!(per_medium.len() >= 3, "{per_medium:?}");
    let without_window = api
        .get(&format!("campaigns/metrics?{}", query.join("&")))
        .await;
    assert_eq!(
        without_window.2, body,
        "lifetime values, whatever the window"
    );
}

#[tokio::test]
async fn campaign_metrics_reject_bad_parameters() {
    let api = Api::small(25).await;
    let id = api.fake.truth_campaigns()[0]["id"].as_i64().unwrap();
    for path in [
        "campaigns/metrics".to_string(),
        "campaigns/metrics?campaignId=abc".to_string(),
        format!("campaigns/metrics?campaignId={id}&startDateTime=last%20week"),
        format!(
            "campaigns/metrics?campaignId={id}&startDateTime=2024-02-01&endDateTime=2024-01-01"
        ),
    ] {
        assert_eq!(
            api.error(&path).await,
            (StatusCode::BAD_REQUEST, "BadParams".to_string()),
            "{path}"
        );
    }
}

#[tokio::test]
async fn channels_and_message_types_match_truth() {
    let api = Api::small(31).await;
    let channels = array(&api.json("channels").await, "channels");
    assert_eq!(channels, api.fake.truth_channels());
    assert!(!channels.is_empty());
    for c in &channels {
        assert!(c["id"].is_i64() && c["name"].is_string());
        assert!(["Marketing", "Transactional"].contains(&c["channelType"].as_str().unwrap()));
        assert!(["Email", "Push", "SMS"].contains(&c["messageMedium"].as_str().unwrap()));
    }
    let types = array(&api.json("messageTypes").await, "messageTypes");
    assert_eq!(types, api.fake.truth_message_types());
    let channel_ids: BTreeSet<i64> = ids(&channels, "id").into_iter().collect();
    for t in &types {
        assert!(
            channel_ids.contains(&t["channelId"].as_i64().unwrap()),
            "{t}"
        );
        assert!(t["createdAt"].is_i64() && t["updatedAt"].is_i64(), "{t}");
        assert!(["OptIn", "OptOut"].contains(&t["subscriptionPolicy"].as_str().unwrap()));
        if let Some(cap) = t.get("frequencyCap") {
            assert!(cap["days"].is_i64() && cap["messages"].is_i64(), "{t}");
        }
    }
    for optional in ["frequencyCap", "rateLimitPerMinute"] {
        let n = types.iter().filter(|t| t.get(optional).is_some()).count();
        assert!(n > 0 && n < types.len(), "{optional}: {n}");
    }
}

#[tokio::test]
async fn metadata_pages_through_markers_and_serves_every_entry() {
    let api = Api::small(41).await;
    let tables: Vec<String> = array(&api.json("metadata").await, "results")
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(tables, api.fake.truth_metadata_tables());
    let truth = api.fake.truth_metadata();
    let mut served = Vec::new();
    let mut pages_of = BTreeMap::new();
    for table in &tables {
        let mut pages = vec![api.json(&format!("metadata/{table}")).await];
        while let Some(marker) = pages.last().unwrap()["nextMarker"].as_str() {
            let marker = marker.to_string();
            pages.push(
                api.json(&format!("metadata/{table}?nextMarker={marker}"))
                    .await,
            );
        }
        pages_of.insert(table.clone(), pages.len());
        for page in &pages {
            let results = array(page, "results");
            assert!(results.len() <= 50);
            for row in results {
                let key = row["key"].as_str().unwrap();
                let entry = api.json(&format!("metadata/{table}/{key}")).await;
                for field in ["key", "table", "size", "lastModified"] {
                    assert_eq!(row[field], entry[field], "{table}/{key} {field}");
                }
                assert!(entry["value"].is_object());
                assert_eq!(
                    entry["size"].as_u64().unwrap() as usize,
                    serde_json::to_vec(&entry["value"]).unwrap().len()
                );
                served.push(entry);
            }
        }
    }
    assert_eq!(served, truth);
    assert_eq!(pages_of["products"], 3, "{pages_of:?}");
    assert!(pages_of.values().any(|&n| n == 1));
}

#[tokio::test]
async fn metadata_tables_ignore_case_and_keys_do_not() {
    let api = Api::small(42).await;
    let lower = api.json("metadata/storelocations").await;
    let exact = api.json("metadata/StoreLocations").await;
    assert_eq!(lower, exact);
    assert_eq!(array(&lower, "results")[0]["table"], "StoreLocations");
    let upper = api.json("metadata/FEATUREFLAGS/newCheckout").await;
    let capital = api.json("metadata/featureFlags/NewCheckout").await;
    assert_eq!(upper["key"], "newCheckout");
    assert_eq!(capital["key"], "NewCheckout");
    assert_ne!(upper["value"], capital["value"]);
    assert_eq!(
        api.error("metadata/featureFlags/newcheckout").await,
        (StatusCode::NOT_FOUND, "NotFound".to_string())
    );
    assert_eq!(
        api.error("metadata/noSuchTable/key").await,
        (StatusCode::NOT_FOUND, "NotFound".to_string())
    );
    assert!(array(&api.json("metadata/noSuchTable").await, "results").is_empty());
    assert_eq!(
        api.error("metadata/products?nextMarker=zz").await,
        (StatusCode::BAD_REQUEST, "BadParams".to_string())
    );
}

#[tokio::test]
async fn templates_filter_by_type_and_medium_with_epoch_millisecond_times() {
    let api = Api::small(51).await;
    let all = api.fake.truth_templates(None, None);
    let mut combined = 0;
    for kind in ["Base", "Blast", "Triggered", "Workflow"] {
        for medium in ["Email", "Push", "InApp", "SMS"] {
            let body = api
                .json(&format!(
                    "templates?templateType={kind}&messageMedium={medium}"
                ))
                .await;
            let templates = array(&body, "templates");
            assert_eq!(
                templates,
                api.fake.truth_templates(Some(kind), Some(medium)),
                "{kind} {medium}"
            );
            combined += templates.len();
        }
        assert!(
            !api.fake.truth_templates(Some(kind), None).is_empty(),
            "{kind}"
        );
    }
    assert_eq!(
        combined,
        all.len(),
        "every template has one type and medium"
    );
    for t in &all {
        assert!(t["createdAt"].is_i64() && t["updatedAt"].is_i64(), "{t}");
        for field in ["templateId", "name", "creatorUserId", "messageTypeId"] {
            assert!(t.get(field).is_some(), "{field} in {t}");
        }
    }
    let with = |f: &str| all.iter().filter(|t| t.get(f).is_some()).count();
    assert!(with("campaignId") > 0 && with("campaignId") < all.len());
    assert!(with("clientTemplateId") > 0 && with("clientTemplateId") < all.len());
    let pages = walk_pages(&api, "templates?pageSize=1000").await;
    assert!(pages.len() >= 3, "{}", pages.len());
    let paged: Vec<Value> = pages.iter().flat_map(|p| array(p, "templates")).collect();
    assert_eq!(paged, all);
    assert!(pages.iter().all(|p| p["totalTemplatesCount"] == all.len()));
    assert!(pages.last().unwrap().get("nextPageUrl").is_none());
    let email_pages = walk_pages(&api, "templates?messageMedium=Email&page=1&pageSize=300").await;
    let paged: Vec<Value> = email_pages
        .iter()
        .flat_map(|p| array(p, "templates"))
        .collect();
    assert_eq!(paged, api.fake.truth_templates(None, Some("Email")));
    for path in [
        "templates?templateType=None",
        "templates?messageMedium=email",
        "templates?startDateTime=2024-01-01T00:00:00Z",
        "templates?pageSize=5000",
    ] {
        assert_eq!(
            api.error(path).await,
            (StatusCode::BAD_REQUEST, "BadParams".to_string()),
            "{path}"
        );
    }
    let ignored = api.json("templates?templateTypes=Blast").await;
    assert_eq!(
        array(&ignored, "templates").len(),
        all.len(),
        "unknown names are ignored"
    );
}

fn spaced(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S").to_string()
}

#[tokio::test]
async fn templates_start_boundary_is_exclusive() {
    let api = Api::small(52).await;
    let all = api.fake.truth_templates(None, None);
    let on_second = all
        .iter()
        .find(|t| t["createdAt"].as_i64().unwrap() % 1000 == 0)
        .expect("a template created on a whole second");
    let id = on_second["templateId"].clone();
    let at = DateTime::from_timestamp_millis(on_second["createdAt"].as_i64().unwrap()).unwrap();
    let second = TimeDelta::seconds(1);
    let window = |start: DateTime<Utc>, end: DateTime<Utc>| {
        format!(
            "templates?startDateTime={}&endDateTime={}",
            spaced(start),
            spaced(end)
        )
    };
    let contains = |body: &Value| {
        array(body, "templates")
            .iter()
            .any(|t| t["templateId"] == id)
    };
    let exactly_at = api.json(&window(at, at + second)).await;
    assert!(
        !contains(&exactly_at),
        "created at startDateTime: not returned"
    );
    let before = api.json(&window(at - second, at + second)).await;
    assert!(contains(&before));
    let ends_at = api.json(&window(at - second, at)).await;
    assert!(!contains(&ends_at), "endDateTime is exclusive");
    for (start, end) in [
        (at, at + second),
        (at - second, at + second),
        (at - second, at),
    ] {
        let served = array(&api.json(&window(start, end)).await, "templates");
        assert_eq!(
            served,
            api.fake
                .truth_templates_created(None, None, Some(start), Some(end))
        );
    }
    let day = TimeDelta::days(30);
    let zoned = format!(
        "templates?startDateTime={}%20%2B00:00&endDateTime={}",
        spaced(at - day),
        spaced(at + day)
    );
    let served = array(&api.json(&zoned).await, "templates");
    assert!(served.len() > 1 && served.len() < all.len());
    assert_eq!(
        served,
        api.fake
            .truth_templates_created(None, None, Some(at - day), Some(at + day))
    );
}

#[tokio::test]
async fn user_fields_carry_types_and_grow_with_the_clock() {
    let api = Api::small(61).await;
    let fields = api.json("users/getFields").await["fields"].clone();
    let truth: serde_json::Map<String, Value> = api
        .fake
        .truth_user_fields()
        .into_iter()
        .map(|(k, v)| (k, Value::from(v)))
        .collect();
    assert_eq!(fields, Value::Object(truth.clone()));
    for (name, kind) in [
        ("email", "string"),
        ("userId", "string"),
        ("signupDate", "date"),
        ("profileUpdatedAt", "date"),
        ("phoneNumber", "string"),
        ("customScore", "double"),
        ("shoppingCart", "object"),
        ("shoppingCart.total", "double"),
    ] {
        assert_eq!(fields[name], kind, "{name}");
    }
    let kinds: BTreeSet<&str> = truth.values().map(|v| v.as_str().unwrap()).collect();
    let expected: BTreeSet<&str> = ["string", "long", "double", "boolean", "date", "object"].into();
    assert_eq!(kinds, expected);
    let start = api.fake.config().start;
    api.fake.set_now(start + TimeDelta::hours(35));
    let early = api.json("users/getFields").await["fields"].clone();
    assert!(
        early.get("loyaltyTier").is_none(),
        "not before the window's middle"
    );
    api.fake.set_now(start + TimeDelta::hours(36));
    let later = api.json("users/getFields").await["fields"].clone();
    assert_eq!(later["loyaltyTier"], "string");
    assert_eq!(
        later.as_object().unwrap().len(),
        early.as_object().unwrap().len() + 1
    );
    let truth: serde_json::Map<String, Value> = api
        .fake
        .truth_user_fields()
        .into_iter()
        .map(|(k, v)| (k, Value::from(v)))
        .collect();
    assert_eq!(later, Value::Object(truth));
}

#[tokio::test]
async fn the_clock_hides_what_is_not_yet_there() {
    let api = Api::small(62).await;
    let everything = api.fake.truth_campaigns();
    let templates = api.fake.truth_templates(None, None).len();
    let start = api.fake.config().start;
    api.fake.set_now(start);
    let at_start = array(&api.json("campaigns").await, "campaigns");
    assert_eq!(at_start, api.fake.truth_campaigns());
    assert!(at_start.len() < everything.len());
    let cut = start.timestamp_millis();
    assert!(
        at_start
            .iter()
            .all(|c| c["updatedAt"].as_i64().unwrap() <= cut)
    );
    let served = array(&api.json("templates").await, "templates");
    assert_eq!(served, api.fake.truth_templates(None, None));
    assert!(served.len() < templates);
    let flags = array(&api.json("metadata/featureFlags").await, "results");
    assert_eq!(flags.len(), 3, "one flag changes during the window");
}

#[tokio::test]
async fn the_same_seed_gives_the_same_bytes() {
    let a = Api::small(71).await;
    let b = Api::small(71).await;
    let c = Api::small(72).await;
    let all_list = a.fake.truth_lists()[0]["id"].clone();
    let ids: Vec<String> = a
        .fake
        .truth_campaigns()
        .iter()
        .take(50)
        .map(|c| format!("campaignId={}", c["id"]))
        .collect();
    let paths = [
        "lists".to_string(),
        format!("lists/getUsers?listId={all_list}"),
        "campaigns".to_string(),
        "campaigns?page=2&pageSize=100".to_string(),
        format!("campaigns/metrics?{}", ids.join("&")),
        "channels".to_string(),
        "messageTypes".to_string(),
        "metadata".to_string(),
        "metadata/products".to_string(),
        "templates".to_string(),
        "users/getFields".to_string(),
    ];
    let mut differ = 0;
    for path in &paths {
        let (status, first) = a.get_anywhere(path).await;
        assert_eq!(status, StatusCode::OK, "{path}");
        let second = b.get_anywhere(path).await.1;
        assert_eq!(first, second, "{path}: same seed");
        let other = c.get_anywhere(path).await.1;
        if other != first {
            differ += 1;
        }
    }
    assert!(differ >= 7, "another seed changes most answers ({differ})");
    assert_ne!(a.fake.truth_lists(), c.fake.truth_lists());
    assert_ne!(a.fake.truth_campaigns(), c.fake.truth_campaigns());
}
