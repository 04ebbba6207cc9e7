//! Conversion of Iterable's JSON into Arrow: schemas, timestamps and the line decoder.

pub mod decode;
mod flat;
pub mod schema;
pub mod timestamp;
pub mod user_fields;

pub use decode::{Decoded, Decoder};
pub use schema::StreamSchema;
