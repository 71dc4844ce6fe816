//! The cluster's age identities, kept as Secrets in gitgate's namespace
//! (Sealed Secrets' key model): every Secret labelled
//! `gitgate.dev/age-identity=true` holds one identity file under the key
//! `identity`; the newest (annotation `gitgate.dev/age-identity-created`,
//! else its `creationTimestamp`) comes first and its recipient is the one
//! to seal to; older ones stay for decryption.
//!
//! Top to bottom: parsing Secrets into a keyring (pure, [`identities_from_secrets`]),
//! the I/O at the edge ([`start`] loads them, creates one when there is
//! none, and follows rotations with a watch; [`rotate`] adds a newer one),
//! and `GET /api/v1/recipients` ([`router`]), public data only.
//!
//! Identity bytes read from a Secret are zeroized once parsed; they never
//! reach a log or an error message (errors name the Secret and the line).

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::routing::get;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ListParams, PostParams};
use serde::{Deserialize, Serialize};
use zeroize::Zeroize as _;

use super::keys::{AgeIdentity, IdentitySet, Keyring, Recipient, parse_identities};
use super::plaintext::AmbiguousIfDebug;

/// The label that marks an identity Secret (value `"true"`).
pub const IDENTITY_LABEL: &str = "gitgate.dev/age-identity";
/// The label selector of identity Secrets.
pub const IDENTITY_SELECTOR: &str = "gitgate.dev/age-identity=true";
/// The Secret key holding the identity file text.
pub const IDENTITY_KEY: &str = "identity";
/// RFC 3339 time the identity was made; orders identities (newest first).
pub const CREATED: &str = "gitgate.dev/age-identity-created";
/// The identity's public recipient, for `kubectl get` (public data).
pub const RECIPIENT: &str = "gitgate.dev/age-recipient";
/// `GET` this path of a running gitgate for the cluster's recipients.
pub const RECIPIENTS_PATH: &str = "/api/v1/recipients";

#[derive(Debug, thiserror::Error)]
pub enum ClusterKeyError {
    #[error("failed to {op} age identity Secrets in namespace {namespace}")]
    Api {
        op: &'static str,
        namespace: String,
        #[source]
        source: kube::Error,
    },
    #[error(
        "namespace {namespace} holds no usable age identity Secret (labelled {IDENTITY_SELECTOR}) and none could be made"
    )]
    NoIdentity { namespace: String },
    #[error("failed to create Secret {namespace}/{name}: it already exists (try again in a second)")]
    Exists { namespace: String, name: String },
}

/// One identity Secret, parsed. Secret material: no `Debug`.
pub struct KeyEntry {
    name: String,
    created: Option<Timestamp>,
    identities: Vec<AgeIdentity>,
}

/// Compile-time proof that [`KeyEntry`] has no `Debug`; see [`AmbiguousIfDebug`].
const _: fn() = || <KeyEntry as AmbiguousIfDebug<_>>::check();

/// An identity Secret that could not be used, and why (never its content).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Skipped {
    pub name: String,
    pub reason: String,
}

/// Parses one Secret; its data is zeroized whatever the outcome.
pub fn entry_from_secret(mut secret: Secret) -> Result<KeyEntry, Skipped> {
    let meta = std::mem::take(&mut secret.metadata);
    let mut data = secret.data.take().unwrap_or_default();
    let mut string_data = secret.string_data.take().unwrap_or_default();
    let name = meta.name.clone().unwrap_or_else(|| "<unnamed>".into());
    let result = parse_entry(&name, &meta, &data, &string_data);
    for v in data.values_mut() {
        v.0.zeroize();
    }
    for v in string_data.values_mut() {
        v.zeroize();
    }
    result
}

fn parse_entry(
    name: &str,
    meta: &ObjectMeta,
    data: &BTreeMap<String, ByteString>,
    string_data: &BTreeMap<String, String>,
) -> Result<KeyEntry, Skipped> {
    let skip = |reason: String| Skipped { name: name.to_owned(), reason };
    let labelled = meta.labels.as_ref().and_then(|l| l.get(IDENTITY_LABEL)).is_some_and(|v| v == "true");
    if !labelled {
        return Err(skip(format!("it is not labelled {IDENTITY_SELECTOR}")));
    }
    let bytes: &[u8] = match (data.get(IDENTITY_KEY), string_data.get(IDENTITY_KEY)) {
        (_, Some(s)) => s.as_bytes(),
        (Some(b), None) => &b.0,
        (None, None) => return Err(skip(format!("it has no key {IDENTITY_KEY:?}"))),
    };
    let text = std::str::from_utf8(bytes).map_err(|_| skip(format!("its key {IDENTITY_KEY:?} is not UTF-8")))?;
    let origin = format!("Secret {name} key {IDENTITY_KEY}");
    let identities = parse_identities(text, &origin).map_err(|e| skip(e.to_string()))?;
    let annotated = meta.annotations.as_ref().and_then(|a| a.get(CREATED)).and_then(|t| t.parse::<Timestamp>().ok());
    let created = annotated.or_else(|| meta.creation_timestamp.as_ref().map(|t| t.0));
    Ok(KeyEntry { name: name.to_owned(), created, identities })
}

/// The keyring of `entries`: newest Secret first (undated ones last, then
/// by name, later names first), each Secret's identities in file order, a
/// repeated identity kept once. `None` when there is no identity.
pub fn assemble<'a>(entries: impl IntoIterator<Item = &'a KeyEntry>) -> Option<IdentitySet> {
    let mut sorted: Vec<&KeyEntry> = entries.into_iter().collect();
    sorted.sort_by(|a, b| b.created.cmp(&a.created).then_with(|| b.name.cmp(&a.name)));
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::new();
    for e in sorted {
        for id in &e.identities {
            if seen.insert(id.recipient().to_string()) {
                out.push(id.clone());
            }
        }
    }
    IdentitySet::new(out).ok()
}

/// The keyring held by `secrets` (a LIST's items), and the Secrets skipped.
pub fn identities_from_secrets(secrets: Vec<Secret>) -> (Option<IdentitySet>, Vec<Skipped>) {
    let mut entries = Vec::new();
    let mut skipped = Vec::new();
    for s in secrets {
        match entry_from_secret(s) {
            Ok(e) => entries.push(e),
            Err(s) => skipped.push(s),
        }
    }
    (assemble(&entries), skipped)
}

/// `gitgate-age-<YYYYMMDD>`: the fixed name of the identity a replica makes
/// when there is none (two replicas racing create the same one).
pub fn bootstrap_name(now: Timestamp) -> String {
    format!("gitgate-age-{}", now.strftime("%Y%m%d"))
}

/// `gitgate-age-<YYYYMMDD-HHMMSS>`: a rotation's Secret.
pub fn rotation_name(now: Timestamp) -> String {
    format!("gitgate-age-{}", now.strftime("%Y%m%d-%H%M%S"))
}

/// The Secret that holds `identity` (its data is secret: zeroize it after use).
pub fn identity_secret(identity: &AgeIdentity, name: &str, namespace: &str, now: Timestamp) -> Secret {
    let text = identity.to_file_text();
    Secret {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            namespace: Some(namespace.to_owned()),
            labels: Some(
                [
                    (IDENTITY_LABEL.to_owned(), "true".to_owned()),
                    ("app.kubernetes.io/managed-by".to_owned(), "gitgate".to_owned()),
                ]
                .into(),
            ),
            annotations: Some(
                [
                    (CREATED.to_owned(), now.strftime("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()),
                    (RECIPIENT.to_owned(), identity.recipient().to_string()),
                ]
                .into(),
            ),
            ..ObjectMeta::default()
        },
        type_: Some("Opaque".into()),
        data: Some([(IDENTITY_KEY.to_owned(), ByteString(text.as_bytes().to_vec()))].into()),
        ..Secret::default()
    }
}

fn api_error(op: &'static str, namespace: &str) -> impl FnOnce(kube::Error) -> ClusterKeyError + use<> {
    let namespace = namespace.to_owned();
    move |source| ClusterKeyError::Api { op, namespace, source }
}

fn log_skipped(namespace: &str, skipped: &[Skipped]) {
    for s in skipped {
        tracing::warn!(namespace, secret = %s.name, reason = %s.reason, "ignored an age identity Secret");
    }
}

/// Lists the identity Secrets and parses them.
pub async fn load(api: &Api<Secret>, namespace: &str) -> Result<Option<IdentitySet>, ClusterKeyError> {
    let list =
        api.list(&ListParams::default().labels(IDENTITY_SELECTOR)).await.map_err(api_error("list", namespace))?;
    let (set, skipped) = identities_from_secrets(list.items);
    log_skipped(namespace, &skipped);
    Ok(set)
}

/// Creates an identity Secret named `name`; `Ok(false)` when it already
/// exists (another replica won the race).
pub async fn create(
    api: &Api<Secret>,
    namespace: &str,
    identity: &AgeIdentity,
    name: &str,
) -> Result<bool, ClusterKeyError> {
    let mut secret = identity_secret(identity, name, namespace, Timestamp::now());
    let result = api.create(&PostParams::default(), &secret).await;
    for v in secret.data.iter_mut().flat_map(|d| d.values_mut()) {
        v.0.zeroize();
    }
    match result {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
        Err(e) => Err(api_error("create", namespace)(e)),
    }
}

/// The cluster's keyring, kept current by a watch.
pub struct ClusterKeys {
    pub keyring: Keyring,
    pub task: tokio::task::JoinHandle<()>,
}

/// Loads the identities of `namespace`, makes one when there is none
/// (create-if-absent: a replica that loses the race loads the winner's),
/// and follows changes so a rotation takes effect without a restart.
pub async fn start(client: kube::Client, namespace: &str) -> Result<ClusterKeys, ClusterKeyError> {
    let api: Api<Secret> = Api::namespaced(client, namespace);
    let set = match load(&api, namespace).await? {
        Some(set) => set,
        None => {
            let id = AgeIdentity::generate();
            let name = bootstrap_name(Timestamp::now());
            if create(&api, namespace, &id, &name).await? {
                tracing::info!(namespace, secret = %name, recipient = %id.recipient(), "generated the cluster's age identity; seal to its recipient");
            } else {
                tracing::info!(namespace, secret = %name, "another replica made the cluster's age identity");
            }
            load(&api, namespace)
                .await?
                .ok_or_else(|| ClusterKeyError::NoIdentity { namespace: namespace.to_owned() })?
        }
    };
    tracing::info!(namespace, recipients = %recipients_text(&set.recipients()), "loaded the cluster's age identities (newest first)");
    let keyring = Keyring::new(Arc::new(set));
    let task = tokio::spawn(follow(api, namespace.to_owned(), keyring.clone()));
    Ok(ClusterKeys { keyring, task })
}

fn recipients_text(r: &[Recipient]) -> String {
    r.iter().map(ToString::to_string).collect::<Vec<_>>().join(",")
}

/// Watches the identity Secrets and swaps the keyring whenever the set
/// (or its order) changes. An empty set keeps the last one: deleting every
/// identity Secret does not stop decryption; adding one does rotate.
async fn follow(api: Api<Secret>, namespace: String, keyring: Keyring) {
    use futures_util::StreamExt as _;
    use kube::runtime::{WatchStreamExt as _, watcher};
    let config = watcher::Config::default().labels(IDENTITY_SELECTOR);
    let mut events = std::pin::pin!(watcher(api, config).default_backoff());
    let mut entries: BTreeMap<String, KeyEntry> = BTreeMap::new();
    let mut init: BTreeMap<String, KeyEntry> = BTreeMap::new();
    let add = |into: &mut BTreeMap<String, KeyEntry>, s: Secret| match entry_from_secret(s) {
        Ok(e) => {
            into.insert(e.name.clone(), e);
        }
        Err(s) => log_skipped(&namespace, std::slice::from_ref(&s)),
    };
    while let Some(event) = events.next().await {
        match event {
            Ok(watcher::Event::Init) => init.clear(),
            Ok(watcher::Event::InitApply(s)) => add(&mut init, s),
            Ok(watcher::Event::InitDone) => {
                entries = std::mem::take(&mut init);
                publish(&entries, &keyring, &namespace);
            }
            Ok(watcher::Event::Apply(s)) => {
                let name = s.metadata.name.clone().unwrap_or_default();
                entries.remove(&name);
                add(&mut entries, s);
                publish(&entries, &keyring, &namespace);
            }
            Ok(watcher::Event::Delete(mut s)) => {
                if let Some(d) = s.data.as_mut() {
                    d.values_mut().for_each(|v| v.0.zeroize());
                }
                entries.remove(s.metadata.name.as_deref().unwrap_or_default());
                publish(&entries, &keyring, &namespace);
            }
            Err(e) => {
                tracing::warn!(namespace = %namespace, error = %crate::error_chain(&e), "watching the age identity Secrets failed; retrying")
            }
        }
    }
}

fn publish(entries: &BTreeMap<String, KeyEntry>, keyring: &Keyring, namespace: &str) {
    let Some(set) = assemble(entries.values()) else {
        tracing::warn!(namespace, "no age identity Secret is left; decryption keeps the identities it had");
        return;
    };
    let next = set.recipients();
    if next != keyring.recipients() {
        keyring.replace(Arc::new(set));
        tracing::info!(namespace, recipients = %recipients_text(&next), "the cluster's age identities changed (newest first)");
    }
}

/// Adds a newer identity Secret (a rotation); returns its recipient and name.
pub async fn rotate(client: kube::Client, namespace: &str) -> Result<(Recipient, String), ClusterKeyError> {
    let api: Api<Secret> = Api::namespaced(client, namespace);
    let id = AgeIdentity::generate();
    let name = rotation_name(Timestamp::now());
    if !create(&api, namespace, &id, &name).await? {
        return Err(ClusterKeyError::Exists { namespace: namespace.to_owned(), name });
    }
    Ok((id.recipient(), name))
}

/// `GET /api/v1/recipients`: public data only.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recipients {
    /// Newest first: seal to the first one.
    pub recipients: Vec<String>,
}

/// The router serving [`RECIPIENTS_PATH`].
pub fn router(keyring: Keyring) -> axum::Router {
    axum::Router::new().route(RECIPIENTS_PATH, get(recipients)).with_state(keyring)
}

async fn recipients(State(keyring): State<Keyring>) -> Json<Recipients> {
    Json(Recipients { recipients: keyring.recipients().iter().map(ToString::to_string).collect() })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn secret(name: &str, identity: &AgeIdentity, created: Option<&str>, ts: &str) -> Secret {
        let mut annotations = serde_json::Map::new();
        if let Some(c) = created {
            annotations.insert(CREATED.into(), json!(c));
        }
        use base64::Engine as _;
        let text = identity.to_file_text();
        serde_json::from_value(json!({
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {
                "name": name,
                "namespace": "gitgate",
                "creationTimestamp": ts,
                "labels": {IDENTITY_LABEL: "true"},
                "annotations": annotations,
            },
            "data": {IDENTITY_KEY: base64::engine::general_purpose::STANDARD.encode(text.as_bytes())},
        }))
        .unwrap()
    }

    #[test]
    fn newest_first_by_annotation_then_creation_time() {
        let (a, b, c) = (AgeIdentity::generate(), AgeIdentity::generate(), AgeIdentity::generate());
        // b is annotated newest although created first; c has no annotation.
        let secrets = vec![
            secret("gitgate-age-a", &a, Some("2026-01-01T00:00:00Z"), "2026-01-01T00:00:00Z"),
            secret("gitgate-age-b", &b, Some("2026-06-01T00:00:00Z"), "2025-01-01T00:00:00Z"),
            secret("gitgate-age-c", &c, None, "2026-03-01T00:00:00Z"),
        ];
        let (set, skipped) = identities_from_secrets(secrets);
        assert!(skipped.is_empty(), "{skipped:?}");
        assert_eq!(set.unwrap().recipients(), vec![b.recipient(), c.recipient(), a.recipient()]);
    }

    #[test]
    fn same_time_orders_by_name_and_duplicates_are_kept_once() {
        let (a, b) = (AgeIdentity::generate(), AgeIdentity::generate());
        let t = "2026-01-01T00:00:00Z";
        let secrets = vec![
            secret("gitgate-age-20260101", &a, None, t),
            secret("gitgate-age-20260101-120000", &b, None, t),
            secret("copy-of-a", &a, None, "2020-01-01T00:00:00Z"),
        ];
        let (set, _) = identities_from_secrets(secrets);
        assert_eq!(set.unwrap().recipients(), vec![b.recipient(), a.recipient()]);
    }

    #[test]
    fn unusable_secrets_are_skipped_by_name_without_their_content() {
        let good = AgeIdentity::generate();
        let mut unlabelled = secret("unlabelled", &AgeIdentity::generate(), None, "2026-01-01T00:00:00Z");
        unlabelled.metadata.labels = None;
        let bad: Secret = serde_json::from_value(json!({
            "metadata": {"name": "garbage", "labels": {IDENTITY_LABEL: "true"}},
            "data": {IDENTITY_KEY: "QUdFLVNFQ1JFVC1LRVktMVNFQ1JFVENPTlRFTlQ="},
        }))
        .unwrap();
        let empty: Secret =
            serde_json::from_value(json!({"metadata": {"name": "empty", "labels": {IDENTITY_LABEL: "true"}}})).unwrap();
        let (set, skipped) =
            identities_from_secrets(vec![unlabelled, bad, empty, secret("good", &good, None, "2026-01-01T00:00:00Z")]);
        assert_eq!(set.unwrap().recipients(), vec![good.recipient()]);
        let names: Vec<&str> = skipped.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["unlabelled", "garbage", "empty"]);
        let text = format!("{skipped:?}");
        assert!(text.contains("line 1"), "{text}");
        assert!(!text.contains("SECRETCONTENT"), "{text}");
        assert!(identities_from_secrets(Vec::new()).0.is_none());
    }

    #[test]
    fn the_identity_secret_round_trips_and_names_are_dated() {
        let id = AgeIdentity::generate();
        let now: Timestamp = "2026-11-21T13:14:15Z".parse().unwrap();
        let s = identity_secret(&id, &bootstrap_name(now), "gitgate", now);
        assert_eq!(s.metadata.name.as_deref(), Some("gitgate-age-20261121"));
        assert_eq!(rotation_name(now), "gitgate-age-20261121-131415");
        let ann = s.metadata.annotations.clone().unwrap();
        assert_eq!(ann[RECIPIENT], id.recipient().to_string());
        assert!(ann[CREATED].parse::<Timestamp>().is_ok(), "{}", ann[CREATED]);
        // through JSON, as the apiserver returns it
        let back: Secret = serde_json::from_value(serde_json::to_value(&s).unwrap()).unwrap();
        let (set, _) = identities_from_secrets(vec![back]);
        assert_eq!(set.unwrap().recipients(), vec![id.recipient()]);
    }

    #[test]
    fn a_keyring_swap_is_seen_whole() {
        let (a, b) = (AgeIdentity::generate(), AgeIdentity::generate());
        let ring = Keyring::new(Arc::new(IdentitySet::new(vec![a.clone()]).unwrap()));
        let before = ring.current();
        ring.replace(Arc::new(IdentitySet::new(vec![b.clone(), a.clone()]).unwrap()));
        assert_eq!(before.recipients(), vec![a.recipient()]);
        assert_eq!(ring.recipients(), vec![b.recipient(), a.recipient()]);
    }
}
