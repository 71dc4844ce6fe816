//! The dashboard's TokenReview against a mocked apiserver (tower-test):
//! the request gitgate sends, the user it reads back, the cache per token
//! (one review per token per minute, a rejected token remembered), and
//! errors that never carry the token. The same call against a real
//! kube-apiserver runs in the e2e suite (tests/e2e/sync.rs, the README
//! walk-through).

use std::time::Duration;

use gitgate::dashboard::auth::{AuthError, TokenReviewer, User};
use http::{Method, Request, Response};
use kube::client::Body;
use secrecy::SecretString;
use serde_json::{Value, json};

type Handle = tower_test::mock::Handle<Request<Body>, Response<Body>>;

const PATH: &str = "/apis/authentication.k8s.io/v1/tokenreviews";

fn mock() -> (TokenReviewer, Handle) {
    let (svc, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    (TokenReviewer::new(kube::Client::new(svc, "default")), handle)
}

fn token(s: &str) -> SecretString {
    SecretString::from(s.to_string())
}

/// Answers the next request with `status` (code 201) after checking it is
/// a TokenReview create; returns the token it carried.
async fn answer(handle: &mut Handle, code: u16, reply: Value) -> String {
    let (req, send) = tokio::time::timeout(Duration::from_secs(5), handle.next_request())
        .await
        .expect("a request reaches the apiserver")
        .unwrap();
    assert_eq!(req.method(), Method::POST);
    assert_eq!(req.uri().path(), PATH);
    let body = req.into_body().collect_bytes().await.unwrap();
    let sent: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(sent["kind"], "TokenReview");
    assert_eq!(sent["apiVersion"], "authentication.k8s.io/v1");
    send.send_response(Response::builder().status(code).body(Body::from(serde_json::to_vec(&reply).unwrap())).unwrap());
    sent["spec"]["token"].as_str().unwrap().to_string()
}

fn review(status: Value) -> Value {
    json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "metadata": {}, "spec": {}, "status": status})
}

async fn no_request(handle: &mut Handle) {
    assert!(
        tokio::time::timeout(Duration::from_millis(200), handle.next_request()).await.is_err(),
        "answered from the cache, without asking the apiserver"
    );
}

#[tokio::test]
async fn an_accepted_token_is_reviewed_once_then_served_from_the_cache() {
    let (reviewer, mut handle) = mock();
    let t = token("sa-token-aaa");
    let (got, sent) = tokio::join!(
        reviewer.review(&t),
        answer(
            &mut handle,
            201,
            review(json!({"authenticated": true, "user": {"username": "system:serviceaccount:web:ada",
                          "groups": ["system:serviceaccounts", "system:serviceaccounts:web", "system:authenticated"]}})),
        )
    );
    assert_eq!(sent, "sa-token-aaa", "the token itself goes to the apiserver, and nowhere else");
    let user = got.unwrap().unwrap();
    assert_eq!(
        user,
        User {
            name: "system:serviceaccount:web:ada".into(),
            groups: vec![
                "system:serviceaccounts".into(),
                "system:serviceaccounts:web".into(),
                "system:authenticated".into()
            ],
        }
    );
    let (again, ()) = tokio::join!(reviewer.review(&t), no_request(&mut handle));
    assert_eq!(again.unwrap().unwrap(), user);

    // Another token is another review.
    let bbb = token("sa-token-bbb");
    let (other, _) = tokio::join!(
        reviewer.review(&bbb),
        answer(&mut handle, 201, review(json!({"authenticated": true, "user": {"username": "bob"}}))),
    );
    assert_eq!(other.unwrap().unwrap().name, "bob");
}

#[tokio::test]
async fn a_rejected_token_is_none_and_remembered() {
    let (reviewer, mut handle) = mock();
    let t = token("forged");
    // What kube-apiserver answers: `authenticated: false` is omitted.
    let (got, _) = tokio::join!(
        reviewer.review(&t),
        answer(
            &mut handle,
            201,
            review(
                json!({"user": {}, "error": "[invalid bearer token, square/go-jose: error in cryptographic primitive]"})
            )
        ),
    );
    assert_eq!(got.unwrap(), None);
    let (again, ()) = tokio::join!(reviewer.review(&t), no_request(&mut handle));
    assert_eq!(again.unwrap(), None);
}

#[tokio::test]
async fn an_apiserver_that_refuses_the_review_is_an_error_without_the_token() {
    let (reviewer, mut handle) = mock();
    let t = token("secret-token-value-123");
    // gitgate may not create TokenReviews (RBAC).
    let forbidden = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "Forbidden", "code": 403,
                           "message": "tokenreviews.authentication.k8s.io is forbidden"});
    let (got, _) = tokio::join!(reviewer.review(&t), answer(&mut handle, 403, forbidden));
    let e = got.unwrap_err();
    assert!(matches!(e, AuthError::Review(_)));
    let text = format!("{} {:?}", gitgate::error_chain(&e), e);
    assert!(text.starts_with("failed to review the token with the apiserver"), "{text}");
    assert!(!text.contains("secret-token-value-123"), "{text}");
    // Neither is cached: the next request asks again.
    let (got, _) = tokio::join!(
        reviewer.review(&t),
        answer(&mut handle, 201, review(json!({"authenticated": true, "user": {"username": "ada"}}))),
    );
    assert_eq!(got.unwrap().unwrap().name, "ada");
}
