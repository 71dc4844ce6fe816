//! What foreign-field detection (issue 15, item 5) costs the sync loop:
//! every live object the loop reads is scanned for a manager other than
//! gitgate and the cluster's components (`slim`), and only an object with
//! one is walked (`fields`). Criterion, in process.
//!
//!   cargo bench --bench foreign

use criterion::{Criterion, criterion_group, criterion_main};
use serde_json::{Value, json};
use std::hint::black_box;

/// A Deployment as the apiserver returns it after gitgate applied it:
/// gitgate's Apply entry, the controller-manager's Update and status.
fn applied() -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {
            "name": "web", "namespace": "shop",
            "annotations": {"gitgate.dev/commit": "3f2a9c1", "deployment.kubernetes.io/revision": "2"},
            "managedFields": [
                {"manager": "gitgate", "operation": "Apply", "apiVersion": "apps/v1", "fieldsType": "FieldsV1", "fieldsV1": {
                    "f:metadata": {"f:annotations": {"f:gitgate.dev/commit": {}, "f:gitgate.dev/digest": {}, "f:gitgate.dev/source": {}}, "f:labels": {"f:gitgate.dev/app": {}}},
                    "f:spec": {"f:replicas": {}, "f:selector": {}, "f:template": {"f:metadata": {"f:labels": {"f:app": {}}}, "f:spec": {"f:containers": {
                        "k:{\"name\":\"app\"}": {".": {}, "f:image": {}, "f:name": {}, "f:ports": {"k:{\"containerPort\":8080,\"protocol\":\"TCP\"}": {".": {}, "f:containerPort": {}}}, "f:resources": {"f:limits": {"f:memory": {}}}}
                    }}}}
                }},
                {"manager": "kube-controller-manager", "operation": "Update", "apiVersion": "apps/v1", "fieldsType": "FieldsV1", "fieldsV1": {
                    "f:metadata": {"f:annotations": {"f:deployment.kubernetes.io/revision": {}}}}},
                {"manager": "kube-controller-manager", "operation": "Update", "subresource": "status", "apiVersion": "apps/v1", "fieldsType": "FieldsV1", "fieldsV1": {
                    "f:status": {"f:availableReplicas": {}, "f:conditions": {}, "f:observedGeneration": {}, "f:readyReplicas": {}, "f:replicas": {}, "f:updatedReplicas": {}}}}
            ]
        },
        "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}}, "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [
            {"name": "app", "image": "web:1", "ports": [{"containerPort": 8080, "protocol": "TCP"}], "resources": {"limits": {"memory": "128Mi"}}}
        ]}}},
        "status": {"replicas": 3}
    })
}

/// The same after `kubectl patch` added a sidecar and hostNetwork.
fn edited() -> Value {
    let mut v = applied();
    v["spec"]["template"]["spec"]["hostNetwork"] = true.into();
    v["spec"]["template"]["spec"]["containers"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "sidecar", "image": "evil:1"}));
    v["metadata"]["managedFields"].as_array_mut().unwrap().push(json!(
        {"manager": "kubectl-patch", "operation": "Update", "apiVersion": "apps/v1", "fieldsType": "FieldsV1", "fieldsV1": {
            "f:spec": {"f:template": {"f:spec": {"f:hostNetwork": {}, "f:containers": {"k:{\"name\":\"sidecar\"}": {".": {}, "f:image": {}, "f:name": {}}}}}}}}
    ));
    v
}

fn bench(c: &mut Criterion) {
    let (clean, dirty) = (applied(), edited());
    // The scan every listed or watched object now gets (before: the
    // managedFields were dropped unread).
    c.bench_function("slim_no_foreign_manager", |b| b.iter(|| gitgate::sync::target::slim(black_box(clean.clone()))));
    // What slim did before: drop them unread.
    c.bench_function("slim_before_drop_unread", |b| {
        b.iter(|| {
            let mut v = black_box(clean.clone());
            if let Some(m) = v.get_mut("metadata").and_then(Value::as_object_mut) {
                m.remove("managedFields");
            }
            v
        })
    });
    // A self-heal decision on an object another manager edited: find the
    // foreign fields and build the removal patch.
    c.bench_function("foreign_fields_and_removal", |b| {
        b.iter(|| {
            let f = gitgate::contract::foreign::fields(black_box(&dirty), None, &[]);
            black_box(gitgate::contract::foreign::removal(&dirty, &f))
        })
    });
    c.bench_function("foreign_fields_clean_object", |b| {
        b.iter(|| gitgate::contract::foreign::fields(black_box(&clean), None, &[]))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
