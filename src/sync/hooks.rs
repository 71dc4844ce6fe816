//! Sync hooks (PreSync, Sync, PostSync, SyncFail): each run created from
//! Git after its earlier runs are deleted, waited for (each within
//! `--hook-timeout`), its delete policies applied, audited, and kept on the
//! app's status. A failed hook holds its commit.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt as _;
use serde_json::Value;

use super::SyncError;
use super::audit::AuditRecord;
use super::health::{self, Health};
use super::plan::{self, commit_of};
use super::reconcile::{AppSync, Reconciler};
use super::status::{ObjectStatus, SyncStatus, health_str};
use super::target::{Resource, Target};
use crate::audit::record::EventKind;
use crate::contract::{APP_LABEL, SOURCE_ANNOTATION};
use crate::render::DesiredSet;
use crate::render::config::App;
use crate::render::hook::{DeletePolicy, Phase};
use crate::render::object::ObjectKey;

impl Reconciler {
    /// The status lines of an app's hooks: this sync's runs (kept), or
    /// the runs of the last sync at this commit that ran hooks.
    pub(super) fn hook_statuses(&self, app: &str, desired: &DesiredSet, runs: &[HookRun]) -> Vec<ObjectStatus> {
        let commit = commit_of(desired, app);
        let mut last = self.last_hooks.lock().unwrap_or_else(|e| e.into_inner());
        if !runs.is_empty() {
            let lines: Vec<ObjectStatus> = runs.iter().map(HookRun::status).collect();
            last.insert(app.to_string(), (commit, lines.clone()));
            return lines;
        }
        match last.get(app) {
            Some((c, lines)) if *c == commit => lines.clone(),
            _ => {
                last.remove(app);
                Vec::new()
            }
        }
    }

    /// Starts the hooks of a step (concurrently): each created from Git,
    /// after its earlier runs are deleted (BeforeHookCreation).
    pub(super) async fn start_hooks(
        &self,
        run: &Run<'_>,
        step: &plan::Step,
        runs: &mut Vec<HookRun>,
    ) -> Result<(), SyncError> {
        if step.hooks.is_empty() {
            return Ok(());
        }
        let jobs: Vec<_> = step.hooks.iter().map(|&h| self.start_hook(run, step.phase, h)).collect();
        let done =
            futures_util::stream::iter(jobs).buffer_unordered(self.config.concurrency.max(1)).collect::<Vec<_>>().await;
        let mut first = None;
        for r in done {
            match r {
                Ok(h) => runs.push(h),
                Err(e) => {
                    first.get_or_insert(e);
                }
            }
        }
        first.map_or(Ok(()), Err)
    }

    async fn start_hook(&self, run: &Run<'_>, phase: Phase, h: usize) -> Result<HookRun, SyncError> {
        let hook = &run.hooks[h];
        let (p, r) = (&hook.planned, &run.resources[h]);
        let ns = p.key.namespace.as_str();
        let failed = |e: SyncError| SyncError::HookFailed {
            hook: hook.describe(phase),
            file: p.file().to_string(),
            detail: crate::error_chain(&e),
        };
        if hook.hook.deletes(DeletePolicy::BeforeHookCreation) {
            let earlier = match &hook.generate_name {
                None => vec![p.key.name.clone()],
                Some(prefix) => {
                    // Earlier runs: the app's objects of the kind with this
                    // hook's generateName and file.
                    let mut found = Vec::new();
                    let selector = format!("{APP_LABEL}={}", run.app.name);
                    run.target
                        .list_each(r, Some(ns), &selector, |o| {
                            let text = |ptr: &str| o.pointer(ptr).and_then(Value::as_str);
                            let source = o
                                .pointer("/metadata/annotations")
                                .and_then(|a| a.get(SOURCE_ANNOTATION))
                                .and_then(Value::as_str);
                            if text("/metadata/generateName") == Some(prefix.as_str())
                                && source == Some(p.source.as_str())
                                && let Some(name) = text("/metadata/name")
                            {
                                found.push(name.to_string());
                            }
                        })
                        .await
                        .map_err(failed)?;
                    found
                }
            };
            for name in earlier {
                if run.target.get(r, ns, &name).await.map_err(failed)?.is_none() {
                    continue;
                }
                run.target.delete_and_wait(r, ns, &name, self.config.hook_timeout).await.map_err(failed)?;
                self.audit_hook(
                    run,
                    hook,
                    r,
                    &name,
                    EventKind::Prune,
                    "DELETE",
                    format!("{phase} hook: an earlier run deleted (BeforeHookCreation)"),
                );
            }
        }
        let object = p.stamped()?;
        let (name, note) = match run.target.create(r, ns, &object).await.map_err(failed)? {
            Some(stored) => {
                let name = stored.pointer("/metadata/name").and_then(Value::as_str).unwrap_or(&p.key.name).to_string();
                (name, format!("{phase} hook started"))
            }
            // A named hook without BeforeHookCreation is created once.
            None => (p.key.name.clone(), format!("{phase} hook exists already (created once: no BeforeHookCreation)")),
        };
        self.audit_hook(run, hook, r, &name, EventKind::Apply, "CREATE", note);
        tracing::info!(app = %run.app.name, hook = %hook.describe(phase), name = %name, "hook started");
        Ok(HookRun::new(hook, h, phase, name, r))
    }

    /// Waits until each hook run has finished (a Job complete, a Pod
    /// succeeded, anything else healthy; failed or degraded is a failure,
    /// and so is a run that takes longer than `--hook-timeout`), applies
    /// the delete policies, and fails with the first failed hook — named,
    /// with its reason and its log's last lines.
    pub(super) async fn wait_hooks(&self, run: &Run<'_>, runs: &mut [HookRun]) -> Result<(), SyncError> {
        let mut pause = Duration::from_millis(50);
        while self.poll_hooks(run, runs).await {
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(500));
        }
        let mut first = None;
        for hr in runs.iter() {
            let failed = self.end_hook(run, hr, first.is_none()).await;
            if first.is_none() {
                first = failed;
            }
        }
        first.map_or(Ok(()), Err)
    }

    /// Reads each unfinished run once and finishes those that ended (or
    /// took longer than `--hook-timeout`); true while some still run.
    async fn poll_hooks(&self, run: &Run<'_>, runs: &mut [HookRun]) -> bool {
        let timeout = self.config.hook_timeout;
        let mut pending = false;
        for hr in runs.iter_mut().filter(|h| h.succeeded.is_none()) {
            let p = &run.hooks[hr.hook].planned;
            let live = match run.target.get(&run.resources[hr.hook], &p.key.namespace, &hr.status.name).await {
                Ok(l) => l,
                Err(e) => {
                    hr.finish(false, format!("could not be read: {}", crate::error_chain(&e)));
                    continue;
                }
            };
            let a = match &live {
                None => health::Assessment { health: Health::Degraded, message: "deleted before it finished".into() },
                Some(v) => health::assess(&p.key.group, &p.key.kind, Some(v)),
            };
            match a.health {
                Health::Healthy => hr.finish(true, a.message),
                Health::Degraded => hr.finish(false, a.message),
                _ if hr.started.elapsed() >= timeout => hr.finish(
                    false,
                    format!("did not finish within {}s (--hook-timeout): {}", timeout.as_secs(), a.message),
                ),
                _ => {
                    hr.status.message = a.message;
                    pending = true;
                }
            }
        }
        pending
    }

    /// A finished run: its delete policy applied (and audited); when it
    /// failed, the error naming it — with its log's last lines when `first`
    /// (the first failure is the one reported).
    async fn end_hook(&self, run: &Run<'_>, hr: &HookRun, first: bool) -> Option<SyncError> {
        let hook = &run.hooks[hr.hook];
        let (p, r) = (&hook.planned, &run.resources[hr.hook]);
        let ok = hr.succeeded == Some(true);
        let mut detail = hr.status.message.clone();
        if !ok && first && p.key.group == "batch" && p.key.kind == "Job" {
            let tail = run.target.job_log_tail(&p.key.namespace, &hr.status.name).await;
            if !tail.is_empty() {
                detail = format!("{detail}; the last lines of its log:\n{tail}");
            }
        }
        let (policy, word) =
            if ok { (DeletePolicy::HookSucceeded, "HookSucceeded") } else { (DeletePolicy::HookFailed, "HookFailed") };
        if hook.hook.deletes(policy) {
            match run.target.delete(r, &p.key.namespace, &hr.status.name).await {
                Ok(()) => self.audit_hook(
                    run,
                    hook,
                    r,
                    &hr.status.name,
                    EventKind::Prune,
                    "DELETE",
                    format!("{} hook: deleted ({word})", hr.phase),
                ),
                Err(e) => {
                    tracing::warn!(hook = %hr.status.name, error = %crate::error_chain(&e), "failed to delete a hook")
                }
            }
        }
        if ok {
            return None;
        }
        let id = plan::id(&ObjectKey::new(&p.key.group, &p.key.kind, &p.key.namespace, &hr.status.name));
        Some(SyncError::HookFailed { hook: format!("{} hook {id}", hr.phase), file: p.file().to_string(), detail })
    }

    /// A sync that failed after it started: a failed hook holds its
    /// commit, and the SyncFail hooks run (their own failures are logged:
    /// the sync's error is the one reported).
    pub(super) async fn sync_failed(&self, run: &Run<'_>, runs: &mut Vec<HookRun>, e: SyncError) -> SyncError {
        if run.hooks.is_empty() {
            return e;
        }
        if matches!(e, SyncError::HookFailed { .. }) {
            self.hook_failures
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(run.app.name.clone(), (commit_of(run.desired, &run.app.name), crate::error_chain(&e)));
        }
        for step in plan::fail_steps(run.hooks) {
            let started = runs.len();
            let r = match self.start_hooks(run, &step, runs).await {
                Ok(()) => self.wait_hooks(run, &mut runs[started..]).await,
                Err(e) => Err(e),
            };
            if let Err(fe) = r {
                tracing::warn!(app = %run.app.name, error = %crate::error_chain(&fe), "a SyncFail hook failed");
            }
        }
        e
    }

    #[allow(clippy::too_many_arguments)]
    fn audit_hook(
        &self,
        run: &Run<'_>,
        hook: &plan::PlannedHook,
        r: &Resource,
        name: &str,
        event: EventKind,
        operation: &str,
        reason: String,
    ) {
        let p = &hook.planned;
        self.audit(
            AuditRecord::new(event, &run.app.name)
                .operation(operation)
                .object(&p.key)
                .name(name)
                .resource(r)
                .commit(p.commit.clone())
                .source(p.file())
                .digest(&p.digest)
                .reasons(vec![reason]),
        );
    }
}

impl AppSync<'_> {
    /// What running the app's hooks needs of this sync.
    pub(super) fn hook_run(&self) -> Run<'_> {
        Run {
            target: &self.target,
            app: self.app,
            desired: self.desired,
            hooks: &self.hooks,
            resources: &self.hook_resources,
        }
    }
}

/// What running an app's hooks needs of its sync.
pub(super) struct Run<'a> {
    pub(super) target: &'a Arc<Target>,
    pub(super) app: &'a App,
    pub(super) desired: &'a DesiredSet,
    pub(super) hooks: &'a [plan::PlannedHook],
    /// The resource of each hook.
    pub(super) resources: &'a [Arc<Resource>],
}

/// One run of a hook: the object it created, and how it ended (its line
/// in the app's status).
pub(super) struct HookRun {
    hook: usize,
    phase: Phase,
    started: Instant,
    succeeded: Option<bool>,
    status: ObjectStatus,
}

impl HookRun {
    fn new(hook: &plan::PlannedHook, index: usize, phase: Phase, name: String, r: &Resource) -> HookRun {
        let p = &hook.planned;
        let wave = if p.wave.wave == 0 { phase.to_string() } else { format!("{phase} {}", p.wave.wave) };
        HookRun {
            hook: index,
            phase,
            started: Instant::now(),
            succeeded: None,
            status: ObjectStatus {
                group: p.key.group.clone(),
                version: r.api.version.clone(),
                kind: p.key.kind.clone(),
                namespace: p.key.namespace.clone(),
                name,
                wave,
                sync: SyncStatus::Unknown,
                health: health_str(Health::Progressing),
                message: String::new(),
                commit: p.commit.clone(),
                source: p.file().to_string(),
                digest: p.digest.clone(),
                sealed: false,
                hook: true,
            },
        }
    }

    fn finish(&mut self, ok: bool, message: String) {
        self.succeeded = Some(ok);
        self.status.sync = if ok { SyncStatus::Synced } else { SyncStatus::Failed };
        self.status.health = health_str(if ok { Health::Healthy } else { Health::Degraded });
        self.status.message = message;
    }

    fn status(&self) -> ObjectStatus {
        self.status.clone()
    }
}
