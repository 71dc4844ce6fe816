//! `audit verify`'s library half: a chain's files in order, verified
//! against the checkpoints (the command prints the report).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use super::AuditError;
use super::chain::{self, ClusterRule, Verdict, Verifier};
use super::checkpoint;
use super::log::checkpoints_path;

/// `X.jsonl` and `X-<digits>.jsonl` share `X.checkpoints.jsonl`.
fn checkpoints_for(file: &Path) -> PathBuf {
    let stem = file.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    let base = match stem.rsplit_once('-') {
        Some((b, digits)) if !digits.is_empty() && digits.bytes().all(|c| c.is_ascii_digit()) => b.to_owned(),
        _ => stem,
    };
    let ext = file.extension().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "jsonl".into());
    checkpoints_path(&file.with_file_name(format!("{base}.{ext}")))
}

/// Files in chain order: directories expand to their log files (sorted by
/// name, which puts `audit-<seq>` before `audit.jsonl`); explicit files are
/// ordered by their first record when every first record is readable.
pub fn expand(paths: &[PathBuf]) -> Result<Vec<PathBuf>, AuditError> {
    let mut out = Vec::new();
    let mut explicit = Vec::new();
    for p in paths {
        if p.is_dir() {
            let mut names: Vec<PathBuf> = std::fs::read_dir(p)
                .map_err(|source| AuditError::Io { op: "list", path: p.clone(), source })?
                .flatten()
                .map(|e| e.path())
                .filter(|f| {
                    let n = f.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
                    n.ends_with(".jsonl") && !n.ends_with(".checkpoints.jsonl") && f.is_file()
                })
                .collect();
            names.sort();
            out.extend(names);
        } else {
            explicit.push(p.clone());
        }
    }
    let seqs: Vec<Option<u64>> = explicit.iter().map(|p| chain::first_seq(p)).collect();
    if seqs.iter().all(Option::is_some) {
        let mut pairs: Vec<(Option<u64>, PathBuf)> = seqs.into_iter().zip(explicit).collect();
        pairs.sort_by_key(|(s, _)| *s);
        out.extend(pairs.into_iter().map(|(_, p)| p));
    } else {
        out.extend(explicit);
    }
    Ok(out)
}

/// What `verify` found.
pub struct VerifyReport {
    pub files: Vec<PathBuf>,
    pub verdict: Verdict,
    /// Checkpoints whose signature does not verify: (seq, why).
    pub bad_checkpoints: Vec<(u64, String)>,
    pub key_pinned: bool,
}

impl VerifyReport {
    pub fn ok(&self) -> bool {
        self.verdict.is_ok() && self.bad_checkpoints.is_empty()
    }
}

/// Verifies the chain in `files` against the checkpoints.
pub fn verify_paths(
    files: &[PathBuf],
    checkpoint_files: &[PathBuf],
    key: Option<&Path>,
) -> Result<VerifyReport, AuditError> {
    verify_with(files, checkpoint_files, Vec::new(), key)
}

/// As [`verify_paths`], with `extra` checkpoints (from the cluster) too.
pub fn verify_with(
    files: &[PathBuf],
    checkpoint_files: &[PathBuf],
    extra: Vec<checkpoint::Checkpoint>,
    key: Option<&Path>,
) -> Result<VerifyReport, AuditError> {
    verify_impl(files, checkpoint_files, extra, key, None)
}

/// One fleet chain (`audit verify --fleet`): as [`verify_paths`] with the
/// checkpoints next to the files, and every record's `cluster` checked
/// against `rule`; the summary also holds the last record's time and the
/// cluster the records name.
pub fn verify_fleet_chain(
    files: &[PathBuf],
    key: Option<&Path>,
    rule: ClusterRule,
) -> Result<VerifyReport, AuditError> {
    verify_impl(files, &[], Vec::new(), key, Some(rule))
}

fn verify_impl(
    files: &[PathBuf],
    checkpoint_files: &[PathBuf],
    extra: Vec<checkpoint::Checkpoint>,
    key: Option<&Path>,
    rule: Option<ClusterRule>,
) -> Result<VerifyReport, AuditError> {
    let files = expand(files)?;
    let cp_files: BTreeSet<PathBuf> = if checkpoint_files.is_empty() {
        files.iter().map(|f| checkpoints_for(f)).filter(|p| p.is_file()).collect()
    } else {
        checkpoint_files.iter().cloned().collect()
    };
    let trusted = key.map(checkpoint::trusted_key).transpose()?;
    let mut cps = extra;
    let mut bad_checkpoints = Vec::new();
    for f in &cp_files {
        let (good, bad) = checkpoint::read(f)?;
        cps.extend(good);
        bad_checkpoints
            .extend(bad.into_iter().map(|(line, e)| (0, format!("{}:{line}: unreadable: {e}", f.display()))));
    }
    let (anchors, unsigned) = checkpoint::anchors(&cps, trusted.as_deref());
    bad_checkpoints.extend(unsigned.into_iter().map(|(seq, p)| (seq, p.to_string())));
    let mut verifier = Verifier::new(anchors);
    if let Some(rule) = rule {
        verifier = verifier.with_cluster_rule(rule);
    }
    let verdict = chain::verify_files_with(&files, verifier)?;
    Ok(VerifyReport { files, verdict, bad_checkpoints, key_pinned: trusted.is_some() })
}
