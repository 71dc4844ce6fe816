//! CEL `authorizer` against a real kube-apiserver (issue 20, item 3): the
//! same policy runs as a VAP in the apiserver and in gitgate's engine,
//! whose checks are SubjectAccessReviews sent to that apiserver. A user
//! without RBAC on the namespace's Secrets is denied by both, one with it
//! is admitted by both, with the same message.

use std::sync::Arc;
use std::time::{Duration, Instant};

use gitgate::admission::{AdmissionRequest, AsyncStage, Caller, Decision};
use gitgate::policy::authz::Reviewer;
use gitgate::policy::{AuthorizingPolicyStage, PolicySet, PolicyStage, StaticNamespaces, parse_documents};
use serde_json::{Value as Json, json};

use crate::cluster;

const NS: &str = "e2e-authz";
const LABEL: &str = "authz.gitgate.dev/e2e";

fn policy() -> String {
    format!(
        r#"apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicy
metadata: {{name: e2e-secret-readers}}
spec:
  failurePolicy: Fail
  matchConstraints:
    resourceRules:
    - {{apiGroups: [""], apiVersions: [v1], operations: [CREATE], resources: [configmaps]}}
  validations:
  - expression: "authorizer.group('').resource('secrets').namespace(object.metadata.namespace).check('get').allowed()"
    message: only readers of the namespace's Secrets may create these
---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicyBinding
metadata: {{name: e2e-secret-readers}}
spec:
  policyName: e2e-secret-readers
  validationActions: [Deny]
  matchResources:
    objectSelector: {{matchLabels: {{{LABEL}: "true"}}}}
"#
    )
}

fn rbac() -> String {
    format!(
        r#"apiVersion: v1
kind: Namespace
metadata: {{name: {NS}}}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {{name: cm-writer, namespace: {NS}}}
rules: [{{apiGroups: [""], resources: [configmaps], verbs: [create]}}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {{name: cm-writer, namespace: {NS}}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: Role, name: cm-writer}}
subjects:
- {{apiGroup: rbac.authorization.k8s.io, kind: User, name: alice}}
- {{apiGroup: rbac.authorization.k8s.io, kind: User, name: bob}}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {{name: secret-reader, namespace: {NS}}}
rules: [{{apiGroups: [""], resources: [secrets], verbs: [get]}}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {{name: secret-reader, namespace: {NS}}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: Role, name: secret-reader}}
subjects: [{{apiGroup: rbac.authorization.k8s.io, kind: User, name: alice}}]
"#
    )
}

fn config_map() -> Json {
    json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "probe", "namespace": NS, "labels": {LABEL: "true"}}})
}

/// The apiserver's answer to a dry-run create as `user`: Ok, or the error.
fn apiserver(c: &cluster::Cluster, user: &str) -> Result<(), String> {
    let out = c.kubectl_stdin(
        &["create", "--dry-run=server", "--as", user, "-f", "-"],
        &serde_json::to_vec(&config_map()).unwrap(),
    );
    if out.status.success() { Ok(()) } else { Err(String::from_utf8_lossy(&out.stderr).into_owned()) }
}

fn request(user: &str) -> AdmissionRequest {
    let mut req: AdmissionRequest = serde_json::from_value(json!({
        "uid": format!("e2e-authz-{user}"),
        "kind": {"group": "", "version": "v1", "kind": "ConfigMap"},
        "resource": {"group": "", "version": "v1", "resource": "configmaps"},
        "name": "probe", "namespace": NS, "operation": "CREATE",
        "userInfo": {"username": user, "groups": ["system:authenticated"]},
        "object": config_map(),
    }))
    .unwrap();
    req.caller = Caller::Apiserver;
    req
}

#[test]
fn authorizer_checks_decide_as_the_apiservers_vap_does() {
    let Some(c) = cluster::cluster("authorizer_checks_decide_as_the_apiservers_vap_does") else { return };
    let _serial = cluster::cluster_wide();
    let out = c.kubectl_stdin(&["apply", "-f", "-"], rbac().as_bytes());
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = c.kubectl_stdin(&["apply", "-f", "-"], policy().as_bytes());
    assert!(out.status.success(), "the apiserver refused the policy: {}", String::from_utf8_lossy(&out.stderr));
    let cleanup = || {
        let _ = c.kubectl(&["delete", "validatingadmissionpolicybinding", "e2e-secret-readers", "--ignore-not-found"]);
        let _ = c.kubectl(&["delete", "validatingadmissionpolicy", "e2e-secret-readers", "--ignore-not-found"]);
        let _ = c.kubectl(&["delete", "namespace", NS, "--ignore-not-found", "--wait=false"]);
    };
    // the apiserver's VAP: bob is denied once the policy is in force
    let deadline = Instant::now() + Duration::from_secs(30);
    let bob_apiserver = loop {
        match apiserver(c, "bob") {
            Err(e) if e.contains("e2e-secret-readers") => break e,
            other => {
                if Instant::now() > deadline {
                    cleanup();
                    panic!("the policy never took effect: {other:?}");
                }
                std::thread::sleep(Duration::from_millis(300));
            }
        }
    };
    let alice_apiserver = apiserver(c, "alice");

    // gitgate: the same policy, its checks sent to the same apiserver
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let (alice, bob, reviews) = rt.block_on(async {
        let reviewer = Arc::new(Reviewer::new(c.client().await));
        let set = PolicySet::compile(vec![parse_documents("e2e.yaml", &policy()).unwrap()]).unwrap();
        let stage = AuthorizingPolicyStage {
            stage: PolicyStage {
                policies: Arc::new(set),
                namespaces: Arc::new(StaticNamespaces::default()),
                reconciler: "gitgate".into(),
                break_glass_groups: Vec::new(),
            },
            reviewer: Some(reviewer.clone()),
        };
        let mut alice = Decision::default();
        stage.decide(&request("alice"), &mut alice).await;
        let mut bob = Decision::default();
        stage.decide(&request("bob"), &mut bob).await;
        (alice, bob, reviewer.cache.len())
    });
    cleanup();

    assert!(alice_apiserver.is_ok(), "the apiserver admits alice: {alice_apiserver:?}");
    assert!(alice.denial.is_none(), "gitgate admits alice: {:?}", alice.denial);
    let denial = bob.denial.expect("gitgate denies bob");
    assert!(
        bob_apiserver.contains(&denial.message),
        "the same denial:\n  apiserver: {bob_apiserver}\n  gitgate:   {}",
        denial.message
    );
    assert_eq!(reviews, 2, "one SubjectAccessReview per user, both answered and cached");
}
