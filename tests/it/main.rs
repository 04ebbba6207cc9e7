//! The one integration test binary. Run everything with `scripts/test.sh`, which starts the
//! S3 server and the DuckDB tooling that `support` needs; plain `cargo test` skips the tests
//! that need them (and fails them when `CI=true`).

mod harness;
mod support;
