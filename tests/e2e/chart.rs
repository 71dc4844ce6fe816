//! The Helm chart against a real kube-apiserver: every object the chart
//! renders (two values sets, NetworkPolicies included) passes the
//! apiserver's validation in a server-side dry run, and each ServiceAccount's
//! rights, once bound, are its Deployment's and no more: the reconciler's
//! applies, the webhook's reads. Rendered by the real Helm v4
//! engine (helm-python-sdk); skips loudly without it or without
//! `KUBE_BIN_DIR`.
//!
//! cert-manager's CRDs are not installed here, so both values sets render
//! with `tls.certManager.enabled=false` (tests/chart.rs covers the
//! cert-manager objects' shape).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::cluster::{self, Cluster};

fn shim() -> Option<PathBuf> {
    let ok = Command::new("python3").args(["-c", "import helm_python"]).output().is_ok_and(|o| o.status.success());
    if !ok {
        use std::io::Write as _;
        let _ = writeln!(
            std::io::stderr(),
            "\n*** SKIPPED e2e chart test: helm-python-sdk is not installed (pip install helm-python-sdk) ***\n"
        );
        return None;
    }
    Some(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden/helm/helm-shim.py"))
}

/// `helm template RELEASE charts/gitgate -n NS -f values`.
fn render(shim: &PathBuf, release: &str, ns: &str, values: &str) -> Vec<Value> {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("values.yaml");
    std::fs::write(&file, values).unwrap();
    let chart = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("charts/gitgate");
    let out = Command::new("python3")
        .arg(shim)
        .args(["template", release])
        .arg(&chart)
        .args(["--namespace", ns, "--values"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(out.status.success(), "helm template failed: {}", String::from_utf8_lossy(&out.stderr));
    gitgate::render::yaml::parse_documents("rendered", &out.stdout).unwrap()
}

fn display(o: &Value) -> String {
    format!("{} {}", o["kind"].as_str().unwrap_or("?"), o["metadata"]["name"].as_str().unwrap_or("?"))
}

/// Server-side dry-run applies each object, cluster-scoped ones first;
/// returns how many the apiserver admitted.
fn dry_run(c: &Cluster, objs: &[Value]) -> usize {
    let mut ordered: Vec<&Value> = objs.iter().filter(|o| o["metadata"].get("namespace").is_none()).collect();
    ordered.extend(objs.iter().filter(|o| o["metadata"].get("namespace").is_some()));
    for o in &ordered {
        let body = serde_json::to_vec(o).unwrap();
        let out = c.kubectl_stdin(
            &["apply", "--server-side", "--force-conflicts", "--field-manager=helm", "--dry-run=server", "-f", "-"],
            &body,
        );
        assert!(
            out.status.success(),
            "the apiserver refused {}: {}\n{}",
            display(o),
            String::from_utf8_lossy(&out.stderr),
            serde_json::to_string_pretty(o).unwrap()
        );
    }
    ordered.len()
}

#[test]
fn every_object_the_chart_renders_passes_the_apiservers_validation() {
    let Some(c) = cluster::cluster("every_object_the_chart_renders_passes_the_apiservers_validation") else { return };
    let Some(shim) = shim() else { return };
    // Webhook configurations are cluster-wide: keep other tests' live
    // webhooks out of the way (dry runs install nothing).
    let _serial = cluster::cluster_wide();
    let ns = "e2e-chart";
    c.ensure_namespace(ns);
    let defaults = render(&shim, "gitgate", ns, "repo: {url: https://git.example.com/platform/gitops.git}\n");
    let kinds: std::collections::BTreeSet<&str> = defaults.iter().filter_map(|o| o["kind"].as_str()).collect();
    for kind in [
        "Deployment",
        "PodDisruptionBudget",
        "NetworkPolicy",
        "Service",
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Role",
        "RoleBinding",
        "Secret",
        "ValidatingWebhookConfiguration",
        "MutatingWebhookConfiguration",
    ] {
        assert!(kinds.contains(kind), "the default render has no {kind}");
    }
    assert_eq!(defaults.iter().filter(|o| o["kind"] == "Deployment").count(), 2);
    assert_eq!(defaults.iter().filter(|o| o["kind"] == "NetworkPolicy").count(), 2);
    let admitted = dry_run(c, &defaults);
    assert_eq!(admitted, defaults.len());

    let everything = "\
replicaCount: 3
repo: {url: https://git.example.com/platform/gitops.git, revision: production, pollInterval: 1m}
tls: {certManager: {enabled: false}}
hookSecret: {enabled: true, value: not-a-real-secret}
breakGlassGroups: [sre]
age: {identity: AGE-SECRET-KEY-1EXAMPLEONLY}
vault: {address: https://vault.example.com:8200, auth: token, tokenSecret: {name: vault-token}, kv1Mounts: [legacy], caSecret: vault-ca}
persistence: {enabled: true, storageClass: standard}
affinity: {podAntiAffinity: {mode: required}}
topologySpreadConstraints: [{maxSkew: 1, topologyKey: topology.kubernetes.io/zone, whenUnsatisfiable: ScheduleAnyway}]
extraArgs: [--sync-concurrency=32]
reconciler: {replicaCount: 3}
dashboard: {adminGroups: [platform-admins], service: {type: NodePort, port: 8443}}
metrics: {port: 9102}
networkPolicy:
  apiserverCIDRs: [10.0.0.10/32, fd00::10/128]
  metricsNamespaceSelector: {matchExpressions: [{key: team, operator: In, values: [observability]}]}
  dashboardFrom: [{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: ingress-nginx}}, podSelector: {matchLabels: {app: ingress}}}, {ipBlock: {cidr: 192.0.2.0/24}}]
secrets: {unsealFor: ['group:deployers', 'user:ci-bot'], unsealWithoutClientAuth: true}
webhook:
  guard: false
  enforce: all
  failurePolicy: Ignore
  timeoutSeconds: 10
  clientAuth:
    enabled: true
    caBundle: |
      -----BEGIN CERTIFICATE-----
      MIIBdummy
      -----END CERTIFICATE-----
";
    let policy =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("policies/no-latest-tag.yaml")).unwrap();
    let indented: String = policy.lines().map(|l| format!("    {l}\n")).collect();
    let everything = format!("{everything}policies:\n  no-latest-tag.yaml: |\n{indented}");
    let second = render(&shim, "gitgate", ns, &everything);
    assert!(second.iter().any(|o| o["kind"] == "ConfigMap" && o["metadata"]["name"] == "gitgate-policies"));
    assert!(second.iter().any(|o| o["kind"] == "PersistentVolumeClaim"));
    assert!(second.iter().any(|o| o["kind"] == "Secret" && o["metadata"]["name"] == "gitgate-age"));
    assert!(second.iter().any(|o| o["kind"] == "ConfigMap" && o["metadata"]["name"] == "gitgate-client-ca"));
    let np = second.iter().find(|o| o["kind"] == "NetworkPolicy" && o["metadata"]["name"] == "gitgate").unwrap();
    assert_eq!(np["spec"]["ingress"][0]["from"].as_array().unwrap().len(), 2, "one ipBlock per apiserver CIDR");
    let admitted = dry_run(c, &second);
    assert_eq!(admitted, second.len());
}

/// `kubectl auth can-i` as `user`.
fn can(c: &Cluster, user: &str, args: &[&str]) -> bool {
    let who = format!("--as={user}");
    let mut all = vec!["auth", "can-i", who.as_str()];
    all.extend_from_slice(args);
    let out = c.kubectl(&all);
    String::from_utf8_lossy(&out.stdout).trim() == "yes"
}

#[test]
fn each_service_account_gets_its_deployments_rights_and_no_more() {
    let Some(c) = cluster::cluster("each_service_account_gets_its_deployments_rights_and_no_more") else {
        return;
    };
    let Some(shim) = shim() else { return };
    // It creates cluster-scoped RBAC: keep the install test's fail-closed webhooks away.
    let _serial = cluster::cluster_wide();
    let ns = "e2e-chart-rbac";
    c.ensure_namespace(ns);
    let values =
        "rbac: {reconcilerRules: [{apiGroups: [apps], resources: [deployments], verbs: [get, list, watch, patch]}]}\n";
    let objs = render(&shim, "e2e-chart", ns, values);
    let rbac = ["ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"];
    for o in objs.iter().filter(|o| rbac.iter().any(|k| o["kind"] == *k)) {
        let out = c.kubectl_stdin(&["apply", "--server-side", "-f", "-"], &serde_json::to_vec(o).unwrap());
        assert!(out.status.success(), "{}: {}", display(o), String::from_utf8_lossy(&out.stderr));
    }
    // The Deployments run under these two.
    let sa_of = |name: &str| {
        objs.iter().find(|o| o["kind"] == "Deployment" && o["metadata"]["name"] == name).unwrap()["spec"]["template"]
            ["spec"]["serviceAccountName"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let reconciler = format!("system:serviceaccount:{ns}:{}", sa_of("e2e-chart-gitgate-reconciler"));
    let webhook = format!("system:serviceaccount:{ns}:{}", sa_of("e2e-chart-gitgate"));
    assert_eq!(reconciler, format!("system:serviceaccount:{ns}:e2e-chart-gitgate"));
    assert_ne!(reconciler, webhook);
    let reconciler_yes: &[&[&str]] = &[
        &["patch", "deployments.apps", "-n", "default"],
        &["watch", "deployments.apps", "--all-namespaces"],
        &["patch", "validatingwebhookconfigurations/gitgate-validate"],
        &["update", "mutatingwebhookconfigurations/gitgate-mutate"],
        &["watch", "validatingwebhookconfigurations"],
        &["update", "leases.coordination.k8s.io", "-n", ns],
        &["create", "configmaps", "-n", ns],
        &["delete", "configmaps", "-n", ns],
        &["get", "namespaces"],
        &["create", "events", "-n", ns],
    ];
    let reconciler_no: &[&[&str]] = &[
        &["delete", "deployments.apps", "-n", "default"],
        &["get", "secrets", "-n", "default"],
        // the age identities are the webhook's (the reconciler runs --cluster-keys=false)
        &["get", "secrets", "-n", ns],
        &["patch", "validatingwebhookconfigurations/someone-elses"],
        &["delete", "validatingwebhookconfigurations/gitgate-validate"],
        &["update", "leases.coordination.k8s.io", "-n", "kube-system"],
        &["create", "configmaps", "-n", "default"],
        &["create", "namespaces"],
        &["patch", "clusterroles"],
    ];
    let webhook_yes: &[&[&str]] = &[
        &["list", "namespaces"],
        &["watch", "namespaces"],
        // the cluster's age identities, in its own namespace only
        &["watch", "secrets", "-n", ns],
        &["create", "secrets", "-n", ns],
        // its audit checkpoints
        &["create", "configmaps", "-n", ns],
        &["update", "configmaps", "-n", ns],
        &["create", "events", "-n", ns],
    ];
    let webhook_no: &[&[&str]] = &[
        &["get", "secrets", "--all-namespaces"],
        &["list", "secrets", "-n", "default"],
        &["update", "secrets", "-n", ns],
        &["delete", "secrets", "-n", ns],
        &["create", "serviceaccounts", "--subresource=token", "-n", ns],
        &["create", "serviceaccounts", "--subresource=token", "-n", "default"],
        &["create", "deployments.apps", "-n", "default"],
        &["create", "deployments.apps", "-n", ns],
        &["patch", "deployments.apps", "-n", "default"],
        &["delete", "configmaps", "-n", ns],
        &["update", "leases.coordination.k8s.io", "-n", ns],
        &["patch", "validatingwebhookconfigurations/gitgate-validate"],
        &["create", "namespaces"],
    ];
    for (who, yes, no) in [(&reconciler, reconciler_yes, reconciler_no), (&webhook, webhook_yes, webhook_no)] {
        for args in yes {
            assert!(can(c, who, args), "{who} may not {args:?}");
        }
        for args in no {
            assert!(!can(c, who, args), "{who} may {args:?}");
        }
    }
}

fn live(c: &Cluster, kind: &str, name: &str) -> Option<Value> {
    let out = c.kubectl(&["get", kind, name, "-o", "json"]);
    out.status.success().then(|| serde_json::from_slice(&out.stdout).unwrap())
}

fn restored(work: &std::path::Path) -> usize {
    let text = std::fs::read_to_string(work.join("gitgate-data/audit/audit.jsonl")).unwrap_or_default();
    text.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|e| e["event"] == "webhookConfigRestored")
        .count()
}

#[test]
fn helm_and_a_running_gitgate_agree_on_the_webhook_configurations() {
    let Some(c) = cluster::cluster("helm_and_a_running_gitgate_agree_on_the_webhook_configurations") else { return };
    let Some(shim) = shim() else { return };
    let _serial = cluster::cluster_wide();
    let ns = "e2e-chart-guard";
    c.ensure_namespace(ns);
    // Ignore: nothing answers at the Service, and other tests must not be blocked.
    let objs = render(&shim, "gitgate", ns, "webhook: {failurePolicy: Ignore}\n");
    let tls = objs.iter().find(|o| o["kind"] == "Secret" && o["metadata"]["name"] == "gitgate-tls").unwrap();
    let work = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(work.path().join("certs")).unwrap();
    for file in ["ca.crt", "tls.crt", "tls.key"] {
        use base64::Engine as _;
        let pem = base64::engine::general_purpose::STANDARD.decode(tls["data"][file].as_str().unwrap()).unwrap();
        std::fs::write(work.path().join("certs").join(file), pem).unwrap();
    }
    let repo = crate::support::Repo::new();
    repo.write("gitgate.yaml", "apps: []\n");
    repo.commit("no apps");
    // The guard flags exactly as the chart's reconciler Deployment passes them.
    let deploy =
        objs.iter().find(|o| o["kind"] == "Deployment" && o["metadata"]["name"] == "gitgate-reconciler").unwrap();
    let guard_flags: Vec<&str> = deploy["spec"]["template"]["spec"]["containers"][0]["args"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .filter(|a| a.starts_with("--webhook-") || a.starts_with("--namespace="))
        .collect();
    assert_eq!(guard_flags.len(), 5, "{guard_flags:?}");
    let (url, kubeconfig) = (repo.url(), c.kubeconfig.display().to_string());
    let mut args = vec!["--repo", &url, "--kubeconfig", &kubeconfig, "--sync", "on", "--lease-duration", "3s"];
    args.extend(guard_flags);
    let g = crate::common::ServeProcess::spawn(env!("CARGO_BIN_EXE_gitgate"), work.path(), &args);

    let configs: Vec<&Value> = objs
        .iter()
        .filter(|o| o["kind"] == "ValidatingWebhookConfiguration" || o["kind"] == "MutatingWebhookConfiguration")
        .collect();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    for want in &configs {
        let (kind, name) = (want["kind"].as_str().unwrap(), want["metadata"]["name"].as_str().unwrap());
        let got = loop {
            if let Some(v) = live(c, kind, name) {
                break v;
            }
            assert!(std::time::Instant::now() < deadline, "gitgate never applied {kind} {name}");
            std::thread::sleep(std::time::Duration::from_millis(300));
        };
        // Every field the chart sets is what gitgate applied.
        assert_eq!(gitgate::sync::guard::tampered(&serde_json::json!({"webhooks": want["webhooks"]}), &got), None);
    }
    let before = restored(work.path());
    assert!(before >= configs.len(), "gitgate records putting its configurations in place");
    // Helm applying its copy over gitgate's conflicts on no field...
    for want in &configs {
        let out = c.kubectl_stdin(
            &["apply", "--server-side", "--field-manager=helm", "-f", "-"],
            &serde_json::to_vec(want).unwrap(),
        );
        assert!(out.status.success(), "helm and gitgate fight: {}", String::from_utf8_lossy(&out.stderr));
    }
    // ...and gitgate finds nothing to restore (its guard checks every 5 s).
    std::thread::sleep(std::time::Duration::from_secs(7));
    assert_eq!(restored(work.path()), before, "gitgate re-applied after helm: {}", g.log.lock().unwrap());
    g.terminate(std::time::Duration::from_secs(20));
    for kind in ["validatingwebhookconfiguration", "mutatingwebhookconfiguration"] {
        let _ = c.kubectl(&["delete", kind, "-l", "gitgate.dev/guard=true"]);
    }
}

/// `helm install` as Helm orders it (webhook configurations, a kind Helm
/// does not know, last), for real: every object is created. With no
/// gitgate pod behind the Service, the layout shows itself: a namespace
/// labelled for enforcement fails closed, any other namespace and
/// kube-system are untouched. Then `helm uninstall` (webhooks first).
#[test]
fn the_chart_installs_and_fails_closed_only_where_enforced() {
    let Some(c) = cluster::cluster("the_chart_installs_and_fails_closed_only_where_enforced") else { return };
    let Some(shim) = shim() else { return };
    let _serial = cluster::cluster_wide();
    let ns = "e2e-chart-install";
    c.ensure_namespace(ns);
    c.ensure_namespace("e2e-chart-free");
    c.ensure_namespace("e2e-chart-enforced");
    c.kubectl_ok(&["label", "--overwrite", "namespace", "e2e-chart-enforced", "gitgate.dev/enforce=true"]);
    let objs = render(&shim, "gitgate", ns, "repo: {url: https://git.example.com/platform/gitops.git}\n");
    let is_webhook = |o: &&Value| o["kind"].as_str().is_some_and(|k| k.ends_with("WebhookConfiguration"));
    let mut ordered: Vec<&Value> = objs.iter().filter(|o| !is_webhook(o)).collect();
    ordered.extend(objs.iter().filter(is_webhook));
    let apply = |o: &Value| {
        let out = c.kubectl_stdin(
            &["apply", "--server-side", "--field-manager=helm", "-f", "-"],
            &serde_json::to_vec(o).unwrap(),
        );
        assert!(out.status.success(), "{}: {}", display(o), String::from_utf8_lossy(&out.stderr));
    };
    let uninstall = || {
        for o in objs.iter().filter(is_webhook).chain(objs.iter().filter(|o| !is_webhook(o)).rev()) {
            let kind = o["kind"].as_str().unwrap().to_lowercase();
            let name = o["metadata"]["name"].as_str().unwrap();
            let mut args = vec!["delete", kind.as_str(), name, "--ignore-not-found", "--wait=false"];
            if o["metadata"].get("namespace").is_some() {
                args.extend(["-n", ns]);
            }
            let _ = c.kubectl(&args);
        }
    };
    for o in &ordered {
        apply(o);
    }
    for o in &objs {
        let kind = o["kind"].as_str().unwrap().to_lowercase();
        let name = o["metadata"]["name"].as_str().unwrap();
        let mut args = vec!["get", kind.as_str(), name];
        if o["metadata"].get("namespace").is_some() {
            args.extend(["-n", ns]);
        }
        let got = c.kubectl(&args);
        assert!(got.status.success(), "{} was not installed", display(o));
    }
    // The apiserver loads webhook configurations asynchronously: wait for
    // the enforced namespace to fail closed (no gitgate endpoint answers).
    let deadline = Instant::now() + Duration::from_secs(30);
    let refused = loop {
        let out = c.kubectl(&["create", "configmap", "probe", "-n", "e2e-chart-enforced"]);
        if !out.status.success() {
            break String::from_utf8_lossy(&out.stderr).into_owned();
        }
        let _ = c.kubectl(&["delete", "configmap", "probe", "-n", "e2e-chart-enforced"]);
        if Instant::now() > deadline {
            uninstall();
            panic!("the enforced namespace never failed closed");
        }
        std::thread::sleep(Duration::from_millis(300));
    };
    let free = c.kubectl(&["create", "configmap", "probe", "-n", "e2e-chart-free"]);
    let system = c.kubectl(&["create", "configmap", "gitgate-e2e-probe", "-n", "kube-system"]);
    let own = c.kubectl(&["create", "configmap", "probe", "-n", ns]);
    uninstall();
    let _ = c.kubectl(&["delete", "configmap", "gitgate-e2e-probe", "-n", "kube-system"]);
    assert!(refused.contains("validate.gitgate.dev"), "{refused}");
    assert!(free.status.success(), "an unlabelled namespace fails open: {}", String::from_utf8_lossy(&free.stderr));
    assert!(system.status.success(), "kube-system is never intercepted: {}", String::from_utf8_lossy(&system.stderr));
    assert!(own.status.success(), "gitgate's namespace is never intercepted: {}", String::from_utf8_lossy(&own.stderr));
}
