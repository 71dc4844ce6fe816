//! Signed commits against a real kube-apiserver: `gitgate serve
//! --allowed-signers` syncs a commit signed with an allowed SSH key
//! (`git commit -S`, `gpg.format=ssh`), refuses an unsigned one and names
//! it (status API, `gitgate status`, metric, audit log), and the built-in
//! `signed-commits-production` policy denies an object from an unsigned
//! commit in a namespace labelled `environment: production` (read from the
//! cluster by gitgate's Namespace watch) while allowing a signed one.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::cluster;
use crate::support::{Repo, git};
use crate::sync::{BIN, PROJECT, app, audit_events, cm, get, serve_on, status, viewer_token, wait_synced, wait_until};

/// An ed25519 key pair and an allowed_signers file naming it.
fn signer(dir: &Path) -> (PathBuf, PathBuf) {
    let key = dir.join("alice");
    let out = std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "alice", "-f"])
        .arg(&key)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let public = std::fs::read_to_string(key.with_extension("pub")).unwrap();
    let allowed = dir.join("allowed_signers");
    std::fs::write(&allowed, format!("alice@example.com {}", public.trim())).unwrap();
    (key, allowed)
}

fn signed_commit(repo: &Repo, key: &Path, msg: &str) -> String {
    git(repo.path(), &["add", "-A"]);
    let signing = format!("user.signingkey={}", key.display());
    git(repo.path(), &["-c", "gpg.format=ssh", "-c", &signing, "commit", "-q", "-S", "-m", msg]);
    git(repo.path(), &["rev-parse", "HEAD"])
}

fn metrics(s: &crate::common::ServeProcess) -> String {
    let out = std::process::Command::new("curl")
        .args(["-sS", "--cacert"])
        .arg(&s.ca)
        .arg(format!("https://127.0.0.1:{}/metrics", s.addr.port()))
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn a_signed_commit_syncs_and_an_unsigned_one_is_refused_and_named() {
    let Some(c) = cluster::cluster("a_signed_commit_syncs_and_an_unsigned_one_is_refused_and_named") else { return };
    let ns = "e2e-signed";
    c.ensure_namespace(ns);
    let work = tempfile::tempdir().unwrap();
    let (key, allowed) = signer(work.path());
    let repo = Repo::new();
    repo.write(
        "gitgate.yaml",
        &format!("apps:\n  - {{name: vault-app, path: app, requireSigned: true, destination: {{namespace: {ns}}}}}\n"),
    );
    repo.write("app/cm.yaml", &cm("settings", 0, "signed-1"));
    let c1 = signed_commit(&repo, &key, "settings: signed");
    let s = serve_on(
        c,
        work.path(),
        &repo,
        "gitgate-e2e-signed",
        "127.0.0.1:0",
        &["--allowed-signers", allowed.to_str().unwrap()],
    );
    wait_synced(&s, "vault-app", &c1);
    let live = get(c, &["configmap", "settings", "-n", ns]).unwrap();
    assert_eq!(live["data"]["value"], "signed-1");

    // An unsigned commit: refused, named, and the signed one stays.
    repo.write("app/cm.yaml", &cm("settings", 0, "unsigned-2"));
    let c2 = repo.commit("settings: unsigned");
    let st = wait_until("the unsigned commit refused", Duration::from_secs(60), || {
        let st = status(&s);
        (st["refused"]["commit"] == c2.as_str()).then_some(st)
    });
    assert_eq!(st["refused"]["inForce"], c1, "{st:#}");
    let a = app(&st, "vault-app").unwrap();
    assert_eq!(a["sync"], "OutOfSync", "{a:#}");
    let message = a["message"].as_str().unwrap();
    assert!(message.contains(&c2[..7]) && message.contains("not signed") && message.contains(&c1[..7]), "{message}");
    std::thread::sleep(Duration::from_secs(3));
    let live = get(c, &["configmap", "settings", "-n", ns]).unwrap();
    assert_eq!(live["data"]["value"], "signed-1", "the unsigned content never reaches the cluster");
    assert_eq!(live["metadata"]["annotations"]["gitgate.dev/commit"], c1);

    // `gitgate status` says so and exits 3 (not Synced).
    let out = std::process::Command::new(BIN)
        .args(["status", "--server", &format!("https://127.0.0.1:{}", s.addr.port()), "--ca"])
        .arg(&s.ca)
        .env("GITGATE_TOKEN", viewer_token())
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(3), "{table}{}", String::from_utf8_lossy(&out.stderr));
    assert!(table.contains(&format!("refused: commit {}", &c2[..7])), "{table}");

    // The metric and one audit record naming the commit and why.
    let m = metrics(&s);
    assert!(m.lines().any(|l| l == "gitgate_commit_refused 1"), "{m}");
    assert!(m.lines().any(|l| l == "gitgate_unsigned_commits_refused_total 1"), "{m}");
    let refused: Vec<_> =
        audit_events(work.path()).into_iter().filter(|e| e["event"] == "unsignedCommitRefused").collect();
    assert_eq!(refused.len(), 1, "{refused:#?}");
    assert_eq!(refused[0]["commit"]["id"], c2);
    assert_eq!(refused[0]["decision"], "refused");
    assert!(refused[0]["reasons"][0].as_str().unwrap().contains("is not signed"), "{:#}", refused[0]);

    // A signed commit on top of the unsigned one does not launder it.
    repo.write("app/cm.yaml", &cm("settings", 0, "signed-3"));
    let c3 = signed_commit(&repo, &key, "settings: signed on top");
    wait_until("the laundering head refused", Duration::from_secs(60), || {
        (status(&s)["refused"]["head"] == c3.as_str()).then_some(())
    });
    assert_eq!(get(c, &["configmap", "settings", "-n", ns]).unwrap()["data"]["value"], "signed-1");
    s.terminate(Duration::from_secs(20));
}

#[test]
fn signed_commits_production_denies_unsigned_objects_in_production_namespaces_only() {
    let Some(c) = cluster::cluster("signed_commits_production_denies_unsigned_objects_in_production_namespaces_only")
    else {
        return;
    };
    let _serial = cluster::cluster_wide();
    let (prod, staging) = ("e2e-signed-prod", "e2e-signed-staging");
    c.ensure_namespace(prod);
    c.ensure_namespace(staging);
    c.kubectl_ok(&["label", "namespace", prod, "environment=production", "--overwrite"]);
    let work = tempfile::tempdir().unwrap();
    let (key, allowed) = signer(work.path());
    let repo = Repo::new();
    repo.write(
        "gitgate.yaml",
        &format!(
            "{PROJECT}apps:\n  - {{name: prod, project: e2e, path: prod, destination: {{namespace: {prod}}}}}\n  - {{name: staging, project: e2e, path: staging, destination: {{namespace: {staging}}}}}\n"
        ),
    );
    repo.write("prod/cm.yaml", &cm("config", 0, "signed-1"));
    repo.write("staging/cm.yaml", &cm("config", 0, "signed-1"));
    let c1 = signed_commit(&repo, &key, "both: signed");

    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let policy = Path::new(env!("CARGO_MANIFEST_DIR")).join("policies/signed-commits-production.yaml");
    let s = serve_on(
        c,
        work.path(),
        &repo,
        "gitgate-e2e-signed-prod",
        &format!("127.0.0.1:{port}"),
        &[
            "--allowed-signers",
            allowed.to_str().unwrap(),
            "--webhook-endpoint",
            &format!("https://127.0.0.1:{port}"),
            "--policies",
            policy.to_str().unwrap(),
            "--resync-interval",
            "2s",
        ],
    );
    let cleanup = || {
        for kind in ["validatingwebhookconfiguration", "mutatingwebhookconfiguration"] {
            let _ = c.kubectl(&["delete", kind, "-l", "gitgate.dev/guard=true"]);
        }
    };
    wait_synced(&s, "prod", &c1);
    wait_synced(&s, "staging", &c1);
    // The webhook decides once the apiserver has loaded it: a hand edit is
    // then denied.
    wait_until("the webhook in force", Duration::from_secs(60), || {
        let out = c.kubectl(&["-n", staging, "label", "configmap", "config", "by-hand=1"]);
        (!out.status.success()).then_some(())
    });

    // An unsigned commit: staging (no production label) syncs it; prod's
    // apply is denied by signed-commits-production, naming the commit.
    repo.write("prod/cm.yaml", &cm("config", 0, "unsigned-2"));
    repo.write("staging/cm.yaml", &cm("config", 0, "unsigned-2"));
    let c2 = repo.commit("both: unsigned");
    wait_synced(&s, "staging", &c2);
    let failed = wait_until("prod's unsigned apply denied", Duration::from_secs(60), || {
        let st = status(&s);
        let a = app(&st, "prod")?;
        let msg = a["message"].as_str().unwrap_or_default().to_owned() + &a["objects"].to_string();
        msg.contains("signed-commits-production").then_some(msg)
    });
    assert!(failed.contains(&c2) && failed.contains(&format!("namespace {prod} is production")), "{failed}");
    assert_eq!(get(c, &["configmap", "config", "-n", prod]).unwrap()["data"]["value"], "signed-1");
    assert_eq!(get(c, &["configmap", "config", "-n", staging]).unwrap()["data"]["value"], "unsigned-2");

    // A signed commit: allowed in production.
    repo.write("prod/cm.yaml", &cm("config", 0, "signed-3"));
    let c3 = signed_commit(&repo, &key, "prod: signed");
    wait_synced(&s, "prod", &c3);
    let live = get(c, &["configmap", "config", "-n", prod]).unwrap();
    assert_eq!(live["data"]["value"], "signed-3");
    assert_eq!(live["metadata"]["annotations"]["gitgate.dev/commit"], c3);
    s.terminate(Duration::from_secs(20));
    cleanup();
}
