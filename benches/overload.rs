//! Overload (issue 16, item 3): `gitgate serve --client-ca … --client-name
//! …` as a child process; the apiserver's reviews from this process over
//! HTTP/2 with its client certificate; every request's latency kept.
//!
//!   cargo build --release && cargo bench --bench overload -- [flood] [soak] [saturation]
//!
//! * `flood`: legitimate reviews (2 connections × 500/s = 1,000/s) while
//!   hostile clients without a certificate run on the same 2 cores (their
//!   own runtime, 2 threads): 400 TCP connections that never handshake,
//!   20 HTTP/2 connections with a header block that never ends, 8 parallel
//!   4 MiB bodies, 4 loops of 100k-deep JSON, a rapid-reset connection and
//!   a stream flood of small reviews (4 connections × 64 streams). Rounds
//!   alternate `flood` and `quiet`; legitimate p50/p99/p99.9 and errors.
//! * `soak`: 10 connections × 500/s = 5,000 reviews/s for 60 s of mixed
//!   fixtures (validate, mutate, a sealed Secret, denials); errors,
//!   decisions, and serve's VmRSS after warm-up and at the end.
//! * `saturation`: offered load stepped up past capacity (open loop over 16
//!   connections): per step the reviews answered per second, their p50 and
//!   p99, 429s and errors.
//!
//! Environment: `GITGATE_BIN` (default target/release/gitgate),
//! `GITGATE_BENCH_ROUNDS` (flood rounds of each kind, 5),
//! `GITGATE_BENCH_SECS` (seconds per flood round, 10), `GITGATE_SOAK_SECS`
//! (60), `GITGATE_SOAK_RATE` (5000).

#[path = "../tests/support/mod.rs"]
mod support;
use support::server as common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use base64::Engine as _;
use rcgen::{BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use rustls::pki_types::{CertificateDer, ServerName, pem::PemObject as _};
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt as _;

const APISERVER: &str = "kube-apiserver-webhook-client";

struct Setup {
    serve: common::ServeProcess,
    _work: tempfile::TempDir,
    serving_ca: Vec<u8>,
    identity: String,
    root: PathBuf,
}

fn client_ca(dir: &Path) -> (PathBuf, String) {
    let key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.distinguished_name = DistinguishedName::new();
    p.distinguished_name.push(DnType::CommonName, "bench cluster CA");
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign];
    let ca = p.self_signed(&key).unwrap();
    let issuer = Issuer::new(p, key);
    let path = dir.join("client-ca.crt");
    std::fs::write(&path, ca.pem()).unwrap();
    let key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.distinguished_name.push(DnType::CommonName, APISERVER);
    let cert = p.signed_by(&key, &issuer).unwrap();
    (path, format!("{}{}", cert.pem(), key.serialize_pem()))
}

/// serve with the client CA, the repository's policies and an age
/// identity (sealed Secrets are opened on /mutate).
fn start(bin: &Path, root: &Path) -> Setup {
    let work = tempfile::tempdir().unwrap();
    let (ca, identity) = client_ca(work.path());
    let age = gitgate::secrets::keys::AgeIdentity::generate();
    let age_path = work.path().join("age.key");
    gitgate::secrets::keys::write_identity_file(&age, &age_path).unwrap();
    let policies = root.join("policies");
    let args = [
        "--sync",
        "off",
        "--client-ca",
        ca.to_str().unwrap(),
        "--client-name",
        APISERVER,
        "--age-identity",
        age_path.to_str().unwrap(),
        "--policies",
        policies.to_str().unwrap(),
    ];
    let serve = common::ServeProcess::spawn(bin.to_str().unwrap(), work.path(), &args);
    let serving_ca = std::fs::read(work.path().join("certs/ca.crt")).unwrap();
    Setup { serve, _work: work, serving_ca, identity, root: root.to_path_buf() }
}

impl Setup {
    fn url(&self, path: &str) -> String {
        format!("https://localhost:{}{path}", self.serve.addr.port())
    }

    fn client(&self, identity: bool) -> reqwest::Client {
        let mut b = reqwest::Client::builder()
            .tls_certs_only([reqwest::Certificate::from_pem(&self.serving_ca).unwrap()])
            .resolve("localhost", self.serve.addr)
            .http2_prior_knowledge()
            .pool_max_idle_per_host(1)
            .timeout(Duration::from_secs(15));
        if identity {
            b = b.identity(reqwest::Identity::from_pem(self.identity.as_bytes()).unwrap());
        }
        b.build().unwrap()
    }

    fn fixture(&self, name: &str) -> Vec<u8> {
        std::fs::read(self.root.join("tests/fixtures/admission").join(name)).unwrap()
    }

    /// The soak's mix: (endpoint, body), each body once.
    fn mix(&self, age_recipients: &[age::x25519::Recipient]) -> Vec<(&'static str, bytes::Bytes)> {
        let mut out = Vec::new();
        for name in [
            "validate-create-deployment.json",
            "validate-update-deployment-kubectl-edit-like.json",
            "validate-create-configmap-ssa.json",
            "validate-delete-configmap.json",
            "validate-create-pod-eviction.json",
            "validate-scale-deployment.json",
        ] {
            out.push(("/validate", self.fixture(name).into()));
        }
        for name in ["mutate-create-deployment.json", "mutate-create-pod-by-controller.json"] {
            out.push(("/mutate", self.fixture(name).into()));
        }
        // denials: a person's status patch (subresource-status) and an
        // image without a tag (no-latest-tag)
        out.push(("/validate", self.fixture("validate-update-deployment-status-by-admin.json").into()));
        let mut latest: Value = serde_json::from_slice(&self.fixture("validate-create-deployment.json")).unwrap();
        if let Some(c) = latest.pointer_mut("/request/object/spec/template/spec/containers/0/image") {
            *c = json!("nginx:latest");
        }
        out.push(("/validate", serde_json::to_vec(&latest).unwrap().into()));
        out.push(("/mutate", sealed_secret(&self.fixture("mutate-create-secret.json"), age_recipients).into()));
        out
    }
}

/// The captured Secret review, its values sealed for `recipients`.
fn sealed_secret(fixture: &[u8], recipients: &[age::x25519::Recipient]) -> Vec<u8> {
    use gitgate::secrets::Plaintext;
    use gitgate::secrets::seal::{self, Binding, Limits, Scope};
    let mut review: Value = serde_json::from_slice(fixture).unwrap();
    let mut data = serde_json::Map::new();
    for key in ["username", "password"] {
        let binding = Binding::for_object(Scope::Strict, "gitops-demo", "db-credentials", key).unwrap();
        let sealed =
            seal::seal(&Plaintext::copy_from(b"dummy-value-not-a-secret"), &binding, recipients, &Limits::default())
                .unwrap();
        data.insert(key.into(), json!(base64::engine::general_purpose::STANDARD.encode(sealed)));
    }
    review["request"]["object"]["data"] = Value::Object(data);
    review["request"]["object"]["metadata"]["annotations"] = json!({"gitgate.dev/sealed": "age"});
    serde_json::to_vec(&review).unwrap()
}

#[derive(Default)]
struct Tally {
    latencies_us: Vec<u64>,
    errors: usize,
    allowed: usize,
    denied: usize,
    patched: usize,
    too_many: usize,
}

impl Tally {
    fn merge(&mut self, o: Tally) {
        self.latencies_us.extend(o.latencies_us);
        self.errors += o.errors;
        self.allowed += o.allowed;
        self.denied += o.denied;
        self.patched += o.patched;
        self.too_many += o.too_many;
    }

    fn sort(&mut self) {
        self.latencies_us.sort_unstable();
    }

    /// A percentile in ms (sorted first).
    fn pct(&self, p: f64) -> f64 {
        let v = &self.latencies_us;
        if v.is_empty() {
            return f64::NAN;
        }
        v[((v.len() as f64 * p) as usize).min(v.len() - 1)] as f64 / 1000.0
    }
}

/// One review; its outcome into `tally`.
async fn review(client: &reqwest::Client, url: &str, body: bytes::Bytes, tally: &mut Tally) {
    let t = Instant::now();
    let sent = client.post(url).header("content-type", "application/json").body(body).send().await;
    match sent {
        Ok(r) if r.status() == 200 => match r.bytes().await {
            Ok(b) => {
                tally.latencies_us.push(t.elapsed().as_micros() as u64);
                let text = String::from_utf8_lossy(&b);
                if text.contains("\"allowed\":true") {
                    tally.allowed += 1;
                } else {
                    tally.denied += 1;
                }
                if text.contains("\"patch\"") {
                    tally.patched += 1;
                }
            }
            Err(_) => tally.errors += 1,
        },
        Ok(r) if r.status() == 429 => tally.too_many += 1,
        _ => tally.errors += 1,
    }
}

/// `connections` × `rate`/s closed-loop-capped reviews for `secs`, bodies
/// taken round-robin from `mix`.
async fn steady(
    s: &Setup,
    mix: &Arc<Vec<(&'static str, bytes::Bytes)>>,
    connections: usize,
    rate: u64,
    secs: f64,
) -> Tally {
    let until = Instant::now() + Duration::from_secs_f64(secs);
    let mut tasks = Vec::new();
    for c in 0..connections {
        let client = s.client(true);
        let mix = mix.clone();
        let urls: Vec<String> = mix.iter().map(|(p, _)| s.url(p)).collect();
        tasks.push(tokio::spawn(async move {
            let mut tally = Tally::default();
            let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / rate));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            let mut i = c;
            while Instant::now() < until {
                tick.tick().await;
                let k = i % mix.len();
                review(&client, &urls[k], mix[k].1.clone(), &mut tally).await;
                i += 1;
            }
            tally
        }));
    }
    let mut all = Tally::default();
    for t in tasks {
        all.merge(t.await.unwrap());
    }
    all
}

// ---- hostile clients (no client certificate) ----

fn tls_config(s: &Setup, alpn: &[u8]) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from_pem_slice(&s.serving_ca).unwrap()).unwrap();
    let mut config = rustls::ClientConfig::builder().with_root_certificates(roots).with_no_client_auth();
    config.alpn_protocols = vec![alpn.to_vec()];
    Arc::new(config)
}

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

fn post_validate_block() -> Vec<u8> {
    let mut b = vec![0x83, 0x87];
    for (index, value) in [(4u8, "/validate"), (1, "localhost")] {
        b.push(index);
        b.push(value.len() as u8);
        b.extend_from_slice(value.as_bytes());
    }
    b
}

async fn h2_conn(
    addr: std::net::SocketAddr,
    config: Arc<rustls::ClientConfig>,
) -> Option<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    let tcp = tokio::net::TcpStream::connect(addr).await.ok()?;
    let mut s =
        tokio_rustls::TlsConnector::from(config).connect(ServerName::try_from("localhost").unwrap(), tcp).await.ok()?;
    s.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await.ok()?;
    s.write_all(&frame(4, 0, 0, &[])).await.ok()?;
    Some(s)
}

/// What the hostile clients got done.
#[derive(Default)]
struct Hostile {
    tcp_opened: AtomicU64,
    slow_h2_opened: AtomicU64,
    big_bodies: AtomicU64,
    deep_json: AtomicU64,
    resets: AtomicU64,
    flood_requests: AtomicU64,
}

/// Starts the hostile clients on `rt`; they run until `stop`.
fn hostile(rt: &tokio::runtime::Runtime, s: &Setup, stop: Arc<AtomicBool>) -> Arc<Hostile> {
    let done = Arc::new(Hostile::default());
    let addr = s.serve.addr;
    let h2 = tls_config(s, b"h2");
    // 400 TCP connections that never handshake, reopened when cut
    for _ in 0..400 {
        let (stop, done) = (stop.clone(), done.clone());
        rt.spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                if let Ok(mut tcp) = tokio::net::TcpStream::connect(addr).await {
                    done.tcp_opened.fetch_add(1, Ordering::Relaxed);
                    let mut b = [0u8; 1];
                    let _ =
                        tokio::time::timeout(Duration::from_secs(2), tokio::io::AsyncReadExt::read(&mut tcp, &mut b))
                            .await;
                } else {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        });
    }
    // 20 HTTP/2 connections with a header block that never ends
    for _ in 0..20 {
        let (stop, done, h2) = (stop.clone(), done.clone(), h2.clone());
        rt.spawn(async move {
            let block = post_validate_block();
            while !stop.load(Ordering::Relaxed) {
                if let Some(mut c) = h2_conn(addr, h2.clone()).await {
                    done.slow_h2_opened.fetch_add(1, Ordering::Relaxed);
                    let _ = c.write_all(&frame(1, 0, 1, &block[..3])).await;
                    let mut b = [0u8; 256];
                    while let Ok(Ok(n)) =
                        tokio::time::timeout(Duration::from_secs(1), tokio::io::AsyncReadExt::read(&mut c, &mut b))
                            .await
                    {
                        if n == 0 || stop.load(Ordering::Relaxed) {
                            break;
                        }
                    }
                } else {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        });
    }
    let url = s.url("/validate");
    // 8 parallel 4 MiB bodies
    let big = bytes::Bytes::from(vec![b' '; 4 << 20]);
    for _ in 0..8 {
        let (stop, done, client, url, big) = (stop.clone(), done.clone(), s.client(false), url.clone(), big.clone());
        rt.spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let _ = client.post(&url).body(big.clone()).send().await;
                done.big_bodies.fetch_add(1, Ordering::Relaxed);
            }
        });
    }
    // 4 loops of 100k-deep JSON
    let deep = bytes::Bytes::from(format!("{{\"request\":{}{}}}", "[".repeat(100_000), "]".repeat(100_000)));
    for _ in 0..4 {
        let (stop, done, client, url, deep) = (stop.clone(), done.clone(), s.client(false), url.clone(), deep.clone());
        rt.spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let _ = client.post(&url).body(deep.clone()).send().await;
                done.deep_json.fetch_add(1, Ordering::Relaxed);
            }
        });
    }
    // a rapid-reset connection, reconnecting when sent away
    {
        let (stop, done, h2) = (stop.clone(), done.clone(), h2.clone());
        rt.spawn(async move {
            let block = post_validate_block();
            while !stop.load(Ordering::Relaxed) {
                let Some(mut c) = h2_conn(addr, h2.clone()).await else {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                };
                let mut burst = Vec::new();
                for i in 0..1000u32 {
                    burst.extend(frame(1, 0x4, 2 * i + 1, &block));
                    burst.extend(frame(3, 0, 2 * i + 1, &8u32.to_be_bytes()));
                }
                if c.write_all(&burst).await.is_ok() {
                    done.resets.fetch_add(1000, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        });
    }
    // a stream flood of small reviews: 4 connections × 64 streams
    let small = bytes::Bytes::from(s.fixture("validate-create-deployment.json"));
    for _ in 0..4 {
        let client = s.client(false);
        for _ in 0..64 {
            let (stop, done, client, url, small) =
                (stop.clone(), done.clone(), client.clone(), url.clone(), small.clone());
            rt.spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let _ = client.post(&url).body(small.clone()).send().await;
                    done.flood_requests.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
    }
    done
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn flood(s: &Setup, rounds: usize, secs: f64) {
    let legit_rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let body: Arc<Vec<(&'static str, bytes::Bytes)>> =
        Arc::new(vec![("/validate", s.fixture("validate-create-deployment.json").into())]);
    println!("== flood: legitimate 2 connections x 500/s (mTLS) for {secs} s per round, {rounds} alternating rounds");
    let (mut p99_flood, mut p99_quiet, mut errors_flood) = (vec![], vec![], 0);
    for i in 0..rounds {
        for attacked in [true, false] {
            let stop = Arc::new(AtomicBool::new(false));
            let hostile_rt =
                tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
            let done = attacked.then(|| hostile(&hostile_rt, s, stop.clone()));
            if attacked {
                std::thread::sleep(Duration::from_secs(1)); // let the flood build up
            }
            let cpu0 = s.serve.cpu_seconds();
            let mut t = legit_rt.block_on(steady(s, &body, 2, 500, secs));
            let cpu = s.serve.cpu_seconds() - cpu0;
            stop.store(true, Ordering::Relaxed);
            hostile_rt.shutdown_timeout(Duration::from_secs(1));
            t.sort();
            let n = t.latencies_us.len();
            let (p50, p99, p999, max) = (t.pct(0.5), t.pct(0.99), t.pct(0.999), t.pct(1.0));
            let name = if attacked { "flood" } else { "quiet" };
            print!(
                "round {} {name}: {n} legitimate reviews, {} errors, {} 429, p50 {p50:.3} ms, p99 {p99:.3} ms, p99.9 {p999:.3} ms, max {max:.3} ms, serve CPU {:.0}%",
                i + 1,
                t.errors,
                t.too_many,
                cpu * 100.0 / secs
            );
            if let Some(d) = done {
                let per = |a: &AtomicU64| a.load(Ordering::Relaxed) as f64 / secs;
                print!(
                    "; hostile/s: {:.0} stalled TCP, {:.1} stalled h2, {:.1} 4MiB bodies, {:.1} deep JSON, {:.0} rapid resets, {:.0} flood requests",
                    per(&d.tcp_opened),
                    per(&d.slow_h2_opened),
                    per(&d.big_bodies),
                    per(&d.deep_json),
                    per(&d.resets),
                    per(&d.flood_requests)
                );
                p99_flood.push(p99);
                errors_flood += t.errors + t.too_many;
            } else {
                p99_quiet.push(p99);
            }
            println!();
        }
    }
    println!(
        "median legitimate p99: flood {:.3} ms, quiet {:.3} ms; legitimate errors under flood: {errors_flood}",
        median(p99_flood),
        median(p99_quiet)
    );
}

fn soak(s: &Setup, recipients: &[age::x25519::Recipient], secs: f64, rate: u64) {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let mix = Arc::new(s.mix(recipients));
    let connections = 10;
    let per = rate / connections as u64;
    println!(
        "== soak: {connections} connections x {per}/s = {}/s for {secs} s, {} bodies round-robin",
        per * connections as u64,
        mix.len()
    );
    let warm = rt.block_on(steady(s, &mix, connections, per, 5.0));
    println!("warm-up 5 s: {} reviews, {} errors", warm.latencies_us.len(), warm.errors + warm.too_many);
    let rss0 = s.serve.rss_kib();
    let started = Instant::now();
    let mut t = rt.block_on(steady(s, &mix, connections, per, secs));
    let elapsed = started.elapsed().as_secs_f64();
    let rss1 = s.serve.rss_kib();
    t.sort();
    let n = t.latencies_us.len();
    println!(
        "soak: {n} reviews in {elapsed:.1} s ({:.0}/s), {} errors, {} 429; allowed {}, denied {}, patched {}; p50 {:.3} ms, p99 {:.3} ms, p99.9 {:.3} ms",
        n as f64 / elapsed,
        t.errors,
        t.too_many,
        t.allowed,
        t.denied,
        t.patched,
        t.pct(0.5),
        t.pct(0.99),
        t.pct(0.999)
    );
    println!(
        "serve VmRSS: {rss0} kB after warm-up, {rss1} kB at the end: growth {:.2} MiB",
        (rss1 as f64 - rss0 as f64) / 1024.0
    );
}

fn saturation(s: &Setup) {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let body = bytes::Bytes::from(s.fixture("validate-create-deployment.json"));
    let url = s.url("/validate");
    let clients: Vec<reqwest::Client> = (0..16).map(|_| s.client(true)).collect();
    println!("== saturation: open loop over 16 connections, 5 s per step");
    for offered in [2_000u64, 5_000, 10_000, 20_000, 40_000] {
        let secs = 5.0;
        let tally = rt.block_on(async {
            let until = Instant::now() + Duration::from_secs_f64(secs);
            let mut tick = tokio::time::interval(Duration::from_nanos(1_000_000_000 / offered));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            let mut handles = Vec::new();
            let mut i = 0usize;
            while Instant::now() < until {
                tick.tick().await;
                let (client, url, body) = (clients[i % clients.len()].clone(), url.clone(), body.clone());
                handles.push(tokio::spawn(async move {
                    let mut t = Tally::default();
                    review(&client, &url, body, &mut t).await;
                    t
                }));
                i += 1;
            }
            let mut all = Tally::default();
            for h in handles {
                all.merge(h.await.unwrap());
            }
            all
        });
        let mut t = tally;
        t.sort();
        let sent = t.latencies_us.len() + t.errors + t.too_many;
        println!(
            "offered {offered:>6}/s: sent {:>6.0}/s, answered {:>6.0}/s, 429 {:>6.0}/s, errors {}, p50 {:.3} ms, p99 {:.3} ms",
            sent as f64 / secs,
            t.latencies_us.len() as f64 / secs,
            t.too_many as f64 / secs,
            t.errors,
            t.pct(0.5),
            t.pct(0.99)
        );
    }
    println!("RSS after saturation: {} kB", s.serve.rss_kib());
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with('-')).collect();
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let _ = rustls::crypto::ring::default_provider().install_default();
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let bin = std::env::var_os("GITGATE_BIN").map(PathBuf::from).unwrap_or(root.join("target/release/gitgate"));
    if !bin.exists() {
        eprintln!("{} not found: cargo build --release (or set GITGATE_BIN)", bin.display());
        std::process::exit(1);
    }
    let env = |k: &str, d: f64| std::env::var(k).ok().and_then(|v| v.parse().ok()).unwrap_or(d);
    let want = |m: &str| args.is_empty() || args.iter().any(|a| a == m);
    let s = start(&bin, &root);
    // the identity serve opens sealed Secrets with: read back from its file
    let ids = gitgate::secrets::keys::IdentitySet::load(&s._work.path().join("age.key")).unwrap();
    let recipients = ids.recipients();
    if want("flood") {
        flood(&s, env("GITGATE_BENCH_ROUNDS", 5.0) as usize, env("GITGATE_BENCH_SECS", 10.0));
    }
    if want("soak") {
        soak(&s, &recipients, env("GITGATE_SOAK_SECS", 60.0), env("GITGATE_SOAK_RATE", 5000.0) as u64);
    }
    if want("saturation") {
        saturation(&s);
    }
}
