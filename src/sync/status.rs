//! What the sync loop knows, for people and dashboards: per app its sync
//! status, health, target commit and objects. Served as JSON at
//! `GET /api/v1/apps`, printed by `gitgate status`, exported as metrics.

use std::sync::{Arc, RwLock};

use axum::extract::{Extension, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use serde::{Deserialize, Serialize};

use arc_swap::ArcSwapOption;

use super::health::Health;
use crate::access::Scope;
use crate::desired::tracker::{Refusal, SourceFault};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SyncStatus {
    Synced,
    OutOfSync,
    Failed,
    Unknown,
    /// A newer commit waits for an approver (`gitgate approve`).
    WaitingApproval,
    /// Paused (`gitgate pause`): new commits wait, self-heal is off.
    Paused,
    /// A sync window is closed: new commits wait.
    OutsideWindow,
}

impl SyncStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            SyncStatus::Synced => "Synced",
            SyncStatus::OutOfSync => "OutOfSync",
            SyncStatus::Failed => "Failed",
            SyncStatus::Unknown => "Unknown",
            SyncStatus::WaitingApproval => "WaitingApproval",
            SyncStatus::Paused => "Paused",
            SyncStatus::OutsideWindow => "OutsideWindow",
        }
    }

    /// The status of an app a promotion gate holds.
    pub fn held(kind: crate::render::desired::HeldKind) -> SyncStatus {
        use crate::render::desired::HeldKind;
        match kind {
            HeldKind::WaitingApproval => SyncStatus::WaitingApproval,
            HeldKind::Paused => SyncStatus::Paused,
            HeldKind::OutsideWindow => SyncStatus::OutsideWindow,
        }
    }
}

/// One object of an app.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectStatus {
    pub group: String,
    pub version: String,
    pub kind: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub namespace: String,
    pub name: String,
    pub wave: String,
    pub sync: SyncStatus,
    pub health: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    /// The commit that introduced its content, and the file.
    pub commit: String,
    pub source: String,
    /// Git's content digest (`gitgate.dev/digest`): what a fleet's hub
    /// compares across clusters that should be identical.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub digest: String,
    /// A Secret sealed in Git (`gitgate.dev/sealed`): sealed per cluster,
    /// so its digest differs between clusters by design.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub sealed: bool,
    /// A sync hook's run (named per run, kept apart from the app's objects).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub hook: bool,
}

/// One app.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AppStatus {
    pub name: String,
    /// Its project in `gitgate.yaml` (who may read it).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub project: String,
    pub sync: SyncStatus,
    pub health: String,
    /// The commit Git is at for this app (the desired set's).
    pub target_commit: String,
    /// The commit of the last successful sync.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub synced_commit: String,
    /// RFC 3339.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub last_sync: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    pub destination: String,
    pub path: String,
    /// Self-heal is off: drift is reported, not reverted.
    #[serde(default)]
    pub detect_only: bool,
    pub objects: Vec<ObjectStatus>,
}

/// The whole status document.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Overview {
    /// `leader`, `follower`, `plan` (no cluster) or `off`.
    pub role: String,
    pub apps: Vec<AppStatus>,
    /// Git's head, when it is refused for a commit that does not verify
    /// (an older commit stays in force).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refused: Option<Refusal>,
    /// Why Git cannot be read (or its head rendered) right now, while the
    /// last good commit stays in force.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<SourceFault>,
    /// The cluster this gitgate syncs and gates (`--cluster`), with its
    /// labels in `gitgate.yaml`: how a fleet's hub knows whom it reads.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<ClusterInfo>,
    /// Changes this gitgate denied since it started.
    #[serde(default)]
    pub denied: Denied,
}

/// A spoke's cluster, as `gitgate.yaml` declares it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterInfo {
    pub name: String,
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub labels: std::collections::BTreeMap<String, String>,
    /// Why the spoke runs nothing, when no app of the commit in force is
    /// deployed to its cluster.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub note: String,
}

/// Denied changes: how many since start, and when the last one was.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Denied {
    pub count: u64,
    /// RFC 3339; empty when none.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub last: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AppInfo {
    app: String,
    sync_status: String,
    health_status: String,
    commit: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AppLabel {
    app: String,
}

/// The sync loop's metrics.
#[derive(Clone)]
pub struct SyncMetrics {
    app_info: Family<AppInfo, Gauge>,
    pub sync_duration: Histogram,
    drift: Family<AppLabel, Counter>,
    applied: Family<AppLabel, Counter>,
    pruned: Family<AppLabel, Counter>,
}

impl SyncMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let m = SyncMetrics {
            app_info: Family::default(),
            sync_duration: Histogram::new([0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0]),
            drift: Family::default(),
            applied: Family::default(),
            pruned: Family::default(),
        };
        registry.register(
            "gitgate_app_info",
            "Apps gitgate syncs, with their sync and health status",
            m.app_info.clone(),
        );
        registry.register("gitgate_sync_duration_seconds", "Time of one sync of one app", m.sync_duration.clone());
        registry.register(
            "gitgate_drift",
            "Drifts found on managed objects (a field Git sets was changed)",
            m.drift.clone(),
        );
        registry.register("gitgate_sync_applied", "Objects written by the sync loop", m.applied.clone());
        registry.register("gitgate_sync_pruned", "Objects pruned by the sync loop", m.pruned.clone());
        m
    }

    pub fn drift(&self, app: &str) {
        self.drift.get_or_create(&AppLabel { app: app.into() }).inc();
    }

    pub fn applied(&self, app: &str, n: u64) {
        self.applied.get_or_create(&AppLabel { app: app.into() }).inc_by(n);
    }

    pub fn pruned(&self, app: &str, n: u64) {
        self.pruned.get_or_create(&AppLabel { app: app.into() }).inc_by(n);
    }
}

/// The status every replica serves; the leader writes it.
#[derive(Default)]
pub struct StatusStore {
    inner: RwLock<Overview>,
    metrics: Option<SyncMetrics>,
    refusals: Option<Arc<ArcSwapOption<Refusal>>>,
    faults: Option<Arc<ArcSwapOption<SourceFault>>>,
}

impl StatusStore {
    pub fn new(metrics: Option<SyncMetrics>) -> Self {
        StatusStore {
            inner: RwLock::new(Overview { role: "off".into(), ..Overview::default() }),
            metrics,
            refusals: None,
            faults: None,
        }
    }

    /// Reports the tracker's refused head on every app (OutOfSync, with
    /// the refused commit and why) and on the overview.
    pub fn with_refusals(mut self, refusals: Arc<ArcSwapOption<Refusal>>) -> Self {
        self.refusals = Some(refusals);
        self
    }

    fn refusal(&self) -> Option<Arc<Refusal>> {
        self.refusals.as_ref().and_then(|r| r.load_full())
    }

    /// Reports the tracker's [`SourceFault`] (Git unreachable, answering
    /// garbage, or a head that does not render) on the overview and in
    /// every app's message; sync states stay as they are (the apps are
    /// in step with the commit in force).
    pub fn with_source_faults(mut self, faults: Arc<ArcSwapOption<SourceFault>>) -> Self {
        self.faults = Some(faults);
        self
    }

    fn fault(&self) -> Option<Arc<SourceFault>> {
        self.faults.as_ref().and_then(|f| f.load_full())
    }

    fn overlay_fault(f: &SourceFault, a: &mut AppStatus) {
        a.message = if a.message.is_empty() { f.message() } else { format!("{}; {}", f.message(), a.message) };
    }

    fn overlay(r: &Refusal, o: &mut Overview) {
        for a in &mut o.apps {
            Self::overlay_app(r, a);
        }
        o.refused = Some(r.clone());
    }

    fn overlay_app(r: &Refusal, a: &mut AppStatus) {
        if a.sync == SyncStatus::Synced {
            a.sync = SyncStatus::OutOfSync;
        }
        a.message = if a.message.is_empty() { r.message() } else { format!("{}; {}", r.message(), a.message) };
    }

    pub fn metrics(&self) -> Option<&SyncMetrics> {
        self.metrics.as_ref()
    }

    pub fn set_role(&self, role: &str) {
        self.inner.write().unwrap_or_else(|e| e.into_inner()).role = role.into();
    }

    /// Names the cluster this gitgate syncs (spoke mode), with its labels.
    pub fn set_cluster(&self, cluster: ClusterInfo) {
        let mut inner = self.inner.write().unwrap_or_else(|e| e.into_inner());
        if inner.cluster.as_ref() != Some(&cluster) {
            inner.cluster = Some(cluster);
        }
    }

    /// Counts a denied change (the admission recorder calls it).
    pub fn denied(&self, time: String) {
        let mut inner = self.inner.write().unwrap_or_else(|e| e.into_inner());
        inner.denied.count += 1;
        inner.denied.last = time;
    }

    /// The overview as JSON, written under the read lock: no copy of a
    /// status that holds 10,000 objects.
    pub fn overview_json(&self) -> Result<Vec<u8>, serde_json::Error> {
        if self.refusal().is_none() && self.fault().is_none() {
            return serde_json::to_vec(&*self.inner.read().unwrap_or_else(|e| e.into_inner()));
        }
        serde_json::to_vec(&self.overview())
    }

    pub fn overview(&self) -> Overview {
        let mut o = self.inner.read().unwrap_or_else(|e| e.into_inner()).clone();
        if let Some(r) = self.refusal() {
            Self::overlay(&r, &mut o);
        }
        if let Some(f) = self.fault() {
            for a in &mut o.apps {
                Self::overlay_fault(&f, a);
            }
            o.source = Some((*f).clone());
        }
        o
    }

    pub fn app(&self, name: &str) -> Option<AppStatus> {
        let mut a =
            self.inner.read().unwrap_or_else(|e| e.into_inner()).apps.iter().find(|a| a.name == name).cloned()?;
        if let Some(r) = self.refusal() {
            Self::overlay_app(&r, &mut a);
        }
        if let Some(f) = self.fault() {
            Self::overlay_fault(&f, &mut a);
        }
        Some(a)
    }

    /// Replaces an app's status (and its `gitgate_app_info` series).
    pub fn put(&self, status: AppStatus) {
        let mut inner = self.inner.write().unwrap_or_else(|e| e.into_inner());
        if let Some(old) = inner.apps.iter().position(|a| a.name == status.name) {
            let old = inner.apps.remove(old);
            self.forget_info(&old);
        }
        if let Some(m) = &self.metrics {
            m.app_info.get_or_create(&info_labels(&status)).set(1);
        }
        inner.apps.push(status);
        inner.apps.sort_by(|a, b| a.name.cmp(&b.name));
    }

    /// Updates one object's status in place (self-heal, detect-only).
    pub fn update_object(&self, app: &str, key: &crate::render::object::ObjectKey, f: impl FnOnce(&mut ObjectStatus)) {
        let mut inner = self.inner.write().unwrap_or_else(|e| e.into_inner());
        let Some(a) = inner.apps.iter_mut().find(|a| a.name == app) else { return };
        if let Some(o) = a
            .objects
            .iter_mut()
            .find(|o| o.group == key.group && o.kind == key.kind && o.namespace == key.namespace && o.name == key.name)
        {
            f(o);
        }
        let before = a.clone();
        let out_of_sync = a.objects.iter().any(|o| o.sync != SyncStatus::Synced);
        if a.sync != SyncStatus::Failed {
            a.sync = if out_of_sync { SyncStatus::OutOfSync } else { SyncStatus::Synced };
        }
        if let Some(m) = &self.metrics {
            m.app_info.remove(&info_labels(&before));
            m.app_info.get_or_create(&info_labels(a)).set(1);
        }
    }

    /// Drops apps that left Git.
    pub fn retain(&self, keep: impl Fn(&str) -> bool) {
        let mut inner = self.inner.write().unwrap_or_else(|e| e.into_inner());
        let (kept, gone): (Vec<_>, Vec<_>) = std::mem::take(&mut inner.apps).into_iter().partition(|a| keep(&a.name));
        for a in &gone {
            self.forget_info(a);
        }
        inner.apps = kept;
    }

    fn forget_info(&self, a: &AppStatus) {
        if let Some(m) = &self.metrics {
            m.app_info.remove(&info_labels(a));
        }
    }
}

fn info_labels(a: &AppStatus) -> AppInfo {
    AppInfo {
        app: a.name.clone(),
        sync_status: a.sync.as_str().into(),
        health_status: a.health.clone(),
        commit: a.target_commit.clone(),
    }
}

pub fn health_str(h: Health) -> String {
    h.as_str().to_string()
}

/// `GET /api/v1/apps` and `GET /api/v1/apps/{name}`: the apps of the
/// caller's [`Scope`], a request extension the dashboard's gate sets (a
/// request without one is a 500: never served unscoped).
pub fn router(store: Arc<StatusStore>) -> Router {
    Router::new().route("/api/v1/apps", get(list)).route("/api/v1/apps/{name}", get(one)).with_state(store)
}

async fn list(State(store): State<Arc<StatusStore>>, Extension(scope): Extension<Scope>) -> Response {
    let json = if scope.is_all() {
        store.overview_json()
    } else {
        let mut o = store.overview();
        o.apps.retain(|a| scope.sees_app(&a.name));
        serde_json::to_vec(&o)
    };
    match json {
        Ok(body) => ([(axum::http::header::CONTENT_TYPE, "application/json")], body).into_response(),
        Err(e) => {
            (StatusCode::INTERNAL_SERVER_ERROR, Json(serde_json::json!({"error": e.to_string()}))).into_response()
        }
    }
}

async fn one(
    State(store): State<Arc<StatusStore>>,
    Extension(scope): Extension<Scope>,
    Path(name): Path<String>,
) -> Response {
    match store.app(&name).filter(|a| scope.sees_app(&a.name)) {
        Some(a) => Json(a).into_response(),
        None => (StatusCode::NOT_FOUND, Json(serde_json::json!({"error": "no such app"}))).into_response(),
    }
}

/// `gitgate status`: the overview as a table.
pub fn table(o: &Overview, wide: bool) -> String {
    use std::fmt::Write as _;
    let mut rows: Vec<[String; 6]> = Vec::new();
    for a in &o.apps {
        rows.push([
            a.name.clone(),
            a.sync.as_str().into(),
            a.health.clone(),
            a.target_commit.chars().take(7).collect(),
            a.last_sync.clone(),
            a.message.clone(),
        ]);
        if wide {
            for ob in &a.objects {
                let id = super::target::display(&ob.kind, &ob.namespace, &ob.name);
                rows.push([
                    format!("  {id}"),
                    ob.sync.as_str().into(),
                    ob.health.clone(),
                    ob.commit.chars().take(7).collect(),
                    format!("wave {}", ob.wave),
                    ob.message.clone(),
                ]);
            }
        }
    }
    let mut out = format!("role: {}\n", o.role);
    if let Some(r) = &o.refused {
        let _ = writeln!(out, "refused: {}", r.message());
    }
    if let Some(f) = &o.source {
        let _ = writeln!(out, "git: {}", f.message());
    }
    out.push_str(&crate::table::columns(&["APP", "SYNC", "HEALTH", "COMMIT", "LAST SYNC", "MESSAGE"], &rows));
    out
}
