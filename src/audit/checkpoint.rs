//! Signed checkpoints: every N records or every few seconds the durable
//! chain head (sequence number + hash) is signed with an Ed25519 key and
//! appended to a side file that outlives the log
//! (`audit.checkpoints.jsonl`). A log whose tail was cut, or rewritten from
//! some record on, no longer matches the last checkpoint, and
//! `gitgate audit verify` says so.
//!
//! The key is a PKCS#8 file (mount it from a Secret in a cluster); it is
//! generated on first start when absent. A Kubernetes Event/ConfigMap sink
//! for checkpoints comes with the sync loop.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write as _};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use ring::rand::SystemRandom;
use ring::signature::{self, Ed25519KeyPair, KeyPair as _};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::AuditError;
use super::chain::{Anchor, Head};

const DOMAIN: &str = "gitgate-audit-checkpoint/v1";

/// One signed checkpoint line.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Checkpoint {
    pub seq: u64,
    pub hash: String,
    pub time: String,
    pub replica: String,
    /// base64 of the raw Ed25519 public key.
    pub public_key: String,
    /// base64 Ed25519 signature over [`Checkpoint::message`].
    pub signature: String,
}

impl Checkpoint {
    /// The signed bytes.
    pub fn message(seq: u64, hash: &str, time: &str, replica: &str) -> Vec<u8> {
        format!("{DOMAIN}\n{seq}\n{hash}\n{time}\n{replica}\n").into_bytes()
    }

    /// Checks the signature against `trusted` (raw public key), or against
    /// the key the checkpoint names when no key is pinned.
    pub fn verify(&self, trusted: Option<&[u8]>) -> Result<(), CheckpointProblem> {
        let embedded = STANDARD.decode(&self.public_key).map_err(|_| CheckpointProblem::BadEncoding)?;
        if let Some(t) = trusted
            && t != embedded.as_slice()
        {
            return Err(CheckpointProblem::UntrustedKey);
        }
        let sig = STANDARD.decode(&self.signature).map_err(|_| CheckpointProblem::BadEncoding)?;
        let msg = Checkpoint::message(self.seq, &self.hash, &self.time, &self.replica);
        signature::UnparsedPublicKey::new(&signature::ED25519, &embedded)
            .verify(&msg, &sig)
            .map_err(|_| CheckpointProblem::BadSignature)
    }
}

/// Why a checkpoint cannot be trusted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CheckpointProblem {
    #[error("its key or signature is not valid base64")]
    BadEncoding,
    #[error("it is signed by a key other than the trusted one")]
    UntrustedKey,
    #[error("its signature does not verify")]
    BadSignature,
}

/// The checkpoint signing key. No `Debug`: it is secret material.
pub struct Signer {
    key: Ed25519KeyPair,
    public: String,
}

impl Signer {
    /// Loads the PKCS#8 key at `path`, or generates one there (mode 0600)
    /// when the file does not exist. Returns whether it was generated.
    pub fn load_or_generate(path: &Path) -> Result<(Signer, bool), AuditError> {
        let key_err = |reason: &str| AuditError::Key { path: path.to_owned(), reason: reason.to_owned() };
        match std::fs::read(path) {
            Ok(bytes) => {
                let bytes = Zeroizing::new(bytes);
                let der = Zeroizing::new(pkcs8_der(&bytes).ok_or_else(|| key_err("not a PKCS#8 Ed25519 key"))?);
                let key = Ed25519KeyPair::from_pkcs8_maybe_unchecked(&der)
                    .map_err(|_| key_err("not a PKCS#8 Ed25519 key"))?;
                Ok((Signer::from_key(key), false))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let rng = SystemRandom::new();
                let doc = Ed25519KeyPair::generate_pkcs8(&rng).map_err(|_| key_err("failed to generate a key"))?;
                if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::create_dir_all(dir).map_err(|source| AuditError::Io {
                        op: "create the key directory",
                        path: dir.to_owned(),
                        source,
                    })?;
                }
                let io = |source| AuditError::Io { op: "write the checkpoint key", path: path.to_owned(), source };
                let mut f = OpenOptions::new().write(true).create_new(true).mode(0o600).open(path).map_err(io)?;
                f.write_all(doc.as_ref()).map_err(io)?;
                f.sync_all().map_err(io)?;
                let key = Ed25519KeyPair::from_pkcs8(doc.as_ref()).map_err(|_| key_err("generated key is invalid"))?;
                Ok((Signer::from_key(key), true))
            }
            Err(source) => Err(AuditError::Io { op: "read the checkpoint key", path: path.to_owned(), source }),
        }
    }

    fn from_key(key: Ed25519KeyPair) -> Signer {
        let public = STANDARD.encode(key.public_key().as_ref());
        Signer { key, public }
    }

    /// base64 of the raw public key.
    pub fn public_key(&self) -> &str {
        &self.public
    }

    pub fn sign(&self, head: &Head, time: &str, replica: &str) -> Checkpoint {
        let sig = self.key.sign(&Checkpoint::message(head.seq, &head.hash, time, replica));
        Checkpoint {
            seq: head.seq,
            hash: head.hash.clone(),
            time: time.to_owned(),
            replica: replica.to_owned(),
            public_key: self.public.clone(),
            signature: STANDARD.encode(sig.as_ref()),
        }
    }
}

/// DER bytes of a key file: raw DER, or PEM `PRIVATE KEY`.
fn pkcs8_der(bytes: &[u8]) -> Option<Vec<u8>> {
    let text = std::str::from_utf8(bytes).ok();
    match text.map(str::trim) {
        Some(t) if t.starts_with("-----BEGIN PRIVATE KEY-----") => {
            let body: String = t.lines().filter(|l| !l.starts_with("-----")).flat_map(|l| l.trim().chars()).collect();
            STANDARD.decode(body).ok()
        }
        _ => Some(bytes.to_vec()),
    }
}

/// The trusted public key from a file: a PKCS#8 private key (its public
/// half) or a base64 raw public key.
pub fn trusted_key(path: &Path) -> Result<Vec<u8>, AuditError> {
    let bytes = Zeroizing::new(std::fs::read(path).map_err(|source| AuditError::Io {
        op: "read the checkpoint key",
        path: path.to_owned(),
        source,
    })?);
    if let Some(der) = pkcs8_der(&bytes).map(Zeroizing::new)
        && let Ok(key) = Ed25519KeyPair::from_pkcs8_maybe_unchecked(&der)
    {
        return Ok(key.public_key().as_ref().to_vec());
    }
    let text = std::str::from_utf8(&bytes).unwrap_or("").trim();
    match STANDARD.decode(text) {
        Ok(raw) if raw.len() == 32 => Ok(raw),
        _ => Err(AuditError::Key {
            path: path.to_owned(),
            reason: "neither a PKCS#8 Ed25519 key nor a base64 Ed25519 public key".into(),
        }),
    }
}

/// Appends checkpoints to the side file.
pub struct CheckpointFile {
    path: PathBuf,
}

impl CheckpointFile {
    pub fn new(path: PathBuf) -> Self {
        CheckpointFile { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one checkpoint and makes it durable.
    pub fn append(&self, cp: &Checkpoint) -> Result<(), AuditError> {
        let io = |source| AuditError::Io { op: "write a checkpoint", path: self.path.clone(), source };
        let mut line = serde_json::to_vec(cp).map_err(|e| AuditError::Encode { source: e })?;
        line.push(b'\n');
        let mut f = OpenOptions::new().append(true).create(true).open(&self.path).map_err(io)?;
        f.write_all(&line).map_err(io)?;
        f.sync_data().map_err(io)
    }
}

/// Lines of a checkpoint file that are not checkpoints: (line number, why).
pub type Unreadable = Vec<(u64, String)>;

/// Reads a checkpoint file. A line that is not a checkpoint (a torn last
/// write) is returned with its line number.
pub fn read(path: &Path) -> Result<(Vec<Checkpoint>, Unreadable), AuditError> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((Vec::new(), Vec::new())),
        Err(source) => return Err(AuditError::Io { op: "read checkpoints", path: path.to_owned(), source }),
    };
    let mut good = Vec::new();
    let mut bad = Vec::new();
    for (i, line) in BufReader::new(file).split(b'\n').enumerate() {
        let line = line.map_err(|source| AuditError::Io { op: "read checkpoints", path: path.to_owned(), source })?;
        if line.is_empty() {
            continue;
        }
        match serde_json::from_slice::<Checkpoint>(&line) {
            Ok(cp) => good.push(cp),
            Err(e) => bad.push((i as u64 + 1, e.to_string())),
        }
    }
    Ok((good, bad))
}

/// Checkpoints whose signatures verify, as anchors by sequence number, and
/// the ones that do not (with why).
pub fn anchors(
    checkpoints: &[Checkpoint],
    trusted: Option<&[u8]>,
) -> (BTreeMap<u64, Anchor>, Vec<(u64, CheckpointProblem)>) {
    let mut ok = BTreeMap::new();
    let mut bad = Vec::new();
    for cp in checkpoints {
        match cp.verify(trusted) {
            Ok(()) => {
                ok.insert(cp.seq, Anchor { hash: cp.hash.clone(), time: cp.time.clone() });
            }
            Err(p) => bad.push((cp.seq, p)),
        }
    }
    (ok, bad)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_key_signs_checkpoints_that_verify_only_unaltered() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys/checkpoint.pk8");
        let (signer, generated) = Signer::load_or_generate(&path).unwrap();
        assert!(generated);
        let (again, generated) = Signer::load_or_generate(&path).unwrap();
        assert!(!generated);
        assert_eq!(signer.public_key(), again.public_key());
        let head = Head { seq: 42, hash: "ab".repeat(32) };
        let cp = signer.sign(&head, "2026-11-21T00:00:00.000000Z", "r1");
        let trusted = trusted_key(&path).unwrap();
        cp.verify(Some(&trusted)).unwrap();
        let mut forged = cp.clone();
        forged.seq = 41;
        assert_eq!(forged.verify(Some(&trusted)), Err(CheckpointProblem::BadSignature));
        let other = dir.path().join("other.pk8");
        let (mallory, _) = Signer::load_or_generate(&other).unwrap();
        let resigned = mallory.sign(&head, "2026-11-21T00:00:00.000000Z", "r1");
        resigned.verify(None).unwrap();
        assert_eq!(resigned.verify(Some(&trusted)), Err(CheckpointProblem::UntrustedKey));
        use std::os::unix::fs::PermissionsExt as _;
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
    }
}
