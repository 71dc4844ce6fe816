//! What every step of a build shares: a resource being built, and the
//! kustomize error naming the file at fault.

use serde_json::Value;

use crate::render::RenderError;
use crate::render::object::group_of;
use crate::source::RepoPath;

/// A resource being built, with every name it has had (first: as declared).
pub(super) struct Res {
    pub(super) obj: Value,
    pub(super) source: RepoPath,
    pub(super) names: Vec<String>,
    /// Generated and still to get the hash suffix.
    pub(super) needs_hash: bool,
}

impl Res {
    pub(super) fn kind(&self) -> &str {
        self.obj.get("kind").and_then(Value::as_str).unwrap_or("")
    }
    pub(super) fn api_version(&self) -> &str {
        self.obj.get("apiVersion").and_then(Value::as_str).unwrap_or("")
    }
    pub(super) fn group(&self) -> &str {
        group_of(self.api_version())
    }
    pub(super) fn name(&self) -> &str {
        self.obj.pointer("/metadata/name").and_then(Value::as_str).unwrap_or("")
    }
    pub(super) fn namespace(&self) -> &str {
        self.obj.pointer("/metadata/namespace").and_then(Value::as_str).unwrap_or("")
    }
    pub(super) fn set_name(&mut self, name: String) {
        if let Some(m) = self.obj.get_mut("metadata").and_then(Value::as_object_mut) {
            m.insert("name".into(), Value::String(name.clone()));
        }
        self.names.push(name);
    }
}

pub(super) fn kerr(file: &RepoPath, reason: impl Into<String>) -> RenderError {
    RenderError::Kustomize { file: file.to_string(), reason: reason.into() }
}
