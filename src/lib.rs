//! iterable-lake: copy an Iterable project into a partitioned Parquet lake.

pub mod catalog;
pub mod fake;
