//! Fetch over gix's HTTP transport (reqwest) from a real `git http-backend`
//! on loopback, behind a small axum CGI shim: the smart HTTP protocol that
//! https remotes speak, without TLS.

mod support;

use std::path::PathBuf;
use std::process::Stdio;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Response, StatusCode};
use gitgate::source::{GitSource, ReadLimits, RepoPath};
use support::*;
use tokio::io::AsyncWriteExt as _;

async fn cgi(State(root): State<PathBuf>, req: Request) -> Response<Body> {
    let (parts, body) = req.into_parts();
    let body: Bytes = axum::body::to_bytes(body, 64 << 20).await.unwrap_or_default();
    let exec_path = git(&root, &["--exec-path"]);
    let header = |n: &str| parts.headers.get(n).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    let mut child = tokio::process::Command::new(PathBuf::from(exec_path).join("git-http-backend"))
        .env_clear()
        .env("GIT_PROJECT_ROOT", &root)
        .env("GIT_HTTP_EXPORT_ALL", "1")
        .env("REQUEST_METHOD", parts.method.as_str())
        .env("PATH_INFO", parts.uri.path())
        .env("QUERY_STRING", parts.uri.query().unwrap_or(""))
        .env("CONTENT_TYPE", header("content-type"))
        .env("CONTENT_LENGTH", body.len().to_string())
        .env("HTTP_CONTENT_ENCODING", header("content-encoding"))
        .env("HTTP_GIT_PROTOCOL", header("git-protocol"))
        .env("REMOTE_ADDR", "127.0.0.1")
        .env(support::reap::MARKER, support::reap::run_id())
        .kill_on_drop(true)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(&body).await.unwrap();
    drop(stdin);
    let out = child.wait_with_output().await.unwrap();
    // CGI: headers, a blank line, the body.
    let split = out.stdout.windows(4).position(|w| w == b"\r\n\r\n").map(|i| (i, 4));
    let split = split.or_else(|| out.stdout.windows(2).position(|w| w == b"\n\n").map(|i| (i, 2)));
    let (head, body) = match split {
        Some((i, n)) => (&out.stdout[..i], out.stdout[i + n..].to_vec()),
        None => (&out.stdout[..], Vec::new()),
    };
    let mut resp = Response::new(Body::from(body));
    for line in String::from_utf8_lossy(head).lines() {
        if let Some((k, v)) = line.split_once(':') {
            let (k, v) = (k.trim(), v.trim());
            if k.eq_ignore_ascii_case("status") {
                let code = v.split_whitespace().next().and_then(|c| c.parse().ok()).unwrap_or(500);
                *resp.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            } else if let (Ok(name), Ok(value)) =
                (axum::http::HeaderName::from_bytes(k.as_bytes()), HeaderValue::from_str(v))
            {
                resp.headers_mut().insert(name, value);
            }
        }
    }
    resp
}

#[tokio::test(flavor = "multi_thread")]
async fn fetches_over_smart_http_from_git_http_backend() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let base = tempfile::tempdir().unwrap();
    let work = Repo::new();
    work.write("apps/web/cm.yaml", &configmap("web", "over-http"));
    let c1 = work.commit("first");
    let bare = base.path().join("team.git");
    git(base.path(), &["clone", "-q", "--bare", work.path().to_str().unwrap(), bare.to_str().unwrap()]);

    let app = axum::Router::new().fallback(cgi).with_state(base.path().to_path_buf());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });

    let url = format!("http://{addr}/team.git");
    let (_t, cache) = cache_dir();
    let src = std::sync::Arc::new(GitSource::open(&url, &cache).unwrap());
    src.fetch_async().await.unwrap_or_else(|e| panic!("{}", gitgate::error_chain(&e)));
    assert_eq!(src.resolve("main").unwrap(), oid(&c1));
    let r = src.reader(oid(&c1), ReadLimits::default()).unwrap();
    let text = String::from_utf8(r.read(&RepoPath::parse("apps/web/cm.yaml").unwrap()).unwrap()).unwrap();
    assert!(text.contains("over-http"));

    // A new commit pushed to the server arrives with the next fetch.
    work.write("apps/web/cm.yaml", &configmap("web", "second"));
    let c2 = work.commit("second");
    git(work.path(), &["push", "-q", bare.to_str().unwrap(), "main"]);
    src.fetch_async().await.unwrap();
    assert_eq!(src.resolve("main").unwrap(), oid(&c2));
    server.abort();
}
