//! One destination cluster: its client, its resource table, its rate
//! limit. Every write the sync loop makes goes through here, by server-side
//! apply under one field manager.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PropagationPolicy};
use kube::core::GroupVersionKind;
use serde_json::Value;

use super::SyncError;
use crate::contract::FIELD_MANAGER;

/// A resolved kind: how to reach it and whether it is namespaced.
#[derive(Clone, Debug)]
pub struct Resource {
    pub api: ApiResource,
    pub namespaced: bool,
}

/// The kinds every cluster has, resolved without a discovery round trip;
/// anything else (CRDs) is discovered once and cached.
const BUILTIN: &[(&str, &str, &str, &str, bool)] = &[
    ("", "v1", "ConfigMap", "configmaps", true),
    ("", "v1", "Secret", "secrets", true),
    ("", "v1", "Service", "services", true),
    ("", "v1", "ServiceAccount", "serviceaccounts", true),
    ("", "v1", "Namespace", "namespaces", false),
    ("", "v1", "PersistentVolumeClaim", "persistentvolumeclaims", true),
    ("", "v1", "Pod", "pods", true),
    ("", "v1", "ResourceQuota", "resourcequotas", true),
    ("", "v1", "LimitRange", "limitranges", true),
    ("apps", "v1", "Deployment", "deployments", true),
    ("apps", "v1", "StatefulSet", "statefulsets", true),
    ("apps", "v1", "DaemonSet", "daemonsets", true),
    ("batch", "v1", "Job", "jobs", true),
    ("batch", "v1", "CronJob", "cronjobs", true),
    ("rbac.authorization.k8s.io", "v1", "Role", "roles", true),
    ("rbac.authorization.k8s.io", "v1", "RoleBinding", "rolebindings", true),
    ("rbac.authorization.k8s.io", "v1", "ClusterRole", "clusterroles", false),
    ("rbac.authorization.k8s.io", "v1", "ClusterRoleBinding", "clusterrolebindings", false),
    ("networking.k8s.io", "v1", "Ingress", "ingresses", true),
    ("networking.k8s.io", "v1", "NetworkPolicy", "networkpolicies", true),
    ("policy", "v1", "PodDisruptionBudget", "poddisruptionbudgets", true),
    ("autoscaling", "v2", "HorizontalPodAutoscaler", "horizontalpodautoscalers", true),
    ("apiextensions.k8s.io", "v1", "CustomResourceDefinition", "customresourcedefinitions", false),
    ("admissionregistration.k8s.io", "v1", "ValidatingWebhookConfiguration", "validatingwebhookconfigurations", false),
    ("admissionregistration.k8s.io", "v1", "MutatingWebhookConfiguration", "mutatingwebhookconfigurations", false),
    ("admissionregistration.k8s.io", "v1", "ValidatingAdmissionPolicy", "validatingadmissionpolicies", false),
    (
        "admissionregistration.k8s.io",
        "v1",
        "ValidatingAdmissionPolicyBinding",
        "validatingadmissionpolicybindings",
        false,
    ),
    ("coordination.k8s.io", "v1", "Lease", "leases", true),
];

/// A token bucket: `qps` sustained, `burst` at once (client-go's flags).
pub struct RateLimit {
    qps: f64,
    burst: f64,
    state: tokio::sync::Mutex<(f64, Instant)>,
}

impl RateLimit {
    pub fn new(qps: f32, burst: u32) -> Self {
        let burst = f64::from(burst.max(1));
        RateLimit { qps: f64::from(qps.max(0.1)), burst, state: tokio::sync::Mutex::new((burst, Instant::now())) }
    }

    pub async fn acquire(&self) {
        let mut s = self.state.lock().await;
        let now = Instant::now();
        s.0 = (s.0 + now.duration_since(s.1).as_secs_f64() * self.qps).min(self.burst);
        s.1 = now;
        if s.0 < 1.0 {
            let wait = Duration::from_secs_f64((1.0 - s.0) / self.qps);
            tokio::time::sleep(wait).await;
            s.0 = 1.0;
            s.1 = Instant::now();
        }
        s.0 -= 1.0;
    }
}

/// A destination cluster.
pub struct Target {
    pub name: String,
    client: kube::Client,
    resources: Mutex<HashMap<(String, String, String), Resource>>,
    limit: RateLimit,
}

impl Target {
    pub fn new(name: impl Into<String>, client: kube::Client, qps: f32, burst: u32) -> Self {
        let mut resources = HashMap::new();
        for (group, version, kind, plural, namespaced) in BUILTIN {
            let gvk = GroupVersionKind::gvk(group, version, kind);
            let api = ApiResource::from_gvk_with_plural(&gvk, plural);
            resources.insert(
                (group.to_string(), version.to_string(), kind.to_string()),
                Resource { api, namespaced: *namespaced },
            );
        }
        Target { name: name.into(), client, resources: Mutex::new(resources), limit: RateLimit::new(qps, burst) }
    }

    pub fn client(&self) -> &kube::Client {
        &self.client
    }

    /// The resource of a kind: built in, cached, or discovered (a CRD
    /// applied in phase 0 is found once it is established).
    pub async fn resolve(&self, group: &str, version: &str, kind: &str) -> Result<Resource, SyncError> {
        let key = (group.to_string(), version.to_string(), kind.to_string());
        if let Some(r) = self.resources.lock().unwrap_or_else(|e| e.into_inner()).get(&key) {
            return Ok(r.clone());
        }
        self.limit.acquire().await;
        let gvk = GroupVersionKind::gvk(group, version, kind);
        let (api, caps) =
            kube::discovery::pinned_kind(&self.client, &gvk).await.map_err(|e| SyncError::UnknownKind {
                kind: format!(
                    "{}/{kind}",
                    if group.is_empty() { version.to_string() } else { format!("{group}/{version}") }
                ),
                source: Box::new(e),
            })?;
        let r = Resource { api, namespaced: caps.scope == kube::discovery::Scope::Namespaced };
        self.resources.lock().unwrap_or_else(|e| e.into_inner()).insert(key, r.clone());
        Ok(r)
    }

    fn api(&self, r: &Resource, namespace: &str) -> Api<DynamicObject> {
        if r.namespaced {
            Api::namespaced_with(self.client.clone(), namespace, &r.api)
        } else {
            Api::all_with(self.client.clone(), &r.api)
        }
    }

    /// Server-side apply with gitgate's field manager, taking over fields
    /// another manager set (Git wins). Returns what health needs of the
    /// object as stored ([`Stored`]: generation, deletion, spec, status):
    /// the rest of the reply (data, managedFields) is skipped as it is read.
    ///
    /// `fieldValidation=Ignore`: the apiserver's field validation only
    /// adds warnings (nobody reads them here) or, when strict, errors for
    /// duplicate keys (never sent: the body is serialised from one JSON
    /// value) and unknown fields — which an apply configuration fails on
    /// anyway ("field not declared in schema", e2e-tested). Skipping its
    /// extra decoding pass saves the apiserver CPU on every apply.
    pub async fn apply(&self, r: &Resource, namespace: &str, name: &str, object: &Value) -> Result<Value, SyncError> {
        self.limit.acquire().await;
        let action = || format!("apply {}", display(&r.api.kind, namespace, name));
        let params = PatchParams::apply(FIELD_MANAGER).force().validation_ignore();
        let req = kube::core::Request::new(self.api(r, namespace).resource_url())
            .patch(name, &params, &Patch::Apply(object))
            .map_err(|e| SyncError::kube(action(), kube::Error::BuildRequest(e)))?;
        let out: Stored = self.client.request(req).await.map_err(|e| SyncError::kube(action(), e))?;
        Ok(out.into_value())
    }

    /// Replaces an object (PUT) under gitgate's field manager; `object`
    /// carries the resourceVersion it was read at, so a write in between
    /// is a 409 the caller's next round sees again.
    pub async fn replace(&self, r: &Resource, namespace: &str, name: &str, object: &Value) -> Result<(), SyncError> {
        self.limit.acquire().await;
        let action = || format!("replace {}", display(&r.api.kind, namespace, name));
        let params = kube::api::PostParams { field_manager: Some(FIELD_MANAGER.into()), ..Default::default() };
        let body = serde_json::to_vec(object).map_err(|e| SyncError::kube(action(), kube::Error::SerdeError(e)))?;
        let req = kube::core::Request::new(self.api(r, namespace).resource_url())
            .replace(name, &params, body)
            .map_err(|e| SyncError::kube(action(), kube::Error::BuildRequest(e)))?;
        self.client.request::<Value>(req).await.map_err(|e| SyncError::kube(action(), e))?;
        Ok(())
    }

    /// [`Target::apply`] as a dry run (`dryRun=All`): what the apiserver
    /// would refuse — an immutable field — before anything is written.
    pub async fn apply_dry_run(
        &self,
        r: &Resource,
        namespace: &str,
        name: &str,
        object: &Value,
    ) -> Result<(), SyncError> {
        self.limit.acquire().await;
        let action = || format!("apply {} (dry run)", display(&r.api.kind, namespace, name));
        let params = PatchParams::apply(FIELD_MANAGER).force().validation_ignore().dry_run();
        let req = kube::core::Request::new(self.api(r, namespace).resource_url())
            .patch(name, &params, &Patch::Apply(object))
            .map_err(|e| SyncError::kube(action(), kube::Error::BuildRequest(e)))?;
        let _: Stored = self.client.request(req).await.map_err(|e| SyncError::kube(action(), e))?;
        Ok(())
    }

    /// [`Target::apply_dry_run`] answering the whole object as the
    /// apiserver would store it (`managedFields` dropped as [`slim`]
    /// drops them): what `gitgate diff` compares with the live object.
    pub async fn apply_dry_run_object(
        &self,
        r: &Resource,
        namespace: &str,
        name: &str,
        object: &Value,
    ) -> Result<Value, SyncError> {
        self.limit.acquire().await;
        let action = || format!("apply {} (dry run)", display(&r.api.kind, namespace, name));
        let params = PatchParams::apply(FIELD_MANAGER).force().validation_ignore().dry_run();
        let req = kube::core::Request::new(self.api(r, namespace).resource_url())
            .patch(name, &params, &Patch::Apply(object))
            .map_err(|e| SyncError::kube(action(), kube::Error::BuildRequest(e)))?;
        let out: Value = self.client.request(req).await.map_err(|e| SyncError::kube(action(), e))?;
        Ok(slim(out))
    }

    /// Creates an object (a hook run: `generateName` lets the apiserver
    /// name it) under gitgate's field manager; the object as stored, or
    /// `None` when one of that name exists already.
    pub async fn create(&self, r: &Resource, namespace: &str, object: &Value) -> Result<Option<Value>, SyncError> {
        self.limit.acquire().await;
        let meta = |k: &str| object.pointer(&format!("/metadata/{k}")).and_then(Value::as_str).unwrap_or_default();
        let name = if meta("name").is_empty() { format!("{}*", meta("generateName")) } else { meta("name").into() };
        let action = || format!("create {}", display(&r.api.kind, namespace, &name));
        let params = kube::api::PostParams { field_manager: Some(FIELD_MANAGER.into()), ..Default::default() };
        let body = serde_json::to_vec(object).map_err(|e| SyncError::kube(action(), kube::Error::SerdeError(e)))?;
        let req = kube::core::Request::new(self.api(r, namespace).resource_url())
            .create(&params, body)
            .map_err(|e| SyncError::kube(action(), kube::Error::BuildRequest(e)))?;
        match self.client.request::<Value>(req).await {
            Ok(v) => Ok(Some(slim(v))),
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(None),
            Err(e) => Err(SyncError::kube(action(), e)),
        }
    }

    /// Deletes an object and waits until it is gone (a re-create needs
    /// the name free), at most `within`.
    pub async fn delete_and_wait(
        &self,
        r: &Resource,
        namespace: &str,
        name: &str,
        within: Duration,
    ) -> Result<(), SyncError> {
        self.delete(r, namespace, name).await?;
        let deadline = Instant::now() + within;
        let mut pause = Duration::from_millis(50);
        while self.get(r, namespace, name).await?.is_some() {
            if Instant::now() >= deadline {
                return Err(SyncError::Gone { object: display(&r.api.kind, namespace, name), timeout: within });
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_secs(1));
        }
        Ok(())
    }

    /// The last lines (at most 10, 2 KiB) of the newest Pod of a Job, for
    /// the report of a failed hook; empty when there is none or it cannot
    /// be read (a Pod that never ran has no log).
    pub async fn job_log_tail(&self, namespace: &str, job: &str) -> String {
        use k8s_openapi::api::core::v1::Pod;
        self.limit.acquire().await;
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), namespace);
        let Ok(list) = pods.list(&ListParams::default().labels(&format!("job-name={job}"))).await else {
            return String::new();
        };
        let newest = list
            .items
            .iter()
            .max_by_key(|p| p.metadata.creation_timestamp.clone())
            .and_then(|p| p.metadata.name.clone());
        let Some(pod) = newest else { return String::new() };
        self.limit.acquire().await;
        let params = kube::api::LogParams { tail_lines: Some(10), limit_bytes: Some(2048), ..Default::default() };
        pods.logs(&pod, &params).await.map(|l| l.trim_end().to_string()).unwrap_or_default()
    }

    /// Reads one object; `None` when it is not there.
    pub async fn get(&self, r: &Resource, namespace: &str, name: &str) -> Result<Option<Value>, SyncError> {
        self.limit.acquire().await;
        let action = || format!("read {}", display(&r.api.kind, namespace, name));
        let req = kube::core::Request::new(self.api(r, namespace).resource_url())
            .get(name, &Default::default())
            .map_err(|e| SyncError::kube(action(), kube::Error::BuildRequest(e)))?;
        match self.client.request::<Value>(req).await {
            Ok(v) => Ok(Some(slim(v))),
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(None),
            Err(e) => Err(SyncError::kube(action(), e)),
        }
    }

    /// Every object of a kind carrying the label selector, in all
    /// namespaces, read in pages of 500 and handed to `each` one at a time
    /// (managedFields dropped: the sync loop never reads them, and at 10k
    /// objects they are most of the bytes); no page outlives its turn.
    ///
    /// `namespace`: only that namespace (`None`: all of them). A
    /// consistent list reads every object of the kind in its scope from
    /// etcd before the label selector filters them, so a list scoped to the
    /// app's namespace costs the apiserver that namespace, not the cluster.
    pub async fn list_each(
        &self,
        r: &Resource,
        namespace: Option<&str>,
        selector: &str,
        mut each: impl FnMut(Value),
    ) -> Result<(), SyncError> {
        #[derive(serde::Deserialize)]
        struct Page {
            #[serde(default)]
            metadata: kube::core::ListMeta,
            #[serde(default)]
            items: Vec<Value>,
        }
        let url = match namespace {
            Some(ns) if r.namespaced => Api::<DynamicObject>::namespaced_with(self.client.clone(), ns, &r.api),
            _ => Api::<DynamicObject>::all_with(self.client.clone(), &r.api),
        }
        .resource_url()
        .to_string();
        let action = || format!("list {}", r.api.plural);
        let mut params = ListParams::default().labels(selector).limit(500);
        loop {
            self.limit.acquire().await;
            let req = kube::core::Request::new(&url)
                .list(&params)
                .map_err(|e| SyncError::kube(action(), kube::Error::BuildRequest(e)))?;
            let page: Page = self.client.request(req).await.map_err(|e| SyncError::kube(action(), e))?;
            for item in page.items {
                if let Some(v) = with_type(slim(item), &r.api) {
                    each(v);
                }
            }
            match page.metadata.continue_.filter(|c| !c.is_empty()) {
                Some(token) => params = params.continue_token(&token),
                None => return Ok(()),
            }
        }
    }

    /// Every object of a kind carrying the label selector (see
    /// [`Target::list_each`]).
    pub async fn list(&self, r: &Resource, selector: &str) -> Result<Vec<Value>, SyncError> {
        let mut out = Vec::new();
        self.list_each(r, None, selector, |v| out.push(v)).await?;
        Ok(out)
    }

    /// Removes annotations (one JSON merge patch under gitgate's field
    /// manager): fields another manager owns, which an apply cannot drop.
    pub async fn remove_annotations(
        &self,
        r: &Resource,
        namespace: &str,
        name: &str,
        keys: &[&str],
    ) -> Result<(), SyncError> {
        self.limit.acquire().await;
        let nulls: serde_json::Map<String, Value> = keys.iter().map(|k| (k.to_string(), Value::Null)).collect();
        let patch = serde_json::json!({"metadata": {"annotations": nulls}});
        let params = PatchParams { field_manager: Some(FIELD_MANAGER.into()), ..PatchParams::default() };
        match self.api(r, namespace).patch(name, &params, &Patch::Merge(&patch)).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
            Err(e) => Err(SyncError::kube(format!("update {}", display(&r.api.kind, namespace, name)), e)),
        }
    }

    /// Applies a JSON patch (RFC 6902) under gitgate's field manager: what
    /// an apply cannot do, such as removing fields another manager owns.
    /// A failed `test` (the object changed in between) is a conflict the
    /// next round sees again.
    pub async fn json_patch(&self, r: &Resource, namespace: &str, name: &str, patch: &Value) -> Result<(), SyncError> {
        self.limit.acquire().await;
        let ops: json_patch::Patch = serde_json::from_value(patch.clone()).map_err(|e| {
            SyncError::kube(format!("patch {}", display(&r.api.kind, namespace, name)), kube::Error::SerdeError(e))
        })?;
        let params = PatchParams { field_manager: Some(FIELD_MANAGER.into()), ..PatchParams::default() };
        match self.api(r, namespace).patch(name, &params, &Patch::<()>::Json(ops)).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
            Err(e) => Err(SyncError::kube(format!("patch {}", display(&r.api.kind, namespace, name)), e)),
        }
    }

    /// Deletes an object (dependents in the background, as kubectl does);
    /// one that is already gone counts as deleted.
    pub async fn delete(&self, r: &Resource, namespace: &str, name: &str) -> Result<(), SyncError> {
        self.limit.acquire().await;
        let params =
            DeleteParams { propagation_policy: Some(PropagationPolicy::Background), ..DeleteParams::default() };
        match self.api(r, namespace).delete(name, &params).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
            Err(e) => Err(SyncError::kube(format!("delete {}", display(&r.api.kind, namespace, name)), e)),
        }
    }
}

/// The parts of a stored object its health reads.
#[derive(serde::Deserialize)]
pub struct Stored {
    #[serde(default)]
    metadata: StoredMeta,
    #[serde(default)]
    spec: Option<Value>,
    #[serde(default)]
    status: Option<Value>,
}

#[derive(serde::Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct StoredMeta {
    #[serde(default)]
    generation: Option<Value>,
    #[serde(default)]
    deletion_timestamp: Option<Value>,
}

impl Stored {
    /// `{metadata: {generation, deletionTimestamp}, spec, status}`, the
    /// absent ones left out.
    pub fn into_value(self) -> Value {
        let mut meta = serde_json::Map::new();
        if let Some(g) = self.metadata.generation {
            meta.insert("generation".into(), g);
        }
        if let Some(d) = self.metadata.deletion_timestamp {
            meta.insert("deletionTimestamp".into(), d);
        }
        let mut out = serde_json::Map::new();
        out.insert("metadata".into(), Value::Object(meta));
        if let Some(s) = self.spec {
            out.insert("spec".into(), s);
        }
        if let Some(s) = self.status {
            out.insert("status".into(), s);
        }
        Value::Object(out)
    }
}

pub fn display(kind: &str, namespace: &str, name: &str) -> String {
    if namespace.is_empty() { format!("{kind}/{name}") } else { format!("{namespace}/{kind}/{name}") }
}

/// Items of a list (and of a watch's initial list) carry no apiVersion and
/// kind; the comparison with Git's manifest needs them.
pub fn with_type(mut v: Value, api: &ApiResource) -> Option<Value> {
    let o = v.as_object_mut()?;
    o.entry("apiVersion").or_insert_with(|| Value::String(api.api_version.clone()));
    o.entry("kind").or_insert_with(|| Value::String(api.kind.clone()));
    Some(v)
}

/// Drops `metadata.managedFields` (most of an object's bytes), unless a
/// manager other than gitgate and the cluster's components set fields:
/// then [`crate::contract::foreign`] reads them.
pub fn slim(mut v: Value) -> Value {
    if let Some(meta) = v.get_mut("metadata").and_then(Value::as_object_mut) {
        let foreign = meta.get("managedFields").and_then(Value::as_array).is_some_and(|entries| {
            entries.iter().any(|e| {
                let field = |k: &str| e.get(k).and_then(Value::as_str).unwrap_or_default();
                crate::contract::foreign::is_foreign(field("manager"), field("subresource"))
            })
        });
        if !foreign {
            meta.remove("managedFields");
        }
    }
    v
}

/// The fields an apiserver refusal names as immutable (`spec.template:
/// Invalid value: …: field is immutable`); `None` when the error is not
/// that refusal.
pub fn immutable_fields(e: &SyncError) -> Option<Vec<String>> {
    let SyncError::Kube { source, .. } = e else { return None };
    let kube::Error::Api(status) = source.as_ref() else { return None };
    if status.code != 422 || !status.message.contains("immutable") {
        return None;
    }
    let text = status.message.split_once("is invalid: ").map(|(_, t)| t).unwrap_or(&status.message);
    let text = text.trim_start_matches('[');
    // Each cause reads "<field>: <type>: <detail>"; causes are joined by ", ".
    const TYPES: &[&str] = &[": Invalid value: ", ": Forbidden: ", ": Required value", ": Unsupported value: "];
    let mut starts: Vec<(usize, usize)> = Vec::new();
    for t in TYPES {
        for (at, _) in text.match_indices(t) {
            let before = &text[..at];
            let from = before.rfind(", ").map(|i| i + 2).unwrap_or(0);
            let field = &before[from..];
            if !field.is_empty() && field.chars().all(|c| c.is_ascii_alphanumeric() || "._[]-/".contains(c)) {
                starts.push((from, at));
            }
        }
    }
    starts.sort_unstable();
    let mut fields = Vec::new();
    for (n, (from, at)) in starts.iter().enumerate() {
        let end = starts.get(n + 1).map(|(f, _)| *f).unwrap_or(text.len());
        if text[*at..end].contains("immutable") {
            fields.push(text[*from..*at].to_string());
        }
    }
    if fields.is_empty() {
        fields.push("a field".into());
    }
    Some(fields)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refusal(code: u16, message: &str) -> SyncError {
        let status = kube::core::Status::failure(message, "Invalid").with_code(code);
        SyncError::kube("apply", kube::Error::Api(status.boxed()))
    }

    #[test]
    fn immutable_fields_are_named_from_the_apiservers_refusal() {
        let one = refusal(
            422,
            r#"Job.batch "migrate" is invalid: spec.template: Invalid value: core.PodTemplateSpec{ObjectMeta:v1.ObjectMeta{Name:"", Labels:map[string]string{"a":"b", "c":"d"}}}: field is immutable"#,
        );
        assert_eq!(immutable_fields(&one).unwrap(), ["spec.template"]);
        let two = refusal(
            422,
            r#"Deployment.apps "web" is invalid: [spec.selector: Invalid value: v1.LabelSelector{MatchLabels:map[string]string{"app":"x", "b":"c"}}: field is immutable, spec.template.metadata.labels: Invalid value: map[string]string{"app":"x"}: `selector` does not match template `labels`]"#,
        );
        assert_eq!(immutable_fields(&two).unwrap(), ["spec.selector"]);
        assert!(
            immutable_fields(&refusal(422, r#"ConfigMap "a" is invalid: data: Invalid value: x: too long"#)).is_none()
        );
        assert!(immutable_fields(&refusal(409, "field is immutable")).is_none());
    }
}
