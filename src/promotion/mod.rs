//! Promotion: when and how a change moves between environments (sync windows, …).
pub mod window;
