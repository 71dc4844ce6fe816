//! One Secret value ⇄ one armored age file.
//!
//! What is encrypted is an *envelope*: a magic line, a JSON header that
//! binds the value to its scope (`strict`: namespace + name + key;
//! `namespace`: namespace + key; `cluster`: key), then the value's bytes.
//! The binding lives inside the ciphertext, so it cannot be changed without
//! the recipients' keys; the `gitgate.dev/seal-scope` annotation is a hint
//! only. Before any decryption the age header is parsed: armor that does
//! not decode, a header that does not end, a value over the size limit, or
//! an scrypt (passphrase) stanza — which would cost about a second — is
//! refused without touching a key.

use std::io::{Read as _, Write as _};

use age::armor::{ArmoredReader, ArmoredWriter, Format};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::keys::{IdentitySet, Recipient};
use super::plaintext::Plaintext;

const ENVELOPE_MAGIC: &[u8] = b"gitgate.dev/envelope/v1\n";
/// Room for the envelope header (namespace 63 + name 253 + key 253 + JSON).
const ENVELOPE_HEADER_MAX: usize = 1024;

/// Where a sealed value may be materialized.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// Namespace, name and key must match (the default).
    Strict,
    /// Namespace and key must match; any name.
    Namespace,
    /// Key must match; any namespace and name.
    Cluster,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Strict => "strict",
            Scope::Namespace => "namespace",
            Scope::Cluster => "cluster",
        }
    }
}

impl std::fmt::Display for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Scope {
    type Err = SealError;
    fn from_str(s: &str) -> Result<Self, SealError> {
        match s {
            "strict" => Ok(Scope::Strict),
            "namespace" => Ok(Scope::Namespace),
            "cluster" => Ok(Scope::Cluster),
            other => Err(SealError::UnknownScope { scope: other.to_owned() }),
        }
    }
}

/// Bounds on one value.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Largest plaintext value (a whole Secret is at most 1 MiB).
    pub max_value_bytes: usize,
    /// Largest sealed (armored) value accepted for decryption.
    pub max_sealed_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_value_bytes: 1024 * 1024, max_sealed_bytes: 2 * 1024 * 1024 }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error("unknown seal scope {scope:?}: expected strict, namespace or cluster")]
    UnknownScope { scope: String },
    #[error("failed to bind a value with scope {scope}: the Secret has no {missing}")]
    MissingBinding { scope: Scope, missing: &'static str },
    #[error("value is not age armor (expected it to begin with -----BEGIN AGE ENCRYPTED FILE-----)")]
    NotArmored,
    #[error("sealed value is {size} bytes, over the limit of {limit} bytes")]
    SealedTooLarge { size: usize, limit: usize },
    #[error("plaintext value is over the limit of {limit} bytes")]
    PlaintextTooLarge { limit: usize },
    #[error("failed to decode age armor (corrupted or truncated)")]
    Armor {
        #[source]
        source: std::io::Error,
    },
    #[error("age header is malformed: {reason}")]
    BadHeader { reason: &'static str },
    #[error("refused: the value is sealed with an scrypt passphrase stanza, which gitgate never decrypts")]
    Scrypt,
    #[error("the value has no X25519 recipient stanza (found: {found})")]
    NoX25519 { found: String },
    #[error("none of the cluster's age identities can decrypt the value (sealed for other recipients)")]
    WrongKey,
    #[error("failed to decrypt the value: the ciphertext is corrupted or truncated")]
    Corrupted {
        #[source]
        source: age::DecryptError,
    },
    #[error("failed to decrypt the value: the payload is corrupted or truncated")]
    Payload {
        #[source]
        source: std::io::Error,
    },
    #[error("decrypted value is not a gitgate envelope: {reason}")]
    BadEnvelope { reason: &'static str },
    #[error("scope mismatch: the value is sealed with scope {scope} for {bound}, but is being admitted as {actual}")]
    ScopeMismatch { scope: Scope, bound: String, actual: String },
    #[error("failed to encrypt the value")]
    Encrypt {
        #[source]
        source: age::EncryptError,
    },
    #[error("failed to write the age armor")]
    Write {
        #[source]
        source: std::io::Error,
    },
    #[error("failed to encrypt: no recipient given")]
    NoRecipients,
}

/// The scope a value is bound to, as sealed inside its ciphertext.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Binding {
    pub scope: Scope,
    /// Set for `strict` and `namespace`.
    pub namespace: Option<String>,
    /// Set for `strict`.
    pub name: Option<String>,
    pub key: String,
}

impl Binding {
    /// The binding of `key` in the Secret `namespace/name` under `scope`.
    pub fn for_object(scope: Scope, namespace: &str, name: &str, key: &str) -> Result<Self, SealError> {
        let need = |v: &str, missing| {
            if v.is_empty() { Err(SealError::MissingBinding { scope, missing }) } else { Ok(Some(v.to_owned())) }
        };
        let (namespace, name) = match scope {
            Scope::Strict => (need(namespace, "namespace")?, need(name, "name")?),
            Scope::Namespace => (need(namespace, "namespace")?, None),
            Scope::Cluster => (None, None),
        };
        Ok(Binding { scope, namespace, name, key: key.to_owned() })
    }

    /// Checks that this binding admits `key` of the Secret `namespace/name`.
    pub fn check(&self, namespace: &str, name: &str, key: &str) -> Result<(), SealError> {
        let ns_ok = self.namespace.as_deref().is_none_or(|n| n == namespace);
        let name_ok = self.name.as_deref().is_none_or(|n| n == name);
        if ns_ok && name_ok && self.key == key {
            return Ok(());
        }
        let show = |v: &str| if v.is_empty() { "(none)".to_owned() } else { v.to_owned() };
        Err(SealError::ScopeMismatch {
            scope: self.scope,
            bound: self.describe(),
            actual: format!("namespace {}, name {}, key {key:?}", show(namespace), show(name)),
        })
    }

    fn describe(&self) -> String {
        match (&self.namespace, &self.name) {
            (Some(ns), Some(n)) => format!("namespace {ns}, name {n}, key {:?}", self.key),
            (Some(ns), None) => format!("namespace {ns}, any name, key {:?}", self.key),
            _ => format!("any namespace, key {:?}", self.key),
        }
    }
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct EnvelopeHeader {
    scope: Scope,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    namespace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    name: Option<String>,
    key: String,
}

/// Encrypts `value` bound to `binding` for every recipient; returns the
/// armored age file.
pub fn seal(
    value: &Plaintext,
    binding: &Binding,
    recipients: &[Recipient],
    limits: &Limits,
) -> Result<String, SealError> {
    if value.len() > limits.max_value_bytes {
        return Err(SealError::PlaintextTooLarge { limit: limits.max_value_bytes });
    }
    if recipients.is_empty() {
        return Err(SealError::NoRecipients);
    }
    let header = EnvelopeHeader {
        scope: binding.scope,
        namespace: binding.namespace.clone(),
        name: binding.name.clone(),
        key: binding.key.clone(),
    };
    // Serializing strings cannot fail.
    let header = serde_json::to_vec(&header).unwrap_or_default();
    let mut envelope = Zeroizing::new(Vec::with_capacity(ENVELOPE_MAGIC.len() + header.len() + 1 + value.len()));
    envelope.extend_from_slice(ENVELOPE_MAGIC);
    envelope.extend_from_slice(&header);
    envelope.push(b'\n');
    envelope.extend_from_slice(value.expose());

    let encryptor = age::Encryptor::with_recipients(recipients.iter().map(|r| r as &dyn age::Recipient))
        .map_err(|source| SealError::Encrypt { source })?;
    let write = |source| SealError::Write { source };
    let armor =
        ArmoredWriter::wrap_output(Vec::with_capacity(envelope.len() * 2 + 512), Format::AsciiArmor).map_err(write)?;
    let mut w = encryptor.wrap_output(armor).map_err(write)?;
    w.write_all(&envelope).map_err(write)?;
    let out = w.finish().and_then(ArmoredWriter::finish).map_err(write)?;
    // Armor is ASCII.
    String::from_utf8(out).map_err(|_| SealError::Write { source: std::io::Error::other("armor is not UTF-8") })
}

/// What can be learned about a sealed value without a key.
pub struct Inspected {
    /// The binary age file (public).
    pub ciphertext: Vec<u8>,
    /// The recipient stanza types, in order (`X25519`, …).
    pub stanzas: Vec<String>,
}

/// Checks a sealed value offline: size, armor, age header, stanza types
/// (scrypt refused, at least one X25519).
pub fn inspect(sealed: &[u8], limits: &Limits) -> Result<Inspected, SealError> {
    if sealed.len() > limits.max_sealed_bytes {
        return Err(SealError::SealedTooLarge { size: sealed.len(), limit: limits.max_sealed_bytes });
    }
    if !sealed.trim_ascii_start().starts_with(super::ARMOR_BEGIN.as_bytes()) {
        return Err(SealError::NotArmored);
    }
    let mut ciphertext = Vec::with_capacity(sealed.len());
    ArmoredReader::new(sealed).read_to_end(&mut ciphertext).map_err(|source| SealError::Armor { source })?;
    let stanzas = stanza_tags(&ciphertext)?;
    if stanzas.iter().any(|t| t == "scrypt") {
        return Err(SealError::Scrypt);
    }
    if !stanzas.iter().any(|t| t == "X25519") {
        return Err(SealError::NoX25519 { found: stanzas.join(", ") });
    }
    Ok(Inspected { ciphertext, stanzas })
}

/// The stanza tags of an age v1 header, up to its `---` line.
fn stanza_tags(file: &[u8]) -> Result<Vec<String>, SealError> {
    let mut lines = file.split(|b| *b == b'\n');
    if lines.next() != Some(b"age-encryption.org/v1".as_slice()) {
        return Err(SealError::BadHeader { reason: "not an age v1 file" });
    }
    let mut tags = Vec::new();
    for line in lines {
        if let Some(args) = line.strip_prefix(b"-> ") {
            let tag = args.split(|b| *b == b' ').next().unwrap_or_default();
            if tag.is_empty() || tags.len() >= 64 {
                return Err(SealError::BadHeader { reason: "bad recipient stanza" });
            }
            tags.push(String::from_utf8_lossy(tag).into_owned());
        } else if line.starts_with(b"---") {
            if tags.is_empty() {
                return Err(SealError::BadHeader { reason: "no recipient stanza" });
            }
            return Ok(tags);
        }
    }
    Err(SealError::BadHeader { reason: "the header never ends (truncated)" })
}

/// A decrypted value and the binding it was sealed with.
pub struct Opened {
    pub binding: Binding,
    pub value: Plaintext,
}

/// Decrypts a sealed value with any of `identities`. The caller checks
/// `Opened::binding` against the object (see [`open_for`]).
pub fn open(sealed: &[u8], identities: &IdentitySet, limits: &Limits) -> Result<Opened, SealError> {
    let inspected = inspect(sealed, limits)?;
    let decryptor = age::Decryptor::new_buffered(inspected.ciphertext.as_slice()).map_err(map_decrypt)?;
    let reader = decryptor.decrypt(identities.as_age()).map_err(map_decrypt)?;
    let cap = limits.max_value_bytes + ENVELOPE_MAGIC.len() + ENVELOPE_HEADER_MAX + 1;
    // Preallocated so the buffer never moves (a move would leave an
    // unzeroized copy behind).
    let mut buf = Zeroizing::new(Vec::with_capacity(inspected.ciphertext.len().min(cap) + 64));
    reader.take(cap as u64).read_to_end(&mut buf).map_err(|source| SealError::Payload { source })?;
    if buf.len() >= cap {
        return Err(SealError::PlaintextTooLarge { limit: limits.max_value_bytes });
    }
    parse_envelope(&buf, limits)
}

/// Decrypts and checks the binding against `key` of `namespace/name`.
pub fn open_for(
    sealed: &[u8],
    identities: &IdentitySet,
    limits: &Limits,
    namespace: &str,
    name: &str,
    key: &str,
) -> Result<Plaintext, SealError> {
    let opened = open(sealed, identities, limits)?;
    opened.binding.check(namespace, name, key)?;
    Ok(opened.value)
}

fn map_decrypt(e: age::DecryptError) -> SealError {
    match e {
        age::DecryptError::NoMatchingKeys => SealError::WrongKey,
        age::DecryptError::ExcessiveWork { .. } => SealError::Scrypt,
        age::DecryptError::InvalidHeader => SealError::BadHeader { reason: "age rejected the header" },
        age::DecryptError::UnknownFormat => SealError::BadHeader { reason: "unknown age format version" },
        source => SealError::Corrupted { source },
    }
}

pub(crate) fn parse_envelope(buf: &[u8], limits: &Limits) -> Result<Opened, SealError> {
    let bad = |reason| SealError::BadEnvelope { reason };
    let rest = buf.strip_prefix(ENVELOPE_MAGIC).ok_or(bad("missing envelope magic"))?;
    let nl = rest.iter().take(ENVELOPE_HEADER_MAX + 1).position(|b| *b == b'\n').ok_or(bad("header too long"))?;
    let (head, value) = rest.split_at(nl);
    let value = value.get(1..).unwrap_or_default();
    // The serde error could quote the header; it is replaced by a fixed reason.
    let header: EnvelopeHeader = serde_json::from_slice(head).map_err(|_| bad("malformed header"))?;
    let consistent = match header.scope {
        Scope::Strict => header.namespace.is_some() && header.name.is_some(),
        Scope::Namespace => header.namespace.is_some() && header.name.is_none(),
        Scope::Cluster => header.namespace.is_none() && header.name.is_none(),
    };
    if !consistent {
        return Err(bad("header fields do not match its scope"));
    }
    if value.len() > limits.max_value_bytes {
        return Err(SealError::PlaintextTooLarge { limit: limits.max_value_bytes });
    }
    let binding = Binding { scope: header.scope, namespace: header.namespace, name: header.name, key: header.key };
    Ok(Opened { binding, value: Plaintext::copy_from(value) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secrets::keys::AgeIdentity;

    fn ids() -> IdentitySet {
        IdentitySet::new(vec![AgeIdentity::generate()]).unwrap()
    }

    fn strict(key: &str) -> Binding {
        Binding::for_object(Scope::Strict, "prod", "db", key).unwrap()
    }

    #[test]
    fn round_trip_binds_scope_inside() {
        let set = ids();
        let sealed =
            seal(&Plaintext::copy_from(b"pw\x00\xff"), &strict("password"), &set.recipients(), &Limits::default())
                .unwrap();
        assert!(sealed.starts_with(crate::secrets::ARMOR_BEGIN));
        let v = open_for(sealed.as_bytes(), &set, &Limits::default(), "prod", "db", "password").unwrap();
        assert_eq!(v.expose(), b"pw\x00\xff");
        for (ns, name, key) in [("dev", "db", "password"), ("prod", "other", "password"), ("prod", "db", "user")] {
            let err = open_for(sealed.as_bytes(), &set, &Limits::default(), ns, name, key).err().unwrap();
            assert!(matches!(err, SealError::ScopeMismatch { .. }), "{ns}/{name}/{key}: {err}");
        }
    }

    #[test]
    fn namespace_and_cluster_scopes() {
        let set = ids();
        let l = Limits::default();
        let b = Binding::for_object(Scope::Namespace, "prod", "db", "k").unwrap();
        let s = seal(&Plaintext::copy_from(b"v"), &b, &set.recipients(), &l).unwrap();
        assert!(open_for(s.as_bytes(), &set, &l, "prod", "anything", "k").is_ok());
        assert!(open_for(s.as_bytes(), &set, &l, "dev", "db", "k").is_err());
        let b = Binding::for_object(Scope::Cluster, "", "", "k").unwrap();
        let s = seal(&Plaintext::copy_from(b"v"), &b, &set.recipients(), &l).unwrap();
        assert!(open_for(s.as_bytes(), &set, &l, "any", "thing", "k").is_ok());
        assert!(open_for(s.as_bytes(), &set, &l, "any", "thing", "other").is_err());
        assert!(matches!(
            Binding::for_object(Scope::Strict, "prod", "", "k"),
            Err(SealError::MissingBinding { missing: "name", .. })
        ));
    }

    #[test]
    fn several_recipients_and_old_identities() {
        let cluster = AgeIdentity::generate();
        let recovery = AgeIdentity::generate();
        let l = Limits::default();
        let s =
            seal(&Plaintext::copy_from(b"v"), &strict("k"), &[cluster.recipient(), recovery.recipient()], &l).unwrap();
        // age adds random "grease" stanzas too; those are ignored.
        let stanzas = inspect(s.as_bytes(), &l).unwrap().stanzas;
        assert_eq!(stanzas.iter().filter(|t| *t == "X25519").count(), 2, "{stanzas:?}");
        let rec = IdentitySet::new(vec![recovery]).unwrap();
        assert!(open(s.as_bytes(), &rec, &l).is_ok());
        // Rotated: the new identity first, the old one still decrypts.
        let rotated = IdentitySet::new(vec![AgeIdentity::generate(), cluster]).unwrap();
        assert!(open(s.as_bytes(), &rotated, &l).is_ok());
        assert!(matches!(open(s.as_bytes(), &ids(), &l), Err(SealError::WrongKey)));
    }

    #[test]
    fn scrypt_is_refused_before_decryption() {
        let pass = age::secrecy::SecretString::from("correct horse".to_owned());
        let enc = age::Encryptor::with_user_passphrase(pass);
        let mut out = vec![];
        let armor = ArmoredWriter::wrap_output(&mut out, Format::AsciiArmor).unwrap();
        let mut w = enc.wrap_output(armor).unwrap();
        w.write_all(b"x").unwrap();
        w.finish().unwrap().finish().unwrap();
        let start = std::time::Instant::now();
        assert!(matches!(open(&out, &ids(), &Limits::default()), Err(SealError::Scrypt)));
        assert!(matches!(inspect(&out, &Limits::default()), Err(SealError::Scrypt)));
        // Not a timing assertion on speed, a guard that no scrypt work ran.
        assert!(start.elapsed() < std::time::Duration::from_millis(500));
    }

    #[test]
    fn corrupted_truncated_and_oversized_are_clear_errors() {
        let set = ids();
        let l = Limits::default();
        let s = seal(&Plaintext::copy_from(&[7u8; 300]), &strict("k"), &set.recipients(), &l).unwrap();
        assert!(matches!(open(b"hunter2", &set, &l), Err(SealError::NotArmored)));
        // Truncated: drop the last lines (END marker and part of the body).
        let lines: Vec<&str> = s.lines().collect();
        let truncated = lines[..lines.len() - 2].join("\n");
        let err = open(truncated.as_bytes(), &set, &l).err().unwrap();
        assert!(
            matches!(err, SealError::Armor { .. } | SealError::Payload { .. } | SealError::Corrupted { .. }),
            "{err}"
        );
        // A flipped character in the body.
        let mut bytes = s.clone().into_bytes();
        let i = bytes.len() / 2;
        bytes[i] = if bytes[i] == b'A' { b'B' } else { b'A' };
        let err = open(&bytes, &set, &l).err().unwrap();
        assert!(
            matches!(
                err,
                SealError::Armor { .. }
                    | SealError::Payload { .. }
                    | SealError::Corrupted { .. }
                    | SealError::BadHeader { .. }
            ),
            "{err}"
        );
        let small = Limits { max_value_bytes: 100, max_sealed_bytes: 10_000 };
        assert!(matches!(open(s.as_bytes(), &set, &small), Err(SealError::PlaintextTooLarge { limit: 100 })));
        let tiny = Limits { max_value_bytes: 100, max_sealed_bytes: 200 };
        assert!(matches!(open(s.as_bytes(), &set, &tiny), Err(SealError::SealedTooLarge { .. })));
        assert!(matches!(
            seal(&Plaintext::copy_from(&[0u8; 101]), &strict("k"), &set.recipients(), &small),
            Err(SealError::PlaintextTooLarge { .. })
        ));
    }

    #[test]
    fn plain_age_file_without_envelope_is_refused() {
        let set = ids();
        let r = set.recipients();
        let armored = age::encrypt_and_armor(&r[0], b"raw value, no envelope").unwrap();
        assert!(matches!(open(armored.as_bytes(), &set, &Limits::default()), Err(SealError::BadEnvelope { .. })));
    }
}
