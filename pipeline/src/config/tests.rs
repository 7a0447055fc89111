use super::*;

fn parse(text: &str) -> Result<Config, Vec<String>> {
    Config::parse(text, |name| {
        (name == "UAA_CLIENT_SECRET").then(|| "s3cr3t".to_owned())
    })
}

const MINIMAL: &str = r#"
[pipeline]
workers = 2
allowed_lateness = "60s"

[sources.replay]
type = "file"
path = "capture.bin.gz"
format = "dropsonde"

[sinks.local]
type = "blackhole"
streams = ["logs", "container_metrics", "http", "app_events", "app_rollups", "platform_rollups", "errors"]
"#;

#[test]
fn the_spec_minimal_config_parses() {
    let config = parse(MINIMAL).expect("valid");
    assert_eq!(config.pipeline.workers(), 2);
    assert_eq!(config.pipeline.allowed_lateness, Duration::from_secs(60));
    assert_eq!(config.pipeline.flush_interval, Duration::from_secs(1));
    assert!(matches!(config.sources["replay"], SourceConfig::File(_)));
    assert_eq!(config.sinks["local"].streams().len(), 7);
}

#[test]
fn the_spec_source_keys_parse_with_secrets_from_the_environment() {
    let config = parse(
        r#"
[sources.cf]
type = "firehose"
url = "wss://doppler.sys.example.com:443"
subscription_id = "sluice"
uaa_url = "https://uaa.sys.example.com"
client_id = "sluice"
client_secret = "${UAA_CLIENT_SECRET}"
skip_tls_verify = false

[sources.cf2]
type = "rlp"
url = "https://log-stream.sys.example.com"
shard_id = "sluice"
uaa_url = "https://uaa.sys.example.com"
client_id = "sluice"
client_secret = "${UAA_CLIENT_SECRET}"
"#,
    )
    .expect("valid");
    let SourceConfig::Firehose(firehose) = &config.sources["cf"] else {
        panic!("cf is a firehose source");
    };
    assert_eq!(firehose.client_secret, "s3cr3t");
    assert!(matches!(config.sources["cf2"], SourceConfig::Rlp(_)));
}

#[test]
fn an_unknown_key_is_named_with_its_line() {
    let problems = parse(&MINIMAL.replace("format = \"dropsonde\"", "formt = \"dropsonde\""))
        .expect_err("unknown key");
    assert_eq!(problems.len(), 1);
    assert!(problems[0].contains("line 9,"), "{}", problems[0]);
    assert!(problems[0].contains("formt"), "{}", problems[0]);
}

#[test]
fn unknown_types_and_streams_are_errors() {
    let problems =
        parse(&MINIMAL.replace("type = \"file\"", "type = \"kafka\"")).expect_err("type");
    assert!(problems[0].contains("kafka"), "{}", problems[0]);
    let problems = parse(&MINIMAL.replace("\"errors\"]", "\"erors\"]")).expect_err("stream");
    assert!(problems[0].contains("erors"), "{}", problems[0]);
}

#[test]
fn a_bad_duration_says_how_to_write_one() {
    let problems = parse(&MINIMAL.replace("\"60s\"", "\"sixty\"")).expect_err("duration");
    assert!(
        problems[0].contains("sixty") && problems[0].contains("\"60s\""),
        "{}",
        problems[0]
    );
}

#[test]
fn every_semantic_problem_is_reported_at_once() {
    let text = r#"
[pipeline]
workers = 0
flush_interval = "0s"
app_events = [{ event = "broken", source_type = "API", message = "(" }]

[sources.sim]
type = "simulator"
apps = 0

[sinks.a]
type = "blackhole"
streams = ["logs", "logs"]
"#;
    let problems = parse(text).expect_err("problems");
    let all = problems.join("\n");
    assert!(all.contains("pipeline.workers"), "{all}");
    assert!(all.contains("pipeline.flush_interval"), "{all}");
    assert!(
        all.contains("pipeline.app_events: rule 0 (`broken`)"),
        "{all}"
    );
    assert!(all.contains("sources.sim.apps"), "{all}");
    assert!(
        all.contains("sinks.a.streams: `logs` is listed twice"),
        "{all}"
    );
    assert_eq!(problems.len(), 5, "{all}");
}

#[test]
fn an_unset_variable_is_a_problem_not_an_empty_secret() {
    let problems = Config::parse(
        MINIMAL.replace("capture.bin.gz", "${CAPTURE}").as_str(),
        |_| None,
    )
    .expect_err("unset");
    assert!(
        problems[0].contains("`CAPTURE` is not set"),
        "{}",
        problems[0]
    );
}

#[test]
fn the_embedded_default_is_valid_and_runs_the_simulator_into_sqlite() {
    let config = Config::embedded_default();
    assert!(matches!(
        config.sources["simulator"],
        SourceConfig::Simulator(_)
    ));
    assert_eq!(config.sinks["local"].type_name(), "sqlite");
    assert_eq!(config.sinks["local"].streams().len(), StreamName::ALL.len());
    // A new user sees the web UI on loopback, with no sign-in, over that same file.
    let api = config.api.as_ref().expect("the API is on");
    assert_eq!(api.listen, "127.0.0.1:8080");
    assert_eq!(api.auth, sluice_api::AuthMode::None);
    assert_eq!(config.api_store_names(), (Some("local"), Some("local")));
}

#[test]
fn the_spec_mysql_sink_parses_and_never_prints_its_password() {
    let config = Config::parse(
        r#"
[sources.replay]
type = "file"
path = "capture.bin.gz"

[sinks.db]
type = "mysql"
url = "mysql://sluice:${MYSQL_PASSWORD}@db.example.com:3306/sluice"
streams = ["container_metrics", "http", "app_events", "app_rollups", "platform_rollups", "errors"]
retention = { raw = "1d", interval = "1m" }
"#,
        |name| (name == "MYSQL_PASSWORD").then(|| "hunter2".to_owned()),
    )
    .expect("valid");
    let SinkConfig::Mysql(mysql) = &config.sinks["db"] else {
        panic!("db is a mysql sink");
    };
    assert_eq!(mysql.retention.raw, Duration::from_secs(24 * 3600));
    assert_eq!(mysql.retention.rollups, Duration::from_secs(14 * 24 * 3600));
    assert_eq!(mysql.pool_size.get(), 4);
    let shown = format!("{} {:?}", config.sinks["db"].describe(), config.sinks["db"]);
    assert!(shown.contains("db.example.com:3306/sluice"), "{shown}");
    assert!(!shown.contains("hunter2"), "{shown}");
}

#[test]
fn a_malformed_mysql_url_is_named_by_key() {
    let problems = parse(
        r#"
[sources.replay]
type = "file"
path = "capture.bin.gz"

[sinks.db]
type = "mysql"
url = "postgres://nope"
"#,
    )
    .expect_err("a bad URL");
    assert!(
        problems
            .iter()
            .any(|p| p.starts_with("sinks.db.url: invalid MySQL URL")),
        "{problems:?}"
    );
}

#[test]
fn every_example_config_is_valid() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../config");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).expect("config/ exists") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "toml") {
            let text = std::fs::read_to_string(&path).expect("readable");
            if let Err(problems) = Config::parse(&text, |_| None) {
                panic!("{} is invalid: {problems:?}", path.display());
            }
            checked += 1;
        }
    }
    assert!(checked >= 3, "only {checked} example configs");
}

#[test]
fn one_file_or_address_claimed_twice_is_an_error_naming_both_keys() {
    let text = MINIMAL.replace(
        "[sinks.local]",
        r#"[sinks.db]
type = "sqlite"
path = "data/x.db"

[sinks.wal]
type = "stdout"
buffer = { type = "disk", path = "./data/x.db" }

[admin]
listen = "127.0.0.1:9598"

[api]
listen = "127.0.0.1:9598"
auth = "none"

[sinks.local]"#,
    );
    let problems = parse(&text).expect_err("a file and an address claimed twice");
    assert!(
        problems.contains(
            &"sinks.wal.buffer.path: `./data/x.db` is already the SQLite database of sinks.db.path"
                .to_owned()
        ),
        "{problems:?}"
    );
    assert!(
        problems.contains(
            &"api.listen: `127.0.0.1:9598` is already the address of admin.listen".to_owned()
        ),
        "{problems:?}"
    );
    // Port 0 asks for any free port: two listeners may both ask.
    let any_port = text.replace("127.0.0.1:9598", "127.0.0.1:0");
    assert!(
        parse(&any_port)
            .err()
            .unwrap_or_default()
            .iter()
            .all(|p| !p.contains("listen")),
        "port 0 is no conflict"
    );
}

#[test]
fn two_sinks_naming_one_disk_buffer_path_is_an_error_naming_both() {
    let text = MINIMAL.replace(
        "[sinks.local]",
        r#"[sinks.db]
type = "sqlite"
path = "a.db"
buffer = { type = "disk", path = "buffers/shared", max_size = "1GiB" }

[sinks.out]
type = "stdout"
buffer = { type = "disk", path = "buffers/shared", sync = "none" }

[sinks.local]"#,
    );
    let problems = parse(&text).expect_err("one buffer, two sinks");
    assert_eq!(
        problems,
        vec![
            "sinks.out.buffer.path: `buffers/shared` is already the disk buffer of sinks.db.buffer.path"
                .to_owned()
        ]
    );
    let separate = text.replace(
        "path = \"buffers/shared\", sync",
        "path = \"buffers/out\", sync",
    );
    let config = parse(&separate).expect("separate buffers");
    assert!(matches!(
        config.sinks["db"].buffer(),
        BufferConfig::Disk { max_size, .. } if max_size.0 == 1 << 30
    ));
}

#[test]
fn filters_are_validated_with_their_keys() {
    let text = format!(
        "{MINIMAL}\n[filters.web]\nsources = [\"replay\", \"cf\"]\nevent_types = [\"log_message\", \"logs\"]\n\n[filters.health]\naction = \"drop\"\nmessage = \"GET /health(\"\n"
    );
    let problems = parse(&text).expect_err("bad filters");
    assert!(
        problems
            .iter()
            .any(|p| p == "filters.web.sources: no source is named `cf`"),
        "{problems:?}"
    );
    assert!(
        problems
            .iter()
            .any(|p| p.starts_with("filters.web.event_types: unknown event type `logs`")),
        "{problems:?}"
    );
    assert!(
        problems
            .iter()
            .any(|p| p.starts_with("filters.health.message: invalid regex")),
        "{problems:?}"
    );
    let good = format!(
        "{MINIMAL}\n[filters.web]\nsources = [\"replay\"]\napp_ids = [\"f47ac10b-58cc-4372-a567-0e02b2c3d479\"]\n"
    );
    let config = parse(&good).expect("valid");
    assert!(!config.compiled_filters().expect("compiled").is_empty());
    assert!(crate::topology::describe(&config).contains("web: Keep on replay"));
}

#[test]
fn the_admin_endpoint_is_off_by_default_and_on_loopback_when_asked_for() {
    assert_eq!(parse(MINIMAL).expect("valid").admin, None);
    let config = parse(&format!("{MINIMAL}\n[admin]\n")).expect("valid");
    let admin = config.admin.expect("[admin] present");
    assert!(admin.address().expect("an address").ip().is_loopback());
    let config = parse(&format!("{MINIMAL}\n[admin]\nlisten = \"0.0.0.0:9000\"\n")).expect("valid");
    assert_eq!(config.admin.expect("[admin]").listen, "0.0.0.0:9000");
}

#[test]
fn a_bad_admin_address_is_reported_with_its_key() {
    let problems =
        parse(&format!("{MINIMAL}\n[admin]\nlisten = \"localhost\"\n")).expect_err("no port");
    assert!(
        problems
            .iter()
            .any(|p| p.starts_with("admin.listen: `localhost`")),
        "{problems:?}"
    );
    let problems = parse(&format!("{MINIMAL}\n[admin]\nport = 9598\n")).expect_err("unknown key");
    assert!(problems.iter().any(|p| p.contains("port")), "{problems:?}");
}

#[test]
fn the_api_reads_the_first_fitting_sinks_unless_told_which() {
    let config = parse(
        r#"
[sources.sim]
type = "simulator"

[sinks.out]
type = "stdout"
streams = ["logs"]

[sinks.db]
type = "mysql"
url = "mysql://root@127.0.0.1:3306/sluice"
streams = ["app_rollups", "app_events"]

[sinks.local]
type = "sqlite"
path = "a.db"

[api]
auth = "none"
"#,
    )
    .expect("valid");
    // `db` sorts before `local`; stdout answers nothing.
    assert_eq!(config.api_store_names(), (Some("db"), Some("local")));
    let (metrics, logs) = config.api_stores();
    assert!(matches!(metrics, Some(SqlStoreConfig::Mysql(_))));
    assert!(matches!(logs, Some(LogStoreConfig::Sqlite(_))));
    assert_eq!(
        config.api.as_ref().map(|api| api.listen.as_str()),
        Some("127.0.0.1:8080")
    );
}

#[test]
fn rollup_windows_default_to_the_minute_and_take_extra_widths() {
    let config = parse(MINIMAL).expect("valid");
    assert_eq!(config.pipeline.window_widths(), [60]);
    let config = parse(&MINIMAL.replace(
        "allowed_lateness = \"60s\"",
        "allowed_lateness = \"60s\"\nwindows = [\"1h\", \"1m\", \"5m\", \"1d\"]",
    ))
    .expect("valid");
    assert_eq!(config.pipeline.window_widths(), [60, 3600, 300, 86_400]);
    let topology = crate::topology::describe(&config);
    assert!(
        topology.contains("rollup windows: 1m, 1h, 5m, 1d (tables *_metric_rollup, *_metric_rollup_1h, *_metric_rollup_5m, *_metric_rollup_1d)"),
        "{topology}"
    );
}

#[test]
fn api_problems_name_their_keys() {
    let problems = parse(
        r#"
[sources.sim]
type = "simulator"

[sinks.out]
type = "stdout"
streams = ["logs"]

[sinks.metrics]
type = "sqlite"
path = "m.db"
streams = ["app_rollups"]

[api]
listen = "localhost"
auth = "uaa"
store = "out"
log_store = "metrics"
"#,
    )
    .expect_err("invalid");
    let expected = [
        "api.listen: `localhost` is not an IP address and port",
        "api.uaa_url: is required when auth = \"uaa\"",
        "api.cc_url: is required when auth = \"uaa\"",
        "api.store: sink `out` is of type `stdout`",
        "api.log_store: sink `metrics` does not take the `logs` stream",
    ];
    for needle in expected {
        assert!(
            problems.iter().any(|p| p.contains(needle)),
            "no problem says `{needle}`: {problems:?}"
        );
    }
    let missing =
        parse("[sources.sim]\ntype = \"simulator\"\n[api]\nauth = \"none\"\nstore = \"nope\"\n")
            .expect_err("invalid");
    assert!(
        missing
            .iter()
            .any(|p| p == "api.store: no sink is named `nope`"),
        "{missing:?}"
    );
}

#[test]
fn bad_rollup_windows_are_each_reported_with_the_key() {
    let problems = parse(&MINIMAL.replace(
        "allowed_lateness = \"60s\"",
        "allowed_lateness = \"60s\"\nwindows = [\"90s\", \"7m\", \"1h\", \"60m\", \"soon\", \"0s\", \"2d\"]",
    ))
    .expect_err("bad windows");
    let expected = [
        "pipeline.windows: `90s` is not a whole number of minutes",
        "pipeline.windows: `7m` does not divide a day",
        "pipeline.windows: `60m` is listed twice (as `1h` before)",
        "pipeline.windows: `soon` is not a duration",
        "pipeline.windows: `0s` is not a whole number of minutes",
        "pipeline.windows: `2d` does not divide a day",
        "pipeline.windows: must include \"1m\"",
    ];
    for start in expected {
        assert!(
            problems.iter().any(|p| p.starts_with(start)),
            "no `{start}` in {problems:#?}"
        );
    }
    assert_eq!(problems.len(), expected.len(), "{problems:#?}");
    let problems = parse(&MINIMAL.replace(
        "allowed_lateness = \"60s\"",
        "allowed_lateness = \"60s\"\nwindows = \"1h\"",
    ))
    .expect_err("not a list");
    assert!(problems[0].contains("windows"), "{problems:?}");
}

#[test]
fn a_prometheus_sink_takes_the_rollups_and_its_problems_name_their_keys() {
    let config = Config::parse(
        r#"
[sources.replay]
type = "file"
path = "capture.bin.gz"

[sinks.metrics]
type = "prometheus"
url = "https://mimir.example.com/api/v1/push"
auth = { type = "bearer", token = "${MIMIR_TOKEN}" }
headers = { "X-Scope-OrgID" = "cf-prod" }
"#,
        |name| (name == "MIMIR_TOKEN").then(|| "hunter2".to_owned()),
    )
    .expect("valid");
    let sink = &config.sinks["metrics"];
    assert_eq!(sink.type_name(), "prometheus");
    assert_eq!(
        sink.streams(),
        [StreamName::AppRollups, StreamName::PlatformRollups]
    );
    let shown = format!("{} {:?}", sink.describe(), sink);
    assert!(
        shown.contains("remote write to mimir.example.com:443/api/v1/push"),
        "{shown}"
    );
    assert!(!shown.contains("hunter2"), "{shown}");

    let problems = parse(
        r#"
[sources.replay]
type = "file"
path = "capture.bin.gz"

[sinks.metrics]
type = "prometheus"
url = "http://127.0.0.1:9090/api/v1/write"
streams = ["app_rollups", "logs"]
metric_prefix = "cf-"
"#,
    )
    .expect_err("problems");
    assert_eq!(
        problems,
        [
            "sinks.metrics.streams: `logs` cannot be written to Prometheus: only `app_rollups` and `platform_rollups` can",
            "sinks.metrics.metric_prefix: `cf-` cannot start a metric name: letters, digits, `_` and `:`, not starting with a digit",
        ]
    );

    // Two sinks writing one dead-letter file.
    let problems = parse(
        r#"
[sources.replay]
type = "file"
path = "capture.bin.gz"

[sinks.a]
type = "prometheus"
url = "http://127.0.0.1:9090/api/v1/write"
dead_letter = "dead.ndjson"

[sinks.b]
type = "prometheus"
url = "http://127.0.0.1:9091/api/v1/write"
dead_letter = "dead.ndjson"
"#,
    )
    .expect_err("problems");
    assert_eq!(
        problems,
        [
            "sinks.b.dead_letter: `dead.ndjson` is already the dead-letter file of sinks.a.dead_letter"
        ]
    );
}

#[test]
fn a_cluster_section_parses_and_its_problems_are_named() {
    let text = format!(
        "{MINIMAL}\n[cluster]\naddresses = [\"10.0.0.1:7100\", \"10.0.0.2:7100\"]\nprocess = 1\n"
    );
    let config = parse(&text).expect("valid");
    let cluster = config.cluster.expect("a cluster");
    assert_eq!(cluster.process, Some(1));
    assert_eq!(cluster.startup_timeout, Duration::from_secs(60));

    let text = format!(
        "{}\n[cluster]\naddresses = [\"10.0.0.1\"]\nprocess = 3\n",
        MINIMAL.replace("workers = 2", "workers = 2\nstate_dir = \"state\"")
    );
    let problems = parse(&text).expect_err("invalid");
    assert!(
        problems
            .iter()
            .any(|p| p.starts_with("cluster.addresses[0]: `10.0.0.1` is not host:port")),
        "{problems:?}"
    );
    assert!(
        problems
            .iter()
            .any(|p| p.starts_with("cluster.process: 3 is not an index")),
        "{problems:?}"
    );
    // A cluster keeps state like one process (SPEC §9 across §12): no problem of its own.
    assert!(
        !problems.iter().any(|p| p.starts_with("pipeline.state_dir")),
        "{problems:?}"
    );
}

/// MINIMAL with `extra` appended.
fn with(extra: &str) -> Result<Config, Vec<String>> {
    parse(&format!("{MINIMAL}\n{extra}"))
}

fn problems_of(extra: &str) -> Vec<String> {
    with(extra).expect_err("invalid")
}

#[test]
fn a_variable_cannot_inject_toml_and_defaults_nest() {
    let text = format!(
        "{MINIMAL}\n# ${{NOT_SET_ANYWHERE}} is a comment\n[sinks.db]\ntype = \"sqlite\"\npath = \"${{EVIL}}\"\n"
    );
    let config = Config::parse(&text, |name| match name {
        "EVIL" => Some("x.db\"\n[sinks.more]\ntype = \"stdout\"\n#".to_owned()),
        _ => None,
    })
    .expect("valid: the comment is not interpolated");
    assert_eq!(config.sinks.len(), 2, "the value added a sink");
    let SinkConfig::Sqlite(db) = &config.sinks["db"] else {
        panic!("db is sqlite");
    };
    assert!(
        db.path
            .to_string_lossy()
            .starts_with("x.db\"\n[sinks.more]")
    );

    let text =
        format!("{MINIMAL}\n[sinks.db]\ntype = \"sqlite\"\npath = \"${{DATA:-${{HOME}}}}/s.db\"\n");
    let config =
        Config::parse(&text, |name| (name == "HOME").then(|| "/home/x".to_owned())).expect("valid");
    let SinkConfig::Sqlite(db) = &config.sinks["db"] else {
        panic!("db is sqlite");
    };
    assert_eq!(db.path, std::path::Path::new("/home/x/s.db"));
}

#[test]
fn validate_rejects_sqlite_paths_that_lose_data() {
    for path in ["", ":memory:", "file::memory:?cache=shared"] {
        let problems = problems_of(&format!(
            "[sinks.db]\ntype = \"sqlite\"\npath = \"{path}\"\n"
        ));
        assert!(
            problems.iter().any(|p| p.starts_with("sinks.db.path:")),
            "{path}: {problems:?}"
        );
    }
}

#[test]
fn validate_rejects_api_and_admin_on_one_port() {
    for (admin, api) in [
        ("127.0.0.1:9100", "127.0.0.1:9100"),
        ("0.0.0.0:9100", "127.0.0.1:9100"),
        ("localhost:9100", "127.0.0.1:9100"),
    ] {
        let problems = problems_of(&format!(
            "[admin]\nlisten = \"{admin}\"\n[api]\nlisten = \"{api}\"\nauth = \"none\"\n"
        ));
        assert!(
            problems.iter().any(|p| p.starts_with("api.listen:")),
            "{admin} / {api}: {problems:?}"
        );
    }
    assert!(!listens_overlap("127.0.0.1:9100", "127.0.0.1:9101"));
    assert!(!listens_overlap("127.0.0.1:0", "127.0.0.1:0"));
    assert!(!listens_overlap("10.0.0.1:80", "10.0.0.2:80"));
}

#[test]
fn validate_rejects_absurd_workers_and_zero_sized_buffers() {
    let text = MINIMAL.replace("workers = 2", "workers = 100000");
    let problems = parse(&text).expect_err("too many workers");
    assert!(
        problems[0].starts_with("pipeline.workers: 100000 is more than 1024"),
        "{problems:?}"
    );

    for (buffer, key) in [
        ("{ type = \"memory\", max_events = 0 }", "max_events"),
        ("{ type = \"memory\", max_bytes = \"0B\" }", "max_bytes"),
        (
            "{ type = \"disk\", path = \"b\", max_size = \"0B\" }",
            "max_size",
        ),
        (
            "{ type = \"disk\", path = \"b\", segment_size = \"0B\" }",
            "segment_size",
        ),
    ] {
        let problems = problems_of(&format!(
            "[sinks.out]\ntype = \"stdout\"\nbuffer = {buffer}\n"
        ));
        assert!(
            problems.contains(&format!(
                "sinks.out.buffer.{key}: {}",
                match key {
                    "max_events" => "must be at least 1",
                    "max_bytes" | "segment_size" => "must be at least 1KiB",
                    _ => "must be at least 1MiB",
                }
            )),
            "{buffer}: {problems:?}"
        );
    }
    let problems =
        parse(&MINIMAL.replace("workers = 2", "workers = 2\nchannel_max_bytes = \"0B\""))
            .expect_err("a zero-byte channel");
    assert!(
        problems
            .iter()
            .any(|p| p.starts_with("pipeline.channel_max_bytes:")),
        "{problems:?}"
    );
}

#[test]
fn the_metadata_section_parses_with_its_defaults_and_a_secret_from_the_environment() {
    let config = parse(&format!(
        r#"{MINIMAL}
[metadata]
cc_url = "https://api.sys.example.com"
uaa_url = "https://uaa.sys.example.com"
client_id = "sluice-cc"
client_secret = "${{UAA_CLIENT_SECRET}}"
"#
    ))
    .expect("valid");
    let metadata = config.metadata.expect("[metadata]");
    assert_eq!(metadata.client_secret, "s3cr3t");
    assert_eq!(metadata.refresh, Duration::from_secs(300));
    assert_eq!(metadata.startup_timeout, Duration::from_secs(30));
    assert!(!metadata.skip_tls_verify);
    assert!(!format!("{metadata:?}").contains("s3cr3t"));
}

#[test]
fn every_metadata_problem_is_named_by_its_key() {
    let problems = parse(&format!(
        r#"{MINIMAL}
[metadata]
cc_url = "api.sys.example.com"
uaa_url = "https://uaa.sys.example.com"
client_id = ""
client_secret = "x"
refresh = "100ms"
"#
    ))
    .expect_err("invalid");
    assert_eq!(problems.len(), 3, "{problems:?}");
    assert!(problems[0].starts_with("metadata.cc_url: 'api.sys.example.com'"));
    assert!(problems[1].starts_with("metadata.client_id: is empty"));
    assert!(problems[2].starts_with("metadata.refresh: must be at least 1s"));
    let unknown = parse(&format!(
        "{MINIMAL}\n[metadata]\ncc_url = \"https://a\"\nuaa_url = \"https://b\"\nclient_id = \"c\"\nclient_secret = \"d\"\nrefesh = \"1m\"\n"
    ))
    .expect_err("unknown key");
    assert!(unknown[0].contains("refesh"), "{unknown:?}");
}

#[test]
fn changing_the_metadata_section_waits_for_the_next_start() {
    let with = format!(
        "{MINIMAL}\n[metadata]\ncc_url = \"https://a\"\nuaa_url = \"https://b\"\nclient_id = \"c\"\nclient_secret = \"d\"\n"
    );
    let old = parse(MINIMAL).expect("valid");
    let new = parse(&with).expect("valid");
    assert_eq!(ConfigDiff::between(&old, &new).needs_restart, ["metadata"]);
    let faster = parse(&format!("{with}refresh = \"1m\"\n")).expect("valid");
    assert_eq!(
        ConfigDiff::between(&new, &faster).needs_restart,
        ["metadata"]
    );
    assert!(ConfigDiff::between(&new, &new).is_empty());
}
