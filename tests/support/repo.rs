//! Helpers for the source/render tests: real Git repositories made with
//! the `git` CLI in temp dirs.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

use super::reap;

pub struct Repo {
    pub dir: tempfile::TempDir,
}

pub fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_AUTHOR_NAME", "Test")
        .env("GIT_AUTHOR_EMAIL", "test@example.com")
        .env("GIT_COMMITTER_NAME", "Test")
        .env("GIT_COMMITTER_EMAIL", "test@example.com")
        .output()
        .expect("git runs");
    assert!(out.status.success(), "git {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

impl Default for Repo {
    fn default() -> Self {
        Repo::new()
    }
}

impl Repo {
    /// An empty repository on branch `main`.
    pub fn new() -> Repo {
        let dir = tempfile::tempdir().unwrap();
        git(dir.path(), &["init", "-q", "-b", "main"]);
        git(dir.path(), &["config", "commit.gpgsign", "false"]);
        Repo { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn url(&self) -> String {
        format!("file://{}", self.path().display())
    }

    pub fn write(&self, rel: &str, content: &str) -> &Self {
        let p = self.path().join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, content).unwrap();
        self
    }

    pub fn write_bytes(&self, rel: &str, content: &[u8]) -> &Self {
        let p = self.path().join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, content).unwrap();
        self
    }

    pub fn symlink(&self, rel: &str, target: &str) -> &Self {
        let p = self.path().join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::os::unix::fs::symlink(target, p).unwrap();
        self
    }

    pub fn remove(&self, rel: &str) -> &Self {
        std::fs::remove_file(self.path().join(rel)).unwrap();
        self
    }

    /// Copies the directory `from` (its files and subdirectories) into
    /// the work tree, e.g. one of the crate's `examples/`.
    pub fn copy_dir(&self, from: &Path) -> &Self {
        fn copy(from: &Path, to: &Path) {
            std::fs::create_dir_all(to).unwrap();
            for entry in std::fs::read_dir(from).unwrap() {
                let entry = entry.unwrap();
                let target = to.join(entry.file_name());
                if entry.file_type().unwrap().is_dir() {
                    copy(&entry.path(), &target);
                } else {
                    std::fs::copy(entry.path(), target).unwrap();
                }
            }
        }
        copy(from, self.path());
        self
    }

    /// Commits everything; returns the commit ID.
    pub fn commit(&self, msg: &str) -> String {
        git(self.path(), &["add", "-A"]);
        git(self.path(), &["commit", "-q", "--allow-empty", "-m", msg]);
        git(self.path(), &["rev-parse", "HEAD"])
    }
}

pub fn cache_dir() -> (tempfile::TempDir, PathBuf) {
    let t = tempfile::tempdir().unwrap();
    let p = t.path().join("cache.git");
    (t, p)
}

pub fn oid(hex: &str) -> gix::ObjectId {
    gix::ObjectId::from_hex(hex.as_bytes()).unwrap()
}

pub fn configmap(name: &str, value: &str) -> String {
    format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\ndata:\n  value: \"{value}\"\n")
}

pub fn deployment(name: &str, image: &str) -> String {
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: {name}\nspec:\n  replicas: 2\n  selector:\n    matchLabels: {{app: {name}}}\n  template:\n    metadata:\n      labels: {{app: {name}}}\n    spec:\n      containers:\n        - name: {name}\n          image: {image}\n"
    )
}

/// A `git daemon` serving `base` on a free loopback port; killed on drop
/// (with the upload-pack processes it forked).
pub struct Daemon {
    pub child: reap::Guard,
    pub port: u16,
}

impl Daemon {
    pub fn start(base: &Path) -> Daemon {
        for _ in 0..20 {
            let port = {
                let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
                l.local_addr().unwrap().port()
            };
            if let Some(d) = Daemon::listen(base, port) {
                return d;
            }
        }
        panic!("git daemon did not start");
    }

    /// A `git daemon` serving `base` on `port`, which it may have served
    /// before (a restarted server).
    pub fn start_on(base: &Path, port: u16) -> Daemon {
        Daemon::listen(base, port).unwrap_or_else(|| panic!("git daemon did not listen on {port}"))
    }

    /// Runs git-daemon itself (not `git daemon`, whose child would outlive
    /// a kill of the wrapper) on `port`; `None` when it exits or does not
    /// listen within 5 s (the port was taken meanwhile).
    fn listen(base: &Path, port: u16) -> Option<Daemon> {
        let exec_path = git(base, &["--exec-path"]);
        let child = reap::spawn(
            Command::new(Path::new(&exec_path).join("git-daemon"))
                .args([
                    "--export-all",
                    "--reuseaddr",
                    "--listen=127.0.0.1",
                    &format!("--port={port}"),
                    &format!("--base-path={}", base.display()),
                    &base.display().to_string(),
                ])
                .stderr(std::process::Stdio::null()),
        )
        .expect("git daemon starts");
        let mut d = Daemon { child, port };
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Some(d);
            }
            if let Ok(Some(_)) = d.child.try_wait() {
                return None;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        None
    }
}

const GITOPS_DEMO_DEPLOY: &str = "\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: gitops-demo
  labels: {app.kubernetes.io/name: web, app.kubernetes.io/part-of: demo}
spec:
  replicas: 2
  selector:
    matchLabels: {app.kubernetes.io/name: web}
  template:
    metadata:
      labels: {app.kubernetes.io/name: web}
    spec:
      containers:
        - name: web
          image: nginx:1.27
";

/// A repo whose app `web` owns the Deployment the captured kubectl-edit
/// fixture changes (gitops-demo/web).
/// Two projects with roles: `frontend` (apps `web`, the demo Deployment
/// beside a `List` holding a Secret, and `web-config`, a kustomization
/// whose secretGenerator reads `db.env`) and `payments` (app `pay`).
pub fn gitops_roles_repo() -> (Repo, String) {
    let repo = Repo::new();
    repo.write(
        "gitgate.yaml",
        "projects:\n  - name: frontend\n    roles: [{name: frontend-readers, groups: [frontend], permissions: [read]}]\n\
         \x20 - name: payments\n    roles: [{name: payments-team, groups: [payments], permissions: [read, sync]}]\n\
         apps:\n  - name: web\n    project: frontend\n    path: apps/web\n    destination: {namespace: gitops-demo}\n\
         \x20 - name: web-config\n    project: frontend\n    path: apps/web-config\n    destination: {namespace: gitops-demo}\n\
         \x20 - name: pay\n    project: payments\n    path: apps/pay\n    destination: {namespace: payments}\n",
    );
    repo.write("apps/web/deploy.yaml", GITOPS_DEMO_DEPLOY);
    repo.write(
        "apps/web/bundle.yaml",
        "apiVersion: v1\nkind: List\nitems:\n  - apiVersion: v1\n    kind: ConfigMap\n    metadata: {name: web-settings}\n    data: {mode: fast}\n\
         \x20 - apiVersion: v1\n    kind: Secret\n    metadata: {name: web-api-key}\n    stringData: {key: list-secret-value}\n",
    );
    repo.write(
        "apps/web-config/kustomization.yaml",
        "resources: [settings.yaml]\nsecretGenerator:\n  - name: db\n    envs: [db.env]\n",
    );
    repo.write("apps/web-config/settings.yaml", &configmap("web-flags", "on"));
    repo.write("apps/web-config/db.env", "PASSWORD=generator-secret-value\n");
    repo.write("apps/pay/deploy.yaml", &deployment("pay", "nginx:1.27"));
    let commit = repo.commit("three apps in two projects");
    (repo, commit)
}

pub fn gitops_demo_repo() -> (Repo, String) {
    let repo = Repo::new();
    repo.write("gitgate.yaml", "apps:\n  - name: web\n    path: apps/web\n    destination: {namespace: gitops-demo}\n");
    repo.write("apps/web/deploy.yaml", GITOPS_DEMO_DEPLOY);
    let commit = repo.commit("web: two replicas of nginx 1.27");
    (repo, commit)
}

/// `examples/fleet` of this crate: the example fleet repository.
pub fn example_fleet_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples/fleet")
}

/// A real Git repository holding a copy of `examples/fleet`, committed.
pub fn example_fleet_repo() -> (Repo, String) {
    let repo = Repo::new();
    repo.copy_dir(&example_fleet_dir());
    let commit = repo.commit("the example fleet");
    (repo, commit)
}

/// An ed25519 SSH key made by `ssh-keygen` in `dir`: its private key file
/// and its public line (for an `allowed_signers` file).
pub fn keygen(dir: &Path, name: &str) -> (PathBuf, String) {
    let key = dir.join(name);
    let st = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", name, "-f"])
        .arg(&key)
        .status()
        .unwrap();
    assert!(st.success());
    let public = std::fs::read_to_string(key.with_extension("pub")).unwrap();
    (key, public.trim().to_string())
}
