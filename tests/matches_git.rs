//! One definition of "equals Git": the admission gate
//! (`provenance::verify`) and the sync loop (`sync::plan::drift`) both
//! answer through `contract::matches_git`. Fed the same Git manifest and
//! the same object, they agree — on Git's fields, defaults, ignored
//! fields, a Secret's `stringData`, the stamps, and fields another manager
//! added (per `managedFields`), which the gate saw nothing of before.

mod support;

use std::sync::Arc;

use gitgate::admission::{AdmissionRequest, Review};
use gitgate::provenance::{self, Identity, Snapshot};
use gitgate::render::object::ObjectKey;
use gitgate::render::{RenderOptions, Renderer};
use gitgate::source::GitSource;
use gitgate::sync::plan::{self, Drift, Planned};
use serde_json::{Value, json};
use support::{Repo, cache_dir, oid};

/// (what, the object, its resource, Git's side, equal?, the pointer both name)
type Case<'a> = (&'a str, Value, (&'a str, &'a str, &'a str), &'a Planned, bool, Option<&'a str>);

const RECONCILER: &str = "system:serviceaccount:gitgate:gitgate";
const NS: &str = "agree";

const WEB: &str = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\n  annotations:\n    gitgate.dev/ignore-fields: /spec/replicas\nspec:\n  replicas: 1\n  selector:\n    matchLabels: {app: web}\n  template:\n    metadata:\n      labels: {app: web}\n    spec:\n      containers:\n        - name: web\n          image: registry.example.invalid/web:1.0.0\n";
const CREDS: &str =
    "apiVersion: v1\nkind: Secret\nmetadata:\n  name: creds\nstringData:\n  user: admin\ndata:\n  token: dG9rZW4=\n";

struct World {
    _repo: Repo,
    _cache: tempfile::TempDir,
    snap: Arc<Snapshot>,
}

fn world() -> World {
    let repo = Repo::new();
    repo.write("gitgate.yaml", &format!("apps:\n  - {{name: shop, path: shop, destination: {{namespace: {NS}}}}}\n"));
    repo.write("shop/web.yaml", WEB);
    repo.write("shop/creds.yaml", CREDS);
    let c = repo.commit("shop");
    let (t, cache) = cache_dir();
    let src = GitSource::open(&repo.url(), &cache).unwrap();
    src.fetch().unwrap();
    let desired = Renderer::new(RenderOptions::default()).desired(&src.repo(), oid(&c)).unwrap();
    let snap = Arc::new(Snapshot::build(desired, &src.repo()));
    World { _repo: repo, _cache: t, snap }
}

fn planned(snap: &Snapshot, group: &str, kind: &str, name: &str) -> Planned {
    let key = ObjectKey { group: group.into(), kind: kind.into(), namespace: NS.into(), name: name.into() };
    plan::plan_object("shop", &key, snap.desired.get_key(&key).unwrap()).unwrap()
}

/// An UPDATE of `object` by `user`, as the apiserver sends it.
fn update(user: &str, resource: (&str, &str, &str), object: &Value) -> AdmissionRequest {
    let (group, version, plural) = resource;
    let review = json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {
            "uid": "00000000-0000-0000-0000-000000000001",
            "kind": {"group": group, "version": version, "kind": object["kind"]},
            "resource": {"group": group, "version": version, "resource": plural},
            "name": object["metadata"]["name"], "namespace": NS, "operation": "UPDATE",
            "userInfo": {"username": user, "groups": ["system:authenticated"]},
            "object": object, "oldObject": object, "dryRun": false,
        }
    });
    Review::decode(&serde_json::to_vec(&review).unwrap()).unwrap().request
}

/// The gate's verdict on a hand edit (non-strict, so the writer alone is
/// no reason): `None` when allowed, else its message.
fn gate(snap: &Snapshot, resource: (&str, &str, &str), object: &Value) -> Option<String> {
    let who = Identity {
        reconciler: RECONCILER.into(),
        strict: false,
        break_glass_groups: vec![],
        break_glass_ttl: std::time::Duration::from_secs(3600),
    };
    let v = provenance::verify(snap, &update("kubernetes-admin", resource, object), &who).verdict;
    (!v.allowed).then_some(v.message)
}

/// A `managedFields` list: gitgate's apply of Git's fields, plus `extra`.
fn managed(extra: Value) -> Value {
    let gitgate = json!({"manager": "gitgate", "operation": "Apply", "fieldsType": "FieldsV1", "fieldsV1": {
        "f:spec": {"f:replicas": {}, "f:selector": {}, "f:template": {"f:metadata": {"f:labels": {"f:app": {}}},
        "f:spec": {"f:containers": {"k:{\"name\":\"web\"}": {".": {}, "f:image": {}, "f:name": {}}}}}}}});
    let mut list = vec![gitgate];
    list.extend(extra.as_array().cloned().unwrap_or_default());
    Value::Array(list)
}

fn patch_entry(manager: &str, fields: Value) -> Value {
    json!({"manager": manager, "operation": "Update", "fieldsType": "FieldsV1", "fieldsV1": fields})
}

#[test]
fn the_gate_and_the_loop_agree_on_every_pair() {
    let w = world();
    let snap = &w.snap;
    let web = planned(snap, "apps", "Deployment", "web");
    let creds = planned(snap, "", "Secret", "creds");
    let deploy = ("apps", "v1", "deployments");
    let secret = ("", "v1", "secrets");
    let stamped_web = web.stamped().unwrap();

    let with = |f: &dyn Fn(&mut Value)| {
        let mut o = stamped_web.clone();
        f(&mut o);
        o
    };
    let cases: Vec<Case<'_>> = vec![
        ("the reconciler's stamped form", stamped_web.clone(), deploy, &web, true, None),
        (
            "defaults the apiserver adds",
            with(&|o| {
                o["spec"]["template"]["spec"]["containers"][0]["imagePullPolicy"] = json!("IfNotPresent");
                o["spec"]["strategy"] = json!({"type": "RollingUpdate"});
            }),
            deploy,
            &web,
            true,
            None,
        ),
        (
            "a field Git sets, changed",
            with(&|o| o["spec"]["template"]["spec"]["containers"][0]["image"] = json!("evil:1")),
            deploy,
            &web,
            false,
            Some("/spec/template/spec/containers/0/image"),
        ),
        ("an ignored field, changed", with(&|o| o["spec"]["replicas"] = json!(7)), deploy, &web, true, None),
        (
            "a field another manager added",
            with(&|o| {
                o["spec"]["template"]["spec"]["hostNetwork"] = json!(true);
                o["metadata"]["managedFields"] = managed(json!([patch_entry(
                    "kubectl-patch",
                    json!({"f:spec": {"f:template": {"f:spec": {"f:hostNetwork": {}}}}})
                )]));
            }),
            deploy,
            &web,
            false,
            Some("/spec/template/spec/hostNetwork (set by kubectl-patch)"),
        ),
        (
            "an ignored field another manager set (the HPA case)",
            with(&|o| {
                o["spec"]["replicas"] = json!(4);
                o["metadata"]["managedFields"] =
                    managed(json!([patch_entry("hpa-like", json!({"f:spec": {"f:replicas": {}}}))]));
            }),
            deploy,
            &web,
            true,
            None,
        ),
        (
            "a field the cluster's own controller set",
            with(&|o| {
                o["spec"]["progressDeadlineSeconds"] = json!(600);
                o["metadata"]["managedFields"] = managed(json!([patch_entry(
                    "kube-controller-manager",
                    json!({"f:spec": {"f:progressDeadlineSeconds": {}}})
                )]));
            }),
            deploy,
            &web,
            true,
            None,
        ),
        (
            "Git's content with another commit's stamp",
            with(&|o| o["metadata"]["annotations"]["gitgate.dev/commit"] = json!("0".repeat(40))),
            deploy,
            &web,
            false,
            None,
        ),
        ("a Secret's stringData as the apiserver stores it", creds.stamped().unwrap(), secret, &creds, true, None),
    ];
    for (what, object, resource, p, equal, pointer) in cases {
        // The apiserver never returns stringData: store it as it would.
        let object = if p.key.kind == "Secret" { as_stored(object) } else { object };
        let drift = plan::drift(p, Some(&object));
        let denied = gate(snap, resource, &object);
        assert_eq!(drift == Drift::InSync, equal, "the loop on {what}: {drift:?}");
        assert_eq!(denied.is_none(), equal, "the gate on {what}: {denied:?}");
        if let Some(pointer) = pointer {
            assert_eq!(drift, Drift::Changed(pointer.into()), "the loop names it: {what}");
            let message = denied.unwrap_or_default();
            assert!(message.contains(pointer), "the gate names {pointer} on {what}: {message}");
        }
    }
}

/// The reconciler's own apply is not refused for what another manager
/// left: its apply carries those fields until self-heal removes them.
#[test]
fn the_reconcilers_apply_over_a_foreign_field_is_not_refused_for_it() {
    let w = world();
    let web = planned(&w.snap, "apps", "Deployment", "web");
    let mut object = web.stamped().unwrap();
    object["spec"]["template"]["spec"]["hostNetwork"] = json!(true);
    object["metadata"]["managedFields"] = managed(json!([patch_entry(
        "kubectl-patch",
        json!({"f:spec": {"f:template": {"f:spec": {"f:hostNetwork": {}}}}})
    )]));
    let who = Identity {
        reconciler: RECONCILER.into(),
        strict: true,
        break_glass_groups: vec![],
        break_glass_ttl: std::time::Duration::from_secs(3600),
    };
    let v = provenance::verify(&w.snap, &update(RECONCILER, ("apps", "v1", "deployments"), &object), &who).verdict;
    assert!(v.allowed, "{}", v.message);
    assert!(matches!(plan::drift(&web, Some(&object)), Drift::Changed(_)), "the loop still heals it");
}

fn as_stored(mut secret: Value) -> Value {
    use base64::Engine as _;
    if let Some(strings) = secret.as_object_mut().and_then(|o| o.remove("stringData")) {
        for (k, v) in strings.as_object().cloned().unwrap_or_default() {
            let b = base64::engine::general_purpose::STANDARD.encode(v.as_str().unwrap_or_default());
            secret["data"][k] = json!(b);
        }
    }
    secret
}
