//! The command line: parse, validate once, dispatch. `anyhow` lives here
//! and nowhere else.
//!
//! One file per command family: [`serve`] (the flags validated once into
//! `serve::Settings`, then the process wired step by step), [`sync`]
//! (`status`, `diff`, and the sync part of `serve`), [`secrets`], [`audit`],
//! [`render`], [`promotion`] (`approve`, `pause`, `resume`). Library work
//! stays in the modules; this layer parses, validates, prints and wires.
//! Nothing imports it (but `main`).

pub mod audit;
pub mod fleet;
pub mod hub;
pub mod promotion;
pub mod render;
pub mod secrets;
pub mod serve;
pub mod sync;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::policy::PolicySet;
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
    Audit(self::audit::AuditArgs),
    /// Render a repository revision and print its desired set.
    Render(self::render::RenderArgs),
    /// Print the version.
    Version,
    /// Generate an age X25519 identity for sealing Secrets.
    Keygen(self::secrets::KeygenArgs),
    /// Seal a Secret manifest's values for age recipients (or --check a sealed one).
    Seal(self::secrets::SealArgs),
    /// Re-encrypt a sealed Secret for new recipients with an offline key file.
    Reseal(self::secrets::ResealArgs),
    /// Print the age recipient a running gitgate decrypts for (seal to it).
    Recipients(self::secrets::RecipientsArgs),
    /// Print the apps gitgate syncs: sync status, health, commit.
    Status(self::sync::StatusArgs),
    /// Show what a sync of an app would change (exit 0: nothing, 1: changes, 2: trouble).
    Diff(self::sync::DiffArgs),
    /// The fleet: `fleet diff A B` compares what Git gives two clusters.
    #[command(subcommand)]
    Fleet(self::fleet::FleetCommand),
    /// Create the commit that rolls an app back to an earlier commit (for a pull request).
    Rollback(crate::sync::rollback::RollbackArgs),
    /// Approve a commit for an app whose syncPolicy requires approval.
    Approve(self::promotion::ApproveArgs),
    /// Pause an app for a while: new commits wait and self-heal stops.
    Pause(self::promotion::PauseArgs),
    /// End an app's pause.
    Resume(self::promotion::ResumeArgs),
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
    /// Answer /validate and /mutate only for TLS clients whose certificate
    /// chains to this CA (PEM) — the apiserver, set up to present a client
    /// certificate to webhooks. /healthz and /readyz stay open. Reloaded
    /// with the serving certificate.
    #[arg(long, env = "GITGATE_CLIENT_CA")]
    pub client_ca: Option<PathBuf>,
    /// With --client-ca: also require the client certificate's common
    /// name or a DNS name to be one of these (repeatable).
    #[arg(long = "client-name", env = "GITGATE_CLIENT_NAMES", value_delimiter = ',', requires = "client_ca")]
    pub client_names: Vec<String>,
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
    /// Reviews read and decided at once. With --client-ca only the
    /// apiserver's reviews take these seats.
    #[arg(long, env = "GITGATE_MAX_IN_FLIGHT", default_value_t = 64)]
    pub max_in_flight: usize,
    /// Reviews that wait for a seat; beyond it a review gets 429 with
    /// Retry-After at once.
    #[arg(long, env = "GITGATE_MAX_QUEUE", default_value_t = 1024)]
    pub max_queue: usize,
    /// Longest wait for a seat before a 429.
    #[arg(long, default_value = "1s")]
    pub queue_timeout: String,
    /// Established connections in each pool: the apiserver's (a client
    /// certificate from --client-ca, named by --client-name when given)
    /// and everybody else's. A connection finding its pool full is closed.
    #[arg(long, env = "GITGATE_MAX_CONNECTIONS", default_value_t = 1024)]
    pub max_connections: usize,
    /// TLS handshakes pending at once; a new connection beyond it cuts
    /// off the oldest pending handshake.
    #[arg(long, default_value_t = 256)]
    pub max_handshakes: usize,
    /// Streams one HTTP/2 connection may have open at once.
    #[arg(long, default_value_t = 100)]
    pub http2_max_streams: usize,
    /// CEL policy files or directories (default: ./policies when it exists).
    #[arg(long = "policies", env = "GITGATE_POLICIES")]
    pub policies: Vec<PathBuf>,
    /// The reconciler's username (the `git.reconciler` variable). Default:
    /// whoever gitgate's own Kubernetes credentials say it is (a
    /// SelfSubjectReview), else system:serviceaccount:gitgate:gitgate.
    #[arg(long, env = "GITGATE_RECONCILER")]
    pub reconciler: Option<String>,
    /// Git repository to track: a URL (https://, ssh://, file://) or a
    /// local directory (default: the bundled example GitOps repo).
    #[arg(long, env = "GITGATE_REPO")]
    pub repo: Option<String>,
    /// Branch, tag or commit to track.
    #[arg(long, env = "GITGATE_REV", default_value = "HEAD")]
    pub rev: String,
    /// Spoke mode: this gitgate runs in (and gates) the cluster of this
    /// name in `gitgate.yaml`, and renders, applies and enforces only the
    /// apps whose destination it is. Every cluster of a fleet runs its own
    /// gitgate on the same repository.
    #[arg(long, env = "GITGATE_CLUSTER")]
    pub cluster: Option<String>,
    /// The fleet file: how to reach every spoke's status API (URL, token
    /// file, CA). Adds the fleet view (`/ui/fleet`, `/api/v1/fleet`,
    /// `gitgate status --fleet`) to this gitgate.
    #[arg(long, env = "GITGATE_FLEET")]
    pub fleet: Option<PathBuf>,
    /// Run as the fleet's hub only: no Git, no sync, no webhooks — the
    /// fleet view of `--fleet`'s spokes, behind the dashboard's login.
    #[arg(long, requires = "fleet")]
    pub hub: bool,
    /// How often the fleet's spokes are asked for their status.
    #[arg(long, env = "GITGATE_FLEET_INTERVAL", default_value = "10s")]
    pub fleet_interval: String,
    /// Path of the apps file in the repository (`clusters/production/gitgate.yaml`:
    /// one repository, one file per cluster); app paths stay relative to the
    /// repository's root.
    #[arg(long = "config", env = "GITGATE_CONFIG", default_value = crate::render::config::DEFAULT_CONFIG_PATH)]
    pub config_path: String,
    /// How often to fetch the repository.
    #[arg(long, default_value = "30s")]
    pub poll_interval: String,
    /// Shared secret of push webhooks (GitHub/Gitea HMAC, GitLab token);
    /// `POST /hooks/git` is served only when it is set.
    #[arg(long, env = "GITGATE_HOOK_SECRET", hide_env_values = true)]
    pub hook_secret: Option<secrecy::SecretString>,
    /// Where fetched repositories are cached.
    #[arg(long, default_value = "gitgate-data/git")]
    pub git_cache: PathBuf,
    /// Groups whose members may change a managed object in an emergency by
    /// setting `gitgate.dev/break-glass: "<reason>"` (repeatable).
    #[arg(long = "break-glass-group", env = "GITGATE_BREAK_GLASS_GROUPS", value_delimiter = ',')]
    pub break_glass_groups: Vec<String>,
    /// OpenSSH allowed_signers file: the keys whose SSH commit signatures
    /// verify (`principals [options] keytype key`; `namespaces`,
    /// `valid-after`, `valid-before` honoured). Read at each check.
    #[arg(long, env = "GITGATE_ALLOWED_SIGNERS")]
    pub allowed_signers: Option<PathBuf>,
    /// OpenPGP public keyring (an armored or binary `gpg --export`): every
    /// key in it may sign commits. Needs `gpg` on PATH.
    #[arg(long, env = "GITGATE_GPG_KEYRING")]
    pub gpg_keyring: Option<PathBuf>,
    /// Every new commit of every app must be signed by an allowed key,
    /// whatever gitgate.yaml says (`requireSigned` adds apps, never removes).
    #[arg(long, env = "GITGATE_REQUIRE_SIGNED")]
    pub require_signed: bool,
    #[command(flatten)]
    pub secrets: Box<self::secrets::ServeSecretsArgs>,
    #[command(flatten)]
    pub audit: self::audit::ServeAuditArgs,
    #[command(flatten)]
    pub sync: Box<self::sync::ServeSyncArgs>,
    #[command(flatten)]
    pub dashboard: crate::dashboard::DashboardArgs,
}

#[derive(Subcommand, Debug)]
pub enum PolicyCommand {
    /// Evaluate policies against their test cases offline (like `kyverno test`).
    Test(PolicyTestArgs),
    /// Print the table of CEL functions, macros and syntax the engine runs,
    /// each row's example evaluated by the engine (policies/README.md holds a copy).
    Functions,
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
        Command::Policy(PolicyCommand::Functions) => {
            print!("{}", crate::policy::functions_table());
            Ok(ExitCode::SUCCESS)
        }
        Command::Vap(args) => {
            print!("{}", crate::policy::vap::to_yaml(&args.reconciler, &args.break_glass_groups)?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Keygen(args) => self::secrets::keygen(args),
        Command::Seal(args) => self::secrets::seal(args),
        Command::Reseal(args) => self::secrets::reseal(args),
        Command::Recipients(args) => self::secrets::recipients_cmd(args),
        Command::Status(args) => self::sync::status(args),
        Command::Approve(args) => self::promotion::approve(args),
        Command::Pause(args) => self::promotion::pause(args),
        Command::Resume(args) => self::promotion::resume(args),
        Command::Diff(args) => self::sync::diff(args),
        Command::Fleet(command) => self::fleet::run(command),
        Command::Rollback(args) => {
            crate::sync::rollback::run(args)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Audit(args) => Ok(self::audit::run(args)?),
        Command::Render(args) => {
            self::render::run(args)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Serve(args) if args.hub => {
            let settings = hub::Settings::from_args(*args)?;
            server_runtime()?.block_on(hub::serve(settings))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Serve(args) => {
            let settings = serve::Settings::from_args(*args)?;
            server_runtime()?.block_on(serve::serve(settings))?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// The multi-threaded runtime a server runs on.
fn server_runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().context("failed to start the runtime")
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

/// Loads the policies given, or `./policies` when none are given and it
/// exists; the built-in provenance policy is enforced unless one of them
/// replaces it (same name) — alone when there are no policy files.
fn load_policies(paths: &[PathBuf]) -> anyhow::Result<PolicySet> {
    let paths: Vec<PathBuf> = if paths.is_empty() {
        let default = PathBuf::from("policies");
        if default.is_dir() { vec![default] } else { Vec::new() }
    } else {
        paths.to_vec()
    };
    if paths.is_empty() {
        let set = PolicySet::builtin()?;
        tracing::info!(
            bindings = set.len(),
            "no policy files (--policies, ./policies): enforcing the built-in provenance policy"
        );
        return Ok(set);
    }
    let set = PolicySet::load_over_builtin(&paths)?;
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
        Some(f) => vec![f],
        None => {
            // every `tests/` folder under the policy directories: the
            // policy loader skips them at any depth
            let dirs: Vec<&PathBuf> = args.policies.iter().filter(|p| p.is_dir()).collect();
            anyhow::ensure!(!dirs.is_empty(), "give --fixtures, or a policy directory");
            let mut found = Vec::new();
            for d in dirs {
                test_dirs(d, &mut found)?;
            }
            found
        }
    };
    let mut results = Vec::new();
    for dir in &fixtures {
        results.extend(crate::policy::testing::run(&set, dir)?);
    }
    print!("{}", crate::policy::testing::table(&results));
    if results.is_empty() {
        let dirs: Vec<String> = fixtures.iter().map(|d| d.display().to_string()).collect();
        eprintln!("no test cases found under {}", if dirs.is_empty() { "tests/".to_owned() } else { dirs.join(", ") });
        return Ok(ExitCode::FAILURE);
    }
    Ok(if results.iter().all(|r| r.passed) { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

/// The `tests` folders under `dir`, at any depth, sorted.
fn test_dirs(dir: &std::path::Path, out: &mut Vec<PathBuf>) -> anyhow::Result<()> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("failed to read {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir())
        .collect();
    entries.sort();
    for p in entries {
        if p.file_name().is_some_and(|n| n == "tests") {
            out.push(p);
        } else {
            test_dirs(&p, out)?;
        }
    }
    Ok(())
}
