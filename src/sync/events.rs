//! `events`: every event of every list member (`GET /api/export/userEvents`), in `date=`
//! folders by `createdAt` like the export streams, read in resumable full passes.
//!
//! A *pass* reads the events of every member once, in the sorted order of their identifiers
//! (email, or userId for members without one), in batches of `events_batch_users` users.
//! Each batch is one commit: its files, and the stream's `checkpoint`, the batch's last user.
//!
//! - A run that stops (a crash, an error, or `events_max_users` reached) loses at most the
//!   batch in flight. The next run continues the pass after the checkpoint, against the list
//!   members as they are then.
//! - The first commit of a new pass replaces every file of the previous pass. Until the pass
//!   completes, the stream holds the events of the users this pass has done so far, each
//!   once, and a `checkpoint` in the manifest says the pass is incomplete.
//! - The commit of the last batch clears the checkpoint and sets the cursor to the run's
//!   `now`. The stream then holds every event of every member of the pass exactly once: a user
//!   is read once per pass (a resumed pass skips the users at or before the checkpoint), and
//!   each event belongs to one user. Users who join a list behind the checkpoint during a pass
//!   are read by the next pass.
//!
//! A pass runs only from a whole member set. A list whose members cannot be read is reported
//! as quarantined (`list_id=N`) and the run commits nothing to `events`: a pass does not start
//! (the previous one stays live, its members' events with it), and a pass in progress neither
//! continues nor completes (what it committed stays; the next run continues after its
//! checkpoint once every list reads). No member at all (every list empty) fails the stream,
//! also committing nothing: an outage must not look like a project without users. A batch cut
//! off or timed out is retried up to `max_attempts` times; any other error fails the stream,
//! keeping the batches committed before it. Other modes than full-refresh-overwrite are not
//! offered: each pass is a whole new snapshot.

use std::ops::Bound;

use super::{Progress, QuarantineReport, StreamCtx};
use crate::catalog::SyncMode;
use crate::sink::{Partitioning, WrittenFile};
use crate::source::{pipeline, user_events};

impl StreamCtx<'_> {
    pub(super) async fn user_events(&self, mode: SyncMode, p: &mut Progress) -> Result<(), String> {
        if mode != SyncMode::FullRefreshOverwrite {
            tracing::info!(
                stream = self.stream.name,
                %mode,
                "events are read in resumable full passes; using full-refresh-overwrite"
            );
            p.report.mode = SyncMode::FullRefreshOverwrite;
        }
        let resume = self.state().await.and_then(|s| s.checkpoint);
        let members = user_events::members(&self.client)
            .await
            .map_err(|e| format!("reading list members: {e}; nothing was committed"))?;
        let now = self.opts().now;
        for (id, error) in &members.failed_lists {
            tracing::error!(stream = self.stream.name, list = id, error = %error, "list members unreadable; the pass waits until every list reads, and the events already committed stay live");
            p.report.quarantined.push(QuarantineReport {
                key: Some(format!("list_id={id}")),
                start: now,
                end: now,
                error: format!(
                    "{error}; nothing was committed to events (a pass needs every list's members)"
                ),
            });
        }
        if !members.failed_lists.is_empty() {
            return Ok(());
        }
        if members.users.is_empty() {
            return Err(
                "no list has any member; nothing was committed and the events already committed stay live"
                    .to_string(),
            );
        }
        let lower = match &resume {
            Some(after) => Bound::Excluded(after.clone()),
            None => Bound::Unbounded,
        };
        let mut users = members
            .users
            .range::<String, _>((lower, Bound::Unbounded))
            .peekable();
        tracing::info!(
            stream = self.stream.name,
            members = members.users.len(),
            resumed = resume.is_some(),
            "reading the events of list members"
        );
        let batch_size = self.opts().events_batch_users.max(1);
        let mut replace_previous_pass = resume.is_none();
        let mut read = 0usize;
        loop {
            let more = users.peek().is_some();
            if more && self.stopping(p) {
                return Ok(());
            }
            if more && self.opts().events_max_users.is_some_and(|max| read >= max) {
                tracing::info!(
                    stream = self.stream.name,
                    users = read,
                    "user limit reached; the next run continues this pass"
                );
                return Ok(());
            }
            let batch: Vec<String> = users.by_ref().take(batch_size).cloned().collect();
            let complete = users.peek().is_none();
            let files = if batch.is_empty() {
                Vec::new()
            } else {
                self.fetch_users(&batch, p).await?
            };
            read += batch.len();
            self.count(&files, p);
            let new_files = self.live(files);
            let last = batch.last().cloned();
            let replace = replace_previous_pass;
            let cursor = self
                .run
                .commit(self.stream, |s| {
                    s.mode = SyncMode::FullRefreshOverwrite;
                    let old = if replace {
                        std::mem::take(&mut s.files)
                    } else {
                        Vec::new()
                    };
                    s.files.extend(new_files);
                    if complete {
                        s.checkpoint = None;
                        s.cursor = Some(now);
                    } else {
                        s.checkpoint = last;
                    }
                    old.into_iter().map(|f| f.file.path).collect()
                })
                .await
                .map_err(|e| e.to_string())?;
            replace_previous_pass = false;
            p.report.commits += 1;
            p.report.cursor = cursor;
            if complete {
                return Ok(());
            }
        }
    }

    /// The events of `users` as files, retrying the batch when it is cut off or times out.
    async fn fetch_users(
        &self,
        users: &[String],
        p: &mut Progress,
    ) -> Result<Vec<WrittenFile>, String> {
        let column = self
            .schema
            .position(self.stream.cursor_field)
            .expect("the events schema declares its cursor");
        let mut attempts = 0;
        loop {
            attempts += 1;
            let writer = self.writer(
                self.stream.name,
                Partitioning::CursorDate { column },
                Some(column),
            );
            p.report.windows += 1;
            let body = user_events::body(self.client.clone(), users.to_vec());
            match pipeline::run(body, self.decoder.clone(), None, writer).await {
                Ok(f) => {
                    p.report.malformed_lines += f.malformed;
                    return Ok(f.files);
                }
                Err(e) if e.is_splittable() && attempts < self.opts().window.max_attempts => {
                    p.report.window_retries += 1;
                    tracing::warn!(stream = self.stream.name, users = users.len(), error = %e, "a batch of users failed; retrying it");
                }
                Err(e) => {
                    return Err(format!(
                        "a batch of {} users: {e}; the batches before it are committed and \
                         the next run continues after them",
                        users.len()
                    ));
                }
            }
        }
    }
}
