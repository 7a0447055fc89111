//! Filters on what enters the graph (config `[filters.NAME]`): by source, app id, origin,
//! event type, a log's source type, and a log-message regex. Applied where records enter,
//! before event time and lateness, so a filtered record never moves the watermark.
//!
//! A filter *matches* an event when every condition it sets holds. A `keep` filter lets only
//! matching events through, a `drop` filter removes them; the filters that apply to a source
//! (those naming it, or naming no source) must all let an event through. A filter with a
//! condition about logs (`source_types`, `message`) concerns logs only: other events pass it
//! whatever its action.

use regex::bytes::Regex;
use serde::Deserialize;
use sluice_model::{Event, EventType, Payload, Str};

use crate::route::{canonical_app_id, canonical_str};

/// `[filters.NAME]` as written in config.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilterConfig {
    /// The sources it applies to; empty: every source.
    #[serde(default)]
    pub sources: Vec<String>,
    /// `keep` (default) or `drop` the matching events.
    #[serde(default)]
    pub action: FilterAction,
    /// App ids; UUIDs in any case or form match their canonical form. Events without an
    /// app do not match.
    #[serde(default)]
    pub app_ids: Vec<String>,
    /// Envelope origins.
    #[serde(default)]
    pub origins: Vec<String>,
    /// `log_message`, `container_metric`, `http_start_stop`, `value_metric`,
    /// `counter_event`, `error`.
    #[serde(default)]
    pub event_types: Vec<String>,
    /// Prefixes of a log's `source_type` (`"APP"`, `"RTR"`, `"APP/PROC/WEB"`).
    #[serde(default)]
    pub source_types: Vec<String>,
    /// A regex a log's message must match.
    #[serde(default)]
    pub message: Option<String>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FilterAction {
    #[default]
    Keep,
    Drop,
}

/// A filter ready to run.
#[derive(Clone, Debug)]
pub struct Filter {
    name: String,
    sources: Vec<String>,
    action: FilterAction,
    /// Canonical, as events' app ids are compared (no per-event conversion).
    app_ids: Vec<Str>,
    origins: Vec<String>,
    event_types: Vec<EventType>,
    source_types: Vec<String>,
    message: Option<Regex>,
}

impl Filter {
    /// Compiles a filter; the error names the key that is wrong.
    pub fn new(name: &str, config: &FilterConfig) -> Result<Filter, (&'static str, String)> {
        let mut event_types = Vec::new();
        for name in &config.event_types {
            match EventType::ALL.iter().find(|t| t.as_str() == name) {
                Some(t) => event_types.push(*t),
                None => {
                    let known: Vec<&str> = EventType::ALL.iter().map(|t| t.as_str()).collect();
                    return Err((
                        "event_types",
                        format!("unknown event type `{name}` (one of {})", known.join(", ")),
                    ));
                }
            }
        }
        let message = match &config.message {
            Some(pattern) => Some(
                Regex::new(pattern)
                    .map_err(|e| ("message", format!("invalid regex `{pattern}`: {e}")))?,
            ),
            None => None,
        };
        Ok(Filter {
            name: name.to_owned(),
            sources: config.sources.clone(),
            action: config.action,
            app_ids: config
                .app_ids
                .iter()
                .map(|id| canonical_str(&Str::from(id.as_str())))
                .collect(),
            origins: config.origins.clone(),
            event_types,
            source_types: config.source_types.clone(),
            message,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn applies_to(&self, source: &str) -> bool {
        self.sources.is_empty() || self.sources.iter().any(|s| s == source)
    }

    fn matches(&self, event: &Event) -> bool {
        if !self.event_types.is_empty() && !self.event_types.contains(&event.event_type()) {
            return false;
        }
        if !self.origins.is_empty() && !self.origins.iter().any(|o| **o == *event.header.origin) {
            return false;
        }
        if !self.app_ids.is_empty() {
            let Some(app) = canonical_app_id(event) else {
                return false;
            };
            if !self.app_ids.contains(&app) {
                return false;
            }
        }
        if let Payload::Log(log) = &event.payload {
            if !self.source_types.is_empty()
                && !self
                    .source_types
                    .iter()
                    .any(|p| log.source_type.starts_with(p.as_str()))
            {
                return false;
            }
            if let Some(regex) = &self.message
                && !regex.is_match(&log.message)
            {
                return false;
            }
        }
        true
    }

    /// Whether the event passes this filter.
    pub fn passes(&self, event: &Event) -> bool {
        let about_logs = !self.source_types.is_empty() || self.message.is_some();
        if about_logs && !matches!(event.payload, Payload::Log(_)) {
            return true;
        }
        match self.action {
            FilterAction::Keep => self.matches(event),
            FilterAction::Drop => !self.matches(event),
        }
    }
}

/// Every filter of a config.
#[derive(Clone, Debug, Default)]
pub struct Filters(Vec<Filter>);

impl Filters {
    pub fn new(filters: Vec<Filter>) -> Filters {
        Filters(filters)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Removes the events of `source` that some filter does not let through; returns how
    /// many were removed.
    pub fn apply(&self, source: &str, events: &mut Vec<Event>) -> usize {
        // Runs for every batch on the one worker that ingests: nothing to do costs nothing.
        if self.0.is_empty() {
            return 0;
        }
        let applying: Vec<&Filter> = self.0.iter().filter(|f| f.applies_to(source)).collect();
        if applying.is_empty() {
            return 0;
        }
        let before = events.len();
        events.retain(|event| applying.iter().all(|f| f.passes(event)));
        before - events.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_model::event::{ContainerMetric, Header, LogMessage, MessageType};

    fn log(app: &str, source_type: &str, message: &str) -> Event {
        Event {
            timestamp: 1,
            header: Header {
                origin: Str::from("rep"),
                ..Header::default()
            },
            payload: Payload::Log(LogMessage {
                names: None,
                message: message.as_bytes().to_vec().into(),
                message_type: MessageType::Out,
                timestamp: 1,
                app_id: Str::from(app),
                source_type: Str::from(source_type),
                source_instance: Str::from("0"),
            }),
        }
    }

    fn metric(app: &str) -> Event {
        Event {
            timestamp: 1,
            header: Header {
                origin: Str::from("rep"),
                ..Header::default()
            },
            payload: Payload::Container(ContainerMetric {
                application_id: Str::from(app),
                instance_index: 0,
                cpu_percentage: 1.0,
                memory_bytes: 1,
                disk_bytes: 1,
                memory_bytes_quota: None,
                disk_bytes_quota: None,
            }),
        }
    }

    const A: &str = "f47ac10b-58cc-4372-a567-0e02b2c3d479";
    const B: &str = "0b7fa2a4-9e0e-4b6c-8d2f-5a1c3e4d5f60";

    #[test]
    fn keep_filters_narrow_and_drop_filters_remove() {
        let keep_a = Filter::new(
            "a",
            &FilterConfig {
                app_ids: vec![A.to_uppercase()],
                ..FilterConfig::default()
            },
        )
        .expect("valid");
        let drop_health = Filter::new(
            "health",
            &FilterConfig {
                action: FilterAction::Drop,
                source_types: vec!["RTR".into()],
                message: Some("GET /health".into()),
                sources: vec!["cf".into()],
                ..FilterConfig::default()
            },
        )
        .expect("valid");
        let filters = Filters::new(vec![keep_a, drop_health]);
        let mut events = vec![
            log(A, "APP/PROC/WEB", "hello"),
            log(A, "RTR", "GET /health 200"),
            log(A, "RTR", "GET /orders 200"),
            log(B, "APP/PROC/WEB", "other app"),
            metric(A),
            metric(B),
        ];
        let mut replay = events.clone();
        assert_eq!(filters.apply("cf", &mut events), 3);
        let kept: Vec<String> = events
            .iter()
            .map(|e| match &e.payload {
                Payload::Log(l) => String::from_utf8_lossy(&l.message).into_owned(),
                _ => "metric".to_owned(),
            })
            .collect();
        assert_eq!(kept, vec!["hello", "GET /orders 200", "metric"]);
        // The drop filter names only `cf`: another source keeps its health checks.
        assert_eq!(filters.apply("replay", &mut replay), 2);
    }

    #[test]
    fn bad_filters_name_their_key() {
        let bad_type = FilterConfig {
            event_types: vec!["logs".into()],
            ..FilterConfig::default()
        };
        assert_eq!(
            Filter::new("f", &bad_type).err().map(|e| e.0),
            Some("event_types")
        );
        let bad_regex = FilterConfig {
            message: Some("(".into()),
            ..FilterConfig::default()
        };
        assert_eq!(
            Filter::new("f", &bad_regex).err().map(|e| e.0),
            Some("message")
        );
    }
}
