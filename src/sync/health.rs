//! Health of live objects, as Argo CD judges it (gitops-engine's
//! `pkg/health`): workloads are Progressing until their rollout is complete,
//! a Job is Healthy once complete, a PVC once bound, anything with a `Ready`
//! condition follows it, and anything else that exists is Healthy.
//!
//! Pure: a live object (JSON) in, an [`Assessment`] out. Odd shapes (a
//! string where a number belongs, no status at all) never panic; they read
//! as "not there yet".

use serde_json::Value;

/// Health of an object or an app, ordered best → worst, so an app's health
/// is the maximum of its objects'.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
pub enum Health {
    Healthy,
    Progressing,
    Missing,
    Degraded,
}

impl Health {
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Healthy => "Healthy",
            Health::Progressing => "Progressing",
            Health::Missing => "Missing",
            Health::Degraded => "Degraded",
        }
    }
}

impl std::fmt::Display for Health {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A health and why, in a few words.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Assessment {
    pub health: Health,
    pub message: String,
}

impl Assessment {
    fn new(health: Health, message: impl Into<String>) -> Self {
        Assessment { health, message: message.into() }
    }
}

/// Health of one live object (None = not in the cluster → Missing).
pub fn assess(group: &str, kind: &str, live: Option<&Value>) -> Assessment {
    let Some(obj) = live else {
        return Assessment::new(Health::Missing, "not found in the cluster");
    };
    if obj.pointer("/metadata/deletionTimestamp").is_some_and(|v| !v.is_null()) {
        return Assessment::new(Health::Progressing, "pending deletion");
    }
    match (group, kind) {
        ("apps", "Deployment") => deployment(obj),
        ("apps", "StatefulSet") => stateful_set(obj),
        ("apps", "DaemonSet") => daemon_set(obj),
        ("batch", "Job") => job(obj),
        ("", "PersistentVolumeClaim") => pvc(obj),
        ("", "Pod") => pod(obj),
        ("apiregistration.k8s.io", "APIService") => api_service(obj),
        _ => generic(obj),
    }
}

/// An app's health: the worst of its objects' (Healthy when empty).
pub fn aggregate(items: impl IntoIterator<Item = Health>) -> Health {
    items.into_iter().max().unwrap_or(Health::Healthy)
}

// ------------------------------------------------------------- readers

/// An integer at `ptr`: a JSON number or a numeric string; None otherwise.
fn int(obj: &Value, ptr: &str) -> Option<i64> {
    match obj.pointer(ptr)? {
        Value::Number(n) => n.as_i64().or_else(|| n.as_f64().map(|f| f as i64)),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// An integer at `ptr`, `default` when absent or unreadable.
fn int_or(obj: &Value, ptr: &str, default: i64) -> i64 {
    int(obj, ptr).unwrap_or(default)
}

fn string<'a>(obj: &'a Value, ptr: &str) -> Option<&'a str> {
    obj.pointer(ptr).and_then(Value::as_str)
}

fn boolean(obj: &Value, ptr: &str) -> bool {
    match obj.pointer(ptr) {
        Some(Value::Bool(b)) => *b,
        Some(Value::String(s)) => s.eq_ignore_ascii_case("true"),
        _ => false,
    }
}

/// The `status.conditions` entry of `type`, if any.
fn condition<'a>(obj: &'a Value, kind: &str) -> Option<&'a Value> {
    obj.pointer("/status/conditions")?.as_array()?.iter().find(|c| c.get("type").and_then(Value::as_str) == Some(kind))
}

fn cond_status(c: &Value) -> &str {
    c.get("status").and_then(Value::as_str).unwrap_or("Unknown")
}

fn cond_text<'a>(c: &'a Value, field: &str) -> &'a str {
    c.get(field).and_then(Value::as_str).unwrap_or("")
}

/// Whether the controller has seen the latest spec. An object without a
/// `metadata.generation` has nothing to observe.
fn observed(obj: &Value) -> bool {
    match int(obj, "/metadata/generation") {
        None => true,
        Some(generation) => int(obj, "/status/observedGeneration").is_some_and(|o| o >= generation),
    }
}

const NOT_OBSERVED: &str = "waiting for the controller to observe the new generation";

// --------------------------------------------------------------- kinds

fn deployment(obj: &Value) -> Assessment {
    if boolean(obj, "/spec/paused") {
        return Assessment::new(Health::Progressing, "deployment is paused (suspended)");
    }
    if !observed(obj) {
        return Assessment::new(Health::Progressing, NOT_OBSERVED);
    }
    if let Some(c) = condition(obj, "Progressing")
        && cond_text(c, "reason") == "ProgressDeadlineExceeded"
    {
        return Assessment::new(Health::Degraded, "deployment exceeded its progress deadline");
    }
    let want = int_or(obj, "/spec/replicas", 1);
    let replicas = int_or(obj, "/status/replicas", 0);
    let updated = int_or(obj, "/status/updatedReplicas", 0);
    let available = int_or(obj, "/status/availableReplicas", 0);
    if updated < want {
        return Assessment::new(Health::Progressing, format!("{updated}/{want} replicas updated"));
    }
    if replicas > updated {
        return Assessment::new(
            Health::Progressing,
            format!("{} old replicas pending termination", replicas - updated),
        );
    }
    if available < updated {
        return Assessment::new(Health::Progressing, format!("{available}/{want} replicas available"));
    }
    Assessment::new(Health::Healthy, format!("{available}/{want} replicas available"))
}

fn stateful_set(obj: &Value) -> Assessment {
    if int(obj, "/status/observedGeneration").is_none() || !observed(obj) {
        return Assessment::new(Health::Progressing, NOT_OBSERVED);
    }
    let want = int_or(obj, "/spec/replicas", 1);
    let ready = int_or(obj, "/status/readyReplicas", 0);
    if ready < want {
        return Assessment::new(Health::Progressing, format!("{ready}/{want} replicas ready"));
    }
    let strategy = string(obj, "/spec/updateStrategy/type").unwrap_or("RollingUpdate");
    if strategy == "OnDelete" {
        return Assessment::new(Health::Healthy, format!("{ready}/{want} replicas ready (OnDelete updates)"));
    }
    if let Some(partition) = int(obj, "/spec/updateStrategy/rollingUpdate/partition")
        && partition > 0
    {
        let updated = int_or(obj, "/status/updatedReplicas", 0);
        let target = (want - partition).max(0);
        if updated < target {
            return Assessment::new(Health::Progressing, format!("{updated}/{target} partitioned replicas updated"));
        }
        return Assessment::new(Health::Healthy, format!("partitioned rollout complete: {updated} replicas updated"));
    }
    let update = string(obj, "/status/updateRevision").unwrap_or("");
    let current = string(obj, "/status/currentRevision").unwrap_or("");
    if update != current {
        let updated = int_or(obj, "/status/updatedReplicas", 0);
        return Assessment::new(Health::Progressing, format!("rolling update: {updated}/{want} replicas at {update}"));
    }
    Assessment::new(Health::Healthy, format!("{ready}/{want} replicas ready"))
}

fn daemon_set(obj: &Value) -> Assessment {
    if !observed(obj) {
        return Assessment::new(Health::Progressing, NOT_OBSERVED);
    }
    let desired = int_or(obj, "/status/desiredNumberScheduled", 0);
    let updated = int_or(obj, "/status/updatedNumberScheduled", 0);
    let available = int_or(obj, "/status/numberAvailable", 0);
    if string(obj, "/spec/updateStrategy/type") == Some("OnDelete") {
        return Assessment::new(Health::Healthy, format!("{updated}/{desired} pods updated (OnDelete updates)"));
    }
    if updated < desired {
        return Assessment::new(Health::Progressing, format!("{updated}/{desired} pods updated"));
    }
    if available < desired {
        return Assessment::new(Health::Progressing, format!("{available}/{desired} pods available"));
    }
    Assessment::new(Health::Healthy, format!("{available}/{desired} pods available"))
}

fn job(obj: &Value) -> Assessment {
    let is_true = |kind: &str| condition(obj, kind).filter(|c| cond_status(c) == "True");
    if let Some(c) = is_true("Failed") {
        let why = [cond_text(c, "message"), cond_text(c, "reason")].into_iter().find(|s| !s.is_empty());
        return Assessment::new(Health::Degraded, format!("job failed: {}", why.unwrap_or("no reason given")));
    }
    if is_true("Complete").is_some() {
        return Assessment::new(Health::Healthy, "job complete");
    }
    if is_true("Suspended").is_some() {
        return Assessment::new(Health::Progressing, "job is suspended");
    }
    let active = int_or(obj, "/status/active", 0);
    Assessment::new(Health::Progressing, format!("job running ({active} active pods)"))
}

fn pvc(obj: &Value) -> Assessment {
    match string(obj, "/status/phase") {
        Some("Bound") => Assessment::new(Health::Healthy, "bound"),
        Some("Lost") => Assessment::new(Health::Degraded, "claim lost its volume"),
        Some("Pending") => Assessment::new(Health::Progressing, "waiting to be bound"),
        _ => Assessment::new(Health::Progressing, "phase not reported yet"),
    }
}

/// Container waiting reasons that will not resolve by themselves.
const POD_ERRORS: &[&str] = &[
    "CrashLoopBackOff",
    "ErrImagePull",
    "ImagePullBackOff",
    "InvalidImageName",
    "CreateContainerConfigError",
    "CreateContainerError",
];

fn pod(obj: &Value) -> Assessment {
    let phase = string(obj, "/status/phase").unwrap_or("");
    if matches!(phase, "Pending" | "Running") {
        let statuses = ["/status/initContainerStatuses", "/status/containerStatuses"]
            .into_iter()
            .filter_map(|p| obj.pointer(p).and_then(Value::as_array))
            .flatten();
        for s in statuses {
            if let Some(reason) = s.pointer("/state/waiting/reason").and_then(Value::as_str)
                && POD_ERRORS.contains(&reason)
            {
                let name = s.get("name").and_then(Value::as_str).unwrap_or("?");
                return Assessment::new(Health::Degraded, format!("container {name}: {reason}"));
            }
        }
    }
    match phase {
        "Succeeded" => Assessment::new(Health::Healthy, "pod succeeded"),
        "Failed" => {
            let why = string(obj, "/status/message").or(string(obj, "/status/reason")).unwrap_or("no reason given");
            Assessment::new(Health::Degraded, format!("pod failed: {why}"))
        }
        "Running" => {
            let policy = string(obj, "/spec/restartPolicy").unwrap_or("Always");
            if policy != "Always" {
                // Runs to completion: healthy once it succeeds.
                return Assessment::new(Health::Progressing, "pod running to completion");
            }
            if condition(obj, "Ready").is_some_and(|c| cond_status(c) == "True") {
                Assessment::new(Health::Healthy, "pod running and ready")
            } else {
                Assessment::new(Health::Progressing, "pod running, not ready")
            }
        }
        "Pending" => Assessment::new(Health::Progressing, "pod pending"),
        _ => Assessment::new(Health::Progressing, "pod phase not reported yet"),
    }
}

fn api_service(obj: &Value) -> Assessment {
    match condition(obj, "Available") {
        Some(c) if cond_status(c) == "True" => Assessment::new(Health::Healthy, "available"),
        Some(c) => {
            let why = cond_text(c, "message");
            Assessment::new(Health::Progressing, if why.is_empty() { "not available yet" } else { why })
        }
        None => generic(obj),
    }
}

/// Reasons under which `Ready=False` means "not yet" rather than "broken".
const PROGRESSING_REASONS: &[&str] = &["Progressing", "Reconciling", "Pending", "Initializing", "DependencyNotReady"];

/// Any other kind: follows a `Ready` condition when it has one, else
/// Healthy because it exists.
fn generic(obj: &Value) -> Assessment {
    let Some(c) = condition(obj, "Ready") else {
        return Assessment::new(Health::Healthy, "present");
    };
    let reason = cond_text(c, "reason");
    let message = cond_text(c, "message");
    let why = |default: &str| {
        if !message.is_empty() {
            message.to_string()
        } else if !reason.is_empty() {
            reason.to_string()
        } else {
            default.to_string()
        }
    };
    // A Ready condition about an older generation says nothing about this one.
    let stale = match (int(obj, "/metadata/generation"), int(c, "/observedGeneration")) {
        (Some(generation), Some(seen)) => seen < generation,
        _ => false,
    };
    if stale {
        return Assessment::new(Health::Progressing, NOT_OBSERVED);
    }
    match cond_status(c) {
        "True" => Assessment::new(Health::Healthy, why("ready")),
        "False" if PROGRESSING_REASONS.contains(&reason) => Assessment::new(Health::Progressing, why("not ready yet")),
        "False" => Assessment::new(Health::Degraded, why("not ready")),
        _ => Assessment::new(Health::Progressing, why("readiness unknown")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn deploy(generation: i64, observed: i64, spec: i64, status: Value) -> Value {
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "prod", "generation": generation},
            "spec": {"replicas": spec},
            "status": merge(json!({"observedGeneration": observed}), status),
        })
    }

    fn merge(mut a: Value, b: Value) -> Value {
        if let (Some(a), Value::Object(b)) = (a.as_object_mut(), b) {
            a.extend(b);
        }
        a
    }

    fn with_conditions(kind: &str, group_version: &str, status: Value) -> Value {
        json!({"apiVersion": group_version, "kind": kind, "metadata": {"name": "x", "generation": 1}, "status": status})
    }

    fn h(group: &str, kind: &str, obj: &Value) -> Health {
        assess(group, kind, Some(obj)).health
    }

    #[test]
    fn missing_object_is_missing() {
        let a = assess("apps", "Deployment", None);
        assert_eq!(a.health, Health::Missing);
    }

    #[test]
    fn deployment_mid_rollout_is_progressing_then_healthy_when_done() {
        // New ReplicaSet has 1 of 3 pods; two old ones still run.
        let mid =
            deploy(2, 2, 3, json!({"replicas": 4, "updatedReplicas": 1, "readyReplicas": 3, "availableReplicas": 3}));
        let a = assess("apps", "Deployment", Some(&mid));
        assert_eq!(a.health, Health::Progressing);
        assert_eq!(a.message, "1/3 replicas updated");

        let old_pending =
            deploy(2, 2, 3, json!({"replicas": 4, "updatedReplicas": 3, "readyReplicas": 4, "availableReplicas": 4}));
        assert_eq!(assess("apps", "Deployment", Some(&old_pending)).message, "1 old replicas pending termination");

        let unavailable =
            deploy(2, 2, 3, json!({"replicas": 3, "updatedReplicas": 3, "readyReplicas": 2, "availableReplicas": 2}));
        let a = assess("apps", "Deployment", Some(&unavailable));
        assert_eq!((a.health, a.message.as_str()), (Health::Progressing, "2/3 replicas available"));

        let done =
            deploy(2, 2, 3, json!({"replicas": 3, "updatedReplicas": 3, "readyReplicas": 3, "availableReplicas": 3}));
        let a = assess("apps", "Deployment", Some(&done));
        assert_eq!((a.health, a.message.as_str()), (Health::Healthy, "3/3 replicas available"));
    }

    #[test]
    fn deployment_with_unobserved_generation_is_progressing() {
        // Status looks complete, but it describes generation 1.
        let d =
            deploy(2, 1, 1, json!({"replicas": 1, "updatedReplicas": 1, "readyReplicas": 1, "availableReplicas": 1}));
        assert_eq!(h("apps", "Deployment", &d), Health::Progressing);
    }

    #[test]
    fn deployment_replicas_default_to_one() {
        let mut d = deploy(1, 1, 0, json!({}));
        d["spec"] = json!({});
        assert_eq!(assess("apps", "Deployment", Some(&d)).message, "0/1 replicas updated");
        d["status"] = json!({"observedGeneration": 1, "replicas": 1, "updatedReplicas": 1, "availableReplicas": 1});
        assert_eq!(h("apps", "Deployment", &d), Health::Healthy);
    }

    #[test]
    fn deployment_past_progress_deadline_is_degraded() {
        let d = deploy(
            3,
            3,
            2,
            json!({"replicas": 3, "updatedReplicas": 1, "availableReplicas": 2,
                   "conditions": [{"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded"}]}),
        );
        assert_eq!(h("apps", "Deployment", &d), Health::Degraded);
    }

    #[test]
    fn paused_deployment_is_progressing_and_says_suspended() {
        let mut d = deploy(1, 1, 1, json!({"replicas": 1, "updatedReplicas": 1, "availableReplicas": 1}));
        d["spec"]["paused"] = json!(true);
        let a = assess("apps", "Deployment", Some(&d));
        assert_eq!(a.health, Health::Progressing);
        assert!(a.message.contains("suspended"), "{}", a.message);
    }

    #[test]
    fn odd_shapes_never_panic() {
        // Strings where numbers belong, status missing or not an object.
        let strings = json!({"metadata": {"generation": "2"}, "spec": {"replicas": "3"},
            "status": {"observedGeneration": "2", "replicas": "3", "updatedReplicas": "3", "availableReplicas": "3"}});
        assert_eq!(h("apps", "Deployment", &strings), Health::Healthy);
        let junk = json!({"metadata": {"generation": {"x": 1}}, "spec": [1, 2], "status": "broken"});
        for (g, k) in [
            ("apps", "Deployment"),
            ("apps", "StatefulSet"),
            ("apps", "DaemonSet"),
            ("batch", "Job"),
            ("", "PersistentVolumeClaim"),
            ("", "Pod"),
            ("apiregistration.k8s.io", "APIService"),
            ("example.com", "Widget"),
        ] {
            let _ = assess(g, k, Some(&junk));
            let _ = assess(g, k, Some(&json!(null)));
            let _ = assess(g, k, Some(&json!({"status": {"conditions": "nope"}})));
            let _ = assess(g, k, Some(&json!({"status": {"conditions": [1, "x", {"type": 5}]}})));
        }
        // A fractional generation reads as its integer part; unobserved.
        assert_eq!(h("apps", "Deployment", &json!({"metadata": {"generation": 1.5}})), Health::Progressing);
    }

    fn sts(status: Value, strategy: Value) -> Value {
        json!({"metadata": {"generation": 1}, "spec": {"replicas": 2, "updateStrategy": strategy}, "status": status})
    }

    #[test]
    fn statefulset_waits_for_ready_replicas_and_revision() {
        let rolling = json!({"type": "RollingUpdate"});
        let not_ready = sts(
            json!({"observedGeneration": 1, "readyReplicas": 1, "currentRevision": "a", "updateRevision": "a"}),
            rolling.clone(),
        );
        assert_eq!(assess("apps", "StatefulSet", Some(&not_ready)).message, "1/2 replicas ready");
        let rolling_update = sts(
            json!({"observedGeneration": 1, "readyReplicas": 2, "updatedReplicas": 1,
                   "currentRevision": "web-a", "updateRevision": "web-b"}),
            rolling.clone(),
        );
        assert_eq!(h("apps", "StatefulSet", &rolling_update), Health::Progressing);
        let done = sts(
            json!({"observedGeneration": 1, "readyReplicas": 2, "currentRevision": "web-b", "updateRevision": "web-b"}),
            rolling,
        );
        assert_eq!(h("apps", "StatefulSet", &done), Health::Healthy);
        let unobserved = sts(json!({"readyReplicas": 2}), json!({}));
        assert_eq!(h("apps", "StatefulSet", &unobserved), Health::Progressing);
        // OnDelete: revisions differ until pods are deleted by hand; that is fine.
        let on_delete = sts(
            json!({"observedGeneration": 1, "readyReplicas": 2, "currentRevision": "a", "updateRevision": "b"}),
            json!({"type": "OnDelete"}),
        );
        assert_eq!(h("apps", "StatefulSet", &on_delete), Health::Healthy);
    }

    #[test]
    fn statefulset_partitioned_rollout() {
        let s = sts(
            json!({"observedGeneration": 1, "readyReplicas": 2, "updatedReplicas": 0,
                   "currentRevision": "a", "updateRevision": "b"}),
            json!({"type": "RollingUpdate", "rollingUpdate": {"partition": 1}}),
        );
        assert_eq!(h("apps", "StatefulSet", &s), Health::Progressing);
        let mut done = s.clone();
        done["status"]["updatedReplicas"] = json!(1);
        assert_eq!(h("apps", "StatefulSet", &done), Health::Healthy);
    }

    #[test]
    fn daemonset_waits_for_updated_and_available_pods() {
        let ds = |updated: i64, available: i64| {
            json!({"metadata": {"generation": 4}, "spec": {},
                   "status": {"observedGeneration": 4, "desiredNumberScheduled": 3,
                              "updatedNumberScheduled": updated, "numberAvailable": available}})
        };
        let a = assess("apps", "DaemonSet", Some(&ds(2, 3)));
        assert_eq!((a.health, a.message.as_str()), (Health::Progressing, "2/3 pods updated"));
        let a = assess("apps", "DaemonSet", Some(&ds(3, 1)));
        assert_eq!((a.health, a.message.as_str()), (Health::Progressing, "1/3 pods available"));
        assert_eq!(h("apps", "DaemonSet", &ds(3, 3)), Health::Healthy);
        let mut stale = ds(3, 3);
        stale["status"]["observedGeneration"] = json!(3);
        assert_eq!(h("apps", "DaemonSet", &stale), Health::Progressing);
    }

    #[test]
    fn job_complete_failed_or_running() {
        let job = |conditions: Value| with_conditions("Job", "batch/v1", json!({"conditions": conditions}));
        let done = job(json!([{"type": "Complete", "status": "True"}]));
        assert_eq!(h("batch", "Job", &done), Health::Healthy);
        let failed = job(json!([{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded",
                                 "message": "Job has reached the specified backoff limit"}]));
        let a = assess("batch", "Job", Some(&failed));
        assert_eq!(a.health, Health::Degraded);
        assert!(a.message.contains("backoff limit"), "{}", a.message);
        let running = with_conditions("Job", "batch/v1", json!({"active": 1}));
        assert_eq!(h("batch", "Job", &running), Health::Progressing);
        // A condition that is not True does not count.
        let not_yet = job(json!([{"type": "Complete", "status": "False"}]));
        assert_eq!(h("batch", "Job", &not_yet), Health::Progressing);
    }

    #[test]
    fn pvc_bound_pending_lost() {
        let pvc = |phase: &str| json!({"kind": "PersistentVolumeClaim", "status": {"phase": phase}});
        assert_eq!(h("", "PersistentVolumeClaim", &pvc("Bound")), Health::Healthy);
        let a = assess("", "PersistentVolumeClaim", Some(&pvc("Pending")));
        assert_eq!((a.health, a.message.as_str()), (Health::Progressing, "waiting to be bound"));
        assert_eq!(h("", "PersistentVolumeClaim", &pvc("Lost")), Health::Degraded);
        assert_eq!(h("", "PersistentVolumeClaim", &json!({})), Health::Progressing);
    }

    #[test]
    fn pod_phases() {
        let pod = |phase: &str, ready: &str| {
            json!({"spec": {"restartPolicy": "Always"},
                   "status": {"phase": phase, "conditions": [{"type": "Ready", "status": ready}]}})
        };
        assert_eq!(h("", "Pod", &pod("Running", "True")), Health::Healthy);
        assert_eq!(h("", "Pod", &pod("Running", "False")), Health::Progressing);
        assert_eq!(h("", "Pod", &pod("Succeeded", "False")), Health::Healthy);
        assert_eq!(h("", "Pod", &pod("Failed", "False")), Health::Degraded);
        assert_eq!(h("", "Pod", &pod("Pending", "False")), Health::Progressing);
        let crash = json!({"status": {"phase": "Running", "containerStatuses": [
            {"name": "app", "state": {"waiting": {"reason": "CrashLoopBackOff"}}}]}});
        let a = assess("", "Pod", Some(&crash));
        assert_eq!((a.health, a.message.as_str()), (Health::Degraded, "container app: CrashLoopBackOff"));
        let batch = json!({"spec": {"restartPolicy": "Never"},
            "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}});
        assert_eq!(h("", "Pod", &batch), Health::Progressing);
    }

    #[test]
    fn apiservice_follows_available() {
        let svc = |status: &str| json!({"status": {"conditions": [{"type": "Available", "status": status, "message": "endpoints missing"}]}});
        assert_eq!(h("apiregistration.k8s.io", "APIService", &svc("True")), Health::Healthy);
        let a = assess("apiregistration.k8s.io", "APIService", Some(&svc("False")));
        assert_eq!((a.health, a.message.as_str()), (Health::Progressing, "endpoints missing"));
    }

    #[test]
    fn ready_condition_on_any_kind() {
        let obj = |status: &str, reason: &str| {
            json!({"metadata": {"generation": 2}, "status": {"conditions": [
                {"type": "Ready", "status": status, "reason": reason, "observedGeneration": 2}]}})
        };
        assert_eq!(h("cert-manager.io", "Certificate", &obj("True", "Ready")), Health::Healthy);
        let a = assess("cert-manager.io", "Certificate", Some(&obj("False", "Failed")));
        assert_eq!((a.health, a.message.as_str()), (Health::Degraded, "Failed"));
        assert_eq!(h("x.io", "Thing", &obj("False", "Progressing")), Health::Progressing);
        assert_eq!(h("x.io", "Thing", &obj("Unknown", "")), Health::Progressing);
        let mut stale = obj("True", "Ready");
        stale["metadata"]["generation"] = json!(3);
        assert_eq!(h("x.io", "Thing", &stale), Health::Progressing);
    }

    #[test]
    fn anything_else_present_is_healthy() {
        let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {}});
        assert_eq!(assess("", "ConfigMap", Some(&cm)), Assessment::new(Health::Healthy, "present"));
        let deleting = json!({"metadata": {"name": "c", "deletionTimestamp": "2026-01-01T00:00:00Z"}});
        assert_eq!(h("", "ConfigMap", &deleting), Health::Progressing);
    }

    #[test]
    fn aggregate_takes_the_worst() {
        assert_eq!(aggregate([]), Health::Healthy);
        assert_eq!(aggregate([Health::Healthy, Health::Progressing]), Health::Progressing);
        assert_eq!(aggregate([Health::Missing, Health::Progressing, Health::Healthy]), Health::Missing);
        assert_eq!(aggregate([Health::Degraded, Health::Missing]), Health::Degraded);
        assert!(Health::Healthy < Health::Progressing && Health::Missing < Health::Degraded);
    }
}
