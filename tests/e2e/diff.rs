//! `gitgate diff` against a real kube-apiserver (issue 17, item 4): after
//! a sync, Git moves while nothing syncs (`serve --sync off`); the diff
//! then names the changed image with its hunk, the new object, the pruned
//! one, and the rotated Secret without its data — computed by dry-run
//! applies as the reconciler — and exits as diff(1) does. Also: how long
//! the diff of a 1,000-object app takes.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::cluster::{self, Cluster};
use crate::common::ServeProcess;
use crate::support::Repo;
use crate::sync::{BIN, PROJECT, RECONCILER, VIEWERS, cm, reconciler_kubeconfig, serve, viewer_token};

const CANARY_1: &str = "CANARY-e2e-first-0f9a";
const CANARY_2: &str = "CANARY-e2e-second-77c1";

fn web(image: &str) -> String {
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  replicas: 0\n  selector:\n    matchLabels: {{app: web}}\n  template:\n    metadata:\n      labels: {{app: web}}\n    spec:\n      containers:\n        - name: web\n          image: registry.example.invalid/web:{image}\n"
    )
}

/// `data`, not `stringData`: the apiserver never returns `stringData`,
/// so the sync loop reads a Secret written with it as drifted forever.
fn secret(value: &str) -> String {
    use base64::Engine as _;
    let v = base64::engine::general_purpose::STANDARD.encode(value);
    format!("apiVersion: v1\nkind: Secret\nmetadata:\n  name: db\ntype: Opaque\ndata:\n  password: {v}\n")
}

/// `gitgate serve` that reads Git and serves the API, and syncs nothing.
fn serve_idle(c: &Cluster, work: &std::path::Path, repo: &Repo, ns: &str) -> ServeProcess {
    let kubeconfig = reconciler_kubeconfig(c, work);
    let args = [
        "--repo",
        &repo.url(),
        "--poll-interval",
        "1s",
        "--kubeconfig",
        kubeconfig.to_str().unwrap(),
        "--namespace",
        ns,
        "--sync",
        "off",
        "--reconciler",
        RECONCILER,
        "--admin-group",
        VIEWERS,
    ];
    ServeProcess::spawn_on(BIN, work, "127.0.0.1:0", &args)
}

/// The app is Synced at `commit`; the status and the log when it is not
/// within 90 s.
fn synced(s: &ServeProcess, name: &str, commit: &str) {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let st = crate::sync::status(s);
        let a = crate::sync::app(&st, name).cloned().unwrap_or(Value::Null);
        if a["sync"] == "Synced" && a["syncedCommit"] == commit {
            return;
        }
        assert!(Instant::now() < deadline, "{name} not synced at {commit}: {a:#}\n{}", s.log.lock().unwrap());
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// `gitgate diff <args>` as a viewer: (exit code, stdout, stderr).
fn diff(s: &ServeProcess, args: &[&str]) -> (Option<i32>, String, String) {
    let out = std::process::Command::new(BIN)
        .arg("diff")
        .args(args)
        .args(["--server", &format!("https://127.0.0.1:{}", s.addr.port()), "--ca"])
        .arg(&s.ca)
        .env("GITGATE_TOKEN", viewer_token())
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn no_canary(what: &str, text: &str) {
    use base64::Engine as _;
    for c in [CANARY_1, CANARY_2] {
        let b64 = base64::engine::general_purpose::STANDARD.encode(c);
        assert!(
            !text.contains(c) && !text.contains(&b64) && !text.contains("CANARY"),
            "{what} holds a Secret's value:\n{text}"
        );
    }
}

#[test]
fn diff_names_what_a_sync_would_change_and_exits_as_diff_does() {
    let Some(c) = cluster::cluster("diff_names_what_a_sync_would_change_and_exits_as_diff_does") else { return };
    let _serial = cluster::cluster_wide();
    let ns = "e2e-diff";
    let gitgate_ns = "gitgate-e2e-diff";
    let repo = Repo::new();
    repo.write(
        "gitgate.yaml",
        &format!(
            "{PROJECT}apps:\n  - {{name: shop, project: e2e, path: apps/shop, destination: {{namespace: {ns}}}, syncPolicy: {{prune: true}}}}\n"
        ),
    );
    repo.write("apps/shop/ns.yaml", &format!("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {ns}\n"));
    repo.write("apps/shop/web.yaml", &web("1"));
    repo.write("apps/shop/same.yaml", &cm("same", 0, "1"));
    repo.write("apps/shop/old.yaml", &cm("old", 0, "1"));
    repo.write("apps/shop/db.yaml", &secret(CANARY_1));
    let c1 = repo.commit("shop");

    // 1. Synced: no differences, exit 0.
    let work = tempfile::tempdir().unwrap();
    let s = serve(c, work.path(), &repo, gitgate_ns, &["--wave-timeout", "60s"]);
    synced(&s, "shop", &c1);
    let (code, out, err) = diff(&s, &["shop"]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains(&format!("app shop at commit {}", &c1[..12])), "{out}");
    assert!(out.trim_end().ends_with("no differences: 5 unchanged"), "{out}");
    s.terminate(Duration::from_secs(20));

    // 2. Git moves; nothing syncs it.
    repo.write("apps/shop/web.yaml", &web("2"));
    repo.write("apps/shop/new.yaml", &cm("new", 0, "1"));
    repo.remove("apps/shop/old.yaml");
    repo.write("apps/shop/db.yaml", &secret(CANARY_2));
    let c2 = repo.commit("web 2, new, old retired, db rotated");
    let idle = tempfile::tempdir().unwrap();
    let s = serve_idle(c, idle.path(), &repo, gitgate_ns);
    let started = Instant::now();
    let json: Value = loop {
        let (code, out, err) = diff(&s, &["shop", "--json"]);
        if code == Some(1) {
            let v: Value = serde_json::from_str(&out).unwrap();
            if v["commit"] == c2 {
                break v;
            }
        }
        assert!(started.elapsed() < Duration::from_secs(60), "no diff at {c2}: {code:?} {out}{err}");
        std::thread::sleep(Duration::from_millis(200));
    };
    no_canary("the JSON", &json.to_string());
    let objects = json["objects"].as_array().unwrap();
    let find =
        |id: &str| objects.iter().find(|o| o["id"] == id).unwrap_or_else(|| panic!("{id} not in {json:#}")).clone();
    let w = find(&format!("{ns}/Deployment/web"));
    assert_eq!((w["change"].as_str(), w["file"].as_str()), (Some("Changed"), Some("apps/shop/web.yaml")));
    let hunk = w["diff"].as_str().unwrap();
    assert!(hunk.contains("\n@@ -"), "{hunk}");
    assert!(
        hunk.lines().any(|l| l.starts_with('-') && l.ends_with(" image: registry.example.invalid/web:1")),
        "{hunk}"
    );
    assert!(
        hunk.lines().any(|l| l.starts_with('+') && l.ends_with(" image: registry.example.invalid/web:2")),
        "{hunk}"
    );
    assert!(!hunk.contains("managedFields") && !hunk.contains("resourceVersion"), "{hunk}");
    let n = find(&format!("{ns}/ConfigMap/new"));
    assert_eq!(n["change"], "Created");
    assert!(n["diff"].as_str().unwrap().contains("+  name: new"), "{n:#}");
    let o = find(&format!("{ns}/ConfigMap/old"));
    assert_eq!((o["change"].as_str(), o["file"].as_str()), (Some("Pruned"), Some("apps/shop/old.yaml")));
    let db = find(&format!("{ns}/Secret/db"));
    assert_eq!(
        (db["change"].as_str(), db["secret"].as_bool(), db["diff"].as_str()),
        (Some("Changed"), Some(true), Some(""))
    );
    assert_eq!(json["unchanged"], 2, "the Namespace and `same`: {json:#}");
    assert_eq!(objects.len(), 4, "{json:#}");

    // The text: exit 1, and no Secret value anywhere.
    let (code, out, err) = diff(&s, &["shop"]);
    assert_eq!(code, Some(1), "{out}{err}");
    assert!(
        out.contains(&format!("changed {ns}/Secret/db (apps/shop/db.yaml)\n  (a Secret: its data is not shown)")),
        "{out}"
    );
    assert!(out.trim_end().ends_with("1 created, 2 changed, 1 pruned, 2 unchanged"), "{out}");
    no_canary("the text", &out);
    // Nothing was written: the cluster is still at commit 1.
    let web_live = crate::sync::get(c, &["deployment", "web", "-n", ns]).unwrap();
    assert!(web_live.to_string().contains("web:1"));
    assert!(crate::sync::get(c, &["configmap", "new", "-n", ns]).is_none());

    // 3. At commit 1 (the cluster's): no differences; a commit off the
    //    branch, an unknown app: trouble (2).
    let (code, out, err) = diff(&s, &["shop", "--commit", &c1[..10]]);
    assert_eq!(code, Some(0), "{out}{err}");
    let (code, _, err) = diff(&s, &["shop", "--commit", "0123456789abcdef"]);
    assert_eq!(code, Some(2));
    assert!(err.contains("commit 0123456789abcdef is unknown"), "{err}");
    let (code, _, err) = diff(&s, &["nope"]);
    assert_eq!(code, Some(2));
    assert!(err.contains("no app named nope"), "{err}");
    // without a token: refused, still trouble
    let out = std::process::Command::new(BIN)
        .args(["diff", "shop", "--server", &format!("https://127.0.0.1:{}", s.addr.port()), "--ca"])
        .arg(&s.ca)
        .env_remove("GITGATE_TOKEN")
        .env("KUBECONFIG", "/nonexistent")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stderr));
    // a token no project role names: 403 (the route is behind the same gate)
    let stranger = crate::sync::sa_token(c, "gitgate-e2e-strangers", "stranger");
    let out = std::process::Command::new(BIN)
        .args(["diff", "shop", "--server", &format!("https://127.0.0.1:{}", s.addr.port()), "--ca"])
        .arg(&s.ca)
        .env("GITGATE_TOKEN", &stranger)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("403"), "{err}");

    no_canary("serve's log", &s.log.lock().unwrap());
    s.terminate(Duration::from_secs(20));
}

/// The figure (≤ 3 s): the diff of a 1,000-object app against the
/// real apiserver, in sync (one list per kind) and with 999 objects
/// changed (and a dry-run apply each).
#[test]
fn the_diff_of_a_thousand_objects() {
    let Some(c) = cluster::cluster("the_diff_of_a_thousand_objects") else { return };
    let _serial = cluster::cluster_wide();
    let ns = "e2e-diff-1k";
    let gitgate_ns = "gitgate-e2e-diff-1k";
    let repo = Repo::new();
    repo.write(
        "gitgate.yaml",
        &format!(
            "{PROJECT}apps:\n  - {{name: big, project: e2e, path: apps/big, destination: {{namespace: {ns}}}, syncPolicy: {{prune: true}}}}\n"
        ),
    );
    repo.write("apps/big/ns.yaml", &format!("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {ns}\n"));
    let all = |v: &str| {
        let mut text = String::new();
        for i in 0..999 {
            text.push_str(&cm(&format!("cm-{i:04}"), 0, v));
            text.push_str("---\n");
        }
        text
    };
    repo.write("apps/big/cms.yaml", &all("1"));
    let c1 = repo.commit("1,000 objects");
    let work = tempfile::tempdir().unwrap();
    let s = serve(c, work.path(), &repo, gitgate_ns, &["--wave-timeout", "120s"]);
    crate::sync::wait_until("1,000 objects synced", Duration::from_secs(300), || {
        let st = crate::sync::status(&s);
        let a = crate::sync::app(&st, "big")?;
        (a["sync"] == "Synced" && a["syncedCommit"] == c1).then_some(())
    });
    s.terminate(Duration::from_secs(20));
    repo.write("apps/big/cms.yaml", &all("2"));
    let c2 = repo.commit("all changed");

    let (_t, cache) = crate::support::cache_dir();
    let src = Arc::new(gitgate::source::GitSource::open(&repo.url(), &cache).unwrap());
    src.fetch().unwrap();
    let renderer = gitgate::render::Renderer::new(gitgate::render::RenderOptions::default());
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async {
        let client = c.client().await;
        let target = Arc::new(gitgate::sync::target::Target::new("e2e", client.clone(), 500.0, 1000));
        let inventories = gitgate::sync::inventory::read_all(&client, gitgate_ns).await.unwrap();
        for (commit, changed) in [(&c1, 0usize), (&c2, 999)] {
            let desired = renderer.desired(&src.repo(), crate::support::oid(commit)).unwrap();
            let app = desired.app("big").unwrap().clone();
            let t = Instant::now();
            let d = gitgate::sync::diff::app_diff(&target, &desired, &app, inventories.get("big"), 16).await.unwrap();
            let took = t.elapsed();
            eprintln!("app_diff of 1,000 objects, {changed} changed: {took:?}");
            assert_eq!((d.objects.len(), d.unchanged), (changed, 1000 - changed));
            assert!(took < Duration::from_secs(60), "{took:?}");
        }
    });
}
