//! Cluster-held keys against a real kube-apiserver:
//! - the cluster's age identities live in Secrets in gitgate's namespace:
//!   with none there, gitgate makes one and publishes its recipient; a
//!   Secret sealed to it is unsealed at /mutate; after `keygen --rotate`
//!   a value sealed to the new recipient decrypts without a restart, and
//!   one sealed to the old still does;
//! - audit checkpoints kept in a ConfigMap catch a cut tail even when the
//!   side file went with the log.

use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use gitgate::admission::{Decider, Limits};
use gitgate::audit::{self, AuditLog, Entry, EventKind, Options, Outcome};
use gitgate::secrets::SecretsStage;
use gitgate::secrets::cluster as keys;
use gitgate::server::{self, ConnLimits};
use k8s_openapi::api::admissionregistration::v1 as adm;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{Api, ListParams, PostParams};

use crate::cluster::{self, Cluster, path_str};
use crate::common;

const BIN: &str = env!("CARGO_BIN_EXE_gitgate");

fn gitgate(args: &[&str], dir: &std::path::Path) -> std::process::Output {
    std::process::Command::new(BIN).args(args).current_dir(dir).output().unwrap()
}

fn gitgate_ok(args: &[&str], dir: &std::path::Path) -> String {
    let out = gitgate(args, dir);
    assert!(out.status.success(), "gitgate {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

async fn wait_for<T, F: std::future::Future<Output = Option<T>>>(
    what: &str,
    within: Duration,
    mut f: impl FnMut() -> F,
) -> T {
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn sealed_secret(dir: &std::path::Path, name: &str, ns: &str, value: &str, recipient: &str) -> String {
    let file = format!("{name}.yaml");
    std::fs::write(
        dir.join(&file),
        format!(
            "apiVersion: v1\nkind: Secret\nmetadata:\n  name: {name}\n  namespace: {ns}\ntype: Opaque\nstringData:\n  password: {value}\n"
        ),
    )
    .unwrap();
    let sealed = gitgate_ok(&["seal", "-f", &file, "--recipient", recipient], dir);
    assert!(!sealed.contains(value), "the sealed manifest holds no plaintext");
    sealed
}

/// Applies `sealed` until the stored password is `value` (the webhook
/// configuration is picked up asynchronously); returns the kubectl error of
/// the last failed apply otherwise.
fn apply_until_plaintext(c: &Cluster, sealed: &str, name: &str, ns: &str, value: &str) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let applied = c.kubectl_stdin(&["apply", "--server-side", "-f", "-"], sealed.as_bytes());
        if !applied.status.success() {
            return Err(String::from_utf8_lossy(&applied.stderr).into_owned());
        }
        let got = c.kubectl_ok(&["get", "secret", name, "-n", ns, "-o", "jsonpath={.data.password}"]);
        let stored = base64::engine::general_purpose::STANDARD.decode(got.trim()).unwrap_or_default();
        if stored == value.as_bytes() {
            return Ok(());
        }
        c.kubectl_ok(&["delete", "secret", name, "-n", ns]);
        if Instant::now() > deadline {
            return Err("the webhook never took effect".into());
        }
        std::thread::sleep(Duration::from_millis(300));
    }
}

async fn published(http: &reqwest::Client, url: &str) -> Option<Vec<String>> {
    let resp = http.get(url).send().await.ok()?;
    let body: keys::Recipients = resp.json().await.ok()?;
    Some(body.recipients)
}

// kubectl blocks its thread: the in-process server needs another worker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cluster_makes_its_key_publishes_it_and_rotates_without_a_restart() {
    let Some(c) = cluster::cluster("the_cluster_makes_its_key_publishes_it_and_rotates_without_a_restart") else {
        return;
    };
    let keys_ns = "e2e-keys-gitgate";
    let app_ns = "e2e-keys-app";
    c.ensure_namespace(keys_ns);
    c.ensure_namespace(app_ns);
    c.kubectl_ok(&["label", "--overwrite", "namespace", app_ns, "gitgate-e2e-keys=on"]);
    let client = c.client().await;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), keys_ns);
    let identity_secrets =
        || async { secrets.list(&ListParams::default().labels(keys::IDENTITY_SELECTOR)).await.unwrap().items };
    assert!(identity_secrets().await.is_empty());

    // No identity Secret: gitgate makes one; a second replica starting
    // at the same time loads the same one instead of making another.
    let (first, second) = tokio::join!(keys::start(client.clone(), keys_ns), keys::start(client.clone(), keys_ns));
    let (first, second) = (first.unwrap(), second.unwrap());
    let made = identity_secrets().await;
    assert_eq!(made.len(), 1, "one identity Secret");
    let made_name = made[0].metadata.name.clone().unwrap();
    assert!(made_name.starts_with("gitgate-age-"), "{made_name}");
    let old = first.keyring.recipients();
    assert_eq!(old.len(), 1);
    assert_eq!(second.keyring.recipients(), old);
    let old = old[0].to_string();
    assert_eq!(made[0].metadata.annotations.as_ref().unwrap()[keys::RECIPIENT], old);
    second.task.abort();

    // The server: /mutate with the cluster's keyring, and its recipients.
    common::install_crypto();
    let stage = SecretsStage::with_keyring(first.keyring.clone());
    let state = common::state_with(Decider::new().with_async_mutating(Arc::new(stage)), Limits::default());
    let dir = tempfile::tempdir().unwrap();
    let names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
    let certs = gitgate::tls::generate(dir.path(), &names, 30).unwrap();
    let (tls, _reloader) = gitgate::tls::Reloader::load(&certs.serving_cert, &certs.serving_key).unwrap();
    let router = gitgate::admission::router(state).merge(keys::router(first.keyring.clone()));
    let running = server::start("127.0.0.1:0".parse().unwrap(), tls, router, ConnLimits::default()).await.unwrap();
    let ca_pem = std::fs::read(&certs.ca_cert).unwrap();
    let base = format!("https://127.0.0.1:{}", running.addr.port());
    let http =
        reqwest::Client::builder().tls_certs_only([reqwest::Certificate::from_pem(&ca_pem).unwrap()]).build().unwrap();
    let url = format!("{base}{}", keys::RECIPIENTS_PATH);
    assert_eq!(published(&http, &url).await, Some(vec![old.clone()]));
    let ca = path_str(&certs.ca_cert);
    let printed = gitgate_ok(&["recipients", "--server", &base, "--ca", ca], dir.path());
    assert_eq!(printed.trim(), old, "`gitgate recipients` prints the recipient to seal to");

    let hook = crate::hooks::secrets_mutating("e2e-keys", format!("{base}/mutate"), ca_pem.clone(), "gitgate-e2e-keys");
    Api::<adm::MutatingWebhookConfiguration>::all(client.clone()).create(&PostParams::default(), &hook).await.unwrap();

    // Sealed to the recipient the cluster published: unsealed at /mutate.
    let before = sealed_secret(dir.path(), "before", app_ns, "sealed-before-rotation", &old);
    apply_until_plaintext(c, &before, "before", app_ns, "sealed-before-rotation").unwrap();

    // Rotation: a newer identity Secret; the running server follows it.
    let kubeconfig = path_str(&c.kubeconfig);
    let new = gitgate_ok(&["keygen", "--rotate", "--kubeconfig", kubeconfig, "--namespace", keys_ns], dir.path());
    let new = new.trim().to_owned();
    assert!(new.starts_with("age1") && new != old, "{new}");
    let both = vec![new.clone(), old.clone()];
    wait_for("the rotated keyring", Duration::from_secs(20), || async {
        (published(&http, &url).await.as_ref() == Some(&both)).then_some(())
    })
    .await;
    let printed = gitgate_ok(&["recipients", "--server", &base, "--ca", ca, "--all"], dir.path());
    assert_eq!(printed.lines().collect::<Vec<_>>(), [new.as_str(), old.as_str()]);
    assert_eq!(identity_secrets().await.len(), 2);

    let after = sealed_secret(dir.path(), "after", app_ns, "sealed-after-rotation", &new);
    apply_until_plaintext(c, &after, "after", app_ns, "sealed-after-rotation").unwrap();
    // sealed to the old recipient, admitted after the rotation
    c.kubectl_ok(&["delete", "secret", "before", "-n", app_ns]);
    apply_until_plaintext(c, &before, "before", app_ns, "sealed-before-rotation").unwrap();
    // a recipient the cluster never had is refused with a clear reason
    let stranger = gitgate::secrets::AgeIdentity::generate().recipient().to_string();
    let foreign = sealed_secret(dir.path(), "foreign", app_ns, "sealed-to-a-stranger", &stranger);
    let err = apply_until_plaintext(c, &foreign, "foreign", app_ns, "sealed-to-a-stranger").unwrap_err();
    assert!(err.contains("denied the request") && err.contains("password"), "{err}");
    assert!(!err.contains("sealed-to-a-stranger"), "{err}");

    Api::<adm::MutatingWebhookConfiguration>::all(client).delete("e2e-keys", &Default::default()).await.unwrap();
    first.task.abort();
    running.shutdown(Duration::from_secs(1)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkpoints_in_the_cluster_catch_a_cut_tail_when_the_side_file_is_gone() {
    let Some(c) = cluster::cluster("checkpoints_in_the_cluster_catch_a_cut_tail_when_the_side_file_is_gone") else {
        return;
    };
    let ns = "e2e-audit-gitgate";
    let replica = "gitgate-e2e-0";
    c.ensure_namespace(ns);
    let client = c.client().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let open = || {
        let mut opts = Options::new(&path).with_checkpoints(dir.path().join("checkpoint.pk8"));
        opts.replica = replica.into();
        if let Some(cp) = opts.checkpoints.as_mut() {
            cp.every_records = 4;
        }
        Arc::new(AuditLog::open(opts).unwrap())
    };

    let log = open();
    let sink = audit::cluster::attach(&log, client.clone(), ns);
    for i in 0..12 {
        let mut e = Entry::new(EventKind::Admission, Outcome::Allow);
        e.name = format!("cm-{i}");
        log.append(&e).unwrap();
    }
    log.flush().unwrap();
    let configmaps: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    let name = audit::cluster::configmap_name(replica);
    let cm = wait_for("the checkpoint of record 12 in the cluster", Duration::from_secs(20), || async {
        let cm = configmaps.get_opt(&name).await.ok().flatten()?;
        (cm.data.as_ref()?.get(audit::cluster::DATA_SEQ)? == "12").then_some(cm)
    })
    .await;
    let (cps, bad) = audit::cluster::checkpoints_in(&cm);
    assert!(bad.is_empty());
    assert_eq!(cps.last().map(|c| c.seq), Some(12));
    let events = c.kubectl_ok(&[
        "get",
        "events",
        "-n",
        ns,
        "--field-selector",
        &format!("involvedObject.name={name},reason=AuditCheckpoint"),
        "-o",
        "name",
    ]);
    assert!(!events.trim().is_empty(), "an AuditCheckpoint Event names the ConfigMap");
    assert!(log.metrics().cluster_checkpoints.get() >= 1);
    assert_eq!(log.metrics().cluster_checkpoint_failures.get(), 0);
    sink.abort();
    log.close().unwrap();
    drop(log);

    // Cut the last three records, and the side file goes with the log.
    let text = std::fs::read_to_string(&path).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 12);
    std::fs::write(&path, format!("{}\n", lines[..9].join("\n"))).unwrap();
    std::fs::remove_file(audit::log::checkpoints_path(&path)).unwrap();

    let file = path_str(&path);
    let kubeconfig = path_str(&c.kubeconfig);
    let local = gitgate(&["audit", "verify", file], dir.path());
    assert!(local.status.success(), "without the cluster the cut is invisible: {local:?}");
    let out = gitgate(
        &["audit", "verify", file, "--checkpoints-from-cluster", "--kubeconfig", kubeconfig, "--namespace", ns],
        dir.path(),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("BROKEN: record 10 is broken"), "{stdout}");
    assert!(stdout.contains("covers records up to 12") && stdout.contains("the tail was cut"), "{stdout}");

    // On restart, the log itself records that the cluster knows more.
    let log = open();
    let sink = audit::cluster::attach(&log, client, ns);
    wait_for("a logRecovered record", Duration::from_secs(20), || async {
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        text.lines().any(|l| l.contains("logRecovered") && l.contains("covers records up to 12")).then_some(())
    })
    .await;
    sink.abort();
    log.close().unwrap();
}

/// `gitgate serve` on a cluster wires both: with no `--age-identity` it
/// loads (here: makes) the cluster's identity and serves its recipient, and
/// its audit checkpoints land in the cluster.
#[test]
fn serve_on_a_cluster_uses_its_keys_and_keeps_checkpoints_there() {
    let Some(c) = cluster::cluster("serve_on_a_cluster_uses_its_keys_and_keeps_checkpoints_there") else { return };
    serve_uses_cluster_keys_and_checkpoints(c, "e2e-keys-serve", "gitgate-serve-e2e", "on");
}

/// The same with the sync loop off, as the Helm chart's webhook pods run:
/// admission still connects to the cluster it runs in (here: is given
/// `--kubeconfig`) for the keys and the checkpoints.
#[test]
fn serve_with_sync_off_still_uses_the_clusters_keys_and_keeps_checkpoints_there() {
    let Some(c) = cluster::cluster("serve_with_sync_off_still_uses_the_clusters_keys_and_keeps_checkpoints_there")
    else {
        return;
    };
    // Nothing makes the namespace with the sync loop off: the chart's release namespace.
    c.ensure_namespace("e2e-keys-serve-off");
    serve_uses_cluster_keys_and_checkpoints(c, "e2e-keys-serve-off", "gitgate-webhook-e2e", "off");
}

fn serve_uses_cluster_keys_and_checkpoints(c: &Cluster, ns: &str, replica: &str, sync: &str) {
    let repo = crate::support::Repo::new();
    repo.write("gitgate.yaml", "apps: []\n");
    repo.commit("no apps");
    let work = tempfile::tempdir().unwrap();
    let kubeconfig = path_str(&c.kubeconfig);
    let s = common::ServeProcess::spawn(
        BIN,
        work.path(),
        &[
            "--repo",
            &repo.url(),
            "--kubeconfig",
            kubeconfig,
            "--namespace",
            ns,
            "--sync",
            sync,
            "--audit-replica",
            replica,
            "--audit-checkpoint-every",
            "1",
        ],
    );
    s.wait_for_log("loaded the cluster's age identities", Duration::from_secs(10));
    let made = c.kubectl_ok(&[
        "get",
        "secrets",
        "-n",
        ns,
        "-l",
        keys::IDENTITY_SELECTOR,
        "-o",
        "jsonpath={.items[*].metadata.annotations.gitgate\\.dev/age-recipient}",
    ]);
    assert!(made.trim().starts_with("age1"), "{made}");
    let base = format!("https://127.0.0.1:{}", s.addr.port());
    let printed = gitgate_ok(&["recipients", "--server", &base, "--ca", path_str(&s.ca)], work.path());
    assert_eq!(printed.trim(), made.trim());
    assert!(!s.log.lock().unwrap().contains("AGE-SECRET-KEY-1"), "the identity is never logged");

    // one admission → one record → one checkpoint in the cluster
    let review = work.path().join("review.json");
    std::fs::write(&review, common::fixture("validate-create-configmap-ssa.json")).unwrap();
    let out = std::process::Command::new("curl")
        .args(["-sS", "--max-time", "5", "--cacert", path_str(&s.ca), "-H", "content-type: application/json"])
        .arg("--data-binary")
        .arg(format!("@{}", review.display()))
        .arg(format!("{base}/validate"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let name = audit::cluster::configmap_name(replica);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let got = c.kubectl(&["get", "configmap", &name, "-n", ns, "-o", "jsonpath={.data.seq}"]);
        if got.status.success() && !String::from_utf8_lossy(&got.stdout).trim().is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "no checkpoint ConfigMap {name}:\n{}", s.log.lock().unwrap());
        std::thread::sleep(Duration::from_millis(200));
    }
    s.terminate(Duration::from_secs(10));
}
