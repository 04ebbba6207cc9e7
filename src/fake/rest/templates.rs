//! `GET /api/templates`.
//!
//! One template per campaign (a few drafts have none yet), typed after its campaign: `Blast`,
//! `Workflow` for triggered campaigns of a journey, `Triggered` otherwise; plus 100 to 159
//! `Base` templates with no campaign. Ids rise with `createdAt`; the oldest [`CAMPAIGNS`]
//! have the ids `TEMPLATE_BASE..` that the export's events name. A template is served once
//! the clock reaches its `updatedAt`.
//!
//! Quirks, as seen in the wild: `createdAt` and `updatedAt` are epoch-millisecond integers,
//! not the strings the spec declares; a quarter of the templates are created on a whole
//! second, and the `startDateTime` filter is exclusive (`createdAt > start`), so a template
//! created exactly at `startDateTime` is not returned, while `endDateTime` is exclusive as
//! documented. `templateType` and `messageMedium` must be exact enum values (the spec's
//! literal default `None` is rejected with 400). Paging as for campaigns; without `page` and
//! `pageSize` every matching template comes back.

use std::sync::Arc;

use axum::extract::{self, OriginalUri, RawQuery};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Json, Response};
use chrono::{DateTime, TimeDelta, Utc};
use serde::Serialize;

use super::campaigns::{self, Campaign, STAFF};
use super::catalog::{self, MessageType};
use super::{ApiError, Dice, Page, Params, Sort, Timeline, now_ms, parse_spaced_datetime};
use crate::fake::generate::{CAMPAIGNS, TEMPLATE_BASE};
use crate::fake::{FakeConfig, FakeIterable, State};

const TEMPLATE_TYPES: &[&str] = &["Base", "Blast", "Triggered", "Workflow"];
const MEDIUMS: &[&str] = &["Email", "Push", "InApp", "SMS"];

/// A template as `GET /api/templates` serves it (`ApiTemplateResponse`).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Template {
    pub template_id: i64,
    pub created_at: i64,
    pub updated_at: i64,
    pub name: String,
    pub creator_user_id: &'static str,
    pub message_type_id: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub campaign_id: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_template_id: Option<String>,
    #[serde(skip)]
    pub template_type: &'static str,
    #[serde(skip)]
    pub medium: &'static str,
}

const BASE_NAMES: &[&str] = &[
    "Base – Header & Footer",
    "Base – Newsletter 2 columns",
    "Base – Promo hero",
    "Base – Plain text",
    "Modèle de base — Transactionnel",
    "Basisvorlage Rechnung",
    "Plantilla base – Bienvenida",
    "ベーステンプレート",
    "Base – Push short copy",
    "Base – SMS with opt-out",
];

/// Every template, in ascending id order, and each campaign's `templateId` set to its own.
pub(super) fn generate(cfg: &FakeConfig, campaigns: &mut [Campaign]) -> Vec<Template> {
    let time = Timeline::new(cfg);
    let message_types = catalog::message_types(cfg);
    let mut dice = Dice::new(cfg.seed, "templates");
    let per_template = Dice::new(cfg.seed, "template");
    // (template, index of its campaign)
    let mut drafts: Vec<(Template, Option<usize>)> = Vec::new();
    for (k, c) in campaigns.iter().enumerate() {
        let mut d = per_template.at(c.id as u64);
        if c.campaign_state == "Draft" && d.chance(0.3) {
            continue;
        }
        let template_type = match (c.kind, c.workflow_id) {
            ("Blast", _) => "Blast",
            (_, Some(_)) => "Workflow",
            _ => "Triggered",
        };
        let lead = d.between(0, TimeDelta::hours(2).num_milliseconds());
        let created_at = whole_second_sometimes(&mut d, c.created_at - lead);
        let updated_at = created_at + d.between(0, c.updated_at - created_at + 1);
        drafts.push((
            Template {
                template_id: 0,
                created_at,
                updated_at,
                name: c.name.clone(),
                creator_user_id: c.created_by_user_id,
                message_type_id: pick_message_type(&mut d, &message_types, c.message_medium),
                campaign_id: Some(c.id),
                client_template_id: client_template_id(&mut d),
                template_type,
                medium: c.message_medium,
            },
            Some(k),
        ));
    }
    let base_count = 100 + dice.below(60);
    for k in 0..base_count {
        let mut d = per_template.at(u64::MAX - k);
        let at = time.catalog_ready + d.between(0, time.end - time.catalog_ready);
        let created_at = whole_second_sometimes(&mut d, at);
        let updated_at = created_at + d.between(0, time.end - created_at);
        let medium = *d.weighted(&[("Email", 6), ("Push", 2), ("InApp", 1), ("SMS", 1)]);
        let creator_user_id = *d.pick(STAFF);
        drafts.push((
            Template {
                template_id: 0,
                created_at,
                updated_at,
                name: format!("{} v{}", d.pick(BASE_NAMES), 1 + d.below(9)),
                creator_user_id,
                message_type_id: pick_message_type(&mut d, &message_types, medium),
                campaign_id: None,
                client_template_id: client_template_id(&mut d),
                template_type: "Base",
                medium,
            },
            None,
        ));
    }
    drafts.sort_by_key(|(t, campaign)| (t.created_at, campaign.is_some(), t.campaign_id));
    let mut id = TEMPLATE_BASE - 1;
    drafts
        .into_iter()
        .enumerate()
        .map(|(k, (mut template, campaign))| {
            id += if (k as i64) < CAMPAIGNS {
                1
            } else {
                1 + dice.below(9) as i64
            };
            template.template_id = id;
            if let Some(k) = campaign {
                campaigns[k].template_id = Some(id);
            }
            template
        })
        .collect()
}

/// `at`, truncated to its second for a quarter of the templates.
fn whole_second_sometimes(d: &mut Dice, at: i64) -> i64 {
    if d.chance(0.25) {
        at - at.rem_euclid(1000)
    } else {
        at
    }
}

fn client_template_id(d: &mut Dice) -> Option<String> {
    d.chance(0.3)
        .then(|| format!("tmpl-{:05}", d.below(100_000)))
}

/// A message type of the template's medium; in-app templates use the push channels, the
/// spec knowing no in-app channel.
fn pick_message_type(d: &mut Dice, types: &[MessageType], medium: &str) -> i64 {
    let medium = if medium == "InApp" { "Push" } else { medium };
    let matching: Vec<i64> = types
        .iter()
        .filter(|m| m.medium == medium)
        .map(|m| m.id)
        .collect();
    *d.pick(&matching)
}

/// What a templates request filters on.
#[derive(Debug, Clone, Copy, Default)]
struct Filter<'a> {
    template_type: Option<&'a str>,
    medium: Option<&'a str>,
    /// Exclusive, in epoch ms: the boundary quirk.
    created_after: Option<i64>,
    /// Exclusive, in epoch ms.
    created_before: Option<i64>,
}

impl Filter<'_> {
    fn keeps(&self, t: &Template) -> bool {
        self.template_type.is_none_or(|v| v == t.template_type)
            && self.medium.is_none_or(|v| v == t.medium)
            && self.created_after.is_none_or(|v| t.created_at > v)
            && self.created_before.is_none_or(|v| t.created_at < v)
    }
}

/// The templates served now that pass `filter`, in ascending id order.
fn visible_templates(state: &State, filter: &Filter) -> Vec<Template> {
    let now = now_ms(state);
    let (_, templates) = campaigns::campaigns_and_templates(&state.cfg);
    templates
        .into_iter()
        .filter(|t| t.updated_at <= now && filter.keeps(t))
        .collect()
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct TemplatesResponse<'a> {
    templates: &'a [Template],
    #[serde(skip_serializing_if = "Option::is_none")]
    total_templates_count: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    next_page_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    previous_page_url: Option<String>,
}

/// The value of an enum parameter, which must be one of `allowed` when present.
fn enum_param<'a>(
    params: &'a Params,
    name: &str,
    allowed: &[&str],
) -> Result<Option<&'a str>, ApiError> {
    match params.one(name) {
        Some(v) if !allowed.contains(&v) => Err(ApiError::bad_params(format!(
            "Invalid {name}: {v}; expected one of {}",
            allowed.join(", ")
        ))),
        v => Ok(v),
    }
}

fn time_param(params: &Params, name: &str) -> Result<Option<i64>, ApiError> {
    params
        .one(name)
        .map(|v| {
            parse_spaced_datetime(v)
                .map(|t| t.timestamp_millis())
                .ok_or_else(|| {
                    ApiError::bad_params(format!(
                        "Invalid {name}: {v}; expected yyyy-MM-dd HH:mm:ss [ZZ]"
                    ))
                })
        })
        .transpose()
}

pub(super) async fn get_templates(
    extract::State(state): extract::State<Arc<State>>,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let params = Params::parse(query.as_deref());
    let filter = Filter {
        template_type: enum_param(&params, "templateType", TEMPLATE_TYPES)?,
        medium: enum_param(&params, "messageMedium", MEDIUMS)?,
        created_after: time_param(&params, "startDateTime")?,
        created_before: time_param(&params, "endDateTime")?,
    };
    let page = Page::from_params(&params)?;
    let sort = Sort::from_params(&params, &["id", "name", "createdAt", "updatedAt"])?;
    let mut templates = visible_templates(&state, &filter);
    match sort.field {
        "name" => sort.apply(&mut templates, |t| t.name.clone()),
        "createdAt" => sort.apply(&mut templates, |t| t.created_at),
        "updatedAt" => sort.apply(&mut templates, |t| t.updated_at),
        _ => sort.apply(&mut templates, |t| t.template_id),
    }
    let body = match page {
        None => TemplatesResponse {
            templates: &templates,
            total_templates_count: None,
            next_page_url: None,
            previous_page_url: None,
        },
        Some(page) => {
            let (next_page_url, previous_page_url) =
                page.links(&headers, uri.path(), &params, templates.len());
            TemplatesResponse {
                templates: page.slice(&templates),
                total_templates_count: Some(templates.len()),
                next_page_url,
                previous_page_url,
            }
        }
    };
    Ok(Json(body).into_response())
}

fn to_values(templates: &[Template]) -> Vec<serde_json::Value> {
    templates
        .iter()
        .map(|t| serde_json::to_value(t).expect("a template serializes"))
        .collect()
}

impl FakeIterable {
    /// The templates `GET /api/templates` serves now for this `templateType` and
    /// `messageMedium` (`None`: no filter), as JSON objects in ascending id order.
    pub fn truth_templates(
        &self,
        template_type: Option<&str>,
        medium: Option<&str>,
    ) -> Vec<serde_json::Value> {
        let filter = Filter {
            template_type,
            medium,
            ..Filter::default()
        };
        to_values(&visible_templates(&self.state, &filter))
    }

    /// As [`FakeIterable::truth_templates`], for a `startDateTime`/`endDateTime` window with
    /// the server's semantics: created strictly after `start`, strictly before `end`.
    pub fn truth_templates_created(
        &self,
        template_type: Option<&str>,
        medium: Option<&str>,
        start: Option<DateTime<Utc>>,
        end: Option<DateTime<Utc>>,
    ) -> Vec<serde_json::Value> {
        let filter = Filter {
            template_type,
            medium,
            created_after: start.map(|t| t.timestamp_millis()),
            created_before: end.map(|t| t.timestamp_millis()),
        };
        to_values(&visible_templates(&self.state, &filter))
    }
}
