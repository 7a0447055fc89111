//! `platform_metric_rollup`: one row per (origin, job, instance, name) per minute (SPEC §6).

use serde::{Deserialize, Serialize};
use sluice_model::Str;

use super::WindowAggregate;
use crate::checkpoint::{OpenWindow, WindowState};
use crate::route::{PlatformKey, PlatformSample, PlatformValue};
use crate::sum::ExactSum;
use sluice_model::records::{MetricKind, PlatformRollup};

/// What a platform series' window keeps. The first sample fixes the kind and unit; a sample of
/// the other kind under the same name is ignored (a series is a gauge or a counter, not both).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PlatformWindow {
    kind: Option<MetricKind>,
    unit: Str,
    samples: u64,
    sum: ExactSum,
    min: f64,
    max: f64,
    /// (event time, value) of the latest sample; of samples at the same time, the greatest
    /// value, so that the order they arrive in does not matter.
    last: Option<(i64, f64)>,
    delta_sum: u64,
    total_last: Option<(i64, Option<u64>)>,
}

/// The [`WindowAggregate`] of `platform_rollups`.
#[derive(Debug)]
pub struct PlatformRollups;

impl WindowAggregate for PlatformRollups {
    type Sample = PlatformSample;
    type Key = PlatformKey;
    type State = PlatformWindow;
    type Row = PlatformRollup;

    fn key_hash(key: &PlatformKey) -> u64 {
        crate::route::platform_key_hash(key)
    }

    fn sample_hash(sample: &PlatformSample) -> u64 {
        crate::route::platform_key_hash(&sample.key)
    }

    fn save(windows: Vec<OpenWindow<PlatformKey, PlatformWindow>>, into: &mut WindowState) {
        into.platform.extend(windows);
    }

    fn window(sample: &PlatformSample) -> (PlatformKey, i64) {
        (sample.key.clone(), sample.minute)
    }

    fn update(state: &mut PlatformWindow, sample: PlatformSample) {
        let time = sample.event_time;
        match sample.value {
            PlatformValue::Gauge { value, unit } => {
                if *state.kind.get_or_insert(MetricKind::Gauge) != MetricKind::Gauge {
                    return;
                }
                if state.samples == 0 {
                    state.unit = unit;
                    state.min = value;
                    state.max = value;
                } else {
                    state.min = state.min.min(value);
                    state.max = state.max.max(value);
                }
                state.samples += 1;
                state.sum.add(value);
                let later =
                    |(t, v): (i64, f64)| time > t || (time == t && value.total_cmp(&v).is_gt());
                if state.last.is_none_or(later) {
                    state.last = Some((time, value));
                }
            }
            PlatformValue::Counter { delta, total } => {
                if *state.kind.get_or_insert(MetricKind::Counter) != MetricKind::Counter {
                    return;
                }
                state.samples += 1;
                state.delta_sum = state.delta_sum.saturating_add(delta);
                if state.total_last.is_none_or(|last| (time, total) > last) {
                    state.total_last = Some((time, total));
                }
            }
        }
    }

    fn row(
        key: &PlatformKey,
        start: i64,
        width: u32,
        state: &PlatformWindow,
        is_final: bool,
    ) -> PlatformRollup {
        let kind = state.kind.unwrap_or(MetricKind::Gauge);
        let gauge = kind == MetricKind::Gauge && state.samples > 0;
        PlatformRollup {
            origin: key.origin.clone(),
            job: key.job.clone(),
            instance: key.instance.clone(),
            name: key.name.clone(),
            minute: start,
            window: width,
            kind,
            unit: if gauge {
                state.unit.clone()
            } else {
                Str::new()
            },
            samples: state.samples,
            value_avg: gauge.then(|| state.sum.value() / state.samples as f64),
            value_min: gauge.then_some(state.min),
            value_max: gauge.then_some(state.max),
            value_last: if gauge {
                state.last.map(|(_, v)| v)
            } else {
                None
            },
            delta_sum: (kind == MetricKind::Counter).then_some(state.delta_sum),
            total_last: if kind == MetricKind::Counter {
                state.total_last.and_then(|(_, total)| total)
            } else {
                None
            },
            is_final,
        }
    }
}
