//! The sync loop on the leader: a sync on every new commit, on taking the
//! lead and every resync interval, retried with backoff when it did not
//! finish; watch events (self-heal, the guard) in between.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::heal::{HealEvent, Watches};
use super::reconcile::Reconciler;
use crate::render::DesiredSet;

impl Reconciler {
    /// The loop: a sync on every new commit, on taking the lead and every
    /// resync interval; watch events in between. Runs only while leader.
    pub async fn run(
        self: Arc<Self>,
        mut desired: tokio::sync::watch::Receiver<Option<Arc<DesiredSet>>>,
        mut leader: tokio::sync::watch::Receiver<bool>,
    ) {
        // Small: a watch's initial list of 10,000 objects waits here for
        // self-heal rather than piling up whole objects in memory.
        let (tx, mut rx) = tokio::sync::mpsc::channel::<HealEvent>(64);
        let mut watches = Watches::new(tx);
        let mut resync = tokio::time::interval(self.config.resync_interval);
        resync.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut guard_tick = tokio::time::interval(Duration::from_secs(5));
        // A sync that could not finish (the apiserver away, Vault down
        // behind the secrets webhook, a wave that timed out) is retried
        // with backoff instead of waiting for the next commit or resync.
        let mut retry = RetryBackoff::new(self.config.resync_interval);
        loop {
            let is_leader = *leader.borrow();
            self.status.set_role(if is_leader { "leader" } else { "follower" });
            if !is_leader {
                watches.clear();
                tokio::select! {
                    r = leader.changed() => if r.is_err() { return },
                    r = desired.changed() => if r.is_err() { return },
                }
                continue;
            }
            let current = desired.borrow_and_update().clone();
            if let Some(d) = &current {
                if let Err(e) = self.guard_once().await {
                    tracing::error!(error = %crate::error_chain(&e), "failed to install gitgate's webhook configurations");
                }
                if self.sync_all(d).await {
                    retry.reset();
                } else {
                    let wait = retry.schedule();
                    tracing::warn!(retry_in = ?wait, "the sync did not finish; retrying with backoff");
                }
                watches.ensure(self.watch_set(d).await, self.guard.is_some().then(|| self.targets.default.clone()));
            } else {
                retry.reset();
            }
            loop {
                let retry_due = retry.due();
                let next = self.next_glass_expiry();
                let glass_due = next.is_some();
                let glass = next.unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
                tokio::select! {
                    r = desired.changed() => { if r.is_err() { return } break; }
                    r = leader.changed() => { if r.is_err() { return } break; }
                    _ = resync.tick() => break,
                    _ = tokio::time::sleep_until(retry_due.unwrap_or_else(Instant::now).into()), if retry_due.is_some() => break,
                    _ = guard_tick.tick() => {
                        if let Err(e) = self.guard_once().await {
                            tracing::error!(error = %crate::error_chain(&e), "failed to check gitgate's webhook configurations");
                        }
                    }
                    Some(ev) = rx.recv() => self.heal(current.as_ref(), ev).await,
                    _ = tokio::time::sleep_until(glass.into()), if glass_due => self.expire_glass(current.as_ref()).await,
                }
            }
        }
    }
}

/// When to retry a sync that did not finish: 1 s, doubling, at most the
/// resync interval (and at most 60 s).
struct RetryBackoff {
    next: Duration,
    max: Duration,
    at: Option<Instant>,
}

impl RetryBackoff {
    const FIRST: Duration = Duration::from_secs(1);

    fn new(resync: Duration) -> Self {
        let max = resync.min(Duration::from_secs(60)).max(Self::FIRST);
        RetryBackoff { next: Self::FIRST, max, at: None }
    }

    /// Sets the next retry and returns how far off it is.
    fn schedule(&mut self) -> Duration {
        let wait = self.next;
        self.at = Some(Instant::now() + wait);
        self.next = (self.next * 2).min(self.max);
        wait
    }

    /// When the pending retry is due, if one is.
    fn due(&self) -> Option<Instant> {
        self.at
    }

    fn reset(&mut self) {
        self.next = Self::FIRST;
        self.at = None;
    }
}

#[cfg(test)]
mod retry_tests {
    use super::*;

    #[test]
    fn a_sync_that_did_not_finish_is_retried_with_backoff_up_to_the_resync_interval() {
        let mut r = RetryBackoff::new(Duration::from_secs(10));
        assert_eq!(r.due(), None, "nothing to retry before a failure");
        let waits: Vec<u64> = (0..6).map(|_| r.schedule().as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 10, 10], "doubling, capped at the resync interval");
        assert!(r.due().is_some_and(|at| at > Instant::now()), "the next retry is pending");
        r.reset();
        assert_eq!((r.due(), r.schedule().as_secs()), (None, 1), "a finished sync starts over");
        assert_eq!(RetryBackoff::new(Duration::from_secs(3600)).max, Duration::from_secs(60), "at most a minute");
    }
}
