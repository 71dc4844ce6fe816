//! Stamping Git's manifests, and reading the stamps back.

use serde_json::{Map, Value};

use super::{APP_LABEL, BREAK_GLASS_ANNOTATION, COMMIT_ANNOTATION, DIGEST_ANNOTATION, Expected, SOURCE_ANNOTATION};

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

/// Writes the stamps of `git` (commit, source, digest, app label) and the
/// namespace (empty for a cluster-scoped object) into a manifest: what the
/// sync loop applies. Fails only when `metadata` is not a map.
pub fn stamp(object: &mut Value, namespace: &str, git: &Expected<'_>) -> Result<(), &'static str> {
    let source = format!("{}:{}", git.app, git.file);
    let meta = object.as_object_mut().and_then(|o| {
        o.entry("metadata").or_insert_with(|| Value::Object(Map::new()));
        o.get_mut("metadata").and_then(Value::as_object_mut)
    });
    let Some(meta) = meta else { return Err("metadata is not a map") };
    if !namespace.is_empty() {
        meta.insert("namespace".into(), Value::String(namespace.to_string()));
    }
    for (field, k, v) in [
        ("annotations", COMMIT_ANNOTATION, git.commit),
        ("annotations", SOURCE_ANNOTATION, source.as_str()),
        ("annotations", DIGEST_ANNOTATION, git.digest),
        ("labels", APP_LABEL, git.app),
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
