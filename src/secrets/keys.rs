//! Keys: age X25519 identities (secret, newest first, all tried for
//! decryption), their public recipients, and the MAC key derived from the
//! newest identity for `gitgate.dev/plaintext-mac`.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::str::FromStr as _;
use std::sync::Arc;

use arc_swap::ArcSwap;

use age::secrecy::ExposeSecret as _;
use zeroize::Zeroizing;

use super::plaintext::{AmbiguousIfDebug, AmbiguousIfDisplay, Plaintext};
use crate::contract::sealed::hex;

/// An age X25519 recipient (public; may be committed).
pub type Recipient = age::x25519::Recipient;

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("failed to read identity file {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to parse identity file {origin}: line {line} is not an age X25519 identity (AGE-SECRET-KEY-1…)")]
    BadIdentity { origin: String, line: usize },
    #[error("failed to load identities from {origin}: it holds no age identity")]
    NoIdentities { origin: String },
    #[error("failed to parse recipient {recipient:?} (from {origin}): {reason}")]
    BadRecipient { origin: String, recipient: String, reason: String },
    #[error("failed to read recipients file {path}")]
    ReadRecipients {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to write identity file {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// One age X25519 identity. No `Debug`/`Display`; the key material is
/// zeroized on drop (x25519-dalek `StaticSecret`).
#[derive(Clone)]
pub struct AgeIdentity(age::x25519::Identity);

impl AgeIdentity {
    pub fn generate() -> Self {
        AgeIdentity(age::x25519::Identity::generate())
    }

    /// Its public recipient (`age1…`).
    pub fn recipient(&self) -> Recipient {
        self.0.to_public()
    }

    /// The identity file text for this one identity (secret).
    pub fn to_file_text(&self) -> Zeroizing<String> {
        let secret = self.0.to_string();
        let mut out = Zeroizing::new(String::with_capacity(160));
        out.push_str("# gitgate age identity (X25519): keep this file secret\n");
        out.push_str("# public key: ");
        out.push_str(&self.recipient().to_string());
        out.push('\n');
        out.push_str(secret.expose_secret());
        out.push('\n');
        out
    }

    fn as_age(&self) -> &dyn age::Identity {
        &self.0
    }
}

/// A cluster's identities, newest first. Every identity is tried when
/// decrypting (old ones stay for values sealed before a rotation).
pub struct IdentitySet {
    identities: Vec<AgeIdentity>,
    mac: MacKey,
}

impl IdentitySet {
    /// One or more identities, newest first (the first one keys the MAC).
    pub fn new(identities: Vec<AgeIdentity>) -> Result<Self, KeyError> {
        let newest = identities.first().ok_or_else(|| KeyError::NoIdentities { origin: "memory".into() })?;
        let mac = MacKey::derive(newest);
        Ok(IdentitySet { identities, mac })
    }

    /// Parses an age identity file: one `AGE-SECRET-KEY-1…` per line,
    /// newest first; blank lines and `#` comments are skipped. Errors name
    /// the line number, never its text.
    pub fn parse(text: &str, origin: &str) -> Result<Self, KeyError> {
        Self::new(parse_identities(text, origin)?)
    }

    /// Reads and parses an identity file; the text is zeroized after parsing.
    pub fn load(path: &Path) -> Result<Self, KeyError> {
        let bytes =
            Zeroizing::new(std::fs::read(path).map_err(|source| KeyError::Read { path: path.to_owned(), source })?);
        let text = std::str::from_utf8(&bytes)
            .map_err(|_| KeyError::BadIdentity { origin: path.display().to_string(), line: 1 })?;
        Self::parse(text, &path.display().to_string())
    }

    pub fn len(&self) -> usize {
        self.identities.len()
    }

    pub fn is_empty(&self) -> bool {
        self.identities.is_empty()
    }

    /// The public recipients, newest first.
    pub fn recipients(&self) -> Vec<Recipient> {
        self.identities.iter().map(AgeIdentity::recipient).collect()
    }

    pub fn mac_key(&self) -> &MacKey {
        &self.mac
    }

    /// Whether `mac` is the MAC of `values` under any identity of the set
    /// (the newest keys new MACs; older ones keyed values unsealed before
    /// a rotation).
    pub fn verifies<'a>(&self, mac: &str, values: &[(&'a str, &'a Plaintext)]) -> bool {
        self.mac.mac(values.iter().copied()) == mac
            || self.identities.iter().skip(1).any(|id| MacKey::derive(id).mac(values.iter().copied()) == mac)
    }

    pub(crate) fn as_age(&self) -> impl Iterator<Item = &dyn age::Identity> {
        self.identities.iter().map(AgeIdentity::as_age)
    }
}

/// Parses identity-file text: one `AGE-SECRET-KEY-1…` per line, in the
/// order given; blank lines and `#` comments are skipped. At least one.
pub fn parse_identities(text: &str, origin: &str) -> Result<Vec<AgeIdentity>, KeyError> {
    let mut identities = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let id = age::x25519::Identity::from_str(line)
            .map_err(|_| KeyError::BadIdentity { origin: origin.to_owned(), line: i + 1 })?;
        identities.push(AgeIdentity(id));
    }
    if identities.is_empty() {
        return Err(KeyError::NoIdentities { origin: origin.to_owned() });
    }
    Ok(identities)
}

/// The identities in force, shared by every request and swapped whole when
/// the cluster's identities change: a request decrypts and MACs with one
/// snapshot, never half of an old set and half of a new one.
#[derive(Clone)]
pub struct Keyring(Arc<ArcSwap<IdentitySet>>);

impl Keyring {
    pub fn new(identities: Arc<IdentitySet>) -> Self {
        Keyring(Arc::new(ArcSwap::new(identities)))
    }

    /// The current snapshot.
    pub fn current(&self) -> Arc<IdentitySet> {
        self.0.load_full()
    }

    /// Replaces the snapshot (a rotation).
    pub fn replace(&self, identities: Arc<IdentitySet>) {
        self.0.store(identities);
    }

    /// The current public recipients, newest first.
    pub fn recipients(&self) -> Vec<Recipient> {
        self.0.load().recipients()
    }
}

/// The key of `gitgate.dev/plaintext-mac`: HMAC-SHA256 keyed with
/// HMAC-SHA256("gitgate.dev/plaintext-mac/v1", newest identity), so every
/// replica holding the identities computes the same MAC and nobody without
/// them can confirm a guess of the plaintext.
pub struct MacKey(ring::hmac::Key);

impl MacKey {
    pub fn derive(identity: &AgeIdentity) -> Self {
        let secret = identity.0.to_string();
        let kdf = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, b"gitgate.dev/plaintext-mac/v1");
        let tag = ring::hmac::sign(&kdf, secret.expose_secret().as_bytes());
        MacKey(ring::hmac::Key::new(ring::hmac::HMAC_SHA256, tag.as_ref()))
    }

    /// `hmac-sha256:<hex>` over the values sorted by key, framed like
    /// [`crate::contract::sealed::sealed_digest`].
    pub fn mac<'a>(&self, values: impl IntoIterator<Item = (&'a str, &'a Plaintext)>) -> String {
        let mut sorted: Vec<(&str, &Plaintext)> = values.into_iter().collect();
        sorted.sort_by(|a, b| a.0.cmp(b.0));
        let mut ctx = ring::hmac::Context::with_key(&self.0);
        ctx.update(b"gitgate.dev/plaintext-mac/v1\n");
        for (k, v) in sorted {
            ctx.update(&(k.len() as u64).to_be_bytes());
            ctx.update(k.as_bytes());
            ctx.update(&(v.len() as u64).to_be_bytes());
            ctx.update(v.expose());
        }
        format!("hmac-sha256:{}", hex(ctx.sign().as_ref()))
    }
}

/// Parses recipients: `age1…` separated by whitespace or lines; `#`
/// comments skipped.
pub fn parse_recipients(text: &str, origin: &str) -> Result<Vec<Recipient>, KeyError> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("");
        for word in line.split_whitespace() {
            out.push(parse_recipient(word, origin)?);
        }
    }
    Ok(out)
}

pub fn parse_recipient(s: &str, origin: &str) -> Result<Recipient, KeyError> {
    Recipient::from_str(s.trim()).map_err(|reason| KeyError::BadRecipient {
        origin: origin.to_owned(),
        recipient: s.to_owned(),
        reason: reason.to_string(),
    })
}

pub fn load_recipients(path: &Path) -> Result<Vec<Recipient>, KeyError> {
    let text =
        std::fs::read_to_string(path).map_err(|source| KeyError::ReadRecipients { path: path.to_owned(), source })?;
    parse_recipients(&text, &path.display().to_string())
}

/// Writes a new identity to `path` with mode 0600; refuses to overwrite.
pub fn write_identity_file(identity: &AgeIdentity, path: &Path) -> Result<(), KeyError> {
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        opts.mode(0o600);
    }
    let err = |source| KeyError::Write { path: path.to_owned(), source };
    let mut f = opts.open(path).map_err(err)?;
    f.write_all(identity.to_file_text().as_bytes()).map_err(err)?;
    f.sync_all().map_err(err)?;
    Ok(())
}

/// Compile-time proof that no key type has `Debug` (nor `Display` for an
/// identity); see [`AmbiguousIfDebug`].
const _: fn() = || {
    <AgeIdentity as AmbiguousIfDebug<_>>::check();
    <AgeIdentity as AmbiguousIfDisplay<_>>::check();
    <IdentitySet as AmbiguousIfDebug<_>>::check();
    <MacKey as AmbiguousIfDebug<_>>::check();
    <Keyring as AmbiguousIfDebug<_>>::check();
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_file_round_trip_newest_first() {
        let a = AgeIdentity::generate();
        let b = AgeIdentity::generate();
        let text = format!("{}\n\n# old key\n{}", a.to_file_text().as_str(), b.to_file_text().as_str());
        let set = IdentitySet::parse(&text, "test").unwrap();
        assert_eq!(set.len(), 2);
        assert_eq!(set.recipients(), vec![a.recipient(), b.recipient()]);
    }

    #[test]
    fn bad_identity_line_is_named_by_number_not_text() {
        let err = IdentitySet::parse("# c\nAGE-SECRET-KEY-1NOTAKEY\n", "f").err().unwrap();
        let msg = err.to_string();
        assert!(msg.contains("line 2"), "{msg}");
        assert!(!msg.contains("NOTAKEY"), "{msg}");
        assert!(matches!(IdentitySet::parse("# only comments\n", "f"), Err(KeyError::NoIdentities { .. })));
    }

    #[test]
    fn mac_depends_on_key_and_values() {
        let a = IdentitySet::new(vec![AgeIdentity::generate()]).unwrap();
        let b = IdentitySet::new(vec![AgeIdentity::generate()]).unwrap();
        let v = Plaintext::copy_from(b"pw");
        let w = Plaintext::copy_from(b"pW");
        let m = a.mac_key().mac([("k", &v)]);
        assert_eq!(m, a.mac_key().mac([("k", &v)]));
        assert_ne!(m, b.mac_key().mac([("k", &v)]));
        assert_ne!(m, a.mac_key().mac([("k", &w)]));
        assert!(m.starts_with("hmac-sha256:"));
    }

    #[test]
    fn recipients_file_with_comments() {
        let id = AgeIdentity::generate();
        let text = format!("# cluster a\n{}  # inline\n\n", id.recipient());
        assert_eq!(parse_recipients(&text, "t").unwrap(), vec![id.recipient()]);
        assert!(parse_recipients("age1nope", "t").is_err());
    }

    #[cfg(unix)]
    #[test]
    fn identity_file_is_0600_and_never_overwritten() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key.txt");
        let id = AgeIdentity::generate();
        write_identity_file(&id, &path).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        assert!(write_identity_file(&AgeIdentity::generate(), &path).is_err());
        let set = IdentitySet::load(&path).unwrap();
        assert_eq!(set.recipients(), vec![id.recipient()]);
    }
}
