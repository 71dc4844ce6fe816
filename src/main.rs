use std::process::ExitCode;

use clap::Parser as _;

fn main() -> ExitCode {
    // One crypto provider for rustls, reqwest, kube and axum-server.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = gitgate::cli::Cli::parse();
    gitgate::cli::init_tracing(cli.log_format);
    match gitgate::cli::run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
