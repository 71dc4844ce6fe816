//! Shared test helpers: the captured AdmissionReview fixtures and a server
//! started on loopback with freshly generated certificates.
#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::Arc;

use gitgate::admission::{self, AdmissionState, Decider, Limits, LogRecorder};
use gitgate::server::{self, ConnLimits, Running};
use gitgate::tls;

// Re-exported: tests reach it beside the server they start.
pub use super::reap;

/// `tests/fixtures/admission/` (bodies captured from a real
/// kube-apiserver), or `$GITGATE_FIXTURES`.
pub fn fixtures_dir() -> PathBuf {
    let dir = std::env::var_os("GITGATE_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/admission"));
    assert!(dir.is_dir(), "fixtures not found at {}: set GITGATE_FIXTURES", dir.display());
    dir
}

/// Every fixture as (file name, bytes), sorted.
pub fn fixtures() -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<(String, Vec<u8>)> = std::fs::read_dir(fixtures_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .map(|p| (p.file_name().unwrap().to_string_lossy().into_owned(), std::fs::read(&p).unwrap()))
        .collect();
    out.sort();
    assert!(out.len() >= 20, "expected the captured fixtures, found {}", out.len());
    out
}

pub fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(fixtures_dir().join(name)).unwrap_or_else(|e| panic!("fixture {name}: {e}"))
}

pub fn install_crypto() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

pub fn state_with(decider: Decider, limits: Limits) -> Arc<AdmissionState> {
    let state = Arc::new(AdmissionState::new(Default::default(), limits, Arc::new(LogRecorder)));
    state.publish(Arc::new(decider));
    state
}

pub struct TestServer {
    pub running: Running,
    pub dir: tempfile::TempDir,
    pub ca_pem: Vec<u8>,
}

impl TestServer {
    pub fn url(&self, path: &str) -> String {
        format!("https://localhost:{}{}", self.running.addr.port(), path)
    }

    /// A client that trusts only the generated CA.
    pub fn client(&self) -> reqwest::Client {
        reqwest::Client::builder()
            .tls_certs_only([reqwest::Certificate::from_pem(&self.ca_pem).unwrap()])
            .resolve("localhost", self.running.addr)
            .build()
            .unwrap()
    }
}

/// Starts the real HTTPS server on 127.0.0.1 with certificates generated
/// into a temp dir.
pub async fn start_server(state: Arc<AdmissionState>, conn: ConnLimits) -> TestServer {
    install_crypto();
    let dir = tempfile::tempdir().unwrap();
    let names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
    let certs = tls::generate(dir.path(), &names, 30).unwrap();
    let (config, _reloader) = tls::Reloader::load(&certs.serving_cert, &certs.serving_key).unwrap();
    let running = server::start("127.0.0.1:0".parse().unwrap(), config, admission::router(state), conn).await.unwrap();
    let ca_pem = std::fs::read(&certs.ca_cert).unwrap();
    TestServer { running, dir, ca_pem }
}

/// A `gitgate serve` child process listening on a free loopback port;
/// killed (with anything it started) when dropped, so a failing test
/// leaves no server behind.
pub struct ServeProcess {
    pub child: reap::Guard,
    pub addr: std::net::SocketAddr,
    pub ca: PathBuf,
    /// Everything the process logged so far.
    pub log: Arc<std::sync::Mutex<String>>,
}

impl ServeProcess {
    /// Starts `bin serve --listen 127.0.0.1:0 <extra>` in `workdir` and waits
    /// for the address it prints.
    pub fn spawn(bin: &str, workdir: &std::path::Path, extra: &[&str]) -> ServeProcess {
        Self::spawn_on(bin, workdir, "127.0.0.1:0", extra)
    }

    /// As [`ServeProcess::spawn`], on a given address.
    pub fn spawn_on(bin: &str, workdir: &std::path::Path, listen: &str, extra: &[&str]) -> ServeProcess {
        Self::spawn_until(bin, workdir, listen, extra, "ready: deciding from the commit in force")
    }

    /// As [`ServeProcess::spawn_on`], ready once the log says `ready`.
    pub fn spawn_until(
        bin: &str,
        workdir: &std::path::Path,
        listen: &str,
        extra: &[&str],
        ready: &str,
    ) -> ServeProcess {
        use std::io::BufRead as _;
        let mut child = reap::spawn(
            std::process::Command::new(bin)
                .args(["serve", "--listen", listen])
                .args(extra)
                .current_dir(workdir)
                .env("RUST_LOG", "info")
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped()),
        )
        .unwrap();
        let mut stderr = std::io::BufReader::new(child.stderr.take().unwrap());
        let log = Arc::new(std::sync::Mutex::new(String::new()));
        let mut line = String::new();
        let mut addr = None;
        while stderr.read_line(&mut line).unwrap() > 0 {
            log.lock().unwrap().push_str(&line);
            if let Some(rest) = line.split("listening on https://").nth(1) {
                addr = rest.split_whitespace().next().and_then(|a| a.parse().ok());
                break;
            }
            line.clear();
        }
        // keep reading stderr so the child never blocks on a full pipe
        let sink = log.clone();
        std::thread::spawn(move || {
            let mut line = String::new();
            while stderr.read_line(&mut line).unwrap_or(0) > 0 {
                if let Ok(mut l) = sink.lock() {
                    l.push_str(&line);
                }
                line.clear();
            }
        });
        let addr = addr.unwrap_or_else(|| panic!("serve prints the address it listens on: {}", log.lock().unwrap()));
        let serve = ServeProcess { child, addr, ca: workdir.join("certs/ca.crt"), log };
        serve.wait_for_log(ready, std::time::Duration::from_secs(60));
        serve
    }

    /// Waits until the log contains `needle`.
    pub fn wait_for_log(&self, needle: &str, within: std::time::Duration) -> String {
        let deadline = std::time::Instant::now() + within;
        loop {
            let log = self.log.lock().unwrap().clone();
            if log.contains(needle) {
                return log;
            }
            assert!(std::time::Instant::now() < deadline, "{needle:?} never logged:\n{log}");
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }

    /// Sends SIGTERM and waits up to `within` for a clean exit.
    pub fn terminate(mut self, within: std::time::Duration) -> std::process::ExitStatus {
        let ok = std::process::Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status().unwrap();
        assert!(ok.success());
        let deadline = std::time::Instant::now() + within;
        loop {
            if let Some(code) = self.child.try_wait().unwrap() {
                return code;
            }
            assert!(std::time::Instant::now() < deadline, "serve did not stop on SIGTERM");
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }

    /// CPU seconds (user + system) the process has used.
    pub fn cpu_seconds(&self) -> f64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).unwrap_or_default();
        let fields: Vec<&str> = stat.rsplit(')').next().unwrap_or("").split_whitespace().collect();
        let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
        (ticks(11) + ticks(12)) / 100.0
    }

    /// Resident set size in KiB.
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }
}

/// `curl --cacert CA` POSTs the AdmissionReview file `body` to
/// `https://ADDR/validate`: curl's output.
pub fn post_review(ca: &std::path::Path, addr: std::net::SocketAddr, body: &std::path::Path) -> std::process::Output {
    std::process::Command::new("curl")
        .args(["-sS", "--fail", "--cacert"])
        .arg(ca)
        .args(["-H", "content-type: application/json", "--data-binary"])
        .arg(format!("@{}", body.display()))
        .arg(format!("https://127.0.0.1:{}/validate", addr.port()))
        .output()
        .expect("curl is on PATH")
}
