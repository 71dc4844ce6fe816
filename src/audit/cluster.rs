//! Checkpoints kept in the cluster: when one is connected, every signed
//! checkpoint also goes to the ConfigMap `gitgate-audit-<replica>` in
//! gitgate's namespace (the last [`KEEP`] checkpoints as JSON lines, plus
//! the latest one's sequence number and hash) and a Kubernetes Event
//! (`reason: AuditCheckpoint`) names it. A log whose tail was cut, with its
//! side file gone too, still disagrees with what the cluster holds, and
//! `gitgate audit verify --checkpoints-from-cluster` says so.
//!
//! Writing to the cluster never blocks admission: the sync thread hands
//! the checkpoint to a task over a bounded queue; failures are logged and
//! counted (`gitgate_audit_cluster_checkpoint_failures`).
//!
//! The ConfigMap body is built and parsed by pure functions
//! ([`configmap_body`], [`checkpoints_in`]); the I/O is in [`attach`] and
//! [`fetch`].

use std::collections::BTreeSet;
use std::io::{BufRead as _, BufReader};
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{ConfigMap, Event, EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ListParams, PostParams};

use super::checkpoint::{Checkpoint, Unreadable};
use super::log::AuditLog;
use super::record::{Entry, EventKind, Outcome};
use super::{AuditError, AuditMetrics};

/// Checkpoints a ConfigMap keeps (the newest).
pub const KEEP: usize = 16;
/// Label on the checkpoint ConfigMaps (value `"true"`).
pub const LABEL: &str = "gitgate.dev/audit-checkpoints";
pub const SELECTOR: &str = "gitgate.dev/audit-checkpoints=true";
/// The replica's name as written in its records.
pub const REPLICA_ANNOTATION: &str = "gitgate.dev/audit-replica";
/// Data keys.
pub const DATA_CHECKPOINTS: &str = "checkpoints.jsonl";
pub const DATA_LATEST: &str = "latest";
pub const DATA_SEQ: &str = "seq";
pub const DATA_HASH: &str = "hash";
/// The Event's reason.
pub const EVENT_REASON: &str = "AuditCheckpoint";
const PREFIX: &str = "gitgate-audit-";

/// `gitgate-audit-<replica>`, made a valid object name (lowercase
/// alphanumerics, `-` and `.`); a replica name that had to change gets a
/// short hash of the original so two replicas never share a ConfigMap.
pub fn configmap_name(replica: &str) -> String {
    let mut clean: String = replica
        .chars()
        .map(|c| c.to_ascii_lowercase())
        .map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '.' { c } else { '-' })
        .collect();
    clean = clean.trim_matches(|c: char| !c.is_ascii_alphanumeric()).to_owned();
    let changed = clean != replica;
    clean.truncate(200);
    if clean.is_empty() {
        clean.push_str("replica");
    }
    if changed {
        let digest = ring::digest::digest(&ring::digest::SHA256, replica.as_bytes());
        let short = super::record::hex(digest.as_ref().get(..4).unwrap_or_default());
        format!("{PREFIX}{clean}-{short}")
    } else {
        format!("{PREFIX}{clean}")
    }
}

/// The checkpoints a ConfigMap holds, and its lines that are not checkpoints.
pub fn checkpoints_in(cm: &ConfigMap) -> (Vec<Checkpoint>, Unreadable) {
    let mut good = Vec::new();
    let mut bad = Vec::new();
    let text = cm.data.as_ref().and_then(|d| d.get(DATA_CHECKPOINTS)).map_or("", String::as_str);
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<Checkpoint>(line) {
            Ok(cp) => good.push(cp),
            Err(e) => bad.push((i as u64 + 1, e.to_string())),
        }
    }
    (good, bad)
}

/// The ConfigMap after `cp`: the previous checkpoints (unreadable lines
/// dropped) plus `cp`, one per sequence number, the newest [`KEEP`]
/// oldest first; `resourceVersion` carried over so a concurrent write
/// conflicts instead of being lost.
pub fn configmap_body(
    namespace: &str,
    replica: &str,
    previous: Option<&ConfigMap>,
    cp: &Checkpoint,
    keep: usize,
) -> Result<ConfigMap, AuditError> {
    let mut cps: Vec<Checkpoint> = previous.map(|p| checkpoints_in(p).0).unwrap_or_default();
    cps.retain(|c| c.seq != cp.seq);
    cps.push(cp.clone());
    cps.sort_by_key(|c| c.seq);
    let drop = cps.len().saturating_sub(keep.max(1));
    cps.drain(..drop);
    let mut lines = String::new();
    for c in &cps {
        lines.push_str(&serde_json::to_string(c).map_err(|source| AuditError::Encode { source })?);
        lines.push('\n');
    }
    let latest = cps.last().unwrap_or(cp);
    let latest_line = serde_json::to_string(latest).map_err(|source| AuditError::Encode { source })?;
    Ok(ConfigMap {
        metadata: ObjectMeta {
            name: Some(configmap_name(replica)),
            namespace: Some(namespace.to_owned()),
            resource_version: previous.and_then(|p| p.metadata.resource_version.clone()),
            labels: Some(
                [
                    (LABEL.to_owned(), "true".to_owned()),
                    ("app.kubernetes.io/managed-by".to_owned(), "gitgate".to_owned()),
                ]
                .into(),
            ),
            annotations: Some([(REPLICA_ANNOTATION.to_owned(), replica.to_owned())].into()),
            ..ObjectMeta::default()
        },
        data: Some(
            [
                (DATA_CHECKPOINTS.to_owned(), lines),
                (DATA_LATEST.to_owned(), latest_line),
                (DATA_SEQ.to_owned(), latest.seq.to_string()),
                (DATA_HASH.to_owned(), latest.hash.clone()),
            ]
            .into(),
        ),
        ..ConfigMap::default()
    })
}

/// The Event that announces `cp`, about the ConfigMap holding it.
pub fn event_body(namespace: &str, replica: &str, cp: &Checkpoint, now: Timestamp) -> Event {
    let name = configmap_name(replica);
    Event {
        metadata: ObjectMeta {
            generate_name: Some(format!("{name}-")),
            namespace: Some(namespace.to_owned()),
            ..ObjectMeta::default()
        },
        involved_object: ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("ConfigMap".into()),
            name: Some(name),
            namespace: Some(namespace.to_owned()),
            ..ObjectReference::default()
        },
        reason: Some(EVENT_REASON.into()),
        message: Some(format!(
            "audit checkpoint of replica {replica}: records up to {} end in hash {} (signed at {})",
            cp.seq, cp.hash, cp.time
        )),
        type_: Some("Normal".into()),
        count: Some(1),
        first_timestamp: Some(Time(now)),
        last_timestamp: Some(Time(now)),
        source: Some(EventSource { component: Some("gitgate".into()), host: None }),
        reporting_component: Some("gitgate".into()),
        reporting_instance: Some(replica.to_owned()),
        ..Event::default()
    }
}

/// Sends every checkpoint of `log` to the cluster from now on (after
/// checking that the log does not end before the cluster's last
/// checkpoint: a cut tail is then recorded, as with the side file).
pub fn attach(log: &Arc<AuditLog>, client: kube::Client, namespace: &str) -> tokio::task::JoinHandle<()> {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Checkpoint>(64);
    let metrics = log.metrics().clone();
    let dropped = metrics.cluster_checkpoint_failures.clone();
    log.set_checkpoint_sink(Box::new(move |cp| {
        if tx.try_send(cp.clone()).is_err() {
            dropped.inc();
            tracing::warn!(
                seq = cp.seq,
                "the cluster checkpoint queue is full; this checkpoint goes to the side file only"
            );
        }
    }));
    let writer = Writer {
        configmaps: Api::namespaced(client.clone(), namespace),
        events: Api::namespaced(client, namespace),
        namespace: namespace.to_owned(),
        replica: log.replica().to_owned(),
        metrics,
    };
    let log = log.clone();
    tokio::spawn(async move {
        writer.check_tail(&log).await;
        drop(log);
        while let Some(cp) = rx.recv().await {
            writer.write(&cp).await;
        }
    })
}

struct Writer {
    configmaps: Api<ConfigMap>,
    events: Api<Event>,
    namespace: String,
    replica: String,
    metrics: AuditMetrics,
}

impl Writer {
    fn name(&self) -> String {
        configmap_name(&self.replica)
    }

    /// Records a `logRecovered` failure when the cluster holds a checkpoint
    /// past the log's head.
    async fn check_tail(&self, log: &Arc<AuditLog>) {
        let cm = match self.configmaps.get_opt(&self.name()).await {
            Ok(cm) => cm,
            Err(e) => {
                self.metrics.cluster_checkpoint_failures.inc();
                tracing::warn!(configmap = %self.name(), error = %crate::error_chain(&e), "failed to read the audit checkpoints in the cluster");
                return;
            }
        };
        let Some(cm) = cm else { return };
        let (cps, _) = checkpoints_in(&cm);
        let last = cps
            .iter()
            .filter(|c| c.replica == self.replica && c.verify(None).is_ok())
            .map(|c| c.seq)
            .max()
            .unwrap_or(0);
        let have = log.head().map_or(0, |h| h.seq);
        if last <= have {
            return;
        }
        tracing::error!(log_ends_at = have, checkpoint = last, configmap = %self.name(), "the audit log ends before the last checkpoint kept in the cluster: records are missing");
        log.metrics().recoveries.inc();
        let mut e = Entry::new(EventKind::LogRecovered, Outcome::Failed);
        e.reasons.push(format!(
            "the log ended at record {have} but a signed checkpoint in ConfigMap {}/{} covers records up to {last}: records {}..={last} are missing",
            self.namespace,
            self.name(),
            have + 1
        ));
        let log = log.clone();
        if let Ok(Err(err)) = tokio::task::spawn_blocking(move || log.append(&e)).await {
            tracing::error!(error = %crate::error_chain(&err), "failed to record the missing audit tail");
        }
    }

    async fn write(&self, cp: &Checkpoint) {
        match self.write_configmap(cp).await {
            Ok(()) => {
                self.metrics.cluster_checkpoints.inc();
            }
            Err(e) => {
                self.metrics.cluster_checkpoint_failures.inc();
                tracing::warn!(seq = cp.seq, error = %crate::error_chain(&e), "failed to write an audit checkpoint to the cluster");
                return;
            }
        }
        let event = event_body(&self.namespace, &self.replica, cp, Timestamp::now());
        if let Err(e) = self.events.create(&PostParams::default(), &event).await {
            self.metrics.cluster_checkpoint_failures.inc();
            tracing::warn!(seq = cp.seq, error = %e, "failed to emit the audit checkpoint Event");
        }
    }

    /// Read, merge, write; a conflicting write (409) is retried.
    async fn write_configmap(&self, cp: &Checkpoint) -> Result<(), AuditError> {
        let name = self.name();
        let err = |op: &str| {
            let op = format!("{op} ConfigMap {}/{name}", self.namespace);
            move |source| AuditError::Cluster { op, source }
        };
        let mut attempt = 0;
        loop {
            attempt += 1;
            let previous = self.configmaps.get_opt(&name).await.map_err(err("read"))?;
            let body = configmap_body(&self.namespace, &self.replica, previous.as_ref(), cp, KEEP)?;
            let pp = PostParams::default();
            let result = match previous {
                Some(_) => self.configmaps.replace(&name, &pp, &body).await.map_err(err("update")),
                None => self.configmaps.create(&pp, &body).await.map_err(err("create")),
            };
            match result {
                Err(AuditError::Cluster { source: kube::Error::Api(s), .. }) if s.code == 409 && attempt < 5 => {}
                other => return other.map(|_| ()),
            }
        }
    }
}

/// A client from `kubeconfig`, or inferred (in-cluster, `$KUBECONFIG`, `~/.kube/config`).
pub async fn client(kubeconfig: Option<&Path>) -> Result<kube::Client, AuditError> {
    let boxed = |e: Box<dyn std::error::Error + Send + Sync>| AuditError::ClusterConfig { source: e };
    let config = match kubeconfig {
        Some(path) => {
            let kc = kube::config::Kubeconfig::read_from(path).map_err(|e| boxed(Box::new(e)))?;
            kube::Config::from_custom_kubeconfig(kc, &Default::default()).await.map_err(|e| boxed(Box::new(e)))?
        }
        None => kube::Config::infer().await.map_err(|e| boxed(Box::new(e)))?,
    };
    kube::Client::try_from(config).map_err(|source| AuditError::Cluster { op: "build a client".into(), source })
}

/// The checkpoints of `replicas` kept in the ConfigMaps of `namespace`.
pub async fn fetch(
    client: kube::Client,
    namespace: &str,
    replicas: &BTreeSet<String>,
) -> Result<(Vec<Checkpoint>, Vec<(String, u64, String)>), AuditError> {
    let api: Api<ConfigMap> = Api::namespaced(client, namespace);
    let list = api
        .list(&ListParams::default().labels(SELECTOR))
        .await
        .map_err(|source| AuditError::Cluster { op: format!("list the audit ConfigMaps in {namespace}"), source })?;
    let mut cps = Vec::new();
    let mut bad = Vec::new();
    for cm in &list.items {
        let name = cm.metadata.name.clone().unwrap_or_default();
        let (good, unreadable) = checkpoints_in(cm);
        cps.extend(good.into_iter().filter(|c| replicas.contains(&c.replica)));
        bad.extend(unreadable.into_iter().map(|(line, e)| (name.clone(), line, e)));
    }
    Ok((cps, bad))
}

#[derive(serde::Deserialize)]
struct ReplicaField {
    replica: String,
}

/// The replicas that wrote `files`: of each file, its first record and
/// its last complete one (a log is one replica's chain; a renamed replica
/// shows at a file's ends).
pub fn replicas_of(files: &[PathBuf]) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for f in files {
        let Ok(file) = std::fs::File::open(f) else { continue };
        let mut first = Vec::new();
        if BufReader::new(&file).read_until(b'\n', &mut first).is_ok()
            && let Ok(r) = serde_json::from_slice::<ReplicaField>(first.trim_ascii_end())
        {
            out.insert(r.replica);
        }
        let len = file.metadata().map_or(0, |m| m.len());
        let window = len.min(64 * 1024);
        let mut tail = vec![0u8; usize::try_from(window).unwrap_or(0)];
        if file.read_exact_at(&mut tail, len - window).is_ok()
            && let Some(r) =
                tail.split(|b| *b == b'\n').rev().find_map(|l| serde_json::from_slice::<ReplicaField>(l).ok())
        {
            out.insert(r.replica);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::chain::Head;
    use crate::audit::checkpoint::Signer;

    fn signer() -> (Signer, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let (s, _) = Signer::load_or_generate(&dir.path().join("k.pk8")).unwrap();
        (s, dir)
    }

    fn cp(s: &Signer, seq: u64) -> Checkpoint {
        s.sign(&Head { seq, hash: format!("{seq:064x}") }, "2026-11-21T00:00:00.000000Z", "gitgate-0")
    }

    #[test]
    fn the_configmap_keeps_the_newest_checkpoints_and_round_trips() {
        let (s, _d) = signer();
        let mut cm: Option<ConfigMap> = None;
        for seq in [10, 20, 30, 20, 40] {
            let mut next = configmap_body("gitgate", "gitgate-0", cm.as_ref(), &cp(&s, seq), 3).unwrap();
            next.metadata.resource_version = Some(format!("{seq}"));
            // through JSON, as the apiserver stores it
            cm = Some(serde_json::from_value(serde_json::to_value(&next).unwrap()).unwrap());
        }
        let cm = cm.unwrap();
        let (cps, bad) = checkpoints_in(&cm);
        assert!(bad.is_empty(), "{bad:?}");
        assert_eq!(cps.iter().map(|c| c.seq).collect::<Vec<_>>(), [20, 30, 40]);
        for c in &cps {
            c.verify(None).unwrap();
        }
        let data = cm.data.as_ref().unwrap();
        assert_eq!(data[DATA_SEQ], "40");
        assert_eq!(data[DATA_HASH], format!("{:064x}", 40));
        assert_eq!(serde_json::from_str::<Checkpoint>(&data[DATA_LATEST]).unwrap(), cp(&s, 40));
        assert_eq!(cm.metadata.name.as_deref(), Some("gitgate-audit-gitgate-0"));
        assert_eq!(cm.metadata.labels.as_ref().unwrap()[LABEL], "true");
        // the next write carries the resourceVersion it read
        let next = configmap_body("gitgate", "gitgate-0", Some(&cm), &cp(&s, 50), KEEP).unwrap();
        assert_eq!(next.metadata.resource_version.as_deref(), Some("40"));
    }

    #[test]
    fn unreadable_lines_are_reported_and_dropped_on_the_next_write() {
        let (s, _d) = signer();
        let good = serde_json::to_string(&cp(&s, 5)).unwrap();
        let cm = ConfigMap {
            data: Some([(DATA_CHECKPOINTS.to_owned(), format!("{good}\n{{torn\n"))].into()),
            ..ConfigMap::default()
        };
        let (cps, bad) = checkpoints_in(&cm);
        assert_eq!(cps.len(), 1);
        assert_eq!(bad.first().map(|b| b.0), Some(2));
        let next = configmap_body("ns", "r", Some(&cm), &cp(&s, 6), KEEP).unwrap();
        let (cps, bad) = checkpoints_in(&next);
        assert!(bad.is_empty());
        assert_eq!(cps.iter().map(|c| c.seq).collect::<Vec<_>>(), [5, 6]);
    }

    #[test]
    fn names_are_valid_and_distinct() {
        assert_eq!(configmap_name("gitgate-7d9f-x2"), "gitgate-audit-gitgate-7d9f-x2");
        let a = configmap_name("Node_A");
        let b = configmap_name("node-a");
        assert_ne!(a, b);
        assert!(a.starts_with("gitgate-audit-node-a-"), "{a}");
        assert!(configmap_name("__").starts_with("gitgate-audit-replica-"));
        let long = configmap_name(&"x".repeat(400));
        assert!(long.len() <= 253, "{}", long.len());
        assert!(a.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.'));
    }

    #[test]
    fn the_event_names_the_configmap() {
        let (s, _d) = signer();
        let e = event_body("gitgate", "gitgate-0", &cp(&s, 7), Timestamp::UNIX_EPOCH);
        assert_eq!(e.reason.as_deref(), Some(EVENT_REASON));
        assert_eq!(e.involved_object.kind.as_deref(), Some("ConfigMap"));
        assert_eq!(e.involved_object.name.as_deref(), Some("gitgate-audit-gitgate-0"));
        assert!(e.message.unwrap().contains("records up to 7"));
    }
}
