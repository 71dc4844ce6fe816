//! The desired set D(C): for one commit, every app's objects keyed by
//! identity → canonical manifest, digest, source file, and the commit that
//! last changed the object's content. Immutable once built; shared as
//! `Arc<DesiredSet>`; lookups by identity allocate nothing.

use std::collections::HashMap;
use std::sync::Arc;

use gix::ObjectId;
use serde_json::Value;

use super::config::{App, Config};
use super::object::{ObjectKey, digest_string};

/// One object of the desired set.
#[derive(Clone, Debug)]
pub struct DesiredObject {
    /// Index into [`DesiredSet::apps`].
    pub app: u32,
    /// Path in the repository of the file that declared it.
    pub source: Arc<str>,
    /// Canonical JSON (keys sorted, no whitespace); shared with the
    /// renderer's cache, never copied.
    pub manifest: Arc<str>,
    /// sha256 of `manifest`.
    pub digest: [u8; 32],
    /// The commit that introduced this content (`gitgate.dev/commit`).
    pub commit: ObjectId,
    /// A sync hook ([`super::hook`]): kept apart from the app's objects;
    /// for one with `generateName`, its identity's name is that prefix.
    pub hook: bool,
}

impl DesiredObject {
    /// `sha256:<hex>` (the `gitgate.dev/digest` annotation).
    pub fn digest_string(&self) -> String {
        digest_string(&self.digest)
    }

    /// The manifest as JSON.
    pub fn value(&self) -> Value {
        serde_json::from_str(&self.manifest).unwrap_or(Value::Null)
    }
}

/// A packed identity: `group \x1f kind \x1f namespace \x1f name` — one
/// allocation per object, and lookups hash borrowed parts.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct PackedKey(Box<str>);

const SEP: char = '\u{1f}';

// Box<str> and str hash and compare alike, so a packed key can be looked up
// by a borrowed string.
impl std::borrow::Borrow<str> for PackedKey {
    fn borrow(&self) -> &str {
        &self.0
    }
}

thread_local! {
    static LOOKUP_KEY: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
}

impl PackedKey {
    fn pack(group: &str, kind: &str, namespace: &str, name: &str) -> Self {
        let mut s = String::with_capacity(group.len() + kind.len() + namespace.len() + name.len() + 3);
        for (i, part) in [group, kind, namespace, name].into_iter().enumerate() {
            if i > 0 {
                s.push(SEP);
            }
            s.push_str(part);
        }
        PackedKey(s.into_boxed_str())
    }

    /// Writes the packed form of the parts into `buf` (no allocation once
    /// `buf` has grown).
    fn pack_into(buf: &mut String, group: &str, kind: &str, namespace: &str, name: &str) {
        buf.clear();
        for (i, part) in [group, kind, namespace, name].into_iter().enumerate() {
            if i > 0 {
                buf.push(SEP);
            }
            buf.push_str(part);
        }
    }

    fn unpack(&self) -> ObjectKey {
        let mut it = self.0.split(SEP);
        let mut next = || it.next().unwrap_or_default().to_string();
        ObjectKey { group: next(), kind: next(), namespace: next(), name: next() }
    }
}

/// The desired set of one commit.
pub struct DesiredSet {
    commit: ObjectId,
    tree: ObjectId,
    config: Arc<Config>,
    apps: Vec<Arc<App>>,
    objects: HashMap<PackedKey, DesiredObject>,
    /// The sync hooks: run by a sync, never in an inventory, pruned or
    /// healed; looked up only by the provenance check and the sync.
    hooks: HashMap<PackedKey, DesiredObject>,
    /// The apps a promotion gate keeps off the head (a set made by
    /// [`DesiredSet::compose`]); empty for a rendered commit.
    gates: HashMap<String, AppGate>,
}

/// Why an app's newest commit is not in force.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum HeldKind {
    /// `approval: required` and nobody approved the commit yet.
    WaitingApproval,
    /// `gitgate pause`: new commits wait and self-heal stops until it ends.
    Paused,
    /// A sync window is closed (outside an allow window or inside a deny one).
    OutsideWindow,
}

/// A newer commit waiting at a gate.
#[derive(Clone, Debug)]
pub struct Held {
    pub kind: HeldKind,
    /// The tracked head, which changes the app and waits.
    pub waiting: ObjectId,
    /// What waits and why, for the status, e.g. "waiting for approval of
    /// 1a2b3c4 (`gitgate approve web`)".
    pub message: String,
}

/// How a gate keeps one app of a composed set.
#[derive(Clone, Debug)]
pub struct AppGate {
    /// The commit whose content is in force for the app (`None`: no commit
    /// was ever approved: none of its objects are).
    pub in_force: Option<ObjectId>,
    /// The config of that commit (its project's roles say who approves).
    pub config: Arc<Config>,
    pub held: Option<Held>,
    /// Whether self-heal goes on (at the commit in force).
    pub self_heal: bool,
}

impl std::fmt::Debug for DesiredSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DesiredSet")
            .field("commit", &self.commit)
            .field("apps", &self.apps.len())
            .field("objects", &self.objects.len())
            .field("hooks", &self.hooks.len())
            .finish()
    }
}

impl DesiredSet {
    pub(crate) fn builder(commit: ObjectId, tree: ObjectId, config: Arc<Config>) -> DesiredSetBuilder {
        DesiredSetBuilder {
            set: DesiredSet {
                commit,
                tree,
                config,
                apps: Vec::new(),
                objects: HashMap::new(),
                hooks: HashMap::new(),
                gates: HashMap::new(),
            },
        }
    }

    pub fn commit(&self) -> ObjectId {
        self.commit
    }

    pub fn tree(&self) -> ObjectId {
        self.tree
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The config shared (a composed set keeps the head's).
    pub fn config_arc(&self) -> &Arc<Config> {
        &self.config
    }

    /// How a promotion gate keeps `app` (None: it is at the head).
    pub fn gate(&self, app: &str) -> Option<&AppGate> {
        self.gates.get(app)
    }

    /// The apps kept by a gate.
    pub fn gates(&self) -> &HashMap<String, AppGate> {
        &self.gates
    }

    /// The newer commit waiting for `app`, if one does.
    pub fn held(&self, app: &str) -> Option<&Held> {
        self.gates.get(app).and_then(|g| g.held.as_ref())
    }

    /// The commit whose content is in force for `app` (the head unless a
    /// gate keeps it; `None` when nothing was ever approved).
    pub fn app_commit(&self, app: &str) -> Option<ObjectId> {
        match self.gates.get(app) {
            Some(g) => g.in_force,
            None => Some(self.commit),
        }
    }

    /// Whether self-heal goes on for `app` (a pause or a closed window
    /// stops it).
    pub fn self_heals(&self, app: &str) -> bool {
        self.gates.get(app).is_none_or(|g| g.self_heal)
    }

    /// What the app is in Git, as one digest: its definition, and each
    /// object's and hook's identity and content. Two commits that give an
    /// app the same content digest alike (nothing to approve between them).
    pub fn app_digest(&self, app: &str) -> Option<[u8; 32]> {
        use sha2::Digest as _;
        let a = self.app(app)?;
        let mut h = sha2::Sha256::new();
        h.update(a.fingerprint().as_bytes());
        for (tag, list) in [("o", self.app_objects(app)), ("h", self.app_hooks(app))] {
            for (k, o) in list {
                h.update(format!("\n{tag}|{}|{}|{}|{}|", k.group, k.kind, k.namespace, k.name).as_bytes());
                h.update(o.digest);
            }
        }
        Some(h.finalize().into())
    }

    /// A set of the head's config and commit in which each gated app keeps
    /// the objects and hooks of the set in force for it (`None`: none),
    /// and every other app the head's. An identity two apps claim goes to
    /// the gated app (what is in force wins); the other copy is dropped.
    pub fn compose(head: &DesiredSet, gated: Vec<(String, Option<Arc<DesiredSet>>, AppGate)>) -> DesiredSet {
        let mut b = DesiredSet::builder(head.commit, head.tree, head.config.clone());
        b.reserve(head.objects.len());
        let by_name: HashMap<&str, (Option<&DesiredSet>, &AppGate)> =
            gated.iter().map(|(n, from, g)| (n.as_str(), (from.as_deref(), g))).collect();
        // The head's order, then the gated apps the head no longer has.
        let mut order: Vec<&str> = head.apps.iter().map(|a| a.name.as_str()).collect();
        order.extend(gated.iter().map(|(n, _, _)| n.as_str()).filter(|n| head.app(n).is_none()));
        order.dedup();
        let mut placed: Vec<(u32, &DesiredSet, bool)> = Vec::new();
        let mut gates = HashMap::new();
        for name in order {
            let (from, gated) = match by_name.get(name) {
                Some((from, g)) => {
                    gates.insert(name.to_string(), (*g).clone());
                    (*from, true)
                }
                None => (Some(head), false),
            };
            let Some(app) = from.and_then(|f| f.app(name)).or_else(|| head.app(name)) else { continue };
            let idx = b.add_app(app.clone());
            if let Some(from) = from {
                placed.push((idx, from, gated));
            }
        }
        // What is in force wins a contested identity: gated apps first.
        for want_gated in [true, false] {
            for &(idx, from, _) in placed.iter().filter(|p| p.2 == want_gated) {
                let name = &b.set.apps[idx as usize].name;
                let Some(src_idx) = from.apps.iter().position(|a| &a.name == name) else { continue };
                for (k, o) in from.objects.iter().chain(from.hooks.iter()) {
                    if o.app as usize != src_idx {
                        continue;
                    }
                    let map = if o.hook { &mut b.set.hooks } else { &mut b.set.objects };
                    map.entry(k.clone()).or_insert_with(|| DesiredObject { app: idx, ..o.clone() });
                }
            }
        }
        let mut set = b.finish();
        set.gates = gates;
        set
    }

    pub fn apps(&self) -> &[Arc<App>] {
        &self.apps
    }

    pub fn app(&self, name: &str) -> Option<&Arc<App>> {
        self.apps.iter().find(|a| a.name == name)
    }

    pub fn len(&self) -> usize {
        self.objects.len()
    }

    pub fn is_empty(&self) -> bool {
        self.objects.is_empty()
    }

    /// The object with this identity (the admission hot path: no
    /// allocation, the key is packed into a reused per-thread buffer).
    pub fn get(&self, group: &str, kind: &str, namespace: &str, name: &str) -> Option<&DesiredObject> {
        LOOKUP_KEY.with(|buf| match buf.try_borrow_mut() {
            Ok(mut buf) => {
                PackedKey::pack_into(&mut buf, group, kind, namespace, name);
                self.objects.get(buf.as_str())
            }
            Err(_) => self.objects.get(&PackedKey::pack(group, kind, namespace, name)),
        })
    }

    pub fn get_key(&self, key: &ObjectKey) -> Option<&DesiredObject> {
        self.get(&key.group, &key.kind, &key.namespace, &key.name)
    }

    /// The app that owns an object.
    pub fn app_of(&self, obj: &DesiredObject) -> Option<&Arc<App>> {
        self.apps.get(obj.app as usize)
    }

    /// Every object, sorted by (app, identity).
    pub fn objects(&self) -> Vec<(ObjectKey, &DesiredObject)> {
        let mut out: Vec<(ObjectKey, &DesiredObject)> = self.objects.iter().map(|(k, v)| (k.unpack(), v)).collect();
        out.sort_by(|a, b| (a.1.app, &a.0).cmp(&(b.1.app, &b.0)));
        out
    }

    /// The objects of one app, sorted by identity.
    pub fn app_objects(&self, app: &str) -> Vec<(ObjectKey, &DesiredObject)> {
        let Some(idx) = self.apps.iter().position(|a| a.name == app) else {
            return Vec::new();
        };
        let mut out: Vec<(ObjectKey, &DesiredObject)> =
            self.objects.iter().filter(|(_, v)| v.app as usize == idx).map(|(k, v)| (k.unpack(), v)).collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// The sync hook with this identity (for one with `generateName`, the
    /// name is that prefix).
    pub fn get_hook(&self, group: &str, kind: &str, namespace: &str, name: &str) -> Option<&DesiredObject> {
        if self.hooks.is_empty() {
            return None;
        }
        self.hooks.get(&PackedKey::pack(group, kind, namespace, name))
    }

    pub fn get_hook_key(&self, key: &ObjectKey) -> Option<&DesiredObject> {
        self.get_hook(&key.group, &key.kind, &key.namespace, &key.name)
    }

    /// The sync hooks of one app, sorted by identity.
    pub fn app_hooks(&self, app: &str) -> Vec<(ObjectKey, &DesiredObject)> {
        let Some(idx) = self.apps.iter().position(|a| a.name == app) else {
            return Vec::new();
        };
        let mut out: Vec<(ObjectKey, &DesiredObject)> =
            self.hooks.iter().filter(|(_, v)| v.app as usize == idx).map(|(k, v)| (k.unpack(), v)).collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// Heap bytes held (an accounting of capacities: keys, manifests, the
    /// table), for the memory figure.
    pub fn heap_bytes(&self) -> usize {
        let table =
            self.objects.capacity() * (std::mem::size_of::<PackedKey>() + std::mem::size_of::<DesiredObject>() + 1);
        // An Arc<str> allocation: two counters and the bytes.
        let owned: usize = self.objects.iter().map(|(k, v)| k.0.len() + 16 + v.manifest.len()).sum();
        let source_bytes: usize = self
            .objects
            .values()
            .map(|v| (v.source.as_ptr(), v.source.len() + 16))
            .collect::<HashMap<_, _>>()
            .values()
            .sum();
        table + owned + source_bytes
    }
}

pub(crate) struct DesiredSetBuilder {
    set: DesiredSet,
}

impl DesiredSetBuilder {
    pub fn add_app(&mut self, app: Arc<App>) -> u32 {
        self.set.apps.push(app);
        (self.set.apps.len() - 1) as u32
    }

    pub fn reserve(&mut self, n: usize) {
        self.set.objects.reserve(n);
    }

    /// Adds an object (a hook among the hooks); on a duplicate identity
    /// returns the object already there.
    pub fn insert(&mut self, key: &ObjectKey, obj: DesiredObject) -> Result<(), &DesiredObject> {
        use std::collections::hash_map::Entry;
        let map = if obj.hook { &mut self.set.hooks } else { &mut self.set.objects };
        match map.entry(PackedKey::pack(&key.group, &key.kind, &key.namespace, &key.name)) {
            Entry::Occupied(e) => Err(e.into_mut()),
            Entry::Vacant(e) => {
                e.insert(obj);
                Ok(())
            }
        }
    }

    pub fn finish(mut self) -> DesiredSet {
        self.set.objects.shrink_to_fit();
        self.set.hooks.shrink_to_fit();
        self.set
    }
}
