//! Server-side request forgery through `vault:` references. The Vault
//! address is the operator's alone (`--vault-addr`/`VAULT_ADDR`; nothing
//! from Git names a host), but the reference's `<mount>/<path>` comes from
//! a Git author and is checked against the project's `vault.paths` globs.
//! What gitgate then requests must be exactly that location on that Vault:
//! no other host, no query, no path that Vault (decoding it once, as Go's
//! HTTP server does) reads as another mount — `sys/`, `auth/token/…` — or
//! another secret. Vault injectors and CSI providers have had this class
//! (a templated path reaching other endpoints with the injector's token).

mod support;
use support::vault;

use std::time::Duration;

use age::secrecy::SecretString;
use gitgate::secrets::vault::{VaultAuth, VaultConfig, VaultRef, VaultResolver};
use serde_json::json;
use vault::{FakeVault, ROOT_TOKEN};

/// Decodes `%XX` once, as Vault's HTTP server does.
fn percent_decode(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let Ok(v) = u8::from_str_radix(std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("zz"), 16)
        {
            out.push(v);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    out
}

/// References a Git author could write to leave the location the project
/// allows (`secret/team/*`): traversal spelled every way URL parsers
/// normalise, query and parameter injection, other hosts, control
/// characters (which URL parsers delete), and the token-revealing
/// endpoints they would aim at.
const HOSTILE: &[&str] = &[
    "vault:secret/team/../../sys/seal-status#k",
    "vault:secret/team/%2e%2e/%2e%2e/auth/token/lookup-self#id",
    "vault:secret/team/.%2e/.%2E/auth/token/lookup-self#id",
    "vault:secret/team/..%2f..%2fauth%2ftoken%2flookup-self#id",
    "vault:secret/team\\..\\..\\auth\\token\\lookup-self#id",
    "vault:secret/team/.\n./other/db#k",
    "vault:secret/team/.\n./.\n./.\n./auth/token/lookup-self#id",
    "vault:secret/team/.\t./.\r./.\t./auth/token/lookup-self#id",
    "vault:secret/team/\u{ff0e}\u{ff0e}/\u{ff0e}\u{ff0e}/sys/seal-status#k",
    "vault:secret/team/db?version=1&list=true#k",
    "vault:secret/team/db;x=y#k",
    "vault:secret/team/db%3Fx%3Dy#k",
    "vault:secret/team/@evil.example/db#k",
    "vault:secret/team//evil.example/db#k",
    "vault:secret/team/http://evil.example/db#k",
    "vault:secret/team/db%00#k",
    "vault:secret/team/db\u{0}#k",
    "vault:secret/team/db\r\nX-Vault-Token: other#k",
    "vault:secret/team/db #k",
];

#[tokio::test]
async fn vault_references_from_git_reach_only_the_operators_vault_at_the_checked_location() {
    let fake = FakeVault::start().await;
    fake.state.put_kv2("secret", "team/db", json!({"k": "v"}));
    // Another project's secret, beside the allowed `secret/team/*`.
    fake.state.put_kv2("secret", "other/db", json!({"k": "stolen"}));
    fake.state.put_kv1("legacy", "team/db", json!({"k": "v1"}));
    let mut config =
        VaultConfig::new(&fake.url(), VaultAuth::Token(SecretString::from(ROOT_TOKEN.to_owned()))).unwrap();
    config.deadline = Duration::from_millis(800);
    config.kv1_mounts = vec!["legacy".into()];
    let resolver = VaultResolver::connect(config).await.unwrap();
    let authority = fake.url().trim_start_matches("http://").trim_end_matches('/').to_owned();

    for reference in
        HOSTILE.iter().map(|r| r.to_string()).chain(HOSTILE.iter().map(|r| r.replace("vault:secret/", "vault:legacy/")))
    {
        let Ok(parsed) = VaultRef::parse(&reference) else { continue };
        let before = fake.state.requests.lock().unwrap().len();
        let value = resolver.resolve(&parsed).await;
        let requests: Vec<_> = fake.state.requests.lock().unwrap()[before..].to_vec();
        assert!(value.is_err(), "{reference:?} read a value");
        let kv2 = parsed.mount == "secret";
        let expected = if kv2 {
            format!("/v1/{}/data/{}", parsed.mount, parsed.path)
        } else {
            format!("/v1/{}/{}", parsed.mount, parsed.path)
        };
        for (method, target, host) in requests {
            assert_eq!(host, authority, "{reference:?}: a request to another host");
            assert_eq!(method, "GET", "{reference:?}");
            let (path, query) = target.split_once('?').unwrap_or((&target, ""));
            assert!(query.is_empty() || (kv2 && query.starts_with("version=")), "{reference:?}: query {query:?}");
            assert_eq!(
                String::from_utf8_lossy(&percent_decode(path)),
                expected,
                "{reference:?}: Vault reads {target:?}, not the location the project's globs were checked against"
            );
        }
    }
    // The hostile spellings are refused when parsed, naming why.
    let err = VaultRef::parse(HOSTILE[5]).unwrap_err().to_string();
    assert!(HOSTILE[5].contains(".\n./other"));
    assert!(err.contains("may hold only"), "{err}");
    // An honest reference is read.
    let ok = resolver.resolve(&VaultRef::parse("vault:secret/team/db#k").unwrap()).await.unwrap();
    assert_eq!(ok.expose(), b"v");
}
