//! The whole graph from ingested records to the named streams of SPEC §3.
//!
//! ```text
//! Stamped ─exchange(app / series)─► Route ─┬─ logs, container_metrics, http, errors (raw)
//!                                          ├─ app_events
//!                                          ├─ app samples ───► Windowed<AppRollups> ─► app_rollups
//!                                          └─ platform samples ► Windowed<PlatformRollups> ─► platform_rollups
//! ```

use sluice_model::Event;
use timely::dataflow::Stream;
use timely::dataflow::operators::Exchange;

use crate::app_events::AppEventRules;
use crate::records::{AppEvent, AppRollup, PlatformRollup, Stamped};
use crate::rollup::app::AppRollups;
use crate::rollup::platform::PlatformRollups;
use crate::rollup::{WindowOptions, Windowed};
use crate::route::{Route, exchange_key};

/// The named output streams, per worker.
pub struct GraphStreams<'scope> {
    pub logs: Stream<'scope, u64, Vec<Event>>,
    pub container_metrics: Stream<'scope, u64, Vec<Event>>,
    pub http: Stream<'scope, u64, Vec<Event>>,
    pub errors: Stream<'scope, u64, Vec<Event>>,
    pub app_events: Stream<'scope, u64, Vec<AppEvent>>,
    pub app_rollups: Stream<'scope, u64, Vec<AppRollup>>,
    pub platform_rollups: Stream<'scope, u64, Vec<PlatformRollup>>,
}

/// Builds the graph over a stream of ingested records (see [`crate::watermark::stamp_batch`]).
pub fn build<'scope>(
    input: Stream<'scope, u64, Vec<Stamped>>,
    rules: AppEventRules,
    options: WindowOptions,
) -> GraphStreams<'scope> {
    let routed = input.exchange(exchange_key).route(rules);
    GraphStreams {
        app_rollups: routed
            .app_samples
            .windowed::<AppRollups>("AppRollups", options.clone()),
        platform_rollups: routed
            .platform_samples
            .windowed::<PlatformRollups>("PlatformRollups", options),
        logs: routed.logs,
        container_metrics: routed.container_metrics,
        http: routed.http,
        errors: routed.errors,
        app_events: routed.app_events,
    }
}
