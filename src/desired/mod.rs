//! The desired state over time: which commit's desired set is in force.
//!
//! Owns: the [`tracker`] that turns Git commits into desired sets (fetch on
//! an interval or a push hook, verify signatures, render, publish the last
//! good one); opening the repository to track ([`open`]: a URL, a plain
//! directory, or the bundled example); and following the published sets
//! into the admission gate's compiled snapshot ([`follow`]). The set's data
//! type is the renderer's output ([`crate::render::DesiredSet`]); the
//! gate's index of it is [`crate::provenance::Snapshot`].
//!
//! Reads `source` (Git), `render` (manifests), `provenance` (to compile
//! the snapshot) and `audit` (to record refused commits). Must never import
//! sync/, promotion/, admission/ or dashboard/: those read the sets it
//! publishes.

pub mod follow;
pub mod open;
pub mod tracker;

pub use crate::render::DesiredSet;
pub use tracker::Tracker;

/// What opening or following the desired state can fail at.
#[derive(Debug, thiserror::Error)]
pub enum DesiredError {
    #[error(transparent)]
    Source(#[from] crate::source::SourceError),
    #[error("failed to write the bundled example into {path}")]
    Example {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
}
