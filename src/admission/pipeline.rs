//! The decision pipeline: decode → decide → respond → record.
//!
//! "Decide" runs an ordered list of [`Stage`]s held in an immutable
//! [`Decider`] snapshot. A stage may add warnings, audit annotations and
//! JSON Patch operations, deny (which stops the run), or settle the request
//! as allowed (an exemption, which also stops the run). Provenance, the CEL
//! policies and the secrets bridge are stages; the pipeline itself knows
//! none of them.

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use super::review::{AdmissionRequest, AdmissionResponse, Status};

/// Which webhook a review came to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Endpoint {
    Validate,
    Mutate,
}

impl Endpoint {
    pub fn as_str(self) -> &'static str {
        match self {
            Endpoint::Validate => "validate",
            Endpoint::Mutate => "mutate",
        }
    }
}

/// What a stage tells the pipeline to do next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flow {
    /// Run the next stage.
    Continue,
    /// Stop: the decision is final (a denial or an exemption).
    Stop,
}

/// A denial: an HTTP-style code, a machine reason, a human message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Denial {
    pub code: u16,
    pub reason: String,
    pub message: String,
    /// The stage that denied.
    pub stage: &'static str,
}

/// The decision being built for one request. Its patch may hold Secret
/// plaintext, so `Debug` prints the patch's paths only.
#[derive(Clone, Default)]
pub struct Decision {
    pub denial: Option<Denial>,
    pub warnings: Vec<String>,
    pub audit_annotations: BTreeMap<String, String>,
    pub patch: json_patch::Patch,
    /// Stages that had a say (denied, exempted, warned or patched).
    pub stages: Vec<&'static str>,
    /// What an earlier stage found out for the later ones, by type (the
    /// provenance stage's facts, read by the policy stage).
    pub facts: axum::http::Extensions,
}

impl fmt::Debug for Decision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let paths: Vec<String> = self.patch.0.iter().map(|op| op.path().to_string()).collect();
        f.debug_struct("Decision")
            .field("denial", &self.denial)
            .field("warnings", &self.warnings)
            .field("audit_annotations", &self.audit_annotations)
            .field("patch_paths", &paths)
            .field("stages", &self.stages)
            .finish()
    }
}

impl Decision {
    pub fn allowed(&self) -> bool {
        self.denial.is_none()
    }

    /// Denies the request; the caller should return [`Flow::Stop`].
    pub fn deny(&mut self, stage: &'static str, code: u16, reason: impl Into<String>, message: impl Into<String>) {
        self.stages.push(stage);
        self.denial = Some(Denial { code, reason: reason.into(), message: message.into(), stage });
    }

    pub fn warn(&mut self, stage: &'static str, message: impl Into<String>) {
        self.stages.push(stage);
        self.warnings.push(message.into());
    }

    /// Adds an audit annotation; the apiserver prefixes the key with the
    /// webhook's name in its audit log.
    pub fn annotate(&mut self, key: impl Into<String>, value: impl Into<String>) {
        self.audit_annotations.insert(key.into(), value.into());
    }

    pub fn patch(&mut self, stage: &'static str, ops: impl IntoIterator<Item = json_patch::PatchOperation>) {
        self.stages.push(stage);
        self.patch.0.extend(ops);
    }

    /// The decision as the AdmissionResponse for `uid`. A denial carries no
    /// patch; a validating response never carries one.
    pub fn respond(&self, endpoint: Endpoint, uid: &str) -> AdmissionResponse {
        let response = AdmissionResponse {
            uid: uid.to_owned(),
            allowed: self.allowed(),
            status: self.denial.as_ref().map(|d| Status {
                code: d.code,
                message: d.message.clone(),
                reason: d.reason.clone(),
            }),
            warnings: self.warnings.clone(),
            audit_annotations: self.audit_annotations.clone(),
            patch: None,
            patch_type: None,
        };
        if self.allowed() && endpoint == Endpoint::Mutate { response.with_patch(&self.patch) } else { response }
    }
}

/// One pure step of the decision. No I/O on this path: whatever a stage
/// needs was compiled into it when its snapshot was built.
pub trait Stage: Send + Sync {
    fn name(&self) -> &'static str;
    fn decide(&self, request: &AdmissionRequest, decision: &mut Decision) -> Flow;
}

/// A boxed future borrowed from its stage and request.
pub type StageFuture<'a> = Pin<Box<dyn Future<Output = Flow> + Send + 'a>>;

/// A stage that has to wait on I/O before it can decide (a Vault read on a
/// cache miss). It bounds its own wait with a deadline shorter than the
/// webhook's timeout. Prefer [`Stage`]: most decisions need no I/O.
pub trait AsyncStage: Send + Sync {
    fn name(&self) -> &'static str;
    fn decide<'a>(&'a self, request: &'a AdmissionRequest, decision: &'a mut Decision) -> StageFuture<'a>;
}

#[derive(Clone)]
enum AnyStage {
    Pure(Arc<dyn Stage>),
    Async(Arc<dyn AsyncStage>),
}

/// An immutable set of stages per endpoint: built once (per commit, per
/// policy load) and shared by every request through an `Arc`.
#[derive(Default)]
pub struct Decider {
    validate: Vec<AnyStage>,
    mutate: Vec<AnyStage>,
}

impl Decider {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn with_validating(mut self, stage: Arc<dyn Stage>) -> Self {
        self.validate.push(AnyStage::Pure(stage));
        self
    }

    pub fn with_mutating(mut self, stage: Arc<dyn Stage>) -> Self {
        self.mutate.push(AnyStage::Pure(stage));
        self
    }

    pub fn with_async_validating(mut self, stage: Arc<dyn AsyncStage>) -> Self {
        self.validate.push(AnyStage::Async(stage));
        self
    }

    pub fn with_async_mutating(mut self, stage: Arc<dyn AsyncStage>) -> Self {
        self.mutate.push(AnyStage::Async(stage));
        self
    }

    /// The names of an endpoint's stages, in order.
    pub fn stage_names(&self, endpoint: Endpoint) -> Vec<&'static str> {
        self.stages(endpoint)
            .iter()
            .map(|s| match s {
                AnyStage::Pure(s) => s.name(),
                AnyStage::Async(s) => s.name(),
            })
            .collect()
    }

    fn stages(&self, endpoint: Endpoint) -> &[AnyStage] {
        match endpoint {
            Endpoint::Validate => &self.validate,
            Endpoint::Mutate => &self.mutate,
        }
    }

    /// Runs the endpoint's stages in order until one stops the run. Only
    /// async stages ever suspend.
    pub async fn decide(&self, endpoint: Endpoint, request: &AdmissionRequest) -> Decision {
        let mut decision = Decision::default();
        if request.dry_run {
            decision.annotate("dry-run", "true");
        }
        for stage in self.stages(endpoint) {
            let flow = match stage {
                AnyStage::Pure(s) => s.decide(request, &mut decision),
                AnyStage::Async(s) => s.decide(request, &mut decision).await,
            };
            if flow == Flow::Stop {
                break;
            }
        }
        decision
    }
}
