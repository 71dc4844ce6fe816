//! Server-rendered pages: pure functions from what gitgate knows to HTML.
//! Every value is escaped; scripts and styles come from `/ui/static/`
//! (the Content-Security-Policy forbids inline ones).

use std::fmt::Write as _;

use super::recent::Denial;
use crate::audit::record::{Outcome, Record};
use crate::sync::status::{AppStatus, ObjectStatus, Overview, SyncStatus};

/// HTML-escapes text for element content and quoted attributes.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Percent-encodes a path segment or query value.
pub fn enc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// A repository path, each segment encoded, slashes kept.
fn enc_path(path: &str) -> String {
    path.split('/').map(enc).collect::<Vec<_>>().join("/")
}

/// The first 7 characters of a commit ID (whole characters: a peer's
/// status may carry anything).
pub fn short(commit: &str) -> &str {
    commit.char_indices().nth(7).map_or(commit, |(i, _)| &commit[..i])
}

/// Who is looking, for the page header.
pub struct Who<'a> {
    pub user: &'a str,
    /// The projects they see; `None`: all of them.
    pub projects: Option<Vec<&'a str>>,
    /// Signed in with a token (a sign-out button is shown).
    pub login: bool,
}

/// The sign-out button (a POST: a link could be followed by a prefetch).
pub fn sign_out_form() -> &'static str {
    "<form class=\"signout\" method=\"post\" action=\"/ui/logout\"><button type=\"submit\">Sign out</button></form>"
}

/// The page frame: navigation, who is looking, a live-refresh switch, the content.
pub fn page(title: &str, active: &str, live: bool, who: Option<&Who<'_>>, body: &str) -> String {
    page_with_nav(NAV, title, active, live, who, body)
}

/// Every page's navigation (a hub's pages have only the fleet).
pub const NAV: &[(&str, &str)] =
    &[("Apps", "/ui"), ("Denials", "/ui/audit?decision=deny"), ("Audit log", "/ui/audit"), ("Fleet", "/ui/fleet")];

/// [`page`] with another navigation.
pub fn page_with_nav(
    nav: &[(&str, &str)],
    title: &str,
    active: &str,
    live: bool,
    who: Option<&Who<'_>>,
    body: &str,
) -> String {
    let nav = nav
        .iter()
        .map(|(label, href)| {
            let current = if *label == active { " aria-current=\"page\"" } else { "" };
            format!("<a href=\"{href}\"{current}>{label}</a>")
        })
        .collect::<Vec<_>>()
        .join("");
    let live =
        if live { "<label class=\"live\"><input type=\"checkbox\" id=\"live\" checked> live</label>" } else { "" };
    let who = who.map_or(String::new(), |w| {
        let projects = match &w.projects {
            None => "all projects".to_string(),
            Some(p) => format!("project{} {}", if p.len() == 1 { "" } else { "s" }, p.join(", ")),
        };
        format!(
            "<span class=\"who\" id=\"who\" data-user=\"{u}\">{u} · {p}</span>{out}",
            u = esc(w.user),
            p = esc(&projects),
            out = if w.login { sign_out_form() } else { "" }
        )
    });
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
<title>{title} · gitgate</title><link rel=\"icon\" href=\"/ui/static/icon.svg\" type=\"image/svg+xml\">\
<link rel=\"stylesheet\" href=\"/ui/static/style.css\">\
<script src=\"/ui/static/app.js\" defer></script></head>\
<body><header><a class=\"brand\" href=\"/ui\">gitgate</a><nav>{nav}</nav>{who}{live}</header>\
<main id=\"main\">{body}</main></body></html>\n",
        title = esc(title)
    )
}

/// The login page (a 401's body): a form that posts a bearer token.
pub fn login_page(next: &str, error: Option<&str>) -> String {
    let error =
        error.map_or(String::new(), |e| format!("<p class=\"error\" role=\"alert\" id=\"login-error\">{}</p>", esc(e)));
    page(
        "Sign in",
        "",
        false,
        None,
        &format!(
            "<section class=\"login\"><h1>Sign in</h1>{error}<p>gitgate asks the cluster's apiserver whose token this is (a \
TokenReview) and shows the projects your groups may read. Paste a Kubernetes bearer token: a ServiceAccount token \
(<code>kubectl create token NAME -n NAMESPACE</code>) or your OIDC id token. It is kept in an HttpOnly cookie for \
this browser session.</p><form id=\"login\" method=\"post\" action=\"/ui/login\">\
<input type=\"hidden\" name=\"next\" value=\"{next}\"><label>Token <input type=\"password\" name=\"token\" \
autocomplete=\"off\" required></label><button type=\"submit\">Sign in</button></form>\
<p>API clients send <code>Authorization: Bearer TOKEN</code>; <code>gitgate status</code> takes <code>--token</code>.</p></section>",
            next = esc(next)
        ),
    )
}

pub fn badge(kind: &str, text: &str) -> String {
    format!("<span class=\"badge {kind}-{cls}\">{t}</span>", cls = esc(&text.to_ascii_lowercase()), t = esc(text))
}

pub fn sync_badge(s: SyncStatus) -> String {
    badge("sync", s.as_str())
}

pub fn commit_link(commit: &str) -> String {
    if commit.is_empty() {
        return String::new();
    }
    format!(
        "<a class=\"commit\" href=\"/ui/commits/{id}\" title=\"{id}\"><code>{s}</code></a>",
        id = esc(commit),
        s = esc(short(commit))
    )
}

pub fn file_link(commit: &str, path: &str) -> String {
    if commit.is_empty() || path.is_empty() {
        return esc(path);
    }
    // The file page shows the revision gitgate tracks (never another one).
    format!("<a class=\"file\" href=\"/ui/files/{p}\">{text}</a>", p = enc_path(path), text = esc(path))
}

fn object_id(o: &ObjectStatus) -> String {
    if o.namespace.is_empty() {
        format!("{}/{}", o.kind, o.name)
    } else {
        format!("{}/{}/{}", o.namespace, o.kind, o.name)
    }
}

/// What the overview needs beyond the sync status.
pub struct Context<'a> {
    pub repo: &'a str,
    /// The commit in force (Git's head, rendered) and its subject.
    pub head: Option<(String, String)>,
}

/// The overview: every app, then the recent denials.
pub fn overview(ctx: &Context<'_>, o: &Overview, denials: &[Denial]) -> String {
    let mut b = String::new();
    let _ = write!(b, "<section class=\"summary\"><p>Repository <code>{}</code>", esc(ctx.repo));
    if let Some((id, subject)) = &ctx.head {
        let _ = write!(b, " at {} <q>{}</q>", commit_link(id), esc(subject));
    }
    let role = match o.role.as_str() {
        "plan" => "plan mode: no cluster is reachable, nothing is applied".to_string(),
        "follower" => {
            "this replica follows: the leader syncs and has the live status; shown here is Git's view".to_string()
        }
        "" => "starting".to_string(),
        r => format!("sync loop: {r}"),
    };
    let _ = write!(b, "; {}.</p></section>", esc(&role));
    let _ = write!(
        b,
        "<section><h1>Apps <small>{n}</small></h1>\
<input type=\"search\" class=\"filter\" data-table=\"apps\" placeholder=\"filter apps\" aria-label=\"filter apps\">\
<table id=\"apps\"><thead><tr><th>App</th><th>Sync</th><th>Health</th><th>Target commit</th><th>Synced commit</th>\
<th>Destination</th><th>Path</th><th>Objects</th><th>Last sync</th></tr></thead><tbody>",
        n = o.apps.len()
    );
    if o.apps.is_empty() {
        b.push_str("<tr><td colspan=\"9\" class=\"empty\">No apps yet: Git has not been rendered.</td></tr>");
    }
    for a in &o.apps {
        let _ = write!(
            b,
            "<tr data-app=\"{name}\"><td><a href=\"/ui/apps/{href}\">{name}</a>{detect}</td><td>{sync}</td><td>{health}</td>\
<td class=\"target\">{target}</td><td>{synced}</td><td>{dest}</td><td><code>{path}</code></td><td>{n}</td><td>{last}</td></tr>",
            name = esc(&a.name),
            href = enc(&a.name),
            detect = if a.detect_only { " <span class=\"tag\">detect only</span>" } else { "" },
            sync = sync_badge(a.sync),
            health = badge("health", &a.health),
            target = commit_link(&a.target_commit),
            synced = commit_link(&a.synced_commit),
            dest = esc(&a.destination),
            path = esc(&a.path),
            n = a.objects.len(),
            last = esc(&a.last_sync),
        );
    }
    b.push_str("</tbody></table></section>");
    b.push_str(&denials_section(denials));
    b
}

/// The recent denied changes, newest first.
pub fn denials_section(denials: &[Denial]) -> String {
    let mut b = format!(
        "<section><h2>Recent denied changes <small>{}</small> <a class=\"more\" href=\"/ui/audit?decision=deny\">all in the audit log</a></h2>\
<table id=\"denials\"><thead><tr><th>Time</th><th>User</th><th>Operation</th><th>Object</th><th>Owner</th><th>Message</th></tr></thead><tbody>",
        denials.len()
    );
    if denials.is_empty() {
        b.push_str("<tr><td colspan=\"6\" class=\"empty\">No change has been denied since gitgate started.</td></tr>");
    }
    for d in denials {
        let e = &d.entry;
        let owner = match &e.commit {
            Some(c) => format!("{} {} {}", esc(&e.app), commit_link(&c.id), file_link(&c.id, &e.source)),
            None => esc(&e.app),
        };
        let message = e.reasons.first().map(String::as_str).unwrap_or_default();
        let _ = write!(
            b,
            "<tr class=\"denial\"><td>{time}{dry}</td><td>{user}</td><td>{op}</td><td><code>{obj}</code></td><td>{owner}</td><td class=\"message\">{msg}</td></tr>",
            time = esc(&d.time),
            dry = if e.dry_run { " <span class=\"tag\">dry run</span>" } else { "" },
            user = esc(&e.user),
            op = esc(&e.operation),
            obj = esc(&e.object()),
            msg = esc(message),
        );
    }
    b.push_str("</tbody></table></section>");
    b
}

/// One app: its facts, then its resource tree (namespace → kind → object,
/// in wave order), each object with its status, commit and file.
pub fn app_page(a: &AppStatus) -> String {
    app_page_with(a, None)
}

/// The live children of the app's workloads ([`super::tree`]), and whether
/// a list failed (the tree is then partial).
pub type LiveView<'a> = (&'a std::collections::BTreeMap<String, super::tree::Branch>, bool);

/// [`app_page`], with the live tree under each workload, and the promotion
/// actions the app's state offers (Approve a waiting commit, Resume a pause).
pub fn app_page_with(a: &AppStatus, live: Option<LiveView<'_>>) -> String {
    let mut b = String::new();
    let _ = write!(
        b,
        "<section><h1>{name} {sync} {health}</h1><dl class=\"facts\">\
<dt>Target commit</dt><dd>{target}</dd><dt>Synced commit</dt><dd>{synced}</dd><dt>Destination</dt><dd>{dest}</dd>\
<dt>Path</dt><dd><code>{path}</code></dd><dt>Last sync</dt><dd>{last}</dd><dt>Self-heal</dt><dd>{heal}</dd></dl>",
        name = esc(&a.name),
        sync = sync_badge(a.sync),
        health = badge("health", &a.health),
        target = commit_link(&a.target_commit),
        synced = if a.synced_commit.is_empty() { "never".to_string() } else { commit_link(&a.synced_commit) },
        dest = esc(&a.destination),
        path = esc(&a.path),
        last = esc(&a.last_sync),
        heal = if a.detect_only { "off (detect only)" } else { "on" },
    );
    if !a.message.is_empty() {
        let _ = write!(b, "<p class=\"message\">{}</p>", esc(&a.message));
    }
    promotion_actions(&mut b, a);
    b.push_str("</section>");
    let _ = write!(
        b,
        "<section><h2>Resources <small>{}</small></h2>\
<input type=\"search\" class=\"filter\" data-table=\"objects\" placeholder=\"filter resources\" aria-label=\"filter resources\">\
<table id=\"objects\" class=\"tree\"><thead><tr><th>Resource</th><th>Wave</th><th>Sync</th><th>Health</th><th>Commit</th><th>File</th><th>Message</th></tr></thead><tbody>",
        a.objects.len()
    );
    let mut groups: Vec<(&str, &str)> = a.objects.iter().map(|o| (o.namespace.as_str(), o.kind.as_str())).collect();
    groups.sort_unstable();
    groups.dedup();
    let mut last_ns = None;
    for (ns, kind) in groups {
        if last_ns != Some(ns) {
            let label = if ns.is_empty() { "(cluster-scoped)".to_string() } else { format!("namespace {ns}") };
            let _ = write!(b, "<tr class=\"ns\"><th colspan=\"7\">{}</th></tr>", esc(&label));
            last_ns = Some(ns);
        }
        let _ = write!(b, "<tr class=\"kind\"><th colspan=\"7\">{}</th></tr>", esc(kind));
        for o in a.objects.iter().filter(|o| o.namespace == ns && o.kind == kind) {
            let _ = write!(
                b,
                "<tr class=\"object\" data-object=\"{id}\"><td>{name}</td><td>{wave}</td><td>{sync}</td><td>{health}</td><td>{commit}</td><td>{file}</td><td class=\"message\">{msg}</td></tr>",
                id = esc(&object_id(o)),
                name = esc(&o.name),
                wave = esc(&o.wave),
                sync = sync_badge(o.sync),
                health = badge("health", &o.health),
                commit = commit_link(&o.commit),
                file = file_link(&o.commit, &o.source),
                msg = esc(&o.message),
            );
            if let Some((branches, _)) = live
                && let Some(branch) = branches.get(&format!("{}/{}/{}", o.namespace, o.kind, o.name))
            {
                live_rows(&mut b, &object_id(o), branch);
            }
        }
    }
    if live.is_some_and(|(_, partial)| partial) {
        b.push_str(
            "<tr><td colspan=\"7\" class=\"empty\">The live tree is partial: a list of the cluster failed.</td></tr>",
        );
    }
    if a.objects.is_empty() {
        b.push_str("<tr><td colspan=\"7\" class=\"empty\">No resources.</td></tr>");
    }
    let _ = write!(
        b,
        "</tbody></table></section><p><a href=\"/ui/audit?app={}\">This app in the audit log</a></p>",
        enc(&a.name)
    );
    b
}

/// Approve (a waiting commit) and Resume (a pause): buttons the page's
/// script sends as JSON to `/api/v1/apps/{app}/…` (same origin; a
/// cross-site form cannot). The server decides who may.
fn promotion_actions(b: &mut String, a: &AppStatus) {
    use crate::sync::status::SyncStatus;
    match a.sync {
        SyncStatus::WaitingApproval | SyncStatus::OutsideWindow => {
            let _ = write!(
                b,
                "<div class=\"actions\"><button type=\"button\" class=\"promote\" data-action=\"approve\" data-app=\"{app}\" data-commit=\"{commit}\">Approve {short}</button> \
<button type=\"button\" class=\"diff\" data-app=\"{app}\" data-commit=\"{commit}\">Show diff</button>\
<pre class=\"diff-out\" hidden></pre><p class=\"action-result\" role=\"status\"></p></div>",
                app = esc(&a.name),
                commit = esc(&a.target_commit),
                short = esc(short(&a.target_commit)),
            );
        }
        SyncStatus::Paused => {
            let _ = write!(
                b,
                "<div class=\"actions\"><button type=\"button\" class=\"promote\" data-action=\"resume\" data-app=\"{app}\">Resume</button>\
<p class=\"action-result\" role=\"status\"></p></div>",
                app = esc(&a.name),
            );
        }
        _ => {}
    }
}

/// The live children of one workload (indented rows) and its last events.
fn live_rows(b: &mut String, parent: &str, branch: &super::tree::Branch) {
    fn rows(b: &mut String, parent: &str, children: &[super::tree::Child], depth: usize) {
        for c in children {
            let _ = write!(
                b,
                "<tr class=\"live\" data-parent=\"{parent}\" data-kind=\"{kind}\"><td style=\"padding-left:{pad}em\">└ {kind}/{name}</td><td></td><td></td><td>{health}</td><td></td><td></td><td class=\"message\">{detail}</td></tr>",
                parent = esc(parent),
                pad = 1 + depth,
                kind = esc(&c.kind),
                name = esc(&c.name),
                health = badge("health", &c.health),
                detail = esc(&c.detail),
            );
            rows(b, parent, &c.children, depth + 1);
        }
    }
    rows(b, parent, &branch.children, 1);
    for e in &branch.events {
        let _ = write!(
            b,
            "<tr class=\"event\" data-parent=\"{}\"><td colspan=\"7\" class=\"message\">event: {}</td></tr>",
            esc(parent),
            esc(e)
        );
    }
}

/// The audit filter as the form shows it.
#[derive(Clone, Debug, Default, serde::Deserialize)]
pub struct AuditForm {
    #[serde(default)]
    pub commit: String,
    #[serde(default)]
    pub object: String,
    #[serde(default)]
    pub user: String,
    #[serde(default)]
    pub since: String,
    #[serde(default)]
    pub decision: String,
    #[serde(default)]
    pub event: String,
    #[serde(default)]
    pub app: String,
    #[serde(default)]
    pub limit: Option<usize>,
}

const EVENTS: [&str; 14] = [
    "admission",
    "apply",
    "prune",
    "driftReverted",
    "breakGlassOpened",
    "breakGlassExpired",
    "unsignedCommitRefused",
    "webhookConfigRestored",
    "syncFailed",
    "logRecovered",
    "promotionWaiting",
    "approved",
    "paused",
    "resumed",
];

/// The audit page: the filter form, then the matching records, newest first.
pub fn audit_page(form: &AuditForm, records: &[Record], total: usize, error: Option<&str>) -> String {
    let mut b = String::new();
    let field = |name: &str, label: &str, value: &str, hint: &str| {
        format!(
            "<label>{label}<input name=\"{name}\" value=\"{v}\" placeholder=\"{hint}\"></label>",
            v = esc(value),
            hint = esc(hint)
        )
    };
    let select = |name: &str, label: &str, value: &str, options: &[&str]| {
        let opts: String = std::iter::once("")
            .chain(options.iter().copied())
            .map(|o| {
                let sel = if o.eq_ignore_ascii_case(value) { " selected" } else { "" };
                format!("<option value=\"{o}\"{sel}>{}</option>", if o.is_empty() { "any" } else { o })
            })
            .collect();
        format!("<label>{label}<select name=\"{name}\">{opts}</select></label>")
    };
    let _ = write!(
        b,
        "<section><h1>Audit log</h1><form class=\"filters\" method=\"get\" action=\"/ui/audit\">{}{}{}{}{}{}{}<label>Limit<input name=\"limit\" type=\"number\" min=\"1\" max=\"5000\" value=\"{limit}\"></label><button type=\"submit\">Filter</button></form>",
        field("commit", "Commit", &form.commit, "prefix of a commit ID"),
        field("object", "Object", &form.object, "namespace/Kind/name"),
        field("user", "User", &form.user, "username"),
        field("app", "App", &form.app, "app name"),
        field("since", "Since", &form.since, "2h or 2026-01-01T00:00:00Z"),
        select("decision", "Decision", &form.decision, &["allow", "warn", "deny", "done", "refused", "failed"]),
        select("event", "Event", &form.event, &EVENTS),
        limit = form.limit.unwrap_or(super::DEFAULT_LIMIT),
    );
    if let Some(e) = error {
        let _ = write!(b, "<p class=\"error\" role=\"alert\">{}</p></section>", esc(e));
        return b;
    }
    let _ = write!(
        b,
        "<p>{shown} of {total} matching records, newest first.</p>\
<table id=\"audit\"><thead><tr><th>Time</th><th>Seq</th><th>Event</th><th>Decision</th><th>User</th><th>Operation</th>\
<th>Object</th><th>Commit</th><th>App</th><th>File</th><th>Detail</th></tr></thead><tbody>",
        shown = records.len()
    );
    if records.is_empty() {
        b.push_str("<tr><td colspan=\"11\" class=\"empty\">No record matches.</td></tr>");
    }
    for r in records {
        let e = &r.entry;
        let commit = e.commit.as_ref().map(|c| c.id.as_str()).unwrap_or_default();
        let detail = match (&e.commit, e.reasons.first()) {
            (_, Some(reason)) if e.decision == Outcome::Deny => reason.clone(),
            (Some(c), _) if !c.subject.is_empty() => c.subject.clone(),
            (_, Some(reason)) => reason.clone(),
            _ => String::new(),
        };
        let object = if e.name.is_empty() { String::new() } else { e.object() };
        let _ = write!(
            b,
            "<tr class=\"record decision-{dcls}\"><td>{time}</td><td>{seq}</td><td>{event}</td><td>{decision}{dry}</td><td>{user}</td><td>{op}</td>\
<td><code>{object}</code></td><td>{commit}</td><td>{app}</td><td>{file}</td><td class=\"message\">{detail}</td></tr>",
            dcls = e.decision.as_str(),
            time = esc(&r.time),
            seq = r.seq,
            event = esc(e.event.as_str()),
            decision = badge("decision", e.decision.as_str()),
            dry = if e.dry_run { " <span class=\"tag\">dry run</span>" } else { "" },
            user = esc(&e.user),
            op = esc(&e.operation),
            object = esc(&object),
            commit = commit_link(commit),
            app = esc(&e.app),
            file = file_link(commit, &e.source),
            detail = esc(&detail),
        );
    }
    b.push_str("</tbody></table></section>");
    b
}

/// What a commit page shows.
pub struct CommitView {
    pub id: String,
    pub author: String,
    pub time: String,
    pub message: String,
    pub forge_url: Option<String>,
    /// Objects of the apps whose content this commit introduced.
    pub objects: Vec<(String, ObjectStatus)>,
}

pub fn commit_page(c: &CommitView) -> String {
    let mut b = format!(
        "<section><h1>Commit <code>{short}</code></h1><dl class=\"facts\"><dt>ID</dt><dd><code>{id}</code></dd>\
<dt>Author</dt><dd>{author}</dd><dt>Date</dt><dd>{time}</dd></dl><pre class=\"message\">{msg}</pre>",
        short = esc(short(&c.id)),
        id = esc(&c.id),
        author = esc(&c.author),
        time = esc(&c.time),
        msg = esc(&c.message),
    );
    if let Some(url) = &c.forge_url {
        let _ = write!(b, "<p><a href=\"{}\" rel=\"noreferrer\">View on the forge</a></p>", esc(url));
    }
    let _ = write!(
        b,
        "<p><a href=\"/ui/audit?commit={}\">Changes made from this commit, in the audit log</a></p></section>",
        enc(&c.id)
    );
    let _ = write!(
        b,
        "<section><h2>Objects whose content comes from this commit <small>{}</small></h2><table id=\"objects\"><thead><tr><th>App</th><th>Object</th><th>Sync</th><th>File</th></tr></thead><tbody>",
        c.objects.len()
    );
    if c.objects.is_empty() {
        b.push_str("<tr><td colspan=\"4\" class=\"empty\">None in force: later commits replaced them, or it changed no manifest.</td></tr>");
    }
    for (app, o) in &c.objects {
        let _ = write!(
            b,
            "<tr><td><a href=\"/ui/apps/{href}\">{app}</a></td><td><code>{id}</code></td><td>{sync}</td><td>{file}</td></tr>",
            href = enc(app),
            app = esc(app),
            id = esc(&object_id(o)),
            sync = sync_badge(o.sync),
            file = file_link(&c.id, &o.source),
        );
    }
    b.push_str("</tbody></table></section>");
    b
}

/// A file as Git has it at the tracked revision.
pub fn file_page(commit: &str, path: &str, text: Result<&str, &str>, forge_url: Option<&str>) -> String {
    let mut b =
        format!("<section><h1><code>{p}</code> <small>at {c}</small></h1>", p = esc(path), c = commit_link(commit));
    if let Some(url) = forge_url {
        let _ = write!(b, "<p><a href=\"{}\" rel=\"noreferrer\">View on the forge</a></p>", esc(url));
    }
    match text {
        Ok(t) => {
            let _ = write!(b, "<pre class=\"file\">{}</pre>", esc(t));
        }
        Err(why) => {
            let _ = write!(b, "<p class=\"error\">{}</p>", esc(why));
        }
    }
    b.push_str("</section>");
    b
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::record::{CommitRef, Entry, EventKind};

    fn app() -> AppStatus {
        AppStatus {
            name: "web<script>".into(),
            project: "shop".into(),
            sync: SyncStatus::OutOfSync,
            health: "Progressing".into(),
            target_commit: "3f2a9c1d0e".into(),
            synced_commit: String::new(),
            last_sync: "2026-11-22T00:00:00Z".into(),
            message: String::new(),
            destination: "in-cluster/shop".into(),
            path: "apps/web".into(),
            detect_only: false,
            objects: vec![ObjectStatus {
                group: "apps".into(),
                version: "v1".into(),
                kind: "Deployment".into(),
                namespace: "shop".into(),
                name: "api".into(),
                wave: "0.0".into(),
                sync: SyncStatus::OutOfSync,
                health: "Progressing".into(),
                message: "/spec/replicas differs from Git".into(),
                commit: "3f2a9c1d0e".into(),
                source: "apps/web/deploy one.yaml".into(),
                digest: String::new(),
                sealed: false,
                hook: false,
            }],
        }
    }

    /// A peer's status may carry any text as a commit: cut on characters.
    #[test]
    fn short_cuts_whole_characters() {
        assert_eq!(short("3f2a9c1d0e"), "3f2a9c1");
        assert_eq!(short("aaaaaaéé"), "aaaaaaé");
        assert_eq!(short("é"), "é");
        assert_eq!(short(""), "");
    }

    #[test]
    fn the_overview_shows_each_app_with_its_commit_and_escapes_everything() {
        let o = Overview { role: "leader".into(), apps: vec![app()], ..Overview::default() };
        let ctx = Context { repo: "file:///srv/git", head: Some(("3f2a9c1d0e".into(), "bump <image>".into())) };
        let html = overview(&ctx, &o, &[]);
        assert!(html.contains("web&lt;script&gt;"), "{html}");
        assert!(!html.contains("<script>"));
        assert!(html.contains("<a href=\"/ui/apps/web%3Cscript%3E\">"));
        assert!(html.contains("href=\"/ui/commits/3f2a9c1d0e\""));
        assert!(html.contains("<code>3f2a9c1</code>"));
        assert!(html.contains("bump &lt;image&gt;"));
        assert!(html.contains("No change has been denied"));
    }

    #[test]
    fn a_denial_names_its_owner_commit_and_file() {
        let mut e = Entry::new(EventKind::Admission, Outcome::Deny);
        e.user = "alice".into();
        e.operation = "UPDATE".into();
        e.kind = "Deployment".into();
        e.namespace = "shop".into();
        e.name = "api".into();
        e.app = "web".into();
        e.source = "apps/web/deploy.yaml".into();
        e.commit = Some(CommitRef { id: "3f2a9c1d0e".into(), ..CommitRef::default() });
        e.reasons = vec!["NotFromGit: shop/Deployment/api is managed by app web".into()];
        let html = denials_section(&[Denial { time: "t".into(), entry: e }]);
        assert!(html.contains("<code>shop/Deployment/api</code>"));
        assert!(html.contains("href=\"/ui/files/apps/web/deploy.yaml\""));
        assert!(html.contains("NotFromGit: shop/Deployment/api is managed by app web"));
    }

    #[test]
    fn the_app_page_is_a_tree_of_namespaces_kinds_and_objects_with_file_links() {
        let html = app_page(&app());
        let ns = html.find("namespace shop").unwrap();
        let kind = html.find("<th colspan=\"7\">Deployment</th>").unwrap();
        let obj = html.find("data-object=\"shop/Deployment/api\"").unwrap();
        assert!(ns < kind && kind < obj);
        assert!(html.contains("href=\"/ui/files/apps/web/deploy%20one.yaml\""), "{html}");
        assert!(html.contains("/spec/replicas differs from Git"));
    }

    #[test]
    fn an_audit_error_is_shown_escaped_and_the_form_keeps_its_values() {
        let form = AuditForm { object: "a/b/c/d<".into(), ..AuditForm::default() };
        let html = audit_page(&form, &[], 0, Some("bad object \"a/b/c/d<\""));
        assert!(html.contains("value=\"a/b/c/d&lt;\""));
        assert!(html.contains("role=\"alert\">bad object &quot;a/b/c/d&lt;&quot;"));
    }
}
