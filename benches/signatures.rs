//! Signed-commit figures (issue 15, item 2): SSH signature verification
//! (`verify_range`, what the tracker runs for each new head, with the
//! allowed_signers file read and parsed once per range) of
//! - 1,000 new commits (a first sync, or a long-lived branch merged) ≤ 1 s;
//! - a push of one commit ≤ 5 ms.
//!
//! The commits are real: `git commit-tree -S` with `gpg.format=ssh` and an
//! ed25519 key made by `ssh-keygen`, fetched into gitgate's bare cache.
//!
//! `cargo bench --bench signatures`

use std::hint::black_box;
use std::path::Path;
use std::process::Command;

use criterion::{Criterion, criterion_group};
use gitgate::source::GitSource;
use gitgate::source::signature::{Signers, verify_range};

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args(["-c", "user.name=bench", "-c", "user.email=bench@localhost"])
        .args(args)
        .current_dir(dir)
        .output()
        .expect("git");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A repository of `n` signed commits on `main`; (work dir, commit ids
/// oldest first, allowed_signers).
fn signed_history(n: usize) -> (tempfile::TempDir, Vec<String>, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("key");
    assert!(
        Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C", "bench", "-f"])
            .arg(&key)
            .status()
            .unwrap()
            .success()
    );
    let public = std::fs::read_to_string(key.with_extension("pub")).unwrap();
    let allowed = dir.path().join("allowed_signers");
    std::fs::write(&allowed, format!("bench@localhost {}", public.trim())).unwrap();
    let repo = dir.path().join("repo");
    std::fs::create_dir(&repo).unwrap();
    git(&repo, &["init", "-q", "-b", "main"]);
    std::fs::write(repo.join("a.yaml"), "a: 1\n").unwrap();
    git(&repo, &["add", "-A"]);
    let tree = git(&repo, &["write-tree"]);
    let signing = format!("user.signingkey={}", key.display());
    let mut ids: Vec<String> = Vec::with_capacity(n);
    for i in 0..n {
        let msg = format!("commit {i}");
        let mut args = vec!["-c", "gpg.format=ssh", "-c", signing.as_str(), "commit-tree", "-S", &tree, "-m", &msg];
        let parent;
        if let Some(p) = ids.last() {
            parent = p.clone();
            args.extend_from_slice(&["-p", &parent]);
        }
        ids.push(git(&repo, &args));
    }
    git(&repo, &["update-ref", "refs/heads/main", ids.last().unwrap()]);
    (dir, ids, allowed)
}

fn bench(c: &mut Criterion) {
    let (dir, ids, allowed) = signed_history(1001);
    let url = format!("file://{}", dir.path().join("repo").display());
    let source = GitSource::open(&url, &dir.path().join("cache.git")).unwrap();
    source.fetch().unwrap();
    let repo = source.repo();
    let signers = Signers::from_files(Some(allowed), None).unwrap();
    let oid = |s: &str| gix::ObjectId::from_hex(s.as_bytes()).unwrap();
    let (root, head, parent) = (oid(&ids[0]), oid(ids.last().unwrap()), oid(&ids[ids.len() - 2]));
    // Sanity: every commit verifies, and the ranges are the sizes claimed.
    assert_eq!(verify_range(&repo, Some(root), head, &signers, 10_000).unwrap().len(), 1000);
    assert_eq!(verify_range(&repo, Some(parent), head, &signers, 10_000).unwrap().len(), 1);

    let mut g = c.benchmark_group("signatures");
    g.sample_size(10);
    g.bench_function("verify 1,000 new commits", |b| {
        b.iter(|| black_box(verify_range(&repo, Some(root), head, &signers, 10_000).unwrap()))
    });
    g.finish();
    c.bench_function("signatures/verify a push of one commit", |b| {
        b.iter(|| black_box(verify_range(&repo, Some(parent), head, &signers, 10_000).unwrap()))
    });
}

criterion_group!(benches, bench);

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
}
