//! The source box against real repositories: fetch over file:// and over
//! git:// (a real `git daemon` on loopback), resolve branches, tags and
//! commits, read from a commit's tree, and refuse what would escape it.

mod support;

use gitgate::source::{GitSource, ReadLimits, RepoPath, SourceError};
use support::*;

fn p(s: &str) -> RepoPath {
    RepoPath::parse(s).unwrap()
}

#[test]
fn fetches_over_file_url_and_resolves_branch_tag_and_commit() {
    let repo = Repo::new();
    repo.write("a.txt", "one\n");
    let c1 = repo.commit("first");
    git(repo.path(), &["tag", "v1"]);
    repo.write("a.txt", "two\n");
    let c2 = repo.commit("second");

    let (_t, cache) = cache_dir();
    let src = GitSource::open(&repo.url(), &cache).unwrap();
    src.fetch().unwrap();
    assert_eq!(src.resolve("main").unwrap(), oid(&c2));
    assert_eq!(src.resolve("HEAD").unwrap(), oid(&c2));
    assert_eq!(src.resolve("v1").unwrap(), oid(&c1));
    assert_eq!(src.resolve(&c1).unwrap(), oid(&c1));
    assert!(matches!(src.resolve("no-such-branch"), Err(SourceError::Resolve { .. })));

    let old = src.reader(oid(&c1), ReadLimits::default()).unwrap();
    assert_eq!(old.read(&p("a.txt")).unwrap(), b"one\n");
    let new = src.reader(oid(&c2), ReadLimits::default()).unwrap();
    assert_eq!(new.read(&p("a.txt")).unwrap(), b"two\n");

    // The cache has no work tree: it is a bare repository.
    assert!(cache.join("HEAD").is_file() && !cache.join(".git").exists());

    // A second fetch picks up a new commit; the cache is reused.
    repo.write("a.txt", "three\n");
    let c3 = repo.commit("third");
    let again = GitSource::open(&repo.url(), &cache).unwrap();
    again.fetch().unwrap();
    assert_eq!(again.resolve("main").unwrap(), oid(&c3));
}

#[test]
fn fetches_a_local_path_as_file_url() {
    let repo = Repo::new();
    repo.write("x.yaml", "a: 1\n");
    let c = repo.commit("x");
    let (_t, cache) = cache_dir();
    let src = GitSource::open(repo.path().to_str().unwrap(), &cache).unwrap();
    assert!(src.url().starts_with("file://"));
    src.fetch().unwrap();
    assert_eq!(src.resolve("main").unwrap(), oid(&c));
}

#[test]
fn fetches_over_git_daemon_on_loopback() {
    let base = tempfile::tempdir().unwrap();
    let repo_dir = base.path().join("team.git");
    let work = Repo::new();
    work.write("apps/web/cm.yaml", &configmap("web", "v1"));
    let c = work.commit("web");
    git(base.path(), &["clone", "-q", "--bare", work.path().to_str().unwrap(), repo_dir.to_str().unwrap()]);

    let daemon = Daemon::start(base.path());
    let url = format!("git://127.0.0.1:{}/team.git", daemon.port);
    let (_t, cache) = cache_dir();
    let src = GitSource::open(&url, &cache).unwrap();
    src.fetch().unwrap();
    assert_eq!(src.resolve("main").unwrap(), oid(&c));
    let r = src.reader(oid(&c), ReadLimits::default()).unwrap();
    assert!(String::from_utf8(r.read(&p("apps/web/cm.yaml")).unwrap()).unwrap().contains("name: web"));
}

#[tokio::test]
async fn fetch_async_runs_on_the_blocking_pool() {
    let repo = Repo::new();
    repo.write("a", "a");
    let c = repo.commit("a");
    let (_t, cache) = cache_dir();
    let src = std::sync::Arc::new(GitSource::open(&repo.url(), &cache).unwrap());
    src.fetch_async().await.unwrap();
    assert_eq!(src.resolve("main").unwrap(), oid(&c));
}

#[test]
fn unreachable_remote_is_a_fetch_error_naming_the_url() {
    let (_t, cache) = cache_dir();
    let src = GitSource::open("file:///nonexistent/gitgate-test-repo", &cache).unwrap();
    let err = src.fetch().unwrap_err();
    assert!(err.to_string().contains("/nonexistent/gitgate-test-repo"), "{err}");
}

fn reader_for(repo: &Repo, limits: ReadLimits) -> (tempfile::TempDir, gitgate::source::TreeReader) {
    let c = repo.commit("snapshot");
    let (t, cache) = cache_dir();
    let src = GitSource::open(&repo.url(), &cache).unwrap();
    src.fetch().unwrap();
    (t, src.reader(oid(&c), limits).unwrap())
}

// --- safety regressions (CVE-2022-24904 / -31036 / Flux CVE-2022-24877 classes)

#[test]
fn symlink_to_an_absolute_path_is_refused_naming_the_link() {
    let repo = Repo::new();
    repo.symlink("apps/web/passwd.yaml", "/etc/passwd");
    let (_t, r) = reader_for(&repo, ReadLimits::default());
    let err = r.read(&p("apps/web/passwd.yaml")).unwrap_err();
    assert!(matches!(err, SourceError::SymlinkEscape { .. }), "{err}");
    assert!(err.to_string().contains("apps/web/passwd.yaml"), "{err}");
    // A recursive walk refuses it too, rather than skipping it silently.
    assert!(r.walk(&p("apps")).is_err());
}

#[test]
fn symlink_climbing_out_of_the_repo_is_refused() {
    let repo = Repo::new();
    repo.symlink("apps/web/x.yaml", "../../../../../../etc/passwd");
    let (_t, r) = reader_for(&repo, ReadLimits::default());
    let err = r.read(&p("apps/web/x.yaml")).unwrap_err();
    assert!(matches!(err, SourceError::SymlinkEscape { .. }), "{err}");
    assert!(err.to_string().contains("apps/web/x.yaml"), "{err}");
}

#[test]
fn in_tree_symlinks_are_followed_and_loops_refused() {
    let repo = Repo::new();
    repo.write("base/cm.yaml", &configmap("base", "1"));
    repo.symlink("apps/web/cm.yaml", "../../base/cm.yaml");
    repo.symlink("loop/a", "b");
    repo.symlink("loop/b", "a");
    repo.symlink("apps/linkdir", "../base");
    let (_t, r) = reader_for(&repo, ReadLimits::default());
    assert!(String::from_utf8(r.read(&p("apps/web/cm.yaml")).unwrap()).unwrap().contains("base"));
    assert!(matches!(r.read(&p("loop/a")), Err(SourceError::SymlinkLoop { .. })));
    // Reading through a symlinked directory works; walking into one does not.
    assert!(r.read(&p("apps/linkdir/cm.yaml")).is_ok());
    let err = r.walk(&p("apps")).unwrap_err();
    assert!(matches!(err, SourceError::SymlinkedDirectory { .. }), "{err}");
}

#[test]
fn dotdot_and_absolute_paths_are_refused() {
    assert!(RepoPath::parse("../etc/passwd").unwrap_err().to_string().contains("`..`"));
    assert!(RepoPath::parse("apps/../../x").is_err());
    assert!(RepoPath::parse("/etc/passwd").unwrap_err().to_string().contains("absolute"));
    let err = p("apps/web").join("../../../secret").unwrap_err();
    assert!(err.to_string().contains("leaves the repository"), "{err}");
}

#[test]
fn a_file_over_the_size_limit_is_refused_naming_it() {
    let repo = Repo::new();
    repo.write_bytes("apps/big.yaml", &vec![b'#'; 64 * 1024]);
    repo.write("apps/small.yaml", "a: 1\n");
    let limits = ReadLimits { max_file_bytes: 16 * 1024, ..ReadLimits::default() };
    let (_t, r) = reader_for(&repo, limits);
    assert!(r.read(&p("apps/small.yaml")).is_ok());
    let err = r.read(&p("apps/big.yaml")).unwrap_err();
    assert!(matches!(err, SourceError::TooLarge { size: 65536, .. }), "{err}");
    assert!(err.to_string().contains("apps/big.yaml"), "{err}");
}

#[test]
fn missing_files_and_directories_are_named() {
    let repo = Repo::new();
    repo.write("a/b.yaml", "x: 1\n");
    let (_t, r) = reader_for(&repo, ReadLimits::default());
    assert!(matches!(r.read(&p("a/nope.yaml")), Err(SourceError::NotFound { path }) if path == "a/nope.yaml"));
    assert!(matches!(r.read(&p("a")), Err(SourceError::NotAFile { .. })));
    assert_eq!(r.walk(&p("a")).unwrap(), vec![p("a/b.yaml")]);
}

/// A tree object with one entry `mode name` → `id`, written with
/// `--literally` (git's own tools refuse names such as `..`).
fn raw_tree(repo: &Repo, mode: &str, name: &str, id: &str) -> String {
    let mut bytes = format!("{mode} {name}\0").into_bytes();
    bytes.extend((0..id.len()).step_by(2).map(|i| u8::from_str_radix(&id[i..i + 2], 16).unwrap()));
    let file = repo.path().join(".git/raw-tree");
    std::fs::write(&file, bytes).unwrap();
    git(repo.path(), &["hash-object", "-t", "tree", "--literally", "-w", file.to_str().unwrap()])
}

#[test]
fn a_tree_entry_named_dotdot_is_refused_by_walk() {
    let repo = Repo::new();
    repo.write("x.yaml", "x: 1\n");
    repo.commit("first");
    let blob = git(repo.path(), &["rev-parse", "HEAD:x.yaml"]);
    // apps/../../evil.yaml, as a hostile repository can hold it.
    let evil = raw_tree(&repo, "100644", "evil.yaml", &blob);
    let inner = raw_tree(&repo, "40000", "..", &evil);
    let apps = raw_tree(&repo, "40000", "..", &inner);
    let root = raw_tree(&repo, "40000", "apps", &apps);
    let c = git(repo.path(), &["commit-tree", &root, "-m", "hostile"]);
    git(repo.path(), &["update-ref", "refs/heads/main", &c]);
    let (_t, cache) = cache_dir();
    let src = GitSource::open(&repo.url(), &cache).unwrap();
    src.fetch().unwrap();
    let r = src.reader(oid(&c), ReadLimits::default()).unwrap();
    let walked = r.walk(&p("apps"));
    assert!(
        matches!(walked, Err(SourceError::InvalidPath { .. })),
        "a `..` entry must be refused, got {:?}",
        walked.map(|v| v.iter().map(ToString::to_string).collect::<Vec<_>>())
    );
    assert!(matches!(r.list(&p("apps")), Err(SourceError::InvalidPath { .. })));
}
