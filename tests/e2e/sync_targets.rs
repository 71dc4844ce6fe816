//! The sync loop's destinations and break-glass windows against real
//! kube-apiservers: an app whose `destination.cluster` names a context of
//! `--kubeconfig` is applied to, healed on and pruned from that second
//! control plane (and nothing of it lands on the default one); a member of
//! a break-glass group changes a managed object through gitgate's own
//! webhook, self-heal leaves it alone for `--break-glass-ttl`, then puts
//! Git back, with `breakGlassOpened`/`breakGlassExpired` in the audit log.

use std::time::{Duration, Instant};

use serde_json::Value;

use super::sync::{
    PROJECT, app, audit_events, cm, get, reconciler_kubeconfig, run, serve_on, serve_with, status, wait_synced,
    wait_until,
};
use crate::cluster::{self, Cluster};
use crate::support::Repo;

/// The reconciler's kubeconfig (current context: the default cluster) plus
/// a context named `name` for `other`'s admin.
fn two_cluster_kubeconfig(c: &Cluster, other: &Cluster, name: &str, dir: &std::path::Path) -> std::path::PathBuf {
    use kube::config::Kubeconfig;
    let mut kc = Kubeconfig::read_from(reconciler_kubeconfig(c, dir)).unwrap();
    let o = Kubeconfig::read_from(&other.kubeconfig).unwrap();
    let (cluster, user) = (format!("{name}-cluster"), format!("{name}-admin"));
    let mut nc = o.clusters[0].clone();
    nc.name = cluster.clone();
    kc.clusters.push(nc);
    let mut nu = o.auth_infos[0].clone();
    nu.name = user.clone();
    kc.auth_infos.push(nu);
    let mut nctx = o.contexts[0].clone();
    nctx.name = name.to_string();
    if let Some(ctx) = nctx.context.as_mut() {
        ctx.cluster = cluster;
        ctx.user = Some(user);
    }
    kc.contexts.push(nctx);
    let path = dir.join("two-clusters.kubeconfig");
    std::fs::write(&path, serde_json::to_vec(&kc).unwrap()).unwrap();
    path
}

#[test]
fn an_app_for_another_cluster_is_applied_healed_and_pruned_there() {
    let test = "an_app_for_another_cluster_is_applied_healed_and_pruned_there";
    let Some(c) = cluster::cluster(test) else { return };
    let Some(second) = cluster::second_cluster(test) else { return };
    let _serial = cluster::cluster_wide();
    let (home, remote) = ("e2e-home", "e2e-remote");
    let repo = Repo::new();
    repo.write(
        "gitgate.yaml",
        &format!(
            "clusters:\n  - {{name: in-cluster}}\n  - {{name: second, server: https://127.0.0.1:{port}}}\n{PROJECT}apps:\n  - {{name: home, project: e2e, path: home, destination: {{namespace: {home}}}, syncPolicy: {{prune: true, selfHeal: true}}}}\n  - {{name: remote, project: e2e, path: remote, destination: {{cluster: second, namespace: {remote}}}, syncPolicy: {{prune: true, selfHeal: true}}}}\n",
            port = second.port
        ),
    );
    repo.write("home/ns.yaml", &format!("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {home}\n"));
    repo.write("home/local.yaml", &cm("local", 0, "1"));
    repo.write("remote/ns.yaml", &format!("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {remote}\n"));
    for name in ["a", "b", "c"] {
        repo.write(&format!("remote/{name}.yaml"), &cm(name, 0, "1"));
    }
    let c1 = repo.commit("home and remote");

    let work = tempfile::tempdir().unwrap();
    let kubeconfig = two_cluster_kubeconfig(c, second, "second", work.path());
    let s = serve_with(&kubeconfig, work.path(), &repo, "gitgate-e2e-targets", "127.0.0.1:0", &[]);

    // Applied to the cluster its destination names, stamped; the default
    // cluster gets the other app only.
    let r = wait_synced(&s, "remote", &c1);
    assert!(r["destination"].as_str().unwrap().starts_with("second/"), "{r:#}");
    wait_synced(&s, "home", &c1);
    let a = get(second, &["configmap", "a", "-n", remote]).expect("a on the second cluster");
    assert_eq!(a["metadata"]["annotations"]["gitgate.dev/commit"], c1);
    assert_eq!(a["metadata"]["labels"]["gitgate.dev/app"], "remote");
    assert!(get(c, &["namespace", remote]).is_none(), "nothing of the remote app on the default cluster");
    assert!(get(second, &["configmap", "local", "-n", home]).is_none());
    assert!(get(c, &["configmap", "local", "-n", home]).is_some());
    // Its inventory lives with gitgate (default cluster) and names the destination.
    let inv = get(c, &["configmap", "gitgate-inventory-remote", "-n", "gitgate-e2e-targets"]).unwrap();
    assert_eq!(inv["data"]["cluster"], "second");
    assert_eq!(inv["data"]["inventory"].as_str().unwrap().lines().count(), 4);

    // Self-heal watches the second cluster too.
    second.kubectl_ok(&[
        "patch",
        "configmap",
        "a",
        "-n",
        remote,
        "--type=merge",
        "-p",
        r#"{"data":{"value":"hacked"}}"#,
    ]);
    wait_until("the drift on the second cluster to be reverted", Duration::from_secs(10), || {
        (get(second, &["configmap", "a", "-n", remote])?["data"]["value"] == "1").then_some(())
    });

    // Prune deletes there what left Git.
    repo.remove("remote/c.yaml");
    let c2 = repo.commit("drop c");
    wait_synced(&s, "remote", &c2);
    assert!(get(second, &["configmap", "c", "-n", remote]).is_none(), "c pruned from the second cluster");
    assert!(get(second, &["configmap", "b", "-n", remote]).is_some());
    assert!(audit_events(work.path()).iter().any(|e| e["event"] == "prune" && e["name"] == "c"));
    let inv = get(c, &["configmap", "gitgate-inventory-remote", "-n", "gitgate-e2e-targets"]).unwrap();
    assert_eq!(inv["data"]["inventory"].as_str().unwrap().lines().count(), 3);
    s.terminate(Duration::from_secs(20));
}

/// `gitgate audit query --event EVENT -o json` over the serve's log.
fn audit_query(work: &std::path::Path, event: &str) -> Vec<Value> {
    let out = run(&["audit", "query", "gitgate-data/audit", "--event", event, "-o", "json"], work);
    serde_json::from_str(&out).unwrap()
}

#[test]
fn break_glass_is_admitted_left_alone_for_its_ttl_then_reverted() {
    let Some(c) = cluster::cluster("break_glass_is_admitted_left_alone_for_its_ttl_then_reverted") else { return };
    let _serial = cluster::cluster_wide();
    let ns = "e2e-glass";
    let repo = Repo::new();
    repo.write(
        "gitgate.yaml",
        &format!("{PROJECT}apps:\n  - {{name: glass, project: e2e, path: app, destination: {{namespace: {ns}}}, syncPolicy: {{prune: true, selfHeal: true}}}}\n"),
    );
    repo.write("app/ns.yaml", &format!("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {ns}\n"));
    repo.write("app/settings.yaml", &cm("settings", 0, "git"));
    let c1 = repo.commit("settings from git");

    let work = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let s = serve_on(
        c,
        work.path(),
        &repo,
        "gitgate-e2e-glass",
        &format!("127.0.0.1:{port}"),
        &[
            "--webhook-endpoint",
            &format!("https://127.0.0.1:{port}"),
            "--break-glass-group",
            "oncall",
            "--break-glass-ttl",
            "3s",
        ],
    );
    let cleanup = || {
        for kind in ["validatingwebhookconfiguration", "mutatingwebhookconfiguration"] {
            let _ = c.kubectl(&["delete", kind, "-l", "gitgate.dev/guard=true"]);
        }
    };
    wait_synced(&s, "glass", &c1);
    let patch = |user: &str, groups: &[&str], body: &str| {
        let mut args = vec!["patch", "configmap", "settings", "-n", ns, "--type=merge", "-p", body];
        let as_user = format!("--as={user}");
        args.push(&as_user);
        let groups: Vec<String> = groups.iter().map(|g| format!("--as-group={g}")).collect();
        args.extend(groups.iter().map(String::as_str));
        c.kubectl(&args)
    };
    let hotfix =
        r#"{"metadata":{"annotations":{"gitgate.dev/break-glass":"INC-42 hotfix"}},"data":{"value":"hotfix"}}"#;
    // The webhook is in place: someone outside the group is denied, even
    // with the annotation.
    wait_until("the webhook to deny a hand edit", Duration::from_secs(30), || {
        let out = patch("mallory", &["system:masters"], hotfix);
        (!out.status.success()).then_some(())
    });
    assert_eq!(get(c, &["configmap", "settings", "-n", ns]).unwrap()["data"]["value"], "git");

    // A member of the break-glass group is admitted …
    let t = Instant::now();
    let out = patch("alice", &["oncall", "system:masters"], hotfix);
    assert!(out.status.success(), "break-glass denied: {}", String::from_utf8_lossy(&out.stderr));
    // … its window is stamped on the object by gitgate's mutating webhook
    // (so every replica, after a failover too, ends it at the same time) …
    let live = get(c, &["configmap", "settings", "-n", ns]).unwrap();
    let until =
        live["metadata"]["annotations"]["gitgate.dev/break-glass-until"].as_str().unwrap_or_default().to_owned();
    let left = gitgate::audit::record::parse_rfc3339_micros(&until)
        .map(|t| t - gitgate::audit::record::now_micros())
        .unwrap_or_else(|| panic!("no window stamped: {live:#}"));
    assert!((0..=3_500_000).contains(&left), "the window is the 3 s TTL from the edit: {until}");
    // … a break-glass change may not move its own window …
    let extend = r#"{"metadata":{"annotations":{"gitgate.dev/break-glass":"INC-42 hotfix","gitgate.dev/break-glass-until":"2099-01-01T00:00:00Z"}}}"#;
    let out = patch("alice", &["oncall", "system:masters"], extend);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("may not move its own window"), "{err}");
    // … self-heal leaves the change alone while the window lasts …
    std::thread::sleep(Duration::from_millis(1500));
    let live = get(c, &["configmap", "settings", "-n", ns]).unwrap();
    assert_eq!(live["data"]["value"], "hotfix", "reverted inside the break-glass window");
    let a = app(&status(&s), "glass").cloned().unwrap();
    assert_eq!(a["sync"], "OutOfSync", "{a:#}");
    // … and puts Git back once it ends (3 s after the edit at the earliest),
    // the annotations with it (Git's content is applied, then the
    // annotations another manager set are removed: two writes, so wait for
    // both — regression: a run under load read the object in between).
    wait_until("Git's value back after the window", Duration::from_secs(20), || {
        let v = get(c, &["configmap", "settings", "-n", ns])?;
        (v["data"]["value"] == "git").then_some(())
    });
    let took = t.elapsed();
    assert!(took >= Duration::from_secs(3), "reverted after {took:?}, before the 3 s window ended");
    eprintln!("break-glass change reverted {took:?} after the edit");
    let back = wait_until("the break-glass annotations gone with the revert", Duration::from_secs(10), || {
        let v = get(c, &["configmap", "settings", "-n", ns])?;
        let gone = v["metadata"]["annotations"]["gitgate.dev/break-glass"].is_null()
            && v["metadata"]["annotations"]["gitgate.dev/break-glass-until"].is_null();
        gone.then_some(v)
    });
    assert_eq!(back["data"]["value"], "git", "{back:#}");
    wait_until("the app to be Synced again", Duration::from_secs(10), || {
        (app(&status(&s), "glass")?["sync"] == "Synced").then_some(())
    });

    // The audit log tells the story: admitted as break-glass (by alice),
    // window opened, window ended.
    let admitted = audit_events(work.path())
        .into_iter()
        .find(|e| {
            e["event"] == "admission" && e["endpoint"] == "validate" && e["user"] == "alice" && e["decision"] != "deny"
        })
        .expect("alice's admission record");
    assert!(admitted["reasons"].to_string().contains("break-glass"), "{admitted:#}");
    let opened = audit_query(work.path(), "breakGlassOpened");
    assert_eq!(opened.len(), 1, "{opened:#?}");
    assert_eq!(opened[0]["name"], "settings");
    assert_eq!(opened[0]["app"], "glass");
    assert!(opened[0]["reasons"].to_string().contains("INC-42 hotfix"), "{:#}", opened[0]);
    let expired = audit_query(work.path(), "breakGlassExpired");
    assert_eq!(expired.len(), 1, "{expired:#?}");
    assert_eq!(expired[0]["name"], "settings");
    assert!(audit_events(work.path()).iter().any(|e| e["event"] == "driftReverted" && e["name"] == "settings"));
    s.terminate(Duration::from_secs(20));
    cleanup();
}
