//! Name references: after names changed (prefix, suffix, hash), every
//! reference to an earlier name points at the final one.

use std::collections::HashMap;

use serde_json::Value;

use super::res::Res;
use crate::render::object::is_cluster_scoped;

/// (kind, earlier name, namespace) → final name. Namespaced references
/// resolve within the referrer's namespace ("" is "default"), as in
/// kustomize; cluster-scoped targets (ClusterRole) match any referrer.
type Renames = HashMap<(String, String, String), String>;

/// After names changed (prefix, suffix, hash), points references at the
/// new names: a reference equal to any earlier name of a resource of the
/// referenced kind now carries its final name.
pub(super) fn fix_name_references(res: &mut [Res]) {
    fix_service_account_subjects(res);
    let renames = renames(res);
    if renames.is_empty() {
        return;
    }
    for r in res.iter_mut() {
        let kind = r.kind().to_string();
        let referrer_ns = default_ns(r.namespace());
        let rename = |target_kind: &str, v: &mut Value| {
            let ns = if is_cluster_scoped("rbac.authorization.k8s.io", target_kind) {
                String::new()
            } else {
                referrer_ns.clone()
            };
            if let Value::String(s) = v
                && let Some(new) = renames.get(&(target_kind.to_string(), s.clone(), ns))
            {
                *s = new.clone();
            }
        };
        fix_references(&kind, &mut r.obj, &rename);
    }
}

/// A namespace as references resolve it: "" is "default".
fn default_ns(ns: &str) -> String {
    if ns.is_empty() { "default".to_string() } else { ns.to_string() }
}

/// Every earlier name of every resource that was renamed.
fn renames(res: &[Res]) -> Renames {
    let mut renames = Renames::new();
    for r in res.iter() {
        let current = r.name().to_string();
        let ns = if is_cluster_scoped(r.group(), r.kind()) { String::new() } else { default_ns(r.namespace()) };
        for old in &r.names {
            if *old != current {
                renames.insert((r.kind().to_string(), old.clone(), ns.clone()), current.clone());
            }
        }
    }
    renames
}

/// The references an object of `kind` holds, by the kind they name: its
/// pod spec's, and the kind's own (a Service, a Secret, a role, a scale
/// target).
fn fix_references(kind: &str, obj: &mut Value, rename: &dyn Fn(&str, &mut Value)) {
    let pod_spec_path: Option<&str> = match kind {
        "Pod" => Some("/spec"),
        "Deployment" | "ReplicaSet" | "DaemonSet" | "StatefulSet" | "Job" | "ReplicationController" => {
            Some("/spec/template/spec")
        }
        "CronJob" => Some("/spec/jobTemplate/spec/template/spec"),
        _ => None,
    };
    if let Some(p) = pod_spec_path
        && let Some(spec) = obj.pointer_mut(p)
    {
        fix_pod_spec(spec, rename);
    }
    match kind {
        "StatefulSet" => {
            if let Some(v) = obj.pointer_mut("/spec/serviceName") {
                rename("Service", v);
            }
        }
        "Ingress" => fix_ingress(obj, rename),
        "RoleBinding" | "ClusterRoleBinding" => {
            let role_kind = obj.pointer("/roleRef/kind").and_then(Value::as_str).unwrap_or("").to_string();
            if let Some(v) = obj.pointer_mut("/roleRef/name") {
                rename(&role_kind, v);
            }
        }
        "HorizontalPodAutoscaler" => {
            let k = obj.pointer("/spec/scaleTargetRef/kind").and_then(Value::as_str).unwrap_or("").to_string();
            if let Some(v) = obj.pointer_mut("/spec/scaleTargetRef/name") {
                rename(&k, v);
            }
        }
        "ServiceAccount" => {
            for field in ["secrets", "imagePullSecrets"] {
                if let Some(Value::Array(items)) = obj.get_mut(field) {
                    for i in items {
                        if let Some(v) = i.get_mut("name") {
                            rename("Secret", v);
                        }
                    }
                }
            }
        }
        _ => {}
    }
}

/// An Ingress's backend Services and TLS Secrets.
fn fix_ingress(obj: &mut Value, rename: &dyn Fn(&str, &mut Value)) {
    if let Some(v) = obj.pointer_mut("/spec/defaultBackend/service/name") {
        rename("Service", v);
    }
    if let Some(Value::Array(rules)) = obj.pointer_mut("/spec/rules") {
        for rule in rules {
            if let Some(Value::Array(paths)) = rule.pointer_mut("/http/paths") {
                for p in paths {
                    if let Some(v) = p.pointer_mut("/backend/service/name") {
                        rename("Service", v);
                    }
                }
            }
        }
    }
    if let Some(Value::Array(tls)) = obj.pointer_mut("/spec/tls") {
        for t in tls {
            if let Some(v) = t.get_mut("secretName") {
                rename("Secret", v);
            }
        }
    }
}

/// (Cluster)RoleBinding subjects naming a ServiceAccount of this build
/// (with no namespace, `default`, or its own) take its final name and
/// namespace, as kustomize does.
fn fix_service_account_subjects(res: &mut [Res]) {
    let mut accounts: HashMap<String, (String, String)> = HashMap::new();
    for r in res.iter().filter(|r| r.group().is_empty() && r.kind() == "ServiceAccount") {
        for n in &r.names {
            accounts.insert(n.clone(), (r.name().to_string(), r.namespace().to_string()));
        }
    }
    if accounts.is_empty() {
        return;
    }
    for r in res.iter_mut() {
        if !(r.group() == "rbac.authorization.k8s.io" && matches!(r.kind(), "RoleBinding" | "ClusterRoleBinding")) {
            continue;
        }
        let Some(Value::Array(subjects)) = r.obj.get_mut("subjects") else { continue };
        for s in subjects {
            if s.get("kind").and_then(Value::as_str) != Some("ServiceAccount") {
                continue;
            }
            let Some((name, ns)) = s.get("name").and_then(Value::as_str).and_then(|n| accounts.get(n)).cloned() else {
                continue;
            };
            let sub_ns = s.get("namespace").and_then(Value::as_str).unwrap_or("");
            if !(sub_ns.is_empty() || sub_ns == "default" || sub_ns == ns) {
                continue;
            }
            if let Some(m) = s.as_object_mut() {
                m.insert("name".into(), Value::String(name));
                if !ns.is_empty() {
                    m.insert("namespace".into(), Value::String(ns));
                }
            }
        }
    }
}

fn fix_pod_spec(spec: &mut Value, rename: &dyn Fn(&str, &mut Value)) {
    for field in ["serviceAccountName", "serviceAccount"] {
        if let Some(v) = spec.get_mut(field) {
            rename("ServiceAccount", v);
        }
    }
    if let Some(Value::Array(items)) = spec.get_mut("imagePullSecrets") {
        for i in items {
            if let Some(v) = i.get_mut("name") {
                rename("Secret", v);
            }
        }
    }
    if let Some(Value::Array(vols)) = spec.get_mut("volumes") {
        for vol in vols {
            if let Some(v) = vol.pointer_mut("/configMap/name") {
                rename("ConfigMap", v);
            }
            if let Some(v) = vol.pointer_mut("/secret/secretName") {
                rename("Secret", v);
            }
            if let Some(v) = vol.pointer_mut("/persistentVolumeClaim/claimName") {
                rename("PersistentVolumeClaim", v);
            }
            if let Some(Value::Array(sources)) = vol.pointer_mut("/projected/sources") {
                for s in sources {
                    if let Some(v) = s.pointer_mut("/configMap/name") {
                        rename("ConfigMap", v);
                    }
                    if let Some(v) = s.pointer_mut("/secret/name") {
                        rename("Secret", v);
                    }
                }
            }
        }
    }
    for list in ["containers", "initContainers", "ephemeralContainers"] {
        if let Some(Value::Array(cs)) = spec.get_mut(list) {
            for c in cs {
                if let Some(Value::Array(env)) = c.get_mut("env") {
                    for e in env {
                        if let Some(v) = e.pointer_mut("/valueFrom/configMapKeyRef/name") {
                            rename("ConfigMap", v);
                        }
                        if let Some(v) = e.pointer_mut("/valueFrom/secretKeyRef/name") {
                            rename("Secret", v);
                        }
                    }
                }
                if let Some(Value::Array(env_from)) = c.get_mut("envFrom") {
                    for e in env_from {
                        if let Some(v) = e.pointer_mut("/configMapRef/name") {
                            rename("ConfigMap", v);
                        }
                        if let Some(v) = e.pointer_mut("/secretRef/name") {
                            rename("Secret", v);
                        }
                    }
                }
            }
        }
    }
}
