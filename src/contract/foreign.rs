//! Foreign fields: what another manager added to one of Git's objects.
//!
//! Git's fields are compared value by value ([`super::compare`]); this
//! finds the rest. gitgate applies Git's manifest with server-side apply
//! under one field manager, so the apiserver's `managedFields` say which
//! fields are Git's (gitgate's entries) and which another manager set. A
//! field owned by a manager other than gitgate and the cluster's own
//! components, and not by gitgate, is drift — a sidecar, `hostNetwork`, an
//! env var added while the webhook was down — reported with its manager
//! and removed by self-heal (a JSON patch), unless `gitgate.dev/ignore-fields`
//! covers it. Argo CD and Flux compare only the fields Git sets.
//!
//! Not compared: `metadata` (tools annotate and label objects) and
//! `status`; subresource updates (`status`, `scale`: the HPA-style
//! exemption); the cluster's components (`kube-controller-manager`,
//! `kube-scheduler`, `kubelet`) and `before-first-apply` (what an adopted
//! object held before gitgate's first apply). An object gitgate never
//! applied (no entry of its own) has nothing to compare against.

use serde_json::{Map, Value};

use super::FIELD_MANAGER;

/// Managers whose fields are never drift.
const SYSTEM_MANAGERS: &[&str] = &["kube-controller-manager", "kube-scheduler", "kubelet", "before-first-apply"];

/// Whether fields a manager set (outside a subresource) can be foreign.
pub fn is_foreign(manager: &str, subresource: &str) -> bool {
    manager != FIELD_MANAGER && subresource.is_empty() && !SYSTEM_MANAGERS.contains(&manager)
}

/// A field another manager owns on one of Git's objects.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Foreign {
    /// JSON pointer into the live object (the topmost node gitgate does
    /// not own: a whole container, not each of its fields).
    pub pointer: String,
    /// The manager that set it (`kubectl-edit`, `kubectl-patch`, …).
    pub manager: String,
}

/// Whether a manager other than gitgate and the cluster's components
/// wrote to `live` at all (outside subresources): without one there is no
/// foreign field, and Git's manifest need not be read.
pub fn any_foreign_writer(live: &Value) -> bool {
    let Some(entries) = live.pointer("/metadata/managedFields").and_then(Value::as_array) else { return false };
    entries.iter().any(|e| {
        let field = |k: &str| e.get(k).and_then(Value::as_str).unwrap_or_default();
        is_foreign(field("manager"), field("subresource"))
    })
}

/// Every foreign field of `live`, outside the `ignore` pointers and the
/// fields Git's manifest `git` sets (a Git field another manager changed
/// is a value drift, which the next apply takes back; it is not removed).
pub fn fields(live: &Value, git: Option<&Value>, ignore: &[String]) -> Vec<Foreign> {
    let Some(entries) = live.pointer("/metadata/managedFields").and_then(Value::as_array) else {
        return Vec::new();
    };
    let mut ours = Map::new();
    let mut mine = false;
    for e in entries {
        if e.get("manager").and_then(Value::as_str) == Some(FIELD_MANAGER)
            && let Some(f) = e.get("fieldsV1").and_then(Value::as_object)
        {
            merge(&mut ours, f);
            mine = true;
        }
    }
    if !mine {
        return Vec::new();
    }
    let mut out = Vec::new();
    for e in entries {
        let manager = e.get("manager").and_then(Value::as_str).unwrap_or_default();
        let subresource = e.get("subresource").and_then(Value::as_str).unwrap_or_default();
        if !is_foreign(manager, subresource) {
            continue;
        }
        let Some(theirs) = e.get("fieldsV1").and_then(Value::as_object) else { continue };
        let mut found = Vec::new();
        for (k, sub) in theirs {
            if k == "f:metadata" || k == "f:status" || k == "." {
                continue;
            }
            walk(k, sub, ours.get(k), live, git, String::new(), &mut found);
        }
        for pointer in found {
            let ignored = ignore.iter().any(|i| covers(i, &pointer) || covers(&pointer, i));
            if !ignored && !out.iter().any(|f: &Foreign| f.pointer == pointer) {
                out.push(Foreign { pointer, manager: manager.to_owned() });
            }
        }
    }
    out
}

/// `prefix` is `pointer` or one of its ancestors.
fn covers(prefix: &str, pointer: &str) -> bool {
    pointer == prefix || (pointer.starts_with(prefix) && pointer.as_bytes().get(prefix.len()) == Some(&b'/'))
}

/// Merges `from` into `into` (a union of field sets).
fn merge(into: &mut Map<String, Value>, from: &Map<String, Value>) {
    for (k, v) in from {
        match (into.get_mut(k), v.as_object()) {
            (Some(Value::Object(i)), Some(f)) => merge(i, f),
            (None, _) => {
                into.insert(k.clone(), v.clone());
            }
            _ => {}
        }
    }
}

/// Walks one node of a foreign field set alongside gitgate's (and Git's
/// manifest): a node neither gitgate owns nor Git sets is foreign as a
/// whole (its pointer is recorded); any other is descended into.
fn walk(
    key: &str,
    theirs: &Value,
    ours: Option<&Value>,
    parent: &Value,
    git: Option<&Value>,
    ptr: String,
    out: &mut Vec<String>,
) {
    let Some((child_ptr, child)) = resolve(key, parent, &ptr) else { return };
    let git_child = git.and_then(|g| resolve(key, g, "")).map(|(_, v)| v);
    if ours.is_none() && git_child.is_none() {
        out.push(child_ptr);
        return;
    }
    let Some(theirs) = theirs.as_object() else { return };
    let empty = Value::Object(Map::new());
    let ours = ours.unwrap_or(&empty);
    for (k, sub) in theirs {
        if k == "." {
            continue;
        }
        walk(k, sub, ours.get(k), child, git_child, child_ptr.clone(), out);
    }
}

/// The live child a `fieldsV1` key names, with its JSON pointer: `f:name`
/// a field, `k:{…}` the list element with those key fields, `v:…` the set
/// element with that value, `i:N` the N-th element. `None` when the live
/// object no longer has it.
fn resolve<'a>(key: &str, parent: &'a Value, ptr: &str) -> Option<(String, &'a Value)> {
    if let Some(name) = key.strip_prefix("f:") {
        let child = parent.as_object()?.get(name)?;
        return Some((format!("{ptr}/{}", name.replace('~', "~0").replace('/', "~1")), child));
    }
    let list = parent.as_array()?;
    let index = if let Some(k) = key.strip_prefix("k:") {
        let want: Map<String, Value> = serde_json::from_str(k).ok()?;
        list.iter().position(|item| want.iter().all(|(f, v)| item.get(f) == Some(v)))?
    } else if let Some(v) = key.strip_prefix("v:") {
        let want: Value = serde_json::from_str(v).ok()?;
        list.iter().position(|item| *item == want)?
    } else if let Some(i) = key.strip_prefix("i:") {
        i.parse().ok().filter(|i| *i < list.len())?
    } else {
        return None;
    };
    Some((format!("{ptr}/{index}"), &list[index]))
}

/// The JSON patch that removes `foreign` fields from `live`, each guarded
/// by a `test` of its current value (a field that changed in between is
/// left for the next round). List elements go from the highest index down.
pub fn removal(live: &Value, foreign: &[Foreign]) -> Value {
    let mut pointers: Vec<&str> = foreign.iter().map(|f| f.pointer.as_str()).collect();
    // Deeper and later elements first, so earlier removals do not shift them.
    pointers.sort_by(|a, b| sort_key(b).cmp(&sort_key(a)));
    let mut ops = Vec::new();
    for p in pointers {
        if let Some(v) = live.pointer(p) {
            ops.push(serde_json::json!({"op": "test", "path": p, "value": v}));
            ops.push(serde_json::json!({"op": "remove", "path": p}));
        }
    }
    Value::Array(ops)
}

/// Orders pointers so that a list's higher indices come first.
fn sort_key(p: &str) -> Vec<(u8, u64, &str)> {
    p.split('/').map(|s| s.parse::<u64>().map_or((0, 0, s), |n| (1, n, ""))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A Deployment gitgate applied (one container `app`), then edited by
    /// hand while the webhook was down: a sidecar, `hostNetwork`, an env
    /// var on Git's container; plus what the cluster's own components own.
    fn live() -> Value {
        json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {
                "name": "web",
                "annotations": {"deployment.kubernetes.io/revision": "2", "note": "by hand"},
                "managedFields": [
                    {"manager": "gitgate", "operation": "Apply", "fieldsV1": {
                        "f:metadata": {"f:annotations": {"f:gitgate.dev/commit": {}}},
                        "f:spec": {"f:replicas": {}, "f:template": {"f:spec": {"f:containers": {
                            "k:{\"name\":\"app\"}": {".": {}, "f:image": {}, "f:name": {}}
                        }}}}
                    }},
                    {"manager": "kube-controller-manager", "operation": "Update", "fieldsV1": {
                        "f:metadata": {"f:annotations": {"f:deployment.kubernetes.io/revision": {}}},
                        "f:spec": {"f:progressDeadlineSeconds": {}}
                    }},
                    {"manager": "kube-controller-manager", "operation": "Update", "subresource": "status",
                     "fieldsV1": {"f:status": {"f:replicas": {}}}},
                    {"manager": "kubectl-edit", "operation": "Update", "fieldsV1": {
                        "f:metadata": {"f:annotations": {"f:note": {}}},
                        "f:spec": {"f:template": {"f:spec": {
                            "f:hostNetwork": {},
                            "f:containers": {
                                "k:{\"name\":\"app\"}": {"f:env": {".": {}, "k:{\"name\":\"DEBUG\"}": {".": {}, "f:name": {}, "f:value": {}}}},
                                "k:{\"name\":\"sidecar\"}": {".": {}, "f:image": {}, "f:name": {}}
                            }
                        }}}
                    }},
                    {"manager": "kubectl", "operation": "Update", "subresource": "scale",
                     "fieldsV1": {"f:spec": {"f:replicas": {}}}}
                ]
            },
            "spec": {
                "replicas": 3,
                "progressDeadlineSeconds": 600,
                "template": {"spec": {
                    "hostNetwork": true,
                    "containers": [
                        {"name": "app", "image": "web:1", "env": [{"name": "DEBUG", "value": "1"}]},
                        {"name": "sidecar", "image": "evil:latest"}
                    ]
                }}
            }
        })
    }

    #[test]
    fn fields_another_manager_added_are_found_with_their_manager() {
        let found = fields(&live(), None, &[]);
        let pointers: Vec<&str> = found.iter().map(|f| f.pointer.as_str()).collect();
        assert_eq!(
            pointers,
            [
                "/spec/template/spec/containers/0/env",
                "/spec/template/spec/containers/1",
                "/spec/template/spec/hostNetwork",
            ]
        );
        assert!(found.iter().all(|f| f.manager == "kubectl-edit"));
    }

    #[test]
    fn ignored_fields_system_managers_and_objects_gitgate_never_applied_are_not_drift() {
        let ignore = vec!["/spec/template/spec/hostNetwork".to_string(), "/spec/template/spec/containers/1".into()];
        let found = fields(&live(), None, &ignore);
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].pointer, "/spec/template/spec/containers/0/env");
        let mut adopted = live();
        adopted["metadata"]["managedFields"].as_array_mut().unwrap().remove(0);
        assert!(fields(&adopted, None, &[]).is_empty());
        assert!(fields(&json!({"metadata": {}}), None, &[]).is_empty());
    }

    /// Regression: a Git field another manager changed (its value differs
    /// from Git's, so that manager now owns it) was taken for a foreign
    /// field and removed — and the revert's `test` failed after the apply
    /// had put Git's value back. It is a value drift, not a foreign field.
    #[test]
    fn a_git_field_another_manager_changed_is_not_foreign() {
        let mut live = live();
        // kubectl-edit changed Git's image: gitgate no longer owns it.
        let entries = live["metadata"]["managedFields"].as_array_mut().unwrap();
        entries[0]["fieldsV1"]["f:spec"]["f:template"]["f:spec"]["f:containers"]["k:{\"name\":\"app\"}"]
            .as_object_mut()
            .unwrap()
            .remove("f:image");
        entries[3]["fieldsV1"]["f:spec"]["f:template"]["f:spec"]["f:containers"]["k:{\"name\":\"app\"}"]["f:image"] =
            json!({});
        let git =
            json!({"spec": {"replicas": 3, "template": {"spec": {"containers": [{"name": "app", "image": "web:1"}]}}}});
        let with_git: Vec<String> = fields(&live, Some(&git), &[]).into_iter().map(|f| f.pointer).collect();
        assert!(!with_git.contains(&"/spec/template/spec/containers/0/image".to_string()), "{with_git:?}");
        assert!(with_git.contains(&"/spec/template/spec/containers/1".to_string()), "the sidecar still is");
        let without: Vec<String> = fields(&live, None, &[]).into_iter().map(|f| f.pointer).collect();
        assert!(without.contains(&"/spec/template/spec/containers/0/image".to_string()), "{without:?}");
    }

    #[test]
    fn the_removal_patch_takes_the_foreign_fields_and_nothing_of_gits() {
        let live = live();
        let patch = removal(&live, &fields(&live, None, &[]));
        let mut healed = live.clone();
        json_patch::patch(&mut healed, &serde_json::from_value::<json_patch::Patch>(patch).unwrap()).unwrap();
        assert_eq!(
            healed["spec"]["template"]["spec"],
            json!({"containers": [{"name": "app", "image": "web:1"}]}),
            "Git's container stays, the sidecar, env and hostNetwork go"
        );
        assert_eq!(healed["spec"]["progressDeadlineSeconds"], 600, "the controller's default stays");
        assert!(fields(&healed, None, &[]).is_empty());
    }
}
