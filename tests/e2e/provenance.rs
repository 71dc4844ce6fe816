//! The provenance gate against a real kube-apiserver: `gitgate serve`
//! tracks a real Git repository, the reconciler's apply of Git's content
//! is admitted, and the bypass list is denied with the owner's message —
//! kubectl patch/replace/delete, a hand edit with the stamps copied, a
//! replay of an older commit's manifest, kubectl scale, an unmanaged create,
//! and a namespace relabel.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::cluster::{self, Cluster};
use crate::common;
use crate::support::Repo;

const BIN: &str = env!("CARGO_BIN_EXE_gitgate");
const RECONCILER: &str = "system:serviceaccount:gitops:reconciler";
const NS: &str = "e2e-shop";

fn render(repo: &Repo) -> Value {
    let out = std::process::Command::new(BIN).args(["render", "--repo", &repo.url(), "-o", "json"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Git's object as the reconciler applies it: the manifest plus the stamps.
fn stamped(rendered: &Value, kind: &str, name: &str) -> Value {
    let obj = rendered["apps"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|a| a["objects"].as_array().unwrap().iter().map(move |o| (a["name"].clone(), o)))
        .find(|(_, o)| o["kind"] == kind && o["name"] == name)
        .unwrap_or_else(|| panic!("{kind}/{name} is not in the desired set"));
    let (app, o) = obj;
    let mut m = o["manifest"].clone();
    m["metadata"]["annotations"]["gitgate.dev/digest"] = o["digest"].clone();
    m["metadata"]["annotations"]["gitgate.dev/commit"] = o["commit"].clone();
    m["metadata"]["annotations"]["gitgate.dev/source"] =
        json!(format!("{}:{}", app.as_str().unwrap(), o["source"].as_str().unwrap()));
    m["metadata"]["labels"]["gitgate.dev/app"] = app;
    m
}

fn apply_as_reconciler(c: &Cluster, obj: &Value) -> std::process::Output {
    c.kubectl_stdin(
        &[
            &format!("--as={RECONCILER}"),
            "apply",
            "--server-side",
            "--field-manager=gitgate",
            "--force-conflicts",
            "-f",
            "-",
        ],
        obj.to_string().as_bytes(),
    )
}

fn denied(out: &std::process::Output) -> String {
    assert!(!out.status.success(), "expected a denial, got: {}", String::from_utf8_lossy(&out.stdout));
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn settings(value: &str) -> String {
    format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\ndata:\n  replicas: \"{value}\"\n")
}

const WEB: &str = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  replicas: 2\n  selector:\n    matchLabels: {app: web}\n  template:\n    metadata:\n      labels: {app: web}\n    spec:\n      containers:\n        - name: web\n          image: registry.example.invalid/web:1.0.0\n";

#[test]
fn only_git_changes_what_gitgate_deploys() {
    let Some(c) = cluster::cluster("only_git_changes_what_gitgate_deploys") else { return };
    let _serial = cluster::cluster_wide();
    let repo = Repo::new();
    repo.write(
        "gitgate.yaml",
        &format!("apps:\n  - {{name: shop, path: apps/shop, destination: {{namespace: {NS}}}}}\n"),
    );
    repo.write("apps/shop/settings.yaml", &settings("3"));
    repo.write("apps/shop/web.yaml", WEB);
    let c1 = repo.commit("add shop");
    let r1 = render(&repo);

    c.ensure_namespace("gitops");
    c.kubectl_ok(&["create", "namespace", NS]);
    c.kubectl_ok(&["label", "namespace", NS, "gitgate.dev/enforce=true"]);
    c.kubectl_ok(&[
        "create",
        "clusterrolebinding",
        "e2e-prov-reconciler",
        "--clusterrole=cluster-admin",
        &format!("--user={RECONCILER}"),
    ]);

    let work = tempfile::tempdir().unwrap();
    let policies = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
    let serve = common::ServeProcess::spawn(
        BIN,
        work.path(),
        &[
            "--repo",
            &repo.url(),
            "--policies",
            policies.to_str().unwrap(),
            "--reconciler",
            RECONCILER,
            "--poll-interval",
            "1s",
        ],
    );
    let ca = std::fs::read(&serve.ca).unwrap();
    use base64::Engine as _;
    let hook = json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": "e2e-provenance"},
        "webhooks": [{
            "name": "validate.gitgate.dev",
            "admissionReviewVersions": ["v1"],
            "clientConfig": {
                "url": format!("https://127.0.0.1:{}/validate", serve.addr.port()),
                "caBundle": base64::engine::general_purpose::STANDARD.encode(&ca),
            },
            "failurePolicy": "Fail",
            "sideEffects": "None",
            "timeoutSeconds": 5,
            "rules": [{"apiGroups": ["*"], "apiVersions": ["*"], "operations": ["CREATE", "UPDATE", "DELETE"], "resources": ["*", "*/scale"]}],
            "namespaceSelector": {"matchExpressions": [{"key": "kubernetes.io/metadata.name", "operator": "In", "values": [NS]}]},
        }],
    });
    assert!(c.kubectl_stdin(&["create", "-f", "-"], hook.to_string().as_bytes()).status.success());

    // The apiserver loads webhook configurations asynchronously: wait
    // until an unmanaged create is refused.
    let deadline = Instant::now() + Duration::from_secs(30);
    let unmanaged = loop {
        let out = c.kubectl(&["create", "configmap", "stray", "-n", NS, "--from-literal=a=b"]);
        if !out.status.success() {
            break String::from_utf8_lossy(&out.stderr).into_owned();
        }
        c.kubectl_ok(&["delete", "configmap", "stray", "-n", NS]);
        assert!(Instant::now() < deadline, "the webhook never took effect");
        std::thread::sleep(Duration::from_millis(300));
    };
    assert!(unmanaged.contains(&format!("nothing in Git declares {NS}/ConfigMap/stray")), "{unmanaged}");
    assert!(unmanaged.contains(&format!("namespace {NS} is deployed from Git by app shop (apps/shop)")), "{unmanaged}");

    // the reconciler applies Git's content
    let cm1 = stamped(&r1, "ConfigMap", "settings");
    let out = apply_as_reconciler(c, &cm1);
    assert!(out.status.success(), "the reconciler's apply: {}", String::from_utf8_lossy(&out.stderr));
    let out = apply_as_reconciler(c, &stamped(&r1, "Deployment", "web"));
    assert!(out.status.success(), "the reconciler's apply: {}", String::from_utf8_lossy(&out.stderr));

    let owner = format!(
        "{NS}/ConfigMap/settings is managed by app shop from apps/shop/settings.yaml at {} 'add shop'",
        &c1[..7]
    );
    // kubectl patch (what kubectl edit sends)
    let err = denied(&c.kubectl(&[
        "patch",
        "configmap",
        "settings",
        "-n",
        NS,
        "--type=merge",
        "-p",
        r#"{"data":{"replicas":"1"}}"#,
    ]));
    assert!(err.contains(&owner) && err.contains("change it there"), "{err}");
    // kubectl replace of a hand edit with the stamps copied
    let mut copied = cm1.clone();
    copied["data"]["replicas"] = json!("1");
    let err = denied(&c.kubectl_stdin(&["replace", "-f", "-"], copied.to_string().as_bytes()));
    assert!(err.contains("/data/replicas differs from Git"), "{err}");
    // the same with the reconciler's name but not its identity
    let err = denied(&c.kubectl_stdin(
        &["apply", "--server-side", "--field-manager=gitgate", "--force-conflicts", "-f", "-"],
        cm1.to_string().as_bytes(),
    ));
    assert!(err.contains("only gitgate's reconciler applies it, not kubernetes-admin"), "{err}");
    // kubectl delete
    let err = denied(&c.kubectl(&["delete", "configmap", "settings", "-n", NS]));
    assert!(err.contains("remove it from Git to delete it"), "{err}");
    // kubectl scale
    let err = denied(&c.kubectl(&["scale", "deployment", "web", "-n", NS, "--replicas=5"]));
    assert!(err.contains("(scale is set in Git)"), "{err}");
    // a field Git does not set, added by hand: the gate reads the request's
    // managedFields, as the sync loop does (one `matches_git`), and names
    // the field and the manager that set it
    let err = denied(&c.kubectl(&[
        "patch",
        "deployment",
        "web",
        "-n",
        NS,
        "--type=json",
        "-p",
        r#"[{"op":"add","path":"/spec/template/spec/hostNetwork","value":true}]"#,
    ]));
    assert!(err.contains("/spec/template/spec/hostNetwork (set by kubectl-patch) is not in Git"), "{err}");
    // relabelling the namespace to switch enforcement off
    let err = denied(&c.kubectl(&["label", "namespace", NS, "gitgate.dev/enforce-"]));
    assert!(err.contains("switch gitgate enforcement"), "{err}");

    // A new commit; then commit 1's manifest, with its own valid stamps, is a replay.
    repo.write("apps/shop/settings.yaml", &settings("4"));
    let c2 = repo.commit("four replicas");
    serve.wait_for_log(&format!("commit={c2}"), Duration::from_secs(30));
    serve.wait_for_log("provenance follows the new commit", Duration::from_secs(5));
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let out = apply_as_reconciler(c, &cm1);
        if !out.status.success() {
            let err = String::from_utf8_lossy(&out.stderr).into_owned();
            assert!(err.contains("/data/replicas differs from Git") && err.contains("'four replicas'"), "{err}");
            break;
        }
        assert!(Instant::now() < deadline, "the replay of commit 1 was never refused");
        std::thread::sleep(Duration::from_millis(300));
    }
    let out = apply_as_reconciler(c, &stamped(&render(&repo), "ConfigMap", "settings"));
    assert!(out.status.success(), "commit 2's content: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(c.kubectl_ok(&["get", "configmap", "settings", "-n", NS, "-o", "jsonpath={.data.replicas}"]), "4");

    c.kubectl_ok(&["delete", "validatingwebhookconfiguration", "e2e-provenance"]);
    serve.terminate(Duration::from_secs(20));
}
