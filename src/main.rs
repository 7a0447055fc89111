//! The `sluice` binary: see `sluice --help`, and the README for what it does.

/// Records are allocated on the source threads and freed on the timely workers; mimalloc
/// handles that cross-thread traffic far better than the system allocator.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    sluice_pipeline::cli::main()
}
