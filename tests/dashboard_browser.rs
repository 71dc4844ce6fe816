//! The dashboard as a person sees it: `gitgate serve` on a real Git repo,
//! then Debian's Chromium (headless, driven by playwright-core from
//! `tests/browser/`) loads `/ui`, finds the app's commit, watches a denied
//! hand edit appear, and follows its links to the file, the commit and the
//! audit log. The browser test skips loudly when Chromium or the npm
//! package is missing (`.ci/run` installs both); the HTML test beside it
//! always runs.

mod common;
#[path = "source_common.rs"]
mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use support::Repo;

const BIN: &str = env!("CARGO_BIN_EXE_gitgate");

fn serve(repo: &Repo, work: &Path) -> common::ServeProcess {
    common::install_crypto();
    // No cluster: the sync loop runs in plan mode, the webhooks decide.
    let kubeconfig = work.join("no-cluster.kubeconfig");
    std::fs::write(&kubeconfig, "apiVersion: v1\nkind: Config\nclusters: []\ncontexts: []\nusers: []\n").unwrap();
    common::ServeProcess::spawn(
        BIN,
        work,
        &["--repo", &repo.url(), "--poll-interval", "1h", "--kubeconfig", kubeconfig.to_str().unwrap()],
    )
}

fn client(ca: &Path) -> reqwest::Client {
    let ca = reqwest::Certificate::from_pem(&std::fs::read(ca).unwrap()).unwrap();
    reqwest::Client::builder().tls_certs_only([ca]).build().unwrap()
}

async fn post(c: &reqwest::Client, url: &str, body: &[u8]) -> Value {
    let res = c.post(url).header("content-type", "application/json").body(body.to_vec()).send().await.unwrap();
    assert_eq!(res.status(), 200);
    res.json().await.unwrap()
}

/// An allowed change: the ReplicaSet controller creating a Pod.
fn allowed_review() -> Vec<u8> {
    common::fixture("validate-create-pod-by-controller.json")
}

#[tokio::test]
async fn a_hand_edit_is_denied_without_any_policy_file_and_listed_on_the_dashboard() {
    let (repo, commit) = support::gitops_demo_repo();
    let work = tempfile::tempdir().unwrap();
    let serve = serve(&repo, work.path());
    let base = format!("https://127.0.0.1:{}", serve.addr.port());
    let c = client(&serve.ca);

    let html = c.get(format!("{base}/ui")).send().await.unwrap();
    assert_eq!(html.status(), 200);
    assert!(html.headers()["content-security-policy"].to_str().unwrap().contains("script-src 'self'"));
    let html = html.text().await.unwrap();
    assert!(html.contains("<tr data-app=\"web\">"), "{html}");
    assert!(html.contains(&format!("href=\"/ui/commits/{commit}\"")), "the app row links its commit");

    // Regression: with no policy file (no ./policies in the working
    // directory) the provenance rule used to be off, and this was allowed.
    let answer =
        post(&c, &format!("{base}/validate"), &common::fixture("validate-update-deployment-kubectl-edit-like.json"))
            .await;
    assert_eq!(answer["response"]["allowed"], false, "{answer}");
    let message = answer["response"]["status"]["message"].as_str().unwrap();
    assert!(message.contains("managed by app web from apps/web/deploy.yaml"), "{message}");

    let html = c.get(format!("{base}/ui")).send().await.unwrap().text().await.unwrap();
    assert!(html.contains("<tr class=\"denial\">"), "{html}");
    assert!(html.contains("<code>gitops-demo/Deployment/web</code>"));
    assert!(html.contains("kubernetes-admin"));
    let file = c.get(format!("{base}/ui/files/{commit}/apps/web/deploy.yaml")).send().await.unwrap();
    assert_eq!(file.status(), 200);
    assert!(file.text().await.unwrap().contains("image: nginx:1.27"));
    let missing = c.get(format!("{base}/ui/files/{commit}/apps/web/nope.yaml")).send().await.unwrap();
    assert_eq!(missing.status(), 404);
    let bad = c.get(format!("{base}/ui/audit?decision=maybe")).send().await.unwrap();
    assert_eq!(bad.status(), 400);
    assert!(bad.text().await.unwrap().contains("decision &quot;maybe&quot; is not valid"));
    serve.terminate(Duration::from_secs(20));
}

fn chromium() -> Option<PathBuf> {
    let bin = std::env::var_os("CHROMIUM").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"));
    let browser_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
    let node_ok = Command::new("node").arg("--version").output().is_ok_and(|o| o.status.success());
    if !bin.is_file() || !node_ok || !browser_dir.join("node_modules/playwright-core").is_dir() {
        eprintln!(
            "SKIPPED: the browser test needs Debian's chromium ({}), node, and `npm ci` in tests/browser \
             (.ci/run installs them); the dashboard was not driven in a browser",
            bin.display()
        );
        return None;
    }
    Some(bin)
}

#[tokio::test]
async fn in_chromium_the_dashboard_shows_the_apps_commit_and_a_denial_as_it_happens() {
    let Some(chromium) = chromium() else { return };
    let (repo, commit) = support::gitops_demo_repo();
    let work = tempfile::tempdir().unwrap();
    let serve = serve(&repo, work.path());
    let base = format!("https://127.0.0.1:{}", serve.addr.port());
    let allowed = post(&client(&serve.ca), &format!("{base}/validate"), &allowed_review()).await;
    assert_eq!(allowed["response"]["allowed"], true, "{allowed}");
    let review = common::fixtures_dir().join("validate-update-deployment-kubectl-edit-like.json");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser/dashboard.mjs");
    let mut cmd = Command::new("node");
    cmd.arg(&script)
        .env("GITGATE_URL", &base)
        .env("NODE_EXTRA_CA_CERTS", &serve.ca)
        .env("CHROMIUM", &chromium)
        .env("EXPECT_APP", "web")
        .env("EXPECT_COMMIT", &commit)
        .env("REVIEW_FILE", &review)
        .env("EXPECT_DENIAL", "gitops-demo/Deployment/web is managed by app web");
    if let Some(dir) = std::env::var_os("GITGATE_SCREENSHOTS") {
        cmd.env("SCREENSHOT_DIR", dir);
    }
    // node and the Chromium it drives end with the script, or are killed.
    let out = common::reap::output(&mut cmd).expect("node runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report: Value = stdout.lines().rev().find_map(|l| serde_json::from_str(l).ok()).unwrap_or_else(|| {
        panic!("the browser script printed no report:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr))
    });
    assert_eq!(report["ok"], true, "{report:#}\nstderr: {}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success());
    assert!(report["steps"].as_array().unwrap().len() >= 14, "{report:#}");
    serve.terminate(Duration::from_secs(20));
}
