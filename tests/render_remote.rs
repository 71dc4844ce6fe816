//! Server-side request forgery through what a render would fetch: remote
//! kustomize bases (Flux and Argo CD fetch `https://…`, `git::…` and
//! `github.com/…` resources with the controller's network and credentials),
//! kustomize's `helmCharts` repositories and Helm chart dependencies
//! (Argo CD CVE-2022-24348's neighbourhood: a repository path steering the
//! repo server). gitgate renders only what the commit holds: every such
//! entry is refused naming it, and nothing is ever fetched — a listener
//! standing in for the remote sees no connection.

mod support;

use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use gitgate::render::{RenderOptions, Renderer};
use gitgate::source::GitSource;
use support::*;

/// A loopback listener that counts the connections made to it.
struct Remote {
    port: u16,
    connections: Arc<AtomicUsize>,
}

impl Remote {
    fn start() -> Remote {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let connections = Arc::new(AtomicUsize::new(0));
        let seen = connections.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                seen.fetch_add(1, Ordering::SeqCst);
                drop(stream);
            }
        });
        Remote { port, connections }
    }
}

/// Renders `files` (plus `gitgate.yaml` with one app at `apps/a`) from a
/// real Git repository; returns the error chain.
fn render_error(files: &[(&str, String)]) -> String {
    let repo = Repo::new();
    repo.write("gitgate.yaml", "apps:\n  - {name: a, path: apps/a, destination: {namespace: a}}\n");
    for (path, content) in files {
        repo.write(path, content);
    }
    let c = repo.commit("remote");
    let (_t, cache) = cache_dir();
    let src = GitSource::open(&repo.url(), &cache).unwrap();
    src.fetch().unwrap();
    // A helm that does not exist: a chart's dependencies are checked first.
    let opts = RenderOptions { helm: "/nonexistent/helm".into(), ..Default::default() };
    match Renderer::new(opts).desired(&src.repo(), oid(&c)) {
        Ok(set) => panic!("{files:?} rendered {} objects", set.len()),
        Err(e) => gitgate::error_chain(&e),
    }
}

#[test]
fn remote_kustomize_bases_and_helm_repositories_are_refused_and_never_fetched() {
    let remote = Remote::start();
    let host = format!("127.0.0.1:{}", remote.port);
    let remote_resources = [
        format!("https://{host}/org/repo//base?ref=v1"),
        format!("http://{host}/base.yaml"),
        format!("git::https://{host}/org/repo.git//base?ref=main"),
        format!("git::git@{host}:org/repo//base"),
        format!("ssh://git@{host}/org/repo//base"),
        format!("file:///etc/kubernetes/{host}"),
        "git@github.com:org/repo//base?ref=v1".to_owned(),
        "github.com/org/repo//base?ref=v1".to_owned(),
        "GitHub.com/org/repo/base".to_owned(),
    ];
    for entry in &remote_resources {
        for field in ["resources", "bases"] {
            let msg = render_error(&[("apps/a/kustomization.yaml", format!("{field}:\n  - {entry:?}\n"))]);
            assert!(
                msg.contains("apps/a/kustomization.yaml")
                    && msg.contains("remote resource")
                    && msg.contains(entry.as_str())
                    && msg.contains("vendor it into the repository"),
                "{field}: {entry}: {msg}"
            );
        }
    }
    // Not unmistakably remote, and not in the tree: the error says both.
    for entry in [format!("{host}/org/repo//base?ref=main"), "example.com/org/repo/base".to_owned()] {
        let msg = render_error(&[("apps/a/kustomization.yaml", format!("resources:\n  - {entry:?}\n"))]);
        assert!(msg.contains("does not exist") && msg.contains("remote resources are not supported"), "{entry}: {msg}");
    }
    // Other fields that would fetch.
    let url = format!("https://{host}/charts");
    let others = [
        (format!("helmCharts:\n  - {{name: redis, repo: {url:?}, version: 1.0.0}}\n"), "helmCharts"),
        (format!("components:\n  - {:?}\n", format!("{url}/component")), "components"),
        (format!("patches:\n  - path: {:?}\n", format!("{url}/patch.yaml")), "is remote"),
        (format!("configMapGenerator:\n  - name: x\n    files: [{:?}]\n", format!("{url}/x")), "is remote"),
    ];
    for (kustomization, expect) in &others {
        let msg = render_error(&[("apps/a/kustomization.yaml", kustomization.clone())]);
        assert!(msg.contains("apps/a/kustomization.yaml") && msg.contains(expect), "{kustomization}: {msg}");
    }
    // A chart whose dependency is only in a remote repository: refused
    // before helm runs, and helm would get no repository config anyway.
    let msg = render_error(&[
        (
            "apps/a/Chart.yaml",
            format!(
                "apiVersion: v2\nname: a\nversion: 0.1.0\ndependencies:\n  - {{name: redis, version: 1.0.0, repository: {url:?}}}\n"
            ),
        ),
        ("apps/a/templates/cm.yaml", configmap("a", "1")),
    ]);
    assert!(msg.contains("redis") && msg.contains("not vendored"), "{msg}");

    std::thread::sleep(std::time::Duration::from_millis(200));
    assert_eq!(remote.connections.load(Ordering::SeqCst), 0, "a render connected to the remote");
}
