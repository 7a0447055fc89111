use std::collections::BTreeMap;
use std::time::Duration;

use regex::Regex;
use sluice_model::Event;
use sluice_model::event::{EventType, MessageType, Payload};
use sluice_model::reference::{decode_v1, encode_v1};
use tokio_util::sync::CancellationToken;

use super::*;
use sluice_sources::{Component, SourceOutput};

fn simulated(seed: u64) -> SimulatorConfig {
    SimulatorConfig {
        seed,
        clock: Clock::Simulated,
        ..SimulatorConfig::default()
    }
}

fn events(config: &SimulatorConfig, n: usize) -> Vec<Event> {
    let mut out = Vec::new();
    Generator::new(config).fill(n, &mut out);
    out
}

#[test]
fn the_same_seed_makes_the_same_events_and_another_seed_others() {
    let first = events(&simulated(7), 5000);
    let again = events(&simulated(7), 5000);
    let other = events(&simulated(8), 5000);
    assert_eq!(first, again);
    assert_ne!(first, other);
    // next_event and fill hand out the same sequence.
    let mut generator = Generator::new(&simulated(7));
    let one_by_one: Vec<Event> = (0..5000).map(|_| generator.next_event()).collect();
    assert_eq!(first, one_by_one);
}

#[test]
fn the_mix_of_event_types_is_as_documented() {
    let n = 100_000;
    let all = events(&simulated(1), n);
    let mut counts: BTreeMap<EventType, usize> = BTreeMap::new();
    let mut err_lines = 0;
    for event in &all {
        *counts.entry(event.event_type()).or_default() += 1;
        if let Payload::Log(log) = &event.payload {
            err_lines += usize::from(log.message_type == MessageType::Err);
        }
    }
    let share = |t: EventType| counts.get(&t).copied().unwrap_or(0) as f64 / n as f64;
    let near = |t: EventType, expected: f64, tolerance: f64| {
        let actual = share(t);
        assert!(
            (actual - expected).abs() <= tolerance,
            "{t:?}: {actual:.4}, expected {expected} ± {tolerance}"
        );
    };
    near(EventType::LogMessage, 0.60, 0.02);
    near(EventType::HttpStartStop, 0.20, 0.015);
    near(EventType::ContainerMetric, 0.15, 0.01);
    let platform = share(EventType::ValueMetric) + share(EventType::CounterEvent);
    assert!(
        (platform - 0.05).abs() <= 0.01,
        "platform metrics: {platform:.4}"
    );
    assert!(share(EventType::ValueMetric) > 0.01 && share(EventType::CounterEvent) > 0.01);
    near(EventType::Error, 0.0005, 0.0004);
    assert!(share(EventType::Error) > 0.0);
    let err_share = err_lines as f64 / counts[&EventType::LogMessage] as f64;
    assert!(
        (err_share - 0.10).abs() <= 0.02,
        "ERR lines: {err_share:.4}"
    );
}

/// SPEC §4's default rules, in order: the first that matches names the event.
struct AppEventRules(Vec<(&'static str, &'static str, Regex)>);

impl AppEventRules {
    fn spec_defaults() -> AppEventRules {
        let rules = [
            (
                "crash",
                "API",
                r#"App instance exited with guid .* "reason"=>"CRASHED""#,
            ),
            ("start", "API", r#""state"=>"STARTED""#),
            ("stop", "API", r#""state"=>"STOPPED""#),
            ("scale", "API", r#""instances"=>\d+"#),
            ("staged", "STG", "Staging complete"),
        ];
        AppEventRules(
            rules
                .into_iter()
                .map(|(event, prefix, pattern)| {
                    (
                        event,
                        prefix,
                        Regex::new(pattern).expect("the SPEC's patterns compile"),
                    )
                })
                .collect(),
        )
    }

    fn event(&self, source_type: &str, message: &str) -> Option<&'static str> {
        self.0.iter().find_map(|(event, prefix, regex)| {
            (source_type.starts_with(prefix) && regex.is_match(message)).then_some(*event)
        })
    }
}

#[test]
fn every_app_event_of_spec_4_appears_and_only_in_lifecycle_lines() {
    let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
    let mut lifecycle_lines = 0;
    let rules = AppEventRules::spec_defaults();
    for event in events(&simulated(3), 100_000) {
        let Payload::Log(log) = &event.payload else {
            continue;
        };
        let message = std::str::from_utf8(&log.message).expect("simulated lines are UTF-8");
        if let Some(kind) = rules.event(&log.source_type, message) {
            *seen.entry(kind).or_default() += 1;
        }
        if log.source_type == "API" || log.source_type == "STG" {
            lifecycle_lines += 1;
            assert!(!log.app_id.is_empty(), "lifecycle lines name their app");
        }
    }
    for kind in ["crash", "start", "stop", "scale", "staged"] {
        assert!(
            seen.get(kind).copied().unwrap_or(0) > 0,
            "no {kind} in {seen:?}"
        );
    }
    // Some API/STG lines are no app event, as on a real foundation.
    let events: usize = seen.values().sum();
    assert!(events < lifecycle_lines, "{events} of {lifecycle_lines}");
}

#[test]
fn the_simulated_clock_spans_the_expected_event_time() {
    let config = SimulatorConfig {
        density: 1000,
        jitter: Duration::from_secs(2),
        ..simulated(1)
    };
    let n = 60_000; // one simulated minute
    let times: Vec<i64> = events(&config, n)
        .iter()
        .map(|e| e.event_time().expect("every simulated event has a time"))
        .collect();
    let start = config.start;
    let end = start + 60_000_000_000;
    let (min, max) = (
        *times.iter().min().expect("events"),
        *times.iter().max().expect("events"),
    );
    assert!(
        min >= start - 2_000_000_000,
        "{min} before {start} - jitter"
    );
    assert!(min < start + 1_000_000_000);
    assert!(max < end && max > end - 1_000_000_000, "{max} vs {end}");
}

#[test]
fn the_wall_clock_stamps_events_with_now_less_the_jitter() {
    let before = now_ns();
    let all = events(&SimulatorConfig::default(), 5000);
    let after = now_ns();
    for event in &all {
        let time = event
            .event_time()
            .expect("every simulated event has a time");
        // Up to 2 s of jitter before, and an app's log line during a request precedes the
        // request's stop by up to a tenth of its latency (at most 60 s, so 6 s); gorouter's RTR
        // line comes a moment after the request.
        assert!(time >= before - 8_000_000_000, "{time} < {before} - 8 s");
        assert!(time <= after + 1_000_000, "{time} > {after}");
    }
}

#[test]
fn a_late_fraction_puts_that_share_minutes_in_the_past() {
    let config = SimulatorConfig {
        late_fraction: 0.1,
        ..simulated(1)
    };
    let n = 50_000;
    let all = events(&config, n);
    // An event is late here if its time is a minute or more before the simulated clock,
    // which is at most one envelope per event ahead of the events made before it.
    let step = 1_000_000_000 / config.density as i64;
    let late = all
        .iter()
        .enumerate()
        .filter(|(i, e)| {
            let clock = config.start + *i as i64 * step;
            e.event_time().expect("timed") < clock - 60_000_000_000
        })
        .count();
    let share = late as f64 / n as f64;
    assert!((share - 0.1).abs() < 0.02, "late share {share:.4}");
}

#[test]
fn events_round_trip_through_the_dropsonde_encoding() {
    for event in events(&simulated(5), 20_000) {
        let bytes = encode_v1(&event);
        let decoded = decode_v1(&bytes).expect("simulated envelopes decode");
        assert_eq!(decoded, event);
    }
}

#[test]
fn app_ids_agree_across_logs_http_and_container_metrics() {
    let all = events(&simulated(2), 20_000);
    let from = |t: EventType| -> std::collections::BTreeSet<String> {
        all.iter()
            .filter(|e| e.event_type() == t)
            .filter_map(|e| e.app_id().map(|id| id.to_canonical().to_string()))
            .collect()
    };
    let metrics = from(EventType::ContainerMetric);
    assert_eq!(metrics.len(), 50, "every app reports container metrics");
    assert!(from(EventType::HttpStartStop).is_subset(&metrics));
    assert!(from(EventType::LogMessage).is_subset(&metrics));
}

#[test]
fn counter_totals_only_grow() {
    let mut last: BTreeMap<(String, String, String), u64> = BTreeMap::new();
    for event in events(&simulated(4), 50_000) {
        if let Payload::Counter(counter) = &event.payload {
            let key = (
                event.header.origin.to_string(),
                event.header.index.to_string(),
                counter.name.to_string(),
            );
            let total = counter.total.expect("counters carry totals");
            if let Some(previous) = last.insert(key, total) {
                assert_eq!(total, previous + counter.delta);
            }
        }
    }
    assert!(last.len() > 20, "a fixed set of series: {}", last.len());
}

#[test]
fn config_reads_from_toml_with_defaults_and_rejects_unknown_keys() {
    let config: SimulatorConfig = toml::from_str(
        r#"
        apps = 3
        instances = { min = 2, max = 5 }
        clock = "simulated"
        start = "2024-03-12T15:00:00Z"
        jitter = "500ms"
        limit = 10
        "#,
    )
    .expect("a valid simulator config");
    assert_eq!(config.apps, 3);
    assert_eq!(config.instances, Instances { min: 2, max: 5 });
    assert_eq!(config.start, default_start() + 6 * 3600 * 1_000_000_000);
    assert_eq!(config.jitter, Duration::from_millis(500));
    assert_eq!(config.rate, 2000);
    assert_eq!(config.limit, Some(10));
    assert_eq!(config.problems(), []);

    let up_to: SimulatorConfig = toml::from_str("instances = 7").expect("a number of instances");
    assert_eq!(up_to.instances, Instances { min: 1, max: 7 });
    assert_eq!(
        toml::from_str::<SimulatorConfig>("").expect("all defaults"),
        SimulatorConfig::default()
    );
    let unknown = toml::from_str::<SimulatorConfig>("app = 3").expect_err("a typo");
    assert!(unknown.to_string().contains("app"), "{unknown}");
    let bad_start = toml::from_str::<SimulatorConfig>(r#"start = "yesterday""#).expect_err("bad");
    assert!(bad_start.to_string().contains("RFC 3339"), "{bad_start}");
}

#[test]
fn validate_names_every_bad_setting() {
    let config = SimulatorConfig {
        apps: 0,
        instances: Instances { min: 3, max: 2 },
        density: 0,
        late_fraction: 1.5,
        ..SimulatorConfig::default()
    };
    let problems = config.problems();
    let keys: Vec<&str> = problems.iter().map(|p| p.key.as_str()).collect();
    assert_eq!(keys, ["apps", "instances", "density", "late_fraction"]);
    // Still runs, clamped, without panicking.
    let mut generator = Generator::new(&config);
    let mut out = Vec::new();
    generator.fill(1000, &mut out);
    assert_eq!(out.len(), 1000);
}

#[tokio::test]
async fn a_limit_ends_the_source_after_exactly_that_many_events() {
    for rate in [0, 1_000_000] {
        let (output, mut rx) = SourceOutput::channel(4);
        let ctx = SourceContext::new("sim", output, CancellationToken::new());
        let metrics = ctx.metrics.clone();
        let config = SimulatorConfig {
            rate,
            limit: Some(2500),
            ..SimulatorConfig::default()
        };
        let task = tokio::spawn(run(config, ctx));
        let mut received = 0;
        while let Some(batch) = rx.recv().await {
            assert_eq!(&*batch.source, "sim");
            assert!(batch.received_at > 0);
            received += batch.events.len();
        }
        task.await.expect("no panic").expect("finishes cleanly");
        assert_eq!(received, 2500, "rate {rate}");
        assert_eq!(metrics.events.get(), 2500);
    }
}

#[tokio::test]
async fn shutdown_stops_an_unlimited_source() {
    let (output, mut rx) = SourceOutput::channel(2);
    let shutdown = CancellationToken::new();
    let ctx = SourceContext::new("sim", output, shutdown.clone());
    let task = tokio::spawn(run(SimulatorConfig::default(), ctx));
    let first = rx.recv().await.expect("the simulator sends");
    assert!(!first.events.is_empty());
    shutdown.cancel();
    // The source returns, which closes the channel.
    while rx.recv().await.is_some() {}
    task.await.expect("no panic").expect("stops cleanly");
}

#[tokio::test]
async fn an_invalid_config_is_refused_before_any_event() {
    let (output, mut rx) = SourceOutput::channel(2);
    let ctx = SourceContext::new("sim", output, CancellationToken::new());
    let config = SimulatorConfig {
        apps: 0,
        ..SimulatorConfig::default()
    };
    let error = run(config, ctx).await.expect_err("apps = 0");
    assert!(error.to_string().contains("`apps`"), "{error}");
    assert!(rx.recv().await.is_none());
}

#[test]
fn a_share_of_apps_carries_name_tags_that_agree_with_the_cloud_controller() {
    let config = SimulatorConfig {
        apps: 200,
        ..simulated(3)
    };
    let generator = Generator::new(&config);
    let apps: BTreeMap<String, _> = generator
        .apps()
        .into_iter()
        .map(|app| (app.guid.hyphenated().to_string(), app))
        .collect();
    let tagged = apps.values().filter(|app| app.tagged).count();
    assert!((60..=140).contains(&tagged), "{tagged} of 200 apps tagged");
    let mut seen_tagged = 0;
    for event in events(&config, 20_000) {
        let Some(app_id) = event.app_id().map(|id| id.to_canonical()) else {
            continue;
        };
        let app = &apps[&*app_id];
        match event.header.tags.app_tags() {
            Some(tags) => {
                seen_tagged += 1;
                assert!(app.tagged, "{app_id} is not a tagged app");
                assert_eq!(&*tags.name, app.name);
                assert_eq!(tags.space_id, app.space_id);
                assert_eq!(tags.space_name, app.space_name);
                assert_eq!(tags.org_id, app.org_id);
                assert_eq!(tags.org_name, app.org_name);
            }
            None => assert!(
                !app.tagged || event.header.origin != "rep",
                "a tagged app's cell envelope without tags"
            ),
        }
    }
    assert!(seen_tagged > 1000, "{seen_tagged}");
    let untagged = SimulatorConfig {
        tagged_fraction: 0.0,
        ..config.clone()
    };
    assert!(
        events(&untagged, 5000)
            .iter()
            .all(|e| e.header.tags.app_tags().is_none())
    );
}
