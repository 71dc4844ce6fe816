//! Reading a kustomization: the file's fields, and the paths it names
//! (inside its directory, never remote).

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;

use super::res::{Res, kerr};
use crate::render::{RenderError, confine, yaml};
use crate::source::{NodeKind, RepoPath, TreeReader};

const FILE_NAMES: [&str; 3] = ["kustomization.yaml", "kustomization.yml", "Kustomization"];

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

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(super) struct Kustomization {
    #[serde(default)]
    pub(super) api_version: Option<String>,
    #[serde(default)]
    pub(super) kind: Option<String>,
    #[serde(default)]
    pub(super) metadata: Option<Value>,
    #[serde(default)]
    pub(super) resources: Vec<String>,
    #[serde(default)]
    pub(super) bases: Vec<String>,
    #[serde(default)]
    pub(super) namespace: Option<String>,
    #[serde(default)]
    pub(super) name_prefix: Option<String>,
    #[serde(default)]
    pub(super) name_suffix: Option<String>,
    #[serde(default)]
    pub(super) common_labels: BTreeMap<String, String>,
    #[serde(default)]
    pub(super) labels: Vec<LabelSpec>,
    #[serde(default)]
    pub(super) common_annotations: BTreeMap<String, String>,
    #[serde(default)]
    pub(super) images: Vec<ImageSpec>,
    #[serde(default)]
    pub(super) replicas: Vec<ReplicaSpec>,
    #[serde(default)]
    pub(super) patches: Vec<PatchSpec>,
    #[serde(default)]
    pub(super) patches_strategic_merge: Vec<String>,
    #[serde(default)]
    pub(super) patches_json6902: Vec<PatchSpec>,
    #[serde(default)]
    pub(super) config_map_generator: Vec<GeneratorSpec>,
    #[serde(default)]
    pub(super) secret_generator: Vec<GeneratorSpec>,
    #[serde(default)]
    pub(super) generator_options: Option<GeneratorOptions>,
    // Refused explicitly, with a clear message.
    #[serde(default)]
    pub(super) components: Option<Value>,
    #[serde(default)]
    pub(super) helm_charts: Option<Value>,
    #[serde(default)]
    pub(super) replacements: Option<Value>,
    #[serde(default)]
    pub(super) vars: Option<Value>,
    #[serde(default)]
    pub(super) configurations: Option<Value>,
    #[serde(default)]
    pub(super) crds: Option<Value>,
    #[serde(default)]
    pub(super) generators: Option<Value>,
    #[serde(default)]
    pub(super) transformers: Option<Value>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(super) struct LabelSpec {
    #[serde(default)]
    pub(super) pairs: BTreeMap<String, String>,
    #[serde(default)]
    pub(super) include_selectors: bool,
    #[serde(default)]
    pub(super) include_templates: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(super) struct ImageSpec {
    pub(super) name: String,
    #[serde(default)]
    pub(super) new_name: Option<String>,
    #[serde(default)]
    pub(super) new_tag: Option<String>,
    #[serde(default)]
    pub(super) digest: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(super) struct ReplicaSpec {
    pub(super) name: String,
    pub(super) count: i64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(super) struct PatchSpec {
    #[serde(default)]
    pub(super) path: Option<String>,
    #[serde(default)]
    pub(super) patch: Option<String>,
    #[serde(default)]
    pub(super) target: Option<Target>,
    #[serde(default)]
    pub(super) options: Option<Value>,
}

#[derive(Deserialize, Default, Clone)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(super) struct Target {
    #[serde(default)]
    pub(super) group: Option<String>,
    #[serde(default)]
    pub(super) version: Option<String>,
    #[serde(default)]
    pub(super) kind: Option<String>,
    #[serde(default)]
    pub(super) name: Option<String>,
    #[serde(default)]
    pub(super) namespace: Option<String>,
    #[serde(default)]
    pub(super) label_selector: Option<String>,
    #[serde(default)]
    pub(super) annotation_selector: Option<String>,
}

#[derive(Deserialize, Default, Clone)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(super) struct GeneratorOptions {
    #[serde(default)]
    pub(super) labels: BTreeMap<String, String>,
    #[serde(default)]
    pub(super) annotations: BTreeMap<String, String>,
    #[serde(default)]
    pub(super) disable_name_suffix_hash: Option<bool>,
    #[serde(default)]
    pub(super) immutable: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(super) struct GeneratorSpec {
    pub(super) name: String,
    #[serde(default)]
    pub(super) namespace: Option<String>,
    #[serde(default)]
    pub(super) behavior: Option<String>,
    #[serde(default)]
    pub(super) literals: Vec<String>,
    #[serde(default)]
    pub(super) files: Vec<String>,
    #[serde(default)]
    pub(super) envs: Vec<String>,
    #[serde(default)]
    pub(super) env: Option<String>,
    #[serde(default, rename = "type")]
    pub(super) type_: Option<String>,
    #[serde(default)]
    pub(super) options: Option<GeneratorOptions>,
}

/// Reads and parses the kustomization file `kfile` (inside `dir`); fields
/// gitgate does not support are refused by name.
pub(super) fn kustomization(tree: &TreeReader, dir: &RepoPath, kfile: &RepoPath) -> Result<Kustomization, RenderError> {
    let bytes = confine::read(tree, kfile, dir, confine::KUSTOMIZE)?;
    let k: Kustomization = yaml::parse_one(kfile.as_str(), &bytes)?;
    refuse_unsupported(&k, kfile)?;
    let _ = (&k.api_version, &k.kind, &k.metadata);
    Ok(k)
}

/// Where resource `entry` of `kfile` is: relative to `dir`, never remote.
pub(super) fn resource_path(dir: &RepoPath, kfile: &RepoPath, entry: &str) -> Result<RepoPath, RenderError> {
    if is_remote(entry) {
        return Err(kerr(kfile, format!("remote resource {entry:?} is not supported: vendor it into the repository")));
    }
    dir.join(entry).map_err(|e| kerr(kfile, format!("resource {entry:?}: {e}")))
}

/// The objects of resource file `entry` (at `path`, resolving to
/// `target`). Like kustomize's load restrictor: resource files (unlike
/// kustomization directories) must lie inside `dir`, as written and where
/// their symlinks lead.
pub(super) fn resource_file(
    tree: &TreeReader,
    dir: &RepoPath,
    kfile: &RepoPath,
    entry: &str,
    path: &RepoPath,
    target: &RepoPath,
) -> Result<Vec<Res>, RenderError> {
    if !path.starts_with(dir) {
        return Err(kerr(kfile, format!("resource file {entry:?} is outside the kustomization directory {dir}")));
    }
    confine::check(path, target, dir, confine::KUSTOMIZE)?;
    let mut res = Vec::new();
    for (obj, source) in yaml::parse_bytes(path, &tree.read(target)?)? {
        let name = obj.pointer("/metadata/name").and_then(Value::as_str).unwrap_or("").to_string();
        res.push(Res { obj, source, names: vec![name], needs_hash: false });
    }
    Ok(res)
}

/// Resource `entry` (at `path`) is not in the tree: say so, and that
/// gitgate fetches nothing when it reads like a remote base
/// (`host/org/repo//dir?ref=`).
pub(super) fn missing_resource(kfile: &RepoPath, entry: &str, path: &RepoPath) -> RenderError {
    if looks_remote(entry) {
        return kerr(
            kfile,
            format!(
                "resource {entry:?} does not exist in the repository, and remote resources are not \
                 supported: vendor it into the repository"
            ),
        );
    }
    kerr(kfile, format!("resource {entry:?} ({path}) does not exist"))
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
pub(super) fn inside(dir: &RepoPath, kfile: &RepoPath, rel: &str) -> Result<RepoPath, RenderError> {
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

pub(super) fn patch_docs(
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
