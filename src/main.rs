//! The `sluice` binary: see `sluice --help`, and the README for what it does.

fn main() -> std::process::ExitCode {
    sluice_pipeline::cli::main()
}
