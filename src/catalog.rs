//! The declarative table of streams: one row per stream, naming its endpoint family, the
//! Iterable data type, the cursor and partition field, the primary key and its schema file.
//! Adding a stream means one row here, one file in `schemas/`, fake-API data and a test.

use std::fmt;

/// How a stream may be synced (DESIGN.md, "Sync semantics").
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SyncMode {
    /// Re-read a settling window after the cursor and replace the partitions it covers.
    Incremental,
    /// The run's snapshot replaces the previous one when it commits.
    FullRefreshOverwrite,
    /// Each run adds a `snapshot_date=` partition.
    FullRefreshAppend,
    /// Like `Incremental`, but keeps one row per primary key (the latest by cursor) in
    /// hash-bucketed files, rewriting only the buckets whose keys changed.
    IncrementalDeduped,
}

impl SyncMode {
    pub const ALL: [SyncMode; 4] = [
        SyncMode::Incremental,
        SyncMode::FullRefreshOverwrite,
        SyncMode::FullRefreshAppend,
        SyncMode::IncrementalDeduped,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            SyncMode::Incremental => "incremental",
            SyncMode::FullRefreshOverwrite => "full-refresh-overwrite",
            SyncMode::FullRefreshAppend => "full-refresh-append",
            SyncMode::IncrementalDeduped => "incremental-deduped",
        }
    }
}

impl fmt::Display for SyncMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The endpoint family a stream is read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// `GET /api/export/data.json?dataTypeName=…`: newline-delimited JSON, windowed on the
    /// cursor field. `alt_data_type` is a second spelling to try when the server rejects the
    /// first (the spec's `emailUnSubscribe` against the `emailUnsubscribe` seen in the wild).
    Export {
        data_type: &'static str,
        alt_data_type: Option<&'static str>,
    },
    /// A JSON document whose array `records` holds the records. `paged`: sent with
    /// `page`/`pageSize` and followed while the response has a `nextPageUrl`. `per_template_kind`:
    /// read once per `templateType` × `messageMedium`, both added to each record.
    Json {
        path: &'static str,
        records: &'static str,
        paged: bool,
        per_template_kind: bool,
    },
    /// `GET /api/lists/getUsers` for every list: text, one member per line.
    ListUsers,
    /// `GET /api/metadata`, each table's keys (paged by `nextMarker`), each key's value.
    Metadata,
    /// `GET /api/campaigns/metrics` for every campaign of `GET /api/campaigns`: CSV, one row
    /// per campaign.
    CampaignMetrics,
    /// `GET /api/export/userEvents` for every member of every list: NDJSON, read in batches
    /// of users with a checkpoint after each.
    UserEvents,
}

/// How a stream's files are laid out below its folder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// `date=YYYY-MM-DD` folders by the UTC date of the cursor; windowed, incremental.
    Dated,
    /// A snapshot of the whole stream, rewritten by each run.
    Snapshot,
    /// A snapshot per list, in `list_id=N` folders.
    PerList,
}

/// One row of the catalog.
#[derive(Debug, Clone, Copy)]
pub struct StreamDef {
    /// The stream's name: its folder in the lake and its name on the command line.
    pub name: &'static str,
    pub source: Source,
    pub layout: Layout,
    /// For dated streams, the record field whose UTC date partitions the stream and whose
    /// value is the cursor; empty for snapshots.
    pub cursor_field: &'static str,
    /// Fields identifying a record; empty for event streams, whose identity is `_event_id`.
    pub primary_key: &'static [&'static str],
    pub default_mode: SyncMode,
    /// The stream's JSON Schema (`schemas/<name>.json`), compiled into the binary.
    pub schema: &'static str,
    /// Synced only when named: `all` (and no `--streams`) leaves it out.
    pub opt_in: bool,
}

impl StreamDef {
    /// Whether rows of this stream are events (and so carry `_event_id`).
    pub fn is_event(&self) -> bool {
        self.primary_key.is_empty()
    }

    /// The Iterable export data type for export streams; the stream's name for the others.
    pub fn data_type(&self) -> &'static str {
        match self.source {
            Source::Export { data_type, .. } => data_type,
            _ => self.name,
        }
    }

    /// The sync modes the stream supports.
    pub fn modes(&self) -> &'static [SyncMode] {
        if self.source == Source::UserEvents {
            return &[SyncMode::FullRefreshOverwrite];
        }
        match self.layout {
            Layout::Dated if !self.primary_key.is_empty() => &SyncMode::ALL,
            Layout::Dated => &[
                SyncMode::Incremental,
                SyncMode::FullRefreshOverwrite,
                SyncMode::FullRefreshAppend,
            ],
            Layout::Snapshot | Layout::PerList => {
                &[SyncMode::FullRefreshOverwrite, SyncMode::FullRefreshAppend]
            }
        }
    }
}

macro_rules! event {
    ($name:literal, $data_type:literal) => {
        event!($name, $data_type, None)
    };
    ($name:literal, $data_type:literal, $alt:expr) => {
        StreamDef {
            name: $name,
            source: Source::Export {
                data_type: $data_type,
                alt_data_type: $alt,
            },
            layout: Layout::Dated,
            cursor_field: "createdAt",
            primary_key: &[],
            default_mode: SyncMode::Incremental,
            schema: include_str!(concat!("../schemas/", $name, ".json")),
            opt_in: false,
        }
    };
}

macro_rules! snapshot {
    ($name:literal, $source:expr, $layout:expr, $key:expr) => {
        StreamDef {
            name: $name,
            source: $source,
            layout: $layout,
            cursor_field: "",
            primary_key: $key,
            default_mode: SyncMode::FullRefreshOverwrite,
            schema: include_str!(concat!("../schemas/", $name, ".json")),
            opt_in: false,
        }
    };
}

const fn json(path: &'static str, records: &'static str, paged: bool) -> Source {
    Source::Json {
        path,
        records,
        paged,
        per_template_kind: false,
    }
}

/// Every stream: the export data types in the spec's order, the list-style endpoints, then
/// per-user events (opt-in: one request per list member).
pub static STREAMS: &[StreamDef] = &[
    event!("email_send", "emailSend"),
    event!("email_open", "emailOpen"),
    event!("email_click", "emailClick"),
    event!("hosted_unsubscribe_click", "hostedUnsubscribeClick"),
    event!("email_complaint", "emailComplaint"),
    event!("email_bounce", "emailBounce"),
    event!("email_send_skip", "emailSendSkip"),
    event!("push_send", "pushSend"),
    event!("push_open", "pushOpen"),
    event!("push_uninstall", "pushUninstall"),
    event!("push_bounce", "pushBounce"),
    event!("push_send_skip", "pushSendSkip"),
    event!("in_app_send", "inAppSend"),
    event!("in_app_open", "inAppOpen"),
    event!("in_app_click", "inAppClick"),
    event!("in_app_close", "inAppClose"),
    event!("in_app_delete", "inAppDelete"),
    event!("in_app_delivery", "inAppDelivery"),
    event!("in_app_send_skip", "inAppSendSkip"),
    event!("in_app_recall", "inAppRecall"),
    event!("inbox_session", "inboxSession"),
    event!("inbox_message_impression", "inboxMessageImpression"),
    event!("sms_send", "smsSend"),
    event!("sms_bounce", "smsBounce"),
    event!("sms_click", "smsClick"),
    event!("sms_received", "smsReceived"),
    event!("sms_send_skip", "smsSendSkip"),
    event!("web_push_send", "webPushSend"),
    event!("web_push_click", "webPushClick"),
    event!("web_push_send_skip", "webPushSendSkip"),
    event!("email_subscribe", "emailSubscribe"),
    event!(
        "email_unsubscribe",
        "emailUnSubscribe",
        Some("emailUnsubscribe")
    ),
    event!("purchase", "purchase"),
    event!("custom_event", "customEvent"),
    StreamDef {
        name: "users",
        source: Source::Export {
            data_type: "user",
            alt_data_type: None,
        },
        layout: Layout::Dated,
        cursor_field: "profileUpdatedAt",
        primary_key: &["email", "userId"],
        default_mode: SyncMode::Incremental,
        schema: include_str!("../schemas/users.json"),
        opt_in: false,
    },
    event!("sms_usage_info", "smsUsageInfo"),
    event!("embedded_send", "embeddedSend"),
    event!("embedded_send_skip", "embeddedSendSkip"),
    event!("embedded_click", "embeddedClick"),
    event!("embedded_received", "embeddedReceived"),
    event!("embedded_impression", "embeddedImpression"),
    event!("embedded_session", "embeddedSession"),
    event!("unknown_session", "unknownSession"),
    event!("journey_exit", "journeyExit"),
    event!("whatsapp_bounce", "whatsAppBounce"),
    event!("whatsapp_click", "whatsAppClick"),
    event!("whatsapp_received", "whatsAppReceived"),
    event!("whatsapp_seen", "whatsAppSeen"),
    event!("whatsapp_send", "whatsAppSend"),
    event!("whatsapp_send_skip", "whatsAppSendSkip"),
    event!("whatsapp_usage_info", "whatsAppUsageInfo"),
    snapshot!(
        "lists",
        json("lists", "lists", false),
        Layout::Snapshot,
        &["id"]
    ),
    snapshot!(
        "list_users",
        Source::ListUsers,
        Layout::PerList,
        &["listId", "email", "userId"]
    ),
    snapshot!(
        "campaigns",
        json("campaigns", "campaigns", true),
        Layout::Snapshot,
        &["id"]
    ),
    snapshot!(
        "channels",
        json("channels", "channels", false),
        Layout::Snapshot,
        &["id"]
    ),
    snapshot!(
        "message_types",
        json("messageTypes", "messageTypes", false),
        Layout::Snapshot,
        &["id"]
    ),
    snapshot!(
        "templates",
        Source::Json {
            path: "templates",
            records: "templates",
            paged: true,
            per_template_kind: true,
        },
        Layout::Snapshot,
        &["templateId"]
    ),
    snapshot!(
        "metadata",
        Source::Metadata,
        Layout::Snapshot,
        &["table", "key"]
    ),
    snapshot!(
        "campaigns_metrics",
        Source::CampaignMetrics,
        Layout::Snapshot,
        &["id"]
    ),
    StreamDef {
        name: "events",
        source: Source::UserEvents,
        layout: Layout::Dated,
        cursor_field: "createdAt",
        primary_key: &[],
        default_mode: SyncMode::FullRefreshOverwrite,
        schema: include_str!("../schemas/events.json"),
        opt_in: true,
    },
];

/// The stream with this name.
pub fn find(name: &str) -> Option<&'static StreamDef> {
    STREAMS.iter().find(|s| s.name == name)
}

/// The export stream for an Iterable data type, accepting either spelling where there are two.
pub fn by_data_type(data_type: &str) -> Option<&'static StreamDef> {
    STREAMS.iter().find(|s| match s.source {
        Source::Export {
            data_type: d,
            alt_data_type,
        } => d == data_type || alt_data_type == Some(data_type),
        _ => false,
    })
}

/// The export streams (one per export data type).
pub fn export_streams() -> impl Iterator<Item = &'static StreamDef> {
    STREAMS
        .iter()
        .filter(|s| matches!(s.source, Source::Export { .. }))
}

/// The streams `all` means: every stream but the opt-in ones.
pub fn default_streams() -> impl Iterator<Item = &'static StreamDef> {
    STREAMS.iter().filter(|s| !s.opt_in)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_export_data_type_of_the_spec_has_one_stream() {
        let spec: serde_json::Value =
            serde_json::from_str(include_str!("../tests/data/export_data_types.json")).unwrap();
        let types: Vec<&str> = spec
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        assert_eq!(types.len(), 51);
        for t in &types {
            assert!(by_data_type(t).is_some(), "no stream for {t}");
        }
        assert_eq!(export_streams().count(), types.len());
        let mut names: Vec<&str> = STREAMS.iter().map(|s| s.name).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), STREAMS.len(), "stream names are unique");
    }

    /// Fields seen in real records that the schemas once missed land typed, not in `_extra`.
    #[test]
    fn fields_real_events_carry_are_typed() {
        use crate::convert::{Decoder, StreamSchema};
        use arrow::array::{Array, AsArray};
        for (stream, fields) in [
            ("email_bounce", &[("status", "5.1.1")][..]),
            (
                "email_unsubscribe",
                &[
                    ("messageId", "0f1e2d"),
                    ("recipientState", "HardBounce"),
                    ("status", "5.1.1"),
                ],
            ),
            ("email_open", &[("device", "Mobile")]),
            ("email_click", &[("device", "Desktop")]),
        ] {
            let def = find(stream).unwrap();
            let schema = StreamSchema::parse(def.name, def.schema, true).unwrap();
            let mut line = serde_json::Map::new();
            for (k, v) in fields {
                line.insert(k.to_string(), (*v).into());
            }
            let line = serde_json::Value::Object(line).to_string();
            let batch = Decoder::new(schema.into(), 0, def.data_type())
                .decode(line.as_bytes())
                .unwrap()
                .batch;
            assert!(
                batch.column_by_name("_extra").unwrap().is_null(0),
                "{stream}"
            );
            for (k, v) in fields {
                let col = batch.column_by_name(k).unwrap().as_string::<i32>();
                assert_eq!(col.value(0), *v, "{stream}.{k}");
            }
        }
    }
}
