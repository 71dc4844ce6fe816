//! `sync_once`: the reconcile as a numbered checklist (as Flux's
//! kustomize-controller reads) — fetch and plan, preflight, apply by wave
//! with the hooks, wait healthy, prune, health and status, record. The
//! steps live beside it (`apply.rs`, `hooks.rs`, `prune.rs`, `record.rs`);
//! self-heal in [`super::heal`]; the leader's loop in `run.rs`.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde_json::Value;

use super::audit::AuditRecord;
use super::guard::GuardConfig;
use super::health::Health;
use super::inventory::{self, Entry, Inventory};
use super::plan::{self, Drift, Observed, Planned, app_status, commit_of};
use super::status::{AppStatus, ObjectStatus, StatusStore, SyncStatus, health_str};
use super::target::{Resource, Target};
use super::{SyncConfig, SyncError};
use crate::audit::SyncRecorder;
use crate::audit::record::{EventKind, Outcome};
use crate::contract::APP_LABEL;
use crate::render::DesiredSet;
use crate::render::config::App;
use crate::render::object::ObjectKey;
use crate::source::fetch::GitSource;

/// An inventory as written: entries (encoded), cluster, base, commit.
pub(super) type Recorded = (String, String, Option<usize>, String);

/// The clusters apps deploy to: the default one (in-cluster, or the
/// current kubeconfig context) and others by kubeconfig context name.
pub struct Targets {
    pub(super) default: Arc<Target>,
    others: Mutex<HashMap<String, Arc<Target>>>,
    kubeconfig: Option<kube::config::Kubeconfig>,
    qps: f32,
    burst: u32,
}

impl Targets {
    pub fn new(default: Arc<Target>, kubeconfig: Option<kube::config::Kubeconfig>, qps: f32, burst: u32) -> Self {
        Targets { default, others: Mutex::new(HashMap::new()), kubeconfig, qps, burst }
    }

    pub fn default_target(&self) -> &Arc<Target> {
        &self.default
    }

    /// The target of a destination cluster: `""`, `in-cluster` or the
    /// default's own name is the default; another name is a kubeconfig
    /// context (one client each, made once).
    pub async fn get(&self, cluster: &str) -> Result<Arc<Target>, SyncError> {
        if cluster.is_empty() || cluster == "in-cluster" || cluster == self.default.name {
            return Ok(self.default.clone());
        }
        if let Some(t) = self.others.lock().unwrap_or_else(|e| e.into_inner()).get(cluster) {
            return Ok(t.clone());
        }
        let no = || SyncError::NoCluster { cluster: cluster.to_string() };
        let kc = self.kubeconfig.clone().ok_or_else(no)?;
        if !kc.contexts.iter().any(|c| c.name == cluster) {
            return Err(no());
        }
        let opts = kube::config::KubeConfigOptions { context: Some(cluster.to_string()), ..Default::default() };
        let config = kube::Config::from_custom_kubeconfig(kc, &opts).await.map_err(|_| no())?;
        let client = kube::Client::try_from(super::without_request_retries(config))
            .map_err(|e| SyncError::kube(format!("connect to cluster {cluster}"), e))?;
        let t = Arc::new(Target::new(cluster, client, self.qps, self.burst));
        self.others.lock().unwrap_or_else(|e| e.into_inner()).insert(cluster.to_string(), t.clone());
        Ok(t)
    }
}

/// The sync loop.
pub struct Reconciler {
    pub config: SyncConfig,
    pub(super) targets: Targets,
    source: Arc<GitSource>,
    pub(super) status: Arc<StatusStore>,
    pub(super) audit: Option<Arc<dyn SyncRecorder>>,
    pub(super) guard: Option<GuardConfig>,
    /// Open break-glass windows: when this replica first saw each, and when it ends.
    pub(super) break_glass: Mutex<HashMap<ObjectKey, (Instant, Instant)>>,
    /// The age identities, when this process unseals too: a sealed
    /// Secret whose values no longer MAC to what the unseal stamped is
    /// drift. Empty on a reconciler that holds no identity (the chart's).
    pub(super) sealed: Arc<arc_swap::ArcSwapOption<crate::secrets::Keyring>>,
    /// Each app's last recorded sync failure (commit, message), until it
    /// syncs.
    pub(super) failures: Mutex<HashMap<String, (String, String)>>,
    /// Per app, the commit whose sync hook failed and what failed: that
    /// commit's hooks are not run again (a failing migration is not
    /// retried every resync, as Argo CD's automated sync does not retry a
    /// failed commit); a new commit runs them.
    pub(super) hook_failures: Mutex<HashMap<String, (String, String)>>,
    /// Per app, the hook runs of its last sync that ran hooks, and its
    /// commit: on the status until a sync at another commit.
    pub(super) last_hooks: Mutex<HashMap<String, (String, Vec<ObjectStatus>)>>,
}

impl Reconciler {
    pub fn new(
        config: SyncConfig,
        targets: Targets,
        source: Arc<GitSource>,
        status: Arc<StatusStore>,
        audit: Option<Arc<dyn SyncRecorder>>,
        guard: Option<GuardConfig>,
    ) -> Self {
        Reconciler {
            config,
            targets,
            source,
            status,
            audit,
            guard,
            break_glass: Mutex::new(HashMap::new()),
            failures: Mutex::new(HashMap::new()),
            sealed: Arc::new(arc_swap::ArcSwapOption::empty()),
            hook_failures: Mutex::new(HashMap::new()),
            last_hooks: Mutex::new(HashMap::new()),
        }
    }

    pub fn status(&self) -> &Arc<StatusStore> {
        &self.status
    }

    /// Every app of the desired set, one after the other, then the apps
    /// that left Git (their inventories are pruned, under the guard).
    pub async fn sync_once(&self, desired: &Arc<DesiredSet>) -> Vec<AppStatus> {
        self.sync_all(desired).await;
        desired.apps().iter().filter_map(|a| self.status.app(&a.name)).collect()
    }

    /// [`Reconciler::sync_once`] keeping each app's status in the store
    /// only (at 10,000 objects a status is megabytes: the loop holds one).
    /// Returns false when a sync could not finish (the apiserver or an
    /// admission webhook failed it: the inventories could not be read, or
    /// an app's checklist stopped on an error), so the loop retries.
    pub(super) async fn sync_all(&self, desired: &Arc<DesiredSet>) -> bool {
        let message = self.commit_message(desired.commit()).await;
        let inventories = match inventory::read_all(self.targets.default.client(), &self.config.namespace).await {
            Ok(i) => i,
            Err(e) => {
                tracing::error!(error = %crate::error_chain(&e), "failed to read the inventories; nothing is synced");
                return false;
            }
        };
        let mut finished = true;
        for app in desired.apps() {
            // A promotion gate that freezes the app (a pause, a closed
            // window, nothing approved yet): nothing is read or written.
            if let Some(gate) = desired.gate(&app.name).filter(|g| g.in_force.is_none() || !g.self_heal) {
                self.status.put(self.frozen_status(desired, app, gate));
                continue;
            }
            let (mut status, ok) = self.sync_app_checked(desired, app, inventories.get(&app.name), &message).await;
            finished &= ok;
            if let Some(held) = desired.held(&app.name)
                && status.sync == SyncStatus::Synced
            {
                status.sync = SyncStatus::held(held.kind);
                status.message = held.message.clone();
            }
            self.status.put(status);
        }
        for (name, inv) in &inventories {
            if desired.app(name).is_none() {
                self.forget_app(desired, name, inv, &message).await;
            }
        }
        let names: HashSet<String> = desired.apps().iter().map(|a| a.name.clone()).collect();
        self.status.retain(|n| names.contains(n));
        finished
    }

    /// The status of an app a promotion gate freezes: the last one seen,
    /// with the gate's word.
    fn frozen_status(&self, desired: &DesiredSet, app: &App, gate: &crate::render::desired::AppGate) -> AppStatus {
        let mut status = self.status.app(&app.name).unwrap_or_else(|| {
            app_status(
                app,
                desired,
                health_str(Health::Missing),
                crate::audit::record::format_rfc3339_micros(crate::audit::record::now_micros()),
            )
        });
        status.target_commit =
            desired.held(&app.name).map_or_else(|| commit_of(desired, &app.name), |h| h.waiting.to_string());
        status.synced_commit = commit_of(desired, &app.name);
        match &gate.held {
            Some(h) => {
                status.sync = SyncStatus::held(h.kind);
                status.message = h.message.clone();
            }
            None => status.message = "self-heal is off: a sync window is closed".to_string(),
        }
        status
    }

    async fn commit_message(&self, id: gix::ObjectId) -> String {
        let source = self.source.clone();
        tokio::task::spawn_blocking(move || {
            source
                .repo()
                .find_commit(id)
                .ok()
                .and_then(|c| c.message_raw().ok().map(|m| m.to_string()))
                .unwrap_or_default()
        })
        .await
        .unwrap_or_default()
    }

    /// One app: the checklist.
    pub async fn sync_app(
        &self,
        desired: &DesiredSet,
        app: &App,
        inventory: Option<&Inventory>,
        message: &str,
    ) -> AppStatus {
        self.sync_app_checked(desired, app, inventory, message).await.0
    }

    /// [`Reconciler::sync_app`], and whether its checklist ran to the end
    /// (false: an error stopped it, and a retry may finish it).
    async fn sync_app_checked(
        &self,
        desired: &DesiredSet,
        app: &App,
        inventory: Option<&Inventory>,
        message: &str,
    ) -> (AppStatus, bool) {
        let started = Instant::now();
        let mut finished = true;
        let mut status = app_status(
            app,
            desired,
            health_str(Health::Missing),
            crate::audit::record::format_rfc3339_micros(crate::audit::record::now_micros()),
        );
        if let Err(e) = self.checklist(desired, app, inventory, message, &mut status).await {
            finished = false;
            status.sync = SyncStatus::Failed;
            status.message = crate::error_chain(&e);
            tracing::warn!(app = %app.name, error = %status.message, "sync failed");
            // Once per distinct failure: the retries of a sync failing the
            // same way (Vault down for an hour) add no record, and no
            // notification, each; a held commit was reported (and notified)
            // when its hook failed.
            let held = matches!(e, SyncError::HookHeld { .. });
            let failure = (commit_of(desired, &app.name), status.message.clone());
            let repeated = self
                .failures
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(app.name.clone(), failure)
                .is_some_and(|old| old == (commit_of(desired, &app.name), status.message.clone()));
            if !held && !repeated {
                self.audit(
                    AuditRecord::new(EventKind::SyncFailed, &app.name)
                        .commit(commit_of(desired, &app.name))
                        .outcome(Outcome::Failed)
                        .reasons(vec![status.message.clone()]),
                );
            }
        } else {
            self.failures.lock().unwrap_or_else(|e| e.into_inner()).remove(&app.name);
        }
        if let Some(m) = self.status.metrics() {
            m.sync_duration.observe(started.elapsed().as_secs_f64());
        }
        (status, finished)
    }

    /// One app's sync as a numbered checklist (as Flux's
    /// kustomize-controller reads); an error stops it, `status` saying how
    /// far it got.
    async fn checklist(
        &self,
        desired: &DesiredSet,
        app: &App,
        inventory: Option<&Inventory>,
        message: &str,
        status: &mut AppStatus,
    ) -> Result<(), SyncError> {
        // 1. Fetch and plan: the tracker fetched the commit (`desired` is its
        //    D(H)); the app's objects, stamped and ordered by wave, each
        //    diffed against its live copy.
        let mut sync = self.plan_sync(desired, app, inventory).await?;
        let mut hook_runs = Vec::new();
        if !app.sync_policy.detect_only {
            // 2. Preflight: the hooks (a commit whose hook failed is held),
            //    and the immutable fields Git changes, before anything is
            //    written.
            let recreate = self.preflight_sync(&mut sync, status).await?;
            // 3. Apply by wave, with the hooks (the inventory first records
            //    what is about to exist, so a crash mid-sync never orphans
            //    an object), and 4. wait until each wave is healthy before
            //    the next; a failure runs the SyncFail hooks.
            self.record_ahead(&mut sync).await?;
            if let Err(e) = self.apply_steps(&mut sync, &recreate, &mut hook_runs).await {
                return Err(self.stopped(&sync, &mut hook_runs, status, e).await);
            }
        }
        // 5. Prune what left Git, under the guard, and record the inventory
        //    of what now exists.
        let pruned = self.prune_app(&mut sync, message).await;
        // 6. Health and status, per object and hook.
        self.fill_status(status, &sync);
        status.objects.extend(self.hook_statuses(&app.name, desired, &hook_runs));
        pruned.recorded?;
        // 7. Record the app's sync state (and log it).
        self.conclude(status, &sync, pruned.note, pruned.stopped);
        Ok(())
    }

    /// Step 1: the app's objects at the commit, stamped and ordered by wave,
    /// and each one's live copy summarised ([`Reconciler::observe_live`]);
    /// an object changed by hand under an open break-glass window is left
    /// alone (a note says why).
    async fn plan_sync<'a>(
        &self,
        desired: &'a DesiredSet,
        app: &'a App,
        inventory: Option<&'a Inventory>,
    ) -> Result<AppSync<'a>, SyncError> {
        let planned = plan::plan_app(desired, &app.name)?;
        let target = self.targets.get(&app.destination.cluster).await?;
        let resources = resolve_all(&target, &planned).await?;
        let seen = self.observe_live(&target, &planned, &resources, &app.name).await?;
        let mut notes: HashMap<usize, String> = HashMap::new();
        for (i, p) in planned.iter().enumerate() {
            if let (Drift::Changed(field), Some(glass)) = (&seen[i].drift, &seen[i].break_glass)
                && app.sync_policy.self_heal
                && !app.sync_policy.detect_only
                && let Some(note) = self.glass_window(app, &p.key, glass, field)
            {
                notes.insert(i, note);
            }
        }
        Ok(AppSync {
            desired,
            app,
            target,
            planned,
            resources,
            seen,
            notes,
            results: HashMap::new(),
            hooks: Vec::new(),
            hook_resources: Vec::new(),
            applied: 0,
            previous: inventory.map(|i| i.entries.as_slice()).unwrap_or_default(),
            recorded: inventory.map(|i| (inventory::encode(&i.entries), i.cluster.clone(), i.base, i.commit.clone())),
            base: inventory.map_or(0, Inventory::guard_base),
        })
    }

    /// One list per kind (label `gitgate.dev/app=<app>`) — per namespace
    /// when the app's objects of that kind live in a few namespaces —, each
    /// live object summarised against its planned one as it arrives;
    /// objects Git does not plan are the inventory's business (prune), not
    /// kept here.
    async fn observe_live(
        &self,
        target: &Target,
        planned: &[Planned],
        resources: &[Arc<Resource>],
        app: &str,
    ) -> Result<Vec<Observed>, SyncError> {
        /// More namespaces than this for one kind: one cluster-wide list.
        const PER_NAMESPACE: usize = 8;
        let index: HashMap<&ObjectKey, usize> = planned.iter().enumerate().map(|(i, p)| (&p.key, i)).collect();
        let mut scopes: Vec<(&Arc<Resource>, std::collections::BTreeSet<&str>)> = Vec::new();
        for (p, r) in planned.iter().zip(resources) {
            let scope = match scopes.iter_mut().find(|(k, _)| Arc::ptr_eq(k, r)) {
                Some(s) => s,
                None => {
                    scopes.push((r, std::collections::BTreeSet::new()));
                    let last = scopes.len() - 1;
                    &mut scopes[last]
                }
            };
            scope.1.insert(p.key.namespace.as_str());
        }
        let mut seen: Vec<Option<Observed>> = vec![None; planned.len()];
        let selector = format!("{APP_LABEL}={app}");
        for (r, namespaces) in scopes {
            let lists: Vec<Option<&str>> =
                if r.namespaced && namespaces.len() <= PER_NAMESPACE && !namespaces.contains("") {
                    namespaces.into_iter().map(Some).collect()
                } else {
                    vec![None]
                };
            for ns in lists {
                target
                    .list_each(r, ns, &selector, |obj| {
                        let ns = obj.pointer("/metadata/namespace").and_then(Value::as_str).unwrap_or_default();
                        let name = obj.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default();
                        let key = ObjectKey::new(&r.api.group, &r.api.kind, ns, name);
                        if let Some(&i) = index.get(&key) {
                            seen[i] = Some(self.observe(&planned[i], Some(&obj)));
                        }
                    })
                    .await?;
            }
        }
        Ok(seen.into_iter().zip(planned).map(|(o, p)| o.unwrap_or_else(|| plan::observe(p, None))).collect())
    }

    /// Plan mode (no cluster): what would be applied, by app and wave
    /// ([`plan::plan_text`]).
    pub fn plan_text(desired: &DesiredSet) -> String {
        plan::plan_text(desired)
    }

    /// What plan mode knows of each app ([`plan::plan_statuses`]).
    pub fn plan_statuses(desired: &DesiredSet) -> Vec<AppStatus> {
        plan::plan_statuses(desired)
    }
}

/// The resource of each planned object; one shared `Resource` per kind.
pub(super) async fn resolve_all(target: &Target, planned: &[Planned]) -> Result<Vec<Arc<Resource>>, SyncError> {
    let mut kinds: HashMap<(&str, &str, &str), Arc<Resource>> = HashMap::new();
    let mut out = Vec::with_capacity(planned.len());
    for p in planned {
        let k = (p.key.group.as_str(), plan::version_of(&p.api_version), p.key.kind.as_str());
        let r = match kinds.get(&k) {
            Some(r) => r.clone(),
            None => {
                let r = Arc::new(target.resolve(k.0, k.1, k.2).await?);
                kinds.insert(k, r.clone());
                r
            }
        };
        out.push(r);
    }
    Ok(out)
}

/// One app's sync under way: Git's plan, what the cluster holds, and what
/// this sync did so far — what each step of the checklist reads and adds
/// to.
pub(super) struct AppSync<'a> {
    pub(super) desired: &'a DesiredSet,
    pub(super) app: &'a App,
    pub(super) target: Arc<Target>,
    /// Git's objects, stamped and ordered by wave, and their resources.
    pub(super) planned: Vec<Planned>,
    pub(super) resources: Vec<Arc<Resource>>,
    /// Each planned object's live copy, summarised (drift, health, ignored
    /// values).
    pub(super) seen: Vec<Observed>,
    /// The objects left alone (an open break-glass window), and why.
    pub(super) notes: HashMap<usize, String>,
    /// How each object this sync applied ended.
    pub(super) results: HashMap<usize, Result<(), String>>,
    /// The app's hooks, planned when the sync changes something, and the
    /// resource of each.
    pub(super) hooks: Vec<plan::PlannedHook>,
    pub(super) hook_resources: Vec<Arc<Resource>>,
    /// How many objects were applied.
    pub(super) applied: usize,
    /// The inventory's entries before this sync.
    pub(super) previous: &'a [Entry],
    /// What the inventory holds now, encoded (one string, not 10,000
    /// entries).
    pub(super) recorded: Option<Recorded>,
    /// The app's size as of its last completed prune: the mass-prune
    /// guard's measure, carried until a sync completes its prune (a new app
    /// starts from nothing).
    pub(super) base: usize,
}
