//! Dated (export) streams: incremental units of whole UTC days, windows split when cut off,
//! quarantine of units that keep failing, and full refreshes over the same windows.

use std::collections::VecDeque;
use std::time::Instant;

use super::dedupe::{Bucketing, is_bucket_file};
use super::{
    MICROS_PER_DAY, Progress, QuarantineReport, StreamCtx, StreamStatus, plan, same_layout,
    switch_layout, to_time,
};
use crate::catalog::SyncMode;
use crate::manifest::Quarantined;
use crate::sink::{Partitioning, WrittenFile, day_of, partition_day};
use crate::source::FetchError;
use crate::source::export::{ExportFetcher, Window};

/// A unit that failed: the error, after how many attempts.
struct UnitFailure {
    error: FetchError,
    attempts: u32,
}

impl StreamCtx<'_> {
    pub(super) fn cursor_column(&self) -> usize {
        self.schema
            .position(self.stream.cursor_field)
            .expect("catalog tests check every dated schema declares its cursor")
    }

    fn fetcher(&self) -> Result<ExportFetcher, String> {
        ExportFetcher::new(self.client.clone(), self.stream, self.decoder.clone())
            .ok_or_else(|| format!("{} is not an export stream", self.stream.name))
    }

    /// Fetch one unit as windows, splitting windows that are cut off or time out.
    async fn fetch_unit(
        &self,
        fetcher: &ExportFetcher,
        unit: Window,
        dir: &str,
        bucketing: Option<&Bucketing>,
        p: &mut Progress,
    ) -> Result<Vec<WrittenFile>, UnitFailure> {
        let policy = &self.opts().window;
        let mut queue = VecDeque::from([unit]);
        let mut files = Vec::new();
        let mut attempts = 0;
        while let Some(w) = queue.pop_front() {
            let column = self.cursor_column();
            let writer = match bucketing {
                Some(b) => self.staging_writer(b),
                None => self.writer(
                    dir,
                    Partitioning::CursorDate {
                        column,
                        fallback_day: day_of(w.start),
                    },
                    Some(column),
                ),
            };
            p.report.windows += 1;
            let t0 = Instant::now();
            match fetcher.fetch(w, writer).await {
                Ok(f) => {
                    tracing::info!(stream = self.stream.name, window = %w, rows = f.rows, bytes = f.body_bytes, secs = t0.elapsed().as_secs_f64(), "window fetched");
                    if f.malformed > 0 {
                        tracing::warn!(stream = self.stream.name, window = %w, lines = f.malformed, "lines that are not JSON objects were kept in _extra._malformed_line");
                    }
                    p.report.malformed_lines += f.malformed;
                    files.extend(f.files);
                }
                Err(error) => {
                    attempts += 1;
                    let give_up = error.is_fatal()
                        || !error.is_splittable()
                        || attempts >= policy.max_attempts;
                    if give_up {
                        self.run.delete_files(&files).await;
                        return Err(UnitFailure { error, attempts });
                    }
                    p.report.window_retries += 1;
                    let span = w.end - w.start;
                    if span > policy.min_window_secs * 1_000_000 {
                        let mid = w.start + (span / 2_000_000) * 1_000_000;
                        tracing::warn!(stream = self.stream.name, window = %w, error = %error, "window failed; splitting it");
                        queue.push_front(Window {
                            start: mid,
                            end: w.end,
                        });
                        queue.push_front(Window {
                            start: w.start,
                            end: mid,
                        });
                    } else {
                        tracing::warn!(stream = self.stream.name, window = %w, error = %error, "window failed; retrying it");
                        queue.push_front(w);
                    }
                }
            }
        }
        Ok(files)
    }

    /// Incremental units; `deduped`: in the bucketed layout of `incremental-deduped`
    /// ([`dedupe`](super::dedupe)). A change of layout (between that one, the dated one and
    /// `full-refresh-append`'s snapshots) starts over from `--start-date`, and the first
    /// unit's commit resets the cursor and retires the other layout ([`switch_layout`]).
    pub(super) async fn incremental(&self, deduped: bool, p: &mut Progress) -> Result<(), String> {
        let fetcher = self.fetcher()?;
        let mode = match deduped {
            true => SyncMode::IncrementalDeduped,
            false => SyncMode::Incremental,
        };
        let state = self.state().await.filter(|s| same_layout(s.mode, mode));
        let bucketing = deduped.then(|| {
            let buckets = state.as_ref().and_then(|s| s.buckets);
            self.bucketing(buckets.unwrap_or(self.opts().dedupe_buckets).max(1))
        });
        if deduped {
            self.remove_stale_staging().await;
        }
        let dir = match deduped {
            true => self.staging_dir(),
            false => self.stream.name.to_string(),
        };
        let cursor = state
            .as_ref()
            .and_then(|s| s.cursor)
            .map(|c| c.timestamp_micros());
        let quarantined: Vec<Window> = state
            .iter()
            .flat_map(|s| s.quarantine.iter())
            .map(|q| Window {
                start: q.start.timestamp_micros(),
                end: q.end.timestamp_micros(),
            })
            .collect();
        let plan = plan::incremental(
            cursor,
            self.opts().start.map(|s| s.timestamp_micros()),
            self.end(),
            self.opts().lookback_days,
            &quarantined,
        )
        .map_err(|e| e.to_string())?;
        p.report.cursor = cursor.map(to_time);
        if plan.up_to_date() {
            p.report.status = StreamStatus::UpToDate;
            return Ok(());
        }
        for w in &plan.retries {
            tracing::info!(stream = self.stream.name, window = %w, "retrying a quarantined window");
        }
        let policy = self.opts().window.clone();
        let mut days = policy.initial_days.max(1);
        let mut next = plan.start;
        let mut queued: VecDeque<(Window, bool)> =
            plan.retries.iter().map(|w| (*w, true)).collect();
        loop {
            let (unit, retry) = match queued.pop_front() {
                Some(u) => u,
                None => match plan.unit(next, days) {
                    Some(w) => (w, false),
                    None => break,
                },
            };
            if self.stopping(p) {
                break;
            }
            if !retry {
                next = unit.end;
            }
            match self
                .fetch_unit(&fetcher, unit, &dir, bucketing.as_ref(), p)
                .await
            {
                Ok(files) => {
                    let rows: u64 = files.iter().map(|f| f.rows).sum();
                    let (files, touched) = match &bucketing {
                        Some(b) => {
                            let live = self.state().await.map(|s| s.files).unwrap_or_default();
                            let live: Vec<_> = live.into_iter().filter(is_bucket_file).collect();
                            let merged = self.merge_buckets(b, files, &live).await?;
                            (merged.files, merged.touched)
                        }
                        None => (files, Default::default()),
                    };
                    self.count(&files, p);
                    let first_day = day_of(unit.start);
                    let last_day = day_of(unit.end - 1);
                    let new_files = self.live(files);
                    let buckets = bucketing.as_ref().map(|b| b.buckets);
                    let cursor = self
                        .run
                        .commit(self.stream, |s| {
                            let mut retired = switch_layout(s, self.stream.name, mode);
                            s.buckets = buckets;
                            let (old, keep): (Vec<_>, Vec<_>) =
                                std::mem::take(&mut s.files).into_iter().partition(|f| {
                                    if deduped {
                                        !is_bucket_file(f) || touched.contains(&f.file.partition)
                                    } else {
                                        is_bucket_file(f)
                                            || partition_day(&f.file.partition)
                                                .is_some_and(|d| d >= first_day && d <= last_day)
                                    }
                                });
                            s.files = keep;
                            s.files.extend(new_files);
                            if !retry {
                                s.cursor = Some(to_time(
                                    s.cursor
                                        .map_or(unit.end, |c| c.timestamp_micros().max(unit.end)),
                                ));
                            }
                            s.quarantine = subtract(std::mem::take(&mut s.quarantine), unit);
                            retired.extend(old.into_iter().map(|f| f.file.path));
                            retired
                        })
                        .await
                        .map_err(|e| e.to_string())?;
                    p.report.commits += 1;
                    p.report.cursor = cursor;
                    let span_days =
                        ((unit.end - unit.start) as f64 / MICROS_PER_DAY as f64).max(1.0 / 24.0);
                    let per_day = rows as f64 / span_days;
                    days = if per_day < 1.0 {
                        (days * 4).min(policy.max_days)
                    } else {
                        ((policy.target_rows as f64 / per_day) as i64).clamp(1, policy.max_days)
                    };
                }
                Err(UnitFailure { error, attempts }) => {
                    if error.is_fatal() {
                        return Err(error.to_string());
                    }
                    tracing::error!(stream = self.stream.name, window = %unit, attempts, error = %error, "window quarantined");
                    let q = Quarantined {
                        key: None,
                        start: to_time(unit.start),
                        end: to_time(unit.end),
                        error: error.to_string(),
                        attempts,
                        since_run: self.run.run_id.clone(),
                    };
                    p.report.quarantined.push(QuarantineReport {
                        key: None,
                        start: q.start,
                        end: q.end,
                        error: q.error.clone(),
                    });
                    let cursor = self
                        .run
                        .commit(self.stream, |s| {
                            let retired = switch_layout(s, self.stream.name, mode);
                            let mut kept = subtract(std::mem::take(&mut s.quarantine), unit);
                            kept.push(q);
                            kept.sort_by_key(|q| q.start);
                            s.quarantine = kept;
                            if !retry {
                                s.cursor = Some(to_time(
                                    s.cursor
                                        .map_or(unit.end, |c| c.timestamp_micros().max(unit.end)),
                                ));
                            }
                            retired
                        })
                        .await
                        .map_err(|e| e.to_string())?;
                    p.report.commits += 1;
                    p.report.cursor = cursor;
                }
            }
        }
        Ok(())
    }

    pub(super) async fn full_refresh(
        &self,
        mode: SyncMode,
        p: &mut Progress,
    ) -> Result<(), String> {
        let end = self.end();
        let units = plan::full_refresh(
            self.opts().start.map(|s| s.timestamp_micros()),
            end,
            self.opts().window.initial_days,
        )
        .map_err(|e| e.to_string())?;
        let fetcher = self.fetcher()?;
        let dir = self.dir(mode);
        let mut all = Vec::new();
        for unit in units {
            if self.stopping(p) {
                self.run.delete_files(&all).await;
                return Ok(());
            }
            match self.fetch_unit(&fetcher, unit, &dir, None, p).await {
                Ok(files) => all.extend(files),
                Err(UnitFailure { error, .. }) => {
                    self.run.delete_files(&all).await;
                    return Err(format!("window {unit}: {error}; nothing was committed"));
                }
            }
        }
        self.commit_refresh(mode, all, to_time(end), p).await
    }
}

/// Quarantined windows minus `done` (all windows are whole days but the last, so what
/// remains is too).
fn subtract(quarantine: Vec<Quarantined>, done: Window) -> Vec<Quarantined> {
    let mut out = Vec::new();
    for q in quarantine {
        let (s, e) = (q.start.timestamp_micros(), q.end.timestamp_micros());
        if e <= done.start || s >= done.end {
            out.push(q);
            continue;
        }
        if s < done.start {
            out.push(Quarantined {
                end: to_time(done.start),
                ..q.clone()
            });
        }
        if e > done.end {
            out.push(Quarantined {
                start: to_time(done.end),
                ..q
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(s: i64, e: i64) -> Quarantined {
        Quarantined {
            key: None,
            start: to_time(s),
            end: to_time(e),
            error: "x".into(),
            attempts: 1,
            since_run: "r".into(),
        }
    }

    #[test]
    fn subtracting_windows_from_quarantine() {
        let span = |v: Vec<Quarantined>| -> Vec<(i64, i64)> {
            v.iter()
                .map(|q| (q.start.timestamp_micros(), q.end.timestamp_micros()))
                .collect()
        };
        let w = Window { start: 10, end: 20 };
        assert_eq!(
            span(subtract(vec![q(0, 10), q(20, 30)], w)),
            [(0, 10), (20, 30)]
        );
        assert_eq!(span(subtract(vec![q(12, 18)], w)), Vec::<(i64, i64)>::new());
        assert_eq!(span(subtract(vec![q(5, 25)], w)), [(5, 10), (20, 25)]);
        assert_eq!(span(subtract(vec![q(15, 25)], w)), [(20, 25)]);
    }
}
