//! Fleet figures (issue 18):
//! - `gitgate fleet diff` of two clusters × 1,000 objects ≤ 2 s from
//!   desired sets alone — both clusters rendered from cold (fresh
//!   renderers, as the command does) and compared; also the comparison
//!   alone, the sets already rendered;
//! - the hub's refresh of 3 clusters × 50 apps ≤ 1 s: three spokes on
//!   HTTPS behind their real login, each asked `GET /api/v1/apps` with its
//!   token, the answers read and the parity group compared;
//! - a spoke's status endpoint ≤ 10 ms: one `GET /api/v1/apps` of 50 apps
//!   with the hub's token.
//!
//! `cargo bench --bench fleet`

#[path = "../tests/support/mod.rs"]
mod support;

use std::hint::black_box;

use criterion::{BatchSize, Criterion, criterion_group};
use gitgate::render::{RenderOptions, Renderer};
use gitgate::source::GitSource;
use support::{Repo, cache_dir, oid};

const APPS: usize = 10;
const PER_APP: usize = 100;

/// A ConfigMap and a Deployment per pair; dr differs from staging in one
/// value of every 50th object.
fn object(cluster: &str, a: usize, i: usize) -> String {
    let level = if cluster == "dr" && i.is_multiple_of(50) { "debug" } else { "info" };
    if i.is_multiple_of(2) {
        format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: app{a}-config{i}\ndata:\n  LOG_LEVEL: {level}\n  ENDPOINT: https://api.example.com/v1/app{a}/{i}\n"
        )
    } else {
        format!(
            "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: app{a}-deploy{i}\nspec:\n  replicas: 2\n  selector:\n    matchLabels: {{app: app{a}-{i}}}\n  template:\n    metadata:\n      labels: {{app: app{a}-{i}}}\n    spec:\n      containers:\n        - name: main\n          image: registry.example.com/app{a}:1.{i}.0\n"
        )
    }
}

fn fixture() -> (Repo, tempfile::TempDir, GitSource, gix::ObjectId) {
    let repo = Repo::new();
    let mut cfg = String::from("clusters:\n  - {name: staging}\n  - {name: dr}\napps:\n");
    for cluster in ["staging", "dr"] {
        for a in 0..APPS {
            for f in 0..PER_APP / 10 {
                let docs: Vec<String> = (f * 10..(f + 1) * 10).map(|i| object(cluster, a, i)).collect();
                repo.write(&format!("{cluster}/app{a}/f{f}.yaml"), &docs.join("---\n"));
            }
            cfg.push_str(&format!(
                "  - {{name: app{a}-{cluster}, path: {cluster}/app{a}, destination: {{cluster: {cluster}, namespace: app{a}}}}}\n"
            ));
        }
    }
    repo.write("gitgate.yaml", &cfg);
    let head = oid(&repo.commit("a fleet of two"));
    let (cache_dir, cache) = cache_dir();
    let src = GitSource::open(&repo.url(), &cache).unwrap();
    src.fetch().unwrap();
    (repo, cache_dir, src, head)
}

fn render(src: &GitSource, head: gix::ObjectId, cluster: &str) -> std::sync::Arc<gitgate::render::DesiredSet> {
    let opts = RenderOptions { cluster: Some(cluster.into()), ..Default::default() };
    Renderer::new(opts).desired(&src.repo(), head).unwrap()
}

fn bench(c: &mut Criterion) {
    let (_repo, _cache, src, head) = fixture();
    let (a, b) = (render(&src, head, "staging"), render(&src, head, "dr"));
    assert_eq!((a.len(), b.len()), (APPS * PER_APP, APPS * PER_APP));
    let report = gitgate::fleet::compare(&a, &b);
    assert_eq!(report.differences.len(), APPS * PER_APP / 50, "one object in 50 differs");
    let mut g = c.benchmark_group("fleet");
    g.sample_size(10);
    g.bench_function("fleet diff, 2 clusters x 1,000 objects, rendered from cold and compared", |bencher| {
        bencher.iter(|| {
            let (a, b) = (render(&src, head, "staging"), render(&src, head, "dr"));
            black_box(gitgate::fleet::compare(&a, &b))
        })
    });
    g.bench_function("compare alone, 2 x 1,000 objects", |bencher| {
        bencher.iter_batched(|| (), |()| black_box(gitgate::fleet::compare(&a, &b)), BatchSize::SmallInput)
    });
    g.finish();
}

/// 50 apps of 20 objects each (10 Deployments, 10 ConfigMaps).
fn apps(cluster: &str) -> Vec<gitgate::sync::status::AppStatus> {
    (0..50)
        .map(|a| {
            let objects = (0..20)
                .map(|i| {
                    let kind = if i % 2 == 0 { "ConfigMap" } else { "Deployment" };
                    let mut o = support::fleet::object(kind, &format!("app{a}-{i}"), &format!("sha256:{a:04}{i:04}"));
                    o.namespace = format!("app{a}");
                    o
                })
                .collect();
            support::fleet::app(&format!("app{a}-{cluster}"), objects)
        })
        .collect()
}

fn hub(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (hub, spokes) = rt.block_on(async {
        let spokes = [
            support::fleet::spoke("staging", "staging", "t-staging", apps("staging")).await,
            support::fleet::spoke("production", "production", "t-production", apps("production")).await,
            support::fleet::spoke("dr", "production", "t-dr", apps("dr")).await,
        ];
        let file = support::fleet::fleet_file(
            dir.path(),
            &[
                ("staging", &spokes[0], "t-staging"),
                ("production", &spokes[1], "t-production"),
                ("dr", &spokes[2], "t-dr"),
            ],
            "",
        );
        let hub = gitgate::fleet::hub::Hub::new(file, Default::default());
        let view = hub.refresh().await;
        assert!(view.spokes.iter().all(|s| s.summary.apps == 50 && s.status.apps[0].objects.len() == 20), "{view:?}");
        assert_eq!(view.parity[0].identical, 1000, "production and dr: the same 1,000 objects");
        (hub, spokes)
    });
    let token = std::fs::read_to_string(dir.path().join("production.token")).unwrap();
    let ca = std::fs::read(&spokes[1].ca).unwrap();
    let client =
        reqwest::Client::builder().add_root_certificate(reqwest::Certificate::from_pem(&ca).unwrap()).build().unwrap();
    let url = format!("{}/api/v1/apps", spokes[1].url);
    let mut g = c.benchmark_group("fleet hub");
    g.sample_size(20);
    g.bench_function("hub refresh, 3 clusters x 50 apps (1,000 objects each)", |b| {
        b.iter(|| rt.block_on(async { black_box(hub.refresh().await) }))
    });
    g.bench_function("a spoke's GET /api/v1/apps, 50 apps, with the hub's token", |b| {
        b.iter(|| {
            rt.block_on(async {
                let resp = client.get(&url).bearer_auth(token.trim()).send().await.unwrap();
                assert!(resp.status().is_success());
                black_box(resp.bytes().await.unwrap())
            })
        })
    });
    g.finish();
}

criterion_group!(benches, bench, hub);

fn main() {
    benches();
    criterion::Criterion::default().configure_from_args().final_summary();
}
