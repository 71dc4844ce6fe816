//! The admission server over real TLS on loopback: every fixture with a
//! client that trusts only the generated CA, HTTP/2 and HTTP/1.1,
//! certificate rotation on disk, slow clients and graceful drain.

mod support;
use support::server as common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use gitgate::admission::{Decider, Limits};
use gitgate::server::ConnLimits;
use gitgate::tls;
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::Value;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

fn state() -> Arc<gitgate::admission::AdmissionState> {
    common::state_with(Decider::new(), Limits::default())
}

#[tokio::test]
async fn every_fixture_over_tls_with_http2_and_http1() {
    let srv = common::start_server(state(), ConnLimits::default()).await;
    let h2 = srv.client();
    let h1 = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(&srv.ca_pem).unwrap()])
        .resolve("localhost", srv.running.addr)
        .http1_only()
        .build()
        .unwrap();
    for (name, body) in common::fixtures() {
        let sent: Value = serde_json::from_slice(&body).unwrap();
        let path = if name.starts_with("mutate") { "/mutate" } else { "/validate" };
        for (client, version) in [(&h2, reqwest::Version::HTTP_2), (&h1, reqwest::Version::HTTP_11)] {
            let resp = client
                .post(srv.url(path))
                .header("content-type", "application/json")
                .body(body.clone())
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), 200, "{name}");
            assert_eq!(resp.version(), version, "{name}: ALPN must offer h2 and http/1.1");
            let got: Value = resp.json().await.unwrap();
            assert_eq!(got["response"]["uid"], sent["request"]["uid"], "{name}");
        }
    }
    srv.running.shutdown(Duration::from_secs(1)).await.unwrap();
}

#[tokio::test]
async fn a_client_that_does_not_trust_the_ca_cannot_connect() {
    let srv = common::start_server(state(), ConnLimits::default()).await;
    let other = tempfile::tempdir().unwrap();
    let certs = tls::generate(other.path(), &["localhost".into()], 1).unwrap();
    let stranger = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(&std::fs::read(certs.ca_cert).unwrap()).unwrap()])
        .resolve("localhost", srv.running.addr)
        .build()
        .unwrap();
    let err = stranger.get(srv.url("/healthz")).send().await.unwrap_err();
    assert!(err.is_connect(), "{err:?}");
    srv.running.shutdown(Duration::from_secs(1)).await.unwrap();
}

async fn peer_certificate(addr: std::net::SocketAddr, ca_pem: &[u8]) -> CertificateDer<'static> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from_pem_slice(ca_pem).unwrap()).unwrap();
    let config = rustls::ClientConfig::builder().with_root_certificates(roots).with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let stream = connector.connect(ServerName::try_from("localhost").unwrap(), tcp).await.unwrap();
    stream.get_ref().1.peer_certificates().unwrap()[0].clone().into_owned()
}

use rustls::pki_types::pem::PemObject as _;

#[tokio::test]
async fn a_rotated_certificate_is_served_to_new_connections_without_dropping_old_ones() {
    common::install_crypto();
    let dir = tempfile::tempdir().unwrap();
    let first = tls::generate(dir.path(), &["localhost".into()], 30).unwrap();
    let (config, reloader) = tls::Reloader::load(&first.serving_cert, &first.serving_key).unwrap();
    let running = gitgate::server::start(
        "127.0.0.1:0".parse().unwrap(),
        config,
        gitgate::admission::router(state()),
        ConnLimits::default(),
    )
    .await
    .unwrap();
    let reload = tokio::spawn(reloader.run(Duration::from_millis(100)));
    let ca_pem = std::fs::read(&first.ca_cert).unwrap();
    let old_der = CertificateDer::from_pem_file(&first.serving_cert).unwrap();
    assert_eq!(peer_certificate(running.addr, &ca_pem).await, old_der);

    // a keep-alive connection opened before the rotation
    let client = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(&ca_pem).unwrap()])
        .resolve("localhost", running.addr)
        .http1_only()
        .build()
        .unwrap();
    let url = format!("https://localhost:{}/healthz", running.addr.port());
    assert_eq!(client.get(&url).send().await.unwrap().status(), 200);

    // rotate on disk (same CA, new key and certificate), as cert-manager does
    let second = tls::generate(dir.path(), &["localhost".into(), "rotated.example".into()], 30).unwrap();
    let new_der = CertificateDer::from_pem_file(&second.serving_cert).unwrap();
    assert_ne!(old_der, new_der);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if peer_certificate(running.addr, &ca_pem).await == new_der {
            break;
        }
        assert!(Instant::now() < deadline, "the new certificate was not picked up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // the old connection still works
    assert_eq!(client.get(&url).send().await.unwrap().status(), 200);
    reload.abort();
    running.shutdown(Duration::from_secs(1)).await.unwrap();
}

#[tokio::test]
async fn a_broken_certificate_on_disk_keeps_the_old_one() {
    common::install_crypto();
    let dir = tempfile::tempdir().unwrap();
    let first = tls::generate(dir.path(), &["localhost".into()], 30).unwrap();
    let (_config, mut reloader) = tls::Reloader::load(&first.serving_cert, &first.serving_key).unwrap();
    std::fs::write(&first.serving_cert, b"-----BEGIN CERTIFICATE-----\ntruncated").unwrap();
    assert!(reloader.check().is_err(), "a half-written certificate is reported");
    tls::generate(dir.path(), &["localhost".into()], 30).unwrap();
    assert!(reloader.check().unwrap(), "a good pair is then picked up");
    assert!(!reloader.check().unwrap(), "and only once");
}

async fn tls_stream(srv: &common::TestServer) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from_pem_slice(&srv.ca_pem).unwrap()).unwrap();
    let mut config = rustls::ClientConfig::builder().with_root_certificates(roots).with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(srv.running.addr).await.unwrap();
    connector.connect(ServerName::try_from("localhost").unwrap(), tcp).await.unwrap()
}

#[tokio::test]
async fn slowloris_headers_are_cut_off_and_other_clients_are_served() {
    let conn = ConnLimits { header_timeout: Duration::from_millis(300), ..ConnLimits::default() };
    let srv = common::start_server(state(), conn).await;
    let mut slow = tls_stream(&srv).await;
    slow.write_all(b"POST /validate HTTP/1.1\r\nHost: localhost\r\n").await.unwrap();
    slow.flush().await.unwrap();
    // meanwhile, a normal client is served
    let resp = srv.client().get(srv.url("/healthz")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    // the slow one is answered 408 or closed, within a bound
    let started = Instant::now();
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), slow.read_to_end(&mut buf)).await;
    assert!(read.is_ok(), "a slow client must be cut off");
    assert!(started.elapsed() < Duration::from_secs(3));
    let text = String::from_utf8_lossy(&buf);
    assert!(buf.is_empty() || text.starts_with("HTTP/1.1 408"), "{text}");
    srv.running.shutdown(Duration::from_secs(1)).await.unwrap();
}

#[tokio::test]
async fn a_handshake_that_never_starts_is_cut_off() {
    let conn = ConnLimits { handshake_timeout: Duration::from_millis(300), ..ConnLimits::default() };
    let srv = common::start_server(state(), conn).await;
    let mut tcp = tokio::net::TcpStream::connect(srv.running.addr).await.unwrap();
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut buf)).await;
    assert!(matches!(n, Ok(Ok(0)) | Ok(Err(_))), "the server must close an idle handshake: {n:?}");
    srv.running.shutdown(Duration::from_secs(1)).await.unwrap();
}

#[tokio::test]
async fn shutdown_drains_an_in_flight_request() {
    let srv = common::start_server(state(), ConnLimits::default()).await;
    let body = common::fixture("validate-create-namespace.json");
    let mut stream = tls_stream(&srv).await;
    let head = format!(
        "POST /validate HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(&body[..100]).await.unwrap();
    stream.flush().await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;

    let addr = srv.running.addr;
    let shutdown = tokio::spawn(srv.running.shutdown(Duration::from_secs(5)));
    tokio::time::sleep(Duration::from_millis(200)).await;
    // new connections are refused while draining
    assert!(tokio::net::TcpStream::connect(addr).await.is_err(), "the listener must be closed");
    // the in-flight request still completes
    stream.write_all(&body[100..]).await.unwrap();
    stream.flush().await.unwrap();
    let mut buf = vec![0u8; 64 * 1024];
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    while !String::from_utf8_lossy(&got).contains("\"uid\"") {
        assert!(Instant::now() < deadline, "no answer: {}", String::from_utf8_lossy(&got));
        let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf)).await.unwrap().unwrap();
        if n == 0 {
            break;
        }
        got.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    drop(stream);
    shutdown.await.unwrap().unwrap();
}
