//! Self-heal's eyes: one watch per managed kind (label `gitgate.dev/app`)
//! and one on gitgate's own webhook configurations (label
//! `gitgate.dev/guard`). Events go to the reconciler, which decides.

use std::collections::HashMap;
use std::sync::Arc;

use futures_util::StreamExt as _;
use kube::api::{Api, DynamicObject};
use kube::runtime::WatchStreamExt as _;
use kube::runtime::watcher::{self, Event};
use serde_json::Value;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::guard::GUARD_LABEL;
use super::target::{Resource, Target};
use crate::provenance::APP_LABEL;
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
                    super::foreign::is_foreign(
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
