//! The renderer: commit → desired set, with caches and blame.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use gix::ObjectId;
use serde_json::Value;

use super::config::{self, App, Config, Project};
use super::desired::{DesiredObject, DesiredSet};
use super::object::{ObjectKey, canonical_json, is_cluster_scoped, sha256_digest};
use super::yaml::parse_bytes;
use super::{RenderError, confine, helm, kustomize};
use crate::source::{Dep, NodeKind, ReadLimits, RepoPath, TreeReader};

/// How to render.
#[derive(Clone, Debug)]
pub struct RenderOptions {
    /// Where `gitgate.yaml` lives in the repository.
    pub config_path: RepoPath,
    pub limits: ReadLimits,
    /// How many first-parent ancestors blame walks before it stops and
    /// attributes what is left to the oldest commit it saw.
    pub history_depth: usize,
    /// Desired sets and rendered trees kept.
    pub cache_entries: usize,
    /// The `helm` binary for apps whose path is a chart.
    pub helm: std::path::PathBuf,
    /// Spoke mode (`serve --cluster NAME`): render only the apps whose
    /// destination is this cluster, which `gitgate.yaml` must declare.
    /// `None`: every app.
    pub cluster: Option<String>,
}

impl Default for RenderOptions {
    fn default() -> Self {
        RenderOptions {
            config_path: RepoPath::parse(config::DEFAULT_CONFIG_PATH).unwrap_or_default(),
            limits: ReadLimits::default(),
            history_depth: 200,
            cache_entries: 16,
            helm: helm::default_binary(),
            cluster: None,
        }
    }
}

/// An object as rendered for one app, before blame.
#[derive(Debug)]
pub struct RenderedObject {
    pub key: ObjectKey,
    pub source: Arc<str>,
    /// Shared with the desired sets built from this render.
    pub manifest: Arc<str>,
    pub digest: [u8; 32],
    /// A sync hook ([`super::hook`]): run by the sync, not part of the
    /// app's objects (no inventory, no prune, no drift).
    pub hook: bool,
}

/// One app rendered at some tree, with the reads that produced it.
#[derive(Debug)]
pub struct AppRender {
    deps: Vec<Dep>,
    pub objects: Vec<RenderedObject>,
    index: HashMap<ObjectKey, usize>,
}

/// Every app of one tree rendered (no blame yet).
pub struct RenderedTree {
    pub config: Arc<Config>,
    pub apps: Vec<(Arc<App>, Arc<AppRender>)>,
}

/// Counters, for tests and metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RenderStats {
    /// App renders actually performed (cache misses).
    pub app_renders: usize,
    /// App renders served from the cache.
    pub app_cache_hits: usize,
    /// Desired sets built.
    pub desired_builds: usize,
}

/// Renders commits into desired sets; share one per repository.
pub struct Renderer {
    opts: RenderOptions,
    sets: Mutex<VecDeque<(ObjectId, Arc<DesiredSet>)>>,
    trees: Mutex<VecDeque<(ObjectId, Arc<RenderedTree>)>>,
    apps: Mutex<HashMap<String, VecDeque<Arc<AppRender>>>>,
    app_renders: AtomicUsize,
    app_cache_hits: AtomicUsize,
    desired_builds: AtomicUsize,
}

const APP_VERSIONS_KEPT: usize = 8;

impl Renderer {
    pub fn new(opts: RenderOptions) -> Self {
        Renderer {
            opts,
            sets: Mutex::new(VecDeque::new()),
            trees: Mutex::new(VecDeque::new()),
            apps: Mutex::new(HashMap::new()),
            app_renders: AtomicUsize::new(0),
            app_cache_hits: AtomicUsize::new(0),
            desired_builds: AtomicUsize::new(0),
        }
    }

    pub fn options(&self) -> &RenderOptions {
        &self.opts
    }

    pub fn stats(&self) -> RenderStats {
        RenderStats {
            app_renders: self.app_renders.load(Ordering::Relaxed),
            app_cache_hits: self.app_cache_hits.load(Ordering::Relaxed),
            desired_builds: self.desired_builds.load(Ordering::Relaxed),
        }
    }

    /// The desired set of `commit` (blocking; cached per commit).
    pub fn desired(&self, repo: &gix::Repository, commit: ObjectId) -> Result<Arc<DesiredSet>, RenderError> {
        if let Some(s) = lookup(&self.sets, &commit) {
            return Ok(s);
        }
        let reader = TreeReader::new(repo.clone(), commit, self.opts.limits)?;
        let rendered = self.render_tree(&reader)?;
        let set = Arc::new(self.build(repo, &reader, &rendered)?);
        self.desired_builds.fetch_add(1, Ordering::Relaxed);
        store(&self.sets, commit, set.clone(), self.opts.cache_entries);
        Ok(set)
    }

    /// Config and every app of the reader's tree (cached by tree id).
    pub fn render_tree(&self, reader: &TreeReader) -> Result<Arc<RenderedTree>, RenderError> {
        let tree_id = reader.tree_id();
        if let Some(t) = lookup(&self.trees, &tree_id) {
            return Ok(t);
        }
        let config = Arc::new(config::load(reader, &self.opts.config_path)?);
        if let Some(cluster) = &self.opts.cluster {
            declared_cluster(&config, cluster)?;
        }
        let mut apps = Vec::with_capacity(config.apps.len());
        for app in config.apps.iter().filter(|a| self.deploys_here(a)) {
            let project = config.project(&app.project).ok_or_else(|| RenderError::Config {
                file: config.file.clone(),
                line: 0,
                message: format!("app {:?} names an unknown project {:?}", app.name, app.project),
            })?;
            let r = self
                .app(reader, app, project)
                .map_err(|e| RenderError::App { app: app.name.clone(), source: Box::new(e) })?;
            apps.push((Arc::new(app.clone()), r));
        }
        // Two apps must not declare one object.
        let mut owners: HashMap<&ObjectKey, (&str, &str)> = HashMap::new();
        for (app, r) in &apps {
            for o in &r.objects {
                if let Some((first_app, first_file)) = owners.insert(&o.key, (&app.name, &o.source)) {
                    return Err(RenderError::Duplicate {
                        object: o.key.to_string(),
                        first: format!("{first_app:?} ({first_file})"),
                        second: format!("{:?} ({})", app.name, o.source),
                    });
                }
            }
        }
        let t = Arc::new(RenderedTree { config, apps });
        store(&self.trees, tree_id, t.clone(), self.opts.cache_entries);
        Ok(t)
    }

    /// Whether `app` is rendered: every app, or in spoke mode those whose
    /// destination is this cluster.
    fn deploys_here(&self, app: &App) -> bool {
        self.opts.cluster.as_deref().is_none_or(|c| app.destination.cluster == c)
    }

    /// One app at the reader's tree: from the cache when everything it read
    /// last time resolves to the same objects, else rendered.
    fn app(&self, reader: &TreeReader, app: &App, project: &Project) -> Result<Arc<AppRender>, RenderError> {
        let fp = app.fingerprint();
        let cached: Vec<Arc<AppRender>> = self
            .apps
            .lock()
            .map(|m| m.get(&fp).map(|v| v.iter().cloned().collect()).unwrap_or_default())
            .unwrap_or_default();
        for c in cached {
            if deps_unchanged(reader, &c.deps)? {
                self.app_cache_hits.fetch_add(1, Ordering::Relaxed);
                return Ok(c);
            }
        }
        reader.take_deps();
        let raw = render_app(reader, app, &self.opts.helm)?;
        let deps = reader.take_deps();
        let objects = finalize(app, project, raw)?;
        let mut index = HashMap::with_capacity(objects.len());
        for (i, o) in objects.iter().enumerate() {
            if let Some(prev) = index.insert(o.key.clone(), i) {
                return Err(RenderError::DuplicateInApp {
                    app: app.name.clone(),
                    object: o.key.to_string(),
                    first_file: objects.get(prev).map(|p| p.source.to_string()).unwrap_or_default(),
                    second_file: o.source.to_string(),
                });
            }
        }
        let r = Arc::new(AppRender { deps, objects, index });
        self.app_renders.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut m) = self.apps.lock() {
            if m.len() > 4096 {
                m.clear();
            }
            let v = m.entry(fp).or_default();
            v.push_front(r.clone());
            v.truncate(APP_VERSIONS_KEPT);
        }
        Ok(r)
    }

    /// Blame and assemble.
    fn build(&self, repo: &gix::Repository, reader: &TreeReader, t: &RenderedTree) -> Result<DesiredSet, RenderError> {
        let commit = reader.commit();
        let mut b = DesiredSet::builder(commit, reader.tree_id(), t.config.clone());
        b.reserve(t.apps.iter().map(|(_, r)| r.objects.len()).sum());
        for (app, r) in &t.apps {
            let idx = b.add_app(app.clone());
            let blame = self.blame(repo, commit, app, r)?;
            for (o, c) in r.objects.iter().zip(blame) {
                let obj = DesiredObject {
                    app: idx,
                    source: o.source.clone(),
                    manifest: o.manifest.clone(),
                    digest: o.digest,
                    commit: c,
                    hook: o.hook,
                };
                if b.insert(&o.key, obj).is_err() {
                    // render_tree already refused duplicates across apps.
                    return Err(RenderError::DuplicateInApp {
                        app: app.name.clone(),
                        object: o.key.to_string(),
                        first_file: o.source.to_string(),
                        second_file: o.source.to_string(),
                    });
                }
            }
        }
        Ok(b.finish())
    }

    /// For each object of `r` (app at `commit`), the oldest commit on the
    /// first-parent chain since which its digest has not changed.
    fn blame(
        &self,
        repo: &gix::Repository,
        commit: ObjectId,
        app: &App,
        r: &AppRender,
    ) -> Result<Vec<ObjectId>, RenderError> {
        let hist = |e: Box<dyn std::error::Error + Send + Sync>| RenderError::History {
            commit: commit.to_string(),
            source: e,
        };
        let mut out: Vec<Option<ObjectId>> = vec![None; r.objects.len()];
        let mut pending: Vec<usize> = (0..r.objects.len()).collect();
        let mut cur = commit;
        let project = Project::clone_for_blame(app);
        for _ in 0..self.opts.history_depth {
            if pending.is_empty() {
                break;
            }
            let parent = {
                let c = repo.find_commit(cur).map_err(|e| hist(Box::new(e)))?;
                c.parent_ids().next().map(|id| id.detach())
            };
            let Some(parent) = parent else { break };
            // A desired set already built for the parent carries its blame.
            if let Some(ps) = lookup(&self.sets, &parent)
                && ps.app(&app.name).is_some_and(|a| a.fingerprint() == app.fingerprint())
            {
                for i in pending.drain(..) {
                    let o = &r.objects[i];
                    out[i] = Some(match ps.get_key(&o.key).or_else(|| ps.get_hook_key(&o.key)) {
                        Some(p) if p.digest == o.digest => p.commit,
                        _ => cur,
                    });
                }
                break;
            }
            let preader = TreeReader::new(repo.clone(), parent, self.opts.limits)?;
            let prev = match config::load(&preader, &self.opts.config_path) {
                Ok(pc) => {
                    let proj = pc.project(&app.project).cloned().unwrap_or_else(|| project.clone());
                    self.app(&preader, app, &proj).ok()
                }
                Err(_) => self.app(&preader, app, &project).ok(),
            };
            let mut still = Vec::with_capacity(pending.len());
            for i in pending.drain(..) {
                let o = &r.objects[i];
                let same = prev
                    .as_ref()
                    .and_then(|p| p.index.get(&o.key).and_then(|j| p.objects.get(*j)))
                    .is_some_and(|p| p.digest == o.digest);
                if same {
                    still.push(i);
                } else {
                    out[i] = Some(cur);
                }
            }
            pending = still;
            cur = parent;
        }
        for i in pending {
            out[i] = Some(cur);
        }
        Ok(out.into_iter().map(|c| c.unwrap_or(commit)).collect())
    }
}

impl Project {
    /// Bounds used when an old commit's config cannot be read: allow all
    /// (blame only compares digests; bounds were enforced at the head).
    fn clone_for_blame(_app: &App) -> Project {
        Project {
            name: String::new(),
            destinations: vec![(config::Glob("*".into()), config::Glob("*".into()))],
            kinds: vec![config::KindPattern { group: config::Glob("*".into()), kind: config::Glob("*".into()) }],
            cluster_kinds: vec![config::KindPattern {
                group: config::Glob("*".into()),
                kind: config::Glob("*".into()),
            }],
            vault: config::VaultAccess::default(),
            roles: Vec::new(),
            approval: super::config::Approval::Automatic,
            sync_windows: Vec::new(),
        }
    }
}

fn lookup<T: Clone>(cache: &Mutex<VecDeque<(ObjectId, T)>>, id: &ObjectId) -> Option<T> {
    let c = cache.lock().ok()?;
    c.iter().find(|(k, _)| k == id).map(|(_, v)| v.clone())
}

fn store<T>(cache: &Mutex<VecDeque<(ObjectId, T)>>, id: ObjectId, v: T, cap: usize) {
    if let Ok(mut c) = cache.lock() {
        c.retain(|(k, _)| *k != id);
        c.push_front((id, v));
        c.truncate(cap.max(1));
    }
}

fn deps_unchanged(reader: &TreeReader, deps: &[Dep]) -> Result<bool, RenderError> {
    for (path, id) in deps {
        let now = match reader.resolve_untracked(path) {
            Ok(n) => n.map(|n| n.id),
            Err(_) => return Ok(false),
        };
        if now != *id {
            return Ok(false);
        }
    }
    Ok(true)
}

/// An app's manifests as parsed documents with their source file.
fn render_app(
    reader: &TreeReader,
    app: &App,
    helm_bin: &std::path::Path,
) -> Result<Vec<(Value, RepoPath)>, RenderError> {
    let node = reader
        .resolve(&app.path)?
        .ok_or_else(|| RenderError::AppPathMissing { app: app.name.clone(), path: app.path.to_string() })?;
    if node.kind == NodeKind::File {
        // Named in gitgate.yaml itself: wherever in the repository it leads.
        return parse_file(reader, &app.path);
    }
    if let Some(k) = kustomize::find_kustomization(reader, &app.path)? {
        return kustomize::build(reader, &app.path, &k, &app.name);
    }
    if reader.resolve(&app.path.child("Chart.yaml"))?.is_some() {
        return helm::template(reader, app, helm_bin);
    }
    // Every file read resolves inside the app's directory (a symlink to
    // another app's file is refused, not followed).
    let root = node.path;
    let mut out = Vec::new();
    for file in reader.walk(&root)? {
        if is_manifest(&file) {
            let bytes = confine::read(reader, &file, &root, confine::PLAIN)?;
            out.extend(parse_bytes(&file, &bytes)?);
        }
    }
    Ok(out)
}

/// Files a plain directory render reads: `*.yaml`, `*.yml`, `*.json`, not
/// hidden, not `gitgate.yaml` itself.
pub(crate) fn is_manifest(path: &RepoPath) -> bool {
    let name = path.file_name();
    !name.starts_with('.')
        && (name.ends_with(".yaml") || name.ends_with(".yml") || name.ends_with(".json"))
        && !(path.parent().is_root() && name == config::DEFAULT_CONFIG_PATH)
        && !path.components().any(|c| c.starts_with('.'))
}

pub(crate) fn parse_file(reader: &TreeReader, path: &RepoPath) -> Result<Vec<(Value, RepoPath)>, RenderError> {
    parse_bytes(path, &reader.read(path)?)
}

/// Validates, defaults the namespace, checks the project's bounds and
/// canonicalises.
fn finalize(app: &App, project: &Project, raw: Vec<(Value, RepoPath)>) -> Result<Vec<RenderedObject>, RenderError> {
    let mut out = Vec::with_capacity(raw.len());
    let mut sources: HashMap<RepoPath, Arc<str>> = HashMap::new();
    for (n, (mut v, path)) in raw.into_iter().enumerate() {
        let invalid =
            |reason: &str| RenderError::InvalidObject { file: path.to_string(), doc: n + 1, reason: reason.into() };
        let Some((key, hook)) = identify(app, &mut v, &invalid)? else { continue };
        check_bounds(app, project, &key, &path)?;
        let manifest = canonical_json(&v);
        let digest = sha256_digest(manifest.as_bytes());
        let source = sources.entry(path.clone()).or_insert_with(|| Arc::from(path.as_str())).clone();
        out.push(RenderedObject { key, source, manifest: Arc::from(manifest), digest, hook });
    }
    Ok(out)
}

/// A manifest's key and whether it is a sync hook (`None`: a hook
/// annotation skips it). Checks apiVersion, kind, metadata and name;
/// drops a null creationTimestamp; a namespaced object without a namespace
/// gets the app's, a cluster-scoped one loses any it has.
fn identify(
    app: &App,
    v: &mut Value,
    invalid: &dyn Fn(&str) -> RenderError,
) -> Result<Option<(ObjectKey, bool)>, RenderError> {
    let api = v.get("apiVersion").and_then(Value::as_str).ok_or_else(|| invalid("no apiVersion"))?.to_string();
    let kind = v.get("kind").and_then(Value::as_str).ok_or_else(|| invalid("no kind"))?.to_string();
    if !v.get("metadata").is_some_and(Value::is_object) {
        return Err(invalid("no metadata"));
    }
    let hook = match super::hook::role(v).map_err(|e| invalid(&e))? {
        super::hook::Role::Skip => return Ok(None),
        super::hook::Role::Object => false,
        super::hook::Role::Hook(_) => true,
    };
    let meta = v.get_mut("metadata").and_then(Value::as_object_mut).ok_or_else(|| invalid("no metadata"))?;
    let name = object_name(meta, hook, invalid)?;
    // `kubectl create … --dry-run=client -o yaml` writes
    // `creationTimestamp: null`; the apiserver always sets it, so Git
    // cannot mean it: drop it (Argo CD's diff ignores it too).
    if meta.get("creationTimestamp").is_some_and(Value::is_null) {
        meta.remove("creationTimestamp");
    }
    let group = super::object::group_of(&api).to_string();
    let namespace = if is_cluster_scoped(&group, &kind) {
        meta.remove("namespace");
        String::new()
    } else {
        match meta.get("namespace").and_then(Value::as_str) {
            Some(ns) if !ns.is_empty() => ns.to_string(),
            _ => {
                if app.destination.namespace.is_empty() {
                    return Err(invalid("no metadata.namespace, and the app has no destination namespace"));
                }
                meta.insert("namespace".into(), Value::String(app.destination.namespace.clone()));
                app.destination.namespace.clone()
            }
        }
    };
    Ok(Some((ObjectKey { group, kind, namespace, name }, hook)))
}

/// `metadata.name`, or for a sync hook its `generateName` (the apiserver
/// names a hook's instances).
fn object_name(
    meta: &serde_json::Map<String, Value>,
    hook: bool,
    invalid: &dyn Fn(&str) -> RenderError,
) -> Result<String, RenderError> {
    let generate = meta.get("generateName").and_then(Value::as_str).filter(|g| !g.is_empty());
    let name = match (meta.get("name").and_then(Value::as_str), generate) {
        (Some(n), _) => n.to_string(),
        (None, Some(g)) if hook => g.to_string(),
        (None, Some(_)) => {
            return Err(invalid(&format!(
                "metadata.generateName is for sync hooks only ({} or {}): give it a metadata.name",
                super::hook::ARGO_HOOK,
                super::hook::HELM_HOOK
            )));
        }
        (None, None) => return Err(invalid("no metadata.name")),
    };
    if name.is_empty() {
        return Err(invalid("empty metadata.name"));
    }
    Ok(name)
}

/// The project allows the object's kind and (namespaced) its destination.
fn check_bounds(app: &App, project: &Project, key: &ObjectKey, path: &RepoPath) -> Result<(), RenderError> {
    let cluster_scoped = is_cluster_scoped(&key.group, &key.kind);
    let out_of_bounds = |reason: String| RenderError::OutOfBounds {
        app: app.name.clone(),
        project: project.name.clone(),
        object: format!("{key} (from {path})"),
        reason,
    };
    if !project.allows_kind(&key.group, &key.kind, cluster_scoped) {
        let what = if cluster_scoped { "cluster-scoped kind" } else { "kind" };
        return Err(out_of_bounds(format!("{what} {} is not allowed", gk(key))));
    }
    if !cluster_scoped && !project.allows_destination(&app.destination.cluster, &key.namespace) {
        return Err(out_of_bounds(format!(
            "namespace {:?} on cluster {:?} is not an allowed destination",
            key.namespace, app.destination.cluster
        )));
    }
    Ok(())
}

fn gk(k: &ObjectKey) -> String {
    if k.group.is_empty() { k.kind.clone() } else { format!("{}/{}", k.group, k.kind) }
}

/// Spoke mode needs its cluster declared in `gitgate.yaml`: a typo would
/// otherwise render nothing, and prune would follow.
fn declared_cluster(config: &Config, cluster: &str) -> Result<(), RenderError> {
    if config.clusters.iter().any(|c| c.name == cluster) {
        return Ok(());
    }
    let declared: Vec<&str> = config.clusters.iter().map(|c| c.name.as_str()).collect();
    Err(RenderError::Config {
        file: config.file.clone(),
        line: 0,
        message: format!(
            "this gitgate serves cluster {cluster:?} (--cluster), which the file does not declare (clusters: {})",
            declared.join(", ")
        ),
    })
}
