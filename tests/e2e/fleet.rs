//! Spoke mode against the real kube-apiserver (issue 18, item 1): a
//! gitgate started with `--cluster dr` on a fleet repository applies the
//! dr cluster's app to the cluster it runs in, and nothing of the other
//! clusters' apps, and its webhook refuses a hand edit there with the
//! single-cluster message.

use std::time::{Duration, Instant};

use crate::cluster;
use crate::support::Repo;
use crate::sync::{PROJECT, app, get, serve_on, status, wait_synced};

const NS: &str = "e2e-fleet";

#[test]
fn a_spoke_applies_and_gates_only_its_clusters_apps() {
    let Some(c) = cluster::cluster("a_spoke_applies_and_gates_only_its_clusters_apps") else { return };
    let _serial = cluster::cluster_wide();
    c.ensure_namespace(NS);
    // The chart's layout: the webhooks fail closed only in namespaces
    // labelled for enforcement, so a spoke starting up never stands in the
    // way of other tests' namespaces.
    c.kubectl_ok(&["label", "namespace", NS, "gitgate.dev/enforce=true", "--overwrite"]);
    let repo = Repo::new();
    repo.write(
        "gitgate.yaml",
        &format!(
            "clusters:\n  - {{name: staging, labels: {{env: staging}}}}\n  - {{name: dr, labels: {{env: production}}}}\n{PROJECT}generators:\n  - clusters: {{}}\n    template:\n      name: \"shop-{{{{name}}}}\"\n      project: e2e\n      path: \"shop/{{{{name}}}}\"\n      destination: {{cluster: \"{{{{name}}}}\", namespace: {NS}}}\n      syncPolicy: {{prune: true, selfHeal: true}}\n"
        ),
    );
    for env in ["staging", "dr"] {
        repo.write(
            &format!("shop/{env}/settings.yaml"),
            &format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\ndata:\n  cluster: {env}\n"),
        );
    }
    let c1 = repo.commit("a fleet of two");
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let work = tempfile::tempdir().unwrap();
    let s = serve_on(
        c,
        work.path(),
        &repo,
        "gitgate-e2e-fleet",
        &format!("127.0.0.1:{port}"),
        &[
            "--cluster",
            "dr",
            "--webhook-endpoint",
            &format!("https://127.0.0.1:{port}"),
            "--webhook-enforce-label",
            "gitgate.dev/enforce=true",
        ],
    );
    let cleanup = || {
        for kind in ["validatingwebhookconfiguration", "mutatingwebhookconfiguration"] {
            let _ = c.kubectl(&["delete", kind, "-l", "gitgate.dev/guard=true"]);
        }
    };
    wait_synced(&s, "shop-dr", &c1);
    let st = status(&s);
    assert!(app(&st, "shop-staging").is_none(), "the staging app is the staging spoke's: {st:#}");
    let cm = get(c, &["configmap", "settings", "-n", NS]).expect("the dr app's ConfigMap");
    assert_eq!(cm["data"]["cluster"], "dr", "the dr overlay, not staging's");
    assert_eq!(cm["metadata"]["labels"]["gitgate.dev/app"], "shop-dr");

    // The webhook refuses a hand edit in the spoke's cluster, naming the
    // dr app (the apiserver loads its configuration asynchronously).
    let deadline = Instant::now() + Duration::from_secs(30);
    let err = loop {
        let out = c.kubectl(&[
            "-n",
            NS,
            "patch",
            "configmap",
            "settings",
            "--type=merge",
            "-p",
            r#"{"data":{"cluster":"hand"}}"#,
        ]);
        if !out.status.success() {
            break String::from_utf8_lossy(&out.stderr).into_owned();
        }
        assert!(Instant::now() < deadline, "the spoke's webhook never refused the hand edit");
        std::thread::sleep(Duration::from_millis(300));
    };
    assert!(
        err.contains(&format!("{NS}/ConfigMap/settings is managed by app shop-dr from shop/dr/settings.yaml")),
        "{err}"
    );
    assert!(err.contains("change it there"), "{err}");
    s.terminate(Duration::from_secs(20));
    cleanup();
    let _ = c.kubectl(&["delete", "namespace", NS, "--wait=false"]);
}
