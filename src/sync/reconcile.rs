//! `sync_once`: the reconcile as a numbered checklist (as Flux's
//! kustomize-controller reads) — fetch, render, diff, apply by wave,
//! prune, health, record — and the loop that runs it on the leader.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{FutureExt as _, StreamExt as _};
use serde_json::Value;

use super::audit::AuditRecord;
pub use super::audit::SyncRecorder;
use super::guard::GuardConfig;
use super::heal::GLASS_ANNOTATIONS;
use super::health::{self, Health};
use super::hooks::{HookRun, Run};
use super::inventory::{self, Entry, Inventory};
use super::plan::{self, Drift, Observed, Planned, Wave, app_status, commit_of};
use super::status::{AppStatus, ObjectStatus, StatusStore, SyncStatus, health_str};
use super::target::{Resource, Target};
use super::{SyncConfig, SyncError};
use crate::audit::record::{EventKind, Outcome};
use crate::provenance::APP_LABEL;

use crate::render::DesiredSet;
use crate::render::config::App;
use crate::render::object::ObjectKey;
use crate::source::fetch::GitSource;

/// What an app's inventory holds now: its entries encoded (one string, not
/// 10,000 entries), its cluster and its base.
/// An inventory as written: entries (encoded), cluster, base, commit.
type Recorded = (String, String, Option<usize>, String);

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
    audit: Option<Arc<dyn SyncRecorder>>,
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

    async fn checklist(
        &self,
        desired: &DesiredSet,
        app: &App,
        inventory: Option<&Inventory>,
        message: &str,
        status: &mut AppStatus,
    ) -> Result<(), SyncError> {
        // 1. Fetch: the tracker fetched the commit; `desired` is its D(H).
        // 2. Render: D(H) for this app, stamped with the commit of each
        //    object's content, ordered by wave.
        let planned = plan::plan_app(desired, &app.name)?;
        let target = self.targets.get(&app.destination.cluster).await?;
        let resources = resolve_all(&target, &planned).await?;

        // 3. Diff against live: one list per kind, by the app label; each
        //    live object is summarised (drift, health, ignored values) as
        //    it is read, and dropped.
        let mut seen = self.observe_live(&target, &planned, &resources, &app.name).await?;
        let detect_only = app.sync_policy.detect_only;
        let previous: &[Entry] = inventory.map(|i| i.entries.as_slice()).unwrap_or_default();
        let mut notes: HashMap<usize, String> = HashMap::new();
        for (i, p) in planned.iter().enumerate() {
            if let (Drift::Changed(field), Some(glass)) = (&seen[i].drift, &seen[i].break_glass)
                && app.sync_policy.self_heal
                && !detect_only
                && let Some(note) = self.glass_window(app, &p.key, glass, field)
            {
                notes.insert(i, note);
            }
        }

        // 4. Apply by step (the inventory first records what is about to
        //    exist, so a crash mid-sync never orphans an object): the
        //    PreSync hooks, the waves with their Sync hooks, the PostSync
        //    hooks ([`plan::steps`]); a failure runs the SyncFail hooks.
        let mut results: HashMap<usize, Result<(), String>> = HashMap::new();
        let mut applied = 0usize;
        // What the inventory holds now, encoded (one string, not 10,000 entries).
        let mut recorded: Option<Recorded> =
            inventory.map(|i| (inventory::encode(&i.entries), i.cluster.clone(), i.base, i.commit.clone()));
        // The app's size as of its last completed prune: the mass-prune
        // guard's measure, carried until a sync completes its prune (a new
        // app starts from nothing).
        let base = inventory.map_or(0, Inventory::guard_base);
        let mut hook_runs: Vec<HookRun> = Vec::new();
        if !detect_only {
            let to_apply: Vec<usize> = (0..planned.len())
                .filter(|&i| !notes.contains_key(&i) && self.should_apply(app, &seen[i].drift))
                .collect();
            // Hooks run when the sync changes something (as Argo CD's
            // automated sync starts an operation only when out of sync).
            let hooks = if to_apply.is_empty() { Vec::new() } else { plan::plan_hooks(desired, &app.name)? };
            let commit = commit_of(desired, &app.name);
            if !hooks.is_empty()
                && let Some(detail) = self
                    .hook_failures
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .get(&app.name)
                    .filter(|(c, _)| *c == commit)
                    .map(|(_, d)| d.clone())
            {
                self.fill_status(status, &planned, &resources, &seen, &results, &notes);
                status.objects.extend(self.hook_statuses(&app.name, desired, &[]));
                return Err(SyncError::HookHeld { detail });
            }
            let hook_planned: Vec<Planned> = hooks.iter().map(|h| h.planned.clone()).collect();
            let hook_resources = resolve_all(&target, &hook_planned).await?;
            // Before anything is written: an immutable field that Git
            // changes fails the sync here, naming it, unless the object
            // may be re-created.
            let recreate = self.preflight(&target, &planned, &resources, &seen, &to_apply).await.inspect_err(|_| {
                self.fill_status(status, &planned, &resources, &seen, &results, &notes);
            })?;
            let ahead: Vec<Entry> = previous.iter().cloned().chain(planned.iter().map(Planned::entry)).collect();
            recorded = Some(self.write_inventory(app, ahead, recorded.as_ref(), desired, Some(base)).await?);
            let steps = plan::steps(&planned, &hooks, !hooks.is_empty());
            let run = Run { target: &target, app, desired, hooks: &hooks, resources: &hook_resources };
            // A failure: the SyncFail hooks run, the status names what failed.
            macro_rules! fail {
                ($e:expr) => {{
                    let e = self.sync_failed(&run, &mut hook_runs, $e).await;
                    self.fill_status(status, &planned, &resources, &seen, &results, &notes);
                    status.objects.extend(self.hook_statuses(&app.name, desired, &hook_runs));
                    return Err(e);
                }};
            }
            for (si, step) in steps.iter().enumerate() {
                let started = hook_runs.len();
                if let Err(e) = self.start_hooks(&run, step, &mut hook_runs).await {
                    fail!(e);
                }
                let idx: Vec<usize> = step
                    .objects
                    .iter()
                    .copied()
                    .filter(|&i| !notes.contains_key(&i) && self.should_apply(app, &seen[i].drift))
                    .collect();
                let jobs = idx.into_iter().map(|i| {
                    let (target, r, p, ignored) =
                        (target.clone(), resources[i].clone(), &planned[i], seen[i].ignored.as_ref());
                    // Git's content replaces a break-glass change (its window
                    // ended, or Git moved): the annotation goes too.
                    let glass = seen[i].break_glass.is_some();
                    let foreign = seen[i].foreign.clone();
                    let known_immutable = recreate.get(&i).cloned();
                    let within = self.config.hook_timeout;
                    async move {
                        let object = plan::respect_ignored(p, ignored)?;
                        let first = match known_immutable {
                            Some(fields) => Err(fields),
                            None => match target.apply(&r, &p.key.namespace, &p.key.name, &object).await {
                                Ok(v) => Ok(v),
                                Err(e) => match super::target::immutable_fields(&e) {
                                    Some(fields) => Err(fields),
                                    None => return Err(e),
                                },
                            },
                        };
                        let (mut stored, recreated) = match first {
                            Ok(v) => (v, None),
                            Err(fields) if p.recreate == plan::Recreate::Yes => {
                                // Replace=true: deleted, then created from Git.
                                target.delete_and_wait(&r, &p.key.namespace, &p.key.name, within).await?;
                                let v = target.apply(&r, &p.key.namespace, &p.key.name, &object).await?;
                                (v, Some(fields.join(", ")))
                            }
                            Err(fields) => return Err(immutable(p, &fields)),
                        };
                        // What other managers added goes too (an apply
                        // cannot remove fields it does not own).
                        if let Some(patch) = &foreign
                            && recreated.is_none()
                        {
                            target.json_patch(&r, &p.key.namespace, &p.key.name, patch).await?;
                            stored = target.get(&r, &p.key.namespace, &p.key.name).await?.unwrap_or(stored);
                        }
                        if glass && recreated.is_none() {
                            target.remove_annotations(&r, &p.key.namespace, &p.key.name, GLASS_ANNOTATIONS).await?;
                        }
                        Ok::<_, SyncError>((plan::applied(p, &stored), recreated))
                    }
                    .map(move |r| (i, r))
                });
                let done = futures_util::stream::iter(jobs)
                    .buffer_unordered(self.config.concurrency.max(1))
                    .collect::<Vec<_>>()
                    .await;
                let mut first_error = None;
                for (i, r) in done {
                    match r {
                        Ok((obs, recreated)) => {
                            applied += 1;
                            if let Some(plan::Glass { reason, .. }) = &seen[i].break_glass
                                && self
                                    .break_glass
                                    .lock()
                                    .unwrap_or_else(|e| e.into_inner())
                                    .remove(&planned[i].key)
                                    .is_some()
                            {
                                self.audit_glass(EventKind::BreakGlassExpired, &app.name, &planned[i].key, reason, "/");
                            }
                            let reasons = recreated
                                .map(|f| vec![format!("deleted and created again: {f} is immutable (Replace=true)")])
                                .unwrap_or_default();
                            self.audit_apply_with(EventKind::Apply, &app.name, &planned[i], &resources[i], reasons);
                            seen[i] = obs;
                            results.insert(i, Ok(()));
                        }
                        Err(e) => {
                            let msg = crate::error_chain(&e);
                            first_error.get_or_insert(e);
                            results.insert(i, Err(msg));
                        }
                    }
                }
                if let Some(e) = first_error {
                    fail!(e);
                }
                // The step's hooks finish (each within --hook-timeout) …
                if let Err(e) = self.wait_hooks(&run, &mut hook_runs[started..]).await {
                    fail!(e);
                }
                // … and a later step waits until this one's objects are healthy.
                if si + 1 < steps.len()
                    && !step.objects.is_empty()
                    && let Err(e) =
                        self.wait_healthy(&target, step.wave, &planned, &resources, &step.objects, &mut seen).await
                {
                    fail!(e);
                }
            }
            if !hooks.is_empty() {
                self.hook_failures.lock().unwrap_or_else(|e| e.into_inner()).remove(&app.name);
            }
            if let Some(m) = self.status.metrics() {
                m.applied(&app.name, applied as u64);
            }
        }

        // 5. Prune what left Git, in reverse wave order, under the guard.
        // A hook is never pruned, also when it was one of the app's objects
        // before (its run may carry the name the inventory recorded).
        let keys: HashSet<ObjectKey> = planned
            .iter()
            .map(|p| p.key.clone())
            .chain(desired.app_hooks(&app.name).into_iter().map(|(k, _)| k))
            .collect();
        let prune = plan::prune_plan(previous, base, &keys, self.config.prune_guard, plan::allows_mass_prune(message));
        let mut remaining: Vec<Entry> = planned.iter().map(Planned::entry).collect();
        let mut prune_note = None;
        if detect_only {
            if !prune.delete.is_empty() {
                prune_note = Some(format!("{} objects left Git (detect-only: not pruned)", prune.delete.len()));
                remaining.extend(prune.delete.iter().cloned());
            }
        } else if let Some(why) = &prune.guarded {
            remaining.extend(prune.delete.iter().cloned());
            self.audit(
                AuditRecord::new(EventKind::Prune, &app.name)
                    .commit(commit_of(desired, &app.name))
                    .outcome(Outcome::Refused)
                    .reasons(vec![why.clone()]),
            );
            prune_note = Some(why.clone());
        } else if !app.sync_policy.prune {
            if !prune.delete.is_empty() {
                prune_note =
                    Some(format!("{} objects left Git and wait for pruning (prune is off)", prune.delete.len()));
                remaining.extend(prune.delete.iter().cloned());
            }
        } else {
            let pruned = self.prune(&target, &app.name, &prune.delete, desired).await;
            if let Some(m) = self.status.metrics() {
                m.pruned(&app.name, pruned.len() as u64);
            }
            for e in &prune.delete {
                if !pruned.contains(&e.key()) {
                    remaining.push(e.clone());
                }
            }
        }
        remaining.extend(prune.kept.iter().cloned());
        let failed_prune = prune.guarded.is_some();
        drop((prune, keys));

        // 6. Record the inventory of what now exists (before the status is
        //    built: at 10,000 objects the sync's scratch is freed first, and
        //    the status that stays is not scattered among it).
        let recorded_now = if detect_only {
            Ok(Default::default())
        } else {
            // A stopped prune completes nothing: the base stays; otherwise
            // what now exists is the new base.
            let base = failed_prune.then_some(base);
            self.write_inventory(app, remaining, recorded.as_ref(), desired, base).await
        };
        drop(recorded);

        // 7. Health, status, metrics.
        self.fill_status(status, &planned, &resources, &seen, &results, &notes);
        status.objects.extend(self.hook_statuses(&app.name, desired, &hook_runs));
        recorded_now?;
        let out_of_sync = status.objects.iter().any(|o| o.sync != SyncStatus::Synced) || prune_note.is_some();
        status.sync = if failed_prune {
            SyncStatus::Failed
        } else if out_of_sync {
            SyncStatus::OutOfSync
        } else {
            SyncStatus::Synced
        };
        if !detect_only && !failed_prune {
            status.synced_commit = commit_of(desired, &app.name);
        }
        status.message = prune_note.unwrap_or_default();
        tracing::info!(
            app = %app.name, commit = %commit_of(desired, &app.name), applied, sync = status.sync.as_str(), health = %status.health,
            "synced"
        );
        Ok(())
    }

    /// Whether a drift is written now: Git changed (stale or missing)
    /// always; a hand change only with self-heal on.
    fn should_apply(&self, app: &App, drift: &Drift) -> bool {
        match drift {
            Drift::InSync => false,
            Drift::Missing | Drift::Stale => true,
            Drift::Changed(_) => app.sync_policy.self_heal,
        }
    }

    /// Applies what the sync will change as a dry run first, for the
    /// objects an apply could refuse on an immutable field: one that may
    /// not be re-created fails the sync before anything is written; one
    /// that may (Replace=true) is re-created at its wave without a refused
    /// apply first. Other refusals are left to the apply, which reports
    /// them per object.
    async fn preflight(
        &self,
        target: &Arc<Target>,
        planned: &[Planned],
        resources: &[Arc<Resource>],
        seen: &[Observed],
        to_apply: &[usize],
    ) -> Result<HashMap<usize, Vec<String>>, SyncError> {
        let checked: Vec<usize> = to_apply
            .iter()
            .copied()
            .filter(|&i| matches!(seen[i].drift, Drift::Stale | Drift::Changed(_)) && may_be_immutable(&planned[i]))
            .collect();
        let jobs = checked.into_iter().map(|i| {
            let (target, r, p, ignored) = (target.clone(), resources[i].clone(), &planned[i], seen[i].ignored.as_ref());
            async move {
                let object = plan::respect_ignored(p, ignored)?;
                target.apply_dry_run(&r, &p.key.namespace, &p.key.name, &object).await
            }
            .map(move |r| (i, r))
        });
        let done =
            futures_util::stream::iter(jobs).buffer_unordered(self.config.concurrency.max(1)).collect::<Vec<_>>().await;
        let mut recreate = HashMap::new();
        let mut refused: Option<(usize, Vec<String>)> = None;
        for (i, r) in done {
            let Err(e) = r else { continue };
            let Some(fields) = super::target::immutable_fields(&e) else { continue };
            if planned[i].recreate == plan::Recreate::Yes {
                recreate.insert(i, fields);
            } else if refused.as_ref().is_none_or(|(j, _)| i < *j) {
                refused = Some((i, fields));
            }
        }
        match refused {
            Some((i, fields)) => Err(match immutable(&planned[i], &fields) {
                SyncError::Immutable { object, file, fields, hint } => SyncError::Immutable {
                    object,
                    file,
                    fields,
                    hint: format!("{hint}; nothing of this commit was applied"),
                },
                other => other,
            }),
            None => Ok(recreate),
        }
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

    /// Polls the members of a wave until each is healthy; a degraded one
    /// or the timeout fails the sync.
    async fn wait_healthy(
        &self,
        target: &Target,
        wave: Wave,
        planned: &[Planned],
        resources: &[Arc<Resource>],
        members: &[usize],
        seen: &mut [Observed],
    ) -> Result<(), SyncError> {
        let deadline = Instant::now() + self.config.wave_timeout;
        let mut pause = Duration::from_millis(100);
        loop {
            let mut pending = Vec::new();
            for &i in members {
                let p = &planned[i];
                let a = &seen[i].health;
                match a.health {
                    Health::Healthy => {}
                    Health::Degraded => {
                        return Err(SyncError::WaveDegraded {
                            wave: wave.to_string(),
                            detail: format!("{}: {}", p.id(), a.message),
                        });
                    }
                    _ => pending.push((i, a.message.clone())),
                }
            }
            if pending.is_empty() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                let detail = pending
                    .iter()
                    .take(5)
                    .map(|(i, m)| format!("{}: {m}", planned[*i].id()))
                    .collect::<Vec<_>>()
                    .join("; ");
                return Err(SyncError::WaveTimeout {
                    wave: wave.to_string(),
                    timeout: self.config.wave_timeout,
                    detail,
                });
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_secs(2));
            for (i, _) in pending {
                let p = &planned[i];
                let live = target.get(&resources[i], &p.key.namespace, &p.key.name).await?;
                seen[i] = self.observe(p, live.as_ref());
            }
        }
    }

    /// Deletes entries (reverse wave order, concurrently within a wave);
    /// returns what is gone. An object whose live copy says
    /// `gitgate.dev/prune: disabled` is kept.
    async fn prune(
        &self,
        target: &Arc<Target>,
        app: &str,
        delete: &[Entry],
        desired: &DesiredSet,
    ) -> HashSet<ObjectKey> {
        let mut gone = HashSet::new();
        let mut i = 0;
        while i < delete.len() {
            let wave = delete[i].wave;
            let mut j = i;
            while j < delete.len() && delete[j].wave == wave {
                j += 1;
            }
            let batch = &delete[i..j];
            let jobs: Vec<_> = batch.iter().map(|e| prune_job(target.clone(), e.clone(), app.to_string())).collect();
            let done = futures_util::stream::iter(jobs)
                .buffer_unordered(self.config.concurrency.max(1))
                .collect::<Vec<_>>()
                .await;
            for r in done {
                match r {
                    Ok((e, true, res)) => {
                        let e = &e;
                        gone.insert(e.key());
                        self.audit(
                            AuditRecord::new(EventKind::Prune, app)
                                .operation("DELETE")
                                .object(&e.key())
                                .resource(&res)
                                .commit(commit_of(desired, app)),
                        );
                    }
                    Ok((e, false, _)) => {
                        let e = &e;
                        // kept by annotation or no longer ours: forget it
                        gone.insert(e.key());
                    }
                    Err(err) => tracing::warn!(app = %app, error = %crate::error_chain(&err), "prune failed"),
                }
            }
            i = j;
        }
        gone
    }

    /// Writes an app's inventory unless it already holds exactly these
    /// entries; returns what it holds now (encoded, and its cluster).
    async fn write_inventory(
        &self,
        app: &App,
        mut entries: Vec<Entry>,
        previous: Option<&Recorded>,
        desired: &DesiredSet,
        base: Option<usize>,
    ) -> Result<Recorded, SyncError> {
        fn key(e: &Entry) -> (&str, &str, &str, &str) {
            (&e.group, &e.kind, &e.namespace, &e.name)
        }
        entries.sort_by(|a, b| key(a).cmp(&key(b)));
        entries.dedup_by(|a, b| key(a) == key(b));
        let text = inventory::encode(&entries);
        let cluster = app.destination.cluster.clone();
        let base = Some(base.unwrap_or(entries.len()));
        let commit = commit_of(desired, &app.name);
        // A gated app's commit is what a restart puts back in force: it is
        // kept current (one write per commit that reaches it); the others'
        // is written with their objects only.
        let gated = desired.gate(&app.name).is_some() || desired.config().gated(app);
        if previous.is_some_and(|(t, c, b, k)| *t == text && *c == cluster && *b == base && (!gated || *k == commit)) {
            return Ok((text, cluster, base, commit));
        }
        let inv = Inventory { entries, commit, cluster, base };
        inventory::write(self.targets.default.client(), &self.config.namespace, &app.name, &inv).await?;
        Ok((text, inv.cluster, base, inv.commit))
    }

    /// An app that left `gitgate.yaml`: its objects are pruned (under the
    /// guard), then its inventory.
    async fn forget_app(&self, desired: &DesiredSet, name: &str, inv: &Inventory, message: &str) {
        let prune = plan::prune_plan(
            &inv.entries,
            inv.guard_base(),
            &HashSet::new(),
            self.config.prune_guard,
            plan::allows_mass_prune(message),
        );
        if let Some(why) = prune.guarded {
            tracing::warn!(app = name, "{why}");
            return;
        }
        let Ok(target) = self.targets.get(&inv.cluster).await else { return };
        let gone = self.prune(&target, name, &prune.delete, desired).await;
        if gone.len() == prune.delete.len()
            && let Err(e) = inventory::remove(self.targets.default.client(), &self.config.namespace, name).await
        {
            tracing::warn!(app = name, error = %crate::error_chain(&e), "failed to remove the inventory");
        }
    }

    fn fill_status(
        &self,
        status: &mut AppStatus,
        planned: &[Planned],
        resources: &[Arc<Resource>],
        seen: &[Observed],
        results: &HashMap<usize, Result<(), String>>,
        notes: &HashMap<usize, String>,
    ) {
        let mut objects = Vec::with_capacity(planned.len());
        let mut healths = Vec::with_capacity(planned.len());
        for (i, p) in planned.iter().enumerate() {
            let a = &seen[i].health;
            healths.push(a.health);
            let (sync, message) = match (results.get(&i), notes.get(&i)) {
                (Some(Err(e)), _) => (SyncStatus::Failed, e.clone()),
                (Some(Ok(())), _) => (SyncStatus::Synced, a.message.clone()),
                (None, Some(note)) => (SyncStatus::OutOfSync, note.clone()),
                (None, None) => match &seen[i].drift {
                    Drift::InSync => (SyncStatus::Synced, a.message.clone()),
                    Drift::Changed(f) => (SyncStatus::OutOfSync, format!("{f} differs from Git")),
                    Drift::Stale => (SyncStatus::OutOfSync, "Git has new content".into()),
                    Drift::Missing => (SyncStatus::OutOfSync, "missing".into()),
                },
            };
            objects.push(ObjectStatus {
                group: p.key.group.clone(),
                version: resources.get(i).map(|r| r.api.version.clone()).unwrap_or_default(),
                kind: p.key.kind.clone(),
                namespace: p.key.namespace.clone(),
                name: p.key.name.clone(),
                wave: p.wave.to_string(),
                sync,
                health: health_str(a.health),
                message,
                commit: p.commit.clone(),
                source: p.file().to_string(),
            });
        }
        status.health = health_str(health::aggregate(healths));
        status.objects = objects;
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

    /// Records a sync action (when an audit log is set).
    pub(super) fn audit(&self, record: AuditRecord) {
        if let Some(a) = &self.audit {
            a.record(&record.entry());
        }
    }

    pub(super) fn audit_apply_with(
        &self,
        event: EventKind,
        app: &str,
        p: &Planned,
        r: &Resource,
        reasons: Vec<String>,
    ) {
        self.audit(
            AuditRecord::new(event, app)
                .operation("APPLY")
                .object(&p.key)
                .resource(r)
                .commit(p.commit.clone())
                .source(p.file())
                .digest(&p.digest)
                .reasons(reasons),
        );
    }
}

/// The resource of each planned object; one shared `Resource` per kind.
async fn resolve_all(target: &Target, planned: &[Planned]) -> Result<Vec<Arc<Resource>>, SyncError> {
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

/// Kinds with fields an apply cannot change (or a ConfigMap or Secret
/// marked immutable): what the pre-flight dry run checks.
fn may_be_immutable(p: &Planned) -> bool {
    const KINDS: &[(&str, &str)] = &[
        ("batch", "Job"),
        ("", "Pod"),
        ("apps", "Deployment"),
        ("apps", "StatefulSet"),
        ("apps", "DaemonSet"),
        ("apps", "ReplicaSet"),
        ("", "Service"),
        ("", "PersistentVolumeClaim"),
        ("", "PersistentVolume"),
        ("storage.k8s.io", "StorageClass"),
        ("rbac.authorization.k8s.io", "RoleBinding"),
        ("rbac.authorization.k8s.io", "ClusterRoleBinding"),
    ];
    KINDS.iter().any(|(g, k)| p.key.group == *g && p.key.kind == *k)
        || (p.key.group.is_empty()
            && matches!(p.key.kind.as_str(), "ConfigMap" | "Secret")
            && p.manifest.contains("\"immutable\":true"))
}

/// An apply refused on an immutable field, with what to do about it.
fn immutable(p: &Planned, fields: &[String]) -> SyncError {
    use super::{ARGO_SYNC_OPTIONS, SYNC_OPTIONS};
    let hint = match p.recreate {
        plan::Recreate::ReplaceWithoutForce => format!(
            "Argo CD's {ARGO_SYNC_OPTIONS}: Replace=true without Force=true does not re-create it: \
             add Force=true, or set {SYNC_OPTIONS}: Replace=true"
        ),
        _ => format!(
            "to delete and re-create it on such a change, set {SYNC_OPTIONS}: Replace=true on it in Git \
             (or {ARGO_SYNC_OPTIONS}: Replace=true,Force=true)"
        ),
    };
    SyncError::Immutable { object: p.id(), file: p.file().to_string(), fields: fields.join(", "), hint }
}

/// Deletes one entry unless its live copy is kept by annotation or is no
/// longer the app's; `(entry, deleted, resource)`.
async fn prune_job(target: Arc<Target>, e: Entry, app: String) -> Result<(Entry, bool, Resource), SyncError> {
    let r = target.resolve(&e.group, &e.version, &e.kind).await?;
    if let Some(live) = target.get(&r, &e.namespace, &e.name).await? {
        let keep = plan::prune_disabled(&live);
        let ours = live.pointer("/metadata/labels").and_then(|l| l.get(APP_LABEL)).and_then(Value::as_str)
            == Some(app.as_str());
        if keep || !ours {
            return Ok((e, false, r));
        }
        target.delete(&r, &e.namespace, &e.name).await?;
    }
    Ok((e, true, r))
}
