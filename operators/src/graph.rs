//! The whole graph from ingested records to the named streams of SPEC §3.
//!
//! ```text
//! Stamped ─exchange(app / series)─► Route ─┬─ logs, container_metrics, http, errors (raw)
//!                                          ├─ app_events
//!                                          ├─ app samples ───► Windowed<AppRollups> ─► app_rollups
//!                                          └─ platform samples ► Windowed<PlatformRollups> ─► platform_rollups
//! ```
//!
//! Each width of [`WindowOptions::windows`] has its own pair of `Windowed` operators fed by
//! the same samples (percentiles need the sketch, so wider windows cannot be merged from
//! minute rows); their rows are concatenated into the one stream of each kind, each row
//! carrying its width.

use sluice_model::Event;
use timely::dataflow::Stream;
use timely::dataflow::operators::{Concatenate, Exchange};

use crate::app_events::LiveRules;
use sluice_model::records::{AppEvent, AppRollup, MINUTE, PlatformRollup, window_suffix};

use crate::rollup::app::AppRollups;
use crate::rollup::platform::PlatformRollups;
use crate::rollup::{WindowOptions, Windowed};
use crate::route::{Route, exchange_key};
use crate::watermark::Stamped;

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
    rules: LiveRules,
    options: WindowOptions,
) -> GraphStreams<'scope> {
    let routed = input.exchange(exchange_key).route(rules);
    let scope = routed.app_samples.scope();
    let mut widths = options.windows.clone();
    if !widths.contains(&MINUTE) {
        // The minute tables are the SPEC's contract: always there.
        widths.insert(0, MINUTE);
    }
    let mut app = Vec::new();
    let mut platform = Vec::new();
    for width in widths {
        let suffix = window_suffix(width);
        app.push(routed.app_samples.clone().windowed::<AppRollups>(
            &format!("AppRollups{suffix}"),
            width,
            options.clone(),
        ));
        platform.push(routed.platform_samples.clone().windowed::<PlatformRollups>(
            &format!("PlatformRollups{suffix}"),
            width,
            options.clone(),
        ));
    }
    GraphStreams {
        app_rollups: merged(scope, app),
        platform_rollups: merged(scope, platform),
        logs: routed.logs,
        container_metrics: routed.container_metrics,
        http: routed.http,
        errors: routed.errors,
        app_events: routed.app_events,
    }
}

/// One stream of the rows of every width; no extra operator when there is only the minute.
fn merged<'scope, R: 'static>(
    scope: timely::dataflow::Scope<'scope, u64>,
    streams: Vec<Stream<'scope, u64, Vec<R>>>,
) -> Stream<'scope, u64, Vec<R>> {
    match <[_; 1]>::try_from(streams) {
        Ok([only]) => only,
        Err(streams) => scope.concatenate(streams),
    }
}
