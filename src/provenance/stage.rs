//! The provenance rule as an admission stage of its own: it never denies;
//! it writes the request's [`super::Facts`] into the decision (and the commit that
//! owns the object into its audit annotations) for the policy stage, whose
//! `policies/provenance.yaml` decides.

use std::sync::Arc;

use arc_swap::ArcSwapOption;

use super::{Identity, Reason, Snapshot, verify};
use crate::admission::{AdmissionRequest, Decision, Flow, Stage};

/// First on `/validate`: the facts of each request against the commit in
/// force.
pub struct ProvenanceStage {
    /// The snapshot of the commit in force, swapped whole when a new commit
    /// is traced; empty until the first one is (then no facts are written).
    pub snapshot: Arc<ArcSwapOption<Snapshot>>,
    /// Who may apply and prune, built once.
    pub who: Identity,
}

impl Stage for ProvenanceStage {
    fn name(&self) -> &'static str {
        "provenance"
    }

    fn decide(&self, request: &AdmissionRequest, decision: &mut Decision) -> Flow {
        let Some(snap) = self.snapshot.load_full() else { return Flow::Continue };
        let facts = verify(&snap, request, &self.who);
        if facts.verdict.reason == Reason::BreakGlass {
            decision.annotate("break-glass", facts.verdict.message.clone());
            decision.warn(
                "provenance",
                format!(
                    "break-glass by {}: {}; this differs from Git until Git changes or the break-glass expires",
                    request.user_info.username, facts.verdict.message
                ),
            );
        }
        if facts.managed {
            decision.annotate("commit", facts.commit.clone());
            decision.annotate("commit-author", facts.author.clone());
            decision.annotate("commit-subject", facts.subject.clone());
            decision.annotate("app", facts.app.clone());
            decision.annotate("source", facts.path.clone());
        }
        decision.facts.insert(facts);
        Flow::Continue
    }
}
