//! CEL `authorizer` checks (issue 20, item 3): targets cached p99 ≤ 20 µs,
//! uncached one SubjectAccessReview round trip.
//!
//! `cargo bench --bench authz` times, per request, the policy stage of
//! `/validate` (`AuthorizingPolicyStage::decide`, the request from the
//! authenticated apiserver) over a Deployment create:
//! - `baseline`: a policy whose validation is `true` (no authorizer);
//! - `cached`: a policy with one `authorizer...check('get').allowed()`,
//!   answered from the cache (what every request after the first of a
//!   user within the TTL costs);
//! - `interpreter`: a policy without authorizer that the interpreter runs
//!   (the request's context converted, as for any check);
//! - `check_alone_cached`: one `check('get').allowed()` expression in a
//!   context holding only `authorizer`, answered from the cache;
//! - `uncached`: the same with an empty cache, so one SubjectAccessReview
//!   to an in-process mocked apiserver (kube client, JSON both ways: the
//!   round trip without the network) and a second evaluation.
//!
//! With `AUTHZ_BENCH_KUBECONFIG` set, `uncached_real_apiserver` also times
//! the review against that cluster. Each row: 7 alternating rounds of
//! 20,000 (uncached: 2,000) individually timed requests; the medians of
//! the rounds' p50 and p99.

use std::hint::black_box;
use std::sync::Arc;
use std::time::Instant;

use gitgate::admission::{AdmissionRequest, AsyncStage, Caller, Decision};
use gitgate::policy::authz::{self, Reviewer};
use gitgate::policy::{AuthorizingPolicyStage, PolicySet, PolicyStage, StaticNamespaces, parse_documents};
use kube::client::Body;
use kube_cel::KubeCelExt as _;
use kube_cel::cel::{Context, Value};
use serde_json::json;

fn policy(expression: &str) -> Arc<PolicySet> {
    let text = format!(
        r#"apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicy
metadata: {{name: bench}}
spec:
  failurePolicy: Fail
  matchConstraints:
    resourceRules:
    - {{apiGroups: [apps], apiVersions: [v1], operations: [CREATE], resources: [deployments]}}
  validations:
  - expression: "{expression}"
---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicyBinding
metadata: {{name: bench}}
spec: {{policyName: bench, validationActions: [Deny]}}
"#
    );
    Arc::new(PolicySet::compile(vec![parse_documents("bench.yaml", &text).unwrap()]).unwrap())
}

fn request() -> AdmissionRequest {
    let body = std::fs::read(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/admission/validate-create-deployment.json"),
    )
    .unwrap();
    let mut req = gitgate::admission::Review::decode(&body).unwrap().request;
    req.caller = Caller::Apiserver;
    req
}

fn stage(policies: Arc<PolicySet>, reviewer: Arc<Reviewer>) -> AuthorizingPolicyStage {
    AuthorizingPolicyStage {
        stage: PolicyStage {
            policies,
            namespaces: Arc::new(StaticNamespaces::default()),
            reconciler: "gitgate".into(),
            break_glass_groups: Vec::new(),
        },
        reviewer: Some(reviewer),
    }
}

/// An "apiserver" allowing every SubjectAccessReview.
fn mocked() -> kube::Client {
    let svc = tower::service_fn(|req: http::Request<Body>| async move {
        let body = req.into_body().collect_bytes().await.unwrap();
        let sent: serde_json::Value = serde_json::from_slice(&body).unwrap();
        let reply = json!({"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview", "metadata": {},
            "spec": sent["spec"], "status": {"allowed": true, "reason": "RBAC: allowed"}});
        Ok::<_, std::convert::Infallible>(
            http::Response::builder().status(201).body(Body::from(serde_json::to_vec(&reply).unwrap())).unwrap(),
        )
    });
    kube::Client::new(svc, "default")
}

fn time(rt: &tokio::runtime::Runtime, n: usize, mut one: impl FnMut() -> Decision) -> (f64, f64) {
    let _ = rt;
    let mut samples: Vec<u64> = (0..n)
        .map(|_| {
            let t = Instant::now();
            let d = black_box(one());
            let e = t.elapsed().as_nanos() as u64;
            assert!(d.denial.is_none(), "{:?}", d.denial);
            e
        })
        .collect();
    samples.sort_unstable();
    let p = |q: f64| samples[((samples.len() as f64 * q) as usize).min(samples.len() - 1)] as f64 / 1000.0;
    (p(0.50), p(0.99))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let _runtime = rt.enter();
    let req = request();
    let check = "authorizer.group('').resource('secrets').namespace(object.metadata.namespace).check('get').allowed()";
    let client = mocked();
    let baseline = stage(policy("true"), Arc::new(Reviewer::new(client.clone())));
    // the same request through the interpreter (bytes literals are not on
    // the fast path), without authorizer: the context's conversion
    let interpreter = stage(
        policy("object.metadata.namespace == object.metadata.namespace && b'' == b''"),
        Arc::new(Reviewer::new(client.clone())),
    );
    let cached = stage(policy(check), Arc::new(Reviewer::new(client.clone())));
    let uncached_set = policy(check);
    let real = std::env::var_os("AUTHZ_BENCH_KUBECONFIG").map(|path| {
        rt.block_on(async {
            let kc = kube::config::Kubeconfig::read_from(path).unwrap();
            let config = kube::Config::from_custom_kubeconfig(kc, &Default::default()).await.unwrap();
            kube::Client::try_from(config).unwrap()
        })
    });
    // the check alone: one expression in a context holding only
    // `authorizer`, its answer in the cache
    let warm = Arc::new(Reviewer::new(client.clone()));
    let mut ctx = Context::default().with_all();
    gitgate::policy::functions::register(&mut ctx);
    authz::register(&mut ctx);
    let check_alone = gitgate::policy::lang::compile(
        "authorizer.group('').resource('secrets').namespace('web').check('get').allowed()",
    )
    .unwrap();
    let one_check = |ctx: &mut Context<'static>| {
        let known = authz::Known { cache: warm.cache.clone(), resolved: Default::default() };
        let session = Arc::new(authz::Session::new(Arc::new(known)));
        ctx.add_variable_from_value("authorizer", authz::authorizer(&req, Ok(session.clone())));
        let v = Value::resolve(&check_alone, ctx);
        (v, session.pending())
    };
    let (_, pending) = one_check(&mut ctx);
    for check in pending {
        rt.block_on(warm.resolve(&check));
    }
    assert_eq!(one_check(&mut ctx).0, Ok(Value::Bool(true)));
    let decide = |s: &AuthorizingPolicyStage| {
        let mut d = Decision::default();
        rt.block_on(s.decide(&req, &mut d));
        d
    };
    // warm up (and fill the cache)
    for _ in 0..2_000 {
        decide(&baseline);
        decide(&cached);
    }
    assert_eq!(cached.reviewer.as_ref().unwrap().cache.len(), 1);
    let mut rows: Vec<(&str, Vec<f64>, Vec<f64>)> = vec![
        ("baseline", vec![], vec![]),
        ("interpreter", vec![], vec![]),
        ("cached", vec![], vec![]),
        ("check_alone_cached", vec![], vec![]),
    ];
    rows.push(("uncached", vec![], vec![]));
    if real.is_some() {
        rows.push(("uncached_real_apiserver", vec![], vec![]));
    }
    for _round in 0..7 {
        for (name, p50s, p99s) in rows.iter_mut() {
            let (p50, p99) = match *name {
                "baseline" => time(&rt, 20_000, || decide(&baseline)),
                "cached" => time(&rt, 20_000, || decide(&cached)),
                "interpreter" => time(&rt, 20_000, || decide(&interpreter)),
                "check_alone_cached" => time(&rt, 20_000, || {
                    let (mut v, pending) = one_check(&mut ctx);
                    // the answer expires every 10 s (CACHE_TTL): asked again,
                    // as a request would
                    if !pending.is_empty() {
                        for check in pending {
                            rt.block_on(warm.resolve(&check));
                        }
                        v = one_check(&mut ctx).0;
                    }
                    assert_eq!(v, Ok(Value::Bool(true)));
                    Decision::default()
                }),
                "uncached" => time(&rt, 2_000, || {
                    let s = stage(uncached_set.clone(), Arc::new(Reviewer::new(client.clone())));
                    decide(&s)
                }),
                _ => time(&rt, 200, || {
                    let s = stage(uncached_set.clone(), Arc::new(Reviewer::new(real.clone().unwrap())));
                    let mut d = decide(&s);
                    // the real cluster answers for its own users: any answer will do
                    d.denial = None;
                    d
                }),
            };
            p50s.push(p50);
            p99s.push(p99);
        }
    }
    for (name, p50s, p99s) in rows {
        println!("authz {name}: p50 {:.1} µs  p99 {:.1} µs  (medians of 7 rounds)", median(p50s), median(p99s));
    }
}
