//! Step 5 of the checklist: what left Git is pruned from the app's
//! inventory (reverse wave order, under the mass-prune guard), and the
//! inventory records what exists; an app that left `gitgate.yaml` is
//! pruned whole.

use std::collections::HashSet;
use std::sync::Arc;

use futures_util::StreamExt as _;
use serde_json::Value;

use super::SyncError;
use super::audit::AuditRecord;
use super::inventory::{self, Entry, Inventory};
use super::plan::{self, Planned, PrunePlan, commit_of};
use super::reconcile::{AppSync, Reconciler, Recorded};
use super::target::{Resource, Target};
use crate::audit::record::{EventKind, Outcome};
use crate::contract::APP_LABEL;
use crate::render::DesiredSet;
use crate::render::config::App;
use crate::render::object::ObjectKey;

/// What step 5 left for the status: its note (what waits for pruning, or
/// why the prune stopped), whether the guard stopped it, and whether the
/// inventory was recorded.
pub(super) struct Pruned {
    pub(super) note: Option<String>,
    pub(super) stopped: bool,
    pub(super) recorded: Result<(), SyncError>,
}

impl Reconciler {
    /// Step 5: prunes what left Git — a hook never, also when it was one
    /// of the app's objects before (its run may carry the name the
    /// inventory recorded) —, then records the inventory of what now exists
    /// (before the status is built: at 10,000 objects the sync's scratch is
    /// freed first, and the status that stays is not scattered among it).
    pub(super) async fn prune_app(&self, sync: &mut AppSync<'_>, message: &str) -> Pruned {
        let (app, desired) = (sync.app, sync.desired);
        let keys: HashSet<ObjectKey> = sync
            .planned
            .iter()
            .map(|p| p.key.clone())
            .chain(desired.app_hooks(&app.name).into_iter().map(|(k, _)| k))
            .collect();
        let prune = plan::prune_plan(
            sync.previous,
            sync.base,
            &keys,
            self.config.prune_guard,
            plan::allows_mass_prune(message),
        );
        drop(keys);
        let mut remaining: Vec<Entry> = sync.planned.iter().map(Planned::entry).collect();
        let note = self.prune_left(sync, &prune, &mut remaining).await;
        remaining.extend(prune.kept.iter().cloned());
        let stopped = prune.guarded.is_some();
        drop(prune);
        let recorded = sync.recorded.take();
        let recorded = if app.sync_policy.detect_only {
            Ok(())
        } else {
            // A stopped prune completes nothing: the base stays; otherwise
            // what now exists is the new base.
            let base = stopped.then_some(sync.base);
            self.write_inventory(app, remaining, recorded.as_ref(), desired, base).await.map(drop)
        };
        Pruned { note, stopped, recorded }
    }

    /// Before anything is applied, the inventory records what is about to
    /// exist (what it held, and Git's objects), so a crash mid-sync never
    /// orphans an object.
    pub(super) async fn record_ahead(&self, sync: &mut AppSync<'_>) -> Result<(), SyncError> {
        let ahead: Vec<Entry> = sync.previous.iter().cloned().chain(sync.planned.iter().map(Planned::entry)).collect();
        let recorded =
            self.write_inventory(sync.app, ahead, sync.recorded.as_ref(), sync.desired, Some(sync.base)).await?;
        sync.recorded = Some(recorded);
        Ok(())
    }

    /// What left Git: reported only (detect-only, or prune off), refused
    /// by the guard (audited), or deleted. What stays is added to
    /// `remaining`; returns the status's note.
    async fn prune_left(&self, sync: &AppSync<'_>, prune: &PrunePlan, remaining: &mut Vec<Entry>) -> Option<String> {
        let app = sync.app;
        if app.sync_policy.detect_only {
            if prune.delete.is_empty() {
                return None;
            }
            remaining.extend(prune.delete.iter().cloned());
            return Some(format!("{} objects left Git (detect-only: not pruned)", prune.delete.len()));
        }
        if let Some(why) = &prune.guarded {
            remaining.extend(prune.delete.iter().cloned());
            self.audit(
                AuditRecord::new(EventKind::Prune, &app.name)
                    .commit(commit_of(sync.desired, &app.name))
                    .outcome(Outcome::Refused)
                    .reasons(vec![why.clone()]),
            );
            return Some(why.clone());
        }
        if !app.sync_policy.prune {
            if prune.delete.is_empty() {
                return None;
            }
            remaining.extend(prune.delete.iter().cloned());
            return Some(format!("{} objects left Git and wait for pruning (prune is off)", prune.delete.len()));
        }
        let pruned = self.prune(&sync.target, &app.name, &prune.delete, sync.desired).await;
        if let Some(m) = self.status.metrics() {
            m.pruned(&app.name, pruned.len() as u64);
        }
        remaining.extend(prune.delete.iter().filter(|e| !pruned.contains(&e.key())).cloned());
        None
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
    pub(super) async fn write_inventory(
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
    pub(super) async fn forget_app(&self, desired: &DesiredSet, name: &str, inv: &Inventory, message: &str) {
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
