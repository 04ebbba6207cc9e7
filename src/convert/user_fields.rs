//! Typed custom user fields: the fields `GET /api/users/getFields` reports, turned into
//! columns added to the declared `users` schema.
//!
//! Types: `string` → Utf8, `long` → Int64, `double` → Float64, `boolean` → Boolean,
//! `date` → Timestamp(µs, UTC), `object` → a struct of the fields reported below it by dotted
//! path (`shoppingCart.total` is field `total` of struct `shoppingCart`), or JSON text when
//! none is; any other type name → JSON text. Values that do not fit stay in `_extra`.
//!
//! Which fields become columns (the others' values stay in `_extra`):
//! - every segment of the dotted name is a plain identifier, `[A-Za-z][A-Za-z0-9_]*` (so
//!   no system column `_…`, and nothing Spark refuses in a Parquet column name);
//! - its top-level name is not declared by `schemas/users.json` (those keep their declared
//!   type and shape), is not a partition column of any layout (`date`, `bucket`,
//!   `snapshot_date`, `list_id`), and does not equal another column's name ignoring case
//!   (DuckDB and Spark resolve names case-insensitively); among fields equal ignoring case
//!   the one recorded first wins (within one listing: the first in byte order);
//! - a dotted field's parent is reported as `object`.
//!
//! The schema only grows: the fields are recorded in the manifest in the order they were
//! first accepted (those of one listing sorted by name), and the columns follow the declared
//! ones in that order. A field that disappears from the listing keeps its column; a field
//! whose type changes keeps its first type (its misfits go to `_extra`), so no two files ever
//! disagree on a column's type (which Spark's `mergeSchema` refuses). A struct's fields are
//! fixed when the struct is first accepted: a field reported later below an existing
//! custom struct stays in `_extra`, so struct types never change either.

use std::collections::{BTreeMap, BTreeSet};

use super::schema::{Column, Kind};
use crate::manifest::CustomField;

/// Names that are partition folders in some layout, and so cannot be columns.
const PARTITION_COLUMNS: &[&str] = &["date", "bucket", "snapshot_date", "list_id"];

fn is_identifier(segment: &str) -> bool {
    let mut chars = segment.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn root(name: &str) -> &str {
    name.split('.').next().unwrap_or(name)
}

fn parent(name: &str) -> Option<&str> {
    name.rsplit_once('.').map(|(p, _)| p)
}

/// The recorded custom fields plus those of `reported` (name → type name) that may now be
/// added by the rules above. Returns `recorded` unchanged when nothing is new.
pub fn merge(
    declared: &[Column],
    recorded: &[CustomField],
    reported: &BTreeMap<String, String>,
) -> Vec<CustomField> {
    let lower = |s: &str| s.to_ascii_lowercase();
    let mut taken: BTreeSet<String> = declared.iter().map(|c| lower(&c.name)).collect();
    taken.extend(PARTITION_COLUMNS.iter().map(|s| s.to_string()));
    let recorded_roots: BTreeSet<String> = recorded.iter().map(|f| lower(root(&f.name))).collect();
    let mut out = recorded.to_vec();
    // Names accepted so far, lower-cased, to find case-insensitive clashes at every level.
    let mut names: BTreeSet<String> = recorded.iter().map(|f| lower(&f.name)).collect();
    for (name, type_name) in reported {
        let top = lower(root(name));
        let ok = name.split('.').all(is_identifier)
            && !taken.contains(&top)
            && !recorded_roots.contains(&top)
            && !names.contains(&lower(name))
            && parent(name).is_none_or(|p| {
                reported.get(p).map(String::as_str) == Some("object")
                    && out.iter().any(|f| f.name == p)
            });
        if ok {
            names.insert(lower(name));
            out.push(CustomField {
                name: name.clone(),
                type_name: type_name.clone(),
            });
        }
    }
    out
}

/// The declared columns followed by the custom fields' columns, in recorded order.
pub fn extend(mut declared: Vec<Column>, custom: &[CustomField]) -> Vec<Column> {
    let tops = custom.iter().filter(|f| parent(&f.name).is_none());
    declared.extend(tops.map(|f| column(&f.name, &f.name, &f.type_name, custom)));
    declared
}

fn column(path: &str, name: &str, type_name: &str, custom: &[CustomField]) -> Column {
    let kind = match type_name {
        "string" => Kind::Utf8,
        "long" => Kind::Int64,
        "double" => Kind::Float64,
        "boolean" => Kind::Boolean,
        "date" => Kind::Timestamp,
        "object" => {
            let mut children: Vec<&CustomField> = custom
                .iter()
                .filter(|f| parent(&f.name) == Some(path))
                .collect();
            children.sort();
            if children.is_empty() {
                Kind::Json
            } else {
                Kind::Struct(
                    children
                        .into_iter()
                        .map(|c| {
                            let leaf = c.name.rsplit('.').next().unwrap_or(&c.name);
                            column(&c.name, leaf, &c.type_name, custom)
                        })
                        .collect(),
                )
            }
        }
        _ => Kind::Json,
    };
    Column {
        name: name.to_string(),
        kind,
        description: (path == name).then(|| format!("custom user field ({type_name})")),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{Array, AsArray};
    use arrow::datatypes::Float64Type;

    use super::*;
    use crate::convert::{Decoder, StreamSchema};

    fn reported(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(n, t)| (n.to_string(), t.to_string()))
            .collect()
    }

    fn declared() -> Vec<Column> {
        let text = include_str!("../../schemas/users.json");
        StreamSchema::parse("users", text, false).unwrap().columns
    }

    fn names(fields: &[CustomField]) -> Vec<&str> {
        fields.iter().map(|f| f.name.as_str()).collect()
    }

    #[test]
    fn accepts_valid_new_fields_and_skips_the_rest() {
        let got = merge(
            &declared(),
            &[],
            &reported(&[
                ("email", "string"),
                ("itblInternal.extra", "string"),
                ("customScore", "double"),
                ("Nickname", "string"),
                ("nickname", "string"),
                ("Email", "string"),
                ("date", "date"),
                ("_secret", "string"),
                ("has space", "string"),
                ("cart", "object"),
                ("cart.total", "double"),
                ("orphan.child", "long"),
                ("nested", "object"),
                ("nested.inner", "object"),
                ("nested.inner.flag", "boolean"),
            ]),
        );
        assert_eq!(
            names(&got),
            [
                "Nickname",
                "cart",
                "cart.total",
                "customScore",
                "nested",
                "nested.inner",
                "nested.inner.flag"
            ]
        );
    }

    #[test]
    fn the_schema_only_grows_and_types_never_change() {
        let first = merge(
            &declared(),
            &[],
            &reported(&[
                ("score", "double"),
                ("cart", "object"),
                ("cart.total", "double"),
            ]),
        );
        let second = merge(
            &declared(),
            &first,
            &reported(&[("score", "string"), ("cart.count", "long"), ("aaa", "long")]),
        );
        assert_eq!(
            names(&second),
            ["cart", "cart.total", "score", "aaa"],
            "kept, none retyped, new struct fields refused, new column appended"
        );
        assert_eq!(second[2].type_name, "double");
        assert_eq!(merge(&declared(), &second, &BTreeMap::new()), second);
    }

    #[test]
    fn custom_columns_are_typed_and_misfits_go_to_extra() {
        let custom = merge(
            &declared(),
            &[],
            &reported(&[
                ("customScore", "double"),
                ("bigCounter", "long"),
                ("seen", "date"),
                ("vip", "boolean"),
                ("blob", "object"),
                ("cart", "object"),
                ("cart.total", "double"),
            ]),
        );
        let schema = Arc::new(StreamSchema::from_columns(
            extend(declared(), &custom),
            false,
        ));
        let types: Vec<String> = schema.arrow.fields()[declared().len()..]
            .iter()
            .map(|f| format!("{}:{}", f.name(), f.data_type()))
            .collect();
        assert_eq!(
            types,
            [
                "bigCounter:Int64",
                "blob:Utf8",
                "cart:Struct(\"total\": Float64)",
                "customScore:Float64",
                "seen:Timestamp(µs, \"UTC\")",
                "vip:Boolean",
                "_extra:Utf8",
                "_extracted_at:Timestamp(µs, \"UTC\")",
            ]
        );
        let decoder = Decoder::new(schema.clone(), 0, "user");
        let lines = concat!(
            r#"{"email":"a@x","customScore":"12.5","cart.total":3.25,"bigCounter":123456789012345678901234567890}"#,
            "\n",
            r#"{"email":"b@x","customScore":"high","seen":"2024-01-02 03:04:05 +00:00"}"#,
        );
        let batch = decoder.decode(lines.as_bytes()).unwrap().batch;
        let score = batch["customScore"].as_primitive::<Float64Type>();
        assert_eq!((score.value(0), score.is_null(1)), (12.5, true));
        let cart = batch["cart"].as_struct();
        assert_eq!(
            cart.column_by_name("total")
                .unwrap()
                .as_primitive::<Float64Type>()
                .value(0),
            3.25
        );
        let extra = batch["_extra"].as_string::<i32>();
        assert_eq!(
            extra.value(0),
            r#"{"bigCounter":123456789012345678901234567890}"#
        );
        assert_eq!(extra.value(1), r#"{"customScore":"high"}"#);
    }
}
