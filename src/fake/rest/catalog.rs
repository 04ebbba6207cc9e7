//! `GET /api/channels` and `GET /api/messageTypes`: six channels (Marketing and
//! Transactional for each of Email, Push and SMS, the spec's mediums) with ids `10..16`, and
//! twelve message types with ids `100..112`, all created in the project's first thirty days.
//! Those are the ids the export's events and users carry (`channelId`, `messageTypeId`,
//! `unsubscribedChannelIds`, …). Some message types carry a `rateLimitPerMinute` or a
//! `frequencyCap`, the others leave them out.

use std::sync::Arc;

use axum::extract;
use axum::response::{IntoResponse, Json, Response};
use chrono::TimeDelta;
use serde::Serialize;

use super::{Dice, Timeline, now_ms};
use crate::fake::{FakeConfig, FakeIterable, State};

const CHANNELS: &[(&str, &str, &str)] = &[
    ("Marketing Email", "Marketing", "Email"),
    ("Transactional Email", "Transactional", "Email"),
    ("Push Marketing", "Marketing", "Push"),
    ("Push Transactional", "Transactional", "Push"),
    ("SMS Marketing", "Marketing", "SMS"),
    ("SMS Transactional", "Transactional", "SMS"),
];

/// A message type of the fixed set: name, index into `CHANNELS`, subscription policy,
/// `rateLimitPerMinute`, `frequencyCap` as (days, messages).
type MessageTypeDef = (
    &'static str,
    usize,
    &'static str,
    Option<i32>,
    Option<(i32, i32)>,
);

const MESSAGE_TYPES: &[MessageTypeDef] = &[
    ("Newsletter", 0, "OptOut", None, Some((7, 3))),
    ("Promotions", 0, "OptOut", Some(5000), None),
    ("Product Updates", 0, "OptIn", None, None),
    ("Rappels de panier", 0, "OptIn", None, Some((1, 1))),
    ("Browse Abandonment", 0, "OptOut", Some(2000), Some((3, 1))),
    ("Receipts", 1, "OptOut", None, None),
    ("Password Reset", 1, "OptOut", Some(1000), None),
    ("Push Promotions", 2, "OptOut", None, Some((1, 2))),
    ("Alertes de livraison", 3, "OptOut", None, None),
    ("Order Updates", 3, "OptOut", Some(600), None),
    ("SMS Offers", 4, "OptIn", Some(60), Some((7, 2))),
    ("SMS Order Status", 5, "OptOut", None, None),
];

/// A channel as `GET /api/channels` serves it (`ChannelDetails`).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Channel {
    pub id: i64,
    pub name: &'static str,
    pub channel_type: &'static str,
    pub message_medium: &'static str,
}

#[derive(Debug, Clone, Copy, Serialize)]
struct FrequencyCap {
    days: i32,
    messages: i32,
}

/// A message type as `GET /api/messageTypes` serves it (`MessageTypeDetails`).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct MessageType {
    pub id: i64,
    pub name: &'static str,
    pub channel_id: i64,
    pub created_at: i64,
    pub updated_at: i64,
    pub subscription_policy: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    rate_limit_per_minute: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    frequency_cap: Option<FrequencyCap>,
    /// The medium of its channel.
    #[serde(skip)]
    pub medium: &'static str,
}

pub(super) fn channels() -> Vec<Channel> {
    CHANNELS
        .iter()
        .enumerate()
        .map(|(k, &(name, channel_type, message_medium))| Channel {
            id: 10 + k as i64,
            name,
            channel_type,
            message_medium,
        })
        .collect()
}

/// Every message type, in ascending id order; all exist from the project's first month.
pub(super) fn message_types(cfg: &FakeConfig) -> Vec<MessageType> {
    let time = Timeline::new(cfg);
    let channels = channels();
    let mut dice = Dice::new(cfg.seed, "message types");
    let span = time.catalog_ready - time.history_start;
    let step = span / MESSAGE_TYPES.len() as i64;
    MESSAGE_TYPES
        .iter()
        .enumerate()
        .map(|(k, &(name, channel, policy, rate_limit, cap))| {
            let created_at = time.history_start + k as i64 * step + dice.between(0, step);
            let updated_at = if dice.chance(0.5) {
                created_at
            } else {
                created_at + dice.between(1, TimeDelta::days(400).num_milliseconds())
            };
            MessageType {
                id: 100 + k as i64,
                name,
                channel_id: channels[channel].id,
                created_at,
                updated_at,
                subscription_policy: policy,
                rate_limit_per_minute: rate_limit,
                frequency_cap: cap.map(|(days, messages)| FrequencyCap { days, messages }),
                medium: channels[channel].message_medium,
            }
        })
        .collect()
}

fn visible_message_types(state: &State) -> Vec<MessageType> {
    let now = now_ms(state);
    message_types(&state.cfg)
        .into_iter()
        .filter(|m| m.updated_at <= now)
        .collect()
}

#[derive(Serialize)]
struct ChannelsResponse {
    channels: Vec<Channel>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct MessageTypesResponse {
    message_types: Vec<MessageType>,
}

pub(super) async fn get_channels() -> Response {
    Json(ChannelsResponse {
        channels: channels(),
    })
    .into_response()
}

pub(super) async fn get_message_types(
    extract::State(state): extract::State<Arc<State>>,
) -> Response {
    Json(MessageTypesResponse {
        message_types: visible_message_types(&state),
    })
    .into_response()
}

impl FakeIterable {
    /// The channels `GET /api/channels` serves, as JSON objects, in response order.
    pub fn truth_channels(&self) -> Vec<serde_json::Value> {
        channels()
            .iter()
            .map(|c| serde_json::to_value(c).expect("a channel serializes"))
            .collect()
    }

    /// The message types `GET /api/messageTypes` serves now, as JSON objects, in response
    /// order.
    pub fn truth_message_types(&self) -> Vec<serde_json::Value> {
        visible_message_types(&self.state)
            .iter()
            .map(|m| serde_json::to_value(m).expect("a message type serializes"))
            .collect()
    }
}
