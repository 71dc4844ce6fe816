//! The Namespace objects the CEL policies read (`namespaceObject`, and the
//! `namespaceSelector` of bindings and match constraints): a kube-rs
//! reflector watches Namespaces and, on each change, swaps in a whole new
//! snapshot. Admission reads the snapshot and never calls the apiserver;
//! without a cluster it stays empty.

use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::ArcSwap;
use futures_util::StreamExt as _;
use k8s_openapi::api::core::v1::Namespace;
use kube::runtime::{WatchStreamExt as _, reflector, watcher};
use serde_json::Value;

use crate::policy::Namespaces;

/// Namespace name → the Namespace object as JSON.
type Map = HashMap<String, Arc<Value>>;

/// The policy engine's namespace list.
#[derive(Default)]
pub struct NamespaceCache {
    snapshot: ArcSwap<Map>,
}

impl Namespaces for NamespaceCache {
    fn get(&self, name: &str) -> Option<Arc<Value>> {
        self.snapshot.load().get(name).cloned()
    }
}

impl NamespaceCache {
    pub fn new() -> Arc<Self> {
        Arc::new(NamespaceCache::default())
    }

    /// How many namespaces the snapshot holds.
    pub fn len(&self) -> usize {
        self.snapshot.load().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Replaces the snapshot.
    pub fn replace<'a>(&self, namespaces: impl IntoIterator<Item = &'a Namespace>) {
        let map: Map = namespaces
            .into_iter()
            .filter_map(|ns| {
                let name = ns.metadata.name.clone()?;
                let mut json = serde_json::to_value(ns).ok()?;
                if let Value::Object(o) = &mut json {
                    o.entry("apiVersion").or_insert_with(|| "v1".into());
                    o.entry("kind").or_insert_with(|| "Namespace".into());
                }
                Some((name, Arc::new(json)))
            })
            .collect();
        self.snapshot.store(Arc::new(map));
    }

    /// Watches the cluster's Namespaces (list + watch, re-listing after an
    /// error with backoff) until the task is aborted.
    pub fn watch(self: &Arc<Self>, client: kube::Client) -> tokio::task::JoinHandle<()> {
        let me = self.clone();
        tokio::spawn(async move {
            let api: kube::Api<Namespace> = kube::Api::all(client);
            let (reader, writer) = reflector::store();
            let stream = reflector(writer, watcher(api, watcher::Config::default())).default_backoff();
            let mut stream = std::pin::pin!(stream);
            let mut ready = false;
            while let Some(event) = stream.next().await {
                match event {
                    Ok(watcher::Event::Init | watcher::Event::InitApply(_)) if !ready => continue,
                    Ok(watcher::Event::InitDone) if !ready => {
                        ready = true;
                        tracing::info!(namespaces = reader.len(), "namespace selectors read the cluster's Namespaces");
                    }
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "the Namespace watch failed; retrying");
                        continue;
                    }
                }
                if ready {
                    me.replace(reader.state().iter().map(|n| n.as_ref()));
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_snapshot_answers_by_name_with_the_labels() {
        let cache = NamespaceCache::new();
        assert!(cache.get("prod").is_none());
        let ns: Namespace = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "prod", "labels": {"environment": "production"}}
        }))
        .unwrap();
        cache.replace([&ns]);
        let got = cache.get("prod").unwrap();
        assert_eq!(got["metadata"]["labels"]["environment"], "production");
        assert_eq!(got["kind"], "Namespace");
        cache.replace([]);
        assert!(cache.get("prod").is_none(), "a deleted namespace leaves the snapshot");
    }
}
