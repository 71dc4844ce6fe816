//! `--client-ca`: only the apiserver, proven by its client certificate,
//! gets admission decisions — over real TLS on loopback with real
//! certificates.
//!
//! Plays a pod that reaches gitgate's port (the anchors' "webhook reachable
//! by any workload" class: an admission server with no client
//! authentication answers forged reviews; Kubernetes documents the
//! apiserver's `kubeConfigFile` client certificate as the fix): no
//! certificate, a certificate from another CA, an expired certificate from
//! the right CA, the right CA but a name that is not accepted. None gets a
//! decision or leaves an audit record; probes stay open; the apiserver's
//! certificate gets a decision recorded with `"caller": "apiserver"`.

mod support;
use support::server as common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use gitgate::admission::{self, AdmissionState, CallerPolicy, Decider, Event, Limits, RecordError, Recorder};
use gitgate::server::{self, ConnLimits, Running};
use gitgate::tls;
use rcgen::{BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};

/// Remembers the caller of every recorded decision.
#[derive(Default)]
struct Callers(Mutex<Vec<String>>);

impl Recorder for Callers {
    fn record(&self, e: &Event<'_>) -> Result<(), RecordError> {
        let entry = gitgate::audit::recorder::admission_entry(e);
        self.0.lock().unwrap().push(entry.caller);
        Ok(())
    }
}

struct Ca {
    pem: String,
    issuer: Issuer<'static, KeyPair>,
}

fn ca(name: &str) -> Ca {
    let key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, name);
    p.distinguished_name = dn;
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign];
    let cert = p.self_signed(&key).unwrap();
    Ca { pem: cert.pem(), issuer: Issuer::new(p, key) }
}

/// A client certificate (PEM cert + key) with common name `cn`, valid
/// `days_from..days_to` around today.
fn client_cert(ca: &Ca, cn: &str, days_from: i64, days_to: i64) -> String {
    let key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    p.distinguished_name = dn;
    p.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    let at = |days: i64| rcgen::date_time_ymd(1970, 1, 1) + Duration::from_secs((now + days * 86_400) as u64);
    p.not_before = at(days_from);
    p.not_after = at(days_to);
    let cert = p.signed_by(&key, &ca.issuer).unwrap();
    format!("{}{}", cert.pem(), key.serialize_pem())
}

struct Server {
    running: Running,
    _dir: tempfile::TempDir,
    serving_ca: Vec<u8>,
    recorded: Arc<Callers>,
    state: Arc<AdmissionState>,
}

async fn start(client_ca: &Ca, names: &[&str]) -> Server {
    common::install_crypto();
    let dir = tempfile::tempdir().unwrap();
    let certs = tls::generate(dir.path(), &["localhost".into()], 30).unwrap();
    let ca_file = dir.path().join("client-ca.crt");
    std::fs::write(&ca_file, &client_ca.pem).unwrap();
    let files = tls::Files { cert: certs.serving_cert, key: certs.serving_key, client_ca: Some(ca_file) };
    let (config, _reloader) = tls::Reloader::load_files(files).unwrap();
    let recorded = Arc::new(Callers::default());
    let state = AdmissionState::new(Default::default(), Limits::default(), recorded.clone())
        .with_callers(CallerPolicy::ClientCertificate { names: names.iter().map(|n| n.to_string()).collect() });
    let state = Arc::new(state);
    state.publish(Arc::new(Decider::new()));
    let failures = state.metrics().handshake_failures.clone();
    let running = server::start_counting(
        "127.0.0.1:0".parse().unwrap(),
        config,
        admission::router(state.clone()),
        ConnLimits::default(),
        failures,
    )
    .await
    .unwrap();
    Server { running, serving_ca: std::fs::read(certs.ca_cert).unwrap(), _dir: dir, recorded, state }
}

impl Server {
    fn client(&self, identity: Option<&str>) -> reqwest::Client {
        let mut b = reqwest::Client::builder()
            .tls_certs_only([reqwest::Certificate::from_pem(&self.serving_ca).unwrap()])
            .resolve("localhost", self.running.addr);
        if let Some(pem) = identity {
            b = b.identity(reqwest::Identity::from_pem(pem.as_bytes()).unwrap());
        }
        b.build().unwrap()
    }

    fn url(&self, path: &str) -> String {
        format!("https://localhost:{}{path}", self.running.addr.port())
    }

    async fn post(&self, client: &reqwest::Client, path: &str) -> Result<(u16, String), reqwest::Error> {
        let resp = client
            .post(self.url(path))
            .header("content-type", "application/json")
            .body(common::fixture("validate-create-deployment.json"))
            .send()
            .await?;
        let status = resp.status().as_u16();
        Ok((status, resp.text().await?))
    }

    fn metrics(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &registry_of(&self.state)).unwrap();
        out
    }
}

/// The state's metrics as `/metrics` would serve them.
fn registry_of(state: &AdmissionState) -> prometheus_client::registry::Registry {
    let mut r = prometheus_client::registry::Registry::default();
    r.register("hs", "handshake failures", state.metrics().handshake_failures.clone());
    r.register("unauth", "unauthenticated requests", state.metrics().unauthenticated.clone());
    r
}

#[tokio::test]
async fn only_a_certificate_from_the_client_ca_gets_a_decision() {
    let apiserver_ca = ca("cluster CA");
    let srv = start(&apiserver_ca, &[]).await;
    let apiserver = client_cert(&apiserver_ca, "kube-apiserver-webhook-client", -1, 30);

    // The apiserver: a decision, recorded as from the apiserver.
    let (code, body) = srv.post(&srv.client(Some(&apiserver)), "/validate").await.unwrap();
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("\"allowed\":true"), "{body}");
    assert_eq!(*srv.recorded.0.lock().unwrap(), vec!["apiserver".to_string()]);

    // No certificate: the handshake completes (probes have none), the
    // webhooks refuse, nothing is recorded.
    let anonymous = srv.client(None);
    for path in ["/validate", "/mutate"] {
        let (code, body) = srv.post(&anonymous, path).await.unwrap();
        assert_eq!(code, 401, "{path}: {body}");
        assert!(body.contains("client certificate"), "{body}");
        assert!(!body.contains("\"response\""), "no decision: {body}");
    }
    for probe in ["/healthz", "/readyz"] {
        let resp = anonymous.get(srv.url(probe)).send().await.unwrap();
        assert_eq!(resp.status(), 200, "{probe} stays open");
    }
    let ready = anonymous.get(srv.url("/readyz")).send().await.unwrap().text().await.unwrap();
    assert!(ready.contains("\"callers\":\"client-certificate\""), "{ready}");

    // Another CA's certificate, and the right CA's expired one: no
    // connection at all, counted by reason.
    let stranger_ca = ca("somebody else's CA");
    let stranger = client_cert(&stranger_ca, "kube-apiserver-webhook-client", -1, 30);
    assert!(srv.post(&srv.client(Some(&stranger)), "/validate").await.is_err());
    let expired = client_cert(&apiserver_ca, "kube-apiserver-webhook-client", -30, -1);
    assert!(srv.post(&srv.client(Some(&expired)), "/validate").await.is_err());

    assert_eq!(srv.recorded.0.lock().unwrap().len(), 1, "refused callers leave no admission record");
    let metrics = srv.metrics();
    assert!(metrics.contains("hs_total{reason=\"unknown_ca\"} 1"), "{metrics}");
    assert!(metrics.contains("hs_total{reason=\"expired\"} 1"), "{metrics}");
    assert!(metrics.contains("unauth_total{endpoint=\"validate\",reason=\"no_certificate\"} 1"), "{metrics}");
    srv.running.shutdown(Duration::from_secs(1)).await.unwrap();
}

#[tokio::test]
async fn client_names_narrow_the_ca_to_the_apiservers_certificate() {
    // A cluster CA signs many client certificates (every kubelet's, every
    // user's); --client-name keeps those from asking.
    let cluster_ca = ca("cluster CA");
    let srv = start(&cluster_ca, &["kube-apiserver-webhook-client"]).await;
    let kubelet = client_cert(&cluster_ca, "system:node:worker-1", -1, 30);
    let (code, body) = srv.post(&srv.client(Some(&kubelet)), "/mutate").await.unwrap();
    assert_eq!(code, 403, "{body}");
    assert!(!body.contains("kube-apiserver-webhook-client"), "the accepted names stay in gitgate's log: {body}");
    let apiserver = client_cert(&cluster_ca, "kube-apiserver-webhook-client", -1, 30);
    let (code, _) = srv.post(&srv.client(Some(&apiserver)), "/mutate").await.unwrap();
    assert_eq!(code, 200);
    assert_eq!(*srv.recorded.0.lock().unwrap(), vec!["apiserver".to_string()]);
    let metrics = srv.metrics();
    assert!(metrics.contains("unauth_total{endpoint=\"mutate\",reason=\"name_not_allowed\"} 1"), "{metrics}");
    srv.running.shutdown(Duration::from_secs(1)).await.unwrap();
}

#[tokio::test]
async fn without_a_client_ca_decisions_are_recorded_as_unauthenticated() {
    let recorded = Arc::new(Callers::default());
    let state = Arc::new(AdmissionState::new(Default::default(), Limits::default(), recorded.clone()));
    state.publish(Arc::new(Decider::new()));
    let srv = common::start_server(state, ConnLimits::default()).await;
    let resp = srv
        .client()
        .post(srv.url("/validate"))
        .body(common::fixture("validate-create-deployment.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let ready = srv.client().get(srv.url("/readyz")).send().await.unwrap().text().await.unwrap();
    assert!(ready.contains("\"callers\":\"unauthenticated\""), "{ready}");
    assert_eq!(*recorded.0.lock().unwrap(), vec!["unauthenticated".to_string()]);
    srv.running.shutdown(Duration::from_secs(1)).await.unwrap();
}

#[test]
fn a_certificates_names_are_its_common_name_and_dns_names() {
    let ca = ca("x");
    let key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::new(vec!["webhook.example".to_string()]).unwrap();
    p.distinguished_name.push(DnType::CommonName, "kube-apiserver-webhook-client");
    let cert = p.signed_by(&key, &ca.issuer).unwrap();
    assert_eq!(
        tls::certificate_names(cert.der()),
        vec!["kube-apiserver-webhook-client".to_string(), "webhook.example".to_string()]
    );
}

/// Which thread served `GET /thread` on a connection presenting `identity`.
async fn served_by(addr: std::net::SocketAddr, serving_ca: &[u8], identity: Option<&str>) -> String {
    let mut b = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(serving_ca).unwrap()])
        .resolve("localhost", addr);
    if let Some(pem) = identity {
        b = b.identity(reqwest::Identity::from_pem(pem.as_bytes()).unwrap());
    }
    let client = b.build().unwrap();
    let resp = client.get(format!("https://localhost:{}/thread", addr.port())).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    resp.text().await.unwrap()
}

/// A flood of hostile connections (no certificate, or not the apiserver's)
/// must compete for the CPU below the apiserver: with a client CA, only the
/// apiserver's connections are served on the main runtime, every other
/// connection on the open pool's low-priority runtime; without one,
/// nobody can be told apart and everything stays on the main runtime.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_apiservers_connections_are_served_on_the_main_runtime() {
    common::install_crypto();
    let client_ca = ca("client-ca");
    let dir = tempfile::tempdir().unwrap();
    let certs = tls::generate(dir.path(), &["localhost".into()], 30).unwrap();
    let ca_file = dir.path().join("client-ca.crt");
    std::fs::write(&ca_file, &client_ca.pem).unwrap();
    let serving_ca = std::fs::read(&certs.ca_cert).unwrap();
    let router = || {
        axum::Router::new().route(
            "/thread",
            axum::routing::get(|| async { std::thread::current().name().unwrap_or_default().to_string() }),
        )
    };
    let apiserver = client_cert(&client_ca, "kube-apiserver", -1, 30);
    let other_name = client_cert(&client_ca, "some-pod", -1, 30);

    for split in [true, false] {
        let files = tls::Files {
            cert: certs.serving_cert.clone(),
            key: certs.serving_key.clone(),
            client_ca: Some(ca_file.clone()),
        };
        let (config, _reloader) = tls::Reloader::load_files(files).unwrap();
        let limits = ConnLimits {
            reserved_names: vec!["kube-apiserver".into()],
            low_priority_open: split,
            ..ConnLimits::default()
        };
        let running = server::start("127.0.0.1:0".parse().unwrap(), config, router(), limits).await.unwrap();
        let addr = running.addr;
        let by_apiserver = served_by(addr, &serving_ca, Some(&apiserver)).await;
        let by_anonymous = served_by(addr, &serving_ca, None).await;
        let by_other_name = served_by(addr, &serving_ca, Some(&other_name)).await;
        assert_ne!(by_apiserver, server::OPEN_THREAD, "split {split}: the apiserver is served on the main runtime");
        if split {
            assert_eq!(by_anonymous, server::OPEN_THREAD, "no certificate: the low-priority runtime");
            assert_eq!(by_other_name, server::OPEN_THREAD, "not a --client-name: the low-priority runtime");
        } else {
            assert_ne!(by_anonymous, server::OPEN_THREAD, "without the split everything stays on the main runtime");
            assert_ne!(by_other_name, server::OPEN_THREAD);
        }
        running.shutdown(Duration::from_secs(2)).await.unwrap();
    }
}
