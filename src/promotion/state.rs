//! What people decided about promotion, kept in the cluster so every
//! replica decides alike and a restart or failover forgets nothing: one
//! ConfigMap, `gitgate-promotion` in gitgate's namespace, one key per
//! decision: `approval.<app>` (the commit approved, by whom, when, the
//! change's digest) and `pause.<app>` (by whom, why, until when).
//!
//! Writes are JSON merge patches of one key (two approvers of two apps
//! never overwrite each other); every replica follows the ConfigMap with a
//! watch. Writing it takes RBAC in gitgate's namespace, which already
//! means owning gitgate (its keys and Lease live there too).

use std::collections::BTreeMap;
use std::sync::Arc;

use futures_util::StreamExt as _;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, ObjectMeta, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt as _, watcher};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::PromotionError;

/// The ConfigMap that holds approvals and pauses.
pub const STATE_CONFIGMAP: &str = "gitgate-promotion";
const APPROVAL_PREFIX: &str = "approval.";
const PAUSE_PREFIX: &str = "pause.";

/// An approval: this commit may be put in force for the app.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Approval {
    /// The full commit id approved.
    pub commit: String,
    /// The approver, as the apiserver named them (TokenReview).
    pub by: String,
    /// RFC 3339, UTC.
    pub at: String,
    /// `sha256:` of the change approved (what the app's objects were and
    /// become), as the audit record names it.
    pub change: String,
    /// An admin let this commit through a closed sync window.
    #[serde(default)]
    pub override_window: bool,
}

/// A pause: new commits wait and self-heal stops until `until`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Pause {
    pub by: String,
    pub reason: String,
    /// RFC 3339, UTC.
    pub since: String,
    /// Microseconds since the epoch: when it ends by itself.
    pub until_micros: i64,
    /// The commit in force for the app when it was paused (kept in force).
    #[serde(default)]
    pub commit: String,
}

impl Pause {
    /// RFC 3339 of `until_micros`.
    pub fn until(&self) -> String {
        crate::audit::record::format_rfc3339_micros(self.until_micros)
    }
}

/// Every approval and pause, as read from the ConfigMap.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GateState {
    pub approvals: BTreeMap<String, Approval>,
    pub pauses: BTreeMap<String, Pause>,
}

impl GateState {
    /// Reads the ConfigMap's data; an entry that does not parse is left
    /// out with a warning (and decides nothing).
    pub fn decode(data: Option<&BTreeMap<String, String>>) -> GateState {
        let mut state = GateState::default();
        for (k, v) in data.into_iter().flatten() {
            if let Some(app) = k.strip_prefix(APPROVAL_PREFIX) {
                match serde_json::from_str(v) {
                    Ok(a) => {
                        state.approvals.insert(app.to_string(), a);
                    }
                    Err(e) => {
                        tracing::warn!(key = %k, error = %e, "an approval in gitgate-promotion does not parse; ignored")
                    }
                }
            } else if let Some(app) = k.strip_prefix(PAUSE_PREFIX) {
                match serde_json::from_str(v) {
                    Ok(p) => {
                        state.pauses.insert(app.to_string(), p);
                    }
                    Err(e) => {
                        tracing::warn!(key = %k, error = %e, "a pause in gitgate-promotion does not parse; ignored")
                    }
                }
            }
        }
        state
    }

    /// The pause of `app` still running at `now` (µs since the epoch).
    pub fn active_pause(&self, app: &str, now: i64) -> Option<&Pause> {
        self.pauses.get(app).filter(|p| p.until_micros > now)
    }

    /// The earliest end of a running pause after `now`.
    pub fn next_pause_end(&self, now: i64) -> Option<i64> {
        self.pauses.values().map(|p| p.until_micros).filter(|&u| u > now).min()
    }
}

/// The ConfigMap, read, written and followed.
#[derive(Clone)]
pub struct StateStore {
    api: Api<ConfigMap>,
    namespace: String,
    current: Arc<watch::Sender<Arc<GateState>>>,
}

impl StateStore {
    pub fn new(client: kube::Client, namespace: &str) -> StateStore {
        let (tx, _) = watch::channel(Arc::new(GateState::default()));
        StateStore { api: Api::namespaced(client, namespace), namespace: namespace.to_string(), current: Arc::new(tx) }
    }

    /// The state as last read.
    pub fn current(&self) -> Arc<GateState> {
        self.current.borrow().clone()
    }

    /// Follows every change of the state.
    pub fn subscribe(&self) -> watch::Receiver<Arc<GateState>> {
        self.current.subscribe()
    }

    /// Reads the ConfigMap now (a missing one is an empty state).
    pub async fn load(&self) -> Result<Arc<GateState>, PromotionError> {
        let cm = self.api.get_opt(STATE_CONFIGMAP).await.map_err(|source| PromotionError::State {
            op: "read",
            namespace: self.namespace.clone(),
            source,
        })?;
        let state = Arc::new(GateState::decode(cm.as_ref().and_then(|c| c.data.as_ref())));
        self.publish(state.clone());
        Ok(state)
    }

    fn publish(&self, state: Arc<GateState>) {
        self.current.send_if_modified(|cur| {
            if **cur == *state {
                false
            } else {
                *cur = state;
                true
            }
        });
    }

    /// Records an approval of `app`'s commit.
    pub async fn put_approval(&self, app: &str, a: &Approval) -> Result<(), PromotionError> {
        let value = serde_json::to_string(a).map_err(PromotionError::Encode)?;
        self.patch_key(&format!("{APPROVAL_PREFIX}{app}"), Some(value)).await
    }

    /// Records a pause of `app`.
    pub async fn put_pause(&self, app: &str, p: &Pause) -> Result<(), PromotionError> {
        let value = serde_json::to_string(p).map_err(PromotionError::Encode)?;
        self.patch_key(&format!("{PAUSE_PREFIX}{app}"), Some(value)).await
    }

    /// Ends `app`'s pause.
    pub async fn remove_pause(&self, app: &str) -> Result<(), PromotionError> {
        self.patch_key(&format!("{PAUSE_PREFIX}{app}"), None).await
    }

    async fn patch_key(&self, key: &str, value: Option<String>) -> Result<(), PromotionError> {
        let err = |op: &'static str| {
            let namespace = self.namespace.clone();
            move |source| PromotionError::State { op, namespace, source }
        };
        let patch = serde_json::json!({"data": {key: value}});
        match self.api.patch(STATE_CONFIGMAP, &PatchParams::default(), &Patch::Merge(&patch)).await {
            Ok(cm) => {
                self.publish(Arc::new(GateState::decode(cm.data.as_ref())));
                Ok(())
            }
            Err(kube::Error::Api(s)) if s.code == 404 => {
                let Some(value) = value else { return Ok(()) };
                let cm = ConfigMap {
                    metadata: ObjectMeta { name: Some(STATE_CONFIGMAP.into()), ..ObjectMeta::default() },
                    data: Some(BTreeMap::from([(key.to_string(), value)])),
                    ..ConfigMap::default()
                };
                match self.api.create(&PostParams::default(), &cm).await {
                    Ok(cm) => {
                        self.publish(Arc::new(GateState::decode(cm.data.as_ref())));
                        Ok(())
                    }
                    // Another replica created it a moment ago: patch it.
                    Err(kube::Error::Api(s)) if s.code == 409 => self
                        .api
                        .patch(STATE_CONFIGMAP, &PatchParams::default(), &Patch::Merge(&patch))
                        .await
                        .map(|cm| self.publish(Arc::new(GateState::decode(cm.data.as_ref()))))
                        .map_err(err("write")),
                    Err(e) => Err(err("create")(e)),
                }
            }
            Err(e) => Err(err("write")(e)),
        }
    }

    /// Follows the ConfigMap (list + watch, re-listing with backoff after
    /// an error) until the task is aborted.
    pub fn follow(&self) -> tokio::task::JoinHandle<()> {
        let me = self.clone();
        tokio::spawn(async move {
            let config = watcher::Config::default().fields(&format!("metadata.name={STATE_CONFIGMAP}"));
            let stream = watcher(me.api.clone(), config).default_backoff();
            let mut stream = std::pin::pin!(stream);
            while let Some(event) = stream.next().await {
                match event {
                    Ok(watcher::Event::Apply(cm) | watcher::Event::InitApply(cm)) => {
                        me.publish(Arc::new(GateState::decode(cm.data.as_ref())));
                    }
                    Ok(watcher::Event::Delete(_)) => me.publish(Arc::new(GateState::default())),
                    Ok(watcher::Event::Init | watcher::Event::InitDone) => {}
                    Err(e) => tracing::warn!(error = %e, "the watch of gitgate-promotion failed; retrying"),
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_state_reads_approvals_and_pauses_and_skips_what_does_not_parse() {
        let a = Approval {
            commit: "a".repeat(40),
            by: "alice".into(),
            at: "2026-12-05T10:00:00Z".into(),
            change: "sha256:00".into(),
            override_window: false,
        };
        let p = Pause {
            by: "bob".into(),
            reason: "incident".into(),
            since: "x".into(),
            until_micros: 100,
            commit: String::new(),
        };
        let data = BTreeMap::from([
            ("approval.web".to_string(), serde_json::to_string(&a).unwrap()),
            ("pause.web".to_string(), serde_json::to_string(&p).unwrap()),
            ("approval.bad".to_string(), "{not json".to_string()),
            ("unrelated".to_string(), "x".to_string()),
        ]);
        let s = GateState::decode(Some(&data));
        assert_eq!(s.approvals.get("web"), Some(&a));
        assert!(!s.approvals.contains_key("bad"));
        assert_eq!(s.active_pause("web", 99), Some(&p));
        assert_eq!(s.active_pause("web", 100), None, "a pause ends at its deadline");
        assert_eq!(s.next_pause_end(50), Some(100));
        assert_eq!(s.next_pause_end(100), None);
    }
}
