//! The promotion actions, behind the dashboard's login (a Kubernetes
//! bearer token, TokenReview):
//!
//! - `POST /api/v1/apps/{app}/approve` `{"commit": "1a2b3c4", "overrideWindow": false}`
//! - `POST /api/v1/apps/{app}/pause` `{"for": "30m", "reason": "incident 4711"}`
//! - `POST /api/v1/apps/{app}/resume`
//!
//! Who may: a signed-in member of a group the app's project gives `sync`
//! (`projects[].roles`) — in the config in force for the app **and** in the
//! waiting commit's, so a commit cannot grant its own author the right to
//! approve it — or of an `--admin-group`. Only an admin overrides a closed
//! sync window. Without a login (`--dashboard-auth none`, or no cluster)
//! nobody may: an open port is no approver. Each action is an audit record
//! (who, which commit, the change's digest). The bodies are JSON, so a
//! cross-site form cannot send one with the login cookie.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Extension, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use gix::ObjectId;
use serde::{Deserialize, Serialize};

use super::state::{Approval, Pause};
use super::{Promoter, change_digest};
use crate::audit::SyncRecorder;
use crate::audit::record::{CommitRef, Entry as AuditEntry, EventKind, Outcome, format_rfc3339_micros, now_micros};
use crate::dashboard::auth::Viewer;
use crate::render::DesiredSet;
use crate::render::config::Permission;

/// Longest reason kept with a pause.
const MAX_REASON: usize = 512;

/// What the actions need.
pub struct Actions {
    pub promoter: Arc<Promoter>,
    pub audit: Option<Arc<dyn SyncRecorder>>,
    /// `--max-pause`.
    pub max_pause: Duration,
}

/// The routes (merged behind the login by the caller).
pub fn router(actions: Arc<Actions>) -> Router {
    Router::new()
        .route("/api/v1/apps/{name}/approve", post(approve))
        .route("/api/v1/apps/{name}/pause", post(pause))
        .route("/api/v1/apps/{name}/resume", post(resume))
        .with_state(actions)
}

/// `approve`'s body.
#[derive(Deserialize, Serialize, Default, Debug)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ApproveRequest {
    /// The commit approved (default: the one waiting, else the head).
    #[serde(default)]
    pub commit: Option<String>,
    /// Let it through a closed sync window (admins only).
    #[serde(default)]
    pub override_window: bool,
}

/// `pause`'s body.
#[derive(Deserialize, Serialize, Debug)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PauseRequest {
    #[serde(rename = "for")]
    pub duration: String,
    pub reason: String,
}

/// What an action answers.
#[derive(Deserialize, Serialize, Debug, Default)]
#[serde(rename_all = "camelCase")]
pub struct ActionResponse {
    pub app: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub commit: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub change: String,
    #[serde(default)]
    pub rollback: bool,
    pub message: String,
}

/// Why an action is refused: the answer's status and message.
type Refusal = (StatusCode, String);

fn refuse(code: StatusCode, message: impl Into<String>) -> Response {
    (code, Json(serde_json::json!({"error": message.into()}))).into_response()
}

fn short(id: &ObjectId) -> String {
    id.to_hex_with_len(7).to_string()
}

/// The set in force and the head, or why not yet.
fn sets(a: &Actions) -> Result<(Arc<DesiredSet>, Arc<DesiredSet>), Refusal> {
    match (a.promoter.current(), a.promoter.tracker().current()) {
        (Some(now), Some(head)) => Ok((now, head)),
        _ => Err((
            StatusCode::SERVICE_UNAVAILABLE,
            "gitgate has not rendered Git yet; try again in a moment".to_string(),
        )),
    }
}

/// The set in force and the head, once `v` may act on `app`.
fn authorized(a: &Actions, v: &Viewer, app: &str) -> Result<(Arc<DesiredSet>, Arc<DesiredSet>), Refusal> {
    let (now, head) = sets(a)?;
    may_sync(v, app, &now, &head)?;
    Ok((now, head))
}

/// Checks that `v` may act on `app` (sync in the config in force and in
/// the head's); returns the app's project.
fn may_sync(v: &Viewer, app: &str, now: &DesiredSet, head: &DesiredSet) -> Result<String, Refusal> {
    if !v.login {
        return Err((
            StatusCode::FORBIDDEN,
            "promotion actions need a signed-in user (a Kubernetes bearer token); this gitgate serves without login"
                .to_string(),
        ));
    }
    let in_force = now.gate(app).map_or_else(|| now.config_arc().clone(), |g| g.config.clone());
    let project_of = |c: &crate::render::Config| c.app(app).map(|a| a.project.clone());
    let Some(project) = project_of(&in_force).or_else(|| project_of(head.config())) else {
        return Err((StatusCode::NOT_FOUND, format!("no app named {app}")));
    };
    if v.admin {
        return Ok(project);
    }
    let grants = |c: &crate::render::Config| {
        let p = project_of(c).unwrap_or_else(|| project.clone());
        c.project(&p).is_some_and(|p| p.grants(&v.groups, Permission::Sync))
    };
    if grants(&in_force) && grants(head.config()) {
        return Ok(project);
    }
    let holders: Vec<String> = in_force
        .project(&project)
        .map(|p| {
            p.roles
                .iter()
                .filter(|r| r.permissions.contains(&Permission::Sync))
                .flat_map(|r| r.groups.clone())
                .collect()
        })
        .unwrap_or_default();
    Err((
        StatusCode::FORBIDDEN,
        format!(
            "{} may not approve, pause or resume app {app}: project {project} gives sync to the groups {holders:?} \
             (projects[].roles, in the config in force and in the waiting commit's), and {} is in none of them",
            v.user, v.user
        ),
    ))
}

fn record(a: &Actions, v: &Viewer, event: EventKind, app: &str, commit: Option<String>, reasons: Vec<String>) {
    if let Some(audit) = &a.audit {
        audit.record(&AuditEntry {
            event,
            user: v.user.clone(),
            groups: v.groups.clone(),
            app: app.to_string(),
            commit: commit.map(|id| CommitRef { id, ..CommitRef::default() }),
            decision: Outcome::Done,
            reasons,
            ..AuditEntry::default()
        });
    }
}

async fn approve(
    State(a): State<Arc<Actions>>,
    Extension(v): Extension<Viewer>,
    Path(app): Path<String>,
    Json(req): Json<ApproveRequest>,
) -> Response {
    let (now, head) = match authorized(&a, &v, &app) {
        Ok(s) => s,
        Err((code, why)) => return refuse(code, why),
    };
    if req.override_window && !v.admin {
        return refuse(StatusCode::FORBIDDEN, "only an --admin-group member may override a sync window");
    }
    let tracker = a.promoter.tracker().clone();
    let commit = match &req.commit {
        Some(c) => {
            let c = c.clone();
            match tokio::task::spawn_blocking(move || tracker.on_branch(&c)).await {
                Ok(Ok(id)) => id,
                Ok(Err(why)) => return refuse(StatusCode::BAD_REQUEST, why),
                Err(_) => return refuse(StatusCode::INTERNAL_SERVER_ERROR, "failed to read the repository"),
            }
        }
        None => now.held(&app).map_or(head.commit(), |h| h.waiting),
    };
    let target = if commit == head.commit() { Ok(head.clone()) } else { a.promoter.render(&app, commit).await };
    let target = match target {
        Ok(t) => t,
        Err(e) => {
            tracing::warn!(app = %app, error = %crate::error_chain(&e), "failed to render a commit to approve");
            return refuse(
                StatusCode::BAD_REQUEST,
                format!("commit {} does not render; it cannot be approved", short(&commit)),
            );
        }
    };
    if target.app(&app).is_none() {
        return refuse(StatusCode::BAD_REQUEST, format!("commit {} has no app named {app}", short(&commit)));
    }
    let in_force = now.app_commit(&app);
    let change = change_digest(now.app_digest(&app).filter(|_| in_force.is_some()), target.app_digest(&app));
    let tracker = a.promoter.tracker().clone();
    let rollback = match in_force {
        Some(f) => tokio::task::spawn_blocking(move || tracker.is_strict_ancestor(commit, f)).await.unwrap_or(false),
        None => false,
    };
    let approval = Approval {
        commit: commit.to_string(),
        by: v.user.clone(),
        at: format_rfc3339_micros(now_micros()),
        change: change.clone(),
        override_window: req.override_window,
    };
    if let Err(e) = a.promoter.store().put_approval(&app, &approval).await {
        tracing::error!(app = %app, error = %crate::error_chain(&e), "failed to record an approval");
        return refuse(StatusCode::SERVICE_UNAVAILABLE, "failed to record the approval in the cluster; try again");
    }
    let mut message = format!("{} approved {} for app {app} (change {change})", v.user, short(&commit));
    if rollback {
        message.push_str(&format!(
            "; this is a rollback: {} is older than {} in force",
            short(&commit),
            in_force.map(|f| short(&f)).unwrap_or_default()
        ));
    }
    if req.override_window {
        message.push_str("; the sync window is overridden for this commit");
    }
    let mut reasons = vec![message.clone()];
    reasons.push(format!("change {change}"));
    record(&a, &v, EventKind::Approved, &app, Some(commit.to_string()), reasons);
    tracing::info!(app = %app, commit = %commit, user = %v.user, rollback, "approved");
    Json(ActionResponse { app, commit: commit.to_string(), change, rollback, message }).into_response()
}

async fn pause(
    State(a): State<Arc<Actions>>,
    Extension(v): Extension<Viewer>,
    Path(app): Path<String>,
    Json(req): Json<PauseRequest>,
) -> Response {
    let (now, _) = match authorized(&a, &v, &app) {
        Ok(s) => s,
        Err((code, why)) => return refuse(code, why),
    };
    let max = humantime_short(a.max_pause);
    let duration = match crate::config::parse_duration(&req.duration) {
        Ok(d) if d.is_zero() => {
            return refuse(StatusCode::BAD_REQUEST, format!("--for must be longer than 0 (at most {max})"));
        }
        Ok(d) if d > a.max_pause => {
            return refuse(
                StatusCode::BAD_REQUEST,
                format!("a pause lasts at most {max} (--max-pause); asked for {}", req.duration),
            );
        }
        Ok(d) => d,
        Err(e) => return refuse(StatusCode::BAD_REQUEST, format!("--for {:?}: {e} (at most {max})", req.duration)),
    };
    let reason = req.reason.trim();
    if reason.is_empty() || reason.chars().count() > MAX_REASON || reason.chars().any(char::is_control) {
        return refuse(
            StatusCode::BAD_REQUEST,
            format!("a pause needs a --reason: one line of 1 to {MAX_REASON} characters"),
        );
    }
    let since = now_micros();
    let until = since.saturating_add(i64::try_from(duration.as_micros()).unwrap_or(i64::MAX));
    let p = Pause {
        by: v.user.clone(),
        reason: reason.to_string(),
        since: format_rfc3339_micros(since),
        until_micros: until,
        commit: now.app_commit(&app).map(|c| c.to_string()).unwrap_or_default(),
    };
    if let Err(e) = a.promoter.store().put_pause(&app, &p).await {
        tracing::error!(app = %app, error = %crate::error_chain(&e), "failed to record a pause");
        return refuse(StatusCode::SERVICE_UNAVAILABLE, "failed to record the pause in the cluster; try again");
    }
    let message = format!("{} paused app {app} until {}: {reason}", v.user, p.until());
    record(&a, &v, EventKind::Paused, &app, None, vec![message.clone()]);
    Json(ActionResponse { app, message, ..ActionResponse::default() }).into_response()
}

/// `resume`'s body: `{}` (JSON, so a cross-site form cannot send it).
#[derive(Deserialize, Serialize, Default, Debug)]
#[serde(deny_unknown_fields)]
pub struct ResumeRequest {}

async fn resume(
    State(a): State<Arc<Actions>>,
    Extension(v): Extension<Viewer>,
    Path(app): Path<String>,
    Json(_): Json<ResumeRequest>,
) -> Response {
    if let Err((code, why)) = authorized(&a, &v, &app) {
        return refuse(code, why);
    }
    if a.promoter.store().current().active_pause(&app, now_micros()).is_none() {
        return refuse(StatusCode::CONFLICT, format!("app {app} is not paused"));
    }
    if let Err(e) = a.promoter.store().remove_pause(&app).await {
        tracing::error!(app = %app, error = %crate::error_chain(&e), "failed to end a pause");
        return refuse(StatusCode::SERVICE_UNAVAILABLE, "failed to end the pause in the cluster; try again");
    }
    let message = format!("{} resumed app {app}", v.user);
    record(&a, &v, EventKind::Resumed, &app, None, vec![message.clone()]);
    Json(ActionResponse { app, message, ..ActionResponse::default() }).into_response()
}

/// `24h`, `30m`, `90s`.
fn humantime_short(d: Duration) -> String {
    let s = d.as_secs();
    if s.is_multiple_of(3600) {
        format!("{}h", s / 3600)
    } else if s.is_multiple_of(60) {
        format!("{}m", s / 60)
    } else {
        format!("{s}s")
    }
}
