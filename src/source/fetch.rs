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
        Ok(GitSource { url, cache: cache.to_path_buf(), repo: repo.into_sync() })
    }

    pub fn url(&self) -> &str {
        &self.url
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
        let err = |e: Box<dyn std::error::Error + Send + Sync>| SourceError::Fetch { url: self.url.clone(), source: e };
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
            .map_err(|e| SourceError::Fetch { url: self.url.clone(), source: Box::new(e) })?
    }

    /// Resolves a branch, tag, full commit ID or revision expression to a
    /// commit. `HEAD` is the remote's default branch.
    pub fn resolve(&self, rev: &str) -> Result<ObjectId, SourceError> {
        let repo = self.repo();
        let fail = |source: Option<Box<dyn std::error::Error + Send + Sync>>| SourceError::Resolve {
            url: self.url.clone(),
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

/// A local directory becomes an absolute `file://` URL; URLs pass through.
fn normalise_url(url: &str) -> Result<String, SourceError> {
    if url.contains("://") || (url.contains('@') && url.contains(':')) {
        return Ok(url.to_string());
    }
    let abs =
        std::fs::canonicalize(url).map_err(|e| SourceError::Cache { path: url.to_string(), source: Box::new(e) })?;
    Ok(format!("file://{}", abs.display()))
}
