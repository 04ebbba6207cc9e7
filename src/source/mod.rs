//! Endpoint families: each builds its requests and turns responses into record batches.

pub mod export;
