//! Where a commit and a file can be read. The dashboard always links to
//! its own pages (they work without internet: gitgate has the repository);
//! those pages add a link to the forge when the repository URL names one.

/// The forge's web base and its URL shapes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Forge {
    /// `…/commit/<id>`, `…/blob/<id>/<path>` (GitHub, Gitea, Forgejo, Bitbucket Server-likes).
    GitHub(String),
    /// `…/-/commit/<id>`, `…/-/blob/<id>/<path>`.
    GitLab(String),
}

impl Forge {
    /// The forge of a clone URL, when it is a web host; none for
    /// `file://`, local paths and hosts with no known web UI shape.
    pub fn from_clone_url(url: &str) -> Option<Forge> {
        let url = url.trim().trim_end_matches('/');
        let url = url.strip_suffix(".git").unwrap_or(url);
        let base = if let Some(rest) = url.strip_prefix("https://") {
            // Drop credentials: user:token@host.
            let rest = rest.rsplit_once('@').map_or(rest, |(_, r)| r);
            format!("https://{rest}")
        } else if let Some(rest) = url.strip_prefix("ssh://") {
            let rest = rest.rsplit_once('@').map_or(rest, |(_, r)| r);
            let (host, path) = rest.split_once('/')?;
            let host = host.split(':').next().unwrap_or(host);
            format!("https://{host}/{path}")
        } else if let Some((user_host, path)) = url.split_once(':')
            && !url.contains("://")
            && user_host.contains('@')
        {
            let host = user_host.rsplit_once('@').map_or(user_host, |(_, h)| h);
            format!("https://{host}/{path}")
        } else {
            return None;
        };
        let host = base.trim_start_matches("https://").split('/').next().unwrap_or_default();
        if host.is_empty() || base.trim_start_matches("https://").split('/').filter(|s| !s.is_empty()).count() < 3 {
            return None;
        }
        Some(if host.contains("gitlab") { Forge::GitLab(base) } else { Forge::GitHub(base) })
    }

    pub fn commit_url(&self, id: &str) -> String {
        match self {
            Forge::GitHub(b) => format!("{b}/commit/{id}"),
            Forge::GitLab(b) => format!("{b}/-/commit/{id}"),
        }
    }

    pub fn file_url(&self, id: &str, path: &str) -> String {
        match self {
            Forge::GitHub(b) => format!("{b}/blob/{id}/{path}"),
            Forge::GitLab(b) => format!("{b}/-/blob/{id}/{path}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forges_are_recognised_from_clone_urls_and_credentials_dropped() {
        let gh = Forge::from_clone_url("https://x-token:s3cr3t@github.com/acme/deploy.git").unwrap();
        assert_eq!(gh.commit_url("abc"), "https://github.com/acme/deploy/commit/abc");
        assert_eq!(gh.file_url("abc", "apps/web.yaml"), "https://github.com/acme/deploy/blob/abc/apps/web.yaml");
        let scp = Forge::from_clone_url("git@gitlab.example.com:team/infra.git").unwrap();
        assert_eq!(scp.commit_url("abc"), "https://gitlab.example.com/team/infra/-/commit/abc");
        let ssh = Forge::from_clone_url("ssh://git@git.example.com:2222/team/infra").unwrap();
        assert_eq!(ssh.commit_url("abc"), "https://git.example.com/team/infra/commit/abc");
        for local in ["file:///srv/git/repo", "/srv/git/repo", "gitgate-data/example-git", "https://host"] {
            assert_eq!(Forge::from_clone_url(local), None, "{local}");
        }
    }
}
