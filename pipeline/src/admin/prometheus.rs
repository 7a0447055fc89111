//! `/metrics`: a [`Snapshot`] in the Prometheus text exposition format (version 0.0.4).
//!
//! Every family is written with its HELP and TYPE lines even when it has no series yet, so a
//! dashboard sees the same names from the first scrape on.

use std::fmt::Write;

use super::registry::{ClusterSnapshot, PeerSnapshot, SinkSnapshot, Snapshot, SourceSnapshot};

/// The `Content-Type` of the format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

#[derive(Clone, Copy)]
enum Kind {
    Counter,
    Gauge,
}

/// One metric family being written: its header, then its samples.
struct Family<'a> {
    out: &'a mut String,
    name: &'static str,
}

impl Family<'_> {
    fn sample(&mut self, labels: &[(&str, &str)], value: impl Into<f64>) {
        let out = &mut *self.out;
        out.push_str(self.name);
        if !labels.is_empty() {
            out.push('{');
            for (i, (key, value)) in labels.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(key);
                out.push_str("=\"");
                escape_label(out, value);
                out.push('"');
            }
            out.push('}');
        }
        out.push(' ');
        push_value(out, value.into());
        out.push('\n');
    }
}

fn family<'a>(out: &'a mut String, name: &'static str, kind: Kind, help: &str) -> Family<'a> {
    let kind = match kind {
        Kind::Counter => "counter",
        Kind::Gauge => "gauge",
    };
    // Writing into a String cannot fail.
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
    Family { out, name }
}

/// Label values escape backslash, double quote and line feed.
fn escape_label(out: &mut String, value: &str) {
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

fn push_value(out: &mut String, value: f64) {
    if value.is_nan() {
        out.push_str("NaN");
    } else if value.is_infinite() {
        out.push_str(if value > 0.0 { "+Inf" } else { "-Inf" });
    } else if value.fract() == 0.0 && value.abs() < 1e15 {
        let _ = write!(out, "{}", value as i64);
    } else {
        let _ = write!(out, "{value}");
    }
}

// Counters are u64 and gauges i64: as f64 they are exact up to 2^53, beyond any real count.
fn f(n: u64) -> f64 {
    n as f64
}

fn g(n: i64) -> f64 {
    n as f64
}

fn flag(b: bool) -> f64 {
    if b { 1.0 } else { 0.0 }
}

/// Encodes every figure of `snapshot`.
pub fn encode(snapshot: &Snapshot) -> String {
    use Kind::{Counter, Gauge};
    let mut out = String::with_capacity(8 * 1024);
    let sources = &snapshot.sources;
    let sinks = &snapshot.sinks;

    let per_source =
        |out: &mut String, name, kind, help, value: &dyn Fn(&SourceSnapshot) -> f64| {
            let mut fam = family(out, name, kind, help);
            for s in sources {
                fam.sample(&[("source", &s.name)], value(s));
            }
        };
    per_source(
        &mut out,
        "sluice_source_events_total",
        Counter,
        "Events the source handed to the pipeline.",
        &|s| f(s.events),
    );
    per_source(
        &mut out,
        "sluice_source_bytes_total",
        Counter,
        "Bytes of envelopes the source received, before decoding.",
        &|s| f(s.bytes),
    );
    {
        let mut fam = family(
            &mut out,
            "sluice_source_bad_records_total",
            Counter,
            "Records the source skipped as bad, by reason.",
        );
        for s in sources {
            for (reason, n) in &s.bad_records {
                fam.sample(&[("source", &s.name), ("reason", reason)], f(*n));
            }
        }
    }
    {
        let mut fam = family(
            &mut out,
            "sluice_source_skipped_total",
            Counter,
            "Well-formed records that carry nothing Sluice stores, by reason.",
        );
        for s in sources {
            for (reason, n) in &s.skipped {
                fam.sample(&[("source", &s.name), ("reason", reason)], f(*n));
            }
        }
    }
    per_source(
        &mut out,
        "sluice_source_reconnects_total",
        Counter,
        "Connection attempts after the first.",
        &|s| f(s.reconnects),
    );
    per_source(
        &mut out,
        "sluice_source_slow_consumer_disconnects_total",
        Counter,
        "Disconnects by the Traffic Controller for consuming too slowly.",
        &|s| f(s.slow_consumer_disconnects),
    );
    per_source(
        &mut out,
        "sluice_source_connected",
        Gauge,
        "1 while the source is connected (a finite source: while reading).",
        &|s| flag(s.connected),
    );
    per_source(
        &mut out,
        "sluice_source_queued_bytes",
        Gauge,
        "Bytes of the source's batches waiting for the dataflow (pipeline.channel_max_bytes bounds the sum).",
        &|s| s.queued_bytes as f64,
    );
    per_source(
        &mut out,
        "sluice_source_abandoned_bytes_total",
        Counter,
        "Bytes of input given up on: a replay file's rest after a broken length prefix, its cut last record.",
        &|s| f(s.abandoned_bytes),
    );
    per_source(
        &mut out,
        "sluice_source_reconnect_delay_seconds",
        Gauge,
        "The wait before the latest reconnect attempt.",
        &|s| s.reconnect_delay_seconds,
    );

    {
        let mut fam = family(
            &mut out,
            "sluice_sink_records_written_total",
            Counter,
            "Records the sink wrote to its store, by stream.",
        );
        for s in sinks {
            for (stream, n) in &s.written {
                fam.sample(&[("sink", &s.name), ("stream", stream)], f(*n));
            }
        }
    }
    {
        let mut fam = family(
            &mut out,
            "sluice_sink_retention_deleted_total",
            Counter,
            "Rows (Elasticsearch: indices) deleted by retention, by table (index pattern).",
        );
        for s in sinks {
            for (table, n) in &s.retention_deleted {
                fam.sample(&[("sink", &s.name), ("table", table)], f(*n));
            }
        }
    }
    let per_sink = |out: &mut String, name, kind, help, value: &dyn Fn(&SinkSnapshot) -> f64| {
        let mut fam = family(out, name, kind, help);
        for s in sinks {
            fam.sample(&[("sink", &s.name)], value(s));
        }
    };
    per_sink(
        &mut out,
        "sluice_sink_retries_total",
        Counter,
        "Write attempts that failed and were retried.",
        &|s| f(s.retries),
    );
    per_sink(
        &mut out,
        "sluice_sink_dropped_total",
        Counter,
        "Records the sink gave up on.",
        &|s| f(s.dropped),
    );
    per_sink(
        &mut out,
        "sluice_sink_dead_lettered_total",
        Counter,
        "Records the store refused for good, set aside in the dead-letter file.",
        &|s| f(s.dead_lettered),
    );
    per_sink(
        &mut out,
        "sluice_sink_buffer_skipped_bytes_total",
        Counter,
        "Bytes of corrupt disk-buffer frames skipped to resynchronise on the next intact frame.",
        &|s| f(s.buffer_skipped_bytes),
    );
    per_sink(
        &mut out,
        "sluice_sink_pending_records",
        Gauge,
        "Records the sink received and has not written yet.",
        &|s| g(s.pending),
    );
    per_sink(
        &mut out,
        "sluice_sink_buffer_records",
        Gauge,
        "Records in the sink's buffer.",
        &|s| g(s.buffer_records),
    );
    per_sink(
        &mut out,
        "sluice_sink_buffer_bytes",
        Gauge,
        "Bytes in the sink's disk buffer not yet acknowledged.",
        &|s| g(s.buffer_bytes),
    );
    per_sink(
        &mut out,
        "sluice_sink_buffer_oldest_age_seconds",
        Gauge,
        "How long the oldest record not yet written has waited (0: none).",
        &|s| s.oldest_pending_seconds,
    );
    per_sink(
        &mut out,
        "sluice_sink_available",
        Gauge,
        "1 unless the sink's last attempt to reach its store failed.",
        &|s| flag(s.unavailable.is_none()),
    );

    let graph = &snapshot.graph;
    family(
        &mut out,
        "sluice_graph_records_total",
        Counter,
        "Records that entered the dataflow.",
    )
    .sample(&[], f(graph.records));
    family(
        &mut out,
        "sluice_graph_filtered_records_total",
        Counter,
        "Records removed by filters before entering the dataflow.",
    )
    .sample(&[], f(graph.filtered));
    family(
        &mut out,
        "sluice_reloads_total",
        Counter,
        "Config reloads applied.",
    )
    .sample(&[], f(graph.reloads));
    family(
        &mut out,
        "sluice_reload_failures_total",
        Counter,
        "Config reloads rejected (the file had problems).",
    )
    .sample(&[], f(graph.reload_failures));
    {
        let mut fam = family(
            &mut out,
            "sluice_graph_late_records_total",
            Counter,
            "Records behind the watermark by more than the allowed lateness, by event kind.",
        );
        for (kind, n) in &graph.late {
            fam.sample(&[("kind", kind)], f(*n));
        }
    }
    family(
        &mut out,
        "sluice_graph_open_windows",
        Gauge,
        "Rollup windows open now.",
    )
    .sample(&[], g(graph.open_windows));
    {
        let mut lag = family(
            &mut out,
            "sluice_graph_watermark_lag_seconds",
            Gauge,
            "Wall clock minus the watermark (absent before the first record).",
        );
        if let Some(seconds) = graph.watermark_lag_seconds {
            lag.sample(&[], seconds);
        }
    }
    // The process's memory, under the names Prometheus' own client libraries use for the
    // current figure: what the SQLite sink's page cache and held transactions add shows here.
    if let Some((resident, peak)) = snapshot.memory {
        family(
            &mut out,
            "process_resident_memory_bytes",
            Gauge,
            "Resident memory of the process.",
        )
        .sample(&[], f(resident));
        family(
            &mut out,
            "sluice_process_resident_memory_max_bytes",
            Gauge,
            "The most resident memory the process has had since it started.",
        )
        .sample(&[], f(peak));
    }
    let metadata = &graph.metadata;
    family(
        &mut out,
        "sluice_metadata_listings_total",
        Counter,
        "Complete Cloud Controller listings handed to the directory (SPEC §11).",
    )
    .sample(&[], f(metadata.listings));
    family(
        &mut out,
        "sluice_metadata_failures_total",
        Counter,
        "Cloud Controller listings that failed (none of it was used).",
    )
    .sample(&[], f(metadata.failures));
    family(
        &mut out,
        "sluice_metadata_retries_total",
        Counter,
        "Cloud Controller pages asked again after a 429, a 5xx or a refused token.",
    )
    .sample(&[], f(metadata.retries));
    {
        let mut apps = family(
            &mut out,
            "sluice_metadata_apps",
            Gauge,
            "Apps in the last complete Cloud Controller listing (absent before the first).",
        );
        if let Some(n) = metadata.apps {
            apps.sample(&[], f(n));
        }
    }
    let checkpoint = &graph.checkpoint;
    family(
        &mut out,
        "sluice_checkpoints_total",
        Counter,
        "Checkpoints of the dataflow's state written (SPEC §9).",
    )
    .sample(&[], f(checkpoint.written));
    family(
        &mut out,
        "sluice_checkpoint_failures_total",
        Counter,
        "Checkpoints that could not be written.",
    )
    .sample(&[], f(checkpoint.failures));
    family(
        &mut out,
        "sluice_state_restores_total",
        Counter,
        "Runs that continued from a checkpoint.",
    )
    .sample(&[], f(checkpoint.restores));
    {
        let mut age = family(
            &mut out,
            "sluice_checkpoint_age_seconds",
            Gauge,
            "Since the last checkpoint was written (absent before the first).",
        );
        if let Some(seconds) = checkpoint.age_seconds {
            age.sample(&[], seconds);
        }
    }
    family(
        &mut out,
        "sluice_checkpoint_duration_seconds",
        Gauge,
        "How long writing the last checkpoint took.",
    )
    .sample(&[], checkpoint.duration_seconds);
    family(
        &mut out,
        "sluice_checkpoint_size_bytes",
        Gauge,
        "The size of the last checkpoint.",
    )
    .sample(&[], f(checkpoint.size_bytes));
    {
        let mut gaps = family(
            &mut out,
            "sluice_state_restored_gap_seconds",
            Gauge,
            "Seconds of a live source's records missing from the windows restored at start.",
        );
        for (source, seconds) in &checkpoint.restored_gaps {
            gaps.sample(&[("source", source)], *seconds);
        }
    }
    let api = &snapshot.api;
    family(
        &mut out,
        "sluice_api_streams_open",
        Gauge,
        "Live streams (SSE) the API has open.",
    )
    .sample(&[], f(api.streams_open));
    {
        let mut refused = family(
            &mut out,
            "sluice_api_streams_refused_total",
            Counter,
            "Live streams refused with 429, by the limit reached (api.limits).",
        );
        refused.sample(&[("limit", "max_streams")], f(api.streams_refused_overall));
        refused.sample(
            &[("limit", "max_streams_per_caller")],
            f(api.streams_refused_per_caller),
        );
    }
    if let Some(cluster) = &snapshot.cluster {
        encode_cluster(&mut out, cluster);
    }
    out
}

/// The process's place in its cluster, and the bytes each peer link carries.
fn encode_cluster(out: &mut String, cluster: &ClusterSnapshot) {
    use Kind::{Counter, Gauge};
    family(
        out,
        "sluice_cluster_process",
        Gauge,
        "This process's index in cluster.addresses.",
    )
    .sample(&[], cluster.process as f64);
    family(
        out,
        "sluice_cluster_processes",
        Gauge,
        "Processes in the cluster.",
    )
    .sample(&[], cluster.processes as f64);
    let peer_labels = |peer: &PeerSnapshot| (peer.process.to_string(), peer.address.clone());
    {
        let mut up = family(
            out,
            "sluice_cluster_peer_up",
            Gauge,
            "1 while the link to the peer works, 0 once it is lost.",
        );
        for peer in &cluster.peers {
            let (index, address) = peer_labels(peer);
            up.sample(
                &[("peer", &index), ("address", &address)],
                flag(cluster.lost != Some(peer.process)),
            );
        }
    }
    {
        let mut sent = family(
            out,
            "sluice_cluster_sent_bytes_total",
            Counter,
            "Bytes sent to the peer: records and rollup samples exchanged, and progress.",
        );
        for peer in &cluster.peers {
            let (index, address) = peer_labels(peer);
            sent.sample(
                &[("peer", &index), ("address", &address)],
                f(peer.sent_bytes),
            );
        }
    }
    let mut received = family(
        out,
        "sluice_cluster_received_bytes_total",
        Counter,
        "Bytes received from the peer.",
    );
    for peer in &cluster.peers {
        let (index, address) = peer_labels(peer);
        received.sample(
            &[("peer", &index), ("address", &address)],
            f(peer.received_bytes),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admin::registry::{ApiSnapshot, GraphSnapshot};

    fn snapshot() -> Snapshot {
        Snapshot {
            started: true,
            graph: GraphSnapshot {
                records: 12,
                filtered: 1,
                reloads: 2,
                reload_failures: 0,
                late: vec![("log_message", 2), ("http_start_stop", 0)],
                open_windows: 3,
                watermark_lag_seconds: Some(1.5),
                checkpoint: Default::default(),
                metadata: Default::default(),
            },
            sources: vec![SourceSnapshot {
                name: "cf".into(),
                events: 10,
                bytes: 2_000,
                bad_records: vec![("truncated", 1)],
                skipped: vec![],
                reconnects: 4,
                slow_consumer_disconnects: 1,
                connected: true,
                queued_bytes: 0,
                abandoned_bytes: 0,
                reconnect_delay_seconds: 0.4,
            }],
            sinks: vec![SinkSnapshot {
                name: "we\"ird\\name\n".into(),
                type_name: "sqlite",
                written: vec![("logs", 7)],
                retries: 2,
                dropped: 1,
                dead_lettered: 0,
                buffer_skipped_bytes: 0,
                pending: 5,
                buffer_records: 5,
                buffer_bytes: 0,
                oldest_pending_seconds: 0.25,
                unavailable: Some("connection refused".into()),
                retention_deleted: vec![("log_message".into(), 40)],
            }],
            cluster: Some(ClusterSnapshot {
                process: 1,
                processes: 3,
                lost: Some(2),
                peers: vec![
                    PeerSnapshot {
                        process: 0,
                        address: "10.0.0.1:7100".into(),
                        sent_bytes: 300,
                        received_bytes: 400,
                    },
                    PeerSnapshot {
                        process: 2,
                        address: "10.0.0.3:7100".into(),
                        sent_bytes: 5,
                        received_bytes: 6,
                    },
                ],
            }),
            api: ApiSnapshot {
                streams_open: 3,
                streams_refused_overall: 0,
                streams_refused_per_caller: 5,
            },
            memory: Some((300 << 20, 512 << 20)),
        }
    }

    /// Fails naming the first of `lines` that is not a whole line of `text`.
    fn assert_lines(text: &str, lines: &[&str]) {
        for line in lines {
            assert!(
                text.lines().any(|l| l == *line),
                "missing `{line}` in:\n{text}"
            );
        }
    }

    #[test]
    fn memory_is_shown_where_the_process_can_read_it() {
        assert_lines(
            &encode(&snapshot()),
            &[
                "process_resident_memory_bytes 314572800",
                "sluice_process_resident_memory_max_bytes 536870912",
            ],
        );
        let mut unknown = snapshot();
        unknown.memory = None;
        assert!(!encode(&unknown).contains("resident_memory"));
    }

    #[test]
    fn a_cluster_shows_its_place_its_peers_and_their_traffic() {
        assert_lines(
            &encode(&snapshot()),
            &[
                "sluice_cluster_process 1",
                "sluice_cluster_processes 3",
                "sluice_cluster_peer_up{peer=\"0\",address=\"10.0.0.1:7100\"} 1",
                "sluice_cluster_peer_up{peer=\"2\",address=\"10.0.0.3:7100\"} 0",
                "sluice_cluster_sent_bytes_total{peer=\"0\",address=\"10.0.0.1:7100\"} 300",
                "sluice_cluster_received_bytes_total{peer=\"2\",address=\"10.0.0.3:7100\"} 6",
            ],
        );
        let mut alone = snapshot();
        alone.cluster = None;
        assert!(!encode(&alone).contains("sluice_cluster_"));
    }

    #[test]
    fn samples_carry_labels_and_values() {
        assert_lines(
            &encode(&snapshot()),
            &[
                "sluice_source_events_total{source=\"cf\"} 10",
                "sluice_source_bytes_total{source=\"cf\"} 2000",
                "sluice_source_bad_records_total{source=\"cf\",reason=\"truncated\"} 1",
                "sluice_source_connected{source=\"cf\"} 1",
                "sluice_sink_available{sink=\"we\\\"ird\\\\name\\n\"} 0",
                "sluice_sink_buffer_oldest_age_seconds{sink=\"we\\\"ird\\\\name\\n\"} 0.25",
                "sluice_graph_records_total 12",
                "sluice_reloads_total 2",
                "sluice_graph_late_records_total{kind=\"log_message\"} 2",
                "sluice_graph_watermark_lag_seconds 1.5",
                "sluice_sink_retention_deleted_total{sink=\"we\\\"ird\\\\name\\n\",table=\"log_message\"} 40",
                "sluice_api_streams_open 3",
                "sluice_api_streams_refused_total{limit=\"max_streams_per_caller\"} 5",
            ],
        );
    }

    #[test]
    fn every_family_has_help_and_type_before_its_samples() {
        let text = encode(&snapshot());
        let mut declared: Vec<&str> = Vec::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').expect("name and kind");
                assert!(kind == "counter" || kind == "gauge", "{line}");
                assert!(
                    !kind.starts_with("counter") || name.ends_with("_total"),
                    "counter {name} lacks _total"
                );
                declared.push(name);
            } else if !line.starts_with("# HELP ") {
                let name = line.split(['{', ' ']).next().expect("a name");
                assert_eq!(
                    declared.last(),
                    Some(&name),
                    "sample before its TYPE: {line}"
                );
            }
        }
        assert_eq!(
            text.matches("# HELP ").count(),
            text.matches("# TYPE ").count()
        );
    }

    #[test]
    fn the_watermark_lag_is_absent_before_the_first_record() {
        let mut snapshot = snapshot();
        snapshot.graph.watermark_lag_seconds = None;
        let text = encode(&snapshot);
        assert!(text.contains("# TYPE sluice_graph_watermark_lag_seconds gauge"));
        assert!(
            !text
                .lines()
                .any(|l| l.starts_with("sluice_graph_watermark_lag_seconds "))
        );
    }
}
