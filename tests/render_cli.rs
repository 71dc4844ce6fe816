//! `gitgate render` end to end: the binary, the embedded example
//! repository, a plain directory, and errors that point at file and line.

mod support;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use support::*;

fn gitgate(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_gitgate")).args(args).output().unwrap()
}

#[test]
fn the_embedded_example_is_the_examples_directory() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/gitops");
    fn walk(dir: &Path, base: &Path, out: &mut BTreeSet<String>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(&p, base, out);
            } else {
                out.insert(p.strip_prefix(base).unwrap().to_string_lossy().into_owned());
            }
        }
    }
    let mut on_disk = BTreeSet::new();
    walk(&root, &root, &mut on_disk);
    let embedded: BTreeSet<String> = gitgate::render::example::FILES.iter().map(|(p, _)| p.to_string()).collect();
    assert_eq!(embedded, on_disk, "src/render/example.rs lists every file of examples/gitops");
    for (p, content) in gitgate::render::example::FILES {
        assert_eq!(std::fs::read_to_string(root.join(p)).unwrap(), *content, "{p}");
    }
}

#[test]
fn render_prints_the_example_desired_set_with_manifests_in_json() {
    let out = gitgate(&["render", "-o", "json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["commit"].as_str().unwrap().len(), 40);
    let apps: Vec<&str> = doc["apps"].as_array().unwrap().iter().map(|a| a["name"].as_str().unwrap()).collect();
    assert_eq!(apps, ["guestbook-production", "guestbook-staging", "platform", "redis-production", "redis-staging"]);
    let prod = &doc["apps"][0];
    assert_eq!(prod["destination"]["namespace"], "shop-production");
    // The generator sets approval per environment: production waits for an approver.
    assert_eq!(prod["syncPolicy"]["approval"], "required", "{prod:#}");
    assert_eq!(doc["apps"][1]["syncPolicy"]["approval"], "automatic");
    let deploy = prod["objects"].as_array().unwrap().iter().find(|o| o["kind"] == "Deployment").unwrap();
    assert_eq!(deploy["manifest"]["spec"]["replicas"], 3);
    assert_eq!(
        deploy["manifest"]["spec"]["template"]["spec"]["containers"][0]["image"],
        "ghcr.io/example/guestbook:1.0.0"
    );
    assert_eq!(deploy["source"], "apps/guestbook/base/deployment.yaml");
    assert!(deploy["digest"].as_str().unwrap().starts_with("sha256:"));
    // The hash-suffixed ConfigMap is referenced by its final name.
    let cm = prod["objects"].as_array().unwrap().iter().find(|o| o["kind"] == "ConfigMap").unwrap();
    assert_eq!(
        deploy["manifest"]["spec"]["template"]["spec"]["containers"][0]["envFrom"][0]["configMapRef"]["name"],
        cm["name"]
    );
}

#[test]
fn render_yaml_summary_of_one_app_from_a_plain_directory() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/gitops");
    let out = gitgate(&["render", "--repo", dir.to_str().unwrap(), "--app", "platform"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("name: platform") && text.contains("name: shop-staging") && text.contains("kind: Namespace"),
        "{text}"
    );
    assert!(!text.contains("guestbook"), "only the app asked for: {text}");
    assert!(!text.contains("manifest"), "the YAML summary has no manifests");
    assert!(text.starts_with("commit: "), "{text}");
    // The same directory gives the same commit ID (and so the same stamps).
    let again = gitgate(&["render", "--repo", dir.to_str().unwrap(), "--app", "platform"]);
    assert_eq!(String::from_utf8(again.stdout).unwrap(), text);
}

#[test]
fn render_errors_point_at_file_and_line() {
    let repo = Repo::new();
    repo.write("gitgate.yaml", "apps:\n  - {name: web, path: web, destination: {namespace: web}}\n");
    repo.write("web/cm.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\n  name: y\n");
    repo.commit("duplicate key");
    let out = gitgate(&["render", "--repo", &repo.url()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("web/cm.yaml:5:"), "{err}");

    let out = gitgate(&["render", "--repo", &repo.url(), "--rev", "no-such-branch"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no-such-branch"));
}
