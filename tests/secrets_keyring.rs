//! The /mutate stage follows a keyring swapped under it (a rotation of the
//! cluster's identities): values sealed to the new recipient decrypt at
//! once, values sealed to the old one still do, the MAC is keyed by the
//! newest identity, and `GET /api/v1/recipients` publishes the new order.
//! Driven with the real captured Secret AdmissionReview; no cluster needed.

mod support;
use support::server as common;

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use base64::Engine as _;
use gitgate::admission::{self, Decider, Limits as AdmissionLimits};
use gitgate::secrets::cluster::{self, Recipients};
use gitgate::secrets::keys::{AgeIdentity, IdentitySet, Keyring, Recipient};
use gitgate::secrets::seal::{self, Binding, Limits, Scope};
use gitgate::secrets::{Plaintext, SecretsStage};
use serde_json::{Value, json};
use tower::ServiceExt as _;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;
const NS: &str = "gitops-demo";
const NAME: &str = "db-credentials";

fn review(recipient: &Recipient, password: &[u8]) -> Value {
    let binding = Binding::for_object(Scope::Strict, NS, NAME, "password").unwrap();
    let sealed =
        seal::seal(&Plaintext::copy_from(password), &binding, std::slice::from_ref(recipient), &Limits::default())
            .unwrap();
    let mut review: Value = serde_json::from_slice(&common::fixture("mutate-create-secret.json")).unwrap();
    let object = &mut review["request"]["object"];
    object["data"] = json!({"password": B64.encode(sealed.as_bytes())});
    object["metadata"]["annotations"] = json!({"gitgate.dev/sealed": "age"});
    review
}

async fn call(router: &axum::Router, req: Request<Body>) -> Value {
    let resp = router.clone().oneshot(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    serde_json::from_slice(&axum::body::to_bytes(resp.into_body(), usize::MAX).await.unwrap()).unwrap()
}

async fn mutate(router: &axum::Router, review: &Value) -> Value {
    let req = Request::post("/mutate")
        .header("content-type", "application/json")
        .body(Body::from(serde_json::to_vec(review).unwrap()))
        .unwrap();
    call(router, req).await["response"].clone()
}

/// The plaintext password and MAC the stage's patch writes.
fn unsealed(review: &Value, response: &Value) -> (Vec<u8>, String) {
    assert_eq!(response["allowed"], true, "{response}");
    let patch: json_patch::Patch =
        serde_json::from_slice(&B64.decode(response["patch"].as_str().unwrap()).unwrap()).unwrap();
    let mut object = review["request"]["object"].clone();
    json_patch::patch(&mut object, &patch).unwrap();
    let password = B64.decode(object["data"]["password"].as_str().unwrap()).unwrap();
    (password, object["metadata"]["annotations"]["gitgate.dev/plaintext-mac"].as_str().unwrap().to_owned())
}

#[tokio::test]
async fn a_swapped_keyring_decrypts_new_and_old_values_and_publishes_the_new_recipient() {
    let old = AgeIdentity::generate();
    let new = AgeIdentity::generate();
    let keyring = Keyring::new(Arc::new(IdentitySet::new(vec![old.clone()]).unwrap()));
    let decider = Decider::new().with_async_mutating(Arc::new(SecretsStage::with_keyring(keyring.clone())));
    let router = admission::router(common::state_with(decider, AdmissionLimits::default()))
        .merge(cluster::router(keyring.clone()));
    let recipients = || async {
        let req = Request::get(cluster::RECIPIENTS_PATH).body(Body::empty()).unwrap();
        serde_json::from_value::<Recipients>(call(&router, req).await).unwrap().recipients
    };
    assert_eq!(recipients().await, vec![old.recipient().to_string()]);

    // before the rotation, a value sealed to the not-yet-known key is refused
    let to_new = review(&new.recipient(), b"sealed-to-new");
    let refused = mutate(&router, &to_new).await;
    assert_eq!(refused["allowed"], false, "{refused}");
    assert!(refused["status"]["message"].as_str().unwrap().contains("\"password\""), "{refused}");

    let to_old = review(&old.recipient(), b"sealed-to-old");
    let (value, mac_before) = unsealed(&to_old, &mutate(&router, &to_old).await);
    assert_eq!(value, b"sealed-to-old");

    // the rotation: newest first, the old one kept
    let rotated = Arc::new(IdentitySet::new(vec![new.clone(), old.clone()]).unwrap());
    keyring.replace(rotated.clone());
    assert_eq!(recipients().await, vec![new.recipient().to_string(), old.recipient().to_string()]);
    let (value, _) = unsealed(&to_new, &mutate(&router, &to_new).await);
    assert_eq!(value, b"sealed-to-new");
    let (value, mac_after) = unsealed(&to_old, &mutate(&router, &to_old).await);
    assert_eq!(value, b"sealed-to-old");
    // the MAC is keyed by the newest identity
    let expected = rotated.mac_key().mac([("password", &Plaintext::copy_from(b"sealed-to-old"))]);
    assert_eq!(mac_after, expected);
    assert_ne!(mac_after, mac_before);
}
