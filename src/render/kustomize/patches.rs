//! Patches: strategic merge (by the built-in API's merge keys) and JSON
//! 6902, on the resources a target (or the patch's own kind and name)
//! selects.

use serde_json::Value;

use super::load::Target;
use super::res::{Res, kerr};
use crate::render::RenderError;
use crate::source::RepoPath;

pub(super) fn apply_patch(
    doc: &Value,
    target: Option<&Target>,
    src: &RepoPath,
    res: &mut [Res],
) -> Result<(), RenderError> {
    if let Value::Array(_) = doc {
        let ops: json_patch::Patch =
            serde_json::from_value(doc.clone()).map_err(|e| kerr(src, format!("invalid JSON 6902 patch: {e}")))?;
        let Some(t) = target else {
            return Err(kerr(src, "a JSON 6902 patch needs a target"));
        };
        for r in res.iter_mut().filter(|r| matches_target(r, t)) {
            json_patch::patch(&mut r.obj, &ops)
                .map_err(|e| kerr(src, format!("JSON 6902 patch on {}: {e}", r.name())))?;
            let now = r.name().to_string();
            if r.names.last() != Some(&now) {
                r.names.push(now);
            }
        }
        return Ok(());
    }
    if !doc.is_object() {
        return Err(kerr(src, "a patch must be a mapping (strategic merge) or a list (JSON 6902)"));
    }
    match target {
        Some(t) => {
            for r in res.iter_mut().filter(|r| matches_target(r, t)) {
                let mut p = doc.clone();
                // With an explicit target, the patch's own name is not used.
                if let Some(m) = p.get_mut("metadata").and_then(Value::as_object_mut) {
                    m.remove("name");
                    m.remove("namespace");
                }
                smp_resource(r, &p);
            }
        }
        None => {
            let kind = doc.get("kind").and_then(Value::as_str).unwrap_or("");
            let name = doc.pointer("/metadata/name").and_then(Value::as_str).unwrap_or("");
            let ns = doc.pointer("/metadata/namespace").and_then(Value::as_str);
            let mut matched = 0usize;
            for r in res.iter_mut() {
                if r.kind() == kind && r.names.iter().any(|n| n == name) && ns.is_none_or(|ns| ns == r.namespace()) {
                    smp_resource(r, doc);
                    matched += 1;
                }
            }
            if matched == 0 {
                return Err(kerr(src, format!("strategic merge patch for {kind} {name:?} matches no resource")));
            }
        }
    }
    Ok(())
}

fn smp_resource(r: &mut Res, patch: &Value) {
    let builtin = matches!(
        r.group(),
        "" | "apps"
            | "batch"
            | "extensions"
            | "policy"
            | "autoscaling"
            | "networking.k8s.io"
            | "rbac.authorization.k8s.io"
    );
    let name_before = r.name().to_string();
    strategic_merge(&mut r.obj, patch, builtin);
    let now = r.name().to_string();
    if now != name_before {
        r.names.push(now);
    }
}

fn matches_target(r: &Res, t: &Target) -> bool {
    let re = |pat: &Option<String>, v: &str| match pat {
        None => true,
        Some(p) => regex::Regex::new(&format!("^(?:{p})$")).map(|re| re.is_match(v)).unwrap_or(p == v),
    };
    let version = r.api_version().rsplit('/').next().unwrap_or("");
    re(&t.group, r.group())
        && re(&t.version, version)
        && re(&t.kind, r.kind())
        && (t.name.is_none() || r.names.iter().any(|n| re(&t.name, n)))
        && re(&t.namespace, r.namespace())
        && selector_matches(r.obj.pointer("/metadata/labels"), t.label_selector.as_deref())
        && selector_matches(r.obj.pointer("/metadata/annotations"), t.annotation_selector.as_deref())
}

/// Equality-based selectors: `k=v,k2!=v2,k3`.
fn selector_matches(map: Option<&Value>, selector: Option<&str>) -> bool {
    let Some(sel) = selector else { return true };
    let get = |k: &str| map.and_then(|m| m.get(k)).and_then(Value::as_str);
    sel.split(',').map(str::trim).filter(|s| !s.is_empty()).all(|term| {
        if let Some((k, v)) = term.split_once("!=") {
            get(k.trim()) != Some(v.trim())
        } else if let Some((k, v)) = term.split_once("==").or_else(|| term.split_once('=')) {
            get(k.trim()) == Some(v.trim())
        } else if let Some(k) = term.strip_prefix('!') {
            get(k.trim()).is_none()
        } else {
            get(term).is_some()
        }
    })
}

/// The merge key of a list field of the built-in API, by field name.
fn merge_key(field: &str, items: &[Value]) -> Option<&'static str> {
    match field {
        "containers" | "initContainers" | "ephemeralContainers" | "env" | "volumes" | "imagePullSecrets" => {
            Some("name")
        }
        "volumeMounts" => Some("mountPath"),
        "volumeDevices" => Some("devicePath"),
        "hostAliases" => Some("ip"),
        "ports" => {
            if items.iter().any(|i| i.get("containerPort").is_some()) {
                Some("containerPort")
            } else {
                Some("port")
            }
        }
        _ => None,
    }
}

/// Strategic merge: maps merge, `null` deletes, lists with a merge key
/// merge element-wise (`$patch: delete` removes one), other lists replace.
/// `builtin` is false for custom resources (lists always replace there).
fn strategic_merge(target: &mut Value, patch: &Value, builtin: bool) {
    let (Value::Object(t), Value::Object(p)) = (&mut *target, patch) else {
        *target = strip_directives(patch);
        return;
    };
    if p.get("$patch").and_then(Value::as_str) == Some("replace") {
        *target = strip_directives(patch);
        return;
    }
    for (k, pv) in p {
        if k.starts_with('$') {
            continue;
        }
        if pv.is_null() {
            t.remove(k);
            continue;
        }
        match (t.get_mut(k), pv) {
            (Some(tv @ Value::Object(_)), Value::Object(_)) => strategic_merge(tv, pv, builtin),
            (Some(Value::Array(tl)), Value::Array(pl)) if builtin => match merge_key(k, pl) {
                Some(key) => merge_list(tl, pl, key, builtin),
                None => *t.get_mut(k).unwrap_or(&mut Value::Null) = strip_directives(pv),
            },
            _ => {
                t.insert(k.clone(), strip_directives(pv));
            }
        }
    }
}

fn merge_list(target: &mut Vec<Value>, patch: &[Value], key: &str, builtin: bool) {
    // As kustomize orders a merged list: the patch's elements first, in
    // patch order (merged into the target's element of the same key, or
    // dropped for `$patch: delete`), then the target's elements the patch
    // does not mention, in their order.
    let mut rest: Vec<Option<Value>> = std::mem::take(target).into_iter().map(Some).collect();
    let mut out = Vec::with_capacity(rest.len() + patch.len());
    for item in patch {
        let id = item.get(key);
        let delete = item.get("$patch").and_then(Value::as_str) == Some("delete");
        let existing = id.and_then(|id| {
            rest.iter_mut().find(|t| t.as_ref().is_some_and(|t| t.get(key) == Some(id))).and_then(Option::take)
        });
        match (existing, delete) {
            (_, true) => {}
            (Some(mut t), false) => {
                strategic_merge(&mut t, item, builtin);
                out.push(t);
            }
            (None, false) => out.push(strip_directives(item)),
        }
    }
    out.extend(rest.into_iter().flatten());
    *target = out;
}

fn strip_directives(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(k, v)| !k.starts_with('$') && !v.is_null())
                .map(|(k, v)| (k.clone(), strip_directives(v)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(strip_directives).collect()),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strategic_merge_by_name_and_delete_directive() {
        let mut t = serde_json::json!({"spec":{"containers":[{"name":"a","image":"x"},{"name":"b","image":"y"}]}});
        let p = serde_json::json!({"spec":{"containers":[{"name":"a","image":"z"},{"name":"b","$patch":"delete"},{"name":"c","image":"w"}]}});
        strategic_merge(&mut t, &p, true);
        assert_eq!(t, serde_json::json!({"spec":{"containers":[{"name":"a","image":"z"},{"name":"c","image":"w"}]}}));
    }
}
