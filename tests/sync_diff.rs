//! `gitgate diff` against a fake API server (tower-test): a changed image
//! is a `changed` object with its hunk, a new object `created`, one that
//! left Git `pruned` (or `kept` by `gitgate.dev/prune: disabled`), a
//! Secret only `changed` — and no value of a Secret, in any form, reaches
//! the diff, its text or an error. The dry runs are server-side applies
//! with gitgate's field manager; the route answers 404 for an app the
//! caller does not see; `--commit` takes only the tracked branch's history.

mod support;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use gitgate::access::Scope;
use gitgate::desired::tracker::Tracker;
use gitgate::render::{RenderOptions, Renderer};
use gitgate::source::GitSource;
use gitgate::sync::diff::{self, AppDiff, Change, DiffError, DiffSource, DiffState};
use gitgate::sync::inventory::{self, Inventory};
use gitgate::sync::plan;
use gitgate::sync::reconcile::Targets;
use gitgate::sync::target::Target;
use http::{Method, Request, Response};
use kube::client::Body;
use serde_json::{Value, json};
use support::*;

type Store = Arc<Mutex<BTreeMap<String, Value>>>;
type Log = Arc<Mutex<Vec<String>>>;

const CANARY_1: &str = "CANARY-first-p4ssw0rd";
const CANARY_2: &str = "CANARY-second-p4ssw0rd";

fn b64(s: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(s)
}

/// The apiserver's handling of `stringData`: merged into `data`, base64.
fn fold_string_data(obj: &mut Value) {
    if obj["kind"] != "Secret" {
        return;
    }
    if let Some(Value::Object(sd)) = obj.as_object_mut().and_then(|o| o.remove("stringData")) {
        for (k, v) in sd {
            obj["data"][k] = json!(b64(v.as_str().unwrap()));
        }
    }
}

/// A tiny API server: a PATCH stores (a dry run answers without storing),
/// GET reads one object or lists a collection by label. A dry run of a
/// path holding `deny` is refused quoting the request's body, as a
/// careless webhook might.
fn fake_apiserver(deny: Arc<Mutex<Option<&'static str>>>) -> (kube::Client, Log, Store) {
    let (svc, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let log: Log = Arc::default();
    let store: Store = Arc::default();
    let (l, s) = (log.clone(), store.clone());
    tokio::spawn(async move {
        let mut rv = 1u64;
        while let Some((req, send)) = handle.next_request().await {
            let method = req.method().clone();
            let path = req.uri().path().to_string();
            let query = req.uri().query().unwrap_or_default().to_string();
            let body = http_body_util::BodyExt::collect(req.into_body()).await.unwrap().to_bytes();
            l.lock().unwrap().push(format!("{method} {path}?{query}"));
            let mut store = s.lock().unwrap();
            let dry = query.contains("dryRun=All");
            let denied = dry && deny.lock().unwrap().is_some_and(|d| path.contains(d));
            let (code, reply) = match method {
                Method::PATCH if denied => (
                    422,
                    json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 422, "reason": "Invalid",
                           "message": format!("admission webhook denied the request: {}", String::from_utf8_lossy(&body))}),
                ),
                Method::PATCH => {
                    assert!(query.contains("fieldManager=gitgate") && query.contains("force=true"), "{query}");
                    let mut obj: Value = serde_json::from_slice(&body).unwrap();
                    fold_string_data(&mut obj);
                    let meta = match store.get(&path) {
                        Some(old) => old["metadata"].clone(),
                        None => json!({"uid": format!("uid-{rv}"), "creationTimestamp": "2026-12-05T00:00:00Z"}),
                    };
                    rv += 1;
                    for k in ["uid", "creationTimestamp"] {
                        obj["metadata"][k] = meta[k].clone();
                    }
                    obj["metadata"]["resourceVersion"] = json!(rv.to_string());
                    obj["metadata"]["managedFields"] = json!([{"manager": "gitgate", "operation": "Apply"}]);
                    if !dry {
                        store.insert(path, obj.clone());
                    }
                    (200, obj)
                }
                Method::GET => match store.get(&path) {
                    Some(o) => (200, o.clone()),
                    None if query.contains("labelSelector") => {
                        let selector = query
                            .split('&')
                            .find_map(|kv| kv.strip_prefix("labelSelector="))
                            .map(|v| v.replace("%2F", "/").replace("%3D", "="))
                            .unwrap();
                        let (key, value) =
                            selector.split_once('=').map_or((selector.as_str(), None), |(k, v)| (k, Some(v)));
                        let items: Vec<Value> = store
                            .iter()
                            .filter(|(k, _)| k.starts_with(&format!("{path}/")))
                            .filter(|(_, o)| {
                                let label = &o["metadata"]["labels"][key];
                                value.map_or(!label.is_null(), |v| label == v)
                            })
                            .map(|(_, o)| o.clone())
                            .collect();
                        (200, json!({"apiVersion": "v1", "kind": "List", "metadata": {}, "items": items}))
                    }
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

const CONFIG: &str = "projects:\n  - {name: p, destinations: [{cluster: \"*\", namespace: \"*\"}]}\napps:\n  - {name: shop, project: p, path: shop, destination: {namespace: shop}, syncPolicy: {prune: true}}\n";

fn secret(value: &str) -> String {
    format!("apiVersion: v1\nkind: Secret\nmetadata:\n  name: db\nstringData:\n  password: \"{value}\"\n")
}

fn kept(name: &str) -> String {
    format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\n  annotations:\n    gitgate.dev/prune: disabled\ndata:\n  value: \"x\"\n"
    )
}

struct World {
    repo: Repo,
    src: Arc<GitSource>,
    _cache: tempfile::TempDir,
    c1: String,
    c2: String,
}

/// Commit 1 (synced into the fake cluster) and commit 2: web's image 1 →
/// 2, a new ConfigMap, two ConfigMaps gone (one kept), the Secret's value
/// changed, `same` unchanged.
fn world() -> World {
    let repo = Repo::new();
    repo.write("gitgate.yaml", CONFIG);
    repo.write("shop/web.yaml", &deployment("web", "registry.example.invalid/web:1"));
    repo.write("shop/same.yaml", &configmap("same", "1"));
    repo.write("shop/old.yaml", &configmap("old", "1"));
    repo.write("shop/keep.yaml", &kept("keep"));
    repo.write("shop/db.yaml", &secret(CANARY_1));
    let c1 = repo.commit("shop");
    repo.write("shop/web.yaml", &deployment("web", "registry.example.invalid/web:2"));
    repo.write("shop/new.yaml", &configmap("new", "1"));
    repo.remove("shop/old.yaml");
    repo.remove("shop/keep.yaml");
    repo.write("shop/db.yaml", &secret(CANARY_2));
    let c2 = repo.commit("web 2, new, old gone, db rotated");
    let (cache_tmp, cache) = cache_dir();
    let src = Arc::new(GitSource::open(&repo.url(), &cache).unwrap());
    src.fetch().unwrap();
    World { repo, src, _cache: cache_tmp, c1, c2 }
}

fn path_of(key: &gitgate::render::object::ObjectKey) -> String {
    let (prefix, plural) = match key.kind.as_str() {
        "Deployment" => ("/apis/apps/v1", "deployments"),
        "ConfigMap" => ("/api/v1", "configmaps"),
        "Secret" => ("/api/v1", "secrets"),
        other => panic!("no path for {other}"),
    };
    format!("{prefix}/namespaces/{}/{plural}/{}", key.namespace, key.name)
}

/// What a sync of `commit` leaves in the cluster: each object applied as
/// the reconciler applies it, and the inventory.
async fn synced(client: &kube::Client, store: &Store, src: &GitSource, commit: &str) {
    let desired = Renderer::new(RenderOptions::default()).desired(&src.repo(), oid(commit)).unwrap();
    let planned = plan::plan_app(&desired, "shop").unwrap();
    for p in &planned {
        let mut obj = plan::respect_ignored(p, None).unwrap();
        fold_string_data(&mut obj);
        obj["metadata"]["uid"] = json!(format!("uid-{}", p.key.name));
        obj["metadata"]["resourceVersion"] = json!("1");
        store.lock().unwrap().insert(path_of(&p.key), obj);
    }
    let inv = Inventory {
        entries: planned.iter().map(plan::Planned::entry).collect(),
        commit: commit.to_string(),
        ..Inventory::default()
    };
    inventory::write(client, "gitgate", "shop", &inv).await.unwrap();
}

fn no_canary(text: &str) {
    for c in [CANARY_1, CANARY_2] {
        assert!(!text.contains(c), "plaintext in: {text}");
        assert!(!text.contains(&b64(c)), "base64 in: {text}");
        assert!(!text.contains("CANARY"), "part of it in: {text}");
    }
}

#[tokio::test]
async fn a_diff_shows_changed_created_pruned_and_kept_objects_and_never_a_secrets_data() {
    let w = world();
    let (client, log, store) = fake_apiserver(Arc::default());
    synced(&client, &store, &w.src, &w.c1).await;
    let target = Arc::new(Target::new("test", client.clone(), 1000.0, 1000));
    let renderer = Renderer::new(RenderOptions::default());
    let inventories = inventory::read_all(&client, "gitgate").await.unwrap();

    // At the synced commit: nothing to do.
    let d1 = renderer.desired(&w.src.repo(), oid(&w.c1)).unwrap();
    let app = d1.app("shop").unwrap().clone();
    log.lock().unwrap().clear();
    let same = diff::app_diff(&target, &d1, &app, inventories.get("shop"), 4).await.unwrap();
    assert!(same.objects.is_empty(), "{same:#?}");
    assert_eq!(same.unchanged, 5);
    assert!(!same.differs());
    // Objects in sync need no dry run (a Secret written with `stringData`
    // never reads back as Git wrote it: it is dry-run, and found the same).
    let patched: Vec<String> = log.lock().unwrap().iter().filter(|l| l.starts_with("PATCH")).cloned().collect();
    assert!(patched.iter().all(|l| l.contains("/secrets/db?")), "{patched:?}");

    // At commit 2.
    let d2 = renderer.desired(&w.src.repo(), oid(&w.c2)).unwrap();
    log.lock().unwrap().clear();
    let before = store.lock().unwrap().clone();
    let d = diff::app_diff(&target, &d2, &app, inventories.get("shop"), 4).await.unwrap();
    assert_eq!(*store.lock().unwrap(), before, "a diff writes nothing");
    // Live objects are read by list, one per kind and namespace; an object
    // the lists do not find (new) or that left Git (pruned) is read alone.
    let reads: Vec<String> = log.lock().unwrap().iter().filter(|l| l.starts_with("GET")).cloned().collect();
    let lists = reads.iter().filter(|l| l.contains("labelSelector=gitgate.dev%2Fapp%3Dshop")).count();
    assert_eq!(lists, 3, "configmaps, secrets, deployments: {reads:#?}");
    assert_eq!(reads.len(), 3 + 3, "and new, old, keep alone: {reads:#?}");
    let patches: Vec<String> = log.lock().unwrap().iter().filter(|l| l.starts_with("PATCH")).cloned().collect();
    assert_eq!(patches.len(), 3, "web, new and db are dry-run applied: {patches:?}");
    assert!(patches.iter().all(|p| p.contains("dryRun=All") && p.contains("fieldManager=gitgate")), "{patches:?}");
    assert_eq!(d.commit, w.c2);
    assert_eq!(d.unchanged, 1, "same");
    let by: BTreeMap<&str, &diff::ObjectDiff> = d.objects.iter().map(|o| (o.id.as_str(), o)).collect();
    assert_eq!(by.len(), 5, "{by:#?}");

    let web = by["shop/Deployment/web"];
    assert_eq!((web.change, web.file.as_str(), web.secret), (Change::Changed, "shop/web.yaml", false));
    assert!(web.diff.starts_with("--- live/shop/Deployment/web\n+++ git/shop/Deployment/web\n@@ "), "{}", web.diff);
    let minus: Vec<&str> = web.diff.lines().filter(|l| l.starts_with('-') && !l.starts_with("---")).collect();
    let plus: Vec<&str> = web.diff.lines().filter(|l| l.starts_with('+') && !l.starts_with("+++")).collect();
    assert!(minus.iter().any(|l| l.ends_with(" image: registry.example.invalid/web:1")), "{}", web.diff);
    assert!(plus.iter().any(|l| l.ends_with(" image: registry.example.invalid/web:2")), "{}", web.diff);
    // the stamps move with the content; what the apiserver keeps is trimmed
    assert!(web.diff.contains(&format!("gitgate.dev/commit: {}", w.c2)), "{}", web.diff);
    assert!(!web.diff.contains("resourceVersion") && !web.diff.contains("uid:"), "{}", web.diff);
    assert!(!web.diff.contains("managedFields"), "{}", web.diff);

    let new = by["shop/ConfigMap/new"];
    assert_eq!(new.change, Change::Created);
    assert!(new.diff.contains("@@ -0,0 +1,"), "{}", new.diff);
    assert!(new.diff.lines().skip(2).all(|l| l.starts_with('+') || l.starts_with("@@")), "{}", new.diff);

    let old = by["shop/ConfigMap/old"];
    assert_eq!((old.change, old.file.as_str()), (Change::Pruned, "shop/old.yaml"));
    assert!(old.diff.contains("-  name: old"), "{}", old.diff);
    assert!(old.diff.lines().skip(2).all(|l| l.starts_with('-') || l.starts_with("@@")), "{}", old.diff);
    let keep = by["shop/ConfigMap/keep"];
    assert_eq!((keep.change, keep.diff.as_str()), (Change::Kept, ""));

    let db = by["shop/Secret/db"];
    assert_eq!((db.change, db.secret, db.diff.as_str()), (Change::Changed, true, ""));

    // Order: Git's objects in the sync's order, then what prune touches.
    let order: Vec<Change> = d.objects.iter().map(|o| o.change).collect();
    assert_eq!(order.iter().rposition(|c| matches!(c, Change::Created | Change::Changed)), Some(2), "{order:?}");

    let text = diff::render_text(&d);
    assert!(text.contains("changed shop/Secret/db (shop/db.yaml)\n  (a Secret: its data is not shown)"), "{text}");
    assert!(text.contains("pruned shop/ConfigMap/old"), "{text}");
    assert!(text.contains("kept (Prune=false) shop/ConfigMap/keep"), "{text}");
    assert!(text.trim_end().ends_with("1 created, 2 changed, 1 pruned, 1 kept (Prune=false), 1 unchanged"), "{text}");
    no_canary(&text);
    let json = serde_json::to_string(&d).unwrap();
    no_canary(&json);
    let back: AppDiff = serde_json::from_str(&json).unwrap();
    assert_eq!(back, d, "the JSON round-trips");
    assert!(json.contains("\"change\":\"Changed\"") && json.contains("\"unchanged\":1"), "{json}");

    // The canary: a dry run refused with a message quoting the request
    // (the Secret's value among it) is reported without it.
    let (client, _, store) = fake_apiserver(Arc::new(Mutex::new(Some("/secrets/"))));
    synced(&client, &store, &w.src, &w.c1).await;
    let target = Arc::new(Target::new("test", client, 1000.0, 1000));
    let err = diff::app_diff(&target, &d2, &app, inventories.get("shop"), 4).await.unwrap_err();
    let shown = gitgate::error_chain(&err);
    assert!(shown.contains("failed to apply shop/Secret/db (dry run)"), "{shown}");
    assert!(shown.contains("admission webhook denied the request"), "the rest of the message is kept: {shown}");
    no_canary(&shown);
    no_canary(&format!("{err:?}"));
}

/// The route behind its gate: the caller's scope decides, an app the
/// caller does not see is as unknown as one that does not exist.
#[tokio::test]
async fn the_route_answers_the_diff_to_who_sees_the_app_and_404_otherwise() {
    use tower::ServiceExt as _;
    let w = world();
    let (client, _, store) = fake_apiserver(Arc::default());
    synced(&client, &store, &w.src, &w.c1).await;
    let target = Arc::new(Target::new("test", client, 1000.0, 1000));
    let d2 = Renderer::new(RenderOptions::default()).desired(&w.src.repo(), oid(&w.c2)).unwrap();
    struct Fixed(Arc<gitgate::render::DesiredSet>);
    impl DiffSource for Fixed {
        fn desired_for(
            &self,
            _: &str,
            commit: Option<&str>,
        ) -> futures_util::future::BoxFuture<'_, Result<Arc<gitgate::render::DesiredSet>, DiffError>> {
            let c = commit.map(str::to_string);
            Box::pin(async move {
                match c {
                    None => Ok(self.0.clone()),
                    Some(c) => Err(DiffError::Commit(format!("commit {c} is not on the tracked branch main"))),
                }
            })
        }
    }
    let state = Arc::new(DiffState {
        source: Arc::new(Fixed(d2)),
        targets: Some(Arc::new(Targets::new(target, None, 1000.0, 1000))),
        namespace: "gitgate".into(),
        concurrency: 4,
    });
    let call = |scope: Scope, uri: &str| {
        let app = diff::router(state.clone()).layer(axum::Extension(scope));
        let req = Request::get(uri).body(axum::body::Body::empty()).unwrap();
        async move {
            let resp = app.oneshot(req).await.unwrap();
            let code = resp.status().as_u16();
            let body = http_body_util::BodyExt::collect(resp.into_body()).await.unwrap().to_bytes();
            (code, serde_json::from_slice::<Value>(&body).unwrap())
        }
    };
    let (code, body) = call(Scope::All, "/api/v1/apps/shop/diff").await;
    assert_eq!(code, 200, "{body}");
    let d: AppDiff = serde_json::from_value(body).unwrap();
    assert_eq!((d.app.as_str(), d.commit.as_str(), d.objects.len()), ("shop", w.c2.as_str(), 5));
    let (code, body) = call(Scope::All, "/api/v1/apps/nope/diff").await;
    assert_eq!((code, body["error"].as_str()), (404, Some("no app named nope")));
    let other = Scope::Apps { projects: ["q".to_string()].into(), apps: ["billing".to_string()].into() };
    let (code, body) = call(other, "/api/v1/apps/shop/diff").await;
    assert_eq!((code, body["error"].as_str()), (404, Some("no app named shop")), "not seen is not found");
    let (code, body) = call(Scope::All, "/api/v1/apps/shop/diff?commit=abc123").await;
    assert_eq!((code, body["error"].as_str()), (400, Some("commit abc123 is not on the tracked branch main")));
    drop(w.repo);
}

/// `--commit`: a full or short ID of the tracked branch's history renders;
/// a commit of another branch, an unknown ID or no ID at all is refused.
#[tokio::test]
async fn a_commit_is_taken_only_from_the_tracked_branch() {
    let w = world();
    git(w.repo.path(), &["checkout", "-q", "-b", "side"]);
    w.repo.write("shop/side.yaml", &configmap("side", "1"));
    let side = w.repo.commit("side work");
    git(w.repo.path(), &["checkout", "-q", "main"]);
    w.src.fetch().unwrap();
    let tracker = Arc::new(Tracker::new(w.src.clone(), "main", Arc::new(Renderer::new(RenderOptions::default()))));
    assert!(matches!(tracker.desired_for("shop", None).await, Err(DiffError::NotReady)));
    tracker.sync_once().await.unwrap();
    let head = tracker.desired_for("shop", None).await.unwrap();
    assert_eq!(head.commit().to_string(), w.c2);
    let at = tracker.desired_for("shop", Some(&w.c1)).await.unwrap();
    assert_eq!(at.commit().to_string(), w.c1);
    let short = tracker.desired_for("shop", Some(&w.c1[..8])).await.unwrap();
    assert_eq!(short.commit().to_string(), w.c1);
    for (bad, why) in [
        (side.as_str(), "is not on the tracked branch main"),
        (&side[..10], "is not on the tracked branch main"),
        ("deadbeefdeadbeef", "is unknown"),
        ("main~1", "is not a commit id"),
        ("c0ffee", "is not a commit id"),
    ] {
        let e = tracker.desired_for("shop", Some(bad)).await.unwrap_err();
        assert!(e.to_string().contains(why), "{bad}: {e}");
        assert_eq!(e.status(), http::StatusCode::BAD_REQUEST);
    }
}
