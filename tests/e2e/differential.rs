//! The same ValidatingAdmissionPolicies run by a real kube-apiserver (as
//! VAPs, over server-side dry-run creates) and by gitgate's engine, over
//! generated Pods, Deployments, StatefulSets, DaemonSets, ReplicaSets, Jobs
//! and CronJobs: every decision, reason, message and warning must be the
//! same. The corpus is the built-in library (the policies a VAP can run:
//! not those reading gitgate's `git` variable), the Kubernetes
//! documentation's examples and gitgate's optional/type() policies
//! (`tests/fixtures/differential/`, each file naming its source).
//!
//! gitgate sees what the apiserver's validating admission sees: each
//! object is first dry-run created with no corpus policy in place, and the
//! apiserver's defaulted object is what gitgate evaluates.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use gitgate::admission::{AdmissionRequest, Decision};
use gitgate::policy::{GitVars, PolicySet, StaticNamespaces, parse_documents};
use serde_json::{Value as Json, json};

use crate::cluster;

const NAMESPACE: &str = "e2e-differential";
const SELECTOR: &str = "differential.gitgate.dev/policy";

/// Corpus files left out, and why: what gitgate still decides differently.
const KNOWN_DIFFERENCES: &[(&str, &str)] = &[(
    "gatekeeper/k8spsphostfilesystem.yaml",
    "variable badHostPaths nests four comprehensions: gitgate bounds its cost before running it \
     (every comprehension over the request's largest collection), over the per-expression limit for \
     an ordinary defaulted Pod, and fails the policy; the apiserver meters the actual cost and runs it",
)];

/// The corpus: (origin, YAML).
fn corpus() -> Vec<(String, String)> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = vec![
        root.join("policies/no-latest-tag.yaml"),
        root.join("policies/no-privileged.yaml"),
        root.join("policies/require-resource-limits.yaml"),
    ];
    let mut fixtures: Vec<_> = ["tests/fixtures/differential", "tests/fixtures/differential/gatekeeper"]
        .iter()
        .flat_map(|d| std::fs::read_dir(root.join(d)).unwrap())
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .filter(|p| !KNOWN_DIFFERENCES.iter().any(|(f, _)| p.ends_with(f)))
        .collect();
    fixtures.sort();
    files.extend(fixtures);
    files.into_iter().map(|p| (p.display().to_string(), std::fs::read_to_string(&p).unwrap())).collect()
}

/// The corpus as JSON documents, each binding narrowed to the objects
/// labelled for its policy (so each object meets exactly one policy in
/// both engines), and a Deny binding for each policy without one.
fn documents() -> Vec<(String, Vec<Json>)> {
    let mut out = Vec::new();
    for (origin, text) in corpus() {
        let options = serde_saphyr::options! { strict_booleans: true };
        let mut docs: Vec<Json> = serde_saphyr::from_multiple_with_options(&text, options).unwrap();
        docs.retain(|d| !d.is_null());
        let policies: Vec<String> = docs
            .iter()
            .filter(|d| d["kind"] == "ValidatingAdmissionPolicy")
            .map(|d| d["metadata"]["name"].as_str().unwrap().to_owned())
            .collect();
        for p in &policies {
            if !docs.iter().any(|d| d["kind"] == "ValidatingAdmissionPolicyBinding" && d["spec"]["policyName"] == *p) {
                docs.push(json!({
                    "apiVersion": "admissionregistration.k8s.io/v1",
                    "kind": "ValidatingAdmissionPolicyBinding",
                    "metadata": {"name": format!("{p}-binding")},
                    "spec": {"policyName": p, "validationActions": ["Deny"]},
                }));
            }
        }
        for d in docs.iter_mut().filter(|d| d["kind"] == "ValidatingAdmissionPolicyBinding") {
            let policy = d["spec"]["policyName"].as_str().unwrap().to_owned();
            d["spec"]["matchResources"] = json!({"objectSelector": {"matchLabels": {SELECTOR: label(&policy)}}});
        }
        out.push((origin, docs));
    }
    out
}

/// A label value for a policy name (≤ 63 characters).
fn label(policy: &str) -> String {
    policy.chars().take(63).collect::<String>().trim_end_matches(['.', '-']).to_owned()
}

const IMAGES: &[&str] = &[
    "nginx:1.27",
    "nginx",
    "nginx:latest",
    "registry.example/app@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
    "example.com/app:1",
    "staging.example.com/app:2",
    "registry:5000/team/app",
];

/// The generated objects: every kind (only Pods for a policy only about
/// Pods), with images, privileges, host namespaces, capabilities,
/// resources, replicas, labels and annotations varying by index.
fn objects(policy_index: usize, policy: &str, pods_only: bool) -> Vec<Json> {
    let kinds: &[&str] = if pods_only {
        &["Pod"]
    } else {
        &["Pod", "Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job", "CronJob"]
    };
    let mut out = Vec::new();
    for i in 0..14 {
        let kind = kinds[i % kinds.len()];
        let name = format!("p{policy_index}-o{i}");
        let mut container = json!({"name": "main", "image": IMAGES[i % IMAGES.len()]});
        match i % 3 {
            1 => container["securityContext"] = json!({"privileged": false}),
            2 if i % 4 == 2 => container["securityContext"] = json!({"privileged": true}),
            _ => {}
        }
        if i % 5 == 1 {
            container["securityContext"]["allowPrivilegeEscalation"] = json!(true);
            container["securityContext"]["capabilities"] = json!({"add": ["NET_ADMIN"], "drop": ["ALL"]});
        }
        if i % 3 == 2 {
            container["securityContext"]["readOnlyRootFilesystem"] = json!(true);
        }
        if i % 4 == 1 {
            container["ports"] = json!([{"containerPort": 8080, "hostPort": 8080}]);
        }
        if i % 2 == 0 {
            container["resources"] =
                json!({"requests": {"cpu": "100m", "memory": "64Mi"}, "limits": {"memory": "64Mi"}});
        }
        let mut containers = vec![container];
        if i % 5 == 3 {
            containers.push(json!({"name": "sidecar", "image": IMAGES[(i + 2) % IMAGES.len()]}));
        }
        let mut pod_spec = json!({"containers": containers});
        if i % 6 == 5 {
            pod_spec["volumes"] = json!([{"name": "host", "hostPath": {"path": "/var/log"}}]);
        }
        if i % 4 == 1 {
            pod_spec["hostNetwork"] = json!(true);
        }
        if i % 7 == 3 {
            pod_spec["hostPID"] = json!(true);
            pod_spec["hostIPC"] = json!(true);
        }
        if i % 6 == 0 {
            pod_spec["securityContext"] = json!({"fsGroup": 2000, "seccompProfile": {"type": "RuntimeDefault"},
                "sysctls": [{"name": "kernel.msgmax", "value": "65536"}]});
        }
        let mut labels = serde_json::Map::new();
        labels.insert(SELECTOR.into(), json!(label(policy)));
        if i % 3 != 0 {
            labels.insert("app".into(), json!(if i % 7 == 4 { "" } else { "web" }));
        }
        if i % 4 == 1 {
            labels.insert("exempt".into(), json!("true"));
        }
        let mut metadata = json!({"name": name, "namespace": NAMESPACE, "labels": labels});
        if i % 5 == 2 {
            metadata["annotations"] = json!({"team": if i % 2 == 0 { "ab" } else { "payments" }});
        }
        let template = json!({"metadata": {"labels": {"app": name}}, "spec": pod_spec});
        let selector = json!({"matchLabels": {"app": name}});
        let replicas = [1, 3, 7][i % 3];
        let obj = match kind {
            "Pod" => json!({"apiVersion": "v1", "kind": kind, "metadata": metadata, "spec": pod_spec}),
            "Deployment" | "ReplicaSet" => {
                let mut spec = json!({"selector": selector, "template": template});
                if i % 4 != 3 {
                    spec["replicas"] = json!(replicas);
                }
                json!({"apiVersion": "apps/v1", "kind": kind, "metadata": metadata, "spec": spec})
            }
            "StatefulSet" => json!({"apiVersion": "apps/v1", "kind": kind, "metadata": metadata,
                "spec": {"selector": selector, "serviceName": name, "replicas": replicas, "template": template}}),
            "DaemonSet" => json!({"apiVersion": "apps/v1", "kind": kind, "metadata": metadata,
                "spec": {"selector": selector, "template": template}}),
            "Job" => {
                let mut t = template.clone();
                t["spec"]["restartPolicy"] = json!("Never");
                json!({"apiVersion": "batch/v1", "kind": kind, "metadata": metadata, "spec": {"template": t}})
            }
            _ => {
                let mut t = template.clone();
                t["spec"]["restartPolicy"] = json!("OnFailure");
                json!({"apiVersion": "batch/v1", "kind": kind, "metadata": metadata,
                    "spec": {"schedule": "*/5 * * * *", "jobTemplate": {"spec": {"template": t}}}})
            }
        };
        out.push(obj);
    }
    out
}

fn resource(kind: &str) -> (&'static str, &'static str) {
    match kind {
        "Pod" => ("", "pods"),
        "Deployment" => ("apps", "deployments"),
        "StatefulSet" => ("apps", "statefulsets"),
        "DaemonSet" => ("apps", "daemonsets"),
        "ReplicaSet" => ("apps", "replicasets"),
        "Job" => ("batch", "jobs"),
        _ => ("batch", "cronjobs"),
    }
}

/// The AdmissionRequest of a dry-run CREATE of `object` (defaulted by the
/// apiserver), as the apiserver builds it for validating admission.
fn request(object: &Json) -> AdmissionRequest {
    let kind = object["kind"].as_str().unwrap();
    let (group, res) = resource(kind);
    let version = "v1";
    let gvk = json!({"group": group, "version": version, "kind": kind});
    let gvr = json!({"group": group, "version": version, "resource": res});
    serde_json::from_value(json!({
        "uid": "00000000-0000-0000-0000-000000000000",
        "kind": gvk, "resource": gvr, "requestKind": gvk, "requestResource": gvr,
        "name": object["metadata"]["name"], "namespace": NAMESPACE, "operation": "CREATE",
        "userInfo": {"username": "kubernetes-admin", "groups": ["system:masters", "system:authenticated"]},
        "object": object, "oldObject": null, "dryRun": true,
        "options": {"apiVersion": "meta.k8s.io/v1", "kind": "CreateOptions", "dryRun": ["All"]},
    }))
    .unwrap()
}

fn list(items: &[Json]) -> Vec<u8> {
    serde_json::to_vec(&json!({"apiVersion": "v1", "kind": "List", "items": items})).unwrap()
}

/// One engine's answer for one object.
#[derive(Debug, PartialEq, Eq, Default)]
struct Answer {
    /// `None`: allowed; else (reason, message).
    denied: Option<(String, String)>,
    /// Sorted; asked one object at a time (kubectl prints a warning it
    /// has printed once only once).
    warnings: Vec<String>,
}

#[test]
fn the_apiserver_and_gitgate_decide_the_corpus_the_same_way() {
    let Some(c) = cluster::cluster("the_apiserver_and_gitgate_decide_the_corpus_the_same_way") else { return };
    let _serial = cluster::cluster_wide();
    let started = Instant::now();
    let ns = json!({"apiVersion": "v1", "kind": "Namespace",
        "metadata": {"name": NAMESPACE, "labels": {"environment": "staging"}}});
    let out = c.kubectl_stdin(&["apply", "-f", "-"], &serde_json::to_vec(&ns).unwrap());
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // the ServiceAccount admission plugin wants the namespace's default account
    let sa =
        json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "default", "namespace": NAMESPACE}});
    let out = c.kubectl_stdin(&["apply", "-f", "-"], &serde_json::to_vec(&sa).unwrap());
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let ns_object: Json = serde_json::from_str(&c.kubectl_ok(&["get", "namespace", NAMESPACE, "-o", "json"])).unwrap();

    let docs = documents();
    let policies: Vec<String> = docs
        .iter()
        .flat_map(|(_, d)| d.iter())
        .filter(|d| d["kind"] == "ValidatingAdmissionPolicy")
        .map(|d| d["metadata"]["name"].as_str().unwrap().to_owned())
        .collect();
    let pods_only = |name: &str| {
        docs.iter().flat_map(|(_, d)| d.iter()).any(|d| {
            d["kind"] == "ValidatingAdmissionPolicy"
                && d["metadata"]["name"] == name
                && d["spec"]["matchConstraints"]["resourceRules"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .all(|r| r["resources"] == json!(["pods"]))
        })
    };
    let generated: Vec<Json> = policies.iter().enumerate().flat_map(|(i, p)| objects(i, p, pods_only(p))).collect();

    // 1. what validating admission sees: the defaulted objects, no corpus policy in place
    let out = c.kubectl_stdin(&["create", "--dry-run=server", "-o", "json", "-f", "-"], &list(&generated));
    assert!(out.status.success(), "defaulting dry-run: {}", String::from_utf8_lossy(&out.stderr));
    // kubectl prints one JSON document per object
    let defaulted: Vec<Json> =
        serde_json::Deserializer::from_slice(&out.stdout).into_iter::<Json>().map(Result::unwrap).collect();
    assert_eq!(defaulted.len(), generated.len());

    // 2. the corpus in the apiserver, which must accept every policy
    let all: Vec<Json> = docs.iter().flat_map(|(_, d)| d.iter().cloned()).collect();
    let sentinel = json!([{
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": "differential-sentinel"},
        "spec": {"failurePolicy": "Fail", "matchConstraints": {"resourceRules": [{"apiGroups": [""], "apiVersions": ["v1"],
            "operations": ["CREATE"], "resources": ["configmaps"]}]},
            "validations": [{"expression": "false", "message": "sentinel"}]}},
        {"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicyBinding",
        "metadata": {"name": "differential-sentinel"},
        "spec": {"policyName": "differential-sentinel", "validationActions": ["Deny"],
            "matchResources": {"objectSelector": {"matchLabels": {SELECTOR: "sentinel"}}}}},
    ]);
    let mut applied = all.clone();
    applied.extend(sentinel.as_array().unwrap().iter().cloned());
    let out = c.kubectl_stdin(&["apply", "-f", "-"], &list(&applied));
    assert!(out.status.success(), "the apiserver refused a corpus policy: {}", String::from_utf8_lossy(&out.stderr));
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let probe = json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "probe", "namespace": NAMESPACE, "labels": {SELECTOR: "sentinel"}}});
        let out = c.kubectl_stdin(&["create", "--dry-run=server", "-f", "-"], &serde_json::to_vec(&probe).unwrap());
        if !out.status.success() {
            break;
        }
        assert!(Instant::now() < deadline, "the corpus never took effect");
        std::thread::sleep(Duration::from_millis(300));
    }
    // the apiserver loads its policies together; give the last ones a moment
    std::thread::sleep(Duration::from_secs(2));

    // 3. the apiserver's answers, one batch of dry-run creates
    let out = c.kubectl_stdin(&["create", "--dry-run=server", "-f", "-"], &list(&generated));
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let mut apiserver: BTreeMap<String, Answer> = BTreeMap::new();
    let mut apiserver_warnings: Vec<String> = Vec::new();
    for line in stderr.lines() {
        if let Some(w) = line.strip_prefix("Warning: ") {
            apiserver_warnings.push(w.to_owned());
            continue;
        }
        let Some(at) = line.find("ValidatingAdmissionPolicy '") else { continue };
        let reason = if line.contains("(Forbidden)") {
            "Forbidden"
        } else if line.contains("(Invalid)") {
            "Invalid"
        } else {
            "other"
        };
        let name = generated
            .iter()
            .map(|o| o["metadata"]["name"].as_str().unwrap())
            .find(|n| line.contains(&format!("\"{n}\"")))
            .unwrap_or_else(|| panic!("no object named in {line}"));
        apiserver.entry(name.to_owned()).or_default().denied = Some((reason.to_owned(), line[at..].to_owned()));
    }
    // objects of policies bound with Warn: one dry-run each, for their own warnings
    let warned: Vec<String> = all
        .iter()
        .filter(|d| d["kind"] == "ValidatingAdmissionPolicyBinding")
        .filter(|d| d["spec"]["validationActions"].as_array().unwrap().iter().any(|a| a == "Warn"))
        .map(|d| label(d["spec"]["policyName"].as_str().unwrap()))
        .collect();
    for object in generated.iter().filter(|o| warned.iter().any(|l| o["metadata"]["labels"][SELECTOR] == *l)) {
        let name = object["metadata"]["name"].as_str().unwrap();
        let out = c.kubectl_stdin(&["create", "--dry-run=server", "-f", "-"], &serde_json::to_vec(object).unwrap());
        let mut warnings: Vec<String> = String::from_utf8_lossy(&out.stderr)
            .lines()
            .filter_map(|l| l.strip_prefix("Warning: ").map(str::to_owned))
            .collect();
        warnings.sort();
        apiserver.entry(name.to_owned()).or_default().warnings = warnings;
    }

    // 4. gitgate's answers over the same objects
    let set = PolicySet::compile(
        docs.iter()
            .map(|(origin, d)| {
                let yaml = d.iter().map(|x| serde_json::to_string(x).unwrap()).collect::<Vec<_>>().join("\n---\n");
                parse_documents(origin, &yaml).unwrap()
            })
            .collect(),
    )
    .unwrap();
    let namespaces = StaticNamespaces([(NAMESPACE.to_owned(), std::sync::Arc::new(ns_object))].into());
    let mut gitgate_warnings: Vec<String> = Vec::new();
    let mut differences = Vec::new();
    let mut denials = 0;
    for object in &defaulted {
        let name = object["metadata"]["name"].as_str().unwrap().to_owned();
        let mut d = Decision::default();
        set.evaluate(&request(object), &namespaces, &GitVars::default(), &mut d);
        gitgate_warnings.extend(d.warnings.iter().cloned());
        let is_warned = warned.iter().any(|l| object["metadata"]["labels"][SELECTOR] == *l);
        let mut warnings = if is_warned { d.warnings.clone() } else { Vec::new() };
        warnings.sort();
        let ours = Answer {
            warnings,
            denied: d.denial.as_ref().map(|x| {
                let reason = match x.code {
                    403 => "Forbidden",
                    422 => "Invalid",
                    _ => "other",
                };
                (reason.to_owned(), x.message.clone())
            }),
        };
        let theirs = apiserver.remove(&name).unwrap_or_default();
        denials += usize::from(theirs.denied.is_some());
        if ours != theirs {
            differences.push(format!("{} {name}:\n  apiserver: {theirs:?}\n  gitgate:   {ours:?}", object["kind"]));
            if let Some(dir) = std::env::var_os("GITGATE_DIFFERENTIAL_DUMP") {
                let path = std::path::Path::new(&dir).join(format!("{name}.json"));
                std::fs::write(path, serde_json::to_vec_pretty(object).unwrap()).unwrap();
            }
        }
    }
    // the batch's warnings, each printed once by kubectl
    apiserver_warnings.sort();
    apiserver_warnings.dedup();
    gitgate_warnings.sort();
    gitgate_warnings.dedup();
    if apiserver_warnings != gitgate_warnings {
        differences
            .push(format!("warnings:\n  apiserver: {apiserver_warnings:#?}\n  gitgate:   {gitgate_warnings:#?}"));
    }

    // leave the cluster as found: the policies are cluster-wide
    c.kubectl_stdin(&["delete", "--ignore-not-found", "-f", "-"], &list(&applied));
    c.kubectl(&["delete", "namespace", NAMESPACE, "--wait=false"]);

    eprintln!(
        "differential: {} policies, {} objects, {denials} denials, {} warnings, {} differences, {:?}",
        policies.len(),
        defaulted.len(),
        apiserver_warnings.len(),
        differences.len(),
        started.elapsed()
    );
    assert!(denials > 0 && !apiserver_warnings.is_empty(), "the corpus must deny and warn on some objects");
    assert!(differences.is_empty(), "{} differences:\n{}", differences.len(), differences.join("\n"));
    // the run's budget: one cluster, batched dry-runs
    assert!(started.elapsed() < Duration::from_secs(90), "the differential run took {:?}", started.elapsed());
}

/// The feature table's "v1.32 apiserver" column is the apiserver's: each
/// row's example, as a policy, is accepted by it exactly when the table
/// says so.
#[test]
fn the_feature_tables_apiserver_column_is_the_apiservers() {
    let Some(c) = cluster::cluster("the_feature_tables_apiserver_column_is_the_apiservers") else { return };
    let policies: Vec<Json> = gitgate::policy::lang::FEATURES
        .iter()
        .enumerate()
        .map(|(i, f)| {
            json!({"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicy",
                "metadata": {"name": format!("feature-{i}")},
                "spec": {"matchConstraints": {"resourceRules": [{"apiGroups": [""], "apiVersions": ["v1"],
                    "operations": ["CREATE"], "resources": ["configmaps"]}]},
                    "validations": [{"expression": f.example}]}})
        })
        .collect();
    let out = c.kubectl_stdin(&["create", "--dry-run=server", "-f", "-"], &list(&policies));
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let mut wrong = Vec::new();
    for (i, f) in gitgate::policy::lang::FEATURES.iter().enumerate() {
        let needle = format!("\"feature-{i}\"");
        let refused = stderr.lines().find(|l| l.contains(&needle));
        if refused.is_some() == f.apiserver {
            wrong.push(format!("{} ({}): table says {}, apiserver: {:?}", f.name, f.example, f.apiserver, refused));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}
