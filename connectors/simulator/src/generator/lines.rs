//! The text of simulated log lines, in the shapes a foundation really writes them.

use std::fmt::Write;

use rand::Rng;
use rand::rngs::StdRng;
use sluice_model::event::MessageType;

use super::topology::Flavor;

/// Paths requests go to; `{n}` is a number, `{h}` a content hash.
pub(super) const PATHS: [&str; 10] = [
    "/",
    "/health",
    "/login",
    "/api/v1/orders",
    "/api/v1/orders/{n}",
    "/cart/{n}/items",
    "/static/js/app.{h}.js",
    "/static/css/main.{h}.css",
    "/favicon.ico",
    "/v2/catalog/{n}",
];

pub(super) const USER_AGENTS: [&str; 7] = [
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/122.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_3) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.3 Safari/605.1.15",
    "curl/8.4.0",
    "Go-http-client/1.1",
    "python-requests/2.31.0",
    "okhttp/4.12.0",
    "Apache-HttpClient/4.5.14 (Java/17.0.10)",
];

/// A request path with its placeholders filled in.
pub(super) fn path(rng: &mut StdRng) -> String {
    let template = PATHS[rng.random_range(0..PATHS.len())];
    if template.contains("{n}") {
        template.replace("{n}", &rng.random_range(1000..99_999).to_string())
    } else if template.contains("{h}") {
        template.replace("{h}", &format!("{:08x}", rng.random::<u32>()))
    } else {
        template.to_owned()
    }
}

/// RFC 3339 with nanoseconds, as gorouter and JSON loggers write times.
pub(super) use sluice_common::time::rfc3339;

/// One line an app writes on its own (not its access log), and on which stream.
pub(super) fn app_line(
    rng: &mut StdRng,
    flavor: Flavor,
    now_ns: i64,
    uptime_s: u64,
) -> (String, MessageType) {
    // About one line in six goes to stderr, so ERR is ~10 % of all log lines.
    if rng.random_range(0..6) == 0 {
        return (error_line(rng, flavor, now_ns), MessageType::Err);
    }
    let n = rng.random_range(1000..99_999);
    let ms = rng.random_range(1..2500);
    let line = match (flavor, rng.random_range(0..4)) {
        (_, 0) => format!("Heartbeat ok (uptime {uptime_s}s)"),
        (Flavor::Java, 1) => format!(
            "HikariPool-1 - Pool stats (total=10, active={}, idle={}, waiting=0)",
            rng.random_range(0..10),
            rng.random_range(0..4)
        ),
        (Flavor::Java, 2) => format!("GC pause (G1 Evacuation Pause) {ms}ms"),
        (Flavor::Java, _) => format!(
            "{} INFO 7 --- [nio-8080-exec-{}] c.e.orders.OrderController : Order {n} created in {ms} ms",
            rfc3339(now_ns),
            rng.random_range(1..10)
        ),
        (Flavor::Json, 1) => format!(
            r#"{{"level":"info","ts":"{}","msg":"job finished","job_id":{n},"duration_ms":{ms}}}"#,
            rfc3339(now_ns)
        ),
        (Flavor::Json, _) => format!(
            r#"{{"level":"info","ts":"{}","msg":"request handled","method":"GET","path":"/api/v1/orders/{n}","status":200,"duration_ms":{}}}"#,
            rfc3339(now_ns),
            ms % 200
        ),
        (Flavor::Plain, 1) => format!("Processed order {n} in {ms} ms"),
        (Flavor::Plain, 2) => format!("Consumed message {n} from queue orders.created"),
        (Flavor::Plain, _) => format!("Bestellung {n} verarbeitet für Kunde Müller ✓"),
    };
    (line, MessageType::Out)
}

fn error_line(rng: &mut StdRng, flavor: Flavor, now_ns: i64) -> String {
    match (flavor, rng.random_range(0..2)) {
        (Flavor::Java, 0) => {
            r#"java.lang.NullPointerException: Cannot invoke "String.length()" because "name" is null"#
                .to_owned()
        }
        (Flavor::Java, _) => format!(
            "\tat com.example.orders.OrderService.place(OrderService.java:{})",
            rng.random_range(20..400)
        ),
        (Flavor::Json, 0) => format!(
            r#"{{"level":"error","ts":"{}","msg":"upstream timeout","upstream":"inventory.apps.internal:8080","duration_ms":{}}}"#,
            rfc3339(now_ns),
            rng.random_range(5000..30_000)
        ),
        (Flavor::Json, _) => format!(
            r#"{{"level":"warn","ts":"{}","msg":"slow query","query":"SELECT * FROM orders WHERE customer_id = $1","duration_ms":{}}}"#,
            rfc3339(now_ns),
            rng.random_range(500..5000)
        ),
        (Flavor::Plain, 0) => format!(
            "ERROR connection reset by peer (retry {}/5)",
            rng.random_range(1..6)
        ),
        (Flavor::Plain, _) => "Traceback (most recent call last):".to_owned(),
    }
}

/// What a Cloud Controller or staging line says, and whether SPEC §4 makes it an app event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Lifecycle {
    Crash,
    Start,
    Stop,
    Scale,
    Staged,
    /// `API` lines that are no app event.
    Created,
    /// `STG` lines before "Staging complete".
    Staging,
    Uploading,
}

impl Lifecycle {
    pub(super) const ALL: [Lifecycle; 8] = [
        Lifecycle::Crash,
        Lifecycle::Start,
        Lifecycle::Stop,
        Lifecycle::Scale,
        Lifecycle::Staged,
        Lifecycle::Created,
        Lifecycle::Staging,
        Lifecycle::Uploading,
    ];

    /// `API` (Cloud Controller) or `STG` (the staging task on a cell).
    pub(super) fn source_type(self) -> &'static str {
        match self {
            Lifecycle::Staged | Lifecycle::Staging | Lifecycle::Uploading => "STG",
            _ => "API",
        }
    }
}

/// What a lifecycle line needs to name.
pub(super) struct LifecycleFacts<'a> {
    pub(super) app_id: &'a str,
    pub(super) instance_id: &'a str,
    pub(super) instance_index: i32,
    pub(super) cell_guid: &'a str,
    pub(super) instances: usize,
    pub(super) now_ns: i64,
}

/// The line, written the way the Cloud Controller writes Ruby hashes (`"key"=>value`), which
/// is what the default rules of SPEC §4 match.
pub(super) fn lifecycle_line(rng: &mut StdRng, kind: Lifecycle, facts: &LifecycleFacts) -> String {
    let app = facts.app_id;
    match kind {
        Lifecycle::Crash => {
            let mut line = format!(
                r#"App instance exited with guid {app} payload: {{"instance"=>"{}", "index"=>{}, "cell_id"=>"{}", "reason"=>"CRASHED", "#,
                facts.instance_id, facts.instance_index, facts.cell_guid
            );
            let _ = write!(
                line,
                r#""exit_description"=>"APP/PROC/WEB: Exited with status 137 (out of memory)", "crash_count"=>{}, "crash_timestamp"=>{}}}"#,
                rng.random_range(1..4),
                facts.now_ns
            );
            line
        }
        Lifecycle::Start => format!(r#"Updated app with guid {app} ({{"state"=>"STARTED"}})"#),
        Lifecycle::Stop => format!(r#"Updated app with guid {app} ({{"state"=>"STOPPED"}})"#),
        Lifecycle::Scale => format!(
            r#"Updated app with guid {app} ({{"instances"=>{}}})"#,
            facts.instances
        ),
        Lifecycle::Staged => "Staging complete".to_owned(),
        Lifecycle::Created => format!(r#"Created app with guid {app}"#),
        Lifecycle::Staging => "Downloading binary_buildpack...".to_owned(),
        Lifecycle::Uploading => format!(
            "Uploaded droplet ({}.{}M)",
            rng.random_range(20..200),
            rng.random_range(0..10)
        ),
    }
}
