//! Optional types and `type()` against the `has()` chains they replace, on
//! the same request: each variant is a one-validation policy evaluated by
//! `PolicySet::evaluate` over the captured Deployment. Medians of 7
//! alternating rounds (each variant timed in turn, round after round), and
//! the ratio optional/has per pair.
//!
//! `cargo bench --bench cel_features`

use std::hint::black_box;
use std::time::Instant;

use gitgate::admission::{Decision, Review};
use gitgate::policy::{GitVars, PolicySet, StaticNamespaces, parse_documents};

const PAIRS: &[(&str, &str, &str)] = &[
    (
        "replicas with a default",
        "!has(object.spec) || !has(object.spec.replicas) || object.spec.replicas <= 5",
        "object.?spec.?replicas.orValue(1) <= 5",
    ),
    (
        "a label's value",
        "has(object.metadata.labels) && 'app' in object.metadata.labels && object.metadata.labels['app'] != ''",
        "object.metadata.?labels[?'app'].orValue('') != ''",
    ),
    (
        "a nested optional field",
        "!has(object.spec.template.spec.securityContext) || !has(object.spec.template.spec.securityContext.runAsNonRoot) || object.spec.template.spec.securityContext.runAsNonRoot",
        "object.spec.template.spec.?securityContext.?runAsNonRoot.orValue(true)",
    ),
    ("a field's type", "has(object.metadata.labels)", "type(object.metadata.labels) == map"),
];

fn set(expression: &str) -> PolicySet {
    let yaml = format!(
        "apiVersion: admissionregistration.k8s.io/v1\nkind: ValidatingAdmissionPolicy\nmetadata: {{name: p}}\nspec:\n  matchConstraints:\n    resourceRules:\n    - {{apiGroups: [apps], apiVersions: [v1], operations: [CREATE, UPDATE], resources: [deployments]}}\n  validations:\n  - expression: {expression:?}\n---\napiVersion: admissionregistration.k8s.io/v1\nkind: ValidatingAdmissionPolicyBinding\nmetadata: {{name: p}}\nspec: {{policyName: p, validationActions: [Deny]}}\n"
    );
    PolicySet::compile(vec![parse_documents("bench", &yaml).unwrap()]).unwrap()
}

fn main() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/admission/validate-create-deployment.json");
    let req = Review::decode(&std::fs::read(path).unwrap()).unwrap().request;
    let namespaces = StaticNamespaces::default();
    let git = GitVars::default();
    let run = |s: &PolicySet, n: u32| {
        let t = Instant::now();
        for _ in 0..n {
            let mut d = Decision::default();
            s.evaluate(black_box(&req), &namespaces, &git, &mut d);
            black_box(d);
        }
        t.elapsed().as_nanos() as f64 / f64::from(n)
    };
    const N: u32 = 20_000;
    const ROUNDS: usize = 7;
    println!(
        "| pair | has() chain, median ns | optional/type(), median ns | ratio (medians of {ROUNDS} alternating rounds) |"
    );
    println!("| --- | --- | --- | --- |");
    for (name, has, optional) in PAIRS {
        let (a, b) = (set(has), set(optional));
        // the same decision either way
        let decide = |s: &PolicySet| {
            let mut d = Decision::default();
            s.evaluate(&req, &namespaces, &git, &mut d);
            d.allowed()
        };
        assert_eq!(decide(&a), decide(&b), "{name}");
        run(&a, N);
        run(&b, N);
        let mut times_a = Vec::new();
        let mut times_b = Vec::new();
        let mut ratios = Vec::new();
        for _ in 0..ROUNDS {
            let ta = run(&a, N);
            let tb = run(&b, N);
            times_a.push(ta);
            times_b.push(tb);
            ratios.push(tb / ta);
        }
        let median = |v: &mut Vec<f64>| {
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        };
        println!("| {name} | {:.0} | {:.0} | {:.2} |", median(&mut times_a), median(&mut times_b), median(&mut ratios));
    }
}
