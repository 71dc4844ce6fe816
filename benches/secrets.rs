//! Secrets bridge figures (issue 6): decrypt + scope check of one value
//! (target ≤ 100 µs), an in-process /mutate of a 10-key sealed Secret
//! (target p99 ≤ 1 ms) and a cached Vault value (target p99 ≤ 1 ms).
//!
//! `cargo bench --bench secrets` prints criterion's estimates and then a
//! percentile pass over individually timed calls.

#[path = "../tests/support/mod.rs"]
mod support;
use support::vault;

use std::hint::black_box;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use base64::Engine as _;
use criterion::{Criterion, criterion_group};
use gitgate::admission::{AdmissionState, Decider, Endpoint, Limits, LogRecorder};
use gitgate::secrets::keys::{AgeIdentity, IdentitySet};
use gitgate::secrets::seal::{self, Binding, Limits as SealLimits, Scope};
use gitgate::secrets::vault::{VaultAuth, VaultConfig, VaultRef, VaultResolver};
use gitgate::secrets::{Plaintext, SecretsStage};
use serde_json::{Value, json};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

fn fixture(name: &str) -> Vec<u8> {
    let dir = std::env::var_os("GITGATE_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/admission"));
    std::fs::read(dir.join(name)).expect("fixture")
}

struct Setup {
    ids: Arc<IdentitySet>,
    one_value: String,
    mutate_body: Vec<u8>,
    state: AdmissionState,
}

fn setup() -> Setup {
    let ids = Arc::new(IdentitySet::new(vec![AgeIdentity::generate()]).unwrap());
    let seal_key = |key: &str, value: &[u8]| {
        let binding = Binding::for_object(Scope::Strict, "gitops-demo", "db-credentials", key).unwrap();
        seal::seal(&Plaintext::copy_from(value), &binding, &ids.recipients(), &SealLimits::default()).unwrap()
    };
    let one_value = seal_key("password", b"dummy-password-not-a-secret");
    let mut review: Value = serde_json::from_slice(&fixture("mutate-create-secret.json")).unwrap();
    let mut data = serde_json::Map::new();
    for i in 0..10 {
        let key = format!("key-{i}");
        let sealed = seal_key(&key, format!("value-{i}-0123456789abcdef0123456789abcdef").as_bytes());
        data.insert(key, json!(B64.encode(sealed)));
    }
    review["request"]["object"]["data"] = Value::Object(data);
    review["request"]["object"]["metadata"]["annotations"] = json!({"gitgate.dev/sealed": "age"});
    let state = AdmissionState::new(Default::default(), Limits::default(), Arc::new(LogRecorder));
    state.publish(Arc::new(Decider::new().with_async_mutating(Arc::new(SecretsStage::new(ids.clone())))));
    Setup { ids, one_value, mutate_body: serde_json::to_vec(&review).unwrap(), state }
}

fn vault_resolver(rt: &tokio::runtime::Runtime) -> (vault::FakeVault, Arc<VaultResolver>, VaultRef) {
    rt.block_on(async {
        let fake = vault::FakeVault::start().await;
        fake.state.put_kv2("secret", "gitops-demo/db", json!({"password": "dummy-password-not-a-secret"}));
        let auth = VaultAuth::Token(age::secrecy::SecretString::from(vault::ROOT_TOKEN.to_owned()));
        let resolver = VaultResolver::connect(VaultConfig::new(&fake.url(), auth).unwrap()).await.unwrap();
        let r = VaultRef::parse("vault:secret/gitops-demo/db#password").unwrap();
        resolver.resolve(&r).await.unwrap();
        (fake, resolver, r)
    })
}

fn bench(c: &mut Criterion) {
    let s = setup();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let limits = SealLimits::default();
    let mut g = c.benchmark_group("secrets");
    g.bench_function("open_and_scope_check_one_value", |b| {
        b.iter(|| {
            seal::open_for(
                black_box(s.one_value.as_bytes()),
                &s.ids,
                &limits,
                "gitops-demo",
                "db-credentials",
                "password",
            )
            .unwrap()
        })
    });
    g.bench_function("mutate_10_key_sealed_secret", |b| {
        b.iter(|| rt.block_on(s.state.review(Endpoint::Mutate, black_box(&s.mutate_body))).unwrap())
    });
    let (_fake, resolver, r) = vault_resolver(&rt);
    g.bench_function("vault_cached_value", |b| b.iter(|| rt.block_on(resolver.resolve(black_box(&r))).unwrap()));
    g.finish();
}

fn report(name: &str, mut samples: Vec<u64>) {
    samples.sort_unstable();
    let p = |q: f64| samples[((samples.len() as f64 * q) as usize).min(samples.len() - 1)] as f64 / 1000.0;
    println!(
        "percentiles {name} ({} calls): p50 {:.1} µs  p99 {:.1} µs  p99.9 {:.1} µs  max {:.1} µs",
        samples.len(),
        p(0.50),
        p(0.99),
        p(0.999),
        p(1.0)
    );
}

fn time<T>(n: usize, mut f: impl FnMut() -> T) -> Vec<u64> {
    for _ in 0..n / 10 {
        black_box(f());
    }
    (0..n)
        .map(|_| {
            let t = Instant::now();
            black_box(f());
            t.elapsed().as_nanos() as u64
        })
        .collect()
}

fn percentiles() {
    let s = setup();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let limits = SealLimits::default();
    report(
        "open_and_scope_check_one_value",
        time(20_000, || {
            seal::open_for(s.one_value.as_bytes(), &s.ids, &limits, "gitops-demo", "db-credentials", "password")
                .unwrap()
        }),
    );
    report(
        "mutate_10_key_sealed_secret",
        time(5_000, || rt.block_on(s.state.review(Endpoint::Mutate, &s.mutate_body)).unwrap()),
    );
    let (_fake, resolver, r) = vault_resolver(&rt);
    report("vault_cached_value", time(100_000, || rt.block_on(resolver.resolve(&r)).unwrap()));
}

criterion_group!(benches, bench);

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
    if std::env::args().any(|a| a == "--bench") {
        percentiles();
    }
}
