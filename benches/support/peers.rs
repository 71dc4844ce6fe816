//! The peers' parallel client (`benches/peers_client.py`, workload (ii) of
//! the peers' published harness), run from a bench against its cluster.

/// The peers' parallel client (`benches/peers_client.py`), run with the
/// cluster's admin certificate; `None` (said once) without python3 and
/// `requests`.
pub struct PeersClient {
    server: String,
    pki: std::path::PathBuf,
}

impl PeersClient {
    pub fn new(c: &super::cluster::Cluster) -> Option<Self> {
        let this = PeersClient { server: format!("https://127.0.0.1:{}", c.port), pki: c.run_dir.join("pki") };
        let ok =
            std::process::Command::new("python3").args(["-c", "import requests"]).status().is_ok_and(|s| s.success());
        if !ok {
            eprintln!("*** the peers' client needs python3 with `requests`; its column is left out ***");
            return None;
        }
        Some(this)
    }

    /// objects/s of 16 threads making `count` objects in `ns`, the last
    /// `deployments` of them Deployments, the rest ConfigMaps.
    pub fn run(&self, ns: &str, count: usize, deployments: usize) -> Option<f64> {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/peers_client.py");
        let pki = |f: &str| self.pki.join(f).to_string_lossy().into_owned();
        let out = std::process::Command::new("python3")
            .arg(script)
            .args(["--server", &self.server, "--ca", &pki("ca.crt"), "--cert", &pki("admin.crt")])
            .args(["--key", &pki("admin.key"), "--namespace", ns, "--prefix", "py"])
            .args(["--count", &count.to_string(), "--threads", "16", "--deployments", &deployments.to_string()])
            .output()
            .ok()?;
        let line = String::from_utf8_lossy(&out.stdout);
        let v: serde_json::Value = serde_json::from_str(line.trim()).ok()?;
        if let Some(e) = v.get("error") {
            panic!("the peers' client failed: {e}");
        }
        v["objects_per_s"].as_f64()
    }
}
