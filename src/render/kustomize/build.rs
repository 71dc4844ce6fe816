//! The build walk: one kustomization directory → its resources (files and
//! sub-kustomizations, recursively), generated objects, then transformers
//! in kustomize's order.

use super::generators::generate;
use super::load::{self, Kustomization, PatchSpec, find_kustomization, inside, patch_docs};
use super::patches::apply_patch;
use super::res::{Res, kerr};
use super::transform::{add_annotations, add_labels, add_name_affixes, set_images, set_namespace, set_replicas};
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

    /// Enters `dir` (file `kfile`): refused when it is already being built
    /// (a cycle), nested too deep, or one build too many.
    fn enter(&mut self, dir: &RepoPath, kfile: &RepoPath) -> Result<(), RenderError> {
        if self.stack.contains(dir) {
            return Err(kerr(kfile, format!("resource cycle through {dir}")));
        }
        if self.stack.len() >= MAX_DEPTH {
            return Err(kerr(kfile, format!("kustomizations nested more than {MAX_DEPTH} deep")));
        }
        self.builds += 1;
        if self.builds > MAX_BUILDS {
            return Err(kerr(kfile, format!("more than {MAX_BUILDS} kustomization builds for one app")));
        }
        self.stack.push(dir.clone());
        Ok(())
    }
}

/// Builds the kustomization directory `dir` (file `kfile`): its resources,
/// then its generators, then its transformers, as kustomize orders them.
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
    walk.enter(dir, kfile)?;
    let k = load::kustomization(tree, dir, kfile)?;
    let mut res = resources(tree, dir, kfile, &k, walk)?;
    generators(tree, dir, kfile, &k, &mut res)?;
    transformers(tree, dir, kfile, &k, &mut res)?;
    walk.stack.pop();
    Ok(res)
}

/// Step 1, `resources` (and the legacy `bases`): files, and kustomization
/// directories built recursively.
fn resources(
    tree: &TreeReader,
    dir: &RepoPath,
    kfile: &RepoPath,
    k: &Kustomization,
    walk: &mut Walk,
) -> Result<Vec<Res>, RenderError> {
    let mut res: Vec<Res> = Vec::new();
    for entry in k.resources.iter().chain(&k.bases) {
        let path = load::resource_path(dir, kfile, entry)?;
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
            Some(n) => res.extend(load::resource_file(tree, dir, kfile, entry, &path, &n.path)?),
            None => return Err(load::missing_resource(kfile, entry, &path)),
        }
    }
    Ok(res)
}

/// Step 2, generators: `configMapGenerator`, then `secretGenerator`.
fn generators(
    tree: &TreeReader,
    dir: &RepoPath,
    kfile: &RepoPath,
    k: &Kustomization,
    res: &mut Vec<Res>,
) -> Result<(), RenderError> {
    let global = k.generator_options.clone().unwrap_or_default();
    for g in &k.config_map_generator {
        generate(tree, dir, kfile, g, &global, false, res)?;
    }
    for g in &k.secret_generator {
        generate(tree, dir, kfile, g, &global, true, res)?;
    }
    Ok(())
}

/// Step 3, transformers, in kustomize's order.
fn transformers(
    tree: &TreeReader,
    dir: &RepoPath,
    kfile: &RepoPath,
    k: &Kustomization,
    res: &mut [Res],
) -> Result<(), RenderError> {
    for p in &k.patches_strategic_merge {
        let path = inside(dir, kfile, p)?;
        let body = confine::read(tree, &path, dir, confine::KUSTOMIZE)?;
        for doc in yaml::parse_documents(path.as_str(), &body)? {
            apply_patch(&doc, None, &path, res)?;
        }
    }
    apply_patches(tree, dir, kfile, &k.patches, res)?;
    if let Some(ns) = &k.namespace {
        set_namespace(res, ns);
    }
    if k.name_prefix.is_some() || k.name_suffix.is_some() {
        add_name_affixes(
            res,
            k.name_prefix.as_deref().unwrap_or_default(),
            k.name_suffix.as_deref().unwrap_or_default(),
        );
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
    apply_patches(tree, dir, kfile, &k.patches_json6902, res)?;
    set_replicas(res, &k.replicas);
    if !k.images.is_empty() {
        for r in res.iter_mut() {
            set_images(&mut r.obj, &k.images);
        }
    }
    Ok(())
}

/// `patches` (or the legacy `patchesJson6902`): each spec's documents, on
/// its target.
fn apply_patches(
    tree: &TreeReader,
    dir: &RepoPath,
    kfile: &RepoPath,
    specs: &[PatchSpec],
    res: &mut [Res],
) -> Result<(), RenderError> {
    for p in specs {
        let (doc_src, docs) = patch_docs(tree, dir, kfile, p)?;
        for doc in docs {
            apply_patch(&doc, p.target.as_ref(), &doc_src, res)?;
        }
    }
    Ok(())
}
