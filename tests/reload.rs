//! A running `sluice run --watch` driven through live reloads (SIGHUP): an Elasticsearch sink
//! added, the SQLite sink removed, a filter narrowed, the lateness changed, a bad file fed.
//! After each step the stores hold exactly the expected records: unchanged sources are not
//! re-read (nothing twice), added ones are (nothing lost), removed sinks keep what they had.

use sluice_test_support::search;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use search::{SearchServer, assert_same_ids};
use sluice_model::Event;
use sluice_model::event::{Payload, log_id};
use sluice_test_support::*;

fn log_ids(events: &[Event], app: Option<&str>) -> BTreeSet<String> {
    events
        .iter()
        .filter_map(|e| match &e.payload {
            Payload::Log(log) if app.is_none_or(|a| *log.app_id == *a) => Some(log_id(log)),
            _ => None,
        })
        .collect()
}

fn first_app(events: &[Event]) -> String {
    events
        .iter()
        .find_map(|e| match &e.payload {
            Payload::Log(log) => Some(log.app_id.to_string()),
            _ => None,
        })
        .expect("a log")
}

struct Running {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Running {
    fn start(config: &Path) -> Running {
        let mut child = sluice()
            .args([
                "run",
                "--watch",
                "--no-status",
                "--config",
                config.to_str().expect("utf-8"),
            ])
            .env("SLUICE_LOG", "info")
            .stderr(Stdio::piped())
            .spawn()
            .expect("sluice starts");
        let stderr = child.stderr.take().expect("stderr");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().expect("lines").push(line);
            }
        });
        Running { child, lines }
    }

    fn signal(&self, name: &str) {
        let status = std::process::Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success());
    }

    fn log(&self) -> String {
        self.lines.lock().expect("lines").join("\n")
    }

    async fn wait_for_line(&self, text: &str, occurrences: usize) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let seen = self
                .lines
                .lock()
                .expect("lines")
                .iter()
                .filter(|l| l.contains(text))
                .count();
            if seen >= occurrences {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no `{text}` (×{occurrences}) in the log:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Polls `count` until it reaches `expected`, failing after a minute.
async fn wait_for_count<F, Fut>(what: &str, expected: u64, mut count: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = u64>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let now = count().await;
        if now == expected {
            return;
        }
        assert!(
            now < expected,
            "{what}: {now} records, more than the {expected} expected"
        );
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: {now} of {expected} records after 60 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

struct Files {
    dir: PathBuf,
    db: PathBuf,
    url: String,
}

impl Files {
    fn capture(&self, name: &str, events: &[Event]) -> PathBuf {
        let path = self.dir.join(format!("{name}.bin"));
        write_capture(&path, events);
        path
    }

    fn source(name: &str, capture: &Path) -> String {
        format!("[sources.{name}]\ntype = \"file\"\npath = {capture:?}\n\n")
    }

    fn sqlite(&self) -> String {
        format!("[sinks.local]\ntype = \"sqlite\"\npath = {:?}\n\n", self.db)
    }

    fn search(&self) -> String {
        self.search_flushing("50ms")
    }

    fn search_flushing(&self, flush_interval: &str) -> String {
        format!(
            "[sinks.search]\ntype = \"elasticsearch\"\nurl = \"{}\"\nstreams = [\"logs\"]\nflush_interval = \"{flush_interval}\"\ndead_letter = {:?}\n\n",
            self.url,
            self.dir.join("dead.ndjson")
        )
    }

    fn write(&self, text: &str) -> PathBuf {
        let path = self.dir.join("sluice.toml");
        // Written whole and renamed, as editors and config managers do.
        let staging = self.dir.join("sluice.toml.new");
        std::fs::write(&staging, text).expect("config written");
        std::fs::rename(&staging, &path).expect("config renamed");
        path
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reloads_change_the_topology_without_losing_or_repeating_a_record() {
    let server = SearchServer::start();
    let dir = tempfile::tempdir().expect("temp dir");
    let files = Files {
        dir: dir.path().to_path_buf(),
        db: dir.path().join("sluice.db"),
        url: server.url.clone(),
    };
    let (a, b, c, d, e) = (
        simulated_events(1, 10, 1500, 0.0),
        simulated_events(2, 10, 1500, 0.0),
        simulated_events(3, 10, 1500, 0.0),
        simulated_events(4, 10, 1500, 0.0),
        simulated_events(5, 10, 1500, 0.0),
    );
    let (cap_a, cap_b, cap_c, cap_d, cap_e) = (
        files.capture("a", &a),
        files.capture("b", &b),
        files.capture("c", &c),
        files.capture("d", &d),
        files.capture("e", &e),
    );
    let pipeline = |lateness: &str| format!("[pipeline]\nallowed_lateness = \"{lateness}\"\n\n");

    // 0. Replay A into SQLite.
    let config = files.write(&format!(
        "{}{}{}",
        pipeline("60s"),
        Files::source("a", &cap_a),
        files.sqlite()
    ));
    let mut run = Running::start(&config);
    let sqlite_logs = |ids: &BTreeSet<String>| ids.len() as u64;
    let db = files.db.clone();
    let count_sqlite = move || {
        let db = db.clone();
        async move {
            tokio::task::spawn_blocking(move || count_rows(&db, "log_message") as u64)
                .await
                .expect("counted")
        }
    };
    let in_a = log_ids(&a, None);
    wait_for_count("sqlite after A", sqlite_logs(&in_a), count_sqlite.clone()).await;

    // 1. Add an Elasticsearch sink and a source B; A is unchanged and must not be re-read.
    let filter_all = "[filters.apps]\naction = \"drop\"\nmessage = \"^never matches$\"\n\n";
    files.write(&format!(
        "{}{}{}{}{}{filter_all}",
        pipeline("60s"),
        Files::source("a", &cap_a),
        Files::source("b", &cap_b),
        files.sqlite(),
        files.search()
    ));
    run.signal("HUP");
    let in_b = log_ids(&b, None);
    let a_and_b: BTreeSet<String> = in_a.union(&in_b).cloned().collect();
    wait_for_count("sqlite after B", a_and_b.len() as u64, count_sqlite.clone()).await;
    wait_for_count("search after B", in_b.len() as u64, || {
        server.count("logs-*")
    })
    .await;
    assert_same_ids(
        &server.ids("logs-*").await,
        &in_b.iter().cloned().collect::<Vec<_>>(),
    );

    // 2. Remove the SQLite sink, narrow the filter to one app of C's, add C.
    let app = first_app(&c);
    let narrow = format!(
        "[filters.apps]\nsources = [\"c\"]\napp_ids = [\"{app}\"]\nevent_types = [\"log_message\"]\n\n"
    );
    files.write(&format!(
        "{}{}{}{}{}{narrow}",
        pipeline("60s"),
        Files::source("a", &cap_a),
        Files::source("b", &cap_b),
        Files::source("c", &cap_c),
        files.search()
    ));
    run.signal("HUP");
    let in_c = log_ids(&c, Some(&app));
    assert!(in_c.len() < log_ids(&c, None).len(), "the filter narrows C");
    let mut expected: BTreeSet<String> = in_b.union(&in_c).cloned().collect();
    wait_for_count("search after C", expected.len() as u64, || {
        server.count("logs-*")
    })
    .await;
    // The removed sink wrote what it had and closed.
    run.wait_for_line("The sink's previous instance wrote everything", 1)
        .await;

    // 3. Change the lateness and the Elasticsearch sink's config (it is replaced), add D.
    files.write(&format!(
        "{}{}{}{}{}{}{narrow}",
        pipeline("10m"),
        Files::source("a", &cap_a),
        Files::source("b", &cap_b),
        Files::source("c", &cap_c),
        Files::source("d", &cap_d),
        files.search_flushing("20ms")
    ));
    run.signal("HUP");
    run.wait_for_line("Allowed lateness changed.", 1).await;
    run.wait_for_line("Sink restarted with its new config.", 1)
        .await;
    expected.extend(log_ids(&d, None));
    wait_for_count("search after D", expected.len() as u64, || {
        server.count("logs-*")
    })
    .await;

    // 4. A file with problems is rejected; the topology carries on and takes the next one.
    files.write("[sources.broken]\ntype = \"nonsense\"\n");
    run.signal("HUP");
    run.wait_for_line("The new config is rejected", 1).await;
    files.write(&format!(
        "{}{}{}{}{}{}{}{narrow}",
        pipeline("10m"),
        Files::source("a", &cap_a),
        Files::source("b", &cap_b),
        Files::source("c", &cap_c),
        Files::source("d", &cap_d),
        Files::source("e", &cap_e),
        files.search_flushing("20ms")
    ));
    run.signal("HUP");
    expected.extend(log_ids(&e, None));
    wait_for_count("search after E", expected.len() as u64, || {
        server.count("logs-*")
    })
    .await;

    // Stop: everything written, exit 0.
    run.signal("INT");
    let status = tokio::task::spawn_blocking(move || run.child.wait())
        .await
        .expect("joined")
        .expect("exited");
    assert!(status.success(), "sluice exited with {status}");
    assert_same_ids(
        &server.ids("logs-*").await,
        &expected.iter().cloned().collect::<Vec<_>>(),
    );
    // The removed SQLite sink kept exactly what it had: A and B, nothing of C, D or E.
    let db = files.db.clone();
    let stored = tokio::task::spawn_blocking(move || count_rows(&db, "log_message"))
        .await
        .expect("counted");
    assert_eq!(stored as usize, a_and_b.len());
    assert!(!files.dir.join("dead.ndjson").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn app_event_rules_and_the_flush_interval_change_in_place() {
    use sluice_test_support::build::log;
    const MINUTE: i64 = 60_000_000_000;
    let dir = tempfile::tempdir().expect("temp dir");
    let files = Files {
        dir: dir.path().to_path_buf(),
        db: dir.path().join("sluice.db"),
        url: String::new(),
    };
    let app = "f47ac10b-58cc-4372-a567-0e02b2c3d479";
    let t0 = 28_503_900 * MINUTE;
    // Each capture has a line for each rule set; only the rules in force may match.
    let lines = |at: i64| vec![log(app, at, "deployed v1"), log(app, at + 1, "released v1")];
    let (cap_a, cap_b) = (
        files.capture("a", &lines(t0)),
        files.capture("b", &lines(t0 + 1_000_000)),
    );
    let config = |flush: &str, event: &str, message: &str, sources: &str| {
        format!(
            "[pipeline]\nflush_interval = \"{flush}\"\n\n[[pipeline.app_events]]\nevent = \"{event}\"\nsource_type = \"APP\"\nmessage = \"{message}\"\n\n{sources}{}",
            files.sqlite()
        )
    };
    let path = files.write(&config(
        "1s",
        "deploy",
        "deployed",
        &Files::source("a", &cap_a),
    ));
    let run = Running::start(&path);
    let db = files.db.clone();
    let count_events = move || {
        let db = db.clone();
        async move {
            tokio::task::spawn_blocking(move || count_rows(&db, "app_event") as u64)
                .await
                .expect("counted")
        }
    };
    wait_for_count("app events of A", 1, count_events.clone()).await;

    files.write(&config(
        "250ms",
        "release",
        "released",
        &format!(
            "{}{}",
            Files::source("a", &cap_a),
            Files::source("b", &cap_b)
        ),
    ));
    run.signal("HUP");
    run.wait_for_line("App-event rules changed.", 1).await;
    run.wait_for_line("Flush interval changed.", 1).await;
    wait_for_count("app events of A and B", 2, count_events).await;

    run.signal("INT");
    let (status, run) = tokio::task::spawn_blocking(move || {
        let mut run = run;
        (run.child.wait().expect("exited"), run)
    })
    .await
    .expect("joined");
    assert!(status.success(), "sluice exited with {status}");
    assert!(
        !run.log().contains("takes effect at the next start"),
        "{}",
        run.log()
    );
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}?mode=ro", files.db.display()))
        .await
        .expect("store opens");
    let events: Vec<(i64, String)> = sqlx::query_as("SELECT ts, event FROM app_event ORDER BY ts")
        .fetch_all(&pool)
        .await
        .expect("app events");
    // A was classified by the first rules, B (read after the reload) by the second.
    assert_eq!(
        events,
        [
            (t0, "deploy".to_owned()),
            (t0 + 1_000_001, "release".to_owned())
        ]
    );
    pool.close().await;
}
