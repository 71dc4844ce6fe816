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

/// A Secret sealed for each cluster's own key (real age: the same value,
/// another recipient per cluster) differs in Git by design: `fleet diff`
/// says so, and says its values are not compared.
#[test]
fn a_secret_sealed_per_cluster_differs_by_its_recipients_and_says_so() {
    use base64::Engine as _;
    use gitgate::secrets::keys::AgeIdentity;
    use gitgate::secrets::seal::{self, Binding, Limits, Scope};
    let repo = Repo::new();
    repo.write(
        "gitgate.yaml",
        "clusters:
  - {name: production, labels: {env: production}}
  - {name: dr, labels: {env: production}}
generators:
  - clusters: {}
    template:
      name: \"shop-{{name}}\"
      path: \"shop/{{name}}\"
      destination: {cluster: \"{{name}}\", namespace: shop}
",
    );
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
    let report =
        gitgate::fleet::compare(&render(&repo, &c, Some("production")).unwrap(), &render(&repo, &c, Some("dr")).unwrap());
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
