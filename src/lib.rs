//! iterable-lake: copy an Iterable project into a partitioned Parquet lake.

pub mod api;
pub mod app;
pub mod catalog;
pub mod cli;
pub mod convert;
pub mod fake;
pub mod manifest;
pub mod sink;
pub mod source;
pub mod sync;
