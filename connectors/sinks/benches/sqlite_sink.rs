//! Rows per second the `sqlite` sink writes, from batches received to rows committed.
//!
//! `cargo bench -p sluice-sinks --bench sqlite_sink`

use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use sluice_model::Str;
use sluice_model::event::{ContainerMetric, Event, Header, Payload};
use sluice_model::records::Records;
use sluice_model::records::StreamName;
use sluice_sinks::SinkContext;
use sluice_sinks::sqlite::{self, SqliteSinkConfig};
use tokio_util::sync::CancellationToken;

const ROWS: usize = 100_000;
const BATCH: usize = 1_000;

fn container_metrics() -> Vec<Records> {
    let header = Header {
        origin: Str::from("rep"),
        deployment: Str::from("cf"),
        job: Str::from("diego_cell"),
        index: Str::from("3"),
        ip: Str::from("10.0.16.4"),
        tags: Default::default(),
    };
    let events: Vec<Event> = (0..ROWS)
        .map(|i| Event {
            timestamp: 1_710_234_017_448_058_219 + i as i64 * 1_000,
            header: header.clone(),
            payload: Payload::Container(ContainerMetric {
                application_id: Str::from(format!("app-{:04}", i % 500)),
                instance_index: (i % 4) as i32,
                cpu_percentage: 12.5,
                memory_bytes: 1 << 28,
                disk_bytes: 1 << 29,
                memory_bytes_quota: Some(1 << 30),
                disk_bytes_quota: Some(1 << 31),
            }),
        })
        .collect();
    events
        .chunks(BATCH)
        .map(|c| Records::ContainerMetrics(c.to_vec()))
        .collect()
}

fn write_container_metrics(c: &mut Criterion) {
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    let batches = container_metrics();
    let mut group = c.benchmark_group("sqlite_sink");
    group.throughput(Throughput::Elements(ROWS as u64));
    group.sample_size(10);
    group.bench_function("container_metrics", |b| {
        b.iter_custom(|iterations| {
            let mut total = Duration::ZERO;
            for _ in 0..iterations {
                let dir = tempfile::tempdir().expect("temp dir");
                let config = SqliteSinkConfig::new(
                    dir.path().join("bench.db"),
                    vec![StreamName::ContainerMetrics],
                );
                let (ctx, sender) = SinkContext::new("bench", 16, CancellationToken::new());
                let batches = batches.clone();
                let start = Instant::now();
                let feeder = std::thread::spawn(move || {
                    for batch in batches {
                        sender.send_blocking(batch);
                    }
                });
                runtime.block_on(sqlite::run(config, ctx)).expect("written");
                total += start.elapsed();
                feeder.join().expect("feeder");
            }
            total
        });
    });
    group.finish();
}

criterion_group!(benches, write_container_metrics);
criterion_main!(benches);
