//! Rollup rows as Prometheus series (SPEC §13): which metric each column becomes, with which
//! labels and in which unit. One sample per row and series, timestamped at the window's
//! start (ms); a NULL column (and a NaN, which the SQL stores hold as NULL) has no sample.
//!
//! Per app and window width: 21 series (13 metrics; `responses` by 4 status classes,
//! `latency_seconds` by 3 quantiles, `cpu_percent`, `memory_bytes` and `disk_bytes` by 2
//! stats). Per platform series and width: 5 for a gauge (4 stats and `samples`), 3 for a
//! counter (`counter_delta`, `counter_total`, `samples`).

use sluice_model::records::{AppRollup, MetricKind, PlatformRollup, window_suffix};

use super::proto::{Label, Sample, TimeSeries};

/// Every metric the sink writes, by its name after the prefix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Metric {
    AppRequests,
    AppResponses,
    AppResponseBytes,
    AppLatencySeconds,
    AppLatencyAvgSeconds,
    AppLatencyMaxSeconds,
    AppInstances,
    AppCpuPercent,
    AppMemoryBytes,
    AppDiskBytes,
    AppLogLines,
    AppLogErrorLines,
    AppEvents,
    PlatformGauge,
    PlatformCounterDelta,
    PlatformCounterTotal,
    PlatformSamples,
}

impl Metric {
    pub const ALL: [Metric; 17] = [
        Metric::AppRequests,
        Metric::AppResponses,
        Metric::AppResponseBytes,
        Metric::AppLatencySeconds,
        Metric::AppLatencyAvgSeconds,
        Metric::AppLatencyMaxSeconds,
        Metric::AppInstances,
        Metric::AppCpuPercent,
        Metric::AppMemoryBytes,
        Metric::AppDiskBytes,
        Metric::AppLogLines,
        Metric::AppLogErrorLines,
        Metric::AppEvents,
        Metric::PlatformGauge,
        Metric::PlatformCounterDelta,
        Metric::PlatformCounterTotal,
        Metric::PlatformSamples,
    ];

    /// The name after `metric_prefix`.
    pub const fn suffix(self) -> &'static str {
        match self {
            Metric::AppRequests => "app_requests",
            Metric::AppResponses => "app_responses",
            Metric::AppResponseBytes => "app_response_bytes",
            Metric::AppLatencySeconds => "app_latency_seconds",
            Metric::AppLatencyAvgSeconds => "app_latency_avg_seconds",
            Metric::AppLatencyMaxSeconds => "app_latency_max_seconds",
            Metric::AppInstances => "app_instances",
            Metric::AppCpuPercent => "app_cpu_percent",
            Metric::AppMemoryBytes => "app_memory_bytes",
            Metric::AppDiskBytes => "app_disk_bytes",
            Metric::AppLogLines => "app_log_lines",
            Metric::AppLogErrorLines => "app_log_error_lines",
            Metric::AppEvents => "app_events",
            Metric::PlatformGauge => "platform_gauge",
            Metric::PlatformCounterDelta => "platform_counter_delta",
            Metric::PlatformCounterTotal => "platform_counter_total",
            Metric::PlatformSamples => "platform_samples",
        }
    }
}

/// The metric names with the configured prefix, made once per sink.
#[derive(Debug)]
pub struct Names([String; Metric::ALL.len()]);

impl Names {
    pub fn new(prefix: &str) -> Names {
        Names(Metric::ALL.map(|m| format!("{prefix}{}", m.suffix())))
    }

    pub fn get(&self, metric: Metric) -> &str {
        &self.0[metric as usize]
    }

    /// Every name, in the order of [`Metric::ALL`].
    pub fn all(&self) -> &[String] {
        &self.0
    }
}

/// How many samples `row` becomes (what [`app_series`] pushes).
pub fn app_samples(row: &AppRollup) -> usize {
    let present = [
        row.latency_p50_ms,
        row.latency_p95_ms,
        row.latency_p99_ms,
        row.latency_avg_ms,
        row.latency_max_ms,
        row.cpu_avg,
        row.cpu_max,
        row.memory_avg,
        row.memory_max.map(|v| v as f64),
        row.disk_avg,
        row.disk_max.map(|v| v as f64),
    ]
    .iter()
    .filter(|v| v.is_some_and(|v| !v.is_nan()))
    .count();
    // requests, 4 status classes, response bytes, instances, log lines, error lines, events.
    10 + present
}

/// How many samples `row` becomes (what [`platform_series`] pushes).
pub fn platform_samples(row: &PlatformRollup) -> usize {
    let values = match row.kind {
        MetricKind::Gauge => [row.value_avg, row.value_min, row.value_max, row.value_last],
        MetricKind::Counter => [
            row.delta_sum.map(|v| v as f64),
            row.total_last.map(|v| v as f64),
            None,
            None,
        ],
    };
    1 + values
        .iter()
        .filter(|v| v.is_some_and(|v| !v.is_nan()))
        .count()
}

/// Pushes the series of an app rollup row.
pub fn app_series(row: &AppRollup, names: &Names, out: &mut Vec<TimeSeries>) {
    let mut series = Series {
        base: app_labels(row),
        timestamp: row.minute * 1000,
        names,
        out,
    };
    series.push(Metric::AppRequests, None, Some(row.requests as f64));
    for (class, count) in [
        ("2xx", row.status_2xx),
        ("3xx", row.status_3xx),
        ("4xx", row.status_4xx),
        ("5xx", row.status_5xx),
    ] {
        series.push(
            Metric::AppResponses,
            Some(("status_class", class)),
            Some(count as f64),
        );
    }
    series.push(
        Metric::AppResponseBytes,
        None,
        Some(row.response_bytes as f64),
    );
    for (quantile, ms) in [
        ("0.5", row.latency_p50_ms),
        ("0.95", row.latency_p95_ms),
        ("0.99", row.latency_p99_ms),
    ] {
        series.push(
            Metric::AppLatencySeconds,
            Some(("quantile", quantile)),
            ms.map(seconds),
        );
    }
    series.push(
        Metric::AppLatencyAvgSeconds,
        None,
        row.latency_avg_ms.map(seconds),
    );
    series.push(
        Metric::AppLatencyMaxSeconds,
        None,
        row.latency_max_ms.map(seconds),
    );
    series.push(Metric::AppInstances, None, Some(f64::from(row.instances)));
    for (metric, avg, max) in [
        (Metric::AppCpuPercent, row.cpu_avg, row.cpu_max),
        (
            Metric::AppMemoryBytes,
            row.memory_avg,
            row.memory_max.map(|v| v as f64),
        ),
        (
            Metric::AppDiskBytes,
            row.disk_avg,
            row.disk_max.map(|v| v as f64),
        ),
    ] {
        series.push(metric, Some(("stat", "avg")), avg);
        series.push(metric, Some(("stat", "max")), max);
    }
    series.push(Metric::AppLogLines, None, Some(row.log_lines as f64));
    series.push(
        Metric::AppLogErrorLines,
        None,
        Some(row.log_err_lines as f64),
    );
    series.push(Metric::AppEvents, None, Some(row.app_events as f64));
}

/// Pushes the series of a platform rollup row.
pub fn platform_series(row: &PlatformRollup, names: &Names, out: &mut Vec<TimeSeries>) {
    let mut series = Series {
        base: platform_labels(row),
        timestamp: row.minute * 1000,
        names,
        out,
    };
    match row.kind {
        MetricKind::Gauge => {
            for (stat, value) in [
                ("avg", row.value_avg),
                ("min", row.value_min),
                ("max", row.value_max),
                ("last", row.value_last),
            ] {
                series.push(Metric::PlatformGauge, Some(("stat", stat)), value);
            }
        }
        MetricKind::Counter => {
            series.push(
                Metric::PlatformCounterDelta,
                None,
                row.delta_sum.map(|v| v as f64),
            );
            series.push(
                Metric::PlatformCounterTotal,
                None,
                row.total_last.map(|v| v as f64),
            );
        }
    }
    series.push(Metric::PlatformSamples, None, Some(row.samples as f64));
}

/// The labels every series of an app carries: `app_id` and `window`, and the directory's
/// `app_name`, `space_name` and `org_name` when the row carries them (SPEC §11, §13; only
/// when known: an empty value is no label).
fn app_labels(row: &AppRollup) -> Vec<Label> {
    let mut labels = Vec::with_capacity(5);
    labels.push(Label::new("app_id", &*row.app_id));
    if let Some(names) = &row.names {
        for (name, value) in [
            ("app_name", &*names.name),
            ("space_name", &*names.space_name),
            ("org_name", &*names.org_name),
        ] {
            if !value.is_empty() {
                labels.push(Label::new(name, value));
            }
        }
    }
    labels.push(Label::new("window", window_suffix(row.window)));
    labels
}

/// `origin`, `job`, `instance`, `name`, `unit`, `window`; an empty `job`, `instance` or
/// `unit` is no label (which PromQL reads as `job=""`).
fn platform_labels(row: &PlatformRollup) -> Vec<Label> {
    let mut labels = Vec::with_capacity(6);
    for (name, value) in [
        ("origin", &*row.origin),
        ("job", &*row.job),
        ("instance", &*row.instance),
        ("name", &*row.name),
        ("unit", &*row.unit),
    ] {
        if !value.is_empty() {
            labels.push(Label::new(name, value));
        }
    }
    labels.push(Label::new("window", window_suffix(row.window)));
    labels
}

fn seconds(ms: f64) -> f64 {
    ms / 1000.0
}

/// The series of one row: shared labels and timestamp.
struct Series<'a> {
    base: Vec<Label>,
    timestamp: i64,
    names: &'a Names,
    out: &'a mut Vec<TimeSeries>,
}

impl Series<'_> {
    /// One series with the base labels, the metric name and `extra`, sorted by name as the
    /// protocol asks; nothing when the value is absent or NaN.
    fn push(&mut self, metric: Metric, extra: Option<(&str, &str)>, value: Option<f64>) {
        let Some(value) = value.filter(|v| !v.is_nan()) else {
            return;
        };
        let mut labels = Vec::with_capacity(self.base.len() + 2);
        labels.push(Label::new("__name__", self.names.get(metric)));
        labels.extend(self.base.iter().cloned());
        if let Some((name, value)) = extra {
            labels.push(Label::new(name, value));
        }
        labels.sort_unstable_by(|a, b| a.name.cmp(&b.name));
        self.out.push(TimeSeries {
            labels,
            samples: vec![Sample {
                value,
                timestamp: self.timestamp,
            }],
        });
    }
}

#[cfg(test)]
mod tests {
    use sluice_model::Str;

    use super::*;

    fn app_row() -> AppRollup {
        AppRollup {
            names: None,
            app_id: Str::from("f47ac10b-58cc-4372-a567-0e02b2c3d479"),
            minute: 1_710_234_000,
            window: 60,
            instances: 2,
            cpu_avg: Some(12.5),
            cpu_max: Some(20.0),
            memory_avg: Some(1024.0),
            memory_max: Some(2000),
            disk_avg: Some(2048.0),
            disk_max: Some(3000),
            requests: 4,
            status_2xx: 3,
            status_3xx: 0,
            status_4xx: 0,
            status_5xx: 1,
            response_bytes: 308,
            latency_avg_ms: Some(2.5),
            latency_max_ms: Some(4.0),
            latency_p50_ms: Some(3.0),
            latency_p95_ms: Some(4.0),
            latency_p99_ms: Some(4.0),
            log_lines: 10,
            log_err_lines: 1,
            app_events: 1,
            is_final: true,
        }
    }

    fn platform_row(kind: MetricKind) -> PlatformRollup {
        PlatformRollup {
            origin: Str::from("gorouter"),
            job: Str::from("router"),
            instance: Str::new(),
            name: Str::from("latency"),
            minute: 1_710_234_000,
            window: 3600,
            kind,
            unit: Str::from(if kind == MetricKind::Gauge { "ms" } else { "" }),
            samples: 3,
            value_avg: Some(2.0),
            value_min: Some(1.0),
            value_max: Some(3.0),
            value_last: Some(3.0),
            delta_sum: Some(7),
            total_last: Some(107),
            is_final: true,
        }
    }

    /// `name{label="value",...} value @ms`, labels in the order sent.
    fn show(series: &[TimeSeries]) -> Vec<String> {
        series
            .iter()
            .map(|s| {
                let labels: Vec<String> = s
                    .labels
                    .iter()
                    .map(|l| format!("{}={:?}", l.name, l.value))
                    .collect();
                let sample = s.samples[0];
                format!(
                    "{} {} @{}",
                    labels.join(","),
                    sample.value,
                    sample.timestamp
                )
            })
            .collect()
    }

    #[test]
    fn an_app_row_is_21_series_named_by_spec_13_in_base_units() {
        let names = Names::new("sluice_");
        let mut out = Vec::new();
        app_series(&app_row(), &names, &mut out);
        let base = r#"app_id="f47ac10b-58cc-4372-a567-0e02b2c3d479""#;
        let w = r#"window="1m""#;
        let at = "@1710234000000";
        assert_eq!(
            show(&out),
            [
                format!(r#"__name__="sluice_app_requests",{base},{w} 4 {at}"#),
                format!(r#"__name__="sluice_app_responses",{base},status_class="2xx",{w} 3 {at}"#),
                format!(r#"__name__="sluice_app_responses",{base},status_class="3xx",{w} 0 {at}"#),
                format!(r#"__name__="sluice_app_responses",{base},status_class="4xx",{w} 0 {at}"#),
                format!(r#"__name__="sluice_app_responses",{base},status_class="5xx",{w} 1 {at}"#),
                format!(r#"__name__="sluice_app_response_bytes",{base},{w} 308 {at}"#),
                format!(
                    r#"__name__="sluice_app_latency_seconds",{base},quantile="0.5",{w} 0.003 {at}"#
                ),
                format!(
                    r#"__name__="sluice_app_latency_seconds",{base},quantile="0.95",{w} 0.004 {at}"#
                ),
                format!(
                    r#"__name__="sluice_app_latency_seconds",{base},quantile="0.99",{w} 0.004 {at}"#
                ),
                format!(r#"__name__="sluice_app_latency_avg_seconds",{base},{w} 0.0025 {at}"#),
                format!(r#"__name__="sluice_app_latency_max_seconds",{base},{w} 0.004 {at}"#),
                format!(r#"__name__="sluice_app_instances",{base},{w} 2 {at}"#),
                format!(r#"__name__="sluice_app_cpu_percent",{base},stat="avg",{w} 12.5 {at}"#),
                format!(r#"__name__="sluice_app_cpu_percent",{base},stat="max",{w} 20 {at}"#),
                format!(r#"__name__="sluice_app_memory_bytes",{base},stat="avg",{w} 1024 {at}"#),
                format!(r#"__name__="sluice_app_memory_bytes",{base},stat="max",{w} 2000 {at}"#),
                format!(r#"__name__="sluice_app_disk_bytes",{base},stat="avg",{w} 2048 {at}"#),
                format!(r#"__name__="sluice_app_disk_bytes",{base},stat="max",{w} 3000 {at}"#),
                format!(r#"__name__="sluice_app_log_lines",{base},{w} 10 {at}"#),
                format!(r#"__name__="sluice_app_log_error_lines",{base},{w} 1 {at}"#),
                format!(r#"__name__="sluice_app_events",{base},{w} 1 {at}"#),
            ]
        );
        assert_eq!(app_samples(&app_row()), out.len());
    }

    #[test]
    fn null_and_nan_columns_have_no_sample() {
        let names = Names::new("cf_");
        let mut row = app_row();
        row.cpu_avg = Some(f64::NAN);
        row.cpu_max = None;
        row.latency_p99_ms = None;
        row.memory_max = None;
        let mut out = Vec::new();
        app_series(&row, &names, &mut out);
        assert_eq!(out.len(), 17);
        assert_eq!(app_samples(&row), 17);
        assert!(out.iter().all(|s| {
            s.label("__name__")
                .is_some_and(|n| n.starts_with("cf_app_"))
        }));
        assert!(
            !out.iter()
                .any(|s| s.label("__name__") == Some("cf_app_cpu_percent"))
        );
    }

    #[test]
    fn platform_gauges_and_counters_carry_their_key_and_leave_empty_labels_out() {
        let names = Names::new("sluice_");
        let mut out = Vec::new();
        platform_series(&platform_row(MetricKind::Gauge), &names, &mut out);
        let labels = r#"job="router",name="latency",origin="gorouter""#;
        assert_eq!(
            show(&out),
            [
                format!(
                    r#"__name__="sluice_platform_gauge",{labels},stat="avg",unit="ms",window="1h" 2 @1710234000000"#
                ),
                format!(
                    r#"__name__="sluice_platform_gauge",{labels},stat="min",unit="ms",window="1h" 1 @1710234000000"#
                ),
                format!(
                    r#"__name__="sluice_platform_gauge",{labels},stat="max",unit="ms",window="1h" 3 @1710234000000"#
                ),
                format!(
                    r#"__name__="sluice_platform_gauge",{labels},stat="last",unit="ms",window="1h" 3 @1710234000000"#
                ),
                format!(
                    r#"__name__="sluice_platform_samples",{labels},unit="ms",window="1h" 3 @1710234000000"#
                ),
            ]
        );
        assert_eq!(platform_samples(&platform_row(MetricKind::Gauge)), 5);

        out.clear();
        let counter = platform_row(MetricKind::Counter);
        platform_series(&counter, &names, &mut out);
        assert_eq!(
            show(&out),
            [
                format!(
                    r#"__name__="sluice_platform_counter_delta",{labels},window="1h" 7 @1710234000000"#
                ),
                format!(
                    r#"__name__="sluice_platform_counter_total",{labels},window="1h" 107 @1710234000000"#
                ),
                format!(
                    r#"__name__="sluice_platform_samples",{labels},window="1h" 3 @1710234000000"#
                ),
            ]
        );
        assert_eq!(platform_samples(&counter), 3);
    }

    #[test]
    fn names_follow_the_prefix_and_the_metric_order() {
        let names = Names::new("sluice_");
        for metric in Metric::ALL {
            assert_eq!(names.get(metric), format!("sluice_{}", metric.suffix()));
        }
        assert_eq!(names.all().len(), 17);
    }
}
