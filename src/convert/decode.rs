//! NDJSON lines → Arrow `RecordBatch`, driven by the stream's schema.
//!
//! Each line is split once into keys and raw JSON values ([`flat::split`], or serde_json for
//! what that fast path refuses), each value routed to the declared column it names (dotted
//! keys such as `itblInternal.emailDomain` reach the struct field), converted with lossless
//! coercions only, and appended to that column's builder. What the schema does not declare,
//! and what does not fit, is written verbatim into `_extra` as a JSON object, so nothing the
//! API sent is lost. A line that is not a JSON object becomes a row whose `_extra` holds it
//! under `_malformed_line` (and, if it is not UTF-8, byte for byte under
//! `_malformed_line_base64`), and is counted.
//!
//! A [`Decoder`] is built once per stream and window; `decode` is pure and may run on many
//! threads at once, one chunk each.

use std::borrow::Cow;
use std::fmt::{self, Write as _};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use arrow::array::{
    ArrayBuilder, ArrayRef, BooleanBuilder, Float64Builder, Int64Builder, ListArray, StringBuilder,
    StructArray, TimestampMicrosecondBuilder,
};
use arrow::buffer::{NullBuffer, OffsetBuffer};
use arrow::datatypes::{DataType, FieldRef, Fields};
use arrow::error::ArrowError;
use arrow::record_batch::RecordBatch;
use base64::Engine as _;
use base64::prelude::BASE64_STANDARD;
use rustc_hash::FxHashMap;
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;
use xxhash_rust::xxh3::{xxh3_64, xxh3_128, xxh3_128_with_seed};

use super::flat;
use super::schema::{Column, Kind, StreamSchema, UTC};
use super::timestamp::{from_epoch_millis, parse_instant};

/// The key under which a line that is not a JSON object is kept in `_extra`.
pub const MALFORMED_LINE: &str = "_malformed_line";
/// The key under which a line that is not even UTF-8 is also kept, in base64: its text under
/// [`MALFORMED_LINE`] has U+FFFD for the bytes that are not.
pub const MALFORMED_LINE_BASE64: &str = "_malformed_line_base64";

/// The fewest bytes per line the builders are sized for (builders grow past it if needed).
const MIN_LINE_BYTES: usize = 64;

/// A decoded chunk of lines.
#[derive(Debug)]
pub struct Decoded {
    pub batch: RecordBatch,
    /// Lines that were not JSON objects (kept in `_extra`).
    pub malformed: usize,
}

/// Turns lines of one stream into record batches.
#[derive(Debug)]
pub struct Decoder {
    schema: Arc<StreamSchema>,
    /// Flattened column tree: node ids index `nodes`, top-level columns first.
    nodes: Vec<Node>,
    top: Vec<usize>,
    /// Top-level names, and dotted `parent.child` names of struct fields, to node ids.
    lookup: FxHashMap<String, usize>,
    extracted_at: i64,
    /// Mixed into `_event_id` so equal payloads of different types differ.
    identity_salt: String,
    /// Bytes per line of the last chunk, to size the next chunk's builders; at least
    /// [`MIN_LINE_BYTES`], so a chunk of tiny lines cannot make the next one reserve for rows
    /// it does not have.
    bytes_per_line: AtomicUsize,
}

#[derive(Debug)]
struct Node {
    path: String,
    /// The hash of `path` as a key, the seed of its value's hash in the event's identity.
    key_hash: u64,
    /// Text bytes per row the last chunk held, to size the next chunk's builder.
    bytes_per_row: AtomicUsize,
    kind: Kind,
    /// For structs: child name → node id, and the Arrow fields.
    children: FxHashMap<String, usize>,
    child_order: Vec<usize>,
    fields: Option<Fields>,
    list_field: Option<FieldRef>,
}

impl Decoder {
    /// `extracted_at` (µs since the epoch) fills `_extracted_at`; `identity_salt` (the data
    /// type) is part of every `_event_id`.
    pub fn new(schema: Arc<StreamSchema>, extracted_at: i64, identity_salt: &str) -> Self {
        let mut nodes = Vec::new();
        let mut lookup = FxHashMap::default();
        let top = schema
            .columns
            .iter()
            .map(|c| add_node(&mut nodes, &mut lookup, c, ""))
            .collect();
        Decoder {
            schema,
            nodes,
            top,
            lookup,
            extracted_at,
            identity_salt: identity_salt.to_string(),
            bytes_per_line: AtomicUsize::new(256),
        }
    }

    pub fn schema(&self) -> &Arc<StreamSchema> {
        &self.schema
    }

    /// Decode a chunk of complete newline-separated lines. Blank lines are skipped.
    pub fn decode(&self, chunk: &[u8]) -> Result<Decoded, ArrowError> {
        let rows_hint = chunk.len() / self.bytes_per_line.load(Ordering::Relaxed) + 1;
        let mut b = Builders::new(&self.nodes, rows_hint, chunk.len());
        let mut extra = StringBuilder::with_capacity(rows_hint, 0);
        let mut event_id = StringBuilder::with_capacity(rows_hint, rows_hint * 32);
        let mut row = Row::new(self.nodes.len());
        let mut identity_input = Vec::new();
        let mut malformed = 0;
        let mut rows = 0;
        // Validate UTF-8 once for the chunk, so the parser need not for every string.
        let valid = simdutf8::basic::from_utf8(chunk).ok();
        for range in line_ranges(chunk) {
            let line = &chunk[range.clone()];
            let text = match valid {
                Some(text) => text.get(range),
                None => simdutf8::basic::from_utf8(line).ok(),
            };
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            let text = text.map(|t| t.strip_suffix('\r').unwrap_or(t));
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            rows += 1;
            row.clear();
            let parsed = match text {
                Some(text) => self.visit_line(text, &mut row),
                None => Err(()),
            };
            if parsed.is_err() {
                malformed += 1;
                row.clear();
                let text = String::from_utf8_lossy(line);
                row.extra_owned
                    .push((MALFORMED_LINE.to_string(), json_string(&text)));
                if let Cow::Owned(_) = text {
                    row.extra_owned.push((
                        MALFORMED_LINE_BASE64.to_string(),
                        json_string(&BASE64_STANDARD.encode(line)),
                    ));
                }
            }
            for &id in &self.top {
                self.append(id, &mut row, &mut b);
            }
            row.append_extra(&mut extra);
            if self.schema.with_event_id {
                let hex = self.identity(line, &row, parsed.is_ok(), &mut identity_input);
                event_id.append_value(std::str::from_utf8(&hex).expect("hex digits are ASCII"));
            }
        }
        let mut columns: Vec<ArrayRef> = self
            .top
            .iter()
            .map(|&id| b.finish(id, &self.nodes))
            .collect();
        columns.push(Arc::new(extra.finish()));
        let mut at = TimestampMicrosecondBuilder::with_capacity(rows).with_timezone(UTC);
        at.append_value_n(self.extracted_at, rows);
        columns.push(Arc::new(at.finish()));
        if self.schema.with_event_id {
            columns.push(Arc::new(event_id.finish()));
        }
        let batch = RecordBatch::try_new(self.schema.arrow.clone(), columns)?;
        if let Some(per_line) = chunk.len().checked_div(rows) {
            self.bytes_per_line
                .store(per_line.max(MIN_LINE_BYTES), Ordering::Relaxed);
        }
        Ok(Decoded { batch, malformed })
    }

    fn visit_line<'a>(&self, line: &'a str, row: &mut Row<'a>) -> Result<(), ()> {
        let split = flat::split(line, |key, raw| {
            self.route(Scope::Top, Cow::Borrowed(key), raw, row)
        });
        if split.is_some() {
            return Ok(());
        }
        row.clear();
        let mut de = serde_json::Deserializer::from_str(line);
        ObjectSeed {
            decoder: self,
            scope: Scope::Top,
            row,
        }
        .deserialize(&mut de)
        .and_then(|()| de.end())
        .map_err(|_| ())
    }

    /// Route one key/value pair into a slot, or into `_extra`.
    fn route<'a>(&self, scope: Scope, key: Cow<'a, str>, raw: &'a str, row: &mut Row<'a>) {
        let id = match scope {
            Scope::Top => self.top_level(&key, row),
            Scope::Struct(parent) => self.nodes[parent].children.get(key.as_ref()).copied(),
        };
        if self.schema.with_event_id
            && let Scope::Top = scope
            && !key.starts_with("itblInternal")
        {
            match id {
                Some(id)
                    if row.slots[id].is_none()
                        && needs_typed_identity(&self.nodes[id].kind, raw) =>
                {
                    row.typed_identity[id] = true;
                }
                _ => {
                    let seed = match id {
                        Some(id) => self.nodes[id].key_hash,
                        None => xxh3_64(key.as_bytes()),
                    };
                    row.add_identity(raw.as_bytes(), seed);
                }
            }
        }
        let Some(id) = id else {
            row.extra_at(scope, self, key, raw);
            return;
        };
        if row.slots[id].is_some() {
            row.extra_at(scope, self, key, raw);
            return;
        }
        if matches!(self.nodes[id].kind, Kind::Struct(_))
            && raw != "null"
            && self.visit_struct(id, raw, row).is_err()
        {
            row.extra_at(scope, self, key, raw);
            return;
        }
        row.slots[id] = Some(raw);
        row.present[id] = true;
    }

    /// Route the entries of the object `raw` into the fields of struct node `id`. The fast
    /// path collects them first, so a refusal leaves nothing half routed.
    fn visit_struct<'a>(&self, id: usize, raw: &'a str, row: &mut Row<'a>) -> Result<(), ()> {
        let mut entries = std::mem::take(&mut row.entries);
        entries.clear();
        let split = flat::split(raw, |key, value| entries.push((key, value)));
        let visited = match split {
            Some(()) => {
                for &(key, value) in &entries {
                    self.route(Scope::Struct(id), Cow::Borrowed(key), value, row);
                }
                Ok(())
            }
            None => {
                let mut de = serde_json::Deserializer::from_str(raw);
                ObjectSeed {
                    decoder: self,
                    scope: Scope::Struct(id),
                    row,
                }
                .deserialize(&mut de)
                .map_err(|_| ())
            }
        };
        row.entries = entries;
        visited
    }

    /// The node a top-level key names. Lines of one export list their keys in the same order,
    /// so the key that followed the previous one last time is tried before the hash map.
    fn top_level(&self, key: &str, row: &mut Row<'_>) -> Option<usize> {
        let guess = row.next_key[row.prev_key];
        let id = match self.nodes.get(guess) {
            Some(node) if node.path == key => Some(guess),
            _ => self.lookup.get(key).copied(),
        };
        if let Some(id) = id {
            row.next_key[row.prev_key] = id;
            row.prev_key = id;
        }
        id
    }

    fn append(&self, id: usize, row: &mut Row<'_>, b: &mut Builders) {
        let node = &self.nodes[id];
        let raw = row.slots[id].filter(|&r| r != "null");
        if let Kind::Struct(_) = node.kind {
            let any_child = node.child_order.iter().any(|&c| row.present[c]);
            b.nulls[id].push(raw.is_some() || any_child);
            for &c in &node.child_order {
                self.append(c, row, b);
            }
            return;
        }
        let typed = match raw {
            None => b.append_null(id, &node.kind).then_some(Scalar::Null),
            Some(raw) => b.append(id, &node.kind, raw),
        };
        if typed.is_none() {
            b.append_null(id, &node.kind);
            if let Some(raw) = raw {
                row.extra_owned.push((node.path.clone(), raw.to_string()));
            }
        }
        if row.typed_identity[id] {
            let raw = row.slots[id].unwrap_or("null");
            let mut text = std::mem::take(&mut row.scratch);
            let hashed = typed_identity_text(&node.kind, raw, typed.as_ref(), &mut text);
            row.add_identity(hashed, node.key_hash);
            row.scratch = text;
        }
    }

    /// A stable hash of the event: its data type and every top-level field but Iterable's
    /// internal bookkeeping (`itblInternal…`). Each field's hash is added up, so the order of
    /// the fields does not matter; a line that is not JSON is hashed as it is. A field is
    /// hashed as written, but for what its typed column reads the same whatever the
    /// spelling ([`typed_identity_text`]): an instant, and a number or boolean sent as a string.
    ///
    /// `input` is scratch space, reused across rows.
    fn identity(&self, line: &[u8], row: &Row<'_>, parsed: bool, input: &mut Vec<u8>) -> [u8; 32] {
        input.clear();
        input.extend_from_slice(self.identity_salt.as_bytes());
        input.push(0);
        if parsed {
            input.extend_from_slice(&row.identity.to_le_bytes());
        } else {
            input.extend_from_slice(line);
        }
        let digest = xxh3_128(input);
        let mut hex = [0u8; 32];
        for (i, c) in hex.iter_mut().enumerate() {
            *c = b"0123456789abcdef"[(digest >> (124 - 4 * i) & 0xf) as usize];
        }
        hex
    }
}

fn add_node(
    nodes: &mut Vec<Node>,
    lookup: &mut FxHashMap<String, usize>,
    c: &Column,
    prefix: &str,
) -> usize {
    let id = nodes.len();
    let path = format!("{prefix}{}", c.name);
    nodes.push(Node {
        key_hash: xxh3_64(path.as_bytes()),
        bytes_per_row: AtomicUsize::new(16),
        path: path.clone(),
        kind: c.kind.clone(),
        children: FxHashMap::default(),
        child_order: Vec::new(),
        fields: None,
        list_field: None,
    });
    if prefix.is_empty() || prefix.matches('.').count() == 1 {
        lookup.insert(path.clone(), id);
    }
    match &c.kind {
        Kind::Struct(children) => {
            let mut order = Vec::new();
            let mut by_name = FxHashMap::default();
            for child in children {
                let cid = add_node(nodes, lookup, child, &format!("{path}."));
                by_name.insert(child.name.clone(), cid);
                order.push(cid);
            }
            let DataType::Struct(fields) = struct_type(children) else {
                unreachable!("struct_type builds a struct")
            };
            let node = &mut nodes[id];
            node.children = by_name;
            node.child_order = order;
            node.fields = Some(fields);
        }
        Kind::List(item) => {
            let DataType::List(field) = list_type(item) else {
                unreachable!("list_type builds a list")
            };
            nodes[id].list_field = Some(field);
        }
        _ => {}
    }
    id
}

fn struct_type(children: &[Column]) -> DataType {
    let schema = StreamSchema::from_columns(
        vec![Column {
            name: "s".into(),
            kind: Kind::Struct(children.to_vec()),
            description: None,
        }],
        false,
    );
    schema.arrow.field(0).data_type().clone()
}

fn list_type(item: &Kind) -> DataType {
    let schema = StreamSchema::from_columns(
        vec![Column {
            name: "l".into(),
            kind: Kind::List(Box::new(item.clone())),
            description: None,
        }],
        false,
    );
    schema.arrow.field(0).data_type().clone()
}

/// The byte ranges of the lines of `chunk`, split at each '\n' (the last may be empty).
fn line_ranges(chunk: &[u8]) -> impl Iterator<Item = std::ops::Range<usize>> {
    let mut start = 0;
    memchr::memchr_iter(b'\n', chunk)
        .chain(std::iter::once(chunk.len()))
        .map(move |end| {
            let line = start..end;
            start = end + 1;
            line
        })
}

fn json_string(s: &str) -> String {
    serde_json::to_string(s).expect("a string serializes")
}

#[derive(Clone, Copy)]
enum Scope {
    Top,
    Struct(usize),
}

/// Per-row scratch space, reused across rows.
struct Row<'a> {
    slots: Vec<Option<&'a str>>,
    present: Vec<bool>,
    extra: Vec<(Cow<'a, str>, &'a str)>,
    /// Scratch space for the entries of a struct's object.
    entries: Vec<(&'a str, &'a str)>,
    extra_owned: Vec<(String, String)>,
    /// The sum of the hashes of the fields that make the event's identity.
    identity: u128,
    /// The top-level nodes whose identity is hashed from their typed value, once appended.
    typed_identity: Vec<bool>,
    /// Scratch space for the text such a value is hashed as.
    scratch: Vec<u8>,
    /// The last top-level node a key of this row named (`slots.len()` before the first), and
    /// for each node the one whose key came after it last time (`usize::MAX`: none yet).
    prev_key: usize,
    next_key: Vec<usize>,
}

impl<'a> Row<'a> {
    fn new(n: usize) -> Self {
        Row {
            slots: vec![None; n],
            present: vec![false; n],
            extra: Vec::new(),
            entries: Vec::new(),
            extra_owned: Vec::new(),
            identity: 0,
            typed_identity: vec![false; n],
            scratch: Vec::new(),
            prev_key: n,
            next_key: vec![usize::MAX; n + 1],
        }
    }

    fn clear(&mut self) {
        self.slots.fill(None);
        self.present.fill(false);
        self.extra.clear();
        self.extra_owned.clear();
        self.identity = 0;
        self.typed_identity.fill(false);
        self.prev_key = self.slots.len();
    }

    /// Add the hash of one field's `text` under its key's `seed` to the event's identity.
    fn add_identity(&mut self, text: &[u8], seed: u64) {
        self.identity = self.identity.wrapping_add(xxh3_128_with_seed(text, seed));
    }

    fn extra_at(&mut self, scope: Scope, d: &Decoder, key: Cow<'a, str>, raw: &'a str) {
        let path = match scope {
            Scope::Top => key,
            Scope::Struct(parent) => Cow::Owned(format!("{}.{key}", d.nodes[parent].path)),
        };
        self.extra.push((path, raw));
    }

    /// Append the row's `_extra` (a JSON object of what no column took, or null) to `out`,
    /// written straight into the builder.
    fn append_extra(&self, out: &mut StringBuilder) {
        if self.extra.is_empty() && self.extra_owned.is_empty() {
            out.append_null();
            return;
        }
        let pairs = self.extra.iter().map(|(k, v)| (k.as_ref(), *v)).chain(
            self.extra_owned
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str())),
        );
        let mut sep = '{';
        for (k, v) in pairs {
            let plain = k.bytes().all(|c| c >= b' ' && c != b'"' && c != b'\\');
            let written = if plain {
                write!(out, "{sep}\"{k}\":{v}")
            } else {
                write!(out, "{sep}{}:{v}", json_string(k))
            };
            written.expect("a builder takes any text");
            sep = ',';
        }
        out.append_value("}");
    }
}

/// Whether the identity of a value `raw` of a column of `kind` is hashed from the typed
/// value rather than as written: an instant not in the canonical form, and a number or
/// boolean sent as a string. Everything else (most values) is hashed as written, so ids stay
/// those of earlier versions.
fn needs_typed_identity(kind: &Kind, raw: &str) -> bool {
    match kind {
        Kind::Timestamp => !is_canonical_instant(raw),
        Kind::Int64 | Kind::Float64 | Kind::Boolean => raw.starts_with('"'),
        _ => false,
    }
}

/// Whether `raw` is an instant as [`write_canonical_instant`] writes it, checked by shape:
/// `"2024-01-02 03:04:05 +00:00"`, or with milliseconds other than `.000`. (A value of this
/// shape that is not an instant is a misfit, hashed as written either way.)
fn is_canonical_instant(raw: &str) -> bool {
    let b = raw.as_bytes();
    let shaped = b.first() == Some(&b'"') && b.get(11) == Some(&b' ') && raw.ends_with(" +00:00\"");
    shaped
        && match b.len() {
            28 => true,
            32 => b[20] == b'.' && &b[21..24] != b"000",
            _ => false,
        }
}

/// The text a value's identity is hashed from, for a node [`needs_typed_identity`] picked:
/// the value `typed` its column read from `raw`, written one way: an instant as
/// `"2024-01-02 03:04:05[.123[456]] +00:00"` (UTC; the form most exports use, so most
/// events keep their ids), a number as JSON writes it, a boolean as `true` or `false`. A
/// value the column could not read is hashed as written.
fn typed_identity_text<'t>(
    kind: &Kind,
    raw: &'t str,
    typed: Option<&Scalar<'_>>,
    out: &'t mut Vec<u8>,
) -> &'t [u8] {
    out.clear();
    match (kind, typed) {
        (Kind::Timestamp, Some(Scalar::Int(micros))) => write_canonical_instant(*micros, out),
        (_, Some(Scalar::Int(v))) => out.extend_from_slice(v.to_string().as_bytes()),
        (_, Some(Scalar::Float(v))) => {
            serde_json::to_writer(&mut *out, v).expect("writing to a Vec")
        }
        (_, Some(Scalar::Bool(v))) => out.extend_from_slice(if *v { b"true" } else { b"false" }),
        _ => return raw.as_bytes(),
    }
    out
}

/// `micros` as `"2024-01-02 03:04:05 +00:00"`, with `.123` when it has milliseconds and
/// `.123456` when it has microseconds.
fn write_canonical_instant(micros: i64, out: &mut Vec<u8>) {
    use std::io::Write as _;
    let Some(t) = chrono::DateTime::from_timestamp_micros(micros) else {
        return write!(out, "{micros}").expect("writing to a Vec");
    };
    let fraction = micros.rem_euclid(1_000_000);
    let written = match (fraction, fraction % 1000) {
        (0, _) => write!(out, "\"{} +00:00\"", t.format("%Y-%m-%d %H:%M:%S")),
        (_, 0) => write!(out, "\"{} +00:00\"", t.format("%Y-%m-%d %H:%M:%S%.3f")),
        _ => write!(out, "\"{} +00:00\"", t.format("%Y-%m-%d %H:%M:%S%.6f")),
    };
    written.expect("writing to a Vec");
}

/// Visits one JSON object, routing its entries into a [`Row`].
struct ObjectSeed<'d, 'r, 'a> {
    decoder: &'d Decoder,
    scope: Scope,
    row: &'r mut Row<'a>,
}

impl<'de> DeserializeSeed<'de> for ObjectSeed<'_, '_, 'de> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for ObjectSeed<'_, '_, 'de> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(Key(key)) = map.next_key()? {
            let raw: &'de RawValue = map.next_value()?;
            self.decoder.route(self.scope, key, raw.get(), self.row);
        }
        Ok(())
    }
}

/// An object key, borrowed from the line unless it holds escapes.
struct Key<'a>(Cow<'a, str>);

impl<'de> de::Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string key")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v.to_string())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v)))
            }
        }
        d.deserialize_str(V)
    }
}

/// A scalar read from raw JSON text with lossless coercion.
enum Scalar<'a> {
    Str(Cow<'a, str>),
    Int(i64),
    Float(f64),
    Bool(bool),
    Null,
}

/// The text of a JSON string value, unescaped; `None` when `raw` is not a string.
fn string_of(raw: &str) -> Option<Cow<'_, str>> {
    let inner = raw.strip_prefix('"')?.strip_suffix('"')?;
    match memchr::memchr(b'\\', inner.as_bytes()) {
        Some(first) => unescape(inner, first).map(Cow::Owned),
        None => Some(Cow::Borrowed(inner)),
    }
}

/// The inside of a JSON string (already scanned by the parser) with its escapes resolved,
/// the first at byte `first`; `None` for an invalid escape such as a lone surrogate, as
/// serde_json would refuse it. Written here because serde_json's own unescaping grows a fresh
/// buffer for every string, which cost a tenth of decoding on text-heavy exports.
fn unescape(inner: &str, first: usize) -> Option<String> {
    let mut out = String::with_capacity(inner.len());
    out.push_str(&inner[..first]);
    let mut rest = &inner[first..];
    while let Some(at) = memchr::memchr(b'\\', rest.as_bytes()) {
        out.push_str(&rest[..at]);
        let (&kind, after) = rest.as_bytes()[at + 1..].split_first()?;
        let simple = match kind {
            b'"' => '"',
            b'\\' => '\\',
            b'/' => '/',
            b'b' => '\u{8}',
            b'f' => '\u{c}',
            b'n' => '\n',
            b'r' => '\r',
            b't' => '\t',
            b'u' => {
                let (unit, tail) = hex4(after)?;
                let (c, tail) = match unit {
                    0xD800..=0xDBFF => {
                        let tail = tail.strip_prefix(b"\\u")?;
                        let (low, tail) = hex4(tail)?;
                        if !(0xDC00..=0xDFFF).contains(&low) {
                            return None;
                        }
                        let c = 0x10000 + ((unit - 0xD800) << 10) + (low - 0xDC00);
                        (char::from_u32(c)?, tail)
                    }
                    _ => (char::from_u32(unit)?, tail),
                };
                out.push(c);
                rest = &rest[rest.len() - tail.len()..];
                continue;
            }
            _ => return None,
        };
        out.push(simple);
        rest = &rest[at + 2..];
    }
    out.push_str(rest);
    Some(out)
}

/// Four hex digits at the start of `b` as a UTF-16 unit, and what follows them.
fn hex4(b: &[u8]) -> Option<(u32, &[u8])> {
    let (digits, tail) = b.split_at_checked(4)?;
    let mut unit = 0;
    for &d in digits {
        unit = unit * 16 + char::from(d).to_digit(16)?;
    }
    Some((unit, tail))
}

fn is_json_number(raw: &str) -> bool {
    raw.starts_with(|c: char| c == '-' || c.is_ascii_digit())
}

/// An integer from a JSON number, or from a string holding one in canonical form.
fn int_of(raw: &str) -> Option<i64> {
    if is_json_number(raw) {
        if let Ok(v) = raw.parse::<i64>() {
            return Some(v);
        }
        return integral(raw);
    }
    let s = string_of(raw)?;
    let v: i64 = s.parse().ok()?;
    (v.to_string() == s).then_some(v)
}

/// The integer a JSON number with a fraction or an exponent (`7.0`, `1e3`) names exactly, read
/// from its digits: `1.0000000000000000001` is not an integer, whatever f64 rounds it to.
fn integral(number: &str) -> Option<i64> {
    let (mantissa, exp) = match number.find(['e', 'E']) {
        Some(at) => (&number[..at], number[at + 1..].parse::<i32>().ok()?),
        None => (number, 0),
    };
    let (negative, mantissa) = match mantissa.strip_prefix('-') {
        Some(m) => (true, m),
        None => (false, mantissa),
    };
    let (whole, fraction) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let digits = format!("{whole}{fraction}");
    let point = i64::try_from(whole.len()).ok()? + i64::from(exp);
    let digits = digits.trim_end_matches('0');
    let lead = digits.len() - digits.trim_start_matches('0').len();
    let (digits, point) = (&digits[lead..], point - lead as i64);
    if digits.is_empty() {
        return Some(0);
    }
    let zeros = usize::try_from(point - digits.len() as i64).ok()?;
    if zeros > 19 {
        return None;
    }
    let text = format!(
        "{}{digits}{}",
        if negative { "-" } else { "" },
        "0".repeat(zeros)
    );
    text.parse().ok()
}

/// Decimal digits that carry value in a number's text (15 always round-trip through f64).
fn significant_digits(text: &str) -> usize {
    significant(text).len()
}

/// The decimal digits that carry value in a number's text: without leading zeros, nor
/// trailing zeros after a decimal point.
fn significant(text: &str) -> String {
    let mantissa = text.split(['e', 'E']).next().unwrap_or("");
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    let trimmed = digits.trim_start_matches('0');
    let trimmed = if mantissa.contains('.') {
        trimmed.trim_end_matches('0')
    } else {
        trimmed
    };
    trimmed.to_string()
}

/// A number's value when f64 holds it without loss: up to 15 significant digits in f64's
/// normal range, or the digits of the shortest text of an f64 (what a program printing a
/// double writes, up to 17).
fn float_of(raw: &str) -> Option<f64> {
    let text: Cow<'_, str> = if is_json_number(raw) {
        Cow::Borrowed(raw)
    } else {
        string_of(raw)?
    };
    let f: f64 = text.trim().parse().ok()?;
    // Outside f64's normal range fewer digits survive, and `1e-400` becomes 0: compare.
    let exact = (f.is_normal() && significant_digits(&text) <= 15)
        || significant(&text) == significant(&format!("{f:e}"));
    (f.is_finite() && exact).then_some(f)
}

fn bool_of(raw: &str) -> Option<bool> {
    match raw {
        "true" | "\"true\"" => Some(true),
        "false" | "\"false\"" => Some(false),
        _ => None,
    }
}

fn timestamp_of(raw: &str) -> Option<i64> {
    if is_json_number(raw) {
        let ms = int_of(raw)?;
        return from_epoch_millis(ms);
    }
    parse_instant(&string_of(raw)?)
}

fn scalar_of<'a>(kind: &Kind, raw: &'a str) -> Option<Scalar<'a>> {
    if raw == "null" {
        return Some(Scalar::Null);
    }
    match kind {
        Kind::Utf8 => string_of(raw).map(Scalar::Str),
        Kind::Int64 => int_of(raw).map(Scalar::Int),
        Kind::Float64 => float_of(raw).map(Scalar::Float),
        Kind::Boolean => bool_of(raw).map(Scalar::Bool),
        Kind::Timestamp => timestamp_of(raw).map(Scalar::Int),
        Kind::Json => Some(Scalar::Str(Cow::Borrowed(raw))),
        Kind::List(_) | Kind::Struct(_) => None,
    }
}

enum Builder {
    Utf8(StringBuilder),
    Int64(Int64Builder),
    Float64(Float64Builder),
    Boolean(BooleanBuilder),
    Timestamp(TimestampMicrosecondBuilder),
    List {
        item: Box<Builder>,
        offsets: Vec<i32>,
    },
    Struct,
}

impl Builder {
    /// A builder for `rows` values of `kind`, text ones holding `text_bytes` in all.
    fn for_kind(kind: &Kind, rows: usize, text_bytes: usize) -> Builder {
        match kind {
            Kind::Utf8 | Kind::Json => {
                Builder::Utf8(StringBuilder::with_capacity(rows, text_bytes))
            }
            Kind::Int64 => Builder::Int64(Int64Builder::with_capacity(rows)),
            Kind::Float64 => Builder::Float64(Float64Builder::with_capacity(rows)),
            Kind::Boolean => Builder::Boolean(BooleanBuilder::with_capacity(rows)),
            Kind::Timestamp => Builder::Timestamp(
                TimestampMicrosecondBuilder::with_capacity(rows).with_timezone(UTC),
            ),
            Kind::List(item) => Builder::List {
                item: Box::new(Builder::for_kind(item, rows, text_bytes)),
                offsets: vec![0],
            },
            Kind::Struct(_) => Builder::Struct,
        }
    }

    fn push(&mut self, v: Scalar<'_>) {
        match (self, v) {
            (Builder::Utf8(b), Scalar::Str(s)) => b.append_value(s),
            (Builder::Int64(b), Scalar::Int(v)) => b.append_value(v),
            (Builder::Timestamp(b), Scalar::Int(v)) => b.append_value(v),
            (Builder::Float64(b), Scalar::Float(v)) => b.append_value(v),
            (Builder::Boolean(b), Scalar::Bool(v)) => b.append_value(v),
            (b, _) => b.push_null(),
        }
    }

    fn push_null(&mut self) {
        match self {
            Builder::Utf8(b) => b.append_null(),
            Builder::Int64(b) => b.append_null(),
            Builder::Timestamp(b) => b.append_null(),
            Builder::Float64(b) => b.append_null(),
            Builder::Boolean(b) => b.append_null(),
            Builder::List { item: _, offsets } => {
                let last = *offsets.last().expect("offsets start at 0");
                offsets.push(last);
            }
            Builder::Struct => {}
        }
    }

    fn finish(&mut self) -> ArrayRef {
        match self {
            Builder::Utf8(b) => Arc::new(b.finish()),
            Builder::Int64(b) => Arc::new(b.finish()),
            Builder::Timestamp(b) => Arc::new(b.finish()),
            Builder::Float64(b) => Arc::new(b.finish()),
            Builder::Boolean(b) => Arc::new(b.finish()),
            Builder::List { .. } | Builder::Struct => unreachable!("finished by Builders"),
        }
    }
}

/// One builder per column node, plus validity for list and struct nodes.
struct Builders {
    cols: Vec<Builder>,
    nulls: Vec<Vec<bool>>,
}

impl Builders {
    /// Builders for a chunk of `bytes` expected to hold `rows` rows. No column reserves more
    /// text than the chunk holds, whatever the hints (other chunks set them concurrently).
    fn new(nodes: &[Node], rows: usize, bytes: usize) -> Self {
        Builders {
            cols: nodes
                .iter()
                .map(|n| {
                    let per_row = n.bytes_per_row.load(Ordering::Relaxed);
                    Builder::for_kind(&n.kind, rows, rows.saturating_mul(per_row).min(bytes))
                })
                .collect(),
            nulls: nodes.iter().map(|_| Vec::new()).collect(),
        }
    }

    /// Append `raw` to column `id`: the value appended ([`Scalar::Null`] for lists and JSON
    /// text), or `None` when it does not fit (nothing appended).
    fn append<'r>(&mut self, id: usize, kind: &Kind, raw: &'r str) -> Option<Scalar<'r>> {
        if let Kind::List(item_kind) = kind {
            let items = serde_json::from_str::<Vec<&RawValue>>(raw).ok()?;
            let values = items
                .iter()
                .map(|r| scalar_of(item_kind, r.get()))
                .collect::<Option<Vec<_>>>()?;
            let Builder::List { item, offsets } = &mut self.cols[id] else {
                unreachable!("list kind has a list builder")
            };
            let n = values.len() as i32;
            for v in values {
                item.push(v);
            }
            let last = *offsets.last().expect("offsets start at 0");
            offsets.push(last + n);
            self.nulls[id].push(true);
            return Some(Scalar::Null);
        }
        match (&mut self.cols[id], kind) {
            (Builder::Utf8(b), Kind::Json) => {
                b.append_value(raw);
                Some(Scalar::Null)
            }
            (Builder::Utf8(b), _) => string_of(raw).map(|v| {
                b.append_value(&v);
                Scalar::Str(v)
            }),
            (Builder::Int64(b), _) => int_of(raw).map(|v| {
                b.append_value(v);
                Scalar::Int(v)
            }),
            (Builder::Timestamp(b), _) => timestamp_of(raw).map(|v| {
                b.append_value(v);
                Scalar::Int(v)
            }),
            (Builder::Float64(b), _) => float_of(raw).map(|v| {
                b.append_value(v);
                Scalar::Float(v)
            }),
            (Builder::Boolean(b), _) => bool_of(raw).map(|v| {
                b.append_value(v);
                Scalar::Bool(v)
            }),
            (Builder::List { .. } | Builder::Struct, _) => None,
        }
    }

    fn append_null(&mut self, id: usize, kind: &Kind) -> bool {
        self.cols[id].push_null();
        if let Kind::List(_) = kind {
            self.nulls[id].push(false);
        }
        true
    }

    fn finish(&mut self, id: usize, nodes: &[Node]) -> ArrayRef {
        let node = &nodes[id];
        let nulls = std::mem::take(&mut self.nulls[id]);
        match &mut self.cols[id] {
            Builder::List { item, offsets } => {
                let values = item.finish();
                let offsets = OffsetBuffer::new(std::mem::replace(offsets, vec![0]).into());
                let field = node.list_field.clone().expect("list nodes have a field");
                Arc::new(ListArray::new(
                    field,
                    offsets,
                    values,
                    Some(NullBuffer::from(nulls)),
                ))
            }
            Builder::Struct => {
                let children: Vec<ArrayRef> = node
                    .child_order
                    .iter()
                    .map(|&c| self.finish(c, nodes))
                    .collect();
                let fields = node.fields.clone().expect("struct nodes have fields");
                Arc::new(StructArray::new(
                    fields,
                    children,
                    Some(NullBuffer::from(nulls)),
                ))
            }
            Builder::Utf8(b) => {
                let rows = b.len().max(1);
                let per_row = b.values_slice().len().div_ceil(rows);
                node.bytes_per_row.store(per_row, Ordering::Relaxed);
                Arc::new(b.finish())
            }
            b => b.finish(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Array, AsArray};
    use arrow::datatypes::{Float64Type, Int64Type, TimestampMicrosecondType};

    const SCHEMA: &str = r#"{"properties": {
        "createdAt": {"type": ["string", "null"], "format": "date-time"},
        "email": {"type": ["string", "null"]},
        "campaignId": {"type": ["integer", "null"]},
        "total": {"type": ["number", "null"]},
        "ok": {"type": ["boolean", "null"]},
        "ids": {"type": ["array", "null"], "items": {"type": "integer"}},
        "dataFields": {"type": ["object", "null"]},
        "itblInternal": {"type": ["object", "null"], "properties": {
            "emailDomain": {"type": ["string", "null"]},
            "documentCreatedAt": {"type": ["string", "null"], "format": "date-time"}}}
    }}"#;

    fn decode(lines: &str) -> Decoded {
        let schema = Arc::new(StreamSchema::parse("t", SCHEMA, true).unwrap());
        Decoder::new(schema, 7, "emailSend")
            .decode(lines.as_bytes())
            .unwrap()
    }

    fn extra(d: &Decoded, row: usize) -> Option<serde_json::Value> {
        let col = d.batch.column_by_name("_extra").unwrap().as_string::<i32>();
        col.is_valid(row)
            .then(|| serde_json::from_str(col.value(row)).unwrap())
    }

    fn ids(d: &Decoded) -> Vec<String> {
        let col = d
            .batch
            .column_by_name("_event_id")
            .unwrap()
            .as_string::<i32>();
        col.iter().map(|v| v.unwrap().to_string()).collect()
    }

    #[test]
    fn typed_columns_and_lossless_coercions() {
        let d = decode(concat!(
            r#"{"createdAt":"2024-01-02 03:04:05 +00:00","email":"a@b.c","campaignId":"42","total":"72.89","ok":"true","ids":[1,2],"dataFields":{"x":[1,{}]}}"#,
            "\n",
            r#"{"createdAt":1704164645000,"campaignId":7.0,"total":3,"ids":[]}"#,
            "\r\n\n",
        ));
        let b = &d.batch;
        assert_eq!(b.num_rows(), 2);
        let ts = b
            .column_by_name("createdAt")
            .unwrap()
            .as_primitive::<TimestampMicrosecondType>();
        assert_eq!(ts.value(0), 1_704_164_645_000_000);
        assert_eq!(ts.value(1), 1_704_164_645_000_000);
        let c = b
            .column_by_name("campaignId")
            .unwrap()
            .as_primitive::<Int64Type>();
        assert_eq!((c.value(0), c.value(1)), (42, 7));
        let t = b
            .column_by_name("total")
            .unwrap()
            .as_primitive::<Float64Type>();
        assert_eq!((t.value(0), t.value(1)), (72.89, 3.0));
        assert!(b.column_by_name("ok").unwrap().as_boolean().value(0));
        let l = b.column_by_name("ids").unwrap().as_list::<i32>();
        assert_eq!(
            l.value(0).as_primitive::<Int64Type>().values().to_vec(),
            [1, 2]
        );
        assert_eq!(l.value(1).len(), 0);
        assert!(l.is_valid(1));
        let j = b.column_by_name("dataFields").unwrap().as_string::<i32>();
        assert_eq!(j.value(0), r#"{"x":[1,{}]}"#);
        assert!(j.is_null(1));
        assert_eq!(extra(&d, 0), None);
        assert_eq!(extra(&d, 1), None);
        let at = b
            .column_by_name("_extracted_at")
            .unwrap()
            .as_primitive::<TimestampMicrosecondType>();
        assert_eq!(at.values().to_vec(), [7, 7]);
    }

    #[test]
    fn misfits_and_undeclared_fields_go_to_extra_verbatim() {
        let d = decode(concat!(
            r#"{"campaignId":123456789012345678901234567890,"total":"abc","ok":1,"custom":{"a":null},"email":5,"createdAt":"soon","ids":[1,"x"]}"#,
            "\n"
        ));
        let b = &d.batch;
        for col in ["campaignId", "total", "ok", "email", "createdAt", "ids"] {
            assert!(b.column_by_name(col).unwrap().is_null(0), "{col}");
        }
        let e = extra(&d, 0).unwrap();
        assert_eq!(
            e,
            serde_json::json!({
                "custom": {"a": null}, "campaignId": 123456789012345678901234567890_f64, "total": "abc", "ok": 1, "email": 5,
                "createdAt": "soon", "ids": [1, "x"]
            })
        );
        let text = b
            .column_by_name("_extra")
            .unwrap()
            .as_string::<i32>()
            .value(0)
            .to_string();
        assert!(text.contains("123456789012345678901234567890"), "{text}");
    }

    #[test]
    fn dotted_keys_and_objects_fill_structs() {
        let d = decode(concat!(
            r#"{"itblInternal.emailDomain":"b.c","itblInternal.documentCreatedAt":"2024-01-02T03:04:05Z","itblInternal.other":1}"#,
            "\n",
            r#"{"itblInternal":{"emailDomain":"x.y","more":true}}"#,
            "\n",
            r#"{"itblInternal":null}"#,
            "\n"
        ));
        let s = d.batch.column_by_name("itblInternal").unwrap().as_struct();
        let dom = s.column_by_name("emailDomain").unwrap().as_string::<i32>();
        assert_eq!((dom.value(0), dom.value(1)), ("b.c", "x.y"));
        assert!(s.is_valid(0) && s.is_valid(1) && s.is_null(2));
        assert_eq!(
            extra(&d, 0).unwrap(),
            serde_json::json!({"itblInternal.other": 1})
        );
        assert_eq!(
            extra(&d, 1).unwrap(),
            serde_json::json!({"itblInternal.more": true})
        );
    }

    #[test]
    fn unicode_escapes_and_keys_survive() {
        let line = r#"{"email":"\u0000 \u2028 日本語 שלום 😀 \"q\"","k\u00e9y":"v"}"#;
        let d = decode(line);
        let e = d.batch.column_by_name("email").unwrap().as_string::<i32>();
        assert_eq!(e.value(0), "\u{0} \u{2028} 日本語 שלום 😀 \"q\"");
        assert_eq!(extra(&d, 0).unwrap(), serde_json::json!({"kéy": "v"}));
    }

    #[test]
    fn malformed_lines_are_kept_and_counted() {
        let d = decode("{\"email\":\"a\"}\nnot json\n[1,2]\n{\"email\":\"b\"");
        assert_eq!(d.batch.num_rows(), 4);
        assert_eq!(d.malformed, 3);
        assert_eq!(
            extra(&d, 1).unwrap(),
            serde_json::json!({MALFORMED_LINE: "not json"})
        );
        assert_eq!(
            extra(&d, 3).unwrap(),
            serde_json::json!({MALFORMED_LINE: "{\"email\":\"b\""})
        );
    }

    #[test]
    fn a_line_that_is_not_utf8_spoils_only_itself_and_is_kept_byte_for_byte() {
        let schema = Arc::new(StreamSchema::parse("t", SCHEMA, true).unwrap());
        let d = Decoder::new(schema, 7, "emailSend")
            .decode(b"{\"email\":\"a\"}\n{\"email\":\"\xff\"}\n{\"email\":\"c\"}")
            .unwrap();
        assert_eq!(d.batch.num_rows(), 3);
        assert_eq!(d.malformed, 1);
        let e = d.batch.column_by_name("email").unwrap().as_string::<i32>();
        assert_eq!((e.value(0), e.is_null(1), e.value(2)), ("a", true, "c"));
        let kept = extra(&d, 1).unwrap();
        assert_eq!(kept[MALFORMED_LINE], "{\"email\":\"\u{fffd}\"}");
        let bytes = BASE64_STANDARD
            .decode(kept[MALFORMED_LINE_BASE64].as_str().unwrap())
            .unwrap();
        assert_eq!(bytes, b"{\"email\":\"\xff\"}");
    }

    #[test]
    fn event_ids_ignore_key_order_and_internal_fields_only() {
        let d = decode(concat!(
            r#"{"email":"a","campaignId":1,"itblInternal":{"documentCreatedAt":"2024-01-01 00:00:00 +00:00"}}"#,
            "\n",
            r#"{"campaignId":1,"email":"a"}"#,
            "\n",
            r#"{"campaignId":2,"email":"a"}"#,
            "\n"
        ));
        let ids = ids(&d);
        assert_eq!(ids[0], ids[1]);
        assert_ne!(ids[1], ids[2]);
        // Pinned: lakes built by earlier versions must keep matching new exports.
        assert_eq!(ids[1], "fc3828554234a8e87bed0ecfc2b798ac");
        let schema = Arc::new(StreamSchema::parse("t", SCHEMA, true).unwrap());
        let other = Decoder::new(schema, 7, "emailOpen")
            .decode(br#"{"campaignId":1,"email":"a"}"#)
            .unwrap();
        assert_ne!(ids[1], super::tests::ids(&other)[0]);
    }

    #[test]
    fn event_ids_read_instants_and_numbers_by_value_not_spelling() {
        let same = [
            r#"{"createdAt":"2024-01-02 03:04:05.120 +00:00","campaignId":1,"total":2.5,"ok":true,"email":"a"}"#,
            r#"{"createdAt":"2024-01-02T03:04:05.12Z","campaignId":"1","total":"2.5","ok":"true","email":"a"}"#,
            r#"{"email":"a","createdAt":"2024-01-02T08:34:05.120000+05:30","campaignId":1,"total":2.5,"ok":true}"#,
            r#"{"createdAt":1704164645120,"campaignId":1,"total":2.5,"ok":true,"email":"a"}"#,
            r#"{"createdAt":"2024-01-01 22:04:05.12 -05:00","campaignId":1,"total":2.5,"ok":true,"email":"a"}"#,
            r#"{"createdAt":"2024-01-02T03:04:05.120000.000Z","campaignId":1,"total":2.5,"ok":true,"email":"a"}"#,
        ];
        let other = [
            r#"{"createdAt":"2024-01-02 03:04:05.121 +00:00","campaignId":1,"total":2.5,"ok":true,"email":"a"}"#,
            r#"{"createdAt":"2024-01-02 03:04:05.120 +00:00","campaignId":2,"total":2.5,"ok":true,"email":"a"}"#,
            r#"{"createdAt":"2024-01-02 03:04:05.120 +00:00","campaignId":1,"total":2.5,"ok":false,"email":"a"}"#,
            r#"{"createdAt":"soon","campaignId":1,"total":2.5,"ok":true,"email":"a"}"#,
            r#"{"createdAt":null,"campaignId":1,"total":2.5,"ok":true,"email":"a"}"#,
        ];
        // The canonical spelling is hashed as written, as earlier versions did: their ids stay.
        let d = decode(r#"{"createdAt":"2024-01-02 03:04:05 +00:00","email":"a"}"#);
        assert_eq!(super::tests::ids(&d)[0], "aeca407e3db9ab11ba946dc71cf980ea");
        let ids = ids(&decode(&[same.join("\n"), other.join("\n")].join("\n")));
        assert!(ids[..same.len()].iter().all(|id| *id == ids[0]), "{ids:?}");
        let mut distinct = ids[same.len() - 1..].to_vec();
        distinct.sort();
        distinct.dedup();
        assert_eq!(distinct.len(), other.len() + 1, "{ids:?}");
    }

    #[test]
    fn strings_unescape_as_serde_json_does() {
        for raw in [
            r#""plain""#,
            r#""a\"b\\c\/d\b\f\n\r\t""#,
            r#""Cafe\u0301 \u00e9\u2028 \ud83d\ude80 end""#,
            r#""\u0041\u00""#,
            r#""lone \ud83d here""#,
            r#""lone \ude80 low""#,
            r#""\ud83d\u0041""#,
            r#""bad \x escape""#,
            r#""\uZZZZ""#,
            r#""\u+abc""#,
            r#""trailing \""#,
            r#""ünï\ncödé \u00fc""#,
            r#""nul\u0000byte""#,
        ] {
            let want = serde_json::from_str::<String>(raw).ok();
            let got = string_of(raw).map(Cow::into_owned);
            assert_eq!(got, want, "{raw}");
        }
    }

    #[test]
    fn numbers_that_lose_precision_are_not_coerced() {
        assert_eq!(float_of("0.1"), Some(0.1));
        assert_eq!(float_of("\"72.89\""), Some(72.89));
        assert_eq!(float_of("12345678901234567"), None);
        assert_eq!(float_of("0.7615806850175204"), Some(0.7615806850175204));
        assert_eq!(float_of("48994.01999999998"), Some(48994.01999999998));
        assert_eq!(float_of("0.76158068501752041"), None);
        assert_eq!(int_of("\"007\""), None);
        assert_eq!(int_of("1e3"), Some(1000));
        assert_eq!(int_of("9007199254740993.0"), Some(9_007_199_254_740_993));
        assert_eq!(int_of("-5"), Some(-5));
        assert_eq!(timestamp_of("1704164645000"), Some(1_704_164_645_000_000));
    }

    #[test]
    fn integers_and_floats_are_read_from_their_digits_not_a_rounded_double() {
        for (text, want) in [
            ("1.0000000000000000001", None),
            ("1.5e1", Some(15)),
            ("1500e-2", Some(15)),
            ("1501e-2", None),
            ("-0.0", Some(0)),
            ("0e-400", Some(0)),
            ("1e-400", None),
            ("-12.000", Some(-12)),
            ("1e18", Some(1_000_000_000_000_000_000)),
            ("1e19", None),
            ("9223372036854775807.0", Some(i64::MAX)),
            ("-9223372036854775808.0", Some(i64::MIN)),
            ("9223372036854775808.0", None),
            ("1e2147483648", None),
        ] {
            assert_eq!(int_of(text), want, "{text}");
        }
        assert_eq!(timestamp_of("1704164645000.0000000001"), None);
        assert_eq!(float_of("1e-400"), None);
        assert_eq!(float_of("-1e-400"), None);
        assert_eq!(float_of("0e-400"), Some(0.0));
        assert_eq!(float_of("1e-320"), Some(1e-320));
        assert_eq!(float_of("1.23456789012345e-320"), None);
        assert_eq!(float_of("1e400"), None);
    }

    #[test]
    fn numbers_no_column_type_holds_exactly_go_to_extra() {
        let d = decode(concat!(
            r#"{"campaignId":1.0000000000000000001,"total":1e-400,"ids":[1,2.0000000000000000001]}"#,
            "\n",
            r#"{"campaignId":2.0,"total":0.0}"#,
        ));
        for col in ["campaignId", "total", "ids"] {
            assert!(d.batch.column_by_name(col).unwrap().is_null(0), "{col}");
        }
        let text = d
            .batch
            .column_by_name("_extra")
            .unwrap()
            .as_string::<i32>()
            .value(0)
            .to_string();
        assert_eq!(
            text,
            r#"{"campaignId":1.0000000000000000001,"total":1e-400,"ids":[1,2.0000000000000000001]}"#
        );
        let c = d.batch.column_by_name("campaignId").unwrap();
        assert_eq!(c.as_primitive::<Int64Type>().value(1), 2);
        assert_eq!(extra(&d, 1), None);
    }
}
