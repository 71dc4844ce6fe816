//! A fleet's audit: one hash-chained log per spoke (`gitgate serve
//! --cluster NAME`), read together by `gitgate audit query --fleet` and
//! checked chain by chain by `gitgate audit verify --fleet`.
//!
//! Each chain is given as `NAME=PATH` or `PATH` ([`ChainSpec`]). A record
//! shows its own `cluster`; a record without one (written before spokes
//! named themselves) shows its chain's name. A record that names another
//! cluster than its chain is an error, never relabelled: someone mixed up
//! the logs. [`merge`] is the pure half: labels and orders the records of
//! all chains by time (ties: cluster name, then seq).

use std::collections::BTreeSet;
use std::path::PathBuf;

use serde::Serialize;

use super::chain::Problem;
use super::record::{Record, parse_rfc3339_micros};

/// Why a fleet's chains cannot be read together.
#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    #[error("failed to read the chain {spec:?}: the cluster name before '=' is empty (write NAME=PATH or PATH)")]
    EmptyName { spec: String },
    #[error("failed to read the chain {spec:?}: the path after '=' is empty (write NAME=PATH or PATH)")]
    EmptyPath { spec: String },
    #[error(
        "failed to read the chain {spec:?}: {name:?} is not a cluster name (it has a space or a control character)"
    )]
    BadName { spec: String, name: String },
    #[error("failed to read the fleet's chains: cluster {name:?} is given twice ({first} and {second})")]
    DuplicateName { name: String, first: String, second: String },
    #[error("failed to read the fleet's chains: {file} is in two chains ({first} and {second})")]
    SameFile { file: PathBuf, first: String, second: String },
    #[error("failed to read the chain of cluster {name:?}: {path} does not exist")]
    Missing { name: String, path: PathBuf },
    #[error("failed to read the chain of cluster {name:?}: {path} holds no audit log (*.jsonl)")]
    NoLogs { name: String, path: PathBuf },
    #[error("failed to read the fleet's chains: two chains are both cluster {name:?}; name each one (NAME=PATH)")]
    SameName { name: String },
    #[error("failed to read the chain of cluster {chain:?}: record {seq}{at}: {why}")]
    Mislabelled { chain: String, seq: u64, at: String, why: String },
    #[error(
        "failed to read the fleet's chains: --fleet needs one chain per cluster: NAME=PATH or PATH (a log file or its directory)"
    )]
    NoChains,
}

/// One cluster's chain as given on the command line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChainSpec {
    /// The NAME of `NAME=PATH`; `None` for a bare `PATH`.
    pub name: Option<String>,
    /// A log file or a directory holding a chain and its rotated files.
    pub path: PathBuf,
}

impl ChainSpec {
    /// `NAME=PATH` or `PATH`. The text before the first `=` is a NAME only
    /// when it has no `/`, so `./a=b.jsonl` is a path.
    pub fn parse(s: &str) -> Result<ChainSpec, FleetError> {
        let Some((name, path)) = s.split_once('=').filter(|(name, _)| !name.contains('/')) else {
            if s.is_empty() {
                return Err(FleetError::EmptyPath { spec: s.to_owned() });
            }
            return Ok(ChainSpec { name: None, path: PathBuf::from(s) });
        };
        if name.is_empty() {
            return Err(FleetError::EmptyName { spec: s.to_owned() });
        }
        if name.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(FleetError::BadName { spec: s.to_owned(), name: name.to_owned() });
        }
        if path.is_empty() {
            return Err(FleetError::EmptyPath { spec: s.to_owned() });
        }
        Ok(ChainSpec { name: Some(name.to_owned()), path: PathBuf::from(path) })
    }

    /// The name shown when neither the NAME nor the records give one: the
    /// directory's name, or the file's stem.
    pub fn fallback_name(&self) -> String {
        let named = if self.path.is_dir() { self.path.file_name() } else { self.path.file_stem() };
        named
            .or_else(|| self.path.file_name())
            .map_or_else(|| self.path.display().to_string(), |n| n.to_string_lossy().into_owned())
    }

    /// The NAME given, else `found` (the cluster the records name), else
    /// [`ChainSpec::fallback_name`].
    pub fn display_name(&self, found: Option<&str>) -> String {
        self.name.clone().or_else(|| found.map(str::to_owned)).unwrap_or_else(|| self.fallback_name())
    }
}

/// Refuses a NAME given twice, before anything is read.
pub fn check_names(specs: &[ChainSpec]) -> Result<(), FleetError> {
    if specs.is_empty() {
        return Err(FleetError::NoChains);
    }
    for (i, a) in specs.iter().enumerate() {
        let Some(name) = &a.name else { continue };
        if let Some(b) = specs[i + 1..].iter().find(|b| b.name.as_ref() == Some(name)) {
            return Err(FleetError::DuplicateName {
                name: name.clone(),
                first: a.path.display().to_string(),
                second: b.path.display().to_string(),
            });
        }
    }
    Ok(())
}

/// Refuses one file in two clusters' chains (`files`: each chain's name
/// and files).
pub fn check_disjoint(files: &[(String, Vec<PathBuf>)]) -> Result<(), FleetError> {
    let mut seen: Vec<(PathBuf, &str)> = Vec::new();
    for (name, paths) in files {
        for p in paths {
            let canonical = std::fs::canonicalize(p).unwrap_or_else(|_| p.clone());
            if let Some((_, first)) = seen.iter().find(|(q, _)| *q == canonical) {
                return Err(FleetError::SameFile { file: p.clone(), first: (*first).to_owned(), second: name.clone() });
            }
            seen.push((canonical, name));
        }
    }
    Ok(())
}

/// A record of a fleet, with the cluster it is shown under.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FleetRecord {
    /// The record's own `cluster`, else its chain's name.
    pub cluster: String,
    pub record: Record,
}

impl Serialize for FleetRecord {
    /// The record as stored, with `"cluster"` always present.
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut r = self.record.clone();
        r.cluster = Some(self.cluster.clone());
        r.serialize(s)
    }
}

fn mislabel(chain: &str, r: &Record, own: &str) -> FleetError {
    let problem = Problem::WrongCluster { found: own.to_owned(), expected: chain.to_owned(), given: true };
    FleetError::Mislabelled { chain: chain.to_owned(), seq: r.seq, at: String::new(), why: problem.to_string() }
}

/// Labels the records of every chain (`(chain name, records)`) with their
/// cluster and orders them by time; ties by cluster name, then seq. A
/// record that names another cluster than its chain, or two chains with
/// the same name, are errors.
pub fn merge(chains: Vec<(String, Vec<Record>)>) -> Result<Vec<FleetRecord>, FleetError> {
    let mut names = BTreeSet::new();
    for (name, _) in &chains {
        if !names.insert(name.as_str()) {
            return Err(FleetError::SameName { name: name.clone() });
        }
    }
    let mut out = Vec::with_capacity(chains.iter().map(|(_, r)| r.len()).sum());
    for (name, records) in chains {
        for record in records {
            if let Some(own) = record.cluster.as_deref()
                && own != name
            {
                return Err(mislabel(&name, &record, own));
            }
            out.push(FleetRecord { cluster: name.clone(), record });
        }
    }
    // An unreadable time sorts first rather than being dropped.
    out.sort_by_cached_key(|f| (parse_rfc3339_micros(&f.record.time), f.cluster.clone(), f.record.seq));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::record::{Entry, EventKind, Outcome};

    fn rec(seq: u64, time: &str, cluster: Option<&str>) -> Record {
        Record {
            seq,
            time: time.into(),
            replica: "r".into(),
            cluster: cluster.map(str::to_owned),
            prev: String::new(),
            entry: Entry::new(EventKind::Apply, Outcome::Done),
            hash: String::new(),
        }
    }

    #[test]
    fn specs_parse_name_and_path_and_refuse_empty_parts() {
        assert_eq!(
            ChainSpec::parse("prod=logs/prod").unwrap(),
            ChainSpec { name: Some("prod".into()), path: "logs/prod".into() }
        );
        assert_eq!(ChainSpec::parse("logs/prod").unwrap(), ChainSpec { name: None, path: "logs/prod".into() });
        assert_eq!(ChainSpec::parse("./a=b.jsonl").unwrap().name, None);
        assert!(matches!(ChainSpec::parse("=logs/prod"), Err(FleetError::EmptyName { .. })));
        assert!(matches!(ChainSpec::parse("prod="), Err(FleetError::EmptyPath { .. })));
        assert!(matches!(ChainSpec::parse(""), Err(FleetError::EmptyPath { .. })));
        assert!(matches!(ChainSpec::parse("a b=x"), Err(FleetError::BadName { .. })));
        let twice = [ChainSpec::parse("a=x").unwrap(), ChainSpec::parse("a=y").unwrap()];
        let e = check_names(&twice).unwrap_err().to_string();
        assert!(e.contains("\"a\"") && e.contains('x') && e.contains('y'), "{e}");
        assert!(matches!(check_names(&[]), Err(FleetError::NoChains)));
    }

    #[test]
    fn merge_orders_by_time_then_cluster_then_seq_and_labels_each_record() {
        let t = |s: u32| format!("2026-12-05T10:00:{s:02}.000000Z");
        let a = vec![rec(1, &t(1), Some("a")), rec(2, &t(3), None), rec(3, &t(3), Some("a"))];
        let b = vec![rec(1, &t(2), None), rec(2, &t(3), Some("b"))];
        let merged = merge(vec![("b".into(), b), ("a".into(), a)]).unwrap();
        let got: Vec<(String, u64)> = merged.iter().map(|f| (f.cluster.clone(), f.record.seq)).collect();
        let want = [("a", 1), ("b", 1), ("a", 2), ("a", 3), ("b", 2)];
        assert_eq!(got, want.map(|(c, s)| (c.to_owned(), s)));
        let json = serde_json::to_value(&merged[1]).unwrap();
        assert_eq!(json["cluster"], "b");
    }

    #[test]
    fn merge_refuses_a_record_of_another_cluster_and_a_name_twice() {
        let e = merge(vec![("staging".into(), vec![rec(4, "2026-12-05T10:00:00Z", Some("production"))])])
            .unwrap_err()
            .to_string();
        assert!(e.contains("production") && e.contains("staging") && e.contains("record 4"), "{e}");
        let e = merge(vec![("a".into(), vec![]), ("a".into(), vec![])]).unwrap_err();
        assert!(matches!(e, FleetError::SameName { .. }), "{e}");
    }
}
