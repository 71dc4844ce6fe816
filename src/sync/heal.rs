//! Self-heal: its eyes — one watch per managed kind (label
//! `gitgate.dev/app`) and one on gitgate's own webhook configurations
//! (label `gitgate.dev/guard`) — and what the reconciler does with each
//! event ([`Reconciler::heal`]): puts Git's fields back, reports drift, or
//! restores the guard; break-glass windows leave an object alone for a
//! while.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt as _;
use kube::api::{Api, DynamicObject};
use kube::runtime::WatchStreamExt as _;
use kube::runtime::watcher::{self, Event};
use serde_json::Value;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::SyncError;
use super::audit::AuditRecord;
use super::guard::{self, GUARD_LABEL};
use super::plan::{self, Drift, Observed, Planned};
use super::reconcile::Reconciler;
use super::status::SyncStatus;
use super::target::{Resource, Target};
use crate::audit::record::EventKind;
use crate::contract::{APP_LABEL, BREAK_GLASS_ANNOTATION};
use crate::render::DesiredSet;
use crate::render::config::App;
use crate::render::object::ObjectKey;

/// What a watch saw.
#[derive(Debug)]
pub enum HealEvent {
    Changed(ObjectKey, Value),
    Deleted(ObjectKey),
}

/// The running watches, keyed by (target, group, version, kind, selector).
pub struct Watches {
    tx: mpsc::Sender<HealEvent>,
    running: HashMap<String, JoinHandle<()>>,
}

impl Watches {
    pub fn new(tx: mpsc::Sender<HealEvent>) -> Self {
        Watches { tx, running: HashMap::new() }
    }

    /// Starts the watches not running yet (managed kinds, and the guard's
    /// kinds on `guard`); stops those no longer needed.
    pub fn ensure(&mut self, managed: Vec<(Arc<Target>, Resource)>, guard: Option<Arc<Target>>) {
        let mut want: Vec<(String, Arc<Target>, Resource, &'static str)> = managed
            .into_iter()
            .map(|(t, r)| (format!("{}|{}|{}|{}|app", t.name, r.api.group, r.api.version, r.api.kind), t, r, APP_LABEL))
            .collect();
        if let Some(t) = guard {
            for kind in ["ValidatingWebhookConfiguration", "MutatingWebhookConfiguration"] {
                let gvk = kube::core::GroupVersionKind::gvk("admissionregistration.k8s.io", "v1", kind);
                let plural = format!("{}s", kind.to_ascii_lowercase());
                let r =
                    Resource { api: kube::api::ApiResource::from_gvk_with_plural(&gvk, &plural), namespaced: false };
                want.push((format!("{}|guard|{kind}", t.name), t.clone(), r, GUARD_LABEL));
            }
        }
        let keys: std::collections::HashSet<&String> = want.iter().map(|w| &w.0).collect();
        self.running.retain(|k, h| {
            let keep = keys.contains(k);
            if !keep {
                h.abort();
            }
            keep
        });
        for (key, target, r, label) in want {
            if self.running.get(&key).is_some_and(|h| !h.is_finished()) {
                continue;
            }
            let tx = self.tx.clone();
            let handle = tokio::spawn(watch(target, r, label, tx));
            self.running.insert(key, handle);
        }
    }

    /// Stops every watch (leadership lost).
    pub fn clear(&mut self) {
        for (_, h) in self.running.drain() {
            h.abort();
        }
    }
}

impl Drop for Watches {
    fn drop(&mut self) {
        self.clear();
    }
}

/// How soon a broken watch is retried: 100 ms, doubling, at most 1 s.
/// kube's default backoff grows to 30 s, so after an apiserver restart of
/// a few seconds self-heal could stay blind for up to 30 s more; with this
/// one a watch resumes within about a second of the apiserver's return (a
/// retry is one list or watch request).
#[derive(Clone, Debug)]
pub struct WatchBackoff {
    next: std::time::Duration,
}

impl WatchBackoff {
    pub const FIRST: std::time::Duration = std::time::Duration::from_millis(100);
    pub const MAX: std::time::Duration = std::time::Duration::from_secs(1);
}

impl Default for WatchBackoff {
    fn default() -> Self {
        WatchBackoff { next: Self::FIRST }
    }
}

impl Iterator for WatchBackoff {
    type Item = std::time::Duration;

    fn next(&mut self) -> Option<std::time::Duration> {
        let wait = self.next;
        self.next = (self.next * 2).min(Self::MAX);
        Some(wait)
    }
}

impl kube::runtime::utils::Backoff for WatchBackoff {
    fn reset(&mut self) {
        self.next = Self::FIRST;
    }
}

async fn watch(target: Arc<Target>, r: Resource, label: &'static str, tx: mpsc::Sender<HealEvent>) {
    let api: Api<DynamicObject> = Api::all_with(target.client().clone(), &r.api);
    let config = watcher::Config::default().labels(label);
    let mut stream = watcher::watcher(api, config).backoff(WatchBackoff::default()).boxed();
    tracing::debug!(kind = %r.api.kind, cluster = %target.name, "watching for drift");
    while let Some(event) = stream.next().await {
        let event = match event {
            Ok(e) => e,
            Err(e) => {
                tracing::debug!(kind = %r.api.kind, error = %e, "watch interrupted; resuming");
                continue;
            }
        };
        let (obj, deleted) = match event {
            Event::Apply(o) | Event::InitApply(o) => (o, false),
            Event::Delete(o) => (o, true),
            Event::Init | Event::InitDone => continue,
        };
        let key = ObjectKey::new(
            &r.api.group,
            &r.api.kind,
            obj.metadata.namespace.as_deref().unwrap_or_default(),
            obj.metadata.name.as_deref().unwrap_or_default(),
        );
        let ev = if deleted {
            HealEvent::Deleted(key)
        } else {
            // Most of an object's bytes, read only when another manager
            // set fields (sync::foreign): dropped before the conversion,
            // not after.
            let mut obj = obj;
            let foreign = obj.metadata.managed_fields.as_ref().is_some_and(|m| {
                m.iter().any(|e| {
                    crate::contract::foreign::is_foreign(
                        e.manager.as_deref().unwrap_or_default(),
                        e.subresource.as_deref().unwrap_or_default(),
                    )
                })
            });
            if !foreign {
                obj.metadata.managed_fields = None;
            }
            match serde_json::to_value(&obj).ok().and_then(|v| super::target::with_type(super::target::slim(v), &r.api))
            {
                Some(v) => HealEvent::Changed(key, v),
                None => continue,
            }
        };
        if tx.send(ev).await.is_err() {
            return;
        }
    }
}

/// The field a sealed Secret's changed values are reported as (never the
/// values, nor which key changed).
pub const SEALED_VALUES: &str = "/data (the values sealed in Git)";

/// What a break-glass change leaves on an object, dropped when Git's
/// content goes back: the reason and the window's end.
pub(super) const GLASS_ANNOTATIONS: &[&str] = &[BREAK_GLASS_ANNOTATION, crate::contract::UNTIL_ANNOTATION];

impl Reconciler {
    /// Applies the guard's objects that are missing or edited.
    pub async fn guard_once(&self) -> Result<usize, SyncError> {
        let Some(g) = &self.guard else { return Ok(0) };
        let g = g.current();
        let target = &self.targets.default;
        let mut restored = 0;
        for (key, obj) in guard::objects(&g) {
            let version =
                obj.get("apiVersion").and_then(Value::as_str).map(plan::version_of).unwrap_or("v1").to_string();
            let r = target.resolve(&key.group, &version, &key.kind).await?;
            let live = target.get(&r, "", &key.name).await?;
            let needs = match &live {
                None => Some("deleted".to_string()),
                Some(l) => guard::tampered(&obj, l).map(|f| format!("{f} edited")),
            };
            if let Some(why) = needs {
                // An edit is replaced, not merged (guard::restored); then
                // applied, so gitgate's field manager owns its fields.
                if let Some(l) = &live {
                    target.replace(&r, "", &key.name, &guard::restored(&obj, l)).await?;
                }
                target.apply(&r, "", &key.name, &obj).await?;
                restored += 1;
                if live.is_some() || why != "deleted" {
                    tracing::warn!(kind = %key.kind, name = %key.name, "{why}: restored");
                }
                self.audit(
                    AuditRecord::new(EventKind::WebhookConfigRestored, "")
                        .operation("APPLY")
                        .object(&key)
                        .resource(&r)
                        .reasons(vec![why]),
                );
            }
        }
        Ok(restored)
    }

    /// One watch event on a managed object: self-heal, detect-only report,
    /// or the guard's restore.
    pub async fn heal(&self, desired: Option<&Arc<DesiredSet>>, event: HealEvent) {
        let (key, live) = match &event {
            HealEvent::Changed(k, v) => (k, Some(v)),
            HealEvent::Deleted(k) => (k, None),
        };
        if key.group == "admissionregistration.k8s.io" {
            if let Err(e) = self.guard_once().await {
                tracing::error!(error = %crate::error_chain(&e), "failed to restore gitgate's webhook configuration");
            }
            return;
        }
        let Some(desired) = desired else { return };
        let Some(obj) = desired.get_key(key) else { return };
        let Some(app) = desired.app_of(obj) else { return };
        if !desired.self_heals(&app.name) {
            // Paused, or a closed sync window: Git is frozen for the app.
            return;
        }
        let Ok(planned) = plan::plan_object(&app.name, key, obj) else { return };
        let drift = self.sealed_drift(&planned, live, plan::drift(&planned, live));
        let Drift::Changed(field) = &drift else {
            // Missing after a delete: put back (self-heal); stale content is
            // the next sync's job.
            if drift == Drift::Missing && app.sync_policy.self_heal && !app.sync_policy.detect_only {
                self.revert(app, &planned, None, "deleted", false).await;
            }
            return;
        };
        if let Some(m) = self.status.metrics() {
            m.drift(&app.name);
        }
        let glass = live.and_then(plan::break_glass);
        if let Some(g) = &glass
            && let Some(note) = self.glass_window(app, key, g, field)
        {
            self.status.update_object(&app.name, key, |o| {
                o.sync = SyncStatus::OutOfSync;
                o.message = note;
            });
            return;
        }
        if !app.sync_policy.self_heal || app.sync_policy.detect_only {
            tracing::warn!(app = %app.name, object = %planned.id(), field = %field, "drift detected (not reverted: self-heal is off)");
            self.status.update_object(&app.name, key, |o| {
                o.sync = SyncStatus::OutOfSync;
                o.message = format!("{field} differs from Git");
            });
            return;
        }
        self.revert(app, &planned, live, field, glass.is_some()).await;
    }

    /// Where the sealed Secrets' values are checked from: set once the
    /// secrets bridge has its identities.
    pub fn sealed_values(&self) -> Arc<arc_swap::ArcSwapOption<crate::secrets::Keyring>> {
        self.sealed.clone()
    }

    /// `drift`, or [`SEALED_VALUES`] when `live` is a sealed Secret in sync
    /// with Git's sealed form whose values changed since the unseal.
    fn sealed_drift(&self, planned: &Planned, live: Option<&Value>, drift: Drift) -> Drift {
        if drift != Drift::InSync || planned.sealed_digest.is_none() {
            return drift;
        }
        let (Some(live), Some(keyring)) = (live, self.sealed.load_full()) else { return drift };
        match crate::secrets::values_of(&keyring.current(), live) {
            crate::secrets::Values::Changed => Drift::Changed(SEALED_VALUES.into()),
            crate::secrets::Values::Intact | crate::secrets::Values::Unknown => drift,
        }
    }

    /// [`plan::observe`], with the sealed values checked.
    pub(super) fn observe(&self, planned: &Planned, live: Option<&Value>) -> Observed {
        let mut seen = plan::observe(planned, live);
        seen.drift = self.sealed_drift(planned, live, std::mem::replace(&mut seen.drift, Drift::InSync));
        seen
    }

    /// The break-glass window of an object changed by hand under
    /// `gitgate.dev/break-glass: "<reason>"`: opened (and audited) when
    /// first seen, `Some(note)` while it lasts (self-heal leaves the object
    /// alone), `None` once it has ended (audited; the object goes back to
    /// Git). The window's end is the one gitgate's mutating webhook stamped
    /// on the object (`gitgate.dev/break-glass-until`), so every replica,
    /// after a failover too, ends it at the same time; an object changed
    /// without that webhook gets `--break-glass-ttl` from when this replica
    /// first saw it.
    pub(super) fn glass_window(&self, app: &App, key: &ObjectKey, glass: &plan::Glass, field: &str) -> Option<String> {
        let reason = glass.reason.as_str();
        let deadline = |first_seen: Option<Instant>| match glass.until {
            Some(until) => {
                let left = until.saturating_sub(crate::audit::record::now_micros());
                Instant::now() + Duration::from_micros(u64::try_from(left).unwrap_or(0))
            }
            None => first_seen.unwrap_or_else(Instant::now) + self.config.break_glass_ttl,
        };
        let mut open = self.break_glass.lock().unwrap_or_else(|e| e.into_inner());
        let known = open.get(key).copied();
        let (first_seen, _) = known.unzip();
        let ends = deadline(first_seen);
        if ends <= Instant::now() {
            open.remove(key);
            drop(open);
            self.audit_glass(EventKind::BreakGlassExpired, &app.name, key, reason, field);
            tracing::warn!(app = %app.name, object = %plan::id(key), "break-glass expired: back to Git");
            return None;
        }
        open.insert(key.clone(), (first_seen.unwrap_or_else(Instant::now), ends));
        drop(open);
        if known.is_none() {
            self.audit_glass(EventKind::BreakGlassOpened, &app.name, key, reason, field);
            tracing::warn!(app = %app.name, object = %plan::id(key), reason, left = ?ends.saturating_duration_since(Instant::now()), "break-glass: self-heal leaves the object alone");
        }
        Some(format!("break-glass ({reason}): {field} differs from Git; left alone until the window ends"))
    }

    pub(super) fn audit_glass(&self, event: EventKind, app: &str, key: &ObjectKey, reason: &str, field: &str) {
        let detail = match event {
            EventKind::BreakGlassOpened => {
                let ends = self.break_glass.lock().unwrap_or_else(|e| e.into_inner()).get(key).map(|(_, e)| *e);
                let left =
                    ends.map(|e| e.saturating_duration_since(Instant::now())).unwrap_or(self.config.break_glass_ttl);
                format!("{field} differs from Git; self-heal resumes in {}s", left.as_secs())
            }
            _ => format!("{field} differs from Git; reverted to Git"),
        };
        self.audit(AuditRecord::new(event, app).object(key).reasons(vec![reason.to_string(), detail]));
    }

    /// When the next break-glass window ends.
    pub fn next_glass_expiry(&self) -> Option<Instant> {
        self.break_glass.lock().unwrap_or_else(|e| e.into_inner()).values().map(|(_, ends)| *ends).min()
    }

    /// Windows that ended with no watch event since: each object is read
    /// again and healed (back to Git), or forgotten when it is gone or
    /// already matches Git.
    pub async fn expire_glass(&self, desired: Option<&Arc<DesiredSet>>) {
        let now = Instant::now();
        let due: Vec<ObjectKey> = self
            .break_glass
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|(_, (_, ends))| *ends <= now)
            .map(|(k, _)| k.clone())
            .collect();
        for key in due {
            let live = match self.read_managed(desired, &key).await {
                Ok(l) => l,
                Err(e) => {
                    tracing::warn!(object = %plan::id(&key), error = %crate::error_chain(&e), "failed to read a break-glass object");
                    None
                }
            };
            match live {
                Some(v) => self.heal(desired, HealEvent::Changed(key.clone(), v)).await,
                None => tracing::info!(object = %plan::id(&key), "break-glass window ended on an object that is gone"),
            }
            // Healed (and audited) above, or nothing left to revert.
            self.break_glass.lock().unwrap_or_else(|e| e.into_inner()).remove(&key);
        }
    }

    /// The live copy of one of Git's objects, from its app's cluster.
    async fn read_managed(
        &self,
        desired: Option<&Arc<DesiredSet>>,
        key: &ObjectKey,
    ) -> Result<Option<Value>, SyncError> {
        let Some(d) = desired else { return Ok(None) };
        let Some(obj) = d.get_key(key) else { return Ok(None) };
        let Some(app) = d.app_of(obj) else { return Ok(None) };
        let planned = plan::plan_object(&app.name, key, obj)?;
        let target = self.targets.get(&app.destination.cluster).await?;
        let r = target.resolve(&key.group, plan::version_of(&planned.api_version), &key.kind).await?;
        target.get(&r, &key.namespace, &key.name).await
    }

    /// Puts Git's content back; a break-glass object also loses its
    /// `gitgate.dev/break-glass` annotation (another manager's field, which
    /// an apply cannot drop), so the window is visibly closed.
    async fn revert(&self, app: &App, planned: &Planned, live: Option<&Value>, why: &str, glass: bool) {
        let Ok(target) = self.targets.get(&app.destination.cluster).await else { return };
        let r = match target
            .resolve(&planned.key.group, plan::version_of(&planned.api_version), &planned.key.kind)
            .await
        {
            Ok(r) => r,
            Err(e) => return tracing::warn!(error = %crate::error_chain(&e), "self-heal could not resolve the kind"),
        };
        let applied = match plan::respect_ignored(planned, live) {
            Ok(object) => target.apply(&r, &planned.key.namespace, &planned.key.name, &object).await,
            Err(e) => Err(e),
        };
        // Fields other managers added: removed with a JSON patch, and
        // named (with who set them) in the revert's audit record.
        let foreign = live.map(|l| plan::foreign_fields(planned, l)).unwrap_or_default();
        let applied = match (applied, live) {
            (Ok(v), Some(l)) if !foreign.is_empty() => {
                let patch = crate::contract::foreign::removal(l, &foreign);
                target.json_patch(&r, &planned.key.namespace, &planned.key.name, &patch).await.map(|()| v)
            }
            (other, _) => other,
        };
        match applied {
            Ok(_) => {
                tracing::warn!(app = %app.name, object = %planned.id(), what = why, "drift reverted");
                let reasons = foreign.iter().map(|f| format!("{} set by {}: removed", f.pointer, f.manager)).collect();
                self.audit_apply_with(EventKind::DriftReverted, &app.name, planned, &r, reasons);

                self.status.update_object(&app.name, &planned.key, |o| {
                    o.sync = SyncStatus::Synced;
                    o.message = format!("drift reverted ({why})");
                });
                if glass
                    && let Err(e) = target
                        .remove_annotations(&r, &planned.key.namespace, &planned.key.name, GLASS_ANNOTATIONS)
                        .await
                {
                    tracing::warn!(object = %planned.id(), error = %crate::error_chain(&e), "failed to drop the break-glass annotation");
                }
            }
            Err(e) => tracing::warn!(app = %app.name, error = %crate::error_chain(&e), "self-heal failed"),
        }
    }

    /// The kinds to watch for self-heal: every kind the desired set holds,
    /// per target, and the guard's.
    pub async fn watch_set(&self, desired: &DesiredSet) -> Vec<(Arc<Target>, Resource)> {
        let mut kinds: HashSet<(String, String, String)> = HashSet::new();
        let mut out = Vec::new();
        for app in desired.apps() {
            let Ok(target) = self.targets.get(&app.destination.cluster).await else { continue };
            // One manifest per kind is read for its version; the rest are skipped.
            for (key, obj) in desired.app_objects(&app.name) {
                if !kinds.insert((target.name.clone(), key.group.clone(), key.kind.clone())) {
                    continue;
                }
                let Ok(p) = plan::plan_object(&app.name, &key, obj) else { continue };
                if let Ok(r) = target.resolve(&key.group, plan::version_of(&p.api_version), &key.kind).await {
                    out.push((target.clone(), r));
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::runtime::utils::Backoff as _;

    #[test]
    fn a_broken_watch_is_retried_within_a_second_however_long_the_outage() {
        let mut b = WatchBackoff::default();
        let waits: Vec<u128> = b.by_ref().take(8).map(|d| d.as_millis()).collect();
        assert_eq!(waits, [100, 200, 400, 800, 1000, 1000, 1000, 1000]);
        b.reset();
        assert_eq!(b.next(), Some(WatchBackoff::FIRST), "a watch that resumed starts from the shortest wait again");
    }
}
