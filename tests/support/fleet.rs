//! In-process spokes of a fleet: a spoke's real status routes behind its
//! real login (a TokenReview, answered by a stand-in apiserver that
//! accepts one token), on HTTPS with a development CA; and the fleet file
//! a hub reads them with.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use gitgate::dashboard::auth::{Gate, Mode, TokenReviewer};
use gitgate::fleet::file::FleetFile;
use gitgate::sync::status::{AppStatus, ClusterInfo, ObjectStatus, StatusStore, SyncStatus};
use http::{Request, Response};
use kube::client::Body;

/// A stand-in apiserver that answers TokenReviews: `token` is the
/// ServiceAccount the hub uses, in group `fleet-hub`; any other is unknown.
pub fn reviewer(token: &'static str) -> TokenReviewer {
    let svc = tower::service_fn(move |req: Request<Body>| async move {
        let body = req.into_body().collect_bytes().await.map_err(|e| e.to_string())?;
        let sent: serde_json::Value = serde_json::from_slice(&body).map_err(|e| e.to_string())?;
        let status = if sent["spec"]["token"] == token {
            serde_json::json!({"authenticated": true, "user": {"username": "system:serviceaccount:gitgate-fleet:hub", "groups": ["fleet-hub"]}})
        } else {
            serde_json::json!({"user": {}, "error": "invalid bearer token"})
        };
        let reply =
            serde_json::json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "status": status});
        Ok::<_, String>(Response::builder().status(201).body(Body::from(serde_json::to_vec(&reply).unwrap())).unwrap())
    });
    TokenReviewer::new(kube::Client::new(svc, "default"))
}

/// One spoke: its status store behind its login, on HTTPS.
pub struct Spoke {
    pub url: String,
    pub ca: PathBuf,
    pub store: Arc<StatusStore>,
    pub running: gitgate::server::Running,
    _dir: tempfile::TempDir,
}

pub fn object(kind: &str, name: &str, digest: &str) -> ObjectStatus {
    ObjectStatus {
        group: if kind == "Deployment" { "apps".into() } else { String::new() },
        version: "v1".into(),
        kind: kind.into(),
        namespace: "guestbook".into(),
        name: name.into(),
        wave: "0".into(),
        sync: SyncStatus::Synced,
        health: "Healthy".into(),
        message: String::new(),
        commit: "3f2a9c1d0e3f2a9c1d0e3f2a9c1d0e3f2a9c1d0e".into(),
        source: format!("apps/guestbook/{name}.yaml"),
        digest: digest.into(),
        sealed: false,
        hook: false,
    }
}

pub fn app(name: &str, objects: Vec<ObjectStatus>) -> AppStatus {
    AppStatus {
        name: name.into(),
        project: "guestbook".into(),
        sync: SyncStatus::Synced,
        health: "Healthy".into(),
        target_commit: "3f2a9c1d0e3f2a9c1d0e3f2a9c1d0e3f2a9c1d0e".into(),
        synced_commit: "3f2a9c1d0e3f2a9c1d0e3f2a9c1d0e3f2a9c1d0e".into(),
        last_sync: "2026-12-05T09:00:00Z".into(),
        message: String::new(),
        destination: "guestbook".into(),
        path: "apps/guestbook".into(),
        detect_only: false,
        objects,
    }
}

/// The guestbook as production runs it.
pub fn guestbook(cluster: &str) -> AppStatus {
    app(
        &format!("guestbook-{cluster}"),
        vec![object("Deployment", "web", "sha256:aaa"), object("ConfigMap", "settings", "sha256:bbb")],
    )
}

pub async fn spoke(cluster: &str, env: &str, token: &'static str, apps: Vec<AppStatus>) -> Spoke {
    let store = Arc::new(StatusStore::new(None));
    store.set_role("leader");
    store.set_cluster(ClusterInfo {
        name: cluster.into(),
        labels: BTreeMap::from([("env".into(), env.into())]),
        note: String::new(),
    });
    for a in apps {
        store.put(a);
    }
    let gate = Arc::new(Gate {
        mode: Mode::Review(Arc::new(reviewer(token))),
        admin_groups: Vec::new(),
        reader_groups: vec!["fleet-hub".into()],
        snapshot: None,
    });
    let router = gitgate::sync::status::router(store.clone())
        .layer(axum::middleware::from_fn_with_state(gate, gitgate::dashboard::auth::require));
    let (url, ca, running, dir) = serve_tls(router).await;
    Spoke { url, ca, store, running, _dir: dir }
}

/// `router` on HTTPS on loopback with a development CA: its URL, the CA
/// file, the server and the directory holding them.
pub async fn serve_tls(router: axum::Router) -> (String, PathBuf, gitgate::server::Running, tempfile::TempDir) {
    super::server::install_crypto();
    let dir = tempfile::tempdir().unwrap();
    gitgate::tls::DevPair::new(dir.path()).ensure().unwrap();
    let tls =
        axum_server::tls_rustls::RustlsConfig::from_pem_file(dir.path().join("tls.crt"), dir.path().join("tls.key"))
            .await
            .unwrap();
    let limits = gitgate::server::ConnLimits::default();
    let running = gitgate::server::start("127.0.0.1:0".parse().unwrap(), tls, router, limits).await.unwrap();
    (format!("https://127.0.0.1:{}", running.addr.port()), dir.path().join("ca.crt"), running, dir)
}

/// The fleet file, as an operator writes it: one token file per spoke.
pub fn fleet_file(dir: &std::path::Path, spokes: &[(&str, &Spoke, &str)], extra: &str) -> FleetFile {
    let mut yaml = String::from("spokes:\n");
    for (cluster, s, token) in spokes {
        let token_file = dir.join(format!("{cluster}.token"));
        std::fs::write(&token_file, format!("{token}\n")).unwrap();
        yaml.push_str(&format!(
            "  - {{cluster: {cluster}, url: '{}', tokenFile: {cluster}.token, caFile: '{}'}}\n",
            s.url,
            s.ca.display()
        ));
    }
    yaml.push_str(extra);
    let path = dir.join("fleet.yaml");
    std::fs::write(&path, yaml).unwrap();
    FleetFile::load(&path).unwrap()
}
