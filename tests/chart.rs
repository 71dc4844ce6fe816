//! The Helm chart `charts/gitgate`, linted and rendered by the real Helm v4
//! engine (libhelm_c from PyPI's helm-python-sdk, behind
//! `tests/golden/helm/helm-shim.py`). Skips loudly when the SDK is not
//! installed (`pip install helm-python-sdk`).
//!
//! What a platform team relies on: strict lint passes and catches bad
//! values; the rendered install is highly available, never intercepts
//! kube-system, kube-node-lease or gitgate's own namespace, fails closed only
//! where enforcement is asked for, keeps the reconciler's rights apart from
//! the webhook's, serves a certificate the webhooks trust, and renders
//! exactly the webhook configurations gitgate's guard keeps in place.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;

use base64::Engine as _;
use clap::Parser as _;
use serde_json::{Value, json};

use gitgate::sync::guard::{self, Endpoint, GuardConfig};

const NS: &str = "gitgate-system";

fn chart_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("charts/gitgate")
}

fn shim() -> Option<PathBuf> {
    let ok = Command::new("python3").args(["-c", "import helm_python"]).output().is_ok_and(|o| o.status.success());
    if !ok {
        use std::io::Write as _;
        let _ = writeln!(
            std::io::stderr(),
            "\n*** SKIPPED: helm-python-sdk is not installed (pip install helm-python-sdk); the chart is not \
             linted or rendered ***\n"
        );
        return None;
    }
    Some(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden/helm/helm-shim.py"))
}

fn helm(shim: &Path, args: &[&str], values: &str) -> Output {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("values.yaml");
    std::fs::write(&file, values).unwrap();
    let mut cmd = Command::new("python3");
    cmd.arg(shim).args(args).arg("--values").arg(&file);
    cmd.output().unwrap()
}

fn lint(shim: &Path, values: &str) -> Output {
    helm(shim, &["lint", "--strict", chart_dir().to_str().unwrap(), "--namespace", NS], values)
}

/// `helm template gitgate charts/gitgate -n gitgate-system -f values`.
fn render(shim: &Path, values: &str) -> Vec<Value> {
    let out = helm(shim, &["template", "gitgate", chart_dir().to_str().unwrap(), "--namespace", NS], values);
    assert!(out.status.success(), "helm template failed: {}", String::from_utf8_lossy(&out.stderr));
    gitgate::render::yaml::parse_documents("rendered", &out.stdout).unwrap()
}

fn find<'a>(objs: &'a [Value], kind: &str, name: &str) -> Option<&'a Value> {
    objs.iter().find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
}

fn get<'a>(objs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    find(objs, kind, name).unwrap_or_else(|| panic!("no {kind} {name} rendered"))
}

fn of_kind<'a>(objs: &'a [Value], kind: &'a str) -> impl Iterator<Item = &'a Value> + 'a {
    objs.iter().filter(move |o| o["kind"] == kind)
}

fn b64(s: &Value) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD.decode(s.as_str().expect("a base64 string")).unwrap()
}

/// The webhook Deployment (`serve --sync off`, behind the Service the
/// apiserver calls) and the reconciler Deployment (the sync loop, the guard).
const WEBHOOK: &str = "gitgate";
const RECONCILER: &str = "gitgate-reconciler";

/// A Deployment's container arguments, as written.
fn raw_args(objs: &[Value], deployment: &str) -> Vec<String> {
    let args = &get(objs, "Deployment", deployment)["spec"]["template"]["spec"]["containers"][0]["args"];
    args.as_array().unwrap().iter().map(|a| a.as_str().unwrap().to_string()).collect()
}

/// The webhook Deployment's arguments, parsed by gitgate's own command line.
fn serve_args(objs: &[Value]) -> Box<gitgate::cmd::ServeArgs> {
    serve_args_of(objs, WEBHOOK)
}

/// A Deployment's container arguments, parsed by gitgate's own command line.
fn serve_args_of(objs: &[Value], deployment: &str) -> Box<gitgate::cmd::ServeArgs> {
    let args = raw_args(objs, deployment);
    let cli = gitgate::cmd::Cli::try_parse_from(std::iter::once("gitgate").chain(args.iter().map(String::as_str)))
        .unwrap_or_else(|e| panic!("gitgate rejects the chart's arguments {args:?}: {e}"));
    match cli.command {
        gitgate::cmd::Command::Serve(s) => s,
        other => panic!("the container runs {other:?}, not serve"),
    }
}

/// Whether `selector` (matchLabels) selects pods labelled `labels`.
fn selects(selector: &Value, labels: &Value) -> bool {
    selector.as_object().unwrap().iter().all(|(k, v)| &labels[k] == v)
}

#[test]
fn the_chart_passes_strict_lint_with_defaults_and_with_every_feature_on() {
    let Some(shim) = shim() else { return };
    let out = lint(&shim, "{}\n");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    let full = "\
replicaCount: 3
repo: {url: https://git.example.com/platform/gitops.git, revision: production, pollInterval: 1m}
hookSecret: {enabled: true}
git: {allowedSigners: {secret: commit-signers}, gpgKeyring: {configMap: release-keys}, requireSigned: true}
breakGlassGroups: [sre, oncall]
webhook: {installVAP: true, timeoutSeconds: 8, clientAuth: {enabled: true, caSecret: apiserver-client-ca}}
secrets: {unsealFor: ['group:deployers'], unsealWithoutClientAuth: true}
networkPolicy: {apiserverCIDRs: [10.0.0.10/32], dashboardFrom: [{namespaceSelector: {matchLabels: {team: web}}}]}
reconciler: {replicaCount: 3}
dashboard: {adminGroups: [platform-admins], service: {type: LoadBalancer}}
metrics: {port: 9102}
tls: {certManager: {enabled: true}}
age: {existingSecret: gitgate-age}
vault: {address: https://vault.example.com:8200, auth: approle, approleSecret: {name: vault-approle}, kv1Mounts: [legacy], caSecret: vault-ca}
persistence: {enabled: true}
affinity: {podAntiAffinity: {mode: required}}
topologySpreadConstraints: [{maxSkew: 1, topologyKey: topology.kubernetes.io/zone, whenUnsatisfiable: ScheduleAnyway}]
";
    let out = lint(&shim, full);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
}

#[test]
fn strict_lint_refuses_bad_values() {
    let Some(shim) = shim() else { return };
    for (values, names) in [
        ("webhook: {timeoutSeconds: 40}\n", "timeoutSeconds"),
        ("replicaCount: 0\n", "replicaCount"),
        ("webhook: {failurePolicy: Sometimes}\n", "failurePolicy"),
        ("repo: {pollInterval: often}\n", "pollInterval"),
        ("replicas: 3\n", "replicas"),
    ] {
        let out = lint(&shim, values);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(!out.status.success(), "{values:?} passed lint:\n{text}");
        assert!(text.contains(names), "{values:?}: the failure does not name {names}:\n{text}");
    }
}

#[test]
fn defaults_render_two_highly_available_hardened_deployments() {
    let Some(shim) = shim() else { return };
    let objs = render(&shim, "{}\n");
    assert_eq!(of_kind(&objs, "Deployment").count(), 2);
    for name in [WEBHOOK, RECONCILER] {
        let deploy = get(&objs, "Deployment", name);
        assert!(deploy["spec"]["replicas"].as_u64().unwrap() >= 2, "{name}");
        let pod = &deploy["spec"]["template"]["spec"];
        let term = &pod["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"][0];
        assert_eq!(term["podAffinityTerm"]["topologyKey"], "kubernetes.io/hostname");
        assert_eq!(
            term["podAffinityTerm"]["labelSelector"]["matchLabels"], deploy["spec"]["selector"]["matchLabels"],
            "{name}: anti-affinity selects its own pods"
        );
        // Each Deployment has its own PDB, selecting its pods and not the other's.
        let pdb = get(&objs, "PodDisruptionBudget", name);
        assert_eq!(pdb["spec"]["minAvailable"], 1);
        assert_eq!(pdb["spec"]["selector"]["matchLabels"], deploy["spec"]["selector"]["matchLabels"]);
        assert!(selects(&deploy["spec"]["selector"]["matchLabels"], &deploy["spec"]["template"]["metadata"]["labels"]));
        let other = get(&objs, "Deployment", if name == WEBHOOK { RECONCILER } else { WEBHOOK });
        assert!(
            !selects(&pdb["spec"]["selector"]["matchLabels"], &other["spec"]["template"]["metadata"]["labels"]),
            "{name}'s PDB also counts the other Deployment's pods"
        );

        let c = &pod["containers"][0];
        assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
        assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true);
        assert_eq!(c["securityContext"]["allowPrivilegeEscalation"], false);
        assert_eq!(c["securityContext"]["capabilities"]["drop"], json!(["ALL"]));
        assert_eq!(c["securityContext"]["seccompProfile"]["type"], "RuntimeDefault");
        assert_eq!(c["readinessProbe"]["httpGet"], json!({"path": "/readyz", "port": "https", "scheme": "HTTPS"}));
        assert_eq!(c["livenessProbe"]["httpGet"], json!({"path": "/healthz", "port": "https", "scheme": "HTTPS"}));
        assert!(c["resources"]["requests"]["cpu"].is_string() && c["resources"]["limits"]["memory"].is_string());
        let env: Vec<&Value> = c["env"].as_array().unwrap().iter().collect();
        for (env_name, field) in [("POD_NAME", "metadata.name"), ("POD_NAMESPACE", "metadata.namespace")] {
            assert!(
                env.iter().any(|e| e["name"] == env_name && e["valueFrom"]["fieldRef"]["fieldPath"] == field),
                "{name}: {env_name}"
            );
        }
        let volumes = pod["volumes"].as_array().unwrap();
        assert!(volumes.iter().any(|v| v["name"] == "data" && v["emptyDir"].is_object()));
        let args = serve_args_of(&objs, name);
        assert_eq!(args.listen.to_string(), "0.0.0.0:8443");
        let drain = gitgate::config::parse_duration(&args.drain_timeout).unwrap().as_secs();
        let pre_stop = c["lifecycle"]["preStop"]["sleep"]["seconds"].as_u64().unwrap();
        assert!(pod["terminationGracePeriodSeconds"].as_u64().unwrap() > drain + pre_stop);
        assert_eq!(args.sync.namespace, NS);
        // Both trust the reconciler's username: its ServiceAccount's.
        assert_eq!(args.reconciler.as_deref(), Some(format!("system:serviceaccount:{NS}:gitgate").as_str()));
        assert_eq!(c["ports"][0], json!({"name": "https", "containerPort": 8443, "protocol": "TCP"}));
        assert_eq!(c["ports"][1], json!({"name": "metrics", "containerPort": 9090, "protocol": "TCP"}));
        assert!(raw_args(&objs, name).contains(&"--metrics-listen=0.0.0.0:9090".to_string()), "{name}");
    }
    assert_eq!(get(&objs, "ServiceAccount", "gitgate")["metadata"]["namespace"], NS);
    assert_eq!(get(&objs, "ServiceAccount", "gitgate-webhook")["metadata"]["namespace"], NS);
    let svc = get(&objs, "Service", "gitgate");
    assert_eq!(svc["spec"]["ports"][0]["port"], 443);
    assert_eq!(svc["spec"]["ports"][0]["targetPort"], "https");
    assert_eq!(
        svc["spec"]["ports"][1],
        json!({"name": "metrics", "port": 9090, "targetPort": "metrics", "protocol": "TCP"})
    );

    // One replica each: no PDB (it would block every node drain).
    let single = render(&shim, "replicaCount: 1\nreconciler: {replicaCount: 1}\n");
    assert!(of_kind(&single, "PodDisruptionBudget").next().is_none());
    let required = render(&shim, "affinity: {podAntiAffinity: {mode: required}}\n");
    for name in [WEBHOOK, RECONCILER] {
        let pod = &get(&required, "Deployment", name)["spec"]["template"]["spec"];
        assert!(
            pod["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][0]["topologyKey"]
                .is_string()
        );
    }
    // Metrics off: no metrics port, flag or Service port.
    let off = render(&shim, "metrics: {enabled: false}\n");
    assert!(!raw_args(&off, WEBHOOK).iter().any(|a| a.starts_with("--metrics-listen")));
    assert_eq!(get(&off, "Service", "gitgate")["spec"]["ports"].as_array().unwrap().len(), 1);
}

/// One pod has one ServiceAccount: the webhook pods (admission, the secrets
/// bridge) and the reconciler pods (the applier, the guard, the dashboard)
/// are two Deployments, and each Service reaches only its own pods.
#[test]
fn the_webhook_and_the_reconciler_run_apart_under_their_own_service_accounts() {
    let Some(shim) = shim() else { return };
    let objs = render(
        &shim,
        "\
repo: {url: https://git.example.com/platform/gitops.git}
hookSecret: {enabled: true}
age: {existingSecret: my-age}
vault: {address: https://vault.example.com:8200}
dashboard: {adminGroups: [platform-admins]}
",
    );
    let pod = |name: &str| get(&objs, "Deployment", name)["spec"]["template"].clone();
    let (webhook_pod, reconciler_pod) = (pod(WEBHOOK), pod(RECONCILER));
    assert_eq!(webhook_pod["spec"]["serviceAccountName"], "gitgate-webhook");
    assert_eq!(reconciler_pod["spec"]["serviceAccountName"], "gitgate");

    // The webhook pods decide and unseal; they never sync or guard.
    let webhook = serve_args_of(&objs, WEBHOOK);
    assert_eq!(webhook.sync.sync, gitgate::cmd::sync::SyncMode::Off);
    assert_eq!(webhook.repo.as_deref(), Some("https://git.example.com/platform/gitops.git"), "provenance tracks Git");
    assert_eq!(webhook.sync.webhook_endpoint, None);
    assert_eq!(webhook.secrets.age_identity.as_deref(), Some(Path::new("/etc/gitgate/age/identity")));
    let env =
        |p: &Value, name: &str| p["spec"]["containers"][0]["env"].as_array().unwrap().iter().any(|e| e["name"] == name);
    assert!(env(&webhook_pod, "VAULT_ADDR") && !env(&reconciler_pod, "VAULT_ADDR"));
    // Push hooks arrive at the dashboard Service: the reconciler pods.
    assert!(env(&reconciler_pod, "GITGATE_HOOK_SECRET") && !env(&webhook_pod, "GITGATE_HOOK_SECRET"));

    // The reconciler applies, keeps the webhook configurations pointed at the
    // webhook Service, and reads no Secrets for keys.
    let reconciler = serve_args_of(&objs, RECONCILER);
    assert_eq!(reconciler.sync.sync, gitgate::cmd::sync::SyncMode::Auto);
    assert!(!reconciler.secrets.cluster_keys);
    assert_eq!(reconciler.secrets.age_identity, None);
    let volumes = |p: &Value| -> Vec<String> {
        p["spec"]["volumes"].as_array().unwrap().iter().map(|v| v["name"].as_str().unwrap().to_string()).collect()
    };
    assert!(volumes(&webhook_pod).contains(&"age".to_string()));
    assert!(!volumes(&reconciler_pod).contains(&"age".to_string()), "the reconciler mounts no age identity");
    let endpoint = Endpoint::parse(reconciler.sync.webhook_endpoint.as_deref().unwrap()).unwrap();
    let Endpoint::Service { namespace, name, port } = endpoint else { panic!("not a Service endpoint") };
    assert_eq!(namespace, NS);
    let svc = get(&objs, "Service", &name);
    assert_eq!(svc["spec"]["ports"][0]["port"], port);
    assert!(
        selects(&svc["spec"]["selector"], &webhook_pod["metadata"]["labels"]),
        "the apiserver reaches the webhook pods"
    );
    assert!(!selects(&svc["spec"]["selector"], &reconciler_pod["metadata"]["labels"]), "and never the reconciler's");
    let dashboard = get(&objs, "Service", "gitgate-dashboard");
    assert!(selects(&dashboard["spec"]["selector"], &reconciler_pod["metadata"]["labels"]));
    assert!(!selects(&dashboard["spec"]["selector"], &webhook_pod["metadata"]["labels"]));
    assert_eq!(dashboard["spec"]["ports"][0]["targetPort"], "https");
    // Dashboard admins on the reconciler, where the dashboard is served.
    assert!(raw_args(&objs, RECONCILER).contains(&"--admin-group=platform-admins".to_string()));
    assert!(!raw_args(&objs, WEBHOOK).iter().any(|a| a.starts_with("--admin-group")));
}

#[test]
fn values_become_gitgates_flags_and_secret_references() {
    let Some(shim) = shim() else { return };
    let objs = render(
        &shim,
        "\
repo: {url: https://git.example.com/platform/gitops.git, revision: production, path: clusters/prod/gitgate.yaml, pollInterval: 1m}
hookSecret: {enabled: true}
breakGlassGroups: [sre, oncall]
dashboard: {adminGroups: [platform]}
age: {existingSecret: my-age}
vault: {address: https://vault.example.com:8200, auth: approle, role: deployer, approleSecret: {name: vault-approle}}
audit: {signingKey: {existingSecret: my-audit-key}}
",
    );
    let args = serve_args(&objs);
    assert_eq!(args.repo.as_deref(), Some("https://git.example.com/platform/gitops.git"));
    assert_eq!(args.rev, "production");
    assert_eq!(args.config_path, "clusters/prod/gitgate.yaml");
    assert_eq!(args.poll_interval, "1m");
    assert_eq!(args.break_glass_groups, ["sre", "oncall"]);
    assert_eq!(args.sync.sync, gitgate::cmd::sync::SyncMode::Off, "the webhook pods never sync");
    assert_eq!(serve_args_of(&objs, RECONCILER).sync.sync, gitgate::cmd::sync::SyncMode::Auto);
    assert_eq!(serve_args_of(&objs, RECONCILER).dashboard.admin_groups, ["platform"]);
    assert!(args.dashboard.admin_groups.is_empty(), "the webhook pods serve no dashboard");
    assert_eq!(args.secrets.age_identity.as_deref(), Some(Path::new("/etc/gitgate/age/identity")));
    assert_eq!(args.secrets.vault_role, "deployer");
    assert_eq!(args.audit.audit_key.as_deref(), Some(Path::new("/etc/gitgate/audit/checkpoint.pk8")));
    assert_eq!(args.tls_cert.as_deref(), Some(Path::new("/etc/gitgate/tls/tls.crt")));
    let pod = &get(&objs, "Deployment", WEBHOOK)["spec"]["template"]["spec"];
    let env = pod["containers"][0]["env"].as_array().unwrap();
    let reconciler_env =
        get(&objs, "Deployment", RECONCILER)["spec"]["template"]["spec"]["containers"][0]["env"].clone();
    let secret_env = |name: &str| {
        env.iter()
            .chain(reconciler_env.as_array().unwrap())
            .find(|e| e["name"] == name)
            .map(|e| e["valueFrom"]["secretKeyRef"]["name"].as_str().unwrap().to_string())
            .unwrap_or_else(|| panic!("no {name}"))
    };
    assert_eq!(secret_env("GITGATE_HOOK_SECRET"), "gitgate-hook");
    assert_eq!(secret_env("VAULT_ROLE_ID"), "vault-approle");
    assert_eq!(secret_env("VAULT_SECRET_ID"), "vault-approle");
    assert!(env.iter().any(|e| e["name"] == "VAULT_ADDR" && e["value"] == "https://vault.example.com:8200"));
    let secret_volume = |name: &str| {
        pod["volumes"].as_array().unwrap().iter().find(|v| v["name"] == name).unwrap()["secret"]["secretName"].clone()
    };
    assert_eq!(secret_volume("age"), "my-age");
    assert_eq!(secret_volume("audit-key"), "my-audit-key");
    // Given Secrets are used, not made; the hook secret is generated.
    assert!(find(&objs, "Secret", "gitgate-age").is_none() && find(&objs, "Secret", "gitgate-audit-key").is_none());
    assert_eq!(b64(&get(&objs, "Secret", "gitgate-hook")["data"]["hook-secret"]).len(), 40);

    // No repository: the bundled example, admission only.
    let objs = render(&shim, "{}\n");
    for name in [WEBHOOK, RECONCILER] {
        let args = serve_args_of(&objs, name);
        assert_eq!(args.repo, None);
        assert_eq!(args.sync.sync, gitgate::cmd::sync::SyncMode::Off);
    }
}

/// Spoke mode is one value (issue 18): `repo.cluster` reaches both the
/// webhook and the reconciler pods as `--cluster`, so the cluster's gate
/// enforces exactly the apps its reconciler applies; a bad name fails lint.
#[test]
fn repo_cluster_makes_every_pod_a_spoke_of_that_cluster() {
    let Some(shim) = shim() else { return };
    let objs = render(&shim, "repo: {url: https://git.example.com/fleet.git, cluster: dr}\n");
    for name in [WEBHOOK, RECONCILER] {
        assert_eq!(serve_args_of(&objs, name).cluster.as_deref(), Some("dr"), "{name}");
    }
    let objs = render(&shim, "repo: {url: https://git.example.com/fleet.git}\n");
    assert_eq!(serve_args_of(&objs, RECONCILER).cluster, None, "no value: every app");
    assert!(!lint(&shim, "repo: {url: https://git.example.com/fleet.git, cluster: \"dr cluster\"}\n").status.success());
}

/// `fleet.spokes` gives the reconciler pods (the dashboard's) the fleet
/// view: a fleet file gitgate accepts, with each spoke's token and CA from
/// the named Secret; the webhook pods never read other clusters.
#[test]
fn fleet_spokes_give_the_dashboard_pods_a_fleet_file_gitgate_accepts() {
    let Some(shim) = shim() else { return };
    let values = "dashboard: {readerGroups: [\"system:serviceaccounts:gitgate-fleet\"]}
fleet:
  secretName: hub-tokens
  interval: 30s
  spokes:
    - {cluster: staging, url: \"https://gitgate.staging.example.com\"}
    - {cluster: dr, url: \"https://gitgate.dr.example.com:8443\", parityGroup: prod}
  parityGroups:
    - {name: prod, allowedDifferences: [\"ConfigMap shop/region\"]}
";
    let objs = render(&shim, values);
    let reconciler = serve_args_of(&objs, RECONCILER);
    assert_eq!(reconciler.fleet.as_deref(), Some(Path::new("/etc/gitgate/fleet/fleet.yaml")));
    assert_eq!(reconciler.fleet_interval, "30s");
    assert_eq!(reconciler.dashboard.reader_groups, ["system:serviceaccounts:gitgate-fleet"], "the hub reads, no more");
    assert_eq!(serve_args_of(&objs, WEBHOOK).fleet, None, "the webhook pods read no other cluster");
    let cm = find(&objs, "ConfigMap", "gitgate-fleet").expect("the fleet file's ConfigMap");
    let file = gitgate::fleet::file::FleetFile::parse(cm["data"]["fleet.yaml"].as_str().unwrap(), Path::new("/"))
        .unwrap_or_else(|e| panic!("gitgate refuses the chart's fleet file: {e}"));
    let dr = &file.spokes[1];
    assert_eq!((dr.cluster.as_str(), dr.url.as_str()), ("dr", "https://gitgate.dr.example.com:8443"));
    assert_eq!(dr.token_file.as_deref(), Some(Path::new("/etc/gitgate/fleet-secrets/dr.token")));
    assert_eq!(dr.ca_file.as_deref(), Some(Path::new("/etc/gitgate/fleet-secrets/dr.ca.crt")));
    assert_eq!((dr.parity_group.as_deref(), file.spokes[0].parity_group.as_deref()), (Some("prod"), None));
    assert_eq!(file.allowed["prod"], ["ConfigMap shop/region"]);
    let secret_volume = find(&objs, "Deployment", RECONCILER).unwrap()["spec"]["template"]["spec"]["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "fleet-secrets")
        .cloned()
        .expect("the tokens' volume");
    assert_eq!(secret_volume["secret"]["secretName"], "hub-tokens");

    let no_secret = helm(
        &shim,
        &["template", "gitgate", chart_dir().to_str().unwrap(), "--namespace", NS],
        "fleet: {spokes: [{cluster: dr, url: \"https://dr\"}]}\n",
    );
    let err = String::from_utf8_lossy(&no_secret.stderr);
    assert!(!no_secret.status.success() && err.contains("fleet.spokes needs fleet.secretName"), "{err}");
    assert!(!lint(&shim, "fleet: {secretName: t, spokes: [{cluster: dr, url: \"http://dr\"}]}\n").status.success());
    assert!(find(&render(&shim, "{}\n"), "ConfigMap", "gitgate-fleet").is_none(), "no spokes: no fleet file");
}

#[test]
fn every_webhook_spares_system_namespaces_and_fails_closed_only_where_enforced() {
    let Some(shim) = shim() else { return };
    for values in ["{}\n", "webhook: {enforce: all, timeoutSeconds: 10}\n"] {
        let objs = render(&shim, values);
        let labelled = values == "{}\n";
        let configs: Vec<&Value> = of_kind(&objs, "ValidatingWebhookConfiguration")
            .chain(of_kind(&objs, "MutatingWebhookConfiguration"))
            .collect();
        assert_eq!(configs.len(), 2);
        let mut fail = 0;
        for config in configs {
            for w in config["webhooks"].as_array().unwrap() {
                let exprs = w["namespaceSelector"]["matchExpressions"].as_array().unwrap();
                let excluded = exprs
                    .iter()
                    .find(|e| e["key"] == "kubernetes.io/metadata.name" && e["operator"] == "NotIn")
                    .unwrap_or_else(|| panic!("{} excludes no namespaces", w["name"]));
                for ns in ["kube-system", "kube-node-lease", NS] {
                    assert!(
                        excluded["values"].as_array().unwrap().iter().any(|v| v == ns),
                        "{} misses {ns}",
                        w["name"]
                    );
                }
                assert_eq!(w["sideEffects"], "NoneOnDryRun");
                assert!((1..=10).contains(&w["timeoutSeconds"].as_u64().unwrap()));
                let conditions = w["matchConditions"].as_array().map(Vec::len).unwrap_or(0);
                if config["kind"] == "ValidatingWebhookConfiguration" || labelled {
                    assert!(conditions > 0, "{} has no matchConditions", w["name"]);
                }
                let enforced = exprs.iter().any(|e| e["key"] == "gitgate.dev/enforce" && e["operator"] == "In");
                if w["failurePolicy"] == "Fail" {
                    fail += 1;
                    assert!(enforced || !labelled, "{} fails closed outside enforced namespaces", w["name"]);
                } else {
                    assert_eq!(w["failurePolicy"], "Ignore");
                    assert!(!enforced);
                }
            }
        }
        assert_eq!(fail, 2, "one enforced validating and one enforced mutating webhook");
    }
    // The observe webhook takes only namespaced objects (and Namespaces);
    // cluster-scoped objects are enforced.
    let objs = render(&shim, "{}\n");
    let vwc = get(&objs, "ValidatingWebhookConfiguration", guard::VALIDATING_NAME);
    assert_eq!(vwc["webhooks"][0]["rules"][0]["scope"], "*");
    assert_eq!(vwc["webhooks"][1]["rules"][0]["scope"], "Namespaced");
    // Every subresource reaches gitgate (issue 15); evictions through a
    // webhook of their own that fails open, so a drain never waits on it.
    for w in &vwc["webhooks"].as_array().unwrap()[..2] {
        assert_eq!(w["rules"][0]["resources"], json!(["*/*"]), "{}", w["name"]);
        assert!(w["matchConditions"].as_array().unwrap().iter().any(|c| c["name"] == "not-evictions"));
    }
    let evictions = &vwc["webhooks"][2];
    assert_eq!(evictions["name"], guard::EVICTIONS_WEBHOOK);
    assert_eq!(evictions["rules"][0]["resources"], json!(["pods/eviction"]));
    assert_eq!(evictions["failurePolicy"], "Ignore");
    assert!(
        vwc["webhooks"][0]["matchConditions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["expression"].as_str().unwrap().contains("'leases'"))
    );
}

#[test]
fn rbac_keeps_the_reconcilers_rights_apart_from_the_webhooks_read_rights() {
    let Some(shim) = shim() else { return };
    let objs = render(&shim, "{}\n");
    let reconciler = get(&objs, "ClusterRole", "gitgate-reconciler");
    let webhook = get(&objs, "ClusterRole", "gitgate-webhook");
    for rule in webhook["rules"].as_array().unwrap() {
        for verb in rule["verbs"].as_array().unwrap() {
            assert!(["get", "list", "watch"].contains(&verb.as_str().unwrap()), "webhook role may {verb}");
        }
    }
    // Each role is bound to its own Deployment's ServiceAccount, and only to it.
    for (role, sa) in [("gitgate-reconciler", "gitgate"), ("gitgate-webhook", "gitgate-webhook")] {
        let binding = get(&objs, "ClusterRoleBinding", role);
        assert_eq!(binding["roleRef"]["name"], role);
        assert_eq!(binding["subjects"], json!([{"kind": "ServiceAccount", "name": sa, "namespace": NS}]));
    }
    // CEL `authorizer`: only when asked, the one create of the webhook role
    let objs_authz = render(&shim, "webhook:\n  authorizer: true\n");
    let rules = get(&objs_authz, "ClusterRole", "gitgate-webhook")["rules"].as_array().unwrap().clone();
    assert!(rules.contains(
        &json!({"apiGroups": ["authorization.k8s.io"], "resources": ["subjectaccessreviews"], "verbs": ["create"]})
    ));
    assert_eq!(rules.len(), webhook["rules"].as_array().unwrap().len() + 1);
    for (binding, sa) in
        [("gitgate-reconciler", "gitgate"), ("gitgate-keys", "gitgate-webhook"), ("gitgate-webhook", "gitgate-webhook")]
    {
        let binding = get(&objs, "RoleBinding", binding);
        assert_eq!(binding["subjects"], json!([{"kind": "ServiceAccount", "name": sa, "namespace": NS}]));
    }
    // The webhook pods' own namespace rights: their audit checkpoints
    // (ConfigMap + Event); nothing that deletes, no Secrets, no tokens.
    let webhook_role = get(&objs, "Role", "gitgate-webhook");
    assert_eq!(webhook_role["metadata"]["namespace"], NS);
    assert_eq!(
        webhook_role["rules"],
        json!([
            {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "create", "update"]},
            {"apiGroups": [""], "resources": ["events"], "verbs": ["create"]},
        ])
    );
    for o in objs.iter().filter(|o| o["kind"] == "ClusterRole" || o["kind"] == "Role") {
        for rule in o["rules"].as_array().unwrap() {
            assert!(
                !rule["resources"].as_array().unwrap().iter().any(|r| r == "serviceaccounts/token"),
                "{} grants tokens",
                o["metadata"]["name"]
            );
        }
    }
    // The guard edits its webhook configurations by name only.
    let guarded = reconciler["rules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["verbs"].as_array().unwrap().iter().any(|v| v == "patch") && r["resourceNames"].is_array())
        .expect("a patch rule limited by name");
    assert_eq!(guarded["resourceNames"], json!([guard::VALIDATING_NAME, guard::MUTATING_NAME]));
    // Dashboard logins: gitgate asks whose a token is (TokenReview), nothing more.
    let reviews = reconciler["rules"].as_array().unwrap().iter().find(|r| r["resources"] == json!(["tokenreviews"]));
    assert_eq!(
        reviews.expect("a tokenreviews rule"),
        &json!({"apiGroups": ["authentication.k8s.io"], "resources": ["tokenreviews"], "verbs": ["create"]})
    );
    // Leases and inventories in gitgate's own namespace, through a Role.
    let role = get(&objs, "Role", "gitgate-reconciler");
    assert_eq!(role["metadata"]["namespace"], NS);
    let resources: Vec<&Value> = role["rules"].as_array().unwrap().iter().map(|r| &r["resources"][0]).collect();
    assert_eq!(resources, [&json!("leases"), &json!("configmaps"), &json!("events")]);
    assert_eq!(get(&objs, "RoleBinding", "gitgate-reconciler")["roleRef"]["kind"], "Role");
    // With no age identity given, gitgate keeps the cluster's in Secrets of
    // its namespace: read and create them there, never update or delete.
    let keys = get(&objs, "Role", "gitgate-keys");
    assert_eq!(
        keys["rules"],
        json!([{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get", "list", "watch", "create"]}])
    );
    let given = render(&shim, "age: {existingSecret: my-age}\n");
    assert!(!given.iter().any(|o| o["kind"] == "Role" && o["metadata"]["name"] == "gitgate-keys"));

    // The reconciler's kinds narrow with a value; without the guard no
    // webhook-configuration rights remain.
    let narrow = render(
        &shim,
        "webhook: {guard: false}\nrbac: {reconcilerRules: [{apiGroups: [apps], resources: [deployments], verbs: [get, list, watch, patch]}]}\n",
    );
    let rules = get(&narrow, "ClusterRole", "gitgate-reconciler")["rules"].as_array().unwrap().clone();
    assert_eq!(rules[0]["resources"], json!(["deployments"]));
    assert!(!rules.iter().any(|r| r["apiGroups"] == json!(["admissionregistration.k8s.io"])));
    assert!(!rules.iter().any(|r| r["resources"] == json!(["*"])));
}

/// A TLS handshake, in memory, between gitgate's own server configuration
/// (from the chart's certificate and key) and a client that trusts only the
/// webhooks' caBundle and dials the Service's DNS name.
fn handshake(cert_pem: &[u8], key_pem: &[u8], ca_pem: &[u8], name: &str) -> Result<(), String> {
    use rustls::pki_types::pem::PemObject as _;
    use rustls::pki_types::{CertificateDer, ServerName};
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("tls.crt"), cert_pem).unwrap();
    std::fs::write(dir.path().join("tls.key"), key_pem).unwrap();
    let server_config = gitgate::tls::server_config(&dir.path().join("tls.crt"), &dir.path().join("tls.key"))
        .map_err(|e| format!("gitgate refuses the certificate: {}", gitgate::error_chain(&e)))?;
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from_pem_slice(ca_pem).unwrap()).unwrap();
    let client_config = rustls::ClientConfig::builder().with_root_certificates(roots).with_no_client_auth();
    let mut server = rustls::ServerConnection::new(server_config).unwrap();
    let mut client =
        rustls::ClientConnection::new(Arc::new(client_config), ServerName::try_from(name.to_string()).unwrap())
            .unwrap();
    for _ in 0..10 {
        let mut buf = Vec::new();
        client.write_tls(&mut buf).unwrap();
        server.read_tls(&mut buf.as_slice()).unwrap();
        server.process_new_packets().map_err(|e| e.to_string())?;
        let mut buf = Vec::new();
        server.write_tls(&mut buf).unwrap();
        client.read_tls(&mut buf.as_slice()).unwrap();
        client.process_new_packets().map_err(|e| e.to_string())?;
        if !client.is_handshaking() && !server.is_handshaking() {
            return Ok(());
        }
    }
    Err("the handshake did not finish".into())
}

#[test]
fn the_generated_certificate_is_served_by_gitgate_and_trusted_by_every_webhook() {
    let Some(shim) = shim() else { return };
    let objs = render(&shim, "{}\n");
    let secret = get(&objs, "Secret", "gitgate-tls");
    assert_eq!(secret["type"], "kubernetes.io/tls");
    let ca = b64(&secret["data"]["ca.crt"]);
    for config in of_kind(&objs, "ValidatingWebhookConfiguration").chain(of_kind(&objs, "MutatingWebhookConfiguration"))
    {
        for w in config["webhooks"].as_array().unwrap() {
            assert_eq!(b64(&w["clientConfig"]["caBundle"]), ca, "{} trusts another CA", w["name"]);
        }
    }
    let (cert, key) = (b64(&secret["data"]["tls.crt"]), b64(&secret["data"]["tls.key"]));
    handshake(&cert, &key, &ca, &format!("gitgate.{NS}.svc")).unwrap();
    // The Service name is the one the webhooks call, and no other name is trusted.
    let w = &get(&objs, "ValidatingWebhookConfiguration", guard::VALIDATING_NAME)["webhooks"][0];
    assert_eq!(
        w["clientConfig"]["service"],
        json!({"namespace": NS, "name": "gitgate", "port": 443, "path": "/validate"})
    );
    assert!(handshake(&cert, &key, &ca, "gitgate.elsewhere.svc").is_err());
    // The pods mount that Secret.
    for name in [WEBHOOK, RECONCILER] {
        let args = serve_args_of(&objs, name);
        assert_eq!(args.cert_dir, Path::new("/etc/gitgate/tls"));
        let pod = &get(&objs, "Deployment", name)["spec"]["template"]["spec"];
        let tls = pod["volumes"].as_array().unwrap().iter().find(|v| v["name"] == "tls").unwrap();
        assert_eq!(tls["secret"]["secretName"], "gitgate-tls");
    }
}

#[test]
fn cert_manager_issues_the_certificate_and_injects_the_ca() {
    let Some(shim) = shim() else { return };
    let objs = render(&shim, "tls: {certManager: {enabled: true}}\n");
    let cert = get(&objs, "Certificate", "gitgate-serving");
    assert_eq!(cert["spec"]["secretName"], "gitgate-tls");
    assert!(cert["spec"]["dnsNames"].as_array().unwrap().iter().any(|n| n == &json!(format!("gitgate.{NS}.svc"))));
    assert_eq!(cert["spec"]["issuerRef"], json!({"name": "gitgate-ca", "kind": "Issuer"}));
    assert_eq!(get(&objs, "Issuer", "gitgate-selfsigned")["spec"], json!({"selfSigned": {}}));
    assert_eq!(get(&objs, "Certificate", "gitgate-ca")["spec"]["isCA"], true);
    assert!(find(&objs, "Secret", "gitgate-tls").is_none(), "cert-manager writes the TLS Secret");
    for kind in ["ValidatingWebhookConfiguration", "MutatingWebhookConfiguration"] {
        let config = of_kind(&objs, kind).next().unwrap();
        assert_eq!(
            config["metadata"]["annotations"]["cert-manager.io/inject-ca-from"],
            format!("{NS}/gitgate-serving")
        );
        assert!(config["webhooks"].as_array().unwrap().iter().all(|w| w["clientConfig"].get("caBundle").is_none()));
    }
    // A given issuer: no Issuers of the chart's own.
    let objs = render(&shim, "tls: {certManager: {enabled: true, issuerRef: {name: corp-ca, kind: ClusterIssuer}}}\n");
    assert!(of_kind(&objs, "Issuer").next().is_none());
    assert_eq!(get(&objs, "Certificate", "gitgate-serving")["spec"]["issuerRef"]["kind"], "ClusterIssuer");
}

#[test]
fn the_generated_audit_signing_key_is_one_gitgate_loads() {
    let Some(shim) = shim() else { return };
    let objs = render(&shim, "{}\n");
    let secret = get(&objs, "Secret", "gitgate-audit-key");
    assert_eq!(secret["metadata"]["annotations"]["helm.sh/resource-policy"], "keep");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("checkpoint.pk8");
    std::fs::write(&path, b64(&secret["data"]["checkpoint.pk8"])).unwrap();
    let (_signer, generated) = gitgate::audit::checkpoint::Signer::load_or_generate(&path)
        .unwrap_or_else(|e| panic!("gitgate refuses the chart's key: {}", gitgate::error_chain(&e)));
    assert!(!generated, "the chart's key was loaded, not replaced");
}

/// The guard's configuration for what the chart tells gitgate.
fn guard_config(args: &gitgate::cmd::ServeArgs, ca_pem: Vec<u8>) -> GuardConfig {
    let s = &args.sync;
    GuardConfig {
        endpoint: Endpoint::parse(s.webhook_endpoint.as_deref().expect("--webhook-endpoint")).unwrap(),
        ca_pem,
        ca_file: None,
        namespace: s.namespace.clone(),
        failure_policy: s.webhook_failure_policy.clone(),
        timeout_seconds: s.webhook_timeout_seconds,
        enforce_label: s.webhook_enforce_label.clone(),
        vap: None,
    }
}

#[test]
fn the_chart_renders_exactly_the_webhook_configurations_gitgates_guard_keeps() {
    let Some(shim) = shim() else { return };
    for values in [
        "{}\n",
        "webhook: {enforce: all, failurePolicy: Ignore, timeoutSeconds: 8}\n",
        "webhook: {enforceLabel: {key: example.com/locked, value: \"yes\"}, timeoutSeconds: 3}\nservice: {port: 8443}\n",
    ] {
        let objs = render(&shim, values);
        let ca = b64(&get(&objs, "Secret", "gitgate-tls")["data"]["ca.crt"]);
        // The reconciler pods run the guard.
        let args = serve_args_of(&objs, RECONCILER);
        for (key, want) in guard::objects(&guard_config(&args, ca)) {
            let got = get(&objs, &key.kind, &key.name);
            assert_eq!(got["apiVersion"], want["apiVersion"]);
            assert_eq!(got["metadata"]["labels"][guard::GUARD_LABEL], "true", "{values}: the guard cannot watch it");
            assert_eq!(got["webhooks"], want["webhooks"], "{values}: chart and guard differ on {}", key.name);
            // The guard's edit detector agrees: nothing to restore.
            assert_eq!(guard::tampered(&want, got), None, "{values}");
        }
    }
}

#[test]
fn without_the_guard_gitgate_is_not_told_to_keep_webhook_configurations() {
    let Some(shim) = shim() else { return };
    let objs = render(&shim, "webhook: {guard: false}\n");
    for name in [WEBHOOK, RECONCILER] {
        assert_eq!(serve_args_of(&objs, name).sync.webhook_endpoint, None);
    }
    // The chart still installs them.
    assert!(find(&objs, "ValidatingWebhookConfiguration", guard::VALIDATING_NAME).is_some());
    assert!(find(&objs, "MutatingWebhookConfiguration", guard::MUTATING_NAME).is_some());
    let with_vap = render(&shim, "webhook: {installVAP: true}\n");
    assert!(serve_args_of(&with_vap, RECONCILER).sync.install_vap);
    let bad = helm(
        &shim,
        &["template", "gitgate", chart_dir().to_str().unwrap(), "--namespace", NS],
        "webhook: {guard: false, installVAP: true}\n",
    );
    assert!(!bad.status.success(), "installVAP without the guard renders");
}

/// Extra CEL policies ride in a ConfigMap gitgate loads with `--policies`;
/// they parse with gitgate's own policy parser, and a change rolls the pods.
#[test]
fn extra_policies_are_mounted_and_passed_to_gitgate() {
    let Some(shim) = shim() else { return };
    let policy =
        std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("policies/no-latest-tag.yaml"))
            .unwrap();
    let indented: String = policy.lines().map(|l| format!("    {l}\n")).collect();
    let objs = render(&shim, &format!("policies:\n  no-latest-tag.yaml: |\n{indented}"));
    let cm = get(&objs, "ConfigMap", "gitgate-policies");
    let text = cm["data"]["no-latest-tag.yaml"].as_str().unwrap();
    let docs = gitgate::policy::parse_documents("chart", text).unwrap();
    assert_eq!(docs.policies[0].metadata.name, "no-latest-tag");
    assert_eq!(docs.bindings.len(), 1);
    let args = serve_args(&objs);
    assert_eq!(args.policies, [std::path::PathBuf::from("/etc/gitgate/policies")]);
    let pod = &get(&objs, "Deployment", "gitgate")["spec"]["template"];
    assert!(pod["metadata"]["annotations"]["checksum/policies"].is_string());
    assert!(pod["spec"]["volumes"].as_array().unwrap().iter().any(|v| v["configMap"]["name"] == "gitgate-policies"));
    // Without policies: nothing is mounted, the built-in provenance gate alone.
    let plain = render(&shim, "{}\n");
    assert!(find(&plain, "ConfigMap", "gitgate-policies").is_none());
    assert!(serve_args(&plain).policies.is_empty());
    // A file name that is not YAML is refused by the schema.
    let out = lint(&shim, "policies: {README: x}\n");
    assert!(!out.status.success());
}

/// The NetworkPolicies admit the webhook port only from the apiservers'
/// CIDRs, the metrics port only from the Prometheus namespaces, and the
/// reconciler's dashboard port only from the configured peers.
#[test]
fn network_policies_admit_each_port_only_from_its_sources() {
    let Some(shim) = shim() else { return };
    let objs = render(
        &shim,
        "\
networkPolicy:
  apiserverCIDRs: [10.0.0.10/32, 10.0.0.11/32]
  metricsNamespaceSelector: {matchLabels: {team: observability}}
  dashboardFrom: [{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: ingress-nginx}}}]
",
    );
    let webhook_pod = &get(&objs, "Deployment", WEBHOOK)["spec"]["template"];
    let reconciler_pod = &get(&objs, "Deployment", RECONCILER)["spec"]["template"];
    let webhook = get(&objs, "NetworkPolicy", "gitgate");
    assert!(selects(&webhook["spec"]["podSelector"]["matchLabels"], &webhook_pod["metadata"]["labels"]));
    assert!(!selects(&webhook["spec"]["podSelector"]["matchLabels"], &reconciler_pod["metadata"]["labels"]));
    assert_eq!(webhook["spec"]["policyTypes"], json!(["Ingress"]), "egress stays open");
    assert_eq!(
        webhook["spec"]["ingress"],
        json!([
            {"ports": [{"protocol": "TCP", "port": "https"}],
             "from": [{"ipBlock": {"cidr": "10.0.0.10/32"}}, {"ipBlock": {"cidr": "10.0.0.11/32"}}]},
            {"ports": [{"protocol": "TCP", "port": "metrics"}],
             "from": [{"namespaceSelector": {"matchLabels": {"team": "observability"}}}]},
        ])
    );
    let reconciler = get(&objs, "NetworkPolicy", "gitgate-reconciler");
    assert!(selects(&reconciler["spec"]["podSelector"]["matchLabels"], &reconciler_pod["metadata"]["labels"]));
    assert_eq!(
        reconciler["spec"]["ingress"][0],
        json!({"ports": [{"protocol": "TCP", "port": "https"}],
               "from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}}}]})
    );
    // The named ports exist on the pods they protect.
    for pod in [webhook_pod, reconciler_pod] {
        let ports: Vec<&Value> =
            pod["spec"]["containers"][0]["ports"].as_array().unwrap().iter().map(|p| &p["name"]).collect();
        assert_eq!(ports, [&json!("https"), &json!("metrics")]);
    }

    // Defaults: no dashboard peers (the reconciler's https port is closed;
    // port-forward still works) and metrics from the monitoring namespace.
    let objs = render(&shim, "{}\n");
    let reconciler = get(&objs, "NetworkPolicy", "gitgate-reconciler");
    let rules = reconciler["spec"]["ingress"].as_array().unwrap();
    assert_eq!(rules.len(), 1);
    assert_eq!(rules[0]["ports"], json!([{"protocol": "TCP", "port": "metrics"}]));
    assert_eq!(
        rules[0]["from"],
        json!([{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}])
    );
    // Without metrics and peers: every ingress to the reconciler is closed.
    let objs = render(&shim, "metrics: {enabled: false}\n");
    assert_eq!(get(&objs, "NetworkPolicy", "gitgate-reconciler")["spec"]["ingress"], json!([]));
    let objs = render(&shim, "networkPolicy: {enabled: false}\n");
    assert!(of_kind(&objs, "NetworkPolicy").next().is_none());
    // A CIDR that is not one is refused before anything reaches the cluster.
    let out = lint(&shim, "networkPolicy: {apiserverCIDRs: [apiserver.example.com]}\n");
    assert!(!out.status.success());
}

/// `webhook.clientAuth` mounts the CA the apiserver's client certificate
/// chains to and names the accepted clients; `secrets.*` says for whom
/// sealed Secrets are unsealed, and unsealing without client auth needs the
/// NetworkPolicy to be the guard.
#[test]
fn client_auth_and_unsealing_values_become_the_webhooks_flags() {
    let Some(shim) = shim() else { return };
    let ca = "-----BEGIN CERTIFICATE-----\nMIIBdummy\n-----END CERTIFICATE-----\n";
    let indented: String = ca.lines().map(|l| format!("      {l}\n")).collect();
    let objs = render(
        &shim,
        &format!(
            "webhook:\n  clientAuth:\n    enabled: true\n    names: [kube-apiserver-webhook-client, apiserver-2]\n    caBundle: |\n{indented}\
             secrets: {{unsealFor: ['group:platform-deployers', 'user:ci-bot']}}\n"
        ),
    );
    let args = raw_args(&objs, WEBHOOK);
    for want in [
        "--client-ca=/etc/gitgate/client-ca/ca.crt",
        "--client-name=kube-apiserver-webhook-client",
        "--client-name=apiserver-2",
        "--unseal-for=group:platform-deployers",
        "--unseal-for=user:ci-bot",
    ] {
        assert!(args.contains(&want.to_string()), "{want} missing from {args:?}");
    }
    assert!(!args.contains(&"--unseal-without-client-auth".to_string()));
    // The reconciler answers no admission requests: none of these.
    assert!(!raw_args(&objs, RECONCILER).iter().any(|a| a.starts_with("--client-") || a.starts_with("--unseal")));
    assert_eq!(get(&objs, "ConfigMap", "gitgate-client-ca")["data"]["ca.crt"], ca);
    let pod = &get(&objs, "Deployment", WEBHOOK)["spec"]["template"]["spec"];
    let volume = pod["volumes"].as_array().unwrap().iter().find(|v| v["name"] == "client-ca").unwrap();
    assert_eq!(volume["configMap"]["name"], "gitgate-client-ca");
    let mount =
        pod["containers"][0]["volumeMounts"].as_array().unwrap().iter().find(|m| m["name"] == "client-ca").unwrap();
    assert_eq!(mount["mountPath"], "/etc/gitgate/client-ca");

    // A CA from a Secret, read under its own key as ca.crt.
    let objs =
        render(&shim, "webhook: {clientAuth: {enabled: true, caSecret: apiserver-client-ca, caSecretKey: tls.crt}}\n");
    let pod = &get(&objs, "Deployment", WEBHOOK)["spec"]["template"]["spec"];
    let volume = pod["volumes"].as_array().unwrap().iter().find(|v| v["name"] == "client-ca").unwrap();
    assert_eq!(
        volume["secret"],
        json!({"secretName": "apiserver-client-ca", "items": [{"key": "tls.crt", "path": "ca.crt"}]})
    );
    assert!(raw_args(&objs, WEBHOOK).contains(&"--client-name=kube-apiserver-webhook-client".to_string()));
    assert!(find(&objs, "ConfigMap", "gitgate-client-ca").is_none());

    // Refused: client auth with no CA; unsealing without client auth
    // unless the NetworkPolicy admits only the apiservers; a bad identity.
    let template =
        |values: &str| helm(&shim, &["template", "gitgate", chart_dir().to_str().unwrap(), "--namespace", NS], values);
    let out = template("webhook: {clientAuth: {enabled: true}}\n");
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("caSecret"));
    let out = template("secrets: {unsealWithoutClientAuth: true}\n");
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("apiserverCIDRs"));
    let out = template(
        "secrets: {unsealWithoutClientAuth: true}\nnetworkPolicy: {enabled: false, apiserverCIDRs: [10.0.0.10/32]}\n",
    );
    assert!(!out.status.success());
    let objs =
        render(&shim, "secrets: {unsealWithoutClientAuth: true}\nnetworkPolicy: {apiserverCIDRs: [10.0.0.10/32]}\n");
    assert!(raw_args(&objs, WEBHOOK).contains(&"--unseal-without-client-auth".to_string()));
    assert!(!lint(&shim, "secrets: {unsealFor: [ci-bot]}\n").status.success(), "user: or group: is required");
}

/// The chart's default image and securityContext are what
/// charts/image/build.sh and the Dockerfile build: the repository the chart
/// names, a binary at /gitgate, user and group 65532.
#[test]
fn the_charts_image_settings_match_the_image_the_repository_builds() {
    let Some(shim) = shim() else { return };
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let script = std::fs::read_to_string(root.join("charts/image/build.sh")).unwrap();
    let dockerfile = std::fs::read_to_string(root.join("Dockerfile")).unwrap();
    let objs = render(&shim, "{}\n");
    for name in [WEBHOOK, RECONCILER] {
        let pod = &get(&objs, "Deployment", name)["spec"]["template"]["spec"];
        let (uid, gid) = (&pod["securityContext"]["runAsUser"], &pod["securityContext"]["runAsGroup"]);
        let user = format!("{uid}:{gid}");
        assert_eq!(user, "65532:65532");
        assert!(script.contains(&format!("--config.user {user}")), "build.sh runs as another user than {user}");
        assert!(dockerfile.contains(&format!("\nUSER {user}\n")), "the Dockerfile runs as another user than {user}");
        let c = &pod["containers"][0];
        assert_eq!(c["image"], format!("ghcr.io/gitgate/gitgate:{}", env!("CARGO_PKG_VERSION")));
        assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true);
        // The working directory is a volume (the root filesystem is read-only).
        assert!(c["volumeMounts"].as_array().unwrap().iter().any(|m| m["mountPath"] == c["workingDir"]));
        assert!(c.get("command").is_none(), "the image's entrypoint runs");
    }
    assert!(script.contains("--config.entrypoint /gitgate") && dockerfile.contains("ENTRYPOINT [\"/gitgate\"]"));
    let chart = std::fs::read_to_string(chart_dir().join("Chart.yaml")).unwrap();
    assert!(chart.contains(&format!("appVersion: \"{}\"", env!("CARGO_PKG_VERSION"))), "appVersion is the crate's");
}

/// `git.allowedSigners` / `git.gpgKeyring` (a Secret or a ConfigMap) are
/// mounted read-only into both Deployments and passed as gitgate's flags;
/// `git.requireSigned` becomes `--require-signed`.
#[test]
fn commit_signers_are_mounted_into_both_deployments_and_become_flags() {
    let Some(shim) = shim() else { return };
    let values = "git:\n  allowedSigners: {secret: commit-signers}\n  gpgKeyring: {configMap: release-keys, key: keys.gpg}\n  requireSigned: true\n";
    let out = lint(&shim, values);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    let objs = render(&shim, values);
    for deployment in [WEBHOOK, RECONCILER] {
        let args = serve_args_of(&objs, deployment);
        assert_eq!(args.allowed_signers.as_deref(), Some(Path::new("/etc/gitgate/signers/allowed_signers")));
        assert_eq!(args.gpg_keyring.as_deref(), Some(Path::new("/etc/gitgate/gpg/keyring")));
        assert!(args.require_signed, "{deployment}");
        let pod = &get(&objs, "Deployment", deployment)["spec"]["template"]["spec"];
        let volumes = pod["volumes"].as_array().unwrap();
        let signers = volumes.iter().find(|v| v["name"] == "allowed-signers").expect("allowed-signers volume");
        assert_eq!(signers["secret"]["secretName"], "commit-signers");
        assert_eq!(signers["secret"]["items"], json!([{"key": "allowed_signers", "path": "allowed_signers"}]));
        let keyring = volumes.iter().find(|v| v["name"] == "gpg-keyring").expect("gpg-keyring volume");
        assert_eq!(keyring["configMap"]["name"], "release-keys");
        assert_eq!(keyring["configMap"]["items"], json!([{"key": "keys.gpg", "path": "keyring"}]));
        let mounts = pod["containers"][0]["volumeMounts"].as_array().unwrap();
        for (name, path) in [("allowed-signers", "/etc/gitgate/signers"), ("gpg-keyring", "/etc/gitgate/gpg")] {
            let m = mounts.iter().find(|m| m["name"] == name).unwrap_or_else(|| panic!("{deployment} mounts {name}"));
            assert_eq!((m["mountPath"].as_str(), m["readOnly"].as_bool()), (Some(path), Some(true)));
        }
    }
    // Defaults: nothing mounted, no flags.
    let plain = render(&shim, "{}\n");
    let args = serve_args(&plain);
    assert!(args.allowed_signers.is_none() && args.gpg_keyring.is_none() && !args.require_signed);
    // Refused: requireSigned with nobody to sign; both a Secret and a
    // ConfigMap (the templates fail); an unknown key (the schema).
    let template =
        |values: &str| helm(&shim, &["template", "gitgate", chart_dir().to_str().unwrap(), "--namespace", NS], values);
    for bad in ["git: {requireSigned: true}\n", "git: {allowedSigners: {secret: a, configMap: b}}\n"] {
        let out = template(bad);
        assert!(!out.status.success(), "{bad}");
        assert!(String::from_utf8_lossy(&out.stderr).contains("git."), "{}", String::from_utf8_lossy(&out.stderr));
    }
    assert!(!lint(&shim, "git: {allowedSigners: {secretName: a}}\n").status.success());
}
