//! Leader election against a mocked API server (tower-test): the request
//! sequence and bodies of each round, then the election loop and a
//! failover against a small stateful fake Lease store.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use gitgate::sync::leader::{Elector, LeaseConfig};
use http::{Method, Request, Response};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::client::Body;
use serde_json::{Value, json};

type Handle = tower_test::mock::Handle<Request<Body>, Response<Body>>;

const NS: &str = "gitgate";
const NAME: &str = "gitgate-leader";
const PATH: &str = "/apis/coordination.k8s.io/v1/namespaces/gitgate/leases/gitgate-leader";
const COLLECTION: &str = "/apis/coordination.k8s.io/v1/namespaces/gitgate/leases";

fn config(identity: &str) -> LeaseConfig {
    LeaseConfig {
        namespace: NS.into(),
        name: NAME.into(),
        identity: identity.into(),
        lease_duration: Duration::from_secs(15),
        renew_interval: Duration::from_secs(2),
    }
}

fn mock() -> (kube::Client, Handle) {
    let (svc, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    (kube::Client::new(svc, "default"), handle)
}

fn time(t: Timestamp) -> Value {
    serde_json::to_value(MicroTime(t)).unwrap()
}

fn ago(secs: i64) -> Timestamp {
    Timestamp::now().checked_sub(SignedDuration::from_secs(secs)).unwrap()
}

fn lease(holder: &str, renewed: Timestamp, transitions: i32) -> Value {
    json!({
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": NAME, "namespace": NS, "resourceVersion": "42"},
        "spec": {"holderIdentity": holder, "leaseDurationSeconds": 15, "acquireTime": time(renewed),
                 "renewTime": time(renewed), "leaseTransitions": transitions},
    })
}

fn status(code: u16, reason: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": reason, "code": code,
           "message": format!("{reason} (test)")})
}

/// Answers the next request after checking its method and path; returns
/// the request's JSON body (Null when empty).
async fn expect(handle: &mut Handle, method: Method, path: &str, code: u16, reply: Value) -> Value {
    answer(handle, method, path, code, |_| reply).await
}

/// As [`expect`], replying with the request's own body (a successful write).
async fn echo(handle: &mut Handle, method: Method, path: &str, code: u16) -> Value {
    answer(handle, method, path, code, |sent| {
        let mut reply = sent.clone();
        reply["metadata"]["resourceVersion"] = json!("43");
        reply
    })
    .await
}

async fn answer(
    handle: &mut Handle,
    method: Method,
    path: &str,
    code: u16,
    reply: impl FnOnce(&Value) -> Value,
) -> Value {
    let (req, send) = handle.next_request().await.expect("the client sends a request");
    assert_eq!((req.method(), req.uri().path()), (&method, path), "request {:?}", req.uri());
    let bytes = req.into_body().collect_bytes().await.unwrap();
    let sent = if bytes.is_empty() { Value::Null } else { serde_json::from_slice(&bytes).unwrap() };
    let reply = reply(&sent);
    send.send_response(
        Response::builder()
            .status(code)
            .header("content-type", "application/json")
            .body(Body::from(serde_json::to_vec(&reply).unwrap()))
            .unwrap(),
    );
    sent
}

/// Runs `round` against the scripted `server`; fails if either hangs (a
/// request the script did not expect).
async fn scripted<T>(round: impl Future<Output = T>, server: impl Future<Output = Value>) -> (T, Value) {
    tokio::time::timeout(Duration::from_secs(10), async { tokio::join!(round, server) })
        .await
        .expect("the round makes exactly the scripted requests")
}

fn parse_time(v: &Value) -> Timestamp {
    serde_json::from_value::<MicroTime>(v.clone()).unwrap().0
}

#[tokio::test]
async fn absent_lease_is_created_with_us_as_holder() {
    let (client, mut h) = mock();
    let elector = Elector::new(client, config("pod-a"));
    let (won, created) = scripted(elector.try_acquire_or_renew(), async {
        expect(&mut h, Method::GET, PATH, 404, status(404, "NotFound")).await;
        echo(&mut h, Method::POST, COLLECTION, 201).await
    })
    .await;
    assert!(won.unwrap());
    assert_eq!(created["metadata"]["name"], NAME);
    assert_eq!(created["spec"]["holderIdentity"], "pod-a");
    assert_eq!(created["spec"]["leaseDurationSeconds"], 15);
    assert_eq!(created["spec"]["leaseTransitions"], 0);
    assert!(parse_time(&created["spec"]["renewTime"]) <= Timestamp::now());
}

#[tokio::test]
async fn fresh_lease_held_by_another_is_left_alone() {
    let (client, mut h) = mock();
    let elector = Elector::new(client, config("pod-a"));
    let (won, _) = scripted(elector.try_acquire_or_renew(), async {
        expect(&mut h, Method::GET, PATH, 200, lease("pod-b", ago(3), 4)).await
    })
    .await;
    assert!(!won.unwrap(), "someone else holds a fresh lease");
}

#[tokio::test]
async fn expired_lease_is_taken_over_with_the_resource_version_read() {
    let (client, mut h) = mock();
    let elector = Elector::new(client, config("pod-a"));
    let before = Timestamp::now();
    let (won, put) = scripted(elector.try_acquire_or_renew(), async {
        expect(&mut h, Method::GET, PATH, 200, lease("pod-b", ago(60), 4)).await;
        echo(&mut h, Method::PUT, PATH, 200).await
    })
    .await;
    assert!(won.unwrap());
    assert_eq!(put["metadata"]["resourceVersion"], "42", "optimistic concurrency on what was read");
    assert_eq!(put["spec"]["holderIdentity"], "pod-a");
    assert_eq!(put["spec"]["leaseTransitions"], 5);
    assert!(parse_time(&put["spec"]["acquireTime"]) >= before.checked_sub(SignedDuration::from_secs(1)).unwrap());
    assert!(parse_time(&put["spec"]["renewTime"]) >= before.checked_sub(SignedDuration::from_secs(1)).unwrap());
}

#[tokio::test]
async fn our_lease_is_renewed_without_a_transition() {
    let (client, mut h) = mock();
    let elector = Elector::new(client, config("pod-a"));
    let acquired = ago(100);
    let mut held = lease("pod-a", ago(5), 7);
    held["spec"]["acquireTime"] = time(acquired);
    let (won, put) = scripted(elector.try_acquire_or_renew(), async {
        expect(&mut h, Method::GET, PATH, 200, held.clone()).await;
        echo(&mut h, Method::PUT, PATH, 200).await
    })
    .await;
    assert!(won.unwrap());
    assert_eq!(put["spec"]["leaseTransitions"], 7, "a renewal is not a transition");
    assert_eq!(parse_time(&put["spec"]["acquireTime"]), parse_time(&time(acquired)));
    assert!(parse_time(&put["spec"]["renewTime"]) > ago(2));
}

#[tokio::test]
async fn released_lease_is_free_to_take() {
    let (client, mut h) = mock();
    let elector = Elector::new(client, config("pod-a"));
    let (won, put) = scripted(elector.try_acquire_or_renew(), async {
        expect(&mut h, Method::GET, PATH, 200, lease("", Timestamp::now(), 2)).await;
        echo(&mut h, Method::PUT, PATH, 200).await
    })
    .await;
    assert!(won.unwrap());
    assert_eq!(put["spec"]["leaseTransitions"], 3);
}

#[tokio::test]
async fn conflict_on_takeover_means_another_replica_won() {
    let (client, mut h) = mock();
    let elector = Elector::new(client, config("pod-a"));
    let (won, _) = scripted(elector.try_acquire_or_renew(), async {
        expect(&mut h, Method::GET, PATH, 200, lease("pod-b", ago(60), 4)).await;
        expect(&mut h, Method::PUT, PATH, 409, status(409, "Conflict")).await
    })
    .await;
    assert!(!won.unwrap());
}

#[tokio::test]
async fn conflict_on_create_means_another_replica_won() {
    let (client, mut h) = mock();
    let elector = Elector::new(client, config("pod-a"));
    let (won, _) = scripted(elector.try_acquire_or_renew(), async {
        expect(&mut h, Method::GET, PATH, 404, status(404, "NotFound")).await;
        expect(&mut h, Method::POST, COLLECTION, 409, status(409, "AlreadyExists")).await
    })
    .await;
    assert!(!won.unwrap());
}

#[tokio::test]
async fn server_errors_are_errors_not_losses() {
    let (client, mut h) = mock();
    let elector = Elector::new(client, config("pod-a"));
    let (res, _) = scripted(elector.try_acquire_or_renew(), async {
        expect(&mut h, Method::GET, PATH, 500, status(500, "InternalError")).await
    })
    .await;
    let err = res.unwrap_err();
    assert!(err.to_string().contains("failed to read lease gitgate/gitgate-leader"), "{err}");
}

#[tokio::test]
async fn release_clears_the_holder_when_ours() {
    let (client, mut h) = mock();
    let elector = Elector::new(client, config("pod-a"));
    let (res, put) = scripted(elector.release(), async {
        expect(&mut h, Method::GET, PATH, 200, lease("pod-a", ago(1), 3)).await;
        echo(&mut h, Method::PUT, PATH, 200).await
    })
    .await;
    res.unwrap();
    assert_eq!(put["spec"]["holderIdentity"], "");
    assert_eq!(put["spec"]["leaseDurationSeconds"], 1);
    assert_eq!(put["spec"]["leaseTransitions"], 3);
    assert_eq!(put["metadata"]["resourceVersion"], "42");
}

#[tokio::test]
async fn release_leaves_another_holders_lease_alone() {
    let (client, mut h) = mock();
    let elector = Elector::new(client, config("pod-a"));
    let (res, _) =
        scripted(elector.release(), async { expect(&mut h, Method::GET, PATH, 200, lease("pod-b", ago(1), 3)).await })
            .await;
    res.unwrap();
}

// ------------------------------------------------- the loop, on a fake store

/// A Lease store with the API server's optimistic concurrency, serving any
/// number of mocked clients.
#[derive(Clone, Default)]
struct Fake {
    lease: Arc<Mutex<Option<Value>>>,
    version: Arc<Mutex<u64>>,
    failing: Arc<Mutex<bool>>,
}

impl Fake {
    fn client(&self) -> kube::Client {
        let (client, mut handle) = mock();
        let fake = self.clone();
        tokio::spawn(async move {
            while let Some((req, send)) = handle.next_request().await {
                let method = req.method().clone();
                let bytes = req.into_body().collect_bytes().await.unwrap_or_default();
                let (code, body) = fake.answer(&method, &bytes);
                send.send_response(
                    Response::builder()
                        .status(code)
                        .header("content-type", "application/json")
                        .body(Body::from(serde_json::to_vec(&body).unwrap()))
                        .unwrap(),
                );
            }
        });
        client
    }

    fn answer(&self, method: &Method, body: &[u8]) -> (u16, Value) {
        if *self.failing.lock().unwrap() {
            return (500, status(500, "InternalError"));
        }
        let mut lease = self.lease.lock().unwrap();
        let mut version = self.version.lock().unwrap();
        match *method {
            Method::GET => match lease.as_ref() {
                Some(l) => (200, l.clone()),
                None => (404, status(404, "NotFound")),
            },
            Method::POST if lease.is_some() => (409, status(409, "AlreadyExists")),
            Method::POST | Method::PUT => {
                let mut new: Value = serde_json::from_slice(body).unwrap();
                if *method == Method::PUT {
                    let current = lease.as_ref().map(|l| l["metadata"]["resourceVersion"].clone());
                    if current != Some(new["metadata"]["resourceVersion"].clone()) {
                        return (409, status(409, "Conflict"));
                    }
                }
                *version += 1;
                new["metadata"]["resourceVersion"] = json!(version.to_string());
                *lease = Some(new.clone());
                (if *method == Method::POST { 201 } else { 200 }, new)
            }
            _ => (405, status(405, "MethodNotAllowed")),
        }
    }

    fn holder(&self) -> Option<String> {
        let lease = self.lease.lock().unwrap();
        lease.as_ref().and_then(|l| l["spec"]["holderIdentity"].as_str().map(str::to_string))
    }
}

fn fast(identity: &str) -> LeaseConfig {
    LeaseConfig {
        lease_duration: Duration::from_secs(2),
        renew_interval: Duration::from_millis(100),
        ..config(identity)
    }
}

async fn wait_for(rx: &mut tokio::sync::watch::Receiver<bool>, want: bool) {
    tokio::time::timeout(Duration::from_secs(10), rx.wait_for(|v| *v == want))
        .await
        .unwrap_or_else(|_| panic!("leadership never became {want}"))
        .unwrap();
}

#[tokio::test]
async fn one_of_two_replicas_leads_and_the_other_takes_over_on_release() {
    let fake = Fake::default();
    let (mut a_rx, a) = Elector::new(fake.client(), fast("pod-a")).spawn();
    wait_for(&mut a_rx, true).await;
    let (b_rx, b) = Elector::new(fake.client(), fast("pod-b")).spawn();
    // Several of b's rounds pass while a renews: b never leads.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!*b_rx.borrow(), "only one leader");
    assert!(*a_rx.borrow());
    assert_eq!(fake.holder().as_deref(), Some("pod-a"));

    // a shuts down and releases; b takes over well before a's lease would
    // have lapsed, and the transition is counted.
    a.shutdown().await.unwrap();
    assert!(!*a_rx.borrow(), "a stopped leading");
    let mut b_rx = b_rx;
    wait_for(&mut b_rx, true).await;
    assert_eq!(fake.holder().as_deref(), Some("pod-b"));
    let transitions = fake.lease.lock().unwrap().as_ref().unwrap()["spec"]["leaseTransitions"].clone();
    assert_eq!(transitions, 1);
    b.shutdown().await.unwrap();
    assert_eq!(fake.holder().as_deref(), Some(""), "released on shutdown");
}

#[tokio::test]
async fn leader_steps_down_when_it_cannot_renew() {
    let fake = Fake::default();
    let (mut rx, handle) = Elector::new(fake.client(), fast("pod-a")).spawn();
    wait_for(&mut rx, true).await;
    *fake.failing.lock().unwrap() = true;
    wait_for(&mut rx, false).await;
    // The API server comes back: the lease is still ours, so we lead again.
    *fake.failing.lock().unwrap() = false;
    wait_for(&mut rx, true).await;
    handle.shutdown().await.unwrap();
}

#[tokio::test]
async fn dropping_the_handle_stops_leading() {
    let fake = Fake::default();
    let (mut rx, handle) = Elector::new(fake.client(), fast("pod-a")).spawn();
    wait_for(&mut rx, true).await;
    drop(handle);
    wait_for(&mut rx, false).await;
}

/// A standby takes over from a leader that died without a word (SIGKILL:
/// nothing released) when its Lease lapses, not up to a renew interval
/// later: with a 3 s lease renewed 1 s ago and rounds every 2.9 s, the
/// fixed grid took over at 2.9 s; the standby now retries at the lapse
/// (2 s). Issue 16: recovery after a restart within the lease duration.
#[tokio::test]
async fn a_standby_takes_a_dead_leaders_lease_when_it_lapses() {
    let fake = Fake::default();
    let mut dead = lease("pod-dead", ago(1), 3);
    dead["spec"]["leaseDurationSeconds"] = json!(3);
    *fake.lease.lock().unwrap() = Some(dead);
    let config = LeaseConfig {
        lease_duration: Duration::from_secs(3),
        renew_interval: Duration::from_millis(2_900),
        ..config("pod-b")
    };
    let started = std::time::Instant::now();
    let (mut rx, handle) = Elector::new(fake.client(), config).spawn();
    wait_for(&mut rx, true).await;
    let took = started.elapsed();
    assert_eq!(fake.holder().as_deref(), Some("pod-b"));
    assert!(took >= Duration::from_millis(1_900), "taken before it lapsed: {took:?}");
    assert!(took < Duration::from_millis(2_600), "taken {took:?} after start: a round later than the lapse");
    handle.shutdown().await.unwrap();
}
