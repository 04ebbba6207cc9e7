//! Hash buckets of primary keys, for the `incremental-deduped` layout
//! (`<stream>/bucket=NN/part-….parquet`).
//!
//! A row's key is its first non-null primary-key column, as `column:value` (users: `email:…`,
//! or `userId:…` when the row has no email), so the same user always lands in the same
//! bucket. Rows without any key value have no key and go to bucket 0.

use arrow::array::Array;
use arrow::record_batch::RecordBatch;
use arrow::util::display::array_value_to_string;
use xxhash_rust::xxh3::xxh3_64;

/// The key of every row of `batch`: its first non-null column among `key_columns`.
pub fn row_keys(batch: &RecordBatch, key_columns: &[usize]) -> Vec<Option<String>> {
    (0..batch.num_rows())
        .map(|row| key_columns.iter().find_map(|&c| key_in(batch, c, row)))
        .collect()
}

/// The keys every row of `batch` replaces: those it would have under each key column after
/// the one that gives its key. A user who had only a userId (key `userId:…`) and gains an
/// email is keyed `email:…` from then on; that row replaces the `userId:…` one.
pub fn replaced_keys(batch: &RecordBatch, key_columns: &[usize]) -> Vec<Vec<String>> {
    (0..batch.num_rows())
        .map(|row| {
            let Some(first) = key_columns
                .iter()
                .position(|&c| key_in(batch, c, row).is_some())
            else {
                return Vec::new();
            };
            key_columns[first + 1..]
                .iter()
                .filter_map(|&c| key_in(batch, c, row))
                .collect()
        })
        .collect()
}

/// `column:value` of column `c` at `row`, unless null.
fn key_in(batch: &RecordBatch, c: usize, row: usize) -> Option<String> {
    let col = batch.column(c);
    if col.is_null(row) {
        return None;
    }
    let value = array_value_to_string(col, row).ok()?;
    Some(format!("{}:{value}", batch.schema_ref().field(c).name()))
}

/// The bucket of a key among `buckets` (bucket 0 for rows without a key).
pub fn bucket_of(key: Option<&str>, buckets: u32) -> u32 {
    match key {
        Some(k) => (xxh3_64(k.as_bytes()) % u64::from(buckets.max(1))) as u32,
        None => 0,
    }
}

/// The partition folder of a bucket, zero-padded to the width of the largest bucket
/// number (at least two digits), so folders sort in bucket order.
pub fn bucket_partition(bucket: u32, buckets: u32) -> String {
    let width = buckets.saturating_sub(1).max(10).to_string().len();
    format!("bucket={bucket:0width$}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::StringArray;
    use std::sync::Arc;

    #[test]
    fn keys_fall_back_to_the_next_column_and_buckets_are_stable() {
        let email = StringArray::from(vec![Some("a@x"), None, None]);
        let user = StringArray::from(vec![Some("u1"), Some("u2"), None]);
        let batch = RecordBatch::try_from_iter([
            ("email", Arc::new(email) as _),
            ("userId", Arc::new(user) as _),
        ])
        .unwrap();
        let keys = row_keys(&batch, &[0, 1]);
        assert_eq!(
            keys,
            [
                Some("email:a@x".to_string()),
                Some("userId:u2".into()),
                None
            ]
        );
        let b = bucket_of(keys[0].as_deref(), 16);
        assert!(b < 16);
        assert_eq!(b, bucket_of(Some("email:a@x"), 16));
        assert_eq!(bucket_of(None, 16), 0);
        assert_eq!(bucket_partition(3, 16), "bucket=03");
        assert_eq!(bucket_partition(3, 256), "bucket=003");
    }

    #[test]
    fn a_row_keyed_by_email_replaces_the_key_its_user_had_by_user_id() {
        let email = StringArray::from(vec![Some("a@x"), Some("b@x"), None, None]);
        let user = StringArray::from(vec![Some("u1"), None, Some("u3"), None]);
        let batch = RecordBatch::try_from_iter([
            ("email", Arc::new(email) as _),
            ("userId", Arc::new(user) as _),
        ])
        .unwrap();
        assert_eq!(
            replaced_keys(&batch, &[0, 1]),
            [vec!["userId:u1".to_string()], vec![], vec![], vec![]]
        );
        assert_eq!(
            replaced_keys(&batch, &[0]),
            [vec![], vec![], vec![], vec![]] as [Vec<String>; 4]
        );
    }
}
