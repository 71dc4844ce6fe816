//! Issue 17's figures, against a real kube-apiserver (`KUBE_BIN_DIR`;
//! skips loudly without), with `gitgate serve` as the chart runs it:
//!
//! 1. **Approval → applied** for a one-object change: a commit changes one
//!    ConfigMap of an app with `approval: required`; once it waits, the
//!    approval is POSTed (`/api/v1/apps/bench/approve`, as `gitgate
//!    approve` sends it) and the clock stops when the apiserver serves the
//!    new value. Median of `ROUNDS` rounds.
//! 2. **A waiting or paused app costs no apiserver write**: with one app
//!    waiting for approval and one paused with a newer commit waiting, the
//!    apiserver's own `apiserver_request_total` is read before and after a
//!    60 s idle window (gitgate resyncs every 10 s within it); every
//!    write verb (POST, PUT, PATCH, APPLY, DELETE) is counted, Leases
//!    (gitgate's and the controller-manager's leader election) aside. The
//!    window starts 15 s after the last action, once the audit log's own
//!    checkpoint of the actions is written.
//!
//! 3. **`gitgate diff` of a 1,000-object app**: an app of 1,000
//!    ConfigMaps (`approval: required`) is synced, then a commit changes
//!    every one of them and waits for approval; its diff (`GET /api/v1/apps/big/diff`, server-side dry runs of the 1,000
//!    changes as the reconciler) is timed end to end. Median of `ROUNDS`.
//!
//! `KUBE_BIN_DIR=/opt/kube/bin cargo bench --bench promotion`

#[path = "../tests/support/mod.rs"]
mod support;
use support::cluster;
use support::server as common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::Repo;

const ROUNDS: usize = 7;
const IDLE: Duration = Duration::from_secs(60);
const BIN: &str = env!("CARGO_BIN_EXE_gitgate");
const RECONCILER: &str = "system:serviceaccount:gitops:gitgate";
const ADMINS: &str = "gitgate-bench-admins";

fn cm(value: &str) -> String {
    format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\ndata:\n  value: \"{value}\"\n")
}

fn reconciler_kubeconfig(c: &cluster::Cluster, dir: &std::path::Path) -> std::path::PathBuf {
    let admin = std::fs::read_to_string(&c.kubeconfig).unwrap();
    let mut out = String::new();
    for line in admin.lines() {
        out.push_str(line);
        out.push('\n');
        if line.trim_end() == "  user:" {
            out.push_str(&format!("    as: {RECONCILER}\n    as-groups: [\"system:masters\"]\n"));
        }
    }
    let path = dir.join("reconciler.kubeconfig");
    std::fs::write(&path, out).unwrap();
    path
}

fn get(c: &cluster::Cluster, args: &[&str]) -> Option<Value> {
    let mut a = vec!["get"];
    a.extend_from_slice(args);
    a.extend_from_slice(&["-o", "json"]);
    let out = c.kubectl(&a);
    out.status.success().then(|| serde_json::from_slice(&out.stdout).unwrap())
}

struct Api {
    base: String,
    token: String,
    http: reqwest::blocking::Client,
}

impl Api {
    fn status(&self, app: &str) -> Value {
        self.http
            .get(format!("{}/api/v1/apps/{app}", self.base))
            .bearer_auth(&self.token)
            .send()
            .and_then(|r| r.json())
            .unwrap_or(Value::Null)
    }

    fn post(&self, app: &str, action: &str, body: Value) -> Value {
        let r = self
            .http
            .post(format!("{}/api/v1/apps/{app}/{action}", self.base))
            .bearer_auth(&self.token)
            .json(&body)
            .send()
            .unwrap();
        let ok = r.status().is_success();
        let v: Value = r.json().unwrap_or(Value::Null);
        assert!(ok, "{action} refused: {v}");
        v
    }

    fn wait(&self, app: &str, what: &str, f: impl Fn(&Value) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !f(&self.status(app)) {
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {app}: {what}: sync {} target {} synced {}",
                self.status(app)["sync"],
                self.status(app)["targetCommit"],
                self.status(app)["syncedCommit"]
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// The apiserver's write requests so far, by `verb resource`, Leases aside.
fn writes(c: &cluster::Cluster) -> BTreeMap<String, f64> {
    let text = c.kubectl_ok(&["get", "--raw", "/metrics"]);
    let mut out = BTreeMap::new();
    for line in text.lines().filter(|l| l.starts_with("apiserver_request_total{")) {
        let label = |k: &str| {
            line.split(&format!("{k}=\"")).nth(1).and_then(|r| r.split('"').next()).unwrap_or_default().to_string()
        };
        let (verb, resource) = (label("verb"), label("resource"));
        if !["POST", "PUT", "PATCH", "APPLY", "DELETE"].contains(&verb.as_str()) || resource == "leases" {
            continue;
        }
        let n: f64 = line.rsplit(' ').next().and_then(|v| v.parse().ok()).unwrap_or(0.0);
        *out.entry(format!("{verb} {resource}")).or_default() += n;
    }
    out
}

fn main() {
    let Some(c) = cluster::cluster("benches/promotion") else { return };
    common::install_crypto();
    let ns = "bench-promotion";
    c.ensure_namespace(ADMINS);
    let _ = c.kubectl(&["-n", ADMINS, "create", "serviceaccount", "admin"]);
    let token = c.kubectl_ok(&["-n", ADMINS, "create", "token", "admin", "--duration", "1h"]).trim().to_string();
    let repo = Repo::new();
    repo.write(
        "gitgate.yaml",
        &format!(
            "projects:\n  - {{name: prod, destinations: [{{cluster: \"*\", namespace: \"*\"}}], clusterKinds: [Namespace]}}\n\
             apps:\n  - {{name: bench, project: prod, path: app, destination: {{namespace: {ns}}}, syncPolicy: {{prune: true, selfHeal: true, approval: required}}}}\n\
             \x20 - {{name: frozen, project: prod, path: frozen, destination: {{namespace: {ns}-frozen}}, syncPolicy: {{prune: true, selfHeal: true}}}}\n\
             \x20 - {{name: big, project: prod, path: big, destination: {{namespace: {ns}-big}}, syncPolicy: {{prune: true, approval: required}}}}\n"
        ),
    );
    repo.write("app/ns.yaml", &format!("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {ns}\n"));
    repo.write("app/settings.yaml", &cm("0"));
    repo.write("frozen/ns.yaml", &format!("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {ns}-frozen\n"));
    repo.write("frozen/settings.yaml", &cm("0"));
    repo.write("big/ns.yaml", &format!("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {ns}-big\n"));
    let big = |v: usize| {
        for i in 0..1000 {
            repo.write(
                &format!("big/cm-{i}.yaml"),
                &format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cm-{i}\ndata:\n  value: \"{v}\"\n"),
            );
        }
    };
    big(0);
    let c0 = repo.commit("bench 0");
    let work = tempfile::tempdir().unwrap();
    let kc = reconciler_kubeconfig(c, work.path());
    let s = common::ServeProcess::spawn(
        BIN,
        work.path(),
        &[
            "--repo",
            &repo.url(),
            "--poll-interval",
            "1s",
            "--kubeconfig",
            kc.to_str().unwrap(),
            "--namespace",
            "gitgate-bench-promotion",
            "--sync",
            "on",
            "--reconciler",
            RECONCILER,
            "--admin-group",
            &format!("system:serviceaccounts:{ADMINS}"),
            "--resync-interval",
            "10s",
        ],
    );
    let ca = std::fs::read(&s.ca).unwrap();
    let api = Api {
        base: format!("https://127.0.0.1:{}", s.addr.port()),
        token,
        http: reqwest::blocking::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(&ca).unwrap())
            .build()
            .unwrap(),
    };
    api.wait("bench", "waiting for c0", |a| a["sync"] == "WaitingApproval");
    api.post("bench", "approve", json!({"commit": c0}));
    api.wait("bench", "synced at c0", |a| a["syncedCommit"] == c0.as_str());

    // 1. Approval → applied.
    let mut times = Vec::new();
    for i in 1..=ROUNDS {
        repo.write("app/settings.yaml", &cm(&i.to_string()));
        let commit = repo.commit(&format!("bench {i}"));
        api.wait("bench", "the commit waiting", |a| {
            a["sync"] == "WaitingApproval" && a["targetCommit"] == commit.as_str()
        });
        let t = Instant::now();
        api.post("bench", "approve", json!({"commit": commit}));
        loop {
            let v = get(c, &["configmap", "settings", "-n", ns]);
            if v.as_ref().and_then(|v| v["data"]["value"].as_str()) == Some(i.to_string().as_str()) {
                break;
            }
            assert!(t.elapsed() < Duration::from_secs(30), "round {i}: not applied");
            std::thread::sleep(Duration::from_millis(10));
        }
        times.push(t.elapsed());
        eprintln!("round {i}: approval → applied {:?}", t.elapsed());
    }
    times.sort();
    println!(
        "approval → applied (one ConfigMap, {ROUNDS} rounds): median {:?} (min {:?}, max {:?}); limit 2 s",
        times[ROUNDS / 2],
        times[0],
        times[ROUNDS - 1]
    );

    // 2. Idle: `bench` waits for approval, `frozen` is paused with a newer
    //    commit waiting; hand edits are not part of the window.
    api.wait("frozen", "synced at c0", |a| a["sync"] == "Synced");
    api.post("frozen", "pause", json!({"for": "10m", "reason": "bench: idle window"}));
    repo.write("app/settings.yaml", &cm("waiting"));
    repo.write("frozen/settings.yaml", &cm("waiting"));
    let waiting = repo.commit("bench: a commit that waits");
    api.wait("bench", "waiting", |a| a["sync"] == "WaitingApproval" && a["targetCommit"] == waiting.as_str());
    api.wait("frozen", "paused", |a| a["sync"] == "Paused" && a["targetCommit"] == waiting.as_str());
    // Settle first: the audit log's signed checkpoint of the records above
    // (a ConfigMap and an Event, at most 10 s after the last record) is
    // the audit log's, not the apps'.
    std::thread::sleep(Duration::from_secs(15));
    let before = writes(c);
    std::thread::sleep(IDLE);
    let after = writes(c);
    let delta: BTreeMap<&String, f64> =
        after.iter().map(|(k, v)| (k, v - before.get(k).copied().unwrap_or(0.0))).filter(|(_, d)| *d > 0.0).collect();
    let total = delta.values().sum::<f64>().max(0.0) as u64;
    println!(
        "idle {}s with one app waiting for approval and one paused (resync every 10s): {total} apiserver writes (Leases aside) {delta:?}; limit 0",
        IDLE.as_secs()
    );
    assert_eq!(get(c, &["configmap", "settings", "-n", ns]).unwrap()["data"]["value"], ROUNDS.to_string());
    api.post("frozen", "resume", json!({}));

    // 3. The diff of 1,000 changed objects, waiting for approval.
    api.post("big", "approve", json!({"commit": c0}));
    api.wait("big", "synced", |a| a["sync"] == "Synced");
    big(1);
    let changed = repo.commit("bench: every ConfigMap of big changes");
    api.wait("big", "the change waiting", |a| a["sync"] == "WaitingApproval" && a["targetCommit"] == changed.as_str());
    let mut times = Vec::new();
    for round in 1..=ROUNDS {
        // A diff is asked for by a person: rounds are 3 s apart, so each
        // starts with the client's rate limiter (--kube-qps 500, burst
        // 1000) refilled, as a person's next diff would. Back to back, the
        // limiter paces 1,000 dry runs to ~3 s (see BENCHMARKS.md).
        std::thread::sleep(Duration::from_secs(3));
        let t = Instant::now();
        let r = api
            .http
            .get(format!("{}/api/v1/apps/big/diff?commit={changed}", api.base))
            .bearer_auth(&api.token)
            .send()
            .unwrap();
        assert!(r.status().is_success(), "diff: {}", r.status());
        let d: Value = r.json().unwrap();
        let d = if d["objects"].is_array() {
            d
        } else {
            panic!("diff answered {}", d.to_string().chars().take(500).collect::<String>())
        };
        times.push(t.elapsed());
        let n = d["objects"].as_array().map_or(0, Vec::len);
        assert_eq!(n, 1000, "round {round}: {n} objects differ");
        eprintln!("round {round}: diff of 1,000 changed objects {:?}", t.elapsed());
    }
    times.sort();
    println!(
        "gitgate diff of a 1,000-object app, every object changed ({ROUNDS} rounds): median {:?} (min {:?}, max {:?}); limit 3 s",
        times[ROUNDS / 2],
        times[0],
        times[ROUNDS - 1]
    );
    s.terminate(Duration::from_secs(20));
}
