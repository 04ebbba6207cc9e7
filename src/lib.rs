//! iterable-lake: copy an Iterable project into a partitioned Parquet lake.

pub mod catalog;
// The skeleton's fake API has a helper (`State::now`) that only its full version uses.
// Drop this attribute when the fake-API branch lands: `expect` turns into a warning then.
#[expect(
    dead_code,
    reason = "fake API scaffold: State::now is used once the fake lands"
)]
pub mod fake;
