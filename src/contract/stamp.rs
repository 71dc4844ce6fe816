//! Stamping Git's manifests, and reading the stamps back.

use serde_json::{Map, Value};

use super::{APP_LABEL, BREAK_GLASS_ANNOTATION, COMMIT_ANNOTATION, DIGEST_ANNOTATION, SOURCE_ANNOTATION};

/// An annotation of `object`, when it is a string.
pub fn annotation<'v>(object: &'v Value, key: &str) -> Option<&'v str> {
    object.pointer("/metadata/annotations").and_then(|a| a.get(key)).and_then(Value::as_str)
}

/// A label of `object`, when it is a string.
pub fn label<'v>(object: &'v Value, key: &str) -> Option<&'v str> {
    object.pointer("/metadata/labels").and_then(|l| l.get(key)).and_then(Value::as_str)
}

/// The stamps an object carries.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stamps<'v> {
    pub commit: Option<&'v str>,
    pub source: Option<&'v str>,
    pub digest: Option<&'v str>,
    pub app: Option<&'v str>,
}

impl<'v> Stamps<'v> {
    /// The stamps of `object`.
    pub fn of(object: &'v Value) -> Stamps<'v> {
        Stamps {
            commit: annotation(object, COMMIT_ANNOTATION),
            source: annotation(object, SOURCE_ANNOTATION),
            digest: annotation(object, DIGEST_ANNOTATION),
            app: label(object, APP_LABEL),
        }
    }
}

/// What [`stamp`] writes: Git's commit, source and digest, and the app.
#[derive(Clone, Copy, Debug)]
pub struct Stamp<'a> {
    /// The namespace of a namespaced object (empty for a cluster-scoped one).
    pub namespace: &'a str,
    pub commit: &'a str,
    /// `<app>:<path>`.
    pub source: &'a str,
    pub digest: &'a str,
}

/// Writes the stamps (and the namespace) into a manifest: what the sync
/// loop applies. Fails only when `metadata` is not a map.
pub fn stamp(object: &mut Value, s: &Stamp<'_>) -> Result<(), &'static str> {
    let app = s.source.split(':').next().unwrap_or_default();
    let meta = object.as_object_mut().and_then(|o| {
        o.entry("metadata").or_insert_with(|| Value::Object(Map::new()));
        o.get_mut("metadata").and_then(Value::as_object_mut)
    });
    let Some(meta) = meta else { return Err("metadata is not a map") };
    if !s.namespace.is_empty() {
        meta.insert("namespace".into(), Value::String(s.namespace.to_string()));
    }
    for (field, k, v) in [
        ("annotations", COMMIT_ANNOTATION, s.commit),
        ("annotations", SOURCE_ANNOTATION, s.source),
        ("annotations", DIGEST_ANNOTATION, s.digest),
        ("labels", APP_LABEL, app),
    ] {
        let map = meta.entry(field).or_insert_with(|| Value::Object(Map::new()));
        if !map.is_object() {
            *map = Value::Object(Map::new());
        }
        if let Some(map) = map.as_object_mut() {
            map.insert(k.into(), Value::String(v.into()));
        }
    }
    Ok(())
}

/// `gitgate.dev/break-glass: "<reason>"` of an object: trimmed, at most
/// 256 characters; `None` when absent or empty. The gate reads it from a
/// request, the loop from the live object.
pub fn break_glass_reason(object: &Value) -> Option<String> {
    let reason = annotation(object, BREAK_GLASS_ANNOTATION)?.trim();
    (!reason.is_empty()).then(|| reason.chars().take(256).collect())
}
