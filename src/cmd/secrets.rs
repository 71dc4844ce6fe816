//! `gitgate keygen | seal | reseal` and the `serve` flags of the secrets
//! bridge. Thin: parsing and I/O here, the logic in [`crate::secrets::manifest`].

use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use clap::{Args, ValueEnum};
use serde_json::Value;

use crate::admission::Decider;
use crate::secrets::cluster;
use crate::secrets::keys::{self, AgeIdentity, IdentitySet, Keyring, Recipient};
use crate::secrets::manifest;
use crate::secrets::seal::{Limits, Scope};
use crate::secrets::stage::{Principal, SecretsStage, UnsealPolicy};
use crate::secrets::vault::{VaultAuth, VaultConfig, VaultResolver};

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum ScopeArg {
    Strict,
    Namespace,
    Cluster,
}

impl From<ScopeArg> for Scope {
    fn from(s: ScopeArg) -> Scope {
        match s {
            ScopeArg::Strict => Scope::Strict,
            ScopeArg::Namespace => Scope::Namespace,
            ScopeArg::Cluster => Scope::Cluster,
        }
    }
}

#[derive(Args, Debug)]
pub struct KeygenArgs {
    /// Write the identity to this file (mode 0600, never overwritten) and
    /// print the recipient on stdout; without it the identity goes to
    /// stdout and the recipient to stderr.
    #[arg(short, long, conflicts_with = "rotate")]
    pub output: Option<PathBuf>,
    /// Rotate the cluster's key: add a newer identity Secret in gitgate's
    /// namespace (the old ones stay for decryption) and print its
    /// recipient. The identity never leaves the cluster.
    #[arg(long)]
    pub rotate: bool,
    /// kubeconfig for --rotate (default: in-cluster, then $KUBECONFIG, then ~/.kube/config).
    #[arg(long, requires = "rotate")]
    pub kubeconfig: Option<PathBuf>,
    /// gitgate's namespace, for --rotate.
    #[arg(long, env = "GITGATE_NAMESPACE", default_value = "gitgate")]
    pub namespace: String,
}

#[derive(Args, Debug)]
pub struct RecipientsArgs {
    /// gitgate's HTTPS address.
    #[arg(long, env = "GITGATE_SERVER", default_value = "https://127.0.0.1:8443")]
    pub server: String,
    /// CA certificate to trust (default: certs/ca.crt when it exists).
    #[arg(long)]
    pub ca: Option<PathBuf>,
    /// Print every recipient (newest first), not only the one to seal to.
    #[arg(long)]
    pub all: bool,
}

#[derive(Args, Debug)]
pub struct SealArgs {
    /// Secret manifest (YAML; `-` for stdin).
    #[arg(short = 'f', long = "file")]
    pub file: PathBuf,
    /// age recipient (`age1…`), repeatable.
    #[arg(long = "recipient", short = 'r')]
    pub recipients: Vec<String>,
    /// File of recipients, one per line (repeatable).
    #[arg(long = "recipients-file", short = 'R')]
    pub recipients_files: Vec<PathBuf>,
    /// Scope bound inside each ciphertext (default strict); with --check,
    /// the scope the file must be sealed for.
    #[arg(long, value_enum)]
    pub scope: Option<ScopeArg>,
    /// Verify offline (no keys) that the file is a well-formed sealed Secret.
    #[arg(long)]
    pub check: bool,
}

#[derive(Args, Debug)]
pub struct ResealArgs {
    /// Sealed Secret manifest (YAML; `-` for stdin).
    #[arg(short = 'f', long = "file")]
    pub file: PathBuf,
    /// age identity file that can decrypt the values (offline key).
    #[arg(long = "identity", short = 'i')]
    pub identity: PathBuf,
    /// New recipient (`age1…`), repeatable.
    #[arg(long = "recipient", short = 'r')]
    pub recipients: Vec<String>,
    /// File of new recipients (repeatable).
    #[arg(long = "recipients-file", short = 'R')]
    pub recipients_files: Vec<PathBuf>,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum VaultAuthArg {
    Token,
    Kubernetes,
    Approle,
}

/// `gitgate serve` flags for the secrets bridge. The identities come from
/// `--age-identity` when given, else from the cluster's identity Secrets
/// (see [`crate::secrets::cluster`]) when a cluster is connected.
#[derive(Args, Debug, Default)]
pub struct ServeSecretsArgs {
    /// age identity file (newest first) used to unseal Secrets at /mutate;
    /// wins over the cluster's identity Secrets.
    #[arg(long = "age-identity", env = "GITGATE_AGE_IDENTITY")]
    pub age_identity: Option<PathBuf>,
    /// Without --age-identity and with a cluster: load the identities from
    /// Secrets labelled gitgate.dev/age-identity=true in gitgate's
    /// namespace (making one when there is none) and follow rotations.
    #[arg(long, env = "GITGATE_CLUSTER_KEYS", default_value_t = true, action = clap::ArgAction::Set)]
    pub cluster_keys: bool,
    /// Vault address; enables `vault:` references.
    #[arg(long, env = "VAULT_ADDR")]
    pub vault_addr: Option<String>,
    #[arg(long, value_enum, default_value = "kubernetes")]
    pub vault_auth: Option<VaultAuthArg>,
    /// Token for `--vault-auth token`.
    #[arg(long, env = "VAULT_TOKEN", hide_env_values = true)]
    pub vault_token: Option<secrecy::SecretString>,
    #[arg(long, default_value = "kubernetes")]
    pub vault_kubernetes_mount: String,
    #[arg(long, default_value = "gitgate")]
    pub vault_role: String,
    #[arg(long, default_value = "/var/run/secrets/kubernetes.io/serviceaccount/token")]
    pub vault_jwt_path: PathBuf,
    #[arg(long, default_value = "approle")]
    pub vault_approle_mount: String,
    #[arg(long, env = "VAULT_ROLE_ID", hide_env_values = true)]
    pub vault_role_id: Option<String>,
    #[arg(long, env = "VAULT_SECRET_ID", hide_env_values = true)]
    pub vault_secret_id: Option<secrecy::SecretString>,
    /// Mounts that run KV v1 (repeatable); others are read as KV v2.
    #[arg(long = "vault-kv1-mount")]
    pub vault_kv1_mounts: Vec<String>,
    #[arg(long, default_value = "60s")]
    pub vault_cache_ttl: String,
    /// Bound on Vault reads for one Secret; keep it under the webhook timeout.
    #[arg(long, default_value = "1500ms")]
    pub vault_deadline: String,
    #[arg(long, default_value = "5m")]
    pub vault_renew_interval: String,
    /// CA bundle for an https Vault (repeatable).
    #[arg(long = "vault-ca-cert")]
    pub vault_ca_certs: Vec<String>,
    /// Besides the reconciler applying Git's own sealed Secrets, unseal
    /// any sealed Secret for this identity: `user:NAME` or `group:NAME`
    /// (repeatable; none by default).
    #[arg(long = "unseal-for", env = "GITGATE_UNSEAL_FOR", value_delimiter = ',', value_parser = parse_principal)]
    pub unseal_for: Vec<Principal>,
    /// Unseal at /mutate even though callers are not authenticated (no
    /// --client-ca): `userInfo` is then whatever the sender typed. Only for
    /// a laptop cluster, or where a NetworkPolicy lets only the apiserver
    /// reach the port.
    #[arg(long, env = "GITGATE_UNSEAL_WITHOUT_CLIENT_AUTH")]
    pub unseal_without_client_auth: bool,
}

fn parse_principal(s: &str) -> Result<Principal, String> {
    Principal::parse(s)
}

/// What the unseal policy is decided from besides the flags.
pub struct UnsealWiring {
    /// The reconciler's username.
    pub reconciler: String,
    /// The commit in force.
    pub commit: Arc<arc_swap::ArcSwapOption<crate::provenance::Snapshot>>,
    /// Whether /mutate's callers are authenticated (--client-ca).
    pub client_auth: bool,
}

pub fn keygen(args: KeygenArgs) -> anyhow::Result<ExitCode> {
    if args.rotate {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let (recipient, name) = rt.block_on(async {
            let client = kube_client(args.kubeconfig.as_deref()).await?;
            Ok::<_, anyhow::Error>(cluster::rotate(client, &args.namespace).await?)
        })?;
        eprintln!(
            "created Secret {}/{name}: gitgate seals to it from now on (old identities stay for decryption)",
            args.namespace
        );
        println!("{recipient}");
        return Ok(ExitCode::SUCCESS);
    }
    let id = AgeIdentity::generate();
    let recipient = id.recipient();
    match args.output {
        Some(path) => {
            keys::write_identity_file(&id, &path)?;
            eprintln!("wrote the identity to {} (mode 0600)", path.display());
            println!("{recipient}");
        }
        None => {
            let text = id.to_file_text();
            std::io::stdout().write_all(text.as_bytes()).context("failed to write the identity")?;
            eprintln!("public key: {recipient}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub fn seal(args: SealArgs) -> anyhow::Result<ExitCode> {
    let docs = read_docs(&args.file)?;
    let limits = Limits::default();
    if args.check {
        let expected = args.scope.map(Scope::from);
        for (i, doc) in docs.iter().enumerate() {
            let report = manifest::check_secret(doc, expected, &limits).with_context(|| {
                format!("{} (document {}) is not a well-formed sealed Secret", args.file.display(), i + 1)
            })?;
            eprintln!(
                "ok: {} (document {}): scope {}, {} age value(s), {} vault reference(s)",
                args.file.display(),
                i + 1,
                report.scope,
                report.age_values,
                report.vault_values
            );
        }
        return Ok(ExitCode::SUCCESS);
    }
    let recipients = recipients(&args.recipients, &args.recipients_files)?;
    let scope = args.scope.map(Scope::from).unwrap_or(Scope::Strict);
    let mut out = Vec::with_capacity(docs.len());
    for doc in &docs {
        out.push(manifest::seal_secret(doc, &recipients, scope, &limits)?);
    }
    write_docs(&out)
}

pub fn reseal(args: ResealArgs) -> anyhow::Result<ExitCode> {
    let identities = IdentitySet::load(&args.identity)?;
    let recipients = recipients(&args.recipients, &args.recipients_files)?;
    let docs = read_docs(&args.file)?;
    let mut out = Vec::with_capacity(docs.len());
    for doc in &docs {
        out.push(manifest::reseal_secret(doc, &identities, &recipients, &Limits::default())?);
    }
    write_docs(&out)
}

/// `gitgate recipients`: the recipients a running gitgate decrypts for,
/// like `kubeseal --fetch-cert`.
pub fn recipients_cmd(args: RecipientsArgs) -> anyhow::Result<ExitCode> {
    let ca = args.ca.clone().or_else(|| Some(PathBuf::from("certs/ca.crt")).filter(|p| p.exists()));
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let body = rt.block_on(async {
        let mut b = reqwest::Client::builder().timeout(std::time::Duration::from_secs(10));
        if let Some(ca) = &ca {
            let pem = std::fs::read(ca).with_context(|| format!("failed to read {}", ca.display()))?;
            b = b.add_root_certificate(reqwest::Certificate::from_pem(&pem)?);
        }
        let url = format!("{}{}", args.server.trim_end_matches('/'), cluster::RECIPIENTS_PATH);
        let resp = b.build()?.get(&url).send().await.with_context(|| format!("failed to reach {url}"))?;
        anyhow::ensure!(resp.status().is_success(), "{url} answered {}", resp.status());
        Ok::<_, anyhow::Error>(resp.text().await?)
    })?;
    let got: cluster::Recipients = serde_json::from_str(&body).context("failed to read the recipients")?;
    anyhow::ensure!(!got.recipients.is_empty(), "the server has no age identity");
    for r in &got.recipients {
        keys::parse_recipient(r, "the server")?;
    }
    let shown = if args.all { &got.recipients[..] } else { got.recipients.get(..1).unwrap_or_default() };
    for r in shown {
        println!("{r}");
    }
    Ok(ExitCode::SUCCESS)
}

async fn kube_client(kubeconfig: Option<&Path>) -> anyhow::Result<kube::Client> {
    let config = match kubeconfig {
        Some(path) => {
            let kc = kube::config::Kubeconfig::read_from(path)
                .with_context(|| format!("failed to read the kubeconfig {}", path.display()))?;
            kube::Config::from_custom_kubeconfig(kc, &Default::default()).await?
        }
        None => kube::Config::infer().await?,
    };
    Ok(kube::Client::try_from(config)?)
}

/// What the secrets bridge adds to `serve`.
pub struct SecretsWiring {
    pub decider: Decider,
    /// The identities in force (for `GET /api/v1/recipients`); `None` when
    /// the bridge is off.
    pub keyring: Option<Keyring>,
    /// Background tasks (Vault token renewal, the identity watch).
    pub tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// Adds the secrets stage to `decider`: with the `--age-identity` file, or
/// else with the identity Secrets of `cluster` (client, gitgate's
/// namespace) when one is connected; connects to Vault when `--vault-addr`
/// is given.
pub async fn with_secrets_stage(
    decider: Decider,
    args: &ServeSecretsArgs,
    cluster: Option<(kube::Client, String)>,
    unseal: UnsealWiring,
) -> anyhow::Result<SecretsWiring> {
    let mut tasks = Vec::new();
    let keyring = match (&args.age_identity, cluster) {
        (Some(path), _) => Keyring::new(Arc::new(IdentitySet::load(path)?)),
        (None, Some((client, namespace))) if args.cluster_keys => {
            let keys = cluster::start(client, &namespace).await?;
            tasks.push(keys.task);
            keys.keyring
        }
        (None, _) => {
            if args.vault_addr.is_some() {
                anyhow::bail!(
                    "--vault-addr needs age identities (--age-identity, or a cluster; the newest identity keys the plaintext MAC)"
                );
            }
            return Ok(SecretsWiring { decider, keyring: None, tasks });
        }
    };
    if !unseal.client_auth && !args.unseal_without_client_auth {
        tracing::warn!(
            "no --client-ca: /mutate unseals nothing (any pod could type the reconciler into a review); give --client-ca, or --unseal-without-client-auth where a NetworkPolicy is the guard"
        );
    } else if !unseal.client_auth {
        tracing::warn!(
            "--unseal-without-client-auth: /mutate unseals for whoever a review's userInfo names; only a NetworkPolicy keeps other pods from typing the reconciler's name"
        );
    }
    let policy = UnsealPolicy {
        reconciler: unseal.reconciler,
        extra: args.unseal_for.clone(),
        without_client_auth: args.unseal_without_client_auth,
        commit: unseal.commit,
    };
    let mut stage = SecretsStage::with_keyring(keyring.clone()).with_policy(policy);
    if let Some(addr) = &args.vault_addr {
        let auth = match args.vault_auth.unwrap_or(VaultAuthArg::Kubernetes) {
            VaultAuthArg::Token => VaultAuth::Token(
                args.vault_token.clone().context("--vault-auth token needs --vault-token or VAULT_TOKEN")?,
            ),
            VaultAuthArg::Kubernetes => VaultAuth::Kubernetes {
                mount: args.vault_kubernetes_mount.clone(),
                role: args.vault_role.clone(),
                jwt_path: args.vault_jwt_path.clone(),
            },
            VaultAuthArg::Approle => VaultAuth::AppRole {
                mount: args.vault_approle_mount.clone(),
                role_id: args.vault_role_id.clone().context("--vault-auth approle needs --vault-role-id")?,
                secret_id: args
                    .vault_secret_id
                    .clone()
                    .context("--vault-auth approle needs --vault-secret-id or VAULT_SECRET_ID")?,
            },
        };
        let mut config = VaultConfig::new(addr, auth)?;
        config.kv1_mounts = args.vault_kv1_mounts.clone();
        config.cache_ttl = crate::config::parse_duration(&args.vault_cache_ttl)?;
        config.deadline = crate::config::parse_duration(&args.vault_deadline)?;
        config.ca_certs = args.vault_ca_certs.clone();
        let renew = crate::config::parse_duration(&args.vault_renew_interval)?;
        // Vault away at start does not keep the webhooks down: vault:
        // Secrets are denied as unavailable until it is back.
        let resolver = VaultResolver::start(config).await?;
        tasks.push(resolver.spawn_renewal(renew));
        stage = stage.with_vault(resolver);
        tracing::info!(addr = %addr, "Vault references enabled");
    }
    tracing::info!(
        identities = keyring.current().len(),
        "secrets bridge enabled: sealed Secrets are unsealed at /mutate"
    );
    Ok(SecretsWiring { decider: decider.with_async_mutating(Arc::new(stage)), keyring: Some(keyring), tasks })
}

fn recipients(flags: &[String], files: &[PathBuf]) -> anyhow::Result<Vec<Recipient>> {
    let mut out = Vec::new();
    for r in flags {
        out.push(keys::parse_recipient(r, "--recipient")?);
    }
    for f in files {
        out.extend(keys::load_recipients(f)?);
    }
    if out.is_empty() {
        anyhow::bail!("no recipient: give --recipient age1… or --recipients-file");
    }
    Ok(out)
}

fn read_docs(path: &Path) -> anyhow::Result<Vec<Value>> {
    let text = if path == Path::new("-") {
        let mut s = String::new();
        std::io::stdin().read_to_string(&mut s).context("failed to read stdin")?;
        s
    } else {
        std::fs::read_to_string(path).with_context(|| format!("failed to read {}", path.display()))?
    };
    let opts = serde_saphyr::options! { strict_booleans: true };
    let docs: Vec<Value> = serde_saphyr::from_str_multiple_with_options(&text, opts)
        .with_context(|| format!("failed to parse {} as YAML", path.display()))?;
    let docs: Vec<Value> = docs.into_iter().filter(|d| !d.is_null()).collect();
    if docs.is_empty() {
        anyhow::bail!("{} holds no manifest", path.display());
    }
    Ok(docs)
}

fn write_docs(docs: &[Value]) -> anyhow::Result<ExitCode> {
    let yaml = serde_saphyr::to_string_multiple(docs).context("failed to write YAML")?;
    std::io::stdout().write_all(yaml.as_bytes()).context("failed to write to stdout")?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    #[test]
    fn serve_args_debug_does_not_print_vault_credentials() {
        let cli = crate::cmd::Cli::try_parse_from([
            "gitgate",
            "serve",
            "--vault-token",
            "hvs.TOKEN-VALUE",
            "--vault-secret-id",
            "SECRET-ID-VALUE",
            "--hook-secret",
            "HOOK-SECRET-VALUE",
        ])
        .expect("the flags parse");
        let printed = format!("{cli:?}");
        for secret in ["hvs.TOKEN-VALUE", "SECRET-ID-VALUE", "HOOK-SECRET-VALUE"] {
            assert!(!printed.contains(secret), "{secret} is in the Debug output: {printed}");
        }
    }
}
