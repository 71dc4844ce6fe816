//! The Vault client (vaultrs behind gitgate's resolver) against the
//! loopback fake Vault in `tests/support/vault.rs`, and `vault:` values through
//! `/mutate`.

mod support;
use support::server as common;
use support::vault;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use age::secrecy::SecretString;
use axum::body::Body;
use axum::http::Request;
use base64::Engine as _;
use gitgate::admission::{self, Decider, Limits};
use gitgate::secrets::keys::{AgeIdentity, IdentitySet};
use gitgate::secrets::seal::{self, Binding, Scope};
use gitgate::secrets::vault::{VaultAuth, VaultConfig, VaultError, VaultRef, VaultResolver};
use gitgate::secrets::{Plaintext, SecretsStage};
use serde_json::{Value, json};
use tower::ServiceExt as _;
use vault::{FakeVault, K8S_JWT, K8S_ROLE, ROLE_ID, ROOT_TOKEN, SECRET_ID};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

fn token_config(fake: &FakeVault) -> VaultConfig {
    let mut c = VaultConfig::new(&fake.url(), VaultAuth::Token(SecretString::from(ROOT_TOKEN.to_owned()))).unwrap();
    c.deadline = Duration::from_millis(800);
    c
}

async fn resolve(r: &VaultResolver, reference: &str) -> Result<Vec<u8>, VaultError> {
    r.resolve(&VaultRef::parse(reference).unwrap()).await.map(|p| p.expose().to_vec())
}

#[tokio::test]
async fn kv2_latest_and_pinned_versions() {
    let fake = FakeVault::start().await;
    fake.state.put_kv2("secret", "apps/db", json!({"password": "v1-pw", "port": 5432}));
    fake.state.put_kv2("secret", "apps/db", json!({"password": "v2-pw"}));
    let r = VaultResolver::connect(token_config(&fake)).await.unwrap();
    assert_eq!(fake.state.lookups.load(Ordering::SeqCst), 1, "a static token is looked up at start");
    assert_eq!(resolve(&r, "vault:secret/apps/db#password").await.unwrap(), b"v2-pw");
    assert_eq!(resolve(&r, "vault:secret/apps/db#password#1").await.unwrap(), b"v1-pw");
    assert_eq!(resolve(&r, "vault:secret/apps/db#port#1").await.unwrap(), b"5432", "non-strings as JSON");
    assert!(matches!(resolve(&r, "vault:secret/apps/db#password#9").await, Err(VaultError::NotFound { .. })));
    assert!(matches!(resolve(&r, "vault:secret/apps/db#nope").await, Err(VaultError::MissingField { .. })));
}

#[tokio::test]
async fn kv1_mounts() {
    let fake = FakeVault::start().await;
    fake.state.put_kv1("legacy", "db", json!({"password": "kv1-pw"}));
    let mut c = token_config(&fake);
    c.kv1_mounts = vec!["legacy".into()];
    let r = VaultResolver::connect(c).await.unwrap();
    assert_eq!(resolve(&r, "vault:legacy/db#password").await.unwrap(), b"kv1-pw");
    assert!(matches!(resolve(&r, "vault:legacy/missing#password").await, Err(VaultError::NotFound { .. })));
}

#[tokio::test]
async fn kubernetes_and_approle_login() {
    let fake = FakeVault::start().await;
    fake.state.put_kv2("secret", "x", json!({"k": "v"}));
    let dir = tempfile::tempdir().unwrap();
    let jwt = dir.path().join("token");
    std::fs::write(&jwt, format!("{K8S_JWT}\n")).unwrap();
    let k8s =
        |role: &str| VaultAuth::Kubernetes { mount: "kubernetes".into(), role: role.into(), jwt_path: jwt.clone() };
    let r = VaultResolver::connect(VaultConfig::new(&fake.url(), k8s(K8S_ROLE)).unwrap()).await.unwrap();
    assert_eq!(resolve(&r, "vault:secret/x#k").await.unwrap(), b"v");
    let err = VaultResolver::connect(VaultConfig::new(&fake.url(), k8s("other")).unwrap()).await.err().unwrap();
    assert!(matches!(err, VaultError::Login { method: "kubernetes", .. }), "{err}");

    let approle = |secret: &str| VaultAuth::AppRole {
        mount: "approle".into(),
        role_id: ROLE_ID.into(),
        secret_id: SecretString::from(secret.to_owned()),
    };
    let r = VaultResolver::connect(VaultConfig::new(&fake.url(), approle(SECRET_ID)).unwrap()).await.unwrap();
    assert_eq!(resolve(&r, "vault:secret/x#k").await.unwrap(), b"v");
    let err = VaultResolver::connect(VaultConfig::new(&fake.url(), approle("wrong")).unwrap()).await.err().unwrap();
    assert!(matches!(err, VaultError::Login { method: "approle", .. }), "{err}");
    assert!(!format!("{err} {err:?}").contains("wrong"), "the secret id is not echoed");
    assert_eq!(fake.state.logins.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn token_renewal_on_a_timer_and_relogin_when_refused() {
    let fake = FakeVault::start().await;
    let dir = tempfile::tempdir().unwrap();
    let jwt = dir.path().join("token");
    std::fs::write(&jwt, K8S_JWT).unwrap();
    let auth = VaultAuth::Kubernetes { mount: "kubernetes".into(), role: K8S_ROLE.into(), jwt_path: jwt };
    let r = VaultResolver::connect(VaultConfig::new(&fake.url(), auth).unwrap()).await.unwrap();
    assert_eq!(r.renew().await.unwrap(), Duration::from_secs(3600));
    assert_eq!(fake.state.renewals.load(Ordering::SeqCst), 1);

    let task = r.spawn_renewal(Duration::from_millis(20));
    for _ in 0..200 {
        if fake.state.renewals.load(Ordering::SeqCst) >= 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    task.abort();
    assert!(fake.state.renewals.load(Ordering::SeqCst) >= 3, "the timer renews the token");

    // The token expired (revoked): renewal is refused, gitgate logs in again.
    fake.state.revoke_all();
    let logins = fake.state.logins.load(Ordering::SeqCst);
    r.renew().await.unwrap();
    assert_eq!(fake.state.logins.load(Ordering::SeqCst), logins + 1);
    fake.state.put_kv2("secret", "after", json!({"k": "fresh"}));
    assert_eq!(resolve(&r, "vault:secret/after#k").await.unwrap(), b"fresh", "the new token works");

    // A static token cannot log in again: the refusal is an error.
    let fake2 = FakeVault::start().await;
    let r2 = VaultResolver::connect(token_config(&fake2)).await.unwrap();
    *fake2.state.refuse_renewal.lock().unwrap() = true;
    assert!(matches!(r2.renew().await, Err(VaultError::Renew { .. })));
}

#[tokio::test]
async fn error_shapes_forbidden_sealed_and_slow() {
    let fake = FakeVault::start().await;
    fake.state.put_kv2("secret", "locked", json!({"k": "v"}));
    fake.state.put_kv2("secret", "ok", json!({"k": "v"}));
    fake.state.forbid("secret/locked");
    let r = VaultResolver::connect(token_config(&fake)).await.unwrap();
    assert!(matches!(resolve(&r, "vault:secret/locked#k").await, Err(VaultError::Forbidden { .. })));
    assert!(matches!(resolve(&r, "vault:secret/none#k").await, Err(VaultError::NotFound { .. })));
    fake.state.set_fail(Some(503));
    let err = resolve(&r, "vault:secret/ok#k").await.err().unwrap();
    assert!(matches!(err, VaultError::Unavailable { code: 503, .. }) && err.is_unavailable(), "{err}");
    fake.state.set_fail(None);
    // Slower than the deadline: bounded by it.
    fake.state.set_delay(Duration::from_secs(3));
    let refs = vec![("password".to_owned(), VaultRef::parse("vault:secret/ok#k").unwrap())];
    let start = std::time::Instant::now();
    let (_, err) = r.resolve_all(&refs).await.err().unwrap();
    assert!(matches!(err, VaultError::Deadline { .. }) || matches!(err, VaultError::Unreachable { .. }), "{err}");
    assert!(err.is_unavailable());
    assert!(start.elapsed() < Duration::from_secs(3), "the deadline cut the wait short");
    // Unreachable: nothing listens there.
    let dead = VaultConfig::new("http://127.0.0.1:9", VaultAuth::Token(SecretString::from("t".to_owned()))).unwrap();
    assert!(VaultResolver::connect(dead).await.is_err());
}

#[tokio::test]
async fn cache_with_ttl_and_single_flight() {
    let fake = FakeVault::start().await;
    fake.state.put_kv2("secret", "db", json!({"user": "u", "password": "p"}));
    let mut c = token_config(&fake);
    c.cache_ttl = Duration::from_millis(300);
    let r = VaultResolver::connect(c).await.unwrap();
    fake.state.set_delay(Duration::from_millis(100));
    let tasks: Vec<_> = (0..10)
        .map(|i| {
            let r = r.clone();
            tokio::spawn(async move {
                let field = if i % 2 == 0 { "user" } else { "password" };
                r.resolve(&VaultRef::parse(&format!("vault:secret/db#{field}")).unwrap()).await.map(|p| p.len())
            })
        })
        .collect();
    for t in tasks {
        assert_eq!(t.await.unwrap().unwrap(), 1);
    }
    assert_eq!(fake.state.reads.load(Ordering::SeqCst), 1, "ten concurrent misses, one read");
    fake.state.set_delay(Duration::ZERO);
    assert_eq!(resolve(&r, "vault:secret/db#user").await.unwrap(), b"u");
    assert_eq!(fake.state.reads.load(Ordering::SeqCst), 1, "served from the cache");
    tokio::time::sleep(Duration::from_millis(350)).await;
    fake.state.put_kv2("secret", "db", json!({"user": "u2"}));
    assert_eq!(resolve(&r, "vault:secret/db#user").await.unwrap(), b"u2", "re-read after the TTL");
    assert_eq!(fake.state.reads.load(Ordering::SeqCst), 2);
    // Pinned versions are separate cache entries.
    assert_eq!(resolve(&r, "vault:secret/db#user#1").await.unwrap(), b"u");
    // A failed read is not cached.
    fake.state.set_fail(Some(503));
    assert!(resolve(&r, "vault:secret/other#x").await.is_err());
    fake.state.set_fail(None);
    fake.state.put_kv2("secret", "other", json!({"x": "y"}));
    assert_eq!(resolve(&r, "vault:secret/other#x").await.unwrap(), b"y");
}

fn review_with(values: &[(&str, &str)]) -> Value {
    let mut review: Value = serde_json::from_slice(&common::fixture("mutate-create-secret.json")).unwrap();
    let object = &mut review["request"]["object"];
    let data: serde_json::Map<String, Value> =
        values.iter().map(|(k, v)| (k.to_string(), json!(B64.encode(v.as_bytes())))).collect();
    object["data"] = Value::Object(data);
    object["metadata"]["annotations"] = json!({"gitgate.dev/sealed": "age"});
    review
}

async fn mutate(router: &axum::Router, review: &Value) -> Value {
    let req = Request::post("/mutate").body(Body::from(serde_json::to_vec(review).unwrap())).unwrap();
    let resp = router.clone().oneshot(req).await.unwrap();
    let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX).await.unwrap();
    let out: Value = serde_json::from_slice(&bytes).unwrap();
    out["response"].clone()
}

#[tokio::test]
async fn vault_values_through_mutate_with_an_age_value_beside_them() {
    let fake = FakeVault::start().await;
    fake.state.put_kv2("secret", "gitops-demo/db", json!({"username": "demo-user"}));
    let ids = Arc::new(IdentitySet::new(vec![AgeIdentity::generate()]).unwrap());
    let binding = Binding::for_object(Scope::Strict, "gitops-demo", "db-credentials", "password").unwrap();
    let sealed = seal::seal(
        &Plaintext::copy_from(b"dummy-password-not-a-secret"),
        &binding,
        &ids.recipients(),
        &Default::default(),
    )
    .unwrap();
    let resolver = VaultResolver::connect(token_config(&fake)).await.unwrap();
    let stage = SecretsStage::new(ids.clone()).with_vault(resolver);
    let router =
        admission::router(common::state_with(Decider::new().with_async_mutating(Arc::new(stage)), Limits::default()));
    let review = review_with(&[("username", "vault:secret/gitops-demo/db#username#1"), ("password", &sealed)]);
    let response = mutate(&router, &review).await;
    assert_eq!(response["allowed"], true, "{response}");
    let patch = B64.decode(response["patch"].as_str().unwrap()).unwrap();
    let patch: json_patch::Patch = serde_json::from_slice(&patch).unwrap();
    let mut object = review["request"]["object"].clone();
    json_patch::patch(&mut object, &patch).unwrap();
    let original: Value = serde_json::from_slice(&common::fixture("mutate-create-secret.json")).unwrap();
    assert_eq!(object["data"], original["request"]["object"]["data"], "Vault and age values both materialized");

    // Vault sealed → 503 denial naming the key; the vault: literal is never admitted.
    fake.state.set_fail(Some(503));
    let review = review_with(&[("token", "vault:secret/gitops-demo/db#username#2")]);
    let response = mutate(&router, &review).await;
    assert_eq!(response["allowed"], false);
    assert_eq!(response["status"]["code"], 503);
    assert_eq!(response["status"]["reason"], "VaultUnavailable");
    let msg = response["status"]["message"].as_str().unwrap();
    assert!(msg.contains("key \"token\"") && msg.contains("503"), "{msg}");
    fake.state.set_fail(None);

    // Forbidden and missing: 403 denials with the cause.
    fake.state.forbid("secret/locked");
    for (reference, cause) in [("vault:secret/locked#k", "refused access"), ("vault:secret/none#k", "no secret")] {
        let response = mutate(&router, &review_with(&[("k", reference)])).await;
        assert_eq!(response["allowed"], false);
        assert_eq!(response["status"]["code"], 403);
        let msg = response["status"]["message"].as_str().unwrap();
        assert!(msg.contains(cause), "{msg}");
    }

    // Slow Vault: denied within the deadline.
    fake.state.set_delay(Duration::from_secs(3));
    let start = std::time::Instant::now();
    let response = mutate(&router, &review_with(&[("k", "vault:secret/slow#k")])).await;
    assert_eq!(response["allowed"], false);
    assert_eq!(response["status"]["code"], 503);
    assert!(start.elapsed() < Duration::from_secs(3));

    // A malformed reference is a clear 403 without a Vault call.
    fake.state.set_delay(Duration::ZERO);
    let response = mutate(&router, &review_with(&[("k", "vault:nomount#k")])).await;
    assert!(response["status"]["message"].as_str().unwrap().contains("invalid Vault reference"), "{response}");
}
