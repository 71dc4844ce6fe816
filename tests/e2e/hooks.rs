//! Webhook configurations the e2e tests register by hand (the guard's own
//! are tested in `sync`).

use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1 as adm;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};

/// A MutatingWebhookConfiguration `name` that sends Secret creates and
/// updates in namespaces labelled `<label>=on` to `url` (`…/mutate`),
/// failing closed, as gitgate's secrets bridge is meant to run.
pub fn secrets_mutating(name: &str, url: String, ca_pem: Vec<u8>, label: &str) -> adm::MutatingWebhookConfiguration {
    adm::MutatingWebhookConfiguration {
        metadata: ObjectMeta { name: Some(name.into()), ..Default::default() },
        webhooks: Some(vec![adm::MutatingWebhook {
            name: format!("{name}.gitgate.dev"),
            admission_review_versions: vec!["v1".into()],
            client_config: adm::WebhookClientConfig {
                url: Some(url),
                ca_bundle: Some(ByteString(ca_pem)),
                service: None,
            },
            failure_policy: Some("Fail".into()),
            side_effects: "None".into(),
            timeout_seconds: Some(5),
            reinvocation_policy: Some("IfNeeded".into()),
            rules: Some(vec![adm::RuleWithOperations {
                api_groups: Some(vec![String::new()]),
                api_versions: Some(vec!["v1".into()]),
                operations: Some(vec!["CREATE".into(), "UPDATE".into()]),
                resources: Some(vec!["secrets".into()]),
                scope: Some("Namespaced".into()),
            }]),
            namespace_selector: Some(LabelSelector {
                match_labels: Some([(label.to_string(), "on".to_string())].into()),
                ..Default::default()
            }),
            ..Default::default()
        }]),
    }
}
