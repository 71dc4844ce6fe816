//! The mutating stage: a Secret marked `gitgate.dev/sealed: age` arrives
//! with every value sealed (the apiserver has already folded `stringData`
//! into base64 `data`); each value is decrypted (or read from Vault), its
//! sealed scope checked against the object's namespace, name and key, and a
//! JSONPatch writes the plaintext `data`, drops the marker and records
//! `gitgate.dev/sealed-digest` and `gitgate.dev/plaintext-mac`.
//!
//! Fail closed: any value that cannot be materialized denies the Secret
//! with a reason naming the key and the cause, never the value. A Secret
//! without the marker is left alone (that makes reinvocation safe) unless
//! one of its values still looks sealed and it was never unsealed: such a
//! Secret is denied rather than stored with ciphertext as its value.

use std::sync::Arc;

use base64::Engine as _;
use json_patch::jsonptr::PointerBuf;
use json_patch::{AddOperation, PatchOperation, RemoveOperation};
use serde_json::{Map, Value};

use super::keys::{IdentitySet, Keyring};
use super::plaintext::Plaintext;
use super::seal::{self, Limits};
use super::vault::{VaultError, VaultRef, VaultResolver};
use super::{PLAINTEXT_MAC, SEALED, SEALED_AGE, SEALED_DIGEST, VAULT_PREFIX};
use crate::admission::{AdmissionRequest, AsyncStage, Decision, Flow, Operation, StageFuture};

const STAGE: &str = "secrets";
const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// Unseals sealed Secrets at `/mutate`.
pub struct SecretsStage {
    keyring: Keyring,
    limits: Limits,
    vault: Option<Arc<VaultResolver>>,
}

/// Why a Secret is refused.
struct Failure {
    key: Option<String>,
    cause: String,
    code: u16,
    reason: &'static str,
}

impl Failure {
    fn new(key: Option<&str>, cause: impl Into<String>) -> Self {
        Failure { key: key.map(str::to_owned), cause: cause.into(), code: 403, reason: "SecretNotUnsealed" }
    }
}

enum Source {
    Age,
    Vault(VaultRef),
}

/// One value of a sealed Secret, in its Git (sealed) form.
struct Entry {
    key: String,
    sealed: Vec<u8>,
    source: Source,
}

/// What a sealed Secret needs: decoded but not yet decrypted.
struct Plan {
    namespace: String,
    name: String,
    entries: Vec<Entry>,
    has_string_data: bool,
}

impl SecretsStage {
    /// A stage with a fixed set of identities (an identity file).
    pub fn new(identities: Arc<IdentitySet>) -> Self {
        Self::with_keyring(Keyring::new(identities))
    }

    /// A stage that follows `keyring` (the cluster's identities, swapped
    /// on rotation).
    pub fn with_keyring(keyring: Keyring) -> Self {
        SecretsStage { keyring, limits: Limits::default(), vault: None }
    }

    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    pub fn with_vault(mut self, vault: Arc<VaultResolver>) -> Self {
        self.vault = Some(vault);
        self
    }

    async fn run(&self, request: &AdmissionRequest, decision: &mut Decision) -> Flow {
        let plan = match plan(request, &self.limits) {
            Ok(Some(plan)) => plan,
            Ok(None) => return Flow::Continue,
            Err(f) => return deny(request, decision, f),
        };
        // One snapshot for the whole request: a rotation mid-request cannot
        // decrypt with one set and MAC with another.
        let identities = self.keyring.current();
        match self.materialize(&plan, &identities).await {
            Ok(values) => {
                let digest = super::sealed_digest(plan.entries.iter().map(|e| (e.key.as_str(), e.sealed.as_slice())));
                let mac = identities.mac_key().mac(values.iter().map(|(k, v)| (k.as_str(), v)));
                decision.patch(STAGE, patch_ops(&plan, &values, &digest, &mac));
                decision.annotate("secrets-unsealed", values.len().to_string());
                decision.annotate("secrets-sealed-digest", digest);
                Flow::Continue
            }
            Err(f) => deny(request, decision, f),
        }
    }

    /// Decrypts every age value (no I/O) and then resolves the Vault
    /// references under the resolver's deadline.
    async fn materialize(&self, plan: &Plan, identities: &IdentitySet) -> Result<Vec<(String, Plaintext)>, Failure> {
        let mut values = Vec::with_capacity(plan.entries.len());
        let mut refs = Vec::new();
        for e in &plan.entries {
            match &e.source {
                Source::Age => {
                    let v = seal::open_for(&e.sealed, identities, &self.limits, &plan.namespace, &plan.name, &e.key)
                        .map_err(|err| Failure::new(Some(&e.key), crate::error_chain(&err)))?;
                    values.push((e.key.clone(), v));
                }
                Source::Vault(r) => refs.push((e.key.clone(), r.clone())),
            }
        }
        if refs.is_empty() {
            return Ok(values);
        }
        let vault = self.vault.as_ref().ok_or_else(|| {
            let key = refs.first().map(|(k, _)| k.as_str());
            Failure::new(key, VaultError::NotConfigured.to_string())
        })?;
        let resolved = vault.resolve_all(&refs).await.map_err(|(key, err)| {
            let mut f = Failure::new(key, crate::error_chain(&err));
            if err.is_unavailable() {
                f.code = 503;
                f.reason = "VaultUnavailable";
            }
            f
        })?;
        for (key, v) in resolved {
            if v.len() > self.limits.max_value_bytes {
                return Err(Failure::new(
                    Some(key),
                    format!("the Vault value is over the limit of {} bytes", self.limits.max_value_bytes),
                ));
            }
            values.push((key.to_owned(), v));
        }
        Ok(values)
    }
}

impl AsyncStage for SecretsStage {
    fn name(&self) -> &'static str {
        STAGE
    }

    fn decide<'a>(&'a self, request: &'a AdmissionRequest, decision: &'a mut Decision) -> StageFuture<'a> {
        Box::pin(self.run(request, decision))
    }
}

fn deny(request: &AdmissionRequest, decision: &mut Decision, f: Failure) -> Flow {
    let target = format!("{}/{}", request.namespace, request.object_name());
    let message = match &f.key {
        Some(key) => format!("gitgate refused Secret {target}: key {key:?} could not be unsealed: {}", f.cause),
        None => format!("gitgate refused Secret {target}: {}", f.cause),
    };
    decision.deny(STAGE, f.code, f.reason, message);
    Flow::Stop
}

/// Decides, without I/O, whether the request is a sealed Secret and
/// decodes its sealed values.
fn plan(request: &AdmissionRequest, limits: &Limits) -> Result<Option<Plan>, Failure> {
    let is_secret = request.kind.group.is_empty() && request.kind.kind == "Secret" && request.sub_resource.is_none();
    if !is_secret || !matches!(request.operation, Operation::Create | Operation::Update) {
        return Ok(None);
    }
    let Some(object) = request.object.as_ref() else { return Ok(None) };
    let annotations = object.pointer("/metadata/annotations").and_then(Value::as_object);
    let marker = annotations.and_then(|a| a.get(SEALED));
    let data = object.get("data").and_then(Value::as_object);
    let string_data = object.get("stringData").and_then(Value::as_object);

    let Some(marker) = marker else {
        let unsealed_before = annotations.is_some_and(|a| a.contains_key(PLAINTEXT_MAC));
        if !unsealed_before && let Some(key) = first_sealed_looking(data, string_data) {
            return Err(Failure::new(
                Some(key),
                format!(
                    "the value is age ciphertext or a vault: reference but the Secret has no {SEALED}: {SEALED_AGE} annotation, so it would be stored sealed; add the annotation"
                ),
            ));
        }
        return Ok(None);
    };
    if marker.as_str() != Some(SEALED_AGE) {
        return Err(Failure::new(None, format!("annotation {SEALED} must be {SEALED_AGE:?}")));
    }

    let mut entries: Vec<Entry> = Vec::new();
    let mut push = |key: &str, sealed: Vec<u8>| -> Result<(), Failure> {
        let source = classify(key, &sealed, limits)?;
        entries.retain(|e| e.key != key);
        entries.push(Entry { key: key.to_owned(), sealed, source });
        Ok(())
    };
    for (key, v) in data.into_iter().flatten() {
        let s = v.as_str().ok_or_else(|| Failure::new(Some(key), "the data value is not a string"))?;
        if s.len() > limits.max_sealed_bytes.saturating_mul(4) / 3 + 4 {
            return Err(Failure::new(
                Some(key),
                format!("the sealed value is over the limit of {} bytes", limits.max_sealed_bytes),
            ));
        }
        let sealed = B64.decode(s).map_err(|_| Failure::new(Some(key), "the data value is not valid base64"))?;
        push(key, sealed)?;
    }
    // stringData wins over data, as in the apiserver.
    for (key, v) in string_data.into_iter().flatten() {
        let s = v.as_str().ok_or_else(|| Failure::new(Some(key), "the stringData value is not a string"))?;
        push(key, s.as_bytes().to_vec())?;
    }
    entries.sort_by(|a, b| a.key.cmp(&b.key));
    Ok(Some(Plan {
        namespace: request.namespace.clone(),
        name: request.object_name().to_owned(),
        entries,
        has_string_data: string_data.is_some(),
    }))
}

fn classify(key: &str, sealed: &[u8], limits: &Limits) -> Result<Source, Failure> {
    if sealed.starts_with(VAULT_PREFIX.as_bytes()) {
        let s =
            std::str::from_utf8(sealed).map_err(|_| Failure::new(Some(key), "the vault: reference is not UTF-8"))?;
        let r = VaultRef::parse(s.trim_end()).map_err(|e| Failure::new(Some(key), e.to_string()))?;
        return Ok(Source::Vault(r));
    }
    if sealed.len() > limits.max_sealed_bytes {
        return Err(Failure::new(
            Some(key),
            format!("the sealed value is {} bytes, over the limit of {} bytes", sealed.len(), limits.max_sealed_bytes),
        ));
    }
    if !sealed.trim_ascii_start().starts_with(super::ARMOR_BEGIN.as_bytes()) {
        return Err(Failure::new(
            Some(key),
            "the value is not sealed: every value of a sealed Secret must be age armor or a vault: reference",
        ));
    }
    Ok(Source::Age)
}

/// The first key whose value looks sealed, looking only at each value's
/// first bytes (the values may be plaintext).
fn first_sealed_looking<'a>(
    data: Option<&'a Map<String, Value>>,
    string_data: Option<&'a Map<String, Value>>,
) -> Option<&'a str> {
    for (key, v) in data.into_iter().flatten() {
        let Some(s) = v.as_str() else { continue };
        let head = s.get(..s.len().min(64) / 4 * 4).unwrap_or_default();
        let decoded = zeroize::Zeroizing::new(B64.decode(head).unwrap_or_default());
        if super::looks_sealed(&decoded) {
            return Some(key);
        }
    }
    for (key, v) in string_data.into_iter().flatten() {
        if v.as_str().is_some_and(|s| super::looks_sealed(s.as_bytes())) {
            return Some(key);
        }
    }
    None
}

fn annotation_path(key: &str) -> PointerBuf {
    PointerBuf::from_tokens(["metadata", "annotations", key])
}

fn patch_ops(plan: &Plan, values: &[(String, Plaintext)], digest: &str, mac: &str) -> Vec<PatchOperation> {
    let mut data = Map::with_capacity(values.len());
    for (key, v) in values {
        data.insert(key.clone(), Value::String(B64.encode(v.expose())));
    }
    let mut ops =
        vec![PatchOperation::Add(AddOperation { path: PointerBuf::from_tokens(["data"]), value: Value::Object(data) })];
    if plan.has_string_data {
        ops.push(PatchOperation::Remove(RemoveOperation { path: PointerBuf::from_tokens(["stringData"]) }));
    }
    ops.push(PatchOperation::Remove(RemoveOperation { path: annotation_path(SEALED) }));
    ops.push(PatchOperation::Add(AddOperation {
        path: annotation_path(SEALED_DIGEST),
        value: Value::String(digest.to_owned()),
    }));
    ops.push(PatchOperation::Add(AddOperation {
        path: annotation_path(PLAINTEXT_MAC),
        value: Value::String(mac.to_owned()),
    }));
    ops
}
