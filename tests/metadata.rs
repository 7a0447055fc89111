//! `[metadata]` end to end (SPEC §11): `sluice run` lists a Cloud Controller stand-in served
//! by this test (`sluice_test_support::cloud_controller`: UAA token, `/v3/apps` paged 4 apps a page through `pagination.next`, with
//! `included` spaces and orgs), and the `app` table follows its listings: after every refresh
//! the table equals the last listing, and the rows written equal the apps that changed. Also:
//! a `429` and a `503` are waited out and a revoked token replaced; an unreachable Cloud
//! Controller is one error and the run goes on; a replay's first minute is grouped by the
//! Cloud Controller's spaces because the first listing was awaited.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use sluice_test_support::cloud_controller::{App, StandIn};
use sluice_test_support::simulate;
use sluice_test_support::*;

/// Generous: the suite shares 2 cores.
const PATIENCE: Duration = Duration::from_secs(60);

/// The spaces of the stand-in's foundation: (id, name, org id, org name).
const SPACES: [(&str, &str, &str, &str); 3] = [
    ("space-dev", "dev", "org-acme", "acme"),
    ("space-prod", "prod", "org-acme", "acme"),
    ("space-lab", "lab", "org-initech", "initech"),
];

fn app(n: u32, name: &str, space: usize) -> App {
    let (space_id, space_name, org_id, org_name) = SPACES[space];
    App {
        guid: format!("00000000-0000-4000-8000-{n:012}"),
        name: name.to_owned(),
        space_id: space_id.to_owned(),
        space_name: space_name.to_owned(),
        org_id: org_id.to_owned(),
        org_name: org_name.to_owned(),
    }
}

/// The `app` table, sorted by app id (empty while the store is not there yet).
fn app_table(db: &Path) -> Vec<App> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let Ok(pool) =
            sqlx::SqlitePool::connect(&format!("sqlite://{}?mode=ro", db.display())).await
        else {
            return Vec::new();
        };
        let rows: Vec<(String, String, String, String, String, String)> = sqlx::query_as(
            "SELECT app_id, name, space_id, space_name, org_id, org_name FROM app ORDER BY app_id",
        )
        .fetch_all(&pool)
        .await
        .unwrap_or_default();
        pool.close().await;
        rows.into_iter()
            .map(|(guid, name, space_id, space_name, org_id, org_name)| App {
                guid,
                name,
                space_id,
                space_name,
                org_id,
                org_name,
            })
            .collect()
    })
}

/// The apps whose entry differs between two listings (changed, added or removed).
fn changed(before: &[App], after: &[App]) -> u64 {
    let index = |apps: &[App]| {
        apps.iter()
            .map(|a| (a.guid.clone(), a.clone()))
            .collect::<BTreeMap<_, _>>()
    };
    let (before, after) = (index(before), index(after));
    let mut guids: Vec<&String> = before.keys().chain(after.keys()).collect();
    guids.sort();
    guids.dedup();
    guids
        .into_iter()
        .filter(|guid| before.get(*guid) != after.get(*guid))
        .count() as u64
}

/// Polls `condition` until it holds, failing with `what` after [`PATIENCE`] or if `run`
/// exits.
fn wait_until(run: &mut Reaper, what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !condition() {
        assert!(Instant::now() < deadline, "{what}: not within {PATIENCE:?}");
        if let Some(status) = run.0.try_wait().expect("child status") {
            panic!("sluice exited early ({status}) while waiting for: {what}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn metadata_section(cc_url: &str, refresh: &str, startup_timeout: &str) -> String {
    format!(
        r#"
[metadata]
cc_url = "{cc_url}"
uaa_url = "{cc_url}"
client_id = "sluice"
client_secret = "${{TEST_CC_SECRET}}"
refresh = "{refresh}"
startup_timeout = "{startup_timeout}"
"#
    )
}

/// `sluice run` of `config`, logging at info to a piped stderr.
fn start_run(config: &Path) -> Reaper {
    Reaper(
        sluice()
            .args([
                "run",
                "--no-status",
                "--config",
                config.to_str().expect("utf-8"),
            ])
            .env("SLUICE_LOG", "info")
            .env("TEST_CC_SECRET", "s3cr3t")
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("run starts"),
    )
}

/// A live run (the simulator on the wall clock, untagged, so the Cloud Controller is the
/// only source of names) into SQLite, with the admin endpoint, listing `cc` every second.
fn live_config(dir: &Path, cc: &StandIn, admin: u16) -> (std::path::PathBuf, std::path::PathBuf) {
    let db = dir.join("live.db");
    let config = write_config(
        dir,
        "live.toml",
        &format!(
            r#"
[pipeline]
workers = 2

[sources.sim]
type = "simulator"
apps = 5
rate = 2000
tagged_fraction = 0.0

[sinks.db]
type = "sqlite"
path = {db:?}
streams = ["apps", "app_rollups"]

[admin]
listen = "127.0.0.1:{admin}"
{}"#,
            metadata_section(&cc.url(), "1s", "20s")
        ),
    );
    (config, db)
}

fn apps_written(admin: u16) -> f64 {
    metric(
        admin,
        r#"sluice_sink_records_written_total{sink="db",stream="apps"}"#,
    )
    .unwrap_or(-1.0)
}

#[test]
fn the_app_table_follows_every_listing_with_one_row_per_changed_app() {
    // 10 apps over 3 spaces and 2 orgs, 3 pages; then renames, moves, deletions, additions.
    let v0: Vec<App> = (1..=10)
        .map(|n| app(n, &format!("app-{n}"), n as usize % 3))
        .collect();
    let mut v1 = v0.clone();
    v1[0].name = "app-1-renamed".to_owned();
    v1[4].name = "app-5-renamed".to_owned();
    let mut v2 = v1.clone();
    let (id, name, org, org_name) = SPACES[2];
    v2[1].space_id = id.to_owned();
    v2[1].space_name = name.to_owned();
    v2[1].org_id = org.to_owned();
    v2[1].org_name = org_name.to_owned();
    v2.remove(7);
    let mut v3 = v2.clone();
    v3.remove(2);
    v3.push(app(11, "app-11", 0));
    v3.push(app(12, "app-12", 1));
    v3[0].name = "app-1-again".to_owned();
    let v4 = v3.clone(); // nothing changes
    let listings = vec![v0, v1, v2, v3, v4];

    let cc = StandIn::start(listings.clone());
    let dir = tempfile::tempdir().expect("temp dir");
    let admin = free_port();
    let (config, db) = live_config(dir.path(), &cc, admin);
    let mut run = start_run(&config);
    wait_for_line(&mut run.0, "Pipeline running");

    let mut written = 0;
    let mut previous: Vec<App> = Vec::new();
    for (version, listing) in listings.iter().enumerate() {
        cc.foundation().current = version;
        let mut expected = listing.clone();
        expected.sort();
        written += changed(&previous, &expected);
        wait_until(
            &mut run,
            &format!("the app table is listing {version}"),
            || app_table(&db) == expected,
        );
        wait_until(
            &mut run,
            &format!("{written} app rows written by listing {version}"),
            || apps_written(admin) >= written as f64,
        );
        // Rows written are the apps that changed: not one more.
        assert_eq!(
            apps_written(admin),
            written as f64,
            "rows written after listing {version}"
        );
        previous = expected;
    }
    // Further refreshes of an unchanged directory write nothing.
    let listed = metric(admin, "sluice_metadata_listings_total").unwrap_or(0.0);
    wait_until(&mut run, "three more listings", || {
        metric(admin, "sluice_metadata_listings_total").unwrap_or(0.0) >= listed + 3.0
    });
    assert_eq!(apps_written(admin), written as f64);
    assert_eq!(app_table(&db), previous);
    assert_eq!(
        metric(admin, "sluice_metadata_apps"),
        Some(previous.len() as f64)
    );
    assert_eq!(metric(admin, "sluice_metadata_failures_total"), Some(0.0));
    // Every listing was three or four pages, one in flight at a time.
    assert!(cc.foundation().pages_served >= 3 * (listed as u64 + 3));
}

#[test]
fn a_429_and_a_503_are_waited_out_and_a_revoked_token_is_replaced() {
    let v0: Vec<App> = (1..=6).map(|n| app(n, &format!("svc-{n}"), 0)).collect();
    let mut v1 = v0.clone();
    v1[3].name = "svc-4-renamed".to_owned();
    let cc = StandIn::start(vec![v0.clone(), v1.clone()]);
    cc.foundation().faults.extend([429, 503]);
    let dir = tempfile::tempdir().expect("temp dir");
    let admin = free_port();
    let (config, db) = live_config(dir.path(), &cc, admin);
    let mut run = start_run(&config);
    wait_for_line(&mut run.0, "Pipeline running");
    wait_until(&mut run, "the first listing, after a 429 and a 503", || {
        app_table(&db) == v0
    });
    assert_eq!(metric(admin, "sluice_metadata_retries_total"), Some(2.0));
    assert_eq!(metric(admin, "sluice_metadata_failures_total"), Some(0.0));

    // The token is revoked: one fresh token, and the next listing arrives.
    {
        let mut foundation = cc.foundation();
        foundation.revoked = Some("token-1".to_owned());
        foundation.current = 1;
    }
    wait_until(&mut run, "the second listing, with a fresh token", || {
        app_table(&db) == v1
    });
    assert_eq!(cc.foundation().tokens_issued, 2);
    assert_eq!(metric(admin, "sluice_metadata_failures_total"), Some(0.0));
}

#[test]
fn an_unreachable_cloud_controller_is_one_error_and_the_run_goes_on_with_tags() {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("tags.db");
    let unreachable = format!("http://127.0.0.1:{}", free_port());
    let config = write_config(
        dir.path(),
        "tags.toml",
        &format!(
            r#"
[sources.sim]
type = "simulator"
apps = 8
rate = 0
limit = 50000
clock = "simulated"
tagged_fraction = 1.0

[sinks.db]
type = "sqlite"
path = {db:?}
streams = ["apps", "app_rollups"]
{}"#,
            metadata_section(&unreachable, "1m", "5s")
        ),
    );
    let output = Command::new(sluice_binary())
        .args([
            "run",
            "--no-status",
            "--config",
            config.to_str().expect("utf-8"),
        ])
        .env("SLUICE_LOG", "info")
        .env("TEST_CC_SECRET", "s3cr3t")
        .output()
        .expect("sluice runs");
    assert_success(&output);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let errors: Vec<&str> = stderr.lines().filter(|l| l.contains("ERROR")).collect();
    assert_eq!(errors.len(), 1, "one error line, not:\n{stderr}");
    assert!(
        errors[0].contains("Cannot list the Cloud Controller's apps")
            && errors[0].contains(&unreachable),
        "{}",
        errors[0]
    );
    // The run went on: rollups, and every app named by its tags.
    assert!(count_rows(&db, "app_metric_rollup") > 0);
    assert_eq!(count_rows(&db, "app"), 8);
}

#[test]
fn a_replay_is_grouped_by_the_cloud_controllers_spaces_from_its_first_minute() {
    // The simulator's apps, untagged, placed by the Cloud Controller in spaces of its own.
    let simulator = sluice_simulator::SimulatorConfig {
        apps: 6,
        seed: 4,
        tagged_fraction: 0.0,
        ..sluice_simulator::SimulatorConfig::default()
    };
    let listing: Vec<App> = sluice_simulator::Generator::new(&simulator)
        .apps()
        .iter()
        .enumerate()
        .map(|(i, sim)| App {
            guid: sim.guid.hyphenated().to_string(),
            ..app(0, &format!("cc-{i}"), i % 3)
        })
        .collect();
    let cc = StandIn::start(vec![listing.clone()]);
    // Slow enough that a replay not waiting for it would be minutes in when it answers.
    cc.foundation().delay = Duration::from_secs(2);
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("replay.db");
    let config = write_config(
        dir.path(),
        "replay.toml",
        &format!(
            r#"
[pipeline]
workers = 2

[sources.sim]
type = "simulator"
apps = 6
seed = 4
rate = 0
limit = 200000
clock = "simulated"
start = "2026-01-05T10:00:00Z"
density = 200
tagged_fraction = 0.0

[sinks.db]
type = "sqlite"
path = {db:?}
streams = ["apps", "app_rollups", "group_rollups"]
{}"#,
            metadata_section(&cc.url(), "5m", "20s")
        ),
    );
    let output = Command::new(sluice_binary())
        .args([
            "run",
            "--no-status",
            "--config",
            config.to_str().expect("utf-8"),
        ])
        .env("SLUICE_LOG", "info")
        .env("TEST_CC_SECRET", "s3cr3t")
        .output()
        .expect("sluice runs");
    assert_success(&output);
    let mut expected = listing.clone();
    expected.sort();
    assert_eq!(app_table(&db), expected);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let rows: Vec<(String, i64, i64)> = runtime.block_on(async {
        let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}?mode=ro", db.display()))
            .await
            .expect("the store");
        sqlx::query_as(
            "SELECT space_id, minute, apps FROM space_metric_rollup ORDER BY minute, space_id",
        )
        .fetch_all(&pool)
        .await
        .expect("group rollups")
    });
    let first_minute = rows.first().expect("group rollups were written").1;
    let first: Vec<&(String, i64, i64)> = rows.iter().filter(|r| r.1 == first_minute).collect();
    let cc_spaces: Vec<&str> = SPACES.iter().map(|s| s.0).collect();
    assert!(
        first
            .iter()
            .all(|(space, _, _)| cc_spaces.contains(&space.as_str())),
        "the first minute is grouped by the Cloud Controller's spaces: {first:?}"
    );
    assert!(
        rows.iter().all(|(space, _, _)| !space.is_empty()),
        "no minute has apps of unknown space"
    );
    assert!(
        rows.iter()
            .map(|r| r.1)
            .collect::<std::collections::BTreeSet<_>>()
            .len()
            >= 3
    );
}

/// The union of `table`'s `(key, …)` rows over the SQLite stores at `paths`.
fn union_of(paths: &[std::path::PathBuf], query: &'static str) -> Vec<(String, i64)> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut rows = Vec::new();
    for path in paths {
        let part: Vec<(String, i64)> = runtime.block_on(async {
            let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}?mode=ro", path.display()))
                .await
                .expect("the store");
            sqlx::query_as(query).fetch_all(&pool).await.expect("rows")
        });
        rows.extend(part);
    }
    rows.sort();
    rows
}

#[test]
fn in_a_cluster_process_0_lists_and_every_process_s_records_are_named() {
    let simulator = sluice_simulator::SimulatorConfig {
        apps: 6,
        seed: 5,
        tagged_fraction: 0.0,
        ..sluice_simulator::SimulatorConfig::default()
    };
    let listing: Vec<App> = sluice_simulator::Generator::new(&simulator)
        .apps()
        .iter()
        .enumerate()
        .map(|(i, sim)| App {
            guid: sim.guid.hyphenated().to_string(),
            ..app(0, &format!("cc-{i}"), i % 3)
        })
        .collect();
    let cc = StandIn::start(vec![listing.clone()]);
    cc.foundation().delay = Duration::from_millis(500);
    let dir = tempfile::tempdir().expect("temp dir");
    let addresses: Vec<String> = (0..2)
        .map(|_| format!("127.0.0.1:{}", free_port()))
        .collect();
    let part = |n: usize| dir.path().join(format!("part-{n}.db"));
    let config = write_config(
        dir.path(),
        "cluster.toml",
        &format!(
            r#"
[pipeline]
workers = 2
allowed_lateness = "1h"

[cluster]
addresses = {addresses:?}
startup_timeout = "60s"

[sources.sim]
type = "simulator"
apps = 6
seed = 5
rate = 0
limit = 40000
clock = "simulated"
start = "2026-01-05T10:00:00Z"
density = 200
tagged_fraction = 0.0

[sinks.db]
type = "sqlite"
path = "{}/part-${{SLUICE_PART}}.db"
streams = ["apps", "app_rollups", "group_rollups"]
{}"#,
            dir.path().display(),
            metadata_section(&cc.url(), "5m", "20s")
        ),
    );
    let children: Vec<_> = (0..2)
        .map(|process| {
            sluice()
                .args(["run", "--no-status", "--process", &process.to_string()])
                .arg("--config")
                .arg(&config)
                .env("SLUICE_PART", process.to_string())
                .env("TEST_CC_SECRET", "s3cr3t")
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .expect("sluice starts")
        })
        .collect();
    for child in children {
        let output = child.wait_with_output().expect("sluice ran");
        assert_success(&output);
    }
    // One listing (two pages), by one process.
    assert_eq!(cc.foundation().tokens_issued, 1);
    assert_eq!(cc.foundation().pages_served, 2);
    let parts = [part(0), part(1)];
    let apps = union_of(&parts, "SELECT app_id, 0 FROM app");
    let mut expected: Vec<(String, i64)> = listing.iter().map(|a| (a.guid.clone(), 0)).collect();
    expected.sort();
    assert_eq!(apps, expected, "each app written once, by the cluster");
    let groups = union_of(&parts, "SELECT space_id, minute FROM space_metric_rollup");
    assert!(groups.len() >= 3, "{groups:?}");
    let cc_spaces: Vec<&str> = SPACES.iter().map(|s| s.0).collect();
    assert!(
        groups
            .iter()
            .all(|(space, _)| cc_spaces.contains(&space.as_str())),
        "every minute of both processes grouped by the Cloud Controller's spaces: {groups:?}"
    );
}

#[test]
fn sluice_simulate_is_the_cloud_controller_and_its_churn_reaches_the_app_table() {
    use sluice_simulator::server::SimulateConfig;
    use sluice_simulator::{SimulatedApp, SimulatorConfig};
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("a runtime");
    let server = runtime.block_on(simulate::Running::start(SimulateConfig {
        client_id: "sluice".to_owned(),
        client_secret: "s3cr3t".to_owned(),
        generator: SimulatorConfig {
            apps: 12,
            rate: 2000,
            tagged_fraction: 0.0,
            ..SimulatorConfig::default()
        },
        ..SimulateConfig::default()
    }));
    let as_table = |apps: Vec<SimulatedApp>| {
        let mut rows: Vec<App> = apps
            .into_iter()
            .map(|a| App {
                guid: a.guid.hyphenated().to_string(),
                name: a.name,
                space_id: a.space_id.to_string(),
                space_name: a.space_name.to_string(),
                org_id: a.org_id.to_string(),
                org_name: a.org_name.to_string(),
            })
            .collect();
        rows.sort();
        rows
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("simulate.db");
    let url = format!("http://{}", server.addr);
    let config = write_config(
        dir.path(),
        "simulate.toml",
        &format!(
            r#"
[sources.cf]
type = "firehose"
url = "ws://{addr}"
subscription_id = "sluice-metadata"
uaa_url = "{url}"
client_id = "sluice"
client_secret = "${{TEST_CC_SECRET}}"

[sinks.db]
type = "sqlite"
path = {db:?}
streams = ["apps"]
{}"#,
            metadata_section(&url, "1s", "20s"),
            addr = server.addr,
        ),
    );
    let mut run = start_run(&config);
    wait_for_line(&mut run.0, "Pipeline running");
    let first = as_table(server.handle.directory());
    assert_eq!(first.len(), 12);
    wait_until(
        &mut run,
        "the app table is the simulator's directory",
        || app_table(&db) == first,
    );
    // A rename, a move and a delete in the simulated Cloud Controller.
    for _ in 0..3 {
        server.handle.churn_directory().expect("a change");
    }
    let churned = as_table(server.handle.directory());
    assert_eq!(churned.len(), 11);
    assert_eq!(changed(&first, &churned), 3);
    wait_until(&mut run, "the app table follows the churn", || {
        app_table(&db) == churned
    });
    drop(run);
    runtime.block_on(server.stop());
}
