//! A fleet's audit: each spoke's log names its cluster; `audit query
//! --fleet` merges the chains by time with a CLUSTER column, `audit verify
//! --fleet` checks each chain on its own, mixed-up logs are refused, and
//! records written before clusters were named still verify.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use gitgate::audit::log::Options;
use gitgate::audit::record::{now_micros, parse_rfc3339_micros};
use gitgate::audit::verify::verify_paths;
use gitgate::audit::{AuditLog, CommitRef, Entry, EventKind, Outcome, Record};

const BIN: &str = env!("CARGO_BIN_EXE_gitgate");

fn options(dir: &Path, cluster: Option<&str>) -> Options {
    let mut o = Options::new(dir.join("audit.jsonl")).with_checkpoints(dir.join("checkpoint.pk8"));
    o.replica = "gitgate-0".into();
    o.cluster = cluster.map(str::to_owned);
    o
}

/// Record `i` of a cluster: even ones are alice's admissions (every fourth
/// denied), odd ones sync applies.
fn entry(cluster: &str, i: u64) -> Entry {
    let mut e = if i.is_multiple_of(2) {
        let mut e = Entry::new(EventKind::Admission, if i.is_multiple_of(4) { Outcome::Deny } else { Outcome::Allow });
        e.user = "alice".into();
        e.operation = "UPDATE".into();
        if e.decision == Outcome::Deny {
            e.reasons.push("NotInGit: the object differs from Git".into());
        }
        e
    } else {
        let mut e = Entry::new(EventKind::Apply, Outcome::Done);
        e.operation = "APPLY".into();
        e
    };
    e.kind = "Deployment".into();
    e.namespace = "web".into();
    e.name = format!("{cluster}-{i}");
    e.app = "web".into();
    e.commit = Some(CommitRef { id: format!("{i:040x}"), author: "A <a@x>".into(), subject: "scale".into() });
    e
}

/// Appends until the clock has moved on, so records written one after the
/// other have distinct times (no sleeping: the clock ticks in microseconds).
fn append(log: &AuditLog, e: &Entry) {
    let before = now_micros();
    log.append(e).unwrap();
    while now_micros() <= before {
        std::hint::spin_loop();
    }
}

/// Two spokes' logs in `root/production` and `root/staging`, `n` records
/// each, written alternately (production first).
fn two_clusters(root: &Path, n: u64) -> (PathBuf, PathBuf) {
    let (prod, staging) = (root.join("production"), root.join("staging"));
    let a = AuditLog::open(options(&prod, Some("production"))).unwrap();
    let b = AuditLog::open(options(&staging, Some("staging"))).unwrap();
    for i in 1..=n {
        append(&a, &entry("production", i));
        append(&b, &entry("staging", i));
    }
    a.close().unwrap();
    b.close().unwrap();
    (prod, staging)
}

fn gitgate(args: &[&str], paths: &[String]) -> Output {
    Command::new(BIN).args(args).args(paths).output().unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn named(name: &str, p: &Path) -> String {
    format!("{name}={}", p.display())
}

fn query_json(extra: &[&str], paths: &[String]) -> Vec<serde_json::Value> {
    let args: Vec<&str> =
        ["audit", "query", "--fleet", "-o", "json"].into_iter().chain(extra.iter().copied()).collect();
    let out = gitgate(&args, paths);
    assert!(out.status.success(), "{}", stderr(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn records(dir: &Path) -> Vec<Record> {
    std::fs::read_to_string(dir.join("audit.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn query_fleet_merges_the_chains_by_time_and_names_each_records_cluster() {
    let root = tempfile::tempdir().unwrap();
    let (prod, staging) = two_clusters(root.path(), 4);
    let paths = [named("production", &prod), named("staging", &staging)];

    let all = query_json(&[], &paths);
    assert_eq!(all.len(), 8);
    let clusters: Vec<&str> = all.iter().map(|r| r["cluster"].as_str().unwrap()).collect();
    // written alternately, so merged by time they alternate
    assert_eq!(clusters, ["production", "staging"].repeat(4));
    let times: Vec<i64> = all.iter().map(|r| parse_rfc3339_micros(r["time"].as_str().unwrap()).unwrap()).collect();
    assert!(times.windows(2).all(|w| w[0] < w[1]), "{times:?}");
    for (cluster, dir) in [("production", &prod), ("staging", &staging)] {
        let shown: Vec<(u64, &str)> = all
            .iter()
            .filter(|r| r["cluster"] == cluster)
            .map(|r| (r["seq"].as_u64().unwrap(), r["name"].as_str().unwrap()))
            .collect();
        let written = records(dir);
        let want: Vec<(u64, &str)> = written.iter().map(|r| (r.seq, r.entry.name.as_str())).collect();
        assert_eq!(shown, want, "{cluster}");
    }

    // the table has a CLUSTER column first, and the same order
    let out = gitgate(&["audit", "query", "--fleet"], &paths);
    assert!(out.status.success(), "{}", stderr(&out));
    let table = stdout(&out);
    let mut lines = table.lines();
    let header: Vec<&str> = lines.next().unwrap().split_whitespace().take(3).collect();
    assert_eq!(header, ["CLUSTER", "TIME", "SEQ"], "{table}");
    let firsts: Vec<&str> = lines.map(|l| l.split_whitespace().next().unwrap()).collect();
    assert_eq!(firsts, clusters, "{table}");

    // bare paths: the cluster is the one the records name
    let bare = query_json(&[], &[prod.display().to_string(), staging.display().to_string()]);
    assert_eq!(bare, all);
}

#[test]
fn query_fleet_filters_apply_across_the_chains() {
    let root = tempfile::tempdir().unwrap();
    let (prod, staging) = two_clusters(root.path(), 8);
    let paths = [named("production", &prod), named("staging", &staging)];

    let denied = query_json(&["--decision", "deny"], &paths);
    assert_eq!(denied.len(), 4, "records 4 and 8 of each cluster");
    assert!(denied.iter().all(|r| r["decision"] == "deny" && r["user"] == "alice"));
    let mut clusters: Vec<&str> = denied.iter().map(|r| r["cluster"].as_str().unwrap()).collect();
    clusters.dedup();
    assert_eq!(clusters, ["production", "staging", "production", "staging"]);

    let applies = query_json(&["--event", "apply"], &paths);
    assert_eq!(applies.len(), 8);
    assert!(applies.iter().all(|r| r["event"] == "apply"));

    let one = query_json(&["--object", "web/Deployment/staging-3"], &paths);
    assert_eq!(one.len(), 1);
    assert_eq!((one[0]["cluster"].as_str(), one[0]["seq"].as_u64()), (Some("staging"), Some(3)));

    let by_commit = query_json(&["--commit", &format!("{:040x}", 5)], &paths);
    let got: Vec<(&str, &str)> =
        by_commit.iter().map(|r| (r["cluster"].as_str().unwrap(), r["name"].as_str().unwrap())).collect();
    assert_eq!(got, [("production", "production-5"), ("staging", "staging-5")]);
}

#[test]
fn verify_fleet_checks_each_chain_and_names_the_broken_one() {
    let root = tempfile::tempdir().unwrap();
    let (prod, staging) = two_clusters(root.path(), 5);
    let paths = [named("production", &prod), named("staging", &staging)];
    let key = root.path().join("production/checkpoint.pk8");

    let ok = gitgate(&["audit", "verify", "--fleet"], &paths);
    assert_eq!(ok.status.code(), Some(0), "{}{}", stdout(&ok), stderr(&ok));
    let text = stdout(&ok);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    for (line, cluster) in lines.iter().zip(["production", "staging"]) {
        let dir = root.path().join(cluster);
        let last = records(&dir).pop().unwrap();
        assert!(line.starts_with(&format!("{cluster}: OK: 5 records")), "{text}");
        assert!(line.contains(&format!("last record 5 at {}", last.time)), "{text}");
    }

    // tamper with record 3 of staging: staging is broken there, production is fine
    let log = staging.join("audit.jsonl");
    let mut bytes = std::fs::read_to_string(&log).unwrap();
    bytes = bytes.replacen("staging-3", "staging-9", 1);
    std::fs::write(&log, bytes).unwrap();
    let bad = gitgate(&["audit", "verify", "--fleet"], &paths);
    assert_eq!(bad.status.code(), Some(1), "{}", stdout(&bad));
    let text = stdout(&bad);
    assert!(text.lines().any(|l| l.starts_with("production: OK: 5 records")), "{text}");
    assert!(text.lines().any(|l| l.starts_with("staging: BROKEN: record 3")), "{text}");

    // --key applies to every chain: production's key does not sign staging's checkpoints
    let pinned =
        Command::new(BIN).args(["audit", "verify", "--fleet", "--key"]).arg(&key).args(&paths).output().unwrap();
    assert_eq!(pinned.status.code(), Some(1));
    let text = stdout(&pinned);
    assert!(text.lines().any(|l| l.starts_with("production: OK: 5 records")), "{text}");
    assert!(!text.contains("key not pinned"), "{text}");
    assert!(text.lines().any(|l| l.starts_with("staging: BAD CHECKPOINT")), "{text}");
}

#[test]
fn two_chains_without_fleet_are_verified_and_queried_as_one_list_as_before() {
    let root = tempfile::tempdir().unwrap();
    let (prod, staging) = two_clusters(root.path(), 3);
    let paths = [prod.display().to_string(), staging.display().to_string()];
    let out = gitgate(&["audit", "verify"], &paths);
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out);
    assert!(text.lines().any(|l| l.starts_with("BROKEN: record ")), "{text}");
    assert!(!text.contains("production:") && !text.contains("staging:"), "{text}");

    let out = gitgate(&["audit", "query"], &paths);
    assert!(out.status.success(), "{}", stderr(&out));
    let table = stdout(&out);
    assert!(table.starts_with("TIME "), "{table}");
    assert_eq!(table.lines().count(), 7, "{table}");
}

#[test]
fn a_record_of_another_cluster_is_refused_naming_both() {
    let root = tempfile::tempdir().unwrap();
    let (prod, staging) = two_clusters(root.path(), 2);
    // production's log given as staging's (and the other way round)
    let swapped = [named("staging", &prod), named("production", &staging)];
    let out = gitgate(&["audit", "query", "--fleet"], &swapped);
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty(), "nothing is shown relabelled: {}", stdout(&out));
    let err = stderr(&out);
    assert!(err.contains("\"staging\"") && err.contains("\"production\"") && err.contains("record 1"), "{err}");

    let out = gitgate(&["audit", "verify", "--fleet"], &swapped);
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out);
    assert!(
        text.lines().any(|l| l.starts_with("staging: BROKEN: record 1")
            && l.contains("names cluster \"production\"")
            && l.contains("given as cluster \"staging\"")),
        "{text}"
    );
}

#[test]
fn records_without_a_cluster_still_verify_and_show_their_chains_name() {
    // written by gitgate before records named their cluster
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/audit/pre-cluster");
    let out = gitgate(&["audit", "verify"], &[fixture.display().to_string()]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    assert!(stdout(&out).starts_with("OK: 4 records"), "{}", stdout(&out));
    let out = gitgate(&["audit", "verify", "--fleet"], &[fixture.display().to_string()]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    assert!(stdout(&out).starts_with("pre-cluster: OK: 4 records"), "{}", stdout(&out));

    // a log written now without a cluster: no "cluster" member, verifies as before
    let root = tempfile::tempdir().unwrap();
    let old = root.path().join("old");
    let log = AuditLog::open(options(&old, None)).unwrap();
    for i in 1..=3 {
        log.append(&entry("old", i)).unwrap();
    }
    log.close().unwrap();
    assert!(!std::fs::read_to_string(old.join("audit.jsonl")).unwrap().contains("\"cluster\""));
    let report = verify_paths(std::slice::from_ref(&old), &[], Some(&old.join("checkpoint.pk8"))).unwrap();
    assert!(report.ok(), "{:?}", report.verdict);
    assert_eq!(report.verdict.unwrap().records, 3);

    // the spoke is upgraded: the chain goes on with records naming the cluster
    let log = AuditLog::open(options(&old, Some("edge"))).unwrap();
    log.append(&entry("old", 4)).unwrap();
    log.close().unwrap();
    let out = gitgate(&["audit", "verify", "--fleet"], &[named("edge", &old), fixture.display().to_string()]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    let text = stdout(&out);
    assert!(text.lines().any(|l| l.starts_with("edge: OK: 4 records")), "{text}");
    assert!(text.lines().any(|l| l.starts_with("pre-cluster: OK: 4 records")), "{text}");

    // unnamed records show the NAME given, else the cluster the chain's
    // records name, else the directory's name
    let all = query_json(&[], &[old.display().to_string(), named("legacy", &fixture)]);
    let count = |c: &str| all.iter().filter(|r| r["cluster"] == c).count();
    assert_eq!((count("edge"), count("legacy"), all.len()), (4, 4, 8));
    let all = query_json(&[], &[fixture.display().to_string()]);
    assert!(all.iter().all(|r| r["cluster"] == "pre-cluster"), "{all:?}");
}

#[test]
fn bad_chain_arguments_are_clear_errors() {
    let root = tempfile::tempdir().unwrap();
    let (prod, staging) = two_clusters(root.path(), 1);
    let empty = root.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let cases: Vec<(Vec<String>, &str)> = vec![
        (vec![format!("={}", prod.display())], "cluster name before '=' is empty"),
        (vec!["production=".into()], "path after '=' is empty"),
        (vec![named("production", &root.path().join("nowhere"))], "does not exist"),
        (vec![named("production", &prod), named("production", &staging)], "is given twice"),
        (vec![named("edge", &empty)], "holds no audit log"),
        (vec![named("production", &prod), named("staging", &prod)], "is in two chains"),
        (vec![], "--fleet needs one chain per cluster"),
    ];
    for (paths, want) in cases {
        for cmd in ["query", "verify"] {
            if paths.is_empty() && cmd == "verify" {
                continue; // clap requires a positional
            }
            let out = gitgate(&["audit", cmd, "--fleet"], &paths);
            assert_eq!(out.status.code(), Some(1), "{cmd} {paths:?}");
            let err = stderr(&out);
            assert!(err.starts_with("error: ") && err.contains(want), "{cmd} {paths:?}: {err}");
            assert!(!err.contains("panicked"), "{err}");
        }
    }
}

/// `serve --cluster NAME` writes NAME into its audit records.
#[test]
fn a_spoke_names_its_cluster_in_every_record() {
    support::server::install_crypto();
    let work = tempfile::tempdir().unwrap();
    let serve = support::server::ServeProcess::spawn(BIN, work.path(), &["--cluster", "in-cluster"]);
    serve.wait_for_log("desired set updated", Duration::from_secs(30));
    let fixture = support::server::fixtures_dir().join("validate-create-deployment.json");
    let out = support::server::post_review(&serve.ca, serve.addr, &fixture);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(serve.terminate(Duration::from_secs(20)).success());

    let dir = work.path().join("gitgate-data/audit");
    let written = records(&dir);
    let sent: serde_json::Value = serde_json::from_slice(&std::fs::read(&fixture).unwrap()).unwrap();
    assert!(written.iter().any(|r| sent["request"]["uid"] == r.entry.uid.as_str()), "the admission was recorded");
    assert!(written.iter().all(|r| r.cluster.as_deref() == Some("in-cluster")), "{written:?}");
    let out = gitgate(&["audit", "verify", "--fleet"], &[dir.display().to_string()]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    assert!(stdout(&out).starts_with(&format!("in-cluster: OK: {} records", written.len())), "{}", stdout(&out));
}
