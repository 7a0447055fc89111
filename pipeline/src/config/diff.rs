//! Reload as data: what changed between the running config and a new one. Pure, so every
//! case is a unit test; the supervisor only carries a diff out.

use std::collections::BTreeMap;
use std::time::Duration;

use sluice_operators::app_events::AppEventRule;

use super::Config;

/// The names of components of one kind that a reload adds, removes or changes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Changes {
    /// Named in the new config only: start them.
    pub added: Vec<String>,
    /// Named in the old config only: stop them (a sink writes what it holds first).
    pub removed: Vec<String>,
    /// Named in both with different configs: replace them, the new one once the old one is
    /// done (a store never has two writers).
    pub changed: Vec<String>,
}

impl Changes {
    fn between<T: PartialEq>(old: &BTreeMap<String, T>, new: &BTreeMap<String, T>) -> Changes {
        let mut changes = Changes::default();
        for (name, config) in new {
            match old.get(name) {
                None => changes.added.push(name.clone()),
                Some(previous) if previous != config => changes.changed.push(name.clone()),
                Some(_) => {}
            }
        }
        changes.removed = old
            .keys()
            .filter(|name| !new.contains_key(*name))
            .cloned()
            .collect();
        changes
    }

    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty() && self.changed.is_empty()
    }
}

/// Everything a reload changes, by how it is applied.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ConfigDiff {
    pub sources: Changes,
    pub sinks: Changes,
    /// The new `pipeline.allowed_lateness`: applied in place (the watermark never moves back).
    pub allowed_lateness: Option<Duration>,
    /// The new `pipeline.flush_interval`: applied in place.
    pub flush_interval: Option<Duration>,
    /// The new app-event rules (the defaults when the key went away): applied in place.
    pub app_events: Option<Vec<AppEventRule>>,
    /// `[filters]` changed: the new set replaces the old in place.
    pub filters: bool,
    /// Keys that shape the running graph or its listeners: the running value stays until the
    /// next start.
    pub needs_restart: Vec<&'static str>,
}

impl ConfigDiff {
    pub fn between(old: &Config, new: &Config) -> ConfigDiff {
        let (old_pipeline, new_pipeline) = (&old.pipeline, &new.pipeline);
        let changed = |a, b| (a != b).then_some(b);
        let mut needs_restart = Vec::new();
        if new_pipeline.workers != old_pipeline.workers {
            needs_restart.push("pipeline.workers");
        }
        if new_pipeline.channel_capacity != old_pipeline.channel_capacity {
            needs_restart.push("pipeline.channel_capacity");
        }
        if new_pipeline.channel_max_bytes != old_pipeline.channel_max_bytes {
            needs_restart.push("pipeline.channel_max_bytes");
        }
        if new_pipeline.window_widths() != old_pipeline.window_widths() {
            needs_restart.push("pipeline.windows");
        }
        if new_pipeline.state_dir != old_pipeline.state_dir {
            needs_restart.push("pipeline.state_dir");
        }
        if new_pipeline.checkpoint_interval != old_pipeline.checkpoint_interval {
            needs_restart.push("pipeline.checkpoint_interval");
        }
        if new.cluster != old.cluster {
            needs_restart.push("cluster");
        }
        // The Cloud Controller client is started once, before the sources: a changed
        // [metadata] is taken at the next start, like [cluster].
        if new.metadata != old.metadata {
            needs_restart.push("metadata");
        }
        if new.admin != old.admin {
            needs_restart.push("admin");
        }
        // The API reads the stores of the sinks it names: a change of those sinks is a
        // change of the API.
        if new.api != old.api || new.api_stores() != old.api_stores() {
            needs_restart.push("api");
        }
        let (old_rules, new_rules) = (
            old_pipeline.app_event_rules(),
            new_pipeline.app_event_rules(),
        );
        ConfigDiff {
            sources: Changes::between(&old.sources, &new.sources),
            sinks: Changes::between(&old.sinks, &new.sinks),
            allowed_lateness: changed(old_pipeline.allowed_lateness, new_pipeline.allowed_lateness),
            flush_interval: changed(old_pipeline.flush_interval, new_pipeline.flush_interval),
            app_events: (old_rules != new_rules).then_some(new_rules),
            filters: new.filters != old.filters,
            needs_restart,
        }
    }

    /// Nothing to do.
    pub fn is_empty(&self) -> bool {
        self.sources.is_empty()
            && self.sinks.is_empty()
            && self.allowed_lateness.is_none()
            && self.flush_interval.is_none()
            && self.app_events.is_none()
            && !self.filters
            && self.needs_restart.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = r#"
[pipeline]
allowed_lateness = "60s"

[sources.a]
type = "simulator"
limit = 10

[sources.b]
type = "file"
path = "b.bin"

[sinks.db]
type = "sqlite"
path = "db.sqlite"

[sinks.out]
type = "stdout"
"#;

    fn config(text: &str) -> Config {
        Config::parse(text, |_| None).expect("a valid config")
    }

    fn diff(old: &str, new: &str) -> ConfigDiff {
        ConfigDiff::between(&config(old), &config(new))
    }

    fn names(names: &[&str]) -> Vec<String> {
        names.iter().map(|n| (*n).to_owned()).collect()
    }

    #[test]
    fn the_same_config_is_no_change() {
        assert!(diff(BASE, BASE).is_empty());
        // Formatting and order are not changes.
        let reordered = BASE.replace(
            "[sources.b]\ntype = \"file\"\npath = \"b.bin\"",
            "[sources.b]\npath = \"b.bin\"\ntype = \"file\"",
        );
        assert!(diff(BASE, &reordered).is_empty());
    }

    #[test]
    fn a_source_added_removed_or_changed_is_named_so() {
        let added = format!("{BASE}\n[sources.c]\ntype = \"simulator\"\n");
        assert_eq!(diff(BASE, &added).sources.added, names(&["c"]));
        let removed = BASE.replace("[sources.b]\ntype = \"file\"\npath = \"b.bin\"", "");
        let d = diff(BASE, &removed);
        assert_eq!(d.sources.removed, names(&["b"]));
        assert!(d.sources.added.is_empty() && d.sources.changed.is_empty());
        assert!(d.sinks.is_empty());
        let changed = BASE.replace("limit = 10", "limit = 20");
        assert_eq!(diff(BASE, &changed).sources.changed, names(&["a"]));
    }

    #[test]
    fn a_sink_added_removed_or_changed_is_named_so() {
        let added = format!("{BASE}\n[sinks.more]\ntype = \"blackhole\"\n");
        assert_eq!(diff(BASE, &added).sinks.added, names(&["more"]));
        let removed = BASE.replace("[sinks.out]\ntype = \"stdout\"", "");
        assert_eq!(diff(BASE, &removed).sinks.removed, names(&["out"]));
        let changed = BASE.replace("path = \"db.sqlite\"", "path = \"other.sqlite\"");
        let d = diff(BASE, &changed);
        assert_eq!(d.sinks.changed, names(&["db"]));
        assert!(d.sources.is_empty());
        // A sink's kind changing under the same name is a change too.
        let kind = BASE.replace(
            "[sinks.out]\ntype = \"stdout\"",
            "[sinks.out]\ntype = \"blackhole\"",
        );
        assert_eq!(diff(BASE, &kind).sinks.changed, names(&["out"]));
    }

    #[test]
    fn filters_and_pipeline_settings_change_in_place() {
        let filtered =
            format!("{BASE}\n[filters.quiet]\naction = \"drop\"\nevent_types = [\"error\"]\n");
        let d = diff(BASE, &filtered);
        assert!(d.filters);
        assert!(d.sources.is_empty() && d.sinks.is_empty() && d.needs_restart.is_empty());

        let later = BASE.replace(
            "allowed_lateness = \"60s\"",
            "allowed_lateness = \"5m\"\nflush_interval = \"3s\"",
        );
        let d = diff(BASE, &later);
        assert_eq!(d.allowed_lateness, Some(Duration::from_secs(300)));
        assert_eq!(d.flush_interval, Some(Duration::from_secs(3)));
        assert_eq!(d.app_events, None);

        let rules = BASE.replace(
            "allowed_lateness = \"60s\"",
            "allowed_lateness = \"60s\"\napp_events = [{ event = \"deploy\", source_type = \"API\", message = \"deployed\" }]",
        );
        let d = diff(BASE, &rules);
        let new_rules = d.app_events.expect("the rules changed");
        assert_eq!(new_rules.len(), 1);
        assert!(
            diff(&rules, BASE).app_events.is_some_and(|r| r.len() > 1),
            "back to the defaults"
        );
    }

    #[test]
    fn keys_that_shape_the_graph_or_its_listeners_need_a_restart() {
        let shaped = BASE.replace(
            "allowed_lateness = \"60s\"",
            "allowed_lateness = \"60s\"\nworkers = 3\nchannel_capacity = 8\nwindows = [\"1m\", \"1h\"]\nstate_dir = \"state\"\ncheckpoint_interval = \"5s\"",
        );
        let d = diff(BASE, &shaped);
        assert_eq!(
            d.needs_restart,
            [
                "pipeline.workers",
                "pipeline.channel_capacity",
                "pipeline.windows",
                "pipeline.state_dir",
                "pipeline.checkpoint_interval"
            ]
        );
        assert!(d.allowed_lateness.is_none() && d.sources.is_empty());

        let listeners =
            format!("{BASE}\n[admin]\nlisten = \"127.0.0.1:9599\"\n[api]\nauth = \"none\"\n");
        assert_eq!(diff(BASE, &listeners).needs_restart, ["admin", "api"]);
        // The API reads the sink it names: changing that sink changes what the API reads.
        let with_api = format!("{BASE}\n[api]\nauth = \"none\"\n");
        let moved = with_api.replace("path = \"db.sqlite\"", "path = \"moved.sqlite\"");
        let d = diff(&with_api, &moved);
        assert_eq!(d.needs_restart, ["api"]);
        assert_eq!(d.sinks.changed, names(&["db"]));
    }
}
