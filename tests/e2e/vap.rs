//! `gitgate vap` against a real kube-apiserver: the apiserver accepts the
//! generated ValidatingAdmissionPolicy and enforces it with no webhook
//! running at all.

use std::time::{Duration, Instant};

use crate::cluster;

const RECONCILER: &str = "system:serviceaccount:gitops:reconciler";

#[test]
fn the_generated_vap_lets_only_the_reconciler_change_managed_objects() {
    let Some(c) = cluster::cluster("the_generated_vap_lets_only_the_reconciler_change_managed_objects") else { return };
    let _serial = cluster::cluster_wide();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_gitgate"))
        .args(["vap", "--reconciler", RECONCILER, "--break-glass-group", "oncall"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let applied = c.kubectl_stdin(&["apply", "-f", "-"], &out.stdout);
    assert!(
        applied.status.success(),
        "the apiserver refused gitgate vap: {}",
        String::from_utf8_lossy(&applied.stderr)
    );

    c.ensure_namespace("gitops");
    c.kubectl_ok(&["create", "namespace", "e2e-vap"]);
    c.kubectl_ok(&["create", "serviceaccount", "reconciler", "-n", "gitops"]);
    c.kubectl_ok(&[
        "create",
        "clusterrolebinding",
        "e2e-vap-reconciler",
        "--clusterrole=cluster-admin",
        &format!("--user={RECONCILER}"),
    ]);
    c.kubectl_ok(&["create", "clusterrolebinding", "e2e-vap-oncall", "--clusterrole=cluster-admin", "--group=oncall"]);

    let managed = br#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"settings","namespace":"e2e-vap","labels":{"gitgate.dev/app":"shop"}},"data":{"replicas":"3"}}"#;
    // The apiserver loads policies asynchronously: until it enforces this
    // one, an admin's create goes through, so probe with a throwaway object.
    let deadline = Instant::now() + Duration::from_secs(30);
    for i in 0.. {
        let probe = format!(
            r#"{{"apiVersion":"v1","kind":"ConfigMap","metadata":{{"name":"probe-{i}","namespace":"e2e-vap","labels":{{"gitgate.dev/app":"probe"}}}}}}"#
        );
        let out = c.kubectl_stdin(&["create", "-f", "-"], probe.as_bytes());
        if !out.status.success() {
            break;
        }
        assert!(Instant::now() < deadline, "the policy never took effect");
        std::thread::sleep(Duration::from_millis(300));
    }

    let as_reconciler = format!("--as={RECONCILER}");
    let created =
        c.kubectl_stdin(&[&as_reconciler, "apply", "--server-side", "--field-manager=gitgate", "-f", "-"], managed);
    assert!(created.status.success(), "the reconciler applies: {}", String::from_utf8_lossy(&created.stderr));

    let edit = c.kubectl(&[
        "patch",
        "configmap",
        "settings",
        "-n",
        "e2e-vap",
        "--type=merge",
        "-p",
        r#"{"data":{"replicas":"1"}}"#,
    ]);
    assert!(!edit.status.success(), "a hand edit must be denied");
    let err = String::from_utf8_lossy(&edit.stderr);
    assert!(err.contains("this object is managed by gitgate app shop from Git"), "{err}");
    assert!(err.contains("kubernetes-admin may not UPDATE it"), "{err}");

    let delete = c.kubectl(&["delete", "configmap", "settings", "-n", "e2e-vap"]);
    assert!(!delete.status.success(), "a hand delete must be denied");
    assert!(String::from_utf8_lossy(&delete.stderr).contains("may not DELETE it"));

    let glass = c.kubectl(&[
        "--as=alice",
        "--as-group=oncall",
        "patch",
        "configmap",
        "settings",
        "-n",
        "e2e-vap",
        "--type=merge",
        "-p",
        r#"{"data":{"replicas":"4"}}"#,
    ]);
    assert!(glass.status.success(), "a break-glass group may: {}", String::from_utf8_lossy(&glass.stderr));

    let fix = c.kubectl(&[
        &as_reconciler,
        "patch",
        "configmap",
        "settings",
        "-n",
        "e2e-vap",
        "--type=merge",
        "-p",
        r#"{"data":{"replicas":"3"}}"#,
    ]);
    assert!(fix.status.success(), "the reconciler may: {}", String::from_utf8_lossy(&fix.stderr));
    assert_eq!(
        c.kubectl_ok(&["get", "configmap", "settings", "-n", "e2e-vap", "-o", "jsonpath={.data.replicas}"]),
        "3"
    );

    c.kubectl_ok(&["create", "configmap", "unmanaged", "-n", "e2e-vap", "--from-literal=a=b"]);
    c.kubectl_ok(&["patch", "configmap", "unmanaged", "-n", "e2e-vap", "--type=merge", "-p", r#"{"data":{"a":"c"}}"#]);

    // leave the cluster as found: the policy is cluster-wide
    c.kubectl_stdin(&["delete", "-f", "-"], &out.stdout);
}
