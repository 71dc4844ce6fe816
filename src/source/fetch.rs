//! Fetching into a bare cache with gix (file://, ssh://, http(s)://, git://).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use gix::ObjectId;
use gix::remote::Direction;

use super::{ReadLimits, SourceError, TreeReader};

/// Where remote branches land in the cache.
const REFSPECS: [&str; 3] =
    ["+refs/heads/*:refs/remotes/origin/*", "+refs/tags/*:refs/tags/*", "+HEAD:refs/remotes/origin/HEAD"];

/// A remote repository mirrored into a bare cache directory.
pub struct GitSource {
    url: String,
    /// `url` with any credentials in it masked: what logs and errors show.
    shown: String,
    cache: PathBuf,
    repo: gix::ThreadSafeRepository,
}

impl GitSource {
    /// Opens (or creates) the bare cache at `cache` for `url`. A local path
    /// is turned into a `file://` URL.
    pub fn open(url: &str, cache: &Path) -> Result<Self, SourceError> {
        let url = normalise_url(url)?;
        let repo = if cache.join("HEAD").is_file() {
            gix::open(cache)
                .map_err(|e| SourceError::Cache { path: cache.display().to_string(), source: Box::new(e) })?
        } else {
            std::fs::create_dir_all(cache)
                .map_err(|e| SourceError::Cache { path: cache.display().to_string(), source: Box::new(e) })?;
            gix::init_bare(cache)
                .map_err(|e| SourceError::Cache { path: cache.display().to_string(), source: Box::new(e) })?
        };
        let shown = redact_url(&url);
        Ok(GitSource { url, shown, cache: cache.to_path_buf(), repo: repo.into_sync() })
    }

    /// The URL fetched from, credentials included: for the transport only.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The URL with credentials masked: for logs and messages.
    pub fn display_url(&self) -> &str {
        &self.shown
    }

    /// A transport error with the URL's credentials scrubbed from its text
    /// (gix and reqwest errors may quote the URL).
    fn scrubbed(&self, e: &dyn std::error::Error) -> Box<dyn std::error::Error + Send + Sync> {
        let mut text = crate::error_chain(e);
        if let Some(userinfo) = userinfo(&self.url) {
            text = text.replace(userinfo, "***");
        }
        text.into()
    }

    pub fn cache_dir(&self) -> &Path {
        &self.cache
    }

    /// A thread-local handle on the cache.
    pub fn repo(&self) -> gix::Repository {
        self.repo.to_thread_local()
    }

    /// Fetches every branch and tag (blocking).
    pub fn fetch(&self) -> Result<(), SourceError> {
        let repo = self.repo();
        let err = |e: Box<dyn std::error::Error + Send + Sync>| SourceError::Fetch {
            url: self.shown.clone(),
            source: self.scrubbed(e.as_ref()),
        };
        let remote = repo
            .remote_at(self.url.as_str())
            .map_err(|e| err(Box::new(e)))?
            .with_refspecs(REFSPECS, Direction::Fetch)
            .map_err(|e| err(Box::new(e)))?;
        let conn = remote.connect(Direction::Fetch).map_err(|e| err(Box::new(e)))?;
        let prepare = conn.prepare_fetch(gix::progress::Discard, Default::default()).map_err(|e| err(Box::new(e)))?;
        let interrupt = AtomicBool::new(false);
        prepare.receive(gix::progress::Discard, &interrupt).map_err(|e| err(Box::new(e)))?;
        Ok(())
    }

    /// [`fetch`](Self::fetch) on the blocking pool.
    pub async fn fetch_async(self: &Arc<Self>) -> Result<(), SourceError> {
        let me = self.clone();
        tokio::task::spawn_blocking(move || me.fetch())
            .await
            .map_err(|e| SourceError::Fetch { url: self.shown.clone(), source: Box::new(e) })?
    }

    /// Resolves a branch, tag, full commit ID or revision expression to a
    /// commit. `HEAD` is the remote's default branch.
    pub fn resolve(&self, rev: &str) -> Result<ObjectId, SourceError> {
        let repo = self.repo();
        let fail = |source: Option<Box<dyn std::error::Error + Send + Sync>>| SourceError::Resolve {
            url: self.shown.clone(),
            rev: rev.to_string(),
            source,
        };
        let candidates = [format!("refs/remotes/origin/{rev}"), format!("refs/tags/{rev}"), rev.to_string()];
        for name in candidates.iter().take(2) {
            if let Ok(Some(mut r)) = repo.try_find_reference(name.as_str()) {
                let c = r.peel_to_commit().map_err(|e| fail(Some(Box::new(e))))?;
                return Ok(c.id);
            }
        }
        let id = repo.rev_parse_single(candidates[2].as_str()).map_err(|e| fail(Some(Box::new(e))))?;
        let obj = id.object().map_err(|e| fail(Some(Box::new(e))))?;
        let commit = obj.peel_to_commit().map_err(|e| fail(Some(Box::new(e))))?;
        Ok(commit.id)
    }

    /// A reader over `commit`'s tree.
    pub fn reader(&self, commit: ObjectId, limits: ReadLimits) -> Result<TreeReader, SourceError> {
        TreeReader::new(self.repo(), commit, limits)
    }
}

/// The `user[:password]` part of a `scheme://user[:password]@host/…` URL.
fn userinfo(url: &str) -> Option<&str> {
    let rest = url.split_once("://")?.1;
    let authority = rest.split('/').next()?;
    let (info, _host) = authority.rsplit_once('@')?;
    (!info.is_empty()).then_some(info)
}

/// `url` with its userinfo masked (`https://***@host/repo.git`), so a token
/// embedded in a repository URL never reaches a log or an error.
pub fn redact_url(url: &str) -> String {
    match userinfo(url) {
        Some(info) => url.replacen(&format!("{info}@"), "***@", 1),
        None => url.to_owned(),
    }
}

/// A local directory becomes an absolute `file://` URL; URLs pass through.
fn normalise_url(url: &str) -> Result<String, SourceError> {
    if url.contains("://") || (url.contains('@') && url.contains(':')) {
        return Ok(url.to_string());
    }
    let abs =
        std::fs::canonicalize(url).map_err(|e| SourceError::Cache { path: url.to_string(), source: Box::new(e) })?;
    Ok(format!("file://{}", abs.display()))
}

#[cfg(test)]
mod redaction_tests {
    use super::*;

    #[test]
    fn credentials_in_urls_are_masked() {
        assert_eq!(redact_url("https://bot:ghp_s3cret@github.com/org/repo.git"), "https://***@github.com/org/repo.git");
        assert_eq!(redact_url("https://oauth2:tok@gitlab.example/a/b"), "https://***@gitlab.example/a/b");
        assert_eq!(redact_url("https://github.com/org/repo.git"), "https://github.com/org/repo.git");
        assert_eq!(redact_url("ssh://git@host:22/repo"), "ssh://***@host:22/repo");
        assert_eq!(redact_url("file:///tmp/repo"), "file:///tmp/repo");
        assert_eq!(redact_url("https://host/path@v1"), "https://host/path@v1", "an @ after the host is not userinfo");
    }

    #[test]
    fn a_failed_fetch_never_shows_the_token() {
        let dir = tempfile::tempdir().unwrap();
        let _ = rustls::crypto::ring::default_provider().install_default();
        let src =
            GitSource::open("https://bot:ghp_s3cret@127.0.0.1:9/org/repo.git", &dir.path().join("c.git")).unwrap();
        let err = src.fetch().unwrap_err();
        let text = format!("{} / {err:?}", crate::error_chain(&err));
        assert!(!text.contains("ghp_s3cret"), "{text}");
        assert!(text.contains("https://***@127.0.0.1:9/org/repo.git"), "{text}");
    }
}
