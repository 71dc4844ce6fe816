//! The `gitgate.dev/*` contract on users' objects, and the one answer to
//! "does this object equal Git?".
//!
//! Owns: the annotation and label names gitgate reads and writes on the
//! objects Git declares ([`names`]); stamping them ([`stamp`]); the
//! field-by-field comparison with Git's manifest ([`compare`]); fields
//! another manager added ([`foreign`]); a sealed Secret's Git digest
//! ([`sealed`]); and [`matches_git`], which the admission gate
//! (`provenance`) and the sync loop (`sync::plan`) both call, so they can
//! never disagree on what "equals Git" means.
//!
//! A leaf: it must never import another gitgate module (it is pure
//! functions over `serde_json::Value` and canonical JSON text).

pub mod compare;
pub mod foreign;
pub mod names;
pub mod options;
pub mod sealed;
pub mod stamp;

pub use compare::{first_difference, ignored_fields, parse_ignore_fields};
pub use foreign::Foreign;
pub use names::*;

use serde_json::Value;

/// What Git declares of one object, as the gate and the loop both hold it.
#[derive(Clone, Copy, Debug)]
pub struct Expected<'a> {
    /// Git's canonical manifest (JSON text).
    pub manifest: &'a str,
    /// `sha256:<hex>` of the manifest (`gitgate.dev/digest`).
    pub digest: &'a str,
    /// The commit that introduced this content (`gitgate.dev/commit`).
    pub commit: &'a str,
    /// The app that owns it (the `gitgate.dev/app` label).
    pub app: &'a str,
    /// The file that declares it; `gitgate.dev/source` is `<app>:<file>`.
    pub file: &'a str,
    /// JSON pointers Git leaves to others: `gitgate.dev/ignore-fields`, and
    /// for a sealed Secret the fields the cluster holds unsealed.
    pub ignore: &'a [String],
    /// A sealed Secret: the `gitgate.dev/sealed-digest` its unsealed form
    /// carries (its values are compared by that, never read).
    pub sealed_digest: Option<&'a str>,
}

/// A stamp that is not Git's. `Digest` and `Commit` prove the content:
/// the object carries other content (older or newer), or was never
/// stamped. `Source` and `App` are bookkeeping (the file, and the app whose
/// inventory and watch hold the object): the sync loop re-stamps them, the
/// admission gate does not deny for them alone — what it proves is the
/// content, and the content is compared field by field.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stale {
    Digest,
    Commit,
    Source,
    App,
}

impl Stale {
    /// A stamp that proves the content (digest, commit).
    pub fn of_content(self) -> bool {
        matches!(self, Stale::Digest | Stale::Commit)
    }
}

/// The first thing in an object that is not Git's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Difference {
    /// A sealed Secret whose values are not the ones sealed in Git.
    SealedValues,
    /// A field Git sets has another value (JSON pointer).
    Field(String),
    /// Git's manifest could not be read.
    Unreadable,
    /// A field Git does not set, added by another manager.
    Foreign(Foreign),
}

/// How an object stands against Git: its stamps, and its content.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Match {
    /// The first stamp that is not Git's, in the order digest, commit,
    /// source, app label.
    pub stale: Option<Stale>,
    /// The first difference in content; `None` when every field Git sets
    /// holds and no other manager added one.
    pub difference: Option<Difference>,
}

impl Match {
    /// Stamps and content are Git's.
    pub fn equal(&self) -> bool {
        self.stale.is_none() && self.difference.is_none()
    }
}

/// Which foreign fields to compare.
#[derive(Clone, Copy, Debug)]
pub enum Foreigners<'a> {
    /// Find them in the object's `managedFields` (Git's manifest is parsed
    /// only when the object kept them).
    Find,
    /// Already found by the caller.
    Given(&'a [Foreign]),
    /// Not compared: the writer is gitgate's reconciler, whose apply
    /// carries what another manager left until self-heal removes it.
    Skip,
}

/// Whether `object` equals Git: the stamps Git's content carries, a sealed
/// Secret's values (by digest), every field Git sets (except the ignored
/// ones), and — once those hold — no field another manager added
/// ([`foreign`]). Both the admission gate and the sync loop decide by this
/// one function.
pub fn matches_git(git: &Expected<'_>, object: &Value, foreigners: Foreigners<'_>) -> Match {
    Match { stale: stale_stamp(git, object), difference: difference(git, object, foreigners) }
}

fn stale_stamp(git: &Expected<'_>, object: &Value) -> Option<Stale> {
    let stamps = stamp::Stamps::of(object);
    if stamps.digest != Some(git.digest) {
        Some(Stale::Digest)
    } else if stamps.commit != Some(git.commit) {
        Some(Stale::Commit)
    } else if stamps.source.and_then(|s| s.split_once(':')) != Some((git.app, git.file)) {
        Some(Stale::Source)
    } else if stamps.app != Some(git.app) {
        Some(Stale::App)
    } else {
        None
    }
}

fn difference(git: &Expected<'_>, object: &Value, foreigners: Foreigners<'_>) -> Option<Difference> {
    if let Some(d) = git.sealed_digest
        && stamp::annotation(object, SEALED_DIGEST) != Some(d)
    {
        return Some(Difference::SealedValues);
    }
    match first_difference(git.manifest, object, git.ignore) {
        Ok(None) => {}
        Ok(Some(field)) => return Some(Difference::Field(field)),
        Err(_) => return Some(Difference::Unreadable),
    }
    let found;
    let foreign = match foreigners {
        Foreigners::Skip => return None,
        Foreigners::Given(f) => f,
        Foreigners::Find => {
            found = foreign_fields(git, object);
            &found
        }
    };
    foreign.first().cloned().map(Difference::Foreign)
}

/// The fields of `object` another manager added ([`foreign`]): Git's
/// manifest is read only when such a manager wrote to the object (the
/// common update — gitgate's apply, a controller's — parses nothing).
pub fn foreign_fields(git: &Expected<'_>, object: &Value) -> Vec<Foreign> {
    if !foreign::any_foreign_writer(object) {
        return Vec::new();
    }
    let manifest: Option<Value> = serde_json::from_str(git.manifest).ok();
    foreign::fields(object, manifest.as_ref(), git.ignore)
}
