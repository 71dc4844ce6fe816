//! Signed commits, against real SSH signatures made by `git commit -S`
//! with `gpg.format=ssh` and verified against an `allowed_signers` file.

mod support;

use std::path::Path;
use std::process::Command;

use gitgate::source::GitSource;
use gitgate::source::signature::{SignatureError, Signers, verify_commit, verify_range};
use support::*;

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
    use gitgate::desired::tracker::{Synced, TrackError as SyncError, Tracker};
    use gitgate::render::{RenderOptions, Renderer};
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
    assert_eq!(tr.track_once().await.unwrap(), Synced::Updated(oid(&signed)));

    repo.write("prod/cm.yaml", &configmap("prod", "2"));
    let unsigned = repo.commit("unsigned change");
    let err = tr.track_once().await.unwrap_err();
    assert!(matches!(err, SyncError::Unsigned { .. }), "{err}");
    let chain = gitgate::error_chain(&err);
    assert!(chain.contains(&unsigned) && chain.contains("not signed") && chain.contains("\"prod\""), "{chain}");
    let refused = tr.refused().expect("the refused head is reported");
    assert_eq!((refused.head.as_str(), refused.commit.as_str()), (unsigned.as_str(), unsigned.as_str()));
    assert_eq!(refused.in_force, signed);
    assert_eq!(tr.current().unwrap().commit(), oid(&signed), "the signed commit stays in force");

    // A signed commit on top does not launder the unsigned one below it.
    repo.write("prod/cm.yaml", &configmap("prod", "3"));
    signed_commit(&repo, &alice, "signed on top");
    assert!(tr.track_once().await.is_err());
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
    // `serve --gpg-keyring FILE`: an exported public keyring, imported into
    // a private home; its keys may sign, others may not.
    let exported = home.path().join("keyring.asc");
    std::fs::write(&exported, gpg(&["--armor", "--export", &fpr])).unwrap();
    let from_file = Signers::from_files(None, Some(&exported)).unwrap();
    assert!(from_file.gpg_fingerprints.contains(&fpr.to_uppercase()));
    assert_eq!(verify_commit(&src.repo(), oid(&c), &from_file).unwrap().signer, fpr);
    let empty = home.path().join("empty.asc");
    std::fs::write(&empty, "").unwrap();
    assert!(Signers::from_files(None, Some(&empty)).is_err(), "a keyring with no key is a start-up error");
    let other = Signers { gpg_fingerprints: vec!["0".repeat(40)], ..allowed };
    assert!(matches!(verify_commit(&src.repo(), oid(&c), &other), Err(SignatureError::Rejected { .. })));
}

// ---- enforcement by the tracker (`serve --allowed-signers`) ----

mod enforce {
    use super::*;
    use gitgate::audit::SyncRecorder;
    use gitgate::audit::record::{Entry, EventKind, Outcome};
    use gitgate::desired::tracker::{Signing, Synced, TrackError as SyncError, Tracker};
    use gitgate::render::{RenderOptions, Renderer};
    use std::sync::{Arc, Mutex};

    #[derive(Default)]
    struct Recorded(Mutex<Vec<Entry>>);
    impl SyncRecorder for Recorded {
        fn record(&self, entry: &Entry) {
            self.0.lock().unwrap().push(entry.clone());
        }
    }

    pub struct Setup {
        pub repo: Repo,
        pub keys: tempfile::TempDir,
        pub alice: std::path::PathBuf,
        pub mallory: std::path::PathBuf,
        pub allowed: std::path::PathBuf,
        _cache: tempfile::TempDir,
        cache: std::path::PathBuf,
    }

    impl Setup {
        pub fn new() -> Setup {
            let keys = tempfile::tempdir().unwrap();
            let (alice, alice_pub) = keygen(keys.path(), "alice");
            let (mallory, _) = keygen(keys.path(), "mallory");
            let allowed = keys.path().join("allowed_signers");
            std::fs::write(&allowed, format!("alice@example.com {alice_pub}\n")).unwrap();
            let (t, cache) = cache_dir();
            Setup { repo: Repo::new(), keys, alice, mallory, allowed, _cache: t, cache }
        }

        fn tracker(&self, require_all: bool) -> (Tracker, Arc<Recorded>) {
            let src = Arc::new(GitSource::open(&self.repo.url(), &self.cache).unwrap());
            let signers = Signers::from_files(Some(self.allowed.clone()), None).unwrap();
            let audit = Arc::new(Recorded::default());
            let tr = Tracker::new(src, "main", Arc::new(Renderer::new(RenderOptions::default())))
                .with_signing(Signing::new(signers, require_all))
                .with_audit(audit.clone());
            (tr, audit)
        }

        /// `git` with alice's (or another) SSH signing key.
        fn signed_git(&self, key: &Path, args: &[&str]) -> String {
            let signing = format!("user.signingkey={}", key.display());
            let mut all = vec!["-c", "gpg.format=ssh", "-c", signing.as_str()];
            all.extend_from_slice(args);
            git(self.repo.path(), &all);
            git(self.repo.path(), &["rev-parse", "HEAD"])
        }
    }

    const SIGNED_APP: &str =
        "apps:\n  - {name: prod, path: prod, requireSigned: true, destination: {namespace: prod}}\n";
    const PLAIN_APP: &str = "apps:\n  - {name: prod, path: prod, destination: {namespace: prod}}\n";

    fn refusals(audit: &Recorded) -> Vec<Entry> {
        audit.0.lock().unwrap().iter().filter(|e| e.event == EventKind::UnsignedCommitRefused).cloned().collect()
    }

    #[tokio::test]
    async fn an_unsigned_commit_is_refused_named_and_audited_once() {
        let s = Setup::new();
        s.repo.write("gitgate.yaml", SIGNED_APP).write("prod/cm.yaml", &configmap("prod", "1"));
        let good = signed_commit(&s.repo, &s.alice, "signed");
        let (tr, audit) = s.tracker(false);
        assert_eq!(tr.track_once().await.unwrap(), Synced::Updated(oid(&good)));

        s.repo.write("prod/cm.yaml", &configmap("prod", "2"));
        let bad = s.repo.commit("unsigned change");
        assert!(matches!(tr.track_once().await, Err(SyncError::Unsigned { .. })));
        assert!(matches!(tr.track_once().await, Err(SyncError::Unsigned { .. })), "refused again on the next poll");
        assert_eq!(tr.current().unwrap().commit(), oid(&good), "the last good commit stays in force");
        let r = tr.refused().unwrap();
        assert_eq!(r.commit, bad);
        assert!(r.reason.contains("is not signed"), "{}", r.reason);
        assert!(r.message().contains(&bad[..7]) && r.message().contains(&good[..7]), "{}", r.message());
        let recorded = refusals(&audit);
        assert_eq!(recorded.len(), 1, "one audit record per refused head, not per poll");
        assert_eq!(recorded[0].decision, Outcome::Refused);
        assert_eq!(recorded[0].app, "prod");
        let commit = recorded[0].commit.as_ref().unwrap();
        assert_eq!((commit.id.as_str(), commit.subject.as_str()), (bad.as_str(), "unsigned change"));
        assert!(recorded[0].reasons.iter().any(|r| r.contains("not signed")), "{:?}", recorded[0].reasons);

        // Git going back to the commit in force clears the refusal.
        git(s.repo.path(), &["reset", "-q", "--hard", &good]);
        assert_eq!(tr.track_once().await.unwrap(), Synced::Unchanged(oid(&good)));
        assert!(tr.refused().is_none());
    }

    #[tokio::test]
    async fn a_refusal_is_recorded_once_by_the_leader_even_when_it_leads_later() {
        use std::sync::atomic::{AtomicBool, Ordering};
        let s = Setup::new();
        s.repo.write("gitgate.yaml", SIGNED_APP).write("prod/cm.yaml", &configmap("prod", "1"));
        signed_commit(&s.repo, &s.alice, "signed");
        let (tr, audit) = s.tracker(false);
        let leading = Arc::new(AtomicBool::new(false));
        let flag = leading.clone();
        tr.record_only_when(Arc::new(move || flag.load(Ordering::SeqCst)));
        tr.track_once().await.unwrap();
        s.repo.write("prod/cm.yaml", &configmap("prod", "2"));
        s.repo.commit("unsigned change");
        assert!(tr.track_once().await.is_err());
        assert!(refusals(&audit).is_empty(), "a follower does not record");
        assert!(tr.refused().is_some(), "but reports it");
        leading.store(true, Ordering::SeqCst);
        assert!(tr.track_once().await.is_err());
        assert!(tr.track_once().await.is_err());
        assert_eq!(refusals(&audit).len(), 1, "recorded once it leads, once");
    }

    #[tokio::test]
    async fn a_commit_signed_by_a_key_not_in_allowed_signers_is_refused() {
        // CWE-347 (improper verification of a cryptographic signature): a
        // valid signature by a key nobody allowed is not a signature.
        let s = Setup::new();
        s.repo.write("gitgate.yaml", SIGNED_APP).write("prod/cm.yaml", &configmap("prod", "1"));
        let good = signed_commit(&s.repo, &s.alice, "signed");
        let (tr, _audit) = s.tracker(false);
        tr.track_once().await.unwrap();
        s.repo.write("prod/cm.yaml", &configmap("prod", "evil"));
        let foreign = signed_commit(&s.repo, &s.mallory, "signed by mallory");
        let err = tr.track_once().await.unwrap_err();
        let chain = gitgate::error_chain(&err);
        assert!(chain.contains(&foreign) && chain.contains("not in allowed_signers"), "{chain}");
        assert_eq!(tr.current().unwrap().commit(), oid(&good));
        assert_eq!(tr.refused().unwrap().commit, foreign);
    }

    #[tokio::test]
    async fn an_unsigned_commit_that_removes_require_signed_is_refused_too() {
        // CWE-807 (reliance on untrusted inputs in a security decision):
        // whether to check comes from the commit in force, never from the
        // commit being checked.
        let s = Setup::new();
        s.repo.write("gitgate.yaml", SIGNED_APP).write("prod/cm.yaml", &configmap("prod", "1"));
        let good = signed_commit(&s.repo, &s.alice, "signed");
        let (tr, audit) = s.tracker(false);
        tr.track_once().await.unwrap();
        s.repo.write("gitgate.yaml", PLAIN_APP).write("prod/cm.yaml", &configmap("prod", "evil"));
        let bad = s.repo.commit("drop requireSigned");
        let err = tr.track_once().await.unwrap_err();
        assert!(gitgate::error_chain(&err).contains(&bad), "{}", gitgate::error_chain(&err));
        assert_eq!(tr.current().unwrap().commit(), oid(&good));
        assert_eq!(refusals(&audit).len(), 1);

        // A restart does not forget: a new tracker finds the newest verified
        // commit below the head, reads the requirement there, refuses the
        // head and puts that commit in force.
        let (fresh, _) = s.tracker(false);
        assert!(matches!(fresh.track_once().await, Err(SyncError::Unsigned { .. })));
        assert_eq!(fresh.current().map(|c| c.commit()), Some(oid(&good)));
        assert_eq!(fresh.refused().unwrap().in_force, good);
    }

    #[tokio::test]
    async fn a_force_push_must_verify_back_to_a_shared_ancestor() {
        let s = Setup::new();
        s.repo.write("gitgate.yaml", SIGNED_APP).write("prod/cm.yaml", &configmap("prod", "1"));
        let base = signed_commit(&s.repo, &s.alice, "base");
        s.repo.write("prod/cm.yaml", &configmap("prod", "2"));
        let synced = signed_commit(&s.repo, &s.alice, "second");
        let (tr, _) = s.tracker(false);
        assert_eq!(tr.track_once().await.unwrap(), Synced::Updated(oid(&synced)));

        // Rewrite: back to base, an unsigned commit, then a signed one on top.
        git(s.repo.path(), &["reset", "-q", "--hard", &base]);
        s.repo.write("prod/cm.yaml", &configmap("prod", "evil"));
        let unsigned = s.repo.commit("rewritten, unsigned");
        s.repo.write("prod/cm.yaml", &configmap("prod", "evil2"));
        signed_commit(&s.repo, &s.alice, "signed on top of the rewrite");
        let err = tr.track_once().await.unwrap_err();
        let chain = gitgate::error_chain(&err);
        assert!(chain.contains(&unsigned), "{chain}");
        let r = tr.refused().unwrap();
        assert!(r.reason.contains("history was rewritten"), "{}", r.reason);
        assert_eq!(tr.current().unwrap().commit(), oid(&synced));

        // A rewrite whose every new commit verifies back to base is synced.
        git(s.repo.path(), &["reset", "-q", "--hard", &base]);
        s.repo.write("prod/cm.yaml", &configmap("prod", "3"));
        let rewritten = signed_commit(&s.repo, &s.alice, "rewritten, signed");
        assert_eq!(tr.track_once().await.unwrap(), Synced::Updated(oid(&rewritten)));

        // An orphan history (nothing shared) must verify to its root.
        git(s.repo.path(), &["checkout", "-q", "--orphan", "other"]);
        s.repo.write("prod/cm.yaml", &configmap("prod", "4"));
        s.repo.commit("orphan root, unsigned");
        let top = signed_commit(&s.repo, &s.alice, "orphan top, signed");
        git(s.repo.path(), &["branch", "-q", "-f", "main", &top]);
        git(s.repo.path(), &["checkout", "-q", "main"]);
        assert!(tr.track_once().await.is_err());
        assert_eq!(tr.current().unwrap().commit(), oid(&rewritten));
    }

    #[tokio::test]
    async fn a_signed_merge_of_an_unsigned_parent_is_refused() {
        let s = Setup::new();
        s.repo.write("gitgate.yaml", SIGNED_APP).write("prod/cm.yaml", &configmap("prod", "1"));
        let good = signed_commit(&s.repo, &s.alice, "signed");
        let (tr, _) = s.tracker(false);
        tr.track_once().await.unwrap();
        git(s.repo.path(), &["checkout", "-q", "-b", "feature"]);
        s.repo.write("prod/extra.yaml", &configmap("extra", "x"));
        let side = s.repo.commit("unsigned side commit");
        git(s.repo.path(), &["checkout", "-q", "main"]);
        s.repo.write("prod/cm.yaml", &configmap("prod", "2"));
        signed_commit(&s.repo, &s.alice, "signed on main");
        let merge = s.signed_git(&s.alice, &["merge", "-q", "--no-ff", "-S", "-m", "signed merge", "feature"]);
        assert_eq!(git(s.repo.path(), &["rev-list", "--parents", "-n1", "HEAD"]).split(' ').count(), 3);
        let err = tr.track_once().await.unwrap_err();
        let chain = gitgate::error_chain(&err);
        assert!(chain.contains(&side) && chain.contains(&merge), "{chain}");
        assert_eq!(tr.current().unwrap().commit(), oid(&good));

        // Merging only signed commits is fine.
        git(s.repo.path(), &["reset", "-q", "--hard", &good]);
        git(s.repo.path(), &["branch", "-q", "-D", "feature"]);
        git(s.repo.path(), &["checkout", "-q", "-b", "feature2"]);
        s.repo.write("prod/extra.yaml", &configmap("extra", "y"));
        signed_commit(&s.repo, &s.alice, "signed side commit");
        git(s.repo.path(), &["checkout", "-q", "main"]);
        let merge = s.signed_git(&s.alice, &["merge", "-q", "--no-ff", "-S", "-m", "signed merge", "feature2"]);
        assert_eq!(tr.track_once().await.unwrap(), Synced::Updated(oid(&merge)));
    }

    #[tokio::test]
    async fn require_signed_applies_to_every_app_and_git_signed_follows_each_objects_commit() {
        let s = Setup::new();
        s.repo.write("gitgate.yaml", PLAIN_APP).write("prod/a.yaml", &configmap("a", "1"));
        s.repo.commit("unsigned history before signing began");
        // Without --require-signed an unsigned head syncs.
        let (plain, _) = s.tracker(false);
        plain.track_once().await.unwrap();
        let (strict, _) = s.tracker(true);
        let err = strict.track_once().await.unwrap_err();
        assert!(gitgate::error_chain(&err).contains("--require-signed"), "{}", gitgate::error_chain(&err));
        assert!(strict.current().is_none(), "nothing verifies: nothing is in force");

        // git.signed: true exactly for objects whose commit verified.
        let unsigned = git(s.repo.path(), &["rev-parse", "HEAD"]);
        s.repo.write("prod/b.yaml", &configmap("b", "1"));
        let signed = signed_commit(&s.repo, &s.alice, "b, signed");
        s.repo.write("prod/c.yaml", &configmap("c", "1"));
        let foreign = signed_commit(&s.repo, &s.mallory, "c, signed by mallory");
        plain.track_once().await.unwrap();
        let set = plain.current().unwrap();
        let marked = plain.signed_commits(&set);
        assert!(marked.contains(&oid(&signed)));
        assert!(!marked.contains(&oid(&unsigned)) && !marked.contains(&oid(&foreign)));
        let _ = &s.keys;
    }
}
