//! The e2e harness itself: a control plane whose apiserver presents a
//! client certificate to webhooks, and one that stops when it drops.

use std::process::Command;

use crate::cluster::{Cluster, ClusterOptions, skipped};

fn openssl(args: &[&str]) -> String {
    let out = Command::new("openssl").args(args).output().expect("openssl");
    assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn a_cluster_can_present_a_webhook_client_certificate_and_stops_when_dropped() {
    let test = "a_cluster_can_present_a_webhook_client_certificate_and_stops_when_dropped";
    if std::env::var_os("KUBE_BIN_DIR").is_none() {
        return skipped(test, "KUBE_BIN_DIR is not set.");
    }
    let c = Cluster::start_with(&ClusterOptions::new("webhook-client").webhook_client_cert(true)).unwrap();
    let (cert, key) = c.webhook_client_cert().expect("started with webhook_client_cert");
    assert!(key.is_file());
    let subject = openssl(&["x509", "-in", cert.to_str().unwrap(), "-noout", "-subject"]);
    assert!(subject.contains("CN = kube-apiserver-webhook-client"), "{subject}");
    let verified = openssl(&["verify", "-CAfile", c.ca_cert().to_str().unwrap(), cert.to_str().unwrap()]);
    assert!(verified.trim_end().ends_with(": OK"), "{verified}");
    // the apiserver runs with the admission configuration that names it
    let pid = std::fs::read_to_string(c.run_dir.join("pids/kube-apiserver.pid")).unwrap().trim().to_owned();
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
    let config = format!("--admission-control-config-file={}", c.run_dir.join("admission-config.yaml").display());
    assert!(cmdline.split(|b| *b == 0).any(|a| a == config.as_bytes()), "{}", String::from_utf8_lossy(&cmdline));
    let webhook_kubeconfig = std::fs::read_to_string(c.run_dir.join("webhook-client.kubeconfig")).unwrap();
    assert!(webhook_kubeconfig.contains(&format!("client-certificate: {}", cert.display())), "{webhook_kubeconfig}");
    assert!(c.kubectl_ok(&["get", "--raw", "/readyz"]).contains("ok"));

    // Dropped, it stops its processes (not only at the process's exit).
    let pids: Vec<u32> = ["etcd", "kube-apiserver"]
        .iter()
        .map(|n| std::fs::read_to_string(c.run_dir.join(format!("pids/{n}.pid"))).unwrap().trim().parse().unwrap())
        .collect();
    let run_dir = c.run_dir.clone();
    drop(c);
    for pid in pids {
        assert!(!crate::common::reap::alive(pid), "pid {pid} outlived its cluster");
    }
    assert!(!run_dir.exists(), "the run directory is removed");
}
