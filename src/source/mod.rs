//! The source box: fetch a Git repository into a bare cache, resolve a
//! branch, tag or commit, and read files straight from a commit's tree.
//!
//! `fetch` (gix, blocking: call [`GitSource::fetch_async`] from async code)
//! → [`GitSource::resolve`] → [`TreeReader`] (read-only, refuses escapes) →
//! the render box. [`hooks`] turns push webhooks into fetches;
//! [`signature`] checks commit signatures. Keeping a desired set current
//! (fetch on an interval, render, publish) is `desired::tracker`'s.
//!
//! Must never import render/, desired/, sync/, admission/ or provenance/:
//! Git in, bytes and commits out.

pub mod fetch;
pub mod hooks;
pub mod local;
pub mod path;
pub mod scratch;
pub mod signature;
pub mod tree;

pub use fetch::GitSource;
pub use path::RepoPath;
pub use tree::{Dep, Node, NodeKind, ReadLimits, TreeReader};

type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Everything the source box can fail at. Each variant names the file or
/// repository concerned.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("{path}: invalid path: {reason}")]
    InvalidPath { path: String, reason: &'static str },
    #[error("{path}: symlink to {target:?} leaves the repository")]
    SymlinkEscape { path: String, target: String },
    #[error("{path}: too many symlink hops (a loop?)")]
    SymlinkLoop { path: String },
    #[error("{path}: symlinked directories are not followed in a recursive walk")]
    SymlinkedDirectory { path: String },
    #[error("{path}: file is {size} bytes, over the {limit}-byte limit")]
    TooLarge { path: String, size: u64, limit: u64 },
    #[error("{path}: reading it would exceed the {limit}-byte total read limit")]
    TotalTooLarge { path: String, limit: u64 },
    #[error("{path}: more than {limit} files in one directory walk")]
    TooManyFiles { path: String, limit: usize },
    #[error("{path}: directories nested more than {limit} deep")]
    TooDeep { path: String, limit: usize },
    #[error("{path}: not found")]
    NotFound { path: String },
    #[error("{path}: not a file")]
    NotAFile { path: String },
    #[error("{path}: not a directory")]
    NotADirectory { path: String },
    #[error("{path}: submodules are not supported")]
    Submodule { path: String },
    #[error("failed to fetch {url}")]
    Fetch {
        url: String,
        #[source]
        source: BoxError,
    },
    #[error("failed to resolve revision {rev:?} in {url}")]
    Resolve {
        url: String,
        rev: String,
        #[source]
        source: Option<BoxError>,
    },
    #[error("failed to open the cache at {path}")]
    Cache {
        path: String,
        #[source]
        source: BoxError,
    },
    #[error("{what}")]
    Git {
        what: String,
        #[source]
        source: BoxError,
    },
    #[error("failed to run `{command}`: {reason}")]
    Command { command: String, reason: String },
}

impl SourceError {
    pub(crate) fn git(what: impl Into<String>, e: impl std::error::Error + Send + Sync + 'static) -> Self {
        SourceError::Git { what: what.into(), source: Box::new(e) }
    }
}
