//! The fake's list-style endpoints: lists, list members, campaigns, campaign metrics,
//! channels, message types, metadata, templates and user fields.

use std::sync::Arc;

use axum::Router;

use super::State;

pub(super) fn routes() -> Router<Arc<State>> {
    Router::new()
}
