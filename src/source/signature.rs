//! Signed commits. A commit's signature and the bytes it covers come from
//! gix:
//!
//! - SSH signatures (`-----BEGIN SSH SIGNATURE-----`) are verified natively
//!   (the `ssh-key` crate's sshsig, namespace `git`) against an OpenSSH
//!   `allowed_signers` file, as `git verify-commit` does: the signing key
//!   must be listed, its `namespaces=` option (when given) must include
//!   `git`, and `valid-after`/`valid-before` must hold now. Ed25519 and
//!   ECDSA (P-256, P-384) keys; RSA keys are refused with a message that
//!   says so (the `rsa` crate carries RUSTSEC-2023-0071).
//! - OpenPGP signatures: `gpg --verify` with a given keyring directory,
//!   accepted only when the `VALIDSIG` fingerprint is in the allowed list;
//!   where no `gpg` binary exists this is an error that says so.
//!
//! [`verify_range`] checks every commit between the last synced commit and
//! a new head; the first unsigned or wrongly signed one stops the sync.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;

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
    /// The private GnuPG home made by [`Signers::from_files`] (removed when
    /// the last clone is dropped).
    pub keyring_home: Option<Arc<ScratchDir>>,
}

impl Signers {
    /// Whether any verifier is configured: without one, nothing verifies.
    pub fn is_configured(&self) -> bool {
        self.ssh_allowed_signers.is_some() || self.gpg_home.is_some()
    }

    /// `serve --allowed-signers FILE --gpg-keyring FILE`: the SSH file is
    /// read at each verification (a rotated Secret takes effect at once);
    /// the OpenPGP keyring (an armored or binary export of public keys) is
    /// imported once into a private GnuPG home, and every key in it (primary
    /// and subkeys) may sign.
    pub fn from_files(allowed_signers: Option<PathBuf>, gpg_keyring: Option<&Path>) -> Result<Signers, SignatureError> {
        let mut signers = Signers::default();
        if let Some(file) = &allowed_signers {
            let text = std::fs::read_to_string(file).map_err(|e| SignatureError::Config {
                reason: format!("failed to read the allowed signers file {}: {e}", file.display()),
            })?;
            if parse_allowed_signers(&text).is_empty() {
                return Err(SignatureError::Config {
                    reason: format!("{} holds no usable allowed_signers line", file.display()),
                });
            }
            signers.ssh_allowed_signers = allowed_signers;
        }
        if let Some(keyring) = gpg_keyring {
            let config = |reason: String| SignatureError::Config { reason };
            if !gpg_available() {
                return Err(config("--gpg-keyring needs a `gpg` binary on PATH".into()));
            }
            let home = ScratchDir::new("gnupg").map_err(|e| config(format!("failed to create a GnuPG home: {e}")))?;
            let gpg = |args: &[&str], extra: Option<&Path>| {
                let mut cmd = Command::new("gpg");
                cmd.arg("--homedir").arg(home.path()).args(["--batch", "--no-tty"]).args(args);
                if let Some(p) = extra {
                    cmd.arg(p);
                }
                run(&mut cmd, b"").map_err(|e| config(format!("failed to run gpg: {e}")))
            };
            let import = gpg(&["--import"], Some(keyring))?;
            if !import.status.success() {
                return Err(config(format!(
                    "gpg could not import {}: {}",
                    keyring.display(),
                    String::from_utf8_lossy(&import.stderr).trim()
                )));
            }
            let listing = gpg(&["--with-colons", "--list-keys"], None)?;
            let fingerprints: Vec<String> = String::from_utf8_lossy(&listing.stdout)
                .lines()
                .filter_map(|l| l.strip_prefix("fpr:"))
                .filter_map(|l| l.split(':').find(|f| f.len() == 40 || f.len() == 64))
                .map(str::to_uppercase)
                .collect();
            if fingerprints.is_empty() {
                return Err(config(format!("{} holds no OpenPGP public key", keyring.display())));
            }
            signers.gpg_home = Some(home.path().to_path_buf());
            signers.gpg_fingerprints = fingerprints;
            signers.keyring_home = Some(Arc::new(home));
        }
        Ok(signers)
    }
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
    #[error("{reason}")]
    Config { reason: String },
}

impl SignatureError {
    /// The commit this error is about, when it names one.
    pub fn commit(&self) -> Option<&str> {
        match self {
            SignatureError::Unsigned { commit }
            | SignatureError::Rejected { commit, .. }
            | SignatureError::NoVerifier { commit, .. }
            | SignatureError::UnsupportedFormat { commit }
            | SignatureError::Git { commit, .. } => Some(commit),
            SignatureError::TooMany { .. } | SignatureError::Config { .. } => None,
        }
    }
}

/// Verifies one commit's signature.
pub fn verify_commit(repo: &gix::Repository, commit: ObjectId, signers: &Signers) -> Result<Verified, SignatureError> {
    verify_loaded(repo, commit, signers, &Allowed::load(signers))
}

/// The allowed_signers file, read and parsed once for a range of commits.
pub struct Allowed(Option<Result<Vec<AllowedSigner>, String>>);

impl Allowed {
    pub fn load(signers: &Signers) -> Allowed {
        Allowed(signers.ssh_allowed_signers.as_ref().map(|file| {
            std::fs::read_to_string(file)
                .map(|text| parse_allowed_signers(&text))
                .map_err(|e| format!("failed to read {}: {e}", file.display()))
        }))
    }
}

/// [`verify_commit`] with the allowed signers already loaded.
pub fn verify_loaded(
    repo: &gix::Repository,
    commit: ObjectId,
    signers: &Signers,
    allowed: &Allowed,
) -> Result<Verified, SignatureError> {
    let git =
        |e: Box<dyn std::error::Error + Send + Sync>| SignatureError::Git { commit: commit.to_string(), source: e };
    let c = repo.find_commit(commit).map_err(|e| git(Box::new(e)))?;
    let Some((sig, signed)) = c.signature().map_err(|e| git(Box::new(e)))? else {
        return Err(SignatureError::Unsigned { commit: commit.to_string() });
    };
    let sig: Vec<u8> = sig.to_vec();
    let payload: Vec<u8> = signed.to_bstring().to_vec();
    if sig.starts_with(b"-----BEGIN SSH SIGNATURE-----") {
        verify_ssh(commit, &sig, &payload, allowed)
    } else if sig.starts_with(b"-----BEGIN PGP SIGNATURE-----") {
        verify_gpg(commit, &sig, &payload, signers)
    } else {
        Err(SignatureError::UnsupportedFormat { commit: commit.to_string() })
    }
}

/// Verifies an annotated tag's signature, appended to its message as `git
/// tag -s` writes it (SSH or OpenPGP; the payload is the tag object up to
/// the signature, as `git verify-tag` reads it). Returns the object the tag
/// points at and who signed. A lightweight tag is unsigned.
pub fn verify_tag(
    repo: &gix::Repository,
    name: &str,
    signers: &Signers,
) -> Result<(ObjectId, Verified), SignatureError> {
    let git = |e: Box<dyn std::error::Error + Send + Sync>| SignatureError::Git { commit: name.to_string(), source: e };
    let mut r = repo.find_reference(name).map_err(|e| git(Box::new(e)))?;
    let direct = r.target().try_id().map(|i| i.to_owned());
    let id = r.peel_to_id().map_err(|e| git(Box::new(e)))?.detach();
    let direct = direct.unwrap_or(id);
    let obj = repo.find_object(direct).map_err(|e| git(Box::new(e)))?;
    if obj.kind != gix::object::Kind::Tag {
        return Err(SignatureError::Unsigned { commit: name.to_string() });
    }
    let data = obj.data.clone();
    let at = [&b"-----BEGIN SSH SIGNATURE-----"[..], &b"-----BEGIN PGP SIGNATURE-----"[..]]
        .iter()
        .filter_map(|m| data.windows(m.len()).position(|w| w == *m).filter(|&p| p > 0 && data[p - 1] == b'\n'))
        .min()
        .ok_or_else(|| SignatureError::Unsigned { commit: name.to_string() })?;
    let (payload, sig) = data.split_at(at);
    let verified = if sig.starts_with(b"-----BEGIN SSH SIGNATURE-----") {
        verify_ssh(direct, sig, payload, &Allowed::load(signers))?
    } else {
        verify_gpg(direct, sig, payload, signers)?
    };
    Ok((id, verified))
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
    let allowed = Allowed::load(signers);
    for info in walk {
        let info = info.map_err(|e| git(Box::new(e)))?;
        if out.len() >= limit {
            return Err(SignatureError::TooMany {
                from: from.map(|f| f.to_string()).unwrap_or_else(|| "the root".into()),
                to: to.to_string(),
                limit,
            });
        }
        out.push(verify_loaded(repo, info.id, signers, &allowed)?);
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

fn verify_ssh(commit: ObjectId, sig: &[u8], payload: &[u8], allowed: &Allowed) -> Result<Verified, SignatureError> {
    const F: &str = "ssh";
    let c = commit.to_string();
    let rejected = |reason: String| SignatureError::Rejected { commit: c.clone(), format: F, reason };
    let entries = match &allowed.0 {
        None => {
            return Err(SignatureError::NoVerifier {
                commit: c,
                format: F,
                reason: "no allowed_signers file is configured".into(),
            });
        }
        Some(Err(reason)) => return Err(SignatureError::NoVerifier { commit: c, format: F, reason: reason.clone() }),
        Some(Ok(entries)) => entries,
    };
    let sshsig = ssh_key::SshSig::from_pem(sig).map_err(|e| rejected(format!("malformed signature: {e}")))?;
    if sshsig.namespace() != "git" {
        return Err(rejected(format!("signed for namespace {:?}, not \"git\"", sshsig.namespace())));
    }
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let entry = entries
        .iter()
        .find(|e| e.key.key_data() == sshsig.public_key())
        .ok_or_else(|| rejected("the signing key is not in allowed_signers".into()))?;
    if !entry.namespaces.is_empty() && !entry.namespaces.iter().any(|n| n == "git") {
        return Err(rejected(format!(
            "allowed_signers limits {} to namespaces {:?}",
            entry.principals, entry.namespaces
        )));
    }
    if entry.valid_after.is_some_and(|t| now < t) || entry.valid_before.is_some_and(|t| now >= t) {
        return Err(rejected(format!(
            "the key of {} is outside its valid-after/valid-before window",
            entry.principals
        )));
    }
    if matches!(sshsig.public_key(), ssh_key::public::KeyData::Rsa(_)) {
        return Err(SignatureError::NoVerifier {
            commit: c,
            format: F,
            reason: "RSA signing keys are not supported; sign with an ed25519 or ecdsa key".into(),
        });
    }
    entry.key.verify("git", payload, &sshsig).map_err(|e| rejected(format!("signature does not verify: {e}")))?;
    Ok(Verified { commit, format: F, signer: entry.principals.clone() })
}

/// One usable line of an OpenSSH `allowed_signers` file.
pub struct AllowedSigner {
    principals: String,
    key: ssh_key::PublicKey,
    namespaces: Vec<String>,
    valid_after: Option<u64>,
    valid_before: Option<u64>,
}

/// Parses `principals [options] keytype base64 [comment]` lines; skips
/// comments, `cert-authority` lines (certificates are not supported) and
/// lines that do not parse.
fn parse_allowed_signers(text: &str) -> Vec<AllowedSigner> {
    let mut out = Vec::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')) {
        let Some((principals, rest)) = line.split_once(char::is_whitespace) else { continue };
        let rest = rest.trim_start();
        let (options, key_text) = if ssh_key::PublicKey::from_openssh(rest).is_ok() {
            ("", rest)
        } else {
            match split_options(rest) {
                Some(parts) => parts,
                None => continue,
            }
        };
        let Ok(key) = ssh_key::PublicKey::from_openssh(key_text) else { continue };
        let mut entry = AllowedSigner {
            principals: principals.to_owned(),
            key,
            namespaces: Vec::new(),
            valid_after: None,
            valid_before: None,
        };
        let mut usable = true;
        for opt in split_option_list(options) {
            let (name, value) = opt.split_once('=').unwrap_or((opt.as_str(), ""));
            let value = value.trim_matches('"');
            match name.to_ascii_lowercase().as_str() {
                "namespaces" => entry.namespaces = value.split(',').map(|n| n.trim().to_owned()).collect(),
                "valid-after" => entry.valid_after = parse_ssh_time(value),
                "valid-before" => entry.valid_before = parse_ssh_time(value),
                "cert-authority" => usable = false,
                _ => {}
            }
        }
        if usable {
            out.push(entry);
        }
    }
    out
}

/// Splits `options keytype base64 …` at the end of the options field (which
/// may hold quoted commas and spaces).
fn split_options(rest: &str) -> Option<(&str, &str)> {
    let mut quoted = false;
    for (i, ch) in rest.char_indices() {
        match ch {
            '"' => quoted = !quoted,
            c if c.is_whitespace() && !quoted => return Some((&rest[..i], rest[i..].trim_start())),
            _ => {}
        }
    }
    None
}

fn split_option_list(options: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    for ch in options.chars() {
        match ch {
            '"' => {
                quoted = !quoted;
                cur.push(ch);
            }
            ',' if !quoted => out.push(std::mem::take(&mut cur)),
            _ => cur.push(ch),
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// `YYYYMMDD[HHMM[SS]][Z]` → seconds since the epoch (UTC).
fn parse_ssh_time(s: &str) -> Option<u64> {
    let s = s.trim_end_matches(['Z', 'z']);
    if !s.bytes().all(|b| b.is_ascii_digit()) || !matches!(s.len(), 8 | 12 | 14) {
        return None;
    }
    let num = |r: std::ops::Range<usize>| s.get(r).and_then(|v| v.parse::<i64>().ok());
    let (y, m, d) = (num(0..4)?, num(4..6)?, num(6..8)?);
    let (hh, mm, ss) = (num(8..10).unwrap_or(0), num(10..12).unwrap_or(0), num(12..14).unwrap_or(0));
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) || hh > 23 || mm > 59 || ss > 60 {
        return None;
    }
    // days from civil (Howard Hinnant)
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    u64::try_from(days * 86_400 + hh * 3600 + mm * 60 + ss).ok()
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
