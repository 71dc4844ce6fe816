//! The promoter: turns each rendered head, and each change of the
//! promotion state, into the set in force ([`DesiredSet::compose`]) that
//! the admission gate and the sync loop read.
//!
//! The checklist, per round:
//! 1. read the head, the state (approvals, pauses) and the clock;
//! 2. per app, gather its facts (content at the head, in force, approved;
//!    pause; windows) and [`decide`];
//! 3. compose the set in force and publish it when anything changed;
//! 4. sleep until the head or the state changes, or a pause or a window
//!    ends.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use gix::ObjectId;
use tokio::sync::watch;

use super::state::{GateState, StateStore};
use super::{AppFacts, Approved, Decision, PromotionError, Take, WindowState, decide};
use crate::audit::SyncRecorder;
use crate::audit::record::{EventKind, now_micros};
use crate::desired::tracker::Tracker;
use crate::render::DesiredSet;
use crate::render::desired::{AppGate, Held};
use crate::sync::audit::AuditRecord;

/// How many rendered commits (approved ones, the one in force at a
/// restart) are kept.
const RENDER_CACHE: usize = 8;

type Slot = watch::Sender<Option<Arc<DesiredSet>>>;

/// Composes the set in force; see the module docs.
pub struct Promoter {
    tracker: Arc<Tracker>,
    store: StateStore,
    out: Slot,
    renders: Mutex<Vec<(ObjectId, Arc<DesiredSet>)>>,
    /// Each app's commit in force at start (its inventory's), until the
    /// first composition.
    start: Mutex<Option<BTreeMap<String, String>>>,
    audit: Option<Arc<dyn SyncRecorder>>,
    /// Whether this replica records (the leader does).
    records: Arc<dyn Fn() -> bool + Send + Sync>,
    /// The next instant a sync window opens or closes (µs), found by the
    /// round in progress.
    window_due: Mutex<Option<i64>>,
    /// The approvers' `allowed_signers` for approval tags.
    tag_signers: Option<crate::source::signature::Signers>,
    /// Approval tags already refused (logged once each).
    refused_tags: Mutex<std::collections::HashSet<String>>,
}

/// Publishes the tracker's sets as they are (no cluster: no gates).
pub fn passthrough(tracker: &Tracker) -> watch::Receiver<Option<Arc<DesiredSet>>> {
    tracker.subscribe()
}

impl Promoter {
    /// `start_commits`: each app's commit in force when gitgate starts (its
    /// inventory's), read once. `tag_signers`: the approvers' keys, when a
    /// signed tag `gitgate/approve/<app>/<commit>` may approve.
    pub fn new(
        tracker: Arc<Tracker>,
        store: StateStore,
        start_commits: BTreeMap<String, String>,
        audit: Option<Arc<dyn SyncRecorder>>,
        records: Arc<dyn Fn() -> bool + Send + Sync>,
        tag_signers: Option<crate::source::signature::Signers>,
    ) -> Arc<Promoter> {
        let (out, _) = watch::channel(None);
        Arc::new(Promoter {
            tracker,
            store,
            out,
            renders: Mutex::new(Vec::new()),
            start: Mutex::new(Some(start_commits)),
            audit,
            records,
            window_due: Mutex::new(None),
            tag_signers,
            refused_tags: Mutex::new(Default::default()),
        })
    }

    /// The set in force, as it changes.
    pub fn subscribe(&self) -> watch::Receiver<Option<Arc<DesiredSet>>> {
        self.out.subscribe()
    }

    /// The set in force now.
    pub fn current(&self) -> Option<Arc<DesiredSet>> {
        self.out.borrow().clone()
    }

    pub fn store(&self) -> &StateStore {
        &self.store
    }

    pub fn tracker(&self) -> &Arc<Tracker> {
        &self.tracker
    }

    /// Composes on every new head and state change, and when a pause or a
    /// window ends. Publishes nothing until the state was read once: a
    /// pause or an approval must never be missed at a restart.
    pub async fn run(self: Arc<Self>) {
        let _follow = AbortOnDrop(self.store.follow());
        let mut wait = Duration::from_millis(200);
        while let Err(e) = self.store.load().await {
            tracing::warn!(error = %crate::error_chain(&e), retry_in = ?wait, "failed to read the promotion state; nothing is put in force until it is read");
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(Duration::from_secs(5));
        }
        let mut heads = self.tracker.subscribe();
        let mut states = self.store.subscribe();
        let mut tags = tokio::time::interval(Duration::from_secs(1));
        tags.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let head = heads.borrow_and_update().clone();
            let state = states.borrow_and_update().clone();
            let mut next = None;
            if let Some(head) = head {
                next = self.round(&head, &state).await;
            }
            let sleep = next.map_or(Duration::from_secs(3600), |at: i64| {
                Duration::from_micros(u64::try_from(at.saturating_sub(now_micros())).unwrap_or(0))
                    + Duration::from_millis(5)
            });
            let deadline = tokio::time::Instant::now() + sleep;
            loop {
                tokio::select! {
                    r = heads.changed() => if r.is_err() { return } else { break },
                    r = states.changed() => if r.is_err() { return } else { break },
                    _ = tokio::time::sleep_until(deadline) => break,
                    _ = tags.tick(), if self.tag_signers.is_some() => self.check_tags().await,
                }
            }
        }
    }

    /// One round: compose and publish. Returns when the next round is due
    /// by the clock (µs since the epoch).
    pub async fn round(&self, head: &Arc<DesiredSet>, state: &GateState) -> Option<i64> {
        let now = now_micros();
        let prev = self.current();
        let mut names: Vec<String> = head.apps().iter().map(|a| a.name.clone()).collect();
        if let Some(p) = &prev {
            names.extend(p.apps().iter().map(|a| a.name.clone()).filter(|n| head.app(n).is_none()));
        }
        let start = self.start.lock().unwrap_or_else(|e| e.into_inner()).clone();
        *self.window_due.lock().unwrap_or_else(|e| e.into_inner()) = None;
        let mut gated = Vec::new();
        for name in &names {
            match self.app_round(name, head, prev.as_ref(), start.as_ref(), state, now).await {
                Ok(Some(g)) => gated.push(g),
                Ok(None) => {}
                Err(e) => {
                    // Not knowing what is in force is no reason to let the
                    // head in: the app keeps nothing new in force.
                    tracing::warn!(app = %name, error = %crate::error_chain(&e), "failed to compose the app's commit in force; it waits");
                    let held = Held {
                        kind: super::HeldKind::WaitingApproval,
                        waiting: head.commit(),
                        message: format!("waits: {}", crate::error_chain(&e)),
                    };
                    let gate = AppGate {
                        in_force: None,
                        config: head.config_arc().clone(),
                        held: Some(held),
                        self_heal: false,
                    };
                    gated.push((name.clone(), prev.clone(), gate));
                }
            }
        }
        let composed = if gated.is_empty() { head.clone() } else { Arc::new(DesiredSet::compose(head, gated)) };
        // Readers (a provenance snapshot, a sync) only hear of a change.
        if prev.as_ref().is_none_or(|p| summary(p) != summary(&composed)) {
            self.announce(prev.as_deref(), &composed);
            self.out.send_replace(Some(composed));
        }
        *self.start.lock().unwrap_or_else(|e| e.into_inner()) = None;
        let window = *self.window_due.lock().unwrap_or_else(|e| e.into_inner());
        [state.next_pause_end(now), window].into_iter().flatten().min()
    }

    /// One app: its facts, the decision, and what to compose it from
    /// (`None`: it follows the head).
    async fn app_round(
        &self,
        name: &str,
        head: &Arc<DesiredSet>,
        prev: Option<&Arc<DesiredSet>>,
        start: Option<&BTreeMap<String, String>>,
        state: &GateState,
        now: i64,
    ) -> Result<Option<(String, Option<Arc<DesiredSet>>, AppGate)>, PromotionError> {
        let head_app = head.app(name);
        let (force_set, force_commit) = self.in_force(name, head, prev, start).await;
        let force_config =
            force_set.as_ref().map(|s| s.gate(name).map_or_else(|| s.config_arc().clone(), |g| g.config.clone()));
        let force_app = force_set.as_ref().and_then(|s| s.app(name));
        let approval_required = head_app.is_some_and(|a| head.config().approval_required(a))
            || force_app.zip(force_config.as_ref()).is_some_and(|(a, c)| c.approval_required(a));
        let paused = state.active_pause(name, now);
        // The windows of the config in force and of the head's: a commit
        // that drops a deny window still waits for it.
        let mut windows = head_app.map(|a| head.config().windows_for(a)).unwrap_or_default();
        if let Some((a, c)) = force_app.zip(force_config.as_ref()) {
            windows.extend(c.windows_for(a));
        }
        let window = self.window(&windows, name, now);
        if !approval_required && paused.is_none() && window == WindowState::open() {
            return Ok(None);
        }
        let head_digest = head.app_digest(name);
        let in_force_digest = force_set.as_ref().filter(|_| force_commit.is_some()).and_then(|s| s.app_digest(name));
        let (approved, approved_set) = match state.approvals.get(name).filter(|_| approval_required) {
            Some(a) => self.approved(name, head, a).await,
            None => (None, None),
        };
        let facts = AppFacts {
            head: head.commit(),
            head_digest,
            in_force_digest,
            approval_required,
            approved,
            paused: paused.map(|p| format!("by {} until {}: {}", p.by, p.until(), p.reason)),
            window,
        };
        let d: Decision = decide(&facts);
        if d.is_free() {
            return Ok(None);
        }
        let (from, in_force, config) = match d.take {
            Take::Head => (Some(head.clone()), Some(head.commit()), head.config_arc().clone()),
            Take::Keep => (force_set.clone(), force_commit, force_config.unwrap_or_else(|| head.config_arc().clone())),
            Take::Approved(c) => {
                let set = approved_set.unwrap_or_else(|| head.clone());
                let config = set.config_arc().clone();
                (Some(set), Some(c), config)
            }
        };
        let waiting = if d.waits { head.commit() } else { in_force.unwrap_or(head.commit()) };
        let held = d.held.map(|(kind, message)| Held { kind, waiting, message });
        Ok(Some((name.to_string(), from, AppGate { in_force, config, held, self_heal: d.self_heal })))
    }

    /// The set in force for an app, and its commit: the last composition's,
    /// or at start the inventory's commit (rendered; nothing is in force
    /// when it does not render).
    async fn in_force(
        &self,
        name: &str,
        head: &Arc<DesiredSet>,
        prev: Option<&Arc<DesiredSet>>,
        start: Option<&BTreeMap<String, String>>,
    ) -> (Option<Arc<DesiredSet>>, Option<ObjectId>) {
        if let Some(p) = prev {
            return (p.app(name).is_some().then(|| p.clone()), p.app_commit(name));
        }
        match start.and_then(|s| s.get(name)).and_then(|c| ObjectId::from_hex(c.as_bytes()).ok()) {
            Some(c) if c == head.commit() => (Some(head.clone()), Some(c)),
            Some(c) => match self.render(name, c).await {
                Ok(set) => (Some(set), Some(c)),
                Err(e) => {
                    tracing::warn!(app = %name, commit = %c, error = %crate::error_chain(&e), "the commit in force at start does not render; nothing of the app is in force");
                    (None, None)
                }
            },
            None => (None, None),
        }
    }

    /// Whether an app's sync windows let a change in now; the next instant
    /// one opens or closes is kept for the round.
    fn window(&self, windows: &[crate::render::window::SyncWindow], name: &str, now: i64) -> WindowState {
        if windows.is_empty() {
            return WindowState::open();
        }
        let at = jiff::Timestamp::from_microsecond(now).unwrap_or_else(|_| jiff::Timestamp::now());
        let v = crate::render::window::evaluate(windows, name, at);
        if let Some(change) = v.next_change {
            let micros = change.as_microsecond();
            let mut due = self.window_due.lock().unwrap_or_else(|e| e.into_inner());
            *due = Some(due.map_or(micros, |d: i64| d.min(micros)));
        }
        WindowState {
            sync_open: v.sync_open,
            self_heal_open: v.self_heal_open,
            manual_allowed: v.manual_allowed,
            reason: v.reason,
        }
    }

    /// An app's approval: the approved commit and its content's digest, and
    /// its rendered set when it is not the head (`None` when it does not
    /// render: the approval is not used).
    async fn approved(
        &self,
        name: &str,
        head: &Arc<DesiredSet>,
        a: &super::state::Approval,
    ) -> (Option<Approved>, Option<Arc<DesiredSet>>) {
        match ObjectId::from_hex(a.commit.as_bytes()) {
            Ok(c) if c == head.commit() => {
                (Some(Approved { commit: c, digest: head.app_digest(name), override_window: a.override_window }), None)
            }
            Ok(c) => match self.render(name, c).await {
                Ok(set) => {
                    let digest = set.app_digest(name);
                    (Some(Approved { commit: c, digest, override_window: a.override_window }), Some(set))
                }
                Err(e) => {
                    tracing::warn!(app = %name, commit = %c, error = %crate::error_chain(&e), "the approved commit does not render; the approval is not used");
                    (None, None)
                }
            },
            Err(_) => (None, None),
        }
    }

    /// Renders a commit (cached).
    pub async fn render(&self, app: &str, commit: ObjectId) -> Result<Arc<DesiredSet>, PromotionError> {
        if let Some(hit) = self.renders.lock().unwrap_or_else(|e| e.into_inner()).iter().find(|(c, _)| *c == commit) {
            return Ok(hit.1.clone());
        }
        let set = self.tracker.render_commit(commit).await.map_err(|e| PromotionError::Render {
            app: app.to_string(),
            commit,
            source: Box::new(e),
        })?;
        let mut cache = self.renders.lock().unwrap_or_else(|e| e.into_inner());
        cache.push((commit, set.clone()));
        if cache.len() > RENDER_CACHE {
            cache.remove(0);
        }
        Ok(set)
    }

    /// Logs, and (on the leader) records, each commit that starts waiting.
    fn announce(&self, prev: Option<&DesiredSet>, now: &DesiredSet) {
        for (app, gate) in now.gates() {
            let Some(held) = gate.held.as_ref().filter(|h| Some(h.waiting) != gate.in_force) else { continue };
            let before = prev.and_then(|p| p.held(app)).map(|h| (h.kind, h.waiting));
            if before == Some((held.kind, held.waiting)) {
                continue;
            }
            tracing::info!(app = %app, commit = %held.waiting, kind = ?held.kind, "{}", held.message);
            if let Some(audit) = self.audit.as_ref().filter(|_| (self.records)()) {
                audit.record(
                    &AuditRecord::new(EventKind::PromotionWaiting, app)
                        .commit(held.waiting.to_string())
                        .reasons(vec![held.message.clone()])
                        .entry(),
                );
            }
        }
    }
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Promoter {
    /// On the leader: each commit waiting for approval whose approval tag
    /// is signed by an approver is approved, as `gitgate approve` would.
    async fn check_tags(&self) {
        let Some(signers) = self.tag_signers.clone() else { return };
        if !(self.records)() {
            return;
        }
        let Some(now) = self.current() else { return };
        let state = self.store.current();
        for (app, commit) in waiting_approval(&now, &state) {
            let name = super::approval_tag(&app, &commit);
            let Some(signer) = self.verified_tag(&name, commit, &signers).await else { continue };
            self.approve_by_tag(&now, &app, commit, &signer).await;
        }
    }

    /// The signer of approval tag `name` when it is signed by an approver
    /// and points at `commit`. Which tag object the name points at is
    /// remembered: a refused one is not checked (or logged) again, a new
    /// one under the name is.
    async fn verified_tag(
        &self,
        name: &str,
        commit: ObjectId,
        signers: &crate::source::signature::Signers,
    ) -> Option<String> {
        let repo = self.tracker.source().repo();
        let tag = name.to_string();
        let key = tokio::task::spawn_blocking(move || {
            let r = repo.try_find_reference(tag.as_str()).ok().flatten()?;
            Some(format!("{tag}@{}", r.target().try_id().map(|i| i.to_string()).unwrap_or_default()))
        })
        .await
        .ok()
        .flatten()?;
        if self.refused_tags.lock().unwrap_or_else(|e| e.into_inner()).contains(&key) {
            return None;
        }
        let (repo, tag, signers) = (self.tracker.source().repo(), name.to_string(), signers.clone());
        let verified =
            tokio::task::spawn_blocking(move || crate::source::signature::verify_tag(&repo, &tag, &signers)).await;
        let refuse = || {
            self.refused_tags.lock().unwrap_or_else(|e| e.into_inner()).insert(key.clone());
        };
        match verified {
            Ok(Ok((target, v))) if target == commit => Some(v.signer),
            Ok(Ok((target, _))) => {
                tracing::warn!(tag = %name, points_at = %target, "an approval tag points at another commit; it approves nothing");
                refuse();
                None
            }
            Ok(Err(e)) => {
                tracing::warn!(tag = %name, error = %e, "an approval tag does not verify; it approves nothing");
                refuse();
                None
            }
            Err(_) => None,
        }
    }

    /// Records the approval of `commit` by a signed tag (as `gitgate
    /// approve` would), and audits it; a failed write is retried at the
    /// next check.
    async fn approve_by_tag(&self, now: &DesiredSet, app: &str, commit: ObjectId, signer: &str) {
        let in_force = now.app_commit(app).and_then(|_| now.app_digest(app));
        let head = self.tracker.current();
        let to = head.as_ref().filter(|h| h.commit() == commit).and_then(|h| h.app_digest(app));
        let by = format!("{signer} (signed tag gitgate/approve/{app}/{})", commit.to_hex_with_len(7));
        let approval = super::state::Approval {
            commit: commit.to_string(),
            by: by.clone(),
            at: crate::audit::record::format_rfc3339_micros(now_micros()),
            change: super::change_digest(in_force, to),
            override_window: false,
        };
        if let Err(e) = self.store.put_approval(app, &approval).await {
            tracing::warn!(app = %app, error = %crate::error_chain(&e), "failed to record a tag's approval; retrying");
            return;
        }
        tracing::info!(app = %app, commit = %commit, signer = %signer, "approved by a signed tag");
        if let Some(audit) = &self.audit {
            audit.record(
                &AuditRecord::new(EventKind::Approved, app)
                    .user(signer)
                    .commit(commit.to_string())
                    .reasons(vec![
                        format!("{by} approved {} for app {app}", commit.to_hex_with_len(7)),
                        format!("change {}", approval.change),
                    ])
                    .entry(),
            );
        }
    }
}

/// The commits waiting for approval, by app, that no approval names yet.
fn waiting_approval(now: &DesiredSet, state: &GateState) -> Vec<(String, ObjectId)> {
    now.gates()
        .iter()
        .filter_map(|(app, g)| {
            let h = g.held.as_ref()?;
            (h.kind == super::HeldKind::WaitingApproval && Some(h.waiting) != g.in_force)
                .then(|| (app.clone(), h.waiting))
        })
        .filter(|(app, c)| {
            state.approvals.get(app).is_none_or(|a| ObjectId::from_hex(a.commit.as_bytes()).ok() != Some(*c))
        })
        .collect()
}

/// One gate as readers see it: in force, what waits and why, self-heal.
type GateSummary = (Option<ObjectId>, Option<(super::HeldKind, ObjectId)>, bool);

/// What readers of the set care about: the head and each gate.
fn summary(set: &DesiredSet) -> (ObjectId, BTreeMap<String, GateSummary>) {
    let gates = set
        .gates()
        .iter()
        .map(|(n, g)| (n.clone(), (g.in_force, g.held.as_ref().map(|h| (h.kind, h.waiting)), g.self_heal)))
        .collect();
    (set.commit(), gates)
}

/// Each app's commit in its inventory (what was in force when gitgate
/// stopped).
pub fn start_commits(inventories: &BTreeMap<String, crate::sync::inventory::Inventory>) -> BTreeMap<String, String> {
    inventories.iter().map(|(app, inv)| (app.clone(), inv.commit.clone())).collect()
}
