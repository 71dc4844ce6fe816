//! The admission server's recorder: every decision becomes one record.
//!
//! What a stage can tell the audit log, through the decision's audit
//! annotations (which also reach the apiserver's own audit log):
//!
//! | key | meaning |
//! | --- | --- |
//! | `commit` | full ID of the commit the object is traced to |
//! | `commit-author` | that commit's author (`Name <email>`) |
//! | `commit-subject` | that commit's subject line |
//! | `app` | the app that owns the object (else its `gitgate.dev/app` label) |
//! | `source` | the manifest's path in the repository (else its `gitgate.dev/source` annotation) |
//!
//! The object itself is represented by its digest only: `sha256:` of its
//! JSON as decoded, with a Secret's `data` and `stringData` left out so
//! that no digest can be used to guess a secret value.

use std::io::Write;
use std::sync::Arc;

use serde_json::Value;

use super::AuditLog;
use super::record::{CommitRef, Entry, EventKind, Outcome, hex};
use crate::admission::{Event, RecordError, Recorder};

/// Audit annotation keys read from a decision.
pub const ANNOTATION_COMMIT: &str = "commit";
pub const ANNOTATION_COMMIT_AUTHOR: &str = "commit-author";
pub const ANNOTATION_COMMIT_SUBJECT: &str = "commit-subject";
pub const ANNOTATION_APP: &str = "app";
pub const ANNOTATION_SOURCE: &str = "source";

use crate::contract::{APP_LABEL as LABEL_APP, SOURCE_ANNOTATION as ANNOTATION_OBJECT_SOURCE};

struct DigestWriter(ring::digest::Context);

impl Write for DigestWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// `sha256:<hex>` of an object, Secret values left out.
pub fn object_digest(object: &Value) -> String {
    let is_secret = object.get("kind").and_then(Value::as_str) == Some("Secret")
        && object.get("apiVersion").and_then(Value::as_str) == Some("v1");
    let mut w = DigestWriter(ring::digest::Context::new(&ring::digest::SHA256));
    let written = if is_secret {
        let mut redacted = object.clone();
        if let Some(map) = redacted.as_object_mut() {
            map.remove("data");
            map.remove("stringData");
        }
        serde_json::to_writer(&mut w, &redacted)
    } else {
        serde_json::to_writer(&mut w, object)
    };
    match written {
        Ok(()) => format!("sha256:{}", hex(w.0.finish().as_ref())),
        Err(_) => String::new(),
    }
}

fn metadata_str<'a>(object: Option<&'a Value>, section: &str, key: &str) -> Option<&'a str> {
    object?.get("metadata")?.get(section)?.get(key)?.as_str()
}

/// The record for one admission decision.
pub fn admission_entry(e: &Event<'_>) -> Entry {
    let r = e.request;
    let d = e.decision;
    let ann = &d.audit_annotations;
    let subject = r.subject();
    let mut entry = Entry::new(EventKind::Admission, Outcome::Allow);
    entry.endpoint = e.endpoint.as_str().to_owned();
    entry.uid.clone_from(&r.uid);
    entry.dry_run = r.dry_run;
    entry.caller = r.caller.as_str().to_owned();
    entry.user.clone_from(&r.user_info.username);
    entry.groups.clone_from(&r.user_info.groups);
    entry.operation = r.operation.as_str().to_owned();
    entry.group.clone_from(&r.kind.group);
    entry.version.clone_from(&r.kind.version);
    entry.kind.clone_from(&r.kind.kind);
    entry.resource.clone_from(&r.resource.resource);
    entry.subresource = r.sub_resource.clone().unwrap_or_default();
    entry.namespace.clone_from(&r.namespace);
    entry.name = r.object_name().to_owned();
    if let Some(id) = ann.get(ANNOTATION_COMMIT) {
        entry.commit = Some(CommitRef {
            id: id.clone(),
            author: ann.get(ANNOTATION_COMMIT_AUTHOR).cloned().unwrap_or_default(),
            subject: ann.get(ANNOTATION_COMMIT_SUBJECT).cloned().unwrap_or_default(),
        });
    }
    entry.app = ann
        .get(ANNOTATION_APP)
        .map(String::as_str)
        .or_else(|| metadata_str(subject, "labels", LABEL_APP))
        .unwrap_or_default()
        .to_owned();
    entry.source = ann
        .get(ANNOTATION_SOURCE)
        .map(String::as_str)
        .or_else(|| metadata_str(subject, "annotations", ANNOTATION_OBJECT_SOURCE))
        .unwrap_or_default()
        .to_owned();
    match &d.denial {
        Some(denial) => {
            entry.decision = Outcome::Deny;
            entry.code = Some(denial.code);
            entry.reasons.push(format!("{}: {}", denial.reason, denial.message));
        }
        None if !d.warnings.is_empty() => entry.decision = Outcome::Warn,
        None => {}
    }
    entry.reasons.extend(d.warnings.iter().map(|w| format!("warning: {w}")));
    for stage in &d.stages {
        if !entry.policies.iter().any(|p| p == stage) {
            entry.policies.push((*stage).to_owned());
        }
    }
    if let Some(object) = subject {
        entry.digest = object_digest(object);
    }
    entry
}

impl Recorder for AuditLog {
    fn record(&self, event: &Event<'_>) -> Result<(), RecordError> {
        self.append(&admission_entry(event))
            .map(|_| ())
            .map_err(|e| RecordError { reason: crate::error_chain(&e), source: Some(Box::new(e)) })
    }
}

/// Records to each recorder in turn; the first error wins, later recorders
/// still run.
pub struct Tee(pub Vec<Arc<dyn Recorder>>);

impl Recorder for Tee {
    fn record(&self, event: &Event<'_>) -> Result<(), RecordError> {
        let mut result = Ok(());
        for r in &self.0 {
            if let Err(e) = r.record(event)
                && result.is_ok()
            {
                result = Err(e);
            }
        }
        result
    }
}
