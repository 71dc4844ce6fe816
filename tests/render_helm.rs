//! Helm charts with per-environment values files, rendered by a real Helm
//! engine: Helm v4's C library (libhelm_c, from PyPI's helm-python-sdk)
//! behind `tests/golden/helm/helm-shim.py`, a `helm template` command line.
//! Skips loudly when the SDK is not installed (`pip install helm-python-sdk`).

#[path = "source_common.rs"]
mod support;

use std::path::PathBuf;
use std::process::Command;

use gitgate::render::{RenderOptions, Renderer};
use gitgate::source::GitSource;
use support::*;

fn shim() -> Option<PathBuf> {
    let ok = Command::new("python3").args(["-c", "import helm_python"]).output().is_ok_and(|o| o.status.success());
    if !ok {
        eprintln!(
            "SKIPPED: helm-python-sdk is not installed (pip install helm-python-sdk); Helm rendering is not exercised"
        );
        return None;
    }
    Some(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden/helm/helm-shim.py"))
}

#[test]
fn a_chart_renders_with_per_environment_values_files() {
    let Some(helm) = shim() else { return };
    let repo = Repo::new();
    repo.write(
        "gitgate.yaml",
        "\
apps:
  - name: web-staging
    path: charts/web
    destination: {namespace: staging}
    helm: {valueFiles: [values-staging.yaml]}
  - name: web-production
    path: charts/web
    destination: {namespace: production}
    helm: {releaseName: web, valueFiles: [../../env/production.yaml]}
",
    );
    repo.write("charts/web/Chart.yaml", "apiVersion: v2\nname: web\nversion: 0.1.0\n");
    repo.write("charts/web/values.yaml", "replicas: 1\nimage: nginx:1.27\n");
    repo.write("charts/web/values-staging.yaml", "replicas: 2\n");
    repo.write("env/production.yaml", "replicas: 5\nimage: nginx:1.27.1\n");
    repo.write(
        "charts/web/templates/deployment.yaml",
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: {{ .Release.Name }}\nspec:\n  replicas: {{ .Values.replicas }}\n  selector:\n    matchLabels: {app: {{ .Release.Name }}}\n  template:\n    metadata:\n      labels: {app: {{ .Release.Name }}}\n    spec:\n      containers:\n        - name: web\n          image: {{ .Values.image }}\n",
    );
    repo.write("charts/web/templates/NOTES.txt", "Thanks for installing {{ .Release.Name }}.\n");
    let c = repo.commit("chart");
    let (_t, cache) = cache_dir();
    let src = GitSource::open(&repo.url(), &cache).unwrap();
    src.fetch().unwrap();
    let r = Renderer::new(RenderOptions { helm, ..Default::default() });
    let d = r.desired(&src.repo(), oid(&c)).unwrap_or_else(|e| panic!("{}", gitgate::error_chain(&e)));
    let staging = d.get("apps", "Deployment", "staging", "web-staging").expect("release named after the app").value();
    assert_eq!(staging["spec"]["replicas"], 2);
    assert_eq!(staging["spec"]["template"]["spec"]["containers"][0]["image"], "nginx:1.27");
    let prod_obj = d.get("apps", "Deployment", "production", "web").expect("release name from helm.releaseName");
    assert_eq!(&*prod_obj.source, "charts/web/templates/deployment.yaml");
    let prod = prod_obj.value();
    assert_eq!(prod["spec"]["replicas"], 5);
    assert_eq!(prod["spec"]["template"]["spec"]["containers"][0]["image"], "nginx:1.27.1");
    assert_eq!(d.len(), 2);
}
