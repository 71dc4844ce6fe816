//! The fleet's hub (issue 18, item 2): every spoke's status read over its
//! authenticated status API — real HTTPS servers with the spoke's real
//! routes and login (a TokenReview; the apiserver is a stand-in that
//! accepts one token per cluster) — and the parity groups compared from
//! what the spokes report. A spoke that is stopped, refuses the token or
//! answers as another cluster is unknown with when it was last seen, never
//! healthy. The last test runs the real binary: two plan-mode spokes and
//! `serve --hub`, read by `gitgate status --fleet`.

mod support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use gitgate::fleet::file::FleetFile;
use gitgate::fleet::hub::{FleetView, Hub, HubMetrics};
use gitgate::fleet::live::{LiveDifference, ParityState};
use gitgate::fleet::view::{SpokeState, SpokeView};
use gitgate::sync::status::SyncStatus;
use support::fleet::{fleet_file, guestbook, object, spoke};
use support::server as common;

fn hub(file: FleetFile) -> Hub {
    Hub::new(file, HubMetrics::default())
}

fn cluster<'a>(view: &'a FleetView, name: &str) -> &'a SpokeView {
    view.spokes.iter().find(|s| s.cluster == name).unwrap()
}

#[tokio::test]
async fn the_hub_shows_every_spoke_and_a_stopped_one_as_unknown_with_when_it_was_last_seen() {
    let staging = spoke("staging", "staging", "tok-staging", vec![guestbook("staging")]).await;
    let production = spoke("production", "production", "tok-production", vec![guestbook("production")]).await;
    let mut waiting = guestbook("production");
    waiting.name = "shop-production".into();
    waiting.sync = SyncStatus::WaitingApproval;
    production.store.put(waiting);
    let dir = tempfile::tempdir().unwrap();
    let file = fleet_file(
        dir.path(),
        &[("staging", &staging, "tok-staging"), ("production", &production, "tok-production")],
        "",
    );
    let hub = hub(file);
    assert!(!hub.ready());
    let view = hub.refresh().await;
    assert!(hub.ready());
    let (s, p) = (cluster(&view, "staging"), cluster(&view, "production"));
    assert_eq!((s.state, p.state), (SpokeState::Up, SpokeState::Up), "{view:#?}");
    assert_eq!((s.summary.apps, s.summary.synced), (1, 1));
    assert_eq!((p.summary.apps, p.summary.synced, p.summary.waiting_approval), (2, 1, 1));
    assert_eq!(p.summary.commits, ["3f2a9c1d0e3f2a9c1d0e3f2a9c1d0e3f2a9c1d0e"]);
    assert_eq!(p.labels["env"], "production");
    assert!(!s.last_seen.is_empty());
    assert!(!gitgate::fleet::hub::all_well(&view), "an app waits for an approver");

    // Drift and denials as the spoke counts them.
    production.store.update_object(
        "guestbook-production",
        &gitgate::render::object::ObjectKey::new("apps", "Deployment", "guestbook", "web"),
        |o| {
            o.sync = SyncStatus::OutOfSync;
            o.message = "/spec/replicas differs from Git".into();
        },
    );
    production.store.denied("2026-12-05T09:30:00.000000Z".into());
    let view = hub.refresh().await;
    let p = cluster(&view, "production");
    assert_eq!((p.summary.drifted_objects, p.summary.out_of_sync), (1, 1));
    assert_eq!((p.denied.count, p.denied.last.as_str()), (1, "2026-12-05T09:30:00.000000Z"));
    let last_seen = p.last_seen.clone();

    // Production stops answering: unknown, with when it last answered, and
    // none of its apps shown as if current.
    production.running.shutdown(Duration::from_secs(1)).await.unwrap();
    let view = hub.refresh().await;
    let p = cluster(&view, "production");
    assert_eq!(p.state, SpokeState::Unknown);
    assert!(p.reason.starts_with("unreachable"), "{}", p.reason);
    assert_eq!(p.last_seen, last_seen, "the time it was last seen");
    assert!(p.status.apps.is_empty() && p.summary.apps == 0, "nothing it said before is shown as current");
    assert_eq!(cluster(&view, "staging").state, SpokeState::Up);
    let table = gitgate::fleet::hub::table(&view, false);
    assert!(
        table.lines().any(|l| l.starts_with("production") && l.contains("Unknown") && l.contains(&last_seen)),
        "{table}"
    );
}

#[tokio::test]
async fn a_wrong_token_or_a_spoke_answering_as_another_cluster_is_unknown() {
    let staging = spoke("staging", "staging", "tok-staging", vec![guestbook("staging")]).await;
    let production = spoke("production", "production", "tok-production", vec![guestbook("production")]).await;
    let dir = tempfile::tempdir().unwrap();
    // staging's token is production's; "dr" points at production's spoke.
    let file =
        fleet_file(dir.path(), &[("staging", &staging, "tok-production"), ("dr", &production, "tok-production")], "");
    let view = hub(file).refresh().await;
    let s = cluster(&view, "staging");
    assert_eq!(s.state, SpokeState::Unknown);
    assert!(s.reason.contains("refused the hub's token (401"), "{}", s.reason);
    assert!(!s.reason.contains("tok-"), "the reason never carries a token: {}", s.reason);
    assert_eq!(s.last_seen, "", "never seen");
    let dr = cluster(&view, "dr");
    assert_eq!(dr.state, SpokeState::Unknown);
    assert!(dr.reason.contains("answers as cluster \"production\", not \"dr\""), "{}", dr.reason);
    assert!(dr.status.apps.is_empty());
    // Its token file gone: unknown, saying which file.
    std::fs::remove_file(dir.path().join("dr.token")).unwrap();
    let file = FleetFile::load(&dir.path().join("fleet.yaml")).unwrap();
    let view = hub(file).refresh().await;
    assert!(cluster(&view, "dr").reason.contains("dr.token"), "{view:#?}");
}

#[tokio::test]
async fn a_parity_group_is_identical_diverged_or_unknown_and_honours_allowed_differences() {
    let production = spoke("production", "production", "t1", vec![guestbook("production")]).await;
    let dr = spoke("dr", "production", "t2", vec![guestbook("dr")]).await;
    let staging = spoke("staging", "staging", "t3", vec![guestbook("staging")]).await;
    let dir = tempfile::tempdir().unwrap();
    let spokes = [("production", &production, "t1"), ("dr", &dr, "t2"), ("staging", &staging, "t3")];
    let long_running = hub(fleet_file(dir.path(), &spokes, ""));
    let view = long_running.refresh().await;
    assert_eq!(view.parity.len(), 1, "staging is alone in its env: no group");
    let g = &view.parity[0];
    assert_eq!((g.name.as_str(), g.members.clone()), ("production", vec!["production".to_string(), "dr".to_string()]));
    assert_eq!((g.state, g.identical), (ParityState::Identical, 2), "{g:#?}");
    assert!(g.commits.is_empty(), "one commit everywhere: {g:#?}");

    // A sync hook's run (named per run) in dr only, and dr a commit ahead:
    // still identical, and the commits are named.
    let mut ahead = guestbook("dr");
    let mut run = object("Job", "migrate-x7k2p", "sha256:hook");
    run.hook = true;
    ahead.objects.push(run);
    ahead.target_commit = "1b2c3d4e5f1b2c3d4e5f1b2c3d4e5f1b2c3d4e5f".into();
    dr.store.put(ahead);
    let view = long_running.refresh().await;
    let g = &view.parity[0];
    assert_eq!((g.state, g.identical), (ParityState::Identical, 2), "a hook's run is not compared: {g:#?}");
    assert_eq!(g.commits["dr"], "1b2c3d4e5f1b2c3d4e5f1b2c3d4e5f1b2c3d4e5f");
    assert!(gitgate::fleet::hub::table(&view, false).contains("at different commits: dr 1b2c3d4, production 3f2a9c1"));

    // dr's ConfigMap has other Git content, and its Deployment drifted; a
    // Service only dr gets.
    let mut changed = guestbook("dr");
    changed.objects[1].digest = "sha256:ccc".into();
    changed.objects[1].source = "apps/guestbook/dr.yaml".into();
    changed.objects[0].sync = SyncStatus::OutOfSync;
    changed.objects[0].message = "/spec/replicas differs from Git".into();
    changed.objects.push(object("Service", "web", "sha256:ddd"));
    dr.store.put(changed);
    let view = hub(fleet_file(dir.path(), &spokes, "")).refresh().await;
    let g = &view.parity[0];
    assert_eq!(g.state, ParityState::Diverged);
    let found: Vec<&LiveDifference> = g.differences.iter().collect();
    assert!(
        found.contains(&&LiveDifference::Content {
            object: "ConfigMap guestbook/settings".into(),
            files: BTreeMap::from([
                ("dr".into(), "apps/guestbook/dr.yaml".into()),
                ("production".into(), "apps/guestbook/settings.yaml".into())
            ]),
        }),
        "{found:#?}"
    );
    assert!(found.contains(&&LiveDifference::Drift {
        object: "Deployment.apps guestbook/web".into(),
        cluster: "dr".into(),
        message: "/spec/replicas differs from Git".into(),
    }));
    assert!(
        found
            .contains(&&LiveDifference::OnlyIn { object: "Service guestbook/web".into(), clusters: vec!["dr".into()] })
    );
    assert_eq!(found.len(), 3, "{found:#?}");

    // The ConfigMap differs on purpose (an allowed difference); the rest still counts.
    let allowed = "parityGroups:\n  - {name: production, allowedDifferences: ['ConfigMap guestbook/settings']}\n";
    let view = hub(fleet_file(dir.path(), &spokes, allowed)).refresh().await;
    let g = &view.parity[0];
    assert_eq!((g.state, g.allowed, g.differences.len()), (ParityState::Diverged, 1, 2), "{g:#?}");

    // A member that does not answer: unknown, never identical.
    dr.running.handle.graceful_shutdown(None);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let view = long_running.refresh().await;
    let g = &view.parity[0];
    assert_eq!((g.state, g.members.len()), (ParityState::Unknown, 2), "{g:#?}");
    assert!(g.reason.contains("dr unknown"), "{}", g.reason);
    // A hub that never saw dr does not know dr's group: every group is unknown.
    let view = hub(fleet_file(dir.path(), &spokes, "")).refresh().await;
    assert!(view.parity.iter().all(|g| g.state == ParityState::Unknown), "{:#?}", view.parity);
    assert!(view.parity[0].reason.contains("dr never answered"), "{}", view.parity[0].reason);
}

#[tokio::test]
async fn sealed_secrets_differ_per_cluster_by_design_and_an_explicit_group_overrides_env() {
    let mut secret = object("Secret", "db", "sha256:sealed-for-production");
    secret.sealed = true;
    let mut production_app = guestbook("production");
    production_app.objects.push(secret.clone());
    secret.digest = "sha256:sealed-for-dr".into();
    let mut dr_app = guestbook("dr");
    dr_app.objects.push(secret);
    // Different envs, one explicit parity group.
    let production = spoke("production", "production", "t1", vec![production_app]).await;
    let dr = spoke("dr", "disaster-recovery", "t2", vec![dr_app]).await;
    let dir = tempfile::tempdir().unwrap();
    fleet_file(dir.path(), &[("production", &production, "t1"), ("dr", &dr, "t2")], "");
    let yaml = std::fs::read_to_string(dir.path().join("fleet.yaml")).unwrap().replace("}\n", ", parityGroup: prod}\n");
    std::fs::write(dir.path().join("fleet.yaml"), yaml).unwrap();
    let view = hub(FleetFile::load(&dir.path().join("fleet.yaml")).unwrap()).refresh().await;
    let g = &view.parity[0];
    assert_eq!((g.name.as_str(), g.state, g.identical, g.sealed), ("prod", ParityState::Identical, 2, 1), "{g:#?}");
}

/// A hostile or broken spoke: a status that never ends, a redirect to
/// somewhere else, a follower's answer only. Each is unknown, with why; the
/// hub neither follows the redirect nor reads past its cap.
#[tokio::test]
async fn a_spoke_that_streams_without_end_redirects_or_only_follows_is_unknown() {
    use axum::routing::get;
    let endless = axum::Router::new().route(
        "/api/v1/apps",
        get(|| async {
            // 1 MiB chunks, no Content-Length, more than the cap.
            let chunk = bytes::Bytes::from(vec![b' '; 1 << 20]);
            let stream = futures_util::stream::iter((0..40).map(move |_| Ok::<_, std::io::Error>(chunk.clone())));
            axum::body::Body::from_stream(stream)
        }),
    );
    let reached = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let seen = reached.clone();
    let elsewhere = axum::Router::new().route(
        "/elsewhere",
        get(move || {
            seen.store(true, std::sync::atomic::Ordering::SeqCst);
            async { "{}" }
        }),
    );
    let (target, _, _target_server, _target_dir) = support::fleet::serve_tls(elsewhere).await;
    let redirect = axum::Router::new().route(
        "/api/v1/apps",
        get(move || {
            let to = format!("{target}/elsewhere");
            async move { axum::response::Redirect::temporary(&to) }
        }),
    );
    let follower = axum::Router::new().route(
        "/api/v1/apps",
        get(|| async { axum::Json(serde_json::json!({"role": "follower", "apps": [], "cluster": {"name": "c"}})) }),
    );
    let mut servers = Vec::new();
    let mut yaml = String::from("spokes:\n");
    for (name, router) in [("a", endless), ("b", redirect), ("c", follower)] {
        let (url, ca, running, dir) = support::fleet::serve_tls(router).await;
        yaml.push_str(&format!("  - {{cluster: {name}, url: '{url}', caFile: '{}'}}\n", ca.display()));
        servers.push((running, dir));
    }
    let file = FleetFile::parse(&yaml, std::path::Path::new("/")).unwrap();
    let view = hub(file).refresh().await;
    let reason = |c: &str| cluster(&view, c).reason.clone();
    assert!(view.spokes.iter().all(|s| s.state == SpokeState::Unknown), "{view:#?}");
    assert!(reason("a").contains("larger than 16 MiB"), "{}", reason("a"));
    assert!(reason("b").contains("answered 307"), "{}", reason("b"));
    assert!(!reached.load(std::sync::atomic::Ordering::SeqCst), "the redirect is not followed");
    assert!(reason("c").contains("follower replicas"), "{}", reason("c"));
}

/// The view of a hub whose rounds stopped shows no cluster up.
#[tokio::test]
async fn a_hub_whose_rounds_stopped_shows_every_spoke_unknown() {
    let staging = spoke("staging", "staging", "t", vec![guestbook("staging")]).await;
    let dir = tempfile::tempdir().unwrap();
    let hub = Arc::new(hub(fleet_file(dir.path(), &[("staging", &staging, "t")], "")));
    let rounds = tokio::spawn(hub.clone().run(Duration::from_millis(100)));
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while cluster(&hub.view(), "staging").state != SpokeState::Up {
        assert!(std::time::Instant::now() < deadline, "{:#?}", hub.view());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(hub.ready());
    rounds.abort();
    tokio::time::sleep(Duration::from_millis(400)).await;
    let view = hub.view();
    let s = cluster(&view, "staging");
    assert_eq!(s.state, SpokeState::Unknown);
    assert!(s.reason.contains("its rounds stopped"), "{}", s.reason);
    assert!(!hub.ready());
}

const BIN: &str = env!("CARGO_BIN_EXE_gitgate");

/// The real binary: two plan-mode spokes of one fleet repository (no
/// cluster: their status API is open on loopback), and `serve --hub`
/// reading them; `gitgate status --fleet` prints it, the page shows it.
#[test]
fn serve_hub_and_status_fleet_show_two_real_spokes() {
    common::install_crypto();
    let repo = support::Repo::new();
    repo.write(
        "gitgate.yaml",
        "clusters:
  - {name: production, labels: {env: production}}
  - {name: dr, labels: {env: production}}
  - {name: lab, labels: {env: lab}}
generators:
  - clusters: {selector: {matchLabels: {env: production}}}
    template:
      name: \"shop-{{name}}\"
      path: \"shop\"
      destination: {cluster: \"{{name}}\", namespace: shop}
",
    );
    repo.write("shop/cm.yaml", &support::configmap("settings", "v1"));
    repo.commit("fleet");
    let url = repo.url();
    let work = tempfile::tempdir().unwrap();
    let kubeconfig = work.path().join("none.kubeconfig");
    std::fs::write(&kubeconfig, "apiVersion: v1\nkind: Config\nclusters: []\ncontexts: []\nusers: []\n").unwrap();
    let mut spokes = Vec::new();
    for name in ["production", "dr", "lab"] {
        let dir = work.path().join(name);
        std::fs::create_dir(&dir).unwrap();
        let args = ["--repo", &url, "--cluster", name, "--kubeconfig", kubeconfig.to_str().unwrap()];
        spokes.push((name, common::ServeProcess::spawn(BIN, &dir, &args)));
    }
    let mut yaml = String::from("spokes:\n");
    for (name, s) in &spokes {
        yaml.push_str(&format!(
            "  - {{cluster: {name}, url: 'https://127.0.0.1:{}', caFile: '{}'}}\n",
            s.addr.port(),
            s.ca.display()
        ));
    }
    let hub_dir = work.path().join("hub");
    std::fs::create_dir(&hub_dir).unwrap();
    std::fs::write(hub_dir.join("fleet.yaml"), yaml).unwrap();
    let hub = common::ServeProcess::spawn_until(
        BIN,
        &hub_dir,
        "127.0.0.1:0",
        &["--hub", "--fleet", "fleet.yaml", "--fleet-interval", "1s", "--kubeconfig", kubeconfig.to_str().unwrap()],
        "listening on https://",
    );
    let server = format!("https://127.0.0.1:{}", hub.addr.port());
    let status = |extra: &[&str]| {
        std::process::Command::new(BIN)
            .args(["status", "--fleet", "--server", &server, "--ca"])
            .arg(&hub.ca)
            .args(extra)
            .output()
            .unwrap()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let view: FleetView = loop {
        let out = status(&["--json"]);
        let view: Option<FleetView> = serde_json::from_slice(&out.stdout).ok();
        match view {
            Some(v) if v.spokes.iter().all(|s| s.state == SpokeState::Up && s.status.cluster.is_some()) => break v,
            _ if std::time::Instant::now() > deadline => panic!("{}", String::from_utf8_lossy(&out.stderr)),
            _ => std::thread::sleep(Duration::from_millis(200)),
        }
    };
    assert_eq!(view.spokes[0].status.apps[0].name, "shop-production");
    assert_eq!(view.spokes[1].status.apps[0].name, "shop-dr");
    assert_eq!(view.spokes[1].labels["env"], "production", "the spoke says its labels");
    let g = &view.parity[0];
    assert_eq!((g.state, g.identical), (ParityState::Identical, 1), "the same Git content: {g:#?}");
    let out = status(&[]);
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.contains("parity production (production, dr): identical"), "{table}");
    assert_eq!(out.status.code(), Some(3), "plan mode syncs nothing: not all well\n{table}");
    // A cluster no app targets: a clear word, not an empty success.
    let lab = table.lines().find(|l| l.starts_with("lab")).unwrap_or_default();
    assert!(lab.contains("no app of gitgate.yaml is deployed to cluster lab"), "{table}");
    let (_, lab) = spokes.pop().unwrap();
    lab.terminate(Duration::from_secs(20));

    // A spoke without a fleet file says how to give it one.
    let page = std::process::Command::new("curl")
        .args(["-sS", "--fail", "--cacert"])
        .arg(&spokes[0].1.ca)
        .arg(format!("https://127.0.0.1:{}/ui/fleet", spokes[0].1.addr.port()))
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&page.stdout).contains("This gitgate reads no fleet"), "{page:?}");

    // The page, and dr stopped: unknown on the next round.
    let (_, dr) = spokes.pop().unwrap();
    dr.terminate(Duration::from_secs(20));
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let table = loop {
        let out = status(&[]);
        let table = String::from_utf8_lossy(&out.stdout).to_string();
        if table.lines().any(|l| l.starts_with("dr") && l.contains("Unknown")) || std::time::Instant::now() > deadline {
            break table;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(
        table.lines().any(|l| l.starts_with("dr") && l.contains("Unknown") && l.contains("unreachable")),
        "{table}"
    );
    assert!(table.contains("parity production (production, dr): unknown"), "{table}");
    let log = hub.wait_for_log("fleet: parity unknown", Duration::from_secs(10));
    let gone = log.lines().find(|l| l.contains("fleet: spoke unknown")).unwrap_or_default();
    assert!(gone.contains("cluster=dr") || gone.contains("\"cluster\":\"dr\""), "one line when dr went: {log}");
    let page = std::process::Command::new("curl")
        .args(["-sS", "--fail", "--cacert"])
        .arg(&hub.ca)
        .arg(format!("{server}/ui/fleet"))
        .output()
        .unwrap();
    let page = String::from_utf8_lossy(&page.stdout);
    assert!(page.contains("data-cluster=\"dr\" data-state=\"Unknown\""), "{page}");
    assert!(page.contains("data-cluster=\"production\" data-state=\"Up\""), "{page}");
    hub.terminate(Duration::from_secs(20));
}
