//! [`Generator`]: a deterministic stream of realistic Firehose events.
//!
//! The mix, per 10 000 envelopes: ~6 000 LogMessages (access logs, gorouter `RTR` lines, app
//! output of which ~10 % on stderr, and now and then Cloud Controller and staging lines),
//! ~2 000 HttpStartStops, ~1 500 ContainerMetrics, ~495 platform ValueMetrics and
//! CounterEvents, ~5 Errors. A request makes several envelopes in a row, as on a real
//! Firehose: gorouter's HttpStartStop (a Client one, and for a quarter of requests the
//! Server one too), its `RTR` log line, and for half of them the app's own access log line.

mod lines;
mod request;
mod topology;

use std::collections::VecDeque;

use bytes::Bytes;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sluice_common::time::now_ns;
use sluice_model::Str;
use sluice_model::event::{
    ContainerMetric, CounterEvent, ErrorEvent, Event, LogMessage, MessageType, Payload, Tags,
    ValueMetric,
};

use self::lines::{Lifecycle, LifecycleFacts};
use self::topology::{SeriesKind, Topology};
use crate::source::{Clock, SimulatorConfig};

/// What a draw makes, by weight per 7 200 draws (one draw makes 2.75 envelopes when it is a
/// request, one otherwise: see the module doc).
const REQUEST_WEIGHT: u32 = 1600;
const APP_LOG_WEIGHT: u32 = 3600;
const CONTAINER_WEIGHT: u32 = 1500;
const PLATFORM_WEIGHT: u32 = 495;
const ERROR_WEIGHT: u32 = 5;
const TOTAL_WEIGHT: u32 =
    REQUEST_WEIGHT + APP_LOG_WEIGHT + CONTAINER_WEIGHT + PLATFORM_WEIGHT + ERROR_WEIGHT;

/// One app log draw in this many is a Cloud Controller or staging line.
const LIFECYCLE_ONE_IN: u32 = 200;

/// How far in the past a late record's event time lies, ns.
const LATE_MIN_NS: i64 = 120_000_000_000;
const LATE_MAX_NS: i64 = 600_000_000_000;

/// One app of the simulated foundation, as the Cloud Controller would describe it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SimulatedApp {
    pub guid: uuid::Uuid,
    pub name: String,
    pub space_id: Str,
    pub space_name: Str,
    pub org_id: Str,
    pub org_name: Str,
    /// Its envelopes carry the name tags (see `SimulatorConfig::tagged_fraction`).
    pub tagged: bool,
}

/// Makes Firehose events: the same config and seed always give the same events, except that
/// with `clock = "wall"` the times are read from the system clock.
#[derive(Debug)]
pub struct Generator {
    rng: StdRng,
    topology: Topology,
    clock: Clock,
    start_ns: i64,
    density: u64,
    jitter_ns: i64,
    late_fraction: f64,
    /// Envelopes handed out so far: the simulated clock's position.
    made: u64,
    /// Envelopes of a request not yet handed out.
    pending: VecDeque<Event>,
    next_instance: usize,
    next_series: usize,
}

impl Generator {
    /// A generator for `config`; values that [`SimulatorConfig::validate`] rejects are clamped
    /// (at least one app, one instance, one envelope per simulated second).
    pub fn new(config: &SimulatorConfig) -> Generator {
        let mut rng = StdRng::seed_from_u64(config.seed);
        let topology = Topology::new(config, &mut rng);
        Generator {
            rng,
            topology,
            clock: config.clock,
            start_ns: config.start.max(0),
            density: config.density.max(1),
            jitter_ns: i64::try_from(config.jitter.as_nanos()).unwrap_or(i64::MAX / 4),
            late_fraction: if config.late_fraction.is_finite() {
                config.late_fraction.clamp(0.0, 1.0)
            } else {
                0.0
            },
            made: 0,
            pending: VecDeque::new(),
            next_instance: 0,
            next_series: 0,
        }
    }

    /// The simulated foundation's apps in the order the topology drew them: what the Cloud
    /// Controller of `sluice simulate` knows. The same config always gives the same list.
    pub fn apps(&self) -> Vec<SimulatedApp> {
        self.topology
            .apps
            .iter()
            .map(|app| {
                let space = &self.topology.spaces[app.space];
                let org = &self.topology.orgs[space.parent];
                SimulatedApp {
                    guid: app.id,
                    name: app.name.clone(),
                    space_id: space.id.clone(),
                    space_name: space.name.clone(),
                    org_id: org.id.clone(),
                    org_name: org.name.clone(),
                    tagged: !app.tags.is_empty(),
                }
            })
            .collect()
    }

    /// The next event.
    pub fn next_event(&mut self) -> Event {
        let wall = match self.clock {
            Clock::Wall => now_ns(),
            Clock::Simulated => 0,
        };
        self.next_at(wall)
    }

    /// Appends the next `n` events to `out` (reading the wall clock once for all of them).
    pub fn fill(&mut self, n: usize, out: &mut Vec<Event>) {
        out.reserve(n);
        let wall = match self.clock {
            Clock::Wall => now_ns(),
            Clock::Simulated => 0,
        };
        for _ in 0..n {
            out.push(self.next_at(wall));
        }
    }

    fn next_at(&mut self, wall_ns: i64) -> Event {
        if self.pending.is_empty() {
            let clock_ns = match self.clock {
                Clock::Wall => wall_ns,
                Clock::Simulated => {
                    let offset = u128::from(self.made) * 1_000_000_000 / u128::from(self.density);
                    self.start_ns
                        .saturating_add(i64::try_from(offset).unwrap_or(i64::MAX))
                }
            };
            self.draw(clock_ns);
        }
        self.made += 1;
        // `draw` always queues at least one event; the fallback only keeps this panic-free.
        self.pending
            .pop_front()
            .unwrap_or_else(|| self.platform_error(0))
    }

    /// When a record happened: up to `jitter` before the clock, or minutes before if late.
    fn event_time(&mut self, clock_ns: i64) -> i64 {
        if self.late_fraction > 0.0 && self.rng.random::<f64>() < self.late_fraction {
            clock_ns - self.rng.random_range(LATE_MIN_NS..LATE_MAX_NS)
        } else if self.jitter_ns > 0 {
            clock_ns - self.rng.random_range(0..=self.jitter_ns)
        } else {
            clock_ns
        }
    }

    fn draw(&mut self, clock_ns: i64) {
        let at = self.event_time(clock_ns);
        let mut pick = self.rng.random_range(0..TOTAL_WEIGHT);
        for (weight, kind) in [
            (REQUEST_WEIGHT, 0),
            (APP_LOG_WEIGHT, 1),
            (CONTAINER_WEIGHT, 2),
            (PLATFORM_WEIGHT, 3),
        ] {
            if pick < weight {
                match kind {
                    0 => request::request(&mut self.rng, &self.topology, at, &mut self.pending),
                    1 => self.app_log(at),
                    2 => self.container_metric(at),
                    _ => self.platform_metric(at),
                }
                return;
            }
            pick -= weight;
        }
        let error = self.platform_error(at);
        self.pending.push_back(error);
    }

    /// A line of an app's own output, or now and then a Cloud Controller or staging line.
    fn app_log(&mut self, at: i64) {
        if self.rng.random_range(0..LIFECYCLE_ONE_IN) == 0 {
            return self.lifecycle_log(at);
        }
        let rng = &mut self.rng;
        let app = &self.topology.apps[self.topology.pick_app(rng)];
        let instance = &app.instances[rng.random_range(0..app.instances.len())];
        let uptime = rng.random_range(60..100_000);
        let (line, message_type) = lines::app_line(rng, app.flavor, at, uptime);
        let delay = rng.random_range(1_000_000..100_000_000);
        let event = log_event(
            self.topology.cells[instance.cell].header(app.tags.clone()),
            LogMessage {
                names: None,
                message: Bytes::from(line),
                message_type,
                timestamp: at,
                app_id: app.id_str.clone(),
                source_type: Str::from_static("APP/PROC/WEB"),
                source_instance: instance.index_str.clone(),
            },
            at + delay,
        );
        self.pending.push_back(event);
    }

    fn lifecycle_log(&mut self, at: i64) {
        let rng = &mut self.rng;
        let kind = Lifecycle::ALL[rng.random_range(0..Lifecycle::ALL.len())];
        let app = &self.topology.apps[self.topology.pick_app(rng)];
        let instance = &app.instances[rng.random_range(0..app.instances.len())];
        let facts = LifecycleFacts {
            app_id: &app.id_str,
            instance_id: &instance.instance_id,
            instance_index: instance.index,
            cell_guid: &self.topology.cell_guids[instance.cell],
            instances: rng.random_range(1..=app.instances.len() + 2),
            now_ns: at,
        };
        let line = lines::lifecycle_line(rng, kind, &facts);
        let source_type = kind.source_type();
        let header = if source_type == "API" {
            self.topology.cloud_controller.header(Tags::default())
        } else {
            self.topology.cells[instance.cell].header(app.tags.clone())
        };
        let delay = rng.random_range(1_000_000..100_000_000);
        let event = log_event(
            header,
            LogMessage {
                names: None,
                message: Bytes::from(line),
                message_type: MessageType::Out,
                timestamp: at,
                app_id: app.id_str.clone(),
                source_type: Str::from_static(source_type),
                source_instance: Str::from_static("0"),
            },
            at + delay,
        );
        self.pending.push_back(event);
    }

    /// The next app instance's container metric, instances in turn.
    fn container_metric(&mut self, at: i64) {
        let Some(&(a, i)) = self.topology.instances.get(self.next_instance) else {
            return self.platform_metric(at);
        };
        self.next_instance = (self.next_instance + 1) % self.topology.instances.len();
        let rng = &mut self.rng;
        let app = &mut self.topology.apps[a];
        let (memory_quota, disk_quota, cpu_base, disk_base) = (
            app.memory_quota,
            app.disk_quota,
            app.cpu_base,
            app.disk_base,
        );
        let instance = &mut app.instances[i];
        instance.memory_share =
            (instance.memory_share + rng.random_range(-0.02..0.02)).clamp(0.1, 0.97);
        let metric = ContainerMetric {
            application_id: app.id_str.clone(),
            instance_index: instance.index,
            cpu_percentage: (cpu_base * rng.random_range(0.5..1.5)).min(400.0),
            memory_bytes: (memory_quota as f64 * instance.memory_share) as u64,
            disk_bytes: disk_base + rng.random_range(0..disk_base.max(1) / 20 + 1),
            memory_bytes_quota: Some(memory_quota),
            disk_bytes_quota: Some(disk_quota),
        };
        let header = self.topology.cells[instance.cell].header(app.tags.clone());
        self.pending.push_back(Event {
            timestamp: at,
            header,
            payload: Payload::Container(metric),
        });
    }

    /// The next platform series' report, series in turn.
    fn platform_metric(&mut self, at: i64) {
        let count = self.topology.series.len();
        let tags = self.topology.platform_tags.clone();
        let rng = &mut self.rng;
        let series = &mut self.topology.series[self.next_series % count];
        self.next_series = (self.next_series + 1) % count;
        let payload = match &mut series.kind {
            SeriesKind::Gauge {
                unit,
                level,
                low,
                high,
                step,
                whole,
            } => {
                let factor = 1.0 + rng.random_range(-*step..=*step);
                *level = (*level * factor).clamp(*low, *high);
                Payload::Value(ValueMetric {
                    name: series.name.clone(),
                    value: if *whole { level.round() } else { *level },
                    unit: unit.clone(),
                })
            }
            SeriesKind::Counter { total, max_delta } => {
                // Many reports carry no change, as the golden data shows.
                let delta = if rng.random_bool(0.4) {
                    0
                } else {
                    rng.random_range(0..=*max_delta)
                };
                *total += delta;
                Payload::Counter(CounterEvent {
                    name: series.name.clone(),
                    delta,
                    total: Some(*total),
                })
            }
        };
        self.pending.push_back(Event {
            timestamp: at,
            header: series.vm.header(tags),
            payload,
        });
    }

    fn platform_error(&mut self, at: i64) -> Event {
        let rng = &mut self.rng;
        let topology = &self.topology;
        let (vm, source, code, message) = match rng.random_range(0..3) {
            0 => {
                let cell = &topology.cells[rng.random_range(0..topology.cells.len())];
                let mut vm = cell.clone();
                vm.origin = Str::from_static("MetronAgent");
                let dropped = rng.random_range(10..500);
                (
                    vm,
                    "metron",
                    2,
                    format!("dropped {dropped} envelopes: buffer full"),
                )
            }
            1 => {
                let doppler = &topology.dopplers[rng.random_range(0..topology.dopplers.len())];
                let message = "message too large: envelope exceeds 65536 bytes".to_owned();
                (doppler.clone(), "doppler", 1, message)
            }
            _ => {
                let router = &topology.routers[rng.random_range(0..topology.routers.len())];
                let cell = &topology.cells[rng.random_range(0..topology.cells.len())];
                let port = rng.random_range(61000..61999);
                let message = format!(
                    "backend connection refused: dial tcp {}:{port}: connect: connection refused",
                    cell.ip
                );
                (router.clone(), "router", 502, message)
            }
        };
        Event {
            timestamp: at,
            header: vm.header(Tags::default()),
            payload: Payload::Error(ErrorEvent {
                source: Str::from_static(source),
                code,
                message: message.into(),
            }),
        }
    }
}

pub(super) fn log_event(
    header: sluice_model::event::Header,
    log: LogMessage,
    envelope_at: i64,
) -> Event {
    Event {
        timestamp: envelope_at,
        header,
        payload: Payload::Log(log),
    }
}
