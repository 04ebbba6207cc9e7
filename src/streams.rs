//! `streams`: the catalog as a table or JSON, and one stream's Arrow schema (the columns of
//! its Parquet files, system columns included).

use arrow::datatypes::{DataType, Field};
use serde::Serialize;

use crate::catalog::{Layout, STREAMS, Source, StreamDef, SyncMode};
use crate::convert::StreamSchema;
use crate::convert::schema::SchemaError;

/// One stream, as `streams` describes it.
#[derive(Debug, Clone, Serialize)]
pub struct StreamInfo {
    pub name: &'static str,
    pub endpoint: String,
    pub data_type: &'static str,
    pub sync_modes: Vec<SyncMode>,
    pub default_mode: SyncMode,
    pub cursor_field: &'static str,
    pub primary_key: &'static [&'static str],
    pub partitioning: String,
    /// `partitioning` in a word or two, for the table.
    #[serde(skip)]
    pub partitioned_by: String,
}

pub fn info(def: &StreamDef) -> StreamInfo {
    let endpoint = match def.source {
        Source::Export { .. } => "GET /api/export/data.json".to_string(),
        Source::Json {
            path,
            per_template_kind,
            ..
        } => {
            let fan_out = if per_template_kind {
                " (per templateType × messageMedium)"
            } else {
                ""
            };
            format!("GET /api/{path}{fan_out}")
        }
        Source::ListUsers => "GET /api/lists/getUsers".to_string(),
        Source::Metadata => "GET /api/metadata/{table}/{key}".to_string(),
        Source::CampaignMetrics => "GET /api/campaigns/metrics".to_string(),
        Source::UserEvents => "GET /api/export/userEvents (per list member)".to_string(),
    };
    let append = "full-refresh-append: under snapshot_date=<run day>";
    let (partitioning, partitioned_by) = match def.layout {
        Layout::Dated => (
            format!("date=<UTC date of {}> ({append})", def.cursor_field),
            format!("date({})", def.cursor_field),
        ),
        Layout::Snapshot => (
            format!("none: one snapshot per run ({append})"),
            "-".to_string(),
        ),
        Layout::PerList => (
            format!("list_id=<list id> ({append})"),
            "list_id".to_string(),
        ),
    };
    StreamInfo {
        name: def.name,
        endpoint,
        data_type: def.data_type(),
        sync_modes: def.modes().to_vec(),
        default_mode: def.default_mode,
        cursor_field: def.cursor_field,
        primary_key: def.primary_key,
        partitioning,
        partitioned_by,
    }
}

pub fn all() -> Vec<StreamInfo> {
    STREAMS.iter().map(info).collect()
}

/// The catalog as a table.
pub fn render(streams: &[StreamInfo]) -> String {
    let mut out = format!(
        "{:<28} {:<26} {:<24} {:<13} {:<17} {:<14} partitioned by\n",
        "stream", "endpoint", "data type", "default mode", "cursor", "primary key"
    );
    for s in streams {
        let key = if s.primary_key.is_empty() {
            "_event_id".to_string()
        } else {
            s.primary_key.join("|")
        };
        out += &format!(
            "{:<28} {:<26} {:<24} {:<13} {:<17} {:<14} {}\n",
            s.name, s.endpoint, s.data_type, s.default_mode, s.cursor_field, key, s.partitioned_by
        );
    }
    out += &format!(
        "\n{} streams. Every stream syncs in any mode ({}); --mode overrides the default.\n\
         Events carry _event_id (a stable hash) as their identity. Files sit under\n\
         <stream>/date=YYYY-MM-DD/ by the cursor's UTC date (full-refresh-append: under\n\
         <stream>/snapshot_date=YYYY-MM-DD/ first). `streams --schema NAME` prints a schema.\n",
        streams.len(),
        SyncMode::ALL.map(SyncMode::as_str).join(", ")
    );
    out
}

/// A column of a schema, nested for structs and lists.
#[derive(Debug, Clone, Serialize)]
pub struct ColumnInfo {
    pub name: String,
    #[serde(rename = "type")]
    pub data_type: String,
    pub nullable: bool,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub fields: Vec<ColumnInfo>,
}

fn type_name(t: &DataType) -> String {
    match t {
        DataType::Struct(_) => "Struct".to_string(),
        DataType::List(item) | DataType::LargeList(item) => {
            format!("List<{}>", type_name(item.data_type()))
        }
        other => other.to_string(),
    }
}

fn column(f: &Field) -> ColumnInfo {
    let fields = match f.data_type() {
        DataType::Struct(children) => children.iter().map(|c| column(c)).collect(),
        _ => Vec::new(),
    };
    ColumnInfo {
        name: f.name().clone(),
        data_type: type_name(f.data_type()),
        nullable: f.is_nullable(),
        fields,
    }
}

/// The Arrow schema of `def`'s files.
pub fn schema(def: &StreamDef) -> Result<Vec<ColumnInfo>, SchemaError> {
    let schema = StreamSchema::parse(def.name, def.schema, def.is_event())?;
    Ok(schema.arrow.fields().iter().map(|f| column(f)).collect())
}

/// A schema as an indented table.
pub fn render_schema(stream: &str, columns: &[ColumnInfo]) -> String {
    fn rows(out: &mut String, columns: &[ColumnInfo], depth: usize) {
        for c in columns {
            let name = format!("{}{}", "  ".repeat(depth), c.name);
            let null = if c.nullable { "" } else { "not null" };
            *out += &format!("{name:<40} {:<36} {null}\n", c.data_type);
            rows(out, &c.fields, depth + 1);
        }
    }
    let mut out = format!("{stream}: {} columns\n", columns.len());
    out += &format!("{:<40} {:<36} nullable\n", "column", "arrow type");
    rows(&mut out, columns, 0);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_schema_renders_with_its_system_columns() {
        for def in STREAMS {
            let cols = schema(def).unwrap();
            let names: Vec<&str> = cols.iter().map(|c| c.name.as_str()).collect();
            if def.layout == Layout::Dated {
                assert!(names.contains(&def.cursor_field), "{}", def.name);
            }
            assert!(names.contains(&"_extracted_at"), "{}", def.name);
            assert_eq!(names.contains(&"_event_id"), def.is_event(), "{}", def.name);
        }
        let users = schema(crate::catalog::find("users").unwrap()).unwrap();
        let internal = users.iter().find(|c| c.name == "itblInternal").unwrap();
        assert_eq!(internal.data_type, "Struct");
        assert!(!internal.fields.is_empty());
        let text = render_schema("users", &users);
        assert!(text.contains("\n  emailDomain "), "{text}");
    }
}
