//! `cargo run --release -p sluice-fuzz -- [TARGET|all] [--seconds N] [--seed S] [--save]`:
//! mutates each target's corpus for N seconds (default 60), reports executions and what it
//! found, and exits 1 on the first input that panics or asks for more than
//! `MAX_ALLOCATION` bytes at once (saved under `fuzz/crashes/`). `--save` adds inputs with
//! new signatures to the corpus folder.

use std::collections::HashSet;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use sluice_fuzz::{
    MAX_ALLOCATION, Rng, TARGETS, Target, corpus_dir, mutate, read_corpus, take_largest,
};

/// The most inputs kept in memory per target.
const MAX_CORPUS: usize = 20_000;

struct Options {
    targets: Vec<&'static Target>,
    seconds: u64,
    seed: u64,
    save: bool,
}

fn options() -> Result<Options, String> {
    let mut args = std::env::args().skip(1);
    let mut names = Vec::new();
    let mut seconds = 60;
    let mut seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64);
    let mut save = false;
    while let Some(arg) = args.next() {
        let mut number = |what: &str| {
            args.next()
                .and_then(|v| v.parse::<u64>().ok())
                .ok_or(format!("{what} needs a number"))
        };
        match arg.as_str() {
            "--seconds" => seconds = number("--seconds")?,
            "--seed" => seed = number("--seed")?,
            "--save" => save = true,
            "all" => names.extend(TARGETS.iter().map(|t| t.name)),
            name => names.push(
                TARGETS
                    .iter()
                    .find(|t| t.name == name)
                    .map(|t| t.name)
                    .ok_or(format!(
                        "unknown target `{name}`; targets: all, {}",
                        TARGETS
                            .iter()
                            .map(|t| t.name)
                            .collect::<Vec<_>>()
                            .join(", ")
                    ))?,
            ),
        }
    }
    if names.is_empty() {
        names.extend(TARGETS.iter().map(|t| t.name));
    }
    let targets = names
        .iter()
        .filter_map(|name| TARGETS.iter().find(|t| t.name == *name))
        .collect();
    Ok(Options {
        targets,
        seconds,
        seed,
        save,
    })
}

/// Runs one input; `Err` with what went wrong.
fn run_one(target: &Target, input: &[u8]) -> Result<u64, String> {
    take_largest();
    let result = catch_unwind(AssertUnwindSafe(|| (target.run)(input)));
    let largest = take_largest();
    match result {
        Err(_) => Err("panicked".to_owned()),
        Ok(_) if largest > MAX_ALLOCATION => Err(format!(
            "asked for {largest} bytes at once (limit {MAX_ALLOCATION})"
        )),
        Ok(signature) => Ok(signature),
    }
}

fn save(folder: &std::path::Path, input: &[u8]) -> std::path::PathBuf {
    let _ = std::fs::create_dir_all(folder);
    let name = format!("{:016x}", {
        use std::hash::{DefaultHasher, Hash, Hasher};
        let mut h = DefaultHasher::new();
        input.hash(&mut h);
        h.finish()
    });
    let path = folder.join(name);
    let _ = std::fs::write(&path, input);
    path
}

fn main() -> ExitCode {
    let options = match options() {
        Ok(options) => options,
        Err(e) => {
            eprintln!("sluice-fuzz: {e}");
            return ExitCode::from(2);
        }
    };
    // Panics are caught and reported with their input; the default hook's line is enough.
    let mut rng = Rng::new(options.seed);
    println!("seed {}", options.seed);
    for target in options.targets {
        let mut corpus: Vec<Vec<u8>> = read_corpus(target.name)
            .into_iter()
            .map(|(_, d)| d)
            .collect();
        if corpus.is_empty() {
            corpus.push(Vec::new());
        }
        let mut seen = HashSet::new();
        for input in &corpus {
            match run_one(target, input) {
                Ok(signature) => {
                    seen.insert(signature);
                }
                Err(why) => {
                    eprintln!("{}: a corpus input {why}", target.name);
                    return ExitCode::FAILURE;
                }
            }
        }
        let seeds = corpus.len();
        let deadline = Instant::now() + Duration::from_secs(options.seconds);
        let mut executions: u64 = 0;
        while Instant::now() < deadline {
            for _ in 0..64 {
                let parent = &corpus[rng.below(corpus.len())];
                let input = mutate(parent, &corpus, &mut rng, target.max_input);
                executions += 1;
                match run_one(target, &input) {
                    Ok(signature) => {
                        // The in-memory corpus is capped, so a long run's memory is too.
                        if seen.insert(signature) && corpus.len() < MAX_CORPUS {
                            if options.save {
                                save(&corpus_dir(target.name), &input);
                            }
                            corpus.push(input);
                        }
                    }
                    Err(why) => {
                        let crashes =
                            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("crashes");
                        let path = save(&crashes, &input);
                        eprintln!(
                            "{}: an input {why}; saved as {}",
                            target.name,
                            path.display()
                        );
                        return ExitCode::FAILURE;
                    }
                }
            }
        }
        println!(
            "{}: {executions} executions in {}s, no failure; {} signatures, corpus {seeds} -> {}",
            target.name,
            options.seconds,
            seen.len(),
            corpus.len()
        );
    }
    ExitCode::SUCCESS
}
