//! The simulated foundation: who runs where, drawn once from the seed.
//!
//! Shaped after `shared/testdata/golden-v1.jsonl`: deployment `cf`; Diego cells (`rep` on
//! `diego_cell`, 10.0.16.x) run the app instances; two gorouters (`router`, 10.0.4.x); three
//! Dopplers, one with a BOSH guid as its index; `bbs` on `diego_api`; `uaa`; and the Cloud
//! Controller (`cloud_controller` on `api`) that writes the `API` lifecycle lines.

use rand::Rng;
use rand::rngs::StdRng;
use sluice_model::Str;
use sluice_model::event::{Header, Tags};
use uuid::Uuid;

use crate::source::SimulatorConfig;

/// App names, as in the golden data; more apps than names get numbered copies.
const APP_NAMES: [&str; 20] = [
    "orders-api",
    "billing-worker",
    "catalog",
    "checkout",
    "inventory",
    "payments",
    "notifications",
    "search",
    "auth-service",
    "cart",
    "shipping",
    "recommendations",
    "reporting",
    "gateway",
    "profile",
    "pricing",
    "reviews",
    "media",
    "analytics",
    "scheduler",
];

/// Instances per Diego cell, roughly; the foundation has at least 2 cells.
const INSTANCES_PER_CELL: usize = 8;

/// A BOSH VM that sends envelopes: what goes in the envelope header.
#[derive(Clone, Debug)]
pub(super) struct Vm {
    pub(super) origin: Str,
    pub(super) job: Str,
    pub(super) index: Str,
    pub(super) ip: Str,
}

impl Vm {
    fn new(origin: &str, job: &str, index: impl Into<Str>, ip: String) -> Vm {
        Vm {
            origin: origin.into(),
            job: job.into(),
            index: index.into(),
            ip: ip.into(),
        }
    }

    /// The envelope header of something this VM sends.
    pub(super) fn header(&self, tags: Tags) -> Header {
        Header {
            origin: self.origin.clone(),
            deployment: Str::from_static("cf"),
            job: self.job.clone(),
            index: self.index.clone(),
            ip: self.ip.clone(),
            tags,
        }
    }
}

/// What an app logs besides its access log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Flavor {
    /// Spring Boot: Hikari pool stats, GC pauses, Java exceptions.
    Java,
    /// Structured JSON lines (Go, Node).
    Json,
    /// Free text, some of it not ASCII.
    Plain,
}

/// One application and where its instances run.
#[derive(Clone, Debug)]
pub(super) struct App {
    pub(super) id: Uuid,
    /// `id` in canonical form, as logs and container metrics carry it.
    pub(super) id_str: Str,
    /// What the Cloud Controller calls it (`sluice simulate` answers `/v3/apps/{guid}` with it).
    pub(super) name: String,
    /// The route, `orders-api.apps.example.com`.
    pub(super) host: String,
    pub(super) flavor: Flavor,
    pub(super) memory_quota: u64,
    pub(super) disk_quota: u64,
    /// Mean CPU percentage of an instance.
    pub(super) cpu_base: f64,
    /// Disk use of an instance (the droplet), bytes.
    pub(super) disk_base: u64,
    pub(super) instances: Vec<AppInstance>,
    /// Its space, an index into [`Topology::spaces`].
    pub(super) space: usize,
    /// The name tags its envelopes carry (SPEC §11); empty for an untagged app.
    pub(super) tags: Tags,
}

/// A space or an org of the simulated foundation.
#[derive(Clone, Debug)]
pub(super) struct Group {
    pub(super) id: Str,
    pub(super) name: Str,
    /// A space's org, an index into [`Topology::orgs`] (0 for an org).
    pub(super) parent: usize,
}

/// One instance of an app: its index, container guid, and the cell it runs on.
#[derive(Clone, Debug)]
pub(super) struct AppInstance {
    pub(super) index: i32,
    pub(super) index_str: Str,
    pub(super) instance_id: Str,
    pub(super) cell: usize,
    /// The container's host port, as gorouter's `RTR` lines show it.
    pub(super) port: u16,
    /// Memory in use as a share of the quota; wanders between samples.
    pub(super) memory_share: f64,
}

/// One platform metric series: a gauge or a counter of one VM.
#[derive(Clone, Debug)]
pub(super) struct Series {
    pub(super) vm: Vm,
    pub(super) name: Str,
    pub(super) kind: SeriesKind,
}

/// How a series' values move.
#[derive(Clone, Debug)]
pub(super) enum SeriesKind {
    /// A ValueMetric: `level` wanders within `low..=high` by up to `step` (relative).
    Gauge {
        unit: Str,
        level: f64,
        low: f64,
        high: f64,
        step: f64,
        whole: bool,
    },
    /// A CounterEvent: `total` grows by a delta of `0..=max_delta` per report.
    Counter { total: u64, max_delta: u64 },
}

/// Everything drawn once from the seed.
#[derive(Clone, Debug)]
pub(super) struct Topology {
    pub(super) apps: Vec<App>,
    /// Spaces (eight apps each) and orgs (three spaces each), named without drawing from
    /// the seed, so the traffic of a seed is what it was before they existed.
    pub(super) spaces: Vec<Group>,
    pub(super) orgs: Vec<Group>,
    /// Cumulative weights of the apps for picking one: a few apps get most of the traffic.
    app_weights: Vec<f64>,
    /// Every `(app, instance)`, for container metrics in turn.
    pub(super) instances: Vec<(usize, usize)>,
    pub(super) cells: Vec<Vm>,
    /// The BOSH instance guid of each cell, as crash payloads name it.
    pub(super) cell_guids: Vec<Str>,
    pub(super) routers: Vec<Vm>,
    pub(super) dopplers: Vec<Vm>,
    pub(super) cloud_controller: Vm,
    pub(super) series: Vec<Series>,
    /// The tags platform components put on their metrics.
    pub(super) platform_tags: Tags,
}

impl Topology {
    /// Draws the foundation for a config; apps and instances are clamped to at least 1.
    pub(super) fn new(config: &SimulatorConfig, rng: &mut StdRng) -> Topology {
        let app_count = config.apps.max(1) as usize;
        let space_count = app_count.div_ceil(8);
        let orgs: Vec<Group> = (0..space_count.div_ceil(3))
            .map(|o| Group {
                id: Uuid::from_u128(0x0a90_0000_0000_4000_8000_0000_0000_0000 | o as u128)
                    .hyphenated()
                    .to_string()
                    .into(),
                name: format!("org-{o}").into(),
                parent: 0,
            })
            .collect();
        let spaces: Vec<Group> = (0..space_count)
            .map(|s| Group {
                id: Uuid::from_u128(0x05ac_0000_0000_4000_8000_0000_0000_0000 | s as u128)
                    .hyphenated()
                    .to_string()
                    .into(),
                name: format!("space-{s}").into(),
                parent: s / 3,
            })
            .collect();
        let tagged = config.tagged_fraction.clamp(0.0, 1.0);
        let min_instances = config.instances.min.max(1);
        let max_instances = config.instances.max.max(min_instances);
        let mut apps = Vec::with_capacity(app_count);
        for i in 0..app_count {
            let id = random_uuid(rng);
            let base = APP_NAMES[i % APP_NAMES.len()];
            let name = match i / APP_NAMES.len() {
                0 => base.to_owned(),
                n => format!("{base}-{}", n + 1),
            };
            let memory_quota = [256u64, 512, 1024, 2048][rng.random_range(0..4)] << 20;
            let disk_quota = [1024u64, 2048][rng.random_range(0..2)] << 20;
            let count = rng.random_range(min_instances..=max_instances);
            let instances = (0..count as i32)
                .map(|index| AppInstance {
                    index,
                    index_str: index.to_string().into(),
                    instance_id: random_uuid(rng).hyphenated().to_string().into(),
                    cell: 0,
                    port: rng.random_range(61000..61999),
                    memory_share: rng.random_range(0.3..0.7),
                })
                .collect();
            let space = i / 8;
            // Which apps are tagged follows from their index, not from the seed's draws.
            let is_tagged =
                ((i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 54) as f64 / 1024.0 < tagged;
            let tags = if is_tagged {
                let (s, o) = (&spaces[space], &orgs[spaces[space].parent]);
                Tags::from_pairs(vec![
                    ("app_name".into(), name.clone().into()),
                    ("organization_id".into(), o.id.clone()),
                    ("organization_name".into(), o.name.clone()),
                    ("space_id".into(), s.id.clone()),
                    ("space_name".into(), s.name.clone()),
                ])
            } else {
                Tags::default()
            };
            apps.push(App {
                space,
                tags,
                id,
                id_str: id.hyphenated().to_string().into(),
                host: format!("{name}.apps.example.com"),
                name,
                flavor: [Flavor::Java, Flavor::Json, Flavor::Plain][i % 3],
                memory_quota,
                disk_quota,
                cpu_base: rng.random_range(2.0..45.0),
                disk_base: (disk_quota as f64 * rng.random_range(0.1..0.3)) as u64,
                instances,
            });
        }
        let mut app_weights = Vec::with_capacity(app_count);
        let mut sum = 0.0;
        for rank in 0..app_count {
            sum += 1.0 / (rank as f64 + 1.0).powf(0.8);
            app_weights.push(sum);
        }

        let instance_total: usize = apps.iter().map(|a| a.instances.len()).sum();
        let cell_count = instance_total.div_ceil(INSTANCES_PER_CELL).clamp(2, 1000);
        let cells: Vec<Vm> = (0..cell_count)
            .map(|i| Vm::new("rep", "diego_cell", i.to_string(), numbered_ip(16, i)))
            .collect();
        let cell_guids = (0..cell_count)
            .map(|_| Str::from(random_uuid(rng).hyphenated().to_string()))
            .collect();
        let mut instances = Vec::with_capacity(instance_total);
        for (a, app) in apps.iter_mut().enumerate() {
            for (i, instance) in app.instances.iter_mut().enumerate() {
                instance.cell = rng.random_range(0..cell_count);
                instances.push((a, i));
            }
        }

        let routers: Vec<Vm> = (0..2)
            .map(|i| Vm::new("gorouter", "router", i.to_string(), numbered_ip(4, i)))
            .collect();
        let dopplers = vec![
            Vm::new("doppler", "doppler", "0", numbered_ip(8, 0)),
            Vm::new("doppler", "doppler", "1", numbered_ip(8, 1)),
            Vm::new(
                "doppler",
                "doppler",
                random_uuid(rng).hyphenated().to_string(),
                numbered_ip(8, 2),
            ),
        ];
        let bbs: Vec<Vm> = (0..2)
            .map(|i| Vm::new("bbs", "diego_api", i.to_string(), numbered_ip(2, i)))
            .collect();
        let uaa = Vm::new("uaa", "uaa", "0", numbered_ip(3, 0));
        let cloud_controller = Vm::new("cloud_controller", "api", "0", numbered_ip(1, 0));

        let mut series = Vec::new();
        let mut add = |vm: &Vm, specs: &[Spec]| {
            for spec in specs {
                series.push(spec.series(vm, rng));
            }
        };
        for vm in &routers {
            add(vm, ROUTER_SERIES);
        }
        for vm in &dopplers {
            add(vm, DOPPLER_SERIES);
        }
        for vm in &cells {
            add(vm, CELL_SERIES);
        }
        for vm in &bbs {
            add(vm, BBS_SERIES);
        }
        add(&uaa, UAA_SERIES);

        Topology {
            apps,
            spaces,
            orgs,
            app_weights,
            instances,
            cells,
            cell_guids,
            routers,
            dopplers,
            cloud_controller,
            series,
            platform_tags: Tags::from_pairs(vec![
                ("product".into(), "VMware Tanzu Application Service".into()),
                ("system_domain".into(), "sys.example.com".into()),
            ]),
        }
    }

    /// Picks an app, popular ones more often (Zipf-like weights).
    pub(super) fn pick_app(&self, rng: &mut StdRng) -> usize {
        let total = self.app_weights.last().copied().unwrap_or(0.0);
        let target = rng.random::<f64>() * total;
        self.app_weights
            .partition_point(|w| *w <= target)
            .min(self.apps.len() - 1)
    }
}

/// A version 4 UUID from the seeded generator.
pub(super) fn random_uuid(rng: &mut StdRng) -> Uuid {
    uuid::Builder::from_random_bytes(rng.random()).into_uuid()
}

/// `10.0.{subnet}.{10 + i}`, spilling into the next subnets past 200 VMs.
fn numbered_ip(subnet: usize, i: usize) -> String {
    format!("10.0.{}.{}", subnet + i / 200, 10 + i % 200)
}

/// A series as written in the tables below.
enum Spec {
    /// name, unit, low, high, whole numbers
    Gauge(&'static str, &'static str, f64, f64, bool),
    /// name, largest delta per report
    Counter(&'static str, u64),
}

impl Spec {
    fn series(&self, vm: &Vm, rng: &mut StdRng) -> Series {
        match *self {
            Spec::Gauge(name, unit, low, high, whole) => Series {
                vm: vm.clone(),
                name: Str::from_static(name),
                kind: SeriesKind::Gauge {
                    unit: Str::from_static(unit),
                    level: if low < high {
                        rng.random_range(low..high)
                    } else {
                        low
                    },
                    low,
                    high,
                    step: 0.05,
                    whole,
                },
            },
            Spec::Counter(name, max_delta) => Series {
                vm: vm.clone(),
                name: Str::from_static(name),
                kind: SeriesKind::Counter {
                    total: rng.random_range(10_000_000..5_000_000_000),
                    max_delta,
                },
            },
        }
    }
}

const ROUTER_SERIES: &[Spec] = &[
    Spec::Counter("total_requests", 40),
    Spec::Counter("responses.2xx", 36),
    Spec::Counter("responses.3xx", 2),
    Spec::Counter("responses.4xx", 3),
    Spec::Counter("responses.5xx", 1),
    Spec::Counter("bad_gateways", 1),
    Spec::Counter("rejected_requests", 1),
    Spec::Gauge("latency", "ms", 5.0, 200.0, false),
    Spec::Gauge("total_routes", "Metric", 100.0, 400.0, true),
    Spec::Gauge("ms_since_last_registry_update", "ms", 0.0, 30_000.0, false),
    Spec::Gauge("numGoRoutines", "Metric", 800.0, 2500.0, true),
    Spec::Gauge(
        "memoryStats.numBytesAllocatedHeap",
        "Bytes",
        3e7,
        1.5e8,
        false,
    ),
];

const DOPPLER_SERIES: &[Spec] = &[
    Spec::Counter("ingress", 2000),
    Spec::Counter("egress", 2000),
    Spec::Counter("dropped", 3),
    Spec::Gauge(
        "messageRouter.numberOfFirehoseSinks",
        "sinks",
        1.0,
        8.0,
        true,
    ),
    Spec::Gauge(
        "memoryStats.numBytesAllocatedHeap",
        "Bytes",
        2e7,
        8e7,
        false,
    ),
    Spec::Gauge("numGoRoutines", "Metric", 80.0, 300.0, true),
];

const CELL_SERIES: &[Spec] = &[
    Spec::Counter("GardenContainerCreationSucceeded", 3),
    Spec::Counter("RepBulkSyncCount", 1),
    Spec::Gauge("CapacityTotalMemory", "MiB", 32000.0, 32000.0, true),
    Spec::Gauge("CapacityRemainingMemory", "MiB", 2000.0, 30000.0, true),
    Spec::Gauge("CapacityRemainingDisk", "MiB", 20000.0, 100_000.0, true),
    Spec::Gauge("ContainerCount", "Metric", 0.0, 60.0, true),
    Spec::Gauge("RepBulkSyncDuration", "nanos", 5e7, 5e8, false),
    Spec::Gauge("numGoRoutines", "Metric", 300.0, 900.0, true),
];

const BBS_SERIES: &[Spec] = &[
    Spec::Counter("ConvergenceLRPRuns", 2),
    Spec::Gauge("LRPsRunning", "Metric", 50.0, 500.0, true),
    Spec::Gauge("ConvergenceLRPDuration", "nanos", 1e6, 1e8, false),
    Spec::Gauge("numGoRoutines", "Metric", 40.0, 120.0, true),
];

const UAA_SERIES: &[Spec] = &[
    Spec::Counter("audit_service.client_authentication_count", 5),
    Spec::Gauge("server.inflight.count", "Metric", 0.0, 20.0, true),
    Spec::Gauge("jvm.heap.used", "MiB", 200.0, 800.0, true),
];
