//! Integration tests: one binary, one module per area.

mod fake_export;
mod fake_rest;
