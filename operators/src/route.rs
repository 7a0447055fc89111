//! `Route`: splits ingested records into the raw streams of SPEC §3, parses app events, and
//! extracts the small samples the rollups need — each record is moved once, never cloned.
//! On the way it shows each record to the directory's [`TagFacts`], which states the facts
//! the records' name tags make (SPEC §11): one pass over the records for both, rather than
//! an operator of its own that every batch would cross.

use std::hash::{Hash, Hasher};

use rustc_hash::FxHasher;

use serde::{Deserialize, Serialize};
use sluice_model::{Event, Payload, Str};
use timely::container::CapacityContainerBuilder;
use timely::dataflow::Stream;
use timely::dataflow::channels::pact::{Exchange, Pipeline};
use timely::dataflow::operators::generic::OutputBuilder;
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;

use crate::app_events::LiveRules;
use sluice_model::records::{AppEvent, minute_of};

use crate::directory::{Fact, SavedFact, TagFacts, TagInputs, restored_worker};
use crate::time::{GraphTime, stamp_join};
use crate::watermark::Stamped;

/// What one record adds to its app's minute.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum AppContribution {
    Container {
        instance: i32,
        cpu: f64,
        memory: u64,
        disk: u64,
    },
    Http {
        status: i32,
        bytes: i64,
        /// stop − start, clamped at 0.
        latency_ns: i64,
    },
    Log {
        err: bool,
    },
    AppEvent,
}

/// A record's contribution to `app_rollups`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AppSample {
    pub app_id: Str,
    pub minute: i64,
    pub contribution: AppContribution,
}

/// A platform series (SPEC §6 key without the minute).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PlatformKey {
    pub origin: Str,
    pub job: Str,
    pub instance: Str,
    pub name: Str,
}

/// A ValueMetric's or CounterEvent's value.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum PlatformValue {
    Gauge { value: f64, unit: Str },
    Counter { delta: u64, total: Option<u64> },
}

/// A record's contribution to `platform_rollups`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PlatformSample {
    pub key: PlatformKey,
    pub minute: i64,
    pub event_time: i64,
    pub value: PlatformValue,
}

/// The streams `Route` produces.
pub struct Routed<'scope, T: GraphTime> {
    pub logs: Stream<'scope, T, Vec<Event>>,
    pub container_metrics: Stream<'scope, T, Vec<Event>>,
    pub http: Stream<'scope, T, Vec<Event>>,
    pub errors: Stream<'scope, T, Vec<Event>>,
    pub app_events: Stream<'scope, T, Vec<AppEvent>>,
    pub app_samples: Stream<'scope, T, Vec<AppSample>>,
    pub platform_samples: Stream<'scope, T, Vec<PlatformSample>>,
    /// The facts the records' tags state, as differential updates (see [`TagFacts`]).
    pub tag_facts: Stream<'scope, T, Vec<(Fact, T, isize)>>,
}

/// Splits a stream of [`Stamped`] records; see the module doc.
pub trait Route<'scope, T: GraphTime> {
    /// `rules` may be replaced while the graph runs (a live reload): each batch is
    /// classified by the rules in force when it is routed. Records wait until the restored
    /// tag facts of `tags` are in.
    fn route(self, rules: LiveRules, tags: TagInputs<'scope, T>) -> Routed<'scope, T>;
}

impl<'scope, T: GraphTime> Route<'scope, T> for Stream<'scope, T, Vec<Stamped>> {
    fn route(self, live_rules: LiveRules, tags: TagInputs<'scope, T>) -> Routed<'scope, T> {
        let mut builder = OperatorBuilder::new("Route".to_owned(), self.scope());
        let mut input = builder.new_input(self, Pipeline);
        let placement = tags.placement;
        let mut restored_in = builder.new_input(
            tags.restored,
            Exchange::new(move |fact: &SavedFact| restored_worker(placement, fact)),
        );
        let (logs_out, logs) = builder.new_output();
        let (containers_out, container_metrics) = builder.new_output();
        let (http_out, http) = builder.new_output();
        let (errors_out, errors) = builder.new_output();
        let (events_out, app_events) = builder.new_output();
        let (app_out, app_samples) = builder.new_output();
        let (platform_out, platform_samples) = builder.new_output();
        let (facts_out, tag_facts) = builder.new_output();
        // The facts output's index, for capabilities of its own times.
        const FACTS: usize = 7;

        let mut logs_out = OutputBuilder::<_, CapacityContainerBuilder<Vec<Event>>>::from(logs_out);
        let mut containers_out =
            OutputBuilder::<_, CapacityContainerBuilder<Vec<Event>>>::from(containers_out);
        let mut http_out = OutputBuilder::<_, CapacityContainerBuilder<Vec<Event>>>::from(http_out);
        let mut errors_out =
            OutputBuilder::<_, CapacityContainerBuilder<Vec<Event>>>::from(errors_out);
        let mut events_out =
            OutputBuilder::<_, CapacityContainerBuilder<Vec<AppEvent>>>::from(events_out);
        let mut app_out =
            OutputBuilder::<_, CapacityContainerBuilder<Vec<AppSample>>>::from(app_out);
        let mut platform_out =
            OutputBuilder::<_, CapacityContainerBuilder<Vec<PlatformSample>>>::from(platform_out);
        let mut facts_out =
            OutputBuilder::<_, CapacityContainerBuilder<Vec<(Fact, T, isize)>>>::from(facts_out);

        builder.build(move |_capabilities| {
            let mut tag_facts = TagFacts::default();
            move |frontiers| {
                let mut facts_out = facts_out.activate();
                restored_in.for_each(|time, data| {
                    let Some(at) = stamp_join(time.stamp().iter()) else {
                        return;
                    };
                    let cap = time.delayed(&at, FACTS);
                    let mut session = facts_out.session(&cap);
                    for saved in data.drain(..) {
                        if let Some((fact, count)) = tag_facts.restore(saved) {
                            session.give((fact, at, count));
                        }
                    }
                });
                // Records wait (in the input) until the restored facts are in `tag_facts`.
                if !frontiers[1].frontier().is_empty() {
                    return;
                }
                let mut logs_out = logs_out.activate();
                let mut containers_out = containers_out.activate();
                let mut http_out = http_out.activate();
                let mut errors_out = errors_out.activate();
                let mut events_out = events_out.activate();
                let mut app_out = app_out.activate();
                let mut platform_out = platform_out.activate();
                input.for_each_stamp(|cap, data| {
                    let rules = live_rules.current();
                    // Facts are stated at the join of the batch's times.
                    let at = stamp_join(cap.stamp().iter());
                    let facts_cap = at.map(|at| (cap.delayed(&at, FACTS), at));
                    let mut facts = facts_cap
                        .as_ref()
                        .map(|(facts_cap, at)| (facts_out.session(facts_cap), *at));
                    let mut logs = logs_out.session(&cap);
                    let mut containers = containers_out.session(&cap);
                    let mut http = http_out.session(&cap);
                    let mut errors = errors_out.session(&cap);
                    let mut events = events_out.session(&cap);
                    let mut app = app_out.session(&cap);
                    let mut platform = platform_out.session(&cap);
                    for batch in data {
                        // The tags are read in place, before the records are moved out: looking
                        // at each one on its way out cost it one more move.
                        if let Some((facts, at)) = facts.as_mut() {
                            for record in batch.iter() {
                                if let Some(changes) = tag_facts.observe(record) {
                                    facts.give_iterator(
                                        changes.map(|(fact, diff)| (fact, *at, diff)),
                                    );
                                }
                            }
                        }
                        for record in batch.drain(..) {
                            let Stamped {
                                event,
                                event_time,
                                late,
                            } = record;
                            let minute = minute_of(event_time);
                            let app_id = canonical_app_id(&event);
                            match &event.payload {
                                Payload::Log(log) => {
                                    let event_name = (!log.app_id.is_empty())
                                        .then(|| rules.classify(&log.source_type, &log.message))
                                        .flatten();
                                    if let (Some(name), Some(app_id)) = (event_name, &app_id) {
                                        events.give(AppEvent {
                                            app_id: app_id.clone(),
                                            ts: event_time,
                                            event: name.clone(),
                                            source_type: log.source_type.clone(),
                                            source_instance: log.source_instance.clone(),
                                            message: lossy_str(&log.message),
                                        });
                                        if !late {
                                            app.give(AppSample {
                                                app_id: app_id.clone(),
                                                minute,
                                                contribution: AppContribution::AppEvent,
                                            });
                                        }
                                    }
                                    if let (false, Some(app_id)) = (late, app_id) {
                                        app.give(AppSample {
                                            app_id,
                                            minute,
                                            contribution: AppContribution::Log {
                                                err: log.message_type
                                                    == sluice_model::event::MessageType::Err,
                                            },
                                        });
                                    }
                                    logs.give(event);
                                }
                                Payload::Container(metric) => {
                                    if let (false, Some(app_id)) = (late, app_id) {
                                        app.give(AppSample {
                                            app_id,
                                            minute,
                                            contribution: AppContribution::Container {
                                                instance: metric.instance_index,
                                                cpu: metric.cpu_percentage,
                                                memory: metric.memory_bytes,
                                                disk: metric.disk_bytes,
                                            },
                                        });
                                    }
                                    containers.give(event);
                                }
                                Payload::Http(request) => {
                                    if let (false, Some(app_id)) = (late, app_id) {
                                        app.give(AppSample {
                                            app_id,
                                            minute,
                                            contribution: AppContribution::Http {
                                                status: request.status_code,
                                                bytes: request.content_length,
                                                latency_ns: request
                                                    .stop_timestamp
                                                    .saturating_sub(request.start_timestamp)
                                                    .max(0),
                                            },
                                        });
                                    }
                                    http.give(event);
                                }
                                Payload::Error(_) => errors.give(event),
                                Payload::Value(metric) => {
                                    if !late {
                                        platform.give(PlatformSample {
                                            key: platform_key(&event, &metric.name),
                                            minute,
                                            event_time,
                                            value: PlatformValue::Gauge {
                                                value: metric.value,
                                                unit: metric.unit.clone(),
                                            },
                                        });
                                    }
                                }
                                Payload::Counter(counter) => {
                                    if !late {
                                        platform.give(PlatformSample {
                                            key: platform_key(&event, &counter.name),
                                            minute,
                                            event_time,
                                            value: PlatformValue::Counter {
                                                delta: counter.delta,
                                                total: counter.total,
                                            },
                                        });
                                    }
                                }
                            }
                        }
                    }
                });
            }
        });

        Routed {
            logs,
            container_metrics,
            http,
            errors,
            app_events,
            app_samples,
            platform_samples,
            tag_facts,
        }
    }
}

fn platform_key(event: &Event, name: &Str) -> PlatformKey {
    PlatformKey {
        origin: event.header.origin.clone(),
        job: event.header.job.clone(),
        instance: event.header.index.clone(),
        name: name.clone(),
    }
}

/// The log line as a string, sharing the frame when it is valid UTF-8 (it almost always is).
pub fn lossy_str(message: &bytes::Bytes) -> Str {
    match Str::try_from(message.clone()) {
        Ok(text) => text,
        Err(_) => Str::from(String::from_utf8_lossy(message).into_owned()),
    }
}

/// The app an event belongs to, as SPEC §3 writes UUIDs: canonical lowercase 8-4-4-4-12.
/// Ids that are not UUIDs are kept as they are.
pub fn canonical_app_id(event: &Event) -> Option<Str> {
    match &event.payload {
        Payload::Log(log) if !log.app_id.is_empty() => Some(canonical_str(&log.app_id)),
        Payload::Container(metric) if !metric.application_id.is_empty() => {
            Some(canonical_str(&metric.application_id))
        }
        Payload::Http(request) => request
            .application_id
            .map(|id| Str::from(id.hyphenated().to_string())),
        _ => None,
    }
}

fn is_canonical_uuid(id: &str) -> bool {
    id.len() == 36
        && id.bytes().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => b == b'-',
            _ => b.is_ascii_digit() || (b'a'..=b'f').contains(&b),
        })
}

pub(crate) fn canonical_str(id: &Str) -> Str {
    if is_canonical_uuid(id) {
        return id.clone();
    }
    match uuid::Uuid::try_parse(id) {
        Ok(uuid) => Str::from(uuid.hyphenated().to_string()),
        Err(_) => id.clone(),
    }
}

/// Feeds the canonical form of an app id to a hasher without allocating.
fn hash_app_id(id: &str, hasher: &mut impl Hasher) {
    if is_canonical_uuid(id) {
        hasher.write(id.as_bytes());
    } else if let Ok(uuid) = uuid::Uuid::try_parse(id) {
        let mut buf = [0u8; 36];
        hasher.write(uuid.hyphenated().encode_lower(&mut buf).as_bytes());
    } else {
        hasher.write(id.as_bytes());
    }
}

/// The hash an app's records are exchanged by: of its canonical id.
pub fn app_key_hash(app_id: &str) -> u64 {
    let mut hasher = FxHasher::default();
    hash_app_id(app_id, &mut hasher);
    hasher.finish()
}

/// The hash a platform series' samples are exchanged by.
pub fn platform_key_hash(key: &PlatformKey) -> u64 {
    let mut hasher = FxHasher::default();
    key.hash(&mut hasher);
    hasher.finish()
}

/// Which worker a record goes to: its app (canonical id) for app data, its series for
/// platform metrics, its origin for errors. Deterministic across workers and runs.
pub fn exchange_key(record: &Stamped) -> u64 {
    let mut hasher = FxHasher::default();
    let event = &record.event;
    match &event.payload {
        Payload::Http(request) => match request.application_id {
            Some(id) => {
                let mut buf = [0u8; 36];
                hasher.write(id.hyphenated().encode_lower(&mut buf).as_bytes());
            }
            None => request.request_id.hash(&mut hasher),
        },
        Payload::Log(log) if !log.app_id.is_empty() => hash_app_id(&log.app_id, &mut hasher),
        Payload::Container(metric) if !metric.application_id.is_empty() => {
            hash_app_id(&metric.application_id, &mut hasher)
        }
        Payload::Log(_) | Payload::Container(_) => event.header.origin.hash(&mut hasher),
        Payload::Value(metric) => platform_key(event, &metric.name).hash(&mut hasher),
        Payload::Counter(counter) => platform_key(event, &counter.name).hash(&mut hasher),
        Payload::Error(_) => event.header.origin.hash(&mut hasher),
    }
    hasher.finish()
}
