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

#[test]
fn allowed_signers_options_are_honoured_natively() {
    let keys = tempfile::tempdir().unwrap();
    let (alice, alice_pub) = keygen(keys.path(), "alice");
    let repo = Repo::new();
    repo.write("a.yaml", "a: 1\n");
    let c1 = signed_commit(&repo, &alice, "signed by alice");
    let (_t, cache) = cache_dir();
    let src = GitSource::open(&repo.url(), &cache).unwrap();
    src.fetch().unwrap();
    let r = src.repo();
    let check = |line: String| {
        let allowed = keys.path().join("allowed_signers");
        std::fs::write(&allowed, line).unwrap();
        verify_commit(&r, oid(&c1), &Signers { ssh_allowed_signers: Some(allowed), ..Default::default() })
    };
    // no options; comments and blank lines are skipped; several principals
    let v = check(format!("# team keys\n\nalice@example.com,ops@example.com {alice_pub}\n")).unwrap();
    assert_eq!(v.signer, "alice@example.com,ops@example.com");
    // a key allowed only for another namespace (e.g. file signing)
    let err = check(format!("alice@example.com namespaces=\"file\" {alice_pub}\n")).unwrap_err();
    assert!(err.to_string().contains("namespaces"), "{err}");
    // a key whose validity ended, and one not valid yet
    let err = check(format!("alice@example.com valid-before=\"20200101\" {alice_pub}\n")).unwrap_err();
    assert!(err.to_string().contains("valid-after/valid-before"), "{err}");
    let err = check(format!("alice@example.com valid-after=\"29990101\" {alice_pub}\n")).unwrap_err();
    assert!(err.to_string().contains("valid-after/valid-before"), "{err}");
    assert!(check(format!("alice@example.com valid-after=\"20200101\",namespaces=\"git,file\" {alice_pub}\n")).is_ok());
    // a certificate authority line is not a signer key
    assert!(check(format!("*@example.com cert-authority {alice_pub}\n")).is_err());
}

#[tokio::test]
async fn an_app_requiring_signatures_is_not_synced_from_an_unsigned_commit() {
    use gitgate::render::{RenderOptions, Renderer};
    use gitgate::source::poll::{SyncError, Synced, Tracker};
    use std::sync::Arc;

    let keys = tempfile::tempdir().unwrap();
    let (alice, alice_pub) = keygen(keys.path(), "alice");
    let allowed = keys.path().join("allowed_signers");
    std::fs::write(&allowed, format!("alice@example.com namespaces=\"git\" {alice_pub}\n")).unwrap();

    let repo = Repo::new();
    repo.write(
        "gitgate.yaml",
        "apps:\n  - {name: prod, path: prod, requireSigned: true, destination: {namespace: prod}}\n",
    );
    repo.write("prod/cm.yaml", &configmap("prod", "1"));
    let signed = signed_commit(&repo, &alice, "signed");

    let (_t, cache) = cache_dir();
    let src = Arc::new(GitSource::open(&repo.url(), &cache).unwrap());
    let signers = Signers { ssh_allowed_signers: Some(allowed), ..Default::default() };
    let tr = Tracker::new(src, "main", Arc::new(Renderer::new(RenderOptions::default()))).with_signers(signers);
    assert_eq!(tr.sync_once().await.unwrap(), Synced::Updated(oid(&signed)));

    repo.write("prod/cm.yaml", &configmap("prod", "2"));
    let unsigned = repo.commit("unsigned change");
    let err = tr.sync_once().await.unwrap_err();
    assert!(matches!(err, SyncError::Unsigned { .. }), "{err}");
    let chain = gitgate::error_chain(&err);
    assert!(chain.contains(&unsigned) && chain.contains("not signed") && chain.contains("\"prod\""), "{chain}");
    assert_eq!(tr.current().unwrap().commit(), oid(&signed), "the signed commit stays in force");

    // A signed commit on top does not launder the unsigned one below it.
    repo.write("prod/cm.yaml", &configmap("prod", "3"));
    signed_commit(&repo, &alice, "signed on top");
    assert!(tr.sync_once().await.is_err());
    assert_eq!(tr.current().unwrap().commit(), oid(&signed));
}

#[test]
fn gpg_signed_commits_verify_where_gpg_exists() {
    if !gitgate::source::signature::gpg_available() {
        eprintln!("SKIPPED: no `gpg` binary on PATH; OpenPGP verification is not exercised");
        return;
    }
    let home = tempfile::tempdir().unwrap();
    let gpg = |args: &[&str]| {
        let out = Command::new("gpg")
            .arg("--homedir")
            .arg(home.path())
            .args(["--batch", "--yes"])
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "gpg {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    gpg(&["--passphrase", "", "--quick-gen-key", "Test <test@example.com>", "ed25519", "sign", "never"]);
    let listing = gpg(&["--with-colons", "--list-keys", "test@example.com"]);
    let fpr = listing
        .lines()
        .find_map(|l| l.strip_prefix("fpr:"))
        .and_then(|l| l.split(':').find(|f| f.len() == 40))
        .unwrap()
        .to_string();

    let repo = Repo::new();
    repo.write("a", "1");
    git(repo.path(), &["add", "-A"]);
    let out = Command::new("git")
        .current_dir(repo.path())
        .env("GNUPGHOME", home.path())
        .args(["-c", "user.name=Test", "-c", "user.email=test@example.com", "commit", "-q", "-S", "-m", "gpg signed"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let c = git(repo.path(), &["rev-parse", "HEAD"]);

    let (_t, cache) = cache_dir();
    let src = GitSource::open(&repo.url(), &cache).unwrap();
    src.fetch().unwrap();
    let allowed = Signers {
        gpg_home: Some(home.path().to_path_buf()),
        gpg_fingerprints: vec![fpr.clone()],
        ..Default::default()
    };
    let v = verify_commit(&src.repo(), oid(&c), &allowed).unwrap();
    assert_eq!((v.format, v.signer.as_str()), ("gpg", fpr.as_str()));
    let other = Signers { gpg_fingerprints: vec!["0".repeat(40)], ..allowed };
    assert!(matches!(verify_commit(&src.repo(), oid(&c), &other), Err(SignatureError::Rejected { .. })));
}
