//! Decisions that go through the engine's borrowing evaluator and those
//! that fall back to the CEL interpreter read the same to a user: the same
//! allow/deny, the same messages, the interpreter's own error text.

mod support;
use support::server as common;

use gitgate::admission::{AdmissionRequest, Decision, Review};
use gitgate::policy::{GitVars, PolicySet, StaticNamespaces, parse_documents};

fn set(validations: &[(&str, &str)]) -> PolicySet {
    let mut spec = String::from(
        "  failurePolicy: Fail\n  matchConstraints:\n    resourceRules:\n    - {apiGroups: ['*'], apiVersions: ['*'], operations: ['*'], resources: ['*']}\n  variables:\n  - name: containers\n    expression: object.spec.template.spec.containers\n  validations:\n",
    );
    for (expression, message) in validations {
        spec.push_str(&format!("  - expression: {expression:?}\n    messageExpression: {message:?}\n"));
    }
    let yaml = format!(
        "apiVersion: admissionregistration.k8s.io/v1\nkind: ValidatingAdmissionPolicy\nmetadata:\n  name: p\nspec:\n{spec}---\n\
         apiVersion: admissionregistration.k8s.io/v1\nkind: ValidatingAdmissionPolicyBinding\nmetadata:\n  name: b\nspec:\n  policyName: p\n  validationActions: [Deny]\n"
    );
    PolicySet::compile(vec![parse_documents("test.yaml", &yaml).unwrap()]).unwrap()
}

fn request(fixture: &str) -> AdmissionRequest {
    Review::decode(&common::fixture(fixture)).unwrap().request
}

fn decide(set: &PolicySet, req: &AdmissionRequest) -> Decision {
    let mut d = Decision::default();
    set.evaluate(req, &StaticNamespaces::default(), &GitVars::default(), &mut d);
    d
}

fn denied(d: &Decision) -> String {
    d.denial.as_ref().map(|x| x.message.clone()).unwrap_or_default()
}

#[test]
fn nested_fields_comprehensions_and_has_decide_the_captured_deployment() {
    let req = request("validate-create-deployment.json");
    let s = set(&[
        ("object.spec.replicas == 1 && object.spec.replicas != 1.0", "'replicas'"),
        (
            "variables.containers.all(c, has(c.image) && (!has(c.securityContext) || !has(c.securityContext.privileged)))",
            "'privileged'",
        ),
        ("variables.containers.exists(c, c.image.startsWith('registry.example.invalid/'))", "'registry'"),
        ("!has(object.spec.template.spec.hostNetwork)", "'hostNetwork'"),
        ("oldObject == null && !has(oldObject.metadata)", "'oldObject'"),
    ]);
    let d = decide(&s, &req);
    assert!(d.allowed(), "{}", denied(&d));

    let s = set(&[(
        "variables.containers.all(c, c.image.endsWith(':latest'))",
        "'not latest: ' + variables.containers.filter(c, !c.image.endsWith(':latest')).map(c, c.name + '=' + c.image).join(', ')",
    )]);
    let d = decide(&s, &req);
    let image = req.object.as_ref().unwrap()["spec"]["template"]["spec"]["containers"][0]["image"].as_str().unwrap();
    let name = req.object.as_ref().unwrap()["spec"]["template"]["spec"]["containers"][0]["name"].as_str().unwrap();
    assert_eq!(
        denied(&d),
        format!("ValidatingAdmissionPolicy 'p' with binding 'b' denied request: not latest: {name}={image}")
    );
}

#[test]
fn a_missing_field_fails_with_the_interpreters_error() {
    let req = request("validate-create-deployment.json");
    let s = set(&[("object.spec.paused == false", "'paused'")]);
    let message = denied(&decide(&s, &req));
    assert!(
        message.starts_with(
            "ValidatingAdmissionPolicy 'p' with binding 'b' denied request: expression 'object.spec.paused == false' resulted in error: "
        ),
        "{message}"
    );
    assert!(message.contains("paused"), "the interpreter names the missing key: {message}");
}

#[test]
fn a_delete_reads_the_old_object_and_a_null_object() {
    let req = request("validate-delete-deployment.json");
    assert!(req.object.is_none());
    let s = set(&[(
        "object == null && has(oldObject.metadata.name) && oldObject.metadata.name == request.name",
        "'old ' + oldObject.metadata.name",
    )]);
    let d = decide(&s, &req);
    assert!(d.allowed(), "{}", denied(&d));
}
