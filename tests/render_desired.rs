//! Rendering real repositories into the desired set: plain YAML/JSON,
//! config validation with file and line, generators, project bounds,
//! duplicates, blame (the commit that last changed each object), caching,
//! and the YAML safety cases.

mod support;

use gitgate::render::{RenderError, RenderOptions, Renderer};
use gitgate::source::GitSource;
use support::*;

struct Fixture {
    repo: Repo,
    _cache: tempfile::TempDir,
    src: GitSource,
}

impl Fixture {
    fn new() -> Fixture {
        let repo = Repo::new();
        let (t, cache) = cache_dir();
        let src = GitSource::open(&repo.url(), &cache).unwrap();
        Fixture { repo, _cache: t, src }
    }

    fn commit(&self, msg: &str) -> gix::ObjectId {
        let c = self.repo.commit(msg);
        self.src.fetch().unwrap();
        oid(&c)
    }

    fn render(
        &self,
        r: &Renderer,
        c: gix::ObjectId,
    ) -> Result<std::sync::Arc<gitgate::render::DesiredSet>, RenderError> {
        r.desired(&self.src.repo(), c)
    }
}

const TWO_APPS: &str = "\
projects:
  - name: team-web
    destinations: [{cluster: in-cluster, namespace: \"web-*\"}]
    kinds: [\"ConfigMap\", \"apps/Deployment\", \"Service\"]
apps:
  - name: web
    project: team-web
    path: apps/web
    destination: {namespace: web-prod}
  - name: api
    path: apps/api
    destination: {namespace: api}
";

#[test]
fn renders_plain_yaml_and_json_recursively_with_namespace_defaulting() {
    let f = Fixture::new();
    f.repo.write("gitgate.yaml", TWO_APPS);
    f.repo.write(
        "apps/web/all.yaml",
        &format!("{}---\n{}", configmap("web-config", "a"), deployment("web", "nginx:1.27")),
    );
    f.repo.write(
        "apps/web/nested/deeper/svc.json",
        r#"{"apiVersion":"v1","kind":"Service","metadata":{"name":"web"},"spec":{"ports":[{"port":80}]}}"#,
    );
    f.repo.write("apps/web/README.md", "not a manifest");
    f.repo.write("apps/api/list.yaml", "apiVersion: v1\nkind: List\nitems:\n  - apiVersion: v1\n    kind: ConfigMap\n    metadata: {name: a, namespace: other}\n  - apiVersion: v1\n    kind: ConfigMap\n    metadata: {name: b}\n");
    let c = f.commit("apps");
    let r = Renderer::new(RenderOptions::default());
    let d = f.render(&r, c).unwrap();
    assert_eq!(d.commit(), c);
    assert_eq!(d.len(), 5);
    let dep = d.get("apps", "Deployment", "web-prod", "web").expect("deployment keyed by identity");
    assert_eq!(&*dep.source, "apps/web/all.yaml");
    assert_eq!(d.app_of(dep).unwrap().name, "web");
    assert!(dep.digest_string().starts_with("sha256:") && dep.digest_string().len() == 71);
    // Canonical: keys sorted, no whitespace, namespace defaulted.
    assert!(
        dep.manifest.starts_with(
            r#"{"apiVersion":"apps/v1","kind":"Deployment","metadata":{"name":"web","namespace":"web-prod"}"#
        ),
        "{}",
        dep.manifest
    );
    assert_eq!(&*d.get("", "Service", "web-prod", "web").unwrap().source, "apps/web/nested/deeper/svc.json");
    // An explicit namespace is kept; List items are expanded.
    assert!(d.get("", "ConfigMap", "other", "a").is_some());
    assert!(d.get("", "ConfigMap", "api", "b").is_some());
    // Every object of the first commit is blamed on it.
    assert!(d.objects().iter().all(|(_, o)| o.commit == c));
}

#[test]
fn blame_keeps_the_commit_of_unchanged_objects() {
    let f = Fixture::new();
    f.repo.write("gitgate.yaml", "apps:\n  - {name: web, path: apps/web, destination: {namespace: web}}\n");
    f.repo.write("apps/web/cms.yaml", &format!("{}---\n{}", configmap("one", "1"), configmap("two", "1")));
    f.repo.write("apps/web/three.yaml", &configmap("three", "1"));
    let c1 = f.commit("first");
    // Change only `two` inside the multi-document file, reformat `three`
    // without changing its content.
    f.repo.write("apps/web/cms.yaml", &format!("{}---\n{}", configmap("one", "1"), configmap("two", "2")));
    f.repo.write(
        "apps/web/three.yaml",
        "# same content, new comment\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: three}\ndata: {value: \"1\"}\n",
    );
    let c2 = f.commit("second");
    f.repo.write("README.md", "unrelated change");
    let c3 = f.commit("third");

    // Cold (nothing cached): blame walks history.
    let r = Renderer::new(RenderOptions::default());
    let d = f.render(&r, c3).unwrap();
    assert_eq!(d.get("", "ConfigMap", "web", "one").unwrap().commit, c1);
    assert_eq!(d.get("", "ConfigMap", "web", "two").unwrap().commit, c2);
    assert_eq!(d.get("", "ConfigMap", "web", "three").unwrap().commit, c1);

    // Warm (parent's set cached): the same answer.
    let r2 = Renderer::new(RenderOptions::default());
    f.render(&r2, c1).unwrap();
    f.render(&r2, c2).unwrap();
    let d2 = f.render(&r2, c3).unwrap();
    for name in ["one", "two", "three"] {
        assert_eq!(
            d2.get("", "ConfigMap", "web", name).unwrap().commit,
            d.get("", "ConfigMap", "web", name).unwrap().commit,
            "{name}"
        );
    }
}

#[test]
fn a_new_commit_re_renders_only_the_apps_it_touches() {
    let f = Fixture::new();
    f.repo.write("gitgate.yaml", TWO_APPS);
    f.repo.write("apps/web/cm.yaml", &configmap("web", "1"));
    f.repo.write("apps/api/cm.yaml", &configmap("api", "1"));
    let c1 = f.commit("first");
    let r = Renderer::new(RenderOptions::default());
    f.render(&r, c1).unwrap();
    let before = r.stats();
    assert_eq!(before.app_renders, 2);
    f.repo.write("apps/api/cm.yaml", &configmap("api", "2"));
    let c2 = f.commit("api only");
    let d = f.render(&r, c2).unwrap();
    let after = r.stats();
    assert_eq!(after.app_renders - before.app_renders, 1, "only the api app is rendered again");
    assert!(after.app_cache_hits > before.app_cache_hits);
    assert_eq!(d.get("", "ConfigMap", "api", "api").unwrap().commit, c2);
    assert_eq!(d.get("", "ConfigMap", "web-prod", "web").unwrap().commit, c1);
    // The same commit again is served from the cache.
    let again = f.render(&r, c2).unwrap();
    assert!(std::sync::Arc::ptr_eq(&d, &again));
}

#[test]
fn two_apps_declaring_one_object_is_an_error_naming_both() {
    let f = Fixture::new();
    f.repo.write("gitgate.yaml", "apps:\n  - {name: a, path: a, destination: {namespace: shared}}\n  - {name: b, path: b, destination: {namespace: shared}}\n");
    f.repo.write("a/cm.yaml", &configmap("same", "1"));
    f.repo.write("b/cm.yaml", &configmap("same", "2"));
    let c = f.commit("dup");
    let err = f.render(&Renderer::new(RenderOptions::default()), c).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, RenderError::Duplicate { .. }), "{msg}");
    assert!(
        msg.contains("\"a\"") && msg.contains("\"b\"") && msg.contains("a/cm.yaml") && msg.contains("b/cm.yaml"),
        "{msg}"
    );
}

#[test]
fn objects_outside_the_project_are_refused_naming_the_project() {
    let f = Fixture::new();
    f.repo.write("gitgate.yaml", TWO_APPS);
    f.repo.write("apps/api/cm.yaml", &configmap("api", "1"));
    f.repo.write("apps/web/ns.yaml", "apiVersion: v1\nkind: Namespace\nmetadata: {name: sneaky}\n");
    let c = f.commit("cluster-scoped");
    let msg = gitgate::error_chain(&f.render(&Renderer::new(RenderOptions::default()), c).unwrap_err());
    assert!(msg.contains("project \"team-web\"") && msg.contains("cluster-scoped kind Namespace"), "{msg}");
    assert!(msg.contains("apps/web/ns.yaml"), "{msg}");

    f.repo.remove("apps/web/ns.yaml");
    f.repo.write("apps/web/cm.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x, namespace: kube-system}\n");
    let c = f.commit("other namespace");
    let msg = gitgate::error_chain(&f.render(&Renderer::new(RenderOptions::default()), c).unwrap_err());
    assert!(msg.contains("project \"team-web\"") && msg.contains("kube-system"), "{msg}");

    f.repo.write("apps/web/cm.yaml", "apiVersion: rbac.authorization.k8s.io/v1\nkind: Role\nmetadata: {name: x}\n");
    let c = f.commit("kind");
    let msg = gitgate::error_chain(&f.render(&Renderer::new(RenderOptions::default()), c).unwrap_err());
    assert!(msg.contains("project \"team-web\"") && msg.contains("kind rbac.authorization.k8s.io/Role"), "{msg}");
}

#[test]
fn the_default_project_refuses_cluster_scoped_kinds_and_a_project_can_allow_them() {
    let f = Fixture::new();
    f.repo.write("gitgate.yaml", "apps:\n  - {name: a, path: a}\n");
    f.repo.write("a/ns.yaml", "apiVersion: v1\nkind: Namespace\nmetadata: {name: team}\n");
    let c = f.commit("default project");
    let msg = gitgate::error_chain(&f.render(&Renderer::new(RenderOptions::default()), c).unwrap_err());
    assert!(msg.contains("project \"default\""), "{msg}");
    f.repo.write("gitgate.yaml", "projects:\n  - {name: platform, clusterKinds: [Namespace]}\napps:\n  - {name: a, path: a, project: platform}\n");
    let c = f.commit("platform project");
    let d = f.render(&Renderer::new(RenderOptions::default()), c).unwrap();
    assert!(d.get("", "Namespace", "", "team").is_some());
}

#[test]
fn a_bad_config_is_reported_with_file_and_line() {
    let f = Fixture::new();
    f.repo.write(
        "gitgate.yaml",
        "apps:\n  - name: web\n    path: apps/web\n    destination: {namespace: web}\n    unknownField: 1\n",
    );
    let c = f.commit("typo");
    let msg = f.render(&Renderer::new(RenderOptions::default()), c).unwrap_err().to_string();
    assert!(msg.starts_with("gitgate.yaml:5:"), "{msg}");

    f.repo.write("gitgate.yaml", "apps:\n  - {name: web, path: a, destination: {namespace: web}}\n  - {name: web, path: b, destination: {namespace: web}}\n");
    let c = f.commit("duplicate app");
    let msg = f.render(&Renderer::new(RenderOptions::default()), c).unwrap_err().to_string();
    assert!(msg.starts_with("gitgate.yaml:3:") && msg.contains("declared twice"), "{msg}");

    f.repo.write("gitgate.yaml", "apps:\n  - {name: web, path: ../outside, destination: {namespace: web}}\n");
    let c = f.commit("escape");
    let msg = f.render(&Renderer::new(RenderOptions::default()), c).unwrap_err().to_string();
    assert!(msg.starts_with("gitgate.yaml:2:") && msg.contains("`..`"), "{msg}");

    f.repo.write("gitgate.yaml", "apps:\n  - {name: web, path: /etc, destination: {namespace: web}}\n");
    let c = f.commit("absolute");
    let msg = f.render(&Renderer::new(RenderOptions::default()), c).unwrap_err().to_string();
    assert!(msg.starts_with("gitgate.yaml:2:") && msg.contains("absolute"), "{msg}");

    f.repo.write("gitgate.yaml", "apps:\n  - {name: web, path: a, project: nope, destination: {namespace: web}}\n");
    let c = f.commit("unknown project");
    let msg = f.render(&Renderer::new(RenderOptions::default()), c).unwrap_err().to_string();
    assert!(msg.starts_with("gitgate.yaml:2:") && msg.contains("nope"), "{msg}");
}

/// Issue 17, bad input: a sync window with a bad cron, time zone, kind or
/// duration, and an unknown approval mode, fail the render naming the
/// file, the line and what is allowed.
#[test]
fn bad_promotion_settings_are_reported_with_file_line_and_what_is_allowed() {
    let f = Fixture::new();
    let r = Renderer::new(RenderOptions::default());
    let window = |w: &str| {
        format!(
            "projects:\n  - name: p\n    syncWindows:\n      - {w}\napps:\n  - {{name: web, project: p, path: a, destination: {{namespace: web}}}}\n"
        )
    };
    for (w, says) in [
        ("{kind: allow, schedule: \"61 * * * *\", duration: 1h}", "minute 61 is out of range 0-59"),
        ("{kind: allow, schedule: \"0 22 * * *\", duration: 1h, timeZone: Mars/Base}", "unknown time zone"),
        ("{kind: maybe, schedule: \"0 22 * * *\", duration: 1h}", "must be allow or deny"),
        ("{kind: deny, schedule: \"0 22 * * *\", duration: 0s}", "duration"),
    ] {
        f.repo.write("gitgate.yaml", &window(w));
        let c = f.commit("a bad window");
        let msg = f.render(&r, c).unwrap_err().to_string();
        assert!(
            msg.starts_with("gitgate.yaml:2:") && msg.contains("syncWindows[0]") && msg.contains(says),
            "{w}: {msg}"
        );
    }
    f.repo.write(
        "gitgate.yaml",
        "apps:\n  - {name: web, path: a, destination: {namespace: web}, syncPolicy: {approval: sometimes}}\n",
    );
    let c = f.commit("a bad approval");
    let msg = f.render(&r, c).unwrap_err().to_string();
    assert!(msg.starts_with("gitgate.yaml:2:") && msg.contains("required"), "{msg}");
}

#[test]
fn generators_list_git_directories_clusters_and_matrix() {
    let f = Fixture::new();
    f.repo.write(
        "gitgate.yaml",
        "\
clusters:
  - {name: in-cluster, labels: {env: prod}}
  - {name: edge, labels: {env: edge}}
generators:
  - list:
      elements: [{team: red}, {team: blue}]
    template:
      name: \"team-{{team}}\"
      path: teams/{{team}}
      destination: {namespace: \"{{team}}\"}
  - matrix:
      generators:
        - git: {directories: [\"services/*\"], exclude: [\"services/skip\"]}
        - list: {elements: [{env: staging}, {env: production}]}
    template:
      name: \"{{path.basename}}-{{env}}\"
      path: \"{{path}}/{{env}}\"
      destination: {namespace: \"{{path.basename}}-{{env}}\"}
  - clusters: {selector: {matchLabels: {env: edge}}}
    template:
      name: \"agent-{{name}}\"
      path: agent
      destination: {cluster: \"{{name}}\", namespace: agent}
",
    );
    for t in ["red", "blue"] {
        f.repo.write(&format!("teams/{t}/cm.yaml"), &configmap("team", t));
    }
    for s in ["cart", "shop"] {
        for e in ["staging", "production"] {
            f.repo.write(&format!("services/{s}/{e}/cm.yaml"), &configmap(s, e));
        }
    }
    f.repo.write("services/skip/staging/cm.yaml", &configmap("skip", "x"));
    f.repo.write("agent/cm.yaml", &configmap("agent", "1"));
    let c = f.commit("generators");
    let d = f.render(&Renderer::new(RenderOptions::default()), c).unwrap();
    let mut names: Vec<&str> = d.apps().iter().map(|a| a.name.as_str()).collect();
    names.sort();
    assert_eq!(
        names,
        ["agent-edge", "cart-production", "cart-staging", "shop-production", "shop-staging", "team-blue", "team-red"]
    );
    assert_eq!(d.app("agent-edge").unwrap().destination.cluster, "edge");
    assert!(d.get("", "ConfigMap", "cart-production", "cart").is_some());
    assert!(d.get("", "ConfigMap", "red", "team").is_some());
}

#[test]
fn yaml_1_1_booleans_stay_strings_in_the_desired_set() {
    let f = Fixture::new();
    f.repo.write("gitgate.yaml", "apps:\n  - {name: a, path: a, destination: {namespace: a}}\n");
    f.repo.write("a/cm.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: flags}\ndata:\n  country: NO\n  enabled: on\n  real: \"true\"\n");
    let c = f.commit("norway");
    let d = f.render(&Renderer::new(RenderOptions::default()), c).unwrap();
    let v = d.get("", "ConfigMap", "a", "flags").unwrap().value();
    assert_eq!(v["data"], serde_json::json!({"country": "NO", "enabled": "on", "real": "true"}));
}

#[test]
fn a_yaml_alias_bomb_is_refused_naming_the_file() {
    let f = Fixture::new();
    f.repo.write("gitgate.yaml", "apps:\n  - {name: a, path: a, destination: {namespace: a}}\n");
    let mut bomb = String::from("a: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n");
    let names = ["b", "c", "d", "e", "f", "g", "h", "i"];
    let mut prev = "a";
    for n in names {
        bomb.push_str(&format!(
            "{n}: &{n} [*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev}]\n"
        ));
        prev = n;
    }
    f.repo.write("a/bomb.yaml", &format!("apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: bomb}}\n{bomb}"));
    let c = f.commit("bomb");
    let err = f.render(&Renderer::new(RenderOptions::default()), c).unwrap_err();
    let msg = gitgate::error_chain(&err);
    // Refused by the alias replay limit, before the node budget.
    assert!(msg.contains("a/bomb.yaml") && msg.contains("alias replay limit"), "{msg}");
}

#[test]
fn a_document_nested_thousands_deep_is_refused_naming_the_file() {
    let f = Fixture::new();
    f.repo.write("gitgate.yaml", "apps:\n  - {name: a, path: a, destination: {namespace: a}}\n");
    let deep = format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: deep}}\ndata: {}{}\n",
        "[".repeat(5000),
        "]".repeat(5000)
    );
    f.repo.write("a/deep.yaml", &deep);
    let deep_json = format!("{}1{}", "[".repeat(5000), "]".repeat(5000));
    f.repo.write("b/deep.json", &deep_json);
    let c = f.commit("deep");
    let msg = gitgate::error_chain(&f.render(&Renderer::new(RenderOptions::default()), c).unwrap_err());
    assert!(msg.contains("a/deep.yaml") && msg.contains("recursion limit"), "{msg}");

    f.repo.write("gitgate.yaml", "apps:\n  - {name: b, path: b, destination: {namespace: b}}\n");
    let c = f.commit("deep json");
    let msg = gitgate::error_chain(&f.render(&Renderer::new(RenderOptions::default()), c).unwrap_err());
    assert!(msg.contains("b/deep.json") && msg.contains("recursion limit"), "{msg}");
}

#[test]
fn an_oversized_manifest_fails_the_render_naming_the_file() {
    let f = Fixture::new();
    f.repo.write("gitgate.yaml", "apps:\n  - {name: a, path: a, destination: {namespace: a}}\n");
    f.repo.write(
        "a/big.yaml",
        &format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: big}}\ndata: {{x: \"{}\"}}\n",
            "x".repeat(200_000)
        ),
    );
    let c = f.commit("big");
    let opts = RenderOptions {
        limits: gitgate::source::ReadLimits { max_file_bytes: 100_000, ..Default::default() },
        ..Default::default()
    };
    let msg = gitgate::error_chain(&f.render(&Renderer::new(opts), c).unwrap_err());
    assert!(msg.contains("a/big.yaml") && msg.contains("limit"), "{msg}");
}

#[test]
fn an_app_path_symlinked_out_of_the_repo_is_refused() {
    let f = Fixture::new();
    f.repo.write("gitgate.yaml", "apps:\n  - {name: a, path: a, destination: {namespace: a}}\n");
    f.repo.symlink("a/etc.yaml", "/etc/hostname");
    let c = f.commit("escape");
    let msg = gitgate::error_chain(&f.render(&Renderer::new(RenderOptions::default()), c).unwrap_err());
    assert!(msg.contains("a/etc.yaml") && msg.contains("leaves the repository"), "{msg}");
}

#[test]
fn a_chart_without_a_helm_binary_is_an_error_naming_the_app() {
    let f = Fixture::new();
    f.repo.write("gitgate.yaml", "apps:\n  - {name: charted, path: chart, destination: {namespace: c}}\n");
    f.repo.write("chart/Chart.yaml", "apiVersion: v2\nname: demo\nversion: 0.1.0\n");
    f.repo.write("chart/templates/cm.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: demo}\n");
    let c = f.commit("chart");
    let opts = RenderOptions { helm: "/nonexistent/helm".into(), ..Default::default() };
    let msg = gitgate::error_chain(&f.render(&Renderer::new(opts), c).unwrap_err());
    assert!(msg.contains("app \"charted\"") && msg.contains("/nonexistent/helm could not be run"), "{msg}");
    // A bare name is looked up on PATH (gitgate's image ships no helm): the
    // error says so, and how to give gitgate one.
    let opts = RenderOptions { helm: "gitgate-test-no-such-helm".into(), ..Default::default() };
    let msg = gitgate::error_chain(&f.render(&Renderer::new(opts), c).unwrap_err());
    assert!(
        msg.contains("app \"charted\"")
            && msg.contains("`gitgate-test-no-such-helm` binary, and none was found on PATH")
            && msg.contains("GITGATE_HELM"),
        "{msg}"
    );
}

#[test]
fn kustomize_refuses_files_outside_its_directory_and_paths_above_the_repo() {
    let f = Fixture::new();
    f.repo.write("gitgate.yaml", "apps:\n  - {name: a, path: apps/a, destination: {namespace: a}}\n");
    f.repo.write("secrets/db.yaml", &configmap("stolen", "x"));
    f.repo.write("apps/a/kustomization.yaml", "resources:\n  - ../../secrets/db.yaml\n");
    let c = f.commit("file outside");
    let msg = gitgate::error_chain(&f.render(&Renderer::new(RenderOptions::default()), c).unwrap_err());
    assert!(msg.contains("apps/a/kustomization.yaml") && msg.contains("outside the kustomization directory"), "{msg}");

    f.repo.write("apps/a/kustomization.yaml", "resources:\n  - ../../../../etc\n");
    let c = f.commit("above the root");
    let msg = gitgate::error_chain(&f.render(&Renderer::new(RenderOptions::default()), c).unwrap_err());
    assert!(msg.contains("apps/a/kustomization.yaml") && msg.contains("leaves the repository"), "{msg}");

    f.repo.write("apps/a/kustomization.yaml", "configMapGenerator:\n  - name: x\n    files: [../../secrets/db.yaml]\n");
    let c = f.commit("generator file outside");
    let msg = gitgate::error_chain(&f.render(&Renderer::new(RenderOptions::default()), c).unwrap_err());
    assert!(msg.contains("outside the kustomization directory"), "{msg}");

    f.repo.write("apps/a/kustomization.yaml", "resources:\n  - https://github.com/example/repo//base\n");
    let c = f.commit("remote");
    let msg = gitgate::error_chain(&f.render(&Renderer::new(RenderOptions::default()), c).unwrap_err());
    assert!(msg.contains("remote resource"), "{msg}");
}

/// CVE-2022-24904 class (Argo CD: symlinks in an app's directory leak
/// manifests from outside it): a plain directory app whose file is a symlink
/// to another app's file is refused, naming the link and its target. A
/// symlink that stays inside the app's directory is followed.
#[test]
fn cve_2022_24904_a_plain_app_file_symlinked_to_another_app_is_refused() {
    let f = Fixture::new();
    f.repo.write(
        "gitgate.yaml",
        "apps:\n  - {name: a, path: apps/a, destination: {namespace: a}}\n  - {name: b, path: apps/b, destination: {namespace: b}}\n",
    );
    f.repo.write("apps/a/cm.yaml", &configmap("a", "1"));
    f.repo.write(
        "apps/b/secret.yaml",
        "apiVersion: v1\nkind: Secret\nmetadata: {name: b-db}\nstringData: {password: hunter2}\n",
    );
    f.repo.symlink("apps/a/stolen.yaml", "../b/secret.yaml");
    let c = f.commit("a symlink into another app");
    let msg = gitgate::error_chain(&f.render(&Renderer::new(RenderOptions::default()), c).unwrap_err());
    assert!(
        msg.contains("app \"a\"")
            && msg.contains("apps/a/stolen.yaml")
            && msg.contains("apps/b/secret.yaml")
            && msg.contains("outside"),
        "{msg}"
    );

    // A symlink to another app's directory, and a link inside the app.
    f.repo.remove("apps/a/stolen.yaml");
    f.repo.symlink("apps/a/b-files", "../b");
    let c = f.commit("a symlinked directory");
    let msg = gitgate::error_chain(&f.render(&Renderer::new(RenderOptions::default()), c).unwrap_err());
    assert!(msg.contains("apps/a/b-files"), "{msg}");

    f.repo.remove("apps/a/b-files");
    f.repo.write("apps/a/shared/cm.txt", &configmap("shared", "2"));
    f.repo.symlink("apps/a/shared.yaml", "shared/cm.txt");
    let c = f.commit("a symlink inside the app");
    let d = f
        .render(&Renderer::new(RenderOptions::default()), c)
        .unwrap_or_else(|e| panic!("{}", gitgate::error_chain(&e)));
    assert_eq!(d.get("", "ConfigMap", "a", "shared").unwrap().value()["data"]["value"], "2");
}

/// CVE-2022-24904 class, through Kustomize (and Flux's CVE-2022-24877
/// path handling): kustomize's load restrictor checked the path as written,
/// while reads followed symlinks. Now every file a kustomization reads —
/// resource files, patches, generator inputs, the kustomization file
/// itself — must resolve inside its directory: a symlinked file or
/// directory leading to another app's files is refused, naming the link and
/// the target.
#[test]
fn cve_2022_24904_kustomize_reads_through_symlinks_stay_in_the_kustomization() {
    let cases: [(&str, &str, &str, &str); 5] = [
        ("resource file", "resources: [stolen.yaml]\n", "apps/a/stolen.yaml", "../b/secret.yaml"),
        ("symlinked directory", "resources: [conf/secret.yaml]\n", "apps/a/conf", "../b"),
        (
            "secret generator input",
            "secretGenerator:\n  - name: s\n    files: [token=token.txt]\n",
            "apps/a/token.txt",
            "../b/token.txt",
        ),
        ("patch", "resources: [cm.yaml]\npatches:\n  - path: patch.yaml\n", "apps/a/patch.yaml", "../b/secret.yaml"),
        ("kustomization file", "", "apps/a/kustomization.yaml", "../b/kustomization.yaml"),
    ];
    for (what, kustomization, link, target) in cases {
        let f = Fixture::new();
        f.repo.write(
            "gitgate.yaml",
            "apps:\n  - {name: a, path: apps/a, destination: {namespace: a}}\n  - {name: b, path: apps/b, destination: {namespace: b}}\n",
        );
        if !kustomization.is_empty() {
            f.repo.write("apps/a/kustomization.yaml", kustomization);
        }
        f.repo.write("apps/a/cm.yaml", &configmap("a", "1"));
        f.repo.write("apps/b/kustomization.yaml", "resources: [secret.yaml]\n");
        f.repo.write(
            "apps/b/secret.yaml",
            "apiVersion: v1\nkind: Secret\nmetadata: {name: a}\nstringData: {password: hunter2}\n",
        );
        f.repo.write("apps/b/token.txt", "hunter2\n");
        f.repo.symlink(link, target);
        let c = f.commit(what);
        let msg = gitgate::error_chain(&f.render(&Renderer::new(RenderOptions::default()), c).unwrap_err());
        assert!(msg.contains("app \"a\"") && msg.contains(link) && msg.contains("outside"), "{what}: {msg}");
        assert!(!msg.contains("hunter2"), "{what}: {msg}");
    }

    // Inside the kustomization's directory, symlinks are followed.
    let f = Fixture::new();
    f.repo.write("gitgate.yaml", "apps:\n  - {name: a, path: apps/a, destination: {namespace: a}}\n");
    f.repo.write(
        "apps/a/kustomization.yaml",
        "resources: [cm.yaml]\nconfigMapGenerator:\n  - {name: g, files: [conf]}\n",
    );
    f.repo.write("apps/a/real/cm.yaml", &configmap("a", "1"));
    f.repo.write("apps/a/real/conf.txt", "x=1\n");
    f.repo.symlink("apps/a/cm.yaml", "real/cm.yaml");
    f.repo.symlink("apps/a/conf", "real/conf.txt");
    let c = f.commit("links inside");
    let d = f
        .render(&Renderer::new(RenderOptions::default()), c)
        .unwrap_or_else(|e| panic!("{}", gitgate::error_chain(&e)));
    assert!(d.get("", "ConfigMap", "a", "a").is_some());
    assert_eq!(d.len(), 2, "the ConfigMap and the generated one");
}

#[test]
fn a_kustomize_diamond_bomb_and_a_cycle_are_refused() {
    let f = Fixture::new();
    f.repo.write("gitgate.yaml", "apps:\n  - {name: a, path: k/l0, destination: {namespace: a}}\n");
    // Each level includes the next twice: 2^15 builds without a bound.
    for i in 0..15 {
        f.repo.write(&format!("k/l{i}/kustomization.yaml"), &format!("resources: [../l{n}, ../l{n}b]\n", n = i + 1));
        f.repo.write(&format!("k/l{i}b/kustomization.yaml"), &format!("resources: [../l{}]\n", i + 1));
    }
    f.repo.write("k/l15/kustomization.yaml", "resources: [cm.yaml]\n");
    f.repo.write("k/l15b/kustomization.yaml", "resources: [../l15]\n");
    f.repo.write("k/l15/cm.yaml", &configmap("leaf", "1"));
    let c = f.commit("diamonds");
    let msg = gitgate::error_chain(&f.render(&Renderer::new(RenderOptions::default()), c).unwrap_err());
    assert!(msg.contains("kustomization builds"), "{msg}");

    f.repo.write("gitgate.yaml", "apps:\n  - {name: b, path: cyc/a, destination: {namespace: b}}\n");
    f.repo.write("cyc/a/kustomization.yaml", "resources: [../b]\n");
    f.repo.write("cyc/b/kustomization.yaml", "resources: [../a]\n");
    let c = f.commit("cycle");
    let msg = gitgate::error_chain(&f.render(&Renderer::new(RenderOptions::default()), c).unwrap_err());
    assert!(msg.contains("cycle"), "{msg}");
}

#[test]
fn a_matrix_generator_that_multiplies_past_the_app_limit_is_refused() {
    let f = Fixture::new();
    let elements = |key: &str| (0..101).map(|i| format!("{{{key}: \"{i}\"}}")).collect::<Vec<_>>().join(", ");
    f.repo.write(
        "gitgate.yaml",
        &format!(
            "generators:\n  - matrix:\n      generators:\n        - list: {{elements: [{}]}}\n        - list: {{elements: [{}]}}\n    template:\n      name: \"a-{{{{x}}}}-{{{{y}}}}\"\n      path: apps\n      destination: {{namespace: apps}}\n",
            elements("x"),
            elements("y")
        ),
    );
    f.repo.write("apps/cm.yaml", &configmap("apps", "1"));
    let c = f.commit("a 101 x 101 matrix");
    let msg = f.render(&Renderer::new(RenderOptions::default()), c).unwrap_err().to_string();
    assert!(msg.starts_with("gitgate.yaml:2:") && msg.contains("10201") && msg.contains("10000"), "{msg}");
}

/// Regression: a manifest written by `kubectl create --dry-run=client -o
/// yaml` carries `creationTimestamp: null`, which no live object can match
/// (the apiserver sets it), so the reconciler's own apply was denied.
#[test]
fn kubectl_generated_null_creation_timestamps_are_not_part_of_gits_manifest() {
    let f = Fixture::new();
    f.repo.write("gitgate.yaml", "apps:\n  - name: web\n    path: web\n    destination: {namespace: demo}\n");
    f.repo.write(
        "web/secret.yaml",
        "apiVersion: v1\nkind: Secret\nmetadata:\n  creationTimestamp: null\n  name: db\n  namespace: demo\ndata:\n  password: Y29ycmVjdC1ob3JzZQ==\n",
    );
    let c = f.commit("kubectl-made secret");
    let d = f.render(&Renderer::new(RenderOptions::default()), c).unwrap();
    let manifest = &d.get("", "Secret", "demo", "db").unwrap().manifest;
    assert!(!manifest.contains("creationTimestamp"), "{manifest}");
}

const ONE_APP: &str = "apps:\n  - {name: shop, path: shop, destination: {namespace: shop}}\n";

const MIGRATE: &str = "apiVersion: batch/v1\nkind: Job\nmetadata:\n  generateName: migrate-\n  annotations:\n    argocd.argoproj.io/hook: PreSync\n    argocd.argoproj.io/hook-delete-policy: HookSucceeded\nspec:\n  template:\n    spec:\n      restartPolicy: Never\n      containers: [{name: m, image: migrate:1}]\n";

/// Issue 19: a PreSync hook with `generateName` (Argo CD's `sync-waves`
/// example) rendered "document 1: no metadata.name"; a hook is now kept
/// apart from the app's objects (no inventory, no prune), known by its
/// generateName, and a `Skip` hook or Helm test is not rendered at all.
#[test]
fn hooks_render_apart_from_the_objects_and_skip_is_left_out() {
    let f = Fixture::new();
    f.repo.write("gitgate.yaml", ONE_APP);
    f.repo.write("shop/migrate.yaml", MIGRATE);
    f.repo.write("shop/cm.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n");
    f.repo.write(
        "shop/skip.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: skipped\n  annotations: {argocd.argoproj.io/hook: Skip}\n",
    );
    f.repo.write(
        "shop/test.yaml",
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: t\n  annotations: {helm.sh/hook: test}\nspec: {containers: [{name: t, image: t}]}\n",
    );
    let c = f.commit("hooks");
    let d = f.render(&Renderer::new(RenderOptions::default()), c).unwrap();
    let objects: Vec<String> = d.app_objects("shop").iter().map(|(k, _)| k.to_string()).collect();
    assert_eq!(objects, ["ConfigMap shop/a"], "a hook, Skip and a Helm test are not objects");
    let hooks: Vec<String> = d.app_hooks("shop").iter().map(|(k, _)| k.to_string()).collect();
    assert_eq!(hooks, ["Job.batch shop/migrate-"]);
    assert!(d.get("batch", "Job", "shop", "migrate-").is_none(), "not among the objects the gate manages by name");
    let h = d.get_hook("batch", "Job", "shop", "migrate-").unwrap();
    assert_eq!(h.source.as_ref(), "shop/migrate.yaml");
    assert_eq!(h.commit, c);
}

/// Bad hook input fails the commit (nothing of it is applied) with a
/// message naming the file and the document.
#[test]
fn bad_hook_annotations_fail_the_render_naming_file_and_document() {
    let cases: &[(&str, &str)] = &[
        (
            "apiVersion: batch/v1\nkind: Job\nmetadata:\n  name: m\n  annotations: {argocd.argoproj.io/hook: PreSnyc}\n",
            "unknown hook phase \"PreSnyc\"",
        ),
        (
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  generateName: cfg-\n",
            "metadata.generateName is for sync hooks only",
        ),
        (
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: c\n  annotations: {argocd.argoproj.io/hook-delete-policy: HookSucceeded}\n",
            "hook-delete-policy on an object that is not a hook",
        ),
        (
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: c\n  annotations: {helm.sh/hook: pre-instal}\n",
            "unknown hook \"pre-instal\"",
        ),
    ];
    for (manifest, want) in cases {
        let f = Fixture::new();
        f.repo.write("gitgate.yaml", ONE_APP);
        f.repo.write("shop/ok.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: ok}\n");
        f.repo.write("shop/bad.yaml", &format!("---\n{manifest}"));
        let c = f.commit("bad hook");
        let err = f.render(&Renderer::new(RenderOptions::default()), c).unwrap_err();
        let msg = gitgate::error_chain(&err);
        assert!(msg.contains("shop/bad.yaml: document 1") && msg.contains(want), "{want}: {msg}");
    }
}

/// Writes Argo CD's `sync-waves` and `pre-post-sync` example apps (see
/// tests/fixtures/argocd-example-apps/README.md) into `repo`, as apps
/// `waves` and `prepost`.
fn argocd_example_apps(repo: &Repo) {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/argocd-example-apps");
    for rel in [
        "sync-waves/manifests.yaml",
        "pre-post-sync/kustomization.yaml",
        "pre-post-sync/pre-sync-job.yaml",
        "pre-post-sync/post-sync-job.yaml",
        "kustomize-guestbook/kustomization.yaml",
        "kustomize-guestbook/guestbook-ui-deployment.yaml",
        "kustomize-guestbook/guestbook-ui-svc.yaml",
    ] {
        repo.write(rel, &std::fs::read_to_string(root.join(rel)).unwrap());
    }
    repo.write(
        "gitgate.yaml",
        "apps:\n  - {name: waves, path: sync-waves, destination: {namespace: waves}}\n  - {name: prepost, path: pre-post-sync, destination: {namespace: prepost}}\n",
    );
}

/// Issue 19's figure, render half: Argo CD's `sync-waves` (which failed
/// with "document 1: no metadata.name") and `pre-post-sync` (whose hooks
/// were plain objects) render with the same objects Argo CD would create:
/// each document of the manifests (for the Kustomize app, `kubectl
/// kustomize`'s output) is one object or hook with exactly its content
/// (the namespace added), and the hooks are the hook documents.
#[test]
fn argo_cds_example_apps_with_hooks_render_the_same_objects() {
    let f = Fixture::new();
    argocd_example_apps(&f.repo);
    let c = f.commit("argocd-example-apps");
    let d = f.render(&Renderer::new(RenderOptions::default()), c).unwrap();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/argocd-example-apps");
    for (app, ns, file) in [
        ("waves", "waves", "sync-waves/manifests.yaml"),
        ("prepost", "prepost", "pre-post-sync.kubectl-kustomize.yaml"),
    ] {
        let text = std::fs::read_to_string(root.join(file)).unwrap();
        let docs = gitgate::render::yaml::parse_documents(file, text.as_bytes()).unwrap();
        let objects = d.app_objects(app);
        let hooks = d.app_hooks(app);
        assert_eq!(objects.len() + hooks.len(), docs.len(), "{app}: one object or hook per document");
        let mut hook_docs = 0;
        for mut doc in docs {
            let is_hook = doc.pointer("/metadata/annotations/argocd.argoproj.io~1hook").is_some();
            hook_docs += usize::from(is_hook);
            let name =
                doc["metadata"]["name"].as_str().or(doc["metadata"]["generateName"].as_str()).unwrap().to_string();
            let kind = doc["kind"].as_str().unwrap().to_string();
            let found = if is_hook { &hooks } else { &objects };
            let (_, o) = found.iter().find(|(k, _)| k.kind == kind && k.name == name).unwrap_or_else(|| {
                panic!("{app}: {kind} {name} not rendered as a {}", if is_hook { "hook" } else { "object" })
            });
            doc["metadata"]["namespace"] = serde_json::json!(ns);
            assert_eq!(o.value(), doc, "{app}: {kind} {name}");
        }
        assert_eq!(hooks.len(), hook_docs, "{app}");
    }
}
