//! End-to-end tests against a real kube-apiserver (`KUBE_BIN_DIR`); each
//! says loudly that it skipped when the binaries are not given.
//! `cargo test --test e2e` runs them.

#[path = "../support/mod.rs"]
mod support;
use support::cluster;
use support::server as common;
use support::vault;

mod authz;
mod chaos;
mod chart;
mod diff;
mod differential;
mod faults;
mod fleet;
mod harness;
mod hooks;
mod keys;
mod promotion;
mod provenance;
mod secrets;
mod signed;
mod subresources;
mod sync;
mod sync_hooks;
mod sync_targets;
mod trust;
mod vap;
mod walkthrough;
mod webhook;
