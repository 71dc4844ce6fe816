//! `sync_once` against a fake API server (tower-test): the calls a sync
//! makes, in order — read the inventories, list live objects per kind,
//! record the inventory ahead, apply by wave with one field manager — then
//! that a second sync of the same commit writes nothing, and that a commit
//! dropping a manifest deletes exactly that object and rewrites the
//! inventory.

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
                    if !query.contains("dryRun") {
                        store.insert(path, obj.clone());
                    }
                    (200, obj)
                }
                // A create: `generateName` is completed as the apiserver
                // does; a Job stands in for the Job controller at once —
                // complete, or failed when its label `outcome` says so.
                Method::POST => {
                    assert!(query.contains("fieldManager=gitgate"), "{query}");
                    let mut obj: Value = serde_json::from_slice(&body).unwrap();
                    rv += 1;
                    if obj["metadata"]["name"].is_null() {
                        let prefix = obj["metadata"]["generateName"].as_str().unwrap().to_string();
                        obj["metadata"]["name"] = json!(format!("{prefix}{rv:05}"));
                    }
                    obj["metadata"]["resourceVersion"] = json!(rv.to_string());
                    if obj["kind"] == "Job" {
                        let failed = obj["metadata"]["labels"]["outcome"] == "fail";
                        let c = if failed { "Failed" } else { "Complete" };
                        obj["status"] =
                            json!({"conditions": [{"type": c, "status": "True", "message": "exit code 3"}]});
                    }
                    let key = format!("{path}/{}", obj["metadata"]["name"].as_str().unwrap());
                    l.lock()
                        .unwrap()
                        .last_mut()
                        .unwrap()
                        .push_str(&format!(" {}", obj["metadata"]["name"].as_str().unwrap()));
                    match store.entry(key) {
                        std::collections::btree_map::Entry::Occupied(_) => (
                            409,
                            json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "AlreadyExists", "code": 409}),
                        ),
                        std::collections::btree_map::Entry::Vacant(slot) => {
                            slot.insert(obj.clone());
                            (201, obj)
                        }
                    }
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

impl gitgate::audit::SyncRecorder for Records {
    fn record(&self, entry: &gitgate::audit::Entry) {
        self.0.lock().unwrap().push(entry.clone());
    }
}

fn hook(name: &str, phase: &str, wave: i64, extra: &str) -> String {
    format!(
        "apiVersion: batch/v1\nkind: Job\nmetadata:\n  generateName: {name}-\n  labels: {{{extra}}}\n  annotations:\n    argocd.argoproj.io/hook: {phase}\n    argocd.argoproj.io/hook-delete-policy: HookSucceeded\n    argocd.argoproj.io/sync-wave: \"{wave}\"\nspec:\n  template:\n    spec:\n      restartPolicy: Never\n      containers: [{{name: m, image: \"tool:1\"}}]\n"
    )
}

struct Hooked {
    repo: Repo,
    _cache: tempfile::TempDir,
    src: Arc<GitSource>,
    renderer: Renderer,
    r: Reconciler,
    log: Log,
    store: Arc<Mutex<BTreeMap<String, Value>>>,
    head: Mutex<String>,
}

impl Hooked {
    fn new() -> Hooked {
        let repo = Repo::new();
        repo.write(
            "gitgate.yaml",
            "apps:\n  - {name: shop, path: shop, destination: {namespace: shop}, syncPolicy: {prune: true}}\n",
        );
        let (cache_t, cache) = cache_dir();
        let src = Arc::new(GitSource::open(&repo.url(), &cache).unwrap());
        let (client, log, store) = fake_apiserver();
        let target = Arc::new(Target::new("test", client, 1000.0, 1000));
        let status = Arc::new(StatusStore::new(None));
        let r = Reconciler::new(
            SyncConfig::default(),
            Targets::new(target, None, 1000.0, 1000),
            src.clone(),
            status,
            None,
            None,
        );
        Hooked {
            repo,
            _cache: cache_t,
            src,
            renderer: Renderer::new(RenderOptions::default()),
            r,
            log,
            store,
            head: Mutex::default(),
        }
    }

    async fn sync(&self, msg: &str) -> (gitgate::sync::status::AppStatus, Vec<String>) {
        let c = self.repo.commit(msg);
        *self.head.lock().unwrap() = c.clone();
        self.src.fetch().unwrap();
        let d = self.renderer.desired(&self.src.repo(), oid(&c)).unwrap();
        let out = self.r.sync_once(&d).await.remove(0);
        let calls: Vec<String> =
            std::mem::take(&mut *self.log.lock().unwrap()).into_iter().filter(|c| !c.starts_with("GET ")).collect();
        (out, calls)
    }
}

/// Issue 19: the migration Job runs before the deploy. A PreSync hook is
/// created (its generateName completed by the apiserver) before any object
/// of the app is applied, waited for, deleted by its HookSucceeded policy;
/// the objects follow by wave, a Sync hook with its wave, the PostSync
/// hook last. Hooks are not in the inventory, and a resync with nothing to
/// change runs no hook.
#[tokio::test]
async fn presync_hooks_run_before_the_waves_and_postsync_after() {
    let h = Hooked::new();
    h.repo.write("shop/a.yaml", &cm("a", 0));
    h.repo.write("shop/b.yaml", &cm("b", 1));
    h.repo.write("shop/migrate.yaml", &hook("migrate", "PreSync", 0, ""));
    h.repo.write("shop/warm.yaml", &hook("warm", "Sync", 1, ""));
    h.repo.write("shop/smoke.yaml", &hook("smoke", "PostSync", 0, ""));
    let (out, calls) = h.sync("app with hooks").await;
    assert_eq!(out.sync, SyncStatus::Synced, "{}", out.message);
    let name = |c: &str| c.rsplit(' ').next().unwrap().to_string();
    let (migrate, warm, smoke) = (name(&calls[1]), name(&calls[5]), name(&calls[7]));
    assert_eq!(
        calls,
        [
            "PATCH /api/v1/namespaces/gitgate/configmaps/gitgate-inventory-shop".to_string(),
            format!("POST /apis/batch/v1/namespaces/shop/jobs {migrate}"), // PreSync, first
            format!("DELETE /apis/batch/v1/namespaces/shop/jobs/{migrate}"), // HookSucceeded
            "PATCH /api/v1/namespaces/shop/configmaps/a".into(),           // wave 0
            "PATCH /api/v1/namespaces/shop/configmaps/b".into(),           // wave 1: what workloads need …
            format!("POST /apis/batch/v1/namespaces/shop/jobs {warm}"),    // … then its Sync hook
            format!("DELETE /apis/batch/v1/namespaces/shop/jobs/{warm}"),
            format!("POST /apis/batch/v1/namespaces/shop/jobs {smoke}"), // PostSync, last
            format!("DELETE /apis/batch/v1/namespaces/shop/jobs/{smoke}"),
            // the completed prune records the app's size (the mass-prune guard's base)
            "PATCH /api/v1/namespaces/gitgate/configmaps/gitgate-inventory-shop".into(),
        ],
        "{calls:#?}"
    );
    assert!(migrate.starts_with("migrate-") && smoke.starts_with("smoke-"), "{calls:?}");
    let inv = h.store.lock().unwrap()["/api/v1/namespaces/gitgate/configmaps/gitgate-inventory-shop"].clone();
    assert!(!inv["data"]["inventory"].as_str().unwrap().contains("Job"), "hooks are not inventory: {inv}");
    let hooks: Vec<&str> = out.objects.iter().filter(|o| o.kind == "Job").map(|o| o.wave.as_str()).collect();
    assert_eq!(hooks, ["PreSync", "Sync 1", "PostSync"], "the hooks' runs are on the status");

    // Nothing changed: no hook runs again, nothing is written.
    let (out, calls) = h.sync("nothing new").await;
    assert_eq!(out.sync, SyncStatus::Synced, "{}", out.message);
    assert!(calls.is_empty(), "{calls:?}");

    // A change to the app: the PreSync hook runs before it again.
    h.repo.write("shop/a.yaml", &cm("a", 0).replace("k: v", "k: v2"));
    let (_, calls) = h.sync("bump a").await;
    assert!(calls[0].starts_with("POST /apis/batch/v1/namespaces/shop/jobs migrate-"), "{calls:#?}");
    assert_eq!(calls[2], "PATCH /api/v1/namespaces/shop/configmaps/a", "{calls:#?}");
}

/// A failing PreSync hook stops the sync before anything is applied, runs
/// the SyncFail hooks, names the hook, its file and reason on the status,
/// keeps the failed run (no HookFailed policy), and is not run again at
/// the same commit; a new commit runs it again.
#[tokio::test]
async fn a_failing_hook_stops_the_sync_and_runs_syncfail() {
    let h = Hooked::new();
    h.repo.write("shop/a.yaml", &cm("a", 0));
    h.repo.write("shop/migrate.yaml", &hook("migrate", "PreSync", 0, "outcome: fail"));
    h.repo.write("shop/page.yaml", &hook("page", "SyncFail", 0, ""));
    let (out, calls) = h.sync("a migration that fails").await;
    assert_eq!(out.sync, SyncStatus::Failed);
    assert!(
        out.message.contains("PreSync hook shop/Job/migrate-")
            && out.message.contains("(shop/migrate.yaml) failed: job failed: exit code 3"),
        "{}",
        out.message
    );
    assert!(!calls.iter().any(|c| c.contains("configmaps/a")), "nothing of the app applied: {calls:#?}");
    let posts: Vec<&String> = calls.iter().filter(|c| c.starts_with("POST")).collect();
    assert_eq!(posts.len(), 2, "{calls:#?}");
    assert!(posts[0].contains(" migrate-") && posts[1].contains(" page-"), "SyncFail runs after: {calls:#?}");
    assert!(
        !calls.iter().any(|c| c.starts_with("DELETE") && c.contains("migrate-")),
        "the failed run stays: {calls:#?}"
    );
    let failed = out.objects.iter().find(|o| o.name.starts_with("migrate-")).unwrap();
    assert_eq!(failed.sync, SyncStatus::Failed);

    // The same commit again (a resync): held, nothing runs.
    let c = h.head.lock().unwrap().clone();
    let d = h.renderer.desired(&h.src.repo(), oid(&c)).unwrap();
    let again = h.r.sync_once(&d).await.remove(0);
    assert_eq!(again.sync, SyncStatus::Failed);
    assert!(again.message.contains("not run again at this commit"), "{}", again.message);
    assert!(h.log.lock().unwrap().iter().all(|c| c.starts_with("GET ")), "held: nothing written");

    // Fixed in Git: the hook runs again, then the app.
    h.repo.write("shop/migrate.yaml", &hook("migrate", "PreSync", 0, ""));
    let (out, calls) = h.sync("fix the migration").await;
    assert_eq!(out.sync, SyncStatus::Synced, "{}", out.message);
    assert!(calls.iter().any(|c| c == "PATCH /api/v1/namespaces/shop/configmaps/a"), "{calls:#?}");
}

/// Regression: a Job kept in Git as an object that becomes a hook of the
/// same name leaves the inventory without being pruned — its name is now
/// the hook's, which its delete policy owns.
#[tokio::test]
async fn an_object_that_becomes_a_hook_is_not_pruned() {
    let h = Hooked::new();
    h.repo.write("shop/a.yaml", &cm("a", 0));
    let job = "apiVersion: batch/v1\nkind: Job\nmetadata:\n  name: migrate\nspec:\n  template:\n    spec:\n      restartPolicy: Never\n      containers: [{name: m, image: \"tool:1\"}]\n";
    h.repo.write("shop/migrate.yaml", job);
    let (out, calls) = h.sync("a job").await;
    assert_eq!(out.sync, SyncStatus::Synced, "{}", out.message);
    assert!(calls.iter().any(|c| c == "PATCH /apis/batch/v1/namespaces/shop/jobs/migrate"), "{calls:#?}");
    h.repo.write(
        "shop/migrate.yaml",
        &job.replace("name: migrate\n", "name: migrate\n  annotations: {argocd.argoproj.io/hook: PreSync}\n"),
    );
    let (out, calls) = h.sync("the job becomes a hook").await;
    assert_eq!(out.sync, SyncStatus::Synced, "{}", out.message);
    assert!(!calls.iter().any(|c| c.starts_with("DELETE")), "{calls:#?}");
    let inv = h.store.lock().unwrap()["/api/v1/namespaces/gitgate/configmaps/gitgate-inventory-shop"].clone();
    assert!(!inv["data"]["inventory"].as_str().unwrap().contains("migrate"), "{inv}");
}
