//! Fault injection against a real kube-apiserver (issue 16, item 2): the
//! apiserver restarted mid-watch and mid-sync (on a control plane of the
//! test's own, so no other test sees it go), and Vault down behind the
//! secrets webhook. Each measures its recovery and checks that nothing
//! was lost, duplicated or half-applied; the figures are printed
//! (BENCHMARKS.md, "Reliability (issue 16) — fault injection").

use std::time::{Duration, Instant};

use serde_json::Value;

use super::sync::{BIN, PROJECT, RECONCILER, VIEWERS, app, audit_events, cm, get, reconciler_kubeconfig, wait_until};
use crate::cluster::{Cluster, ClusterOptions};
use crate::common::ServeProcess;
use crate::support::Repo;

/// Prints on the raw stderr handle (libtest's capture would hide it).
fn say(text: &str) {
    use std::io::Write as _;
    let _ = writeln!(std::io::stderr(), "{text}");
}

/// `gitgate serve --sync on` against `c` with a lease of `lease`.
fn serve(c: &Cluster, work: &std::path::Path, repo: &Repo, ns: &str, lease: &str) -> ServeProcess {
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
        "on",
        "--reconciler",
        RECONCILER,
        "--lease-duration",
        lease,
        "--admin-group",
        VIEWERS,
        "--wave-timeout",
        "120s",
    ];
    ServeProcess::spawn(BIN, work, &args)
}

/// `GET /api/v1/apps` signed in with `token` (a viewer of `c`).
fn status(s: &ServeProcess, token: &str) -> Value {
    let out = std::process::Command::new("curl")
        .args(["-sS", "--max-time", "5", "-H", &format!("Authorization: Bearer {token}"), "--cacert"])
        .arg(&s.ca)
        .arg(format!("https://127.0.0.1:{}/api/v1/apps", s.addr.port()))
        .output()
        .unwrap();
    serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
}

fn synced(s: &ServeProcess, token: &str, name: &str, commit: &str, within: Duration) -> Value {
    wait_until(&format!("app {name} synced at {commit}"), within, || {
        let st = status(s, token);
        let a = app(&st, name)?;
        (a["sync"] == "Synced" && a["syncedCommit"] == commit).then(|| a.clone())
    })
}

/// Changes a ConfigMap's value behind gitgate's back (no webhook here, as
/// when it is down) and returns how long self-heal took to put Git's back.
fn drift_and_heal(c: &Cluster, ns: &str, name: &str, git: &str) -> Duration {
    let t = Instant::now();
    let patch = r#"{"data":{"value":"hacked"}}"#;
    // The first request after a restart may meet a connection the
    // apiserver has not accepted yet: retried.
    wait_until("the drift to be written", Duration::from_secs(10), || {
        c.kubectl(&["patch", "configmap", name, "-n", ns, "--type=merge", "-p", patch]).status.success().then_some(())
    });
    wait_until(&format!("{ns}/{name} to be healed"), Duration::from_secs(30), || {
        let v = get(c, &["configmap", name, "-n", ns])?;
        (v["data"]["value"] == git).then_some(())
    });
    t.elapsed()
}

/// Records of `event` for object `name` of `app`.
fn records(work: &std::path::Path, event: &str, app: &str, name: &str) -> usize {
    audit_events(work).iter().filter(|e| e["event"] == event && e["app"] == app && e["name"] == name).count()
}

fn verify_audit(work: &std::path::Path) {
    let out = std::process::Command::new(BIN)
        .args(["audit", "verify"])
        .arg(work.join("gitgate-data/audit/audit.jsonl"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "audit verify: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The apiserver restarts twice under two gitgates — one whose lease
/// outlives the outage (it keeps leading: its watches must resume) and one
/// whose lease (3 s) does not (it steps down and syncs again when it leads
/// again). After each restart self-heal reverts a drift within 5 s of the
/// apiserver being ready. The second restart lands mid-sync (a wave
/// waiting for a Deployment to be healthy): the sync fails, is retried
/// with backoff and finishes once the apiserver is back, each object
/// applied and recorded once; `audit verify` passes.
#[test]
fn the_apiserver_restarted_mid_watch_and_mid_sync_loses_no_self_heal_and_no_audit_record() {
    const TEST: &str = "the_apiserver_restarted_mid_watch_and_mid_sync_loses_no_self_heal_and_no_audit_record";
    if std::env::var_os("KUBE_BIN_DIR").is_none() {
        crate::cluster::skipped(TEST, "KUBE_BIN_DIR is not set (a control plane of its own is restarted).");
        return;
    }
    let started = Instant::now();
    // Its own control plane: etcd + apiserver, no controller-manager (so a
    // Deployment becomes healthy only when the test says so).
    let c = Cluster::start_with(&ClusterOptions::new("faults")).expect("KUBE_BIN_DIR is set");
    let c = &c;
    let viewer = super::sync::sa_token(c, "gitgate-e2e-viewers", "viewer");
    let (ns_long, ns_short) = ("e2e-faults-long", "e2e-faults-short");
    let apps = |name: &str, ns: &str| {
        format!(
            "{PROJECT}apps:\n  - {{name: {name}, project: e2e, path: app, destination: {{namespace: {ns}}}, syncPolicy: {{prune: true, selfHeal: true}}}}\n"
        )
    };
    let repo_for = |name: &str, ns: &str| {
        let repo = Repo::new();
        repo.write("gitgate.yaml", &apps(name, ns));
        repo.write("app/ns.yaml", &format!("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {ns}\n"));
        repo.write("app/first.yaml", &cm("first", 0, "1"));
        repo.write("app/second.yaml", &cm("second", 0, "1"));
        let commit = repo.commit("first cut");
        (repo, commit)
    };
    let (long_repo, l1) = repo_for("long", ns_long);
    let (short_repo, s1) = repo_for("short", ns_short);
    let (wl, ws) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let long = serve(c, wl.path(), &long_repo, "gitgate-e2e-faults-long", "30s");
    let short = serve(c, ws.path(), &short_repo, "gitgate-e2e-faults-short", "3s");
    synced(&long, &viewer, "long", &l1, Duration::from_secs(30));
    synced(&short, &viewer, "short", &s1, Duration::from_secs(30));
    let baseline = drift_and_heal(c, ns_long, "first", "1");
    say(&format!("self-heal before any restart: {baseline:?}"));

    // 1. Mid-watch: the apiserver goes away (3 s of graceful termination,
    // then 10 s down), long enough for a watch's retries to back off.
    let back = c.restart_apiserver(Duration::from_secs(10));
    // Both drifts at once, each timed from the apiserver being ready.
    let ((long_heal, long_active), (short_heal, short_active)) = std::thread::scope(|scope| {
        let heal = |ns| scope.spawn(move || (drift_and_heal(c, ns, "first", "1"), back.elapsed()));
        let (l, s) = (heal(ns_long), heal(ns_short));
        (l.join().unwrap(), s.join().unwrap())
    });
    say(&format!(
        "FIGURE apiserver back -> self-heal active: lease 30s (watch resumed) {long_active:?} (drift healed in {long_heal:?}); lease 3s (lead lost and retaken) {short_active:?} (healed in {short_heal:?})"
    ));
    assert!(long_active <= Duration::from_secs(5), "lease outlives the outage: self-heal back in {long_active:?}");
    assert!(short_active <= Duration::from_secs(5), "lease lost: self-heal back in {short_active:?}");
    assert_eq!(status(&long, &viewer)["role"], "leader");
    // Each drift reverted once, and nothing else rewritten by the resumed
    // watches' relist.
    assert_eq!(records(wl.path(), "driftReverted", "long", "first"), 2, "one record per revert");
    assert_eq!(records(wl.path(), "driftReverted", "long", "second"), 0);
    assert_eq!(records(wl.path(), "apply", "long", "second"), 1, "an object in sync is not written again");
    assert_eq!(records(ws.path(), "driftReverted", "short", "first"), 1);

    // 2. Mid-sync: a commit whose wave 1 waits for wave 0's Deployment.
    long_repo.write(
        "app/gate.yaml",
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: gate\nspec:\n  replicas: 0\n  selector:\n    matchLabels: {app: gate}\n  template:\n    metadata:\n      labels: {app: gate}\n    spec:\n      containers:\n        - {name: gate, image: registry.example.invalid/gate:1}\n",
    );
    for i in 0..5 {
        long_repo.write(&format!("app/after-{i}.yaml"), &cm(&format!("after-{i}"), 1, "1"));
    }
    long_repo.write("app/second.yaml", &cm("second", 0, "2"));
    let l2 = long_repo.commit("a gate and what comes after it");
    wait_until("wave 0 applied, wave 1 waiting", Duration::from_secs(20), || {
        (get(c, &["deployment", "gate", "-n", ns_long]).is_some()
            && get(c, &["configmap", "second", "-n", ns_long])?["data"]["value"] == "2")
            .then_some(())
    });
    let back = c.restart_apiserver(Duration::from_secs(2));
    assert!(get(c, &["configmap", "after-0", "-n", ns_long]).is_none(), "wave 1 still waits");
    // The wave becomes healthy (a controller would write this status).
    c.kubectl_ok(&[
        "patch",
        "deployment",
        "gate",
        "-n",
        ns_long,
        "--subresource=status",
        "--type=merge",
        "-p",
        r#"{"status":{"observedGeneration":1}}"#,
    ]);
    let a = synced(&long, &viewer, "long", &l2, Duration::from_secs(20));
    say(&format!("FIGURE apiserver back mid-sync -> app Synced: {:?} (retried with backoff)", back.elapsed()));
    assert_eq!(a["objects"].as_array().unwrap().len(), 9, "{a:#}");
    let failed = audit_events(wl.path()).iter().filter(|e| e["event"] == "syncFailed" && e["app"] == "long").count();
    assert!(failed >= 1, "the interrupted sync is on record");
    assert!(
        long.log.lock().unwrap().contains("the sync did not finish; retrying with backoff"),
        "the sync was retried, not left for the next commit or resync"
    );
    // Every object once: applied and recorded exactly once for this commit.
    for name in ["gate", "after-0", "after-1", "after-2", "after-3", "after-4"] {
        assert_eq!(records(wl.path(), "apply", "long", name), 1, "{name}: one apply, one record");
    }
    assert_eq!(records(wl.path(), "apply", "long", "second"), 2, "second: c1 and c2, once each");
    assert_eq!(records(wl.path(), "apply", "long", "first"), 1, "first did not change");
    // Self-heal still works after both restarts.
    assert!(drift_and_heal(c, ns_long, "after-3", "1") <= Duration::from_secs(5));
    long.terminate(Duration::from_secs(20));
    short.terminate(Duration::from_secs(20));
    verify_audit(wl.path());
    verify_audit(ws.path());
    say(&format!("{TEST}: {:?} in all", started.elapsed()));
}

/// Vault stopped (before gitgate even starts) and then slow, behind the
/// secrets webhook: gitgate starts anyway; the app's Secret is denied by
/// the apiserver with gitgate's reason (Vault unavailable, naming the key;
/// then the deadline); the sync fails and is retried with backoff; the
/// Deployment of the Secret's wave and the next wave are never applied —
/// no partial app —; when Vault is back the same commit is synced whole,
/// with Vault's value, and nothing is recorded twice.
#[test]
fn vault_down_or_slow_denies_the_secret_keeps_the_app_whole_and_the_sync_retries_until_it_is_back() {
    const TEST: &str = "vault_down_or_slow_denies_the_secret_keeps_the_app_whole_and_the_sync_retries_until_it_is_back";
    let Some(c) = crate::cluster::cluster(TEST) else { return };
    let _serial = crate::cluster::cluster_wide();
    let started = Instant::now();
    let ns = "e2e-vault";
    let mut vault = crate::vault::StoppableVault::new();
    vault.state.put_kv2("secret", "shop/db", serde_json::json!({"password": "from-vault"}));
    vault.stop();

    let work = tempfile::tempdir().unwrap();
    let key = work.path().join("cluster.key");
    super::sync::run(&["keygen", "-o", key.to_str().unwrap()], work.path());
    let repo = Repo::new();
    repo.write(
        "gitgate.yaml",
        &format!(
            "projects:\n  - {{name: e2e, destinations: [{{cluster: \"*\", namespace: \"*\"}}], clusterKinds: [Namespace], vault: {{paths: [\"secret/shop/*\"]}}}}\napps:\n  - {{name: vaulted, project: e2e, path: app, destination: {{namespace: {ns}}}, syncPolicy: {{prune: true, selfHeal: true}}}}\n"
        ),
    );
    repo.write("app/ns.yaml", &format!("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {ns}\n"));
    let c1 = repo.commit("the namespace");
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let policies = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
    let client_ca = c.webhook_client_ca().expect("the e2e apiserver presents a webhook client certificate");
    let s = super::sync::serve_on(
        c,
        work.path(),
        &repo,
        "gitgate-e2e-vault",
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
            "--vault-addr",
            &vault.url(),
            "--vault-auth",
            "token",
            "--vault-token",
            crate::vault::ROOT_TOKEN,
            "--vault-deadline",
            "1s",
        ],
    );
    let cleanup = || {
        for kind in ["validatingwebhookconfiguration", "mutatingwebhookconfiguration"] {
            let _ = c.kubectl(&["delete", kind, "-l", "gitgate.dev/guard=true"]);
        }
    };
    assert!(
        s.log.lock().unwrap().contains("Vault is unavailable; starting without it"),
        "gitgate started without Vault"
    );
    super::sync::wait_synced(&s, "vaulted", &c1);
    // The apiserver sends Secrets to gitgate's webhook from here on (a
    // person creating one is refused by it).
    let probe = format!(
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: probe\n  namespace: {ns}\n  annotations: {{gitgate.dev/sealed: age}}\nstringData:\n  k: vault:secret/shop/db#password\n"
    );
    wait_until("the secrets webhook in force", Duration::from_secs(30), || {
        let out = c.kubectl_stdin(&["create", "-f", "-"], probe.as_bytes());
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        if out.status.success() {
            let _ = c.kubectl(&["delete", "secret", "probe", "-n", ns]);
        }
        err.contains("denied the request").then_some(())
    });

    // The app gets a Secret from Vault, a Deployment that reads it (same
    // wave) and a ConfigMap after them.
    repo.write(
        "app/db.yaml",
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: db\n  annotations: {gitgate.dev/sealed: age}\nstringData:\n  password: vault:secret/shop/db#password\n",
    );
    repo.write(
        "app/web.yaml",
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  replicas: 0\n  selector:\n    matchLabels: {app: web}\n  template:\n    metadata:\n      labels: {app: web}\n    spec:\n      containers:\n        - name: web\n          image: registry.example.invalid/web:1\n          env:\n            - name: DB_PASSWORD\n              valueFrom: {secretKeyRef: {name: db, key: password}}\n",
    );
    repo.write("app/after.yaml", &cm("after", 1, "1"));
    let c2 = repo.commit("web with its database password from Vault");
    let failed = |what: &str, needles: &[&str]| {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let a = app(&status(&s, super::sync::viewer_token()), "vaulted").cloned().unwrap_or_default();
            let m = a["message"].as_str().unwrap_or_default().to_string();
            if a["targetCommit"] == c2 && a["sync"] == "Failed" && needles.iter().any(|n| m.contains(n)) {
                return m;
            }
            if Instant::now() >= deadline {
                let log = s.log.lock().unwrap().clone();
                let tail: Vec<&str> = log.lines().rev().take(40).collect();
                panic!(
                    "timed out waiting for {what}: {a:#}\n{}",
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    // 1. Vault stopped.
    let down = failed("the sync to fail on Vault", &["failed to log in to Vault"]);
    assert!(down.contains("VaultUnavailable") || down.contains("503"), "{down}");
    assert!(down.contains("key \"password\""), "the denial names the key: {down}");
    let whole = || {
        assert!(get(c, &["secret", "db", "-n", ns]).is_none(), "the Secret is not stored without its value");
        assert!(get(c, &["deployment", "web", "-n", ns]).is_none(), "no Deployment without its Secret");
        assert!(get(c, &["configmap", "after", "-n", ns]).is_none(), "no later wave");
    };
    whole();
    // 2. Vault back but slower than gitgate's deadline.
    vault.state.set_delay(Duration::from_secs(3));
    vault.start();
    // (the read's deadline, or the login's timeout when that comes first:
    // both are the --vault-deadline)
    let slow = failed("the sync to fail on Vault's deadline", &["did not answer within the deadline", "timed out"]);
    whole();
    let retries = s.log.lock().unwrap().matches("the sync did not finish; retrying with backoff").count();
    assert!(retries >= 2, "the sync is retried ({retries} retries)");
    // 3. Vault answers in time again.
    vault.state.set_delay(Duration::ZERO);
    let back = Instant::now();
    let a = synced_default(&s, "vaulted", &c2);
    let took = back.elapsed();
    assert_eq!(a["objects"].as_array().unwrap().len(), 4, "{a:#}");
    let secret = get(c, &["secret", "db", "-n", ns]).unwrap();
    use base64::Engine as _;
    let pw = base64::engine::general_purpose::STANDARD.decode(secret["data"]["password"].as_str().unwrap()).unwrap();
    assert_eq!(pw, b"from-vault");
    assert!(get(c, &["deployment", "web", "-n", ns]).is_some() && get(c, &["configmap", "after", "-n", ns]).is_some());
    for name in ["db", "web", "after"] {
        assert_eq!(records(work.path(), "apply", "vaulted", name), 1, "{name}: applied and recorded once");
    }
    let audit = std::fs::read_to_string(work.path().join("gitgate-data/audit/audit.jsonl")).unwrap();
    assert!(!audit.contains("from-vault") && !s.log.lock().unwrap().contains("from-vault"), "no value in logs");
    say(&format!("FIGURE vault back -> app synced: {took:?} after {retries} retries (down: {down:?}; slow: {slow:?})"));
    s.terminate(Duration::from_secs(20));
    cleanup();
    verify_audit(work.path());
    say(&format!("{TEST}: {:?} in all", started.elapsed()));
}

fn synced_default(s: &ServeProcess, name: &str, commit: &str) -> Value {
    wait_until(&format!("app {name} synced at {commit}"), Duration::from_secs(60), || {
        let st = status(s, super::sync::viewer_token());
        let a = app(&st, name)?;
        (a["sync"] == "Synced" && a["syncedCommit"] == commit).then(|| a.clone())
    })
}

/// The Git server (a `git daemon`) stops while the app is synced and Git
/// moves on: the app stays Synced at the last good commit, and the status
/// API, `gitgate status` and the metrics say why; when the server is back
/// the new commit is synced within one poll interval + 2 s. Three outages.
#[test]
fn git_unreachable_keeps_the_last_good_commit_says_why_and_syncs_within_a_poll_interval_when_back() {
    const TEST: &str = "git_unreachable_keeps_the_last_good_commit_says_why_and_syncs_within_a_poll_interval_when_back";
    const POLL: Duration = Duration::from_secs(1);
    const ROUNDS: usize = 3;
    let Some(c) = crate::cluster::cluster(TEST) else { return };
    let ns = "e2e-git-fault";
    let work = Repo::new();
    work.write(
        "gitgate.yaml",
        &format!("{PROJECT}apps:\n  - {{name: fetched, project: e2e, path: app, destination: {{namespace: {ns}}}, syncPolicy: {{prune: true, selfHeal: true}}}}\n"),
    );
    work.write("app/ns.yaml", &format!("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {ns}\n"));
    work.write("app/settings.yaml", &cm("settings", 0, "0"));
    let mut good = work.commit("first");
    let base = tempfile::tempdir().unwrap();
    let bare = base.path().join("team.git");
    crate::support::git(base.path(), &["clone", "-q", "--bare", work.path().to_str().unwrap(), bare.to_str().unwrap()]);
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut daemon = Some(crate::support::Daemon::start_on(base.path(), port));

    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = reconciler_kubeconfig(c, dir.path());
    let url = format!("git://127.0.0.1:{port}/team.git");
    let s = ServeProcess::spawn(
        BIN,
        dir.path(),
        &[
            "--repo",
            &url,
            "--poll-interval",
            "1s",
            "--kubeconfig",
            kubeconfig.to_str().unwrap(),
            "--namespace",
            "gitgate-e2e-git-fault",
            "--sync",
            "on",
            "--reconciler",
            RECONCILER,
            "--lease-duration",
            "3s",
            "--admin-group",
            VIEWERS,
        ],
    );
    let token = super::sync::viewer_token();
    synced(&s, token, "fetched", &good, Duration::from_secs(30));
    let mut recoveries = Vec::new();
    for round in 1..=ROUNDS {
        drop(daemon.take());
        work.write("app/settings.yaml", &cm("settings", 0, &round.to_string()));
        let head = work.commit(&format!("round {round}"));
        crate::support::git(work.path(), &["push", "-q", bare.to_str().unwrap(), "main"]);
        let st = wait_until("the status to say Git is failing", Duration::from_secs(10), || {
            let st = status(&s, token);
            (st["source"]["failures"].as_u64()? >= 2).then_some(st)
        });
        let a = app(&st, "fetched").unwrap();
        assert_eq!((a["sync"].as_str(), a["syncedCommit"].as_str()), (Some("Synced"), Some(good.as_str())), "{a:#}");
        let msg = a["message"].as_str().unwrap();
        assert!(msg.contains("Git fetch failing") && msg.contains(&format!("{} stays in force", &good[..7])), "{msg}");
        assert!(st["source"]["error"].as_str().unwrap().contains(&url), "{st:#}");
        let settings = get(c, &["configmap", "settings", "-n", ns]).unwrap();
        assert_eq!(settings["data"]["value"], (round - 1).to_string(), "the last good commit stays applied");
        let metrics = std::process::Command::new("curl")
            .args(["-sS", "--cacert"])
            .arg(&s.ca)
            .arg(format!("https://127.0.0.1:{}/metrics", s.addr.port()))
            .output()
            .unwrap();
        let metrics = String::from_utf8_lossy(&metrics.stdout);
        assert!(metrics.contains("gitgate_git_source_up 0"), "{metrics}");
        let out = std::process::Command::new(BIN)
            .args(["status", "--server", &format!("https://127.0.0.1:{}", s.addr.port()), "--ca"])
            .arg(&s.ca)
            .env("GITGATE_TOKEN", token)
            .output()
            .unwrap();
        let table = String::from_utf8_lossy(&out.stdout);
        assert!(table.contains("git: Git fetch failing since"), "{table}");

        daemon = Some(crate::support::Daemon::start_on(base.path(), port));
        let back = Instant::now();
        synced(&s, token, "fetched", &head, POLL + Duration::from_secs(10));
        let took = back.elapsed();
        recoveries.push(took);
        assert!(took <= POLL + Duration::from_secs(2), "Git back -> synced in {took:?}");
        let st = status(&s, token);
        assert!(st["source"].is_null(), "the fault is cleared: {st:#}");
        assert_eq!(get(c, &["configmap", "settings", "-n", ns]).unwrap()["data"]["value"], round.to_string());
        good = head;
    }
    s.terminate(Duration::from_secs(20));
    say(&format!("FIGURE git back -> app synced (e2e): poll interval {POLL:?}, runs {ROUNDS}, {recoveries:?}"));
}
