//! The render box: a commit's tree → `gitgate.yaml` ([`config`]) → each
//! app's objects (plain YAML/JSON, [`kustomize`], [`helm`]) → project
//! bounds → the desired set D(C) ([`desired`]), with each object's blame.
//!
//! Owns: turning the manifests of a commit's tree into objects — the
//! config and its projects and app generators ([`config`]), kustomize
//! ([`kustomize`]), helm charts ([`helm`]), sync hooks ([`hook`]), sync
//! windows ([`window`]), the bounded YAML/JSON parsing ([`yaml`]), the
//! symlink confinement of every read ([`confine`]), and the desired set
//! with its blame ([`engine`], [`desired`]). The `gitgate render` command
//! is `cmd/`'s.
//!
//! Imports: only `crate::source` (trees, paths, scratch directories). It
//! must never import `admission/`, `sync/`, `provenance/`, `promotion/`,
//! `policy/`, `audit/` or `dashboard/` (nor the top-level `desired/`
//! tracker, nor `cmd/`): they consume desired sets, never the other way
//! round. Inside, leaves first: [`yaml`], [`object`], [`confine`], [`hook`]
//! and [`window`] import nothing of `render` but [`RenderError`];
//! [`config`] builds on them, [`kustomize`] and [`helm`] on those, and
//! [`engine`] on everything.
//!
//! [`Renderer`] caches three things, all immutable once built: the desired
//! set per commit, the rendered apps per tree id, and each app's render
//! keyed by what it read (the objects it resolved paths to), so a new
//! commit re-renders only the apps whose inputs changed.
//!
//! An error anywhere fails the whole commit: the caller (the desired-state
//! tracker, [`crate::desired::tracker`]) keeps the last good desired set.

pub mod config;
pub mod confine;
pub mod desired;
pub mod engine;
pub mod example;
pub mod helm;
pub mod hook;
pub mod kustomize;
pub mod object;
pub mod window;
pub mod yaml;

pub use config::{App, Config, Project};
pub use desired::{DesiredObject, DesiredSet};
pub use engine::{RenderOptions, RenderStats, Renderer};
pub use object::ObjectKey;

use crate::source::SourceError;

/// Everything rendering can fail at; each names the file (and line where
/// the parser knows it), the app, or the project concerned.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error("{file}:{line}:{column}: {message}")]
    Parse { file: String, line: usize, column: usize, message: String },
    #[error("{file}:{line}: {message}")]
    Config { file: String, line: usize, message: String },
    #[error("{file}: document {doc}: {reason}")]
    InvalidObject { file: String, doc: usize, reason: String },
    /// `object` reads "Kind.group ns/name (from file)".
    #[error("app {app:?}: {object} is outside project {project:?}: {reason}")]
    OutOfBounds { app: String, project: String, object: String, reason: String },
    /// `first` and `second` read "\"app\" (file)".
    #[error("{object} is declared by two apps: {first} and {second}")]
    Duplicate { object: String, first: String, second: String },
    #[error("app {app:?}: {object} is declared twice: in {first_file} and in {second_file}")]
    DuplicateInApp { app: String, object: String, first_file: String, second_file: String },
    #[error("app {app:?}: path {path} does not exist")]
    AppPathMissing { app: String, path: String },
    /// A file an app reads resolves, through in-tree symlinks, outside the
    /// directory that read is confined to (see [`confine`]).
    #[error("{path} leads through a symlink to {target}, outside {root}: {rule}")]
    Escape { path: String, target: String, root: String, rule: confine::Rule },
    #[error("{file}: kustomize: {reason}")]
    Kustomize { file: String, reason: String },
    #[error("app {app:?}: helm: {reason}")]
    Helm { app: String, reason: String },
    #[error("failed to render app {app:?}")]
    App {
        app: String,
        #[source]
        source: Box<RenderError>,
    },
    #[error("failed to read the history of commit {commit}")]
    History {
        commit: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}
