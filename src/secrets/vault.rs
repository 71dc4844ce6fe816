//! Vault references: `vault:<mount>/<path>#<key>[#<version>]`, read with
//! vaultrs (KV v2 with an optional pinned version, or KV v1), behind a TTL
//! cache with single-flight, under a deadline shorter than the webhook's
//! timeout. Auth: a token, a Kubernetes service-account JWT or AppRole;
//! the token is renewed with `renew_self` on a timer (and the login redone
//! when renewal is refused).
//!
//! vaultrs keeps its token in a plain `String` and parses responses into
//! `serde_json::Value`s; gitgate copies each field into a zeroizing
//! [`Plaintext`] and wipes the parsed strings, but the HTTP buffers inside
//! reqwest are beyond its reach.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use age::secrecy::{ExposeSecret as _, SecretString};
use tokio::sync::{OnceCell, RwLock};
use vaultrs::client::{Client as _, VaultClient, VaultClientSettingsBuilder};
use vaultrs::error::ClientError;
use zeroize::Zeroize as _;

use super::plaintext::Plaintext;

/// A parsed `vault:` reference.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct VaultRef {
    pub mount: String,
    pub path: String,
    pub field: String,
    /// KV v2 version to read; `None` reads the latest.
    pub version: Option<u64>,
}

impl VaultRef {
    /// Parses `vault:<mount>/<path>#<field>[#<version>]`.
    pub fn parse(s: &str) -> Result<Self, VaultError> {
        let bad = |reason: &'static str| VaultError::BadReference { reference: s.to_owned(), reason };
        let rest = s.strip_prefix(super::VAULT_PREFIX).ok_or(bad("it does not start with vault:"))?;
        let mut parts = rest.split('#');
        let location = parts.next().unwrap_or_default();
        let field = parts.next().ok_or(bad("it names no field (#<key>)"))?;
        let version = match parts.next() {
            None => None,
            Some(v) => {
                Some(v.parse::<u64>().ok().filter(|v| *v > 0).ok_or(bad("its version is not a positive integer"))?)
            }
        };
        if parts.next().is_some() {
            return Err(bad("it has more than two #"));
        }
        let (mount, path) = location.split_once('/').ok_or(bad("it has no <mount>/<path>"))?;
        let path = path.trim_matches('/');
        if mount.is_empty() || path.is_empty() || field.is_empty() {
            return Err(bad("mount, path and field must not be empty"));
        }
        if location.split('/').any(|seg| seg == ".." || seg == ".") {
            return Err(bad("its path has . or .. segments"));
        }
        // What Vault is asked for must be exactly the location the project's
        // globs were checked against. URL parsers delete tabs and line
        // breaks, so `.\n.` became `..` after the check above:
        // `secret/team/.\n./other/db` passed the glob `secret/team/*` and
        // was read as `secret/other/db`. `%`, `?`, `;` and `\` mean other
        // things to URL parsers and to Vault.
        if !location.chars().all(is_path_char) {
            return Err(bad(
                "its path may hold only ASCII letters, digits, /, and - _ . @ + = , ~ : (no spaces, control \
                 characters, %, ?, ; or \\)",
            ));
        }
        if path.split('/').any(str::is_empty) {
            return Err(bad("its path has an empty segment (//)"));
        }
        Ok(VaultRef { mount: mount.to_owned(), path: path.to_owned(), field: field.to_owned(), version })
    }

    fn location(&self) -> String {
        match self.version {
            Some(v) => format!("{}/{} (version {v})", self.mount, self.path),
            None => format!("{}/{}", self.mount, self.path),
        }
    }
}

/// A character a `vault:` reference's `<mount>/<path>` may hold.
fn is_path_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '/' | '-' | '_' | '.' | '@' | '+' | '=' | ',' | '~' | ':')
}

#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    #[error("invalid Vault reference {reference:?}: {reason}")]
    BadReference { reference: String, reason: &'static str },
    #[error("invalid Vault configuration: {reason}")]
    BadConfig { reason: String },
    #[error("Vault is not configured, so vault: references cannot be resolved (start with --vault-addr)")]
    NotConfigured,
    #[error("Vault refused access to {location} (403 Forbidden)")]
    Forbidden { location: String },
    #[error("Vault has no secret at {location} (404 Not Found)")]
    NotFound { location: String },
    #[error("Vault is unavailable: {location} answered {code}")]
    Unavailable { location: String, code: u16 },
    #[error("Vault answered {code} for {location}")]
    Api { location: String, code: u16 },
    #[error("failed to talk to Vault for {location}")]
    Unreachable {
        location: String,
        #[source]
        source: ClientError,
    },
    #[error("Vault secret {location} has no field {field:?}")]
    MissingField { location: String, field: String },
    #[error("Vault did not answer within the deadline of {deadline:?}")]
    Deadline { deadline: Duration },
    #[error("failed to log in to Vault with {method}")]
    Login {
        method: &'static str,
        #[source]
        source: ClientError,
    },
    #[error("failed to read the service-account token {path}")]
    ReadJwt {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to renew the Vault token")]
    Renew {
        #[source]
        source: ClientError,
    },
}

impl VaultError {
    /// Whether retrying later may help (for the denial's HTTP code): Vault
    /// unreachable, sealed, slow, or a login that failed for one of these.
    pub fn is_unavailable(&self) -> bool {
        match self {
            VaultError::Unavailable { .. } | VaultError::Unreachable { .. } | VaultError::Deadline { .. } => true,
            VaultError::Login { source, .. } => transient(source),
            _ => false,
        }
    }
}

/// How gitgate logs in to Vault.
#[derive(Clone)]
pub enum VaultAuth {
    Token(SecretString),
    /// `auth/<mount>/login` with the pod's service-account JWT.
    Kubernetes {
        mount: String,
        role: String,
        jwt_path: PathBuf,
    },
    AppRole {
        mount: String,
        role_id: String,
        secret_id: SecretString,
    },
}

impl VaultAuth {
    fn method(&self) -> &'static str {
        match self {
            VaultAuth::Token(_) => "token",
            VaultAuth::Kubernetes { .. } => "kubernetes",
            VaultAuth::AppRole { .. } => "approle",
        }
    }
}

/// Which KV engine a mount runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KvVersion {
    V1,
    V2,
}

/// Validated Vault settings.
#[derive(Clone)]
pub struct VaultConfig {
    pub address: String,
    pub auth: VaultAuth,
    /// Mounts that run KV v1; every other mount is read as KV v2.
    pub kv1_mounts: Vec<String>,
    /// How long a read value is served from memory.
    pub cache_ttl: Duration,
    /// Bound on resolving all of one Secret's references (keep it under
    /// the webhook's `timeoutSeconds`).
    pub deadline: Duration,
    /// CA bundle files for an https Vault.
    pub ca_certs: Vec<String>,
}

impl VaultConfig {
    pub fn new(address: &str, auth: VaultAuth) -> Result<Self, VaultError> {
        let url = reqwest::Url::parse(address)
            .map_err(|e| VaultError::BadConfig { reason: format!("address {address:?} is not a URL: {e}") })?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(VaultError::BadConfig { reason: format!("address {address:?} must be http or https") });
        }
        Ok(VaultConfig {
            address: address.to_owned(),
            auth,
            kv1_mounts: Vec::new(),
            cache_ttl: Duration::from_secs(60),
            deadline: Duration::from_millis(1500),
            ca_certs: Vec::new(),
        })
    }

    fn kv_version(&self, mount: &str) -> KvVersion {
        if self.kv1_mounts.iter().any(|m| m == mount) { KvVersion::V1 } else { KvVersion::V2 }
    }
}

/// One secret's fields.
type Fields = HashMap<String, Plaintext>;

#[derive(Clone, PartialEq, Eq, Hash)]
struct CacheKey {
    mount: String,
    path: String,
    version: Option<u64>,
}

/// One cache entry; concurrent readers of a missing entry share one fetch.
struct Slot {
    cell: OnceCell<(Arc<Fields>, Instant)>,
}

impl Slot {
    fn expired(&self, ttl: Duration) -> bool {
        self.cell.get().is_some_and(|(_, at)| at.elapsed() >= ttl)
    }
}

/// Resolves `vault:` references; shared by every request.
pub struct VaultResolver {
    config: VaultConfig,
    client: RwLock<VaultClient>,
    cache: Mutex<HashMap<CacheKey, Arc<Slot>>>,
    /// Resolvers logged in with a project's own role (Kubernetes auth),
    /// made on first use; each has its own token and cache.
    roles: tokio::sync::Mutex<HashMap<String, Arc<VaultResolver>>>,
    /// Whether the client holds a token from a successful login.
    logged_in: std::sync::atomic::AtomicBool,
}

impl VaultResolver {
    /// Builds the client and logs in.
    pub async fn connect(config: VaultConfig) -> Result<Arc<Self>, VaultError> {
        // reqwest (no-provider build) panics when no rustls provider is
        // installed; `main` installs ring, this covers library callers.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let resolver = Arc::new(VaultResolver::unconnected(config)?);
        resolver.login().await?;
        Ok(resolver)
    }

    /// [`VaultResolver::connect`] for a server that must come up whether
    /// or not Vault is there: when Vault is away (unreachable, sealed,
    /// 5xx) the login is retried by the renewal timer and before the next
    /// read, and until then `vault:` Secrets are denied as unavailable —
    /// gitgate's webhooks keep deciding everything else. Credentials Vault
    /// refuses still fail the start.
    pub async fn start(config: VaultConfig) -> Result<Arc<Self>, VaultError> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let resolver = Arc::new(VaultResolver::unconnected(config)?);
        match resolver.login().await {
            Ok(_) => Ok(resolver),
            Err(e) if e.is_unavailable() => {
                tracing::warn!(addr = %resolver.config.address, error = %crate::error_chain(&e), "Vault is unavailable; starting without it and logging in when it is back");
                Ok(resolver)
            }
            Err(e) => Err(e),
        }
    }

    /// A resolver whose login has not happened yet.
    fn unconnected(config: VaultConfig) -> Result<Self, VaultError> {
        let mut settings = VaultClientSettingsBuilder::default();
        settings.address(&config.address).timeout(Some(config.deadline)).token("").ca_certs(config.ca_certs.clone());
        let settings = settings.build().map_err(|e| VaultError::BadConfig { reason: e.to_string() })?;
        let client =
            VaultClient::new(settings).map_err(|source| VaultError::Login { method: config.auth.method(), source })?;
        Ok(VaultResolver {
            config,
            client: RwLock::new(client),
            cache: Mutex::new(HashMap::new()),
            roles: tokio::sync::Mutex::new(HashMap::new()),
            logged_in: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// Whether the client holds a token from a successful login.
    pub fn is_logged_in(&self) -> bool {
        self.logged_in.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Logs in unless logged in already.
    async fn ensure_login(&self) -> Result<(), VaultError> {
        if !self.is_logged_in() {
            self.login().await?;
            tracing::info!(addr = %self.config.address, "logged in to Vault");
        }
        Ok(())
    }

    /// The resolver that reads as `role` (a project's `vault.role`) with
    /// the Kubernetes auth method, so Vault's policy for that role — not
    /// gitgate's — bounds what the project's Secrets can read. Logged in
    /// on first use and kept, with its token renewed every five minutes.
    pub async fn for_role(&self, role: &str) -> Result<Arc<VaultResolver>, VaultError> {
        let VaultAuth::Kubernetes { mount, jwt_path, .. } = &self.config.auth else {
            return Err(VaultError::BadConfig {
                reason: format!("a project's vault role ({role}) needs --vault-auth kubernetes"),
            });
        };
        let mut roles = self.roles.lock().await;
        if let Some(r) = roles.get(role) {
            return Ok(Arc::clone(r));
        }
        let mut config = self.config.clone();
        config.auth = VaultAuth::Kubernetes { mount: mount.clone(), role: role.to_owned(), jwt_path: jwt_path.clone() };
        let resolver = VaultResolver::connect(config).await?;
        // Detached: the resolver lives as long as the process.
        drop(resolver.spawn_renewal(Duration::from_secs(300)));
        roles.insert(role.to_owned(), Arc::clone(&resolver));
        Ok(resolver)
    }

    pub fn deadline(&self) -> Duration {
        self.config.deadline
    }

    /// Logs in (or installs the static token) and returns the token's TTL.
    pub async fn login(&self) -> Result<Duration, VaultError> {
        let ttl = self.login_once().await?;
        self.logged_in.store(true, std::sync::atomic::Ordering::Release);
        Ok(ttl)
    }

    async fn login_once(&self) -> Result<Duration, VaultError> {
        let method = self.config.auth.method();
        let err = |source| VaultError::Login { method, source };
        let mut client = self.client.write().await;
        match &self.config.auth {
            VaultAuth::Token(token) => {
                client.set_token(token.expose_secret());
                let info = vaultrs::token::lookup_self(&*client).await.map_err(err)?;
                Ok(Duration::from_secs(info.ttl))
            }
            VaultAuth::Kubernetes { mount, role, jwt_path } => {
                let jwt = zeroize::Zeroizing::new(
                    std::fs::read_to_string(jwt_path)
                        .map_err(|source| VaultError::ReadJwt { path: jwt_path.clone(), source })?,
                );
                let mut auth =
                    vaultrs::auth::kubernetes::login(&*client, mount, role, jwt.trim()).await.map_err(err)?;
                client.set_token(&auth.client_token);
                auth.client_token.zeroize();
                Ok(Duration::from_secs(auth.lease_duration))
            }
            VaultAuth::AppRole { mount, role_id, secret_id } => {
                let mut auth = vaultrs::auth::approle::login(&*client, mount, role_id, secret_id.expose_secret())
                    .await
                    .map_err(err)?;
                client.set_token(&auth.client_token);
                auth.client_token.zeroize();
                Ok(Duration::from_secs(auth.lease_duration))
            }
        }
    }

    /// Renews the token (`renew_self`); when Vault refuses, logs in again.
    /// Returns the new TTL.
    pub async fn renew(&self) -> Result<Duration, VaultError> {
        if !self.is_logged_in() {
            return self.login().await;
        }
        let renewed = {
            let client = self.client.read().await;
            vaultrs::token::renew_self(&*client, None).await
        };
        match renewed {
            Ok(mut auth) => {
                auth.client_token.zeroize();
                Ok(Duration::from_secs(auth.lease_duration))
            }
            Err(source) if matches!(self.config.auth, VaultAuth::Token(_)) => Err(VaultError::Renew { source }),
            Err(_) => self.login().await,
        }
    }

    /// Renews the token every `interval` until the handle is aborted.
    pub fn spawn_renewal(self: &Arc<Self>, interval: Duration) -> tokio::task::JoinHandle<()> {
        let me = Arc::clone(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tick.tick().await;
                match me.renew().await {
                    Ok(ttl) => tracing::debug!(ttl = ?ttl, "renewed the Vault token"),
                    Err(e) => tracing::warn!(error = %crate::error_chain(&e), "Vault token renewal failed"),
                }
            }
        })
    }

    /// Resolves every reference within the deadline; the first failure
    /// wins and names its Secret key.
    pub async fn resolve_all<'a>(
        &self,
        refs: &'a [(String, VaultRef)],
    ) -> Result<Vec<(&'a str, Plaintext)>, (Option<&'a str>, VaultError)> {
        let work = async {
            let mut out = Vec::with_capacity(refs.len());
            for (key, r) in refs {
                let v = self.resolve(r).await.map_err(|e| (Some(key.as_str()), e))?;
                out.push((key.as_str(), v));
            }
            Ok(out)
        };
        match tokio::time::timeout(self.config.deadline, work).await {
            Ok(r) => r,
            Err(_) => Err((None, VaultError::Deadline { deadline: self.config.deadline })),
        }
    }

    /// One field, from the cache or Vault.
    pub async fn resolve(&self, r: &VaultRef) -> Result<Plaintext, VaultError> {
        let key = CacheKey { mount: r.mount.clone(), path: r.path.clone(), version: r.version };
        let slot = {
            let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
            match cache.get(&key) {
                Some(slot) if !slot.expired(self.config.cache_ttl) => Arc::clone(slot),
                _ => {
                    let slot = Arc::new(Slot { cell: OnceCell::new() });
                    cache.insert(key.clone(), Arc::clone(&slot));
                    slot
                }
            }
        };
        let (fields, _) =
            slot.cell.get_or_try_init(|| async { Ok((Arc::new(self.fetch(r).await?), Instant::now())) }).await?;
        fields
            .get(&r.field)
            .cloned()
            .ok_or_else(|| VaultError::MissingField { location: r.location(), field: r.field.clone() })
    }

    async fn fetch(&self, r: &VaultRef) -> Result<Fields, VaultError> {
        self.ensure_login().await?;
        let client = self.client.read().await;
        let read: Result<HashMap<String, serde_json::Value>, ClientError> = match self.config.kv_version(&r.mount) {
            KvVersion::V1 => vaultrs::kv1::get(&*client, &r.mount, &r.path).await,
            KvVersion::V2 => match r.version {
                Some(v) => vaultrs::kv2::read_version(&*client, &r.mount, &r.path, v).await,
                None => vaultrs::kv2::read(&*client, &r.mount, &r.path).await,
            },
        };
        let location = r.location();
        let raw = read.map_err(|e| map_client_error(e, location))?;
        Ok(raw.into_iter().map(|(k, v)| (k, into_plaintext(v))).collect())
    }
}

/// A client error that is Vault being away (no answer, sealed, 5xx, 429),
/// not Vault saying no.
fn transient(e: &ClientError) -> bool {
    match e {
        ClientError::APIError { code, .. } => *code == 429 || *code >= 500,
        _ => true,
    }
}

fn map_client_error(e: ClientError, location: String) -> VaultError {
    // Vault's documented error body (`{"errors": [...]}`) gives an APIError
    // with its status; anything else is a transport failure.
    match &e {
        ClientError::APIError { code: 403, .. } => VaultError::Forbidden { location },
        ClientError::APIError { code: 404, .. } => VaultError::NotFound { location },
        ClientError::APIError { code: code @ (429 | 500..=599), .. } => {
            VaultError::Unavailable { location, code: *code }
        }
        ClientError::APIError { code, .. } => VaultError::Api { location, code: *code },
        _ => VaultError::Unreachable { location, source: e },
    }
}

/// A field as bytes: strings as they are, anything else as JSON text. The
/// parsed string is wiped.
fn into_plaintext(v: serde_json::Value) -> Plaintext {
    match v {
        serde_json::Value::String(mut s) => {
            let p = Plaintext::copy_from(s.as_bytes());
            s.zeroize();
            p
        }
        other => Plaintext::new(serde_json::to_vec(&other).unwrap_or_default()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_references() {
        let r = VaultRef::parse("vault:secret/apps/web#password").unwrap();
        assert_eq!(
            (r.mount.as_str(), r.path.as_str(), r.field.as_str(), r.version),
            ("secret", "apps/web", "password", None)
        );
        let r = VaultRef::parse("vault:kv/db#user#7").unwrap();
        assert_eq!(r.version, Some(7));
        for bad in [
            "secret/x#k",
            "vault:secret#k",
            "vault:secret/x",
            "vault:secret/x#",
            "vault:/x#k",
            "vault:secret/x#k#0",
            "vault:secret/x#k#v1",
            "vault:secret/x#k#1#2",
            "vault:secret/../x#k",
            "vault:secret/a/.\n./.\n./sys/x#k",
            "vault:secret/a\\..\\sys#k",
            "vault:secret/a/%2e%2e/sys#k",
            "vault:secret/a?list=true#k",
            "vault:secret/a//b#k",
        ] {
            assert!(VaultRef::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn config_validates_the_address() {
        assert!(VaultConfig::new("not a url", VaultAuth::Token(SecretString::from("t".to_owned()))).is_err());
        assert!(VaultConfig::new("ftp://x", VaultAuth::Token(SecretString::from("t".to_owned()))).is_err());
        assert!(
            VaultConfig::new("http://127.0.0.1:8200", VaultAuth::Token(SecretString::from("t".to_owned()))).is_ok()
        );
    }
}
