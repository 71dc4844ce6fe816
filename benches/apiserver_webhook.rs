//! The webhook as a real kube-apiserver sees it (issue 2's third figure).
//!
//! `KUBE_BIN_DIR=/opt/kube/bin cargo bench --bench apiserver_webhook`
//!
//! Starts a loopback control plane and gitgate's admission server
//! in-process, then alternates rounds with and without gitgate's
//! ValidatingWebhookConfiguration (ConfigMaps, failurePolicy Fail):
//! serial creates (the apiserver's own
//! `apiserver_admission_webhook_admission_duration_seconds` gives the round
//! trip per call) and 16 parallel clients (throughput with the webhook in
//! the path relative to without), once with kube-rs from this process and
//! once with the peers' client (`benches/peers_client.py`: python
//! `requests`, the peers' published harness, when python3 has
//! `requests`). `GITGATE_BENCH_SERVE_ARGS` adds `serve` flags (a variant);
//! `GITGATE_BENCH_CLIENT_CERT=1` makes gitgate verify the apiserver's client
//! certificate (`--client-ca`, the control plane presents one).
//! Prints a table; exits early with a message when `KUBE_BIN_DIR` is not
//! set.

#[path = "../tests/support/mod.rs"]
mod support;
use support::cluster;
use support::server as common;
#[path = "support/peers.rs"]
mod peers;
#[path = "support/proc.rs"]
mod proc;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1 as adm;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use kube::api::{Api, DeleteParams, PostParams};

const SERIAL: usize = 300;
const PARALLEL: usize = 1000;
const CLIENTS: usize = 16;
/// Alternating rounds (`GITGATE_BENCH_ROUNDS`, default 5): ratios are read
/// as medians of at least five.
fn rounds() -> usize {
    std::env::var("GITGATE_BENCH_ROUNDS").ok().and_then(|v| v.parse().ok()).unwrap_or(5)
}
const HOOK: &str = "validate.gitgate.dev";

/// Reviews gitgate answered, from its own `/metrics`.
async fn reviews(http: &reqwest::Client, url: &str) -> u64 {
    let text = http.get(url).send().await.unwrap().text().await.unwrap();
    text.lines()
        .filter(|l| l.starts_with("gitgate_admission_reviews_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

fn cm(name: String) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(name),
            labels: Some([("owner".into(), "x".into())].into()),
            ..Default::default()
        },
        data: Some([("k".to_string(), "v".to_string())].into()),
        ..Default::default()
    }
}

async fn namespace(client: &kube::Client, name: &str) {
    let ns = Namespace {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: Some([("bench".to_string(), "yes".to_string())].into()),
            ..Default::default()
        },
        ..Default::default()
    };
    Api::<Namespace>::all(client.clone()).create(&PostParams::default(), &ns).await.unwrap();
}

/// (sum, count) of the apiserver's webhook duration histogram for our hook.
fn webhook_duration(metrics: &str) -> (f64, f64) {
    let mut sum = 0.0;
    let mut count = 0.0;
    for line in metrics.lines() {
        if !line.contains(&format!("name=\"{HOOK}\"")) {
            continue;
        }
        let value: f64 = line.rsplit(' ').next().and_then(|v| v.parse().ok()).unwrap_or(0.0);
        if line.starts_with("apiserver_admission_webhook_admission_duration_seconds_sum") {
            sum += value;
        } else if line.starts_with("apiserver_admission_webhook_admission_duration_seconds_count") {
            count += value;
        }
    }
    (sum, count)
}

async fn serial(client: &kube::Client, ns: &str) -> Vec<f64> {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    let mut lat = Vec::with_capacity(SERIAL);
    for i in 0..SERIAL {
        let t = Instant::now();
        api.create(&PostParams::default(), &cm(format!("cm-{i}"))).await.unwrap();
        lat.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    lat
}

async fn parallel(client: &kube::Client, ns: &str) -> f64 {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    let next = Arc::new(AtomicU64::new(0));
    let t = Instant::now();
    let tasks: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let api = api.clone();
            let next = next.clone();
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed) as usize;
                    if i >= PARALLEL {
                        break;
                    }
                    api.create(&PostParams::default(), &cm(format!("p-{i}"))).await.unwrap();
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    PARALLEL as f64 / t.elapsed().as_secs_f64()
}

/// CPU seconds the kube-apiserver has used so far.
fn apiserver_cpu(c: &cluster::Cluster) -> f64 {
    let pid = std::fs::read_to_string(c.run_dir.join("pids/kube-apiserver.pid")).unwrap_or_default();
    proc::cpu_seconds(pid.trim())
}

fn pct(v: &mut [f64], q: f64) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[((v.len() as f64 * q) as usize).min(v.len() - 1)]
}

#[tokio::main]
async fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let Some(cluster) = cluster::cluster("apiserver_webhook bench") else { return };
    common::install_crypto();
    let work = tempfile::tempdir().unwrap();
    // GITGATE_BENCH_SERVE_ARGS: extra `serve` arguments, to measure a variant
    let extra = std::env::var("GITGATE_BENCH_SERVE_ARGS").unwrap_or_default();
    let mut extra: Vec<String> = extra.split_whitespace().map(str::to_owned).collect();
    // GITGATE_BENCH_CLIENT_CERT=1: gitgate verifies the apiserver's webhook
    // client certificate (--client-ca), as a cluster with client auth runs it.
    if std::env::var("GITGATE_BENCH_CLIENT_CERT").is_ok_and(|v| v == "1") {
        let ca = cluster.webhook_client_ca().expect("the control plane presents a webhook client certificate");
        extra.extend(["--client-ca".into(), ca.display().to_string()]);
        extra.extend(["--client-name".into(), "kube-apiserver-webhook-client".into()]);
        println!("gitgate verifies the apiserver's client certificate ({})", ca.display());
    }
    let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
    let srv = common::ServeProcess::spawn(env!("CARGO_BIN_EXE_gitgate"), work.path(), &extra);
    let ca_pem = std::fs::read(&srv.ca).unwrap();
    let http =
        reqwest::Client::builder().tls_certs_only([reqwest::Certificate::from_pem(&ca_pem).unwrap()]).build().unwrap();
    let metrics_url = format!("https://127.0.0.1:{}/metrics", srv.addr.port());
    let client = cluster.client().await;
    let hooks: Api<adm::ValidatingWebhookConfiguration> = Api::all(client.clone());
    let config = adm::ValidatingWebhookConfiguration {
        metadata: ObjectMeta { name: Some("gitgate-bench".into()), ..Default::default() },
        webhooks: Some(vec![adm::ValidatingWebhook {
            name: HOOK.into(),
            admission_review_versions: vec!["v1".into()],
            client_config: adm::WebhookClientConfig {
                url: Some(format!("https://127.0.0.1:{}/validate", srv.addr.port())),
                ca_bundle: Some(ByteString(ca_pem.clone())),
                service: None,
            },
            failure_policy: Some("Fail".into()),
            side_effects: "None".into(),
            timeout_seconds: Some(5),
            rules: Some(vec![adm::RuleWithOperations {
                api_groups: Some(vec![String::new()]),
                api_versions: Some(vec!["v1".into()]),
                operations: Some(vec!["CREATE".into(), "UPDATE".into()]),
                resources: Some(vec!["configmaps".into()]),
                scope: Some("Namespaced".into()),
            }]),
            namespace_selector: Some(LabelSelector {
                match_labels: Some([("bench".to_string(), "yes".to_string())].into()),
                ..Default::default()
            }),
            ..Default::default()
        }]),
    };

    let py = peers::PeersClient::new(cluster);
    println!(
        "| round | config | serial p50 ms | serial p99 ms | webhook round trip (apiserver) ms | kube-rs 16× objects/s | apiserver CPU ms/object | gitgate CPU ms/admission | peers' client 16× objects/s |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    let mut ratio = Vec::new();
    let mut py_ratio = Vec::new();
    for round in 0..rounds() {
        let mut tput = [0.0; 2];
        let mut py_tput = [None; 2];
        for (i, with) in [false, true].into_iter().enumerate() {
            if with {
                hooks.create(&PostParams::default(), &config).await.unwrap();
                // wait until the apiserver calls us, then warm its connection
                let warm = format!("warm-{round}");
                namespace(&client, &warm).await;
                let api: Api<ConfigMap> = Api::namespaced(client.clone(), &warm);
                let before = reviews(&http, &metrics_url).await;
                let mut n = 0;
                while reviews(&http, &metrics_url).await < before + 20 {
                    api.create(&PostParams::default(), &cm(format!("w-{n}"))).await.unwrap();
                    n += 1;
                    if n > 2000 {
                        panic!("the webhook never took effect");
                    }
                }
            }
            let ns = format!("s-{round}-{with}");
            namespace(&client, &ns).await;
            tokio::time::sleep(Duration::from_millis(500)).await;
            let (s0, c0) = webhook_duration(&cluster.metrics().await);
            let calls0 = reviews(&http, &metrics_url).await;
            let cpu0 = srv.cpu_seconds();
            let mut lat = serial(&client, &ns).await;
            let (s1, c1) = webhook_duration(&cluster.metrics().await);
            let ns = format!("p-{round}-{with}");
            namespace(&client, &ns).await;
            tokio::time::sleep(Duration::from_millis(500)).await;
            let api0 = apiserver_cpu(cluster);
            tput[i] = parallel(&client, &ns).await;
            let api_cpu = (apiserver_cpu(cluster) - api0) * 1000.0 / PARALLEL as f64;
            let calls = reviews(&http, &metrics_url).await - calls0;
            let cpu = srv.cpu_seconds() - cpu0;
            let ns = format!("py-{round}-{with}");
            namespace(&client, &ns).await;
            tokio::time::sleep(Duration::from_millis(500)).await;
            py_tput[i] = py.as_ref().and_then(|py| py.run(&ns, PARALLEL, 0));
            let trip = if c1 > c0 { format!("{:.3}", (s1 - s0) / (c1 - c0) * 1000.0) } else { "—".into() };
            let cpu_per = if with && calls > 0 { format!("{:.3}", cpu * 1000.0 / calls as f64) } else { "—".into() };
            println!(
                "| {} | {} | {:.2} | {:.2} | {} | {:.0} | {:.3} | {} | {} |",
                round + 1,
                if with { "gitgate webhook" } else { "no webhook" },
                pct(&mut lat, 0.5),
                pct(&mut lat, 0.99),
                trip,
                tput[i],
                api_cpu,
                cpu_per,
                py_tput[i].map_or("—".into(), |t| format!("{t:.0}")),
            );
            if with {
                hooks.delete("gitgate-bench", &DeleteParams::default()).await.unwrap();
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        }
        ratio.push(tput[1] / tput[0]);
        if let [Some(a), Some(b)] = py_tput {
            py_ratio.push(b / a);
        }
    }
    let show = |r: &[f64]| r.iter().map(|r| format!("{:.0}%", r * 100.0)).collect::<Vec<_>>().join(", ");
    println!("\nparallel throughput with the webhook relative to without, per round:");
    println!("  kube-rs client (this process): {}", show(&ratio));
    println!("  peers' client (benches/peers_client.py, the peers' harness): {}", show(&py_ratio));
    println!("gitgate RSS after the runs: {} KiB", srv.rss_kib());
    srv.terminate(Duration::from_secs(20));
}
