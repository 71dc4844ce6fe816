//! `gitgate vap`: the in-apiserver second layer. A ValidatingAdmissionPolicy
//! and binding that let only gitgate's reconciler, system controllers and
//! break-glass groups change objects labelled `gitgate.dev/app`; it holds
//! while the webhook is down, because the apiserver evaluates it itself.

use std::collections::BTreeMap;

use crate::contract::APP_LABEL;

use super::model::{
    BindingSpec, FailurePolicy, LabelRequirement, LabelSelector, MatchResources, Metadata, NamedExpression, PolicySpec,
    ResourceRule, ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding, Validation, ValidationAction,
};

pub const POLICY_NAME: &str = "gitgate-managed-objects";

fn cel_string(s: &str) -> String {
    format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'"))
}

fn cel_list(items: &[String]) -> String {
    format!("[{}]", items.iter().map(|s| cel_string(s)).collect::<Vec<_>>().join(", "))
}

/// The policy and its binding for `reconciler` (a username such as
/// `system:serviceaccount:gitgate:gitgate`) and `break_glass` groups.
pub fn generate(
    reconciler: &str,
    break_glass: &[String],
) -> (ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding) {
    let mut allowed = vec![
        format!("request.userInfo.username == {}", cel_string(reconciler)),
        // garbage collector, namespace controller, deployment/replicaset controllers
        "request.userInfo.username.startsWith('system:serviceaccount:kube-system:')".to_owned(),
        "request.userInfo.username == 'system:kube-controller-manager'".to_owned(),
        "request.userInfo.groups.exists(g, g == 'system:nodes')".to_owned(),
    ];
    if !break_glass.is_empty() {
        allowed.push(format!("request.userInfo.groups.exists(g, g in {})", cel_list(break_glass)));
    }
    let policy = ValidatingAdmissionPolicy {
        api_version: "admissionregistration.k8s.io/v1".into(),
        kind: "ValidatingAdmissionPolicy".into(),
        metadata: Metadata {
            name: POLICY_NAME.into(),
            labels: BTreeMap::from([("app.kubernetes.io/managed-by".to_owned(), "gitgate".to_owned())]),
            annotations: BTreeMap::new(),
        },
        spec: PolicySpec {
            failure_policy: Some(FailurePolicy::Fail),
            match_constraints: Some(MatchResources {
                resource_rules: vec![ResourceRule {
                    api_groups: vec!["*".into()],
                    api_versions: vec!["*".into()],
                    operations: vec!["CREATE".into(), "UPDATE".into(), "DELETE".into()],
                    resources: vec!["*".into(), "*/scale".into()],
                    ..Default::default()
                }],
                object_selector: Some(LabelSelector {
                    match_expressions: vec![LabelRequirement {
                        key: APP_LABEL.into(),
                        operator: "Exists".into(),
                        values: Vec::new(),
                    }],
                    ..Default::default()
                }),
                ..Default::default()
            }),
            variables: vec![NamedExpression {
                name: "app".into(),
                expression: format!(
                    "object != null ? object.metadata.labels[{app}] : oldObject.metadata.labels[{app}]",
                    app = cel_string(APP_LABEL)
                ),
            }],
            validations: vec![Validation {
                expression: allowed.join(" || "),
                message: Some("objects labelled gitgate.dev/app are changed only from Git".into()),
                message_expression: Some(
                    "'this object is managed by gitgate app ' + variables.app + ' from Git; change it in Git, not in the cluster (' + request.userInfo.username + ' may not ' + request.operation + ' it)'".into(),
                ),
                reason: Some("Forbidden".into()),
            }],
            ..Default::default()
        },
    };
    let binding = ValidatingAdmissionPolicyBinding {
        api_version: "admissionregistration.k8s.io/v1".into(),
        kind: "ValidatingAdmissionPolicyBinding".into(),
        metadata: Metadata { name: POLICY_NAME.into(), ..Default::default() },
        spec: BindingSpec {
            policy_name: POLICY_NAME.into(),
            validation_actions: vec![ValidationAction::Deny],
            match_resources: None,
            param_ref: None,
        },
    };
    (policy, binding)
}

/// Both documents as one YAML stream.
pub fn to_yaml(reconciler: &str, break_glass: &[String]) -> Result<String, serde_saphyr::SerializeError> {
    let (policy, binding) = generate(reconciler, break_glass);
    Ok(format!("{}---\n{}", serde_saphyr::to_string(&policy)?, serde_saphyr::to_string(&binding)?))
}
