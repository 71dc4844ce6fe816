//! gitgate: Git is the only deploy path.
//!
//! One module per box of the data flow (see DESIGN.md), lowest first:
//! `contract` (the `gitgate.dev/*` names and the one `matches_git`),
//! `source` (Git), `render` (manifests → the desired set of a commit),
//! `desired` (the tracker: which set is current, and the gate's snapshot of
//! it), `admission` (the webhook request path), `provenance` (the rule, as
//! a stage), `policy` (CEL), `secrets` (the secrets bridge), `audit` (the
//! hash-chained log), `promotion` (which commit is in force per app),
//! `sync` (the reconcile loop), `access` and `dashboard` (the read-only
//! web UI); `tls` and `server` (HTTPS serving), `metrics`, `overload`,
//! `config` (validated settings), `table` (text tables) and `cmd` (the command line, the only
//! place for `anyhow`).

pub mod access;
pub mod admission;
pub mod audit;
pub mod clock;
pub mod cmd;
pub mod config;
pub mod contract;
pub mod dashboard;
pub mod desired;
pub mod fleet;
#[doc(hidden)]
pub mod fuzzing;
pub mod metrics;
pub mod overload;
pub mod policy;
pub mod promotion;
pub mod provenance;
pub mod render;
pub mod secrets;
pub mod server;
pub mod source;
pub mod sync;
pub mod table;
pub mod tls;

/// An error and its sources, joined with ": " (for log fields).
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        out.push_str(": ");
        out.push_str(&s.to_string());
        cur = s.source();
    }
    out
}
