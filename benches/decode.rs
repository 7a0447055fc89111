//! Dropsonde decoding on a realistic Firehose mix: `cargo bench --bench decode`.
//!
//! 10 000 envelopes built once (60 % LogMessages with access-log and JSON-log lines, 20 %
//! HttpStartStop, 20 % ContainerMetric, with the headers and tags a real cell sends), framed
//! and split the way the replay reader does. Three decoders over the same frames:
//! - `prost`: `prost::Message::decode` into the generated structs (the baseline);
//! - `reference`: prost plus the conversion into `Event`s;
//! - `fast`: `sluice_model::decode::decode_v1`, the hot path.

use std::hint::black_box;

use bytes::Bytes;
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use prost::Message;
use sluice_model::proto::events as pb;
use sluice_model::{decode, framing, reference};

const ENVELOPES: usize = 10_000;

/// A small deterministic generator (xorshift64*): the mix is the same on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len() as u64) as usize]
    }

    fn guid(&mut self) -> String {
        let (a, b) = (self.next(), self.next());
        format!(
            "{:08x}-{:04x}-4{:03x}-a{:03x}-{:012x}",
            a >> 32,
            (a >> 16) & 0xffff,
            a & 0xfff,
            b >> 52,
            b & 0xffff_ffff_ffff
        )
    }
}

const APPS: usize = 50;
const PATHS: &[&str] = &[
    "/api/v1/orders",
    "/api/v1/orders/48213/items",
    "/static/css/main.bd0e54a9.css",
    "/login",
    "/healthz",
    "/api/v2/customers/search?q=smith",
];
const METHODS: &[&str] = &["GET", "POST", "PUT", "DELETE"];

fn access_log(rng: &mut Rng) -> String {
    format!(
        "203.0.113.{} - - [12/Mar/2024:09:00:{:02} +0000] \"{} {} HTTP/1.1\" {} {} \"https://shop.cf.io/\" \"Mozilla/5.0\" {}ms",
        rng.below(256),
        rng.below(60),
        rng.pick(METHODS),
        rng.pick(PATHS),
        rng.pick(&["200", "201", "304", "404", "500"]),
        rng.below(40_000),
        rng.below(900),
    )
}

fn json_log(rng: &mut Rng) -> String {
    format!(
        "{{\"level\":\"{}\",\"ts\":\"2024-03-12T09:00:{:02}.{:03}Z\",\"logger\":\"orders\",\"msg\":\"{}\",\"order_id\":{},\"user\":\"u-{:05}\",\"ms\":{}}}",
        rng.pick(&["info", "debug", "warn", "error"]),
        rng.below(60),
        rng.below(1000),
        rng.pick(&[
            "order created",
            "payment authorized",
            "cache miss",
            "retrying upstream"
        ]),
        rng.below(100_000),
        rng.below(100_000),
        rng.below(500),
    )
}

fn header(rng: &mut Rng, origin: &str, job: &str, event_type: i32, ts: i64) -> pb::Envelope {
    pb::Envelope {
        origin: origin.into(),
        event_type,
        timestamp: Some(ts),
        deployment: Some("cf".into()),
        job: Some(job.into()),
        index: Some(format!("{}", rng.below(12))),
        ip: Some(format!("10.0.16.{}", rng.below(40) + 10)),
        tags: [("product", "PAS"), ("system_domain", "sys.cf.io")]
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .into(),
        ..Default::default()
    }
}

fn mix() -> Vec<Bytes> {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let apps: Vec<String> = (0..APPS).map(|_| rng.guid()).collect();
    let mut framed = Vec::new();
    for i in 0..ENVELOPES {
        let ts = 1_710_234_017_000_000_000 + i as i64 * 1_000_000;
        let app = &apps[rng.below(APPS as u64) as usize];
        let roll = rng.below(10);
        let envelope = if roll < 6 {
            let line = if rng.below(2) == 0 {
                access_log(&mut rng)
            } else {
                json_log(&mut rng)
            };
            pb::Envelope {
                log_message: Some(pb::LogMessage {
                    message: line.into(),
                    message_type: 1 + (rng.below(10) == 0) as i32,
                    timestamp: ts - 3_000_000,
                    app_id: Some(app.clone()),
                    source_type: Some(rng.pick(&["APP/PROC/WEB", "RTR", "STG"]).into()),
                    source_instance: Some(format!("{}", rng.below(4))),
                }),
                ..header(&mut rng, "rep", "diego_cell", 5, ts)
            }
        } else if roll < 8 {
            let (low, high) = (rng.next(), rng.next());
            pb::Envelope {
                http_start_stop: Some(pb::HttpStartStop {
                    start_timestamp: ts - 25_000_000,
                    stop_timestamp: ts,
                    request_id: pb::Uuid { low, high },
                    peer_type: 1,
                    method: 1 + rng.below(4) as i32,
                    uri: format!("https://shop.cf.io{}", rng.pick(PATHS)),
                    remote_address: format!("10.0.0.{}:{}", rng.below(255), rng.below(65_535)),
                    user_agent: "curl/8.4.0".into(),
                    status_code: 200,
                    content_length: rng.below(40_000) as i64,
                    application_id: Some(pb::Uuid {
                        low: high,
                        high: low,
                    }),
                    instance_index: Some(rng.below(4) as i32),
                    instance_id: None,
                    forwarded: vec![format!("203.0.113.{}", rng.below(256))],
                }),
                ..header(&mut rng, "gorouter", "router", 4, ts)
            }
        } else {
            pb::Envelope {
                container_metric: Some(pb::ContainerMetric {
                    application_id: app.clone(),
                    instance_index: rng.below(4) as i32,
                    cpu_percentage: rng.below(10_000) as f64 / 97.0,
                    memory_bytes: 100_000_000 + rng.below(400_000_000),
                    disk_bytes: 200_000_000 + rng.below(100_000_000),
                    memory_bytes_quota: Some(536_870_912),
                    disk_bytes_quota: Some(1_073_741_824),
                }),
                ..header(&mut rng, "rep", "diego_cell", 9, ts)
            }
        };
        framing::write_frame(&mut framed, &envelope.encode_to_vec());
    }
    // Split like the replay reader does: every frame shares one buffer.
    framing::frames(&framed)
        .map(|(_, frame)| frame.expect("frames written above"))
        .collect()
}

fn bench_decode(c: &mut Criterion) {
    let frames = mix();
    let bytes: usize = frames.iter().map(Bytes::len).sum();
    println!(
        "decode mix: {} envelopes, {:.1} bytes per envelope on average",
        frames.len(),
        bytes as f64 / frames.len() as f64
    );
    // Each decoder consumes its own handles to the frames, as the sources do: `decode_v1` takes
    // the frame by value, prost borrows it and the frame is dropped after. Cloning the handles
    // (a reference-count bump each) is setup, outside the measurement.
    let mut group = c.benchmark_group("decode_v1");
    group.throughput(Throughput::Elements(frames.len() as u64));
    group.bench_function("prost", |b| {
        b.iter_batched(
            || frames.clone(),
            |frames| {
                for frame in frames {
                    black_box(pb::Envelope::decode(&frame[..]).expect("valid"));
                }
            },
            BatchSize::LargeInput,
        )
    });
    group.bench_function("reference", |b| {
        b.iter_batched(
            || frames.clone(),
            |frames| {
                for frame in frames {
                    black_box(reference::decode_v1(&frame).expect("valid"));
                }
            },
            BatchSize::LargeInput,
        )
    });
    group.bench_function("fast", |b| {
        b.iter_batched(
            || frames.clone(),
            |frames| {
                for frame in frames {
                    black_box(decode::decode_v1(frame).expect("valid"));
                }
            },
            BatchSize::LargeInput,
        )
    });
    group.finish();
}

criterion_group!(benches, bench_decode);
criterion_main!(benches);
