//! Spoke mode (issue 18, item 1): every cluster of a fleet runs its own
//! gitgate on the same repository with `--cluster NAME`, and renders (so
//! applies and enforces) only the apps whose destination is NAME. Three
//! clusters from one generator deploy the same objects; each spoke sees
//! its own and nothing of the others'.

mod support;

use gitgate::render::{RenderError, RenderOptions, Renderer};
use gitgate::source::GitSource;
use support::{Repo, cache_dir, configmap, oid};

/// staging, production and dr, one `clusters` generator: the same app in
/// the same namespace on each, with a per-environment value.
fn fleet() -> (Repo, String) {
    let repo = Repo::new();
    repo.write(
        "gitgate.yaml",
        "clusters:
  - {name: staging, labels: {env: staging}}
  - {name: production, labels: {env: production}}
  - {name: dr, labels: {env: production}}
generators:
  - clusters: {}
    template:
      name: \"shop-{{name}}\"
      path: \"shop/{{metadata.labels.env}}\"
      destination: {cluster: \"{{name}}\", namespace: shop}
",
    );
    repo.write("shop/staging/cm.yaml", &configmap("settings", "staging"));
    repo.write("shop/production/cm.yaml", &configmap("settings", "production"));
    let c = repo.commit("fleet");
    (repo, c)
}

fn render(
    repo: &Repo,
    commit: &str,
    cluster: Option<&str>,
) -> Result<std::sync::Arc<gitgate::render::DesiredSet>, RenderError> {
    let (_t, cache) = cache_dir();
    let src = GitSource::open(&repo.url(), &cache).unwrap();
    src.fetch().unwrap();
    let opts = RenderOptions { cluster: cluster.map(String::from), ..RenderOptions::default() };
    Renderer::new(opts).desired(&src.repo(), oid(commit))
}

#[test]
fn each_spoke_renders_only_the_apps_deployed_to_its_cluster() {
    let (repo, c) = fleet();
    for (cluster, value) in [("staging", "staging"), ("production", "production"), ("dr", "production")] {
        let d = render(&repo, &c, Some(cluster)).unwrap();
        let apps: Vec<&str> = d.apps().iter().map(|a| a.name.as_str()).collect();
        assert_eq!(apps, [format!("shop-{cluster}")], "the {cluster} spoke");
        let cm = d.get("", "ConfigMap", "shop", "settings").expect("its object").value();
        assert_eq!(cm["data"]["value"], value, "the {cluster} spoke renders its own overlay");
    }
}

/// Without `--cluster` the three clusters' identical objects collide: one
/// gitgate cannot gate them all, which is why each cluster runs a spoke.
#[test]
fn one_instance_for_the_whole_fleet_refuses_the_clash_naming_both_apps() {
    let (repo, c) = fleet();
    let err = render(&repo, &c, None).unwrap_err().to_string();
    assert!(err.contains("ConfigMap shop/settings is declared by two apps"), "{err}");
    assert!(err.contains("\"shop-dr\"") && err.contains("\"shop-production\""), "{err}");
}

/// A spoke named after a cluster the file does not declare renders
/// nothing at all (the commit is refused, so nothing is applied or pruned),
/// and says which clusters there are.
#[test]
fn a_spoke_for_an_undeclared_cluster_is_refused_naming_the_declared_ones() {
    let (repo, c) = fleet();
    let err = render(&repo, &c, Some("prod")).unwrap_err().to_string();
    assert!(err.contains("\"prod\" (--cluster)") && err.contains("clusters: staging, production, dr"), "{err}");
}

/// `fleet diff` (issue 18, item 3): production and dr render the same
/// objects from Git (one overlay), so they are the same; staging and dr
/// differ in one field, by overlay, and nothing else is reported.
#[test]
fn fleet_diff_reports_the_overlay_difference_and_nothing_else() {
    let (repo, c) = fleet();
    let set = |cluster| render(&repo, &c, Some(cluster)).unwrap();
    let same = gitgate::fleet::compare(&set("production"), &set("dr"));
    assert!(same.same(), "{:?}", same.differences);
    assert_eq!(same.identical, 1);
    let report = gitgate::fleet::compare(&set("staging"), &set("dr"));
    assert_eq!(
        report.differences,
        [gitgate::fleet::Difference::Changed {
            object: "ConfigMap shop/settings".into(),
            field: "/data/value".into(),
            why: "an overlay: shop/staging/cm.yaml against shop/production/cm.yaml".into(),
            file_a: "shop/staging/cm.yaml".into(),
            file_b: "shop/production/cm.yaml".into(),
        }]
    ); // An object Git gives staging alone is named with its app and file.
    repo.write("shop/staging/debug.yaml", &configmap("debug", "on"));
    let c2 = repo.commit("a staging-only debug switch");
    let staging = render(&repo, &c2, Some("staging")).unwrap();
    let report = gitgate::fleet::compare(&staging, &render(&repo, &c2, Some("dr")).unwrap());
    assert!(report.differences.contains(&gitgate::fleet::Difference::OnlyA {
        object: "ConfigMap shop/debug".into(),
        app: "shop-staging".into(),
        file: "shop/staging/debug.yaml".into(),
    }));
    assert_eq!(report.differences.len(), 2, "{:?}", report.differences);
}

/// A gitgate.yaml of two clusters (name, env) and one `clusters`
/// generator whose apps take `path`.
fn two_clusters(a: (&str, &str), b: (&str, &str), path: &str) -> String {
    format!(
        "clusters:
  - {{name: {}, labels: {{env: {}}}}}
  - {{name: {}, labels: {{env: {}}}}}
generators:
  - clusters: {{}}
    template:
      name: \"shop-{{{{name}}}}\"
      path: \"{path}\"
      destination: {{cluster: \"{{{{name}}}}\", namespace: shop}}
",
        a.0, a.1, b.0, b.1
    )
}

/// One base file, patched by each cluster's overlay (kustomize): the
/// value differs by overlay, and `fleet diff` says which overlays.
#[test]
fn a_value_a_kustomize_overlay_patches_is_an_overlay_difference() {
    let repo = Repo::new();
    repo.write(
        "gitgate.yaml",
        &two_clusters(("staging", "staging"), ("production", "production"), "shop/overlays/{{metadata.labels.env}}"),
    );
    repo.write("shop/base/cm.yaml", &configmap("settings", "base"));
    repo.write("shop/base/kustomization.yaml", "resources: [cm.yaml]\n");
    for env in ["staging", "production"] {
        repo.write(
            &format!("shop/overlays/{env}/kustomization.yaml"),
            &format!(
                "resources: [../../base]\npatches:\n  - patch: |\n      apiVersion: v1\n      kind: ConfigMap\n      metadata: {{name: settings}}\n      data: {{value: {env}}}\n"
            ),
        );
    }
    let c = repo.commit("one base, two overlays");
    let report = gitgate::fleet::compare(
        &render(&repo, &c, Some("staging")).unwrap(),
        &render(&repo, &c, Some("production")).unwrap(),
    );
    let [gitgate::fleet::Difference::Changed { field, why, .. }] = report.differences.as_slice() else {
        panic!("{:?}", report.differences)
    };
    assert_eq!(field, "/data/value");
    assert_eq!(
        why,
        "an overlay: shop/overlays/staging patches shop/base/cm.yaml other than shop/overlays/production does"
    );
}

/// A Secret sealed for each cluster's own key (real age: the same value,
/// another recipient per cluster) differs in Git by design: `fleet diff`
/// says so, and says its values are not compared.
#[test]
fn a_secret_sealed_per_cluster_differs_by_its_recipients_and_says_so() {
    use base64::Engine as _;
    use gitgate::secrets::keys::AgeIdentity;
    use gitgate::secrets::seal::{self, Binding, Limits, Scope};
    let repo = Repo::new();
    repo.write("gitgate.yaml", &two_clusters(("production", "production"), ("dr", "production"), "shop/{{name}}"));
    for cluster in ["production", "dr"] {
        let key = AgeIdentity::generate();
        let binding = Binding::for_object(Scope::Strict, "shop", "db", "password").unwrap();
        let plaintext = gitgate::secrets::Plaintext::copy_from(b"the same password");
        let sealed = seal::seal(&plaintext, &binding, &[key.recipient()], &Limits::default()).unwrap();
        let data = base64::engine::general_purpose::STANDARD.encode(sealed.as_bytes());
        repo.write(
            &format!("shop/{cluster}/secret.yaml"),
            &format!(
                "apiVersion: v1\nkind: Secret\nmetadata:\n  name: db\n  annotations:\n    gitgate.dev/sealed: age\n    gitgate.dev/seal-scope: strict\ndata:\n  password: {data}\n"
            ),
        );
        repo.write(&format!("shop/{cluster}/cm.yaml"), &configmap("settings", "same"));
    }
    let c = repo.commit("sealed per cluster");
    let report = gitgate::fleet::compare(
        &render(&repo, &c, Some("production")).unwrap(),
        &render(&repo, &c, Some("dr")).unwrap(),
    );
    assert_eq!(report.identical, 1, "the ConfigMap: {:?}", report.differences);
    let [gitgate::fleet::Difference::Changed { object, field, why, .. }] = report.differences.as_slice() else {
        panic!("{:?}", report.differences)
    };
    assert_eq!((object.as_str(), field.as_str()), ("Secret shop/db", "/data/password"));
    assert!(why.starts_with("a sealed Secret, sealed for each cluster's own recipients"), "{why}");
    assert!(why.ends_with("its values are not compared"), "{why}");
}

/// The command: exit 0 when the clusters are the same, 1 when they
/// differ (one line per difference), 2 for a cluster Git does not declare.
#[test]
fn gitgate_fleet_diff_exits_as_diff_does() {
    let (repo, c) = fleet();
    let run = |a: &str, b: &str| {
        std::process::Command::new(env!("CARGO_BIN_EXE_gitgate"))
            .args(["fleet", "diff", a, b, "--repo", &repo.url(), "--rev", &c])
            .output()
            .unwrap()
    };
    let out = run("production", "dr");
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("production and dr are the same in Git: 1 object(s) identical")
    );
    let out = run("staging", "dr");
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("differs: ConfigMap shop/settings /data/value: an overlay: shop/staging/cm.yaml against shop/production/cm.yaml"), "{text}");
    assert_eq!(text.lines().count(), 2, "one difference and the summary: {text}");
    let out = run("staging", "qa");
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("\"qa\" (--cluster)"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

// ------------------------------------------------ the example fleet (examples/fleet)

/// A manifest of `examples/fleet`, as JSON: what the tests expect of a
/// cluster is read from the example itself.
fn example_manifest(rel: &str) -> serde_json::Value {
    let text = std::fs::read_to_string(support::example_fleet_dir().join(rel)).unwrap();
    serde_saphyr::from_str(&text).unwrap()
}

/// What an environment's overlay sets: its replicas and its title.
fn overlay(env: &str) -> (serde_json::Value, serde_json::Value) {
    let deploy = example_manifest(&format!("guestbook/overlays/{env}/deployment.yaml"));
    let cm = example_manifest(&format!("guestbook/overlays/{env}/configmap.yaml"));
    (deploy["spec"]["replicas"].clone(), cm["data"]["GUESTBOOK_TITLE"].clone())
}

/// Each spoke of the example fleet renders its own guestbook app and
/// nothing of the others': staging its overlay, production and dr
/// production's (dr is labelled env: production).
#[test]
fn the_example_fleet_renders_each_clusters_own_guestbook() {
    let (repo, c) = support::example_fleet_repo();
    assert_ne!(overlay("staging"), overlay("production"), "the example's overlays differ");
    for (cluster, env) in [("staging", "staging"), ("production", "production"), ("dr", "production")] {
        let d = render(&repo, &c, Some(cluster)).unwrap();
        let apps: Vec<&str> = d.apps().iter().map(|a| a.name.as_str()).collect();
        assert_eq!(apps, [format!("guestbook-{cluster}")], "the {cluster} spoke");
        let app = &d.apps()[0];
        assert_eq!(app.path.to_string(), format!("guestbook/overlays/{env}"), "the {cluster} spoke");
        let (replicas, title) = overlay(env);
        let deploy = d.get("apps", "Deployment", "guestbook", "guestbook").expect("the Deployment").value();
        assert_eq!(deploy["spec"]["replicas"], replicas, "the {cluster} spoke renders the {env} overlay");
        let cm = d.get("", "ConfigMap", "guestbook", "guestbook-config").expect("the settings").value();
        assert_eq!(cm["data"]["GUESTBOOK_TITLE"], title, "the {cluster} spoke renders the {env} overlay");
        assert!(d.get("", "Service", "guestbook", "guestbook").is_some(), "the base's Service");
        let ns = d.get("", "Namespace", "", "guestbook").expect("the base's Namespace").value();
        assert_eq!(ns["metadata"]["labels"]["gitgate.dev/enforce"], "true", "enforced in the chart's layout");
        let kinds: Vec<String> = d.objects().iter().map(|(k, _)| k.to_string()).collect();
        assert_eq!(kinds.len(), 4, "{kinds:?}");
    }
    // The three clusters' identical objects: one gitgate for all of them
    // cannot gate them, the spokes can.
    let err = render(&repo, &c, None).unwrap_err().to_string();
    assert!(err.contains("is declared by two apps"), "{err}");
}

/// The parity proof on the example: production and dr get the same
/// objects; staging differs from production in exactly the two fields its
/// overlay sets (replicas, the title), each an overlay file against the other.
#[test]
fn the_example_fleet_differs_only_by_the_staging_overlay() {
    let (repo, c) = support::example_fleet_repo();
    let set = |cluster| render(&repo, &c, Some(cluster)).unwrap();
    let same = gitgate::fleet::compare(&set("production"), &set("dr"));
    assert!(same.same(), "{:?}", same.differences);
    assert_eq!(same.identical, 4);
    let report = gitgate::fleet::compare(&set("staging"), &set("production"));
    let file = |env: &str, f: &str| format!("guestbook/overlays/{env}/{f}");
    let changed = |object: &str, field: &str, f: &str| gitgate::fleet::Difference::Changed {
        object: object.into(),
        field: field.into(),
        why: format!("an overlay: {} against {}", file("staging", f), file("production", f)),
        file_a: file("staging", f),
        file_b: file("production", f),
    };
    assert_eq!(
        report.differences,
        [
            changed("ConfigMap guestbook/guestbook-config", "/data/GUESTBOOK_TITLE", "configmap.yaml"),
            changed("Deployment.apps guestbook/guestbook", "/spec/replicas", "deployment.yaml"),
        ]
    );
    assert_eq!(report.identical, 2, "the Namespace and the Service are the base's");
}

/// `gitgate fleet diff` on the example as a plain directory (no Git
/// repository): exit 0 for production and dr, 1 for staging and
/// production with one line per overlay field.
#[test]
fn gitgate_fleet_diff_on_the_example_directory() {
    let dir = support::example_fleet_dir();
    let run = |a: &str, b: &str| {
        std::process::Command::new(env!("CARGO_BIN_EXE_gitgate"))
            .args(["fleet", "diff", a, b, "--repo"])
            .arg(&dir)
            .output()
            .unwrap()
    };
    let out = run("production", "dr");
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(text, "production and dr are the same in Git: 4 object(s) identical, 0 different\n");
    let out = run("staging", "production");
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines,
        [
            "differs: ConfigMap guestbook/guestbook-config /data/GUESTBOOK_TITLE: an overlay: \
             guestbook/overlays/staging/configmap.yaml against guestbook/overlays/production/configmap.yaml",
            "differs: Deployment.apps guestbook/guestbook /spec/replicas: an overlay: \
             guestbook/overlays/staging/deployment.yaml against guestbook/overlays/production/deployment.yaml",
            "staging and production are different in Git: 2 object(s) identical, 2 different",
        ]
    );
}

/// `gitgate render --cluster NAME` renders what that cluster's spoke
/// renders; without it the example fleet's three apps clash.
#[test]
fn gitgate_render_cluster_renders_the_spokes_apps() {
    let dir = support::example_fleet_dir();
    let render = |extra: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_gitgate"))
            .args(["render", "-o", "json", "--repo"])
            .arg(&dir)
            .args(extra)
            .output()
            .unwrap()
    };
    let out = render(&["--cluster", "dr"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("guestbook-dr") && !text.contains("guestbook-staging"), "{text}");
    let out = render(&[]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("is declared by two apps"));
}
