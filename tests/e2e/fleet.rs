//! Spoke mode against real kube-apiservers (issue 18): a gitgate started
//! with `--cluster dr` on a fleet repository applies the dr cluster's app
//! to the cluster it runs in, and nothing of the other clusters' apps, and
//! its webhook refuses a hand edit there with the single-cluster message;
//! two control planes, each with its own spoke of `examples/fleet`, are
//! each synced and gated by their own spoke alone.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::cluster::{self, Cluster};
use crate::common::ServeProcess;
use crate::support::{Repo, example_fleet_repo, git};
use crate::sync::{BIN, PROJECT, app, audit_events, get, sa_token, serve_on, status, wait_synced, wait_until};

const NS: &str = "e2e-fleet";

#[test]
fn a_spoke_applies_and_gates_only_its_clusters_apps() {
    let Some(c) = cluster::cluster("a_spoke_applies_and_gates_only_its_clusters_apps") else { return };
    let _serial = cluster::cluster_wide();
    c.ensure_namespace(NS);
    // The chart's layout: the webhooks fail closed only in namespaces
    // labelled for enforcement, so a spoke starting up never stands in the
    // way of other tests' namespaces.
    c.kubectl_ok(&["label", "namespace", NS, "gitgate.dev/enforce=true", "--overwrite"]);
    let repo = Repo::new();
    repo.write(
        "gitgate.yaml",
        &format!(
            "clusters:\n  - {{name: staging, labels: {{env: staging}}}}\n  - {{name: dr, labels: {{env: production}}}}\n{PROJECT}generators:\n  - clusters: {{}}\n    template:\n      name: \"shop-{{{{name}}}}\"\n      project: e2e\n      path: \"shop/{{{{name}}}}\"\n      destination: {{cluster: \"{{{{name}}}}\", namespace: {NS}}}\n      syncPolicy: {{prune: true, selfHeal: true}}\n"
        ),
    );
    for env in ["staging", "dr"] {
        repo.write(
            &format!("shop/{env}/settings.yaml"),
            &format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\ndata:\n  cluster: {env}\n"),
        );
    }
    let c1 = repo.commit("a fleet of two");
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let work = tempfile::tempdir().unwrap();
    let s = serve_on(
        c,
        work.path(),
        &repo,
        "gitgate-e2e-fleet",
        &format!("127.0.0.1:{port}"),
        &[
            "--cluster",
            "dr",
            "--webhook-endpoint",
            &format!("https://127.0.0.1:{port}"),
            "--webhook-enforce-label",
            "gitgate.dev/enforce=true",
        ],
    );
    let cleanup = || {
        for kind in ["validatingwebhookconfiguration", "mutatingwebhookconfiguration"] {
            let _ = c.kubectl(&["delete", kind, "-l", "gitgate.dev/guard=true"]);
        }
    };
    wait_synced(&s, "shop-dr", &c1);
    let st = status(&s);
    assert!(app(&st, "shop-staging").is_none(), "the staging app is the staging spoke's: {st:#}");
    let cm = get(c, &["configmap", "settings", "-n", NS]).expect("the dr app's ConfigMap");
    assert_eq!(cm["data"]["cluster"], "dr", "the dr overlay, not staging's");
    assert_eq!(cm["metadata"]["labels"]["gitgate.dev/app"], "shop-dr");

    // The webhook refuses a hand edit in the spoke's cluster, naming the
    // dr app (the apiserver loads its configuration asynchronously).
    let deadline = Instant::now() + Duration::from_secs(30);
    let err = loop {
        let out = c.kubectl(&[
            "-n",
            NS,
            "patch",
            "configmap",
            "settings",
            "--type=merge",
            "-p",
            r#"{"data":{"cluster":"hand"}}"#,
        ]);
        if !out.status.success() {
            break String::from_utf8_lossy(&out.stderr).into_owned();
        }
        assert!(Instant::now() < deadline, "the spoke's webhook never refused the hand edit");
        std::thread::sleep(Duration::from_millis(300));
    };
    assert!(
        err.contains(&format!("{NS}/ConfigMap/settings is managed by app shop-dr from shop/dr/settings.yaml")),
        "{err}"
    );
    assert!(err.contains("change it there"), "{err}");
    s.terminate(Duration::from_secs(20));
    cleanup();
    let _ = c.kubectl(&["delete", "namespace", NS, "--wait=false"]);
}

/// The namespace of the example fleet's app (`examples/fleet`).
const GUESTBOOK: &str = "guestbook";
/// The group of the ServiceAccounts a fleet hub reads the spokes' status
/// API with: an `--admin-group` of each spoke.
const HUB_GROUP: &str = "system:serviceaccounts:gitgate-fleet";

/// One cluster of the fleet with its own spoke: `gitgate serve --cluster
/// NAME` on its own port, cert dir, audit log and kubeconfig (all under
/// `work`), its webhooks registered in its own cluster.
struct Spoke {
    /// The cluster's name in gitgate.yaml.
    name: &'static str,
    /// The overlay its app renders (`metadata.labels.env`).
    env: &'static str,
    cluster: &'static Cluster,
    /// The spoke's working directory: `certs/` (its CA and serving pair),
    /// `gitgate-data/audit/audit.jsonl`, `reconciler.kubeconfig`,
    /// `hub.token`.
    work: tempfile::TempDir,
    /// A token of ServiceAccount `gitgate-fleet/hub` of this cluster
    /// (`kubectl create token`, 1 h), also in `work/hub.token`.
    token: String,
    serve: ServeProcess,
}

impl Spoke {
    fn app(&self) -> String {
        format!("guestbook-{}", self.name)
    }

    fn url(&self, path: &str) -> String {
        format!("https://127.0.0.1:{}{path}", self.serve.addr.port())
    }

    fn token_file(&self) -> PathBuf {
        self.work.path().join("hub.token")
    }

    /// `GET /api/v1/apps` with `token` as the bearer: the HTTP status and
    /// the body.
    fn apps(&self, token: &str) -> (u16, Value) {
        let out = std::process::Command::new("curl")
            .args(["-sS", "--max-time", "5", "-w", "\n%{http_code}", "-H"])
            .arg(format!("Authorization: Bearer {token}"))
            .arg("--cacert")
            .arg(&self.serve.ca)
            .arg(self.url("/api/v1/apps"))
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
        (code.trim().parse().unwrap_or(0), serde_json::from_str(body).unwrap_or(Value::Null))
    }
}

/// Starts the spoke of cluster `name` in `c`: a hub ServiceAccount token
/// first (the spoke's status API answers it through a TokenReview), then
/// `gitgate serve --cluster NAME` with its webhooks in the chart's layout.
fn start_spoke(name: &'static str, env: &'static str, c: &'static Cluster, repo: &Repo) -> Spoke {
    let work = tempfile::tempdir().unwrap();
    let token = sa_token(c, "gitgate-fleet", "hub");
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let serve = serve_on(
        c,
        work.path(),
        repo,
        "gitgate-e2e-fleet2",
        &format!("127.0.0.1:{port}"),
        &[
            "--cluster",
            name,
            "--reader-group",
            HUB_GROUP,
            "--webhook-endpoint",
            &format!("https://127.0.0.1:{port}"),
            "--webhook-enforce-label",
            "gitgate.dev/enforce=true",
        ],
    );
    let spoke = Spoke { name, env, cluster: c, work, token, serve };
    std::fs::write(spoke.token_file(), &spoke.token).unwrap();
    spoke
}

/// Takes the fleet's traces out of both clusters when it drops (after
/// the spokes, declared later, were stopped): the webhook configurations
/// the spokes installed (failing closed on cluster-scoped objects) first,
/// then the namespaces.
struct FleetCleanup(Vec<&'static Cluster>);

impl Drop for FleetCleanup {
    fn drop(&mut self) {
        for c in &self.0 {
            for kind in ["validatingwebhookconfiguration", "mutatingwebhookconfiguration"] {
                let _ = c.kubectl(&["delete", kind, "-l", "gitgate.dev/guard=true"]);
            }
            for ns in [GUESTBOOK, "gitgate-fleet", "gitgate-e2e-fleet2"] {
                let _ = c.kubectl(&["delete", "namespace", ns, "--wait=false"]);
            }
        }
    }
}

/// The message kubectl prints when a command is denied (the command must
/// be denied).
fn denial(c: &Cluster, args: &[&str]) -> String {
    let out = c.kubectl(args);
    assert!(!out.status.success(), "kubectl {args:?} was admitted: {}", String::from_utf8_lossy(&out.stdout));
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Waits until the spoke's webhook refuses a change in its cluster (the
/// apiserver loads webhook configurations asynchronously): a server-side
/// dry run of an object nothing in Git declares, so nothing is created.
fn wait_enforced(s: &Spoke) {
    wait_until(&format!("the {} spoke's webhook in force", s.name), Duration::from_secs(30), || {
        let out = s.cluster.kubectl(&[
            "create",
            "configmap",
            "stray",
            "-n",
            GUESTBOOK,
            "--from-literal=a=b",
            "--dry-run=server",
        ]);
        let err = String::from_utf8_lossy(&out.stderr);
        (!out.status.success() && err.contains(&format!("nothing in Git declares {GUESTBOOK}/ConfigMap/stray")))
            .then_some(())
    });
}

/// `gitgate fleet diff A B --repo REPO`: exit code and stdout.
fn fleet_diff(repo: &Repo, a: &str, b: &str) -> (Option<i32>, String) {
    let out = std::process::Command::new(BIN).args(["fleet", "diff", a, b, "--repo", &repo.url()]).output().unwrap();
    assert!(matches!(out.status.code(), Some(0 | 1)), "{:?}: {}", out.status, String::from_utf8_lossy(&out.stderr));
    (out.status.code(), String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A manifest of the example repository, as JSON.
fn manifest(repo: &Path, rel: &str) -> Value {
    serde_saphyr::from_str(&std::fs::read_to_string(repo.join(rel)).unwrap()).unwrap()
}

/// Issue 18 on two real control planes: `examples/fleet` in one Git
/// repository, the staging spoke in cluster 1 and the production spoke in
/// cluster 2. Each syncs its own app only, denies a hand edit in its own
/// cluster with the single-cluster message (its own app and overlay file),
/// records its own cluster's changes only, and answers its status API to
/// its own cluster's hub token only; `fleet diff` says staging and
/// production differ by the overlay alone, production and dr not at all.
#[test]
fn two_clusters_each_gated_by_its_own_spoke() {
    let test = "two_clusters_each_gated_by_its_own_spoke";
    let Some(c1) = cluster::cluster(test) else { return };
    let Some(c2) = cluster::second_cluster(test) else { return };
    let _serial = cluster::cluster_wide();
    let t0 = Instant::now();
    let _cleanup = FleetCleanup(vec![c1, c2]);
    let (repo, commit) = example_fleet_repo();
    let subject = git(repo.path(), &["log", "-1", "--format=%s"]);

    // Both spokes start at once (each waits for its first decision).
    let (staging, production) = std::thread::scope(|scope| {
        let a = scope.spawn(|| start_spoke("staging", "staging", c1, &repo));
        let b = scope.spawn(|| start_spoke("production", "production", c2, &repo));
        (a.join().unwrap(), b.join().unwrap())
    });
    let spokes = [&staging, &production];
    eprintln!("{test}: both spokes ready after {:?}", t0.elapsed());

    // Each spoke syncs its own app; its status API answers its own
    // cluster's hub token (the only app listed is its own), and refuses the
    // other cluster's.
    for (s, other) in [(&staging, &production), (&production, &staging)] {
        let synced = wait_until(&format!("{} synced at {commit}", s.app()), Duration::from_secs(60), || {
            let (code, st) = s.apps(&s.token);
            let a = app(&st, &s.app())?;
            (code == 200 && a["sync"] == "Synced" && a["syncedCommit"] == commit).then_some(st)
        });
        let names: Vec<&str> = synced["apps"].as_array().unwrap().iter().filter_map(|a| a["name"].as_str()).collect();
        assert_eq!(names, [s.app()], "the {} spoke lists its own app only: {synced:#}", s.name);
        let (code, body) = s.apps(&other.token);
        assert_eq!(code, 401, "the {} spoke refuses the {} cluster's token: {body}", s.name, other.name);
    }
    eprintln!("{test}: both apps synced after {:?}", t0.elapsed());

    // What each cluster holds: its own app's objects with its overlay's
    // values, and nothing of the other cluster's app.
    for (s, other) in [(&staging, &production), (&production, &staging)] {
        let c = s.cluster;
        let overlay = |f: &str| manifest(repo.path(), &format!("guestbook/overlays/{}/{f}", s.env));
        let deploy = get(c, &["deployment", "guestbook", "-n", GUESTBOOK]).expect("the Deployment");
        assert_eq!(deploy["spec"]["replicas"], overlay("deployment.yaml")["spec"]["replicas"], "in {}", s.name);
        assert_eq!(deploy["metadata"]["labels"]["gitgate.dev/app"], s.app());
        let cm = get(c, &["configmap", "guestbook-config", "-n", GUESTBOOK]).expect("the settings");
        assert_eq!(cm["data"], overlay("configmap.yaml")["data"], "in {}", s.name);
        assert!(get(c, &["service", "guestbook", "-n", GUESTBOOK]).is_some());
        let theirs = c.kubectl_ok(&[
            "get",
            "namespaces,deployments,services,configmaps",
            "-A",
            "-l",
            &format!("gitgate.dev/app={}", other.app()),
            "-o",
            "name",
        ]);
        assert_eq!(theirs.trim(), "", "nothing of {} in the {} cluster", other.app(), s.name);
    }
    let (staging_replicas, production_replicas) = (
        get(c1, &["deployment", "guestbook", "-n", GUESTBOOK]).unwrap()["spec"]["replicas"].clone(),
        get(c2, &["deployment", "guestbook", "-n", GUESTBOOK]).unwrap()["spec"]["replicas"].clone(),
    );
    assert_ne!(staging_replicas, production_replicas, "the two clusters run their own overlays");

    // A hand edit in each cluster is denied by that cluster's spoke, with
    // the message of a single cluster (tests/e2e/provenance.rs): the
    // object, its app, its file and commit, and "change it there".
    for s in spokes {
        let c = s.cluster;
        wait_enforced(s);
        let owner = |kind: &str, name: &str, file: &str| {
            format!(
                "{GUESTBOOK}/{kind}/{name} is managed by app {app} from guestbook/overlays/{env}/{file} at {short} '{subject}'",
                app = s.app(),
                env = s.env,
                short = &commit[..7]
            )
        };
        let deploy = owner("Deployment", "guestbook", "deployment.yaml");
        let asked = Instant::now();
        let err = denial(c, &["scale", "deployment", "guestbook", "-n", GUESTBOOK, "--replicas=7"]);
        let took = asked.elapsed();
        assert!(err.contains(&format!("{deploy}; change it there (scale is set in Git)")), "{err}");
        eprintln!(
            "{test}: the {} cluster, kubectl scale, denied in {took:?} (kubectl round trip): {}",
            s.name,
            err.trim()
        );
        let err = denial(
            c,
            &["patch", "deployment", "guestbook", "-n", GUESTBOOK, "--type=merge", "-p", r#"{"spec":{"replicas":7}}"#],
        );
        assert!(err.contains(&format!("{deploy}; change it there (")), "{err}");
        assert!(err.contains("/spec/replicas differs from Git"), "{err}");
        // What `kubectl edit` sends: a patch of the settings.
        let err = denial(
            c,
            &[
                "patch",
                "configmap",
                "guestbook-config",
                "-n",
                GUESTBOOK,
                "--type=merge",
                "-p",
                r#"{"data":{"GUESTBOOK_TITLE":"edited by hand"}}"#,
            ],
        );
        assert!(
            err.contains(&format!("{}; change it there (", owner("ConfigMap", "guestbook-config", "configmap.yaml"))),
            "{err}"
        );
        assert!(err.contains("/data/GUESTBOOK_TITLE differs from Git"), "{err}");
        eprintln!("{test}: the {} cluster, kubectl edit of the settings: {}", s.name, err.trim());
    }
    assert_eq!(get(c1, &["deployment", "guestbook", "-n", GUESTBOOK]).unwrap()["spec"]["replicas"], staging_replicas);
    assert_eq!(
        get(c2, &["deployment", "guestbook", "-n", GUESTBOOK]).unwrap()["spec"]["replicas"],
        production_replicas
    );

    // The parity proof from the same repository: the overlay's two fields,
    // nothing else; production and its dr twin the same.
    let (code, text) = fleet_diff(&repo, "staging", "production");
    assert_eq!(code, Some(1), "{text}");
    let differs: Vec<&str> = text.lines().filter(|l| l.starts_with("differs: ")).collect();
    assert_eq!(text.lines().count(), differs.len() + 1, "differences and the summary only: {text}");
    assert_eq!(differs.len(), 2, "{text}");
    for (field, file) in [("/data/GUESTBOOK_TITLE", "configmap.yaml"), ("/spec/replicas", "deployment.yaml")] {
        let why = format!(
            "{field}: an overlay: guestbook/overlays/staging/{file} against guestbook/overlays/production/{file}"
        );
        assert!(differs.iter().any(|l| l.ends_with(&why)), "{why} in {text}");
    }
    let (code, text) = fleet_diff(&repo, "production", "dr");
    assert_eq!(code, Some(0), "{text}");
    assert!(text.starts_with("production and dr are the same in Git"), "{text}");

    // Each spoke's audit log: its own app's applies and its own cluster's
    // denials, nothing of the other's.
    for (s, other) in [(&staging, &production), (&production, &staging)] {
        let events = audit_events(s.work.path());
        let applied: Vec<&str> = events
            .iter()
            .filter(|e| e["event"] == "apply" && e["app"] == s.app())
            .filter_map(|e| e["kind"].as_str())
            .collect();
        for kind in ["Namespace", "Service", "ConfigMap", "Deployment"] {
            assert!(applied.contains(&kind), "the {} spoke's log records the apply of its {kind}: {applied:?}", s.name);
        }
        assert!(
            events.iter().any(|e| e["event"] == "admission"
                && e["decision"] == "deny"
                && e["name"] == "guestbook-config"
                && e["app"] == s.app()),
            "the {} spoke's log records the denied edit",
            s.name
        );
        let foreign: Vec<&Value> = events.iter().filter(|e| e.to_string().contains(&other.app())).collect();
        assert!(foreign.is_empty(), "nothing of {} in the {} spoke's log: {foreign:?}", other.app(), s.name);
    }

    // The fleet audit: both spokes' chains merged by time, each record
    // naming its cluster; each chain verifies on its own.
    let chain = |s: &Spoke| format!("{}={}", s.name, s.work.path().join("gitgate-data/audit").display());
    let out = std::process::Command::new(BIN)
        .args(["audit", "query", "--fleet", &chain(&staging), &chain(&production), "--decision", "deny", "-o", "json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let denied: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    for s in spokes {
        assert!(
            denied.iter().any(|r| r["cluster"] == s.name && r["app"] == s.app()),
            "the fleet query shows the {} cluster's denials: {denied:#?}",
            s.name
        );
    }
    let times: Vec<&str> = denied.iter().filter_map(|r| r["time"].as_str()).collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "merged by time: {times:?}");
    let out = std::process::Command::new(BIN)
        .args(["audit", "verify", "--fleet", &chain(&staging), &chain(&production)])
        .output()
        .unwrap();
    let verified = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{verified}{}", String::from_utf8_lossy(&out.stderr));
    assert!(verified.contains("staging: OK") && verified.contains("production: OK"), "{verified}");

    // The hub: both spokes on one view, read over their status APIs with
    // each cluster's own hub token — no kubeconfig of either cluster.
    let hub_dir = tempfile::tempdir().unwrap();
    let mut fleet = String::from("spokes:\n");
    for s in spokes {
        fleet.push_str(&format!(
            "  - {{cluster: {}, url: '{}', tokenFile: '{}', caFile: '{}'}}\n",
            s.name,
            s.url(""),
            s.token_file().display(),
            s.serve.ca.display()
        ));
    }
    std::fs::write(hub_dir.path().join("fleet.yaml"), fleet).unwrap();
    let none = hub_dir.path().join("none.kubeconfig");
    std::fs::write(&none, "apiVersion: v1\nkind: Config\nclusters: []\ncontexts: []\nusers: []\n").unwrap();
    let hub = ServeProcess::spawn_until(
        BIN,
        hub_dir.path(),
        "127.0.0.1:0",
        &["--hub", "--fleet", "fleet.yaml", "--fleet-interval", "1s", "--kubeconfig", none.to_str().unwrap()],
        "listening on https://",
    );
    let hub_status = || {
        let out = std::process::Command::new(BIN)
            .args([
                "status",
                "--fleet",
                "--json",
                "--server",
                &format!("https://127.0.0.1:{}", hub.addr.port()),
                "--ca",
            ])
            .arg(&hub.ca)
            .output()
            .unwrap();
        serde_json::from_slice::<Value>(&out.stdout).ok()
    };
    let spoke_of = |view: &Value, name: &str| {
        view["spokes"].as_array().and_then(|a| a.iter().find(|s| s["cluster"] == name)).cloned().unwrap_or_default()
    };
    let view = wait_until("the hub sees both spokes", Duration::from_secs(30), || {
        let v = hub_status()?;
        spokes.iter().all(|s| spoke_of(&v, s.name)["summary"]["synced"] == 1).then_some(v)
    });
    let table = std::process::Command::new(BIN)
        .args(["status", "--fleet", "--server", &format!("https://127.0.0.1:{}", hub.addr.port()), "--ca"])
        .arg(&hub.ca)
        .output()
        .unwrap();
    assert_eq!(table.status.code(), Some(0), "both up, both synced: {}", String::from_utf8_lossy(&table.stdout));
    for s in spokes {
        let seen = spoke_of(&view, s.name);
        assert_eq!(seen["state"], "Up", "{seen:#}");
        assert_eq!(seen["status"]["apps"][0]["name"], s.app(), "each cluster's own app: {seen:#}");
        assert_eq!(seen["labels"]["env"], s.env);
        assert!(seen["denied"]["count"].as_u64().unwrap_or(0) >= 3, "its cluster's denials: {seen:#}");
    }
    // staging and production compared live as the hub sees them: the two
    // objects their overlays set differ, the rest is the same.
    let out = std::process::Command::new(BIN)
        .args(["fleet", "diff", "staging", "production", "--repo", &repo.url(), "--live", "--server"])
        .arg(format!("https://127.0.0.1:{}", hub.addr.port()))
        .arg("--ca")
        .arg(&hub.ca)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}{}", String::from_utf8_lossy(&out.stderr));
    let live: Vec<&str> = text.lines().filter(|l| l.starts_with("live: ")).collect();
    assert_eq!(live.len(), 2, "{text}");
    assert!(live.iter().all(|l| l.contains("Git gives other content")), "{text}");
    eprintln!("{test}: the hub's view after {:?}", t0.elapsed());

    // production's spoke stops: unknown on the hub, with when it was last
    // seen, its apps no longer shown; staging still up.
    production.serve.terminate(Duration::from_secs(20));
    let view = wait_until("the hub marks production unknown", Duration::from_secs(30), || {
        let v = hub_status()?;
        (spoke_of(&v, "production")["state"] == "Unknown").then_some(v)
    });
    let gone = spoke_of(&view, "production");
    assert!(gone["reason"].as_str().unwrap_or_default().starts_with("unreachable"), "{gone:#}");
    assert!(gone["lastSeen"].as_str().is_some_and(|t| !t.is_empty()), "when it was last seen: {gone:#}");
    assert_eq!(gone["status"]["apps"].as_array().map_or(0, Vec::len), 0, "nothing shown as current: {gone:#}");
    assert_eq!(spoke_of(&view, "staging")["state"], "Up");
    hub.terminate(Duration::from_secs(20));
    staging.serve.terminate(Duration::from_secs(20));
    eprintln!("{test}: done after {:?}", t0.elapsed());
}
