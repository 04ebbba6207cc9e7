//! Dated (export) streams: incremental units of whole UTC days, windows split when cut off,
//! quarantine of units that keep failing, and full refreshes over the same windows.
//!
//! - A unit is fetched as windows in time order. A window cut off or timed out is split in
//!   halves (down to `min_window_secs`), then retried; each window counts its own attempts,
//!   so a heavy day that needs many splits converges, and after a cut-off the next unit is no
//!   longer than the longest window that came back whole.
//! - A window that still fails ends its unit: the whole days fetched before it commit as a
//!   unit of their own (in the deduped layout, everything fetched before it), and only the
//!   rest is quarantined, so the next run does not fetch them again.
//! - The replace guard: a commit of the dated layout replaces the live files of the date
//!   partitions it read, so a read holding under `min_replace_ratio` of a partition's live
//!   rows (a body cut short that still looked whole, an outage answering empty days) is not
//!   committed but quarantined, and read again by the next run. For `users`, whose rows move
//!   to the day of their latest update, only reads that reach the run's end are guarded,
//!   over their days together (see [`guard_replace`]). Incremental-deduped merges
//!   by key and never drops a key, so it needs no guard; a full refresh replaces the stream
//!   by choice and is not guarded either.

use std::collections::{BTreeMap, VecDeque};
use std::ops::RangeInclusive;
use std::sync::atomic::Ordering;
use std::time::Instant;

use futures::StreamExt;
use futures::stream::FuturesOrdered;

use super::dedupe::{Bucketing, is_bucket_file};
use super::{
    MICROS_PER_DAY, Progress, QuarantineReport, StreamCtx, StreamStatus, WindowPolicy, floor_day,
    plan, same_layout, switch_layout, to_time,
};
use crate::catalog::SyncMode;
use crate::manifest::{LiveFile, Quarantined};
use crate::sink::{
    Partitioning, WrittenFile, date_partition, day_of, is_cursorless, partition_day,
};
use crate::source::FetchError;
use crate::source::export::{ExportFetcher, Window};

/// Why the rest of a unit was given up: the error of the window that failed, after how
/// many attempts of that window.
struct UnitFailure {
    error: FetchError,
    attempts: u32,
}

/// What fetching a unit gave: the files of the windows that came back whole, which cover
/// `[unit.start, done)` without a gap (windows are fetched in time order), and why the rest
/// was given up, when it was.
struct UnitFetch {
    files: Vec<WrittenFile>,
    done: i64,
    failure: Option<UnitFailure>,
    /// A window was cut off or timed out (and split or retried).
    cut: bool,
    /// The longest window that came back whole, µs.
    longest_ok: i64,
}

/// A window of a unit still to fetch, and how often that window itself has failed. The
/// halves of a split window start again at zero: a split is progress (bounded by
/// `min_window_secs`), so a heavy day that needs many splits is not given up.
struct Pending {
    window: Window,
    attempts: u32,
}

/// Live partitions holding fewer rows than this are not guarded against a short re-read:
/// a few deleted users can halve them, and a guard that fires on every run would keep such
/// a day quarantined for good.
const GUARDED_PARTITION_ROWS: u64 = 20;

/// A re-read that would replace date partitions with far fewer rows than they hold live.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error(
    "the re-read holds {read} rows for {partition} where {live} are live{more}, under \
     --min-replace-ratio {ratio}; nothing of this window was committed, its live rows stay, \
     and the next run reads it again (if the data really shrank, run once with \
     --min-replace-ratio 0)"
)]
struct ShortReread {
    partition: String,
    read: u64,
    live: u64,
    /// `, and N more partitions` when more are short.
    more: String,
    ratio: f64,
}

/// Whether `file` lies in a date partition of the dated layout in `days`: the files a unit
/// over those days replaces (with the other layout's bucket files, which it retires).
fn in_days(file: &LiveFile, days: &RangeInclusive<i64>) -> bool {
    !is_bucket_file(file) && partition_day(&file.file.partition).is_some_and(|d| days.contains(&d))
}

/// The replace guard: `Err` when `read`, the files of a re-read of `days`, holds under
/// `ratio` of the rows `live` holds there (and the live rows are at least
/// [`GUARDED_PARTITION_ROWS`]). `by_partition` (events, which never change date): each date
/// partition on its own, since a body cut short empties the days after the cut whatever
/// the days before it hold. Otherwise (users, whose row moves to the date of their latest
/// update, always later): all the days together, against every row read, wherever it
/// landed; the caller guards only reads that reach the run's end, which read every such
/// user again.
fn guard_replace(
    read: &[WrittenFile],
    live: &[LiveFile],
    days: RangeInclusive<i64>,
    ratio: f64,
    by_partition: bool,
) -> Result<(), ShortReread> {
    let whole = format!(
        "{} to {}",
        date_partition(*days.start()),
        date_partition(*days.end())
    );
    let key = |partition: &str| match by_partition {
        true => partition.to_string(),
        false => whole.clone(),
    };
    let mut rows: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    for f in live.iter().filter(|f| in_days(f, &days)) {
        rows.entry(key(&f.file.partition)).or_default().1 += f.file.rows;
    }
    for f in read {
        if let Some(r) = rows.get_mut(&key(&f.partition)) {
            r.0 += f.rows;
        }
    }
    let short: Vec<(String, u64, u64)> = rows
        .into_iter()
        .filter(|(_, (read, live))| {
            *live >= GUARDED_PARTITION_ROWS && (*read as f64) < ratio * *live as f64
        })
        .map(|(partition, (read, live))| (partition, read, live))
        .collect();
    let Some((partition, read, live)) = short.first().cloned() else {
        return Ok(());
    };
    Err(ShortReread {
        partition,
        read,
        live,
        more: match short.len() {
            1 => String::new(),
            n => format!(", and {} more partitions", n - 1),
        },
        ratio,
    })
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

    /// Fetch one unit as windows in time order, splitting windows that are cut off or time
    /// out, down to `min_window_secs`, then retrying a window up to `max_attempts` times.
    /// A window that still fails ends the unit: what came back before it is kept (the
    /// caller commits that prefix or deletes it). `Err` only for a fatal error, after
    /// deleting every file. `backfill`: the stream has no cursor (see [`plan::uses_jobs`]).
    ///
    /// A unit read through export jobs is cut into windows of whole days fetched at once,
    /// as many as the run's job slots left to each stream synced at once
    /// ([`plan::jobs_per_unit`]), and their results are taken in time order as if fetched one
    /// after another: after the first that failed, the later ones' files are deleted and
    /// their windows fetched again after it.
    async fn fetch_unit(
        &self,
        fetcher: &ExportFetcher,
        backfill: bool,
        unit: Window,
        dir: &str,
        bucketing: Option<&Bucketing>,
        p: &mut Progress,
    ) -> Result<UnitFetch, FetchError> {
        let policy = &self.opts().window;
        let o = self.opts();
        let by_job = |w: &Window| {
            !self.run.jobs_refused.load(Ordering::Relaxed)
                && plan::uses_jobs(o.export_api, backfill, w.end, self.end(), o.lookback_days)
        };
        let at_once = match by_job(&unit) {
            true => plan::jobs_per_unit(o, self.run.export_streams_left.load(Ordering::Relaxed)),
            false => 1,
        };
        let mut queue: VecDeque<Pending> = whole_day_pieces(unit, at_once)
            .into_iter()
            .map(|window| Pending {
                window,
                attempts: 0,
            })
            .collect();
        let mut out = UnitFetch {
            files: Vec::new(),
            done: unit.start,
            failure: None,
            cut: false,
            longest_ok: 0,
        };
        let column = self.cursor_column();
        let writer = || match bucketing {
            Some(b) => self.staging_writer(b),
            None => self.writer(dir, Partitioning::CursorDate { column }, Some(column)),
        };
        let fetch = |pending: Pending| {
            let w = pending.window;
            async move {
                let t0 = Instant::now();
                let fetched = match by_job(&w) {
                    true => match fetcher.fetch_by_job(&self.run.jobs, w, writer()).await {
                        // `auto`: a key that may not start jobs reads through data.json.
                        Err(e) if e.is_jobs_refused() && o.export_api == plan::ExportApi::Auto => {
                            if !self.run.jobs_refused.swap(true, Ordering::Relaxed) {
                                tracing::warn!(error = %e, "export jobs refused: the run reads every window through data.json");
                            }
                            fetcher.fetch(w, writer()).await
                        }
                        fetched => fetched,
                    },
                    false => fetcher.fetch(w, writer()).await,
                };
                (fetched, t0.elapsed(), pending)
            }
        };
        // Up to `at_once` windows in flight, taken in time order: the next one starts as
        // soon as one is taken, not when the slowest of a batch is done.
        let mut in_flight = FuturesOrdered::new();
        loop {
            while in_flight.len() < at_once {
                match queue.pop_front() {
                    Some(pending) => in_flight.push_back(fetch(pending)),
                    None => break,
                }
            }
            let Some((
                fetched,
                took,
                Pending {
                    window: w,
                    attempts,
                },
            )) = in_flight.next().await
            else {
                break;
            };
            p.report.windows += 1;
            let error = match fetched {
                Ok(f) => {
                    tracing::info!(stream = self.stream.name, window = %w, rows = f.rows, bytes = f.body_bytes, secs = took.as_secs_f64(), "window fetched");
                    if f.malformed > 0 {
                        tracing::warn!(stream = self.stream.name, window = %w, lines = f.malformed, "lines that are not JSON objects were kept in _extra._malformed_line");
                    }
                    p.report.malformed_lines += f.malformed;
                    out.files.extend(f.files);
                    out.done = w.end;
                    out.longest_ok = out.longest_ok.max(w.end - w.start);
                    continue;
                }
                Err(error) => error,
            };
            // The windows after this one are fetched again after it, in order.
            let later: Vec<_> = std::mem::take(&mut in_flight).collect().await;
            for (later, _, pending) in later.into_iter().rev() {
                if let Ok(f) = later {
                    self.run.delete_files(&f.files).await;
                }
                queue.push_front(pending);
            }
            if error.is_fatal() {
                self.run.delete_files(&out.files).await;
                return Err(error);
            }
            let attempts = attempts + 1;
            let span = w.end - w.start;
            let split = error.is_splittable() && span > policy.min_window_secs * 1_000_000;
            if !error.is_splittable() || (!split && attempts >= policy.max_attempts) {
                out.failure = Some(UnitFailure { error, attempts });
                return Ok(out);
            }
            out.cut = true;
            p.report.window_retries += 1;
            if split {
                let mid = w.start + (span / 2_000_000) * 1_000_000;
                tracing::warn!(stream = self.stream.name, window = %w, error = %error, "window failed; splitting it");
                queue.push_front(Pending {
                    window: Window {
                        start: mid,
                        end: w.end,
                    },
                    attempts: 0,
                });
                queue.push_front(Pending {
                    window: Window {
                        start: w.start,
                        end: mid,
                    },
                    attempts: 0,
                });
            } else {
                tracing::warn!(stream = self.stream.name, window = %w, attempts, error = %error, "window failed; retrying it");
                queue.push_front(Pending {
                    window: w,
                    attempts,
                });
            }
        }
        Ok(out)
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
        let o = self.opts();
        let jobs_until =
            plan::jobs_until(o.export_api, cursor.is_none(), self.end(), o.lookback_days);
        let mut sizer = Sizer::new(&o.window, jobs_until, true);
        let mut next = plan.start;
        let mut queued: VecDeque<(Window, bool)> =
            plan.retries.iter().map(|w| (*w, true)).collect();
        loop {
            let (unit, retry) = match queued.pop_front() {
                Some(u) => u,
                None => match sizer.unit(next, |n, days| plan.unit(n, days)) {
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
            let UnitFetch {
                files,
                done,
                failure,
                cut,
                longest_ok,
            } = match self
                .fetch_unit(
                    &fetcher,
                    cursor.is_none(),
                    unit,
                    &dir,
                    bucketing.as_ref(),
                    p,
                )
                .await
            {
                Ok(f) => f,
                Err(error) => return Err(error.to_string()),
            };
            let fetched_rows: u64 = files.iter().map(|f| f.rows).sum();
            // What commits: the unit, or the prefix fetched before a window was given up. A
            // commit replaces whole date partitions, so in the dated layout the prefix ends
            // at a day's start and the files of its last, partly read day go; the deduped
            // layout merges by key and keeps every row read. Rows without a cursor come
            // from windows that came back whole and are added only where new
            // ([`cursorless`](super::cursorless)), so a prefix keeps them.
            let mut end = match (&failure, deduped) {
                (None, _) => unit.end,
                (Some(_), true) => done,
                (Some(_), false) => floor_day(done).max(unit.start),
            };
            let (mut files, partial): (Vec<_>, Vec<_>) = files.into_iter().partition(|f| {
                deduped
                    || (is_cursorless(&f.partition) && end > unit.start)
                    || partition_day(&f.partition).is_some_and(|d| d * MICROS_PER_DAY < end)
            });
            self.run.delete_files(&partial).await;
            let mut rest = failure.map(|UnitFailure { error, attempts }| {
                (
                    Window {
                        start: end,
                        end: unit.end,
                    },
                    error.to_string(),
                    attempts,
                )
            });
            // A user's row moves to the day of their latest update, so the users live in
            // the days replaced are all read again only by a read that reaches the run's
            // end; a shorter one may rightly hold fewer and is not guarded.
            let guarded = self.stream.is_event() || end == plan.end;
            if !deduped && guarded && end > unit.start {
                let live = self.state().await.map(|s| s.files).unwrap_or_default();
                let days = day_of(unit.start)..=day_of(end - 1);
                let ratio = self.opts().min_replace_ratio;
                if let Err(short) =
                    guard_replace(&files, &live, days, ratio, self.stream.is_event())
                {
                    self.run.delete_files(&files).await;
                    files.clear();
                    let error = match rest {
                        Some((_, e, _)) => format!("{short}; after it: {e}"),
                        None => short.to_string(),
                    };
                    rest = Some((unit, error, 1));
                    end = unit.start;
                }
            }
            let committed = end > unit.start;
            if committed && !deduped {
                let live = self.state().await.map(|s| s.files).unwrap_or_default();
                let rows;
                (files, rows) = self.keep_new_cursorless(files, &live).await?;
                p.report.rows_without_cursor += rows.read;
                p.report.new_rows_without_cursor += rows.new;
            }
            let (files, touched) = match &bucketing {
                Some(b) if committed => {
                    let live = self.state().await.map(|s| s.files).unwrap_or_default();
                    let live: Vec<_> = live.into_iter().filter(is_bucket_file).collect();
                    let merged = self.merge_buckets(b, files, &live).await?;
                    (merged.files, merged.touched)
                }
                _ => (files, Default::default()),
            };
            self.count(&files, p);
            let new_files = self.live(files);
            let days = day_of(unit.start)..=day_of(end - 1);
            let buckets = bucketing.as_ref().map(|b| b.buckets);
            let quarantined = rest.map(|(window, error, attempts)| {
                tracing::error!(stream = self.stream.name, window = %window, attempts, error = %error, "window quarantined");
                p.report.quarantined.push(QuarantineReport {
                    key: None,
                    start: to_time(window.start),
                    end: to_time(window.end),
                    error: error.clone(),
                });
                Quarantined {
                    key: None,
                    start: to_time(window.start),
                    end: to_time(window.end),
                    error,
                    attempts,
                    since_run: self.run.run_id.clone(),
                }
            });
            let cursor = self
                .run
                .commit(self.stream, |s| {
                    let mut retired = switch_layout(s, self.stream.name, mode);
                    let mut old = Vec::new();
                    if committed {
                        s.buckets = buckets;
                        let keep;
                        (old, keep) = std::mem::take(&mut s.files).into_iter().partition(|f| {
                            if deduped {
                                !is_bucket_file(f) || touched.contains(&f.file.partition)
                            } else {
                                is_bucket_file(f) || in_days(f, &days)
                            }
                        });
                        s.files = keep;
                        s.files.extend(new_files);
                    }
                    if !retry {
                        s.cursor = Some(to_time(
                            s.cursor
                                .map_or(unit.end, |c| c.timestamp_micros().max(unit.end)),
                        ));
                    }
                    let mut kept = subtract(std::mem::take(&mut s.quarantine), unit);
                    kept.extend(quarantined);
                    kept.sort_by_key(|q| q.start);
                    s.quarantine = kept;
                    retired.extend(old.into_iter().map(|f| f.file.path));
                    retired
                })
                .await
                .map_err(|e| e.to_string())?;
            p.report.commits += 1;
            p.report.cursor = cursor;
            sizer.after(fetched_rows, done - unit.start, cut.then_some(longest_ok));
        }
        Ok(())
    }

    pub(super) async fn full_refresh(
        &self,
        mode: SyncMode,
        p: &mut Progress,
    ) -> Result<(), String> {
        let end = self.end();
        let o = self.opts();
        let start = plan::full_refresh_start(o.start.map(|s| s.timestamp_micros()))
            .map_err(|e| e.to_string())?;
        let jobs_until = plan::jobs_until(o.export_api, false, end, o.lookback_days);
        let mut sizer = Sizer::new(&o.window, jobs_until, false);
        let fetcher = self.fetcher()?;
        let dir = self.dir(mode);
        let mut all = Vec::new();
        let mut next = start;
        while let Some(unit) = sizer.unit(next, |n, days| plan::full_refresh_unit(n, days, end)) {
            next = unit.end;
            if self.stopping(p) {
                self.run.delete_files(&all).await;
                return Ok(());
            }
            let error = match self.fetch_unit(&fetcher, false, unit, &dir, None, p).await {
                Ok(UnitFetch {
                    files,
                    failure: None,
                    cut,
                    longest_ok,
                    ..
                }) => {
                    let rows = files.iter().map(|f| f.rows).sum();
                    sizer.after(rows, unit.end - unit.start, cut.then_some(longest_ok));
                    all.extend(files);
                    continue;
                }
                Ok(UnitFetch {
                    files,
                    failure: Some(UnitFailure { error, .. }),
                    ..
                }) => {
                    self.run.delete_files(&files).await;
                    error
                }
                Err(error) => error,
            };
            self.run.delete_files(&all).await;
            return Err(format!("window {unit}: {error}; nothing was committed"));
        }
        let cursorless: u64 = all
            .iter()
            .filter(|f| is_cursorless(&f.partition))
            .map(|f| f.rows)
            .sum();
        p.report.rows_without_cursor += cursorless;
        p.report.new_rows_without_cursor += cursorless;
        self.commit_refresh(mode, all, to_time(end), p).await
    }
}

/// The size of a sweep's next unit: from [`WindowPolicy::max_days`] and
/// [`WindowPolicy::target_rows`] while its units are read through `data.json`, from
/// [`WindowPolicy::job_max_days`] and [`WindowPolicy::job_target_rows`] while through export
/// jobs (units that end by `jobs_until`, [`plan::jobs_until`]), each sized from the rows a
/// day of the units before ([`next_unit_days`]).
struct Sizer {
    policy: WindowPolicy,
    /// `policy` with the sizes of units read through export jobs.
    jobs: WindowPolicy,
    days: i64,
    job_days: i64,
    jobs_until: Option<i64>,
    /// Whether `data.json` units adapt (a full refresh keeps them at the first size).
    adapt: bool,
}

impl Sizer {
    fn new(policy: &WindowPolicy, jobs_until: Option<i64>, adapt: bool) -> Self {
        Sizer {
            policy: policy.clone(),
            jobs: WindowPolicy {
                max_days: policy.job_max_days,
                target_rows: policy.job_target_rows,
                ..policy.clone()
            },
            days: policy.initial_days.max(1),
            job_days: policy.initial_days.max(1),
            jobs_until,
            adapt,
        }
    }

    /// The unit starting at `next`, from `unit(next, days)` (which caps it at the sweep's
    /// end, or says there is none): one read through export jobs when a unit sized for
    /// `data.json` would be, then sized for jobs and ending by `jobs_until`.
    fn unit(&self, next: i64, unit: impl Fn(i64, i64) -> Option<Window>) -> Option<Window> {
        let sized = unit(next, self.days)?;
        match self.jobs_until {
            Some(until) if sized.end <= until => unit(next, self.job_days).map(|w| Window {
                start: w.start,
                end: w.end.min(until),
            }),
            _ => Some(sized),
        }
    }

    /// After a unit that read `rows` rows over `span` µs (see [`next_unit_days`]).
    fn after(&mut self, rows: u64, span: i64, cut: Option<i64>) {
        self.job_days = next_unit_days(&self.jobs, self.job_days, rows, span, cut);
        if self.adapt {
            self.days = next_unit_days(&self.policy, self.days, rows, span, cut);
        }
    }
}

/// The next unit's size in days after one of `days` that read `rows` rows over `span` µs
/// (less than the unit when it gave up): about `target_rows` rows, four times longer after
/// one with under a row a day. After a cut-off or timeout (`cut`: the longest window that
/// came back whole, µs) it is no longer than that window in whole days, so the next unit is
/// not split all over again.
fn next_unit_days(policy: &WindowPolicy, days: i64, rows: u64, span: i64, cut: Option<i64>) -> i64 {
    let sized = if span <= 0 {
        days
    } else {
        let span_days = (span as f64 / MICROS_PER_DAY as f64).max(1.0 / 24.0);
        let per_day = rows as f64 / span_days;
        if per_day < 1.0 {
            (days * 4).min(policy.max_days)
        } else {
            ((policy.target_rows as f64 / per_day) as i64).clamp(1, policy.max_days)
        }
    };
    match cut {
        Some(longest) => sized.min((longest / MICROS_PER_DAY).max(1)),
        None => sized,
    }
}

/// `unit` cut into at most `pieces` windows of whole days (counted from its start; the last
/// one takes the rest), in time order.
fn whole_day_pieces(unit: Window, pieces: usize) -> Vec<Window> {
    let days = (unit.end - unit.start).div_euclid(MICROS_PER_DAY);
    let pieces = (pieces as i64).min(days).max(1);
    let step = (days + pieces - 1) / pieces * MICROS_PER_DAY;
    let mut out = Vec::new();
    let mut start = unit.start;
    while start < unit.end {
        let end = match start + step {
            e if e >= unit.end || unit.end - e < MICROS_PER_DAY => unit.end,
            e => e,
        };
        out.push(Window { start, end });
        start = end;
    }
    out
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

    const DAY: i64 = MICROS_PER_DAY;

    fn written(day: i64, rows: u64) -> WrittenFile {
        WrittenFile {
            path: format!("s/{}/part-r-{rows}.parquet", date_partition(day)),
            partition: date_partition(day),
            rows,
            bytes: 1,
            min_cursor: None,
            max_cursor: None,
            column_stats: None,
        }
    }

    fn live_file(day: i64, rows: u64) -> LiveFile {
        LiveFile {
            file: written(day, rows),
            run: "r".into(),
        }
    }

    #[test]
    fn the_replace_guard_compares_each_partition_with_its_live_rows() {
        let live = vec![
            live_file(10, 60),
            live_file(10, 40),
            live_file(11, 100),
            live_file(12, 100),
        ];
        // Day 12 is not replaced; day 11 is short, day 10 has half of its 100 rows.
        let read = vec![written(10, 50), written(11, 30), written(13, 500)];
        let err = guard_replace(&read, &live, 10..=11, 0.5, true).unwrap_err();
        assert_eq!(
            (
                err.partition.as_str(),
                err.read,
                err.live,
                err.more.as_str()
            ),
            ("date=1970-01-12", 30, 100, "")
        );
        assert!(err.to_string().contains("--min-replace-ratio 0.5"), "{err}");
        assert!(guard_replace(&read, &live, 10..=10, 0.5, true).is_ok());
        assert!(guard_replace(&read, &live, 10..=11, 0.3, true).is_ok());
        assert!(
            guard_replace(&[], &live, 10..=11, 0.0, true).is_ok(),
            "0: no guard"
        );
        let err = guard_replace(&[], &live, 10..=12, 0.5, true).unwrap_err();
        assert_eq!(err.more, ", and 2 more partitions");
        // Nothing live (a first read), or a small day: nothing to guard.
        assert!(guard_replace(&[], &[], 10..=12, 0.5, true).is_ok());
        let small = vec![live_file(10, GUARDED_PARTITION_ROWS - 1)];
        assert!(guard_replace(&[], &small, 10..=10, 0.5, true).is_ok());
        // Bucket files of the other layout are retired, not compared.
        let mut bucket = live_file(10, 100);
        bucket.file.partition = "bucket=01".into();
        assert!(guard_replace(&[], &[bucket], 10..=10, 0.5, true).is_ok());
        // Users: rows that moved to a later day count for the days they left.
        let moved = vec![written(10, 20), written(11, 20), written(13, 160)];
        assert!(guard_replace(&moved, &live, 10..=11, 0.5, false).is_ok());
        let err = guard_replace(&moved[..2], &live, 10..=11, 0.5, false).unwrap_err();
        assert_eq!(
            (err.partition.as_str(), err.read, err.live),
            ("date=1970-01-11 to date=1970-01-12", 40, 200)
        );
    }

    #[test]
    fn units_shrink_after_a_cut_off() {
        let policy = WindowPolicy::default();
        let rows_per_day = 100_000;
        // Sized from the rows per day: 2,000,000 / 100,000.
        assert_eq!(
            next_unit_days(&policy, 7, 7 * rows_per_day, 7 * DAY, None),
            20
        );
        // Cut off: no longer than the longest whole window, at least a day.
        assert_eq!(
            next_unit_days(&policy, 7, 7 * rows_per_day, 7 * DAY, Some(2 * DAY + 5)),
            2
        );
        assert_eq!(
            next_unit_days(&policy, 7, 7 * rows_per_day, 7 * DAY, Some(DAY / 8)),
            1
        );
        // Given up before any window came back: a day.
        assert_eq!(next_unit_days(&policy, 7, 0, 0, Some(0)), 1);
        assert_eq!(next_unit_days(&policy, 7, 0, 0, None), 7);
        assert_eq!(next_unit_days(&policy, 7, 0, 7 * DAY, None), 28);
    }

    #[test]
    fn units_read_by_jobs_are_longer_and_end_where_jobs_end() {
        let policy = WindowPolicy::default();
        let sweep = |n: i64, days: i64| plan::full_refresh_unit(n, days, 1_000 * DAY);
        let mut sizer = Sizer::new(&policy, Some(400 * DAY), true);
        assert_eq!(sizer.unit(0, sweep).unwrap().end, 7 * DAY, "the first unit");
        // 10,000 rows a day: data.json units of 90 days (capped), job units of 366.
        sizer.after(70_000, 7 * DAY, None);
        assert_eq!(sizer.unit(7 * DAY, sweep).unwrap().end, 373 * DAY);
        assert_eq!(
            sizer.unit(300 * DAY, sweep).unwrap().end,
            400 * DAY,
            "the last unit read by jobs ends where they end"
        );
        assert_eq!(
            sizer.unit(373 * DAY, sweep).unwrap().end,
            463 * DAY,
            "a unit that would not end by then is read through data.json whole"
        );
        assert_eq!(sizer.unit(400 * DAY, sweep).unwrap().end, 490 * DAY);
        // 1,000,000 rows a day: 30 days of jobs, 2 of data.json.
        sizer.after(7_000_000, 7 * DAY, None);
        assert_eq!(sizer.unit(0, sweep).unwrap().end, 30 * DAY);
        assert_eq!(sizer.unit(400 * DAY, sweep).unwrap().end, 402 * DAY);
        // A full refresh keeps its data.json units at the first size.
        let mut sizer = Sizer::new(&policy, None, false);
        sizer.after(70_000, 7 * DAY, None);
        assert_eq!(sizer.unit(0, sweep).unwrap().end, 7 * DAY);
    }

    #[test]
    fn a_unit_read_by_jobs_is_cut_in_whole_days() {
        let spans = |unit: Window, n| -> Vec<(i64, i64)> {
            whole_day_pieces(unit, n)
                .iter()
                .map(|w| (w.start, w.end))
                .collect()
        };
        let week = Window {
            start: 0,
            end: 7 * DAY,
        };
        assert_eq!(spans(week, 1), [(0, 7 * DAY)]);
        assert_eq!(
            spans(week, 4),
            [
                (0, 2 * DAY),
                (2 * DAY, 4 * DAY),
                (4 * DAY, 6 * DAY),
                (6 * DAY, 7 * DAY)
            ]
        );
        assert_eq!(spans(week, 10).len(), 7);
        // A part-day end stays with the last whole day; under a day is one window.
        let tail = Window {
            start: 0,
            end: 2 * DAY + 5,
        };
        assert_eq!(spans(tail, 4), [(0, DAY), (DAY, 2 * DAY + 5)]);
        let short = Window {
            start: 3,
            end: DAY / 2,
        };
        assert_eq!(spans(short, 4), [(3, DAY / 2)]);
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
