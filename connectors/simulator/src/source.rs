//! The `simulator` source: [`SimulatorConfig`] and [`run`], the source task that paces a
//! [`Generator`] into the pipeline.

#[cfg(test)]
mod tests;

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tracing::info;

use sluice_common::time::now_ns;
use sluice_sources::{
    Component, ComponentError, ComponentTask, PipelineClosed, Problem, Source, SourceContext,
};

use crate::generator::Generator;

/// Events per batch when the rate is unlimited.
pub(crate) const UNPACED_BATCH: usize = 1024;

/// Events per batch at most when paced, so a high rate still yields between batches.
const MAX_PACED_BATCH: u64 = 8192;

/// How often a paced source sends a batch.
pub(crate) const PACING_TICK: Duration = Duration::from_millis(10);

/// `[sources.NAME] type = "simulator"`: how much traffic of what shape to make.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimulatorConfig {
    /// How many applications the simulated foundation runs.
    #[serde(default = "default_apps")]
    pub apps: u32,
    /// Instances per app: a number N (each app gets 1 to N) or `{ min = A, max = B }`.
    #[serde(default)]
    pub instances: Instances,
    /// Envelopes per second of wall-clock time; 0 makes them as fast as the consumer takes them.
    #[serde(default = "default_rate")]
    pub rate: u64,
    /// Seed of the random generator: the same seed gives the same apps and the same traffic.
    #[serde(default = "default_seed")]
    pub seed: u64,
    /// Stop after this many envelopes, which makes the source finite; unlimited when absent.
    #[serde(default)]
    pub limit: Option<u64>,
    /// Where event times come from: `wall` (now) or `simulated` (from `start`, `density`).
    #[serde(default)]
    pub clock: Clock,
    /// With `clock = "simulated"`: the event time of the first envelope, ns since the epoch.
    /// In TOML an RFC 3339 UTC time such as `"2024-03-12T09:00:00Z"`.
    #[serde(default = "default_start", with = "rfc3339")]
    pub start: i64,
    /// With `clock = "simulated"`: envelopes per simulated second. At `rate = 0` and the
    /// default density an hour of event time takes 7.2 M envelopes, not an hour.
    #[serde(default = "default_density")]
    pub density: u64,
    /// Event times scatter up to this far before the clock (out-of-order arrival), like the
    /// buffering of Loggregator agents. A duration string such as `"2s"`.
    #[serde(default = "default_jitter", with = "sluice_common::config::duration")]
    pub jitter: Duration,
    /// Share (0 to 1) of records whose event time lies 2 to 10 minutes in the past: late
    /// records for lateness tests.
    #[serde(default)]
    pub late_fraction: f64,
    /// Share (0 to 1) of apps whose envelopes carry Diego's name tags (`app_name`,
    /// `space_id`, `space_name`, `organization_id`, `organization_name`, SPEC §11); the others
    /// are known only to the Cloud Controller, so both ways of naming apps are exercised.
    #[serde(default = "default_tagged_fraction")]
    pub tagged_fraction: f64,
}

fn default_tagged_fraction() -> f64 {
    0.5
}

/// Where the simulator's event times come from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Clock {
    /// Event time is the time the envelope is made, minus the jitter.
    #[default]
    Wall,
    /// Event time starts at `start` and advances by `1 / density` seconds per envelope,
    /// however fast the envelopes are made: hours of traffic in seconds.
    Simulated,
}

/// How many instances each app runs: a number drawn once per app from `min..=max`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "InstancesSetting", into = "InstancesSetting")]
pub struct Instances {
    /// At least 1.
    pub min: u32,
    /// At least `min`.
    pub max: u32,
}

impl Default for Instances {
    fn default() -> Instances {
        Instances { min: 1, max: 4 }
    }
}

/// The two ways to write [`Instances`] in a config file.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
#[serde(untagged, deny_unknown_fields)]
enum InstancesSetting {
    UpTo(u32),
    Range { min: u32, max: u32 },
}

impl From<InstancesSetting> for Instances {
    fn from(setting: InstancesSetting) -> Instances {
        match setting {
            InstancesSetting::UpTo(max) => Instances { min: 1, max },
            InstancesSetting::Range { min, max } => Instances { min, max },
        }
    }
}

impl From<Instances> for InstancesSetting {
    fn from(instances: Instances) -> InstancesSetting {
        InstancesSetting::Range {
            min: instances.min,
            max: instances.max,
        }
    }
}

const fn default_apps() -> u32 {
    50
}

const fn default_rate() -> u64 {
    2000
}

const fn default_seed() -> u64 {
    1
}

/// 2024-03-12T09:00:00Z, the morning the golden test data was captured.
const fn default_start() -> i64 {
    1_710_234_000_000_000_000
}

const fn default_density() -> u64 {
    2000
}

const fn default_jitter() -> Duration {
    Duration::from_secs(2)
}

impl Default for SimulatorConfig {
    fn default() -> SimulatorConfig {
        SimulatorConfig {
            apps: default_apps(),
            instances: Instances::default(),
            rate: default_rate(),
            seed: default_seed(),
            limit: None,
            clock: Clock::default(),
            start: default_start(),
            density: default_density(),
            jitter: default_jitter(),
            late_fraction: 0.0,
            tagged_fraction: default_tagged_fraction(),
        }
    }
}

/// [`Generator::new`] clamps what [`Component::problems`] rejects, so a config that skipped
/// validation still runs.
impl Component for SimulatorConfig {
    fn kind(&self) -> &'static str {
        "simulator"
    }

    fn problems(&self) -> Vec<Problem> {
        let mut problems = Vec::new();
        let mut problem = |key: &str, text: String| problems.push(Problem::new(key, text));
        if self.apps == 0 {
            problem("apps", "must be at least 1".to_owned());
        }
        if self.instances.min == 0 {
            problem("instances", "must be at least 1".to_owned());
        }
        if self.instances.max < self.instances.min {
            problem(
                "instances",
                format!(
                    "has max {} below min {}",
                    self.instances.max, self.instances.min
                ),
            );
        }
        if self.density == 0 {
            problem(
                "density",
                "must be at least 1 envelope per second".to_owned(),
            );
        }
        if !(0.0..=1.0).contains(&self.late_fraction) {
            problem(
                "late_fraction",
                format!("is {}, not a share from 0 to 1", self.late_fraction),
            );
        }
        if !(0.0..=1.0).contains(&self.tagged_fraction) {
            problem(
                "tagged_fraction",
                format!("is {}, not a share from 0 to 1", self.tagged_fraction),
            );
        }
        if self.start < 0 {
            problem("start", "is before 1970".to_owned());
        }
        problems
    }

    fn describe(&self) -> String {
        match self.limit {
            Some(limit) => format!("{} apps, {limit} envelopes", self.apps),
            None => format!("{} apps, unbounded", self.apps),
        }
    }
}

impl Source for SimulatorConfig {
    fn is_finite(&self) -> bool {
        self.limit.is_some()
    }

    fn build(self: Box<Self>, ctx: SourceContext) -> ComponentTask {
        Box::pin(async move { run(*self, ctx).await.map_err(ComponentError::new) })
    }
}

/// Why the simulator stopped other than by finishing or being shut down.
#[derive(Debug, thiserror::Error)]
pub enum SimulatorError {
    /// The config was not validated, and is not valid.
    #[error("invalid simulator config: {}", join(.0))]
    InvalidConfig(Vec<Problem>),
    /// The pipeline stopped taking batches before the source was told to stop.
    #[error(transparent)]
    PipelineClosed(#[from] PipelineClosed),
}

/// `` `apps` must be at least 1; `density` ... ``: the keys as written in TOML.
fn join(problems: &[Problem]) -> String {
    let texts: Vec<String> = problems
        .iter()
        .map(|p| format!("`{}` {}", p.key, p.message))
        .collect();
    texts.join("; ")
}

/// Runs the simulator as a source: makes envelopes at `config.rate` per second (batches every
/// 10 ms; 1024 at a time as fast as the channel takes them when the rate is 0), stamps every
/// batch with the time it was made, and returns `Ok` after `config.limit` envelopes or when
/// `ctx.shutdown` is cancelled.
pub async fn run(config: SimulatorConfig, ctx: SourceContext) -> Result<(), SimulatorError> {
    let problems = config.problems();
    if !problems.is_empty() {
        return Err(SimulatorError::InvalidConfig(problems));
    }
    let mut generator = Generator::new(&config);
    let mut remaining = config.limit.unwrap_or(u64::MAX);
    let mut pacer = Pacer::new(config.rate);
    ctx.set_connected(true);
    info!(
        source = %ctx.name,
        apps = config.apps,
        rate = config.rate,
        seed = config.seed,
        limit = config.limit,
        "Simulating Firehose traffic."
    );
    let mut ticks = tokio::time::interval(PACING_TICK);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while remaining > 0 {
        let due = if config.rate == 0 {
            UNPACED_BATCH as u64
        } else {
            tokio::select! {
                biased;
                () = ctx.shutdown.cancelled() => break,
                _ = ticks.tick() => pacer.due(Instant::now()),
            }
        };
        let count = due.min(remaining);
        if count == 0 {
            continue;
        }
        let mut batch = Vec::with_capacity(count as usize);
        generator.fill(count as usize, &mut batch);
        tokio::select! {
            biased;
            () = ctx.shutdown.cancelled() => break,
            sent = ctx.send(batch, now_ns()) => sent?,
        }
        pacer.sent(count);
        remaining -= count;
    }
    ctx.set_connected(false);
    info!(source = %ctx.name, events = ctx.metrics.events.get(), "Simulator stopped.");
    Ok(())
}

/// How many envelopes are due at a steady rate, without drift: the count owed since the
/// start minus the count sent. A consumer that falls more than a second behind is forgiven
/// the rest, so it gets no burst bigger than a second's worth when it catches up.
#[derive(Debug, Clone)]
pub(crate) struct Pacer {
    rate: u64,
    started: Instant,
    owed_before: u64,
    sent: u64,
}

impl Pacer {
    /// `rate` envelopes per second; 0 means unpaced, and [`due`](Self::due) says 0.
    pub(crate) fn new(rate: u64) -> Pacer {
        Pacer {
            rate,
            started: Instant::now(),
            owed_before: 0,
            sent: 0,
        }
    }

    /// How many may be sent now (at most [`MAX_PACED_BATCH`]).
    pub(crate) fn due(&mut self, now: Instant) -> u64 {
        let elapsed = now.saturating_duration_since(self.started).as_nanos();
        let owed = self.owed_before + (u128::from(self.rate) * elapsed / 1_000_000_000) as u64;
        if owed > self.sent + self.rate {
            self.sent = owed - self.rate;
        }
        owed.saturating_sub(self.sent).min(MAX_PACED_BATCH)
    }

    /// Records that `count` were sent.
    pub(crate) fn sent(&mut self, count: u64) {
        self.sent += count;
    }

    /// Starts owing from now on, forgetting the time spent idle (no consumer connected), so
    /// a consumer that connects late gets no burst.
    pub(crate) fn restart(&mut self) {
        self.started = Instant::now();
        self.owed_before = self.sent;
    }
}

/// `start` as an RFC 3339 UTC string in config files, ns since the epoch in memory.
mod rfc3339 {
    use std::time::{Duration, UNIX_EPOCH};

    use serde::{Deserialize, Deserializer, Serializer, de};

    pub(super) fn serialize<S: Serializer>(ns: &i64, serializer: S) -> Result<S::Ok, S::Error> {
        let time = UNIX_EPOCH + Duration::from_nanos(u64::try_from(*ns).unwrap_or(0));
        serializer.collect_str(&humantime::format_rfc3339_nanos(time))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<i64, D::Error> {
        let text = String::deserialize(deserializer)?;
        let time = humantime::parse_rfc3339(&text).map_err(|e| {
            de::Error::custom(format!(
                "'{text}' is not an RFC 3339 UTC time like 2024-03-12T09:00:00Z: {e}"
            ))
        })?;
        let since_epoch = time
            .duration_since(UNIX_EPOCH)
            .map_err(|_| de::Error::custom(format!("'{text}' is before 1970")))?;
        i64::try_from(since_epoch.as_nanos())
            .map_err(|_| de::Error::custom(format!("'{text}' is too far in the future")))
    }
}
