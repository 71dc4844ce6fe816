//! Sync hooks and immutable objects against a real kube-apiserver (issue
//! 19): a PreSync migration Job runs before the Deployment changes, a
//! failing hook stops the sync and runs SyncFail, delete policies clean up,
//! a Job image bump with `Replace=true` re-creates the Job through the
//! gate, one without is refused naming the field and nothing is applied,
//! and a hand-made imitation of a hook is denied.
//!
//! The loopback control plane has no kubelet and no scheduler: no Pod of a
//! hook Job ever runs. The test stands in for the Job controller's verdict
//! — it writes the Job's status (`SuccessCriteriaMet` + `Complete`, or
//! `FailureTarget` + `Failed`) the way the Job controller would, under its
//! own identity ([`STAND_IN`], a ServiceAccount of its own, not the Job
//! controller's). gitgate's ordering, waiting and cleanup run for real.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::sync::{PROJECT, app, audit_events, get, serve_on, status, wait_synced, wait_until};
use crate::cluster::{self, Cluster};
use crate::support::Repo;

/// Who writes a hook Job's status in these tests (not the Job controller).
const STAND_IN: &str = "system:serviceaccount:gitgate-e2e:hook-job-status-stand-in";

/// Writes a hook Job's status as the Job controller would on success or
/// failure (see the module's doc), asserting it was accepted.
fn job_status(c: &Cluster, ns: &str, name: &str, succeed: bool) {
    let out = write_job_status(c, ns, name, succeed);
    assert!(out.status.success(), "writing the status of job {name}: {}", String::from_utf8_lossy(&out.stderr));
}

/// Completes every Job of `ns` that has no verdict yet (the stand-in for
/// the Job controller, for tests that run a whole flow).
pub(crate) fn complete_jobs(c: &Cluster, ns: &str) {
    for j in jobs(c, ns, "") {
        if j["status"]["conditions"].as_array().is_none_or(|c| c.is_empty()) {
            let _ = write_job_status(c, ns, &name(&j), true);
        }
    }
}

fn write_job_status(c: &Cluster, ns: &str, name: &str, succeed: bool) -> std::process::Output {
    let now = {
        let out = std::process::Command::new("date").args(["-u", "+%Y-%m-%dT%H:%M:%SZ"]).output().unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let cond = |t: &str, reason: &str| json!({"type": t, "status": "True", "reason": reason, "message": format!("set by the e2e test ({STAND_IN})"), "lastProbeTime": now, "lastTransitionTime": now});
    // The Job controller (kube-controller-manager runs) may have set the
    // start already: it is never changed.
    let started = get(c, &["job", name, "-n", ns])
        .and_then(|j| j["status"]["startTime"].as_str().map(String::from))
        .unwrap_or_else(|| now.clone());
    let mut status = if succeed {
        json!({"status": {
            "conditions": [cond("SuccessCriteriaMet", "CompletionsReached"), cond("Complete", "CompletionsReached")],
            "startTime": now, "completionTime": now, "succeeded": 1, "active": 0, "ready": 0, "terminating": 0,
            "uncountedTerminatedPods": {},
        }})
    } else {
        json!({"status": {
            "conditions": [cond("FailureTarget", "BackoffLimitExceeded"), cond("Failed", "BackoffLimitExceeded")],
            "startTime": now, "failed": 1, "active": 0, "ready": 0, "terminating": 0,
            "uncountedTerminatedPods": {},
        }})
    };
    status["status"]["startTime"] = json!(started);
    c.kubectl(&[
        &format!("--as={STAND_IN}"),
        "--as-group=system:masters",
        "patch",
        "job",
        name,
        "-n",
        ns,
        "--subresource=status",
        "--type=merge",
        "-p",
        &status.to_string(),
    ])
}

/// The Jobs of a namespace whose name starts with `prefix`, oldest first.
fn jobs(c: &Cluster, ns: &str, prefix: &str) -> Vec<Value> {
    let Some(list) = get(c, &["jobs", "-n", ns]) else { return Vec::new() };
    let mut items: Vec<Value> = list["items"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|j| j["metadata"]["name"].as_str().is_some_and(|n| n.starts_with(prefix)))
        .collect();
    items.sort_by_key(|j| j["metadata"]["creationTimestamp"].as_str().unwrap_or_default().to_string());
    items
}

fn name(j: &Value) -> String {
    j["metadata"]["name"].as_str().unwrap_or_default().to_string()
}

/// `gitgate serve --sync on` behind its own webhooks (installed by the
/// guard, failurePolicy Fail, the CEL policies and the provenance gate
/// deciding), as it is meant to run.
fn serve_gated(
    c: &Cluster,
    work: &std::path::Path,
    repo: &Repo,
    ns: &str,
    extra: &[&str],
) -> crate::common::ServeProcess {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let policies = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
    let client_ca = c.webhook_client_ca().expect("the e2e apiserver presents a webhook client certificate");
    let endpoint = format!("https://127.0.0.1:{port}");
    let mut args = vec![
        "--webhook-endpoint",
        &endpoint,
        "--policies",
        policies.to_str().unwrap(),
        "--client-ca",
        client_ca.to_str().unwrap(),
        "--resync-interval",
        "2s",
    ];
    args.extend_from_slice(extra);
    serve_on(c, work, repo, ns, &format!("127.0.0.1:{port}"), &args)
}

fn remove_guard(c: &Cluster) {
    for kind in ["validatingwebhookconfiguration", "mutatingwebhookconfiguration"] {
        let _ = c.kubectl(&["delete", kind, "-l", "gitgate.dev/guard=true"]);
    }
}

fn web(image: &str) -> String {
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  replicas: 0\n  selector:\n    matchLabels: {{app: web}}\n  template:\n    metadata:\n      labels: {{app: web}}\n    spec:\n      containers:\n        - name: web\n          image: {image}\n"
    )
}

/// The migration as users write it for Argo CD: a PreSync hook Job named
/// by the apiserver, deleted once it succeeded.
fn migrate(image: &str) -> String {
    format!(
        "apiVersion: batch/v1\nkind: Job\nmetadata:\n  generateName: migrate-\n  annotations:\n    argocd.argoproj.io/hook: PreSync\n    argocd.argoproj.io/hook-delete-policy: HookSucceeded\nspec:\n  backoffLimit: 0\n  template:\n    spec:\n      restartPolicy: Never\n      containers:\n        - name: migrate\n          image: {image}\n          command: [\"/app/migrate\", \"up\"]\n"
    )
}

fn image_of(c: &Cluster, ns: &str) -> Option<String> {
    let d = get(c, &["deployment", "web", "-n", ns])?;
    d["spec"]["template"]["spec"]["containers"][0]["image"].as_str().map(String::from)
}

/// Issue 19's "done when", first item: the PreSync migration Job runs
/// before the Deployment changes — on the first sync and on an image bump
/// —, through the gate (the reconciler's hook is admitted as Git's), is
/// deleted once it succeeded (HookSucceeded), and a hand-made imitation
/// of the hook (its generateName, annotations and stamps copied) is
/// denied like any unmanaged create (the anchor class: provenance bypass
/// by imitating what the reconciler creates).
#[test]
fn a_presync_migration_runs_before_the_deployment_changes() {
    let Some(c) = cluster::cluster("a_presync_migration_runs_before_the_deployment_changes") else { return };
    let _serial = cluster::cluster_wide();
    let ns = "e2e-hooks";
    let repo = Repo::new();
    repo.write(
        "gitgate.yaml",
        &format!("{PROJECT}apps:\n  - {{name: shop, project: e2e, path: app, destination: {{namespace: {ns}}}, syncPolicy: {{prune: true, selfHeal: true}}}}\n"),
    );
    repo.write("app/ns.yaml", &format!("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {ns}\n"));
    repo.write("app/web.yaml", &web("registry.example.invalid/web:1"));
    repo.write("app/migrate.yaml", &migrate("registry.example.invalid/web:1"));
    let c1 = repo.commit("shop with its migration");
    let work = tempfile::tempdir().unwrap();
    let s = serve_gated(c, work.path(), &repo, "gitgate-e2e-hooks", &["--hook-timeout", "60s"]);

    // First sync: the hook Job exists, the Deployment does not yet.
    let first = wait_until("the PreSync migration Job", Duration::from_secs(60), || jobs(c, ns, "migrate-").pop());
    assert_eq!(first["metadata"]["annotations"]["gitgate.dev/commit"], c1, "stamped with its commit: {first:#}");
    assert_eq!(first["metadata"]["generateName"], "migrate-");
    assert!(image_of(c, ns).is_none(), "the Deployment waits for the migration");

    // A hand-made imitation of the hook: Git's manifest, the stamps copied.
    let rendered = {
        let out = std::process::Command::new(super::sync::BIN)
            .args(["render", "--repo", &repo.url(), "-o", "json"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice::<Value>(&out.stdout).unwrap()
    };
    let mut fake = rendered["apps"][0]["hooks"][0]["manifest"].clone();
    assert_eq!(fake["metadata"]["generateName"], "migrate-", "{rendered:#}");
    for k in ["gitgate.dev/commit", "gitgate.dev/digest", "gitgate.dev/source"] {
        fake["metadata"]["annotations"][k] = first["metadata"]["annotations"][k].clone();
    }
    fake["metadata"]["labels"] = first["metadata"]["labels"].clone();
    let out = c.kubectl_stdin(&["create", "-f", "-"], fake.to_string().as_bytes());
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "the imitation was admitted");
    assert!(
        err.contains("is a sync hook of app shop from app/migrate.yaml") && err.contains("only gitgate's reconciler"),
        "{err}"
    );
    assert_eq!(jobs(c, ns, "migrate-").len(), 1, "no second hook Job");

    std::thread::sleep(Duration::from_secs(2));
    assert!(image_of(c, ns).is_none(), "still waiting for the migration");
    let t = Instant::now();
    job_status(c, ns, &name(&first), true);
    wait_until("the Deployment after the migration", Duration::from_secs(30), || image_of(c, ns));
    eprintln!("the Deployment applied {:?} after the migration completed", t.elapsed());
    wait_until("the succeeded hook deleted (HookSucceeded)", Duration::from_secs(30), || {
        get(c, &["job", &name(&first), "-n", ns]).is_none().then_some(())
    });
    let a = wait_synced(&s, "shop", &c1);
    let hook = a["objects"].as_array().unwrap().iter().find(|o| o["kind"] == "Job").cloned();
    assert_eq!(hook.as_ref().map(|h| h["wave"].clone()), Some(json!("PreSync")), "{a:#}");

    // The image bump: the new migration runs first, the Deployment waits.
    repo.write("app/web.yaml", &web("registry.example.invalid/web:2"));
    repo.write("app/migrate.yaml", &migrate("registry.example.invalid/web:2"));
    let c2 = repo.commit("web 2, with its migration");
    let second = wait_until("the second migration Job", Duration::from_secs(60), || {
        jobs(c, ns, "migrate-").into_iter().find(|j| j["metadata"]["annotations"]["gitgate.dev/commit"] == c2)
    });
    assert_ne!(name(&second), name(&first));
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(image_of(c, ns).as_deref(), Some("registry.example.invalid/web:1"), "the bump waits for the migration");
    job_status(c, ns, &name(&second), true);
    wait_until("web:2 after the migration", Duration::from_secs(30), || {
        (image_of(c, ns)? == "registry.example.invalid/web:2").then_some(())
    });
    wait_synced(&s, "shop", &c2);
    let events = audit_events(work.path());
    let started: Vec<&Value> = events
        .iter()
        .filter(|e| {
            e["event"] == "apply" && e["kind"] == "Job" && e["reasons"].to_string().contains("PreSync hook started")
        })
        .collect();
    assert_eq!(started.len(), 2, "each run recorded: {started:#?}");
    let cleaned = events.iter().filter(|e| e["event"] == "prune" && e["reasons"].to_string().contains("HookSucceeded"));
    assert_eq!(cleaned.count(), 2);
    s.terminate(Duration::from_secs(20));
    remove_guard(c);
}

/// A failing PreSync hook stops the sync: nothing of the app is applied,
/// the SyncFail hook runs (and its HookSucceeded policy deletes it), the
/// status and the audit log name the failed hook, its file and reason; a
/// fixed commit re-creates the named hook (BeforeHookCreation, the
/// default) and syncs; a hook that never finishes fails at --hook-timeout.
#[test]
fn a_failing_hook_stops_the_sync_and_runs_syncfail() {
    let Some(c) = cluster::cluster("a_failing_hook_stops_the_sync_and_runs_syncfail") else { return };
    // Another test's webhooks (cluster-wide) must not be in the way.
    let _serial = cluster::cluster_wide();
    let ns = "e2e-hookfail";
    c.ensure_namespace(ns);
    let repo = Repo::new();
    repo.write("gitgate.yaml", &format!("apps:\n  - {{name: fail, path: app, destination: {{namespace: {ns}}}}}\n"));
    repo.write("app/cm.yaml", &super::sync::cm("settings", 0, "1"));
    let job = |name: &str, phase: &str, extra: &str| {
        format!(
            "apiVersion: batch/v1\nkind: Job\nmetadata:\n  name: {name}\n  annotations:\n    argocd.argoproj.io/hook: {phase}\n{extra}spec:\n  backoffLimit: 0\n  template:\n    spec:\n      restartPolicy: Never\n      containers: [{{name: m, image: registry.example.invalid/tool:1}}]\n"
        )
    };
    repo.write("app/migrate.yaml", &job("migrate", "PreSync", ""));
    repo.write(
        "app/page.yaml",
        &job("page-oncall", "SyncFail", "    argocd.argoproj.io/hook-delete-policy: HookSucceeded\n"),
    );
    let c1 = repo.commit("a migration that will fail");
    let work = tempfile::tempdir().unwrap();
    let s = super::sync::serve(c, work.path(), &repo, "gitgate-e2e-hookfail", &["--hook-timeout", "20s"]);

    let first = wait_until("the migration Job", Duration::from_secs(60), || get(c, &["job", "migrate", "-n", ns]));
    job_status(c, ns, "migrate", false);
    wait_until("the SyncFail hook", Duration::from_secs(30), || get(c, &["job", "page-oncall", "-n", ns]));
    assert!(get(c, &["configmap", "settings", "-n", ns]).is_none(), "nothing of the app applied");
    job_status(c, ns, "page-oncall", true);
    let failed = wait_until("the failure on the status", Duration::from_secs(30), || {
        let st = status(&s);
        let a = app(&st, "fail")?;
        (a["sync"] == "Failed" && get(c, &["job", "page-oncall", "-n", ns]).is_none()).then(|| a.clone())
    });
    let message = failed["message"].as_str().unwrap_or_default();
    assert!(
        message.contains(&format!("PreSync hook {ns}/Job/migrate (app/migrate.yaml) failed: job failed:")),
        "{failed:#}"
    );
    let audited = wait_until("the failure in the audit log", Duration::from_secs(10), || {
        audit_events(work.path()).into_iter().find(|e| e["event"] == "syncFailed" && e["commit"]["id"] == c1)
    });
    assert!(audited["reasons"].to_string().contains("PreSync hook"), "{audited:#}");
    // The failed run stays (no HookFailed policy), and the commit is held.
    std::thread::sleep(Duration::from_secs(3));
    let still = get(c, &["job", "migrate", "-n", ns]).unwrap();
    assert_eq!(still["metadata"]["uid"], first["metadata"]["uid"], "not run again at the same commit");

    // Fixed in Git: the named hook is re-created (BeforeHookCreation).
    repo.write("app/migrate.yaml", &job("migrate", "PreSync", "").replace("tool:1", "tool:2"));
    let c2 = repo.commit("fix the migration");
    let again = wait_until("the migration re-created", Duration::from_secs(60), || {
        get(c, &["job", "migrate", "-n", ns]).filter(|j| j["metadata"]["uid"] != first["metadata"]["uid"])
    });
    assert_eq!(again["metadata"]["annotations"]["gitgate.dev/commit"], c2);
    job_status(c, ns, "migrate", true);
    wait_synced(&s, "fail", &c2);
    assert!(get(c, &["configmap", "settings", "-n", ns]).is_some());

    // A hook that never finishes fails at --hook-timeout, named.
    repo.write("app/cm.yaml", &super::sync::cm("settings", 0, "2"));
    repo.commit("a change whose migration hangs");
    let t = Instant::now();
    let hung = wait_until("the hook timeout", Duration::from_secs(90), || {
        let st = status(&s);
        let a = app(&st, "fail")?;
        let m = a["message"].as_str()?;
        m.contains("did not finish within 20s (--hook-timeout)").then(|| a.clone())
    });
    eprintln!("the hung hook failed the sync {:?} after the commit", t.elapsed());
    assert!(hung["message"].as_str().unwrap().contains("PreSync hook"), "{hung:#}");
    assert_eq!(get(c, &["configmap", "settings", "-n", ns]).unwrap()["data"]["value"], "1", "nothing half-applied");
    s.terminate(Duration::from_secs(20));
}

/// Immutable fields: a Job kept in Git (not a hook) with
/// `gitgate.dev/sync-options: Replace=true` is deleted and created again
/// on an image bump, through the gate (the reconciler's delete of a
/// declared object is admitted because Git's manifest allows it); one
/// without is refused naming the field and the file, and nothing of that
/// commit is applied — not even the Replace=true Job.
#[test]
fn a_job_image_bump_with_replace_re_creates_the_job() {
    let Some(c) = cluster::cluster("a_job_image_bump_with_replace_re_creates_the_job") else { return };
    let _serial = cluster::cluster_wide();
    let ns = "e2e-replace";
    let repo = Repo::new();
    repo.write(
        "gitgate.yaml",
        &format!("{PROJECT}apps:\n  - {{name: db, project: e2e, path: app, destination: {{namespace: {ns}}}}}\n"),
    );
    repo.write("app/ns.yaml", &format!("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {ns}\n"));
    let job = |name: &str, image: &str, options: &str| {
        format!(
            "apiVersion: batch/v1\nkind: Job\nmetadata:\n  name: {name}\n{options}spec:\n  backoffLimit: 0\n  template:\n    spec:\n      restartPolicy: Never\n      containers: [{{name: m, image: {image}}}]\n"
        )
    };
    let replace = "  annotations:\n    gitgate.dev/sync-options: Replace=true\n";
    repo.write("app/schema.yaml", &job("schema", "registry.example.invalid/schema:1", replace));
    repo.write("app/report.yaml", &job("report", "registry.example.invalid/report:1", ""));
    let c1 = repo.commit("two jobs");
    let work = tempfile::tempdir().unwrap();
    let s = serve_gated(c, work.path(), &repo, "gitgate-e2e-replace", &[]);
    wait_synced(&s, "db", &c1);
    let before = get(c, &["job", "schema", "-n", ns]).unwrap();

    repo.write("app/schema.yaml", &job("schema", "registry.example.invalid/schema:2", replace));
    let c2 = repo.commit("schema 2");
    wait_synced(&s, "db", &c2);
    let after = get(c, &["job", "schema", "-n", ns]).unwrap();
    assert_ne!(after["metadata"]["uid"], before["metadata"]["uid"], "re-created");
    assert_eq!(after["spec"]["template"]["spec"]["containers"][0]["image"], "registry.example.invalid/schema:2");
    let recreated = audit_events(work.path())
        .into_iter()
        .find(|e| e["event"] == "apply" && e["name"] == "schema" && e["reasons"].to_string().contains("immutable"));
    let recreated = recreated.expect("the re-create is recorded");
    assert!(recreated["reasons"].to_string().contains("spec.template is immutable (Replace=true)"), "{recreated:#}");

    // Without Replace=true: refused before anything is applied.
    repo.write("app/schema.yaml", &job("schema", "registry.example.invalid/schema:3", replace));
    repo.write("app/report.yaml", &job("report", "registry.example.invalid/report:2", ""));
    let c3 = repo.commit("schema 3 and report 2");
    let failed = wait_until("the immutable field reported", Duration::from_secs(60), || {
        let st = status(&s);
        let a = app(&st, "db")?;
        (a["sync"] == "Failed" && a["targetCommit"] == c3).then(|| a.clone())
    });
    let message = failed["message"].as_str().unwrap();
    assert!(
        message.contains(&format!("failed to apply {ns}/Job/report (app/report.yaml): spec.template is immutable"))
            && message.contains("gitgate.dev/sync-options: Replace=true")
            && message.contains("nothing of this commit was applied"),
        "{message}"
    );
    let schema = get(c, &["job", "schema", "-n", ns]).unwrap();
    assert_eq!(schema["metadata"]["uid"], after["metadata"]["uid"], "nothing half-applied");
    s.terminate(Duration::from_secs(20));
    remove_guard(c);
}

/// Marks the Pods of a namespace ready, as a kubelet would report them
/// (there is none): under the test's own identity ([`STAND_IN`]).
fn pods_ready(c: &Cluster, ns: &str) {
    let Some(list) = get(c, &["pods", "-n", ns]) else { return };
    let now = {
        let out = std::process::Command::new("date").args(["-u", "+%Y-%m-%dT%H:%M:%SZ"]).output().unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    for pod in list["items"].as_array().cloned().unwrap_or_default() {
        if pod["status"]["phase"] == "Running" || pod["metadata"]["ownerReferences"][0]["kind"] == "Job" {
            continue;
        }
        let containers: Vec<Value> = pod["spec"]["containers"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .map(|ct| json!({"name": ct["name"], "image": ct["image"], "imageID": "", "ready": true, "started": true, "restartCount": 0, "state": {"running": {"startedAt": now}}}))
            .collect();
        let cond = |t: &str| json!({"type": t, "status": "True", "lastTransitionTime": now});
        let status = json!({"status": {
            "phase": "Running", "startTime": now, "containerStatuses": containers,
            "conditions": [cond("PodScheduled"), cond("Initialized"), cond("ContainersReady"), cond("Ready")],
        }});
        let _ = c.kubectl(&[
            &format!("--as={STAND_IN}"),
            "--as-group=system:masters",
            "patch",
            "pod",
            pod["metadata"]["name"].as_str().unwrap_or_default(),
            "-n",
            ns,
            "--subresource=status",
            "--type=merge",
            "-p",
            &status.to_string(),
        ]);
    }
}

/// Issue 19's figure, sync half: Argo CD's `sync-waves` and
/// `pre-post-sync` example apps (copied in tests/fixtures) sync against
/// the real apiserver in Argo CD's order — PreSync hook, wave 0, the Sync
/// hook of wave 1, wave 2, the Sync hook of wave 3; PreSync, the objects,
/// PostSync — read from the audit log, which records each apply and hook
/// run as it happens; every object and kept hook in the cluster holds its
/// manifest's content (the ones deleted by HookSucceeded are gone). The
/// test stands in for the kubelet and the Job controller's verdict: it
/// marks Pods ready and Jobs complete, under its own identity.
#[test]
fn argo_cds_example_apps_with_hooks_sync_in_argo_cds_order() {
    let Some(c) = cluster::cluster("argo_cds_example_apps_with_hooks_sync_in_argo_cds_order") else { return };
    let _serial = cluster::cluster_wide();
    let (waves, prepost) = ("e2e-argo-waves", "e2e-argo-prepost");
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/argocd-example-apps");
    let repo = Repo::new();
    for rel in [
        "sync-waves/manifests.yaml",
        "pre-post-sync/kustomization.yaml",
        "pre-post-sync/pre-sync-job.yaml",
        "pre-post-sync/post-sync-job.yaml",
        "kustomize-guestbook/kustomization.yaml",
        "kustomize-guestbook/guestbook-ui-deployment.yaml",
        "kustomize-guestbook/guestbook-ui-svc.yaml",
    ] {
        repo.write(rel, &std::fs::read_to_string(root.join(rel)).unwrap());
    }
    repo.write(
        "gitgate.yaml",
        &format!("apps:\n  - {{name: waves, path: sync-waves, destination: {{namespace: {waves}}}}}\n  - {{name: prepost, path: pre-post-sync, destination: {{namespace: {prepost}}}}}\n"),
    );
    c.ensure_namespace(waves);
    c.ensure_namespace(prepost);
    let commit = repo.commit("Argo CD's example apps");
    let work = tempfile::tempdir().unwrap();
    let s = super::sync::serve(c, work.path(), &repo, "gitgate-e2e-argo", &["--hook-timeout", "60s"]);

    let t = Instant::now();
    wait_until("both apps synced", Duration::from_secs(120), || {
        for ns in [waves, prepost] {
            complete_jobs(c, ns);
            pods_ready(c, ns);
        }
        let st = status(&s);
        let done = |a: &str| app(&st, a).is_some_and(|a| a["sync"] == "Synced" && a["syncedCommit"] == commit);
        (done("waves") && done("prepost")).then_some(())
    });
    eprintln!("both example apps synced in {:?}", t.elapsed());

    // The order, from the audit log: each name's rank must not go down.
    let events = audit_events(work.path());
    let order = |app_name: &str| -> Vec<String> {
        events
            .iter()
            .filter(|e| e["event"] == "apply" && e["app"] == app_name)
            .map(|e| e["name"].as_str().unwrap_or_default().to_string())
            .collect()
    };
    let check = |app_name: &str, ranks: &[(&str, usize)]| {
        let seen = order(app_name);
        let rank = |n: &str| ranks.iter().find(|(p, _)| n.starts_with(p)).map(|(_, r)| *r);
        let got: Vec<usize> =
            seen.iter().map(|n| rank(n).unwrap_or_else(|| panic!("{n} unexpected: {seen:?}"))).collect();
        assert!(got.windows(2).all(|w| w[0] <= w[1]), "{app_name} out of Argo CD's order: {seen:?}");
        for (p, _) in ranks {
            assert!(seen.iter().any(|n| n.starts_with(p)), "{app_name}: {p} never applied: {seen:?}");
        }
    };
    check(
        "waves",
        &[("upgrade-sql-schema", 0), ("backend", 1), ("maint-page-up", 2), ("frontend", 3), ("maint-page-down", 4)],
    );
    check(
        "prepost",
        &[("pre-post-sync-before", 0), ("pre-post-sync-kustomize-guestbook-ui", 1), ("pre-post-sync-after", 2)],
    );

    // The same objects as the manifests: every field they set, as set.
    let same = |ns: &str, manifest: &Value, live: &Value| {
        let diff = gitgate::contract::first_difference(&manifest.to_string(), live, &[]).unwrap();
        assert_eq!(diff, None, "{ns}: {} differs from the manifest: {live:#}", manifest["metadata"]);
    };
    let docs = |file: &str| {
        let text = std::fs::read_to_string(root.join(file)).unwrap();
        gitgate::render::yaml::parse_documents(file, text.as_bytes()).unwrap()
    };
    for doc in docs("sync-waves/manifests.yaml") {
        let kind = doc["kind"].as_str().unwrap().to_lowercase();
        let live = match doc["metadata"]["name"].as_str() {
            Some(n) => get(c, &[&kind, n, "-n", waves]),
            None => jobs(c, waves, doc["metadata"]["generateName"].as_str().unwrap()).pop(),
        };
        let live = live.unwrap_or_else(|| panic!("{kind} {} is not in the cluster", doc["metadata"]));
        let mut want = doc.clone();
        if let Some(m) = want["metadata"].as_object_mut() {
            m.remove("generateName");
        }
        same(waves, &want, &live);
    }
    for doc in docs("pre-post-sync.kubectl-kustomize.yaml") {
        let kind = doc["kind"].as_str().unwrap().to_lowercase();
        let n = doc["metadata"]["name"].as_str().unwrap();
        let live = get(c, &[&kind, n, "-n", prepost]);
        if doc.pointer("/metadata/annotations/argocd.argoproj.io~1hook").is_some() {
            assert!(live.is_none(), "{n}: deleted once it succeeded (HookSucceeded)");
        } else {
            same(prepost, &doc, &live.unwrap_or_else(|| panic!("{kind} {n} is not in the cluster")));
        }
    }
    s.terminate(Duration::from_secs(20));
}
