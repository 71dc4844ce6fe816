//! The embedded sync loop against a real kube-apiserver and
//! kube-controller-manager: `gitgate serve` applies Git by wave with its
//! stamps, updates only what changed, prunes (under the mass-prune guard),
//! heals a bypass within a second, leaves detect-only apps and ignored
//! fields alone, restores its own deleted webhook configuration, and hands
//! the lead over when the leader dies.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::cluster::{self, Cluster};
use crate::common::ServeProcess;
use crate::support::Repo;

pub(crate) const BIN: &str = env!("CARGO_BIN_EXE_gitgate");
pub(crate) const RECONCILER: &str = "system:serviceaccount:gitops:gitgate";
/// The group of `gitgate-e2e-viewers`' ServiceAccounts: an `--admin-group`
/// of every gitgate these tests start (`/api/v1` needs a login).
pub(crate) const VIEWERS: &str = "system:serviceaccounts:gitgate-e2e-viewers";

/// A ServiceAccount token (`kubectl create token`) of namespace `ns`.
pub(crate) fn sa_token(c: &Cluster, ns: &str, sa: &str) -> String {
    c.ensure_namespace(ns);
    let _ = c.kubectl(&["-n", ns, "create", "serviceaccount", sa]);
    c.kubectl_ok(&["-n", ns, "create", "token", sa, "--duration", "1h"]).trim().to_string()
}

/// The token of a member of [`VIEWERS`], made once.
pub(crate) fn viewer_token() -> &'static str {
    static TOKEN: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    TOKEN.get_or_init(|| {
        let c = cluster::cluster("viewer_token").expect("the e2e cluster is up");
        sa_token(c, "gitgate-e2e-viewers", "viewer")
    })
}

/// A project that may create the app's Namespace.
pub(crate) const PROJECT: &str =
    "projects:\n  - {name: e2e, destinations: [{cluster: \"*\", namespace: \"*\"}], clusterKinds: [Namespace]}\n";

/// A kubeconfig that acts as the reconciler (impersonated by the admin).
pub(crate) fn reconciler_kubeconfig(c: &Cluster, dir: &std::path::Path) -> std::path::PathBuf {
    let admin = std::fs::read_to_string(&c.kubeconfig).unwrap();
    let mut out = String::new();
    for line in admin.lines() {
        out.push_str(line);
        out.push('\n');
        if line.trim_end() == "  user:" {
            out.push_str(&format!("    as: {RECONCILER}\n    as-groups: [\"system:masters\"]\n"));
        }
    }
    let path = dir.join("reconciler.kubeconfig");
    std::fs::write(&path, out).unwrap();
    path
}

pub(crate) fn serve(c: &Cluster, work: &std::path::Path, repo: &Repo, ns: &str, extra: &[&str]) -> ServeProcess {
    serve_on(c, work, repo, ns, "127.0.0.1:0", extra)
}

pub(crate) fn serve_on(
    c: &Cluster,
    work: &std::path::Path,
    repo: &Repo,
    ns: &str,
    listen: &str,
    extra: &[&str],
) -> ServeProcess {
    serve_with(&reconciler_kubeconfig(c, work), work, repo, ns, listen, extra)
}

/// `gitgate serve --sync on` with a given kubeconfig (its current context
/// is the default cluster; other contexts are destinations by name).
pub(crate) fn serve_with(
    kubeconfig: &std::path::Path,
    work: &std::path::Path,
    repo: &Repo,
    ns: &str,
    listen: &str,
    extra: &[&str],
) -> ServeProcess {
    let mut args = vec![
        "--repo".to_string(),
        repo.url(),
        "--poll-interval".into(),
        "1s".into(),
        "--kubeconfig".into(),
        kubeconfig.display().to_string(),
        "--namespace".into(),
        ns.into(),
        "--sync".into(),
        "on".into(),
        "--reconciler".into(),
        RECONCILER.into(),
        "--lease-duration".into(),
        "3s".into(),
        "--admin-group".into(),
        VIEWERS.into(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    ServeProcess::spawn_on(BIN, work, listen, &args)
}

/// `GET /api/v1/apps` of a running gitgate, signed in as a viewer.
pub(crate) fn status(s: &ServeProcess) -> Value {
    let out = std::process::Command::new("curl")
        .args(["-sS", "--max-time", "5", "-H", &format!("Authorization: Bearer {}", viewer_token()), "--cacert"])
        .arg(&s.ca)
        .arg(format!("https://127.0.0.1:{}/api/v1/apps", s.addr.port()))
        .output()
        .unwrap();
    serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
}

/// `GET /metrics` of a running gitgate.
fn metrics(s: &ServeProcess) -> String {
    let out = std::process::Command::new("curl")
        .args(["-sS", "--cacert"])
        .arg(&s.ca)
        .arg(format!("https://127.0.0.1:{}/metrics", s.addr.port()))
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub(crate) fn app<'a>(st: &'a Value, name: &str) -> Option<&'a Value> {
    st["apps"].as_array()?.iter().find(|a| a["name"] == name)
}

pub(crate) fn wait_until<T>(what: &str, within: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The app is Synced at `commit`.
pub(crate) fn wait_synced(s: &ServeProcess, name: &str, commit: &str) -> Value {
    wait_until(&format!("app {name} synced at {commit}"), Duration::from_secs(60), || {
        let st = status(s);
        let a = app(&st, name)?;
        (a["sync"] == "Synced" && a["syncedCommit"] == commit).then(|| a.clone())
    })
}

pub(crate) fn get(c: &Cluster, args: &[&str]) -> Option<Value> {
    let mut a = vec!["get"];
    a.extend_from_slice(args);
    a.extend_from_slice(&["-o", "json"]);
    let out = c.kubectl(&a);
    out.status.success().then(|| serde_json::from_slice(&out.stdout).unwrap())
}

pub(crate) fn cm(name: &str, wave: i64, value: &str) -> String {
    format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\n  annotations:\n    gitgate.dev/sync-wave: \"{wave}\"\ndata:\n  value: \"{value}\"\n"
    )
}

const WEB: &str = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\n  annotations:\n    argocd.argoproj.io/sync-wave: \"1\"\n    gitgate.dev/ignore-fields: /spec/replicas\nspec:\n  replicas: 0\n  selector:\n    matchLabels: {app: web}\n  template:\n    metadata:\n      labels: {app: web}\n    spec:\n      containers:\n        - name: web\n          image: registry.example.invalid/web:1.0.0\n";

/// Foreign fields are drift (issue 15, item 5): a sidecar and
/// `hostNetwork` added behind the webhook's back (here no webhook is
/// installed, as when it was down) are fields Git does not set, so a
/// field-by-field comparison with Git never sees them (Argo CD and Flux do
/// not). gitgate reads `managedFields`: self-heal removes them, and the
/// audit log names the manager that added them.
#[test]
fn fields_another_manager_added_are_drift_and_healed() {
    let Some(c) = cluster::cluster("fields_another_manager_added_are_drift_and_healed") else { return };
    let _serial = cluster::cluster_wide();
    let ns = "e2e-foreign";
    let repo = Repo::new();
    repo.write(
        "gitgate.yaml",
        &format!("{PROJECT}apps:\n  - {{name: fg, project: e2e, path: app, destination: {{namespace: {ns}}}, syncPolicy: {{prune: true, selfHeal: true}}}}\n"),
    );
    repo.write("app/ns.yaml", &format!("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {ns}\n"));
    repo.write("app/web.yaml", WEB);
    let c1 = repo.commit("web");
    let work = tempfile::tempdir().unwrap();
    let s = serve(c, work.path(), &repo, "gitgate-e2e-foreign", &[]);
    wait_synced(&s, "fg", &c1);

    let t = Instant::now();
    let out = c.kubectl(&[
        "patch",
        "deployment",
        "web",
        "-n",
        ns,
        "--type=json",
        "-p",
        r#"[{"op":"add","path":"/spec/template/spec/containers/-","value":{"name":"sidecar","image":"registry.example.invalid/evil:1"}},{"op":"add","path":"/spec/template/spec/hostNetwork","value":true}]"#,
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let healed = wait_until("the sidecar and hostNetwork removed", Duration::from_secs(20), || {
        let d = get(c, &["deployment", "web", "-n", ns])?;
        let spec = &d["spec"]["template"]["spec"];
        (spec["containers"].as_array()?.len() == 1 && spec["hostNetwork"].is_null()).then_some(d)
    });
    eprintln!("foreign fields removed {:?} after the patch", t.elapsed());
    assert_eq!(healed["spec"]["template"]["spec"]["containers"][0]["name"], "web", "Git's container stays");
    let reverted = wait_until("the revert in the audit log", Duration::from_secs(10), || {
        audit_events(work.path()).into_iter().find(|e| e["event"] == "driftReverted" && e["name"] == "web")
    });
    let reasons = reverted["reasons"].to_string();
    assert!(reasons.contains("set by kubectl-patch"), "the manager is named: {reverted:#}");
    assert!(reasons.contains("/spec/template/spec/containers/1") && reasons.contains("hostNetwork"), "{reverted:#}");
    wait_until("the app Synced again", Duration::from_secs(10), || {
        (app(&status(&s), "fg")?["sync"] == "Synced").then_some(())
    });
    // A value another manager set on an ignored field stays (the HPA case).
    let out = c.kubectl(&["scale", "deployment", "web", "-n", ns, "--replicas=2"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(get(c, &["deployment", "web", "-n", ns]).unwrap()["spec"]["replicas"], 2);
    s.terminate(Duration::from_secs(20));
}

/// A field the kind does not have (a typo in Git) fails that object's
/// apply with the apiserver's own message, naming the field, as `kubectl
/// apply` does; it is not dropped in silence (gitgate applies with
/// `fieldValidation=Ignore`, which must not change that).
#[test]
fn a_typo_in_git_fails_the_apply_naming_the_field() {
    let Some(c) = cluster::cluster("a_typo_in_git_fails_the_apply_naming_the_field") else { return };
    let ns = "e2e-typo";
    c.ensure_namespace(ns);
    let repo = Repo::new();
    repo.write("gitgate.yaml", &format!("apps:\n  - {{name: typo, path: app, destination: {{namespace: {ns}}}}}\n"));
    repo.write("app/good.yaml", &cm("good", 0, "1"));
    repo.write("app/bad.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: bad\ndta:\n  value: \"1\"\n");
    repo.commit("a typo");
    let work = tempfile::tempdir().unwrap();
    let s = serve(c, work.path(), &repo, "gitgate-e2e-typo", &[]);
    let typo = wait_until("the typo reported", Duration::from_secs(60), || {
        let st = status(&s);
        let a = app(&st, "typo")?;
        (a["sync"] == "Failed").then(|| a.clone())
    });
    let bad = typo["objects"].as_array().unwrap().iter().find(|o| o["name"] == "bad").cloned().unwrap();
    let message = bad["message"].as_str().unwrap_or_default();
    assert!(message.contains(".dta: field not declared in schema"), "{typo:#}");
    let good = typo["objects"].as_array().unwrap().iter().find(|o| o["name"] == "good").cloned().unwrap();
    assert_eq!(good["sync"], "Synced", "the rest of the app is applied: {typo:#}");
    assert!(get(c, &["configmap", "bad", "-n", ns]).is_none(), "nothing half-applied");
}

pub(crate) fn audit_events(work: &std::path::Path) -> Vec<Value> {
    let text = std::fs::read_to_string(work.join("gitgate-data/audit/audit.jsonl")).unwrap_or_default();
    text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
}

#[test]
fn git_is_applied_by_wave_updated_pruned_and_healed() {
    let Some(c) = cluster::cluster("git_is_applied_by_wave_updated_pruned_and_healed") else { return };
    let _serial = cluster::cluster_wide();
    let ns = "e2e-sync";
    let repo = Repo::new();
    repo.write(
        "gitgate.yaml",
        &format!(
            "{PROJECT}apps:\n  - {{name: shop, project: e2e, path: apps/shop, destination: {{namespace: {ns}}}, syncPolicy: {{prune: true, selfHeal: true}}}}\n  - {{name: watch, path: apps/watch, destination: {{namespace: {ns}}}, syncPolicy: {{detectOnly: true}}}}\n"
        ),
    );
    repo.write("apps/shop/ns.yaml", &format!("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {ns}\n"));
    repo.write("apps/shop/first.yaml", &cm("first", -1, "1"));
    repo.write("apps/shop/web.yaml", WEB);
    repo.write("apps/shop/last.yaml", &cm("last", 2, "1"));
    repo.write("apps/shop/extra-a.yaml", &cm("extra-a", 0, "a"));
    repo.write("apps/shop/extra-b.yaml", &cm("extra-b", 0, "b"));
    repo.write("apps/watch/watched.yaml", &cm("watched", 0, "git"));
    let c1 = repo.commit("shop: first cut");

    let work = tempfile::tempdir().unwrap();
    let s = serve(c, work.path(), &repo, "gitgate-e2e-sync", &["--prune-guard-count", "1", "--wave-timeout", "30s"]);

    // 1. Applied from cold, stamped, in wave order.
    let shop = wait_synced(&s, "shop", &c1);
    assert_eq!(shop["health"], "Healthy", "{shop:#}");
    assert_eq!(shop["objects"].as_array().unwrap().len(), 6);
    let first = get(c, &["configmap", "first", "-n", ns, "--show-managed-fields"]).unwrap();
    let ann = &first["metadata"]["annotations"];
    assert_eq!(ann["gitgate.dev/commit"], c1);
    assert_eq!(ann["gitgate.dev/source"], "shop:apps/shop/first.yaml");
    assert!(ann["gitgate.dev/digest"].as_str().unwrap().starts_with("sha256:"));
    assert_eq!(first["metadata"]["labels"]["gitgate.dev/app"], "shop");
    let managers: Vec<&str> =
        first["metadata"]["managedFields"].as_array().unwrap().iter().map(|m| m["manager"].as_str().unwrap()).collect();
    assert_eq!(managers, ["gitgate"], "one field manager");
    let order: Vec<String> = audit_events(work.path())
        .iter()
        .filter(|e| e["event"] == "apply" && e["app"] == "shop")
        .map(|e| e["name"].as_str().unwrap().to_string())
        .collect();
    let pos = |n: &str| order.iter().position(|o| o == n).unwrap_or_else(|| panic!("{n} not applied: {order:?}"));
    assert!(pos(ns) < pos("first") && pos("first") < pos("extra-a") && pos("extra-a") < pos("web"), "{order:?}");
    assert!(pos("web") < pos("last"), "wave 2 waits for wave 1: {order:?}");
    // the inventory records what the app applied
    let inv = get(c, &["configmap", "gitgate-inventory-shop", "-n", "gitgate-e2e-sync"]).unwrap();
    assert_eq!(inv["data"]["inventory"].as_str().unwrap().lines().count(), 6);
    // detect-only apps are reported, not written
    let watch = app(&status(&s), "watch").cloned().unwrap();
    assert_eq!(watch["sync"], "OutOfSync", "{watch:#}");
    assert!(get(c, &["configmap", "watched", "-n", ns]).is_none());
    // Who is looking: the apiserver reviews the token (TokenReview) —
    // none is 401, a ServiceAccount no role names is 403.
    let code = |token: Option<&str>| {
        let mut cmd = std::process::Command::new("curl");
        cmd.args(["-sS", "-o", "/dev/null", "-w", "%{http_code}", "--cacert"]).arg(&s.ca);
        if let Some(t) = token {
            cmd.args(["-H", &format!("Authorization: Bearer {t}")]);
        }
        let out = cmd.arg(format!("https://127.0.0.1:{}/api/v1/apps", s.addr.port())).output().unwrap();
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    assert_eq!(code(None), "401");
    assert_eq!(code(Some("not-a-token")), "401");
    assert_eq!(code(Some(&sa_token(c, "gitgate-e2e-strangers", "stranger"))), "403");
    // `gitgate status` prints it (exit 3: an app is not Synced) …
    let out = std::process::Command::new(BIN)
        .args(["status", "--server", &format!("https://127.0.0.1:{}", s.addr.port()), "--ca"])
        .arg(&s.ca)
        .env("GITGATE_TOKEN", viewer_token())
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(3), "{table}");
    assert!(table.lines().any(|l| l.starts_with("shop") && l.contains("Synced") && l.contains(&c1[..7])), "{table}");
    assert!(table.lines().any(|l| l.starts_with("watch") && l.contains("OutOfSync")), "{table}");
    // … and so do the metrics.
    let exported = metrics(&s);
    assert!(
        exported.contains(&format!(
            "gitgate_app_info{{app=\"shop\",sync_status=\"Synced\",health_status=\"Healthy\",commit=\"{c1}\"}} 1"
        )),
        "{exported}"
    );

    // 2. A commit rewrites only what it changed: no update storm.
    let web_before = get(c, &["deployment", "web", "-n", ns]).unwrap();
    repo.write("apps/shop/first.yaml", &cm("first", -1, "2"));
    let c2 = repo.commit("first: 2");
    wait_synced(&s, "shop", &c2);
    let first = get(c, &["configmap", "first", "-n", ns]).unwrap();
    assert_eq!(first["data"]["value"], "2");
    assert_eq!(first["metadata"]["annotations"]["gitgate.dev/commit"], c2);
    let web_after = get(c, &["deployment", "web", "-n", ns]).unwrap();
    assert_eq!(web_after["metadata"]["resourceVersion"], web_before["metadata"]["resourceVersion"]);
    assert_eq!(web_after["metadata"]["annotations"]["gitgate.dev/commit"], c1);
    let applies = audit_events(work.path()).iter().filter(|e| e["event"] == "apply" && e["app"] == "shop").count();
    assert_eq!(applies, 7, "the second commit wrote one object, not six");

    // 3. Self-heal: a bypass (no webhook here) is reverted within a second.
    let t = Instant::now();
    c.kubectl_ok(&["patch", "configmap", "first", "-n", ns, "--type=merge", "-p", r#"{"data":{"value":"hacked"}}"#]);
    wait_until("the drift to be reverted", Duration::from_secs(10), || {
        let v = get(c, &["configmap", "first", "-n", ns])?;
        (v["data"]["value"] == "2").then_some(())
    });
    let healed = t.elapsed();
    eprintln!("drift reverted in {healed:?} (kubectl round trips included)");
    assert!(audit_events(work.path()).iter().any(|e| e["event"] == "driftReverted" && e["name"] == "first"));
    assert!(metrics(&s).contains("gitgate_drift_total{app=\"shop\"}"));
    // … but a field Git leaves to others (ignore-fields) is not fought over
    c.kubectl_ok(&["scale", "deployment", "web", "-n", ns, "--replicas=2"]);
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(get(c, &["deployment", "web", "-n", ns]).unwrap()["spec"]["replicas"], 2);
    // (back to 0: without a kubelet, 2 replicas never become available,
    // and wave 2 waits for wave 1 to be healthy)
    c.kubectl_ok(&["scale", "deployment", "web", "-n", ns, "--replicas=0"]);

    // 4. Prune: what left Git is deleted; the mass-prune guard stops a
    //    sync that would delete more than allowed (here: 1) …
    repo.remove("apps/shop/extra-a.yaml");
    repo.remove("apps/shop/extra-b.yaml");
    let c3 = repo.commit("drop extras");
    let guarded = wait_until("the prune guard", Duration::from_secs(30), || {
        let st = status(&s);
        let a = app(&st, "shop")?;
        (a["targetCommit"] == c3 && a["sync"] == "Failed")
            .then(|| a["message"].as_str().unwrap_or_default().to_string())
    });
    assert!(guarded.contains("Gitgate-Allow-Prune: yes"), "{guarded}");
    assert!(get(c, &["configmap", "extra-a", "-n", ns]).is_some());
    // … until a commit says so.
    repo.write("apps/shop/README", "extras retired\n");
    let c4 = repo.commit("retire extras\n\nGitgate-Allow-Prune: yes");
    wait_synced(&s, "shop", &c4);
    assert!(get(c, &["configmap", "extra-a", "-n", ns]).is_none());
    assert!(get(c, &["configmap", "extra-b", "-n", ns]).is_none());
    assert!(audit_events(work.path()).iter().any(|e| e["event"] == "prune" && e["name"] == "extra-a"));

    s.terminate(Duration::from_secs(20));
}

#[test]
fn the_guard_restores_webhooks_and_the_lead_fails_over() {
    let Some(c) = cluster::cluster("the_guard_restores_webhooks_and_the_lead_fails_over") else { return };
    let _serial = cluster::cluster_wide();
    let ns = "e2e-guard";
    let repo = Repo::new();
    repo.write(
        "gitgate.yaml",
        &format!("{PROJECT}apps:\n  - {{name: guarded, project: e2e, path: app, destination: {{namespace: {ns}}}, syncPolicy: {{prune: true, selfHeal: true}}}}\n"),
    );
    repo.write("app/ns.yaml", &format!("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {ns}\n"));
    repo.write("app/settings.yaml", &cm("settings", 0, "1"));
    let c1 = repo.commit("guarded app");

    // Two replicas: one leads, the other stands by.
    let (wa, wb) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = serve(c, wa.path(), &repo, "gitgate-e2e-guard", &["--replica", "a"]);
    wait_synced(&a, "guarded", &c1);
    let b = serve(c, wb.path(), &repo, "gitgate-e2e-guard", &["--replica", "b"]);
    wait_until("b to stand by", Duration::from_secs(10), || (status(&b)["role"] == "follower").then_some(()));
    assert_eq!(status(&a)["role"], "leader");

    // Failover: the leader dies without a word; b takes over within the
    // lease (3 s) and syncs the next commit.
    let mut a = a;
    a.child.kill().unwrap();
    let _ = a.child.wait();
    let t = Instant::now();
    wait_until("b to lead", Duration::from_secs(15), || (status(&b)["role"] == "leader").then_some(()));
    eprintln!("failover took {:?}", t.elapsed());
    repo.write("app/settings.yaml", &cm("settings", 0, "2"));
    let c2 = repo.commit("settings: 2");
    wait_synced(&b, "guarded", &c2);
    b.terminate(Duration::from_secs(20));

    // The guard: with --webhook-endpoint, gitgate owns its webhook
    // configurations and puts them back when deleted or edited.
    let wc = tempfile::tempdir().unwrap();
    let g = serve(
        c,
        wc.path(),
        &repo,
        "gitgate-e2e-guard",
        &["--webhook-endpoint", "https://127.0.0.1:1", "--webhook-failure-policy", "Ignore", "--replica", "c"],
    );
    let vwc = || get(c, &["validatingwebhookconfiguration", "gitgate-validate"]);
    wait_until("the validating webhook configuration", Duration::from_secs(30), vwc);
    c.kubectl_ok(&["delete", "validatingwebhookconfiguration", "gitgate-validate"]);
    let t = Instant::now();
    wait_until("the deleted configuration to come back", Duration::from_secs(15), vwc);
    eprintln!("webhook configuration restored in {:?}", t.elapsed());
    c.kubectl_ok(&[
        "patch",
        "mutatingwebhookconfiguration",
        "gitgate-mutate",
        "--type=json",
        "-p",
        r#"[{"op":"replace","path":"/webhooks/0/failurePolicy","value":"Fail"}]"#,
    ]);
    wait_until("the edit to be undone", Duration::from_secs(15), || {
        let m = get(c, &["mutatingwebhookconfiguration", "gitgate-mutate"])?;
        (m["webhooks"][0]["failurePolicy"] == "Ignore").then_some(())
    });
    assert!(audit_events(wc.path()).iter().any(|e| e["event"] == "webhookConfigRestored"));
    g.terminate(Duration::from_secs(20));
    for kind in ["validatingwebhookconfiguration", "mutatingwebhookconfiguration"] {
        let _ = c.kubectl(&["delete", kind, "-l", "gitgate.dev/guard=true"]);
    }
}

pub(crate) fn run(args: &[&str], dir: &std::path::Path) -> String {
    let out = std::process::Command::new(BIN).args(args).current_dir(dir).output().unwrap();
    assert!(out.status.success(), "gitgate {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// The whole path: a Secret sealed in Git is applied by the sync loop
/// through gitgate's own webhooks (installed by the guard, failurePolicy
/// Fail, the CEL policies and the provenance gate deciding), unsealed at
/// /mutate, admitted at /validate, stored with working data, and stays in
/// sync; a human edit of it is denied.
#[test]
fn a_sealed_secret_in_git_is_synced_unsealed_and_stays_in_sync() {
    let Some(c) = cluster::cluster("a_sealed_secret_in_git_is_synced_unsealed_and_stays_in_sync") else { return };
    let _serial = cluster::cluster_wide();
    let ns = "e2e-gitsecret";
    let work = tempfile::tempdir().unwrap();
    let recipient = run(&["keygen", "-o", "cluster.key"], work.path()).trim().to_owned();
    std::fs::write(
        work.path().join("secret.yaml"),
        format!("apiVersion: v1\nkind: Secret\nmetadata:\n  name: db\n  namespace: {ns}\ntype: Opaque\nstringData:\n  password: s3cr3t-from-git\n"),
    )
    .unwrap();
    let sealed = run(&["seal", "-f", "secret.yaml", "--recipient", &recipient], work.path());
    let repo = Repo::new();
    repo.write(
        "gitgate.yaml",
        &format!("{PROJECT}apps:\n  - {{name: creds, project: e2e, path: app, destination: {{namespace: {ns}}}, syncPolicy: {{prune: true, selfHeal: true}}}}\n"),
    );
    repo.write("app/ns.yaml", &format!("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {ns}\n"));
    repo.write("app/db.yaml", &sealed);
    let c1 = repo.commit("sealed db credentials");

    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let policies = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
    let key = work.path().join("cluster.key");
    let client_ca = c.webhook_client_ca().expect("the e2e apiserver presents a webhook client certificate");
    let s = serve_on(
        c,
        work.path(),
        &repo,
        "gitgate-e2e-secret",
        &format!("127.0.0.1:{port}"),
        &[
            "--webhook-endpoint",
            &format!("https://127.0.0.1:{port}"),
            "--policies",
            policies.to_str().unwrap(),
            "--age-identity",
            key.to_str().unwrap(),
            "--client-ca",
            client_ca.to_str().unwrap(),
            "--resync-interval",
            "2s",
        ],
    );
    let cleanup = || {
        for kind in ["validatingwebhookconfiguration", "mutatingwebhookconfiguration"] {
            let _ = c.kubectl(&["delete", kind, "-l", "gitgate.dev/guard=true"]);
        }
    };
    // A sync that ran before the apiserver loaded the webhooks stored the
    // sealed form: drift, which the next sync (every 2 s here) corrects
    // through the webhooks.
    let synced = wait_until("the Secret unsealed through the webhook", Duration::from_secs(60), || {
        let st = status(&s);
        let a = app(&st, "creds")?;
        let secret = get(c, &["secret", "db", "-n", ns])?;
        let stamped = secret["metadata"]["annotations"]["gitgate.dev/sealed-digest"].is_string();
        (stamped && a["sync"] == "Synced" && a["syncedCommit"] == c1).then_some(secret)
    });
    use base64::Engine as _;
    let password =
        base64::engine::general_purpose::STANDARD.decode(synced["data"]["password"].as_str().unwrap()).unwrap();
    assert_eq!(password, b"s3cr3t-from-git");
    assert!(synced["metadata"]["annotations"]["gitgate.dev/sealed"].is_null(), "the marker is dropped");
    assert_eq!(synced["metadata"]["annotations"]["gitgate.dev/commit"], c1);
    // It stays in sync: no revert loop against the webhook's plaintext.
    std::thread::sleep(Duration::from_secs(3));
    let later = get(c, &["secret", "db", "-n", ns]).unwrap();
    assert_eq!(later["metadata"]["resourceVersion"], synced["metadata"]["resourceVersion"]);
    let a = app(&status(&s), "creds").cloned().unwrap();
    assert_eq!(a["sync"], "Synced", "{a:#}");
    // A human edit is denied, naming the commit.
    let out = c.kubectl(&[
        "patch",
        "secret",
        "db",
        "-n",
        ns,
        "--type=merge",
        "-p",
        r#"{"stringData":{"password":"by-hand"}}"#,
    ]);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success() && err.contains(&c1[..7]), "{err}");
    // A write that gets past the webhook (as if it were down: a kube-system
    // controller's identity is never sent to gitgate) changes the values
    // and nothing else. The MAC the unseal stamped no longer matches: self-
    // heal puts Git's sealed form back, which the webhook unseals again.
    let sneaked = base64::engine::general_purpose::STANDARD.encode("changed-while-down");
    let out = c.kubectl(&[
        "patch",
        "secret",
        "db",
        "-n",
        ns,
        "--as=system:serviceaccount:kube-system:generic-garbage-collector",
        "--type=merge",
        "-p",
        &format!(r#"{{"data":{{"password":"{sneaked}"}}}}"#),
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let t = std::time::Instant::now();
    wait_until("Git's sealed value back after a write past the webhook", Duration::from_secs(20), || {
        let secret = get(c, &["secret", "db", "-n", ns])?;
        let pw = base64::engine::general_purpose::STANDARD.decode(secret["data"]["password"].as_str()?).ok()?;
        (pw == b"s3cr3t-from-git").then_some(())
    });
    eprintln!("sealed values restored {:?} after the write", t.elapsed());
    let reverted = wait_until("the revert in the audit log", Duration::from_secs(10), || {
        let events = audit_events(work.path());
        events.into_iter().find(|e| e["event"] == "driftReverted" && e["name"] == "db")
    });
    assert_eq!(reverted["kind"], "Secret", "{reverted:#}");
    let audit = std::fs::read_to_string(work.path().join("gitgate-data/audit/audit.jsonl")).unwrap();
    for secret in ["s3cr3t-from-git", "changed-while-down"] {
        assert!(!audit.contains(secret), "the audit log never holds a value");
        assert!(!s.log.lock().unwrap().contains(secret), "the log never holds a value");
    }
    assert!(!s.log.lock().unwrap().contains("s3cr3t-from-git"), "plaintext never reaches the log");
    s.terminate(Duration::from_secs(20));
    cleanup();
}
