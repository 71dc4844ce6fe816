//! Turning a plain directory (such as `examples/gitops/`) into a real Git
//! repository with one commit, so it can be served like any other source.
//! This shells out to the `git` CLI; it is for the CLI and tests, never the
//! sync or admission path.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::SourceError;

/// Whether `dir` is the top of a Git repository (work tree or bare).
pub fn is_git_repo(dir: &Path) -> bool {
    dir.join(".git").exists() || (dir.join("HEAD").is_file() && dir.join("objects").is_dir())
}

/// Copies `dir` into `into/repo`, commits it on branch `main` (with a fixed
/// author, date and message, so the commit ID depends only on the content)
/// and returns the repository's path.
pub fn init_from_dir(dir: &Path, into: &Path) -> Result<PathBuf, SourceError> {
    let repo = into.join("repo");
    copy_tree(dir, &repo)?;
    git(&repo, &["init", "-q", "-b", "main"])?;
    git(&repo, &["add", "-A"])?;
    git(
        &repo,
        &[
            "-c",
            "user.name=gitgate",
            "-c",
            "user.email=gitgate@localhost",
            "-c",
            "commit.gpgsign=false",
            "commit",
            "-q",
            "-m",
            "snapshot",
        ],
    )?;
    Ok(repo)
}

fn copy_tree(from: &Path, to: &Path) -> Result<(), SourceError> {
    let io = |e: std::io::Error, p: &Path| SourceError::Command {
        command: format!("copy {}", p.display()),
        reason: e.to_string(),
    };
    std::fs::create_dir_all(to).map_err(|e| io(e, to))?;
    for entry in std::fs::read_dir(from).map_err(|e| io(e, from))? {
        let entry = entry.map_err(|e| io(e, from))?;
        let ty = entry.file_type().map_err(|e| io(e, &entry.path()))?;
        let target = to.join(entry.file_name());
        if entry.file_name() == ".git" {
            continue;
        }
        if ty.is_dir() {
            copy_tree(&entry.path(), &target)?;
        } else if ty.is_file() {
            std::fs::copy(entry.path(), &target).map_err(|e| io(e, &entry.path()))?;
        }
    }
    Ok(())
}

fn git(dir: &Path, args: &[&str]) -> Result<(), SourceError> {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        // A fixed date: the same directory always gives the same commit ID.
        .env("GIT_AUTHOR_DATE", "2026-01-01T00:00:00Z")
        .env("GIT_COMMITTER_DATE", "2026-01-01T00:00:00Z")
        .output()
        .map_err(|e| SourceError::Command { command: format!("git {}", args.join(" ")), reason: e.to_string() })?;
    if !out.status.success() {
        return Err(SourceError::Command {
            command: format!("git {}", args.join(" ")),
            reason: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(())
}
