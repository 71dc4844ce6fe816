//! `gitgate audit query`: the auditor's questions ("who changed X, in which
//! commit?") answered from the log files.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use super::AuditError;
use super::fleet::FleetRecord;
use super::record::{EventKind, Outcome, Record, parse_rfc3339_micros};

/// `ns/kind/name` (empty namespace: cluster-scoped) or `kind/name` (any
/// namespace). Kind matches the kind or the resource, case-insensitively.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectFilter {
    pub namespace: Option<String>,
    pub kind: String,
    pub name: String,
}

impl ObjectFilter {
    pub fn parse(s: &str) -> Result<ObjectFilter, AuditError> {
        let parts: Vec<&str> = s.split('/').collect();
        let bad = || AuditError::Invalid {
            what: "--object",
            reason: format!("expected NAMESPACE/KIND/NAME or KIND/NAME, got {s:?}"),
        };
        match parts.as_slice() {
            [ns, kind, name] if !kind.is_empty() && !name.is_empty() => Ok(ObjectFilter {
                namespace: Some((*ns).to_owned()),
                kind: (*kind).to_owned(),
                name: (*name).to_owned(),
            }),
            [kind, name] if !kind.is_empty() && !name.is_empty() => {
                Ok(ObjectFilter { namespace: None, kind: (*kind).to_owned(), name: (*name).to_owned() })
            }
            _ => Err(bad()),
        }
    }

    fn matches(&self, r: &Record) -> bool {
        let e = &r.entry;
        self.namespace.as_ref().is_none_or(|ns| *ns == e.namespace)
            && e.name == self.name
            && (e.kind.eq_ignore_ascii_case(&self.kind) || e.resource.eq_ignore_ascii_case(&self.kind))
    }
}

/// `--since`: RFC 3339, or a duration back from now (`90s`, `15m`, `2h`, `7d`).
pub fn parse_since(s: &str, now_micros: i64) -> Result<i64, AuditError> {
    if let Some(t) = parse_rfc3339_micros(s) {
        return Ok(t);
    }
    let bad = || AuditError::Invalid {
        what: "--since",
        reason: format!("expected an RFC 3339 time or a duration such as 15m, 2h, 7d; got {s:?}"),
    };
    let split = s.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
    let (n, unit) = s.split_at(split);
    let n: i64 = n.parse().map_err(|_| bad())?;
    let secs = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(bad()),
    };
    Ok(now_micros.saturating_sub(n.saturating_mul(secs).saturating_mul(1_000_000)))
}

/// All conditions must hold.
#[derive(Clone, Debug, Default)]
pub struct Filter {
    /// A prefix of the full commit ID.
    pub commit: Option<String>,
    pub object: Option<ObjectFilter>,
    pub user: Option<String>,
    /// Microseconds since the epoch.
    pub since: Option<i64>,
    pub decision: Option<Outcome>,
    pub event: Option<EventKind>,
}

impl Filter {
    pub fn matches(&self, r: &Record) -> bool {
        let e = &r.entry;
        self.commit.as_ref().is_none_or(|c| e.commit.as_ref().is_some_and(|rc| rc.id.starts_with(c.as_str())))
            && self.object.as_ref().is_none_or(|o| o.matches(r))
            && self.user.as_ref().is_none_or(|u| *u == e.user)
            && self.since.is_none_or(|s| parse_rfc3339_micros(&r.time).is_some_and(|t| t >= s))
            && self.decision.is_none_or(|d| d == e.decision)
            && self.event.is_none_or(|k| k == e.event)
    }
}

/// What a query read.
#[derive(Debug, Default)]
pub struct Found {
    pub records: Vec<Record>,
    /// Lines that are not records (torn or damaged; `verify` says which).
    pub unreadable: u64,
}

/// Reads the files in order and keeps the matching records.
pub fn run(files: &[PathBuf], filter: &Filter) -> Result<Found, AuditError> {
    scan(files, filter, |_, _, _| Ok(()))
}

/// As [`run`], showing `each` every record read (matching or not) with its
/// file and 1-based line first; an error from `each` stops the scan.
pub fn scan(
    files: &[PathBuf],
    filter: &Filter,
    mut each: impl FnMut(&Record, &Path, u64) -> Result<(), AuditError>,
) -> Result<Found, AuditError> {
    let mut found = Found::default();
    for path in files {
        let io = |source| AuditError::Io { op: "read", path: path.clone(), source };
        for (n, line) in (1u64..).zip(BufReader::new(File::open(path).map_err(io)?).split(b'\n')) {
            let line = line.map_err(io)?;
            match serde_json::from_slice::<Record>(&line) {
                Ok(r) => {
                    each(&r, path, n)?;
                    if filter.matches(&r) {
                        found.records.push(r);
                    }
                }
                Err(_) => found.unreadable += 1,
            }
        }
    }
    Ok(found)
}

const COLUMNS: [&str; 10] =
    ["TIME", "SEQ", "EVENT", "DECISION", "USER", "OPERATION", "OBJECT", "COMMIT", "APP", "DETAIL"];

/// A fixed-width table: who, what, which commit.
pub fn table(records: &[Record]) -> String {
    let rows: Vec<Vec<String>> = records.iter().map(cells).collect();
    crate::table::columns(&COLUMNS, &rows)
}

/// [`table`] for a fleet: the CLUSTER column first.
pub fn fleet_table(records: &[FleetRecord]) -> String {
    let header: Vec<&str> = std::iter::once("CLUSTER").chain(COLUMNS).collect();
    let rows: Vec<Vec<String>> = records
        .iter()
        .map(|f| {
            let mut row = vec![f.cluster.clone()];
            row.extend(cells(&f.record));
            row
        })
        .collect();
    crate::table::columns(&header, &rows)
}

fn cells(r: &Record) -> Vec<String> {
    let e = &r.entry;
    let commit = e.commit.as_ref().map_or_else(String::new, |c| c.id.chars().take(12).collect());
    let detail = match (&e.commit, e.reasons.first()) {
        (_, Some(reason)) if e.decision == Outcome::Deny => reason.clone(),
        (Some(c), _) if !c.subject.is_empty() => c.subject.clone(),
        (_, Some(reason)) => reason.clone(),
        _ => String::new(),
    };
    let detail: String = detail.chars().take(80).collect();
    let mut decision = e.decision.as_str().to_owned();
    if e.dry_run {
        decision.push_str(" (dry run)");
    }
    vec![
        r.time.clone(),
        r.seq.to_string(),
        e.event.as_str().to_owned(),
        decision,
        e.user.clone(),
        e.operation.clone(),
        if e.name.is_empty() { String::new() } else { e.object() },
        commit,
        e.app.clone(),
        detail,
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_and_since_parse() {
        assert_eq!(
            ObjectFilter::parse("prod/Deployment/web").unwrap(),
            ObjectFilter { namespace: Some("prod".into()), kind: "Deployment".into(), name: "web".into() }
        );
        assert_eq!(ObjectFilter::parse("/Namespace/prod").unwrap().namespace, Some(String::new()));
        assert_eq!(ObjectFilter::parse("configmaps/x").unwrap().namespace, None);
        for bad in ["web", "a/b/c/d", "prod//web", ""] {
            assert!(ObjectFilter::parse(bad).is_err(), "{bad}");
        }
        let now = 10_000_000_000;
        assert_eq!(parse_since("2h", now).unwrap(), now - 7_200_000_000);
        assert_eq!(parse_since("1970-01-01T00:00:01Z", now).unwrap(), 1_000_000);
        assert!(parse_since("2 hours", now).is_err());
        assert!(parse_since("h", now).is_err());
    }
}
