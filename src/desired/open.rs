//! The repository to track: a Git URL or local repository as given; a
//! plain directory committed from its files; none, the bundled example.

use std::path::{Path, PathBuf};

use super::DesiredError;
use crate::source::local;

/// The URL to fetch for `repo`. A plain directory (or, when `repo` is
/// `None`, the bundled example written into `work/example`) is committed
/// into a fresh repository under `work/example-git`.
pub fn source_url(repo: Option<&str>, work: &Path) -> Result<String, DesiredError> {
    let dir = match repo {
        // A plain directory is committed; anything else (a URL, a local
        // repository, a path that is not there) is fetched as given, and
        // the fetch says what is wrong with it.
        Some(d) if !d.contains("://") && Path::new(d).is_dir() && !local::is_git_repo(Path::new(d)) => PathBuf::from(d),
        Some(r) => return Ok(r.to_string()),
        None => {
            let dir = work.join("example");
            let _ = std::fs::remove_dir_all(&dir);
            write_example(&dir)?;
            dir
        }
    };
    let into = work.join("example-git");
    let _ = std::fs::remove_dir_all(&into);
    Ok(local::init_from_dir(&dir, &into)?.display().to_string())
}

/// Writes the bundled example repository into `dir`.
pub fn write_example(dir: &Path) -> Result<(), DesiredError> {
    for (rel, content) in crate::render::example::FILES {
        let path = dir.join(rel);
        let bad = |source| DesiredError::Example { path: path.clone(), source };
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(bad)?;
        }
        std::fs::write(&path, content).map_err(bad)?;
    }
    Ok(())
}
