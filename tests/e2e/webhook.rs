//! The admission server registered with a real kube-apiserver: it decodes
//! what the apiserver sends, and the apiserver honours what it answers
//! (allow, a denial with its message, a base64 JSONPatch).

use std::sync::Arc;
use std::time::{Duration, Instant};

use gitgate::admission::{AdmissionRequest, Decider, Decision, Flow, Limits, Operation, Stage};
use gitgate::server::ConnLimits;
use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1 as adm;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use kube::api::{Api, PostParams};
use serde_json::json;

use crate::cluster;
use crate::common;

/// Denies ConfigMaps named `deny-*`, labels every other one it sees.
struct Demo;

impl Stage for Demo {
    fn name(&self) -> &'static str {
        "demo"
    }
    fn decide(&self, req: &AdmissionRequest, d: &mut Decision) -> Flow {
        if req.operation == Operation::Create && req.object_name().starts_with("deny-") {
            d.deny("demo", 403, "Forbidden", format!("configmap {} is refused by the e2e gate", req.object_name()));
            return Flow::Stop;
        }
        d.patch(
            "demo",
            [json_patch::PatchOperation::Add(json_patch::AddOperation {
                path: "/metadata/labels".parse().unwrap(),
                value: json!({"gitgate-e2e/mutated": "yes"}),
            })],
        );
        Flow::Continue
    }
}

fn hook_rules() -> Vec<adm::RuleWithOperations> {
    vec![adm::RuleWithOperations {
        api_groups: Some(vec![String::new()]),
        api_versions: Some(vec!["v1".into()]),
        operations: Some(vec!["CREATE".into(), "UPDATE".into()]),
        resources: Some(vec!["configmaps".into()]),
        scope: Some("Namespaced".into()),
    }]
}

fn selector(ns: &str) -> LabelSelector {
    LabelSelector { match_labels: Some([("gitgate-e2e".to_string(), ns.to_string())].into()), ..Default::default() }
}

#[tokio::test]
async fn the_apiserver_accepts_our_answers() {
    let Some(cluster) = cluster::cluster("the_apiserver_accepts_our_answers") else { return };
    let decider = Decider::new().with_validating(Arc::new(Demo)).with_mutating(Arc::new(Demo));
    let srv = common::start_server(common::state_with(decider, Limits::default()), ConnLimits::default()).await;
    let client = cluster.client().await;
    let ns = "e2e-webhook";
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let nsobj = Namespace {
        metadata: ObjectMeta {
            name: Some(ns.into()),
            labels: Some([("gitgate-e2e".to_string(), ns.to_string())].into()),
            ..Default::default()
        },
        ..Default::default()
    };
    namespaces.create(&PostParams::default(), &nsobj).await.unwrap();

    let ca = ByteString(srv.ca_pem.clone());
    let url = |path: &str| format!("https://127.0.0.1:{}{}", srv.running.addr.port(), path);
    let validating = adm::ValidatingWebhookConfiguration {
        metadata: ObjectMeta { name: Some(format!("{ns}-validate")), ..Default::default() },
        webhooks: Some(vec![adm::ValidatingWebhook {
            name: "validate.gitgate.dev".into(),
            admission_review_versions: vec!["v1".into()],
            client_config: adm::WebhookClientConfig {
                url: Some(url("/validate")),
                ca_bundle: Some(ca.clone()),
                service: None,
            },
            failure_policy: Some("Fail".into()),
            side_effects: "None".into(),
            timeout_seconds: Some(5),
            rules: Some(hook_rules()),
            namespace_selector: Some(selector(ns)),
            ..Default::default()
        }]),
    };
    let mutating = adm::MutatingWebhookConfiguration {
        metadata: ObjectMeta { name: Some(format!("{ns}-mutate")), ..Default::default() },
        webhooks: Some(vec![adm::MutatingWebhook {
            name: "mutate.gitgate.dev".into(),
            admission_review_versions: vec!["v1".into()],
            client_config: adm::WebhookClientConfig { url: Some(url("/mutate")), ca_bundle: Some(ca), service: None },
            failure_policy: Some("Fail".into()),
            side_effects: "None".into(),
            timeout_seconds: Some(5),
            rules: Some(hook_rules()),
            namespace_selector: Some(selector(ns)),
            reinvocation_policy: Some("IfNeeded".into()),
            ..Default::default()
        }]),
    };
    Api::<adm::ValidatingWebhookConfiguration>::all(client.clone())
        .create(&PostParams::default(), &validating)
        .await
        .unwrap();
    Api::<adm::MutatingWebhookConfiguration>::all(client.clone())
        .create(&PostParams::default(), &mutating)
        .await
        .unwrap();

    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    let cm = |name: &str| ConfigMap {
        metadata: ObjectMeta { name: Some(name.into()), ..Default::default() },
        data: Some([("k".to_string(), "v".to_string())].into()),
        ..Default::default()
    };
    // The apiserver picks webhook configurations up asynchronously: wait
    // until our mutation shows on a probe object.
    let deadline = Instant::now() + Duration::from_secs(30);
    for i in 0.. {
        let created = cms.create(&PostParams::default(), &cm(&format!("probe-{i}"))).await.unwrap();
        let labels = created.metadata.labels.unwrap_or_default();
        if labels.get("gitgate-e2e/mutated").map(String::as_str) == Some("yes") {
            break;
        }
        assert!(Instant::now() < deadline, "the webhooks never took effect");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // allowed and patched: the apiserver applied our base64 JSONPatch
    let created = cms.create(&PostParams::default(), &cm("allowed")).await.unwrap();
    assert_eq!(created.metadata.labels.unwrap()["gitgate-e2e/mutated"], "yes");

    // denied: the apiserver refuses with our message
    let err = cms.create(&PostParams::default(), &cm("deny-me")).await.unwrap_err();
    let kube::Error::Api(status) = err else { panic!("expected an API error, got {err:?}") };
    assert_eq!(status.code, 403, "{status:?}");
    assert!(status.message.contains("configmap deny-me is refused by the e2e gate"), "{}", status.message);
    assert!(
        status.message.contains(".gitgate.dev\" denied the request"),
        "the apiserver names the webhook: {}",
        status.message
    );

    // dry-run goes through the same decision
    let dry = PostParams { dry_run: true, ..Default::default() };
    assert!(cms.create(&dry, &cm("deny-dry")).await.is_err());
    assert!(cms.create(&dry, &cm("dry-ok")).await.is_ok());

    srv.running.shutdown(Duration::from_secs(1)).await.unwrap();
}
