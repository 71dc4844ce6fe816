//! The CEL policy engine against ValidatingAdmissionPolicy semantics, fed
//! with the AdmissionReviews captured from a real kube-apiserver.

mod support;
use support::server as common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use gitgate::admission::{self, AdmissionRequest, Decider, Decision, Limits, Review};
use gitgate::policy::{GitVars, PolicyError, PolicySet, PolicyStage, StaticNamespaces, parse_documents};
use serde_json::{Value, json};
use tower::ServiceExt as _;

/// A policy (with `spec` given as YAML) plus a binding with `actions`.
fn set(spec: &str, actions: &str) -> Result<PolicySet, PolicyError> {
    let indented: String = spec.lines().map(|l| format!("  {l}\n")).collect();
    let yaml = format!(
        "apiVersion: admissionregistration.k8s.io/v1\nkind: ValidatingAdmissionPolicy\nmetadata:\n  name: p\nspec:\n{indented}---\n\
         apiVersion: admissionregistration.k8s.io/v1\nkind: ValidatingAdmissionPolicyBinding\nmetadata:\n  name: b\nspec:\n  policyName: p\n  validationActions: {actions}\n"
    );
    PolicySet::compile(vec![parse_documents("test.yaml", &yaml)?])
}

const ALL: &str = "matchConstraints:\n  resourceRules:\n  - {apiGroups: ['*'], apiVersions: ['*'], operations: ['*'], resources: ['*/*']}\n";

fn request(fixture: &str) -> AdmissionRequest {
    Review::decode(&common::fixture(fixture)).unwrap().request
}

fn decide(set: &PolicySet, req: &AdmissionRequest) -> Decision {
    decide_with(set, req, &GitVars::default(), &StaticNamespaces::default())
}

fn decide_with(set: &PolicySet, req: &AdmissionRequest, git: &GitVars, ns: &StaticNamespaces) -> Decision {
    let mut d = Decision::default();
    set.evaluate(req, ns, git, &mut d);
    d
}

fn denied(d: &Decision) -> String {
    d.denial.as_ref().map(|x| x.message.clone()).unwrap_or_default()
}

#[test]
fn integers_compare_as_kubernetes_does() {
    // the number trap: positive JSON integers must be CEL ints
    let s = set(
        &format!("{ALL}validations:\n- expression: object.spec.replicas == 1 && object.spec.replicas + 1 == 2 && object.spec.replicas < 3\n"),
        "[Deny]",
    )
    .unwrap();
    let d = decide(&s, &request("validate-create-deployment.json"));
    assert!(d.allowed(), "{}", denied(&d));
}

#[test]
fn match_constraints_operations_resources_subresources_names_scope() {
    let spec = "matchConstraints:\n  resourceRules:\n  - {apiGroups: [apps], apiVersions: [v1], operations: [UPDATE], resources: [deployments/scale]}\nvalidations:\n- expression: 'false'\n  message: scale is refused\n";
    let s = set(spec, "[Deny]").unwrap();
    assert_eq!(
        denied(&decide(&s, &request("validate-scale-deployment.json"))),
        "ValidatingAdmissionPolicy 'p' with binding 'b' denied request: scale is refused"
    );
    assert!(
        decide(&s, &request("validate-update-deployment-kubectl-edit-like.json")).allowed(),
        "the main resource is not its scale subresource"
    );
    assert!(decide(&s, &request("validate-update-deployment-status-by-controller.json")).allowed());

    let spec = "matchConstraints:\n  resourceRules:\n  - {apiGroups: ['*'], apiVersions: ['*'], operations: ['*'], resources: ['*']}\n  excludeResourceRules:\n  - {apiGroups: [''], apiVersions: [v1], operations: ['*'], resources: [namespaces]}\nvalidations:\n- expression: 'false'\n";
    let s = set(spec, "[Deny]").unwrap();
    assert!(!decide(&s, &request("validate-create-configmap-ssa.json")).allowed());
    assert!(decide(&s, &request("validate-create-namespace.json")).allowed(), "excluded");
    assert!(
        decide(&s, &request("validate-update-deployment-status-by-controller.json")).allowed(),
        "'*' does not match subresources"
    );

    // "*/*" is every resource and every subresource, as the apiserver reads
    // it; "*/*" beside another resource is refused, as the apiserver does
    let spec = "matchConstraints:\n  resourceRules:\n  - {apiGroups: ['*'], apiVersions: ['*'], operations: ['*'], resources: ['*/*']}\n  excludeResourceRules:\n  - {apiGroups: ['*'], apiVersions: ['*'], operations: ['*'], resources: ['*/scale']}\nvalidations:\n- expression: 'false'\n";
    let s = set(spec, "[Deny]").unwrap();
    assert!(!decide(&s, &request("validate-create-configmap-ssa.json")).allowed(), "the main resource");
    assert!(!decide(&s, &request("validate-update-deployment-status-by-controller.json")).allowed());
    assert!(decide(&s, &request("validate-scale-deployment.json")).allowed(), "excluded");
    let err = set(&spec.replace("['*/*']}", "['*', '*/*']}"), "[Deny]").err().unwrap();
    assert!(err.to_string().contains("'*/*'"), "{err}");

    let spec = "matchConstraints:\n  resourceRules:\n  - {apiGroups: ['*'], apiVersions: ['*'], operations: ['*'], resources: ['*'], scope: Cluster}\nvalidations:\n- expression: 'false'\n";
    let s = set(spec, "[Deny]").unwrap();
    assert!(!decide(&s, &request("validate-create-namespace.json")).allowed());
    assert!(
        decide(&s, &request("validate-create-configmap-ssa.json")).allowed(),
        "namespaced objects are out of Cluster scope"
    );

    let spec = "matchConstraints:\n  resourceRules:\n  - {apiGroups: ['*'], apiVersions: ['*'], operations: [DELETE], resources: ['*'], resourceNames: [nothing-else]}\nvalidations:\n- expression: 'false'\n";
    let s = set(spec, "[Deny]").unwrap();
    assert!(decide(&s, &request("validate-delete-configmap.json")).allowed(), "not the named object");
}

#[test]
fn match_conditions_variables_and_messages() {
    let spec = format!(
        "{ALL}matchConditions:\n- name: only-deployments\n  expression: request.kind.kind == 'Deployment'\n\
         variables:\n- name: image\n  expression: object.spec.template.spec.containers[0].image\n\
         - name: tag\n  expression: variables.image.split(':')[1]\n\
         validations:\n- expression: variables.tag == '2.0.0'\n  messageExpression: \"'tag ' + variables.tag + ' of ' + request.name + ' is not 2.0.0'\"\n  reason: Forbidden\n"
    );
    let s = set(&spec, "[Deny]").unwrap();
    let d = decide(&s, &request("validate-create-deployment.json"));
    let denial = d.denial.unwrap();
    assert_eq!(denial.code, 403);
    assert_eq!(denial.reason, "Forbidden");
    assert!(denial.message.ends_with("tag 1.0.0 of web is not 2.0.0"), "{}", denial.message);
    assert!(decide(&s, &request("validate-create-configmap-ssa.json")).allowed(), "the match condition is false");

    // no message: the expression is quoted; no reason: Invalid, 422
    let s = set(&format!("{ALL}validations:\n- expression: request.name == 'x'\n"), "[Deny]").unwrap();
    let denial = decide(&s, &request("validate-create-configmap-ssa.json")).denial.unwrap();
    assert_eq!(denial.code, 422);
    assert!(denial.message.ends_with("failed expression: request.name == 'x'"), "{}", denial.message);
}

#[test]
fn variables_keep_their_meaning_when_a_comprehension_reuses_a_name() {
    // `object` inside the comprehension is the iteration variable; the
    // variable must still mean the request's object
    let spec = format!(
        "{ALL}variables:\n- name: name\n  expression: object.metadata.name\n\
         validations:\n- expression: \"[1, 2].all(object, variables.name == 'web' && object > 0)\"\n"
    );
    let s = set(&spec, "[Deny]").unwrap();
    let d = decide(&s, &request("validate-create-deployment.json"));
    assert!(d.allowed(), "{}", denied(&d));
    // and a variable used in a message expression and by another variable
    let spec = format!(
        "{ALL}variables:\n- name: spec\n  expression: object.spec.template.spec\n\
         - name: images\n  expression: variables.spec.containers.map(c, c.image)\n\
         validations:\n- expression: size(variables.images) == 2\n  messageExpression: \"'images: ' + variables.images.join(',')\"\n"
    );
    let s = set(&spec, "[Deny]").unwrap();
    assert!(
        denied(&decide(&s, &request("validate-create-deployment.json")))
            .ends_with("images: registry.example.invalid/demo/web:1.0.0")
    );
}

#[test]
fn failure_policy_decides_errors() {
    let spec = format!("{ALL}validations:\n- expression: object.spec.nothing.here == 1\n");
    let s = set(&spec, "[Deny]").unwrap();
    let msg = denied(&decide(&s, &request("validate-create-configmap-ssa.json")));
    assert!(msg.contains("resulted in error"), "{msg}");
    let s = set(&format!("failurePolicy: Ignore\n{spec}"), "[Deny]").unwrap();
    assert!(decide(&s, &request("validate-create-configmap-ssa.json")).allowed());
    let s = set(&format!("{ALL}validations:\n- expression: \"'not a bool'\"\n"), "[Deny]").unwrap();
    assert!(denied(&decide(&s, &request("validate-create-configmap-ssa.json"))).contains("did not return a bool"));
}

#[test]
fn warn_and_audit_actions_and_audit_annotations() {
    let spec = format!(
        "{ALL}validations:\n- expression: 'false'\n  message: looks wrong\n\
         auditAnnotations:\n- key: who\n  valueExpression: request.userInfo.username\n"
    );
    let s = set(&spec, "[Warn, Audit]").unwrap();
    let d = decide(&s, &request("validate-create-configmap-ssa.json"));
    assert!(d.allowed());
    assert_eq!(d.warnings, vec!["Validation failed for ValidatingAdmissionPolicy 'p' with binding 'b': looks wrong"]);
    let failures: Value =
        serde_json::from_str(&d.audit_annotations["validation.policy.admission.k8s.io/validation_failure"]).unwrap();
    assert_eq!(failures[0]["message"], "looks wrong");
    assert_eq!(failures[0]["validationActions"], json!(["Warn", "Audit"]));
    assert_eq!(d.audit_annotations["p/who"], "kubernetes-admin");
    assert!(set(&spec, "[Deny, Warn]").is_err(), "Deny and Warn together are refused, as by the apiserver");
}

#[test]
fn selectors_use_namespace_and_object_labels() {
    let spec = format!("{ALL}validations:\n- expression: 'false'\n");
    let indented: String = spec.lines().map(|l| format!("  {l}\n")).collect();
    let yaml = format!(
        "apiVersion: admissionregistration.k8s.io/v1\nkind: ValidatingAdmissionPolicy\nmetadata: {{name: p}}\nspec:\n{indented}---\n\
         apiVersion: admissionregistration.k8s.io/v1\nkind: ValidatingAdmissionPolicyBinding\nmetadata: {{name: b}}\nspec:\n  policyName: p\n  validationActions: [Deny]\n  matchResources:\n    namespaceSelector: {{matchLabels: {{environment: production}}}}\n    objectSelector: {{matchExpressions: [{{key: app.kubernetes.io/name, operator: In, values: [web]}}]}}\n"
    );
    let s = PolicySet::compile(vec![parse_documents("t.yaml", &yaml).unwrap()]).unwrap();
    let req = request("validate-create-deployment.json");
    let mut ns = StaticNamespaces::default();
    assert!(decide_with(&s, &req, &GitVars::default(), &ns).allowed(), "an unknown namespace has no labels");
    ns.0.insert(
        "gitops-demo".into(),
        Arc::new(json!({"metadata": {"name": "gitops-demo", "labels": {"environment": "production"}}})),
    );
    assert!(!decide_with(&s, &req, &GitVars::default(), &ns).allowed());
    let mut other = request("validate-create-configmap-ssa.json");
    other.object.as_mut().unwrap()["metadata"]["labels"] = json!({"app.kubernetes.io/name": "api"});
    assert!(decide_with(&s, &other, &GitVars::default(), &ns).allowed(), "object selector");
}

#[test]
fn the_git_variable_is_bound() {
    let s = set(&format!("{ALL}validations:\n- expression: git.managed && git.signed && git.app == 'web' && git.commit.startsWith('3f2a')\n"), "[Deny]").unwrap();
    let git =
        GitVars { commit: "3f2a9c1".into(), app: "web".into(), signed: true, managed: true, ..Default::default() };
    assert!(decide_with(&s, &request("validate-create-deployment.json"), &git, &StaticNamespaces::default()).allowed());
    assert!(!decide(&s, &request("validate-create-deployment.json")).allowed());
}

#[test]
fn a_runaway_expression_is_stopped_by_the_cost_limit_before_it_runs() {
    let s = set(&format!("{ALL}validations:\n- expression: object.data.all(a, object.data.all(b, object.data.all(c, size(a) + size(b) + size(c) > 0)))\n"), "[Deny]").unwrap();
    let mut req = request("validate-create-configmap-ssa.json");
    let data: serde_json::Map<String, Value> = (0..3000).map(|i| (format!("k{i}"), json!("v"))).collect();
    req.object.as_mut().unwrap()["data"] = Value::Object(data);
    let started = Instant::now();
    let msg = denied(&decide(&s, &req));
    assert!(msg.contains("exceeds the per-expression limit"), "{msg}");
    assert!(started.elapsed() < Duration::from_secs(2), "it must not run the 27-billion-step walk");
    // the same policy on a small object runs and passes
    assert!(decide(&s, &request("validate-create-configmap-ssa.json")).allowed());
}

#[test]
fn evaluation_errors_on_secrets_never_quote_values() {
    let s = set(&format!("{ALL}validations:\n- expression: object.data.password + 1 == 2\n"), "[Deny]").unwrap();
    let req = request("validate-create-secret-stringdata.json");
    let password = req.object.as_ref().unwrap()["data"]["password"].as_str().unwrap().to_owned();
    let msg = denied(&decide(&s, &req));
    assert!(msg.contains("resulted in error: evaluation failed"), "{msg}");
    assert!(!msg.contains(&password));
}

#[test]
fn load_errors_name_the_file_and_the_problem() {
    let err =
        set("matchConstraints:\n  resourceRules: []\nvalidations:\n- expression: 'true'\n", "[Deny]").unwrap_err();
    assert!(err.to_string().contains("resourceRules must not be empty"), "{err}");
    let err = set(&format!("{ALL}validations:\n- expression: cel.bind(x, 1, x == 1)\n"), "[Deny]").unwrap_err();
    assert!(err.to_string().contains("cel.bind is not supported"), "{err}");
    let err = set(&format!("{ALL}validations:\n- expression: 'object.spec.(('\n"), "[Deny]").unwrap_err();
    assert!(err.to_string().starts_with("test.yaml: policy \"p\": failed to compile validation 0"), "{err}");
    let err = set(
        &format!("{ALL}paramKind: {{apiVersion: v1, kind: ConfigMap}}\nvalidations:\n- expression: 'true'\n"),
        "[Deny]",
    )
    .unwrap_err();
    assert!(err.to_string().contains("paramKind is not supported"), "{err}");
    let err = parse_documents("x.yaml", "apiVersion: v1\nkind: ConfigMap\n").unwrap_err();
    assert!(err.to_string().contains("x.yaml: document 0 has kind \"ConfigMap\""), "{err}");
    let yaml = "apiVersion: admissionregistration.k8s.io/v1\nkind: ValidatingAdmissionPolicyBinding\nmetadata: {name: b}\nspec: {policyName: ghost, validationActions: [Deny]}\n";
    let err = PolicySet::compile(vec![parse_documents("b.yaml", yaml).unwrap()]).err().unwrap();
    assert!(err.to_string().contains("refers to policy \"ghost\""), "{err}");
}

#[test]
fn the_built_in_library_loads_and_warns_about_nothing() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
    let s = PolicySet::load(&[dir]).unwrap();
    assert!(s.warnings.is_empty(), "{:?}", s.warnings);
    assert_eq!(s.len(), 7);
}

/// A policy directory from before `gitgate-subresources` (its own copy of
/// the provenance gate only) still gets the built-in subresource rules,
/// and is not refused for defining the provenance gate twice.
#[test]
fn an_older_provenance_file_still_gets_the_built_in_subresource_rules() {
    let dir = tempfile::tempdir().unwrap();
    let builtin = gitgate::policy::BUILTIN_PROVENANCE;
    let older = builtin.split("\n---\n# Every subresource").next().unwrap();
    assert!(!older.contains("name: gitgate-subresources") && older.contains("name: gitgate-provenance"));
    std::fs::write(dir.path().join("provenance.yaml"), older).unwrap();
    let s = PolicySet::load_over_builtin(&[dir.path().to_path_buf()]).unwrap();
    assert!(s.has_policy("gitgate-provenance") && s.has_policy("gitgate-subresources"));
    assert_eq!(s.len(), 2);
    // a file that defines both replaces both
    std::fs::write(dir.path().join("provenance.yaml"), builtin).unwrap();
    assert_eq!(PolicySet::load_over_builtin(&[dir.path().to_path_buf()]).unwrap().len(), 2);
}

#[tokio::test]
async fn the_policy_stage_denies_through_the_router() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
    let stage = PolicyStage {
        policies: Arc::new(PolicySet::load(&[dir]).unwrap()),
        namespaces: Arc::new(StaticNamespaces::default()),
        reconciler: "system:serviceaccount:gitgate:gitgate".into(),
        break_glass_groups: Vec::new(),
    };
    let app = admission::router(common::state_with(Decider::new().with_validating(Arc::new(stage)), Limits::default()));
    let mut review: Value = serde_json::from_slice(&common::fixture("validate-create-deployment.json")).unwrap();
    let send = |review: Value| {
        let app = app.clone();
        async move {
            let req = axum::http::Request::post("/validate")
                .body(axum::body::Body::from(serde_json::to_vec(&review).unwrap()))
                .unwrap();
            let resp = app.oneshot(req).await.unwrap();
            let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX).await.unwrap();
            serde_json::from_slice::<Value>(&bytes).unwrap()
        }
    };
    assert_eq!(send(review.clone()).await["response"]["allowed"], true);
    review["request"]["object"]["spec"]["template"]["spec"]["containers"][0]["image"] = json!("nginx:latest");
    let got = send(review).await;
    assert_eq!(got["response"]["allowed"], false);
    assert_eq!(got["response"]["status"]["code"], 403);
    let msg = got["response"]["status"]["message"].as_str().unwrap();
    assert!(msg.contains("no-latest-tag") && msg.contains("web=nginx:latest"), "{msg}");
}

#[test]
fn policy_test_fails_on_a_wrong_expectation() {
    let dir = tempfile::tempdir().unwrap();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
    std::fs::create_dir(dir.path().join("tests")).unwrap();
    std::fs::copy(root.join("no-latest-tag.yaml"), dir.path().join("no-latest-tag.yaml")).unwrap();
    std::fs::write(
        dir.path().join("tests/wrong.yaml"),
        "policy: no-latest-tag\ncases:\n- name: latest is wrongly expected to pass\n  expect: allow\n  object: {apiVersion: v1, kind: Pod, metadata: {name: p, namespace: d}, spec: {containers: [{name: a, image: 'x:latest'}]}}\n",
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_gitgate"))
        .args(["policy", "test"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("FAIL") && stdout.contains("0 passed, 1 failed"), "{stdout}");

    let out =
        std::process::Command::new(env!("CARGO_BIN_EXE_gitgate")).args(["policy", "test"]).arg(&root).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
}

/// Every policy of the differential corpus (tests/e2e/differential.rs)
/// passes its fixtures: the Kubernetes documentation's examples, gitgate's
/// optional/type() policies and the Gatekeeper library's CEL templates
/// with their suite cases, found in every `tests/` folder under the
/// directory.
#[test]
fn policy_test_runs_every_corpus_policys_fixtures() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/differential");
    let out =
        std::process::Command::new(env!("CARGO_BIN_EXE_gitgate")).args(["policy", "test"]).arg(&root).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    for policy in ["demo-policy.example.com", "optional-replicas", "typed-fields", "gatekeeper-k8spspseccompv2"] {
        assert!(stdout.lines().any(|l| l.starts_with(policy) && l.ends_with("PASS")), "{policy}: {stdout}");
    }
    assert!(stdout.contains(" failed") && stdout.contains("0 failed"), "{stdout}");
}

/// Gate bypass: with `failurePolicy: Ignore`, an expression the engine
/// cannot run would fail at admission and let every request through. Such
/// a policy never loads: the error names the feature and the policy.
#[test]
fn gate_bypass_an_unsupported_feature_fails_the_load_never_allows_silently() {
    for (expression, feature) in [
        ("object.spec.containers.sortBy(c, c.name).size() > 0", "sortBy"),
        ("object.metadata.name.frobnicate()", "frobnicate"),
        ("object.spec.containers.all(i, c, c.image != '')", "two-variable"),
        ("cel.bind(n, object.metadata.name, n != '')", "cel.bind"),
        ("unknownVariable == 1", "unknownVariable"),
        ("format.named('dns1123Label').hasValue()", "format.named"),
    ] {
        let spec = format!("failurePolicy: Ignore\n{ALL}validations:\n- expression: {expression:?}\n");
        let err = set(&spec, "[Deny]").unwrap_err().to_string();
        assert!(err.contains("policy \"p\"") && err.contains(feature), "{expression}: {err}");
    }
}

/// Expression DoS: a message construction (`Type{...}`) made cel 0.13's
/// interpreter panic at admission (`todo!`); it is refused at load.
#[test]
fn expression_dos_a_message_construction_is_refused_at_load() {
    let spec = format!("{ALL}validations:\n- expression: \"google.protobuf.Struct{{}} == null\"\n");
    let err = set(&spec, "[Deny]").unwrap_err().to_string();
    assert!(err.contains("message construction"), "{err}");
}

/// Optional types as Kubernetes runs them: an absent field is
/// `optional.none()`, the default applies, and the message reads the
/// value.
#[test]
fn optional_types_decide_the_captured_deployment() {
    let req = request("validate-create-deployment.json");
    let spec = format!(
        "{ALL}validations:\n- expression: \"object.?spec.?replicas.orValue(1) <= 0\"\n  messageExpression: \"'replicas ' + string(object.?spec.?replicas.orValue(1)) + ', paused ' + string(object.spec.?paused.orValue(false))\"\n"
    );
    let s = set(&spec, "[Deny]").unwrap();
    let msg = denied(&decide(&s, &req));
    let replicas = req.object.as_ref().unwrap()["spec"]["replicas"].as_i64().unwrap_or(1);
    assert!(msg.ends_with(&format!("replicas {replicas}, paused false")), "{msg}");
}
