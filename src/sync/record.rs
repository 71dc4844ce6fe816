//! Steps 6 and 7 of the checklist: the app's status, object by object,
//! and its sync state; and the sync loop's audit records (each built with
//! [`AuditRecord`]).

use super::audit::AuditRecord;
use super::health;
use super::plan::{Drift, Planned, commit_of};
use super::reconcile::{AppSync, Reconciler};
use super::status::{AppStatus, ObjectStatus, SyncStatus, health_str};
use super::target::Resource;
use crate::audit::record::EventKind;

impl Reconciler {
    /// Step 6: each object's line (its sync, health and why) and the
    /// app's health.
    pub(super) fn fill_status(&self, status: &mut AppStatus, sync: &AppSync<'_>) {
        let (planned, resources, seen, results, notes) =
            (&sync.planned, &sync.resources, &sync.seen, &sync.results, &sync.notes);
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
                digest: p.digest.clone(),
                sealed: p.sealed_digest.is_some(),
                hook: false,
            });
        }
        status.health = health_str(health::aggregate(healths));
        status.objects = objects;
    }

    /// Step 7: the app's sync state — failed when the guard stopped the
    /// prune, out of sync when an object differs from Git or waits for
    /// pruning, else synced at the commit in force (a detect-only app
    /// syncs nothing) —, and the log line.
    pub(super) fn conclude(
        &self,
        status: &mut AppStatus,
        sync: &AppSync<'_>,
        note: Option<String>,
        prune_stopped: bool,
    ) {
        let (app, desired) = (sync.app, sync.desired);
        let out_of_sync = status.objects.iter().any(|o| o.sync != SyncStatus::Synced) || note.is_some();
        status.sync = if prune_stopped {
            SyncStatus::Failed
        } else if out_of_sync {
            SyncStatus::OutOfSync
        } else {
            SyncStatus::Synced
        };
        if !app.sync_policy.detect_only && !prune_stopped {
            status.synced_commit = commit_of(desired, &app.name);
        }
        status.message = note.unwrap_or_default();
        tracing::info!(
            app = %app.name, commit = %commit_of(desired, &app.name), applied = sync.applied, sync = status.sync.as_str(), health = %status.health,
            "synced"
        );
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
