//! Keeping the desired set current: fetch on an interval (default 30 s)
//! and at once when a webhook says so, render the new head, and publish it.
//! A commit that fails to render (a bad `gitgate.yaml`, a YAML bomb, an
//! object outside its project) is reported and the last good desired set
//! stays in force.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use gix::ObjectId;
use tokio::sync::{Notify, watch};

use crate::audit::SyncRecorder;
use crate::audit::record::{CommitRef, Entry as AuditEntry, EventKind, Outcome};
use crate::render::{DesiredSet, RenderError, Renderer};
use crate::source::signature::{self, SignatureError, Signers};
use crate::source::{GitSource, SourceError};

pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(30);

/// What one sync attempt can fail at.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error("commit {commit} does not render; keeping the last good commit")]
    Render {
        commit: String,
        #[source]
        source: RenderError,
    },
    #[error("commit {commit} is not synced: {required_by} requires signed commits")]
    Unsigned {
        commit: String,
        required_by: String,
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

/// How the tracker enforces signed commits (`serve --allowed-signers`,
/// `--gpg-keyring`, `--require-signed`).
#[derive(Clone, Debug, Default)]
pub struct Signing {
    pub signers: Signers,
    /// Every commit must verify, whatever `gitgate.yaml` says.
    pub require_all: bool,
    /// Most commits verified for one new head.
    pub limit: usize,
}

/// What `--require-signed` is reported as.
pub const REQUIRE_ALL: &str = "--require-signed";

impl Signing {
    pub fn new(signers: Signers, require_all: bool) -> Self {
        Signing { signers, require_all, limit: 10_000 }
    }
}

/// A head kept out of force because a commit from the commit in force to
/// it did not verify.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Refusal {
    /// The head that was refused.
    pub head: String,
    /// The commit that did not verify (the head or one below it).
    pub commit: String,
    /// Why it did not verify.
    pub reason: String,
    /// `--require-signed`, or the apps whose `requireSigned` applies.
    pub required_by: Vec<String>,
    /// The commit that stays in force ("" when none is).
    pub in_force: String,
}

impl Refusal {
    /// One line for statuses and logs.
    pub fn message(&self) -> String {
        let kept = if self.in_force.is_empty() {
            "no commit is in force".to_owned()
        } else {
            format!("{} stays in force", short(&self.in_force))
        };
        format!(
            "commit {} refused (required by {}): {}; {kept}",
            short(&self.head),
            self.required_by.join(", "),
            self.reason
        )
    }
}

fn short(id: &str) -> &str {
    id.get(..7).unwrap_or(id)
}

/// Counters of refused heads.
#[derive(Clone, Default)]
struct SigningMetrics {
    refused_total: prometheus_client::metrics::counter::Counter,
    refused: prometheus_client::metrics::gauge::Gauge,
}

/// Why the tracked revision cannot be read or rendered right now (the Git
/// server is unreachable or answers garbage, or the new head does not
/// render), while the last good commit stays in force.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SourceFault {
    /// `fetch` (the Git server) or `render` (the commit).
    pub stage: String,
    /// The error, credentials masked.
    pub error: String,
    /// When the first failure of this run of failures happened (RFC 3339).
    pub since: String,
    /// Failed rounds in a row.
    pub failures: u64,
    /// The commit that stays in force ("" when none is).
    pub in_force: String,
}

impl SourceFault {
    /// One line for statuses.
    pub fn message(&self) -> String {
        let kept = if self.in_force.is_empty() {
            "no commit is in force yet".to_owned()
        } else {
            format!("{} stays in force", short(&self.in_force))
        };
        format!("Git {} failing since {} ({}x): {}; {kept}", self.stage, self.since, self.failures, self.error)
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
struct StageLabel {
    stage: &'static str,
}

/// The tracker's health on metrics.
#[derive(Clone, Default)]
struct SourceMetrics {
    failures: prometheus_client::metrics::family::Family<StageLabel, prometheus_client::metrics::counter::Counter>,
    up: prometheus_client::metrics::gauge::Gauge,
}

/// The blocking side of the signature rule: what requires signatures, and
/// whether a range verifies.
#[derive(Clone)]
struct Gate {
    source: Arc<GitSource>,
    renderer: Arc<Renderer>,
    signing: Signing,
}

impl Gate {
    /// Who requires signatures for `new`: `--require-signed`, the apps
    /// with `requireSigned` in the config of the commit in force (at start:
    /// of the newest commit of `new`'s history that verifies), and those of
    /// `new` itself — which can add to the requirement, never remove it.
    fn required_by(&self, in_force: Option<&DesiredSet>, new: &DesiredSet) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        if self.signing.require_all {
            out.push(REQUIRE_ALL.into());
        }
        let mut add = |apps: &mut dyn Iterator<Item = String>| {
            for a in apps {
                let a = format!("app {a:?}");
                if !out.contains(&a) {
                    out.push(a);
                }
            }
        };
        match in_force {
            Some(set) => add(&mut set.apps().iter().filter(|a| a.require_signed).map(|a| a.name.clone())),
            None => {
                if let Some(anchor) = self.newest_verified(new.commit())
                    && anchor != new.commit()
                {
                    add(&mut self.requiring_at(anchor).into_iter())
                }
            }
        }
        add(&mut new.apps().iter().filter(|a| a.require_signed).map(|a| a.name.clone()));
        out
    }

    /// Apps with `requireSigned` in the config at `commit` (none when it
    /// does not load).
    fn requiring_at(&self, commit: ObjectId) -> Vec<String> {
        let opts = self.renderer.options();
        let Ok(reader) = crate::source::TreeReader::new(self.source.repo(), commit, opts.limits) else {
            return Vec::new();
        };
        match crate::render::config::load(&reader, &opts.config_path) {
            Ok(config) => config.apps.iter().filter(|a| a.require_signed).map(|a| a.name.clone()).collect(),
            Err(_) => Vec::new(),
        }
    }

    /// The newest commit of `head`'s history that verifies (at most
    /// `limit` commits looked at).
    fn newest_verified(&self, head: ObjectId) -> Option<ObjectId> {
        if !self.signing.signers.is_configured() {
            return None;
        }
        let repo = self.source.repo();
        let allowed = signature::Allowed::load(&self.signing.signers);
        let walk = repo.rev_walk([head]).all().ok()?;
        walk.take(self.signing.limit)
            .filter_map(Result::ok)
            .find(|info| signature::verify_loaded(&repo, info.id, &self.signing.signers, &allowed).is_ok())
            .map(|info| info.id)
    }

    /// Every commit reachable from `head` and not from `from` (all of
    /// history when `from` is None) must verify: merges, their parents and
    /// a rewritten history included.
    fn check(&self, from: Option<ObjectId>, head: ObjectId) -> Result<(), SignatureError> {
        signature::verify_range(&self.source.repo(), from, head, &self.signing.signers, self.signing.limit).map(|_| ())
    }

    /// Whether `from` is no longer in `head`'s history (a force-push).
    fn rewritten(&self, from: ObjectId, head: ObjectId) -> bool {
        let repo = self.source.repo();
        repo.rev_walk([from]).with_hidden([head]).all().is_ok_and(|mut w| w.next().is_some())
    }

    /// The commits of `commits` that verify (for `git.signed`).
    fn signed(&self, commits: impl IntoIterator<Item = ObjectId>) -> HashSet<ObjectId> {
        if !self.signing.signers.is_configured() {
            return HashSet::new();
        }
        let repo = self.source.repo();
        let allowed = signature::Allowed::load(&self.signing.signers);
        commits
            .into_iter()
            .collect::<HashSet<_>>()
            .into_iter()
            .filter(|c| signature::verify_loaded(&repo, *c, &self.signing.signers, &allowed).is_ok())
            .collect()
    }
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
    signing: Signing,
    refused: Arc<ArcSwapOption<Refusal>>,
    audit: Option<Arc<dyn SyncRecorder>>,
    /// When set, refusals are recorded only while it says so (the leader).
    record_when: std::sync::OnceLock<Arc<dyn Fn() -> bool + Send + Sync>>,
    /// The (head, commit) last recorded in the audit log.
    recorded: Mutex<Option<(String, String)>>,
    metrics: Option<SigningMetrics>,
    fault: Arc<ArcSwapOption<SourceFault>>,
    source_metrics: Option<SourceMetrics>,
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
            signing: Signing::new(Signers::default(), false),
            refused: Arc::new(ArcSwapOption::empty()),
            audit: None,
            record_when: std::sync::OnceLock::new(),
            recorded: Mutex::new(None),
            metrics: None,
            fault: Arc::new(ArcSwapOption::empty()),
            source_metrics: None,
        }
    }

    /// Who may sign commits, for apps with `requireSigned`.
    pub fn with_signers(mut self, signers: Signers) -> Self {
        self.signing.signers = signers;
        self
    }

    /// Who may sign, and whether every commit must be signed.
    pub fn with_signing(mut self, signing: Signing) -> Self {
        self.signing = signing;
        self
    }

    /// Records each refused head in the audit log (event
    /// `unsignedCommitRefused`, which also notifies).
    pub fn with_audit(mut self, audit: Arc<dyn SyncRecorder>) -> Self {
        self.audit = Some(audit);
        self
    }

    /// Records refusals in the audit log (and so notifies) only while `f`
    /// is true: the sync loop's leader, so one refusal is one record and
    /// one notification, not one per replica. Set once, before [`Tracker::run`].
    pub fn record_only_when(&self, f: Arc<dyn Fn() -> bool + Send + Sync>) {
        let _ = self.record_when.set(f);
    }

    /// `gitgate_unsigned_commits_refused_total` and `gitgate_commit_refused`.
    pub fn with_metrics(mut self, registry: &mut prometheus_client::registry::Registry) -> Self {
        let m = SigningMetrics::default();
        registry.register(
            "gitgate_unsigned_commits_refused",
            "New heads refused because a commit in their range did not verify",
            m.refused_total.clone(),
        );
        registry.register(
            "gitgate_commit_refused",
            "1 while the tracked head is refused for an unsigned commit and an older commit stays in force",
            m.refused.clone(),
        );
        self.metrics = Some(m);
        let s = SourceMetrics::default();
        registry.register(
            "gitgate_git_sync_failures",
            "Rounds of the Git tracker that failed, by stage (fetch: the Git server could not be read; render: the commit does not render); the last good commit stays in force",
            s.failures.clone(),
        );
        registry.register(
            "gitgate_git_source_up",
            "1 when the last fetch and render of the tracked revision succeeded, 0 while it fails and the last good commit stays in force",
            s.up.clone(),
        );
        self.source_metrics = Some(s);
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

    /// The head refused for a commit that does not verify, while it is.
    pub fn refused(&self) -> Option<Arc<Refusal>> {
        self.refused.load_full()
    }

    /// Why the Git server or the new head cannot be used, while it cannot.
    pub fn fault(&self) -> Option<Arc<SourceFault>> {
        self.fault.load_full()
    }

    /// A handle on [`Tracker::fault`] (for the status API).
    pub fn faults(&self) -> Arc<ArcSwapOption<SourceFault>> {
        self.fault.clone()
    }

    /// A handle on [`Tracker::refused`] (for the status API).
    pub fn refusals(&self) -> Arc<ArcSwapOption<Refusal>> {
        self.refused.clone()
    }

    /// The commits of a desired set that verify (blocking: one signature
    /// check per distinct commit): `git.signed` is true for the objects
    /// those commits introduced.
    pub fn signed_commits(&self, set: &DesiredSet) -> HashSet<ObjectId> {
        self.gate().signed(set.objects().into_iter().map(|(_, o)| o.commit))
    }

    fn gate(&self) -> Gate {
        Gate { source: self.source.clone(), renderer: self.renderer.clone(), signing: self.signing.clone() }
    }

    /// Fetch, resolve, render, publish. On a render error the current set
    /// is kept and the error returned.
    pub async fn sync_once(&self) -> Result<Synced, SyncError> {
        let result = self.sync_round().await;
        self.note(&result);
        result
    }

    /// Reports a round's outcome: [`Tracker::fault`], `last_error` and the
    /// metrics. A round that fetched and rendered (or found the head
    /// unchanged) clears the fault; an unsigned head is reported as a
    /// refusal instead.
    fn note(&self, result: &Result<Synced, SyncError>) {
        let stage = match result {
            Ok(_) => None,
            Err(SyncError::Source(_) | SyncError::Join(_)) => Some("fetch"),
            Err(SyncError::Render { .. }) => Some("render"),
            Err(SyncError::Unsigned { .. }) => None,
        };
        if let Some(m) = &self.source_metrics {
            if let Some(stage) = stage {
                m.failures.get_or_create(&StageLabel { stage }).inc();
            }
            m.up.set(i64::from(stage.is_none()));
        }
        match (stage, result) {
            (Some(stage), Err(e)) => {
                let previous = self.fault.load_full();
                let error = crate::error_chain(e);
                let fault = SourceFault {
                    stage: stage.to_owned(),
                    error,
                    since: previous.as_ref().map(|p| p.since.clone()).unwrap_or_else(|| {
                        crate::audit::record::format_rfc3339_micros(crate::audit::record::now_micros())
                    }),
                    failures: previous.as_ref().map_or(0, |p| p.failures) + 1,
                    in_force: self.current().map(|c| c.commit().to_string()).unwrap_or_default(),
                };
                self.fault.store(Some(Arc::new(fault)));
            }
            _ => {
                if let Some(old) = self.fault.swap(None) {
                    tracing::info!(stage = %old.stage, failures = old.failures, since = %old.since, "the Git source is back");
                }
            }
        }
        if let Ok(mut last) = self.last_error.lock() {
            *last = result.as_ref().err().map(|e| crate::error_chain(e));
        }
    }

    async fn sync_round(&self) -> Result<Synced, SyncError> {
        self.source.fetch_async().await?;
        let source = self.source.clone();
        let rev = self.rev.clone();
        let head = tokio::task::spawn_blocking(move || source.resolve(&rev)).await??;
        if self.current().is_some_and(|c| c.commit() == head) {
            self.clear_refusal();
            return Ok(Synced::Unchanged(head));
        }
        let rendered = self.render(head).await?;
        let rendered = match rendered {
            Ok(set) => self.check_signatures(set).await,
            Err(e) => Err(SyncError::Render { commit: head.to_string(), source: e }),
        };
        match rendered {
            Ok(set) => {
                self.publish(set);
                self.clear_refusal();
                Ok(Synced::Updated(head))
            }
            Err(err) => {
                if let SyncError::Unsigned { source, required_by, .. } = &err {
                    self.refuse(head, source, required_by).await;
                    if self.current().is_none() {
                        self.fall_back(head).await;
                    }
                }
                Err(err)
            }
        }
    }

    /// The Git source the tracker reads.
    pub fn source(&self) -> &Arc<GitSource> {
        &self.source
    }

    /// The commit `id` names — a full id or a unique prefix of at least 7
    /// hex digits, nothing else (no ref names, no revision syntax) — when
    /// it is the tracked head or in its history; otherwise why not.
    pub fn on_branch(&self, id: &str) -> Result<ObjectId, String> {
        let id = id.trim();
        if id.len() < 7 || id.len() > 40 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(format!(
                "{:?} is not a commit id: give 7 to 40 hex digits",
                id.chars().take(64).collect::<String>()
            ));
        }
        let head = self.current().map(|c| c.commit()).ok_or("no commit is rendered yet")?;
        let repo = self.source.repo();
        let commit = repo
            .rev_parse_single(id.to_ascii_lowercase().as_str())
            .map_err(|_| format!("commit {id} is unknown (or its prefix is ambiguous) in the tracked repository"))?
            .object()
            .ok()
            .and_then(|o| o.try_into_commit().ok())
            .map(|c| c.id)
            .ok_or_else(|| format!("{id} is not a commit"))?;
        let outside = repo.rev_walk([commit]).with_hidden([head]).all().map_or(true, |mut w| w.next().is_some());
        if outside {
            return Err(format!(
                "commit {id} is not on the tracked branch {} (head {})",
                self.rev,
                head.to_hex_with_len(7)
            ));
        }
        Ok(commit)
    }

    /// Whether `older` is in `newer`'s history and not `newer` itself.
    pub fn is_strict_ancestor(&self, older: ObjectId, newer: ObjectId) -> bool {
        older != newer
            && self.source.repo().rev_walk([older]).with_hidden([newer]).all().is_ok_and(|mut w| w.next().is_none())
    }

    /// Renders any commit of the repository (an approved one, the one in
    /// force at a restart), with the tracker's renderer and cache.
    pub async fn render_commit(&self, commit: ObjectId) -> Result<Arc<DesiredSet>, SyncError> {
        self.render(commit).await?.map_err(|source| SyncError::Render { commit: commit.to_string(), source })
    }

    async fn render(&self, commit: ObjectId) -> Result<Result<Arc<DesiredSet>, RenderError>, SyncError> {
        let source = self.source.clone();
        let renderer = self.renderer.clone();
        Ok(tokio::task::spawn_blocking(move || renderer.desired(&source.repo(), commit)).await?)
    }

    fn publish(&self, set: Arc<DesiredSet>) {
        self.current.store(Some(set.clone()));
        self.tx.send_replace(Some(set));
    }

    fn clear_refusal(&self) {
        if self.refused.swap(None).is_some()
            && let Some(m) = &self.metrics
        {
            m.refused.set(0);
        }
    }

    /// Reports a refused head: status, metric, log, audit (once per head
    /// and failing commit).
    async fn refuse(&self, head: ObjectId, why: &SignatureError, required_by: &str) {
        let in_force = self.current().map(|c| c.commit());
        let mut reason = why.to_string();
        if let Some(from) = in_force {
            let gate = self.gate();
            if tokio::task::spawn_blocking(move || gate.rewritten(from, head)).await.unwrap_or(false) {
                reason.push_str(&format!(
                    " (history was rewritten: {} is not an ancestor of {head}, so every new commit back to a shared ancestor must verify)",
                    from
                ));
            }
        }
        let refusal = Refusal {
            head: head.to_string(),
            commit: why.commit().unwrap_or_default().to_owned(),
            reason,
            required_by: required_by.split(", ").map(str::to_owned).collect(),
            in_force: in_force.map(|c| c.to_string()).unwrap_or_default(),
        };
        let previous = self.refused.load_full();
        let new = previous.as_deref().is_none_or(|p| p.head != refusal.head || p.commit != refusal.commit);
        tracing::warn!(head = %refusal.head, commit = %refusal.commit, "{}", refusal.message());
        if new && let Some(m) = &self.metrics {
            m.refused_total.inc();
            m.refused.set(1);
        }
        // Once per refused head and failing commit, by the replica that
        // records (it may become the leader after the first refusal).
        let key = (refusal.head.clone(), refusal.commit.clone());
        if let Some(audit) = &self.audit
            && self.record_when.get().is_none_or(|recording| recording())
            && let Ok(mut recorded) = self.recorded.lock()
            && recorded.as_ref() != Some(&key)
        {
            audit.record(&self.audit_entry(&refusal));
            *recorded = Some(key);
        }
        self.refused.store(Some(Arc::new(refusal)));
    }

    fn audit_entry(&self, r: &Refusal) -> AuditEntry {
        let repo = self.source.repo();
        let (author, subject) = ObjectId::from_hex(r.commit.as_bytes())
            .ok()
            .and_then(|id| repo.find_commit(id).ok())
            .map(|c| {
                let subject = c.message().map(|m| m.summary().to_string()).unwrap_or_default();
                let author = c.author().map(|a| format!("{} <{}>", a.name, a.email)).unwrap_or_default();
                (author, subject)
            })
            .unwrap_or_default();
        AuditEntry {
            event: EventKind::UnsignedCommitRefused,
            decision: Outcome::Refused,
            app: r
                .required_by
                .iter()
                .filter_map(|a| a.strip_prefix("app \"").and_then(|a| a.strip_suffix('"')))
                .collect::<Vec<_>>()
                .join(","),
            commit: Some(CommitRef { id: r.commit.clone(), author, subject }),
            reasons: vec![format!("head {} refused: {}", r.head, r.reason), r.message()],
            ..AuditEntry::default()
        }
    }

    /// At start, with the head refused: the newest commit of its history
    /// that verifies comes into force when its own history verifies too, so
    /// a restart does not leave nothing in force.
    async fn fall_back(&self, head: ObjectId) {
        let gate = self.gate();
        let Ok(Some(anchor)) = tokio::task::spawn_blocking(move || gate.newest_verified(head)).await else {
            return;
        };
        if anchor == head {
            return;
        }
        let Ok(Ok(set)) = self.render(anchor).await else { return };
        match self.check_signatures(set).await {
            Ok(set) => {
                tracing::warn!(commit = %anchor, "the newest verified commit below the refused head is in force");
                self.publish(set);
                if let Some(r) = self.refused.load_full() {
                    let mut r = (*r).clone();
                    r.in_force = anchor.to_string();
                    self.refused.store(Some(Arc::new(r)));
                }
            }
            Err(e) => {
                tracing::warn!(commit = %anchor, error = %crate::error_chain(&e), "no verified commit can be put in force")
            }
        }
    }

    /// When signatures are required (see [`Gate::required_by`]), every
    /// commit since the set in force (all of history for the first) must
    /// carry an allowed signature.
    async fn check_signatures(&self, set: Arc<DesiredSet>) -> Result<Arc<DesiredSet>, SyncError> {
        let current = self.current();
        let gate = self.gate();
        let new = set.clone();
        let checked = tokio::task::spawn_blocking(move || {
            let required_by = gate.required_by(current.as_deref(), &new);
            if required_by.is_empty() {
                return Ok(());
            }
            let from = current.map(|c| c.commit());
            gate.check(from, new.commit()).map_err(|e| (required_by.join(", "), e))
        })
        .await?;
        match checked {
            Ok(()) => Ok(set),
            Err((required_by, e)) => {
                Err(SyncError::Unsigned { commit: set.commit().to_string(), required_by, source: e })
            }
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
