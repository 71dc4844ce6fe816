//! The AdmissionReview wire format (`admission.k8s.io/v1`, answered in kind
//! for `v1beta1`).
//!
//! These are our own types rather than kube-core's for three reasons: the
//! response must echo the request's `apiVersion`; `patch` must be a base64
//! string (kube-core emits an array of bytes, kube-rs/kube#1781); and a
//! request may carry Secret data, so it has no derived `Debug` that could
//! print it.

use std::collections::BTreeMap;
use std::fmt;

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The two AdmissionReview versions a kube-apiserver may send.
pub const API_VERSION_V1: &str = "admission.k8s.io/v1";
/// Deprecated, still answered in kind.
pub const API_VERSION_V1BETA1: &str = "admission.k8s.io/v1beta1";
const KIND: &str = "AdmissionReview";

/// Why a body is not an AdmissionReview. Messages never quote the body.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("failed to parse request body: malformed JSON at line {line} column {column}")]
    Syntax { line: usize, column: usize },
    #[error("failed to parse request body: JSON ends early (truncated) at line {line} column {column}")]
    Truncated { line: usize, column: usize },
    #[error(
        "failed to decode AdmissionReview: a field has the wrong type or is missing at line {line} column {column}"
    )]
    Schema { line: usize, column: usize },
    #[error("failed to decode AdmissionReview: apiVersion must be {API_VERSION_V1} or {API_VERSION_V1BETA1}")]
    ApiVersion,
    #[error("failed to decode AdmissionReview: kind must be AdmissionReview")]
    Kind,
    #[error("failed to decode AdmissionReview: it has no request")]
    MissingRequest,
    #[error("failed to decode AdmissionReview: request.uid is missing or empty")]
    MissingUid,
}

impl DecodeError {
    fn from_json(e: &serde_json::Error) -> Self {
        let (line, column) = (e.line(), e.column());
        match e.classify() {
            serde_json::error::Category::Eof => DecodeError::Truncated { line, column },
            serde_json::error::Category::Data => DecodeError::Schema { line, column },
            // Io cannot happen on a slice; Syntax includes "recursion limit exceeded".
            _ => DecodeError::Syntax { line, column },
        }
    }
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq, Hash)]
pub struct GroupVersionKind {
    #[serde(default)]
    pub group: String,
    #[serde(default)]
    pub version: String,
    #[serde(default)]
    pub kind: String,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq, Hash)]
pub struct GroupVersionResource {
    #[serde(default)]
    pub group: String,
    #[serde(default)]
    pub version: String,
    #[serde(default)]
    pub resource: String,
}

#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "UPPERCASE")]
pub enum Operation {
    Create,
    Update,
    Delete,
    Connect,
}

impl Operation {
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Create => "CREATE",
            Operation::Update => "UPDATE",
            Operation::Delete => "DELETE",
            Operation::Connect => "CONNECT",
        }
    }
}

/// Who asked. Carries no secret material, so it may be logged.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
pub struct UserInfo {
    #[serde(default)]
    pub username: String,
    #[serde(default)]
    pub uid: String,
    #[serde(default)]
    pub groups: Vec<String>,
    #[serde(default)]
    pub extra: BTreeMap<String, Vec<String>>,
}

/// Who sent a review, as the transport proved it. `userInfo` is whatever
/// the sender typed; only a caller that presented a client certificate
/// from `--client-ca` is known to be the apiserver.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Caller {
    /// No accepted client certificate (client authentication off).
    #[default]
    Unauthenticated,
    /// A client certificate that chains to `--client-ca` (and names one
    /// of `--client-name`, when given).
    Apiserver,
}

impl Caller {
    pub fn as_str(self) -> &'static str {
        match self {
            Caller::Unauthenticated => "unauthenticated",
            Caller::Apiserver => "apiserver",
        }
    }
}

/// One admission request. `object`/`oldObject` may hold Secret data, so the
/// `Debug` impl prints only the identity of the request.
#[derive(Clone, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AdmissionRequest {
    pub uid: String,
    pub kind: GroupVersionKind,
    pub resource: GroupVersionResource,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub_resource: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_kind: Option<GroupVersionKind>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_resource: Option<GroupVersionResource>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_sub_resource: Option<String>,
    /// Empty on a CREATE with `generateName` seen by a mutating webhook,
    /// and on the namespace controller's delete-collection items.
    #[serde(default)]
    pub name: String,
    /// Empty for cluster-scoped objects.
    #[serde(default)]
    pub namespace: String,
    pub operation: Operation,
    #[serde(default)]
    pub user_info: UserInfo,
    #[serde(default)]
    pub object: Option<Value>,
    #[serde(default)]
    pub old_object: Option<Value>,
    #[serde(default)]
    pub dry_run: bool,
    #[serde(default)]
    pub options: Option<Value>,
    /// Set by the server from the connection, never read from the body.
    #[serde(skip)]
    pub caller: Caller,
}

impl AdmissionRequest {
    /// The object the request is about: the new one, or for DELETE the old one.
    pub fn subject(&self) -> Option<&Value> {
        match self.operation {
            Operation::Delete => self.old_object.as_ref(),
            _ => self.object.as_ref().or(self.old_object.as_ref()),
        }
    }

    /// The object's name, falling back to the subject's metadata (the
    /// namespace controller's delete-collection items carry no `name`).
    pub fn object_name(&self) -> &str {
        if !self.name.is_empty() {
            return &self.name;
        }
        self.subject().and_then(|o| o.pointer("/metadata/name")).and_then(Value::as_str).unwrap_or("")
    }
}

impl fmt::Debug for AdmissionRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdmissionRequest")
            .field("uid", &self.uid)
            .field("operation", &self.operation)
            .field("kind", &self.kind)
            .field("sub_resource", &self.sub_resource)
            .field("namespace", &self.namespace)
            .field("name", &self.name)
            .field("user", &self.user_info.username)
            .field("dry_run", &self.dry_run)
            .field("caller", &self.caller)
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawReview {
    #[serde(default)]
    api_version: Option<String>,
    #[serde(default)]
    kind: Option<String>,
    #[serde(default)]
    request: Option<AdmissionRequest>,
}

/// A decoded review: the request plus the apiVersion to answer with.
pub struct Review {
    pub api_version: &'static str,
    pub request: AdmissionRequest,
}

impl Review {
    /// Decodes and validates one AdmissionReview body.
    pub fn decode(body: &[u8]) -> Result<Review, DecodeError> {
        let raw: RawReview = serde_json::from_slice(body).map_err(|e| DecodeError::from_json(&e))?;
        let api_version = match raw.api_version.as_deref() {
            Some(API_VERSION_V1) => API_VERSION_V1,
            Some(API_VERSION_V1BETA1) => API_VERSION_V1BETA1,
            _ => return Err(DecodeError::ApiVersion),
        };
        if raw.kind.as_deref() != Some(KIND) {
            return Err(DecodeError::Kind);
        }
        let request = raw.request.ok_or(DecodeError::MissingRequest)?;
        if request.uid.is_empty() {
            return Err(DecodeError::MissingUid);
        }
        Ok(Review { api_version, request })
    }
}

/// `metav1.Status` as a webhook may return it.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Status {
    pub code: u16,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub message: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub reason: String,
}

/// The answer. No `Debug`: a mutating patch may hold Secret plaintext.
#[derive(Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AdmissionResponse {
    pub uid: String,
    pub allowed: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<Status>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub audit_annotations: BTreeMap<String, String>,
    /// base64 of a JSON Patch document.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub patch: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub patch_type: Option<&'static str>,
}

impl AdmissionResponse {
    /// Sets the patch from a JSON Patch document (ignored when empty).
    pub fn with_patch(mut self, patch: &json_patch::Patch) -> Self {
        if !patch.0.is_empty() {
            // Serializing a Patch of JSON values cannot fail.
            let bytes = serde_json::to_vec(patch).unwrap_or_default();
            self.patch = Some(base64::engine::general_purpose::STANDARD.encode(bytes));
            self.patch_type = Some("JSONPatch");
        }
        self
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ReviewOut<'a> {
    api_version: &'a str,
    kind: &'a str,
    response: &'a AdmissionResponse,
}

/// Encodes the AdmissionReview that answers a request of `api_version`.
pub fn encode(api_version: &str, response: &AdmissionResponse) -> Vec<u8> {
    let out = ReviewOut { api_version, kind: KIND, response };
    // Only strings, bools, numbers and maps with string keys: cannot fail.
    serde_json::to_vec(&out).unwrap_or_default()
}
