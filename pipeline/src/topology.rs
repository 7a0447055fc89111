//! The topology a config describes, as `sluice validate` prints it.

use std::fmt::Write;

use sluice_model::records::window_suffix;
use sluice_sinks::rows::window_table_name;

use crate::config::{Config, StreamName};

/// A readable graph: sources → the dataflow → each stream → the sinks taking it.
pub fn describe(config: &Config) -> String {
    let mut out = String::new();
    let pipeline = &config.pipeline;
    let _ = writeln!(out, "sources");
    for (name, source) in &config.sources {
        let _ = writeln!(
            out,
            "  {name} ({}): {}",
            source.type_name(),
            source.describe()
        );
    }
    if !config.filters.is_empty() {
        let _ = writeln!(out, "filters");
        for (name, filter) in &config.filters {
            let sources = if filter.sources.is_empty() {
                "every source".to_owned()
            } else {
                filter.sources.join(", ")
            };
            let _ = writeln!(out, "  {name}: {:?} on {sources}", filter.action);
        }
    }
    let _ = writeln!(
        out,
        "dataflow: {} worker{}, allowed lateness {}, flush interval {}, {} app-event rule{}",
        pipeline.workers(),
        if pipeline.workers() == 1 { "" } else { "s" },
        humantime::format_duration(pipeline.allowed_lateness),
        humantime::format_duration(pipeline.flush_interval),
        pipeline.app_event_rules().len(),
        if pipeline.app_event_rules().len() == 1 {
            ""
        } else {
            "s"
        },
    );
    match &config.metadata {
        Some(metadata) => {
            let _ = writeln!(
                out,
                "app names: envelope tags and the Cloud Controller at {} (every {}, first listing awaited up to {})",
                metadata.cc_url,
                humantime::format_duration(metadata.refresh),
                humantime::format_duration(metadata.startup_timeout),
            );
        }
        None => {
            let _ = writeln!(
                out,
                "app names: envelope tags ([metadata] names no Cloud Controller)"
            );
        }
    }
    let widths = pipeline.window_widths();
    let names: Vec<String> = widths.iter().map(|w| window_suffix(*w)).collect();
    let tables: Vec<String> = widths
        .iter()
        .map(|w| window_table_name("*_metric_rollup", *w))
        .collect();
    let _ = writeln!(
        out,
        "rollup windows: {} (tables {})",
        names.join(", "),
        tables.join(", ")
    );
    let _ = writeln!(out, "streams");
    for stream in StreamName::ALL {
        let takers: Vec<&str> = config
            .sinks
            .iter()
            .filter(|(_, sink)| sink.streams().contains(&stream))
            .map(|(name, _)| name.as_str())
            .collect();
        let targets = if takers.is_empty() {
            "(not written)".to_owned()
        } else {
            format!("→ {}", takers.join(", "))
        };
        let _ = writeln!(out, "  {:<17} {targets}", stream.as_str());
    }
    let _ = writeln!(out, "sinks");
    for (name, sink) in &config.sinks {
        let _ = writeln!(out, "  {name} ({}): {}", sink.type_name(), sink.describe());
    }
    if let Some(api) = &config.api {
        let (metrics, logs) = config.api_store_names();
        let name_of = |found: Option<&str>| {
            found.map_or("no sink (answers 503)".to_owned(), |name| {
                format!("sink {name}")
            })
        };
        let _ = writeln!(
            out,
            "api: http://{}/ (auth {}), metrics from {}, logs from {}, live streams from the graph",
            api.listen,
            match api.auth {
                sluice_api::AuthMode::None => "none",
                sluice_api::AuthMode::Uaa => "uaa",
            },
            name_of(metrics),
            name_of(logs),
        );
    }
    out
}
