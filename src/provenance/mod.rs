//! The provenance rule (DESIGN.md): a change passes when Git made it.
//!
//! [`verify`] is pure: it reads the [`Snapshot`] of the commit in force and
//! one admission request, and returns the `git` facts and a [`Verdict`]. It
//! never denies by itself: the verdict reaches the CEL policies as
//! `git.provenance`, and `policies/provenance.yaml` decides — its match
//! conditions are the exemptions (system controllers, leases, opt-in HPA
//! scale), readable and changeable by users.
//!
//! - **From Git**: the object's identity is in D(H); every field the
//!   manifest sets has the same value in the object; its
//!   `gitgate.dev/digest` is D(H)'s and its `gitgate.dev/commit` the commit
//!   D(H) records for it; and, in strict mode, the reconciler sent it.
//! - **Prune**: the reconciler deletes an object D(H) does not declare.
//! - Everything else is refused, with a message that names the owning app,
//!   file and commit, or says that nothing in Git declares the object.
//!
//! Owns: the rule ([`verify`]), its per-commit index ([`Snapshot`]: commit
//! facts, per-content comparison facts), its admission stage
//! ([`ProvenanceStage`]) and break-glass windows ([`glass`]). "Equals Git"
//! itself is `contract::matches_git`, shared with the sync loop.
//!
//! Must never import: `policy`, `sync`, `secrets`, `desired`, `promotion`,
//! `dashboard` (it reads `contract`, `render`'s desired set, `admission`'s
//! request types and the `clock`).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use gix::ObjectId;
use serde::Serialize;
use serde_json::Value;

use crate::admission::{AdmissionRequest, Operation};
use crate::contract::{self, COMMIT_ANNOTATION, DIGEST_ANNOTATION, Difference, Foreigners, Stale, ignored_fields};
use crate::render::DesiredSet;
use crate::render::desired::DesiredObject;

pub mod glass;
pub mod stage;

pub use stage::ProvenanceStage;

/// What a commit says about itself, read once per desired set.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CommitInfo {
    pub short: String,
    pub subject: String,
    pub author: String,
}

/// Everything provenance decides from, built once per desired set.
pub struct Snapshot {
    pub desired: Arc<DesiredSet>,
    commits: HashMap<ObjectId, CommitInfo>,
    /// (group, resource) → kind, for requests on a subresource (`scale`
    /// arrives with kind `Scale`, the parent's resource and name).
    kinds: HashMap<(String, String), String>,
    /// Per content (by digest): what the comparison needs beyond the
    /// manifest, for the few objects that have any (ignore-fields, a sealed
    /// Secret's Git digest), worked out once per desired set.
    content: HashMap<[u8; 32], ContentFacts>,
    /// Namespaces gitgate deploys into: app destinations and the
    /// namespaces of declared objects.
    namespaces: HashSet<String>,
    /// The commits whose signature verified (`git.signed`).
    signed: HashSet<ObjectId>,
}

impl Snapshot {
    /// Builds the snapshot, reading the subject and author of every commit
    /// the desired set names (blocking: Git I/O, once per commit).
    pub fn build(desired: Arc<DesiredSet>, repo: &gix::Repository) -> Snapshot {
        let mut commits = HashMap::new();
        let mut kinds = HashMap::new();
        let mut namespaces: HashSet<String> = HashSet::new();
        for app in desired.apps() {
            if !app.destination.namespace.is_empty() {
                namespaces.insert(app.destination.namespace.clone());
            }
        }
        for (key, obj) in desired.objects() {
            if !key.namespace.is_empty() {
                namespaces.insert(key.namespace.clone());
            }
            kinds.entry((key.group.clone(), plural(&key.kind))).or_insert_with(|| key.kind.clone());
            commits.entry(obj.commit).or_insert_with(|| commit_info(repo, obj.commit));
        }
        commits.entry(desired.commit()).or_insert_with(|| commit_info(repo, desired.commit()));
        let content = content_facts(&desired);
        Snapshot { desired, commits, kinds, namespaces, content, signed: HashSet::new() }
    }

    /// The commits of the desired set whose signature verified: the
    /// objects they introduced get `git.signed`.
    pub fn with_signed(mut self, signed: HashSet<ObjectId>) -> Snapshot {
        self.signed = signed;
        self
    }

    /// Whether a commit of the desired set verified.
    pub fn is_signed(&self, commit: ObjectId) -> bool {
        self.signed.contains(&commit)
    }

    /// What a commit the desired set names (or its head) says about itself.
    pub fn commit_info(&self, commit: ObjectId) -> Option<&CommitInfo> {
        self.commits.get(&commit)
    }

    fn info(&self, commit: ObjectId) -> CommitInfo {
        self.commits
            .get(&commit)
            .cloned()
            .unwrap_or_else(|| CommitInfo { short: short(commit), ..CommitInfo::default() })
    }
}

fn short(commit: ObjectId) -> String {
    commit.to_hex_with_len(7).to_string()
}

fn commit_info(repo: &gix::Repository, id: ObjectId) -> CommitInfo {
    let mut info = CommitInfo { short: short(id), ..CommitInfo::default() };
    if let Ok(commit) = repo.find_commit(id) {
        if let Ok(msg) = commit.message() {
            info.subject = msg.summary().to_string();
        }
        if let Ok(author) = commit.author() {
            info.author = format!("{} <{}>", author.name, author.email);
        }
    }
    info
}

/// What [`contract::matches_git`] needs of one content beyond its manifest.
struct ContentFacts {
    ignore: Vec<String>,
    sealed_digest: Option<String>,
}

/// [`ContentFacts`] of every object and hook that has any.
fn content_facts(desired: &DesiredSet) -> HashMap<[u8; 32], ContentFacts> {
    let mut out = HashMap::new();
    let hooks = desired.apps().iter().flat_map(|a| desired.app_hooks(&a.name));
    for (_, obj) in desired.objects().into_iter().chain(hooks) {
        let mut ignore = ignored_fields(&obj.manifest);
        let sealed_digest = if obj.manifest.contains(contract::SEALED) {
            serde_json::from_str::<Value>(&obj.manifest).ok().as_ref().and_then(contract::sealed::git_sealed_digest)
        } else {
            None
        };
        if sealed_digest.is_some() {
            ignore.extend(contract::SEALED_FORM_FIELDS.map(String::from));
        }
        if !ignore.is_empty() || sealed_digest.is_some() {
            out.insert(obj.digest, ContentFacts { ignore, sealed_digest });
        }
    }
    out
}

/// Kubernetes' resource name for a kind (lowercase plural).
pub fn plural(kind: &str) -> String {
    let k = kind.to_ascii_lowercase();
    match k.as_str() {
        "endpoints" => k,
        _ if k.ends_with('y') && !k.ends_with("ey") => format!("{}ies", &k[..k.len() - 1]),
        _ if k.ends_with('s') || k.ends_with("ch") || k.ends_with("sh") || k.ends_with('x') => format!("{k}es"),
        _ => format!("{k}s"),
    }
}

/// Who may apply and prune.
#[derive(Clone, Debug)]
pub struct Identity {
    /// The reconciler's username.
    pub reconciler: String,
    /// Only the reconciler may apply Git's content (the default).
    pub strict: bool,
    /// Members of these groups may change a managed object by setting the
    /// break-glass annotation with a reason.
    pub break_glass_groups: Vec<String>,
    /// How long a break-glass window lasts (`--break-glass-ttl`): a
    /// change's stamped window may end no later than this from now.
    pub break_glass_ttl: Duration,
}

/// Why a request passed or not (`git.provenance.reason`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Reason {
    FromGit,
    Prune,
    NotDeclared,
    Modified,
    Unstamped,
    NotReconciler,
    DeleteDeclared,
    PruneByHand,
    /// An emergency change by a break-glass group, with a reason.
    BreakGlass,
    /// A break-glass change outside its window (over, moved, missing).
    BreakGlassWindow,
    /// The reconciler deletes one of Git's objects to create it again:
    /// its manifest allows it (`gitgate.dev/sync-options: Replace=true`, or
    /// Argo CD's `Replace=true,Force=true`) when a field is immutable.
    Recreate,
    /// A dry run by the reconciler: it changes nothing. `gitgate diff`
    /// previews a commit that is not in force yet (one waiting for
    /// approval) this way, and the sync's pre-flight checks immutable
    /// fields; what a sync then writes is checked as always.
    Preview,
}

/// The provenance verdict (`git.provenance`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Verdict {
    pub allowed: bool,
    pub reason: Reason,
    /// Empty when allowed; otherwise what to do instead.
    pub message: String,
}

/// The facts about one request: its owner in Git, if any, and the verdict.
#[derive(Clone, Debug)]
pub struct Facts {
    pub commit: String,
    pub app: String,
    pub path: String,
    pub author: String,
    pub subject: String,
    /// The commit that introduced the object verified (`git.signed`).
    pub signed: bool,
    /// Git declares the object.
    pub managed: bool,
    /// The object lies where gitgate deploys (a destination namespace, or
    /// an object Git declares).
    pub enforced: bool,
    pub verdict: Verdict,
}

/// What a request is about, in the desired set's terms.
struct Target<'r> {
    group: String,
    kind: String,
    /// Empty for a Namespace and cluster-scoped kinds.
    namespace: &'r str,
    name: &'r str,
    /// `namespace/Kind/name` or `Kind/name`, for messages.
    id: String,
    is_namespace: bool,
    sub: &'r str,
}

impl<'r> Target<'r> {
    /// A request on a subresource (`scale` arrives with kind `Scale`) is
    /// about its parent's kind, found by its resource.
    fn of(snap: &Snapshot, req: &'r AdmissionRequest) -> Target<'r> {
        let sub = req.sub_resource.as_deref().unwrap_or("");
        let (group, kind) = if sub.is_empty() {
            (req.kind.group.clone(), req.kind.kind.clone())
        } else {
            let group = req.resource.group.clone();
            let kind = snap.kinds.get(&(group.clone(), req.resource.resource.clone())).cloned().unwrap_or_default();
            (group, kind)
        };
        let is_namespace = req.resource.group.is_empty() && req.resource.resource == "namespaces";
        let namespace = if is_namespace { "" } else { req.namespace.as_str() };
        let name = req.object_name();
        let id = if namespace.is_empty() { format!("{kind}/{name}") } else { format!("{namespace}/{kind}/{name}") };
        Target { group, kind, namespace, name, id, is_namespace, sub }
    }
}

/// Applies the provenance rule to one request.
pub fn verify(snap: &Snapshot, req: &AdmissionRequest, who: &Identity) -> Facts {
    let t = Target::of(snap, req);
    let d = &snap.desired;
    // A Namespace lies where gitgate deploys when an app deploys into it,
    // told by its own name: the request's `namespace` is not to be relied
    // on for one (an apiserver may leave it empty on CREATE).
    let place = if t.is_namespace { t.name } else { req.namespace.as_str() };
    let declared = d.get(&t.group, &t.kind, t.namespace, t.name);
    let from_reconciler = req.user_info.username == who.reconciler;
    let mut facts = Facts {
        commit: String::new(),
        app: String::new(),
        path: String::new(),
        author: String::new(),
        subject: String::new(),
        signed: false,
        managed: declared.is_some(),
        enforced: declared.is_some() || snap.namespaces.contains(place),
        verdict: Verdict { allowed: true, reason: Reason::FromGit, message: String::new() },
    };
    if declared.is_none()
        && let Some(hook) = hook_of(d, req, &t.group, &t.kind, t.namespace, t.name)
    {
        return verify_hook(snap, req, who, hook, &t.id, facts);
    }
    if req.dry_run && from_reconciler && req.operation != Operation::Delete {
        if let Some(obj) = declared {
            git_facts(snap, obj, &mut facts);
        }
        facts.verdict = Verdict { allowed: true, reason: Reason::Preview, message: String::new() };
        return facts;
    }
    facts.verdict = match declared {
        None => undeclared(snap, req, &t, from_reconciler),
        Some(obj) => {
            let (app, info) = git_facts(snap, obj, &mut facts);
            let owner = format!(
                "{id} is managed by app {app} from {path} at {short} '{subject}'",
                id = t.id,
                path = obj.source,
                short = info.short,
                subject = info.subject
            );
            declared_verdict(snap, req, who, obj, &t, &owner)
        }
    };
    facts
}

/// An object nothing in Git declares: only the reconciler deletes (prunes)
/// it; nobody creates or changes it where gitgate deploys.
fn undeclared(snap: &Snapshot, req: &AdmissionRequest, t: &Target<'_>, from_reconciler: bool) -> Verdict {
    let deny = |reason: Reason, message: String| Verdict { allowed: false, reason, message };
    match req.operation {
        Operation::Delete if from_reconciler => {
            Verdict { allowed: true, reason: Reason::Prune, message: String::new() }
        }
        Operation::Delete => deny(
            Reason::PruneByHand,
            format!(
                "{id}: nothing in Git declares it, and in namespace {ns} only gitgate's reconciler deletes objects; \
                 if it came from Git, it is pruned once its manifest is gone",
                id = t.id,
                ns = req.namespace
            ),
        ),
        _ if t.is_namespace => deny(Reason::NotDeclared, namespace_not_declared(snap, &t.id, t.name)),
        _ => deny(Reason::NotDeclared, not_declared(snap, &t.id, &req.namespace)),
    }
}

/// One of Git's objects: a break-glass change within its window; the
/// reconciler's delete to re-create it; otherwise Git's content only.
fn declared_verdict(
    snap: &Snapshot,
    req: &AdmissionRequest,
    who: &Identity,
    obj: &DesiredObject,
    t: &Target<'_>,
    owner: &str,
) -> Verdict {
    let from_reconciler = req.user_info.username == who.reconciler;
    let deny = |reason: Reason, message: String| Verdict { allowed: false, reason, message };
    if let Some(reason) = break_glass(req, who) {
        // The window is the object's own (stamped by the mutating webhook):
        // the same on every replica, after a failover too.
        let (old, object) = match req.operation {
            Operation::Delete => (None, req.old_object.as_ref()),
            _ => (req.old_object.as_ref(), req.object.as_ref()),
        };
        return match glass::check(old, object, who.break_glass_ttl, crate::clock::now_micros()) {
            Ok(_) => Verdict { allowed: true, reason: Reason::BreakGlass, message: reason },
            Err(refusal) => deny(
                Reason::BreakGlassWindow,
                format!("{owner}; break-glass refused: {}", refusal.message(who.break_glass_ttl)),
            ),
        };
    }
    if req.operation == Operation::Delete && from_reconciler && may_recreate(obj) {
        Verdict { allowed: true, reason: Reason::Recreate, message: String::new() }
    } else if req.operation == Operation::Delete {
        deny(Reason::DeleteDeclared, format!("{owner}; remove it from Git to delete it"))
    } else if !t.sub.is_empty() {
        deny(Reason::Modified, format!("{owner}; change it there ({} is set in Git)", t.sub))
    } else {
        check_content(snap, obj, req, who, owner)
    }
}

/// Whether Git's manifest lets the reconciler delete and re-create the
/// object (its sync options).
fn may_recreate(obj: &DesiredObject) -> bool {
    if !obj.manifest.contains("sync-options") {
        return false;
    }
    serde_json::from_str::<Value>(&obj.manifest)
        .is_ok_and(|v| contract::options::recreate_of(&v) == contract::options::Recreate::Yes)
}

/// The sync hook a request is about: by name, or — for a run the
/// apiserver named — by the `generateName` of a hook Git declares
/// without a name.
fn hook_of<'d>(
    d: &'d DesiredSet,
    req: &AdmissionRequest,
    group: &str,
    kind: &str,
    namespace: &str,
    name: &str,
) -> Option<&'d DesiredObject> {
    if let Some(h) = d.get_hook(group, kind, namespace, name) {
        return Some(h);
    }
    let obj = if req.operation == Operation::Delete { req.old_object.as_ref() } else { req.object.as_ref() };
    let prefix = obj?.pointer("/metadata/generateName")?.as_str()?;
    if prefix.is_empty() || !name.starts_with(prefix) {
        return None;
    }
    let hook = d.get_hook(group, kind, namespace, prefix)?;
    let git: Value = serde_json::from_str(&hook.manifest).ok()?;
    git.pointer("/metadata/name").is_none().then_some(hook)
}

/// What every decision about one of Git's objects reports: the commit that
/// introduced it (and whether it is signed), its app, file, author and
/// subject; the app's name and the commit's summary for the message.
fn git_facts(snap: &Snapshot, object: &DesiredObject, facts: &mut Facts) -> (String, CommitInfo) {
    let app = snap.desired.app_of(object).map(|a| a.name.clone()).unwrap_or_default();
    let info = snap.info(object.commit);
    facts.commit = object.commit.to_string();
    facts.signed = snap.is_signed(object.commit);
    facts.app = app.clone();
    facts.path = object.source.to_string();
    facts.author = info.author.clone();
    facts.subject = info.subject.clone();
    (app, info)
}

/// A sync hook: Git's when the reconciler creates it with the content of
/// the hook's manifest in the commit in force (its name aside, for
/// `generateName`) and its stamps; the reconciler deletes it (its delete
/// policy). Anyone else's create, change or delete is refused.
fn verify_hook(
    snap: &Snapshot,
    req: &AdmissionRequest,
    who: &Identity,
    hook: &DesiredObject,
    id: &str,
    mut facts: Facts,
) -> Facts {
    facts.managed = true;
    facts.enforced = true;
    let (app, info) = git_facts(snap, hook, &mut facts);
    let from_reconciler = req.user_info.username == who.reconciler;
    let owner = format!(
        "{id} is a sync hook of app {app} from {path} at {short} '{subject}'",
        path = hook.source,
        short = info.short,
        subject = info.subject
    );
    facts.verdict = match req.operation {
        Operation::Delete if from_reconciler => {
            Verdict { allowed: true, reason: Reason::Prune, message: String::new() }
        }
        Operation::Delete => Verdict {
            allowed: false,
            reason: Reason::DeleteDeclared,
            message: format!("{owner}; only gitgate's reconciler deletes it, by its hook delete policy"),
        },
        _ if req.sub_resource.as_deref().is_some_and(|s| !s.is_empty()) => Verdict {
            allowed: false,
            reason: Reason::Modified,
            message: format!("{owner}; only gitgate's reconciler and the cluster's controllers change it"),
        },
        _ => check_content(snap, hook, req, who, &owner),
    };
    facts
}

/// The break-glass reason, when a member of a break-glass group set the
/// annotation (on the new object, or for a DELETE on the old one).
fn break_glass(req: &AdmissionRequest, who: &Identity) -> Option<String> {
    if !req.user_info.groups.iter().any(|g| who.break_glass_groups.contains(g)) {
        return None;
    }
    let obj = if req.operation == Operation::Delete { req.old_object.as_ref() } else { req.object.as_ref() };
    contract::stamp::break_glass_reason(obj?)
}

/// Git's content, through [`contract::matches_git`] (the sync loop's
/// answer too): a field that differs, a sealed Secret's values, or a field
/// another manager added (not for the reconciler, whose apply carries what
/// another manager left until self-heal removes it); then the stamps; then,
/// in strict mode, the writer.
fn check_content(snap: &Snapshot, obj: &DesiredObject, req: &AdmissionRequest, who: &Identity, owner: &str) -> Verdict {
    let from_reconciler = req.user_info.username == who.reconciler;
    let deny = |reason: Reason, detail: String| Verdict {
        allowed: false,
        reason,
        message: format!("{owner}; change it there ({detail})"),
    };
    let Some(object) = req.object.as_ref() else {
        return deny(Reason::Modified, "the request carries no object".into());
    };
    let (digest, commit) = (obj.digest_string(), obj.commit.to_string());
    let app = snap.desired.app_of(obj).map(|a| a.name.as_str()).unwrap_or_default();
    let facts = snap.content.get(&obj.digest);
    let expected = contract::Expected {
        manifest: &obj.manifest,
        digest: &digest,
        commit: &commit,
        app,
        file: &obj.source,
        ignore: facts.map_or(&[][..], |f| &f.ignore),
        sealed_digest: facts.and_then(|f| f.sealed_digest.as_deref()),
    };
    let foreigners = if from_reconciler { Foreigners::Skip } else { Foreigners::Find };
    let m = contract::matches_git(&expected, object, foreigners);
    match m.difference {
        None => {}
        Some(Difference::SealedValues) => {
            return deny(Reason::Modified, "its values are not the ones sealed in Git".into());
        }
        Some(Difference::Field(field)) => return deny(Reason::Modified, format!("{field} differs from Git")),
        Some(Difference::Unreadable) => return deny(Reason::Modified, "Git's manifest could not be read".into()),
        Some(Difference::Foreign(f)) => {
            return deny(Reason::Modified, format!("{} (set by {}) is not in Git", f.pointer, f.manager));
        }
    }
    match m.stale {
        Some(Stale::Digest) => {
            return deny(Reason::Unstamped, format!("its {DIGEST_ANNOTATION} is not the digest of Git's manifest"));
        }
        Some(Stale::Commit) => {
            return deny(
                Reason::Unstamped,
                format!("its {COMMIT_ANNOTATION} is not the commit that introduced this content"),
            );
        }
        // Bookkeeping only (see `contract::Stale`): the loop re-stamps it.
        Some(Stale::Source | Stale::App) | None => {}
    }
    if who.strict && !from_reconciler {
        return deny(
            Reason::NotReconciler,
            format!("only gitgate's reconciler applies it, not {}", req.user_info.username),
        );
    }
    Verdict { allowed: true, reason: Reason::FromGit, message: String::new() }
}

/// An app's destination Namespace that Git does not declare: nobody but
/// Git may create (or change) it, or it would come with labels of their
/// choosing (no enforcement label, a privileged Pod Security level).
fn namespace_not_declared(snap: &Snapshot, id: &str, name: &str) -> String {
    let d = &snap.desired;
    let apps: Vec<String> = d
        .apps()
        .iter()
        .filter(|a| a.destination.namespace == name)
        .map(|a| format!("{} ({})", a.name, a.path))
        .collect();
    if apps.is_empty() {
        return not_declared(snap, id, "");
    }
    format!(
        "nothing in Git declares {id} (commit {short}), and app {apps} deploys into it: \
         declare the Namespace in Git (a manifest in the app's path) so that it is created with Git's labels",
        short = short(d.commit()),
        apps = apps.join(", ")
    )
}

fn not_declared(snap: &Snapshot, id: &str, namespace: &str) -> String {
    let d = &snap.desired;
    let short = short(d.commit());
    let deploying: Vec<String> = d
        .apps()
        .iter()
        .filter(|a| !namespace.is_empty() && a.destination.namespace == namespace)
        .map(|a| format!("{} ({})", a.name, a.path))
        .collect();
    if deploying.is_empty() {
        format!("nothing in Git declares {id} (commit {short}); add its manifest to an app's path in Git")
    } else {
        format!(
            "nothing in Git declares {id} (commit {short}); namespace {namespace} is deployed from Git by app {}: add its manifest there",
            deploying.join(", ")
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plurals() {
        assert_eq!(plural("Deployment"), "deployments");
        assert_eq!(plural("NetworkPolicy"), "networkpolicies");
        assert_eq!(plural("Ingress"), "ingresses");
    }
}
