//! Regular-expression denial of service through CEL's `matches`, `find`
//! and `findAll` (the class of Go's CVE-2022-24921, regexp compile stack
//! exhaustion by deep nesting, and CVE-2022-41715, unbounded memory for a
//! large pattern, which every Go policy engine — Kyverno, Gatekeeper, the
//! apiserver's own CEL — inherited; and of backtracking engines, where a
//! pattern like `(a+)+$` takes exponential time). gitgate's CEL runs the
//! `regex` crate: finite automata, linear in the input, with limits on a
//! pattern's nesting and compiled size. These tests send the patterns
//! through the public policy API with request-sized inputs and hold every
//! answer to the webhook's time budget.

mod support;
use support::server as common;

use std::time::{Duration, Instant};

use gitgate::admission::{AdmissionRequest, Decision, Review};
use gitgate::policy::{GitVars, PolicySet, StaticNamespaces, parse_documents};
use serde_json::json;

/// The chart's `webhook.timeoutSeconds`: the apiserver gives up on the
/// webhook after this.
const WEBHOOK_TIMEOUT: Duration = Duration::from_secs(5);

fn policy(expressions: &[&str]) -> PolicySet {
    let validations: Vec<_> =
        expressions.iter().map(|e| json!({"expression": e, "message": format!("failed: {e}")})).collect();
    let policy = json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": "regex"},
        "spec": {
            "failurePolicy": "Fail",
            "matchConstraints": {"resourceRules": [{
                "apiGroups": ["*"], "apiVersions": ["*"], "operations": ["*"], "resources": ["*"],
            }]},
            "validations": validations,
        },
    });
    let binding = json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicyBinding",
        "metadata": {"name": "regex"},
        "spec": {"policyName": "regex", "validationActions": ["Deny"]},
    });
    PolicySet::compile(vec![parse_documents("regex.yaml", &format!("{policy}\n---\n{binding}\n")).unwrap()]).unwrap()
}

/// The captured ConfigMap create, with `value` as `data.v` and `pattern`
/// as the annotation `p` (a pattern taken from the request).
fn request(value: &str, pattern: &str) -> AdmissionRequest {
    let mut review: serde_json::Value =
        serde_json::from_slice(&common::fixture("validate-create-configmap-ssa.json")).unwrap();
    review["request"]["object"]["data"] = json!({ "v": value });
    review["request"]["object"]["metadata"]["annotations"] = json!({ "p": pattern });
    let body = serde_json::to_vec(&review).unwrap();
    assert!(body.len() < 4 * 1024 * 1024, "the request fits gitgate's body limit");
    Review::decode(&body).unwrap().request
}

fn decide(set: &PolicySet, req: &AdmissionRequest) -> (Decision, Duration) {
    let start = Instant::now();
    let mut d = Decision::default();
    set.evaluate(req, &StaticNamespaces::default(), &GitVars::default(), &mut d);
    (d, start.elapsed())
}

fn denial(d: &Decision) -> String {
    d.denial.as_ref().map(|x| x.message.clone()).unwrap_or_default()
}

/// Catastrophic-backtracking patterns over a 3 MiB string (the largest a
/// request under gitgate's 4 MiB body limit can carry): each answers
/// correctly, and well within the webhook's timeout — in a policy literal
/// and as a pattern the request itself supplies.
#[test]
fn catastrophic_patterns_over_a_huge_input_answer_within_the_webhook_timeout() {
    let input = format!("{}!", "a".repeat(3 * 1024 * 1024));
    let req = request(&input, "(a|aa)+$");
    let cases = [
        // (expression, whether it holds for "aaa…a!")
        ("object.data.v.matches('(a+)+$')", false),
        ("object.data.v.matches('^(a|a?)+$')", false),
        ("object.data.v.matches('(a|aa)*c')", false),
        ("object.data.v.matches('(.*a){12}!')", true),
        ("object.data.v.find('(x+x+)+y') == ''", true),
        ("object.data.v.findAll('(a*)*!', 1)[0] == object.data.v", true),
        ("object.data.v.matches(object.metadata.annotations.p)", false),
    ];
    for (expr, holds) in cases {
        let set = policy(&[expr]);
        let (d, took) = decide(&set, &req);
        assert_eq!(d.allowed(), holds, "{expr}: {}", denial(&d));
        if !holds {
            assert!(denial(&d).contains("failed:"), "{expr} is evaluated, not refused: {}", denial(&d));
        }
        assert!(took < WEBHOOK_TIMEOUT, "{expr} took {took:?} on a {} byte input", input.len());
    }
}

/// Patterns a request supplies that are too deep or too large to compile
/// (CVE-2022-24921: 30,000 nested groups; CVE-2022-41715: a pattern whose
/// automaton would take gigabytes) are an evaluation error — the request is
/// denied by the policy's failurePolicy, naming the error — never a stack
/// overflow, an out-of-memory or a hang.
#[test]
fn patterns_too_deep_or_too_large_to_compile_are_refused_not_run() {
    let set = policy(&["object.data.v.matches(object.metadata.annotations.p)"]);
    let deep = format!("{}a{}", "(".repeat(30_000), ")".repeat(30_000));
    let repeated = "(?:a{1000}){1000}".to_owned();
    let wide = "\\w{500}".repeat(50);
    let long = "[a-z0-9]".repeat(200_000);
    // Longer than gitgate compiles at all: refused before it is parsed.
    let huge = "a".repeat(3 * 1024 * 1024);
    let classes = "[a-z0-9]".repeat(8_000);
    for (what, pattern) in [
        ("deep", deep),
        ("repeated", repeated),
        ("unicode", wide),
        ("long", long),
        ("huge", huge),
        ("classes", classes),
    ] {
        let (d, took) = decide(&set, &request("aaaa", &pattern));
        let msg = denial(&d);
        assert!(!d.allowed(), "{what}: a pattern that cannot compile must not pass");
        assert!(msg.contains("regex"), "{what}: the denial names the regex error: {msg}");
        assert!(took < WEBHOOK_TIMEOUT, "{what} ({} bytes) took {took:?}", pattern.len());
    }
    // Under the limits, a request-supplied pattern works.
    let (d, _) = decide(&set, &request("aaaa", "^a{4}$"));
    assert!(d.allowed(), "{}", denial(&d));
}
