//! Who gets plaintext at `/mutate`: the unseal policy `serve` always sets,
//! on a real Git repository, real age ciphertext, the captured Secret
//! review and the loopback Vault.
//!
//! Plays the attacker inside the cluster (the Sealed Secrets / Vault
//! injector confused-deputy class: a webhook that decrypts for whoever
//! asks, e.g. bank-vaults' and Sealed Secrets' "any pod reaching the
//! controller" issues): a review typed by any pod, a forged `userInfo`,
//! Git's ciphertext copied under another name, values re-sealed for Git's
//! name, a `vault:` path of another project, a dry run. Each is refused
//! with a reason and no plaintext anywhere in the answer; the reconciler
//! applying Git's own Secret, proven by the transport, still gets it.

mod support;
use support::server as common;
use support::vault;

use std::sync::Arc;

use age::secrecy::SecretString;
use arc_swap::ArcSwapOption;
use base64::Engine as _;
use gitgate::admission::{AdmissionState, Caller, Decider, Endpoint, Limits, LogRecorder};
use gitgate::provenance::Snapshot;
use gitgate::render::{RenderOptions, Renderer};
use gitgate::secrets::keys::{AgeIdentity, IdentitySet, Recipient};
use gitgate::secrets::seal::{self, Binding, Scope};
use gitgate::secrets::stage::{Principal, UnsealPolicy};
use gitgate::secrets::vault::{VaultAuth, VaultConfig, VaultResolver};
use gitgate::secrets::{Plaintext, SecretsStage};
use gitgate::source::GitSource;
use serde_json::{Value, json};
use support::{Repo, cache_dir, oid};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;
const RECONCILER: &str = "system:serviceaccount:gitgate:gitgate-reconciler";
const NS: &str = "gitops-demo";
const PASSWORD: &[u8] = b"canary-password-7f3a9c";
const VAULT_TOKEN_VALUE: &str = "canary-vault-token-51be";

fn seal_for(recipients: &[Recipient], ns: &str, name: &str, key: &str, value: &[u8]) -> String {
    let binding = Binding::for_object(Scope::Strict, ns, name, key).unwrap();
    seal::seal(&Plaintext::copy_from(value), &binding, recipients, &seal::Limits::default()).unwrap()
}

/// A sealed Secret manifest as Git holds it.
fn sealed_manifest(name: &str, string_data: Value) -> String {
    serde_json::to_string_pretty(&json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "annotations": {"gitgate.dev/sealed": "age"}},
        "type": "Opaque",
        "stringData": string_data,
    }))
    .unwrap()
}

struct World {
    _repo: Repo,
    _cache: tempfile::TempDir,
    ids: Arc<IdentitySet>,
    commit: Arc<ArcSwapOption<Snapshot>>,
    /// Git's sealed password of `db-credentials`.
    git_password: String,
    head: String,
}

/// Project `shop` (Vault paths `secret/shop/*`) with app `shop` in
/// `gitops-demo`: the sealed Secret `db-credentials` and `api` (a `vault:`
/// reference inside the project).
fn world() -> World {
    world_with("vault: {paths: [\"secret/shop/*\"]}")
}

fn world_with(vault: &str) -> World {
    let ids = Arc::new(IdentitySet::new(vec![AgeIdentity::generate()]).unwrap());
    let git_password = seal_for(&ids.recipients(), NS, "db-credentials", "password", PASSWORD);
    let repo = Repo::new();
    repo.write(
        "gitgate.yaml",
        &format!("projects:\n  - name: shop\n    {vault}\napps:\n  - {{name: shop, project: shop, path: apps/shop, destination: {{namespace: gitops-demo}}}}\n"),
    );
    repo.write("apps/shop/db.json", &sealed_manifest("db-credentials", json!({"password": git_password})));
    repo.write("apps/shop/api.json", &sealed_manifest("api", json!({"token": "vault:secret/shop/api#token"})));
    let head = repo.commit("shop with sealed secrets");
    let (t, cache) = cache_dir();
    let src = GitSource::open(&repo.url(), &cache).unwrap();
    src.fetch().unwrap();
    let desired = Renderer::new(RenderOptions::default()).desired(&src.repo(), oid(&head)).unwrap();
    let snap = Arc::new(Snapshot::build(desired, &src.repo()));
    World { _repo: repo, _cache: t, ids, commit: Arc::new(ArcSwapOption::new(Some(snap))), git_password, head }
}

fn policy(w: &World, extra: Vec<Principal>, without_client_auth: bool) -> UnsealPolicy {
    UnsealPolicy { reconciler: RECONCILER.into(), extra, without_client_auth, commit: w.commit.clone() }
}

fn state(stage: SecretsStage) -> Arc<AdmissionState> {
    let decider = Decider::new().with_async_mutating(Arc::new(stage));
    let state = Arc::new(AdmissionState::new(Default::default(), Limits::default(), Arc::new(LogRecorder)));
    state.publish(Arc::new(decider));
    state
}

/// The captured Secret CREATE as `user`, named `name`, with `stringData`
/// already folded into base64 `data` as the apiserver sends it.
fn review(name: &str, user: &str, groups: &[&str], data: &[(&str, &str)]) -> Vec<u8> {
    let mut review: Value = serde_json::from_slice(&common::fixture("mutate-create-secret.json")).unwrap();
    let req = &mut review["request"];
    req["name"] = json!(name);
    req["namespace"] = json!(NS);
    req["userInfo"] = json!({"username": user, "groups": groups});
    let object = &mut req["object"];
    object["metadata"]["name"] = json!(name);
    object["metadata"]["namespace"] = json!(NS);
    object["metadata"]["annotations"] = json!({"gitgate.dev/sealed": "age"});
    object["data"] = data.iter().map(|(k, v)| (k.to_string(), json!(B64.encode(v.as_bytes())))).collect();
    serde_json::to_vec(&review).unwrap()
}

fn dry_run(mut body: Vec<u8>) -> Vec<u8> {
    let mut v: Value = serde_json::from_slice(&body).unwrap();
    v["request"]["dryRun"] = json!(true);
    body = serde_json::to_vec(&v).unwrap();
    body
}

async fn ask(state: &AdmissionState, body: &[u8], caller: Caller) -> (Value, String) {
    let out = state.review_from(Endpoint::Mutate, body, caller).await.unwrap();
    let text = String::from_utf8(out.clone()).unwrap();
    (serde_json::from_slice(&out).unwrap(), text)
}

/// The decoded JSONPatch of an allowed response (empty when none).
fn patch(response: &Value) -> String {
    response["response"]["patch"]
        .as_str()
        .map(|p| String::from_utf8(B64.decode(p).unwrap()).unwrap())
        .unwrap_or_default()
}

fn assert_no_plaintext(text: &str, response: &Value) {
    let b64 = B64.encode(PASSWORD);
    let patch = patch(response);
    for hay in [text, patch.as_str()] {
        assert!(!hay.contains(std::str::from_utf8(PASSWORD).unwrap()), "plaintext leaked: {hay}");
        assert!(!hay.contains(&b64), "base64 plaintext leaked: {hay}");
        assert!(!hay.contains(VAULT_TOKEN_VALUE), "Vault value leaked: {hay}");
        assert!(!hay.contains(&B64.encode(VAULT_TOKEN_VALUE)), "Vault value leaked: {hay}");
    }
}

fn denied(response: &Value) -> String {
    assert_eq!(response["response"]["allowed"], false, "{response}");
    response["response"]["status"]["message"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn the_reconciler_applying_gits_own_secret_through_the_apiserver_gets_plaintext() {
    let w = world();
    let s = state(SecretsStage::new(w.ids.clone()).with_policy(policy(&w, vec![], false)));
    let (resp, _) =
        ask(&s, &review("db-credentials", RECONCILER, &[], &[("password", &w.git_password)]), Caller::Apiserver).await;
    assert_eq!(resp["response"]["allowed"], true, "{resp}");
    assert!(patch(&resp).contains(&B64.encode(PASSWORD)), "the legitimate path must keep working");
}

#[tokio::test]
async fn a_review_posted_straight_to_the_port_gets_nothing() {
    // Any pod can type the reconciler's name into userInfo; without a
    // client certificate nothing tells it from the apiserver.
    let w = world();
    let s = state(SecretsStage::new(w.ids.clone()).with_policy(policy(&w, vec![], false)));
    let body = review("db-credentials", RECONCILER, &[], &[("password", &w.git_password)]);
    let (resp, text) = ask(&s, &body, Caller::Unauthenticated).await;
    let message = denied(&resp);
    assert!(message.contains("client certificate"), "{message}");
    assert_no_plaintext(&text, &resp);
}

#[tokio::test]
async fn without_client_auth_the_operator_may_opt_in_and_userinfo_is_then_believed() {
    let w = world();
    let s = state(SecretsStage::new(w.ids.clone()).with_policy(policy(&w, vec![], true)));
    let (resp, _) =
        ask(&s, &review("db-credentials", RECONCILER, &[], &[("password", &w.git_password)]), Caller::Unauthenticated)
            .await;
    assert_eq!(resp["response"]["allowed"], true, "{resp}");
}

#[tokio::test]
async fn a_user_creating_gits_sealed_secret_is_refused() {
    let w = world();
    let s = state(SecretsStage::new(w.ids.clone()).with_policy(policy(&w, vec![], false)));
    let body = review("db-credentials", "mallory", &["system:authenticated"], &[("password", &w.git_password)]);
    let (resp, text) = ask(&s, &body, Caller::Apiserver).await;
    let message = denied(&resp);
    assert!(message.contains("only gitgate's reconciler") && message.contains("mallory"), "{message}");
    assert_no_plaintext(&text, &resp);
}

#[tokio::test]
async fn gits_ciphertext_copied_or_resealed_is_refused_naming_the_commit() {
    let w = world();
    let short = &w.head[..7];
    let s = state(SecretsStage::new(w.ids.clone()).with_policy(policy(&w, vec![], false)));
    // Copied under another name: not in Git.
    let (resp, text) =
        ask(&s, &review("db2", RECONCILER, &[], &[("password", &w.git_password)]), Caller::Apiserver).await;
    let message = denied(&resp);
    assert!(message.contains("only Git's own sealed Secrets are unsealed"), "{message}");
    assert!(message.contains(&format!("{NS}/db2 is not in Git at {short}")), "{message}");
    assert_no_plaintext(&text, &resp);
    // Git's name, values sealed by someone else for it (recipients are public).
    let forged = seal_for(&w.ids.recipients(), NS, "db-credentials", "password", b"attacker-chosen");
    let (resp, text) =
        ask(&s, &review("db-credentials", RECONCILER, &[], &[("password", &forged)]), Caller::Apiserver).await;
    let message = denied(&resp);
    assert!(message.contains("not the ones Git holds") && message.contains(short), "{message}");
    assert_no_plaintext(&text, &resp);
}

#[tokio::test]
async fn a_dry_run_is_checked_but_never_gets_plaintext() {
    let w = world();
    let s = state(SecretsStage::new(w.ids.clone()).with_policy(policy(&w, vec![], false)));
    let body = dry_run(review("db-credentials", RECONCILER, &[], &[("password", &w.git_password)]));
    let (resp, text) = ask(&s, &body, Caller::Apiserver).await;
    assert_eq!(resp["response"]["allowed"], true, "{resp}");
    assert_no_plaintext(&text, &resp);
    assert!(patch(&resp).contains("sealed-digest"), "the sealed form is stamped with its digest: {}", patch(&resp));
    assert!(resp["response"]["warnings"][0].as_str().unwrap().contains("dry run"), "{resp}");
    // A dry run by someone else is refused like the real thing.
    let body = dry_run(review("db2", RECONCILER, &[], &[("password", &w.git_password)]));
    let (resp, text) = ask(&s, &body, Caller::Apiserver).await;
    denied(&resp);
    assert_no_plaintext(&text, &resp);
}

#[tokio::test]
async fn vault_paths_belong_to_projects() {
    let w = world();
    let fake = vault::FakeVault::start().await;
    fake.state.put_kv2("secret", "shop/api", json!({"token": VAULT_TOKEN_VALUE}));
    fake.state.put_kv2("secret", "prod/db", json!({"password": VAULT_TOKEN_VALUE}));
    let config =
        VaultConfig::new(&fake.url(), VaultAuth::Token(SecretString::from(vault::ROOT_TOKEN.to_owned()))).unwrap();
    let resolver = VaultResolver::connect(config).await.unwrap();
    let platform = Principal::parse("group:platform").unwrap();
    let s = state(SecretsStage::new(w.ids.clone()).with_vault(resolver).with_policy(policy(&w, vec![platform], false)));
    // Git's `api`, inside its project's paths: resolved.
    let (resp, _) =
        ask(&s, &review("api", RECONCILER, &[], &[("token", "vault:secret/shop/api#token")]), Caller::Apiserver).await;
    assert_eq!(resp["response"]["allowed"], true, "{resp}");
    assert!(patch(&resp).contains(&B64.encode(VAULT_TOKEN_VALUE)));
    // A Secret of no app (an --unseal-for group member's) naming another
    // team's path: the default project has no Vault paths.
    let body = review("scratch", "alice", &["platform"], &[("pw", "vault:secret/prod/db#password")]);
    let (resp, text) = ask(&s, &body, Caller::Apiserver).await;
    let message = denied(&resp);
    assert!(message.contains("project default may not read Vault path secret/prod/db"), "{message}");
    assert_no_plaintext(&text, &resp);
    assert_eq!(resp["response"]["status"]["reason"], "VaultPathRefused");
}

#[tokio::test]
async fn a_projects_vault_role_is_what_its_secrets_are_read_with() {
    let fake = vault::FakeVault::start().await;
    fake.state.put_kv2("secret", "shop/api", json!({"token": VAULT_TOKEN_VALUE}));
    let dir = tempfile::tempdir().unwrap();
    let jwt = dir.path().join("token");
    std::fs::write(&jwt, vault::K8S_JWT).unwrap();
    let auth =
        |role: &str| VaultAuth::Kubernetes { mount: "kubernetes".into(), role: role.into(), jwt_path: jwt.clone() };
    let body = review("api", RECONCILER, &[], &[("token", "vault:secret/shop/api#token")]);
    // The loopback Vault knows one role: a project naming it reads with
    // its own login (gitgate's own role here is one Vault does not know
    // for reads — only the project's role gets through).
    let w = world_with(&format!("vault: {{paths: [\"secret/shop/*\"], role: {}}}", vault::K8S_ROLE));
    let resolver = VaultResolver::connect(VaultConfig::new(&fake.url(), auth(vault::K8S_ROLE)).unwrap()).await.unwrap();
    let logins = fake.state.logins.load(std::sync::atomic::Ordering::SeqCst);
    let s = state(SecretsStage::new(w.ids.clone()).with_vault(resolver.clone()).with_policy(policy(&w, vec![], false)));
    let (resp, _) = ask(&s, &body, Caller::Apiserver).await;
    assert_eq!(resp["response"]["allowed"], true, "{resp}");
    assert_eq!(
        fake.state.logins.load(std::sync::atomic::Ordering::SeqCst),
        logins + 1,
        "the project's role logs in on its own"
    );
    ask(&s, &body, Caller::Apiserver).await;
    assert_eq!(fake.state.logins.load(std::sync::atomic::Ordering::SeqCst), logins + 1, "and is kept");
    // A project whose role Vault refuses gets nothing, with the reason.
    let w = world_with("vault: {paths: [\"secret/shop/*\"], role: shop-reader}");
    let s = state(SecretsStage::new(w.ids.clone()).with_vault(resolver).with_policy(policy(&w, vec![], false)));
    let (resp, text) = ask(&s, &body, Caller::Apiserver).await;
    let message = denied(&resp);
    assert!(message.contains("kubernetes"), "{message}");
    assert_no_plaintext(&text, &resp);
}

#[tokio::test]
async fn a_vault_path_outside_the_apps_project_in_git_is_refused() {
    // The same check holds for what Git declares: a commit that points an
    // app's Secret at another project's path does not get it read.
    let ids = Arc::new(IdentitySet::new(vec![AgeIdentity::generate()]).unwrap());
    let repo = Repo::new();
    repo.write(
        "gitgate.yaml",
        "projects:\n  - name: shop\n    vault: {paths: [\"secret/shop/*\"]}\napps:\n  - {name: shop, project: shop, path: apps/shop, destination: {namespace: gitops-demo}}\n",
    );
    repo.write("apps/shop/x.json", &sealed_manifest("x", json!({"pw": "vault:secret/prod/db#password"})));
    let head = repo.commit("reach into prod");
    let (_t, cache) = cache_dir();
    let src = GitSource::open(&repo.url(), &cache).unwrap();
    src.fetch().unwrap();
    let desired = Renderer::new(RenderOptions::default()).desired(&src.repo(), oid(&head)).unwrap();
    let commit = Arc::new(ArcSwapOption::new(Some(Arc::new(Snapshot::build(desired, &src.repo())))));
    let policy = UnsealPolicy { reconciler: RECONCILER.into(), extra: vec![], without_client_auth: false, commit };
    let s = state(SecretsStage::new(ids).with_policy(policy));
    let (resp, _) =
        ask(&s, &review("x", RECONCILER, &[], &[("pw", "vault:secret/prod/db#password")]), Caller::Apiserver).await;
    let message = denied(&resp);
    assert!(
        message.contains("project shop may not read Vault path secret/prod/db") && message.contains("secret/shop/*"),
        "{message}"
    );
}

#[tokio::test]
async fn unseal_for_identities_get_their_own_sealed_secrets() {
    let w = world();
    let s = state(SecretsStage::new(w.ids.clone()).with_policy(policy(
        &w,
        vec![Principal::parse("user:ci-bot").unwrap()],
        false,
    )));
    let own = seal_for(&w.ids.recipients(), NS, "scratch", "password", PASSWORD);
    let (resp, _) = ask(&s, &review("scratch", "ci-bot", &[], &[("password", &own)]), Caller::Apiserver).await;
    assert_eq!(resp["response"]["allowed"], true, "{resp}");
    assert!(patch(&resp).contains(&B64.encode(PASSWORD)));
    // Everyone else still is not.
    let (resp, _) = ask(&s, &review("scratch", "ci-bot2", &[], &[("password", &own)]), Caller::Apiserver).await;
    denied(&resp);
}

#[test]
fn principals_parse() {
    assert_eq!(Principal::parse("user:a").unwrap(), Principal::User("a".into()));
    assert_eq!(Principal::parse("group:x:y").unwrap(), Principal::Group("x:y".into()));
    for bad in ["a", "user:", "team:x", "group: "] {
        assert!(Principal::parse(bad).is_err(), "{bad}");
    }
}
