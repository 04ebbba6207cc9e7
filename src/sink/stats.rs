//! Column statistics of a written Parquet file, taken from the footer its writer produced:
//! per column (struct fields nested as objects) the smallest and largest value and the null
//! count, in the shape of Delta Lake's file statistics (`minValues`, `maxValues`,
//! `nullCount`), so engines can skip files.

use std::collections::HashMap;

use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use chrono::DateTime;
use parquet::file::metadata::ParquetMetaData;
use parquet::file::statistics::Statistics;
use serde_json::{Map, Value, json};

/// A column's bound, comparable across row groups.
#[derive(Debug, Clone, PartialEq, PartialOrd)]
enum Bound {
    Int(i64),
    Float(f64),
    Text(String),
}

/// One leaf column over the file: its bounds (when every row group has exact ones) and
/// null count (when every row group has one).
struct Leaf {
    min: Option<Bound>,
    max: Option<Bound>,
    nulls: Option<u64>,
}

/// `{"minValues": …, "maxValues": …, "nullCount": …}` of the file. Columns without
/// statistics in some row group, lists, and the bounds of booleans are left out; string
/// bounds only when exact (not truncated); instants in milliseconds, widened outward, as
/// Delta readers compare them.
pub fn column_stats(schema: &Schema, meta: &ParquetMetaData) -> Value {
    let columns: HashMap<String, usize> = meta
        .file_metadata()
        .schema_descr()
        .columns()
        .iter()
        .enumerate()
        .map(|(i, c)| (c.path().string(), i))
        .collect();
    let mut out = [Map::new(), Map::new(), Map::new()];
    for f in schema.fields() {
        add(f, "", &columns, meta, &mut out);
    }
    let [min, max, nulls] = out;
    json!({"minValues": min, "maxValues": max, "nullCount": nulls})
}

fn add(
    field: &Field,
    prefix: &str,
    columns: &HashMap<String, usize>,
    meta: &ParquetMetaData,
    out: &mut [Map<String, Value>; 3],
) {
    let path = match prefix {
        "" => field.name().clone(),
        p => format!("{p}.{}", field.name()),
    };
    match field.data_type() {
        DataType::Struct(children) => {
            let mut inner = [Map::new(), Map::new(), Map::new()];
            for c in children {
                add(c, &path, columns, meta, &mut inner);
            }
            for (o, i) in out.iter_mut().zip(inner) {
                if !i.is_empty() {
                    o.insert(field.name().clone(), Value::Object(i));
                }
            }
        }
        DataType::List(_) => {}
        t => {
            let Some(leaf) = columns.get(&path).and_then(|&c| leaf(meta, c, t)) else {
                return;
            };
            let [min, max, nulls] = out;
            let name = field.name().clone();
            if let Some(v) = leaf.min.and_then(|b| json_bound(b, t, false)) {
                min.insert(name.clone(), v);
            }
            if let Some(v) = leaf.max.and_then(|b| json_bound(b, t, true)) {
                max.insert(name.clone(), v);
            }
            if let Some(n) = leaf.nulls {
                nulls.insert(name, json!(n));
            }
        }
    }
}

/// The file's bounds and nulls of leaf column `column`, of Arrow type `t`.
fn leaf(meta: &ParquetMetaData, column: usize, t: &DataType) -> Option<Leaf> {
    let mut out = Leaf {
        min: None,
        max: None,
        nulls: Some(0),
    };
    let mut bounded = true;
    for rg in meta.row_groups() {
        let s = rg.column(column).statistics()?;
        out.nulls = out.nulls.zip(s.null_count_opt()).map(|(a, b)| a + b);
        let bounds = match (t, s) {
            (DataType::Boolean, _) => None,
            (_, Statistics::Int64(v)) => v
                .min_opt()
                .zip(v.max_opt())
                .map(|(a, b)| (Bound::Int(*a), Bound::Int(*b))),
            (_, Statistics::Double(v)) => v
                .min_opt()
                .zip(v.max_opt())
                .filter(|(a, b)| a.is_finite() && b.is_finite())
                .map(|(a, b)| (Bound::Float(*a), Bound::Float(*b))),
            (DataType::Utf8, Statistics::ByteArray(v)) if v.min_is_exact() && v.max_is_exact() => {
                let text = |b: &parquet::data_type::ByteArray| {
                    b.as_utf8().ok().map(|s| Bound::Text(s.to_string()))
                };
                v.min_opt().and_then(text).zip(v.max_opt().and_then(text))
            }
            _ => None,
        };
        match bounds {
            Some((lo, hi)) if bounded => {
                if out.min.as_ref().is_none_or(|m| lo < *m) {
                    out.min = Some(lo);
                }
                if out.max.as_ref().is_none_or(|m| hi > *m) {
                    out.max = Some(hi);
                }
            }
            // A row group of only nulls has no bounds and does not widen them.
            None if s.null_count_opt() == Some(rg.num_rows() as u64) => {}
            _ => bounded = false,
        }
    }
    if !bounded {
        out.min = None;
        out.max = None;
    }
    Some(out)
}

/// An instant (µs) as Delta statistics hold it: whole milliseconds, widened outward
/// (`upper`: rounded up), as Delta readers compare instants in milliseconds.
pub fn instant_bound(micros: i64, upper: bool) -> Option<Value> {
    let ms = match upper {
        true => (micros + 999).div_euclid(1000),
        false => micros.div_euclid(1000),
    };
    let t = DateTime::from_timestamp_millis(ms)?;
    Some(json!(t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()))
}

/// A bound as Delta statistics hold it ([`instant_bound`] for instants).
fn json_bound(b: Bound, t: &DataType, upper: bool) -> Option<Value> {
    match (b, t) {
        (Bound::Int(micros), DataType::Timestamp(TimeUnit::Microsecond, _)) => {
            instant_bound(micros, upper)
        }
        (Bound::Int(n), _) => Some(json!(n)),
        (Bound::Float(x), _) => Some(json!(x)),
        (Bound::Text(s), _) => Some(json!(s)),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{
        ArrayRef, BooleanArray, Float64Array, Int64Array, ListArray, RecordBatch, StringArray,
        StructArray, TimestampMicrosecondArray,
    };
    use arrow::datatypes::{Field, Fields, Int64Type};
    use parquet::arrow::ArrowWriter;
    use parquet::file::properties::WriterProperties;

    use super::*;

    #[test]
    fn bounds_and_nulls_over_row_groups_nested_fields_and_instants() {
        let inner = Fields::from(vec![Field::new("domain", DataType::Utf8, true)]);
        let ts = DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, true),
            Field::new("at", ts, true),
            Field::new("score", DataType::Float64, true),
            Field::new("ok", DataType::Boolean, true),
            Field::new("name", DataType::Utf8, true),
            Field::new("itbl", DataType::Struct(inner.clone()), true),
            Field::new_list("tags", Field::new("item", DataType::Int64, true), true),
        ]));
        let batch = |ids: Vec<Option<i64>>, names: Vec<Option<&str>>| {
            let n = ids.len();
            let at: Vec<Option<i64>> = ids.iter().map(|i| i.map(|i| i * 1_000_500)).collect();
            let cols: Vec<ArrayRef> = vec![
                Arc::new(Int64Array::from(ids.clone())),
                Arc::new(TimestampMicrosecondArray::from(at).with_timezone("UTC")),
                Arc::new(Float64Array::from(vec![Some(0.5); n])),
                Arc::new(BooleanArray::from(vec![Some(true); n])),
                Arc::new(StringArray::from(names.clone())),
                Arc::new(StructArray::new(
                    inner.clone(),
                    vec![Arc::new(StringArray::from(names)) as ArrayRef],
                    None,
                )),
                Arc::new(ListArray::from_iter_primitive::<Int64Type, _, _>(
                    (0..n).map(|_| Some(vec![Some(1)])),
                )),
            ];
            RecordBatch::try_new(schema.clone(), cols).unwrap()
        };
        let props = WriterProperties::builder()
            .set_max_row_group_row_count(Some(2))
            .build();
        let mut out = Vec::new();
        let mut w = ArrowWriter::try_new(&mut out, schema.clone(), Some(props)).unwrap();
        w.write(&batch(vec![Some(5), None], vec![Some("m"), None]))
            .unwrap();
        w.write(&batch(vec![Some(2), Some(9)], vec![Some("b"), Some("z")]))
            .unwrap();
        // The footer the writer hands back, as the lake's writer uses it.
        let meta = w.close().unwrap();
        assert_eq!(meta.num_row_groups(), 2);
        let s = column_stats(&schema, &meta);
        assert_eq!(s["minValues"]["id"], 2);
        assert_eq!(s["maxValues"]["id"], 9);
        assert_eq!(s["nullCount"]["id"], 1);
        // 2 × 1.0005 s = 2.001 s; 9 × 1.0005 s = 9.0045 s, rounded up to 9.005.
        assert_eq!(s["minValues"]["at"], "1970-01-01T00:00:02.001Z");
        assert_eq!(s["maxValues"]["at"], "1970-01-01T00:00:09.005Z");
        assert_eq!(s["minValues"]["score"], 0.5);
        assert_eq!(s["minValues"]["name"], "b");
        assert_eq!(s["maxValues"]["name"], "z");
        assert_eq!(s["minValues"]["itbl"]["domain"], "b");
        assert_eq!(s["nullCount"]["itbl"]["domain"], 1);
        assert_eq!(s["nullCount"]["ok"], 0);
        assert!(s["minValues"].get("ok").is_none(), "no bounds for booleans");
        assert!(s["minValues"].get("tags").is_none() && s["nullCount"].get("tags").is_none());
    }
}
