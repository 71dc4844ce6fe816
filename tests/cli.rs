//! The binary as a user runs it: `gitgate certs`, and `gitgate serve` on
//! its embedded default (certificates generated under the working
//! directory) answered over TLS, then stopped with SIGTERM.

mod support;
use support::server as common;

use std::process::Command;
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_gitgate");

#[test]
fn push_hooks_are_verified_and_trigger_a_fetch() {
    common::install_crypto();
    let work = tempfile::tempdir().unwrap();
    let serve =
        common::ServeProcess::spawn(BIN, work.path(), &["--hook-secret", "hook-s3cret", "--poll-interval", "1h"]);
    serve.wait_for_log("desired set updated", Duration::from_secs(30));
    let url = format!("https://127.0.0.1:{}/hooks/git", serve.addr.port());
    let body = br#"{"ref":"refs/heads/main","after":"0000000000000000000000000000000000000000","repository":{"full_name":"demo/gitops"}}"#;
    let send = |sig: &str| {
        let out = Command::new("curl")
            .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "--cacert"])
            .arg(&serve.ca)
            .args(["-H", "content-type: application/json", "-H", "X-GitHub-Event: push", "-H"])
            .arg(format!("X-Hub-Signature-256: {sig}"))
            .arg("--data-binary")
            .arg(std::str::from_utf8(body).unwrap())
            .arg(&url)
            .output()
            .unwrap();
        String::from_utf8(out.stdout).unwrap()
    };
    assert_eq!(send("sha256=00"), "401", "a bad signature is refused");
    let good = gitgate::source::hooks::github_signature(b"hook-s3cret", body);
    assert_eq!(send(&good), "202", "a signed push is accepted");
    serve.wait_for_log("git push webhook: fetching now", Duration::from_secs(10));
    serve.terminate(Duration::from_secs(20));
}

#[test]
fn certs_writes_a_ca_and_serving_pair_and_prints_the_ca_bundle() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .args(["certs", "--out"])
        .arg(dir.path())
        .args(["--dns", "gitgate.gitgate.svc", "--ip", "127.0.0.1"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8(out.stdout).unwrap();
    let bundle = stdout.lines().last().unwrap();
    use base64::Engine as _;
    let pem = base64::engine::general_purpose::STANDARD.decode(bundle).unwrap();
    assert_eq!(pem, std::fs::read(dir.path().join("ca.crt")).unwrap(), "caBundle is the CA certificate");
    for f in ["ca.crt", "ca.key", "tls.crt", "tls.key"] {
        assert!(dir.path().join(f).is_file(), "{f}");
    }
    let bad = Command::new(BIN).args(["certs", "--out"]).arg(dir.path()).args(["--dns", "no spaces"]).output().unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("not a valid DNS name"));
}

#[test]
fn serve_runs_on_its_embedded_default_and_drains_on_sigterm() {
    common::install_crypto();
    let work = tempfile::tempdir().unwrap();
    let serve = common::ServeProcess::spawn(BIN, work.path(), &[]);
    let (addr, ca) = (serve.addr, serve.ca.clone());
    assert!(ca.is_file(), "serve generated its certificates under certs/");
    // it tracks the bundled example GitOps repo
    let log = serve.wait_for_log("desired set updated", Duration::from_secs(30));
    assert!(log.contains("tracking Git"), "{log}");

    // what the README tells a user to run
    let fixture = common::fixtures_dir().join("validate-create-deployment.json");
    let out = common::post_review(&ca, addr, &fixture);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let got: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let sent: serde_json::Value = serde_json::from_slice(&std::fs::read(&fixture).unwrap()).unwrap();
    assert_eq!(got["kind"], "AdmissionReview");
    assert_eq!(got["response"]["uid"], sent["request"]["uid"]);

    let code = serve.terminate(Duration::from_secs(20));
    assert!(code.success(), "serve exits 0 after draining: {code:?}");
}

/// One repository, one apps file per cluster: `--config` names this
/// cluster's (Flux's `path: ./clusters/production`).
#[test]
fn serve_reads_the_apps_file_named_by_config() {
    common::install_crypto();
    let repo = support::Repo::new();
    repo.write(
        "clusters/prod/gitgate.yaml",
        "apps:\n  - {name: prod-web, path: apps/web, destination: {namespace: prod}}\n",
    );
    repo.write(
        "clusters/staging/gitgate.yaml",
        "apps:\n  - {name: staging-web, path: apps/web, destination: {namespace: staging}}\n",
    );
    repo.write("apps/web/cm.yaml", &support::configmap("web", "v1"));
    repo.commit("two clusters");
    let work = tempfile::tempdir().unwrap();
    let kubeconfig = work.path().join("none.kubeconfig");
    std::fs::write(&kubeconfig, "apiVersion: v1\nkind: Config\nclusters: []\ncontexts: []\nusers: []\n").unwrap();
    let url = repo.url();
    let args = ["--repo", &url, "--config", "clusters/prod/gitgate.yaml", "--kubeconfig", kubeconfig.to_str().unwrap()];
    let serve = common::ServeProcess::spawn(BIN, work.path(), &args);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let apps = loop {
        let out = Command::new("curl")
            .args(["-sS", "--fail", "--cacert"])
            .arg(&serve.ca)
            .arg(format!("https://127.0.0.1:{}/api/v1/apps", serve.addr.port()))
            .output()
            .unwrap();
        let apps: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        if apps["apps"].as_array().is_some_and(|a| !a.is_empty()) || std::time::Instant::now() > deadline {
            break apps;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let names: Vec<&str> = apps["apps"].as_array().unwrap().iter().map(|a| a["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["prod-web"], "{apps}");
    serve.terminate(Duration::from_secs(20));

    let bad =
        Command::new(BIN).args(["serve", "--config", "../outside.yaml"]).current_dir(work.path()).output().unwrap();
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("--config \"../outside.yaml\" is not a path in a repository")
    );
}

/// Policy files add to the provenance gate: a directory of other policies
/// does not switch off "Git is the only deploy path".
#[test]
fn policy_files_without_the_provenance_gate_still_enforce_it() {
    common::install_crypto();
    let (repo, _commit) = support::gitops_demo_repo();
    let work = tempfile::tempdir().unwrap();
    let policies = work.path().join("my-policies");
    std::fs::create_dir(&policies).unwrap();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    std::fs::copy(root.join("policies/no-latest-tag.yaml"), policies.join("no-latest-tag.yaml")).unwrap();
    let kubeconfig = work.path().join("none.kubeconfig");
    std::fs::write(&kubeconfig, "apiVersion: v1\nkind: Config\nclusters: []\ncontexts: []\nusers: []\n").unwrap();
    let url = repo.url();
    let args = ["--repo", &url, "--policies", policies.to_str().unwrap(), "--kubeconfig", kubeconfig.to_str().unwrap()];
    let serve = common::ServeProcess::spawn(BIN, work.path(), &args);
    let fixture = common::fixtures_dir().join("validate-update-deployment-kubectl-edit-like.json");
    let out = common::post_review(&serve.ca, serve.addr, &fixture);
    let answer: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(answer["response"]["allowed"], false, "{answer}");
    let message = answer["response"]["status"]["message"].as_str().unwrap();
    assert!(message.contains("gitgate-provenance") && message.contains("managed by app web"), "{message}");
    serve.terminate(Duration::from_secs(20));
}

/// A test that fails while its `gitgate serve` runs takes the server with
/// it: e2e tests once left two `serve --listen 127.0.0.1:0` processes
/// running for good after they failed.
#[test]
fn a_failing_test_leaves_no_serve_process_behind() {
    common::install_crypto();
    let work = tempfile::tempdir().unwrap();
    let mut pid = 0;
    let failed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let serve = common::ServeProcess::spawn(BIN, work.path(), &[]);
        pid = serve.child.id();
        assert!(common::reap::alive(pid));
        panic!("(expected) a test fails while serve {pid} runs");
    }));
    assert!(failed.is_err());
    assert!(pid != 0);
    assert!(!common::reap::alive(pid), "gitgate serve (pid {pid}) outlived the failed test");
}

/// What a test's child starts dies with it too: the walk-through's bash
/// starts `gitgate serve &`, the browser test's node a Chromium.
#[test]
fn a_guarded_child_takes_what_it_started_with_it() {
    use std::io::BufRead as _;
    let mut child = common::reap::spawn(
        Command::new("sh").args(["-c", "sleep 600 & echo $!; wait"]).stdout(std::process::Stdio::piped()),
    )
    .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let grandchild: u32 = line.trim().parse().unwrap();
    let environ = std::fs::read(format!("/proc/{grandchild}/environ")).unwrap();
    let marker = format!("{}={}", common::reap::MARKER, common::reap::run_id());
    assert!(environ.split(|b| *b == 0).any(|v| v == marker.as_bytes()), "the grandchild carries the run's marker");
    let shell = child.id();
    assert!(common::reap::alive(grandchild));
    drop(child);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while common::reap::alive(grandchild) && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!common::reap::alive(shell), "the child survived its guard");
    assert!(!common::reap::alive(grandchild), "the child's own child (pid {grandchild}) survived the guard");
}

/// README's quick start, verbatim, in a copy of the checkout's tracked
/// files (what a plain `git clone` holds, nothing beside it): `serve`, the
/// `curl` example with its in-repository fixture, then `audit query` and
/// `render`. `cargo run --release --` is this build's binary; the only
/// other change is the port (8443 may be taken by another test).
#[test]
fn the_readme_quick_start_runs_verbatim_in_a_plain_clone() {
    common::install_crypto();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let quick = readme
        .split("## Quick start")
        .nth(1)
        .and_then(|s| s.split("\n## ").next())
        .expect("README has a quick start section");
    let curl = quick
        .split("```sh\n")
        .skip(1)
        .filter_map(|b| b.split("```").next())
        .find(|b| b.trim_start().starts_with("curl"))
        .expect("the quick start has a curl example")
        .replace("\\\n", " ");
    let serve_line = quick.lines().find(|l| l.contains("-- serve")).expect("the quick start runs serve");
    assert!(serve_line.starts_with("cargo run --release -- serve"), "{serve_line}");
    for cmd in ["cargo run --release -- audit query", "cargo run --release -- render"] {
        assert!(quick.contains(&format!("`{cmd}`")), "the quick start names {cmd}");
    }

    // A plain clone: the tracked files only, in a directory with nothing
    // beside it.
    let outer = tempfile::tempdir().unwrap();
    let clone = outer.path().join("gitgate");
    let files = Command::new("git").args(["ls-files", "-z"]).current_dir(root).output().unwrap();
    if !files.status.success() {
        eprintln!("SKIPPED: {} is not a Git checkout", root.display());
        return;
    }
    for f in files.stdout.split(|b| *b == 0).filter(|f| !f.is_empty()) {
        let rel = std::path::Path::new(std::str::from_utf8(f).unwrap());
        let (src, dst) = (root.join(rel), clone.join(rel));
        if src.is_file() {
            std::fs::create_dir_all(dst.parent().unwrap()).unwrap();
            std::fs::copy(&src, &dst).unwrap();
        }
    }

    let serve = common::ServeProcess::spawn(BIN, &clone, &[]);
    serve.wait_for_log("desired set updated", Duration::from_secs(30));
    let curl = curl.replace("127.0.0.1:8443", &format!("127.0.0.1:{}", serve.addr.port()));
    let out = Command::new("sh").args(["-ec", &curl]).current_dir(&clone).output().unwrap();
    assert!(out.status.success(), "{curl}: {}", String::from_utf8_lossy(&out.stderr));
    let got: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let fixture = clone.join("tests/fixtures/admission/validate-create-deployment.json");
    let sent: serde_json::Value = serde_json::from_slice(&std::fs::read(&fixture).unwrap()).unwrap();
    assert_eq!(got["response"]["uid"], sent["request"]["uid"]);
    assert_eq!(got["response"]["allowed"], true, "README: this Deployment passes every built-in policy: {got}");
    assert!(serve.terminate(Duration::from_secs(20)).success());

    let run = |args: &[&str]| {
        let out = Command::new(BIN).args(args).current_dir(&clone).output().unwrap();
        assert!(out.status.success(), "gitgate {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    };
    let query = run(&["audit", "query", "-o", "json"]);
    let name = sent["request"]["name"].as_str().unwrap();
    let records: Vec<serde_json::Value> = serde_json::from_str(&query).unwrap();
    assert!(
        records.iter().any(|r| r["uid"] == sent["request"]["uid"] && r["name"] == name && r["decision"] == "allow"),
        "audit query shows the decision the curl example got:\n{query}"
    );
    let table = run(&["audit", "query"]);
    assert!(table.contains(name), "{table}");
    let rendered = run(&["render"]);
    for app in ["guestbook", "redis", "platform"] {
        assert!(rendered.contains(app), "render prints the bundled example's apps ({app}):\n{rendered}");
    }
}

/// SECURITY.md maps each vulnerability class to the test that guards it:
/// every test it names exists, in the file it names (`path::test` or
/// `::test` for the row's last named file), so a renamed or deleted test
/// cannot leave a row that guards nothing.
#[test]
fn every_test_security_md_names_exists() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let doc = std::fs::read_to_string(root.join("SECURITY.md")).unwrap();
    let mut checked = 0;
    for row in doc.lines().filter(|l| l.starts_with("| ") && !l.starts_with("| class") && !l.starts_with("| ---")) {
        let tests = row.rsplit(" | ").next().unwrap_or_default();
        let mut file = String::new();
        for cell in tests.split('`').skip(1).step_by(2) {
            let Some((path, name)) = cell.rsplit_once("::") else { continue };
            let path = path.split("::").next().unwrap_or_default();
            if !path.is_empty() {
                file = if path.contains('/') { path.to_string() } else { format!("tests/e2e/{path}.rs") };
            }
            let text = std::fs::read_to_string(root.join(&file)).unwrap_or_else(|_| panic!("SECURITY.md names {file}"));
            assert!(text.contains(&format!("fn {name}(")), "SECURITY.md names {file}::{name}, which does not exist");
            checked += 1;
        }
    }
    assert!(checked >= 30, "only {checked} tests named");
}

/// `serve` answers a policy reading `authorizer` (issue 20, item 3): a
/// review from an unauthenticated caller (no `--client-ca`) gets no
/// SubjectAccessReview — its check fails saying why, and the policy's
/// `failurePolicy: Fail` denies.
#[test]
fn serve_runs_authorizer_policies_and_never_reviews_an_unauthenticated_callers_user() {
    common::install_crypto();
    let (repo, _commit) = support::gitops_demo_repo();
    let work = tempfile::tempdir().unwrap();
    let policies = work.path().join("my-policies");
    std::fs::create_dir(&policies).unwrap();
    std::fs::write(
        policies.join("secret-readers.yaml"),
        r#"apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicy
metadata: {name: secret-readers}
spec:
  failurePolicy: Fail
  matchConstraints:
    resourceRules:
    - {apiGroups: [""], apiVersions: [v1], operations: [CREATE], resources: [configmaps]}
  validations:
  - expression: "authorizer.group('').resource('secrets').namespace(object.metadata.namespace).check('get').allowed()"
---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicyBinding
metadata: {name: secret-readers}
spec: {policyName: secret-readers, validationActions: [Deny]}
"#,
    )
    .unwrap();
    let kubeconfig = work.path().join("none.kubeconfig");
    std::fs::write(&kubeconfig, "apiVersion: v1\nkind: Config\nclusters: []\ncontexts: []\nusers: []\n").unwrap();
    let url = repo.url();
    let args = ["--repo", &url, "--policies", policies.to_str().unwrap(), "--kubeconfig", kubeconfig.to_str().unwrap()];
    let serve = common::ServeProcess::spawn(BIN, work.path(), &args);
    let review = serde_json::json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {
            "uid": "authz-1",
            "kind": {"group": "", "version": "v1", "kind": "ConfigMap"},
            "resource": {"group": "", "version": "v1", "resource": "configmaps"},
            "name": "probe", "namespace": "scratch", "operation": "CREATE",
            "userInfo": {"username": "system:admin", "groups": ["system:masters"]},
            "object": {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "probe", "namespace": "scratch"}}
        }
    });
    let body = work.path().join("review.json");
    std::fs::write(&body, review.to_string()).unwrap();
    let out = common::post_review(&serve.ca, serve.addr, &body);
    let answer: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(answer["response"]["allowed"], false, "{answer}");
    let message = answer["response"]["status"]["message"].as_str().unwrap();
    assert!(message.contains("secret-readers") && message.contains("the authorizer is not available"), "{message}");
    assert!(serve.log.lock().unwrap().contains("a policy reads `authorizer`"));
    serve.terminate(Duration::from_secs(20));
}
