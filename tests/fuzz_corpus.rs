//! Replays every committed fuzz corpus file (`fuzz/corpus/<target>/`)
//! through the same function its `cargo fuzz` target calls, on stable, so
//! an input that once crashed (and is now a corpus file) stays fixed.

use std::path::Path;

#[test]
fn every_fuzz_corpus_input_runs_without_panicking() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
    for target in gitgate::fuzzing::TARGETS {
        let dir = root.join(target);
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| e.unwrap().path())
            .filter(|p| p.is_file())
            .collect();
        files.sort();
        assert!(!files.is_empty(), "{} has no corpus files", dir.display());
        for file in files {
            let data = std::fs::read(&file).unwrap();
            let run = std::panic::catch_unwind(|| gitgate::fuzzing::run(target, &data));
            assert!(run.is_ok(), "fuzz target {target} panicked on {}", file.display());
        }
    }
}
