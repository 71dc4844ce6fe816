//! Starting the promotion gates in `serve`: the commit in force of each
//! gated app at start is the one its inventory recorded.

use std::sync::Arc;

use super::Promoter;
use crate::audit::SyncRecorder;
use crate::desired::Tracker;

/// What the promotion gates start from.
pub struct Promotion<'a> {
    pub namespace: &'a str,
    /// `--approval-signers`: who may sign approval tags.
    pub tag_signers: Option<crate::source::signature::Signers>,
    pub audit: Option<Arc<dyn SyncRecorder>>,
    /// Whether this replica records (the leader).
    pub records: Arc<dyn Fn() -> bool + Send + Sync>,
}

/// Starts the promotion gates: the commit in force of each app at start is
/// its inventory's (none when they cannot be read: then a gated app keeps
/// nothing new in force until it is approved again).
pub async fn promote(
    client: &kube::Client,
    tracker: &Arc<Tracker>,
    p: Promotion<'_>,
) -> (Arc<Promoter>, tokio::task::JoinHandle<()>) {
    let inventories = match crate::sync::inventory::read_all(client, p.namespace).await {
        Ok(i) => i,
        Err(e) => {
            tracing::warn!(error = %crate::error_chain(&e), "failed to read the inventories: gated apps start with nothing in force");
            Default::default()
        }
    };
    let store = super::state::StateStore::new(client.clone(), p.namespace);
    let start = super::promoter::start_commits(&inventories);
    let promoter = Promoter::new(tracker.clone(), store, start, p.audit, p.records, p.tag_signers);
    let task = tokio::spawn(promoter.clone().run());
    (promoter, task)
}
