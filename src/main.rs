use std::process::ExitCode;

use clap::Parser as _;

/// mimalloc returns freed memory to the OS; glibc malloc kept a large
/// sync's peak resident (BENCHMARKS.md, issue 5's RSS figure).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    // One crypto provider for rustls, reqwest, kube and axum-server.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = gitgate::cmd::Cli::parse();
    gitgate::cmd::init_tracing(cli.log_format);
    match gitgate::cmd::run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
