//! `gitgate serve`: the flags validated once into [`Settings`], then the
//! process wired as a numbered list (TLS, audit and Git, the sync loop, the
//! admission pipeline, readiness, routes, listen and drain). Each step is a
//! library call; this file only connects them.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use arc_swap::ArcSwapOption;
use prometheus_client::registry::Registry;

use super::ServeArgs;
use crate::admission::{self, AdmissionState, Decider, Limits, LogRecorder};
use crate::audit::AuditLog;
use crate::config::{RawOverload, RawServe, ServeConfig, in_range, parse_duration};
use crate::dashboard::DashboardArgs;
use crate::desired::follow::{self, Repo};
use crate::desired::tracker::{Signing, Tracker};
use crate::policy::{PolicySet, PolicyStage};
use crate::provenance::Snapshot;
use crate::server::{self, ConnLimits};
use crate::source::GitSource;
use crate::tls;

/// Who may call the webhooks (`--client-ca`, `--client-name`).
pub struct Callers {
    pub client_ca: Option<PathBuf>,
    pub names: Vec<String>,
}

/// Every flag of `serve`, validated once.
pub struct Settings {
    pub config: ServeConfig,
    pub callers: Callers,
    pub policies: Arc<PolicySet>,
    pub reconciler: Option<String>,
    pub repo: Repo,
    pub poll: Duration,
    pub hook_secret: Option<secrecy::SecretString>,
    pub break_glass_groups: Vec<String>,
    pub break_glass_ttl: Duration,
    pub secrets: Box<super::secrets::ServeSecretsArgs>,
    pub audit: super::audit::ServeAuditArgs,
    pub sync: Box<super::sync::ServeSyncArgs>,
    pub dashboard: DashboardArgs,
    /// `--fleet`: the spokes whose status this gitgate shows, and how often.
    pub fleet: Option<Fleet>,
}

/// The fleet view's settings (`--fleet`, `--fleet-interval`), checked once.
pub struct Fleet {
    pub file: crate::fleet::file::FleetFile,
    pub interval: Duration,
}

impl Fleet {
    pub fn from_args(args: &ServeArgs) -> anyhow::Result<Option<Fleet>> {
        let Some(path) = &args.fleet else { return Ok(None) };
        let interval = in_range(
            "--fleet-interval",
            parse_duration(&args.fleet_interval)?,
            Duration::from_secs(1),
            Duration::from_secs(3600),
        )?;
        Ok(Some(Fleet { file: crate::fleet::file::FleetFile::load(path)?, interval }))
    }

    /// The hub (its metrics in `registry`), asking the spokes every interval.
    pub fn start(
        self,
        registry: &mut Registry,
    ) -> anyhow::Result<(Arc<crate::fleet::hub::Hub>, tokio::task::JoinHandle<()>)> {
        let metrics = crate::fleet::hub::HubMetrics::register(registry);
        let names: Vec<&str> = self.file.spokes.iter().map(|s| s.cluster.as_str()).collect();
        tracing::info!(spokes = ?names, every = ?self.interval, "fleet view: asking the spokes for their status");
        let hub = Arc::new(crate::fleet::hub::Hub::new(self.file, metrics));
        let task = tokio::spawn(hub.clone().run(self.interval));
        Ok((hub, task))
    }
}

/// `serve`'s listener flags, checked (the hub's too).
pub fn serve_config(args: &ServeArgs) -> anyhow::Result<ServeConfig> {
    Ok(ServeConfig::from_raw(RawServe {
        listen: args.listen,
        cert_dir: args.cert_dir.clone(),
        tls_cert: args.tls_cert.clone(),
        tls_key: args.tls_key.clone(),
        tls_reload_interval: &args.tls_reload_interval,
        request_timeout: &args.request_timeout,
        header_timeout: &args.header_timeout,
        max_body_bytes: args.max_body_bytes,
        drain_timeout: &args.drain_timeout,
        overload: RawOverload {
            max_in_flight: args.max_in_flight,
            max_queue: args.max_queue,
            queue_timeout: &args.queue_timeout,
            max_connections: args.max_connections,
            max_handshakes: args.max_handshakes,
            http2_max_streams: args.http2_max_streams,
        },
    })?)
}

impl Settings {
    /// Raw flags → validated settings: the one place `serve`'s flags are
    /// checked, before anything starts.
    pub fn from_args(args: ServeArgs) -> anyhow::Result<Settings> {
        let signing = signing(&args)?;
        let fleet = Fleet::from_args(&args)?;
        let config = serve_config(&args)?;
        let policies = super::load_policies(&args.policies)?;
        let poll = in_range(
            "--poll-interval",
            parse_duration(&args.poll_interval)?,
            Duration::from_secs(1),
            Duration::from_secs(24 * 3600),
        )?;
        let config_path = crate::source::RepoPath::parse(&args.config_path)
            .with_context(|| format!("--config {:?} is not a path in a repository", args.config_path))?;
        let repo = Repo {
            repo: args.repo,
            rev: args.rev,
            config_path,
            cache: args.git_cache,
            work: PathBuf::from("gitgate-data"),
            signing,
            cluster: args.cluster.clone(),
        };
        Ok(Settings {
            config,
            callers: Callers { client_ca: args.client_ca, names: args.client_names },
            policies: Arc::new(policies),
            reconciler: args.reconciler,
            repo,
            poll,
            hook_secret: args.hook_secret,
            break_glass_groups: args.break_glass_groups,
            break_glass_ttl: super::sync::break_glass_ttl(&args.sync)?,
            secrets: args.secrets,
            audit: args.audit,
            sync: args.sync,
            dashboard: args.dashboard,
            fleet,
        })
    }
}

/// `--allowed-signers`, `--gpg-keyring`, `--require-signed`, checked once.
fn signing(args: &ServeArgs) -> anyhow::Result<Signing> {
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
    Ok(Signing::new(signers, args.require_signed))
}

/// Runs the server until SIGTERM or Ctrl-C, then drains.
pub async fn serve(mut s: Settings) -> anyhow::Result<()> {
    // 1. TLS: the serving pair (a development pair generated or renewed),
    //    and who may call the webhooks.
    let (rustls, reloader) = tls_files(&s.config, &s.callers)?;
    let caller_policy = caller_policy(&s.callers);
    // 2. The audit log, and Git: the tracker of the commit in force.
    let mut registry = Registry::default();
    let audit_log = s.audit.open(&mut registry, s.repo.cluster.as_deref())?;
    let fleet = s.fleet.take().map(|f| f.start(&mut registry)).transpose()?;
    let (tracker, source) = follow::track(&s.repo, &mut registry, audit_log.clone())?;
    // 3. The sync loop (leader-elected) on the tracker's desired sets.
    let sync = start_sync(&s, &tracker, &source, &mut registry, &audit_log).await?;
    // 4. The admission pipeline: provenance and policies, break-glass
    //    windows, the secrets bridge.
    let denials = Arc::new(crate::dashboard::recent::RecentDenials::new(100).counting(sync.status.clone()));
    let state = admission_state(&s, registry, caller_policy, &audit_log, denials.clone());
    let snapshot = Arc::new(ArcSwapOption::empty());
    let namespaces = crate::sync::namespaces::NamespaceCache::new();
    let namespace_watch = sync.client.clone().map(|c| namespaces.watch(c));
    let pipeline = pipeline(&s, &sync, &snapshot, namespaces.clone(), &audit_log).await?;
    // 5. Ready (and deciding) once the first commit is rendered and traced:
    //    before that, /readyz and the webhooks answer 503.
    let (decider, ready_state) = (Arc::new(pipeline.decider), state.clone());
    let following =
        follow::follow(tracker.clone(), sync.desired.clone(), source.clone(), snapshot.clone(), move || {
            ready_state.publish(decider);
            tracing::info!("ready: deciding from the commit in force");
        });
    let tracking = tokio::spawn(tracker.clone().run(s.poll));
    // 6. Routes: the webhooks, the dashboard and its API, metrics, the
    //    recipients endpoint, push hooks.
    let parts = RouteParts {
        state: &state,
        sync: &sync,
        snapshot: &snapshot,
        source,
        denials,
        audit_log: &audit_log,
        hub: fleet.as_ref().map(|(hub, _)| hub.clone()),
    };
    let (router, metrics_server) = routes(&s, parts, pipeline.keyring, &tracker).await?;
    // 7. Listen until a signal, then drain.
    let running = listen(&s, &state, rustls, router).await?;
    let reload = tokio::spawn(reloader.run(s.config.tls_reload_interval));
    if let Some(m) = &metrics_server {
        tracing::info!(addr = %m.addr, "metrics on http://{}/metrics", m.addr);
    }
    shutdown_signal().await;
    tracing::info!(drain = ?s.config.drain_timeout, "shutting down: draining in-flight requests");
    for task in [reload, tracking, following].into_iter().chain(fleet.map(|(_, task)| task)) {
        task.abort();
    }
    sync.shutdown().await;
    for task in pipeline.tasks.iter().chain(namespace_watch.as_ref()) {
        task.abort();
    }
    running.shutdown(s.config.drain_timeout).await?;
    if let Some(m) = metrics_server {
        m.shutdown(s.config.drain_timeout).await?;
    }
    audit_log.close()?;
    Ok(())
}

/// The serving pair (the development pair generated when missing, renewed
/// when expiring or expired, here and at every reload round) and its
/// reloader.
pub(super) fn tls_files(
    config: &ServeConfig,
    callers: &Callers,
) -> anyhow::Result<(axum_server::tls_rustls::RustlsConfig, tls::Reloader)> {
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
    Ok((rustls, reloader))
}

fn caller_policy(callers: &Callers) -> admission::CallerPolicy {
    match &callers.client_ca {
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
    }
}

/// Starts the sync loop; a refused unsigned commit is then recorded once
/// (and notified): by the leader. The admission-only replicas
/// (`--sync=off`) report it in their status and metrics only; plan mode
/// records it.
async fn start_sync(
    s: &Settings,
    tracker: &Arc<Tracker>,
    source: &Arc<GitSource>,
    registry: &mut Registry,
    audit_log: &Arc<AuditLog>,
) -> anyhow::Result<super::sync::Running> {
    let ca = s.config.cert_dir.join(tls::CA_CERT);
    let wiring = super::sync::Wiring {
        tracker,
        source: source.clone(),
        registry,
        audit: Some(audit_log.clone()),
        reconciler: s.reconciler.clone(),
        break_glass_groups: s.break_glass_groups.clone(),
        cluster: s.repo.cluster.clone(),
        ca_pem: std::fs::read(&ca).ok(),
        ca_file: Some(ca),
    };
    let sync = super::sync::start(&s.sync, wiring).await?;
    let recording: Arc<dyn Fn() -> bool + Send + Sync> = match (&sync.leading, s.sync.sync) {
        (Some(leading), _) => {
            let leading = leading.clone();
            Arc::new(move || *leading.borrow())
        }
        (None, super::sync::SyncMode::Off) => Arc::new(|| false),
        (None, _) => Arc::new(|| true),
    };
    tracker.record_only_when(recording);
    Ok(sync)
}

fn admission_state(
    s: &Settings,
    registry: Registry,
    callers: admission::CallerPolicy,
    audit_log: &Arc<AuditLog>,
    denials: Arc<crate::dashboard::recent::RecentDenials>,
) -> Arc<AdmissionState> {
    let limits = Limits {
        max_body_bytes: s.config.max_body_bytes,
        request_timeout: s.config.request_timeout,
        max_in_flight: s.config.overload.max_in_flight,
        max_queue: s.config.overload.max_queue,
        queue_timeout: s.config.overload.queue_timeout,
    };
    let recorder = crate::audit::Tee(vec![audit_log.clone(), Arc::new(LogRecorder), denials]);
    let state = AdmissionState::new(registry, limits, Arc::new(recorder)).with_callers(callers);
    Arc::new(if s.audit.audit_fail_open { state.fail_open_on_record_error() } else { state })
}

/// What the admission pipeline is built into.
struct Pipeline {
    decider: Decider,
    /// The cluster's age identities, when the secrets bridge holds them.
    keyring: Option<crate::secrets::Keyring>,
    /// Background tasks to stop at shutdown.
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// The decider: on /validate, the provenance facts, then the policies (the
/// built-in provenance policy when no file is given); on /mutate, the
/// break-glass window stamp first, then the secrets bridge.
async fn pipeline(
    s: &Settings,
    sync: &super::sync::Running,
    snapshot: &Arc<ArcSwapOption<Snapshot>>,
    namespaces: Arc<crate::sync::namespaces::NamespaceCache>,
    audit_log: &Arc<AuditLog>,
) -> anyhow::Result<Pipeline> {
    let uses_authorizer = s.policies.uses_authorizer();
    let provenance = crate::provenance::ProvenanceStage {
        snapshot: snapshot.clone(),
        who: crate::provenance::Identity {
            reconciler: sync.reconciler.clone(),
            strict: true,
            break_glass_groups: s.break_glass_groups.clone(),
            break_glass_ttl: s.break_glass_ttl,
        },
    };
    let policy_stage = PolicyStage {
        policies: s.policies.clone(),
        namespaces,
        reconciler: sync.reconciler.clone(),
        break_glass_groups: s.break_glass_groups.clone(),
    };
    // Policies reading `authorizer` are answered by SubjectAccessReviews;
    // the others keep the pure stage.
    let decider = if uses_authorizer {
        if sync.client.is_none() || s.callers.client_ca.is_none() {
            tracing::warn!(
                "a policy reads `authorizer`, but gitgate sends SubjectAccessReviews only with a cluster and --client-ca: its checks fail (and its failurePolicy decides)"
            );
        }
        let reviewer = sync.client.clone().map(|c| Arc::new(crate::policy::authz::Reviewer::new(c)));
        Decider::new()
            .with_validating(Arc::new(provenance))
            .with_async_validating(Arc::new(crate::policy::AuthorizingPolicyStage { stage: policy_stage, reviewer }))
    } else {
        Decider::new().with_validating(Arc::new(provenance)).with_validating(Arc::new(policy_stage))
    };
    let decider = decider.with_mutating(Arc::new(crate::provenance::glass::StampStage {
        groups: s.break_glass_groups.clone(),
        ttl: s.break_glass_ttl,
    }));
    let cluster = sync.client.clone().map(|c| (c, s.sync.namespace.clone()));
    let audit_sink = cluster.clone().map(|(c, ns)| crate::audit::cluster::attach(audit_log, c, &ns));
    let unseal = super::secrets::UnsealWiring {
        reconciler: sync.reconciler.clone(),
        commit: snapshot.clone(),
        client_auth: s.callers.client_ca.is_some(),
    };
    let super::secrets::SecretsWiring { decider, keyring, tasks } =
        super::secrets::with_secrets_stage(decider, &s.secrets, cluster, unseal).await?;
    // The sync loop checks sealed Secrets' values with the same identities
    // (a reconciler that holds none, as the chart's, does not).
    if let (Some(slot), Some(keyring)) = (&sync.sealed_values, &keyring) {
        slot.store(Some(Arc::new(keyring.clone())));
    }
    Ok(Pipeline { decider, keyring, tasks: tasks.into_iter().chain(audit_sink).collect() })
}

/// What the routes serve from.
struct RouteParts<'a> {
    state: &'a Arc<AdmissionState>,
    sync: &'a super::sync::Running,
    snapshot: &'a Arc<ArcSwapOption<Snapshot>>,
    source: Arc<GitSource>,
    denials: Arc<crate::dashboard::recent::RecentDenials>,
    audit_log: &'a Arc<AuditLog>,
    hub: Option<Arc<crate::fleet::hub::Hub>>,
}

/// The router, and the separate metrics server when `--metrics-listen`
/// gives one.
async fn routes(
    s: &Settings,
    p: RouteParts<'_>,
    keyring: Option<crate::secrets::Keyring>,
    tracker: &Arc<Tracker>,
) -> anyhow::Result<(axum::Router, Option<server::Running>)> {
    let dashboard = crate::dashboard::DashboardState::new(
        p.sync.status.clone(),
        p.snapshot.clone(),
        p.denials,
        p.source,
        Some(p.audit_log.path().to_path_buf()),
    )
    .with_live_tree(p.sync.client.clone());
    let gate =
        crate::dashboard::Gate::start(&s.dashboard, p.sync.client.clone(), s.config.listen, Some(p.snapshot.clone()))
            .await
            .context("failed to set up the dashboard's login")?;
    // `GET /api/v1/apps/{name}/diff` behind the same login as `/api/v1/apps`.
    let diffs = crate::sync::diff::router(p.sync.diffs.clone());
    let actions = match &p.sync.promoter {
        Some(promoter) => crate::promotion::api::router(Arc::new(crate::promotion::api::Actions {
            promoter: promoter.clone(),
            audit: Some(p.audit_log.clone()),
            max_pause: p.sync.max_pause,
        })),
        None => axum::Router::new(),
    };
    let fleet = p.hub.map_or_else(crate::dashboard::fleet::without_fleet, crate::dashboard::fleet::routes);
    let mut router = admission::routes(p.state.clone()).merge(crate::dashboard::router_with(
        Arc::new(dashboard),
        Arc::new(gate),
        actions.merge(diffs).merge(fleet),
    ));
    let metrics_server = match s.dashboard.metrics_listen {
        Some(addr) => Some(server::start_plain(addr, admission::metrics_router(p.state.clone())).await?),
        None => {
            router = router.merge(admission::metrics_router(p.state.clone()));
            None
        }
    };
    if let Some(keyring) = keyring {
        router = router.merge(crate::secrets::cluster::router(keyring));
    }
    match &s.hook_secret {
        Some(secret) => {
            let hooks = crate::source::hooks::HookState::new(secret.clone(), tracker.trigger());
            router = router.merge(crate::source::hooks::router(Arc::new(hooks)));
        }
        None => tracing::info!("no --hook-secret: POST /hooks/git is off; Git is polled every {:?}", s.poll),
    }
    Ok((router, metrics_server))
}

async fn listen(
    s: &Settings,
    state: &Arc<AdmissionState>,
    rustls: axum_server::tls_rustls::RustlsConfig,
    router: axum::Router,
) -> anyhow::Result<server::Running> {
    let conn = ConnLimits {
        handshake_timeout: s.config.header_timeout,
        header_timeout: s.config.header_timeout,
        max_handshakes: s.config.overload.max_handshakes,
        max_connections: s.config.overload.max_connections,
        http2_max_streams: s.config.overload.http2_max_streams,
        reserved_names: s.callers.names.clone(),
        low_priority_open: s.callers.client_ca.is_some(),
    };
    let counters = server::ServerCounters {
        handshake_failures: state.metrics().handshake_failures.clone(),
        pool_full: state.metrics().pool_full.clone(),
    };
    let running = server::start_with(s.config.listen, rustls, router, conn, counters).await?;
    tracing::info!(addr = %running.addr, "gitgate admission server listening on https://{}", running.addr);
    Ok(running)
}
pub(super) async fn shutdown_signal() {
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
