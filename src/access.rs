//! Who sees what: pure functions from a user's groups and `gitgate.yaml`'s
//! project roles to the apps, files and audit records they may read.
//!
//! `--admin-group` members see everything (the platform team); everyone
//! else sees the apps of the projects whose `roles` grant one of their
//! groups `read` (the frontend team sees the frontend apps), and nothing
//! else: not another project's apps, files or audit records, and no record
//! that names no app.

use std::collections::BTreeSet;

use crate::render::DesiredSet;
use crate::render::config::{Config, Permission};
use crate::source::RepoPath;

/// What one user may read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Scope {
    /// An admin group member, or a dashboard served without login.
    All,
    /// The apps of the projects a role grants `read` on.
    Apps { projects: BTreeSet<String>, apps: BTreeSet<String> },
}

impl Scope {
    /// The scope of a member of `groups` under `config`.
    pub fn of(groups: &[String], admin_groups: &[String], config: &Config) -> Scope {
        if groups.iter().any(|g| admin_groups.contains(g)) {
            return Scope::All;
        }
        let projects: BTreeSet<String> =
            config.projects.values().filter(|p| p.grants(groups, Permission::Read)).map(|p| p.name.clone()).collect();
        let apps = config.apps.iter().filter(|a| projects.contains(&a.project)).map(|a| a.name.clone()).collect();
        Scope::Apps { projects, apps }
    }

    pub fn is_all(&self) -> bool {
        matches!(self, Scope::All)
    }

    /// No project grants this user anything.
    pub fn is_empty(&self) -> bool {
        matches!(self, Scope::Apps { projects, .. } if projects.is_empty())
    }

    /// Whether the app named `app` is visible. An empty name (a record no
    /// app owns) is visible to admins only.
    pub fn sees_app(&self, app: &str) -> bool {
        match self {
            Scope::All => true,
            Scope::Apps { apps, .. } => !app.is_empty() && apps.contains(app),
        }
    }

    /// The projects granted (for the page header); `None` for all.
    pub fn projects(&self) -> Option<&BTreeSet<String>> {
        match self {
            Scope::All => None,
            Scope::Apps { projects, .. } => Some(projects),
        }
    }

    /// Whether a file of the tracked revision may be shown (secrets aside):
    /// admins any file; others a file under a visible app's path, or the
    /// file a visible app's object was rendered from (a shared base).
    pub fn sees_path(&self, path: &RepoPath, desired: &DesiredSet) -> bool {
        match self {
            Scope::All => true,
            Scope::Apps { apps, .. } => {
                desired.apps().iter().any(|a| apps.contains(&a.name) && path.starts_with(&a.path))
                    || apps
                        .iter()
                        .any(|app| desired.app_objects(app).iter().any(|(_, o)| o.source.as_ref() == path.as_str()))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::config::{Config, Project, Role};

    fn project(name: &str, roles: Vec<Role>) -> Project {
        Project {
            name: name.into(),
            destinations: Vec::new(),
            kinds: Vec::new(),
            cluster_kinds: Vec::new(),
            vault: Default::default(),
            roles,
            approval: Default::default(),
            sync_windows: Vec::new(),
        }
    }

    fn role(groups: &[&str], permissions: &[Permission]) -> Role {
        Role {
            name: "r".into(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
            permissions: permissions.to_vec(),
        }
    }

    fn app(name: &str, project: &str) -> crate::render::config::App {
        crate::render::config::App {
            name: name.into(),
            project: project.into(),
            path: RepoPath::parse(&format!("apps/{name}")).unwrap(),
            destination: crate::render::config::Destination { cluster: "in-cluster".into(), namespace: name.into() },
            sync_policy: Default::default(),
            require_signed: false,
            helm: Default::default(),
            declared_at: String::new(),
        }
    }

    fn config() -> Config {
        let projects = [
            project("frontend", vec![role(&["frontend"], &[Permission::Read])]),
            project("payments", vec![role(&["payments"], &[Permission::Read, Permission::Sync])]),
            project("deployers", vec![role(&["ci"], &[Permission::Sync])]),
            project("default", Vec::new()),
        ]
        .into_iter()
        .map(|p| (p.name.clone(), p))
        .collect();
        Config {
            file: "gitgate.yaml".into(),
            clusters: Vec::new(),
            projects,
            apps: vec![
                app("web", "frontend"),
                app("shop", "frontend"),
                app("billing", "payments"),
                app("ci-app", "deployers"),
                app("loose", "default"),
            ],
        }
    }

    fn groups(g: &[&str]) -> Vec<String> {
        g.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_reader_sees_the_apps_of_their_projects_only() {
        let s = Scope::of(&groups(&["system:authenticated", "frontend"]), &groups(&["platform"]), &config());
        assert!(s.sees_app("web") && s.sees_app("shop"));
        assert!(!s.sees_app("billing") && !s.sees_app("loose") && !s.sees_app("ci-app"));
        assert!(!s.sees_app(""), "a record no app owns is for admins");
        assert_eq!(s.projects().unwrap().iter().collect::<Vec<_>>(), ["frontend"]);
        assert!(!s.is_empty() && !s.is_all());
    }

    #[test]
    fn admins_see_everything_and_sync_alone_grants_no_read() {
        let admin = Scope::of(&groups(&["platform"]), &groups(&["platform"]), &config());
        assert!(admin.is_all() && admin.sees_app("billing") && admin.sees_app("loose") && admin.sees_app(""));
        let ci = Scope::of(&groups(&["ci"]), &groups(&["platform"]), &config());
        assert!(ci.is_empty(), "sync is reserved: it grants no read");
        let nobody = Scope::of(&groups(&["system:authenticated"]), &[], &config());
        assert!(nobody.is_empty() && !nobody.sees_app("web"));
        let both = Scope::of(&groups(&["frontend", "payments"]), &[], &config());
        assert!(both.sees_app("billing") && both.sees_app("web"));
    }
}
