//! The provenance rule on a real rendered desired set and the
//! AdmissionReviews captured from a real kube-apiserver: what Git made
//! passes; hand edits, copied stamps, replays of older commits, unmanaged
//! creates, scale and deletes are refused with the owning app, file and
//! commit.

mod support;
use support::server as common;

use std::sync::Arc;

use gitgate::admission::{self, AdmissionRequest, Decider, Limits, Review};
use gitgate::policy::{PolicySet, PolicyStage, StaticNamespaces};
use gitgate::provenance::{self, Facts, Identity, ProvenanceStage, Reason, Snapshot, glass};
use gitgate::render::{RenderOptions, Renderer};
use gitgate::source::GitSource;
use serde_json::{Value, json};
use support::{Repo, cache_dir, oid};
use tower::ServiceExt as _;

const RECONCILER: &str = "system:serviceaccount:gitgate:gitgate";

/// The captured Deployment as a manifest in Git (what a user committed).
fn manifest(image: &str) -> String {
    let review: Value = serde_json::from_slice(&common::fixture("validate-create-deployment.json")).unwrap();
    let o = &review["request"]["object"];
    let mut spec = o["spec"].clone();
    spec["template"]["spec"]["containers"][0]["image"] = json!(image);
    let m = json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": o["metadata"]["name"], "labels": o["metadata"]["labels"]},
        "spec": {"replicas": spec["replicas"], "selector": spec["selector"], "template": spec["template"]},
    });
    serde_json::to_string_pretty(&m).unwrap()
}

struct World {
    _repo: Repo,
    _cache: tempfile::TempDir,
    src: GitSource,
    snapshots: Vec<Arc<Snapshot>>,
    commits: Vec<String>,
}

/// A repo with app `demo` deploying `apps/demo` to `gitops-demo`: commit 1
/// adds the Deployment at web:1.0.0, commit 2 bumps it to web:2.0.0.
fn world() -> World {
    let repo = Repo::new();
    repo.write("gitgate.yaml", "apps:\n  - {name: demo, path: apps/demo, destination: {namespace: gitops-demo}}\n");
    repo.write("apps/demo/web.json", &manifest("registry.example.invalid/demo/web:1.0.0"));
    let c1 = repo.commit("add web");
    repo.write("apps/demo/web.json", &manifest("registry.example.invalid/demo/web:2.0.0"));
    let c2 = repo.commit("bump image");
    let (t, cache) = cache_dir();
    let src = GitSource::open(&repo.url(), &cache).unwrap();
    src.fetch().unwrap();
    let r = Renderer::new(RenderOptions::default());
    let snapshots = [&c1, &c2]
        .iter()
        .map(|c| Arc::new(Snapshot::build(r.desired(&src.repo(), oid(c)).unwrap(), &src.repo())))
        .collect();
    World { _repo: repo, _cache: t, src, snapshots, commits: vec![c1, c2] }
}

fn request(fixture: &str) -> AdmissionRequest {
    Review::decode(&common::fixture(fixture)).unwrap().request
}

/// The request as the reconciler sends Git's content of `snap`, stamped.
fn stamped(snap: &Snapshot, mut req: AdmissionRequest) -> AdmissionRequest {
    let obj = snap.desired.get("apps", "Deployment", "gitops-demo", "web").unwrap();
    let o = req.object.as_mut().unwrap();
    o["metadata"]["annotations"] = json!({
        gitgate::contract::DIGEST_ANNOTATION: obj.digest_string(),
        gitgate::contract::COMMIT_ANNOTATION: obj.commit.to_string(),
    });
    o["spec"]["template"]["spec"]["containers"][0]["image"] = snap
        .desired
        .get("apps", "Deployment", "gitops-demo", "web")
        .unwrap()
        .value()["spec"]["template"]["spec"]["containers"][0]["image"]
        .clone();
    req.user_info.username = RECONCILER.into();
    req
}

fn verify(snap: &Snapshot, req: &AdmissionRequest) -> Facts {
    provenance::verify(
        snap,
        req,
        &Identity {
            reconciler: RECONCILER.into(),
            strict: true,
            break_glass_groups: vec!["oncall".into()],
            break_glass_ttl: std::time::Duration::from_secs(3600),
        },
    )
}

#[test]
fn the_reconciler_applying_gits_content_passes_and_names_its_commit() {
    let w = world();
    let head = &w.snapshots[1];
    let f = verify(head, &stamped(head, request("validate-create-deployment.json")));
    assert!(f.verdict.allowed, "{:?}", f.verdict);
    assert_eq!(f.verdict.reason, Reason::FromGit);
    assert_eq!(
        (f.app.as_str(), f.path.as_str(), f.commit.as_str()),
        ("demo", "apps/demo/web.json", w.commits[1].as_str())
    );
    assert_eq!(f.subject, "bump image");
    assert!(f.managed && f.enforced);
}

#[test]
fn hand_edits_copied_stamps_and_replays_are_refused_with_the_owner() {
    let w = world();
    let head = &w.snapshots[1];
    let owner = format!(
        "gitops-demo/Deployment/web is managed by app demo from apps/demo/web.json at {} 'bump image'",
        &w.commits[1][..7]
    );

    // kubectl by a human, sending exactly Git's content with the stamps copied
    let mut human = stamped(head, request("validate-create-deployment.json"));
    human.user_info.username = "kubernetes-admin".into();
    let f = verify(head, &human);
    assert_eq!(f.verdict.reason, Reason::NotReconciler);
    assert!(f.verdict.message.starts_with(&owner), "{}", f.verdict.message);
    assert!(f.verdict.message.contains("change it there"), "{}", f.verdict.message);

    // a hand edit of a field Git sets, stamps copied
    let mut edited = stamped(head, request("validate-create-deployment.json"));
    edited.object.as_mut().unwrap()["spec"]["replicas"] = json!(5);
    let f = verify(head, &edited);
    assert_eq!(f.verdict.reason, Reason::Modified);
    assert!(f.verdict.message.ends_with("(/spec/replicas differs from Git)"), "{}", f.verdict.message);

    // a replay of the older commit's manifest with its own (valid) stamps
    let replay = stamped(&w.snapshots[0], request("validate-create-deployment.json"));
    let f = verify(head, &replay);
    assert!(!f.verdict.allowed);
    assert!(f.verdict.message.contains("/spec/template/spec/containers/0/image differs"), "{}", f.verdict.message);

    // Git's content without stamps
    let mut unstamped = stamped(head, request("validate-create-deployment.json"));
    unstamped.object.as_mut().unwrap()["metadata"]["annotations"] = json!({});
    assert_eq!(verify(head, &unstamped).verdict.reason, Reason::Unstamped);

    // the captured kubectl patch (an image change by hand)
    let f = verify(head, &request("validate-update-deployment-kubectl-edit-like.json"));
    assert!(!f.verdict.allowed);
    assert!(f.verdict.message.starts_with(&owner), "{}", f.verdict.message);
}

/// Issue 17: the gate enforces the commit in force, not the one waiting
/// for approval. The waiting commit's content, even sent by the reconciler
/// with its valid stamps, is refused until the commit is approved; what is
/// in force passes.
#[test]
fn a_commit_waiting_for_approval_is_not_enforced_the_one_in_force_is() {
    use gitgate::render::DesiredSet;
    use gitgate::render::desired::{AppGate, Held, HeldKind};
    let w = world();
    let (old, head) = (&w.snapshots[0], &w.snapshots[1]);
    let gate = AppGate {
        in_force: Some(old.desired.commit()),
        config: old.desired.config_arc().clone(),
        held: Some(Held { kind: HeldKind::WaitingApproval, waiting: head.desired.commit(), message: "waits".into() }),
        self_heal: true,
    };
    let composed = DesiredSet::compose(&head.desired, vec![("demo".into(), Some(old.desired.clone()), gate)]);
    assert_eq!(composed.commit(), head.desired.commit(), "the head is still the head");
    assert_eq!(composed.app_commit("demo"), Some(old.desired.commit()));
    let snap = Snapshot::build(Arc::new(composed), &w.src.repo());

    let waiting = stamped(head, request("validate-create-deployment.json"));
    let f = verify(&snap, &waiting);
    assert!(!f.verdict.allowed, "the waiting commit's content passed: {:?}", f.verdict);
    assert!(f.verdict.message.contains("/spec/template/spec/containers/0/image differs"), "{}", f.verdict.message);
    let in_force = stamped(old, request("validate-create-deployment.json"));
    let f = verify(&snap, &in_force);
    assert!(f.verdict.allowed, "{:?}", f.verdict);
    assert_eq!(f.commit, w.commits[0], "the object is traced to the commit in force");

    // `gitgate diff` previews the waiting commit with a server-side dry
    // run as the reconciler: a dry run changes nothing and passes; the same
    // request by anyone else, or not dry, does not.
    let mut preview = stamped(head, request("validate-create-deployment.json"));
    preview.dry_run = true;
    let f = verify(&snap, &preview);
    assert!(f.verdict.allowed && f.verdict.reason == Reason::Preview, "{:?}", f.verdict);
    preview.user_info.username = "kubernetes-admin".into();
    assert!(!verify(&snap, &preview).verdict.allowed, "only the reconciler previews");
}

#[test]
fn scale_deletes_and_unmanaged_creates() {
    let w = world();
    let head = &w.snapshots[1];
    let f = verify(head, &request("validate-scale-deployment.json"));
    assert_eq!(f.verdict.reason, Reason::Modified);
    assert!(f.verdict.message.ends_with("(scale is set in Git)"), "{}", f.verdict.message);

    let f = verify(head, &request("validate-delete-deployment.json"));
    assert_eq!(f.verdict.reason, Reason::DeleteDeclared);
    assert!(f.verdict.message.ends_with("remove it from Git to delete it"), "{}", f.verdict.message);

    let f = verify(head, &request("validate-create-configmap-ssa.json"));
    assert_eq!(f.verdict.reason, Reason::NotDeclared);
    assert!(f.verdict.message.contains("nothing in Git declares gitops-demo/ConfigMap/"), "{}", f.verdict.message);
    assert!(
        f.verdict.message.contains("namespace gitops-demo is deployed from Git by app demo (apps/demo)"),
        "{}",
        f.verdict.message
    );
    assert!(f.enforced && !f.managed);

    // prune: the reconciler deletes what Git no longer declares; a human may not
    let mut prune = request("validate-delete-configmap.json");
    prune.user_info.username = RECONCILER.into();
    assert_eq!(verify(head, &prune).verdict.reason, Reason::Prune);
    assert_eq!(verify(head, &request("validate-delete-configmap.json")).verdict.reason, Reason::PruneByHand);
}

#[test]
fn break_glass_lets_a_listed_group_through_with_a_reason() {
    let w = world();
    let head = &w.snapshots[1];
    let hour = std::time::Duration::from_secs(3600);
    let now = gitgate::audit::record::now_micros();
    // As the apiserver sends it after gitgate's mutating webhook: the
    // window stamped from the old object (none here) and the TTL.
    let with = |groups: &[&str], reason: Option<&str>| {
        let mut req = request("validate-update-deployment-kubectl-edit-like.json");
        req.user_info.groups = groups.iter().map(|g| g.to_string()).collect();
        if let Some(r) = reason {
            req.object.as_mut().unwrap()["metadata"]["annotations"][gitgate::contract::BREAK_GLASS_ANNOTATION] =
                json!(r);
            let op = glass::stamp(req.old_object.as_ref(), req.object.as_ref().unwrap(), hour, now).unwrap();
            json_patch::patch(req.object.as_mut().unwrap(), &[op]).unwrap();
        }
        verify(head, &req).verdict
    };
    let v = with(&["oncall", "system:authenticated"], Some("INC-4711 roll back the bad image"));
    assert!(v.allowed);
    assert_eq!(v.reason, Reason::BreakGlass);
    assert_eq!(v.message, "INC-4711 roll back the bad image");
    assert!(!with(&["oncall"], None).allowed, "no reason, no break-glass");
    assert!(!with(&["oncall"], Some("  ")).allowed, "an empty reason is no reason");
    assert!(!with(&["developers"], Some("I really need to")).allowed, "only the listed groups");
}

/// Regression: the break-glass window lived in the leader's memory, so a
/// failover restarted the clock, and admission put no limit on the
/// annotation itself. The window is now stamped on the object; a change
/// outside it, or one that moves it, is refused naming the object's owner.
#[test]
fn break_glass_outside_its_window_is_refused() {
    let w = world();
    let head = &w.snapshots[1];
    let oncall = |object_until: Option<&str>, old_until: Option<&str>| {
        let mut req = request("validate-update-deployment-kubectl-edit-like.json");
        req.user_info.groups = vec!["oncall".into()];
        let a = &mut req.object.as_mut().unwrap()["metadata"]["annotations"];
        a[gitgate::contract::BREAK_GLASS_ANNOTATION] = json!("INC-4711");
        if let Some(u) = object_until {
            a[gitgate::contract::UNTIL_ANNOTATION] = json!(u);
        }
        if let Some(u) = old_until {
            req.old_object.as_mut().unwrap()["metadata"]["annotations"][gitgate::contract::UNTIL_ANNOTATION] = json!(u);
        }
        verify(head, &req).verdict
    };
    let fmt = |secs: i64| {
        gitgate::audit::record::format_rfc3339_micros(gitgate::audit::record::now_micros() + secs * 1_000_000)
    };
    let (soon, later, past) = (fmt(600), fmt(1800), fmt(-1));

    // Without the mutating webhook's stamp.
    let v = oncall(None, None);
    assert_eq!(v.reason, Reason::BreakGlassWindow);
    assert!(!v.allowed && v.message.contains("gitgate-mutate"), "{}", v.message);
    assert!(v.message.contains("is managed by app"), "names the owner: {}", v.message);
    // A window that is over.
    let v = oncall(Some(&past), Some(&past));
    assert!(!v.allowed && v.message.contains("ended at"), "{}", v.message);
    // A change that moves its own window.
    let v = oncall(Some(&later), Some(&soon));
    assert!(!v.allowed && v.message.contains("may not move its own window"), "{}", v.message);
    // A window longer than --break-glass-ttl (1 h here).
    let v = oncall(Some(&fmt(2 * 3600)), None);
    assert!(!v.allowed && v.message.contains("--break-glass-ttl"), "{}", v.message);
    // Inside its window, kept: allowed.
    assert!(oncall(Some(&soon), Some(&soon)).allowed);
}

#[tokio::test]
async fn the_gate_through_the_router_with_the_built_in_exemptions() {
    let w = world();
    let head = w.snapshots[1].clone();
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
    let stage = PolicyStage {
        policies: Arc::new(PolicySet::load(&[dir]).unwrap()),
        namespaces: Arc::new(StaticNamespaces::default()),
        reconciler: RECONCILER.into(),
        break_glass_groups: Vec::new(),
    };
    let provenance = ProvenanceStage {
        snapshot: Arc::new(arc_swap::ArcSwapOption::from(Some(head.clone()))),
        who: Identity {
            reconciler: RECONCILER.into(),
            strict: true,
            break_glass_groups: Vec::new(),
            break_glass_ttl: std::time::Duration::from_secs(3600),
        },
    };
    let decider = Decider::new().with_validating(Arc::new(provenance)).with_validating(Arc::new(stage));
    let app = admission::router(common::state_with(decider, Limits::default()));
    let send = |body: Vec<u8>| {
        let app = app.clone();
        async move {
            let req = axum::http::Request::post("/validate").body(axum::body::Body::from(body)).unwrap();
            let resp = app.oneshot(req).await.unwrap();
            serde_json::from_slice::<Value>(&axum::body::to_bytes(resp.into_body(), usize::MAX).await.unwrap()).unwrap()
        }
    };
    let review = |fixture: &str| common::fixture(fixture);

    // the reconciler's apply passes, and the response names the commit for the apiserver's audit log
    let mut r: Value = serde_json::from_slice(&review("validate-create-deployment.json")).unwrap();
    r["request"] = serde_json::to_value(stamped(&head, request("validate-create-deployment.json"))).unwrap();
    let got = send(serde_json::to_vec(&r).unwrap()).await;
    assert_eq!(got["response"]["allowed"], true, "{got}");
    assert_eq!(got["response"]["auditAnnotations"]["commit"], w.commits[1].as_str());
    assert_eq!(got["response"]["auditAnnotations"]["app"], "demo");

    // a kubectl patch is refused with the owner's message
    let got = send(review("validate-update-deployment-kubectl-edit-like.json")).await;
    assert_eq!(got["response"]["allowed"], false);
    assert_eq!(got["response"]["status"]["code"], 403);
    let msg = got["response"]["status"]["message"].as_str().unwrap();
    assert!(msg.contains("is managed by app demo from apps/demo/web.json") && msg.contains("'bump image'"), "{msg}");

    // exemptions: controllers at work in the managed namespace
    for fixture in [
        "validate-create-replicaset-by-controller.json",
        "validate-update-replicaset-by-controller.json",
        "validate-create-pod-by-controller.json",
        "validate-update-deployment-status-by-controller.json",
        "validate-delete-replicaset-by-garbage-collector.json",
        "validate-deletecollection-configmap-by-namespace-controller.json",
        "validate-connect-pod-exec.json",
    ] {
        let got = send(review(fixture)).await;
        assert_eq!(got["response"]["allowed"], true, "{fixture}: {got}");
    }
    // and the rest of the bypass list
    for fixture in
        ["validate-scale-deployment.json", "validate-delete-deployment.json", "validate-create-configmap-ssa.json"]
    {
        let got = send(review(fixture)).await;
        assert_eq!(got["response"]["allowed"], false, "{fixture}: {got}");
    }
}

/// A repo where app `demo` deploys the Deployment to `gitops-demo` (and
/// declares that Namespace), app `platform` the ServiceAccount
/// `gitops/reconciler`, and app `later` deploys into `gitops-later`, a
/// Namespace Git does not declare.
fn subresource_world() -> (Repo, tempfile::TempDir, Arc<Snapshot>) {
    let repo = Repo::new();
    repo.write(
        "gitgate.yaml",
        "projects:\n  - {name: p, destinations: [{cluster: \"*\", namespace: \"*\"}], clusterKinds: [Namespace]}\napps:\n  - {name: demo, project: p, path: apps/demo, destination: {namespace: gitops-demo}}\n  - {name: platform, project: p, path: apps/platform, destination: {namespace: gitops}}\n  - {name: later, project: p, path: apps/later, destination: {namespace: gitops-later}}\n",
    );
    repo.write("apps/demo/web.json", &manifest("registry.example.invalid/demo/web:1.0.0"));
    repo.write("apps/demo/ns.yaml", "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: gitops-demo\n");
    repo.write("apps/platform/sa.yaml", "apiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: reconciler\n");
    repo.write("apps/later/settings.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\n");
    let c = repo.commit("three apps");
    let (t, cache) = cache_dir();
    let src = GitSource::open(&repo.url(), &cache).unwrap();
    src.fetch().unwrap();
    let desired = Renderer::new(RenderOptions::default()).desired(&src.repo(), oid(&c)).unwrap();
    let snap = Arc::new(Snapshot::build(desired, &src.repo()));
    (repo, t, snap)
}

/// Issue 15, item 7 (CVE class: privilege escalation through a namespace
/// pre-created with labels of the attacker's choosing): a Namespace an app
/// deploys into is enforced by its own name, whatever the request's
/// `namespace` says.
#[test]
fn a_namespace_an_app_deploys_into_is_never_created_ahead_of_git() {
    let (_repo, _cache, snap) = subresource_world();
    let mut create = request("validate-create-namespace.json");
    create.object.as_mut().unwrap()["metadata"]["name"] = json!("gitops-later");
    create.object.as_mut().unwrap()["metadata"]["labels"] =
        json!({"pod-security.kubernetes.io/enforce": "privileged", "kubernetes.io/metadata.name": "gitops-later"});
    create.name = "gitops-later".into();
    for namespace in ["gitops-later", ""] {
        create.namespace = namespace.into();
        let f = verify(&snap, &create);
        assert!(f.enforced && !f.managed, "request.namespace {namespace:?}");
        assert_eq!(f.verdict.reason, Reason::NotDeclared);
        assert!(
            f.verdict.message.contains("nothing in Git declares Namespace/gitops-later")
                && f.verdict.message.contains("app later (apps/later) deploys into it")
                && f.verdict.message.contains("declare the Namespace in Git"),
            "{}",
            f.verdict.message
        );
    }
    // a Namespace no app deploys into is not gitgate's
    create.object.as_mut().unwrap()["metadata"]["name"] = json!("scratch");
    create.name = "scratch".into();
    create.namespace = String::new();
    assert!(!verify(&snap, &create).enforced);
}

/// Issue 15, item 1 (CVE class: authorization bypass through an
/// unguarded subresource): every subresource the webhook now receives
/// (`*/*`) is decided by `gitgate-subresources` in `policies/provenance.yaml`,
/// through the router, on reviews captured from a real kube-apiserver.
#[tokio::test]
async fn every_subresource_is_decided_through_the_router() {
    let (_repo, _cache, snap) = subresource_world();
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
    let stage = PolicyStage {
        policies: Arc::new(PolicySet::load(&[dir]).unwrap()),
        namespaces: Arc::new(StaticNamespaces::default()),
        reconciler: RECONCILER.into(),
        break_glass_groups: vec!["oncall".into()],
    };
    let provenance = ProvenanceStage {
        snapshot: Arc::new(arc_swap::ArcSwapOption::from(Some(snap))),
        who: Identity {
            reconciler: RECONCILER.into(),
            strict: true,
            break_glass_groups: vec!["oncall".into()],
            break_glass_ttl: std::time::Duration::from_secs(3600),
        },
    };
    let decider = Decider::new().with_validating(Arc::new(provenance)).with_validating(Arc::new(stage));
    let app = admission::router(common::state_with(decider, Limits::default()));
    let send = |review: Value| {
        let app = app.clone();
        async move {
            let body = serde_json::to_vec(&review).unwrap();
            let req = axum::http::Request::post("/validate").body(axum::body::Body::from(body)).unwrap();
            let resp = app.oneshot(req).await.unwrap();
            let got: Value =
                serde_json::from_slice(&axum::body::to_bytes(resp.into_body(), usize::MAX).await.unwrap()).unwrap();
            got["response"].clone()
        }
    };
    let review = |fixture: &str| serde_json::from_slice::<Value>(&common::fixture(fixture)).unwrap();
    let denied = |got: &Value, rule: &str| {
        assert_eq!(got["allowed"], false, "{got}");
        assert_eq!(got["status"]["code"], 403, "{got}");
        let msg = got["status"]["message"].as_str().unwrap_or_default().to_owned();
        assert!(
            msg.starts_with(
                "ValidatingAdmissionPolicy 'gitgate-subresources' with binding 'gitgate-subresources' denied request: "
            ) && msg.contains(&format!("rule {rule}: ")),
            "{msg}"
        );
        msg
    };

    // status: a person's patch is refused, the controller's passes
    let msg = denied(&send(review("validate-update-deployment-status-by-admin.json")).await, "subresource-status");
    assert!(
        msg.contains("deployments/status of gitops-demo/web is written by its controllers, not by kubernetes-admin"),
        "{msg}"
    );
    let got = send(review("validate-update-deployment-status-by-controller.json")).await;
    assert_eq!(got["allowed"], true, "{got}");
    // an operator's ServiceAccount writes status too
    let mut operator = review("validate-update-deployment-status-by-admin.json");
    operator["request"]["userInfo"] = json!({"username": "system:serviceaccount:operators:rollouts", "groups": ["system:serviceaccounts", "system:authenticated"]});
    assert_eq!(send(operator).await["allowed"], true);
    // break-glass: let through, and said so in the audit annotations
    let mut glass = review("validate-update-deployment-status-by-admin.json");
    glass["request"]["userInfo"]["groups"] = json!(["oncall", "system:authenticated"]);
    let got = send(glass).await;
    assert_eq!(got["allowed"], true, "{got}");
    assert_eq!(
        got["auditAnnotations"]["gitgate-subresources/break-glass"],
        "deployments/status of gitops-demo/web by kubernetes-admin, a member of a break-glass group"
    );

    // kubectl debug
    let got = send(review("validate-update-pod-ephemeralcontainers.json")).await;
    let msg = denied(&got, "subresource-ephemeralcontainers");
    assert!(
        msg.contains("may not add an ephemeral container to gitops-demo/") && msg.contains("(kubectl debug)"),
        "{msg}"
    );

    // finalize of the Namespace Git declares
    let msg = denied(&send(review("validate-update-namespace-finalize.json")).await, "subresource-finalize");
    assert!(msg.contains("may not finalize Namespace gitops-demo"), "{msg}");

    // a token of the ServiceAccount Git declares
    let msg = denied(&send(review("validate-create-serviceaccount-token-subresource.json")).await, "subresource-token");
    assert!(
        msg.contains("may not mint a token for ServiceAccount gitops/reconciler, which Git declares (app platform from apps/platform/sa.yaml)"),
        "{msg}"
    );

    // eviction: allowed (draining a node is operations)
    let got = send(review("validate-create-pod-eviction.json")).await;
    assert_eq!(got["allowed"], true, "{got}");
    // exec: changes no desired state
    assert_eq!(send(review("validate-connect-pod-exec.json")).await["allowed"], true);
    // scale stays the provenance gate's business
    let got = send(review("validate-scale-deployment.json")).await;
    assert_eq!(got["allowed"], false);
    assert!(got["status"]["message"].as_str().unwrap().contains("'gitgate-provenance'"), "{got}");

    // a subresource no rule names is refused to people
    let mut resize = review("validate-update-pod-ephemeralcontainers.json");
    resize["request"]["subResource"] = json!("resize");
    resize["request"]["requestSubResource"] = json!("resize");
    let msg = denied(&send(resize).await, "subresource-other");
    assert!(msg.contains("pods/resize of gitops-demo/"), "{msg}");

    // where gitgate does not deploy, none of this applies
    let mut elsewhere = review("validate-update-pod-ephemeralcontainers.json");
    elsewhere["request"]["namespace"] = json!("scratch");
    elsewhere["request"]["object"]["metadata"]["namespace"] = json!("scratch");
    assert_eq!(send(elsewhere).await["allowed"], true);

    // item 7 through the router: the captured Namespace create, renamed to
    // an app's undeclared destination, with and without request.namespace
    for namespace in ["gitops-later", ""] {
        let mut create = review("validate-create-namespace.json");
        create["request"]["name"] = json!("gitops-later");
        create["request"]["namespace"] = json!(namespace);
        create["request"]["object"]["metadata"]["name"] = json!("gitops-later");
        let got = send(create).await;
        assert_eq!(got["allowed"], false, "{got}");
        assert!(got["status"]["message"].as_str().unwrap().contains("app later (apps/later) deploys into it"), "{got}");
    }
}

/// Issue 19: a hook Job the reconciler creates, and the Jobs it deletes to
/// re-create them (Replace=true), as AdmissionReviews carry them.
fn hook_world() -> (Repo, tempfile::TempDir, Arc<Snapshot>) {
    let repo = Repo::new();
    repo.write("gitgate.yaml", "apps:\n  - {name: shop, path: shop, destination: {namespace: shop}}\n");
    repo.write(
        "shop/migrate.yaml",
        "apiVersion: batch/v1\nkind: Job\nmetadata:\n  generateName: migrate-\n  annotations:\n    argocd.argoproj.io/hook: PreSync\nspec:\n  template:\n    spec:\n      restartPolicy: Never\n      containers: [{name: m, image: \"migrate:1\"}]\n",
    );
    let job = |name: &str, options: &str| {
        format!(
            "apiVersion: batch/v1\nkind: Job\nmetadata:\n  name: {name}\n{options}spec:\n  template:\n    spec:\n      restartPolicy: Never\n      containers: [{{name: m, image: \"x:1\"}}]\n"
        )
    };
    repo.write("shop/schema.yaml", &job("schema", "  annotations: {gitgate.dev/sync-options: Replace=true}\n"));
    repo.write("shop/report.yaml", &job("report", ""));
    let c = repo.commit("hooks");
    let (t, cache) = cache_dir();
    let src = GitSource::open(&repo.url(), &cache).unwrap();
    src.fetch().unwrap();
    let d = Renderer::new(RenderOptions::default()).desired(&src.repo(), oid(&c)).unwrap();
    (repo, t, Arc::new(Snapshot::build(d, &src.repo())))
}

fn job_review(user: &str, operation: &str, name: &str, object: Value) -> AdmissionRequest {
    let (obj, old) = if operation == "DELETE" { (Value::Null, object) } else { (object, Value::Null) };
    let review = json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "3f0a1c2e-0000-4000-8000-000000000019",
            "kind": {"group": "batch", "version": "v1", "kind": "Job"},
            "resource": {"group": "batch", "version": "v1", "resource": "jobs"},
            "requestKind": {"group": "batch", "version": "v1", "kind": "Job"},
            "requestResource": {"group": "batch", "version": "v1", "resource": "jobs"},
            "name": name,
            "namespace": "shop",
            "operation": operation,
            "userInfo": {"username": user, "groups": ["system:authenticated"]},
            "object": obj,
            "oldObject": old,
            "dryRun": false,
        },
    });
    Review::decode(&serde_json::to_vec(&review).unwrap()).unwrap().request
}

/// A run of the hook as the reconciler creates it: Git's manifest, the
/// apiserver's name and defaults, the stamps.
fn hook_run(snap: &Snapshot, image: &str) -> Value {
    let h = snap.desired.get_hook("batch", "Job", "shop", "migrate-").unwrap();
    let mut o: Value = serde_json::from_str(&h.manifest).unwrap();
    o["metadata"]["name"] = json!("migrate-x7k2p");
    o["metadata"]["annotations"][gitgate::contract::DIGEST_ANNOTATION] = json!(h.digest_string());
    o["metadata"]["annotations"][gitgate::contract::COMMIT_ANNOTATION] = json!(h.commit.to_string());
    o["spec"]["backoffLimit"] = json!(6);
    o["spec"]["template"]["spec"]["containers"][0]["image"] = json!(image);
    o
}

/// The reconciler's run of a hook is Git's (its name aside, for
/// generateName); a hand-made imitation with the stamps copied is denied
/// like any unmanaged create (anchor class: gate bypass by imitating what
/// the reconciler creates), and so is a run whose content is not Git's.
#[test]
fn a_hook_run_is_gits_only_from_the_reconciler_with_gits_content() {
    let (_repo, _t, snap) = hook_world();
    let ok = verify(&snap, &job_review(RECONCILER, "CREATE", "migrate-x7k2p", hook_run(&snap, "migrate:1")));
    assert_eq!(ok.verdict.reason, Reason::FromGit, "{}", ok.verdict.message);
    assert!(ok.verdict.allowed && ok.managed && ok.enforced);
    assert_eq!((ok.app.as_str(), ok.path.as_str()), ("shop", "shop/migrate.yaml"));

    let fake = verify(&snap, &job_review("alice", "CREATE", "migrate-x7k2p", hook_run(&snap, "migrate:1")));
    assert!(!fake.verdict.allowed);
    assert_eq!(fake.verdict.reason, Reason::NotReconciler);
    assert!(fake.verdict.message.contains("shop/Job/migrate-x7k2p is a sync hook of app shop from shop/migrate.yaml"));

    let changed = verify(&snap, &job_review(RECONCILER, "CREATE", "migrate-x7k2p", hook_run(&snap, "evil:1")));
    assert_eq!(changed.verdict.reason, Reason::Modified);
    assert!(changed.verdict.message.contains("/spec/template/spec/containers/0/image differs from Git"));

    // Runs are the reconciler's to delete (its delete policy), no one else's.
    let run = hook_run(&snap, "migrate:1");
    assert_eq!(
        verify(&snap, &job_review(RECONCILER, "DELETE", "migrate-x7k2p", run.clone())).verdict.reason,
        Reason::Prune
    );
    let by_hand = verify(&snap, &job_review("alice", "DELETE", "migrate-x7k2p", run));
    assert!(!by_hand.verdict.allowed && by_hand.verdict.message.contains("by its hook delete policy"));
}

/// The reconciler may delete a declared object only when Git's manifest
/// lets it re-create it (Replace=true); otherwise deleting what Git
/// declares stays refused, for the reconciler too.
#[test]
fn the_reconciler_deletes_a_declared_object_only_to_re_create_it_under_replace() {
    let (_repo, _t, snap) = hook_world();
    let live =
        |name: &str| json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name, "namespace": "shop"}});
    let replace = verify(&snap, &job_review(RECONCILER, "DELETE", "schema", live("schema")));
    assert_eq!(replace.verdict.reason, Reason::Recreate);
    assert!(replace.verdict.allowed);
    let plain = verify(&snap, &job_review(RECONCILER, "DELETE", "report", live("report")));
    assert_eq!(plain.verdict.reason, Reason::DeleteDeclared);
    let by_hand = verify(&snap, &job_review("alice", "DELETE", "schema", live("schema")));
    assert_eq!(by_hand.verdict.reason, Reason::DeleteDeclared);
}
