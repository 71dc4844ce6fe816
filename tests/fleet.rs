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
