//! Fault injection without a cluster (issue 16, item 2): the Git server
//! stopped or answering garbage, and the audit log's disk full. Each
//! measures its recovery and checks that nothing was lost or half-applied;
//! the figures are printed (BENCHMARKS.md, "Reliability (issue 16) —
//! fault injection"). The apiserver restarted mid-sync and mid-watch, and
//! Vault down behind the secrets webhook, are in `tests/e2e/faults.rs`.

mod support;
use support::server as common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use gitgate::desired::tracker::Tracker;
use gitgate::render::{RenderOptions, Renderer};
use gitgate::source::GitSource;
use gitgate::sync::status::StatusStore;
use serde_json::Value;
use support::*;

const BIN: &str = env!("CARGO_BIN_EXE_gitgate");

/// Prints on the raw stderr handle (libtest's capture would hide it).
fn say(text: &str) {
    use std::io::Write as _;
    let _ = writeln!(std::io::stderr(), "{text}");
}

fn median(v: &[Duration]) -> Duration {
    let mut v = v.to_vec();
    v.sort();
    v[v.len() / 2]
}

/// A server on `port` that answers every connection with bytes that are
/// not Git's protocol, then hangs up.
async fn garbage_server(port: u16) -> tokio::task::JoinHandle<()> {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_reuseaddr(true).unwrap();
    socket.bind(([127, 0, 0, 1], port).into()).unwrap();
    let listener = socket.listen(16).unwrap();
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        while let Ok((mut conn, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 512];
                let _ = conn.read(&mut buf).await;
                let _ =
                    conn.write_all(b"0fffHTTP/1.1 418 I'm a teapot\r\n\x00\x01\x02garbage\xff\xfe not pkt-lines").await;
                let _ = conn.shutdown().await;
            });
        }
    })
}

fn wait_for<T>(what: &str, within: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(series).and_then(|v| v.trim().parse().ok()))
}

/// The Git server stopped (connection refused) and answering garbage:
/// the last good commit stays in force, whole; the status and the metrics
/// say why; when the server is back the new head is in force within one
/// poll interval (+ 2 s), also whole. Five outages, alternating.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn git_unreachable_or_answering_garbage_keeps_the_last_good_commit_and_recovers_within_a_poll_interval() {
    const INTERVAL: Duration = Duration::from_secs(1);
    const ROUNDS: usize = 5;
    let work = Repo::new();
    work.write("gitgate.yaml", "apps:\n  - {name: web, path: apps/web, destination: {namespace: web}}\n");
    work.write("apps/web/cm-0.yaml", &configmap("cm-0", "v0"));
    let c0 = work.commit("first");
    let base = tempfile::tempdir().unwrap();
    let bare = base.path().join("team.git");
    git(base.path(), &["clone", "-q", "--bare", work.path().to_str().unwrap(), bare.to_str().unwrap()]);
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut daemon = Some(Daemon::start_on(base.path(), port));

    let url = format!("git://127.0.0.1:{port}/team.git");
    let (_cache_dir, cache) = cache_dir();
    let source = Arc::new(GitSource::open(&url, &cache).unwrap());
    let mut registry = prometheus_client::registry::Registry::default();
    let tracker = Arc::new(
        Tracker::new(source, "main", Arc::new(Renderer::new(RenderOptions::default()))).with_metrics(&mut registry),
    );
    let status = StatusStore::new(None).with_source_faults(tracker.faults());
    let metrics = || {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        text
    };
    let running = tokio::spawn(tracker.clone().run(INTERVAL));
    let in_force = |t: &Tracker| t.current().map(|c| c.commit().to_string());
    let whole = |t: &Tracker, n: usize| {
        // Every object of the commit, each with its content at it: never
        // a mix of two commits.
        let set = t.current().unwrap();
        let objects = set.objects();
        assert_eq!(objects.len(), n + 1, "all of commit {}'s objects are in force", set.commit());
        for (key, o) in objects {
            let i: usize = key.name.trim_start_matches("cm-").parse().unwrap();
            assert!(i <= n, "{key:?}");
            let manifest: Value = serde_json::from_str(&o.manifest).unwrap();
            assert_eq!(manifest["data"]["value"], format!("v{i}"), "{key:?} at its content");
        }
    };
    let t = tracker.clone();
    tokio::task::spawn_blocking(move || {
        wait_for("the first commit", Duration::from_secs(10), || (in_force(&t) == Some(c0.clone())).then_some(()))
    })
    .await
    .unwrap();
    assert_eq!(metric(&metrics(), "gitgate_git_source_up"), Some(1.0));

    let mut recoveries = Vec::new();
    let mut good = in_force(&tracker).unwrap();
    for round in 1..=ROUNDS {
        let garbage = round % 2 == 0;
        // The fault: the server stops (connection refused), or something
        // else answers on its port.
        drop(daemon.take());
        let impostor = if garbage { Some(garbage_server(port).await) } else { None };
        // Git moves on meanwhile.
        work.write(&format!("apps/web/cm-{round}.yaml"), &configmap(&format!("cm-{round}"), &format!("v{round}")));
        let head = work.commit(&format!("round {round}"));
        git(work.path(), &["push", "-q", bare.to_str().unwrap(), "main"]);

        let t = tracker.clone();
        let fault = tokio::task::spawn_blocking(move || {
            wait_for("two failed polls", Duration::from_secs(10), || t.fault().filter(|f| f.failures >= 2))
        })
        .await
        .unwrap();
        assert_eq!(in_force(&tracker).as_deref(), Some(good.as_str()), "the last good commit stays in force");
        whole(&tracker, round - 1);
        assert_eq!(fault.stage, "fetch");
        assert!(fault.error.contains(&format!("failed to fetch {url}")), "{}", fault.error);
        assert_eq!(fault.in_force, good);
        let overview = status.overview();
        let shown = overview.source.expect("the status names the fault");
        assert!(
            shown.message().contains(&good[..7]) && shown.message().contains("stays in force"),
            "{}",
            shown.message()
        );
        assert!(gitgate::sync::status::table(&status.overview(), false).contains("git: Git fetch failing since"));
        let text = metrics();
        assert_eq!(metric(&text, "gitgate_git_source_up"), Some(0.0), "{text}");
        assert!(metric(&text, "gitgate_git_sync_failures_total{stage=\"fetch\"}").unwrap() >= 2.0, "{text}");
        assert!(!running.is_finished(), "the tracker survives the fault");
        say(&format!("round {round} ({}): {}", if garbage { "garbage" } else { "stopped" }, fault.error));

        // The server is back.
        if let Some(i) = impostor {
            i.abort();
            let _ = i.await;
        }
        daemon = Some(Daemon::start_on(base.path(), port));
        let back = Instant::now();
        let t = tracker.clone();
        let h = head.clone();
        tokio::task::spawn_blocking(move || {
            wait_for("the new head", INTERVAL + Duration::from_secs(5), || {
                (in_force(&t) == Some(h.clone())).then_some(())
            })
        })
        .await
        .unwrap();
        let took = back.elapsed();
        recoveries.push(took);
        whole(&tracker, round);
        assert!(tracker.fault().is_none() && status.overview().source.is_none(), "the fault is cleared");
        assert_eq!(metric(&metrics(), "gitgate_git_source_up"), Some(1.0));
        assert!(
            took <= INTERVAL + Duration::from_secs(2),
            "Git back → in force in {took:?} (poll interval {INTERVAL:?})"
        );
        good = head;
    }
    running.abort();
    say(&format!(
        "FIGURE git back -> new head in force: poll interval {INTERVAL:?}, runs {ROUNDS}, median {:?}, max {:?}, all {recoveries:?}",
        median(&recoveries),
        recoveries.iter().max().unwrap()
    ));
}

/// Whether this process may mount a tmpfs in a mount namespace of its own.
fn can_mount() -> Result<(), String> {
    let probe = tempfile::tempdir().map_err(|e| e.to_string())?;
    let out = reap::output(Command::new("unshare").args([
        "-m",
        "--propagation",
        "private",
        "mount",
        "-t",
        "tmpfs",
        "-o",
        "size=64k",
        "gitgate-probe",
        probe.path().to_str().unwrap_or_default(),
    ]))
    .map_err(|e| e.to_string())?;
    if out.status.success() { Ok(()) } else { Err(String::from_utf8_lossy(&out.stderr).trim().to_string()) }
}

fn curl_review(serve: &common::ServeProcess, body: &Path) -> Value {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "10", "-H", "content-type: application/json", "--cacert"])
        .arg(&serve.ca)
        .arg("--data-binary")
        .arg(format!("@{}", body.display()))
        .arg(format!("https://127.0.0.1:{}/validate", serve.addr.port()))
        .output()
        .unwrap();
    serde_json::from_slice(&out.stdout).unwrap_or_else(|_| panic!("{}", String::from_utf8_lossy(&out.stderr)))
}

fn curl_metrics(serve: &common::ServeProcess) -> String {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "10", "--cacert"])
        .arg(&serve.ca)
        .arg(format!("https://127.0.0.1:{}/metrics", serve.addr.port()))
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Fills `dir` (a small tmpfs) until the kernel says it is full; returns
/// the ballast file.
fn fill(dir: &Path) -> PathBuf {
    use std::io::Write as _;
    let path = dir.join("ballast");
    let mut f = std::fs::File::create(&path).unwrap();
    let chunk = vec![0u8; 4096];
    loop {
        match f.write(&chunk) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(28) => break,
            Err(e) => panic!("filling the tmpfs: {e}"),
        }
    }
    path
}

/// The audit log's disk fills up under a running `gitgate serve`: a
/// tmpfs of 256 KiB mounted in a mount namespace of gitgate's own
/// (`unshare -m`; it goes away with the process). Admissions are denied
/// saying the audit log cannot be written and why (fail closed); what was
/// written stays; when space returns admissions are recorded again at
/// once, and `gitgate audit verify` passes on a chain with no gap.
#[test]
fn a_full_audit_disk_denies_admissions_saying_so_loses_nothing_and_resumes() {
    const TEST: &str = "a_full_audit_disk_denies_admissions_saying_so_loses_nothing_and_resumes";
    if let Err(why) = can_mount() {
        say(&format!("\n*** SKIPPED `{TEST}`: cannot mount a tmpfs in a mount namespace ({why}) ***\n"));
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let audit = work.path().join("audit");
    std::fs::create_dir(&audit).unwrap();
    // gitgate itself runs in a mount namespace where `audit/` is a small
    // tmpfs: exec keeps the pid, so /proc/<pid>/root shows its view.
    let wrapper = work.path().join("serve-on-tmpfs.sh");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nexec unshare -m --propagation private sh -c 'mount -t tmpfs -o size=256k gitgate-audit {audit} && exec {bin} \"$@\"' sh \"$@\"\n",
            audit = audit.display(),
            bin = BIN
        ),
    )
    .unwrap();
    std::fs::set_permissions(&wrapper, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let log = audit.join("audit.jsonl");
    let serve = common::ServeProcess::spawn(
        wrapper.to_str().unwrap(),
        work.path(),
        &["--audit-log", log.to_str().unwrap(), "--poll-interval", "1h"],
    );
    // gitgate's view of the audit directory (the tmpfs).
    let inside = PathBuf::from(format!("/proc/{}/root{}", serve.child.id(), audit.display()));
    let df =
        reap::output(Command::new("nsenter").args(["-t", &serve.child.id().to_string(), "-m", "df", "-k"]).arg(&audit))
            .unwrap();
    assert!(String::from_utf8_lossy(&df.stdout).contains("gitgate-audit"), "the audit log is on the tmpfs: {df:?}");
    assert!(
        !std::fs::read_to_string("/proc/self/mountinfo").unwrap().contains("gitgate-audit"),
        "not in our namespace"
    );

    let body = common::fixtures_dir().join("validate-create-deployment-ssa-serviceaccount-token.json");
    let mut allowed = 0usize;
    for _ in 0..5 {
        let got = curl_review(&serve, &body);
        assert_eq!(got["response"]["allowed"], true, "{got}");
        allowed += 1;
    }
    let before = std::fs::read_to_string(inside.join("audit.jsonl")).unwrap();
    assert_eq!(before.lines().count(), allowed);

    // The disk fills up. A record may still fit in the last page of the
    // log; then every admission is denied, saying why.
    let ballast = fill(&inside);
    let mut denied_after = None;
    for i in 0..16 {
        let got = curl_review(&serve, &body);
        if got["response"]["allowed"] == true {
            allowed += 1;
            continue;
        }
        denied_after = Some(i);
        break;
    }
    let denied_after = denied_after.expect("a full disk denies admissions");
    assert!(denied_after <= 8, "at most a page of records fits after the disk is full");
    for _ in 0..3 {
        let got = curl_review(&serve, &body);
        let status = &got["response"]["status"];
        assert_eq!(got["response"]["allowed"], false, "{got}");
        assert_eq!((status["code"].as_u64(), status["reason"].as_str()), (Some(503), Some("AuditUnavailable")));
        let message = status["message"].as_str().unwrap();
        assert!(
            message.contains("audit log")
                && message.contains("No space left on device")
                && message.contains("fails closed"),
            "{message}"
        );
        assert!(!message.contains(audit.to_str().unwrap()), "the log's path is not shown: {message}");
    }
    let failures = metric(&curl_metrics(&serve), "gitgate_audit_write_failures_total").unwrap_or(0.0);
    assert!(failures >= 4.0, "the failures are on metrics: {failures}");
    let during = std::fs::read_to_string(inside.join("audit.jsonl")).unwrap();
    assert!(during.starts_with(&before), "nothing already written is lost or changed");
    assert_eq!(during.lines().count(), allowed, "one whole record per admitted change, no partial line");
    assert!(during.ends_with('\n'));

    // Space returns: the next admission is recorded.
    std::fs::remove_file(&ballast).unwrap();
    let back = Instant::now();
    let got = curl_review(&serve, &body);
    let took = back.elapsed();
    assert_eq!(got["response"]["allowed"], true, "{got}");
    allowed += 1;
    for _ in 0..3 {
        assert_eq!(curl_review(&serve, &body)["response"]["allowed"], true);
        allowed += 1;
    }
    let after = std::fs::read_to_string(inside.join("audit.jsonl")).unwrap();
    assert!(after.starts_with(&during));
    assert_eq!(after.lines().count(), allowed, "every admitted change has its record, the refused ones none");
    let seqs: Vec<u64> =
        after.lines().map(|l| serde_json::from_str::<Value>(l).unwrap()["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, (1..=allowed as u64).collect::<Vec<_>>(), "no gap, no duplicate");

    // The chain verifies (read through gitgate's own view of the tmpfs).
    let verify = reap::output(Command::new(BIN).args(["audit", "verify"]).arg(inside.join("audit.jsonl"))).unwrap();
    assert!(
        verify.status.success(),
        "audit verify: {}{}",
        String::from_utf8_lossy(&verify.stdout),
        String::from_utf8_lossy(&verify.stderr)
    );
    say(&format!(
        "FIGURE audit disk full: {allowed} records kept, denied after {denied_after} more fitted, space back -> first admission recorded in {took:?} (1 run)"
    ));
}
