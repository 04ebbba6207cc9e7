//! `GET /api/lists/getUsers?listId=`: a text body, one member (email, or userId) per line,
//! streamed through the [pipeline](super::pipeline) with each line rewritten into
//! `{"listId":…,"email":…}` (or `"userId"` when the line is not an email). Lists of
//! millions of members never sit in memory.

use std::sync::Arc;

use super::FetchError;
use super::pipeline::{self, Fetched, LineMap};
use crate::api::{ApiClient, Family};
use crate::convert::Decoder;
use crate::sink::PartitionedWriter;

/// Each member line as a JSON record of list `list_id`; blank lines are dropped.
fn member_lines(list_id: i64) -> LineMap {
    Arc::new(move |line: &[u8], out: &mut Vec<u8>| {
        let member = String::from_utf8_lossy(line);
        let member = member.trim();
        if member.is_empty() {
            return false;
        }
        let field = if member.contains('@') {
            "email"
        } else {
            "userId"
        };
        out.extend_from_slice(format!("{{\"listId\":{list_id},\"{field}\":").as_bytes());
        serde_json::to_writer(&mut *out, member).expect("writing to a Vec");
        out.push(b'}');
        true
    })
}

/// `GET lists/getUsers` for one list: its members, one a line.
pub async fn members(client: &ApiClient, list_id: i64) -> Result<reqwest::Response, FetchError> {
    let query = [("listId", list_id.to_string())];
    Ok(client
        .get(Family::ListUsers, "lists/getUsers", &query)
        .await?)
}

/// Stream the members of one list into `writer`'s files.
pub async fn fetch(
    client: &ApiClient,
    list_id: i64,
    decoder: Arc<Decoder>,
    writer: PartitionedWriter,
) -> Result<Fetched, FetchError> {
    let resp = members(client, list_id).await?;
    pipeline::run(
        resp.bytes_stream(),
        decoder,
        Some(member_lines(list_id)),
        writer,
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(line: &[u8]) -> Option<String> {
        let mut out = Vec::new();
        member_lines(7)(line, &mut out).then(|| String::from_utf8(out).unwrap())
    }

    #[test]
    fn member_lines_become_records() {
        assert_eq!(map(b"a@b.c").unwrap(), r#"{"listId":7,"email":"a@b.c"}"#);
        assert_eq!(map(b"uid-1 ").unwrap(), r#"{"listId":7,"userId":"uid-1"}"#);
        assert_eq!(
            map("\"q\"@日本.jp".as_bytes()).unwrap(),
            r#"{"listId":7,"email":"\"q\"@日本.jp"}"#
        );
        assert_eq!(map(b"  "), None);
    }
}
