//! The command line: parse, validate once, dispatch. `anyhow` lives here
//! and nowhere else.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::admission::{self, AdmissionState, Decider, Limits, LogRecorder};
use crate::audit;
use crate::config::{RawServe, ServeConfig};
use crate::policy::{PolicySet, PolicyStage, StaticNamespaces};
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
    Serve(Box<ServeArgs>),
    /// Generate a development CA and serving certificate.
    Certs(CertsArgs),
    /// Work with CEL policies.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Print the ValidatingAdmissionPolicy and binding that let only the
    /// reconciler change objects labelled gitgate.dev/app (holds while the
    /// webhook is down).
    Vap(VapArgs),
    /// Verify and query the audit log.
    Audit(audit::command::AuditArgs),
    /// Render a repository revision and print its desired set.
    Render(crate::render::command::RenderArgs),
    /// Print the version.
    Version,
    /// Generate an age X25519 identity for sealing Secrets.
    Keygen(crate::secrets::cli::KeygenArgs),
    /// Seal a Secret manifest's values for age recipients (or --check a sealed one).
    Seal(crate::secrets::cli::SealArgs),
    /// Re-encrypt a sealed Secret for new recipients with an offline key file.
    Reseal(crate::secrets::cli::ResealArgs),
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
    /// CEL policy files or directories (default: ./policies when it exists).
    #[arg(long = "policies", env = "GITGATE_POLICIES")]
    pub policies: Vec<PathBuf>,
    /// The reconciler's username (the `git.reconciler` variable).
    #[arg(long, env = "GITGATE_RECONCILER", default_value = DEFAULT_RECONCILER)]
    pub reconciler: String,
    #[command(flatten)]
    pub secrets: Box<crate::secrets::cli::ServeSecretsArgs>,
    #[command(flatten)]
    pub audit: audit::command::ServeAuditArgs,
}

#[derive(Subcommand, Debug)]
pub enum PolicyCommand {
    /// Evaluate policies against their test cases offline (like `kyverno test`).
    Test(PolicyTestArgs),
}

#[derive(Args, Debug)]
pub struct PolicyTestArgs {
    /// Policy files or directories.
    #[arg(required = true)]
    pub policies: Vec<PathBuf>,
    /// Directory of test files (default: `tests/` under the first policy directory).
    #[arg(long)]
    pub fixtures: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct VapArgs {
    /// The reconciler's username.
    #[arg(long, env = "GITGATE_RECONCILER", default_value = DEFAULT_RECONCILER)]
    pub reconciler: String,
    /// Groups allowed to change managed objects in an emergency (repeatable).
    #[arg(long = "break-glass-group")]
    pub break_glass_groups: Vec<String>,
}

/// gitgate's service account in its Helm chart.
pub const DEFAULT_RECONCILER: &str = "system:serviceaccount:gitgate:gitgate";

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
    use std::io::IsTerminal as _;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
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
        Command::Policy(PolicyCommand::Test(args)) => policy_test(args),
        Command::Vap(args) => {
            print!("{}", crate::policy::vap::to_yaml(&args.reconciler, &args.break_glass_groups)?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Keygen(args) => crate::secrets::cli::keygen(args),
        Command::Seal(args) => crate::secrets::cli::seal(args),
        Command::Reseal(args) => crate::secrets::cli::reseal(args),
        Command::Audit(args) => Ok(audit::command::run(args)?),
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
            let policies = load_policies(&args.policies)?;
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .context("failed to start the runtime")?;
            rt.block_on(serve(config, policies, args.reconciler, args.secrets, args.audit))?;
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

/// Loads the policies given, or `./policies` when none are given and it exists.
fn load_policies(paths: &[PathBuf]) -> anyhow::Result<PolicySet> {
    let paths: Vec<PathBuf> = if paths.is_empty() {
        let default = PathBuf::from("policies");
        if default.is_dir() { vec![default] } else { Vec::new() }
    } else {
        paths.to_vec()
    };
    if paths.is_empty() {
        return Ok(PolicySet::empty());
    }
    let set = PolicySet::load(&paths)?;
    for w in &set.warnings {
        tracing::warn!("{w}");
    }
    tracing::info!(bindings = set.len(), "loaded CEL policies");
    Ok(set)
}

fn policy_test(args: PolicyTestArgs) -> anyhow::Result<ExitCode> {
    let set = PolicySet::load(&args.policies)?;
    for w in &set.warnings {
        eprintln!("warning: {w}");
    }
    let fixtures = match args.fixtures {
        Some(f) => f,
        None => {
            let first = args.policies.iter().find(|p| p.is_dir()).context("give --fixtures, or a policy directory")?;
            first.join("tests")
        }
    };
    let results = crate::policy::testing::run(&set, &fixtures)?;
    print!("{}", crate::policy::testing::table(&results));
    if results.is_empty() {
        eprintln!("no test cases found under {}", fixtures.display());
        return Ok(ExitCode::FAILURE);
    }
    Ok(if results.iter().all(|r| r.passed) { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

async fn serve(
    config: ServeConfig,
    policies: PolicySet,
    reconciler: String,
    secrets: Box<crate::secrets::cli::ServeSecretsArgs>,
    audit_args: audit::command::ServeAuditArgs,
) -> anyhow::Result<()> {
    if config.generate_certs && !(config.tls_cert.exists() && config.tls_key.exists()) {
        let names: Vec<String> = tls::DEFAULT_DNS_NAMES.iter().chain(tls::DEFAULT_IPS).map(|s| s.to_string()).collect();
        let out = tls::generate(&config.cert_dir, &names, 365)?;
        tracing::info!(dir = %config.cert_dir.display(), ca = %out.ca_cert.display(), "generated a development certificate");
    }
    let (rustls, reloader) = tls::Reloader::load(&config.tls_cert, &config.tls_key)?;

    let limits = Limits { max_body_bytes: config.max_body_bytes, request_timeout: config.request_timeout };
    let mut registry = prometheus_client::registry::Registry::default();
    let audit_log = audit_args.open(&mut registry)?;
    let recorder = audit::Tee(vec![audit_log.clone(), Arc::new(LogRecorder)]);
    let state = AdmissionState::new(registry, limits, Arc::new(recorder));
    let state = Arc::new(if audit_args.audit_fail_open { state.fail_open_on_record_error() } else { state });
    let mut decider = Decider::new();
    if !policies.is_empty() {
        decider = decider.with_validating(Arc::new(PolicyStage {
            policies: Arc::new(policies),
            namespaces: Arc::new(StaticNamespaces::default()),
            reconciler,
        }));
    }
    let (decider, vault_renewal) = crate::secrets::cli::with_secrets_stage(decider, &secrets).await?;
    state.publish(Arc::new(decider));

    let router = admission::router(state.clone());
    let conn = ConnLimits { handshake_timeout: config.header_timeout, header_timeout: config.header_timeout };
    let running = server::start(config.listen, rustls, router, conn).await?;
    let reload = tokio::spawn(reloader.run(config.tls_reload_interval));
    tracing::info!(addr = %running.addr, "gitgate admission server listening on https://{}", running.addr);

    shutdown_signal().await;
    tracing::info!(drain = ?config.drain_timeout, "shutting down: draining in-flight requests");
    reload.abort();
    if let Some(task) = vault_renewal {
        task.abort();
    }
    running.shutdown(config.drain_timeout).await?;
    audit_log.close()?;
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
