//! `sync_once` against a fake API server (tower-test): the calls a sync
//! makes, in order — read the inventories, list live objects per kind,
//! record the inventory ahead, apply by wave with one field manager — then
//! that a second sync of the same commit writes nothing, and that a commit
//! dropping a manifest deletes exactly that object and rewrites the
//! inventory.

#[path = "source_common.rs"]
mod support;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use gitgate::render::{RenderOptions, Renderer};
use gitgate::source::GitSource;
use gitgate::sync::reconcile::{Reconciler, Targets};
use gitgate::sync::status::{StatusStore, SyncStatus};
use gitgate::sync::target::Target;
use gitgate::sync::{SyncConfig, plan::PruneGuard};
use http::{Method, Request, Response};
use kube::client::Body;
use serde_json::{Value, json};
use support::*;

type Log = Arc<Mutex<Vec<String>>>;

/// A tiny in-memory API server: apply stores, get/list/delete read it.
fn fake_apiserver() -> (kube::Client, Log, Arc<Mutex<BTreeMap<String, Value>>>) {
    fake_apiserver_denying(Arc::default())
}

/// [`fake_apiserver`] whose admission refuses applies to a path holding
/// the string in `deny` (while there is one), as the apiserver answers
/// when a webhook denies: 503 and the webhook's message.
fn fake_apiserver_denying(
    deny: Arc<Mutex<Option<&'static str>>>,
) -> (kube::Client, Log, Arc<Mutex<BTreeMap<String, Value>>>) {
    let (svc, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let log: Log = Arc::default();
    let store: Arc<Mutex<BTreeMap<String, Value>>> = Arc::default();
    let (l, s) = (log.clone(), store.clone());
    tokio::spawn(async move {
        let mut rv = 1u64;
        while let Some((req, send)) = handle.next_request().await {
            let method = req.method().clone();
            let uri = req.uri().clone();
            let path = uri.path().to_string();
            let query = uri.query().unwrap_or_default().to_string();
            let body = http_body_util::BodyExt::collect(req.into_body()).await.unwrap().to_bytes();
            l.lock().unwrap().push(format!("{method} {path}"));
            let mut store = s.lock().unwrap();
            let denied = deny.lock().unwrap().is_some_and(|d| path.contains(d));
            let (code, reply) = match method {
                Method::PATCH if denied => (
                    503,
                    json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 503, "reason": "VaultUnavailable",
                           "message": "admission webhook \"mutate.gitgate.dev\" denied the request: key \"password\": failed to talk to Vault for secret/shop/db"}),
                ),
                Method::PATCH => {
                    assert!(query.contains("fieldManager=gitgate") && query.contains("force=true"), "{query}");
                    let mut obj: Value = serde_json::from_slice(&body).unwrap();
                    rv += 1;
                    obj["metadata"]["resourceVersion"] = json!(rv.to_string());
                    store.insert(path, obj.clone());
                    (200, obj)
                }
                Method::GET => match store.get(&path) {
                    Some(o) => (200, o.clone()),
                    None => {
                        let selector = query
                            .split('&')
                            .find_map(|kv| kv.strip_prefix("labelSelector="))
                            .map(|v| v.replace("%3D", "=").replace("%2F", "/"));
                        let items: Vec<Value> = store
                            .iter()
                            .filter(|(k, _)| in_collection(k, &path))
                            .filter(|(_, o)| selector.as_deref().is_none_or(|sel| matches(o, sel)))
                            .map(|(_, o)| o.clone())
                            .collect();
                        (
                            200,
                            json!({"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": "1"}, "items": items}),
                        )
                    }
                },
                Method::DELETE => match store.remove(&path) {
                    Some(o) => (200, o),
                    None => (
                        404,
                        json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404}),
                    ),
                },
                other => panic!("unexpected {other} {path}"),
            };
            drop(store);
            send.send_response(
                Response::builder().status(code).body(Body::from(serde_json::to_vec(&reply).unwrap())).unwrap(),
            );
        }
    });
    (kube::Client::new(svc, "default"), log, store)
}

/// `/api/v1/configmaps` holds `/api/v1/namespaces/x/configmaps/y`;
/// `/api/v1/namespaces` holds `/api/v1/namespaces/x`.
fn in_collection(key: &str, collection: &str) -> bool {
    let Some((parent, _)) = key.rsplit_once('/') else { return false };
    if parent == collection {
        return true;
    }
    let (prefix, res) = collection.rsplit_once('/').unwrap();
    parent.strip_prefix(&format!("{prefix}/namespaces/")).and_then(|r| r.split_once('/')).is_some_and(|(_, r)| r == res)
}

fn matches(obj: &Value, selector: &str) -> bool {
    let labels = &obj["metadata"]["labels"];
    match selector.split_once('=') {
        Some((k, v)) => labels[k] == v,
        None => !labels[selector].is_null(),
    }
}

fn cm(name: &str, wave: i64) -> String {
    format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\n  annotations:\n    gitgate.dev/sync-wave: \"{wave}\"\ndata:\n  k: v\n"
    )
}

#[tokio::test]
async fn a_sync_reads_lists_records_then_applies_by_wave_and_a_resync_writes_nothing() {
    let repo = Repo::new();
    repo.write(
        "gitgate.yaml",
        "projects:\n  - {name: p, destinations: [{cluster: \"*\", namespace: \"*\"}], clusterKinds: [Namespace]}\napps:\n  - {name: shop, project: p, path: shop, destination: {namespace: shop}, syncPolicy: {prune: true}}\n",
    );
    repo.write("shop/ns.yaml", "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: shop\n");
    repo.write("shop/b.yaml", &cm("b", 1));
    repo.write("shop/a.yaml", &cm("a", 0));
    let c1 = repo.commit("shop");
    let (_t, cache) = cache_dir();
    let src = Arc::new(GitSource::open(&repo.url(), &cache).unwrap());
    src.fetch().unwrap();
    let renderer = Renderer::new(RenderOptions::default());
    let d1 = renderer.desired(&src.repo(), oid(&c1)).unwrap();

    let (client, log, store) = fake_apiserver();
    let target = Arc::new(Target::new("test", client, 1000.0, 1000));
    let config = SyncConfig {
        namespace: "gitgate".into(),
        prune_guard: PruneGuard { max_count: 10, max_share: 1.0 },
        ..SyncConfig::default()
    };
    let status = Arc::new(StatusStore::new(None));
    let r = Reconciler::new(config, Targets::new(target, None, 1000.0, 1000), src.clone(), status, None, None);

    let out = r.sync_once(&d1).await;
    assert_eq!(out[0].sync, SyncStatus::Synced, "{:?}", out[0].message);
    let calls = std::mem::take(&mut *log.lock().unwrap());
    assert_eq!(
        calls,
        [
            "GET /api/v1/namespaces/gitgate/configmaps", // 1. the inventories
            "GET /api/v1/namespaces",                    // 3. live, one list per kind …
            "GET /api/v1/namespaces/shop/configmaps",    // … in the app's namespace only
            "PATCH /api/v1/namespaces/gitgate/configmaps/gitgate-inventory-shop", // recorded ahead
            "PATCH /api/v1/namespaces/shop",             // 4. namespaces first
            "PATCH /api/v1/namespaces/shop/configmaps/a", // wave 0
            "PATCH /api/v1/namespaces/shop/configmaps/b", // wave 1, after wave 0 is healthy
            // 6. recorded: the same entries, and the base the mass-prune
            // guard measures against (0 before: a new app)
            "PATCH /api/v1/namespaces/gitgate/configmaps/gitgate-inventory-shop",
        ]
    );
    let inv = store.lock().unwrap()["/api/v1/namespaces/gitgate/configmaps/gitgate-inventory-shop"].clone();
    assert_eq!(inv["data"]["base"], "3");
    let a = store.lock().unwrap()["/api/v1/namespaces/shop/configmaps/a"].clone();
    assert_eq!(a["metadata"]["annotations"]["gitgate.dev/commit"], c1);
    assert_eq!(a["metadata"]["labels"]["gitgate.dev/app"], "shop");

    // The same commit again: everything is in sync, nothing is written.
    r.sync_once(&d1).await;
    let calls = std::mem::take(&mut *log.lock().unwrap());
    assert!(calls.iter().all(|c| c.starts_with("GET ")), "a resync wrote: {calls:?}");

    // A manifest leaves Git: exactly that object is deleted, then the
    // inventory forgets it.
    repo.remove("shop/b.yaml");
    let c2 = repo.commit("drop b");
    src.fetch().unwrap();
    let d2 = renderer.desired(&src.repo(), oid(&c2)).unwrap();
    let out = r.sync_once(&d2).await;
    assert_eq!(out[0].sync, SyncStatus::Synced, "{:?}", out[0].message);
    let calls = std::mem::take(&mut *log.lock().unwrap());
    let writes: Vec<&String> = calls.iter().filter(|c| !c.starts_with("GET ")).collect();
    assert_eq!(
        writes,
        [
            "DELETE /api/v1/namespaces/shop/configmaps/b",
            "PATCH /api/v1/namespaces/gitgate/configmaps/gitgate-inventory-shop"
        ]
    );
    let inv = store.lock().unwrap()["/api/v1/namespaces/gitgate/configmaps/gitgate-inventory-shop"].clone();
    let lines = inv["data"]["inventory"].as_str().unwrap();
    assert!(!lines.contains("|b|") && lines.contains("|a|"), "{lines}");
}

/// Vault down behind the secrets webhook (issue 16, item 2): the apiserver
/// refuses the wave's Secret. The Deployment of the same wave, which needs
/// it, is not applied — no half-applied app —, the sync fails naming the
/// Secret and Vault; once the Secret is admitted, the same commit
/// completes.
#[tokio::test]
async fn a_denied_secret_keeps_the_workloads_of_its_wave_back() {
    let repo = Repo::new();
    repo.write(
        "gitgate.yaml",
        "projects:\n  - {name: p, destinations: [{cluster: \"*\", namespace: \"*\"}], clusterKinds: [Namespace]}\napps:\n  - {name: shop, project: p, path: shop, destination: {namespace: shop}}\n",
    );
    repo.write("shop/ns.yaml", "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: shop\n");
    repo.write(
        "shop/db.yaml",
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: db\nstringData:\n  password: vault:secret/shop/db#password\n",
    );
    repo.write("shop/web.yaml", &deployment("web", "registry.example.invalid/web:1"));
    repo.write("shop/settings.yaml", &cm("settings", 0));
    let c1 = repo.commit("shop");
    let (_t, cache) = cache_dir();
    let src = Arc::new(GitSource::open(&repo.url(), &cache).unwrap());
    src.fetch().unwrap();
    let d1 = Renderer::new(RenderOptions::default()).desired(&src.repo(), oid(&c1)).unwrap();

    let deny: Arc<Mutex<Option<&'static str>>> = Arc::new(Mutex::new(Some("/secrets/db")));
    let (client, log, store) = fake_apiserver_denying(deny.clone());
    let target = Arc::new(Target::new("test", client, 1000.0, 1000));
    let status = Arc::new(StatusStore::new(None));
    let recorded = Arc::new(Records::default());
    let r = Reconciler::new(
        SyncConfig::default(),
        Targets::new(target, None, 1000.0, 1000),
        src.clone(),
        status,
        Some(recorded.clone()),
        None,
    );

    let out = r.sync_once(&d1).await;
    assert_eq!(out[0].sync, SyncStatus::Failed);
    // Retried while Vault stays down: the same failure is recorded once.
    assert_eq!(r.sync_once(&d1).await[0].sync, SyncStatus::Failed);
    assert_eq!(recorded.events("syncFailed"), 1, "one record per distinct failure, not per retry");
    assert!(out[0].message.contains("Vault") && out[0].message.contains("db"), "{}", out[0].message);
    let calls = std::mem::take(&mut *log.lock().unwrap());
    assert!(calls.contains(&"PATCH /api/v1/namespaces/shop/secrets/db".to_string()), "{calls:?}");
    assert!(!calls.iter().any(|c| c.contains("deployments/web")), "the workload waits for its Secret: {calls:?}");
    assert!(!store.lock().unwrap().keys().any(|k| k.contains("deployments")));

    // Vault is back: the same commit goes through, whole.
    *deny.lock().unwrap() = None;
    let out = r.sync_once(&d1).await;
    assert_eq!(out[0].sync, SyncStatus::Synced, "{}", out[0].message);
    assert_eq!(recorded.events("apply"), 4, "each object applied and recorded once");
    let store = store.lock().unwrap();
    assert!(store.contains_key("/api/v1/namespaces/shop/secrets/db"));
    assert!(store.contains_key("/apis/apps/v1/namespaces/shop/deployments/web"), "{:?}", store.keys());
}

/// The sync's audit records, in memory.
#[derive(Default)]
struct Records(Mutex<Vec<gitgate::audit::Entry>>);

impl Records {
    fn events(&self, event: &str) -> usize {
        self.0.lock().unwrap().iter().filter(|e| serde_json::to_value(e.event).unwrap() == event).count()
    }
}

impl gitgate::sync::reconcile::SyncRecorder for Records {
    fn record(&self, entry: &gitgate::audit::Entry) {
        self.0.lock().unwrap().push(entry.clone());
    }
}
