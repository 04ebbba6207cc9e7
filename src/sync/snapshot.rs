//! Snapshot streams: the list-style endpoints and campaign metrics, read whole by each run and
//! committed at once; list members per list, where a list that keeps failing is quarantined alone.

use std::collections::BTreeSet;

use super::{Progress, QuarantineReport, StreamCtx};
use crate::catalog::{Layout, Source, SyncMode};
use crate::manifest::Quarantined;
use crate::sink::Partitioning;
use crate::source::{list_users, metrics, pipeline, rest};

impl StreamCtx<'_> {
    /// A snapshot stream: read everything, then replace the previous snapshot in one commit.
    pub(super) async fn snapshot(&self, mode: SyncMode, p: &mut Progress) -> Result<(), String> {
        if self.stream.layout == Layout::PerList {
            return self.per_list(mode, p).await;
        }
        let dir = self.dir(mode);
        let writer = self.writer(&dir, Partitioning::Fixed(String::new()), None);
        let client = self.client.clone();
        let body = match self.stream.source {
            Source::CampaignMetrics => metrics::body(client, self.opts().start, self.opts().now),
            source => rest::body(client, source),
        };
        p.report.windows += 1;
        let fetched = pipeline::run(body, self.decoder.clone(), None, writer)
            .await
            .map_err(|e| format!("{e}; nothing was committed"))?;
        p.report.malformed_lines += fetched.malformed;
        self.commit_refresh(mode, fetched.files, self.opts().now, p)
            .await
    }

    /// `list_users`: one `list_id=N` folder per list. A list that keeps failing is
    /// quarantined (its previous members stay live) while the others land.
    async fn per_list(&self, mode: SyncMode, p: &mut Progress) -> Result<(), String> {
        let dir = self.dir(mode);
        let client = &self.client;
        let ids = rest::list_ids(client).await.map_err(|e| e.to_string())?;
        let mut files = Vec::new();
        let mut done = BTreeSet::new();
        let mut failed = Vec::new();
        for id in &ids {
            if self.stopping(p) {
                self.run.delete_files(&files).await;
                return Ok(());
            }
            let folder = format!("list_id={id}");
            let writer = self.writer(&dir, Partitioning::Fixed(folder.clone()), None);
            p.report.windows += 1;
            match list_users::fetch(client, *id, self.decoder.clone(), writer).await {
                Ok(f) => {
                    p.report.malformed_lines += f.malformed;
                    files.extend(f.files);
                    done.insert(folder);
                }
                Err(e) if e.is_fatal() => {
                    self.run.delete_files(&files).await;
                    return Err(e.to_string());
                }
                Err(e) => {
                    tracing::error!(stream = self.stream.name, list = id, error = %e, "list quarantined");
                    failed.push((folder, e.to_string()));
                }
            }
        }
        self.count(&files, p);
        let now = self.opts().now;
        for (folder, error) in &failed {
            p.report.quarantined.push(QuarantineReport {
                key: Some(folder.clone()),
                start: now,
                end: now,
                error: error.clone(),
            });
        }
        let listed: BTreeSet<String> = ids.iter().map(|id| format!("list_id={id}")).collect();
        let new_files = self.live(files);
        let run_id = self.run.run_id.clone();
        let cursor = self
            .run
            .commit(self.stream, |s| {
                s.mode = mode;
                let (old, keep): (Vec<_>, Vec<_>) =
                    std::mem::take(&mut s.files).into_iter().partition(|f| {
                        self.replaced_by(mode, f)
                            && (done.contains(&f.file.partition)
                                || !listed.contains(&f.file.partition))
                    });
                s.files = keep;
                s.files.extend(new_files);
                s.cursor = Some(now);
                s.quarantine = failed
                    .iter()
                    .map(|(folder, error)| Quarantined {
                        key: Some(folder.clone()),
                        start: now,
                        end: now,
                        error: error.clone(),
                        attempts: 1,
                        since_run: run_id.clone(),
                    })
                    .collect();
                old.into_iter().map(|f| f.file.path).collect()
            })
            .await
            .map_err(|e| e.to_string())?;
        p.report.commits += 1;
        p.report.cursor = cursor;
        Ok(())
    }
}
