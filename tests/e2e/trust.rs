//! The trust boundary against a real kube-apiserver that presents a client
//! certificate to webhooks (an `AdmissionConfiguration` with a
//! `kubeConfigFile`, as kube-up.sh sets up with `KUBE_WEBHOOK_CLIENT_CERT=1`)
//! and `gitgate serve --client-ca <cluster CA> --client-name
//! kube-apiserver-webhook-client`.
//!
//! Plays a workload inside the cluster (the confused-deputy / forged
//! review class of Sealed Secrets' and Vault injectors' webhooks): it
//! POSTs the review the apiserver would send, straight to gitgate's port,
//! with and without a certificate of its own CA; a user copies Git's
//! sealed data under another name; a user names a Vault path outside its
//! project; the reconciler's server-side dry run. Only the apiserver's
//! legitimate review of Git's own Secret gets plaintext.

use std::time::Duration;

use base64::Engine as _;
use serde_json::{Value, json};

use crate::cluster;
use crate::support::Repo;
use crate::sync::{BIN, PROJECT, app, get, reconciler_kubeconfig, serve_on, status, wait_until};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;
const PASSWORD: &str = "s3cr3t-trust-e2e";

fn run(args: &[&str], dir: &std::path::Path) -> String {
    let out = std::process::Command::new(BIN).args(args).current_dir(dir).output().unwrap();
    assert!(out.status.success(), "gitgate {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// POSTs `review` to `url` with curl, optionally presenting a client
/// certificate; (exit code, body).
fn post(
    url: &str,
    ca: &std::path::Path,
    review: &Value,
    cert: Option<(&std::path::Path, &std::path::Path)>,
) -> (i32, String) {
    let mut cmd = std::process::Command::new("curl");
    cmd.args(["-sS", "--max-time", "5", "--cacert"]).arg(ca);
    if let Some((crt, key)) = cert {
        cmd.arg("--cert").arg(crt).arg("--key").arg(key);
    }
    let out = cmd
        .args(["-H", "content-type: application/json", "--data-binary", "@-"])
        .arg(url)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write as _;
            child.stdin.take().unwrap().write_all(review.to_string().as_bytes())?;
            child.wait_with_output()
        })
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)),
    )
}

#[test]
fn only_the_apiserver_gets_plaintext_and_only_for_gits_own_secret() {
    let Some(c) = cluster::cluster("only_the_apiserver_gets_plaintext_and_only_for_gits_own_secret") else { return };
    let Some(client_ca) = c.webhook_client_ca() else {
        panic!("the e2e control plane must present a webhook client certificate (KUBE_WEBHOOK_CLIENT_CERT=1)")
    };
    let _serial = cluster::cluster_wide();
    let ns = "e2e-trust";
    let work = tempfile::tempdir().unwrap();
    let recipient = run(&["keygen", "-o", "cluster.key"], work.path()).trim().to_owned();
    std::fs::write(
        work.path().join("secret.yaml"),
        format!("apiVersion: v1\nkind: Secret\nmetadata:\n  name: db\n  namespace: {ns}\ntype: Opaque\nstringData:\n  password: {PASSWORD}\n"),
    )
    .unwrap();
    let sealed = run(&["seal", "-f", "secret.yaml", "--recipient", &recipient], work.path());
    let repo = Repo::new();
    repo.write(
        "gitgate.yaml",
        &format!(
            "{PROJECT}  - {{name: shop, destinations: [{{cluster: \"*\", namespace: \"*\"}}], clusterKinds: [Namespace], vault: {{paths: [\"secret/shop/*\"]}}}}\napps:\n  - {{name: shop, project: shop, path: app, destination: {{namespace: {ns}}}, syncPolicy: {{prune: true, selfHeal: true}}}}\n"
        ),
    );
    repo.write("app/ns.yaml", &format!("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {ns}\n"));
    repo.write("app/db.yaml", &sealed);
    let c1 = repo.commit("sealed db credentials");

    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let key = work.path().join("cluster.key");
    let s = serve_on(
        c,
        work.path(),
        &repo,
        "gitgate-e2e-trust",
        &format!("127.0.0.1:{port}"),
        &[
            "--webhook-endpoint",
            &format!("https://127.0.0.1:{port}"),
            "--age-identity",
            key.to_str().unwrap(),
            "--client-ca",
            client_ca.to_str().unwrap(),
            "--client-name",
            "kube-apiserver-webhook-client",
            "--resync-interval",
            "2s",
        ],
    );
    let cleanup = || {
        for kind in ["validatingwebhookconfiguration", "mutatingwebhookconfiguration"] {
            let _ = c.kubectl(&["delete", kind, "-l", "gitgate.dev/guard=true"]);
        }
    };

    // 1. The legitimate path: Git's sealed Secret syncs, through the
    //    apiserver (which presents its certificate), into working data.
    let synced = wait_until("the Secret unsealed through the webhook", Duration::from_secs(90), || {
        let st = status(&s);
        let a = app(&st, "shop")?;
        let secret = get(c, &["secret", "db", "-n", ns])?;
        let stamped = secret["metadata"]["annotations"]["gitgate.dev/sealed-digest"].is_string();
        (stamped && a["sync"] == "Synced" && a["syncedCommit"] == c1).then_some(secret)
    });
    assert_eq!(B64.decode(synced["data"]["password"].as_str().unwrap()).unwrap(), PASSWORD.as_bytes());

    // 2. A workload POSTs the review the apiserver would send — the
    //    reconciler's CREATE of Git's Secret — straight to the port.
    let url = format!("https://127.0.0.1:{port}/mutate");
    let mut sealed_obj: Value = serde_saphyr::from_str(&sealed).unwrap();
    sealed_obj["metadata"]["namespace"] = json!(ns);
    let mut data = serde_json::Map::new();
    for (k, v) in sealed_obj["stringData"].as_object().cloned().unwrap_or_default() {
        data.insert(k, json!(B64.encode(v.as_str().unwrap().as_bytes())));
    }
    sealed_obj["data"] = Value::Object(data);
    sealed_obj.as_object_mut().unwrap().remove("stringData");
    let forged_uid = "7e1f0a2b-trust-e2e-forged-review";
    let review = json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": forged_uid,
            "kind": {"group": "", "version": "v1", "kind": "Secret"},
            "resource": {"group": "", "version": "v1", "resource": "secrets"},
            "name": "db",
            "namespace": ns,
            "operation": "CREATE",
            "userInfo": {"username": crate::sync::RECONCILER, "groups": ["system:masters", "system:authenticated"]},
            "object": sealed_obj,
            "dryRun": false,
        }
    });
    let (code, body) = post(&url, &s.ca, &review, None);
    assert_eq!(code, 0, "curl itself works: {body}");
    assert!(body.contains("client certificate") && !body.contains("\"response\""), "no decision: {body}");
    assert!(!body.contains(&B64.encode(PASSWORD)) && !body.contains(PASSWORD), "no plaintext: {body}");
    // With a certificate of another CA: the handshake fails.
    let other = tempfile::tempdir().unwrap();
    let other_certs = gitgate::tls::generate(other.path(), &["kube-apiserver-webhook-client".into()], 1).unwrap();
    let (code, body) = post(&url, &s.ca, &review, Some((&other_certs.serving_cert, &other_certs.serving_key)));
    assert_ne!(code, 0, "another CA's certificate gets no answer: {body}");
    assert!(!body.contains(PASSWORD) && !body.contains(&B64.encode(PASSWORD)), "{body}");

    // 3. A user creates a Secret with Git's sealed data under another name.
    let copy = sealed.replace("name: db\n", "name: db-copy\n");
    let out = c.kubectl_stdin(&["apply", "--server-side", "-f", "-"], copy.as_bytes());
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("only gitgate's reconciler") || err.contains("only Git's own sealed Secrets"), "{err}");
    assert!(!err.contains(PASSWORD), "{err}");

    // 4. A Vault path outside the project: refused before any Vault read
    //    (this gitgate has no Vault at all; the reason is the path).
    let vault = format!(
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: db\n  namespace: {ns}\n  annotations: {{gitgate.dev/sealed: age}}\nstringData:\n  pw: \"vault:secret/prod/db#password\"\n"
    );
    let rk = reconciler_kubeconfig(c, work.path());
    let out = std::process::Command::new(c.bin_dir.join("kubectl"))
        .arg(format!("--kubeconfig={}", rk.display()))
        .args(["create", "--dry-run=server", "-o", "yaml", "-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write as _;
            child.stdin.take().unwrap().write_all(vault.replace("name: db\n", "name: prod-reader\n").as_bytes())?;
            child.wait_with_output()
        })
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("only Git's own sealed Secrets are unsealed"), "{err}");

    // 5. The reconciler's server-side dry run of Git's Secret shows no
    //    plaintext: the live object with Git's sealed data put back.
    let mut dry = get(c, &["secret", "db", "-n", ns]).unwrap();
    let git_data = review["request"]["object"]["data"].clone();
    dry["data"] = git_data;
    dry["metadata"]["annotations"]["gitgate.dev/sealed"] = json!("age");
    for f in ["resourceVersion", "uid", "creationTimestamp", "managedFields"] {
        dry["metadata"].as_object_mut().unwrap().remove(f);
    }
    let out = std::process::Command::new(c.bin_dir.join("kubectl"))
        .arg(format!("--kubeconfig={}", rk.display()))
        .args([
            "apply",
            "--server-side",
            "--force-conflicts",
            "--field-manager",
            "gitgate",
            "--dry-run=server",
            "-o",
            "json",
            "-f",
            "-",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write as _;
            child.stdin.take().unwrap().write_all(dry.to_string().as_bytes())?;
            child.wait_with_output()
        })
        .unwrap();
    let shown = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "the reconciler's dry run is admitted: {shown}");
    assert!(
        !shown.contains(PASSWORD) && !shown.contains(&B64.encode(PASSWORD)),
        "a dry run shows no plaintext: {shown}"
    );
    assert!(
        shown.contains("gitgate does not unseal Secrets for a dry run") || shown.contains("sealed-digest"),
        "{shown}"
    );

    // 6. The forged review left no audit record; the apiserver's did, as
    //    the apiserver.
    let audit = std::fs::read_dir(work.path().join("gitgate-data"))
        .into_iter()
        .flatten()
        .flatten()
        .chain(std::fs::read_dir(work.path()).into_iter().flatten().flatten())
        .filter(|e| e.file_name().to_string_lossy().contains("audit"))
        .flat_map(|e| {
            if e.path().is_dir() {
                std::fs::read_dir(e.path()).into_iter().flatten().flatten().map(|f| f.path()).collect::<Vec<_>>()
            } else {
                vec![e.path()]
            }
        })
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .collect::<String>();
    assert!(!audit.is_empty(), "the audit log was found");
    assert!(!audit.contains(forged_uid), "a refused caller leaves no admission record");
    assert!(audit.contains("\"caller\":\"apiserver\""), "decisions record the verified caller");
    assert!(!audit.contains(PASSWORD), "no plaintext in the audit log");
    assert!(!s.log.lock().unwrap().contains(PASSWORD), "no plaintext in gitgate's log");
    s.terminate(Duration::from_secs(20));
    cleanup();
}
