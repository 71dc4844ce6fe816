//! The secrets stage driven through `gitgate::admission::router` with the
//! real captured Secret AdmissionReviews, sealed values substituted in.

mod support;
use support::server as common;

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use base64::Engine as _;
use gitgate::admission::{self, Decider, Limits as AdmissionLimits};
use gitgate::secrets::keys::{AgeIdentity, IdentitySet, Recipient};
use gitgate::secrets::seal::{self, Binding, Limits, Scope};
use gitgate::secrets::{Plaintext, SecretsStage};
use serde_json::{Value, json};
use tower::ServiceExt as _;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;
const NS: &str = "gitops-demo";
const NAME: &str = "db-credentials";

fn identities() -> Arc<IdentitySet> {
    Arc::new(IdentitySet::new(vec![AgeIdentity::generate()]).unwrap())
}

fn router_with(stage: SecretsStage) -> axum::Router {
    let decider = Decider::new().with_async_mutating(Arc::new(stage));
    admission::router(common::state_with(decider, AdmissionLimits::default()))
}

fn router(ids: &Arc<IdentitySet>) -> axum::Router {
    router_with(SecretsStage::new(ids.clone()))
}

fn seal_for(recipients: &[Recipient], scope: Scope, ns: &str, name: &str, key: &str, value: &[u8]) -> String {
    let binding = Binding::for_object(scope, ns, name, key).unwrap();
    seal::seal(&Plaintext::copy_from(value), &binding, recipients, &Limits::default()).unwrap()
}

/// The captured `mutate-create-secret.json` with `data` replaced by the
/// given sealed forms (base64, as the apiserver sends them) and the marker.
fn review(fixture: &str, sealed: &[(&str, &str)]) -> Value {
    let mut review: Value = serde_json::from_slice(&common::fixture(fixture)).unwrap();
    let object = &mut review["request"]["object"];
    let data: serde_json::Map<String, Value> =
        sealed.iter().map(|(k, v)| (k.to_string(), json!(B64.encode(v.as_bytes())))).collect();
    object["data"] = Value::Object(data);
    object["metadata"]["annotations"] = json!({"gitgate.dev/sealed": "age", "gitgate.dev/seal-scope": "strict"});
    review
}

fn sealed_review(ids: &IdentitySet) -> Value {
    let r = ids.recipients();
    let user = seal_for(&r, Scope::Strict, NS, NAME, "username", b"demo-user");
    let pass = seal_for(&r, Scope::Strict, NS, NAME, "password", b"dummy-password-not-a-secret");
    review("mutate-create-secret.json", &[("username", &user), ("password", &pass)])
}

async fn post(router: axum::Router, review: &Value) -> Value {
    let req = Request::post("/mutate")
        .header("content-type", "application/json")
        .body(Body::from(serde_json::to_vec(review).unwrap()))
        .unwrap();
    let resp = router.oneshot(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX).await.unwrap();
    let out: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(out["response"]["uid"], review["request"]["uid"]);
    out["response"].clone()
}

/// Applies the response's JSONPatch to the request's object.
fn patched(review: &Value, response: &Value) -> Value {
    assert_eq!(response["patchType"], "JSONPatch");
    let patch = B64.decode(response["patch"].as_str().unwrap()).unwrap();
    let patch: json_patch::Patch = serde_json::from_slice(&patch).unwrap();
    let mut object = review["request"]["object"].clone();
    json_patch::patch(&mut object, &patch).unwrap();
    object
}

fn denial(response: &Value) -> (u64, String) {
    assert_eq!(response["allowed"], false, "{response}");
    assert!(response.get("patch").is_none(), "a denial carries no patch");
    (response["status"]["code"].as_u64().unwrap(), response["status"]["message"].as_str().unwrap().to_owned())
}

#[tokio::test]
async fn sealed_secret_is_unsealed_into_plaintext_data() {
    let ids = identities();
    let review = sealed_review(&ids);
    let response = post(router(&ids), &review).await;
    assert_eq!(response["allowed"], true, "{response}");
    let object = patched(&review, &response);
    // The same bytes the real plaintext Secret in the fixture carries.
    let original: Value = serde_json::from_slice(&common::fixture("mutate-create-secret.json")).unwrap();
    assert_eq!(object["data"], original["request"]["object"]["data"]);
    let ann = &object["metadata"]["annotations"];
    assert!(ann.get("gitgate.dev/sealed").is_none(), "the marker is dropped");
    assert_eq!(ann["gitgate.dev/seal-scope"], "strict");
    // The digest of the Git (sealed) form, so the sync loop sees no drift.
    let sealed_data = review["request"]["object"]["data"].as_object().unwrap();
    let forms: Vec<(String, Vec<u8>)> =
        sealed_data.iter().map(|(k, v)| (k.clone(), B64.decode(v.as_str().unwrap()).unwrap())).collect();
    let digest = gitgate::contract::sealed::sealed_digest(forms.iter().map(|(k, v)| (k.as_str(), v.as_slice())));
    assert_eq!(ann["gitgate.dev/sealed-digest"], json!(digest));
    let user = Plaintext::copy_from(b"demo-user");
    let pass = Plaintext::copy_from(b"dummy-password-not-a-secret");
    let mac = ids.mac_key().mac([("username", &user), ("password", &pass)]);
    assert_eq!(ann["gitgate.dev/plaintext-mac"], json!(mac));
    assert_eq!(response["auditAnnotations"]["secrets-unsealed"], "2");
}

#[tokio::test]
async fn reinvocation_leaves_an_unsealed_secret_alone() {
    let ids = identities();
    let review = sealed_review(&ids);
    let response = post(router(&ids), &review).await;
    let mut again = review.clone();
    again["request"]["object"] = patched(&review, &response);
    let second = post(router(&ids), &again).await;
    assert_eq!(second["allowed"], true);
    assert!(second.get("patch").is_none(), "nothing to do the second time: {second}");
}

#[tokio::test]
async fn string_data_that_was_not_folded_is_unsealed_and_removed() {
    let ids = identities();
    let r = ids.recipients();
    let pass = seal_for(&r, Scope::Strict, NS, NAME, "password", b"from-string-data");
    let mut review = review("validate-create-secret-stringdata.json", &[]);
    review["request"]["object"].as_object_mut().unwrap().remove("data");
    review["request"]["object"]["stringData"] = json!({"password": pass});
    let response = post(router(&ids), &review).await;
    let object = patched(&review, &response);
    assert!(object.get("stringData").is_none());
    assert_eq!(object["data"]["password"], json!(B64.encode("from-string-data")));
}

#[tokio::test]
async fn ciphertext_copied_into_another_namespace_or_name_or_key_is_denied() {
    let ids = identities();
    let review = sealed_review(&ids);
    let mut other_ns = review.clone();
    other_ns["request"]["namespace"] = json!("attacker");
    other_ns["request"]["object"]["metadata"]["namespace"] = json!("attacker");
    let (code, msg) = denial(&post(router(&ids), &other_ns).await);
    assert_eq!(code, 403);
    assert!(msg.contains("scope mismatch") && msg.contains("namespace gitops-demo"), "{msg}");
    assert!(msg.contains("\"password\"") || msg.contains("\"username\""), "names the key: {msg}");

    let mut other_name = review.clone();
    other_name["request"]["name"] = json!("stolen");
    other_name["request"]["object"]["metadata"]["name"] = json!("stolen");
    let (_, msg) = denial(&post(router(&ids), &other_name).await);
    assert!(msg.contains("scope mismatch"), "{msg}");

    // Swapping two keys' ciphertexts inside the same Secret.
    let data = review["request"]["object"]["data"].clone();
    let mut swapped = review.clone();
    swapped["request"]["object"]["data"] = json!({"username": data["password"], "password": data["username"]});
    let (_, msg) = denial(&post(router(&ids), &swapped).await);
    assert!(msg.contains("scope mismatch"), "{msg}");
}

#[tokio::test]
async fn the_scope_annotation_is_never_trusted() {
    let ids = identities();
    let mut review = sealed_review(&ids);
    review["request"]["object"]["metadata"]["annotations"]["gitgate.dev/seal-scope"] = json!("cluster");
    review["request"]["namespace"] = json!("elsewhere");
    let (_, msg) = denial(&post(router(&ids), &review).await);
    assert!(msg.contains("sealed with scope strict"), "{msg}");
}

#[tokio::test]
async fn namespace_and_cluster_scopes_admit_what_they_promise() {
    let ids = identities();
    let r = ids.recipients();
    let ns_scoped = seal_for(&r, Scope::Namespace, NS, "", "password", b"p");
    let cluster = seal_for(&r, Scope::Cluster, "", "", "username", b"u");
    let mut review = review("mutate-create-secret.json", &[("password", &ns_scoped), ("username", &cluster)]);
    review["request"]["name"] = json!("renamed");
    review["request"]["object"]["metadata"]["name"] = json!("renamed");
    let response = post(router(&ids), &review).await;
    assert_eq!(response["allowed"], true, "{response}");
    review["request"]["namespace"] = json!("other");
    let (_, msg) = denial(&post(router(&ids), &review).await);
    assert!(msg.contains("key \"password\"") && msg.contains("scope namespace"), "{msg}");
}

#[tokio::test]
async fn wrong_key_is_denied_and_rotated_identities_still_decrypt() {
    let old = AgeIdentity::generate();
    let old_text = old.to_file_text();
    let ids = Arc::new(IdentitySet::parse(&old_text, "old").unwrap());
    let review = sealed_review(&ids);
    let (code, msg) = denial(&post(router(&identities()), &review).await);
    assert_eq!(code, 403);
    assert!(msg.contains("none of the cluster's age identities"), "{msg}");
    // Rotation: a new identity first, the old one kept for decryption.
    let rotated = format!("{}{}", AgeIdentity::generate().to_file_text().as_str(), old_text.as_str());
    let rotated = Arc::new(IdentitySet::parse(&rotated, "rotated").unwrap());
    let response = post(router(&rotated), &review).await;
    assert_eq!(response["allowed"], true, "{response}");
}

#[tokio::test]
async fn corrupted_truncated_and_non_armor_values_are_denied_by_key() {
    let ids = identities();
    let r = ids.recipients();
    let good = seal_for(&r, Scope::Strict, NS, NAME, "password", &[b'x'; 200]);
    let lines: Vec<&str> = good.lines().collect();
    let truncated = lines[..lines.len() - 2].join("\n");
    let mut flipped = good.clone().into_bytes();
    let mid = flipped.len() / 2;
    flipped[mid] = if flipped[mid] == b'Q' { b'R' } else { b'Q' };
    let flipped = String::from_utf8(flipped).unwrap();
    for (what, bad) in [("truncated", truncated.as_str()), ("flipped", flipped.as_str()), ("plain", "hunter2")] {
        let review = review("mutate-create-secret.json", &[("password", bad)]);
        let (code, msg) = denial(&post(router(&ids), &review).await);
        assert_eq!(code, 403, "{what}");
        assert!(msg.contains("key \"password\""), "{what}: {msg}");
        assert!(!msg.contains("hunter2"), "{what}: never the value: {msg}");
    }
    // Not base64 at all in data.
    let mut review = review("mutate-create-secret.json", &[]);
    review["request"]["object"]["data"] = json!({"password": "***not base64***"});
    let (_, msg) = denial(&post(router(&ids), &review).await);
    assert!(msg.contains("not valid base64"), "{msg}");
}

#[tokio::test]
async fn scrypt_stanzas_are_refused() {
    let ids = identities();
    let enc = age::Encryptor::with_user_passphrase(age::secrecy::SecretString::from("pass".to_owned()));
    let mut out = vec![];
    let armor = age::armor::ArmoredWriter::wrap_output(&mut out, age::armor::Format::AsciiArmor).unwrap();
    let mut w = enc.wrap_output(armor).unwrap();
    std::io::Write::write_all(&mut w, b"x").unwrap();
    w.finish().unwrap().finish().unwrap();
    let review = review("mutate-create-secret.json", &[("password", std::str::from_utf8(&out).unwrap())]);
    let (_, msg) = denial(&post(router(&ids), &review).await);
    assert!(msg.contains("scrypt"), "{msg}");
}

#[tokio::test]
async fn oversized_values_are_refused() {
    let ids = identities();
    let big = seal_for(&ids.recipients(), Scope::Strict, NS, NAME, "password", &[b'x'; 4096]);
    let review = review("mutate-create-secret.json", &[("password", &big)]);
    let small = Limits { max_value_bytes: 1024, max_sealed_bytes: 64 * 1024 };
    let (_, msg) = denial(&post(router_with(SecretsStage::new(ids.clone()).with_limits(small)), &review).await);
    assert!(msg.contains("over the limit of 1024 bytes"), "{msg}");
    let tiny = Limits { max_value_bytes: 1024, max_sealed_bytes: 2048 };
    let (_, msg) = denial(&post(router_with(SecretsStage::new(ids).with_limits(tiny)), &review).await);
    assert!(msg.contains("over the limit of 2048 bytes"), "{msg}");
}

#[tokio::test]
async fn a_sealed_looking_value_without_the_marker_is_never_admitted() {
    let ids = identities();
    let sealed = seal_for(&ids.recipients(), Scope::Strict, NS, NAME, "password", b"pw");
    for value in [sealed.as_str(), "vault:secret/db#password"] {
        let mut review = review("mutate-create-secret.json", &[("password", value)]);
        review["request"]["object"]["metadata"].as_object_mut().unwrap().remove("annotations");
        let (_, msg) = denial(&post(router(&ids), &review).await);
        assert!(msg.contains("has no gitgate.dev/sealed: age annotation"), "{msg}");
    }
}

#[tokio::test]
async fn a_vault_reference_without_vault_is_denied() {
    let ids = identities();
    let review = review("mutate-create-secret.json", &[("password", "vault:secret/db#password")]);
    let (_, msg) = denial(&post(router(&ids), &review).await);
    assert!(msg.contains("key \"password\"") && msg.contains("Vault is not configured"), "{msg}");
}

#[tokio::test]
async fn every_other_captured_review_passes_untouched() {
    let ids = identities();
    for (name, body) in common::fixtures() {
        let review: Value = serde_json::from_slice(&body).unwrap();
        let response = post(router(&ids), &review).await;
        assert_eq!(response["allowed"], true, "{name}: {response}");
        assert!(response.get("patch").is_none(), "{name}: unsealed Secrets and other kinds get no patch");
    }
}
