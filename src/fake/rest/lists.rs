//! `GET /api/lists` and `GET /api/lists/getUsers`.
//!
//! Nine lists of every `listType`, with unicode names and ids in `500..520` (the
//! `emailListIds` the user export carries). Members are users `0..cfg.users` of
//! [`people`](crate::fake::people), in ascending order: "All Subscribers" holds every user
//! (raise `cfg.users` for a list of millions: the body is generated and sent block by block,
//! never held whole), the others hold a seeded share of them (a user can be in several), the
//! "QA seed inboxes" list holds the first five users and one list is empty.
//!
//! The `getUsers` body is one identifier per line, as Iterable sends it: a blank line after
//! the third member and after a seeded one in about sixty, and for "All Subscribers" and
//! "Clientes España" no newline after the last line. Lists named in `Faults::failing_lists`
//! always answer 500 `GenericError`, before any check of the list itself.

use std::convert::Infallible;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{self, RawQuery};
use axum::http::header;
use axum::response::{IntoResponse, Json, Response};
use bytes::Bytes;
use chrono::TimeDelta;
use serde::Serialize;

use super::{ApiError, Dice, Params, Timeline, now_ms};
use crate::fake::{FakeConfig, FakeIterable, State, people};

/// Who belongs to a list.
#[derive(Debug, Clone, Copy)]
enum Members {
    All,
    /// Each user independently, with this probability.
    Share(f64),
    /// The first users.
    First(u32),
    Empty,
}

/// One list of the fixed set: everything but its seeded id and creation time.
struct ListDef {
    name: &'static str,
    list_type: &'static str,
    description: Option<&'static str>,
    global_suppression: Option<bool>,
    members: Members,
    trailing_newline: bool,
}

const LISTS: &[ListDef] = &[
    ListDef {
        name: "All Subscribers",
        list_type: "Standard",
        description: Some("Everyone who opted in to marketing email"),
        global_suppression: None,
        members: Members::All,
        trailing_newline: false,
    },
    ListDef {
        name: "Newsletter — Weekly Digest",
        list_type: "Standard",
        description: Some("Weekly digest, sent on Tuesdays at 09:00 local time"),
        global_suppression: None,
        members: Members::Share(0.45),
        trailing_newline: true,
    },
    ListDef {
        name: "VIP-Kunden München (LTV > 500 €)",
        list_type: "Dynamic",
        description: Some("lifetimeValue > 500 AND address.city = \"München\""),
        global_suppression: None,
        members: Members::Share(0.08),
        trailing_newline: true,
    },
    ListDef {
        name: "Clientes España 🇪🇸",
        list_type: "Standard",
        description: None,
        global_suppression: None,
        members: Members::Share(0.2),
        trailing_newline: false,
    },
    ListDef {
        name: "ニュースレター購読者",
        list_type: "Standard",
        description: Some("日本語ニュースレター"),
        global_suppression: None,
        members: Members::Share(0.3),
        trailing_newline: true,
    },
    ListDef {
        name: "Global Suppression",
        list_type: "Suppression",
        description: Some("Hard bounces and complaints, suppressed from every send"),
        global_suppression: Some(true),
        members: Members::Share(0.03),
        trailing_newline: true,
    },
    ListDef {
        name: "Competitor domains — do not mail",
        list_type: "Suppression",
        description: None,
        global_suppression: Some(false),
        members: Members::Share(0.015),
        trailing_newline: true,
    },
    ListDef {
        name: "QA seed inboxes",
        list_type: "Internal",
        description: Some("Internal seed list for proofs"),
        global_suppression: None,
        members: Members::First(5),
        trailing_newline: true,
    },
    ListDef {
        name: "Import 2019 (archived, empty)",
        list_type: "Standard",
        description: Some(""),
        global_suppression: None,
        members: Members::Empty,
        trailing_newline: true,
    },
];

/// A list as `GET /api/lists` serves it (`ListDetails`).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct List {
    pub id: i64,
    pub name: &'static str,
    pub created_at: i64,
    pub list_type: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub is_global_suppression_enabled: Option<bool>,
    /// Index into `LISTS`.
    #[serde(skip)]
    def: usize,
}

/// Every list, visible or not, in ascending id (and creation) order, created over the
/// project's first ninety days. Ids fall in `500..520`, the range of the `emailListIds` the
/// user export carries.
pub(super) fn all_lists(cfg: &FakeConfig) -> Vec<List> {
    let time = Timeline::new(cfg);
    let mut dice = Dice::new(cfg.seed, "lists");
    let step = TimeDelta::days(90).num_milliseconds() / LISTS.len() as i64;
    LISTS
        .iter()
        .enumerate()
        .map(|(k, def)| List {
            id: 500 + 2 * k as i64 + dice.below(2) as i64,
            name: def.name,
            created_at: time.history_start + k as i64 * step + dice.between(0, step),
            list_type: def.list_type,
            description: def.description,
            is_global_suppression_enabled: def.global_suppression,
            def: k,
        })
        .collect()
}

/// The lists that exist at the fake's clock.
fn visible_lists(state: &State) -> Vec<List> {
    let now = now_ms(state);
    all_lists(&state.cfg)
        .into_iter()
        .filter(|l| l.created_at <= now)
        .collect()
}

#[derive(Serialize)]
struct ListsResponse {
    lists: Vec<List>,
}

pub(super) async fn get_lists(extract::State(state): extract::State<Arc<State>>) -> Response {
    Json(ListsResponse {
        lists: visible_lists(&state),
    })
    .into_response()
}

pub(super) async fn get_users(
    extract::State(state): extract::State<Arc<State>>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let params = Params::parse(query.as_deref());
    let list_id: i64 = params
        .parsed("listId")?
        .ok_or_else(|| ApiError::bad_params("listId is required"))?;
    let prefer_user_id = match params.one("preferUserId") {
        None => false,
        Some(v) if v.eq_ignore_ascii_case("true") => true,
        Some(v) if v.eq_ignore_ascii_case("false") => false,
        Some(v) => {
            return Err(ApiError::bad_params(format!(
                "Invalid value for preferUserId: {v}"
            )));
        }
    };
    if state.cfg.faults.failing_lists.contains(&list_id) {
        return Err(ApiError::generic());
    }
    let list = visible_lists(&state)
        .into_iter()
        .find(|l| l.id == list_id)
        .ok_or_else(|| ApiError::bad_params(format!("List {list_id} does not exist")))?;
    let body = BodyChunks::new(&state.cfg, &list, prefer_user_id);
    let stream = futures::stream::unfold(body, |mut body| async move {
        body.next_chunk()
            .map(|chunk| (Ok::<Bytes, Infallible>(chunk), body))
    });
    Ok((
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        Body::from_stream(stream),
    )
        .into_response())
}

/// One line of a `getUsers` body.
enum Line {
    Member(String),
    Blank,
}

/// The lines of a list's body, generated one user at a time.
struct Lines {
    seed: u64,
    users: u32,
    members: Members,
    prefer_user_id: bool,
    membership: Dice,
    blanks: Dice,
    next_user: u32,
    members_so_far: u64,
    blank_pending: bool,
}

impl Lines {
    fn new(cfg: &FakeConfig, list: &List, prefer_user_id: bool) -> Lines {
        let topic = Dice::new(cfg.seed, "list members").at(list.def as u64);
        Lines {
            seed: cfg.seed,
            users: cfg.users,
            members: LISTS[list.def].members,
            prefer_user_id,
            membership: topic.at(0),
            blanks: topic.at(1),
            next_user: 0,
            members_so_far: 0,
            blank_pending: false,
        }
    }

    fn is_member(&self, user: u32) -> bool {
        match self.members {
            Members::All => true,
            Members::Share(p) => self.membership.at(user as u64).chance(p),
            Members::First(n) => user < n,
            Members::Empty => false,
        }
    }

    fn identifier(&self, user: u32) -> String {
        let user_id = if self.prefer_user_id {
            people::user_id(self.seed, user)
        } else {
            None
        };
        user_id.unwrap_or_else(|| people::email(self.seed, user))
    }
}

impl Iterator for Lines {
    type Item = Line;

    fn next(&mut self) -> Option<Line> {
        if self.blank_pending {
            self.blank_pending = false;
            return Some(Line::Blank);
        }
        while self.next_user < self.users {
            let user = self.next_user;
            self.next_user += 1;
            if !self.is_member(user) {
                continue;
            }
            self.members_so_far += 1;
            self.blank_pending =
                self.members_so_far == 3 || self.blanks.at(user as u64).below(61) == 0;
            return Some(Line::Member(self.identifier(user)));
        }
        None
    }
}

/// A `getUsers` body cut into chunks of about [`BodyChunks::CHUNK`] bytes: lines joined by
/// `\n`, with a final `\n` only for lists that have one.
struct BodyChunks {
    lines: Lines,
    trailing_newline: bool,
    first: bool,
    done: bool,
}

impl BodyChunks {
    const CHUNK: usize = 64 * 1024;

    fn new(cfg: &FakeConfig, list: &List, prefer_user_id: bool) -> BodyChunks {
        BodyChunks {
            lines: Lines::new(cfg, list, prefer_user_id),
            trailing_newline: LISTS[list.def].trailing_newline,
            first: true,
            done: false,
        }
    }

    fn next_chunk(&mut self) -> Option<Bytes> {
        if self.done {
            return None;
        }
        let mut buf = Vec::with_capacity(BodyChunks::CHUNK + 256);
        while buf.len() < BodyChunks::CHUNK {
            match self.lines.next() {
                Some(line) => {
                    if !self.first {
                        buf.push(b'\n');
                    }
                    self.first = false;
                    if let Line::Member(id) = line {
                        buf.extend_from_slice(id.as_bytes());
                    }
                }
                None => {
                    if self.trailing_newline && !self.first {
                        buf.push(b'\n');
                    }
                    self.done = true;
                    break;
                }
            }
        }
        (!buf.is_empty()).then(|| Bytes::from(buf))
    }
}

impl FakeIterable {
    /// The lists `GET /api/lists` serves now, as JSON objects, in response order.
    pub fn truth_lists(&self) -> Vec<serde_json::Value> {
        visible_lists(&self.state)
            .iter()
            .map(|l| serde_json::to_value(l).expect("a list serializes"))
            .collect()
    }

    /// The members `GET /api/lists/getUsers` lists now, in body order, without blank lines:
    /// emails, or with `prefer_user_id` the userId of users that have one. Empty for an
    /// unknown (or not yet created) list.
    pub fn truth_list_members(&self, list_id: i64, prefer_user_id: bool) -> Vec<String> {
        visible_lists(&self.state)
            .iter()
            .find(|l| l.id == list_id)
            .map(|list| {
                Lines::new(&self.state.cfg, list, prefer_user_id)
                    .filter_map(|line| match line {
                        Line::Member(id) => Some(id),
                        Line::Blank => None,
                    })
                    .collect()
            })
            .unwrap_or_default()
    }
}
