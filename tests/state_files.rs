//! SPEC §9: a state directory is used by one run at a time, and a checkpoint that cannot be
//! trusted — damaged, cut short, of another format, not Sluice's — is refused at start with a
//! message saying what is wrong with which file, before anything is read or written.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use sluice_test_support::*;

/// A replay into SQLite that keeps its state in `state`.
fn stateful_config(dir: &Path, name: &str, capture: &Path, state: &Path) -> PathBuf {
    let db = dir.join(format!("{name}.db"));
    let text = format!(
        r#"
[pipeline]
state_dir = {state:?}
checkpoint_interval = "1s"

[sources.replay]
type = "file"
path = {capture:?}

[sinks.local]
type = "sqlite"
path = {db:?}
streams = ["logs", "app_rollups"]
"#
    );
    write_config(dir, &format!("{name}.toml"), &text)
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// A finished replay's state directory, with its checkpoint.
fn finished_run(dir: &Path) -> (PathBuf, PathBuf) {
    let capture = dir.join("capture.bin");
    write_capture(&capture, &simulated_events(3, 20, 4_000, 0.0));
    let state = dir.join("state");
    let config = stateful_config(dir, "first", &capture, &state);
    assert_success(&run_config(&config));
    assert!(state.join("checkpoint").is_file(), "a checkpoint was saved");
    (capture, state)
}

#[test]
fn an_unusable_checkpoint_is_refused_at_start_naming_the_file_and_the_fault() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let (capture, state) = finished_run(dir.path());
    let good = std::fs::read(state.join("checkpoint")).expect("the checkpoint");
    assert!(good.starts_with(b"SLUICE-STATE\n"));

    let mut flipped = good.clone();
    let middle = flipped.len() / 2;
    flipped[middle] ^= 0x10;
    let mut other_format = good.clone();
    other_format[13..17].copy_from_slice(&99u32.to_le_bytes());
    let damages: [(&str, Vec<u8>, &str); 4] = [
        ("flipped", flipped, "its checksum does not match"),
        ("truncated", good[..good.len() - 7].to_vec(), "truncated"),
        ("format", other_format, "state format 99"),
        (
            "foreign",
            b"{\"offset\": 12}\n".to_vec(),
            "is not a Sluice state file",
        ),
    ];
    for (name, bytes, fault) in damages {
        let damaged = dir.path().join(format!("state-{name}"));
        std::fs::create_dir_all(&damaged).expect("state dir");
        let checkpoint = damaged.join("checkpoint");
        std::fs::write(&checkpoint, &bytes).expect("damaged checkpoint");
        let config = stateful_config(dir.path(), name, &capture, &damaged);
        let output = run_config(&config);
        let message = stderr(&output);
        assert_eq!(output.status.code(), Some(2), "{name}: {message}");
        assert!(message.contains(fault), "{name}: {message}");
        assert!(
            message.contains(&checkpoint.display().to_string()),
            "{name} names the file: {message}"
        );
        assert!(
            !dir.path().join(format!("{name}.db")).exists(),
            "{name}: nothing was written before the refusal"
        );
        assert_eq!(
            std::fs::read(&checkpoint).expect("still there"),
            bytes,
            "{name}: the refused file is left as it was"
        );
    }
}

#[test]
fn a_finished_replay_run_again_with_its_state_reads_nothing_and_changes_nothing() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let (capture, state) = finished_run(dir.path());
    let db = dir.path().join("first.db");
    let rows = (
        count_rows(&db, "log_message"),
        count_rows(&db, "app_metric_rollup"),
    );
    assert!(rows.0 > 0 && rows.1 > 0, "{rows:?}");

    let output = sluice()
        .args(["run", "--no-status", "--log", "sluice=info", "--config"])
        .arg(stateful_config(dir.path(), "first", &capture, &state))
        .output()
        .expect("sluice runs");
    assert_success(&output);
    let message = stderr(&output);
    assert!(
        message.contains("Resuming the replay where the restored checkpoint left it"),
        "{message}"
    );
    let finished = message
        .lines()
        .find(|line| line.contains("Finished replaying the file"))
        .expect("the replay's summary");
    assert!(finished.contains("records=0"), "{finished}");
    assert_eq!(
        (
            count_rows(&db, "log_message"),
            count_rows(&db, "app_metric_rollup")
        ),
        rows
    );
}

#[test]
fn a_second_run_on_the_same_state_dir_exits_2_naming_the_first() {
    let dir = tempfile::tempdir().expect("a temp dir");
    // A named pipe nobody writes to yet: the first run holds its state directory and waits.
    let fifo = dir.path().join("input.fifo");
    let made = Command::new("mkfifo").arg(&fifo).status().expect("mkfifo");
    assert!(made.success());
    let state = dir.path().join("state");
    let first_config = stateful_config(dir.path(), "first", &fifo, &state);
    let mut first = Reaper(
        sluice()
            .args(["run", "--no-status", "--config"])
            .arg(&first_config)
            .env("SLUICE_LOG", "warn")
            .stderr(Stdio::null())
            .spawn()
            .expect("the first run starts"),
    );
    let first_pid = first.0.id();
    let holder = format!("pid {first_pid} ");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !std::fs::read_to_string(state.join("LOCK")).is_ok_and(|text| text.contains(&holder)) {
        assert!(
            first.0.try_wait().expect("status").is_none(),
            "first run ended"
        );
        assert!(
            Instant::now() < deadline,
            "the first run never locked {state:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }

    let second = run_config(&stateful_config(dir.path(), "second", &fifo, &state));
    let message = stderr(&second);
    assert_eq!(second.status.code(), Some(2), "{message}");
    assert!(message.contains("in use by another Sluice"), "{message}");
    assert!(message.contains(&holder), "names the first run: {message}");

    // The first run goes on undisturbed: an empty input ends it normally.
    drop(
        std::fs::OpenOptions::new()
            .write(true)
            .open(&fifo)
            .expect("the fifo"),
    );
    let status = first.0.wait().expect("the first run ends");
    assert!(status.success(), "{status}");
}
