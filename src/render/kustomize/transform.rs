//! Transformers on one object: labels (with selectors and templates),
//! annotations and image rewrites.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use super::load::{ImageSpec, ReplicaSpec};
use super::res::Res;
use crate::render::object::{group_of, is_cluster_scoped};

/// `namespace`: every namespaced object moves there; Namespace objects
/// are renamed to it, as kustomize does.
pub(super) fn set_namespace(res: &mut [Res], ns: &str) {
    for r in res.iter_mut() {
        if r.group().is_empty() && r.kind() == "Namespace" && r.name() != ns {
            r.set_name(ns.to_string());
        }
        if !is_cluster_scoped(r.group(), r.kind())
            && let Some(m) = r.obj.get_mut("metadata").and_then(Value::as_object_mut)
        {
            m.insert("namespace".into(), Value::String(ns.to_string()));
        }
    }
}

/// `namePrefix`/`nameSuffix`, on everything but Namespaces, CRDs and
/// APIServices.
pub(super) fn add_name_affixes(res: &mut [Res], prefix: &str, suffix: &str) {
    for r in res.iter_mut() {
        let skip = matches!(
            (r.group(), r.kind()),
            ("", "Namespace")
                | ("apiextensions.k8s.io", "CustomResourceDefinition")
                | ("apiregistration.k8s.io", "APIService")
        );
        if !skip {
            let n = format!("{prefix}{}{suffix}", r.name());
            r.set_name(n);
        }
    }
}

/// `replicas`: the count of each named workload (by any name it has had).
pub(super) fn set_replicas(res: &mut [Res], replicas: &[ReplicaSpec]) {
    for rep in replicas {
        for r in res.iter_mut() {
            if r.names.contains(&rep.name)
                && matches!(r.kind(), "Deployment" | "ReplicaSet" | "StatefulSet" | "ReplicationController")
                && let Some(spec) = r.obj.get_mut("spec").and_then(Value::as_object_mut)
            {
                spec.insert("replicas".into(), Value::from(rep.count));
            }
        }
    }
}

const TEMPLATE_KINDS: [&str; 6] =
    ["Deployment", "ReplicaSet", "DaemonSet", "StatefulSet", "Job", "ReplicationController"];

pub(super) fn ensure_map<'a>(v: &'a mut Value, path: &[&str], create: bool) -> Option<&'a mut Map<String, Value>> {
    let mut cur = v;
    for p in path {
        let m = cur.as_object_mut()?;
        if !m.contains_key(*p) {
            if !create {
                return None;
            }
            m.insert((*p).to_string(), Value::Object(Map::new()));
        }
        cur = m.get_mut(*p)?;
        if cur.is_null() && create {
            *cur = Value::Object(Map::new());
        }
    }
    cur.as_object_mut()
}

pub(super) fn put_all(m: &mut Map<String, Value>, pairs: &BTreeMap<String, String>) {
    for (k, v) in pairs {
        m.insert(k.clone(), Value::String(v.clone()));
    }
}

pub(super) fn add_labels(obj: &mut Value, pairs: &BTreeMap<String, String>, selectors: bool, templates: bool) {
    if pairs.is_empty() {
        return;
    }
    let kind = obj.get("kind").and_then(Value::as_str).unwrap_or("").to_string();
    let group = group_of(obj.get("apiVersion").and_then(Value::as_str).unwrap_or("")).to_string();
    if let Some(m) = ensure_map(obj, &["metadata", "labels"], true) {
        put_all(m, pairs);
    }
    let core_or_apps = group.is_empty() || group == "apps" || group == "batch" || group == "extensions";
    if !core_or_apps {
        return;
    }
    if templates {
        if TEMPLATE_KINDS.contains(&kind.as_str())
            && let Some(m) = ensure_map(obj, &["spec", "template", "metadata", "labels"], true)
        {
            put_all(m, pairs);
        }
        if kind == "CronJob" {
            for path in [
                &["spec", "jobTemplate", "metadata", "labels"][..],
                &["spec", "jobTemplate", "spec", "template", "metadata", "labels"],
            ] {
                if let Some(m) = ensure_map(obj, path, true) {
                    put_all(m, pairs);
                }
            }
        }
        if kind == "StatefulSet"
            && let Some(Value::Array(vcts)) = obj.pointer_mut("/spec/volumeClaimTemplates")
        {
            for t in vcts {
                if let Some(m) = ensure_map(t, &["metadata", "labels"], true) {
                    put_all(m, pairs);
                }
            }
        }
    }
    if selectors {
        match kind.as_str() {
            "Service" | "ReplicationController" => {
                if let Some(m) = ensure_map(obj, &["spec", "selector"], true) {
                    put_all(m, pairs);
                }
            }
            "Deployment" | "ReplicaSet" | "DaemonSet" | "StatefulSet" => {
                if let Some(m) = ensure_map(obj, &["spec", "selector", "matchLabels"], true) {
                    put_all(m, pairs);
                }
            }
            "Job" => {
                if let Some(m) = ensure_map(obj, &["spec", "selector", "matchLabels"], false) {
                    put_all(m, pairs);
                }
            }
            "CronJob" => {
                if let Some(m) = ensure_map(obj, &["spec", "jobTemplate", "spec", "selector", "matchLabels"], false) {
                    put_all(m, pairs);
                }
            }
            _ => {}
        }
    }
}

pub(super) fn add_annotations(obj: &mut Value, pairs: &BTreeMap<String, String>) {
    let kind = obj.get("kind").and_then(Value::as_str).unwrap_or("").to_string();
    if let Some(m) = ensure_map(obj, &["metadata", "annotations"], true) {
        put_all(m, pairs);
    }
    if TEMPLATE_KINDS.contains(&kind.as_str())
        && let Some(m) = ensure_map(obj, &["spec", "template", "metadata", "annotations"], true)
    {
        put_all(m, pairs);
    }
    if kind == "CronJob" {
        for path in [
            &["spec", "jobTemplate", "metadata", "annotations"][..],
            &["spec", "jobTemplate", "spec", "template", "metadata", "annotations"],
        ] {
            if let Some(m) = ensure_map(obj, path, true) {
                put_all(m, pairs);
            }
        }
    }
}

// ---------------------------------------------------------------- images

pub(super) fn set_images(v: &mut Value, images: &[ImageSpec]) {
    match v {
        Value::Object(m) => {
            for (k, child) in m.iter_mut() {
                if (k == "containers" || k == "initContainers")
                    && let Value::Array(items) = child
                {
                    for c in items.iter_mut() {
                        if let Some(Value::String(image)) = c.get_mut("image")
                            && let Some(new) = rewrite_image(image, images)
                        {
                            *image = new;
                        }
                    }
                }
                set_images(child, images);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|i| set_images(i, images)),
        _ => {}
    }
}

/// Splits `repo/name:tag@digest` into (name, tag, digest).
fn split_image(image: &str) -> (&str, Option<&str>, Option<&str>) {
    let (rest, digest) = match image.split_once('@') {
        Some((r, d)) => (r, Some(d)),
        None => (image, None),
    };
    let slash = rest.rfind('/').map(|i| i + 1).unwrap_or(0);
    match rest[slash..].rfind(':') {
        Some(i) => (&rest[..slash + i], Some(&rest[slash + i + 1..]), digest),
        None => (rest, None, digest),
    }
}

fn rewrite_image(image: &str, images: &[ImageSpec]) -> Option<String> {
    let (name, tag, digest) = split_image(image);
    let spec = images.iter().find(|s| s.name == name)?;
    let new_name = spec.new_name.as_deref().unwrap_or(name);
    Some(match (&spec.digest, &spec.new_tag) {
        (Some(d), _) => format!("{new_name}@{d}"),
        (None, Some(t)) => format!("{new_name}:{t}"),
        (None, None) => match (tag, digest) {
            (Some(t), Some(d)) => format!("{new_name}:{t}@{d}"),
            (Some(t), None) => format!("{new_name}:{t}"),
            (None, Some(d)) => format!("{new_name}@{d}"),
            (None, None) => new_name.to_string(),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_parsing() {
        assert_eq!(split_image("nginx"), ("nginx", None, None));
        assert_eq!(split_image("nginx:1.2"), ("nginx", Some("1.2"), None));
        assert_eq!(split_image("reg:5000/team/app:v1@sha256:ab"), ("reg:5000/team/app", Some("v1"), Some("sha256:ab")));
        assert_eq!(split_image("reg:5000/team/app"), ("reg:5000/team/app", None, None));
    }
}
