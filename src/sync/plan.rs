//! Pure planning, no I/O: from the desired set of a commit and what the
//! cluster holds to what the sync loop applies (stamped, by wave), what it
//! leaves alone, and what it prunes.

use std::collections::HashSet;

use serde_json::{Map, Value};

use super::SyncError;
use super::inventory::Entry;
use super::status::{AppStatus, ObjectStatus, SyncStatus};
pub use super::wave::Wave;
use crate::contract::options::{Recreate, recreate_of};
use crate::contract::{self, Difference, Expected, Foreigners};
use crate::contract::{ARGO_SYNC_WAVE, PRUNE_ANNOTATION, SYNC_WAVE};
use crate::render::DesiredSet;
use crate::render::config::App;
use crate::render::desired::DesiredObject;
use crate::render::hook::{self, Hook, Phase};
use crate::render::object::ObjectKey;

/// One object as the sync loop applies it.
#[derive(Clone, Debug)]
pub struct Planned {
    pub key: ObjectKey,
    pub api_version: String,
    pub wave: Wave,
    /// Git's canonical manifest (shared with the desired set, never
    /// copied): compared with the live object, and stamped into the applied
    /// form only when it is applied ([`Planned::stamped`]).
    pub manifest: std::sync::Arc<str>,
    pub digest: String,
    pub commit: String,
    pub source: String,
    /// JSON pointers left to other controllers.
    pub ignore: Vec<String>,
    /// `gitgate.dev/prune: disabled` in Git.
    pub keep: bool,
    /// A sealed Secret: the `gitgate.dev/sealed-digest` its unsealed form
    /// carries (its values are compared by that, never read).
    pub sealed_digest: Option<String>,
    /// What an apply that fails on an immutable field may do.
    pub recreate: Recreate,
}

impl Planned {
    /// The manifest with the stamps (commit, source, digest, app label):
    /// what is applied. Made on demand, so a sync of 10,000 objects never
    /// holds 10,000 parsed manifests.
    pub fn stamped(&self) -> Result<Value, SyncError> {
        let bad = |reason: String| SyncError::Manifest { object: self.id(), file: self.file().to_string(), reason };
        let mut object: Value = serde_json::from_str(&self.manifest).map_err(|e| bad(e.to_string()))?;
        contract::stamp::stamp(&mut object, &self.key.namespace, &self.expected()).map_err(|e| bad(e.into()))?;
        Ok(object)
    }

    /// What Git declares of it, as [`contract::matches_git`] compares it.
    pub fn expected(&self) -> Expected<'_> {
        Expected {
            manifest: &self.manifest,
            digest: &self.digest,
            commit: &self.commit,
            app: self.source.split_once(':').map_or("", |(a, _)| a),
            file: self.file(),
            ignore: &self.ignore,
            sealed_digest: self.sealed_digest.as_deref(),
        }
    }

    /// The file in the repository that declared it.
    pub fn file(&self) -> &str {
        self.source.split_once(':').map(|(_, f)| f).unwrap_or_default()
    }

    /// `Kind/name` or `namespace/Kind/name`.
    pub fn id(&self) -> String {
        id(&self.key)
    }

    pub fn entry(&self) -> Entry {
        Entry {
            group: self.key.group.clone(),
            version: version_of(&self.api_version).to_string(),
            kind: self.key.kind.clone(),
            namespace: self.key.namespace.clone(),
            name: self.key.name.clone(),
            wave: self.wave,
            keep: self.keep,
        }
    }
}

pub fn id(key: &ObjectKey) -> String {
    if key.namespace.is_empty() {
        format!("{}/{}", key.kind, key.name)
    } else {
        format!("{}/{}/{}", key.namespace, key.kind, key.name)
    }
}

/// `apps/v1` → `v1`, `v1` → `v1`.
pub fn version_of(api_version: &str) -> &str {
    api_version.rsplit('/').next().unwrap_or(api_version)
}

/// The wave of a manifest: phase 0 for Namespaces and CRDs, else its
/// `gitgate.dev/sync-wave` (or Argo CD's) annotation, 0 by default.
pub fn wave_of(group: &str, kind: &str, manifest: &Value) -> Result<Wave, String> {
    if (group.is_empty() && kind == "Namespace")
        || (group == "apiextensions.k8s.io" && kind == "CustomResourceDefinition")
    {
        return Ok(Wave { phase: 0, wave: 0 });
    }
    let annotations = manifest.pointer("/metadata/annotations");
    // Helm's hook weight orders its hooks (the sync-wave annotations win).
    let raw = annotations
        .and_then(|a| a.get(SYNC_WAVE).or_else(|| a.get(ARGO_SYNC_WAVE)).or_else(|| a.get(hook::HELM_WEIGHT)));
    let wave = match raw {
        None => 0,
        Some(Value::String(s)) => s.trim().parse::<i64>().map_err(|_| format!("sync wave {s:?} is not an integer"))?,
        Some(Value::Number(n)) => n.as_i64().ok_or_else(|| format!("sync wave {n} is not an integer"))?,
        Some(other) => return Err(format!("sync wave {other} is not an integer")),
    };
    Ok(Wave { phase: 1, wave })
}

/// `gitgate.dev/prune: disabled` (or `false`) on an object.
pub fn prune_disabled(object: &Value) -> bool {
    object
        .pointer("/metadata/annotations")
        .and_then(|a| a.get(PRUNE_ANNOTATION))
        .and_then(Value::as_str)
        .is_some_and(|v| v.eq_ignore_ascii_case("disabled") || v.eq_ignore_ascii_case("false"))
}

/// What the sync loop needs of one of Git's objects: its wave, stamps,
/// ignored fields (the manifest is parsed once here, then dropped).
pub fn plan_object(app: &str, key: &ObjectKey, obj: &DesiredObject) -> Result<Planned, SyncError> {
    let bad = |reason: String| SyncError::Manifest { object: id(key), file: obj.source.to_string(), reason };
    let object: Value = serde_json::from_str(&obj.manifest).map_err(|e| bad(e.to_string()))?;
    let api_version = object.get("apiVersion").and_then(Value::as_str).unwrap_or_default().to_string();
    if api_version.is_empty() {
        return Err(bad("apiVersion is missing".into()));
    }
    if object.get("metadata").is_some_and(|m| !m.is_object()) {
        return Err(bad("metadata is not a map".into()));
    }
    let wave = wave_of(&key.group, &key.kind, &object).map_err(bad)?;
    let keep = prune_disabled(&object);
    let mut ignore = crate::contract::ignored_fields(&obj.manifest);
    let sealed_digest = crate::contract::sealed::git_sealed_digest(&object);
    if sealed_digest.is_some() {
        ignore.extend(crate::contract::SEALED_FORM_FIELDS.map(String::from));
    }
    Ok(Planned {
        key: key.clone(),
        api_version,
        wave,
        manifest: obj.manifest.clone(),
        digest: obj.digest_string(),
        commit: obj.commit.to_string(),
        source: format!("{app}:{}", obj.source),
        ignore,
        keep,
        sealed_digest,
        recreate: recreate_of(&object),
    })
}

/// One sync hook as the sync loop runs it.
#[derive(Clone, Debug)]
pub struct PlannedHook {
    /// Its manifest and stamps; for a hook with `generateName`, the key's
    /// name is that prefix (each run is named by the apiserver).
    pub planned: Planned,
    pub hook: Hook,
    /// `metadata.generateName`, when the hook has no `metadata.name`.
    pub generate_name: Option<String>,
}

impl PlannedHook {
    /// `PreSync Job/ns/migrate-` — how messages name the hook.
    pub fn describe(&self, phase: Phase) -> String {
        format!("{phase} hook {}", self.planned.id())
    }
}

/// The sync hooks of one app, planned, sorted by (wave, kind order, id).
pub fn plan_hooks(desired: &DesiredSet, app: &str) -> Result<Vec<PlannedHook>, SyncError> {
    let mut out = Vec::new();
    for (key, obj) in desired.app_hooks(app) {
        let planned = plan_object(app, &key, obj)?;
        let bad = |reason: String| SyncError::Manifest { object: planned.id(), file: obj.source.to_string(), reason };
        let object: Value = serde_json::from_str(&obj.manifest).map_err(|e| bad(e.to_string()))?;
        let hook = match hook::role(&object).map_err(&bad)? {
            hook::Role::Hook(h) => h,
            _ => return Err(bad("not a sync hook".into())),
        };
        let named = object.pointer("/metadata/name").and_then(Value::as_str).is_some_and(|n| !n.is_empty());
        let generate_name = (!named)
            .then(|| object.pointer("/metadata/generateName").and_then(Value::as_str).map(String::from))
            .flatten();
        out.push(PlannedHook { planned, hook, generate_name });
    }
    out.sort_by(|a, b| {
        (a.planned.wave, kind_order(&a.planned.key.kind), &a.planned.key).cmp(&(
            b.planned.wave,
            kind_order(&b.planned.key.kind),
            &b.planned.key,
        ))
    });
    Ok(out)
}

/// One step of a sync: the objects it applies and the hooks it runs, all
/// at once; the next step starts once the objects are healthy and the
/// hooks have finished.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Step {
    pub phase: Phase,
    pub wave: Wave,
    /// Indices into the planned objects.
    pub objects: Vec<usize>,
    /// Indices into the planned hooks.
    pub hooks: Vec<usize>,
}

/// The order of a sync, as Argo CD runs it: Namespaces and CRDs first (the
/// hooks may live in them), then the PreSync hooks by wave, then the waves
/// of objects with the Sync hooks of each wave, then the PostSync hooks by
/// wave. `with_hooks`: false when nothing is to be applied (a sync with no
/// change runs no hook, as Argo CD's automated sync starts no operation).
/// SyncFail hooks are [`fail_steps`].
pub fn steps(planned: &[Planned], hooks: &[PlannedHook], with_hooks: bool) -> Vec<Step> {
    use std::collections::BTreeMap;
    // (rank, wave, part): within a wave, what workloads depend on
    // ([`foundation`]: Secrets, ConfigMaps, RBAC…) is a step of its own
    // before the rest and the wave's Sync hooks, so a refused Secret keeps
    // the workloads (and the hooks, Jobs themselves) back.
    type Slot = (u8, Wave, u8);
    let mut by: BTreeMap<Slot, Step> = BTreeMap::new();
    fn slot(by: &mut BTreeMap<Slot, Step>, at: Slot, phase: Phase) -> &mut Step {
        by.entry(at).or_insert_with(|| Step { phase, wave: at.1, objects: Vec::new(), hooks: Vec::new() })
    }
    for (i, p) in planned.iter().enumerate() {
        let rank = if p.wave.phase == 0 { 0 } else { 2 };
        let part = if foundation(&p.key.kind) { 0 } else { 1 };
        slot(&mut by, (rank, p.wave, part), Phase::Sync).objects.push(i);
    }
    if with_hooks {
        for (i, h) in hooks.iter().enumerate() {
            for &phase in &h.hook.phases {
                let rank = match phase {
                    Phase::PreSync => 1,
                    Phase::Sync => 2,
                    Phase::PostSync => 3,
                    Phase::SyncFail => continue,
                };
                slot(&mut by, (rank, h.planned.wave, 1), phase).hooks.push(i);
            }
        }
    }
    by.into_values().collect()
}

/// The SyncFail hooks, by wave: run when a step fails.
pub fn fail_steps(hooks: &[PlannedHook]) -> Vec<Step> {
    let mut out: Vec<Step> = Vec::new();
    for (i, h) in hooks.iter().enumerate() {
        if !h.hook.phases.contains(&Phase::SyncFail) {
            continue;
        }
        match out.iter_mut().find(|s| s.wave == h.planned.wave) {
            Some(s) => s.hooks.push(i),
            None => {
                out.push(Step { phase: Phase::SyncFail, wave: h.planned.wave, objects: Vec::new(), hooks: vec![i] })
            }
        }
    }
    out.sort_by_key(|s| s.wave);
    out
}

/// Every object of one app, planned, sorted by (wave, kind order, id).
pub fn plan_app(desired: &DesiredSet, app: &str) -> Result<Vec<Planned>, SyncError> {
    let mut out = desired
        .app_objects(app)
        .into_iter()
        .map(|(key, obj)| plan_object(app, &key, obj))
        .collect::<Result<Vec<_>, _>>()?;
    out.sort_by(|a, b| (a.wave, kind_order(&a.key.kind), &a.key).cmp(&(b.wave, kind_order(&b.key.kind), &b.key)));
    Ok(out)
}

/// Within a wave, the kinds others depend on come first (as Argo CD and
/// Helm order them); applies inside a wave still run concurrently.
fn kind_order(kind: &str) -> usize {
    const ORDER: &[&str] = &[
        "Namespace",
        "NetworkPolicy",
        "ResourceQuota",
        "LimitRange",
        "PodSecurityPolicy",
        "PodDisruptionBudget",
        "ServiceAccount",
        "Secret",
        "ConfigMap",
        "StorageClass",
        "PersistentVolume",
        "PersistentVolumeClaim",
        "CustomResourceDefinition",
        "ClusterRole",
        "ClusterRoleBinding",
        "Role",
        "RoleBinding",
        "Service",
        "DaemonSet",
        "Pod",
        "ReplicaSet",
        "Deployment",
        "HorizontalPodAutoscaler",
        "StatefulSet",
        "Job",
        "CronJob",
        "Ingress",
        "APIService",
    ];
    ORDER.iter().position(|k| *k == kind).unwrap_or(ORDER.len())
}

/// Whether a kind is one a wave's workloads depend on (namespaces,
/// policies, service accounts, Secrets, ConfigMaps, storage, CRDs, RBAC):
/// within a wave these are applied first, and when one of them fails (a
/// Secret denied while Vault is down) the wave's workloads are not applied
/// at all, so no Deployment starts against a Secret that is not there.
pub fn foundation(kind: &str) -> bool {
    kind_order(kind) < kind_order("Service")
}

/// How the live object stands against Git.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Drift {
    /// Not in the cluster.
    Missing,
    /// Git has new content (the stamps differ): apply.
    Stale,
    /// A field Git sets was changed in the cluster (a bypass): the pointer.
    Changed(String),
    InSync,
}

impl Drift {
    pub fn needs_apply(&self) -> bool {
        !matches!(self, Drift::InSync)
    }
}

/// Compares the live object with the planned one: stamps first (an
/// unchanged manifest keeps its stamps and is not written again), then
/// every field Git sets, except the ignored ones.
pub fn drift(planned: &Planned, live: Option<&Value>) -> Drift {
    stands(planned, live, None)
}

/// [`drift`], given the foreign fields when the caller has them already
/// (`None`: found here, and only once Git's own fields hold). The answer is
/// [`contract::matches_git`]'s, the admission gate's too.
fn stands(planned: &Planned, live: Option<&Value>, foreign: Option<&[contract::Foreign]>) -> Drift {
    let Some(live) = live else { return Drift::Missing };
    let foreigners = foreign.map_or(Foreigners::Find, Foreigners::Given);
    let m = contract::matches_git(&planned.expected(), live, foreigners);
    if m.stale.is_some() {
        return Drift::Stale;
    }
    match m.difference {
        None => Drift::InSync,
        Some(Difference::SealedValues) => Drift::Changed("/metadata/annotations/gitgate.dev~1sealed-digest".into()),
        Some(Difference::Field(field)) => Drift::Changed(field),
        Some(Difference::Unreadable) => Drift::Changed("/".into()),
        Some(Difference::Foreign(f)) => Drift::Changed(format!("{} (set by {})", f.pointer, f.manager)),
    }
}

/// The fields of `live` another manager added ([`contract::foreign`]).
pub fn foreign_fields(planned: &Planned, live: &Value) -> Vec<contract::Foreign> {
    contract::foreign_fields(&planned.expected(), live)
}

/// What the sync keeps of a live object instead of the object: how it
/// stands against Git, its health, the live values of the ignored fields
/// (a sparse copy) and its break-glass reason.
#[derive(Clone, Debug)]
pub struct Observed {
    pub drift: Drift,
    pub health: crate::sync::health::Assessment,
    /// The live values of the planned object's ignored fields, as a sparse
    /// object [`respect_ignored`] reads; `None` when it does not exist.
    pub ignored: Option<Value>,
    /// `gitgate.dev/break-glass` on the live object, with its window.
    pub break_glass: Option<Glass>,
    /// The JSON patch that removes the fields other managers added
    /// ([`contract::foreign`]); `None` when there are none.
    pub foreign: Option<Value>,
}

/// A live object's break-glass: the reason, and the end of its window as
/// gitgate's mutating webhook stamped it (`gitgate.dev/break-glass-until`,
/// µs since the epoch; `None` on an object changed without that webhook).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Glass {
    pub reason: String,
    pub until: Option<i64>,
}

/// Summarises a live object against its planned one.
pub fn observe(planned: &Planned, live: Option<&Value>) -> Observed {
    // Git's manifest is parsed for this once, not once per use.
    let foreign = live.map(|l| foreign_fields(planned, l)).unwrap_or_default();
    Observed {
        drift: stands(planned, live, Some(&foreign)),
        health: crate::sync::health::assess(&planned.key.group, &planned.key.kind, live),
        ignored: live.map(|l| sparse(l, &planned.ignore)),
        break_glass: live.and_then(break_glass),
        foreign: live.filter(|_| !foreign.is_empty()).map(|l| contract::foreign::removal(l, &foreign)),
    }
}

/// What is known of an object just applied: Git's content (the apply
/// wrote it) and the health of what the apiserver stored
/// ([`crate::sync::target::Stored`]).
pub fn applied(planned: &Planned, stored: &Value) -> Observed {
    Observed {
        drift: Drift::InSync,
        health: crate::sync::health::assess(&planned.key.group, &planned.key.kind, Some(stored)),
        ignored: None,
        break_glass: None,
        foreign: None,
    }
}

/// `gitgate.dev/break-glass: "<reason>"` of a live object (non-empty),
/// with the window stamped on it.
pub fn break_glass(live: &Value) -> Option<Glass> {
    use crate::provenance::glass::{Until, until_of};
    let reason = contract::stamp::break_glass_reason(live)?;
    // An unreadable stamp ends the window at once: admission never lets
    // one through, so it was not gitgate's.
    let until = match until_of(Some(live)) {
        Until::At(t) => Some(t),
        Until::Invalid => Some(i64::MIN),
        Until::Absent => None,
    };
    Some(Glass { reason, until })
}

/// Only the values at `pointers`, in an otherwise empty object.
fn sparse(live: &Value, pointers: &[String]) -> Value {
    let mut out = Value::Object(Map::new());
    for p in pointers {
        if let Some(v) = live.pointer(p) {
            set_pointer(&mut out, p, v.clone());
        }
    }
    out
}

/// For an object that exists, the applied form keeps the live values of
/// the ignored fields, so the apply neither resets them nor fights the
/// controller that owns them (Argo CD's RespectIgnoreDifferences). `live`
/// may be the whole object or [`Observed::ignored`].
pub fn respect_ignored(planned: &Planned, live: Option<&Value>) -> Result<Value, SyncError> {
    let mut object = planned.stamped()?;
    let Some(live) = live else { return Ok(object) };
    for pointer in &planned.ignore {
        if planned.sealed_digest.is_some() && crate::contract::SEALED_FORM_FIELDS.contains(&pointer.as_str()) {
            // Git's sealed form is what gitgate applies; the webhook unseals it.
            continue;
        }
        match live.pointer(pointer) {
            Some(v) => {
                if let Some(slot) = object.pointer_mut(pointer) {
                    *slot = v.clone();
                } else {
                    set_pointer(&mut object, pointer, v.clone());
                }
            }
            None => remove_pointer(&mut object, pointer),
        }
    }
    Ok(object)
}

fn unescape(segment: &str) -> String {
    segment.replace("~1", "/").replace("~0", "~")
}

fn set_pointer(root: &mut Value, pointer: &str, value: Value) {
    let segments: Vec<String> = pointer.split('/').skip(1).map(unescape).collect();
    let Some((last, parents)) = segments.split_last() else { return };
    let mut cur = root;
    for s in parents {
        let Some(obj) = cur.as_object_mut() else { return };
        cur = obj.entry(s.clone()).or_insert_with(|| Value::Object(Map::new()));
    }
    if let Some(obj) = cur.as_object_mut() {
        obj.insert(last.clone(), value);
    }
}

fn remove_pointer(root: &mut Value, pointer: &str) {
    let Some((parent, last)) = pointer.rsplit_once('/') else { return };
    let last = unescape(last);
    let parent = if parent.is_empty() { Some(root) } else { root.pointer_mut(parent) };
    match parent {
        Some(Value::Object(o)) => {
            o.remove(&last);
        }
        Some(Value::Array(a)) => {
            if let Ok(i) = last.parse::<usize>()
                && i < a.len()
            {
                a.remove(i);
            }
        }
        _ => {}
    }
}

/// The mass-prune guard's limits.
#[derive(Clone, Copy, Debug)]
pub struct PruneGuard {
    /// Refuse to delete more than this many objects of an app in one sync.
    pub max_count: usize,
    /// … or more than this share of its inventory (when deleting ≥ 2).
    pub max_share: f64,
}

impl Default for PruneGuard {
    fn default() -> Self {
        PruneGuard { max_count: 50, max_share: 0.5 }
    }
}

/// What prune would do.
#[derive(Clone, Debug, Default)]
pub struct PrunePlan {
    /// Deletions in reverse wave order.
    pub delete: Vec<Entry>,
    /// Left in place by `gitgate.dev/prune: disabled`.
    pub kept: Vec<Entry>,
    /// Why the guard stopped the prune, if it did.
    pub guarded: Option<String>,
}

/// The commit trailer that lets a sync exceed the mass-prune guard.
pub const ALLOW_PRUNE_TRAILER: &str = "Gitgate-Allow-Prune";

/// Whether a commit message carries `Gitgate-Allow-Prune: yes`.
pub fn allows_mass_prune(message: &str) -> bool {
    message.lines().any(|l| {
        l.split_once(':').is_some_and(|(k, v)| {
            k.trim().eq_ignore_ascii_case(ALLOW_PRUNE_TRAILER)
                && matches!(v.trim().to_ascii_lowercase().as_str(), "yes" | "true")
        })
    })
}

/// Inventory entries Git no longer declares, in reverse wave order, under
/// the mass-prune guard. `base` is the app's size the share is measured
/// against: its inventory as of the last sync that completed its prune
/// ([`super::inventory::Inventory::base`]), not the inventory as read,
/// which also holds what a sync recorded ahead of applying it (a leader
/// killed mid-wave) or kept when the guard stopped it.
pub fn prune_plan(
    inventory: &[Entry],
    base: usize,
    desired: &HashSet<ObjectKey>,
    guard: PruneGuard,
    allowed: bool,
) -> PrunePlan {
    let mut plan = PrunePlan::default();
    for e in inventory {
        if desired.contains(&e.key()) {
            continue;
        }
        if e.keep { plan.kept.push(e.clone()) } else { plan.delete.push(e.clone()) }
    }
    plan.delete
        .sort_by(|a, b| (b.wave, kind_order(&b.kind)).cmp(&(a.wave, kind_order(&a.kind))).then(a.key().cmp(&b.key())));
    let n = plan.delete.len();
    // Deleting more than the base holds (entries recorded ahead by a sync
    // that never completed) is deleting all of it.
    let total = base.max(n);
    let share = if n == 0 { 0.0 } else { n as f64 / total as f64 };
    if !allowed && (n > guard.max_count || (n >= 2 && share > guard.max_share)) {
        plan.guarded = Some(format!(
            "prune stopped: this commit would delete {n} of {total} objects (limit {max} or {pct:.0}%); \
             commit with the trailer '{ALLOW_PRUNE_TRAILER}: yes' to allow it",
            max = guard.max_count,
            pct = guard.max_share * 100.0
        ));
    }
    plan
}

// Plan mode (no cluster) and the app status a sync starts from.

/// Plan mode (no cluster): what would be applied, by app and wave.
pub fn plan_text(desired: &DesiredSet) -> String {
    use std::fmt::Write as _;
    let mut out = format!("plan for commit {} (no cluster: nothing is applied)\n", desired.commit());
    for app in desired.apps() {
        let _ = writeln!(
            out,
            "app {} → {}",
            app.name,
            if app.destination.namespace.is_empty() { "-" } else { &app.destination.namespace }
        );
        match plan_app(desired, &app.name) {
            Ok(planned) => {
                let mut last = None;
                for p in planned {
                    if last != Some(p.wave) {
                        let _ = writeln!(out, "  wave {}", p.wave);
                        last = Some(p.wave);
                    }
                    let _ =
                        writeln!(out, "    apply {} ({} @ {})", p.id(), p.source, &p.commit[..7.min(p.commit.len())]);
                }
            }
            Err(e) => {
                let _ = writeln!(out, "  error: {}", crate::error_chain(&e));
            }
        }
        match plan_hooks(desired, &app.name) {
            Ok(hooks) => {
                for h in hooks {
                    let phases: Vec<&str> = h.hook.phases.iter().map(|p| p.as_str()).collect();
                    let _ = writeln!(
                        out,
                        "  hook {} {} ({} @ {})",
                        phases.join(","),
                        h.planned.id(),
                        h.planned.source,
                        &h.planned.commit[..7.min(h.planned.commit.len())]
                    );
                }
            }
            Err(e) => {
                let _ = writeln!(out, "  error: {}", crate::error_chain(&e));
            }
        }
    }
    out
}

/// What plan mode knows of each app: Git's objects at the commit, their
/// waves, commits and files; sync and health Unknown (no cluster).
pub fn plan_statuses(desired: &DesiredSet) -> Vec<AppStatus> {
    desired
        .apps()
        .iter()
        .map(|app| {
            let (objects, message) = match plan_app(desired, &app.name) {
                Ok(planned) => (
                    planned
                        .iter()
                        .map(|p| ObjectStatus {
                            group: p.key.group.clone(),
                            version: version_of(&p.api_version).to_string(),
                            kind: p.key.kind.clone(),
                            namespace: p.key.namespace.clone(),
                            name: p.key.name.clone(),
                            wave: p.wave.to_string(),
                            sync: SyncStatus::Unknown,
                            health: "Unknown".into(),
                            message: String::new(),
                            commit: p.commit.clone(),
                            source: p.source.split_once(':').map(|(_, s)| s.to_string()).unwrap_or_default(),
                            digest: p.digest.clone(),
                            sealed: p.sealed_digest.is_some(),
                            hook: false,
                        })
                        .collect(),
                    "plan mode: no cluster is reachable, nothing is applied".to_string(),
                ),
                Err(e) => (Vec::new(), crate::error_chain(&e)),
            };
            AppStatus { message, objects, ..app_status(app, desired, "Unknown".into(), String::new()) }
        })
        .collect()
}

/// The commit in force for an app (the head unless a promotion gate keeps
/// it; "" when nothing of it was ever approved).
pub(crate) fn commit_of(desired: &DesiredSet, app: &str) -> String {
    desired.app_commit(app).map(|c| c.to_string()).unwrap_or_default()
}

/// An app's status before anything is known of its objects.
pub(crate) fn app_status(app: &App, desired: &DesiredSet, health: String, last_sync: String) -> AppStatus {
    AppStatus {
        name: app.name.clone(),
        project: app.project.clone(),
        sync: SyncStatus::Unknown,
        health,
        target_commit: desired.held(&app.name).map_or_else(|| commit_of(desired, &app.name), |h| h.waiting.to_string()),
        synced_commit: String::new(),
        last_sync,
        message: String::new(),
        destination: format!(
            "{}/{}",
            if app.destination.cluster.is_empty() { "in-cluster" } else { &app.destination.cluster },
            app.destination.namespace
        ),
        path: app.path.to_string(),
        detect_only: app.sync_policy.detect_only,
        objects: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Regression: the window lived in the leader's memory (a failover
    /// restarted it). Every replica now reads its end from the object.
    #[test]
    fn a_live_objects_break_glass_window_is_read_from_the_object() {
        let live = |a: Value| json!({"metadata": {"annotations": a}});
        let g = break_glass(&live(json!({
            "gitgate.dev/break-glass": " INC-1 ",
            "gitgate.dev/break-glass-until": "2030-01-01T00:00:00Z",
        })))
        .unwrap();
        assert_eq!(g.reason, "INC-1");
        assert_eq!(g.until, crate::audit::record::parse_rfc3339_micros("2030-01-01T00:00:00Z"));
        // changed without gitgate's mutating webhook: this replica's TTL
        assert_eq!(break_glass(&live(json!({"gitgate.dev/break-glass": "INC-1"}))).unwrap().until, None);
        // a stamp that is not a time ends the window at once
        let bad = live(json!({"gitgate.dev/break-glass": "INC-1", "gitgate.dev/break-glass-until": "soon"}));
        assert_eq!(break_glass(&bad).unwrap().until, Some(i64::MIN));
        assert!(break_glass(&live(json!({"gitgate.dev/break-glass": "  "}))).is_none());
    }

    fn entry(kind: &str, name: &str, wave: i64, keep: bool) -> Entry {
        Entry {
            group: String::new(),
            version: "v1".into(),
            kind: kind.into(),
            namespace: "shop".into(),
            name: name.into(),
            wave: Wave { phase: 1, wave },
            keep,
        }
    }

    fn planned(manifest: Value) -> Planned {
        let text = manifest.to_string();
        Planned {
            key: ObjectKey::new("", "ConfigMap", "shop", "a"),
            api_version: "v1".into(),
            wave: Wave { phase: 1, wave: 0 },
            manifest: text.into(),
            digest: "sha256:d".into(),
            commit: "c1".into(),
            source: "shop:apps/shop/a.yaml".into(),
            ignore: vec!["/data/replicas".into()],
            keep: false,
            sealed_digest: None,
            recreate: Recreate::No,
        }
    }

    fn live(data: Value, commit: &str) -> Value {
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a", "namespace": "shop",
            "annotations": {"gitgate.dev/commit": commit, "gitgate.dev/digest": "sha256:d", "gitgate.dev/source": "shop:apps/shop/a.yaml"},
            "labels": {"gitgate.dev/app": "shop"}, "resourceVersion": "7"}, "data": data})
    }

    #[test]
    fn a_waves_secrets_and_config_come_before_its_workloads() {
        for k in ["Namespace", "ServiceAccount", "Secret", "ConfigMap", "CustomResourceDefinition", "RoleBinding"] {
            assert!(foundation(k), "{k}");
        }
        for k in ["Service", "Deployment", "StatefulSet", "Job", "Ingress", "SomeCustomKind"] {
            assert!(!foundation(k), "{k}");
        }
    }

    #[test]
    fn waves_put_namespaces_and_crds_first_and_read_both_annotations() {
        let w = |g: &str, k: &str, m: Value| wave_of(g, k, &m).unwrap();
        assert_eq!(w("", "Namespace", json!({})), Wave { phase: 0, wave: 0 });
        assert_eq!(w("apiextensions.k8s.io", "CustomResourceDefinition", json!({})).phase, 0);
        let ann = |k: &str, v: Value| json!({"metadata": {"annotations": {k: v}}});
        assert_eq!(w("", "ConfigMap", ann(SYNC_WAVE, json!("-3"))), Wave { phase: 1, wave: -3 });
        assert_eq!(w("", "ConfigMap", ann(ARGO_SYNC_WAVE, json!("2"))), Wave { phase: 1, wave: 2 });
        assert_eq!(w("", "ConfigMap", json!({})), Wave { phase: 1, wave: 0 });
        assert!(wave_of("", "ConfigMap", &ann(SYNC_WAVE, json!("soon"))).unwrap_err().contains("not an integer"));
        assert!(Wave { phase: 0, wave: 9 } < Wave { phase: 1, wave: -9 });
    }

    #[test]
    fn drift_tells_new_content_from_a_hand_edit_and_skips_ignored_fields() {
        let p = planned(
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a"}, "data": {"k": "v", "replicas": "3"}}),
        );
        assert_eq!(drift(&p, None), Drift::Missing);
        assert_eq!(drift(&p, Some(&live(json!({"k": "v", "replicas": "3"}), "c1"))), Drift::InSync);
        // another controller's value for an ignored field is not drift
        assert_eq!(drift(&p, Some(&live(json!({"k": "v", "replicas": "5"}), "c1"))), Drift::InSync);
        assert_eq!(drift(&p, Some(&live(json!({"k": "hacked"}), "c1"))), Drift::Changed("/data/k".into()));
        // older stamps: Git has moved, apply (not a drift)
        assert_eq!(drift(&p, Some(&live(json!({"k": "v"}), "c0"))), Drift::Stale);
        // the applied form keeps the live value of ignored fields
        let applied = respect_ignored(&p, Some(&live(json!({"k": "v", "replicas": "5"}), "c1"))).unwrap();
        assert_eq!(applied["data"], json!({"k": "v", "replicas": "5"}));
        assert_eq!(applied["metadata"]["annotations"]["gitgate.dev/commit"], "c1", "stamped");
        assert_eq!(applied["metadata"]["labels"]["gitgate.dev/app"], "shop");
        assert_eq!(applied["metadata"]["namespace"], "shop");
        let fresh = respect_ignored(&p, None).unwrap();
        assert_eq!(fresh["data"]["replicas"], "3", "on create Git's value is applied");
        // what a sync keeps of a live object is enough to do the same
        let seen = observe(&p, Some(&live(json!({"k": "hacked", "replicas": "5"}), "c1")));
        assert_eq!(seen.drift, Drift::Changed("/data/k".into()));
        assert_eq!(seen.ignored, Some(json!({"data": {"replicas": "5"}})));
        let applied = respect_ignored(&p, seen.ignored.as_ref()).unwrap();
        assert_eq!(applied["data"], json!({"k": "v", "replicas": "5"}));
        assert_eq!(observe(&p, None).ignored, None);
    }

    #[test]
    fn prune_runs_in_reverse_wave_order_and_the_guard_needs_a_trailer() {
        let inventory = vec![
            entry("ConfigMap", "a", 0, false),
            entry("ConfigMap", "b", 2, false),
            entry("ConfigMap", "c", 1, true),
        ];
        let desired: HashSet<ObjectKey> = HashSet::new();
        let loose = PruneGuard { max_count: 10, max_share: 1.0 };
        let p = prune_plan(&inventory, 3, &desired, loose, false);
        assert_eq!(p.delete.iter().map(|e| e.name.as_str()).collect::<Vec<_>>(), ["b", "a"]);
        assert_eq!(p.kept.len(), 1, "prune: disabled is kept");
        assert!(p.guarded.is_none());
        let strict = PruneGuard { max_count: 1, max_share: 1.0 };
        let g = prune_plan(&inventory, 3, &desired, strict, false);
        assert!(g.guarded.unwrap().contains("Gitgate-Allow-Prune: yes"));
        assert!(prune_plan(&inventory, 3, &desired, strict, true).guarded.is_none());
        let share = PruneGuard { max_count: 10, max_share: 0.5 };
        assert!(prune_plan(&inventory, 3, &desired, share, false).guarded.is_some(), "2 of 3 is over half");
        let keep_one: HashSet<ObjectKey> = [inventory[0].key()].into();
        assert!(
            prune_plan(&inventory, 3, &keep_one, share, false).guarded.is_none(),
            "1 deletion is never a mass prune"
        );
        assert!(allows_mass_prune("drop it\n\nGitgate-Allow-Prune: yes\n"));
        assert!(allows_mass_prune("x\n\ngitgate-allow-prune: TRUE"));
        assert!(!allows_mass_prune("Gitgate-Allow-Prune: no"));
        assert!(!allows_mass_prune("mentions Gitgate-Allow-Prune in prose"));
    }

    /// Regression (mass prune on failover): a commit that renames every
    /// object of an app (a new kustomize namePrefix) is stopped by the
    /// share guard once. The inventory then held the old and the new
    /// objects — written ahead of applying, and kept by the stopped prune
    /// — so the next sync of the same commit (a resync, or a new leader
    /// after the old one was killed mid-wave) measured 4 of 8 (50%, not
    /// over half) and deleted them all without the trailer. The share is
    /// measured against the app as of its last completed prune.
    #[test]
    fn a_stopped_mass_prune_stays_stopped_after_a_failover_or_resync() {
        let old: Vec<Entry> = (0..4).map(|i| entry("ConfigMap", &format!("old-{i}"), 0, false)).collect();
        let new: Vec<Entry> = (0..4).map(|i| entry("ConfigMap", &format!("new-{i}"), 0, false)).collect();
        let desired: HashSet<ObjectKey> = new.iter().map(Entry::key).collect();
        let guard = PruneGuard::default();
        // The first sync of the rename: the inventory is the old objects.
        assert!(prune_plan(&old, old.len(), &desired, guard, false).guarded.is_some());
        // What the inventory holds after it (or after a leader died mid-wave).
        let grown: Vec<Entry> = old.iter().chain(&new).cloned().collect();
        let again = prune_plan(&grown, old.len(), &desired, guard, false);
        assert_eq!(again.delete.len(), 4);
        assert!(again.guarded.as_deref().is_some_and(|g| g.contains("delete 4 of 4")), "{:?}", again.guarded);
        // (measured against the inventory as read, it was not stopped)
        assert!(prune_plan(&grown, grown.len(), &desired, guard, false).guarded.is_none());
        // The trailer still lets it through; entries recorded ahead of a
        // sync that never completed count against a smaller base.
        assert!(prune_plan(&grown, old.len(), &desired, guard, true).guarded.is_none());
        let none: HashSet<ObjectKey> = HashSet::new();
        assert!(prune_plan(&new, 0, &none, guard, false).guarded.is_some(), "4 of 0 is all of it");
    }

    fn at(kind: &str, name: &str, phase: u8, wave: i64) -> Planned {
        let mut p = planned(json!({"apiVersion": "v1", "kind": kind, "metadata": {"name": name}}));
        p.key = ObjectKey::new("", kind, "shop", name);
        p.wave = Wave { phase, wave };
        p
    }

    fn hook_at(name: &str, wave: i64, phases: &[Phase]) -> PlannedHook {
        PlannedHook {
            planned: at("Job", name, 1, wave),
            hook: Hook { phases: phases.to_vec(), delete: vec![hook::DeletePolicy::BeforeHookCreation] },
            generate_name: None,
        }
    }

    /// The migration before the deploy (issue 19): PreSync hooks run after
    /// the Namespace they live in and before every wave; Sync hooks run
    /// with their wave; PostSync after the last wave; SyncFail never in
    /// the ordinary order.
    #[test]
    fn steps_put_presync_hooks_before_the_waves_and_postsync_after() {
        let planned = vec![at("Namespace", "shop", 0, 0), at("ConfigMap", "a", 1, 0), at("Deployment", "web", 1, 2)];
        let hooks = vec![
            hook_at("migrate", 0, &[Phase::PreSync]),
            hook_at("seed", 1, &[Phase::PreSync]),
            hook_at("warm", 2, &[Phase::Sync]),
            hook_at("smoke", 0, &[Phase::PostSync, Phase::SyncFail]),
            hook_at("page", 0, &[Phase::SyncFail]),
        ];
        let got: Vec<(Phase, i64, Vec<usize>, Vec<usize>)> =
            steps(&planned, &hooks, true).into_iter().map(|s| (s.phase, s.wave.wave, s.objects, s.hooks)).collect();
        assert_eq!(
            got,
            vec![
                (Phase::Sync, 0, vec![0], vec![]),     // the Namespace
                (Phase::PreSync, 0, vec![], vec![0]),  // migrate
                (Phase::PreSync, 1, vec![], vec![1]),  // seed, after migrate
                (Phase::Sync, 0, vec![1], vec![]),     // wave 0
                (Phase::Sync, 2, vec![2], vec![2]),    // wave 2 with its Sync hook
                (Phase::PostSync, 0, vec![], vec![3]), // smoke
            ]
        );
        let fail: Vec<Vec<usize>> = fail_steps(&hooks).into_iter().map(|s| s.hooks).collect();
        assert_eq!(fail, vec![vec![3, 4]]);
        // nothing to apply: no hook runs
        let quiet = steps(&planned, &hooks, false);
        assert!(quiet.iter().all(|s| s.hooks.is_empty()) && quiet.len() == 3, "{quiet:?}");
    }

    #[test]
    fn helm_hook_weight_orders_hooks_unless_a_sync_wave_is_given() {
        let ann = |a: Value| json!({"metadata": {"annotations": a}});
        assert_eq!(wave_of("batch", "Job", &ann(json!({hook::HELM_WEIGHT: "-5"}))).unwrap().wave, -5);
        assert_eq!(wave_of("batch", "Job", &ann(json!({hook::HELM_WEIGHT: "-5", SYNC_WAVE: "2"}))).unwrap().wave, 2);
    }
}
