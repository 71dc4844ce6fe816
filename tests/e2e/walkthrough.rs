//! README's walk-through, run as written: the shell blocks between
//! `<!-- walkthrough:begin -->` and `<!-- walkthrough:end -->` run in one
//! bash against the real kube-apiserver, with gitgate and kubectl on PATH
//! and the cluster's admin kubeconfig, then the outputs a reader is told
//! to expect are checked: synced at each commit, the hand edit denied
//! naming the commit and file, the sealed Secret's value in the cluster
//! (and nowhere in Git or the log), the audit query answering who changed
//! what.

use std::io::Read as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::cluster;

const BIN: &str = env!("CARGO_BIN_EXE_gitgate");

/// The shell blocks of the walk-through, in order.
fn walkthrough_script() -> String {
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let begin = readme.find("<!-- walkthrough:begin -->").expect("README has the walk-through markers");
    let end = readme.find("<!-- walkthrough:end -->").expect("README has the walk-through markers");
    let mut script = String::new();
    let mut in_sh = false;
    for line in readme[begin..end].lines() {
        match line.trim_end() {
            "```sh" if !in_sh => in_sh = true,
            "```" if in_sh => {
                in_sh = false;
                script.push('\n');
            }
            l if in_sh => {
                script.push_str(l);
                script.push('\n');
            }
            _ => {}
        }
    }
    assert!(script.contains("gitgate serve"), "the walk-through starts gitgate:\n{script}");
    script
}

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git").arg("-C").arg(dir).args(args).output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn the_readme_walkthrough_runs_as_written() {
    let Some(c) = cluster::cluster("the_readme_walkthrough_runs_as_written") else { return };
    // It installs webhooks on every namespace: no other test may run beside it.
    let _serial = cluster::cluster_wide();
    assert!(
        std::net::TcpListener::bind("127.0.0.1:8443").is_ok(),
        "the walk-through serves on 127.0.0.1:8443, which something else holds"
    );
    let work = tempfile::tempdir().unwrap();
    let bin_dir = Path::new(BIN).parent().unwrap();
    let path = format!("{}:{}:{}", bin_dir.display(), c.bin_dir.display(), std::env::var("PATH").unwrap_or_default());
    let script = format!("set -uo pipefail\nexec 2>&1\n{}", walkthrough_script());
    // Its own process group (bash, the `gitgate serve &` it starts, ...),
    // killed as a whole if the test fails before the TERM below.
    let mut child = crate::common::reap::spawn(
        Command::new("bash")
            .arg("-c")
            .arg(&script)
            .current_dir(work.path())
            .env("PATH", path)
            .env("KUBECONFIG", &c.kubeconfig)
            .env_remove("GITGATE_SERVER")
            .stdin(Stdio::null())
            .stdout(Stdio::piped()),
    )
    .unwrap();
    let pgid = child.id();
    let mut stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    // Step 7's migration Job: no kubelet runs it here, so the test stands
    // in for the Job controller's verdict (see `sync_hooks`), under its
    // own identity; gitgate's ordering and waiting are real.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stand_in = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                crate::sync_hooks::complete_jobs(c, "demo");
                std::thread::sleep(Duration::from_millis(500));
            }
        })
    };
    let deadline = Instant::now() + Duration::from_secs(300);
    let finished = loop {
        if child.try_wait().unwrap().is_some() {
            break true;
        }
        if Instant::now() > deadline {
            break false;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    // Whatever happened: nothing of the walk-through outlives the test.
    let _ =
        Command::new("kill").args(["-TERM", "--", &format!("-{pgid}")]).stderr(std::process::Stdio::null()).status();
    let _ = child.wait();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = stand_in.join();
    let _ = c.kubectl(&[
        "delete",
        "validatingwebhookconfiguration,mutatingwebhookconfiguration",
        "-l",
        "gitgate.dev/guard=true",
    ]);
    let out = reader.join().unwrap();
    let log = std::fs::read_to_string(work.path().join("gitgate.log")).unwrap_or_default();
    let _ = c.kubectl(&["delete", "namespace", "demo", "demo-viewers", "--wait=false"]);
    assert!(finished, "the walk-through did not finish in 5 minutes:\n{out}\n--- gitgate.log\n{log}");

    let demo = work.path().join("demo");
    let three = git(&demo, &["rev-parse", "HEAD~3"]);
    let sealed = git(&demo, &["rev-parse", "HEAD~2"]);
    let bump = git(&demo, &["rev-parse", "HEAD~1"]);
    let approved = git(&demo, &["rev-parse", "HEAD"]);
    let context = format!("--- output\n{out}\n--- gitgate.log\n{log}");
    // 3. synced at the new commit
    assert!(out.contains("replicas: 3"), "{context}");
    // 4. the hand edit is denied, naming the app, the file and the commit
    let owner = format!("demo/Deployment/web is managed by app web from apps/web/deployment.yaml at {}", &three[..7]);
    assert!(out.contains(&owner), "{context}");
    assert!(out.contains("'web: three replicas'"), "{context}");
    // 5. the sealed Secret works, and its value is in neither Git nor the log
    assert!(out.contains("plaintext lines in Git: 0"), "{context}");
    assert!(out.contains("password: correct-horse"), "{context}");
    assert!(!log.contains("correct-horse"), "plaintext reached gitgate's log");
    let in_git =
        Command::new("git").arg("-C").arg(&demo).args(["grep", "-c", "correct-horse", &sealed]).output().unwrap();
    assert!(!in_git.status.success(), "plaintext reached Git");
    // 6. the audit query: applies with their commits, the denied edit with its user
    let table: Vec<&str> = out.lines().skip_while(|l| !l.starts_with("TIME")).collect();
    assert!(table.iter().any(|l| l.contains("apply") && l.contains(&three[..12])), "{context}");
    assert!(table.iter().any(|l| l.contains("deny") && l.contains("UPDATE") && l.contains(&three[..12])), "{context}");
    // 7. the migration ran first: its row precedes the Deployment's
    let bumped: Vec<&str> =
        out.lines().skip_while(|l| !l.starts_with("TIME")).skip(1).skip_while(|l| !l.starts_with("TIME")).collect();
    let row = |what: &str| bumped.iter().position(|l| l.contains(what) && l.contains(&bump[..12]));
    let (job, deploy) = (row("demo/Job/web-migrate-"), row("demo/Deployment/web"));
    assert!(job.is_some() && deploy.is_some() && job < deploy, "the migration first:\n{context}");
    // 8. the commit waited for approval; the hand edit to its content was
    //    denied meanwhile; the diff showed the change; the approval synced it
    assert!(out.contains("WaitingApproval"), "{context}");
    let waiting_edit =
        format!("demo/Deployment/web is managed by app web from apps/web/deployment.yaml at {}", &bump[..7]);
    assert!(out.contains(&waiting_edit), "the waiting commit is not enforced:\n{context}");
    assert!(out.contains("-  replicas: 3") && out.contains("+  replicas: 4"), "{context}");
    assert!(out.contains(&format!("approved {} for app web", &approved[..7])), "{context}");
    assert!(out.contains("approved replicas: 4"), "{context}");
    // 9. gitgate stopped cleanly (exit 0 after draining)
    assert!(log.contains("shutting down"), "{context}");
}
