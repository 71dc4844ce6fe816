//! A sealed Secret's Git digest: what the mutating webhook stamps as
//! `gitgate.dev/sealed-digest` when it unseals, and what the gate and the
//! loop compare instead of values only the webhook ever sees.

use super::{SEALED, SEALED_AGE};

/// `sha256:<hex>` over the sealed forms, sorted by key, each framed as
/// `len(key) key len(value) value` (u64 big-endian lengths), so neither a
/// key nor a value can be shifted into its neighbour.
pub fn sealed_digest<'a>(values: impl IntoIterator<Item = (&'a str, &'a [u8])>) -> String {
    use sha2::Digest as _;
    let mut sorted: Vec<(&str, &[u8])> = values.into_iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(b.0));
    let mut h = sha2::Sha256::new();
    h.update(b"gitgate.dev/sealed-digest/v1\n");
    for (k, v) in sorted {
        h.update((k.len() as u64).to_be_bytes());
        h.update(k.as_bytes());
        h.update((v.len() as u64).to_be_bytes());
        h.update(v);
    }
    format!("sha256:{}", hex(&h.finalize()))
}

/// For a sealed Secret as Git holds it (`gitgate.dev/sealed: age`), the
/// `gitgate.dev/sealed-digest` the mutating webhook stamps when it unseals
/// it: the digest of the values exactly as sealed (`data` base64-decoded,
/// `stringData` winning, as the apiserver folds them). `None` for anything
/// else. The sync loop and the provenance check compare this instead of the
/// values, which only the webhook ever sees in plaintext.
pub fn git_sealed_digest(manifest: &serde_json::Value) -> Option<String> {
    use base64::Engine as _;
    if manifest.get("kind").and_then(serde_json::Value::as_str) != Some("Secret") {
        return None;
    }
    let marker = manifest.pointer("/metadata/annotations").and_then(|a| a.get(SEALED))?;
    if marker.as_str() != Some(SEALED_AGE) {
        return None;
    }
    let mut values: std::collections::BTreeMap<String, Vec<u8>> = std::collections::BTreeMap::new();
    for (k, v) in manifest.get("data").and_then(serde_json::Value::as_object).into_iter().flatten() {
        let bytes = base64::engine::general_purpose::STANDARD.decode(v.as_str()?).ok()?;
        values.insert(k.clone(), bytes);
    }
    for (k, v) in manifest.get("stringData").and_then(serde_json::Value::as_object).into_iter().flatten() {
        values.insert(k.clone(), v.as_str()?.as_bytes().to_vec());
    }
    Some(sealed_digest(values.iter().map(|(k, v)| (k.as_str(), v.as_slice()))))
}

/// Lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 0xf)] as char);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_is_order_independent_and_framed() {
        let a = sealed_digest([("a", b"xy".as_slice()), ("b", b"z".as_slice())]);
        let b = sealed_digest([("b", b"z".as_slice()), ("a", b"xy".as_slice())]);
        assert_eq!(a, b);
        let shifted = sealed_digest([("a", b"x".as_slice()), ("b", b"yz".as_slice())]);
        assert_ne!(a, shifted);
        assert!(a.starts_with("sha256:") && a.len() == 7 + 64);
    }
}
