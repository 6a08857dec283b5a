//! Recovery over a log of arbitrary records: no panic, exactly the valid prefix is kept.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ds_engine::log::checks::log_recovery(data));
