//! Every subresource is decided (issue 15, items 1 and 7), against a real
//! kube-apiserver and kube-controller-manager with the webhook
//! configurations gitgate's guard installs (`*/*`): a person's `kubectl
//! debug`, status patch, `finalize` and token of a ServiceAccount Git
//! declares are denied naming the rule; the controller-manager's own
//! status updates, a rollout and an eviction keep working (the eviction
//! audited); a break-glass group member gets through; and nobody creates,
//! ahead of Git, a Namespace an app deploys into (CVE class: privilege
//! escalation through an unguarded subresource / a pre-created namespace).

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::cluster;
use crate::common::ServeProcess;
use crate::support::Repo;
use crate::sync::{PROJECT, app, audit_events, get, serve_on, status, wait_until};

const NS: &str = "e2e-sub";
/// An app's destination Git does not declare a Namespace for.
const UNDECLARED: &str = "e2e-sub-undeclared";
const BREAK_GLASS: &str = "e2e-break-glass";

fn deployment(image: &str) -> String {
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  replicas: 1\n  selector:\n    matchLabels: {{app: web}}\n  template:\n    metadata:\n      labels: {{app: web}}\n    spec:\n      containers:\n        - name: web\n          image: {image}\n"
    )
}

/// The app is Synced at `commit`; otherwise the status and gitgate's log say why.
fn wait_synced(s: &ServeProcess, name: &str, commit: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let st = status(s);
        if app(&st, name).is_some_and(|a| a["sync"] == "Synced" && a["syncedCommit"] == commit) {
            return;
        }
        if Instant::now() > deadline {
            let log = s.log.lock().unwrap().clone();
            let tail: String =
                log.lines().rev().take(40).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("\n");
            panic!("app {name} not synced at {commit}: {st:#}\n{tail}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn denied(out: &std::process::Output) -> String {
    assert!(
        !out.status.success(),
        "expected a denial, got: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn ok(out: &std::process::Output, what: &str) {
    assert!(out.status.success(), "{what}: {}", String::from_utf8_lossy(&out.stderr));
}

/// The Deployment's status as the deployment controller last wrote it
/// for its current generation.
fn rolled_out(c: &cluster::Cluster) -> Option<Value> {
    let d = get(c, &["deployment", "web", "-n", NS])?;
    (d["status"]["observedGeneration"] == d["metadata"]["generation"] && d["status"]["updatedReplicas"] == 1)
        .then_some(d)
}

#[test]
fn people_are_kept_from_subresources_where_gitgate_deploys_and_controllers_are_not() {
    let test = "people_are_kept_from_subresources_where_gitgate_deploys_and_controllers_are_not";
    let Some(c) = cluster::cluster(test) else { return };
    let _serial = cluster::cluster_wide();
    let repo = Repo::new();
    repo.write(
        "gitgate.yaml",
        &format!(
            "{PROJECT}apps:\n  - {{name: web, project: e2e, path: web, destination: {{namespace: {NS}}}, syncPolicy: {{prune: true}}}}\n  - {{name: later, project: e2e, path: later, destination: {{namespace: {UNDECLARED}}}, syncPolicy: {{detectOnly: true}}}}\n"
        ),
    );
    repo.write("web/ns.yaml", &format!("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {NS}\n"));
    repo.write("web/sa.yaml", "apiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: app\n");
    repo.write("web/deployment.yaml", &deployment("registry.example.invalid/web:1.0.0"));
    repo.write("later/settings.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\ndata: {a: b}\n");
    let c1 = repo.commit("web and a later app");

    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let policies = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
    let work = tempfile::tempdir().unwrap();
    let s = serve_on(
        c,
        work.path(),
        &repo,
        "gitgate-e2e-sub",
        &format!("127.0.0.1:{port}"),
        &[
            "--webhook-endpoint",
            &format!("https://127.0.0.1:{port}"),
            "--policies",
            policies.to_str().unwrap(),
            "--break-glass-group",
            BREAK_GLASS,
        ],
    );
    let cleanup = || {
        for kind in ["validatingwebhookconfiguration", "mutatingwebhookconfiguration"] {
            let _ = c.kubectl(&["delete", kind, "-l", "gitgate.dev/guard=true"]);
        }
    };
    wait_synced(&s, "web", &c1);
    let first =
        wait_until("the controller-manager to roll the Deployment out", Duration::from_secs(60), || rolled_out(c));

    // The guard's configuration takes every subresource.
    let deadline = Instant::now() + Duration::from_secs(30);
    let vwc = loop {
        if let Some(v) = get(c, &["validatingwebhookconfiguration", "gitgate-validate"]) {
            break v;
        }
        assert!(Instant::now() < deadline, "the guard never installed its configuration: {}", s.log.lock().unwrap());
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(vwc["webhooks"][0]["rules"][0]["resources"], serde_json::json!(["*/*"]));

    // A person's status patch — a broken rollout made to look healthy. The
    // apiserver loads webhook configurations asynchronously: wait until it
    // is refused (and put the controller's status back meanwhile).
    let patch_status = |who: &[&str]| {
        let mut args: Vec<&str> = who.to_vec();
        args.extend_from_slice(&[
            "patch",
            "deployment",
            "web",
            "-n",
            NS,
            "--subresource=status",
            "--type=merge",
            "-p",
            r#"{"status":{"readyReplicas":1,"availableReplicas":1}}"#,
        ]);
        c.kubectl(&args)
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    let err = loop {
        let out = patch_status(&[]);
        if !out.status.success() {
            break String::from_utf8_lossy(&out.stderr).into_owned();
        }
        assert!(Instant::now() < deadline, "the status patch was never refused");
        std::thread::sleep(Duration::from_millis(300));
    };
    assert!(
        err.contains("rule subresource-status")
            && err.contains(&format!(
                "deployments/status of {NS}/web is written by its controllers, not by kubernetes-admin"
            )),
        "{err}"
    );

    // kubectl debug: an ephemeral container with any image in a running
    // Pod of the app.
    let pod = wait_until("the ReplicaSet's Pod", Duration::from_secs(30), || {
        let pods = get(c, &["pods", "-n", NS, "-l", "app=web"])?;
        pods["items"].as_array()?.first()?["metadata"]["name"].as_str().map(str::to_owned)
    });
    let err = denied(&c.kubectl(&[
        "debug",
        "-n",
        NS,
        &pod,
        "--image=registry.example.invalid/shell:1",
        "--container=debugger",
    ]));
    assert!(
        err.contains("rule subresource-ephemeralcontainers")
            && err.contains(&format!("may not add an ephemeral container to {NS}/{pod} (kubectl debug)")),
        "{err}"
    );
    let live = get(c, &["pod", &pod, "-n", NS]).unwrap();
    assert!(live["spec"]["ephemeralContainers"].is_null(), "no container was added: {live:#}");

    // A token of the ServiceAccount Git declares; one of the namespace's
    // default ServiceAccount (not Git's) is RBAC's business.
    let err = denied(&c.kubectl(&["create", "token", "app", "-n", NS]));
    assert!(
        err.contains("rule subresource-token")
            && err.contains(&format!("may not mint a token for ServiceAccount {NS}/app, which Git declares (app web")),
        "{err}"
    );
    wait_until("the default ServiceAccount", Duration::from_secs(30), || {
        get(c, &["serviceaccount", "default", "-n", NS])
    });
    ok(&c.kubectl(&["create", "token", "default", "-n", NS]), "a token of a ServiceAccount Git does not declare");

    // finalize: emptying the Namespace's finalizers.
    let mut ns = get(c, &["namespace", NS]).unwrap();
    ns["spec"]["finalizers"] = serde_json::json!([]);
    let err = denied(&c.kubectl_stdin(
        &["replace", "--raw", &format!("/api/v1/namespaces/{NS}/finalize"), "-f", "-"],
        ns.to_string().as_bytes(),
    ));
    assert!(
        err.contains("rule subresource-finalize") && err.contains(&format!("may not finalize Namespace {NS}")),
        "{err}"
    );

    // A break-glass group member gets through (and is recorded).
    ok(
        &patch_status(&["--as=oncall@example.com", "--as-group=system:masters", &format!("--as-group={BREAK_GLASS}")]),
        "a break-glass status patch",
    );

    // An eviction (draining a node) is allowed and audited; the
    // ReplicaSet replaces the Pod.
    let eviction = serde_json::json!({
        "apiVersion": "policy/v1",
        "kind": "Eviction",
        "metadata": {"name": pod, "namespace": NS},
    });
    ok(
        &c.kubectl_stdin(
            &["create", "--raw", &format!("/api/v1/namespaces/{NS}/pods/{pod}/eviction"), "-f", "-"],
            eviction.to_string().as_bytes(),
        ),
        "the eviction",
    );
    wait_until("the evicted Pod replaced", Duration::from_secs(30), || {
        let pods = get(c, &["pods", "-n", NS, "-l", "app=web"])?;
        let items = pods["items"].as_array()?;
        (!items.is_empty() && items.iter().all(|p| p["metadata"]["name"] != pod.as_str())).then_some(())
    });
    let records = audit_events(work.path());
    let evicted = records
        .iter()
        .find(|r| r["subresource"] == "eviction" && r["name"] == pod.as_str())
        .unwrap_or_else(|| panic!("the eviction is audited: {records:#?}"));
    assert_eq!(evicted["decision"], "allow");
    assert_eq!(evicted["user"], "kubernetes-admin");
    let glass = records
        .iter()
        .find(|r| r["subresource"] == "status" && r["user"] == "oncall@example.com")
        .expect("the break-glass status patch is audited");
    assert_eq!(glass["decision"], "allow");
    assert!(
        records.iter().any(|r| r["subresource"] == "ephemeralcontainers" && r["decision"] == "deny"),
        "the refused kubectl debug is audited"
    );

    // A rollout: Git changes the image, the reconciler applies it, the
    // controller-manager creates the new ReplicaSet and writes the status.
    repo.write("web/deployment.yaml", &deployment("registry.example.invalid/web:1.1.0"));
    let c2 = repo.commit("web 1.1.0");
    wait_synced(&s, "web", &c2);
    let second = wait_until("the rollout's status", Duration::from_secs(60), || {
        let d = rolled_out(c)?;
        (d["metadata"]["generation"] != first["metadata"]["generation"]).then_some(d)
    });
    assert_eq!(second["status"]["updatedReplicas"], 1, "{second:#}");

    // Item 7: a Namespace an app deploys into that Git does not declare
    // is not created ahead of Git, with or without labels of one's choosing.
    let err = denied(&c.kubectl(&["create", "namespace", UNDECLARED]));
    assert!(
        err.contains(&format!("nothing in Git declares Namespace/{UNDECLARED}"))
            && err.contains("app later (later) deploys into it"),
        "{err}"
    );
    let privileged = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": UNDECLARED, "labels": {"pod-security.kubernetes.io/enforce": "privileged"}},
    });
    let err = denied(&c.kubectl_stdin(&["create", "-f", "-"], privileged.to_string().as_bytes()));
    assert!(err.contains("declare the Namespace in Git"), "{err}");
    assert!(get(c, &["namespace", UNDECLARED]).is_none());

    s.terminate(Duration::from_secs(20));
    cleanup();
}

/// The same with the Helm chart's layout (`--webhook-enforce-label`): a
/// Namespace created without the enforcement label goes to the observe
/// webhook, which fails open — and gitgate still refuses it when an app
/// deploys into it (item 7); a person's status patch in the labelled
/// namespace is refused by the enforced webhook.
#[test]
fn with_an_enforcement_label_an_unlabelled_namespace_is_still_not_created_ahead_of_git() {
    let test = "with_an_enforcement_label_an_unlabelled_namespace_is_still_not_created_ahead_of_git";
    let Some(c) = cluster::cluster(test) else { return };
    let _serial = cluster::cluster_wide();
    let (ns, later) = ("e2e-sub-labelled", "e2e-sub-labelled-later");
    let repo = Repo::new();
    repo.write(
        "gitgate.yaml",
        &format!(
            "{PROJECT}apps:\n  - {{name: web, project: e2e, path: web, destination: {{namespace: {ns}}}}}\n  - {{name: later, project: e2e, path: later, destination: {{namespace: {later}}}, syncPolicy: {{detectOnly: true}}}}\n"
        ),
    );
    repo.write(
        "web/ns.yaml",
        &format!(
            "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {ns}\n  labels: {{gitgate.dev/enforce: \"true\"}}\n"
        ),
    );
    repo.write("web/deployment.yaml", &deployment("registry.example.invalid/web:1.0.0"));
    repo.write("later/settings.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\ndata: {a: b}\n");
    let c1 = repo.commit("a labelled app and a later one");
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let policies = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
    let work = tempfile::tempdir().unwrap();
    let s = serve_on(
        c,
        work.path(),
        &repo,
        "gitgate-e2e-sub-labelled",
        &format!("127.0.0.1:{port}"),
        &[
            "--webhook-endpoint",
            &format!("https://127.0.0.1:{port}"),
            "--webhook-enforce-label",
            "gitgate.dev/enforce=true",
            "--policies",
            policies.to_str().unwrap(),
        ],
    );
    wait_synced(&s, "web", &c1);
    let deadline = Instant::now() + Duration::from_secs(30);
    let err = loop {
        let out = c.kubectl(&[
            "patch",
            "deployment",
            "web",
            "-n",
            ns,
            "--subresource=status",
            "--type=merge",
            "-p",
            r#"{"status":{"readyReplicas":1}}"#,
        ]);
        if !out.status.success() {
            break String::from_utf8_lossy(&out.stderr).into_owned();
        }
        assert!(Instant::now() < deadline, "the status patch was never refused");
        std::thread::sleep(Duration::from_millis(300));
    };
    assert!(
        err.contains("admission webhook \"validate.gitgate.dev\"") && err.contains("rule subresource-status"),
        "{err}"
    );
    for labels in [serde_json::json!({}), serde_json::json!({"pod-security.kubernetes.io/enforce": "privileged"})] {
        let namespace = serde_json::json!({
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": later, "labels": labels},
        });
        let err = denied(&c.kubectl_stdin(&["create", "-f", "-"], namespace.to_string().as_bytes()));
        assert!(
            err.contains("admission webhook \"observe.validate.gitgate.dev\"")
                && err.contains(&format!("nothing in Git declares Namespace/{later}"))
                && err.contains("declare the Namespace in Git"),
            "{err}"
        );
    }
    assert!(get(c, &["namespace", later]).is_none());
    s.terminate(Duration::from_secs(20));
    for kind in ["validatingwebhookconfiguration", "mutatingwebhookconfiguration"] {
        let _ = c.kubectl(&["delete", kind, "-l", "gitgate.dev/guard=true"]);
    }
}
