//! gitgate: Git is the only deploy path.
//!
//! One module per box of the data flow (see DESIGN.md): `admission` (the
//! webhook request path), `tls` and `server` (HTTPS serving), `metrics`,
//! `config` (validated settings) and `cli`.

pub mod admission;
pub mod cli;
pub mod config;
pub mod metrics;
pub mod render;
pub mod server;
pub mod source;
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
