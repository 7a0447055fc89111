//! `sluice top`: a live view of a running instance's `/metrics` (its `[admin]` endpoint).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Args;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[derive(Debug, Args)]
pub(crate) struct TopArgs {
    /// The admin endpoint of the running instance (`[admin] listen`).
    #[arg(long, default_value = "http://127.0.0.1:9598")]
    url: String,
    /// How often to refresh, as a duration (`1s`, `500ms`).
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    interval: Duration,
    /// Print one snapshot (totals, no rates) and exit.
    #[arg(long)]
    once: bool,
}

pub(crate) fn main(args: TopArgs) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(top(args))
}

async fn top(args: TopArgs) -> ExitCode {
    let Some(address) = address_of(&args.url) else {
        eprintln!(
            "--url {}: expected http://HOST:PORT (the `[admin] listen` address)",
            args.url
        );
        return ExitCode::from(2);
    };
    if args.once {
        return match scrape(&address).await {
            Ok(metrics) => {
                print!("{}", render(&args.url, &metrics, None));
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("cannot read {}/metrics: {e}", args.url);
                ExitCode::FAILURE
            }
        };
    }
    let mut previous: Option<(Instant, Metrics)> = None;
    let mut stdout = std::io::stdout();
    loop {
        let screen = match scrape(&address).await {
            Ok(metrics) => {
                let now = Instant::now();
                let screen = render(
                    &args.url,
                    &metrics,
                    previous
                        .as_ref()
                        .map(|(at, m)| (m, now.duration_since(*at).as_secs_f64())),
                );
                previous = Some((now, metrics));
                screen
            }
            Err(e) => format!("cannot read {}/metrics: {e}\nretrying…\n", args.url),
        };
        // Home, clear, draw: the whole screen at once so it does not flicker line by line.
        let _ = write!(stdout, "\x1b[H\x1b[2J{screen}");
        let _ = stdout.flush();
        tokio::select! {
            () = tokio::time::sleep(args.interval) => {}
            _ = tokio::signal::ctrl_c() => {
                println!();
                return ExitCode::SUCCESS;
            }
        }
    }
}

/// `host:port` of an `http://host:port[/]` URL.
fn address_of(url: &str) -> Option<String> {
    let rest = url.strip_prefix("http://")?;
    let host_port = rest.split('/').next()?;
    host_port.contains(':').then(|| host_port.to_owned())
}

/// GET /metrics over plain HTTP/1.1 (the admin endpoint speaks nothing else).
async fn scrape(address: &str) -> Result<Metrics, String> {
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(address)
            .await
            .map_err(|e| e.to_string())?;
        let request =
            format!("GET /metrics HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n");
        stream
            .write_all(request.as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        let mut response = Vec::new();
        stream
            .read_to_end(&mut response)
            .await
            .map_err(|e| e.to_string())?;
        Ok::<_, String>(response)
    };
    let response = tokio::time::timeout(Duration::from_secs(5), exchange)
        .await
        .map_err(|_| "no answer within 5 s".to_owned())??;
    let response = String::from_utf8_lossy(&response);
    let (head, body) = response
        .split_once("\r\n\r\n")
        .ok_or("the answer is not HTTP")?;
    let status = head.lines().next().unwrap_or_default();
    if !status.contains(" 200 ") {
        return Err(format!("the endpoint answered `{status}`"));
    }
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        return Ok(Metrics::parse(&dechunk(body)));
    }
    Ok(Metrics::parse(body))
}

/// The body of a chunked HTTP/1.1 response.
fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(size) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if size == 0 || rest.len() < size {
            break;
        }
        out.push_str(&rest[..size]);
        body = rest[size..].trim_start_matches("\r\n");
    }
    out
}

/// Samples of a scrape: `(name, labels) → value`.
#[derive(Debug, Default, Clone)]
struct Metrics(BTreeMap<(String, Vec<(String, String)>), f64>);

impl Metrics {
    /// Reads the text format as `/metrics` writes it; lines it cannot read are skipped.
    fn parse(text: &str) -> Metrics {
        let mut samples = BTreeMap::new();
        for line in text.lines() {
            if line.starts_with('#') || line.trim().is_empty() {
                continue;
            }
            if let Some((key, value)) = parse_sample(line) {
                samples.insert(key, value);
            }
        }
        Metrics(samples)
    }

    /// The values of `name` whose labels include `label=value`, by their other labels.
    fn get(&self, name: &str, label: &str, value: &str) -> f64 {
        self.0
            .iter()
            .filter(|((n, labels), _)| {
                n == name && labels.iter().any(|(k, v)| k == label && v == value)
            })
            .map(|(_, v)| *v)
            .sum()
    }

    fn scalar(&self, name: &str) -> Option<f64> {
        self.0.iter().find(|((n, _), _)| n == name).map(|(_, v)| *v)
    }

    fn sum(&self, name: &str) -> f64 {
        self.0
            .iter()
            .filter(|((n, _), _)| n == name)
            .map(|(_, v)| *v)
            .sum()
    }

    /// The values of `label` across the samples of `name`, sorted.
    fn names(&self, name: &str, label: &str) -> Vec<String> {
        let mut names: Vec<String> = self
            .0
            .keys()
            .filter(|(n, _)| n == name)
            .filter_map(|(_, labels)| labels.iter().find(|(k, _)| k == label))
            .map(|(_, v)| v.clone())
            .collect();
        names.dedup();
        names
    }
}

type SampleKey = (String, Vec<(String, String)>);

fn parse_sample(line: &str) -> Option<(SampleKey, f64)> {
    let (name, rest) = match line.find(['{', ' ']) {
        Some(i) => line.split_at(i),
        None => return None,
    };
    let mut labels = Vec::new();
    let rest = if let Some(mut inner) = rest.strip_prefix('{') {
        loop {
            inner = inner.trim_start_matches(',');
            if let Some(after) = inner.strip_prefix('}') {
                break after;
            }
            let (key, after) = inner.split_once("=\"")?;
            let mut value = String::new();
            let mut chars = after.char_indices();
            let end = loop {
                let (i, c) = chars.next()?;
                match c {
                    '\\' => match chars.next()?.1 {
                        'n' => value.push('\n'),
                        c => value.push(c),
                    },
                    '"' => break i,
                    c => value.push(c),
                }
            };
            labels.push((key.to_owned(), value));
            inner = &after[end + 1..];
        }
    } else {
        rest
    };
    let value = rest.split_whitespace().next()?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        "NaN" => f64::NAN,
        v => v.parse().ok()?,
    };
    labels.sort();
    Some(((name.to_owned(), labels), value))
}

/// A per-second rate against the previous scrape, or `-` on the first.
fn rate(
    now: &Metrics,
    previous: Option<(&Metrics, f64)>,
    value: impl Fn(&Metrics) -> f64,
) -> String {
    match previous {
        Some((before, seconds)) if seconds > 0.0 => {
            human((value(now) - value(before)).max(0.0) / seconds)
        }
        _ => "-".to_owned(),
    }
}

/// 1234567 → `1.23M`.
fn human(n: f64) -> String {
    let (value, unit) = if n >= 1e9 {
        (n / 1e9, "G")
    } else if n >= 1e6 {
        (n / 1e6, "M")
    } else if n >= 1e4 {
        (n / 1e3, "k")
    } else {
        return format!("{n:.0}");
    };
    format!("{value:.2}{unit}")
}

fn yes_no(v: f64) -> &'static str {
    if v >= 1.0 { "yes" } else { "NO" }
}

/// The screen: sources, sinks and the graph, one table each.
fn render(url: &str, m: &Metrics, previous: Option<(&Metrics, f64)>) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "sluice top — {url}\n");
    let _ = writeln!(
        out,
        "{:<20} {:>10} {:>10} {:>12} {:>8} {:>10} {:>9}",
        "SOURCE", "events/s", "bytes/s", "events", "bad", "reconnects", "connected"
    );
    for name in m.names("sluice_source_events_total", "source") {
        let get = |metric: &str| m.get(metric, "source", &name);
        let _ = writeln!(
            out,
            "{:<20} {:>10} {:>10} {:>12} {:>8} {:>10} {:>9}",
            name,
            rate(m, previous, |x| x.get(
                "sluice_source_events_total",
                "source",
                &name
            )),
            rate(m, previous, |x| x.get(
                "sluice_source_bytes_total",
                "source",
                &name
            )),
            human(get("sluice_source_events_total")),
            human(get("sluice_source_bad_records_total")),
            human(get("sluice_source_reconnects_total")),
            yes_no(get("sluice_source_connected")),
        );
    }
    let _ = writeln!(
        out,
        "\n{:<20} {:>10} {:>12} {:>9} {:>9} {:>8} {:>8} {:>8} {:>9}",
        "SINK",
        "rows/s",
        "written",
        "pending",
        "buffer",
        "oldest",
        "retries",
        "dropped",
        "available"
    );
    for name in m.names("sluice_sink_available", "sink") {
        let get = |metric: &str| m.get(metric, "sink", &name);
        let _ = writeln!(
            out,
            "{:<20} {:>10} {:>12} {:>9} {:>9} {:>7.1}s {:>8} {:>8} {:>9}",
            name,
            rate(m, previous, |x| x.get(
                "sluice_sink_records_written_total",
                "sink",
                &name
            )),
            human(get("sluice_sink_records_written_total")),
            human(get("sluice_sink_pending_records")),
            human(get("sluice_sink_buffer_records")),
            get("sluice_sink_buffer_oldest_age_seconds"),
            human(get("sluice_sink_retries_total")),
            human(get("sluice_sink_dropped_total")),
            yes_no(get("sluice_sink_available")),
        );
    }
    let lag = m
        .scalar("sluice_graph_watermark_lag_seconds")
        .map_or_else(|| "-".to_owned(), |s| format!("{s:.1}s"));
    let _ = writeln!(
        out,
        "\n{:<20} {:>10} {:>12} {:>8} {:>12} {:>14}",
        "GRAPH", "records/s", "records", "late", "open windows", "watermark lag"
    );
    let _ = writeln!(
        out,
        "{:<20} {:>10} {:>12} {:>8} {:>12} {:>14}",
        "",
        rate(m, previous, |x| x.sum("sluice_graph_records_total")),
        human(m.sum("sluice_graph_records_total")),
        human(m.sum("sluice_graph_late_records_total")),
        human(m.sum("sluice_graph_open_windows")),
        lag,
    );
    render_cluster(&mut out, m, previous);
    out
}

/// In a cluster (SPEC §12): this process's place, and each peer's link.
fn render_cluster(out: &mut String, m: &Metrics, previous: Option<(&Metrics, f64)>) {
    let (Some(process), Some(processes)) = (
        m.scalar("sluice_cluster_process"),
        m.scalar("sluice_cluster_processes"),
    ) else {
        return;
    };
    let _ = writeln!(
        out,
        "\n{:<20} {:>22} {:>10} {:>10} {:>12} {:>12} {:>4}",
        format!("CLUSTER {process} of {processes}"),
        "peer",
        "out B/s",
        "in B/s",
        "sent",
        "received",
        "up"
    );
    for peer in m.names("sluice_cluster_sent_bytes_total", "peer") {
        let address =
            m.0.keys()
                .filter(|(name, _)| name == "sluice_cluster_sent_bytes_total")
                .find(|(_, labels)| labels.iter().any(|(k, v)| k == "peer" && *v == peer))
                .and_then(|(_, labels)| labels.iter().find(|(k, _)| k == "address"))
                .map(|(_, v)| v.clone())
                .unwrap_or_default();
        let get = |x: &Metrics, metric: &str| x.get(metric, "peer", &peer);
        let _ = writeln!(
            out,
            "{:<20} {:>22} {:>10} {:>10} {:>12} {:>12} {:>4}",
            format!("process {peer}"),
            address,
            rate(m, previous, |x| get(x, "sluice_cluster_sent_bytes_total")),
            rate(m, previous, |x| get(
                x,
                "sluice_cluster_received_bytes_total"
            )),
            human(get(m, "sluice_cluster_sent_bytes_total")),
            human(get(m, "sluice_cluster_received_bytes_total")),
            yes_no(get(m, "sluice_cluster_peer_up")),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_are_read_with_escaped_labels() {
        let m = Metrics::parse(
            "# HELP x y\n# TYPE x counter\nx_total{sink=\"a\\\"b\",stream=\"logs\"} 7\nx_total{sink=\"a\\\"b\",stream=\"http\"} 3\ng 1.5\n",
        );
        assert_eq!(m.get("x_total", "sink", "a\"b"), 10.0);
        assert_eq!(m.scalar("g"), Some(1.5));
        assert_eq!(m.names("x_total", "sink"), vec!["a\"b".to_owned()]);
    }

    #[test]
    fn rates_come_from_two_scrapes() {
        let before = Metrics::parse("e_total{source=\"cf\"} 100\n");
        let now = Metrics::parse("e_total{source=\"cf\"} 300\n");
        let events = |m: &Metrics| m.get("e_total", "source", "cf");
        assert_eq!(rate(&now, Some((&before, 2.0)), events), "100");
        assert_eq!(rate(&now, None, events), "-");
    }

    #[test]
    fn a_cluster_process_shows_its_place_and_peers() {
        let text = "sluice_cluster_process 1\nsluice_cluster_processes 3\n\
            sluice_cluster_peer_up{peer=\"0\",address=\"10.0.0.1:7100\"} 1\n\
            sluice_cluster_peer_up{peer=\"2\",address=\"10.0.0.3:7100\"} 0\n\
            sluice_cluster_sent_bytes_total{peer=\"0\",address=\"10.0.0.1:7100\"} 2000000\n\
            sluice_cluster_sent_bytes_total{peer=\"2\",address=\"10.0.0.3:7100\"} 5\n\
            sluice_cluster_received_bytes_total{peer=\"0\",address=\"10.0.0.1:7100\"} 30000\n\
            sluice_cluster_received_bytes_total{peer=\"2\",address=\"10.0.0.3:7100\"} 6\n";
        let screen = render("http://x:1", &Metrics::parse(text), None);
        assert!(screen.contains("CLUSTER 1 of 3"), "{screen}");
        let peer = |n: &str| {
            screen
                .lines()
                .find(|l| l.starts_with(&format!("process {n}")))
                .unwrap_or_else(|| panic!("no line for process {n}:\n{screen}"))
                .to_owned()
        };
        assert!(peer("0").contains("10.0.0.1:7100") && peer("0").contains("2.00M"));
        assert!(peer("0").trim_end().ends_with("yes"));
        assert!(peer("2").trim_end().ends_with("NO"));
        let alone = render(
            "http://x:1",
            &Metrics::parse("sluice_graph_records_total 1\n"),
            None,
        );
        assert!(!alone.contains("CLUSTER"));
    }

    #[test]
    fn chunked_bodies_are_joined() {
        assert_eq!(dechunk("3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"), "abcde");
    }

    #[test]
    fn the_url_names_host_and_port() {
        assert_eq!(
            address_of("http://127.0.0.1:9598/").as_deref(),
            Some("127.0.0.1:9598")
        );
        assert_eq!(address_of("https://x:1"), None);
        assert_eq!(address_of("http://localhost"), None);
    }
}
