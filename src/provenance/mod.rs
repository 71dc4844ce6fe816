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

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use gix::ObjectId;
use serde::Serialize;
use serde_json::Value;

use crate::admission::{AdmissionRequest, Operation};
use crate::render::DesiredSet;
use crate::render::desired::DesiredObject;

pub mod glass;

/// Stamped by the sync loop: the commit that introduced the content.
pub const COMMIT_ANNOTATION: &str = "gitgate.dev/commit";
/// Stamped by the sync loop: `<app>:<path>` of the manifest.
pub const SOURCE_ANNOTATION: &str = "gitgate.dev/source";
/// Stamped by the sync loop: `sha256:` of the canonical desired manifest.
pub const DIGEST_ANNOTATION: &str = "gitgate.dev/digest";
/// The inventory label: the app that owns the object.
pub const APP_LABEL: &str = "gitgate.dev/app";
/// In Git: JSON pointers of fields other controllers own (HPA replicas);
/// neither the sync loop nor the provenance check compares them.
pub const IGNORE_FIELDS_ANNOTATION: &str = "gitgate.dev/ignore-fields";
/// Set by a human in an emergency: `gitgate.dev/break-glass: "<reason>"`.
pub const BREAK_GLASS_ANNOTATION: &str = "gitgate.dev/break-glass";

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
        Snapshot { desired, commits, kinds, namespaces, signed: HashSet::new() }
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

/// Applies the provenance rule to one request.
pub fn verify(snap: &Snapshot, req: &AdmissionRequest, who: &Identity) -> Facts {
    let d = &snap.desired;
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
    // A Namespace lies where gitgate deploys when an app deploys into it,
    // told by its own name: the request's `namespace` is not to be relied
    // on for one (an apiserver may leave it empty on CREATE).
    let place = if is_namespace { name } else { req.namespace.as_str() };
    let id = if namespace.is_empty() { format!("{kind}/{name}") } else { format!("{namespace}/{kind}/{name}") };
    let declared = d.get(&group, &kind, namespace, name);
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
    let deny = |reason: Reason, message: String| Verdict { allowed: false, reason, message };

    if declared.is_none()
        && let Some(hook) = hook_of(d, req, &group, &kind, namespace, name)
    {
        return verify_hook(snap, req, who, hook, &id, facts);
    }

    if req.dry_run && from_reconciler && req.operation != Operation::Delete {
        if let Some(obj) = declared {
            git_facts(snap, obj, &mut facts);
        }
        facts.verdict = Verdict { allowed: true, reason: Reason::Preview, message: String::new() };
        return facts;
    }

    let Some(obj) = declared else {
        facts.verdict = match req.operation {
            Operation::Delete if from_reconciler => {
                Verdict { allowed: true, reason: Reason::Prune, message: String::new() }
            }
            Operation::Delete => deny(
                Reason::PruneByHand,
                format!(
                    "{id}: nothing in Git declares it, and in namespace {ns} only gitgate's reconciler deletes objects; \
                     if it came from Git, it is pruned once its manifest is gone",
                    ns = req.namespace
                ),
            ),
            _ if is_namespace => deny(Reason::NotDeclared, namespace_not_declared(snap, &id, name)),
            _ => deny(Reason::NotDeclared, not_declared(snap, &id, &req.namespace)),
        };
        return facts;
    };

    let glass = break_glass(req, who);
    let (app, info) = git_facts(snap, obj, &mut facts);
    let owner = format!(
        "{id} is managed by app {app} from {path} at {short} '{subject}'",
        path = obj.source,
        short = info.short,
        subject = info.subject
    );

    facts.verdict = if let Some(reason) = glass {
        // The window is the object's own (stamped by the mutating webhook):
        // the same on every replica, after a failover too.
        let (old, object) = match req.operation {
            Operation::Delete => (None, req.old_object.as_ref()),
            _ => (req.old_object.as_ref(), req.object.as_ref()),
        };
        match glass::check(old, object, who.break_glass_ttl, crate::audit::record::now_micros()) {
            Ok(_) => Verdict { allowed: true, reason: Reason::BreakGlass, message: reason },
            Err(refusal) => deny(
                Reason::BreakGlassWindow,
                format!("{owner}; break-glass refused: {}", refusal.message(who.break_glass_ttl)),
            ),
        }
    } else if req.operation == Operation::Delete && from_reconciler && may_recreate(obj) {
        Verdict { allowed: true, reason: Reason::Recreate, message: String::new() }
    } else if req.operation == Operation::Delete {
        deny(Reason::DeleteDeclared, format!("{owner}; remove it from Git to delete it"))
    } else if !sub.is_empty() {
        deny(Reason::Modified, format!("{owner}; change it there ({sub} is set in Git)"))
    } else {
        check_content(obj, req, who, from_reconciler, &owner)
    };
    facts
}

/// Whether Git's manifest lets the reconciler delete and re-create the
/// object (its sync options).
fn may_recreate(obj: &DesiredObject) -> bool {
    if !obj.manifest.contains("sync-options") {
        return false;
    }
    serde_json::from_str::<Value>(&obj.manifest)
        .is_ok_and(|v| crate::sync::plan::recreate_of(&v) == crate::sync::plan::Recreate::Yes)
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
        _ => check_content(hook, req, who, from_reconciler, &owner),
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
    let reason = obj?.pointer("/metadata/annotations")?.get(BREAK_GLASS_ANNOTATION)?.as_str()?.trim();
    (!reason.is_empty()).then(|| reason.chars().take(256).collect())
}

fn check_content(
    obj: &DesiredObject,
    req: &AdmissionRequest,
    who: &Identity,
    from_reconciler: bool,
    owner: &str,
) -> Verdict {
    let deny = |reason: Reason, detail: String| Verdict {
        allowed: false,
        reason,
        message: format!("{owner}; change it there ({detail})"),
    };
    let Some(object) = req.object.as_ref() else {
        return deny(Reason::Modified, "the request carries no object".into());
    };
    let mut skip = ignored_fields(&obj.manifest);
    // A sealed Secret reaches validation unsealed: its values are checked by
    // the digest of Git's sealed form the mutating webhook stamped.
    if obj.manifest.contains(crate::secrets::SEALED)
        && let Some(sealed) =
            serde_json::from_str::<Value>(&obj.manifest).ok().as_ref().and_then(crate::secrets::git_sealed_digest)
    {
        let stamped = object
            .pointer("/metadata/annotations")
            .and_then(|a| a.get(crate::secrets::SEALED_DIGEST))
            .and_then(Value::as_str);
        if stamped != Some(sealed.as_str()) {
            return deny(Reason::Modified, "its values are not the ones sealed in Git".into());
        }
        skip.extend(crate::secrets::SEALED_FORM_FIELDS.map(String::from));
    }
    match first_difference(&obj.manifest, object, &skip) {
        Ok(None) => {}
        Ok(Some(field)) => return deny(Reason::Modified, format!("{field} differs from Git")),
        Err(_) => return deny(Reason::Modified, "Git's manifest could not be read".into()),
    }
    let annotation = |k: &str| object.pointer("/metadata/annotations").and_then(|a| a.get(k)).and_then(Value::as_str);
    if annotation(DIGEST_ANNOTATION) != Some(obj.digest_string().as_str()) {
        return deny(Reason::Unstamped, format!("its {DIGEST_ANNOTATION} is not the digest of Git's manifest"));
    }
    if annotation(COMMIT_ANNOTATION) != Some(obj.commit.to_string().as_str()) {
        return deny(
            Reason::Unstamped,
            format!("its {COMMIT_ANNOTATION} is not the commit that introduced this content"),
        );
    }
    if who.strict && !from_reconciler {
        return deny(
            Reason::NotReconciler,
            format!("only gitgate's reconciler applies it, not {}", req.user_info.username),
        );
    }
    Verdict { allowed: true, reason: Reason::FromGit, message: String::new() }
}

/// The first JSON pointer where Git's manifest (its canonical JSON text)
/// sets a value that `actual` does not have. Maps: every key the manifest
/// sets, recursively (`actual` may have more: defaults, other controllers'
/// fields). Lists: same length, element by element. Numbers compare by
/// value. Streams the text against the object: nothing is built, so the
/// hot path parses no tree (a `null` in Git matches a missing field).
///
/// `skip` lists JSON pointers Git leaves to others (`gitgate.dev/ignore-fields`).
///
/// A core Secret's `stringData` is compared as the apiserver stores it:
/// folded into `data`, base64-encoded (the apiserver never returns
/// `stringData`, so comparing it as written would find every such Secret
/// changed). Sealed Secrets skip both fields and are not folded.
pub fn first_difference(desired: &str, actual: &Value, skip: &[String]) -> Result<Option<String>, serde_json::Error> {
    if actual.get("kind").and_then(Value::as_str) == Some("Secret")
        && actual.get("stringData").is_none()
        && !skip.iter().any(|p| p == "/stringData")
        && desired.contains("\"stringData\"")
        && let Some(folded) = fold_string_data(desired)
    {
        return compare(&folded, actual, skip);
    }
    compare(desired, actual, skip)
}

/// A v1 Secret manifest with its `stringData` folded into `data`
/// (`stringData` wins, as in the apiserver); `None` when there is nothing
/// to fold or the text is not such a Secret.
fn fold_string_data(desired: &str) -> Option<String> {
    use base64::Engine as _;
    let mut doc: Value = serde_json::from_str(desired).ok()?;
    if doc.get("apiVersion").and_then(Value::as_str) != Some("v1")
        || doc.get("kind").and_then(Value::as_str) != Some("Secret")
    {
        return None;
    }
    let obj = doc.as_object_mut()?;
    let Some(Value::Object(strings)) = obj.remove("stringData") else { return None };
    let data = obj.entry("data").or_insert_with(|| Value::Object(Default::default())).as_object_mut()?;
    for (k, v) in strings {
        let s = v.as_str()?;
        data.insert(k, Value::String(base64::engine::general_purpose::STANDARD.encode(s.as_bytes())));
    }
    serde_json::to_string(&doc).ok()
}

fn compare(desired: &str, actual: &Value, skip: &[String]) -> Result<Option<String>, serde_json::Error> {
    use serde::de::DeserializeSeed as _;
    let mut path = String::new();
    let mut de = serde_json::Deserializer::from_str(desired);
    let diff = Compare { actual: Some(actual), path: &mut path, skip }.deserialize(&mut de)?;
    de.end()?;
    Ok(diff)
}

/// The JSON pointers a manifest leaves to other controllers: its
/// `gitgate.dev/ignore-fields` annotation, a JSON list or comma-separated
/// pointers. Cheap for the common manifest without it.
pub fn ignored_fields(manifest: &str) -> Vec<String> {
    if !manifest.contains(IGNORE_FIELDS_ANNOTATION) {
        return Vec::new();
    }
    let Ok(v) = serde_json::from_str::<Value>(manifest) else { return Vec::new() };
    let Some(raw) = v.pointer("/metadata/annotations").and_then(|a| a.get(IGNORE_FIELDS_ANNOTATION)) else {
        return Vec::new();
    };
    parse_ignore_fields(raw.as_str().unwrap_or_default())
}

/// Parses an ignore-fields value: `["/spec/replicas"]` or `/spec/replicas, /data/x`.
pub fn parse_ignore_fields(raw: &str) -> Vec<String> {
    let raw = raw.trim();
    let list: Vec<String> = if raw.starts_with('[') {
        serde_json::from_str(raw).unwrap_or_default()
    } else {
        raw.split([',', '\n']).map(|p| p.trim().to_string()).collect()
    };
    list.into_iter().filter(|p| p.starts_with('/') && p.len() > 1).collect()
}

struct Compare<'p> {
    actual: Option<&'p Value>,
    path: &'p mut String,
    skip: &'p [String],
}

impl Compare<'_> {
    fn here(&self) -> String {
        if self.path.is_empty() { "/".into() } else { self.path.clone() }
    }

    fn verdict(self, same: bool) -> Option<String> {
        (!same).then(|| self.here())
    }
}

fn push_segment(path: &mut String, segment: &str) -> usize {
    let len = path.len();
    path.push('/');
    path.push_str(&segment.replace('~', "~0").replace('/', "~1"));
    len
}

impl<'de> serde::de::DeserializeSeed<'de> for Compare<'_> {
    type Value = Option<String>;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for Compare<'_> {
    type Value = Option<String>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Self::Value, E> {
        let same = self.actual.and_then(Value::as_bool) == Some(v);
        Ok(self.verdict(same))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
        let same = self.actual.and_then(Value::as_f64) == Some(v as f64);
        Ok(self.verdict(same))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
        let same = self.actual.and_then(Value::as_f64) == Some(v as f64);
        Ok(self.verdict(same))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Self::Value, E> {
        let same = self.actual.and_then(Value::as_f64) == Some(v);
        Ok(self.verdict(same))
    }

    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        let same = self.actual.and_then(Value::as_str) == Some(v);
        Ok(self.verdict(same))
    }

    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        let same = matches!(self.actual, None | Some(Value::Null));
        Ok(self.verdict(same))
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        use serde::de::IgnoredAny;
        let Some(Value::Object(actual)) = self.actual else {
            while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
            return Ok(Some(self.here()));
        };
        let path = self.path;
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            let len = push_segment(path, &key);
            if self.skip.iter().any(|p| p == path) {
                map.next_value::<IgnoredAny>()?;
                path.truncate(len);
                continue;
            }
            let diff =
                map.next_value_seed(Compare { actual: actual.get(key.as_ref()), path: &mut *path, skip: self.skip })?;
            path.truncate(len);
            if diff.is_some() {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                return Ok(diff);
            }
        }
        Ok(None)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        use serde::de::IgnoredAny;
        let Some(Value::Array(actual)) = self.actual else {
            while seq.next_element::<IgnoredAny>()?.is_some() {}
            return Ok(Some(self.here()));
        };
        let path = self.path;
        let mut i = 0;
        loop {
            let len = push_segment(path, &i.to_string());
            let diff = seq.next_element_seed(Compare { actual: actual.get(i), path: &mut *path, skip: self.skip })?;
            path.truncate(len);
            match diff {
                None => break,
                Some(Some(d)) => {
                    while seq.next_element::<IgnoredAny>()?.is_some() {}
                    return Ok(Some(d));
                }
                Some(None) => i += 1,
            }
        }
        let here = if path.is_empty() { "/".to_string() } else { path.clone() };
        Ok((i != actual.len()).then_some(here))
    }
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
    /// Regression (found by the diff e2e): a plain Secret written with
    /// `stringData` equals the live Secret, which holds it as `data`;
    /// before, it was drift on every sync and never Synced.
    #[test]
    fn a_secrets_string_data_compares_as_the_apiserver_stores_it() {
        let git = r#"{"apiVersion":"v1","data":{"a":"eA=="},"kind":"Secret","metadata":{"name":"s"},"stringData":{"password":"hunter2"}}"#;
        let live = serde_json::json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"},
            "data": {"a": "eA==", "password": "aHVudGVyMg=="}});
        assert_eq!(first_difference(git, &live, &[]).unwrap(), None);
        let changed = serde_json::json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"},
            "data": {"a": "eA==", "password": "b3RoZXI="}});
        assert_eq!(first_difference(git, &changed, &[]).unwrap().as_deref(), Some("/data/password"));
        // Sealed Secrets skip both fields: nothing is folded.
        let sealed = ["/data".to_string(), "/stringData".to_string()];
        assert_eq!(first_difference(git, &changed, &sealed).unwrap(), None);
    }

    use super::*;
    use serde_json::json;

    /// The streaming comparison, fed the manifest as canonical JSON text.
    fn diff(desired: &Value, actual: &Value, _: &mut String) -> Option<String> {
        first_difference(&desired.to_string(), actual, &[]).unwrap()
    }

    #[test]
    fn fields_git_sets_must_match_and_more_is_fine() {
        let desired =
            json!({"spec": {"replicas": 3, "template": {"spec": {"containers": [{"name": "a", "image": "x:1"}]}}}});
        let defaulted = json!({"spec": {"replicas": 3.0, "strategy": {}, "template": {"spec": {"containers": [{"name": "a", "image": "x:1", "imagePullPolicy": "IfNotPresent"}]}}}});
        assert_eq!(diff(&desired, &defaulted, &mut String::new()), None);
        let edited =
            json!({"spec": {"replicas": 1, "template": {"spec": {"containers": [{"name": "a", "image": "x:1"}]}}}});
        assert_eq!(diff(&desired, &edited, &mut String::new()).as_deref(), Some("/spec/replicas"));
        let added = json!({"spec": {"replicas": 3, "template": {"spec": {"containers": [{"name": "a", "image": "x:1"}, {"name": "b", "image": "y"}]}}}});
        assert_eq!(diff(&desired, &added, &mut String::new()).as_deref(), Some("/spec/template/spec/containers"));
        let escaped = json!({"metadata": {"labels": {"app.kubernetes.io/name": "web"}}});
        assert_eq!(
            diff(&escaped, &json!({"metadata": {"labels": {}}}), &mut String::new()).as_deref(),
            Some("/metadata/labels/app.kubernetes.io~1name")
        );
        // a null in Git matches a missing field; a wrong type or length is a difference
        assert_eq!(diff(&json!({"a": null}), &json!({}), &mut String::new()), None);
        assert_eq!(diff(&json!({"a": {"b": 1}}), &json!({"a": [1]}), &mut String::new()).as_deref(), Some("/a"));
        // Git's element missing from the object is named; extra elements in the object fail the list
        assert_eq!(diff(&json!({"a": [1, 2]}), &json!({"a": [1]}), &mut String::new()).as_deref(), Some("/a/1"));
        assert_eq!(diff(&json!({"a": [1]}), &json!({"a": [1, 2]}), &mut String::new()).as_deref(), Some("/a"));
        assert_eq!(diff(&json!({"a": "é\"x"}), &json!({"a": "é\"x"}), &mut String::new()), None);
        assert_eq!(
            diff(&json!({"a": [{"b": 1}, {"c": 2}]}), &json!({"a": [{"b": 1}, {"c": 3}]}), &mut String::new())
                .as_deref(),
            Some("/a/1/c")
        );
        assert!(first_difference("{not json", &json!({}), &[]).is_err());
        // ignore-fields: a skipped pointer never differs, its siblings still do
        let skip = vec!["/spec/replicas".to_string()];
        let d = json!({"spec": {"replicas": 3, "paused": false}}).to_string();
        assert_eq!(first_difference(&d, &json!({"spec": {"replicas": 7, "paused": false}}), &skip).unwrap(), None);
        assert_eq!(
            first_difference(&d, &json!({"spec": {"replicas": 7, "paused": true}}), &skip).unwrap().as_deref(),
            Some("/spec/paused")
        );
        assert_eq!(parse_ignore_fields("[\"/spec/replicas\"]"), vec!["/spec/replicas"]);
        assert_eq!(parse_ignore_fields("/a, /b/c ,nope"), vec!["/a", "/b/c"]);
    }

    #[test]
    fn plurals() {
        assert_eq!(plural("Deployment"), "deployments");
        assert_eq!(plural("NetworkPolicy"), "networkpolicies");
        assert_eq!(plural("Ingress"), "ingresses");
    }
}
