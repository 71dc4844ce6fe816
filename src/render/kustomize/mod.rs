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
//!
//! Layout: `load.rs` reads a kustomization file and the files it names
//! (inside its directory), `build.rs` walks the resource tree and runs the
//! transformers in order, `generators.rs` makes ConfigMaps and Secrets (with
//! the content hash), `patches.rs` applies strategic merge and JSON 6902
//! patches, `transform.rs` sets labels, annotations and images, and
//! `names.rs` fixes name references once every name is final; `res.rs`
//! holds what they share (the resource being built, the error). This file
//! only wires them together: no step imports it.

mod build;
mod generators;
mod load;
mod names;
mod patches;
mod res;
mod transform;

use serde_json::Value;

use super::RenderError;
use crate::source::{RepoPath, TreeReader};

pub use generators::content_hash;
pub use load::find_kustomization;

/// Builds the kustomization at `dir` (file `kfile`).
pub fn build(
    tree: &TreeReader,
    dir: &RepoPath,
    kfile: &RepoPath,
    _app: &str,
) -> Result<Vec<(Value, RepoPath)>, RenderError> {
    let mut res = build::build_dir(tree, dir, kfile, &mut build::Walk::new())?;
    generators::add_hashes(&mut res)?;
    names::fix_name_references(&mut res);
    Ok(res.into_iter().map(|r| (r.obj, r.source)).collect())
}
