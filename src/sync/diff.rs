//! `gitgate diff APP [--commit C]`: what a sync of an app would change.
//!
//! Per object of the app: created, changed or pruned (kept when Git asks
//! prune to leave it: `gitgate.dev/prune: disabled`); unchanged objects are
//! counted, not listed. An object's new form is what the apiserver answers
//! to a server-side **dry-run** apply made as the reconciler makes it (the
//! same field manager, stamps and ignored fields: [`plan::plan_object`],
//! [`plan::respect_ignored`]), minus the fields other managers added that
//! a sync removes; it is compared with the live object, both trimmed of
//! what the apiserver keeps for itself ([`trim`]), as a unified YAML diff.
//!
//! A Secret (core group) is only ever `changed` or `unchanged`: its data
//! is not shown, not even base64, and an error about one is scrubbed of
//! its values before it is made.
//!
//! Served at `GET /api/v1/apps/{name}/diff?commit=C` (behind the
//! dashboard's login, to viewers of the app's project) and printed by
//! `gitgate diff`, which exits as diff(1) does: 0 no differences, 1
//! differences, 2 trouble.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use axum::extract::{Extension, Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use futures_util::StreamExt as _;
use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::SyncError;
use super::inventory::{self, Entry, Inventory};
use super::plan::{self, Drift, Planned, PruneGuard};
use super::reconcile::Targets;
use super::target::{Resource, Target};
use crate::access::Scope;
use crate::contract::foreign;
use crate::desired::tracker::Tracker;
use crate::render::DesiredSet;
use crate::render::config::App;
use crate::render::object::ObjectKey;

/// Lines of context around each change in a diff.
pub const CONTEXT: usize = 3;

/// What a sync does to one object.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Change {
    /// Not in the cluster: the sync creates it.
    Created,
    /// The sync changes it.
    Changed,
    /// Git no longer declares it: the sync deletes it.
    Pruned,
    /// Git no longer declares it, and `gitgate.dev/prune: disabled` keeps it.
    Kept,
}

impl Change {
    /// How [`render_text`] names it.
    pub fn as_str(self) -> &'static str {
        match self {
            Change::Created => "created",
            Change::Changed => "changed",
            Change::Pruned => "pruned",
            Change::Kept => "kept (Prune=false)",
        }
    }
}

/// One object a sync would change (or keep).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectDiff {
    /// `Kind/name` or `namespace/Kind/name` ([`plan::id`]).
    pub id: String,
    /// The file in Git that declares it (for a pruned object: the file that
    /// declared it, as stamped on the live object).
    pub file: String,
    pub change: Change,
    /// Unified YAML diff, live against Git; empty for Secrets and kept
    /// objects.
    pub diff: String,
    /// A Secret: only `changed` or not, its data never shown.
    pub secret: bool,
}

/// What a sync of one app would change.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AppDiff {
    pub app: String,
    /// The commit compared with the cluster.
    pub commit: String,
    /// In the sync's order (waves), then what prune deletes or keeps.
    pub objects: Vec<ObjectDiff>,
    /// Objects a sync leaves as they are.
    pub unchanged: usize,
}

impl AppDiff {
    /// Whether a sync would change anything (kept objects are not a
    /// change).
    pub fn differs(&self) -> bool {
        self.objects.iter().any(|o| o.change != Change::Kept)
    }
}

/// What a sync of `app` (at `desired`'s commit) would change on `target`:
/// see the module documentation. `inventory`: the app's recorded
/// inventory (`None`: the app was never synced, nothing is pruned).
/// `concurrency`: requests in flight at once.
pub async fn app_diff(
    target: &Arc<Target>,
    desired: &DesiredSet,
    app: &App,
    inventory: Option<&Inventory>,
    concurrency: usize,
) -> Result<AppDiff, SyncError> {
    let planned = plan::plan_app(desired, &app.name)?;
    let crds = defined_kinds(&planned);
    let mut kinds = Vec::with_capacity(planned.len());
    for p in &planned {
        kinds.push(match target.resolve(&p.key.group, plan::version_of(&p.api_version), &p.key.kind).await {
            Ok(r) => Kind::Known(r),
            // A kind whose CRD this app creates: its objects are all new.
            Err(SyncError::UnknownKind { .. }) if crds.contains(&(p.key.group.clone(), p.key.kind.clone())) => {
                Kind::Defined
            }
            Err(e) => return Err(e),
        });
    }
    let mut live = listed(target, &app.name, &planned, &kinds).await?;
    let width = concurrency.max(1);
    // Boxed, so the route's future is Send (rustc cannot prove it of a
    // stream of closures' futures that borrow).
    let jobs: Vec<BoxFuture<'_, Found>> = planned
        .iter()
        .zip(kinds)
        .map(|(p, kind)| {
            let seen = live.remove(&p.key);
            Box::pin(object_diff(target, p, kind, seen)) as _
        })
        .collect();
    let found: Vec<Found> = futures_util::stream::iter(jobs).buffered(width).collect().await;
    let mut objects = Vec::new();
    let mut unchanged = 0usize;
    for f in found {
        match f? {
            Some(d) => objects.push(d),
            None => unchanged += 1,
        }
    }
    if let Some(inv) = inventory {
        let keys: HashSet<ObjectKey> = planned.iter().map(|p| p.key.clone()).collect();
        // Everything prune would touch (the mass-prune guard is the sync's
        // business: a guarded commit still shows what it would delete).
        let all = PruneGuard { max_count: usize::MAX, max_share: 1.0 };
        let prune = plan::prune_plan(&inv.entries, inv.guard_base(), &keys, all, true);
        let gone: Vec<BoxFuture<'_, Found>> = prune
            .delete
            .iter()
            .map(|e| (e, Change::Pruned))
            .chain(prune.kept.iter().map(|e| (e, Change::Kept)))
            .map(|(e, change)| Box::pin(pruned_diff(target, e, change)) as _)
            .collect();
        let found: Vec<Found> = futures_util::stream::iter(gone).buffered(width).collect().await;
        for f in found {
            if let Some(d) = f? {
                objects.push(d);
            }
        }
    }
    Ok(AppDiff { app: app.name.clone(), commit: desired.commit().to_string(), objects, unchanged })
}

/// One object's answer: `None` when a sync leaves it as it is.
type Found = Result<Option<ObjectDiff>, SyncError>;

/// How one of Git's objects is reached.
enum Kind {
    Known(Resource),
    /// Unknown to the cluster, and defined by a CRD of the same app.
    Defined,
}

/// The live objects of the app Git declares, read as the sync reads them:
/// one list per kind and namespace, by the app label. An object the lists
/// miss (not labelled yet) is read on its own by [`object_diff`].
async fn listed(
    target: &Target,
    app: &str,
    planned: &[Planned],
    kinds: &[Kind],
) -> Result<HashMap<ObjectKey, Value>, SyncError> {
    let selector = format!("{}={app}", crate::contract::APP_LABEL);
    let wanted: HashSet<&ObjectKey> = planned.iter().map(|p| &p.key).collect();
    let mut scopes: Vec<(Resource, Option<String>)> = Vec::new();
    let mut seen = HashSet::new();
    for (p, kind) in planned.iter().zip(kinds) {
        let Kind::Known(r) = kind else { continue };
        let ns = (r.namespaced && !p.key.namespace.is_empty()).then(|| p.key.namespace.clone());
        if seen.insert((r.api.api_version.clone(), r.api.kind.clone(), ns.clone())) {
            scopes.push((r.clone(), ns));
        }
    }
    let mut out = HashMap::new();
    for (r, ns) in scopes {
        let secret = r.api.group.is_empty() && r.api.kind == "Secret";
        target
            .list_each(&r, ns.as_deref(), &selector, |v| {
                let meta = |k: &str| v.pointer(&format!("/metadata/{k}")).and_then(Value::as_str).unwrap_or_default();
                let key = ObjectKey::new(&r.api.group, &r.api.kind, meta("namespace"), meta("name"));
                if wanted.contains(&key) {
                    out.insert(key, v);
                }
            })
            .await
            .map_err(|e| if secret { scrubbed(e, &[]) } else { e })?;
    }
    Ok(out)
}

/// The (group, kind) of each CRD the app itself defines: its objects of
/// those kinds may not be known to the cluster yet.
fn defined_kinds(planned: &[Planned]) -> HashSet<(String, String)> {
    planned
        .iter()
        .filter(|p| p.key.group == "apiextensions.k8s.io" && p.key.kind == "CustomResourceDefinition")
        .filter_map(|p| {
            let v: Value = serde_json::from_str(&p.manifest).ok()?;
            let group = v.pointer("/spec/group")?.as_str()?.to_string();
            let kind = v.pointer("/spec/names/kind")?.as_str()?.to_string();
            Some((group, kind))
        })
        .collect()
}

fn is_secret(key: &ObjectKey) -> bool {
    key.group.is_empty() && key.kind == "Secret"
}

/// One of Git's objects: `None` when a sync leaves it as it is.
/// `listed`: the live object, when the app's lists found it.
async fn object_diff(target: &Target, p: &Planned, kind: Kind, listed: Option<Value>) -> Found {
    let secret = is_secret(&p.key);
    let (ns, name) = (p.key.namespace.as_str(), p.key.name.as_str());
    let resource = match kind {
        Kind::Known(r) => r,
        Kind::Defined => {
            let new = trim(p.stamped()?);
            return Ok(Some(described(p, Change::Created, None, Some(&new), secret)));
        }
    };
    let live = match listed {
        Some(v) => Some(v),
        None => target.get(&resource, ns, name).await.map_err(|e| withheld_if(secret, e, p, None))?,
    };
    // What the sync would not write: stamps current, Git's fields in
    // place, no field another manager added.
    if plan::drift(p, live.as_ref()) == Drift::InSync {
        return Ok(None);
    }
    let applied = plan::respect_ignored(p, live.as_ref())?;
    let new = match target.apply_dry_run_object(&resource, ns, name, &applied).await {
        Ok(v) => v,
        // Its namespace does not exist yet (the same sync creates it
        // first): Git's form is what would be created.
        Err(e) if live.is_none() && not_found(&e) => applied,
        Err(e) => return Err(withheld_if(secret, e, p, live.as_ref())),
    };
    let new = match &live {
        Some(l) => without_foreign(p, l, new),
        None => new,
    };
    let new = trim(new);
    let old = live.map(trim);
    if old.as_ref() == Some(&new) {
        return Ok(None);
    }
    let change = if old.is_some() { Change::Changed } else { Change::Created };
    Ok(Some(described(p, change, old.as_ref(), Some(&new), secret)))
}

/// The dry-run result without the fields other managers added: a sync
/// removes them with a JSON patch after its apply
/// ([`plan::Observed::foreign`]).
fn without_foreign(p: &Planned, live: &Value, mut new: Value) -> Value {
    let found = plan::foreign_fields(p, live);
    if found.is_empty() {
        return new;
    }
    let removal = foreign::removal(live, &found);
    if let Ok(patch) = serde_json::from_value::<json_patch::Patch>(removal) {
        let before = new.clone();
        if json_patch::patch(&mut new, &patch).is_err() {
            // A patch that does not fit the dry-run result (the apply
            // moved things): show the apply alone.
            return before;
        }
    }
    new
}

fn described(p: &Planned, change: Change, old: Option<&Value>, new: Option<&Value>, secret: bool) -> ObjectDiff {
    let id = p.id();
    ObjectDiff {
        diff: if secret { String::new() } else { yaml_diff(&id, old, new) },
        id,
        file: p.file().to_string(),
        change,
        secret,
    }
}

/// An inventory entry Git no longer declares: `None` when it is gone
/// already (the prune has nothing to do).
async fn pruned_diff(target: &Target, e: &Entry, change: Change) -> Result<Option<ObjectDiff>, SyncError> {
    let key = e.key();
    let secret = is_secret(&key);
    let resource = match target.resolve(&e.group, &e.version, &e.kind).await {
        Ok(r) => r,
        // Its CRD is gone: so is the object.
        Err(SyncError::UnknownKind { .. }) => return Ok(None),
        Err(err) => return Err(err),
    };
    let live = match target.get(&resource, &e.namespace, &e.name).await {
        Ok(Some(v)) => v,
        Ok(None) => return Ok(None),
        Err(err) if secret => return Err(scrubbed(err, &[])),
        Err(err) => return Err(err),
    };
    let id = plan::id(&key);
    let file = live
        .pointer("/metadata/annotations")
        .and_then(|a| a.get(crate::contract::SOURCE_ANNOTATION))
        .and_then(Value::as_str)
        .and_then(|s| s.split_once(':'))
        .map(|(_, f)| f.to_string())
        .unwrap_or_default();
    let diff = if secret || change == Change::Kept { String::new() } else { yaml_diff(&id, Some(&trim(live)), None) };
    Ok(Some(ObjectDiff { id, file, change, diff, secret }))
}

fn not_found(e: &SyncError) -> bool {
    matches!(e, SyncError::Kube { source, .. } if matches!(source.as_ref(), kube::Error::Api(s) if s.code == 404))
}

/// For a Secret, `e` as a [`SyncError::Secret`] whose text holds none of
/// the values of Git's manifest or of the live object; others as they are.
fn withheld_if(secret: bool, e: SyncError, p: &Planned, live: Option<&Value>) -> SyncError {
    if !secret {
        return e;
    }
    let git: Option<Value> = serde_json::from_str(&p.manifest).ok();
    let objects: Vec<&Value> = git.iter().chain(live).collect();
    scrubbed(e, &objects)
}

/// Values shorter than this are not searched for in a message (a
/// one-letter value would blank it); a message is withheld whole when a
/// Secret holds one.
const SCRUB_MIN: usize = 4;

/// `e`'s text with every value under `data`/`stringData` of `objects`
/// (as written, base64-decoded, base64-encoded and JSON-escaped) replaced;
/// withheld whole when a value is too short to search for.
fn scrubbed(e: SyncError, objects: &[&Value]) -> SyncError {
    let (action, text) = match &e {
        // The apiserver's own words, once: kube's text of an API error
        // repeats the message escaped (its Debug form).
        SyncError::Kube { action, source } => match source.as_ref() {
            kube::Error::Api(s) => (action.clone(), format!("{} ({} {})", s.message, s.code, s.reason)),
            other => (action.clone(), other.to_string()),
        },
        other => ("diff a Secret".to_string(), other.to_string()),
    };
    SyncError::Secret { action, detail: scrub(&text, objects) }
}

/// See [`scrubbed`].
pub fn scrub(text: &str, objects: &[&Value]) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut values: Vec<String> = Vec::new();
    for o in objects {
        for field in ["data", "stringData"] {
            let Some(map) = o.get(field).and_then(Value::as_object) else { continue };
            for v in map.values() {
                let Some(s) = v.as_str() else { continue };
                values.push(s.to_string());
                if field == "data" {
                    if let Ok(bytes) = b64.decode(s) {
                        values.push(String::from_utf8_lossy(&bytes).into_owned());
                    }
                } else {
                    values.push(b64.encode(s));
                }
            }
        }
    }
    let mut forms: Vec<String> = Vec::new();
    for v in values {
        // As written, each line, and escaped once and twice (JSON, Go's
        // %q and Rust's Debug escape quotes and newlines alike).
        let lines: Vec<String> = v.lines().map(str::to_string).collect();
        let escape = |s: &str| {
            let q = serde_json::to_string(s).unwrap_or_default();
            q.get(1..q.len().saturating_sub(1)).unwrap_or_default().to_string()
        };
        let once = escape(&v);
        let twice = escape(&once);
        forms.push(v);
        forms.extend(lines);
        forms.push(once);
        forms.push(twice);
    }
    if forms.iter().any(|f| !f.trim().is_empty() && f.trim().chars().count() < SCRUB_MIN) {
        return "the apiserver's message is withheld (it may quote a value of the Secret)".to_string();
    }
    // Longest first, so a value's part never leaves the rest behind.
    forms.retain(|f| !f.trim().is_empty());
    forms.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
    forms.dedup();
    let mut out = text.to_string();
    for f in &forms {
        out = out.replace(f.as_str(), "(withheld)");
        let t = f.trim();
        if t != f.as_str() {
            out = out.replace(t, "(withheld)");
        }
    }
    out
}

/// A live or dry-run object without what the apiserver keeps for itself:
/// `metadata.managedFields`, `resourceVersion`, `generation`, `uid`,
/// `creationTimestamp`, `selfLink`, and `status`.
pub fn trim(mut v: Value) -> Value {
    if let Some(o) = v.as_object_mut() {
        o.remove("status");
        if let Some(meta) = o.get_mut("metadata").and_then(Value::as_object_mut) {
            for k in ["managedFields", "resourceVersion", "generation", "uid", "creationTimestamp", "selfLink"] {
                meta.remove(k);
            }
        }
    }
    v
}

/// YAML of an object (keys sorted); an object that does not serialise
/// reads as its JSON (which is YAML too).
pub fn to_yaml(v: &Value) -> String {
    serde_saphyr::to_string(v).unwrap_or_else(|_| format!("{v}\n"))
}

fn yaml_diff(id: &str, old: Option<&Value>, new: Option<&Value>) -> String {
    let old = old.map(to_yaml).unwrap_or_default();
    let new = new.map(to_yaml).unwrap_or_default();
    unified_with(&old, &new, CONTEXT, &format!("live/{id}"), &format!("git/{id}"))
}

/// A unified diff of two texts, line by line (Myers' shortest edit
/// script), with `context` lines around each change, headed
/// `--- old` / `+++ new`; empty when they are equal. A last line without
/// a newline is marked `\ No newline at end of file`, as diff(1) does.
pub fn unified(old: &str, new: &str, context: usize) -> String {
    unified_with(old, new, context, "old", "new")
}

/// [`unified`] with the two files' names.
pub fn unified_with(old: &str, new: &str, context: usize, old_name: &str, new_name: &str) -> String {
    use std::fmt::Write as _;
    if old == new {
        return String::new();
    }
    let a: Vec<&str> = old.split_inclusive('\n').collect();
    let b: Vec<&str> = new.split_inclusive('\n').collect();
    let ops = edit_script(&a, &b);
    let mut out = format!("--- {old_name}\n+++ {new_name}\n");
    // Hunks: runs of changes closer than 2×context apart, with context.
    let changed: Vec<usize> =
        ops.iter().enumerate().filter(|(_, o)| !matches!(o, Op::Equal(..))).map(|(i, _)| i).collect();
    let mut groups: Vec<(usize, usize)> = Vec::new();
    for &i in &changed {
        match groups.last_mut() {
            Some((_, end)) if i - *end <= 2 * context + 1 => *end = i,
            _ => groups.push((i, i)),
        }
    }
    for (first, last) in groups {
        let start = first.saturating_sub(context);
        let end = (last + context + 1).min(ops.len());
        let part = &ops[start..end];
        // Where the hunk starts in each file (0-based): the first op's
        // position, counted from the ops before it.
        let (mut ai, mut bi) = (0usize, 0usize);
        for o in &ops[..start] {
            match o {
                Op::Equal(..) => {
                    ai += 1;
                    bi += 1;
                }
                Op::Delete(_) => ai += 1,
                Op::Insert(_) => bi += 1,
            }
        }
        let a_len = part.iter().filter(|o| !matches!(o, Op::Insert(_))).count();
        let b_len = part.iter().filter(|o| !matches!(o, Op::Delete(_))).count();
        let range = |at: usize, len: usize| match len {
            0 => format!("{at},0"),
            1 => format!("{}", at + 1),
            n => format!("{},{n}", at + 1),
        };
        let _ = writeln!(out, "@@ -{} +{} @@", range(ai, a_len), range(bi, b_len));
        for o in part {
            let (mark, line) = match *o {
                Op::Equal(i, _) => (' ', a[i]),
                Op::Delete(i) => ('-', a[i]),
                Op::Insert(j) => ('+', b[j]),
            };
            out.push(mark);
            out.push_str(line);
            if !line.ends_with('\n') {
                out.push_str("\n\\ No newline at end of file\n");
            }
        }
    }
    out
}

/// One step of an edit script: indices into the old and new lines.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    Equal(usize, usize),
    Delete(usize),
    Insert(usize),
}

/// Beyond this many differences the middle is replaced whole (the trace
/// of Myers' algorithm grows with its square).
const MAX_EDITS: usize = 1024;

/// The shortest edit script from `a` to `b`: the common prefix and suffix,
/// and Myers' greedy algorithm on what is between.
fn edit_script(a: &[&str], b: &[&str]) -> Vec<Op> {
    let prefix = a.iter().zip(b).take_while(|(x, y)| x == y).count();
    let suffix = a[prefix..].iter().rev().zip(b[prefix..].iter().rev()).take_while(|(x, y)| x == y).count();
    let (am, bm) = (&a[prefix..a.len() - suffix], &b[prefix..b.len() - suffix]);
    let mut ops: Vec<Op> = (0..prefix).map(|i| Op::Equal(i, i)).collect();
    match myers(am, bm) {
        Some(middle) => ops.extend(middle.into_iter().map(|o| match o {
            Op::Equal(i, j) => Op::Equal(i + prefix, j + prefix),
            Op::Delete(i) => Op::Delete(i + prefix),
            Op::Insert(j) => Op::Insert(j + prefix),
        })),
        None => {
            ops.extend((0..am.len()).map(|i| Op::Delete(i + prefix)));
            ops.extend((0..bm.len()).map(|j| Op::Insert(j + prefix)));
        }
    }
    let (sa, sb) = (a.len() - suffix, b.len() - suffix);
    ops.extend((0..suffix).map(|k| Op::Equal(sa + k, sb + k)));
    ops
}

/// Myers' O((N+M)·D) algorithm; `None` past [`MAX_EDITS`].
fn myers(a: &[&str], b: &[&str]) -> Option<Vec<Op>> {
    let (n, m) = (a.len() as isize, b.len() as isize);
    let max = (n + m) as usize;
    if max == 0 {
        return Some(Vec::new());
    }
    let offset = max as isize;
    let mut v = vec![0isize; 2 * max + 2];
    // The frontier after each d, for the walk back.
    let mut trace: Vec<Vec<isize>> = Vec::new();
    let idx = |k: isize| (k + offset) as usize;
    let mut found = None;
    'outer: for d in 0..=(max as isize) {
        if d as usize > MAX_EDITS {
            return None;
        }
        for k in (-d..=d).step_by(2) {
            let mut x =
                if k == -d || (k != d && v[idx(k - 1)] < v[idx(k + 1)]) { v[idx(k + 1)] } else { v[idx(k - 1)] + 1 };
            let mut y = x - k;
            while x < n && y < m && a[x as usize] == b[y as usize] {
                x += 1;
                y += 1;
            }
            v[idx(k)] = x;
            if x >= n && y >= m {
                trace.push(v[idx(-d)..=idx(d)].to_vec());
                found = Some(d);
                break 'outer;
            }
        }
        trace.push(v[idx(-d)..=idx(d)].to_vec());
    }
    let d_end = found?;
    // Walk back from (n, m): each d's frontier says where the snake began.
    let at = |d: isize, k: isize| trace[d as usize][(k + d) as usize];
    let mut ops = Vec::new();
    let (mut x, mut y) = (n, m);
    for d in (1..=d_end).rev() {
        let k = x - y;
        let prev_k = if k == -d || (k != d && at(d - 1, k - 1) < at(d - 1, k + 1)) { k + 1 } else { k - 1 };
        let prev_x = at(d - 1, prev_k);
        let prev_y = prev_x - prev_k;
        while x > prev_x && y > prev_y {
            x -= 1;
            y -= 1;
            ops.push(Op::Equal(x as usize, y as usize));
        }
        if x == prev_x {
            y -= 1;
            ops.push(Op::Insert(y as usize));
        } else {
            x -= 1;
            ops.push(Op::Delete(x as usize));
        }
    }
    while x > 0 && y > 0 {
        x -= 1;
        y -= 1;
        ops.push(Op::Equal(x as usize, y as usize));
    }
    ops.reverse();
    Some(ops)
}

/// What `gitgate diff` prints (no colour): per object its change, id and
/// file, then its diff; then the counts.
pub fn render_text(d: &AppDiff) -> String {
    use std::fmt::Write as _;
    let short: String = d.commit.chars().take(12).collect();
    let mut out = format!("app {} at commit {short}\n", d.app);
    for o in &d.objects {
        let file = if o.file.is_empty() { String::new() } else { format!(" ({})", o.file) };
        let _ = writeln!(out, "\n{} {}{file}", o.change.as_str(), o.id);
        if o.secret && o.change != Change::Kept {
            out.push_str("  (a Secret: its data is not shown)\n");
        }
        out.push_str(&o.diff);
    }
    let count = |c: Change| d.objects.iter().filter(|o| o.change == c).count();
    let parts: Vec<String> = [Change::Created, Change::Changed, Change::Pruned, Change::Kept]
        .into_iter()
        .map(|c| (c, count(c)))
        .filter(|(_, n)| *n > 0)
        .map(|(c, n)| format!("{n} {}", c.as_str()))
        .chain(std::iter::once(format!("{} unchanged", d.unchanged)))
        .collect();
    let _ = writeln!(out, "\n{}{}", if d.differs() { "" } else { "no differences: " }, parts.join(", "));
    out
}

/// Errors of the diff route and its [`DiffSource`].
#[derive(Debug, thiserror::Error)]
pub enum DiffError {
    #[error("no app named {0}")]
    NoApp(String),
    /// `--commit` names no commit of the tracked branch (why, in words).
    #[error("{0}")]
    Commit(String),
    #[error("no commit is in force yet (Git has not been read and rendered)")]
    NotReady,
    #[error("no cluster is connected: gitgate runs in plan mode")]
    NoCluster,
    #[error("failed to read the repository")]
    Git(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("commit {commit} does not render")]
    Render {
        commit: String,
        #[source]
        source: Box<crate::render::RenderError>,
    },
    #[error(transparent)]
    Sync(#[from] SyncError),
}

impl DiffError {
    /// The HTTP status the route answers it with.
    pub fn status(&self) -> StatusCode {
        match self {
            DiffError::NoApp(_) => StatusCode::NOT_FOUND,
            DiffError::Commit(_) => StatusCode::BAD_REQUEST,
            DiffError::Render { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            DiffError::NotReady | DiffError::NoCluster => StatusCode::SERVICE_UNAVAILABLE,
            DiffError::Git(_) => StatusCode::INTERNAL_SERVER_ERROR,
            DiffError::Sync(_) => StatusCode::BAD_GATEWAY,
        }
    }
}

/// Where the route gets the desired set to compare with the cluster.
pub trait DiffSource: Send + Sync {
    /// The desired set holding `app` at `commit` (`None`: the one the
    /// sync loop syncs to).
    fn desired_for(&self, app: &str, commit: Option<&str>) -> BoxFuture<'_, Result<Arc<DesiredSet>, DiffError>>;
}

/// The Git tracker: `None` is its current desired set (the tracked head,
/// once it rendered and verified: with an approval gate, the commit
/// waiting for approval); `Some(c)` renders commit `c`, a full ID or
/// unique prefix of the head or of one of its ancestors
/// ([`Tracker::on_branch`]).
impl DiffSource for Tracker {
    fn desired_for(&self, _app: &str, commit: Option<&str>) -> BoxFuture<'_, Result<Arc<DesiredSet>, DiffError>> {
        let commit = commit.map(str::to_string);
        Box::pin(async move {
            let current = self.current().ok_or(DiffError::NotReady)?;
            let Some(commit) = commit else { return Ok(current) };
            let id = self.on_branch(&commit).map_err(DiffError::Commit)?;
            if id == current.commit() {
                return Ok(current);
            }
            self.render_commit(id).await.map_err(|e| match e {
                crate::desired::tracker::TrackError::Render { commit, source } => {
                    DiffError::Render { commit, source: Box::new(source) }
                }
                other => DiffError::Git(Box::new(other)),
            })
        })
    }
}

/// What the diff route reads.
pub struct DiffState {
    pub source: Arc<dyn DiffSource>,
    /// The destination clusters (`None`: no cluster, plan mode).
    pub targets: Option<Arc<Targets>>,
    /// gitgate's namespace, where the inventories are.
    pub namespace: String,
    /// Requests in flight at once.
    pub concurrency: usize,
}

#[derive(Deserialize, Default)]
struct DiffQuery {
    #[serde(default)]
    commit: Option<String>,
}

/// `GET /api/v1/apps/{name}/diff?commit=C`: the [`AppDiff`] as JSON, to a
/// caller whose [`Scope`] (set by the dashboard's gate) sees the app; an
/// app it does not see is as unknown as one that does not exist (404).
pub fn router(state: Arc<DiffState>) -> Router {
    Router::new().route("/api/v1/apps/{name}/diff", get(diff_route)).with_state(state)
}

async fn diff_route(
    State(state): State<Arc<DiffState>>,
    Extension(scope): Extension<Scope>,
    Path(name): Path<String>,
    Query(q): Query<DiffQuery>,
) -> Response {
    match answer(&state, &scope, &name, q.commit.as_deref().filter(|c| !c.is_empty())).await {
        Ok(d) => Json(d).into_response(),
        Err(e) => {
            let message = crate::error_chain(&e);
            if e.status().is_server_error() {
                tracing::warn!(app = %name, error = %message, "diff failed");
            }
            (e.status(), Json(serde_json::json!({ "error": message }))).into_response()
        }
    }
}

async fn answer(state: &DiffState, scope: &Scope, name: &str, commit: Option<&str>) -> Result<AppDiff, DiffError> {
    if !scope.sees_app(name) {
        return Err(DiffError::NoApp(name.to_string()));
    }
    let desired = state.source.desired_for(name, commit).await?;
    let app = desired.app(name).cloned().ok_or_else(|| DiffError::NoApp(name.to_string()))?;
    let targets = state.targets.as_ref().ok_or(DiffError::NoCluster)?;
    let target = targets.get(&app.destination.cluster).await?;
    let inventories = inventory::read_all(targets.default_target().client(), &state.namespace).await?;
    Ok(app_diff(&target, &desired, &app, inventories.get(name), state.concurrency).await?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn lines(n: usize) -> String {
        (1..=n).map(|i| format!("line {i}\n")).collect()
    }

    #[test]
    fn unified_diffs_have_hunks_with_context_and_diff1s_ranges() {
        assert_eq!(unified("a\nb\n", "a\nb\n", 3), "", "equal texts: no diff");
        let old = lines(20);
        let new = old.replace("line 5\n", "line five\n").replace("line 16\n", "");
        let d = unified(&old, &new, 2);
        let hunks: Vec<&str> = d.lines().filter(|l| l.starts_with("@@")).collect();
        // two changes 11 lines apart: two hunks with 2 lines of context
        assert_eq!(hunks, ["@@ -3,5 +3,5 @@", "@@ -14,5 +14,4 @@"], "{d}");
        assert!(d.starts_with("--- old\n+++ new\n"), "{d}");
        assert!(d.contains(" line 4\n-line 5\n+line five\n line 6\n"), "{d}");
        assert!(d.contains(" line 15\n-line 16\n line 17\n"), "{d}");
        assert!(!d.contains("line 10"), "outside the context: {d}");
        // close changes share a hunk
        let near = old.replace("line 5\n", "x\n").replace("line 9\n", "y\n");
        assert_eq!(unified(&old, &near, 2).lines().filter(|l| l.starts_with("@@")).count(), 1);
        assert_eq!(unified(&old, &near, 1).lines().filter(|l| l.starts_with("@@")).count(), 2);
        // from and to nothing
        assert_eq!(unified("", "a\nb\n", 3), "--- old\n+++ new\n@@ -0,0 +1,2 @@\n+a\n+b\n");
        assert_eq!(unified("a\n", "", 3), "--- old\n+++ new\n@@ -1 +0,0 @@\n-a\n");
    }

    #[test]
    fn a_last_line_without_a_newline_is_marked_as_diff1_marks_it() {
        let d = unified("a\nb", "a\nb\n", 3);
        assert_eq!(d, "--- old\n+++ new\n@@ -1,2 +1,2 @@\n a\n-b\n\\ No newline at end of file\n+b\n");
        let d = unified("a\n", "a\nc", 3);
        assert_eq!(d, "--- old\n+++ new\n@@ -1 +1,2 @@\n a\n+c\n\\ No newline at end of file\n");
    }

    #[test]
    fn the_edit_script_is_a_shortest_one() {
        // Myers' classic example: ABCABBA → CBABAC in 5 edits.
        let a: Vec<&str> = "ABCABBA".split("").filter(|s| !s.is_empty()).collect();
        let b: Vec<&str> = "CBABAC".split("").filter(|s| !s.is_empty()).collect();
        let ops = edit_script(&a, &b);
        assert_eq!(ops.iter().filter(|o| !matches!(o, Op::Equal(..))).count(), 5, "{ops:?}");
        // replaying it gives the new text
        let mut got = Vec::new();
        let mut ai = 0;
        for o in &ops {
            match *o {
                Op::Equal(i, j) => {
                    assert_eq!((i, a[i]), (ai, b[j]));
                    got.push(a[i]);
                    ai += 1;
                }
                Op::Delete(i) => {
                    assert_eq!(i, ai);
                    ai += 1;
                }
                Op::Insert(j) => got.push(b[j]),
            }
        }
        assert_eq!(got, b);
        assert_eq!(ai, a.len());
    }

    #[test]
    fn a_huge_rewrite_is_one_replacement() {
        let old: String = (0..5000).map(|i| format!("a{i}\n")).collect();
        let new: String = (0..5000).map(|i| format!("b{i}\n")).collect();
        let d = unified(&old, &new, 3);
        assert!(d.contains("@@ -1,5000 +1,5000 @@"), "{}", &d[..200]);
    }

    fn object(change: Change, id: &str, diff: &str, secret: bool) -> ObjectDiff {
        ObjectDiff { id: id.into(), file: format!("apps/{id}.yaml"), change, diff: diff.into(), secret }
    }

    #[test]
    fn the_text_names_each_object_shows_its_diff_and_counts_the_rest() {
        let web = unified_with("image: web:1\n", "image: web:2\n", 3, "live/w", "git/w");
        let d = AppDiff {
            app: "shop".into(),
            commit: "0123456789abcdef0123456789abcdef01234567".into(),
            objects: vec![
                object(Change::Changed, "shop/Deployment/web", &web, false),
                object(Change::Changed, "shop/Secret/db", "", true),
                object(Change::Pruned, "shop/ConfigMap/old", "", false),
                object(Change::Kept, "shop/ConfigMap/keep", "", false),
            ],
            unchanged: 4,
        };
        let text = render_text(&d);
        assert!(text.starts_with("app shop at commit 0123456789ab\n"), "{text}");
        assert!(text.contains("changed shop/Deployment/web (apps/shop/Deployment/web.yaml)\n--- live/w\n"), "{text}");
        assert!(text.contains("-image: web:1\n+image: web:2\n"), "{text}");
        assert!(
            text.contains("changed shop/Secret/db (apps/shop/Secret/db.yaml)\n  (a Secret: its data is not shown)\n")
        );
        assert!(text.contains("kept (Prune=false) shop/ConfigMap/keep"), "{text}");
        assert!(text.trim_end().ends_with("2 changed, 1 pruned, 1 kept (Prune=false), 4 unchanged"), "{text}");
        assert!(!text.contains('\u{1b}'), "no colour");
        assert!(d.differs());
        let same = AppDiff { objects: vec![object(Change::Kept, "k", "", false)], ..d };
        assert!(!same.differs(), "a kept object is not a change");
        assert!(render_text(&same).trim_end().ends_with("no differences: 1 kept (Prune=false), 4 unchanged"));
    }

    #[test]
    fn trimming_drops_what_the_apiserver_keeps_for_itself() {
        let v = json!({"apiVersion": "v1", "kind": "ConfigMap", "status": {"x": 1},
            "metadata": {"name": "a", "uid": "u", "resourceVersion": "7", "generation": 2, "creationTimestamp": "t",
                         "managedFields": [], "labels": {"k": "v"}}, "data": {"k": "v"}});
        assert_eq!(
            trim(v),
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a", "labels": {"k": "v"}}, "data": {"k": "v"}})
        );
        let yaml = to_yaml(&json!({"b": 1, "a": {"c": "x"}}));
        assert!(yaml.find("a:").unwrap() < yaml.find("b:").unwrap(), "keys sorted: {yaml}");
        let back: Value = serde_saphyr::from_str(&yaml).unwrap();
        assert_eq!(back, json!({"b": 1, "a": {"c": "x"}}), "valid YAML");
    }

    /// The canary: a Secret's values never reach an error's text, in any
    /// form the apiserver or a webhook might quote them in.
    #[test]
    fn a_secrets_values_are_scrubbed_from_errors_or_the_message_withheld() {
        use base64::Engine as _;
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        let canary = "CANARY-s3cr3t\"value";
        let git = json!({"kind": "Secret", "stringData": {"password": canary}});
        let live = json!({"kind": "Secret", "data": {"token": b64("CANARY-token-line1\nline-two-canary")}});
        let message = format!(
            "denied: {canary} / {} / {} / {} / CANARY-token-line1 / line-two-canary",
            b64(canary),
            serde_json::to_string(canary).unwrap(),
            b64("CANARY-token-line1\nline-two-canary")
        );
        let message = format!("{message} / {message:?}");
        let out = scrub(&message, &[&git, &live]);
        assert!(!out.contains("CANARY") && !out.contains("s3cr3t"), "{out}");
        assert!(!out.contains(&b64(canary)) && !out.contains("line-two"), "{out}");
        assert!(out.starts_with("denied: (withheld)"), "the rest is kept: {out}");
        // a value too short to search for: the message is withheld whole
        let short = json!({"stringData": {"pin": "42"}});
        let out = scrub("bad pin 42", &[&short]);
        assert!(!out.contains("42") && out.contains("withheld"), "{out}");
        let e = SyncError::kube(
            "apply shop/Secret/db (dry run)",
            kube::Error::Api(kube::core::Status::failure(&message, "Invalid").with_code(422).boxed()),
        );
        let shown = crate::error_chain(&scrubbed(e, &[&git, &live]));
        assert!(shown.starts_with("failed to apply shop/Secret/db (dry run): "), "{shown}");
        assert!(!shown.contains("CANARY"), "{shown}");
    }
}
