//! The binary as a user runs it: `gitgate certs`, and `gitgate serve` on
//! its embedded default (certificates generated under the working
//! directory) answered over TLS, then stopped with SIGTERM.

mod common;

use std::io::{BufRead as _, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_gitgate");

#[test]
fn certs_writes_a_ca_and_serving_pair_and_prints_the_ca_bundle() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .args(["certs", "--out"])
        .arg(dir.path())
        .args(["--dns", "gitgate.gitgate.svc", "--ip", "127.0.0.1"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8(out.stdout).unwrap();
    let bundle = stdout.lines().last().unwrap();
    use base64::Engine as _;
    let pem = base64::engine::general_purpose::STANDARD.decode(bundle).unwrap();
    assert_eq!(pem, std::fs::read(dir.path().join("ca.crt")).unwrap(), "caBundle is the CA certificate");
    for f in ["ca.crt", "ca.key", "tls.crt", "tls.key"] {
        assert!(dir.path().join(f).is_file(), "{f}");
    }
    let bad = Command::new(BIN).args(["certs", "--out"]).arg(dir.path()).args(["--dns", "no spaces"]).output().unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("not a valid DNS name"));
}

#[test]
fn serve_runs_on_its_embedded_default_and_drains_on_sigterm() {
    common::install_crypto();
    let work = tempfile::tempdir().unwrap();
    let mut child = Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0"])
        .current_dir(work.path())
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut addr = None;
    let mut line = String::new();
    while stderr.read_line(&mut line).unwrap() > 0 {
        if let Some(rest) = line.split("listening on https://").nth(1) {
            addr = rest.split_whitespace().next().map(str::to_string);
            break;
        }
        line.clear();
    }
    let addr: std::net::SocketAddr = addr.expect("serve prints its address").parse().unwrap();
    let ca = work.path().join("certs/ca.crt");
    assert!(ca.is_file(), "serve generated its certificates under certs/");

    // what the README tells a user to run
    let fixture = common::fixtures_dir().join("validate-create-deployment.json");
    let out = Command::new("curl")
        .args(["-sS", "--fail", "--cacert"])
        .arg(&ca)
        .args(["-H", "content-type: application/json", "--data-binary"])
        .arg(format!("@{}", fixture.display()))
        .arg(format!("https://127.0.0.1:{}/validate", addr.port()))
        .output()
        .expect("curl is on PATH");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let got: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let sent: serde_json::Value = serde_json::from_slice(&std::fs::read(&fixture).unwrap()).unwrap();
    assert_eq!(got["kind"], "AdmissionReview");
    assert_eq!(got["response"]["uid"], sent["request"]["uid"]);

    let status = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(status.success());
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(code) = child.try_wait().unwrap() {
            assert!(code.success(), "serve exits 0 after draining: {code:?}");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "serve did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    }
}
