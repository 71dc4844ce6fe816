//! The fleet: what Git gives each cluster, compared.
//!
//! Owns: [`parity`], the comparison of two clusters' desired sets (each
//! rendered for its cluster, as its spoke renders it — `serve --cluster`):
//! which objects one cluster gets and the other does not, and for the
//! objects both get, the first field that differs and why (another file:
//! an overlay; the same file: a generated value).
//!
//! Reads `render` (the desired sets) and `contract` (the field
//! comparison). Must never import `sync`, `admission`, `provenance`,
//! `promotion` or `dashboard`.

pub mod parity;

pub use parity::{Difference, ParityReport, compare};
