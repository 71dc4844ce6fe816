//! Every helper the integration tests share, in one place. A test file
//! pulls it in with `mod support;` (the e2e binary with
//! `#[path = "../support/mod.rs"] mod support;`, the benches with
//! `#[path = "../tests/support/mod.rs"] mod support;`); being a directory
//! without a `main.rs`, it is never a test binary of its own.
//!
//! - [`repo`]: real Git repositories made with the `git` CLI, a `git
//!   daemon`, SSH keys; re-exported here, as most tests use them.
//! - [`server`]: the captured AdmissionReview fixtures, an admission server
//!   on loopback, and `gitgate serve` as a child process.
//! - [`vault`]: a loopback fake of Vault's HTTP API.
//! - [`cluster`]: a real loopback control plane (`kube-up.sh`).
//! - [`fleet`]: in-process spokes behind their real login, for a hub.
//! - [`reap`]: every process a test starts ends with the test.
//!
//! The shell scripts beside this file (`kube-up.sh`, `kube-down.sh`,
//! `leftovers.sh`) are run by CI and the docs by their paths.
//!
//! Each test binary uses only some of these, so unused helpers (and an
//! unused re-export) are not warnings here.
#![allow(dead_code)]

pub mod cluster;
pub mod fleet;
pub mod reap;
pub mod repo;
pub mod server;
pub mod vault;

#[allow(unused_imports)]
pub use repo::*;
