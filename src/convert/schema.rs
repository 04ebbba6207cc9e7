//! JSON Schema (the subset `schemas/*.json` use) → the column tree the decoder fills and the
//! Arrow schema of the stream's Parquet files.
//!
//! Supported: `string` (Utf8), `string` + `format: date-time` (Timestamp µs UTC), `integer`
//! (Int64), `number` (Float64), `boolean`, `object` with `properties` (Struct), `object`
//! without (free-form, kept as JSON text), `array` of a scalar type (List), `array` without a
//! scalar item type (JSON text). Every column is nullable. The system columns `_extra`,
//! `_extracted_at` and, for event streams, `_event_id` are appended.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Fields, Schema, SchemaRef, TimeUnit};
use serde_json::Value;

/// Fields the schema does not declare and values that do not fit their declared type.
pub const EXTRA: &str = "_extra";
/// When this run extracted the row.
pub const EXTRACTED_AT: &str = "_extracted_at";
/// A stable hash of an event's identity.
pub const EVENT_ID: &str = "_event_id";

/// The time zone of every timestamp column.
pub const UTC: &str = "UTC";

#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    #[error("schema of stream {stream} is not valid JSON: {source}")]
    Json {
        stream: String,
        source: serde_json::Error,
    },
    #[error("schema of stream {stream}: field {field}: {problem}")]
    Field {
        stream: String,
        field: String,
        problem: String,
    },
}

/// What a declared column holds.
#[derive(Debug, Clone, PartialEq)]
pub enum Kind {
    Utf8,
    Int64,
    Float64,
    Boolean,
    Timestamp,
    /// Free-form JSON kept as its text.
    Json,
    List(Box<Kind>),
    Struct(Vec<Column>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Column {
    pub name: String,
    pub kind: Kind,
    pub description: Option<String>,
}

/// A stream's parsed schema: the declared columns (in file order), a name index, and the
/// Arrow schema including the system columns.
#[derive(Debug)]
pub struct StreamSchema {
    pub columns: Vec<Column>,
    index: HashMap<String, usize>,
    pub with_event_id: bool,
    pub arrow: SchemaRef,
}

impl StreamSchema {
    /// Parse a stream's JSON Schema text.
    pub fn parse(stream: &str, text: &str, with_event_id: bool) -> Result<Self, SchemaError> {
        let doc: Value = serde_json::from_str(text).map_err(|source| SchemaError::Json {
            stream: stream.to_string(),
            source,
        })?;
        let columns = columns_of(stream, "", &doc)?;
        Ok(Self::from_columns(columns, with_event_id))
    }

    pub fn from_columns(columns: Vec<Column>, with_event_id: bool) -> Self {
        let index = columns
            .iter()
            .enumerate()
            .map(|(i, c)| (c.name.clone(), i))
            .collect();
        let mut fields: Vec<Field> = columns.iter().map(arrow_field).collect();
        fields.push(Field::new(EXTRA, DataType::Utf8, true));
        fields.push(Field::new(EXTRACTED_AT, timestamp_type(), false));
        if with_event_id {
            fields.push(Field::new(EVENT_ID, DataType::Utf8, false));
        }
        StreamSchema {
            columns,
            index,
            with_event_id,
            arrow: Arc::new(Schema::new(fields)),
        }
    }

    /// The position of a declared top-level column.
    pub fn position(&self, name: &str) -> Option<usize> {
        self.index.get(name).copied()
    }
}

pub fn timestamp_type() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some(UTC.into()))
}

fn type_names(v: &Value) -> Vec<&str> {
    match v.get("type") {
        Some(Value::String(s)) => vec![s.as_str()],
        Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    }
}

fn columns_of(stream: &str, prefix: &str, obj: &Value) -> Result<Vec<Column>, SchemaError> {
    let Some(props) = obj.get("properties").and_then(Value::as_object) else {
        return Ok(Vec::new());
    };
    props
        .iter()
        .map(|(name, def)| {
            let path = format!("{prefix}{name}");
            Ok(Column {
                name: name.clone(),
                kind: kind_of(stream, &path, def)?,
                description: def
                    .get("description")
                    .and_then(Value::as_str)
                    .map(str::to_string),
            })
        })
        .collect()
}

fn kind_of(stream: &str, path: &str, def: &Value) -> Result<Kind, SchemaError> {
    let types: Vec<&str> = type_names(def)
        .into_iter()
        .filter(|t| *t != "null")
        .collect();
    let problem = |p: &str| SchemaError::Field {
        stream: stream.to_string(),
        field: path.to_string(),
        problem: p.to_string(),
    };
    let [t] = types.as_slice() else {
        return Err(problem("declare exactly one non-null type"));
    };
    Ok(match *t {
        "string" if def.get("format").and_then(Value::as_str) == Some("date-time") => {
            Kind::Timestamp
        }
        "string" => Kind::Utf8,
        "integer" => Kind::Int64,
        "number" => Kind::Float64,
        "boolean" => Kind::Boolean,
        "object" if def.get("properties").is_some() => {
            let children = columns_of(stream, &format!("{path}."), def)?;
            if children.is_empty() {
                return Err(problem("an object with properties needs at least one"));
            }
            Kind::Struct(children)
        }
        "object" => Kind::Json,
        "array" => match def.get("items").map(|i| kind_of(stream, path, i)) {
            Some(Ok(item @ (Kind::Utf8 | Kind::Int64 | Kind::Float64 | Kind::Boolean))) => {
                Kind::List(Box::new(item))
            }
            _ => Kind::Json,
        },
        other => return Err(problem(&format!("unsupported type {other}"))),
    })
}

fn arrow_type(kind: &Kind) -> DataType {
    match kind {
        Kind::Utf8 | Kind::Json => DataType::Utf8,
        Kind::Int64 => DataType::Int64,
        Kind::Float64 => DataType::Float64,
        Kind::Boolean => DataType::Boolean,
        Kind::Timestamp => timestamp_type(),
        Kind::List(item) => DataType::List(Arc::new(Field::new("item", arrow_type(item), true))),
        Kind::Struct(children) => {
            DataType::Struct(children.iter().map(arrow_field).collect::<Fields>())
        }
    }
}

fn arrow_field(c: &Column) -> Field {
    let field = Field::new(&c.name, arrow_type(&c.kind), true);
    match &c.description {
        Some(d) => field.with_metadata(HashMap::from([("description".to_string(), d.clone())])),
        None => field,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::STREAMS;

    #[test]
    fn every_catalog_schema_parses() {
        for s in STREAMS {
            let schema = StreamSchema::parse(s.name, s.schema, s.is_event()).unwrap();
            if s.layout == crate::catalog::Layout::Dated {
                let cursor = schema
                    .position(s.cursor_field)
                    .unwrap_or_else(|| panic!("{} declares its cursor", s.name));
                assert_eq!(schema.columns[cursor].kind, Kind::Timestamp, "{}", s.name);
            }
            for key in s.primary_key {
                assert!(
                    schema.position(key).is_some(),
                    "{} declares its key {key}",
                    s.name
                );
            }
            assert_eq!(
                schema.arrow.field_with_name(EVENT_ID).is_ok(),
                s.is_event(),
                "{}",
                s.name
            );
        }
    }

    #[test]
    fn maps_each_json_schema_type() {
        let text = r#"{"properties": {
            "a": {"type": ["string", "null"]},
            "t": {"type": "string", "format": "date-time", "description": "when"},
            "i": {"type": "integer"}, "n": {"type": "number"}, "b": {"type": "boolean"},
            "o": {"type": "object"},
            "s": {"type": "object", "properties": {"x": {"type": "integer"}}},
            "l": {"type": "array", "items": {"type": "integer"}},
            "j": {"type": "array", "items": {"type": "object"}}
        }}"#;
        let s = StreamSchema::parse("t", text, false).unwrap();
        let types: Vec<String> = s
            .arrow
            .fields()
            .iter()
            .map(|f| format!("{}:{}", f.name(), f.data_type()))
            .collect();
        assert_eq!(
            types,
            [
                "a:Utf8",
                "t:Timestamp(µs, \"UTC\")",
                "i:Int64",
                "n:Float64",
                "b:Boolean",
                "o:Utf8",
                "s:Struct(\"x\": Int64)",
                "l:List(Int64)",
                "j:Utf8",
                "_extra:Utf8",
                "_extracted_at:Timestamp(µs, \"UTC\")",
            ]
        );
        assert_eq!(
            s.arrow.field_with_name("t").unwrap().metadata()["description"],
            "when"
        );
    }

    #[test]
    fn rejects_ambiguous_and_unknown_types() {
        for text in [
            r#"{"properties": {"a": {"type": ["string", "integer"]}}}"#,
            r#"{"properties": {"a": {"type": "date"}}}"#,
            r#"{"properties": {"a": {}}}"#,
        ] {
            let err = StreamSchema::parse("s", text, false).unwrap_err();
            assert!(err.to_string().contains("field a"), "{err}");
        }
    }
}
