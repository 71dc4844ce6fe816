//! In-process cost of one admission: decode + decide + encode of the
//! captured Deployment review (issue 2's figure: p99 ≤ 50 µs).
//!
//! `cargo bench --bench admission` prints criterion's estimate and then a
//! percentile pass over 200,000 timed calls.

use std::hint::black_box;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use criterion::{Criterion, Throughput, criterion_group};
use gitgate::admission::{AdmissionState, Decider, Endpoint, Limits, LogRecorder};

fn fixture(name: &str) -> Vec<u8> {
    let dir = std::env::var_os("GITGATE_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures/admission"));
    std::fs::read(dir.join(name)).expect("fixture")
}

fn state() -> AdmissionState {
    let state = AdmissionState::new(Default::default(), Limits::default(), Arc::new(LogRecorder));
    state.publish(Arc::new(Decider::new()));
    state
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    let state = state();
    let mut g = c.benchmark_group("admission");
    for name in ["validate-create-deployment.json", "validate-update-deployment-kubectl-edit-like.json"] {
        let body = fixture(name);
        g.throughput(Throughput::Bytes(body.len() as u64));
        g.bench_function(name.trim_end_matches(".json"), |b| {
            b.iter(|| rt.block_on(state.review(Endpoint::Validate, black_box(&body))).unwrap())
        });
    }
    g.finish();
}

/// p50/p99/p99.9 over individually timed calls (criterion reports means).
fn percentiles() {
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    let state = state();
    for name in ["validate-create-deployment.json", "validate-update-deployment-kubectl-edit-like.json"] {
        let body = fixture(name);
        for _ in 0..10_000 {
            rt.block_on(state.review(Endpoint::Validate, &body)).unwrap();
        }
        let mut samples: Vec<u64> = (0..200_000)
            .map(|_| {
                let t = Instant::now();
                black_box(rt.block_on(state.review(Endpoint::Validate, black_box(&body))).unwrap());
                t.elapsed().as_nanos() as u64
            })
            .collect();
        samples.sort_unstable();
        let p = |q: f64| samples[((samples.len() as f64 * q) as usize).min(samples.len() - 1)] as f64 / 1000.0;
        println!(
            "percentiles {name} ({} bytes, {} calls): p50 {:.1} µs  p99 {:.1} µs  p99.9 {:.1} µs  max {:.1} µs",
            body.len(),
            samples.len(),
            p(0.50),
            p(0.99),
            p(0.999),
            p(1.0)
        );
    }
}

criterion_group!(benches, bench);

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
    if std::env::args().any(|a| a == "--bench") {
        percentiles();
    }
}
