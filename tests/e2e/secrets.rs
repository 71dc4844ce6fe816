//! The secrets bridge behind a real kube-apiserver: a Secret sealed with
//! `gitgate seal` is stored with working `data`; the same ciphertext copied
//! into another namespace is denied.

use std::sync::Arc;
use std::time::{Duration, Instant};

use gitgate::admission::{Decider, Limits};
use gitgate::secrets::SecretsStage;
use gitgate::secrets::keys::IdentitySet;
use gitgate::server::ConnLimits;
use k8s_openapi::api::admissionregistration::v1 as adm;
use kube::api::{Api, PostParams};

use crate::cluster;
use crate::common;

const BIN: &str = env!("CARGO_BIN_EXE_gitgate");

fn run(args: &[&str], dir: &std::path::Path) -> String {
    let out = std::process::Command::new(BIN).args(args).current_dir(dir).output().unwrap();
    assert!(out.status.success(), "gitgate {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

// kubectl blocks its thread: the in-process server needs another worker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sealed_secret_is_stored_with_working_data_and_refused_elsewhere() {
    let Some(c) = cluster::cluster("a_sealed_secret_is_stored_with_working_data_and_refused_elsewhere") else { return };
    let dir = tempfile::tempdir().unwrap();
    let recipient = run(&["keygen", "-o", "cluster.key"], dir.path()).trim().to_owned();
    assert!(recipient.starts_with("age1"), "{recipient}");
    std::fs::write(
        dir.path().join("secret.yaml"),
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: db\n  namespace: e2e-sealed\ntype: Opaque\nstringData:\n  username: app\n  password: s3cr3t-e2e-value\n",
    )
    .unwrap();
    let sealed = run(&["seal", "-f", "secret.yaml", "--recipient", &recipient], dir.path());
    assert!(!sealed.contains("s3cr3t-e2e-value"), "the sealed manifest holds no plaintext");

    let ids = Arc::new(IdentitySet::load(&dir.path().join("cluster.key")).unwrap());
    let decider = Decider::new().with_async_mutating(Arc::new(SecretsStage::new(ids)));
    let srv = common::start_server(common::state_with(decider, Limits::default()), ConnLimits::default()).await;

    for ns in ["e2e-sealed", "e2e-elsewhere"] {
        c.kubectl_ok(&["create", "namespace", ns]);
        c.kubectl_ok(&["label", "namespace", ns, "gitgate-e2e-secrets=on"]);
    }
    let hook = crate::hooks::secrets_mutating(
        "e2e-secrets",
        format!("https://127.0.0.1:{}/mutate", srv.running.addr.port()),
        srv.ca_pem.clone(),
        "gitgate-e2e-secrets",
    );
    let client = c.client().await;
    Api::<adm::MutatingWebhookConfiguration>::all(client).create(&PostParams::default(), &hook).await.unwrap();

    // The apiserver picks the configuration up asynchronously: until it
    // calls us, a sealed Secret is stored as ciphertext, so apply until the
    // stored value is the plaintext.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        // server-side apply, as the sync loop does (client-side apply would
        // also keep the sealed manifest in last-applied-configuration)
        let applied = c.kubectl_stdin(&["apply", "--server-side", "-f", "-"], sealed.as_bytes());
        assert!(applied.status.success(), "{}", String::from_utf8_lossy(&applied.stderr));
        let got = c.kubectl_ok(&["get", "secret", "db", "-n", "e2e-sealed", "-o", "jsonpath={.data.password}"]);
        use base64::Engine as _;
        let value = base64::engine::general_purpose::STANDARD.decode(got.trim()).unwrap_or_default();
        if value == b"s3cr3t-e2e-value" {
            break;
        }
        c.kubectl_ok(&["delete", "secret", "db", "-n", "e2e-sealed"]);
        assert!(Instant::now() < deadline, "the webhook never took effect");
        std::thread::sleep(Duration::from_millis(300));
    }
    let yaml = c.kubectl_ok(&["get", "secret", "db", "-n", "e2e-sealed", "-o", "yaml"]);
    assert!(yaml.contains("gitgate.dev/sealed-digest"), "{yaml}");
    assert!(yaml.contains("gitgate.dev/plaintext-mac"), "{yaml}");
    assert!(!yaml.contains("gitgate.dev/sealed: age"), "the marker is dropped: {yaml}");
    assert!(!yaml.contains("BEGIN AGE"), "no ciphertext is stored: {yaml}");
    let user = c.kubectl_ok(&["get", "secret", "db", "-n", "e2e-sealed", "-o", "jsonpath={.data.username}"]);
    assert_eq!(user.trim(), "YXBw", "username is 'app'");

    // the same ciphertext copied into another namespace
    let copied = sealed.replace("namespace: e2e-sealed", "namespace: e2e-elsewhere");
    assert_ne!(copied, sealed);
    let out = c.kubectl_stdin(&["apply", "--server-side", "-f", "-"], copied.as_bytes());
    assert!(!out.status.success(), "a ciphertext copied into another namespace must be denied");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("secrets.gitgate.dev") && err.contains("denied the request"), "{err}");
    assert!(!err.contains("s3cr3t-e2e-value"));
    assert!(c.kubectl(&["get", "secret", "db", "-n", "e2e-elsewhere"]).status.code() != Some(0));

    srv.running.shutdown(Duration::from_secs(1)).await.unwrap();
}
