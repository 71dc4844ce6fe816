//! Leader election with a `coordination.k8s.io/v1` Lease, as client-go's
//! `leaderelection` does it: one replica applies; every replica fetches Git
//! and serves admission.
//!
//! A round reads the Lease and writes it back with the `resourceVersion` it
//! read (optimistic concurrency): when two replicas race, the API server
//! accepts one write and answers the other 409 Conflict, which loses. A
//! Lease is free when it has no holder or its `renewTime +
//! leaseDurationSeconds` has passed; clocks are assumed roughly in step
//! (within a fraction of the lease duration), as with client-go's Leases.
//!
//! The leader steps down (publishes `false`) when it has not renewed for
//! [`LeaseConfig::renew_deadline`], before the Lease can look expired to the
//! others, so two replicas never both believe they lead.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, PostParams};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Where the Lease lives and who we are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseConfig {
    pub namespace: String,
    pub name: String,
    /// This replica's identity (unique among replicas: the pod name).
    pub identity: String,
    /// How long a Lease stays ours without renewal (`leaseDurationSeconds`).
    pub lease_duration: Duration,
    /// How often a round runs.
    pub renew_interval: Duration,
}

impl LeaseConfig {
    /// client-go's defaults: a 15 s lease, a round every 2 s.
    pub fn new(namespace: impl Into<String>, name: impl Into<String>, identity: impl Into<String>) -> Self {
        LeaseConfig {
            namespace: namespace.into(),
            name: name.into(),
            identity: identity.into(),
            lease_duration: Duration::from_secs(15),
            renew_interval: Duration::from_secs(2),
        }
    }

    /// How long a leader keeps leading without a successful renewal: one
    /// round short of the lease duration (at least half of it), so it stops
    /// before anyone else may take over.
    pub fn renew_deadline(&self) -> Duration {
        self.lease_duration.saturating_sub(self.renew_interval).max(self.lease_duration / 2)
    }

    fn lease_seconds(&self) -> i32 {
        i32::try_from(self.lease_duration.as_secs().max(1)).unwrap_or(i32::MAX)
    }
}

/// This replica's identity: `$POD_NAME`, else `$HOSTNAME`, else a
/// process-unique name.
pub fn default_identity() -> String {
    ["POD_NAME", "HOSTNAME"]
        .into_iter()
        .filter_map(|k| std::env::var(k).ok())
        .find(|v| !v.trim().is_empty())
        .unwrap_or_else(|| format!("gitgate-{}", std::process::id()))
}

#[derive(Debug, thiserror::Error)]
pub enum LeaderError {
    /// `op` is "read", "create" or "update".
    #[error("failed to {op} lease {namespace}/{name}")]
    Api {
        op: &'static str,
        namespace: String,
        name: String,
        #[source]
        source: kube::Error,
    },
}

/// Takes part in the election for one Lease.
#[derive(Clone)]
pub struct Elector {
    api: Api<Lease>,
    config: Arc<LeaseConfig>,
}

impl Elector {
    pub fn new(client: kube::Client, config: LeaseConfig) -> Self {
        let api = Api::namespaced(client, &config.namespace);
        Elector { api, config: Arc::new(config) }
    }

    pub fn config(&self) -> &LeaseConfig {
        &self.config
    }

    /// One round: create the Lease if absent; take it when it is free,
    /// expired or ours; renew it when ours. Ok(true) while we hold it;
    /// Ok(false) when someone else does or won a race (409 Conflict).
    pub async fn try_acquire_or_renew(&self) -> Result<bool, LeaderError> {
        self.round().await.map(|r| r.leading)
    }

    async fn round(&self) -> Result<Round, LeaderError> {
        let lost = Round { leading: false, lapses_in: None };
        let c = &self.config;
        let now = Timestamp::now();
        let Some(lease) = self.api.get_opt(&c.name).await.map_err(|e| self.error("read", e))? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(c.name.clone()),
                    namespace: Some(c.namespace.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(c.identity.clone()),
                    lease_duration_seconds: Some(c.lease_seconds()),
                    acquire_time: Some(MicroTime(now)),
                    renew_time: Some(MicroTime(now)),
                    lease_transitions: Some(0),
                    ..LeaseSpec::default()
                }),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(Round { leading: true, lapses_in: None }),
                // Another replica created it first.
                Err(e) if is_status(&e, 409) => Ok(lost),
                Err(e) => Err(self.error("create", e)),
            };
        };

        let old = lease.spec.clone().unwrap_or_default();
        let holder = old.holder_identity.as_deref().filter(|h| !h.is_empty());
        let ours = holder == Some(c.identity.as_str());
        if !ours && holder.is_some() && !expired(&old, now, c.lease_duration) {
            return Ok(Round { leading: false, lapses_in: lapses_in(&old, now, c.lease_duration) });
        }
        let mut spec = old.clone();
        spec.holder_identity = Some(c.identity.clone());
        spec.lease_duration_seconds = Some(c.lease_seconds());
        spec.renew_time = Some(MicroTime(now));
        if !ours {
            spec.acquire_time = Some(MicroTime(now));
            spec.lease_transitions = Some(old.lease_transitions.unwrap_or(0).saturating_add(1));
        }
        // `lease.metadata` carries the resourceVersion read: the write
        // fails with 409 if anyone wrote in between.
        let next = Lease { metadata: lease.metadata, spec: Some(spec) };
        match self.api.replace(&c.name, &PostParams::default(), &next).await {
            Ok(_) => {
                if !ours {
                    tracing::info!(lease = %c.name, identity = %c.identity, previous = holder.unwrap_or(""), "took the lease");
                }
                Ok(Round { leading: true, lapses_in: None })
            }
            Err(e) if is_status(&e, 409) => Ok(lost),
            Err(e) => Err(self.error("update", e)),
        }
    }

    /// On shutdown: if we hold the Lease, clear its holder (and set
    /// `leaseDurationSeconds: 1`) so a standby takes over at once.
    pub async fn release(&self) -> Result<(), LeaderError> {
        let c = &self.config;
        let Some(lease) = self.api.get_opt(&c.name).await.map_err(|e| self.error("read", e))? else {
            return Ok(());
        };
        let old = lease.spec.clone().unwrap_or_default();
        if old.holder_identity.as_deref() != Some(c.identity.as_str()) {
            return Ok(());
        }
        let now = Timestamp::now();
        let spec = LeaseSpec {
            holder_identity: Some(String::new()),
            lease_duration_seconds: Some(1),
            acquire_time: Some(MicroTime(now)),
            renew_time: Some(MicroTime(now)),
            ..old
        };
        let next = Lease { metadata: lease.metadata, spec: Some(spec) };
        match self.api.replace(&c.name, &PostParams::default(), &next).await {
            Ok(_) => {
                tracing::info!(lease = %c.name, identity = %c.identity, "released the lease");
                Ok(())
            }
            // Someone else wrote it since: it is no longer ours to release.
            Err(e) if is_status(&e, 409) || is_status(&e, 404) => Ok(()),
            Err(e) => Err(self.error("update", e)),
        }
    }

    /// Runs rounds every `renew_interval` and publishes leadership on the
    /// channel (true while leader). Stop it with [`LeaderHandle::shutdown`],
    /// which also releases the Lease.
    pub fn spawn(self) -> (watch::Receiver<bool>, LeaderHandle) {
        let (tx, rx) = watch::channel(false);
        let (stop_tx, stop_rx) = watch::channel(false);
        let task = tokio::spawn(self.clone().run(tx, stop_rx));
        (rx, LeaderHandle { stop: stop_tx, task, elector: self })
    }

    async fn run(self, leader: watch::Sender<bool>, mut stop: watch::Receiver<bool>) {
        let c = self.config.clone();
        let deadline = c.renew_deadline();
        let publish = |now: bool| {
            leader.send_if_modified(|v| {
                let changed = *v != now;
                *v = now;
                changed
            });
        };
        // When we last renewed, while leading.
        let mut renewed: Option<tokio::time::Instant> = None;
        loop {
            let started = tokio::time::Instant::now();
            // When another holder's Lease lapses: the next round runs then
            // rather than up to a renew interval later, so a replica taking
            // over from one that died (SIGKILL: nothing released) leads
            // within the lease duration.
            let mut lapses = None;
            match tokio::time::timeout(c.renew_interval, self.round()).await {
                Ok(Ok(Round { leading: true, .. })) => {
                    if renewed.is_none() {
                        tracing::info!(lease = %c.name, identity = %c.identity, "leading");
                    }
                    renewed = Some(started);
                    publish(true);
                }
                Ok(Ok(Round { leading: false, lapses_in })) => {
                    if renewed.take().is_some() {
                        tracing::warn!(lease = %c.name, identity = %c.identity, "lost the lease to another replica");
                    }
                    lapses = lapses_in.map(|d| started + d + LAPSE_MARGIN);
                    publish(false);
                }
                Ok(Err(e)) => {
                    tracing::warn!(error = %crate::error_chain(&e), "leader election round failed");
                }
                Err(_) => tracing::warn!(lease = %c.name, "leader election round timed out"),
            }
            let next = lapses.map_or(started + c.renew_interval, |at| at.min(started + c.renew_interval));
            let wake = renewed.map_or(next, |t| next.min(t + deadline));
            tokio::select! {
                _ = tokio::time::sleep_until(wake) => {}
                _ = stop.changed() => break,
            }
            if renewed.is_some_and(|t| t.elapsed() >= deadline) {
                tracing::warn!(lease = %c.name, ?deadline, "could not renew the lease in time: stepping down");
                renewed = None;
                publish(false);
            }
        }
        publish(false);
    }

    fn error(&self, op: &'static str, source: kube::Error) -> LeaderError {
        LeaderError::Api { op, namespace: self.config.namespace.clone(), name: self.config.name.clone(), source }
    }
}

/// The running election. Dropping it stops the rounds (without releasing
/// the Lease); [`LeaderHandle::shutdown`] stops them and releases it.
#[must_use = "dropping the handle stops the election"]
pub struct LeaderHandle {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
    elector: Elector,
}

impl LeaderHandle {
    /// Stops the rounds (leadership reads false from then on) and releases
    /// the Lease if we hold it.
    pub async fn shutdown(self) -> Result<(), LeaderError> {
        let _ = self.stop.send(true);
        let _ = self.task.await;
        self.elector.release().await
    }
}

/// What one election round found.
struct Round {
    leading: bool,
    /// How long until another holder's Lease lapses (by its renewTime).
    lapses_in: Option<Duration>,
}

/// How long after a Lease's end a replica tries to take it: past the end
/// by the clock's grain, so the round finds it expired.
const LAPSE_MARGIN: Duration = Duration::from_millis(20);

/// How long until a Lease nobody renews lapses (as [`expired`] counts it):
/// `None` when it has (or has no time at all).
fn lapses_in(spec: &LeaseSpec, now: Timestamp, fallback: Duration) -> Option<Duration> {
    let MicroTime(at) = spec.renew_time.as_ref().or(spec.acquire_time.as_ref())?;
    let secs = spec.lease_duration_seconds.map_or(fallback.as_secs() as i64, i64::from).max(0);
    let until = at.checked_add(SignedDuration::from_secs(secs)).ok()?;
    let left = until.duration_since(now);
    Duration::try_from(left).ok().filter(|d| !d.is_zero())
}

/// Whether a Lease nobody renewed has lapsed: `renewTime` (else
/// `acquireTime`) + `leaseDurationSeconds` (else ours) is before `now`. A
/// Lease with no time at all has lapsed.
fn expired(spec: &LeaseSpec, now: Timestamp, fallback: Duration) -> bool {
    let Some(MicroTime(at)) = spec.renew_time.as_ref().or(spec.acquire_time.as_ref()) else {
        return true;
    };
    let secs = spec.lease_duration_seconds.map_or(fallback.as_secs() as i64, i64::from).max(0);
    match at.checked_add(SignedDuration::from_secs(secs)) {
        Ok(until) => until < now,
        Err(_) => false,
    }
}

fn is_status(e: &kube::Error, code: u16) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == code)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(renewed_ago: i64, seconds: i32) -> LeaseSpec {
        let at = Timestamp::now().checked_sub(SignedDuration::from_secs(renewed_ago)).unwrap();
        LeaseSpec {
            holder_identity: Some("dead".into()),
            renew_time: Some(MicroTime(at)),
            lease_duration_seconds: Some(seconds),
            ..LeaseSpec::default()
        }
    }

    /// A standby retries when the dead leader's Lease lapses, not up to a
    /// renew interval after it (client-go's fixed retry period).
    #[test]
    fn a_standby_knows_when_a_lease_lapses() {
        let held = spec(5, 15);
        let now = Timestamp::now();
        let left = lapses_in(&held, now, Duration::from_secs(15)).unwrap();
        assert!(left > Duration::from_millis(9_900) && left <= Duration::from_secs(10), "{left:?}");
        assert!(!expired(&spec(5, 15), now, Duration::from_secs(15)));
        // lapsed: none left, and expired says so too
        assert_eq!(lapses_in(&spec(16, 15), now, Duration::from_secs(15)), None);
        assert!(expired(&spec(16, 15), now, Duration::from_secs(15)));
        // no time at all: lapsed
        assert_eq!(lapses_in(&LeaseSpec::default(), now, Duration::from_secs(15)), None);
    }
}
