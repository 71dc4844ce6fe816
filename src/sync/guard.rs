//! Guard the guards: admission webhooks never see changes to webhook
//! configurations, so the sync loop owns gitgate's own
//! ValidatingWebhookConfiguration, MutatingWebhookConfiguration and (when
//! asked) the generated ValidatingAdmissionPolicy, and puts them back
//! within seconds when they are deleted or edited.

use serde_json::{Value, json};

use crate::render::object::ObjectKey;

/// Marks the objects the guard owns.
pub const GUARD_LABEL: &str = "gitgate.dev/guard";
pub const VALIDATING_NAME: &str = "gitgate-validate";
pub const MUTATING_NAME: &str = "gitgate-mutate";

/// Where the apiserver reaches gitgate.
#[derive(Clone, Debug)]
pub enum Endpoint {
    /// `https://host:port` (out-of-cluster, development, e2e).
    Url(String),
    /// A Service in the cluster.
    Service { namespace: String, name: String, port: u16 },
}

impl Endpoint {
    /// `https://…` → Url; `namespace/name[:port]` → Service.
    pub fn parse(s: &str) -> Result<Endpoint, String> {
        if s.starts_with("https://") {
            return Ok(Endpoint::Url(s.trim_end_matches('/').to_string()));
        }
        let (ns, rest) = s
            .split_once('/')
            .ok_or_else(|| format!("{s:?}: expected https://host:port or namespace/service[:port]"))?;
        let (name, port) = match rest.split_once(':') {
            Some((n, p)) => (n, p.parse::<u16>().map_err(|_| format!("{s:?}: bad port {p:?}"))?),
            None => (rest, 443),
        };
        if ns.is_empty() || name.is_empty() {
            return Err(format!("{s:?}: expected namespace/service[:port]"));
        }
        Ok(Endpoint::Service { namespace: ns.into(), name: name.into(), port })
    }

    fn client_config(&self, path: &str, ca_bundle: &str) -> Value {
        match self {
            Endpoint::Url(base) => json!({"url": format!("{base}{path}"), "caBundle": ca_bundle}),
            Endpoint::Service { namespace, name, port } => json!({
                "service": {"namespace": namespace, "name": name, "port": port, "path": path},
                "caBundle": ca_bundle,
            }),
        }
    }
}

/// What the guard installs.
#[derive(Clone, Debug)]
pub struct GuardConfig {
    pub endpoint: Endpoint,
    /// PEM of the CA that signed the serving certificate.
    pub ca_pem: Vec<u8>,
    /// Where `ca_pem` came from (`ca.crt` in `--cert-dir`): read again at
    /// every round, so a CA that changed on disk (a renewed development
    /// CA, cert-manager rotating its issuer) reaches the `caBundle` the
    /// apiserver verifies gitgate with, instead of the guard restoring the
    /// bundle it started with.
    pub ca_file: Option<std::path::PathBuf>,
    /// gitgate's own namespace: never intercepted.
    pub namespace: String,
    /// `Fail` (default) or `Ignore`.
    pub failure_policy: String,
    pub timeout_seconds: u8,
    /// Namespaces labelled `KEY=VALUE` are enforced (`failure_policy`, and
    /// cluster-scoped objects); the others get a second webhook that fails
    /// open (`Ignore`). `None`: one webhook for everything (`failure_policy`).
    /// The Helm chart's webhook configurations are this layout, byte for byte.
    pub enforce_label: Option<(String, String)>,
    /// Also install the in-apiserver policy (holds while the webhook is down).
    pub vap: Option<(String, Vec<String>)>,
}

impl GuardConfig {
    /// This configuration with the CA as `ca_file` holds it now; as is
    /// when there is no file, it cannot be read, or it holds no
    /// certificate (a half-written or emptied file never becomes the
    /// bundle).
    pub fn current(&self) -> std::borrow::Cow<'_, GuardConfig> {
        use std::borrow::Cow;
        let Some(path) = &self.ca_file else { return Cow::Borrowed(self) };
        let pem = match std::fs::read(path) {
            Ok(pem) => pem,
            Err(e) => {
                tracing::debug!(path = %path.display(), error = %e, "keeping the CA the guard has");
                return Cow::Borrowed(self);
            }
        };
        let holds_a_certificate = {
            use rustls::pki_types::CertificateDer;
            use rustls::pki_types::pem::PemObject as _;
            let certs: Result<Vec<CertificateDer<'static>>, _> = CertificateDer::pem_slice_iter(&pem).collect();
            certs.is_ok_and(|c| !c.is_empty())
        };
        if pem == self.ca_pem || !holds_a_certificate {
            return Cow::Borrowed(self);
        }
        Cow::Owned(GuardConfig { ca_pem: pem, ..self.clone() })
    }
}

/// Namespaces no gitgate webhook intercepts.
pub fn excluded_namespaces(own: &str) -> Vec<String> {
    let mut v = vec!["kube-system".to_string(), "kube-node-lease".to_string()];
    if !own.is_empty() && !v.iter().any(|n| n == own) {
        v.push(own.to_string());
    }
    v
}

/// Leases and Events change every second and are never Git's: skipped
/// before the request leaves the apiserver.
const NOT_LEASES_OR_EVENTS: &str = "!(request.resource.group == 'coordination.k8s.io' && request.resource.resource == 'leases') && !(request.resource.resource == 'events')";

/// The cluster's own components (nodes, the controller manager, the
/// scheduler, kube-system's controllers, but not the HorizontalPodAutoscaler)
/// are never sent to gitgate: provenance exempts them anyway, and this way a
/// gitgate outage never stalls a kubelet or a controller on a cluster-scoped
/// object.
const NOT_CLUSTER_COMPONENTS: &str = "!(request.userInfo.username in ['system:kube-controller-manager', 'system:kube-scheduler'] || 'system:nodes' in request.userInfo.groups || (request.userInfo.username.startsWith('system:serviceaccount:kube-system:') && request.userInfo.username != 'system:serviceaccount:kube-system:horizontal-pod-autoscaler'))";

/// Only a change that sets `gitgate.dev/break-glass` reaches the
/// break-glass webhook.
const ASKS_FOR_BREAK_GLASS: &str =
    "has(object.metadata.annotations) && 'gitgate.dev/break-glass' in object.metadata.annotations";

/// Status written by a ServiceAccount (a controller: kube-system's, an
/// operator's, an ingress controller's) is the most frequent subresource
/// traffic and gitgate-subresources lets every controller write status:
/// it never leaves the apiserver, so a gitgate outage never stalls it.
/// (The apiserver leaves `request.subResource` out when there is none:
/// reading it unguarded is an error, and with `Fail` a denial of
/// everything.)
const NOT_CONTROLLER_STATUS: &str = "!(has(request.subResource) && request.subResource == 'status' && request.userInfo.username.startsWith('system:serviceaccount:'))";

/// Evictions go to a webhook of their own that fails open: draining a node
/// never waits on gitgate (they are allowed, and audited while it is up).
const NOT_EVICTIONS: &str =
    "!(has(request.subResource) && request.subResource == 'eviction' && request.resource.resource == 'pods')";

/// The webhook name of the evictions' fail-open webhook.
pub const EVICTIONS_WEBHOOK: &str = "evictions.validate.gitgate.dev";

/// The objects the guard owns, as applied (labelled, unstamped: they come
/// from gitgate's configuration, not from Git): the validating and the
/// mutating webhook configuration, and the ValidatingAdmissionPolicy and
/// its binding when one is configured.
pub fn objects(c: &GuardConfig) -> Vec<(ObjectKey, Value)> {
    let w = Webhooks::new(c);
    let (validating, mut mutating) = match &c.enforce_label {
        None => w.cluster_wide(),
        Some((key, value)) => w.by_label(key, value),
    };
    mutating.push(w.break_glass());
    let mut out = vec![
        (
            guard_key("ValidatingWebhookConfiguration", VALIDATING_NAME),
            configuration("ValidatingWebhookConfiguration", VALIDATING_NAME, validating),
        ),
        (
            guard_key("MutatingWebhookConfiguration", MUTATING_NAME),
            configuration("MutatingWebhookConfiguration", MUTATING_NAME, mutating),
        ),
    ];
    out.extend(admission_policy(c));
    out
}

/// The key of one of the guard's (cluster-scoped) objects.
fn guard_key(kind: &str, name: &str) -> ObjectKey {
    ObjectKey::new("admissionregistration.k8s.io", kind, "", name)
}

/// A webhook configuration of the guard, labelled.
fn configuration(kind: &str, name: &str, webhooks: Vec<Value>) -> Value {
    json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": kind,
        "metadata": {"name": name, "labels": {GUARD_LABEL: "true"}},
        "webhooks": webhooks,
    })
}

/// The ValidatingAdmissionPolicy and its binding, labelled, when the guard
/// has one.
fn admission_policy(c: &GuardConfig) -> Vec<(ObjectKey, Value)> {
    let mut out = Vec::new();
    if let Some((reconciler, groups)) = &c.vap {
        let (policy, binding) = crate::policy::vap::generate(reconciler, groups);
        for (kind, v) in [
            ("ValidatingAdmissionPolicy", serde_json::to_value(policy)),
            ("ValidatingAdmissionPolicyBinding", serde_json::to_value(binding)),
        ] {
            let Ok(mut v) = v else { continue };
            v["metadata"]["labels"][GUARD_LABEL] = "true".into();
            let name = v.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default().to_string();
            out.push((guard_key(kind, &name), v));
        }
    }
    out
}

/// What every webhook of the guard shares: its configuration, the CA
/// bundle, and the namespaces it never sees.
struct Webhooks<'a> {
    c: &'a GuardConfig,
    ca: String,
    excluded: Vec<String>,
    /// The namespace selector's expression that leaves out the excluded
    /// namespaces.
    not_excluded: Value,
}

impl<'a> Webhooks<'a> {
    fn new(c: &'a GuardConfig) -> Self {
        use base64::Engine as _;
        let ca = base64::engine::general_purpose::STANDARD.encode(&c.ca_pem);
        let excluded = excluded_namespaces(&c.namespace);
        let not_excluded = json!({"key": "kubernetes.io/metadata.name", "operator": "NotIn", "values": excluded});
        Webhooks { c, ca, excluded, not_excluded }
    }

    /// Every resource and subresource ("*/*" is both; the apiserver takes
    /// it alone), each subresource decided by gitgate-subresources; CONNECT
    /// (exec, attach, portforward) changes nothing and is not sent.
    fn all_resources() -> Value {
        json!({"apiGroups": ["*"], "apiVersions": ["*"], "operations": ["CREATE", "UPDATE", "DELETE"], "resources": ["*/*"], "scope": "*"})
    }

    fn evictions_rule() -> Value {
        json!({"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"], "resources": ["pods/eviction"], "scope": "Namespaced"})
    }

    fn validate(&self, name: &str, rules: Value, selector: Value, conditions: Value, policy: &str) -> Value {
        json!({
            "name": name,
            "clientConfig": self.c.endpoint.client_config("/validate", &self.ca),
            "rules": rules,
            "namespaceSelector": selector,
            "matchConditions": conditions,
            "failurePolicy": policy,
            "sideEffects": "NoneOnDryRun",
            "admissionReviewVersions": ["v1"],
            "timeoutSeconds": self.c.timeout_seconds,
            "matchPolicy": "Equivalent",
        })
    }

    /// The Secrets' mutating webhook (unseals and stamps them).
    fn mutate(&self, name: &str, selector: Value, conditions: Option<Value>, policy: &str) -> Value {
        let secrets = json!({"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE", "UPDATE"], "resources": ["secrets"], "scope": "Namespaced"});
        let mut w = json!({
            "name": name,
            "clientConfig": self.c.endpoint.client_config("/mutate", &self.ca),
            "rules": [secrets],
            "namespaceSelector": selector,
            "failurePolicy": policy,
            "sideEffects": "NoneOnDryRun",
            "admissionReviewVersions": ["v1"],
            "timeoutSeconds": self.c.timeout_seconds,
            "reinvocationPolicy": "IfNeeded",
        });
        if let Some(conditions) = conditions {
            w["matchConditions"] = conditions;
        }
        w
    }

    /// No enforce label: every namespace but the excluded is enforced.
    /// Returns the validating and the mutating webhooks.
    fn cluster_wide(&self) -> (Vec<Value>, Vec<Value>) {
        let selector = json!({"matchExpressions": [self.not_excluded]});
        let conditions = json!([
            {"name": "not-leases-or-events", "expression": NOT_LEASES_OR_EVENTS},
            {"name": "not-cluster-components", "expression": NOT_CLUSTER_COMPONENTS},
            {"name": "not-controller-status", "expression": NOT_CONTROLLER_STATUS},
            {"name": "not-evictions", "expression": NOT_EVICTIONS},
        ]);
        let eviction_conditions = json!([
            {"name": "not-cluster-components", "expression": NOT_CLUSTER_COMPONENTS},
        ]);
        let policy = &self.c.failure_policy;
        let validating = vec![
            self.validate("validate.gitgate.dev", json!([Self::all_resources()]), selector.clone(), conditions, policy),
            self.validate(
                EVICTIONS_WEBHOOK,
                json!([Self::evictions_rule()]),
                selector.clone(),
                eviction_conditions,
                "Ignore",
            ),
        ];
        (validating, vec![self.mutate("secrets.gitgate.dev", selector, None, policy)])
    }

    /// An enforce label `key=value`: the labelled namespaces are enforced,
    /// the others observed (their webhooks fail open). Returns the
    /// validating and the mutating webhooks.
    fn by_label(&self, key: &str, value: &str) -> (Vec<Value>, Vec<Value>) {
        let not_excluded = &self.not_excluded;
        let enforced = json!({"matchExpressions": [not_excluded, {"key": key, "operator": "In", "values": [value]}]});
        let observed =
            json!({"matchExpressions": [not_excluded, {"key": key, "operator": "NotIn", "values": [value]}]});
        // The namespace selector is the first line; the same exclusion
        // by the request's namespace is the second.
        let listed = self.excluded.iter().map(|n| format!("'{n}'")).collect::<Vec<_>>().join(", ");
        let not_excluded_ns = json!({"name": "not-excluded-namespaces", "expression": format!("!(has(request.namespace) && request.namespace in [{listed}])")});
        let conditions = json!([
            not_excluded_ns,
            {"name": "not-leases-or-events", "expression": NOT_LEASES_OR_EVENTS},
            {"name": "not-cluster-components", "expression": NOT_CLUSTER_COMPONENTS},
            {"name": "not-controller-status", "expression": NOT_CONTROLLER_STATUS},
            {"name": "not-evictions", "expression": NOT_EVICTIONS},
        ]);
        let eviction_conditions = json!([
            not_excluded_ns,
            {"name": "not-cluster-components", "expression": NOT_CLUSTER_COMPONENTS},
        ]);
        // Unenforced namespaces fail open; a Namespace object is matched
        // by its own labels, so the observe webhook also takes the
        // Namespaces outside enforcement (e.g. one losing the label).
        let observe_rules = json!([
            {"apiGroups": ["*"], "apiVersions": ["*"], "operations": ["CREATE", "UPDATE", "DELETE"], "resources": ["*/*"], "scope": "Namespaced"},
            {"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE", "UPDATE", "DELETE"], "resources": ["namespaces/*"], "scope": "Cluster"},
        ]);
        let policy = &self.c.failure_policy;
        let validating = vec![
            self.validate(
                "validate.gitgate.dev",
                json!([Self::all_resources()]),
                enforced.clone(),
                conditions.clone(),
                policy,
            ),
            self.validate("observe.validate.gitgate.dev", observe_rules, observed.clone(), conditions, "Ignore"),
            self.validate(
                EVICTIONS_WEBHOOK,
                json!([Self::evictions_rule()]),
                json!({"matchExpressions": [not_excluded]}),
                eviction_conditions,
                "Ignore",
            ),
        ];
        let mutating = vec![
            self.mutate("secrets.gitgate.dev", enforced, Some(json!([not_excluded_ns])), policy),
            self.mutate("observe.secrets.gitgate.dev", observed, Some(json!([not_excluded_ns])), "Ignore"),
        ];
        (validating, mutating)
    }

    /// Break-glass windows: a change that sets the break-glass annotation
    /// gets its window stamped (provenance::glass). Only such changes are
    /// sent; it fails open, since the validating webhook refuses a
    /// break-glass change that carries no window.
    fn break_glass(&self) -> Value {
        json!({
            "name": "breakglass.gitgate.dev",
            "clientConfig": self.c.endpoint.client_config("/mutate", &self.ca),
            "rules": [{"apiGroups": ["*"], "apiVersions": ["*"], "operations": ["CREATE", "UPDATE"], "resources": ["*"], "scope": "*"}],
            "namespaceSelector": {"matchExpressions": [self.not_excluded]},
            "matchConditions": [{"name": "asks-for-break-glass", "expression": ASKS_FOR_BREAK_GLASS}],
            "failurePolicy": "Ignore",
            "sideEffects": "NoneOnDryRun",
            "admissionReviewVersions": ["v1"],
            "timeoutSeconds": self.c.timeout_seconds,
            "reinvocationPolicy": "Never",
        })
    }
}

/// What the guard writes over an edited live object: the live object
/// (its resourceVersion, and the metadata others keep there, such as
/// Helm's) with gitgate's `webhooks` (or `spec`) and label in place. An
/// apply would merge instead: a field another manager added stays — a
/// `service` beside gitgate's `url`, which the apiserver refuses ("exactly
/// one of url or service"), so the configuration could never be restored.
pub fn restored(desired: &Value, live: &Value) -> Value {
    let mut next = live.clone();
    for field in ["webhooks", "spec"] {
        match desired.get(field) {
            Some(v) => next[field] = v.clone(),
            None => {
                if let Some(o) = next.as_object_mut() {
                    o.remove(field);
                }
            }
        }
    }
    if let Some(meta) = next.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.remove("managedFields");
    }
    next["metadata"]["labels"][GUARD_LABEL] = "true".into();
    next
}

/// The first field the guard sets that the live object lacks (an edit).
pub fn tampered(desired: &Value, live: &Value) -> Option<String> {
    crate::contract::first_difference(&desired.to_string(), live, &[]).unwrap_or(Some("/".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A guard for gitgate in namespace `gitgate`, failing closed.
    fn config(endpoint: &str, ca_pem: &[u8]) -> GuardConfig {
        GuardConfig {
            endpoint: Endpoint::parse(endpoint).unwrap(),
            ca_pem: ca_pem.to_vec(),
            ca_file: None,
            namespace: "gitgate".into(),
            failure_policy: "Fail".into(),
            timeout_seconds: 5,
            enforce_label: None,
            vap: Some(("system:serviceaccount:gitgate:gitgate".into(), vec![])),
        }
    }

    #[test]
    fn endpoints_parse_and_configurations_exclude_system_namespaces() {
        assert!(
            matches!(Endpoint::parse("https://127.0.0.1:8443/").unwrap(), Endpoint::Url(u) if u == "https://127.0.0.1:8443")
        );
        assert!(matches!(Endpoint::parse("gitgate/gitgate:8443").unwrap(), Endpoint::Service { port: 8443, .. }));
        assert!(Endpoint::parse("nonsense").is_err());
        let c = config("gitgate/gitgate", b"-----BEGIN CERTIFICATE-----");
        let objs = objects(&c);
        assert_eq!(objs.len(), 4);
        let v = &objs[0].1["webhooks"][0];
        assert_eq!(
            v["namespaceSelector"]["matchExpressions"][0]["values"],
            json!(["kube-system", "kube-node-lease", "gitgate"])
        );
        assert_eq!(v["sideEffects"], "NoneOnDryRun");
        assert_eq!(v["clientConfig"]["service"]["path"], "/validate");
        assert!(objs.iter().all(|(_, o)| o["metadata"]["labels"][GUARD_LABEL] == "true"));
        let mut edited = objs[0].1.clone();
        edited["webhooks"][0]["failurePolicy"] = "Ignore".into();
        assert_eq!(tampered(&objs[0].1, &edited).as_deref(), Some("/webhooks/0/failurePolicy"));
        assert_eq!(tampered(&objs[0].1, &objs[0].1), None);
    }

    /// Regression: the guard read ca.crt once, at start. When the CA on
    /// disk changed (renewed, rotated), it kept restoring the old bundle:
    /// the apiserver could not verify gitgate's certificate, and enforced
    /// namespaces stayed locked until a restart.
    #[test]
    fn the_guard_takes_the_ca_from_disk_at_every_round() {
        let dir = tempfile::tempdir().unwrap();
        let first = crate::tls::generate(dir.path(), &["localhost".into()], 30).unwrap();
        let old = std::fs::read(&first.ca_cert).unwrap();
        let c =
            GuardConfig { ca_file: Some(first.ca_cert.clone()), vap: None, ..config("https://127.0.0.1:8443", &old) };
        assert!(matches!(c.current(), std::borrow::Cow::Borrowed(_)), "unchanged: no copy");
        // A new CA (and serving pair) in the directory.
        std::fs::remove_file(dir.path().join(crate::tls::CA_KEY)).unwrap();
        let second = crate::tls::generate(dir.path(), &["localhost".into()], 30).unwrap();
        assert_ne!(first.ca_bundle, second.ca_bundle);
        let now = c.current();
        let bundle = |g: &GuardConfig| objects(g)[0].1["webhooks"][0]["clientConfig"]["caBundle"].clone();
        assert_eq!(bundle(&now), second.ca_bundle.as_str());
        // The live configuration with the old bundle is an edit to undo.
        assert_eq!(
            tampered(&objects(&now)[0].1, &objects(&c)[0].1).as_deref(),
            Some("/webhooks/0/clientConfig/caBundle")
        );
        // An emptied or garbled file never becomes the bundle.
        for junk in [&b""[..], b"not a certificate"] {
            std::fs::write(&first.ca_cert, junk).unwrap();
            assert_eq!(bundle(&c.current()), bundle(&c));
        }
        std::fs::remove_file(&first.ca_cert).unwrap();
        assert_eq!(bundle(&c.current()), bundle(&c), "a missing file keeps the CA");
    }

    /// Regression (webhook lockout): gitgate's configuration pointed at a
    /// Service (another manager's `service` in place of gitgate's `url`)
    /// was "restored" by an apply that merged both, which the apiserver
    /// refuses: it stayed pointed at the Service for good.
    #[test]
    fn an_edited_configuration_is_replaced_not_merged() {
        let c = config("https://127.0.0.1:8443", b"ca");
        let objs = objects(&c);
        let desired = &objs[0].1;
        let mut live = desired.clone();
        live["metadata"]["resourceVersion"] = "42".into();
        live["metadata"]["annotations"] = json!({"meta.helm.sh/release-name": "gitgate"});
        live["metadata"]["managedFields"] = json!([{"manager": "kubectl-patch"}]);
        let hook = &mut live["webhooks"][0]["clientConfig"];
        hook.as_object_mut().unwrap().remove("url");
        hook["service"] = json!({"namespace": "gitgate", "name": "gone", "port": 443});
        live["webhooks"][0]["failurePolicy"] = "Ignore".into();
        assert!(tampered(desired, &live).is_some());
        let next = restored(desired, &live);
        assert_eq!(tampered(desired, &next), None);
        assert_eq!(next["webhooks"], desired["webhooks"], "gitgate's webhooks, exactly: no service beside the url");
        assert_eq!(next["metadata"]["resourceVersion"], "42", "a write in between is a conflict");
        assert_eq!(next["metadata"]["annotations"]["meta.helm.sh/release-name"], "gitgate");
        assert!(next["metadata"].get("managedFields").is_none());
        // A policy's spec likewise.
        let vap = &objs[2].1;
        let mut live = vap.clone();
        live["spec"]["failurePolicy"] = "Ignore".into();
        live["metadata"]["labels"] = json!({});
        let next = restored(vap, &live);
        assert_eq!(next["spec"], vap["spec"]);
        assert_eq!(next["metadata"]["labels"][GUARD_LABEL], "true");
    }

    /// Only changes that set the break-glass annotation go to the stamp,
    /// which fails open (the validating webhook refuses an unstamped one).
    fn assert_break_glass_webhook(mutating: &Value) {
        let hooks = mutating["webhooks"].as_array().unwrap();
        let w = hooks.iter().find(|w| w["name"] == "breakglass.gitgate.dev").expect("a break-glass webhook");
        assert_eq!(w["failurePolicy"], "Ignore");
        assert_eq!(w["rules"][0]["operations"], json!(["CREATE", "UPDATE"]));
        assert_eq!(w["clientConfig"]["service"]["path"], "/mutate");
        assert!(w["matchConditions"][0]["expression"].as_str().unwrap().contains("'gitgate.dev/break-glass' in"));
    }

    #[test]
    fn an_enforce_label_splits_each_configuration_into_fail_and_ignore_webhooks() {
        let mut c = GuardConfig {
            endpoint: Endpoint::parse("gitgate/gitgate").unwrap(),
            ca_pem: b"ca".to_vec(),
            ca_file: None,
            namespace: "gitgate".into(),
            failure_policy: "Fail".into(),
            timeout_seconds: 5,
            enforce_label: None,
            vap: None,
        };
        let single = objects(&c);
        assert_eq!(single[0].1["webhooks"].as_array().unwrap().len(), 2, "everything, and evictions apart");
        assert_eq!(single[0].1["webhooks"][1]["name"], EVICTIONS_WEBHOOK);
        assert_eq!(single[0].1["webhooks"][1]["failurePolicy"], "Ignore");
        // secrets, and the break-glass window stamp
        assert_eq!(single[1].1["webhooks"].as_array().unwrap().len(), 2);
        assert!(single[1].1["webhooks"][0].get("matchConditions").is_none());
        assert_break_glass_webhook(&single[1].1);

        c.enforce_label = Some(("gitgate.dev/enforce".into(), "true".into()));
        let split = objects(&c);
        assert_break_glass_webhook(&split[1].1);
        for (_, config) in &split {
            let hooks = config["webhooks"].as_array().unwrap();
            let hooks: Vec<&Value> = hooks.iter().filter(|w| w["name"] != "breakglass.gitgate.dev").collect();
            let validating = config["kind"] == "ValidatingWebhookConfiguration";
            assert_eq!(hooks.len(), if validating { 3 } else { 2 });
            for w in hooks.into_iter().filter(|w| w["name"] != EVICTIONS_WEBHOOK) {
                let exprs = w["namespaceSelector"]["matchExpressions"].as_array().unwrap();
                assert_eq!(exprs[0]["values"], json!(["kube-system", "kube-node-lease", "gitgate"]));
                let enforced = exprs[1] == json!({"key": "gitgate.dev/enforce", "operator": "In", "values": ["true"]});
                assert_eq!(w["failurePolicy"], if enforced { "Fail" } else { "Ignore" }, "{w}");
                assert_eq!(w["name"].as_str().unwrap().starts_with("observe."), !enforced);
                assert_eq!(
                    w["matchConditions"][0]["expression"],
                    "!(has(request.namespace) && request.namespace in ['kube-system', 'kube-node-lease', 'gitgate'])"
                );
            }
        }
        let observe = &split[0].1["webhooks"][1];
        assert_eq!(observe["rules"][0]["scope"], "Namespaced");
        assert_eq!(observe["rules"][1]["resources"], json!(["namespaces/*"]));
        assert_eq!(split[0].1["webhooks"][0]["rules"][0]["scope"], "*");
        // Evictions fail open everywhere, never intercepted in the excluded
        // namespaces, and only evictions.
        let evictions = &split[0].1["webhooks"][2];
        assert_eq!(evictions["name"], EVICTIONS_WEBHOOK);
        assert_eq!(evictions["failurePolicy"], "Ignore");
        assert_eq!(
            evictions["rules"],
            json!([{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"], "resources": ["pods/eviction"], "scope": "Namespaced"}])
        );
        assert_eq!(evictions["namespaceSelector"]["matchExpressions"].as_array().unwrap().len(), 1);
    }

    /// The conditions a webhook puts in front of gitgate, evaluated the
    /// apiserver's way by gitgate's own CEL engine over a request.
    fn sends(webhook: &Value, request: Value) -> bool {
        let req: crate::admission::AdmissionRequest = serde_json::from_value(request).unwrap();
        let yaml = format!(
            "apiVersion: admissionregistration.k8s.io/v1\nkind: ValidatingAdmissionPolicy\nmetadata: {{name: w}}\nspec:\n  matchConstraints:\n    resourceRules: {rules}\n  matchConditions: {conditions}\n  validations: [{{expression: 'false'}}]\n---\napiVersion: admissionregistration.k8s.io/v1\nkind: ValidatingAdmissionPolicyBinding\nmetadata: {{name: w}}\nspec: {{policyName: w, validationActions: [Deny]}}\n",
            rules = webhook["rules"],
            conditions = webhook["matchConditions"],
        );
        let set = crate::policy::PolicySet::compile(vec![crate::policy::parse_documents("w", &yaml).unwrap()]).unwrap();
        let mut d = crate::admission::Decision::default();
        set.evaluate(&req, &crate::policy::StaticNamespaces::default(), &Default::default(), &mut d);
        !d.allowed()
    }

    fn request(resource: &str, sub: &str, operation: &str, user: &str) -> Value {
        json!({
            "uid": "u", "kind": {"group": "", "version": "v1", "kind": "X"},
            "resource": {"group": if resource == "deployments" { "apps" } else { "" }, "version": "v1", "resource": resource},
            "subResource": sub, "name": "x", "namespace": "shop", "operation": operation,
            "userInfo": {"username": user, "groups": ["system:authenticated"]},
        })
    }

    #[test]
    fn every_subresource_is_sent_but_controller_status_and_evictions_go_their_own_way() {
        let c = GuardConfig {
            endpoint: Endpoint::parse("gitgate/gitgate").unwrap(),
            ca_pem: b"ca".to_vec(),
            ca_file: None,
            namespace: "gitgate".into(),
            failure_policy: "Fail".into(),
            timeout_seconds: 5,
            enforce_label: Some(("gitgate.dev/enforce".into(), "true".into())),
            vap: None,
        };
        let objs = objects(&c);
        let hooks = objs[0].1["webhooks"].as_array().unwrap();
        let human = "alice@example.com";
        let operator = "system:serviceaccount:ingress:controller";
        for w in &hooks[..2] {
            for (resource, sub, op) in [
                ("pods", "ephemeralcontainers", "UPDATE"),
                ("deployments", "status", "UPDATE"),
                ("namespaces", "finalize", "UPDATE"),
                ("serviceaccounts", "token", "CREATE"),
                ("pods", "resize", "UPDATE"),
                ("deployments", "scale", "UPDATE"),
                ("configmaps", "", "CREATE"),
            ] {
                assert!(sends(w, request(resource, sub, op, human)), "{} misses {resource}/{sub}", w["name"]);
            }
            // a controller's status never waits on gitgate; its other writes do
            assert!(!sends(w, request("deployments", "status", "UPDATE", operator)));
            assert!(sends(w, request("serviceaccounts", "token", "CREATE", operator)));
            assert!(sends(w, request("deployments", "scale", "UPDATE", operator)));
            // exec changes nothing; evictions have their own webhook
            assert!(!sends(w, request("pods", "exec", "CONNECT", human)));
            assert!(!sends(w, request("pods", "eviction", "CREATE", human)));
        }
        assert!(sends(&hooks[2], request("pods", "eviction", "CREATE", human)));
        assert!(sends(&hooks[2], request("pods", "eviction", "CREATE", operator)));
        assert!(!sends(&hooks[2], request("pods", "eviction", "CREATE", "system:serviceaccount:kube-system:x")));
        assert!(!sends(&hooks[2], request("deployments", "status", "UPDATE", human)));
        // The apiserver omits request.subResource when there is none, and
        // request.namespace for a cluster-scoped object: every condition
        // that reads them must ask has() first, or it fails (and with
        // failurePolicy Fail, the request is denied: every TokenReview,
        // every Namespace the reconciler creates).
        let mut c = c;
        for label in [None, Some(("gitgate.dev/enforce".to_string(), "true".to_string()))] {
            c.enforce_label = label;
            for (_, config) in objects(&c) {
                for w in config["webhooks"].as_array().unwrap() {
                    for cond in w["matchConditions"].as_array().into_iter().flatten() {
                        let e = cond["expression"].as_str().unwrap();
                        for field in ["request.subResource", "request.namespace"] {
                            let guarded = e.matches(&format!("has({field})")).count();
                            assert_eq!(e.matches(field).count(), 2 * guarded, "{e}");
                        }
                    }
                }
            }
        }
    }
}
