//! iterable-lake: copy an Iterable project into a partitioned Parquet lake.

pub mod api;
pub mod app;
pub mod catalog;
pub mod check;
pub mod cli;
pub mod config;
pub mod convert;
pub mod delta;
pub mod fake;
pub mod lock;
pub mod manifest;
pub mod progress;
pub mod sink;
pub mod source;
pub mod state;
pub mod streams;
pub mod sync;
