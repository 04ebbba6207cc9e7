//! Progress bars for a person at a terminal: one bar per stream (rows, bytes read, the last
//! window) and one for the run, driven by the tracing events the sync engine already emits
//! (`sync started`, `window fetched`, `window failed; …`, `window quarantined`,
//! `stream done`), so the engine knows nothing of terminals.
//!
//! The caller installs [`Progress::layer`] next to its log layer, writes that log layer
//! through [`Progress::writer`] (so log lines print above the bars instead of through
//! them), and calls [`Progress::clear`] before printing anything else to the terminal.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::io::Write;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use indicatif::{HumanBytes, MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::Layer;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;

/// The tracing target of the engine's events.
pub const ENGINE_TARGET: &str = "iterable_lake::sync";

/// How often the spinners and the elapsed time move while nothing else happens.
const TICK: Duration = Duration::from_millis(200);

/// What the bars know of one stream.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StreamProgress {
    pub rows: u64,
    /// Response bytes read.
    pub bytes: u64,
    pub windows: u64,
    pub failed_windows: u64,
    /// The last window fetched (or being retried).
    pub window: String,
    /// The stream's final status once it is done.
    pub done: Option<String>,
}

/// What the bars know of the run's export jobs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JobsProgress {
    /// Waiting for a slot, or `Enqueued` at Iterable.
    pub queued: u64,
    pub running: u64,
    /// Read whole.
    pub done: u64,
    pub files: u64,
    pub bytes: u64,
}

#[derive(Default)]
struct Bars {
    run: Option<ProgressBar>,
    jobs: Option<(ProgressBar, JobsProgress)>,
    streams: BTreeMap<String, (ProgressBar, StreamProgress)>,
}

/// The bars of one run. Cheap to clone.
#[derive(Clone)]
pub struct Progress {
    multi: MultiProgress,
    bars: Arc<Mutex<Bars>>,
}

/// The fields of an engine event this module reads.
#[derive(Debug, Default)]
struct Fields {
    message: String,
    stream: Option<String>,
    window: Option<String>,
    rows: Option<u64>,
    bytes: Option<u64>,
    streams: Option<u64>,
    error: Option<String>,
    status: Option<String>,
    jobs: JobsProgress,
}

impl Fields {
    fn set_text(&mut self, name: &str, value: String) {
        match name {
            "message" => self.message = value,
            "stream" => self.stream = Some(value),
            "window" => self.window = Some(value),
            "error" => self.error = Some(value),
            "status" => self.status = Some(value),
            _ => {}
        }
    }

    fn set_number(&mut self, name: &str, value: u64) {
        match name {
            "rows" => self.rows = Some(value),
            "bytes" => self.bytes = Some(value),
            "streams" => self.streams = Some(value),
            "jobs_queued" => self.jobs.queued = value,
            "jobs_running" => self.jobs.running = value,
            "jobs_done" => self.jobs.done = value,
            "job_files" => self.jobs.files = value,
            "job_bytes" => self.jobs.bytes = value,
            _ => {}
        }
    }
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.set_text(field.name(), value.to_string());
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.set_number(field.name(), value);
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        if let Ok(v) = u64::try_from(value) {
            self.set_number(field.name(), v);
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn Debug) {
        self.set_text(field.name(), format!("{value:?}"));
    }
}

fn stream_style() -> ProgressStyle {
    ProgressStyle::with_template("{spinner} {prefix:<28} {human_pos:>11} rows {msg}")
        .expect("a valid template")
}

fn run_style() -> ProgressStyle {
    ProgressStyle::with_template("{prefix:<30} [{bar:30}] {pos}/{len} streams done, {elapsed}")
        .expect("a valid template")
        .progress_chars("=> ")
}

impl Progress {
    /// Bars drawn to `target` (`ProgressDrawTarget::stderr()`; hidden in tests).
    pub fn new(target: ProgressDrawTarget) -> Self {
        Progress {
            multi: MultiProgress::with_draw_target(target),
            bars: Arc::default(),
        }
    }

    fn bars(&self) -> MutexGuard<'_, Bars> {
        self.bars.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The tracing layer that moves the bars (it sees only the engine's info events).
    pub fn layer<S>(&self) -> impl Layer<S> + use<S>
    where
        S: Subscriber + for<'a> LookupSpan<'a>,
    {
        BarsLayer(self.clone()).with_filter(Targets::new().with_target(ENGINE_TARGET, Level::INFO))
    }

    /// A writer for the log layer: each log line is printed above the bars.
    pub fn writer(&self) -> AboveBars {
        AboveBars(self.multi.clone())
    }

    /// What the bars show now, per stream.
    pub fn snapshot(&self) -> BTreeMap<String, StreamProgress> {
        self.bars()
            .streams
            .iter()
            .map(|(k, (_, p))| (k.clone(), p.clone()))
            .collect()
    }

    /// What the export jobs' bar shows now, if the run has started a job.
    pub fn jobs(&self) -> Option<JobsProgress> {
        self.bars().jobs.as_ref().map(|(_, j)| j.clone())
    }

    /// Remove every bar from the terminal.
    pub fn clear(&self) {
        let bars = self.bars();
        if let Some((bar, _)) = &bars.jobs {
            bar.finish_and_clear();
        }
        for (bar, _) in bars.streams.values() {
            bar.finish_and_clear();
        }
        if let Some(run) = &bars.run {
            run.finish_and_clear();
        }
        let _ = self.multi.clear();
    }

    fn stream_bar<'a>(
        &self,
        bars: &'a mut Bars,
        stream: &str,
    ) -> &'a mut (ProgressBar, StreamProgress) {
        bars.streams.entry(stream.to_string()).or_insert_with(|| {
            let bar = ProgressBar::new_spinner()
                .with_style(stream_style())
                .with_prefix(stream.to_string());
            bar.enable_steady_tick(TICK);
            let bar = match &bars.run {
                Some(run) => self.multi.insert_before(run, bar),
                None => self.multi.add(bar),
            };
            (bar, StreamProgress::default())
        })
    }

    fn on_engine_event(&self, f: Fields) {
        let mut bars = self.bars();
        if f.message == "sync started" {
            let run = self.multi.add(
                ProgressBar::new(f.streams.unwrap_or(0))
                    .with_style(run_style())
                    .with_prefix("sync"),
            );
            run.enable_steady_tick(TICK);
            bars.run = Some(run);
            return;
        }
        if f.message.starts_with("export job") {
            let (bar, jobs) = bars.jobs.get_or_insert_with(|| {
                let bar = ProgressBar::new_spinner()
                    .with_style(stream_style())
                    .with_prefix("export jobs");
                (self.multi.insert(0, bar), JobsProgress::default())
            });
            *jobs = f.jobs;
            bar.set_position(jobs.done);
            bar.set_message(format!(
                "done; {} queued, {} running, {} files, {} read",
                jobs.queued,
                jobs.running,
                jobs.files,
                HumanBytes(jobs.bytes)
            ));
            return;
        }
        let Some(stream) = f.stream.as_deref() else {
            return;
        };
        let window = f.window.clone().unwrap_or_default();
        match f.message.as_str() {
            "window fetched" => {
                let (bar, p) = self.stream_bar(&mut bars, stream);
                p.rows += f.rows.unwrap_or(0);
                p.bytes += f.bytes.unwrap_or(0);
                p.windows += 1;
                p.window = window;
                bar.set_position(p.rows);
                bar.set_message(format!(
                    "{:>10} read, window {}",
                    HumanBytes(p.bytes),
                    p.window
                ));
            }
            m if m.starts_with("window failed") || m == "window quarantined" => {
                let (bar, p) = self.stream_bar(&mut bars, stream);
                p.failed_windows += 1;
                p.window = window;
                let error = f.error.unwrap_or_default();
                bar.set_message(format!("{m}: {} ({error})", p.window));
            }
            "stream done" => {
                let (bar, p) = self.stream_bar(&mut bars, stream);
                p.done = Some(f.status.unwrap_or_default());
                bar.finish_and_clear();
                if let Some(run) = &bars.run {
                    run.inc(1);
                }
            }
            _ => {}
        }
    }
}

struct BarsLayer(Progress);

impl<S: Subscriber> Layer<S> for BarsLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let mut fields = Fields::default();
        event.record(&mut fields);
        self.0.on_engine_event(fields);
    }
}

/// Makes writers whose lines are printed above the bars.
pub struct AboveBars(MultiProgress);

/// One log line, printed when dropped.
pub struct Line {
    multi: MultiProgress,
    buf: Vec<u8>,
}

impl Write for Line {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for Line {
    fn drop(&mut self) {
        if !self.buf.is_empty() {
            self.multi.suspend(|| {
                let _ = std::io::stderr().write_all(&self.buf);
            });
        }
    }
}

impl<'a> MakeWriter<'a> for AboveBars {
    type Writer = Line;

    fn make_writer(&'a self) -> Line {
        Line {
            multi: self.0.clone(),
            buf: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing_subscriber::layer::SubscriberExt;

    #[test]
    fn engine_events_move_the_bars() {
        let progress = Progress::new(ProgressDrawTarget::hidden());
        let subscriber = tracing_subscriber::registry().with(progress.layer());
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!(target: ENGINE_TARGET, run = "r", streams = 2usize, "sync started");
            for (rows, bytes) in [(5u64, 100u64), (7, 50)] {
                tracing::info!(target: ENGINE_TARGET, stream = "email_send", window = %"[a, b)", rows, bytes, secs = 0.1, "window fetched");
            }
            tracing::warn!(target: ENGINE_TARGET, stream = "users", window = %"[c, d)", error = %"cut off", "window failed; splitting it");
            tracing::info!(target: ENGINE_TARGET, stream = "email_send", rows = 12u64, files = 1u64, status = ?"Succeeded", "stream done");
            tracing::info!(target: "elsewhere", stream = "email_send", rows = 1000u64, bytes = 1u64, "window fetched");
            tracing::info!(target: ENGINE_TARGET, stream = "users", job = 7, jobs_queued = 3u64, jobs_running = 2u64, jobs_done = 1u64, job_files = 4u64, job_bytes = 9u64, "export job read");
        });
        let jobs = progress.jobs().expect("a jobs bar");
        assert_eq!(
            (jobs.queued, jobs.running, jobs.done, jobs.files, jobs.bytes),
            (3, 2, 1, 4, 9)
        );
        assert!(progress.snapshot()["users"].windows == 0);
        let snap = progress.snapshot();
        let send = &snap["email_send"];
        assert_eq!((send.rows, send.bytes, send.windows), (12, 150, 2));
        assert_eq!(send.window, "[a, b)");
        assert_eq!(send.done.as_deref(), Some("\"Succeeded\""));
        let users = &snap["users"];
        assert_eq!((users.failed_windows, users.rows), (1, 0));
        assert_eq!(users.done, None);
        let run = progress.bars().run.clone().expect("a run bar");
        assert_eq!((run.position(), run.length()), (1, Some(2)));
        progress.clear();
        assert!(run.is_finished());
    }
}
