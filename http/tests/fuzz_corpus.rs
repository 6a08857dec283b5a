//! Replays the fuzz corpus of the fast front end (`fuzz/corpus/http_head/`,
//! `fuzz/corpus/chunked_body/`: committed seeds and finds) through the same checks the fuzz
//! targets run, so every find stays fixed without a fuzzer.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "a failed unwrap is a failed test")]

use std::path::Path;

use ds_http::front::fast::checks;

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
fn http_head_corpus() {
    replay("http_head", checks::request_head);
}

#[test]
fn chunked_body_corpus() {
    replay("chunked_body", checks::chunked_body);
}
