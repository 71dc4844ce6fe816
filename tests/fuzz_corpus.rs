//! Replays every committed fuzz corpus file (`fuzz/corpus/<target>/`)
//! through the same function its `cargo fuzz` target calls, on stable, so
//! an input that once crashed (and is now a corpus file) stays fixed; and
//! checks that the input formats of the structured targets mean what
//! FUZZING.md says, so the fuzzer explores the real code paths.

mod support;

use std::path::{Path, PathBuf};

use gitgate::render::{RenderOptions, Renderer};
use gitgate::source::GitSource;
use support::*;

#[test]
fn every_fuzz_corpus_input_runs_without_panicking() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
    for target in gitgate::fuzzing::TARGETS {
        let dir = root.join(target);
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| e.unwrap().path())
            .filter(|p| p.is_file())
            .collect();
        files.sort();
        assert!(!files.is_empty(), "{} has no corpus files", dir.display());
        for file in files {
            let data = std::fs::read(&file).unwrap();
            let run = std::panic::catch_unwind(|| gitgate::fuzzing::run(target, &data));
            assert!(run.is_ok(), "fuzz target {target} panicked on {}", file.display());
        }
    }
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() { out.extend(files_under(&path)) } else { out.push(path) }
    }
    out.sort();
    out
}

/// The `render_tree` input format: `=== path` sections make the very tree
/// `git commit` makes of the same files (same tree id), and it renders to
/// the same desired set. The bundled example repository, both ways.
#[test]
fn the_render_tree_input_makes_the_tree_git_makes_and_renders_the_same() {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/gitops");
    let repo = Repo::new();
    let mut input = Vec::new();
    for file in files_under(&example) {
        let rel = file.strip_prefix(&example).unwrap().to_str().unwrap().to_owned();
        let content = std::fs::read_to_string(&file).unwrap();
        assert!(content.ends_with('\n'), "{rel}: the input format needs a final newline");
        repo.write(&rel, &content);
        input.extend_from_slice(format!("=== {rel}\n{content}").as_bytes());
    }
    let c = repo.commit("the example");
    let (_t, cache) = cache_dir();
    let src = GitSource::open(&repo.url(), &cache).unwrap();
    src.fetch().unwrap();
    let real = Renderer::new(RenderOptions::default()).desired(&src.repo(), oid(&c)).unwrap();

    let (generated_repo, commit) = gitgate::fuzzing::generated_commit(&input).expect("a tree");
    let generated = gitgate::fuzzing::render_generated(&generated_repo, commit)
        .unwrap_or_else(|e| panic!("{}", gitgate::error_chain(&e)));
    assert_eq!(generated.tree(), real.tree(), "the same files make the same tree");
    assert!(real.len() >= 5, "the example renders its apps");
    let summary = |set: &gitgate::render::DesiredSet| -> Vec<(String, String, String)> {
        set.objects().into_iter().map(|(k, o)| (k.to_string(), o.source.to_string(), o.digest_string())).collect()
    };
    assert_eq!(summary(&generated), summary(&real));

    // A symlink section is a symlink: one leading out of its app is refused.
    let escape = b"apps:\n  - {name: a, path: apps/a, destination: {namespace: a}}\n=== apps/a/x.yaml -> ../../secret.yaml\n=== secret.yaml\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: s}\n";
    let (r, c) = gitgate::fuzzing::generated_commit(escape).unwrap();
    let err = gitgate::error_chain(&gitgate::fuzzing::render_generated(&r, c).unwrap_err());
    assert!(err.contains("apps/a/x.yaml") && err.contains("outside"), "{err}");
}

/// The `cel_policy` line format: each line is a validation of a policy
/// that matches every request and denies; `m:` lines are match conditions;
/// after `%%` comes the AdmissionReview to decide.
#[test]
fn the_cel_policy_input_decides_as_its_lines_say() {
    let allowed = |input: &[u8]| -> Vec<bool> {
        gitgate::fuzzing::cel_policy_decisions(input)
            .unwrap_or_else(|e| panic!("{e}"))
            .iter()
            .map(|d| d.allowed())
            .collect()
    };
    // The default request creates Deployment "web".
    assert_eq!(allowed(b"object.metadata.name == 'web'\n"), [true, true]);
    assert_eq!(allowed(b"object.metadata.name == 'not-web'\n"), [false, false]);
    assert_eq!(allowed(b"git.managed\n"), [false, true], "the second decision has git.managed");
    assert_eq!(allowed(b"m: request.operation == 'DELETE'\nfalse\n"), [true, true], "not matched");
    let delete = std::fs::read(common_fixture("validate-delete-configmap.json")).unwrap();
    let mut input = b"m: request.operation == 'DELETE'\nfalse\n\n%%\n".to_vec();
    input.extend_from_slice(&delete);
    assert_eq!(allowed(&input), [false, false], "the request after %% is decided");
    assert!(gitgate::fuzzing::cel_policy_decisions(b"object.metadata.name ==\n").is_err(), "compile errors");
}

fn common_fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/admission").join(name)
}

fn render_repo(files: &[(&str, &str)]) -> Result<std::sync::Arc<gitgate::render::DesiredSet>, String> {
    let repo = Repo::new();
    for (path, content) in files {
        repo.write(path, content);
    }
    let c = repo.commit("render");
    let (_t, cache) = cache_dir();
    let src = GitSource::open(&repo.url(), &cache).unwrap();
    src.fetch().unwrap();
    Renderer::new(RenderOptions::default()).desired(&src.repo(), oid(&c)).map_err(|e| gitgate::error_chain(&e))
}

/// Found by the `render_tree` fuzz target (a timeout; FUZZING.md, and the
/// input is in its corpus): 380 bytes, six anchors nine aliases wide,
/// expanded to 590,000 nodes — under the node budget, so it rendered, in
/// seconds per commit, into a ConfigMap nothing would accept (YAML bomb
/// class, Kubernetes CVE-2019-11253). What aliases replay is bounded now:
/// the file is refused naming it. Anchors reused as manifests reuse them
/// still render.
#[test]
fn fuzz_render_tree_timeout_a_small_alias_bomb_under_the_node_budget_is_refused() {
    let config = "apps:\n  - {name: a, path: apps/a, destination: {namespace: a}}\n";
    let bomb = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: bomb}\ndata:\n  \
                a: &a [\"x\",\"x\",\"x\",ures\"x\",\"x\",\"x\",\"x\",\"x\",\"x\"]\n  \
                b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\n  c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]\n  \
                d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]\n  e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]\n  \
                f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]\n";
    assert!(bomb.len() < 400);
    let start = std::time::Instant::now();
    let msg = render_repo(&[("gitgate.yaml", config), ("apps/a/bomb.yaml", bomb)]).unwrap_err();
    assert!(msg.contains("apps/a/bomb.yaml") && msg.contains("alias"), "{msg}");
    assert!(start.elapsed() < std::time::Duration::from_secs(5), "refused early: {:?}", start.elapsed());

    let reuse = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\nspec:\n  selector: {matchLabels: {app: web}}\n  \
                 template:\n    metadata: {labels: {app: web}}\n    spec:\n      containers:\n        \
                 - {name: a, image: nginx, env: &env [{name: A, value: \"1\"}, {name: B, value: \"2\"}]}\n        \
                 - {name: b, image: nginx, env: *env}\n        - {name: c, image: nginx, env: *env}\n";
    let set = render_repo(&[("gitgate.yaml", config), ("apps/a/web.yaml", reuse)]).unwrap();
    let web = set.get("apps", "Deployment", "a", "web").expect("rendered").value();
    assert_eq!(web["spec"]["template"]["spec"]["containers"][2]["env"][1]["value"], "2");
}
