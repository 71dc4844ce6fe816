//! The mutating stage: a Secret marked `gitgate.dev/sealed: age` arrives
//! with every value sealed (the apiserver has already folded `stringData`
//! into base64 `data`); each value is decrypted (or read from Vault), its
//! sealed scope checked against the object's namespace, name and key, and a
//! JSONPatch writes the plaintext `data`, drops the marker and records
//! `gitgate.dev/sealed-digest` and `gitgate.dev/plaintext-mac`.
//!
//! Who gets plaintext ([`UnsealPolicy`], always set by `serve`): a review
//! sent by a caller the transport authenticated (the apiserver with its
//! client certificate; or any caller with `--unseal-without-client-auth`),
//! whose `userInfo` is the reconciler applying a Secret whose sealed form
//! is exactly the one Git declares for that namespace/name at the commit in
//! force — or one of the `--unseal-for` identities. A `vault:` reference
//! must name a path of the Secret's project (`projects[].vault.paths`). A
//! dry run is checked the same way and never gets plaintext.
//!
//! Fail closed: any value that cannot be materialized denies the Secret
//! with a reason naming the key and the cause, never the value. A Secret
//! without the marker is left alone (that makes reinvocation safe) unless
//! one of its values still looks sealed and it was never unsealed: such a
//! Secret is denied rather than stored with ciphertext as its value.

use std::sync::Arc;

use arc_swap::ArcSwapOption;
use base64::Engine as _;
use json_patch::jsonptr::PointerBuf;
use json_patch::{AddOperation, PatchOperation, RemoveOperation};
use serde_json::{Map, Value};

use super::VAULT_PREFIX;
use super::keys::{IdentitySet, Keyring};
use super::plaintext::Plaintext;
use super::seal::{self, Limits};
use super::vault::{VaultError, VaultRef, VaultResolver};
use crate::admission::{AdmissionRequest, AsyncStage, Caller, Decision, Flow, Operation, StageFuture};
use crate::contract::{PLAINTEXT_MAC, SEALED, SEALED_AGE, SEALED_DIGEST};
use crate::provenance::Snapshot;
use crate::render::config::{DEFAULT_PROJECT, VaultAccess};

const STAGE: &str = "secrets";
const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// Unseals sealed Secrets at `/mutate`.
pub struct SecretsStage {
    keyring: Keyring,
    limits: Limits,
    vault: Option<Arc<VaultResolver>>,
    /// Who may have which Secrets unsealed. `None` (offline tools,
    /// benches) unseals for anyone; `serve` always sets one.
    policy: Option<UnsealPolicy>,
}

/// A user or group that may have any sealed Secret unsealed
/// (`--unseal-for user:NAME` / `group:NAME`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Principal {
    User(String),
    Group(String),
}

impl Principal {
    /// Parses `user:NAME` or `group:NAME`.
    pub fn parse(s: &str) -> Result<Self, String> {
        match s.split_once(':') {
            Some(("user", name)) if !name.trim().is_empty() => Ok(Principal::User(name.to_owned())),
            Some(("group", name)) if !name.trim().is_empty() => Ok(Principal::Group(name.to_owned())),
            _ => Err(format!("{s:?}: expected user:NAME or group:NAME")),
        }
    }

    fn matches(&self, request: &AdmissionRequest) -> bool {
        match self {
            Principal::User(u) => request.user_info.username == *u,
            Principal::Group(g) => request.user_info.groups.iter().any(|x| x == g),
        }
    }
}

/// Who gets plaintext, and of which Secrets.
pub struct UnsealPolicy {
    /// The reconciler's username: it gets Git's own sealed Secrets.
    pub reconciler: String,
    /// `--unseal-for`: these get any sealed Secret they may create.
    pub extra: Vec<Principal>,
    /// `--unseal-without-client-auth`: believe the `userInfo` of callers
    /// the transport did not authenticate (a laptop cluster; a cluster
    /// where a NetworkPolicy is the guard).
    pub without_client_auth: bool,
    /// The commit in force (the provenance snapshot).
    pub commit: Arc<ArcSwapOption<Snapshot>>,
}

/// What a request may have unsealed.
struct Grant {
    /// The Vault paths (and role) of the Secret's project.
    vault: VaultAccess,
    project: String,
}

impl UnsealPolicy {
    /// Decides whether `request` gets `plan`'s Secret unsealed; no I/O.
    fn authorize(&self, request: &AdmissionRequest, plan: &Plan) -> Result<Grant, Failure> {
        let refuse = |cause: String| Failure { key: None, cause, code: 403, reason: "UnsealRefused" };
        if request.caller != Caller::Apiserver && !self.without_client_auth {
            return Err(refuse(
                "gitgate unseals only for the apiserver, proven by a client certificate (--client-ca); this caller presented none, and --unseal-without-client-auth is off".into(),
            ));
        }
        let user = &request.user_info.username;
        let extra = self.extra.iter().any(|p| p.matches(request));
        if !extra && *user != self.reconciler {
            return Err(refuse(format!(
                "only gitgate's reconciler ({}) is given Git's sealed Secrets; {user:?} is not, and is not listed in --unseal-for",
                self.reconciler
            )));
        }
        let snapshot = self.commit.load();
        let Some(snap) = snapshot.as_ref() else {
            return Err(Failure {
                key: None,
                cause: "no commit is in force yet".into(),
                code: 503,
                reason: "NotReady",
            });
        };
        let desired = &snap.desired;
        let short = desired.commit().to_hex_with_len(7).to_string();
        let declared = desired.get("", "Secret", &plan.namespace, &plan.name);
        if !extra {
            let target = format!("{}/{}", plan.namespace, plan.name);
            let Some(obj) = declared else {
                return Err(refuse(format!(
                    "only Git's own sealed Secrets are unsealed; {target} is not in Git at {short}"
                )));
            };
            let git = serde_json::from_str::<Value>(&obj.manifest)
                .ok()
                .as_ref()
                .and_then(crate::contract::sealed::git_sealed_digest);
            if git.as_deref() != Some(plan.digest().as_str()) {
                return Err(refuse(format!(
                    "only Git's own sealed Secrets are unsealed; the sealed values of {target} are not the ones Git holds at {short}"
                )));
            }
        }
        let project = declared
            .and_then(|obj| desired.app_of(obj))
            .map(|app| app.project.clone())
            .unwrap_or_else(|| DEFAULT_PROJECT.to_owned());
        let vault = desired.config().project(&project).map(|p| p.vault.clone()).unwrap_or_default();
        Ok(Grant { vault, project })
    }
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
        SecretsStage { keyring, limits: Limits::default(), vault: None, policy: None }
    }

    /// Unseals only what `policy` allows.
    pub fn with_policy(mut self, policy: UnsealPolicy) -> Self {
        self.policy = Some(policy);
        self
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
        let grant = match &self.policy {
            Some(policy) => match policy.authorize(request, &plan) {
                Ok(grant) => Some(grant),
                Err(f) => return deny(request, decision, f),
            },
            None => None,
        };
        if let Some(grant) = &grant {
            for e in &plan.entries {
                if let Source::Vault(r) = &e.source {
                    let location = format!("{}/{}", r.mount, r.path);
                    if !grant.vault.allows(&location) {
                        let allowed: Vec<&str> = grant.vault.paths.iter().map(|g| g.0.as_str()).collect();
                        let mut f = Failure::new(
                            Some(&e.key),
                            format!(
                                "project {} may not read Vault path {location}; its paths are {allowed:?} (projects[].vault.paths in gitgate.yaml)",
                                grant.project
                            ),
                        );
                        f.reason = "VaultPathRefused";
                        return deny(request, decision, f);
                    }
                }
            }
            if request.dry_run {
                // Checked like a real request, answered without plaintext:
                // the sealed form stays, stamped with its digest so the
                // validating webhook sees Git's content.
                decision.patch(
                    STAGE,
                    [PatchOperation::Add(AddOperation {
                        path: annotation_path(SEALED_DIGEST),
                        value: Value::String(plan.digest()),
                    })],
                );
                decision.warn(
                    STAGE,
                    "gitgate does not unseal Secrets for a dry run: the values shown are Git's sealed form",
                );
                decision.annotate("secrets-dry-run", "sealed form kept");
                return Flow::Continue;
            }
        } else if request.dry_run {
            let f = Failure::new(None, "gitgate does not unseal Secrets for a dry run");
            return deny(request, decision, f);
        }
        // One snapshot for the whole request: a rotation mid-request cannot
        // decrypt with one set and MAC with another.
        let identities = self.keyring.current();
        match self.materialize(&plan, &identities, grant.as_ref()).await {
            Ok(values) => {
                let digest = plan.digest();
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
    async fn materialize(
        &self,
        plan: &Plan,
        identities: &IdentitySet,
        grant: Option<&Grant>,
    ) -> Result<Vec<(String, Plaintext)>, Failure> {
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
        let role_resolver;
        let vault = match grant.and_then(|g| g.vault.role.as_deref()) {
            None => vault,
            Some(role) => {
                role_resolver = vault.for_role(role).await.map_err(|err| {
                    let key = refs.first().map(|(k, _)| k.as_str());
                    let mut f = Failure::new(key, crate::error_chain(&err));
                    if err.is_unavailable() {
                        f.code = 503;
                        f.reason = "VaultUnavailable";
                    }
                    f
                })?;
                &role_resolver
            }
        };
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

impl Plan {
    /// The digest of the sealed form (`gitgate.dev/sealed-digest`).
    fn digest(&self) -> String {
        crate::contract::sealed::sealed_digest(self.entries.iter().map(|e| (e.key.as_str(), e.sealed.as_slice())))
    }
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
