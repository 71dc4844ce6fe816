//! `gitgate keygen | seal | seal --check | reseal` run as the real binary.

use std::path::Path;
use std::process::{Command, Output};

fn gitgate(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_gitgate")).args(args).output().unwrap()
}

fn ok(out: &Output) -> String {
    assert!(out.status.success(), "stderr: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout.clone()).unwrap()
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn keygen_seal_check_reseal_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("cluster.key");
    let recipient = ok(&gitgate(&["keygen", "-o", path(&key)]));
    assert!(recipient.trim().starts_with("age1"), "{recipient}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        assert_eq!(std::fs::metadata(&key).unwrap().permissions().mode() & 0o777, 0o600);
    }
    assert!(!gitgate(&["keygen", "-o", path(&key)]).status.success(), "an identity file is never overwritten");

    // keygen to stdout: identity on stdout, recipient on stderr.
    let out = gitgate(&["keygen"]);
    assert!(ok(&out).contains("AGE-SECRET-KEY-1"));
    assert!(String::from_utf8_lossy(&out.stderr).contains("public key: age1"));

    let manifest = dir.path().join("secret.yaml");
    std::fs::write(
        &manifest,
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: db-credentials\n  namespace: gitops-demo\ntype: Opaque\n\
         data:\n  username: ZGVtby11c2Vy\nstringData:\n  password: yes\n  token: vault:secret/db#token#3\n",
    )
    .unwrap();
    let sealed = ok(&gitgate(&["seal", "-f", path(&manifest), "--recipient", recipient.trim()]));
    assert!(sealed.contains("gitgate.dev/sealed: age") && sealed.contains("-----BEGIN AGE ENCRYPTED FILE-----"));
    assert!(sealed.contains("vault:secret/db#token#3"));
    assert!(!sealed.contains("ZGVtby11c2Vy") && !sealed.contains("password: yes"));
    let sealed_path = dir.path().join("sealed.yaml");
    std::fs::write(&sealed_path, &sealed).unwrap();

    let check = gitgate(&["seal", "--check", "-f", path(&sealed_path), "--scope", "strict"]);
    ok(&check);
    assert!(String::from_utf8_lossy(&check.stderr).contains("2 age value(s), 1 vault reference(s)"));
    let wrong = gitgate(&["seal", "--check", "-f", path(&sealed_path), "--scope", "cluster"]);
    assert!(!wrong.status.success());
    assert!(String::from_utf8_lossy(&wrong.stderr).contains("expected cluster"));
    let plain_check = gitgate(&["seal", "--check", "-f", path(&manifest)]);
    assert!(!plain_check.status.success(), "a plaintext manifest fails the check");

    // Rotation: reseal offline for a new key; the old key no longer opens it.
    let new_key = dir.path().join("new.key");
    let new_recipient = ok(&gitgate(&["keygen", "-o", path(&new_key)]));
    let recipients = dir.path().join("recipients.txt");
    std::fs::write(&recipients, format!("# new cluster key\n{new_recipient}")).unwrap();
    let resealed =
        ok(&gitgate(&["reseal", "-f", path(&sealed_path), "--identity", path(&key), "-R", path(&recipients)]));
    let resealed_path = dir.path().join("resealed.yaml");
    std::fs::write(&resealed_path, &resealed).unwrap();
    ok(&gitgate(&["seal", "--check", "-f", path(&resealed_path), "--scope", "strict"]));
    let stale = gitgate(&["reseal", "-f", path(&resealed_path), "--identity", path(&key), "-r", new_recipient.trim()]);
    assert!(!stale.status.success());
    assert!(String::from_utf8_lossy(&stale.stderr).contains("none of the cluster's age identities"));
    ok(&gitgate(&["reseal", "-f", path(&resealed_path), "--identity", path(&new_key), "-r", new_recipient.trim()]));

    // No recipient: a clear error.
    let none = gitgate(&["seal", "-f", path(&manifest)]);
    assert!(String::from_utf8_lossy(&none.stderr).contains("no recipient"));
}
