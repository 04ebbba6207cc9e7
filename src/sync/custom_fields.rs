//! Before the `users` stream syncs: ask `users/getFields` for the project's custom fields,
//! record new ones in the manifest (raising the stream's schema version) and give the stream
//! its typed schema ([`user_fields`](crate::convert::user_fields)).

use std::collections::BTreeMap;
use std::sync::Arc;

use super::{Run, SCHEMA_VERSION};
use crate::api::Family;
use crate::catalog::StreamDef;
use crate::convert::StreamSchema;
use crate::convert::user_fields::{extend, merge};

#[derive(serde::Deserialize)]
struct FieldsResponse {
    fields: BTreeMap<String, serde_json::Value>,
}

/// The project's user fields, name → type name (non-string type names are skipped).
async fn get_fields(run: &Run) -> Result<BTreeMap<String, String>, String> {
    let resp = run
        .client
        .get(Family::Other, "users/getFields", &[])
        .await
        .map_err(|e| format!("users/getFields: {e}"))?;
    let bytes = resp
        .bytes()
        .await
        .map_err(|e| format!("users/getFields: reading the response: {}", e.without_url()))?;
    let body: FieldsResponse = serde_json::from_slice(&bytes)
        .map_err(|e| format!("users/getFields: unexpected response: {e}"))?;
    Ok(body
        .fields
        .into_iter()
        .filter_map(|(name, ty)| Some((name, ty.as_str()?.to_string())))
        .collect())
}

/// The schema the stream writes in this run: for users, the declared one extended by the
/// custom fields (committing new ones first); for other streams, `base`. When getFields
/// fails, or the new fields cannot be committed, the recorded fields are used, so the
/// files keep the schema of the manifest's current version.
pub(super) async fn typed_schema(
    run: &Run,
    stream: &'static StreamDef,
    base: Arc<StreamSchema>,
) -> Arc<StreamSchema> {
    if stream.data_type() != "user" {
        return base;
    }
    let recorded = run
        .manifest
        .lock()
        .await
        .streams
        .get(stream.name)
        .map(|s| s.custom_fields.clone())
        .unwrap_or_default();
    let mut fields = match get_fields(run).await {
        Ok(reported) => merge(&base.columns, &recorded, &reported),
        Err(e) => {
            tracing::warn!(stream = stream.name, error = %e, "could not list the custom user fields; keeping the recorded ones");
            recorded.clone()
        }
    };
    if fields != recorded {
        let added: Vec<&str> = fields[recorded.len()..]
            .iter()
            .map(|f| f.name.as_str())
            .collect();
        tracing::info!(
            stream = stream.name,
            fields = ?added,
            "new custom fields; raising the schema version"
        );
        let schema_fields = fields.clone();
        let committed = run
            .commit(stream, move |s| {
                s.custom_fields = schema_fields;
                s.schema_version = s.schema_version.max(SCHEMA_VERSION) + 1;
                Vec::new()
            })
            .await;
        if let Err(e) = committed {
            tracing::warn!(stream = stream.name, error = %e, "could not record the new custom fields; this run writes the recorded ones");
            fields = recorded;
        }
    }
    if fields.is_empty() {
        return base;
    }
    Arc::new(StreamSchema::from_columns(
        extend(base.columns.clone(), &fields),
        base.with_event_id,
    ))
}
