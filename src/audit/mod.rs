//! The audit log: one hash-chained record per admission decision and per
//! sync action, who asked, what changed, the decision and the commit.
//!
//! - [`record`]: the record type ([`Entry`] is what a producer fills in).
//! - [`chain`]: sealing and verifying the hash chain (pure, over bytes).
//! - [`log`]: the append-only JSON Lines file ([`AuditLog::append`]) with
//!   group-commit fsync, rotation and crash recovery.
//! - [`checkpoint`]: Ed25519-signed chain heads in a side file.
//! - [`cluster`]: the same checkpoints in a ConfigMap (+ an Event) when a
//!   cluster is connected, read back by `audit verify --checkpoints-from-cluster`.
//! - [`recorder`]: the admission server's [`crate::admission::Recorder`].
//! - [`query`]: `gitgate audit query`; [`verify`]: `gitgate audit verify` (the command is in `cmd::audit`).
//! - [`fleet`]: `--fleet` for both: one chain per spoke cluster, merged by
//!   time (query) or verified one by one (verify).
//! - [`notify`]: Slack-compatible webhook notifications.
//!
//! Owns: the record format, the hash chain, the log file, signed
//! checkpoints (file and ConfigMap), queries, notifications and what
//! `gitgate audit` (in `cmd::audit`) reads and verifies. Almost every other
//! module writes records through it, so it sits low: its only imports from
//! outside are [`crate::admission`] (in `recorder`, the `Recorder` trait it
//! implements) and [`crate::contract`] (the label and annotation names).
//!
//! Must never import: `provenance`, `policy`, `secrets`, `sync`, `source`,
//! `render`, `promotion`, `dashboard`, `server` (they import audit).

pub mod chain;
pub mod checkpoint;
pub mod cluster;
pub mod fleet;
pub mod log;
pub mod notify;
pub mod query;
pub mod record;
pub mod recorder;
pub mod verify;

use std::path::PathBuf;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

pub use chain::Head;
pub use log::{AuditLog, Options};
pub use notify::{Notifier, NotifyConfig};
pub use record::{CommitRef, Entry, EventKind, Outcome, Record};
pub use recorder::Tee;

/// Where audit records of sync actions go.
pub trait SyncRecorder: Send + Sync {
    fn record(&self, entry: &Entry);
}

impl SyncRecorder for AuditLog {
    fn record(&self, entry: &Entry) {
        if let Err(e) = self.append(entry) {
            tracing::error!(error = %crate::error_chain(&e), "failed to record a sync action in the audit log");
        }
    }
}

/// Default log path, relative to the working directory.
pub const DEFAULT_LOG_PATH: &str = "gitgate-data/audit/audit.jsonl";

/// Everything that can go wrong in the audit box.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("failed to {op} {path}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to encode an audit record")]
    Encode {
        #[source]
        source: serde_json::Error,
    },
    #[error("failed to use the checkpoint key {path}: {reason}")]
    Key { path: PathBuf, reason: String },
    #[error("the audit log {path} is unusable: {reason}")]
    Unusable { path: PathBuf, reason: String },
    #[error("the audit log is closed")]
    Closed,
    #[error(transparent)]
    Read(#[from] chain::ReadError),
    #[error(transparent)]
    Fleet(#[from] fleet::FleetError),
    #[error("invalid {what}: {reason}")]
    Invalid { what: &'static str, reason: String },
    #[error("failed to {op} in the cluster")]
    Cluster {
        op: String,
        #[source]
        source: kube::Error,
    },
    #[error("failed to configure the cluster client")]
    ClusterConfig {
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("failed to start the notifier")]
    Notifier {
        #[source]
        source: reqwest::Error,
    },
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NotifyLabels {
    pub result: &'static str,
}

/// Audit metrics (register them with [`AuditMetrics::register`]; a default
/// value counts without being exported).
#[derive(Clone, Default)]
pub struct AuditMetrics {
    pub records: Counter,
    pub write_failures: Counter,
    pub sync_failures: Counter,
    pub checkpoints: Counter,
    pub recoveries: Counter,
    pub notifications: Family<NotifyLabels, Counter>,
    /// Checkpoints written to the cluster (ConfigMap + Event).
    pub cluster_checkpoints: Counter,
    /// Checkpoints that could not be written to the cluster.
    pub cluster_checkpoint_failures: Counter,
}

impl AuditMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let m = AuditMetrics::default();
        registry.register("gitgate_audit_records", "Records appended to the audit log", m.records.clone());
        registry.register(
            "gitgate_audit_write_failures",
            "Records that could not be written (disk full, read-only); their admissions were denied unless fail-open",
            m.write_failures.clone(),
        );
        registry.register(
            "gitgate_audit_sync_failures",
            "Failed fsyncs of the audit log (the log then refuses appends)",
            m.sync_failures.clone(),
        );
        registry.register("gitgate_audit_checkpoints", "Signed checkpoints written", m.checkpoints.clone());
        registry.register(
            "gitgate_audit_recoveries",
            "Torn or missing tails found when the audit log was opened",
            m.recoveries.clone(),
        );
        registry.register(
            "gitgate_audit_cluster_checkpoints",
            "Signed checkpoints written to the audit ConfigMap in the cluster",
            m.cluster_checkpoints.clone(),
        );
        registry.register(
            "gitgate_audit_cluster_checkpoint_failures",
            "Signed checkpoints (or their Events) that could not be written to the cluster; admission is not blocked",
            m.cluster_checkpoint_failures.clone(),
        );
        registry.register(
            "gitgate_audit_notifications",
            "Notifications by result (sent, failed, dropped)",
            m.notifications.clone(),
        );
        m
    }
}
