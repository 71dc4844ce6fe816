//! The read-only web dashboard, served by gitgate itself at `/ui`: apps
//! with sync status, health and target commit; an app's resource tree;
//! recent denied changes; the audit log, filterable; commit and file pages
//! read from gitgate's own copy of the repository (no internet needed),
//! with links to the forge when the repository URL names one.
//!
//! Read side only: it reads the sync status store, the provenance snapshot
//! in force, the recent-denials ring and the audit files, and never writes.
//! Pages are plain server-rendered HTML (`html.rs`, pure functions); a
//! little JS (`static/app.js`) refreshes them live and filters tables.

pub mod html;
pub mod links;
pub mod recent;

use std::path::PathBuf;
use std::sync::Arc;

use arc_swap::ArcSwapOption;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::{Router, middleware};

use self::html::{AuditForm, CommitView, Context};
use self::links::Forge;
use self::recent::RecentDenials;
use crate::audit::query::{Filter, ObjectFilter, parse_since};
use crate::audit::record::{EventKind, Outcome, now_micros};
use crate::provenance::Snapshot;
use crate::source::fetch::GitSource;
use crate::sync::status::StatusStore;

/// Records shown when the form sets no limit.
pub const DEFAULT_LIMIT: usize = 200;
const MAX_LIMIT: usize = 5000;
/// Largest file the file page shows.
const MAX_FILE_BYTES: usize = 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum DashboardError {
    #[error("failed to read the audit log")]
    Audit(#[source] crate::audit::AuditError),
    #[error("{0}")]
    BadFilter(String),
    #[error("failed to read commit {id} from Git")]
    Git {
        id: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("the dashboard task failed")]
    Join(#[source] tokio::task::JoinError),
}

/// What the dashboard reads.
pub struct DashboardState {
    pub status: Arc<StatusStore>,
    pub snapshot: Arc<ArcSwapOption<Snapshot>>,
    pub denials: Arc<RecentDenials>,
    pub source: Arc<GitSource>,
    /// The live audit log file (rotated files are found beside it).
    pub audit_log: Option<PathBuf>,
}

impl DashboardState {
    fn forge(&self) -> Option<Forge> {
        Forge::from_clone_url(self.source.url())
    }
}

/// `/ui` and its pages; `/` redirects there.
pub fn router(state: Arc<DashboardState>) -> Router {
    Router::new()
        .route("/", get(|| async { Redirect::to("/ui") }))
        .route("/ui", get(overview))
        .route("/ui/", get(|| async { Redirect::to("/ui") }))
        .route("/ui/apps/{name}", get(app))
        .route("/ui/audit", get(audit))
        .route("/ui/commits/{id}", get(commit))
        .route("/ui/files/{id}/{*path}", get(file))
        .route("/ui/static/app.js", get(|| async { asset("text/javascript; charset=utf-8", APP_JS) }))
        .route("/ui/static/style.css", get(|| async { asset("text/css; charset=utf-8", STYLE_CSS) }))
        .route("/ui/static/icon.svg", get(|| async { asset("image/svg+xml", ICON_SVG) }))
        .route("/favicon.ico", get(|| async { Redirect::permanent("/ui/static/icon.svg") }))
        .layer(middleware::map_response(security_headers))
        .with_state(state)
}

const APP_JS: &str = include_str!("static/app.js");
const STYLE_CSS: &str = include_str!("static/style.css");
const ICON_SVG: &str = include_str!("static/icon.svg");

fn asset(content_type: &'static str, body: &'static str) -> Response {
    ([(header::CONTENT_TYPE, content_type), (header::CACHE_CONTROL, "max-age=300")], body).into_response()
}

async fn security_headers(mut res: Response) -> Response {
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; \
             form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    res
}

fn html_page(status: StatusCode, body: String) -> Response {
    (status, [(header::CONTENT_TYPE, "text/html; charset=utf-8"), (header::CACHE_CONTROL, "no-store")], body)
        .into_response()
}

fn not_found(what: &str) -> Response {
    html_page(
        StatusCode::NOT_FOUND,
        html::page("Not found", "", false, &format!("<p class=\"error\">{}</p>", html::esc(what))),
    )
}

fn failed(e: &DashboardError) -> Response {
    // The log has the detail; the page says what failed, not why (no paths).
    tracing::warn!(error = %crate::error_chain(e), "dashboard page failed");
    html_page(
        StatusCode::INTERNAL_SERVER_ERROR,
        html::page("Error", "", false, &format!("<p class=\"error\">{}</p>", html::esc(&e.to_string()))),
    )
}

async fn overview(State(s): State<Arc<DashboardState>>) -> Response {
    let snap = s.snapshot.load_full();
    let head = snap.as_ref().map(|snap| {
        let id = snap.desired.commit();
        let subject = snap.commit_info(id).map(|i| i.subject.clone()).unwrap_or_default();
        (id.to_string(), subject)
    });
    let repo = s.source.display_url().to_string();
    let ctx = Context { repo: &repo, head };
    let body = html::overview(&ctx, &overview_of(&s, snap.as_deref()), &s.denials.list());
    html_page(StatusCode::OK, html::page("Apps", "Apps", true, &body))
}

/// The sync status; on a follower replica (which syncs nothing) Git's view
/// at the commit in force, so every replica behind a Service shows the apps.
fn overview_of(s: &DashboardState, snap: Option<&Snapshot>) -> crate::sync::status::Overview {
    let mut o = s.status.overview();
    if o.role == "follower"
        && let Some(snap) = snap
    {
        o.apps = crate::sync::reconcile::Reconciler::plan_statuses(&snap.desired);
        for a in &mut o.apps {
            a.message = "this replica follows: the leader has the live sync status".into();
        }
    }
    o
}

async fn app(State(s): State<Arc<DashboardState>>, Path(name): Path<String>) -> Response {
    let snap = s.snapshot.load_full();
    match overview_of(&s, snap.as_deref()).apps.into_iter().find(|a| a.name == name) {
        Some(a) => html_page(StatusCode::OK, html::page(&a.name, "Apps", true, &html::app_page(&a))),
        None => not_found(&format!("no app named {name:?}")),
    }
}

/// The form, validated into the audit query's filter.
fn filter(form: &AuditForm) -> Result<Filter, DashboardError> {
    let bad = |what: &str, v: &str| DashboardError::BadFilter(format!("{what} {v:?} is not valid"));
    let some = |v: &str| (!v.trim().is_empty()).then(|| v.trim().to_string());
    Ok(Filter {
        commit: some(&form.commit),
        object: some(&form.object)
            .map(|o| ObjectFilter::parse(&o).map_err(|e| DashboardError::BadFilter(e.to_string())))
            .transpose()?,
        user: some(&form.user),
        since: some(&form.since)
            .map(|v| parse_since(&v, now_micros()).map_err(|e| DashboardError::BadFilter(e.to_string())))
            .transpose()?,
        decision: some(&form.decision).map(|v| Outcome::parse(&v).ok_or_else(|| bad("decision", &v))).transpose()?,
        event: some(&form.event).map(|v| EventKind::parse(&v).ok_or_else(|| bad("event", &v))).transpose()?,
    })
}

async fn audit(State(s): State<Arc<DashboardState>>, Query(form): Query<AuditForm>) -> Response {
    let active = if form.decision.eq_ignore_ascii_case("deny") { "Denials" } else { "Audit log" };
    let page = |status, records: &[_], total, error: Option<&str>| {
        html_page(status, html::page("Audit log", active, true, &html::audit_page(&form, records, total, error)))
    };
    let f = match filter(&form) {
        Ok(f) => f,
        Err(e) => return page(StatusCode::BAD_REQUEST, &[], 0, Some(&e.to_string())),
    };
    let Some(log) = s.audit_log.clone() else {
        return page(StatusCode::OK, &[], 0, Some("no audit log is configured"));
    };
    let limit = form.limit.unwrap_or(DEFAULT_LIMIT).clamp(1, MAX_LIMIT);
    let app = form.app.trim().to_string();
    let found = tokio::task::spawn_blocking(move || {
        let files = crate::audit::log::chain_files(&log);
        crate::audit::query::run(&files, &f).map_err(DashboardError::Audit)
    })
    .await
    .map_err(DashboardError::Join)
    .and_then(|r| r);
    match found {
        Ok(found) => {
            let mut records: Vec<_> =
                found.records.into_iter().rev().filter(|r| app.is_empty() || r.entry.app == app).collect();
            let total = records.len();
            records.truncate(limit);
            page(StatusCode::OK, &records, total, None)
        }
        Err(e) => failed(&e),
    }
}

fn parse_commit(id: &str) -> Option<gix::ObjectId> {
    (id.len() == 40).then(|| gix::ObjectId::from_hex(id.as_bytes()).ok()).flatten()
}

async fn commit(State(s): State<Arc<DashboardState>>, Path(id): Path<String>) -> Response {
    let Some(oid) = parse_commit(&id) else { return not_found(&format!("{id:?} is not a full commit ID")) };
    let source = s.source.clone();
    let read = tokio::task::spawn_blocking(move || -> Result<Option<(String, String, String)>, DashboardError> {
        let repo = source.repo();
        let git = |e: Box<dyn std::error::Error + Send + Sync>| DashboardError::Git { id: oid.to_string(), source: e };
        let Ok(commit) = repo.find_commit(oid) else { return Ok(None) };
        let author = commit.author().map_err(|e| git(Box::new(e)))?;
        let who = format!("{} <{}>", author.name, author.email);
        let time = author
            .time()
            .ok()
            .and_then(|t| k8s_openapi::jiff::Timestamp::from_second(t.seconds).ok())
            .map(|t| t.to_string())
            .unwrap_or_default();
        let message = commit.message_raw_sloppy().to_string();
        Ok(Some((who, time, message)))
    })
    .await
    .map_err(DashboardError::Join)
    .and_then(|r| r);
    let (author, time, message) = match read {
        Ok(Some(c)) => c,
        Ok(None) => return not_found(&format!("commit {id} is not in the repository gitgate tracks")),
        Err(e) => return failed(&e),
    };
    let snap = s.snapshot.load_full();
    let objects = overview_of(&s, snap.as_deref())
        .apps
        .into_iter()
        .flat_map(|a| {
            let name = a.name;
            a.objects.into_iter().filter(|o| o.commit == id).map(move |o| (name.clone(), o))
        })
        .collect();
    let view = CommitView { forge_url: s.forge().map(|f| f.commit_url(&id)), id, author, time, message, objects };
    html_page(
        StatusCode::OK,
        html::page(&format!("Commit {}", html::short(&view.id)), "", false, &html::commit_page(&view)),
    )
}

/// Whether a manifest may be shown: a Secret that is not sealed carries
/// values, and the dashboard never shows a secret value.
fn shows_plain_secret(text: &str) -> bool {
    crate::render::yaml::parse_documents("file", text.as_bytes()).map_or(true, |docs| {
        docs.iter().any(|d| {
            d.get("kind").and_then(|k| k.as_str()) == Some("Secret")
                && d.pointer(&format!("/metadata/annotations/{}", crate::secrets::SEALED.replace('/', "~1"))).is_none()
                && (d.get("data").is_some() || d.get("stringData").is_some())
        })
    })
}

async fn file(State(s): State<Arc<DashboardState>>, Path((id, path)): Path<(String, String)>) -> Response {
    let Some(oid) = parse_commit(&id) else { return not_found(&format!("{id:?} is not a full commit ID")) };
    let Ok(repo_path) = crate::source::RepoPath::parse(&path) else {
        return not_found(&format!("{path:?} is not a path in the repository"));
    };
    let source = s.source.clone();
    let read = tokio::task::spawn_blocking(move || {
        let reader = source.reader(oid, crate::source::tree::ReadLimits::default()).ok()?;
        reader.read_opt(&repo_path).ok().flatten()
    })
    .await;
    let bytes = match read {
        Ok(Some(b)) => b,
        Ok(None) => return not_found(&format!("{path} is not in commit {id}")),
        Err(e) => return failed(&DashboardError::Join(e)),
    };
    let text = match std::str::from_utf8(&bytes) {
        Ok(_) if bytes.len() > MAX_FILE_BYTES => Err("the file is too large to show here"),
        Ok(t) if shows_plain_secret(t) => Err("not shown: the file holds a Secret that is not sealed"),
        Ok(t) => Ok(t),
        Err(_) => Err("not shown: the file is not text"),
    };
    let forge = s.forge().map(|f| f.file_url(&id, &path));
    html_page(StatusCode::OK, html::page(&path, "", false, &html::file_page(&id, &path, text, forge.as_deref())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_form_becomes_the_query_filter_or_a_clear_error() {
        let f =
            filter(&AuditForm { decision: "deny".into(), object: "shop/Deployment/api".into(), ..Default::default() })
                .unwrap();
        assert_eq!(f.decision, Some(Outcome::Deny));
        assert_eq!(f.object.unwrap().name, "api");
        assert!(filter(&AuditForm::default()).unwrap().decision.is_none());
        let e = filter(&AuditForm { decision: "maybe".into(), ..Default::default() }).unwrap_err();
        assert_eq!(e.to_string(), "decision \"maybe\" is not valid");
        assert!(filter(&AuditForm { since: "yesterday".into(), ..Default::default() }).is_err());
    }

    #[test]
    fn plain_secrets_are_never_shown_and_sealed_ones_are() {
        assert!(shows_plain_secret("apiVersion: v1\nkind: Secret\nmetadata: {name: a}\nstringData: {k: v}\n"));
        let sealed = format!(
            "apiVersion: v1\nkind: Secret\nmetadata:\n  name: a\n  annotations: {{{}: age}}\ndata: {{k: YWdl}}\n",
            crate::secrets::SEALED
        );
        assert!(!shows_plain_secret(&sealed));
        assert!(!shows_plain_secret("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\ndata: {k: v}\n"));
    }
}
