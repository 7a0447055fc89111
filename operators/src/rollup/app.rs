//! `app_metric_rollup`: one row per app per minute (SPEC §5), and per window of the extra widths.

use serde::{Deserialize, Serialize};
use sluice_model::Str;

use super::WindowAggregate;
use crate::checkpoint::{OpenWindow, WindowState};
use crate::route::{AppContribution, AppSample};
use crate::sketch::LatencySketch;
use crate::sum::ExactSum;
use sluice_model::records::AppRollup;

/// What an app's window keeps: sums, maxima and counts, never the records themselves.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct AppWindow {
    /// Distinct instance indexes, sorted; apps run a handful of instances.
    instances: Vec<i32>,
    container_metrics: u64,
    cpu_sum: ExactSum,
    cpu_max: f64,
    memory_sum: u128,
    memory_max: u64,
    disk_sum: u128,
    disk_max: u64,
    requests: u64,
    status: [u64; 4],
    response_bytes: i64,
    /// Integer ns, so the average is exact whatever the order of arrival.
    latency_sum_ns: i128,
    latency_max_ns: i64,
    latency: LatencySketch,
    log_lines: u64,
    log_err_lines: u64,
    app_events: u64,
}

/// The [`WindowAggregate`] of `app_rollups`.
#[derive(Debug)]
pub struct AppRollups;

impl WindowAggregate for AppRollups {
    type Sample = AppSample;
    type Key = Str;
    type State = AppWindow;
    type Row = AppRollup;

    fn window(sample: &AppSample) -> (Str, i64) {
        (sample.app_id.clone(), sample.minute)
    }

    fn update(state: &mut AppWindow, sample: AppSample) {
        match sample.contribution {
            AppContribution::Container {
                instance,
                cpu,
                memory,
                disk,
            } => {
                if let Err(at) = state.instances.binary_search(&instance) {
                    state.instances.insert(at, instance);
                }
                state.cpu_max = if state.container_metrics == 0 {
                    cpu
                } else {
                    state.cpu_max.max(cpu)
                };
                state.container_metrics += 1;
                state.cpu_sum.add(cpu);
                state.memory_sum += u128::from(memory);
                state.memory_max = state.memory_max.max(memory);
                state.disk_sum += u128::from(disk);
                state.disk_max = state.disk_max.max(disk);
            }
            AppContribution::Http {
                status,
                bytes,
                latency_ns,
            } => {
                state.requests += 1;
                if let 200..=599 = status {
                    state.status[(status / 100 - 2) as usize] += 1;
                }
                state.response_bytes = state.response_bytes.saturating_add(bytes);
                state.latency_sum_ns += i128::from(latency_ns);
                state.latency_max_ns = state.latency_max_ns.max(latency_ns);
                state.latency.insert(latency_ns as f64 / 1e6);
            }
            AppContribution::Log { err } => {
                state.log_lines += 1;
                state.log_err_lines += u64::from(err);
            }
            AppContribution::AppEvent => state.app_events += 1,
        }
    }

    fn key_hash(app_id: &Str) -> u64 {
        crate::route::app_key_hash(app_id)
    }

    fn sample_hash(sample: &AppSample) -> u64 {
        crate::route::app_key_hash(&sample.app_id)
    }

    fn save(windows: Vec<OpenWindow<Str, AppWindow>>, into: &mut WindowState) {
        into.app.extend(windows);
    }

    fn row(app_id: &Str, start: i64, width: u32, state: &AppWindow, is_final: bool) -> AppRollup {
        let metrics = state.container_metrics;
        let mean = |sum: f64| (metrics > 0).then(|| sum / metrics as f64);
        let requests = state.requests;
        let has_requests = requests > 0;
        AppRollup {
            names: None,
            app_id: app_id.clone(),
            minute: start,
            window: width,
            instances: state.instances.len() as u32,
            cpu_avg: mean(state.cpu_sum.value()),
            cpu_max: (metrics > 0).then_some(state.cpu_max),
            memory_avg: mean(state.memory_sum as f64),
            memory_max: (metrics > 0).then_some(state.memory_max),
            disk_avg: mean(state.disk_sum as f64),
            disk_max: (metrics > 0).then_some(state.disk_max),
            requests,
            status_2xx: state.status[0],
            status_3xx: state.status[1],
            status_4xx: state.status[2],
            status_5xx: state.status[3],
            response_bytes: state.response_bytes,
            latency_avg_ms: has_requests
                .then(|| state.latency_sum_ns as f64 / requests as f64 / 1e6),
            latency_max_ms: has_requests.then(|| state.latency_max_ns as f64 / 1e6),
            latency_p50_ms: state.latency.percentile(0.50),
            latency_p95_ms: state.latency.percentile(0.95),
            latency_p99_ms: state.latency.percentile(0.99),
            log_lines: state.log_lines,
            log_err_lines: state.log_err_lines,
            app_events: state.app_events,
            is_final,
        }
    }
}
