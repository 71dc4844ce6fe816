//! Kustomize, natively: a kustomization directory in a commit's tree →
//! objects, as `kustomize build` (v5) produces them.
//!
//! Supported: `resources` (files and kustomization directories, also the
//! legacy `bases`), `namespace`, `namePrefix`/`nameSuffix`, `labels`,
//! `commonLabels`, `commonAnnotations`, `images`, `patches` (strategic
//! merge and JSON 6902, inline or from a file, with `target`), the legacy
//! `patchesStrategicMerge`/`patchesJson6902`, `replicas`,
//! `configMapGenerator`/`secretGenerator` (literals, files, envs; behaviors
//! create/merge/replace; `generatorOptions`) with kustomize's hash suffix,
//! and the name-reference fix-up of ConfigMaps, Secrets, ServiceAccounts,
//! PersistentVolumeClaims, Services, Roles and scale targets after names
//! change. Transformers run in kustomize's order. Files a kustomization
//! reads (resource files, patches, generator inputs, the kustomization file
//! itself) must lie inside its own directory, as kustomize's default load
//! restrictor requires — as written and where their symlinks lead (see
//! [`super::confine`]; the directory itself is taken where its symlinks
//! lead); resource *directories* may climb (`../base`) but never above the
//! repository root.
//!
//! Not supported (an error naming the field): remote resources, `components`,
//! `helmCharts`, `replacements`, `vars`, `configurations`, `crds`,
//! `generators`/`transformers` plugins.

use std::collections::{BTreeMap, HashMap};

use base64::Engine as _;
use serde::Deserialize;
use serde_json::{Map, Value};

use super::object::{group_of, is_cluster_scoped};
use super::{RenderError, confine, yaml};
use crate::source::{NodeKind, RepoPath, TreeReader};

const FILE_NAMES: [&str; 3] = ["kustomization.yaml", "kustomization.yml", "Kustomization"];
const MAX_DEPTH: usize = 20;
/// Kustomization directories built for one app (a base included by many
/// overlays counts once per inclusion: this bounds diamond blow-ups).
const MAX_BUILDS: usize = 1_000;
/// Objects one app's kustomization may produce.
const MAX_RESOURCES: usize = 100_000;

/// The recursion state of one build: the directories being built (for
/// cycles) and how many have been built (for blow-ups).
struct Walk {
    stack: Vec<RepoPath>,
    builds: usize,
}

/// The kustomization file of `dir`, if it has one.
pub fn find_kustomization(tree: &TreeReader, dir: &RepoPath) -> Result<Option<RepoPath>, RenderError> {
    for name in FILE_NAMES {
        let p = dir.child(name);
        if let Some(n) = tree.resolve(&p)?
            && n.kind == NodeKind::File
        {
            return Ok(Some(p));
        }
    }
    Ok(None)
}

/// Builds the kustomization at `dir` (file `kfile`).
pub fn build(
    tree: &TreeReader,
    dir: &RepoPath,
    kfile: &RepoPath,
    _app: &str,
) -> Result<Vec<(Value, RepoPath)>, RenderError> {
    let mut walk = Walk { stack: Vec::new(), builds: 0 };
    let mut res = build_dir(tree, dir, kfile, &mut walk)?;
    add_hashes(&mut res)?;
    fix_name_references(&mut res);
    Ok(res.into_iter().map(|r| (r.obj, r.source)).collect())
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Kustomization {
    #[serde(default)]
    api_version: Option<String>,
    #[serde(default)]
    kind: Option<String>,
    #[serde(default)]
    metadata: Option<Value>,
    #[serde(default)]
    resources: Vec<String>,
    #[serde(default)]
    bases: Vec<String>,
    #[serde(default)]
    namespace: Option<String>,
    #[serde(default)]
    name_prefix: Option<String>,
    #[serde(default)]
    name_suffix: Option<String>,
    #[serde(default)]
    common_labels: BTreeMap<String, String>,
    #[serde(default)]
    labels: Vec<LabelSpec>,
    #[serde(default)]
    common_annotations: BTreeMap<String, String>,
    #[serde(default)]
    images: Vec<ImageSpec>,
    #[serde(default)]
    replicas: Vec<ReplicaSpec>,
    #[serde(default)]
    patches: Vec<PatchSpec>,
    #[serde(default)]
    patches_strategic_merge: Vec<String>,
    #[serde(default)]
    patches_json6902: Vec<PatchSpec>,
    #[serde(default)]
    config_map_generator: Vec<GeneratorSpec>,
    #[serde(default)]
    secret_generator: Vec<GeneratorSpec>,
    #[serde(default)]
    generator_options: Option<GeneratorOptions>,
    // Refused explicitly, with a clear message.
    #[serde(default)]
    components: Option<Value>,
    #[serde(default)]
    helm_charts: Option<Value>,
    #[serde(default)]
    replacements: Option<Value>,
    #[serde(default)]
    vars: Option<Value>,
    #[serde(default)]
    configurations: Option<Value>,
    #[serde(default)]
    crds: Option<Value>,
    #[serde(default)]
    generators: Option<Value>,
    #[serde(default)]
    transformers: Option<Value>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct LabelSpec {
    #[serde(default)]
    pairs: BTreeMap<String, String>,
    #[serde(default)]
    include_selectors: bool,
    #[serde(default)]
    include_templates: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct ImageSpec {
    name: String,
    #[serde(default)]
    new_name: Option<String>,
    #[serde(default)]
    new_tag: Option<String>,
    #[serde(default)]
    digest: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct ReplicaSpec {
    name: String,
    count: i64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct PatchSpec {
    #[serde(default)]
    path: Option<String>,
    #[serde(default)]
    patch: Option<String>,
    #[serde(default)]
    target: Option<Target>,
    #[serde(default)]
    options: Option<Value>,
}

#[derive(Deserialize, Default, Clone)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Target {
    #[serde(default)]
    group: Option<String>,
    #[serde(default)]
    version: Option<String>,
    #[serde(default)]
    kind: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    namespace: Option<String>,
    #[serde(default)]
    label_selector: Option<String>,
    #[serde(default)]
    annotation_selector: Option<String>,
}

#[derive(Deserialize, Default, Clone)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct GeneratorOptions {
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
    #[serde(default)]
    disable_name_suffix_hash: Option<bool>,
    #[serde(default)]
    immutable: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct GeneratorSpec {
    name: String,
    #[serde(default)]
    namespace: Option<String>,
    #[serde(default)]
    behavior: Option<String>,
    #[serde(default)]
    literals: Vec<String>,
    #[serde(default)]
    files: Vec<String>,
    #[serde(default)]
    envs: Vec<String>,
    #[serde(default)]
    env: Option<String>,
    #[serde(default, rename = "type")]
    type_: Option<String>,
    #[serde(default)]
    options: Option<GeneratorOptions>,
}

/// A resource being built, with every name it has had (first: as declared).
struct Res {
    obj: Value,
    source: RepoPath,
    names: Vec<String>,
    /// Generated and still to get the hash suffix.
    needs_hash: bool,
}

impl Res {
    fn kind(&self) -> &str {
        self.obj.get("kind").and_then(Value::as_str).unwrap_or("")
    }
    fn api_version(&self) -> &str {
        self.obj.get("apiVersion").and_then(Value::as_str).unwrap_or("")
    }
    fn group(&self) -> &str {
        group_of(self.api_version())
    }
    fn name(&self) -> &str {
        self.obj.pointer("/metadata/name").and_then(Value::as_str).unwrap_or("")
    }
    fn namespace(&self) -> &str {
        self.obj.pointer("/metadata/namespace").and_then(Value::as_str).unwrap_or("")
    }
    fn set_name(&mut self, name: String) {
        if let Some(m) = self.obj.get_mut("metadata").and_then(Value::as_object_mut) {
            m.insert("name".into(), Value::String(name.clone()));
        }
        self.names.push(name);
    }
}

fn kerr(file: &RepoPath, reason: impl Into<String>) -> RenderError {
    RenderError::Kustomize { file: file.to_string(), reason: reason.into() }
}

fn build_dir(tree: &TreeReader, dir: &RepoPath, kfile: &RepoPath, walk: &mut Walk) -> Result<Vec<Res>, RenderError> {
    // Where the directory really is (a resource directory may be a
    // symlink): every file this kustomization reads must resolve below it.
    let dir = &confine::canonical_dir(tree, dir)?;
    let kfile = &dir.child(kfile.file_name());
    if walk.stack.contains(dir) {
        return Err(kerr(kfile, format!("resource cycle through {dir}")));
    }
    if walk.stack.len() >= MAX_DEPTH {
        return Err(kerr(kfile, format!("kustomizations nested more than {MAX_DEPTH} deep")));
    }
    walk.builds += 1;
    if walk.builds > MAX_BUILDS {
        return Err(kerr(kfile, format!("more than {MAX_BUILDS} kustomization builds for one app")));
    }
    walk.stack.push(dir.clone());
    let bytes = confine::read(tree, kfile, dir, confine::KUSTOMIZE)?;
    let k: Kustomization = yaml::parse_one(kfile.as_str(), &bytes)?;
    refuse_unsupported(&k, kfile)?;
    let _ = (&k.api_version, &k.kind, &k.metadata);

    // 1. resources
    let mut res: Vec<Res> = Vec::new();
    for entry in k.resources.iter().chain(&k.bases) {
        if is_remote(entry) {
            return Err(kerr(
                kfile,
                format!("remote resource {entry:?} is not supported: vendor it into the repository"),
            ));
        }
        let path = dir.join(entry).map_err(|e| kerr(kfile, format!("resource {entry:?}: {e}")))?;
        match tree.resolve(&path)? {
            // Kustomization directories may lie anywhere in the repository
            // (`../base`), as with kustomize.
            Some(n) if n.kind == NodeKind::Dir => {
                let sub = find_kustomization(tree, &n.path)?
                    .ok_or_else(|| kerr(kfile, format!("resource directory {path} has no kustomization")))?;
                res.extend(build_dir(tree, &n.path, &sub, walk)?);
                if res.len() > MAX_RESOURCES {
                    return Err(kerr(kfile, format!("more than {MAX_RESOURCES} resources")));
                }
            }
            Some(n) => {
                // Like kustomize's load restrictor: resource files (unlike
                // kustomization directories) must lie inside this directory,
                // as written and where their symlinks lead.
                if !path.starts_with(dir) {
                    return Err(kerr(
                        kfile,
                        format!("resource file {entry:?} is outside the kustomization directory {dir}"),
                    ));
                }
                confine::check(&path, &n.path, dir, confine::KUSTOMIZE)?;
                for (obj, source) in yaml::parse_bytes(&path, &tree.read(&n.path)?)? {
                    let name = obj.pointer("/metadata/name").and_then(Value::as_str).unwrap_or("").to_string();
                    res.push(Res { obj, source, names: vec![name], needs_hash: false });
                }
            }
            // Not in the tree: say so, and that gitgate fetches nothing
            // when it reads like a remote base (`host/org/repo//dir?ref=`).
            None if looks_remote(entry) => {
                return Err(kerr(
                    kfile,
                    format!(
                        "resource {entry:?} does not exist in the repository, and remote resources are not \
                         supported: vendor it into the repository"
                    ),
                ));
            }
            None => return Err(kerr(kfile, format!("resource {entry:?} ({path}) does not exist"))),
        }
    }

    // 2. generators
    let global = k.generator_options.clone().unwrap_or_default();
    for g in &k.config_map_generator {
        generate(tree, dir, kfile, g, &global, false, &mut res)?;
    }
    for g in &k.secret_generator {
        generate(tree, dir, kfile, g, &global, true, &mut res)?;
    }

    // 3. transformers, in kustomize's order.
    for p in &k.patches_strategic_merge {
        let path = inside(dir, kfile, p)?;
        let body = confine::read(tree, &path, dir, confine::KUSTOMIZE)?;
        for doc in yaml::parse_documents(path.as_str(), &body)? {
            apply_patch(&doc, None, &path, &mut res)?;
        }
    }
    for p in &k.patches {
        let (doc_src, docs) = patch_docs(tree, dir, kfile, p)?;
        for doc in docs {
            apply_patch(&doc, p.target.as_ref(), &doc_src, &mut res)?;
        }
    }
    if let Some(ns) = &k.namespace {
        for r in res.iter_mut() {
            // kustomize renames Namespace objects to the namespace.
            if r.group().is_empty() && r.kind() == "Namespace" && r.name() != ns {
                r.set_name(ns.clone());
            }
            if !is_cluster_scoped(r.group(), r.kind())
                && let Some(m) = r.obj.get_mut("metadata").and_then(Value::as_object_mut)
            {
                m.insert("namespace".into(), Value::String(ns.clone()));
            }
        }
    }
    if k.name_prefix.is_some() || k.name_suffix.is_some() {
        let prefix = k.name_prefix.clone().unwrap_or_default();
        let suffix = k.name_suffix.clone().unwrap_or_default();
        for r in res.iter_mut() {
            let skip = matches!(
                (r.group(), r.kind()),
                ("", "Namespace")
                    | ("apiextensions.k8s.io", "CustomResourceDefinition")
                    | ("apiregistration.k8s.io", "APIService")
            );
            if !skip {
                let n = format!("{prefix}{}{suffix}", r.name());
                r.set_name(n);
            }
        }
    }
    if !k.common_labels.is_empty() {
        for r in res.iter_mut() {
            add_labels(&mut r.obj, &k.common_labels, true, true);
        }
    }
    for l in &k.labels {
        for r in res.iter_mut() {
            add_labels(&mut r.obj, &l.pairs, l.include_selectors, l.include_templates || l.include_selectors);
        }
    }
    if !k.common_annotations.is_empty() {
        for r in res.iter_mut() {
            add_annotations(&mut r.obj, &k.common_annotations);
        }
    }
    for p in &k.patches_json6902 {
        let (doc_src, docs) = patch_docs(tree, dir, kfile, p)?;
        for doc in docs {
            apply_patch(&doc, p.target.as_ref(), &doc_src, &mut res)?;
        }
    }
    for rep in &k.replicas {
        for r in res.iter_mut() {
            if r.names.contains(&rep.name)
                && matches!(r.kind(), "Deployment" | "ReplicaSet" | "StatefulSet" | "ReplicationController")
                && let Some(spec) = r.obj.get_mut("spec").and_then(Value::as_object_mut)
            {
                spec.insert("replicas".into(), Value::from(rep.count));
            }
        }
    }
    if !k.images.is_empty() {
        for r in res.iter_mut() {
            set_images(&mut r.obj, &k.images);
        }
    }
    walk.stack.pop();
    Ok(res)
}

/// A resource kustomize would fetch, unmistakably: a URL (`https://`,
/// `ssh://`, `git::https://`, `file://`), go-getter's `git::`, scp-like
/// `git@host:org/repo`, or a `github.com/` shorthand. gitgate renders only
/// what the commit holds (no network, no local files), so these are refused
/// naming the entry (Argo CD's and Flux's remote-base SSRF class).
fn is_remote(entry: &str) -> bool {
    let lower = entry.to_ascii_lowercase();
    lower.contains("://")
        || lower.starts_with("git::")
        || lower.starts_with("git@")
        || lower.starts_with("github.com/")
        || lower.starts_with("gitlab.com/")
        || lower.starts_with("bitbucket.org/")
}

/// An entry that is not in the tree and reads like a remote base kustomize
/// would try to fetch: a `?ref=`/`?version=` query, a `//` subdirectory
/// separator, or a first component that looks like a host (`example.com`,
/// `10.0.0.1:8080`, `user@host:repo`).
fn looks_remote(entry: &str) -> bool {
    let first = entry.split('/').next().unwrap_or_default();
    entry.contains("?ref=")
        || entry.contains("?version=")
        || entry.contains("//")
        || first.contains('@')
        || first.contains(':')
        || (first.contains('.') && !first.starts_with('.') && entry.contains('/'))
}

fn refuse_unsupported(k: &Kustomization, kfile: &RepoPath) -> Result<(), RenderError> {
    let fields = [
        ("components", k.components.is_some()),
        ("helmCharts", k.helm_charts.is_some()),
        ("replacements", k.replacements.is_some()),
        ("vars", k.vars.is_some()),
        ("configurations", k.configurations.is_some()),
        ("crds", k.crds.is_some()),
        ("generators", k.generators.is_some()),
        ("transformers", k.transformers.is_some()),
    ];
    for (name, set) in fields {
        if set {
            return Err(kerr(kfile, format!("field {name:?} is not supported by gitgate's kustomize")));
        }
    }
    Ok(())
}

/// A file a kustomization reads: relative to its directory and inside it.
fn inside(dir: &RepoPath, kfile: &RepoPath, rel: &str) -> Result<RepoPath, RenderError> {
    if is_remote(rel) {
        return Err(kerr(
            kfile,
            format!("{rel:?} is remote, and gitgate fetches nothing: vendor it into the repository"),
        ));
    }
    let p = dir.join(rel).map_err(|e| kerr(kfile, format!("{rel:?}: {e}")))?;
    if !p.starts_with(dir) {
        return Err(kerr(kfile, format!("{rel:?} is outside the kustomization directory {dir} (load restrictor)")));
    }
    Ok(p)
}

fn patch_docs(
    tree: &TreeReader,
    dir: &RepoPath,
    kfile: &RepoPath,
    p: &PatchSpec,
) -> Result<(RepoPath, Vec<Value>), RenderError> {
    if p.options.is_some() {
        return Err(kerr(kfile, "patch options are not supported"));
    }
    match (&p.path, &p.patch) {
        (Some(path), None) => {
            let path = inside(dir, kfile, path)?;
            let body = confine::read(tree, &path, dir, confine::KUSTOMIZE)?;
            let docs = yaml::parse_documents(path.as_str(), &body)?;
            Ok((path, docs))
        }
        (None, Some(inline)) => Ok((kfile.clone(), yaml::parse_documents(kfile.as_str(), inline.as_bytes())?)),
        _ => Err(kerr(kfile, "a patch needs exactly one of path and patch")),
    }
}

// ------------------------------------------------------------- patches

fn apply_patch(doc: &Value, target: Option<&Target>, src: &RepoPath, res: &mut [Res]) -> Result<(), RenderError> {
    if let Value::Array(_) = doc {
        let ops: json_patch::Patch =
            serde_json::from_value(doc.clone()).map_err(|e| kerr(src, format!("invalid JSON 6902 patch: {e}")))?;
        let Some(t) = target else {
            return Err(kerr(src, "a JSON 6902 patch needs a target"));
        };
        for r in res.iter_mut().filter(|r| matches_target(r, t)) {
            json_patch::patch(&mut r.obj, &ops)
                .map_err(|e| kerr(src, format!("JSON 6902 patch on {}: {e}", r.name())))?;
            let now = r.name().to_string();
            if r.names.last() != Some(&now) {
                r.names.push(now);
            }
        }
        return Ok(());
    }
    if !doc.is_object() {
        return Err(kerr(src, "a patch must be a mapping (strategic merge) or a list (JSON 6902)"));
    }
    match target {
        Some(t) => {
            for r in res.iter_mut().filter(|r| matches_target(r, t)) {
                let mut p = doc.clone();
                // With an explicit target, the patch's own name is not used.
                if let Some(m) = p.get_mut("metadata").and_then(Value::as_object_mut) {
                    m.remove("name");
                    m.remove("namespace");
                }
                smp_resource(r, &p);
            }
        }
        None => {
            let kind = doc.get("kind").and_then(Value::as_str).unwrap_or("");
            let name = doc.pointer("/metadata/name").and_then(Value::as_str).unwrap_or("");
            let ns = doc.pointer("/metadata/namespace").and_then(Value::as_str);
            let mut matched = 0usize;
            for r in res.iter_mut() {
                if r.kind() == kind && r.names.iter().any(|n| n == name) && ns.is_none_or(|ns| ns == r.namespace()) {
                    smp_resource(r, doc);
                    matched += 1;
                }
            }
            if matched == 0 {
                return Err(kerr(src, format!("strategic merge patch for {kind} {name:?} matches no resource")));
            }
        }
    }
    Ok(())
}

fn smp_resource(r: &mut Res, patch: &Value) {
    let builtin = matches!(
        r.group(),
        "" | "apps"
            | "batch"
            | "extensions"
            | "policy"
            | "autoscaling"
            | "networking.k8s.io"
            | "rbac.authorization.k8s.io"
    );
    let name_before = r.name().to_string();
    strategic_merge(&mut r.obj, patch, builtin);
    let now = r.name().to_string();
    if now != name_before {
        r.names.push(now);
    }
}

fn matches_target(r: &Res, t: &Target) -> bool {
    let re = |pat: &Option<String>, v: &str| match pat {
        None => true,
        Some(p) => regex::Regex::new(&format!("^(?:{p})$")).map(|re| re.is_match(v)).unwrap_or(p == v),
    };
    let version = r.api_version().rsplit('/').next().unwrap_or("");
    re(&t.group, r.group())
        && re(&t.version, version)
        && re(&t.kind, r.kind())
        && (t.name.is_none() || r.names.iter().any(|n| re(&t.name, n)))
        && re(&t.namespace, r.namespace())
        && selector_matches(r.obj.pointer("/metadata/labels"), t.label_selector.as_deref())
        && selector_matches(r.obj.pointer("/metadata/annotations"), t.annotation_selector.as_deref())
}

/// Equality-based selectors: `k=v,k2!=v2,k3`.
fn selector_matches(map: Option<&Value>, selector: Option<&str>) -> bool {
    let Some(sel) = selector else { return true };
    let get = |k: &str| map.and_then(|m| m.get(k)).and_then(Value::as_str);
    sel.split(',').map(str::trim).filter(|s| !s.is_empty()).all(|term| {
        if let Some((k, v)) = term.split_once("!=") {
            get(k.trim()) != Some(v.trim())
        } else if let Some((k, v)) = term.split_once("==").or_else(|| term.split_once('=')) {
            get(k.trim()) == Some(v.trim())
        } else if let Some(k) = term.strip_prefix('!') {
            get(k.trim()).is_none()
        } else {
            get(term).is_some()
        }
    })
}

/// The merge key of a list field of the built-in API, by field name.
fn merge_key(field: &str, items: &[Value]) -> Option<&'static str> {
    match field {
        "containers" | "initContainers" | "ephemeralContainers" | "env" | "volumes" | "imagePullSecrets" => {
            Some("name")
        }
        "volumeMounts" => Some("mountPath"),
        "volumeDevices" => Some("devicePath"),
        "hostAliases" => Some("ip"),
        "ports" => {
            if items.iter().any(|i| i.get("containerPort").is_some()) {
                Some("containerPort")
            } else {
                Some("port")
            }
        }
        _ => None,
    }
}

/// Strategic merge: maps merge, `null` deletes, lists with a merge key
/// merge element-wise (`$patch: delete` removes one), other lists replace.
/// `builtin` is false for custom resources (lists always replace there).
fn strategic_merge(target: &mut Value, patch: &Value, builtin: bool) {
    let (Value::Object(t), Value::Object(p)) = (&mut *target, patch) else {
        *target = strip_directives(patch);
        return;
    };
    if p.get("$patch").and_then(Value::as_str) == Some("replace") {
        *target = strip_directives(patch);
        return;
    }
    for (k, pv) in p {
        if k.starts_with('$') {
            continue;
        }
        if pv.is_null() {
            t.remove(k);
            continue;
        }
        match (t.get_mut(k), pv) {
            (Some(tv @ Value::Object(_)), Value::Object(_)) => strategic_merge(tv, pv, builtin),
            (Some(Value::Array(tl)), Value::Array(pl)) if builtin => match merge_key(k, pl) {
                Some(key) => merge_list(tl, pl, key, builtin),
                None => *t.get_mut(k).unwrap_or(&mut Value::Null) = strip_directives(pv),
            },
            _ => {
                t.insert(k.clone(), strip_directives(pv));
            }
        }
    }
}

fn merge_list(target: &mut Vec<Value>, patch: &[Value], key: &str, builtin: bool) {
    // As kustomize orders a merged list: the patch's elements first, in
    // patch order (merged into the target's element of the same key, or
    // dropped for `$patch: delete`), then the target's elements the patch
    // does not mention, in their order.
    let mut rest: Vec<Option<Value>> = std::mem::take(target).into_iter().map(Some).collect();
    let mut out = Vec::with_capacity(rest.len() + patch.len());
    for item in patch {
        let id = item.get(key);
        let delete = item.get("$patch").and_then(Value::as_str) == Some("delete");
        let existing = id.and_then(|id| {
            rest.iter_mut().find(|t| t.as_ref().is_some_and(|t| t.get(key) == Some(id))).and_then(Option::take)
        });
        match (existing, delete) {
            (_, true) => {}
            (Some(mut t), false) => {
                strategic_merge(&mut t, item, builtin);
                out.push(t);
            }
            (None, false) => out.push(strip_directives(item)),
        }
    }
    out.extend(rest.into_iter().flatten());
    *target = out;
}

fn strip_directives(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(k, v)| !k.starts_with('$') && !v.is_null())
                .map(|(k, v)| (k.clone(), strip_directives(v)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(strip_directives).collect()),
        other => other.clone(),
    }
}

// --------------------------------------------------- labels, annotations

const TEMPLATE_KINDS: [&str; 6] =
    ["Deployment", "ReplicaSet", "DaemonSet", "StatefulSet", "Job", "ReplicationController"];

fn ensure_map<'a>(v: &'a mut Value, path: &[&str], create: bool) -> Option<&'a mut Map<String, Value>> {
    let mut cur = v;
    for p in path {
        let m = cur.as_object_mut()?;
        if !m.contains_key(*p) {
            if !create {
                return None;
            }
            m.insert((*p).to_string(), Value::Object(Map::new()));
        }
        cur = m.get_mut(*p)?;
        if cur.is_null() && create {
            *cur = Value::Object(Map::new());
        }
    }
    cur.as_object_mut()
}

fn put_all(m: &mut Map<String, Value>, pairs: &BTreeMap<String, String>) {
    for (k, v) in pairs {
        m.insert(k.clone(), Value::String(v.clone()));
    }
}

fn add_labels(obj: &mut Value, pairs: &BTreeMap<String, String>, selectors: bool, templates: bool) {
    if pairs.is_empty() {
        return;
    }
    let kind = obj.get("kind").and_then(Value::as_str).unwrap_or("").to_string();
    let group = group_of(obj.get("apiVersion").and_then(Value::as_str).unwrap_or("")).to_string();
    if let Some(m) = ensure_map(obj, &["metadata", "labels"], true) {
        put_all(m, pairs);
    }
    let core_or_apps = group.is_empty() || group == "apps" || group == "batch" || group == "extensions";
    if !core_or_apps {
        return;
    }
    if templates {
        if TEMPLATE_KINDS.contains(&kind.as_str())
            && let Some(m) = ensure_map(obj, &["spec", "template", "metadata", "labels"], true)
        {
            put_all(m, pairs);
        }
        if kind == "CronJob" {
            for path in [
                &["spec", "jobTemplate", "metadata", "labels"][..],
                &["spec", "jobTemplate", "spec", "template", "metadata", "labels"],
            ] {
                if let Some(m) = ensure_map(obj, path, true) {
                    put_all(m, pairs);
                }
            }
        }
        if kind == "StatefulSet"
            && let Some(Value::Array(vcts)) = obj.pointer_mut("/spec/volumeClaimTemplates")
        {
            for t in vcts {
                if let Some(m) = ensure_map(t, &["metadata", "labels"], true) {
                    put_all(m, pairs);
                }
            }
        }
    }
    if selectors {
        match kind.as_str() {
            "Service" | "ReplicationController" => {
                if let Some(m) = ensure_map(obj, &["spec", "selector"], true) {
                    put_all(m, pairs);
                }
            }
            "Deployment" | "ReplicaSet" | "DaemonSet" | "StatefulSet" => {
                if let Some(m) = ensure_map(obj, &["spec", "selector", "matchLabels"], true) {
                    put_all(m, pairs);
                }
            }
            "Job" => {
                if let Some(m) = ensure_map(obj, &["spec", "selector", "matchLabels"], false) {
                    put_all(m, pairs);
                }
            }
            "CronJob" => {
                if let Some(m) = ensure_map(obj, &["spec", "jobTemplate", "spec", "selector", "matchLabels"], false) {
                    put_all(m, pairs);
                }
            }
            _ => {}
        }
    }
}

fn add_annotations(obj: &mut Value, pairs: &BTreeMap<String, String>) {
    let kind = obj.get("kind").and_then(Value::as_str).unwrap_or("").to_string();
    if let Some(m) = ensure_map(obj, &["metadata", "annotations"], true) {
        put_all(m, pairs);
    }
    if TEMPLATE_KINDS.contains(&kind.as_str())
        && let Some(m) = ensure_map(obj, &["spec", "template", "metadata", "annotations"], true)
    {
        put_all(m, pairs);
    }
    if kind == "CronJob" {
        for path in [
            &["spec", "jobTemplate", "metadata", "annotations"][..],
            &["spec", "jobTemplate", "spec", "template", "metadata", "annotations"],
        ] {
            if let Some(m) = ensure_map(obj, path, true) {
                put_all(m, pairs);
            }
        }
    }
}

// ---------------------------------------------------------------- images

fn set_images(v: &mut Value, images: &[ImageSpec]) {
    match v {
        Value::Object(m) => {
            for (k, child) in m.iter_mut() {
                if (k == "containers" || k == "initContainers")
                    && let Value::Array(items) = child
                {
                    for c in items.iter_mut() {
                        if let Some(Value::String(image)) = c.get_mut("image")
                            && let Some(new) = rewrite_image(image, images)
                        {
                            *image = new;
                        }
                    }
                }
                set_images(child, images);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|i| set_images(i, images)),
        _ => {}
    }
}

/// Splits `repo/name:tag@digest` into (name, tag, digest).
fn split_image(image: &str) -> (&str, Option<&str>, Option<&str>) {
    let (rest, digest) = match image.split_once('@') {
        Some((r, d)) => (r, Some(d)),
        None => (image, None),
    };
    let slash = rest.rfind('/').map(|i| i + 1).unwrap_or(0);
    match rest[slash..].rfind(':') {
        Some(i) => (&rest[..slash + i], Some(&rest[slash + i + 1..]), digest),
        None => (rest, None, digest),
    }
}

fn rewrite_image(image: &str, images: &[ImageSpec]) -> Option<String> {
    let (name, tag, digest) = split_image(image);
    let spec = images.iter().find(|s| s.name == name)?;
    let new_name = spec.new_name.as_deref().unwrap_or(name);
    Some(match (&spec.digest, &spec.new_tag) {
        (Some(d), _) => format!("{new_name}@{d}"),
        (None, Some(t)) => format!("{new_name}:{t}"),
        (None, None) => match (tag, digest) {
            (Some(t), Some(d)) => format!("{new_name}:{t}@{d}"),
            (Some(t), None) => format!("{new_name}:{t}"),
            (None, Some(d)) => format!("{new_name}@{d}"),
            (None, None) => new_name.to_string(),
        },
    })
}

// ------------------------------------------------------------ generators

fn generate(
    tree: &TreeReader,
    dir: &RepoPath,
    kfile: &RepoPath,
    g: &GeneratorSpec,
    global: &GeneratorOptions,
    secret: bool,
    res: &mut Vec<Res>,
) -> Result<(), RenderError> {
    let mut data: Vec<(String, Vec<u8>)> = Vec::new();
    for lit in &g.literals {
        let (k, v) = lit.split_once('=').ok_or_else(|| kerr(kfile, format!("literal {lit:?} is not key=value")))?;
        data.push((k.to_string(), unquote(v).as_bytes().to_vec()));
    }
    for f in &g.files {
        let (key, rel) = match f.split_once('=') {
            Some((k, p)) => (k.to_string(), p),
            None => (f.rsplit('/').next().unwrap_or(f).to_string(), f.as_str()),
        };
        let path = inside(dir, kfile, rel)?;
        data.push((key, confine::read(tree, &path, dir, confine::KUSTOMIZE)?));
    }
    for e in g.envs.iter().chain(&g.env) {
        let path = inside(dir, kfile, e)?;
        let body = confine::read(tree, &path, dir, confine::KUSTOMIZE)?;
        let text = String::from_utf8(body).map_err(|_| kerr(&path, "env file is not UTF-8"))?;
        for line in text.lines() {
            let line = line.trim_start();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            match line.split_once('=') {
                Some((k, v)) => data.push((k.to_string(), v.as_bytes().to_vec())),
                None => return Err(kerr(&path, format!("line {line:?} is not KEY=value"))),
            }
        }
    }
    let mut seen = std::collections::HashSet::new();
    for (k, _) in &data {
        if !seen.insert(k.clone()) {
            return Err(kerr(kfile, format!("generator {:?}: key {k:?} is set twice", g.name)));
        }
    }

    let mut data_map = Map::new();
    let mut binary_map = Map::new();
    for (k, v) in data {
        if secret {
            data_map.insert(k, Value::String(wrapped_base64(&v)));
        } else {
            match String::from_utf8(v) {
                Ok(s) => {
                    data_map.insert(k, Value::String(s));
                }
                Err(e) => {
                    binary_map.insert(k, Value::String(base64::engine::general_purpose::STANDARD.encode(e.as_bytes())));
                }
            }
        }
    }

    let opts = g.options.clone().unwrap_or_default();
    let mut labels = global.labels.clone();
    labels.extend(opts.labels.clone());
    let mut annotations = global.annotations.clone();
    annotations.extend(opts.annotations.clone());
    let disable_hash = opts.disable_name_suffix_hash.or(global.disable_name_suffix_hash).unwrap_or(false);
    let immutable = opts.immutable.or(global.immutable).unwrap_or(false);

    let kind = if secret { "Secret" } else { "ConfigMap" };
    let behavior = g.behavior.as_deref().unwrap_or("create");
    let existing = res.iter().position(|r| r.kind() == kind && r.names.contains(&g.name));
    match (behavior, existing) {
        ("create", Some(_)) => {
            return Err(kerr(kfile, format!("{kind} {:?} already exists: use behavior merge or replace", g.name)));
        }
        ("merge" | "replace", None) => {
            return Err(kerr(kfile, format!("{kind} {:?} to {behavior} does not exist", g.name)));
        }
        ("merge", Some(i)) => {
            if let Some(r) = res.get_mut(i) {
                if let Some(m) = ensure_map(&mut r.obj, &["data"], true) {
                    m.extend(data_map);
                }
                if !binary_map.is_empty()
                    && let Some(m) = ensure_map(&mut r.obj, &["binaryData"], true)
                {
                    m.extend(binary_map);
                }
                if let Some(m) = ensure_map(&mut r.obj, &["metadata", "labels"], !labels.is_empty()) {
                    put_all(m, &labels);
                }
                if let Some(m) = ensure_map(&mut r.obj, &["metadata", "annotations"], !annotations.is_empty()) {
                    put_all(m, &annotations);
                }
                r.needs_hash = r.needs_hash && !disable_hash;
            }
            return Ok(());
        }
        ("create" | "replace", _) => {}
        (other, _) => return Err(kerr(kfile, format!("unknown generator behavior {other:?}"))),
    }

    let mut meta = Map::new();
    meta.insert("name".into(), Value::String(g.name.clone()));
    if let Some(ns) = &g.namespace {
        meta.insert("namespace".into(), Value::String(ns.clone()));
    }
    if !labels.is_empty() {
        meta.insert("labels".into(), Value::Object(labels.into_iter().map(|(k, v)| (k, Value::String(v))).collect()));
    }
    if !annotations.is_empty() {
        meta.insert(
            "annotations".into(),
            Value::Object(annotations.into_iter().map(|(k, v)| (k, Value::String(v))).collect()),
        );
    }
    let mut obj = Map::new();
    obj.insert("apiVersion".into(), Value::String("v1".into()));
    obj.insert("kind".into(), Value::String(kind.into()));
    obj.insert("metadata".into(), Value::Object(meta));
    if !data_map.is_empty() {
        obj.insert("data".into(), Value::Object(data_map));
    }
    if !binary_map.is_empty() {
        obj.insert("binaryData".into(), Value::Object(binary_map));
    }
    if secret {
        obj.insert("type".into(), Value::String(g.type_.clone().unwrap_or_else(|| "Opaque".into())));
    }
    if immutable {
        obj.insert("immutable".into(), Value::Bool(true));
    }
    let r =
        Res { obj: Value::Object(obj), source: kfile.clone(), names: vec![g.name.clone()], needs_hash: !disable_hash };
    match existing {
        Some(i) if behavior == "replace" => {
            if let Some(slot) = res.get_mut(i) {
                let mut names = std::mem::take(&mut slot.names);
                names.extend(r.names.iter().cloned());
                *slot = Res { names, ..r };
            }
        }
        _ => res.push(r),
    }
    Ok(())
}

/// Base64 as kustomize writes Secret data: when 70 characters or longer,
/// in lines of 70, each ending in a newline.
fn wrapped_base64(bytes: &[u8]) -> String {
    const LINE: usize = 70;
    let enc = base64::engine::general_purpose::STANDARD.encode(bytes);
    if enc.len() < LINE {
        return enc;
    }
    let mut out = String::with_capacity(enc.len() + enc.len() / LINE + 1);
    for chunk in enc.as_bytes().chunks(LINE) {
        out.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        out.push('\n');
    }
    out
}

fn unquote(v: &str) -> &str {
    let b = v.as_bytes();
    if b.len() >= 2 && ((b[0] == b'"' && b[b.len() - 1] == b'"') || (b[0] == b'\'' && b[b.len() - 1] == b'\'')) {
        &v[1..v.len() - 1]
    } else {
        v
    }
}

/// Appends kustomize's content hash to generated ConfigMaps and Secrets.
fn add_hashes(res: &mut [Res]) -> Result<(), RenderError> {
    for r in res.iter_mut().filter(|r| r.needs_hash) {
        let hash = content_hash(&r.obj);
        let n = format!("{}-{hash}", r.name());
        r.set_name(n);
        r.needs_hash = false;
    }
    Ok(())
}

/// kustomize's hash: sha256 over Go's `json.Marshal` of
/// `{kind, name: "", data[, binaryData]}` (Secrets: `type` and
/// `stringData` too), the first ten
/// hex digits with 0,1,3,a,e mapped to g,h,k,m,t (no vowels, no look-alikes).
pub fn content_hash(obj: &Value) -> String {
    let kind = obj.get("kind").and_then(Value::as_str).unwrap_or("");
    let mut m: BTreeMap<&str, Value> = BTreeMap::new();
    m.insert("kind", Value::String(kind.to_string()));
    // kustomize v5 looks the name up as the single path segment
    // "metadata/name", which never matches: its hashes always encode "".
    m.insert("name", Value::String(String::new()));
    m.insert("data", obj.get("data").cloned().unwrap_or(Value::String(String::new())));
    if kind == "Secret" {
        m.insert("type", obj.get("type").cloned().unwrap_or(Value::String(String::new())));
        if let Some(s) = obj.get("stringData").filter(|s| s.is_object()) {
            m.insert("stringData", s.clone());
        }
    } else if let Some(b) = obj.get("binaryData")
        && b.is_object()
    {
        m.insert("binaryData", b.clone());
    }
    let mut enc = String::new();
    go_json(&Value::Object(m.into_iter().map(|(k, v)| (k.to_string(), v)).collect()), &mut enc);
    let digest = super::object::sha256_digest(enc.as_bytes());
    let hex: String = digest.iter().take(5).map(|b| format!("{b:02x}")).collect();
    hex.chars()
        .map(|c| match c {
            '0' => 'g',
            '1' => 'h',
            '3' => 'k',
            'a' => 'm',
            'e' => 't',
            c => c,
        })
        .collect()
}

/// Go's `encoding/json` output: sorted keys, HTML-escaped strings.
fn go_json(v: &Value, out: &mut String) {
    super::object::write_sorted(v, out, go_string);
}

fn go_string(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '<' | '>' | '&' | '\u{2028}' | '\u{2029}' => out.push_str(&format!("\\u{:04x}", c as u32)),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
}

// ------------------------------------------------------ name references

/// After names changed (prefix, suffix, hash), points references at the
/// new names: a reference equal to any earlier name of a resource of the
/// referenced kind now carries its final name.
fn fix_name_references(res: &mut [Res]) {
    fix_service_account_subjects(res);
    // (kind, earlier name, namespace) → final name. Namespaced references
    // resolve within the referrer's namespace ("" is "default"), as in
    // kustomize; cluster-scoped targets (ClusterRole) match any referrer.
    let norm = |ns: &str| if ns.is_empty() { "default".to_string() } else { ns.to_string() };
    let mut renames: HashMap<(String, String, String), String> = HashMap::new();
    for r in res.iter() {
        let current = r.name().to_string();
        let ns = if is_cluster_scoped(r.group(), r.kind()) { String::new() } else { norm(r.namespace()) };
        for old in &r.names {
            if *old != current {
                renames.insert((r.kind().to_string(), old.clone(), ns.clone()), current.clone());
            }
        }
    }
    if renames.is_empty() {
        return;
    }
    for r in res.iter_mut() {
        let kind = r.kind().to_string();
        let referrer_ns = norm(r.namespace());
        let rename = |target_kind: &str, v: &mut Value| {
            let ns = if is_cluster_scoped("rbac.authorization.k8s.io", target_kind) {
                String::new()
            } else {
                referrer_ns.clone()
            };
            if let Value::String(s) = v
                && let Some(new) = renames.get(&(target_kind.to_string(), s.clone(), ns))
            {
                *s = new.clone();
            }
        };
        let obj = &mut r.obj;
        let pod_spec_path: Option<&str> = match kind.as_str() {
            "Pod" => Some("/spec"),
            "Deployment" | "ReplicaSet" | "DaemonSet" | "StatefulSet" | "Job" | "ReplicationController" => {
                Some("/spec/template/spec")
            }
            "CronJob" => Some("/spec/jobTemplate/spec/template/spec"),
            _ => None,
        };
        if let Some(p) = pod_spec_path
            && let Some(spec) = obj.pointer_mut(p)
        {
            fix_pod_spec(spec, &rename);
        }
        match kind.as_str() {
            "StatefulSet" => {
                if let Some(v) = obj.pointer_mut("/spec/serviceName") {
                    rename("Service", v);
                }
            }
            "Ingress" => {
                if let Some(v) = obj.pointer_mut("/spec/defaultBackend/service/name") {
                    rename("Service", v);
                }
                if let Some(Value::Array(rules)) = obj.pointer_mut("/spec/rules") {
                    for rule in rules {
                        if let Some(Value::Array(paths)) = rule.pointer_mut("/http/paths") {
                            for p in paths {
                                if let Some(v) = p.pointer_mut("/backend/service/name") {
                                    rename("Service", v);
                                }
                            }
                        }
                    }
                }
                if let Some(Value::Array(tls)) = obj.pointer_mut("/spec/tls") {
                    for t in tls {
                        if let Some(v) = t.get_mut("secretName") {
                            rename("Secret", v);
                        }
                    }
                }
            }
            "RoleBinding" | "ClusterRoleBinding" => {
                let role_kind = obj.pointer("/roleRef/kind").and_then(Value::as_str).unwrap_or("").to_string();
                if let Some(v) = obj.pointer_mut("/roleRef/name") {
                    rename(&role_kind, v);
                }
            }
            "HorizontalPodAutoscaler" => {
                let k = obj.pointer("/spec/scaleTargetRef/kind").and_then(Value::as_str).unwrap_or("").to_string();
                if let Some(v) = obj.pointer_mut("/spec/scaleTargetRef/name") {
                    rename(&k, v);
                }
            }
            "ServiceAccount" => {
                for field in ["secrets", "imagePullSecrets"] {
                    if let Some(Value::Array(items)) = obj.get_mut(field) {
                        for i in items {
                            if let Some(v) = i.get_mut("name") {
                                rename("Secret", v);
                            }
                        }
                    }
                }
            }
            _ => {}
        }
    }
}

/// (Cluster)RoleBinding subjects naming a ServiceAccount of this build
/// (with no namespace, `default`, or its own) take its final name and
/// namespace, as kustomize does.
fn fix_service_account_subjects(res: &mut [Res]) {
    let mut accounts: HashMap<String, (String, String)> = HashMap::new();
    for r in res.iter().filter(|r| r.group().is_empty() && r.kind() == "ServiceAccount") {
        for n in &r.names {
            accounts.insert(n.clone(), (r.name().to_string(), r.namespace().to_string()));
        }
    }
    if accounts.is_empty() {
        return;
    }
    for r in res.iter_mut() {
        if !(r.group() == "rbac.authorization.k8s.io" && matches!(r.kind(), "RoleBinding" | "ClusterRoleBinding")) {
            continue;
        }
        let Some(Value::Array(subjects)) = r.obj.get_mut("subjects") else { continue };
        for s in subjects {
            if s.get("kind").and_then(Value::as_str) != Some("ServiceAccount") {
                continue;
            }
            let Some((name, ns)) = s.get("name").and_then(Value::as_str).and_then(|n| accounts.get(n)).cloned() else {
                continue;
            };
            let sub_ns = s.get("namespace").and_then(Value::as_str).unwrap_or("");
            if !(sub_ns.is_empty() || sub_ns == "default" || sub_ns == ns) {
                continue;
            }
            if let Some(m) = s.as_object_mut() {
                m.insert("name".into(), Value::String(name));
                if !ns.is_empty() {
                    m.insert("namespace".into(), Value::String(ns));
                }
            }
        }
    }
}

fn fix_pod_spec(spec: &mut Value, rename: &dyn Fn(&str, &mut Value)) {
    for field in ["serviceAccountName", "serviceAccount"] {
        if let Some(v) = spec.get_mut(field) {
            rename("ServiceAccount", v);
        }
    }
    if let Some(Value::Array(items)) = spec.get_mut("imagePullSecrets") {
        for i in items {
            if let Some(v) = i.get_mut("name") {
                rename("Secret", v);
            }
        }
    }
    if let Some(Value::Array(vols)) = spec.get_mut("volumes") {
        for vol in vols {
            if let Some(v) = vol.pointer_mut("/configMap/name") {
                rename("ConfigMap", v);
            }
            if let Some(v) = vol.pointer_mut("/secret/secretName") {
                rename("Secret", v);
            }
            if let Some(v) = vol.pointer_mut("/persistentVolumeClaim/claimName") {
                rename("PersistentVolumeClaim", v);
            }
            if let Some(Value::Array(sources)) = vol.pointer_mut("/projected/sources") {
                for s in sources {
                    if let Some(v) = s.pointer_mut("/configMap/name") {
                        rename("ConfigMap", v);
                    }
                    if let Some(v) = s.pointer_mut("/secret/name") {
                        rename("Secret", v);
                    }
                }
            }
        }
    }
    for list in ["containers", "initContainers", "ephemeralContainers"] {
        if let Some(Value::Array(cs)) = spec.get_mut(list) {
            for c in cs {
                if let Some(Value::Array(env)) = c.get_mut("env") {
                    for e in env {
                        if let Some(v) = e.pointer_mut("/valueFrom/configMapKeyRef/name") {
                            rename("ConfigMap", v);
                        }
                        if let Some(v) = e.pointer_mut("/valueFrom/secretKeyRef/name") {
                            rename("Secret", v);
                        }
                    }
                }
                if let Some(Value::Array(env_from)) = c.get_mut("envFrom") {
                    for e in env_from {
                        if let Some(v) = e.pointer_mut("/configMapRef/name") {
                            rename("ConfigMap", v);
                        }
                        if let Some(v) = e.pointer_mut("/secretRef/name") {
                            rename("Secret", v);
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_parsing() {
        assert_eq!(split_image("nginx"), ("nginx", None, None));
        assert_eq!(split_image("nginx:1.2"), ("nginx", Some("1.2"), None));
        assert_eq!(split_image("reg:5000/team/app:v1@sha256:ab"), ("reg:5000/team/app", Some("v1"), Some("sha256:ab")));
        assert_eq!(split_image("reg:5000/team/app"), ("reg:5000/team/app", None, None));
    }

    #[test]
    fn strategic_merge_by_name_and_delete_directive() {
        let mut t = serde_json::json!({"spec":{"containers":[{"name":"a","image":"x"},{"name":"b","image":"y"}]}});
        let p = serde_json::json!({"spec":{"containers":[{"name":"a","image":"z"},{"name":"b","$patch":"delete"},{"name":"c","image":"w"}]}});
        strategic_merge(&mut t, &p, true);
        assert_eq!(t, serde_json::json!({"spec":{"containers":[{"name":"a","image":"z"},{"name":"c","image":"w"}]}}));
    }
}
