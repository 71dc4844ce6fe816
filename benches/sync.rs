//! The sync loop's figures against a real kube-apiserver and
//! kube-controller-manager (`KUBE_BIN_DIR`; skips loudly without):
//!
//! 1. raw apiserver throughput: the same 1,000 objects created by 16
//!    parallel clients (the ceiling), and server-side-applied plain;
//! 2. `sync_once` of 1,000 objects (800 ConfigMaps, 200 Deployments) from
//!    cold, in one wave, same apiserver, same run: objects/s and the ratio;
//!    three rounds of 1 and 2, each in fresh namespaces, and the median
//!    ratio; with python3 + `requests`, also the same mix created by the
//!    peers' client (`benches/peers_client.py`, the harness of the issue's
//!    ≈ 620/s); `GITGATE_BENCH_PHASES=throughput` stops after this;
//! 3. `gitgate serve` (release build): git push → applied with the push
//!    hook, and drift reverted (a bypass → Git's value back), each repeated;
//! 4. RSS of `gitgate serve` while it manages 10,000 objects.
//!
//! `cargo bench --bench sync`

#[path = "../tests/support/mod.rs"]
mod support;
use support::cluster;
#[path = "support/peers.rs"]
mod peers;
#[path = "support/proc.rs"]
mod proc;

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt as _;
use gitgate::render::{RenderOptions, Renderer};
use gitgate::source::GitSource;
use gitgate::sync::reconcile::{Reconciler, Targets};
use gitgate::sync::status::StatusStore;
use gitgate::sync::target::Target;
use gitgate::sync::{SyncConfig, plan::PruneGuard};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, Patch, PatchParams, PostParams};
use proc::cpu_seconds;
use serde_json::{Value, json};
use support::{Repo, cache_dir, oid};

const N: usize = 1000;
const CLIENTS: usize = 16;
const ROUNDS: usize = 3;

fn configmap(name: &str, value: &str) -> String {
    format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\ndata:\n  value: \"{value}\"\n")
}

fn deployment(name: &str) -> String {
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: {name}\nspec:\n  replicas: 0\n  selector:\n    matchLabels: {{app: {name}}}\n  template:\n    metadata:\n      labels: {{app: {name}}}\n    spec:\n      containers:\n        - name: app\n          image: registry.example.invalid/{name}:1\n"
    )
}

fn app_repo(ns: &str, configmaps: usize, deployments: usize) -> (Repo, String) {
    let repo = Repo::new();
    repo.write(
        "gitgate.yaml",
        &format!("apps:\n  - {{name: bench, path: app, destination: {{namespace: {ns}}}, syncPolicy: {{prune: true, selfHeal: true}}}}\n"),
    );
    for i in 0..configmaps {
        repo.write(&format!("app/cm-{i:05}.yaml"), &configmap(&format!("cm-{i:05}"), "1"));
    }
    for i in 0..deployments {
        repo.write(&format!("app/deploy-{i:04}.yaml"), &deployment(&format!("web-{i:04}")));
    }
    let head = repo.commit("bench app");
    (repo, head)
}

/// The same 1,000 objects (800 ConfigMaps, 200 Deployments) created plain,
/// 16 at a time: the apiserver's ceiling in this run.
async fn raw_creates(client: &kube::Client, ns: &str) -> f64 {
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    let deploys: Api<k8s_openapi::api::apps::v1::Deployment> = Api::namespaced(client.clone(), ns);
    let t = Instant::now();
    futures_util::stream::iter((0..N).map(|i| {
        let (cms, deploys) = (cms.clone(), deploys.clone());
        async move {
            if i < 800 {
                let cm: ConfigMap = serde_saphyr::from_str(&configmap(&format!("raw-{i:05}"), "1")).unwrap();
                cms.create(&PostParams::default(), &cm).await.unwrap();
            } else {
                let d = serde_saphyr::from_str(&deployment(&format!("raw-{i:05}"))).unwrap();
                deploys.create(&PostParams::default(), &d).await.unwrap();
            }
        }
    }))
    .buffer_unordered(CLIENTS)
    .collect::<Vec<_>>()
    .await;
    N as f64 / t.elapsed().as_secs_f64()
}

/// The same objects server-side-applied plain, 16 at a time (one field
/// manager, force): the apiserver's ceiling for applies in this run.
async fn raw_applies(client: &kube::Client, ns: &str) -> f64 {
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    let deploys: Api<k8s_openapi::api::apps::v1::Deployment> = Api::namespaced(client.clone(), ns);
    let params = PatchParams::apply("bench").force();
    let t = Instant::now();
    futures_util::stream::iter((0..N).map(|i| {
        let (cms, deploys, params) = (cms.clone(), deploys.clone(), params.clone());
        async move {
            let name = format!("ssa-{i:05}");
            if i < 800 {
                let cm: Value = serde_saphyr::from_str(&configmap(&name, "1")).unwrap();
                cms.patch(&name, &params, &Patch::Apply(&cm)).await.unwrap();
            } else {
                let d: Value = serde_saphyr::from_str(&deployment(&name)).unwrap();
                deploys.patch(&name, &params, &Patch::Apply(&d)).await.unwrap();
            }
        }
    }))
    .buffer_unordered(CLIENTS)
    .collect::<Vec<_>>()
    .await;
    N as f64 / t.elapsed().as_secs_f64()
}

/// CPU used by (this process, kube-apiserver, etcd) so far.
fn cpu(c: &cluster::Cluster) -> [f64; 3] {
    let pid = |name: &str| std::fs::read_to_string(c.run_dir.join(format!("pids/{name}.pid"))).unwrap_or_default();
    [cpu_seconds("self"), cpu_seconds(pid("kube-apiserver").trim()), cpu_seconds(pid("etcd").trim())]
}

/// `per object: client X ms, apiserver Y ms, etcd Z ms of CPU`.
fn cpu_per_object(before: [f64; 3], after: [f64; 3]) -> String {
    let ms = |i: usize| (after[i] - before[i]) * 1000.0 / N as f64;
    format!("CPU per object: client {:.2} ms, apiserver {:.2} ms, etcd {:.2} ms", ms(0), ms(1), ms(2))
}

/// objects/s of `sync_once` from cold, and the CPU used by the sync
/// alone (the repository and its render are made before).
async fn sync_from_cold(c: &cluster::Cluster, client: &kube::Client, ns: &str) -> (f64, [f64; 3], [f64; 3]) {
    let (repo, head) = app_repo(ns, 800, 200);
    let (_t, cache) = cache_dir();
    let src = Arc::new(GitSource::open(&repo.url(), &cache).unwrap());
    src.fetch().unwrap();
    let desired = Renderer::new(RenderOptions::default()).desired(&src.repo(), oid(&head)).unwrap();
    let target = Arc::new(Target::new("bench", client.clone(), 5000.0, 5000));
    // each round keeps its own inventory: a shared one would prune the
    // previous round's objects during the measured sync
    let inventory_ns = format!("{ns}-gitgate");
    c.ensure_namespace(&inventory_ns);
    let config = SyncConfig {
        namespace: inventory_ns,
        prune_guard: PruneGuard { max_count: 100_000, max_share: 1.0 },
        ..SyncConfig::default()
    };
    let r = Reconciler::new(
        config,
        Targets::new(target, None, 5000.0, 5000),
        src,
        Arc::new(StatusStore::new(None)),
        None,
        None,
    );
    let before = cpu(c);
    let t = Instant::now();
    let out = r.sync_once(&desired).await;
    let secs = t.elapsed().as_secs_f64();
    let after = cpu(c);
    assert_eq!(out[0].objects.len(), N, "{}", out[0].message);
    assert!(out[0].objects.iter().all(|o| o.sync == gitgate::sync::status::SyncStatus::Synced), "{}", out[0].message);
    (N as f64 / secs, before, after)
}

fn percentile(mut v: Vec<f64>, p: f64) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[((v.len() - 1) as f64 * p).round() as usize]
}

/// Killed (its process group) when dropped.
struct Serve {
    child: support::reap::Guard,
    port: u16,
    http: reqwest::Client,
    _work: tempfile::TempDir,
}

fn start_serve(c: &cluster::Cluster, repo: &Repo, ns: &str, extra: &[&str]) -> Serve {
    use std::io::BufRead as _;
    let work = tempfile::tempdir().unwrap();
    let mut child = support::reap::spawn(
        std::process::Command::new(env!("CARGO_BIN_EXE_gitgate"))
            .args(["serve", "--listen", "127.0.0.1:0", "--repo", &repo.url(), "--sync", "on", "--namespace", ns])
            .arg("--kubeconfig")
            .arg(&c.kubeconfig)
            .args(extra)
            .current_dir(work.path())
            .env("RUST_LOG", "warn,gitgate::cli=info")
            .stderr(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null()),
    )
    .unwrap();
    let mut err = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    let mut port = 0;
    while err.read_line(&mut line).unwrap() > 0 {
        if let Some(rest) = line.split("listening on https://127.0.0.1:").nth(1) {
            port = rest.split_whitespace().next().unwrap().parse().unwrap();
            break;
        }
        line.clear();
    }
    std::thread::spawn(move || std::io::copy(&mut err, &mut std::io::sink()));
    let ca = std::fs::read(work.path().join("certs/ca.crt")).unwrap();
    let http =
        reqwest::Client::builder().add_root_certificate(reqwest::Certificate::from_pem(&ca).unwrap()).build().unwrap();
    Serve { child, port, http, _work: work }
}

impl Serve {
    async fn app(&self) -> Option<Value> {
        let v: Value = self
            .http
            .get(format!("https://127.0.0.1:{}/api/v1/apps", self.port))
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        v["apps"].as_array()?.first().cloned()
    }

    async fn wait_synced(&self, commit: &str, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            if let Some(a) = self.app().await
                && a["syncedCommit"] == commit
                && a["sync"] == "Synced"
            {
                return;
            }
            assert!(Instant::now() < deadline, "never synced {commit}: {:?}", self.app().await);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn push_hook(&self, secret: &str) {
        use hmac::{KeyInit as _, Mac as _};
        let body = br#"{"ref":"refs/heads/main","after":"0000000000000000000000000000000000000000"}"#;
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
        mac.update(body);
        let sig: String = mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect();
        let r = self
            .http
            .post(format!("https://127.0.0.1:{}/hooks/git", self.port))
            .header("X-GitHub-Event", "push")
            .header("X-Hub-Signature-256", format!("sha256={sig}"))
            .header("Content-Type", "application/json")
            .body(&body[..])
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "{}", r.status());
    }

    fn rss_mib(&self) -> f64 {
        self.status_mib("VmRSS:")
    }

    /// The resident peak (VmHWM).
    fn peak_mib(&self) -> f64 {
        self.status_mib("VmHWM:")
    }

    fn status_mib(&self, field: &str) -> f64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
            .unwrap_or(0.0)
            / 1024.0
    }
}

async fn wait_value(api: &Api<ConfigMap>, name: &str, want: &str) -> Instant {
    loop {
        if let Ok(cm) = api.get(name).await
            && cm.data.as_ref().and_then(|d| d.get("value")).map(String::as_str) == Some(want)
        {
            return Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::main]
async fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let Some(c) = cluster::cluster("benches/sync") else { return };
    let client = c.client().await;
    // Warm-up (connections, the apiserver's caches), then each phase on a
    // quiet control plane: the controller manager's work on one phase's
    // 200 Deployments (ReplicaSets) must not land in the next one.
    c.ensure_namespace("bench-warm");
    raw_creates(&client, "bench-warm").await;
    let settle = || tokio::time::sleep(Duration::from_secs(5));
    settle().await;
    // Three rounds of (raw creates, plain applies, sync_once), each in fresh
    // namespaces; the ratios are per round, the figure is their median.
    let mut ratios = Vec::new();
    let mut py_ratios = Vec::new();
    let py = peers::PeersClient::new(c);
    for round in 0..ROUNDS {
        let ns = |what: &str| {
            let ns = format!("bench-{what}-{round}");
            c.ensure_namespace(&ns);
            ns
        };
        let (raw_ns, ssa_ns, sync_ns) = (ns("raw"), ns("ssa"), ns("sync"));
        let t0 = cpu(c);
        let raw = raw_creates(&client, &raw_ns).await;
        let t1 = cpu(c);
        settle().await;
        let t1b = cpu(c);
        let ssa = raw_applies(&client, &ssa_ns).await;
        let t2 = cpu(c);
        settle().await;
        let (synced, t2b, t3) = sync_from_cold(c, &client, &sync_ns).await;
        settle().await;
        // the same mix created by the peers' client (the issue's ≈620/s)
        let py_raw = py.as_ref().and_then(|py| py.run(&ns("py"), N, 200));
        settle().await;
        ratios.push(synced / raw);
        println!(
            "round {}: 1,000 objects: raw creates ({CLIENTS} clients) {raw:.0}/s; gitgate sync_once from cold {synced:.0}/s = {:.0}% of raw",
            round + 1,
            synced / raw * 100.0
        );
        println!(
            "  plain server-side applies ({CLIENTS} clients) {ssa:.0}/s = {:.0}% of raw creates; sync_once = {:.0}% of them",
            ssa / raw * 100.0,
            synced / ssa * 100.0
        );
        println!("  raw creates: {}", cpu_per_object(t0, t1));
        println!("  raw applies: {}", cpu_per_object(t1b, t2));
        println!("  sync_once:   {}", cpu_per_object(t2b, t3));
        if let Some(p) = py_raw {
            py_ratios.push(synced / p);
            println!(
                "  the peers' client (16 threads, python requests) creates the same mix at {p:.0}/s; sync_once = {:.0}% of it",
                synced / p * 100.0
            );
        }
    }
    println!(
        "sync_once from cold relative to raw creates, per round: {}; median {:.0}%",
        ratios.iter().map(|r| format!("{:.0}%", r * 100.0)).collect::<Vec<_>>().join(", "),
        percentile(ratios.clone(), 0.5) * 100.0
    );
    if !py_ratios.is_empty() {
        println!(
            "sync_once from cold relative to the peers' client's creates, per round: {}; median {:.0}%",
            py_ratios.iter().map(|r| format!("{:.0}%", r * 100.0)).collect::<Vec<_>>().join(", "),
            percentile(py_ratios.clone(), 0.5) * 100.0
        );
    }
    if std::env::var("GITGATE_BENCH_PHASES").is_ok_and(|p| p == "throughput") {
        return;
    }

    // push → applied, drift → reverted, through the real binary
    c.ensure_namespace("bench-loop");
    let (repo, head) = app_repo("bench-loop", 20, 0);
    let secret = "bench-hook-secret";
    let s = start_serve(c, &repo, "gitgate-bench-loop", &["--hook-secret", secret, "--poll-interval", "1h"]);
    s.wait_synced(&head, Duration::from_secs(60)).await;
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), "bench-loop");
    let mut push = Vec::new();
    for i in 0..10 {
        let v = format!("push-{i}");
        repo.write("app/cm-00000.yaml", &configmap("cm-00000", &v));
        repo.commit(&format!("push {i}"));
        let t = Instant::now();
        s.push_hook(secret).await;
        push.push(wait_value(&api, "cm-00000", &v).await.duration_since(t).as_secs_f64() * 1000.0);
    }
    let mut drift = Vec::new();
    for i in 0..20 {
        let t = Instant::now();
        api.patch(
            "cm-00001",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"value": format!("hacked-{i}")}})),
        )
        .await
        .unwrap();
        drift.push(wait_value(&api, "cm-00001", "1").await.duration_since(t).as_secs_f64() * 1000.0);
    }
    println!(
        "git push → applied (push hook, 10 pushes): p50 {:.0} ms, max {:.0} ms",
        percentile(push.clone(), 0.5),
        percentile(push, 1.0)
    );
    println!(
        "drift → reverted (20 bypasses): p50 {:.0} ms, max {:.0} ms",
        percentile(drift.clone(), 0.5),
        percentile(drift, 1.0)
    );
    drop(s);

    // RSS while managing 10,000 objects
    c.ensure_namespace("bench-10k");
    let (repo, head) = app_repo("bench-10k", 10_000, 0);
    let s = start_serve(c, &repo, "gitgate-bench-10k", &["--poll-interval", "1h"]);
    let t = Instant::now();
    s.wait_synced(&head, Duration::from_secs(600)).await;
    let took = t.elapsed();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let at3 = s.rss_mib();
    tokio::time::sleep(Duration::from_secs(7)).await;
    println!(
        "10,000 objects: first sync {:.1} s; RSS managing them {at3:.1} MiB (3 s after the sync), {:.1} MiB (10 s after), peak {:.1} MiB",
        took.as_secs_f64(),
        s.rss_mib(),
        s.peak_mib()
    );
}
