//! Served load with client-certificate verification on: `gitgate serve
//! --client-ca … --client-name …` as a child process, and a load generator
//! in this process whose every connection presents a client certificate
//! (h2load cannot). Same shape as `benches/h2load.sh`: 10 HTTP/2
//! connections × 500 reviews/s = 5,000 reviews/s for 20 s, one request in
//! flight per connection at a time, percentiles of every request.
//!
//! Rounds alternate: client certificates required (`mtls`) and no client
//! authentication (`open`), so the ratio is read from one run.
//!
//!   cargo build --release && cargo bench --bench mtls_load
//!
//! Environment: `GITGATE_BIN` (default target/release/gitgate),
//! `GITGATE_FIXTURES` (default tests/fixtures/admission),
//! `GITGATE_BENCH_ROUNDS` (default 5 of each), `GITGATE_BENCH_SECS` (20).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rcgen::{BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};

const CONNECTIONS: usize = 10;
const RATE_PER_CONNECTION: u64 = 500;

struct Serve {
    child: Child,
    port: u16,
    ca_pem: Vec<u8>,
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn start(bin: &Path, work: &Path, client_ca: Option<&Path>) -> Serve {
    let port = free_port();
    let mut cmd = Command::new(bin);
    cmd.args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--sync", "off"]).current_dir(work);
    if let Some(ca) = client_ca {
        cmd.arg("--client-ca").arg(ca).args(["--client-name", "kube-apiserver-webhook-client"]);
    }
    let child = cmd.env("RUST_LOG", "warn").stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    let ca_path = work.join("certs/ca.crt");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !ca_path.exists() {
        assert!(Instant::now() < deadline, "serve did not write its certificate");
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(200));
    Serve { child, port, ca_pem: std::fs::read(ca_path).unwrap() }
}

fn client_identity(dir: &Path) -> (PathBuf, String) {
    let key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "bench client CA");
    p.distinguished_name = dn;
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign];
    let ca = p.self_signed(&key).unwrap();
    let issuer = Issuer::new(p, key);
    let ca_path = dir.join("client-ca.crt");
    std::fs::write(&ca_path, ca.pem()).unwrap();
    let key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.distinguished_name.push(DnType::CommonName, "kube-apiserver-webhook-client");
    let cert = p.signed_by(&key, &issuer).unwrap();
    (ca_path, format!("{}{}", cert.pem(), key.serialize_pem()))
}

struct Round {
    latencies_us: Vec<u64>,
    errors: usize,
    elapsed: Duration,
    serve_cpu_s: f64,
}

fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 =
        f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0) + f.get(12).and_then(|v| v.parse().ok()).unwrap_or(0.0);
    ticks / 100.0
}

async fn round(serve: &Serve, identity: Option<&str>, body: &Arc<Vec<u8>>, secs: u64) -> Round {
    let url = format!("https://localhost:{}/validate", serve.port);
    let addr: std::net::SocketAddr = format!("127.0.0.1:{}", serve.port).parse().unwrap();
    let mut clients = Vec::new();
    for _ in 0..CONNECTIONS {
        let mut b = reqwest::Client::builder()
            .tls_certs_only([reqwest::Certificate::from_pem(&serve.ca_pem).unwrap()])
            .resolve("localhost", addr)
            .http2_prior_knowledge()
            .pool_max_idle_per_host(1);
        if let Some(pem) = identity {
            b = b.identity(reqwest::Identity::from_pem(pem.as_bytes()).unwrap());
        }
        clients.push(b.build().unwrap());
    }
    // Warm-up: every connection handshakes (with its certificate) first.
    for c in &clients {
        let r = c.post(&url).header("content-type", "application/json").body(body.to_vec()).send().await.unwrap();
        assert_eq!(r.status(), 200, "warm-up: {}", r.text().await.unwrap_or_default());
    }
    let cpu0 = cpu_seconds(serve.child.id());
    let start = Instant::now();
    let until = start + Duration::from_secs(secs);
    let mut tasks = Vec::new();
    for client in clients {
        let url = url.clone();
        let body = body.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity((secs * RATE_PER_CONNECTION) as usize);
            let mut errors = 0usize;
            let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / RATE_PER_CONNECTION));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            while Instant::now() < until {
                tick.tick().await;
                let t = Instant::now();
                let ok =
                    match client.post(&url).header("content-type", "application/json").body(body.to_vec()).send().await
                    {
                        Ok(r) if r.status() == 200 => r.bytes().await.is_ok(),
                        _ => false,
                    };
                if ok {
                    lat.push(t.elapsed().as_micros() as u64);
                } else {
                    errors += 1;
                }
            }
            (lat, errors)
        }));
    }
    let mut latencies_us = Vec::new();
    let mut errors = 0;
    for t in tasks {
        let (l, e) = t.await.unwrap();
        latencies_us.extend(l);
        errors += e;
    }
    let elapsed = start.elapsed();
    let serve_cpu_s = cpu_seconds(serve.child.id()) - cpu0;
    latencies_us.sort_unstable();
    Round { latencies_us, errors, elapsed, serve_cpu_s }
}

fn pct(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 * p) as usize).min(sorted.len() - 1);
    sorted[i] as f64 / 1000.0
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo test --benches` lists benches; nothing to run here
    }
    let _ = rustls::crypto::ring::default_provider().install_default();
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let bin = std::env::var_os("GITGATE_BIN").map(PathBuf::from).unwrap_or(root.join("target/release/gitgate"));
    if !bin.exists() {
        eprintln!("{} not found: cargo build --release (or set GITGATE_BIN)", bin.display());
        std::process::exit(1);
    }
    let fixtures =
        std::env::var_os("GITGATE_FIXTURES").map(PathBuf::from).unwrap_or(root.join("tests/fixtures/admission"));
    let body = Arc::new(std::fs::read(fixtures.join("validate-create-deployment.json")).unwrap());
    let rounds: usize = std::env::var("GITGATE_BENCH_ROUNDS").ok().and_then(|v| v.parse().ok()).unwrap_or(5);
    let secs: u64 = std::env::var("GITGATE_BENCH_SECS").ok().and_then(|v| v.parse().ok()).unwrap_or(20);

    let work = tempfile::tempdir().unwrap();
    let (ca, identity) = client_identity(work.path());
    let (mtls_dir, open_dir) = (work.path().join("mtls"), work.path().join("open"));
    std::fs::create_dir_all(&mtls_dir).unwrap();
    std::fs::create_dir_all(&open_dir).unwrap();
    let mtls = start(&bin, &mtls_dir, Some(&ca));
    let open = start(&bin, &open_dir, None);
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();

    // Without a certificate the mTLS server refuses: the bench measures what it claims.
    let refused = rt.block_on(async {
        let c = reqwest::Client::builder()
            .tls_certs_only([reqwest::Certificate::from_pem(&mtls.ca_pem).unwrap()])
            .resolve("localhost", format!("127.0.0.1:{}", mtls.port).parse().unwrap())
            .build()
            .unwrap();
        let url = format!("https://localhost:{}/validate", mtls.port);
        c.post(url).body(body.to_vec()).send().await.unwrap().status().as_u16()
    });
    assert_eq!(refused, 401, "the mTLS server must refuse a client without a certificate");

    println!(
        "{CONNECTIONS} connections x {RATE_PER_CONNECTION}/s = {} reviews/s for {secs} s, {rounds} alternating rounds",
        CONNECTIONS as u64 * RATE_PER_CONNECTION
    );
    let (mut p99_m, mut p99_o, mut rate_m, mut cpu_m, mut cpu_o) = (vec![], vec![], vec![], vec![], vec![]);
    for i in 0..rounds {
        for (name, serve, id) in [("mtls", &mtls, Some(identity.as_str())), ("open", &open, None)] {
            let r = rt.block_on(round(serve, id, &body, secs));
            let n = r.latencies_us.len();
            let rate = n as f64 / r.elapsed.as_secs_f64();
            let cpu_us = r.serve_cpu_s * 1e6 / n.max(1) as f64;
            println!(
                "round {} {name:4}: {n} reviews, {} errors, {rate:.0}/s, p50 {:.3} ms, p99 {:.3} ms, p99.9 {:.3} ms, max {:.3} ms, gitgate CPU {cpu_us:.1} µs/review",
                i + 1,
                r.errors,
                pct(&r.latencies_us, 0.50),
                pct(&r.latencies_us, 0.99),
                pct(&r.latencies_us, 0.999),
                pct(&r.latencies_us, 1.0),
            );
            if name == "mtls" {
                p99_m.push(pct(&r.latencies_us, 0.99));
                rate_m.push(rate);
                cpu_m.push(cpu_us);
            } else {
                p99_o.push(pct(&r.latencies_us, 0.99));
                cpu_o.push(cpu_us);
            }
        }
    }
    println!(
        "median: mtls {:.0}/s p99 {:.3} ms ({:.1} µs CPU/review); open p99 {:.3} ms ({:.1} µs CPU/review)",
        median(rate_m),
        median(p99_m),
        median(cpu_m),
        median(p99_o),
        median(cpu_o)
    );
}
