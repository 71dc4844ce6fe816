//! The hash chain, as pure functions over bytes.
//!
//! A record is one JSON line whose last member is `"hash"`:
//!
//! ```text
//! {"seq":7,"time":"…","replica":"…","cluster":"…","prev":"<hash of record 6>",…entry…,"hash":"<64 hex>"}
//! ```
//!
//! `cluster` is there only in records of a log opened for a cluster (a
//! fleet spoke); records without it hash exactly as they always did.
//!
//! The record's hash is the lowercase hex SHA-256 of its canonical JSON
//! with its own `hash` member excluded, which is exactly the line with the
//! trailing `,"hash":"…"` removed: the writer is the canonicalizer and the
//! verifier hashes the stored bytes, so no re-serialization (key order,
//! number formats, escapes) can disagree with what was written. `prev`
//! chains each record to the one before it; the first record of a log has
//! 64 zeros there.

use std::collections::BTreeMap;
use std::fmt;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use ring::digest;
use serde::Deserialize;

use super::record::{Entry, hex};

/// `prev` of the first record of a log.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";
const HASH_MEMBER: &[u8] = b",\"hash\":\"";
/// `,"hash":"` + 64 hex digits + `"}`.
pub const HASH_SUFFIX_LEN: usize = HASH_MEMBER.len() + 64 + 2;

/// The chain head: the last record's sequence number and hash.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Head {
    pub seq: u64,
    pub hash: String,
}

/// Writes one sealed record line (with its trailing newline) into `buf`
/// and returns its hash. `cluster` (a fleet spoke's name) is written after
/// `replica` and covered by the hash; `None` writes no member at all.
pub fn seal(
    buf: &mut Vec<u8>,
    seq: u64,
    time: &str,
    replica: &str,
    cluster: Option<&str>,
    prev: &str,
    entry: &Entry,
) -> Result<String, serde_json::Error> {
    use std::io::Write as _;
    buf.clear();
    // Writing into a Vec cannot fail; serde_json reports its own errors.
    let _ = write!(buf, "{{\"seq\":{seq},\"time\":");
    serde_json::to_writer(&mut *buf, time)?;
    buf.extend_from_slice(b",\"replica\":");
    serde_json::to_writer(&mut *buf, replica)?;
    if let Some(cluster) = cluster {
        buf.extend_from_slice(b",\"cluster\":");
        serde_json::to_writer(&mut *buf, cluster)?;
    }
    buf.extend_from_slice(b",\"prev\":");
    serde_json::to_writer(&mut *buf, prev)?;
    buf.push(b',');
    let entry_start = buf.len();
    serde_json::to_writer(&mut *buf, entry)?;
    // The entry is a non-empty object (it always has `event`): drop its `{`.
    buf.remove(entry_start);
    let hash = hex(digest::digest(&digest::SHA256, buf).as_ref());
    buf.pop(); // the closing `}`
    buf.extend_from_slice(HASH_MEMBER);
    buf.extend_from_slice(hash.as_bytes());
    buf.extend_from_slice(b"\"}\n");
    Ok(hash)
}

/// What is wrong with one line on its own.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LineProblem {
    /// The line has no newline: a write that did not finish.
    Torn,
    /// The line does not end with a well-formed `"hash"` member.
    NoHash,
    /// The stored hash is not the hash of the line's content.
    HashMismatch { stored: String, computed: String },
    /// The line is not a record (bad JSON, missing `seq` or `prev`).
    Malformed(String),
}

impl fmt::Display for LineProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LineProblem::Torn => write!(f, "the line is incomplete (no newline): a torn write"),
            LineProblem::NoHash => write!(f, "the line does not end with a valid \"hash\" member"),
            LineProblem::HashMismatch { stored, computed } => {
                write!(f, "the content does not match its hash (stored {stored}, content hashes to {computed})")
            }
            LineProblem::Malformed(e) => write!(f, "the line is not a valid record: {e}"),
        }
    }
}

/// The chain fields of a line that checked out on its own.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Opened {
    pub seq: u64,
    pub prev: String,
    pub hash: String,
}

#[derive(Deserialize)]
struct ChainFields<'a> {
    seq: u64,
    #[serde(borrow)]
    prev: &'a str,
}

/// Checks one line (without its newline) against its own hash and reads
/// its chain fields.
pub fn open_line(line: &[u8]) -> Result<Opened, LineProblem> {
    let Some(body_len) = line.len().checked_sub(HASH_SUFFIX_LEN) else {
        return Err(LineProblem::NoHash);
    };
    let (body, suffix) = line.split_at(body_len);
    let Some(stored) = suffix.strip_prefix(HASH_MEMBER).and_then(|s| s.strip_suffix(b"\"}")) else {
        return Err(LineProblem::NoHash);
    };
    if !stored.iter().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f')) {
        return Err(LineProblem::NoHash);
    }
    let mut ctx = digest::Context::new(&digest::SHA256);
    ctx.update(body);
    ctx.update(b"}");
    let computed = hex(ctx.finish().as_ref());
    let stored = String::from_utf8_lossy(stored).into_owned();
    if stored != computed {
        return Err(LineProblem::HashMismatch { stored, computed });
    }
    let fields: ChainFields<'_> = serde_json::from_slice(line).map_err(|e| LineProblem::Malformed(e.to_string()))?;
    if fields.prev.len() != 64 {
        return Err(LineProblem::Malformed("prev is not a sha256 hex digest".into()));
    }
    // The next record's number must exist: `seq + 1` is computed from it.
    if fields.seq == u64::MAX {
        return Err(LineProblem::Malformed("seq is out of range".into()));
    }
    Ok(Opened { seq: fields.seq, prev: fields.prev.to_owned(), hash: stored })
}

/// Where a line is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Location {
    pub file: PathBuf,
    /// 1-based line number in the file.
    pub line: u64,
}

/// What breaks the chain at a record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Problem {
    Line(LineProblem),
    /// The record expected here is absent; a later one is in its place.
    Missing {
        found: u64,
    },
    /// A record that belongs earlier is in this place.
    OutOfOrder {
        found: u64,
    },
    /// `prev` is not the hash of the record before.
    PrevMismatch {
        prev: String,
        expected: String,
    },
    /// Record 1 does not start from the genesis hash.
    NotGenesis,
    /// A signed checkpoint names a different hash for this record.
    CheckpointMismatch {
        signed: String,
        found: String,
    },
    /// A signed checkpoint covers records the files do not hold: the tail
    /// was cut.
    TailMissing {
        checkpoint_seq: u64,
        checkpoint_time: String,
    },
    /// The record names another cluster than its chain (fleet checks
    /// only): `expected` is the NAME the chain was given as (`given`) or
    /// the cluster its earlier records name.
    WrongCluster {
        found: String,
        expected: String,
        given: bool,
    },
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::Line(p) => p.fmt(f),
            Problem::Missing { found } => write!(f, "it is missing: record {found} is in its place"),
            Problem::OutOfOrder { found } => write!(f, "record {found} is in its place (out of order)"),
            Problem::PrevMismatch { prev, expected } => {
                write!(f, "its prev hash {prev} is not the hash of the record before ({expected})")
            }
            Problem::NotGenesis => write!(f, "record 1 does not start from the genesis hash"),
            Problem::CheckpointMismatch { signed, found } => {
                write!(f, "a signed checkpoint says its hash is {signed}, the log has {found}")
            }
            Problem::TailMissing { checkpoint_seq, checkpoint_time } => write!(
                f,
                "it is missing: the log ends before it, but a checkpoint signed at {checkpoint_time} covers records up to {checkpoint_seq} (the tail was cut)"
            ),
            Problem::WrongCluster { found, expected, given: true } => write!(
                f,
                "it names cluster {found:?}, but its chain was given as cluster {expected:?} (are the logs mixed up?)"
            ),
            Problem::WrongCluster { found, expected, given: false } => write!(
                f,
                "it names cluster {found:?}, but the records before it name cluster {expected:?} (one chain must be one cluster's)"
            ),
        }
    }
}

/// The first broken record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Break {
    /// The record's sequence number (the one expected at that place);
    /// `None` only when the very first line read is unreadable.
    pub seq: Option<u64>,
    pub at: Option<Location>,
    pub problem: Problem,
}

impl fmt::Display for Break {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.seq {
            Some(seq) => write!(f, "record {seq}")?,
            None => write!(f, "the first record")?,
        }
        if let Some(at) = &self.at {
            write!(f, " ({}:{})", at.file.display(), at.line)?;
        }
        write!(f, " is broken: {}", self.problem)
    }
}

/// A checkpoint the chain must agree with (its signature already checked).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Anchor {
    pub hash: String,
    pub time: String,
}

/// What a successful verification saw.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    pub records: u64,
    pub first: Option<u64>,
    pub last: Option<Head>,
    /// Checkpoints matched against a record.
    pub checkpoints_matched: u64,
    /// Checkpoints older than the first record given (earlier files absent).
    pub checkpoints_before: u64,
    /// The last record's time (read only when the verifier checks clusters,
    /// see [`Verifier::with_cluster_rule`]).
    pub last_time: Option<String>,
    /// The cluster the records name (only when the verifier checks
    /// clusters; `None` when no record names one).
    pub cluster: Option<String>,
}

/// Which cluster the records of one fleet chain must name. A record
/// without a `cluster` member (written before spokes named themselves)
/// always passes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClusterRule {
    expected: Option<String>,
    given: bool,
}

impl ClusterRule {
    /// Every record that names a cluster must name `name` (the NAME the
    /// chain was given as).
    pub fn given(name: impl Into<String>) -> ClusterRule {
        ClusterRule { expected: Some(name.into()), given: true }
    }

    /// Every record that names a cluster must name the same one: the
    /// first one found.
    pub fn consistent() -> ClusterRule {
        ClusterRule::default()
    }

    /// Checks one record's `cluster`.
    pub fn check(&mut self, cluster: Option<&str>) -> Result<(), Problem> {
        let Some(found) = cluster else { return Ok(()) };
        match &self.expected {
            Some(expected) if expected != found => {
                Err(Problem::WrongCluster { found: found.to_owned(), expected: expected.clone(), given: self.given })
            }
            Some(_) => Ok(()),
            None => {
                self.expected = Some(found.to_owned());
                Ok(())
            }
        }
    }

    /// The cluster the chain was given as, or that its records name so far.
    pub fn cluster(&self) -> Option<&str> {
        self.expected.as_deref()
    }
}

/// The members a fleet check reads besides the chain fields.
#[derive(Deserialize)]
struct LabelFields<'a> {
    #[serde(default, borrow)]
    time: Option<std::borrow::Cow<'a, str>>,
    #[serde(default, borrow)]
    cluster: Option<std::borrow::Cow<'a, str>>,
}

/// Walks records in order and stops at the first break.
#[derive(Default)]
pub struct Verifier {
    anchors: BTreeMap<u64, Anchor>,
    summary: Summary,
    clusters: Option<ClusterRule>,
}

impl Verifier {
    pub fn new(anchors: BTreeMap<u64, Anchor>) -> Self {
        Verifier { anchors, summary: Summary::default(), clusters: None }
    }

    /// Also checks every record's `cluster` against `rule` (a record naming
    /// another cluster breaks the chain there) and notes the last record's
    /// time and the cluster in the [`Summary`]: `audit verify --fleet`.
    pub fn with_cluster_rule(mut self, rule: ClusterRule) -> Self {
        self.clusters = Some(rule);
        self
    }

    fn expected(&self) -> Option<u64> {
        self.summary.last.as_ref().map(|h| h.seq + 1)
    }

    /// Feeds one line; `terminated` says whether it ended with a newline.
    pub fn feed(&mut self, line: &[u8], terminated: bool, at: Location) -> Result<(), Break> {
        let expected = self.expected();
        let fail = |problem| Break { seq: expected, at: Some(at.clone()), problem };
        if !terminated {
            return Err(fail(Problem::Line(LineProblem::Torn)));
        }
        let opened = open_line(line).map_err(|p| fail(Problem::Line(p)))?;
        match (expected, &self.summary.last) {
            (Some(want), Some(last)) => {
                if opened.seq > want {
                    return Err(fail(Problem::Missing { found: opened.seq }));
                }
                if opened.seq < want {
                    return Err(fail(Problem::OutOfOrder { found: opened.seq }));
                }
                if opened.prev != last.hash {
                    return Err(fail(Problem::PrevMismatch { prev: opened.prev, expected: last.hash.clone() }));
                }
            }
            _ => {
                if opened.seq == 1 && opened.prev != GENESIS {
                    return Err(Break { seq: Some(1), at: Some(at), problem: Problem::NotGenesis });
                }
                if opened.seq == 0 {
                    return Err(Break {
                        seq: Some(0),
                        at: Some(at),
                        problem: Problem::Line(LineProblem::Malformed("sequence numbers start at 1".into())),
                    });
                }
                self.summary.first = Some(opened.seq);
            }
        }
        if let Some(anchor) = self.anchors.get(&opened.seq)
            && anchor.hash != opened.hash
        {
            return Err(Break {
                seq: Some(opened.seq),
                at: Some(at),
                problem: Problem::CheckpointMismatch { signed: anchor.hash.clone(), found: opened.hash },
            });
        }
        if let Some(rule) = &mut self.clusters {
            let label: LabelFields<'_> = serde_json::from_slice(line).map_err(|e| Break {
                seq: Some(opened.seq),
                at: Some(at.clone()),
                problem: Problem::Line(LineProblem::Malformed(e.to_string())),
            })?;
            rule.check(label.cluster.as_deref()).map_err(|problem| Break {
                seq: Some(opened.seq),
                at: Some(at.clone()),
                problem,
            })?;
            let last_time = self.summary.last_time.get_or_insert_with(String::new);
            last_time.clear();
            last_time.push_str(label.time.as_deref().unwrap_or_default());
        }
        self.summary.records += 1;
        self.summary.last = Some(Head { seq: opened.seq, hash: opened.hash });
        Ok(())
    }

    /// Ends the walk: a checkpoint past the last record means a cut tail.
    pub fn finish(mut self) -> Result<Summary, Break> {
        let first = self.summary.first.unwrap_or(1);
        let last = self.summary.last.as_ref().map_or(0, |h| h.seq);
        if let Some((&seq, anchor)) = self.anchors.range(last + 1..).next_back() {
            return Err(Break {
                seq: Some(last + 1),
                at: None,
                problem: Problem::TailMissing { checkpoint_seq: seq, checkpoint_time: anchor.time.clone() },
            });
        }
        self.summary.cluster = self.clusters.as_ref().and_then(|r| r.cluster().map(str::to_owned));
        self.summary.checkpoints_before = self.anchors.range(..first).count() as u64;
        self.summary.checkpoints_matched = self.anchors.range(first..=last).count() as u64;
        Ok(self.summary)
    }
}

/// Why files could not be verified (as opposed to a broken chain).
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("failed to read audit log {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The outcome of verifying files: a summary, or the first break.
pub type Verdict = Result<Summary, Break>;

/// Verifies `files` as one chain, in the order given.
pub fn verify_files(files: &[PathBuf], anchors: BTreeMap<u64, Anchor>) -> Result<Verdict, ReadError> {
    verify_files_with(files, Verifier::new(anchors))
}

/// Verifies `files` as one chain, in the order given, with `v` (e.g. one
/// that also checks clusters).
pub fn verify_files_with(files: &[PathBuf], mut v: Verifier) -> Result<Verdict, ReadError> {
    let mut line = Vec::with_capacity(4096);
    for path in files {
        let io = |source| ReadError::Io { path: path.clone(), source };
        let mut reader = BufReader::with_capacity(1 << 20, File::open(path).map_err(io)?);
        let mut n = 0u64;
        loop {
            line.clear();
            let read = reader.read_until(b'\n', &mut line).map_err(io)?;
            if read == 0 {
                break;
            }
            n += 1;
            let terminated = line.last() == Some(&b'\n');
            if terminated {
                line.pop();
            }
            if let Err(b) = v.feed(&line, terminated, Location { file: path.clone(), line: n }) {
                return Ok(Err(b));
            }
        }
    }
    Ok(v.finish())
}

/// The sequence number of a file's first record, if it is readable.
pub fn first_seq(path: &Path) -> Option<u64> {
    let mut reader = BufReader::new(File::open(path).ok()?);
    let mut line = Vec::new();
    reader.read_until(b'\n', &mut line).ok()?;
    #[derive(Deserialize)]
    struct Seq {
        seq: u64,
    }
    serde_json::from_slice::<Seq>(line.strip_suffix(b"\n")?).ok().map(|s| s.seq)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::record::{EventKind, Outcome};

    fn chain(n: u64) -> Vec<u8> {
        let mut out = Vec::new();
        let mut buf = Vec::new();
        let mut prev = GENESIS.to_string();
        for seq in 1..=n {
            let mut e = Entry::new(EventKind::Admission, Outcome::Allow);
            e.name = format!("obj-{seq}");
            prev = seal(&mut buf, seq, "2026-11-21T00:00:00.000000Z", "r\"1", None, &prev, &e).unwrap();
            out.extend_from_slice(&buf);
        }
        out
    }

    fn walk(bytes: &[u8]) -> Verdict {
        let mut v = Verifier::default();
        for (n, piece) in (1..).zip(bytes.split_inclusive(|b| *b == b'\n')) {
            let (line, terminated) = match piece.strip_suffix(b"\n") {
                Some(l) => (l, true),
                None => (piece, false),
            };
            v.feed(line, terminated, Location { file: "mem".into(), line: n })?;
        }
        v.finish()
    }

    #[test]
    fn a_sealed_line_is_json_whose_hash_excludes_itself() {
        let mut buf = Vec::new();
        let e = Entry::new(EventKind::Prune, Outcome::Done);
        let hash = seal(&mut buf, 1, "t", "replica", None, GENESIS, &e).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&buf).unwrap();
        assert_eq!(v["hash"], hash.as_str());
        assert_eq!(v["event"], "prune");
        let mut without = v.as_object().unwrap().clone();
        without.remove("hash");
        let body = &buf[..buf.len() - 1 - HASH_SUFFIX_LEN];
        assert_eq!(hex(digest::digest(&digest::SHA256, &[body, b"}"].concat()).as_ref()), hash);
        assert_eq!(open_line(&buf[..buf.len() - 1]).unwrap(), Opened { seq: 1, prev: GENESIS.into(), hash });
    }

    #[test]
    fn a_cluster_is_sealed_under_the_hash_and_checked_by_a_fleet_verifier() {
        let mut buf = Vec::new();
        let e = Entry::new(EventKind::Apply, Outcome::Done);
        let mut none = Vec::new();
        seal(&mut none, 1, "t", "r", None, GENESIS, &e).unwrap();
        assert!(!String::from_utf8_lossy(&none).contains("cluster"));
        seal(&mut buf, 1, "t", "r", Some("production"), GENESIS, &e).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&buf).unwrap();
        assert_eq!(v["cluster"], "production");
        let record: crate::audit::Record = serde_json::from_slice(&buf).unwrap();
        assert_eq!(record.cluster.as_deref(), Some("production"));
        assert!(walk(&buf).is_ok());
        // relabelling the record breaks its hash
        let relabelled = String::from_utf8(buf.clone()).unwrap().replace("production", "staging");
        let b = walk(relabelled.as_bytes()).unwrap_err();
        assert!(matches!(b.problem, Problem::Line(LineProblem::HashMismatch { .. })), "{b}");

        let fleet = |bytes: &[u8], rule| {
            let mut v = Verifier::default().with_cluster_rule(rule);
            for (n, line) in (1..).zip(bytes.split_inclusive(|b| *b == b'\n')) {
                v.feed(line.strip_suffix(b"\n").unwrap(), true, Location { file: "mem".into(), line: n })?;
            }
            v.finish()
        };
        let s = fleet(&buf, ClusterRule::given("production")).unwrap();
        assert_eq!((s.cluster.as_deref(), s.last_time.as_deref()), (Some("production"), Some("t")));
        let b = fleet(&buf, ClusterRule::given("staging")).unwrap_err();
        assert_eq!(b.seq, Some(1));
        assert!(b.to_string().contains("\"production\"") && b.to_string().contains("\"staging\""), "{b}");
        // records without a cluster pass any rule
        assert!(fleet(&none, ClusterRule::given("staging")).is_ok());
        assert_eq!(fleet(&none, ClusterRule::consistent()).unwrap().cluster, None);
    }

    #[test]
    fn a_chain_that_changes_cluster_is_refused_by_a_consistent_rule() {
        let mut rule = ClusterRule::consistent();
        assert!(rule.check(None).is_ok());
        assert!(rule.check(Some("a")).is_ok());
        assert!(rule.check(None).is_ok());
        let p = rule.check(Some("b")).unwrap_err();
        assert!(
            matches!(&p, Problem::WrongCluster { found, expected, given: false } if found == "b" && expected == "a")
        );
        assert_eq!(rule.cluster(), Some("a"));
    }

    #[test]
    fn a_good_chain_verifies() {
        let s = walk(&chain(20)).unwrap();
        assert_eq!((s.records, s.first, s.last.unwrap().seq), (20, Some(1), 20));
    }

    #[test]
    fn every_single_bit_flip_in_a_record_is_caught_at_that_record() {
        let good = chain(5);
        let lines: Vec<&[u8]> = good.split_inclusive(|b| *b == b'\n').collect();
        let start: usize = lines[..2].iter().map(|l| l.len()).sum();
        for i in start..start + lines[2].len() {
            for bit in [0x01u8, 0x20, 0x80] {
                let mut bad = good.clone();
                bad[i] ^= bit;
                let b = walk(&bad).unwrap_err();
                assert_eq!(b.seq, Some(3), "byte {i} bit {bit:#x}: {b}");
            }
        }
    }

    #[test]
    fn a_record_at_the_largest_sequence_number_is_refused_not_a_panic() {
        let mut buf = Vec::new();
        let e = Entry::new(EventKind::Admission, Outcome::Allow);
        seal(&mut buf, u64::MAX, "t", "r", None, GENESIS, &e).unwrap();
        assert!(matches!(open_line(&buf[..buf.len() - 1]), Err(LineProblem::Malformed(_))));
        let mut two = buf.clone();
        seal(&mut buf, 1, "t", "r", None, GENESIS, &e).unwrap();
        two.extend_from_slice(&buf);
        let b = walk(&two).unwrap_err();
        assert!(matches!(b.problem, Problem::Line(LineProblem::Malformed(_))), "{b}");
        let b = walk(&two[..two.len() - buf.len()]).unwrap_err();
        assert!(matches!(b.problem, Problem::Line(LineProblem::Malformed(_))), "{b}");
    }
}
