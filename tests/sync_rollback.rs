//! `gitgate rollback`: real repositories made with the `git` CLI.

mod support;

use std::process::Command;

use gitgate::sync::rollback::{self, Outcome, RollbackArgs, RollbackError};
use support::repo::{Repo, configmap, git};

const APPS: &str = "apps:\n  - {name: web, path: apps/web, destination: {namespace: web}}\n  - {name: web-canary, path: apps/web-canary, destination: {namespace: canary}}\n";

/// A clone with identity configured, and three commits:
/// v1 (web: a=1, b=1), v2 (web: a=2, b deleted, c added; canary changed),
/// v3 (web: a=3).
struct Fixture {
    repo: Repo,
    v1: String,
    v2: String,
}

fn fixture() -> Fixture {
    let repo = Repo::new();
    git(repo.path(), &["config", "user.name", "Rollback Tester"]);
    git(repo.path(), &["config", "user.email", "rollback@example.com"]);
    repo.write("gitgate.yaml", APPS)
        .write("apps/web/a.yaml", &configmap("a", "1"))
        .write("apps/web/b.yaml", &configmap("b", "1"))
        .write("apps/web-canary/a.yaml", &configmap("canary", "1"));
    let v1 = repo.commit("web v1");
    repo.write("apps/web/a.yaml", &configmap("a", "2"))
        .remove("apps/web/b.yaml")
        .write("apps/web/sub/c.yaml", &configmap("c", "1"))
        .write("apps/web-canary/a.yaml", &configmap("canary", "2"));
    let v2 = repo.commit("web v2");
    repo.write("apps/web/a.yaml", &configmap("a", "3"));
    repo.commit("web v3");
    Fixture { repo, v1, v2 }
}

fn args(f: &Fixture, app: &str, to: &str) -> RollbackArgs {
    RollbackArgs {
        app: app.to_string(),
        to: to.to_string(),
        repo: f.repo.path().to_path_buf(),
        config: "gitgate.yaml".to_string(),
        message: None,
    }
}

fn roll(a: &RollbackArgs) -> Result<Outcome, RollbackError> {
    let plan = rollback::plan(a)?;
    rollback::apply(&plan, a.message.as_deref())
}

fn read(f: &Fixture, rel: &str) -> Option<String> {
    std::fs::read_to_string(f.repo.path().join(rel)).ok()
}

#[test]
fn restores_modified_deleted_and_added_files_under_the_app_path_only() {
    let f = fixture();
    let before = git(f.repo.path(), &["rev-parse", "HEAD"]);
    let out = roll(&args(&f, "web", &f.v1)).unwrap();
    let Outcome::Committed { commit, .. } = out else { panic!("expected a commit, got {out:?}") };

    assert_eq!(git(f.repo.path(), &["rev-parse", "HEAD"]), commit);
    assert_eq!(git(f.repo.path(), &["rev-parse", "HEAD^"]), before, "one commit on top of HEAD");
    // The app's path now equals v1, in the commit and the work tree.
    assert_eq!(git(f.repo.path(), &["diff", "--stat", &f.v1, "HEAD", "--", "apps/web"]), "");
    assert_eq!(read(&f, "apps/web/a.yaml").unwrap(), configmap("a", "1"));
    assert_eq!(read(&f, "apps/web/b.yaml").unwrap(), configmap("b", "1"), "deleted file restored");
    assert!(read(&f, "apps/web/sub/c.yaml").is_none(), "file added since v1 deleted");
    // The neighbour whose name shares the prefix is untouched.
    assert_eq!(read(&f, "apps/web-canary/a.yaml").unwrap(), configmap("canary", "2"));
    let changed = git(f.repo.path(), &["diff", "--no-renames", "--name-only", "HEAD^", "HEAD"]);
    assert_eq!(changed.lines().collect::<Vec<_>>(), ["apps/web/a.yaml", "apps/web/b.yaml", "apps/web/sub/c.yaml"]);
    assert_eq!(git(f.repo.path(), &["status", "--porcelain"]), "", "work tree clean after");
}

#[test]
fn commit_message_names_the_target_and_carries_the_trailer() {
    let f = fixture();
    let mut a = args(&f, "web", &f.v1[..10]);
    a.message = Some("v2 broke checkout".to_string());
    roll(&a).unwrap();
    let short = git(f.repo.path(), &["rev-parse", "--short", &f.v1]);
    assert_eq!(git(f.repo.path(), &["log", "-1", "--format=%s"]), format!("Roll back app web to {short} 'web v1'"));
    assert!(git(f.repo.path(), &["log", "-1", "--format=%b"]).contains("v2 broke checkout"));
    let trailer = git(f.repo.path(), &["log", "-1", "--format=%(trailers:key=Gitgate-Rollback-To,valueonly)"]);
    assert_eq!(trailer, f.v1, "the trailer carries the full commit ID");
}

#[test]
fn unknown_app_is_refused_with_the_known_ones() {
    let f = fixture();
    let err = roll(&args(&f, "api", &f.v1)).unwrap_err();
    assert!(matches!(err, RollbackError::UnknownApp { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains("\"api\"") && msg.contains("web, web-canary"), "{msg}");
}

#[test]
fn unknown_commit_is_refused() {
    let f = fixture();
    let err = roll(&args(&f, "web", "0123456789abcdef0123456789abcdef01234567")).unwrap_err();
    assert!(matches!(err, RollbackError::CommitNotFound { .. }), "{err:?}");
    let err = roll(&args(&f, "web", "no-such-branch")).unwrap_err();
    assert!(matches!(err, RollbackError::CommitNotFound { .. }), "{err:?}");
}

#[test]
fn dirty_app_path_is_refused_and_left_as_is() {
    let f = fixture();
    f.repo.write("apps/web/a.yaml", "edited: by hand\n");
    let head = git(f.repo.path(), &["rev-parse", "HEAD"]);
    let err = roll(&args(&f, "web", &f.v1)).unwrap_err();
    assert!(matches!(err, RollbackError::Dirty { .. }), "{err:?}");
    assert!(err.to_string().contains("apps/web/a.yaml"), "{err}");
    assert_eq!(read(&f, "apps/web/a.yaml").unwrap(), "edited: by hand\n", "the edit is not lost");
    assert_eq!(git(f.repo.path(), &["rev-parse", "HEAD"]), head, "no commit");

    // An untracked file under the path counts too.
    git(f.repo.path(), &["checkout", "--", "apps/web/a.yaml"]);
    f.repo.write("apps/web/new.yaml", "x: 1\n");
    assert!(matches!(roll(&args(&f, "web", &f.v1)), Err(RollbackError::Dirty { .. })));
}

#[test]
fn staged_changes_elsewhere_are_refused_rather_than_swept_in() {
    let f = fixture();
    f.repo.write("README.md", "notes\n");
    git(f.repo.path(), &["add", "README.md"]);
    let err = roll(&args(&f, "web", &f.v1)).unwrap_err();
    assert!(matches!(err, RollbackError::StagedElsewhere { .. }), "{err:?}");
}

#[test]
fn edits_outside_the_app_path_do_not_block_and_are_not_committed() {
    let f = fixture();
    f.repo.write("apps/web-canary/a.yaml", "wip\n");
    roll(&args(&f, "web", &f.v1)).unwrap();
    assert_eq!(read(&f, "apps/web-canary/a.yaml").unwrap(), "wip\n");
    assert_eq!(git(f.repo.path(), &["status", "--porcelain"]), "M apps/web-canary/a.yaml");
}

#[test]
fn nothing_to_roll_back_makes_no_commit() {
    let f = fixture();
    // The canary's path at HEAD equals v2's.
    let head = git(f.repo.path(), &["rev-parse", "HEAD"]);
    assert_eq!(roll(&args(&f, "web-canary", &f.v2)).unwrap(), Outcome::NothingToDo);
    assert_eq!(git(f.repo.path(), &["rev-parse", "HEAD"]), head);
}

#[test]
fn path_absent_at_target_is_refused() {
    let f = fixture();
    f.repo
        .write("gitgate.yaml", &format!("{APPS}  - {{name: api, path: apps/api, destination: {{namespace: api}}}}\n"))
        .write("apps/api/a.yaml", &configmap("api", "1"));
    f.repo.commit("add api");
    let err = roll(&args(&f, "api", &f.v1)).unwrap_err();
    assert!(matches!(err, RollbackError::PathAbsentAt { .. }), "{err:?}");
}

#[test]
fn cli_prints_the_commit_and_the_hint_and_exits_zero_on_no_op() {
    let f = fixture();
    let bin = env!("CARGO_BIN_EXE_gitgate");
    let out = Command::new(bin).args(["rollback", "web", "--to", &f.v1, "--repo"]).arg(f.repo.path()).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout} {}", String::from_utf8_lossy(&out.stderr));
    let head = git(f.repo.path(), &["rev-parse", "HEAD"]);
    assert!(stdout.contains(&head), "{stdout}");
    assert!(stdout.contains("push it (or open a pull request); gitgate syncs it like any commit"), "{stdout}");

    // Again: already there.
    let out = Command::new(bin).args(["rollback", "web", "--to", &f.v1, "--repo"]).arg(f.repo.path()).output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("nothing to roll back"));
    assert_eq!(git(f.repo.path(), &["rev-parse", "HEAD"]), head);

    // Unknown app: non-zero, and the error lists the known apps.
    let out =
        Command::new(bin).args(["rollback", "nope", "--to", &f.v1, "--repo"]).arg(f.repo.path()).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("known apps: web, web-canary"));
}

#[test]
fn a_rejected_commit_leaves_the_work_tree_as_it_was() {
    let f = fixture();
    let hook = f.repo.path().join(".git/hooks/pre-commit");
    std::fs::write(&hook, "#!/bin/sh\necho 'rejected by policy' >&2\nexit 1\n").unwrap();
    let mut perms = std::fs::metadata(&hook).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
    std::fs::set_permissions(&hook, perms).unwrap();
    let head = git(f.repo.path(), &["rev-parse", "HEAD"]);
    let err = roll(&args(&f, "web", &f.v1)).unwrap_err();
    assert!(matches!(err, RollbackError::CommitFailed { .. }), "{err:?}");
    assert!(err.to_string().contains("rejected by policy"), "{err}");
    assert_eq!(git(f.repo.path(), &["rev-parse", "HEAD"]), head);
    assert_eq!(git(f.repo.path(), &["status", "--porcelain", "--untracked-files=all"]), "", "HEAD's content is back");
    assert_eq!(read(&f, "apps/web/a.yaml").unwrap(), configmap("a", "3"));
}
