//! App lifecycle events parsed from log lines by an ordered rule list (SPEC §4): the first rule
//! whose source-type prefix and message pattern both match names the event.

use std::sync::{Arc, RwLock};

use regex::bytes::Regex;
use serde::Deserialize;
use sluice_model::Str;

/// One rule, as written in config (`[[pipeline.app_events]]`).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppEventRule {
    /// The event name written to `app_event.event` (at most 16 characters).
    pub event: String,
    /// The log's `source_type` must start with this (`API`, `STG`, ...).
    pub source_type: String,
    /// A regular expression searched for anywhere in the message.
    pub message: String,
}

impl AppEventRule {
    fn new(event: &str, source_type: &str, message: &str) -> AppEventRule {
        AppEventRule {
            event: event.to_owned(),
            source_type: source_type.to_owned(),
            message: message.to_owned(),
        }
    }

    /// The rules of SPEC §4, in order.
    pub fn defaults() -> Vec<AppEventRule> {
        vec![
            AppEventRule::new(
                "crash",
                "API",
                r#"App instance exited with guid .* "reason"=>"CRASHED""#,
            ),
            AppEventRule::new("start", "API", r#""state"=>"STARTED""#),
            AppEventRule::new("stop", "API", r#""state"=>"STOPPED""#),
            AppEventRule::new("scale", "API", r#""instances"=>\d+"#),
            AppEventRule::new("staged", "STG", "Staging complete"),
        ]
    }
}

/// A rule that cannot be used: names the rule by position and event.
#[derive(Debug, thiserror::Error)]
pub enum AppEventRuleError {
    #[error("rule {index} (`{event}`): invalid message pattern: {source}")]
    Pattern {
        index: usize,
        event: String,
        #[source]
        source: regex::Error,
    },
    #[error("rule {index}: event name `{event}` is longer than 16 characters")]
    NameTooLong { index: usize, event: String },
}

/// Compiled rules.
#[derive(Clone, Debug)]
pub struct AppEventRules {
    rules: Vec<CompiledRule>,
}

#[derive(Clone, Debug)]
struct CompiledRule {
    event: Str,
    source_type: String,
    message: Regex,
}

impl AppEventRules {
    pub fn new(rules: &[AppEventRule]) -> Result<AppEventRules, AppEventRuleError> {
        let rules = rules
            .iter()
            .enumerate()
            .map(|(index, rule)| {
                if rule.event.chars().count() > 16 {
                    return Err(AppEventRuleError::NameTooLong {
                        index,
                        event: rule.event.clone(),
                    });
                }
                let message =
                    Regex::new(&rule.message).map_err(|source| AppEventRuleError::Pattern {
                        index,
                        event: rule.event.clone(),
                        source,
                    })?;
                Ok(CompiledRule {
                    event: Str::from(rule.event.as_str()),
                    source_type: rule.source_type.clone(),
                    message,
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(AppEventRules { rules })
    }

    /// The event a log line announces, if any. Cheap for ordinary app logs: the source-type
    /// prefix is compared before any pattern runs.
    pub fn classify(&self, source_type: &str, message: &[u8]) -> Option<&Str> {
        self.rules
            .iter()
            .find(|rule| {
                source_type.starts_with(rule.source_type.as_str()) && rule.message.is_match(message)
            })
            .map(|rule| &rule.event)
    }
}

impl Default for AppEventRules {
    fn default() -> AppEventRules {
        // The default patterns are constants covered by the tests below.
        AppEventRules::new(&AppEventRule::defaults()).unwrap_or(AppEventRules { rules: Vec::new() })
    }
}

/// The rules in force, shared by every worker's `Route` and swapped whole by a live reload:
/// `Route` takes the current set once per batch, so a record is classified by one set.
#[derive(Clone, Debug, Default)]
pub struct LiveRules(Arc<RwLock<Arc<AppEventRules>>>);

impl LiveRules {
    pub fn new(rules: AppEventRules) -> LiveRules {
        LiveRules(Arc::new(RwLock::new(Arc::new(rules))))
    }

    /// The rules in force now.
    pub fn current(&self) -> Arc<AppEventRules> {
        // A writer only swaps an `Arc`: a poisoned lock still holds a whole rule set.
        self.0
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Puts `rules` in force for records routed from now on.
    pub fn replace(&self, rules: AppEventRules) {
        *self
            .0
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Arc::new(rules);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_rules_recognise_each_lifecycle_line() {
        let rules = AppEventRules::new(&AppEventRule::defaults()).expect("valid defaults");
        assert_eq!(rules.rules.len(), 5);
        let cases = [
            (
                "API/0",
                r#"App instance exited with guid 84c69290-764b-4018-94b0-62ae88c88ad1 payload: {"instance"=>"a1", "index"=>0, "reason"=>"CRASHED", "exit_description"=>"APP/PROC/WEB: Exited with status 137"}"#,
                Some("crash"),
            ),
            (
                "API/1",
                r#"Updated app with guid 84c6 ({"state"=>"STARTED"})"#,
                Some("start"),
            ),
            (
                "API",
                r#"Updated app with guid 84c6 ({"state"=>"STOPPED"})"#,
                Some("stop"),
            ),
            (
                "API/2",
                r#"Updated app with guid 84c6 ({"instances"=>3})"#,
                Some("scale"),
            ),
            ("STG/0", "Staging complete", Some("staged")),
            // The right message from the wrong source is not an event.
            ("APP/PROC/WEB/0", r#"{"state"=>"STARTED"}"#, None),
            ("API/0", "GET /v3/apps 200", None),
        ];
        for (source_type, message, expected) in cases {
            assert_eq!(
                rules
                    .classify(source_type, message.as_bytes())
                    .map(|e| &**e),
                expected,
                "{source_type}: {message}"
            );
        }
    }

    #[test]
    fn the_first_matching_rule_wins() {
        let rules = AppEventRules::new(&[
            AppEventRule::new("first", "API", "state"),
            AppEventRule::new("second", "API", "STARTED"),
        ])
        .expect("valid");
        assert_eq!(
            rules
                .classify("API", br#""state"=>"STARTED""#)
                .map(|e| &**e),
            Some("first")
        );
    }

    #[test]
    fn a_bad_pattern_names_its_rule() {
        let error = AppEventRules::new(&[
            AppEventRule::new("ok", "API", "fine"),
            AppEventRule::new("broken", "API", "(unclosed"),
        ])
        .expect_err("invalid regex");
        assert!(
            error.to_string().starts_with("rule 1 (`broken`)"),
            "{error}"
        );
    }
}
