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
    /// gitgate's own namespace: never intercepted.
    pub namespace: String,
    /// `Fail` (default) or `Ignore`.
    pub failure_policy: String,
    pub timeout_seconds: u8,
    /// Also install the in-apiserver policy (holds while the webhook is down).
    pub vap: Option<(String, Vec<String>)>,
}

/// Namespaces no gitgate webhook intercepts.
pub fn excluded_namespaces(own: &str) -> Vec<String> {
    let mut v = vec!["kube-system".to_string(), "kube-node-lease".to_string()];
    if !own.is_empty() && !v.iter().any(|n| n == own) {
        v.push(own.to_string());
    }
    v
}

/// The objects the guard owns, as applied (labelled, unstamped: they come
/// from gitgate's configuration, not from Git).
pub fn objects(c: &GuardConfig) -> Vec<(ObjectKey, Value)> {
    use base64::Engine as _;
    let ca = base64::engine::general_purpose::STANDARD.encode(&c.ca_pem);
    let selector = json!({"matchExpressions": [{
        "key": "kubernetes.io/metadata.name", "operator": "NotIn", "values": excluded_namespaces(&c.namespace),
    }]});
    // Leases and Events change every second and are never Git's: skip them
    // before the request leaves the apiserver.
    let conditions = json!([{
        "name": "not-leases-or-events",
        "expression": "!(request.resource.group == 'coordination.k8s.io' && request.resource.resource == 'leases') && !(request.resource.resource == 'events')",
    }]);
    let labels = json!({GUARD_LABEL: "true"});
    let validating = json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": VALIDATING_NAME, "labels": labels},
        "webhooks": [{
            "name": "validate.gitgate.dev",
            "clientConfig": c.endpoint.client_config("/validate", &ca),
            "rules": [{"apiGroups": ["*"], "apiVersions": ["*"], "operations": ["CREATE", "UPDATE", "DELETE"], "resources": ["*", "*/scale"], "scope": "*"}],
            "namespaceSelector": selector,
            "matchConditions": conditions,
            "failurePolicy": c.failure_policy,
            "sideEffects": "NoneOnDryRun",
            "admissionReviewVersions": ["v1"],
            "timeoutSeconds": c.timeout_seconds,
            "matchPolicy": "Equivalent",
        }],
    });
    let mutating = json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": MUTATING_NAME, "labels": labels},
        "webhooks": [{
            "name": "secrets.gitgate.dev",
            "clientConfig": c.endpoint.client_config("/mutate", &ca),
            "rules": [{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE", "UPDATE"], "resources": ["secrets"], "scope": "Namespaced"}],
            "namespaceSelector": selector,
            "failurePolicy": c.failure_policy,
            "sideEffects": "NoneOnDryRun",
            "admissionReviewVersions": ["v1"],
            "timeoutSeconds": c.timeout_seconds,
            "reinvocationPolicy": "IfNeeded",
        }],
    });
    let key = |kind: &str, name: &str| ObjectKey::new("admissionregistration.k8s.io", kind, "", name);
    let mut out = vec![
        (key("ValidatingWebhookConfiguration", VALIDATING_NAME), validating),
        (key("MutatingWebhookConfiguration", MUTATING_NAME), mutating),
    ];
    if let Some((reconciler, groups)) = &c.vap {
        let (policy, binding) = crate::policy::vap::generate(reconciler, groups);
        for (kind, v) in [
            ("ValidatingAdmissionPolicy", serde_json::to_value(policy)),
            ("ValidatingAdmissionPolicyBinding", serde_json::to_value(binding)),
        ] {
            let Ok(mut v) = v else { continue };
            v["metadata"]["labels"][GUARD_LABEL] = "true".into();
            let name = v.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default().to_string();
            out.push((key(kind, &name), v));
        }
    }
    out
}

/// The first field the guard sets that the live object lacks (an edit).
pub fn tampered(desired: &Value, live: &Value) -> Option<String> {
    crate::provenance::first_difference(&desired.to_string(), live, &[]).unwrap_or(Some("/".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_parse_and_configurations_exclude_system_namespaces() {
        assert!(
            matches!(Endpoint::parse("https://127.0.0.1:8443/").unwrap(), Endpoint::Url(u) if u == "https://127.0.0.1:8443")
        );
        assert!(matches!(Endpoint::parse("gitgate/gitgate:8443").unwrap(), Endpoint::Service { port: 8443, .. }));
        assert!(Endpoint::parse("nonsense").is_err());
        let c = GuardConfig {
            endpoint: Endpoint::parse("gitgate/gitgate").unwrap(),
            ca_pem: b"-----BEGIN CERTIFICATE-----".to_vec(),
            namespace: "gitgate".into(),
            failure_policy: "Fail".into(),
            timeout_seconds: 5,
            vap: Some(("system:serviceaccount:gitgate:gitgate".into(), vec![])),
        };
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
}
