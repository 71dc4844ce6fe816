//! The fleet: what Git gives each cluster, compared.
//!
//! Owns: [`parity`], the comparison of two clusters' desired sets (each
//! rendered for its cluster, as its spoke renders it — `serve --cluster`):
//! which objects one cluster gets and the other does not, and for the
//! objects both get, the first field that differs and why (another file:
//! an overlay; the same file: a generated value).
//!
//! [`file`]: the fleet file, checked once; [`view`]: a spoke as the hub
//! saw it; [`hub`]: every spoke's status read over its authenticated
//! status API (`serve --fleet FILE`), unknown spokes shown as unknown with when they
//! were last seen; [`live`]: the parity groups compared from what the
//! spokes report (objects, Git content digests, drift).
//!
//! Reads `render` (the desired sets), `contract` (the field comparison)
//! and `sync::status` (the status document a spoke serves). Must never
//! import `admission`, `provenance`, `promotion` or `dashboard`.

pub mod file;
pub mod hub;
pub mod live;
pub mod parity;
pub mod view;

pub use parity::{Difference, ParityReport, compare};
