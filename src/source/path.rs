//! Repository-relative paths: normalised, never absolute, never above the
//! repository root. Every path that reaches the tree reader is one of these.

use std::fmt;

use super::SourceError;

/// A normalised path inside a repository (`""` is the root). Components are
/// non-empty, never `.` or `..`, and separated by `/`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default, serde::Serialize)]
#[serde(transparent)]
pub struct RepoPath(String);

impl RepoPath {
    /// The repository root.
    pub fn root() -> Self {
        RepoPath(String::new())
    }

    /// Parses a path written in configuration (an app's `path`, a values
    /// file): relative, and with no `..` component at all.
    pub fn parse(raw: &str) -> Result<Self, SourceError> {
        if raw.starts_with('/') || raw.starts_with('\\') || has_drive_prefix(raw) {
            return Err(SourceError::InvalidPath { path: raw.to_string(), reason: "absolute paths are not allowed" });
        }
        if raw.contains('\0') {
            return Err(SourceError::InvalidPath { path: raw.to_string(), reason: "NUL byte in path" });
        }
        if raw.split(['/', '\\']).any(|c| c == "..") {
            return Err(SourceError::InvalidPath { path: raw.to_string(), reason: "`..` is not allowed" });
        }
        Ok(Self::normalise_components(raw.split('/')))
    }

    /// Joins `rel` (relative to directory `self`; may contain `..`) and
    /// normalises it. A result above the repository root is refused.
    pub fn join(&self, rel: &str) -> Result<Self, SourceError> {
        if rel.starts_with('/') || rel.starts_with('\\') || has_drive_prefix(rel) {
            return Err(SourceError::InvalidPath { path: rel.to_string(), reason: "absolute paths are not allowed" });
        }
        if rel.contains('\0') {
            return Err(SourceError::InvalidPath { path: rel.to_string(), reason: "NUL byte in path" });
        }
        let mut parts: Vec<&str> = self.components().collect();
        for c in rel.split('/') {
            match c {
                "" | "." => {}
                ".." => {
                    if parts.pop().is_none() {
                        return Err(SourceError::InvalidPath {
                            path: self.display_join(rel),
                            reason: "`..` leaves the repository",
                        });
                    }
                }
                c => parts.push(c),
            }
        }
        Ok(RepoPath(parts.join("/")))
    }

    fn display_join(&self, rel: &str) -> String {
        if self.0.is_empty() { rel.to_string() } else { format!("{}/{}", self.0, rel) }
    }

    fn normalise_components<'a>(parts: impl Iterator<Item = &'a str>) -> Self {
        let parts: Vec<&str> = parts.filter(|c| !c.is_empty() && *c != ".").collect();
        RepoPath(parts.join("/"))
    }

    /// A child of this directory (one component, already validated by the
    /// tree it came from).
    pub fn child(&self, name: &str) -> Self {
        if self.0.is_empty() { RepoPath(name.to_string()) } else { RepoPath(format!("{}/{}", self.0, name)) }
    }

    pub fn components(&self) -> impl Iterator<Item = &str> {
        self.0.split('/').filter(|c| !c.is_empty())
    }

    pub fn parent(&self) -> RepoPath {
        match self.0.rfind('/') {
            Some(i) => RepoPath(self.0[..i].to_string()),
            None => RepoPath::root(),
        }
    }

    pub fn file_name(&self) -> &str {
        match self.0.rfind('/') {
            Some(i) => &self.0[i + 1..],
            None => &self.0,
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn is_root(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether `self` is `dir` or lies below it.
    pub fn starts_with(&self, dir: &RepoPath) -> bool {
        dir.0.is_empty()
            || self.0 == dir.0
            || (self.0.starts_with(&dir.0) && self.0.as_bytes().get(dir.0.len()) == Some(&b'/'))
    }
}

fn has_drive_prefix(raw: &str) -> bool {
    let b = raw.as_bytes();
    b.len() >= 2 && b[0].is_ascii_alphabetic() && b[1] == b':'
}

impl fmt::Display for RepoPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() { f.write_str(".") } else { f.write_str(&self.0) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_normalises_and_refuses_escapes() {
        assert_eq!(RepoPath::parse("./apps//web/").unwrap().as_str(), "apps/web");
        assert!(RepoPath::parse("/etc/passwd").is_err());
        assert!(RepoPath::parse("apps/../../etc").is_err());
        assert!(RepoPath::parse("C:/x").is_err());
    }

    #[test]
    fn join_resolves_dotdot_inside_only() {
        let dir = RepoPath::parse("apps/web/overlays/prod").unwrap();
        assert_eq!(dir.join("../../base").unwrap().as_str(), "apps/web/base");
        let err = dir.join("../../../../../etc/passwd").unwrap_err();
        assert!(err.to_string().contains("leaves the repository"), "{err}");
        assert!(dir.join("/etc/passwd").is_err());
    }

    #[test]
    fn starts_with_is_component_wise() {
        let a = RepoPath::parse("apps/web").unwrap();
        assert!(RepoPath::parse("apps/web/x.yaml").unwrap().starts_with(&a));
        assert!(!RepoPath::parse("apps/webx/x.yaml").unwrap().starts_with(&a));
    }
}
