//! Replays the fuzz corpus (`fuzz/corpus/<target>/`, committed seeds and finds) through the
//! same checks the fuzz targets run, so every find stays fixed without a fuzzer.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "a failed unwrap is a failed test")]

use std::path::Path;

fn replay(target: &str, check: fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus").join(target);
    let mut count = 0;
    for entry in std::fs::read_dir(&dir).expect("corpus directory") {
        let path = entry.unwrap().path();
        check(&std::fs::read(&path).unwrap());
        count += 1;
    }
    assert!(count > 0, "no corpus in {}", dir.display());
}

#[test]
fn frame_decode_corpus() {
    replay("frame_decode", ds_engine::log::checks::frame_decode);
}

#[test]
fn journal_scan_corpus() {
    replay("journal_scan", ds_engine::log::checks::journal_scan);
}

#[test]
fn log_recovery_corpus() {
    replay("log_recovery", ds_engine::log::checks::log_recovery);
}
