//! Chaos against a real kube-apiserver and kube-controller-manager (issue
//! 16): gitgate's replicas die by SIGKILL (no drain, no Lease released) in
//! the chart's layout — fail closed only in namespaces labelled
//! `gitgate.dev/enforce=true` — and each way its webhooks can stop
//! answering is recovered by gitgate itself, with no human touching a
//! webhook configuration: every replica gone, a configuration pointing at
//! a Service with no endpoints, an expired serving certificate, a CA bundle
//! that no longer matches. A leader killed in the middle of a wave hands
//! the sync over without losing or half-applying anything, and without
//! getting past the mass-prune guard.
//!
//! Each test prints its figures (`chaos figure: …`) on the raw stderr
//! handle; BENCHMARKS.md ("Reliability (issue 16)") records them.
//! gitgate runs out of cluster here (a process on loopback,
//! `--webhook-endpoint https://127.0.0.1:PORT`): a restart is a new process
//! on the same port, with the same `--cert-dir` (a pod's TLS Secret) and a
//! new replica name (a new pod), so it waits out the dead leader's Lease
//! (15 s, the default) before its guard may write.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::cluster::{self, Cluster};
use crate::common::ServeProcess;
use crate::support::Repo;
use crate::sync::{BIN, PROJECT, RECONCILER, VIEWERS, app, audit_events, cm, get, reconciler_kubeconfig, status};

const ENFORCED: &str = "e2e-chaos-enforced";
const FREE: &str = "e2e-chaos-free";
const ENFORCE_LABEL: &str = "gitgate.dev/enforce=true";
/// The default `--lease-duration`: a restarted replica leads within it of
/// the dead leader's last renewal.
const LEASE: Duration = Duration::from_secs(15);
/// What restoring a configuration adds to taking the lead (the guard's
/// write, the apiserver loading it), with room for a loaded machine.
const RESTORE: Duration = Duration::from_secs(1);

/// Prints a figure past libtest's capture.
fn figure(text: &str) {
    use std::io::Write as _;
    let _ = writeln!(std::io::stderr(), "chaos figure: {text}");
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn wait_for<T>(what: &str, within: Duration, f: impl FnMut() -> Option<T>) -> T {
    try_wait(within, f).unwrap_or_else(|| panic!("timed out after {within:?} waiting for {what}"))
}

fn try_wait<T>(within: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `gitgate serve --sync on` on `127.0.0.1:port` as replica `replica`,
/// with the default lease (15 s) and the TLS files re-read every second.
fn serve(c: &Cluster, work: &Path, repo: &Repo, ns: &str, port: u16, replica: &str, extra: &[&str]) -> ServeProcess {
    let kubeconfig = reconciler_kubeconfig(c, work).display().to_string();
    let url = repo.url();
    let mut args = vec![
        "--repo",
        &url,
        "--poll-interval",
        "1s",
        "--kubeconfig",
        &kubeconfig,
        "--namespace",
        ns,
        "--sync",
        "on",
        "--reconciler",
        RECONCILER,
        "--admin-group",
        VIEWERS,
        "--replica",
        replica,
        "--tls-reload-interval",
        "1s",
    ];
    args.extend_from_slice(extra);
    ServeProcess::spawn_on(BIN, work, &format!("127.0.0.1:{port}"), &args)
}

/// The guard's flags of the chart's layout, for a gitgate on `port`.
fn webhook_flags(port: u16) -> Vec<String> {
    vec![
        "--webhook-endpoint".into(),
        format!("https://127.0.0.1:{port}"),
        "--webhook-enforce-label".into(),
        ENFORCE_LABEL.into(),
        "--webhook-timeout-seconds".into(),
        "2".into(),
    ]
}

/// SIGKILL: no drain, no Lease released.
fn sigkill(mut s: ServeProcess) {
    s.child.kill().unwrap();
    let _ = s.child.wait();
}

/// What the apiserver answered a human's create (a server-side dry run of
/// an unmanaged ConfigMap).
enum Answer {
    /// Admitted: nothing intercepted it, or a webhook let it through.
    Admitted,
    /// gitgate decided (and denied it: an unmanaged object where gitgate
    /// enforces).
    Gitgate(String),
    /// A webhook could not be called: the apiserver's message.
    Unreachable(String),
    /// Refused otherwise.
    Refused(String),
}

impl Answer {
    fn message(&self) -> &str {
        match self {
            Answer::Admitted => "admitted",
            Answer::Gitgate(m) | Answer::Unreachable(m) | Answer::Refused(m) => m,
        }
    }
}

fn probe(c: &Cluster, ns: &str) -> Answer {
    let out = c.kubectl(&["create", "configmap", "chaos-probe", "-n", ns, "--dry-run=server", "-o", "name"]);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    if out.status.success() {
        Answer::Admitted
    } else if err.contains("failed calling webhook") {
        Answer::Unreachable(err)
    } else if err.contains("admission webhook \"validate.gitgate.dev\" denied the request")
        && err.contains("nothing in Git declares")
    {
        Answer::Gitgate(err)
    } else {
        Answer::Refused(err)
    }
}

fn wait_gitgate_answers(c: &Cluster, within: Duration) -> Duration {
    let t = Instant::now();
    let deadline = t + within;
    loop {
        let answer = probe(c, ENFORCED);
        if let Answer::Gitgate(_) = answer {
            return t.elapsed();
        }
        let last = answer.message();
        assert!(Instant::now() < deadline, "gitgate never answered for {ENFORCED} within {within:?}; last: {last}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn wait_unreachable(c: &Cluster, within: Duration) -> String {
    wait_for("the enforced namespace to fail closed", within, || match probe(c, ENFORCED) {
        Answer::Unreachable(e) => Some(e),
        _ => None,
    })
}

/// The namespaces: gitgate's own, one enforced (fails closed), one not.
fn namespaces(c: &Cluster, own: &str) {
    for ns in [own, ENFORCED, FREE] {
        c.ensure_namespace(ns);
    }
    c.kubectl_ok(&["label", "--overwrite", "namespace", ENFORCED, ENFORCE_LABEL]);
}

/// Removes what gitgate installed cluster-wide (after its processes died:
/// declare it before them) and the test's Deployments.
struct Cleanup<'a> {
    c: &'a Cluster,
    deployments: Vec<(String, String)>,
}

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        let _ = self.c.kubectl(&[
            "delete",
            "validatingwebhookconfiguration,mutatingwebhookconfiguration,validatingadmissionpolicy,validatingadmissionpolicybinding",
            "-l",
            "gitgate.dev/guard=true",
            "--ignore-not-found",
        ]);
        for (ns, name) in &self.deployments {
            let _ = self.c.kubectl(&["delete", "deployment", name, "-n", ns, "--ignore-not-found", "--wait=false"]);
        }
    }
}

/// A Deployment in `ns` is created and scaled, and the controller-manager
/// acts on it (its ReplicaSet creates the Pod): the namespace works.
fn deployment_works(c: &Cluster, ns: &str, name: &str) -> Result<(), String> {
    let _ = c.kubectl(&["delete", "deployment", name, "-n", ns, "--ignore-not-found", "--wait=false"]);
    let run = |args: &[&str]| {
        let out = c.kubectl(args);
        out.status.success().then_some(()).ok_or_else(|| String::from_utf8_lossy(&out.stderr).into_owned())
    };
    run(&["create", "deployment", name, "-n", ns, "--image=registry.example.invalid/chaos:1", "--replicas=0"])?;
    run(&["scale", "deployment", name, "-n", ns, "--replicas=1"])?;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let d = get(c, &["deployment", name, "-n", ns]).ok_or("the Deployment is gone")?;
        if d["status"]["replicas"] == 1 {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("the controller-manager never scaled {ns}/{name}: {}", d["status"]));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Two apps: `chaos` in the fail-open namespace, `locked` in the enforced
/// one (where gitgate then refuses what Git does not declare: the probe).
fn app_repo() -> Repo {
    let repo = Repo::new();
    let policy = "syncPolicy: {prune: true, selfHeal: true}";
    repo.write(
        "gitgate.yaml",
        &format!(
            "{PROJECT}apps:\n  - {{name: chaos, project: e2e, path: free, destination: {{namespace: {FREE}}}, {policy}}}\n  - {{name: locked, project: e2e, path: enforced, destination: {{namespace: {ENFORCED}}}, {policy}}}\n"
        ),
    );
    repo.write("free/settings.yaml", &cm("settings", 0, "1"));
    repo.write("enforced/settings.yaml", &cm("settings", 0, "1"));
    repo
}

/// Kill every gitgate replica (SIGKILL): kube-system, kube-node-lease and
/// gitgate's own namespace keep working (a Deployment is created and
/// scaled there), the enforced namespace refuses changes with the
/// apiserver's message, the fail-open namespace keeps changing, but the
/// ValidatingAdmissionPolicy (`--install-vap`) still denies a hand edit of
/// what Git manages there; a restarted gitgate serves again with no one
/// touching a webhook configuration, and leads within the lease.
#[test]
fn every_replica_killed_locks_only_enforced_namespaces_and_a_restart_restores_service() {
    let Some(c) =
        cluster::cluster("every_replica_killed_locks_only_enforced_namespaces_and_a_restart_restores_service")
    else {
        return;
    };
    let _serial = cluster::cluster_wide();
    let own = "gitgate-e2e-chaos";
    namespaces(c, own);
    let mut cleanup = Cleanup { c, deployments: Vec::new() };
    let repo = app_repo();
    let c1 = repo.commit("settings in the fail-open namespace");

    let (port, standby) = (free_port(), free_port());
    let mut flags = webhook_flags(port);
    flags.push("--install-vap".into());
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let (wa, wb) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = serve(c, wa.path(), &repo, own, port, "chaos-a", &flags);
    wait_for("the app synced", Duration::from_secs(60), || {
        let st = status(&a);
        (app(&st, "chaos")?["syncedCommit"] == c1.as_str()).then_some(())
    });
    let b = serve(c, wb.path(), &repo, own, standby, "chaos-b", &flags);
    wait_for("b to stand by", Duration::from_secs(10), || (status(&b)["role"] == "follower").then_some(()));
    wait_gitgate_answers(c, Duration::from_secs(30));
    let hand_edit = || {
        c.kubectl(&[
            "patch",
            "configmap",
            "settings",
            "-n",
            FREE,
            "--type=merge",
            "-p",
            r#"{"data":{"value":"by-hand"}}"#,
        ])
    };
    // The policy is loaded asynchronously too.
    wait_for("the VAP to deny a hand edit", Duration::from_secs(30), || (!hand_edit().status.success()).then_some(()));

    // Every replica dies at once.
    sigkill(a);
    sigkill(b);
    let killed = Instant::now();
    let refused = wait_unreachable(c, Duration::from_secs(10));
    assert!(refused.contains("failed calling webhook \"validate.gitgate.dev\""), "{refused}");
    assert!(refused.contains(&format!("127.0.0.1:{port}")), "the apiserver names what it could not reach: {refused}");
    // Nothing else is locked out.
    let mut lockouts = Vec::new();
    for (i, ns) in ["kube-system", "kube-node-lease", own].into_iter().enumerate() {
        let name = format!("gitgate-chaos-{i}");
        cleanup.deployments.push((ns.to_string(), name.clone()));
        if let Err(e) = deployment_works(c, ns, &name) {
            lockouts.push(format!("{ns}: {e}"));
        }
    }
    match probe(c, FREE) {
        Answer::Admitted => {}
        other => lockouts.push(format!("{FREE} (fails open): {}", other.message())),
    }
    figure(&format!("every replica killed: {} lockouts outside enforced namespaces", lockouts.len()));
    assert!(lockouts.is_empty(), "locked out: {lockouts:#?}");
    // The enforced namespace still refuses (fail closed, not a timeout that let it through).
    assert!(matches!(probe(c, ENFORCED), Answer::Unreachable(_)));
    // The VAP holds where the webhook fails open.
    let edit = hand_edit();
    let err = String::from_utf8_lossy(&edit.stderr);
    assert!(!edit.status.success(), "a hand edit in the fail-open namespace got through while gitgate was down");
    assert!(err.contains("ValidatingAdmissionPolicy") && err.contains("managed by gitgate app chaos"), "{err}");
    assert_eq!(get(c, &["configmap", "settings", "-n", FREE]).unwrap()["data"]["value"], "1");

    // A restart (a new pod: a new name, the same TLS Secret) restores
    // service with no one touching a webhook configuration.
    let down = killed.elapsed();
    let restarted = Instant::now();
    let a2 = serve(c, wa.path(), &repo, own, port, "chaos-c", &flags);
    let ready = restarted.elapsed();
    wait_gitgate_answers(c, LEASE);
    let serving = restarted.elapsed();
    let leading = wait_for("the restarted replica to lead", LEASE + Duration::from_secs(5), || {
        (status(&a2)["role"] == "leader").then(|| restarted.elapsed())
    });
    figure(&format!(
        "every replica killed: admission served again {serving:.1?} after the restart (process ready in {ready:.1?}); \
         the restarted replica led {leading:.1?} after it (dead leader's lease: 15 s; gitgate down {down:.1?})"
    ));
    assert!(serving <= LEASE, "admission came back after {serving:?}");
    assert!(leading <= LEASE + RESTORE, "the lead came back after {leading:?}");
    // No one touched a webhook configuration: gitgate's are as it wrote them.
    let vwc = get(c, &["validatingwebhookconfiguration", "gitgate-validate"]).unwrap();
    assert_eq!(vwc["webhooks"][0]["clientConfig"]["url"], format!("https://127.0.0.1:{port}/validate"));
    drop(a2);
}

/// gitgate's webhook configuration points at a Service with no endpoints
/// (a stale install, a Service whose pods are gone: the
/// controller-manager's endpoints controller finds none) while gitgate is
/// down: the enforced namespace fails closed with the apiserver's message,
/// nothing else is locked out, and the restarted gitgate puts its own
/// endpoint back.
#[test]
fn a_webhook_pointed_at_a_service_with_no_endpoints_is_put_back_by_gitgate() {
    let Some(c) = cluster::cluster("a_webhook_pointed_at_a_service_with_no_endpoints_is_put_back_by_gitgate") else {
        return;
    };
    let _serial = cluster::cluster_wide();
    let own = "gitgate-e2e-chaos-svc";
    namespaces(c, own);
    let _cleanup = Cleanup { c, deployments: Vec::new() };
    let repo = app_repo();
    repo.commit("settings");
    let port = free_port();
    let flags = webhook_flags(port);
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let work = tempfile::tempdir().unwrap();
    let g = serve(c, work.path(), &repo, own, port, "svc-a", &flags);
    wait_gitgate_answers(c, Duration::from_secs(30));

    // A Service whose selector matches no pod: the endpoints controller
    // records it with no address.
    let _ = c.kubectl(&["delete", "service", "gitgate-gone", "-n", own, "--ignore-not-found"]);
    c.kubectl_ok(&["create", "service", "clusterip", "gitgate-gone", "--tcp=443:8443", "-n", own]);
    let endpoints = wait_for("the controller-manager's Endpoints", Duration::from_secs(20), || {
        get(c, &["endpoints", "gitgate-gone", "-n", own])
    });
    assert!(endpoints["subsets"].as_array().is_none_or(|s| s.is_empty()), "{endpoints:#}");

    sigkill(g);
    let patch = format!(
        r#"[{{"op":"remove","path":"/webhooks/0/clientConfig/url"}},{{"op":"add","path":"/webhooks/0/clientConfig/service","value":{{"namespace":"{own}","name":"gitgate-gone","port":443,"path":"/validate"}}}}]"#
    );
    c.kubectl_ok(&["patch", "validatingwebhookconfiguration", "gitgate-validate", "--type=json", "-p", &patch]);
    let refused = wait_unreachable(c, Duration::from_secs(20));
    assert!(refused.contains("failed calling webhook \"validate.gitgate.dev\""), "{refused}");
    assert!(refused.contains(&format!("gitgate-gone.{own}.svc")), "{refused}");
    for ns in ["kube-system", own, FREE] {
        let answer = probe(c, ns);
        assert!(matches!(answer, Answer::Admitted), "{ns} is locked out: {}", answer.message());
    }

    let restarted = Instant::now();
    let g2 = serve(c, work.path(), &repo, own, port, "svc-b", &flags);
    wait_gitgate_answers(c, LEASE + Duration::from_secs(10));
    let recovered = restarted.elapsed();
    let vwc = get(c, &["validatingwebhookconfiguration", "gitgate-validate"]).unwrap();
    assert_eq!(vwc["webhooks"][0]["clientConfig"]["url"], format!("https://127.0.0.1:{port}/validate"));
    assert!(vwc["webhooks"][0]["clientConfig"]["service"].is_null());
    let restored = audit_events(work.path()).into_iter().any(|e| {
        e["event"] == "webhookConfigRestored" && e["reasons"][0].as_str().is_some_and(|r| r.contains("edited"))
    });
    assert!(restored, "the restore is in the audit log");
    figure(&format!(
        "Service with no endpoints: service restored {recovered:.1?} after the restart (dead leader's lease: 15 s)"
    ));
    assert!(recovered <= LEASE + RESTORE, "{recovered:?}");
    drop(g2);
}

/// The serving certificate expired (gitgate was down past its end): a
/// gitgate serving it leaves the enforced namespace failing closed with
/// the apiserver's x509 error; restarted with its development pair, gitgate
/// renews it (same CA: the webhook configurations stay valid) and serves
/// again. While it runs, an expired pair put in its place is renewed at
/// the next reload round.
#[test]
fn an_expired_serving_certificate_is_renewed_by_gitgate() {
    let Some(c) = cluster::cluster("an_expired_serving_certificate_is_renewed_by_gitgate") else { return };
    let _serial = cluster::cluster_wide();
    let own = "gitgate-e2e-chaos-cert";
    namespaces(c, own);
    let _cleanup = Cleanup { c, deployments: Vec::new() };
    let repo = app_repo();
    repo.commit("settings");
    let port = free_port();
    let flags = webhook_flags(port);
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let work = tempfile::tempdir().unwrap();
    let certs = work.path().join("certs");
    let g = serve(c, work.path(), &repo, own, port, "cert-a", &flags);
    wait_gitgate_answers(c, Duration::from_secs(30));
    let ca = std::fs::read(certs.join("ca.crt")).unwrap();
    let now = || std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let expire = || {
        // Valid until today 00:00 UTC, signed by the same CA.
        crate::sync::run(&["certs", "--out", certs.to_str().unwrap(), "--days", "0"], work.path());
        let (_, until) = gitgate::tls::validity(&std::fs::read(certs.join("tls.crt")).unwrap()).unwrap();
        assert!(until <= now(), "the pair is expired");
    };

    sigkill(g);
    expire();
    // What the apiserver does with it: the same files given explicitly
    // (gitgate never renews those) are served as they are.
    let (cert, key) = (certs.join("tls.crt"), certs.join("tls.key"));
    let mut explicit = flags.clone();
    explicit.extend(["--tls-cert", cert.to_str().unwrap(), "--tls-key", key.to_str().unwrap()]);
    let stale = serve(c, work.path(), &repo, own, port, "cert-b", &explicit);
    let refused = wait_unreachable(c, Duration::from_secs(20));
    assert!(refused.contains("x509: certificate has expired or is not yet valid"), "{refused}");
    assert!(matches!(probe(c, "kube-system"), Answer::Admitted));
    sigkill(stale);

    let restarted = Instant::now();
    let g2 = serve(c, work.path(), &repo, own, port, "cert-c", &flags);
    let recovered = {
        wait_gitgate_answers(c, LEASE);
        restarted.elapsed()
    };
    g2.wait_for_log("renewed the expired development certificate", Duration::from_secs(1));
    assert_eq!(std::fs::read(certs.join("ca.crt")).unwrap(), ca, "the CA (the webhooks' caBundle) is kept");
    figure(&format!("expired certificate: renewed at start, service restored {recovered:.1?} after the restart"));
    assert!(recovered <= LEASE, "{recovered:?}");

    // While it runs: renewed at the next reload round (every second here).
    expire();
    let t = Instant::now();
    wait_for("the running gitgate to renew the expired pair", Duration::from_secs(10), || {
        let (_, until) = gitgate::tls::validity(&std::fs::read(certs.join("tls.crt")).ok()?)?;
        (until > now() + 300 * 86_400).then_some(())
    });
    let renewed = t.elapsed();
    wait_gitgate_answers(c, Duration::from_secs(10));
    figure(&format!("expired certificate: renewed by the running gitgate {renewed:.1?} after it expired"));
    drop(g2);
}

/// The CA bundle no longer matches. (1) The CA in `--cert-dir` is rotated
/// while gitgate runs (a renewed development CA, cert-manager's new
/// issuer): the new pair is served at the next reload, and the guard
/// carries the new CA into the webhook configurations. (2) A foreign
/// bundle is written into gitgate's configuration while it is down: once
/// restarted, the enforced namespace fails closed with the apiserver's x509
/// error until gitgate (leading again) puts its own bundle back.
#[test]
fn a_ca_bundle_that_no_longer_matches_is_put_back_by_gitgate() {
    let Some(c) = cluster::cluster("a_ca_bundle_that_no_longer_matches_is_put_back_by_gitgate") else { return };
    let _serial = cluster::cluster_wide();
    let own = "gitgate-e2e-chaos-ca";
    namespaces(c, own);
    let _cleanup = Cleanup { c, deployments: Vec::new() };
    let repo = app_repo();
    repo.commit("settings");
    let port = free_port();
    let flags = webhook_flags(port);
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let work = tempfile::tempdir().unwrap();
    let certs = work.path().join("certs");
    let g = serve(c, work.path(), &repo, own, port, "ca-a", &flags);
    wait_gitgate_answers(c, Duration::from_secs(30));
    let bundle = || {
        get(c, &["validatingwebhookconfiguration", "gitgate-validate"]).unwrap()["webhooks"][0]["clientConfig"]
            ["caBundle"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    let b64 = |p: &Path| {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode(std::fs::read(p).unwrap())
    };
    assert_eq!(bundle(), b64(&certs.join("ca.crt")));

    // (1) A new CA and pair in the directory.
    for f in ["ca.key", "ca.crt"] {
        std::fs::remove_file(certs.join(f)).unwrap();
    }
    crate::sync::run(&["certs", "--out", certs.to_str().unwrap()], work.path());
    let rotated = Instant::now();
    let new_bundle = b64(&certs.join("ca.crt"));
    let mut saw_refusal = false;
    wait_for("the new CA in the webhook configuration and gitgate answering", Duration::from_secs(20), || match probe(
        c, ENFORCED,
    ) {
        Answer::Unreachable(e) => {
            assert!(e.contains("x509"), "{e}");
            saw_refusal = true;
            None
        }
        Answer::Gitgate(_) => (bundle() == new_bundle).then_some(()),
        _ => None,
    });
    let followed = rotated.elapsed();
    figure(&format!(
        "CA rotated on disk: the running gitgate's webhooks answer with the new CA {followed:.1?} later \
         (x509 refusals seen in between: {saw_refusal})"
    ));

    // (2) A foreign bundle while gitgate is down.
    sigkill(g);
    let other = tempfile::tempdir().unwrap();
    crate::sync::run(&["certs", "--out", other.path().to_str().unwrap()], other.path());
    let foreign = b64(&other.path().join("ca.crt"));
    let patch = format!(r#"[{{"op":"replace","path":"/webhooks/0/clientConfig/caBundle","value":"{foreign}"}}]"#);
    c.kubectl_ok(&["patch", "validatingwebhookconfiguration", "gitgate-validate", "--type=json", "-p", &patch]);
    let restarted = Instant::now();
    let g2 = serve(c, work.path(), &repo, own, port, "ca-b", &flags);
    // Up, but the apiserver cannot verify it (until the restarted replica
    // leads: the dead one's lease runs out first).
    let refused = wait_for("the apiserver to refuse gitgate's certificate", Duration::from_secs(10), || {
        match probe(c, ENFORCED) {
            Answer::Unreachable(e) if e.contains("x509") => Some(e),
            _ => None,
        }
    });
    assert!(refused.contains("x509: certificate signed by unknown authority"), "{refused}");
    let answer = probe(c, own);
    assert!(matches!(answer, Answer::Admitted), "{own} is locked out: {}", answer.message());
    wait_gitgate_answers(c, LEASE + Duration::from_secs(10));
    let recovered = restarted.elapsed();
    assert_eq!(bundle(), new_bundle);
    figure(&format!(
        "foreign CA bundle: service restored {recovered:.1?} after the restart (dead leader's lease: 15 s)"
    ));
    assert!(recovered <= LEASE + RESTORE, "{recovered:?}");
    drop(g2);
}

/// The leader is killed (SIGKILL) while a wave waits to be healthy, in a
/// commit that renames four of the app's six objects: the standby takes
/// the lead, finishes the sync (waves in order), the inventory holds every
/// object that exists and nothing else, nothing is half-applied, and the
/// mass-prune guard still stops the deletion of the old four (4 of 6): it
/// is measured against the app before the commit, not against the
/// inventory the dead leader recorded ahead (4 of 12, which it let
/// through). A commit with the trailer then prunes them.
#[test]
fn a_leader_killed_mid_wave_hands_over_and_the_prune_guard_holds() {
    let Some(c) = cluster::cluster("a_leader_killed_mid_wave_hands_over_and_the_prune_guard_holds") else { return };
    let _serial = cluster::cluster_wide();
    let own = "gitgate-e2e-chaos-wave";
    let ns = "e2e-chaos-wave";
    let repo = Repo::new();
    repo.write(
        "gitgate.yaml",
        &format!("{PROJECT}apps:\n  - {{name: wave, project: e2e, path: app, destination: {{namespace: {ns}}}, syncPolicy: {{prune: true, selfHeal: true}}}}\n"),
    );
    repo.write("app/ns.yaml", &format!("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {ns}\n"));
    repo.write("app/keep.yaml", &cm("keep", 0, "1"));
    for i in 1..=4 {
        repo.write(&format!("app/old-{i}.yaml"), &cm(&format!("old-{i}"), 0, "old"));
    }
    let c1 = repo.commit("six objects");
    let (wa, wb) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let extra = ["--wave-timeout", "120s", "--resync-interval", "5s"];
    let a = serve(c, wa.path(), &repo, own, free_port(), "wave-a", &extra);
    wait_for("c1 synced", Duration::from_secs(60), || {
        (app(&status(&a), "wave")?["syncedCommit"] == c1.as_str()).then_some(())
    });
    // Pods need the namespace's default ServiceAccount (the
    // controller-manager makes it): a Pod created before it is refused.
    wait_for("the default ServiceAccount", Duration::from_secs(30), || {
        get(c, &["serviceaccount", "default", "-n", ns])
    });
    let b = serve(c, wb.path(), &repo, own, free_port(), "wave-b", &extra);
    wait_for("b to stand by", Duration::from_secs(10), || (status(&b)["role"] == "follower").then_some(()));

    // c2 renames old-* to new-*, changes keep, and adds a wave 1 Pod that
    // stays Pending (no kubelet) and a wave 2 ConfigMap.
    for i in 1..=4 {
        repo.remove(&format!("app/old-{i}.yaml"));
        repo.write(&format!("app/new-{i}.yaml"), &cm(&format!("new-{i}"), 0, "new"));
    }
    repo.write("app/keep.yaml", &cm("keep", 0, "2"));
    repo.write(
        "app/blocker.yaml",
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: blocker\n  annotations:\n    gitgate.dev/sync-wave: \"1\"\nspec:\n  restartPolicy: Never\n  containers:\n    - name: job\n      image: registry.example.invalid/job:1\n",
    );
    repo.write("app/after.yaml", &cm("after", 2, "1"));
    let c2 = repo.commit("rename old to new; a job in wave 1");
    let inventory = || get(c, &["configmap", "gitgate-inventory-wave", "-n", own]);
    let waiting = try_wait(Duration::from_secs(60), || {
        let pod = get(c, &["pod", "blocker", "-n", ns])?;
        let recorded = inventory()?["data"]["inventory"].as_str()?.contains("|after|");
        (pod["metadata"]["annotations"]["gitgate.dev/commit"] == c2.as_str() && recorded).then_some(())
    });
    assert!(waiting.is_some(), "the leader never waited on wave 1: {:#}\n{}", status(&a), a.log.lock().unwrap());
    std::thread::sleep(Duration::from_millis(500));
    assert!(get(c, &["configmap", "after", "-n", ns]).is_none(), "wave 2 waits for wave 1");
    sigkill(a);
    let killed = Instant::now();
    // The job finishes (as a kubelet would report it).
    c.kubectl_ok(&[
        "patch",
        "pod",
        "blocker",
        "-n",
        ns,
        "--subresource=status",
        "--type=merge",
        "-p",
        r#"{"status":{"phase":"Succeeded"}}"#,
    ]);
    let led = wait_for("b to lead", LEASE + Duration::from_secs(5), || {
        (status(&b)["role"] == "leader").then(|| killed.elapsed())
    });
    let (sync, message) = wait_for("b to finish c2", Duration::from_secs(30), || {
        let st = status(&b);
        let a = app(&st, "wave")?;
        get(c, &["configmap", "after", "-n", ns])?;
        let done = a["targetCommit"] == c2.as_str() && (a["sync"] == "Failed" || a["sync"] == "Synced");
        done.then(|| (a["sync"].as_str().unwrap_or("").to_string(), a["message"].as_str().unwrap_or("").to_string()))
    });
    let finished = killed.elapsed();
    figure(&format!(
        "leader killed mid-wave: the standby led {led:.1?} after the kill and finished the sync {finished:.1?} after it \
         (lease: 15 s)"
    ));
    assert!(led <= LEASE + RESTORE, "the standby led {led:?} after the kill");
    // The guard held: 4 of the 6 objects the app had before the commit.
    assert_eq!(sync, "Failed", "the mass-prune guard was bypassed: old-1..4 pruned without the trailer");
    assert!(message.contains("prune stopped: this commit would delete 4 of 6 objects"), "{message}");
    for i in 1..=4 {
        assert!(get(c, &["configmap", &format!("old-{i}"), "-n", ns]).is_some(), "old-{i} was pruned");
    }
    assert!(audit_events(wb.path()).iter().any(|e| e["event"] == "prune" && e["decision"] == "refused"));
    // Nothing half-applied: c2's objects carry c2's content.
    assert_eq!(get(c, &["configmap", "keep", "-n", ns]).unwrap()["data"]["value"], "2");
    for name in ["new-1", "new-2", "new-3", "new-4", "after"] {
        let o = get(c, &["configmap", name, "-n", ns]).unwrap_or_else(|| panic!("{name} is missing"));
        assert_eq!(o["metadata"]["annotations"]["gitgate.dev/commit"], c2.as_str(), "{name}");
    }
    // Nothing lost: the inventory names every object of the app, and only those.
    let inv = inventory().unwrap();
    let listed = |inv: &Value| -> std::collections::BTreeSet<String> {
        inv["data"]["inventory"].as_str().unwrap().lines().map(|l| l.split('|').nth(4).unwrap().to_string()).collect()
    };
    let live = || -> std::collections::BTreeSet<String> {
        let mut names = std::collections::BTreeSet::from([ns.to_string()]);
        for kind in ["configmaps", "pods"] {
            let l = get(c, &[kind, "-n", ns, "-l", "gitgate.dev/app=wave"]).unwrap();
            names.extend(
                l["items"].as_array().unwrap().iter().map(|o| o["metadata"]["name"].as_str().unwrap().to_string()),
            );
        }
        names
    };
    assert_eq!(listed(&inv), live(), "the inventory and the cluster agree");
    assert_eq!(listed(&inv).len(), 12);
    assert_eq!(inv["data"]["base"], "6", "the guard's measure is the app before the commit");

    // The trailer lets the prune through.
    repo.write("app/README", "old-* retired\n");
    let c3 = repo.commit("retire old-*\n\nGitgate-Allow-Prune: yes");
    wait_for("c3 synced", Duration::from_secs(30), || {
        (app(&status(&b), "wave")?["syncedCommit"] == c3.as_str()).then_some(())
    });
    let inv = inventory().unwrap();
    assert_eq!(listed(&inv), live());
    assert_eq!(listed(&inv).len(), 8);
    assert_eq!(inv["data"]["base"], "8");
    b.terminate(Duration::from_secs(20));
}
