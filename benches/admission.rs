//! In-process cost of one admission: decode + decide + encode of the
//! captured Deployment review (issue 2's figure: p99 ≤ 50 µs).
//!
//! `cargo bench --bench admission` prints criterion's estimate and then a
//! percentile pass over 200,000 timed calls.

use std::hint::black_box;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use criterion::{Criterion, Throughput, criterion_group};
use gitgate::admission::{AdmissionState, Decider, Endpoint, Limits, LogRecorder};
use gitgate::policy::{PolicySet, PolicyStage, StaticNamespaces, parse_documents};

fn fixture(name: &str) -> Vec<u8> {
    let dir = std::env::var_os("GITGATE_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/admission"));
    std::fs::read(dir.join(name)).expect("fixture")
}

fn state() -> AdmissionState {
    let state = AdmissionState::new(Default::default(), Limits::default(), Arc::new(LogRecorder));
    state.publish(Arc::new(Decider::new()));
    state
}

/// Typical rules a platform team binds to Deployments, on top of the
/// built-in library (7, with the provenance gate and
/// gitgate-subresources): 21 policies, all but gitgate-subresources
/// matching the fixture (the bench ids keep their "20-policies" name).
const EXTRA_RULES: &[&str] = &[
    "has(object.metadata.labels) && 'app.kubernetes.io/name' in object.metadata.labels",
    "object.spec.replicas <= 50",
    "!has(object.spec.template.spec.hostNetwork) || object.spec.template.spec.hostNetwork == false",
    "!has(object.spec.template.spec.hostPID) || object.spec.template.spec.hostPID == false",
    "!has(object.spec.template.spec.hostIPC) || object.spec.template.spec.hostIPC == false",
    "object.spec.template.spec.containers.all(c, c.image.startsWith('registry.example.invalid/'))",
    "object.spec.template.spec.containers.all(c, !has(c.ports) || c.ports.all(p, p.containerPort > 1024))",
    "object.metadata.name.matches('^[a-z][a-z0-9-]{0,62}$')",
    "size(object.spec.template.spec.containers) <= 10",
    "object.spec.template.spec.containers.all(c, !has(c.securityContext) || !has(c.securityContext.allowPrivilegeEscalation) || !c.securityContext.allowPrivilegeEscalation)",
    "!has(object.spec.template.spec.serviceAccountName) || object.spec.template.spec.serviceAccountName != 'default'",
    "object.spec.template.spec.containers.all(c, !has(c.env) || c.env.all(e, !e.name.startsWith('AWS_SECRET')))",
    "request.userInfo.username != 'system:anonymous'",
    "!has(object.metadata.annotations) || !('gitgate.dev/break-glass' in object.metadata.annotations) || request.userInfo.groups.exists(g, g == 'system:masters')",
];

const RECONCILER: &str = "system:serviceaccount:gitgate:gitgate";

fn git(dir: &std::path::Path, args: &[&str]) -> String {
    let out = std::process::Command::new("git").args(args).current_dir(dir).output().expect("git");
    assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// A real repository declaring the captured Deployment (app `demo` →
/// `gitops-demo`), rendered into its desired set and provenance snapshot.
fn provenance_snapshot(work: &std::path::Path) -> Arc<gitgate::provenance::Snapshot> {
    use gitgate::render::{RenderOptions, Renderer};
    let review: serde_json::Value = serde_json::from_slice(&fixture("validate-create-deployment.json")).unwrap();
    let o = &review["request"]["object"];
    let manifest = serde_json::json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": o["metadata"]["name"], "labels": o["metadata"]["labels"]},
        "spec": {"replicas": o["spec"]["replicas"], "selector": o["spec"]["selector"], "template": o["spec"]["template"]},
    });
    let repo = work.join("repo");
    std::fs::create_dir_all(repo.join("apps/demo")).unwrap();
    std::fs::write(
        repo.join("gitgate.yaml"),
        "apps:\n  - {name: demo, path: apps/demo, destination: {namespace: gitops-demo}}\n",
    )
    .unwrap();
    std::fs::write(repo.join("apps/demo/web.json"), manifest.to_string()).unwrap();
    git(&repo, &["init", "-q", "-b", "main"]);
    git(&repo, &["add", "-A"]);
    git(&repo, &["-c", "user.name=bench", "-c", "user.email=bench@localhost", "commit", "-q", "-m", "add web"]);
    let source =
        gitgate::source::GitSource::open(&format!("file://{}", repo.display()), &work.join("cache.git")).unwrap();
    source.fetch().unwrap();
    let head = source.resolve("HEAD").unwrap();
    let desired = Renderer::new(RenderOptions::default()).desired(&source.repo(), head).unwrap();
    Arc::new(gitgate::provenance::Snapshot::build(desired, &source.repo()))
}

/// The Deployment review as the reconciler's apply of Git's content.
fn stamped_review(snap: &gitgate::provenance::Snapshot) -> Vec<u8> {
    let mut review: serde_json::Value = serde_json::from_slice(&fixture("validate-create-deployment.json")).unwrap();
    let obj = snap.desired.get("apps", "Deployment", "gitops-demo", "web").unwrap();
    review["request"]["object"]["metadata"]["annotations"] = serde_json::json!({
        "gitgate.dev/digest": obj.digest_string(),
        "gitgate.dev/commit": obj.commit.to_string(),
    });
    review["request"]["userInfo"]["username"] = serde_json::json!(RECONCILER);
    serde_json::to_vec(&review).unwrap()
}

/// The 20 policies and the provenance snapshot of the Git repository.
fn policy_parts() -> (Arc<PolicySet>, Arc<gitgate::provenance::Snapshot>) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("policies");
    let mut docs = Vec::new();
    for path in gitgate::policy::policy_files(&[dir]).unwrap() {
        docs.push(parse_documents(&path.display().to_string(), &std::fs::read_to_string(&path).unwrap()).unwrap());
    }
    for (i, rule) in EXTRA_RULES.iter().enumerate() {
        let yaml = format!(
            "apiVersion: admissionregistration.k8s.io/v1\nkind: ValidatingAdmissionPolicy\nmetadata: {{name: extra-{i}}}\nspec:\n  matchConstraints:\n    resourceRules:\n    - {{apiGroups: [apps], apiVersions: [v1], operations: [CREATE, UPDATE], resources: [deployments]}}\n  validations:\n  - expression: {rule:?}\n---\napiVersion: admissionregistration.k8s.io/v1\nkind: ValidatingAdmissionPolicyBinding\nmetadata: {{name: extra-{i}}}\nspec: {{policyName: extra-{i}, validationActions: [Deny]}}\n"
        );
        docs.push(parse_documents("bench", &yaml).unwrap());
    }
    let set = PolicySet::compile(docs).unwrap();
    assert_eq!(set.len(), 21);
    let work = std::env::temp_dir().join(format!("gitgate-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work);
    let snap = provenance_snapshot(&work);
    let _ = std::fs::write(work.join("review.json"), stamped_review(&snap));
    (Arc::new(set), snap)
}

fn who() -> gitgate::provenance::Identity {
    gitgate::provenance::Identity {
        reconciler: RECONCILER.into(),
        strict: true,
        break_glass_groups: Vec::new(),
        break_glass_ttl: std::time::Duration::from_secs(3600),
    }
}

fn policy_state() -> AdmissionState {
    let (set, snap) = policy_parts();
    let stage = PolicyStage {
        policies: set,
        namespaces: Arc::new(StaticNamespaces::default()),
        reconciler: RECONCILER.into(),
        break_glass_groups: Vec::new(),
    };
    let state = AdmissionState::new(Default::default(), Limits::default(), Arc::new(LogRecorder));
    let provenance = gitgate::provenance::ProvenanceStage {
        snapshot: Arc::new(arc_swap::ArcSwapOption::from(Some(snap))),
        who: who(),
    };
    let decider = Decider::new().with_validating(Arc::new(provenance)).with_validating(Arc::new(stage));
    state.publish(Arc::new(decider));
    state
}

/// The stamped review written by [`policy_state`].
fn stamped_body() -> Vec<u8> {
    std::fs::read(std::env::temp_dir().join(format!("gitgate-bench-{}", std::process::id())).join("review.json"))
        .unwrap()
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    let state = state();
    let mut g = c.benchmark_group("admission");
    for name in ["validate-create-deployment.json", "validate-update-deployment-kubectl-edit-like.json"] {
        let body = fixture(name);
        g.throughput(Throughput::Bytes(body.len() as u64));
        g.bench_function(name.trim_end_matches(".json"), |b| {
            b.iter(|| rt.block_on(state.review(Endpoint::Validate, black_box(&body))).unwrap())
        });
    }
    let with_policies = policy_state();
    let body = stamped_body();
    let out = rt.block_on(with_policies.review(Endpoint::Validate, &body)).unwrap();
    assert!(String::from_utf8_lossy(&out).contains("\"allowed\":true"), "provenance and all 20 policies pass");
    assert!(
        String::from_utf8_lossy(&out).contains("\"app\":\"demo\""),
        "provenance traced it: {}",
        String::from_utf8_lossy(&out)
    );
    g.bench_function("validate-create-deployment+provenance+20-policies", |b| {
        b.iter(|| rt.block_on(with_policies.review(Endpoint::Validate, black_box(&body))).unwrap())
    });
    // subresources (issue 15): a person's status patch of the managed
    // Deployment (denied by gitgate-subresources) and an eviction (allowed)
    for (name, allowed) in
        [("validate-update-deployment-status-by-admin.json", false), ("validate-create-pod-eviction.json", true)]
    {
        let body = fixture(name);
        let out = rt.block_on(with_policies.review(Endpoint::Validate, &body)).unwrap();
        assert_eq!(String::from_utf8_lossy(&out).contains("\"allowed\":true"), allowed, "{name}");
        g.bench_function(format!("subresource: {} + provenance + 20 policies", name.trim_end_matches(".json")), |b| {
            b.iter(|| rt.block_on(with_policies.review(Endpoint::Validate, black_box(&body))).unwrap())
        });
    }
    // what the apiserver bench sends: a ConfigMap where gitgate does not
    // deploy, with and without the stages
    let configmap = fixture("validate-create-configmap-ssa.json");
    g.bench_function("20-policies: configmap outside gitgate's namespaces, no stages", |b| {
        b.iter(|| rt.block_on(state.review(Endpoint::Validate, black_box(&configmap))).unwrap())
    });
    g.bench_function("20-policies: configmap outside gitgate's namespaces, provenance + 20 policies", |b| {
        b.iter(|| rt.block_on(with_policies.review(Endpoint::Validate, black_box(&configmap))).unwrap())
    });
    // where the time goes: each part of that decision alone
    let (set, snap) = policy_parts();
    let req = gitgate::admission::Review::decode(&stamped_body()).unwrap().request;
    g.bench_function("20-policies part: decode", |b| {
        b.iter(|| gitgate::admission::Review::decode(black_box(&body)).unwrap())
    });
    g.bench_function("20-policies part: provenance verify", |b| {
        b.iter(|| gitgate::provenance::verify(&snap, black_box(&req), &who()))
    });
    let facts = gitgate::provenance::verify(&snap, &req, &who());
    assert!(facts.verdict.allowed, "{}", facts.verdict.message);
    let git = gitgate::policy::GitVars::from_facts(&facts, true);
    let namespaces = StaticNamespaces::default();
    g.bench_function("20-policies part: policies", |b| {
        b.iter(|| {
            let mut decision = gitgate::admission::Decision::default();
            set.evaluate(black_box(&req), &namespaces, &git, &mut decision);
            assert!(decision.allowed());
            decision
        })
    });
    g.finish();
}

/// p50/p99/p99.9 over individually timed calls (criterion reports means).
fn percentiles() {
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    let plain = state();
    let with_policies = policy_state();
    let stamped = stamped_body();
    for (label, state, name) in [
        ("no stages", &plain, "validate-create-deployment.json"),
        ("no stages", &plain, "validate-update-deployment-kubectl-edit-like.json"),
        ("provenance + 20 policies", &with_policies, "validate-create-deployment.json (stamped, by the reconciler)"),
        ("provenance + 20 policies", &with_policies, "validate-update-deployment-status-by-admin.json"),
        ("provenance + 20 policies", &with_policies, "validate-create-pod-eviction.json"),
    ] {
        let body = if name.contains("stamped") { stamped.clone() } else { fixture(name) };
        for _ in 0..10_000 {
            rt.block_on(state.review(Endpoint::Validate, &body)).unwrap();
        }
        let mut samples: Vec<u64> = (0..100_000)
            .map(|_| {
                let t = Instant::now();
                black_box(rt.block_on(state.review(Endpoint::Validate, black_box(&body))).unwrap());
                t.elapsed().as_nanos() as u64
            })
            .collect();
        samples.sort_unstable();
        let p = |q: f64| samples[((samples.len() as f64 * q) as usize).min(samples.len() - 1)] as f64 / 1000.0;
        println!(
            "percentiles {name} [{label}] ({} bytes, {} calls): p50 {:.1} µs  p99 {:.1} µs  p99.9 {:.1} µs  max {:.1} µs",
            body.len(),
            samples.len(),
            p(0.50),
            p(0.99),
            p(0.999),
            p(1.0)
        );
    }
}

criterion_group!(benches, bench);

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
    if std::env::args().any(|a| a == "--bench") {
        percentiles();
    }
}
