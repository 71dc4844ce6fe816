//! The read-only web dashboard, served by gitgate itself at `/ui`: apps
//! with sync status, health and target commit; an app's resource tree;
//! recent denied changes; the audit log, filterable; commit and file pages
//! read from gitgate's own copy of the repository (no internet needed),
//! with links to the forge when the repository URL names one.
//!
//! Read side only: it reads the sync status store, the provenance snapshot
//! in force, the recent-denials ring and the audit files, and never writes.
//! Who sees what: `auth.rs` (a Kubernetes token, TokenReview) and
//! `crate::access` (project roles); files that hold or feed a Secret are never
//! shown (`withheld.rs`), and files are read at the tracked revision only.
//! Pages are plain server-rendered HTML (`html.rs`, pure functions); a
//! little JS (`static/app.js`) refreshes them live and filters tables.
//!
//! Owns: the `/ui` pages and their login. Reads `sync::status`, the
//! provenance snapshot, `access` (who sees what), the audit files and the
//! tracked repository.
//!
//! Must never import: `promotion` or `cmd` (the promotion API plugs its
//! routes in through [`router_with`]), and never writes to the cluster.

pub mod auth;
pub mod fleet;
pub mod html;
pub mod links;
pub mod recent;
pub mod tree;
pub mod withheld;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwapOption;
use axum::extract::{Extension, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Router, middleware};
use secrecy::SecretString;

use self::auth::Viewer;
pub use self::auth::{DashboardArgs, Gate};
use self::html::{AuditForm, CommitView, Context, Who};
use self::links::Forge;
use self::recent::RecentDenials;
use self::withheld::GeneratorInputs;
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
    #[error("failed to read the tracked revision")]
    Source(#[source] crate::source::SourceError),
}

/// What the dashboard reads.
pub struct DashboardState {
    pub status: Arc<StatusStore>,
    pub snapshot: Arc<ArcSwapOption<Snapshot>>,
    pub denials: Arc<RecentDenials>,
    pub source: Arc<GitSource>,
    /// The live audit log file (rotated files are found beside it).
    pub audit_log: Option<PathBuf>,
    /// The generator inputs of the tracked revision, found once per commit.
    inputs: Mutex<Option<(gix::ObjectId, Arc<GeneratorInputs>)>>,
    /// Reads the live children of workloads (with a cluster only).
    tree: Option<tree::LiveTree>,
}

impl DashboardState {
    pub fn new(
        status: Arc<StatusStore>,
        snapshot: Arc<ArcSwapOption<Snapshot>>,
        denials: Arc<RecentDenials>,
        source: Arc<GitSource>,
        audit_log: Option<PathBuf>,
    ) -> Self {
        DashboardState { status, snapshot, denials, source, audit_log, inputs: Mutex::new(None), tree: None }
    }

    /// Shows the live children of workloads, read with `client`.
    pub fn with_live_tree(mut self, client: Option<kube::Client>) -> Self {
        self.tree = client.map(tree::LiveTree::new);
        self
    }

    fn forge(&self) -> Option<Forge> {
        Forge::from_clone_url(self.source.url())
    }
}

/// `/ui` and its pages, `/api/v1/apps`, behind `gate`; the login page,
/// the static assets and `/` (a redirect) are open.
pub fn router(state: Arc<DashboardState>, gate: Arc<Gate>) -> Router {
    router_with(state, gate, Router::new())
}

/// [`router`] with more `/api/v1` routes behind the same login (the
/// promotion actions).
pub fn router_with(state: Arc<DashboardState>, gate: Arc<Gate>, api: Router) -> Router {
    let gated = Router::new()
        .route("/ui", get(overview))
        .route("/ui/apps/{name}", get(app))
        .route("/ui/audit", get(audit))
        .route("/ui/commits/{id}", get(commit))
        .route("/ui/files/{*path}", get(file))
        .with_state(state.clone())
        .merge(crate::sync::status::router(state.status.clone()))
        .merge(api)
        .layer(middleware::from_fn_with_state(gate.clone(), auth::require));
    open_routes(gate)
        .route("/", get(|| async { Redirect::to("/ui") }))
        .merge(gated)
        .layer(middleware::map_response(security_headers))
}

/// The pages without login: the login form, sign-out, the static assets.
fn open_routes(gate: Arc<Gate>) -> Router {
    Router::new()
        .route("/ui/", get(|| async { Redirect::to("/ui") }))
        .route("/ui/login", get(login_form).post(login))
        .route("/ui/logout", post(logout))
        .route("/ui/static/app.js", get(|| async { asset("text/javascript; charset=utf-8", APP_JS) }))
        .route("/ui/static/style.css", get(|| async { asset("text/css; charset=utf-8", STYLE_CSS) }))
        .route("/ui/static/icon.svg", get(|| async { asset("image/svg+xml", ICON_SVG) }))
        .route("/favicon.ico", get(|| async { Redirect::permanent("/ui/static/icon.svg") }))
        .with_state(gate)
}

#[derive(serde::Deserialize, Default)]
struct NextQuery {
    #[serde(default)]
    next: String,
}

async fn login_form(State(gate): State<Arc<Gate>>, Query(q): Query<NextQuery>) -> Response {
    let next = auth::safe_next(&q.next);
    if gate.reviewer().is_none() {
        return Redirect::to(next).into_response();
    }
    html_page(StatusCode::OK, html::login_page(next, None))
}

/// The login form's fields. Its `Debug` never shows the token.
#[derive(serde::Deserialize)]
struct LoginForm {
    token: SecretString,
    #[serde(default)]
    next: String,
}

/// A cross-site form post (login CSRF): the browser says where it came
/// from — `Sec-Fetch-Site` when it sends one, else `Origin` against the
/// host (`Host`, or HTTP/2's `:authority`). Clients that send neither (curl)
/// are not browsers riding a user's session.
fn cross_site(headers: &HeaderMap, uri: &axum::http::Uri) -> bool {
    let header = |name| headers.get(name).and_then(|h: &HeaderValue| h.to_str().ok());
    if let Some(site) = header("sec-fetch-site") {
        return !matches!(site, "same-origin" | "none");
    }
    let host = header(header::HOST.as_str()).or_else(|| uri.authority().map(|a| a.as_str()));
    match (header(header::ORIGIN.as_str()), host) {
        (Some(origin), Some(host)) => origin.split_once("://").map(|(_, h)| h) != Some(host),
        (Some(_), None) => true,
        (None, _) => false,
    }
}

async fn login(
    State(gate): State<Arc<Gate>>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> Response {
    use secrecy::ExposeSecret as _;
    let next = auth::safe_next(&form.next).to_string();
    if cross_site(&headers, &uri) {
        return html_page(StatusCode::FORBIDDEN, html::login_page(&next, Some("a login must come from this site")));
    }
    let Some(reviewer) = gate.reviewer() else { return Redirect::to(&next).into_response() };
    let token = SecretString::from(form.token.expose_secret().trim().to_string());
    let refused = |r: auth::Refusal| r.response(false, &next);
    if !auth::valid_token(token.expose_secret()) {
        return refused(auth::Refusal::Rejected);
    }
    match reviewer.review(&token).await {
        Ok(Some(user)) => {
            tracing::info!(user = %user.name, "dashboard login");
            let mut res = Redirect::to(&next).into_response();
            *res.status_mut() = StatusCode::SEE_OTHER;
            if let Some(cookie) = auth::set_cookie(&token) {
                res.headers_mut().insert(header::SET_COOKIE, cookie);
            }
            res
        }
        Ok(None) => {
            tracing::info!("dashboard login refused: the apiserver did not accept the token");
            refused(auth::Refusal::Rejected)
        }
        Err(e) => {
            tracing::warn!(error = %crate::error_chain(&e), "failed to check a dashboard login");
            refused(auth::Refusal::Unavailable)
        }
    }
}

async fn logout() -> Response {
    let mut res = Redirect::to("/ui/login").into_response();
    *res.status_mut() = StatusCode::SEE_OTHER;
    res.headers_mut().insert(header::SET_COOKIE, auth::clear_cookie());
    res
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

fn not_found(v: &Viewer, what: &str) -> Response {
    html_page(
        StatusCode::NOT_FOUND,
        html::page("Not found", "", false, Some(&who(v)), &format!("<p class=\"error\">{}</p>", html::esc(what))),
    )
}

fn refused(v: &Viewer, why: &str) -> Response {
    html_page(
        StatusCode::FORBIDDEN,
        html::page(
            "Not shown",
            "",
            false,
            Some(&who(v)),
            &format!("<p class=\"error\" id=\"refused\">{}</p>", html::esc(why)),
        ),
    )
}

fn failed(e: &DashboardError) -> Response {
    // The log has the detail; the page says what failed, not why (no paths).
    tracing::warn!(error = %crate::error_chain(e), "dashboard page failed");
    html_page(
        StatusCode::INTERNAL_SERVER_ERROR,
        html::page("Error", "", false, None, &format!("<p class=\"error\">{}</p>", html::esc(&e.to_string()))),
    )
}

fn who(v: &Viewer) -> Who<'_> {
    Who { user: &v.user, projects: v.scope.projects().map(|p| p.iter().map(String::as_str).collect()), login: v.login }
}

async fn overview(State(s): State<Arc<DashboardState>>, Extension(v): Extension<Viewer>) -> Response {
    let snap = s.snapshot.load_full();
    let head = snap.as_ref().map(|snap| {
        let id = snap.desired.commit();
        let subject = snap.commit_info(id).map(|i| i.subject.clone()).unwrap_or_default();
        (id.to_string(), subject)
    });
    let repo = s.source.display_url().to_string();
    let ctx = Context { repo: &repo, head };
    let mut o = overview_of(&s, snap.as_deref());
    o.apps.retain(|a| v.scope.sees_app(&a.name));
    let denials: Vec<_> = s.denials.list().into_iter().filter(|d| v.scope.sees_app(&d.entry.app)).collect();
    let body = html::overview(&ctx, &o, &denials);
    html_page(StatusCode::OK, html::page("Apps", "Apps", true, Some(&who(&v)), &body))
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

async fn app(
    State(s): State<Arc<DashboardState>>,
    Extension(v): Extension<Viewer>,
    Path(name): Path<String>,
) -> Response {
    let snap = s.snapshot.load_full();
    let found = overview_of(&s, snap.as_deref()).apps.into_iter().find(|a| a.name == name && v.scope.sees_app(&a.name));
    match found {
        Some(a) => {
            let live = match &s.tree {
                Some(t) => Some(t.branches(&a.objects).await),
                None => None,
            };
            let body = html::app_page_with(&a, live.as_ref().map(|(b, partial)| (b, *partial)));
            html_page(StatusCode::OK, html::page(&a.name, "Apps", true, Some(&who(&v)), &body))
        }
        // The same answer for an app that exists elsewhere: no probing.
        None => not_found(&v, &format!("no app named {name:?} among yours")),
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

async fn audit(
    State(s): State<Arc<DashboardState>>,
    Extension(v): Extension<Viewer>,
    Query(form): Query<AuditForm>,
) -> Response {
    let active = if form.decision.eq_ignore_ascii_case("deny") { "Denials" } else { "Audit log" };
    let who = who(&v);
    let page = |status, records: &[_], total, error: Option<&str>| {
        html_page(
            status,
            html::page("Audit log", active, true, Some(&who), &html::audit_page(&form, records, total, error)),
        )
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
            let mut records: Vec<_> = found
                .records
                .into_iter()
                .rev()
                .filter(|r| v.scope.sees_app(&r.entry.app) && (app.is_empty() || r.entry.app == app))
                .collect();
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

/// Commits of the tracked history that a commit page may show.
const MAX_HISTORY: usize = 100_000;

async fn commit(
    State(s): State<Arc<DashboardState>>,
    Extension(v): Extension<Viewer>,
    Path(id): Path<String>,
) -> Response {
    let Some(oid) = parse_commit(&id) else { return not_found(&v, &format!("{id:?} is not a full commit ID")) };
    let snap = s.snapshot.load_full();
    let Some(head) = snap.as_ref().map(|s| s.desired.commit()) else {
        return not_found(&v, "gitgate has not rendered Git yet");
    };
    let source = s.source.clone();
    let read = tokio::task::spawn_blocking(move || -> Result<Option<(String, String, String)>, DashboardError> {
        let repo = source.repo();
        let git = |e: Box<dyn std::error::Error + Send + Sync>| DashboardError::Git { id: oid.to_string(), source: e };
        // The tracked revision's history only: not another branch's commit.
        let walk = repo.rev_walk([head]).all().map_err(|e| git(Box::new(e)))?;
        let mut tracked = false;
        for info in walk.take(MAX_HISTORY) {
            if info.map_err(|e| git(Box::new(e)))?.id == oid {
                tracked = true;
                break;
            }
        }
        if !tracked {
            return Ok(None);
        }
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
        Ok(None) => return not_found(&v, &format!("commit {id} is not in the history gitgate tracks")),
        Err(e) => return failed(&e),
    };
    let objects = overview_of(&s, snap.as_deref())
        .apps
        .into_iter()
        .filter(|a| v.scope.sees_app(&a.name))
        .flat_map(|a| {
            let name = a.name;
            a.objects.into_iter().filter(|o| o.commit == id).map(move |o| (name.clone(), o))
        })
        .collect();
    let view = CommitView { forge_url: s.forge().map(|f| f.commit_url(&id)), id, author, time, message, objects };
    html_page(
        StatusCode::OK,
        html::page(&format!("Commit {}", html::short(&view.id)), "", false, Some(&who(&v)), &html::commit_page(&view)),
    )
}

/// The generator inputs of the tracked revision (scanned once per commit).
fn generator_inputs(
    s: &DashboardState,
    reader: &crate::source::TreeReader,
) -> Result<Arc<GeneratorInputs>, DashboardError> {
    let commit = reader.commit();
    if let Some((c, inputs)) = &*s.inputs.lock().unwrap_or_else(|p| p.into_inner())
        && *c == commit
    {
        return Ok(inputs.clone());
    }
    let inputs = Arc::new(GeneratorInputs::scan(reader).map_err(DashboardError::Source)?);
    *s.inputs.lock().unwrap_or_else(|p| p.into_inner()) = Some((commit, inputs.clone()));
    Ok(inputs)
}

/// What the file page found.
enum FileRead {
    Missing,
    Withheld(&'static str),
    Shown(Vec<u8>),
}

async fn file(
    State(s): State<Arc<DashboardState>>,
    Extension(v): Extension<Viewer>,
    Path(path): Path<String>,
) -> Response {
    let missing =
        |v: &Viewer| not_found(v, &format!("{path} is not a file of your apps at the revision gitgate tracks"));
    let Ok(repo_path) = crate::source::RepoPath::parse(&path) else { return missing(&v) };
    let Some(snap) = s.snapshot.load_full() else { return not_found(&v, "gitgate has not rendered Git yet") };
    let head = snap.desired.commit();
    let state = s.clone();
    let scope = v.scope.clone();
    let read = tokio::task::spawn_blocking(move || -> Result<FileRead, DashboardError> {
        let desired = &snap.desired;
        let reader =
            state.source.reader(head, crate::source::tree::ReadLimits::default()).map_err(DashboardError::Source)?;
        // Where the path leads (a symlink may point into another app): both
        // ends must be readable.
        let Some(node) = reader.resolve(&repo_path).map_err(DashboardError::Source)? else {
            return Ok(FileRead::Missing);
        };
        if node.kind != crate::source::NodeKind::File
            || !scope.sees_path(&repo_path, desired)
            || !scope.sees_path(&node.path, desired)
        {
            return Ok(FileRead::Missing);
        }
        let Some(bytes) = reader.read_opt(&repo_path).map_err(DashboardError::Source)? else {
            return Ok(FileRead::Missing);
        };
        let inputs = generator_inputs(&state, &reader)?;
        let text = String::from_utf8_lossy(&bytes);
        for p in [&repo_path, &node.path] {
            if let Some(why) = withheld::reason(p, &text, desired, &inputs) {
                return Ok(FileRead::Withheld(why));
            }
        }
        Ok(FileRead::Shown(bytes))
    })
    .await
    .map_err(DashboardError::Join)
    .and_then(|r| r);
    let bytes = match read {
        Ok(FileRead::Shown(b)) => b,
        Ok(FileRead::Missing) => return missing(&v),
        Ok(FileRead::Withheld(why)) => {
            tracing::info!(user = %v.user, path = %path, "dashboard withheld a file: {why}");
            return refused(&v, why);
        }
        Err(e) => return failed(&e),
    };
    let text = match std::str::from_utf8(&bytes) {
        Ok(_) if bytes.len() > MAX_FILE_BYTES => Err("the file is too large to show here"),
        Ok(t) => Ok(t),
        Err(_) => Err("not shown: the file is not text"),
    };
    let id = head.to_string();
    let forge = s.forge().map(|f| f.file_url(&id, &path));
    html_page(
        StatusCode::OK,
        html::page(&path, "", false, Some(&who(&v)), &html::file_page(&id, &path, text, forge.as_deref())),
    )
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
}
