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
            set: DesiredSet { commit, tree, config, apps: Vec::new(), objects: HashMap::new(), hooks: HashMap::new() },
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
