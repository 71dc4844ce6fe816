//! Helm charts, through a `helm` binary on PATH (`helm template`). The
//! chart and its values files are copied out of the commit's tree into a
//! private temp directory (helm reads files); the output is parsed like any
//! other manifest stream. A missing `helm` is an error naming the app.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use super::config::App;
use super::{RenderError, yaml};
use crate::source::scratch::ScratchDir;
use crate::source::{RepoPath, TreeReader};

/// The default helm binary (`$GITGATE_HELM`, else `helm` on PATH).
pub fn default_binary() -> PathBuf {
    std::env::var_os("GITGATE_HELM").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("helm"))
}

/// Renders the chart at `app.path` with the app's values files, using the
/// helm binary `bin`.
pub fn template(tree: &TreeReader, app: &App, bin: &Path) -> Result<Vec<(Value, RepoPath)>, RenderError> {
    let fail = |reason: String| RenderError::Helm { app: app.name.clone(), reason };
    match Command::new(bin).arg("version").arg("--short").output() {
        Ok(o) if o.status.success() => {}
        Ok(o) => {
            return Err(fail(format!(
                "`{} version` failed: {}",
                bin.display(),
                String::from_utf8_lossy(&o.stderr).trim()
            )));
        }
        Err(e) if bin.components().count() == 1 && e.kind() == std::io::ErrorKind::NotFound => {
            return Err(fail(format!(
                "the chart at {} needs a `{}` binary, and none was found on PATH (install helm where gitgate \
                 runs, e.g. in an image derived from gitgate's, or set GITGATE_HELM to its path)",
                app.path,
                bin.display()
            )));
        }
        Err(e) => {
            return Err(fail(format!(
                "the chart at {} needs a `helm` binary, and {} could not be run: {e}",
                app.path,
                bin.display()
            )));
        }
    }
    let work = ScratchDir::new("helm").map_err(|e| fail(format!("failed to create a temp dir: {e}")))?;
    let chart_dir = work.path().join("chart");
    for file in tree.walk(&app.path)? {
        let rel = file.as_str().strip_prefix(app.path.as_str()).unwrap_or(file.as_str()).trim_start_matches('/');
        write_file(&chart_dir.join(rel), &tree.read(&file)?)
            .map_err(|e| fail(format!("failed to stage {file}: {e}")))?;
    }
    let mut cmd = Command::new(bin);
    let release = app.helm.release_name.clone().unwrap_or_else(|| app.name.clone());
    cmd.arg("template").arg(&release).arg(&chart_dir);
    if !app.destination.namespace.is_empty() {
        cmd.arg("--namespace").arg(&app.destination.namespace);
    }
    for (i, vf) in app.helm.value_files.iter().enumerate() {
        let path = app.path.join(vf)?;
        let staged = work.path().join(format!("values-{i}.yaml"));
        write_file(&staged, &tree.read(&path)?).map_err(|e| fail(format!("failed to stage {path}: {e}")))?;
        cmd.arg("--values").arg(&staged);
    }
    let out = cmd.output().map_err(|e| fail(format!("failed to run helm: {e}")))?;
    if !out.status.success() {
        return Err(fail(format!("helm template failed: {}", String::from_utf8_lossy(&out.stderr).trim())));
    }
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut objects = Vec::new();
    // Each document is preceded by `# Source: <chart>/<template path>`.
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

fn write_file(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(path, bytes)
}
