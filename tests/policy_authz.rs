//! CEL `authorizer` (issue 20, item 3): checks answered by
//! SubjectAccessReviews against a mocked apiserver (tower-test) — the
//! review gitgate sends, the cache that spares the next one, errored
//! reviews, the per-request cap, and the rule that only the authenticated
//! apiserver's requests are reviewed — and by stubbed answers in
//! `gitgate policy test`. The same policy against a real kube-apiserver
//! runs in the e2e suite when it is there (tests/e2e/).

use std::sync::Arc;
use std::time::Duration;

use gitgate::admission::{AdmissionRequest, AsyncStage, Caller, Decision};
use gitgate::policy::authz::{self, Answer, AnswerCache, Check, Reviewer, Session, StubAnswers, StubRule};
use gitgate::policy::{AuthorizingPolicyStage, GitVars, PolicySet, PolicyStage, StaticNamespaces, parse_documents};
use http::{Method, Request, Response};
use kube::client::Body;
use serde_json::{Value, json};

type Handle = tower_test::mock::Handle<Request<Body>, Response<Body>>;

const SAR_PATH: &str = "/apis/authorization.k8s.io/v1/subjectaccessreviews";

const POLICY: &str = r#"
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicy
metadata: {name: secret-readers-deploy}
spec:
  failurePolicy: Fail
  matchConstraints:
    resourceRules:
    - {apiGroups: [apps], apiVersions: [v1], operations: [CREATE], resources: [deployments]}
  validations:
  - expression: "authorizer.group('').resource('secrets').namespace(object.metadata.namespace).check('get').allowed()"
    messageExpression: "'may not read secrets: ' + authorizer.group('').resource('secrets').namespace(object.metadata.namespace).check('get').reason()"
---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicyBinding
metadata: {name: secret-readers-deploy}
spec: {policyName: secret-readers-deploy, validationActions: [Deny]}
"#;

fn set(text: &str) -> Arc<PolicySet> {
    Arc::new(PolicySet::compile(vec![parse_documents("test.yaml", text).unwrap()]).unwrap())
}

fn request(user: &str, caller: Caller) -> AdmissionRequest {
    let mut req: AdmissionRequest = serde_json::from_value(json!({
        "uid": "u1",
        "kind": {"group": "apps", "version": "v1", "kind": "Deployment"},
        "resource": {"group": "apps", "version": "v1", "resource": "deployments"},
        "name": "web", "namespace": "web", "operation": "CREATE",
        "userInfo": {"username": user, "uid": format!("{user}-uid"), "groups": ["dev", "system:authenticated"]},
        "object": {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "namespace": "web"}},
    }))
    .unwrap();
    req.caller = caller;
    req
}

fn stage(policies: Arc<PolicySet>, reviewer: Option<Arc<Reviewer>>) -> AuthorizingPolicyStage {
    AuthorizingPolicyStage {
        stage: PolicyStage {
            policies,
            namespaces: Arc::new(StaticNamespaces::default()),
            reconciler: "system:serviceaccount:gitgate:gitgate".into(),
            break_glass_groups: Vec::new(),
        },
        reviewer,
    }
}

fn mock() -> (Arc<Reviewer>, Handle) {
    let (svc, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    (Arc::new(Reviewer::new(kube::Client::new(svc, "default"))), handle)
}

/// Answers the next request (a SubjectAccessReview create) with `code`
/// and `status`; returns the review's spec.
async fn answer(handle: &mut Handle, code: u16, status: Value) -> Value {
    let (req, send) = tokio::time::timeout(Duration::from_secs(5), handle.next_request())
        .await
        .expect("a review reaches the apiserver")
        .unwrap();
    assert_eq!(req.method(), Method::POST);
    assert_eq!(req.uri().path(), SAR_PATH);
    let body = req.into_body().collect_bytes().await.unwrap();
    let sent: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(sent["kind"], "SubjectAccessReview");
    let reply = json!({"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
                       "metadata": {}, "spec": sent["spec"], "status": status});
    let reply = if code == 201 {
        reply
    } else {
        json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": code, "message": "etcd is down"})
    };
    send.send_response(Response::builder().status(code).body(Body::from(serde_json::to_vec(&reply).unwrap())).unwrap());
    sent["spec"].clone()
}

async fn no_request(handle: &mut Handle) {
    assert!(
        tokio::time::timeout(Duration::from_millis(200), handle.next_request()).await.is_err(),
        "no SubjectAccessReview may be sent"
    );
}

async fn decide(stage: &AuthorizingPolicyStage, req: &AdmissionRequest) -> Decision {
    let mut d = Decision::default();
    stage.decide(req, &mut d).await;
    d
}

#[tokio::test]
async fn a_check_is_one_review_for_the_requests_user_then_served_from_the_cache() {
    let (reviewer, mut handle) = mock();
    let stage = stage(set(POLICY), Some(reviewer.clone()));
    let alice = request("alice", Caller::Apiserver);
    let (denied, spec) = tokio::join!(
        decide(&stage, &alice),
        answer(&mut handle, 201, json!({"allowed": false, "reason": "no RBAC rule for alice"}))
    );
    assert_eq!(spec["user"], "alice");
    assert_eq!(spec["uid"], "alice-uid");
    assert_eq!(spec["groups"], json!(["dev", "system:authenticated"]));
    assert_eq!(
        spec["resourceAttributes"],
        json!({"group": "", "resource": "secrets", "namespace": "web", "verb": "get"})
    );
    let denial = denied.denial.expect("alice may not read secrets: denied");
    assert!(denial.message.contains("may not read secrets: no RBAC rule for alice"), "{}", denial.message);
    // the messageExpression asked the same check: one review in all; and
    // the next request is answered from the cache
    let (again, ()) = tokio::join!(decide(&stage, &alice), no_request(&mut handle));
    assert!(again.denial.is_some());
    assert_eq!(reviewer.cache.len(), 1);
    // another user is another review, and may
    let bob = request("bob", Caller::Apiserver);
    let (admitted, spec) =
        tokio::join!(decide(&stage, &bob), answer(&mut handle, 201, json!({"allowed": true, "reason": "RBAC"})));
    assert_eq!(spec["user"], "bob");
    assert!(admitted.denial.is_none(), "{:?}", admitted.denial);
}

/// Confused deputy / RBAC oracle: the userInfo of an unauthenticated
/// caller is whatever it typed, so it is never sent to the apiserver.
#[tokio::test]
async fn an_unauthenticated_callers_user_info_never_reaches_a_subject_access_review() {
    let (reviewer, mut handle) = mock();
    let stage = stage(set(POLICY), Some(reviewer.clone()));
    let forged = request("system:admin", Caller::Unauthenticated);
    let (d, ()) = tokio::join!(decide(&stage, &forged), no_request(&mut handle));
    let denial = d.denial.expect("failurePolicy Fail denies a check that cannot be answered");
    assert!(denial.message.contains("only sent for requests from the apiserver authenticated by --client-ca"));
    assert!(reviewer.cache.is_empty());
}

#[tokio::test]
async fn without_a_cluster_a_check_fails_saying_so() {
    let stage = stage(set(POLICY), None);
    let d = decide(&stage, &request("alice", Caller::Apiserver)).await;
    assert!(d.denial.expect("denied").message.contains("no cluster to send SubjectAccessReviews to"));
}

#[tokio::test]
async fn a_failed_review_is_an_errored_decision_and_is_not_cached() {
    let text = POLICY.replace(
        "authorizer.group('').resource('secrets').namespace(object.metadata.namespace).check('get').allowed()\"",
        "!authorizer.group('').resource('secrets').namespace(object.metadata.namespace).check('get').errored()\"",
    );
    let (reviewer, mut handle) = mock();
    let stage = stage(set(&text), Some(reviewer.clone()));
    let alice = request("alice", Caller::Apiserver);
    let (d, _) = tokio::join!(decide(&stage, &alice), answer(&mut handle, 500, json!({})));
    assert!(d.denial.is_some(), "errored() holds after a failed review");
    assert!(reviewer.cache.is_empty());
    // asked again next time: the apiserver answers now
    let (d, _) = tokio::join!(decide(&stage, &alice), answer(&mut handle, 201, json!({"allowed": true})));
    assert!(d.denial.is_none(), "{:?}", d.denial);
}

fn evaluate(set: &PolicySet, req: &AdmissionRequest, session: Arc<Session>) -> Decision {
    let mut d = Decision::default();
    let namespaces = StaticNamespaces::default();
    set.evaluate_authorized(req, &namespaces, &GitVars::default(), &mut d, &|_| true, Ok(session));
    d
}

fn allow_all() -> Arc<Session> {
    let yes = Answer { allowed: true, reason: String::new(), error: None };
    Arc::new(Session::new(Arc::new(StubAnswers(vec![(StubRule::default(), yes)]))))
}

/// Expression DoS: a policy cannot make one request send more than
/// CHECKS_PER_REQUEST reviews.
#[test]
fn a_request_asks_at_most_the_cap_of_distinct_checks() {
    let many = POLICY.replace(
        "authorizer.group('').resource('secrets').namespace(object.metadata.namespace).check('get').allowed()\"",
        "[1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20].all(i, authorizer.path('/p' + string(i)).check('get').allowed())\"",
    );
    let session = allow_all();
    let d = evaluate(&set(&many), &request("alice", Caller::Apiserver), session.clone());
    let denial = d.denial.expect("the 17th check fails the expression");
    assert!(denial.message.contains("more than 16 distinct checks"), "{}", denial.message);
    // the same check asked again does not count twice
    let d = evaluate(&set(POLICY), &request("alice", Caller::Apiserver), allow_all());
    assert!(d.denial.is_none());
}

#[test]
fn service_account_and_request_resource_checks_ask_what_kubernetes_asks() {
    let text = POLICY.replace(
        "authorizer.group('').resource('secrets').namespace(object.metadata.namespace).check('get').allowed()\"",
        "authorizer.serviceAccount('web', 'builder').group('').resource('pods').check('list').allowed() && authorizer.requestResource.check('create').allowed() && authorizer.path('/healthz').check('get').allowed()\"",
    );
    let yes = Answer { allowed: true, reason: String::new(), error: None };
    let rules = vec![
        (
            StubRule {
                user: Some("system:serviceaccount:web:builder".into()),
                resource: Some("pods".into()),
                verb: Some("list".into()),
                ..Default::default()
            },
            yes.clone(),
        ),
        (
            StubRule {
                user: Some("alice".into()),
                group: Some("apps".into()),
                resource: Some("deployments".into()),
                namespace: Some("web".into()),
                name: Some("web".into()),
                verb: Some("create".into()),
                ..Default::default()
            },
            yes.clone(),
        ),
        (StubRule { path: Some("/healthz".into()), verb: Some("get".into()), ..Default::default() }, yes),
    ];
    let session = Arc::new(Session::new(Arc::new(StubAnswers(rules))));
    let d = evaluate(&set(&text), &request("alice", Caller::Apiserver), session);
    assert!(d.denial.is_none(), "{:?}", d.denial);
    // and for another user the requestResource check is not answered yes
    let d = evaluate(&set(&text), &request("mallory", Caller::Apiserver), allow_none());
    assert!(d.denial.expect("denied").message.contains("may not read secrets: no stub answer"));
}

fn allow_none() -> Arc<Session> {
    Arc::new(Session::new(Arc::new(StubAnswers(Vec::new()))))
}

fn check(user: &str) -> Check {
    Check {
        subject: authz::Subject {
            user: user.into(),
            uid: String::new(),
            groups: Vec::new(),
            extra: Default::default(),
        },
        attributes: authz::Attributes { resource: "secrets".into(), verb: "get".into(), ..Default::default() },
    }
}

/// Unbounded memory from attacker-chosen keys: a flood of distinct users
/// keeps the cache at its cap, and answers expire.
#[test]
fn the_cache_is_bounded_and_answers_expire() {
    let cache = AnswerCache::new(Duration::from_secs(60), 8);
    let yes = Answer { allowed: true, reason: String::new(), error: None };
    for i in 0..1000 {
        cache.put(check(&format!("user-{i}")), yes.clone());
    }
    assert_eq!(cache.len(), 8);
    assert_eq!(cache.get(&check("user-999")), Some(yes.clone()), "the newest are kept");
    assert_eq!(cache.get(&check("user-0")), None, "the oldest were evicted");
    let short = AnswerCache::new(Duration::from_millis(20), 8);
    short.put(check("alice"), yes.clone());
    assert!(short.get(&check("alice")).is_some());
    std::thread::sleep(Duration::from_millis(40));
    assert!(short.get(&check("alice")).is_none(), "expired after the TTL");
    // an errored answer is never kept
    short.put(check("bob"), Answer { allowed: false, reason: String::new(), error: Some("down".into()) });
    assert!(short.get(&check("bob")).is_none());
}

#[test]
fn policy_test_reads_stubbed_answers_and_names_the_checks_a_case_needs() {
    let dir = tempfile::tempdir().unwrap();
    let tests = dir.path().join("tests");
    std::fs::create_dir(&tests).unwrap();
    let object = r#"{apiVersion: apps/v1, kind: Deployment, metadata: {name: web, namespace: web}}"#;
    std::fs::write(
        tests.join("secret-readers.yaml"),
        format!(
            r#"
policy: secret-readers-deploy
cases:
- name: a secret reader may deploy
  expect: allow
  user: {{username: alice}}
  object: {object}
  authorizer:
  - {{user: alice, resource: secrets, namespace: web, verb: get, allowed: true}}
- name: anyone else may not
  expect: deny
  user: {{username: bob}}
  object: {object}
  message: "may not read secrets: no RBAC"
  authorizer:
  - {{user: alice, allowed: true}}
  - {{allowed: false, reason: no RBAC}}
- name: no answers given
  expect: allow
  user: {{username: alice}}
  object: {object}
"#
        ),
    )
    .unwrap();
    let results = gitgate::policy::testing::run(&set(POLICY), &tests).unwrap();
    assert_eq!(results.len(), 3);
    assert!(results[0].passed, "{}", results[0].detail);
    assert!(results[1].passed, "{}", results[1].detail);
    assert!(!results[2].passed);
    assert_eq!(results[2].got, "error");
    assert!(
        results[2].detail.contains("the case gives no `authorizer:` answers")
            && results[2].detail.contains("alice get core/secrets in web"),
        "{}",
        results[2].detail
    );
}

#[tokio::test]
async fn a_service_account_check_is_reviewed_as_that_account() {
    let text = POLICY.replace(
        "authorizer.group('').resource('secrets').namespace(object.metadata.namespace).check('get').allowed()\"",
        "authorizer.serviceAccount('web', 'builder').group('apps').resource('deployments').subresource('scale').namespace('web').name('web').check('update').allowed()\"",
    );
    let (reviewer, mut handle) = mock();
    let stage = stage(set(&text), Some(reviewer));
    let alice = request("alice", Caller::Apiserver);
    let (d, spec) = tokio::join!(decide(&stage, &alice), answer(&mut handle, 201, json!({"allowed": true})));
    assert!(d.denial.is_none(), "{:?}", d.denial);
    assert_eq!(spec["user"], "system:serviceaccount:web:builder");
    assert_eq!(spec["groups"], json!(["system:serviceaccounts", "system:serviceaccounts:web"]));
    assert_eq!(
        spec["resourceAttributes"],
        json!({"group": "apps", "resource": "deployments", "subresource": "scale", "namespace": "web", "name": "web", "verb": "update"})
    );
}
