//! A real loopback control plane (etcd + kube-apiserver, optionally
//! kube-controller-manager) from the binaries in `$KUBE_BIN_DIR`, started
//! with the repository's `tests/support/kube-up.sh` on free ports. The
//! process-wide ones ([`cluster`], [`second_cluster`]) are stopped by a
//! reaper when the test process exits, however it exits; one started with
//! [`Cluster::start_with`] is also stopped when it drops.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use super::reap;

pub struct Cluster {
    pub run_dir: PathBuf,
    pub kubeconfig: PathBuf,
    pub bin_dir: PathBuf,
    pub port: u16,
    webhook_client_cert: bool,
    /// kube-up.sh's settings (ports, directories), to start parts again.
    env: Vec<(&'static str, String)>,
}

/// How [`Cluster::start_with`] starts a control plane.
#[derive(Clone, Debug, Default)]
pub struct ClusterOptions {
    name: String,
    controller_manager: bool,
    webhook_client_cert: bool,
}

impl ClusterOptions {
    /// `name` tells its run directory apart from the process's others.
    pub fn new(name: &str) -> ClusterOptions {
        // The apiserver presents its webhook client certificate by default:
        // webhooks that do not ask for one never see it, and `serve
        // --client-ca` (the trust boundary) needs it.
        ClusterOptions { name: name.to_owned(), webhook_client_cert: true, ..Default::default() }
    }

    /// Also run kube-controller-manager (off by default).
    pub fn controller_manager(mut self, on: bool) -> ClusterOptions {
        self.controller_manager = on;
        self
    }

    /// The apiserver presents a client certificate to every admission
    /// webhook it calls (`KUBE_WEBHOOK_CLIENT_CERT=1` of kube-up.sh):
    /// [`Cluster::webhook_client_cert`], CN `kube-apiserver-webhook-client`,
    /// signed by [`Cluster::ca_cert`].
    pub fn webhook_client_cert(mut self, on: bool) -> ClusterOptions {
        self.webhook_client_cert = on;
        self
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn tools_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/support")
}

/// Says loudly (on the raw stderr handle: libtest's capture would hide
/// eprintln!) that `test` did not run.
pub fn skipped(test: &str, why: &str) {
    use std::io::Write as _;
    let _ = writeln!(std::io::stderr(), "\n*** SKIPPED e2e test `{test}`: {why} ***\n");
}

static CLUSTER: OnceLock<Option<Cluster>> = OnceLock::new();

/// The process's control plane, started on first use; `None` (and a loud
/// message) when `KUBE_BIN_DIR` is not set.
pub fn cluster(test: &str) -> Option<&'static Cluster> {
    let c = CLUSTER.get_or_init(|| Cluster::start_with(&ClusterOptions::new("").controller_manager(true))).as_ref();
    if c.is_none() {
        skipped(
            test,
            "KUBE_BIN_DIR is not set. Point it at a directory with kube-apiserver, kube-controller-manager, \
             kubectl and etcd to run it against a real kube-apiserver (see README.md).",
        );
    }
    c
}

static SECOND: OnceLock<Option<Cluster>> = OnceLock::new();

/// A second control plane of the process, independent of [`cluster`]'s
/// (its own etcd, apiserver, CA and admin credentials; no
/// controller-manager), started on first use: a destination cluster other
/// than the default one. `None` (and a loud message) without `KUBE_BIN_DIR`.
pub fn second_cluster(test: &str) -> Option<&'static Cluster> {
    let c = SECOND.get_or_init(|| Cluster::start_with(&ClusterOptions::new("second"))).as_ref();
    if c.is_none() {
        skipped(test, "KUBE_BIN_DIR is not set (a second control plane is needed).");
    }
    c
}

impl Cluster {
    /// Starts a control plane as `options` say; `None` when `KUBE_BIN_DIR`
    /// is not set. It stops when the returned value drops, and at the
    /// latest when the test process exits.
    pub fn start_with(options: &ClusterOptions) -> Option<Cluster> {
        let bin_dir = PathBuf::from(std::env::var_os("KUBE_BIN_DIR")?);
        assert!(bin_dir.join("kube-apiserver").is_file(), "KUBE_BIN_DIR={} has no kube-apiserver", bin_dir.display());
        let dir = if options.name.is_empty() {
            format!("gitgate-e2e-{}", std::process::id())
        } else {
            format!("gitgate-e2e-{}-{}", std::process::id(), options.name)
        };
        let run_dir = std::env::temp_dir().join(dir);
        std::fs::create_dir_all(&run_dir).unwrap();
        let port = free_port();
        let etcd = free_port();
        let mut peer = free_port();
        while peer == etcd + 2 || peer == etcd {
            peer = free_port();
        }
        let kcm = free_port();
        let flag = |on: bool| if on { "1" } else { "0" }.to_string();
        let env = [
            ("KUBE_BIN_DIR", bin_dir.to_string_lossy().into_owned()),
            ("KUBE_RUN_DIR", run_dir.to_string_lossy().into_owned()),
            ("KUBE_APISERVER_PORT", port.to_string()),
            ("KUBE_ETCD_CLIENT_PORT", etcd.to_string()),
            ("KUBE_ETCD_PEER_PORT", peer.to_string()),
            ("KUBE_KCM_PORT", kcm.to_string()),
            ("KUBE_NO_CONTROLLER_MANAGER", flag(!options.controller_manager)),
            ("KUBE_WEBHOOK_CLIENT_CERT", flag(options.webhook_client_cert)),
            // etcd, the apiserver and the controller-manager carry the
            // test run's marker (tests/support/leftovers.sh finds them).
            (reap::MARKER, reap::run_id()),
        ];
        // The reaper: stops the control plane and removes its state when
        // this test process exits, however it exits (kube-up.sh starts the
        // control plane in sessions of its own, which outlive us otherwise).
        let down = tools_dir().join("kube-down.sh");
        let script = format!(
            "while kill -0 {pid} 2>/dev/null; do sleep 1; done; KUBE_WIPE=1 {down} >/dev/null 2>&1; rm -rf {dir}",
            pid = std::process::id(),
            down = down.display(),
            dir = run_dir.display()
        );
        // `sh` forks the reaper into its own session and returns at once.
        let forked = Command::new("sh")
            .args(["-c", "setsid sh -c \"$GITGATE_REAPER\" >/dev/null 2>&1 </dev/null &"])
            .env("GITGATE_REAPER", &script)
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .status()
            .expect("sh");
        assert!(forked.success());
        let kubeconfig = run_dir.join("admin.kubeconfig");
        let cluster = Cluster {
            run_dir,
            kubeconfig,
            bin_dir,
            port,
            webhook_client_cert: options.webhook_client_cert,
            env: env.to_vec(),
        };
        // From here a failed start stops what it started (Drop).
        cluster.up();
        Some(cluster)
    }

    /// Runs kube-up.sh with this cluster's settings: it starts what is not
    /// running (on the same ports, the same etcd data) and waits for the
    /// apiserver's `/readyz`.
    fn up(&self) {
        let out = Command::new("bash")
            .arg(tools_dir().join("kube-up.sh"))
            .envs(self.env.iter().map(|(k, v)| (*k, v.as_str())))
            .output()
            .expect("kube-up.sh");
        assert!(
            out.status.success(),
            "kube-up.sh failed: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(self.apiserver_log()).unwrap_or_default()
        );
    }

    /// Stops kube-apiserver as the kubelet restarts it: SIGTERM (it stops
    /// accepting requests and drains the short ones), then SIGKILL after a
    /// grace period — here 3 s, not the kubelet's 30 s: the apiserver
    /// otherwise waits for open watch streams to reach their timeout
    /// (minutes). Waits until it has exited; etcd keeps running. Only on a
    /// cluster of the test's own ([`Cluster::start_with`]): the
    /// process-wide one is shared.
    pub fn stop_apiserver(&self) {
        let pidf = self.run_dir.join("pids/kube-apiserver.pid");
        let pid: u32 = std::fs::read_to_string(&pidf).unwrap().trim().parse().unwrap();
        let exe = std::fs::read_link(format!("/proc/{pid}/exe")).unwrap_or_default();
        assert_eq!(exe.file_name().and_then(|n| n.to_str()), Some("kube-apiserver"), "pid {pid} is the apiserver");
        let ok = Command::new("kill").args(["-TERM", &pid.to_string()]).status().unwrap();
        assert!(ok.success());
        let grace = std::time::Instant::now() + std::time::Duration::from_secs(3);
        while reap::alive(pid) && std::time::Instant::now() < grace {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        if reap::alive(pid) {
            let _ = Command::new("kill").args(["-KILL", &pid.to_string()]).status();
        }
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while reap::alive(pid) {
            assert!(std::time::Instant::now() < deadline, "kube-apiserver (pid {pid}) did not exit after SIGKILL");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    /// Starts kube-apiserver again (same port, same etcd) and returns when
    /// it is ready (`/readyz` ok).
    pub fn start_apiserver(&self) {
        self.up();
    }

    /// [`Cluster::stop_apiserver`], `down` of outage, then
    /// [`Cluster::start_apiserver`]; returns when it was ready again.
    pub fn restart_apiserver(&self, down: std::time::Duration) -> std::time::Instant {
        self.stop_apiserver();
        std::thread::sleep(down);
        self.start_apiserver();
        std::time::Instant::now()
    }

    /// The cluster's PKI directory (`$KUBE_RUN_DIR/pki`).
    pub fn pki_dir(&self) -> PathBuf {
        self.run_dir.join("pki")
    }

    /// The cluster CA: it signed the apiserver's serving certificate and
    /// every client certificate of kube-up.sh.
    pub fn ca_cert(&self) -> PathBuf {
        self.pki_dir().join("ca.crt")
    }

    /// The client certificate and key the apiserver presents to admission
    /// webhooks, when started with [`ClusterOptions::webhook_client_cert`].
    pub fn webhook_client_cert(&self) -> Option<(PathBuf, PathBuf)> {
        self.webhook_client_cert
            .then(|| (self.pki_dir().join("webhook-client.crt"), self.pki_dir().join("webhook-client.key")))
    }

    /// The CA that signed the client certificate the apiserver presents to
    /// webhooks (CN `kube-apiserver-webhook-client`): what `serve
    /// --client-ca` trusts. `None` when the launcher did not set one up.
    pub fn webhook_client_ca(&self) -> Option<PathBuf> {
        self.webhook_client_cert.then(|| self.ca_cert())
    }

    /// A client with cluster-admin rights.
    pub async fn client(&self) -> kube::Client {
        let kc = kube::config::Kubeconfig::read_from(&self.kubeconfig).unwrap();
        let config = kube::Config::from_custom_kubeconfig(kc, &Default::default()).await.unwrap();
        kube::Client::try_from(config).unwrap()
    }

    /// Runs kubectl against the cluster.
    pub fn kubectl(&self, args: &[&str]) -> std::process::Output {
        Command::new(self.bin_dir.join("kubectl"))
            .arg(format!("--kubeconfig={}", self.kubeconfig.display()))
            .args(args)
            .output()
            .unwrap()
    }

    pub fn apiserver_log(&self) -> PathBuf {
        self.run_dir.join("logs/kube-apiserver.log")
    }

    /// The apiserver's `/metrics` text.
    pub async fn metrics(&self) -> String {
        let client = self.client().await;
        let req = http::Request::get("/metrics").body(Vec::new()).unwrap();
        client.request_text(req).await.unwrap()
    }
}

impl Drop for Cluster {
    /// Stops the control plane and removes its state (the process-wide
    /// clusters live in statics, which never drop: their reaper does it).
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(tools_dir().join("kube-down.sh"))
            .env("KUBE_RUN_DIR", &self.run_dir)
            .env("KUBE_WIPE", "1")
            .output();
        let _ = std::fs::remove_dir_all(&self.run_dir);
    }
}

pub fn path_str(p: &Path) -> &str {
    p.to_str().unwrap()
}

impl Cluster {
    /// Runs kubectl with `input` on stdin.
    pub fn kubectl_stdin(&self, args: &[&str], input: &[u8]) -> std::process::Output {
        use std::io::Write as _;
        let mut child = Command::new(self.bin_dir.join("kubectl"))
            .arg(format!("--kubeconfig={}", self.kubeconfig.display()))
            .args(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(input).unwrap();
        child.wait_with_output().unwrap()
    }

    /// kubectl that must succeed; returns stdout.
    pub fn kubectl_ok(&self, args: &[&str]) -> String {
        let out = self.kubectl(args);
        assert!(out.status.success(), "kubectl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

/// Tests that install cluster-wide admission (a ValidatingAdmissionPolicy,
/// a webhook on every resource) hold this while they run, so they never
/// see each other's denials.
pub static CLUSTER_WIDE: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Takes [`CLUSTER_WIDE`], surviving a test that panicked while holding it.
pub fn cluster_wide() -> std::sync::MutexGuard<'static, ()> {
    CLUSTER_WIDE.lock().unwrap_or_else(|e| e.into_inner())
}

impl Cluster {
    /// Creates a namespace unless it exists.
    pub fn ensure_namespace(&self, name: &str) {
        let manifest = format!(r#"{{"apiVersion":"v1","kind":"Namespace","metadata":{{"name":"{name}"}}}}"#);
        let out = self.kubectl_stdin(&["apply", "-f", "-"], manifest.as_bytes());
        assert!(out.status.success(), "namespace {name}: {}", String::from_utf8_lossy(&out.stderr));
    }
}
