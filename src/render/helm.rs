//! Helm charts, through a `helm` binary on PATH (`helm template`). The
//! chart and its values files are copied out of the commit's tree into a
//! private temp directory (helm reads files); the output is parsed like any
//! other manifest stream. A missing `helm` is an error naming the app.
//!
//! Nothing from Git steers helm past rendering the chart:
//! - the release name and namespace are checked (helm's release-name rule,
//!   a DNS-1123 label) and given after `--`, so none reads as a flag
//!   (`releaseName: "--set-file=x=/proc/self/environ"` would make helm read
//!   gitgate's files); values files reach helm as `values-N.yaml`;
//! - every file staged resolves, through in-tree symlinks, inside the chart
//!   (values files named outside it: inside the directory they are named in),
//!   see [`super::confine`];
//! - helm runs with an empty environment: PATH, and HOME, XDG and HELM_*
//!   directories, KUBECONFIG, the repository and registry configs all in the
//!   scratch directory (empty: nothing to fetch from, no cluster to ask), so
//!   none of gitgate's secrets (VAULT_TOKEN, GITGATE_*, tokens) is inherited.
//!   Chart dependencies must be vendored in `charts/`.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::Value;

use super::config::{self, App};
use super::{RenderError, confine, yaml};
use crate::source::scratch::ScratchDir;
use crate::source::{RepoPath, TreeReader};

/// The default helm binary (`$GITGATE_HELM`, else `helm` on PATH).
pub fn default_binary() -> PathBuf {
    std::env::var_os("GITGATE_HELM").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("helm"))
}

/// PATH when gitgate has none.
const DEFAULT_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

/// Renders the chart at `app.path` with the app's values files, using the
/// helm binary `bin`.
pub fn template(tree: &TreeReader, app: &App, bin: &Path) -> Result<Vec<(Value, RepoPath)>, RenderError> {
    let fail = helm_error(app);
    let release = release_name(app).map_err(&fail)?;
    let namespace = &app.destination.namespace;
    if !namespace.is_empty() && !config::is_dns_label(namespace) {
        return Err(fail(format!(
            "destination.namespace {namespace:?} (declared at {}) is not a DNS-1123 label",
            app.declared_at
        )));
    }
    let work = ScratchDir::new("helm").map_err(|e| fail(format!("failed to create a temp dir: {e}")))?;
    // Stage the chart and its values first: a file that leads out of the
    // chart is refused before helm runs.
    let (chart_dir, values) = stage(tree, app, work.path())?;
    let env = Sandbox::new(work.path()).map_err(|e| fail(format!("failed to prepare helm's scratch home: {e}")))?;
    check_binary(&env, bin, app).map_err(&fail)?;

    let mut cmd = env.command(bin);
    cmd.arg("template");
    if !namespace.is_empty() {
        cmd.arg("--namespace").arg(namespace);
    }
    for v in &values {
        cmd.arg("--values").arg(v);
    }
    cmd.arg("--repository-config").arg(&env.repository_config);
    cmd.arg("--registry-config").arg(&env.registry_config);
    cmd.arg("--repository-cache").arg(&env.repository_cache);
    // Positional arguments after `--`: never read as flags.
    cmd.arg("--").arg(&release).arg(&chart_dir);
    let out = cmd.output().map_err(|e| fail(format!("failed to run helm: {e}")))?;
    if !out.status.success() {
        return Err(fail(format!("helm template failed: {}", String::from_utf8_lossy(&out.stderr).trim())));
    }
    parse_output(app, &String::from_utf8_lossy(&out.stdout))
}

/// A helm error naming `app`.
fn helm_error(app: &App) -> impl Fn(String) -> RenderError + '_ {
    |reason: String| RenderError::Helm { app: app.name.clone(), reason }
}

/// Copies the chart (`chart/`) and the app's values files (`values-N.yaml`)
/// into `work`, each read confined (see [`super::confine`]); checks that
/// the chart's dependencies are vendored.
fn stage(tree: &TreeReader, app: &App, work: &Path) -> Result<(PathBuf, Vec<PathBuf>), RenderError> {
    let fail = helm_error(app);
    let chart_root = confine::canonical_dir(tree, &app.path)?;
    let chart_dir = work.join("chart");
    for file in tree.walk(&chart_root)? {
        let rel = file.as_str().strip_prefix(chart_root.as_str()).unwrap_or(file.as_str()).trim_start_matches('/');
        let bytes = confine::read(tree, &file, &chart_root, confine::CHART)?;
        write_file(&chart_dir.join(rel), &bytes).map_err(|e| fail(format!("failed to stage {file}: {e}")))?;
    }
    vendored_dependencies(tree, &chart_root).map_err(&fail)?;
    let mut values = Vec::with_capacity(app.helm.value_files.len());
    for (i, vf) in app.helm.value_files.iter().enumerate() {
        let path = app.path.join(vf)?;
        let (root, rule) = if path.starts_with(&app.path) {
            (chart_root.clone(), confine::CHART)
        } else {
            (path.parent(), confine::VALUES)
        };
        let staged = work.join(format!("values-{i}.yaml"));
        write_file(&staged, &confine::read(tree, &path, &root, rule)?)
            .map_err(|e| fail(format!("failed to stage {path}: {e}")))?;
        values.push(staged);
    }
    Ok((chart_dir, values))
}

/// `helm version` runs: else why not, naming the chart and the binary.
fn check_binary(env: &Sandbox, bin: &Path, app: &App) -> Result<(), String> {
    match env.command(bin).arg("version").arg("--short").output() {
        Ok(o) if o.status.success() => Ok(()),
        Ok(o) => Err(format!("`{} version` failed: {}", bin.display(), String::from_utf8_lossy(&o.stderr).trim())),
        Err(e) if bin.components().count() == 1 && e.kind() == std::io::ErrorKind::NotFound => Err(format!(
            "the chart at {} needs a `{}` binary, and none was found on PATH (install helm where gitgate \
             runs, e.g. in an image derived from gitgate's, or set GITGATE_HELM to its path)",
            app.path,
            bin.display()
        )),
        Err(e) => {
            Err(format!("the chart at {} needs a `helm` binary, and {} could not be run: {e}", app.path, bin.display()))
        }
    }
}

/// `helm template`'s output as manifests, each with the template it came
/// from: every document is preceded by `# Source: <chart>/<template path>`.
fn parse_output(app: &App, text: &str) -> Result<Vec<(Value, RepoPath)>, RenderError> {
    let mut objects = Vec::new();
    for chunk in text.split("\n---") {
        let source = chunk
            .lines()
            .find_map(|l| l.strip_prefix("# Source: "))
            .and_then(|s| s.split_once('/').map(|(_, rest)| rest.to_string()))
            .and_then(|rest| app.path.join(&rest).ok())
            .unwrap_or_else(|| app.path.clone());
        for doc in yaml::parse_documents(source.as_str(), chunk.as_bytes())? {
            objects.push((doc, source.clone()));
        }
    }
    Ok(objects)
}

/// The release name: `helm.releaseName` (checked at config validation),
/// else the app's name — a DNS label of up to 63 characters, where helm
/// allows 53.
fn release_name(app: &App) -> Result<String, String> {
    match &app.helm.release_name {
        Some(r) if config::is_helm_release_name(r) => Ok(r.clone()),
        Some(r) => Err(format!(
            "helm.releaseName {r:?} (declared at {}) is not a helm release name ({})",
            app.declared_at,
            config::HELM_RELEASE_NAME_RULE
        )),
        None if config::is_helm_release_name(&app.name) => Ok(app.name.clone()),
        None => Err(format!(
            "the app's name {:?} (declared at {}) is the release name, and helm allows at most 53 characters: \
             set helm.releaseName",
            app.name, app.declared_at
        )),
    }
}

#[derive(serde::Deserialize)]
struct ChartMeta {
    #[serde(default)]
    dependencies: Vec<ChartDependency>,
}

#[derive(serde::Deserialize)]
struct ChartDependency {
    name: String,
}

/// Each dependency `Chart.yaml` declares is vendored in the chart's
/// `charts/` (a directory `NAME` or an archive `NAME-*.tgz`): gitgate never
/// lets helm fetch one.
fn vendored_dependencies(tree: &TreeReader, chart: &RepoPath) -> Result<(), String> {
    let file = chart.child("Chart.yaml");
    let meta: ChartMeta = match tree
        .read(&file)
        .map_err(|e| e.to_string())
        .and_then(|b| yaml::parse_one::<ChartMeta>(file.as_str(), &b).map_err(|e| e.to_string()))
    {
        Ok(m) => m,
        // helm says what is wrong with a Chart.yaml it cannot read.
        Err(_) => return Ok(()),
    };
    if meta.dependencies.is_empty() {
        return Ok(());
    }
    let charts = chart.child("charts");
    let vendored: Vec<String> = match tree.resolve_untracked(&charts) {
        Ok(Some(n)) if n.kind == crate::source::NodeKind::Dir => {
            tree.list(&charts).map_err(|e| e.to_string())?.into_iter().map(|(name, _)| name).collect()
        }
        _ => Vec::new(),
    };
    for d in &meta.dependencies {
        let found = vendored.iter().any(|v| {
            *v == d.name || (v.ends_with(".tgz") && v.strip_prefix(d.name.as_str()).is_some_and(|r| r.starts_with('-')))
        });
        if !found {
            return Err(format!(
                "{file} depends on chart {:?}, which is not vendored in {charts}/ (gitgate never lets helm fetch a \
                 dependency: run `helm dependency build` and commit the result)",
                d.name
            ));
        }
    }
    Ok(())
}

/// helm's whole environment, inside the scratch directory.
struct Sandbox {
    dir: PathBuf,
    vars: Vec<(&'static str, OsString)>,
    repository_config: PathBuf,
    registry_config: PathBuf,
    repository_cache: PathBuf,
}

impl Sandbox {
    fn new(work: &Path) -> std::io::Result<Sandbox> {
        let home = work.join("home");
        let path = |rel: &str| home.join(rel);
        for d in [".cache/helm/repository", ".config/helm", ".local/share/helm/plugins", "tmp"] {
            std::fs::create_dir_all(path(d))?;
        }
        let repository_config = path(".config/helm/repositories.yaml");
        let registry_config = path(".config/helm/registry/config.json");
        let kubeconfig = path(".kube/config");
        for f in [&repository_config, &registry_config, &kubeconfig] {
            write_file(f, b"")?;
        }
        let repository_cache = path(".cache/helm/repository");
        let vars: Vec<(&'static str, OsString)> = vec![
            ("PATH", std::env::var_os("PATH").unwrap_or_else(|| DEFAULT_PATH.into())),
            ("HOME", home.clone().into()),
            ("TMPDIR", path("tmp").into()),
            ("XDG_CACHE_HOME", path(".cache").into()),
            ("XDG_CONFIG_HOME", path(".config").into()),
            ("XDG_DATA_HOME", path(".local/share").into()),
            ("HELM_CACHE_HOME", path(".cache/helm").into()),
            ("HELM_CONFIG_HOME", path(".config/helm").into()),
            ("HELM_DATA_HOME", path(".local/share/helm").into()),
            ("HELM_PLUGINS", path(".local/share/helm/plugins").into()),
            ("HELM_REPOSITORY_CONFIG", repository_config.clone().into()),
            ("HELM_REPOSITORY_CACHE", repository_cache.clone().into()),
            ("HELM_REGISTRY_CONFIG", registry_config.clone().into()),
            ("KUBECONFIG", kubeconfig.into()),
        ];
        Ok(Sandbox { dir: work.to_path_buf(), vars, repository_config, registry_config, repository_cache })
    }

    /// `bin` with nothing of gitgate's environment, run in the scratch dir.
    fn command(&self, bin: &Path) -> Command {
        // A relative path with a directory part stays relative to gitgate's
        // working directory, not the scratch one helm runs in.
        let bin = match std::env::current_dir() {
            Ok(cwd) if bin.is_relative() && bin.components().count() > 1 => cwd.join(bin),
            _ => bin.to_path_buf(),
        };
        let mut cmd = Command::new(bin);
        cmd.env_clear().envs(self.vars.iter().map(|(k, v)| (k, v))).current_dir(&self.dir).stdin(Stdio::null());
        cmd
    }
}

fn write_file(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(path, bytes)
}
