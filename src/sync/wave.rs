//! Apply order: the one type both the plan and the inventory speak of
//! (a leaf: it imports nothing of sync/).

/// Apply order: Namespaces and CRDs first (phase 0), then the sync waves
/// ascending; prune runs the other way.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
pub struct Wave {
    pub phase: u8,
    pub wave: i64,
}

impl std::fmt::Display for Wave {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.phase == 0 { write!(f, "namespaces+crds") } else { write!(f, "{}", self.wave) }
    }
}
