//! `gitgate rollback APP --to COMMIT`: in a local clone, one commit that sets
//! an app's path back to its content at COMMIT. The rollback is an ordinary
//! commit: pushed (or merged from a pull request), gitgate syncs it like any
//! other, so auto-sync never fights it.
//!
//! The app's path is read from `gitgate.yaml` at HEAD with the renderer's own
//! parser; the path is restored from COMMIT with `git restore` (files added
//! since COMMIT are deleted, modified and deleted ones come back) and
//! committed with a `Gitgate-Rollback-To:` trailer. Nothing outside the
//! app's path changes. This shells out to the `git` CLI: it is a command for
//! a person's clone, never the sync or admission path.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use clap::Args;

use crate::render::RenderError;
use crate::render::config;
use crate::source::{ReadLimits, RepoPath, SourceError, TreeReader};

/// The trailer naming the commit rolled back to.
pub const TRAILER: &str = "Gitgate-Rollback-To";

#[derive(Args, Debug, Clone)]
pub struct RollbackArgs {
    /// The app to roll back (as named in gitgate.yaml).
    pub app: String,
    /// The commit (or any revision) whose content of the app's path to restore.
    #[arg(long = "to", value_name = "COMMIT")]
    pub to: String,
    /// The local clone (a work tree).
    #[arg(long, default_value = ".")]
    pub repo: PathBuf,
    /// Path of the apps file in the repository.
    #[arg(long, default_value = "gitgate.yaml")]
    pub config: String,
    /// Why: added to the commit message's body.
    #[arg(long, short = 'm')]
    pub message: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum RollbackError {
    #[error("failed to run git")]
    Spawn(#[source] std::io::Error),
    #[error("{dir} is not inside a Git work tree: {stderr}")]
    NotAWorkTree { dir: PathBuf, stderr: String },
    #[error("the repository has no commit at HEAD yet")]
    NoHead,
    #[error("commit {rev:?} not found in the repository")]
    CommitNotFound { rev: String },
    #[error("failed to read {file} at HEAD")]
    Source {
        file: String,
        #[source]
        source: SourceError,
    },
    #[error("failed to read the apps at HEAD")]
    Config(#[source] Box<RenderError>),
    #[error("no app named {app:?} in {file} at HEAD; known apps: {known}")]
    UnknownApp { app: String, file: String, known: String },
    #[error("app {app:?} path {path:?} did not exist at {commit}; refusing to delete the whole app")]
    PathAbsentAt { app: String, path: String, commit: String },
    #[error("{path} has uncommitted changes; commit or stash them first: {}", files.join(", "))]
    Dirty { path: String, files: Vec<String> },
    #[error("the index has staged changes ({}); commit or unstage them first, they would join the rollback commit", files.join(", "))]
    StagedElsewhere { files: Vec<String> },
    #[error("git {args} failed: {stderr}")]
    Git { args: String, stderr: String },
    #[error("git commit failed (the work tree was put back as it was): {stderr}")]
    CommitFailed { stderr: String },
}

/// What a rollback did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The new commit.
    Committed { commit: String, message: String },
    /// The app's path already equals its content at the target.
    NothingToDo,
}

/// A rollback's target, resolved.
#[derive(Clone, Debug)]
pub struct Plan {
    pub top: PathBuf,
    pub app: String,
    /// The app's path (empty: the repository root).
    pub path: String,
    pub target: String,
    pub short: String,
    pub subject: String,
}

/// Runs `gitgate rollback` and prints what it did.
pub fn run(args: RollbackArgs) -> Result<(), RollbackError> {
    let plan = plan(&args)?;
    let shown = if plan.path.is_empty() { "/" } else { plan.path.as_str() };
    match apply(&plan, args.message.as_deref())? {
        Outcome::NothingToDo => {
            println!(
                "app {} ({shown}) already matches {} '{}'; nothing to roll back",
                plan.app, plan.short, plan.subject
            );
        }
        Outcome::Committed { commit, .. } => {
            println!("rolled back app {} ({shown}) to {} '{}'", plan.app, plan.short, plan.subject);
            println!("commit {commit}");
            println!("push it (or open a pull request); gitgate syncs it like any commit");
        }
    }
    Ok(())
}

/// Resolves the work tree, the target commit and the app's path at HEAD.
pub fn plan(args: &RollbackArgs) -> Result<Plan, RollbackError> {
    let top = match git(&args.repo, &["rev-parse", "--show-toplevel"])? {
        out if out.status.success() => PathBuf::from(stdout(&out)),
        out => return Err(RollbackError::NotAWorkTree { dir: args.repo.clone(), stderr: stderr(&out) }),
    };
    let head = resolve(&top, "HEAD").ok_or(RollbackError::NoHead)?;
    let target = resolve(&top, &args.to).ok_or_else(|| RollbackError::CommitNotFound { rev: args.to.clone() })?;

    let path = app_path(&top, &head, &args.config, &args.app)?;
    // ls-tree takes plain paths (no pathspec magic), relative to `top`.
    let plain = if path.is_empty() { "." } else { path.as_str() };
    if stdout(&git_ok(&top, &["ls-tree", "--name-only", &target, "--", plain])?).is_empty() {
        return Err(RollbackError::PathAbsentAt { app: args.app.clone(), path, commit: target });
    }
    let short = stdout(&git_ok(&top, &["rev-parse", "--short", &target])?);
    let subject = stdout(&git_ok(&top, &["log", "-1", "--format=%s", &target])?);
    Ok(Plan { top, app: args.app.clone(), path, target, short, subject })
}

/// Restores the app's path from the target and commits, or does nothing
/// when they already match.
pub fn apply(plan: &Plan, message: Option<&str>) -> Result<Outcome, RollbackError> {
    let top = &plan.top;
    let spec = pathspec(&plan.path);
    let dirty = lines(&git_ok(top, &["status", "--porcelain", "--untracked-files=all", "--", &spec])?);
    if !dirty.is_empty() {
        let path = if plan.path.is_empty() { "the work tree".to_string() } else { plan.path.clone() };
        return Err(RollbackError::Dirty { path, files: dirty });
    }
    let staged = lines(&git_ok(top, &["diff", "--cached", "--name-only"])?);
    if !staged.is_empty() {
        return Err(RollbackError::StagedElsewhere { files: staged });
    }
    let diff = ["diff", "--quiet", "HEAD", &plan.target, "--", &spec];
    let out = git(top, &diff)?;
    match out.status.code() {
        Some(0) => return Ok(Outcome::NothingToDo),
        Some(1) => {}
        _ => return Err(RollbackError::Git { args: diff.join(" "), stderr: stderr(&out) }),
    }

    git_ok(top, &["restore", &format!("--source={}", plan.target), "--staged", "--worktree", "--", &spec])?;
    let text = commit_message(plan, message);
    let out = git_stdin(top, &["commit", "-q", "-F", "-"], &text)?;
    if !out.status.success() {
        // The path was clean before: putting HEAD's content back loses nothing.
        let _ = git(top, &["restore", "--source=HEAD", "--staged", "--worktree", "--", &spec]);
        return Err(RollbackError::CommitFailed { stderr: stderr(&out) });
    }
    let commit = stdout(&git_ok(top, &["rev-parse", "HEAD"])?);
    Ok(Outcome::Committed { commit, message: text })
}

/// `Roll back app APP to <short> '<subject>'`, the optional reason, and the
/// trailer with the full commit ID.
pub fn commit_message(plan: &Plan, message: Option<&str>) -> String {
    let mut text = format!("Roll back app {} to {} '{}'\n\n", plan.app, plan.short, plan.subject);
    if let Some(m) = message.map(str::trim).filter(|m| !m.is_empty()) {
        text.push_str(m);
        text.push_str("\n\n");
    }
    text.push_str(&format!("{TRAILER}: {}\n", plan.target));
    text
}

/// The app's path, from the apps file at HEAD (read with the renderer's
/// parser, generators expanded).
fn app_path(top: &Path, head: &str, file: &str, app: &str) -> Result<String, RollbackError> {
    let source = |source| RollbackError::Source { file: file.to_string(), source };
    let repo = gix::open(top)
        .map_err(|e| source(SourceError::git(format!("failed to open the repository at {}", top.display()), e)))?;
    let commit = gix::ObjectId::from_hex(head.as_bytes())
        .map_err(|e| source(SourceError::git(format!("failed to parse commit ID {head}"), e)))?;
    let reader = TreeReader::new(repo, commit, ReadLimits::default()).map_err(source)?;
    let path = RepoPath::parse(file).map_err(source)?;
    let cfg = config::load(&reader, &path).map_err(|e| RollbackError::Config(Box::new(e)))?;
    match cfg.app(app) {
        Some(a) => Ok(a.path.as_str().to_string()),
        None => {
            let known: Vec<&str> = cfg.apps.iter().map(|a| a.name.as_str()).collect();
            let known = if known.is_empty() { "none".to_string() } else { known.join(", ") };
            Err(RollbackError::UnknownApp { app: app.to_string(), file: file.to_string(), known })
        }
    }
}

/// A pathspec for a repository path, anchored at the top (the root: all).
fn pathspec(path: &str) -> String {
    format!(":(top,literal){path}")
}

/// The full commit ID of a revision, or None when it names no commit.
fn resolve(top: &Path, rev: &str) -> Option<String> {
    let out = git(top, &["rev-parse", "--verify", "--quiet", "--end-of-options", &format!("{rev}^{{commit}}")]).ok()?;
    out.status.success().then(|| stdout(&out))
}

fn git(dir: &Path, args: &[&str]) -> Result<Output, RollbackError> {
    Command::new("git").args(args).current_dir(dir).output().map_err(RollbackError::Spawn)
}

fn git_ok(dir: &Path, args: &[&str]) -> Result<Output, RollbackError> {
    let out = git(dir, args)?;
    if out.status.success() { Ok(out) } else { Err(RollbackError::Git { args: args.join(" "), stderr: stderr(&out) }) }
}

fn git_stdin(dir: &Path, args: &[&str], input: &str) -> Result<Output, RollbackError> {
    use std::io::Write as _;
    let mut child = Command::new("git")
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(RollbackError::Spawn)?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(input.as_bytes()).map_err(RollbackError::Spawn)?;
    }
    child.wait_with_output().map_err(RollbackError::Spawn)
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).trim().to_string()
}

fn lines(out: &Output) -> Vec<String> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.trim().to_string())
        .collect()
}
