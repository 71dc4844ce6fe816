//! Overload, played by an attacker: a real `gitgate serve --client-ca …`
//! process over real TLS, hostile clients without the apiserver's
//! certificate (any pod can reach the port), and the apiserver's
//! certificate asking for reviews meanwhile. Every test asserts the
//! apiserver is still answered — 200 with a decision — while the attack
//! runs, and that the attack was met by the bound it plays against.
//!
//! Anchors: slowloris (CVE-2007-6750) on TLS handshakes and on HTTP/2
//! header blocks; HTTP/2 rapid reset (CVE-2023-44487); HTTP/2 ping and
//! settings floods (CVE-2019-9512, CVE-2019-9515); HTTP/2 stream floods
//! on one connection (CVE-2019-9514's reset flood, the stream limit);
//! Kubernetes CVE-2019-11253 (deeply nested documents); webhook denial of
//! service with parallel maximum-size bodies.

mod support;
use support::server as common;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rcgen::{BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use rustls::pki_types::{CertificateDer, ServerName, pem::PemObject as _};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

const BIN: &str = env!("CARGO_BIN_EXE_gitgate");
const APISERVER: &str = "kube-apiserver-webhook-client";

/// A `gitgate serve` that answers only the client CA's `APISERVER`.
struct Served {
    serve: common::ServeProcess,
    _work: tempfile::TempDir,
    serving_ca: Vec<u8>,
    /// PEM certificate + key the apiserver presents.
    apiserver: String,
}

fn client_ca(dir: &Path) -> (std::path::PathBuf, String) {
    let key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "cluster CA");
    p.distinguished_name = dn;
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign];
    let ca = p.self_signed(&key).unwrap();
    let issuer = Issuer::new(p, key);
    let path = dir.join("client-ca.crt");
    std::fs::write(&path, ca.pem()).unwrap();
    let key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.distinguished_name.push(DnType::CommonName, APISERVER);
    p.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let cert = p.signed_by(&key, &issuer).unwrap();
    (path, format!("{}{}", cert.pem(), key.serialize_pem()))
}

/// Starts serve with the client CA and `extra` flags.
fn serve(extra: &[&str]) -> Served {
    common::install_crypto();
    let work = tempfile::tempdir().unwrap();
    let (ca, apiserver) = client_ca(work.path());
    let ca = ca.to_str().unwrap().to_string();
    let mut args = vec!["--sync", "off", "--client-ca", &ca, "--client-name", APISERVER];
    args.extend_from_slice(extra);
    let serve = common::ServeProcess::spawn(BIN, work.path(), &args);
    let serving_ca = std::fs::read(work.path().join("certs/ca.crt")).unwrap();
    Served { serve, _work: work, serving_ca, apiserver }
}

impl Served {
    fn url(&self, path: &str) -> String {
        format!("https://localhost:{}{path}", self.serve.addr.port())
    }

    fn client(&self, identity: Option<&str>) -> reqwest::Client {
        let mut b = reqwest::Client::builder()
            .tls_certs_only([reqwest::Certificate::from_pem(&self.serving_ca).unwrap()])
            .resolve("localhost", self.serve.addr)
            .timeout(Duration::from_secs(10));
        if let Some(pem) = identity {
            b = b.identity(reqwest::Identity::from_pem(pem.as_bytes()).unwrap());
        }
        b.build().unwrap()
    }

    /// The apiserver's client: its certificate, a fresh connection pool.
    fn apiserver(&self) -> reqwest::Client {
        self.client(Some(&self.apiserver))
    }

    /// The apiserver asks for `n` reviews one after another; each must be
    /// a decision. Returns the slowest.
    async fn apiserver_reviews(&self, client: &reqwest::Client, n: usize) -> Duration {
        let body = common::fixture("validate-create-deployment.json");
        let mut slowest = Duration::ZERO;
        for i in 0..n {
            let t = Instant::now();
            let resp = client
                .post(self.url("/validate"))
                .header("content-type", "application/json")
                .body(body.clone())
                .send()
                .await
                .unwrap_or_else(|e| panic!("apiserver review {i}: {e}"));
            let status = resp.status();
            let text = resp.text().await.unwrap();
            assert_eq!(status, 200, "apiserver review {i}: {text}");
            assert!(text.contains("\"allowed\""), "a decision: {text}");
            slowest = slowest.max(t.elapsed());
        }
        slowest
    }

    async fn metrics(&self) -> String {
        self.client(None).get(self.url("/metrics")).send().await.unwrap().text().await.unwrap()
    }

    /// A TLS connection without a client certificate, offering `alpn`.
    async fn tls(&self, alpn: &[u8]) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(CertificateDer::from_pem_slice(&self.serving_ca).unwrap()).unwrap();
        let mut config = rustls::ClientConfig::builder().with_root_certificates(roots).with_no_client_auth();
        config.alpn_protocols = vec![alpn.to_vec()];
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
        let tcp = tokio::net::TcpStream::connect(self.serve.addr).await.unwrap();
        connector.connect(ServerName::try_from("localhost").unwrap(), tcp).await.unwrap()
    }

    /// An HTTP/2 connection without a client certificate, past the preface
    /// and an empty SETTINGS frame.
    async fn h2(&self) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
        let mut s = self.tls(b"h2").await;
        assert_eq!(s.get_ref().1.alpn_protocol(), Some(&b"h2"[..]), "the server speaks HTTP/2");
        s.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await.unwrap();
        s.write_all(&frame(4, 0, 0, &[])).await.unwrap();
        s.flush().await.unwrap();
        s
    }
}

/// A value from the metrics text (0 when absent).
fn metric(text: &str, series: &str) -> f64 {
    text.lines().find_map(|l| l.strip_prefix(series).and_then(|v| v.trim().parse().ok())).unwrap_or(0.0)
}

// ---- HTTP/2 frames, written by hand as an attacker would ----

const HEADERS: u8 = 1;
const RST_STREAM: u8 = 3;
const SETTINGS: u8 = 4;
const PING: u8 = 6;
const GOAWAY: u8 = 7;
const END_HEADERS: u8 = 0x4;

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    f.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// An HPACK header block for `POST /validate` (static-table names,
/// literal values, no Huffman coding).
fn post_validate() -> Vec<u8> {
    let mut b = vec![0x83, 0x87]; // :method POST, :scheme https
    for (index, value) in [(4u8, "/validate"), (1, "localhost")] {
        b.push(index); // literal without indexing, indexed name (:path, :authority)
        b.push(value.len() as u8);
        b.extend_from_slice(value.as_bytes());
    }
    b
}

/// Reads frames until a GOAWAY (its error code), the end of the
/// connection (`None`), or `within` passes (panics).
async fn goaway_or_close<S: tokio::io::AsyncRead + Unpin>(s: &mut S, within: Duration) -> Option<u32> {
    let read = async {
        let mut head = [0u8; 9];
        loop {
            if s.read_exact(&mut head).await.is_err() {
                return None;
            }
            let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
            let mut payload = vec![0u8; len];
            if s.read_exact(&mut payload).await.is_err() {
                return None;
            }
            if head[3] == GOAWAY && payload.len() >= 8 {
                return Some(u32::from_be_bytes([payload[4], payload[5], payload[6], payload[7]]));
            }
        }
    };
    tokio::time::timeout(within, read).await.expect("the server neither sent GOAWAY nor closed the connection")
}

// ---- the attacks ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cve_2007_6750_slowloris_tls_handshakes_cannot_lock_out_the_apiserver() {
    let srv = serve(&["--max-handshakes", "16"]);
    // 200 connections that never send a ClientHello: far more than the
    // handshake slots, each held for the whole handshake timeout.
    let mut idle = Vec::new();
    for _ in 0..200 {
        idle.push(tokio::net::TcpStream::connect(srv.serve.addr).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    // The apiserver connects (a new connection each time) and is answered.
    for _ in 0..5 {
        srv.apiserver_reviews(&srv.apiserver(), 2).await;
    }
    let m = srv.metrics().await;
    let evicted = metric(&m, "gitgate_tls_handshake_failures_total{reason=\"evicted\"}");
    assert!(evicted >= 180.0, "the stalled handshakes were pushed out for newer ones: {evicted}\n{m}");
    drop(idle);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cve_2007_6750_slowloris_on_http2_an_unfinished_header_block_is_cut_off() {
    // hyper's own header timeout is HTTP/1.1 only; gitgate's holds for
    // HTTP/2: a header block that never ends, or nothing at all, after
    // the handshake.
    let srv = serve(&["--header-timeout", "1s"]);
    let mut stalled = srv.h2().await;
    let block = post_validate();
    // HEADERS without END_HEADERS: the CONTINUATION never comes.
    stalled.write_all(&frame(HEADERS, 0, 1, &block[..3])).await.unwrap();
    stalled.flush().await.unwrap();
    let mut silent = srv.h2().await;
    let started = Instant::now();
    srv.apiserver_reviews(&srv.apiserver(), 5).await;
    assert_eq!(goaway_or_close(&mut stalled, Duration::from_secs(5)).await, None, "cut off, not answered");
    assert_eq!(goaway_or_close(&mut silent, Duration::from_secs(5)).await, None);
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(900) && took < Duration::from_secs(4), "cut at the header timeout: {took:?}");
    // The apiserver's own connection, busy, is not cut: reviews across
    // more than a header timeout on one pool.
    let apiserver = srv.apiserver();
    for _ in 0..3 {
        srv.apiserver_reviews(&apiserver, 1).await;
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_4_mib_bodies_without_a_certificate_take_no_seat_and_are_not_buffered() {
    // One seat: were a refused caller's body read under a seat, the
    // apiserver would wait behind it.
    let srv = serve(&["--max-in-flight", "1", "--max-queue", "0"]);
    let rss_before = srv.serve.rss_kib();
    let big = bytes::Bytes::from(vec![b' '; 4 << 20]);
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let refused = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut flood = Vec::new();
    for _ in 0..8 {
        let (client, url, big) = (srv.client(None), srv.url("/validate"), big.clone());
        let (stop, refused) = (stop.clone(), refused.clone());
        flood.push(tokio::spawn(async move {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                if let Ok(r) = client.post(&url).body(big.clone()).send().await {
                    assert_eq!(r.status(), 401, "no certificate, no decision");
                    refused.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let apiserver = srv.apiserver();
    let slowest = srv.apiserver_reviews(&apiserver, 50).await;
    let rss_during = srv.serve.rss_kib();
    // the flood ran: every attacker had bodies refused meanwhile
    let deadline = Instant::now() + Duration::from_secs(20);
    while refused.load(std::sync::atomic::Ordering::Relaxed) < 8 {
        assert!(Instant::now() < deadline, "the flood never got going");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for f in flood {
        f.await.unwrap();
    }
    assert!(slowest < Duration::from_secs(2), "the apiserver never waited for a seat: {slowest:?}");
    // 8 parallel 4 MiB bodies buffered would add 32 MiB.
    assert!(
        rss_during < rss_before + 24 * 1024,
        "refused bodies are discarded as they arrive: RSS {rss_before} KiB -> {rss_during} KiB"
    );
    let m = srv.metrics().await;
    assert_eq!(
        metric(&m, "gitgate_admission_overloaded_total{endpoint=\"validate\",reason=\"queue_full\"}"),
        0.0,
        "{m}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cve_2019_11253_json_nested_100k_deep_is_a_400_and_the_server_lives() {
    let srv = serve(&[]);
    let apiserver = srv.apiserver();
    let mut review: serde_json::Value =
        serde_json::from_slice(&common::fixture("validate-create-configmap-ssa.json")).unwrap();
    review["request"]["object"] = serde_json::json!("NESTING");
    let depth = 100_000;
    let body = serde_json::to_string(&review)
        .unwrap()
        .replace("\"NESTING\"", &format!("{}{}", "[".repeat(depth), "]".repeat(depth)));
    for bomb in [body.clone(), "[".repeat(depth), format!("{{\"a\":{}", "{\"a\":".repeat(depth))] {
        let resp = apiserver.post(srv.url("/validate")).body(bomb).send().await.unwrap();
        assert_eq!(resp.status(), 400);
        let text = resp.text().await.unwrap();
        assert!(text.contains("failed to") && !text.contains("[["), "a Status naming the problem: {text}");
    }
    srv.apiserver_reviews(&apiserver, 3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cve_2023_44487_rapid_reset_on_one_connection_is_cut_off_and_the_apiserver_is_served() {
    let srv = serve(&[]);
    let mut attacker = srv.h2().await;
    let block = post_validate();
    // Open a stream and cancel it at once, thousands of times.
    let mut burst = Vec::new();
    for i in 0..5_000u32 {
        let id = 2 * i + 1;
        burst.extend(frame(HEADERS, END_HEADERS, id, &block));
        burst.extend(frame(RST_STREAM, 0, id, &8u32.to_be_bytes()));
    }
    let _ = attacker.write_all(&burst).await;
    let _ = attacker.flush().await;
    srv.apiserver_reviews(&srv.apiserver(), 10).await;
    let code = goaway_or_close(&mut attacker, Duration::from_secs(5)).await;
    // ENHANCE_YOUR_CALM (0xb), or the connection simply closed.
    assert!(matches!(code, Some(0xb) | None), "the resetting connection is sent away: {code:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_flood_on_one_connection_is_held_to_the_stream_limit() {
    // The class of CVE-2019-9514 (reset flood) and unbounded concurrent
    // streams: streams beyond --http2-max-streams are refused, the
    // apiserver on its own connection is served.
    let srv = serve(&["--http2-max-streams", "10"]);
    let mut attacker = srv.h2().await;
    let block = post_validate();
    let mut burst = Vec::new();
    for i in 0..200u32 {
        // a request whose body never comes: each stream stays open
        burst.extend(frame(HEADERS, END_HEADERS, 2 * i + 1, &block));
    }
    attacker.write_all(&burst).await.unwrap();
    attacker.flush().await.unwrap();
    // Count the streams the server refused (RST_STREAM REFUSED_STREAM,
    // 0x7) until it sends GOAWAY or closes; read while the apiserver asks.
    let count = tokio::spawn(async move {
        let mut head = [0u8; 9];
        let (mut refused, mut goaway) = (0, None);
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            match tokio::time::timeout(Duration::from_millis(500), attacker.read_exact(&mut head)).await {
                Ok(Ok(_)) => {}
                _ => break,
            }
            let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
            let mut payload = vec![0u8; len];
            if attacker.read_exact(&mut payload).await.is_err() {
                break;
            }
            match head[3] {
                RST_STREAM if payload == 7u32.to_be_bytes() => refused += 1,
                GOAWAY => {
                    goaway = Some(u32::from_be_bytes([payload[4], payload[5], payload[6], payload[7]]));
                    break;
                }
                _ => {}
            }
        }
        (refused, goaway)
    });
    srv.apiserver_reviews(&srv.apiserver(), 10).await;
    let (refused, goaway) = count.await.unwrap();
    assert!(
        refused >= 190 || goaway.is_some(),
        "streams past the limit of 10 are refused (refused {refused}, GOAWAY {goaway:?})"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cve_2019_9512_and_9515_ping_and_settings_floods_leave_the_apiserver_served() {
    let srv = serve(&[]);
    let mut pings = srv.h2().await;
    let mut settings = srv.h2().await;
    let ping_burst: Vec<u8> = (0..20_000u64).flat_map(|i| frame(PING, 0, 0, &i.to_be_bytes())).collect();
    // SETTINGS_MAX_CONCURRENT_STREAMS = 100, again and again
    let one = frame(SETTINGS, 0, 0, &[0, 3, 0, 0, 0, 100]);
    let settings_burst: Vec<u8> = std::iter::repeat_n(one, 20_000).flatten().collect();
    // The attackers write and never read the acknowledgements.
    let a = tokio::spawn(async move {
        let _ = tokio::time::timeout(Duration::from_secs(3), pings.write_all(&ping_burst)).await;
        pings
    });
    let b = tokio::spawn(async move {
        let _ = tokio::time::timeout(Duration::from_secs(3), settings.write_all(&settings_burst)).await;
        settings
    });
    srv.apiserver_reviews(&srv.apiserver(), 20).await;
    let (_pings, _settings) = (a.await.unwrap(), b.await.unwrap());
    // still alive and answering
    srv.apiserver_reviews(&srv.apiserver(), 2).await;
    let rss = srv.serve.rss_kib();
    assert!(rss < 200 * 1024, "unread acknowledgements are not queued without bound: {rss} KiB");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn beyond_the_seats_and_queue_a_review_gets_a_fast_429_that_leaks_nothing() {
    let srv = serve(&["--max-in-flight", "1", "--max-queue", "0"]);
    let body = common::fixture("validate-create-deployment.json");
    // The apiserver's own slow request holds the only seat: headers and
    // half the body, over HTTP/1.1 with its certificate.
    let mut holder = {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(CertificateDer::from_pem_slice(&srv.serving_ca).unwrap()).unwrap();
        let certs: Vec<CertificateDer<'static>> =
            CertificateDer::pem_slice_iter(srv.apiserver.as_bytes()).map(|c| c.unwrap()).collect();
        let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(srv.apiserver.as_bytes()).unwrap();
        let mut config =
            rustls::ClientConfig::builder().with_root_certificates(roots).with_client_auth_cert(certs, key).unwrap();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let tcp = tokio::net::TcpStream::connect(srv.serve.addr).await.unwrap();
        tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(ServerName::try_from("localhost").unwrap(), tcp)
            .await
            .unwrap()
    };
    let head = format!(
        "POST /validate HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    holder.write_all(head.as_bytes()).await.unwrap();
    holder.write_all(&body[..body.len() / 2]).await.unwrap();
    holder.flush().await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;

    let apiserver = srv.apiserver();
    let t = Instant::now();
    let resp = apiserver.post(srv.url("/validate")).body(body.clone()).send().await.unwrap();
    let took = t.elapsed();
    assert_eq!(resp.status(), 429);
    assert_eq!(resp.headers().get("retry-after").unwrap(), "1", "the apiserver is told when to retry");
    let text = resp.text().await.unwrap();
    assert!(took < Duration::from_millis(500), "refused at once: {took:?}");
    let status: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(status["reason"], "TooManyRequests");
    let request_uid = serde_json::from_slice::<serde_json::Value>(&body).unwrap()["request"]["uid"].clone();
    assert!(!text.contains(request_uid.as_str().unwrap()) && !text.contains("Deployment"), "leaks nothing: {text}");

    // The seat frees: the holder is answered, then the apiserver again.
    holder.write_all(&body[body.len() / 2..]).await.unwrap();
    holder.flush().await.unwrap();
    let mut got = vec![0u8; 16];
    holder.read_exact(&mut got).await.unwrap();
    assert!(got.starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&got));
    srv.apiserver_reviews(&apiserver, 3).await;
    let m = srv.metrics().await;
    assert_eq!(
        metric(&m, "gitgate_admission_overloaded_total{endpoint=\"validate\",reason=\"queue_full\"}"),
        1.0,
        "{m}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_open_pool_leaves_the_reserved_pool_to_the_apiserver() {
    let srv = serve(&["--max-connections", "8", "--header-timeout", "5s"]);
    // Twelve idle connections without a certificate: eight fit the open
    // pool, the rest are closed at once.
    let mut held = Vec::new();
    for _ in 0..12 {
        held.push(srv.tls(b"http/1.1").await);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut closed = 0;
    for s in &mut held {
        let mut buf = [0u8; 1];
        if let Ok(Ok(0) | Err(_)) = tokio::time::timeout(Duration::from_millis(100), s.read(&mut buf)).await {
            closed += 1;
        }
    }
    assert_eq!(closed, 4, "the open pool holds 8");
    // The apiserver's certificate counts in its own pool.
    srv.apiserver_reviews(&srv.apiserver(), 5).await;
    drop(held);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let m = srv.metrics().await;
    assert!(metric(&m, "gitgate_connections_refused_total{pool=\"open\"}") >= 4.0, "{m}");
    assert_eq!(metric(&m, "gitgate_connections_refused_total{pool=\"reserved\"}"), 0.0, "{m}");
}
