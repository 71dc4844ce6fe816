//! Render figures (issue 3):
//! - a repository of 1,000 objects rendered from cold (a fresh renderer:
//!   no caches) ≤ 1 s — plain YAML and Kustomize variants;
//! - a new commit that changes one file re-renders only the app it touches
//!   (warm renderer at the parent, then the child);
//! - a desired set of 10,000 objects held in ≤ 2× its YAML size: printed
//!   once before the timings, as the set's own heap accounting
//!   (`DesiredSet::heap_bytes`: table, keys, manifests, sources) and as the
//!   process RSS growth while rendering it (an upper bound: it includes the
//!   allocator's high-water mark from parsing, which is freed but kept by
//!   malloc).
//!
//! - one lookup by identity in that set (the admission hot path).
//!
//! `cargo bench --bench render`

use std::hint::black_box;
use std::path::Path;
use std::process::Command;

use criterion::{BatchSize, Criterion, criterion_group};
use gitgate::render::{RenderOptions, Renderer};
use gitgate::source::GitSource;

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args(["-c", "user.name=bench", "-c", "user.email=bench@localhost", "-c", "commit.gpgsign=false"])
        .args(args)
        .current_dir(dir)
        .output()
        .expect("git");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn object(app: usize, i: usize) -> String {
    match i % 3 {
        0 => format!(
            "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: app{app}-deploy{i}\n  labels:\n    app.kubernetes.io/name: app{app}\n    app.kubernetes.io/component: c{i}\nspec:\n  replicas: 2\n  selector:\n    matchLabels:\n      app.kubernetes.io/name: app{app}\n      app.kubernetes.io/component: c{i}\n  template:\n    metadata:\n      labels:\n        app.kubernetes.io/name: app{app}\n        app.kubernetes.io/component: c{i}\n    spec:\n      containers:\n        - name: main\n          image: registry.example.com/team/app{app}:1.{i}.0\n          ports:\n            - containerPort: 8080\n          resources:\n            requests: {{cpu: 100m, memory: 128Mi}}\n"
        ),
        1 => format!(
            "apiVersion: v1\nkind: Service\nmetadata:\n  name: app{app}-svc{i}\n  labels:\n    app.kubernetes.io/name: app{app}\nspec:\n  selector:\n    app.kubernetes.io/name: app{app}\n    app.kubernetes.io/component: c{i}\n  ports:\n    - port: 80\n      targetPort: 8080\n"
        ),
        _ => format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: app{app}-config{i}\n  labels:\n    app.kubernetes.io/name: app{app}\ndata:\n  LOG_LEVEL: info\n  FEATURE_FLAGS: \"a,b,c\"\n  ENDPOINT: https://api.example.com/v1/app{app}/{i}\n"
        ),
    }
}

/// A repository of `apps` × `per_app` objects, one file per 10 objects.
/// Returns (work dir, YAML bytes written).
fn generate(dir: &Path, apps: usize, per_app: usize, kustomize: bool) -> usize {
    let mut cfg = String::from("apps:\n");
    let mut yaml_bytes = 0;
    for a in 0..apps {
        let base = dir.join(format!("apps/app{a}"));
        std::fs::create_dir_all(&base).unwrap();
        let mut files = Vec::new();
        for f in 0..per_app.div_ceil(10) {
            let docs: Vec<String> = (f * 10..((f + 1) * 10).min(per_app)).map(|i| object(a, i)).collect();
            let text = docs.join("---\n");
            yaml_bytes += text.len();
            let name = format!("objects-{f}.yaml");
            std::fs::write(base.join(&name), text).unwrap();
            files.push(name);
        }
        if kustomize {
            let k = format!(
                "resources:\n{}commonLabels:\n  env: prod\nimages:\n  - name: registry.example.com/team/app{a}\n    newTag: 2.0.0\n",
                files.iter().map(|f| format!("  - {f}\n")).collect::<String>()
            );
            std::fs::write(base.join("kustomization.yaml"), k).unwrap();
        }
        cfg.push_str(&format!("  - {{name: app{a}, path: apps/app{a}, destination: {{namespace: ns{a}}}}}\n"));
    }
    std::fs::write(dir.join("gitgate.yaml"), cfg).unwrap();
    yaml_bytes
}

struct Fixture {
    _tmp: tempfile::TempDir,
    work: std::path::PathBuf,
    src: GitSource,
    head: gix::ObjectId,
    yaml_bytes: usize,
}

fn fixture(apps: usize, per_app: usize, kustomize: bool) -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let work = tmp.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    git(&work, &["init", "-q", "-b", "main"]);
    let yaml_bytes = generate(&work, apps, per_app, kustomize);
    git(&work, &["add", "-A"]);
    git(&work, &["commit", "-q", "-m", "generated"]);
    let head = git(&work, &["rev-parse", "HEAD"]);
    let src = GitSource::open(work.to_str().unwrap(), &tmp.path().join("cache.git")).unwrap();
    src.fetch().unwrap();
    let head = gix::ObjectId::from_hex(head.as_bytes()).unwrap();
    Fixture { _tmp: tmp, work, src, head, yaml_bytes }
}

fn rss_bytes() -> usize {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1).and_then(|p| p.parse::<usize>().ok()))
        .map(|pages| pages * 4096)
        .unwrap_or(0)
}

fn memory_figure(c: &mut Criterion) {
    let f = fixture(100, 100, false);
    let repo = f.src.repo();
    let before = rss_bytes();
    // The renderer stays alive, as in the server: its caches share the
    // manifests with the set.
    let renderer = Renderer::new(RenderOptions::default());
    let set = renderer.desired(&repo, f.head).unwrap();
    let after = rss_bytes();
    let heap = set.heap_bytes();
    println!(
        "memory: {} objects, YAML {} bytes; desired set heap {} bytes = {:.2}× YAML; RSS growth (renderer + set, incl. allocator high-water from parsing) {} bytes = {:.2}× YAML",
        set.len(),
        f.yaml_bytes,
        heap,
        heap as f64 / f.yaml_bytes as f64,
        after.saturating_sub(before),
        after.saturating_sub(before) as f64 / f.yaml_bytes as f64
    );
    // The admission hot path: one lookup by identity in the 10k-object set.
    c.bench_function("desired_set_lookup_10k", |b| {
        b.iter(|| {
            black_box(set.get(black_box("apps"), "Deployment", black_box("ns57"), black_box("app57-deploy42")))
                .is_some()
        })
    });
    black_box((set, renderer));
}

fn bench(c: &mut Criterion) {
    memory_figure(c);
    let mut g = c.benchmark_group("render");
    g.sample_size(10);
    for (label, kustomize) in [("cold_1000_objects_plain", false), ("cold_1000_objects_kustomize", true)] {
        let f = fixture(10, 100, kustomize);
        let repo = f.src.repo();
        g.bench_function(label, |b| {
            b.iter(|| {
                let set = Renderer::new(RenderOptions::default()).desired(&repo, f.head).unwrap();
                assert_eq!(set.len(), 1000);
                black_box(set)
            })
        });
    }

    // One file of one app changes: warm renderer at the parent, then the child.
    let f = fixture(10, 100, false);
    std::fs::write(f.work.join("apps/app3/objects-0.yaml"), object(3, 0).replace("replicas: 2", "replicas: 5"))
        .unwrap();
    git(&f.work, &["commit", "-qam", "one file"]);
    f.src.fetch().unwrap();
    let child = f.src.resolve("main").unwrap();
    let repo = f.src.repo();
    g.bench_function("incremental_one_file_of_1000_objects", |b| {
        b.iter_batched(
            || {
                let r = Renderer::new(RenderOptions::default());
                r.desired(&repo, f.head).unwrap();
                r
            },
            |r| {
                let set = r.desired(&repo, child).unwrap();
                assert_eq!(r.stats().app_renders, 11, "only the touched app renders again");
                black_box(set)
            },
            BatchSize::PerIteration,
        )
    });
    g.finish();
}

criterion_group!(benches, bench);

fn main() {
    benches();
    criterion::Criterion::default().configure_from_args().final_summary();
}
