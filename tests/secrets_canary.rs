//! Canary: a planted plaintext goes seal → /mutate → recorder → logs at
//! trace level, through success and every failure path, and must appear
//! nowhere but inside the base64 JSONPatch of the successful answer.

mod support;
use support::server as common;
use support::vault;

use std::io::Write;
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::http::Request;
use base64::Engine as _;
use gitgate::admission::{self, AdmissionState, Decider, Event, Limits, LogRecorder, RecordError, Recorder};
use gitgate::secrets::keys::{AgeIdentity, IdentitySet};
use gitgate::secrets::seal::{self, Limits as SealLimits, Scope};
use gitgate::secrets::{SecretsStage, manifest};
use serde_json::{Value, json};
use tower::ServiceExt as _;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;
const CANARY: &str = "CANARY-f00dfeed-4e1d-plaintext-must-not-leak";

#[derive(Clone, Default)]
struct Buffer(Arc<Mutex<Vec<u8>>>);

impl Buffer {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

impl Write for Buffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Buffer {
    type Writer = Buffer;
    fn make_writer(&'a self) -> Buffer {
        self.clone()
    }
}

/// Records what the audit box sees (every Debug view of the event) and
/// passes the event on to the log recorder.
struct Capture(Buffer);

impl Recorder for Capture {
    fn record(&self, e: &Event<'_>) -> Result<(), RecordError> {
        let mut out = self.0.clone();
        writeln!(out, "{:?} {:?} {:?}", e.request, e.decision, e.decision.audit_annotations).unwrap();
        if let Some(d) = &e.decision.denial {
            writeln!(out, "{} {} {}", d.reason, d.message, d.stage).unwrap();
        }
        LogRecorder.record(e)
    }
}

fn assert_clean(what: &str, text: &str) {
    assert!(!text.contains(CANARY), "{what} leaks the canary:\n{text}");
    assert!(!text.contains(&B64.encode(CANARY)), "{what} leaks the canary in base64:\n{text}");
}

async fn post(router: &axum::Router, review: &Value) -> Value {
    let req = Request::post("/mutate").body(Body::from(serde_json::to_vec(review).unwrap())).unwrap();
    let resp = router.clone().oneshot(req).await.unwrap();
    let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX).await.unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_canary_appears_only_inside_the_json_patch() {
    let logs = Buffer::default();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(logs.clone())
        .with_ansi(false)
        .finish();
    tracing::subscriber::set_global_default(subscriber).unwrap();
    tracing::trace!("canary test: trace logging on");

    // Seal, as `gitgate seal` does.
    let key_text = AgeIdentity::generate().to_file_text();
    let ids = Arc::new(IdentitySet::parse(&key_text, "canary key").unwrap());
    let plain = json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "db-credentials", "namespace": "gitops-demo",
            "annotations": {"kubectl.kubernetes.io/last-applied-configuration": format!("{{\"stringData\":{{\"password\":\"{CANARY}\"}}}}")}},
        "data": {"token": B64.encode(CANARY)},
        "stringData": {"password": CANARY}
    });
    let sealed = manifest::seal_secret(&plain, &ids.recipients(), Scope::Strict, &SealLimits::default()).unwrap();
    let sealed_yaml = serde_saphyr::to_string(&sealed).unwrap();
    assert_clean("the sealed manifest", &sealed_yaml);
    let report = manifest::check_secret(&sealed, Some(Scope::Strict), &SealLimits::default()).unwrap();
    assert_clean("the check report", &format!("{report:?}"));

    // The captured Secret review with the sealed values, as the apiserver sends them.
    let mut review: Value = serde_json::from_slice(&common::fixture("mutate-create-secret.json")).unwrap();
    let object = &mut review["request"]["object"];
    object["metadata"]["annotations"] = sealed["metadata"]["annotations"].clone();
    let mut data = serde_json::Map::new();
    for (k, v) in sealed["stringData"].as_object().unwrap() {
        data.insert(k.clone(), json!(B64.encode(v.as_str().unwrap())));
    }
    object["data"] = Value::Object(data);

    let audit = Buffer::default();
    let state = AdmissionState::new(Default::default(), Limits::default(), Arc::new(Capture(audit.clone())));
    state.publish(Arc::new(Decider::new().with_async_mutating(Arc::new(SecretsStage::new(ids.clone())))));
    let router = admission::router(Arc::new(state));

    // Success: the canary is in the patch, base64-encoded, and nowhere else.
    let ok = post(&router, &review).await;
    assert_eq!(ok["response"]["allowed"], true, "{ok}");
    let patch = B64.decode(ok["response"]["patch"].as_str().unwrap()).unwrap();
    let patch = String::from_utf8(patch).unwrap();
    assert!(patch.contains(&B64.encode(CANARY)), "the patch carries the value");
    let mut rest = ok.clone();
    rest["response"].as_object_mut().unwrap().remove("patch");
    assert_clean("the response outside the patch", &rest.to_string());

    // Failures: another namespace, a key swap, a wrong key, corruption.
    let mut failures = Vec::new();
    let mut moved = review.clone();
    moved["request"]["namespace"] = json!("elsewhere");
    failures.push(moved);
    let mut swapped = review.clone();
    let d = review["request"]["object"]["data"].clone();
    swapped["request"]["object"]["data"] = json!({"password": d["token"], "token": d["password"]});
    failures.push(swapped);
    let mut corrupted = review.clone();
    let mut armor = B64.decode(d["password"].as_str().unwrap()).unwrap();
    let mid = armor.len() / 2;
    armor[mid] = if armor[mid] == b'Q' { b'R' } else { b'Q' };
    corrupted["request"]["object"]["data"]["password"] = json!(B64.encode(&armor));
    failures.push(corrupted);
    for (i, f) in failures.iter().enumerate() {
        let denied = post(&router, f).await;
        assert_eq!(denied["response"]["allowed"], false, "failure {i}: {denied}");
        assert_clean(&format!("denial {i}"), &denied.to_string());
    }
    let other_key = IdentitySet::new(vec![AgeIdentity::generate()]).unwrap();
    let wrong_key_state = AdmissionState::new(Default::default(), Limits::default(), Arc::new(Capture(audit.clone())));
    wrong_key_state
        .publish(Arc::new(Decider::new().with_async_mutating(Arc::new(SecretsStage::new(Arc::new(other_key))))));
    let denied = post(&admission::router(Arc::new(wrong_key_state)), &review).await;
    assert_eq!(denied["response"]["allowed"], false);
    assert_clean("the wrong-key denial", &denied.to_string());

    // An unsealed Secret that holds the canary as plain data passes without a trace.
    let mut plain_review = review.clone();
    plain_review["request"]["object"]["metadata"].as_object_mut().unwrap().remove("annotations");
    plain_review["request"]["object"]["data"] = json!({"password": B64.encode(CANARY)});
    let passed = post(&router, &plain_review).await;
    assert_eq!(passed["response"]["allowed"], true);
    assert!(passed["response"].get("patch").is_none());

    // Error strings and Debug views of every failing layer.
    let pw = sealed["stringData"]["password"].as_str().unwrap();
    let wrong_ids = IdentitySet::new(vec![AgeIdentity::generate()]).unwrap();
    let errors = [
        seal::open_for(pw.as_bytes(), &ids, &SealLimits::default(), "x", "y", "password").err().unwrap(),
        seal::open_for(pw.as_bytes(), &wrong_ids, &SealLimits::default(), "x", "y", "password").err().unwrap(),
        seal::open_for(
            pw.as_bytes(),
            &ids,
            &SealLimits { max_value_bytes: 4, max_sealed_bytes: 1 << 20 },
            "gitops-demo",
            "db-credentials",
            "password",
        )
        .err()
        .unwrap(),
    ];
    for e in &errors {
        assert_clean("an error", &format!("{} / {:?} / {}", e, e, gitgate::error_chain(e)));
    }
    let mut moved_manifest = sealed.clone();
    moved_manifest["metadata"]["namespace"] = json!("elsewhere");
    let e = manifest::reseal_secret(&moved_manifest, &ids, &ids.recipients(), &SealLimits::default()).err().unwrap();
    assert_clean("a reseal error", &format!("{e} / {e:?} / {}", gitgate::error_chain(&e)));

    // Vault: the canary as a Vault value, read with trace logging on.
    let fake = vault::FakeVault::start().await;
    fake.state.put_kv2("secret", "gitops-demo/db", json!({"password": CANARY}));
    fake.state.forbid("secret/locked");
    let config = gitgate::secrets::vault::VaultConfig::new(
        &fake.url(),
        gitgate::secrets::vault::VaultAuth::Token(age::secrecy::SecretString::from(vault::ROOT_TOKEN.to_owned())),
    )
    .unwrap();
    let resolver = gitgate::secrets::vault::VaultResolver::connect(config).await.unwrap();
    let vault_state = AdmissionState::new(Default::default(), Limits::default(), Arc::new(Capture(audit.clone())));
    vault_state.publish(Arc::new(
        Decider::new().with_async_mutating(Arc::new(SecretsStage::new(ids.clone()).with_vault(resolver))),
    ));
    let vault_router = admission::router(Arc::new(vault_state));
    let mut vault_review = review.clone();
    vault_review["request"]["object"]["data"] = json!({"password": B64.encode("vault:secret/gitops-demo/db#password")});
    let ok = post(&vault_router, &vault_review).await;
    assert_eq!(ok["response"]["allowed"], true, "{ok}");
    let patch = String::from_utf8(B64.decode(ok["response"]["patch"].as_str().unwrap()).unwrap()).unwrap();
    assert!(patch.contains(&B64.encode(CANARY)));
    let mut rest = ok.clone();
    rest["response"].as_object_mut().unwrap().remove("patch");
    assert_clean("the Vault response outside the patch", &rest.to_string());
    vault_review["request"]["object"]["data"] = json!({"password": B64.encode("vault:secret/locked#password")});
    let denied = post(&vault_router, &vault_review).await;
    assert_eq!(denied["response"]["allowed"], false);
    assert_clean("the Vault denial", &denied.to_string());

    // Metrics.
    let resp = router.clone().oneshot(Request::get("/metrics").body(Body::empty()).unwrap()).await.unwrap();
    let metrics = axum::body::to_bytes(resp.into_body(), usize::MAX).await.unwrap();
    assert_clean("/metrics", &String::from_utf8_lossy(&metrics));

    // The recorder saw every decision, the logs have lines at trace and info level.
    let audit = audit.text();
    assert!(audit.contains("scope mismatch"), "the recorder saw the denials:\n{audit}");
    assert_clean("the recorder output", &audit);
    let logs = logs.text();
    assert!(logs.contains("TRACE") && logs.contains("denied"), "logs were captured:\n{logs}");
    assert_clean("the trace-level logs", &logs);
}
