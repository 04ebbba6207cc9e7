//! The one integration test binary. Run everything with `scripts/test.sh`, which starts the
//! S3 server and the DuckDB tooling that `support` needs; plain `cargo test` skips the tests
//! that need them (and fails them when `CI=true`).

mod bin;
mod cli;
mod cli_lock;
mod cli_ops;
mod dedupe_memory;
mod delta;
mod export_sync;
mod fake_export;
mod fake_rest;
mod fidelity;
mod harness;
mod jobs;
mod lake;
mod metrics_events;
mod rest_sync;
mod support;
mod users_typed;
