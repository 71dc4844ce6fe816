//! The names of the contract: what gitgate stamps on, and reads from, the
//! objects Git declares.

/// The one field manager of every apply gitgate makes.
pub const FIELD_MANAGER: &str = "gitgate";

/// Stamped by the sync loop: the commit that introduced the content.
pub const COMMIT_ANNOTATION: &str = "gitgate.dev/commit";
/// Stamped by the sync loop: `<app>:<path>` of the manifest.
pub const SOURCE_ANNOTATION: &str = "gitgate.dev/source";
/// Stamped by the sync loop: `sha256:` of the canonical desired manifest.
pub const DIGEST_ANNOTATION: &str = "gitgate.dev/digest";
/// The inventory label: the app that owns the object.
pub const APP_LABEL: &str = "gitgate.dev/app";

/// In Git: JSON pointers of fields other controllers own (HPA replicas);
/// neither the sync loop nor the provenance check compares them.
pub const IGNORE_FIELDS_ANNOTATION: &str = "gitgate.dev/ignore-fields";
/// Apply order, in Git.
pub const SYNC_WAVE: &str = "gitgate.dev/sync-wave";
/// Argo CD's apply order annotation, honoured too.
pub const ARGO_SYNC_WAVE: &str = "argocd.argoproj.io/sync-wave";
/// `gitgate.dev/prune: disabled` keeps an object when it leaves Git.
pub const PRUNE_ANNOTATION: &str = "gitgate.dev/prune";
/// Per object: `Replace=true` re-creates it when an apply fails on an
/// immutable field.
pub const SYNC_OPTIONS: &str = "gitgate.dev/sync-options";
/// Argo CD's sync options, read as written (`Replace=true,Force=true`).
pub const ARGO_SYNC_OPTIONS: &str = "argocd.argoproj.io/sync-options";

/// Set by a human in an emergency: `gitgate.dev/break-glass: "<reason>"`.
pub const BREAK_GLASS_ANNOTATION: &str = "gitgate.dev/break-glass";
/// Stamped by gitgate's mutating webhook: when the break-glass window of
/// the object ends (RFC 3339, UTC).
pub const UNTIL_ANNOTATION: &str = "gitgate.dev/break-glass-until";

/// Marker annotation on a sealed Secret in Git; its value is [`SEALED_AGE`].
pub const SEALED: &str = "gitgate.dev/sealed";
/// The only marker value: every value is age ciphertext or a `vault:` reference.
pub const SEALED_AGE: &str = "age";
/// Scope annotation: a hint for people and `seal --check`, never trusted.
pub const SEAL_SCOPE: &str = "gitgate.dev/seal-scope";
/// `sha256:<hex>` of the sealed (Git) form of the Secret's values.
pub const SEALED_DIGEST: &str = "gitgate.dev/sealed-digest";
/// `hmac-sha256:<hex>` of the plaintext values, keyed from the cluster identity.
pub const PLAINTEXT_MAC: &str = "gitgate.dev/plaintext-mac";
/// The fields of a sealed Secret Git's manifest sets that the cluster holds
/// in another form (plaintext values, markers the webhook drops).
pub const SEALED_FORM_FIELDS: [&str; 3] = ["/data", "/stringData", "/metadata/annotations/gitgate.dev~1sealed"];
