//! `GET /api/users/getFields`: every user field of the project with its type name (`string`,
//! `long`, `double`, `boolean`, `date`, `object`), nested fields by dotted path beside their
//! parent (`shoppingCart`, `shoppingCart.total`).
//!
//! It names the fields the user export carries: Iterable's own (`email`, `userId`,
//! `signupDate`, `profileUpdatedAt`, `itblInternal.emailDomain`, …) and the custom ones,
//! among them `customScore`, reported as `double` although its values drift between
//! integers, floats, numeric strings and null, and `bigCounter`, reported as `long` although
//! its values have 30 digits. One field arrives during the event window, when the export's
//! users start carrying it: `loyaltyTier` (string) is listed once the clock reaches the
//! window's middle, `cfg.start` plus half of `cfg.days` days (36 hours in
//! `FakeConfig::small`), so a test can see a field appear between two runs by moving the
//! clock. Every other field exists from the start.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract;
use axum::response::{IntoResponse, Json, Response};
use serde::Serialize;

use super::{Timeline, now_ms};
use crate::fake::{FakeIterable, State};

/// When a field first appears: always, or from the middle of the event window.
#[derive(Debug, Clone, Copy)]
enum Since {
    Always,
    MidWindow,
}

const FIELDS: &[(&str, &str, Since)] = &[
    ("email", "string", Since::Always),
    ("userId", "string", Since::Always),
    ("signupDate", "date", Since::Always),
    ("signupSource", "string", Since::Always),
    ("profileUpdatedAt", "date", Since::Always),
    ("phoneNumber", "string", Since::Always),
    ("firstName", "string", Since::Always),
    ("lastName", "string", Since::Always),
    ("locale", "string", Since::Always),
    ("timeZone", "string", Since::Always),
    ("emailListIds", "long", Since::Always),
    ("unsubscribedChannelIds", "long", Since::Always),
    ("unsubscribedMessageTypeIds", "long", Since::Always),
    ("subscribedMessageTypeIds", "long", Since::Always),
    ("browserTokens", "string", Since::Always),
    ("devices", "object", Since::Always),
    ("devices.token", "string", Since::Always),
    ("devices.platform", "string", Since::Always),
    ("devices.applicationName", "string", Since::Always),
    ("devices.endpointEnabled", "boolean", Since::Always),
    ("devices.dataFields", "object", Since::Always),
    ("itblInternal", "object", Since::Always),
    ("itblInternal.emailDomain", "string", Since::Always),
    ("itblInternal.documentCreatedAt", "date", Since::Always),
    ("itblInternal.documentUpdatedAt", "date", Since::Always),
    ("customScore", "double", Since::Always),
    ("bigCounter", "long", Since::Always),
    ("shoppingCart", "object", Since::Always),
    ("shoppingCart.total", "double", Since::Always),
    ("shoppingCart.itemCount", "long", Since::Always),
    ("preferences", "object", Since::Always),
    ("preferences.channels", "object", Since::Always),
    ("preferences.channels.email", "boolean", Since::Always),
    ("preferences.channels.sms", "boolean", Since::Always),
    ("nickname", "string", Since::Always),
    ("loyaltyTier", "string", Since::MidWindow),
];

/// The fields that exist now, by name.
fn visible_fields(state: &State) -> BTreeMap<String, String> {
    let time = Timeline::new(&state.cfg);
    let now = now_ms(state);
    FIELDS
        .iter()
        .filter(|(_, _, since)| match since {
            Since::Always => true,
            Since::MidWindow => now >= time.start + (time.end - time.start) / 2,
        })
        .map(|&(name, kind, _)| (name.to_string(), kind.to_string()))
        .collect()
}

#[derive(Serialize)]
struct FieldsResponse {
    fields: BTreeMap<String, String>,
}

pub(super) async fn get_fields(extract::State(state): extract::State<Arc<State>>) -> Response {
    Json(FieldsResponse {
        fields: visible_fields(&state),
    })
    .into_response()
}

impl FakeIterable {
    /// The `fields` object `GET /api/users/getFields` answers now: field name to type name.
    pub fn truth_user_fields(&self) -> BTreeMap<String, String> {
        visible_fields(&self.state)
    }
}
