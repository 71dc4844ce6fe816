//! Issue 19's figure: what one PreSync hook adds to a sync, against a real
//! kube-apiserver (`KUBE_BIN_DIR`; skips loudly without).
//!
//! Each round syncs the same app twice from cold, in fresh namespaces:
//! 20 ConfigMaps and a Deployment, plain; and the same with one PreSync
//! hook Job (`generateName`, HookSucceeded). There is no kubelet: a task
//! of this bench stands in for the Job controller's verdict and writes
//! the Job's status `HOLD` (1 s) after it sees the Job — the hook's run
//! time, measured from the moment the Job was seen to the status write.
//! The hook's overhead is (hooked − plain) − run time; the figure is the
//! median over `ROUNDS` alternating rounds (plain first, then hooked, then
//! hooked first, …).
//!
//! `KUBE_BIN_DIR=/opt/kube/bin cargo bench --bench hooks`

#[path = "../tests/support/mod.rs"]
mod support;
use support::cluster;

use std::sync::Arc;
use std::time::{Duration, Instant};

use gitgate::render::{RenderOptions, Renderer};
use gitgate::source::GitSource;
use gitgate::sync::SyncConfig;
use gitgate::sync::reconcile::{Reconciler, Targets};
use gitgate::sync::status::{StatusStore, SyncStatus};
use gitgate::sync::target::Target;
use k8s_openapi::api::batch::v1::Job;
use kube::api::{Api, ListParams, Patch, PatchParams};
use serde_json::json;
use support::{Repo, cache_dir, oid};

const ROUNDS: usize = 7;
const HOLD: Duration = Duration::from_secs(1);

fn app_repo(ns: &str, hook: bool) -> (Repo, String) {
    let repo = Repo::new();
    repo.write("gitgate.yaml", &format!("apps:\n  - {{name: bench, path: app, destination: {{namespace: {ns}}}}}\n"));
    for i in 0..20 {
        repo.write(
            &format!("app/cm-{i}.yaml"),
            &format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cm-{i}\ndata:\n  value: \"{i}\"\n"),
        );
    }
    repo.write(
        "app/web.yaml",
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  replicas: 0\n  selector:\n    matchLabels: {app: web}\n  template:\n    metadata:\n      labels: {app: web}\n    spec:\n      containers:\n        - name: web\n          image: registry.example.invalid/web:1\n",
    );
    if hook {
        repo.write(
            "app/migrate.yaml",
            "apiVersion: batch/v1\nkind: Job\nmetadata:\n  generateName: migrate-\n  annotations:\n    argocd.argoproj.io/hook: PreSync\n    argocd.argoproj.io/hook-delete-policy: HookSucceeded\nspec:\n  backoffLimit: 0\n  template:\n    spec:\n      restartPolicy: Never\n      containers:\n        - name: migrate\n          image: registry.example.invalid/web:1\n",
        );
    }
    let head = repo.commit("bench app");
    (repo, head)
}

/// Completes each Job of `ns` `HOLD` after it first sees it; returns the
/// run times it gave (seen → status written).
async fn stand_in(client: kube::Client, ns: String, stop: Arc<std::sync::atomic::AtomicBool>) -> Vec<Duration> {
    let jobs: Api<Job> = Api::namespaced(client, &ns);
    let mut seen: Vec<(String, Instant, bool)> = Vec::new();
    let mut runs = Vec::new();
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        if let Ok(list) = jobs.list(&ListParams::default()).await {
            for j in list.items {
                let name = j.metadata.name.clone().unwrap_or_default();
                if !seen.iter().any(|(n, _, _)| *n == name) {
                    seen.push((name, Instant::now(), false));
                }
            }
        }
        for (name, at, done) in seen.iter_mut().filter(|(_, _, d)| !*d) {
            if at.elapsed() < HOLD {
                continue;
            }
            let now = gitgate::audit::record::format_rfc3339_micros(gitgate::audit::record::now_micros());
            // The Job controller may have set the start: it never changes.
            let started = match jobs.get_status(name).await {
                Ok(j) => j.status.and_then(|s| s.start_time).map(|t| t.0.to_string()),
                Err(_) => None,
            };
            let cond = |t: &str| json!({"type": t, "status": "True", "lastTransitionTime": now});
            let status = json!({"status": {
                "conditions": [cond("SuccessCriteriaMet"), cond("Complete")],
                "startTime": started.unwrap_or_else(|| now.clone()), "completionTime": now, "succeeded": 1,
                "active": 0, "ready": 0, "terminating": 0, "uncountedTerminatedPods": {},
            }});
            if jobs.patch_status(name, &PatchParams::default(), &Patch::Merge(&status)).await.is_ok() {
                runs.push(at.elapsed());
                *done = true;
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    runs
}

/// One sync from cold; its duration and the hook's run time (zero without).
async fn sync(c: &cluster::Cluster, client: &kube::Client, ns: &str, hook: bool) -> (Duration, Duration) {
    c.ensure_namespace(ns);
    let (repo, head) = app_repo(ns, hook);
    let (_t, cache) = cache_dir();
    let src = Arc::new(GitSource::open(&repo.url(), &cache).unwrap());
    src.fetch().unwrap();
    let desired = Renderer::new(RenderOptions::default()).desired(&src.repo(), oid(&head)).unwrap();
    let inventory_ns = format!("{ns}-gitgate");
    c.ensure_namespace(&inventory_ns);
    let config = SyncConfig { namespace: inventory_ns, hook_timeout: Duration::from_secs(30), ..SyncConfig::default() };
    let target = Arc::new(Target::new("bench", client.clone(), 5000.0, 5000));
    let r = Reconciler::new(
        config,
        Targets::new(target, None, 5000.0, 5000),
        src,
        Arc::new(StatusStore::new(None)),
        None,
        None,
    );
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let helper = tokio::spawn(stand_in(client.clone(), ns.to_string(), stop.clone()));
    let t = Instant::now();
    let out = r.sync_once(&desired).await;
    let took = t.elapsed();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let runs = helper.await.unwrap();
    assert_eq!(out[0].sync, SyncStatus::Synced, "{}", out[0].message);
    assert_eq!(runs.len(), usize::from(hook), "one hook run");
    (took, runs.first().copied().unwrap_or_default())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

#[tokio::main]
async fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let Some(c) = cluster::cluster("benches/hooks") else { return };
    let client = c.client().await;
    let run = std::env::var("GITGATE_TEST_RUN").unwrap_or_else(|_| "bench".into());
    let tag: String = run.chars().filter(|ch| ch.is_ascii_alphanumeric()).collect::<String>().to_lowercase();
    // Warm-up: connections, discovery, the apiserver's caches.
    sync(c, &client, &format!("bh-{tag}-warm"), true).await;
    let (mut plain, mut hooked, mut runs, mut overhead) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        let order = if round % 2 == 0 { [false, true] } else { [true, false] };
        let mut got = [(Duration::ZERO, Duration::ZERO); 2];
        for hook in order {
            got[usize::from(hook)] = sync(c, &client, &format!("bh-{tag}-{round}-{}", u8::from(hook)), hook).await;
        }
        let (p, (h, hold)) = (got[0].0, got[1]);
        let extra = h.as_secs_f64() - p.as_secs_f64() - hold.as_secs_f64();
        println!(
            "round {round}: plain {:.3}s, with hook {:.3}s, hook run {:.3}s, overhead {:.3}s",
            p.as_secs_f64(),
            h.as_secs_f64(),
            hold.as_secs_f64(),
            extra
        );
        plain.push(p.as_secs_f64());
        hooked.push(h.as_secs_f64());
        runs.push(hold.as_secs_f64());
        overhead.push(extra);
    }
    let m = median(overhead.clone());
    println!(
        "median of {ROUNDS} rounds: plain {:.3}s, with one PreSync hook {:.3}s, hook run {:.3}s, overhead {:.3}s (limit 1 s): {}",
        median(plain),
        median(hooked),
        median(runs),
        m,
        if m <= 1.0 { "PASS" } else { "FAIL" }
    );
    for round in 0..ROUNDS {
        for h in 0..2 {
            for ns in [format!("bh-{tag}-{round}-{h}"), format!("bh-{tag}-{round}-{h}-gitgate")] {
                let _ = c.kubectl(&["delete", "namespace", &ns, "--wait=false"]);
            }
        }
    }
    for ns in [format!("bh-{tag}-warm"), format!("bh-{tag}-warm-gitgate")] {
        let _ = c.kubectl(&["delete", "namespace", &ns, "--wait=false"]);
    }
}
