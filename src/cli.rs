//! The command line: parse, validate once, dispatch. `anyhow` lives here
//! and nowhere else.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::admission::{self, AdmissionState, Decider, Limits, LogRecorder};
use crate::config::{RawServe, ServeConfig};
use crate::server::{self, ConnLimits};
use crate::tls;

#[derive(Parser, Debug)]
#[command(name = "gitgate", version, about = "Git is the only deploy path", propagate_version = true)]
pub struct Cli {
    /// Log format.
    #[arg(long, global = true, env = "GITGATE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Serve the admission webhooks (validate, mutate) over HTTPS.
    Serve(ServeArgs),
    /// Generate a development CA and serving certificate.
    Certs(CertsArgs),
    /// Render a repository revision and print its desired set.
    Render(crate::render::command::RenderArgs),
    /// Print the version.
    Version,
}

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "GITGATE_LISTEN", default_value = "127.0.0.1:8443")]
    pub listen: SocketAddr,
    /// Directory of ca.crt, tls.crt and tls.key; a development pair is
    /// generated there when missing.
    #[arg(long, env = "GITGATE_CERT_DIR", default_value = "certs")]
    pub cert_dir: PathBuf,
    /// Serving certificate (PEM chain); with --tls-key, nothing is generated.
    #[arg(long, env = "GITGATE_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// Serving private key (PEM).
    #[arg(long, env = "GITGATE_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// How often to check the certificate files for a rotation.
    #[arg(long, default_value = "10s")]
    pub tls_reload_interval: String,
    /// Time allowed to receive a request body.
    #[arg(long, default_value = "10s")]
    pub request_timeout: String,
    /// Time allowed to receive a request's headers.
    #[arg(long, default_value = "10s")]
    pub header_timeout: String,
    /// Largest AdmissionReview body accepted.
    #[arg(long, default_value_t = 4 * 1024 * 1024)]
    pub max_body_bytes: usize,
    /// On SIGTERM, time in-flight requests get to finish.
    #[arg(long, default_value = "15s")]
    pub drain_timeout: String,
}

#[derive(Args, Debug)]
pub struct CertsArgs {
    /// Output directory.
    #[arg(long, default_value = "certs")]
    pub out: PathBuf,
    /// DNS names for the serving certificate (repeatable).
    #[arg(long = "dns")]
    pub dns: Vec<String>,
    /// IP addresses for the serving certificate (repeatable).
    #[arg(long = "ip")]
    pub ip: Vec<std::net::IpAddr>,
    /// Validity of the serving certificate in days.
    #[arg(long, default_value_t = 365)]
    pub days: u32,
}

/// Installs the tracing subscriber (RUST_LOG, default `info`).
pub fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Version => {
            println!("gitgate {}", env!("CARGO_PKG_VERSION"));
            Ok(ExitCode::SUCCESS)
        }
        Command::Certs(args) => certs(args),
        Command::Render(args) => {
            crate::render::command::run(args)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Serve(args) => {
            let config = ServeConfig::from_raw(RawServe {
                listen: args.listen,
                cert_dir: args.cert_dir,
                tls_cert: args.tls_cert,
                tls_key: args.tls_key,
                tls_reload_interval: &args.tls_reload_interval,
                request_timeout: &args.request_timeout,
                header_timeout: &args.header_timeout,
                max_body_bytes: args.max_body_bytes,
                drain_timeout: &args.drain_timeout,
            })?;
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .context("failed to start the runtime")?;
            rt.block_on(serve(config))?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn certs(args: CertsArgs) -> anyhow::Result<ExitCode> {
    let mut names: Vec<String> = args.dns;
    names.extend(args.ip.iter().map(ToString::to_string));
    if names.is_empty() {
        names = tls::DEFAULT_DNS_NAMES.iter().chain(tls::DEFAULT_IPS).map(|s| s.to_string()).collect();
    }
    let out = tls::generate(&args.out, &names, args.days)?;
    println!("CA certificate:      {}", out.ca_cert.display());
    println!("serving certificate: {}", out.serving_cert.display());
    println!("serving key:         {}", out.serving_key.display());
    println!("names:               {}", names.join(", "));
    println!("caBundle (for a webhook configuration's clientConfig.caBundle):");
    println!("{}", out.ca_bundle);
    Ok(ExitCode::SUCCESS)
}

async fn serve(config: ServeConfig) -> anyhow::Result<()> {
    if config.generate_certs && !(config.tls_cert.exists() && config.tls_key.exists()) {
        let names: Vec<String> = tls::DEFAULT_DNS_NAMES.iter().chain(tls::DEFAULT_IPS).map(|s| s.to_string()).collect();
        let out = tls::generate(&config.cert_dir, &names, 365)?;
        tracing::info!(dir = %config.cert_dir.display(), ca = %out.ca_cert.display(), "generated a development certificate");
    }
    let (rustls, reloader) = tls::Reloader::load(&config.tls_cert, &config.tls_key)?;

    let limits = Limits { max_body_bytes: config.max_body_bytes, request_timeout: config.request_timeout };
    let state = Arc::new(AdmissionState::new(Default::default(), limits, Arc::new(LogRecorder)));
    state.publish(Arc::new(Decider::new()));

    let router = admission::router(state.clone());
    let conn = ConnLimits { handshake_timeout: config.header_timeout, header_timeout: config.header_timeout };
    let running = server::start(config.listen, rustls, router, conn).await?;
    let reload = tokio::spawn(reloader.run(config.tls_reload_interval));
    tracing::info!(addr = %running.addr, "gitgate admission server listening on https://{}", running.addr);

    shutdown_signal().await;
    tracing::info!(drain = ?config.drain_timeout, "shutting down: draining in-flight requests");
    reload.abort();
    running.shutdown(config.drain_timeout).await?;
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
