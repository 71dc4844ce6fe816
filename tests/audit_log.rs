//! The audit log file: tampering of every kind is caught by `verify` at the
//! right record, rotation keeps the chain, parallel appends make one
//! gap-free chain, and a torn tail from a crash is recovered.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use gitgate::audit::chain::{Break, Problem};
use gitgate::audit::log::{Options, rotated_files};
use gitgate::audit::verify::verify_paths;
use gitgate::audit::{AuditLog, CommitRef, Entry, EventKind, Outcome};

fn entry(i: u64) -> Entry {
    let mut e = Entry::new(EventKind::Apply, Outcome::Done);
    e.operation = "APPLY".into();
    e.group = "apps".into();
    e.version = "v1".into();
    e.kind = "Deployment".into();
    e.namespace = "prod".into();
    e.name = format!("web-{i}");
    e.app = "web".into();
    e.commit = Some(CommitRef { id: format!("{i:040x}"), author: "A <a@x>".into(), subject: "scale".into() });
    e
}

fn options(dir: &Path) -> Options {
    let mut o = Options::new(dir.join("audit.jsonl")).with_checkpoints(dir.join("checkpoint.pk8"));
    o.replica = "test-0".into();
    o
}

/// A closed log of `n` records, with a final signed checkpoint.
fn log_with(dir: &Path, n: u64) -> PathBuf {
    let log = AuditLog::open(options(dir)).unwrap();
    for i in 1..=n {
        assert_eq!(log.append(&entry(i)).unwrap().seq, i);
    }
    log.close().unwrap();
    dir.join("audit.jsonl")
}

fn verdict(dir: &Path) -> Result<(), Break> {
    let key = dir.join("checkpoint.pk8");
    let report = verify_paths(&[dir.to_owned()], &[], Some(&key)).unwrap();
    assert!(report.bad_checkpoints.is_empty(), "{:?}", report.bad_checkpoints);
    report.verdict.map(|_| ())
}

fn lines(path: &Path) -> Vec<Vec<u8>> {
    std::fs::read(path).unwrap().split_inclusive(|b| *b == b'\n').map(<[u8]>::to_vec).collect()
}

fn write_lines(path: &Path, lines: &[Vec<u8>]) {
    std::fs::write(path, lines.concat()).unwrap();
}

#[test]
fn an_untouched_log_verifies_with_its_checkpoints() {
    let dir = tempfile::tempdir().unwrap();
    log_with(dir.path(), 10);
    let report = verify_paths(&[dir.path().to_owned()], &[], Some(&dir.path().join("checkpoint.pk8"))).unwrap();
    let s = report.verdict.unwrap();
    assert_eq!((s.records, s.first, s.last.map(|h| h.seq)), (10, Some(1), Some(10)));
    assert!(s.checkpoints_matched >= 1, "close() writes a checkpoint of the head");
}

#[test]
fn a_flipped_byte_is_caught_at_its_record() {
    let dir = tempfile::tempdir().unwrap();
    let path = log_with(dir.path(), 10);
    let mut ls = lines(&path);
    // flip one bit in the middle of record 6: in its name, then in its hash
    let mid = ls[5].len() / 2;
    ls[5][mid] ^= 0x01;
    write_lines(&path, &ls);
    let b = verdict(dir.path()).unwrap_err();
    assert_eq!(b.seq, Some(6), "{b}");
    assert_eq!(b.at.as_ref().unwrap().line, 6);

    ls[5][mid] ^= 0x01;
    let at = ls[5].len() - 10; // inside the "hash" value
    ls[5][at] = if ls[5][at] == b'0' { b'1' } else { b'0' };
    write_lines(&path, &ls);
    let b = verdict(dir.path()).unwrap_err();
    assert_eq!(b.seq, Some(6), "{b}");
    assert!(matches!(b.problem, Problem::Line(_)), "{b}");
}

#[test]
fn a_deleted_record_is_caught_at_its_place() {
    let dir = tempfile::tempdir().unwrap();
    let path = log_with(dir.path(), 10);
    let mut ls = lines(&path);
    ls.remove(3); // record 4
    write_lines(&path, &ls);
    let b = verdict(dir.path()).unwrap_err();
    assert_eq!(b.seq, Some(4), "{b}");
    assert_eq!(b.problem, Problem::Missing { found: 5 });
    assert!(b.to_string().contains("record 4"), "{b}");
}

#[test]
fn a_reordered_pair_is_caught_at_the_first_of_them() {
    let dir = tempfile::tempdir().unwrap();
    let path = log_with(dir.path(), 10);
    let mut ls = lines(&path);
    ls.swap(6, 7); // records 7 and 8
    write_lines(&path, &ls);
    let b = verdict(dir.path()).unwrap_err();
    assert_eq!(b.seq, Some(7), "{b}");
    assert_eq!(b.problem, Problem::Missing { found: 8 });
}

#[test]
fn a_truncated_tail_is_caught_by_the_torn_line_or_by_the_checkpoint() {
    // cut in the middle of the last line: a torn record 10
    let dir = tempfile::tempdir().unwrap();
    let path = log_with(dir.path(), 10);
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() - 30]).unwrap();
    let b = verdict(dir.path()).unwrap_err();
    assert_eq!(b.seq, Some(10), "{b}");

    // cut three whole records: every remaining line is fine, but the signed
    // checkpoint of record 10 shows that 8, 9 and 10 are gone
    let dir = tempfile::tempdir().unwrap();
    let path = log_with(dir.path(), 10);
    let ls = lines(&path);
    write_lines(&path, &ls[..7]);
    let b = verdict(dir.path()).unwrap_err();
    assert_eq!(b.seq, Some(8), "{b}");
    assert!(matches!(b.problem, Problem::TailMissing { checkpoint_seq: 10, .. }), "{b}");
}

#[test]
fn a_rewritten_tail_resigned_with_another_key_is_caught() {
    let dir = tempfile::tempdir().unwrap();
    let path = log_with(dir.path(), 10);
    let original_key = dir.path().join("checkpoint.pk8");
    let pinned = dir.path().join("pinned.pk8");
    std::fs::rename(&original_key, &pinned).unwrap();
    // a forger keeps records 1..=5 and writes a new 6..=8 with a new key
    let ls = lines(&path);
    write_lines(&path, &ls[..5]);
    std::fs::remove_file(dir.path().join("audit.checkpoints.jsonl")).unwrap();
    let log = AuditLog::open(options(dir.path())).unwrap();
    for i in 6..=8 {
        log.append(&entry(100 + i)).unwrap();
    }
    log.close().unwrap();
    let report = verify_paths(&[dir.path().to_owned()], &[], Some(&pinned)).unwrap();
    assert!(report.verdict.is_ok(), "the chain itself is consistent");
    assert!(!report.bad_checkpoints.is_empty(), "but its checkpoints are not signed by the pinned key");
    assert!(!report.ok());
}

#[test]
fn rotation_keeps_one_chain_across_files_and_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let mut o = options(dir.path());
    o.rotate_bytes = 4096;
    let log = AuditLog::open(o).unwrap();
    for i in 1..=60 {
        log.append(&entry(i)).unwrap();
    }
    log.close().unwrap();
    drop(log);
    let rotated = rotated_files(&dir.path().join("audit.jsonl"));
    assert!(rotated.len() >= 3, "{rotated:?}");
    assert!(rotated[0].file_name().unwrap().to_string_lossy().starts_with("audit-00000000000000000001"));
    for f in &rotated {
        assert!(std::fs::metadata(f).unwrap().len() <= 4096, "{}", f.display());
    }

    // a restart continues the same chain
    let mut o = options(dir.path());
    o.rotate_bytes = 4096;
    let log = AuditLog::open(o).unwrap();
    assert_eq!(log.head().unwrap().seq, 60);
    assert_eq!(log.append(&entry(61)).unwrap().seq, 61);
    log.close().unwrap();
    let report = verify_paths(&[dir.path().to_owned()], &[], Some(&dir.path().join("checkpoint.pk8"))).unwrap();
    let s = report.verdict.unwrap();
    assert_eq!((s.records, s.first, s.last.map(|h| h.seq)), (61, Some(1), Some(61)));

    // deleting a whole rotated file in the middle breaks the chain there
    let gone = &rotated_files(&dir.path().join("audit.jsonl"))[1];
    let first_gone = gitgate::audit::chain::first_seq(gone).unwrap();
    std::fs::remove_file(gone).unwrap();
    let b = verdict(dir.path()).unwrap_err();
    assert_eq!(b.seq, Some(first_gone), "{b}");
}

#[test]
fn parallel_appends_make_one_gap_free_chain() {
    let dir = tempfile::tempdir().unwrap();
    let mut o = options(dir.path());
    o.rotate_bytes = 256 * 1024; // rotate under contention too
    let log = Arc::new(AuditLog::open(o).unwrap());
    let threads: Vec<_> = (0..16u64)
        .map(|t| {
            let log = log.clone();
            std::thread::spawn(move || {
                (0..250u64).map(|i| log.append(&entry(t * 1000 + i)).unwrap().seq).collect::<Vec<_>>()
            })
        })
        .collect();
    let mut seqs: Vec<u64> = threads.into_iter().flat_map(|h| h.join().unwrap()).collect();
    log.close().unwrap();
    seqs.sort_unstable();
    assert_eq!(seqs, (1..=4000).collect::<Vec<_>>(), "every append got its own sequence number");

    let report = verify_paths(&[dir.path().to_owned()], &[], Some(&dir.path().join("checkpoint.pk8"))).unwrap();
    let s = report.verdict.unwrap();
    assert_eq!((s.records, s.last.map(|h| h.seq)), (4000, Some(4000)));
    let found = gitgate::audit::query::run(
        &gitgate::audit::verify::expand(&[dir.path().to_owned()]).unwrap(),
        &Default::default(),
    )
    .unwrap();
    let names: BTreeSet<String> = found.records.iter().map(|r| r.entry.name.clone()).collect();
    assert_eq!(names.len(), 4000, "no record lost or duplicated");
}

#[test]
fn a_torn_tail_from_a_crash_is_set_aside_and_the_chain_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let path = log_with(dir.path(), 5);
    let mut bytes = std::fs::read(&path).unwrap();
    let good_len = bytes.len();
    bytes.extend_from_slice(br#"{"seq":6,"time":"2026-11-21T00:00:00.000000Z","replica":"test-0","prev":"ab"#);
    std::fs::write(&path, &bytes).unwrap();

    let log = AuditLog::open(options(dir.path())).unwrap();
    // record 6 says what happened; the next producer gets 7
    assert_eq!(log.head().unwrap().seq, 6);
    assert_eq!(log.append(&entry(7)).unwrap().seq, 7);
    log.close().unwrap();

    let torn: Vec<PathBuf> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().contains(".torn-"))
        .collect();
    assert_eq!(torn.len(), 1, "the torn bytes are kept");
    assert_eq!(std::fs::read(&torn[0]).unwrap(), bytes[good_len..]);
    verdict(dir.path()).unwrap();
    let found = gitgate::audit::query::run(&[path], &Default::default()).unwrap();
    let recovered = &found.records[5];
    assert_eq!(recovered.entry.event, EventKind::LogRecovered);
    assert!(recovered.entry.reasons[0].contains("after record 5"), "{:?}", recovered.entry.reasons);
}

#[test]
fn records_become_durable_and_checkpointed_in_the_background() {
    let dir = tempfile::tempdir().unwrap();
    let mut o = options(dir.path());
    if let Some(c) = o.checkpoints.as_mut() {
        c.every_records = 5;
    }
    let log = AuditLog::open(o).unwrap();
    for i in 1..=12 {
        log.append(&entry(i)).unwrap();
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while log.durable().map(|h| h.seq) != Some(12) {
        assert!(std::time::Instant::now() < deadline, "group commit never ran");
        std::thread::sleep(Duration::from_millis(5));
    }
    while std::fs::read_to_string(dir.path().join("audit.checkpoints.jsonl")).unwrap_or_default().lines().count() < 1 {
        assert!(std::time::Instant::now() < deadline, "no checkpoint written");
        std::thread::sleep(Duration::from_millis(5));
    }
    drop(log);
}

#[test]
fn the_verify_command_names_the_broken_record_and_exits_non_zero() {
    let dir = tempfile::tempdir().unwrap();
    let path = log_with(dir.path(), 8);
    let bin = env!("CARGO_BIN_EXE_gitgate");
    let key = dir.path().join("checkpoint.pk8");
    let ok = Command::new(bin).args(["audit", "verify"]).arg(&path).arg("--key").arg(&key).output().unwrap();
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stdout));
    assert!(
        String::from_utf8_lossy(&ok.stdout).starts_with("OK: 8 records"),
        "{}",
        String::from_utf8_lossy(&ok.stdout)
    );

    let mut ls = lines(&path);
    ls.remove(2);
    write_lines(&path, &ls);
    let bad = Command::new(bin).args(["audit", "verify"]).arg(&path).arg("--key").arg(&key).output().unwrap();
    assert_eq!(bad.status.code(), Some(1));
    let out = String::from_utf8_lossy(&bad.stdout);
    assert!(out.contains("BROKEN: record 3"), "{out}");
}
