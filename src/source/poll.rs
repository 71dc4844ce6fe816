//! Keeping the desired set current: fetch on an interval (default 30 s)
//! and at once when a webhook says so, render the new head, and publish it.
//! A commit that fails to render (a bad `gitgate.yaml`, a YAML bomb, an
//! object outside its project) is reported and the last good desired set
//! stays in force.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use gix::ObjectId;
use tokio::sync::{Notify, watch};

use super::signature::{self, SignatureError, Signers};
use super::{GitSource, SourceError};
use crate::render::{DesiredSet, RenderError, Renderer};

pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(30);

/// What one sync attempt can fail at.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("failed to fetch")]
    Source(#[from] SourceError),
    #[error("commit {commit} does not render; keeping the last good commit")]
    Render {
        commit: String,
        #[source]
        source: RenderError,
    },
    #[error("commit {commit} is not synced: app {app:?} requires signed commits")]
    Unsigned {
        commit: String,
        app: String,
        #[source]
        source: SignatureError,
    },
    #[error("the render task failed")]
    Join(#[from] tokio::task::JoinError),
}

/// The outcome of one sync.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Synced {
    /// A new commit is now in force.
    Updated(ObjectId),
    /// The head did not move.
    Unchanged(ObjectId),
}

/// The current desired set of one tracked revision.
pub struct Tracker {
    source: Arc<GitSource>,
    rev: String,
    renderer: Arc<Renderer>,
    current: ArcSwapOption<DesiredSet>,
    tx: watch::Sender<Option<Arc<DesiredSet>>>,
    trigger: Arc<Notify>,
    last_error: Mutex<Option<String>>,
    signers: Signers,
}

impl Tracker {
    pub fn new(source: Arc<GitSource>, rev: impl Into<String>, renderer: Arc<Renderer>) -> Self {
        let (tx, _) = watch::channel(None);
        Tracker {
            source,
            rev: rev.into(),
            renderer,
            current: ArcSwapOption::empty(),
            tx,
            trigger: Arc::new(Notify::new()),
            last_error: Mutex::new(None),
            signers: Signers::default(),
        }
    }

    /// Who may sign commits, for apps with `requireSigned`.
    pub fn with_signers(mut self, signers: Signers) -> Self {
        self.signers = signers;
        self
    }

    /// The desired set in force (None before the first good commit).
    pub fn current(&self) -> Option<Arc<DesiredSet>> {
        self.current.load_full()
    }

    /// Updates whenever a new desired set comes into force.
    pub fn subscribe(&self) -> watch::Receiver<Option<Arc<DesiredSet>>> {
        self.tx.subscribe()
    }

    /// Notify this to fetch now (the webhook does).
    pub fn trigger(&self) -> Arc<Notify> {
        self.trigger.clone()
    }

    /// Why the newest commit is not in force, if it is not.
    pub fn last_error(&self) -> Option<String> {
        self.last_error.lock().ok().and_then(|e| e.clone())
    }

    /// Fetch, resolve, render, publish. On a render error the current set
    /// is kept and the error returned.
    pub async fn sync_once(&self) -> Result<Synced, SyncError> {
        self.source.fetch_async().await?;
        let source = self.source.clone();
        let rev = self.rev.clone();
        let head = tokio::task::spawn_blocking(move || source.resolve(&rev)).await??;
        if self.current().is_some_and(|c| c.commit() == head) {
            return Ok(Synced::Unchanged(head));
        }
        let source = self.source.clone();
        let renderer = self.renderer.clone();
        let rendered = tokio::task::spawn_blocking(move || renderer.desired(&source.repo(), head)).await?;
        let rendered = match rendered {
            Ok(set) => self.check_signatures(set).await,
            Err(e) => Err(SyncError::Render { commit: head.to_string(), source: e }),
        };
        match rendered {
            Ok(set) => {
                self.current.store(Some(set.clone()));
                self.tx.send_replace(Some(set));
                if let Ok(mut e) = self.last_error.lock() {
                    *e = None;
                }
                Ok(Synced::Updated(head))
            }
            Err(err) => {
                if let Ok(mut l) = self.last_error.lock() {
                    *l = Some(crate::error_chain(&err));
                }
                Err(err)
            }
        }
    }

    /// When an app requires signed commits, every commit since the set in
    /// force (all of history for the first) must carry an allowed signature.
    async fn check_signatures(&self, set: Arc<DesiredSet>) -> Result<Arc<DesiredSet>, SyncError> {
        let Some(app) = set.apps().iter().find(|a| a.require_signed).map(|a| a.name.clone()) else {
            return Ok(set);
        };
        let from = self.current().map(|c| c.commit());
        let head = set.commit();
        let source = self.source.clone();
        let signers = self.signers.clone();
        let checked =
            tokio::task::spawn_blocking(move || signature::verify_range(&source.repo(), from, head, &signers, 10_000))
                .await?;
        match checked {
            Ok(_) => Ok(set),
            Err(e) => Err(SyncError::Unsigned { commit: head.to_string(), app, source: e }),
        }
    }

    /// Syncs now, then every `interval` and whenever triggered, until the
    /// task is dropped.
    pub async fn run(self: Arc<Self>, interval: Duration) {
        loop {
            match self.sync_once().await {
                Ok(Synced::Updated(c)) => tracing::info!(commit = %c, "desired set updated"),
                Ok(Synced::Unchanged(_)) => {}
                Err(e) => {
                    tracing::warn!(error = %crate::error_chain(&e), "sync failed; the last good commit stays in force")
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = self.trigger.notified() => {}
            }
        }
    }
}
