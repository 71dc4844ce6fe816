//! Golden tests: our native kustomize against the real one. Each case in
//! `tests/golden/kustomize/<case>/` holds the inputs and `expected.yaml`,
//! the output of `kubectl kustomize` (kustomize v5.5.0) for them, made by
//! `tests/golden/kustomize/regen.sh` and committed. The case is committed
//! into a real Git repository and built from the commit's tree; objects
//! are compared by identity, field by field.

mod support;

use std::collections::BTreeMap;
use std::path::Path;

use gitgate::render::{ObjectKey, kustomize, yaml};
use gitgate::source::{GitSource, ReadLimits, RepoPath};
use serde_json::Value;
use support::*;

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else if e.file_name() != "expected.yaml" {
            std::fs::copy(e.path(), target).unwrap();
        }
    }
}

fn by_identity(objs: Vec<Value>) -> BTreeMap<ObjectKey, Value> {
    let mut out = BTreeMap::new();
    for o in objs {
        let key = ObjectKey::of(&o).expect("object has an identity");
        assert!(out.insert(key.clone(), o).is_none(), "duplicate {key}");
    }
    out
}

/// Builds `root` (a directory inside `tree_dir`) from a real commit.
fn ours(tree_dir: &Path, root: &str) -> BTreeMap<ObjectKey, Value> {
    let repo = Repo::new();
    copy_dir(tree_dir, repo.path());
    let c = repo.commit("case");
    let (_t, cache) = cache_dir();
    let src = GitSource::open(&repo.url(), &cache).unwrap();
    src.fetch().unwrap();
    let reader = src.reader(oid(&c), ReadLimits::default()).unwrap();
    let dir = RepoPath::parse(root).unwrap();
    let kfile = kustomize::find_kustomization(&reader, &dir).unwrap().expect("a kustomization");
    let objs =
        kustomize::build(&reader, &dir, &kfile, "test").unwrap_or_else(|e| panic!("{}", gitgate::error_chain(&e)));
    by_identity(objs.into_iter().map(|(v, _)| v).collect())
}

fn expected(case_dir: &Path) -> BTreeMap<ObjectKey, Value> {
    let text = std::fs::read(case_dir.join("expected.yaml")).unwrap();
    by_identity(yaml::parse_documents("expected.yaml", &text).unwrap())
}

fn golden() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/kustomize")
}

fn check(case: &str, tree_dir: &Path, root: &str) {
    let want = expected(&golden().join(case));
    let got = ours(tree_dir, root);
    let want_keys: Vec<String> = want.keys().map(ToString::to_string).collect();
    let got_keys: Vec<String> = got.keys().map(ToString::to_string).collect();
    assert_eq!(got_keys, want_keys, "{case}: the same objects");
    for (k, w) in &want {
        let g = &got[k];
        assert_eq!(
            g,
            w,
            "{case}: {k} differs\n ours: {}\n kustomize: {}",
            serde_json::to_string_pretty(g).unwrap(),
            serde_json::to_string_pretty(w).unwrap()
        );
    }
}

#[test]
fn basic_resources_namespace_prefix_suffix_common_labels_and_annotations() {
    check("basic", &golden().join("basic"), "overlay");
}

#[test]
fn images() {
    check("images", &golden().join("images"), ".");
}

#[test]
fn strategic_merge_patches_with_merge_keys() {
    check("patches-smp", &golden().join("patches-smp"), ".");
}

#[test]
fn json6902_patches_with_targets() {
    check("patches-json6902", &golden().join("patches-json6902"), ".");
}

#[test]
fn config_map_and_secret_generators_with_hash_suffix_and_name_references() {
    check("generators", &golden().join("generators"), "overlay");
}

#[test]
fn labels_with_and_without_selectors_and_templates() {
    check("labels", &golden().join("labels"), ".");
}

#[test]
fn the_example_repository_overlays() {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/gitops");
    for app in ["guestbook", "redis"] {
        for env in ["staging", "production"] {
            check(&format!("example-{app}-{env}"), &example, &format!("apps/{app}/overlays/{env}"));
        }
    }
}

#[test]
fn service_account_subjects_follow_namespace_and_prefix() {
    check("rbac", &golden().join("rbac"), ".");
}

#[test]
fn replicas_suffix_generator_namespace_and_references_from_ingress_and_hpa() {
    check("misc", &golden().join("misc"), ".");
}
