//! The functions the `cargo fuzz` targets in `fuzz/` call, one per target,
//! so the fuzz targets and the corpus replay test (`tests/fuzz_corpus.rs`)
//! run exactly the same code. Each takes arbitrary bytes and must never
//! panic; whether the input is accepted or refused does not matter.
//! Not part of the public API.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use crate::admission::{AdmissionState, Decider, Endpoint, Limits, LogRecorder};
use crate::audit::chain::{Location, Verifier};
use crate::audit::record::Record;
use crate::policy::{PolicySet, PolicyStage, StaticNamespaces};
use crate::secrets::keys::{AgeIdentity, IdentitySet};
use crate::secrets::seal;

/// The fuzz targets, by name (the directory names under `fuzz/corpus/`).
pub const TARGETS: &[&str] = &["admission_review", "audit_log", "sealed_envelope", "push_hook"];

/// Runs `data` through the target named `name`.
pub fn run(name: &str, data: &[u8]) {
    match name {
        "admission_review" => admission_review(data),
        "audit_log" => audit_log(data),
        "sealed_envelope" => sealed_envelope(data),
        "push_hook" => push_hook(data),
        other => panic!("no fuzz target named {other:?}"),
    }
}

struct Admission {
    runtime: tokio::runtime::Runtime,
    state: AdmissionState,
}

fn admission() -> &'static Admission {
    static CELL: OnceLock<Admission> = OnceLock::new();
    CELL.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio runtime");
        // The built-in policy library (provenance gate + subresource rules),
        // as `gitgate serve` runs it without a policy directory.
        let stage = PolicyStage {
            policies: Arc::new(PolicySet::builtin().expect("built-in policies compile")),
            namespaces: Arc::new(StaticNamespaces::default()),
            reconciler: "system:serviceaccount:gitgate:gitgate".into(),
            provenance: None,
            strict: true,
            break_glass_groups: vec!["system:masters".into()],
            break_glass_ttl: std::time::Duration::from_secs(3600),
        };
        let state = AdmissionState::new(Default::default(), Limits::default(), Arc::new(LogRecorder));
        state.publish(Arc::new(Decider::new().with_validating(Arc::new(stage))));
        Admission { runtime, state }
    })
}

/// One body through the whole admission request path, on both endpoints.
pub fn admission_review(data: &[u8]) {
    let a = admission();
    for endpoint in [Endpoint::Validate, Endpoint::Mutate] {
        let _ = a.runtime.block_on(a.state.review(endpoint, data));
    }
}

/// A log file's bytes through the chain verifier (`gitgate audit verify`),
/// split into lines exactly as `audit::chain::verify_files` reads them, and
/// each line through the record parser `gitgate audit query` uses.
pub fn audit_log(data: &[u8]) {
    let mut v = Verifier::new(BTreeMap::new());
    let file = PathBuf::from("fuzz.jsonl");
    let mut broken = false;
    for (n, chunk) in data.split_inclusive(|&b| b == b'\n').enumerate() {
        let terminated = chunk.last() == Some(&b'\n');
        let line = if terminated { &chunk[..chunk.len() - 1] } else { chunk };
        let _ = serde_json::from_slice::<Record>(line);
        if !broken {
            broken = v.feed(line, terminated, Location { file: file.clone(), line: n as u64 + 1 }).is_err();
        }
    }
    if !broken {
        let _ = v.finish();
    }
}

fn identities() -> &'static IdentitySet {
    static CELL: OnceLock<IdentitySet> = OnceLock::new();
    CELL.get_or_init(|| IdentitySet::new(vec![AgeIdentity::generate()]).expect("one identity"))
}

/// A value through the sealed-value checks: `looks_sealed`, `inspect`,
/// decryption with a fixed identity, and the plaintext envelope parser.
pub fn sealed_envelope(data: &[u8]) {
    let limits = seal::Limits::default();
    let _ = crate::secrets::looks_sealed(data);
    let _ = seal::inspect(data, &limits);
    let _ = seal::open(data, identities(), &limits);
    let _ = seal::parse_envelope(data, &limits);
}

/// The push-hook secret the `push_hook` target verifies against.
pub const HOOK_SECRET: &[u8] = b"fuzz-hook-secret";

/// A push hook through signature verification and payload parsing. The
/// input is `name: value` header lines, a blank line, then the body. A
/// header value of `sign` is replaced by the body's correct signature for
/// that header (`sha256=<hex>` for GitHub, bare hex for Gitea/Gogs, the
/// secret for GitLab), so the fuzzer reaches past verification.
pub fn push_hook(data: &[u8]) {
    use axum::http::{HeaderMap, HeaderName, HeaderValue};

    let (head, body) = match data.windows(2).position(|w| w == b"\n\n") {
        Some(i) => (&data[..i], &data[i + 2..]),
        None => (&[][..], data),
    };
    let signed = crate::source::hooks::github_signature(HOOK_SECRET, body);
    let mut headers = HeaderMap::new();
    for line in head.split(|&b| b == b'\n') {
        let Some(colon) = line.iter().position(|&b| b == b':') else { continue };
        let Ok(name) = HeaderName::from_bytes(line[..colon].trim_ascii()) else { continue };
        let raw = line[colon + 1..].trim_ascii();
        let value = if raw == b"sign" {
            match name.as_str() {
                "x-hub-signature-256" => HeaderValue::from_str(&signed),
                "x-gitlab-token" => HeaderValue::from_bytes(HOOK_SECRET),
                _ => HeaderValue::from_str(signed.trim_start_matches("sha256=")),
            }
        } else {
            HeaderValue::from_bytes(raw)
        };
        if let Ok(value) = value {
            headers.append(name, value);
        }
    }
    if let Ok(provider) = crate::source::hooks::verify(HOOK_SECRET, &headers, body)
        && crate::source::hooks::is_push(provider, &headers)
    {
        let _ = crate::source::hooks::push_event(provider, body);
    }
}
