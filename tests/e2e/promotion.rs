//! Promotion gates against the real apiserver (issue 17): a production app
//! waits for an approver of the right group, a pause freezes an app and
//! ends on time across a failover.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::cluster::{self, Cluster};
use crate::common::ServeProcess;
use crate::support::{Repo, keygen};
use crate::sync::{BIN, app, audit_events, cm, get, sa_token, serve, status, wait_synced, wait_until};

const APPROVERS_NS: &str = "gitgate-e2e-approvers";
const OTHERS_NS: &str = "gitgate-e2e-readers";

/// A project whose `release` role (the approvers' ServiceAccounts) may
/// sync, and whose `readers` may only read.
fn project(ns: &str) -> String {
    format!(
        "projects:\n  - name: prod\n    destinations: [{{cluster: \"*\", namespace: \"{ns}\"}}]\n    clusterKinds: [Namespace]\n    roles:\n      - {{name: release, groups: [\"system:serviceaccounts:{APPROVERS_NS}\"], permissions: [read, sync]}}\n      - {{name: readers, groups: [\"system:serviceaccounts:{OTHERS_NS}\"], permissions: [read]}}\n"
    )
}

/// `gitgate ACTION APP ARGS…` signed in with `token`: (exit code, stdout + stderr).
fn gitgate(s: &ServeProcess, token: &str, action: &str, app: &str, args: &[&str]) -> (i32, String) {
    let server = format!("https://127.0.0.1:{}", s.addr.port());
    let out = std::process::Command::new(BIN)
        .args([action, app, "--server", &server, "--token", token, "--ca"])
        .arg(&s.ca)
        .args(args)
        .output()
        .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.code().unwrap_or(-1), text)
}

fn value_of(c: &Cluster, ns: &str, name: &str) -> Option<String> {
    get(c, &["configmap", name, "-n", ns]).and_then(|v| v["data"]["value"].as_str().map(str::to_string))
}

fn wait_sync_status(s: &ServeProcess, name: &str, sync: &str) -> Value {
    wait_until(&format!("app {name} {sync}"), Duration::from_secs(60), || {
        let st = status(s);
        let a = app(&st, name)?;
        (a["sync"] == sync).then(|| a.clone())
    })
}

/// Item 1 and "Done when": nothing syncs before an approval; a reader is
/// refused; an approver approves a specific commit, which syncs and is in
/// the audit log with the approver; a newer commit waits again; approving
/// an older one is a rollback and says so.
#[test]
fn a_production_app_waits_for_approval_and_an_approver_lets_it_in() {
    let Some(c) = cluster::cluster("a_production_app_waits_for_approval_and_an_approver_lets_it_in") else { return };
    let ns = "e2e-approval";
    let approver = sa_token(c, APPROVERS_NS, "release-manager");
    let reader = sa_token(c, OTHERS_NS, "dev");
    let repo = Repo::new();
    repo.write(
        "gitgate.yaml",
        &format!(
            "{}apps:\n  - {{name: shop, project: prod, path: app, destination: {{namespace: {ns}}}, syncPolicy: {{prune: true, selfHeal: true, approval: required}}}}\n",
            project(ns)
        ),
    );
    repo.write("app/ns.yaml", &format!("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {ns}\n"));
    repo.write("app/settings.yaml", &cm("settings", 0, "1"));
    let c1 = repo.commit("shop v1");
    let work = tempfile::tempdir().unwrap();
    let s = serve(c, work.path(), &repo, "gitgate-e2e-approval", &[]);

    // Nothing is approved: the app waits and nothing is applied.
    let waiting = wait_sync_status(&s, "shop", "WaitingApproval");
    assert_eq!(waiting["targetCommit"], c1.as_str(), "{waiting:#}");
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(value_of(c, ns, "settings"), None, "nothing syncs without approval");

    // A reader may not approve; the refusal says who may.
    let (code, out) = gitgate(&s, &reader, "approve", "shop", &[]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("may not approve") && out.contains(APPROVERS_NS), "{out}");
    // Nor a commit that is not on the branch, nor a made-up one.
    let (code, out) = gitgate(&s, &approver, "approve", "shop", &["--commit", "HEAD~1"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("not a commit id"), "{out}");
    let (code, out) = gitgate(&s, &approver, "approve", "shop", &["--commit", "0123456789abcdef"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("unknown"), "{out}");
    assert_eq!(value_of(c, ns, "settings"), None);

    // The approver approves the waiting commit: it syncs.
    let t = Instant::now();
    let (code, out) = gitgate(&s, &approver, "approve", "shop", &[]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains(&c1[..7]), "{out}");
    wait_synced(&s, "shop", &c1);
    eprintln!("approval → applied in {:?}", t.elapsed());
    assert_eq!(value_of(c, ns, "settings").as_deref(), Some("1"));
    let approved = wait_until("the approval in the audit log", Duration::from_secs(10), || {
        audit_events(work.path()).into_iter().find(|e| e["event"] == "approved")
    });
    assert_eq!(approved["user"], format!("system:serviceaccount:{APPROVERS_NS}:release-manager"), "{approved:#}");
    assert_eq!(approved["commit"]["id"], c1.as_str(), "{approved:#}");
    assert!(approved["reasons"].to_string().contains("change sha256:"), "{approved:#}");

    // A new commit waits; what is in force stays.
    repo.write("app/settings.yaml", &cm("settings", 0, "2"));
    let c2 = repo.commit("shop v2");
    let waiting = wait_until("c2 waiting", Duration::from_secs(30), || {
        let st = status(&s);
        let a = app(&st, "shop")?;
        (a["sync"] == "WaitingApproval" && a["targetCommit"] == c2.as_str()).then(|| a.clone())
    });
    assert_eq!(waiting["syncedCommit"], c1.as_str(), "{waiting:#}");
    assert!(waiting["message"].as_str().unwrap_or_default().contains("waits for approval"), "{waiting:#}");
    assert_eq!(value_of(c, ns, "settings").as_deref(), Some("1"), "the waiting commit is not applied");
    // Self-heal goes on at the commit in force.
    c.kubectl_ok(&["-n", ns, "patch", "configmap", "settings", "--type=merge", "-p", r#"{"data":{"value":"hand"}}"#]);
    wait_until("self-heal at the commit in force", Duration::from_secs(20), || {
        (value_of(c, ns, "settings").as_deref() == Some("1")).then_some(())
    });

    // A restart changes nothing: c1 (approved) stays in force, c2 waits.
    s.terminate(Duration::from_secs(20));
    let s = serve(c, work.path(), &repo, "gitgate-e2e-approval", &[]);
    let st = wait_until("c2 still waiting after a restart", Duration::from_secs(60), || {
        let st = status(&s);
        let a = app(&st, "shop")?;
        (a["sync"] == "WaitingApproval" && a["targetCommit"] == c2.as_str()).then(|| a.clone())
    });
    assert_eq!(st["syncedCommit"], c1.as_str(), "{st:#}");
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(value_of(c, ns, "settings").as_deref(), Some("1"), "nothing syncs without approval after a restart");

    let (code, out) = gitgate(&s, &approver, "approve", "shop", &["--commit", &c2[..10]]);
    assert_eq!(code, 0, "{out}");
    wait_synced(&s, "shop", &c2);
    assert_eq!(value_of(c, ns, "settings").as_deref(), Some("2"));

    // Approving the older commit rolls back, and says so.
    let (code, out) = gitgate(&s, &approver, "approve", "shop", &["--commit", &c1]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("rollback"), "{out}");
    wait_until("rolled back to c1", Duration::from_secs(30), || {
        (value_of(c, ns, "settings").as_deref() == Some("1")).then_some(())
    });
    let st = wait_sync_status(&s, "shop", "WaitingApproval");
    assert_eq!(st["syncedCommit"], c1.as_str(), "c2 waits again after the rollback: {st:#}");

    // The attacker is a Git author (Flux CVE-2021-41254 class: escalation
    // through what Git holds): a commit that grants the readers `sync` and
    // drops `approval: required` still waits, and its author's group may
    // not approve it, since the config in force does not grant them sync.
    let escalated = project(ns).replace("permissions: [read]}", "permissions: [read, sync]}");
    repo.write(
        "gitgate.yaml",
        &format!(
            "{escalated}apps:\n  - {{name: shop, project: prod, path: app, destination: {{namespace: {ns}}}, syncPolicy: {{prune: true, selfHeal: true}}}}\n"
        ),
    );
    repo.write("app/settings.yaml", &cm("settings", 0, "3"));
    let c3 = repo.commit("readers may sync; no approval needed");
    wait_until("c3 waiting", Duration::from_secs(30), || {
        let st = status(&s);
        let a = app(&st, "shop")?;
        (a["sync"] == "WaitingApproval" && a["targetCommit"] == c3.as_str()).then_some(())
    });
    let (code, out) = gitgate(&s, &reader, "approve", "shop", &[]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("may not approve"), "{out}");
    // A cross-site form cannot approve (Argo CD CVE-2024-22424 class): the
    // actions take JSON only, which a form cannot send without CORS. Over
    // HTTP/1.1: Debian's curl 7.88 often reports gitgate's early HTTP/2
    // answer (before the unread body) as a stream error instead of the
    // status; what matters is that no form POST is ever taken.
    let mut codes = Vec::new();
    for _ in 0..5 {
        let form = std::process::Command::new("curl")
            .args(["-sS", "--http1.1", "-o", "/dev/null", "-w", "%{http_code}", "-X", "POST"])
            .args(["-H", "Content-Type: application/x-www-form-urlencoded"])
            .args(["-H", &format!("Authorization: Bearer {approver}"), "--data", "commit=", "--cacert"])
            .arg(&s.ca)
            .arg(format!("https://127.0.0.1:{}/api/v1/apps/shop/approve", s.addr.port()))
            .output()
            .unwrap();
        let code = String::from_utf8_lossy(&form.stdout).to_string();
        assert!(code == "415" || code == "000", "a form POST is refused, got {code}");
        codes.push(code);
        if codes.last().is_some_and(|c| c == "415") {
            break;
        }
    }
    assert!(codes.iter().any(|c| c == "415"), "a form POST answers 415: {codes:?}");
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(value_of(c, ns, "settings").as_deref(), Some("1"), "nothing of c3 was applied");
    s.terminate(Duration::from_secs(20));
}

/// Item 2 and "Done when": a pause holds a new commit and stops self-heal,
/// shows who and why, and ends by itself at its deadline — neither earlier
/// nor later when the leader dies during it. A pause longer than
/// `--max-pause` is refused.
#[test]
fn a_pause_holds_commits_and_self_heal_and_ends_on_time_across_a_failover() {
    let Some(c) = cluster::cluster("a_pause_holds_commits_and_self_heal_and_ends_on_time_across_a_failover") else {
        return;
    };
    let _serial = cluster::cluster_wide();
    let ns = "e2e-pause";
    let approver = sa_token(c, APPROVERS_NS, "oncall");
    let repo = Repo::new();
    repo.write(
        "gitgate.yaml",
        &format!(
            "{}apps:\n  - {{name: api, project: prod, path: app, destination: {{namespace: {ns}}}, syncPolicy: {{prune: true, selfHeal: true}}}}\n",
            project(ns)
        ),
    );
    repo.write("app/ns.yaml", &format!("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {ns}\n"));
    repo.write("app/settings.yaml", &cm("settings", 0, "1"));
    let c1 = repo.commit("api v1");
    let (wa, wb) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = serve(c, wa.path(), &repo, "gitgate-e2e-pause", &["--replica", "a", "--max-pause", "1h"]);
    wait_synced(&a, "api", &c1);
    let b = serve(c, wb.path(), &repo, "gitgate-e2e-pause", &["--replica", "b", "--max-pause", "1h"]);
    wait_until("b to stand by", Duration::from_secs(10), || (status(&b)["role"] == "follower").then_some(()));

    let (code, out) = gitgate(&a, &approver, "pause", "api", &["--for", "2h", "--reason", "too long"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("at most 1h"), "{out}");
    let (code, out) = gitgate(&a, &approver, "pause", "api", &["--for", "20s", "--reason", "incident 4711"]);
    assert_eq!(code, 0, "{out}");
    let paused_at = Instant::now();
    let st = wait_sync_status(&a, "api", "Paused");
    let message = st["message"].as_str().unwrap_or_default().to_string();
    assert!(message.contains("oncall") && message.contains("incident 4711") && message.contains("until"), "{st:#}");

    // A new commit waits, a hand change stays (self-heal is off).
    repo.write("app/settings.yaml", &cm("settings", 0, "2"));
    let c2 = repo.commit("api v2");
    c.kubectl_ok(&["-n", ns, "patch", "configmap", "settings", "--type=merge", "-p", r#"{"data":{"value":"hand"}}"#]);
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(value_of(c, ns, "settings").as_deref(), Some("hand"), "no self-heal while paused");

    // The leader dies mid-pause; the standby keeps the pause to its end.
    let mut a = a;
    a.child.kill().unwrap();
    let _ = a.child.wait();
    wait_until("b to lead", Duration::from_secs(15), || (status(&b)["role"] == "leader").then_some(()));
    let st = wait_sync_status(&b, "api", "Paused");
    assert_eq!(st["syncedCommit"], c1.as_str(), "{st:#}");
    let deadline = Duration::from_secs(20);
    if paused_at.elapsed() + Duration::from_secs(2) < deadline {
        assert_eq!(value_of(c, ns, "settings").as_deref(), Some("hand"), "the failover did not end the pause early");
    }
    wait_synced(&b, "api", &c2);
    let ended = paused_at.elapsed();
    eprintln!("pause of 20s ended after {ended:?} (failover included)");
    assert!(ended >= deadline - Duration::from_secs(1), "ended early: {ended:?}");
    assert!(ended <= deadline + Duration::from_secs(10), "ended late: {ended:?}");
    assert_eq!(value_of(c, ns, "settings").as_deref(), Some("2"));
    b.terminate(Duration::from_secs(20));
}

/// Item 3 and "Done when": a deny window holds a commit (the one that adds
/// the window included) until it closes; the status says until when.
#[test]
fn a_deny_window_holds_a_commit_until_it_ends() {
    let Some(c) = cluster::cluster("a_deny_window_holds_a_commit_until_it_ends") else { return };
    let ns = "e2e-window";
    let repo = Repo::new();
    let config = |windows: &str| {
        format!(
            "{}{windows}apps:\n  - {{name: batch, project: prod, path: app, destination: {{namespace: {ns}}}, syncPolicy: {{prune: true, selfHeal: true}}}}\n",
            project(ns)
        )
    };
    repo.write("gitgate.yaml", &config(""));
    repo.write("app/ns.yaml", &format!("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {ns}\n"));
    repo.write("app/settings.yaml", &cm("settings", 0, "1"));
    let c1 = repo.commit("batch v1");
    let work = tempfile::tempdir().unwrap();
    let s = serve(c, work.path(), &repo, "gitgate-e2e-window", &[]);
    wait_synced(&s, "batch", &c1);

    // A deny window that started this minute (UTC) and ends 15 s into the next.
    let mut now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    if now % 60 > 40 {
        std::thread::sleep(Duration::from_secs(61 - now % 60));
        now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    }
    let (hour, minute, second) = ((now / 3600) % 24, (now / 60) % 60, now % 60);
    // It started at second 0 of this minute: it ends 75 s after that.
    let duration = 75;
    let ends = Instant::now() + Duration::from_secs(duration - second);
    let window = format!(
        "    syncWindows:\n      - {{kind: deny, schedule: \"{minute} {hour} * * *\", duration: {duration}s, timeZone: UTC, apps: [\"batch\"]}}\n"
    );
    // Under the project (its last lines are the roles).
    repo.write("gitgate.yaml", &config(&window));
    repo.write("app/settings.yaml", &cm("settings", 0, "2"));
    let c2 = repo.commit("batch v2 under a deny window");
    let held = wait_until("c2 held by the window", Duration::from_secs(30), || {
        let st = status(&s);
        let a = app(&st, "batch")?;
        (a["sync"] == "OutsideWindow" && a["targetCommit"] == c2.as_str()).then(|| a.clone())
    });
    let message = held["message"].as_str().unwrap_or_default();
    assert!(message.contains("inside the deny window") && message.contains("until"), "{held:#}");
    assert_eq!(value_of(c, ns, "settings").as_deref(), Some("1"));
    wait_until("the window to end", Duration::from_secs(120), || {
        (Instant::now() >= ends || value_of(c, ns, "settings").as_deref() == Some("2")).then_some(())
    });
    if Instant::now() + Duration::from_secs(1) < ends {
        panic!("c2 was applied before the deny window ended");
    }
    wait_synced(&s, "batch", &c2);
    eprintln!("c2 synced {:?} after the window ended", ends.elapsed());
    assert_eq!(value_of(c, ns, "settings").as_deref(), Some("2"));
    s.terminate(Duration::from_secs(20));
}

fn chromium() -> Option<std::path::PathBuf> {
    let bin = std::env::var_os("CHROMIUM")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::PathBuf::from("/usr/bin/chromium"));
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
    let node = std::process::Command::new("node").arg("--version").output().is_ok_and(|o| o.status.success());
    if !bin.is_file() || !node || !dir.join("node_modules/playwright-core").is_dir() {
        eprintln!("SKIPPED: needs Debian's chromium, node and `npm ci` in tests/browser (.ci/run installs them)");
        return None;
    }
    Some(bin)
}

/// Items 1 and 6 in Chromium: a reader's Approve is refused; the approver
/// sees the Deployment's live ReplicaSet and Pods (made by the real
/// controller-manager) and the last events on the app page, approves, and
/// the open page turns Synced.
#[test]
fn in_chromium_an_approver_sees_the_live_tree_and_approves() {
    let Some(c) = cluster::cluster("in_chromium_an_approver_sees_the_live_tree_and_approves") else { return };
    let Some(chromium) = chromium() else { return };
    let ns = "e2e-approve-ui";
    let approver = sa_token(c, APPROVERS_NS, "release-ui");
    let reader = sa_token(c, OTHERS_NS, "dev-ui");
    let repo = Repo::new();
    repo.write(
        "gitgate.yaml",
        &format!(
            "{}apps:\n  - {{name: shop-ui, project: prod, path: app, destination: {{namespace: {ns}}}, syncPolicy: {{prune: true, selfHeal: true, approval: required}}}}\n",
            project(ns)
        ),
    );
    repo.write("app/ns.yaml", &format!("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {ns}\n"));
    let deployment = |image: &str| {
        format!(
            "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  replicas: 1\n  selector:\n    matchLabels: {{app: web}}\n  template:\n    metadata:\n      labels: {{app: web}}\n    spec:\n      containers:\n        - name: web\n          image: {image}\n"
        )
    };
    repo.write("app/web.yaml", &deployment("registry.example.invalid/web:1"));
    let c1 = repo.commit("web 1");
    let work = tempfile::tempdir().unwrap();
    let s = serve(c, work.path(), &repo, "gitgate-e2e-approve-ui", &[]);
    wait_sync_status(&s, "shop-ui", "WaitingApproval");
    let (code, out) = gitgate(&s, &approver, "approve", "shop-ui", &["--commit", &c1]);
    assert_eq!(code, 0, "{out}");
    // Synced, not healthy: no kubelet runs the Pod.
    wait_until("shop-ui synced at c1", Duration::from_secs(60), || {
        let st = status(&s);
        (app(&st, "shop-ui")?["syncedCommit"] == c1.as_str()).then_some(())
    });
    repo.write("app/web.yaml", &deployment("registry.example.invalid/web:2"));
    let c2 = repo.commit("web 2");
    wait_until("c2 waiting", Duration::from_secs(30), || {
        let st = status(&s);
        let a = app(&st, "shop-ui")?;
        (a["sync"] == "WaitingApproval" && a["targetCommit"] == c2.as_str()).then_some(())
    });

    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser/promotion.mjs");
    let mut cmd = std::process::Command::new("node");
    cmd.arg(&script)
        .env("GITGATE_URL", format!("https://127.0.0.1:{}", s.addr.port()))
        .env("NODE_EXTRA_CA_CERTS", &s.ca)
        .env("CHROMIUM", &chromium)
        .env("EXPECT_APP", "shop-ui")
        .env("EXPECT_COMMIT", &c2)
        .env("LIVE_WORKLOAD", format!("{ns}/Deployment/web"))
        .env("APPROVER_TOKEN", &approver)
        .env("READER_TOKEN", &reader);
    if let Some(dir) = std::env::var_os("GITGATE_SCREENSHOTS") {
        cmd.env("SCREENSHOT_DIR", dir);
    }
    let out = crate::common::reap::output(&mut cmd).expect("node runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report: Value = stdout.lines().rev().find_map(|l| serde_json::from_str(l).ok()).unwrap_or_else(|| {
        panic!("the browser script printed no report:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr))
    });
    assert_eq!(report["ok"], true, "{report:#}\nstderr: {}", String::from_utf8_lossy(&out.stderr));
    let image =
        get(c, &["deployment", "web", "-n", ns]).unwrap()["spec"]["template"]["spec"]["containers"][0]["image"].clone();
    assert_eq!(image, "registry.example.invalid/web:2", "the approval in the browser applied c2");
    s.terminate(Duration::from_secs(20));
}

/// Item 1, approvals in Git: a tag `gitgate/approve/APP/<commit>` signed
/// by a key in `--approval-signers` approves the commit; one signed by
/// another key, or pointing at another commit, approves nothing.
#[test]
fn a_signed_approval_tag_approves_and_a_forged_one_does_not() {
    let Some(c) = cluster::cluster("a_signed_approval_tag_approves_and_a_forged_one_does_not") else { return };
    let ns = "e2e-approval-tag";
    let keys = tempfile::tempdir().unwrap();
    let (alice, alice_pub) = keygen(keys.path(), "alice");
    let (mallory, _) = keygen(keys.path(), "mallory");
    let signers = keys.path().join("approvers");
    std::fs::write(&signers, format!("alice@example.com namespaces=\"git\" {alice_pub}\n")).unwrap();
    let repo = Repo::new();
    repo.write(
        "gitgate.yaml",
        &format!(
            "{}apps:\n  - {{name: tagged, project: prod, path: app, destination: {{namespace: {ns}}}, syncPolicy: {{prune: true, approval: required}}}}\n",
            project(ns)
        ),
    );
    repo.write("app/ns.yaml", &format!("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {ns}\n"));
    repo.write("app/settings.yaml", &cm("settings", 0, "1"));
    let c1 = repo.commit("tagged v1");
    let work = tempfile::tempdir().unwrap();
    let s =
        serve(c, work.path(), &repo, "gitgate-e2e-approval-tag", &["--approval-signers", signers.to_str().unwrap()]);
    wait_sync_status(&s, "tagged", "WaitingApproval");
    let tag = |key: &std::path::Path, name: &str, target: &str| {
        crate::support::git(
            repo.path(),
            &[
                "-c",
                "gpg.format=ssh",
                "-c",
                &format!("user.signingkey={}", key.display()),
                "tag",
                "-s",
                "-m",
                "approve",
                name,
                target,
            ],
        );
    };
    // Mallory's key is not an approver's.
    tag(&mallory, &format!("gitgate/approve/tagged/{c1}"), &c1);
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(app(&status(&s), "tagged").unwrap()["sync"], "WaitingApproval");
    assert_eq!(value_of(c, ns, "settings"), None, "a tag signed by another key approves nothing");
    crate::support::git(repo.path(), &["tag", "-d", &format!("gitgate/approve/tagged/{c1}")]);
    // Alice's tag approves; a Git fetch brings it.
    tag(&alice, &format!("gitgate/approve/tagged/{c1}"), &c1);
    wait_synced(&s, "tagged", &c1);
    let approved = wait_until("the tag's approval in the audit log", Duration::from_secs(10), || {
        audit_events(work.path()).into_iter().find(|e| e["event"] == "approved")
    });
    assert_eq!(approved["user"], "alice@example.com", "{approved:#}");
    s.terminate(Duration::from_secs(20));
}
