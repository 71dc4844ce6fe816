//! Signed commits, against real SSH signatures made by `git commit -S`
//! with `gpg.format=ssh` and verified against an `allowed_signers` file.

#[path = "source_common.rs"]
mod support;

use std::path::Path;
use std::process::Command;

use gitgate::source::GitSource;
use gitgate::source::signature::{SignatureError, Signers, verify_commit, verify_range};
use support::*;

fn keygen(dir: &Path, name: &str) -> (std::path::PathBuf, String) {
    let key = dir.join(name);
    let st = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", name, "-f"])
        .arg(&key)
        .status()
        .unwrap();
    assert!(st.success());
    let public = std::fs::read_to_string(key.with_extension("pub")).unwrap();
    (key, public.trim().to_string())
}

fn signed_commit(repo: &Repo, key: &Path, msg: &str) -> String {
    git(repo.path(), &["add", "-A"]);
    git(
        repo.path(),
        &[
            "-c",
            "gpg.format=ssh",
            "-c",
            &format!("user.signingkey={}", key.display()),
            "commit",
            "-q",
            "-S",
            "--allow-empty",
            "-m",
            msg,
        ],
    );
    git(repo.path(), &["rev-parse", "HEAD"])
}

#[test]
fn ssh_signed_commits_verify_and_unsigned_or_foreign_ones_do_not() {
    let keys = tempfile::tempdir().unwrap();
    let (alice, alice_pub) = keygen(keys.path(), "alice");
    let (mallory, _) = keygen(keys.path(), "mallory");
    let allowed = keys.path().join("allowed_signers");
    std::fs::write(&allowed, format!("alice@example.com namespaces=\"git\" {alice_pub}\n")).unwrap();

    let repo = Repo::new();
    repo.write("a.yaml", "a: 1\n");
    let c1 = signed_commit(&repo, &alice, "signed by alice");
    repo.write("a.yaml", "a: 2\n");
    let c2 = signed_commit(&repo, &alice, "signed again");
    repo.write("a.yaml", "a: 3\n");
    let c3 = repo.commit("unsigned");
    repo.write("a.yaml", "a: 4\n");
    let c4 = signed_commit(&repo, &mallory, "signed by someone else");

    let (_t, cache) = cache_dir();
    let src = GitSource::open(&repo.url(), &cache).unwrap();
    src.fetch().unwrap();
    let r = src.repo();
    let signers = Signers { ssh_allowed_signers: Some(allowed.clone()), ..Default::default() };

    let v = verify_commit(&r, oid(&c1), &signers).unwrap();
    assert_eq!((v.format, v.signer.as_str()), ("ssh", "alice@example.com"));
    assert!(matches!(verify_commit(&r, oid(&c3), &signers), Err(SignatureError::Unsigned { .. })));
    let err = verify_commit(&r, oid(&c4), &signers).unwrap_err();
    assert!(matches!(err, SignatureError::Rejected { .. }), "{err}");
    assert!(err.to_string().contains(&c4), "{err}");

    // The range from the last synced commit to a new head: all signed.
    let ok = verify_range(&r, Some(oid(&c1)), oid(&c2), &signers, 100).unwrap();
    assert_eq!(ok.len(), 1);
    // A range containing the unsigned commit stops on it, naming it.
    let err = verify_range(&r, Some(oid(&c1)), oid(&c4), &signers, 100).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains(&c4) || msg.contains(&c3), "{msg}");
    // Without an allowed_signers file nothing verifies.
    let none = Signers::default();
    assert!(matches!(verify_commit(&r, oid(&c1), &none), Err(SignatureError::NoVerifier { .. })));
}
