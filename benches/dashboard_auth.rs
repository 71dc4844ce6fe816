//! What login costs a dashboard page (issue 14, item 4): ≤ 5 ms per page
//! once the token's review is cached.
//!
//! `cargo bench --bench dashboard_auth` measures the gate every `/ui` page
//! and `/api/v1` request passes, with the review already cached:
//! - `gate_cached_admin`: token from the cookie, SHA-256, cache hit, scope
//!   (an `--admin-group` member: all);
//! - `gate_cached_reader`: the same for a reader of one project, the scope
//!   computed from a `gitgate.yaml` of 100 projects and 1,000 apps;
//! - `scope_1000_apps`: that scope computation alone;
//! - `gate_open`: the gate without login (what a page cost before).
//!
//! The first review of a token is one TokenReview round trip to the
//! apiserver: with `DASHBOARD_AUTH_KUBECONFIG` (a kubeconfig) and
//! `DASHBOARD_AUTH_TOKEN` (a token it accepts) set, the bench also times
//! `review_uncached_real_apiserver` against that cluster.

use std::collections::BTreeMap;
use std::hint::black_box;
use std::sync::Arc;

use arc_swap::ArcSwapOption;
use axum::http::{HeaderMap, HeaderValue, header};
use criterion::Criterion;
use gitgate::access::Scope;
use gitgate::dashboard::auth::{Gate, Mode, TokenReviewer, User};
use gitgate::render::config::{App, Config, Destination, Permission, Project, Role};
use gitgate::source::RepoPath;
use kube::client::Body;
use secrecy::SecretString;

fn config(projects: usize, apps: usize) -> Config {
    let projects: BTreeMap<String, Project> = (0..projects)
        .map(|i| {
            let name = format!("team-{i}");
            let p = Project {
                name: name.clone(),
                destinations: Vec::new(),
                kinds: Vec::new(),
                cluster_kinds: Vec::new(),
                vault: Default::default(),
                roles: vec![Role {
                    name: "readers".into(),
                    groups: vec![format!("group-{i}")],
                    permissions: vec![Permission::Read],
                }],
                approval: Default::default(),
                sync_windows: Vec::new(),
            };
            (name, p)
        })
        .collect();
    let apps = (0..apps)
        .map(|i| App {
            name: format!("app-{i}"),
            project: format!("team-{}", i % projects.len()),
            path: RepoPath::parse(&format!("apps/app-{i}")).unwrap(),
            destination: Destination { cluster: "in-cluster".into(), namespace: format!("ns-{i}") },
            sync_policy: Default::default(),
            require_signed: false,
            helm: Default::default(),
            declared_at: String::new(),
        })
        .collect();
    Config { file: "gitgate.yaml".into(), clusters: Vec::new(), projects, apps }
}

/// A kube client whose "apiserver" accepts every token as `user`.
fn accepting(user: &'static str, groups: &'static [&'static str]) -> kube::Client {
    let svc = tower::service_fn(move |_req: http::Request<Body>| async move {
        let body = serde_json::json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "metadata": {},
            "spec": {}, "status": {"authenticated": true, "user": {"username": user, "groups": groups}}});
        Ok::<_, std::convert::Infallible>(
            http::Response::builder().status(201).body(Body::from(serde_json::to_vec(&body).unwrap())).unwrap(),
        )
    });
    kube::Client::new(svc, "default")
}

fn cookie(token: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(header::COOKIE, HeaderValue::from_str(&format!("theme=dark; gitgate_token={token}")).unwrap());
    h
}

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let mut c = Criterion::default().configure_from_args();
    // A 900-byte token, the size of a ServiceAccount JWT.
    let token = format!("eyJhbGciOiJSUzI1NiJ9.{}.sig", "x".repeat(880));
    let cfg = config(100, 1000);

    // The scope needs the config in force; a snapshot needs a rendered
    // commit, so the reader's gate is measured as review + Scope::of.
    let admin = rt.block_on(async {
        Gate {
            mode: Mode::Review(Arc::new(TokenReviewer::new(accepting("ada", &["platform"])))),
            admin_groups: vec!["platform".into()],
            reader_groups: Vec::new(),
            snapshot: Some(Arc::new(ArcSwapOption::empty())),
        }
    });
    let headers = cookie(&token);
    rt.block_on(admin.viewer(&headers)).expect("the first review");
    c.bench_function("gate_cached_admin", |b| b.iter(|| rt.block_on(admin.viewer(black_box(&headers))).unwrap()));

    let reader = rt.block_on(async { TokenReviewer::new(accepting("fran", &["group-7", "system:authenticated"])) });
    let t = SecretString::from(token.clone());
    rt.block_on(reader.review(&t)).unwrap();
    c.bench_function("gate_cached_reader", |b| {
        b.iter(|| {
            let t = gitgate::dashboard::auth::token_of(black_box(&headers)).unwrap();
            let user: User = rt.block_on(reader.review(&t)).unwrap().unwrap();
            let scope = Scope::of(&user.groups, &[], &cfg);
            assert!(scope.sees_app("app-7"));
            scope
        })
    });
    let groups = vec!["group-7".to_string(), "system:authenticated".to_string()];
    c.bench_function("scope_1000_apps", |b| b.iter(|| Scope::of(black_box(&groups), &[], &cfg)));

    let open = Gate {
        mode: Mode::Open("no login"),
        admin_groups: Vec::new(),
        reader_groups: Vec::new(),
        snapshot: Some(Arc::new(ArcSwapOption::empty())),
    };
    c.bench_function("gate_open", |b| b.iter(|| rt.block_on(open.viewer(black_box(&headers))).unwrap()));

    // Uncached: one TokenReview round trip to a real apiserver.
    if let (Some(kc), Some(tok)) =
        (std::env::var_os("DASHBOARD_AUTH_KUBECONFIG"), std::env::var("DASHBOARD_AUTH_TOKEN").ok())
    {
        let client = rt.block_on(async {
            let kc = kube::config::Kubeconfig::read_from(kc).unwrap();
            let config = kube::Config::from_custom_kubeconfig(kc, &Default::default()).await.unwrap();
            kube::Client::try_from(config).unwrap()
        });
        let t = SecretString::from(tok);
        c.bench_function("review_uncached_real_apiserver", |b| {
            b.iter(|| {
                // A fresh reviewer each time: nothing cached.
                let r = TokenReviewer::new(client.clone());
                rt.block_on(r.review(&t)).unwrap().expect("the apiserver accepts the token")
            })
        });
    }
    c.final_summary();
}
