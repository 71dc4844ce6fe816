//! The command line: parse, validate once, dispatch. `anyhow` lives here
//! and nowhere else.

pub mod audit;
pub mod promotion;
pub mod render;
pub mod secrets;
pub mod sync;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::admission::{self, AdmissionState, Decider, Limits, LogRecorder};
use crate::config::{RawServe, ServeConfig};
use crate::policy::{PolicySet, PolicyStage};
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
        Command::Rollback(args) => {
            crate::sync::rollback::run(args)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Audit(args) => Ok(self::audit::run(args)?),
        Command::Render(args) => {
            self::render::run(args)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Serve(args) => {
            let signing = signing(&args)?;
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
                overload: crate::config::RawOverload {
                    max_in_flight: args.max_in_flight,
                    max_queue: args.max_queue,
                    queue_timeout: &args.queue_timeout,
                    max_connections: args.max_connections,
                    max_handshakes: args.max_handshakes,
                    http2_max_streams: args.http2_max_streams,
                },
            })?;
            let policies = load_policies(&args.policies)?;
            let poll = crate::config::in_range(
                "--poll-interval",
                crate::config::parse_duration(&args.poll_interval)?,
                std::time::Duration::from_secs(1),
                std::time::Duration::from_secs(24 * 3600),
            )?;
            let repo = RepoArgs {
                repo: args.repo.clone(),
                rev: args.rev.clone(),
                config_path: crate::source::RepoPath::parse(&args.config_path)
                    .with_context(|| format!("--config {:?} is not a path in a repository", args.config_path))?,
                poll,
                hook_secret: args.hook_secret.clone(),
                cache: args.git_cache.clone(),
                break_glass_groups: args.break_glass_groups.clone(),
                signing,
            };
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .context("failed to start the runtime")?;
            let callers = Callers { client_ca: args.client_ca, names: args.client_names };
            rt.block_on(serve(
                config,
                callers,
                policies,
                args.reconciler,
                repo,
                args.secrets,
                args.audit,
                args.sync,
                args.dashboard,
            ))?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// `--allowed-signers`, `--gpg-keyring`, `--require-signed`, checked once.
fn signing(args: &ServeArgs) -> anyhow::Result<crate::source::poll::Signing> {
    let signers =
        crate::source::signature::Signers::from_files(args.allowed_signers.clone(), args.gpg_keyring.as_deref())?;
    anyhow::ensure!(
        !args.require_signed || signers.is_configured(),
        "--require-signed needs --allowed-signers or --gpg-keyring (who may sign)"
    );
    if signers.is_configured() {
        tracing::info!(
            allowed_signers = ?args.allowed_signers,
            gpg_keys = signers.gpg_fingerprints.len(),
            require_all = args.require_signed,
            "commit signatures are verified"
        );
    }
    Ok(crate::source::poll::Signing::new(signers, args.require_signed))
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

/// What `serve` tracks in Git.
struct RepoArgs {
    repo: Option<String>,
    rev: String,
    config_path: crate::source::RepoPath,
    poll: std::time::Duration,
    hook_secret: Option<secrecy::SecretString>,
    cache: PathBuf,
    break_glass_groups: Vec<String>,
    signing: crate::source::poll::Signing,
}

/// Opens the repository to track (the bundled example when none is given,
/// committed from its files; a plain directory likewise) and starts the
/// tracker that keeps its desired set current.
fn track(
    repo: &RepoArgs,
    registry: &mut prometheus_client::registry::Registry,
    audit: Arc<dyn crate::sync::reconcile::SyncRecorder>,
) -> anyhow::Result<(Arc<crate::source::poll::Tracker>, Arc<crate::source::fetch::GitSource>)> {
    use self::render::write_example;
    use crate::render::engine::{RenderOptions, Renderer};
    use crate::source::{fetch::GitSource, local};
    let work = PathBuf::from("gitgate-data");
    let url = match &repo.repo {
        Some(r) if r.contains("://") || local::is_git_repo(std::path::Path::new(r)) => r.clone(),
        other => {
            let dir = match other {
                Some(d) => PathBuf::from(d),
                None => {
                    let dir = work.join("example");
                    let _ = std::fs::remove_dir_all(&dir);
                    write_example(&dir)?;
                    dir
                }
            };
            let into = work.join("example-git");
            let _ = std::fs::remove_dir_all(&into);
            local::init_from_dir(&dir, &into)?.display().to_string()
        }
    };
    let source = Arc::new(GitSource::open(&url, &repo.cache)?);
    let renderer =
        Arc::new(Renderer::new(RenderOptions { config_path: repo.config_path.clone(), ..RenderOptions::default() }));
    tracing::info!(repo = %source.display_url(), rev = %repo.rev, "tracking Git");
    let tracker = crate::source::poll::Tracker::new(source.clone(), repo.rev.clone(), renderer)
        .with_signing(repo.signing.clone())
        .with_audit(audit)
        .with_metrics(registry);
    Ok((Arc::new(tracker), source))
}

/// Keeps the provenance snapshot in step with the tracker: each new
/// desired set is compiled once (commit subjects read off the hot path) and
/// swapped in whole.
fn follow(
    tracker: Arc<crate::source::poll::Tracker>,
    mut updates: tokio::sync::watch::Receiver<Option<Arc<crate::render::DesiredSet>>>,
    source: Arc<crate::source::fetch::GitSource>,
    slot: Arc<arc_swap::ArcSwapOption<crate::provenance::Snapshot>>,
    on_first: impl FnOnce() + Send + 'static,
) -> tokio::task::JoinHandle<()> {
    let mut on_first = Some(on_first);
    tokio::spawn(async move {
        loop {
            let current = updates.borrow_and_update().clone();
            if let Some(desired) = current {
                let source = source.clone();
                let commit = desired.commit();
                let tracker = tracker.clone();
                match tokio::task::spawn_blocking(move || {
                    let signed = tracker.signed_commits(&desired);
                    crate::provenance::Snapshot::build(desired, &source.repo()).with_signed(signed)
                })
                .await
                {
                    Ok(snap) => {
                        slot.store(Some(Arc::new(snap)));
                        tracing::info!(commit = %commit, "provenance follows the new commit");
                        if let Some(ready) = on_first.take() {
                            ready();
                        }
                    }
                    Err(e) => tracing::error!(error = %e, "failed to build the provenance snapshot"),
                }
            }
            if updates.changed().await.is_err() {
                return;
            }
        }
    })
}

// One argument per flattened flag group of `serve`.
/// Who may call the webhooks (`--client-ca`, `--client-name`).
struct Callers {
    client_ca: Option<PathBuf>,
    names: Vec<String>,
}

#[allow(clippy::too_many_arguments)]
async fn serve(
    config: ServeConfig,
    callers: Callers,
    policies: PolicySet,
    reconciler: Option<String>,
    repo: RepoArgs,
    secrets: Box<self::secrets::ServeSecretsArgs>,
    audit_args: self::audit::ServeAuditArgs,
    sync_args: Box<self::sync::ServeSyncArgs>,
    dashboard_args: crate::dashboard::DashboardArgs,
) -> anyhow::Result<()> {
    // The development pair: generated when missing, renewed when expiring
    // or expired (here and at every reload round).
    let dev_pair = config.generate_certs.then(|| tls::DevPair::new(&config.cert_dir));
    if let Some(pair) = &dev_pair {
        match pair.ensure() {
            Ok(Some(done)) => tls::log_renewal(&pair.dir, done),
            Ok(None) => {}
            // A pair that is there is served even when renewing it failed
            // (a read-only directory): the reload rounds try again.
            Err(e) if config.tls_cert.exists() && config.tls_key.exists() => tracing::warn!(
                dir = %pair.dir.display(), error = %crate::error_chain(&e), "failed to renew the development certificate"
            ),
            Err(e) => return Err(e.into()),
        }
    }
    let (rustls, reloader) = tls::Reloader::load_files(tls::Files {
        cert: config.tls_cert.clone(),
        key: config.tls_key.clone(),
        client_ca: callers.client_ca.clone(),
    })?;
    let reloader = match dev_pair {
        Some(pair) => reloader.renewing(pair),
        None => reloader,
    };
    let caller_policy = match &callers.client_ca {
        Some(ca) => {
            tracing::info!(ca = %ca.display(), names = ?callers.names, "webhooks answer only clients with a certificate from the client CA");
            admission::CallerPolicy::ClientCertificate { names: callers.names.clone() }
        }
        None => {
            tracing::warn!(
                "no --client-ca: any caller that reaches the port gets admission decisions, and its userInfo is recorded as unauthenticated"
            );
            admission::CallerPolicy::Open
        }
    };

    let limits = Limits {
        max_body_bytes: config.max_body_bytes,
        request_timeout: config.request_timeout,
        max_in_flight: config.overload.max_in_flight,
        max_queue: config.overload.max_queue,
        queue_timeout: config.overload.queue_timeout,
    };
    let mut registry = prometheus_client::registry::Registry::default();
    let audit_log = audit_args.open(&mut registry)?;
    let denials = Arc::new(crate::dashboard::recent::RecentDenials::new(100));
    let recorder = crate::audit::Tee(vec![audit_log.clone(), Arc::new(LogRecorder), denials.clone()]);
    let (tracker, source) = track(&repo, &mut registry, audit_log.clone())?;
    let sync = self::sync::start(
        &sync_args,
        self::sync::Wiring {
            tracker: &tracker,
            source: source.clone(),
            registry: &mut registry,
            audit: Some(audit_log.clone()),
            reconciler: reconciler.clone(),
            break_glass_groups: repo.break_glass_groups.clone(),
            ca_pem: std::fs::read(config.cert_dir.join(tls::CA_CERT)).ok(),
            ca_file: Some(config.cert_dir.join(tls::CA_CERT)),
        },
    )
    .await?;
    // A refused unsigned commit is one audit record (and notification): the
    // leader's; the admission-only replicas (`--sync=off`) report it in
    // their status and metrics only. Plan mode records it.
    let recording: Arc<dyn Fn() -> bool + Send + Sync> = match (&sync.leading, sync_args.sync) {
        (Some(leading), _) => {
            let leading = leading.clone();
            Arc::new(move || *leading.borrow())
        }
        (None, self::sync::SyncMode::Off) => Arc::new(|| false),
        (None, _) => Arc::new(|| true),
    };
    tracker.record_only_when(recording);
    let state = AdmissionState::new(registry, limits, Arc::new(recorder)).with_callers(caller_policy);
    let state = Arc::new(if audit_args.audit_fail_open { state.fail_open_on_record_error() } else { state });
    let snapshot = Arc::new(arc_swap::ArcSwapOption::empty());
    let break_glass_ttl = self::sync::break_glass_ttl(&sync_args)?;
    // namespaceObject and namespace selectors: a snapshot of the cluster's
    // Namespaces, kept by a watch (empty without a cluster).
    let namespaces = crate::sync::namespaces::NamespaceCache::new();
    let namespace_watch = sync.client.clone().map(|c| namespaces.watch(c));
    let mut decider = Decider::new();
    // Always: the provenance facts (and the built-in provenance policy when
    // no policy file is given) make Git the only deploy path.
    let uses_authorizer = policies.uses_authorizer();
    let policy_stage = PolicyStage {
        policies: Arc::new(policies),
        namespaces: namespaces.clone(),
        reconciler: sync.reconciler.clone(),
        provenance: Some(snapshot.clone()),
        strict: true,
        break_glass_groups: repo.break_glass_groups.clone(),
        break_glass_ttl,
    };
    // Policies reading `authorizer` are answered by SubjectAccessReviews;
    // the others keep the pure stage.
    decider = if uses_authorizer {
        if sync.client.is_none() || callers.client_ca.is_none() {
            tracing::warn!(
                "a policy reads `authorizer`, but gitgate sends SubjectAccessReviews only with a cluster and --client-ca: its checks fail (and its failurePolicy decides)"
            );
        }
        let reviewer = sync.client.clone().map(|c| Arc::new(crate::policy::authz::Reviewer::new(c)));
        decider.with_async_validating(Arc::new(crate::policy::AuthorizingPolicyStage { stage: policy_stage, reviewer }))
    } else {
        decider.with_validating(Arc::new(policy_stage))
    };
    // First on /mutate: a break-glass change gets its window stamped.
    decider = decider.with_mutating(Arc::new(crate::provenance::glass::StampStage {
        groups: repo.break_glass_groups.clone(),
        ttl: break_glass_ttl,
    }));
    let cluster = sync.client.clone().map(|c| (c, sync_args.namespace.clone()));
    let audit_sink = cluster.clone().map(|(c, ns)| crate::audit::cluster::attach(&audit_log, c, &ns));
    let self::secrets::SecretsWiring { decider, keyring, tasks: secrets_tasks } = self::secrets::with_secrets_stage(
        decider,
        &secrets,
        cluster,
        self::secrets::UnsealWiring {
            reconciler: sync.reconciler.clone(),
            commit: snapshot.clone(),
            client_auth: callers.client_ca.is_some(),
        },
    )
    .await?;
    // The sync loop checks sealed Secrets' values with the same identities
    // (a reconciler that holds none, as the chart's, does not).
    if let (Some(slot), Some(keyring)) = (&sync.sealed_values, &keyring) {
        slot.store(Some(Arc::new(keyring.clone())));
    }
    // Ready (and deciding) once the first commit is rendered and traced:
    // before that, /readyz and the webhooks answer 503.
    let decider = Arc::new(decider);
    let ready_state = state.clone();
    let dashboard_source = source.clone();
    let following = follow(tracker.clone(), sync.desired.clone(), source, snapshot.clone(), move || {
        ready_state.publish(decider);
        tracing::info!("ready: deciding from the commit in force");
    });

    let tracking = tokio::spawn(tracker.clone().run(repo.poll));
    let dashboard = crate::dashboard::DashboardState::new(
        sync.status.clone(),
        snapshot.clone(),
        denials,
        dashboard_source,
        Some(audit_log.path().to_path_buf()),
    )
    .with_live_tree(sync.client.clone());
    let gate = crate::dashboard::Gate::start(&dashboard_args, sync.client.clone(), config.listen, snapshot.clone())
        .await
        .context("failed to set up the dashboard's login")?;
    // `GET /api/v1/apps/{name}/diff` behind the same login as `/api/v1/apps`.
    let diffs = crate::sync::diff::router(sync.diffs.clone());
    let actions = match &sync.promoter {
        Some(p) => crate::promotion::api::router(Arc::new(crate::promotion::api::Actions {
            promoter: p.clone(),
            audit: Some(audit_log.clone()),
            max_pause: sync.max_pause,
        })),
        None => axum::Router::new(),
    };
    let mut router = admission::routes(state.clone()).merge(crate::dashboard::router_with(
        Arc::new(dashboard),
        Arc::new(gate),
        actions.merge(diffs),
    ));
    let metrics_server = match dashboard_args.metrics_listen {
        Some(addr) => Some(server::start_plain(addr, admission::metrics_router(state.clone())).await?),
        None => {
            router = router.merge(admission::metrics_router(state.clone()));
            None
        }
    };
    if let Some(keyring) = keyring {
        router = router.merge(crate::secrets::cluster::router(keyring));
    }
    match &repo.hook_secret {
        Some(secret) => {
            let hooks = crate::source::hooks::HookState::new(secret.clone(), tracker.trigger());
            router = router.merge(crate::source::hooks::router(Arc::new(hooks)));
        }
        None => tracing::info!("no --hook-secret: POST /hooks/git is off; Git is polled every {:?}", repo.poll),
    }
    let conn = ConnLimits {
        handshake_timeout: config.header_timeout,
        header_timeout: config.header_timeout,
        max_handshakes: config.overload.max_handshakes,
        max_connections: config.overload.max_connections,
        http2_max_streams: config.overload.http2_max_streams,
        reserved_names: callers.names.clone(),
        low_priority_open: callers.client_ca.is_some(),
    };
    let counters = server::ServerCounters {
        handshake_failures: state.metrics().handshake_failures.clone(),
        pool_full: state.metrics().pool_full.clone(),
    };
    let running = server::start_with(config.listen, rustls, router, conn, counters).await?;
    let reload = tokio::spawn(reloader.run(config.tls_reload_interval));
    tracing::info!(addr = %running.addr, "gitgate admission server listening on https://{}", running.addr);
    if let Some(m) = &metrics_server {
        tracing::info!(addr = %m.addr, "metrics on http://{}/metrics", m.addr);
    }

    shutdown_signal().await;
    tracing::info!(drain = ?config.drain_timeout, "shutting down: draining in-flight requests");
    reload.abort();
    tracking.abort();
    following.abort();
    sync.shutdown().await;
    for task in secrets_tasks.iter().chain(audit_sink.as_ref()).chain(namespace_watch.as_ref()) {
        task.abort();
    }
    running.shutdown(config.drain_timeout).await?;
    if let Some(m) = metrics_server {
        m.shutdown(config.drain_timeout).await?;
    }
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
