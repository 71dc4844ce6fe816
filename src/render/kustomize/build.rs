//! The build walk: one kustomization directory → its resources (files and
//! sub-kustomizations, recursively), generated objects, then transformers
//! in kustomize's order.

use serde_json::Value;

use super::generators::generate;
use super::load::{Kustomization, find_kustomization, inside, is_remote, looks_remote, patch_docs, refuse_unsupported};
use super::patches::apply_patch;
use super::res::{Res, kerr};
use super::transform::{add_annotations, add_labels, set_images};
use crate::render::object::is_cluster_scoped;
use crate::render::{RenderError, confine, yaml};
use crate::source::{NodeKind, RepoPath, TreeReader};

const MAX_DEPTH: usize = 20;
/// Kustomization directories built for one app (a base included by many
/// overlays counts once per inclusion: this bounds diamond blow-ups).
const MAX_BUILDS: usize = 1_000;
/// Objects one app's kustomization may produce.
const MAX_RESOURCES: usize = 100_000;

/// The recursion state of one build: the directories being built (for
/// cycles) and how many have been built (for blow-ups).
pub(super) struct Walk {
    stack: Vec<RepoPath>,
    builds: usize,
}

impl Walk {
    pub(super) fn new() -> Self {
        Walk { stack: Vec::new(), builds: 0 }
    }
}

pub(super) fn build_dir(
    tree: &TreeReader,
    dir: &RepoPath,
    kfile: &RepoPath,
    walk: &mut Walk,
) -> Result<Vec<Res>, RenderError> {
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
