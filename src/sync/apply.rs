//! Steps 2–4 of the checklist: the preflight (held hooks, immutable
//! fields), then the apply by step — the PreSync hooks, each wave with its
//! Sync hooks, the PostSync hooks — each wave healthy before the next.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{FutureExt as _, StreamExt as _};

use super::SyncError;
use super::heal::GLASS_ANNOTATIONS;
use super::health::Health;
use super::hooks::HookRun;
use super::plan::{self, Drift, Observed, Planned, Wave, commit_of};
use super::reconcile::{AppSync, Reconciler, resolve_all};
use super::status::AppStatus;
use super::target::{Resource, Target};
use crate::audit::record::EventKind;

impl Reconciler {
    /// Step 2, before anything is written: the hooks of a sync that
    /// changes something are planned (as Argo CD's automated sync starts an
    /// operation only when out of sync) — a commit whose hook failed is
    /// held, its hooks not run again —, and an immutable field that Git
    /// changes fails the sync here, naming it, unless the object may be
    /// re-created. Returns those that may be: by index, with their fields.
    pub(super) async fn preflight_sync(
        &self,
        sync: &mut AppSync<'_>,
        status: &mut AppStatus,
    ) -> Result<HashMap<usize, Vec<String>>, SyncError> {
        let to_apply: Vec<usize> = (0..sync.planned.len()).filter(|&i| sync.applies(i)).collect();
        let hooks = if to_apply.is_empty() { Vec::new() } else { plan::plan_hooks(sync.desired, &sync.app.name)? };
        let commit = commit_of(sync.desired, &sync.app.name);
        if !hooks.is_empty()
            && let Some(detail) = self
                .hook_failures
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(&sync.app.name)
                .filter(|(c, _)| *c == commit)
                .map(|(_, d)| d.clone())
        {
            self.fill_status(status, sync);
            status.objects.extend(self.hook_statuses(&sync.app.name, sync.desired, &[]));
            return Err(SyncError::HookHeld { detail });
        }
        let hook_planned: Vec<Planned> = hooks.iter().map(|h| h.planned.clone()).collect();
        sync.hook_resources = resolve_all(&sync.target, &hook_planned).await?;
        sync.hooks = hooks;
        self.preflight(&sync.target, &sync.planned, &sync.resources, &sync.seen, &to_apply)
            .await
            .inspect_err(|_| self.fill_status(status, sync))
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
            if planned[i].recreate == crate::contract::options::Recreate::Yes {
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

    /// Steps 3 and 4: applies by step ([`plan::steps`]) — each step's
    /// hooks started, its objects applied, its hooks finished (each within
    /// `--hook-timeout`) — and a later step waits until this one's objects
    /// are healthy. `recreate`: the objects re-created at their wave
    /// (Replace=true) without a refused apply first.
    pub(super) async fn apply_steps(
        &self,
        sync: &mut AppSync<'_>,
        recreate: &HashMap<usize, Vec<String>>,
        hook_runs: &mut Vec<HookRun>,
    ) -> Result<(), SyncError> {
        let steps = plan::steps(&sync.planned, &sync.hooks, !sync.hooks.is_empty());
        for (si, step) in steps.iter().enumerate() {
            let started = hook_runs.len();
            self.start_hooks(&sync.hook_run(), step, hook_runs).await?;
            self.apply_step(sync, step, recreate).await?;
            self.wait_hooks(&sync.hook_run(), &mut hook_runs[started..]).await?;
            if si + 1 < steps.len() && !step.objects.is_empty() {
                self.wait_healthy(
                    &sync.target,
                    step.wave,
                    &sync.planned,
                    &sync.resources,
                    &step.objects,
                    &mut sync.seen,
                )
                .await?;
            }
        }
        if !sync.hooks.is_empty() {
            self.hook_failures.lock().unwrap_or_else(|e| e.into_inner()).remove(&sync.app.name);
        }
        if let Some(m) = self.status.metrics() {
            m.applied(&sync.app.name, sync.applied as u64);
        }
        Ok(())
    }

    /// A sync that failed after it started writing: the SyncFail hooks
    /// run, and the status names what failed. Returns the sync's error.
    pub(super) async fn stopped(
        &self,
        sync: &AppSync<'_>,
        hook_runs: &mut Vec<HookRun>,
        status: &mut AppStatus,
        e: SyncError,
    ) -> SyncError {
        let e = self.sync_failed(&sync.hook_run(), hook_runs, e).await;
        self.fill_status(status, sync);
        status.objects.extend(self.hook_statuses(&sync.app.name, sync.desired, hook_runs));
        e
    }

    /// Applies a step's objects that the sync writes, concurrently; the
    /// first failure fails the step once every apply has ended.
    async fn apply_step(
        &self,
        sync: &mut AppSync<'_>,
        step: &plan::Step,
        recreate: &HashMap<usize, Vec<String>>,
    ) -> Result<(), SyncError> {
        let done = {
            let sync: &AppSync<'_> = sync;
            let jobs = step
                .objects
                .iter()
                .copied()
                .filter(|&i| sync.applies(i))
                .map(|i| self.apply_one(sync, i, recreate.get(&i).cloned()).map(move |r| (i, r)));
            futures_util::stream::iter(jobs).buffer_unordered(self.config.concurrency.max(1)).collect::<Vec<_>>().await
        };
        let mut first_error = None;
        for (i, r) in done {
            match r {
                Ok((obs, recreated)) => self.applied(sync, i, obs, recreated),
                Err(e) => {
                    let msg = crate::error_chain(&e);
                    first_error.get_or_insert(e);
                    sync.results.insert(i, Err(msg));
                }
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Applies one object (Git's content, its ignored fields as live has
    /// them); on an immutable field (`known_immutable` by the preflight) it
    /// is deleted and created again when it may be (Replace=true). What
    /// other managers added goes too (an apply cannot remove fields it does
    /// not own), and so does a break-glass change's annotation (its window
    /// ended, or Git moved). Returns the object as stored, and the fields
    /// that made it be re-created.
    async fn apply_one(
        &self,
        sync: &AppSync<'_>,
        i: usize,
        known_immutable: Option<Vec<String>>,
    ) -> Result<(Observed, Option<String>), SyncError> {
        let (target, r, p, seen) = (&sync.target, &sync.resources[i], &sync.planned[i], &sync.seen[i]);
        let object = plan::respect_ignored(p, seen.ignored.as_ref())?;
        let first = match known_immutable {
            Some(fields) => Err(fields),
            None => match target.apply(r, &p.key.namespace, &p.key.name, &object).await {
                Ok(v) => Ok(v),
                Err(e) => match super::target::immutable_fields(&e) {
                    Some(fields) => Err(fields),
                    None => return Err(e),
                },
            },
        };
        let (mut stored, recreated) = match first {
            Ok(v) => (v, None),
            Err(fields) if p.recreate == crate::contract::options::Recreate::Yes => {
                // Replace=true: deleted, then created from Git.
                target.delete_and_wait(r, &p.key.namespace, &p.key.name, self.config.hook_timeout).await?;
                let v = target.apply(r, &p.key.namespace, &p.key.name, &object).await?;
                (v, Some(fields.join(", ")))
            }
            Err(fields) => return Err(immutable(p, &fields)),
        };
        if let Some(patch) = &seen.foreign
            && recreated.is_none()
        {
            target.json_patch(r, &p.key.namespace, &p.key.name, patch).await?;
            stored = target.get(r, &p.key.namespace, &p.key.name).await?.unwrap_or(stored);
        }
        if seen.break_glass.is_some() && recreated.is_none() {
            target.remove_annotations(r, &p.key.namespace, &p.key.name, GLASS_ANNOTATIONS).await?;
        }
        Ok((plan::applied(p, &stored), recreated))
    }

    /// An object applied: its break-glass window, if one was open, closed
    /// (and audited), the apply audited, and what is stored now kept.
    fn applied(&self, sync: &mut AppSync<'_>, i: usize, obs: Observed, recreated: Option<String>) {
        sync.applied += 1;
        let (app, p) = (sync.app, &sync.planned[i]);
        if let Some(plan::Glass { reason, .. }) = &sync.seen[i].break_glass
            && self.break_glass.lock().unwrap_or_else(|e| e.into_inner()).remove(&p.key).is_some()
        {
            self.audit_glass(EventKind::BreakGlassExpired, &app.name, &p.key, reason, "/");
        }
        let reasons = recreated
            .map(|f| vec![format!("deleted and created again: {f} is immutable (Replace=true)")])
            .unwrap_or_default();
        self.audit_apply_with(EventKind::Apply, &app.name, p, &sync.resources[i], reasons);
        sync.seen[i] = obs;
        sync.results.insert(i, Ok(()));
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
}

impl AppSync<'_> {
    /// Whether the sync writes object `i` now: not while a break-glass
    /// window leaves it alone; Git changed (stale or missing) always; a
    /// hand change only with self-heal on.
    pub(super) fn applies(&self, i: usize) -> bool {
        if self.notes.contains_key(&i) {
            return false;
        }
        match &self.seen[i].drift {
            Drift::InSync => false,
            Drift::Missing | Drift::Stale => true,
            Drift::Changed(_) => self.app.sync_policy.self_heal,
        }
    }
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
    use crate::contract::{ARGO_SYNC_OPTIONS, SYNC_OPTIONS};
    let hint = match p.recreate {
        crate::contract::options::Recreate::ReplaceWithoutForce => format!(
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
