//! Helm charts with per-environment values files, rendered by a real Helm
//! engine: Helm v4's C library (libhelm_c, from PyPI's helm-python-sdk)
//! behind `tests/golden/helm/helm-shim.py`, a `helm template` command line.
//! Skips loudly when the SDK is not installed (`pip install helm-python-sdk`).

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

// --- hostile input: what Git says must not steer helm or read past the app

/// A value that stands in for gitgate's secrets in its environment.
const CANARY: &str = "gg-canary-7d1f5e0b9c";

/// `gitgate render -o json` of `repo` with `GITGATE_HELM=helm` and
/// secret-looking variables in gitgate's environment (as a pod has them).
/// Returns (success, stdout, stderr).
fn render_with_secrets_in_env(repo: &Repo, helm: &std::path::Path) -> (bool, String, String) {
    let out = reap::output(
        Command::new(env!("CARGO_BIN_EXE_gitgate"))
            .args(["render", "--repo", &repo.url(), "-o", "json"])
            .env("GITGATE_HELM", helm)
            .env("VAULT_TOKEN", format!("hvs.{CANARY}"))
            .env("GITGATE_WEBHOOK_SECRET", CANARY)
            .env("KUBECONFIG", format!("/var/run/{CANARY}/kubeconfig"))
            .env("AGE_IDENTITY", format!("AGE-SECRET-KEY-{CANARY}")),
    )
    .expect("gitgate runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

const LEAKY_TEMPLATE: &str = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}\ndata:\n  leak: {{ .Values.leak | default \"\" | quote }}\n";

/// Helm argument injection through a release name from Git: with
/// `releaseName: "--set-file=leak=/proc/self/environ"` helm took the name
/// for a flag and rendered its own environment — inherited from gitgate:
/// VAULT_TOKEN, tokens, the age identity — into a ConfigMap. Now the name is
/// refused at config validation, naming the file, the app and the field, and
/// nothing of the environment shows anywhere.
#[test]
fn helm_argument_injection_through_the_release_name_is_refused_and_leaks_no_environment() {
    let Some(helm) = shim() else { return };
    let repo = Repo::new();
    repo.write(
        "gitgate.yaml",
        "apps:\n  - name: web\n    path: chart\n    destination: {namespace: web}\n    helm: {releaseName: \"--set-file=leak=/proc/self/environ\"}\n",
    );
    repo.write("chart/Chart.yaml", "apiVersion: v2\nname: web\nversion: 0.1.0\n");
    repo.write("chart/templates/cm.yaml", LEAKY_TEMPLATE);
    repo.commit("a release name that is a flag");
    let (ok, out, err) = render_with_secrets_in_env(&repo, &helm);
    assert!(!ok, "rendered:\n{out}");
    assert!(err.contains("gitgate.yaml:2") && err.contains("app \"web\"") && err.contains("helm.releaseName"), "{err}");
    assert!(!out.contains(CANARY) && !err.contains(CANARY), "the environment leaked:\n{out}\n{err}");

    // A proper name renders, and the chart sees nothing of the environment.
    repo.write(
        "gitgate.yaml",
        "apps:\n  - name: web\n    path: chart\n    destination: {namespace: web}\n    helm: {releaseName: web-main}\n",
    );
    repo.commit("a proper release name");
    let (ok, out, err) = render_with_secrets_in_env(&repo, &helm);
    assert!(ok, "{err}");
    let doc: serde_json::Value = serde_json::from_str(&out).unwrap();
    let cm = &doc["apps"][0]["objects"][0];
    assert_eq!(cm["name"], "web-main");
    assert_eq!(cm["manifest"]["data"]["leak"], "");
    assert!(!out.contains(CANARY), "{out}");
}

/// The same class, every field and shape: release names that are flags,
/// hold spaces or `=`, or break helm's rules (DNS-1123, at most 53
/// characters) are refused at config validation; so are values files that
/// look like flags. The message names the file and line, the app and the
/// field.
#[test]
fn helm_argument_injection_in_any_field_is_refused_at_config_validation() {
    let too_long = "a".repeat(54);
    let cases: Vec<(String, &str)> = vec![
        ("releaseName: \"-f\"".into(), "helm.releaseName"),
        ("releaseName: \"--post-renderer=/bin/sh\"".into(), "helm.releaseName"),
        ("releaseName: \"web --set-file=leak=/proc/self/environ\"".into(), "helm.releaseName"),
        ("releaseName: \"Web\"".into(), "helm.releaseName"),
        ("releaseName: \"web.\"".into(), "helm.releaseName"),
        ("releaseName: \"\"".into(), "helm.releaseName"),
        (format!("releaseName: {too_long}"), "helm.releaseName"),
        ("valueFiles: [\"--set-file=leak=/proc/self/environ\"]".into(), "helm.valueFiles[0]"),
        ("valueFiles: [ok.yaml, \"sub/-f\"]".into(), "helm.valueFiles[1]"),
    ];
    for (helm, field) in cases {
        let repo = Repo::new();
        repo.write(
            "gitgate.yaml",
            &format!("apps:\n  - name: ok\n    path: chart\n  - name: web\n    path: chart\n    helm: {{{helm}}}\n"),
        );
        repo.write("chart/Chart.yaml", "apiVersion: v2\nname: web\nversion: 0.1.0\n");
        let c = repo.commit("hostile helm field");
        let (_t, cache) = cache_dir();
        let src = GitSource::open(&repo.url(), &cache).unwrap();
        src.fetch().unwrap();
        // No helm is needed: validation refuses before anything runs.
        let r = Renderer::new(RenderOptions { helm: "/nonexistent/helm".into(), ..Default::default() });
        let msg = gitgate::error_chain(&r.desired(&src.repo(), oid(&c)).unwrap_err());
        assert!(msg.starts_with("gitgate.yaml:4: app \"web\": ") && msg.contains(field), "{helm}: {msg}");
    }
    // An app name is a DNS label of up to 63 characters, helm's release names
    // stop at 53: a chart app with a longer name and no releaseName is refused
    // at render time, saying to set one.
    let long_app = "w".repeat(60);
    let repo = Repo::new();
    repo.write(
        "gitgate.yaml",
        &format!("apps:\n  - name: {long_app}\n    path: chart\n    destination: {{namespace: web}}\n"),
    );
    repo.write("chart/Chart.yaml", "apiVersion: v2\nname: web\nversion: 0.1.0\n");
    let c = repo.commit("long app name");
    let (_t, cache) = cache_dir();
    let src = GitSource::open(&repo.url(), &cache).unwrap();
    src.fetch().unwrap();
    let r = Renderer::new(RenderOptions { helm: "/nonexistent/helm".into(), ..Default::default() });
    let msg = gitgate::error_chain(&r.desired(&src.repo(), oid(&c)).unwrap_err());
    assert!(msg.contains(&long_app) && msg.contains("53") && msg.contains("helm.releaseName"), "{msg}");
}

/// What helm is given to run with, seen from inside: a probe stands in for
/// the helm binary and renders its environment and arguments into a
/// ConfigMap. gitgate's environment carries secret-looking variables; helm
/// must get none of them (no VAULT_TOKEN, GITGATE_*, KUBECONFIG, tokens),
/// only PATH and homes, caches and configs in a scratch directory of its
/// own, empty repository and registry configs (nothing to fetch from), and
/// the release and chart after `--`.
#[test]
fn helm_runs_with_an_empty_environment_and_nothing_to_fetch_with() {
    use base64::Engine as _;
    let dir = tempfile::tempdir().unwrap();
    let probe = dir.path().join("helm");
    std::fs::write(
        &probe,
        "#!/bin/sh\n\
         if [ \"$1\" = version ]; then echo v4.0.0-probe; exit 0; fi\n\
         repo_config=\"\"; registry_config=\"\"; prev=\"\"\n\
         for a in \"$@\"; do\n\
           [ \"$prev\" = --repository-config ] && repo_config=$(cat \"$a\" 2>/dev/null | wc -c)\n\
           [ \"$prev\" = --registry-config ] && registry_config=$(cat \"$a\" 2>/dev/null | wc -c)\n\
           prev=\"$a\"\n\
         done\n\
         printf 'apiVersion: v1\\nkind: ConfigMap\\nmetadata:\\n  name: probe\\ndata:\\n  env: \"%s\"\\n  args: \"%s\"\\n  repoConfigBytes: \"%s\"\\n  registryConfigBytes: \"%s\"\\n' \
           \"$(env | base64 | tr -d '\\n')\" \"$(printf '%s\\n' \"$@\" | base64 | tr -d '\\n')\" \"$repo_config\" \"$registry_config\"\n",
    )
    .unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&probe, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let repo = Repo::new();
    repo.write(
        "gitgate.yaml",
        "apps:\n  - name: web\n    path: chart\n    destination: {namespace: web}\n    helm: {valueFiles: [values-prod.yaml]}\n",
    );
    repo.write("chart/Chart.yaml", "apiVersion: v2\nname: web\nversion: 0.1.0\n");
    repo.write("chart/values-prod.yaml", "replicas: 3\n");
    repo.commit("chart");
    let (ok, out, err) = render_with_secrets_in_env(&repo, &probe);
    assert!(ok, "{err}");
    assert!(!out.contains(CANARY) && !err.contains(CANARY), "{out}\n{err}");
    let doc: serde_json::Value = serde_json::from_str(&out).unwrap();
    let data = &doc["apps"][0]["objects"][0]["manifest"]["data"];
    let decode = |k: &str| {
        String::from_utf8(base64::engine::general_purpose::STANDARD.decode(data[k].as_str().unwrap()).unwrap()).unwrap()
    };
    let env: std::collections::BTreeMap<String, String> =
        decode("env").lines().filter_map(|l| l.split_once('=').map(|(k, v)| (k.to_string(), v.to_string()))).collect();
    assert!(!decode("env").contains(CANARY), "{env:?}");
    // What the shell running the probe adds itself.
    let shell = ["PWD", "SHLVL", "_", "OLDPWD"];
    for k in env.keys() {
        let allowed = k == "PATH"
            || k == "HOME"
            || k == "TMPDIR"
            || k == "KUBECONFIG"
            || k.starts_with("XDG_")
            || k.starts_with("HELM_");
        assert!(allowed || shell.contains(&k.as_str()), "helm inherited {k}={}", env[k]);
    }
    assert_eq!(env.get("PATH"), std::env::var("PATH").ok().as_ref(), "PATH is kept");
    let home = env.get("HOME").expect("a HOME");
    assert_ne!(Some(home), std::env::var("HOME").ok().as_ref(), "not gitgate's HOME");
    for k in [
        "XDG_CACHE_HOME",
        "XDG_CONFIG_HOME",
        "XDG_DATA_HOME",
        "HELM_CACHE_HOME",
        "HELM_CONFIG_HOME",
        "HELM_DATA_HOME",
        "HELM_PLUGINS",
        "HELM_REPOSITORY_CONFIG",
        "HELM_REGISTRY_CONFIG",
        "KUBECONFIG",
    ] {
        let v = env.get(k).unwrap_or_else(|| panic!("{k} is set: {env:?}"));
        assert!(v.starts_with(home.as_str()), "{k}={v} lies in helm's scratch home {home}");
    }
    let args: Vec<String> = decode("args").lines().map(str::to_string).collect();
    assert_eq!(args[0], "template");
    let n = args.len();
    assert!(n >= 3 && args[n - 3] == "--" && args[n - 2] == "web", "release and chart after `--`: {args:?}");
    assert!(args[..n - 3].iter().all(|a| a != "--"), "{args:?}");
    assert!(args.contains(&"--repository-config".to_string()) && args.contains(&"--registry-config".to_string()));
    assert_eq!(data["repoConfigBytes"].as_str().map(str::trim), Some("0"), "an empty repository config");
    assert_eq!(data["registryConfigBytes"].as_str().map(str::trim), Some("0"), "an empty registry config");
}

/// CVE-2022-24348 class (Argo CD: values files reached by path traversal):
/// a values file path from Git that climbs out of the repository, or is
/// absolute, is refused at config validation, naming the app and the field.
/// `..` inside the repository stays allowed (see
/// a_chart_renders_with_per_environment_values_files).
#[test]
fn cve_2022_24348_values_files_that_leave_the_repository_are_refused() {
    for vf in ["../../../etc/passwd", "/etc/passwd", "../../../proc/self/environ"] {
        let repo = Repo::new();
        repo.write(
            "gitgate.yaml",
            &format!("apps:\n  - name: web\n    path: charts/web\n    helm: {{valueFiles: [values.yaml, \"{vf}\"]}}\n"),
        );
        repo.write("charts/web/Chart.yaml", "apiVersion: v2\nname: web\nversion: 0.1.0\n");
        repo.write("charts/web/values.yaml", "a: 1\n");
        let c = repo.commit("traversal");
        let (_t, cache) = cache_dir();
        let src = GitSource::open(&repo.url(), &cache).unwrap();
        src.fetch().unwrap();
        let r = Renderer::new(RenderOptions { helm: "/nonexistent/helm".into(), ..Default::default() });
        let msg = gitgate::error_chain(&r.desired(&src.repo(), oid(&c)).unwrap_err());
        assert!(msg.starts_with("gitgate.yaml:2: app \"web\": helm.valueFiles[1]") && msg.contains(vf), "{vf}: {msg}");
    }
}

/// CVE-2022-31036 class (Argo CD: symlinked values files leak files from
/// outside the app): a chart's values file, template or any other file that
/// is a symlink resolving outside the chart — to another chart's values — is
/// refused before helm runs, naming the link and where it leads; so is a
/// values file named outside the chart whose symlink leaves the directory it
/// was named in, and a symlinked directory in the chart.
#[test]
fn cve_2022_31036_chart_files_symlinked_out_of_the_chart_are_refused() {
    // (case, the link, what it points at, where that resolves)
    let cases = [
        ("values file", "charts/web/values-prod.yaml", "../db/values-prod.yaml", "charts/db/values-prod.yaml"),
        (
            "template",
            "charts/web/templates/stolen.yaml",
            "../../db/templates/secret.yaml",
            "charts/db/templates/secret.yaml",
        ),
        (
            "values file named outside the chart",
            "env/shared.yaml",
            "../charts/db/values-prod.yaml",
            "charts/db/values-prod.yaml",
        ),
        ("symlinked directory", "charts/web/templates/db", "../../db/templates", ""),
    ];
    for (what, link, points_at, target) in cases {
        let repo = Repo::new();
        let vf =
            if what == "values file named outside the chart" { "../../env/shared.yaml" } else { "values-prod.yaml" };
        repo.write(
            "gitgate.yaml",
            &format!(
                "apps:\n  - name: web\n    path: charts/web\n    destination: {{namespace: web}}\n    helm: {{valueFiles: [{vf}]}}\n"
            ),
        );
        repo.write("charts/web/Chart.yaml", "apiVersion: v2\nname: web\nversion: 0.1.0\n");
        repo.write("charts/web/templates/cm.yaml", LEAKY_TEMPLATE);
        if what != "values file" {
            repo.write("charts/web/values-prod.yaml", "a: 1\n");
        }
        repo.write("charts/db/Chart.yaml", "apiVersion: v2\nname: db\nversion: 0.1.0\n");
        repo.write("charts/db/values-prod.yaml", &format!("password: {CANARY}\n"));
        repo.write(
            "charts/db/templates/secret.yaml",
            &format!("apiVersion: v1\nkind: Secret\nmetadata: {{name: db}}\nstringData: {{password: {CANARY}}}\n"),
        );
        repo.symlink(link, points_at);
        let c = repo.commit(what);
        let (_t, cache) = cache_dir();
        let src = GitSource::open(&repo.url(), &cache).unwrap();
        src.fetch().unwrap();
        // Refused before helm would run: a helm that does not exist is fine.
        let r = Renderer::new(RenderOptions { helm: "/nonexistent/helm".into(), ..Default::default() });
        let msg = gitgate::error_chain(&r.desired(&src.repo(), oid(&c)).unwrap_err());
        assert!(msg.contains("app \"web\"") && msg.contains(link) && msg.contains(target), "{what}: {msg}");
        assert!(!msg.contains("could not be run"), "{what}: refused before helm runs: {msg}");
    }

    // A symlink that stays inside the chart is followed, as before.
    let Some(helm) = shim() else { return };
    let repo = Repo::new();
    repo.write(
        "gitgate.yaml",
        "apps:\n  - name: web\n    path: charts/web\n    destination: {namespace: web}\n    helm: {valueFiles: [values-prod.yaml]}\n",
    );
    repo.write("charts/web/Chart.yaml", "apiVersion: v2\nname: web\nversion: 0.1.0\n");
    repo.write("charts/web/templates/cm.yaml", LEAKY_TEMPLATE);
    repo.write("charts/web/envs/prod.yaml", "leak: from-the-chart\n");
    repo.symlink("charts/web/values-prod.yaml", "envs/prod.yaml");
    let c = repo.commit("in-chart symlink");
    let (_t, cache) = cache_dir();
    let src = GitSource::open(&repo.url(), &cache).unwrap();
    src.fetch().unwrap();
    let r = Renderer::new(RenderOptions { helm, ..Default::default() });
    let d = r.desired(&src.repo(), oid(&c)).unwrap_or_else(|e| panic!("{}", gitgate::error_chain(&e)));
    assert_eq!(d.get("", "ConfigMap", "web", "web").unwrap().value()["data"]["leak"], "from-the-chart");
}

/// helm is never asked to fetch: a chart whose `Chart.yaml` declares a
/// dependency that is not vendored in its `charts/` is refused before helm
/// runs, saying to vendor it; vendored, it renders with the real engine.
#[test]
fn a_dependency_that_is_not_vendored_is_refused_rather_than_fetched() {
    let repo = Repo::new();
    repo.write("gitgate.yaml", "apps:\n  - name: web\n    path: chart\n    destination: {namespace: web}\n");
    repo.write(
        "chart/Chart.yaml",
        "apiVersion: v2\nname: web\nversion: 0.1.0\ndependencies:\n  - name: cache\n    version: 1.0.0\n    repository: https://charts.example.invalid\n",
    );
    repo.write("chart/templates/cm.yaml", LEAKY_TEMPLATE);
    let c = repo.commit("an unvendored dependency");
    let (_t, cache) = cache_dir();
    let src = GitSource::open(&repo.url(), &cache).unwrap();
    src.fetch().unwrap();
    let r = Renderer::new(RenderOptions { helm: "/nonexistent/helm".into(), ..Default::default() });
    let msg = gitgate::error_chain(&r.desired(&src.repo(), oid(&c)).unwrap_err());
    assert!(
        msg.contains("app \"web\"") && msg.contains("\"cache\"") && msg.contains("not vendored in chart/charts/"),
        "{msg}"
    );

    let Some(helm) = shim() else { return };
    repo.write("chart/charts/cache/Chart.yaml", "apiVersion: v2\nname: cache\nversion: 1.0.0\n");
    repo.write(
        "chart/charts/cache/templates/cm.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: cache}\ndata: {from: subchart}\n",
    );
    let c = repo.commit("vendored");
    src.fetch().unwrap();
    let r = Renderer::new(RenderOptions { helm, ..Default::default() });
    let d = r.desired(&src.repo(), oid(&c)).unwrap_or_else(|e| panic!("{}", gitgate::error_chain(&e)));
    assert_eq!(d.get("", "ConfigMap", "web", "cache").unwrap().value()["data"]["from"], "subchart");
    assert!(d.get("", "ConfigMap", "web", "web").is_some());
}
