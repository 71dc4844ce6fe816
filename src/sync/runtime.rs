//! The sync loop as a running part of `serve`: connect to the cluster,
//! learn who gitgate is, make its namespace; without a cluster, plan mode. The command layer
//! (`cmd::sync`) picks which and passes validated settings.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use super::SyncError;
use super::reconcile::Reconciler;
use super::status::StatusStore;
use crate::desired::DesiredSet;

/// A connected cluster: its client (no request retries: see
/// [`super::without_request_retries`]), its kubeconfig when one was read,
/// and its name (the current context, or `in-cluster`).
pub struct Connected {
    pub client: kube::Client,
    pub kubeconfig: Option<kube::config::Kubeconfig>,
    pub name: String,
}

/// Connects to `kubeconfig`'s current context, or the cluster gitgate runs
/// in, and checks within 5 s that the apiserver answers.
pub async fn connect(kubeconfig: Option<&Path>) -> Result<Connected, SyncError> {
    let (config, kc) = match kubeconfig {
        Some(path) => {
            let bad = |e| SyncError::Kubeconfig { path: path.to_path_buf(), source: Box::new(e) };
            let kc = kube::config::Kubeconfig::read_from(path).map_err(bad)?;
            (kube::Config::from_custom_kubeconfig(kc.clone(), &Default::default()).await.map_err(bad)?, Some(kc))
        }
        None => (
            kube::Config::infer().await.map_err(|e| SyncError::InferConfig { source: Box::new(e) })?,
            kube::config::Kubeconfig::read().ok(),
        ),
    };
    let name = kc.as_ref().and_then(|k| k.current_context.clone()).unwrap_or_else(|| "in-cluster".into());
    let client = kube::Client::try_from(super::without_request_retries(config))
        .map_err(|e| SyncError::kube("make a cluster client", e))?;
    let timeout = Duration::from_secs(5);
    tokio::time::timeout(timeout, client.apiserver_version())
        .await
        .map_err(|_| SyncError::Silent { timeout })?
        .map_err(|e| SyncError::kube("ask the apiserver its version", e))?;
    Ok(Connected { client, kubeconfig: kc, name })
}

/// Who the apiserver says gitgate is (a SelfSubjectReview): the username
/// its writes carry, which the provenance rule must recognise as the
/// reconciler's.
pub async fn whoami(client: &kube::Client) -> Result<String, SyncError> {
    use axum::http;
    let bad = |reason: String| SyncError::WhoAmI { reason };
    let body = serde_json::json!({"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"});
    let req = http::Request::post("/apis/authentication.k8s.io/v1/selfsubjectreviews")
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(serde_json::to_vec(&body).map_err(|e| bad(e.to_string()))?)
        .map_err(|e| bad(e.to_string()))?;
    let review: serde_json::Value =
        client.request(req).await.map_err(|e| SyncError::kube("ask the apiserver who gitgate is", e))?;
    review
        .pointer("/status/userInfo/username")
        .and_then(serde_json::Value::as_str)
        .filter(|u| !u.is_empty())
        .map(str::to_string)
        .ok_or_else(|| bad("the SelfSubjectReview named no user".into()))
}

/// gitgate's namespace, made when missing (development clusters; in a
/// real install the chart made it and this is a no-op).
pub async fn ensure_namespace(client: &kube::Client, ns: &str) {
    use k8s_openapi::api::core::v1::Namespace;
    let api: kube::Api<Namespace> = kube::Api::all(client.clone());
    if let Ok(None) = api.get_opt(ns).await {
        let obj = serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}});
        let params = kube::api::PatchParams::apply(crate::contract::FIELD_MANAGER);
        if let Err(e) = api.patch(ns, &params, &kube::api::Patch::Apply(&obj)).await {
            tracing::warn!(namespace = ns, error = %e, "failed to create gitgate's namespace");
        }
    }
}

/// Plan mode (no cluster): prints what each new commit would apply, and
/// keeps the status in step with it.
pub async fn plan_mode(mut desired: tokio::sync::watch::Receiver<Option<Arc<DesiredSet>>>, status: Arc<StatusStore>) {
    let mut last = None;
    loop {
        let current = desired.borrow_and_update().clone();
        if let Some(d) = current
            && last != Some(d.commit())
        {
            last = Some(d.commit());
            print!("{}", Reconciler::plan_text(&d));
            let apps = Reconciler::plan_statuses(&d);
            status.retain(|name| apps.iter().any(|a| a.name == name));
            for app in apps {
                status.put(app);
            }
        }
        if desired.changed().await.is_err() {
            return;
        }
    }
}

/// Spoke mode: names the cluster in the status (what a fleet's hub reads
/// to know whom it asked), with its labels as each commit declares them.
pub async fn name_cluster(
    mut desired: tokio::sync::watch::Receiver<Option<Arc<DesiredSet>>>,
    status: Arc<StatusStore>,
    name: String,
) {
    status.set_cluster(super::status::ClusterInfo { name: name.clone(), ..Default::default() });
    let mut warned = None;
    loop {
        let current = desired.borrow_and_update().clone();
        if let Some(d) = current {
            let labels =
                d.config().clusters.iter().find(|c| c.name == name).map(|c| c.labels.clone()).unwrap_or_default();
            let note = if d.apps().is_empty() {
                format!("no app of gitgate.yaml is deployed to cluster {name} at {}: nothing runs here", d.commit())
            } else {
                String::new()
            };
            if !note.is_empty() && warned != Some(d.commit()) {
                tracing::warn!(cluster = %name, commit = %d.commit(), "no app of gitgate.yaml is deployed to this cluster");
                warned = Some(d.commit());
            }
            status.set_cluster(super::status::ClusterInfo { name: name.clone(), labels, note });
        }
        if desired.changed().await.is_err() {
            return;
        }
    }
}
