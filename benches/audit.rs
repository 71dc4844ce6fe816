//! Audit log figures (issue 7): append ≤ 20 µs per record amortized under
//! 5,000 admissions/s, and `audit verify` of 1M records ≤ 10 s.
//!
//! `cargo bench --bench audit` measures, with a real file and the real
//! group-commit fsync thread:
//! - `append`: one record (a Deployment admission), single thread;
//! - `record`: the admission recorder (record built from the request,
//!   object digest, append);
//! - `append_8_threads`: amortized cost per record with 8 threads appending;
//! - `verify`: chain verification throughput over 100,000 records.
//!
//! To time `gitgate audit verify` on 1M records, write them with
//! `AUDIT_SYNTH_DIR=/tmp/audit1m cargo bench --bench audit` (optionally
//! `AUDIT_SYNTH_RECORDS=N`), then `time gitgate audit verify /tmp/audit1m`.

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput};
use gitgate::admission::{Decision, Endpoint, Event, Recorder, Review};
use gitgate::audit::log::{Options, chain_files};
use gitgate::audit::recorder::admission_entry;
use gitgate::audit::{AuditLog, Entry};

fn fixture(name: &str) -> Vec<u8> {
    let dir = std::env::var_os("GITGATE_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/admission"));
    std::fs::read(dir.join(name)).expect("fixture")
}

fn decision() -> Decision {
    let mut d = Decision::default();
    d.annotate("commit", "0123456789abcdef0123456789abcdef01234567");
    d.annotate("commit-author", "Dana Ops <dana@example.com>");
    d.annotate("commit-subject", "web: scale to 3 replicas");
    d.annotate("app", "demo");
    d.annotate("source", "apps/demo/web.yaml");
    d
}

fn sample_entry() -> Entry {
    let review = Review::decode(&fixture("validate-create-deployment.json")).expect("fixture decodes");
    let d = decision();
    admission_entry(&Event {
        endpoint: Endpoint::Validate,
        request: &review.request,
        decision: &d,
        elapsed: Duration::ZERO,
    })
}

fn open(dir: &Path) -> AuditLog {
    let mut o = Options::new(dir.join("audit.jsonl")).with_checkpoints(dir.join("checkpoint.pk8"));
    o.rotate_bytes = 256 * 1024 * 1024;
    AuditLog::open(o).expect("open log")
}

fn synth(dir: &Path, n: u64) {
    let log = open(dir);
    let e = sample_entry();
    let start = Instant::now();
    for _ in 0..n {
        log.append(&e).expect("append");
    }
    log.close().expect("close");
    let bytes: u64 = chain_files(&dir.join("audit.jsonl")).iter().map(|f| f.metadata().map_or(0, |m| m.len())).sum();
    println!("wrote {n} records ({bytes} bytes) to {} in {:?}", dir.display(), start.elapsed());
}

fn bench(c: &mut Criterion) {
    let entry = sample_entry();
    let mut g = c.benchmark_group("audit");
    g.measurement_time(Duration::from_secs(3)).sample_size(30);
    g.throughput(Throughput::Elements(1));

    let dir = tempfile::tempdir().expect("tempdir");
    let log = open(dir.path());
    g.bench_function("append", |b| b.iter(|| log.append(black_box(&entry)).expect("append")));
    drop(log);

    let dir = tempfile::tempdir().expect("tempdir");
    let log = open(dir.path());
    let review = Review::decode(&fixture("validate-create-deployment.json")).expect("fixture decodes");
    let d = decision();
    g.bench_function("record", |b| {
        b.iter(|| {
            let ev =
                Event { endpoint: Endpoint::Validate, request: &review.request, decision: &d, elapsed: Duration::ZERO };
            log.record(black_box(&ev)).expect("record")
        })
    });
    drop(log);

    let dir = tempfile::tempdir().expect("tempdir");
    let log = Arc::new(open(dir.path()));
    g.bench_function("append_8_threads", |b| {
        b.iter_custom(|iters| {
            let per = iters.div_ceil(8);
            let start = Instant::now();
            let hs: Vec<_> = (0..8)
                .map(|_| {
                    let log = log.clone();
                    let e = entry.clone();
                    std::thread::spawn(move || {
                        for _ in 0..per {
                            log.append(&e).expect("append");
                        }
                    })
                })
                .collect();
            for h in hs {
                h.join().expect("thread");
            }
            start.elapsed().mul_f64(iters as f64 / (per * 8) as f64)
        })
    });
    drop(log);
    g.finish();

    let dir = tempfile::tempdir().expect("tempdir");
    let n = 100_000u64;
    {
        let log = open(dir.path());
        for _ in 0..n {
            log.append(&entry).expect("append");
        }
        log.close().expect("close");
    }
    let files = chain_files(&dir.path().join("audit.jsonl"));
    let mut g = c.benchmark_group("audit_verify");
    g.sample_size(10).throughput(Throughput::Elements(n));
    g.bench_function("verify_100k", |b| {
        b.iter(|| {
            let v = gitgate::audit::chain::verify_files(&files, Default::default()).expect("read");
            assert_eq!(v.expect("chain ok").records, n);
        })
    });
    g.finish();
}

fn main() {
    if let Some(dir) = std::env::var_os("AUDIT_SYNTH_DIR") {
        let n = std::env::var("AUDIT_SYNTH_RECORDS").ok().and_then(|s| s.parse().ok()).unwrap_or(1_000_000);
        let dir = PathBuf::from(dir);
        std::fs::create_dir_all(&dir).expect("create dir");
        synth(&dir, n);
        return;
    }
    let mut c = Criterion::default().configure_from_args();
    bench(&mut c);
    c.final_summary();
}
