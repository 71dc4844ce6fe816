//! The fleet page (`/ui/fleet`) and `GET /api/v1/fleet`: every spoke's
//! apps, sync, health, commits, waiting approvals, drift and denials; the
//! parity groups and what makes their clusters differ. Served by a hub
//! (`serve --hub --fleet FILE`, these pages only) and by any gitgate given
//! `--fleet FILE`. Behind the dashboard's login; apps a viewer may not
//! read are left out (a hub has no projects of its own: only
//! `--admin-group` members see its fleet).

use std::fmt::Write as _;
use std::sync::Arc;

use axum::extract::{Extension, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::{Json, Router, middleware};

use super::auth::{Gate, Viewer};
use super::html::{self, badge, esc, page_with_nav, sync_badge};
use crate::fleet::hub::{FleetView, Hub};
use crate::fleet::live::ParityState;
use crate::fleet::view::{SpokeState, SpokeView};

/// A hub's navigation: the fleet only.
const HUB_NAV: &[(&str, &str)] = &[("Fleet", "/ui/fleet")];

/// The fleet's routes, to merge behind the dashboard's login.
pub fn routes(hub: Arc<Hub>) -> Router {
    routes_with(hub, html::NAV)
}

/// `/ui/fleet` of a gitgate without a fleet file: says how to give it one.
pub fn without_fleet() -> Router {
    Router::new().route(
        "/ui/fleet",
        get(|Extension(v): Extension<Viewer>| async move {
            let body = "<section><h1>Fleet</h1><p class=\"empty\">This gitgate reads no fleet: give it \
<code>--fleet FILE</code> (chart: <code>fleet.spokes</code>), or run a hub (<code>serve --hub --fleet FILE</code>).</p></section>";
            super::html_page(StatusCode::OK, html::page("Fleet", "Fleet", false, Some(&super::who(&v)), body))
        }),
    )
}

fn routes_with(hub: Arc<Hub>, nav: &'static [(&'static str, &'static str)]) -> Router {
    Router::new().route("/api/v1/fleet", get(api)).route("/ui/fleet", get(move |s, v| page(s, v, nav))).with_state(hub)
}

/// A hub's whole site: the fleet behind the login, the login page and
/// the static assets open, `/` and `/ui` leading to the fleet.
pub fn hub_router(hub: Arc<Hub>, gate: Arc<Gate>) -> Router {
    let gated = routes_with(hub, HUB_NAV).layer(middleware::from_fn_with_state(gate.clone(), super::auth::require));
    super::open_routes(gate)
        .route("/", get(|| async { Redirect::to("/ui/fleet") }))
        .route("/ui", get(|| async { Redirect::to("/ui/fleet") }))
        .merge(gated)
        .layer(middleware::map_response(super::security_headers))
}

/// The view with only the apps `v` may read.
fn scoped(hub: &Hub, v: &Viewer) -> Arc<FleetView> {
    let shared = hub.view();
    if v.scope.is_all() {
        return shared;
    }
    let mut view = (*shared).clone();
    // A spoke's app is matched by its project (its cluster may read
    // another apps file); a spoke too old to say is matched by name.
    let sees = |a: &crate::sync::status::AppStatus| match v.scope.projects() {
        Some(projects) if !a.project.is_empty() => projects.contains(&a.project),
        _ => v.scope.sees_app(&a.name),
    };
    for s in &mut view.spokes {
        s.status.apps.retain(|a| sees(a));
        s.summary = crate::fleet::view::Summary::of(&s.status);
        // What concerns the whole cluster, not the viewer's projects.
        s.status.source = None;
        s.status.refused = None;
        s.denied = Default::default();
        s.status.denied = Default::default();
    }
    // Parity names objects of every app: only for those who see all.
    for g in &mut view.parity {
        g.differences.clear();
    }
    view.allowed.clear();
    Arc::new(view)
}

async fn api(State(hub): State<Arc<Hub>>, Extension(v): Extension<Viewer>) -> Response {
    let view = scoped(&hub, &v);
    Json(&*view).into_response()
}

async fn page(
    State(hub): State<Arc<Hub>>,
    Extension(v): Extension<Viewer>,
    nav: &'static [(&'static str, &'static str)],
) -> Response {
    let body = fleet_page(&scoped(&hub, &v));
    let who = super::who(&v);
    super::html_page(StatusCode::OK, page_with_nav(nav, "Fleet", "Fleet", true, Some(&who), &body))
}

fn state_badge(s: &SpokeView) -> String {
    match s.state {
        SpokeState::Up => "<span class=\"badge health-healthy\">up</span>".to_string(),
        SpokeState::Unknown => badge("health", "Unknown"),
    }
}

fn parity_badge(state: ParityState) -> String {
    match state {
        ParityState::Identical => "<span class=\"badge sync-synced\">identical</span>".to_string(),
        ParityState::Diverged => "<span class=\"badge sync-outofsync\">diverged</span>".to_string(),
        ParityState::Unknown => badge("sync", "Unknown"),
    }
}

/// The page: the clusters, the parity groups, each cluster's apps.
pub fn fleet_page(view: &FleetView) -> String {
    let mut b = String::new();
    let refreshed = if view.refreshed.is_empty() {
        "not yet asked".to_string()
    } else {
        format!("asked at {} ({} ms)", view.refreshed, view.took_ms)
    };
    let _ = write!(
        b,
        "<section class=\"summary\"><p>{n} cluster{s}, {refreshed}. A cluster that does not answer is unknown, \
never healthy.</p></section>",
        n = view.spokes.len(),
        s = if view.spokes.len() == 1 { "" } else { "s" },
        refreshed = esc(&refreshed)
    );
    clusters(&mut b, view);
    parity(&mut b, view);
    for s in view.spokes.iter().filter(|s| s.state == SpokeState::Up) {
        apps(&mut b, s);
    }
    b
}

fn clusters(b: &mut String, view: &FleetView) {
    b.push_str(
        "<section><h1>Clusters</h1><table id=\"clusters\"><thead><tr><th>Cluster</th><th>State</th><th>Last seen</th>\
<th>Apps</th><th>Synced</th><th>Out of sync</th><th>Failed</th><th>Waiting approval</th><th>Held</th>\
<th>Drifted objects</th><th>Denied</th><th>Commit</th><th>Parity group</th><th>Detail</th></tr></thead><tbody>",
    );
    for s in &view.spokes {
        let m = &s.summary;
        let commit = m.commits.first().map_or(String::new(), |c| html::short(c).to_string());
        let more = if m.commits.len() > 1 { format!(" (+{})", m.commits.len() - 1) } else { String::new() };
        let detail =
            if s.state == SpokeState::Up { format!("{} · {} ms", s.detail(), s.answered_ms) } else { s.detail() };
        let _ = write!(
            b,
            "<tr data-cluster=\"{c}\" data-state=\"{state:?}\"><td>{c}</td><td>{badge}</td><td>{seen}</td><td>{apps}</td>\
<td>{synced}</td><td>{oos}</td><td>{failed}</td><td>{waiting}</td><td>{held}</td><td>{drift}</td><td>{denied}</td>\
<td><code>{commit}</code>{more}</td><td>{group}</td><td>{detail}</td></tr>",
            c = esc(&s.cluster),
            state = s.state,
            badge = state_badge(s),
            seen = if s.last_seen.is_empty() { "never".to_string() } else { esc(&s.last_seen) },
            apps = m.apps,
            synced = m.synced,
            oos = m.out_of_sync,
            failed = m.failed,
            waiting = m.waiting_approval,
            held = m.held,
            drift = m.drifted_objects,
            denied = s.denied.count,
            commit = esc(&commit),
            group = esc(s.parity_group.as_deref().unwrap_or("")),
            detail = esc(&detail),
        );
    }
    b.push_str("</tbody></table></section>");
}

fn parity(b: &mut String, view: &FleetView) {
    b.push_str("<section><h1>Parity</h1>");
    if view.parity.is_empty() {
        b.push_str(
            "<p class=\"empty\">No parity group: clusters with the same <code>labels.env</code> (or the fleet file's \
<code>parityGroup</code>) are compared here.</p></section>",
        );
        return;
    }
    b.push_str(
        "<table id=\"parity\"><thead><tr><th>Group</th><th>Clusters</th><th>State</th><th>Identical objects</th>\
<th>Allowed differences</th><th>Sealed per cluster</th><th>Differences</th></tr></thead><tbody>",
    );
    for g in &view.parity {
        let mut diffs: Vec<String> = g.differences.iter().map(|d| esc(&d.describe())).collect();
        if !g.reason.is_empty() {
            diffs.insert(0, esc(&g.reason));
        }
        if !g.commits.is_empty() {
            let at: Vec<String> = g.commits.iter().map(|(c, id)| format!("{c} {}", html::short(id))).collect();
            diffs.insert(0, esc(&format!("at different commits: {}", at.join(", "))));
        }
        let _ = write!(
            b,
            "<tr data-group=\"{name}\" data-state=\"{state:?}\"><td>{name}</td><td>{members}</td><td>{badge}</td>\
<td>{identical}</td><td>{allowed}</td><td>{sealed}</td><td>{diffs}</td></tr>",
            name = esc(&g.name),
            state = g.state,
            members = esc(&g.members.join(", ")),
            badge = parity_badge(g.state),
            identical = g.identical,
            allowed = g.allowed,
            sealed = g.sealed,
            diffs = diffs.join("<br>"),
        );
    }
    b.push_str("</tbody></table></section>");
}

fn apps(b: &mut String, s: &SpokeView) {
    let _ = write!(
        b,
        "<section><details><summary>{c}: {n} app{plural}</summary><table class=\"fleet-apps\" data-cluster=\"{c}\">\
<thead><tr><th>App</th><th>Sync</th><th>Health</th><th>Target commit</th><th>Message</th></tr></thead><tbody>",
        c = esc(&s.cluster),
        n = s.status.apps.len(),
        plural = if s.status.apps.len() == 1 { "" } else { "s" },
    );
    for a in &s.status.apps {
        let _ = write!(
            b,
            "<tr><td>{name}</td><td>{sync}</td><td>{health}</td><td><code>{commit}</code></td><td>{msg}</td></tr>",
            name = esc(&a.name),
            sync = sync_badge(a.sync),
            health = badge("health", &a.health),
            commit = esc(html::short(&a.target_commit)),
            msg = esc(&a.message),
        );
    }
    b.push_str("</tbody></table></details></section>");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::access::Scope;
    use crate::fleet::file::FleetFile;
    use crate::fleet::hub::HubMetrics;
    use crate::fleet::live::{LiveDifference, ParityGroup};
    use crate::fleet::view::{SpokeView, Summary};
    use crate::sync::status::{AppStatus, Overview, SyncStatus};

    fn app(name: &str) -> AppStatus {
        AppStatus {
            name: name.into(),
            project: "shop".into(),
            sync: SyncStatus::Synced,
            health: "Healthy".into(),
            target_commit: "3f2a9c1d0e".into(),
            synced_commit: String::new(),
            last_sync: String::new(),
            message: "<img src=x onerror=alert(1)>".into(),
            destination: String::new(),
            path: String::new(),
            detect_only: false,
            objects: Vec::new(),
        }
    }

    fn view() -> FleetView {
        let mut payments = app("payments-dr");
        payments.project = "payments".into();
        // Named like a shop app, but of project payments in that cluster's apps file.
        let mut lookalike = app("shop-dr-db");
        lookalike.project = "payments".into();
        let status = Overview {
            role: "leader".into(),
            apps: vec![app("shop-dr"), payments, lookalike],
            denied: crate::sync::status::Denied { count: 4, last: "2026-12-05T10:00:00Z".into() },
            ..Overview::default()
        };
        FleetView {
            refreshed: "2026-12-05T10:00:00Z".into(),
            took_ms: 9,
            spokes: vec![SpokeView {
                cluster: "dr<script>".into(),
                url: "https://dr".into(),
                state: SpokeState::Up,
                reason: String::new(),
                last_seen: "2026-12-05T10:00:00Z".into(),
                labels: Default::default(),
                parity_group: Some("production".into()),
                role: "leader".into(),
                summary: Summary::of(&status),
                denied: status.denied.clone(),
                answered_ms: 1,
                status,
            }],
            parity: vec![ParityGroup {
                name: "production".into(),
                members: vec!["production".into(), "dr".into()],
                state: ParityState::Diverged,
                reason: String::new(),
                identical: 3,
                differences: vec![LiveDifference::OnlyIn {
                    object: "Secret payments/db".into(),
                    clusters: vec!["dr".into()],
                }],
                allowed: 0,
                sealed: 0,
                commits: Default::default(),
            }],
            allowed: [("production".to_string(), vec!["Secret payments/db".to_string()])].into(),
        }
    }

    fn hub_with(view: FleetView) -> Hub {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let file =
            FleetFile::parse("spokes:\n  - {cluster: dr, url: 'https://dr'}\n", std::path::Path::new("/")).unwrap();
        let hub = Hub::new(file, HubMetrics::default());
        hub.set_view(view);
        hub
    }

    #[test]
    fn a_viewer_of_one_project_sees_its_apps_only_and_no_parity_detail() {
        let hub = hub_with(view());
        let reader = Viewer {
            user: "ada".into(),
            groups: vec!["shop-team".into()],
            admin: false,
            scope: Scope::Apps {
                projects: ["shop".to_string()].into(),
                apps: ["shop-dr".to_string(), "shop-dr-db".to_string()].into(),
            },
            login: true,
        };
        let seen = scoped(&hub, &reader);
        let apps: Vec<&str> = seen.spokes[0].status.apps.iter().map(|a| a.name.as_str()).collect();
        assert_eq!(apps, ["shop-dr"]);
        assert_eq!(seen.spokes[0].summary.apps, 1, "the counts are of what they see");
        assert_eq!(seen.spokes[0].denied.count, 0, "the cluster's denials are not theirs to see");
        assert_eq!(seen.spokes[0].status.denied.count, 0);
        assert!(seen.parity[0].differences.is_empty(), "parity names other projects' objects");
        assert!(seen.allowed.is_empty(), "so do the allowed differences");
        let admin = Viewer { scope: Scope::All, admin: true, ..reader };
        let all = scoped(&hub, &admin);
        assert_eq!((all.spokes[0].status.apps.len(), all.parity[0].differences.len()), (3, 1));
        assert_eq!(all.spokes[0].denied.count, 4);
    }

    #[test]
    fn the_page_escapes_what_spokes_and_git_say() {
        let page = fleet_page(&view());
        assert!(page.contains("dr&lt;script&gt;") && !page.contains("dr<script>"), "{page}");
        assert!(!page.contains("<img src=x"), "{page}");
        assert!(page.contains("Secret payments/db: only in dr"), "{page}");
    }
}
