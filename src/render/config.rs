//! `gitgate.yaml`: the apps, projects, clusters and generators declared in
//! Git. Raw YAML → [`Config`] (validated, typed) once per commit. Errors
//! carry the file and line.
//!
//! ```yaml
//! clusters:
//!   - name: in-cluster
//!     server: https://kubernetes.default.svc
//!     labels: {env: production}
//! projects:
//!   - name: team-web
//!     destinations: [{cluster: in-cluster, namespace: "web-*"}]
//!     kinds: ["*"]                  # namespaced kinds: "Kind", "group/Kind", "group/*", "*"
//!     clusterKinds: ["Namespace"]   # cluster-scoped kinds allowed (none by default)
//!     vault:                        # Vault paths its sealed Secrets may name (none by default)
//!       paths: ["secret/team-web/*"]
//!       role: team-web              # optional: its own role for Vault's Kubernetes auth
//!     roles:                        # who sees the project on the dashboard and status API
//!       - {name: web-readers, groups: [web-team], permissions: [read]}   # read | sync
//! apps:
//!   - name: web-staging
//!     project: team-web
//!     path: apps/web/overlays/staging
//!     destination: {cluster: in-cluster, namespace: web-staging}
//!     syncPolicy: {prune: true, selfHeal: true, detectOnly: false}
//!     requireSigned: false
//! generators:
//!   - matrix:
//!       generators:
//!         - git: {directories: ["services/*"]}
//!         - list: {elements: [{env: staging}, {env: production}]}
//!     template:
//!       name: "{{path.basename}}-{{env}}"
//!       path: "{{path}}/overlays/{{env}}"
//!       destination: {namespace: "{{path.basename}}-{{env}}"}
//! ```
//!
//! Apps without a `project` belong to the implicit `default` project: any
//! cluster and namespace, every namespaced kind, no cluster-scoped kind.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_saphyr::Spanned;

use super::RenderError;
use crate::source::{NodeKind, RepoPath, TreeReader};

pub const DEFAULT_CONFIG_PATH: &str = "gitgate.yaml";
pub const DEFAULT_CLUSTER: &str = "in-cluster";
pub const DEFAULT_PROJECT: &str = "default";
/// Most apps one generator may produce (a matrix multiplies its two sides).
pub const MAX_GENERATED_APPS: usize = 10_000;

// ---------------------------------------------------------------- raw form

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawConfig {
    #[serde(default)]
    clusters: Vec<Spanned<RawCluster>>,
    #[serde(default)]
    projects: Vec<Spanned<RawProject>>,
    #[serde(default)]
    apps: Vec<Spanned<RawApp>>,
    #[serde(default)]
    generators: Vec<Spanned<RawGeneratorSet>>,
}

#[derive(Deserialize, Clone)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawCluster {
    name: String,
    #[serde(default)]
    server: String,
    #[serde(default)]
    labels: BTreeMap<String, String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawProject {
    name: String,
    #[serde(default)]
    destinations: Option<Vec<RawDestinationPattern>>,
    #[serde(default)]
    kinds: Option<Vec<String>>,
    #[serde(default)]
    cluster_kinds: Vec<String>,
    #[serde(default)]
    vault: Option<RawVaultAccess>,
    #[serde(default)]
    roles: Vec<Spanned<RawRole>>,
    /// `required`: every app of the project waits for an approver.
    #[serde(default)]
    approval: Approval,
    /// When the project's apps may sync (Argo CD's sync windows).
    #[serde(default)]
    sync_windows: Vec<super::window::RawSyncWindow>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawVaultAccess {
    #[serde(default)]
    paths: Vec<String>,
    #[serde(default)]
    role: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawRole {
    name: String,
    groups: Vec<String>,
    permissions: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawDestinationPattern {
    #[serde(default = "star")]
    cluster: String,
    #[serde(default = "star")]
    namespace: String,
}

fn star() -> String {
    "*".to_string()
}

#[derive(Deserialize, Serialize, Clone)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawApp {
    name: String,
    #[serde(default)]
    project: Option<String>,
    path: String,
    #[serde(default)]
    destination: RawDestination,
    #[serde(default)]
    sync_policy: SyncPolicy,
    #[serde(default)]
    require_signed: bool,
    #[serde(default)]
    helm: Option<RawHelm>,
}

#[derive(Deserialize, Serialize, Clone, Default)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawDestination {
    #[serde(default)]
    cluster: Option<String>,
    #[serde(default)]
    namespace: String,
}

#[derive(Deserialize, Serialize, Clone, Default)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawHelm {
    #[serde(default)]
    release_name: Option<String>,
    #[serde(default)]
    value_files: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawGeneratorSet {
    #[serde(default)]
    list: Option<ListGenerator>,
    #[serde(default)]
    git: Option<GitGenerator>,
    #[serde(default)]
    clusters: Option<ClustersGenerator>,
    #[serde(default)]
    matrix: Option<MatrixGenerator>,
    template: Value,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawGenerator {
    #[serde(default)]
    list: Option<ListGenerator>,
    #[serde(default)]
    git: Option<GitGenerator>,
    #[serde(default)]
    clusters: Option<ClustersGenerator>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct ListGenerator {
    elements: Vec<BTreeMap<String, Value>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct GitGenerator {
    directories: Vec<String>,
    #[serde(default)]
    exclude: Vec<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct ClustersGenerator {
    #[serde(default)]
    selector: Option<Selector>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Selector {
    #[serde(default)]
    match_labels: BTreeMap<String, String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct MatrixGenerator {
    generators: Vec<RawGenerator>,
}

// ---------------------------------------------------------- validated form

/// How an app is kept in sync.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SyncPolicy {
    #[serde(default)]
    pub prune: bool,
    #[serde(default)]
    pub self_heal: bool,
    #[serde(default)]
    pub detect_only: bool,
    /// `required`: each commit that changes the app waits for an approver
    /// (`gitgate approve`) before it is synced or enforced.
    #[serde(default)]
    pub approval: Approval,
}

/// Whether a commit needs an approver before it is put in force.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[serde(rename_all = "camelCase")]
pub enum Approval {
    /// Every commit is synced as it arrives.
    #[default]
    Automatic,
    /// A commit that changes the app waits for an approver.
    Required,
}

/// Where an app's objects go.
#[derive(Serialize, Clone, Debug, PartialEq, Eq, Hash)]
pub struct Destination {
    pub cluster: String,
    /// Namespace given to namespaced objects that name none (may be empty:
    /// then every namespaced object must name its own).
    pub namespace: String,
}

/// Helm options of an app whose path is a chart.
#[derive(Serialize, Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct HelmSpec {
    pub release_name: Option<String>,
    /// Values files, relative to the chart directory (may use `..` inside the repo).
    pub value_files: Vec<String>,
}

/// One validated app.
#[derive(Serialize, Clone, Debug, PartialEq, Eq, Hash)]
#[serde(rename_all = "camelCase")]
pub struct App {
    pub name: String,
    pub project: String,
    pub path: RepoPath,
    pub destination: Destination,
    pub sync_policy: SyncPolicy,
    pub require_signed: bool,
    pub helm: HelmSpec,
    /// Where it was declared (`gitgate.yaml:12`); not part of its identity.
    #[serde(skip)]
    pub declared_at: String,
}

impl App {
    /// A stable fingerprint of everything that affects rendering.
    pub fn fingerprint(&self) -> String {
        let json = serde_json::to_string(self).unwrap_or_default();
        super::object::digest_string(&super::object::sha256_digest(json.as_bytes()))
    }
}

/// A `*`-glob (any run of characters).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Glob(pub String);

impl Glob {
    pub fn matches(&self, s: &str) -> bool {
        glob_match(self.0.as_bytes(), s.as_bytes())
    }
}

fn glob_match(p: &[u8], s: &[u8]) -> bool {
    // Iterative wildcard match with backtracking on the last `*`.
    let (mut pi, mut si) = (0usize, 0usize);
    let (mut star, mut mark) = (None::<usize>, 0usize);
    while si < s.len() {
        if pi < p.len() && p[pi] != b'*' && p[pi] == s[si] {
            pi += 1;
            si += 1;
        } else if pi < p.len() && p[pi] == b'*' {
            star = Some(pi);
            mark = si;
            pi += 1;
        } else if let Some(st) = star {
            pi = st + 1;
            mark += 1;
            si = mark;
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == b'*' {
        pi += 1;
    }
    pi == p.len()
}

/// A kind pattern: `Kind` (core group), `group/Kind`, `group/*`, `*/Kind`, `*`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct KindPattern {
    pub group: Glob,
    pub kind: Glob,
}

impl KindPattern {
    fn parse(s: &str) -> Self {
        match s.rsplit_once('/') {
            _ if s == "*" => KindPattern { group: Glob("*".into()), kind: Glob("*".into()) },
            Some((g, k)) => KindPattern { group: Glob(g.into()), kind: Glob(k.into()) },
            None => KindPattern { group: Glob(String::new()), kind: Glob(s.into()) },
        }
    }

    pub fn matches(&self, group: &str, kind: &str) -> bool {
        self.group.matches(group) && self.kind.matches(kind)
    }
}

/// A project: the bounds of its apps.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Project {
    pub name: String,
    /// (cluster, namespace) patterns.
    pub destinations: Vec<(Glob, Glob)>,
    pub kinds: Vec<KindPattern>,
    pub cluster_kinds: Vec<KindPattern>,
    /// The Vault paths the project's sealed Secrets may name.
    pub vault: VaultAccess,
    /// Who may do what with the project's apps (groups → permissions).
    pub roles: Vec<Role>,
    /// `required`: every app of the project waits for an approver.
    pub approval: Approval,
    /// When the project's apps may sync.
    #[serde(skip)]
    pub sync_windows: Vec<super::window::SyncWindow>,
}

/// Which Vault paths a project's Secrets may reference (`<mount>/<path>`
/// globs; `*` matches any characters, `/` included), and the role its
/// reads use with Vault's Kubernetes auth (gitgate's own when `None`).
/// No paths: the project may name none — a `vault:` reference is then
/// denied, naming the project.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct VaultAccess {
    pub paths: Vec<Glob>,
    pub role: Option<String>,
}

impl VaultAccess {
    /// Whether `location` (`<mount>/<path>`) is one of the paths.
    pub fn allows(&self, location: &str) -> bool {
        self.paths.iter().any(|g| g.matches(location))
    }
}

/// A project role: members of any of `groups` get `permissions`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Role {
    pub name: String,
    pub groups: Vec<String>,
    pub permissions: Vec<Permission>,
}

/// What a project role grants.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Permission {
    /// See the project's apps, their files and their audit records.
    Read,
    /// Approve a waiting commit, pause and resume the project's apps.
    Sync,
}

impl Permission {
    pub fn parse(s: &str) -> Option<Permission> {
        match s {
            "read" => Some(Permission::Read),
            "sync" => Some(Permission::Sync),
            _ => None,
        }
    }
}

impl Project {
    fn default_project() -> Self {
        Project {
            name: DEFAULT_PROJECT.to_string(),
            destinations: vec![(Glob("*".into()), Glob("*".into()))],
            kinds: vec![KindPattern::parse("*")],
            cluster_kinds: Vec::new(),
            vault: VaultAccess::default(),
            roles: Vec::new(),
            approval: Approval::Automatic,
            sync_windows: Vec::new(),
        }
    }

    /// Whether a member of `groups` holds `permission` on this project.
    pub fn grants(&self, groups: &[String], permission: Permission) -> bool {
        self.roles.iter().any(|r| r.permissions.contains(&permission) && r.groups.iter().any(|g| groups.contains(g)))
    }

    pub fn allows_destination(&self, cluster: &str, namespace: &str) -> bool {
        self.destinations.iter().any(|(c, n)| c.matches(cluster) && n.matches(namespace))
    }

    pub fn allows_kind(&self, group: &str, kind: &str, cluster_scoped: bool) -> bool {
        let list = if cluster_scoped { &self.cluster_kinds } else { &self.kinds };
        list.iter().any(|p| p.matches(group, kind))
    }
}

/// A cluster apps may target.
#[derive(Clone, Debug, Serialize)]
pub struct Cluster {
    pub name: String,
    pub server: String,
    pub labels: BTreeMap<String, String>,
}

/// The validated `gitgate.yaml`.
#[derive(Clone, Debug, Serialize)]
pub struct Config {
    pub file: String,
    pub clusters: Vec<Cluster>,
    pub projects: BTreeMap<String, Project>,
    pub apps: Vec<App>,
}

impl Config {
    pub fn app(&self, name: &str) -> Option<&App> {
        self.apps.iter().find(|a| a.name == name)
    }

    pub fn project(&self, name: &str) -> Option<&Project> {
        self.projects.get(name)
    }

    /// Whether a promotion gate may keep `app` off the head (approval or
    /// sync windows): its commit in force is recorded with every commit.
    pub fn gated(&self, app: &App) -> bool {
        self.approval_required(app) || !self.windows_for(app).is_empty()
    }

    /// The sync windows of `app`'s project that apply to it.
    pub fn windows_for(&self, app: &App) -> Vec<super::window::SyncWindow> {
        self.project(&app.project)
            .map(|p| p.sync_windows.iter().filter(|w| w.applies_to(&app.name)).cloned().collect())
            .unwrap_or_default()
    }

    /// Whether a commit that changes `app` waits for an approver: the
    /// app's `syncPolicy.approval` or its project's `approval`.
    pub fn approval_required(&self, app: &App) -> bool {
        app.sync_policy.approval == Approval::Required
            || self.project(&app.project).is_some_and(|p| p.approval == Approval::Required)
    }
}

// --------------------------------------------------------------- loading

/// Reads and validates the config at `path` in `tree`. Git-directory
/// generators list directories in the same tree.
pub fn load(tree: &TreeReader, path: &RepoPath) -> Result<Config, RenderError> {
    let file = path.to_string();
    let bytes = tree.read(path)?;
    let raw: RawConfig = super::yaml::parse_one(&file, &bytes)?;
    validate(&file, raw, tree)
}

fn at(file: &str, loc: &serde_saphyr::Location) -> (String, usize) {
    (file.to_string(), loc.line() as usize)
}

fn config_error(file: &str, line: usize, message: impl Into<String>) -> RenderError {
    RenderError::Config { file: file.to_string(), line, message: message.into() }
}

/// The config, validated: clusters, projects, then apps (declared, then
/// generated), each checked against what came before.
fn validate(file: &str, raw: RawConfig, tree: &TreeReader) -> Result<Config, RenderError> {
    let clusters = clusters(file, raw.clusters)?;
    let projects = projects(file, raw.projects)?;
    let raw_apps = raw_apps(file, raw.apps, raw.generators, &clusters, tree)?;
    let mut apps = Vec::with_capacity(raw_apps.len());
    let mut names: BTreeMap<String, usize> = BTreeMap::new();
    for (a, (f, line)) in raw_apps {
        if !is_dns_label(&a.name) {
            return Err(config_error(
                &f,
                line,
                format!("app name {:?} is not a DNS label (a-z, 0-9, -; at most 63)", a.name),
            ));
        }
        if let Some(prev) = names.insert(a.name.clone(), line) {
            return Err(config_error(&f, line, format!("app {:?} is declared twice (first at line {prev})", a.name)));
        }
        apps.push(app(a, &f, line, &projects, &clusters)?);
    }
    apps.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(Config { file: file.to_string(), clusters, projects, apps })
}

/// `clusters`, each named once; none declared is the one gitgate runs in.
fn clusters(file: &str, raw: Vec<Spanned<RawCluster>>) -> Result<Vec<Cluster>, RenderError> {
    let mut clusters = Vec::new();
    let mut seen = BTreeMap::new();
    for c in raw {
        let line = c.referenced.line() as usize;
        let c = c.value;
        if let Some(prev) = seen.insert(c.name.clone(), line) {
            return Err(config_error(
                file,
                line,
                format!("cluster {:?} is declared twice (first at line {prev})", c.name),
            ));
        }
        clusters.push(Cluster { name: c.name, server: c.server, labels: c.labels });
    }
    if clusters.is_empty() {
        clusters.push(Cluster {
            name: DEFAULT_CLUSTER.to_string(),
            server: "https://kubernetes.default.svc".to_string(),
            labels: BTreeMap::new(),
        });
    }
    Ok(clusters)
}

/// `projects` by name, each declared once, with the default project.
fn projects(file: &str, raw: Vec<Spanned<RawProject>>) -> Result<BTreeMap<String, Project>, RenderError> {
    let mut projects = BTreeMap::new();
    projects.insert(DEFAULT_PROJECT.to_string(), Project::default_project());
    for p in raw {
        let line = p.referenced.line() as usize;
        let project = project(file, line, p.value)?;
        if project.name != DEFAULT_PROJECT && projects.contains_key(&project.name) {
            return Err(config_error(file, line, format!("project {:?} is declared twice", project.name)));
        }
        projects.insert(project.name.clone(), project);
    }
    Ok(projects)
}

/// One project (declared at `line`), validated; unset bounds allow all.
fn project(file: &str, line: usize, p: RawProject) -> Result<Project, RenderError> {
    if !is_dns_label(&p.name) {
        return Err(config_error(file, line, format!("project name {:?} is not a DNS label", p.name)));
    }
    let destinations = match p.destinations {
        Some(d) => d.into_iter().map(|d| (Glob(d.cluster), Glob(d.namespace))).collect(),
        None => vec![(Glob("*".into()), Glob("*".into()))],
    };
    let kinds = p.kinds.unwrap_or_else(|| vec!["*".to_string()]).iter().map(|k| KindPattern::parse(k)).collect();
    let cluster_kinds = p.cluster_kinds.iter().map(|k| KindPattern::parse(k)).collect();
    let vault = vault_access(file, line, &p.name, p.vault)?;
    let roles = roles(file, &p.name, p.roles)?;
    let mut sync_windows = Vec::with_capacity(p.sync_windows.len());
    for (i, w) in p.sync_windows.into_iter().enumerate() {
        let w = super::window::SyncWindow::parse(w)
            .map_err(|m| config_error(file, line, format!("project {:?}: syncWindows[{i}]: {m}", p.name)))?;
        sync_windows.push(w);
    }
    Ok(Project { name: p.name, destinations, kinds, cluster_kinds, vault, roles, approval: p.approval, sync_windows })
}

/// A project's `vault`: `<mount>/<path>` globs without `.` or `..`
/// segments, and a role that is not blank.
fn vault_access(
    file: &str,
    line: usize,
    project: &str,
    raw: Option<RawVaultAccess>,
) -> Result<VaultAccess, RenderError> {
    let Some(v) = raw else { return Ok(VaultAccess::default()) };
    for path in &v.paths {
        let bad = path.split('/').any(|seg| seg == ".." || seg == ".");
        if path.trim_matches('/').is_empty() || !path.contains('/') || bad {
            return Err(config_error(
                file,
                line,
                format!(
                    "project {project:?}: vault path {path:?} must be <mount>/<path> without . or .. segments, e.g. secret/{project}/*"
                ),
            ));
        }
    }
    if v.role.as_deref().is_some_and(|r| r.trim().is_empty()) {
        return Err(config_error(file, line, format!("project {project:?}: vault role is empty")));
    }
    Ok(VaultAccess { paths: v.paths.into_iter().map(Glob).collect(), role: v.role })
}

/// An app as written, with the file and line that declare it.
type DeclaredApp = (RawApp, (String, usize));

/// Apps: declared ones, then generated ones, each with where it was
/// declared (a generated app: its generator).
fn raw_apps(
    file: &str,
    declared: Vec<Spanned<RawApp>>,
    generators: Vec<Spanned<RawGeneratorSet>>,
    clusters: &[Cluster],
    tree: &TreeReader,
) -> Result<Vec<DeclaredApp>, RenderError> {
    let mut raw_apps: Vec<DeclaredApp> = Vec::new();
    for a in declared {
        raw_apps.push((a.value, at(file, &a.referenced)));
    }
    for g in generators {
        let line = g.referenced.line() as usize;
        let params = expand_set(&g.value, clusters, tree).map_err(|m| config_error(file, line, m))?;
        for p in params {
            let v = substitute(&g.value.template, &p).map_err(|m| config_error(file, line, m))?;
            let app: RawApp = serde_json::from_value(v)
                .map_err(|e| config_error(file, line, format!("generated app does not fit the app schema: {e}")))?;
            raw_apps.push((app, (file.to_string(), line)));
        }
    }
    Ok(raw_apps)
}

/// One app (declared at `f:line`), validated against its project and the
/// declared clusters.
fn app(
    a: RawApp,
    f: &str,
    line: usize,
    projects: &BTreeMap<String, Project>,
    clusters: &[Cluster],
) -> Result<App, RenderError> {
    let path = RepoPath::parse(&a.path).map_err(|e| config_error(f, line, format!("app {:?}: {e}", a.name)))?;
    let project_name = a.project.clone().unwrap_or_else(|| DEFAULT_PROJECT.to_string());
    let Some(project) = projects.get(&project_name) else {
        return Err(config_error(
            f,
            line,
            format!("app {:?} names project {project_name:?}, which is not declared", a.name),
        ));
    };
    let cluster = a.destination.cluster.clone().unwrap_or_else(|| DEFAULT_CLUSTER.to_string());
    if !clusters.iter().any(|c| c.name == cluster) {
        return Err(config_error(
            f,
            line,
            format!("app {:?} targets cluster {cluster:?}, which is not declared", a.name),
        ));
    }
    if !project.allows_destination(&cluster, &a.destination.namespace) {
        return Err(config_error(
            f,
            line,
            format!(
                "app {:?}: project {project_name:?} does not allow destination cluster {cluster:?} namespace {:?}",
                a.name, a.destination.namespace
            ),
        ));
    }
    if !a.destination.namespace.is_empty() && !is_dns_label(&a.destination.namespace) {
        return Err(config_error(
            f,
            line,
            format!(
                "app {:?}: destination.namespace {:?} is not a DNS-1123 label (a-z, 0-9, -; at most 63)",
                a.name, a.destination.namespace
            ),
        ));
    }
    let helm = a.helm.clone().unwrap_or_default();
    validate_helm(&helm, &path).map_err(|m| config_error(f, line, format!("app {:?}: {m}", a.name)))?;
    Ok(App {
        name: a.name,
        project: project_name,
        path,
        destination: Destination { cluster, namespace: a.destination.namespace },
        sync_policy: a.sync_policy,
        require_signed: a.require_signed,
        helm: HelmSpec { release_name: helm.release_name, value_files: helm.value_files },
        declared_at: format!("{f}:{line}"),
    })
}

/// A project's `roles`, validated: named once each, with groups and known
/// permissions.
fn roles(file: &str, project: &str, raw: Vec<Spanned<RawRole>>) -> Result<Vec<Role>, RenderError> {
    let mut out: Vec<Role> = Vec::with_capacity(raw.len());
    for r in raw {
        let line = r.referenced.line() as usize;
        let r = r.value;
        let bad = |m: String| Err(config_error(file, line, format!("project {project:?} role {:?}: {m}", r.name)));
        if r.name.is_empty() || out.iter().any(|o| o.name == r.name) {
            return bad("a role needs a name, unique in its project".into());
        }
        if r.groups.is_empty() || r.groups.iter().any(|g| g.trim().is_empty()) {
            return bad("a role needs at least one group, none empty".into());
        }
        let mut permissions = Vec::with_capacity(r.permissions.len());
        for p in &r.permissions {
            match Permission::parse(p) {
                Some(p) => permissions.push(p),
                None => return bad(format!("unknown permission {p:?} (known: read, sync)")),
            }
        }
        if permissions.is_empty() {
            return bad("a role needs at least one permission (read, sync)".into());
        }
        permissions.sort_unstable();
        permissions.dedup();
        out.push(Role { name: r.name, groups: r.groups, permissions });
    }
    Ok(out)
}

/// Helm fields from Git that reach helm's command line or its reads: the
/// release name is a helm release name ([`is_helm_release_name`]), each
/// values file a path inside the repository (`..` allowed, not above the
/// root: Argo CD's CVE-2022-24348) with no component that reads as a flag.
/// The message names the field.
fn validate_helm(helm: &RawHelm, app_path: &RepoPath) -> Result<(), String> {
    if let Some(r) = &helm.release_name
        && !is_helm_release_name(r)
    {
        return Err(format!("helm.releaseName {r:?} is not a helm release name ({HELM_RELEASE_NAME_RULE})"));
    }
    for (i, vf) in helm.value_files.iter().enumerate() {
        let field = format!("helm.valueFiles[{i}] {vf:?}");
        app_path.join(vf).map_err(|e| format!("{field}: {e}"))?;
        if vf.split('/').any(|c| c.starts_with('-')) || vf.chars().any(char::is_control) || vf.trim().is_empty() {
            return Err(format!(
                "{field}: not a values file path (empty, or with a control character, or a component starting with '-')"
            ));
        }
    }
    Ok(())
}

/// What [`is_helm_release_name`] accepts, said in errors.
pub const HELM_RELEASE_NAME_RULE: &str = "lowercase letters, digits, '-' and '.', each dot-separated part starting and ending with a letter or digit; at most 53 characters";

/// Helm's own rule for release names (`chartutil.ValidateReleaseName`): a
/// DNS-1123 subdomain of at most 53 characters. Never starts with `-`, so
/// it cannot read as a flag.
pub fn is_helm_release_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 53
        && s.split('.').all(|part| {
            !part.is_empty()
                && part.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !part.starts_with('-')
                && !part.ends_with('-')
        })
}

/// A DNS-1123 label (a namespace, an app name).
pub fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

type Params = BTreeMap<String, String>;

fn expand_set(g: &RawGeneratorSet, clusters: &[Cluster], tree: &TreeReader) -> Result<Vec<Params>, String> {
    let count =
        [g.list.is_some(), g.git.is_some(), g.clusters.is_some(), g.matrix.is_some()].iter().filter(|b| **b).count();
    if count != 1 {
        return Err("a generator needs exactly one of list, git, clusters, matrix".to_string());
    }
    if let Some(m) = &g.matrix {
        let [a, b] = m.generators.as_slice() else {
            return Err("a matrix generator combines exactly two generators".to_string());
        };
        let left = expand_one(a, clusters, tree)?;
        let right = expand_one(b, clusters, tree)?;
        let total = left.len().saturating_mul(right.len());
        if total > MAX_GENERATED_APPS {
            return Err(too_many_apps(total));
        }
        let mut out = Vec::with_capacity(total);
        for l in &left {
            for r in &right {
                let mut p = l.clone();
                for (k, v) in r {
                    if let Some(prev) = p.get(k)
                        && prev != v
                    {
                        return Err(format!("matrix parameter {k:?} is set by both generators"));
                    }
                    p.insert(k.clone(), v.clone());
                }
                out.push(p);
            }
        }
        return Ok(out);
    }
    let single = RawGeneratorRef { list: g.list.as_ref(), git: g.git.as_ref(), clusters: g.clusters.as_ref() };
    let out = expand_ref(single, clusters, tree)?;
    if out.len() > MAX_GENERATED_APPS {
        return Err(too_many_apps(out.len()));
    }
    Ok(out)
}

fn too_many_apps(n: usize) -> String {
    format!("the generator would produce {n} apps, more than the limit of {MAX_GENERATED_APPS}")
}

struct RawGeneratorRef<'a> {
    list: Option<&'a ListGenerator>,
    git: Option<&'a GitGenerator>,
    clusters: Option<&'a ClustersGenerator>,
}

fn expand_one(g: &RawGenerator, clusters: &[Cluster], tree: &TreeReader) -> Result<Vec<Params>, String> {
    let count = [g.list.is_some(), g.git.is_some(), g.clusters.is_some()].iter().filter(|b| **b).count();
    if count > 1 {
        return Err("a generator needs exactly one of list, git, clusters".to_string());
    }
    if count == 0 {
        return Ok(Vec::new());
    }
    expand_ref(
        RawGeneratorRef { list: g.list.as_ref(), git: g.git.as_ref(), clusters: g.clusters.as_ref() },
        clusters,
        tree,
    )
}

fn expand_ref(g: RawGeneratorRef<'_>, clusters: &[Cluster], tree: &TreeReader) -> Result<Vec<Params>, String> {
    if let Some(list) = g.list {
        let mut out = Vec::new();
        for el in &list.elements {
            let mut p = Params::new();
            for (k, v) in el {
                let s = match v {
                    Value::String(s) => s.clone(),
                    Value::Number(n) => n.to_string(),
                    Value::Bool(b) => b.to_string(),
                    _ => return Err(format!("list element parameter {k:?} must be a scalar")),
                };
                p.insert(k.clone(), s);
            }
            out.push(p);
        }
        return Ok(out);
    }
    if let Some(git) = g.git {
        let mut found = BTreeSet::new();
        for pattern in &git.directories {
            for dir in match_dirs(tree, pattern)? {
                found.insert(dir);
            }
        }
        let mut out = Vec::new();
        for dir in found {
            if git.exclude.iter().any(|x| glob_path_match(x, dir.as_str())) {
                continue;
            }
            let mut p = Params::new();
            p.insert("path".into(), dir.as_str().to_string());
            p.insert("path.basename".into(), dir.file_name().to_string());
            out.push(p);
        }
        return Ok(out);
    }
    if let Some(cg) = g.clusters {
        let mut out = Vec::new();
        let want = cg.selector.as_ref().map(|s| &s.match_labels);
        for c in clusters {
            if let Some(want) = want
                && !want.iter().all(|(k, v)| c.labels.get(k) == Some(v))
            {
                continue;
            }
            let mut p = Params::new();
            p.insert("name".into(), c.name.clone());
            p.insert("server".into(), c.server.clone());
            for (k, v) in &c.labels {
                p.insert(format!("metadata.labels.{k}"), v.clone());
            }
            out.push(p);
        }
        return Ok(out);
    }
    Ok(Vec::new())
}

fn glob_path_match(pattern: &str, path: &str) -> bool {
    let pc: Vec<&str> = pattern.split('/').filter(|c| !c.is_empty()).collect();
    let sc: Vec<&str> = path.split('/').filter(|c| !c.is_empty()).collect();
    pc.len() == sc.len() && pc.iter().zip(&sc).all(|(p, s)| Glob((*p).to_string()).matches(s))
}

/// Directories matching `pattern` (components may hold `*`), in the tree.
fn match_dirs(tree: &TreeReader, pattern: &str) -> Result<Vec<RepoPath>, String> {
    let pattern = RepoPath::parse(pattern).map_err(|e| e.to_string())?;
    let mut current = vec![RepoPath::root()];
    for comp in pattern.components() {
        let mut next = Vec::new();
        for dir in &current {
            if comp.contains('*') {
                let entries = tree.list(dir).map_err(|e| e.to_string())?;
                for (name, kind) in entries {
                    if kind == NodeKind::Dir && !name.starts_with('.') && Glob(comp.to_string()).matches(&name) {
                        next.push(dir.child(&name));
                    }
                }
            } else {
                let child = dir.child(comp);
                if let Ok(Some(n)) = tree.resolve(&child)
                    && n.kind == NodeKind::Dir
                {
                    next.push(child);
                }
            }
        }
        current = next;
    }
    Ok(current)
}

/// Replaces `{{ name }}` in every string of `template`.
fn substitute(template: &Value, params: &Params) -> Result<Value, String> {
    Ok(match template {
        Value::String(s) => Value::String(substitute_str(s, params)?),
        Value::Array(items) => Value::Array(items.iter().map(|i| substitute(i, params)).collect::<Result<_, _>>()?),
        Value::Object(map) => {
            let mut out = serde_json::Map::new();
            for (k, v) in map {
                out.insert(substitute_str(k, params)?, substitute(v, params)?);
            }
            Value::Object(out)
        }
        other => other.clone(),
    })
}

fn substitute_str(s: &str, params: &Params) -> Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else {
            return Err(format!("unclosed `{{{{` in template string {s:?}"));
        };
        let name = after[..end].trim();
        match params.get(name) {
            Some(v) => out.push_str(v),
            None => return Err(format!("template parameter {name:?} is not set by the generator")),
        }
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(Glob("web-*".into()).matches("web-staging"));
        assert!(!Glob("web-*".into()).matches("api-staging"));
        assert!(Glob("*".into()).matches(""));
        assert!(Glob("a*b*c".into()).matches("aXXbYYc"));
        assert!(!Glob("a*b*c".into()).matches("aXXbYY"));
    }

    #[test]
    fn kind_patterns() {
        assert!(KindPattern::parse("Service").matches("", "Service"));
        assert!(!KindPattern::parse("Service").matches("serving.knative.dev", "Service"));
        assert!(KindPattern::parse("apps/*").matches("apps", "Deployment"));
        assert!(KindPattern::parse("*").matches("x", "Y"));
    }

    #[test]
    fn helm_release_names_follow_helms_rule() {
        for ok in ["web", "web-1", "a.b-c.d", "0", &"a".repeat(53)] {
            assert!(is_helm_release_name(ok), "{ok}");
        }
        for bad in
            ["", "-f", "--set-file=x=/etc/passwd", "Web", "a..b", ".a", "a.", "a-", "a b", "a_b", &"a".repeat(54)]
        {
            assert!(!is_helm_release_name(bad), "{bad}");
        }
    }

    #[test]
    fn substitution_refuses_unknown_parameters() {
        let mut p = Params::new();
        p.insert("env".into(), "prod".into());
        assert_eq!(substitute_str("web-{{ env }}", &p).unwrap(), "web-prod");
        assert!(substitute_str("web-{{cluster}}", &p).unwrap_err().contains("cluster"));
    }

    fn project_roles(yaml: &str) -> Result<Vec<Role>, RenderError> {
        let raw: RawConfig = super::super::yaml::parse_one("gitgate.yaml", yaml.as_bytes()).unwrap();
        let p = raw.projects.into_iter().next().unwrap().value;
        roles("gitgate.yaml", &p.name, p.roles)
    }

    #[test]
    fn roles_are_validated_and_an_unknown_permission_names_the_file_and_line() {
        let ok = project_roles(
            "projects:\n  - name: frontend\n    roles:\n      - {name: readers, groups: [frontend], permissions: [read]}\n\
             \x20     - {name: deployers, groups: [ci, release], permissions: [sync, read, sync]}\n",
        )
        .unwrap();
        assert_eq!(
            ok[0],
            Role { name: "readers".into(), groups: vec!["frontend".into()], permissions: vec![Permission::Read] }
        );
        assert_eq!(ok[1].permissions, [Permission::Read, Permission::Sync]);
        let p = Project { roles: ok, ..Project::default_project() };
        assert!(p.grants(&["release".into()], Permission::Sync) && p.grants(&["frontend".into()], Permission::Read));
        assert!(!p.grants(&["frontend".into()], Permission::Sync) && !p.grants(&["web".into()], Permission::Read));

        let e = project_roles(
            "projects:\n  - name: frontend\n    roles:\n      - {name: readers, groups: [frontend], permissions: [read]}\n\
             \x20     - {name: admins, groups: [ops], permissions: [admin]}\n",
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "gitgate.yaml:5: project \"frontend\" role \"admins\": unknown permission \"admin\" (known: read, sync)"
        );
        for bad in [
            "{name: r, groups: [], permissions: [read]}",
            "{name: r, groups: [g], permissions: []}",
            "{name: '', groups: [g], permissions: [read]}",
        ] {
            let yaml = format!("projects:\n  - name: p\n    roles:\n      - {bad}\n");
            assert!(project_roles(&yaml).unwrap_err().to_string().starts_with("gitgate.yaml:4: "), "{bad}");
        }
        let twice = "projects:\n  - name: p\n    roles:\n      - {name: r, groups: [g], permissions: [read]}\n      - {name: r, groups: [h], permissions: [read]}\n";
        assert!(project_roles(twice).is_err());
        let unknown_field = "projects:\n  - name: p\n    roles: [{name: r, group: [g], permissions: [read]}]\n";
        assert!(super::super::yaml::parse_one::<RawConfig>("gitgate.yaml", unknown_field.as_bytes()).is_err());
    }
}
