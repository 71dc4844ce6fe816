//! The one builder of the sync loop's audit records ([`AuditRecord`]);
//! they go to a [`crate::audit::SyncRecorder`]. A leaf: it imports nothing
//! of sync/ but the target's [`Resource`].

use crate::audit::record::{CommitRef, Entry as AuditEntry, EventKind, Outcome};
use crate::render::object::ObjectKey;

use super::target::Resource;

/// One audit record of a sync action, built step by step: the event and
/// its app, done unless [`AuditRecord::outcome`] says otherwise, and what
/// else the action knows (its object, commit, file, reasons).
#[must_use]
#[derive(Clone, Debug)]
pub struct AuditRecord(AuditEntry);

impl AuditRecord {
    /// A record of `event` for `app` (`""` for none), outcome done.
    pub fn new(event: EventKind, app: &str) -> Self {
        AuditRecord(AuditEntry { app: app.to_string(), ..AuditEntry::new(event, Outcome::Done) })
    }

    /// The outcome, when not done (failed, refused).
    pub fn outcome(mut self, decision: Outcome) -> Self {
        self.0.decision = decision;
        self
    }

    /// The commit the action is about (its full id).
    pub fn commit(mut self, id: impl Into<String>) -> Self {
        self.0.commit = Some(CommitRef { id: id.into(), ..CommitRef::default() });
        self
    }

    /// The object: its group, kind, namespace and name.
    pub fn object(mut self, key: &ObjectKey) -> Self {
        self.0.group = key.group.clone();
        self.0.kind = key.kind.clone();
        self.0.namespace = key.namespace.clone();
        self.0.name = key.name.clone();
        self
    }

    /// The object's name, when it is not its key's (a hook's run).
    pub fn name(mut self, name: &str) -> Self {
        self.0.name = name.to_string();
        self
    }

    /// The object's API version and resource (plural), as resolved.
    pub fn resource(mut self, r: &Resource) -> Self {
        self.0.version = r.api.version.clone();
        self.0.resource = r.api.plural.clone();
        self
    }

    /// `APPLY`, `CREATE` or `DELETE`.
    pub fn operation(mut self, operation: &str) -> Self {
        self.0.operation = operation.to_string();
        self
    }

    /// Who did it (an approver).
    pub fn user(mut self, user: &str) -> Self {
        self.0.user = user.to_string();
        self
    }

    /// The manifest's path in the repository.
    pub fn source(mut self, file: &str) -> Self {
        self.0.source = file.to_string();
        self
    }

    /// The object's digest (`sha256:`), never the object.
    pub fn digest(mut self, digest: &str) -> Self {
        self.0.digest = digest.to_string();
        self
    }

    /// What the action did, or why it failed or was refused.
    pub fn reasons(mut self, reasons: Vec<String>) -> Self {
        self.0.reasons = reasons;
        self
    }

    /// The record as the audit log takes it.
    pub fn entry(self) -> AuditEntry {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sync_record_names_its_object_app_and_commit_and_is_done_unless_told() {
        let key = ObjectKey::new("apps", "Deployment", "shop", "web");
        let e = AuditRecord::new(EventKind::Prune, "shop").object(&key).commit("abc").operation("DELETE").entry();
        assert_eq!(
            (e.object(), e.app.as_str(), e.operation.as_str()),
            ("shop/Deployment/web".into(), "shop", "DELETE")
        );
        assert_eq!(e.commit.map(|c| c.id), Some("abc".into()));
        assert_eq!(e.decision, Outcome::Done);
        let refused = AuditRecord::new(EventKind::Prune, "shop").outcome(Outcome::Refused).entry();
        assert_eq!(refused.decision, Outcome::Refused);
        assert!(refused.commit.is_none(), "no commit unless one is given");
    }
}
