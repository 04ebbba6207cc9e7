//! `GET /api/campaigns` and `GET /api/campaigns/metrics`.
//!
//! Between 2001 and 3000 campaigns (seeded), so that pages of 1000 take three requests. Ids
//! and `createdAt` rise together; about one in forty campaigns is created during the event
//! window `cfg.start .. cfg.start + cfg.days`, the rest over the two years before. The
//! oldest [`CAMPAIGNS`] have the ids `CAMPAIGN_BASE..` that the export's events name, and are
//! triggered campaigns still running; `workflowId`s fall in the events' `30000..30050`. A
//! campaign is served once the clock reaches its `updatedAt`. Optional fields (`startAt`, `endedAt`,
//! `templateId`, `updatedByUserId`, `sendSize`, `recurringCampaignId`, `workflowId`) are
//! absent where Iterable leaves them out; `listIds`, `suppressionListIds`, `labels` and
//! `labelIds` are always present, often empty.
//!
//! Pagination follows the spec: `page` from 1, `pageSize` 1..=1000 (default 20), anything
//! else 400; `nextPageUrl` and `previousPageUrl` are absolute URLs on the request's `Host`
//! carrying the other parameters; without `page` and `pageSize` every campaign comes back
//! (the deprecated unpaginated mode). `sort` and repeated `campaignState` filters work.
//!
//! Metrics are a CSV with a header of Iterable's metric names and one row per distinct known
//! campaign id, in request order; unknown (or not yet visible) ids get no row. A campaign
//! that never sent has a row with only its id; cells of other media, and rates whose
//! denominator is zero, are empty. Values are lifetime totals: a valid
//! `startDateTime`/`endDateTime` is accepted but does not change them.

use std::collections::HashSet;
use std::sync::Arc;

use axum::extract::{self, OriginalUri, RawQuery};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Json, Response};
use chrono::{DateTime, Datelike, TimeDelta};
use serde::Serialize;

use super::lists::{self, List};
use super::templates::{self, Template};
use super::{ApiError, Dice, Page, Params, Sort, Timeline, now_ms, parse_iso_datetime};
use crate::fake::generate::{CAMPAIGN_BASE, CAMPAIGNS};
use crate::fake::{FakeConfig, FakeIterable, State};

const STATES: &[&str] = &[
    "Draft",
    "Ready",
    "Scheduled",
    "Running",
    "Finished",
    "Starting",
    "Aborted",
    "Recurring",
    "Archived",
];

/// A campaign as `GET /api/campaigns` serves it (`CampaignDetails`).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Campaign {
    pub id: i64,
    pub created_at: i64,
    pub updated_at: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub start_at: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<i64>,
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub template_id: Option<i64>,
    pub message_medium: &'static str,
    pub created_by_user_id: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub updated_by_user_id: Option<&'static str>,
    pub campaign_state: &'static str,
    pub list_ids: Vec<i64>,
    pub suppression_list_ids: Vec<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub send_size: Option<i64>,
    pub labels: Vec<&'static str>,
    pub label_ids: Vec<i64>,
    #[serde(rename = "type")]
    pub kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recurring_campaign_id: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workflow_id: Option<i64>,
}

pub(super) const STAFF: &[&str] = &[
    "marketing.ops@acme.example",
    "jane.doe@acme.example",
    "lifecycle-team@acme.example",
    "søren.østergaard@acme.example",
    "mei.tanaka@acme.example",
    "automation@acme.example",
];

const LABELS: &[&str] = &[
    "Promotional",
    "Newsletter",
    "Onboarding",
    "Black Friday",
    "Réactivation",
    "A/B test",
    "Q4",
    "Transactional",
];

const THEMES: &[&str] = &[
    "Spring Sale",
    "Summer Clearance",
    "Back to School",
    "Black Friday",
    "Cyber Monday",
    "Holiday Gift Guide",
    "New Arrivals",
    "Win-back",
    "Price Drop Alert",
    "Loyalty Rewards",
    "Rentrée des classes",
    "Soldes d'hiver",
    "Sommerschlussverkauf",
    "Año Nuevo",
    "お正月セール",
    "Flash Sale ⚡",
    "Product Launch",
    "Survey & Feedback",
];

const SEGMENTS: &[&str] = &[
    "All",
    "VIP",
    "Lapsed 90d",
    "EU",
    "US",
    "Test A",
    "Test B",
    "Control",
];

const TRIGGERS: &[&str] = &[
    "Welcome Series – Step 1",
    "Welcome Series – Step 2",
    "Abandoned Cart Reminder",
    "Order Confirmation",
    "Shipping Update",
    "Password Reset",
    "Back in Stock",
    "Browse Abandonment",
    "Double Opt-In",
    "Review Request",
    "Birthday Offer 🎂",
    "Bestellbestätigung",
    "Confirmation de commande",
];

/// Every campaign and every template, visible or not, in ascending id order. Templates are
/// generated from the campaigns that use them; campaigns then name their template.
pub(super) fn campaigns_and_templates(cfg: &FakeConfig) -> (Vec<Campaign>, Vec<Template>) {
    let mut campaigns = generate(cfg, &lists::all_lists(cfg));
    let templates = templates::generate(cfg, &mut campaigns);
    (campaigns, templates)
}

fn generate(cfg: &FakeConfig, lists: &[List]) -> Vec<Campaign> {
    let time = Timeline::new(cfg);
    let hour = TimeDelta::hours(1).num_milliseconds();
    let day = TimeDelta::days(1).num_milliseconds();
    let mut dice = Dice::new(cfg.seed, "campaigns");
    let count = 2001 + dice.below(1000) as usize;
    let recent = (count / 40).max(5);
    let historic = count - recent;
    let mut id = CAMPAIGN_BASE - 1;
    let label_base = 5_000 + dice.below(90_000) as i64;
    let per_campaign = Dice::new(cfg.seed, "campaign");
    let mut recurring_parents: Vec<(i64, String, &'static str)> = Vec::new();
    let mut campaigns = Vec::with_capacity(count);
    for i in 0..count {
        let mut d = per_campaign.at(i as u64);
        let referenced = (i as i64) < CAMPAIGNS;
        id += if referenced { 1 } else { 1 + d.below(7) as i64 };
        let is_recent = i >= historic;
        let (from, to, k, n) = if is_recent {
            (time.start, time.end, i - historic, recent)
        } else {
            (time.catalog_ready, time.start, i, historic)
        };
        let created_at = from + ((k as f64 + d.unit()) * (to - from) as f64 / n as f64) as i64;
        let kind = if referenced {
            "Triggered"
        } else {
            *d.weighted(&[("Blast", 60), ("Triggered", 40)])
        };
        let mut medium = *d.weighted(&[("Email", 60), ("Push", 18), ("SMS", 12), ("InApp", 10)]);
        let state = *match (kind, is_recent) {
            _ if referenced => &"Running",
            ("Blast", false) => d.weighted(&[
                ("Finished", 52),
                ("Archived", 14),
                ("Draft", 9),
                ("Aborted", 4),
                ("Recurring", 5),
                ("Ready", 5),
                ("Scheduled", 5),
                ("Running", 5),
                ("Starting", 1),
            ]),
            ("Blast", true) => d.weighted(&[
                ("Draft", 30),
                ("Ready", 15),
                ("Scheduled", 25),
                ("Running", 15),
                ("Starting", 5),
                ("Finished", 10),
            ]),
            (_, false) => d.weighted(&[
                ("Running", 50),
                ("Finished", 10),
                ("Archived", 15),
                ("Draft", 10),
                ("Ready", 15),
            ]),
            (_, true) => d.weighted(&[("Draft", 40), ("Ready", 20), ("Running", 40)]),
        };
        let room = time.end - 1 - created_at;
        let edit = if is_recent {
            d.between(0, 6 * hour)
        } else {
            d.between(0, 45 * day)
        }
        .min(room);
        let updated_at = created_at + edit;
        let (start_at, ended_at) = match state {
            "Scheduled" => (Some(updated_at + d.between(hour, 14 * day)), None),
            "Running" | "Starting" | "Recurring" => (Some(created_at + edit / 2), None),
            "Finished" | "Aborted" => {
                (Some(created_at + edit / 3), Some(created_at + edit * 2 / 3))
            }
            "Archived" if d.chance(0.7) => {
                (Some(created_at + edit / 3), Some(created_at + edit * 2 / 3))
            }
            _ => (None, None),
        };
        let recurring_campaign_id = if kind == "Blast"
            && start_at.is_some()
            && state != "Recurring"
            && !recurring_parents.is_empty()
            && d.chance(0.15)
        {
            Some(d.pick(&recurring_parents).clone())
        } else {
            None
        };
        let name = match (&recurring_campaign_id, kind) {
            (Some((_, parent, parent_medium)), _) => {
                medium = parent_medium;
                let date = DateTime::from_timestamp_millis(start_at.unwrap_or(created_at))
                    .expect("in range")
                    .date_naive();
                format!("{parent} – {date}")
            }
            (None, "Blast") => {
                let year = DateTime::from_timestamp_millis(created_at)
                    .expect("in range")
                    .year();
                format!(
                    "{} {year} – {medium} – {}",
                    d.pick(THEMES),
                    d.pick(SEGMENTS)
                )
            }
            (None, _) if d.chance(0.3) => {
                format!("{} v{} ({medium})", d.pick(TRIGGERS), 2 + d.below(4))
            }
            (None, _) => format!("{} ({medium})", d.pick(TRIGGERS)),
        };
        let mut sendable: Vec<i64> = lists
            .iter()
            .filter(|l| l.created_at <= created_at && l.list_type != "Suppression")
            .map(|l| l.id)
            .collect();
        let mut suppressions: Vec<i64> = lists
            .iter()
            .filter(|l| l.created_at <= created_at && l.list_type == "Suppression")
            .map(|l| l.id)
            .collect();
        let list_ids = if kind == "Blast" && !(state == "Draft" && d.chance(0.3)) {
            let n = 1 + d.below(3) as usize;
            take_some(&mut d, &mut sendable, n)
        } else {
            Vec::new()
        };
        let suppression_chance = if kind == "Blast" { 0.4 } else { 0.1 };
        let suppression_list_ids = if d.chance(suppression_chance) {
            let n = 1 + d.below(2) as usize;
            take_some(&mut d, &mut suppressions, n)
        } else {
            Vec::new()
        };
        let mut label_indices: Vec<i64> = (0..LABELS.len() as i64).collect();
        let label_count = *d.weighted(&[(0usize, 40), (1, 35), (2, 18), (3, 7)]);
        let label_indices = take_some(&mut d, &mut label_indices, label_count);
        let send_size = (kind == "Blast" && start_at.is_some() && state != "Scheduled")
            .then(|| d.between(200, 250_000));
        let workflow_id =
            (kind == "Triggered" && d.chance(0.5)).then(|| 30_000 + d.below(50) as i64);
        let updated_by_user_id = (edit > 0 && d.chance(0.8)).then(|| *d.pick(STAFF));
        let created_by_user_id = *d.pick(STAFF);
        if state == "Recurring" {
            recurring_parents.push((id, name.clone(), medium));
        }
        campaigns.push(Campaign {
            id,
            created_at,
            updated_at,
            start_at,
            ended_at,
            name,
            template_id: None,
            message_medium: medium,
            created_by_user_id,
            updated_by_user_id,
            campaign_state: state,
            list_ids,
            suppression_list_ids,
            send_size,
            labels: label_indices.iter().map(|&k| LABELS[k as usize]).collect(),
            label_ids: label_indices.iter().map(|&k| label_base + k * 11).collect(),
            kind,
            recurring_campaign_id: recurring_campaign_id.map(|(id, _, _)| id),
            workflow_id,
        });
    }
    campaigns
}

/// Up to `n` distinct items drawn from `pool` (which loses them), in ascending order.
fn take_some(d: &mut Dice, pool: &mut Vec<i64>, n: usize) -> Vec<i64> {
    let mut taken: Vec<i64> = (0..n.min(pool.len()))
        .map(|_| pool.swap_remove(d.below(pool.len() as u64) as usize))
        .collect();
    taken.sort_unstable();
    taken
}

/// The campaigns served now.
fn visible_campaigns(state: &State) -> Vec<Campaign> {
    let now = now_ms(state);
    let (campaigns, _) = campaigns_and_templates(&state.cfg);
    campaigns
        .into_iter()
        .filter(|c| c.updated_at <= now)
        .collect()
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct CampaignsResponse<'a> {
    campaigns: &'a [Campaign],
    #[serde(skip_serializing_if = "Option::is_none")]
    total_campaigns_count: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    next_page_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    previous_page_url: Option<String>,
}

pub(super) async fn get_campaigns(
    extract::State(state): extract::State<Arc<State>>,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let params = Params::parse(query.as_deref());
    let page = Page::from_params(&params)?;
    let sort = Sort::from_params(
        &params,
        &["id", "name", "createdAt", "updatedAt", "startAt"],
    )?;
    let wanted: Vec<&str> = params.all("campaignState").collect();
    if let Some(bad) = wanted.iter().find(|s| !STATES.contains(s)) {
        return Err(ApiError::bad_params(format!(
            "Invalid campaignState: {bad}"
        )));
    }
    let mut campaigns: Vec<Campaign> = visible_campaigns(&state)
        .into_iter()
        .filter(|c| wanted.is_empty() || wanted.contains(&c.campaign_state))
        .collect();
    match sort.field {
        "name" => sort.apply(&mut campaigns, |c| c.name.clone()),
        "createdAt" => sort.apply(&mut campaigns, |c| c.created_at),
        "updatedAt" => sort.apply(&mut campaigns, |c| c.updated_at),
        "startAt" => sort.apply(&mut campaigns, |c| c.start_at),
        _ => sort.apply(&mut campaigns, |c| c.id),
    }
    let body = match page {
        None => CampaignsResponse {
            campaigns: &campaigns,
            total_campaigns_count: None,
            next_page_url: None,
            previous_page_url: None,
        },
        Some(page) => {
            let (next_page_url, previous_page_url) =
                page.links(&headers, uri.path(), &params, campaigns.len());
            CampaignsResponse {
                campaigns: page.slice(&campaigns),
                total_campaigns_count: Some(campaigns.len()),
                next_page_url,
                previous_page_url,
            }
        }
    };
    Ok(Json(body).into_response())
}

/// The metric columns after `id`, in CSV order.
const METRIC_COLUMNS: &[&str] = &[
    "Average Custom Conversion Value",
    "Average Order Value",
    "Clicks / Opens",
    "Complaint Rate",
    "Conversion Rate (%)",
    "Email Click Rate",
    "Email Delivery Rate",
    "Email Open Rate",
    "Purchases / M (Email)",
    "Revenue",
    "Revenue / M (Email)",
    "Sum of Custom Conversions",
    "Total Complaints",
    "Total Custom Conversions",
    "Total Email Holdout",
    "Total Email Opens",
    "Total Email Opens (filtered)",
    "Total Email Send Skips",
    "Total Email Sends",
    "Total Emails Bounced",
    "Total Emails Clicked",
    "Total Emails Delivered",
    "Total Hosted Unsubscribe Clicks",
    "Total Purchases",
    "Total Unsubscribes",
    "Unique Custom Conversions",
    "Unique Email Clicks",
    "Unique Email Opens",
    "Unique Email Opens (filtered)",
    "Unique Email Opens Or Clicks",
    "Unique Email Sends",
    "Unique Emails Bounced",
    "Unique Emails Delivered",
    "Unique Hosted Unsubscribe Clicks",
    "Unique Purchases",
    "Unique Unsubscribes",
    "Total Pushes Sent",
    "Unique Pushes Sent",
    "Total Pushes Bounced",
    "Total Pushes Delivered",
    "Push Delivery Rate",
    "Total Pushes Opened",
    "Unique Pushes Opened",
    "Unique Pushes Delivered",
    "Unique Pushes Bounced",
    "Total Push Holdout",
    "Total App Uninstalls",
    "Purchases / M (Push)",
    "Revenue / M (Push)",
    "Total Web Pushes Sent",
    "Unique Web Pushes Sent",
    "Total Web Push Clicks",
    "Unique Web Push Clicks",
    "Total Web Push Send Skips",
    "Total WebPush Holdout",
    "Push Open Rate",
    "Total Push Send Skips",
    "Total SMS Sent",
    "Unique SMS Sent",
    "Total SMS Delivered",
    "Total SMS Bounced",
    "Total SMS Clicks",
    "Unique SMS Clicks",
    "Total Inbound SMS",
    "Purchases / M (SMS)",
    "Revenue / M (SMS)",
    "Total In-App Sends",
    "Unique In-App Sends",
    "Total In-App Opens",
    "Unique In-App Opens",
    "Total In-App Clicks",
    "Unique In-App Clicks",
];

/// One metric cell: a count or a measure.
#[derive(Debug, Clone, Copy)]
enum Num {
    Int(i64),
    Float(f64),
}

impl Num {
    /// Integers as digits; floats the way the JVM prints a double (`0.25`, `12.0`).
    fn render(self) -> String {
        match self {
            Num::Int(v) => v.to_string(),
            Num::Float(v) if v.fract() == 0.0 => format!("{v:.1}"),
            Num::Float(v) => v.to_string(),
        }
    }
}

/// `num / den` as a float, or nothing when `den` is zero.
fn ratio(num: i64, den: i64) -> Option<Num> {
    (den != 0).then(|| Num::Float(num as f64 / den as f64))
}

/// Draws `share` of `of`, jittered by up to ±20%, as a count: never more than `of` for a
/// share up to 1 (uniques within totals), never less for a larger factor.
fn part(d: &mut Dice, of: i64, share: f64) -> i64 {
    let v = (of as f64 * share * (0.8 + 0.4 * d.unit())).round() as i64;
    if share <= 1.0 { v.min(of) } else { v.max(of) }
}

/// The CSV header: `id` and the metric names.
fn metrics_header() -> Vec<String> {
    std::iter::once("id")
        .chain(METRIC_COLUMNS.iter().copied())
        .map(str::to_string)
        .collect()
}

/// A campaign's metrics row, in header order.
fn metrics_row(cfg: &FakeConfig, c: &Campaign) -> Vec<String> {
    let mut cells: Vec<(&'static str, Option<Num>)> = Vec::new();
    let mut d = Dice::new(cfg.seed, "metrics").at(c.id as u64);
    let sent = c.start_at.is_some() && c.campaign_state != "Scheduled";
    if sent {
        let sends = c.send_size.unwrap_or_else(|| d.between(50, 60_000));
        let mut put = |name: &'static str, v: Option<Num>| cells.push((name, v));
        let int = |v: i64| Some(Num::Int(v));
        let (clicks, delivered) = match c.message_medium {
            "Email" => {
                let total_sends = sends + part(&mut d, sends, 0.001);
                let bounced = part(&mut d, sends, 0.012);
                let unique_bounced = part(&mut d, bounced, 0.97);
                let delivered = total_sends - bounced;
                let unique_delivered = sends - unique_bounced;
                let unique_opens = part(&mut d, unique_delivered, 0.28);
                let total_opens = part(&mut d, unique_opens, 1.8);
                let unique_clicks = part(&mut d, unique_opens, 0.1);
                let total_clicks = part(&mut d, unique_clicks, 1.6);
                let opens_or_clicks = unique_opens + part(&mut d, unique_clicks, 0.05);
                let complaints = part(&mut d, delivered, 0.0004);
                let holdout = if c.kind == "Blast" && d.chance(0.2) {
                    part(&mut d, sends, 0.05)
                } else {
                    0
                };
                let hosted = part(&mut d, delivered, 0.001);
                put("Clicks / Opens", ratio(unique_clicks, opens_or_clicks));
                put("Complaint Rate", ratio(complaints, delivered));
                put("Email Click Rate", ratio(unique_clicks, unique_delivered));
                put("Email Delivery Rate", ratio(unique_delivered, sends));
                put("Email Open Rate", ratio(unique_opens, unique_delivered));
                put("Total Complaints", int(complaints));
                put("Total Email Holdout", int(holdout));
                put("Total Email Opens", int(total_opens));
                put(
                    "Total Email Opens (filtered)",
                    int(part(&mut d, total_opens, 0.6)),
                );
                put("Total Email Send Skips", int(part(&mut d, sends, 0.01)));
                put("Total Email Sends", int(total_sends));
                put("Total Emails Bounced", int(bounced));
                put("Total Emails Clicked", int(total_clicks));
                put("Total Emails Delivered", int(delivered));
                put("Total Hosted Unsubscribe Clicks", int(hosted));
                put("Unique Email Clicks", int(unique_clicks));
                put("Unique Email Opens", int(unique_opens));
                put(
                    "Unique Email Opens (filtered)",
                    int(part(&mut d, unique_opens, 0.6)),
                );
                put("Unique Email Opens Or Clicks", int(opens_or_clicks));
                put("Unique Email Sends", int(sends));
                put("Unique Emails Bounced", int(unique_bounced));
                put("Unique Emails Delivered", int(unique_delivered));
                put(
                    "Unique Hosted Unsubscribe Clicks",
                    int(part(&mut d, hosted, 0.95)),
                );
                (unique_clicks, unique_delivered)
            }
            "Push" => {
                let total = sends + part(&mut d, sends, 0.3);
                let bounced = part(&mut d, total, 0.04);
                let delivered = total - bounced;
                let unique_opens = part(&mut d, sends, 0.06);
                put("Total Pushes Sent", int(total));
                put("Unique Pushes Sent", int(sends));
                put("Total Pushes Bounced", int(bounced));
                put("Total Pushes Delivered", int(delivered));
                put("Push Delivery Rate", ratio(delivered, total));
                put("Total Pushes Opened", int(part(&mut d, unique_opens, 1.3)));
                put("Unique Pushes Opened", int(unique_opens));
                put("Push Open Rate", ratio(unique_opens, delivered));
                put("Total Push Send Skips", int(part(&mut d, sends, 0.02)));
                let unique_bounced = part(&mut d, bounced, 0.9);
                put("Unique Pushes Bounced", int(unique_bounced));
                put("Unique Pushes Delivered", int(sends - unique_bounced));
                put("Total Push Holdout", int(part(&mut d, sends, 0.03)));
                put("Total App Uninstalls", int(part(&mut d, delivered, 0.005)));
                if d.chance(0.5) {
                    let web = part(&mut d, sends, 0.2);
                    let unique_web = part(&mut d, web, 0.95);
                    let web_clicks = part(&mut d, unique_web, 0.04);
                    put("Total Web Pushes Sent", int(web));
                    put("Unique Web Pushes Sent", int(unique_web));
                    put("Total Web Push Clicks", int(web_clicks));
                    put("Unique Web Push Clicks", int(part(&mut d, web_clicks, 0.9)));
                    put("Total Web Push Send Skips", int(part(&mut d, web, 0.01)));
                    put("Total WebPush Holdout", int(part(&mut d, web, 0.02)));
                }
                (unique_opens, delivered)
            }
            "SMS" => {
                let total = sends + part(&mut d, sends, 0.02);
                let bounced = part(&mut d, total, 0.015);
                let delivered = total - bounced;
                let unique_clicks = part(&mut d, delivered, 0.07);
                put("Total SMS Sent", int(total));
                put("Unique SMS Sent", int(sends));
                put("Total SMS Delivered", int(delivered));
                put("Total SMS Bounced", int(bounced));
                put("Total SMS Clicks", int(part(&mut d, unique_clicks, 1.4)));
                put("Unique SMS Clicks", int(unique_clicks));
                put("Total Inbound SMS", int(part(&mut d, delivered, 0.01)));
                (unique_clicks, delivered)
            }
            _ => {
                let total = sends + part(&mut d, sends, 0.5);
                let unique_opens = part(&mut d, sends, 0.35);
                let unique_clicks = part(&mut d, unique_opens, 0.15);
                put("Total In-App Sends", int(total));
                put("Unique In-App Sends", int(sends));
                put("Total In-App Opens", int(part(&mut d, unique_opens, 1.5)));
                put("Unique In-App Opens", int(unique_opens));
                put("Total In-App Clicks", int(part(&mut d, unique_clicks, 1.2)));
                put("Unique In-App Clicks", int(unique_clicks));
                (unique_clicks, total)
            }
        };
        let unique_purchases = part(&mut d, clicks, 0.08);
        let purchases = part(&mut d, unique_purchases, 1.25);
        let revenue: f64 = (0..purchases)
            .map(|_| d.between(999, 25_000) as f64 / 100.0)
            .sum();
        let per_mille =
            |v: f64| (delivered != 0).then(|| Num::Float(v * 1000.0 / delivered as f64));
        put(
            "Average Order Value",
            (purchases != 0).then(|| Num::Float(revenue / purchases as f64)),
        );
        put(
            "Conversion Rate (%)",
            (delivered != 0).then(|| Num::Float(100.0 * purchases as f64 / delivered as f64)),
        );
        put("Revenue", Some(Num::Float(revenue)));
        put("Total Purchases", int(purchases));
        put("Unique Purchases", int(unique_purchases));
        let unsubscribes = part(&mut d, delivered, 0.002);
        put("Total Unsubscribes", int(unsubscribes));
        put("Unique Unsubscribes", int(part(&mut d, unsubscribes, 0.97)));
        match c.message_medium {
            "Email" => {
                put("Purchases / M (Email)", per_mille(purchases as f64));
                put("Revenue / M (Email)", per_mille(revenue));
            }
            "SMS" => {
                put("Purchases / M (SMS)", per_mille(purchases as f64));
                put("Revenue / M (SMS)", per_mille(revenue));
            }
            "Push" => {
                put("Purchases / M (Push)", per_mille(purchases as f64));
                put("Revenue / M (Push)", per_mille(revenue));
            }
            _ => {}
        }
        if d.chance(0.5) {
            let unique = part(&mut d, clicks, 0.05);
            let total = part(&mut d, unique, 1.3);
            let sum = total as f64 * d.between(100, 5_000) as f64 / 100.0;
            put("Total Custom Conversions", int(total));
            put("Unique Custom Conversions", int(unique));
            put("Sum of Custom Conversions", Some(Num::Float(sum)));
            put(
                "Average Custom Conversion Value",
                (total != 0).then(|| Num::Float(sum / total as f64)),
            );
        }
    }
    std::iter::once(c.id.to_string())
        .chain(METRIC_COLUMNS.iter().map(|column| {
            cells
                .iter()
                .find(|(name, _)| name == column)
                .and_then(|(_, v)| *v)
                .map(Num::render)
                .unwrap_or_default()
        }))
        .collect()
}

/// The header and the rows `campaigns/metrics` answers for `ids`: one per distinct campaign
/// served now, in request order (in the older shape with `Faults::old_metrics_csv`), then
/// the row of `Faults::unasked_metrics_campaign`.
fn metrics_table(state: &State, ids: &[i64]) -> (Vec<String>, Vec<Vec<String>>) {
    let campaigns = visible_campaigns(state);
    let mut seen = HashSet::new();
    let mut rows: Vec<Vec<String>> = ids
        .iter()
        .filter(|id| seen.insert(**id))
        .filter_map(|id| campaigns.binary_search_by_key(id, |c| c.id).ok())
        .map(|k| metrics_row(&state.cfg, &campaigns[k]))
        .collect();
    if let (Some(unasked), Some(first)) =
        (state.cfg.faults.unasked_metrics_campaign, campaigns.first())
        && ids.contains(&first.id)
    {
        let mut row = metrics_row(&state.cfg, first);
        row[0] = unasked.to_string();
        rows.push(row);
    }
    if !state.cfg.faults.old_metrics_csv {
        return (metrics_header(), rows);
    }
    let twice = |cells: Vec<String>| -> Vec<String> {
        cells.into_iter().flat_map(|c| [c.clone(), c]).collect()
    };
    let header = metrics_header().iter().map(|h| older_header(h)).collect();
    (twice(header), rows.into_iter().map(twice).collect())
}

/// A header as older projects write it: per-mille metrics without their medium.
fn older_header(header: &str) -> String {
    let per_mille = header.starts_with("Purchases / M (") || header.starts_with("Revenue / M (");
    match header.split_once(" (") {
        Some((bare, _)) if per_mille => bare.to_string(),
        _ => header.to_string(),
    }
}

pub(super) async fn get_metrics(
    extract::State(state): extract::State<Arc<State>>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let params = Params::parse(query.as_deref());
    let ids = params
        .all("campaignId")
        .map(|v| {
            v.trim()
                .parse::<i64>()
                .map_err(|_| ApiError::bad_params(format!("Invalid campaignId: {v}")))
        })
        .collect::<Result<Vec<i64>, ApiError>>()?;
    if ids.is_empty() {
        return Err(ApiError::bad_params("campaignId is required"));
    }
    let mut window = [None, None];
    for (slot, name) in window.iter_mut().zip(["startDateTime", "endDateTime"]) {
        if let Some(v) = params.one(name).filter(|v| !v.is_empty()) {
            let t = parse_iso_datetime(v)
                .ok_or_else(|| ApiError::bad_params(format!("Invalid {name}: {v}")))?;
            *slot = Some(t);
        }
    }
    if let [Some(start), Some(end)] = window
        && start >= end
    {
        return Err(ApiError::bad_params(
            "startDateTime must be before endDateTime",
        ));
    }
    let (header_row, rows) = metrics_table(&state, &ids);
    let mut out = csv::WriterBuilder::new()
        .terminator(csv::Terminator::Any(b'\n'))
        .from_writer(Vec::new());
    out.write_record(&header_row).expect("write to memory");
    for row in &rows {
        out.write_record(row).expect("write to memory");
    }
    let body = out.into_inner().expect("flush to memory");
    Ok(([(header::CONTENT_TYPE, "text/csv; charset=utf-8")], body).into_response())
}

impl FakeIterable {
    /// The campaigns `GET /api/campaigns` serves now, as JSON objects, in ascending id order
    /// (the default sort).
    pub fn truth_campaigns(&self) -> Vec<serde_json::Value> {
        visible_campaigns(&self.state)
            .iter()
            .map(|c| serde_json::to_value(c).expect("a campaign serializes"))
            .collect()
    }

    /// The CSV `GET /api/campaigns/metrics` answers now for `ids`: the header, then one row
    /// per distinct known id in request order (cells as sent; empty string for an empty cell).
    pub fn truth_campaign_metrics(&self, ids: &[i64]) -> (Vec<String>, Vec<Vec<String>>) {
        metrics_table(&self.state, ids)
    }
}
