//! What flows out of the graph: the named streams of SPEC §3, the rows of the derived ones
//! (SPEC §4–§6), and [`Records`], a batch of one stream as sinks receive it.

use serde::{Deserialize, Serialize};

use crate::{Event, Str};

/// The named streams of SPEC §3.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StreamName {
    Logs,
    ContainerMetrics,
    Http,
    AppEvents,
    AppRollups,
    PlatformRollups,
    Errors,
    Apps,
    GroupRollups,
}

impl StreamName {
    pub const ALL: [StreamName; 9] = [
        StreamName::Logs,
        StreamName::ContainerMetrics,
        StreamName::Http,
        StreamName::AppEvents,
        StreamName::AppRollups,
        StreamName::PlatformRollups,
        StreamName::Errors,
        StreamName::Apps,
        StreamName::GroupRollups,
    ];

    pub fn all() -> Vec<StreamName> {
        StreamName::ALL.to_vec()
    }

    /// The stream's position in [`StreamName::ALL`], for tables and counters indexed by it.
    pub const fn index(self) -> usize {
        // The variants are declared in the order of `ALL` (a test checks it).
        self as usize
    }

    pub fn as_str(self) -> &'static str {
        match self {
            StreamName::Logs => "logs",
            StreamName::ContainerMetrics => "container_metrics",
            StreamName::Http => "http",
            StreamName::AppEvents => "app_events",
            StreamName::AppRollups => "app_rollups",
            StreamName::PlatformRollups => "platform_rollups",
            StreamName::Errors => "errors",
            StreamName::Apps => "apps",
            StreamName::GroupRollups => "group_rollups",
        }
    }
}

#[cfg(test)]
#[test]
fn stream_indexes_follow_all() {
    for (i, stream) in StreamName::ALL.iter().enumerate() {
        assert_eq!(stream.index(), i);
    }
}

impl std::fmt::Display for StreamName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A batch of one stream's records.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Records {
    Logs(Vec<Event>),
    ContainerMetrics(Vec<Event>),
    Http(Vec<Event>),
    Errors(Vec<Event>),
    AppEvents(Vec<AppEvent>),
    AppRollups(Vec<AppRollup>),
    PlatformRollups(Vec<PlatformRollup>),
    Apps(Vec<AppRow>),
    GroupRollups(Vec<GroupRollup>),
}

impl Records {
    pub fn stream(&self) -> StreamName {
        match self {
            Records::Logs(_) => StreamName::Logs,
            Records::ContainerMetrics(_) => StreamName::ContainerMetrics,
            Records::Http(_) => StreamName::Http,
            Records::Errors(_) => StreamName::Errors,
            Records::AppEvents(_) => StreamName::AppEvents,
            Records::AppRollups(_) => StreamName::AppRollups,
            Records::PlatformRollups(_) => StreamName::PlatformRollups,
            Records::Apps(_) => StreamName::Apps,
            Records::GroupRollups(_) => StreamName::GroupRollups,
        }
    }

    pub fn len(&self) -> usize {
        match self {
            Records::Logs(r)
            | Records::ContainerMetrics(r)
            | Records::Http(r)
            | Records::Errors(r) => r.len(),
            Records::AppEvents(r) => r.len(),
            Records::AppRollups(r) => r.len(),
            Records::PlatformRollups(r) => r.len(),
            Records::Apps(r) => r.len(),
            Records::GroupRollups(r) => r.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// About how many bytes the batch holds (see [`Event::approx_bytes`]); rollup rows and
    /// app events count their own size plus a fixed allowance for their few short strings.
    pub fn approx_bytes(&self) -> usize {
        const STRINGS: usize = 128;
        fn rows<T>(rows: &[T]) -> usize {
            rows.len() * (std::mem::size_of::<T>() + STRINGS)
        }
        match self {
            Records::Logs(r)
            | Records::ContainerMetrics(r)
            | Records::Http(r)
            | Records::Errors(r) => r.iter().map(Event::approx_bytes).sum(),
            Records::AppEvents(r) => rows(r),
            Records::AppRollups(r) => rows(r),
            Records::PlatformRollups(r) => rows(r),
            Records::Apps(r) => rows(r),
            Records::GroupRollups(r) => rows(r),
        }
    }
}

/// An app lifecycle event parsed from a log line (SPEC §4): a row of `app_event`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AppEvent {
    pub app_id: Str,
    /// The log message's timestamp, ns.
    pub ts: i64,
    /// The rule's event name (`crash`, `start`, ...).
    pub event: Str,
    pub source_type: Str,
    pub source_instance: Str,
    /// The log line, lossily decoded as UTF-8.
    pub message: Str,
}

/// A row of `app_metric_rollup` (SPEC §5).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AppRollup {
    pub app_id: Str,
    /// Epoch seconds of the window's start (the minute's, for the minute table).
    pub minute: i64,
    /// The window's width in seconds: [`MINUTE`] for SPEC §5's table, or an extra width of
    /// `pipeline.windows` (SQL sinks write it to a table of its own).
    pub window: u32,
    pub instances: u32,
    pub cpu_avg: Option<f64>,
    pub cpu_max: Option<f64>,
    pub memory_avg: Option<f64>,
    pub memory_max: Option<u64>,
    pub disk_avg: Option<f64>,
    pub disk_max: Option<u64>,
    pub requests: u64,
    pub status_2xx: u64,
    pub status_3xx: u64,
    pub status_4xx: u64,
    pub status_5xx: u64,
    pub response_bytes: i64,
    pub latency_avg_ms: Option<f64>,
    pub latency_max_ms: Option<f64>,
    pub latency_p50_ms: Option<f64>,
    pub latency_p95_ms: Option<f64>,
    pub latency_p99_ms: Option<f64>,
    pub log_lines: u64,
    pub log_err_lines: u64,
    pub app_events: u64,
    /// The window has closed: this row will not change again. Provisional rows are upserted
    /// over until the final one.
    pub is_final: bool,
    /// The app's names as the directory knew them when the row left the graph (SPEC §11,
    /// §13: Prometheus labels); not a column of the SQL tables.
    pub names: Option<AppNames>,
}

/// A row of `platform_metric_rollup` (SPEC §6).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PlatformRollup {
    pub origin: Str,
    pub job: Str,
    /// The envelope's `index`; '' when absent.
    pub instance: Str,
    pub name: Str,
    /// See [`AppRollup::minute`].
    pub minute: i64,
    /// See [`AppRollup::window`].
    pub window: u32,
    pub kind: MetricKind,
    pub unit: Str,
    pub samples: u64,
    pub value_avg: Option<f64>,
    pub value_min: Option<f64>,
    pub value_max: Option<f64>,
    pub value_last: Option<f64>,
    pub delta_sum: Option<u64>,
    pub total_last: Option<u64>,
    /// See [`AppRollup::is_final`].
    pub is_final: bool,
}

/// What the directory knows of an app (SPEC §11): its name, space and org.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct AppInfo {
    pub name: Str,
    pub space_id: Str,
    pub space_name: Str,
    pub org_id: Str,
    pub org_name: Str,
}

/// An app's names as the graph attaches them to its logs and rollup rows: one shared entry
/// of the directory, so attaching it is one reference count.
pub type AppNames = std::sync::Arc<AppInfo>;

/// A change of the `app` table (SPEC §11): the app's row as it now is, or its removal.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppRow {
    pub app_id: Str,
    /// `None`: the app is gone (deleted in the Cloud Controller); its row is removed.
    pub info: Option<AppInfo>,
    /// Epoch seconds (event time: the watermark when the change entered the graph).
    pub updated: i64,
}

/// Whether a group rollup is a space's or an org's.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum GroupKind {
    #[default]
    Space,
    Org,
}

/// A row of `space_metric_rollup` or `org_metric_rollup` (SPEC §11): the sums of the final
/// app rollups of one minute over the apps that belonged to the group when it closed.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct GroupRollup {
    pub kind: GroupKind,
    /// The space's (org's) id; '' for apps whose space (org) is not known yet.
    pub group_id: Str,
    pub minute: i64,
    /// How many app rollup rows of that minute the group has.
    pub apps: u64,
    pub instances: u64,
    pub requests: u64,
    pub status_2xx: u64,
    pub status_3xx: u64,
    pub status_4xx: u64,
    pub status_5xx: u64,
    pub log_lines: u64,
    pub log_err_lines: u64,
    pub app_events: u64,
    /// Σ avg × instances over the apps with container metrics; `None` when none has.
    pub cpu_total: Option<f64>,
    pub memory_bytes_total: Option<f64>,
    pub disk_bytes_total: Option<f64>,
}

impl GroupRollup {
    /// Adds one app rollup row to the sums.
    pub fn add(&mut self, row: &AppRollup) {
        fn total(sum: &mut Option<f64>, avg: Option<f64>, instances: u32) {
            if let Some(avg) = avg {
                *sum.get_or_insert(0.0) += avg * f64::from(instances);
            }
        }
        self.apps += 1;
        self.instances += u64::from(row.instances);
        self.requests += row.requests;
        self.status_2xx += row.status_2xx;
        self.status_3xx += row.status_3xx;
        self.status_4xx += row.status_4xx;
        self.status_5xx += row.status_5xx;
        self.log_lines += row.log_lines;
        self.log_err_lines += row.log_err_lines;
        self.app_events += row.app_events;
        total(&mut self.cpu_total, row.cpu_avg, row.instances);
        total(&mut self.memory_bytes_total, row.memory_avg, row.instances);
        total(&mut self.disk_bytes_total, row.disk_avg, row.instances);
    }

    /// Adds another part of the same group's minute to this one.
    pub fn merge(&mut self, other: &GroupRollup) {
        fn total(sum: &mut Option<f64>, other: Option<f64>) {
            if let Some(other) = other {
                *sum.get_or_insert(0.0) += other;
            }
        }
        self.apps += other.apps;
        self.instances += other.instances;
        self.requests += other.requests;
        self.status_2xx += other.status_2xx;
        self.status_3xx += other.status_3xx;
        self.status_4xx += other.status_4xx;
        self.status_5xx += other.status_5xx;
        self.log_lines += other.log_lines;
        self.log_err_lines += other.log_err_lines;
        self.app_events += other.app_events;
        total(&mut self.cpu_total, other.cpu_total);
        total(&mut self.memory_bytes_total, other.memory_bytes_total);
        total(&mut self.disk_bytes_total, other.disk_bytes_total);
    }
}

/// Whether a platform series is a ValueMetric or a CounterEvent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MetricKind {
    Gauge,
    Counter,
}

impl MetricKind {
    /// `gauge` / `counter`, as the stores write it.
    pub fn as_str(self) -> &'static str {
        match self {
            MetricKind::Gauge => "gauge",
            MetricKind::Counter => "counter",
        }
    }
}

/// The width of SPEC §2's minute windows, in seconds.
pub const MINUTE: u32 = 60;

/// Seconds in a day: every window width divides it, so windows start at UTC midnight.
pub const DAY: u32 = 86_400;

/// How a window width is named in table names: `5m`, `1h`, `1d` (the largest whole unit).
pub fn window_suffix(width: u32) -> String {
    if width.is_multiple_of(DAY) {
        format!("{}d", width / DAY)
    } else if width.is_multiple_of(3600) {
        format!("{}h", width / 3600)
    } else if width.is_multiple_of(60) {
        format!("{}m", width / 60)
    } else {
        format!("{width}s")
    }
}

/// The start (epoch seconds) of the window of `width` seconds that the minute starting at
/// `minute` falls in. Widths divide a day and are whole minutes, so a minute is never split.
pub fn window_start(minute: i64, width: u32) -> i64 {
    minute.div_euclid(i64::from(width)) * i64::from(width)
}

/// The tumbling UTC minute of an event time in ns: epoch seconds of its start (SPEC §2).
pub fn minute_of(event_time_ns: i64) -> i64 {
    event_time_ns.div_euclid(60_000_000_000) * 60
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minutes_are_floored_including_before_the_epoch() {
        assert_eq!(minute_of(0), 0);
        assert_eq!(minute_of(59_999_999_999), 0);
        assert_eq!(minute_of(60_000_000_000), 60);
        assert_eq!(minute_of(1_710_234_017_448_058_219), 1_710_234_000);
        assert_eq!(minute_of(-1), -60);
    }

    #[test]
    fn windows_are_named_by_their_largest_whole_unit_and_start_on_their_width() {
        assert_eq!(window_suffix(300), "5m");
        assert_eq!(window_suffix(3600), "1h");
        assert_eq!(window_suffix(5400), "90m");
        assert_eq!(window_suffix(7200), "2h");
        assert_eq!(window_suffix(DAY), "1d");
        assert_eq!(window_start(3660, 3600), 3600);
        assert_eq!(window_start(3540, 3600), 0);
        assert_eq!(window_start(-60, 3600), -3600);
        assert_eq!(window_start(120, MINUTE), 120);
    }
}
