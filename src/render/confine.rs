//! Confined reads. The tree reader already refuses a symlink that leaves
//! the repository; this refuses one that leaves the part of it a read is
//! confined to: every file an app's render reads must resolve, after
//! in-tree symlinks (of files and of directories on the way), inside that
//! root — a plain app's directory, a chart, a kustomization's directory.
//! Checking the path as written is not enough: `apps/a/conf/secret.yaml`
//! reads `apps/b/secret.yaml` when `apps/a/conf` links to `../b` (Argo CD's
//! CVE-2022-24904 and CVE-2022-31036, Flux's CVE-2022-24877).

use super::RenderError;
use crate::source::{NodeKind, RepoPath, SourceError, TreeReader};

/// What a root confines, said in an error: "a kustomization reads only
/// files inside its directory".
pub type Rule = &'static str;

pub const PLAIN: Rule = "an app reads only files inside its directory";
pub const KUSTOMIZE: Rule = "a kustomization reads only files inside its directory (load restrictor)";
pub const CHART: Rule = "a chart's files and the values files inside it stay inside the chart";
pub const VALUES: Rule = "a values file named outside the chart stays inside the directory it is named in";

/// Refuses `path` (as written) when it resolved to `resolved`, outside `root`.
pub fn check(path: &RepoPath, resolved: &RepoPath, root: &RepoPath, rule: Rule) -> Result<(), RenderError> {
    if resolved.starts_with(root) {
        return Ok(());
    }
    Err(RenderError::Escape { path: path.to_string(), target: resolved.to_string(), root: root.to_string(), rule })
}

/// The directory `dir` resolves to (its symlinks followed).
pub fn canonical_dir(tree: &TreeReader, dir: &RepoPath) -> Result<RepoPath, RenderError> {
    match tree.resolve(dir)? {
        Some(n) if n.kind == NodeKind::Dir => Ok(n.path),
        Some(_) => Err(SourceError::NotADirectory { path: dir.to_string() }.into()),
        None => Err(SourceError::NotFound { path: dir.to_string() }.into()),
    }
}

/// Reads the file `path` when it resolves inside `root`.
pub fn read(tree: &TreeReader, path: &RepoPath, root: &RepoPath, rule: Rule) -> Result<Vec<u8>, RenderError> {
    match tree.resolve(path)? {
        Some(n) => {
            check(path, &n.path, root, rule)?;
            if n.kind == NodeKind::Dir {
                return Err(SourceError::NotAFile { path: path.to_string() }.into());
            }
            // The resolved path: no symlink left to follow.
            Ok(tree.read(&n.path)?)
        }
        None => Err(SourceError::NotFound { path: path.to_string() }.into()),
    }
}
