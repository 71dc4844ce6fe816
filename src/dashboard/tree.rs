//! The live tree an incident needs (issue 17, item 6): under each workload
//! an app declares, the objects its controllers made — ReplicaSets and
//! Pods of a Deployment, Pods of a StatefulSet, DaemonSet or Job, Jobs of
//! a CronJob — found by `ownerReferences`, each with its health, and the
//! last events of the workload and its children, as Argo CD's resource
//! tree shows them. "Is the new version rolling out?" is answered on the
//! page where the approval is given.
//!
//! Read when the app page is asked for (a few LISTs per namespace, with
//! the dashboard's own client); nothing is cached and nothing written.
//! Secrets are never read.

use std::collections::{BTreeMap, BTreeSet};

use kube::api::{Api, DynamicObject, ListParams};
use kube::discovery::ApiResource;
use serde_json::Value;

use crate::sync::status::ObjectStatus;

/// Events shown per workload.
const EVENTS: usize = 5;
/// Children shown per workload (the newest first).
const MAX_CHILDREN: usize = 50;

/// One object a controller made.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Child {
    pub kind: String,
    pub name: String,
    pub health: String,
    pub detail: String,
    /// Its own children (a ReplicaSet's Pods).
    pub children: Vec<Child>,
}

/// The children and events of one declared workload.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Branch {
    pub children: Vec<Child>,
    /// `reason: message (n×)`, newest first.
    pub events: Vec<String>,
}

/// Reads the live tree with the dashboard's client.
#[derive(Clone)]
pub struct LiveTree {
    client: kube::Client,
}

fn api_resource(group: &str, version: &str, kind: &str, plural: &str) -> ApiResource {
    ApiResource {
        group: group.into(),
        version: version.into(),
        api_version: if group.is_empty() { version.into() } else { format!("{group}/{version}") },
        kind: kind.into(),
        plural: plural.into(),
    }
}

/// The kinds whose children are shown, and the kinds of those children.
fn workload(group: &str, kind: &str) -> bool {
    matches!(
        (group, kind),
        ("apps", "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet") | ("batch", "Job" | "CronJob")
    )
}

impl LiveTree {
    pub fn new(client: kube::Client) -> LiveTree {
        LiveTree { client }
    }

    /// The branch of each declared workload of `objects`, by
    /// `namespace/Kind/name`. A list that fails leaves its part out (the
    /// page says the tree is partial); it never fails the page.
    pub async fn branches(&self, objects: &[ObjectStatus]) -> (BTreeMap<String, Branch>, bool) {
        let namespaces: BTreeSet<&str> = objects
            .iter()
            .filter(|o| workload(&o.group, &o.kind) && !o.namespace.is_empty())
            .map(|o| o.namespace.as_str())
            .collect();
        let mut out = BTreeMap::new();
        let mut partial = false;
        for ns in namespaces {
            let mut live: Vec<DynamicObject> = Vec::new();
            for r in [
                api_resource("apps", "v1", "Deployment", "deployments"),
                api_resource("apps", "v1", "StatefulSet", "statefulsets"),
                api_resource("apps", "v1", "DaemonSet", "daemonsets"),
                api_resource("apps", "v1", "ReplicaSet", "replicasets"),
                api_resource("batch", "v1", "Job", "jobs"),
                api_resource("batch", "v1", "CronJob", "cronjobs"),
                api_resource("", "v1", "Pod", "pods"),
            ] {
                let api: Api<DynamicObject> = Api::namespaced_with(self.client.clone(), ns, &r);
                match api.list(&ListParams::default().limit(2000)).await {
                    Ok(list) => live.extend(list.items.into_iter().map(|mut o| {
                        o.types =
                            Some(kube::api::TypeMeta { api_version: r.api_version.clone(), kind: r.kind.clone() });
                        o
                    })),
                    Err(e) => {
                        tracing::debug!(namespace = %ns, kind = %r.kind, error = %e, "the live tree could not list");
                        partial = true;
                    }
                }
            }
            let events: Api<DynamicObject> =
                Api::namespaced_with(self.client.clone(), ns, &api_resource("", "v1", "Event", "events"));
            let events = match events.list(&ListParams::default().limit(1000)).await {
                Ok(l) => l.items,
                Err(_) => {
                    partial = true;
                    Vec::new()
                }
            };
            let values: Vec<Value> = live.iter().filter_map(|o| serde_json::to_value(o).ok()).collect();
            let events: Vec<Value> = events.iter().filter_map(|o| serde_json::to_value(o).ok()).collect();
            for o in objects.iter().filter(|o| o.namespace == ns && workload(&o.group, &o.kind)) {
                let Some(parent) =
                    values.iter().find(|v| v["kind"] == o.kind.as_str() && v["metadata"]["name"] == o.name.as_str())
                else {
                    continue;
                };
                out.insert(format!("{ns}/{}/{}", o.kind, o.name), branch(parent, &values, &events));
            }
        }
        (out, partial)
    }
}

/// A workload's branch, from the namespace's live objects and events (pure).
pub fn branch(parent: &Value, live: &[Value], events: &[Value]) -> Branch {
    let mut uids = Vec::new();
    let children = children_of(parent, live, 0, &mut uids);
    uids.push(parent["metadata"]["uid"].as_str().unwrap_or_default().to_string());
    let mut evs: Vec<&Value> = events
        .iter()
        .filter(|e| e["involvedObject"]["uid"].as_str().is_some_and(|u| uids.iter().any(|x| x == u)))
        .collect();
    evs.sort_by_key(|e| std::cmp::Reverse(event_time(e)));
    let events = evs
        .into_iter()
        .take(EVENTS)
        .map(|e| {
            let count = e["count"].as_u64().unwrap_or(1);
            let who = format!(
                "{}/{}",
                e["involvedObject"]["kind"].as_str().unwrap_or_default(),
                e["involvedObject"]["name"].as_str().unwrap_or_default()
            );
            let text = format!(
                "{} {who}: {}",
                e["reason"].as_str().unwrap_or_default(),
                e["message"].as_str().unwrap_or_default().chars().take(300).collect::<String>()
            );
            if count > 1 { format!("{text} ({count}×)") } else { text }
        })
        .collect();
    Branch { children, events }
}

fn event_time(e: &Value) -> String {
    ["lastTimestamp", "eventTime", "firstTimestamp"]
        .iter()
        .find_map(|k| e[*k].as_str().map(str::to_string))
        .or_else(|| e["metadata"]["creationTimestamp"].as_str().map(str::to_string))
        .unwrap_or_default()
}

fn children_of(parent: &Value, live: &[Value], depth: usize, uids: &mut Vec<String>) -> Vec<Child> {
    let Some(uid) = parent["metadata"]["uid"].as_str().filter(|u| !u.is_empty()) else { return Vec::new() };
    if depth > 2 {
        return Vec::new();
    }
    let mut kids: Vec<&Value> = live
        .iter()
        .filter(|v| {
            v["metadata"]["ownerReferences"]
                .as_array()
                .is_some_and(|refs| refs.iter().any(|r| r["uid"].as_str() == Some(uid)))
        })
        .collect();
    kids.sort_by_key(|v| {
        std::cmp::Reverse(v["metadata"]["creationTimestamp"].as_str().unwrap_or_default().to_string())
    });
    kids.truncate(MAX_CHILDREN);
    kids.into_iter()
        .map(|v| {
            uids.push(v["metadata"]["uid"].as_str().unwrap_or_default().to_string());
            let (health, detail) = health(v);
            Child {
                kind: v["kind"].as_str().unwrap_or_default().to_string(),
                name: v["metadata"]["name"].as_str().unwrap_or_default().to_string(),
                health,
                detail,
                children: children_of(v, live, depth + 1, uids),
            }
        })
        .collect()
}

/// A child's health, Argo CD's words, and a short detail.
fn health(v: &Value) -> (String, String) {
    let s = &v["status"];
    let n = |p: &str| s.pointer(p).and_then(Value::as_i64).unwrap_or(0);
    match v["kind"].as_str().unwrap_or_default() {
        "Pod" => {
            let phase = s["phase"].as_str().unwrap_or("Pending");
            let statuses = s["containerStatuses"].as_array().cloned().unwrap_or_default();
            let ready = statuses.iter().filter(|c| c["ready"] == true).count();
            let waiting: Vec<String> =
                statuses.iter().filter_map(|c| c["state"]["waiting"]["reason"].as_str().map(str::to_string)).collect();
            let health = match phase {
                "Succeeded" => "Healthy",
                "Failed" => "Degraded",
                "Running" if ready == statuses.len() && !statuses.is_empty() => "Healthy",
                _ if waiting.iter().any(|w| w.contains("BackOff") || w.contains("Err")) => "Degraded",
                _ => "Progressing",
            };
            let mut detail = format!("{phase}, {ready}/{} ready", statuses.len());
            if !waiting.is_empty() {
                detail.push_str(&format!(" ({})", waiting.join(", ")));
            }
            (health.into(), detail)
        }
        "ReplicaSet" => {
            let (want, ready) = (v.pointer("/spec/replicas").and_then(Value::as_i64).unwrap_or(0), n("/readyReplicas"));
            let health = if ready >= want { "Healthy" } else { "Progressing" };
            let image = v
                .pointer("/spec/template/spec/containers/0/image")
                .and_then(Value::as_str)
                .map(|i| format!(", {i}"))
                .unwrap_or_default();
            (health.into(), format!("{ready}/{want} ready{image}"))
        }
        "Job" => {
            let (ok, failed) = (n("/succeeded"), n("/failed"));
            let health = if ok > 0 {
                "Healthy"
            } else if failed > 0 {
                "Degraded"
            } else {
                "Progressing"
            };
            (health.into(), format!("{ok} succeeded, {failed} failed"))
        }
        other => ("Unknown".into(), other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_deployments_replicasets_pods_and_events_are_found_by_owner() {
        let dep = json!({"kind": "Deployment", "metadata": {"name": "web", "uid": "d1"}});
        let rs_new = json!({"kind": "ReplicaSet", "metadata": {"name": "web-2", "uid": "r2", "creationTimestamp": "2026-12-05T10:00:00Z", "ownerReferences": [{"uid": "d1"}]},
            "spec": {"replicas": 2, "template": {"spec": {"containers": [{"image": "web:2"}]}}}, "status": {"readyReplicas": 1}});
        let rs_old = json!({"kind": "ReplicaSet", "metadata": {"name": "web-1", "uid": "r1", "creationTimestamp": "2026-12-04T10:00:00Z", "ownerReferences": [{"uid": "d1"}]},
            "spec": {"replicas": 0}, "status": {}});
        let pod = json!({"kind": "Pod", "metadata": {"name": "web-2-abc", "uid": "p1", "ownerReferences": [{"uid": "r2"}]},
            "status": {"phase": "Pending", "containerStatuses": [{"ready": false, "state": {"waiting": {"reason": "ImagePullBackOff"}}}]}});
        let stranger =
            json!({"kind": "Pod", "metadata": {"name": "other", "uid": "p9", "ownerReferences": [{"uid": "zz"}]}});
        let events = vec![
            json!({"reason": "ScalingReplicaSet", "message": "Scaled up replica set web-2 to 2", "involvedObject": {"uid": "d1", "kind": "Deployment", "name": "web"}, "lastTimestamp": "2026-12-05T10:00:01Z"}),
            json!({"reason": "Failed", "message": "Back-off pulling image", "count": 4, "involvedObject": {"uid": "p1", "kind": "Pod", "name": "web-2-abc"}, "lastTimestamp": "2026-12-05T10:00:05Z"}),
            json!({"reason": "Other", "message": "not ours", "involvedObject": {"uid": "p9"}}),
        ];
        let b = branch(&dep, &[rs_old, rs_new, pod, stranger], &events);
        assert_eq!(b.children.len(), 2);
        assert_eq!(b.children[0].name, "web-2", "the newest ReplicaSet first");
        assert_eq!((b.children[0].health.as_str(), b.children[0].detail.as_str()), ("Progressing", "1/2 ready, web:2"));
        assert_eq!(b.children[0].children.len(), 1);
        let p = &b.children[0].children[0];
        assert_eq!((p.health.as_str(), p.detail.as_str()), ("Degraded", "Pending, 0/1 ready (ImagePullBackOff)"));
        assert_eq!(b.events.len(), 2, "{:?}", b.events);
        assert_eq!(b.events[0], "Failed Pod/web-2-abc: Back-off pulling image (4×)", "newest first");
        assert!(b.events[1].starts_with("ScalingReplicaSet Deployment/web"));
    }
}
