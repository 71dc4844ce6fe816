//! The embedded sync loop. sync/ owns the reconcile of each app as a
//! numbered checklist — Git's desired set planned and stamped with its
//! commit, server-side-applied by wave with its hooks, each wave healthy
//! before the next, what left Git pruned from the recorded inventory, the
//! app's health and status recorded — and self-heal (with break-glass
//! windows), gitgate's own webhook configurations kept in place, leader
//! election, and rollback.
//!
//! sync/ must never import admission/ or dashboard/: the admission webhook
//! and the dashboard read sync's status and plan, never the other way
//! round.
//!
//! - [`plan`]: pure — stamps, waves, drift, the prune plan and its guard;
//!   plan mode. [`wave`]: apply order, a leaf.
//! - [`reconcile`]: `sync_once` and the checklist; its steps in `apply.rs`
//!   (preflight, apply by wave, wait healthy), `hooks.rs`, `prune.rs`
//!   (prune, inventory) and `record.rs` (status); the leader's loop in
//!   `run.rs`.
//! - [`heal`]: watches the managed kinds and puts Git's fields back.
//! - [`guard`]: gitgate's own webhook configurations, kept in place.
//! - [`audit`]: the sync loop's audit records, one builder.
//! - [`target`], [`inventory`]: the cluster edge.
//! - [`health`], [`leader`], [`status`], [`rollback`].
//! - [`diff`]: `gitgate diff`, what a sync of an app would change.

mod apply;
pub mod audit;
pub mod diff;
pub mod guard;
pub mod heal;
pub mod health;
mod hooks;
pub mod inventory;
pub mod leader;
pub mod namespaces;
pub mod plan;
mod prune;
pub mod reconcile;
mod record;
pub mod rollback;
mod run;
pub mod runtime;
pub mod status;
pub mod target;
pub mod wave;

use std::time::Duration;

/// The sync loop's clients do not retry 429/503/504 inside a request
/// (kube's default: up to 15 times, minutes in all). A webhook's 503 is a
/// decision — Vault unavailable, the audit log full — that belongs in the
/// app's status at once; the loop retries a sync that did not finish with
/// its own backoff, and watches and the leader election retry on their own.
pub fn without_request_retries(mut config: kube::Config) -> kube::Config {
    config.default_retry = false;
    config
}

/// Errors of the sync loop.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("failed to {action}: {source}")]
    Kube {
        action: String,
        #[source]
        source: Box<kube::Error>,
    },
    #[error("failed to resolve kind {kind}: is its CRD installed?")]
    UnknownKind {
        kind: String,
        #[source]
        source: Box<kube::Error>,
    },
    #[error("failed to read the manifest of {object} ({file}): {reason}")]
    Manifest { object: String, file: String, reason: String },
    #[error("failed to read the inventory of app {app}: {reason}")]
    Inventory { app: String, reason: String },
    #[error("no cluster named {cluster} (no kubeconfig context of that name)")]
    NoCluster { cluster: String },
    #[error("wave {wave} did not become healthy within {timeout:?}: {detail}")]
    WaveTimeout { wave: String, timeout: Duration, detail: String },
    #[error("wave {wave} is degraded: {detail}")]
    WaveDegraded { wave: String, detail: String },
    /// `hook` reads "PreSync hook ns/Job/migrate-x2k9p".
    #[error("{hook} ({file}) failed: {detail}")]
    HookFailed { hook: String, file: String, detail: String },
    #[error("failed to apply {object} ({file}): {fields} is immutable; {hint}")]
    Immutable { object: String, file: String, fields: String, hint: String },
    #[error("{detail}; not run again at this commit (push a new commit to retry)")]
    HookHeld { detail: String },
    #[error("{object} was not gone within {timeout:?} of its deletion")]
    Gone { object: String, timeout: Duration },
    /// A failure about a Secret: `detail` is scrubbed of its values (or
    /// withheld) before it is made.
    #[error("failed to {action}: {detail}")]
    Secret { action: String, detail: String },
    #[error("failed to read the kubeconfig {path}")]
    Kubeconfig {
        path: std::path::PathBuf,
        #[source]
        source: Box<kube::config::KubeconfigError>,
    },
    #[error("failed to find a cluster (in-cluster or a kubeconfig)")]
    InferConfig {
        #[source]
        source: Box<kube::config::InferConfigError>,
    },
    #[error("the apiserver did not answer within {timeout:?}")]
    Silent { timeout: Duration },
    #[error("failed to ask the apiserver who gitgate is: {reason}")]
    WhoAmI { reason: String },
}

impl SyncError {
    pub(crate) fn kube(action: impl Into<String>, source: kube::Error) -> Self {
        SyncError::Kube { action: action.into(), source: Box::new(source) }
    }
}

/// The sync loop's settings, validated once.
#[derive(Clone, Debug)]
pub struct SyncConfig {
    /// gitgate's namespace: inventories and the leader Lease live there.
    pub namespace: String,
    /// Applies in flight at once inside a wave.
    pub concurrency: usize,
    /// How long a wave may take to become healthy before the sync fails.
    pub wave_timeout: Duration,
    /// How long a sync hook may take to finish (its own timeout: a hook
    /// that never finishes fails the sync).
    pub hook_timeout: Duration,
    pub prune_guard: plan::PruneGuard,
    /// Full re-sync even when Git did not move (drift the watch missed).
    pub resync_interval: Duration,
    /// How long self-heal leaves a break-glass object alone.
    pub break_glass_ttl: Duration,
    /// This replica's name (audit records, the Lease holder).
    pub replica: String,
}

impl Default for SyncConfig {
    fn default() -> Self {
        SyncConfig {
            namespace: "gitgate".into(),
            concurrency: 16,
            wave_timeout: Duration::from_secs(300),
            hook_timeout: Duration::from_secs(300),
            prune_guard: plan::PruneGuard::default(),
            resync_interval: Duration::from_secs(180),
            break_glass_ttl: Duration::from_secs(3600),
            replica: "gitgate".into(),
        }
    }
}
