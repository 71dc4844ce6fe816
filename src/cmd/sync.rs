//! The sync loop's command-line layer: `serve`'s sync flags, starting the
//! loop (or plan mode without a cluster), and `gitgate status`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, ValueEnum};

use crate::audit::SyncRecorder;
use crate::config::{in_range, parse_duration};
use crate::desired::tracker::Tracker;
use crate::source::fetch::GitSource;
use crate::sync::SyncConfig;
use crate::sync::diff::DiffState;
use crate::sync::guard::{Endpoint, GuardConfig};
use crate::sync::leader::{Elector, LeaseConfig};
use crate::sync::plan::PruneGuard;
use crate::sync::reconcile::{Reconciler, Targets};
use crate::sync::runtime;
use crate::sync::status::{StatusStore, SyncMetrics};
use crate::sync::target::Target;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum SyncMode {
    /// Sync when a cluster is reachable; plan mode (print what would be applied) otherwise.
    Auto,
    /// Sync; fail to start without a cluster.
    On,
    /// Serve admission only.
    Off,
}

#[derive(Args, Debug)]
pub struct ServeSyncArgs {
    /// The sync loop.
    #[arg(long, env = "GITGATE_SYNC", value_enum, default_value_t = SyncMode::Auto)]
    pub sync: SyncMode,
    /// kubeconfig of the default cluster (default: in-cluster, then
    /// $KUBECONFIG, then ~/.kube/config); its other contexts are the
    /// destination clusters apps name.
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// gitgate's namespace: inventories and the leader Lease live there.
    #[arg(long, env = "GITGATE_NAMESPACE", default_value = "gitgate")]
    pub namespace: String,
    /// Applies in flight at once inside a wave.
    #[arg(long, default_value_t = 16)]
    pub sync_concurrency: usize,
    /// Requests per second to the apiserver (sustained).
    #[arg(long, default_value_t = 500.0)]
    pub kube_qps: f32,
    /// Requests to the apiserver at once (burst).
    #[arg(long, default_value_t = 1000)]
    pub kube_burst: u32,
    /// Time a wave may take to become healthy.
    #[arg(long, default_value = "5m")]
    pub wave_timeout: String,
    /// Time a sync hook (a PreSync migration Job) may take to finish.
    #[arg(long, default_value = "5m")]
    pub hook_timeout: String,
    /// Full re-sync interval, even when Git did not move.
    #[arg(long, default_value = "3m")]
    pub resync_interval: String,
    /// Mass-prune guard: most objects of an app one sync may delete.
    #[arg(long, default_value_t = 50)]
    pub prune_guard_count: usize,
    /// Mass-prune guard: largest share of an app's objects one sync may delete.
    #[arg(long, default_value_t = 0.5)]
    pub prune_guard_share: f64,
    /// How long self-heal leaves a break-glass object alone.
    #[arg(long, default_value = "1h")]
    pub break_glass_ttl: String,
    /// This replica's name (Lease holder, audit records; default $POD_NAME or $HOSTNAME).
    #[arg(long)]
    pub replica: Option<String>,
    /// The leader Lease's duration (failover takes at most this long).
    #[arg(long, default_value = "15s")]
    pub lease_duration: String,
    /// Where the apiserver reaches this server (`https://host:port` or
    /// `namespace/service[:port]`); gitgate then owns and guards its
    /// webhook configurations.
    #[arg(long, env = "GITGATE_WEBHOOK_ENDPOINT")]
    pub webhook_endpoint: Option<String>,
    /// failurePolicy of the webhooks gitgate installs.
    #[arg(long, default_value = "Fail", value_parser = ["Fail", "Ignore"])]
    pub webhook_failure_policy: String,
    /// timeoutSeconds of the webhooks gitgate installs.
    #[arg(long, default_value_t = 5)]
    pub webhook_timeout_seconds: u8,
    /// Enforce only in namespaces labelled KEY=VALUE (failurePolicy as
    /// given, plus cluster-scoped objects); other namespaces get webhooks
    /// that fail open. The Helm chart passes its `webhook.enforceLabel`.
    #[arg(long, value_name = "KEY=VALUE", value_parser = parse_label)]
    pub webhook_enforce_label: Option<(String, String)>,
    /// Also install and guard the ValidatingAdmissionPolicy of `gitgate vap`.
    #[arg(long)]
    pub install_vap: bool,
    /// Longest pause `gitgate pause --for` may ask for.
    #[arg(long, default_value = "24h")]
    pub max_pause: String,
    /// The approvers' OpenSSH allowed_signers file: a tag
    /// `gitgate/approve/APP/<commit>` signed by one of them approves the
    /// commit, as `gitgate approve` does.
    #[arg(long, env = "GITGATE_APPROVAL_SIGNERS")]
    pub approval_signers: Option<PathBuf>,
}

/// `KEY=VALUE`, a label selector's one requirement.
fn parse_label(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() && !k.contains(char::is_whitespace) && !v.contains(char::is_whitespace) => {
            Ok((k.to_string(), v.to_string()))
        }
        _ => Err(format!("{s:?}: expected KEY=VALUE, e.g. gitgate.dev/enforce=true")),
    }
}

/// What `serve` keeps of the sync loop.
pub struct Running {
    pub status: Arc<StatusStore>,
    /// The reconciler's username: `--reconciler`, else gitgate's own
    /// identity on the cluster, else the chart's default.
    pub reconciler: String,
    /// The default cluster's client, when one is connected (not in plan
    /// mode; with `--sync=off` only inside a cluster or with `--kubeconfig`).
    pub client: Option<kube::Client>,
    /// Where the sync loop reads the age identities from to check sealed
    /// Secrets' values (`None`: no sync loop here).
    pub sealed_values: Option<Arc<arc_swap::ArcSwapOption<crate::secrets::Keyring>>>,
    /// Whether this replica leads the sync loop: true while it does (None
    /// in plan mode and with `--sync=off`).
    pub leading: Option<tokio::sync::watch::Receiver<bool>>,
    /// The set in force (the promotion gates applied), for the admission
    /// gate's provenance snapshot.
    pub desired: tokio::sync::watch::Receiver<Option<Arc<crate::render::DesiredSet>>>,
    /// The promotion gates (with a cluster only).
    pub promoter: Option<Arc<crate::promotion::Promoter>>,
    /// `--max-pause`.
    pub max_pause: Duration,
    /// What `GET /api/v1/apps/{name}/diff` reads ([`crate::sync::diff::router`]).
    pub diffs: Arc<DiffState>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    leader: Option<crate::sync::leader::LeaderHandle>,
}

impl Running {
    /// Stops the loop and hands the Lease over at once.
    pub async fn shutdown(self) {
        for t in &self.tasks {
            t.abort();
        }
        if let Some(l) = self.leader
            && let Err(e) = l.shutdown().await
        {
            tracing::warn!(error = %crate::error_chain(&e), "failed to release the leader Lease");
        }
    }
}

/// What the sync loop needs from `serve`.
pub struct Wiring<'a> {
    pub tracker: &'a Arc<Tracker>,
    pub source: Arc<GitSource>,
    pub registry: &'a mut prometheus_client::registry::Registry,
    pub audit: Option<Arc<dyn SyncRecorder>>,
    /// `--reconciler` when given; else who gitgate's credentials say it is.
    pub reconciler: Option<String>,
    pub break_glass_groups: Vec<String>,
    /// Spoke mode: the name of the cluster this gitgate runs in; apps
    /// deployed to it are applied here.
    pub cluster: Option<String>,
    pub ca_pem: Option<Vec<u8>>,
    /// The file `ca_pem` was read from: the guard reads it again.
    pub ca_file: Option<std::path::PathBuf>,
}

/// `--break-glass-ttl`: how long a break-glass window lasts (1 s to 7 days).
/// The webhooks stamp and check it even with `--sync=off`.
pub fn break_glass_ttl(args: &ServeSyncArgs) -> anyhow::Result<Duration> {
    let max = Duration::from_secs(7 * 24 * 3600);
    Ok(in_range("--break-glass-ttl", parse_duration(&args.break_glass_ttl)?, Duration::from_secs(1), max)?)
}

/// The sync flags, validated once (whatever the mode).
struct Settings {
    config: SyncConfig,
    lease_duration: Duration,
    max_pause: Duration,
    tag_signers: Option<crate::source::signature::Signers>,
}

impl Settings {
    fn from_args(args: &ServeSyncArgs) -> anyhow::Result<Settings> {
        let duration = |flag: &'static str, v: &str, min: u64, max: u64| -> anyhow::Result<Duration> {
            Ok(in_range(flag, parse_duration(v)?, Duration::from_secs(min), Duration::from_secs(max))?)
        };
        anyhow::ensure!(
            (0.0..=1.0).contains(&args.prune_guard_share),
            "--prune-guard-share must be between 0 and 1, not {}",
            args.prune_guard_share
        );
        let tag_signers = match &args.approval_signers {
            Some(file) => {
                anyhow::ensure!(file.is_file(), "--approval-signers {}: no such file", file.display());
                Some(crate::source::signature::Signers {
                    ssh_allowed_signers: Some(file.clone()),
                    ..Default::default()
                })
            }
            None => None,
        };
        let config = SyncConfig {
            namespace: args.namespace.clone(),
            concurrency: args.sync_concurrency.clamp(1, 256),
            wave_timeout: duration("--wave-timeout", &args.wave_timeout, 1, 24 * 3600)?,
            hook_timeout: duration("--hook-timeout", &args.hook_timeout, 1, 24 * 3600)?,
            prune_guard: PruneGuard { max_count: args.prune_guard_count, max_share: args.prune_guard_share },
            resync_interval: duration("--resync-interval", &args.resync_interval, 1, 24 * 3600)?,
            break_glass_ttl: break_glass_ttl(args)?,
            replica: args.replica.clone().unwrap_or_else(crate::sync::leader::default_identity),
        };
        Ok(Settings {
            config,
            lease_duration: duration("--lease-duration", &args.lease_duration, 2, 600)?,
            max_pause: max_pause(args)?,
            tag_signers,
        })
    }
}

/// Starts the sync loop on a reachable cluster, plan mode without one
/// (`--sync=auto`), or admission only (`--sync=off`).
pub async fn start(args: &ServeSyncArgs, w: Wiring<'_>) -> anyhow::Result<Running> {
    let settings = Settings::from_args(args)?;
    let metrics = SyncMetrics::register(w.registry);
    let status = Arc::new(
        StatusStore::new(Some(metrics)).with_refusals(w.tracker.refusals()).with_source_faults(w.tracker.faults()),
    );
    let naming =
        w.cluster.clone().map(|name| tokio::spawn(runtime::name_cluster(w.tracker.subscribe(), status.clone(), name)));
    let mut running = start_mode(args, w, settings, status).await?;
    running.tasks.extend(naming);
    Ok(running)
}

async fn start_mode(
    args: &ServeSyncArgs,
    w: Wiring<'_>,
    settings: Settings,
    status: Arc<StatusStore>,
) -> anyhow::Result<Running> {
    if args.sync == SyncMode::Off {
        return admission_only(args, w, settings, status).await;
    }
    match runtime::connect(args.kubeconfig.as_deref()).await.map(|c| spoke(c, &w)) {
        Ok(cluster) => leading(args, w, settings, status, cluster).await,
        Err(e) if args.sync == SyncMode::Auto => {
            tracing::warn!(
                error = %crate::error_chain(&e),
                "no cluster reachable: the sync loop runs in plan mode and prints what it would apply"
            );
            status.set_role("plan");
            let task = tokio::spawn(runtime::plan_mode(w.tracker.subscribe(), status.clone()));
            Ok(Running {
                status,
                reconciler: fallback(w.reconciler),
                client: None,
                sealed_values: None,
                leading: None,
                desired: crate::promotion::promoter::passthrough(w.tracker),
                promoter: None,
                max_pause: settings.max_pause,
                diffs: diffs(args, w.tracker, None),
                tasks: vec![task],
                leader: None,
            })
        }
        Err(e) => Err(anyhow::Error::new(e).context("--sync=on and no cluster is reachable")),
    }
}

/// In spoke mode (`--cluster NAME`) the cluster gitgate runs in is the one
/// it serves: apps deployed to NAME are applied (and previewed) here.
fn spoke(mut cluster: runtime::Connected, w: &Wiring<'_>) -> runtime::Connected {
    if let Some(name) = &w.cluster {
        cluster.name.clone_from(name);
    }
    cluster
}

/// Diffs are computed on their own clients (and rate limits), as the
/// reconciler: the same credentials and field manager.
fn diffs(args: &ServeSyncArgs, tracker: &Arc<Tracker>, cluster: Option<&runtime::Connected>) -> Arc<DiffState> {
    let targets = cluster.map(|c| {
        let target = Arc::new(Target::new(&c.name, c.client.clone(), args.kube_qps, args.kube_burst));
        Arc::new(Targets::new(target, c.kubeconfig.clone(), args.kube_qps, args.kube_burst))
    });
    Arc::new(DiffState {
        source: tracker.clone(),
        targets,
        namespace: args.namespace.clone(),
        concurrency: args.sync_concurrency.clamp(1, 256),
    })
}

/// `--sync=off`: admission only. It still uses the cluster when it runs in
/// one (or is given --kubeconfig): the secrets bridge's cluster keys and the
/// audit log's checkpoints. The Helm chart's webhook pods are this; they
/// compose the set in force as the leader does.
async fn admission_only(
    args: &ServeSyncArgs,
    w: Wiring<'_>,
    settings: Settings,
    status: Arc<StatusStore>,
) -> anyhow::Result<Running> {
    tracing::info!("--sync=off: serving admission only");
    let cluster = if args.kubeconfig.is_some() || std::env::var_os("KUBERNETES_SERVICE_HOST").is_some() {
        match runtime::connect(args.kubeconfig.as_deref()).await.map(|c| spoke(c, &w)) {
            Ok(c) => {
                tracing::info!(cluster = %c.name, "--sync=off: connected for cluster keys and audit checkpoints");
                Some(c)
            }
            Err(e) => {
                tracing::warn!(error = %crate::error_chain(&e), "--sync=off: no cluster reachable");
                None
            }
        }
    } else {
        None
    };
    let (desired, promoter, tasks) = match &cluster {
        Some(c) => {
            let promotion = crate::promotion::start::Promotion {
                namespace: &args.namespace,
                tag_signers: settings.tag_signers,
                audit: None,
                records: Arc::new(|| false),
            };
            let (p, t) = crate::promotion::start::promote(&c.client, w.tracker, promotion).await;
            (p.subscribe(), Some(p), vec![t])
        }
        None => (crate::promotion::promoter::passthrough(w.tracker), None, Vec::new()),
    };
    Ok(Running {
        status,
        reconciler: fallback(w.reconciler),
        diffs: diffs(args, w.tracker, cluster.as_ref()),
        client: cluster.map(|c| c.client),
        sealed_values: None,
        leading: None,
        desired,
        promoter,
        max_pause: settings.max_pause,
        tasks,
        leader: None,
    })
}

/// A cluster: the reconciler runs while this replica holds the leader
/// Lease; the promotion gates run on every replica.
async fn leading(
    args: &ServeSyncArgs,
    w: Wiring<'_>,
    settings: Settings,
    status: Arc<StatusStore>,
    cluster: runtime::Connected,
) -> anyhow::Result<Running> {
    let client = cluster.client.clone();
    let reconciler_name = reconciler_name(w.reconciler.clone(), &client).await;
    let guard = guard(args, &w, &reconciler_name)?;
    runtime::ensure_namespace(&client, &args.namespace).await;
    let diff_state = diffs(args, w.tracker, Some(&cluster));
    let target = Arc::new(Target::new(cluster.name.clone(), client.clone(), args.kube_qps, args.kube_burst));
    let targets = Targets::new(target, cluster.kubeconfig, args.kube_qps, args.kube_burst);
    let replica = settings.config.replica.clone();
    let reconciler =
        Arc::new(Reconciler::new(settings.config, targets, w.source, status.clone(), w.audit.clone(), guard));
    let sealed_values = reconciler.sealed_values();

    let mut lease = LeaseConfig::new(args.namespace.clone(), "gitgate-leader", replica.clone());
    lease.lease_duration = settings.lease_duration;
    lease.renew_interval = (settings.lease_duration / 5).max(Duration::from_millis(500));
    let (leading, handle) = Elector::new(client.clone(), lease).spawn();
    tracing::info!(cluster = %cluster.name, replica = %replica, namespace = %args.namespace, "sync loop started; waiting for the lead");
    let records = {
        let leading = leading.clone();
        Arc::new(move || *leading.borrow())
    };
    let promotion = crate::promotion::start::Promotion {
        namespace: &args.namespace,
        tag_signers: settings.tag_signers,
        audit: w.audit.clone(),
        records,
    };
    let (promoter, promoting) = crate::promotion::start::promote(&client, w.tracker, promotion).await;
    let task = tokio::spawn(reconciler.run(promoter.subscribe(), leading.clone()));
    Ok(Running {
        status,
        reconciler: reconciler_name,
        client: Some(client),
        sealed_values: Some(sealed_values),
        leading: Some(leading),
        desired: promoter.subscribe(),
        promoter: Some(promoter),
        max_pause: settings.max_pause,
        diffs: diff_state,
        tasks: vec![task, promoting],
        leader: Some(handle),
    })
}

/// `--reconciler`, else who the apiserver says gitgate is, else the
/// chart's default.
async fn reconciler_name(given: Option<String>, client: &kube::Client) -> String {
    if let Some(r) = given {
        return r;
    }
    match runtime::whoami(client).await {
        Ok(me) => {
            tracing::info!(reconciler = %me, "the reconciler is who gitgate's credentials say it is");
            me
        }
        Err(e) => {
            let r = crate::cmd::DEFAULT_RECONCILER.to_string();
            tracing::warn!(error = %crate::error_chain(&e), reconciler = %r, "failed to ask the apiserver who gitgate is; assuming");
            r
        }
    }
}

/// The webhook guard's settings (`--webhook-endpoint`): it keeps gitgate's
/// own webhook configurations in place.
fn guard(args: &ServeSyncArgs, w: &Wiring<'_>, reconciler: &str) -> anyhow::Result<Option<GuardConfig>> {
    match (&args.webhook_endpoint, &w.ca_pem) {
        (Some(e), Some(ca)) => Ok(Some(GuardConfig {
            endpoint: Endpoint::parse(e).map_err(anyhow::Error::msg)?,
            ca_pem: ca.clone(),
            ca_file: w.ca_file.clone(),
            namespace: args.namespace.clone(),
            failure_policy: args.webhook_failure_policy.clone(),
            timeout_seconds: args.webhook_timeout_seconds.clamp(1, 30),
            enforce_label: args.webhook_enforce_label.clone(),
            vap: args.install_vap.then(|| (reconciler.to_string(), w.break_glass_groups.clone())),
        })),
        (Some(_), None) => {
            anyhow::bail!("--webhook-endpoint needs the CA of the serving certificate (ca.crt in --cert-dir)")
        }
        (None, _) => Ok(None),
    }
}

/// `--max-pause`: 1 minute to 30 days.
fn max_pause(args: &ServeSyncArgs) -> anyhow::Result<Duration> {
    let max = Duration::from_secs(30 * 24 * 3600);
    Ok(in_range("--max-pause", parse_duration(&args.max_pause)?, Duration::from_secs(60), max)?)
}

fn fallback(reconciler: Option<String>) -> String {
    reconciler.unwrap_or_else(|| crate::cmd::DEFAULT_RECONCILER.to_string())
}

/// How `gitgate status` and `gitgate diff` reach a running gitgate: its
/// address, the CA to trust, and the bearer token to sign in with.
#[derive(Args, Debug)]
pub struct ServerArgs {
    /// gitgate's HTTPS address.
    #[arg(long, env = "GITGATE_SERVER", default_value = "https://127.0.0.1:8443")]
    pub server: String,
    /// CA certificate to trust (default: certs/ca.crt when it exists).
    #[arg(long)]
    pub ca: Option<PathBuf>,
    /// Kubernetes bearer token to sign in with (`kubectl create token …`, or
    /// an OIDC id token). Default: --token-file, else the kubeconfig user's
    /// token, else none (a gitgate without a cluster asks for none).
    #[arg(long, env = "GITGATE_TOKEN", hide_env_values = true, conflicts_with = "token_file")]
    pub token: Option<secrecy::SecretString>,
    /// File holding the bearer token (a projected ServiceAccount token).
    #[arg(long, env = "GITGATE_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct StatusArgs {
    #[command(flatten)]
    pub conn: ServerArgs,
    /// Also list every object.
    #[arg(long, short)]
    pub wide: bool,
    /// Print the JSON document.
    #[arg(long)]
    pub json: bool,
    /// Only this app.
    pub app: Option<String>,
    /// The fleet instead (a hub, or a gitgate given `--fleet`): each
    /// cluster's state, apps and drift, and the parity groups. Exit status
    /// 3 when a cluster is unknown, an app not synced or a group diverged.
    #[arg(long, conflicts_with_all = ["app", "wait"])]
    pub fleet: bool,
    /// Wait up to this long (`90s`, `5m`) until the apps are Synced (at
    /// `--commit` when given), as `argocd app wait` does.
    #[arg(long)]
    pub wait: Option<String>,
    /// With `--wait`: the commit (full ID or a prefix) the apps must be
    /// synced at.
    #[arg(long, requires = "wait")]
    pub commit: Option<String>,
}

#[derive(Args, Debug)]
pub struct DiffArgs {
    /// The app.
    pub app: String,
    /// Compare this commit (a full or short ID of the tracked branch's
    /// head or an ancestor) instead of the one the sync loop syncs to.
    #[arg(long)]
    pub commit: Option<String>,
    #[command(flatten)]
    pub conn: ServerArgs,
    /// Print the JSON document.
    #[arg(long)]
    pub json: bool,
}

impl ServerArgs {
    /// The token sent ([`bearer_token`]).
    pub fn bearer(&self) -> anyhow::Result<Option<secrecy::SecretString>> {
        bearer_token(self.token.as_ref(), self.token_file.as_deref())
    }

    /// An HTTPS client that trusts `--ca` (default: certs/ca.crt when it
    /// exists; looked up on each call: a `serve` started a moment ago may
    /// be writing its development CA right now).
    pub fn client(&self, timeout: Duration) -> anyhow::Result<reqwest::Client> {
        let ca = self.ca.clone().or_else(|| Some(PathBuf::from("certs/ca.crt")).filter(|p| p.exists()));
        let mut b = reqwest::Client::builder().timeout(timeout);
        if let Some(ca) = &ca {
            let pem = std::fs::read(ca).with_context(|| format!("failed to read {}", ca.display()))?;
            b = b.add_root_certificate(reqwest::Certificate::from_pem(&pem)?);
        }
        Ok(b.build()?)
    }

    /// `GET /api/v1/fleet`: the fleet as the hub (or a gitgate given
    /// `--fleet`) at `--server` sees it.
    pub fn fleet(&self) -> anyhow::Result<crate::fleet::hub::FleetView> {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let token = self.bearer()?;
        rt.block_on(async {
            let resp = self.get("/api/v1/fleet", token.as_ref(), Duration::from_secs(10)).await?;
            let code = resp.status();
            anyhow::ensure!(
                code.is_success(),
                "{} answered {code}{}",
                self.server,
                if code == reqwest::StatusCode::NOT_FOUND { ": it has no fleet (serve --fleet FILE)" } else { "" }
            );
            resp.json().await.context("failed to read the fleet's status")
        })
    }

    /// `GET {server}{path}` with the token; a 401 or 403 is a [`Refused`]
    /// naming why (and how to sign in when no token was given); any other
    /// answer is the caller's to read.
    async fn get(
        &self,
        path: &str,
        token: Option<&secrecy::SecretString>,
        timeout: Duration,
    ) -> anyhow::Result<reqwest::Response> {
        let url = format!("{}{path}", self.server.trim_end_matches('/'));
        let mut req = self.client(timeout)?.get(&url);
        if let Some(t) = token {
            use secrecy::ExposeSecret as _;
            req = req.bearer_auth(t.expose_secret());
        }
        let resp = req.send().await.with_context(|| format!("failed to reach {url}"))?;
        let code = resp.status();
        if code == reqwest::StatusCode::UNAUTHORIZED || code == reqwest::StatusCode::FORBIDDEN {
            let why = resp.json::<serde_json::Value>().await.ok();
            let why = why.as_ref().and_then(|v| v["error"].as_str()).unwrap_or_default();
            let hint = if token.is_none() { " (give --token, --token-file or GITGATE_TOKEN)" } else { "" };
            return Err(anyhow::Error::new(Refused(format!("{url} answered {code}: {why}{hint}"))));
        }
        Ok(resp)
    }
}

/// The bearer token a client command sends to gitgate's API: `token`,
/// `token_file`, else the current kubeconfig user's `token`/`tokenFile`.
pub fn bearer_token(
    token: Option<&secrecy::SecretString>,
    token_file: Option<&std::path::Path>,
) -> anyhow::Result<Option<secrecy::SecretString>> {
    use secrecy::ExposeSecret as _;
    if let Some(t) = token {
        return Ok(Some(secrecy::SecretString::from(t.expose_secret().trim().to_string())));
    }
    let from_file = |p: &std::path::Path| -> anyhow::Result<secrecy::SecretString> {
        let t = std::fs::read_to_string(p).with_context(|| format!("failed to read the token file {}", p.display()))?;
        Ok(secrecy::SecretString::from(t.trim().to_string()))
    };
    if let Some(p) = token_file {
        return from_file(p).map(Some);
    }
    let Ok(kc) = kube::config::Kubeconfig::read() else { return Ok(None) };
    let user = kc
        .current_context
        .as_ref()
        .and_then(|c| kc.contexts.iter().find(|n| &n.name == c))
        .and_then(|c| c.context.as_ref())
        .and_then(|c| c.user.clone())
        .and_then(|u| kc.auth_infos.iter().find(|a| a.name == u))
        .and_then(|a| a.auth_info.as_ref());
    match user {
        Some(u) if u.token.is_some() => Ok(u.token.clone()),
        Some(u) => u.token_file.as_deref().map(|f| from_file(std::path::Path::new(f))).transpose(),
        None => Ok(None),
    }
}

/// A status request gitgate refused: retrying will not help.
#[derive(Debug)]
struct Refused(String);

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Refused {}

/// Every app is Synced (at `commit`, when given).
fn done(o: &crate::sync::status::Overview, commit: Option<&str>) -> bool {
    o.apps.iter().all(|a| {
        a.sync == crate::sync::status::SyncStatus::Synced && commit.is_none_or(|c| a.synced_commit.starts_with(c))
    })
}

/// `gitgate status`.
pub fn status(args: StatusArgs) -> anyhow::Result<std::process::ExitCode> {
    if args.fleet {
        return fleet_status(&args);
    }
    let wait = args.wait.as_deref().map(parse_duration).transpose()?;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let url = format!("{}/api/v1/apps", args.conn.server.trim_end_matches('/'));
    let token = args.conn.bearer()?;
    let fetch = || {
        rt.block_on(async {
            let resp = args.conn.get("/api/v1/apps", token.as_ref(), Duration::from_secs(10)).await?;
            let code = resp.status();
            anyhow::ensure!(code.is_success(), "{url} answered {code}");
            let body = resp.text().await?;
            let mut overview: crate::sync::status::Overview =
                serde_json::from_str(&body).context("failed to read the status")?;
            if let Some(app) = &args.app {
                overview.apps.retain(|a| &a.name == app);
                anyhow::ensure!(!overview.apps.is_empty(), "no app named {app}");
            }
            Ok::<_, anyhow::Error>(overview)
        })
    };
    let deadline = wait.map(|w| std::time::Instant::now() + w);
    let overview = loop {
        let got = fetch();
        match (&got, deadline) {
            (Ok(o), Some(d)) if !done(o, args.commit.as_deref()) && std::time::Instant::now() < d => {}
            // Not up yet, or the app not rendered yet: keep waiting (a
            // refused token will not get better).
            (Err(e), Some(d)) if std::time::Instant::now() < d && e.downcast_ref::<Refused>().is_none() => {}
            _ => break got?,
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&overview)?);
    } else {
        print!("{}", crate::sync::status::table(&overview, args.wide));
    }
    if deadline.is_some() {
        return Ok(if done(&overview, args.commit.as_deref()) {
            std::process::ExitCode::SUCCESS
        } else {
            std::process::ExitCode::from(3)
        });
    }
    let healthy = overview.apps.iter().all(|a| a.sync == crate::sync::status::SyncStatus::Synced);
    Ok(if healthy { std::process::ExitCode::SUCCESS } else { std::process::ExitCode::from(3) })
}

/// `gitgate status --fleet`: the hub's view as a table (or JSON).
fn fleet_status(args: &StatusArgs) -> anyhow::Result<std::process::ExitCode> {
    let view = args.conn.fleet()?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&view)?);
    } else {
        print!("{}", crate::fleet::hub::table(&view, args.wide));
    }
    Ok(if crate::fleet::hub::all_well(&view) {
        std::process::ExitCode::SUCCESS
    } else {
        std::process::ExitCode::from(3)
    })
}

/// `gitgate diff`: exits 0 when a sync of the app would change nothing, 1
/// when it would, 2 on trouble (printed to stderr), as diff(1) does.
pub fn diff(args: DiffArgs) -> anyhow::Result<std::process::ExitCode> {
    match fetch_diff(&args) {
        Ok(d) => {
            if args.json {
                println!("{}", serde_json::to_string_pretty(&d)?);
            } else {
                print!("{}", crate::sync::diff::render_text(&d));
            }
            Ok(std::process::ExitCode::from(u8::from(d.differs())))
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            Ok(std::process::ExitCode::from(2))
        }
    }
}

fn fetch_diff(args: &DiffArgs) -> anyhow::Result<crate::sync::diff::AppDiff> {
    let token = args.conn.bearer()?;
    let mut path = format!("/api/v1/apps/{}/diff", encode_component(&args.app));
    if let Some(c) = &args.commit {
        path.push_str(&format!("?commit={}", encode_component(c)));
    }
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(async {
        let resp = args.conn.get(&path, token.as_ref(), Duration::from_secs(120)).await?;
        let code = resp.status();
        let body = resp.text().await?;
        if !code.is_success() {
            let why = serde_json::from_str::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v["error"].as_str().map(str::to_string))
                .unwrap_or_else(|| format!("answered {code}"));
            anyhow::bail!("{why}");
        }
        serde_json::from_str(&body).context("failed to read the diff")
    })
}

/// Percent-encodes everything but unreserved characters (RFC 3986).
fn encode_component(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
