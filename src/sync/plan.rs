//! What a run reads, decided before any request: for dated streams, where the read starts and
//! ends, which quarantined windows are retried and how the first units are cut; for snapshot
//! streams, the endpoint. Pure functions of the options and the manifest, used by the sync
//! itself (`dated`) and by `sync --dry-run` ([`describe`]).

use super::{MICROS_PER_DAY, SyncOptions, floor_day, to_time};
use crate::catalog::{Layout, StreamDef, SyncMode};
use crate::manifest::Manifest;
use crate::source::export::Window;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error("no cursor yet: give --start-date for the first sync")]
    NoCursor,
    #[error("a full refresh needs --start-date")]
    FullRefreshNoStart,
}

/// How export streams are read.
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    clap::ValueEnum,
    serde::Serialize,
    serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum ExportApi {
    /// `GET /api/export/data.json`, one streamed response per window.
    Stream,
    /// An export job per window (`POST /api/export/start`, then its files).
    Jobs,
    /// Jobs for a backfill's windows, `data.json` for the recent tail.
    #[default]
    Auto,
}

/// Whether a window ending at `window_end` is read through an export job. `backfill`: the
/// stream has no cursor yet (its first run, or a reset). `auto` also uses jobs for windows
/// that end before the last `lookback_days` whole days before `end` (the incremental
/// settling window), as in a lake far behind; the recent tail is one small `data.json`
/// request, faster than a job's queue.
pub fn uses_jobs(
    api: ExportApi,
    backfill: bool,
    window_end: i64,
    end: i64,
    lookback_days: i64,
) -> bool {
    jobs_until(api, backfill, end, lookback_days).is_some_and(|until| window_end <= until)
}

/// The instant up to which windows are read through export jobs ([`uses_jobs`]): a window
/// that ends by it is; `None` when none is.
pub fn jobs_until(api: ExportApi, backfill: bool, end: i64, lookback_days: i64) -> Option<i64> {
    match api {
        ExportApi::Stream => None,
        ExportApi::Jobs => Some(i64::MAX),
        ExportApi::Auto if backfill => Some(i64::MAX),
        ExportApi::Auto => Some(floor_day(end) - lookback_days.max(0) * MICROS_PER_DAY),
    }
}

/// How many jobs one unit read through export jobs is cut into: the run's job slots shared
/// by the export streams that may be syncing at once (`--concurrency`, or fewer when fewer
/// are left: `export_streams_left`, the selected export streams not finished yet), at
/// least one. More, smaller jobs only pay off when slots would stay idle: each job has its
/// own queue and start-up time. Counted again for each unit, so that the streams still
/// syncing at the end of a run take over the slots of those that finished.
pub fn jobs_per_unit(opts: &SyncOptions, export_streams_left: usize) -> usize {
    (opts.jobs.max_jobs / opts.concurrency.min(export_streams_left).max(1)).max(1)
}

/// How a window is read, for the dry run.
fn via(opts: &SyncOptions, backfill: bool, w: &Window, end: i64) -> &'static str {
    match uses_jobs(opts.export_api, backfill, w.end, end, opts.lookback_days) {
        true => "an export job",
        false => "data.json",
    }
}

/// The end of a run's reading: the earlier of `--end-date` and `now - lag`, in µs.
pub fn read_end(opts: &SyncOptions) -> i64 {
    let cap = opts.now - opts.lag;
    opts.end.map_or(cap, |e| e.min(cap)).timestamp_micros()
}

/// An incremental read of a dated stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Incremental {
    /// The stream's cursor in the manifest, µs.
    pub cursor: Option<i64>,
    /// Where the sweep starts: the start of the UTC day of the cursor minus the lookback
    /// days, or of `--start-date` for a stream with no cursor.
    pub start: i64,
    pub end: i64,
    /// Quarantined windows the sweep does not cover, retried first: their parts before
    /// `start`, or, when there is no sweep, their parts before `end`.
    pub retries: Vec<Window>,
    /// Whether there is new data to read: the cursor is before `end` and `start < end`.
    pub sweep: bool,
}

impl Incremental {
    pub fn up_to_date(&self) -> bool {
        self.retries.is_empty() && !self.sweep
    }

    /// The sweep's unit after `next`, `days` long and capped at `end`.
    pub fn unit(&self, next: i64, days: i64) -> Option<Window> {
        (self.sweep && next < self.end).then(|| Window {
            start: next,
            end: (next + days.max(1) * MICROS_PER_DAY).min(self.end),
        })
    }
}

/// Plan an incremental read from the stream's cursor and quarantined windows.
pub fn incremental(
    cursor: Option<i64>,
    start_date: Option<i64>,
    end: i64,
    lookback_days: i64,
    quarantined: &[Window],
) -> Result<Incremental, PlanError> {
    let start = match (cursor, start_date) {
        (Some(c), _) => floor_day(c) - lookback_days * MICROS_PER_DAY,
        (None, Some(s)) => floor_day(s),
        (None, None) => return Err(PlanError::NoCursor),
    };
    let sweep = cursor.is_none_or(|c| c < end) && start < end;
    let covered = if sweep { start } else { end };
    let retries = quarantined
        .iter()
        .map(|w| Window {
            start: w.start,
            end: w.end.min(covered),
        })
        .filter(|w| w.start < w.end)
        .collect();
    Ok(Incremental {
        cursor,
        start,
        end,
        retries,
        sweep,
    })
}

/// Where a full refresh starts: the start of `--start-date`'s day.
pub fn full_refresh_start(start_date: Option<i64>) -> Result<i64, PlanError> {
    Ok(floor_day(start_date.ok_or(PlanError::FullRefreshNoStart)?))
}

/// A full refresh's unit of `days` from `next`, capped at `end`; `None` at `end`. Units read
/// through `data.json` keep the first size; those read through export jobs are sized like
/// an incremental sweep's.
pub fn full_refresh_unit(next: i64, days: i64, end: i64) -> Option<Window> {
    (next < end).then(|| Window {
        start: next,
        end: (next + days.max(1) * MICROS_PER_DAY).min(end),
    })
}

fn time(micros: i64) -> String {
    to_time(micros).to_rfc3339()
}

fn days(w: &Window) -> f64 {
    (w.end - w.start) as f64 / MICROS_PER_DAY as f64
}

/// The dry run of a full refresh from `start`: units read through export jobs are sized at
/// run time, those read through `data.json` are fixed.
fn describe_full_refresh(
    opts: &SyncOptions,
    s: &StreamDef,
    mode: SyncMode,
    start: i64,
    end: i64,
) -> String {
    let days = opts.window.initial_days.max(1);
    let by_jobs_until = jobs_until(opts.export_api, false, end, opts.lookback_days)
        .map(|until| until.min(end))
        .filter(|until| *until > start);
    let mut text = format!("{}: {mode}, replacing the stream at the end\n", s.name);
    let mut next = start;
    if let Some(until) = by_jobs_until {
        text += &format!(
            "  {} via export jobs: a first unit of {days} day(s), later units sized at run time from the rows per day seen (up to {} days)\n",
            Window { start, end: until },
            opts.window.job_max_days
        );
        next = until;
    }
    while let Some(w) = full_refresh_unit(next, days, end) {
        text += &format!("  window {w} via data.json\n");
        next = w.end;
    }
    text
}

/// The dry run: per stream, what a sync with `opts` would read from a lake in `manifest`'s
/// state. Makes no request and writes nothing.
pub fn describe(opts: &SyncOptions, manifest: &Manifest) -> String {
    let end = read_end(opts);
    let start_date = opts.start.map(|s| s.timestamp_micros());
    let mut out = format!(
        "dry run: nothing is requested or written. Reading ends at {} (the earlier of --end-date and now - lag).\n",
        time(end)
    );
    for s in &opts.streams {
        let mode = opts.mode.unwrap_or(s.default_mode);
        out += &match (s.layout, mode) {
            (Layout::Dated, SyncMode::Incremental) => {
                describe_incremental(opts, s, manifest, start_date, end)
            }
            (Layout::Dated, mode) => match full_refresh_start(start_date) {
                Ok(start) => describe_full_refresh(opts, s, mode, start, end),
                Err(e) => format!("{}: {mode}: would fail: {e}\n", s.name),
            },
            (_, mode) => {
                let mode = if mode == SyncMode::Incremental {
                    s.default_mode
                } else {
                    mode
                };
                format!(
                    "{}: {mode} snapshot, one read of {}\n",
                    s.name,
                    crate::streams::info(s).endpoint
                )
            }
        };
    }
    out
}

fn describe_incremental(
    opts: &SyncOptions,
    s: &StreamDef,
    manifest: &Manifest,
    start_date: Option<i64>,
    end: i64,
) -> String {
    let state = manifest.streams.get(s.name);
    let cursor = state.and_then(|st| st.cursor).map(|c| c.timestamp_micros());
    let quarantined: Vec<Window> = state
        .iter()
        .flat_map(|st| st.quarantine.iter())
        .map(|q| Window {
            start: q.start.timestamp_micros(),
            end: q.end.timestamp_micros(),
        })
        .collect();
    let plan = match incremental(cursor, start_date, end, opts.lookback_days, &quarantined) {
        Ok(p) => p,
        Err(e) => return format!("{}: incremental: would fail: {e}\n", s.name),
    };
    let from = match cursor {
        Some(c) => format!(
            "cursor {} minus {} lookback day(s)",
            time(c),
            opts.lookback_days
        ),
        None => "--start-date (no cursor yet)".to_string(),
    };
    let mut text = if plan.up_to_date() {
        format!(
            "{}: incremental, up to date (cursor {})\n",
            s.name,
            cursor.map_or_else(|| "-".to_string(), time)
        )
    } else {
        format!(
            "{}: incremental from {} ({from}) to {}\n",
            s.name,
            time(plan.start),
            time(plan.end)
        )
    };
    let backfill = cursor.is_none();
    for w in &plan.retries {
        text += &format!(
            "  retry quarantined window {w} via {}\n",
            via(opts, backfill, w, end)
        );
    }
    if let Some(first) = plan.unit(plan.start, opts.window.initial_days) {
        let remaining = plan.end - first.end;
        let later = match opts.export_api {
            ExportApi::Auto if !backfill => format!(
                "; later units via an export job while they end by {}, else data.json",
                time(floor_day(end) - opts.lookback_days.max(0) * MICROS_PER_DAY)
            ),
            _ => String::new(),
        };
        let requests = match uses_jobs(
            opts.export_api,
            backfill,
            first.end,
            end,
            opts.lookback_days,
        ) {
            true => match jobs_per_unit(opts, opts.streams.len()) {
                1 => "one export job per unit".to_string(),
                n => format!("up to {n} export jobs per unit at once, one per whole-day window"),
            },
            false => "one export request per unit".to_string(),
        };
        text += &format!(
            "  first unit {first} ({:.2} day(s)) via {}, {requests}{later}; later units are sized at run time from the rows per day seen (up to {} days, {} through export jobs){}\n",
            days(&first),
            via(opts, backfill, &first, end),
            opts.window.max_days,
            opts.window.job_max_days,
            if remaining > 0 {
                format!(
                    ", {:.2} day(s) after it",
                    remaining as f64 / MICROS_PER_DAY as f64
                )
            } else {
                String::new()
            }
        );
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::DateTime;

    fn t(s: &str) -> i64 {
        DateTime::parse_from_rfc3339(s).unwrap().timestamp_micros()
    }

    #[test]
    fn idle_job_slots_go_to_each_unit() {
        let per_unit = |max_jobs, concurrency, streams: usize| {
            let mut o = SyncOptions::new(crate::catalog::export_streams().take(6).collect());
            o.jobs.max_jobs = max_jobs;
            o.concurrency = concurrency;
            jobs_per_unit(&o, streams)
        };
        assert_eq!(per_unit(4, 4, 6), 1);
        assert_eq!(per_unit(4, 4, 3), 1);
        assert_eq!(per_unit(4, 4, 2), 2, "the last two streams share the slots");
        assert_eq!(per_unit(4, 4, 1), 4);
        assert_eq!(per_unit(4, 2, 51), 2);
        assert_eq!(per_unit(1, 4, 3), 1);
        assert_eq!(per_unit(4, 4, 0), 4);
    }

    #[test]
    fn a_fresh_stream_starts_at_the_start_date_day() {
        let p = incremental(
            None,
            Some(t("2024-01-01T05:00:00Z")),
            t("2024-01-04T00:00:00Z"),
            1,
            &[],
        )
        .unwrap();
        assert_eq!(p.start, t("2024-01-01T00:00:00Z"));
        assert!(p.sweep && !p.up_to_date());
        assert_eq!(
            p.unit(p.start, 7),
            Some(Window {
                start: t("2024-01-01T00:00:00Z"),
                end: t("2024-01-04T00:00:00Z")
            })
        );
        assert_eq!(
            incremental(None, None, t("2024-01-04T00:00:00Z"), 1, &[]),
            Err(PlanError::NoCursor)
        );
    }

    #[test]
    fn a_cursor_is_read_again_from_the_day_before() {
        let q_old = Window {
            start: t("2023-12-01T00:00:00Z"),
            end: t("2023-12-02T00:00:00Z"),
        };
        let q_inside = Window {
            start: t("2024-01-03T00:00:00Z"),
            end: t("2024-01-04T00:00:00Z"),
        };
        let p = incremental(
            Some(t("2024-01-03T12:00:00Z")),
            Some(t("2023-01-01T00:00:00Z")),
            t("2024-01-05T00:00:00Z"),
            1,
            &[q_old, q_inside],
        )
        .unwrap();
        assert_eq!(p.start, t("2024-01-02T00:00:00Z"));
        assert_eq!(p.retries, [q_old]);
        assert_eq!(p.unit(p.start, 1).unwrap().end, t("2024-01-03T00:00:00Z"));
        assert_eq!(p.unit(p.end, 1), None);
    }

    #[test]
    fn a_cursor_at_the_end_is_up_to_date_unless_windows_are_quarantined() {
        let end = t("2024-01-04T00:00:00Z");
        let p = incremental(Some(end), None, end, 1, &[]).unwrap();
        assert!(p.up_to_date());
        let q = Window {
            start: t("2023-12-01T00:00:00Z"),
            end: t("2023-12-02T00:00:00Z"),
        };
        let p = incremental(Some(end), None, end, 1, &[q]).unwrap();
        assert!(!p.up_to_date() && !p.sweep);
        let recent = Window {
            start: t("2024-01-03T00:00:00Z"),
            end,
        };
        let p = incremental(Some(end), None, end, 1, &[recent]).unwrap();
        assert_eq!(p.retries, [recent], "no sweep reads it");
    }

    #[test]
    fn a_quarantined_window_across_the_sweep_start_is_retried_up_to_it() {
        let q = Window {
            start: t("2024-01-01T00:00:00Z"),
            end: t("2024-01-04T00:00:00Z"),
        };
        let p = incremental(
            Some(t("2024-01-04T00:00:00Z")),
            None,
            t("2024-01-05T00:00:00Z"),
            1,
            &[q],
        )
        .unwrap();
        assert_eq!(p.start, t("2024-01-03T00:00:00Z"));
        assert_eq!(
            p.retries,
            [Window {
                start: q.start,
                end: p.start
            }]
        );
    }

    #[test]
    fn full_refreshes_cut_fixed_windows() {
        let end = t("2024-01-03T12:00:00Z");
        let mut next = full_refresh_start(Some(t("2024-01-01T10:00:00Z"))).unwrap();
        let mut ends = Vec::new();
        while let Some(w) = full_refresh_unit(next, 1, end) {
            next = w.end;
            ends.push(w.end);
        }
        assert_eq!(
            ends,
            [
                t("2024-01-02T00:00:00Z"),
                t("2024-01-03T00:00:00Z"),
                t("2024-01-03T12:00:00Z")
            ]
        );
        assert_eq!(full_refresh_start(None), Err(PlanError::FullRefreshNoStart));
    }
}
