//! iterable-lake: copy an Iterable project into a partitioned Parquet lake.

pub mod api;
pub mod catalog;
pub mod convert;
pub mod fake;
pub mod manifest;
pub mod sink;
pub mod source;
pub mod sync;
