//! Signed commits. A commit's signature and the bytes it covers come from
//! gix; verification runs the standard tools, which read files:
//!
//! - SSH signatures (`-----BEGIN SSH SIGNATURE-----`): `ssh-keygen -Y
//!   find-principals` then `ssh-keygen -Y verify -n git` against an
//!   `allowed_signers` file (OpenSSH's format, as `git verify-commit` uses).
//! - OpenPGP signatures: `gpg --verify` with a given keyring directory,
//!   accepted only when the `VALIDSIG` fingerprint is in the allowed list;
//!   where no `gpg` binary exists this is an error that says so.
//!
//! [`verify_range`] checks every commit between the last synced commit and
//! a new head; the first unsigned or wrongly signed one stops the sync.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use gix::ObjectId;

use super::scratch::ScratchDir;

/// Who may sign.
#[derive(Clone, Debug, Default)]
pub struct Signers {
    /// An OpenSSH `allowed_signers` file.
    pub ssh_allowed_signers: Option<PathBuf>,
    /// A GnuPG home directory holding the public keys.
    pub gpg_home: Option<PathBuf>,
    /// Fingerprints (upper-case hex) of the OpenPGP keys allowed.
    pub gpg_fingerprints: Vec<String>,
}

/// A commit whose signature verified.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verified {
    pub commit: ObjectId,
    pub format: &'static str,
    /// The principal (SSH) or key fingerprint (OpenPGP).
    pub signer: String,
}

#[derive(Debug, thiserror::Error)]
pub enum SignatureError {
    #[error("commit {commit} is not signed")]
    Unsigned { commit: String },
    #[error("commit {commit}: {format} signature rejected: {reason}")]
    Rejected { commit: String, format: &'static str, reason: String },
    #[error("commit {commit}: {format} signatures cannot be verified here: {reason}")]
    NoVerifier { commit: String, format: &'static str, reason: String },
    #[error("commit {commit}: unsupported signature format")]
    UnsupportedFormat { commit: String },
    #[error("failed to read commit {commit}")]
    Git {
        commit: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("more than {limit} commits between {from} and {to}")]
    TooMany { from: String, to: String, limit: usize },
}

/// Verifies one commit's signature.
pub fn verify_commit(repo: &gix::Repository, commit: ObjectId, signers: &Signers) -> Result<Verified, SignatureError> {
    let git =
        |e: Box<dyn std::error::Error + Send + Sync>| SignatureError::Git { commit: commit.to_string(), source: e };
    let c = repo.find_commit(commit).map_err(|e| git(Box::new(e)))?;
    let Some((sig, signed)) = c.signature().map_err(|e| git(Box::new(e)))? else {
        return Err(SignatureError::Unsigned { commit: commit.to_string() });
    };
    let sig: Vec<u8> = sig.to_vec();
    let payload: Vec<u8> = signed.to_bstring().to_vec();
    if sig.starts_with(b"-----BEGIN SSH SIGNATURE-----") {
        verify_ssh(commit, &sig, &payload, signers)
    } else if sig.starts_with(b"-----BEGIN PGP SIGNATURE-----") {
        verify_gpg(commit, &sig, &payload, signers)
    } else {
        Err(SignatureError::UnsupportedFormat { commit: commit.to_string() })
    }
}

/// Verifies every commit reachable from `to` and not from `from` (all of
/// `to`'s history when `from` is None), newest first, at most `limit`.
pub fn verify_range(
    repo: &gix::Repository,
    from: Option<ObjectId>,
    to: ObjectId,
    signers: &Signers,
    limit: usize,
) -> Result<Vec<Verified>, SignatureError> {
    let git = |e: Box<dyn std::error::Error + Send + Sync>| SignatureError::Git { commit: to.to_string(), source: e };
    let walk = repo.rev_walk([to]).with_hidden(from).all().map_err(|e| git(Box::new(e)))?;
    let mut out = Vec::new();
    for info in walk {
        let info = info.map_err(|e| git(Box::new(e)))?;
        if out.len() >= limit {
            return Err(SignatureError::TooMany {
                from: from.map(|f| f.to_string()).unwrap_or_else(|| "the root".into()),
                to: to.to_string(),
                limit,
            });
        }
        out.push(verify_commit(repo, info.id, signers)?);
    }
    Ok(out)
}

fn run(cmd: &mut Command, stdin: &[u8]) -> std::io::Result<std::process::Output> {
    let mut child = cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn()?;
    if let Some(mut s) = child.stdin.take() {
        s.write_all(stdin)?;
    }
    child.wait_with_output()
}

fn verify_ssh(commit: ObjectId, sig: &[u8], payload: &[u8], signers: &Signers) -> Result<Verified, SignatureError> {
    const F: &str = "ssh";
    let c = commit.to_string();
    let Some(allowed) = &signers.ssh_allowed_signers else {
        return Err(SignatureError::NoVerifier {
            commit: c,
            format: F,
            reason: "no allowed_signers file is configured".into(),
        });
    };
    let tool = |reason: String| SignatureError::NoVerifier { commit: c.clone(), format: F, reason };
    let dir = ScratchDir::new("sig").map_err(|e| tool(format!("failed to create a temp dir: {e}")))?;
    let sig_path = dir.path().join("commit.sig");
    std::fs::write(&sig_path, sig).map_err(|e| tool(format!("failed to write the signature: {e}")))?;

    let found = run(
        Command::new("ssh-keygen").args(["-Y", "find-principals", "-f"]).arg(allowed).arg("-s").arg(&sig_path),
        b"",
    )
    .map_err(|e| tool(format!("failed to run ssh-keygen: {e}")))?;
    let principal = String::from_utf8_lossy(&found.stdout).lines().next().unwrap_or("").trim().to_string();
    if !found.status.success() || principal.is_empty() {
        return Err(SignatureError::Rejected {
            commit: c,
            format: F,
            reason: "the signing key is not in allowed_signers".into(),
        });
    }
    let out = run(
        Command::new("ssh-keygen")
            .args(["-Y", "verify", "-n", "git", "-f"])
            .arg(allowed)
            .arg("-I")
            .arg(&principal)
            .arg("-s")
            .arg(&sig_path),
        payload,
    )
    .map_err(|e| tool(format!("failed to run ssh-keygen: {e}")))?;
    if !out.status.success() {
        return Err(SignatureError::Rejected {
            commit: c,
            format: F,
            reason: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(Verified { commit, format: F, signer: principal })
}

/// Whether a `gpg` binary is on PATH.
pub fn gpg_available() -> bool {
    Command::new("gpg").arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok_and(|s| s.success())
}

fn verify_gpg(commit: ObjectId, sig: &[u8], payload: &[u8], signers: &Signers) -> Result<Verified, SignatureError> {
    const F: &str = "gpg";
    let c = commit.to_string();
    let Some(home) = &signers.gpg_home else {
        return Err(SignatureError::NoVerifier {
            commit: c,
            format: F,
            reason: "no GnuPG keyring is configured".into(),
        });
    };
    if !gpg_available() {
        return Err(SignatureError::NoVerifier { commit: c, format: F, reason: "no `gpg` binary on PATH".into() });
    }
    let tool = |reason: String| SignatureError::NoVerifier { commit: c.clone(), format: F, reason };
    let dir = ScratchDir::new("sig").map_err(|e| tool(format!("failed to create a temp dir: {e}")))?;
    let sig_path = dir.path().join("commit.asc");
    std::fs::write(&sig_path, sig).map_err(|e| tool(format!("failed to write the signature: {e}")))?;
    let out = run(
        Command::new("gpg")
            .arg("--homedir")
            .arg(home)
            .args(["--batch", "--no-tty", "--status-fd", "1", "--verify"])
            .arg(&sig_path)
            .arg("-"),
        payload,
    )
    .map_err(|e| tool(format!("failed to run gpg: {e}")))?;
    let status = String::from_utf8_lossy(&out.stdout);
    let fingerprint = status
        .lines()
        .find_map(|l| l.strip_prefix("[GNUPG:] VALIDSIG "))
        .and_then(|rest| rest.split_whitespace().next())
        .map(str::to_uppercase);
    match fingerprint {
        Some(fp) if signers.gpg_fingerprints.iter().any(|a| a.eq_ignore_ascii_case(&fp)) => {
            Ok(Verified { commit, format: F, signer: fp })
        }
        Some(fp) => Err(SignatureError::Rejected { commit: c, format: F, reason: format!("key {fp} is not allowed") }),
        None => Err(SignatureError::Rejected { commit: c, format: F, reason: "signature does not verify".into() }),
    }
}
