//! The read path as a user meets it, in a real browser: `sluice simulate` is the Firehose, UAA
//! and Cloud Controller; `sluice run` reads the Firehose into SQLite and serves the API with
//! `auth = "uaa"`; `tests/browser/ui.mjs` drives Debian's Chromium through playwright-core to
//! sign in, pick an app, see the charts draw, search the logs and see a rollup arrive live,
//! then pick an org and a space by name, find an app with the search box and see the space's
//! and the org's charts.
//!
//! Needs Node.js, `/usr/bin/chromium` and `tests/browser/node_modules` (playwright-core):
//! `scripts/test.sh` installs them. The screenshot is saved under this test's output directory.

use std::path::Path;
use std::process::{Command, Stdio};

use sluice_test_support::*;

fn browser_test_prerequisites() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let missing: Vec<&str> = [
        (
            Command::new("node").arg("--version").output().is_err(),
            "node",
        ),
        (
            !Path::new("/usr/bin/chromium").exists(),
            "/usr/bin/chromium",
        ),
        (
            !root
                .join("tests/browser/node_modules/playwright-core")
                .exists(),
            "tests/browser/node_modules (npm ci --prefix tests/browser)",
        ),
    ]
    .into_iter()
    .filter_map(|(absent, what)| absent.then_some(what))
    .collect();
    assert!(
        missing.is_empty(),
        "the browser test needs {missing:?}: run it through ./scripts/test.sh, which installs them"
    );
}

#[test]
fn a_user_signs_in_picks_an_app_and_sees_charts_logs_and_live_rollups() {
    browser_test_prerequisites();
    let firehose_port = free_port();
    let mut simulator = Reaper(
        sluice()
            .args([
                "simulate",
                "--listen",
                &format!("127.0.0.1:{firehose_port}"),
                "--rate",
                "2000",
                "--apps",
                "6",
            ])
            .env("SLUICE_LOG", "info")
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("simulate starts"),
    );
    wait_for_line(&mut simulator.0, "Serving a simulated Firehose");

    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("ui.db");
    let api_port = free_port();
    let config = write_config(
        dir.path(),
        "ui.toml",
        &format!(
            r#"
[pipeline]
flush_interval = "1s"
# Minutes close 5 s after their end: the space and org charts need closed minutes.
allowed_lateness = "5s"

[sources.cf]
type = "firehose"
url = "ws://127.0.0.1:{firehose_port}"
subscription_id = "sluice-ui-test"
uaa_url = "http://127.0.0.1:{firehose_port}"
client_id = "sluice"
client_secret = "sluice"

[sinks.local]
type = "sqlite"
path = {db:?}

[api]
listen = "127.0.0.1:{api_port}"
auth = "uaa"
uaa_url = "http://127.0.0.1:{firehose_port}"
cc_url = "http://127.0.0.1:{firehose_port}"
"#
        ),
    );
    let mut run = Reaper(
        sluice()
            .args([
                "run",
                "--no-status",
                "--config",
                config.to_str().expect("utf-8"),
            ])
            .env("SLUICE_LOG", "info")
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("run starts"),
    );
    wait_for_line(&mut run.0, "Pipeline running");
    // The app list comes from the rollups: wait until every app has some.
    wait_for_rows(&mut run.0, &db, "app_metric_rollup", 6);
    // The space and org charts read the group rollups: a closed minute (up to a minute and
    // the lateness away).
    wait_for_rows_within(&mut run.0, &db, "org_metric_rollup", 1, 120);

    let output_dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("web_ui");
    std::fs::create_dir_all(&output_dir).expect("output dir");
    let screenshot = output_dir.join("signed-in.png");
    let _ = std::fs::remove_file(&screenshot);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser/ui.mjs");
    let browser = Command::new("node")
        .arg(&script)
        .args(["--url", &format!("http://127.0.0.1:{api_port}")])
        .args(["--user", "developer", "--password", "developer"])
        .arg("--screenshot")
        .arg(&screenshot)
        .output()
        .expect("node runs");
    let stdout = String::from_utf8_lossy(&browser.stdout);
    let stderr = String::from_utf8_lossy(&browser.stderr);
    println!("{stdout}{stderr}\nscreenshot: {}", screenshot.display());
    assert!(
        browser.status.success(),
        "the browser test failed ({}):\n{stdout}\n{stderr}\nscreenshot: {}",
        browser.status,
        screenshot.display()
    );
    assert!(
        std::fs::metadata(&screenshot).is_ok_and(|m| m.len() > 10_000),
        "no screenshot at {}",
        screenshot.display()
    );
}
