//! Promotion gates: which commit is in force for each app.
//!
//! Between the Git tracker (a new head rendered) and its two readers (the
//! admission gate's provenance snapshot and the sync loop) sits one step:
//! the [`Promoter`] composes the set in force. An app is at the head
//! unless a gate keeps it at the commit in force for it:
//!
//! - **approval** (`syncPolicy.approval: required`, on the app or its
//!   project): a commit that changes the app waits until an approver — a
//!   member of a group the project's `roles` give `sync` — approves that
//!   exact commit (`gitgate approve`); the approval pins the app to it;
//! - **pause** (`gitgate pause --for 30m --reason …`): new commits wait and
//!   self-heal stops, until it is resumed or its deadline passes;
//! - **sync windows** (`projects[].syncWindows`, Argo CD's semantics):
//!   outside an allow window or inside a deny window commits wait (and
//!   self-heal, unless `selfHealOutsideWindow`).
//!
//! Where a team prefers approvals in Git, a tag
//! `gitgate/approve/<app>/<full commit id>` signed by a key in the
//! approvers' `allowed_signers` (`--approval-signers`) approves the same
//! way (the leader checks for one while a commit waits).
//!
//! The admission gate enforces the composed set, so a hand edit that copies
//! a waiting commit's content is refused like any other: approving is the
//! only way in. Approvals and pauses live in the cluster ([`state`]), so
//! every replica composes alike and a failover forgets nothing; a waiting
//! or paused app costs no apiserver write.
//!
//! [`decide`] is pure: one app's facts in, what is in force out.
//!
//! Owns: deciding the commit in force per app ([`decide`]), approvals and
//! pauses in the cluster ([`state`]), the composing [`Promoter`], its start
//! in `serve` ([`start`]) and its HTTP actions ([`api`]).
//!
//! Must never import `admission` or `provenance` (the gate reads the set
//! this module publishes, not the other way round), nor `sync` beyond the
//! recorded inventories (the loop reads the set it publishes too).

pub mod api;
pub mod promoter;
pub mod start;
pub mod state;

use gix::ObjectId;

pub use self::promoter::Promoter;
pub use crate::render::desired::{Held, HeldKind};

#[derive(Debug, thiserror::Error)]
pub enum PromotionError {
    #[error("failed to {op} the promotion state (ConfigMap gitgate-promotion in namespace {namespace})")]
    State {
        op: &'static str,
        namespace: String,
        #[source]
        source: kube::Error,
    },
    #[error("failed to encode the promotion state")]
    Encode(#[source] serde_json::Error),
    #[error("failed to render commit {commit} for app {app}")]
    Render {
        app: String,
        commit: ObjectId,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// `sha256:` of a change approved: the app's content in force, then the
/// content approved (what an approval record names).
pub fn change_digest(from: Option<[u8; 32]>, to: Option<[u8; 32]>) -> String {
    use sha2::Digest as _;
    let mut h = sha2::Sha256::new();
    h.update(from.unwrap_or([0; 32]));
    h.update(to.unwrap_or([0; 32]));
    crate::render::object::digest_string(&h.finalize().into())
}

/// The tag that approves `commit` for `app` when signed by an approver's
/// key (`--approval-signers`).
pub fn approval_tag(app: &str, commit: &ObjectId) -> String {
    format!("refs/tags/gitgate/approve/{app}/{commit}")
}

/// Whether sync windows let a change in now, for one app.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WindowState {
    pub sync_open: bool,
    pub self_heal_open: bool,
    /// A closed window still lets an approved (manual) sync through.
    pub manual_allowed: bool,
    /// Why it is closed and when it opens (for the status).
    pub reason: String,
}

impl WindowState {
    /// No window applies.
    pub fn open() -> WindowState {
        WindowState { sync_open: true, self_heal_open: true, manual_allowed: true, reason: String::new() }
    }
}

/// An approval, as [`decide`] sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Approved {
    pub commit: ObjectId,
    /// The app's content at that commit (`None`: the commit does not have it).
    pub digest: Option<[u8; 32]>,
    pub override_window: bool,
}

/// One app's facts.
#[derive(Clone, Debug)]
pub struct AppFacts {
    pub head: ObjectId,
    /// The app's content at the head (`None`: the head dropped the app).
    pub head_digest: Option<[u8; 32]>,
    /// The content in force (`None`: nothing of the app is).
    pub in_force_digest: Option<[u8; 32]>,
    /// Required by the config in force or by the head's: a commit that
    /// drops the requirement still waits for an approver.
    pub approval_required: bool,
    pub approved: Option<Approved>,
    /// The running pause: who, why, until when.
    pub paused: Option<String>,
    pub window: WindowState,
}

/// Which content the app gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Take {
    /// The tracked head's.
    Head,
    /// What is in force stays.
    Keep,
    /// The approved commit's (older than the head: a rollback or a pin).
    Approved(ObjectId),
}

/// What [`decide`] says for one app.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    pub take: Take,
    /// The gate that holds the app, and what it says.
    pub held: Option<(HeldKind, String)>,
    /// The head changes the app and waits (a pause holds an app with
    /// nothing waiting too).
    pub waits: bool,
    pub self_heal: bool,
}

impl Decision {
    /// Nothing gates the app: it follows the head, as without gates.
    pub fn is_free(&self) -> bool {
        self.take == Take::Head && self.held.is_none() && self.self_heal
    }
}

/// The promotion rule for one app (pure).
///
/// 1. A running pause keeps what is in force and stops self-heal.
/// 2. With approval required, the approved commit is the target (the head
///    when its content is the approved content); without an approval what
///    is in force stays.
/// 3. A closed sync window keeps what is in force, unless the target was
///    approved and the window allows manual syncs (or an admin overrode it).
pub fn decide(f: &AppFacts) -> Decision {
    let short = |id: &ObjectId| id.to_hex_with_len(7).to_string();
    let changes_force = |digest: Option<[u8; 32]>| digest != f.in_force_digest;
    let head_changes = changes_force(f.head_digest);
    if let Some(why) = &f.paused {
        let message =
            if head_changes { format!("paused {why}; {} waits", short(&f.head)) } else { format!("paused {why}") };
        return Decision {
            take: Take::Keep,
            held: Some((HeldKind::Paused, message)),
            waits: head_changes,
            self_heal: false,
        };
    }
    let (target, target_digest, approved) = if !f.approval_required {
        (Take::Head, f.head_digest, false)
    } else {
        match &f.approved {
            Some(a) if a.digest == f.head_digest => (Take::Head, f.head_digest, true),
            Some(a) => (Take::Approved(a.commit), a.digest, true),
            None => (Take::Keep, f.in_force_digest, false),
        }
    };
    let waiting_approval = f.approval_required && f.head_digest != target_digest;
    let approval_held = waiting_approval.then(|| {
        (
            HeldKind::WaitingApproval,
            format!("{} waits for approval (gitgate approve APP --commit {})", short(&f.head), short(&f.head)),
        )
    });
    let self_heal = f.window.sync_open || f.window.self_heal_open;
    if !f.window.sync_open && changes_force(target_digest) {
        let override_ok = approved && f.approved.as_ref().is_some_and(|a| a.override_window || f.window.manual_allowed);
        if !override_ok {
            let held = approval_held.or_else(|| {
                head_changes
                    .then(|| (HeldKind::OutsideWindow, format!("{} waits: {}", short(&f.head), f.window.reason)))
            });
            let waits = held.is_some();
            return Decision { take: Take::Keep, held, waits, self_heal };
        }
    }
    let take = if target == Take::Head || changes_force(target_digest) { target } else { Take::Keep };
    Decision { take, waits: approval_held.is_some(), held: approval_held, self_heal }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(b: u8) -> ObjectId {
        ObjectId::from_bytes_or_panic(&[b; 20])
    }

    fn facts() -> AppFacts {
        AppFacts {
            head: id(2),
            head_digest: Some([2; 32]),
            in_force_digest: Some([1; 32]),
            approval_required: false,
            approved: None,
            paused: None,
            window: WindowState::open(),
        }
    }

    fn closed(manual: bool, heal: bool) -> WindowState {
        WindowState {
            sync_open: false,
            self_heal_open: heal,
            manual_allowed: manual,
            reason: "outside the allow window".into(),
        }
    }

    #[test]
    fn an_ungated_app_follows_the_head() {
        assert!(decide(&facts()).is_free());
    }

    #[test]
    fn a_change_waits_for_approval_and_an_approval_of_the_head_lets_it_in() {
        let mut f = AppFacts { approval_required: true, ..facts() };
        let d = decide(&f);
        assert_eq!(d.take, Take::Keep);
        assert_eq!(d.held.as_ref().map(|h| h.0), Some(HeldKind::WaitingApproval));
        assert!(d.self_heal, "waiting for approval does not stop self-heal at the commit in force");
        f.approved = Some(Approved { commit: id(2), digest: Some([2; 32]), override_window: false });
        assert!(decide(&f).is_free());
        // Approved an older commit, then the head moved on: the approved
        // content goes in, the new head waits.
        f.approved = Some(Approved { commit: id(3), digest: Some([3; 32]), override_window: false });
        let d = decide(&f);
        assert_eq!(d.take, Take::Approved(id(3)));
        assert_eq!(d.held.map(|h| h.0), Some(HeldKind::WaitingApproval));
    }

    #[test]
    fn a_commit_that_does_not_change_the_app_needs_no_approval() {
        let f = AppFacts { approval_required: true, head_digest: Some([1; 32]), ..facts() };
        let d = decide(&f);
        assert_eq!(d.held, None);
        assert_eq!(d.take, Take::Keep, "the content in force is the head's");
    }

    #[test]
    fn a_pause_keeps_what_is_in_force_and_stops_self_heal_even_when_approved() {
        let f = AppFacts {
            approval_required: true,
            approved: Some(Approved { commit: id(2), digest: Some([2; 32]), override_window: true }),
            paused: Some("by bob until 12:00: incident".into()),
            ..facts()
        };
        let d = decide(&f);
        assert_eq!(d.take, Take::Keep);
        assert!(!d.self_heal);
        assert_eq!(d.held.map(|h| h.0), Some(HeldKind::Paused));
        let unchanged = AppFacts { head_digest: Some([1; 32]), ..f };
        let d = decide(&unchanged);
        assert_eq!(
            (d.take, d.waits, d.self_heal),
            (Take::Keep, false, false),
            "a pause stops self-heal with nothing waiting"
        );
        assert_eq!(d.held.map(|h| h.0), Some(HeldKind::Paused), "and shows as paused");
    }

    #[test]
    fn a_closed_window_holds_a_change_unless_an_approval_may_pass_it() {
        let f = AppFacts { window: closed(false, false), ..facts() };
        let d = decide(&f);
        assert_eq!(d.take, Take::Keep);
        assert_eq!(d.held.as_ref().map(|h| h.0), Some(HeldKind::OutsideWindow));
        assert!(d.held.unwrap().1.contains("outside the allow window"));
        assert!(!d.self_heal);
        assert!(decide(&AppFacts { window: closed(false, true), ..facts() }).self_heal, "selfHealOutsideWindow");
        // Approved, and the window allows manual syncs: it goes in.
        let approved = Some(Approved { commit: id(2), digest: Some([2; 32]), override_window: false });
        let f =
            AppFacts { approval_required: true, approved: approved.clone(), window: closed(true, false), ..facts() };
        assert_eq!(decide(&f).take, Take::Head);
        // Approved, but the window refuses manual syncs: an admin override only.
        let f = AppFacts { approval_required: true, approved, window: closed(false, false), ..facts() };
        assert_eq!(decide(&f).take, Take::Keep);
        let overridden = Some(Approved { commit: id(2), digest: Some([2; 32]), override_window: true });
        assert_eq!(decide(&AppFacts { approved: overridden, ..f }).take, Take::Head);
    }

    #[test]
    fn nothing_is_in_force_until_the_first_approval() {
        let f = AppFacts { approval_required: true, in_force_digest: None, ..facts() };
        let d = decide(&f);
        assert_eq!(d.take, Take::Keep);
        assert_eq!(d.held.map(|h| h.0), Some(HeldKind::WaitingApproval));
    }
}
