//! The live status line of `sluice run` (and the progress of `capture` and `bench`).
//!
//! On a terminal it is one line on stderr, redrawn every second; log lines are printed above
//! it (see [`LogWriter`]). Elsewhere (CI, systemd, a pipe) it becomes an `info!` line every
//! ten seconds, so logs stay readable.

use std::io::{self, IsTerminal, Write};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use sluice_model::records::StreamName;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::cluster::ClusterInfo;
use crate::runtime::RunMetrics;
use crate::telemetry::memory;

/// The bar log lines must print around, while one is shown.
static ACTIVE_BAR: Mutex<Option<ProgressBar>> = Mutex::new(None);

fn active_bar() -> Option<ProgressBar> {
    ACTIVE_BAR
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .clone()
}

fn set_active_bar(bar: Option<ProgressBar>) {
    *ACTIVE_BAR
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner()) = bar;
}

/// A spinner line on stderr for long work (capture, bench), registered so logs print above it.
pub fn spinner() -> ProgressBar {
    let bar = if io::stderr().is_terminal() {
        ProgressBar::new_spinner()
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(
        ProgressStyle::with_template("{spinner} {elapsed_precise} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    bar.enable_steady_tick(Duration::from_millis(200));
    set_active_bar(Some(bar.clone()));
    bar
}

/// Ends a [`spinner`], leaving its last message on screen.
pub fn finish_spinner(bar: &ProgressBar) {
    bar.finish();
    set_active_bar(None);
}

/// tracing's writer: stderr, suspending the status line while a log line is written.
#[derive(Debug, Clone, Copy, Default)]
pub struct LogWriter;

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match active_bar() {
            Some(bar) => bar
                .suspend(|| io::stderr().write_all(buf))
                .map(|()| buf.len()),
            None => io::stderr().write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        io::stderr().flush()
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogWriter {
    type Writer = LogWriter;

    fn make_writer(&'a self) -> LogWriter {
        LogWriter
    }
}

/// The running status line of `sluice run`.
#[derive(Debug)]
pub struct StatusLine {
    task: JoinHandle<()>,
    stop: CancellationToken,
}

impl StatusLine {
    /// Starts the line; `cluster` adds this process's place and the bytes it exchanges.
    pub fn start(
        metrics: RunMetrics,
        cluster: Option<Arc<ClusterInfo>>,
        shutdown: CancellationToken,
    ) -> StatusLine {
        let stop = CancellationToken::new();
        let until = stop.clone();
        let task = tokio::spawn(async move {
            let terminal = io::stderr().is_terminal();
            let bar = terminal.then(spinner);
            let period = if terminal {
                Duration::from_secs(1)
            } else {
                Duration::from_secs(10)
            };
            let mut previous = Snapshot::take(&metrics, cluster.as_deref());
            let mut ticker = tokio::time::interval(period);
            ticker.tick().await;
            loop {
                tokio::select! {
                    _ = until.cancelled() => break,
                    _ = ticker.tick() => {}
                }
                let now = Snapshot::take(&metrics, cluster.as_deref());
                let line = now.describe(&previous, shutdown.is_cancelled());
                match &bar {
                    Some(bar) => bar.set_message(line),
                    None => info!("{line}"),
                }
                previous = now;
            }
            if let Some(bar) = bar {
                finish_spinner(&bar);
            }
        });
        StatusLine { task, stop }
    }

    /// Stops the line, leaving the last figures on screen.
    pub async fn finish(self) {
        self.stop.cancel();
        let _ = self.task.await;
    }
}

/// The counters at one moment.
struct Snapshot {
    at: Instant,
    events_in: u64,
    written: Vec<(StreamName, u64)>,
    open_windows: i64,
    late: u64,
    bad: u64,
    reconnects: u64,
    /// Since the last checkpoint was written, if one was.
    checkpoint_age: Option<std::time::Duration>,
    /// In a cluster: `process 1 of 3`, and bytes sent to and received from the peers.
    cluster: Option<(String, u64, u64)>,
}

impl Snapshot {
    fn take(metrics: &RunMetrics, cluster: Option<&ClusterInfo>) -> Snapshot {
        let written = StreamName::ALL
            .iter()
            .map(|stream| {
                let n = metrics
                    .sinks
                    .iter()
                    .map(|(_, m)| m.written_of(*stream))
                    .sum();
                (*stream, n)
            })
            .collect();
        Snapshot {
            at: Instant::now(),
            events_in: metrics.sources.iter().map(|(_, m)| m.events.get()).sum(),
            written,
            open_windows: metrics
                .graph
                .open_windows
                .load(std::sync::atomic::Ordering::Relaxed),
            late: metrics.graph.late_total(),
            bad: metrics
                .sources
                .iter()
                .map(|(_, m)| m.bad_records.total())
                .sum(),
            reconnects: metrics
                .sources
                .iter()
                .map(|(_, m)| m.reconnects.get())
                .sum(),
            checkpoint_age: metrics.graph.checkpoint.age(),
            cluster: cluster.map(|cluster| {
                let (sent, received) = cluster.bytes();
                (cluster.describe(), sent, received)
            }),
        }
    }

    fn describe(&self, previous: &Snapshot, stopping: bool) -> String {
        let seconds = self.at.duration_since(previous.at).as_secs_f64().max(1e-3);
        let rate = |now: u64, then: u64| (now.saturating_sub(then)) as f64 / seconds;
        let mut line = format!(
            "{}{}in {}/s",
            if stopping { "stopping… " } else { "" },
            match &self.cluster {
                Some((place, _, _)) => format!("{place} | "),
                None => String::new(),
            },
            human(rate(self.events_in, previous.events_in))
        );
        let outputs: Vec<String> = self
            .written
            .iter()
            .zip(&previous.written)
            .filter(|((_, now), _)| *now > 0)
            .map(|((stream, now), (_, then))| format!("{stream} {}/s", human(rate(*now, *then))))
            .collect();
        if !outputs.is_empty() {
            line.push_str(" | out ");
            line.push_str(&outputs.join(", "));
        }
        line.push_str(&format!(" | windows {}", self.open_windows));
        line.push_str(&format!(" | late {} | bad {}", self.late, self.bad));
        if self.reconnects > 0 {
            line.push_str(&format!(" | reconnects {}", self.reconnects));
        }
        if let (Some((_, sent, received)), Some((_, sent_then, received_then))) =
            (&self.cluster, &previous.cluster)
        {
            line.push_str(&format!(
                " | peers out {}B/s in {}B/s",
                human(rate(*sent, *sent_then)),
                human(rate(*received, *received_then))
            ));
        }
        if let Some(age) = self.checkpoint_age {
            line.push_str(&format!(" | checkpoint {}s ago", age.as_secs()));
        }
        if let Some((rss, _)) = memory() {
            line.push_str(&format!(" | rss {} MiB", rss / (1024 * 1024)));
        }
        line
    }
}

/// 1234567.0 → "1.2M".
pub fn human(value: f64) -> String {
    if value >= 1e6 {
        format!("{:.2}M", value / 1e6)
    } else if value >= 1e3 {
        format!("{:.1}k", value / 1e3)
    } else {
        format!("{value:.0}")
    }
}
