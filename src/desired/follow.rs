//! Starting the tracker on the repository to track, and following the
//! sets it publishes into the admission gate's compiled snapshot.

use std::path::PathBuf;
use std::sync::Arc;

use super::{DesiredError, DesiredSet, Tracker};
use crate::audit::SyncRecorder;
use crate::provenance::Snapshot;
use crate::render::engine::{RenderOptions, Renderer};
use crate::source::{GitSource, RepoPath};

/// What to track in Git.
pub struct Repo {
    /// A URL, a local repository or a plain directory; `None`: the bundled
    /// example.
    pub repo: Option<String>,
    pub rev: String,
    pub config_path: RepoPath,
    /// The bare cache the tracker fetches into.
    pub cache: PathBuf,
    /// Where a plain directory (or the example) is committed.
    pub work: PathBuf,
    pub signing: super::tracker::Signing,
    /// Spoke mode: only the apps deployed to this cluster.
    pub cluster: Option<String>,
}

/// Opens the repository to track (the bundled example when none is given,
/// committed from its files; a plain directory likewise) and makes the
/// tracker that keeps its desired set current (started by its `run`).
pub fn track(
    repo: &Repo,
    registry: &mut prometheus_client::registry::Registry,
    audit: Arc<dyn SyncRecorder>,
) -> Result<(Arc<Tracker>, Arc<GitSource>), DesiredError> {
    let url = super::open::source_url(repo.repo.as_deref(), &repo.work)?;
    let source = Arc::new(GitSource::open(&url, &repo.cache)?);
    let opts = RenderOptions {
        config_path: repo.config_path.clone(),
        cluster: repo.cluster.clone(),
        ..RenderOptions::default()
    };
    let renderer = Arc::new(Renderer::new(opts));
    tracing::info!(repo = %source.display_url(), rev = %repo.rev, cluster = ?repo.cluster, "tracking Git");
    let tracker = Tracker::new(source.clone(), repo.rev.clone(), renderer)
        .with_signing(repo.signing.clone())
        .with_audit(audit)
        .with_metrics(registry);
    Ok((Arc::new(tracker), source))
}

/// Keeps the provenance snapshot in step with the tracker: each new
/// desired set is compiled once (commit subjects read off the hot path) and
/// swapped in whole.
pub fn follow(
    tracker: Arc<Tracker>,
    mut updates: tokio::sync::watch::Receiver<Option<Arc<DesiredSet>>>,
    source: Arc<GitSource>,
    slot: Arc<arc_swap::ArcSwapOption<Snapshot>>,
    on_first: impl FnOnce() + Send + 'static,
) -> tokio::task::JoinHandle<()> {
    let mut on_first = Some(on_first);
    tokio::spawn(async move {
        loop {
            let current = updates.borrow_and_update().clone();
            if let Some(desired) = current {
                let source = source.clone();
                let commit = desired.commit();
                let tracker = tracker.clone();
                match tokio::task::spawn_blocking(move || {
                    let signed = tracker.signed_commits(&desired);
                    Snapshot::build(desired, &source.repo()).with_signed(signed)
                })
                .await
                {
                    Ok(snap) => {
                        slot.store(Some(Arc::new(snap)));
                        tracing::info!(commit = %commit, "provenance follows the new commit");
                        if let Some(ready) = on_first.take() {
                            ready();
                        }
                    }
                    Err(e) => tracing::error!(error = %e, "failed to build the provenance snapshot"),
                }
            }
            if updates.changed().await.is_err() {
                return;
            }
        }
    })
}
