//! The secrets bridge: age-sealed Secrets in Git (and `vault:` references)
//! turned into plaintext only at admission, inside the cluster.
//!
//! Top to bottom:
//! - [`plaintext`]: the one type that holds secret bytes (no `Debug`,
//!   zeroized on drop);
//! - [`keys`]: age X25519 identities (newest first) and the MAC key derived
//!   from them;
//! - [`seal`]: one value ⇄ one armored age file whose plaintext is an
//!   envelope binding the value to its scope;
//! - [`manifest`]: `seal`, `seal --check` and `reseal` on Secret manifests
//!   (offline, used by the CLI);
//! - [`vault`]: `vault:<mount>/<path>#<key>[#<version>]` references;
//! - [`stage`]: the mutating admission stage that unseals a Secret into a
//!   JSONPatch;
//! - [`cluster`]: the cluster's identities in Secrets (load, bootstrap,
//!   follow rotations) and `GET /api/v1/recipients`;
//!
//! `gitgate keygen | seal | reseal | recipients` is in `cmd::secrets`.
//!
//! Owns: secret bytes ([`Plaintext`]), age keys and the MAC key, sealing,
//! `vault:` references, the unsealing admission stage and the cluster's
//! identity Secrets. Inside the folder, `plaintext` is a leaf, `keys`
//! builds on it and `cluster` on `keys`. The annotation names and a sealed
//! Secret's Git digest are the contract's (`crate::contract`), shared with
//! the gate and the loop.
//!
//! Imports from outside: [`crate::contract`], [`crate::admission`] (the
//! stage traits and request types it plugs into), `crate::render::config`
//! (`VaultAccess`, the default project) and `crate::provenance::Snapshot`
//! (the deployed commit, in `stage`).
//!
//! Must never import: `sync`, `source`, `policy`, `audit`, `promotion`,
//! `dashboard`, `server` — they build on secrets, not the other way.

pub mod cluster;
pub mod keys;
pub mod manifest;
pub mod plaintext;
pub mod seal;
pub mod stage;
pub mod vault;

pub use keys::{AgeIdentity, IdentitySet, KeyError, Keyring, MacKey};
pub use plaintext::Plaintext;
pub use seal::{Binding, Limits, Scope, SealError};
pub use stage::SecretsStage;

/// The first line of an armored age file.
pub const ARMOR_BEGIN: &str = "-----BEGIN AGE ENCRYPTED FILE-----";
/// The first bytes of a binary age file.
pub const AGE_BINARY_MAGIC: &str = "age-encryption.org/";
/// The prefix of a Vault reference.
pub const VAULT_PREFIX: &str = "vault:";

/// Whether a value looks like something that must never be admitted as a
/// Secret's plaintext (age ciphertext or a Vault reference).
pub fn looks_sealed(value: &[u8]) -> bool {
    let trimmed = value.trim_ascii_start();
    trimmed.starts_with(ARMOR_BEGIN.as_bytes())
        || trimmed.starts_with(AGE_BINARY_MAGIC.as_bytes())
        || value.starts_with(VAULT_PREFIX.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Regression (issue 15, item 6): the unseal stamped a MAC nobody
    /// checked, so values changed while the webhook was down stayed
    /// "Synced". The sync loop now tells intact values from changed ones,
    /// across a key rotation too.
    #[test]
    fn values_are_checked_against_the_mac_the_unseal_stamped() {
        use base64::Engine as _;
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        let old = AgeIdentity::generate();
        let old_text = old.to_file_text();
        let keys = IdentitySet::new(vec![old]).unwrap();
        let (pw, user) = (Plaintext::new(b"hunter2".to_vec()), Plaintext::new(b"app".to_vec()));
        let mac = keys.mac_key().mac([("password", &pw), ("user", &user)]);
        let live = |password: &str, mac: Option<&str>| {
            let mut v = serde_json::json!({"metadata": {"annotations": {}}, "data": {"user": b64("app"), "password": b64(password)}});
            if let Some(m) = mac {
                v["metadata"]["annotations"][crate::contract::PLAINTEXT_MAC] = m.into();
            }
            v
        };
        assert_eq!(values_of(&keys, &live("hunter2", Some(&mac))), Values::Intact);
        assert_eq!(values_of(&keys, &live("hunter3", Some(&mac))), Values::Changed);
        assert_eq!(values_of(&keys, &live("hunter2", None)), Values::Unknown);
        let mut extra = live("hunter2", Some(&mac));
        extra["data"]["token"] = b64("x").into();
        assert_eq!(values_of(&keys, &extra), Values::Changed, "a key added by hand");
        let mut bad = live("hunter2", Some(&mac));
        bad["data"]["password"] = "not base64!".into();
        assert_eq!(values_of(&keys, &bad), Values::Changed);
        // After a rotation the old identity still verifies what it MACed.
        let mut ids = vec![AgeIdentity::generate()];
        ids.extend(keys::parse_identities(&old_text, "test").unwrap());
        let rotated = IdentitySet::new(ids).unwrap();
        assert_eq!(values_of(&rotated, &live("hunter2", Some(&mac))), Values::Intact);
        assert_eq!(values_of(&rotated, &live("hunter3", Some(&mac))), Values::Changed);
    }

    #[test]
    fn sealed_looking_values() {
        assert!(looks_sealed(b"-----BEGIN AGE ENCRYPTED FILE-----\nabc"));
        assert!(looks_sealed(b"age-encryption.org/v1\n-> X25519"));
        assert!(looks_sealed(b"vault:secret/app#password"));
        assert!(!looks_sealed(b"hunter2"));
    }
}

/// Where a sealed Secret's values stand against what gitgate unsealed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Values {
    /// `data` is what the unseal wrote (its MAC matches).
    Intact,
    /// `data` changed since the unseal: a hand edit, or a write that got
    /// past a stopped webhook.
    Changed,
    /// No `gitgate.dev/plaintext-mac` to check against.
    Unknown,
}

/// Checks a live Secret's `data` against the `gitgate.dev/plaintext-mac`
/// the unseal stamped on it. The values are decoded into zeroizing
/// buffers, MACed and dropped here: nothing of them leaves this function.
pub fn values_of(keys: &IdentitySet, live: &serde_json::Value) -> Values {
    use base64::Engine as _;
    let Some(mac) = live
        .pointer("/metadata/annotations")
        .and_then(|a| a.get(crate::contract::PLAINTEXT_MAC))
        .and_then(|m| m.as_str())
    else {
        return Values::Unknown;
    };
    let empty = serde_json::Map::new();
    let data = live.get("data").and_then(|d| d.as_object()).unwrap_or(&empty);
    let mut decoded: Vec<(&str, Plaintext)> = Vec::with_capacity(data.len());
    for (k, v) in data {
        let Some(bytes) = v.as_str().and_then(|s| base64::engine::general_purpose::STANDARD.decode(s).ok()) else {
            return Values::Changed;
        };
        decoded.push((k.as_str(), Plaintext::new(bytes)));
    }
    let values: Vec<(&str, &Plaintext)> = decoded.iter().map(|(k, v)| (*k, v)).collect();
    if keys.verifies(mac, &values) { Values::Intact } else { Values::Changed }
}
