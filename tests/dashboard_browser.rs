//! The dashboard as a person sees it: `gitgate serve` on a real Git repo,
//! then Debian's Chromium (headless, driven by playwright-core from
//! `tests/browser/`) loads `/ui`, signs in with a token, finds the app's
//! commit, watches a denied hand edit appear, and follows its links to the
//! file, the commit and the audit log; then signs in as a read-only user
//! who sees one project only. The browser test skips loudly when Chromium
//! or the npm package is missing (`.ci/run` installs both); the HTTP tests
//! beside it always run.
//!
//! Logins are checked by a TokenReview against a small fake apiserver in
//! this process (`--auth-kubeconfig`), which knows four tokens: an admin
//! (`--admin-group platform`), a frontend reader, a user with no role, and
//! none other. The e2e suite does the same against a real kube-apiserver
//! with `kubectl create token` (tests/e2e/sync.rs, the README walk-through).

mod support;
use support::server as common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::{Value, json};
use support::Repo;

const BIN: &str = env!("CARGO_BIN_EXE_gitgate");
const ADMIN: &str = "admin-token-5b0c1e";
const FRONTEND: &str = "frontend-token-9d2f7a";
const NOBODY: &str = "nobody-token-41aa03";
const UNKNOWN: &str = "forged-token-000000";

/// A fake apiserver that answers TokenReviews only, counting them.
struct FakeApiserver {
    addr: SocketAddr,
    reviews: Arc<AtomicUsize>,
}

async fn fake_apiserver() -> FakeApiserver {
    use axum::routing::post;
    let reviews = Arc::new(AtomicUsize::new(0));
    let count = reviews.clone();
    let app = axum::Router::new().route(
        "/apis/authentication.k8s.io/v1/tokenreviews",
        post(move |axum::Json(review): axum::Json<Value>| {
            let count = count.clone();
            async move {
                count.fetch_add(1, Ordering::SeqCst);
                let token = review["spec"]["token"].as_str().unwrap_or_default();
                let user = match token {
                    ADMIN => Some(("ada", vec!["platform", "system:authenticated"])),
                    FRONTEND => Some(("fran", vec!["frontend", "system:authenticated"])),
                    NOBODY => Some(("nobody", vec!["system:authenticated"])),
                    _ => None,
                };
                let status = match user {
                    Some((name, groups)) => {
                        json!({"authenticated": true, "user": {"username": name, "groups": groups}})
                    }
                    // As kube-apiserver answers: `authenticated: false` omitted.
                    None => json!({"user": {}, "error": "invalid bearer token"}),
                };
                axum::Json(json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview",
                                  "metadata": {}, "spec": {}, "status": status}))
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    FakeApiserver { addr, reviews }
}

fn no_cluster(work: &Path) -> PathBuf {
    let kubeconfig = work.join("no-cluster.kubeconfig");
    std::fs::write(&kubeconfig, "apiVersion: v1\nkind: Config\nclusters: []\ncontexts: []\nusers: []\n").unwrap();
    kubeconfig
}

fn serve(repo: &Repo, work: &Path) -> common::ServeProcess {
    common::install_crypto();
    // No cluster: the sync loop runs in plan mode, the webhooks decide, and
    // the dashboard is open on this loopback address.
    let kubeconfig = no_cluster(work);
    common::ServeProcess::spawn(
        BIN,
        work,
        &["--repo", &repo.url(), "--poll-interval", "1h", "--kubeconfig", kubeconfig.to_str().unwrap()],
    )
}

/// gitgate in plan mode whose logins the fake apiserver reviews.
fn serve_with_login(repo: &Repo, work: &Path, api: &FakeApiserver, extra: &[&str]) -> common::ServeProcess {
    common::install_crypto();
    let kubeconfig = no_cluster(work);
    let auth = work.join("auth.kubeconfig");
    std::fs::write(
        &auth,
        format!(
            "apiVersion: v1\nkind: Config\nclusters: [{{name: fake, cluster: {{server: \"http://{}\"}}}}]\n\
             users: [{{name: gitgate, user: {{token: gitgate-own-credential}}}}]\n\
             contexts: [{{name: fake, context: {{cluster: fake, user: gitgate}}}}]\ncurrent-context: fake\n",
            api.addr
        ),
    )
    .unwrap();
    let mut args = vec![
        "--repo",
        &repo.url(),
        "--poll-interval",
        "1h",
        "--kubeconfig",
        kubeconfig.to_str().unwrap(),
        "--auth-kubeconfig",
        auth.to_str().unwrap(),
        "--admin-group",
        "platform",
    ]
    .into_iter()
    .map(str::to_string)
    .collect::<Vec<_>>();
    args.extend(extra.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    common::ServeProcess::spawn(BIN, work, &args)
}

fn client(ca: &Path) -> reqwest::Client {
    let ca = reqwest::Certificate::from_pem(&std::fs::read(ca).unwrap()).unwrap();
    reqwest::Client::builder().tls_certs_only([ca]).redirect(reqwest::redirect::Policy::none()).build().unwrap()
}

async fn post(c: &reqwest::Client, url: &str, body: &[u8]) -> Value {
    let res = c.post(url).header("content-type", "application/json").body(body.to_vec()).send().await.unwrap();
    assert_eq!(res.status(), 200);
    res.json().await.unwrap()
}

/// A form post (`application/x-www-form-urlencoded`).
fn form(c: &reqwest::Client, url: &str, origin: Option<&str>, fields: &[(&str, &str)]) -> reqwest::RequestBuilder {
    let enc = |s: &str| {
        s.bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                    (b as char).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect::<String>()
    };
    let body = fields.iter().map(|(k, v)| format!("{}={}", enc(k), enc(v))).collect::<Vec<_>>().join("&");
    let req = c.post(url).header("content-type", "application/x-www-form-urlencoded").body(body);
    match origin {
        Some(o) => req.header("origin", o),
        None => req,
    }
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
    assert!(html.contains("no login: no cluster to check tokens, loopback only"), "the header says it is open");

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
    let file = c.get(format!("{base}/ui/files/apps/web/deploy.yaml")).send().await.unwrap();
    assert_eq!(file.status(), 200);
    let file = file.text().await.unwrap();
    assert!(file.contains("image: nginx:1.27") && file.contains(&commit[..7]), "shown at the tracked commit");
    let missing = c.get(format!("{base}/ui/files/apps/web/nope.yaml")).send().await.unwrap();
    assert_eq!(missing.status(), 404);
    let bad = c.get(format!("{base}/ui/audit?decision=maybe")).send().await.unwrap();
    assert_eq!(bad.status(), 400);
    assert!(bad.text().await.unwrap().contains("decision &quot;maybe&quot; is not valid"));
    serve.terminate(Duration::from_secs(20));
}

#[tokio::test]
async fn without_a_cluster_the_dashboard_is_never_open_on_a_non_loopback_address() {
    let (repo, _) = support::gitops_demo_repo();
    let work = tempfile::tempdir().unwrap();
    common::install_crypto();
    let kubeconfig = no_cluster(work.path());
    let serve = common::ServeProcess::spawn_on(
        BIN,
        work.path(),
        "0.0.0.0:0",
        &["--repo", &repo.url(), "--poll-interval", "1h", "--kubeconfig", kubeconfig.to_str().unwrap()],
    );
    let base = format!("https://127.0.0.1:{}", serve.addr.port());
    let c = client(&serve.ca);
    for path in ["/ui", "/api/v1/apps", "/ui/files/apps/web/deploy.yaml", "/ui/audit"] {
        let res = c.get(format!("{base}{path}")).send().await.unwrap();
        assert_eq!(res.status(), 503, "{path}");
        assert!(res.text().await.unwrap().contains("--dashboard-auth"), "{path}: the answer says how to open it");
    }
    // The webhooks are not behind the dashboard's gate.
    let allowed = post(&c, &format!("{base}/validate"), &allowed_review()).await;
    assert_eq!(allowed["response"]["allowed"], true);
    assert!(serve.log.lock().unwrap().contains("the dashboard and /api/v1 are off (503)"));
    serve.terminate(Duration::from_secs(20));
}

/// What an attacker who reaches the port tries, each refused — the class of
/// Argo CD's unauthenticated and over-broad API reads (CVE-2022-29165-style
/// auth bypass, CVE-2023-22482-style token handling, CVE-2022-24730-style
/// reads of files outside the app): no token, a forged token, a valid
/// token with no role, another project's app and file, a `List` of
/// Secrets, a secretGenerator input, a commit outside the tracked history.
#[tokio::test]
async fn an_attacker_is_refused_and_a_reader_sees_one_project_only() {
    let api = fake_apiserver().await;
    let (repo, commit) = support::gitops_roles_repo();
    // A commit on another branch: never shown.
    support::git(repo.path(), &["checkout", "-q", "-b", "side"]);
    repo.write("apps/pay/side.yaml", &support::configmap("side", "x"));
    let side = repo.commit("side branch");
    support::git(repo.path(), &["checkout", "-q", "-"]);
    let work = tempfile::tempdir().unwrap();
    let serve = serve_with_login(&repo, work.path(), &api, &["--metrics-listen", "127.0.0.1:0"]);
    let base = format!("https://127.0.0.1:{}", serve.addr.port());
    let c = client(&serve.ca);
    let get = |path: &str, token: Option<&str>| {
        let mut req = c.get(format!("{base}{path}"));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        async move {
            let res = req.send().await.unwrap();
            let status = res.status().as_u16();
            let headers = res.headers().clone();
            (status, headers, res.text().await.unwrap())
        }
    };

    // No token: 401, the login page (the API answers JSON).
    let (code, headers, body) = get("/ui", None).await;
    assert_eq!(code, 401);
    assert_eq!(headers["www-authenticate"], "Bearer realm=\"gitgate\"");
    assert!(body.contains("<form id=\"login\" method=\"post\" action=\"/ui/login\">"), "{body}");
    let (code, _, body) = get("/api/v1/apps", None).await;
    assert_eq!(code, 401);
    assert!(serde_json::from_str::<Value>(&body).unwrap()["error"].as_str().unwrap().contains("bearer token"));
    for path in ["/ui/files/apps/web/deploy.yaml", "/ui/audit", &format!("/ui/commits/{commit}"), "/ui/apps/web"] {
        assert_eq!(get(path, None).await.0, 401, "{path}");
    }
    // A forged token: 401, by header and by cookie.
    assert_eq!(get("/api/v1/apps", Some(UNKNOWN)).await.0, 401);
    let forged = c.get(format!("{base}/ui")).header("cookie", format!("gitgate_token={UNKNOWN}")).send().await.unwrap();
    assert_eq!(forged.status(), 401);
    assert!(forged.headers()["set-cookie"].to_str().unwrap().contains("Max-Age=0"), "the bad cookie is cleared");
    // A valid token with no role: 403, saying so.
    let (code, _, body) = get("/ui", Some(NOBODY)).await;
    assert_eq!(code, 403);
    assert!(body.contains("no project in gitgate.yaml grants read"), "{body}");
    assert_eq!(get("/api/v1/apps", Some(NOBODY)).await.0, 403);

    // The frontend reader: its two apps, not payments'.
    let (code, _, body) = get("/api/v1/apps", Some(FRONTEND)).await;
    assert_eq!(code, 200);
    let names: Vec<String> = serde_json::from_str::<Value>(&body).unwrap()["apps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names, ["web", "web-config"]);
    assert_eq!(get("/api/v1/apps/pay", Some(FRONTEND)).await.0, 404);
    let (_, _, page) = get("/ui", Some(FRONTEND)).await;
    assert!(page.contains("<tr data-app=\"web\">") && !page.contains("data-app=\"pay\""), "{page}");
    assert_eq!(get("/ui/apps/pay", Some(FRONTEND)).await.0, 404);
    assert_eq!(get("/ui/files/apps/web/deploy.yaml", Some(FRONTEND)).await.0, 200);
    // Another project's file, the config naming every project: not found.
    assert_eq!(get("/ui/files/apps/pay/deploy.yaml", Some(FRONTEND)).await.0, 404);
    assert_eq!(get("/ui/files/gitgate.yaml", Some(FRONTEND)).await.0, 404);
    // A `List` holding a Secret, a secretGenerator input: refused to all.
    for token in [FRONTEND, ADMIN] {
        let (code, _, body) = get("/ui/files/apps/web/bundle.yaml", Some(token)).await;
        assert_eq!(code, 403, "{body}");
        assert!(!body.contains("list-secret-value"));
        let (code, _, body) = get("/ui/files/apps/web-config/db.env", Some(token)).await;
        assert_eq!(code, 403, "{body}");
        assert!(body.contains("secretGenerator") && !body.contains("generator-secret-value"), "{body}");
    }
    // Only the tracked revision: another branch's commit and the old
    // commit-addressed file URL find nothing.
    assert_eq!(get(&format!("/ui/commits/{side}"), Some(ADMIN)).await.0, 404);
    assert_eq!(get(&format!("/ui/commits/{commit}"), Some(FRONTEND)).await.0, 200);
    assert_eq!(get("/ui/files/apps/pay/side.yaml", Some(ADMIN)).await.0, 404);
    assert_eq!(get(&format!("/ui/files/{commit}/apps/web/deploy.yaml"), Some(ADMIN)).await.0, 404);
    // The admin sees every project.
    assert_eq!(get("/ui/files/apps/pay/deploy.yaml", Some(ADMIN)).await.0, 200);
    let (_, _, page) = get("/ui", Some(ADMIN)).await;
    assert!(page.contains("data-app=\"pay\"") && page.contains("all projects"));

    // The audit log and the recent denials: the reader's apps only.
    post(&c, &format!("{base}/validate"), &allowed_review()).await;
    post(&c, &format!("{base}/validate"), &common::fixture("validate-update-deployment-kubectl-edit-like.json")).await;
    let (_, _, audit) = get("/ui/audit", Some(FRONTEND)).await;
    assert!(audit.contains("decision-deny") && !audit.contains("decision-allow"), "{audit}");
    let (_, _, audit) = get("/ui/audit", Some(ADMIN)).await;
    assert!(audit.contains("decision-deny") && audit.contains("decision-allow"), "{audit}");

    // The login form: a cookie only the server reads, over HTTPS, this site only.
    let login_url = format!("{base}/ui/login");
    let login =
        form(&c, &login_url, Some(&base), &[("token", FRONTEND), ("next", "/ui/apps/web")]).send().await.unwrap();
    assert_eq!(login.status(), 303);
    assert_eq!(login.headers()["location"], "/ui/apps/web");
    let cookie = login.headers()["set-cookie"].to_str().unwrap().to_string();
    for attr in ["gitgate_token=", "HttpOnly", "Secure", "SameSite=Strict", "Path=/"] {
        assert!(cookie.contains(attr), "{cookie}");
    }
    let bad = form(&c, &login_url, None, &[("token", UNKNOWN)]).send().await.unwrap();
    assert_eq!(bad.status(), 401);
    let csrf = form(&c, &login_url, Some("https://evil.example"), &[("token", FRONTEND)]).send().await.unwrap();
    assert_eq!(csrf.status(), 403, "a login posted from another site (login CSRF)");
    let away = form(&c, &login_url, None, &[("token", FRONTEND), ("next", "https://evil.example/")]);
    assert_eq!(away.send().await.unwrap().headers()["location"], "/ui", "no open redirect");

    // Reviews are cached per token: the reader's many requests cost one.
    let before = api.reviews.load(Ordering::SeqCst);
    for _ in 0..5 {
        assert_eq!(get("/api/v1/apps", Some(FRONTEND)).await.0, 200);
    }
    assert_eq!(api.reviews.load(Ordering::SeqCst), before, "cached: no TokenReview per request");

    // /metrics moved to its own plain-HTTP port, without a token.
    let log = serve.log.lock().unwrap().clone();
    let metrics_addr = log.split("metrics on http://").nth(1).and_then(|r| r.split('/').next()).unwrap().to_string();
    let m = reqwest::get(format!("http://{metrics_addr}/metrics")).await.unwrap();
    assert_eq!(m.status(), 200);
    assert!(m.text().await.unwrap().contains("gitgate_admission_reviews_total"));
    assert_eq!(get("/metrics", Some(ADMIN)).await.0, 404, "not on the HTTPS port any more");

    let log = serve.log.lock().unwrap().clone();
    for token in [ADMIN, FRONTEND, NOBODY, UNKNOWN] {
        assert!(!log.contains(token), "a token reached the log");
    }
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

/// In Chromium: the login page without a token; a forged token and a token
/// with no role refused; the admin's session (the app's commit, a denial
/// appearing live, its file, commit and audit links); then a read-only
/// user who sees one project, and is refused another project's file, a
/// `List` of Secrets and a secretGenerator input (the CVE-2022-29165 /
/// CVE-2023-22482 class: reads past authentication or authorization).
// Multi-threaded: the fake apiserver answers while this thread waits for node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_chromium_a_user_signs_in_and_sees_their_projects_apps_and_denials() {
    let Some(chromium) = chromium() else { return };
    let api = fake_apiserver().await;
    let (repo, commit) = support::gitops_roles_repo();
    let work = tempfile::tempdir().unwrap();
    let serve = serve_with_login(&repo, work.path(), &api, &[]);
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
        .env("OTHER_APP", "pay")
        .env("EXPECT_COMMIT", &commit)
        .env("REVIEW_FILE", &review)
        .env("EXPECT_DENIAL", "gitops-demo/Deployment/web is managed by app web")
        .env("ADMIN_TOKEN", ADMIN)
        .env("READER_TOKEN", FRONTEND)
        .env("NOBODY_TOKEN", NOBODY)
        .env("FORGED_TOKEN", UNKNOWN);
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
    assert!(report["steps"].as_array().unwrap().len() >= 25, "{report:#}");
    serve.terminate(Duration::from_secs(20));
}
