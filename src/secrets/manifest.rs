//! Offline operations on Secret manifests (what `gitgate seal`, `seal
//! --check` and `reseal` do). A sealed manifest keeps every value in
//! `stringData` as armored age text (or a `vault:` reference), carries
//! `gitgate.dev/sealed: age` and the scope hint `gitgate.dev/seal-scope`.

use base64::Engine as _;
use serde_json::{Map, Value};

use super::VAULT_PREFIX;
use super::keys::{IdentitySet, Recipient};
use super::plaintext::Plaintext;
use super::seal::{self, Binding, Limits, Scope, SealError};
use super::vault::{VaultError, VaultRef};
use crate::contract::{SEAL_SCOPE, SEALED, SEALED_AGE};

/// kubectl's copy of the last applied manifest: it would hold the plaintext.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("failed to read the manifest: it is not a v1 Secret (kind {kind:?}, apiVersion {api_version:?})")]
    NotSecret { kind: String, api_version: String },
    #[error("the Secret is already sealed ({SEALED}: {SEALED_AGE}); use `gitgate reseal` to re-encrypt it")]
    AlreadySealed,
    #[error("the Secret is not sealed: it has no {SEALED}: {SEALED_AGE} annotation")]
    NotSealed,
    #[error("key {key:?}: {reason}")]
    BadValue { key: String, reason: &'static str },
    #[error("key {key:?}: failed to seal or open the value")]
    Seal {
        key: String,
        #[source]
        source: Box<SealError>,
    },
    #[error("key {key:?}: invalid vault reference")]
    Vault {
        key: String,
        #[source]
        source: Box<VaultError>,
    },
    #[error("failed to bind the Secret's values to scope {scope}")]
    Binding {
        scope: Scope,
        #[source]
        source: Box<SealError>,
    },
    #[error("the scope hint {SEAL_SCOPE} is {found}, expected {expected}")]
    ScopeHint { found: String, expected: Scope },
    #[error("the Secret has no values")]
    Empty,
}

/// What `seal --check` found.
#[derive(Debug, PartialEq, Eq)]
pub struct CheckReport {
    pub scope: Scope,
    pub age_values: usize,
    pub vault_values: usize,
}

fn secret_parts(doc: &Value) -> Result<(&str, &str), ManifestError> {
    let kind = doc.get("kind").and_then(Value::as_str).unwrap_or_default();
    let api_version = doc.get("apiVersion").and_then(Value::as_str).unwrap_or_default();
    if kind != "Secret" || api_version != "v1" {
        return Err(ManifestError::NotSecret { kind: kind.to_owned(), api_version: api_version.to_owned() });
    }
    let ns = doc.pointer("/metadata/namespace").and_then(Value::as_str).unwrap_or_default();
    let name = doc.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default();
    Ok((ns, name))
}

fn is_marked(doc: &Value) -> bool {
    doc.pointer("/metadata/annotations").and_then(|a| a.get(SEALED)).and_then(Value::as_str) == Some(SEALED_AGE)
}

/// Every value as (key, bytes): `data` decoded from base64, then
/// `stringData` over it (the apiserver's rule).
fn values(doc: &Value) -> Result<Vec<(String, Plaintext)>, ManifestError> {
    let mut out: Vec<(String, Plaintext)> = Vec::new();
    let bad = |key: &str, reason| ManifestError::BadValue { key: key.to_owned(), reason };
    if let Some(data) = doc.get("data").and_then(Value::as_object) {
        for (k, v) in data {
            let s = v.as_str().ok_or_else(|| bad(k, "the data value is not a string"))?;
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(s)
                .map_err(|_| bad(k, "the data value is not valid base64"))?;
            out.push((k.clone(), Plaintext::new(bytes)));
        }
    }
    if let Some(data) = doc.get("stringData").and_then(Value::as_object) {
        for (k, v) in data {
            let s = v.as_str().ok_or_else(|| bad(k, "the stringData value is not a string"))?;
            out.retain(|(key, _)| key != k);
            out.push((k.clone(), Plaintext::copy_from(s.as_bytes())));
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

fn is_vault(v: &Plaintext) -> bool {
    v.expose().starts_with(VAULT_PREFIX.as_bytes())
}

fn vault_ref(key: &str, v: &Plaintext) -> Result<String, ManifestError> {
    let s = std::str::from_utf8(v.expose())
        .map_err(|_| ManifestError::BadValue { key: key.to_owned(), reason: "the vault: reference is not UTF-8" })?;
    let s = s.trim_end();
    VaultRef::parse(s).map_err(|source| ManifestError::Vault { key: key.to_owned(), source: Box::new(source) })?;
    Ok(s.to_owned())
}

/// The manifest with `sealed` as its `stringData`, the marker and hint set,
/// `data` and kubectl's last-applied copy removed.
fn with_sealed(doc: &Value, sealed: Map<String, Value>, scope: Scope) -> Value {
    let mut out = doc.clone();
    if let Some(obj) = out.as_object_mut() {
        obj.remove("data");
        obj.insert("stringData".into(), Value::Object(sealed));
        let meta = obj.entry("metadata").or_insert_with(|| Value::Object(Map::new()));
        if let Some(meta) = meta.as_object_mut() {
            let ann = meta.entry("annotations").or_insert_with(|| Value::Object(Map::new()));
            if !ann.is_object() {
                *ann = Value::Object(Map::new());
            }
            if let Some(ann) = ann.as_object_mut() {
                ann.remove(LAST_APPLIED);
                ann.insert(SEALED.into(), Value::String(SEALED_AGE.into()));
                ann.insert(SEAL_SCOPE.into(), Value::String(scope.as_str().into()));
            }
        }
    }
    out
}

/// Seals every value of a plaintext Secret manifest; `vault:` references
/// stay as they are (they are not secret).
pub fn seal_secret(
    doc: &Value,
    recipients: &[Recipient],
    scope: Scope,
    limits: &Limits,
) -> Result<Value, ManifestError> {
    let (ns, name) = secret_parts(doc)?;
    if is_marked(doc) {
        return Err(ManifestError::AlreadySealed);
    }
    Binding::for_object(scope, ns, name, "")
        .map_err(|source| ManifestError::Binding { scope, source: Box::new(source) })?;
    let mut sealed = Map::new();
    for (key, value) in values(doc)? {
        let text = if is_vault(&value) {
            vault_ref(&key, &value)?
        } else {
            let binding = Binding::for_object(scope, ns, name, &key)
                .map_err(|source| ManifestError::Binding { scope, source: Box::new(source) })?;
            seal::seal(&value, &binding, recipients, limits)
                .map_err(|source| ManifestError::Seal { key: key.clone(), source: Box::new(source) })?
        };
        sealed.insert(key, Value::String(text));
    }
    Ok(with_sealed(doc, sealed, scope))
}

/// Verifies offline, without keys, that a manifest is a well-formed sealed
/// Secret: the marker, the scope hint (equal to `expected` when given; the
/// binding itself is inside the ciphertext and is checked at admission),
/// and every value age armor with X25519 stanzas only (no scrypt) within
/// the size limit, or a valid `vault:` reference.
pub fn check_secret(doc: &Value, expected: Option<Scope>, limits: &Limits) -> Result<CheckReport, ManifestError> {
    let (ns, name) = secret_parts(doc)?;
    if !is_marked(doc) {
        return Err(ManifestError::NotSealed);
    }
    let hint = doc.pointer("/metadata/annotations").and_then(|a| a.get(SEAL_SCOPE)).and_then(Value::as_str);
    let scope = match (hint.map(str::parse::<Scope>), expected) {
        (Some(Ok(s)), None) => s,
        (Some(Ok(s)), Some(e)) if s == e => s,
        (None, None) => Scope::Strict,
        (_, e) => {
            return Err(ManifestError::ScopeHint {
                found: hint.unwrap_or("(missing)").to_owned(),
                expected: e.unwrap_or(Scope::Strict),
            });
        }
    };
    Binding::for_object(scope, ns, name, "")
        .map_err(|source| ManifestError::Binding { scope, source: Box::new(source) })?;
    let mut report = CheckReport { scope, age_values: 0, vault_values: 0 };
    for (key, value) in values(doc)? {
        if is_vault(&value) {
            vault_ref(&key, &value)?;
            report.vault_values += 1;
        } else {
            seal::inspect(value.expose(), limits)
                .map_err(|source| ManifestError::Seal { key: key.clone(), source: Box::new(source) })?;
            report.age_values += 1;
        }
    }
    if report.age_values + report.vault_values == 0 {
        return Err(ManifestError::Empty);
    }
    Ok(report)
}

/// Re-encrypts every age value for `recipients` with an offline key file.
/// Each value keeps the scope sealed inside it (never the annotation's),
/// and must be bound to this manifest's namespace, name and key.
pub fn reseal_secret(
    doc: &Value,
    identities: &IdentitySet,
    recipients: &[Recipient],
    limits: &Limits,
) -> Result<Value, ManifestError> {
    let (ns, name) = secret_parts(doc)?;
    if !is_marked(doc) {
        return Err(ManifestError::NotSealed);
    }
    let mut sealed = Map::new();
    let mut scope = None;
    for (key, value) in values(doc)? {
        let text = if is_vault(&value) {
            vault_ref(&key, &value)?
        } else {
            let err = |source| ManifestError::Seal { key: key.clone(), source: Box::new(source) };
            let opened = seal::open(value.expose(), identities, limits).map_err(err)?;
            opened.binding.check(ns, name, &key).map_err(err)?;
            // The narrowest scope among the values becomes the hint.
            scope = Some(match (scope, opened.binding.scope) {
                (Some(Scope::Strict), _) | (_, Scope::Strict) => Scope::Strict,
                (Some(Scope::Namespace), _) | (_, Scope::Namespace) => Scope::Namespace,
                _ => Scope::Cluster,
            });
            seal::seal(&opened.value, &opened.binding, recipients, limits).map_err(err)?
        };
        sealed.insert(key, Value::String(text));
    }
    Ok(with_sealed(doc, sealed, scope.unwrap_or(Scope::Strict)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secrets::keys::AgeIdentity;
    use serde_json::json;

    fn secret() -> Value {
        json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "db", "namespace": "prod",
                "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{\"data\":{\"password\":\"cGxhaW4=\"}}"}},
            "data": {"password": "cGxhaW4=", "user": "YWRtaW4="},
            "stringData": {"user": "root", "token": "vault:secret/db#token#3"}
        })
    }

    #[test]
    fn seal_then_check_then_reseal_keeps_the_sealed_scope() {
        let old = IdentitySet::new(vec![AgeIdentity::generate()]).unwrap();
        let l = Limits::default();
        let sealed = seal_secret(&secret(), &old.recipients(), Scope::Strict, &l).unwrap();
        assert!(sealed.get("data").is_none());
        let ann = &sealed["metadata"]["annotations"];
        assert_eq!(ann[SEALED], "age");
        assert_eq!(ann[SEAL_SCOPE], "strict");
        assert!(ann.get(LAST_APPLIED).is_none(), "kubectl's plaintext copy is dropped");
        assert_eq!(sealed["stringData"]["token"], "vault:secret/db#token#3");
        let text = serde_json::to_string(&sealed).unwrap();
        assert!(!text.contains("cGxhaW4=") && !text.contains("root"));

        let report = check_secret(&sealed, Some(Scope::Strict), &l).unwrap();
        assert_eq!(report, CheckReport { scope: Scope::Strict, age_values: 2, vault_values: 1 });
        assert!(matches!(check_secret(&sealed, Some(Scope::Cluster), &l), Err(ManifestError::ScopeHint { .. })));

        // Someone edits the hint to "cluster" before a reseal: the envelope wins.
        let mut tampered = sealed.clone();
        tampered["metadata"]["annotations"][SEAL_SCOPE] = json!("cluster");
        let new = IdentitySet::new(vec![AgeIdentity::generate()]).unwrap();
        let resealed = reseal_secret(&tampered, &old, &new.recipients(), &l).unwrap();
        assert_eq!(resealed["metadata"]["annotations"][SEAL_SCOPE], "strict");
        let pw = resealed["stringData"]["password"].as_str().unwrap();
        assert!(matches!(seal::open(pw.as_bytes(), &old, &l), Err(SealError::WrongKey)));
        let opened = seal::open(pw.as_bytes(), &new, &l).unwrap();
        assert_eq!(opened.value.expose(), b"plain");
        assert_eq!(opened.binding.scope, Scope::Strict);
        let user = resealed["stringData"]["user"].as_str().unwrap();
        assert_eq!(seal::open(user.as_bytes(), &new, &l).unwrap().value.expose(), b"root");
    }

    #[test]
    fn reseal_refuses_a_value_moved_to_another_secret() {
        let id = IdentitySet::new(vec![AgeIdentity::generate()]).unwrap();
        let l = Limits::default();
        let sealed = seal_secret(&secret(), &id.recipients(), Scope::Strict, &l).unwrap();
        let mut moved = sealed.clone();
        moved["metadata"]["namespace"] = json!("dev");
        let err = reseal_secret(&moved, &id, &id.recipients(), &l).err().unwrap();
        assert!(
            matches!(&err, ManifestError::Seal { source, .. } if matches!(**source, SealError::ScopeMismatch { .. })),
            "{err}"
        );
    }

    #[test]
    fn check_refuses_plain_and_broken_values() {
        let id = IdentitySet::new(vec![AgeIdentity::generate()]).unwrap();
        let l = Limits::default();
        assert!(matches!(check_secret(&secret(), None, &l), Err(ManifestError::NotSealed)));
        let mut sealed = seal_secret(&secret(), &id.recipients(), Scope::Strict, &l).unwrap();
        sealed["stringData"]["password"] = json!("hunter2");
        let err = check_secret(&sealed, None, &l).err().unwrap();
        assert!(
            matches!(&err, ManifestError::Seal { source, .. } if matches!(**source, SealError::NotArmored)),
            "{err}"
        );
        assert!(matches!(
            seal_secret(&json!({"apiVersion": "v1", "kind": "ConfigMap"}), &id.recipients(), Scope::Strict, &l),
            Err(ManifestError::NotSecret { .. })
        ));
        let no_ns = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "x"}, "stringData": {"a": "b"}});
        assert!(matches!(seal_secret(&no_ns, &id.recipients(), Scope::Strict, &l), Err(ManifestError::Binding { .. })));
        assert!(seal_secret(&no_ns, &id.recipients(), Scope::Cluster, &l).is_ok());
    }
}
