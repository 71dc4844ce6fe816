//! A read-only view of one commit's tree, read straight from the object
//! database (no work tree). It refuses what a hostile repository could use
//! to read outside itself or exhaust memory: `..` above the root, absolute
//! paths, symlinks that leave the repository, files over a size limit.
//!
//! Symlinks: in-tree symlinks to files are followed (at most
//! [`MAX_SYMLINK_HOPS`] hops, resolved against the tree, never the file
//! system); a symlink whose target is absolute or climbs above the root is
//! refused with an error naming it. Recursive walks never descend through a
//! symlinked directory (that is how link cycles multiply); they refuse it.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;

use gix::ObjectId;
use gix::objs::tree::EntryKind;

use super::{RepoPath, SourceError};

/// Symlink hops allowed while resolving one path.
pub const MAX_SYMLINK_HOPS: usize = 16;

/// Bounds on what one render may read.
#[derive(Clone, Copy, Debug)]
pub struct ReadLimits {
    /// Largest single file.
    pub max_file_bytes: u64,
    /// Largest total read by one reader.
    pub max_total_bytes: u64,
    /// Most files one recursive walk may list.
    pub max_walk_files: usize,
    /// Deepest directory nesting a walk descends.
    pub max_walk_depth: usize,
}

impl Default for ReadLimits {
    fn default() -> Self {
        ReadLimits {
            max_file_bytes: 4 * 1024 * 1024,
            max_total_bytes: 512 * 1024 * 1024,
            max_walk_files: 50_000,
            max_walk_depth: 32,
        }
    }
}

/// What a path resolves to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum NodeKind {
    File,
    Dir,
}

/// A resolved path: its canonical location (after symlinks) and object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Node {
    pub path: RepoPath,
    pub id: ObjectId,
    pub kind: NodeKind,
}

/// One read the renderer made, for change detection: the path asked for
/// and the object it resolved to (None when absent).
pub type Dep = (RepoPath, Option<ObjectId>);

/// A commit's tree. Not `Sync` (it records what it read); make one per render.
pub struct TreeReader {
    repo: gix::Repository,
    commit: ObjectId,
    root: ObjectId,
    limits: ReadLimits,
    total: Cell<u64>,
    deps: RefCell<Vec<Dep>>,
}

impl TreeReader {
    /// The tree of `commit` in `repo`.
    pub fn new(repo: gix::Repository, commit: ObjectId, limits: ReadLimits) -> Result<Self, SourceError> {
        let root = {
            let c =
                repo.find_commit(commit).map_err(|e| SourceError::git(format!("failed to read commit {commit}"), e))?;
            c.tree_id()
                .map_err(|e| SourceError::git(format!("failed to read the tree of commit {commit}"), e))?
                .detach()
        };
        Ok(TreeReader { repo, commit, root, limits, total: Cell::new(0), deps: RefCell::new(Vec::new()) })
    }

    pub fn commit(&self) -> ObjectId {
        self.commit
    }

    pub fn tree_id(&self) -> ObjectId {
        self.root
    }

    pub fn repo(&self) -> &gix::Repository {
        &self.repo
    }

    pub fn limits(&self) -> ReadLimits {
        self.limits
    }

    /// The reads made since the last call (for change detection).
    pub fn take_deps(&self) -> Vec<Dep> {
        std::mem::take(&mut *self.deps.borrow_mut())
    }

    fn record(&self, path: &RepoPath, id: Option<ObjectId>) {
        self.deps.borrow_mut().push((path.clone(), id));
    }

    /// Resolves `path` (following in-tree symlinks) without recording it.
    pub fn resolve_untracked(&self, path: &RepoPath) -> Result<Option<Node>, SourceError> {
        let mut queue: VecDeque<String> = path.components().map(str::to_string).collect();
        let mut dir = RepoPath::root();
        let mut tree = self.root;
        let mut hops = 0usize;
        if queue.is_empty() {
            return Ok(Some(Node { path: RepoPath::root(), id: self.root, kind: NodeKind::Dir }));
        }
        while let Some(name) = queue.pop_front() {
            let Some((kind, id)) = self.entry(&dir, tree, &name)? else {
                return Ok(None);
            };
            let here = dir.child(&name);
            match kind {
                EntryKind::Tree => {
                    if queue.is_empty() {
                        return Ok(Some(Node { path: here, id, kind: NodeKind::Dir }));
                    }
                    dir = here;
                    tree = id;
                }
                EntryKind::Blob | EntryKind::BlobExecutable => {
                    if queue.is_empty() {
                        return Ok(Some(Node { path: here, id, kind: NodeKind::File }));
                    }
                    return Err(SourceError::NotADirectory { path: here.to_string() });
                }
                EntryKind::Link => {
                    hops += 1;
                    if hops > MAX_SYMLINK_HOPS {
                        return Err(SourceError::SymlinkLoop { path: path.to_string() });
                    }
                    let target = self.link_target(&here, id)?;
                    if target.starts_with('/') || target.starts_with('\\') {
                        return Err(SourceError::SymlinkEscape { path: here.to_string(), target });
                    }
                    let resolved = dir
                        .join(&target)
                        .map_err(|_| SourceError::SymlinkEscape { path: here.to_string(), target: target.clone() })?;
                    let mut next: VecDeque<String> = resolved.components().map(str::to_string).collect();
                    next.extend(queue.drain(..));
                    queue = next;
                    dir = RepoPath::root();
                    tree = self.root;
                    if queue.is_empty() {
                        return Ok(Some(Node { path: RepoPath::root(), id: self.root, kind: NodeKind::Dir }));
                    }
                }
                EntryKind::Commit => return Err(SourceError::Submodule { path: here.to_string() }),
            }
        }
        Ok(None)
    }

    /// Resolves `path` and records the read.
    pub fn resolve(&self, path: &RepoPath) -> Result<Option<Node>, SourceError> {
        let node = self.resolve_untracked(path)?;
        self.record(path, node.as_ref().map(|n| n.id));
        Ok(node)
    }

    /// Reads a file (following in-tree symlinks), bounded by the size limit.
    pub fn read(&self, path: &RepoPath) -> Result<Vec<u8>, SourceError> {
        match self.resolve(path)? {
            Some(Node { kind: NodeKind::File, id, .. }) => self.read_blob(path, id),
            Some(Node { kind: NodeKind::Dir, .. }) => Err(SourceError::NotAFile { path: path.to_string() }),
            None => Err(SourceError::NotFound { path: path.to_string() }),
        }
    }

    /// Reads a file if it exists.
    pub fn read_opt(&self, path: &RepoPath) -> Result<Option<Vec<u8>>, SourceError> {
        match self.resolve(path)? {
            Some(Node { kind: NodeKind::File, id, .. }) => self.read_blob(path, id).map(Some),
            Some(Node { kind: NodeKind::Dir, .. }) => Err(SourceError::NotAFile { path: path.to_string() }),
            None => Ok(None),
        }
    }

    fn read_blob(&self, path: &RepoPath, id: ObjectId) -> Result<Vec<u8>, SourceError> {
        let size = self
            .repo
            .find_header(id)
            .map_err(|e| SourceError::git(format!("failed to read the header of {path}"), e))?
            .size();
        if size > self.limits.max_file_bytes {
            return Err(SourceError::TooLarge { path: path.to_string(), size, limit: self.limits.max_file_bytes });
        }
        let total = self.total.get().saturating_add(size);
        if total > self.limits.max_total_bytes {
            return Err(SourceError::TotalTooLarge { path: path.to_string(), limit: self.limits.max_total_bytes });
        }
        self.total.set(total);
        let mut blob = self.repo.find_blob(id).map_err(|e| SourceError::git(format!("failed to read {path}"), e))?;
        Ok(blob.take_data())
    }

    fn link_target(&self, path: &RepoPath, id: ObjectId) -> Result<String, SourceError> {
        let size = self
            .repo
            .find_header(id)
            .map_err(|e| SourceError::git(format!("failed to read the header of {path}"), e))?
            .size();
        if size > 4096 {
            return Err(SourceError::TooLarge { path: path.to_string(), size, limit: 4096 });
        }
        let mut blob = self.repo.find_blob(id).map_err(|e| SourceError::git(format!("failed to read {path}"), e))?;
        String::from_utf8(blob.take_data())
            .map_err(|_| SourceError::InvalidPath { path: path.to_string(), reason: "symlink target is not UTF-8" })
    }

    fn entry(&self, dir: &RepoPath, tree: ObjectId, name: &str) -> Result<Option<(EntryKind, ObjectId)>, SourceError> {
        let t =
            self.repo.find_tree(tree).map_err(|e| SourceError::git(format!("failed to read directory {dir}"), e))?;
        let decoded = t.decode().map_err(|e| SourceError::git(format!("failed to decode directory {dir}"), e))?;
        Ok(decoded.entries.iter().find(|e| e.filename == name.as_bytes()).map(|e| (e.mode.kind(), e.oid.to_owned())))
    }

    /// The entries of a directory, sorted by name: `(name, kind)`. In-tree
    /// symlinks are resolved to what they point at; submodules are skipped.
    pub fn list(&self, dir: &RepoPath) -> Result<Vec<(String, NodeKind)>, SourceError> {
        let (_, entries) = self.entries(dir, self.resolve(dir)?)?;
        let mut out = Vec::with_capacity(entries.len());
        for (name, kind) in entries {
            match kind {
                EntryKind::Tree => out.push((name, NodeKind::Dir)),
                EntryKind::Blob | EntryKind::BlobExecutable => out.push((name, NodeKind::File)),
                EntryKind::Link => {
                    let child = dir.child(&name);
                    match self.resolve_untracked(&child)? {
                        Some(n) => out.push((name, n.kind)),
                        None => return Err(SourceError::NotFound { path: child.to_string() }),
                    }
                }
                EntryKind::Commit => {}
            }
        }
        out.sort();
        Ok(out)
    }

    /// The entries of the directory `node` resolved `dir` to: `(name, kind)`,
    /// each name checked by [`entry_name`].
    fn entries(&self, dir: &RepoPath, node: Option<Node>) -> Result<(Node, Vec<(String, EntryKind)>), SourceError> {
        let node = match node {
            Some(n @ Node { kind: NodeKind::Dir, .. }) => n,
            Some(_) => return Err(SourceError::NotADirectory { path: dir.to_string() }),
            None => return Err(SourceError::NotFound { path: dir.to_string() }),
        };
        let t =
            self.repo.find_tree(node.id).map_err(|e| SourceError::git(format!("failed to read directory {dir}"), e))?;
        let decoded = t.decode().map_err(|e| SourceError::git(format!("failed to decode directory {dir}"), e))?;
        let entries = decoded
            .entries
            .iter()
            .map(|e| Ok((entry_name(dir, e.filename)?.to_string(), e.mode.kind())))
            .collect::<Result<Vec<_>, SourceError>>()?;
        Ok((node, entries))
    }

    /// Every file below `dir`, recursively, sorted. Symlinked files are
    /// included; a symlinked directory is refused.
    pub fn walk(&self, dir: &RepoPath) -> Result<Vec<RepoPath>, SourceError> {
        // The directory's tree id covers everything below it.
        self.resolve(dir)?;
        let mut out = Vec::new();
        self.walk_into(dir, 0, &mut out)?;
        out.sort();
        Ok(out)
    }

    fn walk_into(&self, dir: &RepoPath, depth: usize, out: &mut Vec<RepoPath>) -> Result<(), SourceError> {
        if depth > self.limits.max_walk_depth {
            return Err(SourceError::TooDeep { path: dir.to_string(), limit: self.limits.max_walk_depth });
        }
        let (node, entries) = self.entries(dir, self.resolve_untracked(dir)?)?;
        for (name, kind) in entries {
            let child = node.path.child(&name);
            match kind {
                EntryKind::Tree => self.walk_into(&child, depth + 1, out)?,
                EntryKind::Blob | EntryKind::BlobExecutable => push_file(out, child, self.limits.max_walk_files)?,
                // Tracked: the target may lie outside `dir`'s tree.
                EntryKind::Link => match self.resolve(&child)? {
                    Some(Node { kind: NodeKind::File, .. }) => push_file(out, child, self.limits.max_walk_files)?,
                    Some(Node { kind: NodeKind::Dir, .. }) => {
                        return Err(SourceError::SymlinkedDirectory { path: child.to_string() });
                    }
                    None => return Err(SourceError::NotFound { path: child.to_string() }),
                },
                EntryKind::Commit => {}
            }
        }
        Ok(())
    }
}

/// A tree entry's name as one path component: UTF-8, and none that a
/// hostile repository could use to climb or split a path (`..`, `.`, empty,
/// or holding `/` or NUL; git itself never writes these).
fn entry_name<'a>(dir: &RepoPath, raw: &'a [u8]) -> Result<&'a str, SourceError> {
    let name = std::str::from_utf8(raw)
        .map_err(|_| SourceError::InvalidPath { path: dir.to_string(), reason: "a file name is not UTF-8" })?;
    if name.is_empty() || name == "." || name == ".." || name.contains(['/', '\0']) {
        return Err(SourceError::InvalidPath {
            path: dir.child(name).to_string(),
            reason: "a tree entry's name is not a valid file name",
        });
    }
    Ok(name)
}

fn push_file(out: &mut Vec<RepoPath>, path: RepoPath, limit: usize) -> Result<(), SourceError> {
    if out.len() >= limit {
        return Err(SourceError::TooManyFiles { path: path.to_string(), limit });
    }
    out.push(path);
    Ok(())
}
