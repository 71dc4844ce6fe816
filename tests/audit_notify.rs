//! Notifications: Slack-compatible POSTs to a loopback webhook receiver,
//! per-trigger URLs, retries with backoff, and a full queue that drops
//! instead of blocking.

mod support;
use support::server as common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use gitgate::audit::log::Options;
use gitgate::audit::{
    AuditLog, AuditMetrics, CommitRef, Entry, EventKind, Notifier, NotifyConfig, NotifyLabels, Outcome,
};
use serde_json::Value;

#[derive(Clone, Default)]
struct Receiver {
    got: Arc<Mutex<Vec<(String, Value)>>>,
    flaky_failures: Arc<Mutex<u32>>,
    /// Where `/redirect` sends its 307, and how often it was asked.
    redirect_to: Arc<Mutex<String>>,
    redirected: Arc<Mutex<u32>>,
}

async fn redirect(State(r): State<Receiver>) -> axum::response::Response {
    *r.redirected.lock().unwrap() += 1;
    let to = r.redirect_to.lock().unwrap().clone();
    axum::response::Response::builder()
        .status(StatusCode::TEMPORARY_REDIRECT)
        .header("location", to)
        .body(axum::body::Body::empty())
        .unwrap()
}

async fn all(State(r): State<Receiver>, body: String) -> StatusCode {
    r.got.lock().unwrap().push(("all".into(), serde_json::from_str(&body).unwrap()));
    StatusCode::OK
}

async fn flaky(State(r): State<Receiver>, body: String) -> StatusCode {
    let mut failures = r.flaky_failures.lock().unwrap();
    if *failures < 2 {
        *failures += 1;
        return StatusCode::SERVICE_UNAVAILABLE;
    }
    r.got.lock().unwrap().push(("flaky".into(), serde_json::from_str(&body).unwrap()));
    StatusCode::OK
}

async fn hang() -> StatusCode {
    tokio::time::sleep(Duration::from_secs(3600)).await;
    StatusCode::OK
}

async fn receiver() -> (String, Receiver) {
    let r = Receiver::default();
    let app = Router::new()
        .route("/all", post(all))
        .route("/flaky", post(flaky))
        .route("/hang", post(hang))
        .route("/redirect", post(redirect))
        .with_state(r.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}"), r)
}

fn denied_edit(app: &str) -> Entry {
    let mut e = Entry::new(EventKind::Admission, Outcome::Deny);
    (e.namespace, e.kind, e.name, e.operation, e.user) =
        ("prod".into(), "Deployment".into(), "web".into(), "UPDATE".into(), "alice".into());
    e.app = app.into();
    e.commit = Some(CommitRef { id: "ab".repeat(20), author: String::new(), subject: "web: 3 replicas".into() });
    e.reasons.push("NotFromGit: web is managed by Git".into());
    e
}

async fn wait_for(r: &Receiver, n: usize) -> Vec<(String, Value)> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let got = r.got.lock().unwrap().clone();
        if got.len() >= n {
            return got;
        }
        assert!(Instant::now() < deadline, "only {} of {n} notifications arrived: {got:?}", got.len());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn notifications_go_to_their_url_and_are_retried() {
    common::install_crypto();
    let (base, r) = receiver().await;
    let mut config = NotifyConfig::from_flags(Some(&format!("{base}/all")), &[format!("sync-failed={base}/flaky")])
        .unwrap()
        .unwrap();
    config.backoff = Duration::from_millis(10);
    let metrics = AuditMetrics::default();
    let dir = tempfile::tempdir().unwrap();
    let mut opts = Options::new(dir.path().join("audit.jsonl"));
    opts.notifier = Some(Notifier::start(config, metrics.notifications.clone()).unwrap());
    opts.metrics = metrics.clone();
    let log = AuditLog::open(opts).unwrap();

    log.append(&denied_edit("")).unwrap(); // not a managed object: no notification
    log.append(&Entry::new(EventKind::Apply, Outcome::Done)).unwrap(); // routine: none
    log.append(&denied_edit("web")).unwrap();
    let mut failed = Entry::new(EventKind::SyncFailed, Outcome::Failed);
    failed.app = "web".into();
    failed.reasons.push("failed to fetch origin".into());
    log.append(&failed).unwrap();

    let got = wait_for(&r, 2).await;
    let all: Vec<&str> = got.iter().filter(|(u, _)| u == "all").map(|(_, v)| v["text"].as_str().unwrap()).collect();
    assert_eq!(all.len(), 1, "{got:?}");
    assert!(all[0].contains("denied UPDATE prod/Deployment/web by alice"), "{}", all[0]);
    assert!(all[0].contains(&"ab".repeat(20)) && all[0].contains("[audit record 3]"), "{}", all[0]);
    let flaky: Vec<&str> = got.iter().filter(|(u, _)| u == "flaky").map(|(_, v)| v["text"].as_str().unwrap()).collect();
    assert_eq!(flaky, vec!["gitgate: sync failed (app web): failed to fetch origin [audit record 4]"]);
    assert_eq!(*r.flaky_failures.lock().unwrap(), 2, "two 503s, then delivered");
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(r.got.lock().unwrap().len(), 2, "nothing else was sent");
    assert_eq!(metrics.notifications.get_or_create(&NotifyLabels { result: "sent" }).get(), 2);
}

#[tokio::test]
async fn a_stuck_receiver_never_blocks_appends() {
    common::install_crypto();
    let (base, _r) = receiver().await;
    let mut config = NotifyConfig::from_flags(Some(&format!("{base}/hang")), &[]).unwrap().unwrap();
    config.queue = 2;
    let metrics = AuditMetrics::default();
    let dir = tempfile::tempdir().unwrap();
    let mut opts = Options::new(dir.path().join("audit.jsonl"));
    opts.notifier = Some(Notifier::start(config, metrics.notifications.clone()).unwrap());
    let log = AuditLog::open(opts).unwrap();
    for _ in 0..50 {
        log.append(&denied_edit("web")).unwrap();
    }
    let dropped = metrics.notifications.get_or_create(&NotifyLabels { result: "dropped" }).get();
    assert!(dropped >= 45, "a full queue drops (and counts) instead of waiting: {dropped}");
    assert_eq!(log.head().unwrap().seq, 50, "every record was written");
}

#[test]
fn bad_notification_flags_are_refused() {
    assert!(NotifyConfig::from_flags(None, &[]).unwrap().is_none());
    assert!(NotifyConfig::from_flags(Some("ftp://x"), &[]).is_err());
    assert!(NotifyConfig::from_flags(None, &["nope=http://x".into()]).is_err());
    assert!(NotifyConfig::from_flags(None, &["deny".into()]).is_err());
    let c = NotifyConfig::from_flags(None, &["break-glass=https://hooks.example/x".into()]).unwrap().unwrap();
    assert!(c.default.is_none() && c.routes.len() == 1);
}

/// SSRF through notifications. The URL is the operator's alone (`--notify-url`
/// and `--notify` flags; nothing in gitgate.yaml or a request names one);
/// what Git and requesters control — the app, the object, the commit
/// subject, the denial reason — only goes into the JSON body. And the
/// operator's receiver cannot bounce the POST elsewhere: a 307 to an
/// internal address (the class of Argo CD notifications' and Flux
/// notification-controller's webhook-provider SSRF) is not followed.
#[tokio::test]
async fn notifications_go_only_to_the_operators_url_and_redirects_are_not_followed() {
    common::install_crypto();
    let (outside, to_operator) = receiver().await;
    let (internal, inside) = receiver().await;
    *to_operator.redirect_to.lock().unwrap() = format!("{internal}/all");
    let mut config = NotifyConfig::from_flags(Some(&format!("{outside}/redirect")), &[]).unwrap().unwrap();
    config.backoff = Duration::from_millis(10);
    let metrics = AuditMetrics::default();
    let dir = tempfile::tempdir().unwrap();
    let mut opts = Options::new(dir.path().join("audit.jsonl"));
    opts.notifier = Some(Notifier::start(config, metrics.notifications.clone()).unwrap());
    let log = AuditLog::open(opts).unwrap();
    // A Git author's commit subject and a requester's object name that
    // spell the internal address.
    let mut e = denied_edit("web");
    e.name = format!("{internal}/all");
    e.commit.as_mut().unwrap().subject = format!("see {internal}/all");
    log.append(&e).unwrap();

    // (A guard from get_or_create blocks the notifier's counting: read and drop.)
    let count = |result| metrics.notifications.get_or_create(&NotifyLabels { result }).get();
    let deadline = Instant::now() + Duration::from_secs(20);
    while count("failed") + count("sent") == 0 {
        assert!(Instant::now() < deadline, "the notification was neither sent nor failed");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!((count("sent"), count("failed")), (0, 1), "a redirect is a failed delivery");
    assert_eq!(*to_operator.redirected.lock().unwrap(), 1, "the operator's URL was asked once (a 3xx is not retried)");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(inside.got.lock().unwrap().is_empty(), "the redirect was followed to the internal address");
    assert!(to_operator.got.lock().unwrap().is_empty());
}
