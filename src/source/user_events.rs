//! `GET /api/export/userEvents`: every event of one user (NDJSON, each line with `_type`), for
//! every member of every list.
//!
//! [`members`] reads each list's members (`lists/getUsers`, 5 requests a minute) into one
//! sorted, de-duplicated set: a user in several lists is read once, and the sorted order lets
//! a run continue after the last user a previous run committed. The set is the one thing held
//! in memory (about 100 bytes a member: ~100 MB for a million); bodies are
//! streamed. A list whose members cannot be read is reported and skipped, so the others'
//! members are still read.
//!
//! [`body`] streams the events of a batch of users as one NDJSON body for the
//! [pipeline](super::pipeline): each user's response in turn, [checked](pipeline::checked)
//! on its own (a response that ends inside a record fails the batch), separated by a
//! newline (a response need not end with one).

use std::collections::BTreeSet;

use bytes::Bytes;
use futures::StreamExt;

use super::FetchError;
use super::list_users;
use super::pipeline;
use super::rest::{self, Body};
use crate::api::{ApiClient, Family};

/// Every list member, and the lists whose members could not be read.
#[derive(Debug, Default)]
pub struct Members {
    /// Emails, or userIds for members without an email, sorted and distinct.
    pub users: BTreeSet<String>,
    /// Lists whose `getUsers` failed, with the error.
    pub failed_lists: Vec<(i64, FetchError)>,
}

/// Read every list's members. A fatal error (the key is rejected) ends the read.
pub async fn members(client: &ApiClient) -> Result<Members, FetchError> {
    let mut out = Members::default();
    for id in rest::list_ids(client).await? {
        match list_members(client, id, &mut out.users).await {
            Ok(()) => {}
            Err(e) if e.is_fatal() => return Err(e),
            Err(e) => out.failed_lists.push((id, e)),
        }
    }
    Ok(out)
}

/// Add the members of one list to `users`, streaming its body line by line.
async fn list_members(
    client: &ApiClient,
    list_id: i64,
    users: &mut BTreeSet<String>,
) -> Result<(), FetchError> {
    let mut body = list_users::members(client, list_id).await?.bytes_stream();
    let mut carry: Vec<u8> = Vec::new();
    let mut add = |line: &[u8]| {
        let member = String::from_utf8_lossy(line);
        let member = member.trim();
        if !member.is_empty() && !users.contains(member) {
            users.insert(member.to_string());
        }
    };
    while let Some(chunk) = body.next().await {
        carry.extend_from_slice(&chunk?);
        if let Some(end) = carry.iter().rposition(|&c| c == b'\n') {
            carry[..end].split(|&c| c == b'\n').for_each(&mut add);
            carry.drain(..=end);
        }
    }
    add(&carry);
    Ok(())
}

/// The query naming one user: `email` when it looks like one, else `userId`.
fn user_query(user: &str) -> Vec<(&'static str, String)> {
    let key = if user.contains('@') {
        "email"
    } else {
        "userId"
    };
    vec![
        (key, user.to_string()),
        ("includeCustomEvents", "true".to_string()),
    ]
}

/// The events of `users`, one response after the other, as one NDJSON body.
pub fn body(client: ApiClient, users: Vec<String>) -> Body {
    rest::produced(move |tx| async move {
        for user in &users {
            let resp = client
                .get(Family::Other, "export/userEvents", &user_query(user))
                .await?;
            let mut events = pipeline::checked(resp.bytes_stream());
            while let Some(chunk) = events.next().await {
                if tx.send(Ok(chunk?)).await.is_err() {
                    return Ok(());
                }
            }
            if tx.send(Ok(Bytes::from_static(b"\n"))).await.is_err() {
                return Ok(());
            }
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_are_named_by_email_or_user_id() {
        assert_eq!(user_query("a@b.c")[0], ("email", "a@b.c".to_string()));
        assert_eq!(user_query("u-1")[0], ("userId", "u-1".to_string()));
        assert_eq!(
            user_query("u-1")[1],
            ("includeCustomEvents", "true".to_string())
        );
    }
}
