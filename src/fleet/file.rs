//! The fleet file (`serve --fleet FILE`): how a hub reaches each spoke —
//! its status API's URL, a file holding a bearer token the spoke's own
//! apiserver accepts, the CA of its serving certificate — and the
//! differences each parity group allows. Checked once, at start.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use serde::Deserialize;

#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    #[error("failed to read the fleet file {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the fleet file {path} is not valid: {message}")]
    Invalid { path: PathBuf, message: String },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawFleet {
    spokes: Vec<RawSpoke>,
    #[serde(default)]
    parity_groups: Vec<RawGroup>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawSpoke {
    cluster: String,
    url: String,
    #[serde(default)]
    token_file: Option<PathBuf>,
    #[serde(default)]
    ca_file: Option<PathBuf>,
    #[serde(default)]
    parity_group: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawGroup {
    name: String,
    #[serde(default)]
    allowed_differences: Vec<String>,
}

/// One spoke of the fleet file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Spoke {
    /// The cluster's name in `gitgate.yaml` (the spoke's `--cluster`).
    pub cluster: String,
    /// Its status API, `https://…` without a trailing slash.
    pub url: String,
    /// A bearer token the spoke's apiserver accepts (a ServiceAccount
    /// token), read every round.
    pub token_file: Option<PathBuf>,
    /// The CA of its serving certificate (default: the system's roots).
    pub ca_file: Option<PathBuf>,
    /// Its parity group (default: its cluster's `labels.env`).
    pub parity_group: Option<String>,
}

/// The validated fleet file.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FleetFile {
    pub spokes: Vec<Spoke>,
    /// Per parity group, the objects (`Kind.group namespace/name`, as
    /// `gitgate fleet diff` names them) its members may differ in.
    pub allowed: BTreeMap<String, Vec<String>>,
}

/// A spoke's URL: `https://host[:port][/path]`, nothing else (no user,
/// password, query or fragment: the URL is shown to every viewer).
fn check_url(url: &str) -> Result<(), &'static str> {
    let parsed = reqwest::Url::parse(url).map_err(|_| "is not a URL")?;
    if parsed.scheme() != "https" {
        return Err("is not https:// (its token is never sent in the clear)");
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err("names no host");
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err("holds a user or password (the token file signs in)");
    }
    if parsed.query().is_some() || parsed.fragment().is_some() {
        return Err("has a query or fragment");
    }
    Ok(())
}

impl FleetFile {
    pub fn load(path: &Path) -> Result<FleetFile, FleetError> {
        let text = std::fs::read_to_string(path).map_err(|source| FleetError::Read { path: path.into(), source })?;
        let base = path.parent().unwrap_or(Path::new("."));
        Self::parse(&text, base).map_err(|message| FleetError::Invalid { path: path.into(), message })
    }

    /// Parses and checks the file; relative paths are taken from `base`
    /// (the file's directory).
    pub fn parse(text: &str, base: &Path) -> Result<FleetFile, String> {
        let raw: RawFleet = serde_saphyr::from_str(text).map_err(|e| e.to_string())?;
        if raw.spokes.is_empty() {
            return Err("it lists no spokes".into());
        }
        let (mut names, mut urls) = (HashSet::new(), HashSet::new());
        let mut spokes = Vec::with_capacity(raw.spokes.len());
        for s in raw.spokes {
            let cluster = s.cluster.trim().to_string();
            if cluster.is_empty() {
                return Err("a spoke has an empty cluster name".into());
            }
            if !names.insert(cluster.clone()) {
                return Err(format!("two spokes claim cluster {cluster:?}: each cluster has one spoke"));
            }
            let url = s.url.trim().trim_end_matches('/').to_string();
            check_url(&url).map_err(|why| format!("spoke {cluster:?}: url {:?} {why}", s.url))?;
            if !urls.insert(url.clone()) {
                return Err(format!("spoke {cluster:?}: url {url} is another spoke's too"));
            }
            let at = |p: PathBuf| if p.is_absolute() { p } else { base.join(p) };
            spokes.push(Spoke {
                cluster,
                url,
                token_file: s.token_file.map(at),
                ca_file: s.ca_file.map(at),
                parity_group: s.parity_group.filter(|g| !g.trim().is_empty()),
            });
        }
        let mut allowed = BTreeMap::new();
        for g in raw.parity_groups {
            if allowed.insert(g.name.clone(), g.allowed_differences).is_some() {
                return Err(format!("parity group {:?} is listed twice", g.name));
            }
        }
        Ok(FleetFile { spokes, allowed })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fleet_file_is_checked_once() {
        let ok = FleetFile::parse(
            "spokes:\n  - {cluster: staging, url: 'https://a:8443/', tokenFile: tok, caFile: /ca}\n  - {cluster: dr, url: 'https://b', parityGroup: prod}\nparityGroups:\n  - {name: prod, allowedDifferences: ['ConfigMap shop/x']}\n",
            Path::new("/etc/fleet"),
        )
        .unwrap();
        assert_eq!(ok.spokes[0].url, "https://a:8443");
        assert_eq!(ok.spokes[0].token_file.as_deref(), Some(Path::new("/etc/fleet/tok")));
        assert_eq!(ok.spokes[0].ca_file.as_deref(), Some(Path::new("/ca")));
        assert_eq!(ok.spokes[1].parity_group.as_deref(), Some("prod"));
        assert_eq!(ok.allowed["prod"], ["ConfigMap shop/x"]);
        for (bad, says) in [
            ("spokes: []", "no spokes"),
            (
                "spokes:\n  - {cluster: a, url: 'https://a'}\n  - {cluster: a, url: 'https://b'}",
                "two spokes claim cluster \"a\"",
            ),
            ("spokes:\n  - {cluster: a, url: 'http://a'}", "not https://"),
            ("spokes:\n  - {cluster: a, url: 'https://user:pw@a'}", "user or password"),
            ("spokes:\n  - {cluster: a, url: 'https://a/?x=1'}", "query or fragment"),
            ("spokes:\n  - {cluster: a, url: 'https://'}", "not a URL"),
            ("spokes:\n  - {cluster: a, url: 'https://a'}\n  - {cluster: b, url: 'https://a/'}", "another spoke's too"),
            ("spokes:\n  - {cluster: ' ', url: 'https://a'}", "empty cluster name"),
            ("spokes:\n  - {cluster: a, url: 'https://a', token: x}", "unknown field"),
        ] {
            let err = FleetFile::parse(bad, Path::new("/")).unwrap_err();
            assert!(err.contains(says), "{bad}: {err}");
        }
    }
}
